//! Speed of the tile coder: encoding one 32x32 RGB tile and decoding tiles
//! of 1 and 2 lanes in lockstep, on the photo preset with random weights.
//! Throughput is in pixels.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tfc_codec::ans::Stack;
use tfc_codec::config::FlowConfig;
use tfc_codec::model_file::{random_model_bytes, SplitMix};
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
            coder.encode(&mut s, &t).unwrap();
            s
        })
    });
    for lanes in [1usize, 2] {
        let stacks: Vec<Stack> = (0..lanes)
            .map(|l| {
                let mut s = Stack::new();
                coder.encode(&mut s, &tile(10 + l as u64)).unwrap();
                coder.encode(&mut s, &tile(20 + l as u64)).unwrap();
                s
            })
            .collect();
        g.throughput(Throughput::Elements(1024 * lanes as u64));
        g.bench_with_input(BenchmarkId::new("decode_lanes", lanes), &lanes, |b, _| {
            b.iter(|| {
                let mut owned = stacks.clone();
                let mut refs: Vec<&mut Stack> = owned.iter_mut().collect();
                coder.decode_batch(&mut refs).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = coder
}
criterion_main!(benches);
