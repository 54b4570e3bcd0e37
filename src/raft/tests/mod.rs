//! Tests of the Raft core: paper rules (§5, §6, and the dissertation's extensions), features,
//! cluster scenarios, codec and checker, and property tests over schedules.

mod ceiling;
mod checker;
mod cluster;
mod codec;
mod features;
mod harness;
mod paper;
mod props;
