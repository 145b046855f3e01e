//! Message GUIDs: the SHA-1 of a message file, 40 lowercase hex digits on the wire
//! (spec §8.4).

use std::fmt;

use crate::value::TypeError;

/// A message GUID (20 bytes of SHA-1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 20]);

impl Guid {
    /// Reads exactly 40 hex digits (either case).
    pub fn parse(text: &[u8]) -> Result<Guid, TypeError> {
        let bad = || TypeError::BadGuid(String::from_utf8_lossy(text).into_owned());
        if text.len() != 40 {
            return Err(bad());
        }
        let mut out = [0u8; 20];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
            let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
            out[i] = (hi << 4 | lo) as u8;
        }
        Ok(Guid(out))
    }

    /// All zeros: Cyrus's "no GUID", which makes a mailbox unsyncable.
    pub fn is_null(&self) -> bool {
        self.0 == [0; 20]
    }

    pub(crate) fn write_hex(&self, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in self.0 {
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
    }

    pub fn to_hex(&self) -> String {
        let mut out = Vec::with_capacity(40);
        self.write_hex(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_lowercase() {
        let g = Guid::parse(b"EDAA9F52A858BDA063269730EB4F9881AD296E5E").unwrap();
        assert_eq!(g.to_hex(), "edaa9f52a858bda063269730eb4f9881ad296e5e");
        assert!(Guid::parse(b"edaa").is_err());
        assert!(Guid::parse(b"xdaa9f52a858bda063269730eb4f9881ad296e5e").is_err());
        assert!(Guid::default().is_null());
    }
}
