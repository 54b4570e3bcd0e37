//! Property tests for both codecs and the mixed-stream decoder.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::acked::{self, AckItem, ErrorCode, ErrorFrame, Request, Response};
use super::*;
use crate::event::{Event, Header, Priority, StoredEvent};

fn priority() -> impl Strategy<Value = Priority> {
    (0u8..=4).prop_map(|p| Priority::from_u8(p).unwrap())
}

fn bytes_upto(n: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..n).prop_map(Bytes::from)
}

fn event() -> impl Strategy<Value = Event> {
    (
        "[a-z/]{1,12}|\\PC{1,6}",
        priority(),
        any::<u64>(),
        any::<u64>(),
        prop::option::of(bytes_upto(8)),
        prop::collection::vec(
            ("\\PC{0,5}", bytes_upto(6)).prop_map(|(name, value)| Header { name, value }),
            0..3,
        ),
        bytes_upto(40),
    )
        .prop_map(|(topic, priority, producer_id, sequence, key, headers, payload)| Event {
            topic,
            priority,
            producer_id,
            sequence,
            key,
            headers,
            payload,
        })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    (1u16..=9).prop_map(|c| ErrorCode::from_u16(c).unwrap())
}

fn error_frame() -> impl Strategy<Value = ErrorFrame> {
    (error_code(), any::<u32>(), "\\PC{0,12}", "\\PC{0,20}").prop_map(
        |(code, retry_after_ms, leader, message)| ErrorFrame { code, retry_after_ms, leader, message },
    )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        ("\\PC{0,10}", "\\PC{0,10}").prop_map(|(client, token)| Request::Hello { client, token }),
        prop::collection::vec(event(), 0..4).prop_map(Request::Publish),
        ("\\PC{1,10}", any::<u64>(), any::<u32>())
            .prop_map(|(topic, offset, max_events)| { Request::Fetch { topic, offset, max_events } }),
        Just(Request::Ping),
        ("\\PC{1,10}", any::<u64>(), any::<u32>(), any::<bool>(), any::<u32>()).prop_map(
            |(topic, offset, max_events, linearizable, wait_ms)| Request::Read {
                topic,
                offset,
                max_events,
                linearizable,
                wait_ms
            }
        ),
        prop_oneof![
            Just(AdminRequest::Status),
            (any::<u64>(), "\\PC{0,10}", "\\PC{0,10}").prop_map(|(id, raft_addr, client_addr)| {
                AdminRequest::AddNode { id, raft_addr, client_addr }
            }),
            any::<u64>().prop_map(|id| AdminRequest::RemoveNode { id }),
            any::<u64>().prop_map(|id| AdminRequest::TransferLeader { id }),
        ]
        .prop_map(Request::Admin),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let item = prop_oneof![
        ("\\PC{1,8}", any::<u64>(), any::<bool>())
            .prop_map(|(topic, offset, duplicate)| { AckItem::Stored { topic, offset, duplicate } }),
        error_frame().prop_map(AckItem::Rejected),
    ];
    let stored = (any::<u64>(), any::<u64>(), event())
        .prop_map(|(offset, timestamp_ms, event)| StoredEvent { offset, timestamp_ms, event });
    prop_oneof![
        ("\\PC{0,10}", any::<u64>(), any::<u32>()).prop_map(|(server, node_id, max_frame_bytes)| {
            Response::HelloOk { server, node_id, max_frame_bytes }
        }),
        prop::collection::vec(item, 0..4).prop_map(Response::Ack),
        ("\\PC{1,8}", any::<u64>(), any::<u64>(), prop::collection::vec(stored, 0..3)).prop_map(
            |(topic, next_offset, end_offset, events)| Response::Fetched {
                topic,
                next_offset,
                end_offset,
                events
            }
        ),
        Just(Response::Pong),
        "\\PC{0,40}".prop_map(Response::AdminOk),
        error_frame().prop_map(Response::Error),
    ]
}

/// One unit on a mixed client stream, as the test builds it.
#[derive(Debug, Clone)]
enum Unit {
    Legacy(Priority, String, Vec<u8>),
    LegacyRaw(Vec<u8>),
    Empty,
    Acked(u64, Request),
}

fn unit() -> impl Strategy<Value = Unit> {
    prop_oneof![
        (priority(), "[a-z/]{1,10}", prop::collection::vec(any::<u8>(), 0..30))
            .prop_map(|(p, t, b)| Unit::Legacy(p, t, b)),
        prop::collection::vec(any::<u8>(), 1..12).prop_map(Unit::LegacyRaw),
        Just(Unit::Empty),
        (any::<u64>(), request()).prop_map(|(id, r)| Unit::Acked(id, r)),
    ]
}

fn encode_units(units: &[Unit]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for u in units {
        match u {
            Unit::Legacy(p, t, b) => legacy::encode(*p, t, b, &mut out),
            Unit::LegacyRaw(body) => {
                out.extend_from_slice(&(body.len() as u32).to_be_bytes());
                out.extend_from_slice(body);
            }
            Unit::Empty => out.extend_from_slice(&[0, 0, 0, 0]),
            Unit::Acked(id, r) => r.encode(*id, &mut out),
        }
    }
    out.to_vec()
}

/// Feeds `chunks` in order and decodes everything, as a connection would.
fn decode_chunks(chunks: &[&[u8]]) -> (Vec<Inbound>, Option<StreamError>) {
    let mut dec = StreamDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(x)) => {
                    assert!(buf.len() < before, "a decoded unit must consume bytes");
                    out.push(x)
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn request_round_trips(id in any::<u64>(), req in request()) {
        let mut b = BytesMut::new();
        req.encode(id, &mut b);
        let frame = acked::decode_frame(&mut b, 1 << 20).unwrap().unwrap();
        prop_assert!(b.is_empty());
        prop_assert_eq!(frame.request_id, id);
        prop_assert_eq!(Request::decode(&frame).unwrap(), req);
    }

    #[test]
    fn response_round_trips(id in any::<u64>(), resp in response()) {
        let mut b = BytesMut::new();
        resp.encode(id, &mut b);
        let (rid, got) = ReplyDecoder::new(1 << 20).decode(&mut b).unwrap().unwrap();
        prop_assert_eq!(rid, id);
        prop_assert_eq!(got, resp);
    }

    #[test]
    fn legacy_round_trips(p in priority(), topic in "[a-zA-Z0-9/_.-]{1,40}", payload in prop::collection::vec(any::<u8>(), 0..100)) {
        let frame = legacy::encode_to_vec(p, &topic, &payload);
        let (got, err) = decode_chunks(&[&frame]);
        prop_assert!(err.is_none());
        prop_assert_eq!(got, vec![Inbound::Legacy(Event::new(topic, p, payload))]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_chunks(&[&data]);
        let _ = ReplyDecoder::new(1 << 20).decode(&mut BytesMut::from(&data[..]));
        let frame = acked::RawFrame { kind: data.first().copied().unwrap_or(2), request_id: 0, body: Bytes::from(data.clone()) };
        let _ = Request::decode(&frame);
        let _ = Response::decode(&frame);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(kind in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..200)) {
        let frame = acked::RawFrame { kind, request_id: 1, body: Bytes::from(body) };
        if let Err(e) = Request::decode(&frame) {
            let _ = e.to_error_frame();
        }
        let _ = Response::decode(&frame);
    }

    #[test]
    fn splitting_the_stream_anywhere_decodes_the_same(units in prop::collection::vec(unit(), 1..6)) {
        let bytes = encode_units(&units);
        let whole = decode_chunks(&[&bytes]);
        for cut in 0..=bytes.len() {
            let split = decode_chunks(&[&bytes[..cut], &bytes[cut..]]);
            prop_assert_eq!(&split, &whole, "split at {}", cut);
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(decode_chunks(&bytewise), whole);
    }

    #[test]
    fn mixed_streams_decode_to_what_was_sent(units in prop::collection::vec(unit(), 1..8)) {
        let bytes = encode_units(&units);
        let (got, err) = decode_chunks(&[&bytes]);
        let mut expect = Vec::new();
        let mut empties = 0;
        let mut stream_err = None;
        for u in &units {
            match u {
                Unit::Empty => {
                    empties += 1;
                    if empties > MAX_EMPTY_RUN { stream_err = Some(StreamError::TooManyEmpty); break; }
                    continue;
                }
                Unit::Legacy(p, t, b) => expect.push(Inbound::Legacy(Event::new(t.clone(), *p, b.clone()))),
                Unit::LegacyRaw(body) => expect.push(match legacy::parse_body(&Bytes::from(body.clone())) {
                    Ok(e) => Inbound::Legacy(e),
                    Err(e) => Inbound::LegacyMalformed(e),
                }),
                Unit::Acked(id, r) => expect.push(Inbound::Request { request_id: *id, request: r.clone() }),
            }
            empties = 0;
        }
        prop_assert_eq!(got, expect);
        prop_assert_eq!(err, stream_err);
    }
}

#[test]
fn eleven_empty_frames_in_a_row_close_the_stream_but_ten_do_not() {
    let ten = [0u8; 40];
    let (got, err) = decode_chunks(&[&ten]);
    assert!(got.is_empty() && err.is_none());
    let mut eleven = vec![0u8; 44];
    eleven.extend(legacy::encode_to_vec(Priority::Low, "t", b"x"));
    let (_, err) = decode_chunks(&[&eleven]);
    assert_eq!(err, Some(StreamError::TooManyEmpty));
    // A real frame in between resets the run.
    let mut mixed = vec![0u8; 40];
    mixed.extend(legacy::encode_to_vec(Priority::Low, "t", b"x"));
    mixed.extend([0u8; 40]);
    let (got, err) = decode_chunks(&[&mixed]);
    assert_eq!(got.len(), 1);
    assert!(err.is_none());
}

#[test]
fn a_legacy_body_over_the_limit_is_fatal() {
    let mut dec = StreamDecoder::new(100);
    let mut buf = BytesMut::from(&101u32.to_be_bytes()[..]);
    assert_eq!(dec.decode(&mut buf), Err(StreamError::LegacyTooLarge { size: 101, max: 100 }));
    let mut buf = BytesMut::from(&100u32.to_be_bytes()[..]);
    assert_eq!(dec.decode(&mut buf), Ok(None), "exactly the limit waits for the body");
}

#[test]
fn malformed_legacy_bodies_keep_the_stream_going() {
    let mut bytes = vec![0, 0, 0, 4, 9, 0, 1, b'a']; // priority 9
    bytes.extend(legacy::encode_to_vec(Priority::High, "ok", b"1"));
    let (got, err) = decode_chunks(&[&bytes]);
    assert!(err.is_none());
    assert_eq!(got[0], Inbound::LegacyMalformed(LegacyError::BadPriority(9)));
    assert!(matches!(&got[1], Inbound::Legacy(e) if e.topic == "ok"));
}

#[test]
fn bad_checksum_is_a_bad_request_not_fatal() {
    let mut b = BytesMut::new();
    Request::Ping.encode(5, &mut b);
    let n = b.len();
    b[n - 1] ^= 0x55;
    Request::Ping.encode(6, &mut b);
    let (got, err) = decode_chunks(&[&b]);
    assert!(err.is_none());
    assert!(
        matches!(&got[0], Inbound::BadRequest { request_id: 5, error } if error.code == ErrorCode::Malformed)
    );
    assert_eq!(got[1], Inbound::Request { request_id: 6, request: Request::Ping });
}
