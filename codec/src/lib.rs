//! Exact lossless image coding with a TarFlow normalizing flow.
//!
//! A model file trained by `tfc-model` drives bits-back rANS coding over an
//! integer lattice: dequantization noise is popped from the stack, every
//! flow block becomes an exact integer shift and modular scale transform,
//! and the final latents are coded under a discretized Gaussian. The
//! network runs through a deterministic f32 path ([`net`]) so that the
//! encoder and the decoder agree bit for bit on any x86-64 machine.
//!
//! ```
//! use tfc_codec::{config::FlowConfig, decode_file, encode_images, CodingParams, Image, ModelFile, ModelSet};
//!
//! let cfg = FlowConfig {
//!     channels: 3, image_size: 4, patch: 2, hidden: 8, blocks: 2, layers: 1,
//!     head_dim: 4, mlp_ratio: 2, classes: 0, intra: false, context: false,
//! };
//! let model = ModelFile::from_bytes(&tfc_codec::model_file::random_model_bytes(&cfg, 1, 0.05))?;
//! let models = ModelSet::single(&model)?;
//! let img = Image::new(3, 2, 3, (0..18).map(|i| (i * 14) as u8).collect())?;
//! let file = encode_images(&models, &[img.clone()], &CodingParams::default())?;
//! assert_eq!(decode_file(&models, &file)?, vec![img]);
//! # Ok::<(), tfc_codec::CodecError>(())
//! ```

pub mod alpha;
pub mod ans;
pub mod codec;
pub mod config;
pub mod context;
pub mod error;
pub mod format;
pub mod image;
pub mod lattice;
pub mod lead;
pub mod model_file;
pub mod net;
pub mod reference;
pub mod tile;

pub use codec::{
    coded_bits, decode_file, decode_file_with, encode_images, encode_images_with, inspect,
    lanes_for, tiles_for_header, tiles_for_images, CodedStats, CodingParams, FileInfo, ModelSet,
    TILES_PER_LANE,
};
pub use error::CodecError;
pub use format::Limits;
pub use image::Image;
pub use model_file::{ModelFile, ModelId};
