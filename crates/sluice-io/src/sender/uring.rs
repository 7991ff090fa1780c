//! The io_uring data path: a whole message in one submission.
//!
//! Every byte of the message goes through the sender's pipe, so that every
//! operation's result says exactly how far the stream got:
//!
//! - a byte run is written into the pipe (`IORING_OP_WRITE`: one copy from
//!   user memory, as `send` would make);
//! - a file region is spliced into the pipe (`IORING_OP_SPLICE`: page
//!   references, no copy);
//! - a pipe-full is spliced to the socket (`IORING_OP_SPLICE`, `SPLICE_F_MORE`
//!   while more follows).
//!
//! The operations are linked (`IOSQE_IO_LINK`), so they run in order and a
//! short or failed one cancels the rest; one `io_uring_enter` submits the chain
//! and waits for it. The next round starts from what the completions say was
//! done. Nothing is left in flight when a call returns, so the message's
//! borrowed byte runs are never read by the kernel after it.
//!
//! Sending straight from user memory with `IORING_OP_SEND` would save the copy
//! of the byte runs into the pipe, but a short send does not break a link
//! unless `MSG_WAITALL` is set, and with `MSG_WAITALL` a partial send on a full
//! non-blocking socket is not reported exactly on every kernel. Headers are a
//! few dozen bytes per partition; exactness wins.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use io_uring::{IoUring, opcode, squeue, types::Fd};
use rustix::io::Errno;

use super::message::{Chunk, Message, Progress};
use super::sys::{Attempt, Pipe, SocketKind, eof_error, syscall_error};
use crate::counters::Syscall;
use crate::error::TransferError;
use crate::uring_probe::probe;

/// Submission queue entries per ring: the most operations in one chain. A
/// chain moves up to one pipe-full per drain, and a pipe-full takes a few
/// operations (one per byte run or region piece), so 64 covers the typical
/// fetch response in one submission; longer messages take more rounds.
const RING_ENTRIES: u32 = 64;

/// One operation of a chain.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Write `len` bytes of byte run `chunk`, from byte `from`, into the pipe.
    Write { chunk: usize, from: u64, len: u32 },
    /// Splice `len` bytes of file region `chunk`, from byte `from`, into the pipe.
    SpliceIn { chunk: usize, from: u64, len: u32 },
    /// Splice `len` bytes from the pipe to the socket.
    Drain { len: u32, more: bool },
}

/// A sender's ring and the bookkeeping of its pipe.
pub(super) struct Ring {
    ring: IoUring,
    /// What the pipe holds, oldest first: byte counts and whether they came
    /// from a file (so bytes reaching the socket are credited to the right
    /// counter).
    contents: VecDeque<(u64, bool)>,
    ops: Vec<Op>,
    results: Vec<i32>,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("entries", &RING_ENTRIES)
            .field("contents", &self.contents)
            .finish()
    }
}

impl Ring {
    pub(super) fn new() -> Result<Ring, TransferError> {
        probe().map_err(TransferError::UringUnavailable)?;
        let ring = IoUring::new(RING_ENTRIES).map_err(TransferError::UringUnavailable)?;
        Ok(Ring {
            ring,
            contents: VecDeque::new(),
            ops: Vec::with_capacity(RING_ENTRIES as usize),
            results: Vec::with_capacity(RING_ENTRIES as usize),
        })
    }

    /// Forgets the pipe's contents (the pipe was replaced).
    pub(super) fn reset(&mut self) {
        self.contents.clear();
    }

    /// Plans the next chain: drain what an earlier round left in the pipe,
    /// then fill the pipe from the message and drain it, as many times as the
    /// ring holds.
    fn plan(&mut self, pipe: &Pipe, msg: &Message<'_>, kind: SocketKind) {
        let page = rustix::param::page_size() as u64;
        // The pipe holds `capacity / page` buffers; a spliced page takes one
        // whole, a write starts a new one after spliced pages.
        let slots = (pipe.capacity as u64 / page).max(1);
        let more_after = |idx: usize, done: u64| {
            idx < msg.chunks.len()
                && (msg.chunks[idx].len() > done
                    || msg.chunks[idx + 1..].iter().any(|c| !c.is_empty()))
        };
        self.ops.clear();
        let (mut idx, mut done) = (msg.idx, msg.done_in_chunk);
        if pipe.pending > 0 {
            self.ops.push(Op::Drain {
                len: pipe.pending as u32,
                more: kind == SocketKind::Tcp && more_after(idx, done),
            });
        }
        while self.ops.len() + 2 <= RING_ENTRIES as usize {
            let mut filled = 0u64;
            let mut slots_left = slots;
            while idx < msg.chunks.len() && self.ops.len() + 2 <= RING_ENTRIES as usize {
                let chunk = msg.chunks[idx];
                let remaining = chunk.len() - done;
                if remaining == 0 {
                    idx += 1;
                    done = 0;
                    continue;
                }
                let (room, op) = match chunk {
                    // A write fills up the pipe's last buffer only if that
                    // buffer was written too; after a spliced page it starts
                    // a new one.
                    Chunk::Bytes(_) if filled == 0 => (slots_left * page, true),
                    Chunk::Bytes(_) => (slots_left.saturating_sub(1) * page, true),
                    Chunk::File(region) => {
                        let lead = (region.offset + done) % page;
                        ((slots_left * page).saturating_sub(lead), false)
                    }
                };
                let len = remaining.min(room).min(u32::MAX as u64 / 2);
                if len == 0 {
                    break;
                }
                let from = done;
                self.ops.push(if op {
                    Op::Write {
                        chunk: idx,
                        from,
                        len: len as u32,
                    }
                } else {
                    Op::SpliceIn {
                        chunk: idx,
                        from,
                        len: len as u32,
                    }
                });
                slots_left -= match chunk {
                    Chunk::Bytes(_) if filled == 0 => len.div_ceil(page),
                    Chunk::Bytes(_) => len.div_ceil(page) + 1,
                    Chunk::File(region) => ((region.offset + from) % page + len).div_ceil(page),
                }
                .min(slots_left);
                filled += len;
                done += len;
            }
            if filled == 0 {
                break;
            }
            self.ops.push(Op::Drain {
                len: filled as u32,
                more: kind == SocketKind::Tcp && more_after(idx, done),
            });
        }
    }

    /// Submits the planned chain with one `io_uring_enter`, waits for every
    /// operation, and applies the results to the message and the pipe.
    fn run(
        &mut self,
        socket: BorrowedFd<'_>,
        pipe: &mut Pipe,
        msg: &mut Message<'_>,
    ) -> Result<Attempt<()>, TransferError> {
        let n = self.ops.len();
        let pipe_in = Fd(pipe.write.as_raw_fd());
        let pipe_out = Fd(pipe.read.as_raw_fd());
        {
            let mut sq = self.ring.submission();
            for (i, op) in self.ops.iter().enumerate() {
                let entry = match *op {
                    Op::Write { chunk, from, len } => {
                        let Chunk::Bytes(bytes) = msg.chunks[chunk] else {
                            unreachable!("planned from a byte run")
                        };
                        let start = &bytes[from as usize..from as usize + len as usize];
                        // Offset 0: the pipe is not seekable.
                        opcode::Write::new(pipe_in, start.as_ptr(), len)
                            .offset(0)
                            .build()
                    }
                    Op::SpliceIn { chunk, from, len } => {
                        let Chunk::File(region) = msg.chunks[chunk] else {
                            unreachable!("planned from a file region")
                        };
                        let offset = i64::try_from(region.offset + from).map_err(|_| {
                            TransferError::RegionPastEof {
                                offset: region.offset,
                                len: region.len,
                                file_len: i64::MAX as u64,
                            }
                        })?;
                        opcode::Splice::new(Fd(region.file.as_raw_fd()), offset, pipe_in, -1, len)
                            .flags(libc::SPLICE_F_MOVE)
                            .build()
                    }
                    Op::Drain { len, more } => {
                        let more = if more { libc::SPLICE_F_MORE } else { 0 };
                        opcode::Splice::new(pipe_out, -1, Fd(socket.as_raw_fd()), -1, len)
                            .flags(libc::SPLICE_F_MOVE | more)
                            .build()
                    }
                };
                let entry = entry.user_data(i as u64);
                let entry = if i + 1 < n {
                    entry.flags(squeue::Flags::IO_LINK)
                } else {
                    entry
                };
                // SAFETY: the entry points at the message's byte runs and at
                // descriptors the caller keeps open for this call; this
                // function waits for every submitted operation to complete
                // before it returns, so nothing is used after the borrow ends.
                unsafe { sq.push(&entry) }.map_err(|_| TransferError::Syscall {
                    call: "io_uring_enter",
                    source: io::Error::other("submission queue full"),
                })?;
            }
        }
        self.results.clear();
        self.results.resize(n, -libc::ECANCELED);
        let mut completed = 0;
        while completed < n {
            msg.counters.count(Syscall::IoUringEnter);
            match self.ring.submit_and_wait(n - completed) {
                Ok(_) => {}
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => msg.counters.eintr += 1,
                    // The kernel is short of memory for the submission: wait
                    // and try again rather than leave operations in flight.
                    Some(libc::EAGAIN | libc::EBUSY) => msg.counters.eagain += 1,
                    _ => {
                        return Err(TransferError::Syscall {
                            call: "io_uring_enter",
                            source: e,
                        });
                    }
                },
            }
            for cqe in self.ring.completion() {
                if let Some(slot) = self.results.get_mut(cqe.user_data() as usize) {
                    *slot = cqe.result();
                    completed += 1;
                }
            }
        }
        self.apply(pipe, msg)
    }

    /// Applies the completions, in chain order, up to the first short or
    /// failed operation (the kernel cancelled everything after it).
    fn apply(
        &mut self,
        pipe: &mut Pipe,
        msg: &mut Message<'_>,
    ) -> Result<Attempt<()>, TransferError> {
        for (&op, &res) in self.ops.iter().zip(&self.results) {
            match op {
                Op::Write { chunk, from, len } | Op::SpliceIn { chunk, from, len } => {
                    let from_file = matches!(op, Op::SpliceIn { .. });
                    msg.idx = chunk;
                    msg.done_in_chunk = from;
                    if res < 0 {
                        let errno = Errno::from_raw_os_error(-res);
                        return Err(if from_file {
                            syscall_error("splice", errno)
                        } else {
                            syscall_error("write", errno)
                        });
                    }
                    let got = res as u64;
                    msg.done_in_chunk = from + got;
                    if got > 0 {
                        pipe.pending += got as usize;
                        self.contents.push_back((got, from_file));
                    }
                    if !from_file {
                        msg.counters.user_space_bytes += got;
                    }
                    if got < u64::from(len) {
                        if from_file && got == 0 {
                            let Chunk::File(region) = msg.chunks[chunk] else {
                                unreachable!("planned from a file region")
                            };
                            return Err(eof_error(msg, region));
                        }
                        return Ok(Attempt::Ok(()));
                    }
                }
                Op::Drain { len, .. } => {
                    if res == -libc::EAGAIN {
                        msg.counters.eagain += 1;
                        return Ok(Attempt::WouldBlock);
                    }
                    if res < 0 {
                        return Err(TransferError::from_errno(
                            Syscall::Splice,
                            Errno::from_raw_os_error(-res),
                        ));
                    }
                    let got = res as u64;
                    pipe.pending -= got as usize;
                    msg.counters.bytes_sent += got;
                    credit(&mut self.contents, got, msg);
                    // A short drain ends the chain; the next round drains the
                    // rest and meets EAGAIN there if the socket is full (a
                    // readiness wait is only safe after a real EAGAIN).
                    if got < u64::from(len) {
                        return Ok(Attempt::Ok(()));
                    }
                }
            }
        }
        Ok(Attempt::Ok(()))
    }
}

/// Credits `n` bytes that left the pipe to the socket: file bytes moved
/// kernel-side. Bytes written into the pipe were counted as user-space
/// bytes when they were copied in.
fn credit(contents: &mut VecDeque<(u64, bool)>, mut n: u64, msg: &mut Message<'_>) {
    while n > 0 {
        let Some(front) = contents.front_mut() else {
            break;
        };
        let take = front.0.min(n);
        if front.1 {
            msg.counters.kernel_bytes += take;
        }
        front.0 -= take;
        n -= take;
        if front.0 == 0 {
            contents.pop_front();
        }
    }
}

impl Ring {
    /// The io_uring path's [`Sender::advance`](super::Sender::advance): rounds
    /// of one submission each until the message is in the socket or the socket
    /// is full. `pipe` is the sender's pipe, already open.
    pub(super) fn advance(
        &mut self,
        socket: BorrowedFd<'_>,
        pipe: &mut Pipe,
        kind: SocketKind,
        msg: &mut Message<'_>,
    ) -> Result<Progress, TransferError> {
        loop {
            while msg.idx < msg.chunks.len() && msg.done_in_chunk == msg.chunks[msg.idx].len() {
                msg.idx += 1;
                msg.done_in_chunk = 0;
            }
            if msg.idx == msg.chunks.len() && pipe.pending == 0 {
                return Ok(Progress::Done);
            }
            self.plan(pipe, msg, kind);
            if self.ops.is_empty() {
                // Cannot happen with a pipe of at least one page; refuse
                // rather than spin.
                return Err(TransferError::Syscall {
                    call: "io_uring_enter",
                    source: io::Error::other("pipe too small to plan a chain"),
                });
            }
            if let Attempt::WouldBlock = self.run(socket, pipe, msg)? {
                return Ok(Progress::WouldBlock);
            }
        }
    }
}
