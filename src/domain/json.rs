//! A small JSON object writer that splices stored raw values in as they are.
//!
//! Responses and upstream request bodies are written with it rather than through
//! `serde_json::Value`, which would re-serialise (and so alter) the raw values.

/// Appends `value` to `out` as a JSON string literal.
///
/// Runs of characters that need no escape are copied whole: every turn writes the thread's
/// whole context this way (the upstream request), so this is on the hot path.
pub fn push_str_literal(out: &mut String, value: &str) {
    out.reserve(value.len() + 2);
    out.push('"');
    let bytes = value.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // Bytes that need escaping are ASCII, so `run..i` ends on a character boundary.
        out.push_str(&value[run..i]);
        if escaped.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escaped);
        }
        run = i + 1;
    }
    out.push_str(&value[run..]);
    out.push('"');
}

/// Writes one JSON object field by field. Keys are trusted (program constants or keys that
/// were read from JSON and are written back escaped).
pub struct ObjectWriter {
    out: String,
    empty: bool,
}

impl Default for ObjectWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectWriter {
    pub fn new() -> Self {
        Self::with_capacity(256)
    }

    pub fn with_capacity(capacity: usize) -> Self {
        let mut out = String::with_capacity(capacity);
        out.push('{');
        Self { out, empty: true }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        push_str_literal(&mut self.out, key);
        self.out.push(':');
    }

    /// A raw JSON value, written byte for byte.
    pub fn raw(&mut self, key: &str, raw: &str) -> &mut Self {
        self.key(key);
        self.out.push_str(raw);
        self
    }

    pub fn opt_raw(&mut self, key: &str, raw: Option<&str>) -> &mut Self {
        if let Some(raw) = raw {
            self.raw(key, raw);
        }
        self
    }

    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        push_str_literal(&mut self.out, value);
        self
    }

    pub fn opt_string(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.string(key, value);
        }
        self
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.key(key);
        self.out.push_str(&value.to_string());
        self
    }

    pub fn opt_int(&mut self, key: &str, value: Option<i64>) -> &mut Self {
        if let Some(value) = value {
            self.int(key, value);
        }
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    /// A JSON array of already-written JSON values.
    pub fn array<I, S>(&mut self, key: &str, items: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.key(key);
        self.out.push('[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(item.as_ref());
        }
        self.out.push(']');
        self
    }

    /// An array of objects, each written in place by `write`: no string per item.
    pub fn objects<T>(
        &mut self,
        key: &str,
        items: impl IntoIterator<Item = T>,
        mut write: impl FnMut(&mut ObjectWriter, T),
    ) -> &mut Self {
        self.key(key);
        self.out.push('[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push('{');
            // The item writes into the same buffer (moved, not copied).
            let mut item_writer = ObjectWriter {
                out: std::mem::take(&mut self.out),
                empty: true,
            };
            write(&mut item_writer, item);
            item_writer.out.push('}');
            self.out = item_writer.out;
        }
        self.out.push(']');
        self
    }

    /// `objects`, returning where the items from the `from`-th on lie in the output: from
    /// the separator before that item to the end of the last one (empty, just before the
    /// `]`, when there are no more than `from` items).
    pub fn objects_from<T>(
        &mut self,
        key: &str,
        items: impl IntoIterator<Item = T>,
        from: usize,
        mut write: impl FnMut(&mut ObjectWriter, T),
    ) -> std::ops::Range<usize> {
        let mut start = None;
        let mut index = 0;
        self.objects(key, items, |item, value| {
            if index == from {
                // The item's `{`, and its separator when it has one, are already written.
                start = Some(item.out.len() - 1 - usize::from(from > 0));
            }
            index += 1;
            write(item, value);
        });
        let end = self.out.len() - 1;
        start.unwrap_or(end)..end
    }

    /// Appends one object to `out`, written by `write` in place.
    pub fn append_object(out: &mut String, write: impl FnOnce(&mut ObjectWriter)) {
        out.push('{');
        let mut item = ObjectWriter {
            out: std::mem::take(out),
            empty: true,
        };
        write(&mut item);
        item.out.push('}');
        *out = item.out;
    }

    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_written_in_place_in_order() {
        let mut w = ObjectWriter::new();
        w.string("first", "a")
            .objects("items", [1, 2, 3], |item, n| {
                if n != 2 {
                    item.int("n", n).string("s", "x\"y");
                }
            })
            .objects("none", Vec::<i64>::new(), |item, n| {
                item.int("n", n);
            })
            .bool("last", true);
        assert_eq!(
            w.finish(),
            r#"{"first":"a","items":[{"n":1,"s":"x\"y"},{},{"n":3,"s":"x\"y"}],"none":[],"last":true}"#
        );
    }

    #[test]
    fn strings_escape_like_serde_json() {
        for s in [
            "plain",
            "quote \" and \\",
            "line\nbreak\u{1}\u{1f}",
            "é 😀",
            "",
        ] {
            let mut out = String::new();
            push_str_literal(&mut out, s);
            let back: String = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, s);
        }
    }

    /// The escaping as first written, one character at a time: the fast one must match it
    /// byte for byte (stored requests are compared with what was sent).
    fn reference(value: &str) -> String {
        let mut out = String::from('"');
        for c in value.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    proptest::proptest! {
        #[test]
        fn escaping_matches_the_reference(value in "(?s)[\\x00-\\x7f\\u{80}-\\u{10ffff}]{0,64}") {
            let mut out = String::from("prefix:");
            push_str_literal(&mut out, &value);
            proptest::prop_assert_eq!(out, format!("prefix:{}", reference(&value)));
        }
    }

    #[test]
    fn raw_values_are_spliced_unchanged() {
        let mut w = ObjectWriter::new();
        w.string("a", "x")
            .raw("b", "[1.50e3 , -0.0]")
            .opt_raw("c", None)
            .int("d", 7);
        assert_eq!(w.finish(), r#"{"a":"x","b":[1.50e3 , -0.0],"d":7}"#);
    }
}
