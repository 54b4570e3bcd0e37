//! Fuzz target bodies: one function per target, each taking arbitrary bytes and feeding them to a
//! decoder or recovery path that must answer with a typed error or a value, never a panic.
//!
//! The cargo-fuzz targets in `fuzz/` and the corpus replay test (`tests/fuzz_corpus.rs`) call
//! these same functions, so a corpus file that once found a bug keeps checking its fix in plain
//! `cargo test`. See `docs/fuzzing.md`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};

use crate::config::Config;
use crate::node::command::Command;
use crate::node::dedup::DedupConfig;
use crate::node::state::EventLogState;
use crate::raft::message::Message;
use crate::raft::types::{ConfState, Entry, EntryKind, HardState, RestoredState};
use crate::raft::{Raft, RaftConfig};
use crate::rt::io::{AsyncRead, AsyncWrite, ReadBuf};
use crate::rt::{Disk, SimDisk, rng_from_seed};
use crate::transport::frame::decode_frame as decode_peer_frame;
use crate::transport::handshake::{self, Local};
use crate::wal::{RaftStorage, StorageOptions};
use crate::wire::{ReplyDecoder, StreamDecoder, acked, legacy};

/// A target body: arbitrary bytes in, no panic out.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("legacy_frame", legacy_frame),
    ("acked_frame", acked_frame),
    ("peer_handshake", peer_handshake),
    ("peer_frames", peer_frames),
    ("wal_recovery", wal_recovery),
    ("state_decode", state_decode),
    ("config_toml", config_toml),
];

/// A small frame limit, so the fuzzer reaches "too large" without building huge inputs.
const FUZZ_MAX_FRAME: usize = 4096;

/// Runs a client stream decoder over `data` until it needs more bytes or the stream is closed.
fn drain_stream(data: &[u8]) {
    let mut dec = StreamDecoder::new(FUZZ_MAX_FRAME);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = dec.decode(&mut buf) {}
}

/// (a) The legacy frame: the body parser on the whole input, and the stream decoder on it.
pub fn legacy_frame(data: &[u8]) {
    let _ = legacy::parse_body(&Bytes::copy_from_slice(data));
    drain_stream(data);
}

/// (b) The acked protocol: requests as a server decodes them (through the stream decoder that
/// also accepts legacy frames), and replies as a client decodes them.
pub fn acked_frame(data: &[u8]) {
    drain_stream(data);
    let mut replies = ReplyDecoder::new(FUZZ_MAX_FRAME);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = replies.decode(&mut buf) {}
    let _ = acked::decode_events(Bytes::copy_from_slice(data));
}

/// One end of a connection whose peer sent `input` and then closed; what we write is dropped.
struct ScriptedPeer<'a> {
    input: &'a [u8],
}

impl AsyncRead for ScriptedPeer<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = buf.remaining().min(self.input.len());
        buf.put_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ScriptedPeer<'_> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Polls a future that never waits (its I/O is always ready) to completion.
fn run_ready<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// (c) The peer handshake: the first byte picks the side we play (even: the listener, as a
/// stranger reaching the Raft port finds it; odd: a dialer reaching a hostile listener), the
/// rest is everything the other side sends.
pub fn peer_handshake(data: &[u8]) {
    let Some((&side, input)) = data.split_first() else { return };
    let local =
        Local { node_id: 1, cluster_id: b"fuzz", secret: b"fuzz-secret", nonce: [7; 32], pake_seed: [9; 32] };
    let mut peer = ScriptedPeer { input };
    let _ = if side % 2 == 0 {
        run_ready(handshake::accept(&mut peer, &local)).map(|r| r.map(|_| ()))
    } else {
        run_ready(handshake::dial(&mut peer, &local, 2))
    };
    let _ = handshake::Hello::decode(input);
}

/// Node 1 of a three-voter cluster with a few entries of term 1 and 2, 3 of them committed.
fn fuzz_core() -> Option<Raft> {
    let entries = (1..=5)
        .map(|i| Entry {
            term: 1 + i / 4,
            index: i,
            kind: EntryKind::Normal,
            data: Bytes::from(vec![i as u8]),
        })
        .collect();
    let restored = RestoredState {
        hard_state: HardState { term: 2, vote: Some(2), commit: 3 },
        snapshot: None,
        entries,
        conf_state: ConfState::with_voters([1, 2, 3]),
        applied: 0,
    };
    Raft::new(RaftConfig::new(1), restored, rng_from_seed(1)).ok()
}

/// Hands the driver's work back to the core as done, as the driver would after persisting.
fn drive(raft: &mut Raft) {
    if raft.has_ready() {
        let _ = raft.ready();
        raft.advance();
    }
}

/// (d) Peer frames: the first byte is a number of ticks (so the core may be a candidate or a
/// leader), the rest a stream of peer frames. Each decoded message is bounds-checked as the
/// transport does, then stepped into a Raft core, which must refuse bad input with an error.
pub fn peer_frames(data: &[u8]) {
    let Some((&ticks, mut rest)) = data.split_first() else { return };
    let Some(mut raft) = fuzz_core() else { return };
    for _ in 0..ticks % 64 {
        raft.tick();
        drive(&mut raft);
    }
    while let Ok(Some((msg, used))) = decode_peer_frame(rest, FUZZ_MAX_FRAME) {
        rest = &rest[used..];
        if msg.check_bounds().is_ok() {
            let _ = raft.step(msg);
            drive(&mut raft);
        } else {
            // The core must refuse it on its own too (it checks again).
            assert!(raft.step(msg).is_err(), "the core accepted a message check_bounds refuses");
        }
    }
    let _ = Message::decode(rest);
}

/// File names a [`wal_recovery`] input can write; any other selector names a segment.
const WAL_FILES: [&str; 5] = ["hardstate", "snapshot", "snapshot.install", "hardstate.tmp", "snapshot.tmp"];

/// Encodes files as a [`wal_recovery`] input (for seeding the corpus from a real storage).
pub fn wal_input(repair: bool, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![u8::from(repair)];
    for (name, bytes) in files {
        let sel = match WAL_FILES.iter().position(|f| f == name) {
            Some(i) => i as u8,
            None => {
                let first: u64 =
                    name.trim_start_matches("wal-").trim_end_matches(".seg").parse().unwrap_or(1);
                out.push(255);
                out.extend_from_slice(&first.to_le_bytes());
                out.extend_from_slice(&(bytes.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
                out.extend_from_slice(&bytes[..bytes.len().min(usize::from(u16::MAX))]);
                continue;
            }
        };
        out.push(sel);
        out.extend_from_slice(&(bytes.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        out.extend_from_slice(&bytes[..bytes.len().min(usize::from(u16::MAX))]);
    }
    out
}

/// Writes the files a [`wal_recovery`] input describes: `[flags]` then `[selector][u16 LE
/// length][bytes]` repeated; selector 255 is followed by a segment's first index (`u64 LE`),
/// selectors past [`WAL_FILES`] name the segment starting at `selector - 4`.
fn write_wal_files(disk: &SimDisk, mut data: &[u8]) {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
        let (head, tail) = data.split_at(n.min(data.len()));
        *data = tail;
        head
    }
    while let Some((&sel, rest)) = data.split_first() {
        data = rest;
        let name = match WAL_FILES.get(usize::from(sel)) {
            Some(f) => (*f).to_string(),
            None if sel == 255 => {
                let b = take(&mut data, 8);
                let mut first = [0u8; 8];
                first[..b.len()].copy_from_slice(b);
                format!("wal-{:020}.seg", u64::from_le_bytes(first))
            }
            None => format!("wal-{:020}.seg", sel - 4),
        };
        let len = take(&mut data, 2);
        let len = usize::from(u16::from_le_bytes([
            len.first().copied().unwrap_or(0),
            len.get(1).copied().unwrap_or(0),
        ]));
        let bytes = take(&mut data, len);
        let _ = disk.write(&name, bytes);
    }
}

/// (e) WAL recovery: arbitrary segment, hard state and snapshot files on an in-memory disk, then
/// open. A typed error or a recovered state that a Raft core accepts or refuses with an error.
pub fn wal_recovery(data: &[u8]) {
    let Some((&flags, files)) = data.split_first() else { return };
    let disk = SimDisk::new();
    write_wal_files(&disk, files);
    let opts = StorageOptions { segment_bytes: 256, repair: flags & 1 == 1 };
    let Ok((mut storage, rec)) = RaftStorage::open(Arc::new(disk.clone()), opts.clone()) else { return };
    assert!(rec.entries.windows(2).all(|w| w[1].index == w[0].index + 1), "recovered log has a gap");
    assert_eq!(storage.last_index(), rec.entries.last().map_or(storage.first_index() - 1, |e| e.index));
    let restored = rec.clone().into_restored_state(ConfState::with_voters([1, 2, 3]));
    let _ = Raft::new(RaftConfig::new(1), restored, rng_from_seed(1));
    // What recovery kept is writable and recovers to the same state again.
    let next = Entry {
        term: rec.hard_state.term.max(rec.entries.last().map_or(0, |e| e.term)),
        index: storage.last_index() + 1,
        kind: EntryKind::Normal,
        data: Bytes::from_static(b"after recovery"),
    };
    if flags & 2 == 2 && next.index <= crate::raft::types::MAX_INDEX && storage.append(&[next]).is_ok() {
        let _ = storage.sync();
    }
    drop(storage);
    let (_, again) = RaftStorage::open(Arc::new(disk), opts).expect("a recovered storage reopens");
    if flags & 2 == 0 {
        assert_eq!(again.entries, rec.entries, "a second recovery differs from the first");
    }
}

/// (f) Replicated state: an event-log snapshot (first byte even) or a command entry (odd).
pub fn state_decode(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    let bytes = Bytes::copy_from_slice(rest);
    if which % 2 == 0 {
        let fresh = Arc::new(crate::rt::SimDisk::new());
        if let Ok(state) = EventLogState::decode_snapshot_on(DedupConfig::default(), bytes, fresh) {
            let bytes = state.encode_snapshot();
            let files = state.store().copy_files_to_memory().expect("an in-memory topic set copies");
            let again = EventLogState::decode_snapshot_on(DedupConfig::default(), bytes, Arc::new(files));
            assert!(again.is_ok(), "a decoded snapshot re-encodes to bytes that do not decode");
        }
    } else {
        let _ = Command::decode(bytes);
    }
}

/// (g) The config file: TOML text over the defaults, then validation.
pub fn config_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_toml(text);
    }
}

/// Well-formed starting inputs for `target` (what `tests/fuzz_corpus.rs` writes with
/// `--ignored`), so the fuzzer starts past every magic number and checksum.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "legacy_frame" => seeds::legacy(),
        "acked_frame" => seeds::acked(),
        "peer_handshake" => seeds::handshake(),
        "peer_frames" => seeds::peer_frames(),
        "wal_recovery" => seeds::wal(),
        "state_decode" => seeds::state(),
        "config_toml" => vec![Config::defaults_toml().into_bytes(), b"[node]\nid = 3\n".to_vec()],
        _ => Vec::new(),
    }
}

mod seeds {
    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::event::{Event, Header, Priority};
    use crate::raft::message::{Body, RecordsResult, RejectHint};
    use crate::raft::types::{Snapshot, SnapshotMeta};
    use crate::transport::frame::encode_frame;
    use crate::wire::{AdminRequest, Request, Response};

    fn keyed_event() -> Event {
        let mut e = Event::new("sensor/temp", Priority::High, &b"21.5"[..]);
        e.producer_id = 7;
        e.sequence = 3;
        e.key = Some(Bytes::from_static(b"k"));
        e.headers = vec![Header { name: "h".into(), value: Bytes::from_static(b"v") }];
        e
    }

    pub(super) fn legacy() -> Vec<Vec<u8>> {
        let mut two = legacy::encode_to_vec(Priority::Critical, "a/b", b"xyz");
        two.extend(legacy::encode_to_vec(Priority::Batch, "t", b""));
        vec![legacy::encode_to_vec(Priority::High, "temp", b"hi"), two, vec![0, 0, 0, 0, 0, 0, 0, 0]]
    }

    pub(super) fn acked() -> Vec<Vec<u8>> {
        let requests = [
            Request::Hello { client: "c".into(), token: "t".into() },
            Request::Publish(vec![keyed_event(), Event::new("t", Priority::Low, &b""[..])]),
            Request::Fetch { topic: "t".into(), offset: 3, max_events: 10 },
            Request::Ping,
            Request::Read { topic: "t".into(), offset: 0, max_events: 1, linearizable: true, wait_ms: 5 },
            Request::Admin(AdminRequest::Status),
            Request::Admin(AdminRequest::AddNode { id: 4, raft_addr: "a".into(), client_addr: "b".into() }),
            Request::Admin(AdminRequest::RemoveNode { id: 2 }),
            Request::Admin(AdminRequest::TransferLeader { id: 3 }),
        ];
        let responses = [
            Response::Pong,
            Response::AdminOk("ok".into()),
            Response::HelloOk { server: "esc".into(), node_id: 1, max_frame_bytes: 4096 },
        ];
        let mut out = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            let mut b = BytesMut::new();
            r.encode(i as u64, &mut b);
            out.push(b.to_vec());
        }
        for (i, r) in responses.iter().enumerate() {
            let mut b = BytesMut::new();
            r.encode(i as u64, &mut b);
            out.push(b.to_vec());
        }
        out
    }

    pub(super) fn handshake() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (side, role) in [(0u8, handshake::Role::Dialer), (1, handshake::Role::Listener)] {
            let hello = handshake::Hello { role, node_id: 2, nonce: [3; 32], cluster_id: b"fuzz".to_vec() };
            let mut s = vec![side];
            s.extend(hello.encode());
            s.extend([0x42; handshake::PAKE_MSG_LEN + handshake::PROOF_LEN]);
            out.push(s);
        }
        out
    }

    fn frames(ticks: u8, msgs: &[Message]) -> Vec<u8> {
        let mut out = vec![ticks];
        for m in msgs {
            let _ = encode_frame(m, FUZZ_MAX_FRAME, &mut out);
        }
        out
    }

    pub(super) fn peer_frames() -> Vec<Vec<u8>> {
        let msg = |from, term, body| Message { from, to: 1, term, body };
        let entry =
            |term, index| Entry { term, index, kind: EntryKind::Normal, data: Bytes::from_static(b"e") };
        let meta = SnapshotMeta { index: 8, term: 3, conf_state: ConfState::with_voters([1, 2, 3]) };
        let won = [
            msg(2, 3, Body::VoteResponse { pre_vote: true, granted: true }),
            msg(2, 3, Body::VoteResponse { pre_vote: false, granted: true }),
            msg(3, 3, Body::AppendResponse { index: 5, reject: None }),
            msg(
                3,
                3,
                Body::AppendResponse {
                    index: 2,
                    reject: Some(RejectHint { conflict_term: Some(1), conflict_index: 1 }),
                },
            ),
            msg(2, 3, Body::HeartbeatResponse { round: 1 }),
            msg(2, 3, Body::ReadIndex { ctx: 9 }),
            msg(
                2,
                3,
                Body::SnapshotResponse { snapshot_index: 4, next_offset: 0, done: true, last_index: 4 },
            ),
        ];
        vec![
            frames(
                0,
                &[msg(
                    2,
                    3,
                    Body::Append {
                        prev_index: 5,
                        prev_term: 2,
                        entries: vec![entry(3, 6), entry(3, 7)],
                        commit: 6,
                    },
                )],
            ),
            frames(
                0,
                &[msg(
                    2,
                    3,
                    Body::Append { prev_index: 4, prev_term: 2, entries: vec![entry(3, 5)], commit: 4 },
                )],
            ),
            frames(
                0,
                &[msg(3, 3, Body::Vote { pre_vote: false, last_index: 9, last_term: 3, transfer: false })],
            ),
            frames(0, &[msg(2, 2, Body::Heartbeat { commit: 3, round: 1 })]),
            frames(
                0,
                &[msg(
                    2,
                    4,
                    Body::Snapshot { meta, offset: 0, data: Bytes::from_static(b"snap"), done: true },
                )],
            ),
            frames(
                0,
                &[msg(2, 2, Body::TimeoutNow), msg(2, 2, Body::ReadIndexResponse { ctx: 1, index: 3 })],
            ),
            frames(40, &won),
            frames(0, &records(msg)),
        ]
    }

    /// Catch-up traffic: a request and each kind of answer (the chunk holds two real records).
    fn records(msg: impl Fn(u64, u64, Body) -> Message) -> Vec<Message> {
        let mut bytes = Vec::new();
        for offset in [4u64, 5] {
            crate::record::append_with(&mut bytes, |b| {
                b.extend_from_slice(&offset.to_be_bytes());
                b.extend_from_slice(&[0; 9]);
            });
        }
        let topic = || "orders".to_string();
        let result = RecordsResult::Chunk { topic: topic(), from: 4, next: 6, bytes: Bytes::from(bytes) };
        vec![
            msg(
                2,
                3,
                Body::RecordsRequest { req_id: 1, topic: topic(), offset: 4, up_to: 9, max_bytes: 4096 },
            ),
            msg(2, 3, Body::Records { req_id: 1, result }),
            msg(
                2,
                3,
                Body::Records { req_id: 2, result: RecordsResult::FirstOffset { topic: topic(), first: 7 } },
            ),
            msg(2, 3, Body::Records { req_id: 3, result: RecordsResult::NotAvailable { topic: topic() } }),
        ]
    }

    pub(super) fn wal() -> Vec<Vec<u8>> {
        let disk = SimDisk::new();
        let opts = StorageOptions { segment_bytes: 256, repair: false };
        let mut out = Vec::new();
        let Ok((mut st, _)) = RaftStorage::open(Arc::new(disk.clone()), opts) else { return out };
        let ents: Vec<Entry> = (1..=12)
            .map(|i| Entry {
                term: 1 + i / 6,
                index: i,
                kind: EntryKind::Normal,
                data: Bytes::from(vec![b'x'; 40]),
            })
            .collect();
        let _ = st.append(&ents);
        let _ = st.sync();
        let _ = st.set_hard_state(HardState { term: 2, vote: Some(1), commit: 9 });
        out.push(wal_input(false, &files(&disk)));
        let snap = Snapshot {
            meta: SnapshotMeta { index: 6, term: 2, conf_state: ConfState::with_voters([1, 2, 3]) },
            data: Bytes::from_static(b"state"),
        };
        let _ = st.save_snapshot(&snap);
        let _ = st.compact(6);
        out.push(wal_input(true, &files(&disk)));
        let mut install = files(&disk);
        if let Some(s) = install.iter().find(|(n, _)| n == "snapshot").cloned() {
            install.push(("snapshot.install".into(), s.1));
        }
        out.push(wal_input(false, &install));
        out
    }

    fn files(disk: &SimDisk) -> Vec<(String, Vec<u8>)> {
        let names = disk.list("").unwrap_or_default();
        names.into_iter().filter_map(|n| disk.read(&n).ok().map(|b| (n, b))).collect()
    }

    pub(super) fn state() -> Vec<Vec<u8>> {
        let mut state = EventLogState::new(DedupConfig::default());
        state
            .apply_batch(vec![keyed_event(), Event::new("t", Priority::Low, &b"p"[..])], 1000)
            .expect("in memory");
        state.apply_checkpoint(&[("t".into(), 1)], &[(7, 3)]);
        let publish = Command::Publish { stamped_ms: 5, events: vec![keyed_event()] };
        let checkpoint = Command::Checkpoint { positions: vec![("t".into(), 4)], handled: vec![(7, 3)] };
        let tagged = |tag: u8, b: Bytes| [&[tag][..], &b[..]].concat();
        vec![
            tagged(0, state.encode_snapshot()),
            tagged(0, EventLogState::new(DedupConfig::default()).encode_snapshot()),
            tagged(1, publish.encode()),
            tagged(1, checkpoint.encode()),
        ]
    }
}
