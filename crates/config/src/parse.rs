//! Reading imapd.conf files into key/value entries, line by line as Cyrus 3.6's
//! `config_read_file` does.
//!
//! The rules (from `lib/libconfig.c`):
//! * a line ending in `\` continues on the next line: the backslash and the newline
//!   go, nothing is inserted, and the next line's leading blanks are kept. This
//!   happens before comments are recognised, so a comment ending in `\` swallows the
//!   next line, as in Cyrus.
//! * leading blanks are skipped; blank lines and lines starting with `#` are
//!   comments. A `#` later in a line is part of the value.
//! * a key is an optional `@` then letters, digits, `-` and `_`, folded to lower
//!   case, directly followed by `:`; the value is the rest, trimmed, and must not be
//!   empty.
//! * `@include: path` reads another file in place.
//!
//! Where csync differs from Cyrus, deliberately:
//! * a relative `@include` path is taken relative to the including file's
//!   directory (Cyrus opens it relative to the process's working directory, which
//!   differs between daemons);
//! * a value continued with `\` on the very last line is kept (Cyrus drops it).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{ConfigError, Origin};

/// One setting: its value and where it was set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) value: String,
    pub(crate) origin: Origin,
}

/// Accumulates entries over the main file and everything it includes.
pub(crate) struct Reader {
    pub(crate) entries: BTreeMap<String, Entry>,
    /// Canonical paths of the files being read, innermost last (loop detection).
    stack: Vec<PathBuf>,
    /// Canonical paths of every file read so far.
    seen: HashSet<PathBuf>,
}

/// Cyrus's `Uisspace`: C `isspace` in the C locale.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_space(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_space(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Splits a file into logical lines (continuations joined), each with the number of
/// the physical line it starts on.
fn logical_lines(text: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut start = 0;
    let mut continuing = false;
    let mut physical = text.split_inclusive(|&c| c == b'\n').enumerate().peekable();
    while let Some((index, raw)) = physical.next() {
        if !continuing {
            start = index + 1;
        }
        let (line, had_newline) = match raw.strip_suffix(b"\n") {
            Some(line) => (line, true),
            None => (raw, false),
        };
        if had_newline && let Some(body) = line.strip_suffix(b"\\") {
            current.extend_from_slice(body);
            continuing = true;
            if physical.peek().is_some() {
                continue;
            }
        } else {
            current.extend_from_slice(line);
        }
        out.push((start, std::mem::take(&mut current)));
        continuing = false;
    }
    out
}

impl Reader {
    pub(crate) fn new() -> Reader {
        Reader {
            entries: BTreeMap::new(),
            stack: Vec::new(),
            seen: HashSet::new(),
        }
    }

    /// Reads the main configuration file.
    pub(crate) fn read_main(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let canonical = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.read_text(path, canonical, &text)
    }

    /// Reads `text` as the contents of `path` (whose canonical form is `canonical`).
    pub(crate) fn read_text(
        &mut self,
        path: &Path,
        canonical: PathBuf,
        text: &[u8],
    ) -> Result<(), ConfigError> {
        self.seen.insert(canonical.clone());
        self.stack.push(canonical);
        let result = self.read_lines(path, text);
        self.stack.pop();
        result
    }

    fn read_lines(&mut self, path: &Path, text: &[u8]) -> Result<(), ConfigError> {
        for (line, bytes) in logical_lines(text) {
            let origin = Origin {
                file: path.to_path_buf(),
                line,
            };
            self.read_line(origin, &bytes)?;
        }
        Ok(())
    }

    fn read_line(&mut self, origin: Origin, bytes: &[u8]) -> Result<(), ConfigError> {
        let start = bytes.iter().position(|&c| !is_space(c));
        let Some(start) = start else {
            return Ok(());
        };
        let line = &bytes[start..];
        if line.first() == Some(&b'#') {
            return Ok(());
        }
        let key_len = line
            .iter()
            .enumerate()
            .take_while(|&(i, &c)| {
                (i == 0 && c == b'@') || c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
            })
            .count();
        let (key, rest) = line.split_at(key_len);
        let value = match rest.strip_prefix(b":") {
            Some(value) if !key.is_empty() && key != b"@" => trim(value),
            _ => return Err(ConfigError::InvalidKey { origin }),
        };
        // The key is ASCII by construction.
        let key = String::from_utf8_lossy(key).to_ascii_lowercase();
        if value.is_empty() {
            return Err(ConfigError::EmptyValue { origin, key });
        }
        let Ok(value) = std::str::from_utf8(value) else {
            return Err(ConfigError::NotUtf8 { origin, key });
        };
        if let Some(directive) = key.strip_prefix('@') {
            if directive != "include" {
                return Err(ConfigError::InvalidDirective {
                    origin,
                    directive: key,
                });
            }
            return self.include(origin, value);
        }
        if let Some(first) = self.entries.get(&key) {
            return Err(ConfigError::DuplicateKey {
                origin,
                key,
                first: first.origin.clone(),
            });
        }
        self.entries.insert(
            key,
            Entry {
                value: value.to_owned(),
                origin,
            },
        );
        Ok(())
    }

    fn include(&mut self, origin: Origin, target: &str) -> Result<(), ConfigError> {
        let target = Path::new(target);
        let path = if target.is_absolute() {
            target.to_path_buf()
        } else {
            origin
                .file
                .parent()
                .map(|dir| dir.join(target))
                .unwrap_or_else(|| target.to_path_buf())
        };
        let include_error = |source| ConfigError::Include {
            origin: origin.clone(),
            path: path.clone(),
            source,
        };
        let canonical = fs::canonicalize(&path).map_err(include_error)?;
        if self.stack.contains(&canonical) {
            return Err(ConfigError::IncludeLoop { origin, path });
        }
        if self.seen.contains(&canonical) {
            return Err(ConfigError::IncludedTwice { origin, path });
        }
        let text = fs::read(&path).map_err(include_error)?;
        self.read_text(&path, canonical, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<(usize, String)> {
        logical_lines(text.as_bytes())
            .into_iter()
            .map(|(n, l)| (n, String::from_utf8(l).unwrap()))
            .collect()
    }

    #[test]
    fn continuation_joins_without_separator() {
        assert_eq!(
            lines("a: one\\\n  two\nb: x\n"),
            vec![(1, "a: one  two".to_owned()), (3, "b: x".to_owned())]
        );
        assert_eq!(
            lines("a: 1\\\n2\\\n3\nb: 4"),
            vec![(1, "a: 123".to_owned()), (4, "b: 4".to_owned())]
        );
    }

    #[test]
    fn continuation_on_last_line_is_kept() {
        assert_eq!(lines("a: x\\\n"), vec![(1, "a: x".to_owned())]);
        // no newline after the backslash: not a continuation (as in Cyrus)
        assert_eq!(lines("a: x\\"), vec![(1, "a: x\\".to_owned())]);
    }

    #[test]
    fn crlf_is_not_a_continuation() {
        // Cyrus only looks for a backslash right before the LF; the CR is then
        // trailing whitespace of the value.
        assert_eq!(
            lines("a: x\\\r\nb: y\r\n"),
            vec![(1, "a: x\\\r".to_owned()), (2, "b: y\r".to_owned())]
        );
    }

    #[test]
    fn trim_uses_c_isspace() {
        assert_eq!(trim(b" \t\x0b\x0cx y\r\n "), b"x y");
        assert_eq!(trim(b"   "), b"");
    }
}
