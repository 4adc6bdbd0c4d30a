//! Named training configurations: architecture, noise and optimisation.

use crate::config::{ModelConfig, Noise};
use crate::train::TrainOptions;
use tfc_codec::config::FlowConfig;

/// A preset: model, optimisation and default data sources.
#[derive(Debug, Clone)]
pub struct Preset {
    /// Name on the command line.
    pub name: &'static str,
    /// What it is for.
    pub about: &'static str,
    /// Model configuration.
    pub config: ModelConfig,
    /// Optimisation settings.
    pub options: TrainOptions,
    /// Default training data.
    pub data: &'static str,
    /// Default validation data.
    pub val: Option<&'static str>,
    /// Downscale and multiscale for folder data.
    pub downscale: usize,
    /// Adds 2x downscaled copies of folder images.
    pub multiscale: bool,
}

fn arch(
    channels: usize,
    image_size: usize,
    patch: usize,
    hidden: usize,
    blocks: usize,
    layers: usize,
) -> FlowConfig {
    FlowConfig {
        channels,
        image_size,
        patch,
        hidden,
        blocks,
        layers,
        head_dim: 64.min(hidden),
        mlp_ratio: 4,
        classes: 0,
        intra: false,
        context: false,
    }
}

fn options(steps: u64, batch: usize, lr: f64, warmup: u64) -> TrainOptions {
    TrainOptions {
        steps,
        batch,
        lr,
        min_lr: 1e-5,
        warmup,
        betas: (0.9, 0.95),
        weight_decay: 1e-4,
        clip: 1.0,
        ema: None,
        flip: false,
        seed: 0,
        val_every: 500,
        ckpt_every: 500,
        intra_lr_scale: 10.0,
        context_lr_scale: 1.0,
        compact_checkpoint: false,
    }
}

/// Every preset.
pub fn all() -> Vec<Preset> {
    let fmnist = ModelConfig::new(arch(1, 28, 4, 128, 4, 2));
    let mut cond = ModelConfig::new(FlowConfig {
        classes: 10,
        ..arch(1, 28, 4, 128, 4, 2)
    });
    cond.noise = Noise::Gaussian { sigma: 0.3 };
    cond.label_dropout = 0.1;
    cond.class_names = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let photo = |c| {
        let mut o = options(20_000, 32, 1e-3, 500);
        o.flip = true;
        o.ema = Some(0.999);
        o.val_every = 1000;
        o.ckpt_every = 250;
        Preset {
            name: if c == 3 { "photo-rgb" } else { "photo-gray" },
            about: "32x32 tiles of photographs, patch 4, width 128, 4x2 layers",
            config: ModelConfig::new(FlowConfig::photo(c)),
            options: o,
            data: "../shared/data/photos",
            val: None,
            downscale: 1,
            multiscale: true,
        }
    };
    let mut cond_opts = options(6000, 64, 1e-3, 200);
    cond_opts.ema = Some(0.999);
    let mut tiny_opts = options(300, 16, 2e-3, 20);
    tiny_opts.flip = true;
    tiny_opts.val_every = 0;
    vec![
        Preset {
            name: "fmnist-tiny",
            about: "Fashion-MNIST 28x28, patch 4, width 128, 4 blocks x 2 layers, uniform",
            config: fmnist,
            options: options(3000, 64, 1e-3, 200),
            data: "fashion-mnist:train",
            val: Some("fashion-mnist:test"),
            downscale: 1,
            multiscale: false,
        },
        Preset {
            name: "fmnist-cond",
            about: "class-conditional Fashion-MNIST with Gaussian noise, for sampling",
            config: cond,
            options: cond_opts,
            data: "fashion-mnist:train",
            val: Some("fashion-mnist:test"),
            downscale: 1,
            multiscale: false,
        },
        photo(3),
        photo(1),
        Preset {
            name: "tiny-rgb",
            about: "a very small 16x16 RGB model that trains in minutes",
            config: ModelConfig::new(arch(3, 16, 4, 32, 2, 1)),
            options: tiny_opts,
            data: "../shared/data/photos",
            val: None,
            downscale: 2,
            multiscale: false,
        },
    ]
}

/// Looks a preset up by name.
pub fn find(name: &str) -> Option<Preset> {
    all().into_iter().find(|p| p.name == name)
}
