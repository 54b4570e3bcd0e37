//! A cursor over received bytes that never panics: every read checks the length first and
//! answers the caller's own error type (the event codec's, the acknowledged protocol's).

use std::marker::PhantomData;

use bytes::{Buf, Bytes};

/// The errors a [`Reader`] can report, in the caller's error type.
pub(crate) trait CursorError {
    fn truncated(what: &'static str) -> Self;
    fn bad_utf8(what: &'static str) -> Self;
    fn bad_count(what: &'static str, count: usize) -> Self;
    fn trailing(left: usize) -> Self;
}

pub(crate) struct Reader<E> {
    pub(crate) buf: Bytes,
    error: PhantomData<E>,
}

impl<E: CursorError> Reader<E> {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf, error: PhantomData }
    }
    fn need(&self, n: usize, what: &'static str) -> Result<(), E> {
        if self.buf.remaining() < n { Err(E::truncated(what)) } else { Ok(()) }
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, E> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, E> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, E> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, E> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }
    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, E> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }
    pub(crate) fn str16(&mut self, what: &'static str) -> Result<String, E> {
        let n = usize::from(self.u16(what)?);
        let b = self.bytes(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| E::bad_utf8(what))
    }
    pub(crate) fn bytes32(&mut self, what: &'static str) -> Result<Bytes, E> {
        let n = self.u32(what)? as usize;
        self.bytes(n, what)
    }
    /// Reads a count and checks that `count * min_each` bytes could follow.
    pub(crate) fn count(&mut self, what: &'static str, min_each: usize, wide: bool) -> Result<usize, E> {
        let count = if wide { self.u32(what)? as usize } else { usize::from(self.u16(what)?) };
        if count.saturating_mul(min_each) > self.buf.remaining() {
            return Err(E::bad_count(what, count));
        }
        Ok(count)
    }
    pub(crate) fn finish(self) -> Result<(), E> {
        if self.buf.has_remaining() { Err(E::trailing(self.buf.remaining())) } else { Ok(()) }
    }
}

/// Implements [`CursorError`] for an error enum with the variants `Truncated`, `BadUtf8`,
/// `BadCount { what, count }` and `Trailing`.
macro_rules! cursor_error {
    ($t:ty) => {
        impl $crate::cursor::CursorError for $t {
            fn truncated(what: &'static str) -> Self {
                Self::Truncated(what)
            }
            fn bad_utf8(what: &'static str) -> Self {
                Self::BadUtf8(what)
            }
            fn bad_count(what: &'static str, count: usize) -> Self {
                Self::BadCount { what, count }
            }
            fn trailing(left: usize) -> Self {
                Self::Trailing(left)
            }
        }
    };
}
pub(crate) use cursor_error;
