//! The determinism contract: the fast network matches the slow reference
//! bit for bit, the decoder's token-by-token pass with a KV cache matches
//! the encoder's all-tokens pass bit for bit in any batch, and files do not
//! depend on the thread count.

mod common;

use common::{bits, kodak_crop, random_values, synthetic, tiny_model, Content};
use tfc_codec::config::FlowConfig;
use tfc_codec::model_file::random_model_bytes;
use tfc_codec::net::KvCache;
use tfc_codec::{decode_file, encode_images, reference, CodingParams, ModelFile, ModelSet};

/// Architectures that exercise kernel tails, several heads, classes,
/// patch 1 and enough rows for the threaded matmul.
fn configs() -> Vec<FlowConfig> {
    let base = common::tiny_config(3);
    vec![
        base.clone(),
        FlowConfig {
            hidden: 24,
            head_dim: 8,
            layers: 2,
            classes: 5,
            intra: false,
            context: false,
            ..base.clone()
        },
        FlowConfig {
            channels: 1,
            image_size: 16,
            patch: 2,
            hidden: 32,
            head_dim: 16,
            ..base.clone()
        },
        FlowConfig {
            channels: 1,
            image_size: 4,
            patch: 1,
            hidden: 20,
            head_dim: 5,
            mlp_ratio: 3,
            ..base
        },
    ]
}

fn random_input(cfg: &FlowConfig, rows: usize, seed: u64) -> Vec<f32> {
    random_values(rows * cfg.token_dim(), seed)
}

#[test]
fn fast_network_matches_reference_bit_for_bit() {
    for (i, cfg) in configs().into_iter().enumerate() {
        let model = ModelFile::from_bytes(&random_model_bytes(&cfg, 10 + i as u64, 0.08)).unwrap();
        for t in 0..cfg.blocks {
            for rows in [1, cfg.tokens() - 1, cfg.tokens()] {
                let x = random_input(&cfg, rows, 99);
                let fast = model.network().block_forward(t, &x);
                let slow = reference::block_forward(&model, t, &x);
                assert_eq!(bits(&fast), bits(&slow), "config {i} block {t} rows {rows}");
            }
        }
    }
}

#[test]
fn token_steps_match_all_tokens_pass_in_any_batch() {
    for (i, cfg) in configs().into_iter().enumerate() {
        let model = ModelFile::from_bytes(&random_model_bytes(&cfg, 20 + i as u64, 0.08)).unwrap();
        let net = model.network();
        let (n, d) = (cfg.tokens(), cfg.token_dim());
        let seqs: Vec<Vec<f32>> = (0..3).map(|s| random_input(&cfg, n, s)).collect();
        for t in 0..cfg.blocks {
            let full: Vec<Vec<f32>> = seqs.iter().map(|x| net.block_forward(t, x)).collect();
            // A batch of three lanes, and the second lane alone.
            let mut caches = vec![KvCache::new(cfg.layers); 3];
            let mut alone = vec![KvCache::new(cfg.layers); 1];
            for tok in 0..n {
                let x: Vec<f32> = seqs
                    .iter()
                    .flat_map(|s| s[tok * d..(tok + 1) * d].to_vec())
                    .collect();
                let out = net.block_step(t, tok, &x, &mut caches);
                let solo = net.block_step(t, tok, &seqs[1][tok * d..(tok + 1) * d], &mut alone);
                for (lane, f) in full.iter().enumerate() {
                    let want = &f[tok * 2 * d..(tok + 1) * 2 * d];
                    assert_eq!(bits(&out[lane * 2 * d..(lane + 1) * 2 * d]), bits(want));
                }
                assert_eq!(bits(&solo), bits(&full[1][tok * 2 * d..(tok + 1) * 2 * d]));
            }
        }
    }
}

fn with_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn files_do_not_depend_on_thread_count() {
    let rgb = tiny_model(3, 2);
    let gray = tiny_model(1, 1);
    let models = ModelSet::new(&[&gray, &rgb]).unwrap();
    let images = [kodak_crop(), synthetic(20, 13, 1, Content::Noise, 4)];
    for lanes in [1u16, 2, 3] {
        let params = CodingParams {
            m: 4,
            lanes,
            orientations: 8,
        };
        let one = with_threads(1, || encode_images(&models, &images, &params).unwrap());
        let two = with_threads(2, || encode_images(&models, &images, &params).unwrap());
        let four = with_threads(4, || encode_images(&models, &images, &params).unwrap());
        assert_eq!(one, two);
        assert_eq!(one, four);
        for threads in [1, 2, 3] {
            let back = with_threads(threads, || decode_file(&models, &one).unwrap());
            assert_eq!(back[0], images[0]);
            assert_eq!(back[1], images[1]);
        }
    }
}

#[test]
fn larger_tiles_round_trip_with_threaded_matmul() {
    let cfg = FlowConfig {
        image_size: 16,
        hidden: 32,
        head_dim: 16,
        ..common::tiny_config(3)
    };
    let model = ModelFile::from_bytes(&random_model_bytes(&cfg, 5, 0.05)).unwrap();
    let models = ModelSet::single(&model).unwrap();
    let img = kodak_crop();
    let file = with_threads(2, || {
        encode_images(
            &models,
            std::slice::from_ref(&img),
            &CodingParams::default(),
        )
        .unwrap()
    });
    let back = with_threads(1, || decode_file(&models, &file).unwrap());
    assert_eq!(back[0], img);
}
