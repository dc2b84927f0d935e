//! Naive subject matching and a naive subscription index: a sorted map of
//! every (pattern, group, value) with its weight, matched by comparing
//! token lists one by one.

use std::collections::BTreeMap;

/// Whether the index takes `pattern` (NATS' rule, which every protocol's
/// subscriptions share): no empty token, `>` only as the last token.
pub fn index_pattern(pattern: &[u8]) -> bool {
    let tokens: Vec<&[u8]> = pattern.split(|&b| b == b'.').collect();
    let last = tokens.len() - 1;
    tokens
        .iter()
        .enumerate()
        .all(|(i, t)| !t.is_empty() && (*t != b">" || i == last))
}

/// Whether the tokens of a pattern match those of a subject: `*` matches
/// any one token, a last `>` one or more; in the subject every token is
/// literal.
fn tokens_match(pattern: &[&[u8]], subject: &[&[u8]]) -> bool {
    match (pattern.split_first(), subject.split_first()) {
        (None, None) => true,
        (Some((p, [])), Some(_)) if *p == b">" => true,
        (Some((p, prest)), Some((s, srest))) => {
            (*p == b"*" || p == s) && tokens_match(prest, srest)
        }
        _ => false,
    }
}

/// Whether `pattern` matches the published `subject`. An empty subject
/// matches nothing (the index is never asked about one by the protocols,
/// and answers it with nothing).
pub fn matches(pattern: &[u8], subject: &[u8]) -> bool {
    if subject.is_empty() {
        return false;
    }
    let p: Vec<&[u8]> = pattern.split(|&b| b == b'.').collect();
    let s: Vec<&[u8]> = subject.split(|&b| b == b'.').collect();
    tokens_match(&p, &s)
}

/// An entry's key: pattern, queue group (none for a plain entry), value.
pub type Key<V> = (Vec<u8>, Option<Vec<u8>>, V);

/// A weighted multiset of entries.
#[derive(Debug)]
pub struct NaiveIndex<V: Ord> {
    pub entries: BTreeMap<Key<V>, u32>,
}

impl<V: Ord + Copy> Default for NaiveIndex<V> {
    fn default() -> Self {
        NaiveIndex {
            entries: BTreeMap::new(),
        }
    }
}

impl<V: Ord + Copy> NaiveIndex<V> {
    /// Adds `weight`; the entry's new weight.
    pub fn insert(&mut self, pattern: &[u8], group: Option<&[u8]>, value: V, weight: u32) -> u32 {
        let key = (pattern.to_vec(), group.map(<[u8]>::to_vec), value);
        if weight == 0 {
            return self.entries.get(&key).copied().unwrap_or(0);
        }
        let w = self.entries.entry(key).or_insert(0);
        *w += weight;
        *w
    }

    /// Takes up to `weight` away; what is left (0 if absent or gone).
    pub fn remove(&mut self, pattern: &[u8], group: Option<&[u8]>, value: V, weight: u32) -> u32 {
        let key = (pattern.to_vec(), group.map(<[u8]>::to_vec), value);
        let Some(w) = self.entries.get_mut(&key) else {
            return 0;
        };
        *w = w.saturating_sub(weight);
        let left = *w;
        if left == 0 {
            self.entries.remove(&key);
        }
        left
    }

    /// The weight of an entry, 0 if absent.
    pub fn weight(&self, pattern: &[u8], group: Option<&[u8]>, value: V) -> u32 {
        let key = (pattern.to_vec(), group.map(<[u8]>::to_vec), value);
        self.entries.get(&key).copied().unwrap_or(0)
    }

    /// Entries whose pattern matches `subject`.
    pub fn matching<'a>(
        &'a self,
        subject: &'a [u8],
    ) -> impl Iterator<Item = (&'a Key<V>, u32)> + 'a {
        self.entries
            .iter()
            .filter(move |((p, _, _), _)| matches(p, subject))
            .map(|(k, &w)| (k, w))
    }
}
