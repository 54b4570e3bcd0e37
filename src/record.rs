//! One framing for records: `[u32 length][u32 CRC32C][payload]`, both little-endian, the
//! checksum covering the length bytes and the payload (so a damaged length is caught, not
//! followed). The write-ahead log (`wal/`), the topic segments (`store/`) and the dead-letter
//! queue (`pipeline/dlq.rs`) write it to files, where [`read_at`] tells a torn tail from corruption; the peer transport
//! (`transport/frame.rs`) sends it on connections, reading with [`header_at`] and [`checksum`]
//! and bounding lengths with [`try_append_with`].
//!
//! Conventions: a payload is never empty; its length is at most the caller's limit; a reader
//! classifies what stops it ([`BadKind`]) and the caller decides, knowing what follows, whether
//! that is a torn tail (cut it) or corruption (refuse, or repair on request).

/// Bytes before the payload: length and checksum.
pub const HEADER: usize = 8;

/// Why reading stopped at a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadKind {
    /// Zeros where a header should be: a write that never landed (a hole), always torn.
    Zero,
    /// A header or payload running past the end of the data: torn, if it is the last thing there.
    Partial,
    /// A checksum mismatch (or a zero length): torn if nothing valid follows, else corruption.
    Checksum,
}

/// A record [`read_at`] could not accept, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bad {
    pub kind: BadKind,
    pub reason: &'static str,
}

/// The checksum of a record: CRC32C over the length bytes, then the payload.
pub fn checksum(len: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len), payload)
}

/// Appends one record whose payload `write` appends; returns the payload length.
///
/// # Panics
/// If the payload is empty or longer than `u32::MAX`: callers bound what they frame.
pub fn append_with(buf: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER]);
    write(buf);
    let n = buf.len() - start - HEADER;
    assert!(n > 0, "a record payload is never empty");
    let len = u32::try_from(n).expect("record payload bounded by its writer");
    seal(buf, start, len);
    n
}

/// Appends one record whose payload `write` appends, if that payload is `1..=max` bytes (and
/// fits a `u32`); otherwise leaves `buf` as it was and returns the refused length.
pub fn try_append_with(
    buf: &mut Vec<u8>,
    max: usize,
    write: impl FnOnce(&mut Vec<u8>),
) -> Result<usize, usize> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER]);
    write(buf);
    let n = buf.len() - start - HEADER;
    match u32::try_from(n) {
        Ok(len) if n > 0 && n <= max => {
            seal(buf, start, len);
            Ok(n)
        }
        _ => {
            buf.truncate(start);
            Err(n)
        }
    }
}

/// Fills in the header of the record at `start`, whose payload of `len` bytes follows it.
fn seal(buf: &mut [u8], start: usize, len: u32) {
    let len = len.to_le_bytes();
    let crc = checksum(len, &buf[start + HEADER..]);
    buf[start..start + 4].copy_from_slice(&len);
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one record holding `payload`.
pub fn append(buf: &mut Vec<u8>, payload: &[u8]) {
    append_with(buf, |b| b.extend_from_slice(payload));
}

/// The length field and stored checksum of the header at `off`, if a whole header is there.
pub fn header_at(data: &[u8], off: usize) -> Option<(u32, u32)> {
    let h = data.get(off..off.checked_add(HEADER)?)?;
    Some((u32::from_le_bytes([h[0], h[1], h[2], h[3]]), u32::from_le_bytes([h[4], h[5], h[6], h[7]])))
}

/// Reads the record at `off`: its payload and the offset after it. Never panics.
pub fn read_at(data: &[u8], off: usize) -> Result<(&[u8], usize), Bad> {
    let bad = |kind, reason| Err(Bad { kind, reason });
    let rest = data.get(off..).unwrap_or(&[]);
    let Some((len, stored)) = header_at(data, off) else {
        if rest.iter().all(|&b| b == 0) {
            return bad(BadKind::Zero, "zero-filled tail");
        }
        return bad(BadKind::Partial, "partial record header at the end of the file");
    };
    if len == 0 && stored == 0 {
        return bad(BadKind::Zero, "zero-filled record header (a write that never landed)");
    }
    if len == 0 {
        return bad(BadKind::Checksum, "zero record length");
    }
    let len = len as usize;
    if len > rest.len() - HEADER {
        return bad(BadKind::Partial, "record runs past the end of the file");
    }
    let payload = &rest[HEADER..HEADER + len];
    if checksum((len as u32).to_le_bytes(), payload) != stored {
        return bad(BadKind::Checksum, "record checksum mismatch");
    }
    Ok((payload, off + HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The framing is on disk in every WAL segment: these bytes must not change.
    #[test]
    fn bytes_are_pinned() {
        let mut buf = Vec::new();
        append(&mut buf, b"abc");
        let crc = crc32c::crc32c(&[3, 0, 0, 0, b'a', b'b', b'c']);
        let mut want = vec![3, 0, 0, 0];
        want.extend_from_slice(&crc.to_le_bytes());
        want.extend_from_slice(b"abc");
        assert_eq!(buf, want);
        assert_eq!(read_at(&buf, 0), Ok((&b"abc"[..], 11)));
    }

    #[test]
    fn each_way_of_stopping_is_classified() {
        let mut buf = Vec::new();
        append(&mut buf, b"hello");
        append(&mut buf, b"world");
        let (_, second) = read_at(&buf, 0).unwrap();
        assert_eq!(read_at(&buf, second).map(|(p, _)| p), Ok(&b"world"[..]));
        // Every cut of the second record is partial (a torn tail), never a checksum error.
        for cut in second + 1..buf.len() {
            assert_eq!(read_at(&buf[..cut], second).unwrap_err().kind, BadKind::Partial, "cut {cut}");
        }
        assert_eq!(read_at(&buf[..second], second).unwrap_err().kind, BadKind::Zero);
        let mut zeros = buf[..second].to_vec();
        zeros.extend_from_slice(&[0; 20]);
        assert_eq!(read_at(&zeros, second).unwrap_err().kind, BadKind::Zero);
        let mut flipped = buf.clone();
        flipped[second + HEADER] ^= 1;
        assert_eq!(read_at(&flipped, second).unwrap_err().kind, BadKind::Checksum);
        // A damaged length is caught by the checksum, not followed.
        let mut longer = buf.clone();
        longer[0] = 4;
        assert_eq!(read_at(&longer, 0).unwrap_err().kind, BadKind::Checksum);
        let mut zero_len = buf;
        zero_len[..4].copy_from_slice(&[0; 4]);
        assert_eq!(read_at(&zero_len, 0).unwrap_err().reason, "zero record length");
    }

    #[test]
    fn try_append_refuses_empty_and_oversized_payloads_leaving_the_buffer_alone() {
        let mut buf = vec![9u8];
        assert_eq!(try_append_with(&mut buf, 3, |b| b.extend_from_slice(b"abcd")), Err(4));
        assert_eq!(try_append_with(&mut buf, 3, |_| {}), Err(0));
        assert_eq!(buf, vec![9u8]);
        assert_eq!(try_append_with(&mut buf, 3, |b| b.extend_from_slice(b"abc")), Ok(3));
        let mut want = vec![9u8];
        append(&mut want, b"abc");
        assert_eq!(buf, want);
    }
}
