//! Training: AdamW with warm-up and cosine decay, gradient clipping, an
//! optional EMA of the weights, label dropout, validation, checkpoints that
//! resume exactly, and a CSV log.

use crate::config::{ModelConfig, Noise};
use crate::data::{to_model_space, Dataset, Sampler};
use crate::error::{ModelError, Result};
use crate::file::{decode_safetensors, encode_safetensors, write_atomic, Model, WeightDtype};
use crate::flow::{nats_to_bpd, Context, Labels, TarFlow};
use candle_core::{backprop::GradStore, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Optimisation settings of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Total optimizer steps.
    pub steps: u64,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Learning rate reached at the last step (cosine).
    pub min_lr: f64,
    /// Linear warm-up steps.
    pub warmup: u64,
    /// AdamW betas.
    pub betas: (f64, f64),
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Gradient-norm clipping threshold (0 disables).
    pub clip: f64,
    /// EMA decay of the weights (none disables); warmed up as
    /// `min(decay, (1 + step) / (10 + step))`.
    pub ema: Option<f64>,
    /// Random horizontal flips.
    pub flip: bool,
    /// Seed of initialisation and data order.
    pub seed: u64,
    /// Validate every this many steps (0 disables).
    pub val_every: u64,
    /// Checkpoint every this many steps (0: only at the end).
    pub ckpt_every: u64,
    /// Learning-rate multiplier of the intra-token matrices, which are
    /// exempt from weight decay: their entries travel from 0 to about 0.5
    /// (a colour's residual predicted from another's), far beyond what the
    /// transformer's weights move.
    #[serde(default = "default_intra_lr_scale")]
    pub intra_lr_scale: f64,
    /// Write compact checkpoints: optimizer moments in bf16 and the EMA as
    /// its f16 offset from the weights, 10 bytes a parameter instead of 16.
    /// The weights stay f32, so a resumed run starts from the same model;
    /// it then continues closely, not exactly, because the rounded moments
    /// shape its first updates.
    #[serde(default)]
    pub compact_checkpoint: bool,
    /// Learning-rate multiplier of the context-token embedding
    /// (`ctx_proj`, `ctx_pos`): added to a trained model late in its
    /// schedule, it starts from random weights while the learning rate is
    /// already small.
    #[serde(default = "default_context_lr_scale")]
    pub context_lr_scale: f64,
}

fn default_intra_lr_scale() -> f64 {
    10.0
}

fn default_context_lr_scale() -> f64 {
    1.0
}

/// Whether a variable is part of the context-token embedding
/// ([`TrainOptions::context_lr_scale`]).
fn is_context(name: &str) -> bool {
    name.contains(".ctx_proj.") || name.ends_with(".ctx_pos")
}

/// Whether a variable is an intra-token matrix ([`TrainOptions::intra_lr_scale`]).
fn is_intra(name: &str) -> bool {
    name.ends_with(".intra")
}

/// Architecture a resumed run adds to its checkpoint's model. Every
/// addition starts as the identity, so the grown model computes exactly
/// what the checkpoint did, and its optimizer moments start at zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Growth {
    /// Add intra-token prediction (matrices at zero).
    pub intra: bool,
    /// Grow every block to this many transformer layers. The new layers
    /// come after the old ones, with their attention and MLP output
    /// projections at zero.
    pub layers: Option<usize>,
    /// Grow the flow to this many blocks. The new blocks come last (next
    /// to the prior), keep the alternation of directions, and start as the
    /// identity (their output projections are at zero, as in a fresh model).
    pub blocks: Option<usize>,
    /// Add context tokens ([`crate::config::FlowConfig::context`]). Unlike
    /// the other additions this changes what the model computes from the
    /// first step: every token now also attends to the context prefix,
    /// and the first token of each block gets a shift and scale from it.
    pub context: bool,
}

/// The block of a `blocks.{t}.*` variable.
fn block_index(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("blocks.")?;
    rest.split_once('.')?.0.parse().ok()
}

/// The layer of a `blocks.{t}.layers.{k}.*` variable.
fn layer_index(name: &str) -> Option<usize> {
    let rest = name.split_once(".layers.")?.1;
    rest.split_once('.')?.0.parse().ok()
}

/// Enters a new variable into checkpoint tensors: value `t` (also its EMA),
/// zero optimizer moments.
fn add_fresh(tensors: &mut HashMap<String, Tensor>, name: &str, t: Tensor) -> Result<()> {
    let zero = t.zeros_like()?;
    tensors.insert(format!("adam_m.{name}"), zero.clone());
    tensors.insert(format!("adam_v.{name}"), zero);
    tensors.insert(format!("ema.{name}"), t.clone());
    tensors.insert(name.to_string(), t);
    Ok(())
}

impl TrainOptions {
    /// Learning rate at `step` (0-based): linear warm-up, then cosine to
    /// `min_lr` at `steps`.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// AdamW with PyTorch's semantics, with state that can be saved. The update
/// runs as one fused pass per variable over plain vectors.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    t: u64,
    betas: (f64, f64),
    weight_decay: f64,
}

/// Flattens a tensor into a vector of f32.
fn flat(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1()?)
}

impl AdamW {
    /// Optimizer over named variables (sorted by name for a stable order).
    pub fn new(mut vars: Vec<(String, Var)>, betas: (f64, f64), weight_decay: f64) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros: Vec<Vec<f32>> = vars
            .iter()
            .map(|(_, v)| vec![0f32; v.elem_count()])
            .collect();
        Ok(Self {
            vars,
            m: zeros.clone(),
            v: zeros,
            t: 0,
            betas,
            weight_decay,
        })
    }

    /// Global L2 norm of the gradients.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sq = 0f64;
        for (_, var) in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        Ok(sq.sqrt())
    }

    /// One update with learning rate `lr` (times `intra_lr_scale` for the
    /// intra-token matrices, `context_lr_scale` for the context
    /// embedding), gradients scaled by `scale`.
    pub fn step(
        &mut self,
        grads: &GradStore,
        lr: f64,
        (intra_lr_scale, context_lr_scale): (f64, f64),
        scale: f64,
    ) -> Result<()> {
        self.t += 1;
        let (b1, b2) = (self.betas.0 as f32, self.betas.1 as f32);
        let c1 = 1.0 - self.betas.0.powi(self.t as i32) as f32;
        let c2 = 1.0 - self.betas.1.powi(self.t as i32) as f32;
        let scale = scale as f32;
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let (lr32, decay) = if is_intra(name) {
                ((lr * intra_lr_scale) as f32, 1.0)
            } else if is_context(name) {
                let lr = lr * context_lr_scale;
                (lr as f32, 1.0 - (lr * self.weight_decay) as f32)
            } else {
                (lr as f32, 1.0 - (lr * self.weight_decay) as f32)
            };
            let g = flat(g)?;
            let mut p = flat(var.as_tensor())?;
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            p.par_chunks_mut(4096)
                .zip(m.par_chunks_mut(4096).zip(v.par_chunks_mut(4096)))
                .zip(g.par_chunks(4096))
                .for_each(|((p, (m, v)), g)| {
                    for j in 0..p.len() {
                        let gj = g[j] * scale;
                        m[j] = b1 * m[j] + (1.0 - b1) * gj;
                        v[j] = b2 * v[j] + (1.0 - b2) * gj * gj;
                        let update = (m[j] / c1) / ((v[j] / c2).sqrt() + 1e-8);
                        p[j] = p[j] * decay - lr32 * update;
                    }
                });
            var.set(&Tensor::from_vec(p, var.shape(), var.device())?)?;
        }
        Ok(())
    }
}

/// What one step reports.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// Step just finished (1-based).
    pub step: u64,
    /// Loss in nats per dimension (without the Gaussian constant).
    pub loss: f64,
    /// The loss as bits per dimension.
    pub bpd: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Training throughput over this step.
    pub images_per_s: f64,
    /// Validation BPD if this step validated.
    pub val_bpd: Option<f64>,
}

/// Checkpoint metadata key.
const META_CKPT: &str = "tfc.checkpoint";

/// Name prefix of a compact checkpoint's EMA, stored as its offset from the
/// weights.
const EMA_OFFSET: &str = "ema_offset.";

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    step: u64,
    adam_t: u64,
    options: TrainOptions,
    config: ModelConfig,
}

/// Validation tiles (planar 8-bit), their labels and, for a context
/// model, their context prefixes.
type Tiles = (Vec<Vec<u8>>, Vec<Option<u32>>, Option<Vec<Vec<f32>>>);

/// A training run: model, optimizer, EMA, data and logs.
pub struct Trainer {
    /// The model being trained.
    pub model: Model,
    opt: AdamW,
    ema: Option<Vec<Tensor>>,
    /// Steps done.
    pub step: u64,
    /// Settings.
    pub options: TrainOptions,
    train: Dataset,
    sampler: Sampler,
    val: Option<Tiles>,
    dev: Device,
    csv: Option<PathBuf>,
}

impl Trainer {
    /// A new run from a fresh model.
    pub fn new(
        config: ModelConfig,
        options: TrainOptions,
        train: Dataset,
        val: Option<Dataset>,
        dev: &Device,
    ) -> Result<Self> {
        let model = Model::fresh(config, options.seed, dev)?;
        Self::with_model(model, options, train, val, dev)
    }

    fn with_model(
        model: Model,
        options: TrainOptions,
        train: Dataset,
        val: Option<Dataset>,
        dev: &Device,
    ) -> Result<Self> {
        let arch = &model.config.arch;
        if train.channels() != arch.channels {
            return Err(ModelError::Data(format!(
                "{} has {} channels, the model {}",
                train.description,
                train.channels(),
                arch.channels
            )));
        }
        let vars: Vec<(String, Var)> = model
            .vars
            .data()
            .lock()
            .expect("varmap lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let opt = AdamW::new(vars, options.betas, options.weight_decay)?;
        let ema = match options.ema {
            Some(_) => Some(
                opt.vars
                    .iter()
                    .map(|(_, v)| v.as_tensor().copy())
                    .collect::<candle_core::Result<_>>()?,
            ),
            None => None,
        };
        let sampler = Sampler::new(&train, arch.image_size, options.flip)?.with_context(arch);
        let val = val.map(|d| {
            let (tiles, labels) = d.tiles(arch.image_size);
            (tiles, labels, arch.context.then(|| d.tile_contexts(arch)))
        });
        Ok(Self {
            model,
            opt,
            ema,
            step: 0,
            options,
            train,
            sampler,
            val,
            dev: dev.clone(),
            csv: None,
        })
    }

    /// Sets [`TrainOptions::intra_lr_scale`] for the steps to come.
    pub fn set_intra_lr_scale(&mut self, scale: f64) {
        self.options.intra_lr_scale = scale;
    }

    /// Sets [`TrainOptions::context_lr_scale`] for the steps to come.
    pub fn set_context_lr_scale(&mut self, scale: f64) {
        self.options.context_lr_scale = scale;
    }

    /// Stops averaging: from now on the exported weights are the raw ones.
    pub fn disable_ema(&mut self) {
        self.ema = None;
        self.options.ema = None;
    }

    /// Appends one CSV row per step to `path` (header written if new).
    pub fn log_to(&mut self, path: &Path) -> Result<()> {
        if !path.exists() {
            let header = "step,lr,loss,train_bpd,grad_norm,images_per_s,val_bpd\n";
            std::fs::write(path, header).map_err(|e| ModelError::io(path, e))?;
        }
        self.csv = Some(path.to_path_buf());
        Ok(())
    }

    fn step_rng(&self) -> StdRng {
        StdRng::seed_from_u64(
            self.options.seed ^ (self.step + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )
    }

    /// Runs one optimizer step.
    pub fn train_step(&mut self) -> Result<StepStats> {
        let start = Instant::now();
        let mut rng = self.step_rng();
        let arch = self.model.config.arch.clone();
        let b = self.options.batch;
        let batch = self.sampler.batch(&self.train, b, &mut rng);
        let shape = (b, arch.channels, arch.image_size, arch.image_size);
        let y = to_model_space(
            &batch.px,
            shape,
            self.model.config.noise,
            &mut rng,
            &self.dev,
        )?;
        let labels = self.train_labels(&batch.labels, &mut rng)?;
        let ctx = match batch.context {
            Some((values, corners)) => Some(Context::new(&arch, values, &corners, &self.dev)?),
            None => None,
        };
        let loss = self.model.flow.loss(&y, labels.as_ref(), ctx.as_ref())?;
        let grads = loss.backward()?;
        let grad_norm = self.opt.grad_norm(&grads)?;
        let clip = self.options.clip;
        let scale = if clip > 0.0 && grad_norm > clip {
            clip / (grad_norm + 1e-6)
        } else {
            1.0
        };
        let lr = self.options.lr_at(self.step);
        self.opt.step(
            &grads,
            lr,
            (self.options.intra_lr_scale, self.options.context_lr_scale),
            scale,
        )?;
        self.update_ema()?;
        self.step += 1;
        let loss = loss.to_scalar::<f32>()? as f64;
        let c = 0.5 * (2.0 * std::f64::consts::PI).ln();
        let mut stats = StepStats {
            step: self.step,
            loss,
            bpd: nats_to_bpd(loss + c),
            lr,
            grad_norm,
            images_per_s: b as f64 / start.elapsed().as_secs_f64(),
            val_bpd: None,
        };
        let ve = self.options.val_every;
        if ve > 0 && (self.step.is_multiple_of(ve) || self.step == self.options.steps) {
            stats.val_bpd = self.validate()?;
        }
        self.write_csv(&stats)?;
        Ok(stats)
    }

    fn train_labels(&self, labels: &[Option<u32>], rng: &mut StdRng) -> Result<Option<Labels>> {
        if self.model.config.arch.classes == 0 {
            return Ok(None);
        }
        let p = self.model.config.label_dropout;
        let kept: Vec<Option<u32>> = labels
            .iter()
            .map(|l| if rng.random_bool(p) { None } else { *l })
            .collect();
        Ok(Some(Labels::new(&kept, &self.dev)?))
    }

    fn update_ema(&mut self) -> Result<()> {
        let (Some(ema), Some(d)) = (&mut self.ema, self.options.ema) else {
            return Ok(());
        };
        // Warm-up of the decay, so the average does not lag far behind the
        // weights (and stay near the initialisation) early in a run.
        let t = self.step as f64;
        let d = d.min((1.0 + t) / (10.0 + t));
        for (e, (_, v)) in ema.iter_mut().zip(&self.opt.vars) {
            // Detached: the average must not keep the autograd history of
            // every step alive.
            *e = ((&*e * d)? + (v.as_tensor().detach() * (1.0 - d))?)?.detach();
        }
        Ok(())
    }

    fn write_csv(&self, s: &StepStats) -> Result<()> {
        let Some(path) = &self.csv else {
            return Ok(());
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| ModelError::io(path, e))?;
        let val = s.val_bpd.map(|v| format!("{v:.5}")).unwrap_or_default();
        writeln!(
            f,
            "{},{:.6e},{:.6},{:.5},{:.4},{:.1},{}",
            s.step, s.lr, s.loss, s.bpd, s.grad_norm, s.images_per_s, val
        )
        .map_err(|e| ModelError::io(path, e))
    }

    /// The model with the weights to ship: the EMA if enabled, else the
    /// current weights.
    pub fn export(&self) -> Result<Model> {
        let mut config = self.model.config.clone();
        config.train.step = self.step;
        config.train.ema = self.ema.is_some();
        let model = Model::fresh(config, 0, &self.dev)?;
        model.set_weights(&self.export_weights()?, &self.dev)?;
        Ok(model)
    }

    fn export_weights(&self) -> Result<HashMap<String, Tensor>> {
        match &self.ema {
            Some(ema) => Ok(self
                .opt
                .vars
                .iter()
                .zip(ema)
                .map(|((n, _), e)| (n.clone(), e.clone()))
                .collect()),
            None => self.model.weights(),
        }
    }

    /// Validation BPD (uniform dequantization, fixed seed) of the exported
    /// weights on the validation tiles.
    pub fn validate(&mut self) -> Result<Option<f64>> {
        let Some((tiles, labels, contexts)) = &self.val else {
            return Ok(None);
        };
        let model = self.export()?;
        let bpd = tile_bpd(
            &model.flow,
            tiles,
            labels,
            contexts.as_deref(),
            1,
            256,
            0,
            &self.dev,
        )?
        .tiles;
        let mean = bpd.iter().sum::<f64>() / bpd.len().max(1) as f64;
        self.model.config.train.val_bpd = Some(mean);
        Ok(Some(mean))
    }

    /// Writes a checkpoint: weights, optimizer moments, EMA, step, options;
    /// exact, or compact ([`TrainOptions::compact_checkpoint`]).
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let compact = self.options.compact_checkpoint;
        let mut t = self.model.weights()?;
        for (i, (n, var)) in self.opt.vars.iter().enumerate() {
            let (shape, dev) = (var.shape(), &self.dev);
            t.insert(
                format!("adam_m.{n}"),
                Tensor::from_vec(self.opt.m[i].clone(), shape, dev)?,
            );
            t.insert(
                format!("adam_v.{n}"),
                Tensor::from_vec(self.opt.v[i].clone(), shape, dev)?,
            );
            match &self.ema {
                Some(ema) if compact => {
                    t.insert(format!("{EMA_OFFSET}{n}"), ema[i].sub(var.as_tensor())?)
                }
                Some(ema) => t.insert(format!("ema.{n}"), ema[i].clone()),
                None => None,
            };
        }
        let meta = CheckpointMeta {
            step: self.step,
            adam_t: self.opt.t,
            options: self.options.clone(),
            config: self.model.config.clone(),
        };
        let json = serde_json::to_string(&meta).map_err(|e| ModelError::Config(e.to_string()))?;
        let dtype_of = |name: &str| match name {
            _ if !compact => WeightDtype::F32,
            n if n.starts_with("adam_") => WeightDtype::Bf16,
            n if n.starts_with(EMA_OFFSET) => WeightDtype::F16,
            _ => WeightDtype::F32,
        };
        let bytes = encode_safetensors(
            &t,
            HashMap::from([(META_CKPT.to_string(), json)]),
            &dtype_of,
        )?;
        write_atomic(path, &bytes)
    }

    /// Resumes a run from a checkpoint. `steps` may extend the schedule;
    /// `grow` may enlarge the model ([`Growth`]), which then still computes
    /// exactly what the checkpoint did.
    pub fn resume(
        path: &Path,
        steps: Option<u64>,
        grow: Growth,
        train: Dataset,
        val: Option<Dataset>,
        dev: &Device,
    ) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        let (meta, tensors) = decode_safetensors(&bytes)?;
        let json = meta
            .get(META_CKPT)
            .ok_or_else(|| ModelError::BadFile(format!("{}: not a checkpoint", path.display())))?;
        let m: CheckpointMeta = serde_json::from_str(json)
            .map_err(|e| ModelError::BadFile(format!("{}: {e}", path.display())))?;
        let mut options = m.options;
        if let Some(s) = steps {
            options.steps = s;
        }
        let mut config = m.config;
        let mut tensors = tensors;
        let before = config.arch.clone();
        for (what, have, want) in [
            ("layers per block", before.layers, grow.layers),
            ("blocks", before.blocks, grow.blocks),
        ] {
            if want.is_some_and(|n| n < have) {
                return Err(ModelError::Config(format!(
                    "the checkpoint has {have} {what}; a resumed run can add {what}, not remove them"
                )));
            }
        }
        config.arch.intra |= grow.intra;
        config.arch.context |= grow.context;
        config.arch.layers = grow.layers.unwrap_or(before.layers);
        config.arch.blocks = grow.blocks.unwrap_or(before.blocks);
        if config.arch != before {
            // Every variable the checkpoint lacks takes the usual
            // initialisation, seeded by the step: intra matrices and new
            // blocks' output projections start at zero, so they are the
            // identity. A new layer in an old block also gets its two
            // output projections zeroed, so the residual stream passes
            // through it unchanged.
            let init = Model::fresh(config.clone(), options.seed ^ m.step, dev)?.weights()?;
            for (name, t) in init {
                if tensors.contains_key(&name) {
                    continue;
                }
                let in_old_block = block_index(&name).is_some_and(|b| b < before.blocks);
                let projection = name.contains(".attn_proj.") || name.contains(".fc2.");
                let t = if in_old_block && layer_index(&name).is_some() && projection {
                    t.zeros_like()?
                } else {
                    t
                };
                add_fresh(&mut tensors, &name, t)?;
            }
        }
        let model = Model::fresh(config, 0, dev)?;
        model.set_weights(&tensors, dev)?;
        let mut tr = Self::with_model(model, options, train, val, dev)?;
        let get = |k: String| {
            tensors
                .get(&k)
                .cloned()
                .ok_or_else(|| ModelError::BadFile(format!("checkpoint lacks {k}")))
        };
        for i in 0..tr.opt.vars.len() {
            let n = tr.opt.vars[i].0.clone();
            tr.opt.m[i] = flat(&get(format!("adam_m.{n}"))?)?;
            tr.opt.v[i] = flat(&get(format!("adam_v.{n}"))?)?;
            if let Some(ema) = &mut tr.ema {
                let e = match tensors.get(&format!("{EMA_OFFSET}{n}")) {
                    Some(offset) => offset.add(&get(n.clone())?)?,
                    None => get(format!("ema.{n}"))?,
                };
                ema[i] = e.to_device(dev)?;
            }
        }
        tr.opt.t = m.adam_t;
        tr.step = m.step;
        Ok(tr)
    }
}

/// Bits per dimension of 8-bit tiles under uniform dequantization,
/// averaged over noise draws.
#[derive(Debug, Clone, PartialEq)]
pub struct TileCost {
    /// Per tile.
    pub tiles: Vec<f64>,
    /// Per patch position (raster order), averaged over the tiles: where
    /// in a tile the model spends its bits.
    pub tokens: Vec<f64>,
}

/// Bits per dimension of each 8-bit tile (planar, model-sized) under
/// uniform dequantization, averaged over `samples` noise draws. A context
/// model reads `contexts` (one prefix per tile, unturned:
/// [`crate::data::Dataset::tile_contexts`]), or no neighbours if `None`.
#[allow(clippy::too_many_arguments)]
pub fn tile_bpd(
    flow: &TarFlow,
    tiles: &[Vec<u8>],
    labels: &[Option<u32>],
    contexts: Option<&[Vec<f32>]>,
    samples: usize,
    batch: usize,
    seed: u64,
    dev: &Device,
) -> Result<TileCost> {
    let arch = flow.config();
    let s = arch.image_size;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = vec![0f64; tiles.len()];
    let mut tokens = vec![0f64; arch.tokens()];
    for _ in 0..samples.max(1) {
        for (ci, chunk) in tiles.chunks(batch.max(1)).enumerate() {
            let px: Vec<u8> = chunk.concat();
            let shape = (chunk.len(), arch.channels, s, s);
            let y = to_model_space(&px, shape, Noise::Uniform, &mut rng, dev)?;
            let lab = if arch.classes > 0 && labels.iter().all(|l| l.is_some()) {
                Some(Labels::new(
                    &labels[ci * batch..ci * batch + chunk.len()],
                    dev,
                )?)
            } else {
                None
            };
            let ctx = match contexts.filter(|_| arch.context) {
                Some(c) => {
                    let from = ci * batch;
                    let values = c[from..from + chunk.len()].concat();
                    let corners = vec![tfc_codec::context::BOTTOM_RIGHT; chunk.len()];
                    Some(Context::new(arch, values, &corners, dev)?)
                }
                None => None,
            };
            let nll: Vec<Vec<f32>> = flow
                .nll_per_token(&y, lab.as_ref(), ctx.as_ref())?
                .to_vec2()?;
            for (j, row) in nll.iter().enumerate() {
                let bpd: Vec<f64> = row.iter().map(|v| nats_to_bpd(*v as f64)).collect();
                out[ci * batch + j] += bpd.iter().sum::<f64>() / bpd.len() as f64;
                for (t, b) in tokens.iter_mut().zip(&bpd) {
                    *t += b;
                }
            }
        }
    }
    let k = samples.max(1) as f64;
    let tiles_seen = (tiles.len().max(1) as f64) * k;
    Ok(TileCost {
        tiles: out.into_iter().map(|v| v / k).collect(),
        tokens: tokens.into_iter().map(|v| v / tiles_seen).collect(),
    })
}
