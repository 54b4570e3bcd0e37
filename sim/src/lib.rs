//! Deterministic simulation harness for EventStreamCore (built with `--cfg madsim`): scenarios,
//! the history recorder, checkers and the seed runner behind `cargo simtest` and `cargo sim`.
//!
//! The checkers and the history are plain code and are unit-tested in both builds; scenarios and
//! the runner need the simulator.

pub mod check;
pub mod commit_watch;
pub mod derived;
pub mod history;
#[cfg(madsim)]
pub mod peer_storm;
pub mod raft_watch;
pub mod timeline;

#[cfg(madsim)]
pub mod plans;
#[cfg(madsim)]
pub mod runner;
#[cfg(madsim)]
pub mod scenarios;
#[cfg(madsim)]
pub mod shrink;
#[cfg(madsim)]
pub mod storm;
#[cfg(madsim)]
pub mod zoo;
