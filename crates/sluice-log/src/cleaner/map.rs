//! The cleaner's offset map: key → the latest offset of that key in the
//! dirty section, in a fixed budget of memory (Kafka's `SkimpyOffsetMap`).
//!
//! Keys are not stored, only a 128-bit hash of each (XXH3-128; Kafka uses
//! MD5's 128 bits): two keys colliding would make the cleaner drop the older
//! one's latest record, and with 2^26 keys in a map the chance of any
//! collision is about 2^-76. Each entry is 24 bytes (the hash, and the
//! offset plus one, 0 marking an empty slot) in an open-addressed table of
//! a prime number of slots, probed by double hashing. The table is allocated zeroed,
//! so pages no key lands on are never touched.

use xxhash_rust::xxh3::xxh3_128;

/// Bytes per entry: the 128-bit hash and the offset.
pub const BYTES_PER_ENTRY: usize = 24;

/// A fixed-size map from key hashes to offsets.
#[derive(Debug)]
pub(crate) struct OffsetMap {
    /// `[hash low, hash high, offset + 1]`; offset + 1 == 0 means empty.
    slots: Vec<[u64; 3]>,
    /// Entries allowed before the map counts as full (load factor × slots).
    max_entries: usize,
    entries: usize,
    /// The last offset the map covers: every keyed record at or below it
    /// from where the map started is in it (Kafka's `latestOffset`).
    latest: i64,
}

/// The largest prime ≤ `n` (2 for n < 2).
fn prime_at_most(n: usize) -> usize {
    let is_prime = |m: usize| {
        if m < 4 {
            return m >= 2;
        }
        if m.is_multiple_of(2) {
            return false;
        }
        let mut d = 3usize;
        while d.saturating_mul(d) <= m {
            if m.is_multiple_of(d) {
                return false;
            }
            d += 2;
        }
        true
    };
    (2..=n.max(2)).rev().find(|&m| is_prime(m)).unwrap_or(2)
}

impl OffsetMap {
    /// A map using about `memory` bytes, counting as full at `load_factor` of
    /// its slots (Kafka: `log.cleaner.io.buffer.load.factor`, 0.9). It always
    /// takes at least one key.
    pub fn new(memory: usize, load_factor: f64) -> OffsetMap {
        let n = prime_at_most((memory / BYTES_PER_ENTRY).max(2));
        let max_entries = ((n as f64 * load_factor.clamp(0.0, 1.0)) as usize).clamp(1, n);
        OffsetMap {
            slots: vec![[0u64; 3]; n],
            max_entries,
            entries: 0,
            latest: -1,
        }
    }

    pub fn hash(key: &[u8]) -> u128 {
        xxh3_128(key)
    }

    /// The slot sequence of a hash: h, h + step, h + 2·step, … (mod a prime,
    /// so every slot comes up once in `len` probes).
    fn probe(&self, hash: u128) -> impl Iterator<Item = usize> + use<> {
        let n = self.slots.len() as u64;
        let lo = hash as u64;
        let hi = (hash >> 64) as u64;
        let start = lo % n;
        let step = if n > 1 { 1 + hi % (n - 1) } else { 1 };
        (0..n).map(move |i| ((start + (i as u128 * step as u128 % n as u128) as u64) % n) as usize)
    }

    /// Records `offset` as the latest of `key`. False, changing nothing, when
    /// the key is new and the map is full.
    pub fn put(&mut self, key: &[u8], offset: i64) -> bool {
        let hash = Self::hash(key);
        let (lo, hi) = (hash as u64, (hash >> 64) as u64);
        let mut free = None;
        for slot in self.probe(hash) {
            let e = &self.slots[slot];
            if e[2] == 0 {
                free = Some(slot);
                break;
            }
            if e[0] == lo && e[1] == hi {
                self.slots[slot][2] = offset as u64 + 1;
                self.latest = self.latest.max(offset);
                return true;
            }
        }
        let Some(slot) = free else { return false };
        if self.entries >= self.max_entries {
            return false;
        }
        self.slots[slot] = [lo, hi, offset as u64 + 1];
        self.entries += 1;
        self.latest = self.latest.max(offset);
        true
    }

    /// The latest offset recorded for `key`, or −1.
    pub fn get(&self, key: &[u8]) -> i64 {
        let hash = Self::hash(key);
        let (lo, hi) = (hash as u64, (hash >> 64) as u64);
        for slot in self.probe(hash) {
            let e = &self.slots[slot];
            if e[2] == 0 {
                return -1;
            }
            if e[0] == lo && e[1] == hi {
                return e[2] as i64 - 1;
            }
        }
        -1
    }

    #[cfg(test)]
    pub fn is_full(&self) -> bool {
        self.entries >= self.max_entries
    }

    pub fn latest(&self) -> i64 {
        self.latest
    }

    /// Moves the covered end forward (a batch or segment read without keys).
    pub fn cover_to(&mut self, offset: i64) {
        self.latest = self.latest.max(offset);
    }

    pub fn set_latest(&mut self, offset: i64) {
        self.latest = offset;
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    #[cfg(test)]
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Bytes the table takes.
    pub fn memory(&self) -> usize {
        self.slots.len() * BYTES_PER_ENTRY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        assert_eq!(prime_at_most(0), 2);
        assert_eq!(prime_at_most(10), 7);
        assert_eq!(prime_at_most(13), 13);
        assert_eq!(prime_at_most(5_592_405), 5_592_373);
    }

    #[test]
    fn latest_offset_wins_and_absent_keys_are_minus_one() {
        let mut m = OffsetMap::new(1 << 16, 0.9);
        for i in 0..1000i64 {
            assert!(m.put(format!("k{}", i % 100).as_bytes(), i));
        }
        assert_eq!(m.entries(), 100);
        for k in 0..100i64 {
            assert_eq!(m.get(format!("k{k}").as_bytes()), 900 + k);
        }
        assert_eq!(m.get(b"nope"), -1);
        assert_eq!(m.latest(), 999);
    }

    #[test]
    fn a_full_map_refuses_new_keys_but_updates_old_ones() {
        // 10 entries' worth: 7 slots (the prime), 6 usable at 0.9.
        let mut m = OffsetMap::new(10 * BYTES_PER_ENTRY, 0.9);
        assert_eq!(m.slots(), 7);
        assert_eq!(m.max_entries(), 6);
        for i in 0..6 {
            assert!(m.put(&[i as u8], i));
        }
        assert!(m.is_full());
        assert!(!m.put(b"new", 10), "a new key does not fit");
        assert_eq!(m.latest(), 5, "a refused put moves nothing");
        assert!(m.put(&[2], 11), "an old key is updated in place");
        assert_eq!(m.get(&[2]), 11);
        assert_eq!(m.get(b"new"), -1);
        // Every slot is reachable: fill a map to 100 %.
        let mut full = OffsetMap::new(7 * BYTES_PER_ENTRY, 1.0);
        for i in 0..7 {
            assert!(full.put(&[i], i64::from(i)));
        }
        for i in 0..7 {
            assert_eq!(full.get(&[i]), i64::from(i));
        }
        assert!(!full.put(&[99], 99));
        assert_eq!(full.get(&[99]), -1);
    }

    #[test]
    fn the_smallest_map_still_takes_one_key() {
        let mut m = OffsetMap::new(0, 0.9);
        assert!(m.put(b"a", 1));
        assert!(m.is_full());
        assert!(!m.put(b"b", 2));
    }
}
