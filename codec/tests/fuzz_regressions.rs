//! Replays every input in `tests/fuzz-regressions/` (fuzzing seeds and any
//! crash the fuzzer found, see `fuzz/run.sh`) through the decoder exactly
//! as the fuzz target does: no input may panic.

mod common;

use tfc_codec::format::fix_header_check;
use tfc_codec::{decode_file_with, Limits, ModelSet};

#[test]
fn fuzz_regression_inputs_do_not_panic() {
    let (gray, rgb) = (common::tiny_model(1, 1), common::tiny_model(3, 2));
    let set = ModelSet::new(&[&gray, &rgb]).unwrap();
    let limits = Limits {
        max_pixels: 1 << 14,
        max_images: 16,
        max_side: 1 << 10,
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let data = std::fs::read(&path).unwrap();
            let _ = decode_file_with(&set, &data, &limits, &|_| {});
            let mut fixed = data.clone();
            if fix_header_check(&mut fixed) {
                let _ = decode_file_with(&set, &fixed, &limits, &|_| {});
            }
            count += 1;
        }
    }
    assert!(count > 0, "no regression inputs found");
}

#[test]
fn seeds_still_decode() {
    let (gray, rgb) = (common::tiny_model(1, 1), common::tiny_model(3, 2));
    let set = ModelSet::new(&[&gray, &rgb]).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    for i in 0..4 {
        let data = std::fs::read(dir.join(format!("seed-{i}.bin"))).unwrap();
        assert!(tfc_codec::decode_file(&set, &data).is_ok(), "seed {i}");
    }
}
