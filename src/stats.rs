//! Per-shard counters: written only by their shard, read by anyone.
//!
//! Each shard owns one [`ShardStats`]. Its counters are single-writer
//! atomics: the owning shard bumps them with a relaxed load and store (no
//! locked read-modify-write instruction on the hot path), and readers on
//! other threads load them relaxed and sum the shards into [`Totals`]. A
//! reader may see one shard a few operations ahead of another; every counter
//! is individually exact.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter with exactly one writing thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning shard may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        // Single writer: load + store is exact and avoids a `lock xadd`.
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Subtracts `n` (for gauges). Only the owning shard may call this.
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// One shard's counters (see the module docs for who writes them).
        #[derive(Debug, Default)]
        pub struct ShardStats {
            $( $(#[$doc])* pub $name: Counter, )*
        }

        /// A snapshot of counters, of one shard or summed over all.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Totals {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl ShardStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> Totals {
                Totals { $( $name: self.$name.get(), )* }
            }
        }

        impl std::ops::AddAssign for Totals {
            fn add_assign(&mut self, o: Totals) {
                $( self.$name = self.$name.wrapping_add(o.$name); )*
            }
        }

        impl Totals {
            /// Every counter as `(name, value)`, in declaration order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name), )* ]
            }
        }
    };
}

counters! {
    /// Connections accepted since start.
    connections_accepted,
    /// Connections currently open (gauge).
    connections_open,
    /// Connections closed since start.
    connections_closed,
    /// Connections refused at accept because of `--max-connections`.
    connections_rejected,
    /// Subscriptions currently in force (gauge).
    subscriptions,
    /// `PUB` frames accepted.
    msgs_in,
    /// Bytes of `PUB` payload accepted.
    bytes_in,
    /// `MSG` frames queued to receivers.
    msgs_out,
    /// Bytes of `MSG` payload queued to receivers.
    bytes_out,
    /// Messages sent to another shard (once per target shard).
    forwarded,
    /// Connections closed as slow consumers.
    slow_consumers,
    /// Times a publisher was paused because a receiver it delivered to had
    /// more than half of `--max-pending` queued (`--max-stall`).
    stalls,
    /// Frames refused as longer than `--max-frame`.
    frames_too_long,
    /// Frames answered with `-ERR` for any other reason (the sum of the
    /// `errors_*` counters below).
    protocol_errors,
    /// `-ERR unknown verb`.
    errors_unknown_verb,
    /// `-ERR missing subject`.
    errors_missing_subject,
    /// `-ERR invalid subject`.
    errors_invalid_subject,
    /// `-ERR invalid group`.
    errors_invalid_group,
    /// `-ERR invalid arguments`.
    errors_invalid_arguments,
    /// `-ERR too many subscriptions`.
    errors_too_many_subscriptions,
    /// `-ERR permission denied` (a line client's `PUB` or `SUB` outside its
    /// user's permissions).
    errors_permission_denied,
    /// Messages a line-protocol receiver could not be sent: the payload
    /// holds the terminator, or the subject breaks the line protocol's
    /// rules (possible for a NATS publish).
    undeliverable_to_line,
    /// NATS protocol errors (answered with `-ERR`, or closed without one).
    nats_errors,
    /// Publishes and subscriptions refused for the user's permissions
    /// (both protocols), and deliveries a subscription's deny list held
    /// back.
    permission_denials,
    /// Connections refused by authentication, by reason (one counter per
    /// [`crate::auth::Refusal`], named `auth_failures_<label>`).
    auth_failures_no_credentials,
    auth_failures_bad_token,
    auth_failures_unknown_user,
    auth_failures_bad_password,
    auth_failures_malformed,
    auth_failures_timeout,
    auth_failures_tls_handshake,
    auth_failures_tls_timeout,
    /// Bytes queued for clients and not yet written (gauge).
    pending_bytes,
    /// Bytes of read buffers held for clients' input (gauge): allocated
    /// capacity, which a partial large frame grows.
    input_bytes,
    /// Connections refused for the memory budget (`--max-memory`): a frame
    /// that would have grown an input buffer past the read size, or a
    /// receiver whose queue passed 1 MiB while the relay was over budget.
    memory_refusals,
}

impl ShardStats {
    /// Counts a frame refused with `err` (frame-too-long, slow-consumer and
    /// too-many-connections have counters of their own).
    pub fn count_error(&self, err: crate::protocol::ProtoError) {
        use crate::protocol::ProtoError::*;
        let by_reason = match err {
            UnknownVerb => &self.errors_unknown_verb,
            MissingSubject => &self.errors_missing_subject,
            InvalidSubject => &self.errors_invalid_subject,
            InvalidGroup => &self.errors_invalid_group,
            InvalidArguments => &self.errors_invalid_arguments,
            TooManySubscriptions => &self.errors_too_many_subscriptions,
            PermissionDenied => {
                self.permission_denials.add(1);
                &self.errors_permission_denied
            }
            // Counted by reason with the other authentication failures
            // (`count_auth_failure`).
            AuthorizationRequired | AuthorizationFailed | AuthorizationTimeout => return,
            FrameTooLong => return self.frames_too_long.add(1),
            SlowConsumer => return self.slow_consumers.add(1),
            TooManyConnections => return self.connections_rejected.add(1),
        };
        by_reason.add(1);
        self.protocol_errors.add(1);
    }

    /// Counts a connection refused by authentication.
    pub fn count_auth_failure(&self, why: crate::auth::Refusal) {
        use crate::auth::Refusal::*;
        match why {
            NoCredentials => &self.auth_failures_no_credentials,
            BadToken => &self.auth_failures_bad_token,
            UnknownUser => &self.auth_failures_unknown_user,
            BadPassword => &self.auth_failures_bad_password,
            Malformed => &self.auth_failures_malformed,
            Timeout => &self.auth_failures_timeout,
            TlsHandshake => &self.auth_failures_tls_handshake,
            TlsTimeout => &self.auth_failures_tls_timeout,
        }
        .add(1);
    }
}

/// Sums snapshots.
pub fn sum<'a>(shards: impl IntoIterator<Item = &'a ShardStats>) -> Totals {
    let mut t = Totals::default();
    for s in shards {
        t += s.snapshot();
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn single_writer_counts_are_exact_for_readers() {
        let shards: Vec<Arc<ShardStats>> = (0..2).map(|_| Arc::default()).collect();
        let writers: Vec<_> = shards
            .iter()
            .cloned()
            .map(|s| {
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        s.msgs_in.add(1);
                    }
                    s.connections_open.add(3);
                    s.connections_open.sub(1);
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let t = sum(shards.iter().map(|s| &**s));
        assert_eq!(t.msgs_in, 200_000);
        assert_eq!(t.connections_open, 4);
        assert!(t.fields().contains(&("msgs_in", 200_000)));
    }
}
