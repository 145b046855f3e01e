//! Authentication for csync's sync_server and sync_client (spec §1.3–§1.6, §10.1 item 7).
//!
//! Sans-IO like `csync-protocol`: byte strings in, byte strings out. The AUTHENTICATE
//! line framing (`+ base64`, `*`, `=`) lives in [`csync_protocol::sasl`]; this crate runs
//! what is inside it, with [rsasl] 2.3 for the mechanisms PLAIN, LOGIN, SCRAM-SHA-1 and
//! SCRAM-SHA-256 (no `-PLUS` channel binding, no security layers, so success is always
//! `OK Success (no protection)` / `(tls protection)`). The one socket it opens is the
//! optional [`saslauthd`] client's.
//!
//! * [`passwd`]: the password file (RFC 5803 SCRAM verifiers, managed like sasldb).
//! * [`saslauthd`]: `sasl_pwcheck_method: saslauthd` (PLAIN and LOGIN only).
//! * [`Authenticator`] / [`ServerExchange`]: the server's mechanism list and exchanges,
//!   replying with Cyrus's texts ([`AuthFailure::reply`]); [`is_admin_session`] decides
//!   whether a login may replicate.
//! * [`ClientExchange`]: the master's side.
//!
//! # Realms
//!
//! Cyrus's sync_server uses `servername` as SASL realm, so a sasldb user must exist as
//! `user@<servername>`. csync treats `user` and `user@<servername>` (domain
//! case-insensitive) as the same user everywhere: lookups in the password file try the
//! bare id and then `user@<servername>`, and the ids reported on success are bare. Other
//! realms are left alone. saslauthd gets the login exactly as Cyrus would pass it
//! (split at the last `@`, else an empty realm).
//!
//! # Differences from Cyrus worth knowing
//!
//! * rsasl's PLAIN server applies SASLprep to the authentication id and password it
//!   receives; SCRAM and LOGIN use the raw bytes (as Cyrus's SCRAM does). The password
//!   file therefore refuses passwords that SASLprep would change.
//! * rsasl's SCRAM server compares StoredKey with `==`, not in constant time; the
//!   compared value is a hash of a value derived from the client's proof, so this leaks
//!   nothing an attacker can steer byte by byte. csync's own comparisons (PLAIN/LOGIN
//!   against the file) use `subtle`.
//! * `loginrealms`, `userdeny` and `group:` entries in `admins` are not implemented.

pub mod client;
pub mod mechanism;
pub mod passwd;
pub mod saslauthd;
mod scram;
pub mod server;

pub use client::{ClientError, ClientExchange, ClientStep};
pub use mechanism::{ALL_MECHANISMS, Mechanism};
pub use passwd::{PasswordCheckResult, PasswordFile, PasswordFileError, ScramSecret, UserSecrets};
pub use saslauthd::{Saslauthd, SaslauthdError, SaslauthdVerdict};
pub use scram::ScramHash;
pub use server::{
    AuthError, AuthFailure, AuthSettings, Authenticator, PasswordCheck, ServerExchange, Step,
    is_admin_session,
};
