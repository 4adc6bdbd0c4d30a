//! Model files: safetensors weights plus the full [`ModelConfig`] as JSON
//! metadata, so that any command can rebuild the model from the file alone.
//! Also seeded initialisation of fresh weights.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::flow::TarFlow;
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use safetensors::tensor::{Dtype as StDtype, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use tfc_codec::config::{META_CONFIG, META_FORMAT, MODEL_FORMAT_VERSION};

/// Precision of the weights written to a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    /// 4 bytes a weight, exact.
    F32,
    /// 2 bytes a weight: the compact form for shipped models.
    F16,
    /// 2 bytes a value with f32's range (8 significant bits): optimizer
    /// moments in compact checkpoints.
    Bf16,
}

/// A var-builder backend that creates every variable from one seeded RNG in
/// construction order, so a fresh model is reproducible.
struct SeededVars {
    map: VarMap,
    rng: Mutex<StdRng>,
}

impl SeededVars {
    fn sample(&self, shape: &Shape, init: Init) -> Vec<f32> {
        let n = shape.elem_count();
        let mut rng = self.rng.lock().expect("rng lock");
        match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| {
                    let e: f64 = StandardNormal.sample(&mut *rng);
                    (mean + stdev * e) as f32
                })
                .collect(),
            Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..up) as f32).collect(),
            Init::Kaiming { .. } => unreachable!("the model uses no Kaiming init"),
        }
    }
}

/// A var builder whose variables (f32, in `VarMap`) are drawn in
/// construction order from one RNG seeded with `seed`: candle's own CPU
/// initialisers draw from an unseeded RNG.
pub fn seeded_vars(seed: u64, dev: &Device) -> (VarMap, VarBuilder<'static>) {
    let backend = SeededVars {
        map: VarMap::new(),
        rng: Mutex::new(StdRng::seed_from_u64(seed)),
    };
    let map = backend.map.clone();
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, dev.clone());
    (map, vb)
}

impl SimpleBackend for SeededVars {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some(v) = self.map.data().lock().expect("varmap lock").get(name) {
            return Ok(v.as_tensor().clone());
        }
        let t = Tensor::from_vec(self.sample(&s, h), s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        self.map
            .data()
            .lock()
            .expect("varmap lock")
            .insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        match self.map.data().lock().expect("varmap lock").get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("no variable {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map
            .data()
            .lock()
            .expect("varmap lock")
            .contains_key(name)
    }
}

/// A model: its configuration, its trainable variables and the network.
pub struct Model {
    /// Configuration stored with the weights.
    pub config: ModelConfig,
    /// The variables, by tensor name.
    pub vars: VarMap,
    /// The network, sharing storage with `vars`.
    pub flow: TarFlow,
}

impl Model {
    /// A freshly initialised model (identity flow), seeded.
    pub fn fresh(config: ModelConfig, seed: u64, dev: &Device) -> Result<Self> {
        config.arch.validate().map_err(ModelError::Config)?;
        let (map, vb) = seeded_vars(seed, dev);
        let flow = TarFlow::new(vb, &config.arch)?;
        Ok(Self {
            config,
            vars: map,
            flow,
        })
    }

    /// Reads a model file.
    pub fn load(path: impl AsRef<Path>, dev: &Device) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_bytes(&bytes, dev)
            .map_err(|e| ModelError::BadFile(format!("{}: {e}", path.display())))
    }

    /// Parses a model file held in memory.
    pub fn from_bytes(bytes: &[u8], dev: &Device) -> Result<Self> {
        let (config, tensors) = read_tensors(bytes)?;
        let model = Self::fresh(config, 0, dev)?;
        model.set_weights(&tensors, dev)?;
        Ok(model)
    }

    /// Copies named tensors into the variables; every variable must be
    /// present with its exact shape.
    pub fn set_weights(&self, tensors: &HashMap<String, Tensor>, dev: &Device) -> Result<()> {
        let data = self.vars.data().lock().expect("varmap lock");
        for (name, var) in data.iter() {
            let t = tensors
                .get(name)
                .ok_or_else(|| ModelError::BadFile(format!("missing tensor {name}")))?;
            if t.dims() != var.dims() {
                return Err(ModelError::BadFile(format!(
                    "tensor {name} has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_device(dev)?.to_dtype(DType::F32)?.copy()?)?;
        }
        Ok(())
    }

    /// Current weights by name.
    pub fn weights(&self) -> Result<HashMap<String, Tensor>> {
        let data = self.vars.data().lock().expect("varmap lock");
        Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect())
    }

    /// Serialises to the model-file format.
    pub fn to_bytes(&self, dtype: WeightDtype) -> Result<Vec<u8>> {
        write_tensors(&self.config, &self.weights()?, dtype)
    }

    /// Writes the model file atomically (temporary file, then rename).
    pub fn save(&self, path: impl AsRef<Path>, dtype: WeightDtype) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_bytes(dtype)?)
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder, so
/// that a failure never leaves a partial file behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| ModelError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ModelError::io(path, e)
    })
}

/// Encodes tensors with the configuration as metadata.
pub fn write_tensors(
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
    dtype: WeightDtype,
) -> Result<Vec<u8>> {
    let json = serde_json::to_string(config).map_err(|e| ModelError::Config(e.to_string()))?;
    let meta = HashMap::from([
        (META_CONFIG.to_string(), json),
        (META_FORMAT.to_string(), MODEL_FORMAT_VERSION.to_string()),
    ]);
    encode_safetensors(tensors, meta, &|_| dtype)
}

/// Encodes named tensors and string metadata as safetensors, each tensor
/// at the precision `dtype_of` gives its name.
pub fn encode_safetensors(
    tensors: &HashMap<String, Tensor>,
    meta: HashMap<String, String>,
    dtype_of: &dyn Fn(&str) -> WeightDtype,
) -> Result<Vec<u8>> {
    let mut raw: Vec<(String, Vec<usize>, StDtype, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let v: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let (st, bytes) = match dtype_of(name) {
            WeightDtype::F32 => (
                StDtype::F32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            WeightDtype::F16 => (
                StDtype::F16,
                v.iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
            WeightDtype::Bf16 => (
                StDtype::BF16,
                v.iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
        };
        raw.push((name.clone(), t.dims().to_vec(), st, bytes));
    }
    raw.sort_by(|a, b| a.0.cmp(&b.0));
    let views: Vec<(String, TensorView)> = raw
        .iter()
        .map(|(n, s, st, b)| Ok((n.clone(), TensorView::new(*st, s.clone(), b)?)))
        .collect::<std::result::Result<_, safetensors::SafeTensorError>>()
        .map_err(|e| ModelError::BadFile(e.to_string()))?;
    let mut bytes = safetensors::tensor::serialize(views, Some(meta.clone()))
        .map_err(|e| ModelError::BadFile(e.to_string()))?;
    sort_metadata(&mut bytes, &meta)?;
    Ok(bytes)
}

/// safetensors writes the `__metadata__` map first in the header, in hash
/// order, so two exports of the same model could differ in their bytes,
/// and a model's identity in compressed files is the hash of its bytes.
/// Rewrites that map in key order: the same entries, so the same length.
fn sort_metadata(bytes: &mut [u8], meta: &HashMap<String, String>) -> Result<()> {
    const KEY: &[u8] = b"{\"__metadata__\":";
    let sorted = serde_json::to_vec(&meta.iter().collect::<BTreeMap<_, _>>())
        .map_err(|e| ModelError::BadFile(e.to_string()))?;
    let start = 8 + KEY.len();
    let end = start + sorted.len();
    let written = bytes
        .get(start..end)
        .filter(|_| bytes[8..start] == *KEY)
        .and_then(|span| serde_json::from_slice::<HashMap<String, String>>(span).ok());
    if written.as_ref() != Some(meta) {
        return Err(ModelError::BadFile(
            "unexpected safetensors header layout".into(),
        ));
    }
    bytes[start..end].copy_from_slice(&sorted);
    Ok(())
}

/// Decodes a file written by [`write_tensors`] into its configuration and
/// f32 tensors on the CPU.
pub fn read_tensors(bytes: &[u8]) -> Result<(ModelConfig, HashMap<String, Tensor>)> {
    let bad = |m: String| ModelError::BadFile(m);
    let (meta, out) = decode_safetensors(bytes)?;
    match meta.get(META_FORMAT).map(String::as_str) {
        Some(MODEL_FORMAT_VERSION) => {}
        Some(v) => return Err(bad(format!("unsupported model format version {v}"))),
        None => return Err(bad("no tfc format version (not a tfc model file)".into())),
    }
    let json = meta
        .get(META_CONFIG)
        .ok_or_else(|| bad("no model configuration".into()))?;
    let config: ModelConfig =
        serde_json::from_str(json).map_err(|e| bad(format!("configuration: {e}")))?;
    config.arch.validate().map_err(bad)?;
    let expected = config.arch.tensor_shapes();
    if out.len() != expected.len() {
        return Err(bad(format!(
            "{} tensors, the configuration needs {}",
            out.len(),
            expected.len()
        )));
    }
    Ok((config, out))
}

/// Decodes safetensors bytes into string metadata and f32 CPU tensors;
/// refuses non-finite values.
pub fn decode_safetensors(
    bytes: &[u8],
) -> Result<(HashMap<String, String>, HashMap<String, Tensor>)> {
    let bad = |m: String| ModelError::BadFile(m);
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let meta = meta
        .metadata()
        .clone()
        .ok_or_else(|| bad("no tfc metadata (not a tfc model file)".into()))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let v: Vec<f32> = match view.dtype() {
            StDtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            StDtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            StDtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            d => return Err(bad(format!("tensor {name}: unsupported dtype {d:?}"))),
        };
        if v.iter().any(|x| !x.is_finite()) {
            return Err(bad(format!("tensor {name} holds non-finite values")));
        }
        let t = Tensor::from_vec(v, view.shape(), &Device::Cpu)?;
        out.insert(name, t);
    }
    Ok((meta, out))
}
