//! Helpers to keep raw JSON raw.
//!
//! serde turns a JSON `null` into `None` before a `RawValue` can see it; `present` keeps it,
//! so a field that is absent (`None`) differs from one that is `null` (`Some("null")`).
//! Values are borrowed from the request or response body, so their bytes are exactly the
//! bytes that arrived.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Use as `#[serde(default, borrow, deserialize_with = "present")]`.
pub fn present<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: Deserializer<'de>,
{
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// The JSON kind of a raw value, read from its first byte (raw values never start with
/// whitespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

pub fn kind(raw: &RawValue) -> Kind {
    match raw.get().as_bytes().first() {
        Some(b'n') => Kind::Null,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'"') => Kind::String,
        Some(b'[') => Kind::Array,
        Some(b'{') => Kind::Object,
        _ => Kind::Number,
    }
}

/// A raw value that is `null` counts as absent for optional fields other than `content`.
pub fn non_null(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| kind(r) != Kind::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(default, borrow, deserialize_with = "present")]
        v: Option<&'a RawValue>,
    }

    #[test]
    fn present_tells_null_from_absent_and_keeps_bytes() {
        let absent: Probe = serde_json::from_str("{}").unwrap_or_else(|e| panic!("{e}"));
        assert!(absent.v.is_none());
        let null: Probe = serde_json::from_str(r#"{"v":null}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(null.v.map(RawValue::get), Some("null"));
        let text = "{\"v\" :  [1.50e3, -0.0,\"\\ud83d\\ude00\" ] }";
        let exact: Probe = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            exact.v.map(RawValue::get),
            Some("[1.50e3, -0.0,\"\\ud83d\\ude00\" ]")
        );
    }
}
