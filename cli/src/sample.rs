//! `tfc sample`: generate images from a model file, with classifier-free or
//! attention-temperature guidance and one-step denoising.

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use image::{GrayImage, ImageBuffer, Luma, Rgb, RgbImage};
use std::path::PathBuf;
use std::time::Instant;
use tfc_model::file::Model;
use tfc_model::sample::{denoise, sample, to_pixels, Guidance, SampleOptions};
use tfc_model::Labels;

#[derive(Args)]
pub struct SampleArgs {
    /// Model file.
    #[arg(long)]
    model: PathBuf,
    /// Samples (per class, when sampling every class of a conditional model).
    #[arg(short, default_value_t = 8)]
    n: usize,
    /// Seed: the same seed gives the same pixels.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Class to sample (conditional models); default: every class, one row each.
    #[arg(long)]
    class: Option<u32>,
    /// Guidance weight (0: none).
    #[arg(long, default_value_t = 0.0)]
    cfg: f64,
    /// Attention temperature of the guiding branch (unconditional models).
    #[arg(long, default_value_t = 1.0)]
    attn_temp: f64,
    /// Standard deviation of the prior draw.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Skip the denoising step of models trained with Gaussian noise.
    #[arg(long)]
    no_denoise: bool,
    /// Samples generated at once.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Write a PNG grid here.
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Write one PNG per sample into this folder.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Overwrite existing outputs.
    #[arg(short, long)]
    force: bool,
}

/// Labels to draw, and the grid's column count.
fn plan(a: &SampleArgs, classes: usize) -> Result<(Vec<Option<u32>>, usize)> {
    anyhow::ensure!(a.n >= 1, "-n must be at least 1");
    if classes == 0 {
        if a.class.is_some() {
            bail!("--class given but the model is unconditional");
        }
        let cols = (a.n as f64).sqrt().ceil() as usize;
        return Ok((vec![None; a.n], cols));
    }
    match a.class {
        Some(k) if k as usize >= classes => bail!("--class {k}: the model has {classes} classes"),
        Some(k) => Ok((vec![Some(k); a.n], (a.n as f64).sqrt().ceil() as usize)),
        None => Ok((
            (0..classes as u32)
                .flat_map(|k| vec![Some(k); a.n])
                .collect(),
            a.n,
        )),
    }
}

pub fn run(a: &SampleArgs, quiet: bool) -> Result<()> {
    if a.out.is_none() && a.dir.is_none() {
        bail!("give -o GRID.png and/or --dir FOLDER");
    }
    if let Some(o) = a.out.as_ref().filter(|o| o.exists() && !a.force) {
        bail!("{} exists (use -f to overwrite)", o.display());
    }
    let dev = Device::Cpu;
    let model = Model::load(&a.model, &dev)?;
    let cfg = &model.config.arch;
    let (labels, cols) = plan(a, cfg.classes)?;
    let guidance = (a.cfg != 0.0).then_some(Guidance {
        weight: a.cfg,
        attn_temp: a.attn_temp,
    });
    let opts = SampleOptions {
        temperature: a.temperature,
        guidance,
    };
    let sigma = model.config.noise.sigma().filter(|_| !a.no_denoise);
    let pb = crate::progress(
        labels.len() as u64,
        quiet,
        "{elapsed_precise} [{bar:30}] {pos}/{len} samples",
    );
    let start = Instant::now();
    let mut pixels = Vec::new();
    for (i, chunk) in labels.chunks(a.batch.max(1)).enumerate() {
        let seed = a.seed.wrapping_add(i as u64);
        let mut x = sample(&model.flow, chunk, opts, seed, &dev)?;
        if let Some(s) = sigma {
            let lab = (cfg.classes > 0)
                .then(|| Labels::new(chunk, &dev))
                .transpose()?;
            x = denoise(&model.flow, &x, lab.as_ref(), s)?;
        }
        pixels.extend(to_pixels(&x)?);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "tfc: {} samples in {secs:.2} s ({:.1} ms per sample, {:.1} samples/s){}",
        labels.len(),
        1000.0 * secs / labels.len() as f64,
        labels.len() as f64 / secs,
        if sigma.is_some() { ", denoised" } else { "" }
    );
    let (c, s) = (cfg.channels, cfg.image_size);
    let per = c * s * s;
    let images: Vec<&[u8]> = pixels.chunks(per).collect();
    if let Some(dir) = &a.dir {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        for (i, img) in images.iter().enumerate() {
            let path = dir.join(format!("sample_{i:04}.png"));
            if path.exists() && !a.force {
                bail!("{} exists (use -f to overwrite)", path.display());
            }
            grid(&[img], 1, c, s).save(&path)?;
        }
    }
    if let Some(out) = &a.out {
        let tmp = out.with_extension("tmp.png");
        grid(&images, cols, c, s).save(&tmp)?;
        std::fs::rename(&tmp, out)?;
        println!("{}", out.display());
    }
    Ok(())
}

/// Tiles planar samples into one image with a 2-pixel gap.
fn grid(images: &[&[u8]], cols: usize, c: usize, s: usize) -> image::DynamicImage {
    let rows = images.len().div_ceil(cols);
    let gap = if images.len() > 1 { 2 } else { 0 };
    let (w, h) = ((cols * (s + gap)) as u32, (rows * (s + gap)) as u32);
    let at = |i: usize, x: u32, y: u32| -> Option<(usize, usize, usize)> {
        let (cx, cy) = (x as usize / (s + gap), y as usize / (s + gap));
        let (px, py) = (x as usize % (s + gap), y as usize % (s + gap));
        let k = cy * cols + cx;
        (k < images.len() && px < s && py < s).then_some((k, py * s + px, i))
    };
    if c == 1 {
        let img: GrayImage = ImageBuffer::from_fn(w, h, |x, y| {
            Luma([at(0, x, y).map_or(255, |(k, p, _)| images[k][p])])
        });
        image::DynamicImage::ImageLuma8(img)
    } else {
        let img: RgbImage = ImageBuffer::from_fn(w, h, |x, y| {
            Rgb(std::array::from_fn(|ch| {
                at(ch, x, y).map_or(255, |(k, p, ch)| images[k][ch * s * s + p])
            }))
        });
        image::DynamicImage::ImageRgb8(img)
    }
}
