//! A small Fashion-MNIST classifier, used to measure how well guided
//! samples show their class.

use crate::data::Dataset;
use crate::error::{ModelError, Result};
use crate::file::seeded_vars;
use crate::nn::Linear;
use candle_core::{Device, Module, Tensor, D};
use candle_nn::{loss, Optimizer};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Two-layer perceptron over 28x28 gray images.
pub struct Classifier {
    l1: Linear,
    l2: Linear,
    classes: usize,
}

fn to_input(px: &[u8], n: usize, dev: &Device) -> Result<Tensor> {
    let v: Vec<f32> = px.iter().map(|&p| p as f32 / 255.0).collect();
    Ok(Tensor::from_vec(v, (n, px.len() / n.max(1)), dev)?)
}

impl Classifier {
    /// Trains on a labelled dataset of equally sized gray images.
    pub fn train(data: &Dataset, epochs: usize, seed: u64, dev: &Device) -> Result<Self> {
        let labels = data
            .labels
            .as_ref()
            .ok_or_else(|| ModelError::Data("the classifier needs labels".into()))?;
        let classes = labels.iter().max().map_or(0, |m| *m as usize + 1);
        let dim = data.images.first().map_or(0, |i| i.data.len());
        // Seeded, so that the same data and seed give the same classifier.
        let (vars, vb) = seeded_vars(seed, dev);
        let me = Self {
            l1: Linear::new(vb.pp("l1"), dim, 256)?,
            l2: Linear::new(vb.pp("l2"), 256, classes)?,
            classes,
        };
        let mut opt = candle_nn::AdamW::new_lr(vars.all_vars(), 1e-3)?;
        let mut order: Vec<usize> = (0..data.len()).collect();
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(128) {
                let px: Vec<u8> = chunk
                    .iter()
                    .flat_map(|&i| data.images[i].data.clone())
                    .collect();
                let y: Vec<u32> = chunk.iter().map(|&i| labels[i]).collect();
                let x = to_input(&px, chunk.len(), dev)?;
                let y = Tensor::new(y, dev)?;
                let l = loss::cross_entropy(&me.logits(&x)?, &y)?;
                opt.backward_step(&l)?;
            }
        }
        Ok(me)
    }

    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.l2.forward(&self.l1.forward(x)?.relu()?)?)
    }

    /// Predicted class of each image (planar 8-bit, concatenated).
    pub fn predict(&self, px: &[u8], n: usize, dev: &Device) -> Result<Vec<u32>> {
        let x = to_input(px, n, dev)?;
        Ok(self.logits(&x)?.argmax(D::Minus1)?.to_vec1()?)
    }

    /// Accuracy on a labelled dataset.
    pub fn accuracy(&self, data: &Dataset, dev: &Device) -> Result<f64> {
        let labels = data
            .labels
            .as_ref()
            .ok_or_else(|| ModelError::Data("no labels".into()))?;
        let px: Vec<u8> = data.images.iter().flat_map(|i| i.data.clone()).collect();
        let pred = self.predict(&px, data.len(), dev)?;
        let hits = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
        Ok(hits as f64 / data.len().max(1) as f64)
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Planar;

    #[test]
    fn the_same_seed_trains_the_same_classifier() {
        let n = 40u32;
        let images = (0..n)
            .map(|i| Planar {
                channels: 1,
                height: 4,
                width: 4,
                data: (0..16u32)
                    .map(|j| ((i * 37 + j * 11) % 251) as u8)
                    .collect(),
            })
            .collect();
        let data = Dataset {
            images,
            labels: Some((0..n).map(|i| i % 3).collect()),
            description: "synthetic".into(),
        };
        let dev = Device::Cpu;
        let px: Vec<u8> = data.images.iter().flat_map(|i| i.data.clone()).collect();
        let logits = |seed| -> Vec<f32> {
            let c = Classifier::train(&data, 2, seed, &dev).unwrap();
            let x = to_input(&px, n as usize, &dev).unwrap();
            c.logits(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        assert_eq!(logits(5), logits(5));
        assert_ne!(logits(5), logits(6));
    }
}
