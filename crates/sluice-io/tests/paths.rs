//! Every data path, over TCP and Unix sockets: byte-exact delivery, exact
//! counters, non-blocking sockets, gathered messages and every typed error.

mod common;

use std::net::TcpListener;
use std::os::fd::AsFd;
use std::time::Duration;

use common::{NETS, Net, file_with, pair, pattern, receive_all, tiny_sndbuf};
use sluice_io::{
    Chunk, DataPath, FileRegion, Message, Sender, Syscall, TransferError, open_source,
};

const NO_DELAY: Duration = Duration::ZERO;

#[test]
fn every_path_delivers_edge_regions_byte_exact() {
    let data = pattern(300_000);
    let (_path, file) = file_with(&data);
    // (offset, len): offset 0, unaligned offsets, the lengths the issue names.
    let regions = [
        (0u64, 0u64),
        (0, 1),
        (0, 4095),
        (0, 4097),
        (1, 4095),
        (4097, 4097),
        (12_345, 1),
        (777, 0),
        (4096, 65_536),
        (12_345, 200_001),
        (299_999, 1),
    ];
    let expected: Vec<u8> = regions
        .iter()
        .flat_map(|&(o, l)| data[o as usize..(o + l) as usize].to_vec())
        .collect();
    for path in DataPath::ALL {
        for net in NETS {
            let (tx, rx) = pair(net);
            let reader = receive_all(rx, NO_DELAY);
            let mut sender = Sender::new(tx.fd(), path).expect("sender");
            for &(offset, len) in &regions {
                let c = sender
                    .send_region(tx.fd(), FileRegion::new(&file, offset, len))
                    .unwrap_or_else(|e| panic!("{path} {net:?} {offset}+{len}: {e}"));
                assert_eq!(c.bytes_sent, len, "{path} {net:?} {offset}+{len}");
            }
            drop(tx);
            let got = reader.join().expect("reader");
            assert!(got == expected, "{path} over {net:?}: bytes differ");
            assert_eq!(sender.totals().bytes_sent, expected.len() as u64);
        }
    }
}

#[test]
fn every_path_delivers_64_mib_from_an_unaligned_offset() {
    let len = (64 << 20) + 5;
    let data = pattern(len + 10);
    let (_path, file) = file_with(&data);
    for path in DataPath::ALL {
        let (tx, rx) = pair(Net::Tcp);
        let reader = receive_all(rx, NO_DELAY);
        let mut sender = Sender::new(tx.fd(), path).expect("sender");
        let c = sender
            .send_region(tx.fd(), FileRegion::new(&file, 3, len as u64))
            .expect("send 64 MiB");
        drop(tx);
        let got = reader.join().expect("reader");
        assert_eq!(got.len(), len, "{path}");
        assert!(got[..] == data[3..3 + len], "{path}: bytes differ");
        assert_eq!(c.bytes_sent, len as u64);
    }
}

#[test]
fn counters_match_what_each_path_must_do() {
    let len: u64 = 1 << 20;
    let data = pattern(len as usize);
    let (_path, file) = file_with(&data);
    for path in DataPath::ALL {
        let (tx, rx) = pair(Net::Tcp);
        let reader = receive_all(rx, NO_DELAY);
        let mut sender = Sender::new(tx.fd(), path).expect("sender");
        let c = sender
            .send_region(tx.fd(), FileRegion::new(&file, 0, len))
            .expect("send");
        drop(tx);
        assert_eq!(reader.join().expect("reader").len() as u64, len);
        assert_eq!(c.bytes_sent, len, "{path}");
        assert_eq!(&c, sender.totals(), "{path}: one message, totals equal it");
        match path {
            DataPath::ReadWrite => {
                // Every byte is read into user space, then sent from it.
                assert_eq!(c.user_space_bytes, 2 * len);
                assert_eq!(c.kernel_bytes, 0);
                assert_eq!(
                    c.calls(Syscall::Pread),
                    len / sluice_io::DEFAULT_READ_BUFFER as u64
                );
                assert!(c.calls(Syscall::Send) >= c.calls(Syscall::Pread));
            }
            DataPath::MmapWrite => {
                assert_eq!(c.user_space_bytes, len, "sent from the mapping");
                assert_eq!(c.kernel_bytes, 0);
                assert_eq!(c.calls(Syscall::Mmap), 1);
                assert_eq!(c.calls(Syscall::Munmap), 1);
                assert_eq!(c.calls(Syscall::Pread), 0);
                assert_eq!(c.calls(Syscall::Fstat), 1, "size checked before mapping");
            }
            DataPath::Sendfile => {
                assert_eq!(c.user_space_bytes, 0);
                assert_eq!(c.kernel_bytes, len);
                assert!(c.calls(Syscall::Sendfile) >= 1);
                assert_eq!(c.total_calls(), c.calls(Syscall::Sendfile));
            }
            DataPath::Splice => {
                assert_eq!(c.user_space_bytes, 0);
                assert_eq!(c.kernel_bytes, len);
                assert_eq!(c.total_calls(), c.calls(Syscall::Splice));
                let pipe = sender.pipe_capacity().expect("pipe") as u64;
                // At least one file->pipe and one pipe->socket call per pipe-full.
                assert!(c.calls(Syscall::Splice) >= 2 * len.div_ceil(pipe));
            }
            DataPath::IoUring => {
                assert_eq!(c.user_space_bytes, 0);
                assert_eq!(c.kernel_bytes, len);
                // The whole region in one chain: one io_uring_enter on a
                // blocking socket, and no other syscall.
                assert_eq!(c.total_calls(), c.calls(Syscall::IoUringEnter));
                assert_eq!(c.calls(Syscall::IoUringEnter), 1, "{c}");
            }
        }
    }
}

#[test]
fn gathered_message_of_byte_runs_and_regions_arrives_in_order() {
    let data = pattern(100_000);
    let (_path, file) = file_with(&data);
    let header = b"HEADER-0123456789".to_vec();
    let middle = b"|partition fields|".to_vec();
    let trailer = b"\0end".to_vec();
    for path in DataPath::ALL {
        for net in NETS {
            let (tx, rx) = pair(net);
            let reader = receive_all(rx, NO_DELAY);
            let mut sender = Sender::new(tx.fd(), path).expect("sender");
            let mut msg = Message::new(vec![
                Chunk::Bytes(&header),
                Chunk::Bytes(b"+"),
                Chunk::File(FileRegion::new(&file, 10, 40_000)),
                Chunk::Bytes(&middle),
                Chunk::File(FileRegion::new(&file, 50_001, 4097)),
                Chunk::Bytes(&trailer),
            ]);
            let c = sender.send(tx.fd(), &mut msg).expect("send message");
            drop(tx);
            let mut expected = header.clone();
            expected.extend_from_slice(b"+");
            expected.extend_from_slice(&data[10..40_010]);
            expected.extend_from_slice(&middle);
            expected.extend_from_slice(&data[50_001..54_098]);
            expected.extend_from_slice(&trailer);
            let got = reader.join().expect("reader");
            assert!(got == expected, "{path} over {net:?}: bytes differ");
            assert_eq!(c.bytes_sent, expected.len() as u64);
            if path == DataPath::IoUring {
                // Byte runs and regions all go through the pipe, in one chain.
                assert_eq!(c.total_calls(), 1, "{path}: {c}");
                assert_eq!(c.calls(Syscall::IoUringEnter), 1, "{path}: {c}");
            } else {
                // The first two byte runs leave in one gathered sendmsg.
                assert!(c.calls(Syscall::Sendmsg) >= 1, "{path}: {c}");
            }
            if path.is_zero_copy() {
                assert_eq!(
                    c.user_space_bytes,
                    (header.len() + 1 + middle.len() + trailer.len()) as u64
                );
                assert_eq!(c.kernel_bytes, 40_000 + 4097);
            }
            // sendfile has no MSG_MORE: TCP is corked around the message.
            let corks = if path == DataPath::Sendfile && net == Net::Tcp {
                2
            } else {
                0
            };
            assert_eq!(c.calls(Syscall::Setsockopt), corks, "{path} {net:?}");
        }
    }
}

#[test]
fn nonblocking_socket_with_tiny_send_buffer_survives_partial_writes() {
    let len = 2 << 20;
    let data = pattern(len + 1);
    let (_path, file) = file_with(&data);
    for path in DataPath::ALL {
        for net in NETS {
            let (tx, rx) = pair(net);
            tx.set_nonblocking(true);
            tiny_sndbuf(tx.fd());
            let reader = receive_all(rx, Duration::from_millis(50));
            let mut sender = Sender::new(tx.fd(), path).expect("sender");
            let mut msg = Message::new(vec![
                Chunk::Bytes(b"hdr"),
                Chunk::File(FileRegion::new(&file, 1, len as u64)),
            ]);
            let c = sender.send(tx.fd(), &mut msg).expect("send");
            drop(tx);
            let got = reader.join().expect("reader");
            assert_eq!(&got[..3], b"hdr");
            assert!(
                got[3..] == data[1..1 + len],
                "{path} over {net:?}: bytes differ"
            );
            assert!(
                c.eagain > 0,
                "{path} {net:?}: a stalled reader must cause EAGAIN: {c}"
            );
            assert!(
                c.calls(Syscall::Poll) > 0,
                "{path} {net:?}: waits with poll: {c}"
            );
        }
    }
}

#[test]
fn missing_file_is_a_typed_error() {
    let err = open_source(std::path::Path::new("/nonexistent/sluice/segment.log"))
        .expect_err("must fail");
    assert!(matches!(err, TransferError::FileNotFound { .. }), "{err}");
}

#[test]
fn region_past_end_of_file_is_a_typed_error_and_sends_nothing() {
    let data = pattern(10_000);
    let (_path, file) = file_with(&data);
    for path in DataPath::ALL {
        for (offset, len) in [(0u64, 10_001u64), (10_000, 1), (50_000, 4096)] {
            let (tx, rx) = pair(Net::Tcp);
            let reader = receive_all(rx, NO_DELAY);
            let mut sender = Sender::new(tx.fd(), path).expect("sender");
            let err = sender
                .send_region(tx.fd(), FileRegion::new(&file, offset, len))
                .expect_err("past EOF must fail");
            drop(tx);
            let got = reader.join().expect("reader");
            match err {
                TransferError::RegionPastEof { file_len, .. } if offset >= 10_000 => {
                    assert_eq!(file_len, 10_000);
                    assert!(got.is_empty(), "{path}: nothing sent");
                }
                // A region that starts inside the file sends what exists, then
                // reports the shortfall.
                TransferError::SourceTruncated { sent, len: l } => {
                    assert_eq!(l, len);
                    assert_eq!(sent, got.len() as u64);
                    assert!(got[..] == data[offset as usize..offset as usize + got.len()]);
                }
                TransferError::RegionPastEof { file_len, .. } => {
                    assert_eq!(file_len, 10_000);
                    assert!(got.is_empty(), "{path}: nothing sent");
                }
                other => panic!("{path} {offset}+{len}: unexpected error {other}"),
            }
        }
    }
}

#[test]
fn file_truncated_while_being_sent_is_a_typed_error() {
    let len = 32 << 20;
    let data = pattern(len);
    for path in DataPath::ALL {
        let (temp, file) = file_with(&data);
        let (tx, rx) = pair(Net::Tcp);
        tiny_sndbuf(tx.fd());
        // The reader waits until the file has been cut, so the sender is blocked
        // mid-region when it happens.
        let cut_path = temp.to_path_buf();
        let cutter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(cut_path)
                .expect("open");
            f.set_len(1 << 20).expect("truncate");
        });
        let reader = receive_all(rx, Duration::from_millis(200));
        let mut sender = Sender::new(tx.fd(), path).expect("sender");
        let result = sender.send_region(tx.fd(), FileRegion::new(&file, 0, len as u64));
        cutter.join().expect("cutter");
        drop(tx);
        let got = reader.join().expect("reader");
        match result {
            Err(TransferError::SourceTruncated { sent, len: l }) => {
                assert_eq!(l, len as u64);
                assert!(sent < len as u64, "{path}");
                assert_eq!(got.len() as u64, sent, "{path}: receiver got what was sent");
            }
            other => panic!("{path}: expected SourceTruncated, got {other:?}"),
        }
        // What arrived before the cut is the file's real prefix.
        let intact = got.len().min(1 << 20);
        assert!(got[..intact] == data[..intact], "{path}: prefix differs");
    }
}

#[test]
fn closed_peer_is_a_typed_error_not_a_signal() {
    let len = 16 << 20;
    let data = pattern(len);
    let (_path, file) = file_with(&data);
    for path in DataPath::ALL {
        for net in NETS {
            let (tx, rx) = pair(net);
            drop(rx);
            let mut sender = Sender::new(tx.fd(), path).expect("sender");
            let err = sender
                .send_region(tx.fd(), FileRegion::new(&file, 0, len as u64))
                .expect_err("peer is gone");
            assert!(err.is_peer_closed(), "{path} {net:?}: {err}");
        }
    }
}

#[test]
fn reset_peer_is_a_typed_error() {
    let len = 16 << 20;
    let data = pattern(len);
    let (_path, file) = file_with(&data);
    for path in DataPath::ALL {
        let (tx, rx) = pair(Net::Tcp);
        // Linger 0: close sends RST instead of FIN.
        rustix::net::sockopt::set_socket_linger(rx.fd(), Some(Duration::ZERO)).expect("linger");
        let reader = std::thread::spawn(move || {
            let mut rx = rx;
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut rx, &mut buf);
            drop(rx);
        });
        let mut sender = Sender::new(tx.fd(), path).expect("sender");
        let err = sender
            .send_region(tx.fd(), FileRegion::new(&file, 0, len as u64))
            .expect_err("peer reset");
        reader.join().expect("reader");
        assert!(err.is_peer_closed(), "{path}: {err}");
    }
}

#[test]
fn sockets_that_cannot_carry_a_stream_are_refused() {
    // A TCP socket that never connected.
    let unconnected = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .expect("socket");
    let err = Sender::new(unconnected.as_fd(), DataPath::Sendfile).expect_err("not connected");
    assert!(matches!(err, TransferError::NotConnected), "{err}");

    // A listening socket is not connected either.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let err = Sender::new(listener.as_fd(), DataPath::Splice).expect_err("listener");
    assert!(matches!(err, TransferError::NotConnected), "{err}");

    // A datagram socket and a regular file are not stream sockets.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let err = Sender::new(udp.as_fd(), DataPath::ReadWrite).expect_err("udp");
    assert!(matches!(err, TransferError::NotAStreamSocket), "{err}");
    let (_p, file) = file_with(b"x");
    let err = Sender::new(file.as_fd(), DataPath::MmapWrite).expect_err("file");
    assert!(matches!(err, TransferError::NotAStreamSocket), "{err}");
}

#[test]
fn abandoned_message_does_not_leak_bytes_into_the_next() {
    let len = 4 << 20;
    let data = pattern(len);
    let (_path, file) = file_with(&data);
    for path in DataPath::ALL {
        let (tx, rx) = pair(Net::Unix);
        tx.set_nonblocking(true);
        let mut sender = Sender::new(tx.fd(), path).expect("sender");
        let mut first = Message::region(FileRegion::new(&file, 0, len as u64));
        // The reader is not reading: the first message stalls part-way.
        let progress = sender.advance(tx.fd(), &mut first).expect("advance");
        assert_eq!(progress, sluice_io::Progress::WouldBlock);
        let mut second = Message::region(FileRegion::new(&file, 0, 100));
        // Resuming the first after the second started is refused.
        let reader = receive_all(rx, NO_DELAY);
        sender.send(tx.fd(), &mut second).expect("second");
        let err = sender
            .advance(tx.fd(), &mut first)
            .expect_err("interleaved");
        assert!(matches!(err, TransferError::Interleaved), "{path}: {err}");
        drop(tx);
        let got = reader.join().expect("reader");
        // Whatever the first message delivered, the second's bytes follow it
        // exactly: nothing staged for the first leaked in between.
        let first_sent = got.len() - 100;
        assert!(got[..first_sent] == data[..first_sent], "{path}");
        assert!(
            got[first_sent..] == data[..100],
            "{path}: second message intact"
        );
    }
}

/// A fetch response for many partitions: hundreds of byte runs and regions,
/// more than one io_uring chain holds, and more than one pipe-full.
#[test]
fn message_of_hundreds_of_chunks_arrives_in_order() {
    let data = pattern(3_000_000);
    let (_path, file) = file_with(&data);
    let headers: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("<partition {i}>").into_bytes())
        .collect();
    for path in DataPath::ALL {
        for net in NETS {
            let (tx, rx) = pair(net);
            let reader = receive_all(rx, NO_DELAY);
            let mut sender = Sender::new(tx.fd(), path).expect("sender");
            let mut chunks = Vec::new();
            let mut expected = Vec::new();
            for (i, header) in headers.iter().enumerate() {
                // Unaligned regions of varied sizes, 1 byte to ~29 KiB.
                let offset = (i as u64 * 14_983) % 2_900_000;
                let len = 1 + (i as u64 * 7_919) % 29_000;
                chunks.push(Chunk::Bytes(header));
                chunks.push(Chunk::File(FileRegion::new(&file, offset, len)));
                expected.extend_from_slice(header);
                expected.extend_from_slice(&data[offset as usize..(offset + len) as usize]);
            }
            let mut msg = Message::new(chunks);
            let c = sender.send(tx.fd(), &mut msg).expect("send message");
            drop(tx);
            let got = reader.join().expect("reader");
            assert!(got == expected, "{path} over {net:?}: bytes differ");
            assert_eq!(c.bytes_sent, expected.len() as u64, "{path}");
            if path == DataPath::IoUring {
                // 400 chunks need several chains of at most 64 operations,
                // one io_uring_enter each on a blocking socket.
                let enters = c.calls(Syscall::IoUringEnter);
                assert!((7..=16).contains(&enters), "{path} {net:?}: {c}");
                assert_eq!(c.total_calls(), enters, "{c}");
            }
        }
    }
}

/// A connection that only ever sends byte runs (a producer's responses)
/// costs no pipe on the splice path; the first file region opens it.
#[test]
fn the_splice_pipe_is_opened_by_the_first_file_region() {
    let data = pattern(10_000);
    let (_path, file) = file_with(&data);
    let (tx, rx) = pair(Net::Tcp);
    let reader = receive_all(rx, NO_DELAY);
    let mut sender = Sender::new(tx.fd(), DataPath::Splice).expect("sender");
    sender
        .send(
            tx.fd(),
            &mut Message::new(vec![Chunk::Bytes(b"only bytes")]),
        )
        .expect("bytes");
    assert_eq!(sender.pipe_capacity(), None, "no pipe for byte runs");
    sender
        .send_region(tx.fd(), FileRegion::new(&file, 0, 10_000))
        .expect("region");
    assert!(sender.pipe_capacity().is_some_and(|c| c >= 4096));
    drop(tx);
    let got = reader.join().expect("reader");
    assert_eq!(&got[..10], b"only bytes");
    assert!(got[10..] == data[..]);
}
