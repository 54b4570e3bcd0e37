//! Membership changes in stages (learner, promotion, applied) and the status text.

use super::*;

pub(super) enum AdminStage {
    /// Waiting for the learner entry at this index to apply.
    Learner(Index),
    /// Learner in place; promote once it has caught up.
    Promote,
    /// Waiting for the change at this index to apply.
    Applying(Index),
    /// An answer read from the committed configuration ("already a voter", "not a member"),
    /// held until the ReadIndex round `ctx` confirms this member still leads (`index` is known
    /// then): a deposed leader that has not noticed yet would answer from a stale configuration
    /// (seed 844681447073: "already a voter" for a member the new leader had removed, so the
    /// operator never added it back).
    Confirming { ctx: u64, index: Option<Index>, settled: Settled },
}

/// What the committed configuration said when the request arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Settled {
    /// The node is a voter: nothing to add.
    Voter,
    /// The node is not a member: nothing to remove.
    NotMember,
}

impl Settled {
    /// The answer if `conf` still says so.
    fn answer(self, conf: &ConfState, node: NodeId) -> Option<String> {
        match self {
            Settled::Voter if conf.voters.contains(&node) => Some(format!("node {node} is already a voter")),
            Settled::NotMember if !conf.contains(node) => Some(format!("node {node} is not a member")),
            _ => None,
        }
    }
}

pub(super) struct PendingAdmin {
    pub(super) node: NodeId,
    pub(super) addr: Option<Addr>,
    pub(super) stage: AdminStage,
    pub(super) deadline: Duration,
    pub(super) reply: Reply<String>,
}

impl Driver {
    pub(super) fn admin_request(&mut self, req: AdminCommand, reply: Reply<String>, now: Duration) {
        if let AdminCommand::Status = req {
            let _ = reply.send(Ok(self.status_text()));
            return;
        }
        if self.raft.role() != Role::Leader {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let deadline = now + ADMIN_TIMEOUT;
        match req {
            AdminCommand::Status => unreachable!("answered above"),
            AdminCommand::Topics => unreachable!("answered by ClusterNode::admin from the applied state"),
            AdminCommand::AddNode { id, raft_addr, client_addr } => {
                self.admin_add(id, Addr { raft: raft_addr, client: client_addr }, reply, deadline)
            }
            AdminCommand::RemoveNode { id } => self.admin_remove(id, reply, deadline),
            AdminCommand::TransferLeader { id } => match self.raft.transfer_leader(id) {
                Ok(()) => drop(reply.send(Ok(format!("leadership transfer to node {id} started")))),
                Err(e) => drop(reply.send(Err(self.propose_error(e)))),
            },
        }
    }

    /// ADMIN add: a learner first (promoted once caught up); "already a voter" only from the
    /// committed configuration.
    fn admin_add(&mut self, id: u64, addr: Addr, reply: Reply<String>, deadline: Duration) {
        if id == 0 {
            let _ = reply.send(Err(ServiceError::Unsupported("node id 0 is reserved".into())));
            return;
        }
        if self.transport.is_none() {
            let msg = "this node does not listen for peers because cluster.secret is empty: set \
                       cluster.secret (the same on every member) and restart it, then add members";
            let _ = reply.send(Err(ServiceError::Unsupported(msg.into())));
            return;
        }
        let conf = match self.settled_conf() {
            Ok(conf) => conf,
            Err(e) => return drop(reply.send(Err(e))),
        };
        if conf.voters.contains(&id) {
            return self.confirm_settled(id, Settled::Voter, reply, deadline);
        }
        let stage = if conf.learners.contains(&id) {
            AdminStage::Promote
        } else {
            let cc = ConfChange { kind: ConfChangeKind::AddLearner, node: id, context: addr.to_context() };
            match self.raft.propose_conf_change(cc) {
                Ok(index) => AdminStage::Learner(index),
                Err(e) => {
                    let _ = reply.send(Err(self.propose_error(e)));
                    return;
                }
            }
        };
        self.admin.push(PendingAdmin { node: id, addr: Some(addr), stage, deadline, reply });
    }

    /// ADMIN remove: "not a member" only from the committed configuration.
    fn admin_remove(&mut self, id: u64, reply: Reply<String>, deadline: Duration) {
        let conf = match self.settled_conf() {
            Ok(conf) => conf,
            Err(e) => return drop(reply.send(Err(e))),
        };
        if !conf.contains(id) {
            return self.confirm_settled(id, Settled::NotMember, reply, deadline);
        }
        let cc = ConfChange { kind: ConfChangeKind::Remove, node: id, context: Bytes::new() };
        match self.raft.propose_conf_change(cc) {
            Ok(index) => self.admin.push(PendingAdmin {
                node: id,
                addr: None,
                stage: AdminStage::Applying(index),
                deadline,
                reply,
            }),
            Err(e) => drop(reply.send(Err(self.propose_error(e)))),
        }
    }

    /// Answers "already a voter" / "not a member" once a ReadIndex round confirms this member
    /// still leads (see [`AdminStage::Confirming`]).
    fn confirm_settled(&mut self, node: NodeId, settled: Settled, reply: Reply<String>, deadline: Duration) {
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        match self.raft.read_index(ctx) {
            Ok(()) => self.admin.push(PendingAdmin {
                node,
                addr: None,
                stage: AdminStage::Confirming { ctx, index: None, settled },
                deadline,
                reply,
            }),
            Err(e) => drop(reply.send(Err(self.propose_error(e)))),
        }
    }

    /// Records a confirmed ReadIndex round of a held membership answer (if `ctx` is one).
    pub(super) fn note_admin_read(&mut self, ctx: u64, confirmed: Index) {
        for a in &mut self.admin {
            if let AdminStage::Confirming { ctx: c, index, .. } = &mut a.stage
                && *c == ctx
            {
                *index = Some(confirmed);
            }
        }
    }

    /// The configuration to answer "already a voter" / "not a member" from: the committed one.
    /// While a change is uncommitted, answers "unavailable, retry" instead (a retried removal
    /// reaching a leader that holds the removal uncommitted must not report it done).
    fn settled_conf(&self) -> Result<&ConfState, ServiceError> {
        self.raft.committed_conf_state().map_err(|index| {
            unavailable(format!("the membership change at index {index} is not committed yet; retry"))
        })
    }

    pub(super) fn advance_admin(&mut self, now: Duration) {
        let applied = self.raft.applied();
        let mut i = 0;
        while i < self.admin.len() {
            let a = &mut self.admin[i];
            let mut done: Option<Result<String, ServiceError>> = None;
            if let AdminStage::Learner(index) = a.stage
                && applied >= index
            {
                a.stage = AdminStage::Promote;
            }
            if let AdminStage::Promote = a.stage {
                let context = a.addr.as_ref().map(Addr::to_context).unwrap_or_default();
                let cc = ConfChange { kind: ConfChangeKind::AddVoter, node: a.node, context };
                match self.raft.propose_conf_change(cc) {
                    Ok(index) => a.stage = AdminStage::Applying(index),
                    Err(
                        ProposeError::LearnerNotCaughtUp { .. }
                        | ProposeError::ConfChangeInProgress { .. }
                        | ProposeError::FirstCommitPending,
                    ) => {}
                    Err(e) => done = Some(Err(unavailable(e.to_string()))),
                }
            }
            if let AdminStage::Confirming { index: Some(_), settled, .. } = a.stage {
                // Still the leader, so its committed configuration is the cluster's (at least
                // as new as when the request arrived).
                let answer = self.raft.committed_conf_state().ok().and_then(|c| settled.answer(c, a.node));
                done = Some(answer.ok_or_else(|| unavailable("the membership changed meanwhile; retry")));
            }
            if let AdminStage::Applying(index) = a.stage
                && applied >= index
            {
                let conf = self.raft.conf_state();
                done = Some(if conf.voters.contains(&a.node) {
                    Ok(format!("node {} is a voter", a.node))
                } else if !conf.contains(a.node) {
                    Ok(format!("node {} removed", a.node))
                } else {
                    Err(unavailable("the membership change was superseded; retry"))
                });
            }
            if done.is_none() && a.deadline <= now {
                done = Some(Err(unavailable("membership change did not finish in time")));
            }
            match done {
                Some(result) => {
                    let a = self.admin.swap_remove(i);
                    let _ = a.reply.send(result);
                }
                None => i += 1,
            }
        }
    }

    pub(super) fn status_text(&self) -> String {
        let s = self.raft.status();
        let conf = self.raft.conf_state();
        let mut out = format!(
            "node {} role {:?} term {} leader {} commit {} applied {} last {}\n",
            s.id,
            s.role,
            s.term,
            s.leader.map_or("none".to_string(), |l| l.to_string()),
            s.commit,
            s.applied,
            s.last_index
        );
        for id in conf.members() {
            let kind = if conf.voters.contains(&id) { "voter" } else { "learner" };
            let (raft, client) =
                self.addrs.get(id).map_or(("?", "?"), |a| (a.raft.as_str(), a.client.as_str()));
            out.push_str(&format!("member {id} {kind} raft {raft} client {client}"));
            if let Some(&(_, matched, _, state)) = s.progress.iter().find(|p| p.0 == id) {
                out.push_str(&format!(" match {matched} {state:?}"));
            }
            out.push('\n');
        }
        out
    }
}
