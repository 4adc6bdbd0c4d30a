//! Training and evaluation data: Fashion-MNIST from its gzip IDX files and
//! folders of images, as 8-bit planar batches; dequantization into model
//! space.

use crate::config::Noise;
use crate::error::{ModelError, Result};
use candle_core::{Device, Tensor};
use flate2::read::GzDecoder;
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::io::Read;
use std::path::{Path, PathBuf};
use tfc_codec::config::FlowConfig;
use tfc_codec::context;

/// Where the Debian package `dataset-fashion-mnist` puts its files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// An 8-bit image, planar (`C x H x W`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planar {
    /// Channels.
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// `C * H * W` values.
    pub data: Vec<u8>,
}

impl Planar {
    /// Converts an interleaved image (`H x W x C`) to planar.
    pub fn from_interleaved(width: usize, height: usize, channels: usize, px: &[u8]) -> Self {
        let mut data = vec![0u8; px.len()];
        for (i, v) in px.iter().enumerate() {
            let (pix, c) = (i / channels, i % channels);
            data[c * width * height + pix] = *v;
        }
        Self {
            channels,
            height,
            width,
            data,
        }
    }

    /// Converts back to interleaved (`H x W x C`).
    pub fn to_interleaved(&self) -> Vec<u8> {
        let plane = self.width * self.height;
        (0..plane * self.channels)
            .map(|i| self.data[(i % self.channels) * plane + i / self.channels])
            .collect()
    }

    /// Copies the `size x size` window at `(top, left)`, mirrored if `flip`.
    pub fn crop(&self, top: usize, left: usize, size: usize, flip: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.channels * size * size);
        for c in 0..self.channels {
            let plane = &self.data[c * self.width * self.height..];
            for y in 0..size {
                let row = &plane[(top + y) * self.width + left..][..size];
                if flip {
                    out.extend(row.iter().rev());
                } else {
                    out.extend_from_slice(row);
                }
            }
        }
        out
    }

    /// Averages `f x f` blocks (anti-aliased integer downscale).
    pub fn downscale(&self, f: usize) -> Self {
        if f <= 1 {
            return self.clone();
        }
        let (w, h) = (self.width / f, self.height / f);
        let mut data = Vec::with_capacity(self.channels * w * h);
        for c in 0..self.channels {
            let plane = &self.data[c * self.width * self.height..];
            for y in 0..h {
                for x in 0..w {
                    let mut s = 0u32;
                    for dy in 0..f {
                        for dx in 0..f {
                            s += plane[(y * f + dy) * self.width + x * f + dx] as u32;
                        }
                    }
                    let n = (f * f) as u32;
                    data.push(((s + n / 2) / n) as u8);
                }
            }
        }
        Self {
            channels: self.channels,
            height: h,
            width: w,
            data,
        }
    }
}

/// A set of images, with class labels when the source has them.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The images.
    pub images: Vec<Planar>,
    /// One label per image, if labelled.
    pub labels: Option<Vec<u32>>,
    /// Human-readable description of the source.
    pub description: String,
}

/// Options for reading a folder of photographs.
#[derive(Debug, Clone, Copy)]
pub struct FolderOptions {
    /// Channels to convert to (1 luma, 3 RGB).
    pub channels: usize,
    /// Integer downscale applied to every image (JPEG sources: 2 or more).
    pub downscale: usize,
    /// Also add a 2x downscaled copy of each image.
    pub multiscale: bool,
}

impl Dataset {
    /// Opens `fashion-mnist:train`, `fashion-mnist:test` or a folder/file of
    /// images.
    pub fn open(source: &str, opts: FolderOptions) -> Result<Self> {
        match source.strip_prefix("fashion-mnist:") {
            Some("train") => fashion_mnist(Path::new(FASHION_MNIST_DIR), "train"),
            Some("test") => fashion_mnist(Path::new(FASHION_MNIST_DIR), "t10k"),
            Some(other) => Err(ModelError::Data(format!(
                "unknown Fashion-MNIST split {other:?} (use train or test)"
            ))),
            None => image_folder(Path::new(source), opts),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Number of channels (of the first image).
    pub fn channels(&self) -> usize {
        self.images.first().map_or(0, |i| i.channels)
    }

    /// Appends another dataset's images (labels are kept only if both have
    /// them).
    pub fn extend(&mut self, other: Dataset) {
        self.labels = match (self.labels.take(), other.labels) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        };
        self.images.extend(other.images);
        self.description = format!("{} + {}", self.description, other.description);
    }

    /// Keeps the first `n` images.
    pub fn truncate(&mut self, n: usize) {
        self.images.truncate(n);
        if let Some(l) = &mut self.labels {
            l.truncate(n);
        }
    }

    /// The context prefix of each tile of [`Self::tiles`] (same order), as
    /// the codec gives it to a tile coded unturned: the tiles to the
    /// right, below and below-right, where they are among those tiles.
    pub fn tile_contexts(&self, cfg: &FlowConfig) -> Vec<Vec<f32>> {
        let size = cfg.image_size;
        let mut out = Vec::new();
        for img in &self.images {
            let (gx, gy) = (img.width / size, img.height / size);
            let tile = |tx: usize, ty: usize| -> Option<Vec<u8>> {
                (tx < gx && ty < gy).then(|| {
                    let planar = img.crop(ty * size, tx * size, size, false);
                    let n = size * size;
                    (0..n * img.channels)
                        .map(|i| planar[(i % img.channels) * n + i / img.channels])
                        .collect()
                })
            };
            for ty in 0..gy {
                for tx in 0..gx {
                    let (r, b, c) = (tile(tx + 1, ty), tile(tx, ty + 1), tile(tx + 1, ty + 1));
                    out.push(context::coded_prefix(
                        cfg,
                        0,
                        r.as_deref(),
                        b.as_deref(),
                        c.as_deref(),
                    ));
                }
            }
        }
        out
    }

    /// Every non-overlapping `size x size` tile lying fully inside an image,
    /// raster order, image by image; labels follow their images.
    pub fn tiles(&self, size: usize) -> (Vec<Vec<u8>>, Vec<Option<u32>>) {
        let mut tiles = Vec::new();
        let mut labels = Vec::new();
        for (i, img) in self.images.iter().enumerate() {
            for ty in 0..img.height / size {
                for tx in 0..img.width / size {
                    tiles.push(img.crop(ty * size, tx * size, size, false));
                    labels.push(self.labels.as_ref().map(|l| l[i]));
                }
            }
        }
        (tiles, labels)
    }
}

/// Probability that a part of a training tile's context (its horizontal
/// side, its vertical side, its corner) is available, where the image has
/// it: coded tiles mostly have both neighbours, but not at the image's
/// edges and a lane's start.
pub const CONTEXT_KEEP: f64 = 0.9;

/// One training batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `n` crops, each `C*size*size`, planar.
    pub px: Vec<u8>,
    /// Their labels.
    pub labels: Vec<Option<u32>>,
    /// For a context model: every crop's prefix values and its corner.
    pub context: Option<(Vec<f32>, Vec<u8>)>,
}

/// Draws random training batches: images uniformly at random, a random crop
/// of each, and a random horizontal flip; for a context model also a
/// random corner, and the ring of patches next to it read from the image
/// around the crop (flipped with it), each part kept with probability
/// [`CONTEXT_KEEP`]. It keeps no state besides the RNG it is given, so a
/// resumed run draws the same batches.
pub struct Sampler {
    usable: Vec<usize>,
    size: usize,
    flip: bool,
    context: Option<FlowConfig>,
}

impl Sampler {
    /// A sampler of `size x size` crops.
    pub fn new(data: &Dataset, size: usize, flip: bool) -> Result<Self> {
        let usable: Vec<usize> = (0..data.len())
            .filter(|&i| data.images[i].width >= size && data.images[i].height >= size)
            .collect();
        if usable.is_empty() {
            return Err(ModelError::Data(format!(
                "{}: no image is at least {size}x{size}",
                data.description
            )));
        }
        Ok(Self {
            usable,
            size,
            flip,
            context: None,
        })
    }

    /// Also draws context prefixes for a model with [`FlowConfig::context`].
    pub fn with_context(mut self, cfg: &FlowConfig) -> Self {
        self.context = cfg.context.then(|| cfg.clone());
        self
    }

    /// `n` crops, their labels and, for a context model, their contexts.
    pub fn batch(&self, data: &Dataset, n: usize, rng: &mut StdRng) -> Batch {
        let mut px = Vec::new();
        let mut labels = Vec::with_capacity(n);
        let mut values = Vec::new();
        let mut corners = Vec::new();
        for _ in 0..n {
            let i = self.usable[rng.random_range(0..self.usable.len())];
            let img = &data.images[i];
            let top = rng.random_range(0..=img.height - self.size);
            let left = rng.random_range(0..=img.width - self.size);
            let flip = self.flip && rng.random_bool(0.5);
            px.extend(img.crop(top, left, self.size, flip));
            labels.push(data.labels.as_ref().map(|l| l[i]));
            if let Some(cfg) = &self.context {
                let corner = rng.random_range(0..4u8);
                let keep = [
                    rng.random_bool(CONTEXT_KEEP),
                    rng.random_bool(CONTEXT_KEEP),
                    rng.random_bool(CONTEXT_KEEP),
                ];
                values.extend(ring_from_image(cfg, img, (top, left), flip, corner, keep));
                corners.push(corner);
            }
        }
        Batch {
            px,
            labels,
            context: self.context.as_ref().map(|_| (values, corners)),
        }
    }
}

/// The context prefix next to `corner` of the tile at `(top, left)` of
/// `img` (mirrored if `flip`), read from the image; a patch is available
/// if its part (`keep`: horizontal side, vertical side, corner) is kept
/// and it lies inside the image.
fn ring_from_image(
    cfg: &FlowConfig,
    img: &Planar,
    (top, left): (usize, usize),
    flip: bool,
    corner: u8,
    keep: [bool; 3],
) -> Vec<f32> {
    let (t, p) = (cfg.image_size as isize, cfg.patch as isize);
    let g = cfg.grid() as isize;
    let (w, h) = (img.width as isize, img.height as isize);
    context::prefix_values(cfg, corner, |pr, pc, out| {
        let edge_r = pr == -1 || pr == g;
        let edge_c = pc == -1 || pc == g;
        let part = match (edge_r, edge_c) {
            (true, true) => keep[2],
            (true, false) => keep[0],
            _ => keep[1],
        };
        if !part {
            return false;
        }
        for ch in 0..img.channels {
            let plane = &img.data[ch * img.width * img.height..];
            for y in 0..p {
                for x in 0..p {
                    let r = top as isize + pr * p + y;
                    let c = pc * p + x;
                    let c = left as isize + if flip { t - 1 - c } else { c };
                    if r < 0 || r >= h || c < 0 || c >= w {
                        return false;
                    }
                    out[((ch as isize * p + y) * p + x) as usize] = plane[(r * w + c) as usize];
                }
            }
        }
        true
    })
}

/// Maps 8-bit planar pixels to model space `(B, C, S, S)` with the given
/// dequantization noise.
pub fn to_model_space(
    px: &[u8],
    shape: (usize, usize, usize, usize),
    noise: Noise,
    rng: &mut StdRng,
    dev: &Device,
) -> Result<Tensor> {
    let v: Vec<f32> = match noise {
        Noise::Uniform => px
            .iter()
            .map(|&x| (x as f32 + rng.random::<f32>()) / 128.0 - 1.0)
            .collect(),
        Noise::Gaussian { sigma } => px
            .iter()
            .map(|&x| {
                let e: f32 = StandardNormal.sample(rng);
                (x as f32 + 0.5) / 128.0 - 1.0 + sigma as f32 * e
            })
            .collect(),
    };
    Ok(Tensor::from_vec(v, shape, dev)?)
}

fn read_gz(path: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| {
        let hint = "install the Debian package dataset-fashion-mnist";
        ModelError::Data(format!("{}: {e} ({hint})", path.display()))
    })?;
    let mut out = Vec::new();
    GzDecoder::new(f)
        .read_to_end(&mut out)
        .map_err(|e| ModelError::io(path, e))?;
    Ok(out)
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// Reads one split (`train` or `t10k`) of Fashion-MNIST in IDX format.
pub fn fashion_mnist(dir: &Path, split: &str) -> Result<Dataset> {
    let imgs = read_gz(&dir.join(format!("{split}-images-idx3-ubyte.gz")))?;
    let labs = read_gz(&dir.join(format!("{split}-labels-idx1-ubyte.gz")))?;
    let bad = || ModelError::Data(format!("{split}: malformed IDX file"));
    if imgs.len() < 16 || be32(&imgs, 0) != 0x803 || labs.len() < 8 || be32(&labs, 0) != 0x801 {
        return Err(bad());
    }
    let (n, h, w) = (be32(&imgs, 4), be32(&imgs, 8), be32(&imgs, 12));
    if imgs.len() != 16 + n * h * w || labs.len() != 8 + n || be32(&labs, 4) != n {
        return Err(bad());
    }
    let images = imgs[16..]
        .chunks_exact(h * w)
        .map(|c| Planar {
            channels: 1,
            height: h,
            width: w,
            data: c.to_vec(),
        })
        .collect();
    Ok(Dataset {
        images,
        labels: Some(labs[8..].iter().map(|&l| l as u32).collect()),
        description: format!(
            "fashion-mnist:{}",
            if split == "t10k" { "test" } else { split }
        ),
    })
}

/// Image files under `path` (a file, or a folder searched recursively),
/// sorted.
fn list_images(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| ModelError::io(path, e))? {
        let p = entry.map_err(|e| ModelError::io(path, e))?.path();
        if p.is_dir() {
            files.extend(list_images(&p)?);
        } else if image::ImageFormat::from_path(&p).is_ok() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads a folder (or one file) of images, converted to `opts.channels`.
pub fn image_folder(path: &Path, opts: FolderOptions) -> Result<Dataset> {
    let files = list_images(path)?;
    if files.is_empty() {
        return Err(ModelError::Data(format!("{}: no images", path.display())));
    }
    let mut images = Vec::new();
    for f in &files {
        let img = image::open(f).map_err(|e| ModelError::Data(format!("{}: {e}", f.display())))?;
        let p = match opts.channels {
            1 => {
                let g = img.to_luma8();
                Planar::from_interleaved(g.width() as usize, g.height() as usize, 1, g.as_raw())
            }
            3 => {
                let g = img.to_rgb8();
                Planar::from_interleaved(g.width() as usize, g.height() as usize, 3, g.as_raw())
            }
            c => return Err(ModelError::Data(format!("{c} channels not supported"))),
        };
        let p = p.downscale(opts.downscale);
        if opts.multiscale {
            images.push(p.downscale(2));
        }
        images.push(p);
    }
    let description = format!(
        "{} ({} files, downscale {}, multiscale {})",
        path.display(),
        files.len(),
        opts.downscale,
        opts.multiscale
    );
    Ok(Dataset {
        images,
        labels: None,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: usize, h: usize, channels: usize) -> Planar {
        Planar {
            channels,
            height: h,
            width: w,
            data: (0..w * h * channels)
                .map(|i| (i * 37 % 253) as u8)
                .collect(),
        }
    }

    fn cfg() -> FlowConfig {
        FlowConfig {
            context: true,
            ..FlowConfig::tiny(3)
        }
    }

    /// A training crop at a tile position with everything kept reads the
    /// same ring as the codec gives that tile (bottom-right corner); the
    /// flipped crop reads the mirrored ring, next to the bottom-left corner.
    #[test]
    fn training_rings_match_the_coded_context() {
        let c = cfg();
        let img = image(24, 16, 3);
        let set = Dataset {
            images: vec![img.clone()],
            labels: None,
            description: String::new(),
        };
        let coded = set.tile_contexts(&c);
        let (gx, t) = (3, c.image_size);
        let all = [true; 3];
        for (i, want) in coded.iter().enumerate() {
            let (ty, tx) = (i / gx, i % gx);
            let got = ring_from_image(
                &c,
                &img,
                (ty * t, tx * t),
                false,
                context::BOTTOM_RIGHT,
                all,
            );
            assert_eq!(&got, want, "tile {tx},{ty}");
        }
        // Tile (1, 0) has a right, a lower and a lower-right neighbour.
        assert!(coded[1]
            .chunks(c.context_dim())
            .all(|tok| tok[c.token_dim()] == 1.0));
        // Mirrored: build the mirrored image and compare with its coded ring.
        let mut mirrored = img.clone();
        for ch in 0..3 {
            for y in 0..16 {
                for x in 0..24 {
                    mirrored.data[(ch * 16 + y) * 24 + x] = img.data[(ch * 16 + y) * 24 + 23 - x];
                }
            }
        }
        let set_m = Dataset {
            images: vec![mirrored],
            labels: None,
            description: String::new(),
        };
        let coded_m = set_m.tile_contexts(&c);
        // Mirrored tile (tx, 0) is original tile (2 - tx, 0) flipped: read
        // flipped, the original's left side is its right side.
        for (tx, want) in coded_m.iter().take(gx).enumerate() {
            let got = ring_from_image(
                &c,
                &img,
                (0, (2 - tx) * t),
                true,
                context::BOTTOM_RIGHT,
                all,
            );
            assert_eq!(&got, want, "mirrored tile {tx}");
        }
        // Dropped parts read as unavailable.
        let none = ring_from_image(&c, &img, (0, 8), false, context::BOTTOM_RIGHT, [false; 3]);
        assert!(none.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn batches_of_a_context_model_carry_one_prefix_per_crop() {
        let c = cfg();
        let set = Dataset {
            images: vec![image(24, 16, 3)],
            labels: None,
            description: String::new(),
        };
        let s = Sampler::new(&set, c.image_size, true)
            .unwrap()
            .with_context(&c);
        let mut rng = rand::SeedableRng::seed_from_u64(3);
        let b = s.batch(&set, 5, &mut rng);
        let (values, corners) = b.context.expect("context model");
        assert_eq!(corners.len(), 5);
        assert_eq!(values.len(), 5 * c.context_len() * c.context_dim());
        let plain = Sampler::new(&set, c.image_size, true).unwrap();
        assert!(plain.batch(&set, 2, &mut rng).context.is_none());
    }
}
