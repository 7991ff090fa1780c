//! What a sender sends: a [`Message`] of [`Chunk`]s (byte runs and
//! [`FileRegion`]s) and how far it has got.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use crate::counters::Counters;
use crate::error::TransferError;

/// A region of an open file.
#[derive(Clone, Copy, Debug)]
pub struct FileRegion<'a> {
    pub file: BorrowedFd<'a>,
    pub offset: u64,
    pub len: u64,
}

impl<'a> FileRegion<'a> {
    pub fn new(file: &'a impl AsFd, offset: u64, len: u64) -> FileRegion<'a> {
        FileRegion {
            file: file.as_fd(),
            offset,
            len,
        }
    }
}

/// Opens a source file by path for sending, with a typed error when it is missing.
pub fn open_source(path: &Path) -> Result<File, TransferError> {
    File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TransferError::FileNotFound {
                path: path.to_path_buf(),
            }
        } else {
            TransferError::Open {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// One piece of a message.
#[derive(Clone, Copy, Debug)]
pub enum Chunk<'a> {
    /// Bytes already in memory (headers, per-partition fields).
    Bytes(&'a [u8]),
    /// Bytes still in a file, sent by the sender's data path.
    File(FileRegion<'a>),
}

impl Chunk<'_> {
    pub fn len(&self) -> u64 {
        match self {
            Chunk::Bytes(b) => b.len() as u64,
            Chunk::File(r) => r.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one call to [`Sender::advance`](super::Sender::advance) achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every byte of the message is in the socket.
    Done,
    /// The non-blocking socket is full; call again when it is writable.
    WouldBlock,
}

/// A message in flight: its chunks and how far it has got.
#[derive(Debug)]
pub struct Message<'a> {
    pub(super) chunks: Vec<Chunk<'a>>,
    /// Index of the chunk being sent.
    pub(super) idx: usize,
    /// Bytes of `chunks[idx]` already delivered to the socket.
    pub(super) done_in_chunk: u64,
    /// The mapping of the current file chunk on the `mmap+write` path, and the
    /// chunk offset its first byte corresponds to.
    pub(super) map: Option<(memmap2::Mmap, u64)>,
    /// The sender generation this message started in (0: not started).
    pub(super) generation: u64,
    /// `TCP_CORK` was set for this message and must be cleared at its end.
    pub(super) corked: bool,
    pub(super) counters: Counters,
}

impl<'a> Message<'a> {
    pub fn new(chunks: Vec<Chunk<'a>>) -> Message<'a> {
        Message {
            chunks,
            idx: 0,
            done_in_chunk: 0,
            map: None,
            generation: 0,
            corked: false,
            counters: Counters::default(),
        }
    }

    /// A message of one file region.
    pub fn region(region: FileRegion<'a>) -> Message<'a> {
        Message::new(vec![Chunk::File(region)])
    }

    /// Total bytes of the message.
    pub fn len(&self) -> u64 {
        self.chunks.iter().map(Chunk::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What sending this message has cost so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// `n` bytes of the current file chunk reached the socket from user memory.
    pub(super) fn delivered_from_user_space(&mut self, n: u64) {
        self.counters.user_space_bytes += n;
        self.counters.bytes_sent += n;
        self.done_in_chunk += n;
    }

    /// `n` bytes of the current file chunk reached the socket kernel-side only.
    pub(super) fn delivered_in_kernel(&mut self, n: u64) {
        self.counters.kernel_bytes += n;
        self.counters.bytes_sent += n;
        self.done_in_chunk += n;
    }
}
