//! Tunables of one Raft core, checked by [`RaftConfig::validate`].

use super::types::NodeId;

/// How linearizable reads are confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOnlyOption {
    /// ReadIndex: every read waits for a heartbeat round acknowledged by a quorum. Safe under any
    /// clock behaviour.
    Safe,
    /// Lease reads: the leader serves reads without a round while a quorum acknowledged it within
    /// the last election timeout, shortened by the drift bound. Correct only if no two nodes' tick
    /// rates differ by more than `max_clock_drift_ppm` parts per million. Requires `check_quorum`.
    LeaseBased {
        /// The clock drift bound this option assumes, in parts per million.
        max_clock_drift_ppm: u32,
    },
}

/// Configuration of one core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    /// This node's id (never 0).
    pub id: NodeId,
    /// Base election timeout in ticks; the real timeout is drawn from `[election_tick, 2 * election_tick)`.
    pub election_tick: u32,
    /// Ticks between leader heartbeats; must be below `election_tick`.
    pub heartbeat_tick: u32,
    /// Append messages in flight to one follower in replicate state (pipelining bound).
    pub max_inflight_appends: usize,
    /// Most entries in one append message.
    pub max_entries_per_append: usize,
    /// Most payload bytes in one append message (always at least one entry is sent).
    pub max_append_bytes: usize,
    /// Run a pre-vote round before a real election (§9.6 of the dissertation).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for an election timeout steps down, and followers
    /// that heard from a leader within the election timeout ignore vote requests (leader lease).
    pub check_quorum: bool,
    /// How reads are confirmed.
    pub read_only: ReadOnlyOption,
    /// Size of one InstallSnapshot chunk in bytes.
    pub snapshot_chunk_bytes: usize,
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Node id 0 is reserved for "none".
    #[error("node id must not be 0")]
    ZeroId,
    /// Heartbeats must come more often than elections.
    #[error("heartbeat_tick ({heartbeat}) must be at least 1 and below election_tick ({election})")]
    Timing {
        /// Configured heartbeat ticks.
        heartbeat: u32,
        /// Configured election ticks.
        election: u32,
    },
    /// A limit that must be positive is 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// Lease reads rely on check-quorum.
    #[error("lease-based reads require check_quorum")]
    LeaseWithoutCheckQuorum,
    /// The drift bound leaves no usable lease.
    #[error("max_clock_drift_ppm {0} leaves no usable lease (must be below 500000)")]
    DriftTooLarge(u32),
}

impl RaftConfig {
    /// Sensible defaults for node `id`: election 10 ticks, heartbeat 2, pre-vote and check-quorum on.
    pub fn new(id: NodeId) -> Self {
        RaftConfig {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            max_inflight_appends: 64,
            max_entries_per_append: 1024,
            max_append_bytes: 1 << 20,
            pre_vote: true,
            check_quorum: true,
            read_only: ReadOnlyOption::Safe,
            snapshot_chunk_bytes: 64 * 1024,
        }
    }

    /// Checks that the configuration can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.heartbeat_tick == 0 || self.heartbeat_tick >= self.election_tick {
            return Err(ConfigError::Timing { heartbeat: self.heartbeat_tick, election: self.election_tick });
        }
        if self.max_inflight_appends == 0 {
            return Err(ConfigError::Zero("max_inflight_appends"));
        }
        if self.max_entries_per_append == 0 {
            return Err(ConfigError::Zero("max_entries_per_append"));
        }
        if self.max_append_bytes == 0 {
            return Err(ConfigError::Zero("max_append_bytes"));
        }
        if self.snapshot_chunk_bytes == 0 {
            return Err(ConfigError::Zero("snapshot_chunk_bytes"));
        }
        if let ReadOnlyOption::LeaseBased { max_clock_drift_ppm } = self.read_only {
            if !self.check_quorum {
                return Err(ConfigError::LeaseWithoutCheckQuorum);
            }
            if max_clock_drift_ppm >= 500_000 {
                return Err(ConfigError::DriftTooLarge(max_clock_drift_ppm));
            }
        }
        Ok(())
    }

    /// Ticks a lease lasts from the moment its heartbeat round was sent: the election timeout
    /// shortened by the drift bound, minus one tick for the tick granularity. `None` in safe mode.
    pub fn lease_ticks(&self) -> Option<u64> {
        match self.read_only {
            ReadOnlyOption::Safe => None,
            ReadOnlyOption::LeaseBased { max_clock_drift_ppm } => {
                let et = u64::from(self.election_tick);
                let shortened = et * (1_000_000 - u64::from(max_clock_drift_ppm)) / 1_000_000;
                Some(shortened.saturating_sub(1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(RaftConfig::new(1).validate(), Ok(()));
    }

    #[test]
    fn validate_refuses_bad_configs() {
        let ok = RaftConfig::new(1);
        assert_eq!(RaftConfig { id: 0, ..ok.clone() }.validate(), Err(ConfigError::ZeroId));
        assert!(matches!(
            RaftConfig { heartbeat_tick: 10, ..ok.clone() }.validate(),
            Err(ConfigError::Timing { .. })
        ));
        assert!(matches!(
            RaftConfig { heartbeat_tick: 0, ..ok.clone() }.validate(),
            Err(ConfigError::Timing { .. })
        ));
        assert_eq!(
            RaftConfig { max_inflight_appends: 0, ..ok.clone() }.validate(),
            Err(ConfigError::Zero("max_inflight_appends"))
        );
        assert_eq!(
            RaftConfig { max_entries_per_append: 0, ..ok.clone() }.validate(),
            Err(ConfigError::Zero("max_entries_per_append"))
        );
        assert_eq!(
            RaftConfig { max_append_bytes: 0, ..ok.clone() }.validate(),
            Err(ConfigError::Zero("max_append_bytes"))
        );
        assert_eq!(
            RaftConfig { snapshot_chunk_bytes: 0, ..ok.clone() }.validate(),
            Err(ConfigError::Zero("snapshot_chunk_bytes"))
        );
        let lease = ReadOnlyOption::LeaseBased { max_clock_drift_ppm: 1000 };
        assert_eq!(
            RaftConfig { read_only: lease, check_quorum: false, ..ok.clone() }.validate(),
            Err(ConfigError::LeaseWithoutCheckQuorum)
        );
        let drift = ReadOnlyOption::LeaseBased { max_clock_drift_ppm: 600_000 };
        assert_eq!(
            RaftConfig { read_only: drift, ..ok.clone() }.validate(),
            Err(ConfigError::DriftTooLarge(600_000))
        );
    }

    #[test]
    fn lease_is_shorter_than_election_timeout_by_the_drift_bound() {
        let mut c = RaftConfig::new(1);
        c.election_tick = 100;
        assert_eq!(c.lease_ticks(), None);
        c.read_only = ReadOnlyOption::LeaseBased { max_clock_drift_ppm: 100_000 };
        assert_eq!(c.lease_ticks(), Some(89));
        c.read_only = ReadOnlyOption::LeaseBased { max_clock_drift_ppm: 0 };
        assert_eq!(c.lease_ticks(), Some(99));
    }
}
