//! `SIGPIPE`: `send` takes `MSG_NOSIGNAL`, but `sendfile` and `splice` have no
//! such flag, so a peer that vanishes mid-transfer would kill a process whose
//! `SIGPIPE` is still at its default. Rust binaries ignore it before `main`;
//! a host program in another language may not, so senders make sure.

use std::sync::Once;

static IGNORE: Once = Once::new();

/// Sets `SIGPIPE` to ignored if (and only if) it is at its default action.
/// A handler the host program installed is left alone.
pub fn ignore_sigpipe() {
    IGNORE.call_once(|| {
        // SAFETY: querying and setting a signal disposition with a zeroed,
        // then filled, `sigaction`; no handler code of ours runs.
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction == libc::SIG_DFL
            {
                let mut ignore: libc::sigaction = std::mem::zeroed();
                ignore.sa_sigaction = libc::SIG_IGN;
                libc::sigaction(libc::SIGPIPE, &ignore, std::ptr::null_mut());
            }
        }
    });
}
