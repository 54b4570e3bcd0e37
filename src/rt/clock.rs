//! `NodeClock`: a node's own view of time, which the simulator can step and skew.
//!
//! Every node reads time through its `NodeClock`: protocol timers (election, heartbeat, batch
//! windows, control loop) use the *monotonic* reading, and event timestamps written by a leader use
//! the *wall* reading. The clock is built on the runtime's monotonic time (simulated under
//! madsim) with two knobs the simulator turns:
//!
//! * a **drift rate** in parts per million: local time runs `(1 + ppm / 1e6)` times as fast as
//!   real time (both readings and sleeps are affected);
//! * a wall-clock **offset** that can be stepped forward or back (like an NTP step). Stepping never
//!   moves the monotonic reading.
//!
//! Replicated state never depends on a follower's `NodeClock`; the leader stamps time into entries.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::time::Instant;

/// Drift rates are bounded so local time always moves forward: at most ±50% (500,000 ppm).
pub const MAX_DRIFT_PPM: i64 = 500_000;

/// A node's clock. Cheap to clone; clones share one state, so a simulator holding a clone can
/// skew the node's clock while the node runs.
#[derive(Clone, Debug)]
pub struct NodeClock {
    state: Arc<Mutex<ClockState>>,
}

/// The pure arithmetic of a skewed clock, separate from the runtime so it can be unit-tested.
#[derive(Clone, Debug, PartialEq)]
pub struct ClockState {
    /// Real (runtime) instant of the last re-anchoring.
    anchor_real: Instant,
    /// Local monotonic nanoseconds at `anchor_real`.
    anchor_local_ns: u128,
    /// Local time runs `(1_000_000 + drift_ppm) / 1_000_000` times as fast as real time.
    drift_ppm: i64,
    /// Unix time in nanoseconds that corresponds to local monotonic zero.
    wall_base_ns: i128,
    /// Stepped wall-clock offset in nanoseconds.
    wall_offset_ns: i128,
}

impl ClockState {
    /// A clock whose monotonic reading is zero and whose wall reading is `wall_base_ns` at `real`.
    pub fn new(real: Instant, wall_base_ns: i128) -> Self {
        ClockState { anchor_real: real, anchor_local_ns: 0, drift_ppm: 0, wall_base_ns, wall_offset_ns: 0 }
    }

    /// Local monotonic time (since the clock was made) at real instant `real`.
    pub fn mono_at(&self, real: Instant) -> Duration {
        let real_ns = real.saturating_duration_since(self.anchor_real).as_nanos();
        let scaled = real_ns * (1_000_000 + self.drift_ppm) as u128 / 1_000_000;
        nanos_to_duration(self.anchor_local_ns + scaled)
    }

    /// Wall time, in Unix nanoseconds, at real instant `real` (may be negative only in tests that
    /// step far back).
    pub fn wall_ns_at(&self, real: Instant) -> i128 {
        self.wall_base_ns + self.mono_at(real).as_nanos() as i128 + self.wall_offset_ns
    }

    /// Changes the drift rate from `real` on; readings before `real` are unchanged.
    pub fn set_drift_ppm(&mut self, real: Instant, ppm: i64) {
        assert!((-MAX_DRIFT_PPM..=MAX_DRIFT_PPM).contains(&ppm), "drift {ppm} ppm outside ±{MAX_DRIFT_PPM}");
        let local = self.mono_at(real).as_nanos();
        if real > self.anchor_real {
            self.anchor_real = real;
        }
        self.anchor_local_ns = local;
        self.drift_ppm = ppm;
    }

    /// Steps the wall clock by `delta_ns` (negative steps it back). Monotonic time is unaffected.
    pub fn step_wall(&mut self, delta_ns: i128) {
        self.wall_offset_ns += delta_ns;
    }

    /// The real duration that passes while local time advances by `local`.
    pub fn real_for_local(&self, local: Duration) -> Duration {
        let ns = local.as_nanos() * 1_000_000 / (1_000_000 + self.drift_ppm) as u128;
        // Round up so a sleep never ends before its local deadline.
        nanos_to_duration(ns + 1)
    }

    /// Current drift rate in ppm.
    pub fn drift_ppm(&self) -> i64 {
        self.drift_ppm
    }

    /// Current stepped wall offset in nanoseconds.
    pub fn wall_offset_ns(&self) -> i128 {
        self.wall_offset_ns
    }
}

fn nanos_to_duration(ns: u128) -> Duration {
    let ns = u64::try_from(ns).unwrap_or(u64::MAX);
    Duration::from_nanos(ns)
}

impl NodeClock {
    /// A clock with no skew, starting now. Its wall time starts at the runtime's wall clock
    /// (simulated under madsim).
    pub fn new() -> Self {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
        Self::with_wall_base(wall)
    }

    /// A clock whose wall reading starts at `unix_ns`.
    pub fn with_wall_base(unix_ns: i128) -> Self {
        NodeClock { state: Arc::new(Mutex::new(ClockState::new(Instant::now(), unix_ns))) }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut ClockState) -> T) -> T {
        // A poisoned clock lock only means another thread panicked mid-read; the state is plain
        // data and still consistent.
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Local monotonic time since this clock was made.
    pub fn mono(&self) -> Duration {
        let now = Instant::now();
        self.with_state(|s| s.mono_at(now))
    }

    /// Wall time in Unix nanoseconds (0 if the clock was stepped before the epoch).
    pub fn wall_unix_ns(&self) -> u64 {
        let now = Instant::now();
        let ns = self.with_state(|s| s.wall_ns_at(now));
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }

    /// Wall time in Unix milliseconds.
    pub fn wall_unix_ms(&self) -> u64 {
        self.wall_unix_ns() / 1_000_000
    }

    /// Sleeps until local time has advanced by `local`.
    pub async fn sleep(&self, local: Duration) {
        let real = self.with_state(|s| s.real_for_local(local));
        tokio::time::sleep(real).await;
    }

    /// Sleeps until the local monotonic reading reaches `deadline` (returns at once if past).
    pub async fn sleep_until(&self, deadline: Duration) {
        let now = self.mono();
        if deadline > now {
            self.sleep(deadline - now).await;
        }
    }

    /// Sets the drift rate (simulator knob). Panics outside ±[`MAX_DRIFT_PPM`].
    pub fn set_drift_ppm(&self, ppm: i64) {
        let now = Instant::now();
        self.with_state(|s| s.set_drift_ppm(now, ppm));
    }

    /// Steps the wall clock (simulator knob); negative steps it back.
    pub fn step_wall(&self, delta: i128) {
        self.with_state(|s| s.step_wall(delta));
    }

    /// Current drift in ppm.
    pub fn drift_ppm(&self) -> i64 {
        self.with_state(|s| s.drift_ppm())
    }

    /// Current stepped wall offset in nanoseconds.
    pub fn wall_offset_ns(&self) -> i128 {
        self.with_state(|s| s.wall_offset_ns())
    }
}

impl Default for NodeClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> (Instant, ClockState) {
        let t0 = Instant::now();
        (t0, ClockState::new(t0, 1_000_000_000_000))
    }

    #[test]
    fn no_drift_tracks_real_time() {
        let (t0, c) = base();
        assert_eq!(c.mono_at(t0), Duration::ZERO);
        assert_eq!(c.mono_at(t0 + Duration::from_secs(3)), Duration::from_secs(3));
        assert_eq!(c.wall_ns_at(t0 + Duration::from_millis(5)), 1_000_000_000_000 + 5_000_000);
    }

    #[test]
    fn positive_drift_runs_fast_and_negative_slow() {
        let (t0, mut c) = base();
        c.set_drift_ppm(t0, 100_000); // +10%
        assert_eq!(c.mono_at(t0 + Duration::from_secs(10)), Duration::from_secs(11));
        let (t0, mut c) = base();
        c.set_drift_ppm(t0, -250_000); // -25%
        assert_eq!(c.mono_at(t0 + Duration::from_secs(4)), Duration::from_secs(3));
    }

    #[test]
    fn changing_drift_keeps_earlier_readings_and_continuity() {
        let (t0, mut c) = base();
        let t1 = t0 + Duration::from_secs(10);
        let before = c.mono_at(t1);
        c.set_drift_ppm(t1, 500_000);
        assert_eq!(c.mono_at(t1), before, "re-anchoring must not jump");
        assert_eq!(c.mono_at(t1 + Duration::from_secs(2)), Duration::from_secs(13));
        c.set_drift_ppm(t1 + Duration::from_secs(2), 0);
        assert_eq!(c.mono_at(t1 + Duration::from_secs(4)), Duration::from_secs(15));
    }

    #[test]
    fn wall_step_moves_wall_but_never_monotonic() {
        let (t0, mut c) = base();
        let t = t0 + Duration::from_secs(1);
        let mono = c.mono_at(t);
        let wall = c.wall_ns_at(t);
        c.step_wall(-30_000_000_000);
        assert_eq!(c.mono_at(t), mono);
        assert_eq!(c.wall_ns_at(t), wall - 30_000_000_000);
        c.step_wall(60_000_000_000);
        assert_eq!(c.wall_ns_at(t), wall + 30_000_000_000);
    }

    #[test]
    fn sleep_conversion_inverts_drift() {
        let (t0, mut c) = base();
        c.set_drift_ppm(t0, 100_000);
        let real = c.real_for_local(Duration::from_millis(1100));
        // Rounded up by at most one nanosecond.
        assert!(
            real >= Duration::from_millis(1000)
                && real <= Duration::from_millis(1000) + Duration::from_nanos(1)
        );
        // After sleeping that real duration, local time has advanced at least the local amount.
        assert!(c.mono_at(t0 + real) >= Duration::from_millis(1100));
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn drift_beyond_bound_is_refused() {
        let (t0, mut c) = base();
        c.set_drift_ppm(t0, -1_000_000);
    }

    #[test]
    fn readings_before_anchor_saturate() {
        let (t0, mut c) = base();
        c.set_drift_ppm(t0 + Duration::from_secs(5), 0);
        // A real instant before the anchor reads as the anchor, never earlier.
        assert_eq!(c.mono_at(t0), Duration::from_secs(5));
    }
}
