//! Simulated disk latency per member (issue 15): each member's log disk gets a write and an fsync
//! cost and now and then a spike, drawn from the seed. The member's driver waits that simulated
//! time out between a round's write and its fsync and before it sends or acks anything
//! (`Disk::take_latency`), so a slow fsync delays acks and votes, requests pile up meanwhile and
//! the next round commits them together (group commit), and a crash can land between a write and
//! its fsync.

use eventstreamcore::rt::{self, DiskLatency, NodeRng, SimDisk};
use rand::Rng;

/// What one member's log disk costs: a plan's `disk_latency` holds one per member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberDiskLatency {
    /// Each append, write or truncate, in microseconds.
    pub write_us: u64,
    /// Each fsync (file or directory), in microseconds.
    pub fsync_us: u64,
    /// This many operations per thousand take `spike_ms` longer.
    pub spike_per_mille: u32,
    pub spike_ms: u64,
    /// Seeds the stream spikes are drawn from (plans are data: the run replays from them).
    #[serde(with = "toml_u64")]
    pub seed: u64,
}

/// A full-range `u64` in a TOML plan: TOML integers stop at `i64::MAX`, so a larger value is
/// written as a decimal string (half of all drawn seeds; a seed file holding one as an integer
/// could be printed but not read back). Either form is read.
mod toml_u64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        if i64::try_from(*v).is_ok() { s.serialize_u64(*v) } else { s.serialize_str(&v.to_string()) }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Int(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Int(v) => Ok(v),
            Repr::Text(t) => t.parse().map_err(|_| D::Error::custom(format!("not a u64: {t:?}"))),
        }
    }
}

impl MemberDiskLatency {
    /// Draws one member's disk: a fast NVMe drive, a SATA SSD or a networked (cloud) volume.
    pub fn draw(rng: &mut NodeRng) -> Self {
        let (write_us, fsync_us) = match rng.random_range(0..3) {
            0 => (rng.random_range(2..20), rng.random_range(30..300)),
            1 => (rng.random_range(10..60), rng.random_range(300..3_000)),
            _ => (rng.random_range(50..300), rng.random_range(2_000..12_000)),
        };
        MemberDiskLatency {
            write_us,
            fsync_us,
            spike_per_mille: rng.random_range(0..=20),
            spike_ms: rng.random_range(10..400),
            seed: rng.random(),
        }
    }

    /// Makes `disk` take this long.
    pub fn apply(&self, disk: &SimDisk) {
        let latency = DiskLatency {
            write_us: self.write_us,
            fsync_us: self.fsync_us,
            spike_per_mille: self.spike_per_mille,
            spike_us: self.spike_ms * 1_000,
        };
        disk.set_latency(latency, rt::rng_from_seed(self.seed));
    }
}

/// Draws the members' disk latencies (most seeds get them; a quarter keep instant disks) from
/// `rng`, a stream of its own.
pub fn draw(rng: &mut NodeRng, nodes: usize) -> Vec<MemberDiskLatency> {
    if rng.random_bool(0.75) {
        (0..nodes).map(|_| MemberDiskLatency::draw(rng)).collect()
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Plan {
        disk_latency: Vec<MemberDiskLatency>,
    }

    #[test]
    fn seeds_beyond_the_toml_integer_range_round_trip() {
        let disk =
            |seed| MemberDiskLatency { write_us: 1, fsync_us: 2, spike_per_mille: 3, spike_ms: 4, seed };
        let plan = Plan { disk_latency: vec![disk(u64::MAX), disk(i64::MAX as u64), disk(0)] };
        let text = toml::to_string(&plan).unwrap();
        assert_eq!(toml::from_str::<Plan>(&text).unwrap(), plan, "{text}");
        assert!(text.contains("seed = \"18446744073709551615\""), "{text}");
        assert!(text.contains("seed = 9223372036854775807"), "small seeds stay integers: {text}");
    }
}
