//! The classic group state machine fed with events, without sockets or disks.

use super::*;

const LIMITS: GroupLimits = GroupLimits {
    min_session_timeout_ms: 1000,
    max_session_timeout_ms: 60_000,
    initial_rebalance_delay_ms: 0,
    max_size: 3,
};

fn protocols(names: &[&str]) -> Vec<(String, Bytes)> {
    names
        .iter()
        .map(|n| (n.to_string(), Bytes::from(format!("meta-{n}"))))
        .collect()
}

fn join_req(member_id: &str, new_id: &str, names: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: protocols(names),
        require_known_member_id: true,
        supports_skip_assignment: false,
        new_member_id: new_id.into(),
    }
}

/// Joins a member through KIP-394 (MEMBER_ID_REQUIRED, then the real join).
fn join_new(g: &mut Group, id: &str, names: &[&str], now: i64) -> (JoinOutcome, Effects) {
    let (first, fx) = g.join(join_req("", id, names), &LIMITS, now);
    assert_eq!(
        first,
        JoinOutcome::Reply(JoinReply::error(errors::MEMBER_ID_REQUIRED, id))
    );
    assert!(fx.joins.is_empty());
    g.join(join_req(id, "unused", names), &LIMITS, now)
}

/// A group with one Stable member "a" in generation 1.
fn stable_one() -> Group {
    let mut g = Group::new("g", 0, 0);
    let (out, fx) = join_new(&mut g, "a", &["range"], 0);
    assert_eq!(out, JoinOutcome::Wait("a".into()));
    assert_eq!(fx.joins.len(), 1);
    let (out, fx) = g.sync(
        "a",
        None,
        1,
        None,
        None,
        vec![("a".into(), Bytes::from_static(b"A"))],
        0,
    );
    assert_eq!(out, SyncOutcome::Wait);
    assert!(fx.persist);
    assert_eq!(fx.syncs[0].1.assignment, Bytes::from_static(b"A"));
    assert_eq!(g.state, GroupState::Stable);
    g
}

#[test]
fn a_single_member_goes_through_every_state_to_stable() {
    let mut g = Group::new("g", 0, 0);
    assert_eq!(g.state, GroupState::Empty);
    let (out, fx) = join_new(&mut g, "a", &["range"], 5);
    assert_eq!(out, JoinOutcome::Wait("a".into()));
    let (who, reply) = &fx.joins[0];
    assert_eq!(who, "a");
    assert_eq!(reply.error, errors::NONE);
    assert_eq!(reply.generation, 1);
    assert_eq!(reply.leader, "a");
    assert_eq!(reply.protocol_name.as_deref(), Some("range"));
    assert_eq!(reply.members.len(), 1, "the leader gets the member list");
    assert_eq!(g.state, GroupState::CompletingRebalance);
    let (out, fx) = g.sync(
        "a",
        None,
        1,
        Some("consumer"),
        Some("range"),
        vec![("a".into(), Bytes::from_static(b"x"))],
        6,
    );
    assert_eq!(out, SyncOutcome::Wait);
    assert_eq!(fx.syncs.len(), 1);
    assert_eq!(g.state, GroupState::Stable);
    // A later SyncGroup in the same generation is answered at once.
    let (out, _) = g.sync("a", None, 1, None, None, vec![], 7);
    assert!(matches!(
        out,
        SyncOutcome::Reply(SyncReply { error: 0, .. })
    ));
}

#[test]
fn heartbeat_errors_are_precise() {
    let mut g = stable_one();
    assert_eq!(g.heartbeat("a", None, 1, 10), errors::NONE);
    assert_eq!(
        g.heartbeat("nobody", None, 1, 10),
        errors::UNKNOWN_MEMBER_ID
    );
    assert_eq!(g.heartbeat("a", None, 7, 10), errors::ILLEGAL_GENERATION);
    let mut dead = g.clone();
    dead.mark_dead(10);
    assert_eq!(
        dead.heartbeat("a", None, 1, 10),
        errors::COORDINATOR_NOT_AVAILABLE
    );
}

#[test]
fn a_second_member_triggers_a_rebalance_that_completes_when_all_rejoin() {
    let mut g = stable_one();
    let (out, fx) = join_new(&mut g, "b", &["range"], 100);
    assert_eq!(out, JoinOutcome::Wait("b".into()));
    assert!(fx.joins.is_empty(), "a has not rejoined yet");
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat("a", None, 1, 101),
        errors::REBALANCE_IN_PROGRESS
    );
    // Commits of the old generation are still accepted while preparing.
    assert_eq!(g.validate_commit("a", None, 1), Ok(()));
    let (out, fx) = g.join(join_req("a", "unused", &["range"]), &LIMITS, 102);
    assert_eq!(out, JoinOutcome::Wait("a".into()));
    assert_eq!(fx.joins.len(), 2);
    assert_eq!(g.generation, 2);
    let leader = fx.joins.iter().find(|(id, _)| id == "a").unwrap();
    assert_eq!(leader.1.members.len(), 2);
    let follower = fx.joins.iter().find(|(id, _)| id == "b").unwrap();
    assert!(follower.1.members.is_empty());
    // CompletingRebalance: an old-generation commit must wait for the new assignment.
    assert_eq!(
        g.validate_commit("a", None, 2),
        Err(errors::REBALANCE_IN_PROGRESS)
    );
    // The follower syncs first and waits; the leader's assignment answers both.
    let (out, fx) = g.sync("b", None, 2, None, None, vec![], 103);
    assert_eq!(out, SyncOutcome::Wait);
    assert!(fx.syncs.is_empty());
    let (_, fx) = g.sync(
        "a",
        None,
        2,
        None,
        None,
        vec![
            ("a".into(), Bytes::from_static(b"A")),
            ("b".into(), Bytes::from_static(b"B")),
        ],
        104,
    );
    let b = fx.syncs.iter().find(|(id, _)| id == "b").unwrap();
    assert_eq!(b.1.assignment, Bytes::from_static(b"B"));
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(g.validate_commit("b", None, 2), Ok(()));
    assert_eq!(
        g.validate_commit("b", None, 1),
        Err(errors::ILLEGAL_GENERATION)
    );
    assert_eq!(
        g.validate_commit("zz", None, 2),
        Err(errors::UNKNOWN_MEMBER_ID)
    );
}

#[test]
fn a_member_that_stops_heartbeating_is_expired_and_the_rest_rebalance() {
    let mut g = stable_one();
    join_new(&mut g, "b", &["range"], 0);
    g.join(join_req("a", "x", &["range"]), &LIMITS, 0);
    g.sync("b", None, 2, None, None, vec![], 0);
    g.sync("a", None, 2, None, None, vec![], 0);
    assert_eq!(g.state, GroupState::Stable);
    // a keeps heartbeating, b does not.
    assert_eq!(g.heartbeat("a", None, 2, 9_000), errors::NONE);
    assert!(g.tick(9_999).joins.is_empty());
    assert_eq!(g.next_deadline(), Some(10_000));
    let _ = g.tick(10_000);
    assert!(!g.members.contains_key("b"));
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat("a", None, 2, 10_001),
        errors::REBALANCE_IN_PROGRESS
    );
    let (_, fx) = g.join(join_req("a", "x", &["range"]), &LIMITS, 10_002);
    assert_eq!(fx.joins.len(), 1);
    assert_eq!(g.generation, 3);
    assert_eq!(g.members.len(), 1);
}

#[test]
fn the_last_member_leaving_empties_the_group_and_is_persisted() {
    let mut g = stable_one();
    let (codes, fx) = g.leave(
        &[
            Leaving {
                member_id: "a".into(),
                instance_id: None,
            },
            Leaving {
                member_id: "ghost".into(),
                instance_id: None,
            },
        ],
        50,
    );
    assert_eq!(codes, vec![errors::NONE, errors::UNKNOWN_MEMBER_ID]);
    assert!(fx.persist);
    assert_eq!(g.state, GroupState::Empty);
    assert_eq!(g.generation, 2);
    assert_eq!(g.state_since_ms, 50);
    // An empty group takes a standalone consumer's commit, not a stale member's.
    assert_eq!(g.validate_commit("", None, -1), Ok(()));
    assert_eq!(
        g.validate_commit("a", None, 1),
        Err(errors::UNKNOWN_MEMBER_ID)
    );
}

#[test]
fn members_that_do_not_rejoin_within_the_rebalance_timeout_are_dropped() {
    let mut g = stable_one();
    join_new(&mut g, "b", &["range"], 1_000);
    assert_eq!(g.state, GroupState::PreparingRebalance);
    // a keeps heartbeating but never rejoins; the join phase ends after 30 s.
    assert_eq!(
        g.heartbeat("a", None, 1, 25_000),
        errors::REBALANCE_IN_PROGRESS
    );
    let fx = g.tick(30_999);
    assert!(fx.joins.is_empty());
    let fx = g.tick(31_000);
    assert_eq!(fx.joins.len(), 1);
    assert_eq!(fx.joins[0].0, "b");
    assert_eq!(
        fx.joins[0].1.leader, "b",
        "the new leader is a member that joined"
    );
    assert!(!g.members.contains_key("a"));
}

#[test]
fn members_that_do_not_sync_in_time_are_dropped() {
    let mut g = stable_one();
    join_new(&mut g, "b", &["range"], 0);
    g.join(join_req("a", "x", &["range"]), &LIMITS, 0);
    assert_eq!(g.state, GroupState::CompletingRebalance);
    // Only the follower syncs; the leader never sends the assignment.
    g.sync("b", None, 2, None, None, vec![], 1);
    let fx = g.tick(30_000);
    assert!(!g.members.contains_key("a"));
    // b's SyncGroup of the failed generation is told to rejoin, and the group waits for it.
    let b_sync = fx.syncs.iter().find(|(id, _)| id == "b").unwrap();
    assert_eq!(b_sync.1.error, errors::REBALANCE_IN_PROGRESS);
    assert_eq!(g.state, GroupState::PreparingRebalance);
    let (_, fx) = g.join(join_req("b", "x", &["range"]), &LIMITS, 30_001);
    assert_eq!(fx.joins.len(), 1);
    assert_eq!(fx.joins[0].1.leader, "b");
    assert_eq!(g.generation, 3);
    assert_eq!(g.state, GroupState::CompletingRebalance);
}

#[test]
fn static_members_are_replaced_and_the_old_id_is_fenced() {
    let mut g = Group::new("g", 0, 0);
    let mut req = join_req("", "s1", &["range"]);
    req.instance_id = Some("inst".into());
    // Static members are not asked for a member id first.
    let (out, fx) = g.join(req.clone(), &LIMITS, 0);
    assert_eq!(out, JoinOutcome::Wait("s1".into()));
    assert_eq!(fx.joins.len(), 1);
    g.sync(
        "s1",
        Some("inst"),
        1,
        None,
        None,
        vec![("s1".into(), Bytes::from_static(b"S"))],
        0,
    );
    assert_eq!(g.state, GroupState::Stable);
    // The process restarts and joins again with the same instance id and no member id.
    req.new_member_id = "s2".into();
    let (out, fx) = g.join(req, &LIMITS, 10);
    let JoinOutcome::Reply(reply) = out else {
        panic!("a stable static rejoin is answered at once")
    };
    assert_eq!(reply.member_id, "s2");
    assert_eq!(reply.generation, 1, "no rebalance");
    assert!(fx.persist);
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(
        g.heartbeat("s1", Some("inst"), 1, 11),
        errors::FENCED_INSTANCE_ID
    );
    assert_eq!(g.heartbeat("s2", Some("inst"), 1, 11), errors::NONE);
    let (out, _) = g.sync("s2", Some("inst"), 1, None, None, vec![], 12);
    assert!(
        matches!(out, SyncOutcome::Reply(SyncReply { ref assignment, .. }) if assignment == &Bytes::from_static(b"S"))
    );
    // Leaving by instance id with the old member id is fenced; by instance alone it works.
    let (codes, _) = g.leave(
        &[Leaving {
            member_id: "s1".into(),
            instance_id: Some("inst".into()),
        }],
        13,
    );
    assert_eq!(codes, vec![errors::FENCED_INSTANCE_ID]);
    let (codes, _) = g.leave(
        &[Leaving {
            member_id: String::new(),
            instance_id: Some("inst".into()),
        }],
        14,
    );
    assert_eq!(codes, vec![errors::NONE]);
    assert_eq!(g.state, GroupState::Empty);
}

#[test]
fn the_protocol_every_member_supports_with_most_votes_wins() {
    let mut g = Group::new("g", 0, 0);
    join_new(&mut g, "a", &["range", "roundrobin"], 0);
    g.sync("a", None, 1, None, None, vec![], 0);
    join_new(&mut g, "b", &["roundrobin", "range"], 1);
    let (_, fx) = g.join(join_req("a", "x", &["range", "roundrobin"]), &LIMITS, 2);
    assert_eq!(fx.joins.len(), 2);
    // One vote each: the leader's preference breaks the tie.
    assert_eq!(g.protocol.as_deref(), Some("range"));
    g.sync("a", None, 2, None, None, vec![], 3);
    join_new(&mut g, "c", &["roundrobin"], 4);
    g.join(join_req("a", "x", &["range", "roundrobin"]), &LIMITS, 5);
    let (_, fx) = g.join(join_req("b", "x", &["roundrobin", "range"]), &LIMITS, 6);
    assert_eq!(fx.joins.len(), 3);
    assert_eq!(
        g.protocol.as_deref(),
        Some("roundrobin"),
        "the only common protocol"
    );
    // A member without any common protocol, or of another protocol type, is refused.
    let (out, _) = g.join(join_req("", "d", &["sticky"]), &LIMITS, 7);
    assert_eq!(
        out,
        JoinOutcome::Reply(JoinReply::error(errors::INCONSISTENT_GROUP_PROTOCOL, ""))
    );
    let mut other = join_req("", "e", &["roundrobin"]);
    other.protocol_type = "connect".into();
    let (out, _) = g.join(other, &LIMITS, 7);
    assert_eq!(
        out,
        JoinOutcome::Reply(JoinReply::error(errors::INCONSISTENT_GROUP_PROTOCOL, ""))
    );
    // The group holds three members: a fourth is one too many.
    let (out, _) = g.join(join_req("", "f", &["roundrobin"]), &LIMITS, 8);
    assert_eq!(
        out,
        JoinOutcome::Reply(JoinReply::error(errors::GROUP_MAX_SIZE_REACHED, ""))
    );
}

#[test]
fn session_timeouts_outside_the_broker_bounds_are_refused() {
    let mut g = Group::new("g", 0, 0);
    for bad in [999, 60_001] {
        let mut req = join_req("", "a", &["range"]);
        req.session_timeout_ms = bad;
        let (out, _) = g.join(req, &LIMITS, 0);
        assert_eq!(
            out,
            JoinOutcome::Reply(JoinReply::error(errors::INVALID_SESSION_TIMEOUT, ""))
        );
    }
    let (out, _) = g.join(join_req("unknown", "a", &["range"]), &LIMITS, 0);
    assert_eq!(
        out,
        JoinOutcome::Reply(JoinReply::error(errors::UNKNOWN_MEMBER_ID, "unknown"))
    );
}

#[test]
fn handed_out_member_ids_expire_after_the_session_timeout() {
    let mut g = Group::new("g", 0, 0);
    let (out, _) = g.join(join_req("", "a", &["range"]), &LIMITS, 0);
    assert!(matches!(
        out,
        JoinOutcome::Reply(JoinReply {
            error: errors::MEMBER_ID_REQUIRED,
            ..
        })
    ));
    assert_eq!(g.next_deadline(), Some(10_000));
    g.tick(10_000);
    assert!(g.pending.is_empty());
    let (out, _) = g.join(join_req("a", "x", &["range"]), &LIMITS, 10_001);
    assert_eq!(
        out,
        JoinOutcome::Reply(JoinReply::error(errors::UNKNOWN_MEMBER_ID, "a"))
    );
}

#[test]
fn the_initial_delay_waits_for_more_members_before_the_first_generation() {
    let mut g = Group::new("g", 3_000, 0);
    let (out, fx) = join_new(&mut g, "a", &["range"], 0);
    assert_eq!(out, JoinOutcome::Wait("a".into()));
    assert!(fx.joins.is_empty(), "waits the initial delay");
    join_new(&mut g, "b", &["range"], 1_000);
    assert!(g.tick(2_999).joins.is_empty());
    // b joined during the delay: wait one more delay.
    assert!(g.tick(3_000).joins.is_empty());
    assert_eq!(g.state, GroupState::PreparingRebalance);
    let fx = g.tick(6_000);
    assert_eq!(fx.joins.len(), 2);
    assert_eq!(g.generation, 1);
    // Later rebalances complete as soon as everyone rejoined.
    g.sync("a", None, 1, None, None, vec![], 6_001);
    join_new(&mut g, "c", &["range"], 6_002);
    g.join(join_req("a", "x", &["range"]), &LIMITS, 6_003);
    let (_, fx) = g.join(join_req("b", "x", &["range"]), &LIMITS, 6_004);
    assert_eq!(fx.joins.len(), 3);
}

#[test]
fn offsets_of_empty_groups_expire_after_the_retention() {
    let mut g = stable_one();
    let at = |ts| CommittedOffset {
        offset: 1,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: ts,
        expire_timestamp_ms: None,
        record_offset: 0,
    };
    g.commit("t", 0, at(100));
    g.commit(
        "t",
        1,
        CommittedOffset {
            expire_timestamp_ms: Some(500),
            ..at(100)
        },
    );
    assert!(
        g.expired_offsets(1_000_000, 1_000).is_empty(),
        "a group with members keeps them"
    );
    g.leave(
        &[Leaving {
            member_id: "a".into(),
            instance_id: None,
        }],
        2_000,
    );
    assert_eq!(g.expired_offsets(2_999, 1_000), vec![("t".to_string(), 1)]);
    assert_eq!(
        g.expired_offsets(3_000, 1_000).len(),
        2,
        "retention counts from becoming empty"
    );
    // A standalone consumer's group (never had members) counts from each commit.
    let mut simple = Group::new("s", 0, 0);
    simple.commit("t", 0, at(100));
    assert!(simple.expired_offsets(1_099, 1_000).is_empty());
    assert_eq!(simple.expired_offsets(1_100, 1_000).len(), 1);
}

#[test]
fn a_restored_group_keeps_its_generation_and_expires_silent_members() {
    let g = stable_one();
    let mut r = Group::new("g", 0, 0);
    r.restore(
        "consumer".into(),
        g.generation,
        g.protocol.clone(),
        g.leader.clone(),
        g.state_since_ms,
        g.members.values().cloned().collect(),
        1_000,
    );
    assert_eq!(r.state, GroupState::Stable);
    assert_eq!(r.heartbeat("a", None, 1, 1_001), errors::NONE);
    r.tick(20_000);
    assert_eq!(r.state, GroupState::Empty);
    assert_eq!(r.generation, 2);
}

#[test]
fn a_handed_out_member_id_that_is_never_used_stops_holding_up_the_rebalance() {
    let mut g = stable_one();
    // c asks for a member id (KIP-394) and vanishes; a rejoins for another reason.
    let (out, _) = g.join(join_req("", "c", &["range"]), &LIMITS, 100);
    assert!(matches!(
        out,
        JoinOutcome::Reply(JoinReply {
            error: errors::MEMBER_ID_REQUIRED,
            ..
        })
    ));
    let (out, fx) = g.join(join_req("a", "x", &["range", "roundrobin"]), &LIMITS, 200);
    assert_eq!(out, JoinOutcome::Wait("a".into()));
    assert!(fx.joins.is_empty(), "waits for the member id it handed out");
    // c's id expires with its session timeout (10 s), long before the 30 s rebalance timeout.
    let fx = g.tick(10_100);
    assert_eq!(fx.joins.len(), 1);
    assert_eq!(g.generation, 2);
}

fn offset_at(offset: i64, record_offset: i64) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
        expire_timestamp_ms: None,
        record_offset,
    }
}

#[test]
fn transactional_commits_are_checked_like_commits_but_without_rebalance_or_old_versions() {
    let mut g = stable_one();
    // TxnOffsetCommit before v3 carries neither member nor generation: accepted even with
    // members (the transaction decides), unlike an OffsetCommit without a member.
    assert_eq!(g.validate_txn_commit("", None, -1), Ok(()));
    assert_eq!(g.validate_txn_commit("a", None, 1), Ok(()));
    assert_eq!(
        g.validate_txn_commit("a", None, 0),
        Err(errors::ILLEGAL_GENERATION)
    );
    assert_eq!(
        g.validate_txn_commit("zz", None, 1),
        Err(errors::UNKNOWN_MEMBER_ID)
    );
    assert_eq!(
        g.validate_txn_commit("a", None, -1),
        Err(errors::ILLEGAL_GENERATION),
        "a member id without its generation"
    );
    // CompletingRebalance refuses an OffsetCommit but not a transactional one.
    join_new(&mut g, "b", &["range"], 100);
    g.join(join_req("a", "x", &["range"]), &LIMITS, 101);
    assert_eq!(g.state, GroupState::CompletingRebalance);
    assert_eq!(
        g.validate_commit("a", None, 2),
        Err(errors::REBALANCE_IN_PROGRESS)
    );
    assert_eq!(g.validate_txn_commit("a", None, 2), Ok(()));
    // A static member replaced by a newer instance is fenced.
    g.static_members.insert("inst".into(), "b".into());
    assert_eq!(
        g.validate_txn_commit("a", Some("inst"), 2),
        Err(errors::FENCED_INSTANCE_ID)
    );
    g.mark_dead(200);
    assert_eq!(
        g.validate_txn_commit("", None, -1),
        Err(errors::COORDINATOR_NOT_AVAILABLE)
    );
}

#[test]
fn pending_transactional_offsets_become_committed_only_on_commit_and_only_if_newer() {
    let mut g = Group::new("g", 0, 0);
    g.commit("t", 0, offset_at(5, 10));
    g.txn_commit(7, "t", 0, offset_at(8, 11));
    g.txn_commit(7, "t", 1, offset_at(3, 11));
    // A later record of the same partition in the same transaction replaces the earlier one,
    // an earlier one completing late does not.
    g.txn_commit(7, "t", 1, offset_at(4, 13));
    g.txn_commit(7, "t", 1, offset_at(2, 12));
    g.txn_commit(9, "t", 2, offset_at(1, 14));
    assert_eq!(
        g.offsets[&("t".to_string(), 0)].offset,
        5,
        "pending is invisible"
    );
    assert!(g.has_pending_txn_offset("t", 0));
    assert!(g.has_pending_txn_offset("t", 2));
    assert!(!g.has_pending_txn_offset("t", 3));
    assert_eq!(
        g.offset_partitions(),
        vec![
            ("t".to_string(), 0),
            ("t".to_string(), 1),
            ("t".to_string(), 2)
        ]
    );
    // A regular commit after the transactional one in the log wins over it.
    g.commit("t", 1, offset_at(100, 15));
    assert_eq!(g.complete_txn(7, true), 2);
    assert_eq!(g.offsets[&("t".to_string(), 0)].offset, 8);
    assert_eq!(g.offsets[&("t".to_string(), 1)].offset, 100);
    assert!(!g.has_pending_txn_offset("t", 0));
    // An abort drops them; a marker of a producer without offsets here changes nothing.
    assert_eq!(g.complete_txn(9, false), 1);
    assert!(!g.offsets.contains_key(&("t".to_string(), 2)));
    assert_eq!(g.complete_txn(9, true), 0);
    assert!(g.txn_offsets.is_empty());
}

#[test]
fn a_tombstone_removes_the_offset_from_open_transactions_too() {
    let mut g = Group::new("g", 0, 0);
    g.commit("t", 0, offset_at(5, 1));
    g.txn_commit(7, "t", 0, offset_at(6, 2));
    g.txn_commit(7, "u", 0, offset_at(1, 2));
    g.remove_offset("t", 0);
    assert!(g.offsets.is_empty());
    assert!(!g.has_pending_txn_offset("t", 0));
    g.complete_txn(7, true);
    assert!(
        !g.offsets.contains_key(&("t".to_string(), 0)),
        "not brought back"
    );
    assert_eq!(g.offsets[&("u".to_string(), 0)].offset, 1);
}

#[test]
fn retention_keeps_an_offset_that_an_open_transaction_will_replace() {
    let mut g = Group::new("g", 0, 0);
    g.commit("t", 0, offset_at(5, 1));
    g.commit("t", 1, offset_at(5, 1));
    g.txn_commit(7, "t", 0, offset_at(6, 2));
    assert_eq!(
        g.expired_offsets(1_000_000, 1_000),
        vec![("t".to_string(), 1)]
    );
    g.complete_txn(7, false);
    assert_eq!(g.expired_offsets(1_000_000, 1_000).len(), 2);
}
