//! Shared helpers for the integration tests: tiny seeded random models and
//! synthetic images.
#![allow(dead_code)]

use tfc_codec::config::FlowConfig;
use tfc_codec::model_file::{random_model_bytes, SplitMix};
use tfc_codec::{decode_file, encode_images, CodingParams, Image, ModelFile, ModelSet};

/// A tiny architecture with `channels` channels, fast in debug builds.
pub fn tiny_config(channels: usize) -> FlowConfig {
    FlowConfig::tiny(channels)
}

/// A tiny random-weight model.
pub fn tiny_model(channels: usize, seed: u64) -> ModelFile {
    ModelFile::from_bytes(&random_model_bytes(&tiny_config(channels), seed, 0.05)).unwrap()
}

/// Synthetic content kinds.
#[derive(Debug, Clone, Copy)]
pub enum Content {
    Flat,
    Gradient,
    Noise,
}

/// A seeded synthetic image.
pub fn synthetic(w: u32, h: u32, c: u8, content: Content, seed: u64) -> Image {
    let mut rng = SplitMix::new(seed);
    let mut data = Vec::with_capacity((w * h * c as u32) as usize);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c as u32 {
                let v = match content {
                    Content::Flat => 100 + 20 * ch,
                    Content::Gradient => (x * 255 / w.max(2) + y * 3 + ch * 40) % 256,
                    Content::Noise => (rng.next_u64() & 255) as u32,
                };
                data.push(v as u8);
            }
        }
    }
    Image::new(w, h, c, data).unwrap()
}

/// The committed 48x40 crop of Kodak image 23 (binary PPM).
pub fn kodak_crop() -> Image {
    let bytes = include_bytes!("../data/kodim23_crop.ppm");
    // Header "P6\n48 40\n255\n".
    let mut fields = Vec::new();
    let mut pos = 0;
    while fields.len() < 4 {
        while bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        let start = pos;
        while !bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        fields.push(String::from_utf8(bytes[start..pos].to_vec()).unwrap());
    }
    let (w, h): (u32, u32) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let data = bytes[pos + 1..].to_vec();
    Image::new(w, h, 3, data).unwrap()
}

/// The bit patterns of `v`, to compare floats exactly.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `n` seeded values in `[-1, 1)`.
pub fn random_values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix::new(seed);
    (0..n).map(|_| rng.symmetric()).collect()
}

/// Encodes `images`, decodes the file, asserts every pixel came back and
/// returns the file.
pub fn round_trip(models: &ModelSet<'_>, images: &[Image], params: CodingParams) -> Vec<u8> {
    let file = encode_images(models, images, &params).unwrap();
    let back = decode_file(models, &file).unwrap();
    assert_eq!(back.len(), images.len());
    for (a, b) in back.iter().zip(images) {
        assert_eq!(
            (a.width, a.height, a.channels),
            (b.width, b.height, b.channels)
        );
        assert!(
            a.data == b.data,
            "pixels differ for {}x{}x{} with {params:?}",
            b.width,
            b.height,
            b.channels
        );
    }
    file
}
