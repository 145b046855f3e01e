//! Line-end conversions done while streaming, in bounded memory whatever the
//! message size or line length:
//!
//! * [`LfToCrlf`]: messages arriving with Unix line ends are stored with CRLF, as
//!   Cyrus stores them (the GUID is the SHA-1 of the stored bytes, spec §8.4).
//! * [`ToUnix`]: CRLF → LF for mbox and Maildir exports, optionally with mboxrd
//!   `From ` quoting (`>*From ` gains one more `>`), so any mboxrd reader gets the
//!   message back exactly.

use std::io::{self, Read, Write};

const CHUNK: usize = 64 * 1024;

/// Reads `inner`, turning every LF not preceded by CR into CRLF.
#[derive(Debug)]
pub struct LfToCrlf<R> {
    inner: R,
    raw: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    prev_cr: bool,
}

impl<R: Read> LfToCrlf<R> {
    pub fn new(inner: R) -> Self {
        LfToCrlf {
            inner,
            raw: vec![0; CHUNK],
            out: Vec::with_capacity(2 * CHUNK),
            pos: 0,
            prev_cr: false,
        }
    }
}

impl<R: Read> Read for LfToCrlf<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.out.len() {
            let n = loop {
                match self.inner.read(&mut self.raw) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if n == 0 {
                return Ok(0);
            }
            self.out.clear();
            self.pos = 0;
            for &b in &self.raw[..n] {
                if b == b'\n' && !self.prev_cr {
                    self.out.push(b'\r');
                }
                self.out.push(b);
                self.prev_cr = b == b'\r';
            }
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

const FROM: &[u8] = b"From ";

/// Where a line stands as far as `From ` quoting is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// Past the point where quoting could apply.
    Body,
    /// At the start of a line: `gts` `>` seen, then `matched` bytes of `From `.
    Start { gts: u64, matched: usize },
}

/// CRLF → LF (a CR not followed by LF is kept), with optional mboxrd quoting, written
/// to `out` as bytes arrive.
#[derive(Debug)]
pub struct ToUnix<W: Write> {
    out: W,
    quote_from: bool,
    pending_cr: bool,
    line: Line,
    buf: Vec<u8>,
    /// The last byte written was a LF (or nothing was written yet).
    ends_with_lf: bool,
    empty: bool,
}

impl<W: Write> ToUnix<W> {
    pub fn new(out: W, quote_from: bool) -> Self {
        ToUnix {
            out,
            quote_from,
            pending_cr: false,
            line: Line::Start { gts: 0, matched: 0 },
            buf: Vec::with_capacity(CHUNK + 64),
            ends_with_lf: true,
            empty: true,
        }
    }

    /// Converts and writes one chunk.
    pub fn push(&mut self, chunk: &[u8]) -> io::Result<()> {
        for &b in chunk {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    self.emit(b'\n')?;
                    continue;
                }
                self.emit(b'\r')?;
            }
            if b == b'\r' {
                self.pending_cr = true;
            } else {
                self.emit(b)?;
            }
        }
        self.flush_buf()
    }

    /// Writes what is still held back. With `mbox_separator`, also ends an
    /// unterminated last line and adds the empty line that separates mbox messages.
    pub fn finish(mut self, mbox_separator: bool) -> io::Result<W> {
        if self.pending_cr {
            self.pending_cr = false;
            self.emit(b'\r')?;
        }
        if let Line::Start { gts, matched } = self.line {
            self.line = Line::Body;
            self.release(gts, matched)?;
        }
        if mbox_separator {
            if !self.ends_with_lf || self.empty {
                // An empty message still needs its line end before the separator.
                self.put(b'\n')?;
            }
            self.put(b'\n')?;
        }
        self.flush_buf()?;
        Ok(self.out)
    }

    /// One byte of LF-terminated text, through the quoting state.
    fn emit(&mut self, b: u8) -> io::Result<()> {
        if !self.quote_from {
            return self.put(b);
        }
        match self.line {
            Line::Body => {
                self.put(b)?;
                if b == b'\n' {
                    self.line = Line::Start { gts: 0, matched: 0 };
                }
            }
            Line::Start { gts, matched: 0 } if b == b'>' => {
                self.line = Line::Start {
                    gts: gts + 1,
                    matched: 0,
                };
            }
            Line::Start { gts, matched } if b == FROM[matched] => {
                if matched + 1 == FROM.len() {
                    // `>*From ` at a line start: one more `>`.
                    self.put(b'>')?;
                    self.line = Line::Body;
                    self.release(gts, FROM.len())?;
                } else {
                    self.line = Line::Start {
                        gts,
                        matched: matched + 1,
                    };
                }
            }
            Line::Start { gts, matched } => {
                self.line = Line::Body;
                self.release(gts, matched)?;
                self.emit(b)?;
            }
        }
        Ok(())
    }

    /// Writes the held-back `>`s and the matched start of `From `.
    fn release(&mut self, gts: u64, matched: usize) -> io::Result<()> {
        for _ in 0..gts {
            self.put(b'>')?;
        }
        for &b in &FROM[..matched] {
            self.put(b)?;
        }
        Ok(())
    }

    fn put(&mut self, b: u8) -> io::Result<()> {
        self.buf.push(b);
        self.ends_with_lf = b == b'\n';
        self.empty = false;
        if self.buf.len() >= CHUNK {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crlf_in_chunks(input: &[u8], chunk: usize) -> Vec<u8> {
        struct Chunked<'a>(&'a [u8], usize);
        impl Read for Chunked<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        LfToCrlf::new(Chunked(input, chunk))
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn lf_becomes_crlf_across_chunk_boundaries() {
        let input = b"a\nb\r\nc\r\rd\n\n";
        for chunk in 1..input.len() + 1 {
            assert_eq!(
                crlf_in_chunks(input, chunk),
                b"a\r\nb\r\nc\r\rd\r\n\r\n",
                "chunk {chunk}"
            );
        }
        assert_eq!(crlf_in_chunks(b"", 4), b"");
    }

    fn unix(input: &[u8], quote: bool, mbox: bool, chunk: usize) -> Vec<u8> {
        let mut w = ToUnix::new(Vec::new(), quote);
        for c in input.chunks(chunk.max(1)) {
            w.push(c).unwrap();
        }
        w.finish(mbox).unwrap()
    }

    #[test]
    fn mboxrd_quoting_in_any_chunking() {
        let input: &[u8] =
            b"From: a\r\nSubject: x\r\n\r\nFrom me\r\n>From you\r\n>>From  x\r\n>Fro\r\n>>\r\nFromage\r\n a From b\r\nFrom";
        let want: &[u8] =
            b"From: a\nSubject: x\n\n>From me\n>>From you\n>>>From  x\n>Fro\n>>\nFromage\n a From b\nFrom\n\n";
        for chunk in 1..input.len() + 1 {
            assert_eq!(unix(input, true, true, chunk), want, "chunk {chunk}");
        }
    }

    #[test]
    fn line_ends_and_separators() {
        // A lone CR stays; CRLF split across chunks still becomes LF.
        assert_eq!(unix(b"a\rb\r\n", false, false, 5), b"a\rb\n");
        assert_eq!(unix(b"a\r\n", false, false, 2), b"a\n");
        assert_eq!(unix(b"x\r", false, false, 1), b"x\r");
        // mbox: an unterminated last line is ended, then the empty separator line.
        assert_eq!(unix(b"x", true, true, 1), b"x\n\n");
        assert_eq!(unix(b"x\r\n", true, true, 1), b"x\n\n");
        assert_eq!(unix(b"", true, true, 1), b"\n\n");
        assert_eq!(unix(b">>", true, true, 1), b">>\n\n");
        // Without quoting, From lines pass unchanged.
        assert_eq!(unix(b"From x\r\n", false, false, 3), b"From x\n");
    }

    #[test]
    fn long_runs_of_quotes_stay_bounded() {
        let mut input = vec![b'>'; 1 << 20];
        input.extend_from_slice(b"From x\r\n");
        let out = unix(&input, true, false, 4096);
        assert_eq!(out.len(), input.len());
        assert!(out.starts_with(b">>"));
        assert!(out.ends_with(b">From x\n"));
    }
}
