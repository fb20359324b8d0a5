//! Pictures in the style of the paper's figures, as PNG or SVG (by the file extension), drawn with plotters:
//! the per-image reliability diagram ([`reliability_diagram`]) and the dataset reliability histogram
//! ([`dataset_reliability`]).
//!
//! Text is rasterised in pure Rust (plotters' `ab_glyph` path) with DejaVu Sans embedded in the library
//! (Bitstream Vera licence, through the `dejavu` crate), so drawing needs no system font or font library and
//! pictures look the same on every machine. Only built with the `plots` feature.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontDesc, FontFamily, FontStyle};

use super::bins::BinStats;
use super::calibration::{bin_means, reliability_heatmap, PerImage};
use crate::error::{Error, Result};

/// Width and height of one panel in pixels (the paper's 4.8 x 3.6 in at 100 dpi).
pub const PANEL: (u32, u32) = (480, 360);
/// Height of the bin-count histogram row.
pub const HIST_HEIGHT: u32 = 200;
/// Exponent of the power-law colour norm of the heat maps.
pub const GAMMA: f64 = 0.35;

/// The family the pictures ask for; the embedded DejaVu Sans is registered under it.
const FONT: &str = "sans-serif";
const GAP: RGBAColor = RGBAColor(240, 60, 60, 0.3);
const GAP_EDGE: RGBColor = RGBColor(200, 40, 40);
const BLUE: RGBColor = RGBColor(31, 119, 180);

/// Registers the embedded DejaVu Sans as plotters' `sans-serif` (once per process); false if that failed.
fn register_font() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    })
}

/// Whether text can be drawn: registers the embedded font and measures a string with it. Always true in a
/// working build (the font ships inside the library); kept so callers can check before drawing.
pub fn fonts_available() -> bool {
    register_font()
        && FontDesc::new(FontFamily::SansSerif, 12.0, FontStyle::Normal)
            .box_size("Ag")
            .is_ok()
}

/// matplotlib's `YlOrRd` (ColorBrewer, 9 anchors, linear interpolation) at `t` in [0, 1].
pub fn ylorrd(t: f64) -> RGBColor {
    const A: [(f64, f64, f64); 9] = [
        (255.0, 255.0, 204.0),
        (255.0, 237.0, 160.0),
        (254.0, 217.0, 118.0),
        (254.0, 178.0, 76.0),
        (253.0, 141.0, 60.0),
        (252.0, 78.0, 42.0),
        (227.0, 26.0, 28.0),
        (189.0, 0.0, 38.0),
        (128.0, 0.0, 38.0),
    ];
    let x = t.clamp(0.0, 1.0) * 8.0;
    let i = (x.floor() as usize).min(7);
    let f = x - i as f64;
    let (a, b) = (A[i], A[i + 1]);
    let mix = |u: f64, v: f64| (u + (v - u) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn perr(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Format {
        path: path.display().to_string(),
        message: format!("drawing failed: {e}"),
    }
}

type DrawResult = std::result::Result<(), String>;

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Renders `$draw(&root, args...)` into a PNG or SVG file chosen by the extension of `$path`.
macro_rules! render {
    ($path:expr, $size:expr, $draw:ident ( $($arg:expr),* )) => {{
        let path: &Path = $path;
        if !register_font() {
            return Err(perr(path, "the embedded font could not be loaded"));
        }
        let svg = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
        if svg {
            let root = SVGBackend::new(path, $size).into_drawing_area();
            root.fill(&WHITE).map_err(|e| perr(path, e))?;
            $draw(&root, $($arg),*).map_err(|e| perr(path, e))?;
            root.present().map_err(|e| perr(path, e))
        } else {
            let root = BitMapBackend::new(path, $size).into_drawing_area();
            root.fill(&WHITE).map_err(|e| perr(path, e))?;
            $draw(&root, $($arg),*).map_err(|e| perr(path, e))?;
            root.present().map_err(|e| perr(path, e))
        }
    }};
}

/// Bin-count bar chart (width 0.9/M per bar); log10 axis when the non-zero counts span more than 100x.
fn histogram<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    counts: &[f64],
    title: &str,
) -> DrawResult {
    let m = counts.len();
    let nz: Vec<f64> = counts.iter().copied().filter(|&c| c > 0.0).collect();
    let max = nz.iter().fold(0.0f64, |a, &b| a.max(b));
    let min = nz.iter().fold(f64::INFINITY, |a, &b| a.min(b));
    let log = !nz.is_empty() && max / min > 100.0;
    let (lo, hi) = if log {
        ((min.log10().floor() - 0.1).min(-0.1), max.log10() + 0.15)
    } else {
        (0.0, (max * 1.1).max(1.0))
    };
    let mut chart = ChartBuilder::on(area)
        .margin(8)
        .caption(title, (FONT, 14))
        .x_label_area_size(34)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..1f64, lo..hi)
        .map_err(s)?;
    let fmt_log = |v: &f64| format!("1e{:.0}", v);
    let fmt_lin = |v: &f64| {
        if *v >= 1e4 {
            format!("{v:.0e}")
        } else {
            format!("{v:.0}")
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .x_labels(6)
        .y_labels(if log {
            ((hi - lo).ceil() as usize + 1).min(8)
        } else {
            5
        })
        .y_label_formatter(if log { &fmt_log } else { &fmt_lin })
        .x_desc("Predicted foreground probability (bin)")
        .y_desc(if log { "Voxels (log)" } else { "Voxels" })
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 12))
        .draw()
        .map_err(s)?;
    let w = 1.0 / m as f64;
    chart
        .draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0.0)
                .map(|(k, &c)| {
                    let top = if log { c.log10() } else { c };
                    Rectangle::new(
                        [
                            (k as f64 * w + 0.05 * w, lo),
                            ((k + 1) as f64 * w - 0.05 * w, top),
                        ],
                        BLUE.filled(),
                    )
                }),
        )
        .map_err(s)?;
    Ok(())
}

fn sci(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else {
        format!("{x:.2e}")
    }
}

/// A panel's chart over the unit square: `title` above, axes described by `(x, y)` with 6 labels each, and
/// a light grid where `grid`.
fn unit_square_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    grid: bool,
) -> std::result::Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>, String>
{
    let mut chart = ChartBuilder::on(area)
        .margin(8)
        .caption(title, (FONT, 16))
        .x_label_area_size(36)
        .y_label_area_size(46)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(s)?;
    let mut mesh = chart.configure_mesh();
    if grid {
        mesh.light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(225, 225, 225));
    } else {
        mesh.disable_mesh();
    }
    mesh.x_labels(6)
        .y_labels(6)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 12))
        .draw()
        .map_err(s)?;
    Ok(chart)
}

/// One reliability panel: gap bars at the bin centres, the frequency tick, the dashed diagonal, the errors.
fn reliability_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    mean_p: &[f64],
    mean_y: &[f64],
    errors: (f64, f64, f64),
) -> DrawResult {
    let m = mean_p.len();
    let mut chart = unit_square_chart(
        area,
        title,
        (
            "Mean predicted foreground probability (per bin)",
            "Mean empirical foreground frequency",
        ),
        true,
    )?;
    let w = 1.0 / m as f64;
    // Dashed diagonal y = x.
    let dashes = 40;
    chart
        .draw_series((0..dashes).step_by(2).map(|i| {
            let a = i as f64 / dashes as f64;
            let b = (i + 1) as f64 / dashes as f64;
            PathElement::new(
                vec![(a, a), (b, b)],
                RGBColor(128, 128, 128).stroke_width(1),
            )
        }))
        .map_err(s)?;
    let worst = (0..m).filter(|&k| !mean_p[k].is_nan()).max_by(|&a, &b| {
        let da = (mean_p[a] - mean_y[a]).abs();
        let db = (mean_p[b] - mean_y[b]).abs();
        da.total_cmp(&db)
    });
    chart
        .draw_series((0..m).filter(|&k| !mean_p[k].is_nan()).map(|k| {
            let (lo, hi) = (mean_p[k].min(mean_y[k]), mean_p[k].max(mean_y[k]));
            Rectangle::new([(k as f64 * w, lo), ((k + 1) as f64 * w, hi)], GAP.filled())
        }))
        .map_err(s)?
        .label("Gap")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], GAP.filled()));
    chart
        .draw_series((0..m).filter(|&k| !mean_p[k].is_nan()).map(|k| {
            let (lo, hi) = (mean_p[k].min(mean_y[k]), mean_p[k].max(mean_y[k]));
            Rectangle::new(
                [(k as f64 * w, lo), ((k + 1) as f64 * w, hi)],
                GAP_EDGE.stroke_width(1),
            )
        }))
        .map_err(s)?;
    chart
        .draw_series((0..m).filter(|&k| !mean_y[k].is_nan()).map(|k| {
            PathElement::new(
                vec![(k as f64 * w, mean_y[k]), ((k + 1) as f64 * w, mean_y[k])],
                BLACK.stroke_width(3),
            )
        }))
        .map_err(s)?
        .label("Frequency")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], BLACK.stroke_width(3)));
    if let Some(k) = worst {
        // An arrow to the worst bin with "MCE=..." at its tail: above the bar, below it, or beside it.
        let x = (k as f64 + 0.5) * w;
        let (lo, hi) = (mean_p[k].min(mean_y[k]), mean_p[k].max(mean_y[k]));
        let (tail, head, text_at) = if hi + 0.14 <= 1.0 {
            ((x, hi + 0.1), (x, hi + 0.01), (x, hi + 0.145))
        } else if lo >= 0.16 {
            ((x, lo - 0.1), (x, lo - 0.01), (x, lo - 0.115))
        } else {
            let dir = if x > 0.5 { -1.0 } else { 1.0 };
            let y = (lo + hi) / 2.0;
            (
                (x + dir * 0.15, y),
                (x + dir * 0.6 * w, y),
                (x + dir * 0.16, y + 0.035),
            )
        };
        let (dx, dy) = (head.0 - tail.0, head.1 - tail.1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-9);
        let (ux, uy) = (dx / len * 0.025, dy / len * 0.025);
        chart
            .draw_series([
                PathElement::new(vec![tail, head], BLACK.stroke_width(1)),
                PathElement::new(
                    vec![
                        (head.0 - ux - uy * 0.5, head.1 - uy + ux * 0.5),
                        head,
                        (head.0 - ux + uy * 0.5, head.1 - uy - ux * 0.5),
                    ],
                    BLACK.stroke_width(1),
                ),
            ])
            .map_err(s)?;
        // The label centred on the arrow tail, kept inside the panel.
        let tx = (text_at.0 - 0.1).clamp(0.01, 0.78);
        chart
            .draw_series(std::iter::once(Text::new(
                format!("MCE={}", sci(errors.2)),
                (tx, text_at.1.clamp(0.05, 0.99)),
                (FONT, 13).into_font(),
            )))
            .map_err(s)?;
    }
    chart
        .draw_series([
            Text::new(
                format!("ECE={}", sci(errors.0)),
                (0.62, 0.15),
                (FONT, 14).into_font(),
            ),
            Text::new(
                format!("ACE={}", sci(errors.1)),
                (0.62, 0.08),
                (FONT, 14).into_font(),
            ),
        ])
        .map_err(s)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(RGBColor(190, 190, 190))
        .label_font((FONT, 12))
        .draw()
        .map_err(s)?;
    Ok(())
}

fn draw_reliability<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    stats: &BinStats,
    errors: &PerImage,
    image: usize,
) -> DrawResult {
    let c = stats.classes;
    let (top, bottom) = root.split_vertically(PANEL.1 + 40);
    let tops = top.split_evenly((1, c));
    let bottoms = bottom.split_evenly((1, c));
    for k in 0..c {
        let (count, mp, my) = bin_means(stats, image, k);
        let r = image * c + k;
        reliability_panel(
            &tops[k],
            &format!("class {}", stats.class_ids[k]),
            &mp,
            &my,
            (errors.ece[r], errors.ace[r], errors.mce[r]),
        )?;
        histogram(&bottoms[k], &count, "Bin counts")?;
    }
    Ok(())
}

/// The reliability diagram of image `image`: one panel per evaluated class (gap bars at the bin centres,
/// the empirical frequency tick, the dashed diagonal, ECE/ACE/MCE), and below each its bin-count
/// histogram (log axis when the counts span more than 100x). PNG or SVG by the extension of `path`.
pub fn reliability_diagram(
    path: &Path,
    stats: &BinStats,
    errors: &PerImage,
    image: usize,
) -> Result<()> {
    if image >= stats.images || stats.classes == 0 {
        return Err(Error::invalid(format!(
            "image {image} of {} (with {} classes) cannot be drawn",
            stats.images, stats.classes
        )));
    }
    let size = (PANEL.0 * stats.classes as u32, PANEL.1 + 40 + HIST_HEIGHT);
    render!(path, size, draw_reliability(stats, errors, image))
}

/// One heat-map panel: column-normalised `h` (`[M, M]`, row = accuracy bin, 0 lowest), power-law colours.
fn heatmap_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    h: &[i64],
    m: usize,
) -> DrawResult {
    let mut chart = unit_square_chart(
        area,
        title,
        (
            "Predicted foreground probability",
            "Empirical foreground frequency",
        ),
        false,
    )?;
    let w = 1.0 / m as f64;
    let mut cells = Vec::new();
    for k in 0..m {
        let col: i64 = (0..m).map(|a| h[a * m + k]).sum();
        if col == 0 {
            continue; // no image has this confidence bin: left blank
        }
        for a in 0..m {
            let frac = h[a * m + k] as f64 / col as f64;
            cells.push(Rectangle::new(
                [
                    (k as f64 * w, a as f64 * w),
                    ((k + 1) as f64 * w, (a + 1) as f64 * w),
                ],
                ylorrd(frac.powf(GAMMA)).filled(),
            ));
        }
    }
    chart.draw_series(cells).map_err(s)?;
    Ok(())
}

/// The colour bar of the power-law norm: fraction of images per column, ticks at chosen fractions.
fn colour_bar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .margin_top(38)
        .margin_bottom(44)
        .margin_left(6)
        .margin_right(44)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(s)?;
    let steps = 200;
    chart
        .draw_series((0..steps).map(|i| {
            let t0 = i as f64 / steps as f64;
            let t1 = (i + 1) as f64 / steps as f64;
            Rectangle::new([(0.0, t0), (0.35, t1)], ylorrd(t0).filled())
        }))
        .map_err(s)?;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (0.35, 1.0)],
            BLACK.stroke_width(1),
        )))
        .map_err(s)?;
    for v in [0.0, 0.01, 0.05, 0.2, 0.5, 1.0] {
        let t: f64 = f64::powf(v, GAMMA);
        chart
            .draw_series([PathElement::new(
                vec![(0.35, t), (0.45, t)],
                BLACK.stroke_width(1),
            )])
            .map_err(s)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{v}"),
                (0.5, t + 0.02),
                (FONT, 12).into_font(),
            )))
            .map_err(s)?;
    }
    Ok(())
}

fn draw_dataset<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, stats: &BinStats) -> DrawResult {
    let (c, m) = (stats.classes, stats.num_bins);
    let heat: Vec<i64> = reliability_heatmap(stats)
        .into_iter()
        .map(i64::from)
        .collect();
    let (left, bar) = root.split_horizontally(PANEL.0 * (c as u32 + 1));
    let (top, bottom) = left.split_vertically(PANEL.1 + 40);
    let tops = top.split_evenly((1, c + 1));
    let bottoms = bottom.split_evenly((1, c + 1));
    let mut avg = vec![0i64; m * m];
    let mut avg_counts = vec![0f64; m];
    for k in 0..c {
        let h = &heat[k * m * m..(k + 1) * m * m];
        for (a, b) in avg.iter_mut().zip(h) {
            *a += b;
        }
        heatmap_panel(&tops[k], &format!("class {}", stats.class_ids[k]), h, m)?;
        let mut counts = vec![0f64; m];
        for i in 0..stats.images {
            for (b, &x) in counts.iter_mut().zip(stats.bins(i, k).0) {
                *b += x as f64;
            }
        }
        for (a, b) in avg_counts.iter_mut().zip(&counts) {
            *a += b;
        }
        histogram(&bottoms[k], &counts, "Bin counts (all images)")?;
    }
    heatmap_panel(&tops[c], "average", &avg, m)?;
    histogram(&bottoms[c], &avg_counts, "Bin counts (all images, classes)")?;
    let (bar_top, _) = bar.split_vertically(PANEL.1 + 40);
    colour_bar(&bar_top)?;
    Ok(())
}

/// Width of the colour bar column of the dataset reliability histogram.
pub const BAR_WIDTH: u32 = 90;

/// The dataset reliability histogram: per class, the M x M heat map of how per-image accuracy is
/// distributed within each confidence bin (columns normalised, `YlOrRd`, power-law norm with
/// gamma = [`GAMMA`]), an "average" panel over classes, a shared colour bar, and below each panel the
/// pooled bin-count histogram. PNG or SVG by the extension of `path`.
pub fn dataset_reliability(path: &Path, stats: &BinStats) -> Result<()> {
    if stats.classes == 0 || stats.images == 0 {
        return Err(Error::invalid("no images or classes to draw"));
    }
    let size = (
        PANEL.0 * (stats.classes as u32 + 1) + BAR_WIDTH,
        PANEL.1 + 40 + HIST_HEIGHT,
    );
    render!(path, size, draw_dataset(stats))
}

fn draw_comparison<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[(&str, &BinStats)],
) -> DrawResult {
    let (left, bar) = root.split_horizontally(PANEL.0 * panels.len() as u32);
    let areas = left.split_evenly((1, panels.len()));
    for ((title, stats), area) in panels.iter().zip(&areas) {
        let m = stats.num_bins;
        let heat = reliability_heatmap(stats);
        let mut avg = vec![0i64; m * m];
        for k in 0..stats.classes {
            for (a, &b) in avg.iter_mut().zip(&heat[k * m * m..(k + 1) * m * m]) {
                *a += i64::from(b);
            }
        }
        heatmap_panel(area, title, &avg, m)?;
    }
    colour_bar(&bar)?;
    Ok(())
}

/// Dataset reliability histograms of several models side by side (e.g. one per training loss): for each,
/// the heat map summed over its classes, as the "average" panel of [`dataset_reliability`] draws it, with
/// one shared colour bar. Every entry must have the same number of bins. PNG or SVG by the extension.
pub fn reliability_comparison(path: &Path, panels: &[(&str, &BinStats)]) -> Result<()> {
    let Some((_, first)) = panels.first() else {
        return Err(Error::invalid("no reliability histograms to draw"));
    };
    if panels
        .iter()
        .any(|(_, s)| s.classes == 0 || s.images == 0 || s.num_bins != first.num_bins)
    {
        return Err(Error::invalid(
            "every histogram needs images, classes and the same number of bins",
        ));
    }
    let size = (PANEL.0 * panels.len() as u32 + BAR_WIDTH, PANEL.1 + 40);
    render!(path, size, draw_comparison(panels))
}
