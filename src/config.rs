//! Typed configuration with embedded defaults.
//!
//! Precedence, lowest first: the defaults compiled in ([`Config::default`], documented in
//! `config/esc.toml`), a TOML file (`--config`), environment variables `ESC__SECTION__KEY=value`,
//! and `--set section.key=value` flags. Unknown keys and bad values are refused with an error that
//! names the key (and the line, for the file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::node::{DedupConfig, TopicConfig, TopicSettings};
use crate::pipeline::PipelineConfig;
use crate::wire::acked::MAX_FRAME_LIMIT;

/// The whole configuration of one `esc` server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub ingest: IngestConfig,
    pub dedup: DedupConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
    pub pipeline: PipelineConfig,
    /// Per-topic retention: `[topics.default]`, `[topics."orders"]`, `[topics."audit.*"]`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub topics: std::collections::BTreeMap<String, TopicConfig>,
}

/// Identity of this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Node id (non-zero), reported to clients.
    pub id: u64,
    /// Human-readable server name, reported to clients.
    pub name: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig { id: 1, name: "esc".to_string() }
    }
}

/// The client-facing TCP (and optional UDP) server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// TCP address for both protocols.
    pub listen: SocketAddr,
    /// UDP address for legacy frames (one per datagram); absent = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_listen: Option<SocketAddr>,
    /// HTTP address serving `GET /metrics` (Prometheus text format); absent = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Connections served at once; more are told "overloaded" and closed.
    pub max_connections: usize,
    /// Largest legacy body / acked frame in bytes; larger closes the connection.
    pub max_frame_bytes: usize,
    /// Most events in one acked publish frame.
    pub max_events_per_frame: usize,
    /// Acked requests a connection may have in flight (pipelining depth).
    pub max_inflight_per_connection: usize,
    /// Events being stored server-wide at once; beyond this publishes are refused as overloaded.
    pub max_inflight_events: usize,
    /// ... and their bytes on the wire (TCP publishes; a batch larger than this still goes through
    /// alone): what the events in flight hold in memory is about 2.5 times this at most.
    pub max_inflight_bytes: usize,
    /// How long an overloaded client is told to wait.
    pub overload_retry_after_ms: u32,
    /// A connection with no bytes for this long is closed.
    pub idle_timeout_ms: u64,
    /// A frame must complete within this long of its first byte (a total deadline, not a per-byte
    /// one), or the connection is closed.
    pub read_timeout_ms: u64,
    /// A reply must be accepted by the client within this long (slow readers are dropped).
    pub write_timeout_ms: u64,
    /// On shutdown, in-flight requests get this long to finish before connections are cut.
    pub shutdown_grace_ms: u64,
    /// A credential with every role (publish, consume, admin), kept for compatibility: if
    /// non-empty, acked clients HELLO with it; legacy frames are refused unless
    /// `anonymous_roles` grants publish (they cannot authenticate).
    pub auth_token: String,
    /// If non-empty, only these topics are accepted: exact names, or prefixes ending in `/*`.
    pub allowed_topics: Vec<String>,
    /// Most events a fetch returns.
    pub max_fetch_events: usize,
    /// Most bytes of events one FETCHED reply carries (at least one event is always returned,
    /// so a consumer progresses past an event larger than this).
    pub max_fetch_bytes: usize,
    /// Server-wide bound on connection buffers (partly received frames and encoded replies not
    /// yet written). Above it, connections holding more than a small share stop reading until
    /// the total drops (clients that complete their frames and read their replies free it).
    pub max_buffered_bytes: usize,
    /// Connections the metrics HTTP port serves at once; more are closed at once.
    pub metrics_max_connections: usize,
    /// Per-client credentials with roles (see [`ClientCredential`]). Together with `auth_token`
    /// (a credential with every role) they decide who may do what on the acked protocol.
    pub clients: Vec<ClientCredential>,
    /// First delay before answering a failed HELLO; doubles with each failure on a connection.
    pub hello_failure_delay_ms: u64,
    /// Cap of the growing failed-HELLO delay.
    pub hello_failure_max_delay_ms: u64,
    /// A connection is closed after this many failed HELLOs.
    pub max_failed_hellos: u32,
    /// Roles a connection has without a successful HELLO. Unset: publish and consume when no
    /// credential is configured (an open port), none otherwise. Admin is never anonymous.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_roles: Option<Vec<Role>>,
    /// `[ingest.tls]`: serve the client port over TLS only (absent = plain TCP). The files are
    /// loaded and checked when the server starts. See docs/security.md.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::TlsFiles>,
}

/// What an authenticated client may do on the acked protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// PUBLISH.
    Publish,
    /// FETCH and READ.
    Consume,
    /// ADMIN operations that change membership or leadership (status needs no role).
    Admin,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 3] = [Role::Publish, Role::Consume, Role::Admin];

    /// The lower-case name used in the config and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Publish => "publish",
            Role::Consume => "consume",
            Role::Admin => "admin",
        }
    }
}

/// One client credential: `[[ingest.clients]] name = "..." token = "..." roles = ["publish"]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCredential {
    /// Who this is (logs only).
    pub name: String,
    /// The secret the client sends in HELLO.
    pub token: String,
    /// What it may do.
    pub roles: Vec<Role>,
}

impl std::fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("ClientCredential").field("name", &self.name).field("roles", &self.roles).finish()
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            udp_listen: None,
            metrics_listen: None,
            max_connections: 10_000,
            max_frame_bytes: crate::wire::DEFAULT_MAX_FRAME,
            max_events_per_frame: 10_000,
            max_inflight_per_connection: 128,
            max_inflight_events: 200_000,
            max_inflight_bytes: 64 << 20,
            overload_retry_after_ms: 100,
            idle_timeout_ms: 300_000,
            read_timeout_ms: 10_000,
            write_timeout_ms: 10_000,
            shutdown_grace_ms: 5_000,
            auth_token: String::new(),
            allowed_topics: Vec::new(),
            max_fetch_events: 10_000,
            max_fetch_bytes: 1 << 20,
            max_buffered_bytes: 256 << 20,
            metrics_max_connections: 64,
            clients: Vec::new(),
            hello_failure_delay_ms: 100,
            hello_failure_max_delay_ms: 2_000,
            max_failed_hellos: 5,
            anonymous_roles: None,
            tls: None,
        }
    }
}

impl IngestConfig {
    /// True if `topic` may be published under `allowed_topics`.
    pub fn topic_allowed(&self, topic: &str) -> bool {
        self.allowed_topics.is_empty()
            || self.allowed_topics.iter().any(|pat| match pat.strip_suffix('*') {
                Some(prefix) => topic.starts_with(prefix),
                None => pat == topic,
            })
    }
}

/// Raft replication and durable storage. The defaults run a single-node cluster whose log lives
/// in `esc-data/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Name every member presents in the peer handshake; nodes of another cluster are refused.
    pub cluster_id: String,
    /// Shared secret for the peer handshake; required when the cluster has more than one member.
    pub secret: String,
    /// TCP address for Raft traffic between members.
    pub raft_listen: SocketAddr,
    /// Directory for the write-ahead log, hard state and snapshots.
    pub data_dir: PathBuf,
    /// Initial members (this node included). Empty: a single-node cluster of this node.
    pub members: Vec<MemberConfig>,
    /// Start with no configuration and wait to be added (`esc admin add`) instead of bootstrapping.
    pub join: bool,
    /// Length of one Raft tick on the node's clock.
    pub tick_ms: u64,
    /// Election timeout in ticks (randomised up to twice this).
    pub election_ticks: u32,
    /// Leader heartbeat interval in ticks.
    pub heartbeat_ticks: u32,
    /// Take a state snapshot and compact the log every this many applied entries.
    pub snapshot_entries: u64,
    /// Entries kept in the log behind a snapshot, so a slightly lagging follower catches up by
    /// appends instead of receiving the whole snapshot.
    pub snapshot_keep_entries: u64,
    /// ... but no more of them than hold this many bytes: a few big entries (a pipelined batch
    /// of long events) must not keep the log in memory far beyond `snapshot_log_bytes`.
    pub snapshot_keep_bytes: u64,
    /// Also take a snapshot once the entries applied since the last one hold this many bytes:
    /// the Raft log kept in memory between snapshots stays near this size whatever the entries
    /// carry (`snapshot_entries` alone lets it grow with the batch size).
    pub snapshot_log_bytes: u64,
    /// A publish not committed within this long is answered "unavailable, retry" (safe to retry
    /// with the same idempotency key).
    pub commit_timeout_ms: u64,
    /// Size at which a write-ahead-log segment is closed and a new one started.
    pub segment_bytes: u64,
    /// Size at which a topic segment file is closed and a new one started (retention deletes
    /// whole segments).
    pub topic_segment_bytes: u64,
    /// Whether a start reads every retained topic record and checks its CRC, refusing to start
    /// on bit rot (off: a start opens segments at their recorded lengths, O(segments) whatever
    /// the data size, and rot is found by the CRC of the read that meets it).
    pub verify_topics_at_start: bool,
    /// Bytes per second the background scrub reads of sealed topic segments, checking every
    /// record's CRC so bit rot is found while the member runs (0: no scrub).
    pub scrub_bytes_per_sec: u64,
    /// Most topics this member holds: each keeps a file descriptor open (its active segment), so
    /// they count in the descriptor budget checked at start. The leader refuses a publish that
    /// would create a topic beyond it (before proposing: applying never checks it).
    pub max_topics: u64,
    /// Most record bytes a member installing a snapshot asks for per request when it pulls the
    /// topic data it lacks (4096 ..= 1 MiB).
    pub catchup_chunk_bytes: u32,
    /// Most entries in one append message to a follower (smaller: a lagging follower catches
    /// up in more, smaller steps).
    pub max_entries_per_append: u64,
    /// Messages queued for one peer before further ones are dropped (Raft retransmits them).
    pub peer_queue: u64,
    /// `[cluster.tls]`: TLS on the peer port under the SPAKE2 handshake (absent = plain TCP).
    /// Every member needs it, with certificates from one CA. See docs/security.md.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::PeerTlsFiles>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            cluster_id: "esc".to_string(),
            secret: String::new(),
            raft_listen: SocketAddr::from(([127, 0, 0, 1], 7170)),
            data_dir: PathBuf::from("esc-data"),
            members: Vec::new(),
            join: false,
            tick_ms: 50,
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_entries: 20_000,
            snapshot_keep_entries: 1_000,
            snapshot_keep_bytes: 4 << 20,
            snapshot_log_bytes: 32 << 20,
            commit_timeout_ms: 10_000,
            segment_bytes: 8 << 20,
            topic_segment_bytes: 64 << 20,
            verify_topics_at_start: false,
            scrub_bytes_per_sec: 4 << 20,
            max_topics: 1_000,
            catchup_chunk_bytes: crate::store::MAX_RECORDS_BYTES,
            max_entries_per_append: 1024,
            peer_queue: 1024,
            tls: None,
        }
    }
}

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Node id (non-zero, unique).
    pub id: u64,
    /// Where its Raft listener is (`host:port`).
    pub raft_addr: String,
    /// Where its clients connect (`host:port`), told to clients redirected to it.
    pub client_addr: String,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `eventstreamcore::ingest=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".to_string() }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("override `{spec}`: {message}")]
    Override { spec: String, message: String },
    #[error("invalid config: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Loads defaults, then `file`, then `ESC__…` variables from `env`, then `--set` overrides,
    /// and validates the result.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let mut table = toml::Table::new();
        if let Some(path) = file {
            let text = crate::rt::read_config_file(path)
                .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
            // Parse the file alone first so unknown keys and bad values are reported with their line.
            toml::from_str::<Config>(&text)
                .map_err(|e| ConfigError::File { path: path.to_path_buf(), message: e.to_string() })?;
            table = toml::from_str(&text)
                .map_err(|e| ConfigError::File { path: path.to_path_buf(), message: e.to_string() })?;
        }
        for (name, value) in env {
            if let Some(path) = name.strip_prefix("ESC__") {
                let key = path.split("__").map(str::to_ascii_lowercase).collect::<Vec<_>>().join(".");
                let spec = format!("{name}={value}");
                set_path(&mut table, &key, &value)
                    .map_err(|message| ConfigError::Override { spec, message })?;
            }
        }
        for spec in overrides {
            let (key, value) = spec.split_once('=').ok_or_else(|| ConfigError::Override {
                spec: spec.clone(),
                message: "expected section.key=value".to_string(),
            })?;
            set_path(&mut table, key.trim(), value.trim())
                .map_err(|message| ConfigError::Override { spec: spec.clone(), message })?;
        }
        let config: Config = Config::deserialize(toml::Value::Table(table)).map_err(|e| {
            ConfigError::Override { spec: "(file + overrides)".into(), message: e.to_string() }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML string over the defaults and validates it.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::File { path: PathBuf::from("<string>"), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and relations between values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.id == 0 {
            return invalid("node.id", "must be non-zero");
        }
        if !(64..=MAX_FRAME_LIMIT).contains(&self.ingest.max_frame_bytes) {
            return invalid("ingest.max_frame_bytes", format!("must be between 64 and {MAX_FRAME_LIMIT}"));
        }
        self.validate_limits()?;
        validate_clients(&self.ingest.clients)?;
        validate_access(&self.ingest)?;
        self.validate_cluster()?;
        if let Err((key, message)) = self.pipeline.validate() {
            return invalid(key, message);
        }
        if let Err((section, why)) = TopicSettings::from_config(&self.topics) {
            return invalid("topics", format!("[topics.\"{section}\"]: {why}"));
        }
        if let Err(e) = self.log.level.parse::<tracing_subscriber::EnvFilter>() {
            return invalid("log.level", e.to_string());
        }
        Ok(())
    }

    /// Counts, sizes and timeouts of ingest and dedup: none zero, and room for one full frame.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let i = &self.ingest;
        for (key, v) in [
            ("ingest.max_connections", i.max_connections),
            ("ingest.max_events_per_frame", i.max_events_per_frame),
            ("ingest.max_inflight_per_connection", i.max_inflight_per_connection),
            ("ingest.max_inflight_events", i.max_inflight_events),
            ("ingest.max_inflight_bytes", i.max_inflight_bytes),
            ("ingest.max_fetch_events", i.max_fetch_events),
            ("ingest.max_fetch_bytes", i.max_fetch_bytes),
            ("ingest.metrics_max_connections", i.metrics_max_connections),
            ("ingest.max_failed_hellos", i.max_failed_hellos as usize),
            ("dedup.max_keys_per_producer", self.dedup.max_keys_per_producer),
            ("dedup.max_keys", self.dedup.max_keys),
        ] {
            if v == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        for (key, v) in [
            ("ingest.idle_timeout_ms", i.idle_timeout_ms),
            ("ingest.read_timeout_ms", i.read_timeout_ms),
            ("ingest.write_timeout_ms", i.write_timeout_ms),
            ("dedup.window_ms", self.dedup.window_ms),
        ] {
            if v == 0 {
                return invalid(key, "must be at least 1 ms");
            }
        }
        if i.max_inflight_events < i.max_events_per_frame {
            return invalid(
                "ingest.max_inflight_events",
                "must be at least ingest.max_events_per_frame, or a full frame could never be accepted",
            );
        }
        if i.max_buffered_bytes < i.max_frame_bytes {
            return invalid(
                "ingest.max_buffered_bytes",
                "must be at least ingest.max_frame_bytes, or a full frame could never be received",
            );
        }
        Ok(())
    }

    /// Cluster timing, storage and membership (this node among the members, a secret when peers exist).
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        for (key, v) in [
            ("cluster.tick_ms", c.tick_ms),
            ("cluster.snapshot_entries", c.snapshot_entries),
            ("cluster.snapshot_log_bytes", c.snapshot_log_bytes),
            ("cluster.max_topics", c.max_topics),
            ("cluster.commit_timeout_ms", c.commit_timeout_ms),
            ("cluster.max_entries_per_append", c.max_entries_per_append),
            ("cluster.peer_queue", c.peer_queue),
        ] {
            if v == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if c.heartbeat_ticks == 0 || c.heartbeat_ticks >= c.election_ticks {
            return invalid("cluster.heartbeat_ticks", "must be at least 1 and below cluster.election_ticks");
        }
        if c.segment_bytes < 4096 {
            return invalid("cluster.segment_bytes", "must be at least 4096");
        }
        if c.topic_segment_bytes < 4096 || c.topic_segment_bytes > crate::store::MAX_SEGMENT_BYTES {
            return invalid("cluster.topic_segment_bytes", "must be 4096 ..= 2 GiB");
        }
        if c.catchup_chunk_bytes < 4096 || c.catchup_chunk_bytes > crate::store::MAX_RECORDS_BYTES {
            return invalid("cluster.catchup_chunk_bytes", "must be 4096 ..= 1 MiB");
        }
        if c.cluster_id.is_empty() {
            return invalid("cluster.cluster_id", "must not be empty");
        }
        let mut ids = std::collections::BTreeSet::new();
        for m in &c.members {
            if m.id == 0 || !ids.insert(m.id) {
                return invalid(
                    "cluster.members",
                    format!("member ids must be non-zero and unique ({})", m.id),
                );
            }
        }
        if !c.members.is_empty() && !ids.contains(&self.node.id) {
            return invalid(
                "cluster.members",
                format!("this node (node.id = {}) is not listed", self.node.id),
            );
        }
        if (c.members.len() > 1 || c.join) && c.secret.is_empty() {
            return invalid(
                "cluster.secret",
                "must be set for a multi-node cluster (peers authenticate with it)",
            );
        }
        Ok(())
    }

    /// The retention settings of the `[topics]` sections (validated by [`Self::validate`]; a bad
    /// section, impossible after validation, gives the defaults).
    pub fn topic_settings(&self) -> TopicSettings {
        TopicSettings::from_config(&self.topics).unwrap_or_default()
    }

    /// The defaults as TOML (what `esc config defaults` prints).
    pub fn defaults_toml() -> String {
        toml::to_string(&Config::default()).expect("defaults serialise")
    }
}

/// A validation failure of `key`.
fn invalid(key: &'static str, message: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid { key, message: message.into() })
}

/// Client credentials: unique non-empty names, tokens of 8 to 65535 bytes, at least one role each.
fn validate_clients(clients: &[ClientCredential]) -> Result<(), ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    for c in clients {
        if c.name.is_empty() || !names.insert(c.name.as_str()) {
            return invalid(
                "ingest.clients",
                format!("client names must be non-empty and unique (`{}`)", c.name),
            );
        }
        if c.token.len() < 8 {
            return invalid("ingest.clients", format!("client `{}`: token must be at least 8 bytes", c.name));
        }
        if c.token.len() > u16::MAX as usize {
            return invalid("ingest.clients", format!("client `{}`: token longer than 65535 bytes", c.name));
        }
        if c.roles.is_empty() {
            return invalid("ingest.clients", format!("client `{}`: no roles", c.name));
        }
    }
    Ok(())
}

/// What anonymous clients may do and which topics are allowed.
fn validate_access(i: &IngestConfig) -> Result<(), ConfigError> {
    if i.anonymous_roles.as_ref().is_some_and(|r| r.contains(&Role::Admin)) {
        return invalid("ingest.anonymous_roles", "admin cannot be granted without a credential");
    }
    for t in &i.allowed_topics {
        let name = t.strip_suffix('*').unwrap_or(t);
        if name.is_empty() && t != "*" {
            return invalid("ingest.allowed_topics", "empty pattern");
        }
        if name.contains('*') {
            return invalid("ingest.allowed_topics", format!("`{t}`: `*` is only allowed at the end"));
        }
    }
    if let Some(tls) = &i.tls {
        if tls.cert_file.as_os_str().is_empty() {
            return invalid("ingest.tls.cert_file", "must name a PEM certificate file");
        }
        if tls.key_file.as_os_str().is_empty() {
            return invalid("ingest.tls.key_file", "must name a PEM private key file");
        }
    }
    Ok(())
}

/// Sets `a.b.c = value` in `table`; `value` is parsed as TOML, or taken as a string if it is not.
fn set_path(table: &mut toml::Table, key: &str, value: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("bad key `{key}`"));
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let (last, parents) = parts.split_last().expect("non-empty split");
    let mut cur = table;
    for p in parents {
        let entry = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| format!("`{p}` is not a section"))?;
    }
    cur.insert(last.to_string(), parsed);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests write real config files
mod tests {
    use super::*;

    #[test]
    fn the_documented_default_file_is_the_embedded_default() {
        let text = include_str!("../config/esc.toml");
        assert_eq!(Config::from_toml(text).unwrap(), Config::default());
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        Config::default().validate().unwrap();
        assert_eq!(Config::from_toml(&Config::defaults_toml()).unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name_and_line() {
        let err = Config::from_toml("[ingest]\nmax_conections = 5\n").unwrap_err().to_string();
        assert!(err.contains("max_conections"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = Config::from_toml("[ingset]\n").unwrap_err().to_string();
        assert!(err.contains("ingset"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let err = Config::from_toml("[ingest]\nlisten = \"nowhere\"\n").unwrap_err().to_string();
        assert!(err.contains("listen") || err.contains("socket address"), "{err}");
        let err = Config::from_toml("[ingest]\nmax_frame_bytes = 3000000000\n").unwrap_err().to_string();
        assert!(err.contains("ingest.max_frame_bytes"), "{err}");
        let err = Config::from_toml("[ingest]\nread_timeout_ms = 0\n").unwrap_err().to_string();
        assert!(err.contains("ingest.read_timeout_ms"), "{err}");
        let err = Config::from_toml("[node]\nid = 0\n").unwrap_err().to_string();
        assert!(err.contains("node.id"), "{err}");
        let err = Config::from_toml("[ingest]\nallowed_topics = [\"a*b\"]\n").unwrap_err().to_string();
        assert!(err.contains("allowed_topics"), "{err}");
    }

    #[test]
    fn overrides_apply_in_order_file_env_flags() {
        let dir = std::env::temp_dir().join(format!("esc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "[ingest]\nmax_connections = 5\nmax_fetch_events = 7\n").unwrap();
        let env = vec![
            ("ESC__INGEST__MAX_CONNECTIONS".to_string(), "6".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::load(Some(&path), env, &["ingest.listen=127.0.0.1:0".to_string()]).unwrap();
        assert_eq!(c.ingest.max_connections, 6);
        assert_eq!(c.ingest.max_fetch_events, 7);
        assert_eq!(c.ingest.listen.port(), 0);
        let err = Config::load(None, vec![], &["ingest.nope=1".to_string()]).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        let err = Config::load(None, vec![], &["garbage".to_string()]).unwrap_err().to_string();
        assert!(err.contains("section.key=value"), "{err}");
        let err = Config::load(Some(&dir.join("missing.toml")), vec![], &[]).unwrap_err().to_string();
        assert!(err.contains("missing.toml"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn topic_sections_parse_and_bad_ones_are_refused_with_their_line() {
        let text = "[topics.default]\nmax_events = 100\n\n[topics.\"orders\"]\nmax_bytes = 4096\n\
                    discard = \"new\"\n\n[topics.\"audit.*\"]\nmax_age_ms = \"7d\"\n";
        let s = Config::from_toml(text).unwrap().topic_settings();
        assert_eq!(s.default.max_events, Some(100));
        assert_eq!(s.limits_for("orders").max_bytes, Some(4096));
        assert_eq!(s.limits_for("orders").discard, crate::node::Discard::New);
        assert_eq!(s.limits_for("audit.login").max_age_ms, Some(7 * 86_400_000));
        assert_eq!(s.limits_for("other"), &s.default);
        let err =
            Config::from_toml("[topics.\"orders\"]\nmax_bytes = 5\nmax_evnts = 3\n").unwrap_err().to_string();
        assert!(err.contains("max_evnts") && err.contains("line 3"), "{err}");
        let err = Config::from_toml("[topics.x]\nmax_age_ms = \"3 weeks\"\n").unwrap_err().to_string();
        assert!(err.contains("topics") && err.contains("unknown unit"), "{err}");
        let err = Config::from_toml("[topics.x]\ndiscard = \"oldest\"\n").unwrap_err().to_string();
        assert!(err.contains("oldest"), "{err}");
        let err = Config::from_toml("[topics.\"a*b\"]\nmax_events = 1\n").unwrap_err().to_string();
        assert!(err.contains("only allowed at the end"), "{err}");
        let err = Config::from_toml("[topics.x]\nmax_events = 0\n").unwrap_err().to_string();
        assert!(err.contains("at least 1"), "{err}");
    }

    /// The `section.key` names the documentation mentions (file names such as `node.toml` aside).
    fn documented_keys(text: &str) -> Vec<String> {
        const SECTIONS: [&str; 6] = ["node.", "ingest.", "dedup.", "cluster.", "log.", "pipeline."];
        let key_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.';
        let mut keys = Vec::new();
        for (i, _) in text.char_indices() {
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || "_./:-".contains(c)) {
                continue;
            }
            let rest = &text[i..];
            if SECTIONS.iter().any(|s| rest.starts_with(s)) {
                let end = rest.find(|c| !key_char(c)).unwrap_or(rest.len());
                let key = rest[..end].trim_end_matches('.');
                let file = ["toml", "rs", "md", "log", "pid"].iter().any(|x| key.ends_with(&format!(".{x}")));
                if key.contains('.') && !file {
                    keys.push(key.to_string());
                }
            }
        }
        keys
    }

    /// Every setting the documentation names by `section.key` is one `esc serve` knows: a key
    /// renamed or removed in the code fails here until the page says the new name.
    #[test]
    fn every_key_the_docs_name_exists() {
        let docs = [
            ("README.md", include_str!("../README.md")),
            ("docs/operations.md", include_str!("../docs/operations.md")),
            ("docs/security.md", include_str!("../docs/security.md")),
            ("docs/protocol.md", include_str!("../docs/protocol.md")),
            ("docs/design.md", include_str!("../docs/design.md")),
        ];
        let mut checked = 0;
        for (page, text) in docs {
            for key in documented_keys(text) {
                // A value of the wrong type is refused too, but never as an unknown field.
                let err = Config::load(None, vec![], &[format!("{key}=\"doc-check\"")]).err();
                let msg = err.map(|e| e.to_string()).unwrap_or_default();
                assert!(
                    !msg.contains("unknown field"),
                    "{page} names `{key}`, which is not a setting: {msg}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 40, "the scan found the documented keys ({checked})");
        let err = Config::load(None, vec![], &["cluster.topic_segment_byts=1".into()]).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "a misspelt key is caught: {err}");
        assert_eq!(
            documented_keys("see `cluster.segment_bytes`, node.toml and x.cluster.y"),
            ["cluster.segment_bytes"]
        );
    }

    #[test]
    fn topic_patterns() {
        let mut i = IngestConfig::default();
        assert!(i.topic_allowed("anything"));
        i.allowed_topics = vec!["payment".into(), "sensor/*".into()];
        assert!(i.topic_allowed("payment"));
        assert!(i.topic_allowed("sensor/temperature"));
        assert!(!i.topic_allowed("payments"));
        assert!(!i.topic_allowed("sensor"));
    }
}
