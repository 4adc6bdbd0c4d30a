//! Models built into the binary, used when `--model` is not given.
//!
//! `models/default-rgb.safetensors` is the RGB photo model. There is no
//! built-in gray model yet: the codec then codes gray images through the
//! RGB model with the gray plane replicated (see `tfc-codec`'s README).

/// The built-in RGB model file.
const DEFAULT_RGB: &[u8] = include_bytes!("../../models/default-rgb.safetensors");

/// The built-in model file for `channels` (1 gray, 3 RGB), if any.
pub fn model_bytes(channels: usize) -> Option<&'static [u8]> {
    match channels {
        3 => Some(DEFAULT_RGB),
        _ => None,
    }
}
