//! Plain pixel buffers, how an image is split into planes that a model
//! covers, and how planes are cut into padded tiles of tokens.
//!
//! Channels: a gray image goes through a 1-channel model, RGB through a
//! 3-channel one. Without the matching model, gray is replicated into RGB
//! (the decoder keeps the first channel) and RGB is coded as three gray
//! planes. Alpha (the last channel of gray+alpha and RGBA) never goes
//! through a model: see [`crate::alpha`].
//!
//! Edges: a tile that sticks out of the plane is filled by repeating the
//! last row and column, coded in full, and cropped by the decoder.

use crate::error::{CodecError, Result};

/// An 8-bit image, rows top to bottom, channels interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels (at least 1).
    pub width: u32,
    /// Height in pixels (at least 1).
    pub height: u32,
    /// 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA.
    pub channels: u8,
    /// `width * height * channels` bytes.
    pub data: Vec<u8>,
}

impl Image {
    /// Builds an image, checking that the buffer matches the geometry.
    pub fn new(width: u32, height: u32, channels: u8, data: Vec<u8>) -> Result<Self> {
        let img = Self {
            width,
            height,
            channels,
            data,
        };
        img.check()?;
        Ok(img)
    }

    /// Checks geometry and buffer length.
    pub fn check(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            return Err(CodecError::Unsupported(
                "images must be at least 1x1".into(),
            ));
        }
        if !(1..=4).contains(&self.channels) {
            return Err(CodecError::Unsupported(format!(
                "{} channels; supported are 8-bit gray, gray+alpha, RGB and RGBA",
                self.channels
            )));
        }
        if self.data.len() as u64 != self.pixels() * self.channels as u64 {
            return Err(CodecError::Misuse(
                "pixel buffer length does not match the size".into(),
            ));
        }
        Ok(())
    }

    /// `width * height`.
    pub fn pixels(&self) -> u64 {
        self.width as u64 * self.height as u64
    }

    /// Channels coded by a model (1 or 3).
    pub fn color_channels(&self) -> u8 {
        if self.channels >= 3 {
            3
        } else {
            1
        }
    }

    /// Whether the last channel is alpha.
    pub fn has_alpha(&self) -> bool {
        self.channels == 2 || self.channels == 4
    }

    /// The alpha channel, if any.
    pub fn alpha(&self) -> Option<Vec<u8>> {
        let c = self.channels as usize;
        self.has_alpha()
            .then(|| self.data.iter().skip(c - 1).step_by(c).copied().collect())
    }
}

/// Pixels that one model codes: `channels` interleaved values per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plane {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channels of the model (1 or 3).
    pub channels: usize,
    /// Interleaved values.
    pub data: Vec<u8>,
}

/// How many planes an image of `cc` colour channels needs with a model of
/// `mc` channels.
pub fn plane_count(cc: u8, mc: u8) -> usize {
    if cc == 3 && mc == 1 {
        3
    } else {
        1
    }
}

/// Splits the colour part of `img` into planes for a model of `mc` channels.
pub fn to_planes(img: &Image, mc: u8) -> Vec<Plane> {
    let (w, h) = (img.width as usize, img.height as usize);
    let c = img.channels as usize;
    let cc = img.color_channels() as usize;
    let pick = |ch: usize| -> Vec<u8> { img.data.iter().skip(ch).step_by(c).copied().collect() };
    match (cc, mc) {
        (1, 3) => {
            let g = pick(0);
            let data = g.iter().flat_map(|&v| [v, v, v]).collect();
            vec![Plane {
                width: w,
                height: h,
                channels: 3,
                data,
            }]
        }
        (3, 1) => (0..3)
            .map(|ch| Plane {
                width: w,
                height: h,
                channels: 1,
                data: pick(ch),
            })
            .collect(),
        _ => {
            let data = img
                .data
                .chunks(c)
                .flat_map(|px| px[..cc].to_vec())
                .collect();
            vec![Plane {
                width: w,
                height: h,
                channels: cc,
                data,
            }]
        }
    }
}

/// Rebuilds an image from its decoded planes and alpha.
pub fn from_planes(w: u32, h: u32, channels: u8, planes: &[Plane], alpha: Option<&[u8]>) -> Image {
    let n = w as usize * h as usize;
    let cc = if channels >= 3 { 3 } else { 1 };
    let mut data = Vec::with_capacity(n * channels as usize);
    for i in 0..n {
        match (cc, planes.len(), planes[0].channels) {
            (1, _, 3) => data.push(planes[0].data[i * 3]),
            (3, 3, 1) => data.extend(planes.iter().map(|p| p.data[i])),
            _ => data.extend_from_slice(&planes[0].data[i * cc..(i + 1) * cc]),
        }
        if let Some(a) = alpha {
            data.push(a[i]);
        }
    }
    Image {
        width: w,
        height: h,
        channels,
        data,
    }
}

/// Orientations a tile can be coded in, the symmetries of the square:
/// bit 2 transposes, then bit 0 mirrors the columns and bit 1 the rows.
/// The encoder codes each tile in the orientation that costs least.
pub const ORIENTATIONS: u8 = 8;

/// Tile geometry of a model: tile side and patch side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileGeometry {
    /// Tile side in pixels.
    pub tile: usize,
    /// Patch side in pixels.
    pub patch: usize,
    /// Channels.
    pub channels: usize,
}

impl TileGeometry {
    /// Tiles across and down a `w x h` plane.
    pub fn grid(&self, w: usize, h: usize) -> (usize, usize) {
        (w.div_ceil(self.tile), h.div_ceil(self.tile))
    }

    /// Calls `f(token_value_index, row, col, channel)` for every value of a
    /// tile, with `row` and `col` inside the tile.
    fn for_each_local(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        let (p, c) = (self.patch, self.channels);
        let side = self.tile / p;
        let d = c * p * p;
        for pr in 0..side {
            for pc in 0..side {
                let tok = pr * side + pc;
                for ch in 0..c {
                    for ki in 0..p {
                        for kj in 0..p {
                            f(
                                tok * d + ch * p * p + ki * p + kj,
                                pr * p + ki,
                                pc * p + kj,
                                ch,
                            );
                        }
                    }
                }
            }
        }
    }

    /// Calls `f(token_value_index, plane_row, plane_col, channel)` for every
    /// value of tile `(tx, ty)`, rows and columns not yet clamped.
    fn for_each(&self, tx: usize, ty: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
        let t = self.tile;
        self.for_each_local(|e, r, c, ch| f(e, ty * t + r, tx * t + c, ch));
    }

    /// For each value of the tile in pixel order (row-major, channels
    /// interleaved), its index in token order.
    fn pixel_order(&self) -> Vec<usize> {
        let t = self.tile;
        let mut canonical = vec![0usize; t * t * self.channels];
        self.for_each_local(|e, r, c, ch| canonical[(r * t + c) * self.channels + ch] = e);
        canonical
    }

    /// Tile values in token order rearranged in pixel order (row-major,
    /// channels interleaved).
    pub fn to_pixels(&self, tokens: &[u8]) -> Vec<u8> {
        self.pixel_order().iter().map(|&i| tokens[i]).collect()
    }

    /// Inverse of [`Self::to_pixels`].
    pub fn from_pixels(&self, pixels: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; pixels.len()];
        for (&i, &v) in self.pixel_order().iter().zip(pixels) {
            out[i] = v;
        }
        out
    }

    /// For tile values in token order as seen in orientation `o` (see
    /// [`ORIENTATIONS`]), the index of each in the tile's own token order.
    fn orientation_map(&self, o: u8) -> Vec<usize> {
        let t = self.tile;
        let canonical = self.pixel_order();
        let mut map = vec![0usize; canonical.len()];
        self.for_each_local(|e, r, c, ch| {
            let (mut r, mut c) = if o & 4 != 0 { (c, r) } else { (r, c) };
            if o & 1 != 0 {
                c = t - 1 - c;
            }
            if o & 2 != 0 {
                r = t - 1 - r;
            }
            map[e] = canonical[(r * t + c) * self.channels + ch];
        });
        map
    }

    /// Tile values in token order, re-read in orientation `o`.
    pub fn orient(&self, tokens: &[u8], o: u8) -> Vec<u8> {
        self.orientation_map(o).iter().map(|&i| tokens[i]).collect()
    }

    /// Inverse of [`Self::orient`].
    pub fn unorient(&self, oriented: &[u8], o: u8) -> Vec<u8> {
        let mut out = vec![0u8; oriented.len()];
        for (&i, &v) in self.orientation_map(o).iter().zip(oriented) {
            out[i] = v;
        }
        out
    }

    /// Tile `(tx, ty)` of `plane` as tokens, edges repeated.
    pub fn extract(&self, plane: &Plane, tx: usize, ty: usize) -> Vec<u8> {
        let mut out = vec![0u8; self.tile * self.tile * self.channels];
        let (w, h, c) = (plane.width, plane.height, self.channels);
        self.for_each(tx, ty, |e, row, col, ch| {
            out[e] = plane.data[(row.min(h - 1) * w + col.min(w - 1)) * c + ch];
        });
        out
    }

    /// Writes the part of decoded tile `(tx, ty)` that lies inside `plane`.
    pub fn place(&self, plane: &mut Plane, tx: usize, ty: usize, tokens: &[u8]) {
        let (w, h, c) = (plane.width, plane.height, self.channels);
        self.for_each(tx, ty, |e, row, col, ch| {
            if row < h && col < w {
                plane.data[(row * w + col) * c + ch] = tokens[e];
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> TileGeometry {
        TileGeometry {
            tile: 4,
            patch: 2,
            channels: 3,
        }
    }

    /// A 4x4 RGB tile whose value at (row, col, ch) is `16 * ch + 4 * row + col`,
    /// as tokens.
    fn numbered() -> Vec<u8> {
        let plane = Plane {
            width: 4,
            height: 4,
            channels: 3,
            data: (0..48).map(|i| (16 * (i % 3) + i / 3) as u8).collect(),
        };
        geometry().extract(&plane, 0, 0)
    }

    #[test]
    fn orientations_are_distinct_and_invertible() {
        let g = geometry();
        let tokens = numbered();
        let mut seen = Vec::new();
        for o in 0..ORIENTATIONS {
            let t = g.orient(&tokens, o);
            assert_eq!(g.unorient(&t, o), tokens, "orientation {o}");
            assert!(!seen.contains(&t), "orientation {o} repeats another");
            seen.push(t);
        }
        assert_eq!(seen[0], tokens);
    }

    #[test]
    fn orientation_bits_mirror_and_transpose() {
        let g = geometry();
        let tokens = numbered();
        // First value of the first token: the tile's top-left pixel, red.
        let corner = |o: u8| g.orient(&tokens, o)[0];
        assert_eq!(corner(0), 0);
        assert_eq!(corner(1), 3, "columns mirrored: top-right");
        assert_eq!(corner(2), 12, "rows mirrored: bottom-left");
        assert_eq!(corner(3), 15, "both: bottom-right");
        // Second value of the first token is pixel (0, 1); transposed it
        // reads pixel (1, 0).
        assert_eq!(g.orient(&tokens, 0)[1], 1);
        assert_eq!(g.orient(&tokens, 4)[1], 4);
    }
}
