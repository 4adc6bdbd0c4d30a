//! Speed of the tile coder: encoding one 32x32 RGB tile and decoding tiles
//! of 1 and 2 lanes in lockstep, on the photo preset with random weights;
//! and an 8-block intra model with and without context tokens (the prefix
//! of the real neighbours). Throughput is in pixels.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tfc_codec::ans::Stack;
use tfc_codec::config::FlowConfig;
use tfc_codec::context::{coded_prefix, corner_after};
use tfc_codec::image::TileGeometry;
use tfc_codec::model_file::{random_model_bytes, SplitMix};
use tfc_codec::net::Prefix;
use tfc_codec::tile::TileCoder;
use tfc_codec::ModelFile;

fn photo_model() -> ModelFile {
    let cfg = FlowConfig::photo(3);
    ModelFile::from_bytes(&random_model_bytes(&cfg, 1, 0.02)).unwrap()
}

fn tile(seed: u64) -> Vec<u8> {
    let mut rng = SplitMix::new(seed);
    (0..32 * 32 * 3)
        .map(|i| ((i / 7) as u64 + (rng.next_u64() & 15)) as u8)
        .collect()
}

fn coder(c: &mut Criterion) {
    let model = photo_model();
    let coder = TileCoder::new(model.network(), 4);
    let mut g = c.benchmark_group("tile_32x32_rgb");
    g.throughput(Throughput::Elements(1024));
    let t = tile(1);
    g.bench_function("encode", |b| {
        b.iter(|| {
            let mut s = Stack::new();
            coder.encode(&mut s, &t, None).unwrap();
            s
        })
    });
    for lanes in [1usize, 2] {
        let stacks: Vec<Stack> = (0..lanes)
            .map(|l| {
                let mut s = Stack::new();
                coder.encode(&mut s, &tile(10 + l as u64), None).unwrap();
                coder.encode(&mut s, &tile(20 + l as u64), None).unwrap();
                s
            })
            .collect();
        g.throughput(Throughput::Elements(1024 * lanes as u64));
        g.bench_with_input(BenchmarkId::new("decode_lanes", lanes), &lanes, |b, _| {
            b.iter(|| {
                let mut owned = stacks.clone();
                let mut refs: Vec<&mut Stack> = owned.iter_mut().collect();
                coder.decode_batch(&mut refs, &[]).unwrap()
            })
        });
    }
    g.finish();
}

/// Encoding and decoding one tile (1 lane) with an 8-block intra model,
/// without and with context tokens.
fn context(c: &mut Criterion) {
    let mut g = c.benchmark_group("tile_32x32_rgb_8_blocks_intra");
    g.throughput(Throughput::Elements(1024));
    let geo = TileGeometry {
        tile: 32,
        patch: 4,
        channels: 3,
    };
    let nb: Vec<Vec<u8>> = (0..3).map(|i| geo.to_pixels(&tile(30 + i))).collect();
    for context in [false, true] {
        let cfg = FlowConfig {
            context,
            intra: true,
            blocks: 8,
            ..FlowConfig::photo(3)
        };
        let model = ModelFile::from_bytes(&random_model_bytes(&cfg, 1, 0.02)).unwrap();
        let coder = TileCoder::new(model.network(), 3);
        let values = coded_prefix(&cfg, 0, Some(&nb[0]), Some(&nb[1]), Some(&nb[2]));
        let prefix = context.then(|| Prefix {
            values: &values,
            corner: corner_after(0),
        });
        let t = tile(1);
        let name = if context { "context" } else { "plain" };
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                let mut s = Stack::new();
                coder.encode(&mut s, &t, prefix).unwrap();
                s
            })
        });
        let mut s = Stack::new();
        coder.encode(&mut s, &tile(2), prefix).unwrap();
        coder.encode(&mut s, &t, prefix).unwrap();
        let prefixes: Vec<Prefix<'_>> = prefix.into_iter().collect();
        g.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                let mut owned = s.clone();
                coder.decode_batch(&mut [&mut owned], &prefixes).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = coder, context
}
criterion_main!(benches);
