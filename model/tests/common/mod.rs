//! Shared set-up of the model tests.

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tfc_model::config::{FlowConfig, ModelConfig};
use tfc_model::file::Model;

/// A fresh model whose zero-initialised output layers (class embeddings
/// and intra-token matrices) are replaced by uniform values in `+-scale`, so that every
/// block really transforms its input.
pub fn random_model(arch: FlowConfig, seed: u64, scale: f32) -> Model {
    let dev = Device::Cpu;
    let model = Model::fresh(ModelConfig::new(arch), seed, &dev).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = model.weights().unwrap();
    let mut names: Vec<String> = w.keys().cloned().collect();
    names.sort();
    for name in names
        .iter()
        .filter(|n| n.contains("proj_out") || n.contains("class_embed") || n.ends_with(".intra"))
    {
        let t = &w[name];
        let v: Vec<f32> = (0..t.elem_count())
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        let fresh = Tensor::from_vec(v, t.shape(), &dev).unwrap();
        w.insert(name.clone(), fresh);
    }
    model.set_weights(&w, &dev).unwrap();
    model
}

/// Largest absolute element-wise difference of two tensors.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    tfc_model::nn::max_abs_diff(a, b).unwrap()
}
