//! Reading a task's inputs the way every adapter does.

use serde_json::{Map, Value};

/// An input that holds JSON: the value itself, or JSON text in a string (what a Modeler text
/// field gives). Absent, null and blank mean "not given"; text that is not JSON stays a string,
/// for the caller to refuse with its own message.
pub(crate) fn json_input(inputs: &Map<String, Value>, name: &str) -> Option<Value> {
    match inputs.get(name)? {
        Value::Null => None,
        Value::String(text) if text.trim().is_empty() => None,
        Value::String(text) => {
            Some(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())))
        }
        other => Some(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_inputs_come_as_values_or_as_text() {
        let inputs =
            serde_json::json!({"a": ["x"], "b": "[\"y\"]", "c": " ", "d": null, "e": "not json"});
        let inputs = inputs.as_object().cloned().unwrap_or_default();
        assert_eq!(json_input(&inputs, "a"), Some(serde_json::json!(["x"])));
        assert_eq!(json_input(&inputs, "b"), Some(serde_json::json!(["y"])));
        assert_eq!(json_input(&inputs, "c"), None);
        assert_eq!(json_input(&inputs, "d"), None);
        assert_eq!(
            json_input(&inputs, "e"),
            Some(serde_json::json!("not json"))
        );
        assert_eq!(json_input(&inputs, "missing"), None);
    }
}
