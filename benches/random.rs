//! criterion benches of the random fills: the slice API (host to host, what an app sees) and the
//! buffer API (record + submit + wait, data stays on the GPU).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gumbel_wgpu::{Gpu, RandomJob, RandomKind, Stream};

fn fills(c: &mut Criterion) {
    let gpu = Gpu::new().expect("benches need a wgpu adapter");
    let mut group = c.benchmark_group("random");
    group.sample_size(20);
    for &n in &[1usize << 16, 1 << 22] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("gumbel slice", n), &n, |b, &n| {
            b.iter(|| gpu.gumbel(Stream::new(1), n).unwrap())
        });
        let out = gpu.storage_buffer("out", n as u64 * 4).unwrap();
        let fill = gpu.random_fill().unwrap();
        group.bench_with_input(BenchmarkId::new("gumbel buffer", n), &n, |b, _| {
            b.iter(|| {
                let mut enc = gpu.device().create_command_encoder(&Default::default());
                let job = RandomJob {
                    kind: RandomKind::Gumbel,
                    stream: Stream::new(1),
                    out: out.slice(..),
                };
                fill.record(&mut enc, &job).unwrap();
                gpu.queue().submit([enc.finish()]);
                gpu.device()
                    .poll(wgpu::PollType::wait_indefinitely())
                    .unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fills);
criterion_main!(benches);
