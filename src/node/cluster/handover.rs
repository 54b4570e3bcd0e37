//! Handing leadership over before a planned stop (SIGTERM): the leader picks its most caught-up
//! voter and transfers to it (Raft TimeoutNow), so the cluster has a new leader at once instead
//! of after an election timeout.

use super::*;

impl Driver {
    /// Starts a transfer to the voter whose log matches the most of ours; `None` if this member
    /// does not lead or has no other voter.
    pub(super) fn hand_over(&mut self, reply: Reply<Option<NodeId>>) {
        if self.raft.role() != Role::Leader {
            let _ = reply.send(Ok(None));
            return;
        }
        let voters = self.raft.conf_state().voters.clone();
        let best = self
            .raft
            .status()
            .progress
            .iter()
            .filter(|p| p.0 != self.id && voters.contains(&p.0))
            .max_by_key(|p| (p.1, std::cmp::Reverse(p.0)))
            .map(|p| p.0);
        let Some(to) = best else {
            let _ = reply.send(Ok(None));
            return;
        };
        match self.raft.transfer_leader(to) {
            Ok(()) => {
                tracing::info!(node = self.id, to, term = self.raft.term(), "handing leadership over");
                let _ = reply.send(Ok(Some(to)));
            }
            Err(e) => drop(reply.send(Err(self.propose_error(e)))),
        }
    }
}

impl ClusterNode {
    /// If this member leads, hands leadership to its most caught-up voter and waits (up to
    /// `timeout`) until it no longer leads. `Ok(Some(id))`: node `id` was asked to take over and
    /// this member stepped down; `Ok(None)`: nothing to hand over (not leading, or alone).
    pub async fn hand_over_leadership(&self, timeout: Duration) -> Result<Option<NodeId>, String> {
        if self.status().role != Role::Leader {
            return Ok(None);
        }
        let (reply, rx) = oneshot::channel();
        let to = match self.call(Cmd::HandOver { reply }, rx).await.map_err(|e| e.to_string())? {
            Some(to) => to,
            None => return Ok(None),
        };
        let deadline = rt::time::now() + timeout;
        while self.status().role == Role::Leader {
            if rt::time::now() >= deadline {
                return Err(format!(
                    "still leading {} ms after asking node {to} to take over",
                    timeout.as_millis()
                ));
            }
            rt::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Some(to))
    }
}
