//! The deterministic coding network: the TarFlow's blocks in plain f32.
//!
//! The coder needs `round(mu / delta)` and `R` to be bit-identical in the
//! encoder (all tokens of a block in one pass) and the decoder (one token at
//! a time with a KV cache), on any machine, batch, thread count or SIMD
//! level. Floats are safe for that only if every output element goes
//! through the same sequence of IEEE operations everywhere, so this module:
//! - sums every dot product in one fixed order (ascending input index),
//!   vectorizing across output columns, never across the reduction;
//! - never fuses multiply and add (Rust does not contract `a * b + c`);
//! - takes `expf`, `erff` and `sqrtf` from the pure-Rust `libm` crate;
//! - computes each row (token) with the same functions whether the row is
//!   part of a large batch or alone.
//!
//! [`crate::reference`] holds a slow, obviously-correct version of the same
//! computation; tests check that the two agree bit for bit.
//!
//! A [`FlowConfig::context`] model reads, before a tile's tokens, a prefix
//! of [`FlowConfig::context_len`] context tokens ([`Prefix`]). The encoder
//! runs prefix and tile together ([`Network::block_forward_with`]); the
//! decoder first primes its KV caches with the prefix in one batched pass
//! ([`Network::block_prime`], which gives the first tile token's
//! parameters) and then steps the tile's tokens ([`Network::block_step`]).
//! Every row of the prefix goes through the same operations in both, so the
//! two agree bit for bit as well.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::config::{FlowConfig, LN_EPS};
use crate::error::{CodecError, Result};

/// Rows computed together in the matmul kernel.
const RB: usize = 4;
/// Output columns computed together in the matmul kernel.
const CB: usize = 16;
/// Below this many rows a matmul is not split over threads.
const PAR_ROWS: usize = 16;

/// A linear layer with its weight stored transposed, `[in][out]`.
#[derive(Debug, Clone)]
pub struct Linear {
    w_t: Vec<f32>,
    bias: Vec<f32>,
    n_in: usize,
    n_out: usize,
}

impl Linear {
    /// Builds a layer from a PyTorch-layout weight `[out][in]` and bias.
    pub fn new(weight: &[f32], bias: &[f32], n_out: usize, n_in: usize) -> Self {
        let mut w_t = vec![0f32; n_in * n_out];
        for o in 0..n_out {
            for i in 0..n_in {
                w_t[i * n_out + o] = weight[o * n_in + i];
            }
        }
        Self {
            w_t,
            bias: bias.to_vec(),
            n_in,
            n_out,
        }
    }

    /// Output width.
    pub fn n_out(&self) -> usize {
        self.n_out
    }

    /// `out[r][j] = bias[j] + sum_k x[r][k] * w[j][k]`, summed in ascending
    /// `k` for every element, whatever the number of rows.
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        let rows = x.len() / self.n_in;
        debug_assert_eq!(out.len(), rows * self.n_out);
        let (xs, os) = (RB * self.n_in, RB * self.n_out);
        if rows >= PAR_ROWS {
            out.par_chunks_mut(os)
                .zip(x.par_chunks(xs))
                .for_each(|(o, xi)| self.row_block(xi, o));
        } else {
            for (o, xi) in out.chunks_mut(os).zip(x.chunks(xs)) {
                self.row_block(xi, o);
            }
        }
    }

    fn row_block(&self, x: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if use_avx2() {
            // SAFETY: the CPU supports AVX2 (checked at run time).
            unsafe { self.row_block_avx2(x, out) };
            return;
        }
        self.row_block_generic(x, out);
    }

    /// The same code compiled with AVX2 enabled: 8-wide vectors across
    /// output columns, identical operations per element (AVX2 alone brings
    /// no fused multiply-add, and Rust would not contract one anyway).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn row_block_avx2(&self, x: &[f32], out: &mut [f32]) {
        self.row_block_generic(x, out);
    }

    #[inline(always)]
    fn row_block_generic(&self, x: &[f32], out: &mut [f32]) {
        let rb = x.len() / self.n_in;
        let mut c0 = 0;
        while c0 < self.n_out {
            let cb = CB.min(self.n_out - c0);
            match (rb, cb == CB) {
                (4, true) => self.kernel_full::<4>(x, out, c0),
                (3, true) => self.kernel_full::<3>(x, out, c0),
                (2, true) => self.kernel_full::<2>(x, out, c0),
                (1, true) => self.kernel_full::<1>(x, out, c0),
                _ => self.kernel_tail(x, out, c0, rb, cb),
            }
            c0 += cb;
        }
    }

    /// `R` rows by `CB` columns held in registers; each accumulator adds
    /// its products in ascending `k`.
    #[inline(always)]
    fn kernel_full<const R: usize>(&self, x: &[f32], out: &mut [f32], c0: usize) {
        let (k_in, n) = (self.n_in, self.n_out);
        let mut acc = [[0f32; CB]; R];
        for a in acc.iter_mut() {
            a.copy_from_slice(&self.bias[c0..c0 + CB]);
        }
        for k in 0..k_in {
            let w: &[f32; CB] = self.w_t[k * n + c0..k * n + c0 + CB]
                .try_into()
                .expect("slice of CB columns");
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = x[r * k_in + k];
                for (aj, &wj) in a.iter_mut().zip(w) {
                    *aj += xv * wj;
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            out[r * n + c0..r * n + c0 + CB].copy_from_slice(a);
        }
    }

    /// Same arithmetic as [`Self::kernel_full`] for partial blocks.
    #[inline(always)]
    fn kernel_tail(&self, x: &[f32], out: &mut [f32], c0: usize, rb: usize, cb: usize) {
        let (k_in, n) = (self.n_in, self.n_out);
        for r in 0..rb {
            let o = &mut out[r * n + c0..r * n + c0 + cb];
            o.copy_from_slice(&self.bias[c0..c0 + cb]);
            for k in 0..k_in {
                let xv = x[r * k_in + k];
                let w = &self.w_t[k * n + c0..k * n + c0 + cb];
                for (oj, &wj) in o.iter_mut().zip(w) {
                    *oj += xv * wj;
                }
            }
        }
    }
}

/// Whether the matmul runs its AVX2 build: when the CPU has AVX2 and the
/// environment variable `TFC_NO_AVX2` is unset. Both builds give identical
/// bits; the variable exists so that scripts can check exactly that.
#[cfg(target_arch = "x86_64")]
fn use_avx2() -> bool {
    static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2.get_or_init(|| {
        std::is_x86_feature_detected!("avx2") && std::env::var_os("TFC_NO_AVX2").is_none()
    })
}

/// LayerNorm over one row: biased variance, `eps` = [`LN_EPS`].
pub fn layer_norm(x: &[f32], gain: &[f32], bias: &[f32], out: &mut [f32]) {
    let n = x.len() as f32;
    let mut sum = 0f32;
    for &v in x {
        sum += v;
    }
    let mean = sum / n;
    let mut sq = 0f32;
    for &v in x {
        let d = v - mean;
        sq += d * d;
    }
    let denom = libm::sqrtf(sq / n + LN_EPS);
    for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(gain).zip(bias) {
        *o = (v - mean) / denom * g + b;
    }
}

/// The exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, with `libm::erff`.
pub fn gelu(v: f32) -> f32 {
    0.5 * v * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2))
}

/// Where the keys and values of earlier tokens are stored.
#[derive(Debug, Clone, Copy)]
pub struct KvLayout<'a> {
    /// Rows of keys and values.
    pub data: &'a [f32],
    /// Distance between rows.
    pub stride: usize,
    /// Offset of the key inside a row.
    pub k_off: usize,
    /// Offset of the value inside a row.
    pub v_off: usize,
}

/// Causal attention of one query row over the first `count` stored rows.
/// Scores sum over the head dimension in order; the output sums over
/// tokens in order.
pub fn attend_row(
    q: &[f32],
    kv: KvLayout<'_>,
    count: usize,
    head_dim: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let scale = 1.0 / libm::sqrtf(head_dim as f32);
    scores.resize(count, 0.0);
    for (h, oh) in out.chunks_mut(head_dim).enumerate() {
        let o = h * head_dim;
        let qh = &q[o..o + head_dim];
        let mut max = f32::NEG_INFINITY;
        for (j, s_out) in scores.iter_mut().enumerate() {
            let kj = &kv.data[j * kv.stride + kv.k_off + o..][..head_dim];
            let mut s = 0f32;
            for (&a, &b) in qh.iter().zip(kj) {
                s += a * b;
            }
            let s = s * scale;
            *s_out = s;
            if s > max {
                max = s;
            }
        }
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = libm::expf(*s - max);
            sum += *s;
        }
        oh.fill(0.0);
        for (j, &e) in scores.iter().enumerate() {
            let p = e / sum;
            let vj = &kv.data[j * kv.stride + kv.v_off + o..][..head_dim];
            for (od, &v) in oh.iter_mut().zip(vj) {
                *od += p * v;
            }
        }
    }
}

/// One pre-LayerNorm transformer layer.
#[derive(Debug, Clone)]
pub struct Layer {
    attn_norm: (Vec<f32>, Vec<f32>),
    qkv: Linear,
    attn_proj: Linear,
    mlp_norm: (Vec<f32>, Vec<f32>),
    fc1: Linear,
    fc2: Linear,
}

/// The context tokens' embedding of one block: `ctx_proj` and one
/// position row per ring slot.
#[derive(Debug, Clone)]
struct ContextEmbed {
    proj: Linear,
    pos: Vec<f32>,
}

/// The context prefix of one tile, for a [`FlowConfig::context`] model.
#[derive(Debug, Clone, Copy)]
pub struct Prefix<'a> {
    /// `context_len x context_dim` values: per context token its `D`
    /// values and availability flag (see
    /// [`crate::context::prefix_values`]).
    pub values: &'a [f32],
    /// The corner whose ring slots the tokens fill
    /// ([`crate::context::prefix_slots`]).
    pub corner: u8,
}

/// One flow block: input projection, embeddings, layers, output projection.
#[derive(Debug, Clone)]
pub struct Block {
    proj_in: Linear,
    pos: Vec<f32>,
    ctx: Option<ContextEmbed>,
    class_mean: Option<Vec<f32>>,
    layers: Vec<Layer>,
    proj_out: Linear,
    /// Strictly lower-triangular intra-token prediction, `D x D` row-major
    /// (only the part below the diagonal is read), if the model has one.
    intra: Option<Vec<f32>>,
}

/// The whole coding network of a model file.
#[derive(Debug, Clone)]
pub struct Network {
    cfg: FlowConfig,
    blocks: Vec<Block>,
}

/// Per-lane KV cache for token-by-token decoding of one block.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Per layer: rows of `[key (W) | value (W)]`.
    layers: Vec<Vec<f32>>,
}

impl KvCache {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![Vec::new(); layers],
        }
    }

    /// Forgets every stored token (start of a new block or tile).
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(Vec::clear);
    }
}

/// Scratch buffers reused across calls.
#[derive(Debug, Default)]
struct Scratch {
    norm: Vec<f32>,
    wide: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
}

fn resized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

fn get<'a>(t: &'a HashMap<String, Vec<f32>>, name: &str) -> Result<&'a [f32]> {
    t.get(name)
        .map(|v| v.as_slice())
        .ok_or_else(|| CodecError::Model(format!("tensor {name} is missing")))
}

/// Mean of the class-embedding rows, summed in row order.
fn class_mean(emb: &[f32], classes: usize, w: usize) -> Vec<f32> {
    let mut acc = vec![0f32; w];
    for row in emb.chunks(w).take(classes) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
    acc.iter().map(|&a| a / classes as f32).collect()
}

impl Layer {
    fn load(t: &HashMap<String, Vec<f32>>, p: &str, w: usize, f: usize) -> Result<Self> {
        let n = |s: &str| format!("{p}.{s}");
        let lin = |s: &str, o: usize, i: usize| -> Result<Linear> {
            Ok(Linear::new(
                get(t, &n(&format!("{s}.weight")))?,
                get(t, &n(&format!("{s}.bias")))?,
                o,
                i,
            ))
        };
        let norm = |s: &str| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((
                get(t, &n(&format!("{s}.weight")))?.to_vec(),
                get(t, &n(&format!("{s}.bias")))?.to_vec(),
            ))
        };
        Ok(Self {
            attn_norm: norm("attn_norm")?,
            qkv: lin("qkv", 3 * w, w)?,
            attn_proj: lin("attn_proj", w, w)?,
            mlp_norm: norm("mlp_norm")?,
            fc1: lin("fc1", f, w)?,
            fc2: lin("fc2", w, f)?,
        })
    }
}

impl Network {
    /// Prepares the network from f32 tensors named as in
    /// [`FlowConfig::tensor_shapes`] (shapes already checked).
    pub fn from_tensors(cfg: &FlowConfig, t: &HashMap<String, Vec<f32>>) -> Result<Self> {
        let (w, d) = (cfg.hidden, cfg.token_dim());
        let f = w * cfg.mlp_ratio;
        let mut blocks = Vec::with_capacity(cfg.blocks);
        for b in 0..cfg.blocks {
            let p = format!("blocks.{b}");
            let lin = |s: &str, o: usize, i: usize| -> Result<Linear> {
                Ok(Linear::new(
                    get(t, &format!("{p}.{s}.weight"))?,
                    get(t, &format!("{p}.{s}.bias"))?,
                    o,
                    i,
                ))
            };
            let class_mean = if cfg.classes > 0 {
                Some(class_mean(
                    get(t, &format!("{p}.class_embed"))?,
                    cfg.classes,
                    w,
                ))
            } else {
                None
            };
            let layers = (0..cfg.layers)
                .map(|k| Layer::load(t, &format!("{p}.layers.{k}"), w, f))
                .collect::<Result<Vec<_>>>()?;
            let ctx = if cfg.context {
                Some(ContextEmbed {
                    proj: lin("ctx_proj", w, d + 1)?,
                    pos: get(t, &format!("{p}.ctx_pos"))?.to_vec(),
                })
            } else {
                None
            };
            blocks.push(Block {
                proj_in: lin("proj_in", w, d)?,
                pos: get(t, &format!("{p}.pos_embed"))?.to_vec(),
                ctx,
                class_mean,
                layers,
                proj_out: lin("proj_out", 2 * d, w)?,
                intra: if cfg.intra {
                    Some(get(t, &format!("{p}.intra"))?.to_vec())
                } else {
                    None
                },
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            blocks,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    /// Raster position of the `i`-th token that block `t` reads.
    pub fn raster_pos(&self, t: usize, i: usize) -> usize {
        raster_pos(t, i, self.cfg.tokens())
    }

    /// Whether the blocks predict values within a token
    /// ([`FlowConfig::intra`]).
    pub fn has_intra(&self) -> bool {
        self.cfg.intra
    }

    /// The intra-token prediction of value `k` of a token in block `t` from
    /// its scaled values `0..k` (model space, `(y - mu) exp(-a)` before the
    /// intra step), `prev.len() >= k`: the sum of
    /// `intra[k][j] * prev[j]` over `j` ascending, one rounding per product
    /// and per addition (no fused multiply-add), 0 for a model without it.
    pub fn intra_shift(&self, t: usize, k: usize, prev: &[f32]) -> f32 {
        let Some(m) = &self.blocks[t].intra else {
            return 0.0;
        };
        let d = self.cfg.token_dim();
        let row = &m[k * d..k * d + k];
        let mut acc = 0f32;
        for (w, x) in row.iter().zip(&prev[..k]) {
            acc += w * x;
        }
        acc
    }

    /// Whether the blocks read a context prefix ([`FlowConfig::context`]).
    pub fn has_context(&self) -> bool {
        self.cfg.context
    }

    /// Block `t` on a whole sequence of a model without context: `x`
    /// holds `rows` tokens in the block's reading order (`rows <= tokens`);
    /// returns `rows x 2D` raw outputs (`a` then `mu` of the *next* token).
    /// Same as [`Self::block_forward_with`] without a prefix.
    pub fn block_forward(&self, t: usize, x: &[f32]) -> Vec<f32> {
        self.block_forward_with(t, None, x)
    }

    /// Block `t` on a whole sequence: the context `prefix` (required for
    /// a [`FlowConfig::context`] model, else `None`) followed by `rows`
    /// tile tokens `x` in the block's reading order (`rows <= tokens`).
    /// Returns the raw outputs (`a` then `mu`, `2D` values a row) from the
    /// last prefix token on: with a prefix, `rows + 1` rows, row `j` for
    /// tile token `j`; without, `rows` rows, row `j` for token `j + 1`.
    ///
    /// # Panics
    /// If the prefix is given to a model without context, missing for one
    /// with, or of the wrong length.
    pub fn block_forward_with(&self, t: usize, prefix: Option<Prefix<'_>>, x: &[f32]) -> Vec<f32> {
        let cfg = &self.cfg;
        let blk = &self.blocks[t];
        let (w, d) = (cfg.hidden, cfg.token_dim());
        let c = self.checked_prefix_len(prefix.as_slice());
        let rows = c + x.len() / d;
        let mut s = Scratch::default();
        let mut hbuf = vec![0f32; rows * w];
        let (hc, ht) = hbuf.split_at_mut(c * w);
        if let Some(p) = prefix {
            blk.embed_context(p, cfg.grid(), hc);
        }
        blk.proj_in.forward(x, ht);
        for (i, hr) in ht.chunks_mut(w).enumerate() {
            blk.add_embeddings(hr, self.raster_pos(t, i), w);
        }
        for (l, layer) in blk.layers.iter().enumerate() {
            // Only the rows from the last prefix token on give outputs, so
            // the last layer takes the other prefix rows no further than
            // their keys and values.
            let from = if l + 1 == blk.layers.len() {
                c.saturating_sub(1)
            } else {
                0
            };
            layer.forward_all(&mut hbuf, w, cfg.head_dim, from, &mut s);
        }
        let skipped = if blk.layers.is_empty() {
            c.saturating_sub(1)
        } else {
            0
        };
        let h = &hbuf[skipped * w..];
        let mut out = vec![0f32; h.len() / w * 2 * d];
        blk.proj_out.forward(h, &mut out);
        out
    }

    /// Context tokens per prefix after checking `prefixes` against the
    /// model: none, or each of `context_len x context_dim` values.
    fn checked_prefix_len(&self, prefixes: &[Prefix<'_>]) -> usize {
        let cfg = &self.cfg;
        if prefixes.is_empty() {
            assert!(!cfg.context, "a context model needs a prefix");
            return 0;
        }
        assert!(cfg.context, "a prefix given to a model without context");
        let c = cfg.context_len();
        for p in prefixes {
            assert_eq!(p.values.len(), c * cfg.context_dim(), "prefix length");
            assert!(p.corner < 4, "prefix corner");
        }
        c
    }

    /// Primes one KV cache per lane (empty before) of block `t` with the
    /// lane's context prefix, all lanes and prefix tokens in one batched
    /// pass. Returns `lanes x 2D` raw outputs: the parameters of tile
    /// token 0, exactly as [`Self::block_forward_with`] computes them. The
    /// tile's tokens then follow with [`Self::block_step`].
    ///
    /// # Panics
    /// If the model has no context, or a prefix has the wrong length.
    pub fn block_prime(
        &self,
        t: usize,
        prefixes: &[Prefix<'_>],
        caches: &mut [KvCache],
    ) -> Vec<f32> {
        let cfg = &self.cfg;
        let blk = &self.blocks[t];
        let (w, d) = (cfg.hidden, cfg.token_dim());
        let lanes = prefixes.len();
        debug_assert_eq!(lanes, caches.len());
        if lanes == 0 {
            return Vec::new();
        }
        let c = self.checked_prefix_len(prefixes);
        let mut s = Scratch::default();
        let mut h = vec![0f32; lanes * c * w];
        for (p, hl) in prefixes.iter().zip(h.chunks_mut(c * w)) {
            blk.embed_context(*p, cfg.grid(), hl);
        }
        let mut rows_per_lane = c;
        for (l, layer) in blk.layers.iter().enumerate() {
            // The last layer's outputs are needed only for the last prefix
            // token; its keys and values come before attention.
            let last_only = l + 1 == blk.layers.len();
            layer.forward_prime(&mut h, c, w, cfg.head_dim, l, caches, &mut s, last_only);
            if last_only {
                rows_per_lane = 1;
            }
        }
        let last: Vec<f32> = h
            .chunks(rows_per_lane * w)
            .flat_map(|hl| hl[(rows_per_lane - 1) * w..].iter().copied())
            .collect();
        let mut out = vec![0f32; lanes * 2 * d];
        blk.proj_out.forward(&last, &mut out);
        out
    }

    /// Block `t`, token `i` of its reading order, for a batch of lanes:
    /// `x` holds one token per lane, `caches` one KV cache per lane (holding
    /// the prefix, if any, and tokens `0..i`). Returns `lanes x 2D` raw
    /// outputs, the parameters of token `i + 1`. Every element is computed
    /// exactly as in [`Self::block_forward_with`].
    pub fn block_step(&self, t: usize, i: usize, x: &[f32], caches: &mut [KvCache]) -> Vec<f32> {
        let cfg = &self.cfg;
        let blk = &self.blocks[t];
        let (w, d) = (cfg.hidden, cfg.token_dim());
        let rows = x.len() / d;
        debug_assert_eq!(rows, caches.len());
        let mut s = Scratch::default();
        let mut hbuf = vec![0f32; rows * w];
        let h = hbuf.as_mut_slice();
        blk.proj_in.forward(x, h);
        let pos = self.raster_pos(t, i);
        for hr in h.chunks_mut(w) {
            blk.add_embeddings(hr, pos, w);
        }
        let seq = cfg.context_len() + i;
        for (l, layer) in blk.layers.iter().enumerate() {
            layer.forward_step(h, rows, w, cfg.head_dim, seq, l, caches, &mut s);
        }
        let mut out = vec![0f32; rows * 2 * d];
        blk.proj_out.forward(h, &mut out);
        out
    }
}

/// Raster position of the `i`-th token read by block `t` of `n` tokens.
pub fn raster_pos(t: usize, i: usize, n: usize) -> usize {
    if FlowConfig::block_reversed(t) {
        n - 1 - i
    } else {
        i
    }
}

impl Block {
    fn add_embeddings(&self, hr: &mut [f32], pos: usize, w: usize) {
        self.add_position_and_class(hr, &self.pos[pos * w..(pos + 1) * w]);
    }

    /// `h += pos`, then `h += class mean` (if any), element by element.
    fn add_position_and_class(&self, hr: &mut [f32], pos: &[f32]) {
        for (a, &p) in hr.iter_mut().zip(pos) {
            *a += p;
        }
        if let Some(cm) = &self.class_mean {
            for (a, &c) in hr.iter_mut().zip(cm) {
                *a += c;
            }
        }
    }

    /// The context tokens' inputs to the layers:
    /// `ctx_proj(v_c) + ctx_pos[slot_c] (+ class mean)`, into `h`
    /// (`context_len x W`).
    fn embed_context(&self, prefix: Prefix<'_>, g: usize, h: &mut [f32]) {
        let ctx = self.ctx.as_ref().expect("checked: the model has context");
        let w = ctx.proj.n_out();
        ctx.proj.forward(prefix.values, h);
        let slots = crate::context::prefix_slots(g, prefix.corner);
        for (hr, slot) in h.chunks_mut(w).zip(slots) {
            self.add_position_and_class(hr, &ctx.pos[slot * w..(slot + 1) * w]);
        }
    }
}

fn add_into(h: &mut [f32], delta: &[f32]) {
    for (a, &b) in h.iter_mut().zip(delta) {
        *a += b;
    }
}

fn norm_rows(h: &[f32], w: usize, norm: &(Vec<f32>, Vec<f32>), out: &mut Vec<f32>) {
    let out = resized(out, h.len());
    for (o, x) in out.chunks_mut(w).zip(h.chunks(w)) {
        layer_norm(x, &norm.0, &norm.1, o);
    }
}

impl Layer {
    /// The layer on all rows of `h` (`rows x W`), each row attending to
    /// itself and the rows before it. Rows before `from` only lend their
    /// keys and values: they are dropped from `h`, which keeps the rows
    /// `from..` as they come out of the layer.
    fn forward_all(&self, h: &mut Vec<f32>, w: usize, hd: usize, from: usize, s: &mut Scratch) {
        let rows = h.len() / w;
        norm_rows(h, w, &self.attn_norm, &mut s.norm);
        let qkv = resized(&mut s.wide, rows * 3 * w);
        self.qkv.forward(&s.norm, qkv);
        let att = resized(&mut s.att, (rows - from) * w);
        let kv = KvLayout {
            data: qkv,
            stride: 3 * w,
            k_off: w,
            v_off: 2 * w,
        };
        att.par_chunks_mut(w)
            .enumerate()
            .for_each_init(Vec::new, |scores, (r, o)| {
                let i = from + r;
                attend_row(&qkv[i * 3 * w..i * 3 * w + w], kv, i + 1, hd, scores, o);
            });
        if from > 0 {
            h.drain(..from * w);
        }
        let rows = rows - from;
        let t = resized(&mut s.tmp, rows * w);
        self.attn_proj.forward(att, t);
        add_into(h, t);
        self.mlp(h, rows, w, &mut s.norm, &mut s.wide, &mut s.tmp);
    }

    fn mlp(
        &self,
        h: &mut [f32],
        rows: usize,
        w: usize,
        norm: &mut Vec<f32>,
        wide: &mut Vec<f32>,
        tmp: &mut Vec<f32>,
    ) {
        norm_rows(h, w, &self.mlp_norm, norm);
        let f = resized(wide, rows * self.fc1.n_out());
        self.fc1.forward(norm, f);
        for v in f.iter_mut() {
            *v = gelu(*v);
        }
        let t = resized(tmp, rows * w);
        self.fc2.forward(f, t);
        add_into(h, t);
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_step(
        &self,
        h: &mut [f32],
        rows: usize,
        w: usize,
        hd: usize,
        seq: usize,
        l: usize,
        caches: &mut [KvCache],
        s: &mut Scratch,
    ) {
        norm_rows(h, w, &self.attn_norm, &mut s.norm);
        let qkv = resized(&mut s.wide, rows * 3 * w);
        self.qkv.forward(&s.norm, qkv);
        let att = resized(&mut s.att, rows * w);
        let mut scores = Vec::new();
        for (r, cache) in caches.iter_mut().enumerate() {
            let row = &qkv[r * 3 * w..(r + 1) * 3 * w];
            let c = &mut cache.layers[l];
            debug_assert_eq!(c.len(), seq * 2 * w);
            c.extend_from_slice(&row[w..3 * w]);
            let kv = KvLayout {
                data: c,
                stride: 2 * w,
                k_off: 0,
                v_off: w,
            };
            attend_row(
                &row[..w],
                kv,
                seq + 1,
                hd,
                &mut scores,
                &mut att[r * w..(r + 1) * w],
            );
        }
        let t = resized(&mut s.tmp, rows * w);
        self.attn_proj.forward(att, t);
        add_into(h, t);
        self.mlp(h, rows, w, &mut s.norm, &mut s.wide, &mut s.tmp);
    }
}

impl Layer {
    /// The layer on `c` prefix tokens per lane (`h`: lanes x c rows),
    /// storing their keys and values in the lanes' empty caches. Each row
    /// attends to itself and the rows before it, as in
    /// [`Layer::forward_all`]. With `last_only`, only each lane's last row
    /// goes on through attention and MLP, and `h` keeps only those rows.
    #[allow(clippy::too_many_arguments)]
    fn forward_prime(
        &self,
        h: &mut Vec<f32>,
        c: usize,
        w: usize,
        hd: usize,
        l: usize,
        caches: &mut [KvCache],
        s: &mut Scratch,
        last_only: bool,
    ) {
        let lanes = caches.len();
        norm_rows(h, w, &self.attn_norm, &mut s.norm);
        let qkv = resized(&mut s.wide, lanes * c * 3 * w);
        self.qkv.forward(&s.norm, qkv);
        let first = if last_only { c - 1 } else { 0 };
        let att = resized(&mut s.att, lanes * (c - first) * w);
        let mut scores = Vec::new();
        for (lane, cache) in caches.iter_mut().enumerate() {
            let q = &qkv[lane * c * 3 * w..(lane + 1) * c * 3 * w];
            let kv = &mut cache.layers[l];
            debug_assert!(kv.is_empty());
            for row in q.chunks(3 * w) {
                kv.extend_from_slice(&row[w..3 * w]);
            }
            let layout = KvLayout {
                data: kv,
                stride: 2 * w,
                k_off: 0,
                v_off: w,
            };
            let out = &mut att[lane * (c - first) * w..(lane + 1) * (c - first) * w];
            for (j, o) in (first..c).zip(out.chunks_mut(w)) {
                attend_row(
                    &q[j * 3 * w..j * 3 * w + w],
                    layout,
                    j + 1,
                    hd,
                    &mut scores,
                    o,
                );
            }
        }
        if last_only {
            *h = h
                .chunks(c * w)
                .flat_map(|hl| hl[(c - 1) * w..].iter().copied())
                .collect();
        }
        let rows = h.len() / w;
        let t = resized(&mut s.tmp, rows * w);
        self.attn_proj.forward(att, t);
        add_into(h, t);
        self.mlp(h, rows, w, &mut s.norm, &mut s.wide, &mut s.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_file::SplitMix;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix::new(seed);
        (0..n).map(|_| rng.symmetric()).collect()
    }

    #[test]
    fn avx2_build_matches_generic_build_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            for (k, n) in [(7usize, 40usize), (128, 512), (33, 16)] {
                let lin = Linear::new(&random(k * n, 1), &random(n, 2), n, k);
                for rows in 1..=RB {
                    let x = random(rows * k, 3);
                    let (mut a, mut b) = (vec![0f32; rows * n], vec![0f32; rows * n]);
                    lin.row_block_generic(&x, &mut a);
                    // SAFETY: AVX2 was detected above.
                    unsafe { lin.row_block_avx2(&x, &mut b) };
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a), bits(&b));
                }
            }
        }
    }
}
