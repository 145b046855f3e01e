//! Mailbox names (spec §8.1–§8.2): validation of internal names, the owner of a name,
//! `DELETED.` names for delayed delete, and conversion between the admin's external
//! form (`user/john/Sent` with `unixhierarchysep`) and the internal one
//! (`user.john.Sent`, `^` for a dot inside a component, `domain!` prefix).

use crate::StoreError;

/// Longest internal mailbox name accepted (Cyrus's MAX_MAILBOX_NAME is 490).
pub const MAX_NAME: usize = 490;

/// How names are spelled outside the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// `unixhierarchysep: yes`: external separator `/`, dots allowed in components.
    pub unixhierarchysep: bool,
    /// `virtdomains` on: `user@domain` userids map to `domain!user.x`.
    pub virtdomains: bool,
    /// The domain that is never written (`defaultdomain`).
    pub defaultdomain: Option<String>,
    /// `deletedprefix` (default `DELETED`).
    pub deletedprefix: String,
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace {
            unixhierarchysep: false,
            virtdomains: false,
            defaultdomain: None,
            deletedprefix: "DELETED".into(),
        }
    }
}

fn bad(name: &str, why: &'static str) -> StoreError {
    StoreError::BadName {
        name: name.to_owned(),
        reason: why,
    }
}

/// Checks an internal mailbox name. Names never become paths (files live under the
/// mailbox's uniqueid), but garbage is refused with a clear error all the same.
pub fn validate_internal(name: &str) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(bad(name, "empty name"));
    }
    if name.len() > MAX_NAME {
        return Err(bad(name, "name too long"));
    }
    if name
        .bytes()
        .any(|b| b < 0x20 || b == 0x7f || b >= 0x80 || b == b'/')
    {
        return Err(bad(
            name,
            "names are 7-bit (modified UTF-7) without control characters or '/'",
        ));
    }
    let (_, local) = split_domain(name);
    if local.is_empty() {
        return Err(bad(name, "empty name after the domain"));
    }
    if local.split('.').any(|c| c.is_empty()) {
        return Err(bad(name, "empty hierarchy component"));
    }
    if local.split('.').any(|c| c == ".." || c == "^^") {
        return Err(bad(name, "'..' component"));
    }
    Ok(())
}

/// Checks a userid as it travels on the wire (`john`, `john.doe`, `john@example.com`).
pub fn validate_userid(userid: &str) -> Result<(), StoreError> {
    if userid.is_empty() || userid.len() > 255 {
        return Err(bad(userid, "userid empty or too long"));
    }
    if userid
        .bytes()
        .any(|b| b <= 0x20 || b == 0x7f || b >= 0x80 || b == b'/' || b == b'!')
    {
        return Err(bad(userid, "userid has a forbidden character"));
    }
    if userid.starts_with('.') || userid.contains("..") {
        return Err(bad(userid, "userid has a '..' or leading dot"));
    }
    Ok(())
}

/// A uniqueid names the mailbox's directory, so it must be a plain token.
pub fn validate_uniqueid(uniqueid: &str) -> Result<(), StoreError> {
    if uniqueid.is_empty()
        || uniqueid.len() > 64
        || !uniqueid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(StoreError::BadName {
            name: uniqueid.to_owned(),
            reason: "uniqueid must be 1-64 characters of [A-Za-z0-9_-]",
        });
    }
    Ok(())
}

/// A partition name must be configured; it must also be a plain token.
pub fn validate_partition(partition: &str) -> Result<(), StoreError> {
    if partition.is_empty()
        || partition.len() > 64
        || !partition
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        || partition.starts_with('.')
    {
        return Err(StoreError::BadName {
            name: partition.to_owned(),
            reason: "partition names are [A-Za-z0-9._-] and do not start with a dot",
        });
    }
    Ok(())
}

/// `example.com!user.john` → (`Some("example.com")`, `user.john`).
pub fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('!') {
        Some((domain, rest)) => (Some(domain), rest),
        None => (None, name),
    }
}

impl Namespace {
    /// The owning userid of an internal name (spec §8.2), seeing through a
    /// `DELETED.` wrapper; `None` for shared mailboxes.
    pub fn owner(&self, name: &str) -> Option<String> {
        let (domain, mut local) = split_domain(name);
        let deleted = format!("{}.", self.deletedprefix);
        if let Some(rest) = local.strip_prefix(&deleted) {
            // DELETED.<name>.<HEX>: drop the trailing hex timestamp.
            local = match rest.rsplit_once('.') {
                Some((inner, hex))
                    if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    inner
                }
                _ => rest,
            };
        }
        let user_part = local.strip_prefix("user.")?;
        let localpart = user_part.split('.').next()?;
        if localpart.is_empty() {
            return None;
        }
        let userid = localpart.replace('^', ".");
        Some(match domain {
            Some(d) => format!("{userid}@{d}"),
            None => userid,
        })
    }

    /// The internal name of a user's INBOX.
    pub fn inbox(&self, userid: &str) -> String {
        let (local, domain) = self.split_userid(userid);
        let local = local.replace('.', "^");
        match domain {
            Some(d) => format!("{d}!user.{local}"),
            None => format!("user.{local}"),
        }
    }

    fn split_userid<'a>(&self, userid: &'a str) -> (&'a str, Option<&'a str>) {
        if !self.virtdomains {
            return (userid, None);
        }
        match userid.rsplit_once('@') {
            Some((local, domain)) if Some(domain) != self.defaultdomain.as_deref() => {
                (local, Some(domain))
            }
            Some((local, _)) => (local, None),
            None => (userid, None),
        }
    }

    /// True if `name` is `user`'s INBOX or below it (not counting `DELETED.` copies).
    pub fn is_in_user_tree(&self, userid: &str, name: &str) -> bool {
        let inbox = self.inbox(userid);
        name == inbox
            || name
                .strip_prefix(&inbox)
                .is_some_and(|r| r.starts_with('.'))
    }

    /// `DELETED.<name without domain>.<HEX time>` (with the domain prefix kept).
    pub fn deleted_name(&self, name: &str, unix_time: u64) -> String {
        let (domain, local) = split_domain(name);
        let wrapped = format!("{}.{}.{:X}", self.deletedprefix, local, unix_time);
        match domain {
            Some(d) => format!("{d}!{wrapped}"),
            None => wrapped,
        }
    }

    pub fn is_deleted(&self, name: &str) -> bool {
        let (_, local) = split_domain(name);
        local
            .strip_prefix(&self.deletedprefix)
            .is_some_and(|r| r.starts_with('.'))
    }

    /// Admin external form → internal name. With `unixhierarchysep`, `/` separates and
    /// a `.` inside a component becomes `^`; a virtdomains name may carry `@domain`
    /// (`user/john/Sent@example.com`).
    pub fn to_internal(&self, external: &str) -> Result<String, StoreError> {
        let (path, domain) = match (self.virtdomains, external.rsplit_once('@')) {
            (true, Some((path, domain))) if Some(domain) != self.defaultdomain.as_deref() => {
                (path, Some(domain))
            }
            (true, Some((path, _))) => (path, None),
            _ => (external, None),
        };
        let local = if self.unixhierarchysep {
            path.split('/')
                .map(|c| c.replace('.', "^"))
                .collect::<Vec<_>>()
                .join(".")
        } else {
            path.to_owned()
        };
        let name = match domain {
            Some(d) => format!("{d}!{local}"),
            None => local,
        };
        validate_internal(&name)?;
        Ok(name)
    }

    /// Internal name → admin external form.
    pub fn to_external(&self, internal: &str) -> String {
        let (domain, local) = split_domain(internal);
        let path = if self.unixhierarchysep {
            local
                .split('.')
                .map(|c| c.replace('^', "."))
                .collect::<Vec<_>>()
                .join("/")
        } else {
            local.to_owned()
        };
        match domain {
            Some(d) => format!("{path}@{d}"),
            None => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        let ns = Namespace::default();
        assert_eq!(ns.owner("user.john"), Some("john".into()));
        assert_eq!(ns.owner("user.john.Sent"), Some("john".into()));
        assert_eq!(ns.owner("user.john^doe.x"), Some("john.doe".into()));
        assert_eq!(
            ns.owner("example.com!user.john.Sent"),
            Some("john@example.com".into())
        );
        assert_eq!(
            ns.owner("DELETED.user.john.Sent.6B0218D3"),
            Some("john".into())
        );
        assert_eq!(
            ns.owner("example.com!DELETED.user.john.6B0218D3"),
            Some("john@example.com".into())
        );
        assert_eq!(ns.owner("shared.lists"), None);
        assert_eq!(ns.owner("user"), None);
    }

    #[test]
    fn inbox_and_tree() {
        let ns = Namespace {
            virtdomains: true,
            defaultdomain: Some("main.org".into()),
            ..Namespace::default()
        };
        assert_eq!(ns.inbox("john.doe"), "user.john^doe");
        assert_eq!(ns.inbox("john@example.com"), "example.com!user.john");
        assert_eq!(ns.inbox("john@main.org"), "user.john");
        assert!(ns.is_in_user_tree("john", "user.john.Sent"));
        assert!(!ns.is_in_user_tree("john", "user.johnny"));
    }

    #[test]
    fn external_names() {
        let unix = Namespace {
            unixhierarchysep: true,
            ..Namespace::default()
        };
        assert_eq!(
            unix.to_internal("user/john.doe/Foo.Bar").unwrap(),
            "user.john^doe.Foo^Bar"
        );
        assert_eq!(
            unix.to_external("user.john^doe.Foo^Bar"),
            "user/john.doe/Foo.Bar"
        );
        let netnews = Namespace::default();
        assert_eq!(
            netnews.to_internal("user.john.Sent").unwrap(),
            "user.john.Sent"
        );
        let vd = Namespace {
            virtdomains: true,
            ..Namespace::default()
        };
        assert_eq!(
            vd.to_internal("user.john.Sent@example.com").unwrap(),
            "example.com!user.john.Sent"
        );
        assert_eq!(
            vd.to_external("example.com!user.john.Sent"),
            "user.john.Sent@example.com"
        );
    }

    #[test]
    fn deleted_names() {
        let ns = Namespace::default();
        assert_eq!(
            ns.deleted_name("user.john.Sent", 0x6B0218D3),
            "DELETED.user.john.Sent.6B0218D3"
        );
        assert_eq!(
            ns.deleted_name("example.com!user.john", 0x10),
            "example.com!DELETED.user.john.10"
        );
        assert!(ns.is_deleted("DELETED.user.john.Sent.6B0218D3"));
        assert!(!ns.is_deleted("user.john"));
    }

    #[test]
    fn hostile_names_are_refused() {
        for name in [
            "",
            "user..john",
            "user.john.",
            ".user",
            "user/john",
            "user.john\0x",
            "user.jöhn",
            "user.john\r\n",
        ] {
            assert!(validate_internal(name).is_err(), "{name:?}");
        }
        assert!(validate_internal(&"a".repeat(MAX_NAME + 1)).is_err());
        assert!(validate_internal("user.john.Other Stuff").is_ok());
        assert!(validate_internal("user.j&AOk-r&APQ-me").is_ok());
        for id in ["", "../x", "a/b", "a b", "a.b"] {
            assert!(validate_uniqueid(id).is_err(), "{id:?}");
        }
        for p in ["", "..", ".hidden", "a/b", "../../etc"] {
            assert!(validate_partition(p).is_err(), "{p:?}");
        }
        for u in ["", "a/b", "../x", "a b", "a!b"] {
            assert!(validate_userid(u).is_err(), "{u:?}");
        }
    }
}
