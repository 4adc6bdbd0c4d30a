//! Shared set-up of tfc's benchmarks: the fmnist-tiny model and a batch.

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tfc_model::data::{to_model_space, Dataset, Planar};
use tfc_model::file::Model;
use tfc_model::presets;
use tfc_model::train::Trainer;
use tfc_model::Noise;

/// The fmnist-tiny model, freshly initialised.
pub fn fmnist_tiny() -> Model {
    let p = presets::find("fmnist-tiny").expect("preset");
    Model::fresh(p.config, 0, &Device::Cpu).expect("model")
}

/// `n` synthetic 28x28 gray images (bench data must not need the dataset).
pub fn synthetic(n: usize) -> Dataset {
    let images = (0..n)
        .map(|i| Planar {
            channels: 1,
            height: 28,
            width: 28,
            data: (0..784).map(|j| ((i * 7 + j * 13) % 256) as u8).collect(),
        })
        .collect();
    Dataset {
        images,
        labels: None,
        description: "synthetic".into(),
    }
}

/// A batch of `n` images in model space.
pub fn batch(n: usize) -> Tensor {
    let px: Vec<u8> = synthetic(n)
        .images
        .into_iter()
        .flat_map(|p| p.data)
        .collect();
    let mut rng = StdRng::seed_from_u64(0);
    to_model_space(&px, (n, 1, 28, 28), Noise::Uniform, &mut rng, &Device::Cpu).expect("batch")
}

/// A trainer of the fmnist-tiny preset on synthetic data.
pub fn trainer(batch: usize) -> Trainer {
    let p = presets::find("fmnist-tiny").expect("preset");
    let mut o = p.options;
    o.batch = batch;
    o.val_every = 0;
    o.steps = u64::MAX;
    Trainer::new(p.config, o, synthetic(256), None, &Device::Cpu).expect("trainer")
}
