//! Sampling: the cached inverse is exact, guidance reduces to plain sampling
//! where it should, and denoising follows the score.

mod common;

use candle_core::{Device, Tensor};
use tfc_model::config::FlowConfig;
use tfc_model::file::Model;
use tfc_model::sample::{denoise, prior, reverse, sample, Guidance, SampleOptions};
use tfc_model::Labels;

fn model(classes: usize, seed: u64) -> Model {
    let arch = FlowConfig {
        channels: 1,
        image_size: 8,
        patch: 2,
        hidden: 16,
        blocks: 2,
        layers: 2,
        head_dim: 8,
        mlp_ratio: 4,
        classes,
        // The unconditional models also predict within tokens and the
        // conditional ones read context tokens (none available when
        // sampling), so every block variant is sampled.
        intra: classes == 0,
        context: classes > 0,
    };
    common::random_model(arch, seed, 0.1)
}

#[test]
fn forward_of_sample_gives_back_the_noise() {
    let m = model(0, 1);
    let z = prior(&m.flow, 3, 1.0, 4, &Device::Cpu).unwrap();
    let x = reverse(&m.flow, &z, None, None).unwrap();
    let (z2, _) = m.flow.forward_tokens(&x, None, None).unwrap();
    assert!(common::max_diff(&z, &z2) < 1e-4);
    assert!(
        common::max_diff(&z, &x) > 1e-2,
        "the flow must not be the identity"
    );
}

#[test]
fn kv_cache_inverse_matches_naive_inverse() {
    let m = model(3, 2);
    let dev = Device::Cpu;
    let labels = Labels::new(&[Some(0), Some(2), None], &dev).unwrap();
    let z = prior(&m.flow, 3, 1.0, 5, &dev).unwrap();
    let cached = reverse(&m.flow, &z, Some(&labels), None).unwrap();
    let naive = m.flow.reverse_naive(&z, Some(&labels), None).unwrap();
    let d = common::max_diff(&cached, &naive);
    assert!(d < 1e-5, "difference {d}");
}

#[test]
fn cfg_zero_equals_plain_conditional_sampling() {
    let m = model(3, 3);
    let dev = Device::Cpu;
    let labels = [Some(1), Some(2)];
    let plain = sample(&m.flow, &labels, SampleOptions::default(), 7, &dev).unwrap();
    let zero = SampleOptions {
        guidance: Some(Guidance {
            weight: 0.0,
            attn_temp: 1.0,
        }),
        ..Default::default()
    };
    let g0 = sample(&m.flow, &labels, zero, 7, &dev).unwrap();
    assert_eq!(
        plain.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        g0.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    let strong = SampleOptions {
        guidance: Some(Guidance {
            weight: 2.0,
            attn_temp: 1.0,
        }),
        ..Default::default()
    };
    let g2 = sample(&m.flow, &labels, strong, 7, &dev).unwrap();
    assert!(
        common::max_diff(&plain, &g2) > 1e-3,
        "guidance must change the samples"
    );
}

#[test]
fn attention_temperature_one_equals_no_guidance() {
    let m = model(0, 4);
    let dev = Device::Cpu;
    let z = prior(&m.flow, 2, 1.0, 8, &dev).unwrap();
    let plain = reverse(&m.flow, &z, None, None).unwrap();
    let t1 = Guidance {
        weight: 1.5,
        attn_temp: 1.0,
    };
    let guided = reverse(&m.flow, &z, None, Some(t1)).unwrap();
    let d = common::max_diff(&plain, &guided);
    assert!(d < 1e-6, "difference {d}");
    let t2 = Guidance {
        weight: 1.5,
        attn_temp: 2.0,
    };
    let other = reverse(&m.flow, &z, None, Some(t2)).unwrap();
    assert!(common::max_diff(&plain, &other) > 1e-4);
    // The sampling entry point refuses the no-op combination.
    let opts = SampleOptions {
        guidance: Some(t1),
        ..Default::default()
    };
    assert!(sample(&m.flow, &[None], opts, 1, &dev).is_err());
}

#[test]
fn denoising_step_matches_finite_difference_gradient() {
    let m = model(0, 5);
    let dev = Device::Cpu;
    let z = prior(&m.flow, 1, 0.5, 9, &dev).unwrap();
    let x = m
        .flow
        .unpatchify(&reverse(&m.flow, &z, None, None).unwrap())
        .unwrap();
    let sigma = 0.1;
    let den = denoise(&m.flow, &x, None, sigma).unwrap();
    let logp = |t: &Tensor| -> f64 {
        let nll: f32 = m
            .flow
            .nll_per_dim(t, None, None)
            .unwrap()
            .to_vec1()
            .unwrap()[0];
        -(nll as f64) * 64.0
    };
    let flat: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let got: Vec<f32> = den.flatten_all().unwrap().to_vec1().unwrap();
    let h = 1e-2f32;
    for j in [0usize, 9, 27, 63] {
        let (mut p, mut q) = (flat.clone(), flat.clone());
        p[j] += h;
        q[j] -= h;
        let tp = Tensor::from_vec(p, x.shape(), &dev).unwrap();
        let tq = Tensor::from_vec(q, x.shape(), &dev).unwrap();
        let grad = (logp(&tp) - logp(&tq)) / (2.0 * h as f64);
        let expect = flat[j] as f64 + sigma * sigma * grad;
        assert!(
            (got[j] as f64 - expect).abs() < 2e-3,
            "element {j}: {} vs {expect}",
            got[j]
        );
    }
}
