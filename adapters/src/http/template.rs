//! Templates: `{{name}}` in a URL, a query value, a header or a body is filled with the task's
//! input variable `name` (or `a.b`, a field of the variable `a`). A variable the task does not
//! have fails the task naming it: a request with a hole in it goes to the wrong place.
//!
//! In a URL a value is percent-encoded where it lands in the path, the query or the fragment,
//! so that a variable can never add a path segment or a query parameter of its own; before
//! the path (scheme, host, port) it is taken as it is, as a base URL, but may not hold `?`,
//! `#`, `@` or spaces.

use serde_json::{Map, Value};

use crate::{Failure, Retry};

/// One `{{…}}` found in a template: the text before it, the name inside, the rest after it.
/// `None` when no well-formed placeholder is left; text like `{{ }}` or `{{"a": 1}}` that
/// holds no variable name is not a placeholder and stays as it is.
fn next_placeholder(template: &str) -> Option<(&str, &str, &str)> {
    let mut from = 0;
    while let Some(open) = template[from..].find("{{").map(|i| from + i) {
        let after = &template[open + 2..];
        let close = after.find("}}")?;
        let name = after[..close].trim();
        let is_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if is_name {
            return Some((&template[..open], name, &after[close + 2..]));
        }
        from = open + 1;
    }
    None
}

/// The variable `name` of the task: a top-level variable, else a field path `a.b.c` into one.
fn lookup<'a>(inputs: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = inputs.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = inputs.get(parts.next()?)?;
    for part in parts {
        value = match value {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// The value of `name`, for the setting `setting`; missing and null fail the task.
fn value<'a>(
    inputs: &'a Map<String, Value>,
    name: &str,
    setting: &str,
) -> Result<&'a Value, Failure> {
    match lookup(inputs, name) {
        Some(Value::Null) => Err(Failure::new(
            format!("`{setting}` needs the variable `{name}`, which is null"),
            format!(
                "The template `{{{{{name}}}}}` in `{setting}` is filled from the task's variables. Give `{name}` a value before this task (or map it with an input parameter)."
            ),
            Retry::Never,
        )),
        Some(value) => Ok(value),
        None => Err(Failure::new(
            format!("`{setting}` needs the variable `{name}`, which the task does not have"),
            format!(
                "The template `{{{{{name}}}}}` in `{setting}` is filled from the task's variables. Set `{name}` before this task (or map it with an input parameter), or change the template."
            ),
            Retry::Never,
        )),
    }
}

/// A value as text: a string as it is, anything else as JSON.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Fills a text template: values as text, nothing encoded (headers, query values before the
/// URL encodes them, text bodies).
pub(super) fn render_text(
    template: &str,
    inputs: &Map<String, Value>,
    setting: &str,
) -> Result<String, Failure> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some((before, name, after)) = next_placeholder(rest) {
        out.push_str(before);
        out.push_str(&text_of(value(inputs, name, setting)?));
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// Fills the placeholders of a JSON document: a string that is one placeholder alone becomes
/// the variable's value (a number stays a number, an object an object); placeholders among
/// other text are filled as text. Keys are filled as text.
pub(super) fn render_json(
    document: &Value,
    inputs: &Map<String, Value>,
    setting: &str,
) -> Result<Value, Failure> {
    Ok(match document {
        Value::String(s) => match next_placeholder(s) {
            Some(("", name, "")) => value(inputs, name, setting)?.clone(),
            Some(_) => Value::String(render_text(s, inputs, setting)?),
            None => document.clone(),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| render_json(item, inputs, setting))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    Ok((
                        render_text(k, inputs, setting)?,
                        render_json(v, inputs, setting)?,
                    ))
                })
                .collect::<Result<_, Failure>>()?,
        ),
        other => other.clone(),
    })
}

/// Fills a JSON text that is JSON only once filled (`{"id": {{id}}, "note": "for {{who}}"}`):
/// a placeholder outside a string becomes its variable as JSON, one inside a string the
/// variable's text, escaped for that string.
pub(super) fn render_json_literals(
    template: &str,
    inputs: &Map<String, Value>,
    setting: &str,
) -> Result<String, Failure> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut in_string = false;
    while let Some((before, name, after)) = next_placeholder(rest) {
        in_string = string_state(before, in_string);
        out.push_str(before);
        let value = value(inputs, name, setting)?;
        if in_string {
            let quoted = Value::String(text_of(value)).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
        } else {
            out.push_str(&value.to_string());
        }
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether JSON text that starts inside a string (`in_string`) ends inside one after `text`.
fn string_state(text: &str, mut in_string: bool) -> bool {
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            escaped = false;
        } else if in_string && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_string = !in_string;
        }
    }
    in_string
}

/// Where in a URL the text written so far ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Scheme, host and port: a value is taken as it is (a base URL).
    Origin,
    Path,
    Query,
    Fragment,
}

fn part(written: &str) -> Part {
    if written.contains('#') {
        Part::Fragment
    } else if written.contains('?') {
        Part::Query
    } else if written
        .find("://")
        .is_some_and(|at| written[at + 3..].contains('/'))
    {
        Part::Path
    } else {
        Part::Origin
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters: safe in a path segment,
/// a query name or value and a fragment alike.
pub(super) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Fills a URL template (see the module's description).
pub(super) fn render_url(
    template: &str,
    inputs: &Map<String, Value>,
    setting: &str,
) -> Result<String, Failure> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some((before, name, after)) = next_placeholder(rest) {
        out.push_str(before);
        let text = text_of(value(inputs, name, setting)?);
        match part(&out) {
            Part::Origin => {
                if let Some(bad) = text
                    .chars()
                    .find(|c| matches!(c, '?' | '#' | '@') || c.is_whitespace())
                {
                    return Err(Failure::new(
                        format!(
                            "`{setting}`: the variable `{name}` lands before the URL's path but holds `{bad}`"
                        ),
                        format!(
                            "A variable before the path (a base URL, a host, a port) is taken as it is, so it may not hold `?`, `#`, `@` or spaces. `{name}` is `{text}`."
                        ),
                        Retry::Never,
                    ));
                }
                out.push_str(&text);
            }
            Part::Path | Part::Query | Part::Fragment => out.push_str(&encode(&text)),
        }
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn inputs() -> Map<String, Value> {
        json!({
            "id": "a/b c",
            "n": 7,
            "base": "http://api.example.com:8080/v1",
            "order": {"id": 42, "tags": ["x", "y"]},
            "q": "a&b=c+d",
            "said": "\"hi\"",
            "none": null,
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn url_values_are_encoded_in_the_path_and_query_but_not_in_a_base_url() {
        let url = render_url(
            "{{base}}/orders/{{id}}/{{order.id}}?q={{q}}&n={{n}}#{{id}}",
            &inputs(),
            "procos.url",
        )
        .unwrap();
        assert_eq!(
            url,
            "http://api.example.com:8080/v1/orders/a%2Fb%20c/42?q=a%26b%3Dc%2Bd&n=7#a%2Fb%20c"
        );
        let host = render_url(
            "https://{{h}}:{{n}}/x",
            &json!({"h": "example.org", "n": 8443})
                .as_object()
                .cloned()
                .unwrap(),
            "procos.url",
        )
        .unwrap();
        assert_eq!(host, "https://example.org:8443/x");
    }

    #[test]
    fn a_missing_or_null_variable_fails_naming_it_and_is_not_retried() {
        let failure = render_url("http://h/{{nope}}", &inputs(), "procos.url").unwrap_err();
        assert!(failure.message.contains("`nope`"), "{}", failure.message);
        assert!(
            failure.message.contains("procos.url"),
            "{}",
            failure.message
        );
        assert_eq!(failure.retry, Retry::Never);
        let failure = render_text("{{none}}", &inputs(), "procos.body").unwrap_err();
        assert!(failure.message.contains("null"), "{}", failure.message);
    }

    #[test]
    fn a_base_url_variable_cannot_smuggle_a_query_or_credentials() {
        let vars = json!({"h": "evil.example@good.example"});
        let failure =
            render_url("http://{{h}}/", vars.as_object().unwrap(), "procos.url").unwrap_err();
        assert!(failure.message.contains('@'), "{}", failure.message);
    }

    #[test]
    fn json_documents_keep_the_types_of_whole_placeholders() {
        let document = json!({"id": "{{order.id}}", "label": "order {{order.id}}", "tags": "{{order.tags}}", "{{n}}": true, "plain": "{{ not a name }}"});
        assert_eq!(
            render_json(&document, &inputs(), "procos.body").unwrap(),
            json!({"id": 42, "label": "order 42", "tags": ["x", "y"], "7": true, "plain": "{{ not a name }}"})
        );
        assert_eq!(
            render_json_literals(
                r#"{"id": {{order.id}}, "s": {{id}}, "t": "say \"{{said}}\" to {{id}}"}"#,
                &inputs(),
                "procos.body"
            )
            .unwrap(),
            r#"{"id": 42, "s": "a/b c", "t": "say \"\"hi\"\" to a/b c"}"#
        );
    }

    #[test]
    fn text_is_filled_as_it_is() {
        assert_eq!(
            render_text("id={{id}} n={{ n }} {{{{x", &inputs(), "procos.headers").unwrap(),
            "id=a/b c n=7 {{{{x"
        );
        assert_eq!(encode("ü/ ~"), "%C3%BC%2F%20~");
    }
}
