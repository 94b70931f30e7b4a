//! The host's cost of recording one job of a kernel family: what a decode loop pays per step on
//! the CPU before the GPU does anything. Records `N` jobs of one family (after a warm-up that
//! builds the kernels and fills any cache), each into its own encoder, never submitted.
//!
//! `measured_record` holds only the `record` call, so callgrind counts it alone:
//!
//! ```text
//! cargo build --release --example record_cost
//! valgrind --tool=callgrind --toggle-collect='record_cost::measured_record' \
//!     target/release/examples/record_cost tokens 200
//! ```
//!
//! With `RECORD_COST_STEP` set, each step instead runs through `measured_step`: encoder, record,
//! finish and drop, the host's whole cost of a step short of the submit (toggle on
//! `record_cost::measured_step`; its count includes the 20 warm-up steps).
//!
//! (`benches/record_cost.sh` runs every family and prints instructions per record and per
//! step.) Without
//! valgrind it prints the wall-clock time per record, which is noisy on a loaded machine.
//!
//! Families: random, forward, backward, density, sample, tokens, tokens-split (the split-row path forced), speculative. Shapes are one
//! decode step: 1 x 131072 (speculative: 1 row, 4 drafts, k = 32000). Families whose stream is
//! a job field (random, forward, sample) get a stream advanced by one step per record, as a
//! decode loop does; tokens and speculative keep their streams on the device.

use gumbel_wgpu::{
    BackwardInput, BackwardJob, DensityJob, Error, Gpu, LogitsView, Noise, RandomJob, RandomKind,
    RowSampling, SampleJob, SoftmaxJob, SoftmaxMode, SpeculativeJob, Stream, Temperature,
    TokenFilters, TokenJob, TokenRowParams, TokenStrategy, stream_words,
};
use std::time::Instant;

const K: u64 = 131_072;
const SPEC_K: u64 = 32_000;
const DRAFTS: u64 = 4;

/// The one call callgrind counts (`--toggle-collect`).
#[inline(never)]
fn measured_record(
    record: &mut dyn FnMut(&mut wgpu::CommandEncoder, u64) -> Result<(), Error>,
    encoder: &mut wgpu::CommandEncoder,
    step: u64,
) -> Result<(), Error> {
    record(std::hint::black_box(encoder), step)
}

/// A whole step's host side without the submit: a new encoder, the record, `finish` and the
/// drop of the command buffer (where wgpu frees what the step's commands held: bind groups and
/// uniform buffers that are not cached).
#[inline(never)]
fn measured_step(
    gpu: &Gpu,
    record: &mut dyn FnMut(&mut wgpu::CommandEncoder, u64) -> Result<(), Error>,
    step: u64,
) -> Result<(), Error> {
    let mut enc = gpu
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    record(std::hint::black_box(&mut enc), step)?;
    drop(enc.finish());
    Ok(())
}

fn run(
    gpu: &Gpu,
    n: u64,
    record: &mut dyn FnMut(&mut wgpu::CommandEncoder, u64) -> Result<(), Error>,
) -> Result<f64, Error> {
    if std::env::var_os("RECORD_COST_STEP").is_some() {
        for step in 0..20 + n {
            measured_step(gpu, record, step)?;
        }
        return Ok(f64::NAN);
    }
    let encoder = || {
        gpu.device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default())
    };
    // Warm-up outside measured_record: builds the kernels' pipelines and fills any cache.
    for step in 0..20 {
        let mut enc = encoder();
        record(&mut enc, step)?;
        drop(enc.finish());
    }
    let mut total = 0.0;
    for step in 20..20 + n {
        let mut enc = encoder();
        let t = Instant::now();
        measured_record(record, &mut enc, step)?;
        total += t.elapsed().as_secs_f64();
        drop(enc.finish());
    }
    Ok(total / n as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let family = args.next().unwrap_or_else(|| "tokens".into());
    let n: u64 = args.next().map_or(Ok(200), |s| s.parse())?;
    let gpu = Gpu::new()?;
    let storage = |label: &str, bytes: u64| gpu.storage_buffer(label, bytes);
    let logits = storage("logits", K * 4)?;
    let out = storage("out", K * 4)?;
    let view = LogitsView::f32(logits.slice(..), 1, K);
    let stream = |step: u64| Stream::new(7).advance(step * K);
    let seconds = match family.as_str() {
        "random" => {
            let fill = gpu.random_fill()?;
            run(&gpu, n, &mut |enc, step| {
                fill.record(
                    enc,
                    &RandomJob {
                        kind: RandomKind::Gumbel,
                        stream: stream(step),
                        out: out.slice(..),
                    },
                )
            })?
        }
        "forward" => {
            let fwd = gpu.gumbel_softmax_kernels()?;
            run(&gpu, n, &mut |enc, step| {
                fwd.record(
                    enc,
                    &SoftmaxJob {
                        mode: SoftmaxMode::Soft,
                        logits: view,
                        tau: Temperature::Scalar(0.5),
                        stream: stream(step),
                        out: out.slice(..),
                        status: None,
                    },
                )
            })?
        }
        "backward" => {
            let bwd = gpu.gumbel_softmax_backward_kernels()?;
            let dy = storage("dy", K * 4)?;
            run(&gpu, n, &mut |enc, _| {
                bwd.record(
                    enc,
                    &BackwardJob {
                        input: BackwardInput::Probs(view),
                        grad: dy.slice(..),
                        tau: Temperature::Scalar(0.5),
                        out: out.slice(..),
                        status: None,
                    },
                )
            })?
        }
        "density" => {
            let density = gpu.concrete_density_kernels()?;
            let log_y = storage("log_y", K * 4)?;
            run(&gpu, n, &mut |enc, _| {
                density.record(
                    enc,
                    &DensityJob {
                        logits: view,
                        log_y: log_y.slice(..),
                        tau: Temperature::Scalar(0.5),
                        simplex: false,
                        out: out.slice(..4),
                    },
                )
            })?
        }
        "sample" => {
            let sampler = gpu.sampler()?;
            run(&gpu, n, &mut |enc, step| {
                sampler.record(
                    enc,
                    &SampleJob {
                        logits: view,
                        top: 1,
                        tau: Temperature::Scalar(1.0),
                        stream: stream(step),
                        noise: Noise::Bits32,
                        out: out.slice(..4),
                    },
                )
            })?
        }
        "tokens" | "tokens-split" => {
            let sampler = gpu.token_sampler()?;
            let setting = RowSampling {
                top_k: 50,
                top_p: 0.9,
                ..RowSampling::new(0.8)
            };
            let rows = [TokenRowParams::new(setting, Stream::new(9))];
            let params = gpu.upload("row params", &rows)?;
            let lp = storage("logprobs", 4)?;
            // "tokens": the path Auto takes here (one workgroup per row on a CPU adapter);
            // "tokens-split": the split path a GPU takes for this shape (one dispatch per pass of
            // the filters named, in one compute pass).
            let strategy = if family == "tokens-split" {
                TokenStrategy::SplitRow { chunks: 0 }
            } else {
                TokenStrategy::Auto
            };
            run(&gpu, n, &mut |enc, _| {
                sampler.record(
                    enc,
                    &TokenJob {
                        logprobs: Some(lp.slice(..)),
                        filters: TokenFilters::of(&rows, K),
                        strategy,
                        ..TokenJob::new(view, params.slice(..), out.slice(..4))
                    },
                )
            })?
        }
        "speculative" => {
            let verifier = gpu.speculative_verifier()?;
            let drafts = gpu.upload("drafts", &[1u32, 2, 3, 4])?;
            let q = storage("q", DRAFTS * SPEC_K * 4)?;
            let p = storage("p", (DRAFTS + 1) * SPEC_K * 4)?;
            let streams = gpu.upload("streams", &stream_words(Stream::new(5)))?;
            let accepted = storage("accepted", 4)?;
            run(&gpu, n, &mut |enc, _| {
                verifier.record(
                    enc,
                    &SpeculativeJob {
                        rows: 1,
                        n: DRAFTS,
                        k: SPEC_K,
                        draft_tokens: drafts.slice(..),
                        draft_probs: q.slice(..),
                        target_probs: p.slice(..),
                        streams: streams.slice(..),
                        accepted: accepted.slice(..),
                        tokens: out.slice(..(DRAFTS + 1) * 4),
                        noise: Noise::Bits32,
                    },
                )
            })?
        }
        other => {
            return Err(format!(
                "unknown family {other:?}: random, forward, backward, density, sample, tokens, tokens-split, \
                 speculative"
            )
            .into());
        }
    };
    println!(
        "{family}: {n} records, {:.1} us each (wall clock, {})",
        seconds * 1e6,
        gpu.describe()
    );
    Ok(())
}
