//! Binary codec: round trips, truncation, and arbitrary bytes never panic.

use super::harness::*;
use proptest::prelude::*;

fn arb_ids() -> impl Strategy<Value = std::collections::BTreeSet<NodeId>> {
    proptest::collection::btree_set(any::<u64>(), 0..5)
}

fn arb_conf() -> impl Strategy<Value = ConfState> {
    (arb_ids(), arb_ids()).prop_map(|(voters, learners)| ConfState { voters, learners })
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    let kind = prop_oneof![Just(EntryKind::Normal), Just(EntryKind::Noop), Just(EntryKind::ConfChange)];
    (any::<u64>(), any::<u64>(), kind, arb_bytes()).prop_map(|(term, index, kind, data)| Entry {
        term,
        index,
        kind,
        data,
    })
}

fn arb_body() -> impl Strategy<Value = Body> {
    let hint = proptest::option::of((proptest::option::of(any::<u64>()), any::<u64>()))
        .prop_map(|h| h.map(|(conflict_term, conflict_index)| RejectHint { conflict_term, conflict_index }));
    prop_oneof![
        (any::<bool>(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
            |(pre_vote, last_index, last_term, transfer)| Body::Vote {
                pre_vote,
                last_index,
                last_term,
                transfer
            }
        ),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre_vote, granted)| Body::VoteResponse { pre_vote, granted }),
        (any::<u64>(), any::<u64>(), proptest::collection::vec(arb_entry(), 0..4), any::<u64>()).prop_map(
            |(prev_index, prev_term, entries, commit)| Body::Append {
                prev_index,
                prev_term,
                entries,
                commit
            }
        ),
        (any::<u64>(), hint).prop_map(|(index, reject)| Body::AppendResponse { index, reject }),
        (any::<u64>(), any::<u64>()).prop_map(|(commit, round)| Body::Heartbeat { commit, round }),
        any::<u64>().prop_map(|round| Body::HeartbeatResponse { round }),
        (any::<u64>(), any::<u64>(), arb_conf(), any::<u64>(), arb_bytes(), any::<bool>()).prop_map(
            |(index, term, conf_state, offset, data, done)| Body::Snapshot {
                meta: SnapshotMeta { index, term, conf_state },
                offset,
                data,
                done
            }
        ),
        (any::<u64>(), any::<u64>(), any::<bool>(), any::<u64>()).prop_map(
            |(snapshot_index, next_offset, done, last_index)| {
                Body::SnapshotResponse { snapshot_index, next_offset, done, last_index }
            }
        ),
        Just(Body::TimeoutNow),
        any::<u64>().prop_map(|ctx| Body::ReadIndex { ctx }),
        (any::<u64>(), any::<u64>()).prop_map(|(ctx, index)| Body::ReadIndexResponse { ctx, index }),
        (any::<u64>(), "[a-zü/]{1,12}", any::<u64>(), any::<u64>(), 0..=MAX_RECORDS_BYTES).prop_map(
            |(req_id, topic, offset, up_to, max_bytes)| Body::RecordsRequest {
                req_id,
                topic,
                offset,
                up_to,
                max_bytes
            }
        ),
        (any::<u64>(), arb_records_result()).prop_map(|(req_id, result)| Body::Records { req_id, result }),
    ]
}

fn arb_records_result() -> impl Strategy<Value = RecordsResult> {
    prop_oneof![
        ("[a-z]{1,9}", any::<u64>(), any::<u64>(), arb_bytes())
            .prop_map(|(topic, from, next, bytes)| RecordsResult::Chunk { topic, from, next, bytes }),
        ("[a-z]{1,9}", any::<u64>()).prop_map(|(topic, first)| RecordsResult::FirstOffset { topic, first }),
        "[a-z]{1,9}".prop_map(|topic| RecordsResult::NotAvailable { topic }),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    (any::<u64>(), any::<u64>(), any::<u64>(), arb_body()).prop_map(|(from, to, term, body)| Message {
        from,
        to,
        term,
        body,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn message_round_trips(m in arb_message()) {
        let mut buf = Vec::new();
        m.encode(&mut buf);
        prop_assert_eq!(Message::decode(&buf), Ok(m));
    }

    #[test]
    fn entry_and_conf_entry_round_trip(e in arb_entry(), conf in arb_conf(), node in any::<u64>(), ctx in arb_bytes()) {
        let mut buf = Vec::new();
        e.encode(&mut buf);
        prop_assert_eq!(Entry::decode(&buf), Ok(e));
        let ce = ConfEntry { change: ConfChange { kind: ConfChangeKind::AddVoter, node, context: ctx }, conf };
        prop_assert_eq!(ConfEntry::decode(&ce.to_bytes()), Ok(ce));
    }

    #[test]
    fn every_strict_prefix_of_an_encoding_is_an_error(m in arb_message()) {
        let mut buf = Vec::new();
        m.encode(&mut buf);
        for cut in 0..buf.len() {
            prop_assert!(Message::decode(&buf[..cut]).is_err());
        }
        buf.push(0);
        prop_assert_eq!(Message::decode(&buf), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Message::decode(&bytes);
        let _ = Entry::decode(&bytes);
        let _ = ConfEntry::decode(&bytes);
        let _ = ConfChange::decode(&bytes);
        let _ = ConfState::decode(&bytes);
    }

    #[test]
    fn decoded_garbage_never_panics_the_core(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        if let Ok(mut m) = Message::decode(&bytes) {
            let mut r = new_raft(1, &[1, 2, 3], RaftConfig::new(1));
            m.to = 1;
            let _ = r.step(m);
            let _ = drain(&mut r);
        }
    }
}

#[test]
fn huge_lengths_are_refused_without_allocating() {
    // An append claiming u64::MAX entries.
    let mut buf = Vec::new();
    for v in [1u8, 2, 3, 3, 0, 0, 0] {
        buf.push(v);
    }
    buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert!(matches!(Message::decode(&buf), Err(DecodeError::LengthTooLarge { .. })));
    // An 11-byte varint.
    assert_eq!(Message::decode(&[0xff; 11]), Err(DecodeError::VarintOverflow));
    assert!(matches!(
        Message::decode(&[1, 2, 3, 99]),
        Err(DecodeError::InvalidTag { what: "message", tag: 99 })
    ));
}

#[test]
fn records_fields_out_of_bounds_are_refused_at_decode() {
    let encode = |topic: &str, max_bytes: u32| {
        let body = Body::RecordsRequest { req_id: 1, topic: topic.into(), offset: 0, up_to: 9, max_bytes };
        let mut buf = Vec::new();
        Message { from: 1, to: 2, term: 3, body }.encode(&mut buf);
        buf
    };
    assert!(Message::decode(&encode("t", MAX_RECORDS_BYTES)).is_ok());
    let refused = |buf: &[u8]| matches!(Message::decode(buf), Err(DecodeError::OutOfBounds(_)));
    assert!(refused(&encode("t", MAX_RECORDS_BYTES + 1)), "max_bytes above the cap");
    assert!(refused(&encode("", 10)), "empty topic");
    assert!(refused(&encode(&"x".repeat(crate::event::MAX_TOPIC_LEN + 1), 10)), "topic too long");
    assert!(Message::decode(&encode(&"x".repeat(crate::event::MAX_TOPIC_LEN), 10)).is_ok());
    let mut bad_utf8 = encode("ab", 10);
    let at = bad_utf8.iter().position(|&b| b == b'a').unwrap();
    bad_utf8[at] = 0xff;
    assert!(refused(&bad_utf8), "topic not UTF-8");
}

#[test]
fn the_core_ignores_records_messages_whatever_their_term() {
    let mut r = new_raft(1, &[1, 2, 3], RaftConfig::new(1));
    let _ = drain(&mut r);
    let before = r.status();
    let req = Body::RecordsRequest { req_id: 1, topic: "t".into(), offset: 0, up_to: 5, max_bytes: 10 };
    let reply = Body::Records { req_id: 1, result: RecordsResult::NotAvailable { topic: "t".into() } };
    for body in [req, reply] {
        assert_eq!(r.step(Message { from: 2, to: 1, term: before.term + 5, body }), Ok(()));
        assert_eq!(r.status(), before, "a records message never moves the term or role");
        let rd = drain(&mut r);
        assert!(rd.messages.is_empty() && rd.hard_state.is_none(), "{rd:?}");
    }
}

#[test]
fn encoding_is_compact() {
    let m = Message { from: 1, to: 2, term: 3, body: Body::Heartbeat { commit: 100, round: 7 } };
    let mut buf = Vec::new();
    m.encode(&mut buf);
    assert_eq!(buf.len(), 6);
}
