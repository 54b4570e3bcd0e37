//! Per-node randomness: one `ChaCha8Rng` per node, seeded once from entropy.
//!
//! The seed comes from rand 0.9's thread RNG, whose OS entropy (getrandom 0.3) madsim
//! intercepts: inside the simulator the same run seed gives the same node seeds, and in production
//! it is real OS entropy. Never use rand 0.8's `thread_rng`/`from_entropy` (getrandom 0.2 escapes
//! the simulator). A node passes its `NodeRng` (or RNGs split from it) to whatever needs jitter.

use rand::{Rng, SeedableRng};
pub use rand_chacha::ChaCha8Rng as NodeRng;

/// A fresh node RNG seeded from the runtime's entropy (deterministic under madsim).
pub fn node_rng() -> NodeRng {
    let mut seed = [0u8; 32];
    rand::rng().fill(&mut seed);
    NodeRng::from_seed(seed)
}

/// A node RNG from an explicit seed (tests, the simulator's fault plans, benches).
pub fn rng_from_seed(seed: u64) -> NodeRng {
    NodeRng::seed_from_u64(seed)
}

/// Splits an independent child RNG off `parent` (e.g. one per subsystem), so adding draws in one
/// subsystem does not reshuffle another's.
pub fn split(parent: &mut NodeRng) -> NodeRng {
    let mut seed = [0u8; 32];
    parent.fill(&mut seed);
    NodeRng::from_seed(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn explicit_seed_is_reproducible() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = rng_from_seed(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = rng_from_seed(7);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        let c = rng_from_seed(8).next_u64();
        assert_ne!(a[0], c);
    }

    #[test]
    fn split_children_are_independent_of_later_parent_draws() {
        let mut p1 = rng_from_seed(1);
        let mut c1 = split(&mut p1);
        let mut p2 = rng_from_seed(1);
        let mut c2 = split(&mut p2);
        p2.next_u64(); // extra draw on the parent only
        assert_eq!(c1.next_u64(), c2.next_u64());
    }

    #[cfg(not(madsim))]
    #[test]
    fn entropy_seeded_rngs_differ_in_production() {
        assert_ne!(node_rng().next_u64(), node_rng().next_u64());
    }
}
