//! [`Server::start`]: the ONE assembly of a cluster member — its disks, the Raft node with its peer
//! transport, the leader's event pipeline, the client listener (ingest) and its metrics — from a
//! [`Config`] and the seams a caller may swap ([`Seams`]: disks, clock, rng, observer, repair).
//! `esc serve`, `esc bench --cluster` and the simulator's members all start here; the simulator
//! passes other seams (`SimDisk`s, a drifting clock, an observer), never other wiring.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::ingest::{IngestServer, ShutdownHandle};
use crate::metrics::IngestMetrics;
use crate::node::{ClusterNode, ClusterOptions, ClusterTask, RaftObserver};
use crate::pipeline::PipelineSetup;
use crate::rt::{self, Disk, FileDisk, NodeClock, NodeRng};
use crate::service::StartProcessing;

/// Where a member keeps its data.
#[derive(Debug, Clone)]
pub enum Disks {
    /// Real files under `cluster.data_dir` (locked against a second process); the dead-letter
    /// queue in its `dlq/` subdirectory.
    DataDir,
    /// Given disks: the Raft log's and the dead-letter queue's.
    Given { log: Arc<dyn Disk>, dlq: Arc<dyn Disk> },
}

/// What a caller may swap when starting a member.
pub struct Seams {
    pub disks: Disks,
    pub clock: NodeClock,
    pub rng: NodeRng,
    /// Sees the Raft state after every driver round (the simulator's checkers).
    pub observer: Option<Arc<dyn RaftObserver>>,
    /// Truncate the write-ahead log at a corrupt record instead of refusing to start.
    pub repair: bool,
    /// Called once the Raft node runs, before the client listener binds (the simulator hands the
    /// node to its checkers here).
    pub on_node: Option<OnNode>,
}

/// See [`Seams::on_node`].
pub type OnNode = Box<dyn FnOnce(&ClusterNode) + Send>;

/// The Raft log's disk and, if the pipeline is enabled, the dead-letter queue's.
type OpenDisks = (Arc<dyn Disk>, Option<Arc<dyn Disk>>);

impl Seams {
    /// Production seams: files under the data directory, the real clock, OS entropy.
    pub fn production(repair: bool) -> Seams {
        Seams {
            disks: Disks::DataDir,
            clock: NodeClock::new(),
            rng: rt::node_rng(),
            observer: None,
            repair,
            on_node: None,
        }
    }
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data directory {dir}: {source}")]
    DataDir { dir: String, source: crate::rt::DiskError },
    #[error("dead-letter queue {dir}: {source}")]
    Dlq { dir: String, source: crate::rt::DiskError },
    #[error("ingest.tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("node {id} cannot start ({dir}): {source}")]
    Node { id: u64, dir: String, source: crate::node::ClusterError },
}

/// A running member: its node, its client listener and how to stop it.
pub struct Server {
    node: ClusterNode,
    task: ClusterTask,
    ingest: IngestServer<ClusterNode>,
}

impl Server {
    /// Assembles and starts a member. Nothing is served until [`Server::run`].
    pub async fn start(config: &Config, seams: Seams) -> Result<Server, ServerError> {
        let Seams { disks, clock, rng, observer, repair, on_node } = seams;
        let data_dir = config.cluster.data_dir.display().to_string();
        if let Some(files) = &config.ingest.tls {
            // Checked before anything starts, so a bad file is the one error reported.
            crate::tls::server_config(files)?;
        }
        let (log_disk, dlq_disk) = open_disks(config, disks)?;
        let mut ingest = config.ingest.clone();
        if ingest.listen.port() == 0 {
            // Resolve port 0 first so the address told to clients is the real one.
            ingest.listen = resolve_port(ingest.listen).await?;
        }
        let pipeline = dlq_disk.map(|dlq_disk| {
            Arc::new(PipelineSetup { config: config.pipeline.clone(), dlq_disk }) as Arc<dyn StartProcessing>
        });
        let opts = ClusterOptions {
            node_id: config.node.id,
            cluster: config.cluster.clone(),
            dedup: config.dedup,
            client_addr: advertised_client_addr(config, ingest.listen),
            repair,
            pipeline,
            observer,
            store: ClusterOptions::store_config(&config.cluster),
            read_max_bytes: config.ingest.max_fetch_bytes,
        };
        let id = config.node.id;
        let (node, task) = ClusterNode::start(opts, log_disk, clock.clone(), rng)
            .await
            .map_err(|source| ServerError::Node { id, dir: data_dir, source })?;
        node.set_topic_settings(config.topic_settings());
        if let Some(f) = on_node {
            f(&node);
        }
        let addr = ingest.listen;
        match IngestServer::bind(ingest, node.clone(), clock, config.node.name.clone()).await {
            Ok(ingest) => Ok(Server { node, task, ingest }),
            Err(source) => {
                node.shutdown();
                task.wait().await;
                Err(ServerError::Listen { addr, source })
            }
        }
    }

    pub fn node(&self) -> &ClusterNode {
        &self.node
    }

    /// The client listener's address.
    pub fn client_addr(&self) -> SocketAddr {
        self.ingest.local_addr()
    }

    /// Where the member listens for its peers (`None` without a `cluster.secret`: a lone member).
    pub fn raft_addr(&self) -> Option<SocketAddr> {
        self.node.raft_addr()
    }

    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.ingest.udp_addr()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.ingest.metrics_addr()
    }

    pub fn metrics(&self) -> Arc<IngestMetrics> {
        self.ingest.metrics()
    }

    /// Stops the client listener gracefully; [`Server::run`] then stops the node and returns.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.ingest.shutdown_handle()
    }

    /// Serves clients until shut down, then stops the node and waits for it. `Err` says why the
    /// node had stopped replicating (a storage failure), if it had.
    pub async fn run(self) -> Result<(), String> {
        self.ingest.run().await;
        self.node.shutdown();
        self.task.wait().await;
        match self.node.status().failed {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

fn open_disks(config: &Config, disks: Disks) -> Result<OpenDisks, ServerError> {
    let enabled = config.pipeline.enabled;
    match disks {
        Disks::Given { log, dlq } => Ok((log, enabled.then_some(dlq))),
        Disks::DataDir => {
            let dir = &config.cluster.data_dir;
            let log = FileDisk::open_exclusive(dir)
                .map_err(|source| ServerError::DataDir { dir: dir.display().to_string(), source })?;
            let dlq = match enabled {
                true => {
                    let d = dir.join("dlq");
                    let disk = FileDisk::open(&d)
                        .map_err(|source| ServerError::Dlq { dir: d.display().to_string(), source })?;
                    Some(Arc::new(disk) as Arc<dyn Disk>)
                }
                false => None,
            };
            Ok((Arc::new(log), dlq))
        }
    }
}

/// Binds `addr` (port 0) once to learn the port the system picks.
async fn resolve_port(addr: SocketAddr) -> Result<SocketAddr, ServerError> {
    let listener =
        rt::net::TcpListener::bind(addr).await.map_err(|source| ServerError::Listen { addr, source })?;
    listener.local_addr().map_err(|source| ServerError::Listen { addr, source })
}

/// The client address told to clients redirected here: this member's entry in the cluster list,
/// else where it listens.
fn advertised_client_addr(config: &Config, listen: SocketAddr) -> String {
    config
        .cluster
        .members
        .iter()
        .find(|m| m.id == config.node.id)
        .map_or_else(|| listen.to_string(), |m| m.client_addr.clone())
}
