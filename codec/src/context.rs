//! Context tokens: the ring of already coded patches around a tile, as a
//! prefix that every flow block of a [`FlowConfig::context`] model reads
//! before the tile's own tokens.
//!
//! The ring has `4 g + 4` slots (`g` patches per tile side), each one
//! patch, numbered
//!
//! - `0 .. g`: above the tile, patch row `-1`, columns `0 .. g`;
//! - `g .. 2g`: below, patch row `g`;
//! - `2g .. 3g`: left, patch column `-1`, rows `0 .. g`;
//! - `3g .. 4g`: right, patch column `g`;
//! - `4g + k`: the corners, `k` = [`TOP_LEFT`], [`TOP_RIGHT`],
//!   [`BOTTOM_LEFT`], [`BOTTOM_RIGHT`].
//!
//! A prefix holds the `2 g + 1` slots next to one corner `k`: its
//! horizontal side (left to right), its vertical side (top to bottom) and
//! the corner itself ([`prefix_slots`]). Each prefix token is the patch's
//! `D` values in model space, `(v + 0.5) / 128 - 1`, channel-major like a
//! tile token, followed by `1`; or `D + 1` zeros where the patch is not
//! available (outside the image, not yet coded).
//!
//! The codec decodes a lane's tiles in reverse raster order, so the coded
//! neighbours of a tile are the ones below and to its right: in the
//! tile's own frame the prefix is the [`BOTTOM_RIGHT`] one. When the
//! encoder codes a tile in another orientation, the tile and its ring turn
//! together ([`source_pixel`]) and the prefix is the one of the corner the
//! bottom-right corner turned into ([`corner_after`]). Training draws the
//! corner and the availability of each part at random.

use crate::config::FlowConfig;

/// Corner above and left of the tile.
pub const TOP_LEFT: u8 = 0;
/// Corner above and right of the tile.
pub const TOP_RIGHT: u8 = 1;
/// Corner below and left of the tile.
pub const BOTTOM_LEFT: u8 = 2;
/// Corner below and right of the tile: the coded one, in a tile's own frame.
pub const BOTTOM_RIGHT: u8 = 3;

/// Ring slots of the prefix next to `corner`, in prefix order.
pub fn prefix_slots(g: usize, corner: u8) -> Vec<usize> {
    let top = corner < 2;
    let left = corner % 2 == 0;
    let h0 = if top { 0 } else { g };
    let v0 = if left { 2 * g } else { 3 * g };
    (h0..h0 + g)
        .chain(v0..v0 + g)
        .chain([4 * g + corner as usize])
        .collect()
}

/// Position `(row, column)` of a ring slot, in patches relative to the
/// tile's top-left patch (`-1 ..= g`).
pub fn slot_patch(g: usize, slot: usize) -> (isize, isize) {
    let gi = g as isize;
    if slot < 4 * g {
        let i = (slot % g) as isize;
        return match slot / g {
            0 => (-1, i),
            1 => (gi, i),
            2 => (i, -1),
            _ => (i, gi),
        };
    }
    match slot - 4 * g {
        0 => (-1, -1),
        1 => (-1, gi),
        2 => (gi, -1),
        _ => (gi, gi),
    }
}

/// Model-space value of an 8-bit context pixel.
pub fn model_value(v: u8) -> f32 {
    (v as f32 + 0.5) / 128.0 - 1.0
}

/// The context prefix next to `corner`: `context_len * (D + 1)` values.
/// `patch(row, col, out)` fills `out` (`D` values, channel-major) with the
/// patch at patch position `(row, col)` relative to the tile and returns
/// whether it is available; an unavailable patch's values are ignored.
pub fn prefix_values(
    cfg: &FlowConfig,
    corner: u8,
    mut patch: impl FnMut(isize, isize, &mut [u8]) -> bool,
) -> Vec<f32> {
    let (g, d) = (cfg.grid(), cfg.token_dim());
    let mut px = vec![0u8; d];
    let mut out = Vec::with_capacity((2 * g + 1) * (d + 1));
    for slot in prefix_slots(g, corner) {
        let (r, c) = slot_patch(g, slot);
        if patch(r, c, &mut px) {
            out.extend(px.iter().map(|&v| model_value(v)));
            out.push(1.0);
        } else {
            out.extend(std::iter::repeat_n(0.0, d + 1));
        }
    }
    out
}

/// The pixel of the unturned square that pixel `(row, col)` of the square
/// turned by orientation `o` shows, for a square of side `side`: the same
/// map as the codec's tile orientations (`o & 4` transposes, then `o & 1`
/// mirrors the columns and `o & 2` the rows). A tile and its ring turn as
/// one square of side `tile + 2 patch`.
pub fn source_pixel(o: u8, side: usize, row: usize, col: usize) -> (usize, usize) {
    let (mut r, mut c) = if o & 4 != 0 { (col, row) } else { (row, col) };
    if o & 1 != 0 {
        c = side - 1 - c;
    }
    if o & 2 != 0 {
        r = side - 1 - r;
    }
    (r, c)
}

/// The corner that the tile's bottom-right corner becomes in orientation
/// `o`.
pub fn corner_after(o: u8) -> u8 {
    // Corner k of the turned square shows corner source(k) of the unturned
    // one; find the k showing the bottom-right.
    (0..4u8)
        .find(|&k| {
            let (r, c) = ((k / 2) as usize, (k % 2) as usize);
            source_pixel(o, 2, r, c) == (1, 1)
        })
        .expect("orientations are bijections")
}

/// The prefix of a tile coded in orientation `o`, whose coded neighbours
/// are given in the tile's own frame as pixel arrays (`tile x tile x
/// channels`, interleaved, edges repeated as the codec pads tiles): the
/// tile to the right, the tile below and the tile below-right.
pub fn coded_prefix(
    cfg: &FlowConfig,
    o: u8,
    right: Option<&[u8]>,
    below: Option<&[u8]>,
    corner: Option<&[u8]>,
) -> Vec<f32> {
    let (t, p, ch) = (cfg.image_size, cfg.patch, cfg.channels);
    let side = t + 2 * p;
    // Pixel (r, c) of the unturned ring, relative to the tile, if coded.
    let unturned = |r: usize, c: usize, k: usize| -> Option<u8> {
        let (below_tile, right_tile) = (r >= t, c >= t);
        let (r, c) = (r % t, c % t);
        let src = match (below_tile, right_tile) {
            (true, true) => corner,
            (true, false) => below,
            (false, true) => right,
            (false, false) => None,
        }?;
        Some(src[(r * t + c) * ch + k])
    };
    prefix_values(cfg, corner_after(o), |pr, pc, out| {
        // Square coordinates of the patch's top-left pixel.
        let (r0, c0) = (
            ((pr + 1) * p as isize) as usize,
            ((pc + 1) * p as isize) as usize,
        );
        for k in 0..ch {
            for y in 0..p {
                for x in 0..p {
                    let (sr, sc) = source_pixel(o, side, r0 + y, c0 + x);
                    // Outside the tile's top-left ring: coded tiles lie only
                    // below and right, so rows/columns before the tile are
                    // never available.
                    if sr < p || sc < p {
                        return false;
                    }
                    match unturned(sr - p, sc - p, k) {
                        Some(v) => out[(k * p + y) * p + x] = v,
                        None => return false,
                    }
                }
            }
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FlowConfig {
        FlowConfig {
            context: true,
            ..FlowConfig::tiny(3)
        }
    }

    #[test]
    fn slots_cover_the_ring_once() {
        let g = 4;
        let mut seen = std::collections::HashSet::new();
        for s in 0..4 * g + 4 {
            let (r, c) = slot_patch(g, s);
            let on_ring = r == -1 || c == -1 || r == g as isize || c == g as isize;
            assert!(on_ring, "slot {s} at {r},{c}");
            assert!(seen.insert((r, c)), "slot {s} repeats {r},{c}");
        }
        for k in 0..4u8 {
            let slots = prefix_slots(g, k);
            assert_eq!(slots.len(), 2 * g + 1);
            // Every prefix patch touches the corner's two sides.
            let (kr, kc) = slot_patch(g, *slots.last().unwrap());
            for s in slots {
                let (r, c) = slot_patch(g, s);
                assert!(r == kr || c == kc, "corner {k} slot {s}");
            }
        }
    }

    #[test]
    fn corners_follow_the_orientation() {
        assert_eq!(corner_after(0), BOTTOM_RIGHT);
        assert_eq!(corner_after(1), BOTTOM_LEFT);
        assert_eq!(corner_after(2), TOP_RIGHT);
        assert_eq!(corner_after(3), TOP_LEFT);
        assert_eq!(corner_after(4), BOTTOM_RIGHT);
    }

    #[test]
    fn unturned_prefix_reads_the_neighbours() {
        let c = cfg();
        let (t, p, ch, g) = (c.image_size, c.patch, c.channels, c.grid());
        let tile = |base: u8| -> Vec<u8> {
            (0..t * t * ch)
                .map(|i| base.wrapping_add(i as u8))
                .collect()
        };
        let (right, below, corner) = (tile(0), tile(100), tile(200));
        let pre = coded_prefix(&c, 0, Some(&right), Some(&below), Some(&corner));
        let dd = c.context_dim();
        assert_eq!(pre.len(), c.context_len() * dd);
        // First token: the patch below the tile's bottom-left patch, i.e.
        // the top-left patch of the tile below; its first value is red of
        // that tile's pixel (0, 0).
        assert_eq!(pre[0], model_value(below[0]));
        assert_eq!(pre[dd - 1], 1.0);
        // Token g: right of the tile's top-right patch, green channel,
        // pixel (1, 0) of the tile to the right.
        let green_10 = pre[g * dd + p * p + p];
        assert_eq!(green_10, model_value(right[t * ch + 1]));
        // The corner token reads the tile below-right.
        assert_eq!(pre[2 * g * dd], model_value(corner[0]));
        // Without the tile below, its g tokens are zeros.
        let none = coded_prefix(&c, 0, Some(&right), None, Some(&corner));
        assert!(none[..g * dd].iter().all(|&v| v == 0.0));
        assert_eq!(none[g * dd..], pre[g * dd..]);
    }

    #[test]
    fn turned_prefix_is_the_turned_ring() {
        // Turning the square with the neighbours by orientation o and
        // reading the corner_after(o) prefix gives coded_prefix(o).
        let c = cfg();
        let (t, p, ch) = (c.image_size, c.patch, c.channels);
        let side = t + 2 * p;
        let right: Vec<u8> = (0..t * t * ch).map(|i| (i * 7 % 251) as u8).collect();
        let below: Vec<u8> = (0..t * t * ch).map(|i| (i * 13 % 241) as u8).collect();
        let corner: Vec<u8> = (0..t * t * ch).map(|i| (i * 3 % 239) as u8).collect();
        // The unturned square: None where nothing is coded.
        let mut sq: Vec<Option<u8>> = vec![None; side * side * ch];
        for r in 0..t + p {
            for cc in 0..t + p {
                let src = match (r >= t, cc >= t) {
                    (true, true) => &corner,
                    (true, false) => &below,
                    (false, true) => &right,
                    _ => continue,
                };
                for k in 0..ch {
                    sq[((r + p) * side + cc + p) * ch + k] =
                        Some(src[((r % t) * t + cc % t) * ch + k]);
                }
            }
        }
        for o in 0..8u8 {
            let got = coded_prefix(&c, o, Some(&right), Some(&below), Some(&corner));
            let want = prefix_values(&c, corner_after(o), |pr, pc, out| {
                let (r0, c0) = (
                    ((pr + 1) * p as isize) as usize,
                    ((pc + 1) * p as isize) as usize,
                );
                for k in 0..ch {
                    for y in 0..p {
                        for x in 0..p {
                            let (sr, sc) = source_pixel(o, side, r0 + y, c0 + x);
                            match sq[(sr * side + sc) * ch + k] {
                                Some(v) => out[(k * p + y) * p + x] = v,
                                None => return false,
                            }
                        }
                    }
                }
                true
            });
            assert_eq!(got, want, "orientation {o}");
            // Every orientation sees both coded sides and the corner.
            let dd = c.context_dim();
            let flags: Vec<f32> = got.chunks(dd).map(|tok| tok[dd - 1]).collect();
            assert!(
                flags.iter().all(|&f| f == 1.0),
                "orientation {o}: {flags:?}"
            );
        }
    }
}
