//! The architecture of a TarFlow as recorded in a model file, and the names
//! of its tensors. Both the candle model (training, sampling) and the
//! deterministic coding network read the same file through these names.

use serde::{Deserialize, Serialize};

/// Metadata key in the safetensors header that holds the model configuration
/// as JSON. The JSON object has an `arch` field with a [`FlowConfig`].
pub const META_CONFIG: &str = "tfc.config";
/// Metadata key that holds the model-file format version.
pub const META_FORMAT: &str = "tfc.format";
/// Current model-file format version.
pub const MODEL_FORMAT_VERSION: &str = "1";

/// Geometry and size of a TarFlow: everything needed to build the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowConfig {
    /// Image channels modelled (1 gray, 3 RGB).
    pub channels: usize,
    /// Side of the square image (tile) the model is trained on, in pixels.
    pub image_size: usize,
    /// Side of a square patch; a token holds `channels * patch^2` values.
    pub patch: usize,
    /// Transformer width.
    pub hidden: usize,
    /// Number of flow blocks (alternating token order).
    pub blocks: usize,
    /// Transformer layers per flow block.
    pub layers: usize,
    /// Attention head dimension; `hidden / head_dim` heads.
    pub head_dim: usize,
    /// MLP expansion ratio.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: usize,
    /// Number of classes for class conditioning; 0 for unconditional.
    #[serde(default)]
    pub classes: usize,
    /// Intra-token prediction: after its affine step, each block also
    /// subtracts from every scaled value `(x - mu) exp(-a)` of a token a
    /// learned linear function of the scaled values before it in the same
    /// token (channel-major order): `z = (I - L) s` with `L` a strictly
    /// lower-triangular `D x D` matrix per block, stored as
    /// `blocks.{t}.intra`. The log-det is unchanged and the block stays
    /// autoregressive, now over values as well as tokens. Off in files
    /// that predate it, and left out of the JSON when off, so that files
    /// of models without it keep their bytes (and identity).
    #[serde(default, skip_serializing_if = "is_false")]
    pub intra: bool,
    /// Context tokens: every block reads, before the tile's tokens, a
    /// prefix of [`FlowConfig::context_len`] tokens made of the patches
    /// next to the tile that are already coded (two adjacent sides of the
    /// ring of patches around the tile and the corner between them; see
    /// [`crate::context`]), each `D` values and an availability flag. The
    /// prefix is not transformed; the output after its last token gives
    /// the first tile token's shift and log-scale. Stored as
    /// `blocks.{t}.ctx_proj.{weight,bias}` and `blocks.{t}.ctx_pos` (one
    /// row per ring slot). Off in files that predate it, and left out of
    /// the JSON when off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub context: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_mlp_ratio() -> usize {
    4
}

/// LayerNorm epsilon used everywhere (PyTorch's default).
pub const LN_EPS: f32 = 1e-5;

impl FlowConfig {
    /// The shape of the photo presets: 32x32 tiles, patch 4, width 128,
    /// 4 blocks of 2 layers, head dimension 64, MLP ratio 4 (about 1.7M
    /// parameters for RGB).
    pub fn photo(channels: usize) -> Self {
        Self {
            channels,
            image_size: 32,
            patch: 4,
            hidden: 128,
            blocks: 4,
            layers: 2,
            head_dim: 64,
            mlp_ratio: 4,
            classes: 0,
            intra: false,
            context: false,
        }
    }

    /// A tiny shape for tests, fuzzing and examples: 8x8 tiles, patch 2,
    /// width 16, 2 blocks of 1 layer; fast even in debug builds.
    pub fn tiny(channels: usize) -> Self {
        Self {
            channels,
            image_size: 8,
            patch: 2,
            hidden: 16,
            blocks: 2,
            layers: 1,
            head_dim: 8,
            mlp_ratio: 2,
            classes: 0,
            intra: false,
            context: false,
        }
    }

    /// Tokens per image: `(image_size / patch)^2`.
    pub fn tokens(&self) -> usize {
        let side = self.image_size / self.patch;
        side * side
    }

    /// Values per token: `channels * patch^2`.
    pub fn token_dim(&self) -> usize {
        self.channels * self.patch * self.patch
    }

    /// Values per image: `channels * image_size^2`.
    pub fn dims(&self) -> usize {
        self.channels * self.image_size * self.image_size
    }

    /// Patches per tile side: `image_size / patch`.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch
    }

    /// Slots of the ring of patches around a tile: `4 g + 4` (see
    /// [`crate::context`]).
    pub fn ring_slots(&self) -> usize {
        4 * self.grid() + 4
    }

    /// Context tokens before a tile's tokens: `2 g + 1` with
    /// [`FlowConfig::context`], else 0.
    pub fn context_len(&self) -> usize {
        if self.context {
            2 * self.grid() + 1
        } else {
            0
        }
    }

    /// Values per context token: a token's `D` values and its
    /// availability flag.
    pub fn context_dim(&self) -> usize {
        self.token_dim() + 1
    }

    /// Number of attention heads.
    pub fn heads(&self) -> usize {
        self.hidden / self.head_dim
    }

    /// Whether flow block `t` reads its tokens in reversed order.
    pub fn block_reversed(t: usize) -> bool {
        t % 2 == 1
    }

    /// Checks that the numbers describe a buildable model, with limits that
    /// keep a hostile file from asking for absurd allocations.
    pub fn validate(&self) -> Result<(), String> {
        let checks: [(bool, &str); 9] = [
            (matches!(self.channels, 1..=4), "channels must be 1 to 4"),
            (self.patch >= 1 && self.patch <= 64, "patch must be 1 to 64"),
            (
                self.image_size >= self.patch && self.image_size <= 1024,
                "image_size must be at least patch and at most 1024",
            ),
            (
                self.image_size % self.patch == 0,
                "image_size must be a multiple of patch",
            ),
            (
                self.hidden >= 1 && self.hidden <= 4096,
                "hidden must be 1 to 4096",
            ),
            (
                self.head_dim >= 1 && self.hidden % self.head_dim == 0,
                "hidden must be a multiple of head_dim",
            ),
            (
                self.blocks >= 1 && self.blocks <= 64,
                "blocks must be 1 to 64",
            ),
            (self.layers <= 64, "layers must be at most 64"),
            (
                self.mlp_ratio >= 1 && self.mlp_ratio <= 16 && self.classes <= 100_000,
                "mlp_ratio must be 1 to 16 and classes at most 100000",
            ),
        ];
        for (ok, msg) in checks {
            if !ok {
                return Err(msg.to_string());
            }
        }
        if self.tokens() > 65_536 {
            return Err("too many tokens per image".into());
        }
        Ok(())
    }

    /// Every tensor the model file must hold, with its shape (row-major,
    /// linear weights as `[out, in]` like PyTorch and candle).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (w, d, n) = (self.hidden, self.token_dim(), self.tokens());
        let f = w * self.mlp_ratio;
        let mut v = Vec::new();
        for t in 0..self.blocks {
            let b = |s: &str| format!("blocks.{t}.{s}");
            v.push((b("proj_in.weight"), vec![w, d]));
            v.push((b("proj_in.bias"), vec![w]));
            v.push((b("pos_embed"), vec![n, w]));
            if self.context {
                v.push((b("ctx_proj.weight"), vec![w, d + 1]));
                v.push((b("ctx_proj.bias"), vec![w]));
                v.push((b("ctx_pos"), vec![self.ring_slots(), w]));
            }
            if self.classes > 0 {
                v.push((b("class_embed"), vec![self.classes, w]));
            }
            for k in 0..self.layers {
                let l = |s: &str| format!("blocks.{t}.layers.{k}.{s}");
                v.push((l("attn_norm.weight"), vec![w]));
                v.push((l("attn_norm.bias"), vec![w]));
                v.push((l("qkv.weight"), vec![3 * w, w]));
                v.push((l("qkv.bias"), vec![3 * w]));
                v.push((l("attn_proj.weight"), vec![w, w]));
                v.push((l("attn_proj.bias"), vec![w]));
                v.push((l("mlp_norm.weight"), vec![w]));
                v.push((l("mlp_norm.bias"), vec![w]));
                v.push((l("fc1.weight"), vec![f, w]));
                v.push((l("fc1.bias"), vec![f]));
                v.push((l("fc2.weight"), vec![w, f]));
                v.push((l("fc2.bias"), vec![w]));
            }
            v.push((b("proj_out.weight"), vec![2 * d, w]));
            v.push((b("proj_out.bias"), vec![2 * d]));
            if self.intra {
                v.push((b("intra"), vec![d, d]));
            }
        }
        v
    }

    /// Number of parameters.
    pub fn parameter_count(&self) -> usize {
        self.tensor_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}
