//! The two small files beside the log: `hardstate` and `snapshot` (also `snapshot.install`), each
//! checksummed as a whole and replaced atomically; and the checks a recovered log must pass.

use super::*;

pub(super) fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut b = Vec::with_capacity(HARD_STATE_LEN);
    b.extend_from_slice(HARD_STATE_MAGIC);
    b.extend_from_slice(&hs.term.to_le_bytes());
    b.push(u8::from(hs.vote.is_some()));
    b.extend_from_slice(&hs.vote.unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&hs.commit.to_le_bytes());
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(b.len(), HARD_STATE_LEN);
    b
}

/// Terms in a log never decrease (from the snapshot's on); a file where they do was not written
/// by this storage.
pub(super) fn check_terms_never_decrease(
    segments: &[Segment],
    entries: &[Entry],
    snap_term: u64,
) -> Result<(), StorageError> {
    let mut prev = snap_term;
    for e in entries {
        if e.term < prev {
            let file =
                segments.iter().find(|s| s.first <= e.index && e.index <= s.last).map_or("", |s| &s.name);
            return Err(corrupt(
                file,
                0,
                format!(
                    "entry {} has term {} after term {prev}: terms in a log never decrease",
                    e.index, e.term
                ),
            ));
        }
        prev = e.term;
    }
    Ok(())
}

pub(super) fn corrupt(file: &str, offset: usize, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt { file: file.to_string(), offset: offset as u64, reason: reason.into() }
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(super) fn decode_hard_state(file: &str, b: &[u8]) -> Result<HardState, StorageError> {
    if b.len() != HARD_STATE_LEN {
        return Err(corrupt(
            file,
            b.len().min(HARD_STATE_LEN),
            format!("{} bytes, expected {HARD_STATE_LEN}", b.len()),
        ));
    }
    if &b[..4] != HARD_STATE_MAGIC {
        return Err(corrupt(file, 0, "bad magic"));
    }
    if crc32c::crc32c(&b[..29]) != u32_at(b, 29) {
        return Err(corrupt(file, 29, "checksum mismatch"));
    }
    let vote = match b[12] {
        0 => None,
        1 => Some(u64_at(b, 13)),
        tag => return Err(corrupt(file, 12, format!("invalid vote flag {tag}"))),
    };
    let (term, commit) = (u64_at(b, 4), u64_at(b, 21));
    if term > MAX_TERM {
        return Err(corrupt(file, 4, format!("term {term} is beyond the ceiling {MAX_TERM}")));
    }
    if commit > MAX_INDEX {
        return Err(corrupt(file, 21, format!("commit index {commit} is beyond the ceiling {MAX_INDEX}")));
    }
    if vote == Some(0) {
        return Err(corrupt(file, 13, "vote for node 0"));
    }
    Ok(HardState { term, vote, commit })
}

pub(super) fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let mut conf = Vec::new();
    s.meta.conf_state.encode(&mut conf);
    let mut b = Vec::with_capacity(4 + 8 + 8 + 4 + conf.len() + 8 + s.data.len() + 4);
    b.extend_from_slice(SNAPSHOT_MAGIC);
    b.extend_from_slice(&s.meta.index.to_le_bytes());
    b.extend_from_slice(&s.meta.term.to_le_bytes());
    b.extend_from_slice(&(conf.len() as u32).to_le_bytes());
    b.extend_from_slice(&conf);
    b.extend_from_slice(&(s.data.len() as u64).to_le_bytes());
    b.extend_from_slice(&s.data);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

pub(super) fn decode_snapshot(file: &str, b: &[u8]) -> Result<Snapshot, StorageError> {
    const FIXED: usize = 4 + 8 + 8 + 4;
    if b.len() < FIXED + 8 + 4 {
        return Err(corrupt(file, b.len(), "file too short for a snapshot"));
    }
    if &b[..4] != SNAPSHOT_MAGIC {
        return Err(corrupt(file, 0, "bad magic"));
    }
    let body = b.len() - 4;
    if crc32c::crc32c(&b[..body]) != u32_at(b, body) {
        return Err(corrupt(file, body, "checksum mismatch"));
    }
    let index = u64_at(b, 4);
    let term = u64_at(b, 12);
    if index > MAX_INDEX {
        return Err(corrupt(file, 4, format!("index {index} is beyond the ceiling {MAX_INDEX}")));
    }
    if term > MAX_TERM {
        return Err(corrupt(file, 12, format!("term {term} is beyond the ceiling {MAX_TERM}")));
    }
    let conf_len = u32_at(b, 20) as usize;
    let conf_end = FIXED.checked_add(conf_len).filter(|&e| e + 8 <= body);
    let Some(conf_end) = conf_end else {
        return Err(corrupt(file, 20, format!("configuration length {conf_len} runs past the end")));
    };
    let conf_state = ConfState::decode(&b[FIXED..conf_end])
        .map_err(|e| corrupt(file, FIXED, format!("configuration: {e}")))?;
    let data_len = u64_at(b, conf_end);
    let data_start = conf_end + 8;
    if usize::try_from(data_len).ok().and_then(|n| data_start.checked_add(n)) != Some(body) {
        return Err(corrupt(file, conf_end, format!("data length {data_len} does not match the file size")));
    }
    Ok(Snapshot {
        meta: SnapshotMeta { index, term, conf_state },
        data: Bytes::copy_from_slice(&b[data_start..body]),
    })
}
