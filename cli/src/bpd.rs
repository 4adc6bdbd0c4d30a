//! `tfc bpd`: the paper's bits per dimension of a model on images.

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use std::path::PathBuf;
use tfc_model::data::{Dataset, FolderOptions};
use tfc_model::file::Model;
use tfc_model::train::tile_bpd;

#[derive(Args)]
pub struct BpdArgs {
    /// Model file.
    #[arg(long)]
    model: PathBuf,
    /// Images: fashion-mnist:train, fashion-mnist:test, a folder or a file.
    #[arg(long)]
    data: String,
    /// Noise samples per image.
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// Use at most this many images.
    #[arg(long)]
    limit: Option<usize>,
    /// Batch size of the evaluation.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Seed of the dequantization noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one line per image.
    #[arg(long)]
    per_image: bool,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &BpdArgs, quiet: bool) -> Result<()> {
    let dev = Device::Cpu;
    let model = Model::load(&a.model, &dev)?;
    let arch = &model.config.arch;
    let opts = FolderOptions {
        channels: arch.channels,
        downscale: 1,
        multiscale: false,
    };
    let mut data = Dataset::open(&a.data, opts)?;
    if let Some(n) = a.limit {
        data.truncate(n);
    }
    anyhow::ensure!(!data.is_empty(), "{}: no images", a.data);
    let pb = crate::progress(
        data.len() as u64,
        quiet,
        "{elapsed_precise} [{bar:30}] {pos}/{len} images",
    );
    let mut per_image = Vec::with_capacity(data.len());
    let mut all_tiles = 0usize;
    for (i, img) in data.images.iter().enumerate() {
        let one = Dataset {
            images: vec![img.clone()],
            labels: data.labels.as_ref().map(|l| vec![l[i]]),
            description: String::new(),
        };
        let (tiles, labels) = one.tiles(arch.image_size);
        let bpd = tile_bpd(
            &model.flow,
            &tiles,
            &labels,
            a.samples,
            a.batch,
            a.seed ^ i as u64,
            &dev,
        )
        .with_context(|| format!("image {i}"))?;
        all_tiles += tiles.len();
        per_image.push((
            bpd.iter().sum::<f64>() / bpd.len().max(1) as f64,
            tiles.len(),
        ));
        pb.inc(1);
    }
    pb.finish_and_clear();
    anyhow::ensure!(
        all_tiles > 0,
        "no image is at least {0}x{0}",
        arch.image_size
    );
    let mean = per_image.iter().map(|(b, n)| b * *n as f64).sum::<f64>() / all_tiles as f64;
    if a.json {
        let summary = serde_json::json!({
            "model": a.model.display().to_string(),
            "data": data.description,
            "images": data.len(),
            "tiles": all_tiles,
            "samples": a.samples,
            "bpd": mean,
            "per_image": per_image.iter().map(|p| p.0).collect::<Vec<_>>(),
        });
        println!("{summary}");
        return Ok(());
    }
    if a.per_image {
        for (i, (b, n)) in per_image.iter().enumerate() {
            println!("image {i}\t{n} tiles\t{b:.4} bpd");
        }
    }
    println!(
        "bpd {mean:.4} over {} images ({all_tiles} tiles of {}x{})",
        data.len(),
        arch.image_size,
        arch.image_size
    );
    Ok(())
}
