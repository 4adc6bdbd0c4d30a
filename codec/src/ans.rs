//! Thin helpers over constriction's `AnsCoder` used as a stack: uniform
//! pushes and pops, and a categorical model read from a fixed integer table.
//!
//! All probabilities here are integers fixed before coding starts, so the
//! encoder and the decoder see exactly the same distributions.

use std::borrow::Borrow;
use std::num::NonZeroU32;

use constriction::stream::model::{DecoderModel, EncoderModel, EntropyModel};
use constriction::stream::stack::DefaultAnsCoder;
use constriction::stream::{Decode, Encode};

use crate::error::{corrupt, CodecError, Result};

/// Fixed-point precision of every entropy model (bits).
pub const PRECISION: usize = 24;
/// Total probability mass at [`PRECISION`].
pub const TOTAL: u32 = 1 << PRECISION;

/// The coder: a stack of `u32` words.
pub type Stack = DefaultAnsCoder;

/// Pushes `value` uniformly from `[0, range)`. A range of 1 costs nothing.
pub fn push_uniform(stack: &mut Stack, value: u64, range: u64) -> Result<()> {
    debug_assert!(value < range && range <= TOTAL as u64);
    if range <= 1 {
        return Ok(());
    }
    let model = Uniform::new(range);
    stack
        .encode_symbol(value as u32, model)
        .map_err(|e| CodecError::Numeric(format!("uniform push failed: {e}")))
}

/// Pops a value uniformly from `[0, range)`. Popping from an empty stack
/// yields 0.
pub fn pop_uniform(stack: &mut Stack, range: u64) -> Result<u64> {
    if range <= 1 {
        return Ok(0);
    }
    let model = Uniform::new(range);
    match stack.decode_symbol(model) {
        Ok(v) => Ok(v as u64),
        Err(e) => Err(corrupt(format!("uniform pop failed: {e}"))),
    }
}

/// A uniform distribution over `0..range` (`2 <= range <= TOTAL`) whose
/// fixed-point probabilities differ by at most one unit, so that popping
/// gains almost exactly `log2 range` bits. (constriction's `UniformModel`
/// gives the remainder of the mass to the last symbol, which loses up to
/// about 0.02 bits per pop for ranges just above a power of two: too much
/// for the scale transform, which pops once per value and block.)
#[derive(Debug, Clone, Copy)]
pub struct Uniform {
    range: u64,
}

impl Uniform {
    /// A model for `0..range`.
    pub fn new(range: u64) -> Self {
        debug_assert!((2..=TOTAL as u64).contains(&range));
        Self { range }
    }

    fn left(&self, s: u64) -> u32 {
        ((s << PRECISION) / self.range) as u32
    }
}

impl EntropyModel<PRECISION> for Uniform {
    type Symbol = u32;
    type Probability = u32;
}

impl EncoderModel<PRECISION> for Uniform {
    fn left_cumulative_and_probability(
        &self,
        symbol: impl Borrow<u32>,
    ) -> Option<(u32, NonZeroU32)> {
        let s = *symbol.borrow() as u64;
        if s >= self.range {
            return None;
        }
        let left = self.left(s);
        let right = if s + 1 == self.range {
            TOTAL
        } else {
            self.left(s + 1)
        };
        Some((left, NonZeroU32::new(right - left)?))
    }
}

impl DecoderModel<PRECISION> for Uniform {
    fn quantile_function(&self, quantile: u32) -> (u32, u32, NonZeroU32) {
        // Largest s with floor(s 2^P / range) <= q.
        let s = (((quantile as u64 + 1) * self.range - 1) >> PRECISION).min(self.range - 1);
        let (left, prob) = self
            .left_cumulative_and_probability(s as u32)
            .unwrap_or((0, NonZeroU32::MIN));
        (s as u32, left, prob)
    }
}

/// A categorical distribution over `0..n` given as a cumulative table of
/// `n + 1` integers from 0 to [`TOTAL`], every step at least 1.
#[derive(Debug, Clone, Copy)]
pub struct TableModel<'a> {
    cdf: &'a [u32],
}

impl<'a> TableModel<'a> {
    /// Wraps a cumulative table. The table must start at 0, end at
    /// [`TOTAL`] and increase strictly.
    pub fn new(cdf: &'a [u32]) -> Self {
        debug_assert!(cdf.len() >= 2 && cdf[0] == 0 && cdf[cdf.len() - 1] == TOTAL);
        debug_assert!(cdf.windows(2).all(|w| w[0] < w[1]));
        Self { cdf }
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.cdf.len() - 1
    }

    /// Whether the model has no symbols (never true for a valid table).
    pub fn is_empty(&self) -> bool {
        self.cdf.len() < 2
    }
}

impl EntropyModel<PRECISION> for TableModel<'_> {
    type Symbol = usize;
    type Probability = u32;
}

impl EncoderModel<PRECISION> for TableModel<'_> {
    fn left_cumulative_and_probability(
        &self,
        symbol: impl Borrow<usize>,
    ) -> Option<(u32, NonZeroU32)> {
        let s = *symbol.borrow();
        let left = *self.cdf.get(s)?;
        let right = *self.cdf.get(s + 1)?;
        Some((left, NonZeroU32::new(right - left)?))
    }
}

impl DecoderModel<PRECISION> for TableModel<'_> {
    fn quantile_function(&self, quantile: u32) -> (usize, u32, NonZeroU32) {
        // Largest s with cdf[s] <= quantile; quantile < TOTAL always.
        let s = self.cdf.partition_point(|&c| c <= quantile) - 1;
        let s = s.min(self.len() - 1);
        let (left, right) = (self.cdf[s], self.cdf[s + 1]);
        let prob = NonZeroU32::new(right - left).unwrap_or(NonZeroU32::MIN);
        (s, left, prob)
    }
}

/// Pushes `symbol` under a table model.
pub fn push_table(stack: &mut Stack, symbol: usize, model: TableModel<'_>) -> Result<()> {
    stack
        .encode_symbol(symbol, model)
        .map_err(|e| CodecError::Numeric(format!("table push failed: {e}")))
}

/// Pops a symbol under a table model.
pub fn pop_table(stack: &mut Stack, model: TableModel<'_>) -> Result<usize> {
    stack
        .decode_symbol(model)
        .map_err(|e| corrupt(format!("table pop failed: {e}")))
}

/// The cumulative table of a [`TableModel`] from symbol weights (each at
/// least 1, summing to [`TOTAL`]).
pub fn cdf_from_weights(weights: &[u32]) -> Vec<u32> {
    let mut cdf = Vec::with_capacity(weights.len() + 1);
    let mut acc = 0u32;
    cdf.push(0);
    for &w in weights {
        acc += w;
        cdf.push(acc);
    }
    cdf
}

/// A two-symbol model: symbol 0 has probability `p0 / TOTAL`.
pub fn binary_cdf(p0: u32) -> [u32; 3] {
    let p0 = p0.clamp(1, TOTAL - 1);
    [0, p0, TOTAL]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pop_from_empty_is_zero_and_push_back_empties() {
        let mut s = Stack::new();
        assert_eq!(pop_uniform(&mut s, 16).unwrap(), 0);
        assert!(s.is_empty());
        push_uniform(&mut s, 0, 16).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn uniform_round_trip_and_quantiles() {
        for range in [2u64, 3, 255, 65536, 70001, (1 << 22) + 5, TOTAL as u64] {
            let m = Uniform::new(range);
            for q in [0u32, 1, 12345, TOTAL / 2, TOTAL - 1] {
                let (s, left, p) = m.quantile_function(q);
                assert!(left <= q && q < left + p.get(), "range {range} q {q}");
                assert_eq!(m.left_cumulative_and_probability(s), Some((left, p)));
            }
            let mut st = Stack::new();
            let vals = [0, range - 1, range / 2, 1];
            for &v in &vals {
                push_uniform(&mut st, v, range).unwrap();
            }
            for &v in vals.iter().rev() {
                assert_eq!(pop_uniform(&mut st, range).unwrap(), v);
            }
            assert!(st.is_empty());
        }
    }

    #[test]
    fn table_round_trip() {
        let cdf = [0, 5, 1000, TOTAL];
        let m = TableModel::new(&cdf);
        let mut s = Stack::new();
        let syms = [0usize, 2, 1, 1, 0, 2, 2];
        for &x in syms.iter().rev() {
            push_table(&mut s, x, m).unwrap();
        }
        for &x in &syms {
            assert_eq!(pop_table(&mut s, m).unwrap(), x);
        }
        assert!(s.is_empty());
    }
}
