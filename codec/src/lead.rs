//! The model of each lane's lead tiles.
//!
//! Bits-back coding needs bits on the stack before it can pop: the first
//! flow tile of a lane pops its sub-pixels and, in the expanding blocks,
//! scale remainders before it pushes anything, about `m + 6` bits per
//! value. So a lane starts with tiles coded under this simple model, which
//! takes no bits back, until the stack holds that many bits; the flow tiles
//! after them pop those bits back. Raw bytes would do the same at 8 bits a
//! value; this model costs about half that on photographs, so the lead
//! tiles lose less against the flow.
//!
//! The model, in the spirit of LOCO-I: each value is predicted by the
//! median edge detector from its west, north and north-west neighbours in
//! the same channel, corrected by the previous channel's error at the same
//! pixel; the residual, modulo 256, is coded under a discretised Laplace
//! distribution whose scale follows the mean absolute error seen so far in the value's
//! context (how busy the neighbourhood is, first channel or not). Integers
//! throughout; the tables are built once with `libm`.

use crate::ans::{self, Stack, TableModel, TOTAL};
use crate::error::Result;
use std::sync::OnceLock;

/// Residuals modulo 256, `-128..=127`.
const SYMBOLS: usize = 256;
/// Laplace scales `SCALE0 * SCALE_STEP^k`, about 0.3 to 200.
const SCALES: usize = 48;
const SCALE0: f64 = 0.3;
const SCALE_STEP: f64 = 1.15;
/// Context classes by the bit length of the local gradient, 0 to 10,
/// times two (first channel, later channels).
const GRADIENT_CLASSES: usize = 11;
const CLASSES: usize = 2 * GRADIENT_CLASSES;
/// The error statistics of a class are halved when they reach this count,
/// so the scale follows the content.
const RESET: u32 = 32;

struct Tables {
    cdfs: Vec<Vec<u32>>,
    /// `16 x` the mean absolute residual at which table `k + 1` takes over
    /// from table `k`.
    thresholds: Vec<u32>,
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let mut cdfs = Vec::with_capacity(SCALES);
        let mut means = Vec::with_capacity(SCALES);
        for k in 0..SCALES {
            let b = SCALE0 * libm::pow(SCALE_STEP, k as f64);
            let w: Vec<f64> = (0..SYMBOLS)
                .map(|s| libm::exp(-((s as f64 - 128.0).abs()) / b))
                .collect();
            let total: f64 = w.iter().sum();
            let spread = (TOTAL - SYMBOLS as u32) as f64;
            let mut freq: Vec<u32> = w
                .iter()
                .map(|v| 1 + (v / total * spread).floor() as u32)
                .collect();
            let used: u32 = freq.iter().sum();
            freq[128] += TOTAL - used;
            let mean = freq
                .iter()
                .enumerate()
                .map(|(s, &f)| (s as f64 - 128.0).abs() * f as f64)
                .sum::<f64>()
                / TOTAL as f64;
            means.push(mean);
            cdfs.push(ans::cdf_from_weights(&freq));
        }
        let thresholds = means
            .windows(2)
            .map(|m| libm::round(16.0 * libm::sqrt(m[0] * m[1])) as u32)
            .collect();
        Tables { cdfs, thresholds }
    })
}

/// Running error statistics per context class.
struct Stats {
    sum: [u32; CLASSES],
    count: [u32; CLASSES],
}

impl Stats {
    fn new() -> Self {
        let mut s = Self {
            sum: [0; CLASSES],
            count: [2; CLASSES],
        };
        for c in 0..CLASSES {
            // A neighbourhood with gradients of about 2^g predicts errors
            // of about a third of that.
            let g = c % GRADIENT_CLASSES;
            s.sum[c] = 2 * ((1u32 << g) / 3).max(1);
        }
        s
    }

    fn table(&self, class: usize) -> usize {
        let v = 16 * self.sum[class] / self.count[class];
        tables().thresholds.partition_point(|&t| t <= v)
    }

    fn update(&mut self, class: usize, err: u32) {
        self.sum[class] += err;
        self.count[class] += 1;
        if self.count[class] >= RESET {
            self.sum[class] = self.sum[class].div_ceil(2);
            self.count[class] /= 2;
        }
    }
}

/// Median-edge prediction and local gradient of value `(r, c, ch)` of a
/// `side x side` tile with `channels` interleaved channels, from the values
/// before it in raster order (`px`).
fn predict(px: &[u8], side: usize, channels: usize, r: usize, c: usize, ch: usize) -> (i32, i32) {
    let at = |r: usize, c: usize| px[(r * side + c) * channels + ch] as i32;
    let (w, n, nw, ne) = match (r, c) {
        (0, 0) => (128, 128, 128, 128),
        (0, _) => {
            let w = at(0, c - 1);
            (w, w, w, w)
        }
        (_, 0) => {
            let n = at(r - 1, 0);
            let ne = if side > 1 { at(r - 1, 1) } else { n };
            (n, n, n, ne)
        }
        _ => {
            let ne = if c + 1 < side {
                at(r - 1, c + 1)
            } else {
                at(r - 1, c)
            };
            (at(r, c - 1), at(r - 1, c), at(r - 1, c - 1), ne)
        }
    };
    let med = if nw >= w.max(n) {
        w.min(n)
    } else if nw <= w.min(n) {
        w.max(n)
    } else {
        w + n - nw
    };
    (med, (w - nw).abs() + (n - nw).abs() + (ne - n).abs())
}

/// Walks a tile's values in raster order, keeping the context statistics;
/// the encoder and the decoder make the same calls in the same order.
struct Walker {
    side: usize,
    channels: usize,
    stats: Stats,
    /// The previous channel's median-prediction error at this pixel.
    prev_err: i32,
}

impl Walker {
    fn new(side: usize, channels: usize) -> Self {
        Self {
            side,
            channels,
            stats: Stats::new(),
            prev_err: 0,
        }
    }

    /// Prediction, class and table of value `e` (interleaved raster
    /// index), given the values before it.
    fn context(&self, px: &[u8], e: usize) -> (i32, i32, usize, usize) {
        let (pixel, ch) = (e / self.channels, e % self.channels);
        let (r, c) = (pixel / self.side, pixel % self.side);
        let (med, grad) = predict(px, self.side, self.channels, r, c, ch);
        let (pred, activity, class) = if ch == 0 {
            (med, grad, 0)
        } else {
            (
                (med + self.prev_err).clamp(0, 255),
                grad + self.prev_err.abs(),
                GRADIENT_CLASSES,
            )
        };
        let bits = (32 - (activity as u32).leading_zeros()) as usize;
        let class = class + bits.min(GRADIENT_CLASSES - 1);
        (med, pred, class, self.stats.table(class))
    }

    /// Records the actual value `x` of value `e` after [`Self::context`].
    fn record(&mut self, e: usize, med: i32, pred: i32, class: usize, x: u8) {
        let err = ((x as i32 - pred + 128) & 255) - 128;
        self.stats.update(class, err.unsigned_abs());
        self.prev_err = if (e + 1) % self.channels == 0 {
            0
        } else {
            x as i32 - med
        };
    }
}

/// Pushes a tile of `side x side` pixels with `channels` interleaved
/// channels (row-major).
pub fn push_tile(stack: &mut Stack, px: &[u8], side: usize, channels: usize) -> Result<()> {
    debug_assert_eq!(px.len(), side * side * channels);
    let mut walk = Walker::new(side, channels);
    let mut coded = Vec::with_capacity(px.len());
    for (e, &x) in px.iter().enumerate() {
        let (med, pred, class, table) = walk.context(px, e);
        coded.push((((x as i32 - pred + 128) & 255) as usize, table));
        walk.record(e, med, pred, class, x);
    }
    let cdfs = &tables().cdfs;
    for &(sym, table) in coded.iter().rev() {
        ans::push_table(stack, sym, TableModel::new(&cdfs[table]))?;
    }
    Ok(())
}

/// Pops a tile pushed by [`push_tile`].
pub fn pop_tile(stack: &mut Stack, side: usize, channels: usize) -> Result<Vec<u8>> {
    let n = side * side * channels;
    let mut px = vec![0u8; n];
    let mut walk = Walker::new(side, channels);
    let cdfs = &tables().cdfs;
    for e in 0..n {
        let (med, pred, class, table) = walk.context(&px, e);
        let sym = ans::pop_table(stack, TableModel::new(&cdfs[table]))?;
        let x = ((pred + sym as i32 - 128) & 255) as u8;
        px[e] = x;
        walk.record(e, med, pred, class, x);
    }
    Ok(px)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_file::SplitMix;

    fn cost(px: &[u8], side: usize, channels: usize) -> f64 {
        let mut s = Stack::new();
        push_tile(&mut s, px, side, channels).unwrap();
        let bits = s.num_valid_bits() as f64;
        assert_eq!(pop_tile(&mut s, side, channels).unwrap(), px);
        assert!(s.is_empty());
        bits / px.len() as f64
    }

    #[test]
    fn tables_are_valid_and_ordered() {
        let t = tables();
        for cdf in &t.cdfs {
            assert_eq!((cdf[0], cdf[SYMBOLS]), (0, TOTAL));
            assert!(cdf.windows(2).all(|w| w[0] < w[1]));
        }
        assert!(t.thresholds.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn round_trips_and_costs_follow_the_content() {
        let mut rng = SplitMix::new(3);
        for (side, channels) in [(1, 1), (1, 3), (2, 1), (7, 3), (32, 1), (32, 3)] {
            let n = side * side * channels;
            let noise: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            let smooth: Vec<u8> = (0..n)
                .map(|e| {
                    let (p, ch) = (e / channels, e % channels);
                    ((p / side) * 3 + (p % side) * 2 + ch * 20 + (rng.next_u64() % 3) as usize)
                        as u8
                })
                .collect();
            let flat = vec![77u8; n];
            let (cn, cs, cf) = (
                cost(&noise, side, channels),
                cost(&smooth, side, channels),
                cost(&flat, side, channels),
            );
            if n >= 1024 {
                assert!(cn < 8.2, "noise {cn} bits per value");
                assert!(cs < 4.0, "smooth {cs} bits per value");
                assert!(cf < 0.5, "flat {cf} bits per value");
            }
        }
    }
}
