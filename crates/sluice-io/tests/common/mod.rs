//! Shared helpers for the data-path tests: deterministic file contents,
//! connected socket pairs, and a receiver thread that keeps what it reads.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

/// Deterministic, non-repeating-looking bytes: byte `i` of every test file.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    out
}

/// A temporary file holding `contents`.
pub fn file_with(contents: &[u8]) -> (tempfile::TempPath, File) {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(contents).expect("write temp file");
    f.flush().expect("flush");
    let path = f.into_temp_path();
    let file = File::open(&path).expect("reopen temp file");
    (path, file)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    Tcp,
    Unix,
}

pub const NETS: [Net; 2] = [Net::Tcp, Net::Unix];

/// Either end of a connected stream socket.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }

    pub fn into_owned(self) -> OwnedFd {
        match self {
            Stream::Tcp(s) => s.into(),
            Stream::Unix(s) => s.into(),
        }
    }

    pub fn set_nonblocking(&self, on: bool) {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on).expect("nonblocking"),
            Stream::Unix(s) => s.set_nonblocking(on).expect("nonblocking"),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

/// A connected (sender, receiver) pair.
pub fn pair(net: Net) -> (Stream, Stream) {
    match net {
        Net::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            (Stream::Tcp(server), Stream::Tcp(client))
        }
        Net::Unix => {
            let (a, b) = UnixStream::pair().expect("socketpair");
            (Stream::Unix(a), Stream::Unix(b))
        }
    }
}

/// Reads until EOF (or an error) and returns everything read.
/// `delay` stalls the reader first so the sender's socket fills up.
pub fn receive_all(mut rx: Stream, delay: Duration) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match rx.read(&mut buf) {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
}

/// Shrinks the socket's send buffer (the kernel doubles and floors the value).
pub fn tiny_sndbuf(fd: BorrowedFd<'_>) {
    rustix::net::sockopt::set_socket_send_buffer_size(fd, 4096).expect("SO_SNDBUF");
}
