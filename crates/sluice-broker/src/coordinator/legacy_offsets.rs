//! The committed-offsets file of Sluice before `__consumer_offsets`:
//! an append-only file of CRC-framed records, one record per OffsetCommit
//! request (all or nothing). A broker now only reads it, once, to migrate a
//! data directory's offsets into `__consumer_offsets` (see
//! `api::coordination`), then renames it `consumer-offsets.log.migrated`.
//! The writer stays for its tests and for the migration tests. On open the
//! file is read up to the first torn or corrupt record and cut there.
//!
//! Record: `[u32 body length][u32 CRC-32C of body][body]`; body: kind u8
//! (1 commit, 2 delete group, 3 delete offsets), then fields (see
//! `encode_commit`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use super::offsets::{CommitEntry, Committed};

/// The longest string the legacy format holds (a u16 length).
const MAX_STRING_BYTES: usize = u16::MAX as usize;

pub const FILE: &str = "consumer-offsets.log";
const COMMIT: u8 = 1;
const DELETE_GROUP: u8 = 2;
const DELETE_OFFSETS: u8 = 3;
/// Rewrite the file once it is this big and mostly superseded records.
const COMPACT_AT: u64 = 64 << 20;

type Key = (String, String, i32);

#[derive(Debug)]
struct State {
    file: File,
    len: u64,
    map: BTreeMap<Key, Committed>,
}

/// The offsets of every group.
#[derive(Debug)]
pub struct LegacyOffsetStore {
    path: PathBuf,
    state: Mutex<State>,
}

fn put_str(out: &mut Vec<u8>, s: &str) -> io::Result<()> {
    let len = u16::try_from(s.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a {}-byte string is over {MAX_STRING_BYTES} bytes", s.len()),
        )
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8).map(|b| {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            i64::from_be_bytes(w)
        })
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        self.take(n)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn encode_commit(group: &str, entries: &[CommitEntry]) -> io::Result<Vec<u8>> {
    let mut body = vec![COMMIT];
    put_str(&mut body, group)?;
    body.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        put_str(&mut body, &e.topic)?;
        body.extend_from_slice(&e.partition.to_be_bytes());
        body.extend_from_slice(&e.committed.offset.to_be_bytes());
        body.extend_from_slice(&e.committed.leader_epoch.to_be_bytes());
        put_str(&mut body, &e.committed.metadata)?;
        body.extend_from_slice(&e.committed.commit_ms.to_be_bytes());
    }
    Ok(frame(&body))
}

/// Applies one record body to the map; None if it does not parse.
fn apply(map: &mut BTreeMap<Key, Committed>, body: &[u8]) -> Option<()> {
    let mut c = Cursor(body);
    match c.u8()? {
        COMMIT => {
            let group = c.str()?;
            let n = c.u32()?;
            let mut parsed = Vec::with_capacity(n.min(1 << 16) as usize);
            for _ in 0..n {
                let topic = c.str()?;
                let partition = c.u32()? as i32;
                let offset = c.i64()?;
                let leader_epoch = c.u32()? as i32;
                let metadata = c.str()?;
                let commit_ms = c.i64()?;
                parsed.push((
                    (group.clone(), topic, partition),
                    Committed {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_ms,
                    },
                ));
            }
            map.extend(parsed);
        }
        DELETE_GROUP => {
            let group = c.str()?;
            map.retain(|(g, _, _), _| *g != group);
        }
        DELETE_OFFSETS => {
            let group = c.str()?;
            let n = c.u32()?;
            let mut keys = Vec::with_capacity(n.min(1 << 16) as usize);
            for _ in 0..n {
                let topic = c.str()?;
                let partition = c.u32()? as i32;
                keys.push((group.clone(), topic, partition));
            }
            for k in keys {
                map.remove(&k);
            }
        }
        _ => return None,
    }
    Some(())
}

impl LegacyOffsetStore {
    /// Opens (creating) the store in `data_dir`, cutting a torn tail.
    pub fn open(data_dir: &Path) -> io::Result<LegacyOffsetStore> {
        let path = data_dir.join(FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut map = BTreeMap::new();
        let mut pos = 0usize;
        while pos + 8 <= bytes.len() {
            let len =
                u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
                    as usize;
            let crc = u32::from_be_bytes([
                bytes[pos + 4],
                bytes[pos + 5],
                bytes[pos + 6],
                bytes[pos + 7],
            ]);
            let Some(body) = bytes.get(pos + 8..pos + 8 + len) else {
                break;
            };
            if crc32c::crc32c(body) != crc || apply(&mut map, body).is_none() {
                break;
            }
            pos += 8 + len;
        }
        if pos < bytes.len() {
            tracing::warn!(
                file = %path.display(),
                valid = pos,
                total = bytes.len(),
                "committed offsets end in a torn or corrupt record; cutting it"
            );
            file.set_len(pos as u64)?;
            file.sync_all()?;
        }
        Ok(LegacyOffsetStore {
            path,
            state: Mutex::new(State {
                file,
                len: pos as u64,
                map,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, state: &mut State, record: &[u8]) -> io::Result<()> {
        state.file.write_all(record)?;
        state.file.sync_data()?;
        state.len += record.len() as u64;
        Ok(())
    }

    /// Commits `entries` for `group`: on disk (synced) before this returns.
    pub fn commit(&self, group: &str, entries: Vec<CommitEntry>) -> io::Result<()> {
        let record = encode_commit(group, &entries)?;
        let mut state = self.lock();
        self.append(&mut state, &record)?;
        for e in entries {
            state
                .map
                .insert((group.to_string(), e.topic, e.partition), e.committed);
        }
        if state.len > COMPACT_AT && state.len > 4 * (state.map.len() as u64 * 64) {
            self.compact(&mut state)?;
        }
        Ok(())
    }

    /// Forgets a group's offsets.
    pub fn delete_group(&self, group: &str) -> io::Result<()> {
        let mut body = vec![DELETE_GROUP];
        put_str(&mut body, group)?;
        let mut state = self.lock();
        self.append(&mut state, &frame(&body))?;
        state.map.retain(|(g, _, _), _| g != group);
        Ok(())
    }

    /// Forgets some offsets of a group (OffsetDelete, expiry).
    pub fn delete_offsets(&self, group: &str, keys: &[(String, i32)]) -> io::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut body = vec![DELETE_OFFSETS];
        put_str(&mut body, group)?;
        body.extend_from_slice(&(keys.len() as u32).to_be_bytes());
        for (t, p) in keys {
            put_str(&mut body, t)?;
            body.extend_from_slice(&p.to_be_bytes());
        }
        let mut state = self.lock();
        self.append(&mut state, &frame(&body))?;
        for (t, p) in keys {
            state.map.remove(&(group.to_string(), t.clone(), *p));
        }
        Ok(())
    }

    /// Drops offsets committed before `before_ms` by groups not in `active`
    /// (Kafka's offsets.retention.minutes for empty groups). Returns how many.
    pub fn expire(
        &self,
        before_ms: i64,
        active: &std::collections::HashSet<String>,
    ) -> io::Result<usize> {
        let mut by_group: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
        for ((g, t, p), c) in self.lock().map.iter() {
            if c.commit_ms < before_ms && !active.contains(g) {
                by_group.entry(g.clone()).or_default().push((t.clone(), *p));
            }
        }
        let mut n = 0;
        for (g, keys) in by_group {
            n += keys.len();
            self.delete_offsets(&g, &keys)?;
        }
        Ok(n)
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<Committed> {
        self.lock()
            .map
            .get(&(group.to_string(), topic.to_string(), partition))
            .cloned()
    }

    /// Every (topic, partition, offset) a group has committed.
    pub fn group_offsets(&self, group: &str) -> Vec<(String, i32, Committed)> {
        self.lock()
            .map
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|((_, t, p), c)| (t.clone(), *p, c.clone()))
            .collect()
    }

    /// Groups with committed offsets.
    /// Whether `group` has any committed offset (one map lookup, not a list
    /// of every group).
    pub fn has_group(&self, group: &str) -> bool {
        self.lock()
            .map
            .range((group.to_string(), String::new(), i32::MIN)..)
            .next()
            .is_some_and(|((g, _, _), _)| g == group)
    }

    /// Every committed offset, by group, for the migration.
    pub fn entries(&self) -> Vec<(String, CommitEntry)> {
        self.lock()
            .map
            .iter()
            .map(|((g, t, p), c)| {
                (
                    g.clone(),
                    CommitEntry {
                        topic: t.clone(),
                        partition: *p,
                        committed: c.clone(),
                    },
                )
            })
            .collect()
    }

    pub fn groups(&self) -> Vec<String> {
        let mut gs: Vec<String> = self.lock().map.keys().map(|(g, _, _)| g.clone()).collect();
        gs.dedup();
        gs
    }

    /// Rewrites the file as one commit record per group (temp file, sync,
    /// rename), dropping superseded records.
    fn compact(&self, state: &mut State) -> io::Result<()> {
        let mut by_group: BTreeMap<&str, Vec<CommitEntry>> = BTreeMap::new();
        for ((g, t, p), c) in &state.map {
            by_group.entry(g).or_default().push(CommitEntry {
                topic: t.clone(),
                partition: *p,
                committed: c.clone(),
            });
        }
        let tmp = self.path.with_extension("compact");
        let mut out = File::create(&tmp)?;
        let mut len = 0u64;
        for (g, entries) in by_group {
            let rec = encode_commit(g, &entries)?;
            out.write_all(&rec)?;
            len += rec.len() as u64;
        }
        out.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        state.file = OpenOptions::new().append(true).open(&self.path)?;
        state.len = len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(topic: &str, partition: i32, offset: i64) -> CommitEntry {
        CommitEntry {
            topic: topic.into(),
            partition,
            committed: Committed {
                offset,
                leader_epoch: -1,
                metadata: "m".into(),
                commit_ms: 1,
            },
        }
    }

    #[test]
    fn strings_too_long_for_a_record_are_refused_not_cut() {
        let dir = tempfile::tempdir().expect("dir");
        let s = LegacyOffsetStore::open(dir.path()).expect("open");
        let mut long = entry("t", 0, 10);
        long.committed.metadata = "x".repeat(MAX_STRING_BYTES + 1);
        let err = s.commit("g", vec![long]).expect_err("too long");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let group = "g".repeat(MAX_STRING_BYTES + 1);
        assert!(s.commit(&group, vec![entry("t", 0, 1)]).is_err());
        assert!(s.delete_group(&group).is_err());
        assert_eq!(s.get("g", "t", 0), None);
        let mut fits = entry("t", 0, 10);
        fits.committed.metadata = "x".repeat(MAX_STRING_BYTES);
        s.commit("g", vec![fits]).expect("fits");
        drop(s);
        let s = LegacyOffsetStore::open(dir.path()).expect("reopen");
        assert_eq!(
            s.get("g", "t", 0).map(|c| c.metadata.len()),
            Some(MAX_STRING_BYTES)
        );
    }

    #[test]
    fn commits_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let s = LegacyOffsetStore::open(dir.path()).expect("open");
            s.commit("g", vec![entry("t", 0, 10), entry("t", 1, 20)])
                .expect("commit");
            s.commit("g", vec![entry("t", 0, 11)]).expect("commit");
            s.commit("h", vec![entry("u", 0, 5)]).expect("commit");
            s.delete_group("h").expect("delete");
        }
        // A torn record at the end (as a kill mid-write leaves it).
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        let good = bytes.len();
        bytes.extend_from_slice(&encode_commit("g", &[entry("t", 0, 999)]).unwrap()[..20]);
        std::fs::write(&path, &bytes).expect("write");
        let s = LegacyOffsetStore::open(dir.path()).expect("reopen");
        assert_eq!(s.get("g", "t", 0).map(|c| c.offset), Some(11));
        assert_eq!(s.get("g", "t", 1).map(|c| c.offset), Some(20));
        assert_eq!(s.get("h", "u", 0), None, "deleted group stays deleted");
        assert_eq!(std::fs::metadata(&path).expect("meta").len() as usize, good);
        // A flipped byte invalidates that record (here the last: the group
        // deletion) and everything after it; what came before stands.
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let s = LegacyOffsetStore::open(dir.path()).expect("reopen");
        assert_eq!(s.get("g", "t", 0).map(|c| c.offset), Some(11));
        assert_eq!(
            s.get("h", "u", 0).map(|c| c.offset),
            Some(5),
            "the deletion was cut"
        );
    }

    #[test]
    fn deleted_and_expired_offsets_stay_gone_after_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let s = LegacyOffsetStore::open(dir.path()).expect("open");
            s.commit(
                "g",
                vec![entry("t", 0, 1), entry("t", 1, 2), entry("u", 0, 3)],
            )
            .expect("commit");
            s.delete_offsets("g", &[("t".into(), 1)]).expect("delete");
            let mut old = entry("x", 0, 9);
            old.committed.commit_ms = 0;
            s.commit("idle", vec![old]).expect("commit");
            s.commit(
                "busy",
                vec![{
                    let mut e = entry("x", 0, 9);
                    e.committed.commit_ms = 0;
                    e
                }],
            )
            .expect("commit");
            let active: std::collections::HashSet<String> = ["busy".to_string()].into();
            // commit_ms 1 and 0 are both before 10; "busy" has members.
            assert_eq!(
                s.expire(10, &active).expect("expire"),
                3,
                "g: t/0 and u/0; idle: x/0"
            );
        }
        let s = LegacyOffsetStore::open(dir.path()).expect("reopen");
        assert!(s.get("g", "t", 1).is_none());
        assert!(
            s.get("idle", "x", 0).is_none(),
            "an empty group's old offsets expire"
        );
        assert_eq!(
            s.get("busy", "x", 0).map(|c| c.offset),
            Some(9),
            "an active group keeps them"
        );
    }

    #[test]
    fn compaction_keeps_the_latest_offsets() {
        let dir = tempfile::tempdir().expect("dir");
        let s = LegacyOffsetStore::open(dir.path()).expect("open");
        for i in 0..10 {
            s.commit("g", vec![entry("t", 0, i)]).expect("commit");
        }
        {
            let mut st = s.lock();
            s.compact(&mut st).expect("compact");
        }
        s.commit("g", vec![entry("t", 1, 7)])
            .expect("commit after compaction");
        drop(s);
        let s = LegacyOffsetStore::open(dir.path()).expect("reopen");
        assert_eq!(s.get("g", "t", 0).map(|c| c.offset), Some(9));
        assert_eq!(s.get("g", "t", 1).map(|c| c.offset), Some(7));
    }
}
