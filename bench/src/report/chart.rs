//! `chart.svg`: each tapwire path's TCP throughput beside its kernel counterpart's, one
//! and four streams, each bar with the rounds' min–max as an error bar and the ratio of
//! the medians above the pair. Pure: results in, SVG text out.

use std::fmt::Write as _;

use super::{ratio, PathResult, Results, RoundSample};
use crate::paths::PathKind;

const TAPWIRE_1: &str = "#1f5fa6";
const KERNEL_1: &str = "#7a8692";
const TAPWIRE_4: &str = "#7fb2e5";
const KERNEL_4: &str = "#c9d1d9";

/// One bar: a path's median of one figure and its rounds' range.
struct Bar<'r> {
    path: &'r PathResult,
    streams: u32,
    median: f64,
    min: f64,
    max: f64,
    color: &'static str,
}

impl<'r> Bar<'r> {
    fn new(path: &'r PathResult, streams: u32, color: &'static str) -> Bar<'r> {
        let (median, figure): (f64, fn(&RoundSample) -> f64) = if streams == 1 {
            (path.tcp_gbps_1, |r| r.tcp_gbps_1)
        } else {
            (path.tcp_gbps_4, |r| r.tcp_gbps_4)
        };
        let (min, max) = path
            .spread(figure)
            .map_or((median, median), |s| (s.min, s.max));
        Bar {
            path,
            streams,
            median,
            min,
            max,
            color,
        }
    }
}

/// The comparisons drawn: each tapwire path with its kernel counterpart, both measured.
fn pairs(results: &Results) -> Vec<(&PathResult, &PathResult)> {
    PathKind::REPORT_ORDER
        .into_iter()
        .filter_map(|k| Some((results.path(k)?, results.path(k.counterpart()?)?)))
        .collect()
}

/// `chart.svg` of `results`; see the module documentation.
pub fn chart_svg(results: &Results) -> String {
    let pairs = pairs(results);
    let groups: Vec<[Bar<'_>; 4]> = pairs
        .iter()
        .map(|(ours, kernel)| {
            [
                Bar::new(ours, 1, TAPWIRE_1),
                Bar::new(kernel, 1, KERNEL_1),
                Bar::new(ours, 4, TAPWIRE_4),
                Bar::new(kernel, 4, KERNEL_4),
            ]
        })
        .collect();
    let width = (90.0 + 170.0 * groups.len() as f64).max(760.0);
    let height = 420.0_f64;
    let (left, right, top, bottom) = (60.0, 20.0, 64.0, 84.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let max = groups
        .iter()
        .flatten()
        .flat_map(|b| [b.median, b.max])
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    // Headroom above the tallest error bar for its label.
    let axis_max = nice_ceiling(max * 1.08);
    let y = |v: f64| top + plot_h - (v.clamp(0.0, axis_max) / axis_max) * plot_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(svg, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">TCP throughput, \
         tapwire beside the kernel (Gbit/s, median of {} round(s); bars: min–max)</text>",
        width / 2.0,
        results.setup.rounds
    );
    for i in 0..=5 {
        let v = axis_max * f64::from(i) / 5.0;
        let yy = y(v);
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left + plot_w,
            left - 6.0,
            yy + 4.0,
            trim_number(v)
        );
    }
    let group_w = plot_w / groups.len().max(1) as f64;
    let bar_w = group_w * 0.19;
    for (i, (group, (ours, kernel))) in groups.iter().zip(&pairs).enumerate() {
        let x0 = left + group_w * i as f64 + group_w * 0.1;
        for (j, bar) in group.iter().enumerate() {
            // A gap between the 1-stream pair and the 4-stream pair.
            let x = x0 + bar_w * j as f64 + if j >= 2 { bar_w * 0.4 } else { 0.0 };
            draw_bar(&mut svg, bar, x, bar_w, &y, top + plot_h);
        }
        let centre = x0 + bar_w * 2.2;
        let shown = |a: f64, b: f64| ratio(a, b).map_or("-".into(), |r| format!("{r:.2}×"));
        let _ = writeln!(
            svg,
            "<text x=\"{centre:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">\
             1: {} · 4: {}</text>",
            top - 10.0,
            shown(ours.tcp_gbps_1, kernel.tcp_gbps_1),
            shown(ours.tcp_gbps_4, kernel.tcp_gbps_4)
        );
        let _ = writeln!(
            svg,
            "<text x=\"{centre:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
             <text x=\"{centre:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">vs {}</text>",
            top + plot_h + 18.0,
            xml_escape(&ours.name),
            top + plot_h + 33.0,
            xml_escape(&kernel.name)
        );
    }
    let ly = height - 18.0;
    for (k, (color, label)) in [
        (TAPWIRE_1, "tapwire, 1 stream"),
        (KERNEL_1, "kernel, 1 stream"),
        (TAPWIRE_4, "tapwire, 4 streams"),
        (KERNEL_4, "kernel, 4 streams"),
    ]
    .into_iter()
    .enumerate()
    {
        let x = left + 150.0 * k as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{ly:.1}\">{label}</text>",
            ly - 10.0,
            x + 16.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A bar from the axis to its median, with its min–max as an error bar.
fn draw_bar(
    svg: &mut String,
    bar: &Bar<'_>,
    x: f64,
    bar_w: f64,
    y: &dyn Fn(f64) -> f64,
    base: f64,
) {
    let top_y = y(bar.median);
    let _ = writeln!(
        svg,
        "<rect x=\"{x:.1}\" y=\"{top_y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\">\
         <title>{} {} stream{}: {:.2} Gbit/s (rounds {:.2}–{:.2})</title></rect>",
        bar_w - 2.0,
        (base - top_y).max(0.0),
        bar.color,
        xml_escape(&bar.path.name),
        bar.streams,
        if bar.streams == 1 { "" } else { "s" },
        bar.median,
        bar.min,
        bar.max
    );
    let cx = x + bar_w / 2.0 - 1.0;
    if bar.max > bar.min {
        let (y_lo, y_hi) = (y(bar.min), y(bar.max));
        let cap = bar_w * 0.2;
        let _ = writeln!(
            svg,
            "<path d=\"M{cx:.1} {y_lo:.1}V{y_hi:.1}M{:.1} {y_lo:.1}H{:.1}M{:.1} {y_hi:.1}H{:.1}\" \
             stroke=\"#222\" stroke-width=\"1.2\" fill=\"none\"/>",
            cx - cap,
            cx + cap,
            cx - cap,
            cx + cap
        );
    }
    let label_y = y(bar.median.max(bar.max)) - 4.0;
    let _ = writeln!(
        svg,
        "<text x=\"{cx:.1}\" y=\"{label_y:.1}\" text-anchor=\"middle\" font-size=\"10\">{:.1}</text>",
        bar.median
    );
}

/// The smallest of 1, 2, 5 × 10^k that is at least `v` (1 for nothing to show).
fn nice_ceiling(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * power)
}

fn trim_number(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_is_round() {
        assert_eq!(nice_ceiling(17.3), 20.0);
        assert_eq!(nice_ceiling(4.2), 5.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(xml_escape("a<b&c\""), "a&lt;b&amp;c&quot;");
        assert_eq!(trim_number(2.50), "2.5");
        assert_eq!(trim_number(20.0), "20");
    }
}
