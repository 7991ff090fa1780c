//! Whether this kernel can run the io_uring data path: io_uring may be missing
//! (old kernel), disabled (`kernel.io_uring_disabled`, or a seccomp filter) or
//! lack the operations the path chains. [`crate::DataPath::unavailable_reason`]
//! reports the answer; the io_uring sender refuses to start without it.
//!
//! A leaf module: it knows nothing of paths or senders, so both can ask it.

use std::io;
use std::sync::OnceLock;

use io_uring::{IoUring, Probe, opcode};

/// Set to disable io_uring in this process, to exercise the fall-back.
pub const DISABLE_ENV: &str = "SLUICE_DISABLE_IO_URING";

/// Why io_uring cannot run the splice chain here, if it cannot. Checked once
/// per process.
pub(crate) fn unavailable_reason() -> Option<&'static str> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| probe().err().map(|e| e.to_string()))
        .as_deref()
}

/// Why io_uring cannot be used here, if it cannot: set up a two-entry ring and
/// ask the kernel whether it supports `IORING_OP_SPLICE` and `IORING_OP_WRITE`.
pub(crate) fn probe() -> io::Result<()> {
    if std::env::var_os(DISABLE_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("disabled by {DISABLE_ENV}"),
        ));
    }
    let ring = IoUring::new(2)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for (code, name) in [
        (opcode::Splice::CODE, "IORING_OP_SPLICE"),
        (opcode::Write::CODE, "IORING_OP_WRITE"),
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("kernel lacks {name}"),
            ));
        }
    }
    Ok(())
}
