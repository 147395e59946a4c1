//! Camunda's typed variables, and their plain-JSON view for adapters.
//!
//! On the wire a variable is `{"type": "Integer", "value": 5, "valueInfo": {}}`. The domain type
//! [`Variable`] keeps the type so that a value read from the engine is written back as what it was.
//! Adapters see plain JSON ([`Variable::to_json`]); their JSON answers become typed variables by
//! [`Variable::from_json`].
//!
//! Plain JSON is stored so that a model can use it as it expects: a list as a Java list (an
//! `Object` of class `java.util.ArrayList`, serialized as JSON), which a multi-instance
//! `camunda:collection` runs over and `${items.size()}` measures; a map as Spin's `Json`, for
//! `${doc.prop("a")}`; text over the engine's 4,000-character `String` column as an `Object` of
//! class `java.lang.String`, which the engine keeps in its byte-array table.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Variables by name, as the engine sends and takes them.
pub type Variables = BTreeMap<String, Variable>;

/// The variables the engine keeps for a multi-instance activity: on its body (`nrOf…`) and on
/// each inner instance (`loopCounter`). A task's output of one of these names, written to the
/// instance, overwrites the body's counter, and the activity then never completes.
pub const MULTI_INSTANCE_VARIABLES: [&str; 4] = [
    "nrOfInstances",
    "nrOfActiveInstances",
    "nrOfCompletedInstances",
    "loopCounter",
];

/// The engine's date format: `2013-06-30T21:00:00.000+0200`.
const DATE_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3f%z";

/// Serde for dates in the engine's format, for fields such as `lockExpirationTime`.
pub(crate) mod engine_date {
    use chrono::{DateTime, FixedOffset};
    use serde::{Deserialize, Deserializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| parse(&text))
            .transpose()
    }

    pub(crate) fn deserialize_required<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<FixedOffset>, D::Error> {
        parse(&String::deserialize(deserializer)?)
    }

    fn parse<E: serde::de::Error>(text: &str) -> Result<DateTime<FixedOffset>, E> {
        DateTime::parse_from_str(text, super::DATE_FORMAT)
            .map_err(|e| E::custom(format!("`{text}` is not an engine date: {e}")))
    }
}

/// A date as the engine writes it, or in RFC 3339 (`2024-02-29T13:45:00Z`), which is what most
/// languages print.
fn parse_date(text: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_str(text, DATE_FORMAT)
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
}

/// The longest text a `String` variable holds: the engine stores it in a 4,000-character column.
/// Counted in UTF-16 units, as Java counts a string's length (never fewer than its characters).
pub const MAX_STRING_CHARS: usize = 4000;

/// The serialization format of the `Object` variables ProcOS writes and reads as JSON.
const JSON_FORMAT: &str = "application/json";

/// The Java class a JSON array is stored as.
const LIST_CLASS: &str = "java.util.ArrayList";

/// The Java class a text too long for a `String` variable is stored as.
const STRING_CLASS: &str = "java.lang.String";

/// Type names an adapter may ask for in an output's typed form.
const OUTPUT_TYPES: &[&str] = &[
    "Null", "String", "Boolean", "Short", "Integer", "Long", "Double", "Date", "Bytes", "Json",
    "File",
];

/// A process variable with its Camunda type.
#[derive(Debug, Clone, PartialEq)]
pub enum Variable {
    Null,
    String(String),
    Boolean(bool),
    Short(i16),
    Integer(i32),
    Long(i64),
    Double(f64),
    Date(DateTime<FixedOffset>),
    Bytes(Vec<u8>),
    /// Camunda Spin's `Json` type.
    Json(Value),
    /// A Java object the engine keeps serialized as JSON: type `Object`, `valueInfo`
    /// `{"objectTypeName": class, "serializationDataFormat": "application/json"}`. `class` is
    /// the Java class the engine deserializes it into (with Spin's Jackson) when a model uses
    /// it, and so does the official Java client's `getVariable`: a `java.util.ArrayList` for a
    /// JSON array, a `java.lang.String` for a long text, a `java.util.LinkedHashMap` for each
    /// element of such a list the engine hands a multi-instance activity. (The official
    /// JavaScript client hands the serialized text over as it is.) `json` is the serialized
    /// document exactly as the engine stores it, kept as text so that it goes back unchanged.
    /// Objects in other formats (Java serialization, XML) are [`Variable::Other`].
    Object {
        class: String,
        json: String,
    },
    /// Any other engine type (File, Xml, Objects not serialized as JSON, …), carried through
    /// unchanged; also a Bytes or Object variable whose content a list query left out (its
    /// value is then null).
    Other {
        type_name: String,
        value: Value,
        value_info: Map<String, Value>,
    },
}

impl Variable {
    /// Camunda's name for this variable's type.
    pub fn type_name(&self) -> &str {
        match self {
            Variable::Null => "Null",
            Variable::String(_) => "String",
            Variable::Boolean(_) => "Boolean",
            Variable::Short(_) => "Short",
            Variable::Integer(_) => "Integer",
            Variable::Long(_) => "Long",
            Variable::Double(_) => "Double",
            Variable::Date(_) => "Date",
            Variable::Bytes(_) => "Bytes",
            Variable::Json(_) => "Json",
            Variable::Object { .. } => "Object",
            Variable::Other { type_name, .. } => type_name,
        }
    }

    /// `document` as an `Object` of the Java class `class`, serialized as JSON: what the Java
    /// client's `Variables.objectValue(value).serializationDataFormat("application/json")`
    /// writes for an object of that class.
    pub fn object(class: impl Into<String>, document: &Value) -> Variable {
        Variable::Object {
            class: class.into(),
            json: document.to_string(),
        }
    }

    /// A `File` variable: `bytes` under the file name and MIME type Cockpit offers for download.
    /// `encoding` (a charset such as `UTF-8`) is for text files.
    pub fn file(filename: &str, mime_type: &str, encoding: Option<&str>, bytes: &[u8]) -> Variable {
        let mut value_info = Map::from_iter([
            ("filename".to_owned(), Value::String(filename.to_owned())),
            ("mimeType".to_owned(), Value::String(mime_type.to_owned())),
        ]);
        if let Some(encoding) = encoding {
            value_info.insert("encoding".to_owned(), Value::String(encoding.to_owned()));
        }
        Variable::Other {
            type_name: "File".to_owned(),
            value: Value::String(BASE64.encode(bytes)),
            value_info,
        }
    }

    /// The plain-JSON view adapters work with: dates as the engine's text, bytes as base64,
    /// `Json` as the document itself, objects serialized as JSON as their document (a list as
    /// the array, a long text as the string).
    pub fn to_json(&self) -> Value {
        match self {
            Variable::Null => Value::Null,
            Variable::String(s) => Value::String(s.clone()),
            Variable::Boolean(b) => Value::Bool(*b),
            Variable::Short(n) => Value::from(*n),
            Variable::Integer(n) => Value::from(*n),
            Variable::Long(n) => Value::from(*n),
            // NaN and infinities have no JSON form; the engine cannot send them either.
            Variable::Double(x) => {
                serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number)
            }
            Variable::Date(d) => Value::String(d.format(DATE_FORMAT).to_string()),
            Variable::Bytes(b) => Value::String(BASE64.encode(b)),
            Variable::Json(v) => v.clone(),
            Variable::Object { json, .. } => {
                serde_json::from_str(json).unwrap_or_else(|_| Value::String(json.clone()))
            }
            Variable::Other {
                value, value_info, ..
            } => {
                let json_serialized = value_info
                    .get("serializationDataFormat")
                    .and_then(Value::as_str)
                    .is_some_and(|f| f.starts_with("application/json"));
                match value {
                    Value::String(text) if json_serialized => {
                        serde_json::from_str(text).unwrap_or_else(|_| value.clone())
                    }
                    _ => value.clone(),
                }
            }
        }
    }

    /// The typed variable for a plain-JSON value: integers become `Integer` when they fit in 32
    /// bits and `Long` otherwise, other numbers `Double`, objects `Json`, arrays an `Object` of
    /// class `java.util.ArrayList` (a Java list for the engine: a multi-instance collection,
    /// `${items.size()}`), strings `String` up to [`MAX_STRING_CHARS`] and an `Object` of class
    /// `java.lang.String` beyond (stored as a byte array; read back as the same text).
    pub fn from_json(value: Value) -> Variable {
        match value {
            Value::Null => Variable::Null,
            Value::Bool(b) => Variable::Boolean(b),
            Value::String(s) if s.encode_utf16().count() > MAX_STRING_CHARS => {
                Variable::object(STRING_CLASS, &Value::String(s))
            }
            Value::String(s) => Variable::String(s),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    i32::try_from(i).map_or(Variable::Long(i), Variable::Integer)
                } else {
                    // u64 beyond i64, or a fraction: Camunda's only wider number is Double.
                    Variable::Double(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            list @ Value::Array(_) => Variable::object(LIST_CLASS, &list),
            doc @ Value::Object(_) => Variable::Json(doc),
        }
    }
}

impl Variable {
    /// An adapter's output value as a variable. Plain JSON maps as [`Variable::from_json`] does;
    /// an object of exactly `type` and `value` (and optionally `valueInfo`), with `type` one of
    /// Null, String, Boolean, Short, Integer, Long, Double, Date, Bytes or Json, is Camunda's own
    /// typed form and gives that type: `{"type": "Date", "value": "2024-02-29T13:45:00Z"}`,
    /// `{"type": "Bytes", "value": "<base64>"}`; `Json` keeps an array a Spin document; `File`
    /// takes base64 content and a `valueInfo` naming at least its `filename` (and optionally its
    /// `mimeType` and `encoding`), as the engine's REST API does. A
    /// `String` too long for the engine's column is stored as [`Variable::from_json`] stores
    /// long text. A typed form whose value does not fit its type is refused, with the reason.
    pub fn from_output(value: Value) -> Result<Variable, String> {
        let typed = match &value {
            Value::Object(map) => {
                let known_keys = map
                    .keys()
                    .all(|k| matches!(k.as_str(), "type" | "value" | "valueInfo"));
                let type_name = map.get("type").and_then(Value::as_str);
                known_keys
                    && map.contains_key("value")
                    && type_name.is_some_and(|t| OUTPUT_TYPES.contains(&t))
            }
            _ => false,
        };
        if !typed {
            return Ok(Variable::from_json(value));
        }
        if value.get("type").and_then(Value::as_str) == Some("File") {
            return file_output(value);
        }
        let is_json = value.get("type").and_then(Value::as_str) == Some("Json");
        if is_json && let Some(doc) = value.get("value").filter(|v| !v.is_string()) {
            return Ok(Variable::Json(doc.clone()));
        }
        match serde_json::from_value(value).map_err(|e| e.to_string())? {
            Variable::String(s) => Ok(Variable::from_json(Value::String(s))),
            typed => Ok(typed),
        }
    }
}

/// A `File` output, `{"type": "File", "value": "<base64>", "valueInfo": {"filename": …}}`,
/// checked as the engine would check it, so that a mistake fails the step naming it instead of
/// the engine refusing the whole completion.
fn file_output(mut value: Value) -> Result<Variable, String> {
    let content = match value.get("value") {
        Some(Value::String(text)) => text.clone(),
        _ => return Err("a File's value must be its content in base64".to_owned()),
    };
    BASE64
        .decode(&content)
        .map_err(|e| format!("a File's value is not base64: {e}"))?;
    let value_info = match value.get_mut("valueInfo").map(Value::take) {
        Some(Value::Object(info)) => info,
        _ => return Err("a File needs a valueInfo with its filename".to_owned()),
    };
    if value_info
        .get("filename")
        .and_then(Value::as_str)
        .is_none_or(|name| name.trim().is_empty())
    {
        return Err("a File's valueInfo must name its filename".to_owned());
    }
    if let Some((key, _)) = value_info.iter().find(|(k, v)| {
        !matches!(k.as_str(), "filename" | "mimeType" | "encoding") || !v.is_string()
    }) {
        return Err(format!(
            "a File's valueInfo holds only the texts filename, mimeType and encoding, not `{key}`"
        ));
    }
    Ok(Variable::Other {
        type_name: "File".to_owned(),
        value: Value::String(content),
        value_info,
    })
}

/// The wire form of one variable.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(rename = "type", default)]
    type_name: Option<String>,
    #[serde(default)]
    value: Value,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    value_info: Map<String, Value>,
}

impl Serialize for Variable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (value, value_info) = match self {
            // Spin's Json type travels as text.
            Variable::Json(doc) => (Value::String(doc.to_string()), Map::new()),
            Variable::Object { class, json } => (
                Value::String(json.clone()),
                Map::from_iter([
                    ("objectTypeName".to_owned(), Value::String(class.clone())),
                    (
                        "serializationDataFormat".to_owned(),
                        Value::String(JSON_FORMAT.to_owned()),
                    ),
                ]),
            ),
            Variable::Other {
                value, value_info, ..
            } => (value.clone(), value_info.clone()),
            other => (other.to_json(), Map::new()),
        };
        Wire {
            type_name: Some(self.type_name().to_owned()),
            value,
            value_info,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Variable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let wire = Wire::deserialize(deserializer)?;
        let type_name = wire.type_name.unwrap_or_else(|| "Null".to_owned());
        let mismatch = |expected: &str| {
            D::Error::custom(format!(
                "variable of type {type_name} has a value that is not {expected}: {}",
                wire.value
            ))
        };
        let int = |v: &Value| v.as_i64();
        Ok(match (type_name.as_str(), &wire.value) {
            // List queries leave binary content out: keep the type, not a Null that never was.
            (_, Value::Null) if !matches!(type_name.as_str(), "Object" | "Bytes" | "File") => {
                Variable::Null
            }
            ("Null", _) => Variable::Null,
            ("String", Value::String(s)) => Variable::String(s.clone()),
            ("Boolean", Value::Bool(b)) => Variable::Boolean(*b),
            ("Short", v) => Variable::Short(
                int(v)
                    .and_then(|i| i16::try_from(i).ok())
                    .ok_or_else(|| mismatch("a 16-bit integer"))?,
            ),
            ("Integer", v) => Variable::Integer(
                int(v)
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(|| mismatch("a 32-bit integer"))?,
            ),
            ("Long", v) => Variable::Long(int(v).ok_or_else(|| mismatch("a 64-bit integer"))?),
            ("Double", v) => Variable::Double(v.as_f64().ok_or_else(|| mismatch("a number"))?),
            ("Date", Value::String(s)) => Variable::Date(
                parse_date(s)
                    .ok_or_else(|| mismatch("a date like 2013-06-30T21:00:00.000+0200"))?,
            ),
            ("Bytes", Value::String(s)) => {
                Variable::Bytes(BASE64.decode(s).map_err(|_| mismatch("base64"))?)
            }
            ("Json", Value::String(s)) => {
                Variable::Json(serde_json::from_str(s).map_err(|_| mismatch("a JSON document"))?)
            }
            ("Json", doc) => Variable::Json(doc.clone()),
            ("Object", Value::String(json))
                if let Some(class) = json_object_class(&wire.value_info, json) =>
            {
                Variable::Object {
                    class,
                    json: json.clone(),
                }
            }
            ("String" | "Boolean" | "Date", _) | ("Bytes", Value::Bool(_) | Value::Number(_)) => {
                return Err(mismatch(&format!("a {type_name}")));
            }
            _ => Variable::Other {
                type_name,
                value: wire.value,
                value_info: wire.value_info,
            },
        })
    }
}

/// The class of an `Object` whose `valueInfo` says nothing but its class and the JSON format
/// and whose value is a JSON document: one [`Variable::Object`] holds and writes back exactly.
fn json_object_class(value_info: &Map<String, Value>, json: &str) -> Option<String> {
    let class = value_info.get("objectTypeName")?.as_str()?;
    let json_format = value_info.get("serializationDataFormat")? == JSON_FORMAT;
    (json_format && value_info.len() == 2 && serde_json::from_str::<Value>(json).is_ok())
        .then(|| class.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(v: &Variable) -> Variable {
        let wire = serde_json::to_value(v).unwrap();
        serde_json::from_value(wire).unwrap()
    }

    #[test]
    fn every_type_round_trips_through_the_wire_form() {
        let date = DateTime::parse_from_str("2024-02-29T13:45:00.123+0100", DATE_FORMAT).unwrap();
        for v in [
            Variable::Null,
            Variable::String("quote \" and\nnewline".into()),
            Variable::Boolean(true),
            Variable::Short(-7),
            Variable::Integer(42),
            Variable::Long(1 << 40),
            Variable::Double(0.25),
            Variable::Date(date),
            Variable::Bytes(vec![0, 255, 7]),
            Variable::Json(json!({"a": [1, 2, {"b": null}]})),
            Variable::Json(json!([1, 2])),
            Variable::object("java.util.ArrayList", &json!([{"a": 1}, 2])),
            Variable::object("java.lang.String", &json!("y".repeat(5000))),
        ] {
            assert_eq!(round_trip(&v), v, "{v:?}");
        }
    }

    #[test]
    fn json_travels_as_text_and_dates_in_the_engine_format() {
        let wire = serde_json::to_value(Variable::Json(json!({"k": 1}))).unwrap();
        assert_eq!(wire, json!({"type": "Json", "value": "{\"k\":1}"}));
        let date = DateTime::parse_from_str("2024-02-29T13:45:00.000+0100", DATE_FORMAT).unwrap();
        let wire = serde_json::to_value(Variable::Date(date)).unwrap();
        assert_eq!(
            wire,
            json!({"type": "Date", "value": "2024-02-29T13:45:00.000+0100"})
        );
    }

    #[test]
    fn plain_json_maps_to_the_narrowest_camunda_type() {
        assert_eq!(Variable::from_json(json!(5)), Variable::Integer(5));
        assert_eq!(
            Variable::from_json(json!(5_000_000_000_i64)),
            Variable::Long(5_000_000_000)
        );
        assert_eq!(Variable::from_json(json!(1.5)), Variable::Double(1.5));
        assert_eq!(
            Variable::from_json(json!({"a": [1]})),
            Variable::Json(json!({"a": [1]}))
        );
        assert_eq!(Variable::from_json(json!(null)), Variable::Null);
    }

    #[test]
    fn outputs_in_the_typed_form_keep_their_type() {
        let date = Variable::from_output(json!({"type": "Date", "value": "2024-02-29T13:45:00Z"}));
        assert_eq!(date.unwrap().type_name(), "Date");
        let bytes = Variable::from_output(json!({"type": "Bytes", "value": "AP8H"})).unwrap();
        assert_eq!(bytes, Variable::Bytes(vec![0, 255, 7]));
        let long = Variable::from_output(json!({"type": "Long", "value": 5})).unwrap();
        assert_eq!(long, Variable::Long(5));
        let json_doc = Variable::from_output(json!({"type": "Json", "value": {"a": 1}})).unwrap();
        assert_eq!(json_doc, Variable::Json(json!({"a": 1})));
        // Other objects are documents, including ones that merely have a `type` key.
        let doc = json!({"type": "Car", "value": 3});
        assert_eq!(
            Variable::from_output(doc.clone()).unwrap(),
            Variable::Json(doc)
        );
        let doc = json!({"type": "Date", "value": 3, "colour": "red"});
        assert_eq!(
            Variable::from_output(doc.clone()).unwrap(),
            Variable::Json(doc)
        );
        let err = Variable::from_output(json!({"type": "Date", "value": "soon"})).unwrap_err();
        assert!(err.contains("Date"), "{err}");
    }

    #[test]
    fn a_file_output_is_checked_and_travels_as_the_engine_takes_it() {
        let file = Variable::from_output(json!({"type": "File", "value": "AP8H",
            "valueInfo": {"filename": "a.bin", "mimeType": "application/octet-stream"}}))
        .unwrap();
        assert_eq!(
            file,
            Variable::file("a.bin", "application/octet-stream", None, &[0, 255, 7])
        );
        assert_eq!(
            serde_json::to_value(&file).unwrap(),
            json!({"type": "File", "value": "AP8H",
                   "valueInfo": {"filename": "a.bin", "mimeType": "application/octet-stream"}})
        );
        for (bad, says) in [
            (json!({"type": "File", "value": "AP8H"}), "filename"),
            (
                json!({"type": "File", "value": "%%", "valueInfo": {"filename": "a"}}),
                "base64",
            ),
            (
                json!({"type": "File", "value": 3, "valueInfo": {"filename": "a"}}),
                "base64",
            ),
            (
                json!({"type": "File", "value": "", "valueInfo": {"filename": " "}}),
                "filename",
            ),
            (
                json!({"type": "File", "value": "", "valueInfo": {"filename": "a", "size": 1}}),
                "`size`",
            ),
        ] {
            let err = Variable::from_output(bad.clone()).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_value_of_the_wrong_shape_is_refused_with_its_type() {
        let err = serde_json::from_value::<Variable>(json!({"type": "Integer", "value": "x"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Integer"), "{err}");
    }

    #[test]
    fn lock_times_are_read_in_the_engine_format_or_refused() {
        #[derive(serde::Deserialize)]
        struct Lock {
            #[serde(default, deserialize_with = "engine_date::deserialize")]
            at: Option<DateTime<FixedOffset>>,
        }
        let lock: Lock =
            serde_json::from_value(json!({"at": "2026-11-23T13:18:02.050+0000"})).unwrap();
        assert_eq!(lock.at.unwrap().timestamp_millis(), 1_795_439_882_050);
        assert!(
            serde_json::from_value::<Lock>(json!({"at": null}))
                .unwrap()
                .at
                .is_none()
        );
        assert!(
            serde_json::from_value::<Lock>(json!({}))
                .unwrap()
                .at
                .is_none()
        );
        assert!(serde_json::from_value::<Lock>(json!({"at": "yesterday"})).is_err());
    }

    #[test]
    fn unknown_types_are_carried_unchanged() {
        let java = json!({"type": "Object", "value": "rO0ABXQAA2FiYw==",
            "valueInfo": {"objectTypeName": "java.lang.String",
                "serializationDataFormat": "application/x-java-serialized-object"}});
        let xml = json!({"type": "Xml", "value": "<a/>"});
        let file = json!({"type": "File", "value": null,
            "valueInfo": {"filename": "a.txt", "mimeType": "text/plain"}});
        // JSON with more in valueInfo than class and format, or a value that is no document.
        let transient = json!({"type": "Object", "value": "[1]",
            "valueInfo": {"objectTypeName": "java.util.ArrayList",
                "serializationDataFormat": "application/json", "transient": true}});
        let broken = json!({"type": "Object", "value": "[1",
            "valueInfo": {"objectTypeName": "java.util.ArrayList",
                "serializationDataFormat": "application/json"}});
        for (wire, plain) in [
            (java, json!("rO0ABXQAA2FiYw==")),
            (xml, json!("<a/>")),
            (file, json!(null)),
            (transient, json!([1])),
            (broken, json!("[1")),
        ] {
            let v: Variable = serde_json::from_value(wire.clone()).unwrap();
            assert!(matches!(v, Variable::Other { .. }), "{v:?}");
            assert_eq!(serde_json::to_value(&v).unwrap(), wire);
            assert_eq!(v.to_json(), plain, "{v:?}");
        }
    }

    /// What the engine holds for a list output: a Java `ArrayList` serialized as JSON.
    fn list_wire(json: &str) -> Value {
        json!({"type": "Object", "value": json, "valueInfo": {
            "objectTypeName": "java.util.ArrayList", "serializationDataFormat": "application/json"}})
    }

    #[test]
    fn arrays_are_stored_as_java_lists_serialized_as_json() {
        // Keys in order: serde_json sorts them unless a crate turns on its `preserve_order`.
        let items = json!([1, 2.5, "three", null, {"qty": 4, "sku": "A-1"}, [5]]);
        let v = Variable::from_json(items.clone());
        assert_eq!(v.type_name(), "Object");
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            list_wire(r#"[1,2.5,"three",null,{"qty":4,"sku":"A-1"},[5]]"#)
        );
        assert_eq!(v.to_json(), items);
        assert_eq!(round_trip(&v), v);
        assert_eq!(Variable::from_output(items.clone()).unwrap(), v);
        let empty = Variable::from_json(json!([]));
        assert_eq!(serde_json::to_value(&empty).unwrap(), list_wire("[]"));
        // Asked for as Json, an array stays a Spin document.
        let spin = Variable::from_output(json!({"type": "Json", "value": [1, 2]})).unwrap();
        assert_eq!(spin, Variable::Json(json!([1, 2])));
    }

    #[test]
    fn objects_serialized_as_json_read_as_their_document_and_go_back_exactly() {
        // The engine's own serialization of a multi-instance element, and a list it re-wrote:
        // key order, spacing and number forms are Jackson's, and stay so.
        let element = json!({"type": "Object", "value": "{\"sku\":\"B-2\",\"price\":1.0E10}",
            "valueInfo": {"objectTypeName": "java.util.LinkedHashMap<java.lang.Object,java.lang.Object>",
                "serializationDataFormat": "application/json"}});
        let v: Variable = serde_json::from_value(element.clone()).unwrap();
        assert_eq!(
            v,
            Variable::Object {
                class: "java.util.LinkedHashMap<java.lang.Object,java.lang.Object>".into(),
                json: r#"{"sku":"B-2","price":1.0E10}"#.into(),
            }
        );
        assert_eq!(v.to_json(), json!({"sku": "B-2", "price": 1e10}));
        assert_eq!(serde_json::to_value(&v).unwrap(), element);
        let spaced = list_wire("[ 1, 2 ]");
        let v: Variable = serde_json::from_value(spaced.clone()).unwrap();
        assert_eq!(v.to_json(), json!([1, 2]));
        assert_eq!(serde_json::to_value(&v).unwrap(), spaced);
        // A list query leaves an object's content out: the type stays, the value is null.
        let left_out = json!({"type": "Object", "value": null, "valueInfo": {
            "objectTypeName": "java.util.ArrayList", "serializationDataFormat": "application/json"}});
        let v: Variable = serde_json::from_value(left_out.clone()).unwrap();
        assert_eq!(v.type_name(), "Object");
        assert_eq!(serde_json::to_value(&v).unwrap(), left_out);
    }

    #[test]
    fn text_beyond_the_string_column_is_stored_as_a_java_string_serialized_as_json() {
        let longest = "x".repeat(MAX_STRING_CHARS);
        assert_eq!(
            Variable::from_json(json!(longest)),
            Variable::String(longest.clone())
        );
        let long = format!("{longest}\"é\n");
        let v = Variable::from_json(json!(long));
        let wire = serde_json::to_value(&v).unwrap();
        assert_eq!(
            wire,
            json!({"type": "Object", "value": serde_json::to_string(&long).unwrap(),
                "valueInfo": {"objectTypeName": "java.lang.String",
                    "serializationDataFormat": "application/json"}})
        );
        assert_eq!(v.to_json(), json!(long));
        assert_eq!(round_trip(&v), v);
        // Java counts UTF-16 units: 2,001 characters outside the BMP are 4,002 of them.
        let emoji = "😀".repeat(2001);
        assert_eq!(Variable::from_json(json!(emoji)).type_name(), "Object");
        // The typed form of a String is held the same way when it is too long.
        let typed = Variable::from_output(json!({"type": "String", "value": long})).unwrap();
        assert_eq!(typed, v);
        let short = Variable::from_output(json!({"type": "String", "value": "hi"})).unwrap();
        assert_eq!(short, Variable::String("hi".into()));
    }
}
