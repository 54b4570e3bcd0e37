//! EventStreamCore: an event-streaming engine built as a deterministic simulation testbed.
//!
//! Data flows one way: [`wire`] → [`ingest`] → [`node`] (propose) → [`raft`] (commit) → [`node`]
//! (apply: dedup, append to topic log, ack) → pipeline (route, process) → consumers. Everything on
//! that path reaches the runtime only through [`rt`], so the same code runs on real sockets and
//! inside the madsim simulator.

pub mod bench;
pub mod client;
pub mod config;
pub mod consumers;
mod cursor;
pub mod event;
pub mod fdlimit;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod metrics;
pub mod node;
pub mod pipeline;
pub mod raft;
pub mod record;
pub mod rt;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
pub mod transport;
pub mod wal;
pub mod wire;
pub mod zoo;
