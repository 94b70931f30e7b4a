//! One `Gpu` shared by threads, each running long jobs, on every backend. On OpenGL, wgpu-hal
//! guards its one context with a lock that panics a thread after 6 seconds of waiting ("Could
//! not lock adapter context"), and a submit-and-wait holds it for the whole job: before this
//! crate serialised its GL work (`DeviceLock`), four threads running the forward below panicked
//! in three of them on llvmpipe. Every thread must get its own, correct result.

mod common;
use common::*;
use gumbel_wgpu::{LogitsView, SoftmaxJob, SoftmaxMode, Stream, Temperature, cpu};

/// The job from the report: a 16384 x 4096 f32 forward per thread (256 MiB in, shared, and
/// 256 MiB out per thread).
const ROWS: usize = 16384;
const K: usize = 4096;
const THREADS: u64 = 4;

#[test]
fn four_threads_running_long_forwards_on_one_gpu_all_get_their_results() {
    let gpu = gpu();
    // Smooth logits, uploaded once and read by every thread (read-only bindings may be shared).
    let logits: Vec<f32> = (0..ROWS * K)
        .map(|i| ((i % K) as f32 * 0.001).sin() * 3.0)
        .collect();
    let logits_buf = gpu.upload("logits", &logits).unwrap();
    let kernels = gpu.gumbel_softmax_kernels().unwrap();
    let results: Vec<(Stream, Vec<f32>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (logits_buf, kernels) = (&logits_buf, &kernels);
                s.spawn(move || {
                    let stream = Stream::new(1000 + t);
                    let out = gpu.storage_buffer("y", (ROWS * K * 4) as u64).unwrap();
                    let job = SoftmaxJob {
                        mode: SoftmaxMode::Soft,
                        logits: LogitsView::f32(logits_buf.slice(..), ROWS as u64, K as u64),
                        tau: Temperature::Scalar(0.5),
                        stream,
                        out: out.slice(..),
                        status: None,
                    };
                    // Two forwards in one submission: one wait long enough (over 6 s on
                    // llvmpipe) that, without the crate's lock, the other threads' calls time out
                    // on wgpu-hal's GL context lock and panic (measured: they did).
                    gpu.submit(|enc| {
                        kernels.record(enc, &job)?;
                        kernels.record(enc, &job)
                    })
                    .unwrap_or_else(|e| panic!("thread {t}: {e}"));
                    let y = gpu.read_buffer::<f32>(&out, ROWS * K);
                    (stream, y.unwrap_or_else(|e| panic!("thread {t}: {e}")))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a thread panicked"))
            .collect()
    });
    // Each result is its own stream's: spot rows against the f64 reference.
    for (stream, y) in &results {
        assert_eq!(y.len(), ROWS * K);
        for r in [0, 1, ROWS / 2, ROWS - 1] {
            let row = &logits[r * K..(r + 1) * K];
            let want = cpu::gumbel_softmax(row, K, 0.5, stream.advance((r * K) as u64));
            let got = &y[r * K..(r + 1) * K];
            let worst = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (f64::from(*g) - w).abs())
                .fold(0.0, f64::max);
            assert!(
                worst < 1e-5,
                "{stream:?} row {r}: max |y - y_ref| = {worst}"
            );
        }
    }
    assert!(
        results[0].1 != results[1].1,
        "threads must not share one result"
    );
}

#[test]
fn threads_mixing_buffer_level_records_and_blocking_calls_do_not_panic() {
    // Short jobs, many of them, interleaved from several threads: recording into one's own
    // encoder and submitting through `Gpu::submit` while others read back.
    let gpu = gpu();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                for i in 0..20u64 {
                    let stream = Stream::new(t * 100 + i);
                    let words = gpu.random_u32(stream, 4097).unwrap();
                    assert_eq!(words, cpu::random_u32(stream, 4097));
                    let l = vec![0.5f32; 3 * 257];
                    let idx = gpu.sample(&l, 257, stream).unwrap();
                    assert!(idx.iter().all(|&j| j < 257));
                }
            });
        }
    });
}
