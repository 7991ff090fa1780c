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
