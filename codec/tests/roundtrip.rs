//! Byte-exact round trips over sizes, channel counts and content kinds.

mod common;

use common::{kodak_crop, round_trip, synthetic, tiny_model, Content};
use tfc_codec::{CodingParams, ModelSet};

fn all_kinds(w: u32, h: u32) {
    let (gray, rgb) = (tiny_model(1, 1), tiny_model(3, 2));
    let models = ModelSet::new(&[&gray, &rgb]).unwrap();
    for (i, content) in [Content::Flat, Content::Gradient, Content::Noise]
        .into_iter()
        .enumerate()
    {
        for c in [1u8, 3, 4] {
            let img = synthetic(w, h, c, content, 7 + i as u64);
            round_trip(&models, &[img], CodingParams::default());
        }
    }
}

#[test]
fn round_trip_1x1() {
    all_kinds(1, 1);
}

#[test]
fn round_trip_1x40() {
    all_kinds(1, 40);
    all_kinds(40, 1);
}

#[test]
fn round_trip_17x33() {
    all_kinds(17, 33);
}

#[test]
fn round_trip_32x32() {
    all_kinds(32, 32);
}

#[test]
fn round_trip_100x75() {
    let (gray, rgb) = (tiny_model(1, 1), tiny_model(3, 2));
    let models = ModelSet::new(&[&gray, &rgb]).unwrap();
    for (c, content) in [
        (3u8, Content::Gradient),
        (1, Content::Noise),
        (4, Content::Flat),
    ] {
        round_trip(
            &models,
            &[synthetic(100, 75, c, content, 3)],
            CodingParams::default(),
        );
    }
}

#[test]
fn round_trip_kodak_crop() {
    let rgb = tiny_model(3, 2);
    let models = ModelSet::single(&rgb).unwrap();
    let img = kodak_crop();
    for params in [
        CodingParams {
            m: 4,
            lanes: 2,
            orientations: 8,
        },
        CodingParams {
            m: 2,
            lanes: 1,
            orientations: 1,
        },
        CodingParams {
            m: 6,
            lanes: 5,
            orientations: 3,
        },
    ] {
        round_trip(&models, std::slice::from_ref(&img), params);
    }
}

#[test]
fn several_images_share_a_file() {
    let (gray, rgb) = (tiny_model(1, 1), tiny_model(3, 2));
    let models = ModelSet::new(&[&gray, &rgb]).unwrap();
    let images = [
        synthetic(9, 5, 3, Content::Gradient, 1),
        synthetic(3, 12, 1, Content::Noise, 2),
        synthetic(16, 16, 4, Content::Gradient, 3),
        synthetic(1, 1, 2, Content::Noise, 4),
    ];
    round_trip(
        &models,
        &images,
        CodingParams {
            m: 3,
            lanes: 3,
            orientations: 2,
        },
    );
}

#[test]
fn fallback_models_cover_other_channel_counts() {
    let (gray, rgb) = (tiny_model(1, 1), tiny_model(3, 2));
    let only_rgb = ModelSet::single(&rgb).unwrap();
    let only_gray = ModelSet::single(&gray).unwrap();
    round_trip(
        &only_rgb,
        &[synthetic(11, 9, 1, Content::Gradient, 5)],
        CodingParams::default(),
    );
    round_trip(
        &only_gray,
        &[synthetic(11, 9, 3, Content::Gradient, 6)],
        CodingParams::default(),
    );
    round_trip(
        &only_gray,
        &[synthetic(11, 9, 4, Content::Noise, 6)],
        CodingParams::default(),
    );
}

#[test]
fn more_lanes_than_tiles_and_m_zero() {
    let rgb = tiny_model(3, 2);
    let models = ModelSet::single(&rgb).unwrap();
    let img = synthetic(5, 5, 3, Content::Noise, 9);
    round_trip(
        &models,
        std::slice::from_ref(&img),
        CodingParams {
            m: 0,
            lanes: 4,
            orientations: 8,
        },
    );
    round_trip(
        &models,
        std::slice::from_ref(&img),
        CodingParams {
            m: 8,
            lanes: 1,
            orientations: 8,
        },
    );
}

#[test]
fn lanes_for_gives_small_images_one_lane() {
    let rgb = tiny_model(3, 2);
    let models = ModelSet::single(&rgb).unwrap();
    let small = synthetic(20, 20, 3, Content::Flat, 1);
    // 32 x 32 tiles of 8 pixels: exactly one lane's worth.
    let full = synthetic(256, 256, 3, Content::Flat, 1);
    // 32 x 33 tiles: a second lane begins.
    let large = synthetic(256, 264, 3, Content::Flat, 1);
    assert_eq!(tfc_codec::TILES_PER_LANE, 1024);
    assert_eq!(tfc_codec::lanes_for(&models, &[small], 4).unwrap(), 1);
    assert_eq!(tfc_codec::lanes_for(&models, &[full], 4).unwrap(), 1);
    assert_eq!(
        tfc_codec::lanes_for(&models, std::slice::from_ref(&large), 4).unwrap(),
        2
    );
    assert_eq!(tfc_codec::lanes_for(&models, &[large], 1).unwrap(), 1);
}

#[test]
fn a_lone_tile_is_a_lead_tile() {
    use tfc_codec::ans::{push_uniform, Stack};
    let rgb = tiny_model(3, 2);
    let models = ModelSet::single(&rgb).unwrap();
    // One 8x8 tile: the lane's stack is empty, so it is coded with the
    // lead model, then the count of lead tiles (1) is pushed.
    for content in [Content::Gradient, Content::Noise] {
        let img = synthetic(8, 8, 3, content, 4);
        let file = round_trip(&models, std::slice::from_ref(&img), CodingParams::default());
        let mut expect = Stack::new();
        tfc_codec::lead::push_tile(&mut expect, &img.data, 8, 3).unwrap();
        push_uniform(&mut expect, 1, 1 << 16).unwrap();
        let words = expect.into_compressed().unwrap().len();
        assert_eq!(tfc_codec::inspect(&file).unwrap().payload_bytes, 4 * words);
    }
}

#[test]
fn lanes_start_with_lead_tiles_then_the_flow() {
    let rgb = tiny_model(3, 2);
    let models = ModelSet::single(&rgb).unwrap();
    // Flat tiles cost almost nothing under the lead model, so a lane
    // codes many before the stack holds enough for the flow; noise tiles
    // fill it after one or two. Both must decode whatever the mix.
    for content in [Content::Flat, Content::Gradient, Content::Noise] {
        let img = synthetic(64, 24, 3, content, 9);
        for lanes in [1, 3] {
            let params = CodingParams {
                lanes,
                ..CodingParams::default()
            };
            round_trip(&models, std::slice::from_ref(&img), params);
        }
    }
}

#[test]
fn intra_token_models_round_trip() {
    use tfc_codec::config::FlowConfig;
    use tfc_codec::model_file::random_model_bytes;
    use tfc_codec::ModelFile;
    let model = |c: usize, seed: u64| {
        let cfg = FlowConfig {
            intra: true,
            ..FlowConfig::tiny(c)
        };
        ModelFile::from_bytes(&random_model_bytes(&cfg, seed, 0.05)).unwrap()
    };
    let (gray, rgb) = (model(1, 11), model(3, 12));
    let models = ModelSet::new(&[&gray, &rgb]).unwrap();
    for (i, content) in [Content::Gradient, Content::Noise].into_iter().enumerate() {
        for c in [1u8, 3] {
            let img = synthetic(19, 13, c, content, 30 + i as u64);
            for (orientations, lanes) in [(1, 1), (8, 2)] {
                let params = CodingParams {
                    orientations,
                    lanes,
                    ..CodingParams::default()
                };
                round_trip(&models, std::slice::from_ref(&img), params);
            }
        }
    }
    let crop = kodak_crop();
    round_trip(&models, &[crop], CodingParams::default());
}
