//! Crash safety. A writer process runs a seeded random stream of operations through the
//! store's public API, printing `begin <op>` before and `ack <outcome>` after each one
//! that returned Ok, and is SIGKILLed 2–60 ms (seeded) after it has opened the store
//! and printed `ready`. The parent then reopens the store and checks that:
//!
//! * `verify(None, true)` finds no problem (unreferenced leftovers are allowed);
//! * the store equals the model of every acknowledged operation, or that model with
//!   the one begun-but-unacknowledged operation applied (it may or may not have
//!   committed), nothing in between;
//! * `repair` (every 20 kills) removes the leftovers and changes nothing else.
//!
//! The same executable is the writer when `CSYNC_CRASH_WRITER` is set (this is a
//! `harness = false` test). It ends with `N passed, 0 failed`, N being the kills.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use csync_mailstore::files::hash_reader;
use csync_mailstore::local::{FlagOp, Flags};
use csync_mailstore::{DeleteMode, ExpungeMode, Store, StoreConfig};
use csync_protocol::{Guid, SystemFlags};

const ITERATIONS: u32 = 200;
const SEED: u64 = 0x6373_796e_6321;
const WRITER_ENV: &str = "CSYNC_CRASH_WRITER";
/// Users whose INBOXes are created first and never renamed or deleted.
const USERS: [&str; 3] = ["u0", "u1", "u2"];
const PARTITIONS: [&str; 2] = ["default", "p2"];
const FLAGS: [&str; 8] = [
    "\\Seen",
    "\\Flagged",
    "\\Deleted",
    "\\Answered",
    "\\Draft",
    "$Label1",
    "$Junk",
    "todo",
];
/// Above this many message files the generator expunges and deletes more than it
/// delivers, so `verify` (which hashes every file) stays fast.
const MAX_FILES: usize = 300;

// ---------------------------------------------------------------------------------
// Randomness and messages

/// SplitMix64: small, seedable, good enough to drive a test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    /// An index drawn with the given weights.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut x = self.next() % weights.iter().sum::<u64>();
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        unreachable!("x < sum of weights")
    }
    /// 1..=max distinct items, in order.
    fn some<T: Clone + Ord>(&mut self, items: &[T], max: usize) -> Vec<T> {
        let n = 1 + self.below(max);
        let set: BTreeSet<T> = (0..n).map(|_| self.pick(items).clone()).collect();
        set.into_iter().collect()
    }
    fn flags(&mut self, percent: u64) -> Vec<String> {
        FLAGS
            .iter()
            .filter(|_| self.chance(percent))
            .map(|f| f.to_string())
            .collect()
    }
}

/// A deterministic RFC 822 message of exactly `len` bytes.
fn message(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "mail", "replica", "sync", "the", "of", "crash", "durable", "index", "and", "Cyrus",
        "message", "fsync",
    ];
    let mut rng = Rng(seed);
    let mut m = format!(
        "From: u{}@example.com\r\nTo: u0@example.com\r\nSubject: crash test {seed}\r\n\
         Message-ID: <{seed}@csync.test>\r\n\r\n",
        seed % 3
    )
    .into_bytes();
    let mut column = 0;
    while m.len() < len {
        let word = rng.pick(&WORDS);
        m.extend_from_slice(word.as_bytes());
        column += word.len() + 1;
        m.extend_from_slice(if column > 70 { b"\r\n" } else { b" " });
        column = if column > 70 { 0 } else { column };
    }
    m.truncate(len);
    m
}

fn guid_of(seed: u64, len: usize) -> Guid {
    hash_reader(&message(seed, len)[..])
        .expect("hashing memory")
        .0
}

// ---------------------------------------------------------------------------------
// Operations, as the writer prints them

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Create {
        name: String,
        partition: String,
    },
    Deliver {
        mailbox: String,
        seed: u64,
        len: usize,
        flags: Vec<String>,
    },
    /// `how`: `+`, `-` or `=` (add, remove, replace).
    Store {
        mailbox: String,
        uids: Vec<u32>,
        how: char,
        flags: Vec<String>,
    },
    /// `uids: None`: every `\Deleted` message.
    Expunge {
        mailbox: String,
        uids: Option<Vec<u32>>,
    },
    Rename {
        from: String,
        to: String,
        partition: Option<String>,
    },
    Delete {
        mailbox: String,
    },
    Subscribe {
        user: String,
        mailbox: String,
        on: bool,
    },
    /// `mailbox` empty: a server annotation; `value: None` removes.
    Annotate {
        mailbox: String,
        entry: String,
        userid: String,
        value: Option<String>,
    },
    Quota {
        root: String,
        storage: Option<u32>,
        messages: Option<u32>,
    },
    Unquota {
        root: String,
    },
}

/// `-` for nothing, else the items joined by commas.
fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    let words: Vec<String> = items.iter().map(T::to_string).collect();
    words.join(",")
}

fn dash(word: Option<impl fmt::Display>) -> String {
    word.map_or("-".into(), |w| w.to_string())
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create { name, partition } => write!(f, "create {name} {partition}"),
            Op::Deliver {
                mailbox,
                seed,
                len,
                flags,
            } => write!(f, "deliver {mailbox} {seed} {len} {}", list(flags)),
            Op::Store {
                mailbox,
                uids,
                how,
                flags,
            } => write!(f, "store {mailbox} {} {how} {}", list(uids), list(flags)),
            Op::Expunge { mailbox, uids } => match uids {
                Some(uids) => write!(f, "expunge {mailbox} {}", list(uids)),
                None => write!(f, "expunge {mailbox} deleted"),
            },
            Op::Rename {
                from,
                to,
                partition,
            } => write!(f, "rename {from} {to} {}", dash(partition.as_ref())),
            Op::Delete { mailbox } => write!(f, "delete {mailbox}"),
            Op::Subscribe { user, mailbox, on } => write!(f, "subscribe {user} {mailbox} {on}"),
            Op::Annotate {
                mailbox,
                entry,
                userid,
                value,
            } => write!(
                f,
                "annotate {} {entry} {} {}",
                dash(non_empty(mailbox)),
                dash(non_empty(userid)),
                dash(value.as_ref())
            ),
            Op::Quota {
                root,
                storage,
                messages,
            } => write!(f, "quota {root} {} {}", dash(*storage), dash(*messages)),
            Op::Unquota { root } => write!(f, "unquota {root}"),
        }
    }
}

impl Op {
    /// The inverse of `Display`.
    fn parse(line: &str) -> Op {
        let w: Vec<&str> = line.split(' ').collect();
        let s = |i: usize| w[i].to_owned();
        let opt = |i: usize| (w[i] != "-").then(|| w[i].to_owned());
        let num = |i: usize| opt(i).map(|n| n.parse().expect("number"));
        let words = |i: usize| -> Vec<String> {
            opt(i).map_or(Vec::new(), |l| l.split(',').map(str::to_owned).collect())
        };
        let uids =
            |i: usize| -> Vec<u32> { words(i).iter().map(|u| u.parse().expect("uid")).collect() };
        match w[0] {
            "create" => Op::Create {
                name: s(1),
                partition: s(2),
            },
            "deliver" => Op::Deliver {
                mailbox: s(1),
                seed: w[2].parse().expect("seed"),
                len: w[3].parse().expect("len"),
                flags: words(4),
            },
            "store" => Op::Store {
                mailbox: s(1),
                uids: uids(2),
                how: w[3].parse().expect("+, - or ="),
                flags: words(4),
            },
            "expunge" => Op::Expunge {
                mailbox: s(1),
                uids: (w[2] != "deleted").then(|| uids(2)),
            },
            "rename" => Op::Rename {
                from: s(1),
                to: s(2),
                partition: opt(3),
            },
            "delete" => Op::Delete { mailbox: s(1) },
            "subscribe" => Op::Subscribe {
                user: s(1),
                mailbox: s(2),
                on: w[3] == "true",
            },
            "annotate" => Op::Annotate {
                mailbox: opt(1).unwrap_or_default(),
                entry: s(2),
                userid: opt(3).unwrap_or_default(),
                value: opt(4),
            },
            "quota" => Op::Quota {
                root: s(1),
                storage: num(2),
                messages: num(3),
            },
            "unquota" => Op::Unquota { root: s(1) },
            _ => panic!("unknown operation {line:?}"),
        }
    }

    /// Runs the operation; returns what the model cannot predict (a new mailbox's
    /// uniqueid, where a delayed delete put the mailbox) or the uid of a delivery.
    fn execute(&self, store: &mut Store) -> csync_mailstore::Result<String> {
        let flags = |words: &[String]| Flags::parse(words.iter().map(String::as_str));
        match self {
            Op::Create { name, partition } => {
                // CREATE also makes missing parents: report every mailbox it made,
                // outermost first, as `name=uniqueid,...`.
                let chain = with_ancestors(name);
                let mut before = Vec::new();
                for n in &chain {
                    before.push(store.mailbox(n)?.is_some_and(|m| m.is_real()));
                }
                store.create_mailbox(name, Some(partition), None)?;
                let mut made = Vec::new();
                for (n, existed) in chain.iter().zip(before) {
                    if !existed && let Some(m) = store.mailbox(n)? {
                        made.push(format!("{n}={}", m.state.uniqueid));
                    }
                }
                return Ok(made.join(","));
            }
            Op::Deliver {
                mailbox,
                seed,
                len,
                flags: f,
            } => {
                let uid = store.deliver(mailbox, &message(*seed, *len)[..], &flags(f)?, None)?;
                return Ok(uid.to_string());
            }
            Op::Store {
                mailbox,
                uids,
                how,
                flags: f,
            } => {
                let op = match how {
                    '+' => FlagOp::Add,
                    '-' => FlagOp::Remove,
                    _ => FlagOp::Replace,
                };
                store.store_flags(mailbox, uids, op, &flags(f)?)?;
            }
            Op::Expunge { mailbox, uids } => {
                store.expunge(mailbox, uids.as_deref())?;
            }
            Op::Rename {
                from,
                to,
                partition,
            } => store.rename_mailbox(from, to, partition.as_deref())?,
            Op::Delete { mailbox } => {
                let uniqueid = store.real_mailbox(mailbox)?.state.uniqueid;
                store.delete_mailbox(mailbox)?;
                let moved = store.mailbox_by_uniqueid(&uniqueid)?;
                return Ok(moved.map(|m| m.name().to_owned()).unwrap_or_default());
            }
            Op::Subscribe { user, mailbox, on } => store.subscribe(user, mailbox, *on)?,
            Op::Annotate {
                mailbox,
                entry,
                userid,
                value,
            } => {
                store.set_annotation(mailbox, entry, userid, value.as_deref().map(str::as_bytes))?
            }
            Op::Quota {
                root,
                storage,
                messages,
            } => store.set_quota(root, *storage, *messages)?,
            Op::Unquota { root } => store.remove_quota(root)?,
        }
        Ok(String::new())
    }
}

// ---------------------------------------------------------------------------------
// The model: what the store must hold

type Annotations = BTreeMap<(String, String), String>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    mailboxes: BTreeMap<String, Mbox>,
    /// (userid, mailbox name)
    subscriptions: BTreeSet<(String, String)>,
    server_annotations: Annotations,
    /// root → (storage KiB, messages)
    quotas: BTreeMap<String, (Option<u32>, Option<u32>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Mbox {
    uniqueid: String,
    partition: String,
    tombstone: bool,
    last_uid: u32,
    records: BTreeMap<u32, Msg>,
    annotations: Annotations,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Msg {
    guid: Guid,
    /// System (without `\Expunged`) and user flags.
    flags: BTreeSet<String>,
    expunged: bool,
    has_file: bool,
}

fn annotations(list: &[csync_protocol::Annotation]) -> Annotations {
    list.iter()
        .map(|a| {
            let value = String::from_utf8_lossy(&a.value).into_owned();
            ((a.entry.clone(), a.userid.clone()), value)
        })
        .collect()
}

/// `DELETED.<name>.<hex time>`, as a delayed delete names a mailbox.
fn is_deleted_name_of(deleted: &str, name: &str) -> bool {
    deleted
        .strip_prefix(&format!("DELETED.{name}."))
        .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Model {
    /// Everything the model covers, as the store has it.
    fn read(store: &Store) -> Model {
        let mut model = Model::default();
        store
            .for_each_mailbox(None, |m| {
                let mut records = BTreeMap::new();
                store.for_each_record(m.id, 0, |r| {
                    let system = r.record.system_flags;
                    let mut flags: BTreeSet<String> = SystemFlags::ALL
                        .iter()
                        .filter(|(f, _)| *f != SystemFlags::EXPUNGED && system.contains(*f))
                        .map(|(_, name)| name.to_string())
                        .collect();
                    flags.extend(r.record.user_flags.iter().cloned());
                    let msg = Msg {
                        guid: r.record.guid,
                        flags,
                        expunged: r.record.is_expunged(),
                        has_file: r.has_file,
                    };
                    records.insert(r.record.uid, msg);
                    Ok(())
                })?;
                let mbox = Mbox {
                    uniqueid: m.state.uniqueid.clone(),
                    partition: m.state.partition.clone(),
                    tombstone: m.is_tombstone(),
                    last_uid: m.state.last_uid,
                    records,
                    annotations: annotations(&m.state.annotations),
                };
                model.mailboxes.insert(m.name().to_owned(), mbox);
                Ok(())
            })
            .expect("reading mailboxes");
        for user in USERS {
            for name in store.subscriptions(user).expect("subscriptions") {
                model.subscriptions.insert((user.to_owned(), name));
            }
        }
        model.server_annotations =
            annotations(&store.mailbox_annotations(0).expect("server annotations"));
        for root in store.quota_roots().expect("quota roots") {
            let q = store.quota(&root).expect("quota").expect("listed root");
            model.quotas.insert(root, (q.storage, q.message));
        }
        model
    }

    fn mbox(&mut self, name: &str) -> &mut Mbox {
        self.mailboxes
            .get_mut(name)
            .unwrap_or_else(|| panic!("model has no mailbox {name}"))
    }

    /// Applies an operation that returned `outcome` (see [`Op::execute`]), in the
    /// store's `immediate` (delete and expunge) mode or not.
    fn apply(&mut self, op: &Op, outcome: &str, immediate: bool) {
        match op {
            Op::Create { name, partition } => {
                for made in outcome.split(',').filter(|m| !m.is_empty()) {
                    let (made_name, uniqueid) = made
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad create outcome {outcome:?} of {name}"));
                    let mbox = Mbox {
                        uniqueid: uniqueid.to_owned(),
                        partition: partition.clone(),
                        tombstone: false,
                        last_uid: 0,
                        records: BTreeMap::new(),
                        annotations: Annotations::new(),
                    };
                    self.mailboxes.insert(made_name.to_owned(), mbox);
                }
            }
            Op::Deliver {
                mailbox,
                seed,
                len,
                flags,
            } => {
                let m = self.mbox(mailbox);
                m.last_uid += 1;
                if !outcome.is_empty() {
                    assert_eq!(outcome, m.last_uid.to_string(), "uid of {op}");
                }
                let msg = Msg {
                    guid: guid_of(*seed, *len),
                    flags: flags.iter().cloned().collect(),
                    expunged: false,
                    has_file: true,
                };
                m.records.insert(m.last_uid, msg);
            }
            Op::Store {
                mailbox,
                uids,
                how,
                flags,
            } => {
                let m = self.mbox(mailbox);
                for uid in uids {
                    let Some(r) = m.records.get_mut(uid).filter(|r| !r.expunged) else {
                        continue;
                    };
                    match how {
                        '+' => r.flags.extend(flags.iter().cloned()),
                        '-' => r.flags.retain(|f| !flags.contains(f)),
                        _ => r.flags = flags.iter().cloned().collect(),
                    }
                }
            }
            Op::Expunge { mailbox, uids } => {
                for (uid, r) in &mut self.mbox(mailbox).records {
                    let wanted = match uids {
                        Some(uids) => uids.contains(uid),
                        None => r.flags.contains("\\Deleted"),
                    };
                    if wanted && !r.expunged {
                        r.expunged = true;
                        r.has_file &= !immediate;
                    }
                }
            }
            Op::Rename {
                from,
                to,
                partition,
            } => {
                let subtree: Vec<String> = self
                    .mailboxes
                    .iter()
                    .filter(|(name, m)| {
                        !m.tombstone
                            && (*name == from
                                || name
                                    .strip_prefix(from.as_str())
                                    .is_some_and(|s| s.starts_with('.')))
                    })
                    .map(|(name, _)| name.clone())
                    .collect();
                for old in subtree {
                    let mut m = self.mailboxes.remove(&old).expect("listed");
                    if let Some(p) = partition {
                        m.partition = p.clone();
                    }
                    self.mailboxes
                        .insert(format!("{to}{}", &old[from.len()..]), m);
                }
            }
            Op::Delete { mailbox } => {
                if immediate || mailbox.starts_with("DELETED.") {
                    let m = self.mbox(mailbox);
                    m.tombstone = true;
                    m.last_uid = 0;
                    m.records.clear();
                    m.annotations.clear();
                } else {
                    let m = self.mailboxes.remove(mailbox).expect("deleted mailbox");
                    self.mailboxes.insert(outcome.to_owned(), m);
                }
            }
            Op::Subscribe { user, mailbox, on } => {
                let key = (user.clone(), mailbox.clone());
                if *on {
                    self.subscriptions.insert(key);
                } else {
                    self.subscriptions.remove(&key);
                }
            }
            Op::Annotate {
                mailbox,
                entry,
                userid,
                value,
            } => {
                let annotations = if mailbox.is_empty() {
                    &mut self.server_annotations
                } else {
                    &mut self.mbox(mailbox).annotations
                };
                let key = (entry.clone(), userid.clone());
                match value {
                    Some(v) => annotations.insert(key, v.clone()),
                    None => annotations.remove(&key),
                };
            }
            Op::Quota {
                root,
                storage,
                messages,
            } => {
                self.quotas.insert(root.clone(), (*storage, *messages));
            }
            Op::Unquota { root } => {
                self.quotas.remove(root);
            }
        }
    }

    /// The outcome of an unacknowledged `op`, if the store shows it committed.
    fn outcome_in(&self, op: &Op, actual: &Model) -> String {
        let found = match op {
            Op::Create { name, .. } => {
                let made: Vec<String> = with_ancestors(name)
                    .iter()
                    .filter(|n| self.mailboxes.get(*n).is_none_or(|m| m.tombstone))
                    .filter_map(|n| {
                        actual
                            .mailboxes
                            .get(n)
                            .filter(|m| !m.tombstone)
                            .map(|m| format!("{n}={}", m.uniqueid))
                    })
                    .collect();
                (!made.is_empty() && actual.mailboxes.get(name).is_some_and(|m| !m.tombstone))
                    .then(|| made.join(","))
            }
            Op::Delete { mailbox } => {
                let uniqueid = &self.mailboxes[mailbox].uniqueid;
                actual
                    .mailboxes
                    .iter()
                    .find(|(name, m)| m.uniqueid == *uniqueid && is_deleted_name_of(name, mailbox))
                    .map(|(name, _)| name.clone())
            }
            _ => None,
        };
        found.unwrap_or_default()
    }

    /// What differs, record by record, for a failure message.
    fn diff(&self, actual: &Model) -> String {
        let mut out = String::new();
        let mut note = |what: &str, expected: &dyn fmt::Debug, found: &dyn fmt::Debug| {
            let _ = writeln!(out, "  {what}: expected {expected:?}, found {found:?}");
        };
        let header = |m: &Mbox| {
            (
                m.uniqueid.clone(),
                m.partition.clone(),
                m.tombstone,
                m.last_uid,
            )
        };
        let names: BTreeSet<&String> = self
            .mailboxes
            .keys()
            .chain(actual.mailboxes.keys())
            .collect();
        for name in names {
            let (e, a) = (self.mailboxes.get(name), actual.mailboxes.get(name));
            let (Some(e), Some(a)) = (e, a) else {
                note(name, &e.map(header), &a.map(header));
                continue;
            };
            if header(e) != header(a) {
                note(name, &header(e), &header(a));
            }
            let uids: BTreeSet<&u32> = e.records.keys().chain(a.records.keys()).collect();
            for uid in uids {
                let (x, y) = (e.records.get(uid), a.records.get(uid));
                if x != y {
                    note(&format!("{name} uid {uid}"), &x, &y);
                }
            }
            if e.annotations != a.annotations {
                note(
                    &format!("{name} annotations"),
                    &e.annotations,
                    &a.annotations,
                );
            }
        }
        if self.subscriptions != actual.subscriptions {
            note("subscriptions", &self.subscriptions, &actual.subscriptions);
        }
        if self.server_annotations != actual.server_annotations {
            note(
                "server annotations",
                &self.server_annotations,
                &actual.server_annotations,
            );
        }
        if self.quotas != actual.quotas {
            note("quotas", &self.quotas, &actual.quotas);
        }
        out
    }

    /// The next operation: one that is valid in this state, so it must succeed.
    fn generate(&self, rng: &mut Rng, tag: &str) -> Op {
        let inboxes = USERS.map(|u| format!("user.{u}"));
        let real: Vec<&String> = self
            .mailboxes
            .iter()
            .filter(|(_, m)| !m.tombstone)
            .map(|(n, _)| n)
            .collect();
        if let Some(inbox) = inboxes
            .iter()
            .find(|i| self.mailboxes.get(*i).is_none_or(|m| m.tombstone))
        {
            return Op::Create {
                name: inbox.clone(),
                partition: "default".into(),
            };
        }
        let live: Vec<String> = real
            .iter()
            .filter(|n| !n.starts_with("DELETED."))
            .map(|n| n.to_string())
            .collect();
        let movable: Vec<String> = live
            .iter()
            .filter(|n| !inboxes.contains(n))
            .cloned()
            .collect();
        let deletable: Vec<String> = real
            .iter()
            .filter(|n| !inboxes.contains(n))
            .map(|n| n.to_string())
            .collect();
        let with_records: Vec<String> = live
            .iter()
            .filter(|n| !self.mailboxes[*n].records.is_empty())
            .cloned()
            .collect();
        let depth = |name: &str| name.split('.').count();
        let files = self
            .mailboxes
            .values()
            .flat_map(|m| m.records.values())
            .filter(|r| r.has_file)
            .count();
        let full = files > MAX_FILES;
        let weights = [
            if full { 2 } else { 30 },                    // deliver
            14,                                           // store flags
            if full { 15 } else { 8 },                    // expunge
            if live.len() < 20 { 8 } else { 1 },          // create
            6,                                            // rename
            if full || real.len() > 30 { 20 } else { 6 }, // delete
            6,                                            // subscribe
            8,                                            // annotate
            4,                                            // quota
        ];
        loop {
            let op = match rng.weighted(&weights) {
                0 => {
                    // A few bodies recur, so deliveries hard-link the same bytes.
                    let (seed, len) = if rng.chance(25) {
                        let s = rng.below(6);
                        (s as u64, 200 + s * 3500)
                    } else {
                        let len = 200.0 * 100f64.powf(rng.below(1000) as f64 / 1000.0);
                        (rng.next(), len as usize)
                    };
                    Op::Deliver {
                        mailbox: rng.pick(&live).clone(),
                        seed,
                        len,
                        flags: rng.flags(15),
                    }
                }
                1 if !with_records.is_empty() => {
                    let mailbox = rng.pick(&with_records).clone();
                    let uids: Vec<u32> = self.mailboxes[&mailbox].records.keys().copied().collect();
                    let how = *rng.pick(&['+', '-', '=']);
                    let flags = match how {
                        '=' => rng.flags(25),
                        _ => rng.some(&FLAGS, 3).iter().map(|f| f.to_string()).collect(),
                    };
                    Op::Store {
                        uids: rng.some(&uids, 4),
                        mailbox,
                        how,
                        flags,
                    }
                }
                2 if !with_records.is_empty() => {
                    let mailbox = rng.pick(&with_records).clone();
                    let uids: Vec<u32> = self.mailboxes[&mailbox].records.keys().copied().collect();
                    Op::Expunge {
                        uids: rng.chance(50).then(|| rng.some(&uids, 3)),
                        mailbox,
                    }
                }
                3 => {
                    let parent = rng.pick(&live);
                    if depth(parent) > 5 {
                        continue;
                    }
                    Op::Create {
                        name: format!("{parent}.f{tag}"),
                        partition: rng.pick(&PARTITIONS).to_string(),
                    }
                }
                4 if !movable.is_empty() => {
                    let from = rng.pick(&movable).clone();
                    let parent = rng.pick(&live);
                    if depth(parent) > 4
                        || *parent == from
                        || parent.starts_with(&format!("{from}."))
                    {
                        continue;
                    }
                    Op::Rename {
                        to: format!("{parent}.r{tag}"),
                        from,
                        partition: rng.chance(30).then(|| rng.pick(&PARTITIONS).to_string()),
                    }
                }
                5 if !deletable.is_empty() => Op::Delete {
                    mailbox: rng.pick(&deletable).clone(),
                },
                6 => Op::Subscribe {
                    user: rng.pick(&USERS).to_string(),
                    mailbox: rng.pick(&real).to_string(),
                    on: rng.chance(60),
                },
                7 => Op::Annotate {
                    mailbox: if rng.chance(20) {
                        String::new()
                    } else {
                        rng.pick(&live).clone()
                    },
                    entry: rng.pick(&["/comment", "/vendor/csync/note"]).to_string(),
                    userid: rng.pick(&["", "u0"]).to_string(),
                    value: rng.chance(70).then(|| format!("v{tag}")),
                },
                8 => {
                    let root = rng.pick(&live).clone();
                    if self.quotas.contains_key(&root) && rng.chance(30) {
                        Op::Unquota { root }
                    } else {
                        Op::Quota {
                            root,
                            storage: rng.chance(70).then(|| rng.below(100_000) as u32),
                            messages: rng.chance(50).then(|| rng.below(1000) as u32),
                        }
                    }
                }
                _ => continue,
            };
            return op;
        }
    }
}

// ---------------------------------------------------------------------------------
// The two processes

fn config(dir: &Path, immediate: bool) -> StoreConfig {
    let mut config = StoreConfig::single_dir(dir);
    config.partitions.insert("p2".into(), dir.join("spool2"));
    if immediate {
        config.delete_mode = DeleteMode::Immediate;
        config.expunge_mode = ExpungeMode::Immediate;
    }
    config
}

fn say(out: &mut std::io::StdoutLock<'_>, line: &str) {
    out.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| out.flush())
        .expect("writing to the parent");
}

/// The writer: `<dir> <seed> <iteration> <immediate>`; runs until killed.
fn writer(args: &[String]) {
    let [dir, seed, iteration, immediate] = args else {
        panic!("writer arguments: {args:?}");
    };
    let immediate = immediate == "true";
    let mut store = Store::open(config(Path::new(dir), immediate)).expect("opening the store");
    let mut model = Model::read(&store);
    let mut rng = Rng(seed.parse().expect("seed"));
    let mut out = std::io::stdout().lock();
    say(&mut out, "ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    for k in 0.. {
        let op = model.generate(&mut rng, &format!("{iteration}_{k}"));
        say(&mut out, &format!("begin {op}"));
        match op.execute(&mut store) {
            Ok(outcome) => {
                say(&mut out, &format!("ack {}", dash(non_empty(&outcome))));
                model.apply(&op, &outcome, immediate);
            }
            Err(e) => {
                say(&mut out, &format!("error {e}"));
                std::process::exit(1);
            }
        }
        if Instant::now() > deadline {
            say(&mut out, "error not killed within 30 s");
            std::process::exit(1);
        }
    }
}

/// Runs a writer, kills it `delay` after it is ready, returns its complete lines.
fn run_writer(
    dir: &Path,
    seed: u64,
    iteration: u32,
    immediate: bool,
    delay: Duration,
) -> Vec<String> {
    let exe = std::env::current_exe().expect("own executable");
    let mut child = Command::new(exe)
        .env(WRITER_ENV, "1")
        .arg(dir)
        .args([
            seed.to_string(),
            iteration.to_string(),
            immediate.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning the writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let (ready_tx, ready) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut input = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            // A line cut by the kill has no newline and is dropped.
            match input.read_line(&mut line) {
                Ok(_) if line.ends_with('\n') => {
                    line.pop();
                    if line == "ready" {
                        let _ = ready_tx.send(());
                    }
                    lines.push(line);
                }
                _ => return lines,
            }
        }
    });
    let _ = ready.recv_timeout(Duration::from_secs(30));
    std::thread::sleep(delay);
    child.kill().expect("killing the writer");
    let status = child.wait().expect("reaping the writer");
    let lines = reader.join().expect("reader thread");
    if let Some(error) = lines.iter().find(|l| l.starts_with("error ")) {
        panic!("iteration {iteration}: writer failed after {lines:#?}:\n{error}");
    }
    assert_eq!(
        status.signal(),
        Some(9),
        "iteration {iteration}: writer ended by itself: {status}"
    );
    lines
}

#[derive(Debug, Default)]
struct Stats {
    acked: u64,
    committed: u64,
    not_committed: u64,
    leftovers_repaired: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os(WRITER_ENV).is_some() {
        return writer(&args);
    }
    if args.iter().any(|a| a == "--list") {
        println!("crash: test");
        return;
    }
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-'))
        && !"crash".contains(filter.as_str())
    {
        println!("0 passed, 0 failed");
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let dir = tmp.path();
    let mut rng = Rng(SEED);
    let mut model = Model::default();
    let mut stats = Stats::default();
    for iteration in 0..ITERATIONS {
        // Alternate delete_mode and expunge_mode between delayed and immediate.
        let immediate = iteration % 2 == 1;
        let seed = rng.next();
        let delay = Duration::from_millis(2 + rng.below(59) as u64);
        let lines = run_writer(dir, seed, iteration, immediate, delay);

        let mut in_flight: Option<Op> = None;
        for line in &lines {
            if let Some(text) = line.strip_prefix("begin ") {
                let op = Op::parse(text);
                assert_eq!(op.to_string(), text, "operations print and parse back");
                assert!(
                    in_flight.replace(op).is_none(),
                    "begin without ack: {lines:#?}"
                );
            } else if let Some(outcome) = line.strip_prefix("ack ") {
                let op = in_flight.take().expect("ack without begin");
                let outcome = if outcome == "-" { "" } else { outcome };
                model.apply(&op, outcome, immediate);
                stats.acked += 1;
            } else {
                assert_eq!(line, "ready", "unexpected line from the writer");
            }
        }

        let mut store = Store::open(config(dir, immediate)).expect("reopening the store");
        let report = store.verify(None, true).expect("verify");
        assert!(
            report.is_clean(),
            "iteration {iteration}: verify found {:#?}",
            report.problems
        );
        let actual = Model::read(&store);
        if actual == model {
            // (An in-flight operation that changes nothing, such as adding a flag that
            // is already there, counts here too.)
            stats.not_committed += u64::from(in_flight.is_some());
        } else {
            let Some(op) = &in_flight else {
                panic!(
                    "iteration {iteration}: the store lost acknowledged operations:\n{}",
                    model.diff(&actual)
                );
            };
            let mut committed = model.clone();
            committed.apply(op, &model.outcome_in(op, &actual), immediate);
            assert!(
                actual == committed,
                "iteration {iteration}: the store is neither before nor after `{op}`:\n\
                 against before:\n{}against after:\n{}",
                model.diff(&actual),
                committed.diff(&actual)
            );
            stats.committed += 1;
        }
        model = actual;

        if iteration % 20 == 19 {
            stats.leftovers_repaired += report.leftovers.len();
            // Repair spares a delivery's temporary file for a while (it may be a live
            // lmtpd's); every writer here is dead, so age those files past that.
            let day_ago = SystemTime::now() - Duration::from_secs(86_400);
            for path in &report.leftovers {
                if path.to_string_lossy().contains("/.deliver-") {
                    let file = std::fs::File::options().write(true).open(path);
                    file.and_then(|f| f.set_modified(day_ago)).expect("ageing");
                }
            }
            store.repair(&report).expect("repair");
            let after = store.verify(None, true).expect("verify after repair");
            assert!(
                after.is_clean() && after.leftovers.is_empty(),
                "iteration {iteration}: after repair: {after:#?}"
            );
            assert!(Model::read(&store) == model, "repair changed the store");
        }
    }
    println!(
        "crash: {ITERATIONS} kills, {} acked ops, {} in-flight ops found committed, {} not",
        stats.acked, stats.committed, stats.not_committed
    );
    println!(
        "crash: {} leftovers repaired, {} mailbox entries at the end, {:.1} s",
        stats.leftovers_repaired,
        model.mailboxes.len(),
        started.elapsed().as_secs_f64()
    );
    println!("{ITERATIONS} passed, 0 failed");
}

/// `user.u0.a.b` → `user.u0`, `user.u0.a`, `user.u0.a.b`: what a CREATE may make.
fn with_ancestors(name: &str) -> Vec<String> {
    let parts: Vec<&str> = name.split('.').collect();
    (2..=parts.len()).map(|i| parts[..i].join(".")).collect()
}
