//! Models built into the binary, used when `--model` is not given.
//!
//! The trained defaults are `models/default-rgb.safetensors` and
//! `models/default-gray.safetensors`. Until they are committed this build
//! has none: [`model_bytes`] returns `None` and the codec commands ask for
//! `--model`. Once the files exist, replace the body with `include_bytes!`
//! of them (`Some(include_bytes!("../../models/default-rgb.safetensors"))`
//! for 3 channels, the gray one for 1).

/// The built-in model file for `channels` (1 gray, 3 RGB), if any.
pub fn model_bytes(channels: usize) -> Option<&'static [u8]> {
    let _ = channels;
    None
}
