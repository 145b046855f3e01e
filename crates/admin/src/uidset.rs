//! IMAP uid sets as an administrator writes them: `1:3,7,9:*`, where `*` is the
//! mailbox's `last_uid`. A set is resolved against a mailbox into sorted, merged
//! ranges, so even `1:4294967295` costs nothing.

/// One end of a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Uid(u32),
    /// `*`: the highest uid of the mailbox.
    Last,
}

/// A parsed uid set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UidSet(Vec<(End, End)>);

fn end(text: &str, whole: &str) -> Result<End, String> {
    if text == "*" {
        return Ok(End::Last);
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "bad uid set {whole:?}: {text:?} is not a uid (uid sets look like 1:3,7,9:*)"
        ));
    }
    match text.parse::<u32>() {
        Ok(0) => Err(format!("bad uid set {whole:?}: uids start at 1")),
        Ok(n) => Ok(End::Uid(n)),
        Err(_) => Err(format!(
            "bad uid set {whole:?}: {text} is larger than any uid (4294967295)"
        )),
    }
}

impl UidSet {
    pub fn parse(text: &str) -> Result<UidSet, String> {
        if text.is_empty() {
            return Err("empty uid set (uid sets look like 1:3,7,9:*)".to_owned());
        }
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let range = match part.split_once(':') {
                Some((a, b)) => (end(a, text)?, end(b, text)?),
                None => {
                    let e = end(part, text)?;
                    (e, e)
                }
            };
            ranges.push(range);
        }
        Ok(UidSet(ranges))
    }

    /// The set for a mailbox whose highest uid is `last_uid`: sorted, merged, inclusive
    /// ranges. `5:3` means `3:5`, as in IMAP.
    pub fn resolve(&self, last_uid: u32) -> Resolved {
        let value = |e: End| match e {
            End::Uid(n) => n,
            End::Last => last_uid,
        };
        let mut ranges: Vec<(u32, u32)> = self
            .0
            .iter()
            .map(|&(a, b)| {
                let (a, b) = (value(a), value(b));
                (a.min(b), a.max(b))
            })
            // `*` in an empty mailbox is uid 0, which no message has.
            .filter(|&(_, hi)| hi > 0)
            .map(|(lo, hi)| (lo.max(1), hi))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Resolved(merged)
    }
}

/// A uid set resolved against a mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved(Vec<(u32, u32)>);

impl Resolved {
    pub fn contains(&self, uid: u32) -> bool {
        // Ranges are sorted and disjoint: find the last one starting at or below uid.
        let i = self.0.partition_point(|&(lo, _)| lo <= uid);
        i > 0 && uid <= self.0[i - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        let set = UidSet::parse("1:3,7,9:*").unwrap();
        let r = set.resolve(12);
        let picked: Vec<u32> = (0..20).filter(|&u| r.contains(u)).collect();
        assert_eq!(picked, [1, 2, 3, 7, 9, 10, 11, 12]);
        // Reversed ranges, overlaps, and `*` below the start.
        let r = UidSet::parse("5:3,4:6,*:8").unwrap().resolve(2);
        let picked: Vec<u32> = (0..20).filter(|&u| r.contains(u)).collect();
        assert_eq!(picked, [2, 3, 4, 5, 6, 7, 8]);
        // `*` of an empty mailbox matches nothing.
        let r = UidSet::parse("*").unwrap().resolve(0);
        assert!(!r.contains(0) && !r.contains(1));
        // Huge ranges stay two numbers.
        let r = UidSet::parse("1:4294967295").unwrap().resolve(3);
        assert!(r.contains(u32::MAX) && r.contains(1));
        assert_eq!(r.0.len(), 1);
    }

    #[test]
    fn bad_sets_are_refused() {
        for bad in [
            "",
            ",",
            "1,",
            ",1",
            "0",
            "1:0",
            "a",
            "1-3",
            "1:3:5",
            " 1",
            "1 ",
            "+1",
            "-1",
            "4294967296",
            "1::2",
            "**",
            "1:*:2",
        ] {
            assert!(UidSet::parse(bad).is_err(), "{bad:?}");
        }
        let err = UidSet::parse("1,x").unwrap_err();
        assert!(err.contains("\"x\" is not a uid"), "{err}");
    }
}
