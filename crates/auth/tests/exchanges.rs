//! Client ↔ server exchanges through the AUTHENTICATE wire framing of
//! `csync_protocol::sasl`, for every mechanism and the failure cases of spec §1.6.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::thread;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use csync_auth::{
    AuthFailure, AuthSettings, Authenticator, ClientError, ClientExchange, ClientStep, Mechanism,
    PasswordCheck, PasswordFile, Saslauthd, ScramHash, ScramSecret, Step, is_admin_session,
};
use csync_protocol::sasl::{self, Authenticate, ServerLine};
use hmac::{Hmac, Mac};

const SERVERNAME: &str = "replica.test";

fn password_file() -> PasswordFile {
    let mut file = PasswordFile::new("/nonexistent/csync.passwd");
    file.set("repluser", "secret").unwrap();
    file.set("repl", "secret").unwrap();
    file.set("alice", "alicepw").unwrap();
    // A sasldb-style entry with the realm in the name.
    file.set("bob@replica.test", "bobpw").unwrap();
    file
}

fn settings(checks: Vec<PasswordCheck>) -> AuthSettings {
    let mut s = AuthSettings::new(SERVERNAME);
    s.allow_plaintext = true;
    s.admins = vec!["repluser".into(), "repl".into()];
    s.password_checks = checks;
    s
}

fn authenticator() -> Authenticator {
    Authenticator::new(settings(vec![PasswordCheck::File(Arc::new(
        password_file(),
    ))]))
    .unwrap()
}

/// What a run produced: the outcome as the server saw it and the wire transcript.
#[derive(Debug)]
struct Run {
    server: Step,
    /// The client's judgement: Ok after `OK` and a successful `finish`.
    client: Result<(), String>,
    wire: Vec<String>,
}

fn line(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .trim_end_matches("\r\n")
        .to_owned()
}

/// Drives one exchange over the wire framing, as sync_client and sync_server would.
fn run(auth: &Authenticator, mut client: ClientExchange, tls: bool) -> Run {
    let mut wire = Vec::new();
    let mut out = Vec::new();
    Authenticate {
        mechanism: client.mechanism().name().to_owned(),
        initial_response: client.initial_response().map(<[u8]>::to_vec),
    }
    .encode(&mut out)
    .unwrap();
    wire.push(line(&out));
    let args = out
        .strip_prefix(b"AUTHENTICATE ")
        .and_then(|l| l.strip_suffix(b"\r\n"))
        .unwrap();
    let request = Authenticate::parse(Some(args)).unwrap();
    let (mut exchange, mut step) =
        match auth.start(&request.mechanism, request.initial_response.as_deref(), tls) {
            Ok(started) => started,
            Err(failure) => {
                wire.push(failure.reply());
                return Run {
                    server: Step::Failure(failure),
                    client: Err(failure.reply()),
                    wire,
                };
            }
        };
    loop {
        let mut server_out = Vec::new();
        match &step {
            Step::Challenge(c) => sasl::encode_challenge(c, &mut server_out),
            Step::Success { .. } => {
                server_out.extend_from_slice(sasl::success_reply(tls, 0).as_bytes());
                server_out.extend_from_slice(b"\r\n");
            }
            Step::Failure(f) => {
                server_out.extend_from_slice(f.reply().as_bytes());
                server_out.extend_from_slice(b"\r\n");
            }
        }
        wire.push(line(&server_out));
        let client_result = match sasl::parse_server_line(&server_out).unwrap() {
            ServerLine::Challenge(c) => match client.step(&c) {
                Ok(reply) => {
                    let mut resp = Vec::new();
                    sasl::encode_response(reply.response(), &mut resp);
                    wire.push(line(&resp));
                    step = exchange.step(&sasl::parse_response(&resp).unwrap());
                    continue;
                }
                Err(e) => Err(format!("client: {e}")),
            },
            ServerLine::Ok(_) => client.finish().map_err(|e| format!("client: {e}")),
            ServerLine::No(t) | ServerLine::Bad(t) => Err(String::from_utf8_lossy(t).into()),
        };
        return Run {
            server: step,
            client: client_result,
            wire,
        };
    }
}

fn client(mech: &str, authcid: &str, password: &str, authzid: Option<&str>) -> ClientExchange {
    ClientExchange::new(&[mech.to_owned()], false, true, authcid, password, authzid).unwrap()
}

fn success(authcid: &str, authzid: Option<&str>) -> Step {
    Step::Success {
        authcid: authcid.into(),
        authzid: authzid.map(str::to_owned),
    }
}

const ALL: [&str; 4] = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "LOGIN"];

#[test]
fn every_mechanism_round_trips() {
    let auth = authenticator();
    for mech in ALL {
        let r = run(&auth, client(mech, "repluser", "secret", None), false);
        assert_eq!(r.server, success("repluser", None), "{mech}: {r:?}");
        assert_eq!(r.client, Ok(()), "{mech}: {r:?}");
        assert_eq!(r.wire.last().unwrap(), "OK Success (no protection)");
        assert!(is_admin_session("repluser", None, &auth.settings().admins));
        match mech {
            "PLAIN" => assert_eq!(
                r.wire,
                [
                    "AUTHENTICATE PLAIN AHJlcGx1c2VyAHNlY3JldA==",
                    "OK Success (no protection)"
                ]
            ),
            "LOGIN" => assert_eq!(
                r.wire,
                [
                    "AUTHENTICATE LOGIN",
                    "+ VXNlcm5hbWU6", // Username:
                    "cmVwbHVzZXI=",
                    "+ UGFzc3dvcmQ6", // Password:
                    "c2VjcmV0",
                    "OK Success (no protection)"
                ]
            ),
            _ => {
                // client-first inline, server-first, client-final, server-final, empty, OK
                assert_eq!(r.wire.len(), 6, "{r:?}");
                assert!(r.wire[0].starts_with(&format!("AUTHENTICATE {mech} ")));
                let first = STANDARD
                    .decode(r.wire[0].rsplit(' ').next().unwrap())
                    .unwrap();
                assert!(first.starts_with(b"n,,n=repluser,r="), "{first:?}");
                let server_first = STANDARD
                    .decode(r.wire[1].strip_prefix("+ ").unwrap())
                    .unwrap();
                assert!(
                    String::from_utf8(server_first)
                        .unwrap()
                        .ends_with(",i=4096"),
                    "{r:?}"
                );
                let server_final = STANDARD
                    .decode(r.wire[3].strip_prefix("+ ").unwrap())
                    .unwrap();
                assert!(server_final.starts_with(b"v="));
                assert_eq!(r.wire[4], "");
            }
        }
    }
    // Inside TLS the success text says so.
    let r = run(&auth, client("SCRAM-SHA-256", "repl", "secret", None), true);
    assert_eq!(r.wire.last().unwrap(), "OK Success (tls protection)");
}

/// The real Cyrus sync_client's line from the golden transcripts, and §1.6's example.
#[test]
fn cyrus_client_plain_lines() {
    let fixture =
        include_str!("../../protocol/tests/fixtures/cyrus-3.6/01-first-sync-new-user.txt");
    let line = fixture
        .lines()
        .find_map(|l| l.strip_prefix("C: AUTHENTICATE "))
        .unwrap();
    assert_eq!(line, "PLAIN AHJlcGx1c2VyAHNlY3JldA==");
    let auth = authenticator();
    for (args, user) in [(line, "repluser"), ("PLAIN AHJlcGwAc2VjcmV0", "repl")] {
        let request = Authenticate::parse(Some(args.as_bytes())).unwrap();
        let (mut exchange, step) = auth
            .start(
                &request.mechanism,
                request.initial_response.as_deref(),
                false,
            )
            .unwrap();
        assert_eq!(step, success(user, None));
        assert!(exchange.is_finished());
        assert_eq!(exchange.step(b""), Step::Failure(AuthFailure::BadProtocol));
    }
    // The client side produces the same bytes.
    let c = client("PLAIN", "repluser", "secret", None);
    assert_eq!(
        STANDARD.encode(c.initial_response().unwrap()),
        "AHJlcGx1c2VyAHNlY3JldA=="
    );
    let c = client("PLAIN", "repl", "secret", None);
    assert_eq!(
        STANDARD.encode(c.initial_response().unwrap()),
        "AHJlcGwAc2VjcmV0"
    );
}

#[test]
fn wrong_password() {
    let auth = authenticator();
    for mech in ALL {
        let r = run(&auth, client(mech, "repluser", "Secret", None), false);
        assert_eq!(
            r.server,
            Step::Failure(AuthFailure::AuthenticationFailure),
            "{mech}: {r:?}"
        );
        assert_eq!(
            r.wire.last().unwrap(),
            "NO authentication failure",
            "{mech}"
        );
        assert_eq!(r.client, Err("authentication failure".into()));
    }
}

#[test]
fn unknown_user() {
    let auth = authenticator();
    for mech in ALL {
        let r = run(&auth, client(mech, "mallory", "secret", None), false);
        assert_eq!(
            r.server,
            Step::Failure(AuthFailure::UserNotFound),
            "{mech}: {r:?}"
        );
        assert_eq!(r.wire.last().unwrap(), "NO user not found", "{mech}");
    }
    // SCRAM fails right after the client-first message, like Cyrus.
    let r = run(&auth, client("SCRAM-SHA-256", "mallory", "x", None), false);
    assert_eq!(r.wire.len(), 2, "{r:?}");
}

#[test]
fn authzid_other_than_authcid() {
    let auth = authenticator();
    let admins = &auth.settings().admins;
    for mech in ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"] {
        // An admin may log in as someone else: it succeeds, but the session is not admin.
        let r = run(
            &auth,
            client(mech, "repluser", "secret", Some("alice")),
            false,
        );
        assert_eq!(r.server, success("repluser", Some("alice")), "{mech}");
        assert_eq!(r.client, Ok(()));
        assert!(!is_admin_session("repluser", Some("alice"), admins));

        // The same id as authzid is an ordinary admin login.
        let r = run(
            &auth,
            client(mech, "repluser", "secret", Some("repluser")),
            false,
        );
        assert_eq!(r.server, success("repluser", Some("repluser")), "{mech}");
        assert!(is_admin_session("repluser", Some("repluser"), admins));

        // A non-admin login succeeds but may not replicate.
        let r = run(&auth, client(mech, "alice", "alicepw", None), false);
        assert_eq!(r.server, success("alice", None), "{mech}");
        assert!(!is_admin_session("alice", None, admins));

        // A non-admin (and non-proxyserver) may not proxy.
        let r = run(
            &auth,
            client(mech, "alice", "alicepw", Some("repluser")),
            false,
        );
        assert_eq!(
            r.server,
            Step::Failure(AuthFailure::AuthenticationFailure),
            "{mech}"
        );
    }
    // proxyservers may proxy too.
    let mut s = settings(vec![PasswordCheck::File(Arc::new(password_file()))]);
    s.proxy_servers = vec!["alice".into()];
    let auth = Authenticator::new(s).unwrap();
    let r = run(
        &auth,
        client("PLAIN", "alice", "alicepw", Some("bob")),
        false,
    );
    assert_eq!(r.server, success("alice", Some("bob")));
}

#[test]
fn empty_and_missing_initial_responses() {
    let auth = authenticator();
    let start = |args: &str| {
        let request = Authenticate::parse(Some(args.as_bytes())).unwrap();
        auth.start(
            &request.mechanism,
            request.initial_response.as_deref(),
            false,
        )
        .unwrap()
    };
    // PLAIN `=`: Cyrus runs the mechanism on an empty message: bad protocol.
    let (_, step) = start("PLAIN =");
    assert_eq!(step, Step::Failure(AuthFailure::BadProtocol));
    assert_eq!(AuthFailure::BadProtocol.reply(), "NO bad protocol / cancel");

    // PLAIN without: an empty challenge (`+ `), then the message.
    let (mut ex, step) = start("PLAIN");
    assert_eq!(step, Step::Challenge(Vec::new()));
    let mut out = Vec::new();
    sasl::encode_challenge(b"", &mut out);
    assert_eq!(out, b"+ \r\n");
    assert_eq!(ex.step(b"\0repl\0secret"), success("repl", None));

    // LOGIN with `=` or nothing: asks for the username; with one: for the password.
    for args in ["LOGIN =", "LOGIN", "login"] {
        let (mut ex, step) = start(args);
        assert_eq!(step, Step::Challenge(b"Username:".to_vec()), "{args}");
        assert_eq!(ex.step(b"repl"), Step::Challenge(b"Password:".to_vec()));
        assert_eq!(ex.step(b"secret"), success("repl", None));
    }
    let (mut ex, step) = start("LOGIN cmVwbA==");
    assert_eq!(step, Step::Challenge(b"Password:".to_vec()));
    assert_eq!(ex.step(b"secret"), success("repl", None));

    // SCRAM with `=` or nothing: an empty challenge, then the client-first message.
    for args in ["SCRAM-SHA-256 =", "SCRAM-SHA-1"] {
        let (mut ex, step) = start(args);
        assert_eq!(step, Step::Challenge(Vec::new()), "{args}");
        let mut c = client(args.split(' ').next().unwrap(), "repl", "secret", None);
        let Step::Challenge(server_first) = ex.step(c.initial_response().unwrap()) else {
            panic!("no server-first");
        };
        let ClientStep::Response(client_final) = c.step(&server_first).unwrap() else {
            panic!("no client-final");
        };
        let Step::Challenge(server_final) = ex.step(&client_final) else {
            panic!("no server-final");
        };
        assert_eq!(c.step(&server_final), Ok(ClientStep::Done));
        assert_eq!(ex.step(b""), success("repl", None));
        c.finish().unwrap();
    }
}

#[test]
fn cancel() {
    let auth = authenticator();
    let (mut ex, step) = auth.start("LOGIN", None, false).unwrap();
    assert!(matches!(step, Step::Challenge(_)));
    let mut client_line = Vec::new();
    sasl::encode_cancel(&mut client_line);
    let err = sasl::parse_response(&client_line).unwrap_err();
    assert_eq!(err, sasl::SaslError::Canceled);
    let step = ex.cancel();
    assert_eq!(step, Step::Failure(AuthFailure::Canceled));
    assert_eq!(
        AuthFailure::Canceled.reply(),
        "BAD Client canceled authentication"
    );
    assert_eq!(
        err.server_reply(),
        Some("BAD Client canceled authentication")
    );
    assert!(ex.is_finished());
    assert_eq!(ex.step(b"repl"), Step::Failure(AuthFailure::BadProtocol));
}

#[test]
fn mechanism_lists() {
    let file = Arc::new(password_file());
    let make = |allow: bool, list: Option<&str>, checks: Vec<PasswordCheck>| {
        let mut s = settings(checks);
        s.allow_plaintext = allow;
        s.mech_list = list.map(|l| l.split_whitespace().map(str::to_owned).collect());
        Authenticator::new(s).unwrap()
    };
    let files = || vec![PasswordCheck::File(Arc::clone(&file))];

    let auth = make(true, None, files());
    let all = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "LOGIN"];
    assert_eq!(auth.mechanisms(false), all);
    assert_eq!(auth.mechanisms(true), all);

    let auth = make(false, None, files());
    assert_eq!(auth.mechanisms(false), ["SCRAM-SHA-256", "SCRAM-SHA-1"]);
    assert_eq!(auth.mechanisms(true), all);
    assert_eq!(
        auth.start("PLAIN", Some(b"\0repl\0secret"), false)
            .unwrap_err(),
        AuthFailure::EncryptionNeeded
    );
    assert_eq!(
        AuthFailure::EncryptionNeeded.reply(),
        "NO encryption needed to use mechanism"
    );
    let (_, step) = auth.start("PLAIN", Some(b"\0repl\0secret"), true).unwrap();
    assert_eq!(step, success("repl", None));

    // sasl_mech_list: its order, unknown and repeated names dropped.
    let auth = make(
        true,
        Some("LOGIN plain DIGEST-MD5 scram-sha-1 PLAIN"),
        files(),
    );
    assert_eq!(auth.mechanisms(false), ["LOGIN", "PLAIN", "SCRAM-SHA-1"]);
    assert_eq!(
        auth.start("SCRAM-SHA-256", None, false).unwrap_err(),
        AuthFailure::NoMechanism
    );
    // §1.5's observation: `allowplaintext: no`, `sasl_mech_list: PLAIN LOGIN` → no SASL
    // line before TLS, `PLAIN LOGIN` after.
    let auth = make(false, Some("PLAIN LOGIN"), files());
    assert!(auth.mechanisms(false).is_empty());
    assert_eq!(auth.mechanisms(true), ["PLAIN", "LOGIN"]);

    // saslauthd alone: the server never sees a verifier, so no SCRAM.
    let auth = make(
        true,
        None,
        vec![PasswordCheck::Saslauthd(Saslauthd::default())],
    );
    assert_eq!(auth.mechanisms(false), ["PLAIN", "LOGIN"]);
    assert_eq!(
        auth.start("SCRAM-SHA-1", None, false).unwrap_err(),
        AuthFailure::NoMechanism
    );

    assert_eq!(
        make(true, None, files())
            .start("CRAM-MD5", None, false)
            .unwrap_err(),
        AuthFailure::NoMechanism
    );
    assert!(Authenticator::new(AuthSettings::new(SERVERNAME)).is_err());
}

#[test]
fn realm_equivalence() {
    let auth = authenticator();
    for mech in ALL {
        for login in ["repluser@replica.test", "repluser@REPLICA.Test"] {
            let r = run(&auth, client(mech, login, "secret", None), false);
            assert_eq!(r.server, success("repluser", None), "{mech} {login}");
            assert_eq!(r.client, Ok(()));
        }
        // Stored as bob@replica.test, logging in as bob or bob@replica.test.
        for login in ["bob", "bob@replica.test"] {
            let r = run(&auth, client(mech, login, "bobpw", None), false);
            assert_eq!(r.server, success("bob", None), "{mech} {login}");
        }
        // Another realm is another user.
        let r = run(
            &auth,
            client(mech, "repluser@other.test", "secret", None),
            false,
        );
        assert_eq!(r.server, Step::Failure(AuthFailure::UserNotFound), "{mech}");
    }
    assert_eq!(auth.canonical_userid("a@replica.test"), "a");
    assert_eq!(auth.canonical_userid("@replica.test"), "@replica.test");
    assert_eq!(auth.canonical_userid("a@b"), "a@b");
}

#[test]
fn scram_with_only_one_verifier() {
    let mut file = PasswordFile::new("/nonexistent/p");
    let salt = STANDARD.decode("QSXCR+Q6sek8bf92").unwrap();
    file.insert(
        "user",
        [ScramSecret::with_salt(ScramHash::Sha1, b"pencil", &salt, 4096).unwrap()],
    )
    .unwrap();
    let auth = Authenticator::new(settings(vec![PasswordCheck::File(Arc::new(file))])).unwrap();
    let r = run(&auth, client("SCRAM-SHA-1", "user", "pencil", None), false);
    assert_eq!(r.server, success("user", None));
    let r = run(
        &auth,
        client("SCRAM-SHA-256", "user", "pencil", None),
        false,
    );
    assert_eq!(r.server, Step::Failure(AuthFailure::NoVerifier));
    assert_eq!(
        r.wire.last().unwrap(),
        "NO user exists, but no verifier for user"
    );
    let r = run(&auth, client("PLAIN", "user", "pencil", None), false);
    assert_eq!(r.server, success("user", None));
}

// ---------------------------------------------------------------------------------------
// SCRAM against RFC test vectors, with a SCRAM implementation written here from the RFC
// (independent of rsasl) on the other side.

fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn sha1(data: &[u8]) -> Vec<u8> {
    use sha1::Digest;
    sha1::Sha1::digest(data).to_vec()
}

/// RFC 5803 §4's stored entry for user "user", password "pencil" (RFC 5802's example).
const RFC5803_LINE: &str = "user:SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=\n";
const RFC_CLIENT_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";

#[test]
fn scram_server_against_rfc5802_client() {
    let file = PasswordFile::parse("/nonexistent/p", RFC5803_LINE.as_bytes()).unwrap();
    let auth = Authenticator::new(settings(vec![PasswordCheck::File(Arc::new(file))])).unwrap();
    let client_first_bare = format!("n=user,r={RFC_CLIENT_NONCE}");
    let (mut ex, step) = auth
        .start(
            "SCRAM-SHA-1",
            Some(format!("n,,{client_first_bare}").as_bytes()),
            false,
        )
        .unwrap();
    let Step::Challenge(server_first) = step else {
        panic!("{step:?}");
    };
    let server_first = String::from_utf8(server_first).unwrap();
    let nonce = server_first
        .strip_prefix("r=")
        .and_then(|s| s.split(',').next())
        .unwrap();
    assert!(nonce.starts_with(RFC_CLIENT_NONCE) && nonce.len() > RFC_CLIENT_NONCE.len());
    assert!(
        server_first.ends_with(",s=QSXCR+Q6sek8bf92,i=4096"),
        "{server_first}"
    );

    // The client's computation, from RFC 5802 §3 and the password.
    let salt = STANDARD.decode("QSXCR+Q6sek8bf92").unwrap();
    let mut salted = [0u8; 20];
    pbkdf2::pbkdf2::<Hmac<sha1::Sha1>>(b"pencil", &salt, 4096, &mut salted).unwrap();
    let client_key = hmac_sha1(&salted, b"Client Key");
    let stored_key = sha1(&client_key);
    let final_without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{client_first_bare},{server_first},{final_without_proof}");
    let signature = hmac_sha1(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let client_final = format!("{final_without_proof},p={}", STANDARD.encode(&proof));

    let Step::Challenge(server_final) = ex.step(client_final.as_bytes()) else {
        panic!("no server-final");
    };
    let server_key = hmac_sha1(&salted, b"Server Key");
    let expected = hmac_sha1(&server_key, auth_message.as_bytes());
    assert_eq!(
        String::from_utf8(server_final).unwrap(),
        format!("v={}", STANDARD.encode(expected))
    );
    assert_eq!(ex.step(b""), success("user", None));

    // A proof off by one bit fails without a server-final message.
    let (mut ex, Step::Challenge(server_first)) = auth
        .start(
            "SCRAM-SHA-1",
            Some(format!("n,,{client_first_bare}").as_bytes()),
            false,
        )
        .unwrap()
    else {
        panic!()
    };
    let server_first = String::from_utf8(server_first).unwrap();
    let nonce = server_first[2..].split(',').next().unwrap();
    let final_without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{client_first_bare},{server_first},{final_without_proof}");
    let signature = hmac_sha1(&stored_key, auth_message.as_bytes());
    let mut proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    proof[0] ^= 1;
    let client_final = format!("{final_without_proof},p={}", STANDARD.encode(&proof));
    assert_eq!(
        ex.step(client_final.as_bytes()),
        Step::Failure(AuthFailure::AuthenticationFailure)
    );
}

/// A server written here from RFC 5802 with RFC 5803's stored keys, against the client.
#[test]
fn scram_client_against_rfc5802_server() {
    let stored_key = STANDARD.decode("6dlGYMOdZcOPutkcNY8U2g7vK9Y=").unwrap();
    let server_key = STANDARD.decode("D+CSWLOshSulAsxiupA+qs2/fTE=").unwrap();
    let server_nonce = "3rfcNHYJY1ZVvWVs7j";

    for tamper in [false, true] {
        let mut c = ClientExchange::new(
            &["SCRAM-SHA-1".to_owned()],
            false,
            false,
            "user",
            "pencil",
            None,
        )
        .unwrap();
        assert_eq!(c.mechanism(), Mechanism::ScramSha1);
        let client_first = String::from_utf8(c.initial_response().unwrap().to_vec()).unwrap();
        let client_first_bare = client_first.strip_prefix("n,,").unwrap();
        let client_nonce = client_first_bare.strip_prefix("n=user,r=").unwrap();
        let server_first = format!("r={client_nonce}{server_nonce},s=QSXCR+Q6sek8bf92,i=4096");
        let ClientStep::Response(client_final) = c.step(server_first.as_bytes()).unwrap() else {
            panic!("no client-final");
        };
        let client_final = String::from_utf8(client_final).unwrap();
        let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
        assert_eq!(
            without_proof,
            format!("c=biws,r={client_nonce}{server_nonce}")
        );
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        // Verify the proof the way a server does: ClientKey = proof XOR signature.
        let signature = hmac_sha1(&stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = STANDARD
            .decode(proof)
            .unwrap()
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(sha1(&client_key), stored_key);
        let mut verifier = hmac_sha1(&server_key, auth_message.as_bytes());
        if tamper {
            verifier[5] ^= 0x80;
            assert_eq!(
                c.step(format!("v={}", STANDARD.encode(&verifier)).as_bytes()),
                Err(ClientError::ServerNotAuthenticated)
            );
            assert_eq!(c.finish(), Err(ClientError::Incomplete));
        } else {
            assert_eq!(
                c.step(format!("v={}", STANDARD.encode(&verifier)).as_bytes()),
                Ok(ClientStep::Done)
            );
            c.finish().unwrap();
            assert_eq!(c.step(b"again"), Err(ClientError::UnexpectedChallenge));
        }
    }

    // A server that answers OK without proving itself is refused.
    let mut c =
        ClientExchange::new(&["SCRAM-SHA-256".to_owned()], false, false, "u", "p", None).unwrap();
    assert_eq!(c.finish(), Err(ClientError::Incomplete));
    // A server error value is reported.
    let mut c = ClientExchange::new(
        &["SCRAM-SHA-1".to_owned()],
        false,
        false,
        "user",
        "pencil",
        None,
    )
    .unwrap();
    let nonce = String::from_utf8(c.initial_response().unwrap().to_vec())
        .unwrap()
        .strip_prefix("n,,n=user,r=")
        .unwrap()
        .to_owned();
    c.step(format!("r={nonce}x,s=QSXCR+Q6sek8bf92,i=4096").as_bytes())
        .unwrap();
    assert_eq!(
        c.step(b"e=invalid-proof"),
        Err(ClientError::ServerError("invalid-proof".into()))
    );
}

// ---------------------------------------------------------------------------------------
// saslauthd behind the server, with a fake daemon checking the bytes.

fn fake_saslauthd(
    replies: Vec<&'static [u8]>,
) -> (
    tempfile::TempDir,
    Saslauthd,
    thread::JoinHandle<Vec<Vec<u8>>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mux");
    let listener = UnixListener::bind(&path).unwrap();
    let handle = thread::spawn(move || {
        let mut seen = Vec::new();
        for reply in replies {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            for _ in 0..4 {
                let mut len = [0u8; 2];
                conn.read_exact(&mut len).unwrap();
                let mut field = vec![0u8; usize::from(u16::from_be_bytes(len))];
                conn.read_exact(&mut field).unwrap();
                request.extend_from_slice(&len);
                request.extend_from_slice(&field);
            }
            conn.write_all(reply).unwrap();
            seen.push(request);
        }
        seen
    });
    (dir, Saslauthd::new(path), handle)
}

#[test]
fn saslauthd_behind_the_server() {
    let (_dir, daemon, handle) = fake_saslauthd(vec![b"\x00\x02OK", b"\x00\x02NO", b"\x00\x02OK"]);
    let auth = Authenticator::new(settings(vec![PasswordCheck::Saslauthd(daemon)])).unwrap();
    assert_eq!(auth.mechanisms(false), ["PLAIN", "LOGIN"]);

    let r = run(&auth, client("PLAIN", "repluser", "secret", None), false);
    assert_eq!(r.server, success("repluser", None));
    let r = run(&auth, client("LOGIN", "repluser", "wrong", None), false);
    assert_eq!(r.server, Step::Failure(AuthFailure::AuthenticationFailure));
    let r = run(
        &auth,
        client("PLAIN", "repluser@replica.test", "secret", None),
        false,
    );
    assert_eq!(r.server, success("repluser", None));

    let seen = handle.join().unwrap();
    assert_eq!(
        seen[0],
        b"\x00\x08repluser\x00\x06secret\x00\x05csync\x00\x00"
    );
    assert_eq!(
        seen[1],
        b"\x00\x08repluser\x00\x05wrong\x00\x05csync\x00\x00"
    );
    assert_eq!(
        seen[2],
        b"\x00\x08repluser\x00\x06secret\x00\x05csync\x00\x0creplica.test"
    );
}

#[test]
fn saslauthd_after_the_password_file() {
    let (dir, daemon, handle) = fake_saslauthd(vec![b"\x00\x02OK"]);
    let auth = Authenticator::new(settings(vec![
        PasswordCheck::File(Arc::new(password_file())),
        PasswordCheck::Saslauthd(daemon),
    ]))
    .unwrap();
    assert_eq!(auth.mechanisms(false).len(), 4);
    // In the file: saslauthd is not asked.
    let r = run(&auth, client("PLAIN", "repl", "secret", None), false);
    assert_eq!(r.server, success("repl", None));
    // Not in the file: saslauthd decides.
    let r = run(&auth, client("PLAIN", "carol", "carolpw", None), false);
    assert_eq!(r.server, success("carol", None));
    assert_eq!(handle.join().unwrap().len(), 1);

    // saslauthd gone: `NO generic failure` (Cyrus's SASL_FAIL text).
    drop(dir);
    let r = run(&auth, client("PLAIN", "carol", "carolpw", None), false);
    assert_eq!(r.server, Step::Failure(AuthFailure::GenericFailure));
    assert_eq!(r.wire.last().unwrap(), "NO generic failure");
}

// ---------------------------------------------------------------------------------------
// Hostile client messages: refused, never a panic.

#[test]
fn malformed_client_messages() {
    let auth = authenticator();
    let bad_scram_first: &[&[u8]] = &[
        b"x",
        b"n",
        b"n,",
        b"n,a",
        b"n,a,n=u,r=x",
        b"n,,",
        b"n,,n",
        b"n,,x=u,r=a",
        b"n,,n=repl,r",
        b"n,,n=repl,r=a,",
        b"p=tls-unique,,n=repl,r=abc",
        b"n,,m=ext,n=repl,r=abc",
        b"\xff\xfe",
    ];
    for mech in ["SCRAM-SHA-256", "SCRAM-SHA-1"] {
        for msg in bad_scram_first {
            let (mut ex, step) = auth.start(mech, Some(msg), false).unwrap();
            assert_eq!(step, Step::Failure(AuthFailure::BadProtocol), "{msg:?}");
            assert_eq!(ex.step(msg), Step::Failure(AuthFailure::BadProtocol));
        }
        let bad_scram_final: &[&[u8]] = &[
            b"",
            b"c",
            b"c=biws",
            b"c=biws,r",
            b"c=biws,r=x,p",
            b"c=biws,r=x,p=QQ==,",
            b"c=biws,r=x,p=QQ==,x",
            b"c=biws,r=x,,p=QQ==",
            b"c=biws,r=wrongnonce,p=QQ==",
            b"c=eSws,r=x,p=QQ==",
        ];
        for msg in bad_scram_final {
            let (mut ex, _) = auth.start(mech, Some(b"n,,n=repl,r=abc"), false).unwrap();
            let step = ex.step(msg);
            assert!(
                matches!(
                    step,
                    Step::Failure(AuthFailure::BadProtocol | AuthFailure::AuthenticationFailure)
                ),
                "{msg:?}: {step:?}"
            );
        }
    }
    for msg in [
        &b""[..],
        b"\0",
        b"\0\0",
        b"a\0b",
        b"\0a\0b\0c",
        b"\0\0pw",
        b"\0u\0",
    ] {
        let (_, step) = auth.start("PLAIN", Some(msg), false).unwrap();
        assert_eq!(step, Step::Failure(AuthFailure::BadProtocol), "{msg:?}");
    }
    let (mut ex, _) = auth.start("LOGIN", None, false).unwrap();
    assert_eq!(
        ex.step(&[b'a'; 1025]),
        Step::Failure(AuthFailure::BadProtocol)
    );
    let (mut ex, _) = auth.start("LOGIN", None, false).unwrap();
    assert_eq!(ex.step(b"\xff"), Step::Failure(AuthFailure::BadProtocol));
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// Built once: deriving the file's verifiers costs PBKDF2 runs.
    fn shared() -> &'static Authenticator {
        static AUTH: OnceLock<Authenticator> = OnceLock::new();
        AUTH.get_or_init(authenticator)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any bytes at any stage of any mechanism: an answer, never a panic.
        #[test]
        fn arbitrary_client_bytes(
            mech in prop::sample::select(&ALL[..]),
            ir in prop::option::of(prop::collection::vec(any::<u8>(), 0..80)),
            steps in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..4),
        ) {
            let auth = shared();
            if let Ok((mut ex, mut step)) = auth.start(mech, ir.as_deref(), true) {
                for s in &steps {
                    if !matches!(step, Step::Challenge(_)) {
                        break;
                    }
                    step = ex.step(s);
                }
            }
        }

        /// SCRAM-shaped messages with arbitrary attribute contents.
        #[test]
        fn scram_shaped_bytes(
            user in "[a-z=,]{0,6}",
            nonce in "[ -~]{0,8}",
            tail in "[a-z=,]{0,8}",
            final_msg in "[a-z=,A-Z0-9+/]{0,40}",
        ) {
            let auth = shared();
            let first = format!("n,,n={user},r={nonce}{tail}");
            let (mut ex, step) = auth.start("SCRAM-SHA-256", Some(first.as_bytes()), true).unwrap();
            if matches!(step, Step::Challenge(_)) {
                let _ = ex.step(final_msg.as_bytes());
            }
        }
    }
}
