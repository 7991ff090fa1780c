//! A process whose SIGPIPE is at its default (as in a C host program) must
//! survive a vanished peer on every path, including sendfile and splice,
//! which have no MSG_NOSIGNAL. Its own test binary: it changes a process-wide
//! signal disposition.

mod common;

use common::{NETS, file_with, pair, pattern};
use sluice_io::{DataPath, FileRegion, Sender};

#[test]
fn default_sigpipe_does_not_kill_the_process_when_the_peer_is_gone() {
    // SAFETY: restores SIGPIPE's default action (Rust's runtime set it to
    // ignored); this test binary runs this one test only.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        assert_eq!(
            libc::sigaction(libc::SIGPIPE, &dfl, std::ptr::null_mut()),
            0
        );
    }
    let data = pattern(8 << 20);
    let (_path, file) = file_with(&data);
    for path in DataPath::ALL {
        for net in NETS {
            let (tx, rx) = pair(net);
            drop(rx);
            let mut sender = Sender::new(tx.fd(), path).expect("sender");
            let err = sender
                .send_region(tx.fd(), FileRegion::new(&file, 0, data.len() as u64))
                .expect_err("peer is gone");
            // Reaching this line at all is the point: SIGPIPE did not kill us.
            assert!(err.is_peer_closed(), "{path} {net:?}: {err}");
        }
    }
}
