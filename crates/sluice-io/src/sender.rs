//! Sending messages made of byte runs and file regions to a connected stream
//! socket, by the data path chosen at run time.
//!
//! A [`Message`] is a list of [`Chunk`]s. A [`Sender`] (one per connection)
//! moves it to the socket step by step: [`Sender::advance`] makes as much
//! progress as the socket allows and reports [`Progress::WouldBlock`] on a
//! non-blocking socket that is full, so the same code serves blocking callers
//! ([`Sender::send`], which waits with `poll`), event loops and tokio
//! ([`crate::tokio`]).

use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::io::Errno;
use rustix::net::SendFlags;
use rustix::pipe::SpliceFlags;

use crate::counters::{Counters, Syscall};
use crate::error::TransferError;
use crate::path::DataPath;

mod message;
mod sys;
mod uring;

pub use message::{Chunk, FileRegion, Message, Progress, open_source};
pub use sys::{SocketKind, socket_kind};

use sys::{Attempt, Pipe, attempt, eof_error, syscall_error};

/// Largest count handed to one `send`/`sendfile`/`splice` (Linux caps a
/// single transfer at 0x7ffff000 bytes anyway).
const MAX_STEP: u64 = 1 << 30;
/// Default user buffer of the `read+write` path: 64 KiB, the size of a default
/// Linux pipe and a common server buffer. Larger buffers cut its syscalls but
/// not its two CPU copies.
pub const DEFAULT_READ_BUFFER: usize = 64 * 1024;
/// Pipe size requested for the `splice` path: 1 MiB, Linux's default
/// `/proc/sys/fs/pipe-max-size`. Splice costs two calls per pipe-full
/// (file → pipe, pipe → socket), so a 1 MiB pipe makes that two calls per MiB
/// instead of 32 with the default 64 KiB pipe. The pipe holds page references,
/// not copies, so the size costs descriptors, not memory bandwidth.
pub const DEFAULT_PIPE_SIZE: usize = 1 << 20;
/// Most byte runs gathered into one `sendmsg`.
const MAX_IOVECS: usize = 64;

/// Sends messages to one connected stream socket by one data path. Holds the
/// per-connection resources the path needs (the user buffer, the pipe) and
/// the running totals of its counters.
#[derive(Debug)]
pub struct Sender {
    path: DataPath,
    kind: SocketKind,
    buf: Vec<u8>,
    /// Bytes of `buf` read from the file and not yet sent (`read+write`).
    staged: Range<usize>,
    /// Opened on the first file region (a connection that only ever gets
    /// small responses, a producer's, costs no pipe).
    pipe: Option<Pipe>,
    pipe_size: usize,
    /// The io_uring path's ring (with `pipe`).
    ring: Option<uring::Ring>,
    generation: u64,
    totals: Counters,
}

impl Sender {
    /// A sender for `socket`, which must be a connected stream socket (TCP or
    /// Unix). Ignores `SIGPIPE` for the process if it is still at its default,
    /// because `sendfile` and `splice` have no `MSG_NOSIGNAL`.
    pub fn new(socket: BorrowedFd<'_>, path: DataPath) -> Result<Sender, TransferError> {
        Self::with_sizes(socket, path, DEFAULT_READ_BUFFER, DEFAULT_PIPE_SIZE)
    }

    /// As [`Sender::new`], with the `read+write` buffer and the splice pipe sized.
    pub fn with_sizes(
        socket: BorrowedFd<'_>,
        path: DataPath,
        read_buffer: usize,
        pipe_size: usize,
    ) -> Result<Sender, TransferError> {
        crate::signal::ignore_sigpipe();
        let kind = socket_kind(socket)?;
        let buf = if path == DataPath::ReadWrite {
            vec![0; read_buffer.max(1)]
        } else {
            Vec::new()
        };
        let ring = if path == DataPath::IoUring {
            Some(uring::Ring::new()?)
        } else {
            None
        };
        Ok(Sender {
            path,
            kind,
            buf,
            staged: 0..0,
            pipe: None,
            pipe_size,
            ring,
            generation: 0,
            totals: Counters::default(),
        })
    }

    pub fn path(&self) -> DataPath {
        self.path
    }

    pub fn socket_kind(&self) -> SocketKind {
        self.kind
    }

    /// The splice pipe's actual capacity, once this sender has opened it
    /// (see [`Sender::open_pipe`]).
    pub fn pipe_capacity(&self) -> Option<usize> {
        self.pipe.as_ref().map(|p| p.capacity)
    }

    /// Opens the pipe now, if this path uses one and it is not open yet (it
    /// is otherwise opened for the first file region). Returns its capacity.
    pub fn open_pipe(&mut self) -> Result<Option<usize>, TransferError> {
        if matches!(self.path, DataPath::Splice | DataPath::IoUring) && self.pipe.is_none() {
            self.pipe = Some(Pipe::open(self.pipe_size)?);
        }
        Ok(self.pipe_capacity())
    }

    /// Everything this sender has done since it was made.
    pub fn totals(&self) -> &Counters {
        &self.totals
    }

    /// Sends one file region, blocking until it is all in the socket.
    pub fn send_region(
        &mut self,
        socket: BorrowedFd<'_>,
        region: FileRegion<'_>,
    ) -> Result<Counters, TransferError> {
        self.send(socket, &mut Message::region(region))
    }

    /// Sends a whole message, waiting with `poll(2)` whenever a non-blocking
    /// socket is full. Returns what this message cost.
    pub fn send(
        &mut self,
        socket: BorrowedFd<'_>,
        msg: &mut Message<'_>,
    ) -> Result<Counters, TransferError> {
        loop {
            match self.advance(socket, msg)? {
                Progress::Done => return Ok(msg.counters),
                Progress::WouldBlock => self.wait_writable(socket, msg)?,
            }
        }
    }

    fn wait_writable(
        &mut self,
        socket: BorrowedFd<'_>,
        msg: &mut Message<'_>,
    ) -> Result<(), TransferError> {
        use rustix::event::{PollFd, PollFlags, poll};
        let before = msg.counters;
        let result = loop {
            msg.counters.count(Syscall::Poll);
            let mut fds = [PollFd::new(&socket, PollFlags::OUT)];
            match poll(&mut fds, None) {
                Ok(_) => break Ok(()),
                Err(Errno::INTR) => msg.counters.eintr += 1,
                Err(e) => break Err(TransferError::from_errno(Syscall::Poll, e)),
            }
        };
        self.totals += msg.counters - before;
        result
    }

    /// Moves as much of `msg` into the socket as it takes without blocking
    /// (on a non-blocking socket) or until done (on a blocking one).
    ///
    /// After an error the message is abandoned and the stream's framing is
    /// lost: the caller should close the connection.
    pub fn advance(
        &mut self,
        socket: BorrowedFd<'_>,
        msg: &mut Message<'_>,
    ) -> Result<Progress, TransferError> {
        let before = msg.counters;
        let result = self.advance_inner(socket, msg);
        self.totals += msg.counters - before;
        result
    }

    fn advance_inner(
        &mut self,
        socket: BorrowedFd<'_>,
        msg: &mut Message<'_>,
    ) -> Result<Progress, TransferError> {
        if msg.generation == 0 {
            self.start(socket, msg)?;
        } else if msg.generation != self.generation {
            return Err(TransferError::Interleaved);
        }
        if self.path == DataPath::IoUring {
            self.open_pipe()?;
            let (Some(ring), Some(pipe)) = (self.ring.as_mut(), self.pipe.as_mut()) else {
                unreachable!("an io_uring sender always has a ring, and the pipe was opened above")
            };
            return ring.advance(socket, pipe, self.kind, msg);
        }
        loop {
            // Skip what is finished (and empty chunks).
            while msg.idx < msg.chunks.len() && msg.done_in_chunk == msg.chunks[msg.idx].len() {
                msg.idx += 1;
                msg.done_in_chunk = 0;
                if msg.map.take().is_some() {
                    msg.counters.count(Syscall::Munmap);
                }
            }
            if msg.idx == msg.chunks.len() {
                if msg.corked {
                    msg.corked = false;
                    msg.counters.count(Syscall::Setsockopt);
                    rustix::net::sockopt::set_tcp_cork(socket, false)
                        .map_err(|e| TransferError::from_errno(Syscall::Setsockopt, e))?;
                }
                return Ok(Progress::Done);
            }
            let more_after = msg.chunks[msg.idx + 1..].iter().any(|c| !c.is_empty());
            let step = match msg.chunks[msg.idx] {
                Chunk::Bytes(_) => self.send_bytes(socket, msg)?,
                Chunk::File(region) => {
                    let remaining = region.len - msg.done_in_chunk;
                    match self.path {
                        DataPath::ReadWrite => {
                            self.read_write(socket, msg, region, remaining, more_after)?
                        }
                        DataPath::MmapWrite => {
                            self.mmap_write(socket, msg, region, remaining, more_after)?
                        }
                        DataPath::Sendfile => self.sendfile(socket, msg, region, remaining)?,
                        DataPath::Splice => {
                            self.splice(socket, msg, region, remaining, more_after)?
                        }
                        DataPath::IoUring => unreachable!("handled by advance_uring"),
                    }
                }
            };
            if let Attempt::WouldBlock = step {
                return Ok(Progress::WouldBlock);
            }
        }
    }

    fn start(
        &mut self,
        socket: BorrowedFd<'_>,
        msg: &mut Message<'_>,
    ) -> Result<(), TransferError> {
        self.generation += 1;
        msg.generation = self.generation;
        // A message abandoned mid-way may have left bytes in the pipe or buffer;
        // they belong to nobody now.
        self.staged = 0..0;
        if let Some(pipe) = &self.pipe
            && pipe.pending > 0
        {
            self.pipe = Some(Pipe::open(pipe.capacity)?);
            if let Some(ring) = &mut self.ring {
                ring.reset();
            }
        }
        // sendfile has no MSG_MORE: when more bytes follow a file region, cork
        // the socket so the region's tail and what follows leave in full segments.
        if self.kind == SocketKind::Tcp && self.path == DataPath::Sendfile {
            let last = msg.chunks.iter().rposition(|c| !c.is_empty());
            let file_then_more = last.is_some_and(|last| {
                msg.chunks[..last]
                    .iter()
                    .any(|c| matches!(c, Chunk::File(r) if r.len > 0))
            });
            if file_then_more {
                msg.counters.count(Syscall::Setsockopt);
                rustix::net::sockopt::set_tcp_cork(socket, true)
                    .map_err(|e| TransferError::from_errno(Syscall::Setsockopt, e))?;
                msg.corked = true;
            }
        }
        Ok(())
    }

    fn send_flags(&self, more: bool) -> SendFlags {
        if more && self.kind == SocketKind::Tcp {
            SendFlags::NOSIGNAL | SendFlags::MORE
        } else {
            SendFlags::NOSIGNAL
        }
    }

    /// Sends the run of consecutive byte chunks starting at the cursor, gathered
    /// into one `sendmsg` (a `writev` that also takes `MSG_MORE`).
    fn send_bytes(
        &mut self,
        socket: BorrowedFd<'_>,
        msg: &mut Message<'_>,
    ) -> Result<Attempt<()>, TransferError> {
        let mut iov = [std::io::IoSlice::new(&[]); MAX_IOVECS];
        let mut used = 0;
        let mut end = msg.idx;
        while end < msg.chunks.len() && used < MAX_IOVECS {
            match msg.chunks[end] {
                Chunk::Bytes(b) => {
                    let skip = if end == msg.idx {
                        msg.done_in_chunk as usize
                    } else {
                        0
                    };
                    if b.len() > skip {
                        iov[used] = std::io::IoSlice::new(&b[skip..]);
                        used += 1;
                    }
                    end += 1;
                }
                Chunk::File(_) => break,
            }
        }
        let more = msg.chunks[end..].iter().any(|c| !c.is_empty());
        let flags = self.send_flags(more);
        let slices = &iov[..used];
        let (call, result) = if slices.len() == 1 {
            let buf: &[u8] = &slices[0];
            (
                Syscall::Send,
                attempt(&mut msg.counters, Syscall::Send, || {
                    rustix::net::send(socket, buf, flags)
                }),
            )
        } else {
            (
                Syscall::Sendmsg,
                attempt(&mut msg.counters, Syscall::Sendmsg, || {
                    rustix::net::sendmsg(socket, slices, &mut Default::default(), flags)
                }),
            )
        };
        let n = match result.map_err(|e| TransferError::from_errno(call, e))? {
            Attempt::Ok(n) => n as u64,
            Attempt::WouldBlock => return Ok(Attempt::WouldBlock),
        };
        msg.counters.user_space_bytes += n;
        msg.counters.bytes_sent += n;
        // Spread the sent count over the gathered chunks.
        let mut left = n;
        while left > 0 && msg.idx < msg.chunks.len() {
            let room = msg.chunks[msg.idx].len() - msg.done_in_chunk;
            if left >= room {
                left -= room;
                msg.idx += 1;
                msg.done_in_chunk = 0;
            } else {
                msg.done_in_chunk += left;
                left = 0;
            }
        }
        Ok(Attempt::Ok(()))
    }

    /// `pread` into the user buffer, then `send` from it.
    fn read_write(
        &mut self,
        socket: BorrowedFd<'_>,
        msg: &mut Message<'_>,
        region: FileRegion<'_>,
        remaining: u64,
        more_after: bool,
    ) -> Result<Attempt<()>, TransferError> {
        if self.staged.is_empty() {
            let want = remaining.min(self.buf.len() as u64) as usize;
            let pos = region.offset + msg.done_in_chunk;
            let buf = &mut self.buf[..want];
            let n = match attempt(&mut msg.counters, Syscall::Pread, || {
                rustix::io::pread(region.file, &mut *buf, pos)
            })
            .map_err(|e| syscall_error("pread", e))?
            {
                Attempt::Ok(n) => n,
                Attempt::WouldBlock => return Ok(Attempt::WouldBlock),
            };
            if n == 0 {
                return Err(eof_error(msg, region));
            }
            msg.counters.user_space_bytes += n as u64;
            self.staged = 0..n;
        }
        let more = more_after || (self.staged.len() as u64) < remaining;
        let flags = self.send_flags(more);
        let buf = &self.buf[self.staged.clone()];
        let n = match attempt(&mut msg.counters, Syscall::Send, || {
            rustix::net::send(socket, buf, flags)
        })
        .map_err(|e| TransferError::from_errno(Syscall::Send, e))?
        {
            Attempt::Ok(n) => n,
            Attempt::WouldBlock => return Ok(Attempt::WouldBlock),
        };
        self.staged.start += n;
        msg.delivered_from_user_space(n as u64);
        Ok(Attempt::Ok(()))
    }

    /// Map the region, then `send` from the mapping: the kernel copies out of
    /// the mapping into the socket buffer.
    fn mmap_write(
        &mut self,
        socket: BorrowedFd<'_>,
        msg: &mut Message<'_>,
        region: FileRegion<'_>,
        remaining: u64,
        more_after: bool,
    ) -> Result<Attempt<()>, TransferError> {
        if msg.map.is_none() {
            // A mapping reads zeros, not EOF, in the last page past the file's
            // end, so the region is checked against the size before mapping.
            msg.counters.count(Syscall::Fstat);
            let file_len = rustix::fs::fstat(region.file)
                .map_err(|e| syscall_error("fstat", e))?
                .st_size as u64;
            let start = region.offset + msg.done_in_chunk;
            if start.saturating_add(remaining) > file_len {
                return Err(if msg.done_in_chunk == 0 {
                    TransferError::RegionPastEof {
                        offset: region.offset,
                        len: region.len,
                        file_len,
                    }
                } else {
                    TransferError::SourceTruncated {
                        sent: msg.done_in_chunk,
                        len: region.len,
                    }
                });
            }
            let len = usize::try_from(remaining).map_err(|_| TransferError::RegionPastEof {
                offset: region.offset,
                len: region.len,
                file_len,
            })?;
            msg.counters.count(Syscall::Mmap);
            // SAFETY: the mapping is read-only and never read from user space:
            // its address is only handed to `send(2)`, whose kernel-side copy
            // turns a page lost to truncation into EFAULT instead of SIGBUS,
            // and no Rust reference to its bytes is ever formed.
            let map = unsafe {
                memmap2::MmapOptions::new()
                    .offset(start)
                    .len(len)
                    .map(region.file.as_raw_fd())
            }
            .map_err(|source| TransferError::Syscall {
                call: "mmap",
                source,
            })?;
            msg.map = Some((map, msg.done_in_chunk));
        }
        let Some((map, base)) = &msg.map else {
            unreachable!("mapped above")
        };
        let start = (msg.done_in_chunk - base) as usize;
        let len = ((map.len() - start) as u64).min(MAX_STEP) as usize;
        // SAFETY: `start + len <= map.len()`, so the pointer range lies inside
        // the live mapping.
        let ptr = unsafe { map.as_ptr().add(start) };
        let more = more_after || (len as u64) < remaining;
        let flags = self.send_flags(more).bits() as i32;
        let fd = socket.as_raw_fd();
        let n = match attempt(&mut msg.counters, Syscall::Send, || {
            // SAFETY: `ptr..ptr+len` is inside the mapping (see above), which
            // outlives this call; the kernel reads it with fault handling.
            let n = unsafe { libc::send(fd, ptr.cast(), len, flags) };
            if n < 0 {
                Err(Errno::from_raw_os_error(
                    std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
                ))
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(Attempt::Ok(n)) => n,
            Ok(Attempt::WouldBlock) => return Ok(Attempt::WouldBlock),
            // The kernel faulted on a page past the (new) end of the file.
            Err(Errno::FAULT) => return Err(eof_error(msg, region)),
            Err(e) => return Err(TransferError::from_errno(Syscall::Send, e)),
        };
        msg.delivered_from_user_space(n as u64);
        Ok(Attempt::Ok(()))
    }

    /// `sendfile(2)` from the page cache to the socket.
    fn sendfile(
        &mut self,
        socket: BorrowedFd<'_>,
        msg: &mut Message<'_>,
        region: FileRegion<'_>,
        remaining: u64,
    ) -> Result<Attempt<()>, TransferError> {
        let count = remaining.min(MAX_STEP) as usize;
        let start = region.offset + msg.done_in_chunk;
        let n = match attempt(&mut msg.counters, Syscall::Sendfile, || {
            let mut offset = start;
            rustix::fs::sendfile(socket, region.file, Some(&mut offset), count)
        })
        .map_err(|e| TransferError::from_errno(Syscall::Sendfile, e))?
        {
            Attempt::Ok(n) => n as u64,
            Attempt::WouldBlock => return Ok(Attempt::WouldBlock),
        };
        if n == 0 {
            return Err(eof_error(msg, region));
        }
        msg.delivered_in_kernel(n);
        Ok(Attempt::Ok(()))
    }

    /// `splice(2)` file → pipe when the pipe is empty, then pipe → socket.
    fn splice(
        &mut self,
        socket: BorrowedFd<'_>,
        msg: &mut Message<'_>,
        region: FileRegion<'_>,
        remaining: u64,
        more_after: bool,
    ) -> Result<Attempt<()>, TransferError> {
        self.open_pipe()?;
        let Some(pipe) = self.pipe.as_mut() else {
            unreachable!("opened above")
        };
        if pipe.pending == 0 {
            let count = remaining.min(pipe.capacity as u64) as usize;
            let start = region.offset + msg.done_in_chunk;
            let n = match attempt(&mut msg.counters, Syscall::Splice, || {
                let mut offset = start;
                rustix::pipe::splice(
                    region.file,
                    Some(&mut offset),
                    &pipe.write,
                    None,
                    count,
                    SpliceFlags::MOVE,
                )
            })
            .map_err(|e| syscall_error("splice", e))?
            {
                Attempt::Ok(n) => n,
                Attempt::WouldBlock => return Ok(Attempt::WouldBlock),
            };
            if n == 0 {
                return Err(eof_error(msg, region));
            }
            pipe.pending = n;
        }
        let more = more_after || (pipe.pending as u64) < remaining;
        let flags = if more && self.kind == SocketKind::Tcp {
            SpliceFlags::MOVE | SpliceFlags::MORE
        } else {
            SpliceFlags::MOVE
        };
        let pending = pipe.pending;
        let n = match attempt(&mut msg.counters, Syscall::Splice, || {
            rustix::pipe::splice(&pipe.read, None, socket, None, pending, flags)
        })
        .map_err(|e| TransferError::from_errno(Syscall::Splice, e))?
        {
            Attempt::Ok(n) => n,
            Attempt::WouldBlock => return Ok(Attempt::WouldBlock),
        };
        pipe.pending -= n;
        msg.delivered_in_kernel(n as u64);
        Ok(Attempt::Ok(()))
    }
}
