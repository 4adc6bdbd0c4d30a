//! Damaged, truncated and foreign input: always a clear error, never a
//! panic, a hang or a wrong image.

mod common;

use common::{synthetic, tiny_model, Content};
use tfc_codec::model_file::random_model_bytes;
use tfc_codec::{decode_file, encode_images, inspect, CodecError, CodingParams, Image, ModelSet};

fn sample_file() -> (Vec<u8>, Image) {
    let rgb = tiny_model(3, 2);
    let models = ModelSet::single(&rgb).unwrap();
    let img = synthetic(10, 9, 4, Content::Gradient, 1);
    let file = encode_images(
        &models,
        std::slice::from_ref(&img),
        &CodingParams::default(),
    )
    .unwrap();
    (file, img)
}

#[test]
fn truncated_files_give_errors() {
    let rgb = tiny_model(3, 2);
    let models = ModelSet::single(&rgb).unwrap();
    let (file, _) = sample_file();
    for len in 0..file.len() {
        let err = decode_file(&models, &file[..len]).unwrap_err();
        assert!(matches!(err, CodecError::Corrupt(_)), "length {len}: {err}");
    }
    let mut longer = file.clone();
    longer.extend([1, 2, 3, 4]);
    assert!(decode_file(&models, &longer).is_err());
}

#[test]
fn bit_flips_give_errors_or_the_same_image() {
    let rgb = tiny_model(3, 2);
    let models = ModelSet::single(&rgb).unwrap();
    let (file, img) = sample_file();
    let header = inspect(&file).unwrap().header_bytes;
    let positions: Vec<usize> = (0..header * 8)
        .chain((header * 8..file.len() * 8).step_by(13))
        .collect();
    for bit in positions {
        let mut bad = file.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        match decode_file(&models, &bad) {
            Err(e) => assert!(!e.to_string().is_empty()),
            Ok(images) => assert_eq!(images, vec![img.clone()], "bit {bit} gave a wrong image"),
        }
    }
}

#[test]
fn foreign_files_are_refused() {
    let rgb = tiny_model(3, 2);
    let models = ModelSet::single(&rgb).unwrap();
    let png_start = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let model_bytes = random_model_bytes(&common::tiny_config(3), 2, 0.05);
    for foreign in [
        Vec::new(),
        png_start,
        model_bytes,
        vec![0u8; 4096],
        b"hello".to_vec(),
    ] {
        let err = decode_file(&models, &foreign).unwrap_err();
        assert!(matches!(err, CodecError::Corrupt(_)), "{err}");
        assert!(inspect(&foreign).is_err());
    }
}

#[test]
fn wrong_model_is_a_model_mismatch() {
    let (file, _) = sample_file();
    let other = tiny_model(3, 3);
    let gray = tiny_model(1, 1);
    let err = decode_file(&ModelSet::single(&other).unwrap(), &file).unwrap_err();
    assert!(matches!(err, CodecError::ModelMismatch(_)), "{err}");
    let err = decode_file(&ModelSet::single(&gray).unwrap(), &file).unwrap_err();
    assert!(matches!(err, CodecError::ModelMismatch(_)), "{err}");
}

#[test]
fn damaged_model_files_are_refused() {
    let good = random_model_bytes(&common::tiny_config(3), 2, 0.05);
    for len in [0, 7, 8, 100, good.len() / 2, good.len() - 1] {
        assert!(tfc_codec::ModelFile::from_bytes(&good[..len]).is_err());
    }
    let bad = random_model_bytes(&common::tiny_config(3), 2, 0.05);
    let text = String::from_utf8_lossy(&bad).replace("\"patch\":2", "\"patch\":3");
    assert!(tfc_codec::ModelFile::from_bytes(text.as_bytes()).is_err());
}

#[test]
fn bad_images_are_refused() {
    assert!(Image::new(0, 5, 3, vec![]).is_err());
    assert!(Image::new(2, 2, 5, vec![0; 20]).is_err());
    assert!(Image::new(2, 2, 3, vec![0; 11]).is_err());
}

#[test]
fn huge_header_sizes_hit_limits_before_allocating() {
    let (file, _) = sample_file();
    let mut bad = file.clone();
    // Image width sits after magic(8) version(2) m(1) lanes(2) count(1)
    // model(21) image count(4).
    let w = 8 + 2 + 1 + 2 + 1 + 21 + 4;
    bad[w..w + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = decode_file(&ModelSet::single(&tiny_model(3, 2)).unwrap(), &bad).unwrap_err();
    assert!(matches!(err, CodecError::Limit(_)), "{err}");
}

#[test]
fn altered_header_fields_with_a_valid_check_give_errors() {
    let rgb = tiny_model(3, 2);
    let models = ModelSet::single(&rgb).unwrap();
    let (file, img) = sample_file();
    let header = inspect(&file).unwrap().header_bytes - 4;
    for pos in 8..header {
        for delta in [1u8, 0x80] {
            let mut bad = file.clone();
            bad[pos] = bad[pos].wrapping_add(delta);
            if !tfc_codec::format::fix_header_check(&mut bad) {
                continue;
            }
            match decode_file(&models, &bad) {
                Err(e) => assert!(!e.to_string().is_empty()),
                Ok(images) => assert_eq!(images, vec![img.clone()], "byte {pos}"),
            }
        }
    }
}

#[test]
fn inspect_and_coded_bits_report_the_file() {
    let rgb = tiny_model(3, 2);
    let models = ModelSet::single(&rgb).unwrap();
    let (file, img) = sample_file();
    let info = inspect(&file).unwrap();
    assert_eq!(info.header.images[0].width, img.width);
    assert_eq!(info.header.images[0].channels, 4);
    assert_eq!(info.header.lane_words.len(), 2);
    assert_eq!(info.header_bytes + info.payload_bytes, file.len());
    let stats = tfc_codec::coded_bits(&models, &[img], &CodingParams::default()).unwrap();
    assert_eq!(stats.total_bits, file.len() as u64 * 8);
    assert_eq!(stats.header_bits, info.header_bytes as u64 * 8);
    assert_eq!(stats.dims, 10 * 9 * 4);
}
