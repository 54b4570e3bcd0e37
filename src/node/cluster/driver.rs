//! The driver loop: one task owns the Raft core, the WAL and the transport; each round follows the
//! order `raft/mod.rs` documents (persist, send, apply, advance).

use super::*;

/// What the observer is told about a round besides the core's state.
struct RoundFacts<'a> {
    log_changed: bool,
    appended_from: Option<Index>,
    applied_entries: &'a [Entry],
    installed: Option<(Index, Term)>,
}

impl Driver {
    pub(super) async fn run(mut self) {
        tracing::info!(node = self.id, "raft driver started");
        let outcome = loop {
            rt::select! {
                biased;
                _ = self.shared.stop.wait() => break Ok(()),
                done = snapshot::job_done(&mut self.snapshot_job) => {
                    if let Err(e) = self.snapshot_done(done) {
                        break Err(e);
                    }
                }
                _ = self.clock.sleep_until(self.next_tick) => self.on_timer(),
                m = next_peer_message(&mut self.inbox) => match m {
                    Some(m) => self.step(m),
                    None => break Ok(()),
                },
                c = self.cmds.recv() => match c {
                    Some(c) => self.handle(c),
                    None => break Ok(()),
                },
            }
            self.take_queued();
            if let Err(e) = self.rounds().await {
                break Err(e);
            }
        };
        // A snapshot in flight finishes before the driver stops: its task must not write the
        // snapshot file after a restart in this process has opened the storage again.
        let outcome = match (outcome, self.settle_snapshot().await) {
            (Ok(()), Err(e)) if !e.is_fd_exhaustion() => Err(e),
            (outcome, _) => outcome,
        };
        match outcome {
            Ok(()) => {
                self.stop(ServiceError::ShuttingDown);
                self.snapshot_at_shutdown().await;
            }
            Err(e) => {
                let why = format!("node {} stopped replicating: storage failed: {e}; restart it", self.id);
                tracing::error!(node = self.id, error = %e, "storage failed; the node stops replicating");
                lock(&self.shared.status).failed = Some(why.clone());
                self.stop(ServiceError::Internal(why));
            }
        }
        self.cmds.close();
        while let Ok(c) = self.cmds.try_recv() {
            self.refuse(c, &ServiceError::ShuttingDown);
        }
        if let Some(p) = self.pipeline.take() {
            *lock(&self.shared.pipeline) = None;
            p.shutdown().await;
        }
        if let Some(t) = &self.transport {
            t.shutdown().await;
        }
        self.shared.applied.notify_waiters();
        tracing::info!(node = self.id, "raft driver stopped");
    }

    /// Runs rounds while the core has more ready: `advance()` can make more ready at once — a
    /// single member commits its own entry only once the round that made it durable has
    /// advanced — so go round again rather than wait for the next tick or message.
    async fn rounds(&mut self) -> Result<(), RoundError> {
        for _ in 0..8 {
            self.round().await?;
            // Under load new requests are already queued and the next iteration comes at once
            // (and batches more into one fsync); go round again only when nothing else would.
            if !self.raft.has_ready() || !self.cmds.is_empty() || self.is_stalled() {
                break;
            }
        }
        Ok(())
    }

    /// The tick timer fired: drive the core's logical clock, or, while a round waits for file
    /// descriptors, only expire waiting requests.
    fn on_timer(&mut self) {
        self.next_tick = self.clock.mono() + self.tick;
        if self.is_stalled() {
            self.expire_waiting();
        } else {
            self.raft.tick();
            self.on_tick();
        }
    }

    /// Takes everything else that is already here, so one round (one fsync) covers it.
    fn take_queued(&mut self) {
        for _ in 0..4096 {
            match self.inbox.as_mut().and_then(Inbox::try_recv) {
                Some(m) => self.step(m),
                None => break,
            }
        }
        for _ in 0..4096 {
            match self.cmds.try_recv() {
                Ok(c) => self.handle(c),
                Err(_) => break,
            }
        }
        for id in self.transport.as_ref().map(PeerTransport::take_unreachable).unwrap_or_default() {
            if !self.is_stalled() {
                self.raft.report_unreachable(id);
            }
        }
    }

    /// Logs (debug) once the entries the WAL held at start are applied again: the replay a
    /// restart costs after the snapshot.
    fn note_replayed(&mut self) {
        if let Some((to, since)) = self.replay_to
            && self.raft.applied() >= to
        {
            let ms = self.clock.mono().saturating_sub(since).as_millis() as u64;
            let entries = to.saturating_sub(self.last_snapshot);
            tracing::debug!(
                node = self.id,
                index = to,
                entries,
                ms,
                "restart: the log after the snapshot is applied again"
            );
            self.replay_to = None;
        }
    }

    pub(super) fn stop(&mut self, err: ServiceError) {
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(err.clone()));
        }
        for r in self.reads.drain(..) {
            let _ = r.reply.send(Err(err.clone()));
        }
        for a in self.admin.drain(..) {
            let _ = a.reply.send(Err(err.clone()));
        }
        self.shared.stop.set();
    }

    pub(super) fn refuse(&self, c: Cmd, err: &ServiceError) {
        match c {
            Cmd::Publish { reply, .. } => drop(reply.send(Err(err.clone()))),
            Cmd::Checkpoint { .. } => {}
            Cmd::Read { reply } => drop(reply.send(Err(err.clone()))),
            Cmd::Commit { reply, .. } => drop(reply.send(Err(err.clone()))),
            Cmd::Admin { reply, .. } => drop(reply.send(Err(err.clone()))),
            Cmd::HandOver { reply } => drop(reply.send(Err(err.clone()))),
        }
    }

    pub(super) fn step(&mut self, m: crate::raft::Message) {
        if self.is_stalled() {
            // The core waits for its last round to be persisted; the peer re-sends (Raft
            // tolerates lost messages).
            tracing::trace!(node = self.id, from = m.from, "message dropped: storage waits for descriptors");
            return;
        }
        if self.addrs.revive(m.from) {
            // A removed node is talking again: it was added back, or it does not know yet that
            // it is out. Either way the answer must be able to reach it.
            tracing::info!(node = self.id, peer = m.from, "a removed node talks again; dialling it");
            self.sync_peers();
        }
        if m.body.is_records() {
            return self.step_records(m);
        }
        if let Err(e) = self.raft.step(m) {
            tracing::debug!(node = self.id, error = %e, "message ignored");
        }
    }

    pub(super) fn not_leader(&self) -> ServiceError {
        match self.raft.leader_id() {
            Some(l) if l != self.id => {
                ServiceError::NotLeader { leader: self.addrs.get(l).map(|a| a.client.clone()) }
            }
            _ => unavailable("no leader elected yet"),
        }
    }

    pub(super) fn propose_error(&self, e: ProposeError) -> ServiceError {
        match e {
            ProposeError::NotLeader { .. } | ProposeError::TransferInProgress { .. } => self.not_leader(),
            other => unavailable(other.to_string()),
        }
    }

    pub(super) fn handle(&mut self, c: Cmd) {
        if self.is_stalled() {
            self.refuse(c, &self.stalled_error());
            return;
        }
        let now = self.clock.mono();
        match c {
            Cmd::Checkpoint { positions, handled } => {
                // Only the leader's pipeline runs; a late flush after a step-down is dropped (the
                // next leader re-handles from the last recorded checkpoint: at-least-once).
                if self.raft.role() == Role::Leader {
                    let _ = self.raft.propose(Command::Checkpoint { positions, handled }.encode());
                }
            }
            Cmd::Publish { events, admission, reply } => {
                if self.raft.role() != Role::Leader {
                    let _ = reply.send(Err(self.not_leader()));
                    return;
                }
                if events.is_empty() {
                    let _ = reply.send(Ok(Vec::new()));
                    return;
                }
                // Checked here, not when applying: an entry must apply the same everywhere.
                if let Err(e) = lock(&self.shared.state).check_new_topics(&events) {
                    let _ = reply.send(Err(ServiceError::OutOfRange(e.to_string())));
                    return;
                }
                // The leader stamps its time into the entry; replicas apply that, never their own clock.
                let cmd = Command::Publish { stamped_ms: self.clock.wall_unix_ms(), events };
                match self.raft.propose(cmd.encode()) {
                    Ok(index) => {
                        let term = self.raft.term();
                        let old = self.pending.insert(
                            index,
                            PendingPublish { term, admission, deadline: now + self.commit_timeout, reply },
                        );
                        debug_assert!(old.is_none(), "two proposals at index {index}");
                    }
                    Err(e) => drop(reply.send(Err(self.propose_error(e)))),
                }
            }
            Cmd::Read { reply } => {
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                match self.raft.read_index(ctx) {
                    Ok(()) => self.reads.push(PendingRead {
                        ctx,
                        index: None,
                        deadline: now + self.commit_timeout,
                        reply,
                    }),
                    Err(e) => drop(reply.send(Err(self.propose_error(e)))),
                }
            }
            Cmd::Admin { req, reply } => self.admin_request(req, reply, now),
            Cmd::HandOver { reply } => self.hand_over(reply),
            Cmd::Commit { commit, reply } => self.propose_commit(commit, reply, now),
        }
    }

    /// Timeouts and membership progress, once per tick.
    pub(super) fn on_tick(&mut self) {
        self.expire_waiting();
        self.advance_admin(self.clock.mono());
        self.retention_duty();
        self.continue_catch_up();
        self.release_core();
    }

    /// Answers the publishes and reads that waited past their deadline.
    pub(super) fn expire_waiting(&mut self) {
        let now = self.clock.mono();
        let expired: Vec<Index> =
            self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(&i, _)| i).collect();
        for i in expired {
            if let Some(p) = self.pending.remove(&i) {
                let _ = p.reply.send(Err(unavailable("not committed in time")));
            }
        }
        let mut i = 0;
        while i < self.reads.len() {
            if self.reads[i].deadline <= now {
                let r = self.reads.swap_remove(i);
                let _ = r.reply.send(Err(unavailable("read not confirmed in time")));
            } else {
                i += 1;
            }
        }
    }

    /// One Ready, in the order the core requires.
    pub(super) async fn round(&mut self) -> Result<(), RoundError> {
        self.catch_up_failure()?;
        let Some(mut batch) = self.next_batch() else { return Ok(()) };
        if let Err(e) = self.persist(&mut batch).await {
            if !e.is_fd_exhaustion() {
                return Err(e);
            }
            self.stall(batch, &e);
            return Ok(());
        }
        let persist::Batch { ready, installed, log_changed, appended_from, .. } = batch;
        let Ready { messages, committed_entries, read_states, soft_state, .. } = ready;
        self.sync_peers();
        for m in messages {
            if let Some(t) = &self.transport {
                t.send(m);
            }
        }
        let mut observed_entries =
            if self.observer.is_some() { committed_entries.clone() } else { Vec::new() };
        let stop = if committed_entries.is_empty() { None } else { self.apply(committed_entries)? };
        self.note_read_states(read_states);
        match &stop {
            None => {
                self.raft.advance();
                self.unstall();
            }
            Some(stop) => {
                self.raft.advance_applied_to(stop.index - 1);
                observed_entries.retain(|e| e.index < stop.index);
                self.stall_apply(stop.index, &stop.error);
            }
        }
        self.release_core();
        self.note_replayed();
        self.answer_applied_reads();
        self.manage_pipeline(soft_state.is_some());
        // Changes that just applied are answered before a step-down fails the rest (removing the
        // leader itself commits and then steps it down in the same round).
        self.advance_admin(self.clock.mono());
        if soft_state.is_some() && self.raft.role() != Role::Leader {
            // The outcome of an uncommitted proposal is unknown now; the client retries with the
            // same idempotency key and the dedup window gives it the original offset if it did commit.
            let err = self.not_leader();
            for (_, p) in std::mem::take(&mut self.pending) {
                let _ = p.reply.send(Err(err.clone()));
            }
            for a in self.admin.drain(..) {
                let _ = a.reply.send(Err(err.clone()));
            }
        }
        self.snapshot_if_due()?;
        self.publish_status();
        self.observe(RoundFacts {
            log_changed,
            appended_from,
            applied_entries: &observed_entries,
            installed,
        });
        Ok(())
    }

    /// Shows the observer (the simulator's checkers) the round just done.
    fn observe(&mut self, f: RoundFacts<'_>) {
        let Some(o) = &self.observer else { return };
        o.round(&RoundView {
            node: self.id,
            term: self.raft.term(),
            vote: self.raft.vote(),
            role: self.raft.role(),
            leader: self.raft.leader_id(),
            commit: self.raft.commit_index(),
            applied: self.raft.applied(),
            first_index: self.raft.first_index(),
            entries: self.raft.entries(),
            log_changed: f.log_changed || !self.observed,
            appended_from: f.appended_from,
            applied_entries: f.applied_entries,
            snapshot: f.installed,
            first_round: !self.observed,
        });
        self.observed = true;
    }

    /// Waits out the simulated time the disk operations since the last wait cost (a real disk
    /// took its time already: nothing to wait).
    pub(super) fn disk_time(&self) -> impl Future<Output = ()> + Send + use<> {
        let t = self.storage.take_disk_latency();
        async move {
            if !t.is_zero() {
                rt::time::sleep(t).await;
            }
        }
    }

    /// Records the read index Raft confirmed for each waiting linearizable read.
    fn note_read_states(&mut self, read_states: Vec<crate::raft::ReadState>) {
        for rs in read_states {
            if let Some(r) = self.reads.iter_mut().find(|r| r.ctx == rs.ctx) {
                r.index = Some(rs.index);
            } else {
                self.note_admin_read(rs.ctx, rs.index);
            }
        }
    }

    /// Answers every waiting read whose read index the state machine has applied.
    fn answer_applied_reads(&mut self) {
        let applied = self.raft.applied();
        let mut i = 0;
        while i < self.reads.len() {
            if self.reads[i].index.is_some_and(|ix| ix <= applied) {
                let _ = self.reads.swap_remove(i).reply.send(Ok(()));
            } else {
                i += 1;
            }
        }
    }

    pub(super) fn publish_status(&self) {
        let conf = self.raft.conf_state();
        let leader = self.raft.leader_id();
        let mut st = lock(&self.shared.status);
        st.role = self.raft.role();
        st.term = self.raft.term();
        st.leader = leader;
        st.leader_client_addr = leader.and_then(|l| self.addrs.get(l)).map(|a| a.client.clone());
        st.commit = self.raft.commit_index();
        st.applied = self.raft.applied();
        st.last_index = self.raft.last_index();
        st.voters = conf.voters.iter().copied().collect();
        st.learners = conf.learners.iter().copied().collect();
    }
}
