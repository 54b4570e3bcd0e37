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
    pub seed: u64,
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
