//! Leader-change sequences for the zoo's consensus bugs (issue 15): faults that bring about the
//! exact interleavings two classic Raft mistakes need, which random partitions and crashes
//! almost never line up.
//!
//! * `stale_leader_returns` (Figure 8): a leader cut from its peers while its clients still reach
//!   it appends a tail nobody else has; a member elected meanwhile keeps its term's first entry to
//!   itself (what it sends as a leader is lost, as if it had crashed right after its election);
//!   the old leader comes back and is the only one whose vote requests get through (the others
//!   are slow to campaign), wins again (its log is more up to date than the rest but those
//!   elected in between) and
//!   replicates the old tail in steps of `max_entries_per_append`. A majority then holds an
//!   earlier term's entry that the member elected in between does not — committing it by
//!   counting replicas is the bug, and `raft_watch::check_commit_is_safe` catches it.
//! * `change_after_election` (Ongaro's single-server change bug): the operator removes a
//!   deposed leader through the member that just won the election, before that member's first
//!   entry commits (links among the members hold frames back, client requests are not); a leader
//!   must refuse until it has committed an entry of its term, and
//!   `raft_watch::check_conf_change_after_term_commit` catches one that does not.

use super::*;

impl FaultInjector<'_> {
    /// Cuts whoever leads from its peers for `cut_ms` and, for `cut_ms + hold_ms`, loses what any
    /// other member sends as a leader (see the module doc).
    pub(super) fn stale_leader_returns(&mut self, cut_ms: u64, hold_ms: u64) {
        let Some(l) = current_leader(self.slots) else {
            self.history.count("stale_leader_returns_without_leader");
            return;
        };
        let left = self.fault_end.saturating_duration_since(rt::time::now());
        let cut = Duration::from_millis(cut_ms).min(left);
        let leader = l as u64 + 1;
        self.cut_from_peers(leader, cut);
        // Once it is back, only it can win an election: the others' vote requests are lost too.
        let hold = (cut + Duration::from_millis(hold_ms)).min(left);
        self.links.mute_except(leader, hold, (cut, hold));
        tracing::info!(member = %format!("n{leader}"), "fault injected: the leader is cut off; other leaders are muted");
        let label = format!(
            "leader cut {:.1} s, others' leader traffic lost {:.1} s more",
            cut.as_secs_f64(),
            hold_ms as f64 / 1000.0
        );
        self.log.span(l, cut.as_millis() as u64, SpanKind::Isolated, label);
        self.history.count("stale_leader_returns");
        let old_term = term_of(&self.slots[l]);
        let crash_elected = CrashElected {
            handle: self.handle.clone(),
            ids: self.ids.to_vec(),
            members: self.slots.iter().map(MemberSlot::handles).collect(),
            leader: l,
            old_term,
            until: rt::time::now() + cut,
            down: hold.saturating_sub(cut),
            rng: rt::rng::split(&mut self.tear_rng),
            history: self.history.clone(),
            log: self.log.clone(),
        };
        madsim::task::spawn(crash_elected.run());
    }

    /// Cuts whoever leads from its peers for `cut_ms`, slows the links among the others, and
    /// removes the old leader through the next leader the moment it is elected; it is wiped and
    /// added back after `down_ms`. One membership change at a time.
    pub(super) fn change_after_election(&mut self, cut_ms: u64, delay_ms: u64, down_ms: u64) {
        let Some(l) = current_leader(self.slots) else {
            self.history.count("change_after_election_without_leader");
            return;
        };
        if rt::time::now() < self.armed_until[l] {
            self.history.count("change_after_election_skipped_disk_crash_armed");
            return;
        }
        if self.rejoin_busy.swap(true, Ordering::SeqCst) {
            self.history.count("change_after_election_skipped_busy");
            return;
        }
        let left = self.fault_end.saturating_duration_since(rt::time::now());
        let cut = Duration::from_millis(cut_ms).min(left);
        let leader = l as u64 + 1;
        self.cut_from_peers(leader, cut);
        let slow = LinkSpec { delay_pct: 100, max_delay_ms: delay_ms, ..LinkSpec::default() };
        let others: Vec<u64> = (1..=self.ids.len() as u64).filter(|&o| o != leader).collect();
        for &a in &others {
            for &b in others.iter().filter(|&&b| b != a) {
                self.links.lossy(a, b, slow, (cut + Duration::from_secs(2)).min(left));
            }
        }
        self.down_until[l] = self.fault_end + Duration::from_secs(5);
        let old_term = term_of(&self.slots[l]);
        self.log.span(
            l,
            cut.as_millis() as u64,
            SpanKind::Isolated,
            "leader cut; removed through its successor",
        );
        self.history.count("change_after_election");
        let rejoin = self.rejoin_job(l, down_ms);
        let nodes: Vec<_> = self.slots.iter().map(|s| s.node.clone()).collect();
        let wait_until = rt::time::now() + cut + Duration::from_secs(2);
        let job = FreshLeaderChange { rejoin, old_term, nodes, wait_until };
        self.rejoins.push(self.admin_node.spawn(job.run()));
    }

    /// `leader` loses every peer link, both ways, for `window` (its clients still reach it).
    fn cut_from_peers(&self, leader: u64, window: Duration) {
        let cut = LinkSpec { drop_pct: 100, ..LinkSpec::default() };
        for other in (1..=self.ids.len() as u64).filter(|&o| o != leader) {
            self.links.lossy(leader, other, cut, window);
            self.links.lossy(other, leader, cut, window);
        }
    }
}

/// Waits for a leader of a later term than the cut-off one, then runs the membership change
/// (remove, wipe, add back) with that leader asked first.
struct FreshLeaderChange {
    rejoin: Rejoin,
    old_term: u64,
    nodes: Vec<Arc<Mutex<Option<ClusterNode>>>>,
    wait_until: rt::time::Instant,
}

impl FreshLeaderChange {
    async fn run(mut self) {
        let fresh = loop {
            if let Some(l) = self.fresh_leader() {
                break l;
            }
            if rt::time::now() >= self.wait_until {
                self.rejoin.history.count("change_after_election_no_new_leader");
                self.rejoin.busy.store(false, Ordering::SeqCst);
                return;
            }
            rt::time::sleep(Duration::from_millis(2)).await;
        };
        self.rejoin.history.count("change_after_election_fresh_leader_asked");
        self.rejoin.log.mark(Some(fresh), "elected: asked at once to remove the old leader");
        let first = self.rejoin.addrs.remove(fresh);
        self.rejoin.addrs.insert(0, first);
        self.rejoin.run().await;
    }

    /// A member (not the one cut off) that leads in a term after the cut-off leader's.
    fn fresh_leader(&self) -> Option<usize> {
        self.nodes.iter().enumerate().find_map(|(i, slot)| {
            let st = slot.lock().unwrap_or_else(|e| e.into_inner()).as_ref()?.status();
            (i != self.rejoin.member
                && st.role == Role::Leader
                && st.term > self.old_term
                && st.failed.is_none())
            .then_some(i)
        })
    }
}

/// The term a member's current incarnation is in (0 while it is down).
fn term_of(slot: &MemberSlot) -> u64 {
    slot.node.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |n| n.status().term)
}

/// Watches, while the old leader is cut off, for the members elected in its place, and when
/// the cut ends crashes each of them (power fail, its term's first entry already synced on its
/// own disk alone) for `down`: Figure 8's server that led once and went away.
struct CrashElected {
    handle: madsim::runtime::Handle,
    ids: Vec<madsim::task::NodeId>,
    members: Vec<MemberHandles>,
    leader: usize,
    old_term: u64,
    until: rt::time::Instant,
    down: Duration,
    rng: NodeRng,
    history: History,
    log: FaultLog,
}

impl CrashElected {
    async fn run(mut self) {
        let mut elected = vec![false; self.members.len()];
        while rt::time::now() < self.until {
            for (i, m) in self.members.iter().enumerate() {
                let st = m.node.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(ClusterNode::status);
                if st.is_some_and(|st| i != self.leader && st.role == Role::Leader && st.term > self.old_term)
                {
                    elected[i] = true;
                }
            }
            rt::time::sleep(Duration::from_millis(5)).await;
        }
        for (i, _) in elected.iter().enumerate().filter(|(_, e)| **e) {
            self.history.count("stale_leader_returns_elected_crashed");
            let label = "led while the old leader was cut off: crashed";
            self.log.span(i, self.down.as_millis() as u64, SpanKind::Down, label);
            crash(&self.handle, self.ids[i], &self.members[i], &mut self.rng, self.down);
        }
    }
}
