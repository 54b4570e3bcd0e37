//! Where things go in the SVG: the time scale, the lanes of network bands and cluster-wide mark
//! labels above the rows, the rows, the axis.

use super::{
    CHAR_W_SMALL, Event, HEADER_W, LANE_H, Ms, RIGHT_MARGIN, ROW_GAP, ROW_H, Timeline, WIDTH, assign_lanes,
    label_x, text_w, ticks,
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
    /// Cluster-wide marks (at, label), each with its label lane.
    pub cmarks: Vec<(Ms, &'a str)>,
    pub cmark_lanes: Vec<usize>,
    pub cmark_top: f64,
    pub plot_top: f64,
    pub plot_bottom: f64,
    pub axis_y: f64,
    pub ticks: Vec<Ms>,
}

impl<'a> Layout<'a> {
    /// Vertical layout: title, network labels, cluster-wide mark labels, rows, axis (the legend
    /// follows the axis).
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
            cmarks: Vec::new(),
            cmark_lanes: Vec::new(),
            cmark_top: 0.0,
            plot_top: 0.0,
            plot_bottom: 0.0,
            axis_y: 0.0,
            ticks: ticks(horizon),
        };
        let mut y = l.net_top;
        l.net = tl
            .events
            .iter()
            .filter_map(|e| match e {
                Event::NetSpan { from, to, label } => Some((*from, to.unwrap_or(horizon), label.as_str())),
                _ => None,
            })
            .collect();
        let (net_lanes, n_net_lanes) = assign_lanes(
            &l.net
                .iter()
                .map(|&(f, t, lb)| {
                    let lx = label_x(l.xs(f) + 3.0, lb);
                    (l.xs(f).min(lx), l.xs(t).max(lx + text_w(lb, CHAR_W_SMALL)))
                })
                .collect::<Vec<_>>(),
        );
        l.net_lanes = net_lanes;
        y += n_net_lanes as f64 * LANE_H;
        l.cmarks = tl
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Mark { at, node: None, label } => Some((*at, label.as_str())),
                _ => None,
            })
            .collect();
        let (cmark_lanes, n_cmark_lanes) = assign_lanes(
            &l.cmarks
                .iter()
                .map(|&(t, lb)| {
                    let lx = label_x(l.xs(t) + 7.0, lb);
                    ((l.xs(t) - 5.0).min(lx), lx + text_w(lb, CHAR_W_SMALL))
                })
                .collect::<Vec<_>>(),
        );
        l.cmark_lanes = cmark_lanes;
        l.cmark_top = y;
        y += n_cmark_lanes as f64 * LANE_H;
        l.plot_top = y + 2.0;
        l.plot_bottom = l.row_top(l.rows.max(1) - 1) + ROW_H;
        l.axis_y = l.plot_bottom + 6.0;
        l
    }

    /// The x of simulated time `t` (clamped to the horizon).
    pub fn xs(&self, t: Ms) -> f64 {
        self.x0 + (t.min(self.horizon) as f64) * (self.x1 - self.x0) / self.horizon as f64
    }

    /// The top of row `r`.
    pub fn row_top(&self, r: usize) -> f64 {
        self.plot_top + ROW_GAP + r as f64 * (ROW_H + ROW_GAP)
    }
}
