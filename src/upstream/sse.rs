//! An incremental Server-Sent Events parser for OpenRouter streams.
//!
//! Bytes arrive in arbitrary pieces: an event can be split across reads and one read can
//! hold several events. Lines end in `\n`, `\r\n` or `\r`; a blank line ends an event; lines
//! starting with `:` are comments (OpenRouter's `: OPENROUTER PROCESSING` keep-alives);
//! `data:` lines of one event are joined with `\n`; other fields are ignored.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// The data of one complete event.
    Data(String),
    Comment(String),
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet terminated.
    line: Vec<u8>,
    /// Data lines of the event being read.
    data: Option<String>,
    /// The previous byte was `\r`: a following `\n` belongs to the same line ending.
    after_cr: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the items they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseItem> {
        let mut items = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut items),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut items);
                }
                _ => self.line.push(b),
            }
        }
        items
    }

    /// True when bytes of an unfinished event are pending (the stream was cut mid-event).
    pub fn has_partial_event(&self) -> bool {
        !self.line.is_empty() || self.data.is_some()
    }

    fn end_line(&mut self, items: &mut Vec<SseItem>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                items.push(SseItem::Data(data));
            }
            return;
        }
        let line = String::from_utf8_lossy(&line);
        if let Some(comment) = line.strip_prefix(':') {
            items.push(SseItem::Comment(comment.trim_start().to_owned()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_reads_and_joined_in_one_read() {
        let text =
            b": OPENROUTER PROCESSING\n\ndata: {\"a\":1}\n\ndata: {\"b\"\r\n\r\ndata: [DONE]\n\n";
        for split in 0..text.len() {
            let mut p = SseParser::new();
            let mut items = p.push(&text[..split]);
            items.extend(p.push(&text[split..]));
            assert_eq!(
                items,
                vec![
                    SseItem::Comment("OPENROUTER PROCESSING".into()),
                    SseItem::Data("{\"a\":1}".into()),
                    SseItem::Data("{\"b\"".into()),
                    SseItem::Data("[DONE]".into()),
                ],
                "split at {split}"
            );
            assert!(!p.has_partial_event());
        }
    }

    #[test]
    fn multi_line_data_and_other_fields() {
        let mut p = SseParser::new();
        let items = p.push(b"event: x\nid: 3\ndata: one\ndata:two\n\n");
        assert_eq!(items, vec![SseItem::Data("one\ntwo".into())]);
        p.push(b"data: cut");
        assert!(p.has_partial_event());
    }
}
