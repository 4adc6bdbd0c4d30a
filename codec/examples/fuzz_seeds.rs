//! Writes the fuzzing seeds (valid files coded with the fuzz target's tiny
//! models): `cargo run -p tfc-codec --example fuzz_seeds -- fuzz/seeds`.

use tfc_codec::config::FlowConfig;
use tfc_codec::model_file::{random_model_bytes, SplitMix};
use tfc_codec::{encode_images, CodingParams, Image, ModelFile, ModelSet};

fn tiny(channels: usize, seed: u64) -> ModelFile {
    let cfg = FlowConfig::tiny(channels);
    ModelFile::from_bytes(&random_model_bytes(&cfg, seed, 0.05)).expect("valid model")
}

fn image(w: u32, h: u32, c: u8, seed: u64) -> Image {
    let mut rng = SplitMix::new(seed);
    let data = (0..w * h * c as u32)
        .map(|i| {
            if seed % 2 == 0 {
                (i * 7) as u8
            } else {
                rng.next_u64() as u8
            }
        })
        .collect();
    Image::new(w, h, c, data).expect("consistent image")
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds".into());
    std::fs::create_dir_all(&dir).expect("creating the seed folder");
    let (gray, rgb) = (tiny(1, 1), tiny(3, 2));
    let set = ModelSet::new(&[&gray, &rgb]).expect("one model per channel count");
    let cases: Vec<(Vec<Image>, CodingParams)> = vec![
        (
            vec![image(1, 1, 3, 1)],
            CodingParams {
                m: 4,
                lanes: 2,
                orientations: 8,
            },
        ),
        (
            vec![image(9, 5, 1, 2)],
            CodingParams {
                m: 2,
                lanes: 1,
                orientations: 2,
            },
        ),
        (
            vec![image(6, 7, 4, 3), image(3, 2, 2, 4)],
            CodingParams {
                m: 3,
                lanes: 3,
                orientations: 8,
            },
        ),
        (
            vec![image(12, 4, 3, 6)],
            CodingParams {
                m: 0,
                lanes: 1,
                orientations: 1,
            },
        ),
    ];
    for (i, (images, params)) in cases.iter().enumerate() {
        let bytes = encode_images(&set, images, params).expect("encoding a seed");
        std::fs::write(format!("{dir}/seed-{i}.tfc"), bytes).expect("writing a seed");
    }
}
