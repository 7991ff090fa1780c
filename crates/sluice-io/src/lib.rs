//! # sluice-io: the data paths of the article
//!
//! The bottom layer of Sluice. It moves a region of a file to a connected
//! stream socket (TCP or Unix) by one of the techniques of the source article,
//! chosen at run time ([`DataPath`]), and counts exactly what each does
//! ([`Counters`]): syscalls by kind, bytes through user space, bytes moved
//! kernel-side, `EAGAIN`s and `EINTR`s.
//!
//! | path | how |
//! |---|---|
//! | `read_write` | `pread` into a user buffer, `send` it |
//! | `mmap_write` | map the region, `send` from the mapping |
//! | `sendfile` | `sendfile(2)` |
//! | `splice` | file → pipe → socket with `splice(2)`, one pipe per connection |
//!
//! The gather case (the article's scatter/gather `sendfile`) is a [`Message`]
//! of byte runs and file regions: byte runs go out gathered in one `sendmsg`
//! with `MSG_MORE`, regions by the path, `TCP_CORK` where `sendfile` would
//! otherwise push a partial segment. [`offload`] reports whether the outgoing
//! device has the scatter/gather and checksum offload that make it 0-copy.
//!
//! This crate knows nothing of Kafka.

pub mod cache;
mod counters;
mod error;
pub mod offload;
mod path;
mod sender;
pub mod signal;
#[cfg(feature = "tokio")]
pub mod tokio;
mod uring_probe;

pub use counters::{Counters, Syscall};
pub use error::TransferError;
pub use path::{DataPath, Model};
pub use sender::{
    Chunk, DEFAULT_PIPE_SIZE, DEFAULT_READ_BUFFER, FileRegion, Message, Progress, Sender,
    SocketKind, open_source, socket_kind,
};
