//! Frame codecs: the legacy EventStreamCore frame (byte-exact) and the acknowledged protocol,
//! told apart frame by frame by their first four bytes on one TCP stream.

pub mod acked;
pub mod legacy;

use bytes::{Bytes, BytesMut};

pub use acked::{AckItem, AdminRequest, ErrorCode, ErrorFrame, Request, Response};
pub use legacy::LegacyError;

use crate::event::Event;

/// Default largest frame (legacy body, or whole acked frame): 10 MiB.
pub const DEFAULT_MAX_FRAME: usize = 10 * 1024 * 1024;
/// Zero-length legacy frames allowed in a row before the connection is closed.
pub const MAX_EMPTY_RUN: u32 = 10;

/// One decoded unit from a client stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A well-formed legacy frame (no reply is sent).
    Legacy(Event),
    /// A legacy frame whose body is malformed; counted, no reply, the stream goes on.
    LegacyMalformed(LegacyError),
    /// A well-formed acked request.
    Request { request_id: u64, request: Request },
    /// An acked frame that could not be used; reply with `error`, the stream goes on.
    BadRequest { request_id: u64, error: ErrorFrame },
}

/// A stream problem after which the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("legacy frame body of {size} bytes exceeds the {max}-byte limit")]
    LegacyTooLarge { size: usize, max: usize },
    #[error("more than {MAX_EMPTY_RUN} empty legacy frames in a row")]
    TooManyEmpty,
    /// An acked frame over the limit; send `error` before closing.
    #[error("{}", error.message)]
    AckedTooLarge { request_id: u64, error: ErrorFrame },
}

/// Incremental decoder for one client connection carrying either protocol.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    max_frame: usize,
    empty_run: u32,
}

impl StreamDecoder {
    /// A decoder that refuses frames over `max_frame` bytes (clamped to the 1 GiB protocol cap).
    pub fn new(max_frame: usize) -> Self {
        StreamDecoder { max_frame: max_frame.min(acked::MAX_FRAME_LIMIT), empty_run: 0 }
    }

    /// Takes the next unit off the front of `buf`; `Ok(None)` means more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, StreamError> {
        loop {
            if buf.len() < 4 {
                return Ok(None);
            }
            if acked::starts_with_magic(buf) {
                self.empty_run = 0;
                return match acked::decode_frame(buf, self.max_frame) {
                    Ok(None) => Ok(None),
                    Ok(Some(frame)) => Ok(Some(match Request::decode(&frame) {
                        Ok(request) => Inbound::Request { request_id: frame.request_id, request },
                        Err(e) => {
                            Inbound::BadRequest { request_id: frame.request_id, error: e.to_error_frame() }
                        }
                    })),
                    Err(e) if e.is_fatal() => Err(StreamError::AckedTooLarge {
                        request_id: e.request_id(),
                        error: e.to_error_frame(),
                    }),
                    Err(e) => Ok(Some(Inbound::BadRequest {
                        request_id: e.request_id(),
                        error: e.to_error_frame(),
                    })),
                };
            }
            let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if size == 0 {
                let _ = buf.split_to(4);
                self.empty_run += 1;
                if self.empty_run > MAX_EMPTY_RUN {
                    return Err(StreamError::TooManyEmpty);
                }
                continue;
            }
            if size > self.max_frame {
                return Err(StreamError::LegacyTooLarge { size, max: self.max_frame });
            }
            if buf.len() < 4 + size {
                buf.reserve(4 + size - buf.len());
                return Ok(None);
            }
            self.empty_run = 0;
            let frame: Bytes = buf.split_to(4 + size).freeze();
            let body = frame.slice(4..);
            return Ok(Some(match legacy::parse_body(&body) {
                Ok(e) => Inbound::Legacy(e),
                Err(e) => Inbound::LegacyMalformed(e),
            }));
        }
    }
}

/// Incremental decoder for a client reading replies.
#[derive(Debug, Clone)]
pub struct ReplyDecoder {
    max_frame: usize,
}

/// A reply stream that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply does not start with the protocol magic")]
    NotAcked,
    #[error(transparent)]
    Frame(#[from] acked::FrameError),
    #[error(transparent)]
    Body(#[from] acked::BodyError),
}

impl ReplyDecoder {
    /// A decoder accepting replies up to `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        ReplyDecoder { max_frame }
    }

    /// Takes the next reply off `buf`; `Ok(None)` means more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<(u64, Response)>, ReplyError> {
        if !acked::maybe_acked(buf) {
            return Err(ReplyError::NotAcked);
        }
        match acked::decode_frame(buf, self.max_frame)? {
            None => Ok(None),
            Some(frame) => Ok(Some((frame.request_id, Response::decode(&frame)?))),
        }
    }
}

#[cfg(test)]
mod consumer_tests;
#[cfg(test)]
mod strict_tests;
#[cfg(test)]
mod tests;
