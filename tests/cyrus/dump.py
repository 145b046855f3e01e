#!/usr/bin/env python3
"""dump.py - canonical, diffable dump of the user-visible state of a mail store.

  dump.py DIR [--users a,b] [--no-bodies] [--no-sieve] [--deleted] [-o FILE]
      dump a Cyrus test instance (cyrus-instance.sh) over IMAP + ManageSieve
  dump.py canon FILE|- [--ignore KEY,...] [-o FILE]
      re-emit any dump JSON (e.g. produced by csync's admin tool) canonically
  dump.py diff A B [--ignore KEY,...] [--users a,b] [--no-bodies] [--no-sieve]
      A and B are instance DIRs or dump JSON files; prints a unified diff of
      the canonical texts; exit 0 identical, 1 different, 2 error

The format ("cyrus-test-dump/1") is specified in README.md (section
"Dump format"); collect_instance() is the IMAP side, canonical() the
serialisation that both sides are compared in.
"""

import argparse
import datetime
import difflib
import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cyrustest as ct  # noqa: E402

FORMAT = "cyrus-test-dump/1"

# Server-computed annotations that are either not part of the replicated
# state or differ legitimately between two servers (or duplicate other fields).
IGNORED_ANNOTATIONS = {
    f"/{scope}/vendor/cmu/cyrus-imapd/{name}"
    for scope in ("shared", "private")
    for name in ("uniqueid", "synccrcs", "size", "partition", "server", "lastupdate",
                 "lastpop", "foldermodseq", "annotsize", "hasalarms", "pop3newuidl",
                 "sharedseen", "duplicatedeliver")
}


def _internaldate_epoch(s):
    return int(datetime.datetime.strptime(s.strip(), "%d-%b-%Y %H:%M:%S %z").timestamp())


def _code(m, key):
    v = m.untagged_responses.get(key)
    return v[-1].decode() if v else None


def _mailbox(m, name, bodies):
    """State of one mailbox as seen by the logged-in user."""
    mb = {}
    ct.ok(m.select(ct.quote(name), readonly=True), f"EXAMINE {name}")
    try:
        mb["exists"] = int(_code(m, "EXISTS") or 0)
        mb["uidvalidity"] = int(_code(m, "UIDVALIDITY"))
        mb["uidnext"] = int(_code(m, "UIDNEXT"))
        hms = _code(m, "HIGHESTMODSEQ")
        mb["highestmodseq"] = int(hms) if hms else None
        mid = _code(m, "MAILBOXID")   # from EXAMINE: STATUS MAILBOXID is broken in 3.6.1
        mb["mailboxid"] = mid.strip("()") if mid else None
        msgs = []
        if mb["exists"]:
            items = "(UID FLAGS INTERNALDATE RFC822.SIZE MODSEQ" + (" BODY.PEEK[])" if bodies else ")")
            for r in ct.parse_responses(ct.ok(m.uid("FETCH", "1:*", items), "UID FETCH")):
                f = ct.kv_pairs(r[1])
                rec = {"uid": int(f["UID"]),
                       "flags": sorted(x for x in f["FLAGS"] if x.lower() != "\\recent"),
                       "internaldate": _internaldate_epoch(f["INTERNALDATE"]),
                       "size": int(f["RFC822.SIZE"]),
                       "modseq": int(f["MODSEQ"][0])}
                if bodies:
                    body = f.get("BODY[]") or b""
                    rec["sha1"] = ct.sha1(body if isinstance(body, bytes) else body.encode())
                msgs.append(rec)
        mb["messages"] = sorted(msgs, key=lambda x: x["uid"])
    finally:
        m.close()

    typ, data = ct.command(m, "GETACL", ct.quote(name), resp="ACL")
    if typ == "OK" and data and data[0] is not None:
        r = ct.parse_responses(data)[0]
        mb["acl"] = {r[i]: r[i + 1] for i in range(1, len(r) - 1, 2)}
    else:  # no "a" right on another user's mailbox
        typ, data = ct.command(m, "MYRIGHTS", ct.quote(name))
        mb["myrights"] = ct.parse_responses(data)[0][1] if typ == "OK" and data[0] else None

    typ, data = ct.command(m, "GETMETADATA", "(DEPTH infinity)", ct.quote(name),
                           "(/shared /private)", resp="METADATA")
    ann = {}
    if typ == "OK":
        for r in ct.parse_responses(data):
            kv = r[1]
            for i in range(0, len(kv) - 1, 2):
                k, v = kv[i], kv[i + 1]
                if v is None or k in IGNORED_ANNOTATIONS:
                    continue
                ann[k] = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    mb["annotations"] = ann

    m.untagged_responses.clear()
    typ, _ = m._simple_command("GETQUOTAROOT", ct.quote(name))
    roots, quotas = [], {}
    if typ == "OK":
        for r in ct.parse_responses(m.untagged_responses.pop("QUOTAROOT", [])):
            roots += r[1:]
        for r in ct.parse_responses(m.untagged_responses.pop("QUOTA", [])):
            lst = r[1]
            quotas[r[0]] = {str(lst[i]).upper(): [int(lst[i + 1]), int(lst[i + 2])]
                            for i in range(0, len(lst) - 2, 3)}
    mb["quotaroots"] = sorted(roots)
    return mb, quotas


def _names(data):
    out = {}
    for r in ct.parse_responses(data):
        out[r[2] if isinstance(r[2], str) else r[2].decode()] = sorted(r[0])
    return out


def collect_user(inst, user, bodies=True, sieve=True):
    m = ct.imap(inst, user)
    try:
        boxes = _names(ct.ok(m.list('""', "*"), "LIST"))
        subs = _names(ct.ok(m.lsub('""', "*"), "LSUB"))
        u = {"mailboxes": {}, "subscriptions": sorted(subs), "quota": {}}
        for name, attrs in sorted(boxes.items()):
            if any(a.lower() in ("\\noselect", "\\nonexistent") for a in attrs):
                u["mailboxes"][name] = {"list": attrs, "noselect": True}
                continue
            mb, quotas = _mailbox(m, name, bodies)
            mb["list"] = attrs
            u["mailboxes"][name] = mb
            u["quota"].update(quotas)
    finally:
        try:
            m.logout()
        except Exception:  # noqa: BLE001
            pass
    u["sieve"] = _sieve(inst, user, sieve)
    return u


def _status(m, name, items):
    typ, data = m.status(ct.quote(name), items)
    if typ != "OK":
        return None
    return {k.lower(): v for k, v in ct.kv_pairs(ct.parse_responses(data)[0][1]).items()}


def _sieve(inst, user, scripts):
    """Sieve state: the hidden #sieve mailbox (3.6 keeps the scripts there)
    and, with `scripts`, the scripts via ManageSieve.  Only users that already
    have #sieve are asked: a timsieved login creates the mailbox (a change)."""
    m = ct.imap(inst, user)
    try:
        st = _status(m, "#sieve", "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)")
        if st is None:
            return None
        # MAILBOXID on its own: combined with other items 3.6.1 returns garbage
        mid = _status(m, "#sieve", "(MAILBOXID)")
    finally:
        m.logout()
    s = {"mailbox": {"exists": int(st["messages"]), "uidnext": int(st["uidnext"]),
                     "uidvalidity": int(st["uidvalidity"]),
                     "highestmodseq": int(st["highestmodseq"]),
                     "mailboxid": mid["mailboxid"][0] if mid else None}}
    if scripts:
        ms = ct.ManageSieve(inst, user)
        try:
            lst = ms.list()
            s["active"] = next((n for n, a in lst.items() if a), None)
            s["scripts"] = {n: ct.sha1(ms.get(n)) for n in sorted(lst)}
        finally:
            ms.close()
    return s


def list_users(inst):
    m = ct.imap(inst)
    try:
        return sorted(n.split("/", 1)[1] for n in _names(ct.ok(m.list('""', "user/%"), "LIST"))
                      if n.startswith("user/"))
    finally:
        m.logout()


def deleted_mailboxes(inst):
    """Delayed-delete tombstones (DELETED.user...): not visible over IMAP, so
    read from mailboxes.db with ctl_mboxlist -d (needs local access)."""
    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cyrus-instance.sh")
    out = subprocess.run([tool, "tool", inst.dir, "ctl_mboxlist", "-d"], check=True,
                         capture_output=True).stdout
    db = json.loads(out.decode("utf-8", "replace") or "{}")
    return sorted(n for n in db if n.startswith("DELETED."))


def collect_instance(path, users=None, bodies=True, sieve=True, deleted=False):
    """The IMAP side of the dump: a dict in the cyrus-test-dump/1 format."""
    inst = ct.Instance(path)
    names = users or list_users(inst)
    d = {"format": FORMAT,
         "users": {u: collect_user(inst, u, bodies, sieve) for u in names}}
    if deleted:
        d["deleted"] = deleted_mailboxes(inst)
    return d


# ---------------------------------------------------------------- canonical form

def strip_keys(obj, keys):
    if not keys:
        return obj
    if isinstance(obj, dict):
        return {k: strip_keys(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [strip_keys(v, keys) for v in obj]
    return obj


def _flat(v):
    """True if v is printed on one line (scalars, lists of scalars, and
    dicts whose values are such)."""
    if isinstance(v, list):
        return all(not isinstance(x, (dict, list)) for x in v)
    if isinstance(v, dict):
        return all(not isinstance(x, dict) and _flat(x) for x in v.values())
    return True


def _one_line(v):
    return json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def canonical(obj, indent=0):
    """Deterministic JSON text: sorted keys, one message (or other flat
    object) per line, 1-space indentation per level, trailing newline."""
    pad, pad1 = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict) and not (indent and _flat(obj)):
        if not obj:
            return "{}"
        items = [f"{pad1}{json.dumps(k, ensure_ascii=False)}: {canonical(obj[k], indent + 1)}"
                 for k in sorted(obj)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and not _flat(obj):
        if not obj:
            return "[]"
        return "[\n" + ",\n".join(pad1 + canonical(x, indent + 1) for x in obj) + "\n" + pad + "]"
    return _one_line(obj)


def canonical_text(obj, ignore=()):
    return canonical(strip_keys(obj, set(ignore))) + "\n"


# ---------------------------------------------------------------- CLI

def _load(src, opts):
    if src == "-":
        return json.load(sys.stdin)
    if os.path.isdir(src):
        return collect_instance(src, users=opts.users, bodies=not opts.no_bodies,
                                sieve=not opts.no_sieve, deleted=opts.deleted)
    with open(src) as f:
        return json.load(f)


def _write(text, out):
    if out and out != "-":
        with open(out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def main():
    argv = sys.argv[1:]
    mode = "dump"
    if argv and argv[0] in ("canon", "diff"):
        mode = argv.pop(0)
    ap = argparse.ArgumentParser(prog=f"dump.py {'' if mode == 'dump' else mode}".strip(),
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs=2 if mode == "diff" else 1)
    ap.add_argument("--users", type=lambda s: [u for u in s.split(",") if u])
    ap.add_argument("--no-bodies", action="store_true", help="no sha1 of BODY[] (faster)")
    ap.add_argument("--no-sieve", action="store_true", help="skip ManageSieve")
    ap.add_argument("--deleted", action="store_true",
                    help="add delayed-delete tombstones (ctl_mboxlist -d; local instance only)")
    ap.add_argument("--ignore", default="", help="comma-separated keys to drop everywhere")
    ap.add_argument("-o", "--output")
    opts = ap.parse_args(argv)
    ignore = [k for k in opts.ignore.split(",") if k]
    try:
        if mode == "diff":
            a, b = (canonical_text(_load(s, opts), ignore) for s in opts.sources)
            if a == b:
                print(f"IDENTICAL: {opts.sources[0]} == {opts.sources[1]}")
                return 0
            sys.stdout.writelines(difflib.unified_diff(
                a.splitlines(True), b.splitlines(True), opts.sources[0], opts.sources[1], n=2))
            return 1
        _write(canonical_text(_load(opts.sources[0], opts), ignore), opts.output)
        return 0
    except (ct.CyrusTestError, OSError, ValueError, KeyError, subprocess.CalledProcessError) as e:
        print(f"dump.py: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
