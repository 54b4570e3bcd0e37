//! The SVG rendering: one row per node over simulated time (role bars, span overlays, commit
//! plot, marks, header), then the grid, network bands, cluster-wide marks, axis and legend.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::layout::Layout;
use super::{
    CHAR_W, CHAR_W_SMALL, Event, FAIL_COLOUR, HALO, LANE_H, MARK_COLOUR, MAX_COMMIT_POINTS, Ms, NET_COLOUR,
    PHASE_COLOUR, PHASE_H, RIGHT_MARGIN, ROW_H, RoleMark, SpanKind, Timeline, WIDTH, colon, esc, f1,
    fmt_drift, fmt_time, label_x, range, text_w, thin_steps, tick_label,
};

impl Timeline {
    /// Renders a standalone SVG document: one row per node over simulated time.
    pub fn to_svg(&self) -> String {
        let mut drift: BTreeMap<usize, i64> = BTreeMap::new();
        for e in &self.events {
            if let Event::Drift { node, ppm } = e {
                drift.insert(*node, *ppm);
            }
        }
        let mut svg = Svg {
            tl: self,
            l: Layout::new(self),
            order: self.time_order(),
            max_commit: self
                .events
                .iter()
                .filter_map(|e| if let Event::Commit { index, .. } = e { Some(*index) } else { None })
                .max()
                .unwrap_or(0),
            drift,
            kinds_used: Vec::new(),
            roles_used: Vec::new(),
            // The body is written first because the document's height depends on the legend's wrap.
            body: String::with_capacity(16 * 1024),
        };
        for r in 0..svg.l.rows {
            svg.row(r);
        }
        for k in 0..svg.l.phase_lanes.len() {
            svg.phase_lane(k);
        }
        svg.grid();
        svg.net_bands();
        svg.cluster_marks();
        svg.failures();
        svg.axis();
        let height = svg.legend();
        svg.document(height)
    }
}

/// One rendering under way: the layout, what the rows need, and the body written so far.
struct Svg<'a> {
    tl: &'a Timeline,
    l: Layout<'a>,
    /// Event indices in time order.
    order: Vec<usize>,
    /// The highest commit index of any node (the commit plots' common scale).
    max_commit: u64,
    /// Each node's last clock drift.
    drift: BTreeMap<usize, i64>,
    kinds_used: Vec<SpanKind>,
    roles_used: Vec<RoleMark>,
    body: String,
}

/// The row being drawn.
struct Row {
    r: usize,
    top: f64,
    bottom: f64,
    name: String,
}

impl Svg<'_> {
    /// A node's row: role bars, span overlays, commit plot, marks, header.
    fn row(&mut self, r: usize) {
        let l = &self.l;
        let top = l.row_top(r);
        let row = Row { r, top, bottom: top + ROW_H, name: self.tl.node_name(r) };
        let _ = writeln!(self.body, r#"<g class="row" data-row="{r}">"#);
        let _ = writeln!(
            self.body,
            r##"<rect x="{}" y="{}" width="{}" height="{ROW_H}" fill="#fafafa" stroke="#ccc" stroke-width="0.5"/>"##,
            f1(l.x0),
            f1(top),
            f1(l.x1 - l.x0)
        );
        self.role_bars(&row);
        self.span_overlays(&row);
        self.commit_plot(&row);
        self.node_marks(&row);
        self.row_header(&row);
    }

    /// Role bars: one per run of the same (role, term).
    fn role_bars(&mut self, row: &Row) {
        let l = &self.l;
        let Row { r, top, ref name, .. } = *row;
        let mut segs: Vec<(Ms, RoleMark, u64)> = Vec::new();
        for &i in &self.order {
            if let Event::Role { at, node, role, term } = &self.tl.events[i]
                && *node == r
                && segs.last().is_none_or(|&(_, ro, te)| (ro, te) != (*role, *term))
            {
                segs.push((*at, *role, *term));
            }
        }
        for (k, &(from, role, term)) in segs.iter().enumerate() {
            let to = segs.get(k + 1).map_or(l.horizon, |n| n.0);
            let (a, b) = (l.xs(from), l.xs(to));
            let min_w = if role == RoleMark::Follower { 0.0 } else { 1.5 };
            let w = (b - a).max(min_w);
            if w <= 0.0 {
                continue;
            }
            if !self.roles_used.contains(&role) {
                self.roles_used.push(role);
            }
            let what = format!("{}, term {term}", role.name());
            let _ = write!(
                self.body,
                r#"<rect x="{}" y="{}" width="{}" height="{ROW_H}" fill="{}"><title>{}: {} ({})</title></rect>"#,
                f1(a),
                f1(top),
                f1(w),
                role.colour(),
                esc(name),
                what,
                range(from, Some(to))
            );
            if role == RoleMark::Leader {
                let t2 = format!("t{term}");
                let t1 = format!("term {term}");
                if let Some(t) = [what.as_str(), &t1, &t2].into_iter().find(|t| text_w(t, CHAR_W) + 6.0 <= w)
                {
                    let _ = write!(
                        self.body,
                        r##"<text x="{}" y="{}" fill="#fff" font-weight="bold">{t}</text>"##,
                        f1(a + 3.0),
                        f1(top + 13.0)
                    );
                }
            }
            self.body.push('\n');
        }
    }

    /// Span overlays.
    fn span_overlays(&mut self, row: &Row) {
        let l = &self.l;
        let Row { r, top, bottom, ref name } = *row;
        for e in &self.tl.events {
            if let Event::Span { node, from, to, kind, label } = e
                && *node == r
            {
                if !self.kinds_used.contains(kind) {
                    self.kinds_used.push(*kind);
                }
                let (a, b) = (l.xs(*from), l.xs(to.unwrap_or(l.horizon)));
                let w = (b - a).max(2.0);
                let _ = write!(
                    self.body,
                    r#"<rect class="span" x="{}" y="{}" width="{}" height="{ROW_H}" {}><title>{}: {}{} ({})</title></rect>"#,
                    f1(a),
                    f1(top),
                    f1(w),
                    kind.fill(),
                    esc(name),
                    kind.name(),
                    esc(&colon(label)),
                    range(*from, *to)
                );
                let shown = if label.is_empty() { kind.name() } else { label.as_str() };
                if text_w(shown, CHAR_W_SMALL) + 6.0 <= w {
                    let halo = if *kind == SpanKind::Down { "" } else { HALO };
                    let _ = write!(
                        self.body,
                        r#"<text x="{}" y="{}" font-size="10" text-anchor="middle" fill="{}"{halo}>{}</text>"#,
                        f1(a + w / 2.0),
                        f1(bottom - 6.0),
                        kind.text_fill(),
                        esc(shown)
                    );
                }
                self.body.push('\n');
            }
        }
    }

    /// Commit index as a step plot, thinned to at most [`MAX_COMMIT_POINTS`] points.
    fn commit_plot(&mut self, row: &Row) {
        let l = &self.l;
        let Row { r, bottom, ref name, .. } = *row;
        let max_commit = self.max_commit;
        if max_commit > 0 {
            let commits: Vec<(Ms, u64)> = self
                .order
                .iter()
                .filter_map(|&i| match &self.tl.events[i] {
                    Event::Commit { at, node, index } if *node == r => Some((*at, *index)),
                    _ => None,
                })
                .collect();
            if !commits.is_empty() {
                let ys = |idx: u64| bottom - 3.0 - (idx as f64 / max_commit as f64) * (ROW_H - 6.0);
                let pts = thin_steps(&commits, l.horizon, (MAX_COMMIT_POINTS - 2) / 2);
                let last = commits.iter().map(|c| c.1).max().unwrap_or(0);
                let mut p = format!("{},{}", f1(l.x0), f1(ys(0)));
                let mut prev = 0;
                for &(t, idx) in &pts {
                    let _ = write!(p, " {},{} {},{}", f1(l.xs(t)), f1(ys(prev)), f1(l.xs(t)), f1(ys(idx)));
                    prev = idx;
                }
                let _ = write!(p, " {},{}", f1(l.x1), f1(ys(prev)));
                let _ = writeln!(
                    self.body,
                    r##"<polyline class="commit" data-row="{r}" points="{p}" fill="none" stroke="#111" stroke-opacity="0.75" stroke-width="1.2"><title>{}: commit index, last {last} (scale 0–{max_commit})</title></polyline>"##,
                    esc(name)
                );
            }
        }
    }

    /// Marks on this node.
    fn node_marks(&mut self, row: &Row) {
        let l = &self.l;
        let Row { r, top, bottom, ref name } = *row;
        let mut label_end = f64::MIN;
        for &i in &self.order {
            if let Event::Mark { at, node: Some(node), label } = &self.tl.events[i]
                && *node == r
            {
                let x = l.xs(*at);
                let _ = write!(
                    self.body,
                    r#"<g class="mark"><title>{}: {} (at {})</title><line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" stroke="{MARK_COLOUR}" stroke-dasharray="2,2"/><polygon points="{},{} {},{} {},{}" fill="{MARK_COLOUR}"/>"#,
                    esc(name),
                    esc(label),
                    fmt_time(*at),
                    f1(x - 5.0),
                    f1(top - 8.0),
                    f1(x + 5.0),
                    f1(top - 8.0),
                    f1(x),
                    f1(top),
                    x = f1(x),
                    top = f1(top),
                    bottom = f1(bottom)
                );
                let lw = text_w(label, CHAR_W_SMALL);
                let lx = label_x(x + 7.0, label);
                if lx > label_end {
                    let _ = write!(
                        self.body,
                        r#"<text x="{}" y="{}" font-size="10" fill="{MARK_COLOUR}">{}</text>"#,
                        f1(lx),
                        f1(top - 3.0),
                        esc(label)
                    );
                    label_end = lx + lw + 4.0;
                }
                self.body.push_str("</g>\n");
            }
        }
    }

    /// Row header: name, drift, last commit.
    fn row_header(&mut self, row: &Row) {
        let Row { r, top, ref name, .. } = *row;
        let mid = top + ROW_H / 2.0;
        let _ = write!(
            self.body,
            r#"<g class="row-header"><text x="10" y="{}"><tspan font-size="13" font-weight="bold">{}</tspan>"#,
            f1(mid - 2.0),
            esc(name)
        );
        if let Some(&ppm) = self.drift.get(&r) {
            let _ = write!(self.body, r##"<tspan dx="8" fill="#555">drift {}</tspan>"##, fmt_drift(ppm));
        }
        self.body.push_str("</text>");
        let last = self.tl.events.iter().filter_map(|e| match e {
            Event::Commit { node, index, .. } if *node == r => Some(*index),
            _ => None,
        });
        if let Some(last) = last.max() {
            let _ = write!(
                self.body,
                r##"<text x="10" y="{}" font-size="10" fill="#666">commit {last}</text>"##,
                f1(mid + 12.0)
            );
        }
        self.body.push_str("</g>\n</g>\n");
    }

    /// A phase lane below the member rows (e.g. the client storm): its name, a bar per phase.
    fn phase_lane(&mut self, k: usize) {
        let l = &self.l;
        let (lane, top) = (l.phase_lanes[k], l.phase_top(k));
        let _ = writeln!(
            self.body,
            r##"<g class="phase-lane" data-lane="{}"><rect x="{}" y="{}" width="{}" height="{PHASE_H}" fill="#fafafa" stroke="#ccc" stroke-width="0.5"/><text x="10" y="{}" font-size="11" fill="{PHASE_COLOUR}">{}</text>"##,
            esc(lane),
            f1(l.x0),
            f1(top),
            f1(l.x1 - l.x0),
            f1(top + 15.0),
            esc(lane)
        );
        for e in &self.tl.events {
            let Event::Phase { lane: name, from, to, label } = e else { continue };
            if name != lane {
                continue;
            }
            let (a, b) = (l.xs(*from), l.xs(to.unwrap_or(l.horizon)));
            let w = (b - a).max(2.0);
            let _ = write!(
                self.body,
                r#"<rect class="phase" x="{}" y="{}" width="{}" height="{}" fill="{PHASE_COLOUR}" fill-opacity="0.3" stroke="{PHASE_COLOUR}" stroke-width="0.8"><title>{}{} ({})</title></rect>"#,
                f1(a),
                f1(top + 2.0),
                f1(w),
                f1(PHASE_H - 4.0),
                esc(lane),
                esc(&colon(label)),
                range(*from, *to)
            );
            if text_w(label, CHAR_W_SMALL) + 6.0 <= w {
                let _ = write!(
                    self.body,
                    r##"<text x="{}" y="{}" font-size="10" fill="#111"{HALO}>{}</text>"##,
                    f1(a + 3.0),
                    f1(top + 15.0),
                    esc(label)
                );
            }
            self.body.push('\n');
        }
        self.body.push_str("</g>\n");
    }

    /// Checker failures: a red line through every row (a dot on the member it concerns), the
    /// label on top.
    fn failures(&mut self) {
        let l = &self.l;
        for (k, &(at, node, label)) in l.fails.iter().enumerate() {
            let x = l.xs(at);
            let lane_y = l.fail_top + l.fail_lanes[k] as f64 * LANE_H;
            let _ = write!(
                self.body,
                r#"<g class="failure"><title>{} (at {})</title><line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="{FAIL_COLOUR}" stroke-width="2"/><polygon points="{},{} {},{} {},{}" fill="{FAIL_COLOUR}"/><text x="{}" y="{}" font-size="10" fill="{FAIL_COLOUR}">{}</text>"#,
                esc(label),
                fmt_time(at),
                f1(lane_y + LANE_H - 2.0),
                f1(l.plot_bottom),
                f1(x - 5.0),
                f1(lane_y + 2.0),
                f1(x + 5.0),
                f1(lane_y + 2.0),
                f1(x),
                f1(lane_y + LANE_H - 2.0),
                f1(label_x(x + 7.0, label)),
                f1(lane_y + LANE_H - 3.0),
                esc(label),
                x = f1(x)
            );
            if let Some(n) = node.filter(|n| *n < l.rows) {
                let _ = write!(
                    self.body,
                    r##"<circle cx="{}" cy="{}" r="5" fill="{FAIL_COLOUR}" stroke="#fff"/>"##,
                    f1(x),
                    f1(l.row_top(n) + ROW_H / 2.0)
                );
            }
            self.body.push_str("</g>\n");
        }
    }

    /// Faint grid over the rows.
    fn grid(&mut self) {
        let l = &self.l;
        for &t in &l.ticks {
            let x = f1(l.xs(t));
            let _ = writeln!(
                self.body,
                r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#000" stroke-opacity="0.1"/>"##,
                f1(l.plot_top),
                f1(l.plot_bottom)
            );
        }
    }

    /// Network bands across all rows, label on top.
    fn net_bands(&mut self) {
        let l = &self.l;
        for (k, &(from, to, label)) in l.net.iter().enumerate() {
            let lane_y = l.net_top + l.net_lanes[k] as f64 * LANE_H;
            let (a, b) = (l.xs(from), l.xs(to));
            let w = (b - a).max(2.0);
            let _ = writeln!(
                self.body,
                r#"<g class="net"><title>network: {} ({})</title><rect x="{}" y="{}" width="{}" height="{}" fill="{NET_COLOUR}" fill-opacity="0.12" stroke="{NET_COLOUR}" stroke-opacity="0.35" stroke-width="0.5"/><text x="{}" y="{}" font-size="10" fill="{NET_COLOUR}">{}</text></g>"#,
                esc(label),
                range(from, Some(to)),
                f1(a),
                f1(lane_y + 1.0),
                f1(w),
                f1(l.plot_bottom - lane_y - 1.0),
                f1(label_x(a + 3.0, label)),
                f1(lane_y + LANE_H - 3.0),
                esc(label)
            );
        }
    }

    /// Cluster-wide marks: triangle on top of the rows, dashed line through all of them.
    fn cluster_marks(&mut self) {
        let l = &self.l;
        for (k, &(at, label)) in l.cmarks.iter().enumerate() {
            let x = l.xs(at);
            let lane_y = l.cmark_top + l.cmark_lanes[k] as f64 * LANE_H;
            let _ = writeln!(
                self.body,
                r#"<g class="mark"><title>{} (at {})</title><line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="{MARK_COLOUR}" stroke-dasharray="3,3"/><polygon points="{},{} {},{} {},{}" fill="{MARK_COLOUR}"/><text x="{}" y="{}" font-size="10" fill="{MARK_COLOUR}">{}</text></g>"#,
                esc(label),
                fmt_time(at),
                f1(lane_y + LANE_H - 2.0),
                f1(l.plot_bottom),
                f1(x - 5.0),
                f1(lane_y + 2.0),
                f1(x + 5.0),
                f1(lane_y + 2.0),
                f1(x),
                f1(lane_y + LANE_H - 2.0),
                f1(label_x(x + 7.0, label)),
                f1(lane_y + LANE_H - 3.0),
                esc(label),
                x = f1(x)
            );
        }
    }

    /// Time axis.
    fn axis(&mut self) {
        let l = &self.l;
        let _ = writeln!(
            self.body,
            r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#444"/>"##,
            f1(l.x0),
            f1(l.axis_y),
            f1(l.x1),
            f1(l.axis_y)
        );
        let step = if l.ticks.len() > 1 { l.ticks[1] - l.ticks[0] } else { l.horizon };
        for &t in &l.ticks {
            let x = f1(l.xs(t));
            let _ = writeln!(
                self.body,
                r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#444"/><text x="{x}" y="{}" font-size="10" text-anchor="middle" fill="#333">{}</text>"##,
                f1(l.axis_y),
                f1(l.axis_y + 4.0),
                f1(l.axis_y + 15.0),
                tick_label(t, step)
            );
        }
        let _ = writeln!(
            self.body,
            r##"<text x="{}" y="{}" font-size="10" fill="#666">simulated time</text>"##,
            f1(10.0),
            f1(l.axis_y + 15.0)
        );
    }

    /// Legend: roles always in a fixed order, then whatever else appears. Returns the document's height.
    fn legend(&mut self) -> f64 {
        let l = &self.l;
        let mut legend: Vec<(String, &str)> = Vec::new();
        for role in [RoleMark::Leader, RoleMark::Candidate, RoleMark::PreCandidate, RoleMark::Follower] {
            if role != RoleMark::PreCandidate || self.roles_used.contains(&role) {
                legend.push((
                    format!(r#"<rect width="16" height="10" fill="{}"/>"#, role.colour()),
                    role.name(),
                ));
            }
        }
        for kind in SpanKind::ALL {
            if self.kinds_used.contains(&kind) {
                legend.push((format!(r#"<rect width="16" height="10" {}/>"#, kind.fill()), kind.name()));
            }
        }
        if !l.net.is_empty() {
            legend.push((
                format!(r#"<rect width="16" height="10" fill="{NET_COLOUR}" fill-opacity="0.2"/>"#),
                "network fault",
            ));
        }
        if self.max_commit > 0 {
            legend.push((
                r##"<polyline points="0,9 6,9 6,5 11,5 11,1 16,1" fill="none" stroke="#111" stroke-width="1.2"/>"##
                    .to_string(),
                "commit index",
            ));
        }
        if self.tl.events.iter().any(|e| matches!(e, Event::Mark { .. })) {
            legend.push((format!(r#"<polygon points="3,0 13,0 8,9" fill="{MARK_COLOUR}"/>"#), "event"));
        }
        if !l.phase_lanes.is_empty() {
            legend.push((
                format!(r#"<rect width="16" height="10" fill="{PHASE_COLOUR}" fill-opacity="0.3"/>"#),
                "storm clients",
            ));
        }
        if !l.fails.is_empty() {
            legend.push((
                format!(r#"<polygon points="3,0 13,0 8,9" fill="{FAIL_COLOUR}"/>"#),
                "checker failed",
            ));
        }
        let mut lx = l.x0;
        let mut ly = l.axis_y + 34.0;
        let _ = writeln!(self.body, r#"<g class="legend">"#);
        for (swatch, label) in &legend {
            let w = 22.0 + text_w(label, CHAR_W) + 16.0;
            if lx + w > WIDTH - RIGHT_MARGIN && lx > l.x0 {
                lx = l.x0;
                ly += 18.0;
            }
            let _ = writeln!(
                self.body,
                r##"<g transform="translate({},{})">{swatch}<text x="22" y="9" fill="#333">{label}</text></g>"##,
                f1(lx),
                f1(ly - 9.0)
            );
            lx += w;
        }
        self.body.push_str("</g>\n");
        (ly + 14.0).ceil()
    }

    /// The document around the body.
    fn document(self, height: f64) -> String {
        let l = &self.l;
        let mut s = String::with_capacity(self.body.len() + 2048);
        let title = if self.tl.title.is_empty() { "timeline" } else { &self.tl.title };
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, "<title>{}</title>", esc(title));
        s.push_str(concat!(
            "<defs>",
            r##"<pattern id="esc-hatch-down" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#222" fill-opacity="0.85"/><line x1="0" y1="0" x2="0" y2="6" stroke="#000" stroke-width="3"/></pattern>"##,
            r##"<pattern id="esc-hatch-part" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)"><rect width="6" height="6" fill="#e53935" fill-opacity="0.25"/><line x1="0" y1="0" x2="0" y2="6" stroke="#c62828" stroke-opacity="0.7" stroke-width="2"/></pattern>"##,
            "</defs>\n"
        ));
        let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#fff"/>"##);
        let _ = writeln!(
            s,
            r##"<text x="10" y="24" font-size="16" font-weight="bold" fill="#111">{}</text>"##,
            esc(title)
        );
        let _ = writeln!(
            s,
            r##"<text x="{}" y="24" font-size="11" text-anchor="end" fill="#666">{} nodes · {} simulated</text>"##,
            f1(WIDTH - RIGHT_MARGIN),
            l.rows,
            fmt_time(l.horizon)
        );
        s.push_str(&self.body);
        s.push_str("</svg>\n");
        s
    }
}
