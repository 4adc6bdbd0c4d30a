//! Training step and forward pass of the fmnist-tiny model at batch 64.
//! Thread count follows `RAYON_NUM_THREADS`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fmnist-tiny");
    g.sample_size(10);
    g.throughput(Throughput::Elements(64));
    let mut tr = tfc_benches::trainer(64);
    g.bench_function("train_step_b64", |b| {
        b.iter(|| tr.train_step().expect("step"))
    });
    let model = tfc_benches::fmnist_tiny();
    let x = tfc_benches::batch(64);
    g.bench_function("forward_b64", |b| {
        b.iter(|| model.flow.nll_per_dim(&x, None, None).expect("forward"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
