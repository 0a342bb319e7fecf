//! Topics: the control-plane record of which topics exist, their ids, partition counts, config
//! overrides and where each partition lives.
//!
//! There is one writer: the `TopicStore` on shard 0 (the control shard). Every change is made
//! there, written durably to `<data-dir>/__cluster/topics.json` (a temporary file, fsync,
//! rename, directory fsync: a crash leaves the old or the new file, never a torn one), and only
//! then published as a new immutable `TopicsSnapshot` to every shard, each of which opens or
//! closes the partitions whose home it is. Readers on any core use their shard's latest
//! snapshot and never lock anything.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_engine::config::LogConfig;
use sluice_engine::placement::PlacementTable;
use sluice_engine::types::{ShardId, TopicPartition};
use sluice_protocol::Uuid;

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most partitions one topic may have.
pub const TOPIC_PARTITIONS_MAX: i32 = 100_000;

/// One topic as every shard sees it. Immutable; replaced as a whole when it changes.
#[derive(Debug, Clone)]
pub struct TopicMeta {
    pub name: Arc<str>,
    pub id: Uuid,
    pub partitions: i32,
    /// Config overrides set on the topic (Kafka names → values), as given by the user.
    pub configs: BTreeMap<String, String>,
    /// The log settings those overrides produce.
    pub log_config: Arc<LogConfig>,
    pub internal: bool,
}

/// An immutable view of all topics and their placement, shared by every shard.
#[derive(Debug, Clone)]
pub struct TopicsSnapshot {
    /// Increases with every change; a shard ignores a snapshot older than the one it has.
    pub version: u64,
    pub topics: BTreeMap<Arc<str>, Arc<TopicMeta>>,
    pub by_id: HashMap<Uuid, Arc<str>>,
    pub placement: Arc<PlacementTable>,
}

impl TopicsSnapshot {
    /// An empty snapshot for `nr_shards` shards.
    pub fn empty(nr_shards: u32) -> TopicsSnapshot {
        TopicsSnapshot {
            version: 0,
            topics: BTreeMap::new(),
            by_id: HashMap::new(),
            placement: PlacementTable::new(nr_shards).snapshot(),
        }
    }

    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    /// The topic with id `id`.
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMeta>> {
        self.by_id.get(id).and_then(|name| self.topics.get(name))
    }

    /// The home shard of a partition, if the topic and partition exist.
    pub fn shard_for(&self, tp: &TopicPartition) -> Option<ShardId> {
        self.placement.shard_for(tp)
    }

    /// Checks that a topic could be created in this snapshot: a valid name that neither exists
    /// nor collides with an existing one, a valid partition count and valid configs.
    pub fn check_create(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        validate_topic_name(name)?;
        if self.topics.contains_key(name) {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        // Kafka refuses names that differ only in '.' versus '_', because both map to the same
        // metric names; a client that relies on that rule must see the same refusal here.
        if let Some(existing) = self.colliding_topic(name) {
            return Err(TopicError::InvalidName(format!(
                "topic '{name}' collides with existing topic '{existing}' ('.' and '_' are \
                 treated as the same character in topic names)"
            )));
        }
        check_partition_count(partitions)?;
        log_config_for(configs)?;
        Ok(())
    }

    /// An existing topic whose name equals `name` once every '.' is read as '_', if any.
    pub fn colliding_topic(&self, name: &str) -> Option<&Arc<str>> {
        if !name.contains(['.', '_']) {
            return None;
        }
        let key = name.replace('.', "_");
        self.topics
            .keys()
            .find(|existing| existing.as_ref() != name && existing.replace('.', "_") == key)
    }
}

/// Why a topic change was refused; each maps to one Kafka error code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TopicError {
    #[error("topic '{0}' already exists")]
    AlreadyExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("topic id {0} does not exist")]
    UnknownTopicId(String),
    #[error("cannot persist topic metadata: {0}")]
    Storage(String),
}

impl TopicError {
    /// The Kafka error code for this refusal.
    pub fn kafka_code(&self) -> i16 {
        use crate::errors::*;
        match self {
            TopicError::AlreadyExists(_) => TOPIC_ALREADY_EXISTS,
            TopicError::UnknownTopic(_) => UNKNOWN_TOPIC_OR_PARTITION,
            TopicError::InvalidName(_) => INVALID_TOPIC_EXCEPTION,
            TopicError::InvalidPartitions(_) => INVALID_PARTITIONS,
            TopicError::InvalidReplicationFactor(_) => INVALID_REPLICATION_FACTOR,
            TopicError::InvalidConfig(_) => INVALID_CONFIG,
            TopicError::InvalidReplicaAssignment(_) => INVALID_REPLICA_ASSIGNMENT,
            TopicError::InvalidRequest(_) => INVALID_REQUEST,
            TopicError::UnknownTopicId(_) => UNKNOWN_TOPIC_ID,
            TopicError::Storage(_) => KAFKA_STORAGE_ERROR,
        }
    }
}

/// Checks a topic name against Kafka's rules: 1..=249 characters of `[a-zA-Z0-9._-]`, and not
/// `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let bad = |why: &str| {
        Err(TopicError::InvalidName(format!(
            "topic name '{name}' {why}"
        )))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name == "." || name == ".." {
        return bad("cannot be '.' or '..'");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return bad(&format!("is longer than {TOPIC_NAME_BYTES_MAX} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!(
            "contains '{c}'; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// The single writer of topic metadata. Owned by the control shard (shard 0).
pub struct TopicStore {
    path: PathBuf,
    current: TopicsSnapshot,
    placement: PlacementTable,
}

/// The on-disk form of the store.
#[derive(Serialize, Deserialize, Default)]
struct StoredTopics {
    version: u64,
    topics: Vec<StoredTopic>,
}

#[derive(Serialize, Deserialize)]
struct StoredTopic {
    name: String,
    id: String,
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
    #[serde(default)]
    internal: bool,
    /// Home shard of each partition, by partition index.
    #[serde(default)]
    homes: Vec<u32>,
}

impl TopicStore {
    /// Loads the store from `<data_dir>/__cluster/topics.json` (empty if missing).
    pub fn open(data_dir: &Path, nr_shards: u32) -> Result<TopicStore, TopicError> {
        let dir = data_dir.join("__cluster");
        std::fs::create_dir_all(&dir).map_err(|e| storage("create", &dir, e))?;
        let path = dir.join("topics.json");
        let stored: StoredTopics = match File::open(&path) {
            Ok(mut f) => {
                let mut text = String::new();
                f.read_to_string(&mut text)
                    .map_err(|e| storage("read", &path, e))?;
                serde_json::from_str(&text).map_err(|e| {
                    TopicError::Storage(format!("{} is not valid: {e}", path.display()))
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoredTopics::default(),
            Err(e) => return Err(storage("open", &path, e)),
        };
        let mut placement = PlacementTable::new(nr_shards);
        let mut snapshot = TopicsSnapshot::empty(nr_shards);
        snapshot.version = stored.version;
        for t in stored.topics {
            let id = parse_uuid(&t.id).ok_or_else(|| {
                TopicError::Storage(format!("topic {} has a bad id {:?}", t.name, t.id))
            })?;
            let log_config = log_config_for(&t.configs)?;
            let name: Arc<str> = Arc::from(t.name.as_str());
            for p in 0..t.partitions {
                let tp = TopicPartition {
                    topic: name.clone(),
                    partition: p,
                };
                match t.homes.get(p as usize) {
                    Some(home) => placement.insert(tp, ShardId(*home)),
                    None => {
                        placement.place(&[tp]);
                    }
                }
            }
            snapshot.by_id.insert(id, name.clone());
            snapshot.topics.insert(
                name.clone(),
                Arc::new(TopicMeta {
                    name,
                    id,
                    partitions: t.partitions,
                    configs: t.configs,
                    log_config,
                    internal: t.internal,
                }),
            );
        }
        snapshot.placement = placement.snapshot();
        Ok(TopicStore {
            path,
            current: snapshot,
            placement,
        })
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<TopicsSnapshot> {
        Arc::new(self.current.clone())
    }

    /// The latest snapshot, borrowed (no copy).
    pub fn current(&self) -> &TopicsSnapshot {
        &self.current
    }

    /// Checks that a topic could be created, without creating it (`validate_only`).
    pub fn check_create(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        self.current.check_create(name, partitions, configs)
    }

    /// Creates a topic; returns the new snapshot. Persisted before it returns.
    pub fn create(
        &mut self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        internal: bool,
    ) -> Result<Arc<TopicsSnapshot>, TopicError> {
        self.check_create(name, partitions, &configs)?;
        let log_config = log_config_for(&configs)?;
        let name: Arc<str> = Arc::from(name);
        let id = new_topic_id(&self.current);
        let tps: Vec<TopicPartition> = (0..partitions)
            .map(|p| TopicPartition {
                topic: name.clone(),
                partition: p,
            })
            .collect();
        let mut next = self.current.clone();
        let mut placement = self.placement.clone();
        placement.place(&tps);
        next.version += 1;
        next.by_id.insert(id, name.clone());
        next.topics.insert(
            name.clone(),
            Arc::new(TopicMeta {
                name,
                id,
                partitions,
                configs,
                log_config,
                internal,
            }),
        );
        next.placement = placement.snapshot();
        self.commit(next, placement)
    }

    /// Deletes a topic; returns the new snapshot. Persisted before it returns.
    pub fn delete(&mut self, name: &str) -> Result<Arc<TopicsSnapshot>, TopicError> {
        let Some(meta) = self.current.topics.get(name).cloned() else {
            return Err(TopicError::UnknownTopic(name.to_string()));
        };
        let mut next = self.current.clone();
        let mut placement = self.placement.clone();
        placement.remove_topic(name);
        next.version += 1;
        next.topics.remove(name);
        next.by_id.remove(&meta.id);
        next.placement = placement.snapshot();
        self.commit(next, placement)
    }

    /// Raises a topic's partition count to `total`; returns the new snapshot.
    pub fn add_partitions(
        &mut self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<Arc<TopicsSnapshot>, TopicError> {
        let Some(meta) = self.current.topics.get(name).cloned() else {
            return Err(TopicError::UnknownTopic(name.to_string()));
        };
        if total <= meta.partitions {
            return Err(TopicError::InvalidPartitions(format!(
                "topic '{name}' has {} partitions; the new count {total} must be larger",
                meta.partitions
            )));
        }
        check_partition_count(total)?;
        if validate_only {
            return Ok(self.snapshot());
        }
        let tps: Vec<TopicPartition> = (meta.partitions..total)
            .map(|p| TopicPartition {
                topic: meta.name.clone(),
                partition: p,
            })
            .collect();
        let mut next = self.current.clone();
        let mut placement = self.placement.clone();
        placement.place(&tps);
        next.version += 1;
        next.topics.insert(
            meta.name.clone(),
            Arc::new(TopicMeta {
                partitions: total,
                ..(*meta).clone()
            }),
        );
        next.placement = placement.snapshot();
        self.commit(next, placement)
    }

    /// Replaces a topic's config overrides (already merged by the caller); returns the new
    /// snapshot. Invalid values are refused with INVALID_CONFIG and nothing changes.
    pub fn set_configs(
        &mut self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<TopicsSnapshot>, TopicError> {
        let Some(meta) = self.current.topics.get(name).cloned() else {
            return Err(TopicError::UnknownTopic(name.to_string()));
        };
        let mut log_config = log_config_for(&configs)?;
        if validate_only {
            return Ok(self.snapshot());
        }
        // Keep the very same settings object when the log settings did not change, so shards
        // see at a glance that their open partitions need nothing.
        if *log_config == *meta.log_config {
            log_config = meta.log_config.clone();
        }
        let mut next = self.current.clone();
        next.version += 1;
        next.topics.insert(
            meta.name.clone(),
            Arc::new(TopicMeta {
                configs,
                log_config,
                ..(*meta).clone()
            }),
        );
        let placement = self.placement.clone();
        self.commit(next, placement)
    }

    fn commit(
        &mut self,
        next: TopicsSnapshot,
        placement: PlacementTable,
    ) -> Result<Arc<TopicsSnapshot>, TopicError> {
        self.persist(&next)?;
        self.current = next;
        self.placement = placement;
        Ok(self.snapshot())
    }

    fn persist(&self, snapshot: &TopicsSnapshot) -> Result<(), TopicError> {
        let stored = StoredTopics {
            version: snapshot.version,
            topics: snapshot
                .topics
                .values()
                .map(|t| StoredTopic {
                    name: t.name.to_string(),
                    id: format_uuid(&t.id),
                    partitions: t.partitions,
                    configs: t.configs.clone(),
                    internal: t.internal,
                    homes: (0..t.partitions)
                        .map(|p| {
                            let tp = TopicPartition {
                                topic: t.name.clone(),
                                partition: p,
                            };
                            snapshot.placement.shard_for(&tp).map_or(0, |s| s.0)
                        })
                        .collect(),
                })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&stored)
            .map_err(|e| TopicError::Storage(format!("cannot serialize topics: {e}")))?;
        write_atomically(&self.path, text.as_bytes())
    }
}

/// Builds the log settings for a topic's config overrides; unknown or invalid keys are
/// INVALID_CONFIG. Settings that are not log settings are checked by `topic_configs`.
pub fn log_config_for(configs: &BTreeMap<String, String>) -> Result<Arc<LogConfig>, TopicError> {
    let mut c = LogConfig::default();
    for (k, v) in configs {
        if sluice_engine::config::CONFIG_NAMES.contains(&k.as_str()) {
            c.set(k, v)
                .map_err(|e| TopicError::InvalidConfig(e.to_string()))?;
        } else {
            crate::topic_configs::validate_non_log_config(k, v)?;
        }
    }
    Ok(Arc::new(c))
}

/// Checks a topic's partition count against Kafka's limits.
pub fn check_partition_count(partitions: i32) -> Result<(), TopicError> {
    if !(1..=TOPIC_PARTITIONS_MAX).contains(&partitions) {
        return Err(TopicError::InvalidPartitions(format!(
            "number of partitions {partitions} must be between 1 and {TOPIC_PARTITIONS_MAX}"
        )));
    }
    Ok(())
}

fn storage(what: &str, path: &Path, e: std::io::Error) -> TopicError {
    TopicError::Storage(format!("cannot {what} {}: {e}", path.display()))
}

/// Writes `data` to `path` so that a crash leaves either the old or the new contents.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), TopicError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| storage("create", &tmp, e))?;
    f.write_all(data).map_err(|e| storage("write", &tmp, e))?;
    f.sync_all().map_err(|e| storage("sync", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| storage("rename", &tmp, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| storage("sync", dir, e))?;
    }
    Ok(())
}

/// A fresh random topic id, never the zero id and never one in use.
fn new_topic_id(current: &TopicsSnapshot) -> Uuid {
    loop {
        let mut bytes = [0u8; 16];
        if File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .is_err()
        {
            // No urandom: fall back to time and a counter, still unique within this store.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes = (nanos ^ (u128::from(current.version) << 64)).to_be_bytes();
        }
        let id = Uuid(bytes);
        if id != Uuid([0; 16]) && !current.by_id.contains_key(&id) {
            return id;
        }
    }
}

fn format_uuid(id: &Uuid) -> String {
    id.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_uuid(text: &str) -> Option<Uuid> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Uuid(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn topic_names_follow_kafkas_rules() {
        for ok in ["a", "orders.v1", "A_b-C", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "ü", "a/b", &"x".repeat(250)] {
            assert!(
                matches!(validate_topic_name(bad), Err(TopicError::InvalidName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn changes_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TopicStore::open(dir.path(), 2).unwrap();
        store
            .create("a", 3, cfg(&[("retention.ms", "1000")]), false)
            .unwrap();
        store.create("b", 1, BTreeMap::new(), false).unwrap();
        store.add_partitions("b", 4, false).unwrap();
        store.delete("a").unwrap();
        let snap = store.snapshot();
        let b_id = snap.topic("b").unwrap().id;
        let homes: Vec<_> = (0..4)
            .map(|p| snap.shard_for(&TopicPartition::new("b", p)))
            .collect();

        let reopened = TopicStore::open(dir.path(), 2).unwrap().snapshot();
        assert!(reopened.topic("a").is_none());
        let b = reopened.topic("b").unwrap();
        assert_eq!((b.partitions, b.id), (4, b_id));
        assert_eq!(reopened.topic_by_id(&b_id).unwrap().name.as_ref(), "b");
        let reopened_homes: Vec<_> = (0..4)
            .map(|p| reopened.shard_for(&TopicPartition::new("b", p)))
            .collect();
        assert_eq!(homes, reopened_homes);
        assert_eq!(reopened.version, snap.version);
    }

    #[test]
    fn refusals_carry_the_right_codes_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TopicStore::open(dir.path(), 1).unwrap();
        store.create("t", 2, BTreeMap::new(), false).unwrap();
        let before = store.snapshot().version;
        let code = |r: Result<Arc<TopicsSnapshot>, TopicError>| r.unwrap_err().kafka_code();
        assert_eq!(code(store.create("t", 1, BTreeMap::new(), false)), 36);
        assert_eq!(
            code(store.create("bad name", 1, BTreeMap::new(), false)),
            17
        );
        assert_eq!(code(store.create("u", 0, BTreeMap::new(), false)), 37);
        assert_eq!(
            code(store.create("u", 1, cfg(&[("retention.ms", "soon")]), false)),
            40
        );
        assert_eq!(
            code(store.create("u", 1, cfg(&[("no.such", "1")]), false)),
            40
        );
        assert_eq!(code(store.add_partitions("t", 2, false)), 37);
        assert_eq!(code(store.delete("nope")), 3);
        assert_eq!(store.snapshot().version, before);
        assert!(store.snapshot().topic("u").is_none());
    }

    #[test]
    fn names_differing_only_in_dot_and_underscore_collide() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TopicStore::open(dir.path(), 1).unwrap();
        store.create("a.b_c", 1, BTreeMap::new(), false).unwrap();
        for colliding in ["a_b_c", "a.b.c", "a_b.c"] {
            let e = store
                .create(colliding, 1, BTreeMap::new(), false)
                .unwrap_err();
            assert_eq!(e.kafka_code(), 17, "{colliding}");
            assert!(e.to_string().contains("a.b_c"), "{e}");
        }
        assert_eq!(
            store
                .create("a.b_c", 1, BTreeMap::new(), false)
                .unwrap_err()
                .kafka_code(),
            36
        );
        assert!(store.create("a-b-c", 1, BTreeMap::new(), false).is_ok());
    }

    #[test]
    fn unchanged_log_settings_keep_the_same_object() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TopicStore::open(dir.path(), 1).unwrap();
        let before = store
            .create("t", 1, cfg(&[("retention.ms", "5")]), false)
            .unwrap();
        let before = before.topic("t").unwrap().log_config.clone();
        let after = store
            .set_configs(
                "t",
                cfg(&[("retention.ms", "5"), ("min.insync.replicas", "1")]),
                false,
            )
            .unwrap();
        assert!(Arc::ptr_eq(&before, &after.topic("t").unwrap().log_config));
        let changed = store.set_configs("t", BTreeMap::new(), false).unwrap();
        assert_eq!(
            changed.topic("t").unwrap().log_config.retention_ms,
            604_800_000
        );
    }

    #[test]
    fn new_partitions_spread_over_shards() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TopicStore::open(dir.path(), 2).unwrap();
        let snap = store.create("t", 4, BTreeMap::new(), false).unwrap();
        assert_eq!(snap.placement.load(), &[2, 2]);
    }

    #[test]
    fn uuids_round_trip_through_text() {
        let id = Uuid([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xab, 0xcd, 0xef, 0, 0xff, 16]);
        assert_eq!(parse_uuid(&format_uuid(&id)), Some(id));
        assert_eq!(parse_uuid("zz"), None);
    }
}
