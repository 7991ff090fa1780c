//! The sender driven from tokio: non-blocking sockets, readiness from the
//! reactor, byte-exact delivery on every path over TCP and Unix sockets.

mod common;

use std::os::fd::AsFd;

use common::{file_with, pattern};
use sluice_io::{Chunk, DataPath, FileRegion, Message, Sender};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "current_thread")]
async fn every_path_sends_through_tokio_tcp_and_unix_streams() {
    let len = 1 << 20;
    let data = pattern(len);
    let (_path, file) = file_with(&data);
    let mut expected = b"header".to_vec();
    expected.extend_from_slice(&data[7..7 + len - 7]);
    for path in DataPath::ALL {
        // TCP
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.expect("read");
            out
        });
        let (server, _) = listener.accept().await.expect("accept");
        common::tiny_sndbuf(server.as_fd());
        let mut sender = Sender::new(server.as_fd(), path).expect("sender");
        let mut msg = Message::new(vec![
            Chunk::Bytes(b"header"),
            Chunk::File(FileRegion::new(&file, 7, (len - 7) as u64)),
        ]);
        let c = sender.send_async(&server, &mut msg).await.expect("send");
        drop(server);
        let got = client.await.expect("client");
        assert!(got == expected, "{path} tcp: bytes differ");
        assert_eq!(c.bytes_sent, expected.len() as u64);

        // Unix
        let (a, mut b) = tokio::net::UnixStream::pair().expect("pair");
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            b.read_to_end(&mut out).await.expect("read");
            out
        });
        let mut sender = Sender::new(a.as_fd(), path).expect("sender");
        let mut msg = Message::new(vec![
            Chunk::Bytes(b"header"),
            Chunk::File(FileRegion::new(&file, 7, (len - 7) as u64)),
        ]);
        sender.send_async(&a, &mut msg).await.expect("send");
        drop(a);
        let got = reader.await.expect("reader");
        assert!(got == expected, "{path} unix: bytes differ");
    }
}
