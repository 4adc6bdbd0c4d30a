//! Speed of the deterministic coding network: the matmul kernel, the
//! encoder's all-tokens pass and the decoder's KV-cached token steps, on the
//! photo preset (width 128, 4 blocks of 2 layers, patch 4, tile 32).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tfc_codec::config::FlowConfig;
use tfc_codec::model_file::{random_model_bytes, SplitMix};
use tfc_codec::net::{KvCache, Linear};
use tfc_codec::ModelFile;

fn photo_config() -> FlowConfig {
    FlowConfig::photo(3)
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix::new(seed);
    (0..n).map(|_| rng.symmetric()).collect()
}

fn matmul(c: &mut Criterion) {
    let (k, n) = (128, 512);
    let lin = Linear::new(&random(k * n, 1), &random(n, 2), n, k);
    let mut g = c.benchmark_group("matmul_128x512");
    for rows in [1usize, 2, 4, 63] {
        let x = random(rows * k, 3);
        let mut out = vec![0f32; rows * n];
        g.throughput(Throughput::Elements((rows * k * n) as u64));
        g.bench_with_input(BenchmarkId::from_parameter(rows), &rows, |b, _| {
            b.iter(|| lin.forward(&x, &mut out))
        });
    }
    g.finish();
}

fn blocks(c: &mut Criterion) {
    let cfg = photo_config();
    let model = ModelFile::from_bytes(&random_model_bytes(&cfg, 1, 0.02)).unwrap();
    let net = model.network();
    let (n, d) = (cfg.tokens(), cfg.token_dim());
    let mut g = c.benchmark_group("block");
    g.throughput(Throughput::Elements((n - 1) as u64));
    let x = random((n - 1) * d, 4);
    g.bench_function("all_tokens_pass", |b| b.iter(|| net.block_forward(0, &x)));
    for lanes in [1usize, 2, 4] {
        let x = random(n * d * lanes, 5);
        g.throughput(Throughput::Elements(((n - 1) * lanes) as u64));
        g.bench_with_input(
            BenchmarkId::new("token_steps", lanes),
            &lanes,
            |b, &lanes| {
                b.iter(|| {
                    let mut caches = vec![KvCache::new(cfg.layers); lanes];
                    for i in 0..n - 1 {
                        let row: Vec<f32> = (0..lanes)
                            .flat_map(|l| x[(l * n + i) * d..(l * n + i + 1) * d].to_vec())
                            .collect();
                        net.block_step(0, i, &row, &mut caches);
                    }
                })
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = matmul, blocks
}
criterion_main!(benches);
