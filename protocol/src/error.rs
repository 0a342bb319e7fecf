//! The codec's error types. A decode error names the field (as a static
//! `Message.Struct.field` path generated from the definitions) and what went wrong, so the
//! server can log exactly which part of a frame was bad and close only that connection.
//! Errors are plain data: they carry no borrowed input and are cheap to build. The codec
//! runs on whichever core owns the connection; nothing here is shared between cores.

use thiserror::Error;

/// What went wrong while decoding one primitive or structure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeErrorKind {
    /// The input ended before a fixed-size value or a length-delimited payload.
    #[error("truncated: needed {needed} bytes, {remaining} remain")]
    Truncated { needed: usize, remaining: usize },
    /// A length or count was negative and not the null marker.
    #[error("negative length {len}")]
    NegativeLength { len: i64 },
    /// A string or bytes length is larger than what is left of the input.
    #[error("length {len} exceeds the {remaining} bytes remaining")]
    LengthExceedsRemaining { len: usize, remaining: usize },
    /// An array count cannot possibly fit in the input, even at the minimum element size.
    #[error("array count {count} needs at least {min_bytes} bytes, {remaining} remain")]
    ArrayCountExceedsRemaining {
        count: usize,
        min_bytes: usize,
        remaining: usize,
    },
    /// An unsigned varint longer than 5 bytes, a varlong longer than 10 bytes, or a last
    /// byte carrying bits beyond the value's width.
    #[error("malformed varint")]
    MalformedVarint,
    /// A string is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A null value in a field (or a version) where the schema does not allow null.
    #[error("null is not allowed here")]
    NullNotAllowed,
    /// A known tagged field did not consume exactly the bytes its header declared.
    #[error("tagged field {tag} declared {declared} bytes but its value used {used}")]
    TaggedFieldSize {
        tag: u32,
        declared: usize,
        used: usize,
    },
    /// The message was decoded but bytes remain in the frame.
    #[error("{remaining} trailing bytes after the message")]
    TrailingBytes { remaining: usize },
    /// The message type does not exist in this version.
    #[error("version {version} is not supported")]
    UnsupportedVersion { version: i16 },
}

/// A decode failure: which field, and what went wrong there.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {kind}")]
pub struct DecodeError {
    /// `Message.Struct.field` path of the innermost field being decoded ("" if none).
    pub field: &'static str,
    /// What went wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// An error not yet attributed to a field; generated code attributes it with [`Self::at`].
    pub fn new(kind: DecodeErrorKind) -> Self {
        Self { field: "", kind }
    }

    /// Attributes the error to `field` unless an inner field already claimed it, so the
    /// innermost (most precise) field name survives as the error bubbles up.
    #[must_use]
    pub fn at(mut self, field: &'static str) -> Self {
        if self.field.is_empty() {
            self.field = field;
        }
        self
    }
}

/// An encode failure: the value cannot be expressed in the requested version.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A field that this version does not have holds a non-default value and the field is not
    /// ignorable (Kafka refuses to silently drop such data; so do we).
    #[error("{field} holds a non-default value but does not exist in version {version}")]
    FieldNotInVersion { field: &'static str, version: i16 },
    /// A null value in a version where the field is not nullable.
    #[error("{field} is null but is not nullable in version {version}")]
    NullNotAllowed { field: &'static str, version: i16 },
    /// The message type does not exist in this version.
    #[error("{message} does not support version {version}")]
    UnsupportedVersion { message: &'static str, version: i16 },
    /// A string, bytes or array is longer than its length prefix can express.
    #[error("{field} is {len} long, more than its length prefix can express")]
    TooLong { field: &'static str, len: usize },
}

impl EncodeError {
    /// Attributes a length error raised by the encoder to a field.
    #[must_use]
    pub fn at(self, field: &'static str) -> Self {
        match self {
            EncodeError::TooLong { field: "", len } => EncodeError::TooLong { field, len },
            other => other,
        }
    }
}
