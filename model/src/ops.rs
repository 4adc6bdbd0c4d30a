//! Fused, differentiable LayerNorm, softmax, exact GELU and bias addition
//! for training on the CPU. candle's own fused LayerNorm and softmax have no
//! backward pass, and building them from elementary tensor ops costs many
//! passes over memory; these run one pass forward and one backward,
//! parallel over rows. The bias addition exists for its backward pass:
//! candle sums a broadcast operand's gradient with a generic strided
//! reduction, which took about a seventh of a training step.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use tfc_codec::config::LN_EPS;

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let all = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&all[a..b]),
        None => candle_core::bail!("fused op needs contiguous input"),
    }
}

fn last_dim(l: &Layout) -> usize {
    *l.dims().last().unwrap_or(&1)
}

/// Rows per parallel task: enough work per task to pay for the split.
fn chunk_rows(d: usize) -> usize {
    (16384 / d.max(1)).max(1)
}

/// Mean and reciprocal standard deviation of one row.
fn row_stats(x: &[f32]) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + LN_EPS).sqrt())
}

struct LayerNormOp;

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "tfc-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let d = last_dim(l1);
        let mut out = vec![0f32; x.len()];
        let cr = chunk_rows(d) * d;
        out.par_chunks_mut(cr)
            .zip(x.par_chunks(cr))
            .for_each(|(o, x)| {
                for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                    let (mean, rstd) = row_stats(x);
                    for j in 0..d {
                        o[j] = (x[j] - mean) * rstd * w[j] + b[j];
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = x.dim(candle_core::D::Minus1)?;
        let rows = x.elem_count() / d;
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LayerNormBwd)?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = packed.narrow(0, rows, 1)?.reshape(d)?;
        let db = packed.narrow(0, rows + 1, 1)?.reshape(d)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Gradients of LayerNorm packed as `rows + 2` rows: `dx`, then `dw`, `db`.
struct LayerNormBwd;

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "tfc-layer-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, g) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let d = last_dim(l1);
        let rows = x.len() / d;
        let cr = chunk_rows(d) * d;
        let mut dx = vec![0f32; x.len()];
        let partial: Vec<Vec<f32>> = dx
            .par_chunks_mut(cr)
            .zip(x.par_chunks(cr).zip(g.par_chunks(cr)))
            .map(|(dx, (x, g))| {
                let mut acc = vec![0f32; 2 * d];
                let mut xhat = vec![0f32; d];
                for ((dx, x), g) in dx.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)) {
                    let (mean, rstd) = row_stats(x);
                    let (mut s1, mut s2) = (0f32, 0f32);
                    for j in 0..d {
                        xhat[j] = (x[j] - mean) * rstd;
                        let gw = g[j] * w[j];
                        s1 += gw;
                        s2 += gw * xhat[j];
                        acc[j] += g[j] * xhat[j];
                        acc[d + j] += g[j];
                    }
                    let (m1, m2) = (s1 / d as f32, s2 / d as f32);
                    for j in 0..d {
                        dx[j] = rstd * (g[j] * w[j] - m1 - xhat[j] * m2);
                    }
                }
                acc
            })
            .collect();
        let mut out = dx;
        let mut tail = vec![0f32; 2 * d];
        for p in partial {
            for (t, v) in tail.iter_mut().zip(p) {
                *t += v;
            }
        }
        out.extend(tail);
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, d))))
    }
}

/// LayerNorm over the last dimension, biased variance, eps 1e-5.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(weight, bias, LayerNormOp)
}

struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "tfc-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let d = last_dim(l);
        let mut out = vec![0f32; x.len()];
        let cr = chunk_rows(d) * d;
        out.par_chunks_mut(cr)
            .zip(x.par_chunks(cr))
            .for_each(|(o, x)| {
                for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut s = 0f32;
                    for j in 0..d {
                        o[j] = (x[j] - m).exp();
                        s += o[j];
                    }
                    let r = 1.0 / s;
                    o.iter_mut().for_each(|v| *v *= r);
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwd)?,
        ))
    }
}

/// `dx = y * (g - sum(g * y))` per row.
struct SoftmaxBwd;

impl candle_core::CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "tfc-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (slice(s1, l1)?, slice(s2, l2)?);
        let d = last_dim(l1);
        let mut out = vec![0f32; y.len()];
        let cr = chunk_rows(d) * d;
        out.par_chunks_mut(cr)
            .zip(y.par_chunks(cr).zip(g.par_chunks(cr)))
            .for_each(|(o, (y, g))| {
                for ((o, y), g) in o.chunks_mut(d).zip(y.chunks(d)).zip(g.chunks(d)) {
                    let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
                    for j in 0..d {
                        o[j] = y[j] * (g[j] - dot);
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Softmax over the last dimension; `-inf` entries get probability zero.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SoftmaxOp)
}

const SQRT_2_INV: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// `erf` by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7):
/// several times faster than `libm::erff`, and training needs no more.
/// The coding network computes its own GELU with `libm` for determinism.
fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let r = 1.0 - poly * (-x * x).exp();
    r.copysign(x)
}

struct GeluOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "tfc-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(16384)
            .zip(x.par_chunks(16384))
            .for_each(|(o, x)| {
                for (o, &v) in o.iter_mut().zip(x) {
                    *o = 0.5 * v * (1.0 + erf(v * SQRT_2_INV));
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluBwd)?))
    }
}

/// `d gelu / dx = Phi(x) + x phi(x)`, times the incoming gradient.
struct GeluBwd;

impl candle_core::CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "tfc-gelu-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(s1, l1)?, slice(s2, l2)?);
        let inv_sqrt_2pi = 0.398_942_3_f32;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(16384)
            .zip(x.par_chunks(16384).zip(g.par_chunks(16384)))
            .for_each(|(o, (x, g))| {
                for ((o, &v), &g) in o.iter_mut().zip(x).zip(g) {
                    let cdf = 0.5 * (1.0 + erf(v * SQRT_2_INV));
                    let pdf = inv_sqrt_2pi * (-0.5 * v * v).exp();
                    *o = g * (cdf + v * pdf);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// The exact GELU, `0.5 x (1 + erf(x / sqrt 2))`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluOp)
}

/// `x + b` with `b` repeated over the leading dimensions of `x`.
struct BiasAddOp;

impl CustomOp2 for BiasAddOp {
    fn name(&self) -> &'static str {
        "tfc-bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (slice(s1, l1)?, slice(s2, l2)?);
        let m = b.len();
        let mut out = x.to_vec();
        out.par_chunks_mut(chunk_rows(m) * m).for_each(|o| {
            for row in o.chunks_mut(m) {
                for (v, b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let db = grad
            .contiguous()?
            .apply_op1_no_bwd(&RowSum(b.elem_count()))?
            .reshape(b.shape())?;
        Ok((Some(grad.clone()), Some(db)))
    }
}

/// Sum of the rows of width `.0` of a contiguous tensor.
struct RowSum(usize);

impl CustomOp1 for RowSum {
    fn name(&self) -> &'static str {
        "tfc-row-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = slice(s, l)?;
        let m = self.0;
        let partial: Vec<Vec<f32>> = g
            .par_chunks(chunk_rows(m) * m)
            .map(|c| {
                let mut acc = vec![0f32; m];
                for row in c.chunks(m) {
                    for (a, v) in acc.iter_mut().zip(row) {
                        *a += v;
                    }
                }
                acc
            })
            .collect();
        let mut out = vec![0f32; m];
        for p in partial {
            for (o, v) in out.iter_mut().zip(p) {
                *o += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(m)))
    }
}

/// `x + b`, where the shape of `b` is the trailing part of the shape of `x`
/// (a bias over the last dimension, or position embeddings over tokens and
/// channels), repeated over the leading dimensions.
pub fn bias_add(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (xd, bd) = (x.dims(), b.dims());
    if bd.len() > xd.len() || xd[xd.len() - bd.len()..] != *bd {
        candle_core::bail!("bias_add: shape {bd:?} is not a trailing part of {xd:?}");
    }
    x.contiguous()?.apply_op2(&b.contiguous()?, BiasAddOp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn reference_ln(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (var + LN_EPS as f64)?.sqrt()?.recip()?;
        xc.broadcast_mul(&inv)?.broadcast_mul(w)?.broadcast_add(b)
    }

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let d = crate::nn::max_abs_diff(a, b).unwrap();
        assert!(d < tol, "max difference {d}");
    }

    /// The fused ops give the same values and gradients as the same
    /// functions built from candle's elementary (differentiable) ops.
    #[test]
    fn fused_ops_match_elementary_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (5, 7, 24), &dev)? * 2.0)?)?;
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.3, 24, &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, 24, &dev)?)?;
        let probe = Tensor::randn(0f32, 1.0, (5, 7, 24), &dev)?;
        let pos = Var::from_tensor(&Tensor::randn(0f32, 0.3, (7, 24), &dev)?)?;
        let pairs: [(Tensor, Tensor); 5] = [
            (bias_add(&x, &b)?, x.broadcast_add(&b)?),
            (bias_add(&x, &pos)?, x.broadcast_add(&pos)?),
            (
                layer_norm(&x, &w, &b)?,
                reference_ln(x.as_tensor(), &w, &b)?,
            ),
            (
                softmax_last_dim(&x)?,
                candle_nn::ops::softmax(x.as_tensor(), D::Minus1)?,
            ),
            (gelu(&x)?, x.as_tensor().gelu_erf()?),
        ];
        for (fused, reference) in pairs {
            close(&fused, &reference, 1e-5);
            let gf = (fused * &probe)?.sum_all()?.backward()?;
            let gr = (reference * &probe)?.sum_all()?.backward()?;
            for v in [&x, &w, &b, &pos] {
                match (gf.get(v.as_tensor()), gr.get(v.as_tensor())) {
                    (Some(a), Some(r)) => close(a, r, 1e-4),
                    (None, None) => {}
                    _ => panic!("a gradient on one side only"),
                }
            }
        }
        Ok(())
    }
}
