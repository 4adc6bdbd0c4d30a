//! A slow, obviously-correct version of the coding network, read straight
//! from the model file's tensors in their `[out][in]` layout with plain
//! loops. It defines what [`crate::net`] must compute: tests check that the
//! fast path matches it bit for bit.

use crate::config::LN_EPS;
use crate::context::prefix_slots;
use crate::model_file::ModelFile;
use crate::net::{raster_pos, Prefix};

fn tensor<'a>(m: &'a ModelFile, name: &str) -> &'a [f32] {
    m.tensor(name).expect("validated model holds every tensor")
}

/// `x @ w^T + b` with `w` as `[out][in]`, each element summed from the bias
/// in ascending input order.
fn linear(x: &[f32], w: &[f32], b: &[f32], n_in: usize, n_out: usize) -> Vec<f32> {
    let rows = x.len() / n_in;
    let mut out = vec![0f32; rows * n_out];
    for r in 0..rows {
        for j in 0..n_out {
            let mut acc = b[j];
            for k in 0..n_in {
                acc += x[r * n_in + k] * w[j * n_in + k];
            }
            out[r * n_out + j] = acc;
        }
    }
    out
}

fn layer_norm(x: &[f32], g: &[f32], b: &[f32], w: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for r in 0..x.len() / w {
        let row = &x[r * w..(r + 1) * w];
        let mut sum = 0f32;
        for &v in row {
            sum += v;
        }
        let mean = sum / w as f32;
        let mut sq = 0f32;
        for &v in row {
            sq += (v - mean) * (v - mean);
        }
        let denom = libm::sqrtf(sq / w as f32 + LN_EPS);
        for k in 0..w {
            out[r * w + k] = (row[k] - mean) / denom * g[k] + b[k];
        }
    }
    out
}

/// Causal multi-head attention over a `[rows][3W]` qkv matrix.
fn attention(qkv: &[f32], rows: usize, w: usize, hd: usize) -> Vec<f32> {
    let scale = 1.0 / libm::sqrtf(hd as f32);
    let mut out = vec![0f32; rows * w];
    for i in 0..rows {
        for h in 0..w / hd {
            let mut scores = vec![0f32; i + 1];
            let mut max = f32::NEG_INFINITY;
            for (j, sc) in scores.iter_mut().enumerate() {
                let mut s = 0f32;
                for d in 0..hd {
                    s += qkv[i * 3 * w + h * hd + d] * qkv[j * 3 * w + w + h * hd + d];
                }
                *sc = s * scale;
                if *sc > max {
                    max = *sc;
                }
            }
            let mut sum = 0f32;
            for sc in scores.iter_mut() {
                *sc = libm::expf(*sc - max);
                sum += *sc;
            }
            for d in 0..hd {
                let mut acc = 0f32;
                for (j, &e) in scores.iter().enumerate() {
                    acc += e / sum * qkv[j * 3 * w + 2 * w + h * hd + d];
                }
                out[i * w + h * hd + d] = acc;
            }
        }
    }
    out
}

/// Block `t` on `rows` tokens given in the block's reading order; returns
/// `rows x 2D` outputs, like [`crate::net::Network::block_forward`].
pub fn block_forward(model: &ModelFile, t: usize, x: &[f32]) -> Vec<f32> {
    block_forward_with(model, t, None, x)
}

/// Block `t` on the context prefix (if any) and `rows` tile tokens in the
/// block's reading order; returns the outputs from the last prefix token
/// on, like [`crate::net::Network::block_forward_with`].
pub fn block_forward_with(
    model: &ModelFile,
    t: usize,
    prefix: Option<Prefix<'_>>,
    x: &[f32],
) -> Vec<f32> {
    let cfg = model.config();
    let (w, d, n) = (cfg.hidden, cfg.token_dim(), cfg.tokens());
    let f = w * cfg.mlp_ratio;
    let p = |s: &str| format!("blocks.{t}.{s}");
    let class_mean: Option<Vec<f32>> = (cfg.classes > 0).then(|| {
        let emb = tensor(model, &p("class_embed"));
        (0..w)
            .map(|k| {
                let mut s = 0f32;
                for c in 0..cfg.classes {
                    s += emb[c * w + k];
                }
                s / cfg.classes as f32
            })
            .collect()
    });
    // Embedding rows: `h = proj(v) + pos`, then `+ class mean`.
    let embed = |h: &mut [f32], pos: &[f32]| {
        for k in 0..w {
            h[k] += pos[k];
            if let Some(cm) = &class_mean {
                h[k] += cm[k];
            }
        }
    };
    let mut h = Vec::new();
    let c = match prefix {
        Some(pre) => {
            let mut hc = linear(
                pre.values,
                tensor(model, &p("ctx_proj.weight")),
                tensor(model, &p("ctx_proj.bias")),
                d + 1,
                w,
            );
            let pos = tensor(model, &p("ctx_pos"));
            for (j, s) in prefix_slots(cfg.grid(), pre.corner).into_iter().enumerate() {
                embed(&mut hc[j * w..(j + 1) * w], &pos[s * w..(s + 1) * w]);
            }
            h.extend(hc);
            cfg.context_len()
        }
        None => 0,
    };
    let mut ht = linear(
        x,
        tensor(model, &p("proj_in.weight")),
        tensor(model, &p("proj_in.bias")),
        d,
        w,
    );
    let pos = tensor(model, &p("pos_embed"));
    for i in 0..x.len() / d {
        let r = raster_pos(t, i, n);
        embed(&mut ht[i * w..(i + 1) * w], &pos[r * w..(r + 1) * w]);
    }
    h.extend(ht);
    let rows = h.len() / w;
    for l in 0..cfg.layers {
        let q = |s: &str| tensor(model, &p(&format!("layers.{l}.{s}")));
        let a = layer_norm(&h, q("attn_norm.weight"), q("attn_norm.bias"), w);
        let qkv = linear(&a, q("qkv.weight"), q("qkv.bias"), w, 3 * w);
        let att = attention(&qkv, rows, w, cfg.head_dim);
        let proj = linear(&att, q("attn_proj.weight"), q("attn_proj.bias"), w, w);
        for k in 0..h.len() {
            h[k] += proj[k];
        }
        let m = layer_norm(&h, q("mlp_norm.weight"), q("mlp_norm.bias"), w);
        let mut hid = linear(&m, q("fc1.weight"), q("fc1.bias"), w, f);
        for v in hid.iter_mut() {
            *v = 0.5 * *v * (1.0 + libm::erff(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
        let out = linear(&hid, q("fc2.weight"), q("fc2.bias"), f, w);
        for k in 0..h.len() {
            h[k] += out[k];
        }
    }
    linear(
        &h[c.saturating_sub(1) * w..],
        tensor(model, &p("proj_out.weight")),
        tensor(model, &p("proj_out.bias")),
        w,
        2 * d,
    )
}
