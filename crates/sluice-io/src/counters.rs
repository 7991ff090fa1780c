//! Exact tallies of what a data path did: every syscall it made, by kind, and
//! where the bytes went. These count the calls the path itself makes; they are
//! not derived from `/proc/self/io`, which counts `sendfile` bytes as both read
//! and written and does not see `splice` or `send` at all.

use std::fmt;
use std::ops::{AddAssign, Sub};

/// The syscalls a data path can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Syscall {
    /// `pread(2)` from the file into a user buffer.
    Pread,
    /// `send(2)` of one user buffer (the `write` of the article).
    Send,
    /// `sendmsg(2)` with an iovec: the gathered `writev` of byte runs.
    Sendmsg,
    /// `sendfile(2)`.
    Sendfile,
    /// `splice(2)`, either direction.
    Splice,
    /// `mmap(2)`.
    Mmap,
    /// `munmap(2)`.
    Munmap,
    /// `fstat(2)`: checking a region against the file's size.
    Fstat,
    /// `poll(2)`: waiting for a non-blocking socket to become writable.
    Poll,
    /// `setsockopt(2)`: `TCP_CORK` on and off.
    Setsockopt,
    /// `io_uring_enter(2)`: submitting a chain of operations and waiting for it.
    IoUringEnter,
}

impl Syscall {
    /// Every kind, in a stable order (the order of the counter array).
    pub const ALL: [Syscall; 11] = [
        Syscall::Pread,
        Syscall::Send,
        Syscall::Sendmsg,
        Syscall::Sendfile,
        Syscall::Splice,
        Syscall::Mmap,
        Syscall::Munmap,
        Syscall::Fstat,
        Syscall::Poll,
        Syscall::Setsockopt,
        Syscall::IoUringEnter,
    ];

    /// The syscall's name as in its man page.
    pub fn name(self) -> &'static str {
        match self {
            Syscall::Pread => "pread",
            Syscall::Send => "send",
            Syscall::Sendmsg => "sendmsg",
            Syscall::Sendfile => "sendfile",
            Syscall::Splice => "splice",
            Syscall::Mmap => "mmap",
            Syscall::Munmap => "munmap",
            Syscall::Fstat => "fstat",
            Syscall::Poll => "poll",
            Syscall::Setsockopt => "setsockopt",
            Syscall::IoUringEnter => "io_uring_enter",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a data path did, per message or in total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    calls: [u64; Syscall::ALL.len()],
    /// Bytes that crossed the user/kernel boundary: bytes read into a user
    /// buffer plus bytes passed to `send`/`sendmsg` from user memory (a mapping
    /// counts: the kernel copies out of it).
    pub user_space_bytes: u64,
    /// Bytes that reached the socket without passing through user memory
    /// (`sendfile`, `splice` from a pipe to the socket).
    pub kernel_bytes: u64,
    /// Bytes delivered to the socket, by any route.
    pub bytes_sent: u64,
    /// Calls that returned `EAGAIN` on a non-blocking socket.
    pub eagain: u64,
    /// Calls interrupted by a signal (`EINTR`) and retried.
    pub eintr: u64,
}

impl Counters {
    /// How many times `call` was made (including calls that failed).
    pub fn calls(&self, call: Syscall) -> u64 {
        self.calls[call.index()]
    }

    /// Total syscalls of every kind.
    pub fn total_calls(&self) -> u64 {
        self.calls.iter().sum()
    }

    pub(crate) fn count(&mut self, call: Syscall) {
        self.calls[call.index()] += 1;
    }
}

impl AddAssign for Counters {
    fn add_assign(&mut self, rhs: Counters) {
        for (a, b) in self.calls.iter_mut().zip(rhs.calls) {
            *a += b;
        }
        self.user_space_bytes += rhs.user_space_bytes;
        self.kernel_bytes += rhs.kernel_bytes;
        self.bytes_sent += rhs.bytes_sent;
        self.eagain += rhs.eagain;
        self.eintr += rhs.eintr;
    }
}

impl Sub for Counters {
    type Output = Counters;
    /// The difference between a later snapshot and an earlier one.
    fn sub(self, rhs: Counters) -> Counters {
        let mut out = self;
        for (a, b) in out.calls.iter_mut().zip(rhs.calls) {
            *a = a.saturating_sub(b);
        }
        out.user_space_bytes = self.user_space_bytes.saturating_sub(rhs.user_space_bytes);
        out.kernel_bytes = self.kernel_bytes.saturating_sub(rhs.kernel_bytes);
        out.bytes_sent = self.bytes_sent.saturating_sub(rhs.bytes_sent);
        out.eagain = self.eagain.saturating_sub(rhs.eagain);
        out.eintr = self.eintr.saturating_sub(rhs.eintr);
        out
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sent={}B", self.bytes_sent)?;
        for call in Syscall::ALL {
            let n = self.calls(call);
            if n > 0 {
                write!(f, " {}={n}", call.name())?;
            }
        }
        write!(
            f,
            " user_space={}B kernel={}B eagain={} eintr={}",
            self.user_space_bytes, self.kernel_bytes, self.eagain, self.eintr
        )
    }
}
