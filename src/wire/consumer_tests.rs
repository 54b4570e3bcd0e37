//! The consumer frames (COMMIT, CONSUMERS and their replies) round-trip and refuse bad bodies.

use bytes::BytesMut;

use super::acked::{self, BodyError, ErrorCode, Kind, Request, Response};
use crate::consumers::{ConsumerPosition, OffsetCommit};

fn frame_of(encode: impl FnOnce(&mut BytesMut)) -> acked::RawFrame {
    let mut b = BytesMut::new();
    encode(&mut b);
    acked::decode_frame(&mut b, 1 << 20).unwrap().unwrap()
}

#[test]
fn commit_and_consumers_requests_round_trip() {
    for req in [
        Request::Commit(OffsetCommit {
            name: "billing".into(),
            topic: "orders".into(),
            offset: 42,
            reset: false,
        }),
        Request::Commit(OffsetCommit { name: "b".into(), topic: "t/x".into(), offset: 0, reset: true }),
        Request::Consumers { name: String::new() },
        Request::Consumers { name: "billing".into() },
    ] {
        let f = frame_of(|b| req.encode(7, b));
        assert_eq!(Request::decode(&f).unwrap(), req);
    }
    assert_eq!(Kind::from_u8(0x0C), Some(Kind::Commit));
    assert_eq!(ErrorCode::from_u16(12), Some(ErrorCode::InvalidCommit));
    assert!(!ErrorCode::InvalidCommit.is_retryable());
}

#[test]
fn replies_round_trip_and_truncation_is_an_error() {
    let list = vec![
        ConsumerPosition { name: "a".into(), topic: "t".into(), committed: 3, end_offset: 9 },
        ConsumerPosition { name: "b".into(), topic: "u".into(), committed: 0, end_offset: 0 },
    ];
    for resp in [
        Response::Committed { name: "a".into(), topic: "t".into(), offset: 5 },
        Response::ConsumerList(list),
        Response::ConsumerList(Vec::new()),
    ] {
        let f = frame_of(|b| resp.encode(3, b));
        assert_eq!(Response::decode(&f).unwrap(), resp);
        for cut in 0..f.body.len() {
            let short = acked::RawFrame { body: f.body.slice(..cut), ..f.clone() };
            assert!(Response::decode(&short).is_err(), "{resp:?} cut at {cut}");
        }
    }
}

#[test]
fn reserved_commit_flags_are_refused() {
    let req = Request::Commit(OffsetCommit { name: "a".into(), topic: "t".into(), offset: 1, reset: false });
    let mut f = frame_of(|b| req.encode(1, b));
    let mut body = f.body.to_vec();
    *body.last_mut().unwrap() = 0x02;
    f.body = body.into();
    assert_eq!(Request::decode(&f), Err(BodyError::ReservedFlags(0x02)));
    assert_eq!(BodyError::ReservedFlags(2).to_error_frame().code, ErrorCode::Malformed);
}
