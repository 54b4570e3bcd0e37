//! A cluster of [`ClusterNode`]s in one test process on the real runtime, each member on its own
//! in-memory [`SimDisk`] (so a test can power-fail, wipe or fault it) and a loopback peer port.
//! Shared by `tests/cluster_node.rs` and `tests/catchup_install.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventstreamcore::config::{ClusterConfig, MemberConfig};
use eventstreamcore::node::cluster::{ClusterError, ClusterStatus};
use eventstreamcore::node::{ClusterNode, ClusterOptions, ClusterTask, DedupConfig};
use eventstreamcore::pipeline::PipelineSetup;
use eventstreamcore::raft::Role;
use eventstreamcore::rt::{Disk, DiskError, NodeClock, SimDisk, rng_from_seed};
use eventstreamcore::store::StoreConfig;

pub struct Member {
    pub id: u64,
    pub disk: Arc<SimDisk>,
    /// While set, the member cannot open topic files ([`TopicFds`]).
    pub no_topic_fds: Arc<AtomicBool>,
    pub node: Option<(ClusterNode, ClusterTask)>,
}

pub struct TestCluster {
    pub members: Vec<MemberConfig>,
    pub nodes: Vec<Member>,
    pub secret: String,
    pub pipeline: Option<Arc<PipelineSetup>>,
    /// `cluster.segment_bytes` (the WAL's segments).
    pub segment_bytes: u64,
    /// The topic files' settings.
    pub store: StoreConfig,
    /// `cluster.snapshot_keep_entries` (the default unless a test needs compaction).
    pub keep_entries: u64,
    /// Applied last to every member's cluster config: a test's own settings.
    pub tune: fn(&mut ClusterConfig),
    /// The bytes one fetch reads at most (`ingest.max_fetch_bytes`), for members started next.
    pub read_max_bytes: usize,
}

impl TestCluster {
    pub fn new(n: u64) -> TestCluster {
        let members: Vec<MemberConfig> = (1..=n)
            .map(|id| MemberConfig {
                id,
                raft_addr: format!("127.0.0.1:{}", super::free_port()),
                client_addr: format!("127.0.0.1:{}", 17000 + id),
            })
            .collect();
        let nodes = (1..=n)
            .map(|id| Member { id, disk: Arc::new(SimDisk::new()), no_topic_fds: Arc::default(), node: None })
            .collect();
        TestCluster {
            members,
            nodes,
            secret: "s3cret".into(),
            pipeline: None,
            segment_bytes: 8 << 20,
            store: StoreConfig::default(),
            keep_entries: ClusterConfig::default().snapshot_keep_entries,
            tune: |_| {},
            read_max_bytes: 1 << 20,
        }
    }

    pub fn cluster_config(&self, id: u64) -> ClusterConfig {
        let me = &self.members[(id - 1) as usize];
        let mut cfg = ClusterConfig {
            secret: self.secret.clone(),
            raft_listen: me.raft_addr.parse().unwrap(),
            members: self.members.clone(),
            tick_ms: 10,
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_entries: 50,
            snapshot_keep_entries: self.keep_entries,
            commit_timeout_ms: 3_000,
            segment_bytes: self.segment_bytes,
            ..ClusterConfig::default()
        };
        (self.tune)(&mut cfg);
        cfg
    }

    pub async fn start(&mut self, id: u64) {
        let opts = ClusterOptions {
            node_id: id,
            cluster: self.cluster_config(id),
            dedup: DedupConfig::default(),
            client_addr: self.members[(id - 1) as usize].client_addr.clone(),
            repair: false,
            pipeline: self.pipeline.clone().map(|p| p as Arc<dyn eventstreamcore::service::StartProcessing>),
            observer: None,
            store: self.store,
            read_max_bytes: self.read_max_bytes,
        };
        let m = &mut self.nodes[(id - 1) as usize];
        let disk: Arc<dyn Disk> =
            Arc::new(TopicFds { disk: m.disk.clone(), exhausted: m.no_topic_fds.clone() });
        // The peer port was picked free earlier and released; another test's socket, or this
        // member's previous listener still closing, may hold it for a moment (CI saw AddrInUse).
        let mut attempts = 0;
        let started = loop {
            match ClusterNode::start(opts.clone(), disk.clone(), NodeClock::new(), rng_from_seed(id)).await {
                Err(ClusterError::Listen { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse && attempts < 100 =>
                {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => break other.unwrap(),
            }
        };
        m.node = Some(started);
    }

    pub async fn start_all(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            self.start(id).await;
        }
    }

    /// Stops a node; `power_fail` also drops what it had not synced.
    pub async fn stop(&mut self, id: u64, power_fail: bool) {
        let m = &mut self.nodes[(id - 1) as usize];
        if let Some((node, task)) = m.node.take() {
            node.shutdown();
            task.wait().await;
        }
        if power_fail {
            m.disk.power_fail(None);
        }
    }

    pub async fn stop_all(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            self.stop(id, false).await;
        }
    }

    /// The member loses everything on its disk (a replaced machine with the same id).
    pub fn wipe(&mut self, id: u64) {
        self.nodes[(id - 1) as usize].disk = Arc::new(SimDisk::new());
    }

    /// Takes the member's descriptors for topic files away (`true`) or gives them back.
    pub fn exhaust_topic_fds(&self, id: u64, on: bool) {
        self.nodes[(id - 1) as usize].no_topic_fds.store(on, Ordering::SeqCst);
    }

    pub fn node(&self, id: u64) -> &ClusterNode {
        &self.nodes[(id - 1) as usize].node.as_ref().expect("node is running").0
    }

    pub fn statuses(&self) -> Vec<ClusterStatus> {
        self.nodes.iter().filter_map(|m| m.node.as_ref().map(|(n, _)| n.status())).collect()
    }

    /// The one leader, once it committed an entry of its term (its no-op) and applied it.
    pub async fn leader(&self) -> u64 {
        for _ in 0..500 {
            let st = self.statuses();
            if let [l] = st.iter().filter(|s| s.role == Role::Leader).collect::<Vec<_>>()[..]
                && l.commit >= 1
                && l.applied == l.commit
            {
                return l.id;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader: {:?}", self.statuses());
    }

    /// Waits until every running member applied the same index and holds the same state; its digest.
    pub async fn converged(&self) -> u64 {
        for _ in 0..1000 {
            let digests: Vec<u64> =
                self.nodes.iter().filter_map(|m| m.node.as_ref().map(|(n, _)| n.state().digest())).collect();
            let st = self.statuses();
            if digests.windows(2).all(|w| w[0] == w[1]) && st.windows(2).all(|w| w[0].applied == w[1].applied)
            {
                return digests[0];
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("replicas did not converge: {:?}", self.statuses());
    }
}

/// A member's disk on which, while `exhausted` is set, no topic file can be opened, as when the
/// process is out of descriptors: creating one (an append to a new file, any whole-file write)
/// fails with `TooManyOpenFiles` and changes nothing. The WAL's files are unaffected.
#[derive(Debug)]
pub struct TopicFds {
    disk: Arc<SimDisk>,
    exhausted: Arc<AtomicBool>,
}

impl TopicFds {
    fn open(&self, op: &'static str, name: &str, creates: bool) -> Result<(), DiskError> {
        if creates && name.starts_with("topic-") && self.exhausted.load(Ordering::SeqCst) {
            return Err(DiskError::TooManyOpenFiles { op, path: name.into() });
        }
        Ok(())
    }
}

impl Disk for TopicFds {
    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
        self.disk.read(name)
    }
    fn size(&self, name: &str) -> Result<Option<u64>, DiskError> {
        self.disk.size(name)
    }
    fn read_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        self.disk.read_range(name, offset, len)
    }
    fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.open("append", name, self.disk.size(name)?.is_none())?;
        self.disk.append(name, data)
    }
    fn write(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.open("write", name, true)?;
        self.disk.write(name, data)
    }
    fn truncate(&self, name: &str, len: u64) -> Result<(), DiskError> {
        self.disk.truncate(name, len)
    }
    fn sync(&self, name: &str) -> Result<(), DiskError> {
        self.disk.sync(name)
    }
    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        self.disk.rename(from, to)
    }
    fn remove(&self, name: &str) -> Result<(), DiskError> {
        self.disk.remove(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, DiskError> {
        self.disk.list(prefix)
    }
    fn sync_dir(&self) -> Result<(), DiskError> {
        self.disk.sync_dir()
    }
    fn take_latency(&self) -> Duration {
        self.disk.take_latency()
    }
}
