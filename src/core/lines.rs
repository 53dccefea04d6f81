//! A streamed process's output as text lines: each stream split on `\n` (a trailing `\r` dropped), what is
//! left without a line ending handed out when the output ends.

use super::backend::ProcessHandle;
use super::exec::Chunk;
use super::Result;
use std::collections::VecDeque;
use std::sync::Arc;

/// One line of output, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// True for stderr.
    pub stderr: bool,
    /// The line, decoded as UTF-8 (invalid bytes become U+FFFD).
    pub text: String,
}

/// Splits both streams' bytes into lines; any chunking of the same bytes gives the same lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: [Vec<u8>; 2],
    ready: VecDeque<Line>,
}

impl LineSplitter {
    /// Add bytes of one stream.
    pub fn push(&mut self, stderr: bool, data: &[u8]) {
        let part = &mut self.partial[stderr as usize];
        part.extend_from_slice(data);
        while let Some(nl) = part.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = part.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.ready.push_back(Line {
                stderr,
                text: String::from_utf8_lossy(&line).into_owned(),
            });
        }
    }

    /// The output ended: what is left of each stream becomes a last line.
    pub fn finish(&mut self) {
        for stderr in [false, true] {
            let rest = std::mem::take(&mut self.partial[stderr as usize]);
            if !rest.is_empty() {
                self.ready.push_back(Line {
                    stderr,
                    text: String::from_utf8_lossy(&rest).into_owned(),
                });
            }
        }
    }

    /// The next complete line.
    pub fn pop(&mut self) -> Option<Line> {
        self.ready.pop_front()
    }
}

/// A process's output read as lines (`proc.lines()`).
pub struct Lines {
    proc: Arc<dyn ProcessHandle>,
    split: LineSplitter,
    ended: bool,
}

impl Lines {
    /// Read `proc`'s output as lines.
    pub fn new(proc: Arc<dyn ProcessHandle>) -> Lines {
        Lines {
            proc,
            split: LineSplitter::default(),
            ended: false,
        }
    }

    /// The next line; `None` at the end. An error ends the lines.
    pub async fn next(&mut self) -> Result<Option<Line>> {
        loop {
            if let Some(l) = self.split.pop() {
                return Ok(Some(l));
            }
            if self.ended {
                return Ok(None);
            }
            match self.proc.next().await {
                None => {
                    self.ended = true;
                    self.split.finish();
                }
                Some(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Some(Ok(Chunk::Stdout(b))) => self.split.push(false, &b),
                Some(Ok(Chunk::Stderr(b))) => self.split.push(true, &b),
            }
        }
    }

    /// Stop reading: further output is discarded (the process keeps running).
    pub fn discard(&self) {
        self.proc.discard_output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(pieces: &[(bool, &[u8])]) -> Vec<(bool, String)> {
        let mut s = LineSplitter::default();
        for (stderr, data) in pieces {
            s.push(*stderr, data);
        }
        s.finish();
        std::iter::from_fn(|| s.pop())
            .map(|l| (l.stderr, l.text))
            .collect()
    }

    #[test]
    fn splits_each_stream_on_newlines_and_flushes_the_rest() {
        let got = lines(&[
            (false, b"one\r\ntw"),
            (true, b"err"),
            (false, b"o\n\nthree"),
            (true, b" line\n"),
        ]);
        let want = [
            (false, "one"),
            (false, "two"),
            (false, ""),
            (true, "err line"),
            (false, "three"),
        ];
        let want: Vec<(bool, String)> = want.iter().map(|(e, t)| (*e, t.to_string())).collect();
        assert_eq!(got, want);
        assert!(lines(&[]).is_empty(), "no output, no lines");
        assert_eq!(
            lines(&[(false, b"\xff\n")]),
            vec![(false, "\u{fffd}".into())]
        );
    }

    proptest! {
        /// Any chunking of the same output gives the same lines as splitting it whole.
        #[test]
        fn any_chunking_gives_the_same_lines(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..20),
        ) {
            let whole = lines(&[(false, &data)]);
            let mut at: Vec<usize> = cuts.into_iter().filter(|c| *c <= data.len()).collect();
            at.push(0);
            at.push(data.len());
            at.sort_unstable();
            at.dedup();
            let pieces: Vec<(bool, &[u8])> = at.windows(2).map(|w| (false, &data[w[0]..w[1]])).collect();
            prop_assert_eq!(lines(&pieces), whole);
        }
    }
}
