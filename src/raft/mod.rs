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
//! Rebuild with [`Raft::new`] from exactly what was persisted: the last [`HardState`], the latest
//! [`Snapshot`] (the application's own, or one installed from `Ready::snapshot`) and the entries
//! after it ([`RestoredState`]). Committed entries after `RestoredState::applied` are handed out
//! again for applying.
//!
//! # Membership
//! One server at a time ([`ConfChange`]): add a learner, let it catch up, promote it to voter,
//! or remove a node (the leader included: it steps down once the removal commits). A change takes
//! effect when appended; the application needs to do nothing when applying a `ConfChange` entry
//! beyond its own bookkeeping (e.g. connecting to the new node, read [`Raft::conf_state`]).
//!
//! # Snapshots
//! After applying up to `i`, the application may save a snapshot and call
//! [`Raft::snapshot`]`(i, data)`, then [`Raft::compact`]`(j)` for some `j <= i` to free the log.
//! Followers that need compacted entries receive the latest snapshot in chunks.

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
pub mod testkit;
pub mod types;

#[cfg(test)]
mod tests;

pub use codec::DecodeError;
pub use config::{ConfigError, RaftConfig, ReadOnlyOption};
pub use core::{Raft, Ready, Status};
pub use error::{InitError, ProposeError, RaftError, SnapshotError};
pub use message::{Body, Message, RejectHint};
pub use progress::{Progress, ProgressState};
pub use types::{
    ConfChange, ConfChangeKind, ConfEntry, ConfState, Entry, EntryKind, HardState, Index, NodeId,
    ReadState, RestoredState, Role, Snapshot, SnapshotMeta, SoftState, Term,
};
