//! Unit tests of the transaction state machine: Kafka's transitions and error codes.

use super::*;

fn tp(t: &str, p: i32) -> (String, i32) {
    (t.to_string(), p)
}

/// Runs a prepared transition as if its write succeeded.
fn commit(
    m: &mut TxnMetadata,
    prepare: impl FnOnce(&mut TxnMetadata) -> Result<TxnData, i16>,
) -> TxnData {
    let next = prepare(m).unwrap();
    m.complete_transition(next.clone());
    next
}

/// A transactional id initialised at epoch 0 with producer id 1000.
fn initialised() -> TxnMetadata {
    let mut m = TxnMetadata::new("tx", 1000, 60_000, 0);
    let d = commit(&mut m, |m| m.prepare_init(60_000, None, None, 1));
    assert_eq!((d.producer_id, d.producer_epoch), (1000, 0));
    m
}

fn ongoing() -> TxnMetadata {
    let mut m = initialised();
    let d = m
        .prepare_add_partitions(1000, 0, &[tp("a", 0), tp("b", 1)], 10)
        .unwrap()
        .unwrap();
    m.complete_transition(d);
    m
}

#[test]
fn states_have_kafkas_ids_and_names() {
    for s in TxnState::ALL {
        assert_eq!(TxnState::from_id(s.id()), Some(s));
        assert_eq!(TxnState::from_name(s.name()), Some(s));
    }
    assert_eq!(TxnState::PrepareCommit.id(), 2);
    assert_eq!(TxnState::PrepareEpochFence.id(), 7);
    assert_eq!(TxnState::from_name("ongoing"), None);
}

#[test]
fn a_new_id_starts_at_epoch_zero_and_each_init_bumps_it() {
    let mut m = initialised();
    assert_eq!(m.state(), TxnState::Empty);
    let d = commit(&mut m, |m| m.prepare_init(5_000, None, None, 2));
    assert_eq!(d.producer_epoch, 1);
    assert_eq!(d.timeout_ms, 5_000);
    assert_eq!(d.last_producer_epoch, NO_PRODUCER_EPOCH);
}

#[test]
fn add_partitions_starts_the_transaction_once_and_repeats_need_no_write() {
    let mut m = initialised();
    let d = m
        .prepare_add_partitions(1000, 0, &[tp("a", 0)], 50)
        .unwrap()
        .unwrap();
    assert_eq!(m.pending, Some(TxnState::Ongoing));
    // While the write is pending everything else waits.
    assert_eq!(
        m.prepare_add_partitions(1000, 0, &[tp("a", 1)], 51),
        Err(errors::CONCURRENT_TRANSACTIONS)
    );
    m.complete_transition(d);
    assert_eq!((m.state(), m.data.start_ms), (TxnState::Ongoing, 50));
    assert_eq!(
        m.prepare_add_partitions(1000, 0, &[tp("a", 0)], 60),
        Ok(None)
    );
    let d = m
        .prepare_add_partitions(1000, 0, &[tp("b", 0)], 70)
        .unwrap()
        .unwrap();
    // The start time stays that of the transaction's first partition.
    assert_eq!(d.start_ms, 50);
    assert_eq!(d.partitions.len(), 2);
}

#[test]
fn wrong_producer_ids_and_epochs_get_kafkas_errors() {
    let mut m = ongoing();
    assert_eq!(
        m.prepare_add_partitions(999, 0, &[tp("a", 0)], 1),
        Err(errors::INVALID_PRODUCER_ID_MAPPING)
    );
    assert_eq!(
        m.prepare_add_partitions(1000, 1, &[tp("a", 0)], 1),
        Err(errors::PRODUCER_FENCED)
    );
    assert_eq!(
        m.prepare_end(1000, 3, true, 1),
        Err(errors::PRODUCER_FENCED)
    );
    assert_eq!(
        m.prepare_end(7, 0, true, 1),
        Err(errors::INVALID_PRODUCER_ID_MAPPING)
    );
}

#[test]
fn commit_goes_through_prepare_and_complete_and_retries_are_answered() {
    let mut m = ongoing();
    let EndStep::Write(d) = m.prepare_end(1000, 0, true, 100).unwrap() else {
        panic!("expected a write")
    };
    assert_eq!(d.state, TxnState::PrepareCommit);
    m.complete_transition(d);
    // Markers pending: the same EndTxn again waits, the opposite is a state error, adding
    // partitions waits, and so does InitProducerId.
    assert_eq!(
        m.prepare_end(1000, 0, true, 101),
        Err(errors::CONCURRENT_TRANSACTIONS)
    );
    assert_eq!(
        m.prepare_end(1000, 0, false, 101),
        Err(errors::INVALID_TXN_STATE)
    );
    assert_eq!(
        m.prepare_add_partitions(1000, 0, &[tp("c", 0)], 101),
        Err(errors::CONCURRENT_TRANSACTIONS)
    );
    assert_eq!(m.plan_init(None), Err(errors::CONCURRENT_TRANSACTIONS));
    m.marker_written("a", 0);
    assert_eq!(m.data.partitions.len(), 1);
    let d = commit(&mut m, |m| m.prepare_complete(200));
    assert_eq!(d.state, TxnState::CompleteCommit);
    assert!(d.partitions.is_empty());
    assert_eq!(m.prepare_end(1000, 0, true, 201), Ok(EndStep::AlreadyDone));
    assert_eq!(
        m.prepare_end(1000, 0, false, 201),
        Err(errors::INVALID_TXN_STATE)
    );
    // The next transaction starts from CompleteCommit with a new start time.
    let d = m
        .prepare_add_partitions(1000, 0, &[tp("c", 0)], 300)
        .unwrap()
        .unwrap();
    assert_eq!(d.start_ms, 300);
    assert_eq!(d.partitions.len(), 1);
}

#[test]
fn end_txn_without_a_transaction_is_an_invalid_state() {
    let mut m = initialised();
    assert_eq!(
        m.prepare_end(1000, 0, true, 1),
        Err(errors::INVALID_TXN_STATE)
    );
    assert_eq!(
        m.prepare_end(1000, 0, false, 1),
        Err(errors::INVALID_TXN_STATE)
    );
}

#[test]
fn init_during_a_transaction_fences_it_with_a_bumped_epoch_abort() {
    let mut m = ongoing();
    assert_eq!(m.plan_init(None), Ok(InitPlan::FenceOngoing));
    let d = m.prepare_fence_abort(500).unwrap();
    assert_eq!(d.state, TxnState::PrepareAbort);
    assert_eq!(d.producer_epoch, 1);
    m.complete_transition(d);
    // The old producer (epoch 0) is fenced.
    assert_eq!(
        m.prepare_end(1000, 0, true, 501),
        Err(errors::PRODUCER_FENCED)
    );
    commit(&mut m, |m| m.prepare_complete(600));
    assert_eq!(m.state(), TxnState::CompleteAbort);
    // The new producer's retry bumps again.
    let d = commit(&mut m, |m| m.prepare_init(60_000, None, None, 700));
    assert_eq!(d.producer_epoch, 2);
}

#[test]
fn a_failed_fence_write_does_not_bump_the_epoch_twice() {
    let mut m = ongoing();
    m.prepare_fence_abort(1).unwrap();
    m.abort_transition();
    assert!(m.failed_epoch_fence);
    assert_eq!(m.data.producer_epoch, 1);
    let d = m.prepare_fence_abort(2).unwrap();
    assert_eq!(d.producer_epoch, 1);
    m.complete_transition(d);
    commit(&mut m, |m| m.prepare_complete(3));
    assert!(!m.failed_epoch_fence);
    // A client abort whose write fails is no fence.
    let mut m = ongoing();
    m.prepare_end(1000, 0, false, 1).unwrap();
    m.abort_transition();
    assert!(!m.failed_epoch_fence);
    assert_eq!(m.data.producer_epoch, 0);
}

#[test]
fn kip_360_a_producer_may_continue_with_its_current_id_and_epoch() {
    let mut m = initialised();
    // Current id and epoch: bumped, and the old epoch remembered.
    let d = commit(&mut m, |m| m.prepare_init(60_000, Some((1000, 0)), None, 1));
    assert_eq!((d.producer_epoch, d.last_producer_epoch), (1, 0));
    // The same request again (its answer was lost): the same epoch, no second bump.
    let d = commit(&mut m, |m| m.prepare_init(60_000, Some((1000, 0)), None, 2));
    assert_eq!(d.producer_epoch, 1);
    // Another producer id, or an epoch that is neither current nor last: fenced.
    assert_eq!(
        m.clone().prepare_init(60_000, Some((55, 1)), None, 3),
        Err(errors::PRODUCER_FENCED)
    );
    let d = commit(&mut m, |m| m.prepare_init(60_000, None, None, 4));
    assert_eq!(d.producer_epoch, 2);
    assert_eq!(
        m.clone().prepare_init(60_000, Some((1000, 0)), None, 5),
        Err(errors::PRODUCER_FENCED)
    );
}

#[test]
fn an_exhausted_epoch_rotates_the_producer_id() {
    let mut m = initialised();
    m.data.producer_epoch = i16::MAX - 1;
    assert_eq!(m.plan_init(None), Ok(InitPlan::RotateProducerId));
    // Without the fresh id the caller must look again.
    assert_eq!(
        m.clone().prepare_init(60_000, None, None, 1),
        Err(errors::CONCURRENT_TRANSACTIONS)
    );
    let d = commit(&mut m, |m| {
        m.prepare_init(60_000, Some((1000, i16::MAX - 1)), Some(2000), 1)
    });
    assert_eq!((d.producer_id, d.producer_epoch), (2000, 0));
    assert_eq!(d.last_producer_id, 1000);
    assert_eq!(d.last_producer_epoch, i16::MAX - 1);
    // A retry with the old id and exhausted epoch is accepted (its answer was lost).
    assert_eq!(
        m.plan_init(Some((1000, i16::MAX - 1))),
        Ok(InitPlan::BumpEpoch)
    );
}

#[test]
fn verify_only_reports_partitions_outside_the_transaction() {
    let m = ongoing();
    assert_eq!(
        m.verify_partitions(1000, 0, &[tp("a", 0), tp("z", 0)]),
        Ok(vec![errors::NONE, errors::INVALID_TXN_STATE])
    );
    assert_eq!(
        m.verify_partitions(1000, 1, &[tp("a", 0)]),
        Err(errors::PRODUCER_FENCED)
    );
    let m = initialised();
    assert_eq!(
        m.verify_partitions(1000, 0, &[tp("a", 0)]),
        Ok(vec![errors::INVALID_TXN_STATE])
    );
}

#[test]
fn timeouts_and_expiry_follow_the_clock() {
    let m = ongoing();
    // Started at 10 with a 60 s timeout.
    assert!(!m.timed_out(60_010));
    assert!(m.timed_out(60_011));
    assert!(
        !m.expired(i64::MAX / 2, 1_000),
        "an ongoing id never expires"
    );
    let mut m = initialised();
    m.data.last_update_ms = 100;
    assert!(!m.expired(1_099, 1_000));
    assert!(m.expired(1_100, 1_000));
    let d = m.prepare_dead().unwrap();
    assert_eq!(d.state, TxnState::Dead);
    let mut o = ongoing();
    assert_eq!(o.prepare_dead(), Err(errors::INVALID_TXN_STATE));
}
