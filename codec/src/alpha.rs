//! A small adaptive model for alpha channels, which no flow covers: each
//! value is predicted by its left neighbour (the one above in column 0); an
//! adaptive binary flag says whether the prediction holds, and a miss codes
//! the value uniformly among the other 255.
//!
//! The encoder computes the flag probabilities in decoding order first and
//! then pushes everything backwards, so the decoder pops in order.

use crate::ans::{self, binary_cdf, Stack, TableModel, TOTAL};
use crate::error::Result;

/// Adaptive counts of hits and misses.
#[derive(Debug, Clone, Copy)]
struct Counts {
    hit: u32,
    miss: u32,
}

impl Counts {
    fn new() -> Self {
        Self { hit: 1, miss: 1 }
    }

    /// Probability of a hit at 24-bit precision.
    fn p_hit(&self) -> u32 {
        ((self.hit as u64 * TOTAL as u64) / (self.hit + self.miss) as u64) as u32
    }

    fn update(&mut self, hit: bool) {
        if hit {
            self.hit += 32;
        } else {
            self.miss += 32;
        }
        if self.hit + self.miss > 1 << 16 {
            self.hit = self.hit.div_ceil(2);
            self.miss = self.miss.div_ceil(2);
        }
    }
}

fn predict(a: &[u8], i: usize, w: usize) -> u8 {
    if i % w != 0 {
        a[i - 1]
    } else if i >= w {
        a[i - w]
    } else {
        255
    }
}

/// Pushes an alpha plane of width `w`.
pub fn encode(stack: &mut Stack, a: &[u8], w: usize) -> Result<()> {
    let mut counts = Counts::new();
    let mut probs = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        let hit = a[i] == predict(a, i, w);
        probs.push(counts.p_hit());
        counts.update(hit);
    }
    for i in (0..a.len()).rev() {
        let pred = predict(a, i, w);
        let cdf = binary_cdf(probs[i]);
        if a[i] == pred {
            ans::push_table(stack, 0, TableModel::new(&cdf))?;
        } else {
            let v = if a[i] < pred { a[i] } else { a[i] - 1 };
            ans::push_uniform(stack, v as u64, 255)?;
            ans::push_table(stack, 1, TableModel::new(&cdf))?;
        }
    }
    Ok(())
}

/// Pops an alpha plane of `n` values and width `w`.
pub fn decode(stack: &mut Stack, n: usize, w: usize) -> Result<Vec<u8>> {
    let mut counts = Counts::new();
    let mut a = Vec::with_capacity(n);
    for i in 0..n {
        let pred = predict(&a, i, w);
        let cdf = binary_cdf(counts.p_hit());
        let hit = ans::pop_table(stack, TableModel::new(&cdf))? == 0;
        let v = if hit {
            pred
        } else {
            let v = ans::pop_uniform(stack, 255)? as u8;
            if v < pred {
                v
            } else {
                v + 1
            }
        };
        counts.update(hit);
        a.push(v);
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_round_trip() {
        let a: Vec<u8> = (0..300u32)
            .map(|i| if i % 7 == 0 { (i * 13) as u8 } else { 255 })
            .collect();
        let mut s = Stack::new();
        encode(&mut s, &a, 17).unwrap();
        assert_eq!(decode(&mut s, a.len(), 17).unwrap(), a);
        assert!(s.is_empty());
    }
}
