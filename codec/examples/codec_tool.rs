//! A codec-only command-line tool for scripts and measurements (no candle):
//!
//! ```text
//! codec_tool encode MODEL OUTDIR [--m M] [--lanes L] IMAGE...   writes OUTDIR/NAME.tfc
//! codec_tool decode MODEL TFCDIR IMAGE...   decodes TFCDIR/NAME.tfc, checks pixels
//! codec_tool gap MODEL [--m M] [--lanes L] IMAGE...   coded bits vs model NLL
//! ```
//! Threads come from `RAYON_NUM_THREADS`. Exit status 1 on any mismatch.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tfc_codec::context::{coded_prefix, corner_after};
use tfc_codec::lattice::Lattice;
use tfc_codec::model_file::SplitMix;
use tfc_codec::net::Prefix;
use tfc_codec::{coded_bits, decode_file, encode_images, CodingParams, Image, ModelFile, ModelSet};

fn load(path: &Path) -> Image {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (w, h) = (img.width(), img.height());
    match img {
        image::DynamicImage::ImageLuma8(b) => Image::new(w, h, 1, b.into_raw()),
        image::DynamicImage::ImageRgba8(b) => Image::new(w, h, 4, b.into_raw()),
        other => Image::new(w, h, 3, other.into_rgb8().into_raw()),
    }
    .expect("consistent image")
}

fn name(p: &Path) -> String {
    p.file_stem()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

struct Opts {
    params: CodingParams,
    rest: Vec<PathBuf>,
}

fn opts(args: &[String]) -> Opts {
    let mut params = CodingParams::default();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--m" => params.m = it.next().expect("--m M").parse().expect("number"),
            "--lanes" => params.lanes = it.next().expect("--lanes L").parse().expect("number"),
            _ => rest.push(PathBuf::from(a)),
        }
    }
    Opts { params, rest }
}

/// Model NLL of one tile in bits, with seeded uniform dequantization, from
/// the deterministic network in f64 sums; `prefix`: the tile's context
/// prefix for a model with context.
fn tile_nll_bits(model: &ModelFile, tokens: &[u8], prefix: Option<Prefix<'_>>, seed: u64) -> f64 {
    let net = model.network();
    let cfg = model.config();
    let (n, d) = (cfg.tokens(), cfg.token_dim());
    let mut rng = SplitMix::new(seed);
    let mut y: Vec<f32> = tokens
        .iter()
        .map(|&x| (x as f32 + (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32) / 128.0 - 1.0)
        .collect();
    // Token 0 has parameters only after a context prefix.
    let first = usize::from(prefix.is_none());
    let mut nats = 0f64;
    for t in 0..cfg.blocks {
        let x: Vec<f32> = (0..n - 1)
            .flat_map(|i| {
                let r = net.raster_pos(t, i);
                y[r * d..(r + 1) * d].to_vec()
            })
            .collect();
        let out = net.block_forward_with(t, prefix, &x);
        for i in first..n {
            let r = net.raster_pos(t, i);
            let row = &out[(i - first) * 2 * d..(i - first + 1) * 2 * d];
            for k in 0..d {
                let (a, mu) = (row[k], row[d + k]);
                y[r * d + k] = (y[r * d + k] - mu) * (-a).exp();
                nats += a as f64;
            }
        }
    }
    for &z in &y {
        nats += 0.5 * (z as f64).powi(2) + 0.5 * (2.0 * std::f64::consts::PI).ln();
    }
    nats / std::f64::consts::LN_2 + (n * d) as f64 * 7.0
}

/// Model NLL of an image in bits. A context model reads, for every tile,
/// the tiles to its right, below and below-right, unturned: what a
/// one-lane file gives a tile coded in orientation 0.
fn nll_bits(model: &ModelFile, img: &Image) -> f64 {
    let cfg = model.config();
    let geo = tfc_codec::image::TileGeometry {
        tile: cfg.image_size,
        patch: cfg.patch,
        channels: cfg.channels,
    };
    let planes = tfc_codec::image::to_planes(img, cfg.channels as u8);
    let (gx, gy) = geo.grid(img.width as usize, img.height as usize);
    let mut bits = 0.0;
    for p in &planes {
        let px = |tx: usize, ty: usize| {
            (tx < gx && ty < gy).then(|| geo.to_pixels(&geo.extract(p, tx, ty)))
        };
        for ty in 0..gy {
            for tx in 0..gx {
                let values = cfg.context.then(|| {
                    let (r, b, c) = (px(tx + 1, ty), px(tx, ty + 1), px(tx + 1, ty + 1));
                    coded_prefix(cfg, 0, r.as_deref(), b.as_deref(), c.as_deref())
                });
                let prefix = values.as_deref().map(|values| Prefix {
                    values,
                    corner: corner_after(0),
                });
                let seed = (ty * gx + tx) as u64;
                bits += tile_nll_bits(model, &geo.extract(p, tx, ty), prefix, seed);
            }
        }
    }
    bits
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = ModelFile::from_bytes(&std::fs::read(&args[1]).expect("reading the model"))
        .expect("valid model");
    let set = ModelSet::single(&model).expect("one model");
    let o = opts(&args[2..]);
    let mut failed = false;
    match args[0].as_str() {
        "encode" => {
            let dir = &o.rest[0];
            for p in &o.rest[1..] {
                let img = load(p);
                let t = Instant::now();
                let bytes = encode_images(&set, &[img], &o.params).expect("encoding");
                println!(
                    "{} encode {:.2}s {} bytes",
                    name(p),
                    t.elapsed().as_secs_f64(),
                    bytes.len()
                );
                std::fs::write(dir.join(format!("{}.tfc", name(p))), bytes).expect("writing");
            }
        }
        "decode" => {
            let dir = &o.rest[0];
            for p in &o.rest[1..] {
                let img = load(p);
                let bytes = std::fs::read(dir.join(format!("{}.tfc", name(p)))).expect("reading");
                let t = Instant::now();
                let ok = matches!(decode_file(&set, &bytes), Ok(v) if v == vec![img]);
                println!(
                    "{} decode {:.2}s {}",
                    name(p),
                    t.elapsed().as_secs_f64(),
                    if ok { "exact" } else { "MISMATCH" }
                );
                failed |= !ok;
            }
        }
        "gap" => gap(&model, &set, &o),
        other => panic!("unknown command {other}"),
    }
    if failed {
        std::process::exit(1);
    }
}

fn gap(model: &ModelFile, set: &ModelSet<'_>, o: &Opts) {
    let (mut coded, mut nll, mut fixed, mut dims) = (0f64, 0f64, 0f64, 0f64);
    println!("image dims nll_bpd coded_bpd payload_minus_startup_vs_nll");
    for p in &o.rest {
        let img = load(p);
        let s = coded_bits(set, std::slice::from_ref(&img), &o.params).expect("encoding");
        let n = nll_bits(model, &img);
        let over = s.header_bits as f64 + s.startup_bits as f64;
        let core = s.payload_bits as f64 - s.startup_bits as f64;
        println!(
            "{} {} {:.4} {:.4} {:+.3}%",
            name(p),
            s.dims,
            n / s.dims as f64,
            s.bpd(),
            100.0 * (core / n - 1.0)
        );
        coded += core;
        nll += n;
        fixed += over;
        dims += s.dims as f64;
    }
    let _ = Lattice {
        m: o.params.m as u32,
    };
    println!(
        "total: nll {:.4} bpd, coded (payload - startup) {:.4} bpd, gap {:+.3}%, fixed overhead (header + startup) {:.0} bits = {:.4} bpd",
        nll / dims,
        coded / dims,
        100.0 * (coded / nll - 1.0),
        fixed,
        fixed / dims
    );
}
