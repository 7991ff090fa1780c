//! # sluice-io: the data paths of the article
//!
//! The bottom layer of Sluice. It moves a region of a file to a connected
//! stream socket (TCP or Unix) by one of the techniques of the source article,
//! or by io_uring, chosen at run time ([`DataPath`]), and counts exactly what
//! each does ([`Counters`]): syscalls by kind ([`Syscall`]), bytes through user
//! space, bytes moved kernel-side, `EAGAIN`s and `EINTR`s. The counts are of
//! the calls the path itself makes, not read from `/proc/self/io` (which counts
//! `sendfile` bytes as both read and written and sees neither `splice` nor
//! `send`).
//!
//! | path | how a file region is sent | how it is counted, per region |
//! |---|---|---|
//! | `read_write` | `pread` up to a 64 KiB user buffer ([`DEFAULT_READ_BUFFER`]), `send` it; repeat | `pread` + `send` per buffer-full; every byte twice in `user_space_bytes` (read in, sent out) |
//! | `mmap_write` | `fstat` (the region must lie inside the file), map the region, `send` from the mapping, unmap | `fstat`, `mmap`, `send`s, `munmap`; every byte once in `user_space_bytes` (the kernel copies out of the mapping) |
//! | `sendfile` | `sendfile(2)`, page cache to socket | `sendfile`s; bytes in `kernel_bytes`; on TCP, two `setsockopt`s per message (`TCP_CORK` on, then off) when more bytes follow a region (`sendfile` has no `MSG_MORE`) |
//! | `splice` | file → pipe → socket with `splice(2)`, one pipe per connection (1 MiB asked, [`DEFAULT_PIPE_SIZE`]) | two `splice`s per pipe-full; bytes in `kernel_bytes` |
//! | `io_uring` | the whole message as one chain of linked operations: byte runs written into the pipe, regions spliced into it, the pipe spliced to the socket | one `io_uring_enter` per round: one round per message unless its 64 ring entries run out, an operation comes up short or the socket fills; region bytes in `kernel_bytes`, byte runs in `user_space_bytes` (copied into the pipe) |
//!
//! On every path but io_uring, the byte runs of a message (headers, per-partition
//! fields) go out gathered in one `sendmsg` (or one `send` for a single run),
//! with `MSG_MORE` while more follows; they count in `user_space_bytes`. Every
//! path counts a `poll` each time a blocking send waits for a full
//! non-blocking socket ([`Sender::send`]), every `EAGAIN` and every `EINTR`
//! retried, and an `fstat` when the file turns out shorter than the region.
//! `bytes_sent` is every byte delivered to the socket, by any route.
//! [`Model`] holds the article's row for each path, so model and measurement
//! can be printed side by side.
//!
//! `sendfile`, `splice` and `io_uring` are zero-copy ([`DataPath::is_zero_copy`]):
//! record bytes never enter user space. io_uring may be missing (old kernel),
//! disabled (`kernel.io_uring_disabled`, `SLUICE_DISABLE_IO_URING=1`) or lack
//! `IORING_OP_SPLICE`/`IORING_OP_WRITE`; [`DataPath::unavailable_reason`] says
//! so (probed once per process), [`Sender::new`] then fails with
//! [`TransferError::UringUnavailable`], and the caller picks another path (the
//! broker falls back to `sendfile`).
//!
//! The gather case (the article's scatter/gather `sendfile`) is a [`Message`]
//! of byte runs and file regions ([`Chunk`]). A [`Sender`] (one per
//! connection) advances it as far as the socket allows and resumes it on a
//! non-blocking socket ([`Progress::WouldBlock`]); the `tokio` module (feature
//! `tokio`, on by default) drives it from a tokio runtime. [`offload`] reports whether the outgoing device has the
//! scatter/gather and checksum offload that make `sendfile` 0-copy; [`cache`]
//! measures, evicts and warms a file's pages in the page cache.
//!
//! This crate knows nothing of Kafka.
//!
//! Inside the crate, imports point one way (no module imports one that
//! imports it):
//!
//! - `counters`, `uring_probe`, `signal`, `cache`, `offload`: leaves;
//! - `error` → `counters`; `path` → `uring_probe` (it knows nothing of senders);
//! - `sender/message` → `counters`, `error`; `sender/sys` → `sender/message`;
//!   `sender/uring` → `sender/message`, `sender/sys`, `uring_probe`;
//! - `sender` → `sender/{message, sys, uring}`, `path`, `signal`;
//! - `tokio` → `sender`.

pub mod cache;
mod counters;
mod error;
pub mod ktls;
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
