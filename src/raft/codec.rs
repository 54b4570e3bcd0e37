//! Compact binary encoding of [`Message`], [`Entry`] and [`ConfChange`].
//!
//! Integers are LEB128 varints, byte strings are a varint length then the bytes, enums a one-byte
//! tag. Decoding never panics and never allocates more than the input could hold: every length is
//! checked against the bytes that remain. The transport frames and checksums the result.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::message::{Body, MAX_RECORDS_BYTES, Message, RecordsResult, RejectHint};
use super::types::{
    ConfChange, ConfChangeKind, ConfEntry, ConfState, Entry, EntryKind, NodeId, SnapshotMeta,
};
use crate::event::MAX_TOPIC_LEN;

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("unexpected end of input")]
    UnexpectedEof,
    /// A varint was longer than 10 bytes or overflowed 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// An enum tag was not one we know.
    #[error("invalid {what} tag {tag}")]
    InvalidTag {
        /// Which enum.
        what: &'static str,
        /// The tag read.
        tag: u8,
    },
    /// A length or count exceeds the bytes left.
    #[error("length {len} exceeds the {remaining} bytes left")]
    LengthTooLarge {
        /// The length read.
        len: u64,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// Bytes were left over after a complete value.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    /// A field breaks its bound (too long, above its cap, not UTF-8).
    #[error("{0}")]
    OutOfBounds(&'static str),
}

// --------------------------------------------------------------------------------------------
// Primitive writers and a bounds-checked reader
// --------------------------------------------------------------------------------------------

fn put_u64(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_u64(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

fn put_bool(buf: &mut Vec<u8>, b: bool) {
    buf.push(b as u8);
}

fn put_opt(buf: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => buf.push(0),
        Some(v) => {
            buf.push(1);
            put_u64(buf, v);
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError::UnexpectedEof)?;
        self.buf = rest;
        Ok(b)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(DecodeError::VarintOverflow);
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::InvalidTag { what: "bool", tag }),
        }
    }

    fn opt(&mut self) -> Result<Option<u64>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            tag => Err(DecodeError::InvalidTag { what: "option", tag }),
        }
    }

    /// A length (or count of items at least `min_item` bytes each) that must fit in what is left.
    fn len(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let len = self.u64()?;
        let remaining = self.buf.len();
        let fits =
            usize::try_from(len).ok().and_then(|n| n.checked_mul(min_item)).is_some_and(|n| n <= remaining);
        if !fits {
            return Err(DecodeError::LengthTooLarge { len, remaining });
        }
        Ok(len as usize)
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.len(1)?;
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(Bytes::copy_from_slice(head))
    }

    /// A topic name: UTF-8, 1..=[`MAX_TOPIC_LEN`] bytes.
    fn topic(&mut self) -> Result<String, DecodeError> {
        let n = self.len(1)?;
        if n == 0 || n > MAX_TOPIC_LEN {
            return Err(DecodeError::OutOfBounds("topic name empty or too long"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        String::from_utf8(head.to_vec()).map_err(|_| DecodeError::OutOfBounds("topic name not UTF-8"))
    }

    fn ids(&mut self) -> Result<BTreeSet<NodeId>, DecodeError> {
        let n = self.len(1)?;
        (0..n).map(|_| self.u64()).collect()
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() { Ok(()) } else { Err(DecodeError::TrailingBytes(self.buf.len())) }
    }
}

// --------------------------------------------------------------------------------------------
// Entries and configuration
// --------------------------------------------------------------------------------------------

fn kind_tag(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Normal => 0,
        EntryKind::Noop => 1,
        EntryKind::ConfChange => 2,
    }
}

fn put_entry(buf: &mut Vec<u8>, e: &Entry) {
    put_u64(buf, e.term);
    put_u64(buf, e.index);
    buf.push(kind_tag(e.kind));
    put_bytes(buf, &e.data);
}

fn read_entry(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let term = r.u64()?;
    let index = r.u64()?;
    let kind = match r.u8()? {
        0 => EntryKind::Normal,
        1 => EntryKind::Noop,
        2 => EntryKind::ConfChange,
        tag => {
            return Err(DecodeError::InvalidTag { what: "entry kind", tag });
        }
    };
    let data = r.bytes()?;
    Ok(Entry { term, index, kind, data })
}

fn put_conf_state(buf: &mut Vec<u8>, cs: &ConfState) {
    put_u64(buf, cs.voters.len() as u64);
    cs.voters.iter().for_each(|&id| put_u64(buf, id));
    put_u64(buf, cs.learners.len() as u64);
    cs.learners.iter().for_each(|&id| put_u64(buf, id));
}

fn read_conf_state(r: &mut Reader<'_>) -> Result<ConfState, DecodeError> {
    Ok(ConfState { voters: r.ids()?, learners: r.ids()? })
}

fn put_meta(buf: &mut Vec<u8>, m: &SnapshotMeta) {
    put_u64(buf, m.index);
    put_u64(buf, m.term);
    put_conf_state(buf, &m.conf_state);
}

fn read_meta(r: &mut Reader<'_>) -> Result<SnapshotMeta, DecodeError> {
    Ok(SnapshotMeta { index: r.u64()?, term: r.u64()?, conf_state: read_conf_state(r)? })
}

impl Entry {
    /// Appends the binary form of this entry to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_entry(buf, self);
    }

    /// Decodes exactly one entry from `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        let mut r = Reader { buf: bytes };
        let e = read_entry(&mut r)?;
        r.finish()?;
        Ok(e)
    }
}

impl ConfState {
    /// Appends the binary form of this configuration to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_conf_state(buf, self);
    }

    /// Decodes exactly one configuration from `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<ConfState, DecodeError> {
        let mut r = Reader { buf: bytes };
        let cs = read_conf_state(&mut r)?;
        r.finish()?;
        Ok(cs)
    }
}

impl ConfChange {
    /// Appends the binary form of this change to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.push(match self.kind {
            ConfChangeKind::AddLearner => 0,
            ConfChangeKind::AddVoter => 1,
            ConfChangeKind::Remove => 2,
        });
        put_u64(buf, self.node);
        put_bytes(buf, &self.context);
    }

    /// Decodes exactly one change from `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<ConfChange, DecodeError> {
        let mut r = Reader { buf: bytes };
        let cc = read_conf_change(&mut r)?;
        r.finish()?;
        Ok(cc)
    }
}

impl ConfEntry {
    /// Appends the binary form to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        self.change.encode(buf);
        put_conf_state(buf, &self.conf);
    }

    /// The encoded form, as the data of a `ConfChange` entry.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = Vec::with_capacity(32 + self.change.context.len());
        self.encode(&mut buf);
        Bytes::from(buf)
    }

    /// Decodes the data of a `ConfChange` entry.
    pub fn decode(bytes: &[u8]) -> Result<ConfEntry, DecodeError> {
        let mut r = Reader { buf: bytes };
        let change = read_conf_change(&mut r)?;
        let conf = read_conf_state(&mut r)?;
        r.finish()?;
        Ok(ConfEntry { change, conf })
    }
}

fn read_conf_change(r: &mut Reader<'_>) -> Result<ConfChange, DecodeError> {
    let kind = match r.u8()? {
        0 => ConfChangeKind::AddLearner,
        1 => ConfChangeKind::AddVoter,
        2 => ConfChangeKind::Remove,
        tag => {
            return Err(DecodeError::InvalidTag { what: "conf change kind", tag });
        }
    };
    let node = r.u64()?;
    let context = r.bytes()?;
    Ok(ConfChange { kind, node, context })
}

// --------------------------------------------------------------------------------------------
// Messages
// --------------------------------------------------------------------------------------------

const T_VOTE: u8 = 1;
const T_VOTE_RESP: u8 = 2;
const T_APPEND: u8 = 3;
const T_APPEND_RESP: u8 = 4;
const T_HEARTBEAT: u8 = 5;
const T_HEARTBEAT_RESP: u8 = 6;
const T_SNAPSHOT: u8 = 7;
const T_SNAPSHOT_RESP: u8 = 8;
const T_TIMEOUT_NOW: u8 = 9;
const T_READ_INDEX: u8 = 10;
const T_READ_INDEX_RESP: u8 = 11;
const T_RECORDS_REQ: u8 = 12;
const T_RECORDS: u8 = 13;

const R_CHUNK: u8 = 0;
const R_FIRST_OFFSET: u8 = 1;
const R_NOT_AVAILABLE: u8 = 2;

fn put_reject(buf: &mut Vec<u8>, reject: Option<&RejectHint>) {
    match reject {
        None => buf.push(0),
        Some(h) => {
            buf.push(1);
            put_opt(buf, h.conflict_term);
            put_u64(buf, h.conflict_index);
        }
    }
}

fn put_records_request(buf: &mut Vec<u8>, req_id: u64, topic: &str, range: (u64, u64), max_bytes: u32) {
    buf.push(T_RECORDS_REQ);
    put_u64(buf, req_id);
    put_bytes(buf, topic.as_bytes());
    put_u64(buf, range.0);
    put_u64(buf, range.1);
    put_u64(buf, u64::from(max_bytes));
}

fn put_records(buf: &mut Vec<u8>, req_id: u64, result: &RecordsResult) {
    buf.push(T_RECORDS);
    put_u64(buf, req_id);
    match result {
        RecordsResult::Chunk { topic, from, next, bytes } => {
            buf.push(R_CHUNK);
            put_bytes(buf, topic.as_bytes());
            put_u64(buf, *from);
            put_u64(buf, *next);
            put_bytes(buf, bytes);
        }
        RecordsResult::FirstOffset { topic, first } => {
            buf.push(R_FIRST_OFFSET);
            put_bytes(buf, topic.as_bytes());
            put_u64(buf, *first);
        }
        RecordsResult::NotAvailable { topic } => {
            buf.push(R_NOT_AVAILABLE);
            put_bytes(buf, topic.as_bytes());
        }
    }
}

fn read_records_request(r: &mut Reader<'_>) -> Result<Body, DecodeError> {
    let req_id = r.u64()?;
    let topic = r.topic()?;
    let (offset, up_to) = (r.u64()?, r.u64()?);
    let max_bytes = r.u64()?;
    if max_bytes > u64::from(MAX_RECORDS_BYTES) {
        return Err(DecodeError::OutOfBounds("records request max_bytes above the cap"));
    }
    Ok(Body::RecordsRequest { req_id, topic, offset, up_to, max_bytes: max_bytes as u32 })
}

fn read_records_result(r: &mut Reader<'_>) -> Result<RecordsResult, DecodeError> {
    Ok(match r.u8()? {
        R_CHUNK => {
            RecordsResult::Chunk { topic: r.topic()?, from: r.u64()?, next: r.u64()?, bytes: r.bytes()? }
        }
        R_FIRST_OFFSET => RecordsResult::FirstOffset { topic: r.topic()?, first: r.u64()? },
        R_NOT_AVAILABLE => RecordsResult::NotAvailable { topic: r.topic()? },
        tag => return Err(DecodeError::InvalidTag { what: "records result", tag }),
    })
}

impl Message {
    /// Appends the binary form of this message to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_u64(buf, self.from);
        put_u64(buf, self.to);
        put_u64(buf, self.term);
        match &self.body {
            Body::Vote { pre_vote, last_index, last_term, transfer } => {
                buf.push(T_VOTE);
                put_bool(buf, *pre_vote);
                put_u64(buf, *last_index);
                put_u64(buf, *last_term);
                put_bool(buf, *transfer);
            }
            Body::VoteResponse { pre_vote, granted } => {
                buf.push(T_VOTE_RESP);
                put_bool(buf, *pre_vote);
                put_bool(buf, *granted);
            }
            Body::Append { prev_index, prev_term, entries, commit } => {
                buf.push(T_APPEND);
                put_u64(buf, *prev_index);
                put_u64(buf, *prev_term);
                put_u64(buf, *commit);
                put_u64(buf, entries.len() as u64);
                entries.iter().for_each(|e| put_entry(buf, e));
            }
            Body::AppendResponse { index, reject } => {
                buf.push(T_APPEND_RESP);
                put_u64(buf, *index);
                put_reject(buf, reject.as_ref());
            }
            Body::Heartbeat { commit, round } => {
                buf.push(T_HEARTBEAT);
                put_u64(buf, *commit);
                put_u64(buf, *round);
            }
            Body::HeartbeatResponse { round } => {
                buf.push(T_HEARTBEAT_RESP);
                put_u64(buf, *round);
            }
            Body::Snapshot { meta, offset, data, done } => {
                buf.push(T_SNAPSHOT);
                put_meta(buf, meta);
                put_u64(buf, *offset);
                put_bytes(buf, data);
                put_bool(buf, *done);
            }
            Body::SnapshotResponse { snapshot_index, next_offset, done, last_index } => {
                buf.push(T_SNAPSHOT_RESP);
                put_u64(buf, *snapshot_index);
                put_u64(buf, *next_offset);
                put_bool(buf, *done);
                put_u64(buf, *last_index);
            }
            Body::TimeoutNow => buf.push(T_TIMEOUT_NOW),
            Body::ReadIndex { ctx } => {
                buf.push(T_READ_INDEX);
                put_u64(buf, *ctx);
            }
            Body::ReadIndexResponse { ctx, index } => {
                buf.push(T_READ_INDEX_RESP);
                put_u64(buf, *ctx);
                put_u64(buf, *index);
            }
            Body::RecordsRequest { req_id, topic, offset, up_to, max_bytes } => {
                put_records_request(buf, *req_id, topic, (*offset, *up_to), *max_bytes)
            }
            Body::Records { req_id, result } => put_records(buf, *req_id, result),
        }
    }

    /// Decodes exactly one message from `bytes`. Never panics on arbitrary input.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader { buf: bytes };
        let from = r.u64()?;
        let to = r.u64()?;
        let term = r.u64()?;
        let body = match r.u8()? {
            T_VOTE => Body::Vote {
                pre_vote: r.bool()?,
                last_index: r.u64()?,
                last_term: r.u64()?,
                transfer: r.bool()?,
            },
            T_VOTE_RESP => Body::VoteResponse { pre_vote: r.bool()?, granted: r.bool()? },
            T_APPEND => {
                let prev_index = r.u64()?;
                let prev_term = r.u64()?;
                let commit = r.u64()?;
                // An encoded entry is at least 4 bytes (term, index, kind, data length).
                let n = r.len(4)?;
                let entries = (0..n).map(|_| read_entry(&mut r)).collect::<Result<Vec<_>, _>>()?;
                Body::Append { prev_index, prev_term, entries, commit }
            }
            T_APPEND_RESP => {
                let index = r.u64()?;
                let reject = match r.u8()? {
                    0 => None,
                    1 => Some(RejectHint { conflict_term: r.opt()?, conflict_index: r.u64()? }),
                    tag => {
                        return Err(DecodeError::InvalidTag { what: "reject", tag });
                    }
                };
                Body::AppendResponse { index, reject }
            }
            T_HEARTBEAT => Body::Heartbeat { commit: r.u64()?, round: r.u64()? },
            T_HEARTBEAT_RESP => Body::HeartbeatResponse { round: r.u64()? },
            T_SNAPSHOT => Body::Snapshot {
                meta: read_meta(&mut r)?,
                offset: r.u64()?,
                data: r.bytes()?,
                done: r.bool()?,
            },
            T_SNAPSHOT_RESP => Body::SnapshotResponse {
                snapshot_index: r.u64()?,
                next_offset: r.u64()?,
                done: r.bool()?,
                last_index: r.u64()?,
            },
            T_TIMEOUT_NOW => Body::TimeoutNow,
            T_READ_INDEX => Body::ReadIndex { ctx: r.u64()? },
            T_READ_INDEX_RESP => Body::ReadIndexResponse { ctx: r.u64()?, index: r.u64()? },
            T_RECORDS_REQ => read_records_request(&mut r)?,
            T_RECORDS => Body::Records { req_id: r.u64()?, result: read_records_result(&mut r)? },
            tag => {
                return Err(DecodeError::InvalidTag { what: "message", tag });
            }
        };
        r.finish()?;
        Ok(Message { from, to, term, body })
    }
}
