//! Signals landing on a sender blocked in a syscall (no SA_RESTART) make the
//! call fail with EINTR or return short; every path must carry on and deliver
//! every byte. Its own test binary: it installs a process-wide handler.

mod common;

use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Net, file_with, pair, pattern, receive_all, tiny_sndbuf};
use sluice_io::{DataPath, FileRegion, Sender};

static HANDLED: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_usr1(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn every_path_completes_under_a_storm_of_signals() {
    // SAFETY: installs an async-signal-safe handler (one atomic add) for
    // SIGUSR1 without SA_RESTART, so blocked syscalls return EINTR.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_usr1 as *const () as usize;
        act.sa_flags = 0;
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &act, std::ptr::null_mut()),
            0
        );
    }
    let len = 2 << 20;
    let data = Arc::new(pattern(len));
    let (_path, file) = file_with(&data);
    let file = Arc::new(file);
    for path in DataPath::ALL {
        let (tx, rx) = pair(Net::Tcp);
        tiny_sndbuf(tx.fd());
        let reader = receive_all(rx, Duration::from_millis(20));
        let before = HANDLED.load(Ordering::Relaxed);
        let done = Arc::new(AtomicBool::new(false));
        let sender_done = done.clone();
        let sender_file = file.clone();
        let sender = std::thread::spawn(move || {
            let mut sender = Sender::new(tx.fd(), path).expect("sender");
            let result = sender.send_region(tx.fd(), FileRegion::new(&*sender_file, 0, len as u64));
            sender_done.store(true, Ordering::Release);
            result
        });
        let thread = sender.as_pthread_t();
        while !done.load(Ordering::Acquire) {
            // SAFETY: the thread is alive until `done` is set, and we join it
            // only after this loop; SIGUSR1 has a handler.
            unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
            std::thread::sleep(Duration::from_micros(200));
        }
        let counters = sender
            .join()
            .expect("sender thread")
            .expect("send under signals");
        let got = reader.join().expect("reader");
        assert!(got[..] == data[..], "{path}: bytes differ under signals");
        assert!(
            HANDLED.load(Ordering::Relaxed) > before,
            "{path}: signals were delivered"
        );
        assert!(
            counters.eintr > 0,
            "{path}: interrupted calls were retried: {counters}"
        );
        eprintln!("{path}: {counters}");
    }
}
