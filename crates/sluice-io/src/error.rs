//! The typed errors of the data paths. Every failure a peer, a file or a caller
//! can cause maps to one of these; none of them panics.

use std::io;
use std::path::PathBuf;

use crate::counters::Syscall;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The source file does not exist.
    #[error("source file {path} does not exist")]
    FileNotFound { path: PathBuf },
    /// The source file could not be opened for another reason.
    #[error("cannot open source file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// The region asks for bytes the file does not have.
    #[error("region {offset}+{len} ends past the end of the file ({file_len} bytes)")]
    RegionPastEof {
        offset: u64,
        len: u64,
        file_len: u64,
    },
    /// The file became shorter while the region was being sent: the read side
    /// hit end-of-file (or the mapping lost its pages) before the region ended.
    /// On `mmap+write`, a cut inside a page is seen only at the next page
    /// boundary: up to one page of zeros may have gone out before this error.
    /// Either way the stream's framing is lost and the connection must close.
    #[error("source file was truncated during the send: {sent} of {len} region bytes delivered")]
    SourceTruncated { sent: u64, len: u64 },
    /// The peer closed or reset the connection (`EPIPE`, `ECONNRESET`).
    #[error("peer closed the connection ({0})")]
    PeerClosed(io::Error),
    /// The socket is not connected.
    #[error("socket is not connected")]
    NotConnected,
    /// The descriptor is not a stream socket.
    #[error("descriptor is not a stream socket")]
    NotAStreamSocket,
    /// A message was resumed after another message started on the same
    /// sender; its staged bytes are gone.
    #[error("message resumed after another message started on the same sender")]
    Interleaved,
    /// The io_uring path was asked for where io_uring cannot run.
    #[error("io_uring is not available: {0}")]
    UringUnavailable(io::Error),
    /// Any other failure of a syscall.
    #[error("{call} failed: {source}")]
    Syscall {
        call: &'static str,
        source: io::Error,
    },
}

impl TransferError {
    /// Classifies a failed syscall on the socket side of a transfer.
    pub(crate) fn from_errno(call: Syscall, errno: rustix::io::Errno) -> TransferError {
        use rustix::io::Errno;
        let source = io::Error::from_raw_os_error(errno.raw_os_error());
        match errno {
            Errno::PIPE | Errno::CONNRESET => TransferError::PeerClosed(source),
            Errno::NOTCONN => TransferError::NotConnected,
            Errno::NOTSOCK => TransferError::NotAStreamSocket,
            _ => TransferError::Syscall {
                call: call.name(),
                source,
            },
        }
    }

    /// True when the peer went away; the connection is finished but nothing
    /// is wrong with the source.
    pub fn is_peer_closed(&self) -> bool {
        matches!(self, TransferError::PeerClosed(_))
    }
}

impl From<TransferError> for io::Error {
    fn from(e: TransferError) -> io::Error {
        let kind = match &e {
            TransferError::FileNotFound { .. } => io::ErrorKind::NotFound,
            TransferError::RegionPastEof { .. } | TransferError::SourceTruncated { .. } => {
                io::ErrorKind::UnexpectedEof
            }
            TransferError::PeerClosed(_) => io::ErrorKind::BrokenPipe,
            TransferError::NotConnected => io::ErrorKind::NotConnected,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
