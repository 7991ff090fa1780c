//! Producer ids for idempotent producers (InitProducerId): unique across
//! restarts. Ids are handed out from blocks; the end of the current block is
//! written to `<data-dir>/producer-id-block` (temp file, fsync, rename) before
//! any id of the block is used, so a crash can skip ids but never reuse one.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const BLOCK: i64 = 1000;
const FILE: &str = "producer-id-block";

#[derive(Debug)]
pub struct ProducerIds {
    path: PathBuf,
    /// (next id to hand out, end of the reserved block)
    state: Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub fn open(data_dir: &Path) -> io::Result<ProducerIds> {
        let path = data_dir.join(FILE);
        let reserved_end = match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        // Everything below the recorded end may have been handed out already.
        Ok(ProducerIds {
            path,
            state: Mutex::new((reserved_end, reserved_end)),
        })
    }

    /// A producer id never handed out before.
    pub fn next(&self) -> io::Result<i64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 >= state.1 {
            let end = state.1 + BLOCK;
            let tmp = self.path.with_extension("tmp");
            std::fs::write(&tmp, format!("{end}\n"))?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            state.1 = end;
        }
        let id = state.0;
        state.0 += 1;
        Ok(id)
    }
}
