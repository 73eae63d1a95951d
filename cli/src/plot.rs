//! `--plot`: loss and metric curves per task as a PNG (plotters, bitmap backend, no fonts).
//!
//! One row per head, titled with its name: its loss on the left, its main metric (accuracy, mIoU or MAE) on the right;
//! training in blue, validation in orange, epochs along x. Each panel's range is written in its
//! corner with a built-in pixel font (no system fonts needed).

use hydrant::train::{EpochReport, TaskMetrics};
use hydrant::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// Width of one panel in pixels.
pub const PANEL_WIDTH: u32 = 400;
/// Height of one panel in pixels.
pub const PANEL_HEIGHT: u32 = 240;

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VALIDATION: RGBColor = RGBColor(255, 127, 14);

/// The image size for `heads` heads: two panels per row, one row per head.
pub fn size(heads: usize) -> (u32, u32) {
    (2 * PANEL_WIDTH, PANEL_HEIGHT * heads.max(1) as u32)
}

/// Draws the curves of `history` into the PNG file `path`.
pub fn curves(history: &[EpochReport], path: &Path) -> Result<()> {
    let heads = history.first().map_or(0, |r| r.train.len());
    if heads == 0 {
        return Err(Error::InvalidArgument("--plot: no epochs to draw".into()));
    }
    let (w, h) = size(heads);
    let mut pixels = vec![255u8; (w * h * 3) as usize];
    draw(history, heads, &mut pixels, (w, h)).map_err(|e| plot_error(path, e))?;
    write_png(path, &pixels, (w, h))
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("--plot {}: {e}", path.display()))
}

type Series = Vec<(f64, f64)>;

/// The points of one head's curve: `pick` applied to each epoch's metrics for the head.
fn series(
    history: &[EpochReport],
    head: usize,
    validation: bool,
    pick: fn(&TaskMetrics) -> Option<f64>,
) -> Series {
    history
        .iter()
        .filter_map(|r| {
            let m = if validation { r.validation.get(head) } else { r.train.get(head) }?;
            pick(m).filter(|v| v.is_finite()).map(|v| (r.epoch as f64, v))
        })
        .collect()
}

fn main_metric(m: &TaskMetrics) -> Option<f64> {
    m.miou.or(m.accuracy).or(m.mae)
}

fn metric_name(m: &TaskMetrics) -> &'static str {
    match (m.miou, m.accuracy, m.mae) {
        (Some(_), _, _) => "MIOU",
        (None, Some(_), _) => "ACC",
        (None, None, Some(_)) => "MAE",
        _ => "",
    }
}

fn draw(
    history: &[EpochReport],
    heads: usize,
    pixels: &mut [u8],
    size: (u32, u32),
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(pixels, size).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((heads, 2));
    let picks: [fn(&TaskMetrics) -> Option<f64>; 2] = [|m| Some(m.loss), main_metric];
    for (i, area) in panels.iter().enumerate() {
        let (head, pick) = (i / 2, picks[i % 2]);
        let lines = [series(history, head, false, pick), series(history, head, true, pick)];
        let m = &history[0].train[head];
        let name: String = m.head.chars().take(16).collect();
        let title = format!("{name} {}", if i % 2 == 0 { "LOSS" } else { metric_name(m) });
        panel(area, &title, &lines)?;
    }
    root.present()?;
    Ok(())
}

/// One panel: a frame, horizontal grid lines, the training and validation lines, and the
/// title with the value range (top to bottom) in the top-left corner, the legend top right, the
/// epoch range bottom right.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    lines: &[Series; 2],
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let points = lines.iter().flatten();
    let (mut lo, mut hi) = points
        .clone()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| (l.min(p.1), h.max(p.1)));
    let last_epoch = points.fold(1.0f64, |m, p| m.max(p.0));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    let (lo, hi) = (lo - pad, hi + pad);
    let x_max = if last_epoch > 1.0 { last_epoch } else { 2.0 };
    let mut chart = ChartBuilder::on(area).margin(14).build_cartesian_2d(1.0..x_max, lo..hi)?;
    let grid = RGBColor(225, 225, 225);
    for k in 1..4 {
        let y = lo + (hi - lo) * k as f64 / 4.0;
        chart.draw_series(std::iter::once(PathElement::new(vec![(1.0, y), (x_max, y)], grid)))?;
    }
    chart.draw_series(std::iter::once(Rectangle::new([(1.0, lo), (x_max, hi)], BLACK)))?;
    for (points, color) in lines.iter().zip([TRAIN, VALIDATION]) {
        if points.len() == 1 {
            let p = points[0];
            chart.draw_series(std::iter::once(Circle::new(p, 3, color.filled())))?;
        }
        chart.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?;
    }
    let label = format!("{title}  {} - {}", short(hi - pad), short(lo + pad));
    crate::plot_font::text(area, (18, 2), &label, &BLACK)?;
    let (width, height) = area.dim_in_pixel();
    let right = width as i32 - 14;
    crate::plot_font::text(area, (right - 4 * 2 * 10, 2), "TRAIN", &TRAIN)?;
    crate::plot_font::text(area, (right - 4 * 2 * 3, 2), "VAL", &VALIDATION)?;
    let epochs = format!("EPOCH 1-{x_max:.0}");
    let at = (right - 4 * 2 * epochs.len() as i32, height as i32 - 12);
    crate::plot_font::text(area, at, &epochs, &BLACK)?;
    Ok(())
}

/// A number in at most 6 characters.
fn short(v: f64) -> String {
    let s = format!("{v:.4}");
    if s.len() <= 7 {
        s
    } else {
        format!("{v:.1e}")
    }
}

fn write_png(path: &Path, pixels: &[u8], (w, h): (u32, u32)) -> Result<()> {
    let io = |e: std::io::Error| Error::Io { path: path.to_path_buf(), source: e };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| plot_error(path, e))?;
    writer.write_image_data(pixels).map_err(|e| plot_error(path, e))?;
    writer.finish().map_err(|e| plot_error(path, e))
}
