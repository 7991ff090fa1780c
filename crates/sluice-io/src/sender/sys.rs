//! The syscall plumbing every data path shares: the socket's kind, the
//! per-connection pipe, one syscall attempt with `EINTR` retries and counting,
//! and the errors a failed call or a short file turns into.

use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketType};

use super::message::{FileRegion, Message};
use crate::counters::{Counters, Syscall};
use crate::error::TransferError;

/// The transport under the socket, which decides whether `MSG_MORE` and
/// `TCP_CORK` mean anything and whether a network device is involved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    Tcp,
    Unix,
}

/// The pipe of the `splice` and io_uring paths (one per connection).
#[derive(Debug)]
pub(super) struct Pipe {
    pub(super) read: OwnedFd,
    pub(super) write: OwnedFd,
    pub(super) capacity: usize,
    /// Bytes spliced in from the file and not yet out to the socket.
    pub(super) pending: usize,
}

impl Pipe {
    pub(super) fn open(requested: usize) -> Result<Pipe, TransferError> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| syscall_error("pipe2", e))?;
        // An unprivileged process may be refused a pipe over pipe-max-size;
        // then the pipe keeps the size the kernel gave it.
        let capacity = match rustix::pipe::fcntl_setpipe_size(&write, requested) {
            Ok(size) => size,
            Err(_) => rustix::pipe::fcntl_getpipe_size(&write)
                .map_err(|e| syscall_error("fcntl(F_GETPIPE_SZ)", e))?,
        };
        Ok(Pipe {
            read,
            write,
            capacity,
            pending: 0,
        })
    }
}

/// A failed syscall on the file or pipe side, named.
pub(super) fn syscall_error(call: &'static str, errno: Errno) -> TransferError {
    TransferError::Syscall {
        call,
        source: std::io::Error::from_raw_os_error(errno.raw_os_error()),
    }
}

/// Outcome of one syscall after `EINTR` retries.
pub(super) enum Attempt<T> {
    Ok(T),
    WouldBlock,
}

/// Makes `f` once, retrying on `EINTR`, counting every call, `EAGAIN` and `EINTR`.
pub(super) fn attempt<T>(
    counters: &mut Counters,
    call: Syscall,
    mut f: impl FnMut() -> rustix::io::Result<T>,
) -> Result<Attempt<T>, Errno> {
    loop {
        counters.count(call);
        match f() {
            Ok(v) => return Ok(Attempt::Ok(v)),
            Err(Errno::INTR) => counters.eintr += 1,
            Err(Errno::AGAIN) => {
                counters.eagain += 1;
                return Ok(Attempt::WouldBlock);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The read side hit end-of-file inside a region: decide whether the region
/// never fit the file or the file shrank while it was being sent.
pub(super) fn eof_error(msg: &mut Message<'_>, region: FileRegion<'_>) -> TransferError {
    msg.counters.count(Syscall::Fstat);
    let file_len = rustix::fs::fstat(region.file)
        .map(|st| st.st_size as u64)
        .unwrap_or(0);
    if msg.done_in_chunk == 0 && region.offset.saturating_add(region.len) > file_len {
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
    }
}

/// Checks that `socket` is a connected stream socket and says which kind.
pub fn socket_kind(socket: BorrowedFd<'_>) -> Result<SocketKind, TransferError> {
    let ty = rustix::net::sockopt::socket_type(socket).map_err(|e| match e {
        Errno::NOTSOCK => TransferError::NotAStreamSocket,
        e => syscall_error("getsockopt(SO_TYPE)", e),
    })?;
    if ty != SocketType::STREAM {
        return Err(TransferError::NotAStreamSocket);
    }
    match rustix::net::getpeername(socket) {
        Ok(Some(_)) => {}
        // A Unix socket pair has an unnamed peer: still connected.
        Ok(None) => {}
        Err(Errno::NOTCONN) => return Err(TransferError::NotConnected),
        Err(e) => return Err(syscall_error("getpeername", e)),
    }
    let local = rustix::net::getsockname(socket).map_err(|e| syscall_error("getsockname", e))?;
    Ok(match local.address_family() {
        AddressFamily::UNIX => SocketKind::Unix,
        _ => SocketKind::Tcp,
    })
}
