//! A bounded in-memory cache of rendered responses, sharded so concurrent requests rarely meet
//! on one lock.
//!
//! Each shard evicts first-in-first-out once it holds its share of the capacity. Values are
//! [`Bytes`], so a hit is a reference-count increment. Misses compute outside the lock: two
//! requests for the same cold key may both compute it, and the first insert wins.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use prometheus::{IntCounter, IntGauge};

use crate::metrics::Metrics;

/// What is cached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// An item by id.
    Item(u64),
    /// A search by (lower-cased query, result limit).
    Search(Box<str>, u8),
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Key, Bytes>,
    order: VecDeque<Key>,
    capacity: usize,
}

/// The cache; cheap operations, safe to share.
#[derive(Debug)]
pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    capacity: usize,
    entries: IntGauge,
    hits: IntCounter,
    misses: IntCounter,
}

const MAX_SHARDS: usize = 16;

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cache {
    /// A cache holding at most `capacity` entries (0 disables caching: every lookup misses).
    pub fn new(capacity: usize, metrics: &Metrics) -> Cache {
        let n = capacity.clamp(1, MAX_SHARDS);
        let shards = (0..n)
            .map(|i| {
                Mutex::new(Shard {
                    capacity: capacity / n + usize::from(i < capacity % n),
                    ..Shard::default()
                })
            })
            .collect();
        metrics
            .cache_capacity
            .set(i64::try_from(capacity).unwrap_or(i64::MAX));
        Cache {
            shards,
            hasher: RandomState::new(),
            capacity,
            entries: metrics.cache_entries.clone(),
            hits: metrics.cache_hits.clone(),
            misses: metrics.cache_misses.clone(),
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        let h = self.hasher.hash_one(key);
        &self.shards[(h % self.shards.len() as u64) as usize]
    }

    /// The cached value for `key`, or `compute()`'s result, cached. Returns whether it was a hit.
    pub fn get_or_insert_with(&self, key: Key, compute: impl FnOnce() -> Bytes) -> (Bytes, bool) {
        let shard = self.shard(&key);
        if let Some(v) = lock(shard).map.get(&key) {
            self.hits.inc();
            return (v.clone(), true);
        }
        self.misses.inc();
        let value = compute();
        let mut s = lock(shard);
        if s.capacity == 0 {
            return (value, false);
        }
        if let Some(existing) = s.map.get(&key) {
            return (existing.clone(), false);
        }
        if s.map.len() >= s.capacity
            && let Some(oldest) = s.order.pop_front()
        {
            s.map.remove(&oldest);
            self.entries.dec();
        }
        s.order.push_back(key.clone());
        s.map.insert(key, value.clone());
        self.entries.inc();
        (value, false)
    }

    /// Drops every entry and returns how many there were.
    pub fn clear(&self) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut s = lock(shard);
            dropped += s.map.len();
            s.map.clear();
            s.order.clear();
        }
        self.entries.sub(i64::try_from(dropped).unwrap_or(i64::MAX));
        dropped
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: u64) -> Bytes {
        Bytes::from(n.to_string())
    }

    #[test]
    fn hits_misses_and_the_bound() {
        let m = Metrics::new("t");
        let c = Cache::new(10, &m);
        for i in 0..100 {
            c.get_or_insert_with(Key::Item(i), || value(i));
        }
        assert!(c.len() <= 10, "{}", c.len());
        assert_eq!(m.cache_entries.get(), c.len() as i64);
        assert_eq!(m.cache_misses.get(), 100);
        let (v, hit) = c.get_or_insert_with(Key::Item(99), || value(0));
        assert!(hit);
        assert_eq!(v, value(99));
        assert_eq!(m.cache_hits.get(), 1);
    }

    #[test]
    fn clear_reports_what_it_dropped() {
        let m = Metrics::new("t");
        let c = Cache::new(100, &m);
        for i in 0..7 {
            c.get_or_insert_with(Key::Item(i), || value(i));
        }
        assert_eq!(c.clear(), 7);
        assert!(c.is_empty());
        assert_eq!(m.cache_entries.get(), 0);
        assert_eq!(c.clear(), 0);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let m = Metrics::new("t");
        let c = Cache::new(0, &m);
        let (_, hit) = c.get_or_insert_with(Key::Item(1), || value(1));
        assert!(!hit);
        let (_, hit) = c.get_or_insert_with(Key::Item(1), || value(1));
        assert!(!hit);
        assert!(c.is_empty());
    }
}
