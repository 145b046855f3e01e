#!/usr/bin/env python3
"""cyrusctl.py - make changes on a Cyrus test instance the way users do.

  cyrusctl.py DIR [--as USER] COMMAND [ARGS...]
  cyrusctl.py DIR script [FILE]        one COMMAND per line (default: stdin);
                                       "@USER COMMAND ..." runs it as USER,
                                       "#" lines are comments; a backslash
                                       is literal (\\Seen); quote with '' or ""

Without --as a command runs in an admin session (mailbox names like
user/alice/Work); with --as USER it runs as USER, logged in through SASL
PLAIN proxy authorization by the admin (names as the user sees them: INBOX,
Work, "Other Users/bob/Shared"; \\Seen is USER's own).

Delivery (LMTP, port PORTBASE+1):
  deliver --to RCPT[,RCPT...] [--count N] [--seed S] [--start K]
          [--min-size B] [--max-size B] [--multipart F] [--create]
      message K+i (deterministic for seed S, 1 KB..200 KB log-uniform) goes
      to RCPT[i % len]; RCPT is USER or USER+Folder (Folder needs the "p"
      right for "anyone", else lmtpd files it into INBOX: see --create).
      --create: create missing user INBOXes/folders first (as admin) and
      grant "anyone p" on +Folder targets.
Admin commands (always run as admin):
  adduser USER [FOLDER...]          create user/USER (+ folders)
  deluser USER                      delete user/USER and all its folders
  setquota ROOT RES LIMIT [RES LIMIT...]  e.g. setquota user/alice STORAGE 10240 MESSAGE 500
  delquota ROOT                     remove all limits of ROOT
Mailbox commands (session of --as USER, or admin):
  create NAME...        delete NAME...        rename OLD NEW
  subscribe NAME...     unsubscribe NAME...
  store NAME UIDSET OP FLAG...      OP: +FLAGS, -FLAGS or FLAGS (FLAGS with no FLAG clears)
  expunge NAME UIDSET               \\Deleted + UID EXPUNGE of UIDSET
  append NAME [--count N] [--seed S] [--start K] [--flags "\\Seen x"] [--max-size B]
  copy NAME UIDSET DEST             move NAME UIDSET DEST
  setacl NAME ID RIGHTS             deleteacl NAME ID
  setmeta NAME ENTRY VALUE          VALUE "NIL" deletes; e.g. setmeta INBOX /private/comment hi
Sieve (ManageSieve/timsieved, port PORTBASE+3; needs --as USER):
  sieve-put NAME FILE|-|--text SCRIPT    sieve-activate NAME|""    sieve-delete NAME
Queries:
  list    lsub    status NAME    uids NAME    sieve-list
"""

import argparse
import os
import shlex
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cyrustest as ct  # noqa: E402

q = ct.quote


class Session:
    """Cached IMAP connections per identity (None = admin)."""

    def __init__(self, inst):
        self.inst = inst
        self.conns = {}

    def get(self, user):
        if user not in self.conns:
            self.conns[user] = ct.imap(self.inst, user)
        return self.conns[user]

    def close(self):
        for m in self.conns.values():
            try:
                m.logout()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass


def _select(m, name, readonly=False):
    ct.ok(m.select(q(name), readonly=readonly), f"SELECT {name}")


def cmd_deliver(s, user, a):
    rcpts = [r for r in a.to.split(",") if r]
    if not rcpts:
        raise ct.CyrusTestError("deliver: --to is empty")
    if a.create:
        adm = s.get(None)
        for r in sorted(set(rcpts)):
            u, _, folder = r.partition("+")
            for name in [f"user/{u}"] + ([f"user/{u}/{folder}"] if folder else []):
                typ, data = adm.create(q(name))
                if typ != "OK" and b"already exists" not in b" ".join(d or b"" for d in data):
                    raise ct.CyrusTestError(f"CREATE {name}: {data!r}")
            if folder:
                ct.ok(adm.setacl(q(f"user/{u}/{folder}"), "anyone", "p"), "SETACL anyone p")
    gen = ct.MessageGen(seed=a.seed, min_size=a.min_size, max_size=a.max_size,
                        multipart=a.multipart)
    lm = ct.Lmtp(s.inst)
    total = 0
    try:
        for i in range(a.count):
            rcpt = rcpts[i % len(rcpts)]
            data = gen.make(a.start + i, rcpt=f"{rcpt}@example.test")
            lm.deliver(rcpt, data)
            total += len(data)
    finally:
        lm.close()
    print(f"delivered {a.count} messages ({total} bytes) to {','.join(rcpts)}", file=sys.stderr)


def cmd_adduser(s, user, a):
    m = s.get(None)
    ct.ok(m.create(q(f"user/{a.user}")), f"CREATE user/{a.user}")
    for f in a.folders:
        ct.ok(m.create(q(f"user/{a.user}/{f}")), f"CREATE user/{a.user}/{f}")


def cmd_deluser(s, user, a):
    m = s.get(None)
    # admins only have implicit "l" and "a": grant themselves "x" first
    ct.ok(m.setacl(q(f"user/{a.user}"), s.inst.admin, "lrswipkxtecda"), "SETACL")
    ct.ok(m.delete(q(f"user/{a.user}")), f"DELETE user/{a.user}")


def cmd_setquota(s, user, a):
    if len(a.limits) % 2:
        raise ct.CyrusTestError("setquota: RESOURCE LIMIT pairs expected")
    m = s.get(None)
    ct.ok(m._simple_command("SETQUOTA", q(a.root), "(" + " ".join(a.limits) + ")"), "SETQUOTA")


def cmd_delquota(s, user, a):
    ct.ok(s.get(None)._simple_command("SETQUOTA", q(a.root), "()"), "SETQUOTA ()")


def cmd_create(s, user, a):
    m = s.get(user)
    for n in a.names:
        ct.ok(m.create(q(n)), f"CREATE {n}")


def cmd_delete(s, user, a):
    m = s.get(user)
    for n in a.names:
        ct.ok(m.delete(q(n)), f"DELETE {n}")


def cmd_rename(s, user, a):
    ct.ok(s.get(user).rename(q(a.old), q(a.new)), f"RENAME {a.old} {a.new}")


def cmd_subscribe(s, user, a):
    m = s.get(user)
    for n in a.names:
        ct.ok(m.subscribe(q(n)), f"SUBSCRIBE {n}")


def cmd_unsubscribe(s, user, a):
    m = s.get(user)
    for n in a.names:
        ct.ok(m.unsubscribe(q(n)), f"UNSUBSCRIBE {n}")


def cmd_store(s, user, a):
    if a.op.upper() not in ("+FLAGS", "-FLAGS", "FLAGS", "+FLAGS.SILENT", "-FLAGS.SILENT", "FLAGS.SILENT"):
        raise ct.CyrusTestError(f"store: bad OP {a.op}")
    m = s.get(user)
    _select(m, a.name)
    try:
        ct.ok(m.uid("STORE", a.uids, a.op, "(" + " ".join(a.flags) + ")"), "UID STORE")
    finally:
        m.close()


def cmd_expunge(s, user, a):
    m = s.get(user)
    _select(m, a.name)
    try:
        ct.ok(m.uid("STORE", a.uids, "+FLAGS.SILENT", r"(\Deleted)"), "UID STORE \\Deleted")
        ct.ok(m.uid("EXPUNGE", a.uids), "UID EXPUNGE")
    finally:
        m.close()


def cmd_append(s, user, a):
    m = s.get(user)
    gen = ct.MessageGen(seed=a.seed, max_size=a.max_size, min_size=min(1024, a.max_size))
    flags = f"({a.flags})" if a.flags else None
    for i in range(a.start, a.start + a.count):
        data = gen.make(i, rcpt=f"{user or 'admin'}@example.test")
        ct.ok(m.append(q(a.name), flags, None, data), f"APPEND {a.name}")


def cmd_copy(s, user, a):
    m = s.get(user)
    _select(m, a.name)
    try:
        ct.ok(m.uid("COPY", a.uids, q(a.dest)), "UID COPY")
    finally:
        m.close()


def cmd_move(s, user, a):
    m = s.get(user)
    _select(m, a.name)
    try:
        ct.ok(m.uid("MOVE", a.uids, q(a.dest)), "UID MOVE")
    finally:
        m.close()


def cmd_setacl(s, user, a):
    ct.ok(s.get(user).setacl(q(a.name), a.id, a.rights), "SETACL")


def cmd_deleteacl(s, user, a):
    ct.ok(s.get(user).deleteacl(q(a.name), a.id), "DELETEACL")


def cmd_setmeta(s, user, a):
    val = "NIL" if a.value == "NIL" else q(a.value)
    ct.ok(s.get(user)._simple_command("SETMETADATA", q(a.name), f"({a.entry} {val})"), "SETMETADATA")


def _sieve(s, user):
    if user is None:
        raise ct.CyrusTestError("sieve commands need --as USER (or @USER)")
    return ct.ManageSieve(s.inst, user)


def cmd_sieve_put(s, user, a):
    if a.text is not None:
        script = a.text.replace("\\n", "\r\n")
    elif a.file == "-":
        script = sys.stdin.read()
    elif a.file:
        with open(a.file) as f:
            script = f.read()
    else:
        raise ct.CyrusTestError("sieve-put: FILE, - or --text needed")
    ms = _sieve(s, user)
    try:
        ms.put(a.name, script)
    finally:
        ms.close()


def cmd_sieve_activate(s, user, a):
    ms = _sieve(s, user)
    try:
        ms.activate(a.name)
    finally:
        ms.close()


def cmd_sieve_delete(s, user, a):
    ms = _sieve(s, user)
    try:
        ms.delete(a.name)
    finally:
        ms.close()


def cmd_sieve_list(s, user, a):
    ms = _sieve(s, user)
    try:
        for name, active in sorted(ms.list().items()):
            print(f"{name}{' ACTIVE' if active else ''}")
    finally:
        ms.close()


def _print_list(data):
    for r in ct.parse_responses(data):
        print(f"{r[2]}\t{' '.join(r[0])}")


def cmd_list(s, user, a):
    _print_list(ct.ok(s.get(user).list('""', "*"), "LIST"))


def cmd_lsub(s, user, a):
    _print_list(ct.ok(s.get(user).lsub('""', "*"), "LSUB"))


def cmd_status(s, user, a):
    m = s.get(user)
    data = ct.ok(m.status(q(a.name), "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)"), "STATUS")
    for r in ct.parse_responses(data):
        print(" ".join(f"{k}={v}" for k, v in ct.kv_pairs(r[1]).items()))


def cmd_uids(s, user, a):
    m = s.get(user)
    _select(m, a.name, readonly=True)
    try:
        print(ct.ok(m.uid("SEARCH", None, "ALL"), "UID SEARCH")[0].decode())
    finally:
        m.close()


def build_parser():
    p = argparse.ArgumentParser(prog="cyrusctl.py", add_help=False)
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name, fn, *args):
        sp = sub.add_parser(name, add_help=False)
        for spec in args:
            sp.add_argument(*spec[0], **spec[1])
        sp.set_defaults(fn=fn)
        return sp

    A = lambda *n, **kw: (n, kw)  # noqa: E731
    add("deliver", cmd_deliver, A("--to", required=True), A("--count", type=int, default=1),
        A("--seed", type=int, default=1), A("--start", type=int, default=0),
        A("--min-size", type=int, default=1024), A("--max-size", type=int, default=200 * 1024),
        A("--multipart", type=float, default=0.3), A("--create", action="store_true"))
    add("adduser", cmd_adduser, A("user"), A("folders", nargs="*"))
    add("deluser", cmd_deluser, A("user"))
    add("setquota", cmd_setquota, A("root"), A("limits", nargs="+"))
    add("delquota", cmd_delquota, A("root"))
    add("create", cmd_create, A("names", nargs="+"))
    add("delete", cmd_delete, A("names", nargs="+"))
    add("rename", cmd_rename, A("old"), A("new"))
    add("subscribe", cmd_subscribe, A("names", nargs="+"))
    add("unsubscribe", cmd_unsubscribe, A("names", nargs="+"))
    add("store", cmd_store, A("name"), A("uids"), A("op"), A("flags", nargs="*"))
    add("expunge", cmd_expunge, A("name"), A("uids"))
    add("append", cmd_append, A("name"), A("--count", type=int, default=1),
        A("--seed", type=int, default=2), A("--start", type=int, default=0),
        A("--flags", default=""), A("--max-size", type=int, default=200 * 1024))
    add("copy", cmd_copy, A("name"), A("uids"), A("dest"))
    add("move", cmd_move, A("name"), A("uids"), A("dest"))
    add("setacl", cmd_setacl, A("name"), A("id"), A("rights"))
    add("deleteacl", cmd_deleteacl, A("name"), A("id"))
    add("setmeta", cmd_setmeta, A("name"), A("entry"), A("value"))
    add("sieve-put", cmd_sieve_put, A("name"), A("file", nargs="?"), A("--text"))
    add("sieve-activate", cmd_sieve_activate, A("name"))
    add("sieve-delete", cmd_sieve_delete, A("name"))
    add("sieve-list", cmd_sieve_list)
    add("list", cmd_list)
    add("lsub", cmd_lsub)
    add("status", cmd_status, A("name"))
    add("uids", cmd_uids, A("name"))
    return p


def split_line(line):
    """Shell-like words, but a backslash is an ordinary character (flags
    like \\Seen); quote with '...' or "..."; a line starting with # is a
    comment."""
    if line.lstrip().startswith("#"):
        return []
    lex = shlex.shlex(line, posix=True)
    lex.whitespace_split = True
    lex.commenters = ""
    lex.escape = ""
    return list(lex)


OPTION_COMMANDS = ("deliver", "append", "sieve-put")


def run_one(parser, session, user, argv):
    if argv and argv[0].startswith("@"):
        user, argv = argv[0][1:] or None, argv[1:]
    if len(argv) > 1 and argv[0] not in OPTION_COMMANDS:
        argv = [argv[0], "--"] + argv[1:]   # so "-FLAGS" or "-x" are not options
    args = parser.parse_args(argv)
    args.fn(session, user, args)


def main():
    argv = sys.argv[1:]
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    try:
        inst = ct.Instance(argv.pop(0))
    except ct.CyrusTestError as e:
        print(f"cyrusctl.py: {e}", file=sys.stderr)
        sys.exit(2)
    user = None
    if argv[0] == "--as":
        if len(argv) < 3:
            print("cyrusctl.py: --as USER COMMAND ...", file=sys.stderr)
            sys.exit(2)
        user, argv = argv[1], argv[2:]
    parser = build_parser()
    session = Session(inst)
    lineno = 0
    try:
        if argv[0] == "script":
            src = open(argv[1]) if len(argv) > 1 and argv[1] != "-" else sys.stdin
            for lineno, line in enumerate(src, 1):
                words = split_line(line)
                if words:
                    run_one(parser, session, user, words)
        else:
            run_one(parser, session, user, argv)
    except (ct.CyrusTestError, OSError) as e:
        where = f" (line {lineno})" if lineno else ""
        print(f"cyrusctl.py: error{where}: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        session.close()


if __name__ == "__main__":
    main()
