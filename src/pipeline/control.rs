//! The control loop's decision core: load in, health level out, one step at a time, each step
//! needing `hysteresis` consecutive evaluations that call for it. Pure, so every transition is
//! unit-tested without a runtime; the pipeline runs it on the node clock and acts on its level.

use std::fmt;

use super::config::ControlConfig;

/// Health of the pipeline, and what the pipeline does about it:
///
/// * `Healthy`: nothing.
/// * `Degraded`: the batch class is shed (BATCH publishes refused with a retry-after).
/// * `Critical`: also, producers of transactional events are told to back off.
/// * `Emergency`: only CRITICAL events are admitted, and the batch class is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    Healthy = 0,
    Degraded = 1,
    Critical = 2,
    Emergency = 3,
}

impl Health {
    pub const ALL: [Health; 4] = [Health::Healthy, Health::Degraded, Health::Critical, Health::Emergency];

    pub fn name(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Critical => "critical",
            Health::Emergency => "emergency",
        }
    }

    pub(crate) fn from_u8(b: u8) -> Health {
        Health::ALL.get(usize::from(b)).copied().unwrap_or(Health::Emergency)
    }

    fn up(self) -> Health {
        Health::from_u8((self as u8 + 1).min(3))
    }

    fn down(self) -> Health {
        Health::from_u8((self as u8).saturating_sub(1))
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One change of level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
    pub load_pct: u32,
}

/// The state machine: thresholds, the current level and the run of evaluations pointing away from it.
#[derive(Debug, Clone)]
pub struct Controller {
    cfg: ControlConfig,
    level: Health,
    ups: u32,
    downs: u32,
}

impl Controller {
    pub fn new(cfg: ControlConfig) -> Self {
        Controller { cfg, level: Health::Healthy, ups: 0, downs: 0 }
    }

    pub fn level(&self) -> Health {
        self.level
    }

    /// The level the load alone calls for.
    pub fn target(&self, load_pct: u32) -> Health {
        let c = &self.cfg;
        if load_pct >= c.emergency_pct {
            Health::Emergency
        } else if load_pct >= c.critical_pct {
            Health::Critical
        } else if load_pct >= c.degraded_pct {
            Health::Degraded
        } else {
            Health::Healthy
        }
    }

    /// One evaluation: moves at most one step, after `hysteresis` consecutive calls for it.
    pub fn evaluate(&mut self, load_pct: u32) -> Option<Transition> {
        let target = self.target(load_pct);
        let from = self.level;
        if target > self.level {
            self.downs = 0;
            self.ups += 1;
            if self.ups >= self.cfg.hysteresis {
                self.ups = 0;
                self.level = self.level.up();
            }
        } else if target < self.level {
            self.ups = 0;
            self.downs += 1;
            if self.downs >= self.cfg.hysteresis {
                self.downs = 0;
                self.level = self.level.down();
            }
        } else {
            self.ups = 0;
            self.downs = 0;
        }
        (self.level != from).then_some(Transition { from, to: self.level, load_pct })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl(h: u32) -> Controller {
        Controller::new(ControlConfig { hysteresis: h, ..ControlConfig::default() })
    }

    #[test]
    fn every_step_up_and_down_needs_n_consecutive_evaluations() {
        let mut c = ctl(3);
        // Up: healthy -> degraded -> critical -> emergency, three evaluations each.
        let mut seen = Vec::new();
        for _ in 0..9 {
            if let Some(t) = c.evaluate(100) {
                seen.push((t.from, t.to));
            }
        }
        assert_eq!(
            seen,
            vec![
                (Health::Healthy, Health::Degraded),
                (Health::Degraded, Health::Critical),
                (Health::Critical, Health::Emergency)
            ]
        );
        assert_eq!(c.evaluate(100), None, "no level above emergency");
        // Down, one step per three evaluations.
        let mut seen = Vec::new();
        for _ in 0..9 {
            if let Some(t) = c.evaluate(0) {
                seen.push((t.from, t.to));
            }
        }
        assert_eq!(
            seen,
            vec![
                (Health::Emergency, Health::Critical),
                (Health::Critical, Health::Degraded),
                (Health::Degraded, Health::Healthy)
            ]
        );
    }

    #[test]
    fn an_interrupted_run_starts_over() {
        let mut c = ctl(3);
        assert_eq!(c.evaluate(70), None);
        assert_eq!(c.evaluate(70), None);
        assert_eq!(c.evaluate(10), None, "one healthy reading resets the run");
        assert_eq!(c.evaluate(70), None);
        assert_eq!(c.evaluate(70), None);
        assert_eq!(c.evaluate(70).map(|t| t.to), Some(Health::Degraded));
        // At the target: both runs reset.
        assert_eq!(c.evaluate(10), None);
        assert_eq!(c.evaluate(65), None);
        assert_eq!(c.evaluate(10), None);
        assert_eq!(c.evaluate(10), None);
        assert_eq!(c.level(), Health::Degraded);
        assert_eq!(c.evaluate(10).map(|t| t.to), Some(Health::Healthy));
    }

    #[test]
    fn thresholds_pick_the_target() {
        let c = ctl(1);
        assert_eq!(c.target(59), Health::Healthy);
        assert_eq!(c.target(60), Health::Degraded);
        assert_eq!(c.target(80), Health::Critical);
        assert_eq!(c.target(95), Health::Emergency);
    }

    #[test]
    fn hysteresis_one_moves_each_evaluation() {
        let mut c = ctl(1);
        assert_eq!(c.evaluate(99).map(|t| t.to), Some(Health::Degraded));
        assert_eq!(c.evaluate(99).map(|t| t.to), Some(Health::Critical));
        assert_eq!(c.evaluate(70).map(|t| t.to), Some(Health::Degraded));
        assert_eq!(c.evaluate(70), None);
    }
}
