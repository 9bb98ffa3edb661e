//! The generated default completion as an SSE stream, event for event in the shape of the recorded
//! streams: `: OPENROUTER PROCESSING` comments (Kimi), a role chunk, one chunk per reasoning
//! fragment carrying both `reasoning` and a one-item `reasoning_details` (Kimi, `index:0`,
//! `format:"unknown"`), content deltas or tool-call deltas (DeepSeek), a finish chunk, a separate
//! usage chunk with `"choices":[]` (DeepSeek), then `data: [DONE]`.

use crate::generate::{escape, Generation, PROVIDER};

impl Generation {
    /// The stream's events, each a complete SSE event text (`data: ...\n\n` or `: ...\n\n`).
    pub fn stream_events(&self) -> Vec<String> {
        let mut events = vec![
            ": OPENROUTER PROCESSING\n\n".to_owned(),
            ": OPENROUTER PROCESSING\n\n".to_owned(),
        ];
        events.push(self.chunk(r#"{"content":"","role":"assistant"}"#, None));
        for piece in self.reasoning.iter().flatten() {
            events.push(self.chunk(
                &format!(
                    r#"{{"content":"","role":"assistant","reasoning":"{piece}","reasoning_details":[{{"type":"reasoning.text","text":"{piece}","format":"unknown","index":0}}]}}"#
                ),
                None,
            ));
        }
        for piece in &self.content {
            events.push(self.chunk(
                &format!(r#"{{"content":"{piece}","role":"assistant"}}"#),
                None,
            ));
        }
        if let Some(call) = &self.tool_call {
            events.push(self.chunk(
                &format!(
                    r#"{{"content":null,"role":"assistant","tool_calls":[{{"index":0,"id":"{}","type":"function","function":{{"name":"{}","arguments":""}}}}]}}"#,
                    escape(&call.id),
                    escape(&call.name)
                ),
                None,
            ));
            events.push(self.chunk(
                r#"{"content":null,"role":"assistant","tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}"#,
                None,
            ));
        }
        events.push(self.chunk(
            r#"{"content":"","role":"assistant"}"#,
            Some(self.finish_reason()),
        ));
        events.push(format!(
            "data: {}\"choices\":[],\"usage\":{}}}\n\n",
            self.chunk_prefix(),
            self.usage
        ));
        events.push("data: [DONE]\n\n".to_owned());
        events
    }

    /// What a client that merges the streamed fragments by SPEC section 4 sends back: one
    /// block, the fragments' text joined as their raw JSON string bytes (escapes exactly as
    /// streamed), keys in the fragments' order. Strict mode accepts this for generated streams.
    pub fn merged_reasoning_details(&self) -> Option<String> {
        let pieces = self.reasoning.as_ref()?;
        Some(format!(
            r#"[{{"type":"reasoning.text","text":"{}","format":"unknown","index":0}}]"#,
            pieces.concat()
        ))
    }

    fn chunk_prefix(&self) -> String {
        format!(
            r#"{{"id":"{}","object":"chat.completion.chunk","created":{},"model":"{}","provider":"{PROVIDER}","#,
            self.id,
            self.created,
            escape(&self.model)
        )
    }

    fn chunk(&self, delta: &str, finish: Option<&str>) -> String {
        let finish = finish.map_or_else(|| "null".to_owned(), |f| format!("\"{f}\""));
        format!(
            "data: {}\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish},\"native_finish_reason\":{finish}}}]}}\n\n",
            self.chunk_prefix()
        )
    }
}
