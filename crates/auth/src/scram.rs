//! SCRAM pieces csync owns itself: key derivation for the password file (RFC 5802 §3)
//! and strict syntax checks of the four SCRAM messages.
//!
//! The checks exist because rsasl 2.3's SCRAM parsers index attribute slices without
//! length checks (`&next[0..2]` on an attribute shorter than two bytes panics). Every
//! message from the peer goes through one of the `check_*` functions before rsasl sees
//! it, so hostile input is refused here instead of panicking there.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Largest SCRAM message accepted from a peer (Cyrus SASL refuses more than its
/// `MAX_CLIENTIN_LEN`; a real client-first or client-final message is ~100–200 bytes).
pub(crate) const MAX_MESSAGE: usize = 4096;

/// The two SCRAM hash functions csync supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramHash {
    /// SCRAM-SHA-1 (RFC 5802).
    Sha1,
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
}

impl ScramHash {
    /// The SASL mechanism name, which is also the scheme name in the password file.
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// Length of StoredKey and ServerKey.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// `SaltedPassword := Hi(password, salt, i)` (PBKDF2 with HMAC-H).
    pub(crate) fn salted_password(
        self,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(vec![0u8; self.output_len()]);
        // HMAC accepts keys of any length, so PBKDF2 cannot fail here; on the impossible
        // error the all-zero output simply never matches a stored key.
        let _ = match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2::<Hmac<Sha1>>(password, salt, iterations, &mut out),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2::<Hmac<Sha256>>(password, salt, iterations, &mut out)
            }
        };
        out
    }

    /// `HMAC(key, data)`.
    pub(crate) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => hmac_with::<Hmac<Sha1>>(key, data),
            ScramHash::Sha256 => hmac_with::<Hmac<Sha256>>(key, data),
        }
    }

    /// `H(data)`.
    pub(crate) fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// StoredKey and ServerKey for a password (RFC 5802 §3), plus ClientKey for callers
    /// that need it (tests, proofs).
    pub(crate) fn derive_keys(self, password: &[u8], salt: &[u8], iterations: u32) -> DerivedKeys {
        let salted = self.salted_password(password, salt, iterations);
        let client_key = Zeroizing::new(self.hmac(&salted, b"Client Key"));
        let server_key = self.hmac(&salted, b"Server Key");
        let stored_key = self.hash(&client_key);
        DerivedKeys {
            client_key,
            stored_key,
            server_key,
        }
    }
}

fn hmac_with<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // `new_from_slice` only fails for fixed-size keys, never for HMAC.
    match <M as hmac::digest::KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// The keys derived from one password.
pub(crate) struct DerivedKeys {
    /// Only the RFC vector tests need ClientKey; it is zeroed on drop.
    #[cfg_attr(not(test), allow(dead_code))]
    pub client_key: Zeroizing<Vec<u8>>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// A message that does not follow RFC 5802's grammar (or uses channel binding, which
/// csync does not offer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// What the client-first-message says, names unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientFirst {
    pub authzid: Option<String>,
    pub username: String,
}

/// Checks a client-first-message:
/// `("n" / "y") "," ["a=" saslname] "," "n=" saslname "," "r=" nonce *("," attr-val)`.
/// `p=` (channel binding) and `m=` (mandatory extensions) are refused.
pub(crate) fn check_client_first(msg: &[u8]) -> Result<ClientFirst, Malformed> {
    let text = utf8(msg)?;
    let mut parts = text.split(',');
    match parts.next() {
        Some("n" | "y") => {}
        _ => return Err(Malformed),
    }
    let authzid = match parts.next() {
        Some("") => None,
        Some(a) => Some(unescape(a.strip_prefix("a=").ok_or(Malformed)?)?),
        None => return Err(Malformed),
    };
    let username = unescape(
        parts
            .next()
            .and_then(|p| p.strip_prefix("n="))
            .ok_or(Malformed)?,
    )?;
    check_nonce(
        parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .ok_or(Malformed)?,
    )?;
    parts.try_for_each(check_attr_val)?;
    Ok(ClientFirst { authzid, username })
}

/// Checks a client-final-message: `"c=" base64 "," "r=" nonce *("," attr-val) "," "p=" base64`.
pub(crate) fn check_client_final(msg: &[u8]) -> Result<(), Malformed> {
    let text = utf8(msg)?;
    let parts: Vec<&str> = text.split(',').collect();
    let [first, second, middle @ .., last] = parts.as_slice() else {
        return Err(Malformed);
    };
    check_base64(first.strip_prefix("c=").ok_or(Malformed)?)?;
    check_nonce(second.strip_prefix("r=").ok_or(Malformed)?)?;
    for part in middle {
        if part.starts_with("p=") {
            return Err(Malformed);
        }
        check_attr_val(part)?;
    }
    check_base64(last.strip_prefix("p=").ok_or(Malformed)?)
}

/// Checks a server-first-message, `"r=" nonce "," "s=" base64 "," "i=" digits *("," attr-val)`,
/// and returns its iteration count.
pub(crate) fn check_server_first(msg: &[u8]) -> Result<u32, Malformed> {
    let text = utf8(msg)?;
    let mut parts = text.split(',');
    check_nonce(
        parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .ok_or(Malformed)?,
    )?;
    check_base64(
        parts
            .next()
            .and_then(|p| p.strip_prefix("s="))
            .ok_or(Malformed)?,
    )?;
    let count = parts
        .next()
        .and_then(|p| p.strip_prefix("i="))
        .ok_or(Malformed)?;
    if count.is_empty() || count.len() > 10 || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Malformed);
    }
    let iterations: u32 = count.parse().map_err(|_| Malformed)?;
    parts.try_for_each(check_attr_val)?;
    Ok(iterations)
}

/// A server-final-message: the verifier or the server's error value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ServerFinal {
    Verifier,
    Error(String),
}

/// Checks a server-final-message: `("v=" base64 / "e=" value) *("," attr-val)`.
pub(crate) fn check_server_final(msg: &[u8]) -> Result<ServerFinal, Malformed> {
    let text = utf8(msg)?;
    let mut parts = text.split(',');
    let first = parts.next().ok_or(Malformed)?;
    let result = if let Some(v) = first.strip_prefix("v=") {
        check_base64(v)?;
        ServerFinal::Verifier
    } else if let Some(e) = first.strip_prefix("e=") {
        if e.is_empty() {
            return Err(Malformed);
        }
        ServerFinal::Error(e.to_owned())
    } else {
        return Err(Malformed);
    };
    parts.try_for_each(check_attr_val)?;
    Ok(result)
}

fn utf8(msg: &[u8]) -> Result<&str, Malformed> {
    if msg.len() > MAX_MESSAGE || msg.contains(&0) {
        return Err(Malformed);
    }
    std::str::from_utf8(msg).map_err(|_| Malformed)
}

/// `printable = %x21-2B / %x2D-7E`, at least one.
fn check_nonce(nonce: &str) -> Result<(), Malformed> {
    if !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| matches!(b, 0x21..=0x2B | 0x2D..=0x7E))
    {
        Ok(())
    } else {
        Err(Malformed)
    }
}

fn check_base64(value: &str) -> Result<(), Malformed> {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        Ok(())
    } else {
        Err(Malformed)
    }
}

/// `attr-val = ALPHA "=" value`, value at least one character.
fn check_attr_val(part: &str) -> Result<(), Malformed> {
    let bytes = part.as_bytes();
    if bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b'=' {
        Ok(())
    } else {
        Err(Malformed)
    }
}

/// Undoes saslname escaping (`=2C` → `,`, `=3D` → `=`); any other `=` is an error, as is
/// an empty name.
pub(crate) fn unescape(name: &str) -> Result<String, Malformed> {
    if name.is_empty() {
        return Err(Malformed);
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).ok_or(Malformed)?;
        match escape {
            "=2C" => out.push(','),
            "=3D" => out.push('='),
            _ => return Err(Malformed),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// saslname escaping: `,` → `=2C`, `=` → `=3D`.
#[cfg(test)]
pub(crate) fn escape(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    /// RFC 5802 §5: user "user", password "pencil".
    #[test]
    fn rfc5802_sha1_vector() {
        let salt = STANDARD.decode("QSXCR+Q6sek8bf92").unwrap();
        let keys = ScramHash::Sha1.derive_keys(b"pencil", &salt, 4096);
        // RFC 5803 §4 gives these stored values for the same user.
        assert_eq!(
            STANDARD.encode(&keys.stored_key),
            "6dlGYMOdZcOPutkcNY8U2g7vK9Y="
        );
        assert_eq!(
            STANDARD.encode(&keys.server_key),
            "D+CSWLOshSulAsxiupA+qs2/fTE="
        );

        let auth_message = "n=user,r=fyko+d2lbbFgONRv9qkxdawL,\
            r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,\
            c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
        let client_signature = ScramHash::Sha1.hmac(&keys.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = keys
            .client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(STANDARD.encode(proof), "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=");
        let server_signature = ScramHash::Sha1.hmac(&keys.server_key, auth_message.as_bytes());
        assert_eq!(
            STANDARD.encode(server_signature),
            "rmF9pqV8S7suAoZWja4dJRkFsKQ="
        );
    }

    /// RFC 7677 §3: user "user", password "pencil".
    #[test]
    fn rfc7677_sha256_vector() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let keys = ScramHash::Sha256.derive_keys(b"pencil", &salt, 4096);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let client_signature = ScramHash::Sha256.hmac(&keys.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = keys
            .client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(
            STANDARD.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_signature = ScramHash::Sha256.hmac(&keys.server_key, auth_message.as_bytes());
        assert_eq!(
            STANDARD.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn client_first_grammar() {
        assert_eq!(
            check_client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"),
            Ok(ClientFirst {
                authzid: None,
                username: "user".into()
            })
        );
        assert_eq!(
            check_client_first(b"y,a=ad=2Cmin,n=a=3Db,r=abc,x=ext"),
            Ok(ClientFirst {
                authzid: Some("ad,min".into()),
                username: "a=b".into()
            })
        );
        for bad in [
            &b""[..],
            b"n",
            b"n,",
            b"n,,",
            b"n,,n",
            b"n,,n=",
            b"n,,n=u",
            b"n,,n=u,",
            b"n,,n=u,r",
            b"n,,n=u,r=",
            b"n,,n=u,r=a,",
            b"n,,n=u,r=a,x",
            b"n,,n=u,r=a,x=",
            b"n,a,n=u,r=a",
            b"n,a=,n=u,r=a",
            b"p=tls-unique,,n=u,r=a",
            b"n,,m=x,n=u,r=a",
            b"n,,n=u=2X,r=a",
            b"n,,n=u=,r=a",
            b"n,,n=u,r=a b",
            b"n,,n=u\0,r=a",
            b"n,,n=\xff,r=a",
            b"x,,n=u,r=a",
            b"n,,r=a,n=u",
        ] {
            assert_eq!(check_client_first(bad), Err(Malformed), "{bad:?}");
        }
        assert_eq!(
            check_client_first(format!("n,,n=u,r={}", "a".repeat(MAX_MESSAGE)).as_bytes()),
            Err(Malformed)
        );
    }

    #[test]
    fn client_final_grammar() {
        assert_eq!(check_client_final(b"c=biws,r=abc,p=dGVzdA=="), Ok(()));
        assert_eq!(check_client_final(b"c=biws,r=abc,x=y,p=dGVzdA=="), Ok(()));
        for bad in [
            &b""[..],
            b"c=biws",
            b"c=biws,r=abc",
            b"c=biws,r=abc,",
            b"c=biws,r=abc,p",
            b"c=biws,r=abc,p=",
            b"c=biws,r=abc,p=dGVzdA==,",
            b"c=biws,r=abc,p=dGVzdA==,x=y",
            b"c=biws,r=abc,p=a,p=b",
            b"c=,r=abc,p=a",
            b"c=biws,r=,p=a",
            b"c=biws,r=abc,,p=a",
            b"c=biws,r=abc,x,p=a",
            b"r=abc,c=biws,p=a",
            b"c=bi ws,r=abc,p=a",
        ] {
            assert_eq!(check_client_final(bad), Err(Malformed), "{bad:?}");
        }
    }

    #[test]
    fn server_messages_grammar() {
        assert_eq!(
            check_server_first(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096"),
            Ok(4096)
        );
        assert_eq!(check_server_first(b"r=a,s=QQ==,i=1,x=y"), Ok(1));
        for bad in [
            &b""[..],
            b"r=a",
            b"r=a,s=QQ==",
            b"r=a,s=QQ==,i=",
            b"r=a,s=QQ==,i=x",
            b"r=a,s=QQ==,i=-1",
            b"r=a,s=QQ==,i=99999999999",
            b"r=a,s=QQ==,i=1,",
            b"m=x,r=a,s=QQ==,i=1",
            b"r=a,s=,i=1",
            b"s=QQ==,r=a,i=1",
        ] {
            assert_eq!(check_server_first(bad), Err(Malformed), "{bad:?}");
        }
        assert_eq!(
            check_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="),
            Ok(ServerFinal::Verifier)
        );
        assert_eq!(
            check_server_final(b"e=invalid-proof"),
            Ok(ServerFinal::Error("invalid-proof".into()))
        );
        for bad in [&b""[..], b"v", b"v=", b"e=", b"x=y", b"v=QQ==,", b"v=Q Q"] {
            assert_eq!(check_server_final(bad), Err(Malformed), "{bad:?}");
        }
    }

    #[test]
    fn saslname_escaping() {
        assert_eq!(unescape("plain"), Ok("plain".into()));
        assert_eq!(unescape("a=2Cb=3Dc"), Ok("a,b=c".into()));
        assert_eq!(unescape("="), Err(Malformed));
        assert_eq!(unescape("=2"), Err(Malformed));
        assert_eq!(unescape("=41"), Err(Malformed));
        assert_eq!(unescape(""), Err(Malformed));
        assert_eq!(escape("a,b=c"), "a=2Cb=3Dc");
        assert_eq!(unescape(&escape("x=,y")), Ok("x=,y".into()));
    }
}
