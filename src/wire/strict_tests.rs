//! The acked protocol refuses what it does not understand, with an error that says what: reserved
//! flag bits (frame header, event, READ) and unknown ADMIN ops.

use bytes::BytesMut;

use super::acked::{self, AdminRequest, ErrorCode, Request};
use super::{Inbound, StreamDecoder};
use crate::event::{Event, Priority};

/// Encodes `req`, lets `edit` change the frame's bytes, fixes the checksum, decodes it.
fn decode_edited(req: &Request, edit: impl FnOnce(&mut [u8])) -> Inbound {
    let mut buf = BytesMut::new();
    req.encode(7, &mut buf);
    let n = buf.len();
    edit(&mut buf[..n - 4]);
    let crc = crc32c::crc32c(&buf[4..n - 4]);
    buf[n - 4..].copy_from_slice(&crc.to_be_bytes());
    StreamDecoder::new(1 << 20).decode(&mut buf).unwrap().unwrap()
}

fn refused(inbound: Inbound) -> acked::ErrorFrame {
    match inbound {
        Inbound::BadRequest { request_id, error } => {
            assert_eq!(request_id, 7);
            error
        }
        other => panic!("accepted: {other:?}"),
    }
}

#[test]
fn unknown_admin_op_is_named_not_truncated() {
    let e = refused(decode_edited(&Request::Admin(AdminRequest::Status), |b| b[acked::HEADER_LEN] = 9));
    assert_eq!(e.code, ErrorCode::Unsupported);
    assert_eq!(e.message, "unknown admin op 9");
}

#[test]
fn reserved_header_flags_are_refused() {
    let e = refused(decode_edited(&Request::Ping, |b| b[7] = 0x02));
    assert_eq!(e.code, ErrorCode::Malformed);
    assert!(e.message.contains("reserved header flag bits 0x0002"), "{e:?}");
    assert!(matches!(decode_edited(&Request::Ping, |_| {}), Inbound::Request { .. }));
}

#[test]
fn reserved_event_and_read_flags_are_refused() {
    let publish = Request::Publish(vec![Event::new("t", Priority::Low, "x")]);
    // Body: u32 count, then producer u64, sequence u64, priority u8, flags u8.
    let at = acked::HEADER_LEN + 4 + 8 + 8 + 1;
    let e = refused(decode_edited(&publish, |b| b[at] |= 0x80));
    assert_eq!(e.code, ErrorCode::Malformed);
    assert!(e.message.contains("reserved bits 0x80 set in event flags"), "{e:?}");

    let read = Request::Read { topic: "t".into(), offset: 0, max_events: 1, linearizable: true, wait_ms: 0 };
    // Body: str16 topic ("t"), offset u64, max u32, flags u8.
    let at = acked::HEADER_LEN + 2 + 1 + 8 + 4;
    let e = refused(decode_edited(&read, |b| b[at] = 0x03));
    assert!(e.message.contains("reserved bits 0x02 set in read flags"), "{e:?}");
    assert!(matches!(decode_edited(&read, |_| {}), Inbound::Request { .. }));
}
