//! A storm aimed at the members' peer (Raft) ports: garbage bytes, handshakes with a wrong
//! secret, replayed handshake transcripts, and — as an insider that knows the secret — frames
//! with terms and indexes no node can have.
//!
//! Each client runs on its own simulated node with its own RNG, uses only the runtime seam, and
//! never panics on I/O errors (members crash and partitions cut links under it). It records a
//! [`History::violation`] only for what the peer port must never do: complete a handshake for a
//! wrong secret or a replayed transcript. That nothing the insider sends changes a member (no
//! absurd term, no safety violation, every acked event kept) is for the scenario's checkers and
//! its [`crate::raft_watch::RaftWatch`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use eventstreamcore::raft::{Body, ConfState, Entry, EntryKind, MAX_TERM, Message, NodeId, SnapshotMeta};
use eventstreamcore::rt::io::{AsyncReadExt, AsyncWriteExt};
use eventstreamcore::rt::net::TcpStream;
use eventstreamcore::rt::{self, NodeRng};
use eventstreamcore::transport::frame::encode_frame;
use eventstreamcore::transport::handshake::{
    self, ACCEPT, Confirmation, HELLO_FIXED_LEN, Hello, Local, PAKE_MSG_LEN, PROOF_LEN, Role,
};
use rand::Rng;
use rand::seq::IndexedRandom;

use crate::history::History;

/// What a peer-storm client does, over and over until the storm ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerStormKind {
    /// Random bytes, sometimes after the handshake magic.
    Garbage,
    /// A well-formed handshake with a secret it guessed.
    WrongSecret,
    /// Records its own successful handshake, then replays the dialer's bytes on a new connection.
    Replay,
    /// Authenticates with the real secret, then sends one frame with impossible values.
    Insider,
}

impl PeerStormKind {
    /// Its name on the timeline.
    pub fn name(self) -> &'static str {
        match self {
            PeerStormKind::Garbage => "garbage",
            PeerStormKind::WrongSecret => "wrong_secret",
            PeerStormKind::Replay => "replay",
            PeerStormKind::Insider => "insider",
        }
    }

    /// Every kind, in the order clients are assigned them.
    pub const ALL: [PeerStormKind; 4] =
        [PeerStormKind::Insider, PeerStormKind::WrongSecret, PeerStormKind::Replay, PeerStormKind::Garbage];
}

/// A member's peer port.
#[derive(Debug, Clone, Copy)]
pub struct PeerTarget {
    pub node_id: NodeId,
    pub addr: SocketAddr,
}

/// Who the storm is and what it knows.
#[derive(Debug, Clone)]
pub struct PeerStormConfig {
    pub clients: usize,
    pub cluster_id: String,
    /// The real secret (the insider and the replayer know it).
    pub secret: String,
    pub duration: Duration,
}

/// What the peer storm saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeerStormStats {
    pub connects: u64,
    pub refused_connects: u64,
    pub garbage_sent: u64,
    /// Wrong-secret handshakes refused.
    pub wrong_secret_refused: u64,
    /// Replayed transcripts refused.
    pub replays_refused: u64,
    /// Impossible frames sent after authenticating.
    pub insider_frames: u64,
    /// Of those, the member closed the connection (it refused the frame).
    pub insider_closed: u64,
    pub violations: u64,
}

impl PeerStormStats {
    /// One line for the run's summary.
    pub fn describe(&self) -> String {
        format!(
            "peer-port storm: {} connects ({} refused), {} garbage, {} wrong-secret handshakes refused, {} replays \
             refused, {} impossible frames ({} closed their connection), {} violations",
            self.connects,
            self.refused_connects,
            self.garbage_sent,
            self.wrong_secret_refused,
            self.replays_refused,
            self.insider_frames,
            self.insider_closed,
            self.violations
        )
    }
}

type Stats = Arc<Mutex<PeerStormStats>>;

fn bump(stats: &Stats, f: impl FnOnce(&mut PeerStormStats)) {
    f(&mut stats.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Spawns `cfg.clients` clients from `first_ip` on, each on its own node, running until
/// `cfg.duration` from now.
pub fn spawn_peer_storm(
    handle: &madsim::runtime::Handle,
    first_ip: Ipv4Addr,
    cfg: &PeerStormConfig,
    targets: &[PeerTarget],
    rng: &mut NodeRng,
    history: History,
    stats: Stats,
) -> Vec<madsim::task::JoinHandle<()>> {
    let until = rt::time::now() + cfg.duration;
    let first = u32::from(first_ip);
    (0..cfg.clients)
        .map(|i| {
            let ip = Ipv4Addr::from(first + i as u32);
            let kind = PeerStormKind::ALL[i % PeerStormKind::ALL.len()];
            let node = handle.create_node().name(format!("peer-storm-{ip}")).ip(IpAddr::V4(ip)).build();
            let client = Client {
                // Ids no member has: the storm never retires a real member's connection.
                node_id: 1_000 + i as u64,
                kind,
                cfg: cfg.clone(),
                targets: targets.to_vec(),
                rng: rt::rng::split(rng),
                until,
                history: history.clone(),
                stats: stats.clone(),
            };
            node.spawn(client.run())
        })
        .collect()
}

struct Client {
    node_id: NodeId,
    kind: PeerStormKind,
    cfg: PeerStormConfig,
    targets: Vec<PeerTarget>,
    rng: NodeRng,
    until: rt::time::Instant,
    history: History,
    stats: Stats,
}

/// Longer than the members' handshake timeout (2 s): a stalled exchange ends on their side.
const WAIT: Duration = Duration::from_secs(3);

impl Client {
    async fn run(mut self) {
        rt::time::sleep(Duration::from_millis(self.rng.random_range(0..500))).await;
        while rt::time::now() < self.until {
            let target = *self.targets.choose(&mut self.rng).expect("a member to aim at");
            match self.kind {
                PeerStormKind::Garbage => self.garbage(target).await,
                PeerStormKind::WrongSecret => self.wrong_secret(target).await,
                PeerStormKind::Replay => self.replay(target).await,
                PeerStormKind::Insider => self.insider(target).await,
            }
            rt::time::sleep(Duration::from_millis(self.rng.random_range(50..400))).await;
        }
    }

    async fn connect(&self, target: PeerTarget) -> Option<TcpStream> {
        match rt::time::timeout(WAIT, TcpStream::connect(target.addr)).await {
            Ok(Ok(s)) => {
                bump(&self.stats, |s| s.connects += 1);
                Some(s)
            }
            _ => {
                bump(&self.stats, |s| s.refused_connects += 1);
                None
            }
        }
    }

    fn local<'a>(&'a mut self, secret: &'a [u8]) -> Local<'a> {
        let mut nonce = [0u8; 32];
        let mut pake_seed = [0u8; 32];
        self.rng.fill(&mut nonce);
        self.rng.fill(&mut pake_seed);
        Local { node_id: self.node_id, cluster_id: self.cfg.cluster_id.as_bytes(), secret, nonce, pake_seed }
    }

    fn violation(&self, what: String) {
        bump(&self.stats, |s| s.violations += 1);
        self.history.violation(what);
    }

    async fn garbage(&mut self, target: PeerTarget) {
        let Some(mut s) = self.connect(target).await else { return };
        let len = self.rng.random_range(1..400);
        let mut bytes: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
        if self.rng.random_bool(0.3) {
            bytes[..len.min(4)].copy_from_slice(&handshake::MAGIC[..len.min(4)]);
        }
        let _ = s.write_all(&bytes).await;
        let _ = s.flush().await;
        bump(&self.stats, |s| s.garbage_sent += 1);
        let mut sink = [0u8; 512];
        let _ = rt::time::timeout(WAIT, s.read(&mut sink)).await;
    }

    async fn wrong_secret(&mut self, target: PeerTarget) {
        let Some(mut s) = self.connect(target).await else { return };
        let guess = format!("{}-guess-{}", self.cfg.secret, self.rng.random::<u16>());
        let local = self.local(guess.as_bytes());
        match rt::time::timeout(WAIT, handshake::dial(&mut s, &local, target.node_id)).await {
            Ok(Ok(())) => self.violation(format!(
                "peer port of node {} completed a handshake for a wrong secret",
                target.node_id
            )),
            Ok(Err(_)) => bump(&self.stats, |s| s.wrong_secret_refused += 1),
            Err(_) => {}
        }
    }

    /// A dialer's side done by hand, recording what it sent: (first message, confirmation).
    async fn record(&mut self, target: PeerTarget) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut s = self.connect(target).await?;
        let secret = self.cfg.secret.clone();
        let local = self.local(secret.as_bytes());
        let hello = Hello {
            role: Role::Dialer,
            node_id: local.node_id,
            nonce: local.nonce,
            cluster_id: local.cluster_id.to_vec(),
        }
        .encode();
        let (state, x) = handshake::pake_start(Role::Dialer, &local);
        let mut first = hello.clone();
        first.extend_from_slice(&x);
        let exchange = async {
            s.write_all(&first).await?;
            s.flush().await?;
            let mut answer = vec![0u8; HELLO_FIXED_LEN + local.cluster_id.len() + PAKE_MSG_LEN + PROOF_LEN];
            s.read_exact(&mut answer).await?;
            let (hello_l, rest) = answer.split_at(HELLO_FIXED_LEN + local.cluster_id.len());
            let (y, _) = rest.split_at(PAKE_MSG_LEN);
            let c = Confirmation::new(state, y, &hello, &x, hello_l, y).map_err(std::io::Error::other)?;
            let confirm = c.proof(Role::Dialer).to_vec();
            s.write_all(&confirm).await?;
            s.flush().await?;
            let mut accept = [0u8; 4];
            s.read_exact(&mut accept).await?;
            Ok::<_, std::io::Error>((accept == ACCEPT).then_some(confirm))
        };
        match rt::time::timeout(WAIT, exchange).await {
            Ok(Ok(Some(confirm))) => Some((first, confirm)),
            _ => None,
        }
    }

    async fn replay(&mut self, target: PeerTarget) {
        let Some((first, confirm)) = self.record(target).await else { return };
        let Some(mut s) = self.connect(target).await else { return };
        let cluster_len = self.cfg.cluster_id.len();
        let replayed = async {
            s.write_all(&first).await?;
            s.flush().await?;
            let mut answer = vec![0u8; HELLO_FIXED_LEN + cluster_len + PAKE_MSG_LEN + PROOF_LEN];
            s.read_exact(&mut answer).await?;
            s.write_all(&confirm).await?;
            s.flush().await?;
            let mut accept = [0u8; 4];
            s.read_exact(&mut accept).await?;
            Ok::<_, std::io::Error>(accept == ACCEPT)
        };
        match rt::time::timeout(WAIT, replayed).await {
            Ok(Ok(true)) => self.violation(format!("node {} accepted a replayed handshake", target.node_id)),
            Ok(Err(_) | Ok(false)) => bump(&self.stats, |s| s.replays_refused += 1),
            Err(_) => {}
        }
    }

    async fn insider(&mut self, target: PeerTarget) {
        let Some(mut s) = self.connect(target).await else { return };
        let secret = self.cfg.secret.clone();
        let local = self.local(secret.as_bytes());
        if !matches!(
            rt::time::timeout(WAIT, handshake::dial(&mut s, &local, target.node_id)).await,
            Ok(Ok(()))
        ) {
            return;
        }
        let m = self.absurd(target.node_id);
        let mut frame = Vec::new();
        if encode_frame(&m, 1 << 20, &mut frame).is_err() {
            return;
        }
        let _ = s.write_all(&frame).await;
        let _ = s.flush().await;
        bump(&self.stats, |s| s.insider_frames += 1);
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = rt::time::timeout(WAIT, s.read(&mut byte)).await {
            bump(&self.stats, |s| s.insider_closed += 1);
        }
    }

    /// A message no honest node can send.
    fn absurd(&mut self, to: NodeId) -> Message {
        let from = self.node_id;
        let huge = u64::MAX - self.rng.random_range(0..3);
        let entry =
            |index, term| Entry { term, index, kind: EntryKind::Normal, data: Bytes::from_static(b"forged") };
        let (term, body) = match self.rng.random_range(0..8) {
            0 => (huge, Body::Heartbeat { commit: huge, round: 1 }),
            1 => (MAX_TERM + 1, Body::TimeoutNow),
            2 => (1, Body::Append { prev_index: huge - 1, prev_term: 1, entries: vec![], commit: huge }),
            3 => (huge, Body::Vote { pre_vote: false, last_index: huge, last_term: huge, transfer: true }),
            4 => (2, Body::Append { prev_index: 0, prev_term: 0, entries: vec![entry(5, 1)], commit: 5 }),
            5 => (2, Body::Append { prev_index: 0, prev_term: 0, entries: vec![entry(1, 9)], commit: 1 }),
            6 => (
                2,
                Body::Snapshot {
                    meta: SnapshotMeta { index: huge, term: 1, conf_state: ConfState::with_voters([from]) },
                    offset: 0,
                    data: Bytes::new(),
                    done: true,
                },
            ),
            _ => (huge, Body::AppendResponse { index: huge, reject: None }),
        };
        Message { from, to, term, body }
    }
}
