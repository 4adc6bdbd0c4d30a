//! Golden files: the exact size and hash of the compressed bytes for fixed
//! images and models, so that any change to the format or the arithmetic
//! fails here first. If a change is intended, bump the format version and
//! update the numbers.

mod common;

use common::{kodak_crop, synthetic, tiny_model, Content};
use sha2::{Digest, Sha256};
use tfc_codec::model_file::hex;
use tfc_codec::{encode_images, lattice, CodingParams, ModelSet};

fn digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes)[..16])
}

#[test]
fn golden_kodak_crop_rgb() {
    let rgb = tiny_model(3, 2);
    let models = ModelSet::single(&rgb).unwrap();
    let file = encode_images(&models, &[kodak_crop()], &CodingParams::default()).unwrap();
    assert_eq!(
        (file.len(), digest(&file)),
        (GOLDEN_RGB.0, GOLDEN_RGB.1.to_string())
    );
}

#[test]
fn golden_gray_and_rgba_set() {
    let (gray, rgb) = (tiny_model(1, 1), tiny_model(3, 2));
    let models = ModelSet::new(&[&gray, &rgb]).unwrap();
    let images = [
        synthetic(13, 7, 1, Content::Noise, 5),
        synthetic(9, 9, 4, Content::Gradient, 6),
    ];
    let file = encode_images(
        &models,
        &images,
        &CodingParams {
            m: 3,
            lanes: 3,
            orientations: 8,
        },
    )
    .unwrap();
    assert_eq!(
        (file.len(), digest(&file)),
        (GOLDEN_SET.0, GOLDEN_SET.1.to_string())
    );
}

#[test]
fn golden_prior_table() {
    let bytes: Vec<u8> = lattice::prior_cdf()
        .iter()
        .flat_map(|c| c.to_le_bytes())
        .collect();
    assert_eq!(digest(&bytes), GOLDEN_PRIOR);
}

const GOLDEN_RGB: (usize, &str) = (5554, "fe774c5a35ab2d30f1ec587eb6a4aa4c");
const GOLDEN_SET: (usize, &str) = (554, "4fdd79228b35548edc19f3d37ea21e2d");
const GOLDEN_PRIOR: &str = "af13e1d0d10659f90d3f852afe155109";
