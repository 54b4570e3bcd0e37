//! The runtime seam inside the simulator: entropy and time are decided by the seed.
#![cfg(madsim)]
#![allow(clippy::disallowed_methods)] // each run gets a fresh OS thread, outside the simulation

use eventstreamcore::rt;
use rand::RngCore;

fn draw(seed: u64) -> (u64, u64) {
    std::thread::spawn(move || {
        let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        rt.block_on(async {
            let a = rt::node_rng().next_u64();
            let clock = rt::NodeClock::new();
            (a, clock.wall_unix_ns())
        })
    })
    .join()
    .unwrap()
}

#[test]
fn node_rng_and_wall_clock_follow_the_seed() {
    assert_eq!(draw(1), draw(1));
    assert_eq!(draw(2), draw(2));
    assert_ne!(draw(1).0, draw(2).0, "different seeds must give different node RNG seeds");
}
