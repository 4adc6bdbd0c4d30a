//! `tfc bpd`: the paper's bits per dimension of a model on images.

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use std::path::PathBuf;
use tfc_codec::{coded_bits, CodedStats, CodingParams, Image, ModelFile, ModelSet};
use tfc_model::data::{Dataset, FolderOptions, Planar};
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
    /// Also print the mean bits per dimension of each patch position of a
    /// tile, as a grid: where in a tile the model spends its bits.
    #[arg(long)]
    map: bool,
    /// For a model with context tokens: give every tile an empty context
    /// (no coded neighbours), to measure what the context is worth. The
    /// model's NLL only: the coder always uses the neighbours it has.
    #[arg(long, conflicts_with = "coded")]
    no_context: bool,
    /// Also compress each image (whole, edges included) and report the
    /// actual coded bits per dimension, file headers included.
    #[arg(long)]
    coded: bool,
    /// With --coded, code all images into one file (one shared stack)
    /// rather than one file each.
    #[arg(long)]
    one_file: bool,
    /// Sub-pixel bits `m` for --coded.
    #[arg(long, default_value_t = CodingParams::default().m)]
    subpixel_bits: u8,
    /// Most lanes for --coded (one per 1024 tiles begun, as `compress`).
    #[arg(long, default_value_t = CodingParams::default().lanes)]
    lanes: u16,
    /// Tile orientations the encoder tries for --coded (1 to 8).
    #[arg(long, default_value_t = CodingParams::default().orientations)]
    orientations: u8,
}

fn to_image(img: &Planar) -> Result<Image> {
    Ok(Image::new(
        img.width as u32,
        img.height as u32,
        img.channels as u8,
        img.to_interleaved(),
    )?)
}

pub fn run(a: &BpdArgs, quiet: bool) -> Result<()> {
    let dev = Device::Cpu;
    let bytes = std::fs::read(&a.model).with_context(|| a.model.display().to_string())?;
    let model = Model::from_bytes(&bytes, &dev)
        .with_context(|| format!("invalid model file {}", a.model.display()))?;
    let coder = if a.coded {
        Some(ModelFile::from_bytes(&bytes)?)
    } else {
        None
    };
    let set = coder.as_ref().map(ModelSet::single).transpose()?;
    let params = CodingParams {
        m: a.subpixel_bits,
        lanes: a.lanes,
        orientations: a.orientations,
    };
    // Codes like `tfc compress`: as many lanes as `lanes_for` allows.
    let code = |set: &ModelSet<'_>, images: &[Image]| -> Result<CodedStats> {
        let params = CodingParams {
            lanes: tfc_codec::lanes_for(set, images, a.lanes)?,
            ..params
        };
        Ok(coded_bits(set, images, &params)?)
    };
    let mut coded_stats: Vec<CodedStats> = Vec::new();
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
    let mut token_sum = vec![0f64; arch.tokens()];
    for (i, img) in data.images.iter().enumerate() {
        let one = Dataset {
            images: vec![img.clone()],
            labels: data.labels.as_ref().map(|l| vec![l[i]]),
            description: String::new(),
        };
        let (tiles, labels) = one.tiles(arch.image_size);
        let contexts = arch.context.then(|| {
            if a.no_context {
                vec![vec![0.0; arch.context_len() * arch.context_dim()]; tiles.len()]
            } else {
                one.tile_contexts(arch)
            }
        });
        let bpd = tile_bpd(
            &model.flow,
            &tiles,
            &labels,
            contexts.as_deref(),
            a.samples,
            a.batch,
            a.seed ^ i as u64,
            &dev,
        )
        .with_context(|| format!("image {i}"))?;
        for (t, v) in token_sum.iter_mut().zip(&bpd.tokens) {
            *t += v * tiles.len() as f64;
        }
        let bpd = bpd.tiles;
        all_tiles += tiles.len();
        if let Some(set) = set.as_ref().filter(|_| !a.one_file) {
            let stats = code(set, &[to_image(img)?]);
            coded_stats.push(stats.with_context(|| format!("coding image {i}"))?);
        }
        per_image.push((
            bpd.iter().sum::<f64>() / bpd.len().max(1) as f64,
            tiles.len(),
        ));
        pb.inc(1);
    }
    pb.finish_and_clear();
    if let Some(set) = set.as_ref().filter(|_| a.one_file) {
        let images = data
            .images
            .iter()
            .map(to_image)
            .collect::<Result<Vec<_>>>()?;
        coded_stats.push(code(set, &images)?);
    }
    anyhow::ensure!(
        all_tiles > 0,
        "no image is at least {0}x{0}",
        arch.image_size
    );
    let mean = per_image.iter().map(|(b, n)| b * *n as f64).sum::<f64>() / all_tiles as f64;
    let side = arch.image_size / arch.patch;
    let map: Vec<Vec<f64>> = token_sum
        .chunks(side)
        .map(|row| row.iter().map(|v| v / all_tiles as f64).collect())
        .collect();
    let dims: u64 = coded_stats.iter().map(|c| c.dims).sum();
    let total: u64 = coded_stats.iter().map(|c| c.total_bits).sum();
    let header: u64 = coded_stats.iter().map(|c| c.header_bits).sum();
    let coded_bpd = (!coded_stats.is_empty()).then(|| total as f64 / dims as f64);
    let payload_bpd = (!coded_stats.is_empty()).then(|| (total - header) as f64 / dims as f64);
    let startup: i64 = coded_stats.iter().map(|c| c.startup_bits).sum();
    let startup_bpd = (!coded_stats.is_empty()).then(|| startup as f64 / dims as f64);
    if a.json {
        let summary = serde_json::json!({
            "model": a.model.display().to_string(),
            "data": data.description,
            "images": data.len(),
            "tiles": all_tiles,
            "samples": a.samples,
            "bpd": mean,
            "coded_bpd": coded_bpd,
            "coded_payload_bpd": payload_bpd,
            "coded_startup_bpd": startup_bpd,
            "coded_bytes": (!coded_stats.is_empty()).then_some(total / 8),
            "m": a.subpixel_bits,
            "lanes": a.lanes,
            "orientations": a.orientations,
            "per_image": per_image.iter().map(|p| p.0).collect::<Vec<_>>(),
            "patch_map": a.map.then_some(&map),
        });
        println!("{summary}");
        return Ok(());
    }
    if a.map {
        println!(
            "bpd per patch position ({side}x{side} patches of {0}x{0}):",
            arch.patch
        );
        for row in &map {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:6.3}")).collect();
            println!("{}", cells.join(" "));
        }
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
    if let (Some(c), Some(p), Some(st)) = (coded_bpd, payload_bpd, startup_bpd) {
        let files = if a.one_file {
            "one file"
        } else {
            "one file per image"
        };
        println!(
            "coded {c:.4} bpd, {p:.4} without headers ({files}, m {}, at most {} lanes): {:+.2}% against the model",
            a.subpixel_bits,
            a.lanes,
            100.0 * (c / mean - 1.0)
        );
        println!("lane start-up (first tiles on an empty stack): {st:.4} bpd");
    }
    Ok(())
}
