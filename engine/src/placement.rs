//! The placement table: which shard is the home of each partition.
//!
//! Every partition has exactly one home shard, and `PlacementTable::shard_for` is the only way to
//! find it. The table is control-plane state with a single writer (the control shard); the other
//! shards hold read-only snapshots that the writer replaces by message. A snapshot is immutable
//! and `Send + Sync`, so the same `Arc` can be handed to every core.
//!
//! New partitions are placed round-robin by load: each goes to the shard that currently owns
//! the fewest partitions (ties broken by the lowest shard id), so a topic's partitions spread
//! across cores and topics created later fill the emptier cores first.

use std::collections::HashMap;
use std::sync::Arc;

use crate::types::{ShardId, TopicPartition};

/// An immutable snapshot of partition → home shard. Usable on any core.
#[derive(Clone, Debug)]
pub struct PlacementTable {
    nr_shards: u32,
    homes: HashMap<TopicPartition, ShardId>,
    load: Vec<u32>,
}

impl PlacementTable {
    /// An empty table for `nr_shards` shards (at least one).
    pub fn new(nr_shards: u32) -> PlacementTable {
        let nr_shards = nr_shards.max(1);
        PlacementTable {
            nr_shards,
            homes: HashMap::new(),
            load: vec![0; nr_shards as usize],
        }
    }

    /// The number of shards this table places partitions on.
    pub fn nr_shards(&self) -> u32 {
        self.nr_shards
    }

    /// The home shard of a partition, or `None` if the partition is not placed.
    pub fn shard_for(&self, tp: &TopicPartition) -> Option<ShardId> {
        self.homes.get(tp).copied()
    }

    /// How many partitions each shard owns, indexed by shard id.
    pub fn load(&self) -> &[u32] {
        &self.load
    }

    /// All placed partitions with their homes, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&TopicPartition, ShardId)> {
        self.homes.iter().map(|(tp, s)| (tp, *s))
    }

    /// The partitions whose home is `shard`.
    pub fn partitions_of(&self, shard: ShardId) -> Vec<TopicPartition> {
        let mut tps: Vec<TopicPartition> = self
            .homes
            .iter()
            .filter(|(_, s)| **s == shard)
            .map(|(tp, _)| tp.clone())
            .collect();
        tps.sort();
        tps
    }

    /// Places each not-yet-placed partition on the least-loaded shard; already placed ones keep
    /// their home. Returns the homes of `tps`, in the same order.
    pub fn place(&mut self, tps: &[TopicPartition]) -> Vec<ShardId> {
        tps.iter()
            .map(|tp| {
                if let Some(home) = self.homes.get(tp) {
                    return *home;
                }
                let home = self.least_loaded();
                self.insert(tp.clone(), home);
                home
            })
            .collect()
    }

    /// Places a partition on a given shard (used when restoring a recorded placement). A shard
    /// id beyond the current shard count (the broker restarted with fewer cores) is folded onto
    /// the existing shards.
    pub fn insert(&mut self, tp: TopicPartition, home: ShardId) {
        let home = ShardId(home.0 % self.nr_shards);
        if let Some(old) = self.homes.insert(tp, home) {
            self.load[old.0 as usize] -= 1;
        }
        self.load[home.0 as usize] += 1;
    }

    /// Removes every partition of `topic`; returns how many were removed.
    pub fn remove_topic(&mut self, topic: &str) -> usize {
        let gone: Vec<TopicPartition> = self
            .homes
            .keys()
            .filter(|tp| &*tp.topic == topic)
            .cloned()
            .collect();
        for tp in &gone {
            if let Some(home) = self.homes.remove(tp) {
                self.load[home.0 as usize] -= 1;
            }
        }
        gone.len()
    }

    /// Freezes this table into a snapshot that can be shared with every shard.
    pub fn snapshot(&self) -> Arc<PlacementTable> {
        Arc::new(self.clone())
    }

    fn least_loaded(&self) -> ShardId {
        let (idx, _) = self
            .load
            .iter()
            .enumerate()
            .min_by_key(|(i, load)| (**load, *i))
            .unwrap_or((0, &0));
        ShardId(idx as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tps(topic: &str, n: i32) -> Vec<TopicPartition> {
        (0..n).map(|p| TopicPartition::new(topic, p)).collect()
    }

    #[test]
    fn partitions_spread_round_robin_by_load() {
        let mut t = PlacementTable::new(3);
        let homes = t.place(&tps("a", 5));
        assert_eq!(
            homes,
            vec![ShardId(0), ShardId(1), ShardId(2), ShardId(0), ShardId(1)]
        );
        // Shard 2 is the emptiest now, so the next topic starts there.
        let homes = t.place(&tps("b", 2));
        assert_eq!(homes, vec![ShardId(2), ShardId(0)]);
        assert_eq!(t.load(), &[3, 2, 2]);
    }

    #[test]
    fn placing_again_keeps_the_home() {
        let mut t = PlacementTable::new(2);
        let first = t.place(&tps("a", 4));
        let again = t.place(&tps("a", 4));
        assert_eq!(first, again);
        assert_eq!(t.load(), &[2, 2]);
    }

    #[test]
    fn removing_a_topic_frees_its_load() {
        let mut t = PlacementTable::new(2);
        t.place(&tps("a", 3));
        t.place(&tps("b", 1));
        assert_eq!(t.remove_topic("a"), 3);
        assert_eq!(t.load().iter().sum::<u32>(), 1);
        assert_eq!(t.shard_for(&TopicPartition::new("a", 0)), None);
        assert!(t.shard_for(&TopicPartition::new("b", 0)).is_some());
    }

    #[test]
    fn restored_homes_fold_onto_fewer_shards() {
        let mut t = PlacementTable::new(2);
        t.insert(TopicPartition::new("a", 0), ShardId(5));
        assert_eq!(t.shard_for(&TopicPartition::new("a", 0)), Some(ShardId(1)));
        t.insert(TopicPartition::new("a", 0), ShardId(0));
        assert_eq!(t.load(), &[1, 0]);
    }

    #[test]
    fn partitions_of_lists_a_shards_partitions_sorted() {
        let mut t = PlacementTable::new(2);
        t.place(&tps("a", 4));
        assert_eq!(
            t.partitions_of(ShardId(1)),
            vec![TopicPartition::new("a", 1), TopicPartition::new("a", 3)]
        );
    }
}
