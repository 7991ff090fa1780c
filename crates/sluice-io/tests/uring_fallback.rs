//! Where io_uring is unavailable (here: disabled for this test process), the
//! io_uring path says so with a typed error instead of failing later, and the
//! other paths are unaffected. A process of its own, because the switch is an
//! environment variable read once.

mod common;

use common::{Net, pair};
use sluice_io::{DataPath, Sender, TransferError};

#[test]
fn io_uring_path_reports_unavailable_and_others_still_work() {
    // SAFETY: set before any thread of this test binary reads the environment.
    unsafe { std::env::set_var("SLUICE_DISABLE_IO_URING", "1") };
    assert!(!DataPath::IoUring.is_available());
    let (tx, _rx) = pair(Net::Tcp);
    match Sender::new(tx.fd(), DataPath::IoUring) {
        Err(TransferError::UringUnavailable(e)) => {
            assert!(e.to_string().contains("SLUICE_DISABLE_IO_URING"), "{e}")
        }
        other => panic!("expected UringUnavailable, got {other:?}"),
    }
    for path in DataPath::ALL {
        if path != DataPath::IoUring {
            assert!(path.is_available());
            Sender::new(tx.fd(), path).expect("other paths unaffected");
        }
    }
}
