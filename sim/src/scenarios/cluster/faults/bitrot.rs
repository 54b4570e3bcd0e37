//! Bit rot at rest (issue 15): one bit flips in a synced file of one member's log disk — a WAL
//! segment, the snapshot, the hard state, a topic segment — while it runs. A running member
//! reads back only topic segments (to serve them), and refuses the rotted range when it does; the
//! rest shows when an operator reboots it: recovery's checksums must reject the file and the
//! member refuse to start. The
//! operator then does what the refusal message asks: removes the member, wipes its disk and adds
//! it back empty, to catch up from the others (the existing membership change, [`Rejoin`]).
//!
//! One member at a time: the fault takes the same "one membership change at a time" token as
//! `rejoin`, and other crashes and disk faults leave the member alone until the run heals.

use super::*;
use eventstreamcore::wal;

/// The files of a member's log disk that rot, by prefix: WAL segments, the snapshot (and a
/// snapshot install in progress), the hard state, topic segments.
///
/// Topic segments: every record has a CRC, so a running member never serves a rotted one (a read
/// answers `unavailable` and the client asks another member; a leader refuses to ship it in a
/// catch-up, seed 1010), and a start verifies every retained segment, so the operator's reboot
/// is refused like a rotted WAL's (rot past the snapshot's point is cut and replayed instead).
const ROT_PREFIXES: &[&str] = &["wal-", "snapshot", "hardstate", "topic-"];

/// The newest WAL segment rots too, except its last record while that holds an entry past the
/// written hard state's commit index ([`wal::unvouched_tail`]): a flipped bit there, followed by
/// no valid record, is indistinguishable from a torn unsynced write, so recovery cuts it and the
/// member silently loses a synced entry it may have acked (seeds 508, 1328 and 1438, through the
/// `committed entry lost` check). Nothing on disk vouches for that record without a second fsync
/// per round; the sound fix is in Raft (a member that cut a tail neither votes nor campaigns until
/// it caught up past the cut). See TESTBED.md, "The newest WAL segment". Rot everywhere else in
/// it (followed by a valid record, or at or below the vouched commit) is refused at the start.
fn spare_unvouched(disk: &SimDisk) -> Option<wal::UnvouchedTail> {
    // Read as the reboot's power failure leaves the disk: only synced bytes.
    let durable = disk.durable_copy();
    wal::unvouched_tail(&durable).unwrap_or_else(|_| {
        // Unreadable (cannot happen with one rot at a time): spare the whole newest segment.
        let newest = durable.list("wal-").ok()?.into_iter().max()?;
        Some(wal::UnvouchedTail { segment: newest, from: 0 })
    })
}

/// How long after its reboot a member has to start or refuse.
const OUTCOME_WITHIN: Duration = Duration::from_secs(5);

impl FaultInjector<'_> {
    /// Rots one bit of a synced file of `node` now and reboots it `restart_ms` later; if it then
    /// refuses to start on corrupt data, it is removed, wiped and added back. `files`: rot only
    /// files whose name starts with it (any of [`ROT_PREFIXES`] when `None`).
    pub(super) fn bit_rot(&mut self, node: usize, restart_ms: u64, files: Option<&str>) {
        let now = rt::time::now();
        if now < self.down_until[node] || now < self.armed_until[node] {
            self.history.count("bit_rot_skipped_member_busy");
            return;
        }
        if self.rejoin_busy.swap(true, Ordering::SeqCst) {
            self.history.count("bit_rot_skipped_busy");
            return;
        }
        let mut rng = rt::rng::split(&mut self.tear_rng);
        let slot = self.slots[node].handles();
        let only: Vec<&str> = files.into_iter().collect();
        let prefixes = if only.is_empty() { ROT_PREFIXES } else { &only[..] };
        let newest = spare_unvouched(&slot.disk);
        let spare: Vec<(String, u64)> = newest.iter().map(|t| (t.segment.clone(), t.from)).collect();
        let Some(rot) = slot.disk.rot(prefixes, &spare, &mut rng) else {
            self.history.count("bit_rot_nothing_synced");
            self.rejoin_busy.store(false, Ordering::SeqCst);
            return;
        };
        tracing::info!(member = node + 1, file = %rot.file, offset = rot.offset, "bit rot injected");
        self.history.count("bit_rot_injected");
        let topic = rot.file.starts_with(eventstreamcore::store::TOPIC_FILE_PREFIX);
        if topic {
            slot.disk.count_topic_rot(false);
            self.history.count("bit_rot_injected_in_topic_segments");
        }
        let newest_wal = newest.is_some_and(|t| t.segment == rot.file);
        if newest_wal {
            slot.disk.count_newest_wal_rot(false);
            self.history.count("bit_rot_injected_in_the_newest_wal_segment");
        }
        self.log.mark(Some(node), format!("bit rot: {} byte {}", rot.file, rot.offset));
        self.down_until[node] = self.fault_end + Duration::from_secs(5);
        let rejoin = Rejoin {
            handle: self.handle.clone(),
            id: self.ids[node],
            member: node,
            slot,
            addrs: self.addrs.to_vec(),
            down: Duration::from_millis(200),
            history: self.history.clone(),
            busy: self.rejoin_busy.clone(),
            log: self.log.clone(),
            give_up: self.fault_end + Duration::from_secs(30),
        };
        let scrubbed = scrub_errors(&rejoin.slot);
        let restart = Duration::from_millis(restart_ms);
        let job = RotRecovery { rejoin, restart, rng, topic, newest_wal, scrubbed };
        self.rejoins.push(self.admin_node.spawn(job.run()));
    }
}

/// Reboots a member whose disk rotted and, if it refuses to start, wipes and re-adds it.
struct RotRecovery {
    rejoin: Rejoin,
    restart: Duration,
    rng: NodeRng,
    /// The rot hit a topic segment.
    topic: bool,
    /// The rot hit the newest WAL segment.
    newest_wal: bool,
    /// The member's background scrub errors when the bit flipped.
    scrubbed: Option<u64>,
}

/// The background scrub errors of the member in `slot` so far (`None`: it is not running).
fn scrub_errors(slot: &MemberHandles) -> Option<u64> {
    slot.node.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|n| n.scrub_counters().errors)
}

impl RotRecovery {
    async fn run(mut self) {
        rt::time::sleep(self.restart).await;
        let r = &self.rejoin;
        // Found while the member ran, by the scrub alone (a read that meets rot is not counted
        // there): before the operator's reboot.
        if self.topic && self.scrubbed.zip(scrub_errors(&r.slot)).is_some_and(|(before, now)| now > before) {
            r.slot.disk.count_topic_rot_scrubbed();
            r.history.count("bit_rot_found_by_the_scrub");
            r.log.mark(Some(r.member), "the background scrub found the rot");
        }
        r.log.span(r.member, 100, SpanKind::Down, "rebooted by the operator");
        crash(&r.handle, r.id, &r.slot, &mut self.rng, Duration::from_millis(100));
        if !self.refused().await {
            // Recovery read nothing rotten: the file was replaced or removed since (a new hard
            // state or snapshot, a compacted segment), or the bytes were cut as a torn tail.
            self.rejoin.history.count("bit_rot_start_not_refused");
            self.rejoin.busy.store(false, Ordering::SeqCst);
            return;
        }
        let r = &self.rejoin;
        r.slot.disk.count_rot_detected();
        if self.topic {
            r.slot.disk.count_topic_rot(true);
        }
        if self.newest_wal {
            r.slot.disk.count_newest_wal_rot(true);
        }
        r.history.count("bit_rot_detected");
        r.log.mark(Some(r.member), "refused to start: corrupt data");
        r.slot.disk.count_wiped_for_rot();
        r.history.count("members_wiped_for_bit_rot");
        self.rejoin.run().await;
    }

    /// Waits for the rebooted member to start (false) or refuse to start on corrupt data (true).
    async fn refused(&self) -> bool {
        let slot = &self.rejoin.slot;
        let deadline = rt::time::now() + self.restart.max(Duration::from_millis(100)) + OUTCOME_WITHIN;
        // The restart comes 100 ms after the crash; until then the old incarnation is gone.
        rt::time::sleep(Duration::from_millis(100)).await;
        loop {
            if slot.refused_corrupt.swap(false, Ordering::SeqCst) {
                return true;
            }
            let started = slot.node.lock().unwrap_or_else(|e| e.into_inner()).is_some();
            if started || rt::time::now() >= deadline {
                return false;
            }
            rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
