//! The domain's encoding of events for everything replicated or stored: Raft entries
//! (`node::command`), state snapshots (`node::state`) and dead letters (`pipeline::dlq`). It is deliberately separate from the
//! client protocol (`wire`), which converts to and from [`Event`] on its own: a change to the wire
//! cannot change what is in a Raft log or a snapshot.
//!
//! Versions: a container that holds events names the layout in its own header (the command tag,
//! the snapshot version). [`VERSION`] 1 is the layout below, byte for byte what the acked wire
//! protocol used when the two were split, so nothing on disk changed. A new layout gets a new
//! version here and a new tag or snapshot version there; the old decoder stays.
//!
//! Layout v1 (big-endian): `u32 count`, then per event `u64 producer`, `u64 sequence`,
//! `u8 priority`, `u8 flags` (bit 0: key present), `str16 topic`, [`bytes32 key`],
//! `u16 header count`, per header `str16 name` + `bytes32 value`, then `bytes32 payload`.

use bytes::{BufMut, Bytes};

use super::{Event, Header, Priority};

/// The event layout this build writes.
pub const VERSION: u8 = 1;

const KEY_PRESENT: u8 = 0x01;
/// Smallest encoded event: ids, priority, flags, empty topic, no headers, empty payload.
const MIN_EVENT: usize = 8 + 8 + 1 + 1 + 2 + 2 + 4;

/// Stored or replicated bytes that are not a valid encoding (written by a newer or broken node,
/// or damaged). Decoding never panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("truncated while reading {0}")]
    Truncated(&'static str),
    #[error("{0} is not valid UTF-8")]
    BadUtf8(&'static str),
    #[error("priority {0} is not 0-4")]
    BadPriority(u8),
    #[error("count {count} of {what} cannot fit in the data")]
    BadCount { what: &'static str, count: usize },
    #[error("{0} trailing bytes after the events")]
    Trailing(usize),
}

/// Appends `events` in layout v1.
pub fn encode_events(out: &mut impl BufMut, events: &[Event]) {
    out.put_u32(u32::try_from(events.len()).expect("event count fits in u32"));
    for e in events {
        put_event(out, e);
    }
}

/// Parses what [`encode_events`] wrote, which must fill `buf` exactly.
pub fn decode_events(buf: Bytes) -> Result<Vec<Event>, CodecError> {
    let mut r = Reader::new(buf);
    let n = r.count("events", MIN_EVENT, true)?;
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(read_event(&mut r)?);
    }
    r.finish()?;
    Ok(events)
}

/// Appends a `u16` length and the string (cut at 65,535 bytes on a character boundary): the one
/// short-string format of the replicated and stored formats.
pub fn put_str16(out: &mut impl BufMut, s: &str) {
    let s = truncate_utf8(s, u16::MAX as usize);
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

/// Reads what [`put_str16`] wrote.
pub fn get_str16(b: &mut Bytes, what: &'static str) -> Result<String, CodecError> {
    let mut r = Reader::new(std::mem::take(b));
    let s = r.str16(what);
    *b = r.buf;
    s
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_bytes32(out: &mut impl BufMut, b: &[u8]) {
    out.put_u32(u32::try_from(b.len()).expect("bytes field fits in u32"));
    out.put_slice(b);
}

fn put_event(out: &mut impl BufMut, e: &Event) {
    out.put_u64(e.producer_id);
    out.put_u64(e.sequence);
    out.put_u8(e.priority.as_u8());
    out.put_u8(if e.key.is_some() { KEY_PRESENT } else { 0 });
    put_str16(out, &e.topic);
    if let Some(k) = &e.key {
        put_bytes32(out, k);
    }
    out.put_u16(u16::try_from(e.headers.len()).expect("at most 65535 headers (checked at ingest)"));
    for h in &e.headers {
        put_str16(out, &h.name);
        put_bytes32(out, &h.value);
    }
    put_bytes32(out, &e.payload);
}

fn read_event(r: &mut Reader) -> Result<Event, CodecError> {
    let producer_id = r.u64("producer id")?;
    let sequence = r.u64("sequence")?;
    let p = r.u8("priority")?;
    let priority = Priority::from_u8(p).ok_or(CodecError::BadPriority(p))?;
    let flags = r.u8("event flags")?;
    let topic = r.str16("topic")?;
    let key = if flags & KEY_PRESENT != 0 { Some(r.bytes32("key")?) } else { None };
    let n = r.count("headers", 2 + 4, false)?;
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str16("header name")?;
        let value = r.bytes32("header value")?;
        headers.push(Header { name, value });
    }
    let payload = r.bytes32("payload")?;
    Ok(Event { topic, priority, producer_id, sequence, key, headers, payload })
}

type Reader = crate::cursor::Reader<CodecError>;
crate::cursor::cursor_error!(CodecError);

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn sample() -> Vec<Event> {
        let mut a = Event::new("t/a", Priority::High, "hi");
        a.producer_id = 7;
        a.sequence = 9;
        a.key = Some(Bytes::from_static(b"k"));
        a.headers.push(Header { name: "h".into(), value: Bytes::from_static(b"v") });
        let b = Event::new("b", Priority::Batch, "");
        vec![a, b]
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Version 1 is what every Raft log and snapshot on disk holds: these bytes must never change
    /// (a new layout is a new version, with this decoder kept).
    #[test]
    fn version_1_bytes_are_pinned() {
        let mut out = BytesMut::new();
        encode_events(&mut out, &sample());
        assert_eq!(
            hex(&out),
            concat!(
                "00000002",
                "0000000000000007",
                "0000000000000009",
                "03",
                "01",
                "0003",
                "742f61",
                "00000001",
                "6b",
                "0001",
                "0001",
                "68",
                "00000001",
                "76",
                "00000002",
                "6869",
                "0000000000000000",
                "0000000000000000",
                "00",
                "00",
                "0001",
                "62",
                "0000",
                "00000000",
            )
        );
        assert_eq!(decode_events(out.freeze()).unwrap(), sample());
    }

    /// The domain codec and the client protocol agree today (so switching changed no byte), but
    /// they are separate code: this test is the only place that ties them.
    #[test]
    fn version_1_equals_the_acked_protocol_at_the_split() {
        let mut ours = BytesMut::new();
        encode_events(&mut ours, &sample());
        let mut wire = BytesMut::new();
        crate::wire::acked::encode_events(&mut wire, &sample());
        assert_eq!(ours, wire);
    }

    #[test]
    fn damaged_bytes_are_errors_not_panics() {
        let mut out = BytesMut::new();
        encode_events(&mut out, &sample());
        let full = out.freeze();
        for cut in 0..full.len() {
            assert!(decode_events(full.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut extra = BytesMut::from(&full[..]);
        extra.put_u8(0);
        assert_eq!(decode_events(extra.freeze()), Err(CodecError::Trailing(1)));
        assert!(matches!(decode_events(Bytes::from_static(&[0xff; 4])), Err(CodecError::BadCount { .. })));
    }

    #[test]
    fn str16_round_trips_and_cuts_on_a_char_boundary() {
        let mut out = BytesMut::new();
        put_str16(&mut out, "héllo");
        let long = "é".repeat(40_000);
        put_str16(&mut out, &long);
        let mut b = out.freeze();
        assert_eq!(get_str16(&mut b, "a").unwrap(), "héllo");
        let cut = get_str16(&mut b, "b").unwrap();
        assert_eq!(cut.len(), 65_534);
        assert!(b.is_empty());
        assert_eq!(get_str16(&mut b, "c"), Err(CodecError::Truncated("c")));
    }
}
