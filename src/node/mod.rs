//! The nodes that order and store events behind [`crate::service::EventService`]: [`LocalNode`]
//! (one node, in memory) and [`ClusterNode`] (a member of the Raft-replicated log), with the
//! replicated state machine ([`EventLogState`]) they share.

pub mod cluster;
pub mod command;
pub mod consumers;
pub mod dedup;
pub mod handled_keys;
pub mod local;
pub mod state;

pub use cluster::{
    CatchUpCounters, ClusterError, ClusterNode, ClusterOptions, ClusterTask, RaftObserver, RoundView,
    ScrubCounters,
};
pub use dedup::{DedupConfig, DedupWindow};
pub use local::LocalNode;
pub use state::EventLogState;
pub use state::retention::{
    Discard, OutOfRange, TopicConfig, TopicFull, TopicLimits, TopicSettings, TopicSummary,
};
