//! PNG plot of training and validation BPD against step, from the CSV log.

use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;

/// Points of a curve: (step, bits per dim).
type Curve = Vec<(f64, f64)>;

/// Reads `step,lr,loss,train_bpd,grad_norm,images_per_s,val_bpd` rows.
fn read_log(csv: &Path) -> Result<(Curve, Curve)> {
    let text = std::fs::read_to_string(csv).with_context(|| csv.display().to_string())?;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(step), Some(bpd)) = (f.first(), f.get(3)) else {
            continue;
        };
        let (Ok(step), Ok(bpd)) = (step.parse::<f64>(), bpd.parse::<f64>()) else {
            continue;
        };
        train.push((step, bpd));
        if let Some(Ok(v)) = f.get(6).map(|v| v.parse::<f64>()) {
            val.push((step, v));
        }
    }
    Ok((smooth(&train, 50), val))
}

/// Running mean over `w` points, so the curve shows the trend.
fn smooth(p: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    (0..p.len())
        .map(|i| {
            let lo = i.saturating_sub(w - 1);
            let s: f64 = p[lo..=i].iter().map(|q| q.1).sum();
            (p[i].0, s / (i - lo + 1) as f64)
        })
        .collect()
}

/// Registers a system font for labels; `false` if none is installed (the
/// plot is then drawn without text).
fn load_font() -> bool {
    const PATHS: [&str; 2] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ];
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOADED.get_or_init(|| {
        PATHS.iter().any(|p| match std::fs::read(p) {
            Ok(b) => {
                let bytes: &'static [u8] = Box::leak(b.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            }
            Err(_) => false,
        })
    })
}

/// Draws the curve to `png`.
pub fn curve(csv: &Path, png: &Path) -> Result<()> {
    let (train, val) = read_log(csv)?;
    if train.is_empty() {
        return Ok(());
    }
    let xmax = train.last().map_or(1.0, |p| p.0).max(1.0);
    let tail = &train[train.len() / 10..];
    let ymin = tail
        .iter()
        .chain(&val)
        .map(|p| p.1)
        .fold(f64::MAX, f64::min);
    let ymax = tail
        .iter()
        .chain(&val)
        .map(|p| p.1)
        .fold(f64::MIN, f64::max);
    let pad = (ymax - ymin).max(0.05) * 0.1;
    let root = BitMapBackend::new(png, (640, 400)).into_drawing_area();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let text = load_font();
        let label = if text { 40 } else { 0 };
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(label)
            .y_label_area_size(label + 12)
            .build_cartesian_2d(0.0..xmax, (ymin - pad)..(ymax + pad))?;
        if text {
            chart
                .configure_mesh()
                .x_desc("step")
                .y_desc("bits per dim")
                .draw()?;
        } else {
            chart
                .configure_mesh()
                .disable_x_mesh()
                .disable_y_mesh()
                .draw()?;
        }
        chart
            .draw_series(LineSeries::new(train.iter().copied(), &BLUE))?
            .label("train (running mean)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart
            .draw_series(LineSeries::new(val.iter().copied(), RED.stroke_width(2)))?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE)
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("plotting {}: {e}", png.display()))
}
