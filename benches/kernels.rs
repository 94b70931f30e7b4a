//! criterion benches of the Gumbel-Softmax forward, forward + recomputing backward, and Gumbel-max
//! sampling at the project's standard shapes, with throughput in bytes (the fewest each must
//! move: 8, 20 and 4 B/element), through the buffer API (record + submit + wait, data on the
//! GPU) and the slice API (host to host, what an application sees).
//!
//!     cargo bench --bench kernels [-- FILTER]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gumbel_wgpu::{
    BackwardInput, BackwardJob, Gpu, GradSpace, LogitsView, Noise, RandomJob, RandomKind,
    SampleJob, SoftmaxJob, SoftmaxMode, Stream, Temperature,
};

const SHAPES: &[(u64, u64)] = &[
    (1_048_576, 16),
    (65_536, 256),
    (8_192, 1_024),
    (1_024, 32_768),
    (64, 131_072),
    (1, 131_072),
];

fn submit_and_wait(gpu: &Gpu, record: impl FnOnce(&mut wgpu::CommandEncoder)) {
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    record(&mut enc);
    gpu.queue().submit([enc.finish()]);
    gpu.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
}

fn kernels(c: &mut Criterion) {
    let gpu = Gpu::new().expect("benches need a wgpu adapter");
    let softmax = gpu.gumbel_softmax_kernels().unwrap();
    let backward = gpu.gumbel_softmax_backward_kernels().unwrap();
    let sampler = gpu.sampler().unwrap();
    let fill = gpu.random_fill().unwrap();
    let mut group = c.benchmark_group("kernels");
    group.sample_size(10);
    for &(rows, k) in SHAPES {
        let n = rows * k;
        let shape = format!("{rows}x{k}");
        let logits = gpu.storage_buffer("logits", n * 4).unwrap();
        let fill_job = RandomJob {
            kind: RandomKind::Gumbel,
            stream: Stream::new(5),
            out: logits.slice(..),
        };
        submit_and_wait(&gpu, |enc| fill.record(enc, &fill_job).unwrap());
        let y = gpu.storage_buffer("y", n * 4).unwrap();
        let dy = gpu.storage_buffer("dy", n * 4).unwrap();
        let dl = gpu.storage_buffer("dl", n * 4).unwrap();
        let idx = gpu.storage_buffer("idx", rows * 4).unwrap();
        let view = LogitsView::f32(logits.slice(..), rows, k);
        let job = SoftmaxJob {
            mode: SoftmaxMode::Soft,
            logits: view,
            tau: Temperature::Scalar(0.5),
            stream: Stream::new(1),
            out: y.slice(..),
            status: None,
        };
        let bwd = BackwardJob {
            input: BackwardInput::Logits {
                logits: view,
                stream: Stream::new(1),
                space: GradSpace::Probs,
            },
            grad: dy.slice(..),
            tau: Temperature::Scalar(0.5),
            out: dl.slice(..),
            status: None,
        };
        let sample = SampleJob {
            logits: view,
            top: 1,
            tau: Temperature::Scalar(1.0),
            stream: Stream::new(2),
            noise: Noise::Bits32,
            out: idx.slice(..),
        };
        group.throughput(Throughput::Bytes(8 * n));
        group.bench_function(BenchmarkId::new("forward buffer", &shape), |b| {
            b.iter(|| submit_and_wait(&gpu, |enc| softmax.record(enc, &job).unwrap()))
        });
        group.throughput(Throughput::Bytes(20 * n));
        group.bench_function(BenchmarkId::new("forward+backward buffer", &shape), |b| {
            b.iter(|| {
                submit_and_wait(&gpu, |enc| {
                    softmax.record(enc, &job).unwrap();
                    backward.record(enc, &bwd).unwrap();
                })
            })
        });
        group.throughput(Throughput::Bytes(4 * n));
        group.bench_function(BenchmarkId::new("sample buffer", &shape), |b| {
            b.iter(|| submit_and_wait(&gpu, |enc| sampler.record(enc, &sample).unwrap()))
        });
        if n <= 1 << 20 {
            // Slice level: upload, run, read back (host to host).
            let host: Vec<f32> = gpu.read_buffer(&logits, n as usize).unwrap();
            group.bench_function(BenchmarkId::new("forward slice", &shape), |b| {
                b.iter(|| {
                    gpu.gumbel_softmax(&host, k as usize, 0.5, Stream::new(1))
                        .unwrap()
                })
            });
            group.bench_function(BenchmarkId::new("sample slice", &shape), |b| {
                b.iter(|| gpu.sample(&host, k as usize, Stream::new(2)).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
