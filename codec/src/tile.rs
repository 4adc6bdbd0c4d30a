//! Coding one model-sized tile on a stack: bits-back dequantization, the
//! shift and modular scale transform of every flow block, and the prior.
//!
//! Decoder order (the encoder does the exact inverse, backwards):
//! 1. for blocks `T-1` down to 0, for tokens `1..N` in the block's reading
//!    order, for each value: pop `r_e`, `v = S Z + r_e`, `Y' = v div R`,
//!    push `r_d = v mod R`, `Y = Y' + round(mu / delta)`. A model with
//!    intra-token prediction first undoes, in value order, its shift of
//!    the token's scaled values: `Z_k = Z'_k + round(q_k / delta)`, with
//!    `q_k` the prediction from `Z_0..Z_{k-1}`. Token 0 of a block has
//!    `a = mu = 0` and only that intra step, if any. In the last block
//!    (`T-1`, the first decoded) each final latent `Z` is popped under the
//!    prior just before it is used (with intra prediction, a token's at
//!    once), token 0's before the loop;
//! 2. split `Y` into the pixel `x = (Y >> m) + 128` and push the sub-pixel
//!    `U = Y mod 2^m`.
//!
//! A [`crate::config::FlowConfig::context`] model reads a context prefix
//! per tile ([`Prefix`]) before the tile's tokens; then token 0 has the
//! parameters the network gives after the prefix's last token and is
//! coded like every other token (shift, scale, intra step, prior), and
//! the decoder primes its caches with the prefix before each block.
//!
//! Popping the prior lazily means the encoder pushes each latent of the
//! last block right after computing it, so the bits that block borrows
//! from the stack are paid back token by token. That matters for the first
//! tile on an empty stack, which must borrow every bit it pops before it
//! pushes: it lowers the start-up cost of a lane.

use crate::ans::{self, Stack};
use crate::error::{corrupt, CodecError, Result};
use crate::lattice::{
    pop_below_r, pop_prior, push_below_r, push_prior, scale_numerator, Lattice, LIMIT, S,
};
use crate::net::{KvCache, Network, Prefix};

/// Codes tiles of one model at one lattice precision.
#[derive(Debug, Clone, Copy)]
pub struct TileCoder<'a> {
    net: &'a Network,
    lat: Lattice,
}

/// The integer transform parameters of one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params {
    shift: i64,
    r: i64,
}

impl<'a> TileCoder<'a> {
    /// A coder for `net` with `m` sub-pixel bits.
    pub fn new(net: &'a Network, m: u32) -> Self {
        Self {
            net,
            lat: Lattice { m },
        }
    }

    /// The network's shape.
    pub fn config(&self) -> &crate::config::FlowConfig {
        self.net.config()
    }

    /// Sub-pixel bits.
    pub fn m(&self) -> u32 {
        self.lat.m
    }

    /// Values per tile (`N * D`).
    pub fn values(&self) -> usize {
        self.net.config().dims()
    }

    fn params(&self, out_row: &[f32], d: usize, k: usize) -> Params {
        Params {
            shift: self.lat.shift(out_row[d + k]),
            r: scale_numerator(out_row[k]),
        }
    }

    /// Intra-token shift of value `k` of a token in block `t`: the
    /// prediction from the token's scaled values `0..k` (model space,
    /// before their own intra shift).
    fn intra_shift(&self, t: usize, prev: &[f32], k: usize) -> i64 {
        self.lat.shift(self.net.intra_shift(t, k, prev))
    }

    /// Encoder side of the intra-token step on one token's scaled values:
    /// `Z'_k = Z_k - round(q_k(Z_0..Z_{k-1}) / delta)`.
    fn intra_forward(&self, t: usize, z: &mut [i64]) -> Result<()> {
        let prev = self.model_values(z);
        for (k, v) in z.iter_mut().enumerate() {
            *v = checked_latent(*v - self.intra_shift(t, &prev, k))?;
        }
        Ok(())
    }

    /// Decoder side, in value order: `Z_k = Z'_k + round(q_k / delta)`.
    fn intra_inverse(&self, t: usize, z: &mut [i64]) -> Result<()> {
        let mut prev = vec![0f32; z.len()];
        for k in 0..z.len() {
            let v = z[k] + self.intra_shift(t, &prev, k);
            if v.abs() > LIMIT {
                return Err(corrupt("decoded value out of range"));
            }
            z[k] = v;
            prev[k] = self.lat.to_model(v);
        }
        Ok(())
    }

    fn model_values(&self, y: &[i64]) -> Vec<f32> {
        y.iter().map(|&v| self.lat.to_model(v)).collect()
    }

    /// Checks that `prefixes` (one per tile) suit the model: one for each
    /// of `tiles` tiles with context, none without.
    fn check_prefixes(&self, prefixes: &[Prefix<'_>], tiles: usize) -> Result<()> {
        let cfg = self.net.config();
        let want = if cfg.context { tiles } else { 0 };
        let len = cfg.context_len() * cfg.context_dim();
        if prefixes.len() != want
            || prefixes
                .iter()
                .any(|p| p.values.len() != len || p.corner > 3)
        {
            return Err(CodecError::Misuse(format!(
                "the model needs {want} context prefixes of {len} values"
            )));
        }
        Ok(())
    }

    /// Encodes one tile given as `N x D` pixel values in token order, with
    /// its context prefix for a model with context (else `None`).
    pub fn encode(
        &self,
        stack: &mut Stack,
        tokens: &[u8],
        prefix: Option<Prefix<'_>>,
    ) -> Result<()> {
        let cfg = self.net.config();
        let (n, d, m) = (cfg.tokens(), cfg.token_dim(), self.lat.m);
        if tokens.len() != n * d {
            return Err(CodecError::Misuse(
                "tile has the wrong number of values".into(),
            ));
        }
        self.check_prefixes(prefix.as_slice(), 1)?;
        let mut y = vec![0i64; n * d];
        for e in (0..n * d).rev() {
            let u = ans::pop_uniform(stack, 1 << m)? as i64;
            y[e] = ((tokens[e] as i64 - 128) << m) + u;
        }
        for t in 0..cfg.blocks {
            self.encode_block(stack, t, &mut y, prefix)?;
        }
        Ok(())
    }

    /// Network input of block `t` in its reading order: the first `rows`
    /// tokens.
    fn block_input(&self, t: usize, y: &[i64], rows: usize) -> Vec<f32> {
        let d = self.net.config().token_dim();
        let mut x = Vec::with_capacity(rows * d);
        for i in 0..rows {
            let r = self.net.raster_pos(t, i);
            x.extend(y[r * d..(r + 1) * d].iter().map(|&v| self.lat.to_model(v)));
        }
        x
    }

    /// Encodes block `t`; the last block also pushes each latent under
    /// the prior as soon as it is known.
    fn encode_block(
        &self,
        stack: &mut Stack,
        t: usize,
        y: &mut [i64],
        prefix: Option<Prefix<'_>>,
    ) -> Result<()> {
        let cfg = self.net.config();
        let (n, d) = (cfg.tokens(), cfg.token_dim());
        let last = t + 1 == cfg.blocks;
        // Tokens before `first` have no parameters: token 0 without context.
        let first = usize::from(prefix.is_none());
        if n > first {
            let out = self
                .net
                .block_forward_with(t, prefix, &self.block_input(t, y, n - 1));
            for i in (first..n).rev() {
                let row = &out[(i - first) * 2 * d..(i - first + 1) * 2 * d];
                let r = self.net.raster_pos(t, i);
                self.encode_token(stack, t, &mut y[r * d..(r + 1) * d], row, last)?;
            }
        }
        if first == 1 {
            let r = self.net.raster_pos(t, 0);
            if self.net.has_intra() {
                self.intra_forward(t, &mut y[r * d..(r + 1) * d])?;
            }
            if last {
                for k in (0..d).rev() {
                    push_prior(stack, self.lat, y[r * d + k])?;
                }
            }
        }
        Ok(())
    }

    /// Encodes one token of block `t` with its network output `row`.
    fn encode_token(
        &self,
        stack: &mut Stack,
        t: usize,
        token: &mut [i64],
        row: &[f32],
        last: bool,
    ) -> Result<()> {
        let d = token.len();
        let intra = self.net.has_intra();
        for k in (0..d).rev() {
            let p = self.params(row, d, k);
            let z = scale_forward(stack, token[k], p)?;
            token[k] = z;
            if last && !intra {
                push_prior(stack, self.lat, z)?;
            }
        }
        if intra {
            // The intra step needs the whole token, so the last block
            // pushes the token's latents after it.
            self.intra_forward(t, token)?;
            if last {
                for &z in token.iter().rev() {
                    push_prior(stack, self.lat, z)?;
                }
            }
        }
        Ok(())
    }

    /// Decodes one tile from each stack, all in lockstep so that the
    /// network runs on the lanes as one batch. `prefixes` holds each
    /// tile's context prefix for a model with context, and is empty
    /// otherwise. Returns `N x D` pixel values in token order per stack.
    pub fn decode_batch(
        &self,
        stacks: &mut [&mut Stack],
        prefixes: &[Prefix<'_>],
    ) -> Result<Vec<Vec<u8>>> {
        let cfg = self.net.config();
        let (nd, m) = (cfg.tokens() * cfg.token_dim(), self.lat.m);
        self.check_prefixes(prefixes, stacks.len())?;
        let mut ys = vec![vec![0i64; nd]; stacks.len()];
        for t in (0..cfg.blocks).rev() {
            self.decode_block(stacks, t, &mut ys, prefixes)?;
        }
        let mut out = Vec::with_capacity(stacks.len());
        for (s, y) in stacks.iter_mut().zip(&ys) {
            let mut px = Vec::with_capacity(nd);
            for &v in y {
                let x = (v >> m) + 128;
                if !(0..=255).contains(&x) {
                    return Err(corrupt("decoded pixel out of range"));
                }
                ans::push_uniform(s, (v & ((1 << m) - 1)) as u64, 1 << m)?;
                px.push(x as u8);
            }
            out.push(px);
        }
        Ok(out)
    }

    fn decode_block(
        &self,
        stacks: &mut [&mut Stack],
        t: usize,
        ys: &mut [Vec<i64>],
        prefixes: &[Prefix<'_>],
    ) -> Result<()> {
        let cfg = self.net.config();
        let (n, d) = (cfg.tokens(), cfg.token_dim());
        let last = t + 1 == cfg.blocks;
        let r0 = self.net.raster_pos(t, 0);
        let mut caches = vec![KvCache::new(cfg.layers); stacks.len()];
        if cfg.context {
            let out = self.net.block_prime(t, prefixes, &mut caches);
            for ((s, y), row) in stacks.iter_mut().zip(ys.iter_mut()).zip(out.chunks(2 * d)) {
                self.decode_token(s, t, &mut y[r0 * d..(r0 + 1) * d], row, last)?;
            }
        } else {
            self.decode_first_token(stacks, t, ys, last)?;
        }
        for i in 1..n {
            let prev = self.net.raster_pos(t, i - 1);
            let mut x = Vec::with_capacity(stacks.len() * d);
            for y in ys.iter() {
                x.extend(
                    y[prev * d..(prev + 1) * d]
                        .iter()
                        .map(|&v| self.lat.to_model(v)),
                );
            }
            let out = self.net.block_step(t, i - 1, &x, &mut caches);
            let r = self.net.raster_pos(t, i);
            for ((s, y), row) in stacks.iter_mut().zip(ys.iter_mut()).zip(out.chunks(2 * d)) {
                self.decode_token(s, t, &mut y[r * d..(r + 1) * d], row, last)?;
            }
        }
        Ok(())
    }

    /// Token 0 of block `t` of a model without context: `a = mu = 0`, so
    /// only the prior (in the last block) and the intra step, if any.
    fn decode_first_token(
        &self,
        stacks: &mut [&mut Stack],
        t: usize,
        ys: &mut [Vec<i64>],
        last: bool,
    ) -> Result<()> {
        let d = self.net.config().token_dim();
        let r0 = self.net.raster_pos(t, 0);
        for (s, y) in stacks.iter_mut().zip(ys.iter_mut()) {
            let token = &mut y[r0 * d..(r0 + 1) * d];
            if last {
                for v in token.iter_mut() {
                    *v = pop_prior(s, self.lat)?;
                }
            }
            if self.net.has_intra() {
                self.intra_inverse(t, token)?;
            }
        }
        Ok(())
    }

    /// Decodes one token of block `t` with its network output `row`: the
    /// inverse of [`Self::encode_token`].
    fn decode_token(
        &self,
        s: &mut Stack,
        t: usize,
        token: &mut [i64],
        row: &[f32],
        last: bool,
    ) -> Result<()> {
        let d = token.len();
        let intra = self.net.has_intra();
        if intra {
            if last {
                for v in token.iter_mut() {
                    *v = pop_prior(s, self.lat)?;
                }
            }
            self.intra_inverse(t, token)?;
        }
        for (k, v) in token.iter_mut().enumerate() {
            let p = self.params(row, d, k);
            let z = if last && !intra {
                pop_prior(s, self.lat)?
            } else {
                *v
            };
            *v = scale_inverse(s, z, p)?;
        }
        Ok(())
    }
}

/// Encoder side of shift and scale: `Y' = Y - shift`, pop `r_d < R`,
/// `v = R Y' + r_d`, push `v mod S`, return `v div S`.
fn scale_forward(stack: &mut Stack, y: i64, p: Params) -> Result<i64> {
    let yp = (y - p.shift) as i128;
    let rd = pop_below_r(stack, p.r)? as i128;
    // |R Y'| can exceed 2^63 (R < 2^29, |Y'| < 2^41): i128.
    let v = p.r as i128 * yp + rd;
    let z = v.div_euclid(S as i128);
    ans::push_uniform(stack, v.rem_euclid(S as i128) as u64, S as u64)?;
    if z.abs() > LIMIT as i128 {
        return Err(CodecError::Numeric(
            "latent grew out of range; the model diverges".into(),
        ));
    }
    Ok(z as i64)
}

/// A latent checked against the range the decoder accepts.
fn checked_latent(z: i64) -> Result<i64> {
    if z.abs() > LIMIT {
        return Err(CodecError::Numeric(
            "latent grew out of range; the model diverges".into(),
        ));
    }
    Ok(z)
}

/// Decoder side: pop `r_e < S`, `v = S Z + r_e`, push `v mod R`, return
/// `v div R + shift`.
fn scale_inverse(stack: &mut Stack, z: i64, p: Params) -> Result<i64> {
    let re = ans::pop_uniform(stack, S as u64)? as i64;
    let v = z * S + re;
    let yp = v.div_euclid(p.r);
    push_below_r(stack, v.rem_euclid(p.r), p.r)?;
    let y = yp + p.shift;
    if y.abs() > LIMIT {
        return Err(corrupt("decoded value out of range"));
    }
    Ok(y)
}
