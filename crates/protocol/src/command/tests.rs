use super::*;
use crate::decode::{CollectFiles, Decoder, Mode};
use crate::encode::LiteralStyle;

fn parse(input: &[u8]) -> Result<Command, CommandError> {
    let mut dec = Decoder::new(Mode::Commands);
    let feed = dec.feed(input, &mut CollectFiles::default()).unwrap();
    assert!(
        feed.complete,
        "incomplete: {:?}",
        String::from_utf8_lossy(input)
    );
    assert_eq!(feed.consumed, input.len());
    Command::parse(dec.line().unwrap())
}

/// Parses, re-encodes in client style, and checks the bytes are unchanged.
fn round_trip(input: &str) -> Command {
    let cmd = parse(input.as_bytes()).unwrap_or_else(|e| panic!("{input}: {e:?}"));
    let mut enc = Encoder::new(LiteralStyle::NonSynchronizing);
    cmd.encode(&mut enc);
    assert_eq!(String::from_utf8_lossy(enc.bytes()), input);
    cmd
}

#[test]
fn session_commands() {
    assert_eq!(round_trip("NOOP\r\n"), Command::Noop);
    assert_eq!(round_trip("RESTART\r\n"), Command::Restart);
    assert_eq!(round_trip("EXIT\r\n"), Command::Exit);
    assert_eq!(round_trip("STARTTLS\r\n"), Command::StartTls);
    assert_eq!(
        round_trip("AUTHENTICATE PLAIN AHJlcGwAc2VjcmV0\r\n"),
        Command::Authenticate {
            arguments: "PLAIN AHJlcGwAc2VjcmV0".into()
        }
    );
    assert_eq!(
        round_trip("COMPRESS DEFLATE\r\n"),
        Command::Compress {
            algorithm: "DEFLATE".into()
        }
    );
    assert_eq!(parse(b"noop\r\n"), Ok(Command::Noop));
}

#[test]
fn session_command_errors_are_cyrus_replies() {
    let reply = |input: &[u8]| parse(input).unwrap_err().reply;
    assert_eq!(reply(b"\r\n"), "BAD Null command");
    assert_eq!(
        reply(b"FOO bar\r\n"),
        "BAD IMAP_PROTOCOL_ERROR Unrecognized command"
    );
    assert_eq!(
        reply(b"NOOP x\r\n"),
        "BAD Unexpected extra arguments to Noop"
    );
    assert_eq!(
        reply(b"exit now\r\n"),
        "BAD Unexpected extra arguments to Exit"
    );
    assert_eq!(
        reply(b"COMPRESS\r\n"),
        "BAD Missing required argument to Compress"
    );
    assert_eq!(
        reply(b"AUTHENTICATE\r\n"),
        "BAD Missing required argument to Authenticate"
    );
    assert_eq!(
        reply(b"GET USER john \r\n"),
        "BAD IMAP_PROTOCOL_ERROR Failed to parse GET line"
    );
    assert_eq!(
        reply(b"apply\r\n"),
        "BAD IMAP_PROTOCOL_ERROR Failed to parse APPLY line"
    );
    assert_eq!(
        reply(b"GET FOO x\r\n"),
        "NO IMAP_PROTOCOL_ERROR Protocol error"
    );
    assert_eq!(
        reply(b"APPLY FOO %()\r\n"),
        "NO IMAP_PROTOCOL_ERROR Protocol error"
    );
    assert_eq!(
        reply(b"APPLY MAILBOX %(UNIQUEID x)\r\n"),
        "NO IMAP_PROTOCOL_BAD_PARAMETERS"
    );
    assert_eq!(
        reply(b"APPLY RESERVE %(PARTITION default MBOXNAME (user.john) GUID (xyz))\r\n"),
        "NO IMAP_PROTOCOL_BAD_PARAMETERS"
    );
    assert!(needs_auth(b"get") && needs_auth(b"Apply") && !needs_auth(b"NOOP"));
}

#[test]
fn get_subcommands() {
    assert_eq!(
        round_trip("GET USER john\r\n"),
        Command::Get(GetCommand::User("john".into()))
    );
    round_trip(
        "GET MAILBOXES (\"user.john.Other Stuff\" user.john.Archive user.john.Sent DELETED.user.john.Sent.6B0218D3)\r\n",
    );
    round_trip("GET UNIQUEIDS (c200jgj6thb3ssu8ep4jb0il)\r\n");
    round_trip("GET FULLMAILBOX user.john\r\n");
    round_trip("GET META john\r\n");
    round_trip("GET QUOTA user.john\r\n");
    round_trip("GET ANNOTATION \"\"\r\n");
    let fetch = round_trip(
        "GET FETCH %(MBOXNAME user.john PARTITION default UNIQUEID c200jgj6thb3ssu8ep4jb0il GUID edaa9f52a858bda063269730eb4f9881ad296e5e UID 1)\r\n",
    );
    let Command::Get(GetCommand::Fetch(f)) = fetch else {
        panic!()
    };
    assert_eq!(f.uid, 1);
    round_trip("GET FETCH_SIEVE %(USERID john FILENAME myfilter.script)\r\n");
    // Subcommand names are case-insensitive; kvlist keys are not.
    assert!(parse(b"get user john\r\n").is_ok());
    assert_eq!(
        parse(b"GET FETCH_SIEVE %(userid john FILENAME x)\r\n")
            .unwrap_err()
            .reply,
        "NO IMAP_PROTOCOL_BAD_PARAMETERS"
    );
}

#[test]
fn apply_subcommands_from_the_spec() {
    let reserve = round_trip(
        "APPLY RESERVE %(PARTITION default MBOXNAME (user.john user.john.Sent) GUID (edaa9f52a858bda063269730eb4f9881ad296e5e a5f0fcfe63afae3c2c053ba493b705b452261b27))\r\n",
    );
    let Command::Apply(ApplyCommand::Reserve(r)) = reserve else {
        panic!()
    };
    assert_eq!(r.guids.len(), 2);
    round_trip("APPLY UNMAILBOX user.john.Sent\r\n");
    assert_eq!(
        round_trip("APPLY LOCAL_UNMAILBOX user.john.Sent\r\n"),
        Command::Apply(ApplyCommand::Unmailbox {
            local: true,
            mboxname: "user.john.Sent".into()
        })
    );
    round_trip(
        "APPLY RENAME %(OLDMBOXNAME \"user.john.Other Stuff\" NEWMBOXNAME user.john.Archive PARTITION default UIDVALIDITY 1795299529)\r\n",
    );
    round_trip("APPLY RENAME %(OLDMBOXNAME a NEWMBOXNAME b PARTITION default)\r\n");
    round_trip(
        "APPLY EXPUNGE %(MBOXNAME user.john UNIQUEID c200jgj6thb3ssu8ep4jb0il UID (4 7))\r\n",
    );
    round_trip(
        "APPLY SEEN %(USERID john UNIQUEID pehbuvnnaedto8n5yeipsmna LASTREAD 1795299531 LASTUID 1 LASTCHANGE 1795299531 SEENUIDS 1)\r\n",
    );
    round_trip("APPLY SUB %(USERID john MBOXNAME user.john.Sent)\r\n");
    round_trip("APPLY UNSUB %(USERID john MBOXNAME user.john.Sent)\r\n");
    round_trip("APPLY QUOTA %(ROOT user.john LIMIT 10240 STORAGE 10240 MESSAGE 500 MODSEQ 6)\r\n");
    round_trip(
        "APPLY QUOTA %(ROOT user.john LIMIT 4294967295 X-ANNOTATION-STORAGE 5 X-NUM-FOLDERS 9)\r\n",
    );
    round_trip("APPLY UNQUOTA user.john\r\n");
    round_trip("APPLY ANNOTATION %(MBOXNAME user.john ENTRY /comment USERID \"\" VALUE hello)\r\n");
    round_trip("APPLY UNANNOTATION %(MBOXNAME user.john ENTRY /comment USERID \"\")\r\n");
    round_trip(
        "APPLY ANNOTATION %(MBOXNAME \"\" ENTRY /comment USERID \"\" VALUE {12+}\r\nline1\r\nline2)\r\n",
    );
    round_trip(
        "APPLY SIEVE %(USERID john FILENAME myfilter.script LAST_UPDATE 1795299657 CONTENT {86+}\r\nrequire \"fileinto\";\r\nif header :contains \"subject\" \"spam\" { fileinto \"INBOX.Junk\"; }\r\n)\r\n",
    );
    round_trip("APPLY UNSIEVE %(USERID john FILENAME myfilter.script)\r\n");
    round_trip("APPLY ACTIVATE_SIEVE %(USERID john FILENAME myfilter.bc)\r\n");
    round_trip("APPLY UNACTIVATE_SIEVE %(USERID john)\r\n");
    round_trip("APPLY UNUSER frank\r\n");
    round_trip("APPLY LOCAL_UNUSER frank\r\n");
    assert_eq!(
        round_trip("APPLY FORCE %()\r\n"),
        Command::Apply(ApplyCommand::Force)
    );
    round_trip("APPLY CAPABILITIES (SIEVE-MAILBOX)\r\n");
}

#[test]
fn apply_mailbox_full_and_placeholder() {
    let line = "APPLY MAILBOX %(UNIQUEID c200jgj6thb3ssu8ep4jb0il MBOXNAME user.john SYNC_CRC 755699592 SYNC_CRC_ANNOT 3101509256 LAST_UID 2 HIGHESTMODSEQ 3 RECENTUID 2 RECENTTIME 1795299501 LAST_APPENDDATE 1795299501 POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 1795299501 PARTITION default ACL \"john\tlrswipkxtecdan\t\" OPTIONS P CREATEDMODSEQ 1 FOLDERMODSEQ 1 RECORD (%(UID 1 MODSEQ 2 LAST_UPDATED 1795299500 FLAGS () INTERNALDATE 1700000100 SIZE 162 GUID edaa9f52a858bda063269730eb4f9881ad296e5e ANNOTATIONS (%(ENTRY /vendor/cmu/cyrus-imapd/savedate USERID \"\" MODSEQ 0 VALUE 1795299500) %(ENTRY /vendor/cmu/cyrus-imapd/createdmodseq USERID \"\" MODSEQ 0 VALUE 2))) %(UID 2 MODSEQ 6 LAST_UPDATED 1795299520 FLAGS (\\Deleted \\Expunged) INTERNALDATE 1700000250 SIZE 163 GUID a5f0fcfe63afae3c2c053ba493b705b452261b27 ANNOTATIONS (%(ENTRY /comment USERID john MODSEQ 7 VALUE \"my note\") %(ENTRY /vendor/cmu/cyrus-imapd/thrid USERID \"\" MODSEQ 0 VALUE 00000000deadbeef) %(ENTRY /vendor/cmu/cyrus-imapd/savedate USERID \"\" MODSEQ 0 VALUE 1795299501) %(ENTRY /vendor/cmu/cyrus-imapd/createdmodseq USERID \"\" MODSEQ 0 VALUE 3)))))\r\n";
    let Command::Apply(ApplyCommand::Mailbox {
        local: false,
        mailbox,
    }) = round_trip(line)
    else {
        panic!()
    };
    let records = mailbox.records.as_ref().unwrap();
    assert_eq!(records[0].savedate, 1795299500);
    assert_eq!(records[0].createdmodseq, 2);
    assert!(records[1].is_expunged());
    assert_eq!(records[1].thrid, 0xdeadbeef);
    assert_eq!(records[1].annotations.len(), 1);
    assert_eq!(mailbox.acl, "john\tlrswipkxtecdan\t");

    let placeholder = round_trip(
        "APPLY MAILBOX %(UNIQUEID x1 MBOXNAME user.john.a MBOXTYPE ei HIGHESTMODSEQ 5 CREATEDMODSEQ 1 FOLDERMODSEQ 5)\r\n",
    );
    let Command::Apply(ApplyCommand::Mailbox { mailbox, .. }) = placeholder else {
        panic!()
    };
    assert!(mailbox.is_placeholder());

    // A full mailbox needs RECORD; a record missing GUID is a protocol error.
    assert_eq!(
        parse(line.replace(" RECORD (", " XRECORD (").as_bytes())
            .unwrap_err()
            .reply,
        "NO IMAP_PROTOCOL_BAD_PARAMETERS"
    );
    assert_eq!(
        parse(
            line.replace("GUID edaa9f52a858bda063269730eb4f9881ad296e5e ", "")
                .as_bytes()
        )
        .unwrap_err()
        .reply,
        "NO IMAP_PROTOCOL_ERROR Protocol error"
    );
    // Unknown keys never fail a parse (later Cyrus versions add VERSION, JMAPID...).
    assert!(
        parse(
            line.replace("OPTIONS P", "OPTIONS P VERSION 20 JMAPID x")
                .as_bytes()
        )
        .is_ok()
    );
}

#[test]
fn apply_message_lists_file_headers() {
    let input = b"APPLY MESSAGE (%{default edaa9f52a858bda063269730eb4f9881ad296e5e 3}\r\nabc NIL %{default a5f0fcfe63afae3c2c053ba493b705b452261b27 1}\r\nd)\r\n";
    let Command::Apply(ApplyCommand::Message(files)) = parse(input).unwrap() else {
        panic!()
    };
    assert_eq!(files.len(), 2);
    assert_eq!(files[1].index, 1);
    assert_eq!(files[1].size, 1);
    let mut enc = Encoder::new(LiteralStyle::NonSynchronizing);
    encode_apply_message_start(&mut enc);
    enc.file_header(b"default", &files[0].guid, 3).raw(b"abc");
    enc.file_header(b"default", &files[1].guid, 1).raw(b"d");
    encode_apply_message_end(&mut enc);
    assert_eq!(
        enc.bytes(),
        &b"APPLY MESSAGE (%{default edaa9f52a858bda063269730eb4f9881ad296e5e 3}\r\nabc %{default a5f0fcfe63afae3c2c053ba493b705b452261b27 1}\r\nd)\r\n"[..]
    );
}

#[test]
fn restore_mailbox_needs_only_mboxname() {
    let Command::Restore(RestoreCommand::Mailbox { mailbox, .. }) =
        parse(b"RESTORE MAILBOX %(MBOXNAME user.john RECORD ())\r\n").unwrap()
    else {
        panic!()
    };
    assert_eq!(mailbox.mboxname, "user.john");
    assert_eq!(
        parse(b"RESTORE FOO %()\r\n").unwrap_err().reply,
        "NO IMAP_PROTOCOL_ERROR Protocol error"
    );
}

/// Decodes `input` with its RECORD items handed out one at a time and read with
/// `Record::decode_at`, as a server that streams does, then parses the line with
/// `parse_streamed_mailbox`. Returns the description with the records put back.
fn parse_streamed(input: &[u8]) -> Result<Command, CommandError> {
    let mut dec = Decoder::new(Mode::Commands);
    dec.stream_records(1);
    let mut records = Vec::new();
    let mut first_error = None;
    let mut read = |batch: crate::RecordBatch<'_>| {
        for (i, item) in batch.records.children().enumerate() {
            match crate::Record::decode_at(item, batch.first_index + i) {
                Ok(r) => records.push(r),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    };
    let mut pos = 0;
    loop {
        let feed = dec
            .feed(&input[pos..], &mut CollectFiles::default())
            .unwrap();
        pos += feed.consumed;
        if feed.records {
            read(dec.record_batch().unwrap());
        }
        if feed.complete {
            break;
        }
    }
    assert!(dec.records_released() > 0, "the line did not stream");
    read(dec.record_batch().unwrap());
    let outcome = first_error.map_or(Ok(()), Err);
    let Body::Dlist(root) = dec.line().unwrap().body else {
        panic!("not a dlist line")
    };
    let local = root.key().unwrap().eq_ignore_ascii_case(b"LOCAL_MAILBOX");
    let mut mailbox = parse_streamed_mailbox(dec.line().unwrap(), outcome)?;
    assert_eq!(mailbox.records, Some(Vec::new()));
    mailbox.records = Some(records);
    Ok(Command::Apply(ApplyCommand::Mailbox {
        local,
        mailbox: Box::new(mailbox),
    }))
}

#[test]
fn a_streamed_apply_mailbox_parses_as_the_whole_line() {
    let good = "%(UID 1 MODSEQ 2 LAST_UPDATED 3 FLAGS (\\Seen) INTERNALDATE 4 SIZE 5 \
                GUID 0123456789012345678901234567890123456789)";
    let bad = "%(UID 2 MODSEQ 2 LAST_UPDATED 3 FLAGS () INTERNALDATE 4 SIZE 5)";
    let head = "UNIQUEID u1 MBOXNAME user.john LAST_UID 2 HIGHESTMODSEQ 2 RECENTUID 0 \
                RECENTTIME 0 LAST_APPENDDATE 0 POP3_LAST_LOGIN 0 UIDVALIDITY 7 \
                PARTITION default ACL \"\" OPTIONS P";
    let lines = [
        format!("APPLY MAILBOX %({head} RECORD ({good} {good}))\r\n"),
        format!("APPLY local_mailbox %({head} RECORD ({good} {good}))\r\n"),
        // Keys after RECORD count as they would in a whole line.
        format!(
            "APPLY MAILBOX %({head} RECORD ({good} {good}) SINCE_MODSEQ 2 SYNC_CRC 9 \
             FOLDERMODSEQ 3 ANNOTATIONS (%(ENTRY /a USERID \"\" MODSEQ 1 VALUE v)))\r\n"
        ),
        format!("APPLY MAILBOX %({head} RECORD ({good} {good}) MBOXTYPE d)\r\n"),
        format!("APPLY MAILBOX %(RECORD ({good} {good}) {head})\r\n"),
        // Which error wins: SINCE, ANNOTATIONS, the first bad record, then the rest.
        format!("APPLY MAILBOX %({head} RECORD ({good} {bad} {good} x))\r\n"),
        format!("APPLY MAILBOX %(MBOXNAME user.john RECORD ({good} {bad}))\r\n"),
        format!("APPLY MAILBOX %(MBOXNAME user.john RECORD ({good} {good}))\r\n"),
        format!("APPLY MAILBOX %({head} RECORD ({good} {bad}) SINCE_MODSEQ x)\r\n"),
        format!("APPLY MAILBOX %({head} RECORD ({good} {bad}) ANNOTATIONS x)\r\n"),
        format!("APPLY MAILBOX %({head} RECORD ({good} {good}) FOLDERMODSEQ x)\r\n"),
        format!("APPLY MAILBOX %({head} RECORD ({good} {bad}) FOLDERMODSEQ x)\r\n"),
        format!("APPLY MAILBOX %({head} RECORD ({good} {good}) LAST_UID x)\r\n"),
        format!("APPLY MAILBOX %({head} RECORD ({good} NIL))\r\n"),
    ];
    for line in &lines {
        let whole = parse(line.as_bytes());
        let streamed = parse_streamed(line.as_bytes());
        assert_eq!(streamed, whole, "{line}");
    }
}
