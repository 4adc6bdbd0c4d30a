//! Loading a TarFlow model file (safetensors with `tfc.config` metadata)
//! into f32 weights, and writing random-weight model files for tests.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use sha2::{Digest, Sha256};

use crate::config::{FlowConfig, META_CONFIG, META_FORMAT, MODEL_FORMAT_VERSION};
use crate::error::{CodecError, Result};
use crate::net::Network;

/// Identity of a model file: the first 16 bytes of SHA-256 of its bytes.
pub type ModelId = [u8; 16];

/// A loaded model: configuration, weights and the prepared coding network.
#[derive(Debug, Clone)]
pub struct ModelFile {
    config: FlowConfig,
    id: ModelId,
    tensors: HashMap<String, Vec<f32>>,
    network: Network,
}

fn model_err(msg: impl Into<String>) -> CodecError {
    CodecError::Model(msg.into())
}

/// Reads the `arch` field of the `tfc.config` metadata.
fn parse_config(meta: Option<&HashMap<String, String>>) -> Result<FlowConfig> {
    let meta = meta.ok_or_else(|| model_err("no metadata (not a tfc model file)"))?;
    if let Some(v) = meta.get(META_FORMAT) {
        if v != MODEL_FORMAT_VERSION {
            return Err(model_err(format!(
                "model format version {v} is not supported"
            )));
        }
    }
    let text = meta
        .get(META_CONFIG)
        .ok_or_else(|| model_err(format!("metadata key {META_CONFIG} is missing")))?;
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| model_err(format!("config is not JSON: {e}")))?;
    let arch = json
        .get("arch")
        .ok_or_else(|| model_err("config has no `arch` field"))?;
    let cfg: FlowConfig = serde_json::from_value(arch.clone())
        .map_err(|e| model_err(format!("bad `arch` config: {e}")))?;
    cfg.validate().map_err(model_err)?;
    Ok(cfg)
}

/// Converts one tensor to f32, whatever its stored float type.
fn to_f32(view: &TensorView<'_>, name: &str) -> Result<Vec<f32>> {
    let data = view.data();
    let out = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => return Err(model_err(format!("tensor {name} has dtype {other:?}"))),
    };
    Ok(out)
}

impl ModelFile {
    /// Parses and validates a model file. Damaged files, missing tensors,
    /// wrong shapes and invalid configurations give [`CodecError::Model`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| model_err(format!("not a safetensors file: {e}")))?;
        let config = parse_config(meta.metadata().as_ref())?;
        if config.parameter_count() > 1 << 28 {
            return Err(CodecError::Limit("model has too many parameters".into()));
        }
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| model_err(format!("damaged safetensors file: {e}")))?;
        let mut tensors = HashMap::new();
        for (name, shape) in config.tensor_shapes() {
            let view = st
                .tensor(&name)
                .map_err(|_| model_err(format!("tensor {name} is missing")))?;
            if view.shape() != shape.as_slice() {
                return Err(model_err(format!(
                    "tensor {name} has shape {:?}, expected {shape:?}",
                    view.shape()
                )));
            }
            let values = to_f32(&view, &name)?;
            tensors.insert(name, values);
        }
        let network = Network::from_tensors(&config, &tensors)?;
        let digest = Sha256::digest(bytes);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        tracing::debug!(params = config.parameter_count(), "loaded model");
        Ok(Self {
            config,
            id,
            tensors,
            network,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &FlowConfig {
        &self.config
    }

    /// The identity recorded in compressed files.
    pub fn id(&self) -> ModelId {
        self.id
    }

    /// The identity as 32 hex digits.
    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }

    /// A tensor by name, as f32 in row-major order.
    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.tensors.get(name).map(|v| v.as_slice())
    }

    /// The deterministic coding network.
    pub fn network(&self) -> &Network {
        &self.network
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A small seeded generator (SplitMix64) for test weights; no external
/// randomness so that test models are the same everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    pub fn symmetric(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Random weights for `cfg`: every tensor uniform in `[-scale, scale)`,
/// LayerNorm gains near 1, and a non-zero `proj_out` so the flow is not the
/// identity.
pub fn random_tensors(
    cfg: &FlowConfig,
    seed: u64,
    scale: f32,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = SplitMix::new(seed);
    cfg.tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let gain = name.ends_with("norm.weight");
            // Intra-token weights as large as trained ones get (a value
            // predicted from its neighbours), so the path really shifts.
            // Context embeddings as large as the tile tokens' own, so the
            // prefix really moves the parameters.
            let s =
                if name.contains("proj_in") || name.contains("pos_embed") || name.contains(".ctx_")
                {
                    scale * 10.0
                } else if name.ends_with(".intra") {
                    0.4
                } else {
                    scale
                };
            let v = (0..n)
                .map(|_| {
                    let r = rng.symmetric();
                    if gain {
                        1.0 + 0.1 * r
                    } else {
                        s * r
                    }
                })
                .collect();
            (name, shape, v)
        })
        .collect()
}

/// Serializes f32 tensors into a model file with the metadata the model
/// crate writes (`tfc.config` with an `arch` field, `tfc.format`). The
/// safetensors header is written with sorted keys so that the same tensors
/// always give the same bytes (and the same model id).
pub fn write_model_file(
    cfg: &FlowConfig,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<Vec<u8>> {
    use serde_json::{json, Map, Value};
    let mut header = Map::new();
    let config = json!({ "arch": cfg }).to_string();
    header.insert(
        "__metadata__".into(),
        json!({ META_CONFIG: config, META_FORMAT: MODEL_FORMAT_VERSION }),
    );
    let mut offset = 0usize;
    for (name, shape, values) in tensors {
        if shape.iter().product::<usize>() != values.len() {
            return Err(CodecError::Misuse(format!(
                "tensor {name} has the wrong length"
            )));
        }
        let end = offset + 4 * values.len();
        header.insert(
            name.clone(),
            json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    // serde_json keeps keys sorted (or in insertion order with its
    // `preserve_order` feature): deterministic either way.
    let mut text = Value::Object(header).to_string().into_bytes();
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend((text.len() as u64).to_le_bytes());
    out.extend(text);
    for (_, _, values) in tensors {
        out.extend(values.iter().flat_map(|x| x.to_le_bytes()));
    }
    Ok(out)
}

/// Bytes of a random-weight model file (see [`random_tensors`]).
pub fn random_model_bytes(cfg: &FlowConfig, seed: u64, scale: f32) -> Vec<u8> {
    let tensors = random_tensors(cfg, seed, scale);
    write_model_file(cfg, &tensors).expect("random tensors have consistent shapes")
}
