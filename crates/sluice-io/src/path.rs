//! The techniques of the source article, one variant each, and the article's
//! model of what each costs (so model and measurement can be printed side by side).

use std::fmt;
use std::str::FromStr;

/// How file regions reach the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataPath {
    /// `pread` into a user buffer, then `send` it: the traditional path.
    ReadWrite,
    /// Map the region (memmap2), then `send` from the mapping.
    MmapWrite,
    /// `sendfile(2)`: page cache to socket inside the kernel.
    Sendfile,
    /// `splice(2)` file → pipe → socket: the engine modern kernels run sendfile on.
    Splice,
    /// io_uring: the whole message — byte runs written into a pipe, file
    /// regions spliced into it, the pipe spliced to the socket — as one chain of
    /// linked operations, one `io_uring_enter` per message.
    IoUring,
}

impl DataPath {
    /// Every path, in the article's order.
    pub const ALL: [DataPath; 5] = [
        DataPath::ReadWrite,
        DataPath::MmapWrite,
        DataPath::Sendfile,
        DataPath::Splice,
        DataPath::IoUring,
    ];

    /// The stable machine name (`read_write`, `mmap_write`, `sendfile`,
    /// `splice`, `io_uring`).
    pub fn name(self) -> &'static str {
        match self {
            DataPath::ReadWrite => "read_write",
            DataPath::MmapWrite => "mmap_write",
            DataPath::Sendfile => "sendfile",
            DataPath::Splice => "splice",
            DataPath::IoUring => "io_uring",
        }
    }

    /// True when record bytes never enter user space on this path.
    pub fn is_zero_copy(self) -> bool {
        matches!(
            self,
            DataPath::Sendfile | DataPath::Splice | DataPath::IoUring
        )
    }

    /// True when this path can run here: io_uring may be missing (old kernel),
    /// disabled (`kernel.io_uring_disabled`) or lack the splice operation.
    pub fn is_available(self) -> bool {
        self.unavailable_reason().is_none()
    }

    /// Why this path cannot run here, if it cannot (checked once per process).
    pub fn unavailable_reason(self) -> Option<&'static str> {
        match self {
            DataPath::IoUring => crate::uring_probe::unavailable_reason(),
            _ => None,
        }
    }
}

impl fmt::Display for DataPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.replace(['-', '+'], "_").as_str() {
            "read_write" | "readwrite" | "rw" => Ok(DataPath::ReadWrite),
            "mmap_write" | "mmap" => Ok(DataPath::MmapWrite),
            "sendfile" => Ok(DataPath::Sendfile),
            "splice" => Ok(DataPath::Splice),
            "io_uring" | "iouring" | "uring" => Ok(DataPath::IoUring),
            _ => Err(format!(
                "unknown data path {s:?} (expected read_write, mmap_write, sendfile, splice or io_uring)"
            )),
        }
    }
}

/// The article's model of one transfer of a file region to a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Model {
    /// Syscalls per transfer in the model (not counting page faults).
    pub syscalls: u32,
    /// User/kernel mode switches per transfer.
    pub mode_switches: u32,
    /// Copies made by the CPU.
    pub cpu_copies: u32,
    /// Copies made by DMA engines (disk → page cache, socket buffer → NIC).
    pub dma_copies: u32,
    /// A short note on the row.
    pub note: &'static str,
}

impl Model {
    /// The article's row for a path. `gather` selects the scatter/gather DMA
    /// row for `sendfile` (a NIC with SG and checksum offload).
    pub fn of(path: DataPath, gather: bool) -> Model {
        match (path, gather) {
            (DataPath::ReadWrite, _) => Model {
                syscalls: 2,
                mode_switches: 4,
                cpu_copies: 2,
                dma_copies: 2,
                note: "page cache -> user buffer -> socket buffer",
            },
            (DataPath::MmapWrite, _) => Model {
                syscalls: 2,
                mode_switches: 4,
                cpu_copies: 1,
                dma_copies: 2,
                note: "mapping -> socket buffer (+ page faults)",
            },
            (DataPath::Sendfile, false) => Model {
                syscalls: 1,
                mode_switches: 2,
                cpu_copies: 1,
                dma_copies: 2,
                note: "page cache -> socket buffer",
            },
            (DataPath::Sendfile, true) => Model {
                syscalls: 1,
                mode_switches: 2,
                cpu_copies: 0,
                dma_copies: 2,
                note: "descriptors only; needs NIC scatter/gather + csum offload",
            },
            (DataPath::Splice, _) => Model {
                syscalls: 2,
                mode_switches: 4,
                cpu_copies: 0,
                dma_copies: 2,
                note: "page references moved file -> pipe -> socket",
            },
            (DataPath::IoUring, _) => Model {
                syscalls: 1,
                mode_switches: 2,
                cpu_copies: 0,
                dma_copies: 2,
                note: "splice chain submitted in one io_uring_enter",
            },
        }
    }
}
