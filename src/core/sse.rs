//! An incremental Server-Sent Events parser: bytes in any chunking → events, per the HTML spec's
//! event-stream rules (LF, CRLF or CR line ends; `:` comments; multi-line `data`; `id`; `event`; a BOM).
//! Lines are bounded: an over-long line is an error, never unbounded memory.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id` field of this event, if it had one.
    pub id: Option<String>,
    /// `event` field (default `message`).
    pub event: String,
    /// The `data` lines joined with `\n`.
    pub data: String,
}

/// Parser state. Feed chunks with [`SseParser::feed`]; call [`SseParser::finish`] at EOF.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    last_was_cr: bool,
    data: String,
    has_data: bool,
    event: String,
    id: Option<String>,
    max_line: usize,
}

/// A line longer than the parser's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineTooLong(pub usize);

impl SseParser {
    /// `max_line`: the longest line accepted (bytes).
    pub fn new(max_line: usize) -> Self {
        SseParser {
            line: Vec::new(),
            last_was_cr: false,
            data: String::new(),
            has_data: false,
            event: String::new(),
            id: None,
            max_line,
        }
    }

    /// Parse a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut out = Vec::new();
        let mut bytes = chunk;
        while !bytes.is_empty() {
            let b = bytes[0];
            bytes = &bytes[1..];
            if self.last_was_cr {
                self.last_was_cr = false;
                if b == b'\n' {
                    continue; // CRLF: the CR already ended the line
                }
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.last_was_cr = true;
                    self.end_line(&mut out);
                }
                _ => {
                    // Fast path: copy up to the next line end at once.
                    let run = bytes
                        .iter()
                        .position(|c| *c == b'\n' || *c == b'\r')
                        .unwrap_or(bytes.len());
                    if self.line.len() + 1 + run > self.max_line {
                        return Err(LineTooLong(self.max_line));
                    }
                    self.line.push(b);
                    self.line.extend_from_slice(&bytes[..run]);
                    bytes = &bytes[run..];
                }
            }
        }
        Ok(out)
    }

    /// End of stream: an event without its terminating blank line is discarded, as the spec says.
    pub fn finish(&mut self) {
        self.line.clear();
        self.reset_event();
    }

    fn reset_event(&mut self) {
        self.data.clear();
        self.has_data = false;
        self.event.clear();
        self.id = None;
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let mut line = std::mem::take(&mut self.line);
        if line.starts_with(&[0xEF, 0xBB, 0xBF]) {
            line.drain(..3);
        }
        if line.is_empty() {
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                out.push(SseEvent {
                    id: self.id.take(),
                    event: if self.event.is_empty() {
                        "message".to_string()
                    } else {
                        std::mem::take(&mut self.event)
                    },
                    data,
                });
            }
            self.reset_event();
            return;
        }
        if line[0] == b':' {
            return; // comment (heartbeat)
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" => self.event = value.to_string(),
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {} // retry and unknown fields are ignored
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.feed(c).unwrap());
        }
        out
    }

    const STREAM: &[u8] = b"event: message\nid: 1\ndata: {\"a\":1}\n\n: heartbeat\n\nid: 2\ndata: line1\ndata: line2\n\n";

    #[test]
    fn parses_frames_comments_and_multiline_data() {
        let ev = parse_all(&[STREAM]);
        assert_eq!(
            ev,
            vec![
                SseEvent {
                    id: Some("1".into()),
                    event: "message".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    id: Some("2".into()),
                    event: "message".into(),
                    data: "line1\nline2".into()
                },
            ]
        );
    }

    #[test]
    fn any_chunking_gives_the_same_events() {
        let whole = parse_all(&[STREAM]);
        // every split point, and byte-by-byte
        for i in 0..STREAM.len() {
            assert_eq!(
                parse_all(&[&STREAM[..i], &STREAM[i..]]),
                whole,
                "split at {i}"
            );
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole);
        // pseudo-random chunk sizes
        let mut seed = 0x2545F4914F6CDD1Du64;
        for _ in 0..500 {
            let mut chunks = Vec::new();
            let mut rest = STREAM;
            while !rest.is_empty() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let n = 1 + (seed as usize % 9).min(rest.len() - 1);
                chunks.push(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(parse_all(&chunks), whole);
        }
    }

    #[test]
    fn crlf_cr_and_bom() {
        let crlf = b"\xEF\xBB\xBFid: 7\r\ndata: x\r\n\r\ndata: y\r\rdata:z\n\n";
        let ev = parse_all(&[crlf]);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].id.as_deref(), Some("7"));
        assert_eq!(ev[1].data, "y");
        assert_eq!(ev[2].data, "z");
        // CR at the end of one chunk, LF at the start of the next
        assert_eq!(parse_all(&[b"data: a\r", b"\n\r\n"]).len(), 1);
    }

    #[test]
    fn garbage_does_not_panic_and_long_lines_are_refused() {
        let mut p = SseParser::new(64);
        let mut seed = 7u64;
        for _ in 0..2000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let b = [(seed >> 33) as u8, (seed >> 41) as u8, b'\n'];
            let _ = p.feed(&b);
        }
        let mut p = SseParser::new(64);
        assert_eq!(p.feed(&[b'x'; 100]), Err(LineTooLong(64)));
        let mut p = SseParser::new(64);
        assert!(p.feed(&[b'x'; 40]).is_ok());
        assert!(p.feed(&[b'x'; 40]).is_err());
    }

    #[test]
    fn an_unterminated_event_is_dropped_at_eof() {
        let mut p = SseParser::new(1024);
        assert!(p.feed(b"id: 1\ndata: partial").unwrap().is_empty());
        p.finish();
        assert_eq!(p.feed(b"data: next\n\n").unwrap()[0].data, "next");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn render(events: &[(Option<u32>, String)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (id, data) in events {
            out.extend_from_slice(b": heartbeat\n");
            if let Some(id) = id {
                out.extend_from_slice(format!("id: {id}\n").as_bytes());
            }
            for line in data.split('\n') {
                out.extend_from_slice(format!("data: {line}\n").as_bytes());
            }
            out.extend_from_slice(b"\n");
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any split of a valid stream gives exactly the events that were written.
        #[test]
        fn chunking_never_changes_the_events(
            events in proptest::collection::vec((proptest::option::of(0u32..100_000), "[ -~]{0,40}(\n[ -~]{0,20}){0,3}"), 0..20),
            cuts in proptest::collection::vec(0usize..4096, 0..40),
        ) {
            let bytes = render(&events);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut p = SseParser::new(1 << 20);
            let mut got = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                got.extend(p.feed(&bytes[last..c]).unwrap());
                last = c;
            }
            prop_assert_eq!(got.len(), events.len());
            for (g, (id, data)) in got.iter().zip(&events) {
                prop_assert_eq!(g.id.clone(), id.map(|i| i.to_string()));
                prop_assert_eq!(&g.data, data);
            }
        }

        /// Garbage never panics, and a bounded parser never holds more than its line limit.
        #[test]
        fn garbage_is_harmless(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..30)) {
            let mut p = SseParser::new(256);
            for c in &chunks {
                if p.feed(c).is_err() {
                    p = SseParser::new(256);
                }
                prop_assert!(p.line.len() <= 256);
            }
        }
    }
}
