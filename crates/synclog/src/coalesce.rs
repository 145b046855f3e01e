//! Turning a log file's records into the work a rolling sync_client does (§4.9
//! steps 1–2), and the owner of a mailbox name (§8.2).
//!
//! Everything is kept in ordered sets, so the same records give the same plan in
//! the same order every time (Cyrus walks its per-user sets in hash order).

use std::collections::{BTreeMap, BTreeSet};

use crate::record::SyncLogRecord;

/// `deletedprefix` when unset.
pub const DEFAULT_DELETED_PREFIX: &str = "DELETED";

/// The user owning an internal mailbox name, as Cyrus's `mboxname_to_userid`
/// computes it: after an optional `<domain>!`, the name is split at dots (empty
/// components dropped, `^` turned back into `.`); a `<deleted_prefix>.` …`.<hex>`
/// wrapper is removed when at least three components remain; then `user.<local>…`
/// belongs to `<local>` (`@<domain>` appended when there is a domain). Anything
/// else belongs to nobody (a shared mailbox).
///
/// Cyrus does not check that the last component of a deleted name is hex, and
/// neither does this. It also drops a domain equal to `defaultdomain`, which it
/// never writes into names in the first place; that case is not handled here.
pub fn mailbox_owner(internal_name: &str, deleted_prefix: &str) -> Option<String> {
    let (domain, name) = match internal_name.split_once('!') {
        Some((domain, name)) => (Some(domain).filter(|d| !d.is_empty()), name),
        None => (None, internal_name),
    };
    let mut boxes: Vec<String> = name
        .split('.')
        .filter(|part| !part.is_empty())
        .map(|part| part.replace('^', "."))
        .collect();
    if boxes.len() > 2 && boxes[0] == deleted_prefix {
        boxes.remove(0);
        boxes.pop();
    }
    if boxes.len() > 1 && boxes[0] == "user" {
        let local = boxes.swap_remove(1);
        return Some(match domain {
            Some(domain) => format!("{local}@{domain}"),
            None => local,
        });
    }
    None
}

/// A `SEEN` record's work: the seen state of one mailbox for one user.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeenWork {
    pub userid: String,
    pub uniqueid: String,
}

/// A `SUB` or `UNSUB` record's work: bring one subscription of a user in line
/// with the master's current state (which of the two happened does not matter).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionWork {
    pub userid: String,
    pub mailbox: String,
}

/// The work one log file asks for, after duplicates collapsed and redundant items
/// were pruned. The fields are in the order sync_client executes them (§4.9 step
/// 3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// 1. Mailbox-list syncs, one batch per owner (`None`: shared mailboxes), from
    ///    APPEND, MAILBOX, DOUBLEMAILBOX (both names under the first name's owner)
    ///    and RENAME (both names under the old name's owner and, if different,
    ///    also under the new name's).
    pub mailboxes: BTreeMap<Option<String>, BTreeSet<String>>,
    /// 2. Quota roots.
    pub quotas: BTreeSet<String>,
    /// 3. Annotation targets (`""`: server annotations).
    pub annotations: BTreeSet<String>,
    /// 4. Seen states.
    pub seen: BTreeSet<SeenWork>,
    /// 5. Subscriptions.
    pub subscriptions: BTreeSet<SubscriptionWork>,
    /// 6. Mailboxes that may have been removed.
    pub unmailboxes: BTreeSet<String>,
    /// 7. META syncs (from META and SIEVE).
    pub metas: BTreeSet<String>,
    /// 8. USER syncs.
    pub users: BTreeSet<String>,
    /// 9. Users that may have been removed.
    pub unusers: BTreeSet<String>,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.mailboxes.is_empty()
            && self.quotas.is_empty()
            && self.annotations.is_empty()
            && self.seen.is_empty()
            && self.subscriptions.is_empty()
            && self.unmailboxes.is_empty()
            && self.metas.is_empty()
            && self.users.is_empty()
            && self.unusers.is_empty()
    }
}

/// Collects records into a [`Plan`] and prunes it, exactly as §4.9 steps 1–2:
/// a USER makes that user's META, SEEN and SUB redundant; an UNUSER removes the
/// user's USER, META, SEEN and SUB; a META removes the user's SEEN and SUB.
/// Mailbox batches are not pruned. `deleted_prefix` is `deletedprefix` (see
/// [`mailbox_owner`]).
pub fn coalesce<'a>(
    records: impl IntoIterator<Item = &'a SyncLogRecord>,
    deleted_prefix: &str,
) -> Plan {
    let mut plan = Plan::default();
    let owner = |name: &str| mailbox_owner(name, deleted_prefix);
    for record in records {
        match record {
            SyncLogRecord::User { userid } => {
                plan.users.insert(userid.clone());
            }
            SyncLogRecord::Unuser { userid } => {
                plan.unusers.insert(userid.clone());
            }
            SyncLogRecord::Meta { userid } | SyncLogRecord::Sieve { userid } => {
                plan.metas.insert(userid.clone());
            }
            SyncLogRecord::Append { mailbox } | SyncLogRecord::Mailbox { mailbox } => {
                plan.mailboxes
                    .entry(owner(mailbox))
                    .or_default()
                    .insert(mailbox.clone());
            }
            SyncLogRecord::DoubleMailbox {
                source,
                destination,
            } => {
                let batch = plan.mailboxes.entry(owner(source)).or_default();
                batch.insert(source.clone());
                batch.insert(destination.clone());
            }
            SyncLogRecord::Rename { old, new } => {
                let (old_owner, new_owner) = (owner(old), owner(new));
                let both = [old.clone(), new.clone()];
                if new_owner != old_owner {
                    plan.mailboxes
                        .entry(new_owner)
                        .or_default()
                        .extend(both.clone());
                }
                plan.mailboxes.entry(old_owner).or_default().extend(both);
            }
            SyncLogRecord::Unmailbox { mailbox } => {
                plan.unmailboxes.insert(mailbox.clone());
            }
            SyncLogRecord::Quota { root } => {
                plan.quotas.insert(root.clone());
            }
            SyncLogRecord::Annotation { mailbox } => {
                plan.annotations.insert(mailbox.clone());
            }
            SyncLogRecord::Seen { userid, uniqueid } => {
                plan.seen.insert(SeenWork {
                    userid: userid.clone(),
                    uniqueid: uniqueid.clone(),
                });
            }
            SyncLogRecord::Sub { userid, mailbox } | SyncLogRecord::Unsub { userid, mailbox } => {
                plan.subscriptions.insert(SubscriptionWork {
                    userid: userid.clone(),
                    mailbox: mailbox.clone(),
                });
            }
        }
    }

    // Prune. Whatever a USER, UNUSER or META covers, drop the smaller items.
    let covering: BTreeSet<String> = plan
        .users
        .iter()
        .chain(&plan.unusers)
        .chain(&plan.metas)
        .cloned()
        .collect();
    plan.seen.retain(|s| !covering.contains(&s.userid));
    plan.subscriptions.retain(|s| !covering.contains(&s.userid));
    let unusers = &plan.unusers;
    plan.metas
        .retain(|u| !plan.users.contains(u) && !unusers.contains(u));
    plan.users.retain(|u| !unusers.contains(u));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::parse_log;

    fn owner(name: &str) -> Option<String> {
        mailbox_owner(name, DEFAULT_DELETED_PREFIX)
    }

    #[test]
    fn owners_of_mailbox_names() {
        let cases: &[(&str, Option<&str>)] = &[
            ("user.john", Some("john")),
            ("user.john.Sent", Some("john")),
            ("user.john.Other Stuff.x", Some("john")),
            ("user.john^doe", Some("john.doe")),
            ("user.john^doe.Foo^Bar", Some("john.doe")),
            ("user.j&AOk-r&APQ-me.Sent", Some("j&AOk-r&APQ-me")),
            ("user.john.#sieve", Some("john")),
            ("example.com!user.john.Sent", Some("john@example.com")),
            ("example.com!user.john", Some("john@example.com")),
            ("DELETED.user.john.Sent.6B0218D3", Some("john")),
            ("DELETED.user.john.6B0218D3", Some("john")),
            (
                "example.com!DELETED.user.john.Sent.6B0218D3",
                Some("john@example.com"),
            ),
            // empty components vanish, as with strtok
            ("user..john", Some("john")),
            (".user.john.", Some("john")),
            // not a user's
            ("user", None),
            ("shared.lists", None),
            ("", None),
            ("example.com!shared", None),
            ("DELETED.shared.lists.6B0218D3", None),
            // three components with the prefix: the wrapper leaves only "user"
            ("DELETED.user.john", None),
            // the prefix only counts as the first component, case-sensitively
            ("deleted.user.john.6B", None),
            ("user.DELETED.x", Some("DELETED")),
            ("User.john", None),
        ];
        for (name, expected) in cases {
            assert_eq!(owner(name).as_deref(), *expected, "{name:?}");
        }
        assert_eq!(
            mailbox_owner("Trash.user.john.Sent.5F", "Trash").as_deref(),
            Some("john")
        );
        assert_eq!(mailbox_owner("DELETED.user.john.Sent.5F", "Trash"), None);
    }

    fn plan_of(text: &str) -> Plan {
        let contents = parse_log(text.as_bytes());
        assert!(contents.skipped.is_empty(), "{:?}", contents.skipped);
        coalesce(&contents.records, DEFAULT_DELETED_PREFIX)
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn records_from_a_real_session() {
        let plan = plan_of(
            "MAILBOX user.john\n\
             QUOTA user.john\n\
             MAILBOX user.john.Sent\n\
             SUB john user.john.Sent\n\
             SUB john user.john\n\
             APPEND user.john.Sent\n\
             MAILBOX user.john.Sent\n\
             DOUBLEMAILBOX user.john user.john.Sent\n\
             MAILBOX \"user.john.Other Stuff\"\n\
             SEEN john pehbuvnnaedto8n5yeipsmna\n\
             RENAME \"user.john.Other Stuff\" user.john.Archive\n\
             MAILBOX \"user.john.Other Stuff\"\n\
             MAILBOX user.john.Archive\n\
             RENAME user.john.Sent DELETED.user.john.Sent.6B0218D3\n\
             UNMAILBOX DELETED.user.john.Sent.6B0218D3\n",
        );
        let mut mailboxes = BTreeMap::new();
        mailboxes.insert(
            Some("john".to_owned()),
            set(&[
                "user.john",
                "user.john.Sent",
                "user.john.Other Stuff",
                "user.john.Archive",
                "DELETED.user.john.Sent.6B0218D3",
            ]),
        );
        assert_eq!(
            plan,
            Plan {
                mailboxes,
                quotas: set(&["user.john"]),
                seen: [SeenWork {
                    userid: "john".into(),
                    uniqueid: "pehbuvnnaedto8n5yeipsmna".into()
                }]
                .into(),
                subscriptions: [
                    SubscriptionWork {
                        userid: "john".into(),
                        mailbox: "user.john".into()
                    },
                    SubscriptionWork {
                        userid: "john".into(),
                        mailbox: "user.john.Sent".into()
                    },
                ]
                .into(),
                unmailboxes: set(&["DELETED.user.john.Sent.6B0218D3"]),
                ..Plan::default()
            }
        );
    }

    #[test]
    fn mailboxes_are_batched_by_owner_of_the_first_name() {
        let plan = plan_of(
            "APPEND user.bob\n\
             DOUBLEMAILBOX user.alice.Inbox2 user.bob.Shared\n\
             DOUBLEMAILBOX shared.lists user.carol\n\
             MAILBOX example.com!user.john\n\
             RENAME user.alice.Project shared.Project\n\
             RENAME user.dave.x user.dave.y\n",
        );
        let batches: Vec<(Option<&str>, Vec<&str>)> = plan
            .mailboxes
            .iter()
            .map(|(k, v)| (k.as_deref(), v.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            batches,
            vec![
                (
                    None,
                    vec![
                        "shared.Project",
                        "shared.lists",
                        "user.alice.Project",
                        "user.carol"
                    ]
                ),
                (
                    Some("alice"),
                    vec![
                        "shared.Project",
                        "user.alice.Inbox2",
                        "user.alice.Project",
                        "user.bob.Shared"
                    ]
                ),
                (Some("bob"), vec!["user.bob"]),
                (Some("dave"), vec!["user.dave.x", "user.dave.y"]),
                (Some("john@example.com"), vec!["example.com!user.john"]),
            ]
        );
    }

    #[test]
    fn duplicates_collapse() {
        let plan = plan_of(
            "MAILBOX user.john\nMAILBOX user.john\nAPPEND user.john\n\
             QUOTA user.john\nQUOTA user.john\nANNOTATION \"\"\nANNOTATION \"\"\n\
             SUB john user.john.x\nUNSUB john user.john.x\n\
             UNMAILBOX a\nUNMAILBOX a\nUSER x\nUSER x\nUNUSER y\nUNUSER y\n",
        );
        assert_eq!(
            plan.mailboxes[&Some("john".to_owned())],
            set(&["user.john"])
        );
        assert_eq!(plan.quotas, set(&["user.john"]));
        assert_eq!(plan.annotations, set(&[""]));
        assert_eq!(plan.subscriptions.len(), 1);
        assert_eq!(plan.unmailboxes, set(&["a"]));
        assert_eq!(plan.users, set(&["x"]));
        assert_eq!(plan.unusers, set(&["y"]));
    }

    #[test]
    fn pruning_rules() {
        let plan = plan_of(concat!(
            // USER covers META/SEEN/SUB of the same user
            "USER alice\nMETA alice\nSEEN alice u1\nSUB alice user.alice.x\n",
            "MAILBOX user.alice.x\n",
            // UNUSER removes USER/META/SEEN/SUB of the user
            "USER bob\nUNUSER bob\nSIEVE bob\nSEEN bob u2\nUNSUB bob user.bob\n",
            // META removes SEEN/SUB of the user
            "META carol\nSEEN carol u3\nSUB carol user.carol.y\n",
            // other users are untouched
            "SEEN dave u4\nSUB dave shared.z\nQUOTA user.bob\n",
        ));
        assert_eq!(plan.users, set(&["alice"]));
        assert_eq!(plan.unusers, set(&["bob"]));
        assert_eq!(plan.metas, set(&["carol"]));
        assert_eq!(
            plan.seen,
            [SeenWork {
                userid: "dave".into(),
                uniqueid: "u4".into()
            }]
            .into()
        );
        assert_eq!(
            plan.subscriptions,
            [SubscriptionWork {
                userid: "dave".into(),
                mailbox: "shared.z".into()
            }]
            .into()
        );
        // mailbox batches and quotas are never pruned
        assert_eq!(
            plan.mailboxes[&Some("alice".to_owned())],
            set(&["user.alice.x"])
        );
        assert_eq!(plan.quotas, set(&["user.bob"]));
    }

    #[test]
    fn empty_plan() {
        assert!(coalesce(&[], DEFAULT_DELETED_PREFIX).is_empty());
        assert!(!plan_of("QUOTA x\n").is_empty());
    }

    #[test]
    fn order_does_not_matter() {
        let records = parse_log(
            b"USER a\nSEEN b u\nMAILBOX user.c\nRENAME user.c user.d\nMETA b\nUNUSER a\n",
        )
        .records;
        let forward = coalesce(&records, DEFAULT_DELETED_PREFIX);
        let backward = coalesce(records.iter().rev(), DEFAULT_DELETED_PREFIX);
        assert_eq!(forward, backward);
    }
}
