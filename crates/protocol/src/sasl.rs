//! The AUTHENTICATE exchange framing (spec §1.6), without any mechanism.
//!
//! The mechanisms themselves run elsewhere; this module only turns their byte strings
//! into the lines that carry them and back:
//!
//! ```text
//! C: AUTHENTICATE <mech> [<initial-response> | =]     Authenticate::parse / encode
//! S: + <base64 challenge>                             encode_challenge / parse_server_line
//! C: <base64 response> | *                            parse_response / encode_response
//! S: OK Success (no protection) | NO ... | BAD ...    reply constants
//! ```
//!
//! Lines are passed without their CRLF, as the line decoder delivers them; a trailing
//! CRLF or LF is tolerated. Encoders append whole lines, CRLF included.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The command word.
pub const COMMAND: &str = "AUTHENTICATE";

/// Success without a security layer, the only outcome for PLAIN/LOGIN/SCRAM.
pub const OK_NO_PROTECTION: &str = "OK Success (no protection)";
pub const OK_INTEGRITY_PROTECTION: &str = "OK Success (integrity protection)";
pub const OK_PRIVACY_PROTECTION: &str = "OK Success (privacy protection)";
pub const OK_TLS_PROTECTION: &str = "OK Success (tls protection)";
pub const OK_TLS_INTEGRITY_PROTECTION: &str = "OK Success (tls plus integrity protection)";
pub const OK_TLS_PRIVACY_PROTECTION: &str = "OK Success (tls plus privacy protection)";

/// A second AUTHENTICATE after success. Cyrus checks this only after the arguments
/// parsed, so a malformed command still gets its syntax error.
pub const BAD_ALREADY_AUTHENTICATED: &str = "BAD Already authenticated";
/// The client answered a challenge with `*`.
pub const BAD_CANCELED: &str = "BAD Client canceled authentication";
pub const BAD_INVALID_MECHANISM: &str = "BAD Invalid mechanism";
pub const BAD_MISSING_ARGUMENT: &str = "BAD Missing required argument to Authenticate";
pub const BAD_EXTRA_ARGUMENTS: &str = "BAD Unexpected extra arguments to Authenticate";
/// Undecodable base64 in an initial or later response: Cyrus SASL's text for
/// `SASL_BADPROT`, sent on Cyrus's failed-login path (after `failedloginpause`).
/// [source: `saslserver.c`, `sasl_errstring`]
pub const NO_BAD_PROTOCOL: &str = "NO bad protocol / cancel";
/// A failure without a SASL error text.
pub const NO_ERROR_AUTHENTICATING: &str = "NO Error authenticating";

/// `OK Success (...)` for the negotiated security strength factor (`ssf`: 0 none,
/// 1 integrity, more privacy), worded differently inside TLS.
pub fn success_reply(tls: bool, ssf: u32) -> &'static str {
    match (tls, ssf) {
        (false, 0) => OK_NO_PROTECTION,
        (false, 1) => OK_INTEGRITY_PROTECTION,
        (false, _) => OK_PRIVACY_PROTECTION,
        (true, 0) => OK_TLS_PROTECTION,
        (true, 1) => OK_TLS_INTEGRITY_PROTECTION,
        (true, _) => OK_TLS_PRIVACY_PROTECTION,
    }
}

/// `NO <SASL error text>` (e.g. `NO authentication failure`); an empty text gives
/// [`NO_ERROR_AUTHENTICATING`].
pub fn failure_reply(text: &str) -> String {
    if text.is_empty() {
        NO_ERROR_AUTHENTICATING.to_owned()
    } else {
        format!("NO {}", one_line(text))
    }
}

/// `NO Error reading client response: <detail>`: the response line could not be read
/// at all (connection closed, line too long).
pub fn error_reading_client_response(detail: &str) -> String {
    format!("NO Error reading client response: {}", one_line(detail))
}

/// Keeps caller-supplied text from ending the reply line early.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Why an AUTHENTICATE line or exchange line is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("missing required argument to Authenticate")]
    MissingArgument,
    #[error("invalid mechanism name")]
    InvalidMechanism,
    #[error("unexpected extra arguments to Authenticate")]
    ExtraArguments,
    #[error("invalid base64: {0}")]
    InvalidBase64(#[from] base64::DecodeError),
    #[error("client canceled authentication")]
    Canceled,
    /// On the client: a line that is neither a challenge nor OK/NO/BAD. The client
    /// should send [`encode_cancel`] and give up.
    #[error("unexpected server line during authentication")]
    UnexpectedServerLine,
}

impl SaslError {
    /// The completion line a server sends for this error (without CRLF); `None` for
    /// errors only a client meets. After any of them the exchange is over.
    pub fn server_reply(&self) -> Option<&'static str> {
        match self {
            SaslError::MissingArgument => Some(BAD_MISSING_ARGUMENT),
            SaslError::InvalidMechanism => Some(BAD_INVALID_MECHANISM),
            SaslError::ExtraArguments => Some(BAD_EXTRA_ARGUMENTS),
            SaslError::InvalidBase64(_) => Some(NO_BAD_PROTOCOL),
            SaslError::Canceled => Some(BAD_CANCELED),
            SaslError::UnexpectedServerLine => None,
        }
    }
}

/// Standard alphabet with padding required, like Cyrus SASL's `sasl_decode64`; that
/// decoder ignores the unused low bits of the last character, so this one does too.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// An `AUTHENTICATE` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticate {
    /// As sent; SASL matches mechanism names case-insensitively.
    pub mechanism: String,
    /// `None`: no initial response (the server starts with a challenge).
    /// `Some(empty)`: an empty one, `=` on the wire.
    pub initial_response: Option<Vec<u8>>,
}

impl Authenticate {
    /// Reads the arguments: the text after `AUTHENTICATE ` (`None` when the command
    /// word ended the line). Follows Cyrus's `cmdloop`: words end at whitespace,
    /// parentheses or a double quote; anything after the second word is an error;
    /// a trailing space leaves an empty second word, i.e. an empty initial response.
    pub fn parse(args: Option<&[u8]>) -> Result<Self, SaslError> {
        let args = args.ok_or(SaslError::MissingArgument)?;
        let (mech, rest) = split_word(args);
        if !is_atom(mech) {
            return Err(SaslError::InvalidMechanism);
        }
        let mechanism =
            String::from_utf8(mech.to_vec()).map_err(|_| SaslError::InvalidMechanism)?;
        let initial_response = match rest.split_first() {
            Some((b' ', after)) => {
                let (response, rest) = split_word(after);
                if !is_line_end(rest) {
                    return Err(SaslError::ExtraArguments);
                }
                Some(decode_initial_response(response)?)
            }
            _ if is_line_end(rest) => None,
            _ => return Err(SaslError::ExtraArguments),
        };
        Ok(Authenticate {
            mechanism,
            initial_response,
        })
    }

    /// Appends the client's command line, initial response inline as the Cyrus client
    /// sends it (an empty one as `=`). Fails if the mechanism name is not an atom,
    /// which also keeps it from breaking the line.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), SaslError> {
        if !is_atom(self.mechanism.as_bytes()) {
            return Err(SaslError::InvalidMechanism);
        }
        out.extend_from_slice(COMMAND.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.mechanism.as_bytes());
        match &self.initial_response {
            None => {}
            Some(response) if response.is_empty() => out.extend_from_slice(b" ="),
            Some(response) => {
                out.push(b' ');
                push_base64(out, response);
            }
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

fn decode_initial_response(word: &[u8]) -> Result<Vec<u8>, SaslError> {
    if word == b"=" {
        return Ok(Vec::new());
    }
    Ok(BASE64.decode(word)?)
}

/// Server: appends a challenge line, `+ <base64>` CRLF; an empty challenge is `+ `
/// CRLF (plus, space, nothing).
pub fn encode_challenge(challenge: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"+ ");
    push_base64(out, challenge);
    out.extend_from_slice(b"\r\n");
}

/// Server: reads the client's answer to a challenge. A line starting with `*` cancels
/// ([`SaslError::Canceled`], answered with [`BAD_CANCELED`]); an empty line is an
/// empty response.
pub fn parse_response(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    let line = trim_line_end(line);
    // Cyrus looks only at the first byte; `*` is not base64, so nothing valid is lost.
    if line.first() == Some(&b'*') {
        return Err(SaslError::Canceled);
    }
    Ok(BASE64.decode(line)?)
}

/// Client: appends a response line (bare base64; an empty response is an empty line).
pub fn encode_response(response: &[u8], out: &mut Vec<u8>) {
    push_base64(out, response);
    out.extend_from_slice(b"\r\n");
}

/// Client: appends the cancel line `*`.
pub fn encode_cancel(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*\r\n");
}

/// What the server sent during an exchange, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerLine<'a> {
    /// `+ <base64>`, decoded: the mechanism's next challenge.
    Challenge(Vec<u8>),
    /// `OK <text>`: authenticated.
    Ok(&'a [u8]),
    /// `NO <text>`: authentication failed.
    No(&'a [u8]),
    /// `BAD <text>`: the command or exchange was malformed or canceled.
    Bad(&'a [u8]),
}

/// Client: classifies a server line. A bare `+` is taken as an empty challenge too.
/// An undecodable challenge or any other line is an error, after which the client
/// should cancel.
pub fn parse_server_line(line: &[u8]) -> Result<ServerLine<'_>, SaslError> {
    let line = trim_line_end(line);
    if line == b"+" {
        return Ok(ServerLine::Challenge(Vec::new()));
    }
    if let Some(challenge) = strip_prefix_ignore_case(line, b"+ ") {
        return Ok(ServerLine::Challenge(BASE64.decode(challenge)?));
    }
    let (word, text) = match line.iter().position(|&b| b == b' ') {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &b""[..]),
    };
    if word.eq_ignore_ascii_case(b"OK") {
        Ok(ServerLine::Ok(text))
    } else if word.eq_ignore_ascii_case(b"NO") {
        Ok(ServerLine::No(text))
    } else if word.eq_ignore_ascii_case(b"BAD") {
        Ok(ServerLine::Bad(text))
    } else {
        Err(SaslError::UnexpectedServerLine)
    }
}

fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(
        start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
        0,
    );
    let written = BASE64.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
}

fn strip_prefix_ignore_case<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = line.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &line[prefix.len()..])
}

/// Drops one trailing LF and then one CR, as Cyrus trims a response line.
fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Nothing left but the line end (which Cyrus accepts as CRLF or a bare LF).
pub(crate) fn is_line_end(rest: &[u8]) -> bool {
    matches!(rest, b"" | b"\n" | b"\r\n")
}

/// Cyrus's `getword`: the bytes up to the first whitespace, parenthesis or double
/// quote, and the rest starting at that byte. Shared with the `COMPRESS` argument.
pub(crate) fn split_word(bytes: &[u8]) -> (&[u8], &[u8]) {
    let end = bytes
        .iter()
        .position(|&b| {
            matches!(
                b,
                b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r' | b'(' | b')' | b'"'
            )
        })
        .unwrap_or(bytes.len());
    bytes.split_at(end)
}

/// Cyrus's `imparse_isatom`: 1 to 1023 bytes from 0x1F to 0x7E, none of them one of
/// `SP { ( ) " % * \`.
fn is_atom(bytes: &[u8]) -> bool {
    const SPECIALS: &[u8] = b" {()\"%*\\";
    !bytes.is_empty()
        && bytes.len() < 1024
        && bytes
            .iter()
            .all(|b| (0x1f..0x7f).contains(b) && !SPECIALS.contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Authenticate, SaslError> {
        Authenticate::parse(Some(args.as_bytes()))
    }

    fn auth(mech: &str, ir: Option<&[u8]>) -> Authenticate {
        Authenticate {
            mechanism: mech.into(),
            initial_response: ir.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn parses_cyrus_client_plain_line() {
        // 01-first-sync-new-user.txt: the real sync_client's line.
        assert_eq!(
            parse("PLAIN AHJlcGx1c2VyAHNlY3JldA=="),
            Ok(auth("PLAIN", Some(b"\0repluser\0secret")))
        );
        // §1.6's example.
        assert_eq!(
            parse("PLAIN AHJlcGwAc2VjcmV0"),
            Ok(auth("PLAIN", Some(b"\0repl\0secret")))
        );
    }

    #[test]
    fn initial_response_forms() {
        assert_eq!(parse("LOGIN"), Ok(auth("LOGIN", None)));
        assert_eq!(parse("PLAIN ="), Ok(auth("PLAIN", Some(b""))));
        // A trailing space leaves an empty word, which decodes to an empty response.
        assert_eq!(parse("PLAIN "), Ok(auth("PLAIN", Some(b""))));
        assert_eq!(parse("SCRAM-SHA-256"), Ok(auth("SCRAM-SHA-256", None)));
        assert_eq!(parse("plain"), Ok(auth("plain", None)));
        // A line end left on the arguments is tolerated.
        assert_eq!(parse("PLAIN =\r\n"), Ok(auth("PLAIN", Some(b""))));
        assert_eq!(parse("LOGIN\n"), Ok(auth("LOGIN", None)));
    }

    #[test]
    fn missing_argument() {
        assert_eq!(Authenticate::parse(None), Err(SaslError::MissingArgument));
        assert_eq!(
            SaslError::MissingArgument.server_reply(),
            Some("BAD Missing required argument to Authenticate")
        );
    }

    #[test]
    fn invalid_mechanism() {
        for bad in [
            "",
            " PLAIN",
            "PL*AIN",
            "PL%AIN",
            "PL{AIN",
            "PL\\AIN",
            "PL\x7fAIN",
            "PL\x01AIN",
            "PLÄIN",
            "(PLAIN",
            "\"PLAIN\"",
            "\tPLAIN",
        ] {
            assert_eq!(parse(bad), Err(SaslError::InvalidMechanism), "{bad:?}");
        }
        assert_eq!(parse(&"A".repeat(1024)), Err(SaslError::InvalidMechanism));
        assert!(parse(&"A".repeat(1023)).is_ok());
        // 0x1F passes Cyrus's check.
        assert!(parse("A\x1fB").is_ok());
        assert_eq!(
            SaslError::InvalidMechanism.server_reply(),
            Some("BAD Invalid mechanism")
        );
    }

    #[test]
    fn extra_arguments() {
        for bad in [
            "PLAIN = x",
            "PLAIN =  ",
            "PLAIN\t=",
            "PLAIN(",
            "PLAIN =(",
            "PLAIN AAAA\"",
            "PLAIN\r",
        ] {
            assert_eq!(parse(bad), Err(SaslError::ExtraArguments), "{bad:?}");
        }
        assert_eq!(
            SaslError::ExtraArguments.server_reply(),
            Some("BAD Unexpected extra arguments to Authenticate")
        );
    }

    #[test]
    fn bad_base64_initial_response() {
        for bad in [
            "PLAIN AHJlcGwAc2VjcmV0=",
            "PLAIN AHJ",
            "PLAIN AH=J",
            "PLAIN ==",
            "PLAIN A-_B",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                matches!(err, SaslError::InvalidBase64(_)),
                "{bad:?}: {err:?}"
            );
            assert_eq!(err.server_reply(), Some("NO bad protocol / cancel"));
        }
        // Unused low bits in the last character are ignored, as by sasl_decode64.
        assert_eq!(parse("X AB=="), Ok(auth("X", Some(&[0x00]))));
        assert_eq!(parse("X AA=="), Ok(auth("X", Some(&[0x00]))));
    }

    #[test]
    fn encodes_authenticate_line() {
        let mut out = Vec::new();
        auth("PLAIN", Some(b"\0repluser\0secret"))
            .encode(&mut out)
            .unwrap();
        assert_eq!(out, b"AUTHENTICATE PLAIN AHJlcGx1c2VyAHNlY3JldA==\r\n");

        out.clear();
        auth("PLAIN", Some(b"")).encode(&mut out).unwrap();
        assert_eq!(out, b"AUTHENTICATE PLAIN =\r\n");

        out.clear();
        auth("LOGIN", None).encode(&mut out).unwrap();
        assert_eq!(out, b"AUTHENTICATE LOGIN\r\n");

        out.clear();
        for bad in ["", "PLAIN\r\nEXIT", "A B"] {
            assert_eq!(
                auth(bad, None).encode(&mut out),
                Err(SaslError::InvalidMechanism)
            );
        }
        assert!(out.is_empty());
    }

    #[test]
    fn authenticate_round_trip() {
        for value in [
            auth("PLAIN", None),
            auth("PLAIN", Some(b"")),
            auth("SCRAM-SHA-1", Some(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")),
            auth("X", Some(&[0, 255, 1, 254, 2])),
        ] {
            let mut line = Vec::new();
            value.encode(&mut line).unwrap();
            let args = line
                .strip_prefix(b"AUTHENTICATE ")
                .and_then(|l| l.strip_suffix(b"\r\n"))
                .unwrap();
            assert_eq!(Authenticate::parse(Some(args)), Ok(value));
        }
    }

    #[test]
    fn challenge_lines() {
        let mut out = Vec::new();
        encode_challenge(b"", &mut out);
        assert_eq!(out, b"+ \r\n");
        out.clear();
        encode_challenge(b"r=abc,s=QSXCR+Q6sek8bf92,i=4096", &mut out);
        assert_eq!(out, b"+ cj1hYmMscz1RU1hDUitRNnNlazhiZjkyLGk9NDA5Ng==\r\n");
        out.clear();
        encode_challenge(b"Username:", &mut out);
        assert_eq!(out, b"+ VXNlcm5hbWU6\r\n");
    }

    #[test]
    fn client_response_lines() {
        assert_eq!(parse_response(b"dXNlcg=="), Ok(b"user".to_vec()));
        assert_eq!(parse_response(b"dXNlcg==\r\n"), Ok(b"user".to_vec()));
        assert_eq!(parse_response(b""), Ok(Vec::new()));
        assert_eq!(parse_response(b"\r\n"), Ok(Vec::new()));
        assert_eq!(parse_response(b"*"), Err(SaslError::Canceled));
        assert_eq!(parse_response(b"*\r\n"), Err(SaslError::Canceled));
        assert_eq!(parse_response(b"*junk"), Err(SaslError::Canceled));
        assert_eq!(
            SaslError::Canceled.server_reply(),
            Some("BAD Client canceled authentication")
        );
        for bad in [
            &b"dXNlcg"[..],
            b"dXNlcg= =",
            b" dXNlcg==",
            b"d\0XN",
            b"\xff\xfe",
        ] {
            let err = parse_response(bad).unwrap_err();
            assert!(matches!(err, SaslError::InvalidBase64(_)), "{bad:?}");
        }
    }

    #[test]
    fn encodes_client_responses() {
        let mut out = Vec::new();
        encode_response(b"user", &mut out);
        encode_response(b"", &mut out);
        encode_cancel(&mut out);
        assert_eq!(out, b"dXNlcg==\r\n\r\n*\r\n");

        // What the client encodes, the server decodes.
        let data: Vec<u8> = (0..=255).collect();
        out.clear();
        encode_response(&data, &mut out);
        assert_eq!(parse_response(&out), Ok(data));
    }

    #[test]
    fn server_lines_on_the_client() {
        assert_eq!(
            parse_server_line(b"+ VXNlcm5hbWU6"),
            Ok(ServerLine::Challenge(b"Username:".to_vec()))
        );
        assert_eq!(
            parse_server_line(b"+ "),
            Ok(ServerLine::Challenge(Vec::new()))
        );
        assert_eq!(
            parse_server_line(b"+ \r\n"),
            Ok(ServerLine::Challenge(Vec::new()))
        );
        assert_eq!(
            parse_server_line(b"+"),
            Ok(ServerLine::Challenge(Vec::new()))
        );
        assert_eq!(
            parse_server_line(b"OK Success (no protection)"),
            Ok(ServerLine::Ok(b"Success (no protection)"))
        );
        assert_eq!(
            parse_server_line(b"ok Success\r\n"),
            Ok(ServerLine::Ok(b"Success"))
        );
        assert_eq!(
            parse_server_line(b"NO authentication failure"),
            Ok(ServerLine::No(b"authentication failure"))
        );
        assert_eq!(
            parse_server_line(b"BAD Client canceled authentication"),
            Ok(ServerLine::Bad(b"Client canceled authentication"))
        );
        assert_eq!(parse_server_line(b"NO"), Ok(ServerLine::No(b"")));
        for bad in [
            &b"* OK hello"[..],
            b"",
            b"OKAY",
            b"BYE shutting down",
            b"+VXNl",
        ] {
            assert_eq!(
                parse_server_line(bad),
                Err(SaslError::UnexpectedServerLine),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_server_line(b"+ not*base64"),
            Err(SaslError::InvalidBase64(_))
        ));
        assert_eq!(SaslError::UnexpectedServerLine.server_reply(), None);
    }

    #[test]
    fn full_exchange_framing() {
        // A LOGIN-style exchange carried through both sides' framing.
        let mut wire = Vec::new();
        auth("LOGIN", None).encode(&mut wire).unwrap();
        assert_eq!(wire, b"AUTHENTICATE LOGIN\r\n");

        let mut server = Vec::new();
        encode_challenge(b"Username:", &mut server);
        let Ok(ServerLine::Challenge(c)) = parse_server_line(&server) else {
            panic!("not a challenge: {server:?}");
        };
        assert_eq!(c, b"Username:");

        let mut client = Vec::new();
        encode_response(b"repluser", &mut client);
        assert_eq!(parse_response(&client), Ok(b"repluser".to_vec()));

        client.clear();
        encode_cancel(&mut client);
        let err = parse_response(&client).unwrap_err();
        assert_eq!(err.server_reply(), Some(BAD_CANCELED));
    }

    #[test]
    fn reply_strings() {
        assert_eq!(success_reply(false, 0), "OK Success (no protection)");
        assert_eq!(success_reply(false, 1), "OK Success (integrity protection)");
        assert_eq!(success_reply(false, 56), "OK Success (privacy protection)");
        assert_eq!(success_reply(true, 0), "OK Success (tls protection)");
        assert_eq!(
            success_reply(true, 1),
            "OK Success (tls plus integrity protection)"
        );
        assert_eq!(
            success_reply(true, 256),
            "OK Success (tls plus privacy protection)"
        );
        assert_eq!(BAD_ALREADY_AUTHENTICATED, "BAD Already authenticated");
        assert_eq!(BAD_CANCELED, "BAD Client canceled authentication");
        assert_eq!(BAD_INVALID_MECHANISM, "BAD Invalid mechanism");
        assert_eq!(
            BAD_MISSING_ARGUMENT,
            "BAD Missing required argument to Authenticate"
        );
        assert_eq!(
            error_reading_client_response("EOF"),
            "NO Error reading client response: EOF"
        );
        assert_eq!(
            error_reading_client_response(""),
            "NO Error reading client response: "
        );
        assert_eq!(failure_reply("user not found"), "NO user not found");
        assert_eq!(
            failure_reply("authentication failure"),
            "NO authentication failure"
        );
        assert_eq!(failure_reply(""), "NO Error authenticating");
        assert_eq!(failure_reply("a\r\nOK b"), "NO a  OK b");
    }

    #[test]
    fn split_word_follows_getword() {
        assert_eq!(split_word(b"DEFLATE"), (&b"DEFLATE"[..], &b""[..]));
        assert_eq!(split_word(b"A B"), (&b"A"[..], &b" B"[..]));
        assert_eq!(split_word(b"A(B"), (&b"A"[..], &b"(B"[..]));
        assert_eq!(split_word(b"A\x0bB"), (&b"A"[..], &b"\x0bB"[..]));
        assert_eq!(split_word(b""), (&b""[..], &b""[..]));
        assert_eq!(split_word(b"\"x"), (&b""[..], &b"\"x"[..]));
    }
}
