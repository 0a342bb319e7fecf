//! The transaction state machine of one transactional id, without I/O.
//!
//! It decides, as Kafka's `TransactionMetadata` and `TransactionCoordinator` decide, whether a
//! request may change the transaction and into what, and which error a client gets otherwise.
//! A change is two steps, because the new state must be durable before anyone sees it: a
//! `prepare_*` call checks the request, marks the transition pending (every other request then
//! gets CONCURRENT_TRANSACTIONS) and returns the [`TxnData`] to write; once the write is on
//! disk, [`TxnMetadata::complete_transition`] makes it current, or
//! [`TxnMetadata::abort_transition`] drops it when the write failed.
//!
//! ```text
//! Empty ──AddPartitions──▶ Ongoing ──EndTxn(commit)──▶ PrepareCommit ──markers──▶ CompleteCommit
//!   ▲                        │    ╲──EndTxn(abort) / fence / timeout──▶ PrepareAbort ──▶ CompleteAbort
//!   └──InitProducerId (epoch bump)── CompleteCommit | CompleteAbort | Empty     (any of them ──expiry──▶ Dead)
//! ```
//!
//! PrepareEpochFence is never stored: fencing an ongoing transaction bumps the epoch and goes
//! straight to PrepareAbort with the new epoch, as Kafka writes it. Owned by the coordinator
//! shard of the transactional id; never crosses cores.

use std::collections::BTreeSet;

use crate::errors;

/// No producer id (Kafka's `RecordBatch.NO_PRODUCER_ID`).
pub const NO_PRODUCER_ID: i64 = -1;
/// No producer epoch (Kafka's `RecordBatch.NO_PRODUCER_EPOCH`).
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// The state of a transactional id, with Kafka's ids (stored) and names (DescribeTransactions,
/// ListTransactions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    /// The id stored in TransactionLogValue.
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.id() == id)
    }

    /// The name Kafka's admin APIs use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The states a transition into `self` may start from.
    fn valid_previous(self) -> &'static [TxnState] {
        use TxnState::*;
        match self {
            Empty => &[Empty, CompleteCommit, CompleteAbort],
            Ongoing => &[Ongoing, Empty, CompleteCommit, CompleteAbort],
            PrepareCommit => &[Ongoing],
            PrepareAbort => &[Ongoing, PrepareEpochFence],
            CompleteCommit => &[PrepareCommit],
            CompleteAbort => &[PrepareAbort],
            Dead => &[Empty, CompleteAbort, CompleteCommit],
            PrepareEpochFence => &[Ongoing],
        }
    }

    /// Whether an idle transactional id in this state may expire.
    pub fn expiration_allowed(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }
}

/// An epoch at which no more can be handed out: the coordinator keeps `i16::MAX` for fencing.
pub fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

/// The durable part of a transactional id: what one TransactionLogValue holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnData {
    pub producer_id: i64,
    /// The producer id before the last rotation (KIP-360 retries are checked against it).
    pub last_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump by the same producer (not stored, as in Kafka).
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions of the ongoing transaction; while markers are written, those still
    /// without one.
    pub partitions: BTreeSet<(String, i32)>,
    /// When the ongoing transaction started (-1 when none did).
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// A transactional id, its current state and the transition being written, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub data: TxnData,
    /// The state a transition being written goes to.
    pub pending: Option<TxnState>,
    /// An epoch fence whose write failed: its bumped epoch is already in `data` and is not
    /// bumped again (it was never given to anyone).
    pub failed_epoch_fence: bool,
    /// The pending transition is an epoch fence (see [`Self::prepare_fence_abort`]).
    fencing: bool,
}

/// What InitProducerId must do for an existing transactional id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitPlan {
    /// Bump the epoch of the current producer id.
    BumpEpoch,
    /// The epoch is exhausted: continue with a fresh producer id at epoch 0.
    RotateProducerId,
    /// A transaction is ongoing: abort it with a bumped epoch (fencing its producer) and
    /// answer CONCURRENT_TRANSACTIONS; the client's retry then bumps again.
    FenceOngoing,
}

/// What EndTxn leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndStep {
    /// Nothing to write: a retry of a transaction that already ended the way asked.
    AlreadyDone,
    /// Write this PrepareCommit/PrepareAbort, then the markers.
    Write(TxnData),
}

impl TxnMetadata {
    /// A new transactional id with a fresh producer id, before its first epoch.
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now_ms: i64) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            data: TxnData {
                producer_id,
                last_producer_id: NO_PRODUCER_ID,
                producer_epoch: NO_PRODUCER_EPOCH,
                last_producer_epoch: NO_PRODUCER_EPOCH,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                start_ms: -1,
                last_update_ms: now_ms,
            },
            pending: None,
            failed_epoch_fence: false,
            fencing: false,
        }
    }

    /// A transactional id as read back from the log.
    pub fn restored(transactional_id: &str, data: TxnData) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            data,
            pending: None,
            failed_epoch_fence: false,
            fencing: false,
        }
    }

    pub fn state(&self) -> TxnState {
        self.data.state
    }

    /// Checks an InitProducerId (with the producer's current id and epoch from v3 on) and
    /// says what it must do; nothing changes yet.
    pub fn plan_init(&self, expected: Option<(i64, i16)>) -> Result<InitPlan, i16> {
        if self.pending.is_some() {
            return Err(errors::CONCURRENT_TRANSACTIONS);
        }
        if let Some((id, epoch)) = expected {
            // A producer may continue when the id was just created, when it is the current
            // id (the epoch is checked below), or when it is the id before a rotation and its
            // epoch was exhausted (a retry whose answer was lost).
            let valid = self.data.producer_epoch == NO_PRODUCER_EPOCH
                || id == self.data.producer_id
                || (id == self.data.last_producer_id && epoch_exhausted(epoch));
            if !valid {
                return Err(errors::PRODUCER_FENCED);
            }
        }
        match self.data.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(errors::CONCURRENT_TRANSACTIONS)
            }
            TxnState::Ongoing => Ok(InitPlan::FenceOngoing),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if epoch_exhausted(self.data.producer_epoch)
                    && expected.is_none_or(|(_, e)| e == self.data.producer_epoch)
                {
                    Ok(InitPlan::RotateProducerId)
                } else {
                    Ok(InitPlan::BumpEpoch)
                }
            }
            // Never current states: Dead ids are removed, fences are not stored.
            TxnState::Dead | TxnState::PrepareEpochFence => Err(errors::CONCURRENT_TRANSACTIONS),
        }
    }

    /// Prepares InitProducerId's epoch bump or producer id rotation (`new_producer_id` is
    /// needed for a rotation). For [`InitPlan::FenceOngoing`] use [`Self::prepare_fence_abort`].
    pub fn prepare_init(
        &mut self,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        new_producer_id: Option<i64>,
        now_ms: i64,
    ) -> Result<TxnData, i16> {
        let plan = self.plan_init(expected)?;
        let d = &self.data;
        let (producer_id, last_producer_id, epoch, last_epoch) = match plan {
            InitPlan::FenceOngoing => return Err(errors::CONCURRENT_TRANSACTIONS),
            InitPlan::RotateProducerId => {
                // The id came from an earlier look at this state; a changed state retries.
                let Some(new_id) = new_producer_id else {
                    return Err(errors::CONCURRENT_TRANSACTIONS);
                };
                let last_epoch = if expected.is_some() {
                    d.producer_epoch
                } else {
                    NO_PRODUCER_EPOCH
                };
                (new_id, d.producer_id, 0, last_epoch)
            }
            InitPlan::BumpEpoch => {
                let bumped = d.producer_epoch + 1;
                match expected {
                    None => (d.producer_id, d.last_producer_id, bumped, NO_PRODUCER_EPOCH),
                    Some((_, e))
                        if d.producer_epoch == NO_PRODUCER_EPOCH || e == d.producer_epoch =>
                    {
                        (d.producer_id, d.last_producer_id, bumped, d.producer_epoch)
                    }
                    // A retry of a bump whose answer was lost: the same epoch again.
                    Some((_, e)) if e == d.last_producer_epoch => (
                        d.producer_id,
                        d.last_producer_id,
                        d.producer_epoch,
                        d.last_producer_epoch,
                    ),
                    Some(_) => return Err(errors::PRODUCER_FENCED),
                }
            }
        };
        let next = TxnData {
            producer_id,
            last_producer_id,
            producer_epoch: epoch,
            last_producer_epoch: last_epoch,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
        };
        self.transition_to(next)
    }

    /// Prepares adding partitions (AddPartitionsToTxn, AddOffsetsToTxn): `Ok(None)` when the
    /// ongoing transaction holds them all already (nothing to write).
    pub fn prepare_add_partitions(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        now_ms: i64,
    ) -> Result<Option<TxnData>, i16> {
        self.check_producer(producer_id, producer_epoch)?;
        if self.pending.is_some()
            || matches!(
                self.data.state,
                TxnState::PrepareCommit | TxnState::PrepareAbort
            )
        {
            return Err(errors::CONCURRENT_TRANSACTIONS);
        }
        if self.data.state == TxnState::Ongoing
            && partitions.iter().all(|p| self.data.partitions.contains(p))
        {
            return Ok(None);
        }
        let mut next = self.data.clone();
        if matches!(
            self.data.state,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        ) {
            next.start_ms = now_ms;
            next.partitions.clear();
        }
        next.partitions.extend(partitions.iter().cloned());
        next.state = TxnState::Ongoing;
        next.last_update_ms = now_ms;
        self.transition_to(next).map(Some)
    }

    /// Answers the verify-only form of AddPartitionsToTxn (v4+, from a broker checking a
    /// produce): per partition NONE when it is in the ongoing transaction, else
    /// INVALID_TXN_STATE; one error for all when the producer does not match.
    pub fn verify_partitions(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<i16>, i16> {
        self.check_producer(producer_id, producer_epoch)?;
        if self.pending.is_some()
            || matches!(
                self.data.state,
                TxnState::PrepareCommit | TxnState::PrepareAbort
            )
        {
            return Err(errors::CONCURRENT_TRANSACTIONS);
        }
        Ok(partitions
            .iter()
            .map(|p| {
                if self.data.state == TxnState::Ongoing && self.data.partitions.contains(p) {
                    errors::NONE
                } else {
                    errors::INVALID_TXN_STATE
                }
            })
            .collect())
    }

    /// Prepares a client's EndTxn.
    pub fn prepare_end(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<EndStep, i16> {
        self.check_producer(producer_id, producer_epoch)?;
        if self.pending.is_some() {
            return Err(errors::CONCURRENT_TRANSACTIONS);
        }
        match (self.data.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut next = self.data.clone();
                next.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                next.last_update_ms = now_ms;
                self.transition_to(next).map(EndStep::Write)
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(EndStep::AlreadyDone)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(errors::CONCURRENT_TRANSACTIONS)
            }
            _ => Err(errors::INVALID_TXN_STATE),
        }
    }

    /// Prepares the coordinator's abort of an ongoing transaction with a bumped epoch, which
    /// fences its producer (a new InitProducerId, or the transaction timed out). The epoch is
    /// bumped in memory at once, so a failed write does not bump it twice.
    pub fn prepare_fence_abort(&mut self, now_ms: i64) -> Result<TxnData, i16> {
        if self.pending.is_some() {
            return Err(errors::CONCURRENT_TRANSACTIONS);
        }
        if self.data.state != TxnState::Ongoing {
            return Err(errors::INVALID_TXN_STATE);
        }
        if self.data.producer_epoch == i16::MAX {
            // Cannot happen: epochs stop at i16::MAX - 1 for this very bump.
            return Err(errors::INVALID_PRODUCER_EPOCH);
        }
        if !self.failed_epoch_fence {
            self.data.producer_epoch += 1;
        }
        self.data.last_producer_epoch = NO_PRODUCER_EPOCH;
        let mut next = self.data.clone();
        next.state = TxnState::PrepareAbort;
        next.last_update_ms = now_ms;
        let next = self.transition_to(next)?;
        self.fencing = true;
        Ok(next)
    }

    /// Prepares the end of a PrepareCommit/PrepareAbort once every marker is written.
    pub fn prepare_complete(&mut self, now_ms: i64) -> Result<TxnData, i16> {
        if self.pending.is_some() {
            return Err(errors::CONCURRENT_TRANSACTIONS);
        }
        let state = match self.data.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return Err(errors::INVALID_TXN_STATE),
        };
        let mut next = self.data.clone();
        next.state = state;
        next.partitions.clear();
        next.last_update_ms = now_ms;
        self.transition_to(next)
    }

    /// Prepares the removal of an idle transactional id (its tombstone is written next).
    pub fn prepare_dead(&mut self) -> Result<TxnData, i16> {
        if self.pending.is_some() {
            return Err(errors::CONCURRENT_TRANSACTIONS);
        }
        let mut next = self.data.clone();
        next.state = TxnState::Dead;
        next.partitions.clear();
        self.transition_to(next)
    }

    /// Makes a written transition current.
    pub fn complete_transition(&mut self, next: TxnData) {
        if next.state == TxnState::CompleteCommit || next.state == TxnState::CompleteAbort {
            self.failed_epoch_fence = false;
        }
        self.data = next;
        self.pending = None;
        self.fencing = false;
    }

    /// Drops a transition whose write failed. A failed fence keeps its bumped epoch.
    pub fn abort_transition(&mut self) {
        if self.fencing {
            self.failed_epoch_fence = true;
        }
        self.pending = None;
        self.fencing = false;
    }

    /// Marks a partition's marker written: it leaves the transaction's partitions (what
    /// DescribeTransactions reports while markers are pending).
    pub fn marker_written(&mut self, topic: &str, partition: i32) {
        if matches!(
            self.data.state,
            TxnState::PrepareCommit | TxnState::PrepareAbort
        ) {
            self.data.partitions.remove(&(topic.to_string(), partition));
        }
    }

    /// Whether the ongoing transaction has run past its timeout at `now_ms`.
    pub fn timed_out(&self, now_ms: i64) -> bool {
        self.pending.is_none()
            && self.data.state == TxnState::Ongoing
            && self.data.start_ms + i64::from(self.data.timeout_ms) < now_ms
    }

    /// Whether the id has been idle for `expiration_ms` and may be removed.
    pub fn expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        self.pending.is_none()
            && self.data.state.expiration_allowed()
            && self.data.last_update_ms <= now_ms - expiration_ms
    }

    /// The producer check of every client request after InitProducerId.
    fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), i16> {
        if self.data.producer_id != producer_id {
            return Err(errors::INVALID_PRODUCER_ID_MAPPING);
        }
        if self.data.producer_epoch != producer_epoch {
            return Err(errors::PRODUCER_FENCED);
        }
        Ok(())
    }

    /// Marks `next` pending after checking that its state may follow the current one.
    fn transition_to(&mut self, next: TxnData) -> Result<TxnData, i16> {
        if !next.state.valid_previous().contains(&self.data.state) {
            tracing::error!(
                transactional_id = %self.transactional_id,
                from = self.data.state.name(),
                to = next.state.name(),
                "illegal transaction state transition refused"
            );
            return Err(errors::INVALID_TXN_STATE);
        }
        self.pending = Some(next.state);
        Ok(next)
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
