//! The container format. All integers little-endian.
//!
//! ```text
//! magic        8  89 'T' 'F' 'C' 0D 0A 1A 0A
//! version      u16 (3)
//! m            u8   sub-pixel bits
//! lanes        u16  independent stacks
//! model count  u8   then per model:
//!   channels u8, tile u16, patch u16, id [16] (SHA-256 prefix of the file)
//! image count  u32  then per image:
//!   width u32, height u32, channels u8, bit depth u8 (8),
//!   model channels u8, pixel checksum [8] (SHA-256 prefix)
//! lane words   u32 per lane
//! header check [4]  SHA-256 prefix of everything above
//! payload      the lanes' u32 words, lane after lane
//! ```
//!
//! Version 2 changed the payload, not the header: each lane's first tile
//! is raw bytes, every other tile carries a 3-bit orientation, and the
//! last block's latents are interleaved with its tokens (see `tile.rs`).
//! Version 3 replaced the raw first tile: each lane starts with lead tiles
//! coded by a simple predictive model (`lead.rs`), as many as the encoder
//! chose, and the lane's last push is their count (16 bits, uniform).
//!
//! Every size is checked against [`Limits`] and against the input length
//! before anything is allocated from it.

use sha2::{Digest, Sha256};

use crate::error::{corrupt, CodecError, Result};
use crate::model_file::ModelId;

/// First bytes of every tfc file.
pub const MAGIC: [u8; 8] = [0x89, b'T', b'F', b'C', 0x0D, 0x0A, 0x1A, 0x0A];
/// Current container version.
pub const VERSION: u16 = 3;
/// Largest sub-pixel precision accepted.
pub const MAX_M: u8 = 12;
/// Largest lane count accepted.
pub const MAX_LANES: u16 = 256;

/// Limits applied while reading untrusted files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most pixels over all images of a file.
    pub max_pixels: u64,
    /// Most images in a file.
    pub max_images: u32,
    /// Longest image side.
    pub max_side: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels: 1 << 28,
            max_images: 4096,
            max_side: 1 << 20,
        }
    }
}

/// A model that a file was coded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelRef {
    /// Channels (1 or 3).
    pub channels: u8,
    /// Tile side (the model's image size).
    pub tile: u16,
    /// Patch side.
    pub patch: u16,
    /// Identity of the model file.
    pub id: ModelId,
}

/// One image of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageEntry {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA.
    pub channels: u8,
    /// Bits per sample (always 8).
    pub bit_depth: u8,
    /// Channels of the model that coded its colour part.
    pub model_channels: u8,
    /// SHA-256 prefix of the pixel bytes.
    pub checksum: [u8; 8],
}

/// Everything before the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Container version.
    pub version: u16,
    /// Sub-pixel bits.
    pub m: u8,
    /// Models used.
    pub models: Vec<ModelRef>,
    /// Images in coding order.
    pub images: Vec<ImageEntry>,
    /// Length of each lane in u32 words.
    pub lane_words: Vec<u32>,
}

/// Checksum of pixel bytes.
pub fn pixel_checksum(data: &[u8]) -> [u8; 8] {
    let d = Sha256::digest(data);
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

impl Header {
    /// Serializes the header including its check bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend(self.version.to_le_bytes());
        b.push(self.m);
        b.extend((self.lane_words.len() as u16).to_le_bytes());
        b.push(self.models.len() as u8);
        for m in &self.models {
            b.push(m.channels);
            b.extend(m.tile.to_le_bytes());
            b.extend(m.patch.to_le_bytes());
            b.extend(m.id);
        }
        b.extend((self.images.len() as u32).to_le_bytes());
        for i in &self.images {
            b.extend(i.width.to_le_bytes());
            b.extend(i.height.to_le_bytes());
            b.extend([i.channels, i.bit_depth, i.model_channels]);
            b.extend(i.checksum);
        }
        for w in &self.lane_words {
            b.extend(w.to_le_bytes());
        }
        let check = Sha256::digest(&b);
        b.extend(&check[..4]);
        b
    }

    /// The model reference for `channels`, if the file uses one.
    pub fn model(&self, channels: u8) -> Option<&ModelRef> {
        self.models.iter().find(|m| m.channels == channels)
    }
}

/// A bounds-checked reader over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| corrupt("file is truncated inside the header"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

fn limit(msg: String) -> CodecError {
    CodecError::Limit(msg)
}

fn read_model(r: &mut Reader<'_>) -> Result<ModelRef> {
    let m = ModelRef {
        channels: r.u8()?,
        tile: r.u16()?,
        patch: r.u16()?,
        id: r.array()?,
    };
    if !matches!(m.channels, 1 | 3) || m.tile == 0 || m.patch == 0 || m.tile % m.patch != 0 {
        return Err(corrupt("bad model geometry in header"));
    }
    Ok(m)
}

fn read_image(r: &mut Reader<'_>, lim: &Limits) -> Result<ImageEntry> {
    let e = ImageEntry {
        width: r.u32()?,
        height: r.u32()?,
        channels: r.u8()?,
        bit_depth: r.u8()?,
        model_channels: r.u8()?,
        checksum: r.array()?,
    };
    if e.width == 0 || e.height == 0 || !(1..=4).contains(&e.channels) {
        return Err(corrupt("bad image geometry in header"));
    }
    if e.bit_depth != 8 {
        return Err(CodecError::Unsupported(format!(
            "bit depth {}",
            e.bit_depth
        )));
    }
    if e.width > lim.max_side || e.height > lim.max_side {
        return Err(limit(format!("image side over {}", lim.max_side)));
    }
    Ok(e)
}

/// Reads every header field up to (not including) the check bytes.
fn parse_fields(bytes: &[u8], lim: &Limits) -> Result<(Header, usize)> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a tfc file (bad magic)"));
    }
    let mut r = Reader {
        bytes,
        pos: MAGIC.len(),
    };
    let version = r.u16()?;
    if version != VERSION {
        return Err(CodecError::Unsupported(format!(
            "tfc format version {version} (this build reads version {VERSION})"
        )));
    }
    let m = r.u8()?;
    let lanes = r.u16()?;
    if m > MAX_M || lanes == 0 || lanes > MAX_LANES {
        return Err(corrupt("bad coding parameters in header"));
    }
    let n_models = r.u8()?;
    if !(1..=2).contains(&n_models) {
        return Err(corrupt("bad model count in header"));
    }
    let models = (0..n_models)
        .map(|_| read_model(&mut r))
        .collect::<Result<Vec<_>>>()?;
    let n_images = r.u32()?;
    if n_images == 0 || n_images > lim.max_images {
        return Err(limit(format!(
            "{n_images} images (limit {})",
            lim.max_images
        )));
    }
    if (n_images as usize).saturating_mul(27) > bytes.len() {
        return Err(corrupt("file is truncated inside the header"));
    }
    let mut images = Vec::with_capacity(n_images as usize);
    let mut pixels = 0u64;
    for _ in 0..n_images {
        let e = read_image(&mut r, lim)?;
        pixels += e.width as u64 * e.height as u64;
        if pixels > lim.max_pixels {
            return Err(limit(format!("more than {} pixels", lim.max_pixels)));
        }
        if !models.iter().any(|m| m.channels == e.model_channels) {
            return Err(corrupt("image refers to a model the file does not list"));
        }
        images.push(e);
    }
    let lane_words = (0..lanes).map(|_| r.u32()).collect::<Result<Vec<_>>>()?;
    Ok((
        Header {
            version,
            m,
            models,
            images,
            lane_words,
        },
        r.pos,
    ))
}

/// Parses and checks the header; returns it with the payload offset.
pub fn parse_header(bytes: &[u8], lim: &Limits) -> Result<(Header, usize)> {
    let (header, pos) = parse_fields(bytes, lim)?;
    let check = bytes
        .get(pos..pos + 4)
        .ok_or_else(|| corrupt("file is truncated inside the header"))?;
    let digest = Sha256::digest(&bytes[..pos]);
    if check[..] != digest[..4] {
        return Err(corrupt("header checksum mismatch"));
    }
    let words: u64 = header.lane_words.iter().map(|&w| w as u64).sum();
    let rest = (bytes.len() - pos - 4) as u64;
    if words * 4 != rest {
        return Err(corrupt(format!(
            "payload is {rest} bytes but the header announces {}",
            words * 4
        )));
    }
    Ok((header, pos + 4))
}

/// Rewrites the header check bytes of a (possibly altered) file so that
/// it gets past the header check; for fuzzing and tests. Returns whether
/// the header fields could be read.
pub fn fix_header_check(bytes: &mut [u8]) -> bool {
    let Ok((_, pos)) = parse_fields(bytes, &Limits::default()) else {
        return false;
    };
    if bytes.len() < pos + 4 {
        return false;
    }
    let digest = Sha256::digest(&bytes[..pos]);
    bytes[pos..pos + 4].copy_from_slice(&digest[..4]);
    true
}
