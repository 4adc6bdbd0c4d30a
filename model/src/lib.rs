//! `tfc-model`: the TarFlow of "Normalizing Flows are Capable Generative
//! Models" in candle, with its model file, training, bits-per-dimension
//! evaluation and sampling.

pub mod classifier;
pub mod config;
pub mod data;
pub mod error;
pub mod file;
pub mod flow;
pub mod nn;
pub mod ops;
pub mod presets;
pub mod sample;
pub mod train;

pub use config::{FlowConfig, ModelConfig, Noise};
pub use error::{ModelError, Result};
pub use flow::{nats_to_bpd, Context, Labels, TarFlow};
