//! The address book: where each member listens (Raft and clients), as learned from the
//! configuration, configuration entries and snapshots, and what the peer transport is told. One
//! owner ([`AddressBook`], held by the driver) and one map: per node, every view of its address.

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

/// The address a configuration entry carries for the node it adds (none for a removal).
fn conf_entry_addr(e: &Entry) -> Option<(NodeId, Addr)> {
    if e.kind != EntryKind::ConfChange {
        return None;
    }
    let ce = ConfEntry::decode(&e.data).ok()?;
    if ce.change.kind == ConfChangeKind::Remove {
        return None;
    }
    Some((ce.change.node, Addr::from_context(&ce.change.context)?))
}

/// Records the address carried by a configuration entry (while the book is being built at start).
pub(super) fn note_conf_entry(addrs: &mut BTreeMap<NodeId, Addr>, e: &Entry) {
    if let Some((id, a)) = conf_entry_addr(e) {
        addrs.insert(id, a);
    }
}

/// Everything this node knows about where one node listens.
#[derive(Debug, Default)]
struct Known {
    /// As of every entry seen in the log, uncommitted configuration entries included: where to
    /// reach the node (`None` once it is removed).
    live: Option<Addr>,
    /// As of the applied configuration: what a snapshot records.
    committed: Option<Addr>,
    /// Kept when a removal drops `live`, so that a removed node that is added back and then talks
    /// to this node (a leader this node lags behind, say) can be answered before this node has
    /// caught up with the entry that re-added it.
    departed: Option<Addr>,
    /// The Raft address the peer transport was given, if it knows the node.
    told: Option<String>,
}

/// The one owner of peer addresses.
#[derive(Debug)]
pub(super) struct AddressBook {
    nodes: BTreeMap<NodeId, Known>,
}

impl AddressBook {
    /// A book in which each address is both live and committed (what a node knows at start).
    pub(super) fn new(addrs: BTreeMap<NodeId, Addr>) -> Self {
        let nodes = addrs
            .into_iter()
            .map(|(id, a)| (id, Known { live: Some(a.clone()), committed: Some(a), ..Known::default() }))
            .collect();
        AddressBook { nodes }
    }

    /// Where to reach `id`, if it is a node of the log's configuration.
    pub(super) fn get(&self, id: NodeId) -> Option<&Addr> {
        self.nodes.get(&id)?.live.as_ref()
    }

    /// Records the address carried by a configuration entry appended to the log.
    pub(super) fn note_conf_entry(&mut self, e: &Entry) {
        if let Some((id, a)) = conf_entry_addr(e) {
            self.nodes.entry(id).or_default().live = Some(a);
        }
    }

    /// An applied configuration change added `id` at `a`. Also where to reach it: a node removed
    /// and added back has lost its live address to the removal when a restarted member re-applies
    /// both entries.
    pub(super) fn applied_add(&mut self, id: NodeId, a: Addr) {
        let k = self.nodes.entry(id).or_default();
        k.live = Some(a.clone());
        k.committed = Some(a);
    }

    /// An applied configuration change removed `id` (`me` keeps its own live address).
    pub(super) fn applied_remove(&mut self, id: NodeId, me: NodeId) {
        if let Some(k) = self.nodes.get_mut(&id) {
            k.committed = None;
            if id != me
                && let Some(a) = k.live.take()
            {
                k.departed = Some(a);
            }
        }
    }

    /// A snapshot's book: each address is live and committed.
    pub(super) fn install(&mut self, book: BTreeMap<NodeId, Addr>) {
        for (id, a) in book {
            self.applied_add(id, a);
        }
    }

    /// The addresses of the applied configuration (what a snapshot records).
    pub(super) fn committed(&self) -> BTreeMap<NodeId, Addr> {
        self.nodes.iter().filter_map(|(id, k)| Some((*id, k.committed.clone()?))).collect()
    }

    /// A node without a live address talks: if it departed, its address is live again (true).
    pub(super) fn revive(&mut self, id: NodeId) -> bool {
        match self.nodes.get_mut(&id) {
            Some(k) if k.live.is_none() => match k.departed.take() {
                Some(a) => {
                    k.live = Some(a);
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// Points the transport at every node with a live address other than `me` (the members of the
    /// current configuration, and the configured members while joining: a node not yet in the
    /// configuration must still answer the leader that replicates to it); forgets the others.
    pub(super) fn sync_peers(&mut self, me: NodeId, transport: &PeerTransport) {
        for (id, k) in &mut self.nodes {
            if let Some(a) = &k.live
                && *id != me
                && k.told.as_ref() != Some(&a.raft)
            {
                transport.set_peer(*id, a.raft.clone());
                k.told = Some(a.raft.clone());
            }
        }
        for (id, k) in &mut self.nodes {
            if k.live.is_none() && k.told.take().is_some() {
                transport.remove_peer(*id);
            }
        }
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

/// Reads a snapshot's address book and state; the state's topic files on `disk` are brought to
/// the snapshot.
pub(super) fn decode_snapshot_data(
    dedup: DedupConfig,
    mut b: Bytes,
    disk: &Arc<dyn Disk>,
    cfg: StoreConfig,
) -> Result<(BTreeMap<NodeId, Addr>, EventLogState), String> {
    let book = decode_address_book(&mut b)?;
    let mut firsts = BTreeMap::new();
    let mut state = EventLogState::decode_snapshot_with(dedup, b, |meta| {
        firsts = meta.topics.iter().map(|t| (t.name.clone(), t.first)).collect();
        TopicSet::open(disk.clone(), cfg, Some(meta))
    })
    .map_err(|e| e.to_string())?;
    // A completed install may have restarted a topic later than this snapshot records.
    super::catchup::recount_restarted(&mut state, &firsts).map_err(|e| e.to_string())?;
    Ok((book, state))
}

/// Reads the address book at the front of snapshot data.
pub(super) fn decode_address_book(b: &mut Bytes) -> Result<BTreeMap<NodeId, Addr>, String> {
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
            *p = get_str16(b, "address").map_err(|e| format!("address book: {e}"))?;
        }
        let [raft, client] = parts;
        book.insert(id, Addr { raft, client });
    }
    Ok(book)
}

impl Driver {
    /// Tells the transport what the address book says (see [`AddressBook::sync_peers`]).
    pub(super) fn sync_peers(&mut self) {
        if let Some(transport) = &self.transport {
            self.addrs.sync_peers(self.id, transport);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> Addr {
        Addr { raft: format!("10.0.0.{n}:1"), client: format!("10.0.0.{n}:2") }
    }

    #[test]
    fn a_removed_node_departs_and_can_be_revived_once() {
        let mut book = AddressBook::new([(1, addr(1)), (2, addr(2))].into());
        book.applied_remove(2, 1);
        assert_eq!(book.get(2), None);
        assert_eq!(book.committed().keys().copied().collect::<Vec<_>>(), vec![1]);
        assert!(book.revive(2));
        assert_eq!(book.get(2), Some(&addr(2)));
        assert!(!book.revive(2), "already live");
        assert_eq!(book.committed().len(), 1, "reviving is not committing");
        // This node never loses its own address, but leaves the committed configuration.
        book.applied_remove(1, 1);
        assert_eq!(book.get(1), Some(&addr(1)));
        assert!(!book.revive(3), "an unknown node has nothing to revive");
    }

    #[test]
    fn snapshots_and_adds_are_live_and_committed() {
        let mut book = AddressBook::new(BTreeMap::new());
        book.install([(3, addr(3))].into());
        book.applied_add(4, addr(4));
        assert_eq!(book.committed(), [(3, addr(3)), (4, addr(4))].into());
        assert_eq!(book.get(4), Some(&addr(4)));
    }
}
