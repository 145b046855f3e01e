//! The four mechanisms csync speaks, and their rsasl registrations.

use rsasl::prelude::{Mechanism as RsaslMechanism, Registry};

use crate::scram::ScramHash;

/// A SASL mechanism csync supports. None of them negotiates a security layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    ScramSha256,
    ScramSha1,
    Plain,
    Login,
}

/// Strongest first: the order Cyrus SASL sorts its server mechanisms in (`mech_compare`:
/// SCRAM has `NOPLAINTEXT`/`MUTUAL_AUTH` and a hash strength, SHA-256 over SHA-1; PLAIN
/// and LOGIN tie and PLAIN, loaded later, goes first). A real Debian 3.6 greeting without
/// `sasl_mech_list`: `* SASL SCRAM-SHA-512 SCRAM-SHA-384 SCRAM-SHA-256 SCRAM-SHA-224
/// SCRAM-SHA-1 DIGEST-MD5 CRAM-MD5 NTLM PLAIN LOGIN`.
pub const ALL_MECHANISMS: [Mechanism; 4] = [
    Mechanism::ScramSha256,
    Mechanism::ScramSha1,
    Mechanism::Plain,
    Mechanism::Login,
];

static RSASL_SCRAM_SHA256: &[RsaslMechanism] = &[rsasl::mechanisms::scram::SCRAM_SHA256];
static RSASL_SCRAM_SHA1: &[RsaslMechanism] = &[rsasl::mechanisms::scram::SCRAM_SHA1];
static RSASL_PLAIN: &[RsaslMechanism] = &[rsasl::mechanisms::plain::PLAIN];
static RSASL_LOGIN: &[RsaslMechanism] = &[rsasl::mechanisms::login::LOGIN];

impl Mechanism {
    /// The registered SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }

    /// Looks a name up case-insensitively, as SASL matches mechanism names.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        ALL_MECHANISMS
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// PLAIN and LOGIN send the password itself: offered only under TLS unless
    /// `allowplaintext`.
    pub fn is_plaintext(self) -> bool {
        matches!(self, Mechanism::Plain | Mechanism::Login)
    }

    /// The SCRAM hash, for the SCRAM mechanisms.
    pub fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256 => Some(ScramHash::Sha256),
            Mechanism::ScramSha1 => Some(ScramHash::Sha1),
            Mechanism::Plain | Mechanism::Login => None,
        }
    }

    /// A one-mechanism rsasl registry, so a session can only ever run this mechanism.
    pub(crate) fn rsasl_registry(self) -> Registry {
        Registry::with_mechanisms(match self {
            Mechanism::ScramSha256 => RSASL_SCRAM_SHA256,
            Mechanism::ScramSha1 => RSASL_SCRAM_SHA1,
            Mechanism::Plain => RSASL_PLAIN,
            Mechanism::Login => RSASL_LOGIN,
        })
    }

    pub(crate) fn mechname(self) -> &'static rsasl::mechname::Mechname {
        match self {
            Mechanism::ScramSha256 => RSASL_SCRAM_SHA256[0].mechanism,
            Mechanism::ScramSha1 => RSASL_SCRAM_SHA1[0].mechanism,
            Mechanism::Plain => RSASL_PLAIN[0].mechanism,
            Mechanism::Login => RSASL_LOGIN[0].mechanism,
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for m in ALL_MECHANISMS {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
            assert_eq!(Mechanism::from_name(&m.name().to_lowercase()), Some(m));
            assert_eq!(m.mechname().as_str(), m.name());
        }
        assert_eq!(Mechanism::from_name("SCRAM-SHA-256-PLUS"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
    }
}
