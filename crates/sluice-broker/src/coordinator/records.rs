//! Reading an internal topic's partition back, record by record, when a
//! coordinator takes it over.

use std::io;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};
use sluice_log::Partition;

/// Calls `f` with every record from the log start to the log end, in
/// order. A batch that does not decode is skipped with a warning: the
/// log's recovery already cut torn tails, so it is a record type from
/// elsewhere, never a reason to refuse to coordinate.
pub fn for_each_record(part: &Partition, mut f: impl FnMut(&Record)) -> io::Result<()> {
    let mut offset = part.log_start();
    let end = part.log_end();
    while offset < end {
        // The first batch comes whole however large, so each read moves on.
        let read = part
            .read(offset, 1 << 20)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let Some(slice) = read.slice else { break };
        let mut buf = vec![0u8; slice.len as usize];
        slice
            .segment
            .file()
            .read_exact_at(&mut buf, slice.position)?;
        let mut pos = 0usize;
        let mut next = offset;
        while pos + 27 <= buf.len() {
            let b = &buf[pos..];
            let base = i64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
            let len =
                12 + i32::from_be_bytes(b[8..12].try_into().expect("4 bytes")).max(0) as usize;
            let delta = i32::from_be_bytes(b[23..27].try_into().expect("4 bytes"));
            if pos + len > buf.len() {
                break;
            }
            let mut batch = Bytes::copy_from_slice(&buf[pos..pos + len]);
            match RecordBatchDecoder::decode(&mut batch) {
                Ok(set) => {
                    for r in set.records.iter().filter(|r| r.offset >= offset) {
                        f(r);
                    }
                }
                Err(e) => tracing::warn!(
                    partition = part.name(),
                    base_offset = base,
                    "skipping a batch that does not decode: {e}"
                ),
            }
            next = base + i64::from(delta) + 1;
            pos += len;
        }
        if next <= offset {
            return Err(io::Error::other(format!(
                "{}: no whole batch at offset {offset}",
                part.name()
            )));
        }
        offset = next;
    }
    Ok(())
}

/// Big-endian fields of Kafka's internal-topic records, read in order;
/// None once the bytes run out.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl Reader<'_> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub(crate) fn i8(&mut self) -> Option<i8> {
        self.take(1).map(|b| b[0] as i8)
    }
    pub(crate) fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        let b = self.take(8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        Some(i64::from_be_bytes(w))
    }
    pub(crate) fn str(&mut self) -> Option<String> {
        let n = usize::try_from(self.i16()?).ok()?;
        self.take(n)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
    /// Some(None) for a null string.
    pub(crate) fn nullable_str(&mut self) -> Option<Option<String>> {
        let n = self.i16()?;
        if n < 0 {
            return Some(None);
        }
        self.take(n as usize)
            .map(|b| Some(String::from_utf8_lossy(b).into_owned()))
    }
    pub(crate) fn bytes(&mut self) -> Option<&[u8]> {
        let n = usize::try_from(self.i32()?).ok()?;
        self.take(n)
    }
}
