//! Reads the text transcripts of real Cyrus sessions (the format of
//! `tests/fixtures/cyrus-3.6/README.txt`) back into each direction's exact bytes, so
//! that captured traffic can be replayed against csync (tests, tools).
//!
//! Format: `C: ` / `S: ` lines hold one CRLF-terminated protocol line each (CRLF
//! removed), optionally after a `[unix time] ` stamp; `\\`, `\r`, `\n` and `\xNN`
//! are escapes and a trailing `\<no CRLF before close>` marks a line without CRLF;
//! `# ` lines are comments, and `# relay: session N opened` starts a new connection.

/// One captured connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TranscriptSession {
    /// Everything the client sent, as plaintext (compressed parts already inflated).
    pub client: Vec<u8>,
    /// Everything the server sent, likewise.
    pub server: Vec<u8>,
    /// The comment lines, for whoever needs the scenario's description.
    pub comments: Vec<String>,
}

/// A transcript line that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("transcript line {line}: {reason}")]
pub struct TranscriptError {
    pub line: usize,
    pub reason: String,
}

/// Parses a transcript into its sessions.
pub fn parse(text: &str) -> Result<Vec<TranscriptSession>, TranscriptError> {
    let mut sessions: Vec<TranscriptSession> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        if let Some(comment) = raw.strip_prefix('#') {
            let comment = comment.trim_start();
            if comment.starts_with("relay: session") && comment.contains(" opened") {
                sessions.push(TranscriptSession::default());
            }
            if let Some(s) = sessions.last_mut() {
                s.comments.push(comment.to_owned());
            }
            continue;
        }
        let (to_server, rest) = if let Some(r) = raw.strip_prefix("C: ") {
            (true, r)
        } else if let Some(r) = raw.strip_prefix("S: ") {
            (false, r)
        } else if raw == "C:" || raw == "S:" {
            (raw == "C:", "")
        } else if raw.trim().is_empty() {
            continue;
        } else {
            return Err(TranscriptError {
                line: line_no,
                reason: format!("not a C:/S:/# line: {raw:?}"),
            });
        };
        let rest = strip_stamp(rest);
        if sessions.is_empty() {
            sessions.push(TranscriptSession::default());
        }
        let (bytes, crlf) = unescape(rest).map_err(|reason| TranscriptError {
            line: line_no,
            reason,
        })?;
        let session = sessions.last_mut().ok_or_else(|| TranscriptError {
            line: line_no,
            reason: "no session".into(),
        })?;
        let out = if to_server {
            &mut session.client
        } else {
            &mut session.server
        };
        out.extend_from_slice(&bytes);
        if crlf {
            out.extend_from_slice(b"\r\n");
        }
    }
    Ok(sessions)
}

/// Drops a leading `[1795302571.483] ` stamp.
fn strip_stamp(s: &str) -> &str {
    if let Some(rest) = s.strip_prefix('[')
        && let Some((stamp, after)) = rest.split_once("] ")
        && stamp.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        return after;
    }
    s
}

fn unescape(text: &str) -> Result<(Vec<u8>, bool), String> {
    const NO_CRLF: &str = "\\<no CRLF before close>";
    let (text, crlf) = match text.strip_suffix(NO_CRLF) {
        Some(t) => (t, false),
        None => (text, true),
    };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => out.push(b'\\'),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b'x') => {
                let hex = text.get(i + 2..i + 4).ok_or("truncated \\x escape")?;
                out.push(
                    u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x escape {hex:?}"))?,
                );
                i += 2;
            }
            other => return Err(format!("unknown escape \\{:?}", other.map(|b| *b as char))),
        }
        i += 2;
    }
    Ok((out, crlf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_escapes_and_stamps() {
        let text = "# header\n# relay: session 1 opened x\nS: * OK hi\nC: [17.5] A\\\\B\\r\\x01\nC: END\\<no CRLF before close>\n# relay: session 2 opened y\nC: NOOP\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].server, b"* OK hi\r\n");
        assert_eq!(s[0].client, b"A\\B\r\x01\r\nEND");
        assert_eq!(s[1].client, b"NOOP\r\n");
        assert!(parse("X: nonsense\n").is_err());
    }
}
