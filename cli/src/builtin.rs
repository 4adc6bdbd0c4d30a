//! Models built into the binary, used when `--model` is not given:
//! `models/default-rgb.safetensors` for RGB (and RGBA) images and
//! `models/default-gray.safetensors` for gray ones.

/// The built-in RGB model file.
const DEFAULT_RGB: &[u8] = include_bytes!("../../models/default-rgb.safetensors");
/// The built-in gray model file.
const DEFAULT_GRAY: &[u8] = include_bytes!("../../models/default-gray.safetensors");

/// The built-in model file for `channels` (1 gray, 3 RGB), if any.
pub fn model_bytes(channels: usize) -> Option<&'static [u8]> {
    match channels {
        1 => Some(DEFAULT_GRAY),
        3 => Some(DEFAULT_RGB),
        _ => None,
    }
}
