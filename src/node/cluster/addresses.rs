//! The address book: where each member listens (Raft and clients), as learned from the
//! configuration, configuration entries and snapshots, and what the peer transport is told.

use super::*;

/// Where a member listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Addr {
    pub(super) raft: String,
    pub(super) client: String,
}

impl Addr {
    pub(super) fn to_context(&self) -> Bytes {
        Bytes::from(format!("{}\n{}", self.raft, self.client))
    }

    pub(super) fn from_context(ctx: &[u8]) -> Option<Addr> {
        let text = std::str::from_utf8(ctx).ok()?;
        let (raft, client) = text.split_once('\n')?;
        Some(Addr { raft: raft.to_string(), client: client.to_string() })
    }
}

/// Records the address carried by a configuration entry.
pub(super) fn note_conf_entry(addrs: &mut BTreeMap<NodeId, Addr>, e: &Entry) {
    if e.kind != EntryKind::ConfChange {
        return;
    }
    if let Ok(ce) = ConfEntry::decode(&e.data)
        && ce.change.kind != ConfChangeKind::Remove
        && let Some(a) = Addr::from_context(&ce.change.context)
    {
        addrs.insert(ce.change.node, a);
    }
}

/// Snapshot payload: the address book of the applied configuration, then the event-log state.
pub(super) fn encode_snapshot_data(addrs: &BTreeMap<NodeId, Addr>, state: &EventLogState) -> Bytes {
    let body = state.encode_snapshot();
    let mut out = BytesMut::with_capacity(body.len() + 64 * addrs.len() + 4);
    out.put_u32(addrs.len() as u32);
    for (id, a) in addrs {
        out.put_u64(*id);
        for s in [&a.raft, &a.client] {
            put_str16(&mut out, s);
        }
    }
    out.put_slice(&body);
    out.freeze()
}

pub(super) fn decode_snapshot_data(
    dedup: DedupConfig,
    mut b: Bytes,
) -> Result<(BTreeMap<NodeId, Addr>, EventLogState), String> {
    let short = || "truncated address book".to_string();
    if b.remaining() < 4 {
        return Err(short());
    }
    let n = b.get_u32();
    let mut book = BTreeMap::new();
    for _ in 0..n {
        if b.remaining() < 8 {
            return Err(short());
        }
        let id = b.get_u64();
        let mut parts = [String::new(), String::new()];
        for p in &mut parts {
            *p = get_str16(&mut b, "address").map_err(|e| format!("address book: {e}"))?;
        }
        let [raft, client] = parts;
        book.insert(id, Addr { raft, client });
    }
    let state = EventLogState::decode_snapshot(dedup, b).map_err(|e| e.to_string())?;
    Ok((book, state))
}

impl Driver {
    /// Points the transport at every node whose address is known: the members of the current
    /// configuration, and the configured members while joining (a node that is not yet in the
    /// configuration must still answer the leader that replicates to it).
    pub(super) fn sync_peers(&mut self) {
        let Some(transport) = &self.transport else {
            return;
        };
        for (id, a) in &self.addrs {
            if *id != self.id && self.peers.get(id) != Some(&a.raft) {
                transport.set_peer(*id, a.raft.clone());
                self.peers.insert(*id, a.raft.clone());
            }
        }
        let gone: Vec<NodeId> = self.peers.keys().copied().filter(|p| !self.addrs.contains_key(p)).collect();
        for p in gone {
            transport.remove_peer(p);
            self.peers.remove(&p);
        }
    }
}
