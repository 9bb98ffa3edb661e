//! Merging streamed `reasoning_details` fragments into the stored array (SPEC section 4).
//!
//! OpenRouter streams reasoning as fragments, every one with `index: 0`. Walking them in
//! order: a `reasoning.text` or `reasoning.summary` fragment extends the last block when that
//! block has the same `type` and `index`, else it starts a new block; every
//! `reasoning.encrypted` fragment (and every fragment of a type we do not know) is a block of
//! its own. Text is joined from every fragment, the first one included; `format`, `id` and
//! `data` come from the first fragment that has them; `signature` from any fragment with a
//! non-empty one (Anthropic sends it last, after the tool-call deltas). Unknown fields are
//! kept in the order first seen. Strings are joined as their raw JSON interiors, so the
//! upstream's escapes survive; no value is re-serialised.
//!
//! The merged blocks are numbered by position (`index` 0, 1, ...), which is how the
//! non-streaming answer numbers them.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::ObjectWriter;
use super::raw::{self, Kind};

/// A JSON object's entries in document order, values raw.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// The interior of a raw JSON string literal (between the quotes), escapes as sent.
pub fn string_interior(raw: &RawValue) -> Option<&str> {
    let text = raw.get();
    (raw::kind(raw) == Kind::String && text.len() >= 2).then(|| &text[1..text.len() - 1])
}

#[derive(Debug)]
enum Value {
    Raw(String),
    /// A string being joined from fragments: its JSON interior.
    Joined(String),
}

#[derive(Debug)]
struct Block {
    kind: Option<String>,
    index: Option<String>,
    fields: Vec<(String, Value)>,
    /// A fragment that is not a JSON object, kept as it came.
    verbatim: Option<String>,
}

impl Block {
    fn field_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.fields
            .iter_mut()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    fn absorb(&mut self, key: &str, value: &RawValue) {
        match (key, self.field_mut(key)) {
            ("text" | "summary", Some(Value::Joined(joined))) => {
                if let Some(more) = string_interior(value) {
                    joined.push_str(more);
                }
            }
            ("signature", Some(slot)) => {
                if string_interior(value).is_some_and(|s| !s.is_empty()) {
                    *slot = Value::Raw(value.get().to_owned());
                }
            }
            // `format`, `id`, `data`, unknown fields: the first non-null value wins. A text
            // that opened as `null` is joined from its first string on.
            (_, Some(slot @ Value::Raw(_))) => {
                if matches!(slot, Value::Raw(r) if r == "null") && raw::kind(value) != Kind::Null {
                    *slot = initial(key, value);
                }
            }
            (_, Some(Value::Joined(_))) => {}
            (_, None) => self.fields.push((key.to_owned(), initial(key, value))),
        }
    }
}

fn initial(key: &str, value: &RawValue) -> Value {
    match (key, string_interior(value)) {
        ("text" | "summary", Some(interior)) => Value::Joined(interior.to_owned()),
        _ => Value::Raw(value.get().to_owned()),
    }
}

#[derive(Debug, Default)]
pub struct ReasoningMerger {
    blocks: Vec<Block>,
}

impl ReasoningMerger {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Adds one fragment (an element of a delta's `reasoning_details`). A fragment that is not
    /// a JSON object is kept as a block of its own, unchanged.
    pub fn push(&mut self, fragment: &RawValue) {
        let Ok(Entries(entries)) = serde_json::from_str::<Entries>(fragment.get()) else {
            self.blocks.push(Block {
                kind: None,
                index: None,
                fields: Vec::new(),
                verbatim: Some(fragment.get().to_owned()),
            });
            return;
        };
        let kind = entries
            .iter()
            .find(|(k, _)| k == "type")
            .and_then(|(_, v)| string_interior(v))
            .map(str::to_owned);
        let index = entries
            .iter()
            .find(|(k, _)| k == "index")
            .map(|(_, v)| v.get().to_owned());
        let extends = matches!(
            kind.as_deref(),
            Some("reasoning.text" | "reasoning.summary")
        ) && self
            .blocks
            .last()
            .is_some_and(|last| last.kind == kind && last.index == index);
        if !extends {
            self.blocks.push(Block {
                kind,
                index,
                fields: Vec::with_capacity(entries.len()),
                verbatim: None,
            });
        }
        if let Some(block) = self.blocks.last_mut() {
            for (key, value) in &entries {
                block.absorb(key, value);
            }
        }
    }

    /// The merged array as JSON text; `None` when no fragment arrived.
    pub fn finish(&self) -> Option<String> {
        if self.blocks.is_empty() {
            return None;
        }
        let mut out = String::from("[");
        for (position, block) in self.blocks.iter().enumerate() {
            if position > 0 {
                out.push(',');
            }
            if let Some(verbatim) = &block.verbatim {
                out.push_str(verbatim);
                continue;
            }
            let mut w = ObjectWriter::new();
            for (key, value) in &block.fields {
                match value {
                    Value::Raw(_) if key == "index" => w.int(key, position as i64),
                    Value::Raw(raw) => w.raw(key, raw),
                    Value::Joined(interior) => w.raw(key, &format!("\"{interior}\"")),
                };
            }
            out.push_str(&w.finish());
        }
        out.push(']');
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merge(fragments: &[&str]) -> String {
        let mut m = ReasoningMerger::new();
        for f in fragments {
            let raw: Box<RawValue> = serde_json::from_str(f).unwrap_or_else(|e| panic!("{e}"));
            m.push(&raw);
        }
        m.finish().unwrap_or_default()
    }

    #[test]
    fn text_fragments_join_and_a_late_signature_wins() {
        let merged = merge(&[
            r#"{"type":"reasoning.text","text":"","signature":"","format":"anthropic-claude-v1","index":0}"#,
            r#"{"type":"reasoning.text","text":"The \"user\"","format":"anthropic-claude-v1","index":0}"#,
            r#"{"type":"reasoning.text","text":" asks \u00e9","format":"anthropic-claude-v1","index":0}"#,
            r#"{"type":"reasoning.text","signature":"SIG==","format":"anthropic-claude-v1","index":0}"#,
        ]);
        assert_eq!(
            merged,
            r#"[{"type":"reasoning.text","text":"The \"user\" asks \u00e9","signature":"SIG==","format":"anthropic-claude-v1","index":0}]"#
        );
    }

    #[test]
    fn type_changes_and_encrypted_fragments_start_blocks() {
        let merged = merge(&[
            r#"{"type":"reasoning.summary","summary":"**A","format":"openai-responses-v1","index":0}"#,
            r#"{"type":"reasoning.summary","summary":"**","format":"openai-responses-v1","index":0}"#,
            r#"{"type":"reasoning.encrypted","data":"gAAA","id":"rs_1","format":"openai-responses-v1","index":0}"#,
            r#"{"type":"reasoning.encrypted","data":"gBBB","format":"openai-responses-v1","index":0}"#,
            r#"{"type":"reasoning.future","x":[1.50e3]}"#,
        ]);
        assert_eq!(
            merged,
            concat!(
                r#"[{"type":"reasoning.summary","summary":"**A**","format":"openai-responses-v1","index":0},"#,
                r#"{"type":"reasoning.encrypted","data":"gAAA","id":"rs_1","format":"openai-responses-v1","index":1},"#,
                r#"{"type":"reasoning.encrypted","data":"gBBB","format":"openai-responses-v1","index":2},"#,
                r#"{"type":"reasoning.future","x":[1.50e3]}]"#
            )
        );
    }

    #[test]
    fn objects_with_empty_keys_and_non_objects_are_kept_as_sent() {
        assert_eq!(
            merge(&[r#"{"":5}"#, "7", r#"{"":[]}"#]),
            r#"[{"":5},7,{"":[]}]"#
        );
    }

    #[test]
    fn first_present_format_and_unknown_fields_are_kept() {
        let merged = merge(&[
            r#"{"type":"reasoning.text","text":"a","format":null,"index":0}"#,
            r#"{"type":"reasoning.text","text":"b","format":"unknown","index":0,"extra":{"k":-0.0}}"#,
        ]);
        assert_eq!(
            merged,
            r#"[{"type":"reasoning.text","text":"ab","format":"unknown","index":0,"extra":{"k":-0.0}}]"#
        );
    }

    #[test]
    fn a_text_or_summary_that_opens_as_null_still_joins_every_later_fragment() {
        let merged = merge(&[
            r#"{"type":"reasoning.text","text":null,"format":"unknown","index":0}"#,
            r#"{"type":"reasoning.text","text":"Hel","format":"unknown","index":0}"#,
            r#"{"type":"reasoning.text","text":null,"format":"unknown","index":0}"#,
            r#"{"type":"reasoning.text","text":"lo","format":"unknown","index":0}"#,
        ]);
        assert_eq!(
            merged,
            r#"[{"type":"reasoning.text","text":"Hello","format":"unknown","index":0}]"#
        );
        let merged = merge(&[
            r#"{"type":"reasoning.summary","summary":null,"index":0}"#,
            r#"{"type":"reasoning.summary","summary":"a","index":0}"#,
            r#"{"type":"reasoning.summary","summary":"b","index":0}"#,
        ]);
        assert_eq!(
            merged,
            r#"[{"type":"reasoning.summary","summary":"ab","index":0}]"#
        );
        // Nothing but nulls: the null stays.
        let merged = merge(&[r#"{"type":"reasoning.text","text":null,"index":0}"#]);
        assert_eq!(
            merged,
            r#"[{"type":"reasoning.text","text":null,"index":0}]"#
        );
    }
}
