//! The relay's interest as its hub sees it: every client subscription of
//! every shard, counted by pattern and queue group, and turned into the
//! `LS+`/`LS-` lines that keep the hub current.
//!
//! Announcements are coalesced: a plain pattern is announced when its
//! first subscriber comes and withdrawn when its last goes, however many
//! connections share it; a queue group is announced again when its weight
//! (members, relay-wide) changes, as nats-server does for its own leafs.

use rustc_hash::FxHashMap;

use super::wire;

/// A pattern and, for a queue group, the group's name.
type Key = (Box<[u8]>, Option<Box<[u8]>>);

/// Relay-wide client interest, kept by the shard that owns the links.
#[derive(Debug, Default)]
pub struct Interest {
    /// Subscriptions per pattern and group; an entry leaves with its last.
    counts: FxHashMap<Key, u32>,
}

impl Interest {
    /// One more subscription to `pattern` (in `group`). Returns the line
    /// that tells the hub, if the hub must be told.
    pub fn add(&mut self, pattern: &[u8], group: Option<&[u8]>) -> Option<Vec<u8>> {
        let key: Key = (pattern.into(), group.map(Into::into));
        let count = self.counts.entry(key).or_insert(0);
        *count += 1;
        let mut line = Vec::new();
        match group {
            None if *count == 1 => wire::encode_sub(&mut line, pattern, None),
            None => return None,
            Some(g) => wire::encode_sub(&mut line, pattern, Some((g, *count))),
        }
        Some(line)
    }

    /// One subscription to `pattern` (in `group`) fewer. Returns the line
    /// that tells the hub, if the hub must be told.
    pub fn remove(&mut self, pattern: &[u8], group: Option<&[u8]>) -> Option<Vec<u8>> {
        let key: Key = (pattern.into(), group.map(Into::into));
        let count = self.counts.get_mut(&key)?;
        *count -= 1;
        let left = *count;
        if left == 0 {
            self.counts.remove(&key);
        }
        let mut line = Vec::new();
        match group {
            _ if left == 0 => wire::encode_unsub(&mut line, pattern, group),
            None => return None,
            Some(g) => wire::encode_sub(&mut line, pattern, Some((g, left))),
        }
        Some(line)
    }

    /// Every `LS+` a newly connected hub needs, appended to `out`.
    pub fn announce_all(&self, out: &mut Vec<u8>) {
        for ((pattern, group), &count) in &self.counts {
            wire::encode_sub(out, pattern, group.as_deref().map(|g| (g, count)));
        }
    }

    /// Patterns and groups announced.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: Option<Vec<u8>>) -> Option<String> {
        line.map(|l| String::from_utf8(l).unwrap())
    }

    #[test]
    fn plain_interest_is_announced_once_and_withdrawn_with_its_last_subscriber() {
        let mut i = Interest::default();
        assert_eq!(text(i.add(b"a.*", None)).as_deref(), Some("LS+ a.*\r\n"));
        assert_eq!(text(i.add(b"a.*", None)), None);
        assert_eq!(text(i.add(b"a.*", None)), None);
        assert_eq!(text(i.remove(b"a.*", None)), None);
        assert_eq!(text(i.remove(b"a.*", None)), None);
        assert_eq!(text(i.remove(b"a.*", None)).as_deref(), Some("LS- a.*\r\n"));
        assert!(i.is_empty());
        assert_eq!(text(i.remove(b"a.*", None)), None, "nothing to withdraw");
    }

    #[test]
    fn a_group_is_announced_with_its_weight() {
        let mut i = Interest::default();
        assert_eq!(
            text(i.add(b"jobs", Some(b"w"))).as_deref(),
            Some("LS+ jobs w 1\r\n")
        );
        assert_eq!(
            text(i.add(b"jobs", Some(b"w"))).as_deref(),
            Some("LS+ jobs w 2\r\n")
        );
        assert_eq!(text(i.add(b"jobs", None)).as_deref(), Some("LS+ jobs\r\n"));
        let mut all = Vec::new();
        i.announce_all(&mut all);
        let mut lines: Vec<&str> = std::str::from_utf8(&all).unwrap().lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, ["LS+ jobs", "LS+ jobs w 2"]);
        assert_eq!(
            text(i.remove(b"jobs", Some(b"w"))).as_deref(),
            Some("LS+ jobs w 1\r\n")
        );
        assert_eq!(
            text(i.remove(b"jobs", Some(b"w"))).as_deref(),
            Some("LS- jobs w\r\n")
        );
        assert_eq!(i.len(), 1);
    }
}
