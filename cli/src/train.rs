//! `tfc train`: runs a preset (with overrides), with progress, validation,
//! checkpoints, `--resume`, a CSV log and a PNG curve.

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use std::path::{Path, PathBuf};
use tfc_model::data::{Dataset, FolderOptions};
use tfc_model::file::WeightDtype;
use tfc_model::presets;
use tfc_model::train::{Growth, Trainer};
use tfc_model::Noise;

#[derive(Args)]
pub struct TrainArgs {
    /// Preset to start from (see --list-presets).
    #[arg(long, default_value = "fmnist-tiny")]
    preset: String,
    /// List the presets and exit.
    #[arg(long)]
    list_presets: bool,
    /// Training data: fashion-mnist:train, fashion-mnist:test, or a folder
    /// of images (searched recursively); `DIR@F` downscales that folder by
    /// F (for JPEG sources). Repeat to combine sources.
    #[arg(long)]
    data: Vec<String>,
    /// Validation data (same forms as --data); "none" disables.
    #[arg(long)]
    val: Option<String>,
    /// Use at most this many validation images.
    #[arg(long, default_value_t = 2000)]
    val_images: usize,
    /// Total optimizer steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Output model file; checkpoint, CSV log and plot go next to it.
    #[arg(short, long)]
    out: PathBuf,
    /// Resume from the checkpoint next to --out.
    #[arg(long)]
    resume: bool,
    /// Overwrite an existing output and start afresh.
    #[arg(short, long)]
    force: bool,
    /// Batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Warm-up steps.
    #[arg(long)]
    warmup: Option<u64>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// EMA decay of the weights (0 disables; with --resume, 0 drops the
    /// average and exports the raw weights).
    #[arg(long)]
    ema: Option<f64>,
    /// Training noise: "uniform" or "gaussian:SIGMA".
    #[arg(long)]
    noise: Option<String>,
    /// Label dropout probability for class-conditional models.
    #[arg(long)]
    label_dropout: Option<f64>,
    /// Integer downscale of folder images (JPEG sources: 2 or more).
    #[arg(long)]
    downscale: Option<usize>,
    /// Add 2x downscaled copies of folder images (true/false).
    #[arg(long)]
    multiscale: Option<bool>,
    /// Tile side in pixels.
    #[arg(long)]
    image_size: Option<usize>,
    /// Patch side.
    #[arg(long)]
    patch: Option<usize>,
    /// Transformer width.
    #[arg(long)]
    hidden: Option<usize>,
    /// Flow blocks. With --resume, grows a trained model to this many (new
    /// blocks come last and start as the identity).
    #[arg(long)]
    blocks: Option<usize>,
    /// Layers per block. With --resume, grows a trained model to this many
    /// (new layers start as the identity, so the resumed model is
    /// unchanged at first).
    #[arg(long)]
    layers: Option<usize>,
    /// Attention head dimension.
    #[arg(long)]
    head_dim: Option<usize>,
    /// Intra-token prediction: after its affine step, each block also
    /// predicts every scaled residual of a token linearly from the ones
    /// before it in the same token (README, The model). With
    /// --resume, adds it to a model that lacks it (starting at zero, so
    /// the resumed model is unchanged at first).
    #[arg(long)]
    intra: bool,
    /// Context tokens: each tile is also conditioned on the already coded
    /// patches around it (README, The model). With --resume, adds them to
    /// a model that lacks them (unlike the other additions, this changes
    /// the model's output from the first step).
    #[arg(long)]
    context: bool,
    /// Learning-rate multiplier of the intra-token matrices (with
    /// --resume, replaces the checkpoint's).
    #[arg(long)]
    intra_lr_scale: Option<f64>,
    /// Learning-rate multiplier of the context embedding (with --resume,
    /// replaces the checkpoint's; default 1). Worth raising when
    /// `--context` is added late in a schedule.
    #[arg(long)]
    context_lr_scale: Option<f64>,
    /// Validate every N steps (0: never).
    #[arg(long)]
    val_every: Option<u64>,
    /// Checkpoint every N steps.
    #[arg(long)]
    ckpt_every: Option<u64>,
    /// Checkpoint precision: "exact" (f32 throughout: a resumed run
    /// continues exactly) or "compact" (bf16 optimizer moments, the EMA as
    /// an f16 offset from the f32 weights: 10 bytes a parameter instead of
    /// 16; a resumed run continues closely). With --resume, the default is
    /// the checkpoint's, and a run with no steps left rewrites it.
    #[arg(long)]
    checkpoint: Option<String>,
    /// Weight precision of the output model file: f16 or f32.
    #[arg(long, default_value = "f16")]
    weights: String,
}

fn parse_noise(s: &str) -> Result<Noise> {
    if s == "uniform" {
        return Ok(Noise::Uniform);
    }
    match s.strip_prefix("gaussian:").map(str::parse::<f64>) {
        Some(Ok(sigma)) if sigma > 0.0 && sigma.is_finite() => Ok(Noise::Gaussian { sigma }),
        _ => bail!("--noise must be \"uniform\" or \"gaussian:SIGMA\" with SIGMA > 0, not {s:?}"),
    }
}

/// Files that belong to a run writing `out`.
pub struct RunFiles {
    pub ckpt: PathBuf,
    pub csv: PathBuf,
    pub plot: PathBuf,
}

impl RunFiles {
    fn new(out: &Path) -> Self {
        let with = |ext: &str| {
            let mut s = out.as_os_str().to_owned();
            s.push(ext);
            PathBuf::from(s)
        };
        Self {
            ckpt: with(".ckpt"),
            csv: with(".log.csv"),
            plot: with(".curve.png"),
        }
    }
}

/// `--checkpoint`: whether checkpoints are compact (none: keep the default
/// or the checkpoint's).
fn parse_checkpoint(s: Option<&str>) -> Result<Option<bool>> {
    match s {
        None => Ok(None),
        Some("exact") => Ok(Some(false)),
        Some("compact") => Ok(Some(true)),
        Some(c) => bail!("--checkpoint must be exact or compact, not {c:?}"),
    }
}

fn build_trainer(a: &TrainArgs, files: &RunFiles, dev: &Device) -> Result<Trainer> {
    let compact = parse_checkpoint(a.checkpoint.as_deref())?;
    let p = presets::find(&a.preset).with_context(|| {
        let names: Vec<_> = presets::all().iter().map(|p| p.name).collect();
        format!("unknown preset {:?} (have: {})", a.preset, names.join(", "))
    })?;
    let mut config = p.config.clone();
    let arch = &mut config.arch;
    arch.image_size = a.image_size.unwrap_or(arch.image_size);
    arch.patch = a.patch.unwrap_or(arch.patch);
    arch.hidden = a.hidden.unwrap_or(arch.hidden);
    arch.blocks = a.blocks.unwrap_or(arch.blocks);
    arch.layers = a.layers.unwrap_or(arch.layers);
    arch.head_dim = a.head_dim.unwrap_or(arch.head_dim.min(arch.hidden));
    arch.intra |= a.intra;
    arch.context |= a.context;
    if let Some(n) = &a.noise {
        config.noise = parse_noise(n)?;
    }
    config.label_dropout = a.label_dropout.unwrap_or(config.label_dropout);
    config.train.preset = p.name.to_string();
    let mut o = p.options.clone();
    o.steps = a.steps.unwrap_or(o.steps);
    o.batch = a.batch.unwrap_or(o.batch);
    o.lr = a.lr.unwrap_or(o.lr);
    o.warmup = a.warmup.unwrap_or(o.warmup);
    o.seed = a.seed.unwrap_or(o.seed);
    o.val_every = a.val_every.unwrap_or(o.val_every);
    o.ckpt_every = a.ckpt_every.unwrap_or(o.ckpt_every);
    o.intra_lr_scale = a.intra_lr_scale.unwrap_or(o.intra_lr_scale);
    o.context_lr_scale = a.context_lr_scale.unwrap_or(o.context_lr_scale);
    o.compact_checkpoint = compact.unwrap_or(o.compact_checkpoint);
    if let Some(e) = a.ema {
        o.ema = (e > 0.0).then_some(e);
    }
    let folder = FolderOptions {
        channels: config.arch.channels,
        downscale: a.downscale.unwrap_or(p.downscale),
        multiscale: a.multiscale.unwrap_or(p.multiscale),
    };
    let sources = if a.data.is_empty() {
        vec![p.data.to_string()]
    } else {
        a.data.clone()
    };
    let mut train: Option<Dataset> = None;
    for src in &sources {
        let (path, opts) = match src.rsplit_once('@').map(|(p, f)| (p, f.parse::<usize>())) {
            Some((path, Ok(f))) if f >= 1 => (
                path,
                FolderOptions {
                    downscale: f,
                    ..folder
                },
            ),
            _ => (src.as_str(), folder),
        };
        let d = Dataset::open(path, opts)?;
        match &mut train {
            None => train = Some(d),
            Some(t) => t.extend(d),
        }
    }
    let train = train.expect("at least one source");
    let val_src = a.val.clone().or(p.val.map(String::from));
    let val = match val_src.as_deref() {
        None | Some("none") => None,
        Some(s) => {
            let mut d = Dataset::open(s, folder)?;
            d.truncate(a.val_images);
            Some(d)
        }
    };
    config.train.data = train.description.clone();
    let announce = |arch: &tfc_model::FlowConfig, images: usize, data: &str| {
        eprintln!(
            "tfc: {} parameters, {images} training images from {data}",
            arch.parameter_count()
        )
    };
    if a.resume {
        let fixed = [
            ("--image-size", a.image_size.is_some()),
            ("--patch", a.patch.is_some()),
            ("--hidden", a.hidden.is_some()),
            ("--head-dim", a.head_dim.is_some()),
        ];
        if let Some((flag, _)) = fixed.iter().find(|(_, set)| *set) {
            bail!("{flag} cannot change on --resume: the checkpoint fixes it (only --layers, --blocks, --intra and --context can grow a model)");
        }
        let steps = a.steps;
        let (data, images) = (train.description.clone(), train.len());
        let grow = Growth {
            intra: a.intra,
            layers: a.layers,
            blocks: a.blocks,
            context: a.context,
        };
        let mut tr = Trainer::resume(&files.ckpt, steps, grow, train, val, dev)
            .with_context(|| format!("resuming from {}", files.ckpt.display()))?;
        if a.ema == Some(0.0) {
            tr.disable_ema();
        }
        if let Some(s) = a.intra_lr_scale {
            tr.set_intra_lr_scale(s);
        }
        if let Some(s) = a.context_lr_scale {
            tr.set_context_lr_scale(s);
        }
        if let Some(c) = compact {
            tr.options.compact_checkpoint = c;
        }
        // A resumed run may add sources; the model file records what it saw.
        if !tr.model.config.train.data.contains(&data) {
            tr.model.config.train.data = format!("{} + {data}", tr.model.config.train.data);
        }
        announce(&tr.model.config.arch, images, &data);
        return Ok(tr);
    }
    announce(&config.arch, train.len(), &train.description);
    Ok(Trainer::new(config, o, train, val, dev)?)
}

/// Drops log rows past `step`: a run resumed from an older checkpoint
/// repeats those steps.
fn truncate_log(csv: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(csv) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| {
            *i == 0
                || l.split(',')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|s| s <= step)
        })
        .map(|(_, l)| l)
        .collect();
    std::fs::write(csv, kept.join("\n") + "\n")?;
    Ok(())
}

pub fn run(a: &TrainArgs, quiet: bool) -> Result<()> {
    if a.list_presets {
        for p in presets::all() {
            println!("{:12} {}", p.name, p.about);
        }
        return Ok(());
    }
    let weights = match a.weights.as_str() {
        "f16" => WeightDtype::F16,
        "f32" => WeightDtype::F32,
        w => bail!("--weights must be f16 or f32, not {w:?}"),
    };
    let files = RunFiles::new(&a.out);
    if !a.resume && !a.force && (a.out.exists() || files.ckpt.exists()) {
        bail!(
            "{} or its checkpoint exists: use --resume to continue or -f to start afresh",
            a.out.display()
        );
    }
    if !a.resume && files.csv.exists() {
        std::fs::remove_file(&files.csv)?;
    }
    let dev = Device::Cpu;
    let mut tr = build_trainer(a, &files, &dev)?;
    if a.resume {
        truncate_log(&files.csv, tr.step)?;
    }
    tr.log_to(&files.csv)?;
    let total = tr.options.steps;
    let pb = crate::progress(
        total,
        quiet,
        "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
    );
    pb.set_position(tr.step);
    let first = tr.step;
    let mut last_val = None;
    let mut rate = 0.0;
    while tr.step < total {
        let s = tr.train_step()?;
        rate = if rate == 0.0 {
            s.images_per_s
        } else {
            0.95 * rate + 0.05 * s.images_per_s
        };
        last_val = s.val_bpd.or(last_val);
        let val = last_val.map(|v| format!(" val {v:.3}")).unwrap_or_default();
        pb.set_message(format!(
            "loss {:.4} bpd {:.3}{val} {:.0} img/s",
            s.loss, s.bpd, rate
        ));
        pb.set_position(s.step);
        if !s.loss.is_finite() {
            bail!("loss is not finite at step {}", s.step);
        }
        let ce = tr.options.ckpt_every;
        if (ce > 0 && s.step.is_multiple_of(ce)) || s.step == total {
            tr.save_checkpoint(&files.ckpt)?;
            tr.export()?.save(&a.out, weights)?;
            crate::plot::curve(&files.csv, &files.plot)?;
        }
    }
    pb.finish();
    if tr.step == first {
        // Nothing left to train: rewrite the checkpoint, in the precision
        // asked for.
        tr.save_checkpoint(&files.ckpt)?;
    }
    let model = tr.export()?;
    model.save(&a.out, weights)?;
    crate::plot::curve(&files.csv, &files.plot)?;
    eprintln!(
        "tfc: wrote {} (step {}, val bpd {})",
        a.out.display(),
        tr.step,
        last_val.map(|v| format!("{v:.4}")).unwrap_or("n/a".into())
    );
    Ok(())
}
