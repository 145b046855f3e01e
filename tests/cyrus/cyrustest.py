"""cyrustest.py - shared python3 (stdlib only) code of tests/cyrus.

* Instance: reads DIR/instance.env written by cyrus-instance.sh
* imap(): IMAP session as admin, or as a user through admin proxy
  authorization (SASL PLAIN authzid=user, authcid=admin)
* parse_responses(): a small IMAP response parser (atoms, strings, literals,
  lists) on top of imaplib's raw data
* MessageGen: deterministic, realistic RFC 5322 messages (1 KB..200 KB
  log-uniform, some multipart)
* Lmtp: delivery through the instance's LMTP port
* ManageSieve: minimal ManageSieve client for timsieved
"""

import base64
import email.utils
import hashlib
import imaplib
import math
import os
import random
import re
import smtplib
import socket
import ssl

imaplib._MAXLINE = 50_000_000
for _c in ("GETMETADATA", "SETMETADATA", "ENABLE", "MOVE", "GETQUOTAROOT", "SETQUOTA",
           "GETQUOTA", "MYRIGHTS", "UNSELECT"):
    imaplib.Commands.setdefault(_c, ("AUTH", "SELECTED"))


class CyrusTestError(RuntimeError):
    pass


# ------------------------------------------------------------------ instance

class Instance:
    """A Cyrus instance created by cyrus-instance.sh (DIR/instance.env)."""

    def __init__(self, path):
        self.dir = os.path.abspath(path)
        env = os.path.join(self.dir, "instance.env")
        if not os.path.exists(env):
            raise CyrusTestError(f"{path} is not a Cyrus test instance (no instance.env)")
        self.env = {}
        with open(env) as f:
            for line in f:
                line = line.rstrip("\n")
                if "=" in line and not line.startswith("#"):
                    k, v = line.split("=", 1)
                    self.env[k] = v
        self.role = self.env["CYRUS_ROLE"]
        self.imap_port = int(self.env["CYRUS_IMAP_PORT"])
        self.lmtp_port = int(self.env["CYRUS_LMTP_PORT"])
        self.sieve_port = int(self.env["CYRUS_SIEVE_PORT"])
        self.admin = self.env.get("CYRUS_ADMIN", "admin")
        self.password = self.env.get("CYRUS_PASSWORD", "secret")
        self.tls = self.env.get("CYRUS_TLS") == "1"

    def __repr__(self):
        return f"<cyrus {self.role} {self.dir}>"


def _tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed test certificate
    return ctx


def imap(inst, user=None, timeout=120):
    """Logged-in imaplib.IMAP4: admin (user None) or `user` via proxy auth."""
    m = imaplib.IMAP4("127.0.0.1", inst.imap_port, timeout=timeout)
    if inst.tls:
        m.starttls(_tls_context())
    if user is None or user == inst.admin:
        cred = f"\0{inst.admin}\0{inst.password}".encode()
    else:
        cred = f"{user}\0{inst.admin}\0{inst.password}".encode()
    m.authenticate("PLAIN", lambda _: cred)
    return m


def ok(res, what):
    typ, data = res
    if typ != "OK":
        raise CyrusTestError(f"IMAP {what}: {typ} {data!r}")
    return data


def quote(s):
    """IMAP quoted string (imaplib does not quote arguments itself)."""
    if isinstance(s, bytes):
        s = s.decode()
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command(m, name, *args, resp=None):
    """Run a command; return (typ, untagged responses of `name`)."""
    typ, data = m._simple_command(name, *args)
    typ, data = m._untagged_response(typ, data, resp or name)
    return typ, data


# ------------------------------------------------------------------ parser

_TOKEN = re.compile(rb'[ \t]*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|\{(\d+)\+?\}$|([^\s()"]+))')


class Atom(str):
    """An unquoted IMAP atom (distinguished from quoted strings)."""


def _scan(buf, out_stack, literals):
    pos = 0
    while pos < len(buf):
        mo = _TOKEN.match(buf, pos)
        if not mo:
            if buf[pos:].strip() == b"":
                return
            raise CyrusTestError(f"cannot parse IMAP response at {buf[pos:pos + 40]!r}")
        pos = mo.end()
        if mo.group(1):
            lst = []
            out_stack[-1].append(lst)
            out_stack.append(lst)
        elif mo.group(2):
            if len(out_stack) > 1:
                out_stack.pop()
        elif mo.group(3) is not None:
            out_stack[-1].append(re.sub(rb"\\(.)", rb"\1", mo.group(3)).decode("utf-8", "replace"))
        elif mo.group(4) is not None:
            out_stack[-1].append(literals.pop(0))
        else:
            a = mo.group(5).decode("utf-8", "replace")
            out_stack[-1].append(None if a.upper() == "NIL" else Atom(a))


def parse_responses(data):
    """imaplib untagged data (bytes and (head, literal) tuples) -> one parsed
    token list per response.  Literals become bytes, NIL None, lists lists."""
    out, pieces, lits = [], [], []
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):      # (line ending in {N}, literal)
            pieces.append(item[0])
            lits.append(item[1])
            continue
        pieces.append(item)              # last (or only) piece of a response
        top = []
        stack = [top]
        for p in pieces:
            _scan(p, stack, lits)
        out.append(top)
        pieces, lits = [], []
    return out


def kv_pairs(lst):
    """[K1, V1, K2, V2 ...] -> {K1.upper(): V1, ...}"""
    return {str(lst[i]).upper(): lst[i + 1] for i in range(0, len(lst) - 1, 2)}


# ------------------------------------------------------------------ messages

KB = 1024
_SYLLABLES = ("ba be bi bo bu da de di do du fa fe fi fo ga ge go ka ke ki ko "
              "la le li lo lu ma me mi mo mu na ne ni no pa pe pi po ra re ri ro "
              "sa se si so ta te ti to va ve vi vo za ze zo").split()
_NAMES = ("Ada Boris Chloe Dmitri Elena Farid Greta Hugo Ines Jonas Kira Lars "
          "Mona Nils Olga Pavel Quinn Rosa Sven Tara Umar Vera Willem Yuki").split()
_SURNAMES = ("Andersen Brandt Costa Dahl Eriksen Fischer Gruber Horvat Ito Jensen "
             "Kovacs Lindqvist Moreau Novak Okafor Petrov Quist Romero Schulz Tanaka").split()
_DOMAINS = ("example.com", "example.net", "example.org", "mail.example", "corp.example")
_ATTACHMENTS = (("application/pdf", "pdf"), ("image/jpeg", "jpg"), ("image/png", "png"),
                ("application/zip", "zip"), ("application/octet-stream", "dat"))


class MessageGen:
    """Message `index` of `seed` is always the same bytes (CRLF, 7-bit).

    Sizes are log-uniform in [min_size, max_size]; about `multipart` of the
    messages are multipart (alternative text+html, or mixed with a base64
    attachment of random bytes)."""

    def __init__(self, seed=1, min_size=1 * KB, max_size=200 * KB, multipart=0.3,
                 epoch=1735689600):
        self.seed, self.min_size, self.max_size = seed, min_size, max_size
        self.multipart, self.epoch = multipart, epoch
        r = random.Random(f"words:{seed}")
        self.words = sorted({"".join(r.choice(_SYLLABLES) for _ in range(r.randint(1, 4)))
                             for _ in range(2500)})

    def _person(self, r):
        first, last = r.choice(_NAMES), r.choice(_SURNAMES)
        return f"{first} {last}", f"{first.lower()}.{last.lower()}@{r.choice(_DOMAINS)}"

    def _paragraphs(self, r, nbytes):
        lines, cur, total = [], "", 0
        while total < nbytes:
            w = r.choice(self.words)
            if r.random() < 0.08:
                w += "."
            if cur and len(cur) + 1 + len(w) > 72:
                lines.append(cur)
                total += len(cur) + 2
                cur = ""
                if r.random() < 0.1:
                    lines.append("")
                    total += 2
            cur = f"{cur} {w}" if cur else w.capitalize()
        lines.append(cur)
        return "\r\n".join(lines) + "\r\n"

    def make(self, index, rcpt="user@example.test"):
        """-> bytes of message `index`, addressed to `rcpt`."""
        r = random.Random(f"msg:{self.seed}:{index}")
        target = int(math.exp(r.uniform(math.log(self.min_size), math.log(self.max_size))))
        name, addr = self._person(r)
        when = self.epoch + index * 313 + r.randint(0, 300)
        subject = " ".join(r.choice(self.words) for _ in range(r.randint(2, 7))).capitalize()
        reply = r.random() < 0.25
        msgid = f"<{self.seed}.{index}.{r.getrandbits(40):010x}@gen.example>"
        h = [f"Return-Path: <{addr}>",
             f"Received: from mx{r.randint(1, 9)}.example.net (mx.example.net [192.0.2.{r.randint(1, 254)}])\r\n"
             f"\tby mail.example.test (Postfix) with ESMTPS id {r.getrandbits(36):09X}\r\n"
             f"\tfor <{rcpt}>; {email.utils.formatdate(when + 3, usegmt=True)}",
             f"From: \"{name}\" <{addr}>",
             f"To: <{rcpt}>"]
        if r.random() < 0.3:
            cn, ca = self._person(r)
            h.append(f"Cc: {cn} <{ca}>")
        h += [f"Subject: {'Re: ' if reply else ''}{subject}",
              f"Date: {email.utils.formatdate(when)}",
              f"Message-ID: {msgid}"]
        if reply:
            ref = f"<{self.seed}.{max(0, index - r.randint(1, 9))}.parent@gen.example>"
            h += [f"In-Reply-To: {ref}", f"References: {ref}"]
        h += ["MIME-Version: 1.0", f"X-Mailer: cyrustest-gen (seed {self.seed})"]
        kind = "plain"
        if r.random() < self.multipart:
            kind = "mixed" if target > 6 * KB and r.random() < 0.7 else "alternative"
        if kind == "plain":
            h += ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit"]
            head = "\r\n".join(h) + "\r\n\r\n"
            body = self._paragraphs(r, max(100, target - len(head)))
        else:
            b = f"=_part_{r.getrandbits(48):012x}"
            h.append(f'Content-Type: multipart/{kind}; boundary="{b}"')
            head = "\r\n".join(h) + "\r\n\r\nThis is a multi-part message in MIME format.\r\n"
            if kind == "alternative":
                text = self._paragraphs(r, max(200, (target - len(head)) // 2 - 200))
                html = "<html><body>\r\n" + "".join(
                    f"<p>{ln}</p>\r\n" for ln in text.split("\r\n") if ln) + "</body></html>\r\n"
                body = (f"--{b}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}"
                        f"--{b}\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n{html}"
                        f"--{b}--\r\n")
            else:
                text = self._paragraphs(r, r.randint(300, 2500))
                ctype, ext = r.choice(_ATTACHMENTS)
                raw = max(512, (target - len(head) - len(text) - 500) * 3 // 4)
                data = base64.encodebytes(r.randbytes(raw)).decode().replace("\n", "\r\n")
                fname = f"{r.choice(self.words)}.{ext}"
                body = (f"--{b}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}"
                        f"--{b}\r\nContent-Type: {ctype}; name=\"{fname}\"\r\n"
                        f"Content-Transfer-Encoding: base64\r\n"
                        f"Content-Disposition: attachment; filename=\"{fname}\"\r\n\r\n{data}"
                        f"--{b}--\r\n")
        return (head + body).encode("ascii")


# ------------------------------------------------------------------ LMTP

class Lmtp:
    def __init__(self, inst, timeout=120):
        self.inst, self.timeout, self.conn = inst, timeout, None

    def _connect(self):
        self.conn = smtplib.LMTP("127.0.0.1", self.inst.lmtp_port, timeout=self.timeout)
        code, msg = self.conn.ehlo("cyrustest.example")  # LHLO
        if code != 250:
            raise CyrusTestError(f"LHLO: {code} {msg!r}")

    def deliver(self, rcpt, data, sender="sender@example.net"):
        if self.conn is None:
            self._connect()
        try:
            refused = self.conn.sendmail(sender, [rcpt], data)
        except smtplib.SMTPRecipientsRefused as e:
            raise CyrusTestError(f"LMTP refused {rcpt}: {e.recipients}") from None
        if refused:
            raise CyrusTestError(f"LMTP refused {rcpt}: {refused}")

    def close(self):
        if self.conn is not None:
            try:
                self.conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self.conn = None


# ------------------------------------------------------------------ ManageSieve

class ManageSieve:
    """Just enough RFC 5804 for timsieved: PLAIN (proxy) login, PUTSCRIPT,
    SETACTIVE, LISTSCRIPTS, GETSCRIPT, DELETESCRIPT."""

    def __init__(self, inst, user, timeout=60):
        self.sock = socket.create_connection(("127.0.0.1", inst.sieve_port), timeout=timeout)
        self.f = self.sock.makefile("rb")
        caps = self._response()[0]
        if inst.tls:
            self._send(b"STARTTLS\r\n")
            self._response()
            self.sock = _tls_context().wrap_socket(self.sock)
            self.f = self.sock.makefile("rb")
            caps = self._response()[0]
        self.capabilities = caps
        cred = f"{'' if user in (None, inst.admin) else user}\0{inst.admin}\0{inst.password}"
        self._send(b'AUTHENTICATE "PLAIN" "' + base64.b64encode(cred.encode()) + b'"\r\n')
        self._response()

    def _send(self, b):
        self.sock.sendall(b)

    def _line(self):
        ln = self.f.readline()
        if not ln:
            raise CyrusTestError("ManageSieve: connection closed")
        return ln.rstrip(b"\r\n")

    def _response(self):
        """Read lines up to OK/NO/BYE.  Returns (lines, literal blobs); raises on NO/BYE."""
        lines, blobs = [], []
        while True:
            ln = self._line()
            mo = re.match(rb"^\{(\d+)\+?\}$", ln)
            if mo:
                blobs.append(self.f.read(int(mo.group(1))))
                continue
            word = ln.split(b" ", 1)[0].upper()
            if word == b"OK":
                return lines, blobs
            if word in (b"NO", b"BYE"):
                raise CyrusTestError(f"ManageSieve: {ln.decode(errors='replace')}")
            lines.append(ln)

    def put(self, name, script):
        data = script.encode() if isinstance(script, str) else script
        self._send(f'PUTSCRIPT {quote(name)} {{{len(data)}+}}\r\n'.encode() + data + b"\r\n")
        self._response()

    def activate(self, name):
        self._send(f"SETACTIVE {quote(name or '')}\r\n".encode())
        self._response()

    def delete(self, name):
        self._send(f"DELETESCRIPT {quote(name)}\r\n".encode())
        self._response()

    def list(self):
        """-> ({name: active?})"""
        self._send(b"LISTSCRIPTS\r\n")
        lines, _ = self._response()
        out = {}
        for ln in lines:
            mo = re.match(rb'^"((?:[^"\\]|\\.)*)"( ACTIVE)?', ln)
            if mo:
                out[re.sub(rb"\\(.)", rb"\1", mo.group(1)).decode()] = bool(mo.group(2))
        return out

    def get(self, name):
        self._send(f"GETSCRIPT {quote(name)}\r\n".encode())
        _, blobs = self._response()
        return blobs[0] if blobs else b""

    def close(self):
        try:
            self._send(b"LOGOUT\r\n")
            self._response()
        except (CyrusTestError, OSError):
            pass
        self.sock.close()


def sha1(b):
    return hashlib.sha1(b).hexdigest()
