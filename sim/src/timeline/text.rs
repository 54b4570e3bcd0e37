//! The plain-text rendering, for terminals and failure reports.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Event, Ms, Timeline, colon, fmt_drift, fmt_time, line, until};

impl Timeline {
    /// A short plain-text rendering, one line per event in time order. Runs of commit updates
    /// with no other event between them are folded into one line: the last index of each node
    /// that advanced, at the time of the last update.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let title = if self.title.is_empty() { "timeline" } else { &self.title };
        let names: Vec<String> = (0..self.row_count()).map(|n| self.node_name(n)).collect();
        let _ = writeln!(out, "{title}");
        let _ = writeln!(out, "nodes: {}; end {}", names.join(", "), fmt_time(self.horizon()));
        // node → (time of the last update, index, updates folded)
        let mut pending: BTreeMap<usize, (Ms, u64, usize)> = BTreeMap::new();
        let flush = |out: &mut String, pending: &mut BTreeMap<usize, (Ms, u64, usize)>| {
            let folded = std::mem::take(pending);
            let Some(at) = folded.values().map(|p| p.0).max() else { return };
            let n: usize = folded.values().map(|p| p.2).sum();
            let more = if n > 1 { format!(" ({n} updates)") } else { String::new() };
            if let [(node, (_, index, _))] = folded.iter().collect::<Vec<_>>()[..] {
                line(out, at, &self.node_name(*node), &format!("commit index {index}{more}"));
            } else {
                // Several nodes advanced: one line for all of them.
                let each: Vec<String> =
                    folded.iter().map(|(node, p)| format!("{} {}", self.node_name(*node), p.1)).collect();
                line(out, at, "*", &format!("commit index {}{more}", each.join(", ")));
            }
        };
        for i in self.time_order() {
            let e = &self.events[i];
            if let Event::Commit { at, node, index } = e {
                let p = pending.entry(*node).or_insert((*at, *index, 0));
                *p = (*at, p.1.max(*index), p.2 + 1);
                continue;
            }
            flush(&mut out, &mut pending);
            let who = e.node().map(|n| self.node_name(n)).unwrap_or_else(|| "*".to_string());
            let what = match e {
                Event::Role { role, term, .. } => format!("{}, term {term}", role.name()),
                Event::Span { from, to, kind, label, .. } => {
                    format!("{} {}{}", kind.name(), until(*from, *to), colon(label))
                }
                Event::NetSpan { from, to, label } => {
                    format!("network {}{}", until(*from, *to), colon(label))
                }
                Event::Mark { label, .. } => format!("mark: {label}"),
                Event::Drift { ppm, .. } => format!("clock drift {} ({ppm:+} ppm)", fmt_drift(*ppm)),
                Event::Failure { label, .. } => format!("FAILED {label}"),
                Event::Phase { lane, from, to, label } => {
                    format!("{lane} {}{}", until(*from, *to), colon(label))
                }
                Event::Commit { .. } => unreachable!("folded above"),
            };
            line(&mut out, e.at(), &who, &what);
        }
        flush(&mut out, &mut pending);
        out
    }
}
