//! Transformer layers of a flow block, written on candle tensors so that
//! training gets gradients and sampling gets a KV cache and attention
//! temperature. Names follow [`tfc_codec::config::FlowConfig::tensor_shapes`].

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// A dense layer `x W^T + b` with PyTorch's default initialisation.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// PyTorch default: uniform in `+-1/sqrt(in)` for weight and bias.
    pub fn new(vb: VarBuilder, inp: usize, out: usize) -> Result<Self> {
        let bound = 1.0 / (inp as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            weight: vb.get_with_hints((out, inp), "weight", init)?,
            bias: vb.get_with_hints(out, "bias", init)?,
        })
    }

    /// A layer that starts at exactly zero (weight and bias).
    pub fn zeros(vb: VarBuilder, inp: usize, out: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints((out, inp), "weight", Init::Const(0.0))?,
            bias: vb.get_with_hints(out, "bias", Init::Const(0.0))?,
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let inp = dims[dims.len() - 1];
        let rows = x.elem_count() / inp;
        let y = crate::ops::bias_add(
            &x.reshape((rows, inp))?.matmul(&self.weight.t()?)?,
            &self.bias,
        )?;
        let mut out_dims = dims;
        *out_dims.last_mut().expect("rank >= 1") = self.bias.dim(0)?;
        y.reshape(out_dims)
    }
}

/// LayerNorm over the last dimension with affine parameters (eps 1e-5).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    /// Weight one, bias zero.
    pub fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::layer_norm(x, &self.weight, &self.bias)
    }
}

/// Keys and values of the tokens seen so far, per layer, for sampling.
#[derive(Debug, Default, Clone)]
pub struct KvCache {
    kv: Option<(Tensor, Tensor)>,
}

impl KvCache {
    /// Forgets every cached token.
    pub fn clear(&mut self) {
        self.kv = None;
    }

    fn append(&mut self, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match self.kv.take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
        };
        self.kv = Some((k.clone(), v.clone()));
        Ok((k, v))
    }
}

/// One pre-LayerNorm transformer layer: causal self-attention then MLP.
#[derive(Debug, Clone)]
pub struct Layer {
    attn_norm: LayerNorm,
    qkv: Linear,
    attn_proj: Linear,
    mlp_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    head_dim: usize,
}

impl Layer {
    /// Builds a layer of width `hidden`.
    pub fn new(vb: VarBuilder, hidden: usize, head_dim: usize, mlp_ratio: usize) -> Result<Self> {
        let f = hidden * mlp_ratio;
        Ok(Self {
            attn_norm: LayerNorm::new(vb.pp("attn_norm"), hidden)?,
            qkv: Linear::new(vb.pp("qkv"), hidden, 3 * hidden)?,
            attn_proj: Linear::new(vb.pp("attn_proj"), hidden, hidden)?,
            mlp_norm: LayerNorm::new(vb.pp("mlp_norm"), hidden)?,
            fc1: Linear::new(vb.pp("fc1"), hidden, f)?,
            fc2: Linear::new(vb.pp("fc2"), f, hidden)?,
            heads: hidden / head_dim,
            head_dim,
        })
    }

    /// `x`: `(B, T, W)`. With `cache`, `x` holds new tokens that follow the
    /// cached ones and attention is causal over cache + new tokens; without,
    /// attention is causal over `x`. Attention logits are divided by `temp`.
    pub fn forward(&self, x: &Tensor, temp: f64, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let h = self.attn_norm.forward(x)?;
        let att = self.attention(&h, temp, cache)?;
        let x = (x + self.attn_proj.forward(&att)?)?;
        let h = self.mlp_norm.forward(&x)?;
        let h = self
            .fc2
            .forward(&crate::ops::gelu(&self.fc1.forward(&h)?)?)?;
        x + h
    }

    fn attention(&self, h: &Tensor, temp: f64, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t, w) = h.dims3()?;
        let qkv = self
            .qkv
            .forward(h)?
            .reshape((b, t, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let mut k = qkv.get(1)?.contiguous()?;
        let mut v = qkv.get(2)?.contiguous()?;
        if let Some(cache) = cache {
            (k, v) = cache.append(k, v)?;
        }
        let total = k.dim(2)?;
        let scale = 1.0 / ((self.head_dim as f64).sqrt() * temp);
        let logits = (q.matmul(&k.t()?)? * scale)?;
        let logits = if t > 1 {
            logits.broadcast_add(&causal_mask(t, total, h.device())?)?
        } else {
            logits
        };
        let p = crate::ops::softmax_last_dim(&logits)?;
        p.matmul(&v)?.transpose(1, 2)?.reshape((b, t, w))
    }
}

/// Additive mask for `t` new queries placed after `total - t` earlier keys.
fn causal_mask(t: usize, total: usize, dev: &candle_core::Device) -> Result<Tensor> {
    let past = total - t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= past + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (t, total), dev)?.to_dtype(DType::F32)
}

/// Sum over all but the first dimension, giving one value per batch item.
pub fn sum_per_item(x: &Tensor) -> Result<Tensor> {
    let b = x.dim(0)?;
    x.reshape((b, ()))?.sum(D::Minus1)
}

/// Largest absolute element-wise difference of two same-shaped tensors.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.max_all()?.to_scalar()
}
