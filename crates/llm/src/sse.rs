//! A small incremental Server-Sent Events parser: bytes in (split anywhere, even inside a UTF-8
//! sequence), `(event, data)` pairs out. Comments (`:`) and `id:` / `retry:` fields are ignored;
//! several `data:` lines of one event are joined with `\n`.

/// Longest line accepted (a provider that never sends a newline must not eat all memory).
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` field (empty when absent).
    pub event: String,
    /// Joined `data:` lines.
    pub data: String,
}

/// Incremental parser.
#[derive(Default, Debug)]
pub struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: Option<String>,
}

impl SseParser {
    /// A new parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; appends complete events to `out`. Errors on invalid UTF-8 or an over-long
    /// line.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), String> {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let text = std::str::from_utf8(line)
                .map_err(|_| "stream line is not valid UTF-8".to_string())?
                .to_string();
            self.line(&text, out);
            start = end + 1;
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err(format!("stream line longer than {MAX_LINE} bytes"));
        }
        Ok(())
    }

    /// End of input: dispatches a last event that had no trailing blank line.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), String> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let text = std::str::from_utf8(&rest)
                .map_err(|_| "stream line is not valid UTF-8".to_string())?
                .trim_end_matches('\r')
                .to_string();
            self.line(&text, out);
        }
        self.dispatch(out);
        Ok(())
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        if let Some(data) = self.data.take() {
            out.push(SseEvent { event, data });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_input_crlf_comments_and_multiline() {
        let input = "event: a\r\ndata: {\"x\":\r\ndata: 1}\r\n\r\n: ping\n\ndata:[DONE]\n\ndata: é\n\ndata: tail";
        let bytes = input.as_bytes();
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for chunk in bytes.chunks(3) {
            p.feed(chunk, &mut out).unwrap();
        }
        p.finish(&mut out).unwrap();
        assert_eq!(
            out,
            vec![
                SseEvent {
                    event: "a".into(),
                    data: "{\"x\":\n1}".into()
                },
                SseEvent {
                    event: String::new(),
                    data: "[DONE]".into()
                },
                SseEvent {
                    event: String::new(),
                    data: "é".into()
                },
                SseEvent {
                    event: String::new(),
                    data: "tail".into()
                },
            ]
        );
        let mut p = SseParser::new();
        assert!(p.feed(b"data: \xff\xfe\n", &mut out).is_err());
    }
}
