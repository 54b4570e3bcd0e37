//! Sans-IO Raft consensus core.
//!
//! [`Raft`] is a plain struct: the driver feeds it [`Raft::tick`] (logical time),
//! [`Raft::step`] (messages from peers) and client calls ([`Raft::propose`],
//! [`Raft::propose_conf_change`], [`Raft::read_index`], [`Raft::transfer_leader`]), and takes its
//! effects as a [`Ready`]. The core does no I/O, reads no clock and draws randomness only from the
//! [`crate::rt::NodeRng`] it is given (election jitter).
//!
//! # Driving the core
//!
//! ```text
//! loop {
//!     feed tick() / step(msg) / propose(..) ...
//!     if raft.has_ready() {
//!         let rd = raft.ready();
//!         1. if rd.snapshot: install it durably (replaces state machine and persisted log)
//!         2. persist rd.entries durably (truncate persisted entries from rd.entries[0].index first)
//!         3. persist rd.hard_state durably
//!         4. send rd.messages          -- only after 1-3 are durable
//!         5. apply rd.committed_entries in order
//!         6. serve rd.read_states once applied >= their index
//!         7. raft.advance()            -- nothing else may be called between ready() and advance()
//!     }
//! }
//! ```
//!
//! The leader counts its own log towards a quorum only after `advance()` confirmed it durable, so a
//! single-node cluster commits one Ready after proposing.
//!
//! # Restart
//! Rebuild with [`Raft::new`] from exactly what was persisted ([`RestoredState`]): the last
//! [`HardState`], the latest [`Snapshot`] (the application's own, or one installed from
//! `Ready::snapshot`) and the entries after it. The configuration comes from the snapshot plus the
//! configuration entries in the log; `RestoredState::conf_state` is only the base when there is no
//! snapshot (the initial voters of a bootstrapped cluster, empty for a node that joins later and
//! learns the configuration from the leader). Committed entries after `RestoredState::applied`
//! are handed out again for applying, so a volatile state machine is rebuilt from the snapshot.
//! Anything not yet handed to the driver by `ready()` is lost in a crash, by design.
//!
//! # Membership
//! One server at a time ([`ConfChange`] via [`Raft::propose_conf_change`]): add a learner, let it
//! catch up, promote it to voter, or remove a node (the leader included: it steps down once the
//! removal commits, sending TimeoutNow to the most up-to-date voter). A change takes effect on each
//! node as soon as its entry is appended and is undone if the entry is truncated; the entry carries
//! the resulting configuration ([`ConfEntry`]). The leader refuses a change until it has committed
//! an entry of its term (the leader-completeness fix) and while another change is uncommitted.
//! The application need not do anything when it applies a `ConfChange` entry beyond its own
//! bookkeeping (e.g. decode the [`ConfEntry`] and connect to a new node).
//!
//! # Snapshots
//! After applying up to `i`, the application saves a snapshot durably and calls
//! [`Raft::snapshot`]`(i, data)`, then [`Raft::compact`]`(j)` for some `j <= i` to free the log
//! (keeping a tail lets slightly lagging followers catch up without a snapshot). A follower that
//! needs compacted entries receives the latest snapshot in chunks of `snapshot_chunk_bytes`, one
//! chunk in flight at a time, acknowledged by offset (lost chunks are re-sent after a heartbeat
//! answer), so no `report_snapshot` call is needed; the follower hands it to its driver as
//! `Ready::snapshot` and replication resumes with appends after it.
//!
//! # Reads
//! [`Raft::read_index`]`(ctx)` yields a [`ReadState`] once a quorum acknowledged a heartbeat
//! round sent after the request (followers forward it to the leader); serve it once the applied
//! index reaches `ReadState::index`. With [`ReadOnlyOption::LeaseBased`] the leader answers at once
//! while its lease holds (see that option for the clock assumption).

pub mod codec;
pub mod config;
mod core;
pub mod error;
pub mod log;
pub mod membership;
pub mod message;
pub mod progress;
pub mod quorum;
pub mod read_only;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod types;

#[cfg(test)]
mod tests;

pub use codec::DecodeError;
pub use config::{ConfigError, RaftConfig, ReadOnlyOption};
pub use core::{Raft, Ready, Status};
pub use error::{InitError, ProposeError, RaftError, SnapshotError};
pub use message::{Body, MAX_RECORDS_BYTES, Message, RecordsResult, RejectHint};
pub use progress::{Progress, ProgressState};
pub use types::{
    ConfChange, ConfChangeKind, ConfEntry, ConfState, Entry, EntryKind, HardState, Index, MAX_INDEX,
    MAX_SNAPSHOT_BYTES, MAX_TERM, NodeId, ReadState, RestoredState, Role, Snapshot, SnapshotMeta, SoftState,
    Term,
};
