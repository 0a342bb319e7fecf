//! The classic group protocol as pure logic: one [`Group`] and the events that change it.
//!
//! Nothing here does I/O or keeps time: every event carries `now_ms`, and its outcome says
//! which waiting JoinGroup/SyncGroup calls get which answer ([`Effects`]) and whether the
//! group's metadata must be written to `__consumer_offsets` before those answers go out. The
//! coordinator (`coordinator.rs`) owns the sockets, the waiters, the timers and the log; this
//! split lets the state machine be tested by feeding events and checking outcomes.
//!
//! States follow Kafka's classic coordinator:
//!
//! ```text
//!            join                 all joined / rebalance timeout        leader sync
//!  Empty ───────────► PreparingRebalance ──────────────────► CompletingRebalance ──► Stable
//!    ▲                   ▲        │ nobody left                │  member change/leave   │
//!    └───────────────────┼────────┘                            └───────────┬────────────┘
//!                        └────────────────────────────────────────────────┘
//!  Dead: deleted (DeleteGroups, or offsets expired with no members); never reused.
//! ```
//!
//! Owned by the group's coordinator shard; never crosses cores.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::errors;

/// Kafka's `newMemberJoinTimeoutMs`: a member that joined during a rebalance and then
/// vanished is dropped after this long even though it is "awaiting join".
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 5 * 60 * 1000;

/// A group's state, with the names Kafka reports in ListGroups and DescribeGroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    /// Parses a ListGroups state filter (case-insensitive, as Kafka does).
    pub fn parse(name: &str) -> Option<GroupState> {
        [
            GroupState::Empty,
            GroupState::PreparingRebalance,
            GroupState::CompletingRebalance,
            GroupState::Stable,
            GroupState::Dead,
        ]
        .into_iter()
        .find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

/// Broker settings the state machine needs.
#[derive(Clone, Copy, Debug)]
pub struct GroupLimits {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: i64,
    pub max_size: i32,
}

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// Protocols in the member's order of preference, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub awaiting_join: bool,
    pub awaiting_sync: bool,
    /// Joined during the current rebalance (dropped if it disappears before it completes).
    pub is_new: bool,
    pub last_heartbeat_ms: i64,
}

impl Member {
    /// The metadata this member sent for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// Whether the member is alive at `now_ms` (Kafka's `shouldKeepAlive`): a member waiting
    /// for its JoinGroup or SyncGroup answer is kept (new joiners only for a while), others
    /// must have heartbeated within their session timeout.
    fn alive(&self, now_ms: i64) -> bool {
        if self.awaiting_join {
            !self.is_new || self.last_heartbeat_ms + NEW_MEMBER_JOIN_TIMEOUT_MS > now_ms
        } else if self.awaiting_sync {
            true
        } else {
            self.last_heartbeat_ms + i64::from(self.session_timeout_ms) > now_ms
        }
    }
}

/// A committed offset of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// An explicit expiry (OffsetCommit v2-v4 `retention_time_ms`), else `None`.
    pub expire_timestamp_ms: Option<i64>,
    /// The offset of the record in `__consumer_offsets` that stored this commit (-1 before
    /// it is written). Of a regular and a transactional commit of the same partition, the one
    /// later in the log wins, whichever completes first (Kafka keeps the record offset for
    /// this, so that compaction of the topic cannot bring an older commit back).
    pub record_offset: i64,
}

/// The answer to one JoinGroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinReply {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// Filled for the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinReply {
    fn error(error: i16, member_id: &str) -> JoinReply {
        JoinReply {
            error,
            generation: -1,
            member_id: member_id.to_string(),
            ..JoinReply::default()
        }
    }
}

/// The answer to one SyncGroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReply {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncReply {
    fn error(error: i16) -> SyncReply {
        SyncReply {
            error,
            ..SyncReply::default()
        }
    }
}

/// What an event asks the coordinator to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// JoinGroup answers for members whose JoinGroup is waiting, by member id.
    pub joins: Vec<(String, JoinReply)>,
    /// SyncGroup answers for members whose SyncGroup is waiting, by member id.
    pub syncs: Vec<(String, SyncReply)>,
    /// The group's metadata changed in a way that must be written (before `syncs` go out).
    pub persist: bool,
}

/// A JoinGroup as the state machine sees it.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// KIP-394 (JoinGroup v4+): a member without id first gets one with MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
    /// JoinGroup v9+ lets a static leader that replaced itself skip the assignment.
    pub supports_skip_assignment: bool,
    /// The id the coordinator gives a new member (`client_id-UUID`), made by the caller.
    pub new_member_id: String,
}

/// The immediate result of a JoinGroup.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Answer now.
    Reply(JoinReply),
    /// The member waits for the rebalance; its answer comes in some event's `Effects::joins`
    /// under this member id.
    Wait(String),
}

/// The immediate result of a SyncGroup.
#[derive(Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    Reply(SyncReply),
    /// The member waits for the leader's assignment (`Effects::syncs`).
    Wait,
}

/// Who is leaving: a member id, a static instance id, or both (LeaveGroup v3+).
#[derive(Clone, Debug)]
pub struct Leaving {
    pub member_id: String,
    pub instance_id: Option<String>,
}

/// One consumer group. Owned by the group's coordinator shard; never crosses cores.
#[derive(Clone, Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Static members: group.instance.id → member id.
    pub static_members: HashMap<String, String>,
    /// KIP-394 member ids handed out but not yet used to join, with their expiry.
    pub pending: HashMap<String, i64>,
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// Offsets committed inside transactions still open (TxnOffsetCommit), by producer id.
    /// OffsetFetch does not see them; the producer's commit marker on the group's
    /// `__consumer_offsets` partition makes them committed offsets, its abort marker drops
    /// them (Kafka's pending transactional offsets).
    pub txn_offsets: BTreeMap<i64, BTreeMap<(String, i32), CommittedOffset>>,
    /// When the group entered its current state (Kafka's currentStateTimestamp).
    pub state_since_ms: i64,
    /// PreparingRebalance: when the join phase ends at the latest.
    join_deadline_ms: Option<i64>,
    /// Initial delayed join: rebalance time still available after the current delay.
    initial_delay_left_ms: i64,
    /// Initial delayed join: a member joined since the current delay began.
    new_member_added: bool,
    /// CompletingRebalance: when members that have not synced are removed.
    sync_deadline_ms: Option<i64>,
    /// `group.initial.rebalance.delay.ms`, given at creation.
    initial_delay_ms: i64,
    /// The current join phase is the first one after Empty and waits the initial delay.
    in_initial_delay: bool,
}

impl Group {
    /// A new, empty group whose first rebalances wait `initial_delay_ms` for more members.
    pub fn new(id: &str, initial_delay_ms: i64, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            offsets: BTreeMap::new(),
            txn_offsets: BTreeMap::new(),
            state_since_ms: now_ms,
            join_deadline_ms: None,
            initial_delay_left_ms: 0,
            new_member_added: false,
            sync_deadline_ms: None,
            initial_delay_ms: initial_delay_ms.max(0),
            in_initial_delay: false,
        }
    }

    /// Whether the group has members (the state is neither Empty nor Dead).
    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// The earliest time at which [`Group::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<i64> {
        let members = self
            .members
            .values()
            .filter(|m| !m.awaiting_join && !m.awaiting_sync)
            .map(|m| m.last_heartbeat_ms + i64::from(m.session_timeout_ms));
        let new_members = self
            .members
            .values()
            .filter(|m| m.awaiting_join && m.is_new)
            .map(|m| m.last_heartbeat_ms + NEW_MEMBER_JOIN_TIMEOUT_MS);
        members
            .chain(new_members)
            .chain(self.pending.values().copied())
            .chain(self.join_deadline_ms)
            .chain(self.sync_deadline_ms)
            .min()
    }

    /// Handles a JoinGroup.
    pub fn join(
        &mut self,
        req: JoinRequest,
        limits: &GroupLimits,
        now_ms: i64,
    ) -> (JoinOutcome, Effects) {
        let mut fx = Effects::default();
        let reply = |e: i16| {
            (
                JoinOutcome::Reply(JoinReply::error(e, &req.member_id)),
                Effects::default(),
            )
        };
        if self.state == GroupState::Dead {
            return reply(errors::COORDINATOR_NOT_AVAILABLE);
        }
        if req.session_timeout_ms < limits.min_session_timeout_ms
            || req.session_timeout_ms > limits.max_session_timeout_ms
        {
            return reply(errors::INVALID_SESSION_TIMEOUT);
        }
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            return reply(errors::INCONSISTENT_GROUP_PROTOCOL);
        }
        let known = !req.member_id.is_empty();
        let is_member = self.members.contains_key(&req.member_id);
        let is_pending = self.pending.contains_key(&req.member_id);
        if !is_member && !is_pending && self.is_full(limits, &req) {
            return reply(errors::GROUP_MAX_SIZE_REACHED);
        }
        if !known {
            if let Some(instance) = &req.instance_id {
                if let Some(old) = self.static_members.get(instance).cloned() {
                    return self.replace_static_member(&old, req, now_ms);
                }
                let id = req.new_member_id.clone();
                let out = self.add_member_and_rebalance(id, req, now_ms, &mut fx);
                return (out, fx);
            }
            if req.require_known_member_id {
                let id = req.new_member_id.clone();
                self.pending
                    .insert(id.clone(), now_ms + i64::from(req.session_timeout_ms));
                return (
                    JoinOutcome::Reply(JoinReply::error(errors::MEMBER_ID_REQUIRED, &id)),
                    fx,
                );
            }
            let id = req.new_member_id.clone();
            let out = self.add_member_and_rebalance(id, req, now_ms, &mut fx);
            return (out, fx);
        }
        if is_pending {
            self.pending.remove(&req.member_id);
            let id = req.member_id.clone();
            let out = self.add_member_and_rebalance(id, req, now_ms, &mut fx);
            return (out, fx);
        }
        if let Err(e) = self.validate_member(&req.member_id, req.instance_id.as_deref()) {
            return reply(e);
        }
        let member_id = req.member_id.clone();
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(&member_id, &req, now_ms);
                self.maybe_complete_join(now_ms, &mut fx);
                (JoinOutcome::Wait(member_id), fx)
            }
            GroupState::CompletingRebalance => {
                let same = self.members[&member_id].same_protocols(&req.protocols);
                if same {
                    // A repeated JoinGroup (the member missed our answer): answer it again.
                    let reply = self.join_reply_for(&member_id, false);
                    (JoinOutcome::Reply(reply), fx)
                } else {
                    self.update_member(&member_id, &req, now_ms);
                    self.prepare_rebalance(now_ms, &mut fx);
                    self.maybe_complete_join(now_ms, &mut fx);
                    (JoinOutcome::Wait(member_id), fx)
                }
            }
            GroupState::Stable => {
                let same = self.members[&member_id].same_protocols(&req.protocols);
                let is_leader = self.leader.as_deref() == Some(member_id.as_str());
                if is_leader || !same {
                    // The leader rejoining (a metadata change it saw) or a member changing
                    // its subscription starts a new generation.
                    self.update_member(&member_id, &req, now_ms);
                    self.prepare_rebalance(now_ms, &mut fx);
                    self.maybe_complete_join(now_ms, &mut fx);
                    (JoinOutcome::Wait(member_id), fx)
                } else {
                    let reply = self.join_reply_for(&member_id, false);
                    (JoinOutcome::Reply(reply), fx)
                }
            }
            GroupState::Empty | GroupState::Dead => reply(errors::UNKNOWN_MEMBER_ID),
        }
    }

    /// Handles a SyncGroup.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now_ms: i64,
    ) -> (SyncOutcome, Effects) {
        let mut fx = Effects::default();
        let reply = |e: i16| (SyncOutcome::Reply(SyncReply::error(e)), Effects::default());
        if self.state == GroupState::Dead {
            return reply(errors::COORDINATOR_NOT_AVAILABLE);
        }
        if let Err(e) = self.validate_member(member_id, instance_id) {
            return reply(e);
        }
        if generation != self.generation {
            return reply(errors::ILLEGAL_GENERATION);
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            return reply(errors::INCONSISTENT_GROUP_PROTOCOL);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => reply(errors::UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => reply(errors::REBALANCE_IN_PROGRESS),
            GroupState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.awaiting_sync = true;
                    m.last_heartbeat_ms = now_ms;
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    self.set_state(GroupState::Stable, now_ms);
                    self.sync_deadline_ms = None;
                    fx.persist = true;
                    self.answer_syncs(&mut fx, now_ms);
                }
                (SyncOutcome::Wait, fx)
            }
            GroupState::Stable => {
                let m = &self.members[member_id];
                (
                    SyncOutcome::Reply(SyncReply {
                        error: errors::NONE,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol.clone(),
                        assignment: m.assignment.clone(),
                    }),
                    fx,
                )
            }
        }
    }

    /// Handles a Heartbeat; returns its error code.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> i16 {
        if self.state == GroupState::Dead {
            return errors::COORDINATOR_NOT_AVAILABLE;
        }
        if let Err(e) = self.validate_member(member_id, instance_id) {
            return e;
        }
        if generation != self.generation {
            return errors::ILLEGAL_GENERATION;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => errors::UNKNOWN_MEMBER_ID,
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.touch(member_id, now_ms);
                errors::NONE
            }
            GroupState::PreparingRebalance => {
                self.touch(member_id, now_ms);
                errors::REBALANCE_IN_PROGRESS
            }
        }
    }

    /// Handles the members of a LeaveGroup; returns each one's error code.
    pub fn leave(&mut self, leaving: &[Leaving], now_ms: i64) -> (Vec<i16>, Effects) {
        let mut fx = Effects::default();
        let mut codes = Vec::with_capacity(leaving.len());
        for l in leaving {
            let code = match &l.instance_id {
                Some(instance) => match self.static_members.get(instance).cloned() {
                    None => errors::UNKNOWN_MEMBER_ID,
                    // An empty member id in a batched leave means "whoever holds this
                    // instance id" (the admin's removeMembersFromConsumerGroup).
                    Some(id) if !l.member_id.is_empty() && id != l.member_id => {
                        errors::FENCED_INSTANCE_ID
                    }
                    Some(id) => {
                        self.remove_member(&id, now_ms, &mut fx);
                        errors::NONE
                    }
                },
                None => {
                    if self.pending.remove(&l.member_id).is_some() {
                        errors::NONE
                    } else if self.members.contains_key(&l.member_id) {
                        self.remove_member(&l.member_id.clone(), now_ms, &mut fx);
                        errors::NONE
                    } else {
                        errors::UNKNOWN_MEMBER_ID
                    }
                }
            };
            codes.push(code);
        }
        (codes, fx)
    }

    /// Checks that an OffsetCommit by this member and generation may commit.
    pub fn validate_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), i16> {
        if self.state == GroupState::Dead {
            return Err(errors::COORDINATOR_NOT_AVAILABLE);
        }
        if generation < 0 && self.state == GroupState::Empty {
            // A standalone consumer that only keeps its offsets here.
            return Ok(());
        }
        self.validate_member(member_id, instance_id)?;
        if self.state == GroupState::CompletingRebalance {
            // The member must first learn its new assignment (SyncGroup).
            return Err(errors::REBALANCE_IN_PROGRESS);
        }
        if generation != self.generation {
            return Err(errors::ILLEGAL_GENERATION);
        }
        Ok(())
    }

    /// Checks that a TxnOffsetCommit by this member and generation may commit, as Kafka checks
    /// a transactional commit: like [`Group::validate_commit`], except that a request without
    /// member and generation (TxnOffsetCommit before v3 carries neither) is accepted whatever
    /// the group's state, and a rebalance in progress does not refuse it (the transaction,
    /// not the generation, decides whether these offsets count).
    pub fn validate_txn_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), i16> {
        if self.state == GroupState::Dead {
            return Err(errors::COORDINATOR_NOT_AVAILABLE);
        }
        if generation < 0 && member_id.is_empty() && instance_id.is_none() {
            return Ok(());
        }
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        self.validate_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(errors::ILLEGAL_GENERATION);
        }
        Ok(())
    }

    /// Records a committed offset (after it is durable), unless the partition already has one
    /// stored later in the log. A standalone consumer's commit gives an Empty group a
    /// last-activity time to expire from.
    pub fn commit(&mut self, topic: &str, partition: i32, offset: CommittedOffset) {
        let key = (topic.to_string(), partition);
        if self
            .offsets
            .get(&key)
            .is_some_and(|o| o.record_offset > offset.record_offset)
        {
            return;
        }
        self.offsets.insert(key, offset);
    }

    /// Records an offset committed inside the open transaction of `producer_id` (after it is
    /// durable); a later record of the same partition in the same transaction replaces it.
    pub fn txn_commit(
        &mut self,
        producer_id: i64,
        topic: &str,
        partition: i32,
        offset: CommittedOffset,
    ) {
        let pending = self.txn_offsets.entry(producer_id).or_default();
        let key = (topic.to_string(), partition);
        if pending
            .get(&key)
            .is_some_and(|o| o.record_offset > offset.record_offset)
        {
            return;
        }
        pending.insert(key, offset);
    }

    /// Ends the transaction of `producer_id` for this group: on commit its offsets become the
    /// committed offsets (each only where no commit stored later in the log exists), on abort
    /// they are dropped. Returns how many offsets the transaction held.
    pub fn complete_txn(&mut self, producer_id: i64, committed: bool) -> usize {
        let Some(pending) = self.txn_offsets.remove(&producer_id) else {
            return 0;
        };
        let n = pending.len();
        if committed {
            for ((topic, partition), o) in pending {
                self.commit(&topic, partition, o);
            }
        }
        n
    }

    /// Whether an open transaction holds an offset of this partition (OffsetFetch with
    /// `require_stable` answers UNSTABLE_OFFSET_COMMIT for it; retention keeps the committed
    /// offset until the transaction ends).
    pub fn has_pending_txn_offset(&self, topic: &str, partition: i32) -> bool {
        let key = (topic.to_string(), partition);
        self.txn_offsets.values().any(|o| o.contains_key(&key))
    }

    /// The partitions with a committed offset or an offset in an open transaction.
    pub fn offset_partitions(&self) -> Vec<(String, i32)> {
        let mut keys: Vec<(String, i32)> = self
            .offsets
            .keys()
            .chain(self.txn_offsets.values().flat_map(|o| o.keys()))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Applies a tombstone of a partition's offset: the committed offset goes, and so does
    /// the partition's offset in every open transaction (their commit will not bring it back),
    /// as when Kafka replays an offset tombstone.
    pub fn remove_offset(&mut self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        self.offsets.remove(&key);
        for pending in self.txn_offsets.values_mut() {
            pending.remove(&key);
        }
    }

    /// Lets time pass: expires members and pending member ids, ends a join phase at its
    /// deadline, removes members that did not sync in time.
    pub fn tick(&mut self, now_ms: i64) -> Effects {
        let mut fx = Effects::default();
        let pending = self.pending.len();
        self.pending.retain(|_, expiry| *expiry > now_ms);
        if self.pending.len() < pending {
            // A member id handed out but never used no longer holds up the join phase.
            self.maybe_complete_join(now_ms, &mut fx);
        }
        let dead: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.alive(now_ms))
            .map(|m| m.id.clone())
            .collect();
        for id in dead {
            self.remove_member(&id, now_ms, &mut fx);
        }
        if self.state == GroupState::PreparingRebalance
            && self.join_deadline_ms.is_some_and(|d| d <= now_ms)
        {
            if self.in_initial_delay && self.new_member_added && self.initial_delay_left_ms > 0 {
                // Initial delayed join: someone joined during the delay, so wait once more
                // (Kafka's InitialDelayedJoin), within the rebalance timeout.
                let more = self.initial_delay_left_ms.min(self.initial_delay_ms);
                self.initial_delay_left_ms -= more;
                self.new_member_added = false;
                self.join_deadline_ms = Some(now_ms + more);
            } else {
                self.complete_join(now_ms, &mut fx);
            }
        }
        if self.state == GroupState::CompletingRebalance
            && self.sync_deadline_ms.is_some_and(|d| d <= now_ms)
        {
            let lagging: Vec<String> = self
                .members
                .values()
                .filter(|m| !m.awaiting_sync)
                .map(|m| m.id.clone())
                .collect();
            self.sync_deadline_ms = None;
            for id in lagging {
                self.remove_member(&id, now_ms, &mut fx);
            }
            if self.state == GroupState::CompletingRebalance {
                self.prepare_rebalance(now_ms, &mut fx);
                self.maybe_complete_join(now_ms, &mut fx);
            }
        }
        fx
    }

    /// The store of the group's metadata failed: the waiting syncs get an error and the
    /// group rebalances, as Kafka does when it cannot write the assignment.
    pub fn persist_failed(&mut self, now_ms: i64) -> Effects {
        let mut fx = Effects::default();
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now_ms, &mut fx);
            self.maybe_complete_join(now_ms, &mut fx);
        }
        fx
    }

    /// Marks the group deleted.
    pub fn mark_dead(&mut self, now_ms: i64) {
        self.set_state(GroupState::Dead, now_ms);
        self.offsets.clear();
        self.txn_offsets.clear();
    }

    /// Rebuilds a group from its stored metadata (start-up). Members come back in the stored
    /// generation; they must heartbeat within their session timeout from `now_ms` or are
    /// expired, as after a coordinator move in Kafka.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        &mut self,
        protocol_type: String,
        generation: i32,
        protocol: Option<String>,
        leader: Option<String>,
        state_since_ms: i64,
        members: Vec<Member>,
        now_ms: i64,
    ) {
        self.protocol_type = (!protocol_type.is_empty()).then_some(protocol_type);
        self.generation = generation;
        self.protocol = protocol;
        self.leader = leader;
        self.members.clear();
        self.static_members.clear();
        for mut m in members {
            m.last_heartbeat_ms = now_ms;
            m.awaiting_join = false;
            m.awaiting_sync = false;
            m.is_new = false;
            if let Some(instance) = &m.instance_id {
                self.static_members.insert(instance.clone(), m.id.clone());
            }
            self.members.insert(m.id.clone(), m);
        }
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.state_since_ms = if state_since_ms > 0 {
            state_since_ms
        } else {
            now_ms
        };
    }

    /// Offsets that expire at `now_ms` under Kafka's rule (KIP-211): only a group without
    /// members loses offsets; an explicit expiry wins, otherwise the offset lives
    /// `retention_ms` from the moment the group became empty (or from the commit, for a group
    /// that never had members).
    pub fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
        if self.state != GroupState::Empty {
            return Vec::new();
        }
        self.offsets
            .iter()
            // An offset that an open transaction is about to replace stays until it ends.
            .filter(|((t, p), _)| !self.has_pending_txn_offset(t, *p))
            .filter(|(_, o)| match o.expire_timestamp_ms {
                Some(expiry) => expiry <= now_ms,
                None => {
                    let base = if self.protocol_type.is_some() {
                        self.state_since_ms.max(o.commit_timestamp_ms)
                    } else {
                        o.commit_timestamp_ms
                    };
                    base + retention_ms <= now_ms
                }
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The answer to a JoinGroup of `member_id` in the current generation.
    fn join_reply_for(&self, member_id: &str, skip_assignment: bool) -> JoinReply {
        let protocol = self.protocol.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinReply {
            error: errors::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            skip_assignment,
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), i16> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                Some(id) if id != member_id => return Err(errors::FENCED_INSTANCE_ID),
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(errors::UNKNOWN_MEMBER_ID);
        }
        Ok(())
    }

    fn is_full(&self, limits: &GroupLimits, req: &JoinRequest) -> bool {
        // A static member replacing itself does not grow the group.
        if req
            .instance_id
            .as_ref()
            .is_some_and(|i| self.static_members.contains_key(i))
        {
            return false;
        }
        self.members.len() + self.pending.len() >= limits.max_size as usize
    }

    /// Kafka's `supportsProtocols`: an empty group takes any non-empty protocol type and
    /// list; otherwise the type must match and at least one protocol must be one that every
    /// member supports.
    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    fn add_member_and_rebalance(
        &mut self,
        id: String,
        req: JoinRequest,
        now_ms: i64,
        fx: &mut Effects,
    ) -> JoinOutcome {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(instance) = &req.instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocol_type: req.protocol_type,
                protocols: req.protocols,
                assignment: Bytes::new(),
                awaiting_join: true,
                awaiting_sync: false,
                is_new: self.state == GroupState::PreparingRebalance,
                last_heartbeat_ms: now_ms,
            },
        );
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        self.new_member_added = true;
        self.prepare_rebalance(now_ms, fx);
        self.maybe_complete_join(now_ms, fx);
        JoinOutcome::Wait(id)
    }

    fn update_member(&mut self, member_id: &str, req: &JoinRequest, now_ms: i64) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.protocols = req.protocols.clone();
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.client_id = req.client_id.clone();
            m.client_host = req.client_host.clone();
            m.awaiting_join = true;
            m.last_heartbeat_ms = now_ms;
        }
    }

    /// A static member rejoins with a new member id (a restarted process): the old id is
    /// fenced, the new one takes its place and its assignment.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        req: JoinRequest,
        now_ms: i64,
    ) -> (JoinOutcome, Effects) {
        let mut fx = Effects::default();
        let Some(mut member) = self.members.remove(old_id) else {
            return (
                JoinOutcome::Reply(JoinReply::error(errors::UNKNOWN_MEMBER_ID, &req.member_id)),
                fx,
            );
        };
        if member.awaiting_join {
            fx.joins.push((
                old_id.to_string(),
                JoinReply::error(errors::FENCED_INSTANCE_ID, old_id),
            ));
        }
        if member.awaiting_sync {
            fx.syncs.push((
                old_id.to_string(),
                SyncReply::error(errors::FENCED_INSTANCE_ID),
            ));
        }
        let new_id = req.new_member_id.clone();
        let same = member.same_protocols(&req.protocols);
        member.id = new_id.clone();
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.protocols = req.protocols.clone();
        member.last_heartbeat_ms = now_ms;
        member.awaiting_sync = false;
        member.awaiting_join = false;
        if let Some(instance) = &req.instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        let was_leader = self.leader.as_deref() == Some(old_id);
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        match self.state {
            GroupState::Stable if same => {
                // Nothing about the group changed: the member gets the current generation and
                // then its old assignment through SyncGroup, without a rebalance.
                fx.persist = true;
                let skip = was_leader && req.supports_skip_assignment;
                let mut reply = self.join_reply_for(&new_id, skip);
                if was_leader && !req.supports_skip_assignment {
                    // An old client cannot skip the assignment; it must not recompute one in
                    // the middle of a stable generation either, so it gets no member list.
                    reply.members.clear();
                }
                (JoinOutcome::Reply(reply), fx)
            }
            _ => {
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.awaiting_join = true;
                }
                self.prepare_rebalance(now_ms, &mut fx);
                self.maybe_complete_join(now_ms, &mut fx);
                (JoinOutcome::Wait(new_id), fx)
            }
        }
    }

    fn remove_member(&mut self, member_id: &str, now_ms: i64, fx: &mut Effects) {
        let Some(m) = self.members.remove(member_id) else {
            return;
        };
        if let Some(instance) = &m.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if m.awaiting_join {
            fx.joins.push((
                member_id.to_string(),
                JoinReply::error(errors::UNKNOWN_MEMBER_ID, member_id),
            ));
        }
        if m.awaiting_sync {
            fx.syncs.push((
                member_id.to_string(),
                SyncReply::error(errors::UNKNOWN_MEMBER_ID),
            ));
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, fx);
                self.maybe_complete_join(now_ms, fx);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, fx),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn prepare_rebalance(&mut self, now_ms: i64, fx: &mut Effects) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        if self.state == GroupState::CompletingRebalance {
            // Members waiting for an assignment of a generation that will never be stable.
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if m.awaiting_sync {
                    m.awaiting_sync = false;
                    fx.syncs.push((
                        m.id.clone(),
                        SyncReply::error(errors::REBALANCE_IN_PROGRESS),
                    ));
                }
            }
            self.sync_deadline_ms = None;
        }
        let rebalance_timeout = self.rebalance_timeout_ms();
        if self.state == GroupState::Empty && self.initial_delay_ms > 0 {
            // Initial delayed join: wait a little for more members before the first
            // generation, so that a fleet starting together does not rebalance once per
            // member.
            let delay = self.initial_delay_ms.min(rebalance_timeout);
            self.in_initial_delay = true;
            self.initial_delay_left_ms = (rebalance_timeout - delay).max(0);
            self.new_member_added = false;
            self.join_deadline_ms = Some(now_ms + delay);
        } else {
            self.in_initial_delay = false;
            self.initial_delay_left_ms = 0;
            self.new_member_added = false;
            self.join_deadline_ms = Some(now_ms + rebalance_timeout);
        }
        self.set_state(GroupState::PreparingRebalance, now_ms);
    }

    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    /// Ends the join phase once every member has rejoined and no handed-out member id is
    /// still pending; the initial delay always runs its course.
    fn maybe_complete_join(&mut self, now_ms: i64, fx: &mut Effects) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join);
        if self.members.is_empty() || (all_joined && !self.in_initial_delay) {
            self.complete_join(now_ms, fx);
        }
    }

    fn complete_join(&mut self, now_ms: i64, fx: &mut Effects) {
        // Dynamic members that did not rejoin in time are out; static ones keep their place
        // and are expired by their session timeout if they are really gone.
        let stale: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in stale {
            if let Some(m) = self.members.remove(&id) {
                if m.awaiting_sync {
                    fx.syncs
                        .push((id.clone(), SyncReply::error(errors::UNKNOWN_MEMBER_ID)));
                }
            }
        }
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .find(|m| m.awaiting_join)
                .or_else(|| self.members.values().next())
                .map(|m| m.id.clone());
        }
        self.join_deadline_ms = None;
        self.in_initial_delay = false;
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.set_state(GroupState::Empty, now_ms);
            fx.persist = true;
            return;
        }
        self.protocol = self.select_protocol();
        self.set_state(GroupState::CompletingRebalance, now_ms);
        self.sync_deadline_ms = Some(now_ms + self.rebalance_timeout_ms());
        let ids: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join)
            .map(|m| m.id.clone())
            .collect();
        for id in ids {
            let reply = self.join_reply_for(&id, false);
            fx.joins.push((id.clone(), reply));
            if let Some(m) = self.members.get_mut(&id) {
                m.awaiting_join = false;
                m.is_new = false;
                m.last_heartbeat_ms = now_ms;
            }
        }
    }

    /// Kafka's protocol selection: among the protocols every member supports, each member
    /// votes for the first in its own preference order; most votes wins (ties go to the
    /// protocol the leader prefers).
    fn select_protocol(&self) -> Option<String> {
        let candidates: Vec<&str> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
            .collect();
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m
                .protocols
                .iter()
                .find(|(p, _)| candidates.contains(&p.as_str()))
            {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let leader_order: Vec<&str> = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .map(|m| m.protocols.iter().map(|(n, _)| n.as_str()).collect())
            .unwrap_or_default();
        let rank = |n: &str| {
            leader_order
                .iter()
                .position(|p| *p == n)
                .unwrap_or(usize::MAX)
        };
        votes
            .into_iter()
            .max_by(|(a, va), (b, vb)| va.cmp(vb).then(rank(b).cmp(&rank(a))))
            .map(|(n, _)| n.to_string())
    }

    fn answer_syncs(&mut self, fx: &mut Effects, now_ms: i64) {
        for m in self.members.values_mut() {
            if m.awaiting_sync {
                m.awaiting_sync = false;
                m.last_heartbeat_ms = now_ms;
                fx.syncs.push((
                    m.id.clone(),
                    SyncReply {
                        error: errors::NONE,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol.clone(),
                        assignment: m.assignment.clone(),
                    },
                ));
            }
        }
    }

    fn touch(&mut self, member_id: &str, now_ms: i64) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat_ms = now_ms;
        }
    }

    fn set_state(&mut self, state: GroupState, now_ms: i64) {
        if self.state != state {
            self.state = state;
            self.state_since_ms = now_ms;
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
