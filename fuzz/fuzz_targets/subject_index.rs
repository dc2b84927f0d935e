//! The subject index (`tern::subject::Sublist`) and the routing built on it
//! (`tern::router::Router`), driven by any sequence of inserts, removes and
//! lookups, against a naive index (`tern_fuzz::subject_model`) that keeps
//! every entry in a sorted map and matches token by token.
//!
//! * `Sublist`: every insert/remove returns the model's weight, every
//!   lookup lists exactly the matching plain entries and queue groups (with
//!   their members and weights), whatever the cache holds — its capacity
//!   is chosen from 0 to large, so answers are cached, invalidated and
//!   evicted all along.
//! * `Router`: a publish goes to each matching local subscriber once, to
//!   each shard with a matching plain subscription once, and to exactly one
//!   member (here or on a shard that has one) of each matching queue group;
//!   a forwarded message to the local plain subscribers (if asked) and one
//!   local member of each named group. Routing the same subject twice in a
//!   row must not go stale (the router remembers plans).
//!
//! Input: `[cache capacity]` then operations, each an opcode byte and its
//! arguments; patterns and subjects are built from a handful of tokens
//! (wildcards, near-wildcards, empty tokens, any byte) so they collide.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use tern::mesh::ShardId;
use tern::router::{Plan, Router, SubRef};
use tern::subject::{group_id, is_index_pattern, Matches, Sublist};
use tern_fuzz::subject_model::{index_pattern, NaiveIndex};
use tern_fuzz::Input;

const CAPACITIES: [usize; 4] = [0, 1, 3, 4096];

/// Tokens a byte picks (low three bits); 7: the byte itself as a
/// one-byte token (which may be a `.`, a space, anything).
const TOKENS: [&[u8]; 7] = [b"a", b"b", b"*", b">", b"a*", b"", b"c"];

const GROUPS: [Option<&[u8]>; 4] = [None, Some(b"g"), Some(b"h"), None];

/// 1 to 4 tokens joined by `.`.
fn tokens(input: &mut Input) -> Vec<u8> {
    let n = 1 + usize::from(input.byte() & 3);
    let mut out = Vec::new();
    for i in 0..n {
        if i > 0 {
            out.push(b'.');
        }
        let b = input.byte();
        match TOKENS.get(usize::from(b & 7)) {
            Some(t) => out.extend_from_slice(t),
            None => out.push(b >> 3),
        }
    }
    out
}

/// A pattern the index takes, or `None` (after checking that tern and
/// the model agree on which patterns it takes).
fn pattern(input: &mut Input) -> Option<Vec<u8>> {
    let p = tokens(input);
    let ok = index_pattern(&p);
    assert_eq!(
        is_index_pattern(&p),
        ok,
        "pattern {:?}",
        String::from_utf8_lossy(&p)
    );
    ok.then_some(p)
}

/// Matches in a canonical form: plain entries sorted, groups by id with
/// their members sorted.
type Canon<V> = (Vec<(V, u32)>, BTreeMap<u64, (Vec<(V, u32)>, u32)>);

fn canonical<V: Ord + Copy>(m: &Matches<V>) -> Canon<V> {
    let mut plain = m.plain.clone();
    plain.sort_unstable();
    let mut groups = BTreeMap::new();
    for g in &m.groups {
        let mut members = g.members.clone();
        members.sort_unstable();
        assert!(!members.is_empty(), "empty group in an answer");
        assert!(members.iter().all(|&(_, w)| w > 0), "member of weight 0");
        let total: u32 = members.iter().map(|&(_, w)| w).sum();
        assert_eq!(g.total_weight, total);
        let picked = g.pick();
        assert!(
            members.iter().any(|&(v, _)| v == picked),
            "picked a non-member"
        );
        let again = groups.insert(g.id, (members, g.total_weight));
        assert!(again.is_none(), "group {:#x} reported twice", g.id);
    }
    (plain, groups)
}

fn expected<V: Ord + Copy>(model: &NaiveIndex<V>, subject: &[u8]) -> Canon<V> {
    let mut plain = Vec::new();
    let mut groups: BTreeMap<u64, (Vec<(V, u32)>, u32)> = BTreeMap::new();
    for ((p, group, v), w) in model.matching(subject) {
        match group {
            None => plain.push((*v, w)),
            Some(name) => {
                let g = groups.entry(group_id(p, name)).or_default();
                g.0.push((*v, w));
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

/// A router and the two naive indexes that say what it knows: its own
/// subscriptions, and the other shards'.
struct Routing {
    router: Router,
    plan: Plan,
    local: NaiveIndex<SubRef>,
    remote: NaiveIndex<ShardId>,
}

impl Routing {
    /// The naive local index's plain subscribers of `subject`, and the
    /// members of each of its matching groups, by group id.
    fn local_matches(&self, subject: &[u8]) -> (BTreeSet<SubRef>, BTreeMap<u64, BTreeSet<SubRef>>) {
        let mut plain = BTreeSet::new();
        let mut groups: BTreeMap<u64, BTreeSet<SubRef>> = BTreeMap::new();
        for ((p, group, sub), _) in self.local.matching(subject) {
            match group {
                None => plain.insert(*sub),
                Some(name) => groups.entry(group_id(p, name)).or_default().insert(*sub),
            };
        }
        (plain, groups)
    }

    /// Checks the plan of a message published here on `subject`.
    fn check_publish(&self, subject: &[u8]) {
        let plan = &self.plan;
        let local: BTreeSet<SubRef> = plan.local.iter().copied().collect();
        assert_eq!(local.len(), plan.local.len(), "a local receiver twice");
        let shards: BTreeSet<ShardId> = plan.remote.iter().map(|t| t.shard).collect();
        assert_eq!(shards.len(), plan.remote.len(), "a shard twice");

        let (plain_here, groups_here) = self.local_matches(subject);
        let mut plain_there = BTreeSet::new();
        let mut groups_there: BTreeMap<u64, BTreeSet<ShardId>> = BTreeMap::new();
        for ((p, group, shard), _) in self.remote.matching(subject) {
            match group {
                None => plain_there.insert(*shard),
                Some(name) => groups_there
                    .entry(group_id(p, name))
                    .or_default()
                    .insert(*shard),
            };
        }

        // Plain subscribers: all of them, here and there.
        assert!(plain_here.is_subset(&local), "a local subscriber missed");
        for t in &plan.remote {
            assert_eq!(t.plain, plain_there.contains(&t.shard), "shard {}", t.shard);
            assert!(
                t.plain || !t.groups.is_empty(),
                "shard {} for nothing",
                t.shard
            );
        }
        assert!(
            plain_there.is_subset(&shards),
            "a shard with subscribers missed"
        );

        // Queue groups: exactly one member each, here or on a shard that
        // has one.
        let mut sent_there: BTreeMap<u64, Vec<ShardId>> = BTreeMap::new();
        for t in &plan.remote {
            for &id in &t.groups {
                sent_there.entry(id).or_default().push(t.shard);
            }
        }
        let all: BTreeSet<u64> = groups_here
            .keys()
            .chain(groups_there.keys())
            .copied()
            .collect();
        for (id, to) in &sent_there {
            assert!(all.contains(id), "group {id:#x} does not match");
            assert_eq!(to.len(), 1, "group {id:#x} sent to shards {to:?}");
            assert!(groups_there[id].contains(&to[0]), "shard without a member");
        }
        let mut explained = plain_here.clone();
        for id in &all {
            let here = groups_here.get(id);
            let picked = here.map(|members| members.intersection(&local).count() > 0);
            if sent_there.contains_key(id) {
                continue;
            }
            assert_eq!(picked, Some(true), "group {id:#x} got no member");
            explained.extend(here.into_iter().flatten());
        }
        assert!(
            local.is_subset(&explained),
            "a local receiver not asked for"
        );
    }

    /// Checks the plan of a message forwarded here.
    fn check_forward(&self, subject: &[u8], plain: bool, groups: &[u64]) {
        let plan = &self.plan;
        assert!(plan.remote.is_empty(), "forwarded on");
        let local: BTreeSet<SubRef> = plan.local.iter().copied().collect();
        assert_eq!(local.len(), plan.local.len(), "a local receiver twice");
        let (plain_here, groups_here) = self.local_matches(subject);
        let mut explained = BTreeSet::new();
        if plain {
            assert!(plain_here.is_subset(&local), "a local subscriber missed");
            explained.extend(plain_here);
        }
        for id in groups {
            if let Some(members) = groups_here.get(id) {
                assert!(
                    members.intersection(&local).count() > 0,
                    "group got no member"
                );
                explained.extend(members);
            }
        }
        assert!(
            local.is_subset(&explained),
            "a local receiver not asked for"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let cap = CAPACITIES[usize::from(input.byte() & 3)];
    let mut list = Sublist::<u8>::new(cap);
    let mut model = NaiveIndex::<u8>::default();
    let mut routing = Routing {
        router: Router::new(),
        plan: Plan::default(),
        local: NaiveIndex::default(),
        remote: NaiveIndex::default(),
    };

    let mut ops = 0;
    while !input.is_empty() && ops < 400 {
        ops += 1;
        let op = input.byte();
        let arg = input.byte();
        let group = GROUPS[usize::from(arg & 3)];
        match op % 10 {
            // The index itself.
            0..=2 => {
                let Some(p) = pattern(&mut input) else {
                    continue;
                };
                let value = (arg >> 2) & 3;
                let weight = u32::from(arg >> 4) % 5;
                let (got, want) = if op % 10 == 2 {
                    (
                        list.remove(&p, group, value, weight),
                        model.remove(&p, group, value, weight),
                    )
                } else {
                    (
                        list.insert(&p, group, value, weight),
                        model.insert(&p, group, value, weight),
                    )
                };
                assert_eq!(
                    got,
                    want,
                    "weight after change of {:?}",
                    String::from_utf8_lossy(&p)
                );
                assert_eq!(
                    list.weight(&p, group, value),
                    model.weight(&p, group, value)
                );
                assert_eq!(list.len(), model.entries.len());
                assert_eq!(list.is_empty(), model.entries.is_empty());
            }
            3 | 4 => {
                let subject = tokens(&mut input);
                let got = canonical(&list.matches(&subject));
                assert_eq!(
                    got,
                    expected(&model, &subject),
                    "matches({:?})",
                    String::from_utf8_lossy(&subject)
                );
                assert!(list.cache_len() <= cap);
            }
            // The router.
            5 | 6 => {
                let Some(p) = pattern(&mut input) else {
                    continue;
                };
                let sub = SubRef {
                    conn: u32::from((arg >> 2) & 3),
                    sub: u32::from((arg >> 4) & 1),
                };
                if op % 10 == 5 {
                    routing.router.subscribe(sub, &p, group);
                    routing.local.insert(&p, group, sub, 1);
                } else {
                    routing.router.unsubscribe(sub, &p, group);
                    routing.local.remove(&p, group, sub, 1);
                    routing.router.trim();
                }
            }
            7 => {
                let Some(p) = pattern(&mut input) else {
                    continue;
                };
                let shard = ShardId::from((arg >> 2) & 3);
                let add = arg & 0x40 != 0;
                routing.router.remote_interest(shard, add, &p, group);
                if add {
                    routing.remote.insert(&p, group, shard, 1);
                } else {
                    routing.remote.remove(&p, group, shard, 1);
                }
            }
            8 => {
                let subject = tokens(&mut input);
                // Twice: the second answer may come from the plan's memory.
                for _ in 0..1 + (arg & 1) {
                    routing.router.route_publish(&subject, &mut routing.plan);
                    routing.check_publish(&subject);
                }
            }
            _ => {
                let subject = tokens(&mut input);
                let plain = arg & 1 != 0;
                // Groups named by the sender: some that exist here (by
                // their pattern and name), maybe one that does not.
                let mut groups = Vec::new();
                let known: Vec<u64> = routing
                    .local
                    .entries
                    .keys()
                    .filter_map(|(p, g, _)| g.as_ref().map(|g| group_id(p, g)))
                    .collect();
                for i in 0..(arg >> 1) & 3 {
                    let pick = usize::from(input.byte());
                    match known.len() {
                        0 => groups.push(u64::from(i)),
                        n => groups.push(known[pick % n]),
                    }
                }
                if arg & 0x80 != 0 {
                    groups.push(0x5eed);
                }
                groups.sort_unstable();
                groups.dedup();
                for _ in 0..1 + ((arg >> 6) & 1) {
                    routing
                        .router
                        .route_forward(&subject, plain, &groups, &mut routing.plan);
                    routing.check_forward(&subject, plain, &groups);
                }
            }
        }
    }
});
