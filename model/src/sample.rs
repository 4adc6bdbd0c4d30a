//! Generation: inverting the flow token by token with a KV cache, with
//! classifier-free guidance, attention-temperature guidance and one-step
//! score-based denoising, as in the paper.

use crate::error::{ModelError, Result};
use crate::flow::{FlowBlock, Labels, TarFlow};
use crate::nn::KvCache;
use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// What to guide with, if anything.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    /// Guidance weight `w`: `p + g (p - p_guide)` with `g` ramped linearly
    /// from `w / (N - 1)` at the first token to `w` at the last.
    pub weight: f64,
    /// Attention temperature of the guiding branch (1 for plain
    /// classifier-free guidance, where the guiding branch is unconditional).
    pub attn_temp: f64,
}

/// Sampling settings.
#[derive(Debug, Clone, Copy)]
pub struct SampleOptions {
    /// Standard deviation of the prior draw (1 is the model's prior).
    pub temperature: f64,
    /// Guidance, or none.
    pub guidance: Option<Guidance>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            guidance: None,
        }
    }
}

/// Draws `n` prior samples as tokens `(n, N, D)`, seeded.
pub fn prior(
    flow: &TarFlow,
    n: usize,
    temperature: f64,
    seed: u64,
    dev: &Device,
) -> Result<Tensor> {
    let cfg = flow.config();
    let len = n * cfg.tokens() * cfg.token_dim();
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..len)
        .map(|_| {
            let e: f32 = StandardNormal.sample(&mut rng);
            e * temperature as f32
        })
        .collect();
    Ok(Tensor::from_vec(
        v,
        (n, cfg.tokens(), cfg.token_dim()),
        dev,
    )?)
}

fn new_caches(block: &FlowBlock) -> Vec<KvCache> {
    vec![KvCache::default(); block.layer_count()]
}

/// Inverts one block with a KV cache: `z` raster order in, raster out.
fn reverse_block(
    block: &FlowBlock,
    z: &Tensor,
    labels: Option<&Labels>,
    guidance: Option<Guidance>,
) -> Result<Tensor> {
    let n = z.dim(1)?;
    let zp = block.permute(z)?;
    let z0 = zp.narrow(1, 0, 1)?.squeeze(1)?;
    let inv = block.intra_inverse()?;
    let inv = inv.as_ref();
    let mut cond = new_caches(block);
    let mut guide = new_caches(block);
    // A context model samples a tile with no coded neighbours.
    let b = z.dim(0)?;
    let (a0, mu0) = block.first_params(b, labels, None, 1.0, Some(&mut cond), z.device())?;
    if let Some(g) = guidance.filter(|g| g.weight != 0.0) {
        block.first_params(b, None, None, g.attn_temp, Some(&mut guide), z.device())?;
    }
    let mut xs = vec![block.invert_token(&z0, &a0, &mu0, inv)?];
    for i in 0..n - 1 {
        let (mut a, mut mu) = block.step(&xs[i], i, labels, 1.0, &mut cond)?;
        if let Some(g) = guidance.filter(|g| g.weight != 0.0) {
            let (ga, gmu) = block.step(&xs[i], i, None, g.attn_temp, &mut guide)?;
            let w = g.weight * (i + 1) as f64 / (n - 1) as f64;
            a = (&a + ((&a - ga)? * w)?)?;
            mu = (&mu + ((&mu - gmu)? * w)?)?;
        }
        let zi = zp.narrow(1, i + 1, 1)?.squeeze(1)?;
        xs.push(block.invert_token(&zi, &a, &mu, inv)?);
    }
    Ok(block.permute(&Tensor::stack(&xs, 1)?)?)
}

/// Noise tokens to data tokens, last block first.
pub fn reverse(
    flow: &TarFlow,
    z: &Tensor,
    labels: Option<&Labels>,
    guidance: Option<Guidance>,
) -> Result<Tensor> {
    let mut x = z.clone();
    for block in flow.blocks().iter().rev() {
        x = reverse_block(block, &x, labels, guidance)?;
    }
    Ok(x)
}

/// Samples `labels.len()` images `(B, C, H, W)` in model space.
pub fn sample(
    flow: &TarFlow,
    labels: &[Option<u32>],
    opts: SampleOptions,
    seed: u64,
    dev: &Device,
) -> Result<Tensor> {
    let cfg = flow.config();
    if opts
        .guidance
        .is_some_and(|g| g.weight != 0.0 && g.attn_temp == 1.0 && cfg.classes == 0)
    {
        return Err(ModelError::Config(
            "guidance of an unconditional model needs an attention temperature other than 1".into(),
        ));
    }
    let lab = if cfg.classes > 0 {
        if let Some(bad) = labels
            .iter()
            .flatten()
            .find(|&&l| l as usize >= cfg.classes)
        {
            return Err(ModelError::Config(format!(
                "class {bad} out of range: the model has {} classes",
                cfg.classes
            )));
        }
        Some(Labels::new(labels, dev)?)
    } else {
        None
    };
    let z = prior(flow, labels.len(), opts.temperature, seed, dev)?;
    let x = reverse(flow, &z, lab.as_ref(), opts.guidance)?;
    Ok(flow.unpatchify(&x)?)
}

/// One step of score-based denoising: `x + sigma^2 grad log p(x)`, the
/// gradient taken through the flow by autograd.
pub fn denoise(flow: &TarFlow, x: &Tensor, labels: Option<&Labels>, sigma: f64) -> Result<Tensor> {
    let var = Var::from_tensor(&x.detach())?;
    let dims = flow.config().dims() as f64;
    // -log p(x) summed over the batch; its gradient is -grad log p per item.
    let nll = (flow.nll_per_dim(var.as_tensor(), labels, None)?.sum_all()? * dims)?;
    let grads = nll.backward()?;
    let g = grads
        .get(var.as_tensor())
        .ok_or_else(|| ModelError::Config("no gradient for the input".into()))?;
    Ok((x - (g * (sigma * sigma))?)?)
}

/// Model space back to 8-bit pixels (planar, batch-major). Pixel `x` is
/// centred at `(x + 0.5) / 128 - 1` under both kinds of training noise.
pub fn to_pixels(x: &Tensor) -> Result<Vec<u8>> {
    let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
    Ok(v.iter()
        .map(|&y| {
            let p = ((y + 1.0) * 128.0 - 0.5).round();
            if p.is_nan() {
                0
            } else {
                p.clamp(0.0, 255.0) as u8
            }
        })
        .collect())
}
