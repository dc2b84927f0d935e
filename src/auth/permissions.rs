//! What an authenticated user may publish to and subscribe to, and the
//! per-connection cache that keeps the check off the hot path.
//!
//! A user's [`Permissions`] are two [`SubjectRule`]s, one for publishing and
//! one for subscribing, each an allow list and a deny list of subject
//! patterns (wildcards allowed). A subject is permitted when the allow list
//! is absent or one of its patterns matches, and no deny pattern matches:
//! deny wins (nats-server's rule).
//!
//! A subscription's own wildcards need an allow pattern that covers every
//! subject they could match: `SUB orders.*` is allowed by `orders.*`,
//! `orders.>` or `>`, but not by `orders.new`; `SUB orders.>` only by a
//! pattern ending in `>` there. (nats-server takes the subscription's
//! wildcards as plain tokens, so its `orders.*` also lets `SUB orders.>`
//! through, which then receives `orders.a.b`; tern does not.) It is refused
//! when a deny pattern covers it all; a deny pattern that covers only part
//! of it (`orders.secret` under `SUB orders.*`) is applied to each delivery
//! instead ([`Permissions::may_receive`]), as nats-server does.
//!
//! The relay checks a connection's publish subjects once each:
//! [`PermissionCache`] remembers the verdicts, so an authorised publisher
//! that keeps publishing to the same subjects pays one comparison per
//! message.

use rustc_hash::FxHashMap;

use crate::subject::{is_valid_subject, pattern_matches};

/// Whether every subject `subject` matches (it may hold wildcards) is
/// matched by `pattern`. For a subject without wildcards this is
/// [`pattern_matches`].
pub fn covers(pattern: &[u8], subject: &[u8]) -> bool {
    let mut p = pattern.split(|&b| b == b'.');
    let mut s = subject.split(|&b| b == b'.');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            // A valid pattern has `>` last only.
            (Some(b">"), Some(_)) => return true,
            (Some(b"*"), Some(t)) if t != b">" => {}
            (Some(pt), Some(st)) if pt == st && pt != b"*" && pt != b">" => {}
            _ => return false,
        }
    }
}

/// One direction's rule: an allow list (absent: everything) and a deny list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectRule {
    /// Patterns a subject must match one of; `None` allows every subject.
    allow: Option<Vec<Box<[u8]>>>,
    /// Patterns a subject must match none of.
    deny: Vec<Box<[u8]>>,
}

/// A pattern in a permission list that is not a valid subject pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid subject pattern (tokens separated by `.`, `*` for one token, `>` last for the rest)")]
pub struct BadPattern(pub String);

impl SubjectRule {
    /// A rule from its lists (`allow: None` allows everything). Every
    /// pattern must be a valid subject with wildcards.
    pub fn new(allow: Option<Vec<String>>, deny: Vec<String>) -> Result<Self, BadPattern> {
        let check = |p: String| {
            if is_valid_subject(p.as_bytes(), true) {
                Ok(p.into_bytes().into_boxed_slice())
            } else {
                Err(BadPattern(p))
            }
        };
        Ok(SubjectRule {
            allow: allow
                .map(|a| a.into_iter().map(check).collect())
                .transpose()?,
            deny: deny.into_iter().map(check).collect::<Result<_, _>>()?,
        })
    }

    /// Whether the rule lets everything through.
    pub fn allows_all(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }

    /// Whether `subject` (a publish subject, or a subscription's, wildcards
    /// and all) is allowed: an allow pattern covers it, no deny pattern
    /// does.
    pub fn permits(&self, subject: &[u8]) -> bool {
        let allowed = match &self.allow {
            None => true,
            Some(allow) => allow.iter().any(|p| covers(p, subject)),
        };
        allowed && !self.deny.iter().any(|p| covers(p, subject))
    }

    /// Whether a deny pattern matches the published `subject`.
    fn denies(&self, subject: &[u8]) -> bool {
        self.deny.iter().any(|p| pattern_matches(p, subject))
    }
}

/// A user's rights. [`Permissions::default`] allows everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects the user may publish to.
    pub publish: SubjectRule,
    /// Subjects the user may subscribe to.
    pub subscribe: SubjectRule,
}

impl Permissions {
    /// Whether these permissions restrict nothing (such a connection skips
    /// every check).
    pub fn allows_all(&self) -> bool {
        self.publish.allows_all() && self.subscribe.allows_all()
    }

    /// Whether a message published on `subject` may be delivered to this
    /// user's subscriptions: a wildcard subscription that was allowed may
    /// still match a subject its deny list names.
    pub fn may_receive(&self, subject: &[u8]) -> bool {
        !self.subscribe.denies(subject)
    }

    /// Whether deliveries need [`Permissions::may_receive`] at all.
    pub fn filters_deliveries(&self) -> bool {
        !self.subscribe.deny.is_empty()
    }
}

/// Most subjects whose publish verdict one connection remembers; past it
/// the cache starts over (a publisher on ever-new subjects pays the check
/// each time, and its memory stays bounded). nats-server keeps 128 per
/// client and prunes; the verdicts are one byte, the subjects at most 256.
pub const CACHE_CAPACITY: usize = 1024;

/// A connection's remembered verdicts for one [`SubjectRule`].
#[derive(Debug, Default)]
pub struct PermissionCache {
    /// The last subject checked and its verdict: a publisher that sticks to
    /// one subject never hashes.
    last: Option<(Box<[u8]>, bool)>,
    verdicts: FxHashMap<Box<[u8]>, bool>,
}

impl PermissionCache {
    /// Whether `rule` permits `subject`, from the cache when it can.
    #[inline]
    pub fn permits(&mut self, rule: &SubjectRule, subject: &[u8]) -> bool {
        if let Some((last, verdict)) = &self.last {
            if **last == *subject {
                return *verdict;
            }
        }
        let verdict = match self.verdicts.get(subject) {
            Some(&v) => v,
            None => {
                let v = rule.permits(subject);
                if self.verdicts.len() >= CACHE_CAPACITY {
                    self.verdicts.clear();
                }
                self.verdicts.insert(subject.into(), v);
                v
            }
        };
        self.last = Some((subject.into(), verdict));
        verdict
    }

    /// Subjects remembered (for tests).
    pub fn len(&self) -> usize {
        self.verdicts.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.verdicts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: Option<&[&str]>, deny: &[&str]) -> SubjectRule {
        let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        SubjectRule::new(allow.map(owned), owned(deny)).unwrap()
    }

    #[test]
    fn allow_lists_and_deny_wins() {
        let r = rule(
            Some(&["orders.>", "prices.*"]),
            &["orders.secret", "prices.x"],
        );
        assert!(r.permits(b"orders.new"));
        assert!(r.permits(b"orders.a.b"));
        assert!(r.permits(b"prices.eur"));
        assert!(!r.permits(b"prices.eur.x"));
        assert!(!r.permits(b"orders"));
        assert!(!r.permits(b"other"));
        // Deny wins over an allow that matches too.
        assert!(!r.permits(b"orders.secret"));
        assert!(!r.permits(b"prices.x"));
        // No allow list: everything but the denied.
        let r = rule(None, &["admin.>"]);
        assert!(r.permits(b"anything.at.all"));
        assert!(!r.permits(b"admin.users"));
        assert!(rule(None, &[]).allows_all());
        assert!(!r.allows_all());
    }

    #[test]
    fn a_subscriptions_wildcards_must_be_covered() {
        let r = rule(Some(&["orders.*", "logs.>"]), &[]);
        assert!(r.permits(b"orders.*"));
        assert!(r.permits(b"orders.x"));
        assert!(!r.permits(b"orders.>"), "`*` does not cover `>`");
        assert!(!r.permits(b"*.new"));
        assert!(!r.permits(b">"));
        assert!(r.permits(b"logs.>"));
        assert!(r.permits(b"logs.*.x"));
        assert!(r.permits(b"logs.a.>"));
        assert!(!r.permits(b"logs"));
        let r = rule(Some(&["orders.new"]), &[]);
        assert!(
            !r.permits(b"orders.*"),
            "a literal allow does not cover `*`"
        );
        // A deny of one subject does not refuse a wildcard over it; the
        // delivery filter does.
        let p = Permissions {
            subscribe: rule(None, &["orders.secret"]),
            ..Permissions::default()
        };
        assert!(p.subscribe.permits(b"orders.*"));
        assert!(p.filters_deliveries());
        assert!(!p.may_receive(b"orders.secret"));
        assert!(p.may_receive(b"orders.new"));
        // A deny that covers the whole subscription refuses it.
        let r = rule(None, &["orders.>"]);
        assert!(!r.permits(b"orders.*"));
        assert!(!r.permits(b"orders.>"));
        assert!(r.permits(b">"), "only partly denied: filtered at delivery");
    }

    #[test]
    fn covers_agrees_with_matching_on_literal_subjects() {
        let patterns = ["a", "a.b", "a.*", "*.b", "a.>", ">", "*", "a.*.c", "*.*"];
        let subjects = ["a", "b", "a.b", "a.c", "b.b", "a.b.c", "a.x.c", "x.y.z"];
        for p in patterns {
            for s in subjects {
                assert_eq!(
                    covers(p.as_bytes(), s.as_bytes()),
                    pattern_matches(p.as_bytes(), s.as_bytes()),
                    "{p} {s}"
                );
            }
        }
    }

    #[test]
    fn bad_patterns_are_named() {
        let err = SubjectRule::new(Some(vec!["ok".into(), "a..b".into()]), vec![]).unwrap_err();
        assert_eq!(err, BadPattern("a..b".into()));
        assert!(err.to_string().contains("`a..b`"));
        assert!(SubjectRule::new(None, vec!["a.>.b".into()]).is_err());
        assert!(SubjectRule::new(None, vec!["".into()]).is_err());
    }

    #[test]
    fn the_cache_agrees_with_the_rule_and_stays_bounded() {
        let r = rule(Some(&["a.*"]), &["a.x"]);
        let mut cache = PermissionCache::default();
        for _ in 0..2 {
            for s in ["a.b", "a.x", "b.c", "a.b.c", "a.b"] {
                assert_eq!(
                    cache.permits(&r, s.as_bytes()),
                    r.permits(s.as_bytes()),
                    "{s}"
                );
            }
        }
        assert_eq!(cache.len(), 4);
        for i in 0..(CACHE_CAPACITY * 2 + 3) {
            let s = format!("a.{i}");
            assert!(cache.permits(&r, s.as_bytes()));
        }
        assert!(cache.len() <= CACHE_CAPACITY);
    }
}
