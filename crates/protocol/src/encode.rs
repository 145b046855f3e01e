//! The dlist writer: byte for byte what Cyrus writes (spec §2.3, §2.5).
//!
//! [`Encoder`] is a streaming writer into its own buffer. Typed commands write straight
//! into it without building a tree; a file literal writes only its header, and the
//! caller streams the message bytes before it carries on, so no message is ever held
//! whole in memory.

use crate::value::{Dlist, Item, Kind, Value};

/// Which literal spelling to emit (spec §2.5): the direction decides, not the taste.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiteralStyle {
    /// `{n+}`: what a client (master) sends. A Debian 3.6 server crashes on `{n}`.
    NonSynchronizing,
    /// `{n}`: what a server (replica) sends. A Debian 3.6 client rejects `{n+}`.
    Synchronizing,
}

/// How a string will be written on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StringForm {
    Atom,
    Quoted,
    Literal,
}

/// Strings of this length or longer are always sent as literals.
const MAX_INLINE: usize = 1024;

/// Cyrus's atom rule: every byte ≥ 0x1F (0x1F itself passes), not DEL, ASCII, none of
/// `SP { ( ) " % * \`; shorter than 1024; not empty; not the word `NIL`.
pub fn string_form(s: &[u8]) -> StringForm {
    if s.is_empty() {
        return StringForm::Quoted;
    }
    if s.len() >= MAX_INLINE {
        return StringForm::Literal;
    }
    let mut atom = s != b"NIL";
    for &b in s {
        match b {
            0x80.. | b'\r' | b'\n' | b'"' | b'%' | b'\\' | 0 => return StringForm::Literal,
            0x01..=0x1e | 0x7f | b' ' | b'{' | b'(' | b')' | b'*' => atom = false,
            _ => {}
        }
    }
    if atom {
        StringForm::Atom
    } else {
        StringForm::Quoted
    }
}

/// Streaming dlist writer. Items are separated by single spaces; containers open and
/// close with [`Encoder::begin_list`], [`Encoder::begin_kvlist`] and [`Encoder::end`].
#[derive(Debug)]
pub struct Encoder {
    buf: Vec<u8>,
    style: LiteralStyle,
    need_space: bool,
}

impl Encoder {
    pub fn new(style: LiteralStyle) -> Self {
        Self::with_buffer(style, Vec::new())
    }

    /// Reuses `buf` (cleared) as the output buffer.
    pub fn with_buffer(style: LiteralStyle, mut buf: Vec<u8>) -> Self {
        buf.clear();
        Self {
            buf,
            style,
            need_space: false,
        }
    }

    pub fn style(&self) -> LiteralStyle {
        self.style
    }

    /// What has been written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the written bytes, leaving the encoder empty but in the same position
    /// within the line (so a file body can be streamed and encoding resumed).
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Hands back the buffer for reuse.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.need_space = false;
    }

    fn sep(&mut self) {
        if self.need_space {
            self.buf.push(b' ');
        }
        self.need_space = true;
    }

    /// A bare word (command names, `*`, `OK`); written verbatim.
    pub fn word(&mut self, word: &str) -> &mut Self {
        self.sep();
        self.buf.extend_from_slice(word.as_bytes());
        self
    }

    /// Free text to the end of the line (completion text), written verbatim.
    pub fn text(&mut self, text: &[u8]) -> &mut Self {
        self.sep();
        self.buf.extend_from_slice(text);
        self
    }

    /// A kvlist key (an astring).
    pub fn key(&mut self, key: &str) -> &mut Self {
        self.string(key.as_bytes())
    }

    pub fn nil(&mut self) -> &mut Self {
        self.sep();
        self.buf.extend_from_slice(b"NIL");
        self
    }

    /// A string: atom, quoted or literal by Cyrus's rules.
    pub fn string(&mut self, s: &[u8]) -> &mut Self {
        self.sep();
        match string_form(s) {
            StringForm::Atom => self.buf.extend_from_slice(s),
            StringForm::Quoted => {
                self.buf.push(b'"');
                self.buf.extend_from_slice(s);
                self.buf.push(b'"');
            }
            StringForm::Literal => self.literal(s),
        }
        self
    }

    /// An optional string: `None` is `NIL`.
    pub fn opt_string(&mut self, s: Option<&[u8]>) -> &mut Self {
        match s {
            Some(s) => self.string(s),
            None => self.nil(),
        }
    }

    fn literal(&mut self, s: &[u8]) {
        self.buf.push(b'{');
        push_decimal(&mut self.buf, s.len() as u64);
        if self.style == LiteralStyle::NonSynchronizing {
            self.buf.push(b'+');
        }
        self.buf.extend_from_slice(b"}\r\n");
        self.buf.extend_from_slice(s);
    }

    /// A flag, written raw (`\Seen`, user flags too), as Cyrus does.
    pub fn flag(&mut self, flag: &[u8]) -> &mut Self {
        self.sep();
        self.buf.extend_from_slice(flag);
        self
    }

    /// Unsigned decimal (NUM and DATE kinds).
    pub fn num(&mut self, n: u64) -> &mut Self {
        self.sep();
        push_decimal(&mut self.buf, n);
        self
    }

    /// Exactly 16 lowercase hex digits (HEX kind, e.g. `thrid`).
    pub fn hex64(&mut self, n: u64) -> &mut Self {
        self.sep();
        for shift in (0..16).rev() {
            self.buf.push(HEX[((n >> (shift * 4)) & 0xf) as usize]);
        }
        self
    }

    /// 40 lowercase hex digits.
    pub fn guid(&mut self, guid: &crate::Guid) -> &mut Self {
        self.sep();
        guid.write_hex(&mut self.buf);
        self
    }

    pub fn begin_list(&mut self) -> &mut Self {
        self.sep();
        self.buf.push(b'(');
        self.need_space = false;
        self
    }

    pub fn begin_kvlist(&mut self) -> &mut Self {
        self.sep();
        self.buf.extend_from_slice(b"%(");
        self.need_space = false;
        self
    }

    /// Closes the innermost list or kvlist.
    pub fn end(&mut self) -> &mut Self {
        self.buf.push(b')');
        self.need_space = true;
        self
    }

    /// A file literal's header `%{partition guid size}` CRLF. The caller must send
    /// exactly `size` bytes next (with [`Encoder::raw`] or by streaming them itself
    /// after taking the buffer).
    pub fn file_header(&mut self, partition: &[u8], guid: &crate::Guid, size: u32) -> &mut Self {
        self.sep();
        self.buf.extend_from_slice(b"%{");
        self.need_space = false;
        self.string(partition);
        self.guid(guid);
        self.buf.push(b' ');
        push_decimal(&mut self.buf, u64::from(size));
        self.buf.extend_from_slice(b"}\r\n");
        self.need_space = true;
        self
    }

    /// Raw bytes appended as they are (a file body).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Ends the line with CRLF.
    pub fn end_line(&mut self) -> &mut Self {
        self.buf.extend_from_slice(b"\r\n");
        self.need_space = false;
        self
    }

    /// Writes an owned value (file bodies inline).
    pub fn value(&mut self, value: &Value) -> &mut Self {
        match value {
            Value::Nil => {
                self.nil();
            }
            Value::String(s) => {
                self.string(s);
            }
            Value::Flag(f) => {
                self.flag(f);
            }
            Value::List(items) => {
                self.begin_list();
                for item in items {
                    self.value(item);
                }
                self.end();
            }
            Value::KvList(items) => {
                self.begin_kvlist();
                for (k, item) in items {
                    self.string(k);
                    self.value(item);
                }
                self.end();
            }
            Value::File(file) => {
                self.file_value_header(&file.partition, &file.guid, file.body.len() as u32);
                self.raw(&file.body);
            }
        }
        self
    }

    /// File header whose GUID is kept as received text (it may not be valid hex when
    /// re-encoding a decoded tree).
    fn file_value_header(&mut self, partition: &[u8], guid: &[u8], size: u32) {
        self.sep();
        self.buf.extend_from_slice(b"%{");
        self.need_space = false;
        self.string(partition);
        self.string(guid);
        self.buf.push(b' ');
        push_decimal(&mut self.buf, u64::from(size));
        self.buf.extend_from_slice(b"}\r\n");
        self.need_space = true;
    }

    /// Writes a decoded item with its key, if it has one. File bodies are not in the
    /// tree: `file_body(index)` supplies each one's bytes.
    pub fn item<'a>(
        &mut self,
        item: Item<'_>,
        file_body: &mut dyn FnMut(usize) -> &'a [u8],
    ) -> &mut Self {
        if let Some(key) = item.key() {
            self.string(key);
        }
        self.item_value(item, file_body);
        self
    }

    fn item_value<'a>(&mut self, item: Item<'_>, file_body: &mut dyn FnMut(usize) -> &'a [u8]) {
        match item.kind() {
            Kind::Nil => {
                self.nil();
            }
            Kind::String => {
                self.string(item.bytes().unwrap_or_default());
            }
            Kind::Flag => {
                self.flag(item.bytes().unwrap_or_default());
            }
            Kind::List | Kind::KvList => {
                if item.kind() == Kind::List {
                    self.begin_list();
                } else {
                    self.begin_kvlist();
                }
                for child in item.children() {
                    self.item(child, file_body);
                }
                self.end();
            }
            Kind::File => {
                if let Some(file) = item.file() {
                    self.file_value_header(file.partition, file.guid, file.size);
                    let body = file_body(file.index);
                    self.raw(body);
                }
            }
        }
    }

    /// Writes the whole tree of `list` (root with its key).
    pub fn dlist<'a>(
        &mut self,
        list: &Dlist,
        file_body: &mut dyn FnMut(usize) -> &'a [u8],
    ) -> &mut Self {
        if let Some(root) = list.root() {
            self.item(root, file_body);
        }
        self
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut Encoder)) -> String {
        let mut e = Encoder::new(LiteralStyle::NonSynchronizing);
        f(&mut e);
        String::from_utf8(e.into_bytes()).unwrap()
    }

    #[test]
    fn string_forms_follow_cyrus() {
        assert_eq!(string_form(b"user.john"), StringForm::Atom);
        assert_eq!(string_form(b"\x1f"), StringForm::Atom);
        assert_eq!(string_form(b""), StringForm::Quoted);
        assert_eq!(string_form(b"NIL"), StringForm::Quoted);
        assert_eq!(string_form(b"nil"), StringForm::Atom);
        assert_eq!(string_form(b"user.john.Other Stuff"), StringForm::Quoted);
        assert_eq!(string_form(b"john\tlrs\t"), StringForm::Quoted);
        assert_eq!(string_form(b"a*b"), StringForm::Quoted);
        assert_eq!(string_form(b"a{b"), StringForm::Quoted);
        assert_eq!(string_form(b"\x7f"), StringForm::Quoted);
        assert_eq!(string_form(b"a\"b"), StringForm::Literal);
        assert_eq!(string_form(b"100%"), StringForm::Literal);
        assert_eq!(string_form(b"a\\b"), StringForm::Literal);
        assert_eq!(string_form(b"line\r\n"), StringForm::Literal);
        assert_eq!(string_form("é".as_bytes()), StringForm::Literal);
        assert_eq!(string_form(b"a\0b"), StringForm::Literal);
        assert_eq!(string_form(&[b'a'; 1023]), StringForm::Atom);
        assert_eq!(string_form(&[b'a'; 1024]), StringForm::Literal);
    }

    #[test]
    fn kvlist_and_list_spacing() {
        let s = enc(|e| {
            e.word("APPLY").key("SUB").begin_kvlist();
            e.key("USERID").string(b"john");
            e.key("FLAGS")
                .begin_list()
                .flag(b"\\Seen")
                .flag(b"$Label1")
                .end();
            e.key("EMPTY").begin_list().end();
            e.end().end_line();
        });
        assert_eq!(
            s,
            "APPLY SUB %(USERID john FLAGS (\\Seen $Label1) EMPTY ())\r\n"
        );
    }

    #[test]
    fn literal_spelling_depends_on_direction() {
        let s = enc(|e| {
            e.string(b"a\r\nb");
        });
        assert_eq!(s, "{4+}\r\na\r\nb");
        let mut e = Encoder::new(LiteralStyle::Synchronizing);
        e.string(b"a\r\nb");
        assert_eq!(e.bytes(), b"{4}\r\na\r\nb");
    }

    #[test]
    fn numbers_hex_and_files() {
        let guid = crate::Guid::parse(b"edaa9f52a858bda063269730eb4f9881ad296e5e").unwrap();
        let s = enc(|e| {
            e.begin_list().num(0).num(u64::MAX).hex64(0xabc).end();
            e.begin_list().file_header(b"default", &guid, 3).raw(b"abc");
            e.file_header(b"default", &guid, 0).end();
        });
        assert_eq!(
            s,
            "(0 18446744073709551615 0000000000000abc) \
             (%{default edaa9f52a858bda063269730eb4f9881ad296e5e 3}\r\nabc \
             %{default edaa9f52a858bda063269730eb4f9881ad296e5e 0}\r\n)"
        );
    }
}
