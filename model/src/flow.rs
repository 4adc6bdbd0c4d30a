//! The TarFlow: patchify, a stack of autoregressive flow blocks with
//! alternating token order, and the `N(0, I)` prior.

use crate::nn::{sum_per_item, KvCache, Layer, Linear};
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};
use tfc_codec::config::FlowConfig;

/// Labels for a batch: class indices, with `None` meaning "no label" (the
/// mean class embedding is used, as for a dropped label).
#[derive(Debug, Clone)]
pub struct Labels {
    /// `(B,)` u32 class indices (any value where dropped).
    pub index: Tensor,
    /// `(B, 1)` f32: 1 where the label is dropped, else 0.
    pub dropped: Tensor,
}

impl Labels {
    /// Builds labels from optional class indices.
    pub fn new(labels: &[Option<u32>], dev: &Device) -> Result<Self> {
        let index: Vec<u32> = labels.iter().map(|l| l.unwrap_or(0)).collect();
        let dropped: Vec<f32> = labels.iter().map(|l| l.is_none() as u8 as f32).collect();
        Ok(Self {
            index: Tensor::new(index, dev)?,
            dropped: Tensor::from_vec(dropped, (labels.len(), 1), dev)?,
        })
    }
}

/// Context prefixes of a batch, for models with [`FlowConfig::context`]:
/// the already coded patches around each tile ([`tfc_codec::context`]).
#[derive(Debug, Clone)]
pub struct Context {
    /// `(B, C, D + 1)`: each context token's values and availability flag.
    pub values: Tensor,
    /// `(B * C,)` u32: the ring slot of each context token.
    pub slots: Tensor,
}

impl Context {
    /// Builds a batch's context from `B * C * (D + 1)` prefix values (as
    /// [`tfc_codec::context::prefix_values`] makes them) and each item's
    /// corner.
    pub fn new(cfg: &FlowConfig, values: Vec<f32>, corners: &[u8], dev: &Device) -> Result<Self> {
        let (b, c, dd) = (corners.len(), cfg.context_len(), cfg.context_dim());
        let slots: Vec<u32> = corners
            .iter()
            .flat_map(|&k| tfc_codec::context::prefix_slots(cfg.grid(), k))
            .map(|s| s as u32)
            .collect();
        Ok(Self {
            values: Tensor::from_vec(values, (b, c, dd), dev)?,
            slots: Tensor::from_vec(slots, b * c, dev)?,
        })
    }

    /// A batch of `b` tiles with no coded neighbour (every context token
    /// unavailable): what sampling and a tile alone use.
    pub fn unavailable(cfg: &FlowConfig, b: usize, dev: &Device) -> Result<Self> {
        let n = b * cfg.context_len() * cfg.context_dim();
        let corners = vec![tfc_codec::context::BOTTOM_RIGHT; b];
        Self::new(cfg, vec![0.0; n], &corners, dev)
    }
}

/// One flow block: a causal transformer predicting, for each token, the
/// shift and log-scale of the next one.
#[derive(Debug, Clone)]
pub struct FlowBlock {
    proj_in: Linear,
    pos_embed: Tensor,
    class_embed: Option<Tensor>,
    layers: Vec<Layer>,
    proj_out: Linear,
    /// Context-token embedding `(D + 1) -> W` and one position embedding
    /// per ring slot, with [`FlowConfig::context`].
    ctx: Option<(Linear, Tensor)>,
    /// Intra-token prediction weights `(D, D)`, used below the diagonal.
    intra: Option<Tensor>,
    /// Strictly lower-triangular 0/1 mask of `intra`.
    intra_mask: Option<Tensor>,
    reversed: bool,
    token_dim: usize,
}

/// Per-layer caches of one guidance branch of a block during sampling.
pub type BlockCache = Vec<KvCache>;

impl FlowBlock {
    fn new(vb: VarBuilder, cfg: &FlowConfig, t: usize) -> Result<Self> {
        let (w, d, n) = (cfg.hidden, cfg.token_dim(), cfg.tokens());
        let small = Init::Randn {
            mean: 0.0,
            stdev: 1e-2,
        };
        let class_embed = if cfg.classes > 0 {
            Some(vb.get_with_hints((cfg.classes, w), "class_embed", small)?)
        } else {
            None
        };
        let layers = (0..cfg.layers)
            .map(|k| Layer::new(vb.pp(format!("layers.{k}")), w, cfg.head_dim, cfg.mlp_ratio))
            .collect::<Result<_>>()?;
        let (intra, intra_mask) = if cfg.intra {
            let mask: Vec<f32> = (0..d * d)
                .map(|e| ((e % d) < (e / d)) as u8 as f32)
                .collect();
            (
                Some(vb.get_with_hints((d, d), "intra", Init::Const(0.0))?),
                Some(Tensor::from_vec(mask, (d, d), vb.device())?),
            )
        } else {
            (None, None)
        };
        let ctx = if cfg.context {
            Some((
                Linear::new(vb.pp("ctx_proj"), d + 1, w)?,
                vb.get_with_hints((cfg.ring_slots(), w), "ctx_pos", small)?,
            ))
        } else {
            None
        };
        Ok(Self {
            ctx,
            proj_in: Linear::new(vb.pp("proj_in"), d, w)?,
            pos_embed: vb.get_with_hints((n, w), "pos_embed", small)?,
            class_embed,
            layers,
            proj_out: Linear::zeros(vb.pp("proj_out"), w, 2 * d)?,
            intra,
            intra_mask,
            reversed: FlowConfig::block_reversed(t),
            token_dim: d,
        })
    }

    /// Puts a raster-order sequence `(B, N, ...)` into this block's order
    /// (and back: the permutation is its own inverse).
    pub fn permute(&self, x: &Tensor) -> Result<Tensor> {
        if self.reversed {
            x.contiguous()?.flip(&[1])
        } else {
            Ok(x.clone())
        }
    }

    fn pos_in_order(&self) -> Result<Tensor> {
        if self.reversed {
            self.pos_embed.flip(&[0])
        } else {
            Ok(self.pos_embed.clone())
        }
    }

    /// Class embedding per batch item, `(B, 1, W)`, or `None` for an
    /// unconditional model.
    fn class_term(&self, labels: Option<&Labels>, batch: usize) -> Result<Option<Tensor>> {
        let Some(table) = &self.class_embed else {
            return Ok(None);
        };
        let mean = table.mean_keepdim(0)?;
        let e = match labels {
            None => mean.broadcast_as((batch, table.dim(1)?))?.contiguous()?,
            Some(l) => {
                let chosen = table.index_select(&l.index, 0)?;
                let keep = (1.0 - &l.dropped)?;
                (chosen.broadcast_mul(&keep)? + mean.broadcast_mul(&l.dropped)?)?
            }
        };
        Ok(Some(e.unsqueeze(1)?))
    }

    /// Embedded context tokens `(B, C, W)` for a context model (`None`
    /// context: every token unavailable), `None` for a model without.
    fn prefix(&self, ctx: Option<&Context>, batch: usize) -> Result<Option<Tensor>> {
        let Some((proj, pos)) = &self.ctx else {
            return Ok(None);
        };
        let own;
        let ctx = match ctx {
            Some(c) => c,
            None => {
                let g = pos.dim(0)? / 4 - 1;
                let (c, dd) = (2 * g + 1, self.token_dim + 1);
                let one = tfc_codec::context::prefix_slots(g, tfc_codec::context::BOTTOM_RIGHT);
                let slots: Vec<u32> = (0..batch)
                    .flat_map(|_| one.iter().map(|&s| s as u32))
                    .collect();
                own = Context {
                    values: Tensor::zeros((batch, c, dd), DType::F32, pos.device())?,
                    slots: Tensor::from_vec(slots, batch * c, pos.device())?,
                };
                &own
            }
        };
        let (b, c, _) = ctx.values.dims3()?;
        let w = pos.dim(1)?;
        let p = pos.index_select(&ctx.slots, 0)?.reshape((b, c, w))?;
        Ok(Some((proj.forward(&ctx.values)? + p)?))
    }

    /// Runs the transformer on tokens (block order) after the embedded
    /// context `prefix`, if any, and returns the raw `(B, C + T, 2D)`
    /// output, not yet shifted. `pos` holds the tokens' position
    /// embeddings.
    fn net(
        &self,
        x: &Tensor,
        pos: &Tensor,
        prefix: Option<&Tensor>,
        class: Option<&Tensor>,
        temp: f64,
        caches: Option<&mut BlockCache>,
    ) -> Result<Tensor> {
        let mut h = crate::ops::bias_add(&self.proj_in.forward(x)?, pos)?;
        if let Some(p) = prefix {
            h = Tensor::cat(&[p, &h], 1)?;
        }
        self.run(h, class, temp, caches)
    }

    /// The transformer layers and output projection on embedded tokens.
    fn run(
        &self,
        mut h: Tensor,
        class: Option<&Tensor>,
        temp: f64,
        mut caches: Option<&mut BlockCache>,
    ) -> Result<Tensor> {
        if let Some(c) = class {
            h = h.broadcast_add(c)?;
        }
        for (k, layer) in self.layers.iter().enumerate() {
            let cache = caches.as_deref_mut().map(|c| &mut c[k]);
            h = layer.forward(&h, temp, cache)?;
        }
        self.proj_out.forward(&h)
    }

    /// Log-scale and shift of token 0 (block order), each `(B, D)`: from the
    /// context prefix (fed through `caches` when given, so that
    /// [`Self::step`] continues after it), or zeros (the identity) for a
    /// model without context.
    pub fn first_params(
        &self,
        batch: usize,
        labels: Option<&Labels>,
        ctx: Option<&Context>,
        temp: f64,
        caches: Option<&mut BlockCache>,
        dev: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let d = self.token_dim;
        match self.prefix(ctx, batch)? {
            None => {
                let zero = Tensor::zeros((batch, d), DType::F32, dev)?;
                Ok((zero.clone(), zero))
            }
            Some(p) => {
                let c = p.dim(1)?;
                let class = self.class_term(labels, batch)?;
                let out = self.run(p, class.as_ref(), temp, caches)?;
                let last = out.narrow(1, c - 1, 1)?.squeeze(1)?;
                Ok((last.narrow(D::Minus1, 0, d)?, last.narrow(D::Minus1, d, d)?))
            }
        }
    }

    /// The effective intra-token matrix `L` (strictly lower-triangular), if
    /// the block has one.
    fn intra_matrix(&self) -> Result<Option<Tensor>> {
        match (&self.intra, &self.intra_mask) {
            (Some(w), Some(m)) => Ok(Some(w.mul(m)?)),
            _ => Ok(None),
        }
    }

    /// The intra-token step on scaled values `s = (x - mu) exp(-a)`:
    /// `z = s - L s` per token (over the last dimension), a volume-preserving
    /// map that removes what the earlier values of a token predict of the
    /// later ones.
    fn intra_forward(&self, s: Tensor) -> Result<Tensor> {
        match self.intra_matrix()? {
            Some(l) => s.broadcast_sub(&s.broadcast_matmul(&l.t()?)?),
            None => Ok(s),
        }
    }

    /// `(I - L)^-1` transposed, computed once per inversion of the block
    /// and passed to [`Self::invert_token`]; `None` without intra-token
    /// prediction.
    pub fn intra_inverse(&self) -> Result<Option<Tensor>> {
        match self.intra_matrix()? {
            Some(l) => Ok(Some(unit_lower_inverse(&l)?.t()?)),
            None => Ok(None),
        }
    }

    /// Inverts one token given its latent, log-scale and shift, all
    /// `(B, D)`, and [`Self::intra_inverse`]: `x = (I - L)^-1 z exp(a) + mu`,
    /// the same as solving value by value.
    pub fn invert_token(
        &self,
        z: &Tensor,
        a: &Tensor,
        mu: &Tensor,
        inv: Option<&Tensor>,
    ) -> Result<Tensor> {
        let s = match inv {
            None => z.clone(),
            Some(inv) => z.matmul(inv)?,
        };
        s.mul(&a.exp()?)? + mu
    }

    /// Data-to-noise direction. `x`: `(B, N, D)` raster order. Returns the
    /// output in raster order and the log-determinant per item `(B,)`.
    pub fn forward(
        &self,
        x: &Tensor,
        labels: Option<&Labels>,
        ctx: Option<&Context>,
    ) -> Result<(Tensor, Tensor)> {
        let (z, a) = self.forward_detail(x, labels, ctx)?;
        Ok((z, sum_per_item(&a)?.neg()?))
    }

    /// As [`Self::forward`], but returns the log-scales `a` per token and
    /// value, `(B, N, D)` in raster order, instead of their total (the
    /// log-determinant is minus their sum).
    pub fn forward_detail(
        &self,
        x: &Tensor,
        labels: Option<&Labels>,
        ctx: Option<&Context>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, n, _) = x.dims3()?;
        let xp = self.permute(x)?;
        let class = self.class_term(labels, b)?;
        let prefix = self.prefix(ctx, b)?;
        let pos = self.pos_in_order()?;
        let out = self.net(&xp, &pos, prefix.as_ref(), class.as_ref(), 1.0, None)?;
        // Token i's parameters come from the output before it: the last
        // context token's for token 0, zeros (the identity) without context.
        let out = match &prefix {
            Some(p) => out.narrow(1, p.dim(1)? - 1, n)?,
            None => out.narrow(1, 0, n - 1)?.pad_with_zeros(1, 1, 0)?,
        };
        let a = out.narrow(D::Minus1, 0, self.token_dim)?;
        let mu = out.narrow(D::Minus1, self.token_dim, self.token_dim)?;
        let z = self.intra_forward((xp - mu)?.mul(&a.neg()?.exp()?)?)?;
        Ok((self.permute(&z)?, self.permute(&a)?))
    }

    /// Number of transformer layers (one KV cache each).
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// One sampling step: feeds token `i` (block order) of `x` through the
    /// network with the cache holding the context and tokens `< i` (see
    /// [`Self::first_params`]), and returns the
    /// log-scale `a` and shift `mu` of token `i + 1`, each `(B, D)`.
    pub fn step(
        &self,
        token: &Tensor,
        i: usize,
        labels: Option<&Labels>,
        temp: f64,
        caches: &mut BlockCache,
    ) -> Result<(Tensor, Tensor)> {
        let b = token.dim(0)?;
        let pos = self.pos_in_order()?.narrow(0, i, 1)?;
        let class = self.class_term(labels, b)?;
        let out = self.net(
            &token.unsqueeze(1)?,
            &pos,
            None,
            class.as_ref(),
            temp,
            Some(caches),
        )?;
        let out = out.squeeze(1)?;
        Ok((
            out.narrow(D::Minus1, 0, self.token_dim)?,
            out.narrow(D::Minus1, self.token_dim, self.token_dim)?,
        ))
    }

    /// Reference inverse without a cache: recomputes the whole prefix for
    /// each token. `z`: `(B, N, D)` raster order; returns raster order.
    pub fn reverse_naive(
        &self,
        z: &Tensor,
        labels: Option<&Labels>,
        ctx: Option<&Context>,
    ) -> Result<Tensor> {
        let (b, n, _) = z.dims3()?;
        let zp = self.permute(z)?;
        let inv = self.intra_inverse()?;
        let inv = inv.as_ref();
        let pos = self.pos_in_order()?;
        let class = self.class_term(labels, b)?;
        let prefix = self.prefix(ctx, b)?;
        let (a0, mu0) = self.first_params(b, labels, ctx, 1.0, None, z.device())?;
        let z0 = zp.narrow(1, 0, 1)?.squeeze(1)?;
        let mut xs: Vec<Tensor> = vec![self.invert_token(&z0, &a0, &mu0, inv)?.unsqueeze(1)?];
        for i in 0..n - 1 {
            let done = Tensor::cat(&xs, 1)?;
            let out = self.net(
                &done,
                &pos.narrow(0, 0, i + 1)?,
                prefix.as_ref(),
                class.as_ref(),
                1.0,
                None,
            )?;
            let last = out.narrow(1, out.dim(1)? - 1, 1)?.squeeze(1)?;
            let a = last.narrow(D::Minus1, 0, self.token_dim)?;
            let mu = last.narrow(D::Minus1, self.token_dim, self.token_dim)?;
            let zi = zp.narrow(1, i + 1, 1)?.squeeze(1)?;
            xs.push(self.invert_token(&zi, &a, &mu, inv)?.unsqueeze(1)?);
        }
        self.permute(&Tensor::cat(&xs, 1)?)
    }
}

/// `(I - L)^-1` of a strictly lower-triangular `L` `(D, D)`, by forward
/// substitution in f64 on the host (`D` is a token's size, small).
fn unit_lower_inverse(l: &Tensor) -> Result<Tensor> {
    let d = l.dim(0)?;
    let lv: Vec<f32> = l.flatten_all()?.to_vec1()?;
    // Row i of the inverse: e_i + sum_{j<i} L[i][j] * row j of the inverse.
    let mut inv = vec![0f64; d * d];
    for i in 0..d {
        inv[i * d + i] = 1.0;
        for j in 0..i {
            let c = lv[i * d + j] as f64;
            if c != 0.0 {
                for k in 0..=j {
                    inv[i * d + k] += c * inv[j * d + k];
                }
            }
        }
    }
    let v: Vec<f32> = inv.into_iter().map(|x| x as f32).collect();
    Tensor::from_vec(v, (d, d), l.device())
}

/// The whole flow.
#[derive(Debug, Clone)]
pub struct TarFlow {
    cfg: FlowConfig,
    blocks: Vec<FlowBlock>,
}

impl TarFlow {
    /// Builds the model from a var builder (fresh init or loaded weights).
    pub fn new(vb: VarBuilder, cfg: &FlowConfig) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let blocks = (0..cfg.blocks)
            .map(|t| FlowBlock::new(vb.pp(format!("blocks.{t}")), cfg, t))
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            blocks,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    /// The flow blocks in data-to-noise order.
    pub fn blocks(&self) -> &[FlowBlock] {
        &self.blocks
    }

    /// `(B, C, H, W)` to `(B, N, C p^2)` tokens, patches in raster order,
    /// values channel-major within a token (as PyTorch's `unfold`).
    pub fn patchify(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let p = self.cfg.patch;
        x.reshape((b, c, h / p, p, w / p, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, (h / p) * (w / p), c * p * p))
    }

    /// Inverse of [`Self::patchify`].
    pub fn unpatchify(&self, t: &Tensor) -> Result<Tensor> {
        let (b, _, _) = t.dims3()?;
        let (p, c, s) = (self.cfg.patch, self.cfg.channels, self.cfg.image_size);
        t.reshape((b, s / p, s / p, c, p, p))?
            .permute((0, 3, 1, 4, 2, 5))?
            .reshape((b, c, s, s))
    }

    /// Data to noise on tokens; returns `z` and the total log-det per item.
    pub fn forward_tokens(
        &self,
        x: &Tensor,
        labels: Option<&Labels>,
        ctx: Option<&Context>,
    ) -> Result<(Tensor, Tensor)> {
        let mut x = x.clone();
        let mut logdet = Tensor::zeros(x.dim(0)?, DType::F32, x.device())?;
        for block in &self.blocks {
            let (z, ld) = block.forward(&x, labels, ctx)?;
            x = z;
            logdet = (logdet + ld)?;
        }
        Ok((x, logdet))
    }

    /// Negative log-likelihood in nats per dimension of continuous `y` in
    /// model space, per item `(B,)`, including `0.5 ln 2 pi`.
    pub fn nll_per_dim(
        &self,
        y: &Tensor,
        labels: Option<&Labels>,
        ctx: Option<&Context>,
    ) -> Result<Tensor> {
        let (z, logdet) = self.forward_tokens(&self.patchify(y)?, labels, ctx)?;
        let dims = self.cfg.dims() as f64;
        let sq = (sum_per_item(&z.sqr()?)? * (0.5 / dims))?;
        let c = 0.5 * (2.0 * std::f64::consts::PI).ln();
        (sq - (logdet / dims)?)? + c
    }

    /// Negative log-likelihood in nats per dimension of each token (patch
    /// position, raster order), `(B, N)`: the prior term of its values and
    /// the log-scales every block applied to them. Their mean over tokens
    /// is [`Self::nll_per_dim`].
    pub fn nll_per_token(
        &self,
        y: &Tensor,
        labels: Option<&Labels>,
        ctx: Option<&Context>,
    ) -> Result<Tensor> {
        let mut x = self.patchify(y)?;
        let d = x.dim(2)? as f64;
        let mut a_sum = x.zeros_like()?;
        for block in &self.blocks {
            let (z, a) = block.forward_detail(&x, labels, ctx)?;
            x = z;
            a_sum = (a_sum + a)?;
        }
        let c = 0.5 * (2.0 * std::f64::consts::PI).ln();
        (((x.sqr()? * 0.5)? + a_sum)?.sum(D::Minus1)? / d)? + c
    }

    /// The paper's training loss: `0.5 mean(z^2) - mean(logdet) / D`.
    pub fn loss(
        &self,
        y: &Tensor,
        labels: Option<&Labels>,
        ctx: Option<&Context>,
    ) -> Result<Tensor> {
        let (z, logdet) = self.forward_tokens(&self.patchify(y)?, labels, ctx)?;
        let dims = self.cfg.dims() as f64;
        (z.sqr()?.mean_all()? * 0.5)? - (logdet.mean_all()? / dims)?
    }

    /// Noise to data without a cache (slow reference), tokens in and out.
    pub fn reverse_naive(
        &self,
        z: &Tensor,
        labels: Option<&Labels>,
        ctx: Option<&Context>,
    ) -> Result<Tensor> {
        let mut x = z.clone();
        for block in self.blocks.iter().rev() {
            x = block.reverse_naive(&x, labels, ctx)?;
        }
        Ok(x)
    }
}

/// Converts a loss in nats per dimension (with the Gaussian constant) of
/// data in `[-1, 1]` to bits per 8-bit dimension.
pub fn nats_to_bpd(nats_per_dim: f64) -> f64 {
    (nats_per_dim + 128f64.ln()) / std::f64::consts::LN_2
}
