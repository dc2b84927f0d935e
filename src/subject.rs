//! Subjects, and the index that matches them.
//!
//! A *subject* names what a message is about: 1 to [`MAX_SUBJECT_LEN`] bytes
//! of printable ASCII split into non-empty *tokens* by `.`
//! (`prices.eur.spot`). Subscriptions use *patterns*, subjects that may also
//! hold wildcard tokens: `*` matches exactly one token, and `>` as the last
//! token matches one or more. A token is a wildcard only when it is exactly
//! `*` or `>`; `a*` and `b>` are ordinary tokens. [`is_valid_subject`] and
//! [`is_valid_group`] implement the rules of the protocol's "Subjects"
//! section.
//!
//! [`Sublist`] answers the question every `PUB` asks: *who wants this
//! subject?* It is a token trie over the subscription patterns, like
//! nats-server's sublist, so a publish costs one walk down the trie whose
//! length is the number of tokens in the subject (at each level: the literal
//! child found by hash lookup, the `*` child, and the entries of a trailing
//! `>`), never a scan of every subscription. Answers are [`Matches`] shared
//! through an [`Rc`] and memoised in a bounded cache keyed by the subject's
//! bytes, so a publish on a subject seen before costs one FxHash of the
//! subject, one table lookup and a reference-count increment.
//!
//! # Entries, weights and queue groups
//!
//! An entry is a triple *(pattern, optional group name, value)*. The value
//! is whatever the caller routes to (a connection id on a shard, a shard id
//! in the relay-wide view) and the index is a multiset: each triple carries
//! a weight, inserting it again adds to the weight and removing subtracts,
//! so the router can count, say, how many of a shard's connections hold a
//! pattern without a second table.
//!
//! A queue group is named by its pattern *and* its name (the protocol says
//! so): `SUB a.* w` and `SUB a.> w` are two groups. [`group_id`] gives each
//! group a 64-bit identity that every shard computes alike. A matching group
//! comes back as one [`GroupMatch`] listing all its members; its
//! [`GroupMatch::pick`] chooses the member for one message, in a weighted
//! round robin whose position lives in the trie's group entry, not in the
//! cached answer, so that clearing the cache (which any subscription change
//! nearby does) does not restart every group on its first member.
//!
//! # Cache policy
//!
//! * **Invalidation** is exact: a change to a pattern without wildcards can
//!   only affect the one cached subject equal to it, which is removed by one
//!   lookup; a change to a wildcard pattern removes every cached subject the
//!   pattern matches (one pass over the cache, O(cached subjects ×
//!   subject length)). Cached answers for unrelated subjects survive churn.
//! * **Eviction**: when the cache is full, a pseudo-random half of it is
//!   dropped. That is amortised O(1) per insertion, needs no per-entry
//!   bookkeeping on the hit path (an LRU would cost a write per hit), and
//!   keeps half the hot set instead of refilling all of it at once as
//!   clearing would. A hot subject that was evicted costs one trie walk to
//!   come back.
//! * **Hashing** is FxHash, chosen for speed on the hit path. It is not
//!   resistant to chosen collisions; a client that publishes subjects
//!   crafted to collide can slow lookups in the cache, but no further than
//!   a probe over at most `cache_capacity` entries.
//!
//! # Example
//!
//! ```
//! use tern::subject::{is_valid_subject, Sublist};
//!
//! assert!(is_valid_subject(b"prices.*", true));
//! assert!(!is_valid_subject(b"prices.*", false)); // no wildcards in PUB
//!
//! let mut subs = Sublist::new(1024);
//! subs.insert(b"prices.*", None, 1u32, 1);
//! subs.insert(b"prices.>", Some(b"workers"), 2u32, 1);
//! subs.insert(b"prices.>", Some(b"workers"), 3u32, 1);
//!
//! let m = subs.matches(b"prices.eur");
//! assert_eq!(m.plain, vec![(1, 1)]);
//! assert_eq!(m.groups.len(), 1);
//! let first = m.groups[0].pick();
//! let second = m.groups[0].pick();
//! assert_ne!(first, second); // the two members take turns
//!
//! assert!(subs.matches(b"prices").is_empty()); // `*` and `>` need a token
//! ```

use std::cell::Cell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use rustc_hash::FxHashMap;

/// Longest subject or pattern, in bytes.
pub const MAX_SUBJECT_LEN: usize = 256;

/// Longest queue group name, in bytes.
pub const MAX_GROUP_LEN: usize = 64;

/// The byte that separates tokens.
const SEP: u8 = b'.';

/// Printable ASCII without the space: `0x21..=0x7e`.
#[inline]
const fn is_printable(b: u8) -> bool {
    // One compare instead of two: bytes below 0x21 wrap to large values.
    b.wrapping_sub(0x21) <= 0x7e - 0x21
}

/// Whether one token (the bytes between separators) is allowed.
#[inline]
fn token_ok(token: &[u8], wildcards: bool, last: bool) -> bool {
    match token {
        [] => false,
        [b'*'] => wildcards,
        [b'>'] => wildcards && last,
        _ => true,
    }
}

/// Whether `s` is a valid subject: 1..=256 bytes of printable ASCII
/// (0x21..=0x7e), tokens split by `.`, no empty token.
///
/// With `wildcards` (the subject of `SUB` and `UNSUB`), a token that is
/// exactly `*` is allowed anywhere and a token that is exactly `>` only
/// last. Without (`PUB`), a token that is exactly `*` or `>` is invalid.
/// Either way `a*` and `b>` are plain tokens.
///
/// One pass over the bytes.
pub fn is_valid_subject(s: &[u8], wildcards: bool) -> bool {
    if s.is_empty() || s.len() > MAX_SUBJECT_LEN {
        return false;
    }
    let mut token_start = 0;
    for (i, &b) in s.iter().enumerate() {
        if b == SEP {
            if !token_ok(&s[token_start..i], wildcards, false) {
                return false;
            }
            token_start = i + 1;
        } else if !is_printable(b) {
            return false;
        }
    }
    token_ok(&s[token_start..], wildcards, true)
}

/// Whether the subject index takes `pattern`: what every protocol's
/// subscriptions have in common (the NATS rule, looser than
/// [`is_valid_subject`]): no empty token, and a token that is exactly `>`
/// only last. Any other bytes are allowed, and there is no length limit.
pub fn is_index_pattern(pattern: &[u8]) -> bool {
    let mut after_full_wildcard = false;
    for token in pattern.split(|&b| b == SEP) {
        if token.is_empty() || after_full_wildcard {
            return false;
        }
        after_full_wildcard = token == b">";
    }
    true
}

/// Whether `g` is a valid queue group name: 1..=64 bytes of printable ASCII
/// (0x21..=0x7e). Dots and `*`/`>` carry no meaning in a group name.
pub fn is_valid_group(g: &[u8]) -> bool {
    !g.is_empty() && g.len() <= MAX_GROUP_LEN && g.iter().all(|&b| is_printable(b))
}

/// Whether the pattern `pattern` matches the concrete subject `subject`.
///
/// Both are assumed valid (`pattern` with wildcards, `subject` without);
/// for other input the answer is unspecified but the function does not
/// panic. This is the definition [`Sublist::matches`] implements with a
/// trie; it is linear in the length of its arguments.
pub fn pattern_matches(pattern: &[u8], subject: &[u8]) -> bool {
    let mut pattern_tokens = pattern.split(|&b| b == SEP);
    let mut subject_tokens = subject.split(|&b| b == SEP);
    loop {
        match (pattern_tokens.next(), subject_tokens.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) => {
                if p == b">" && pattern_tokens.clone().next().is_none() {
                    // A trailing `>` has consumed `s` and takes the rest.
                    return true;
                }
                if p != b"*" && p != s {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// Whether some token of `pattern` is exactly `*` or `>`.
fn has_wildcard_token(pattern: &[u8]) -> bool {
    pattern.split(|&b| b == SEP).any(|t| t == b"*" || t == b">")
}

/// The 64-bit identity of the queue group `(pattern, group)`.
///
/// Every shard of a relay (every thread of this process) computes the same
/// id for the same pair: SipHash-1-3 over the pattern's length, the pattern
/// and the name (the length prefix makes the encoding of the pair
/// unambiguous), keyed with one random key drawn once per process. Ids are
/// therefore never persisted or exchanged between processes.
///
/// Distinct groups collide with probability about n²/2⁶⁵ for n groups: one
/// in 37 million for a million groups. Because the key is secret and
/// random, a client cannot search for a colliding pair offline to make two
/// groups be taken for one.
pub fn group_id(pattern: &[u8], group: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut h = KEY
        .get_or_init(std::collections::hash_map::RandomState::new)
        .build_hasher();
    h.write_u64(pattern.len() as u64);
    h.write(pattern);
    h.write(group);
    h.finish()
}

/// Everything in a [`Sublist`] that matches one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matches<V> {
    /// Every plain (group-less) entry whose pattern matches, with its
    /// weight. A value appears once per matching pattern, so it may appear
    /// more than once; delivering once per value is the caller's job.
    pub plain: Vec<(V, u32)>,
    /// One entry per matching queue group, each with all of its members,
    /// sorted by [`GroupMatch::id`] (see [`Self::group`]).
    pub groups: Vec<GroupMatch<V>>,
}

impl<V> Matches<V> {
    /// Whether nothing matched.
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }

    /// The matching group with [`group_id`] `id`: a binary search, so
    /// joining two answers' groups (a router's local and remote indexes)
    /// costs n·log n, not n² (10,000 groups with members on two shards
    /// took ~69 ms per publish with a linear search).
    pub fn group(&self, id: u64) -> Option<&GroupMatch<V>> {
        let i = self.groups.binary_search_by_key(&id, |g| g.id).ok()?;
        Some(&self.groups[i])
    }
}

/// A queue group whose pattern matched, with its members.
///
/// Clones, like every cached answer that lists this group, share the
/// group's round-robin position.
#[derive(Clone)]
pub struct GroupMatch<V> {
    /// [`group_id`] of the group's pattern and name.
    pub id: u64,
    /// Every member with its weight; never empty, weights never 0.
    pub members: Vec<(V, u32)>,
    /// Sum of the members' weights.
    pub total_weight: u32,
    /// `ends[i]` is the sum of the weights of `members[..=i]`: slot `k` of
    /// a round (`0..total_weight`) belongs to the first member whose end
    /// exceeds `k`.
    ends: Box<[u32]>,
    /// Coprime to `total_weight`, so `k ↦ k·stride mod total_weight` is a
    /// permutation of a round's slots: each member still gets exactly its
    /// weight's share of every round, but interleaved with the others
    /// instead of in one block (weights 1000 and 1000 alternate rather
    /// than sending 1000 messages in a row to the first member).
    stride: u32,
    /// The group's round-robin position, shared with the trie's group
    /// entry and every cached copy of this match.
    cursor: Rc<Cell<u64>>,
}

impl<V: Copy> GroupMatch<V> {
    /// The member that gets the next message, advancing the group's
    /// round-robin position.
    ///
    /// Over any `total_weight` consecutive picks made while the membership
    /// does not change, each member is picked exactly `weight` times.
    pub fn pick(&self) -> V {
        let n = self.cursor.get();
        self.cursor.set(n.wrapping_add(1));
        let total = u64::from(self.total_weight);
        // Both factors are below 2^32, so the product fits in a u64.
        let slot = (n % total) * u64::from(self.stride) % total;
        // `slot < total_weight == ends.last()`, so the index is in range.
        let i = self.ends.partition_point(|&end| u64::from(end) <= slot);
        self.members[i].0
    }
}

impl<V: fmt::Debug> fmt::Debug for GroupMatch<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupMatch")
            .field("id", &format_args!("{:#018x}", self.id))
            .field("members", &self.members)
            .field("total_weight", &self.total_weight)
            .field("cursor", &self.cursor.get())
            .finish()
    }
}

/// Two group matches are equal when they describe the same group with the
/// same members; the round-robin position is not compared.
impl<V: PartialEq> PartialEq for GroupMatch<V> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.members == other.members
            && self.total_weight == other.total_weight
    }
}

impl<V: Eq> Eq for GroupMatch<V> {}

/// Greatest common divisor (Euclid).
fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A stride for [`GroupMatch`]: near `total / φ` (which spreads
/// consecutive slots far apart for any total) and coprime to `total`.
fn stride_for(total: u32) -> u32 {
    // 0.618… in 32-bit fixed point.
    const INV_PHI: u64 = 0x9e37_79b9;
    let mut stride = ((u64::from(total) * INV_PHI) >> 32).max(1) as u32;
    // Terminates: stride = total - 1 is coprime to total (for total ≥ 2),
    // and for total = 1 any stride is.
    while gcd(stride, total) != 1 {
        stride += 1;
    }
    stride
}

/// A queue group in the trie: the members of one (pattern, name).
struct GroupEntry<V> {
    id: u64,
    members: FxHashMap<V, u32>,
    total_weight: u32,
    cursor: Rc<Cell<u64>>,
}

/// The entries attached to one place in the trie.
struct Entries<V> {
    plain: FxHashMap<V, u32>,
    /// Keyed by group name; the pattern is implied by the place.
    groups: FxHashMap<Box<[u8]>, GroupEntry<V>>,
}

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries {
            plain: FxHashMap::default(),
            groups: FxHashMap::default(),
        }
    }
}

/// Gives memory back once a map is mostly empty, so that a burst of
/// subscriptions that is later withdrawn does not pin its peak size.
/// Shrinking only below a quarter keeps the cost amortised O(1).
fn shrink_if_sparse<K: Eq + Hash, W>(map: &mut FxHashMap<K, W>) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

impl<V: Copy + Eq + Hash> Entries<V> {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }

    fn weight(&self, group: Option<&[u8]>, value: V) -> u32 {
        let members = match group {
            None => &self.plain,
            Some(name) => match self.groups.get(name) {
                Some(g) => &g.members,
                None => return 0,
            },
        };
        members.get(&value).copied().unwrap_or(0)
    }

    /// Adds `weight` (≥ 1) and returns the triple's new weight.
    fn add(&mut self, pattern: &[u8], group: Option<&[u8]>, value: V, weight: u32) -> u32 {
        let Some(name) = group else {
            let w = self.plain.entry(value).or_insert(0);
            *w = w
                .checked_add(weight)
                .expect("subject: weight overflows u32");
            return *w;
        };
        let g = match self.groups.get_mut(name) {
            Some(g) => g,
            None => self
                .groups
                .entry(name.into())
                .or_insert_with(|| GroupEntry {
                    id: group_id(pattern, name),
                    members: FxHashMap::default(),
                    total_weight: 0,
                    cursor: Rc::new(Cell::new(0)),
                }),
        };
        // Check both sums before changing either, so a panic leaves the
        // entry consistent.
        let total = g
            .total_weight
            .checked_add(weight)
            .expect("subject: queue group weight overflows u32");
        let w = g.members.entry(value).or_insert(0);
        *w += weight; // ≤ total, which did not overflow
        g.total_weight = total;
        *w
    }

    /// Subtracts `weight` (clamped to what is there). `None` if the triple
    /// is absent, else its remaining weight (0: it is gone).
    fn sub(&mut self, group: Option<&[u8]>, value: V, weight: u32) -> Option<u32> {
        let Some(name) = group else {
            return take_weight(&mut self.plain, value, weight);
        };
        let g = self.groups.get_mut(name)?;
        let before = *g.members.get(&value)?;
        let left = take_weight(&mut g.members, value, weight)?;
        g.total_weight -= before - left;
        if g.members.is_empty() {
            self.groups.remove(name);
            shrink_if_sparse(&mut self.groups);
        }
        Some(left)
    }

    fn collect_into(&self, out: &mut Matches<V>) {
        out.plain.extend(self.plain.iter().map(|(&v, &w)| (v, w)));
        for g in self.groups.values() {
            let members: Vec<(V, u32)> = g.members.iter().map(|(&v, &w)| (v, w)).collect();
            let ends = members
                .iter()
                .scan(0u32, |sum, &(_, w)| {
                    *sum += w; // bounded by total_weight
                    Some(*sum)
                })
                .collect();
            out.groups.push(GroupMatch {
                id: g.id,
                members,
                total_weight: g.total_weight,
                ends,
                stride: stride_for(g.total_weight),
                cursor: Rc::clone(&g.cursor),
            });
        }
    }
}

/// Subtracts up to `weight` from `map[value]`, removing it at 0.
fn take_weight<V: Eq + Hash>(map: &mut FxHashMap<V, u32>, value: V, weight: u32) -> Option<u32> {
    let w = map.get_mut(&value)?;
    *w = w.saturating_sub(weight);
    let left = *w;
    if left == 0 {
        map.remove(&value);
        shrink_if_sparse(map);
    }
    Some(left)
}

/// One token position in the trie. The root stands for "no token yet".
struct Node<V> {
    /// Children for literal tokens.
    literal: FxHashMap<Box<[u8]>, Node<V>>,
    /// Child for a `*` token.
    star: Option<Box<Node<V>>>,
    /// Entries whose pattern ends here.
    here: Entries<V>,
    /// Entries whose pattern is this node's path followed by `>`.
    tail: Entries<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            literal: FxHashMap::default(),
            star: None,
            here: Entries::default(),
            tail: Entries::default(),
        }
    }
}

impl<V: Copy + Eq + Hash> Node<V> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.here.is_empty()
            && self.tail.is_empty()
    }

    #[cfg(test)]
    fn count_nodes(&self) -> usize {
        self.literal
            .values()
            .map(|n| 1 + n.count_nodes())
            .sum::<usize>()
            + self.star.as_ref().map_or(0, |n| 1 + n.count_nodes())
    }
}

/// Splits the first token off `s`: `(token, rest after the '.')`.
#[inline]
fn split_token(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(SEP, s) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// Adds to `out` what matches `subject` below `node`; `subject` is the
/// remaining, non-empty part of the published subject.
///
/// For a concrete subject the walk reaches each node at most once (at each
/// level it goes to the literal child and the `*` child, two different
/// nodes), so each pattern, and so each queue group, is reported once.
fn collect<V: Copy + Eq + Hash>(node: &Node<V>, subject: &[u8], out: &mut Matches<V>) {
    // `prefix.>` matches when at least one token remains, which it does.
    node.tail.collect_into(out);
    let (token, rest) = split_token(subject);
    let literal = node.literal.get(token);
    for child in literal.into_iter().chain(node.star.as_deref()) {
        match rest {
            None => child.here.collect_into(out),
            Some(rest) => collect(child, rest, out),
        }
    }
}

/// Removes `(rest-of-pattern, group, value)` below `node`, pruning nodes
/// left empty. `None` if it was absent.
fn remove_below<V: Copy + Eq + Hash>(
    node: &mut Node<V>,
    pattern: &[u8],
    group: Option<&[u8]>,
    value: V,
    weight: u32,
) -> Option<u32> {
    let (token, rest) = split_token(pattern);
    if token == b">" && rest.is_none() {
        return node.tail.sub(group, value, weight);
    }
    let is_star = token == b"*";
    let child = if is_star {
        node.star.as_deref_mut()?
    } else {
        node.literal.get_mut(token)?
    };
    let left = match rest {
        None => child.here.sub(group, value, weight)?,
        Some(rest) => remove_below(child, rest, group, value, weight)?,
    };
    if child.is_empty() {
        if is_star {
            node.star = None;
        } else {
            node.literal.remove(token);
            shrink_if_sparse(&mut node.literal);
        }
    }
    Some(left)
}

/// A subject index: subscription patterns in a token trie, each entry a
/// weighted (pattern, optional queue group, value) triple, with a bounded
/// cache of answers. See the [module documentation](self).
///
/// Not `Send`: answers are shared through [`Rc`], as each shard owns its
/// own index.
pub struct Sublist<V> {
    root: Node<V>,
    /// Distinct triples.
    len: usize,
    cache: FxHashMap<Box<[u8]>, Rc<Matches<V>>>,
    cache_capacity: usize,
    /// xorshift64 state for choosing what to evict.
    rng: u64,
    /// Bumped by every change to the index, so a caller can tell whether
    /// an answer it kept is still current.
    generation: u64,
}

impl<V: Copy + Eq + Hash> Sublist<V> {
    /// An empty index whose cache holds up to `cache_capacity` subjects
    /// (0 disables caching).
    pub fn new(cache_capacity: usize) -> Self {
        Sublist {
            root: Node::default(),
            len: 0,
            cache: FxHashMap::default(),
            cache_capacity,
            rng: 0x2545_f491_4f6c_dd1d,
            generation: 0,
        }
    }

    /// Adds `weight` to the triple `(pattern, group, value)` and returns its
    /// new weight.
    ///
    /// `pattern` must satisfy [`is_index_pattern`] and `group`, if any, be
    /// non-empty; the caller validates (each protocol answers `-ERR` by its
    /// own, stricter or equal, rules first). Invalid input is a bug in the
    /// caller: it panics in debug builds and is ignored, returning 0, in
    /// release builds. A `weight` of 0 changes nothing and returns the
    /// current weight.
    ///
    /// # Panics
    ///
    /// If the triple's weight, or its queue group's total weight, would
    /// exceed `u32::MAX`.
    pub fn insert(&mut self, pattern: &[u8], group: Option<&[u8]>, value: V, weight: u32) -> u32 {
        if !self.check_input(pattern, group) {
            return 0;
        }
        if weight == 0 {
            return self.weight(pattern, group, value);
        }
        let mut node = &mut self.root;
        let mut rest = pattern;
        let entries = loop {
            let (token, after) = split_token(rest);
            if token == b">" && after.is_none() {
                break &mut node.tail;
            }
            node = if token == b"*" {
                node.star.get_or_insert_with(Box::default)
            } else if node.literal.contains_key(token) {
                // Look up before `entry` so that the common case (the
                // prefix exists) does not allocate a key.
                node.literal.get_mut(token).expect("key was just found")
            } else {
                node.literal.entry(token.into()).or_default()
            };
            match after {
                Some(after) => rest = after,
                None => break &mut node.here,
            }
        };
        let new_weight = entries.add(pattern, group, value, weight);
        if new_weight == weight {
            self.len += 1;
        }
        self.invalidate(pattern);
        new_weight
    }

    /// Subtracts `weight` from the triple `(pattern, group, value)` and
    /// returns what is left; at 0 the triple is gone, and trie nodes left
    /// empty are freed, so memory follows the live subscriptions rather
    /// than their history. Subtracting more than the weight removes the
    /// triple. Removing an absent triple changes nothing and returns 0.
    /// Input validity as for [`insert`](Self::insert).
    pub fn remove(&mut self, pattern: &[u8], group: Option<&[u8]>, value: V, weight: u32) -> u32 {
        if !self.check_input(pattern, group) {
            return 0;
        }
        if weight == 0 {
            return self.weight(pattern, group, value);
        }
        match remove_below(&mut self.root, pattern, group, value, weight) {
            None => 0,
            Some(left) => {
                if left == 0 {
                    self.len -= 1;
                }
                self.invalidate(pattern);
                left
            }
        }
    }

    /// The current weight of `(pattern, group, value)`, 0 if absent.
    pub fn weight(&self, pattern: &[u8], group: Option<&[u8]>, value: V) -> u32 {
        let mut node = &self.root;
        let mut rest = pattern;
        loop {
            let (token, after) = split_token(rest);
            if token == b">" && after.is_none() {
                return node.tail.weight(group, value);
            }
            let child = if token == b"*" {
                node.star.as_deref()
            } else {
                node.literal.get(token)
            };
            let Some(child) = child else { return 0 };
            node = child;
            match after {
                Some(after) => rest = after,
                None => return node.here.weight(group, value),
            }
        }
    }

    /// Everything matching the concrete subject `subject`, which must
    /// satisfy [`is_valid_subject`]`(subject, false)` (for other input the
    /// answer is unspecified, and debug builds panic).
    ///
    /// A subject seen before and not affected by a change since is
    /// answered from the cache: one hash of the subject, one lookup, one
    /// reference-count increment.
    #[inline]
    pub fn matches(&mut self, subject: &[u8]) -> Rc<Matches<V>> {
        if let Some(hit) = self.cache.get(subject) {
            return Rc::clone(hit);
        }
        self.matches_slow(subject)
    }

    /// The cache miss: walk the trie and remember the answer.
    #[cold]
    fn matches_slow(&mut self, subject: &[u8]) -> Rc<Matches<V>> {
        // Any bytes are matched token by token: a subject with an empty
        // token matches only what its tokens match, and a `*` or `>` token
        // in a published subject (NATS allows them) is an ordinary token.
        let mut out = Matches {
            plain: Vec::new(),
            groups: Vec::new(),
        };
        if !subject.is_empty() {
            collect(&self.root, subject, &mut out);
        }
        out.groups.sort_unstable_by_key(|g| g.id);
        let out = Rc::new(out);
        if self.cache_capacity > 0 {
            if self.cache.len() >= self.cache_capacity {
                self.evict_half();
            }
            self.cache.insert(subject.into(), Rc::clone(&out));
        }
        out
    }

    /// A number that changes whenever the index does: an answer obtained
    /// at one generation is still the answer while it is unchanged.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of distinct (pattern, group, value) triples.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no triple.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of subjects whose answers are cached.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Validates what insert/remove are given (see [`insert`](Self::insert)).
    fn check_input(&self, pattern: &[u8], group: Option<&[u8]>) -> bool {
        let ok = is_index_pattern(pattern) && group.is_none_or(|g| !g.is_empty());
        debug_assert!(
            ok,
            "Sublist given invalid pattern {:?} or group {:?}",
            String::from_utf8_lossy(pattern),
            group.map(String::from_utf8_lossy)
        );
        ok
    }

    /// Drops the cached answers that a change to `pattern` may have made
    /// stale: exactly those for subjects the pattern matches.
    fn invalidate(&mut self, pattern: &[u8]) {
        self.generation += 1;
        if self.cache.is_empty() {
            return;
        }
        if has_wildcard_token(pattern) {
            self.cache
                .retain(|subject, _| !pattern_matches(pattern, subject));
        } else {
            // A literal pattern matches only the subject equal to it.
            self.cache.remove(pattern);
        }
    }

    /// Drops about half the cache, chosen pseudo-randomly (see the module
    /// documentation for why).
    fn evict_half(&mut self) {
        let mut x = self.rng;
        let mut bits = 0u64;
        let mut left = 0u32;
        self.cache.retain(|_, _| {
            if left == 0 {
                // xorshift64: 64 coin flips per step.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                bits = x;
                left = 64;
            }
            let keep = bits & 1 == 1;
            bits >>= 1;
            left -= 1;
            keep
        });
        self.rng = x;
        // A run of bad luck could keep everything; make room regardless.
        if self.cache.len() >= self.cache_capacity {
            self.cache.clear();
        }
    }

    /// Number of trie nodes below the root.
    #[cfg(test)]
    pub(crate) fn node_count(&self) -> usize {
        self.root.count_nodes()
    }
}

impl<V> fmt::Debug for Sublist<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sublist")
            .field("len", &self.len)
            .field("cached", &self.cache.len())
            .field("cache_capacity", &self.cache_capacity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    // ---- validation -------------------------------------------------------

    #[test]
    fn validation_table() {
        // (subject, valid for SUB/UNSUB, valid for PUB)
        let long_ok = vec![b'a'; 256];
        let long_bad = vec![b'a'; 257];
        let cases: &[(&[u8], bool, bool)] = &[
            (b"a", true, true),
            (b"a.b", true, true),
            (b"prices.eur.spot", true, true),
            (b"a..b", false, false),
            (b".a", false, false),
            (b"a.", false, false),
            (b".", false, false),
            (b"", false, false),
            (&long_ok, true, true),
            (&long_bad, false, false),
            (b"a b", false, false),
            (b" a", false, false),
            (b"a\x7f", false, false), // DEL
            (b"a\x00b", false, false),
            (b"a\tb", false, false),
            (b"caf\xc3\xa9", false, false), // non-ASCII
            (b"~!@#$%^&()", true, true),
            (b"*", true, false),
            (b">", true, false),
            (b"a.*", true, false),
            (b"*.b", true, false),
            (b"*.*", true, false),
            (b"a.>", true, false),
            (b"*.>", true, false),
            (b">.a", false, false),
            (b"a.>.b", false, false),
            (b">.>", false, false),
            (b"a*", true, true),
            (b"b>", true, true),
            (b"a.**", true, true),
            (b"a.>>", true, true),
            (b"*a.>b", true, true),
        ];
        for &(s, sub, publ) in cases {
            let shown = String::from_utf8_lossy(s);
            assert_eq!(is_valid_subject(s, true), sub, "SUB {shown:?}");
            assert_eq!(is_valid_subject(s, false), publ, "PUB {shown:?}");
        }
        // 256 bytes with dots and a wildcard is still fine.
        let mut s = b"a.".repeat(127);
        s.extend_from_slice(b">");
        assert_eq!(s.len(), 255);
        assert!(is_valid_subject(&s, true));
    }

    #[test]
    fn group_validation() {
        assert!(is_valid_group(b"g"));
        assert!(is_valid_group(b"workers.*>"));
        assert!(is_valid_group(&[b'g'; 64]));
        assert!(!is_valid_group(&[b'g'; 65]));
        assert!(!is_valid_group(b""));
        assert!(!is_valid_group(b"a b"));
        assert!(!is_valid_group(b"a\x7f"));
        assert!(!is_valid_group(b"\x80"));
    }

    #[test]
    fn printable_is_exactly_0x21_to_0x7e() {
        for b in 0..=255u8 {
            assert_eq!(is_printable(b), (0x21..=0x7e).contains(&b), "{b:#x}");
        }
    }

    #[test]
    fn group_ids() {
        let id = group_id(b"a.*", b"w");
        assert_eq!(id, group_id(b"a.*", b"w"));
        assert_ne!(id, group_id(b"a.>", b"w"));
        assert_ne!(id, group_id(b"a.*", b"x"));
        // The length prefix keeps the split between pattern and name.
        assert_ne!(group_id(b"ab", b"c"), group_id(b"a", b"bc"));
        // The same on every thread of the process (every shard).
        let other = std::thread::spawn(|| group_id(b"a.*", b"w"))
            .join()
            .unwrap();
        assert_eq!(id, other);
        // Keyed: not the unkeyed SipHash a client could compute offline.
        let mut h = std::hash::DefaultHasher::new();
        h.write_u64(3);
        h.write(b"a.*");
        h.write(b"w");
        assert_ne!(id, h.finish());
    }

    // ---- matching semantics ----------------------------------------------

    fn plain_values(m: &Matches<u32>) -> Vec<u32> {
        let mut v: Vec<u32> = m.plain.iter().map(|&(v, _)| v).collect();
        v.sort_unstable();
        v
    }

    /// Which of `subjects` a single pattern matches, through the trie.
    fn trie_hits(pattern: &str, subjects: &[&str]) -> Vec<bool> {
        let mut s = Sublist::new(16);
        s.insert(pattern.as_bytes(), None, 1u32, 1);
        subjects
            .iter()
            .map(|subj| !s.matches(subj.as_bytes()).is_empty())
            .collect()
    }

    #[test]
    fn wildcard_semantics() {
        let subjects = ["a", "b", "a.b", "a.c", "b.b", "a.b.c", "a.b.c.d", "x.y.z"];
        #[rustfmt::skip]
        let table: &[(&str, [bool; 8])] = &[
            //          a      b      a.b    a.c    b.b    a.b.c  a.b.c.d x.y.z
            ("a",     [true,  false, false, false, false, false, false, false]),
            ("a.b",   [false, false, true,  false, false, false, false, false]),
            ("a.*",   [false, false, true,  true,  false, false, false, false]),
            ("a.>",   [false, false, true,  true,  false, true,  true,  false]),
            ("*",     [true,  true,  false, false, false, false, false, false]),
            ("*.b",   [false, false, true,  false, true,  false, false, false]),
            ("*.>",   [false, false, true,  true,  true,  true,  true,  true ]),
            ("*.*.c", [false, false, false, false, false, true,  false, false]),
            ("a.*.>", [false, false, false, false, false, true,  true,  false]),
            (">",     [true,  true,  true,  true,  true,  true,  true,  true ]),
            ("a*",    [false, false, false, false, false, false, false, false]),
        ];
        for (pattern, expected) in table {
            assert_eq!(
                &trie_hits(pattern, &subjects),
                expected,
                "pattern {pattern}"
            );
            for (subject, &want) in subjects.iter().zip(expected) {
                assert_eq!(
                    pattern_matches(pattern.as_bytes(), subject.as_bytes()),
                    want,
                    "pattern_matches({pattern}, {subject})"
                );
            }
        }
        // `a*` and `b>` are literal tokens.
        assert_eq!(trie_hits("a*", &["a*", "ab"]), [true, false]);
        assert_eq!(trie_hits("x.b>", &["x.b>", "x.b.c"]), [true, false]);
    }

    #[test]
    fn overlapping_patterns_report_each_match() {
        let mut s = Sublist::new(16);
        s.insert(b"a.b", None, 1u32, 1);
        s.insert(b"a.*", None, 1, 1);
        s.insert(b"a.>", None, 1, 1);
        s.insert(b">", None, 2, 1);
        s.insert(b"a.c", None, 3, 1);
        let m = s.matches(b"a.b");
        // Value 1 once per matching pattern: the caller dedups.
        assert_eq!(plain_values(&m), [1, 1, 1, 2]);
        assert!(m.groups.is_empty());
        assert!(s.matches(b"b").plain == vec![(2, 1)]);
    }

    // ---- weights / multiset ----------------------------------------------

    #[test]
    fn weights_form_a_multiset() {
        let mut s = Sublist::new(16);
        assert_eq!(s.insert(b"a.*", None, 7u32, 1), 1);
        assert_eq!(s.insert(b"a.*", None, 7, 2), 3);
        assert_eq!(s.insert(b"a.*", Some(b"g"), 7, 5), 5); // a different triple
        assert_eq!(s.insert(b"a.*", None, 8, 1), 1);
        assert_eq!(s.len(), 3);
        assert_eq!(s.weight(b"a.*", None, 7), 3);
        assert_eq!(s.weight(b"a.>", None, 7), 0);

        let m = s.matches(b"a.x");
        let mut plain = m.plain.clone();
        plain.sort_unstable();
        assert_eq!(plain, [(7, 3), (8, 1)]);
        assert_eq!(m.groups.len(), 1);
        assert_eq!(m.groups[0].members, [(7, 5)]);
        assert_eq!(m.groups[0].total_weight, 5);

        assert_eq!(s.remove(b"a.*", None, 7, 1), 2);
        assert_eq!(s.len(), 3);
        assert_eq!(s.remove(b"a.*", None, 7, 2), 0);
        assert_eq!(s.len(), 2);
        // Absent: nothing changes.
        assert_eq!(s.remove(b"a.*", None, 7, 1), 0);
        assert_eq!(s.remove(b"a.*", Some(b"h"), 7, 1), 0);
        assert_eq!(s.remove(b"q.r", None, 7, 1), 0);
        assert_eq!(s.len(), 2);
        // Removing more than is there removes the triple.
        assert_eq!(s.remove(b"a.*", Some(b"g"), 7, 100), 0);
        assert_eq!(s.len(), 1);
        // Weight 0 is a query.
        assert_eq!(s.insert(b"a.*", None, 8, 0), 1);
        assert_eq!(s.insert(b"z", None, 8, 0), 0);
        assert_eq!(s.len(), 1);
        assert_eq!(s.matches(b"a.x").plain, [(8, 1)]);
    }

    #[test]
    #[should_panic(expected = "weight overflows")]
    fn weight_overflow_panics() {
        let mut s = Sublist::new(0);
        s.insert(b"a", None, 1u32, u32::MAX);
        s.insert(b"a", None, 1, 1);
    }

    #[test]
    #[should_panic(expected = "group weight overflows")]
    fn group_weight_overflow_panics() {
        let mut s = Sublist::new(0);
        s.insert(b"a", Some(b"g"), 1u32, u32::MAX);
        s.insert(b"a", Some(b"g"), 2, 1);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "invalid pattern")]
    fn invalid_pattern_is_a_caller_bug() {
        Sublist::new(0).insert(b"a..b", None, 1u32, 1);
    }

    // ---- queue groups -----------------------------------------------------

    #[test]
    fn groups_are_named_by_pattern_and_name() {
        let mut s = Sublist::new(16);
        s.insert(b"a.*", Some(b"w"), 1u32, 1);
        s.insert(b"a.*", Some(b"w"), 2, 1);
        s.insert(b"a.>", Some(b"w"), 3, 1);
        s.insert(b"a.*", Some(b"v"), 4, 1);
        let m = s.matches(b"a.b");
        assert!(m.plain.is_empty());
        let mut groups: Vec<(u64, Vec<u32>)> = m
            .groups
            .iter()
            .map(|g| {
                let mut members: Vec<u32> = g.members.iter().map(|&(v, _)| v).collect();
                members.sort_unstable();
                (g.id, members)
            })
            .collect();
        groups.sort_unstable();
        let mut want = vec![
            (group_id(b"a.*", b"w"), vec![1, 2]),
            (group_id(b"a.>", b"w"), vec![3]),
            (group_id(b"a.*", b"v"), vec![4]),
        ];
        want.sort_unstable();
        assert_eq!(groups, want);
    }

    fn pick_counts(g: &GroupMatch<u32>, picks: usize) -> BTreeMap<u32, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..picks {
            *counts.entry(g.pick()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn picks_follow_weights_exactly() {
        let mut s = Sublist::new(16);
        s.insert(b"jobs", Some(b"w"), 1u32, 1);
        s.insert(b"jobs", Some(b"w"), 2, 3);
        let m = s.matches(b"jobs");
        let g = &m.groups[0];
        assert_eq!(g.total_weight, 4);
        assert_eq!(pick_counts(g, 4000), BTreeMap::from([(1, 1000), (2, 3000)]));
        // Every round of `total_weight` picks is exact on its own.
        for _ in 0..50 {
            assert_eq!(pick_counts(g, 4), BTreeMap::from([(1, 1), (2, 3)]));
        }
    }

    #[test]
    fn equal_weights_alternate() {
        let mut s = Sublist::new(16);
        s.insert(b"jobs", Some(b"w"), 1u32, 1000);
        s.insert(b"jobs", Some(b"w"), 2, 1000);
        let m = s.matches(b"jobs");
        let picks: Vec<u32> = (0..2000).map(|_| m.groups[0].pick()).collect();
        assert_eq!(picks.iter().filter(|&&v| v == 1).count(), 1000);
        // Interleaved, not 1000 in a row: no run longer than 2.
        let longest_run = picks
            .chunk_by(|a, b| a == b)
            .map(<[u32]>::len)
            .max()
            .unwrap();
        assert!(longest_run <= 2, "longest run {longest_run}");
    }

    #[test]
    fn many_members_round_robin() {
        let mut s = Sublist::new(16);
        for v in 0..10u32 {
            s.insert(b"q.>", Some(b"w"), v, 1);
        }
        let m = s.matches(b"q.x.y");
        let g = &m.groups[0];
        for _ in 0..3 {
            // Each round of 10 picks visits every member once.
            let counts = pick_counts(g, 10);
            assert_eq!(counts.len(), 10);
            assert!(counts.values().all(|&c| c == 1));
        }
    }

    #[test]
    fn stride_is_coprime() {
        for total in 1..2000u32 {
            let stride = stride_for(total);
            assert!(stride >= 1 && (stride < total || total == 1), "{total}");
            assert_eq!(gcd(stride, total), 1, "{total}");
        }
        assert_eq!(gcd(stride_for(u32::MAX), u32::MAX), 1);
    }

    #[test]
    fn cursor_survives_cache_invalidation() {
        let mut s = Sublist::new(16);
        s.insert(b"jobs.x", Some(b"w"), 1u32, 1);
        s.insert(b"jobs.x", Some(b"w"), 2, 1);
        let first = s.matches(b"jobs.x").groups[0].pick();
        // A change that touches this subject rebuilds its answer...
        s.insert(b"jobs.*", None, 9, 1);
        let m = s.matches(b"jobs.x");
        assert_eq!(m.plain, [(9, 1)]);
        // ...but the group carries on where it was.
        assert_ne!(m.groups[0].pick(), first);
        // The same group seen through another cached subject shares it too.
        s.insert(b"jobs.>", Some(b"v"), 1, 1);
        s.insert(b"jobs.>", Some(b"v"), 2, 1);
        let a = s.matches(b"jobs.a");
        let b = s.matches(b"jobs.b");
        let p1 = a.groups[0].pick();
        let p2 = b.groups[0].pick();
        assert_ne!(p1, p2);
    }

    // ---- cache ------------------------------------------------------------

    #[test]
    fn cache_hits_share_the_answer() {
        let mut s = Sublist::new(16);
        s.insert(b"a.*", None, 1u32, 1);
        let m1 = s.matches(b"a.b");
        let m2 = s.matches(b"a.b");
        assert!(Rc::ptr_eq(&m1, &m2));
        assert_eq!(s.cache_len(), 1);
    }

    #[test]
    fn cache_sees_inserts_and_removes() {
        let mut s = Sublist::new(16);
        assert!(s.matches(b"a.b").is_empty()); // empty answers are cached too
        assert!(s.matches(b"c.d").is_empty());
        assert_eq!(s.cache_len(), 2);

        s.insert(b"a.b", None, 1u32, 1); // literal: drops only "a.b"
        assert_eq!(s.cache_len(), 1);
        assert_eq!(s.matches(b"a.b").plain, [(1, 1)]);

        s.insert(b"*.b", None, 2, 1); // wildcard: drops what it matches
        assert_eq!(plain_values(&s.matches(b"a.b")), [1, 2]);
        let unrelated = s.matches(b"c.d");
        s.insert(b"a.>", Some(b"g"), 3, 1);
        assert!(
            Rc::ptr_eq(&unrelated, &s.matches(b"c.d")),
            "unrelated entry kept"
        );
        assert_eq!(s.matches(b"a.b").groups.len(), 1);

        // A weight change is a change.
        s.insert(b"a.b", None, 1, 4);
        assert!(s.matches(b"a.b").plain.contains(&(1, 5)));

        s.remove(b"a.b", None, 1, 5);
        assert_eq!(s.matches(b"a.b").plain, [(2, 1)]);
        s.remove(b"*.b", None, 2, 1);
        s.remove(b"a.>", Some(b"g"), 3, 1);
        assert!(s.matches(b"a.b").is_empty());
        // Removing something absent leaves the cache alone.
        let before = s.matches(b"a.b");
        s.remove(b"a.b", None, 1, 1);
        assert!(Rc::ptr_eq(&before, &s.matches(b"a.b")));
    }

    #[test]
    fn cache_stays_bounded() {
        let mut s = Sublist::new(8);
        s.insert(b">", None, 1u32, 1);
        for i in 0..1000 {
            let subject = format!("s.{i}");
            assert_eq!(s.matches(subject.as_bytes()).plain, [(1, 1)]);
            assert!(s.cache_len() <= 8);
        }
        let mut off = Sublist::new(0);
        off.insert(b"a", None, 1u32, 1);
        assert_eq!(off.matches(b"a").plain, [(1, 1)]);
        assert_eq!(off.cache_len(), 0);
    }

    // ---- pruning ----------------------------------------------------------

    #[test]
    fn removing_everything_frees_every_node() {
        let mut s = Sublist::new(16);
        let patterns: &[&[u8]] = &[
            b"a", b"a.b", b"a.b.c", b"a.*.c", b"*.*", b">", b"a.>", b"*.>", b"x.y.z.w",
        ];
        for round in 0..3 {
            for (i, p) in patterns.iter().enumerate() {
                s.insert(p, None, i as u32, 1);
                s.insert(p, Some(b"g"), i as u32, 2);
                s.matches(b"a.b.c");
            }
            assert!(s.node_count() > 0);
            assert_eq!(s.len(), 2 * patterns.len());
            for (i, p) in patterns.iter().enumerate().rev() {
                assert_eq!(s.remove(p, None, i as u32, 1), 0);
                assert_eq!(s.remove(p, Some(b"g"), i as u32, 2), 0);
            }
            assert_eq!(s.node_count(), 0, "round {round}");
            assert!(s.is_empty());
            assert!(s.matches(b"a.b.c").is_empty());
        }
    }

    #[test]
    fn churn_does_not_grow_the_trie() {
        let mut s = Sublist::new(4);
        s.insert(b"keep.me", None, 0u32, 1);
        for i in 0..5000u32 {
            let p = format!("churn.{}.{}", i % 97, i);
            s.insert(p.as_bytes(), Some(b"g"), i, 1);
            s.matches(p.as_bytes());
            assert_eq!(s.remove(p.as_bytes(), Some(b"g"), i, 1), 0);
        }
        assert_eq!(s.node_count(), 2);
        assert_eq!(s.len(), 1);
    }

    // ---- model check ------------------------------------------------------

    mod model {
        use super::*;
        use proptest::prelude::*;

        /// The reference: split into tokens, match recursively.
        fn naive_match(pattern: &[&str], subject: &[&str]) -> bool {
            match (pattern.split_first(), subject.split_first()) {
                (None, None) => true,
                (Some((&">", [])), Some(_)) => true,
                (Some((&p, prest)), Some((&s, srest))) => {
                    (p == "*" || p == s) && naive_match(prest, srest)
                }
                _ => false,
            }
        }

        type Key = (String, Option<&'static str>, u8);

        #[derive(Debug, Clone)]
        enum Op {
            Insert(usize, usize, u8, u32),
            Remove(usize, usize, u8, u32),
            Query(usize),
        }

        const GROUPS: [Option<&str>; 3] = [None, Some("g"), Some("h")];

        fn pattern() -> impl Strategy<Value = String> {
            let token = prop::sample::select(vec!["a", "b", "*", "a*"]);
            (prop::collection::vec(token, 0..=3), any::<bool>()).prop_filter_map(
                "empty pattern",
                |(mut tokens, gt)| {
                    if gt {
                        tokens.push(">");
                    }
                    (!tokens.is_empty()).then(|| tokens.join("."))
                },
            )
        }

        fn subject() -> impl Strategy<Value = String> {
            let token = prop::sample::select(vec!["a", "b", "c", "a*"]);
            prop::collection::vec(token, 1..=4).prop_map(|t| t.join("."))
        }

        fn op(patterns: usize, subjects: usize) -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (0..patterns, 0..3usize, 0..3u8, 1..=3u32)
                    .prop_map(|(p, g, v, w)| Op::Insert(p, g, v, w)),
                2 => (0..patterns, 0..3usize, 0..3u8, 1..=3u32)
                    .prop_map(|(p, g, v, w)| Op::Remove(p, g, v, w)),
                3 => (0..subjects).prop_map(Op::Query),
            ]
        }

        fn case() -> impl Strategy<Value = (Vec<String>, Vec<String>, Vec<Op>, usize)> {
            (
                prop::collection::vec(pattern(), 1..8),
                prop::collection::vec(subject(), 1..8),
                0..5usize,
            )
                .prop_flat_map(|(patterns, subjects, cap)| {
                    let ops = prop::collection::vec(op(patterns.len(), subjects.len()), 1..60);
                    (Just(patterns), Just(subjects), ops, Just(cap))
                })
        }

        /// What `matches` must return, from the model, in a canonical form.
        fn expected(model: &BTreeMap<Key, u32>, subject: &str) -> Canon {
            let s: Vec<&str> = subject.split('.').collect();
            let mut plain = Vec::new();
            let mut groups: BTreeMap<u64, (Vec<(u8, u32)>, u32)> = BTreeMap::new();
            for ((pattern, group, value), &w) in model {
                let p: Vec<&str> = pattern.split('.').collect();
                if !naive_match(&p, &s) {
                    continue;
                }
                match group {
                    None => plain.push((*value, w)),
                    Some(name) => {
                        let g = groups
                            .entry(group_id(pattern.as_bytes(), name.as_bytes()))
                            .or_default();
                        g.0.push((*value, w));
                        g.1 += w;
                    }
                }
            }
            plain.sort_unstable();
            for g in groups.values_mut() {
                g.0.sort_unstable();
            }
            (plain, groups)
        }

        type Canon = (Vec<(u8, u32)>, BTreeMap<u64, (Vec<(u8, u32)>, u32)>);

        fn canonical(m: &Matches<u8>) -> Canon {
            let mut plain = m.plain.clone();
            plain.sort_unstable();
            let mut groups = BTreeMap::new();
            assert!(m.groups.is_sorted_by_key(|g| g.id), "groups sorted by id");
            for g in &m.groups {
                assert!(
                    m.group(g.id).is_some_and(|found| found.id == g.id),
                    "group {:#x} found by id",
                    g.id
                );
                let mut members = g.members.clone();
                members.sort_unstable();
                assert!(!members.is_empty());
                let picked = g.pick();
                assert!(members.iter().any(|&(v, _)| v == picked));
                let old = groups.insert(g.id, (members, g.total_weight));
                assert!(old.is_none(), "group {:#x} reported twice", g.id);
            }
            (plain, groups)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            #[test]
            fn matches_agree_with_naive_reference((patterns, subjects, ops, cap) in case()) {
                let mut list = Sublist::<u8>::new(cap);
                let mut model: BTreeMap<Key, u32> = BTreeMap::new();
                for op in &ops {
                    match *op {
                        Op::Insert(p, g, v, w) => {
                            let key = (patterns[p].clone(), GROUPS[g], v);
                            let total = model.entry(key).or_insert(0);
                            *total += w;
                            let got = list.insert(
                                patterns[p].as_bytes(), GROUPS[g].map(str::as_bytes), v, w);
                            prop_assert_eq!(got, *total);
                        }
                        Op::Remove(p, g, v, w) => {
                            let key = (patterns[p].clone(), GROUPS[g], v);
                            let left = match model.get_mut(&key) {
                                None => 0,
                                Some(total) => {
                                    *total = total.saturating_sub(w);
                                    let left = *total;
                                    if left == 0 {
                                        model.remove(&key);
                                    }
                                    left
                                }
                            };
                            let got = list.remove(
                                patterns[p].as_bytes(), GROUPS[g].map(str::as_bytes), v, w);
                            prop_assert_eq!(got, left);
                        }
                        Op::Query(s) => {
                            let got = canonical(&list.matches(subjects[s].as_bytes()));
                            prop_assert_eq!(got, expected(&model, &subjects[s]));
                        }
                    }
                    prop_assert_eq!(list.len(), model.len());
                    prop_assert!(list.cache_len() <= cap);
                }
                // Every subject once more, then drain: nothing may be left.
                for s in &subjects {
                    prop_assert_eq!(canonical(&list.matches(s.as_bytes())), expected(&model, s));
                }
                for ((pattern, group, value), w) in std::mem::take(&mut model) {
                    prop_assert_eq!(
                        list.remove(pattern.as_bytes(), group.map(str::as_bytes), value, w), 0);
                }
                prop_assert!(list.is_empty());
                prop_assert_eq!(list.node_count(), 0);
                for s in &subjects {
                    prop_assert!(list.matches(s.as_bytes()).is_empty());
                }
            }

            #[test]
            fn pattern_matches_agrees_with_naive_reference(p in pattern(), s in subject()) {
                let pt: Vec<&str> = p.split('.').collect();
                let st: Vec<&str> = s.split('.').collect();
                prop_assert_eq!(pattern_matches(p.as_bytes(), s.as_bytes()), naive_match(&pt, &st));
            }
        }

        #[test]
        fn naive_reference_sanity() {
            let m = |p: &str, s: &str| {
                naive_match(
                    &p.split('.').collect::<Vec<_>>(),
                    &s.split('.').collect::<Vec<_>>(),
                )
            };
            assert!(m("a.*", "a.b") && !m("a.*", "a") && !m("a.*", "a.b.c"));
            assert!(m("a.>", "a.b") && m("a.>", "a.b.c") && !m("a.>", "a"));
            assert!(m(">", "a") && m("*.>", "a.b") && !m("*.>", "a"));
        }
    }

    // ---- timing (run by hand) --------------------------------------------

    /// Prints the cost of a cached `matches`; not a test of speed.
    /// `cargo test --release --lib subject::tests::cached_matches_cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn cached_matches_cost() {
        use std::hint::black_box;
        use std::time::Instant;

        let mut s = Sublist::new(4096);
        for i in 0..1000u32 {
            s.insert(format!("prices.c{i}").as_bytes(), None, i, 1);
        }
        s.insert(b"prices.*", None, 5000, 1);
        s.insert(b"prices.>", Some(b"w"), 5001, 1);
        let subjects: Vec<Vec<u8>> = (0..64)
            .map(|i| format!("prices.c{i}").into_bytes())
            .collect();
        for subj in &subjects {
            s.matches(subj);
        }
        let rounds = 200_000;
        let start = Instant::now();
        for _ in 0..rounds {
            for subj in &subjects {
                black_box(s.matches(black_box(subj)));
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / (rounds * subjects.len()) as f64;
        println!("cached matches (\"prices.cNN\", 64 subjects rotating): {ns:.1} ns/call");

        let one = b"prices.eur".to_vec();
        s.matches(&one);
        let n = 10_000_000;
        let start = Instant::now();
        for _ in 0..n {
            black_box(s.matches(black_box(&one)));
        }
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        println!("cached matches (\"prices.eur\", same subject): {ns:.1} ns/call");

        let m = s.matches(&one);
        let start = Instant::now();
        for _ in 0..n {
            black_box(m.groups[0].pick());
        }
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        println!("GroupMatch::pick: {ns:.1} ns/call");

        let mut uncached = Sublist::new(0);
        std::mem::swap(&mut uncached.root, &mut s.root);
        let n = 1_000_000;
        let start = Instant::now();
        for _ in 0..n {
            black_box(uncached.matches(black_box(&one)));
        }
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        println!("uncached matches (trie walk + Rc alloc): {ns:.1} ns/call");
    }
}
