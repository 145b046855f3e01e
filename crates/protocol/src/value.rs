//! The dlist value model (spec §2.1) and Cyrus's typed reads (spec §2.6).
//!
//! On the wire a dlist has no types: numbers, dates and GUIDs travel as atoms and the
//! receiver converts a string when it reads a field as a given type. A decoded line is
//! therefore a tree of four shapes only (string, flag, list, kvlist, plus NIL and file
//! literals), stored flat in a [`Dlist`] arena so that decoding a 10,000-record mailbox
//! allocates nothing per record once the arena has grown.
//!
//! [`Value`] is the owned, convenient form of the same tree, for building values in code
//! and in tests.

use std::fmt;

pub(crate) const NONE: u32 = u32::MAX;

/// The shape of a decoded dlist node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The unquoted atom `NIL`.
    Nil,
    /// An atom, quoted string or literal (the wire does not say which type it is).
    String,
    /// An atom that starts with a backslash (`\Seen`).
    Flag,
    /// `( ... )`: children without keys.
    List,
    /// `%( ... )`: children with keys.
    KvList,
    /// `%{partition guid size}` followed by the message bytes, which went to a
    /// [`FileSink`](crate::FileSink) and are not kept here.
    File,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub(crate) const EMPTY: Span = Span { start: 0, end: 0 };
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub kind: Kind,
    pub has_key: bool,
    pub key: Span,
    /// String/flag bytes, or the file's partition.
    pub text: Span,
    /// The file's GUID text.
    pub guid: Span,
    /// File size, or the number of children of a container.
    pub size: u32,
    /// Ordinal of a file literal within its line.
    pub file_index: u32,
    pub first_child: u32,
    pub last_child: u32,
    pub next_sibling: u32,
}

/// A decoded dlist tree stored flat: one byte buffer for all strings and one node array.
/// Cleared and reused line after line.
#[derive(Clone, Default)]
pub struct Dlist {
    pub(crate) bytes: Vec<u8>,
    pub(crate) nodes: Vec<Node>,
}

impl fmt::Debug for Dlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.root() {
            Some(root) => write!(f, "Dlist({})", root.to_value_keyed()),
            None => f.write_str("Dlist(empty)"),
        }
    }
}

impl Dlist {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.nodes.clear();
    }

    /// The top-level value (the first node), if any.
    pub fn root(&self) -> Option<Item<'_>> {
        if self.nodes.is_empty() {
            None
        } else {
            Some(Item {
                list: self,
                index: 0,
            })
        }
    }

    /// Heap bytes the arena holds (its capacity, not its contents): what decoding
    /// a line costs in memory, since the arena is reused and never shrinks.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>() + self.bytes.capacity()
    }

    /// Nodes currently in the arena.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn item(&self, index: u32) -> Item<'_> {
        Item { list: self, index }
    }

    pub(crate) fn slice(&self, span: Span) -> &[u8] {
        &self.bytes[span.start as usize..span.end as usize]
    }

    /// Appends `node` as a child of `parent` (or as a root when `parent` is NONE).
    pub(crate) fn push_node(&mut self, parent: u32, node: Node) -> u32 {
        let index = self.nodes.len() as u32;
        self.nodes.push(node);
        if parent != NONE {
            let p = &mut self.nodes[parent as usize];
            let last = p.last_child;
            p.last_child = index;
            p.size += 1;
            if last == NONE {
                p.first_child = index;
            } else {
                self.nodes[last as usize].next_sibling = index;
            }
        }
        index
    }

    /// Builds the flat form of an owned value (used by tests and tools).
    pub fn from_value(key: Option<&[u8]>, value: &Value) -> Dlist {
        let mut list = Dlist::new();
        list.append_value(NONE, key, value);
        list
    }

    fn append_bytes(&mut self, bytes: &[u8]) -> Span {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(bytes);
        Span {
            start,
            end: self.bytes.len() as u32,
        }
    }

    fn append_value(&mut self, parent: u32, key: Option<&[u8]>, value: &Value) {
        let key_span = key.map(|k| self.append_bytes(k)).unwrap_or(Span::EMPTY);
        let mut node = Node {
            kind: Kind::Nil,
            has_key: key.is_some(),
            key: key_span,
            text: Span::EMPTY,
            guid: Span::EMPTY,
            size: 0,
            file_index: 0,
            first_child: NONE,
            last_child: NONE,
            next_sibling: NONE,
        };
        match value {
            Value::Nil => {
                self.push_node(parent, node);
            }
            Value::String(s) => {
                node.kind = Kind::String;
                node.text = self.append_bytes(s);
                self.push_node(parent, node);
            }
            Value::Flag(s) => {
                node.kind = Kind::Flag;
                node.text = self.append_bytes(s);
                self.push_node(parent, node);
            }
            Value::File(file) => {
                node.kind = Kind::File;
                node.text = self.append_bytes(&file.partition);
                node.guid = self.append_bytes(&file.guid);
                node.size = file.body.len() as u32;
                node.file_index = self.nodes.iter().filter(|n| n.kind == Kind::File).count() as u32;
                self.push_node(parent, node);
            }
            Value::List(items) => {
                node.kind = Kind::List;
                let me = self.push_node(parent, node);
                for item in items {
                    self.append_value(me, None, item);
                }
            }
            Value::KvList(items) => {
                node.kind = Kind::KvList;
                let me = self.push_node(parent, node);
                for (k, item) in items {
                    self.append_value(me, Some(k), item);
                }
            }
        }
    }
}

/// A borrowed view of one node of a [`Dlist`].
#[derive(Clone, Copy)]
pub struct Item<'a> {
    list: &'a Dlist,
    index: u32,
}

impl fmt::Debug for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_value_keyed())
    }
}

/// Why a field could not be read as the type asked for (spec §2.6).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    #[error("expected a string, found {0:?}")]
    NotAString(Kind),
    #[error("expected a list, found {0:?}")]
    NotAList(Kind),
    #[error("expected a kvlist, found {0:?}")]
    NotAKvList(Kind),
    #[error("not a decimal number: {0:?}")]
    BadNumber(String),
    #[error("not a hexadecimal number: {0:?}")]
    BadHex(String),
    #[error("not a 40-digit hex GUID: {0:?}")]
    BadGuid(String),
    #[error("string contains a NUL byte")]
    Nul,
    #[error("string is not valid UTF-8")]
    NotUtf8,
}

impl<'a> Item<'a> {
    fn node(&self) -> &'a Node {
        &self.list.nodes[self.index as usize]
    }

    pub fn kind(&self) -> Kind {
        self.node().kind
    }

    /// The key this value carries (kvlist children and top-level values), if any.
    pub fn key(&self) -> Option<&'a [u8]> {
        let node = self.node();
        node.has_key.then(|| self.list.slice(node.key))
    }

    pub fn is_nil(&self) -> bool {
        self.kind() == Kind::Nil
    }

    /// The bytes of a string or flag; `None` for NIL, containers and files.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        let node = self.node();
        match node.kind {
            Kind::String | Kind::Flag => Some(self.list.slice(node.text)),
            _ => None,
        }
    }

    /// Number of children of a list or kvlist (0 for anything else).
    pub fn len(&self) -> usize {
        match self.kind() {
            Kind::List | Kind::KvList => self.node().size as usize,
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Children of a list or kvlist, in wire order.
    pub fn children(&self) -> Children<'a> {
        let node = self.node();
        let next = match node.kind {
            Kind::List | Kind::KvList => node.first_child,
            _ => NONE,
        };
        Children {
            list: self.list,
            next,
        }
    }

    /// The first child of a kvlist whose key equals `key` (case-sensitive, as Cyrus).
    pub fn get(&self, key: &str) -> Option<Item<'a>> {
        if self.kind() != Kind::KvList {
            return None;
        }
        self.children().find(|c| c.key() == Some(key.as_bytes()))
    }

    /// For a file literal: (partition, guid text, size, ordinal in the line).
    pub fn file(&self) -> Option<FileRef<'a>> {
        let node = self.node();
        (node.kind == Kind::File).then(|| FileRef {
            partition: self.list.slice(node.text),
            guid: self.list.slice(node.guid),
            size: node.size,
            index: node.file_index as usize,
        })
    }

    /// A string value (atom, quoted or literal); NIL and containers are errors.
    pub fn string(&self) -> Result<&'a [u8], TypeError> {
        match self.kind() {
            Kind::String | Kind::Flag => Ok(self.bytes().unwrap_or_default()),
            other => Err(TypeError::NotAString(other)),
        }
    }

    /// Cyrus's "atom" read: any string without NUL; NIL reads as absent.
    pub fn atom(&self) -> Result<Option<&'a [u8]>, TypeError> {
        if self.is_nil() {
            return Ok(None);
        }
        let s = self.string()?;
        if s.contains(&0) {
            return Err(TypeError::Nul);
        }
        Ok(Some(s))
    }

    /// Like [`Item::atom`] but as UTF-8 text (mailbox names are modified UTF-7, so ASCII).
    pub fn text(&self) -> Result<&'a str, TypeError> {
        let s = self.atom()?.unwrap_or_default();
        std::str::from_utf8(s).map_err(|_| TypeError::NotUtf8)
    }

    /// Unsigned 64-bit decimal (spec §2.6): digits only, at least one, no overflow.
    pub fn num64(&self) -> Result<u64, TypeError> {
        parse_num64(self.string()?)
    }

    /// num64 silently truncated to 32 bits, exactly as Cyrus does.
    pub fn num32(&self) -> Result<u32, TypeError> {
        Ok(self.num64()? as u32)
    }

    /// Hexadecimal (either case), at most 16 significant digits.
    pub fn hex64(&self) -> Result<u64, TypeError> {
        parse_hex64(self.string()?)
    }

    /// Exactly 40 hex characters.
    pub fn guid(&self) -> Result<crate::Guid, TypeError> {
        crate::Guid::parse(self.string()?)
    }

    /// Converts to the owned model, dropping the key.
    pub fn to_value(self) -> Value {
        let node = self.node();
        match node.kind {
            Kind::Nil => Value::Nil,
            Kind::String => Value::String(self.list.slice(node.text).to_vec()),
            Kind::Flag => Value::Flag(self.list.slice(node.text).to_vec()),
            Kind::File => Value::File(FileValue {
                partition: self.list.slice(node.text).to_vec(),
                guid: self.list.slice(node.guid).to_vec(),
                body: Vec::new(),
            }),
            Kind::List => Value::List(self.children().map(|c| c.to_value()).collect()),
            Kind::KvList => Value::KvList(
                self.children()
                    .map(|c| (c.key().unwrap_or_default().to_vec(), c.to_value()))
                    .collect(),
            ),
        }
    }

    fn to_value_keyed(self) -> String {
        match self.key() {
            Some(k) => format!("{} {}", String::from_utf8_lossy(k), self.to_value()),
            None => self.to_value().to_string(),
        }
    }
}

/// A file literal's header as decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRef<'a> {
    pub partition: &'a [u8],
    pub guid: &'a [u8],
    pub size: u32,
    pub index: usize,
}

/// Iterator over the children of a list or kvlist.
#[derive(Clone, Debug)]
pub struct Children<'a> {
    list: &'a Dlist,
    next: u32,
}

impl<'a> Iterator for Children<'a> {
    type Item = Item<'a>;
    fn next(&mut self) -> Option<Item<'a>> {
        if self.next == NONE {
            return None;
        }
        let item = Item {
            list: self.list,
            index: self.next,
        };
        self.next = self.list.nodes[self.next as usize].next_sibling;
        Some(item)
    }
}

pub(crate) fn parse_num64(s: &[u8]) -> Result<u64, TypeError> {
    let bad = || TypeError::BadNumber(String::from_utf8_lossy(s).into_owned());
    if s.is_empty() {
        return Err(bad());
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return Err(bad());
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    Ok(n)
}

pub(crate) fn parse_hex64(s: &[u8]) -> Result<u64, TypeError> {
    let bad = || TypeError::BadHex(String::from_utf8_lossy(s).into_owned());
    if s.is_empty() {
        return Err(bad());
    }
    let mut n: u64 = 0;
    for &b in s {
        let d = (b as char).to_digit(16).ok_or_else(bad)?;
        if n >> 60 != 0 {
            return Err(bad());
        }
        n = (n << 4) | u64::from(d);
    }
    Ok(n)
}

/// An owned dlist value: the convenient form for building values and for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Nil,
    String(Vec<u8>),
    Flag(Vec<u8>),
    List(Vec<Value>),
    KvList(Vec<(Vec<u8>, Value)>),
    File(FileValue),
}

/// An owned file literal with its bytes in memory (tests and small tools only: the
/// real paths stream bodies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileValue {
    pub partition: Vec<u8>,
    pub guid: Vec<u8>,
    pub body: Vec<u8>,
}

impl Value {
    pub fn str(s: impl AsRef<[u8]>) -> Value {
        Value::String(s.as_ref().to_vec())
    }

    pub fn num(n: u64) -> Value {
        Value::String(n.to_string().into_bytes())
    }

    pub fn kv<K: AsRef<[u8]>>(items: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::KvList(
            items
                .into_iter()
                .map(|(k, v)| (k.as_ref().to_vec(), v))
                .collect(),
        )
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut enc = crate::Encoder::new(crate::LiteralStyle::Synchronizing);
        enc.value(self);
        f.write_str(&String::from_utf8_lossy(enc.bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num64_follows_cyrus_rules() {
        assert_eq!(parse_num64(b"0"), Ok(0));
        assert_eq!(parse_num64(b"18446744073709551615"), Ok(u64::MAX));
        assert!(parse_num64(b"18446744073709551616").is_err());
        assert!(parse_num64(b"").is_err());
        assert!(parse_num64(b"-1").is_err());
        assert!(parse_num64(b"+1").is_err());
        assert!(parse_num64(b"1 ").is_err());
    }

    #[test]
    fn num32_truncates_silently() {
        let list = Dlist::from_value(None, &Value::str("4294967297"));
        assert_eq!(list.root().unwrap().num32(), Ok(1));
    }

    #[test]
    fn hex64_accepts_both_cases_and_16_digits() {
        assert_eq!(parse_hex64(b"00000000000000fF"), Ok(255));
        assert_eq!(parse_hex64(b"ffffffffffffffff"), Ok(u64::MAX));
        assert!(parse_hex64(b"1ffffffffffffffff").is_err());
        assert_eq!(parse_hex64(b"0001ffffffffffffffff").ok(), None);
        assert!(parse_hex64(b"xyz").is_err());
    }

    #[test]
    fn nil_is_absent_but_quoted_nil_is_a_string() {
        let list = Dlist::from_value(None, &Value::List(vec![Value::Nil, Value::str("NIL")]));
        let root = list.root().unwrap();
        let items: Vec<_> = root.children().collect();
        assert_eq!(items[0].atom(), Ok(None));
        assert_eq!(items[1].atom(), Ok(Some(&b"NIL"[..])));
    }

    #[test]
    fn kvlist_lookup_is_case_sensitive() {
        let list = Dlist::from_value(None, &Value::kv([("UID", Value::num(7))]));
        let root = list.root().unwrap();
        assert_eq!(root.get("UID").unwrap().num32(), Ok(7));
        assert!(root.get("uid").is_none());
    }
}
