//! Behaviour of the TarFlow: invertibility, exact log-determinant, training
//! progress, and model files.

mod common;

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::PathBuf;
use tfc_model::config::{FlowConfig, ModelConfig};
use tfc_model::data::{Dataset, Planar};
use tfc_model::file::{Model, WeightDtype};
use tfc_model::train::{Growth, TrainOptions, Trainer};
use tfc_model::{Context, Labels};

fn tiny(classes: usize) -> FlowConfig {
    FlowConfig {
        channels: 1,
        image_size: 4,
        patch: 2,
        hidden: 16,
        blocks: 2,
        layers: 1,
        head_dim: 8,
        mlp_ratio: 4,
        classes,
        intra: false,
        context: false,
    }
}

/// The block variants: plain, with intra-token prediction, and with
/// context tokens as well.
fn variants() -> [FlowConfig; 3] {
    [
        tiny(0),
        FlowConfig {
            intra: true,
            ..tiny(0)
        },
        FlowConfig {
            intra: true,
            context: true,
            ..tiny(0)
        },
    ]
}

/// For a context model, `b` random prefixes: random corners, random
/// values, each token available or not at random.
fn random_context(arch: &FlowConfig, b: usize, seed: u64) -> Option<Context> {
    if !arch.context {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let dd = arch.context_dim();
    let mut values = Vec::new();
    for _ in 0..b * arch.context_len() {
        if rng.random_bool(0.7) {
            values.extend((0..dd - 1).map(|_| rng.random_range(-1.0f32..1.0)));
            values.push(1.0);
        } else {
            values.extend(std::iter::repeat_n(0.0, dd));
        }
    }
    let corners: Vec<u8> = (0..b).map(|_| rng.random_range(0..4u8)).collect();
    Some(Context::new(arch, values, &corners, &Device::Cpu).unwrap())
}

fn random_model(arch: FlowConfig, seed: u64) -> Model {
    common::random_model(arch, seed, 0.2)
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn each_block_inverse_recovers_its_input() {
    for arch in variants() {
        block_inverse_recovers_its_input(arch);
    }
}

fn block_inverse_recovers_its_input(arch: FlowConfig) {
    let ctx = random_context(&arch, 3, 7);
    let ctx = ctx.as_ref();
    let model = random_model(arch, 1);
    let x = randn(&[3, 4, 4], 2);
    for block in model.flow.blocks() {
        let (z, _) = block.forward(&x, None, ctx).unwrap();
        assert!(
            common::max_diff(&z, &x) > 1e-3,
            "block must not be the identity"
        );
        let back = block.reverse_naive(&z, None, ctx).unwrap();
        assert!(common::max_diff(&back, &x) < 1e-4);
        if ctx.is_some() {
            // The context changes the block's output, token 0 included.
            let (z0, _) = block.forward(&x, None, None).unwrap();
            let first = |t: &Tensor| t.narrow(1, 0, 1).unwrap();
            assert!(common::max_diff(&first(&z0), &first(&z)) > 1e-3);
        }
    }
    let (z, _) = model.flow.forward_tokens(&x, None, ctx).unwrap();
    let back = model.flow.reverse_naive(&z, None, ctx).unwrap();
    assert!(common::max_diff(&back, &x) < 1e-4);
}

#[test]
fn logdet_matches_numerical_jacobian() {
    for arch in variants() {
        logdet_matches_numerical_jacobian_of(arch);
    }
}

fn logdet_matches_numerical_jacobian_of(arch: FlowConfig) {
    let ctx = random_context(&arch, 1, 8);
    let ctx = ctx.as_ref();
    let model = random_model(arch, 3);
    let x = randn(&[1, 4, 4], 4);
    let (_, logdet) = model.flow.forward_tokens(&x, None, ctx).unwrap();
    let logdet = logdet.to_vec1::<f32>().unwrap()[0] as f64;
    // Central differences in f64 of the f32 map, column by column.
    let flat: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let d = flat.len();
    let eps = 1e-2f32;
    let f = |v: &[f32]| -> Vec<f64> {
        let t = Tensor::from_vec(v.to_vec(), (1, 4, 4), &Device::Cpu).unwrap();
        let (z, _) = model.flow.forward_tokens(&t, None, ctx).unwrap();
        let z: Vec<f32> = z.flatten_all().unwrap().to_vec1().unwrap();
        z.into_iter().map(f64::from).collect()
    };
    let mut jac = vec![vec![0f64; d]; d];
    for j in 0..d {
        let (mut p, mut m) = (flat.clone(), flat.clone());
        p[j] += eps;
        m[j] -= eps;
        let (fp, fm) = (f(&p), f(&m));
        for i in 0..d {
            jac[i][j] = (fp[i] - fm[i]) / (2.0 * eps as f64);
        }
    }
    let numeric = log_abs_det(jac);
    assert!(
        (numeric - logdet).abs() < 2e-2,
        "numeric {numeric} vs model {logdet}"
    );
}

/// log|det| by Gaussian elimination with partial pivoting.
fn log_abs_det(mut a: Vec<Vec<f64>>) -> f64 {
    let n = a.len();
    let mut acc = 0.0;
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap();
        a.swap(c, p);
        let piv = a[c][c];
        acc += piv.abs().ln();
        let pivot_row = a[c].clone();
        for row in a.iter_mut().skip(c + 1) {
            let f = row[c] / piv;
            for (v, p) in row.iter_mut().zip(&pivot_row).skip(c) {
                *v -= f * p;
            }
        }
    }
    acc
}

fn handful(n: usize, size: usize) -> Dataset {
    let mut rng = StdRng::seed_from_u64(9);
    let images = (0..n)
        .map(|_| {
            let base: u8 = rng.random_range(40..200);
            let data = (0..size * size)
                .map(|i| base.wrapping_add((i % size) as u8 * 6))
                .collect();
            Planar {
                channels: 1,
                height: size,
                width: size,
                data,
            }
        })
        .collect();
    Dataset {
        images,
        labels: Some((0..n as u32).map(|i| i % 2).collect()),
        description: "handful".into(),
    }
}

fn quick_options(steps: u64) -> TrainOptions {
    TrainOptions {
        steps,
        batch: 8,
        lr: 3e-3,
        min_lr: 1e-4,
        warmup: 5,
        betas: (0.9, 0.95),
        weight_decay: 1e-4,
        clip: 1.0,
        ema: Some(0.9),
        flip: false,
        seed: 5,
        val_every: 0,
        ckpt_every: 0,
        intra_lr_scale: 10.0,
        context_lr_scale: 1.0,
        compact_checkpoint: false,
    }
}

#[test]
fn loss_falls_when_overfitting_a_handful_of_images() {
    let dev = Device::Cpu;
    let mut config = ModelConfig::new(FlowConfig {
        image_size: 8,
        ..tiny(2)
    });
    config.label_dropout = 0.2;
    let mut tr = Trainer::new(config, quick_options(60), handful(4, 8), None, &dev).unwrap();
    let first: f64 = (0..5).map(|_| tr.train_step().unwrap().loss).sum::<f64>() / 5.0;
    let mut last = 0.0;
    while tr.step < 60 {
        last = tr.train_step().unwrap().loss;
    }
    assert!(last < first - 0.5, "loss went from {first} to {last}");
}

/// A run of `steps` steps (of `total`) on a tiny model and a handful of
/// images, checkpointed: the run, its data, and the checkpoint (with the
/// directory that holds it).
fn checkpointed_run(total: u64, steps: u64) -> (Trainer, Dataset, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("run.ckpt");
    let config = ModelConfig::new(FlowConfig {
        image_size: 8,
        ..tiny(0)
    });
    let data = handful(4, 8);
    let mut a = Trainer::new(
        config,
        quick_options(total),
        data.clone(),
        None,
        &Device::Cpu,
    )
    .unwrap();
    for _ in 0..steps {
        a.train_step().unwrap();
    }
    a.save_checkpoint(&ckpt).unwrap();
    (a, data, dir, ckpt)
}

#[test]
fn resume_continues_exactly() {
    let dev = Device::Cpu;
    let (mut a, data, _dir, ckpt) = checkpointed_run(10, 5);
    let mut b = Trainer::resume(&ckpt, None, Growth::default(), data, None, &dev).unwrap();
    assert_eq!(b.step, 5);
    for _ in 0..5 {
        let (sa, sb) = (a.train_step().unwrap(), b.train_step().unwrap());
        assert_eq!(sa.loss, sb.loss);
    }
}

/// Largest absolute difference between two sets of named tensors, and the
/// largest absolute value of the first.
fn max_diff(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let (mut diff, mut scale) = (0f32, 0f32);
    for (name, t) in a {
        let x: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = b[name].flatten_all().unwrap().to_vec1().unwrap();
        for (p, q) in x.iter().zip(&y) {
            diff = diff.max((p - q).abs());
            scale = scale.max(p.abs());
        }
    }
    (diff, scale)
}

#[test]
fn compact_checkpoints_are_smaller_and_resume_closely() {
    let dev = Device::Cpu;
    let (mut a, data, dir, exact) = checkpointed_run(10, 5);
    a.options.compact_checkpoint = true;
    let compact = dir.path().join("compact.ckpt");
    a.save_checkpoint(&compact).unwrap();
    let size = |p: &PathBuf| std::fs::metadata(p).unwrap().len() as f64;
    let ratio = size(&compact) / size(&exact);
    // 10 bytes a parameter instead of 16, plus the same header.
    assert!((0.6..0.7).contains(&ratio), "compact / exact size {ratio}");

    let mut b = Trainer::resume(&compact, None, Growth::default(), data, None, &dev).unwrap();
    assert!(
        b.options.compact_checkpoint,
        "a resumed run keeps the precision"
    );
    assert_eq!(b.step, 5);
    let (diff, _) = max_diff(&a.model.weights().unwrap(), &b.model.weights().unwrap());
    assert_eq!(diff, 0.0, "the weights are stored exactly");
    let ema = |t: &Trainer| t.export().unwrap().weights().unwrap();
    let (diff, scale) = max_diff(&ema(&a), &ema(&b));
    assert!(
        diff < 1e-3 * scale,
        "EMA off by {diff} (largest weight {scale})"
    );
    for _ in 0..5 {
        let (sa, sb) = (a.train_step().unwrap(), b.train_step().unwrap());
        let gap = (sa.loss - sb.loss).abs();
        assert!(
            gap < 1e-2 * sa.loss.abs().max(1.0),
            "loss {} against {}",
            sa.loss,
            sb.loss
        );
    }
}

/// Sum of the absolute values of the named variables.
fn abs_sum(t: &Trainer, names: &[String]) -> f32 {
    let w = t.model.weights().unwrap();
    names
        .iter()
        .map(|n| {
            w[n].abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .sum()
}

/// Resumes a checkpointed run with `grow`; the grown model must compute
/// exactly what the checkpoint did, the variables `new` must start at zero
/// and move in training. Returns the grown trainer after 3 steps.
fn check_growth(grow: Growth, new: &[String]) -> Trainer {
    let dev = Device::Cpu;
    let (a, data, _dir, ckpt) = checkpointed_run(12, 4);
    let mut b = Trainer::resume(&ckpt, None, grow, data, None, &dev).unwrap();
    let x = randn(&[2, 1, 8, 8], 9);
    let la = a.model.flow.nll_per_dim(&x, None, None).unwrap();
    let lb = b.model.flow.nll_per_dim(&x, None, None).unwrap();
    assert_eq!(
        common::max_diff(&la, &lb),
        0.0,
        "the grown model starts unchanged"
    );
    assert_eq!(abs_sum(&b, new), 0.0);
    for _ in 0..3 {
        b.train_step().unwrap();
    }
    assert!(abs_sum(&b, new) > 0.0, "the new variables are trained");
    b
}

#[test]
fn adding_intra_on_resume_keeps_the_model_then_trains_it() {
    let grow = Growth {
        intra: true,
        ..Growth::default()
    };
    let b = check_growth(grow, &["blocks.0.intra".to_string()]);
    assert!(b.model.config.arch.intra);
}

/// Adding context tokens on resume keeps every trained weight, adds the
/// context variables, and trains them on crops whose ring lies in the
/// image.
#[test]
fn adding_context_on_resume_keeps_the_weights_then_trains_it() {
    let dev = Device::Cpu;
    let (a, _, _dir, ckpt) = checkpointed_run(12, 4);
    let grow = Growth {
        context: true,
        ..Growth::default()
    };
    let mut b = Trainer::resume(&ckpt, None, grow, handful(4, 16), None, &dev).unwrap();
    assert!(b.model.config.arch.context);
    let (wa, wb) = (a.model.weights().unwrap(), b.model.weights().unwrap());
    for (name, t) in &wa {
        assert_eq!(common::max_diff(t, &wb[name]), 0.0, "{name}");
    }
    let new: Vec<String> = wb
        .keys()
        .filter(|n| !wa.contains_key(*n))
        .cloned()
        .collect();
    let mut want: Vec<String> = (0..2)
        .flat_map(|t| {
            ["ctx_proj.weight", "ctx_proj.bias", "ctx_pos"].map(|n| format!("blocks.{t}.{n}"))
        })
        .collect();
    let mut got = new.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let before = abs_sum(&b, &new);
    let pos = wb["blocks.1.ctx_pos"].copy().unwrap();
    for _ in 0..3 {
        b.train_step().unwrap();
    }
    assert_ne!(
        abs_sum(&b, &new),
        before,
        "the context variables are trained"
    );
    let moved = b.model.weights().unwrap()["blocks.1.ctx_pos"].clone();
    assert!(common::max_diff(&pos, &moved) > 0.0);
}

/// `context_lr_scale` speeds up the context embedding alone: from the
/// same checkpoint and batch, one step moves the context variables about
/// that many times further and every other weight the same.
#[test]
fn the_context_learning_rate_scale_applies_to_the_context_embedding_only() {
    let dev = Device::Cpu;
    let (_, _, _dir, ckpt) = checkpointed_run(12, 4);
    let grow = Growth {
        context: true,
        ..Growth::default()
    };
    let step = |scale: f64| {
        let mut t = Trainer::resume(&ckpt, None, grow, handful(4, 16), None, &dev).unwrap();
        t.set_context_lr_scale(scale);
        let before: HashMap<String, Tensor> = t
            .model
            .weights()
            .unwrap()
            .into_iter()
            .map(|(n, w)| (n, w.copy().unwrap()))
            .collect();
        t.train_step().unwrap();
        let after = t.model.weights().unwrap();
        let moved: HashMap<String, f32> = before
            .iter()
            .map(|(n, w)| (n.clone(), common::max_diff(w, &after[n])))
            .collect();
        (moved, after)
    };
    let (slow, wa) = step(1.0);
    let (fast, wb) = step(50.0);
    for (name, &d) in &slow {
        if name.contains("ctx_") {
            assert!(d > 0.0, "{name} trained");
            assert!(fast[name] > 10.0 * d, "{name}: {} vs {d}", fast[name]);
        } else {
            assert_eq!(common::max_diff(&wa[name], &wb[name]), 0.0, "{name}");
        }
    }
}

#[test]
fn growing_layers_on_resume_keeps_the_model_then_trains_them() {
    let (a, data, dir, ckpt) = checkpointed_run(12, 4);
    let (old, blocks) = (a.model.config.arch.layers, a.model.config.arch.blocks);
    let grow = |layers| Growth {
        layers: Some(layers),
        ..Growth::default()
    };
    let shrink = Trainer::resume(&ckpt, None, grow(0), data, None, &Device::Cpu);
    assert!(shrink.is_err(), "layers cannot be removed");
    // The output projections of the new layers start at zero.
    let mut new = Vec::new();
    for t in 0..blocks {
        for k in old..old + 2 {
            for p in ["attn_proj.weight", "fc2.weight"] {
                new.push(format!("blocks.{t}.layers.{k}.{p}"));
            }
        }
    }
    let b = check_growth(grow(old + 2), &new);
    assert_eq!(b.model.config.arch.layers, old + 2);
    let path = dir.path().join("grown.ckpt");
    b.save_checkpoint(&path).unwrap();
    let c = Trainer::resume(
        &path,
        None,
        Growth::default(),
        handful(4, 8),
        None,
        &Device::Cpu,
    );
    assert_eq!(
        c.unwrap().model.config.arch.layers,
        old + 2,
        "the grown shape is checkpointed"
    );
}

#[test]
fn growing_blocks_on_resume_keeps_the_model_then_trains_them() {
    let (a, data, _dir, ckpt) = checkpointed_run(12, 4);
    let old = a.model.config.arch.blocks;
    let grow = |blocks| Growth {
        blocks: Some(blocks),
        ..Growth::default()
    };
    let shrink = Trainer::resume(&ckpt, None, grow(old - 1), data, None, &Device::Cpu);
    assert!(shrink.is_err(), "blocks cannot be removed");
    let new: Vec<String> = (old..old + 2)
        .map(|t| format!("blocks.{t}.proj_out.weight"))
        .collect();
    let b = check_growth(grow(old + 2), &new);
    assert_eq!(b.model.flow.blocks().len(), old + 2);
}

#[test]
fn save_and_load_give_identical_outputs() {
    let dev = Device::Cpu;
    let model = random_model(tiny(3), 7);
    let x = randn(&[2, 1, 4, 4], 8);
    let labels = Labels::new(&[Some(2), None], &dev).unwrap();
    let before = model.flow.nll_per_dim(&x, Some(&labels), None).unwrap();
    let bytes = model.to_bytes(WeightDtype::F32).unwrap();
    let loaded = Model::from_bytes(&bytes, &dev).unwrap();
    assert_eq!(loaded.config, model.config);
    let after = loaded.flow.nll_per_dim(&x, Some(&labels), None).unwrap();
    assert_eq!(
        before.to_vec1::<f32>().unwrap(),
        after.to_vec1::<f32>().unwrap()
    );
    // f16 storage halves the size and stays close.
    let half = model.to_bytes(WeightDtype::F16).unwrap();
    assert!(half.len() < bytes.len() * 6 / 10);
    let h = Model::from_bytes(&half, &dev).unwrap();
    let hv = h.flow.nll_per_dim(&x, Some(&labels), None).unwrap();
    assert!(common::max_diff(&hv, &before) < 1e-2);
    assert_eq!(hv.dtype(), DType::F32);
}

#[test]
fn damaged_or_foreign_model_files_are_refused() {
    let dev = Device::Cpu;
    let model = random_model(tiny(0), 11);
    let bytes = model.to_bytes(WeightDtype::F32).unwrap();
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            Model::from_bytes(&bytes[..cut], &dev).is_err(),
            "cut at {cut}"
        );
    }
    let mut flipped = bytes.clone();
    flipped[10] ^= 0x5a;
    assert!(Model::from_bytes(&flipped, &dev).is_err());
    assert!(Model::from_bytes(b"PNG not a model at all, just some bytes", &dev).is_err());
    // A valid file of a different architecture does not load as another.
    let other = random_model(
        FlowConfig {
            hidden: 32,
            ..tiny(0)
        },
        1,
    );
    let mut t = other.weights().unwrap();
    t.retain(|k, _| !k.contains("fc1"));
    let partial = tfc_model::file::write_tensors(&other.config, &t, WeightDtype::F32).unwrap();
    let err = Model::from_bytes(&partial, &dev).err().expect("must fail");
    assert!(err.to_string().contains("tensors"), "{err}");
}

#[test]
fn the_same_tensors_and_metadata_always_give_the_same_bytes() {
    // A model's identity in compressed files is the hash of its file, so
    // exporting the same model twice must give the same bytes, whatever
    // order a fresh HashMap iterates its metadata in.
    let model = random_model(tiny(0), 11);
    let first = model.to_bytes(WeightDtype::F16).unwrap();
    let t = model.weights().unwrap();
    let meta = || -> HashMap<String, String> {
        (0..6)
            .map(|i| (format!("key{i}"), format!("value {i}")))
            .collect()
    };
    let once = tfc_model::file::encode_safetensors(&t, meta(), &|_| WeightDtype::F32).unwrap();
    for _ in 0..8 {
        assert!(
            model.to_bytes(WeightDtype::F16).unwrap() == first,
            "export differs"
        );
        let again = tfc_model::file::encode_safetensors(&t, meta(), &|_| WeightDtype::F32);
        assert!(again.unwrap() == once, "encoding differs");
    }
    let (_, header) = safetensors::SafeTensors::read_metadata(&once).unwrap();
    assert_eq!(header.metadata().as_ref(), Some(&meta()));
    assert!(Model::from_bytes(&first, &Device::Cpu).is_ok());
}

#[test]
fn per_token_costs_add_up_to_the_nll() {
    let dev = Device::Cpu;
    let model = random_model(tiny(3), 11);
    let x = randn(&[3, 1, 4, 4], 12);
    let labels = Labels::new(&[Some(0), Some(2), None], &dev).unwrap();
    let whole: Vec<f32> = model
        .flow
        .nll_per_dim(&x, Some(&labels), None)
        .unwrap()
        .to_vec1()
        .unwrap();
    let per: Vec<Vec<f32>> = model
        .flow
        .nll_per_token(&x, Some(&labels), None)
        .unwrap()
        .to_vec2()
        .unwrap();
    for (w, p) in whole.iter().zip(&per) {
        assert_eq!(p.len(), 4, "one cost per patch");
        let mean = p.iter().sum::<f32>() / p.len() as f32;
        assert!((mean - w).abs() < 1e-5, "{mean} vs {w}");
        let spread =
            p.iter().cloned().fold(f32::MIN, f32::max) - p.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 1e-3, "patches must differ in cost: {p:?}");
    }
}

/// The codec codes an image in what the candle model says it costs: the
/// deterministic network, the intra-token shifts and the lattice implement
/// the same density. Checked without and with intra-token prediction, and
/// with context tokens.
#[test]
fn coded_size_matches_the_model_nll() {
    use tfc_codec::{coded_bits, CodingParams, Image, ModelFile, ModelSet};
    let dev = Device::Cpu;
    let (side, tile) = (32usize, 8usize);
    let mut rng = StdRng::seed_from_u64(21);
    // A smooth ramp with noise: far from what a random model expects, but
    // costs stay finite.
    let px: Vec<u8> = (0..side * side)
        .map(|i| ((i % side) * 6 + (i / side) * 2 + rng.random_range(0..24)) as u8)
        .collect();
    let tiles: Vec<Vec<u8>> = (0..side / tile)
        .flat_map(|ty| (0..side / tile).map(move |tx| (ty, tx)))
        .map(|(ty, tx)| {
            (0..tile * tile)
                .map(|e| px[(ty * tile + e / tile) * side + tx * tile + e % tile])
                .collect()
        })
        .collect();
    for arch in variants() {
        let arch = FlowConfig {
            image_size: tile,
            ..arch
        };
        let intra = arch.intra;
        let model = common::random_model(arch, 5, 0.05);
        // Intra-token weights as large as trained ones get.
        let mut w = model.weights().unwrap();
        for (name, t) in w.iter_mut().filter(|(n, _)| n.ends_with(".intra")) {
            let v: Vec<f32> = (0..t.elem_count())
                .map(|_| rng.random_range(-0.5..0.5))
                .collect();
            *t = Tensor::from_vec(v, t.shape(), &dev).unwrap();
            assert!(name.starts_with("blocks."));
        }
        model.set_weights(&w, &dev).unwrap();
        // A context model reads the coded neighbours, as the codec gives
        // them to an unturned tile in a single lane.
        let whole = Dataset {
            images: vec![Planar {
                channels: 1,
                height: side,
                width: side,
                data: px.clone(),
            }],
            labels: None,
            description: String::new(),
        };
        let contexts = whole.tile_contexts(model.flow.config());
        assert_eq!(whole.tiles(tile).0, tiles);
        let nll =
            tfc_model::train::tile_bpd(&model.flow, &tiles, &[], Some(&contexts), 4, 16, 1, &dev)
                .unwrap();
        let nll = nll.tiles.iter().sum::<f64>() / tiles.len() as f64;
        let file = ModelFile::from_bytes(&model.to_bytes(WeightDtype::F32).unwrap()).unwrap();
        let models = ModelSet::single(&file).unwrap();
        let img = Image::new(side as u32, side as u32, 1, px.clone()).unwrap();
        let params = CodingParams {
            lanes: 1,
            orientations: 1,
            ..CodingParams::default()
        };
        let s = coded_bits(&models, &[img], &params).unwrap();
        // Payload less the lane's start-up and the 3-bit orientation field
        // of each tile.
        let flow_bits = s.payload_bits as f64 - s.startup_bits as f64 - 3.0 * tiles.len() as f64;
        let coded = flow_bits / (side * side) as f64;
        assert!(
            (coded - nll).abs() < 0.03 * nll,
            "intra {intra}: coded {coded:.4} vs nll {nll:.4} bpd"
        );
        eprintln!("intra {intra}: coded {coded:.4} vs nll {nll:.4} bpd");
    }
}

/// The candle model and the codec's deterministic network compute the same
/// shift and log-scale for every token of a context model, token 0
/// included, for every corner of the ring.
#[test]
fn candle_and_codec_networks_agree_with_context() {
    use tfc_codec::net::Prefix;
    use tfc_codec::ModelFile;
    let dev = Device::Cpu;
    let arch = FlowConfig {
        channels: 3,
        intra: true,
        context: true,
        ..tiny(0)
    };
    let (n, d) = (arch.tokens(), arch.token_dim());
    let model = random_model(arch.clone(), 11);
    let file = ModelFile::from_bytes(&model.to_bytes(WeightDtype::F32).unwrap()).unwrap();
    let net = file.network();
    let x = randn(&[1, n, d], 13);
    let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let mut rng = StdRng::seed_from_u64(14);
    for corner in 0..4u8 {
        let values: Vec<f32> = (0..arch.context_len())
            .flat_map(|c| {
                let on = c % 3 != 1;
                let mut tok: Vec<f32> = (0..d)
                    .map(|_| {
                        if on {
                            rng.random_range(-1.0f32..1.0)
                        } else {
                            0.0
                        }
                    })
                    .collect();
                tok.push(on as u8 as f32);
                tok
            })
            .collect();
        let ctx = Context::new(&arch, values.clone(), &[corner], &dev).unwrap();
        for (t, block) in model.flow.blocks().iter().enumerate() {
            let (_, a) = block.forward_detail(&x, None, Some(&ctx)).unwrap();
            let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
            let xb: Vec<f32> = (0..n)
                .flat_map(|i| {
                    let r = net.raster_pos(t, i);
                    xv[r * d..(r + 1) * d].to_vec()
                })
                .collect();
            let prefix = Prefix {
                values: &values,
                corner,
            };
            let rows = net.block_forward_with(t, Some(prefix), &xb);
            for i in 0..n {
                let r = net.raster_pos(t, i);
                for k in 0..d {
                    let (c, m) = (rows[i * 2 * d + k], a[r * d + k]);
                    assert!(
                        (c - m).abs() < 1e-4,
                        "corner {corner} block {t} token {i} value {k}: codec {c} candle {m}"
                    );
                }
            }
            // Token 0 is really transformed.
            assert!(rows[..d].iter().any(|&v| v.abs() > 1e-3));
        }
    }
}
