//! Fuzz target: decode arbitrary bytes with two fixed tiny models. Each
//! input is decoded as given and, when its header fields parse, once more
//! with the header check bytes repaired, so that mutations reach the
//! payload decoder and not only the header check.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tfc_codec::config::FlowConfig;
use tfc_codec::format::fix_header_check;
use tfc_codec::model_file::random_model_bytes;
use tfc_codec::{decode_file_with, Limits, ModelFile, ModelSet};

/// The tiny models of the codec's tests (`codec/tests/common`).
fn models() -> &'static (ModelFile, ModelFile) {
    static M: OnceLock<(ModelFile, ModelFile)> = OnceLock::new();
    M.get_or_init(|| {
        let cfg = FlowConfig::tiny;
        let load = |c, seed| ModelFile::from_bytes(&random_model_bytes(&cfg(c), seed, 0.05)).unwrap();
        (load(1, 1), load(3, 2))
    })
}

fn decode(bytes: &[u8]) {
    let (gray, rgb) = models();
    let set = ModelSet::new(&[gray, rgb]).unwrap();
    // Small limits keep each execution short.
    let limits = Limits { max_pixels: 1 << 14, max_images: 16, max_side: 1 << 10 };
    let _ = decode_file_with(&set, bytes, &limits, &|_| {});
}

fuzz_target!(|data: &[u8]| {
    decode(data);
    let mut fixed = data.to_vec();
    if fix_header_check(&mut fixed) && fixed != data {
        decode(&fixed);
    }
});
