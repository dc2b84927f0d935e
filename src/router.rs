//! Routing: which connections here, and which other shards, get a message.
//!
//! Each shard keeps two [`Sublist`]s: `local`, its own connections'
//! subscriptions, and `remote`, what the other shards have told it of
//! theirs (one entry per remote subscription, weighted, so a shard knows how
//! many members of a queue group live elsewhere). Routing is decided from
//! the subject and these two indexes, with no I/O and no locks; it is not a
//! pure function: a lookup fills the indexes' match caches, and a queue
//! group's member is chosen by round-robin state that each routing moves
//! on:
//!
//! * A `PUB` received here goes to every local connection with a matching
//!   plain subscription, once per connection however many match; to every
//!   shard with at least one matching plain subscription, once per shard
//!   (that shard fans out locally); and for every matching queue group to
//!   exactly one member, chosen round-robin by weight across *all* shards,
//!   so members share a group's messages evenly wherever they live. A group
//!   member on another shard is named to that shard by the group's id, and
//!   that shard picks one of its local members.
//! * A [`crate::mesh::Forward`] received from another shard is matched only
//!   against `local`: the sender already decided which shards take part.
//!
//! A leaf-node link ([`crate::leaf`]) subscribes in the hub's name like a
//! connection, with one difference: its queue groups are filed under the
//! group's name behind [`HUB_GROUP_MARK`], so they are groups of their own
//! that no client can join. A hub group is served only when no client
//! group of the same name matches (local members first, as in NATS), and
//! a message *from* the hub is given to client groups it names and no
//! others ([`Router::route_from_hub`]).

use std::rc::Rc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::mesh::ShardId;
use crate::subject::{Matches, Sublist};

/// A connection's slot on its shard.
pub type ConnId = u32;

/// Who a subscription delivers to: a connection, and which of its
/// subscriptions.
///
/// Routing delivers once per distinct `SubRef`. A protocol that delivers
/// once per *connection* however many of its subscriptions match (the line
/// protocol) files them all under `sub: 0` ([`SubRef::whole`]); one that
/// delivers once per matching *subscription* (NATS, by sid) gives each its
/// own number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubRef {
    pub conn: ConnId,
    /// Which of the connection's subscriptions; 0 stands for all of them.
    pub sub: u32,
}

impl SubRef {
    /// The connection as a whole: one delivery per message.
    pub const fn whole(conn: ConnId) -> SubRef {
        SubRef { conn, sub: 0 }
    }
}

/// Entries kept in each sublist's match cache.
pub const CACHE_CAPACITY: usize = 4096;

/// One other shard a message must be forwarded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTarget {
    pub shard: ShardId,
    /// It has plain subscribers.
    pub plain: bool,
    /// Queue groups it must serve one member of.
    pub groups: Vec<u64>,
}

/// Where one message goes; reused between messages to avoid allocating.
///
/// A plan without queue groups depends only on the subject and the two
/// indexes, so it remembers what it was computed for: a stream of messages
/// on one subject (the common case) is routed without even a cache lookup.
/// The caller may take `groups` out of [`RemoteTarget`]s, nothing else.
#[derive(Debug, Default)]
pub struct Plan {
    /// Local receivers, each once.
    pub local: Vec<SubRef>,
    /// Other shards, each once.
    pub remote: Vec<RemoteTarget>,
    /// What this plan is still valid for.
    memo: Option<Memo>,
}

/// The question a [`Plan`] answered, and the index generations it was
/// answered at.
#[derive(Debug, PartialEq, Eq)]
enum Memo {
    Publish {
        subject: Vec<u8>,
        local: u64,
        remote: u64,
    },
    Forward {
        subject: Vec<u8>,
        local: u64,
        plain: bool,
    },
}

impl Memo {
    fn subject_mut(&mut self) -> &mut Vec<u8> {
        match self {
            Memo::Publish { subject, .. } | Memo::Forward { subject, .. } => subject,
        }
    }
}

impl Plan {
    /// The memo's subject buffer, emptied, to be reused for the next memo.
    fn take_key(&mut self) -> Vec<u8> {
        let mut key = self
            .memo
            .take()
            .map(|mut m| std::mem::take(m.subject_mut()))
            .unwrap_or_default();
        key.clear();
        key
    }

    fn clear(&mut self) {
        self.local.clear();
        self.remote.clear();
        self.memo = None;
    }
}

/// The first byte of a hub queue group's name in the index (see the
/// module docs). A line client's group name cannot start with it
/// ([`crate::subject::is_valid_group`] takes printable ASCII only); a NATS
/// queue name can, as nats-server takes any bytes but separators, and is
/// then served as a hub's group would be: an odd client's odd group, no
/// harm to anyone else's.
pub const HUB_GROUP_MARK: u8 = 0;

/// The index name of the hub's queue group `name`.
pub fn hub_group(name: &[u8]) -> Vec<u8> {
    let mut g = Vec::with_capacity(name.len() + 1);
    g.push(HUB_GROUP_MARK);
    g.extend_from_slice(name);
    g
}

/// A queue group's name, kept by its id so that routing can compare groups
/// of different patterns by name.
#[derive(Debug)]
struct GroupName {
    /// The name, without [`HUB_GROUP_MARK`].
    name: Box<[u8]>,
    /// The hub's group.
    hub: bool,
    /// Subscriptions (here and elsewhere) in the group.
    refs: u32,
}

/// A shard's routing state.
pub struct Router {
    local: Sublist<SubRef>,
    remote: Sublist<ShardId>,
    /// Round-robin position of groups that have members both here and on
    /// other shards, so the choice between "here" and "there" is by weight.
    joint: FxHashMap<u64, u64>,
    /// Every queue group's name, by id.
    names: FxHashMap<u64, GroupName>,
    /// How many of `names` are hub groups: with none (every relay without
    /// a leaf link), routing skips the hub rules.
    hub_groups: usize,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// Empty indexes.
    pub fn new() -> Self {
        Router {
            local: Sublist::new(CACHE_CAPACITY),
            remote: Sublist::new(CACHE_CAPACITY),
            joint: FxHashMap::default(),
            names: FxHashMap::default(),
            hub_groups: 0,
        }
    }

    /// A local subscription (the caller enforces set semantics).
    pub fn subscribe(&mut self, sub: SubRef, pattern: &[u8], group: Option<&[u8]>) {
        self.local.insert(pattern, group, sub, 1);
        self.name_group(pattern, group, true);
    }

    /// A local subscription ended.
    pub fn unsubscribe(&mut self, sub: SubRef, pattern: &[u8], group: Option<&[u8]>) {
        if self.local.remove(pattern, group, sub, 1) == 0 {
            self.name_group(pattern, group, false);
        }
    }

    /// Keeps [`Self::names`] as a subscription in `group` comes (`add`) or
    /// goes.
    fn name_group(&mut self, pattern: &[u8], group: Option<&[u8]>, add: bool) {
        let Some(group) = group else { return };
        let id = crate::subject::group_id(pattern, group);
        let hub = group.first() == Some(&HUB_GROUP_MARK);
        if add {
            let entry = self.names.entry(id).or_insert_with(|| GroupName {
                name: if hub { &group[1..] } else { group }.into(),
                hub,
                refs: 0,
            });
            if entry.refs == 0 && hub {
                self.hub_groups += 1;
            }
            entry.refs += 1;
        } else if let Some(entry) = self.names.get_mut(&id) {
            entry.refs -= 1;
            if entry.refs == 0 {
                if entry.hub {
                    self.hub_groups -= 1;
                }
                self.names.remove(&id);
            }
        }
    }

    /// Another shard gained (`add`) or lost one subscription.
    pub fn remote_interest(
        &mut self,
        from: ShardId,
        add: bool,
        pattern: &[u8],
        group: Option<&[u8]>,
    ) {
        if add {
            self.remote.insert(pattern, group, from, 1);
            self.name_group(pattern, group, true);
        } else if self.remote.weight(pattern, group, from) > 0 {
            self.remote.remove(pattern, group, from, 1);
            self.name_group(pattern, group, false);
        }
    }

    /// Routes a message published on this shard by a client.
    pub fn route_publish(&mut self, subject: &[u8], plan: &mut Plan) {
        self.route(subject, None::<fn(&[u8]) -> bool>, plan);
    }

    /// Routes a message the hub sent over a leaf link on this shard: to
    /// plain subscribers as [`Router::route_publish`] does (the caller skips
    /// the links among them), and to one member of each client queue group
    /// whose name `chosen` accepts (the groups the hub chose this relay
    /// for), none of the others, and never to a hub group.
    pub fn route_from_hub(
        &mut self,
        subject: &[u8],
        chosen: impl Fn(&[u8]) -> bool,
        plan: &mut Plan,
    ) {
        self.route(subject, Some(chosen), plan);
    }

    /// Whether the group `id` takes part in a routing: from the hub
    /// (`chosen` given), client groups `chosen` names; from a client, every
    /// client group, and a hub group only if no client group in `clients`
    /// (the names of those that matched) has its name.
    fn wanted(
        &self,
        id: u64,
        chosen: Option<&impl Fn(&[u8]) -> bool>,
        clients: &FxHashSet<&[u8]>,
    ) -> bool {
        let Some(g) = self.names.get(&id) else {
            return chosen.is_none();
        };
        match chosen {
            Some(chosen) => !g.hub && chosen(&g.name),
            None => !g.hub || !clients.contains(&*g.name),
        }
    }

    fn route(&mut self, subject: &[u8], chosen: Option<impl Fn(&[u8]) -> bool>, plan: &mut Plan) {
        let (local_gen, remote_gen) = (self.local.generation(), self.remote.generation());
        if let Some(Memo::Publish {
            subject: s,
            local: l,
            remote: r,
        }) = &plan.memo
        {
            if (*l, *r) == (local_gen, remote_gen) && s.as_slice() == subject {
                return;
            }
        }
        let mut key = plan.take_key();
        plan.clear();
        let local = self.local.matches(subject);
        plan.local.extend(local.plain.iter().map(|&(c, _)| c));
        let remote = if self.remote.is_empty() {
            None
        } else {
            Some(self.remote.matches(subject))
        };
        if let Some(remote) = &remote {
            for &(shard, _) in &remote.plain {
                target(plan, shard).plain = true;
            }
        }
        // With hub groups about (or from the hub), some groups sit out.
        let filtering = chosen.is_some() || self.hub_groups > 0;
        let mut wanted: Vec<u64> = Vec::new();
        if filtering {
            let remote_ids = remote.iter().flat_map(|r| r.groups.iter().map(|g| g.id));
            let ids: Vec<u64> = local
                .groups
                .iter()
                .map(|g| g.id)
                .chain(remote_ids)
                .collect();
            // The client groups' names (a hub group of one of them sits
            // out), for a client's publish.
            let clients: FxHashSet<&[u8]> = match chosen {
                Some(_) => FxHashSet::default(),
                None => ids
                    .iter()
                    .filter_map(|id| self.names.get(id))
                    .filter(|g| !g.hub)
                    .map(|g| &*g.name)
                    .collect(),
            };
            wanted = ids
                .into_iter()
                .filter(|&id| self.wanted(id, chosen.as_ref(), &clients))
                .collect();
            wanted.sort_unstable();
        }
        let take = |id: u64| !filtering || wanted.binary_search(&id).is_ok();
        // Groups with members here (and maybe elsewhere).
        for lg in local.groups.iter().filter(|g| take(g.id)) {
            let rg = remote.as_ref().and_then(|r| r.group(lg.id));
            match rg {
                None => plan.local.push(lg.pick()),
                Some(rg) => {
                    let total = u64::from(lg.total_weight) + u64::from(rg.total_weight);
                    let turn = self.joint.entry(lg.id).or_insert(0);
                    let here = *turn % total < u64::from(lg.total_weight);
                    *turn = turn.wrapping_add(1);
                    if here {
                        plan.local.push(lg.pick());
                    } else {
                        target(plan, rg.pick()).groups.push(rg.id);
                    }
                }
            }
        }
        // Groups with members only elsewhere.
        if let Some(remote) = &remote {
            for rg in remote.groups.iter().filter(|g| take(g.id)) {
                if local.group(rg.id).is_none() {
                    target(plan, rg.pick()).groups.push(rg.id);
                }
            }
        }
        dedup(&mut plan.local);
        let grouped = !local.groups.is_empty() || remote.is_some_and(|r| !r.groups.is_empty());
        if !grouped {
            key.extend_from_slice(subject);
            plan.memo = Some(Memo::Publish {
                subject: key,
                local: local_gen,
                remote: remote_gen,
            });
        }
    }

    /// Routes a message another shard forwarded here: `plain` subscribers
    /// and one local member of each of `groups`, into `plan.local`
    /// (`plan.remote` stays empty). Like [`Router::route_publish`], a plan
    /// without groups is remembered for the next message on its subject.
    pub fn route_forward(&mut self, subject: &[u8], plain: bool, groups: &[u64], plan: &mut Plan) {
        let local_gen = self.local.generation();
        if groups.is_empty() {
            if let Some(Memo::Forward {
                subject: s,
                local: l,
                plain: p,
            }) = &plan.memo
            {
                if *l == local_gen && *p == plain && s.as_slice() == subject {
                    return;
                }
            }
        }
        let mut key = plan.take_key();
        plan.clear();
        let local: Rc<Matches<SubRef>> = self.local.matches(subject);
        if plain {
            plan.local.extend(local.plain.iter().map(|&(c, _)| c));
        }
        for id in groups {
            // A group that emptied here since the sender chose us: at most
            // once delivery, the message is not redirected.
            if let Some(g) = local.group(*id) {
                plan.local.push(g.pick());
            }
        }
        dedup(&mut plan.local);
        if groups.is_empty() {
            key.extend_from_slice(subject);
            plan.memo = Some(Memo::Forward {
                subject: key,
                local: local_gen,
                plain,
            });
        }
    }

    /// Bounds the joint round-robin state: past `4 ×` [`CACHE_CAPACITY`]
    /// groups it is all forgotten (live groups then restart their rotation
    /// at the first member). Called when subscriptions are removed.
    pub fn trim(&mut self) {
        if self.joint.len() > 4 * CACHE_CAPACITY {
            self.joint.clear();
        }
    }
}

/// The plan entry for `shard`, created on first use.
fn target(plan: &mut Plan, shard: ShardId) -> &mut RemoteTarget {
    let i = match plan.remote.iter().position(|t| t.shard == shard) {
        Some(i) => i,
        None => {
            plan.remote.push(RemoteTarget {
                shard,
                plain: false,
                groups: Vec::new(),
            });
            plan.remote.len() - 1
        }
    };
    &mut plan.remote[i]
}

/// Each receiver once (several subscriptions filed under one [`SubRef`] may
/// match).
#[inline]
fn dedup(subs: &mut Vec<SubRef>) {
    if subs.len() > 1 {
        subs.sort_unstable();
        subs.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(conn: ConnId) -> SubRef {
        SubRef::whole(conn)
    }

    #[test]
    fn local_delivery_is_once_per_connection() {
        let mut r = Router::new();
        r.subscribe(c(1), b"a.*", None);
        r.subscribe(c(1), b"a.>", None);
        r.subscribe(c(1), b"a.b", None);
        r.subscribe(c(2), b"a.b", None);
        let mut plan = Plan::default();
        r.route_publish(b"a.b", &mut plan);
        assert_eq!(plan.local, vec![c(1), c(2)]);
        assert!(plan.remote.is_empty());
        r.route_publish(b"a.c", &mut plan);
        assert_eq!(plan.local, vec![c(1)]);
    }

    #[test]
    fn per_subscription_receivers_get_one_delivery_each() {
        // Connection 1 numbers its subscriptions (as NATS sids do):
        // each matching one is a delivery; connection 2 files both of its
        // subscriptions under the connection and gets one.
        let mut r = Router::new();
        let s = |sub| SubRef { conn: 1, sub };
        r.subscribe(s(1), b"a.*", None);
        r.subscribe(s(2), b"a.>", None);
        r.subscribe(s(3), b"x", None);
        r.subscribe(c(2), b"a.*", None);
        r.subscribe(c(2), b"a.>", None);
        let mut plan = Plan::default();
        r.route_publish(b"a.b", &mut plan);
        assert_eq!(plan.local, vec![s(1), s(2), c(2)]);
    }

    #[test]
    fn a_remembered_plan_follows_index_changes() {
        let mut r = Router::new();
        r.subscribe(c(1), b"a", None);
        let mut plan = Plan::default();
        r.route_publish(b"a", &mut plan);
        r.route_publish(b"a", &mut plan);
        assert_eq!(plan.local, vec![c(1)]);
        r.subscribe(c(2), b"a", None);
        r.route_publish(b"a", &mut plan);
        assert_eq!(plan.local, vec![c(1), c(2)]);
        r.remote_interest(1, true, b"*", None);
        r.route_publish(b"a", &mut plan);
        assert_eq!(plan.remote.len(), 1);
        r.route_publish(b"b", &mut plan);
        assert!(plan.local.is_empty());
        r.unsubscribe(c(1), b"a", None);
        r.route_publish(b"a", &mut plan);
        assert_eq!(plan.local, vec![c(2)]);
    }

    #[test]
    fn forwards_once_per_interested_shard() {
        let mut r = Router::new();
        r.remote_interest(1, true, b"a.*", None);
        r.remote_interest(1, true, b"a.b", None);
        r.remote_interest(2, true, b"x", None);
        let mut plan = Plan::default();
        r.route_publish(b"a.b", &mut plan);
        assert!(plan.local.is_empty());
        assert_eq!(
            plan.remote,
            vec![RemoteTarget {
                shard: 1,
                plain: true,
                groups: vec![]
            }]
        );
        r.remote_interest(1, false, b"a.*", None);
        r.remote_interest(1, false, b"a.b", None);
        r.route_publish(b"a.b", &mut plan);
        assert!(plan.remote.is_empty());
    }

    #[test]
    fn queue_group_spreads_by_weight_across_shards() {
        // Two members here, two on shard 1: half the messages stay.
        let mut r = Router::new();
        r.subscribe(c(7), b"jobs", Some(b"w"));
        r.subscribe(c(8), b"jobs", Some(b"w"));
        r.remote_interest(1, true, b"jobs", Some(b"w"));
        r.remote_interest(1, true, b"jobs", Some(b"w"));
        let mut plan = Plan::default();
        let (mut here, mut there) = (std::collections::HashMap::new(), 0);
        for _ in 0..4000 {
            r.route_publish(b"jobs", &mut plan);
            assert_eq!(
                plan.local.len() + plan.remote.len(),
                1,
                "exactly one member"
            );
            if let Some(&c) = plan.local.first() {
                *here.entry(c).or_insert(0) += 1;
            } else {
                assert_eq!(plan.remote[0].groups.len(), 1);
                assert!(!plan.remote[0].plain);
                there += 1;
            }
        }
        assert_eq!(here[&c(7)], 1000);
        assert_eq!(here[&c(8)], 1000);
        assert_eq!(there, 2000);
    }

    #[test]
    fn forwarded_group_picks_a_local_member() {
        let mut r = Router::new();
        r.subscribe(c(3), b"jobs", Some(b"w"));
        r.subscribe(c(4), b"jobs.>", None);
        let id = crate::subject::group_id(b"jobs", b"w");
        let mut out = Plan::default();
        r.route_forward(b"jobs", false, &[id], &mut out);
        assert_eq!(out.local, vec![c(3)]);
        r.route_forward(b"jobs", true, &[], &mut out);
        assert!(out.local.is_empty(), "jobs.> needs at least one more token");
        r.route_forward(b"jobs", false, &[id ^ 1], &mut out);
        assert!(out.local.is_empty(), "unknown group: nothing");
        // A remembered forward plan follows subscription changes.
        r.route_forward(b"jobs.x", true, &[], &mut out);
        r.route_forward(b"jobs.x", true, &[], &mut out);
        assert_eq!(out.local, vec![c(4)]);
        r.unsubscribe(c(4), b"jobs.>", None);
        r.route_forward(b"jobs.x", true, &[], &mut out);
        assert!(out.local.is_empty());
        r.subscribe(c(5), b"jobs.x", None);
        r.route_forward(b"jobs.x", false, &[], &mut out);
        assert!(out.local.is_empty(), "not plain: no plain subscriber");
        r.route_forward(b"jobs.x", true, &[], &mut out);
        assert_eq!(out.local, vec![c(5)]);
    }

    #[test]
    fn a_hub_group_is_served_only_when_no_client_group_of_its_name_matches() {
        let mut r = Router::new();
        let link = |sub| SubRef { conn: 9, sub };
        r.subscribe(link(1), b"jobs.*", Some(&hub_group(b"w")));
        let mut plan = Plan::default();
        r.route_publish(b"jobs.a", &mut plan);
        assert_eq!(plan.local, vec![link(1)], "only the hub has members");
        // A client member on another shard: it is served, the hub is not.
        r.remote_interest(1, true, b"jobs.>", Some(b"w"));
        for _ in 0..4 {
            r.route_publish(b"jobs.a", &mut plan);
            assert!(plan.local.is_empty());
            assert_eq!(plan.remote.len(), 1);
            assert_eq!(plan.remote[0].groups.len(), 1);
        }
        // Another group's name does not count.
        r.remote_interest(1, false, b"jobs.>", Some(b"w"));
        r.subscribe(c(3), b"jobs.a", Some(b"v"));
        r.route_publish(b"jobs.a", &mut plan);
        assert_eq!(plan.local, vec![c(3), link(1)]);
        r.unsubscribe(link(1), b"jobs.*", Some(&hub_group(b"w")));
        r.route_publish(b"jobs.a", &mut plan);
        assert_eq!(plan.local, vec![c(3)]);
        assert_eq!(r.hub_groups, 0);
        assert_eq!(r.names.len(), 1, "names leave with their last member");
    }

    #[test]
    fn a_message_from_the_hub_reaches_the_groups_it_names_and_plain_subscribers() {
        let mut r = Router::new();
        r.subscribe(c(1), b"jobs", Some(b"w"));
        r.subscribe(c(2), b"jobs", Some(b"v"));
        r.subscribe(c(4), b"jobs", None);
        r.subscribe(SubRef { conn: 9, sub: 1 }, b"jobs", Some(&hub_group(b"w")));
        r.remote_interest(1, true, b"jobs", Some(b"w"));
        let mut plan = Plan::default();
        let (mut here, mut there) = (0, 0);
        for _ in 0..10 {
            r.route_from_hub(b"jobs", |q| q == b"w", &mut plan);
            assert!(plan.local.contains(&c(4)), "plain subscribers always");
            assert!(!plan.local.contains(&c(2)), "a group the hub did not name");
            assert!(!plan.local.iter().any(|s| s.conn == 9), "never a hub group");
            if plan.local.contains(&c(1)) {
                here += 1;
            } else {
                there += plan.remote.len();
            }
        }
        assert_eq!((here, there), (5, 5), "spread over the group's members");
        r.route_from_hub(b"jobs", |_| false, &mut plan);
        assert_eq!(plan.local, vec![c(4)], "no queues named: plain only");
        assert!(plan.remote.is_empty());
    }
}
