//! The codec's front door: images in, a tfc file out, and back.
//!
//! Tiles of all images (and all planes of an image) form one list, in
//! raster order per plane; each lane codes its tiles in order on its own
//! stack ([`LaneSplit`]: tile `k` goes to lane `k mod L`, or, when a model
//! of the file reads context tokens, each lane takes one contiguous run of
//! tiles). The encoder runs lanes in parallel; the decoder runs groups of
//! lanes in parallel and, inside a group, decodes one tile per lane in
//! lockstep so the network sees the lanes as one batch. Alpha planes are
//! pushed on lane 0 after its tiles.
//!
//! Context: the decoder decodes a lane's tiles last-coded first, so when
//! it reaches a tile, the tiles to its right, below and below-right are
//! already decoded if they are in the same lane (and plane). Those are the
//! tile's coded neighbours ([`neighbours`]); a context model reads them as
//! the tile's prefix ([`crate::context::coded_prefix`]), in the tile's
//! orientation.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::alpha;
use crate::ans::{self, Stack};
use crate::config::FlowConfig;
use crate::context::{coded_prefix, corner_after};
use crate::error::{corrupt, CodecError, Result};
use crate::format::{self, Header, ImageEntry, Limits, ModelRef, MAX_LANES, MAX_M};
use crate::image::{from_planes, plane_count, to_planes, Image, Plane, TileGeometry, ORIENTATIONS};
use crate::lead;
use crate::model_file::{hex, ModelFile};
use crate::net::Prefix;
use crate::tile::TileCoder;

/// Coding parameters chosen by the encoder. `m` and `lanes` are recorded
/// in the file; `orientations` only steers the encoder's search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodingParams {
    /// Sub-pixel bits `m` (lattice step `2^-(7+m)`).
    pub m: u8,
    /// Number of independent stacks.
    pub lanes: u16,
    /// How many of the [`ORIENTATIONS`] the encoder tries per tile (the
    /// first `n`: 1 codes every tile as it is, 2 adds the mirror image).
    /// Each costs one more network pass when encoding; decoding is
    /// unaffected.
    pub orientations: u8,
}

/// Defaults chosen by measurement (Kodak, 32x32 RGB model, see
/// `codec/README.md`): m = 3 was smallest among 2 to 4; two lanes when
/// [`lanes_for`] allows them; all eight orientations.
impl Default for CodingParams {
    fn default() -> Self {
        Self {
            m: 3,
            lanes: 2,
            orientations: ORIENTATIONS,
        }
    }
}

impl CodingParams {
    fn check(&self) -> Result<()> {
        if self.m > MAX_M || self.lanes == 0 || self.lanes > MAX_LANES {
            return Err(CodecError::Misuse(format!(
                "m must be 0..={MAX_M} and lanes 1..={MAX_LANES}"
            )));
        }
        if self.orientations == 0 || self.orientations > ORIENTATIONS {
            return Err(CodecError::Misuse(format!(
                "orientations must be 1..={ORIENTATIONS}"
            )));
        }
        Ok(())
    }
}

/// The models available to the codec, at most one per channel count.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelSet<'a> {
    gray: Option<&'a ModelFile>,
    rgb: Option<&'a ModelFile>,
}

impl<'a> ModelSet<'a> {
    /// Collects models; two models of the same channel count are refused.
    pub fn new(models: &[&'a ModelFile]) -> Result<Self> {
        let mut set = Self::default();
        for &m in models {
            let slot = match m.config().channels {
                1 => &mut set.gray,
                3 => &mut set.rgb,
                c => return Err(CodecError::Unsupported(format!("{c}-channel models"))),
            };
            if slot.is_some() {
                return Err(CodecError::Misuse(
                    "two models with the same channels".into(),
                ));
            }
            *slot = Some(m);
        }
        Ok(set)
    }

    /// A set of one model.
    pub fn single(model: &'a ModelFile) -> Result<Self> {
        Self::new(&[model])
    }

    /// The model for `channels` (1 or 3).
    pub fn get(&self, channels: u8) -> Option<&'a ModelFile> {
        match channels {
            1 => self.gray,
            3 => self.rgb,
            _ => None,
        }
    }

    /// Which model codes colour channels `cc`: the matching one, else the
    /// other one (gray replicated into RGB, RGB as three gray planes).
    fn choose(&self, cc: u8) -> Result<u8> {
        let other = if cc == 1 { 3 } else { 1 };
        [cc, other]
            .into_iter()
            .find(|&c| self.get(c).is_some())
            .ok_or_else(|| CodecError::Misuse("no model given".into()))
    }
}

/// One tile of one plane of one image.
#[derive(Debug, Clone, Copy)]
struct Job {
    image: usize,
    plane: usize,
    model_channels: u8,
    tx: usize,
    ty: usize,
    /// Tiles across the plane.
    gx: usize,
    /// Tiles down the plane.
    gy: usize,
}

/// How the tile list is split over lanes: tile `k` to lane `k mod L`
/// (interleaved), or, when any model coding the file reads context tokens,
/// lane `l` takes tiles `n l / L .. n (l + 1) / L` (contiguous), so that a
/// tile's neighbours mostly share its lane. Encoder and decoder decide it
/// from the models the file names.
#[derive(Debug, Clone, Copy)]
struct LaneSplit {
    tiles: usize,
    lanes: usize,
    contiguous: bool,
}

impl LaneSplit {
    fn new(models: &ModelSet<'_>, jobs: &[Job], lanes: usize) -> Self {
        let contiguous = [1u8, 3].into_iter().any(|mc| {
            jobs.iter().any(|j| j.model_channels == mc)
                && models.get(mc).is_some_and(|m| m.config().context)
        });
        Self {
            tiles: jobs.len(),
            lanes,
            contiguous,
        }
    }

    /// The tiles of lane `l`, in coding order.
    fn lane(&self, l: usize) -> Box<dyn DoubleEndedIterator<Item = usize>> {
        if self.contiguous {
            Box::new(self.start(l)..self.start(l + 1))
        } else {
            Box::new((l..self.tiles).step_by(self.lanes))
        }
    }

    /// First tile of lane `l` in the contiguous split.
    fn start(&self, l: usize) -> usize {
        (self.tiles as u128 * l as u128 / self.lanes as u128) as usize
    }

    /// The lane of tile `k`.
    fn lane_of(&self, k: usize) -> usize {
        if self.contiguous {
            // The last l with start(l) <= k, i.e. l < (k + 1) L / n.
            let l = ((k as u128 + 1) * self.lanes as u128 - 1) / self.tiles as u128;
            l as usize
        } else {
            k % self.lanes
        }
    }
}

/// The coded neighbours of tile `k` (the tiles to its right, below and
/// below-right, as tile indices), where they exist in the same plane and
/// lane. They come after `k` in the lane, so the decoder has them before
/// it decodes `k`.
fn neighbours(jobs: &[Job], split: &LaneSplit, k: usize) -> [Option<usize>; 3] {
    let j = jobs[k];
    let (right, down) = (j.tx + 1 < j.gx, j.ty + 1 < j.gy);
    let same_lane = |i: usize| (split.lane_of(i) == split.lane_of(k)).then_some(i);
    [
        right.then(|| k + 1).and_then(same_lane),
        down.then(|| k + j.gx).and_then(same_lane),
        (right && down).then(|| k + j.gx + 1).and_then(same_lane),
    ]
}

/// A tile's coded neighbours as pixel arrays in its own frame.
type NeighbourPixels = [Option<Vec<u8>>; 3];

/// The context prefix values of a tile coded in orientation `o`.
fn prefix_values(cfg: &FlowConfig, o: u8, nb: &NeighbourPixels) -> Vec<f32> {
    coded_prefix(cfg, o, nb[0].as_deref(), nb[1].as_deref(), nb[2].as_deref())
}

fn geometry(m: &ModelFile) -> TileGeometry {
    let c = m.config();
    TileGeometry {
        tile: c.image_size,
        patch: c.patch,
        channels: c.channels,
    }
}

/// The tile list for images given as `(width, height, colour channels,
/// model channels)`.
fn jobs(images: &[(usize, usize, u8, u8)], models: &ModelSet<'_>) -> Result<Vec<Job>> {
    let mut out = Vec::new();
    for (i, &(w, h, cc, mc)) in images.iter().enumerate() {
        let model = models
            .get(mc)
            .ok_or_else(|| CodecError::Misuse("model missing".into()))?;
        let (gx, gy) = geometry(model).grid(w, h);
        for plane in 0..plane_count(cc, mc) {
            for ty in 0..gy {
                for tx in 0..gx {
                    out.push(Job {
                        image: i,
                        plane,
                        model_channels: mc,
                        tx,
                        ty,
                        gx,
                        gy,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Encodes images into one tfc file.
pub fn encode_images(
    models: &ModelSet<'_>,
    images: &[Image],
    params: &CodingParams,
) -> Result<Vec<u8>> {
    encode_images_with(models, images, params, &|_| {})
}

/// [`encode_images`] calling `progress(1)` after every coded tile.
pub fn encode_images_with(
    models: &ModelSet<'_>,
    images: &[Image],
    params: &CodingParams,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<u8>> {
    params.check()?;
    if images.is_empty() {
        return Err(CodecError::Misuse("no images to encode".into()));
    }
    let mut planes = Vec::with_capacity(images.len());
    let mut geo = Vec::with_capacity(images.len());
    let mut entries = Vec::with_capacity(images.len());
    for img in images {
        img.check()?;
        let mc = models.choose(img.color_channels())?;
        planes.push(to_planes(img, mc));
        geo.push((
            img.width as usize,
            img.height as usize,
            img.color_channels(),
            mc,
        ));
        entries.push(ImageEntry {
            width: img.width,
            height: img.height,
            channels: img.channels,
            bit_depth: 8,
            model_channels: mc,
            checksum: format::pixel_checksum(&img.data),
        });
    }
    let jobs = jobs(&geo, models)?;
    let lanes = params.lanes as usize;
    let split = LaneSplit::new(models, &jobs, lanes);
    tracing::debug!(tiles = jobs.len(), lanes, m = params.m, "encoding");
    let tiles = Tiles {
        models,
        planes: &planes,
        jobs: &jobs,
        split,
    };
    let words = (0..lanes)
        .into_par_iter()
        .map(|l| {
            let mut stack = Stack::new();
            encode_lane(&tiles, params, true, split.lane(l), &mut stack, progress)?;
            if l == 0 {
                for img in images {
                    if let Some(a) = img.alpha() {
                        alpha::encode(&mut stack, &a, img.width as usize)?;
                    }
                }
            }
            Ok(stack.into_compressed().unwrap_or_else(|e| match e {}))
        })
        .collect::<Result<Vec<Vec<u32>>>>()?;
    let header = Header {
        version: format::VERSION,
        m: params.m,
        models: model_refs(models, &entries),
        images: entries,
        lane_words: words.iter().map(|w| w.len() as u32).collect(),
    };
    let mut bytes = header.to_bytes();
    for w in words.iter().flatten() {
        bytes.extend(w.to_le_bytes());
    }
    Ok(bytes)
}

/// Bits per value of a flow tile, beyond `m`, that a lane's lead tiles
/// provide before flow coding starts (see [`lead`]): about what the first
/// flow tile pops before it pushes.
const LEAD_BITS_PER_VALUE: u64 = 4;

/// Range of the lead-tile count pushed at the end of each lane.
const LEAD_COUNT_RANGE: u64 = 1 << 16;

/// What the encoder codes: the planes, the tile list and its lanes.
#[derive(Clone, Copy)]
struct Tiles<'a> {
    models: &'a ModelSet<'a>,
    planes: &'a [Vec<Plane>],
    jobs: &'a [Job],
    split: LaneSplit,
}

impl Tiles<'_> {
    fn model(&self, k: usize) -> &ModelFile {
        self.models
            .get(self.jobs[k].model_channels)
            .expect("chosen by the caller")
    }

    /// Tile `k` as tokens, edges repeated.
    fn tokens(&self, k: usize) -> Vec<u8> {
        let j = self.jobs[k];
        geometry(self.model(k)).extract(&self.planes[j.image][j.plane], j.tx, j.ty)
    }

    /// The coded neighbours of tile `k` for a context model, else `None`.
    fn neighbour_pixels(&self, k: usize) -> Option<NeighbourPixels> {
        let model = self.model(k);
        model.config().context.then(|| {
            let geo = geometry(model);
            neighbours(self.jobs, &self.split, k).map(|n| n.map(|i| geo.to_pixels(&self.tokens(i))))
        })
    }
}

/// Codes one lane's tiles (indices in coding order) on `stack`. With
/// `lead` (the encoder always; see [`lead`]), tiles are coded with the
/// lead model while the stack holds fewer than `(m + LEAD_BITS_PER_VALUE)`
/// bits per value of the next tile, and their count is pushed last; the
/// other tiles go through the flow, each in its cheapest orientation.
fn encode_lane(
    tiles: &Tiles<'_>,
    params: &CodingParams,
    lead: bool,
    lane: impl Iterator<Item = usize>,
    stack: &mut Stack,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<()> {
    let mut leading = lead;
    let mut lead_tiles = 0u64;
    for k in lane {
        let model = tiles.model(k);
        let geo = geometry(model);
        let tokens = tiles.tokens(k);
        let need = (params.m as u64 + LEAD_BITS_PER_VALUE) * tokens.len() as u64;
        leading &= (stack.num_valid_bits() as u64) < need && lead_tiles + 1 < LEAD_COUNT_RANGE;
        if leading {
            lead::push_tile(stack, &geo.to_pixels(&tokens), geo.tile, geo.channels)?;
            lead_tiles += 1;
        } else {
            let coder = TileCoder::new(model.network(), params.m as u32);
            let nb = tiles.neighbour_pixels(k);
            let o = encode_oriented(
                &coder,
                &geo,
                stack,
                &tokens,
                nb.as_ref(),
                params.orientations,
            )?;
            ans::push_uniform(stack, o as u64, ORIENTATIONS as u64)?;
        }
        progress(1);
    }
    if lead {
        ans::push_uniform(stack, lead_tiles, LEAD_COUNT_RANGE)?;
    }
    Ok(())
}

/// Encodes one tile in orientation `o`, with its prefix if the model reads
/// context (`nb`: its coded neighbours).
fn encode_in(
    coder: &TileCoder<'_>,
    geo: &TileGeometry,
    stack: &mut Stack,
    tokens: &[u8],
    nb: Option<&NeighbourPixels>,
    o: u8,
) -> Result<()> {
    let values = nb.map(|nb| prefix_values(coder.config(), o, nb));
    let prefix = values.as_deref().map(|values| Prefix {
        values,
        corner: corner_after(o),
    });
    coder.encode(stack, &geo.orient(tokens, o), prefix)
}

/// Encodes `tokens` onto `stack` in whichever of the first `tries`
/// orientations leaves the stack smallest, and returns that orientation.
///
/// Each try runs on a copy of only the top of the stack: encoding a tile
/// pops at most `m` bits per value for the sub-pixels plus, per value and
/// block, the bits of one scale remainder below `R <= R_MAX`, so a copy of
/// that many words behaves exactly like the whole stack, and the winner's
/// copy is spliced back on.
fn encode_oriented(
    coder: &TileCoder<'_>,
    geo: &TileGeometry,
    stack: &mut Stack,
    tokens: &[u8],
    nb: Option<&NeighbourPixels>,
    tries: u8,
) -> Result<u8> {
    if tries <= 1 {
        encode_in(coder, geo, stack, tokens, nb, 0)?;
        return Ok(0);
    }
    use constriction::stream::Code;
    let cfg = coder.config();
    let r_bits = crate::lattice::R_MAX.ilog2() as usize + 1;
    let bound = cfg.dims() * (coder.m() as usize + r_bits * cfg.blocks) / 32 + 256;
    let len = stack.bulk().len();
    let keep = len.saturating_sub(bound);
    let top = &stack.bulk()[keep..];
    let state = stack.state();
    let tried = (0..tries)
        .into_par_iter()
        .map(|o| {
            let mut copy = Stack::from_raw_parts(top.to_vec(), state);
            encode_in(coder, geo, &mut copy, tokens, nb, o)?;
            Ok((copy.num_valid_bits(), o, copy))
        })
        .collect::<Result<Vec<_>>>()?;
    let (_, o, best) = tried
        .into_iter()
        .min_by_key(|(bits, o, _)| (*bits, *o))
        .expect("at least one orientation");
    let (mut bulk, _) = std::mem::take(stack).into_raw_parts();
    bulk.truncate(keep);
    let (top, state) = best.into_raw_parts();
    bulk.extend(top);
    *stack = Stack::from_raw_parts(bulk, state);
    Ok(o)
}

fn model_refs(models: &ModelSet<'_>, entries: &[ImageEntry]) -> Vec<ModelRef> {
    [1u8, 3]
        .into_iter()
        .filter(|&c| entries.iter().any(|e| e.model_channels == c))
        .filter_map(|c| models.get(c))
        .map(|m| {
            let cfg = m.config();
            ModelRef {
                channels: cfg.channels as u8,
                tile: cfg.image_size as u16,
                patch: cfg.patch as u16,
                id: m.id(),
            }
        })
        .collect()
}

/// Decodes a tfc file with default [`Limits`].
pub fn decode_file(models: &ModelSet<'_>, bytes: &[u8]) -> Result<Vec<Image>> {
    decode_file_with(models, bytes, &Limits::default(), &|_| {})
}

/// Checks that the supplied models are the ones the file names.
fn resolve_models<'a>(models: &ModelSet<'a>, header: &Header) -> Result<ModelSet<'a>> {
    let mut used = Vec::new();
    for r in &header.models {
        let m = models.get(r.channels).ok_or_else(|| {
            CodecError::ModelMismatch(format!(
                "file needs a {}-channel model {} that was not given",
                r.channels,
                hex(&r.id)
            ))
        })?;
        if m.id() != r.id {
            return Err(CodecError::ModelMismatch(format!(
                "file was coded with model {}, given {}",
                hex(&r.id),
                m.id_hex()
            )));
        }
        let cfg = m.config();
        if cfg.image_size != r.tile as usize || cfg.patch != r.patch as usize {
            return Err(corrupt("model geometry in header does not match the model"));
        }
        used.push(m);
    }
    ModelSet::new(&used)
}

/// Splits the payload into one stack per lane.
fn lane_stacks(header: &Header, payload: &[u8]) -> Result<Vec<Stack>> {
    let mut words = payload
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    header
        .lane_words
        .iter()
        .map(|&n| {
            let w: Vec<u32> = words.by_ref().take(n as usize).collect();
            Stack::from_compressed(w).map_err(|_| corrupt("lane data ends in a zero word"))
        })
        .collect()
}

/// [`decode_file`] with explicit limits and a progress callback.
pub fn decode_file_with(
    models: &ModelSet<'_>,
    bytes: &[u8],
    limits: &Limits,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<Image>> {
    let (header, offset) = format::parse_header(bytes, limits)?;
    let models = resolve_models(models, &header)?;
    let geo: Vec<_> = header
        .images
        .iter()
        .map(|e| {
            let cc = if e.channels >= 3 { 3 } else { 1 };
            (e.width as usize, e.height as usize, cc, e.model_channels)
        })
        .collect();
    let jobs = jobs(&geo, &models)?;
    let mut stacks = lane_stacks(&header, &bytes[offset..])?;
    let mut alphas = vec![None; header.images.len()];
    for (i, e) in header.images.iter().enumerate().rev() {
        if e.channels == 2 || e.channels == 4 {
            let n = e.width as usize * e.height as usize;
            alphas[i] = Some(alpha::decode(&mut stacks[0], n, e.width as usize)?);
        }
    }
    let tiles = decode_lanes(&models, header.m as u32, &jobs, &mut stacks, progress)?;
    if stacks.iter().any(|s| !s.is_empty()) {
        return Err(corrupt("lane has data left over after decoding"));
    }
    assemble(&header, &models, &geo, &jobs, tiles, &alphas)
}

/// Decodes all tiles; returns `(job index, tokens)` pairs.
fn decode_lanes(
    models: &ModelSet<'_>,
    m: u32,
    jobs: &[Job],
    stacks: &mut [Stack],
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<(usize, Vec<u8>)>> {
    let lanes = stacks.len();
    let split = LaneSplit::new(models, jobs, lanes);
    let groups = rayon::current_num_threads().clamp(1, lanes);
    let per_group = lanes.div_ceil(groups);
    let results = stacks
        .par_chunks_mut(per_group)
        .enumerate()
        .map(|(g, group)| {
            let lanes = LaneGroup {
                models,
                m,
                jobs,
                split,
                first: g * per_group,
            };
            lanes.decode(group, progress)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(results.into_iter().flatten().collect())
}

/// A group of lanes that decode in lockstep: lanes `first..` of `split`.
struct LaneGroup<'a> {
    models: &'a ModelSet<'a>,
    m: u32,
    jobs: &'a [Job],
    split: LaneSplit,
    first: usize,
}

impl LaneGroup<'_> {
    /// Decodes the lanes `first..first + group.len()`; returns every
    /// decoded tile by job index.
    fn decode(
        &self,
        group: &mut [Stack],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<HashMap<usize, Vec<u8>>> {
        // Each lane decodes its tiles last-encoded first; its last
        // `lead[g]` tiles in that order are lead tiles.
        let lists: Vec<Vec<usize>> = (0..group.len())
            .map(|g| self.split.lane(self.first + g).rev().collect())
            .collect();
        let mut lead_tiles = Vec::with_capacity(group.len());
        for (stack, list) in group.iter_mut().zip(&lists) {
            let n = ans::pop_uniform(stack, LEAD_COUNT_RANGE)? as usize;
            if n > list.len() {
                return Err(corrupt("more lead tiles than the lane has"));
            }
            lead_tiles.push(n);
        }
        let is_lead = |g: usize, s: usize| lists[g].len() - 1 - s < lead_tiles[g];
        let steps = lists.iter().map(Vec::len).max().unwrap_or(0);
        // Tiles decoded so far (in the tile's own frame, as tokens): the
        // coded neighbours of the tiles still to come.
        let mut done = HashMap::new();
        for s in 0..steps {
            for (g, (stack, list)) in group.iter_mut().zip(&lists).enumerate() {
                if s < list.len() && is_lead(g, s) {
                    let j = list[s];
                    let geo = geometry(self.model(j));
                    let px = lead::pop_tile(stack, geo.tile, geo.channels)?;
                    done.insert(j, geo.from_pixels(&px));
                    progress(1);
                }
            }
            for mc in [1u8, 3] {
                let mut batch = Vec::new();
                for (g, (stack, list)) in group.iter_mut().zip(&lists).enumerate() {
                    let flow = s < list.len() && !is_lead(g, s);
                    if let Some(&j) = list
                        .get(s)
                        .filter(|&&j| flow && self.jobs[j].model_channels == mc)
                    {
                        batch.push((j, stack));
                    }
                }
                if !batch.is_empty() {
                    let n = batch.len();
                    self.decode_flow(batch, &mut done)?;
                    progress(n);
                }
            }
        }
        Ok(done)
    }

    fn model(&self, j: usize) -> &ModelFile {
        self.models
            .get(self.jobs[j].model_channels)
            .expect("resolved")
    }

    /// Decodes one flow tile per lane of `batch` (tile index and stack),
    /// all of one model, into `done`.
    fn decode_flow(
        &self,
        batch: Vec<(usize, &mut Stack)>,
        done: &mut HashMap<usize, Vec<u8>>,
    ) -> Result<()> {
        let model = self.model(batch[0].0);
        let geo = geometry(model);
        let context = model.config().context;
        let mut idx = Vec::with_capacity(batch.len());
        let mut stacks = Vec::with_capacity(batch.len());
        let mut values = Vec::new();
        for (j, stack) in batch {
            let o = ans::pop_uniform(stack, ORIENTATIONS as u64)? as u8;
            if context {
                let nb = neighbours(self.jobs, &self.split, j).map(|n| {
                    n.map(|i| {
                        done.get(&i)
                            .map(|t| geo.to_pixels(t))
                            .ok_or_else(|| corrupt("neighbour tile not decoded"))
                    })
                    .transpose()
                });
                let [a, b, c] = nb;
                values.push(prefix_values(model.config(), o, &[a?, b?, c?]));
            }
            idx.push((j, o));
            stacks.push(stack);
        }
        let prefixes: Vec<Prefix<'_>> = values
            .iter()
            .zip(&idx)
            .map(|(v, &(_, o))| Prefix {
                values: v,
                corner: corner_after(o),
            })
            .collect();
        let tiles = TileCoder::new(model.network(), self.m).decode_batch(&mut stacks, &prefixes)?;
        for ((j, o), t) in idx.into_iter().zip(tiles) {
            done.insert(j, geo.unorient(&t, o));
        }
        Ok(())
    }
}

/// Places decoded tiles into planes, rebuilds images and checks them.
fn assemble(
    header: &Header,
    models: &ModelSet<'_>,
    geo: &[(usize, usize, u8, u8)],
    jobs: &[Job],
    tiles: Vec<(usize, Vec<u8>)>,
    alphas: &[Option<Vec<u8>>],
) -> Result<Vec<Image>> {
    let mut planes: Vec<Vec<Plane>> = geo
        .iter()
        .map(|&(w, h, cc, mc)| {
            let p = Plane {
                width: w,
                height: h,
                channels: mc as usize,
                data: vec![0; w * h * mc as usize],
            };
            vec![p; plane_count(cc, mc)]
        })
        .collect();
    for (j, tokens) in tiles {
        let job = jobs[j];
        let model = models.get(job.model_channels).expect("resolved");
        geometry(model).place(&mut planes[job.image][job.plane], job.tx, job.ty, &tokens);
    }
    let mut images = Vec::with_capacity(header.images.len());
    for (i, e) in header.images.iter().enumerate() {
        let img = from_planes(
            e.width,
            e.height,
            e.channels,
            &planes[i],
            alphas[i].as_deref(),
        );
        if format::pixel_checksum(&img.data) != e.checksum {
            return Err(corrupt(format!("pixel checksum mismatch in image {i}")));
        }
        images.push(img);
    }
    Ok(images)
}

/// Number of tiles that encoding `images` codes (for progress bars).
pub fn tiles_for_images(models: &ModelSet<'_>, images: &[Image]) -> Result<usize> {
    let mut geo = Vec::with_capacity(images.len());
    for img in images {
        let cc = img.color_channels();
        geo.push((
            img.width as usize,
            img.height as usize,
            cc,
            models.choose(cc)?,
        ));
    }
    Ok(jobs(&geo, models)?.len())
}

/// Tiles one lane carries before [`lanes_for`] adds another. Each lane
/// pays a start-up of about 5 bits per value of one tile (see
/// `codec/README.md`), and a lane of 1024 32x32 tiles (1 Mpixel) decodes in
/// well under a minute on one core; so a photo up to a megapixel gets one
/// lane, the smallest file, and larger ones decode in parallel.
pub const TILES_PER_LANE: usize = 1024;

/// A lane count for `images`: one per [`TILES_PER_LANE`] tiles begun, at
/// least 1 and at most `max_lanes`.
pub fn lanes_for(models: &ModelSet<'_>, images: &[Image], max_lanes: u16) -> Result<u16> {
    let tiles = tiles_for_images(models, images)?;
    let lanes = tiles
        .div_ceil(TILES_PER_LANE)
        .clamp(1, max_lanes.max(1) as usize);
    Ok(lanes as u16)
}

/// Number of tiles in a file with the given header, given its models.
pub fn tiles_for_header(models: &ModelSet<'_>, header: &Header) -> Result<usize> {
    let models = resolve_models(models, header)?;
    let geo: Vec<_> = header
        .images
        .iter()
        .map(|e| {
            (
                e.width as usize,
                e.height as usize,
                if e.channels >= 3 { 3 } else { 1 },
                e.model_channels,
            )
        })
        .collect();
    Ok(jobs(&geo, &models)?.len())
}

/// What a tfc file holds, read from its header alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The parsed header.
    pub header: Header,
    /// Header size in bytes.
    pub header_bytes: usize,
    /// Payload size in bytes.
    pub payload_bytes: usize,
}

/// Reads and checks the header of a tfc file.
pub fn inspect(bytes: &[u8]) -> Result<FileInfo> {
    let (header, offset) = format::parse_header(bytes, &Limits::default())?;
    Ok(FileInfo {
        header,
        header_bytes: offset,
        payload_bytes: bytes.len() - offset,
    })
}

/// Sizes of an actual encoding, for comparing with the model's NLL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodedStats {
    /// Bits of the whole file.
    pub total_bits: u64,
    /// Bits of the header.
    pub header_bits: u64,
    /// Bits of the lanes' payload.
    pub payload_bits: u64,
    /// Sub-pixel values coded (pixels times channels), the "dimensions".
    pub dims: u64,
    /// Measured one-off start-up cost of the lanes: how many more bits each
    /// lane's first tiles take on an empty stack (lead tiles first, then
    /// flow tiles that find little to pop) than flow-coded on a stack that
    /// already holds data, summed over lanes. Negative where the lead model
    /// codes those tiles in fewer bits than the flow (a weak model).
    pub startup_bits: i64,
}

impl CodedStats {
    /// Bits per dimension of the whole file.
    pub fn bpd(&self) -> f64 {
        self.total_bits as f64 / self.dims as f64
    }
}

/// Tiles at the start of each lane that [`startup_bits`] codes.
const STARTUP_TILES: usize = 4;

/// Start-up cost of the lanes: the size of each lane's first
/// [`STARTUP_TILES`] tiles coded as the encoder codes them on an empty
/// stack (lead tiles first) minus their size when all are flow-coded on a
/// stack pre-filled with pseudo-random words, summed over lanes.
fn startup_bits(
    models: &ModelSet<'_>,
    planes: &[Vec<Plane>],
    geo: &[(usize, usize, u8, u8)],
    params: &CodingParams,
) -> Result<i64> {
    let jobs = jobs(geo, models)?;
    let lanes = params.lanes as usize;
    let split = LaneSplit::new(models, &jobs, lanes);
    let tiles = Tiles {
        models,
        planes,
        jobs: &jobs,
        split,
    };
    let mut total = 0i64;
    for l in 0..lanes {
        let lane = || split.lane(l).take(STARTUP_TILES);
        if lane().next().is_none() {
            continue;
        }
        let mut empty = Stack::new();
        encode_lane(&tiles, params, true, lane(), &mut empty, &|_| {})?;
        let mut rng = crate::model_file::SplitMix::new(1 + l as u64);
        let fill: Vec<u32> = (0..64 * 1024).map(|_| rng.next_u64() as u32 | 1).collect();
        let mut filled =
            Stack::from_compressed(fill).map_err(|_| CodecError::Misuse("fill".into()))?;
        let before = filled.num_valid_bits() as i64;
        encode_lane(&tiles, params, false, lane(), &mut filled, &|_| {})?;
        let warm = filled.num_valid_bits() as i64 - before;
        total += empty.num_valid_bits() as i64 - warm;
    }
    Ok(total)
}

/// Encodes `images` and reports the actual sizes.
pub fn coded_bits(
    models: &ModelSet<'_>,
    images: &[Image],
    params: &CodingParams,
) -> Result<CodedStats> {
    let bytes = encode_images(models, images, params)?;
    let info = inspect(&bytes)?;
    let dims = images.iter().map(|i| i.data.len() as u64).sum();
    let geo: Vec<_> = images
        .iter()
        .zip(&info.header.images)
        .map(|(i, e)| {
            (
                i.width as usize,
                i.height as usize,
                i.color_channels(),
                e.model_channels,
            )
        })
        .collect();
    let planes: Vec<Vec<Plane>> = images
        .iter()
        .zip(&geo)
        .map(|(img, g)| to_planes(img, g.3))
        .collect();
    let startup = startup_bits(models, &planes, &geo, params)?;
    Ok(CodedStats {
        total_bits: bytes.len() as u64 * 8,
        header_bits: info.header_bytes as u64 * 8,
        payload_bits: info.payload_bytes as u64 * 8,
        dims,
        startup_bits: startup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane_jobs(gx: usize, gy: usize, planes: usize) -> Vec<Job> {
        let mut out = Vec::new();
        for plane in 0..planes {
            for ty in 0..gy {
                for tx in 0..gx {
                    out.push(Job {
                        image: 0,
                        plane,
                        model_channels: 3,
                        tx,
                        ty,
                        gx,
                        gy,
                    });
                }
            }
        }
        out
    }

    #[test]
    fn lane_of_matches_the_lanes() {
        for contiguous in [false, true] {
            for tiles in 1..40 {
                for lanes in 1..9 {
                    let split = LaneSplit {
                        tiles,
                        lanes,
                        contiguous,
                    };
                    let mut seen = vec![0; tiles];
                    for l in 0..lanes {
                        let list: Vec<usize> = split.lane(l).collect();
                        assert!(list.windows(2).all(|w| w[0] < w[1]));
                        for k in list {
                            assert_eq!(split.lane_of(k), l, "{tiles} tiles, {lanes} lanes");
                            seen[k] += 1;
                        }
                    }
                    assert!(seen.iter().all(|&n| n == 1));
                }
            }
        }
        let split = LaneSplit {
            tiles: 10,
            lanes: 3,
            contiguous: true,
        };
        let lanes: Vec<Vec<usize>> = (0..3).map(|l| split.lane(l).collect()).collect();
        assert_eq!(lanes, [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8, 9]]);
    }

    #[test]
    fn neighbours_stay_in_plane_and_lane() {
        // Two planes of 3 x 2 tiles: indices 0..6 and 6..12.
        let jobs = plane_jobs(3, 2, 2);
        let one = LaneSplit {
            tiles: 12,
            lanes: 1,
            contiguous: true,
        };
        assert_eq!(neighbours(&jobs, &one, 0), [Some(1), Some(3), Some(4)]);
        assert_eq!(neighbours(&jobs, &one, 2), [None, Some(5), None]);
        assert_eq!(neighbours(&jobs, &one, 4), [Some(5), None, None]);
        assert_eq!(neighbours(&jobs, &one, 5), [None, None, None]);
        assert_eq!(neighbours(&jobs, &one, 8), [None, Some(11), None]);
        // Lanes 0..4 and 4..8: tile 1's below and corner are in lane 1.
        let three = LaneSplit {
            tiles: 12,
            lanes: 3,
            contiguous: true,
        };
        assert_eq!(neighbours(&jobs, &three, 1), [Some(2), None, None]);
        assert_eq!(neighbours(&jobs, &three, 3), [None, None, None]);
        // Interleaved over 2 lanes: the right neighbour is never shared.
        let inter = LaneSplit {
            tiles: 12,
            lanes: 2,
            contiguous: false,
        };
        assert_eq!(neighbours(&jobs, &inter, 0), [None, None, Some(4)]);
    }
}
