//! The full description of a model, stored in its file: architecture,
//! training noise, label handling and where the weights came from.

use serde::{Deserialize, Serialize};
pub use tfc_codec::config::FlowConfig;

/// How training data was made continuous.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Noise {
    /// `y = (x + u) / 128 - 1`, `u ~ U[0, 1)`: the codec's bound.
    Uniform,
    /// `y = (x + 0.5) / 128 - 1 + sigma * eps`, `eps ~ N(0, 1)`.
    Gaussian { sigma: f64 },
}

impl Noise {
    /// The Gaussian sigma, if any.
    pub fn sigma(&self) -> Option<f64> {
        match self {
            Noise::Uniform => None,
            Noise::Gaussian { sigma } => Some(*sigma),
        }
    }
}

/// Provenance of the weights: how far training went and on what.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainInfo {
    /// Optimizer steps taken.
    pub step: u64,
    /// Preset name the run started from, if any.
    #[serde(default)]
    pub preset: String,
    /// Description of the training data (source, crops, scaling).
    #[serde(default)]
    pub data: String,
    /// Last validation bits per dimension measured, if any.
    #[serde(default)]
    pub val_bpd: Option<f64>,
    /// Whether the stored weights are an exponential moving average.
    #[serde(default)]
    pub ema: bool,
}

/// Everything stored next to the weights in a model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Network architecture.
    pub arch: FlowConfig,
    /// Training noise.
    pub noise: Noise,
    /// Probability of dropping the class label during training.
    #[serde(default)]
    pub label_dropout: f64,
    /// Optional class names, one per class.
    #[serde(default)]
    pub class_names: Vec<String>,
    /// Training provenance.
    #[serde(default)]
    pub train: TrainInfo,
}

impl ModelConfig {
    /// A configuration with default noise and no training history.
    pub fn new(arch: FlowConfig) -> Self {
        Self {
            arch,
            noise: Noise::Uniform,
            label_dropout: 0.0,
            class_names: Vec::new(),
            train: TrainInfo::default(),
        }
    }
}
