//! Per-task settings: what a process engineer sets on one step in Camunda Modeler, on top of the
//! topic's settings (the operator's defaults) and within the topic's policy (the operator's
//! ceilings).
//!
//! A setting is named `procos.NAME`, a prefix no model's own variables use, and comes from one
//! of two places on the task:
//!
//! - an **extension property** (`camunda:properties`, fetched with `includeExtensionProperties`):
//!   static text in the BPMN, with no 4,000-character limit, that no process variable can
//!   shadow: the form for a model, a script, a prompt template, limits;
//! - an **input parameter**, i.e. a *local* variable of the task: a value computed per instance
//!   (`${…}`). A process variable that happens to share the name is never read.
//!
//! An input parameter `procos.settings` holding a JSON object (a `Json` variable, or its text)
//! sets several at once, by name without the prefix: `{"prompt": "…", "max_tokens": 40}`. It is
//! how a model hands a step settings it computes or receives, such as the settings a caller
//! gives ProcOS's task executor (`procos-tde`). A setting's own input parameter wins over the
//! same name in it; it wins over an extension property.
//!
//! When both are set the input parameter wins: it is the more specific of the two. Values are
//! JSON; an extension property's text is read as JSON where the setting wants a number, a list
//! or a document (`"2048"`, `"[\"a\"]"`), and as text otherwise.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::{Failure, Retry};

/// The prefix of every per-task setting's name.
pub const PREFIX: &str = "procos.";

/// The input parameter that sets several settings at once.
const SETTINGS_PARAMETER: &str = "procos.settings";

/// The entries of `procos.settings`: a JSON object, or its text; empty text or null is none.
fn settings_map(value: &Value) -> Result<Map<String, Value>, Failure> {
    let parsed;
    let document = match value {
        Value::Null => return Ok(Map::new()),
        Value::String(text) if text.trim().is_empty() => return Ok(Map::new()),
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).ok();
            parsed.as_ref()
        }
        other => Some(other),
    };
    match document {
        Some(Value::Object(map)) => Ok(map.clone()),
        _ => Err(invalid(
            "settings",
            Source::InputParameter,
            value,
            "a JSON object of settings, e.g. {\"prompt\": \"…\", \"max_tokens\": 40}",
        )),
    }
}

/// Where a task's setting was read from, for messages that tell a person where to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A `camunda:property` of the task's element.
    ExtensionProperty,
    /// An input parameter of the task (a local variable of its scope).
    InputParameter,
    /// An entry of the task's input parameter `procos.settings`.
    SettingsParameter,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ExtensionProperty => "extension property",
            Self::InputParameter => "input parameter",
            Self::SettingsParameter => "input parameter procos.settings",
        })
    }
}

/// The `procos.*` settings of one task, by name without the prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskSettings {
    values: BTreeMap<String, (Value, Source)>,
}

impl TaskSettings {
    /// The task's settings from its extension properties and its local variables (only the
    /// `procos.`-prefixed names of either; local variables win), with the entries of the input
    /// parameter `procos.settings` between the two. A `procos.settings` that is not a JSON
    /// object is refused, naming what it is.
    pub fn from_task<'a>(
        extension_properties: impl IntoIterator<Item = (&'a String, &'a Value)>,
        local_variables: impl IntoIterator<Item = (&'a String, &'a Value)>,
    ) -> Result<Self, Failure> {
        let mut values = BTreeMap::new();
        let local_variables: Vec<(&String, &Value)> = local_variables.into_iter().collect();
        let settings_map = local_variables
            .iter()
            .find(|(name, _)| name.as_str() == SETTINGS_PARAMETER)
            .map(|(_, value)| settings_map(value))
            .transpose()?
            .unwrap_or_default();
        let sources = [
            (
                Source::ExtensionProperty,
                extension_properties
                    .into_iter()
                    .filter_map(|(name, value)| Some((name.strip_prefix(PREFIX)?, value)))
                    .collect::<Vec<_>>(),
            ),
            (
                Source::SettingsParameter,
                settings_map
                    .iter()
                    .map(|(name, value)| (name.strip_prefix(PREFIX).unwrap_or(name), value))
                    .collect(),
            ),
            (
                Source::InputParameter,
                local_variables
                    .iter()
                    .filter(|(name, _)| name.as_str() != SETTINGS_PARAMETER)
                    .filter_map(|(name, value)| Some((name.strip_prefix(PREFIX)?, *value)))
                    .collect(),
            ),
        ];
        for (source, entries) in sources {
            for (setting, value) in entries {
                if !setting.is_empty() && !value.is_null() {
                    values.insert(setting.to_owned(), (value.clone(), source));
                }
            }
        }
        Ok(Self { values })
    }

    /// Settings given directly, as from input parameters (for tests and tools).
    pub fn from_pairs<I, K>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, Value)>,
        K: Into<String>,
    {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), (v, Source::InputParameter)))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The names set on the task, without the prefix.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// Whether the task sets `name`.
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Refuses settings none of `known` names: a typo would otherwise be ignored silently.
    pub fn check_known(&self, known: &[&str]) -> Result<(), Failure> {
        let unknown: Vec<String> = self
            .values
            .iter()
            .filter(|(name, _)| !known.contains(&name.as_str()))
            .map(|(name, (_, source))| format!("`{PREFIX}{name}` ({source})"))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let mut names: Vec<String> = known.iter().map(|k| format!("{PREFIX}{k}")).collect();
        names.sort();
        Err(Failure::new(
            format!(
                "the task sets {} that this topic's adapter does not know",
                unknown.join(", ")
            ),
            format!(
                "Per-task settings this topic takes: {}. Fix the name in the model (Camunda Modeler: the element template's field, or the task's extension properties and input parameters).",
                names.join(", ")
            ),
            Retry::Never,
        ))
    }

    /// The raw value of `name` and where it came from.
    pub fn get(&self, name: &str) -> Option<(&Value, Source)> {
        self.values.get(name).map(|(v, s)| (v, *s))
    }

    /// A text setting; numbers and booleans are taken as their text, a document refused.
    pub fn text(&self, name: &str) -> Result<Option<String>, Failure> {
        let Some((value, source)) = self.get(name) else {
            return Ok(None);
        };
        match value {
            Value::String(s) => Ok(Some(s.clone())),
            Value::Number(n) => Ok(Some(n.to_string())),
            Value::Bool(b) => Ok(Some(b.to_string())),
            other => Err(invalid(name, source, other, "text")),
        }
    }

    /// A JSON setting: the value itself, or JSON text (an extension property is always text).
    /// Text that is not JSON is refused.
    pub fn json(&self, name: &str) -> Result<Option<Value>, Failure> {
        let Some((value, source)) = self.get(name) else {
            return Ok(None);
        };
        match value {
            Value::String(text) if text.trim().is_empty() => Ok(None),
            Value::String(text) => serde_json::from_str(text)
                .map(Some)
                .map_err(|e| invalid(name, source, value, &format!("JSON ({e})"))),
            other => Ok(Some(other.clone())),
        }
    }

    /// A whole number ≥ 0: a JSON number or its text.
    pub fn u64(&self, name: &str) -> Result<Option<u64>, Failure> {
        self.number(name, "a whole number of 0 or more", |v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
    }

    /// A whole number, possibly negative.
    pub fn i64(&self, name: &str) -> Result<Option<i64>, Failure> {
        self.number(name, "a whole number", |v| match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
    }

    /// A number (finite).
    pub fn f64(&self, name: &str) -> Result<Option<f64>, Failure> {
        self.number(name, "a number", |v| {
            match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }
            .filter(|x: &f64| x.is_finite())
        })
    }

    /// A yes or no: a JSON boolean, or the text `true` or `false`.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, Failure> {
        self.number(name, "true or false", |v| match v {
            Value::Bool(b) => Some(*b),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
    }

    /// A duration: text such as `90s`, `5m` or `1h 30m`, or a number of seconds.
    pub fn duration(&self, name: &str) -> Result<Option<Duration>, Failure> {
        self.number(name, "a duration such as \"90s\" or \"5m\"", |v| match v {
            Value::Number(n) => n
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64),
            Value::String(s) => {
                let s = s.trim();
                s.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .map(Duration::from_secs_f64)
                    .or_else(|| humantime::parse_duration(s).ok())
            }
            _ => None,
        })
    }

    /// A list of text: a JSON list of strings, its text, or comma-separated names.
    pub fn text_list(&self, name: &str) -> Result<Option<Vec<String>>, Failure> {
        let Some((value, source)) = self.get(name) else {
            return Ok(None);
        };
        let list = match value {
            Value::String(text) if text.trim_start().starts_with('[') => {
                serde_json::from_str::<Vec<String>>(text).ok()
            }
            Value::String(text) => Some(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            other => serde_json::from_value::<Vec<String>>(other.clone()).ok(),
        };
        list.map(Some).ok_or_else(|| {
            invalid(
                name,
                source,
                value,
                "a list of text (a JSON list such as [\"a\", \"b\"], or a, b)",
            )
        })
    }

    fn number<T>(
        &self,
        name: &str,
        wanted: &str,
        parse: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>, Failure> {
        let Some((value, source)) = self.get(name) else {
            return Ok(None);
        };
        if matches!(value, Value::String(s) if s.trim().is_empty()) {
            return Ok(None);
        }
        parse(value)
            .map(Some)
            .ok_or_else(|| invalid(name, source, value, wanted))
    }

    /// Refuses a value above the topic's ceiling: the incident names the setting, the value asked
    /// for and the ceiling, and raises at once (retrying cannot help).
    pub fn within<T: PartialOrd + fmt::Display>(
        &self,
        name: &str,
        asked: T,
        ceiling: T,
        policy_key: &str,
    ) -> Result<T, Failure> {
        if asked <= ceiling {
            return Ok(asked);
        }
        Err(above_ceiling(
            &format!("{PREFIX}{name} = {asked}"),
            &format!("{policy_key} = {ceiling}"),
        ))
    }
}

/// The failure of a task that asks for more than its topic's policy allows.
pub fn above_ceiling(asked: &str, ceiling: &str) -> Failure {
    Failure::new(
        format!("the task asks for {asked}, above the topic's ceiling ({ceiling})"),
        format!(
            "The operator's topic table sets the ceilings a model may not pass. Ask for at most the ceiling in the model, or have the operator raise `{}` in the topic's settings.",
            ceiling.split(" = ").next().unwrap_or(ceiling)
        ),
        Retry::Never,
    )
}

/// The failure of a task whose setting does not parse.
fn invalid(name: &str, source: Source, value: &Value, wanted: &str) -> Failure {
    let shown = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let shown: String = if shown.chars().count() > 200 {
        shown.chars().take(200).chain("…".chars()).collect()
    } else {
        shown
    };
    Failure::new(
        format!("the task's setting `{PREFIX}{name}` ({source}) is `{shown}`, not {wanted}"),
        format!(
            "Fix `{PREFIX}{name}` in the model: it must be {wanted}. It was read from the task's {source}."
        ),
        Retry::Never,
    )
}

/// The fetched variables without the per-task settings: what an adapter receives as inputs.
pub fn without_settings(inputs: Map<String, Value>) -> Map<String, Value> {
    inputs
        .into_iter()
        .filter(|(name, _)| !name.starts_with(PREFIX))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn input_parameters_win_over_extension_properties_and_other_names_are_ignored() {
        let props = map(json!({"procos.model": "a", "procos.timeout": "90s", "other": "x"}));
        let locals = map(json!({"procos.model": "b", "model": "shadow"}));
        let s = TaskSettings::from_task(&props, &locals).unwrap();
        assert_eq!(s.text("model").unwrap().as_deref(), Some("b"));
        assert_eq!(s.get("model").unwrap().1, Source::InputParameter);
        assert_eq!(
            s.duration("timeout").unwrap(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(s.names().collect::<Vec<_>>(), ["model", "timeout"]);
    }

    #[test]
    fn procos_settings_sets_several_between_properties_and_their_own_parameters() {
        let props = map(json!({"procos.model": "a", "procos.seed": "1", "procos.timeout": "9s"}));
        for settings in [
            json!({"model": "b", "procos.seed": 2, "max_tokens": 40}),
            json!(r#"{"model": "b", "procos.seed": 2, "max_tokens": 40}"#),
        ] {
            let locals = map(json!({"procos.settings": settings, "procos.seed": 3}));
            let s = TaskSettings::from_task(&props, &locals).unwrap();
            assert_eq!(s.text("model").unwrap().as_deref(), Some("b"));
            assert_eq!(s.get("model").unwrap().1, Source::SettingsParameter);
            assert_eq!(s.i64("seed").unwrap(), Some(3), "its own parameter wins");
            assert_eq!(s.u64("max_tokens").unwrap(), Some(40));
            assert_eq!(s.duration("timeout").unwrap(), Some(Duration::from_secs(9)));
            assert!(!s.has("settings"));
        }
        let empty = map(json!({"procos.settings": ""}));
        assert!(
            TaskSettings::from_task(&props, &empty)
                .unwrap()
                .has("model")
        );
        for bad in [json!("[1]"), json!("model=b"), json!(3)] {
            let locals = map(json!({"procos.settings": bad}));
            let failure = TaskSettings::from_task(&props, &locals).unwrap_err();
            assert!(
                failure.message.contains("`procos.settings`")
                    && failure.message.contains("JSON object"),
                "{}",
                failure.message
            );
        }
    }

    #[test]
    fn numbers_lists_and_documents_come_as_values_or_as_text() {
        let s = TaskSettings::from_pairs([
            ("memory_mb", json!("2048")),
            ("cpus", json!(0.5)),
            ("seed", json!(-3)),
            ("outputs", json!("a, b")),
            ("command", json!("[\"echo\", \"hi\"]")),
            ("schema", json!("{\"type\": \"object\"}")),
            ("timeout", json!(2)),
            ("trace", json!("true")),
            ("vote", json!(false)),
        ]);
        assert_eq!(s.bool("trace").unwrap(), Some(true));
        assert_eq!(s.bool("vote").unwrap(), Some(false));
        assert!(s.bool("seed").is_err());
        assert_eq!(s.u64("memory_mb").unwrap(), Some(2048));
        assert_eq!(s.f64("cpus").unwrap(), Some(0.5));
        assert_eq!(s.i64("seed").unwrap(), Some(-3));
        assert_eq!(
            s.text_list("outputs").unwrap(),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            s.text_list("command").unwrap(),
            Some(vec!["echo".into(), "hi".into()])
        );
        assert_eq!(s.json("schema").unwrap(), Some(json!({"type": "object"})));
        assert_eq!(s.duration("timeout").unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(s.u64("absent").unwrap(), None);
    }

    #[test]
    fn a_bad_value_names_the_setting_its_source_and_what_it_must_be() {
        let props = map(json!({"procos.memory_mb": "lots"}));
        let s = TaskSettings::from_task(&props, &Map::new()).unwrap();
        let failure = s.u64("memory_mb").unwrap_err();
        assert!(
            failure
                .message
                .contains("`procos.memory_mb` (extension property)"),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("lots"), "{}", failure.message);
        assert_eq!(failure.retry, Retry::Never);
    }

    #[test]
    fn a_value_above_the_ceiling_names_both_and_is_not_retried() {
        let s = TaskSettings::default();
        assert_eq!(
            s.within("memory_mb", 512, 2048, "limits.max_memory_mb"),
            Ok(512)
        );
        let failure = s
            .within("memory_mb", 20480, 2048, "limits.max_memory_mb")
            .unwrap_err();
        assert!(
            failure.message.contains("procos.memory_mb = 20480")
                && failure.message.contains("limits.max_memory_mb = 2048"),
            "{}",
            failure.message
        );
        assert_eq!(failure.retry, Retry::Never);
    }

    #[test]
    fn unknown_settings_are_refused_with_the_known_ones() {
        let s = TaskSettings::from_pairs([("modle", json!("x"))]);
        let failure = s.check_known(&["model", "prompt"]).unwrap_err();
        assert!(
            failure.message.contains("procos.modle"),
            "{}",
            failure.message
        );
        assert!(
            failure.details.contains("procos.model, procos.prompt"),
            "{}",
            failure.details
        );
        assert!(TaskSettings::default().check_known(&[]).is_ok());
    }
}
