//! The socket writer sends a frame's buffers and file ranges in order and byte-exact: ranges
//! larger than a pipe, a receiver too slow for the socket buffer (so sends wait for room), and
//! a file shorter than the range it promised (the send fails instead of sending less).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_net::socket_writer::SocketWriter;
use sluice_protocol::{EncodedFrame, FileRange};

/// A connected loopback pair: (the side written by the socket writer, the reading side).
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    (a, b)
}

/// Reads everything until the writer closes, after an initial pause.
fn reader(mut s: TcpStream, pause: Duration) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        std::thread::sleep(pause);
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    })
}

fn data_file(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&bytes).unwrap();
    f.flush().unwrap();
    (f, bytes)
}

#[test]
fn buffers_and_file_ranges_arrive_in_order_even_when_the_receiver_lags() {
    let (file, contents) = data_file(5 << 20);
    let shared = Arc::new(std::fs::File::open(file.path()).unwrap());
    let (w, r) = pair();
    let got = reader(r, Duration::from_millis(300));
    let head = Bytes::from_static(b"skeleton-head");
    let mid = Bytes::from(vec![9u8; 10_000]);
    let tail = Bytes::from_static(b"tail");
    let frame = EncodedFrame {
        chunks: vec![head.clone(), mid.clone(), tail.clone()],
        files: vec![
            (
                1,
                FileRange {
                    file: shared.clone(),
                    offset: 100,
                    len: 3_000_000,
                },
            ),
            (
                3,
                FileRange {
                    file: shared,
                    offset: 4 << 20,
                    len: 1 << 20,
                },
            ),
        ],
    };
    glommio::LocalExecutor::default().run(async move {
        let writer = SocketWriter::new(w.as_raw_fd()).unwrap();
        for _ in 0..2 {
            writer.write_frame(&frame).await.unwrap();
        }
        drop(writer);
        drop(w);
    });
    let mut expected = Vec::new();
    expected.extend_from_slice(&head);
    expected.extend_from_slice(&contents[100..3_000_100]);
    expected.extend_from_slice(&mid);
    expected.extend_from_slice(&tail);
    expected.extend_from_slice(&contents[4 << 20..5 << 20]);
    let once = expected.clone();
    expected.extend_from_slice(&once);
    let got = got.join().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "bytes differ");
}

#[test]
fn a_file_shorter_than_its_range_fails_the_send() {
    let (file, _) = data_file(100_000);
    let shared = Arc::new(std::fs::File::open(file.path()).unwrap());
    let (w, r) = pair();
    let got = reader(r, Duration::ZERO);
    let frame = EncodedFrame {
        chunks: vec![Bytes::from_static(b"size+header")],
        files: vec![(
            1,
            FileRange {
                file: shared,
                offset: 50_000,
                len: 80_000,
            },
        )],
    };
    let err = glommio::LocalExecutor::default().run(async move {
        let writer = SocketWriter::new(w.as_raw_fd()).unwrap();
        let err = writer.write_frame(&frame).await.unwrap_err();
        drop(writer);
        drop(w);
        err
    });
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    // What had been sent before the file ran out is all the peer sees; the connection then
    // ends (the caller closes it), so the peer never takes a short frame for a whole one.
    assert_eq!(got.join().unwrap().len(), 11 + 50_000);
}
