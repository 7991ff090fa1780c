//! The committed-offsets file of Sluice before `__consumer_offsets`
//! (`consumer-offsets.log`): an append-only file of CRC-framed records, one
//! per OffsetCommit request. A single-node broker reads it once, to migrate
//! a data directory's offsets into `__consumer_offsets`
//! (`state::migrate_legacy_offsets`), then sets it aside.
//!
//! Record: `[u32 body length][u32 CRC-32C of body][body]`; body: kind u8
//! (1 commit, 2 delete group, 3 delete offsets), then fields (FORMAT.md).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use super::offsets::{CommitEntry, Committed};

pub const FILE: &str = "consumer-offsets.log";
const COMMIT: u8 = 1;
const DELETE_GROUP: u8 = 2;
const DELETE_OFFSETS: u8 = 3;

type Key = (String, String, i32);

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

/// Every offset the file's records leave, by group, replayed in order up
/// to the first torn or corrupt record (what a crash mid-write left: never
/// acknowledged). The file is not changed.
pub fn read(data_dir: &Path) -> io::Result<Vec<(String, CommitEntry)>> {
    let path = data_dir.join(FILE);
    let bytes = std::fs::read(&path)?;
    let mut map = BTreeMap::new();
    let mut pos = 0usize;
    while pos + 8 <= bytes.len() {
        let word = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let (len, crc) = (word(pos) as usize, word(pos + 4));
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
            "committed offsets end in a torn or corrupt record; reading up to it"
        );
    }
    Ok(map
        .into_iter()
        .map(|((group, topic, partition), committed)| {
            (
                group,
                CommitEntry {
                    topic,
                    partition,
                    committed,
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_str(out: &mut Vec<u8>, s: &str) -> io::Result<()> {
        let len = u16::try_from(s.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string too long"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(s.as_bytes());
        Ok(())
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

    fn offsets(dir: &Path) -> Vec<(String, String, i32, i64)> {
        read(dir)
            .expect("read")
            .into_iter()
            .map(|(g, e)| (g, e.topic, e.partition, e.committed.offset))
            .collect()
    }

    #[test]
    fn the_records_replay_in_order_up_to_a_torn_tail() {
        let dir = tempfile::tempdir().expect("dir");
        let mut bytes = encode_commit("g", &[entry("t", 0, 10), entry("t", 1, 20)]).unwrap();
        bytes.extend(encode_commit("g", &[entry("t", 0, 11)]).unwrap());
        bytes.extend(encode_commit("h", &[entry("u", 0, 5)]).unwrap());
        let mut body = vec![DELETE_GROUP];
        put_str(&mut body, "h").unwrap();
        bytes.extend(frame(&body));
        let mut body = vec![DELETE_OFFSETS];
        put_str(&mut body, "g").unwrap();
        body.extend_from_slice(&1u32.to_be_bytes());
        put_str(&mut body, "t").unwrap();
        body.extend_from_slice(&1i32.to_be_bytes());
        bytes.extend(frame(&body));
        let good = bytes.clone();
        // A torn record at the end, as a kill mid-write leaves it.
        bytes.extend_from_slice(&encode_commit("g", &[entry("t", 0, 999)]).unwrap()[..20]);
        std::fs::write(dir.path().join(FILE), &bytes).expect("write");
        assert_eq!(offsets(dir.path()), vec![("g".into(), "t".into(), 0, 11)]);
        assert_eq!(
            std::fs::read(dir.path().join(FILE)).expect("read"),
            bytes,
            "the file is left as it was"
        );
        // A flipped byte invalidates that record (the last: the offset
        // deletion) and everything after it; what came before stands.
        let mut bad = good;
        let last = bad.len() - 1;
        bad[last] ^= 1;
        std::fs::write(dir.path().join(FILE), &bad).expect("write");
        assert_eq!(
            offsets(dir.path()),
            vec![
                ("g".into(), "t".into(), 0, 11),
                ("g".into(), "t".into(), 1, 20)
            ]
        );
    }
}
