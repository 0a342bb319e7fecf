//! Incremental fetch sessions (KIP-227): a bounded per-shard cache of the partitions each
//! consumer fetches, so a fetch in a session sends only what changed and gets back only what
//! changed.
//!
//! The semantics follow Kafka's (session id, epoch) pairs on the request:
//! - `(0, -1)`: a full fetch outside any session (the response's session id is 0);
//! - `(any, 0)`: a full fetch that (re)creates a session; the old one, if named, is closed;
//! - `(id, -1)`: closes session `id`, then a full fetch outside any session;
//! - `(id, n>0)`: an incremental fetch in session `id`, which must expect epoch `n`: unknown id
//!   → FETCH_SESSION_ID_NOT_FOUND, wrong epoch → INVALID_FETCH_SESSION_EPOCH. The request's
//!   partitions are added or updated in the session, `forgotten_topics_data` removed, and every
//!   session partition is fetched; the response carries only partitions with records, errors, or
//!   a high watermark / log start offset different from the last one sent.
//!
//! A connection lives on one shard, so a per-shard cache is enough for a consumer that keeps
//! its connection; one that reconnects to another shard gets FETCH_SESSION_ID_NOT_FOUND and
//! falls back to a full fetch, as the protocol intends. Session ids carry the shard in their low
//! bits, so ids from different shards never collide. When the cache is full the least recently
//! used session is evicted. Owned by its shard; never crosses cores.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use sluice_protocol::Uuid;

use crate::errors;

/// Most sessions one shard keeps (Kafka's `max.incremental.fetch.session.cache.slots`).
pub const FETCH_SESSIONS_PER_SHARD_MAX: usize = 1000;

/// The epoch that closes a session (or asks for no session).
pub const FINAL_EPOCH: i32 = -1;
/// The epoch that creates a session.
pub const INITIAL_EPOCH: i32 = 0;

/// How a request names a topic: by name before Fetch v13, by id from v13.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicRef {
    Name(Arc<str>),
    Id(Uuid),
}

/// A partition of a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartKey {
    pub topic: TopicRef,
    pub partition: i32,
}

/// What a fetch asks of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartWant {
    pub fetch_offset: i64,
    pub max_bytes: i32,
    pub current_leader_epoch: i32,
}

/// What a response tells the client about a partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone)]
struct SessionPart {
    want: PartWant,
    reported: Option<Reported>,
}

#[derive(Debug)]
struct Session {
    next_epoch: i32,
    parts: BTreeMap<PartKey, SessionPart>,
    last_used: Instant,
}

/// What a fetch request's session fields resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A full fetch of the request's partitions outside any session.
    Sessionless,
    /// A full fetch of the request's partitions in the new session `id`.
    Created { id: i32 },
    /// An incremental fetch in session `id`: fetch `parts`, answer only what changed.
    Incremental {
        id: i32,
        parts: Vec<(PartKey, PartWant)>,
    },
    /// The whole request fails with this top-level error code.
    Error(i16),
}

/// The shard's fetch sessions.
///
/// Owned by its shard; never crosses cores.
pub struct FetchSessions {
    sessions: RefCell<HashMap<i32, Session>>,
    capacity: usize,
    shard: u32,
    nr_shards: u32,
    rng: Cell<u64>,
}

impl FetchSessions {
    /// The cache of shard `shard` out of `nr_shards`, holding at most `capacity` sessions.
    pub fn new(shard: u32, nr_shards: u32, capacity: usize) -> FetchSessions {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
            ^ (u64::from(shard) << 32)
            | 1;
        FetchSessions {
            sessions: RefCell::new(HashMap::new()),
            capacity: capacity.max(1),
            shard,
            nr_shards: nr_shards.max(1),
            rng: Cell::new(seed),
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a request's session fields. `requested` are the partitions the request lists,
    /// `forgotten` those it asks to drop. A created or updated session is stored at once; the
    /// caller reports what it answered with [`FetchSessions::should_report`].
    pub fn resolve(
        &self,
        session_id: i32,
        epoch: i32,
        requested: &[(PartKey, PartWant)],
        forgotten: &[PartKey],
        now: Instant,
    ) -> Resolved {
        let mut sessions = self.sessions.borrow_mut();
        match epoch {
            FINAL_EPOCH => {
                if session_id != 0 {
                    sessions.remove(&session_id);
                }
                Resolved::Sessionless
            }
            INITIAL_EPOCH => {
                if session_id != 0 {
                    sessions.remove(&session_id);
                }
                if sessions.len() >= self.capacity {
                    let oldest = sessions
                        .iter()
                        .min_by_key(|(_, s)| s.last_used)
                        .map(|(id, _)| *id);
                    if let Some(oldest) = oldest {
                        sessions.remove(&oldest);
                    }
                }
                let id = self.fresh_id(&sessions);
                let parts = requested
                    .iter()
                    .map(|(k, w)| {
                        (
                            k.clone(),
                            SessionPart {
                                want: *w,
                                reported: None,
                            },
                        )
                    })
                    .collect();
                sessions.insert(
                    id,
                    Session {
                        next_epoch: next_epoch(INITIAL_EPOCH),
                        parts,
                        last_used: now,
                    },
                );
                Resolved::Created { id }
            }
            _ => {
                let Some(session) = sessions.get_mut(&session_id) else {
                    return Resolved::Error(errors::FETCH_SESSION_ID_NOT_FOUND);
                };
                if session.next_epoch != epoch {
                    return Resolved::Error(errors::INVALID_FETCH_SESSION_EPOCH);
                }
                for (k, w) in requested {
                    session
                        .parts
                        .entry(k.clone())
                        .and_modify(|p| p.want = *w)
                        .or_insert(SessionPart {
                            want: *w,
                            reported: None,
                        });
                }
                for k in forgotten {
                    session.parts.remove(k);
                }
                session.next_epoch = next_epoch(epoch);
                session.last_used = now;
                Resolved::Incremental {
                    id: session_id,
                    parts: session
                        .parts
                        .iter()
                        .map(|(k, p)| (k.clone(), p.want))
                        .collect(),
                }
            }
        }
    }

    /// Records what is being answered for a session partition and says whether an incremental
    /// response must include it: it has records or an error, or its high watermark, last stable
    /// offset or log start offset differs from what the client last heard (a `read_committed`
    /// client waits for the last stable offset to move). Full fetches include everything anyway
    /// (the return value is then only informative).
    pub fn should_report(
        &self,
        session_id: i32,
        key: &PartKey,
        now: Reported,
        has_records: bool,
        error_code: i16,
    ) -> bool {
        let mut sessions = self.sessions.borrow_mut();
        let Some(part) = sessions
            .get_mut(&session_id)
            .and_then(|s| s.parts.get_mut(key))
        else {
            return true;
        };
        let changed = part.reported != Some(now);
        part.reported = Some(now);
        has_records || error_code != errors::NONE || changed
    }

    /// A positive id unused on this shard whose remainder by the shard count is this shard.
    fn fresh_id(&self, sessions: &HashMap<i32, Session>) -> i32 {
        let slots = (i32::MAX as u32 - 1) / self.nr_shards;
        loop {
            // xorshift64*: ids need to be unpredictable enough not to collide, not secret.
            let mut x = self.rng.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.rng.set(x);
            let r = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as u32;
            let id = (r % slots) * self.nr_shards + self.shard + 1;
            let Ok(id) = i32::try_from(id) else { continue };
            if id > 0 && !sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

/// The epoch after `epoch`; wraps past `i32::MAX` to 1 (0 and -1 have special meanings).
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, p: i32) -> PartKey {
        PartKey {
            topic: TopicRef::Name(Arc::from(t)),
            partition: p,
        }
    }

    fn want(offset: i64) -> PartWant {
        PartWant {
            fetch_offset: offset,
            max_bytes: 1 << 20,
            current_leader_epoch: -1,
        }
    }

    #[test]
    fn sessionless_full_fetch_creates_nothing() {
        let s = FetchSessions::new(0, 2, 10);
        let r = s.resolve(
            0,
            FINAL_EPOCH,
            &[(key("a", 0), want(0))],
            &[],
            Instant::now(),
        );
        assert_eq!(r, Resolved::Sessionless);
        assert!(s.is_empty());
    }

    #[test]
    fn incremental_fetch_updates_and_forgets() {
        let s = FetchSessions::new(1, 2, 10);
        let now = Instant::now();
        let r = s.resolve(
            0,
            INITIAL_EPOCH,
            &[(key("a", 0), want(0)), (key("a", 1), want(5))],
            &[],
            now,
        );
        let Resolved::Created { id } = r else {
            panic!("expected a session, got {r:?}")
        };
        assert_eq!(id % 2, 0, "shard 1 of 2 gives ids with remainder (1+1)%2");
        assert!(id > 0);
        // First incremental: epoch 1, one offset moved, one partition added.
        let r = s.resolve(
            id,
            1,
            &[(key("a", 0), want(3)), (key("b", 0), want(0))],
            &[],
            now,
        );
        assert_eq!(
            r,
            Resolved::Incremental {
                id,
                parts: vec![
                    (key("a", 0), want(3)),
                    (key("a", 1), want(5)),
                    (key("b", 0), want(0))
                ]
            }
        );
        // Forget one; epoch 2.
        let r = s.resolve(id, 2, &[], &[key("a", 1)], now);
        assert_eq!(
            r,
            Resolved::Incremental {
                id,
                parts: vec![(key("a", 0), want(3)), (key("b", 0), want(0))]
            }
        );
    }

    #[test]
    fn wrong_epoch_and_unknown_id_are_refused() {
        let s = FetchSessions::new(0, 1, 10);
        let now = Instant::now();
        let Resolved::Created { id } = s.resolve(0, 0, &[], &[], now) else {
            panic!("no session")
        };
        assert_eq!(
            s.resolve(id, 5, &[], &[], now),
            Resolved::Error(errors::INVALID_FETCH_SESSION_EPOCH)
        );
        assert_eq!(
            s.resolve(id.wrapping_add(7), 1, &[], &[], now),
            Resolved::Error(errors::FETCH_SESSION_ID_NOT_FOUND)
        );
        // A refused request does not advance the epoch.
        assert!(matches!(
            s.resolve(id, 1, &[], &[], now),
            Resolved::Incremental { .. }
        ));
        // Closing it makes the id unknown.
        assert_eq!(
            s.resolve(id, FINAL_EPOCH, &[], &[], now),
            Resolved::Sessionless
        );
        assert_eq!(
            s.resolve(id, 2, &[], &[], now),
            Resolved::Error(errors::FETCH_SESSION_ID_NOT_FOUND)
        );
    }

    fn offsets(high_watermark: i64, last_stable_offset: i64, log_start_offset: i64) -> Reported {
        Reported {
            high_watermark,
            last_stable_offset,
            log_start_offset,
        }
    }

    #[test]
    fn only_changes_are_reported() {
        let s = FetchSessions::new(0, 1, 10);
        let now = Instant::now();
        let Resolved::Created { id } = s.resolve(0, 0, &[(key("a", 0), want(0))], &[], now) else {
            panic!("no session")
        };
        let k = key("a", 0);
        assert!(s.should_report(id, &k, offsets(10, 10, 0), true, 0));
        assert!(
            !s.should_report(id, &k, offsets(10, 10, 0), false, 0),
            "nothing changed"
        );
        assert!(
            s.should_report(id, &k, offsets(11, 10, 0), false, 0),
            "high watermark moved"
        );
        assert!(
            s.should_report(id, &k, offsets(11, 10, 4), false, 0),
            "log start moved"
        );
        assert!(
            s.should_report(id, &k, offsets(11, 11, 4), false, 0),
            "LSO moved"
        );
        assert!(
            s.should_report(id, &k, offsets(11, 11, 4), false, 1),
            "error"
        );
    }

    #[test]
    fn full_cache_evicts_the_least_recently_used() {
        let s = FetchSessions::new(0, 1, 2);
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_millis(1);
        let t2 = t1 + std::time::Duration::from_millis(1);
        let Resolved::Created { id: a } = s.resolve(0, 0, &[], &[], t0) else {
            panic!()
        };
        let Resolved::Created { id: b } = s.resolve(0, 0, &[], &[], t1) else {
            panic!()
        };
        let Resolved::Created { id: c } = s.resolve(0, 0, &[], &[], t2) else {
            panic!()
        };
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.resolve(a, 1, &[], &[], t2),
            Resolved::Error(errors::FETCH_SESSION_ID_NOT_FOUND)
        );
        assert!(matches!(
            s.resolve(b, 1, &[], &[], t2),
            Resolved::Incremental { .. }
        ));
        assert!(matches!(
            s.resolve(c, 1, &[], &[], t2),
            Resolved::Incremental { .. }
        ));
    }

    #[test]
    fn epochs_wrap_past_the_maximum_to_one() {
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(0), 1);
    }
}
