//! The receiving side of the transfer benchmark: a separate process that
//! accepts connections on loopback TCP and a Unix socket, reads and discards
//! everything, and at end-of-stream answers with what it received and what
//! receiving cost its thread, so the sender can time the transfer end to end.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::usage::Usage;

/// Size of the reply a receiver sends after end-of-stream:
/// bytes received (u64 LE), then its thread's user and system CPU in µs.
pub const REPLY_LEN: usize = 24;

/// The reply, decoded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reply {
    pub bytes: u64,
    pub cpu_s: f64,
}

impl Reply {
    pub fn decode(buf: &[u8; REPLY_LEN]) -> Reply {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&buf[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        Reply {
            bytes: word(0),
            cpu_s: (word(1) + word(2)) as f64 / 1e6,
        }
    }
}

fn drain(mut stream: impl Read + Write) -> io::Result<()> {
    let start = Usage::thread();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let used = Usage::thread().since(&start);
    let mut reply = [0u8; REPLY_LEN];
    reply[..8].copy_from_slice(&total.to_le_bytes());
    reply[8..16].copy_from_slice(&((used.user_s * 1e6) as u64).to_le_bytes());
    reply[16..].copy_from_slice(&((used.system_s * 1e6) as u64).to_le_bytes());
    stream.write_all(&reply)
}

/// Runs the receiver until standard input closes (the parent benchmark
/// exited or dropped us). Prints `READY <tcp port>` once listening. With
/// `cpu`, every receiving thread runs on that CPU only.
pub fn run_receiver(unix_path: &Path, cpu: Option<usize>) -> io::Result<()> {
    if let Some(cpu) = cpu {
        crate::usage::pin_to_cpu(cpu)?;
    }
    let tcp = TcpListener::bind("127.0.0.1:0")?;
    let _ = std::fs::remove_file(unix_path);
    let unix = UnixListener::bind(unix_path)?;
    println!("READY {}", tcp.local_addr()?.port());
    io::stdout().flush()?;
    std::thread::spawn(move || {
        for conn in tcp.incoming().flatten() {
            std::thread::spawn(move || drain(conn));
        }
    });
    std::thread::spawn(move || {
        for conn in unix.incoming().flatten() {
            std::thread::spawn(move || drain(conn));
        }
    });
    // Exit with the parent: stdin reaches EOF when it goes away.
    let mut line = String::new();
    while io::stdin().lock().read_line(&mut line)? > 0 {
        line.clear();
    }
    let _ = std::fs::remove_file(unix_path);
    Ok(())
}
