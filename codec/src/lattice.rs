//! The integer lattice: how network outputs become the exact integers the
//! coder uses (`round(mu / delta)` and `R`), and the coarse Gaussian prior.
//!
//! Everything that reaches the coder is an integer computed from f32
//! network outputs by exact or correctly rounded operations (scaling by a
//! power of two, `libm` functions, round half away from zero), so the
//! encoder and the decoder agree as long as the network outputs agree.

use std::sync::OnceLock;

use crate::ans::{self, Stack, TableModel, TOTAL};
use crate::error::{corrupt, CodecError, Result};

/// `log2 S` of the scale transform.
pub const S_BITS: u32 = 16;
/// The scale denominator `S`.
pub const S: i64 = 1 << S_BITS;
/// Largest scale numerator `R` (scales up to `R_MAX / S = 4096`, i.e.
/// log-scales down to about -8.3; trained models expand smooth regions by
/// more than 64, and a clamp there costs its full log-ratio in bits).
pub const R_MAX: i64 = 1 << 28;
/// Largest magnitude of any lattice value the coder handles.
pub const LIMIT: i64 = (1 << 40) - 1;
/// Largest magnitude of a shift in model units before scaling.
const MU_CLAMP: f32 = 4096.0;
/// Largest magnitude of a log-scale.
const A_CLAMP: f64 = 30.0;
/// Coarse prior bins per standard deviation (`2^5`).
const BIN_BITS: u32 = 5;
/// Coarse bins on each side of zero (8 standard deviations).
const HALF_BINS: i64 = 8 << BIN_BITS;
/// Weight of the escape symbol in the prior table.
const ESCAPE_WEIGHT: u32 = 64;
/// Offset that makes an escaped value non-negative.
const ESC_OFFSET: i64 = 1 << 40;

/// Lattice parameters derived from `m` (sub-pixel bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lattice {
    /// Sub-pixel bits.
    pub m: u32,
}

impl Lattice {
    /// `1 / delta = 2^(7 + m)`.
    pub fn inv_delta(&self) -> f32 {
        (1u64 << (7 + self.m)) as f32
    }

    /// Model-space value of a lattice integer: `Y * delta`.
    pub fn to_model(&self, y: i64) -> f32 {
        y as f32 / self.inv_delta()
    }

    /// `round(mu / delta)`, clamped; NaN maps to 0.
    pub fn shift(&self, mu: f32) -> i64 {
        let mu = if mu.is_nan() {
            0.0
        } else {
            mu.clamp(-MU_CLAMP, MU_CLAMP)
        };
        libm::roundf(mu * self.inv_delta()) as i64
    }

    /// Bits of the low part coded uniformly under the prior.
    fn low_bits(&self) -> u32 {
        self.m + 7 - BIN_BITS
    }
}

/// Significant bits kept in `R`: a pop from `[0, R)` is coded as an exact
/// power-of-two part and a part below `2^R_BITS`, whose 24-bit uniform
/// probabilities are then exact to better than 1 in 4096 (a direct pop from
/// a range near `2^22` would lose up to about 0.01 bits).
pub const R_BITS: u32 = 12;

/// `R = clamp(round(S exp(-a)), 1, R_MAX)` rounded to [`R_BITS`]
/// significant bits; NaN maps to `a = 0`.
pub fn scale_numerator(a: f32) -> i64 {
    let a = if a.is_nan() {
        0.0
    } else {
        (a as f64).clamp(-A_CLAMP, A_CLAMP)
    };
    let r = libm::round(libm::exp(-a) * S as f64) as i64;
    round_significant(r.clamp(1, R_MAX))
}

/// Rounds `r >= 1` to [`R_BITS`] significant bits (half up).
fn round_significant(r: i64) -> i64 {
    let bits = 64 - r.leading_zeros();
    if bits <= R_BITS {
        return r;
    }
    let k = bits - R_BITS;
    ((r + (1 << (k - 1))) >> k) << k
}

/// Splits `R` into `(hi, k)` with `R = hi << k`, `k <= 16` and
/// `hi <= 2^12`: both ranges fit the 24-bit coder, and `hi` is small enough
/// for its uniform probabilities to be nearly exact.
pub fn split_r(r: i64) -> (u64, u32) {
    let k = r.trailing_zeros().min(16);
    ((r >> k) as u64, k)
}

/// Pops `r_d` uniformly from `[0, R)` as a high part and `k` low bits.
pub fn pop_below_r(stack: &mut Stack, r: i64) -> Result<i64> {
    let (hi_range, k) = split_r(r);
    let hi = ans::pop_uniform(stack, hi_range)?;
    let lo = ans::pop_uniform(stack, 1 << k)?;
    Ok(((hi << k) | lo) as i64)
}

/// Pushes `v` in `[0, R)`, the inverse of [`pop_below_r`].
pub fn push_below_r(stack: &mut Stack, v: i64, r: i64) -> Result<()> {
    let (hi_range, k) = split_r(r);
    let v = v as u64;
    ans::push_uniform(stack, v & ((1 << k) - 1), 1 << k)?;
    ans::push_uniform(stack, v >> k, hi_range)
}

/// Cumulative table of the coarse prior: `2 * HALF_BINS` Gaussian bins and
/// one escape symbol, built once from `libm::erf` in f64.
pub fn prior_cdf() -> &'static [u32] {
    static TABLE: OnceLock<Vec<u32>> = OnceLock::new();
    TABLE.get_or_init(build_prior_cdf)
}

fn build_prior_cdf() -> Vec<u32> {
    let bins = (2 * HALF_BINS) as usize;
    let avail = TOTAL - ESCAPE_WEIGHT;
    let spread = (avail - bins as u32) as f64;
    let phi = |k: i64| 0.5 * (1.0 + libm::erf((k as f64 / (1 << BIN_BITS) as f64) / 2f64.sqrt()));
    let mut weights: Vec<u32> = (0..bins as i64)
        .map(|k| {
            let p = phi(k - HALF_BINS + 1) - phi(k - HALF_BINS);
            1 + (p * spread).floor() as u32
        })
        .collect();
    let used: u32 = weights.iter().sum();
    weights[HALF_BINS as usize] += avail - used;
    weights.push(ESCAPE_WEIGHT);
    ans::cdf_from_weights(&weights)
}

/// Pushes a final latent integer under the prior.
pub fn push_prior(stack: &mut Stack, lat: Lattice, z: i64) -> Result<()> {
    let model = TableModel::new(prior_cdf());
    let lb = lat.low_bits();
    let bin = z >> lb;
    if (-HALF_BINS..HALF_BINS).contains(&bin) {
        ans::push_uniform(stack, (z & ((1 << lb) - 1)) as u64, 1 << lb)?;
        ans::push_table(stack, (bin + HALF_BINS) as usize, model)
    } else {
        if z.abs() > LIMIT {
            return Err(CodecError::Numeric("latent out of range".into()));
        }
        let u = (z + ESC_OFFSET) as u64;
        ans::push_uniform(stack, u & ((1 << 21) - 1), 1 << 21)?;
        ans::push_uniform(stack, u >> 21, 1 << 20)?;
        ans::push_table(stack, model.len() - 1, model)
    }
}

/// Pops a final latent integer under the prior.
pub fn pop_prior(stack: &mut Stack, lat: Lattice) -> Result<i64> {
    let model = TableModel::new(prior_cdf());
    let sym = ans::pop_table(stack, model)?;
    if sym == model.len() - 1 {
        let hi = ans::pop_uniform(stack, 1 << 20)?;
        let lo = ans::pop_uniform(stack, 1 << 21)?;
        let z = ((hi << 21) | lo) as i64 - ESC_OFFSET;
        if z.abs() > LIMIT {
            return Err(corrupt("escaped latent out of range"));
        }
        return Ok(z);
    }
    let lb = lat.low_bits();
    let low = ans::pop_uniform(stack, 1 << lb)? as i64;
    Ok(((sym as i64 - HALF_BINS) << lb) | low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prior_table_is_valid() {
        let cdf = prior_cdf();
        assert_eq!(cdf[0], 0);
        assert_eq!(*cdf.last().unwrap(), TOTAL);
        assert!(cdf.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn shift_rounds_half_away_and_handles_nan() {
        let lat = Lattice { m: 0 };
        assert_eq!(lat.shift(0.5 / 128.0), 1);
        assert_eq!(lat.shift(-0.5 / 128.0), -1);
        assert_eq!(lat.shift(f32::NAN), 0);
        assert_eq!(scale_numerator(f32::NAN), S);
        assert_eq!(scale_numerator(0.0), S);
        assert_eq!(scale_numerator(-1000.0), R_MAX);
        assert_eq!(round_significant(4095), 4095);
        assert_eq!(
            round_significant((1 << 20) + (1 << 8)),
            (1 << 20) + (1 << 9)
        );
        assert!(split_r(scale_numerator(-2.5)).0 < 1 << R_BITS);
        assert_eq!(split_r(R_MAX), (1 << 12, 16));
        assert_eq!(scale_numerator(1000.0), 1);
    }

    #[test]
    fn r_pops_round_trip() {
        let mut s = Stack::new();
        push_uniform_seed(&mut s);
        for a in [-3.9f32, -1.0, 0.0, 0.3, 5.0] {
            let r = scale_numerator(a);
            for v in [0, r - 1, r / 3] {
                push_below_r(&mut s, v, r).unwrap();
                assert_eq!(pop_below_r(&mut s, r).unwrap(), v);
            }
        }
    }

    fn push_uniform_seed(s: &mut Stack) {
        for i in 0..8 {
            ans::push_uniform(s, i * 1000 + 7, 1 << 16).unwrap();
        }
    }

    #[test]
    fn prior_round_trip_with_escapes() {
        let lat = Lattice { m: 3 };
        let vals = [0i64, 1, -1, 1023, -1024, 5 << 20, -(7 << 30), LIMIT, -LIMIT];
        let mut s = Stack::new();
        for &v in vals.iter().rev() {
            push_prior(&mut s, lat, v).unwrap();
        }
        for &v in &vals {
            assert_eq!(pop_prior(&mut s, lat).unwrap(), v);
        }
        assert!(s.is_empty());
    }
}
