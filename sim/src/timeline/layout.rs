//! Where things go in the SVG: the time scale, the lanes of network bands, failure and
//! cluster-wide mark labels above the rows, the rows, the phase lanes (storms) below them, the axis.

use super::{
    CHAR_W_SMALL, Event, HEADER_W, LANE_H, Ms, PHASE_H, RIGHT_MARGIN, ROW_GAP, ROW_H, Timeline, WIDTH,
    assign_lanes, label_x, text_w, ticks,
};

/// The geometry of one rendering, computed once from the timeline.
pub(super) struct Layout<'a> {
    pub horizon: Ms,
    pub rows: usize,
    /// Left and right ends of the plot.
    pub x0: f64,
    pub x1: f64,
    /// Network bands (from, to, label), each with its label lane.
    pub net: Vec<(Ms, Ms, &'a str)>,
    pub net_lanes: Vec<usize>,
    pub net_top: f64,
    /// Checker failures (at, node, label), each with its label lane.
    pub fails: Vec<(Ms, Option<usize>, &'a str)>,
    pub fail_lanes: Vec<usize>,
    pub fail_top: f64,
    /// Cluster-wide marks (at, label), each with its label lane.
    pub cmarks: Vec<(Ms, &'a str)>,
    pub cmark_lanes: Vec<usize>,
    pub cmark_top: f64,
    /// The phase lanes' names (storms), drawn below the member rows.
    pub phase_lanes: Vec<&'a str>,
    pub plot_top: f64,
    pub plot_bottom: f64,
    pub axis_y: f64,
    pub ticks: Vec<Ms>,
}

impl<'a> Layout<'a> {
    /// Vertical layout: title, network labels, failure labels, cluster-wide mark labels, rows,
    /// phase lanes, axis (the legend follows the axis).
    pub fn new(tl: &'a Timeline) -> Self {
        let horizon = tl.horizon();
        let mut l = Layout {
            horizon,
            rows: tl.row_count(),
            x0: HEADER_W,
            x1: WIDTH - RIGHT_MARGIN,
            net: Vec::new(),
            net_lanes: Vec::new(),
            net_top: 36.0,
            fails: Vec::new(),
            fail_lanes: Vec::new(),
            fail_top: 0.0,
            cmarks: Vec::new(),
            cmark_lanes: Vec::new(),
            cmark_top: 0.0,
            phase_lanes: tl.phase_lanes(),
            plot_top: 0.0,
            plot_bottom: 0.0,
            axis_y: 0.0,
            ticks: ticks(horizon),
        };
        let mut y = l.net_top + l.place_net(tl) as f64 * LANE_H;
        l.fail_top = y;
        l.fails = tl
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Failure { at, node, label } => Some((*at, *node, label.as_str())),
                _ => None,
            })
            .collect();
        let (fail_lanes, n) = l.point_lanes(l.fails.iter().map(|&(t, _, lb)| (t, lb)));
        l.fail_lanes = fail_lanes;
        y += n as f64 * LANE_H;
        l.cmark_top = y;
        l.cmarks = tl
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Mark { at, node: None, label } => Some((*at, label.as_str())),
                _ => None,
            })
            .collect();
        let (cmark_lanes, n) = l.point_lanes(l.cmarks.iter().copied());
        l.cmark_lanes = cmark_lanes;
        y += n as f64 * LANE_H;
        l.plot_top = y + 2.0;
        l.plot_bottom = match l.phase_lanes.len() {
            0 => l.row_top(l.rows.max(1) - 1) + ROW_H,
            n => l.phase_top(n - 1) + PHASE_H,
        };
        l.axis_y = l.plot_bottom + 6.0;
        l
    }

    /// Collects the network bands and gives each label a lane; returns how many lanes.
    fn place_net(&mut self, tl: &'a Timeline) -> usize {
        let horizon = self.horizon;
        self.net = tl
            .events
            .iter()
            .filter_map(|e| match e {
                Event::NetSpan { from, to, label } => Some((*from, to.unwrap_or(horizon), label.as_str())),
                _ => None,
            })
            .collect();
        let extents: Vec<(f64, f64)> = self
            .net
            .iter()
            .map(|&(f, t, lb)| {
                let lx = label_x(self.xs(f) + 3.0, lb);
                (self.xs(f).min(lx), self.xs(t).max(lx + text_w(lb, CHAR_W_SMALL)))
            })
            .collect();
        let (lanes, n) = assign_lanes(&extents);
        self.net_lanes = lanes;
        n
    }

    /// Label lanes for point events (a marker at `t`, its label to the right).
    fn point_lanes(&self, points: impl Iterator<Item = (Ms, &'a str)>) -> (Vec<usize>, usize) {
        let extents: Vec<(f64, f64)> = points
            .map(|(t, lb)| {
                let lx = label_x(self.xs(t) + 7.0, lb);
                ((self.xs(t) - 5.0).min(lx), lx + text_w(lb, CHAR_W_SMALL))
            })
            .collect();
        assign_lanes(&extents)
    }

    /// The x of simulated time `t` (clamped to the horizon).
    pub fn xs(&self, t: Ms) -> f64 {
        self.x0 + (t.min(self.horizon) as f64) * (self.x1 - self.x0) / self.horizon as f64
    }

    /// The top of row `r`.
    pub fn row_top(&self, r: usize) -> f64 {
        self.plot_top + ROW_GAP + r as f64 * (ROW_H + ROW_GAP)
    }

    /// The top of phase lane `k` (below the last member row).
    pub fn phase_top(&self, k: usize) -> f64 {
        self.row_top(self.rows.max(1) - 1) + ROW_H + 8.0 + k as f64 * (PHASE_H + 4.0)
    }
}
