//! Context tokens: the network's prefix pass against the decoder's primed
//! caches and the reference, the prefix's effect on the parameters and the
//! coded size, and byte-exact round trips with context models.

mod common;

use common::{bits, kodak_crop, random_values, round_trip, synthetic, tiny_model, Content};
use tfc_codec::ans::Stack;
use tfc_codec::config::FlowConfig;
use tfc_codec::context::{coded_prefix, corner_after};
use tfc_codec::model_file::{random_model_bytes, SplitMix};
use tfc_codec::net::{KvCache, Prefix};
use tfc_codec::tile::TileCoder;
use tfc_codec::{
    decode_file, encode_images, reference, CodecError, CodingParams, ModelFile, ModelSet,
};

fn context_config(channels: usize, intra: bool) -> FlowConfig {
    FlowConfig {
        context: true,
        intra,
        ..FlowConfig::tiny(channels)
    }
}

fn context_model(channels: usize, intra: bool, seed: u64) -> ModelFile {
    let cfg = context_config(channels, intra);
    ModelFile::from_bytes(&random_model_bytes(&cfg, seed, 0.05)).unwrap()
}

/// Context architectures that exercise kernel tails, several heads and
/// layers, classes, patch 1, one token per tile and no layers at all.
fn configs() -> Vec<FlowConfig> {
    let base = context_config(3, false);
    vec![
        base.clone(),
        FlowConfig {
            hidden: 24,
            head_dim: 8,
            layers: 2,
            classes: 5,
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
            ..base.clone()
        },
        FlowConfig {
            image_size: 2,
            ..base.clone()
        },
        FlowConfig { layers: 0, ..base },
    ]
}

/// A random prefix in which context token `c` is unavailable (zeros) when
/// `c % 3 == hole`, available (flag 1) otherwise.
fn random_prefix(cfg: &FlowConfig, seed: u64, hole: usize) -> Vec<f32> {
    let dd = cfg.context_dim();
    let mut v = random_values(cfg.context_len() * dd, seed);
    for (c, tok) in v.chunks_mut(dd).enumerate() {
        if c % 3 == hole {
            tok.fill(0.0);
        } else {
            tok[dd - 1] = 1.0;
        }
    }
    v
}

#[test]
fn prefix_pass_matches_primed_steps_and_reference_bit_for_bit() {
    for (i, cfg) in configs().into_iter().enumerate() {
        let model = ModelFile::from_bytes(&random_model_bytes(&cfg, 40 + i as u64, 0.08)).unwrap();
        let net = model.network();
        let (n, d) = (cfg.tokens(), cfg.token_dim());
        let seqs: Vec<Vec<f32>> = (0..3).map(|s| random_values(n * d, s)).collect();
        let pres: Vec<Vec<f32>> = (0..3)
            .map(|s| random_prefix(&cfg, 7 + s, s as usize))
            .collect();
        let prefix = |lane: usize| Prefix {
            values: &pres[lane],
            corner: lane as u8 + 1,
        };
        for t in 0..cfg.blocks {
            // All tokens but the last, as the encoder runs it: one row per
            // tile token.
            let full: Vec<Vec<f32>> = (0..3)
                .map(|l| net.block_forward_with(t, Some(prefix(l)), &seqs[l][..(n - 1) * d]))
                .collect();
            for (l, f) in full.iter().enumerate() {
                assert_eq!(f.len(), n * 2 * d);
                let slow = reference::block_forward_with(
                    &model,
                    t,
                    Some(prefix(l)),
                    &seqs[l][..(n - 1) * d],
                );
                assert_eq!(bits(f), bits(&slow), "config {i} block {t} lane {l}");
            }
            // The whole tile: one more row, the same before it.
            let all = net.block_forward_with(t, Some(prefix(0)), &seqs[0]);
            assert_eq!(bits(&all[..n * 2 * d]), bits(&full[0]));
            // Three lanes primed together, and the second lane alone.
            let mut caches = vec![KvCache::new(cfg.layers); 3];
            let mut alone = vec![KvCache::new(cfg.layers); 1];
            let primed = net.block_prime(t, &[prefix(0), prefix(1), prefix(2)], &mut caches);
            let solo = net.block_prime(t, &[prefix(1)], &mut alone);
            for (l, f) in full.iter().enumerate() {
                assert_eq!(bits(&primed[l * 2 * d..(l + 1) * 2 * d]), bits(&f[..2 * d]));
            }
            assert_eq!(bits(&solo), bits(&full[1][..2 * d]));
            for tok in 0..n - 1 {
                let x: Vec<f32> = seqs
                    .iter()
                    .flat_map(|s| s[tok * d..(tok + 1) * d].to_vec())
                    .collect();
                let out = net.block_step(t, tok, &x, &mut caches);
                let solo = net.block_step(t, tok, &seqs[1][tok * d..(tok + 1) * d], &mut alone);
                let row = (tok + 1) * 2 * d..(tok + 2) * 2 * d;
                for (l, f) in full.iter().enumerate() {
                    let got = &out[l * 2 * d..(l + 1) * 2 * d];
                    assert_eq!(bits(got), bits(&f[row.clone()]), "config {i} token {tok}");
                }
                assert_eq!(bits(&solo), bits(&full[1][row]));
            }
        }
    }
}

#[test]
fn first_token_params_depend_on_the_prefix() {
    let model = context_model(3, false, 3);
    let net = model.network();
    let cfg = model.config();
    let pre = random_prefix(cfg, 1, 5);
    let none = vec![0f32; pre.len()];
    let first = |values: &[f32], corner: u8| {
        let mut caches = vec![KvCache::new(cfg.layers)];
        net.block_prime(0, &[Prefix { values, corner }], &mut caches)
    };
    let base = first(&pre, 3);
    assert_ne!(bits(&base), bits(&first(&none, 3)), "availability");
    assert_ne!(bits(&base), bits(&first(&pre, 0)), "corner slots");
    let mut changed = pre.clone();
    changed[0] += 0.25;
    assert_ne!(bits(&base), bits(&first(&changed, 3)), "one value");
    // Later tokens too: the prefix stays in the attention.
    let x = random_values(3 * cfg.token_dim(), 9);
    let with = |values: &[f32]| net.block_forward_with(0, Some(Prefix { values, corner: 3 }), &x);
    let (a, b) = (with(&pre), with(&none));
    let d2 = 2 * cfg.token_dim();
    assert_ne!(bits(&a[3 * d2..]), bits(&b[3 * d2..]));
}

/// Tokens of an 8x8 RGB tile whose right, lower and corner neighbours
/// continue it: a smooth gradient with a little noise.
fn smooth_tiles(seed: u64) -> [Vec<u8>; 4] {
    let mut rng = SplitMix::new(seed);
    let mut tile = |ox: usize, oy: usize| -> Vec<u8> {
        let geo = tfc_codec::image::TileGeometry {
            tile: 8,
            patch: 2,
            channels: 3,
        };
        let px: Vec<u8> = (0..8 * 8 * 3)
            .map(|i| {
                let (y, x, c) = (i / 24 + oy, (i / 3) % 8 + ox, i % 3);
                (40 + 6 * x + 4 * y + 30 * c + (rng.next_u64() % 3) as usize) as u8
            })
            .collect();
        geo.from_pixels(&px)
    };
    [tile(0, 0), tile(8, 0), tile(0, 8), tile(8, 8)]
}

#[test]
fn the_prefix_changes_the_coded_size_and_must_match() {
    let model = context_model(3, false, 5);
    let cfg = model.config();
    let coder = TileCoder::new(model.network(), 3);
    let geo = tfc_codec::image::TileGeometry {
        tile: 8,
        patch: 2,
        channels: 3,
    };
    let [tile, right, below, corner] = smooth_tiles(2);
    let (r, b, c) = (
        geo.to_pixels(&right),
        geo.to_pixels(&below),
        geo.to_pixels(&corner),
    );
    let real = coded_prefix(cfg, 0, Some(&r), Some(&b), Some(&c));
    let none = coded_prefix(cfg, 0, None, None, None);
    assert!(none.iter().all(|&v| v == 0.0));
    let filled = || {
        let mut rng = SplitMix::new(4);
        Stack::from_compressed((0..4096).map(|_| rng.next_u64() as u32 | 1).collect()).unwrap()
    };
    let code = |values: &[f32]| {
        let mut s = filled();
        let before = s.num_valid_bits();
        coder.encode(&mut s, &tile, Some(prefix(values))).unwrap();
        (s.num_valid_bits() as i64 - before as i64, s)
    };
    let (with_bits, mut with) = code(&real);
    let (without_bits, mut without) = code(&none);
    assert_ne!(with_bits, without_bits);
    // Each decodes with its own prefix; with the other one it does not.
    let mut copy = with.clone();
    let back = coder
        .decode_batch(&mut [&mut with], &[prefix(&real)])
        .unwrap();
    assert_eq!(back[0], tile);
    assert_eq!(
        with.into_compressed().unwrap(),
        filled().into_compressed().unwrap()
    );
    let back = coder
        .decode_batch(&mut [&mut without], &[prefix(&none)])
        .unwrap();
    assert_eq!(back[0], tile);
    if let Ok(wrong) = coder.decode_batch(&mut [&mut copy], &[prefix(&none)]) {
        assert_ne!(wrong[0], tile);
    }
}

/// The prefix of a tile coded as it is (orientation 0).
fn prefix(values: &[f32]) -> Prefix<'_> {
    Prefix {
        values,
        corner: corner_after(0),
    }
}

#[test]
fn prefixes_must_suit_the_model() {
    let ctx = context_model(3, false, 6);
    let plain = tiny_model(3, 2);
    let tile = smooth_tiles(1)[0].clone();
    let pre = vec![0f32; ctx.config().context_len() * ctx.config().context_dim()];
    let p = Prefix {
        values: &pre,
        corner: 3,
    };
    let mut s = Stack::new();
    let misuse = |r: Result<(), CodecError>| matches!(r, Err(CodecError::Misuse(_)));
    let c = TileCoder::new(ctx.network(), 3);
    assert!(misuse(c.encode(&mut s, &tile, None)));
    assert!(misuse(c.encode(
        &mut s,
        &tile,
        Some(Prefix {
            values: &pre[1..],
            corner: 3
        })
    )));
    assert!(misuse(c.encode(
        &mut s,
        &tile,
        Some(Prefix { corner: 4, ..p })
    )));
    let plain_coder = TileCoder::new(plain.network(), 3);
    assert!(misuse(plain_coder.encode(&mut s, &tile, Some(p))));
    assert!(matches!(
        c.decode_batch(&mut [&mut s], &[]),
        Err(CodecError::Misuse(_))
    ));
}

fn params(lanes: u16, orientations: u8) -> CodingParams {
    CodingParams {
        m: 3,
        lanes,
        orientations,
    }
}

#[test]
fn context_models_round_trip_sizes_and_channels() {
    for intra in [false, true] {
        let (gray, rgb) = (context_model(1, intra, 11), context_model(3, intra, 12));
        let models = ModelSet::new(&[&gray, &rgb]).unwrap();
        for (w, h) in [(1, 1), (5, 3), (8, 8), (17, 33), (40, 9)] {
            for (c, content) in [
                (1u8, Content::Noise),
                (2, Content::Gradient),
                (3, Content::Gradient),
                (4, Content::Noise),
            ] {
                let img = synthetic(w, h, c, content, (w * h) as u64 + c as u64);
                for p in [params(1, 1), params(2, 8)] {
                    round_trip(&models, std::slice::from_ref(&img), p);
                }
            }
        }
    }
}

#[test]
fn context_models_round_trip_several_images_and_lanes() {
    let (gray, rgb) = (context_model(1, true, 21), context_model(3, false, 22));
    let models = ModelSet::new(&[&gray, &rgb]).unwrap();
    let images = [
        synthetic(9, 5, 3, Content::Gradient, 1),
        synthetic(30, 27, 1, Content::Gradient, 2),
        synthetic(16, 16, 4, Content::Noise, 3),
        synthetic(1, 1, 2, Content::Noise, 4),
        synthetic(33, 17, 3, Content::Flat, 5),
    ];
    for p in [params(1, 8), params(3, 2), params(5, 1), params(64, 8)] {
        round_trip(&models, &images, p);
    }
    round_trip(&models, &[kodak_crop()], params(2, 8));
}

#[test]
fn context_model_mixed_with_a_plain_one_and_fallbacks() {
    let plain_gray = tiny_model(1, 1);
    let rgb = context_model(3, true, 31);
    let gray = context_model(1, false, 32);
    let images = [
        synthetic(20, 13, 1, Content::Noise, 1),
        synthetic(19, 21, 3, Content::Gradient, 2),
    ];
    for lanes in [1, 3] {
        // The RGB model reads context, the gray one does not: lanes are
        // contiguous for both.
        let mixed = ModelSet::new(&[&plain_gray, &rgb]).unwrap();
        round_trip(&mixed, &images, params(lanes, 8));
        // RGB as three gray planes, gray replicated into RGB.
        round_trip(&ModelSet::single(&gray).unwrap(), &images, params(lanes, 3));
        round_trip(&ModelSet::single(&rgb).unwrap(), &images, params(lanes, 1));
    }
}

#[test]
fn context_images_with_many_tiles_split_over_lanes() {
    // 12 x 10 tiles of 8 pixels per plane: each lane has whole rows of
    // tiles with neighbours, and some neighbours fall in the next lane.
    let rgb = context_model(3, false, 41);
    let models = ModelSet::single(&rgb).unwrap();
    let img = synthetic(96, 75, 3, Content::Gradient, 9);
    let one = round_trip(&models, std::slice::from_ref(&img), params(1, 1));
    let four = round_trip(&models, std::slice::from_ref(&img), params(4, 1));
    assert_ne!(one, four);
}

fn with_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn context_files_do_not_depend_on_thread_count() {
    let (gray, rgb) = (context_model(1, false, 51), context_model(3, true, 52));
    let models = ModelSet::new(&[&gray, &rgb]).unwrap();
    let images = [kodak_crop(), synthetic(20, 13, 1, Content::Noise, 4)];
    for lanes in [1u16, 3] {
        let p = params(lanes, 8);
        let one = with_threads(1, || encode_images(&models, &images, &p).unwrap());
        let two = with_threads(2, || encode_images(&models, &images, &p).unwrap());
        assert_eq!(one, two);
        for threads in [1, 2, 3] {
            let back = with_threads(threads, || decode_file(&models, &one).unwrap());
            assert_eq!(back[0], images[0]);
            assert_eq!(back[1], images[1]);
        }
    }
}

#[test]
fn damaged_context_files_give_errors_or_the_same_image() {
    let rgb = context_model(3, false, 61);
    let models = ModelSet::single(&rgb).unwrap();
    let img = synthetic(24, 17, 4, Content::Gradient, 3);
    let file = round_trip(&models, std::slice::from_ref(&img), params(2, 8));
    let header = tfc_codec::inspect(&file).unwrap().header_bytes;
    for bit in (header * 8..file.len() * 8).step_by(29) {
        let mut bad = file.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        if let Ok(images) = decode_file(&models, &bad) {
            assert_eq!(images, vec![img.clone()], "bit {bit} gave a wrong image");
        }
    }
    for len in (0..file.len()).step_by(11) {
        assert!(decode_file(&models, &file[..len]).is_err());
    }
}

#[test]
fn coded_bits_reports_context_files() {
    let rgb = context_model(3, false, 71);
    let models = ModelSet::single(&rgb).unwrap();
    let img = synthetic(40, 24, 3, Content::Gradient, 5);
    for lanes in [1, 2] {
        let p = params(lanes, 2);
        let stats = tfc_codec::coded_bits(&models, std::slice::from_ref(&img), &p).unwrap();
        let file = encode_images(&models, std::slice::from_ref(&img), &p).unwrap();
        assert_eq!(stats.total_bits, file.len() as u64 * 8);
        assert_eq!(stats.dims, 40 * 24 * 3);
    }
}
