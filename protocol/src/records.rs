//! Record data as the broker sends it: a list of pieces written in order, never joined.
//!
//! A Fetch response carries each partition's record batches as they are found: buffers of the
//! shard's batch cache (a batch is often its rewritten header and its records section, two
//! buffers) and ranges of segment files, which the connection moves to the socket with
//! `splice` so that the bytes never pass through user space. The codec only carries these
//! pieces to the [`EncodedFrame`](crate::EncodedFrame); it reads no file. Decoding a response
//! gives one in-memory piece (a slice of the received frame).

use std::fs::File;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// A byte range of an open file, sent by the kernel from the page cache to the socket.
///
/// The `Arc<File>` keeps the file open, so the range stays readable even when the file is
/// deleted (retention) before the send: the kernel frees a deleted file's data only when its
/// last descriptor closes. It is `Send`: the range is found on the partition's home shard and
/// sent by the connection's shard.
#[derive(Clone)]
pub struct FileRange {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u64,
}

impl FileRange {
    /// The first `len` bytes of this range.
    pub fn prefix(&self, len: u64) -> FileRange {
        FileRange {
            file: self.file.clone(),
            offset: self.offset,
            len: len.min(self.len),
        }
    }
}

impl PartialEq for FileRange {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.file, &other.file) && self.offset == other.offset && self.len == other.len
    }
}

impl Eq for FileRange {}

impl std::fmt::Debug for FileRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::os::fd::AsRawFd;
        write!(
            f,
            "FileRange(fd {} @{} +{})",
            self.file.as_raw_fd(),
            self.offset,
            self.len
        )
    }
}

/// One piece of a records value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordsPiece {
    Bytes(Bytes),
    File(FileRange),
}

impl RecordsPiece {
    pub fn len(&self) -> usize {
        match self {
            RecordsPiece::Bytes(b) => b.len(),
            RecordsPiece::File(f) => f.len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A records value of a response: its pieces, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    pieces: Vec<RecordsPiece>,
}

impl Records {
    pub fn new() -> Records {
        Records::default()
    }

    /// The records made of `pieces` in order (empty pieces are dropped).
    pub fn from_pieces(pieces: Vec<RecordsPiece>) -> Records {
        let mut pieces = pieces;
        pieces.retain(|p| !p.is_empty());
        Records { pieces }
    }

    pub fn pieces(&self) -> &[RecordsPiece] {
        &self.pieces
    }

    /// Total bytes over all pieces.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(RecordsPiece::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The bytes when every piece is in memory: the piece itself when there is one (always the
    /// case for a decoded response), the pieces joined otherwise (a copy). `None` when a piece
    /// is a file range, which only the connection that sends it reads.
    pub fn to_bytes(&self) -> Option<Bytes> {
        match self.pieces.as_slice() {
            [] => Some(Bytes::new()),
            [RecordsPiece::Bytes(b)] => Some(b.clone()),
            pieces => {
                let mut out = BytesMut::with_capacity(self.len());
                for p in pieces {
                    match p {
                        RecordsPiece::Bytes(b) => out.extend_from_slice(b),
                        RecordsPiece::File(_) => return None,
                    }
                }
                Some(out.freeze())
            }
        }
    }
}

impl From<Bytes> for Records {
    fn from(b: Bytes) -> Records {
        Records::from_pieces(vec![RecordsPiece::Bytes(b)])
    }
}

impl From<Vec<u8>> for Records {
    fn from(v: Vec<u8>) -> Records {
        Records::from(Bytes::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_join_only_when_asked() {
        let a = Bytes::from_static(b"abc");
        let one = Records::from(a.clone());
        assert_eq!(one.to_bytes().unwrap().as_ptr(), a.as_ptr());
        let two = Records::from_pieces(vec![
            RecordsPiece::Bytes(a.clone()),
            RecordsPiece::Bytes(Bytes::new()),
            RecordsPiece::Bytes(Bytes::from_static(b"de")),
        ]);
        assert_eq!(two.pieces().len(), 2);
        assert_eq!(two.len(), 5);
        assert_eq!(&two.to_bytes().unwrap()[..], b"abcde");
        assert!(Records::new().is_empty());
    }
}
