//! The topic table and the routing rule: effective priority = max(client, table), unlisted topics
//! use the configured default, and the effective priority picks the class.

use std::collections::BTreeMap;
use std::fmt;

use crate::event::Priority;

use super::config::PressureLevel;

/// A processing class; each has one queue and one processor task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Realtime = 0,
    Transactional = 1,
    Batch = 2,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Realtime, Class::Transactional, Class::Batch];

    /// The class of an effective priority: CRITICAL/HIGH realtime, MEDIUM/LOW transactional, BATCH batch.
    pub fn of(p: Priority) -> Class {
        match p {
            Priority::Critical | Priority::High => Class::Realtime,
            Priority::Medium | Priority::Low => Class::Transactional,
            Priority::Batch => Class::Batch,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::Realtime => "realtime",
            Class::Transactional => "transactional",
            Class::Batch => "batch",
        }
    }

    pub(crate) fn idx(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Exact topics and `prefix/*` patterns mapped to priorities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    exact: BTreeMap<String, Priority>,
    /// (prefix without the `*`, priority), longest prefix first.
    prefixes: Vec<(String, Priority)>,
    default: Priority,
}

/// Where one event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub priority: Priority,
    pub class: Class,
    /// True if a HIGH event was downgraded to MEDIUM under realtime pressure.
    pub downgraded: bool,
}

impl RoutingTable {
    /// Builds a table from config entries (`name` or `prefix/*`).
    pub fn new(topics: &BTreeMap<String, Priority>, default: Priority) -> Self {
        let mut exact = BTreeMap::new();
        let mut prefixes = Vec::new();
        for (pat, p) in topics {
            match pat.strip_suffix('*') {
                Some(prefix) => prefixes.push((prefix.to_string(), *p)),
                None => {
                    exact.insert(pat.clone(), *p);
                }
            }
        }
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        RoutingTable { exact, prefixes, default }
    }

    /// The table's priority for `topic`: exact entry, else longest prefix, else the default.
    pub fn table_priority(&self, topic: &str) -> Priority {
        if let Some(p) = self.exact.get(topic) {
            return *p;
        }
        self.prefixes
            .iter()
            .find(|(pre, _)| topic.starts_with(pre.as_str()))
            .map_or(self.default, |(_, p)| *p)
    }

    /// Effective priority and class of an event with the client's priority, under `pressure`
    /// (HIGH is downgraded to MEDIUM at or above `downgrade_at`; CRITICAL never is).
    pub fn route(
        &self,
        topic: &str,
        client: Priority,
        pressure: PressureLevel,
        downgrade_at: PressureLevel,
    ) -> Route {
        let mut priority = client.max(self.table_priority(topic));
        let downgraded = priority == Priority::High && pressure >= downgrade_at;
        if downgraded {
            priority = Priority::Medium;
        }
        Route { priority, class: Class::of(priority), downgraded }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    fn table(default: Priority) -> RoutingTable {
        let topics =
            [("sensor/*", High), ("sensor/critical/*", Critical), ("payment", Medium), ("logs", Batch)]
                .into_iter()
                .map(|(t, p)| (t.to_string(), p))
                .collect();
        RoutingTable::new(&topics, default)
    }

    fn class(t: &RoutingTable, topic: &str, client: Priority) -> (Priority, Class) {
        let r = t.route(topic, client, PressureLevel::Normal, PressureLevel::High);
        (r.priority, r.class)
    }

    #[test]
    fn each_priority_maps_to_its_class() {
        assert_eq!(Class::of(Critical), Class::Realtime);
        assert_eq!(Class::of(High), Class::Realtime);
        assert_eq!(Class::of(Medium), Class::Transactional);
        assert_eq!(Class::of(Low), Class::Transactional);
        assert_eq!(Class::of(Batch), Class::Batch);
    }

    #[test]
    fn exact_entries_win_over_prefixes_and_longest_prefix_wins() {
        let t = table(Medium);
        assert_eq!(t.table_priority("payment"), Medium);
        assert_eq!(t.table_priority("sensor/temperature"), High);
        assert_eq!(t.table_priority("sensor/critical/boiler"), Critical);
        assert_eq!(t.table_priority("payments"), Medium, "unlisted: the default");
        assert_eq!(t.table_priority("sensor"), Medium, "`sensor/*` does not match `sensor`");
    }

    #[test]
    fn effective_priority_is_the_higher_of_client_and_table() {
        let t = table(Medium);
        // Table raises the client.
        assert_eq!(class(&t, "sensor/x", Low), (High, Class::Realtime));
        // Client raises the table.
        assert_eq!(class(&t, "logs", Critical), (Critical, Class::Realtime));
        assert_eq!(class(&t, "logs", Batch), (Batch, Class::Batch));
        assert_eq!(class(&t, "logs", Low), (Low, Class::Transactional));
        assert_eq!(class(&t, "payment", Batch), (Medium, Class::Transactional));
        assert_eq!(class(&t, "sensor/critical/a", Batch), (Critical, Class::Realtime));
    }

    /// Original defect: unlisted topics could never be LOW or BATCH by accident (a fixed MEDIUM
    /// floor). With a configurable default they follow the client when the default is BATCH.
    #[test]
    fn unlisted_topics_follow_the_configured_default() {
        let medium = table(Medium);
        assert_eq!(class(&medium, "unlisted", Batch), (Medium, Class::Transactional));
        assert_eq!(class(&medium, "unlisted", Low), (Medium, Class::Transactional));
        let batch = table(Batch);
        assert_eq!(class(&batch, "unlisted", Batch), (Batch, Class::Batch));
        assert_eq!(class(&batch, "unlisted", Low), (Low, Class::Transactional));
        assert_eq!(class(&batch, "unlisted", High), (High, Class::Realtime));
        let low = table(Low);
        assert_eq!(class(&low, "unlisted", Batch), (Low, Class::Transactional));
    }

    #[test]
    fn pressure_downgrades_high_but_never_critical() {
        let t = table(Medium);
        for (pressure, downgraded) in [
            (PressureLevel::Normal, false),
            (PressureLevel::Elevated, false),
            (PressureLevel::High, true),
            (PressureLevel::Critical, true),
        ] {
            let r = t.route("sensor/x", Low, pressure, PressureLevel::High);
            assert_eq!(r.downgraded, downgraded, "{pressure:?}");
            assert_eq!(r.class, if downgraded { Class::Transactional } else { Class::Realtime });
            let c = t.route("sensor/critical/x", Low, pressure, PressureLevel::High);
            assert_eq!((c.priority, c.class, c.downgraded), (Critical, Class::Realtime, false));
        }
    }
}
