//! Language-model style token sampling: a batch of rows over a large vocabulary, a temperature
//! per row, one token per row (Gumbel-max) and the top 5 without replacement (Gumbel-top-k).
//! The logits stay on the GPU across steps; each step advances the stream offset past the
//! elements it consumed, so every step draws fresh noise and a rerun draws the same tokens.
//!
//!     cargo run --release --example sample_tokens -- [--quick]

use gumbel_wgpu::{Gpu, LogitsView, RandomJob, RandomKind, SampleJob, Stream, Temperature};
use std::time::Instant;

const TOP: u32 = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (batch, vocab, steps) = if quick {
        (8u64, 32_768u64, 4)
    } else {
        (64, 131_072, 8)
    };
    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.describe());
    println!("batch {batch} x vocabulary {vocab}, {steps} steps, top-{TOP}");

    // Stand-in for a model's output, made on the GPU: peaked logits (1.5 x Gumbel noise).
    let n = batch * vocab;
    let logits = gpu.storage_buffer("logits", n * 4)?;
    let fill = gpu.random_fill()?;
    gpu.submit(|enc| {
        let job = RandomJob {
            kind: RandomKind::Gumbel,
            stream: Stream::new(0x10c175),
            out: logits.slice(..),
        };
        fill.record(enc, &job)
    })?;
    let scaled: Vec<f32> = gpu
        .read_buffer::<f32>(&logits, n as usize)?
        .iter()
        .map(|x| 1.5 * x)
        .collect();
    gpu.queue()
        .write_buffer(&logits, 0, bytemuck::cast_slice(&scaled));

    // One temperature per sequence: greedy-ish to creative.
    let temps: Vec<f32> = (0..batch)
        .map(|r| 0.25 + 1.75 * r as f32 / (batch - 1) as f32)
        .collect();
    let temps_buf = gpu.upload("temperatures", &temps)?;
    let tokens = gpu.storage_buffer("tokens", batch * 4)?;
    let top = gpu.storage_buffer("top-k", batch * u64::from(TOP) * 4)?;
    let sampler = gpu.sampler()?;
    // One job shape for every step: the logits and temperatures stay on the GPU.
    let job = |top, stream, out| SampleJob {
        logits: LogitsView::f32(logits.slice(..), batch, vocab),
        top,
        tau: Temperature::PerRow(temps_buf.slice(..)),
        stream,
        out,
    };

    let mut stream = Stream::new(7);
    for step in 0..steps {
        let t = Instant::now();
        gpu.submit(|enc| {
            sampler.record(enc, &job(1, stream, tokens.slice(..)))?;
            sampler.record(enc, &job(TOP, stream, top.slice(..)))
        })?;
        let gpu_ms = t.elapsed().as_secs_f64() * 1e3;
        let ids: Vec<u32> = gpu.read_buffer(&tokens, batch as usize)?;
        let tops: Vec<u32> = gpu.read_buffer(&top, (batch * u64::from(TOP)) as usize)?;
        let total_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "step {step}: submit+wait {gpu_ms:.2} ms, with readback {total_ms:.2} ms; tokens of rows 0..4 {:?}; row 0 top-{TOP} {:?}",
            &ids[..4.min(ids.len())],
            &tops[..TOP as usize]
        );
        // The top-k's first index is the plain draw: same stream, same noise.
        for r in 0..batch as usize {
            assert_eq!(ids[r], tops[r * TOP as usize], "row {r}");
        }
        stream = stream.advance(n);
    }
    // Low temperature rows concentrate on their argmax, high ones spread: show row 0 vs the last.
    let draws = 64;
    let mut s = Stream::new(99);
    let mut distinct = [
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    ];
    for _ in 0..draws {
        gpu.submit(|enc| sampler.record(enc, &job(1, s, tokens.slice(..))))?;
        let ids: Vec<u32> = gpu.read_buffer(&tokens, batch as usize)?;
        distinct[0].insert(ids[0]);
        distinct[1].insert(ids[batch as usize - 1]);
        s = s.advance(n);
    }
    println!(
        "{draws} draws: row 0 (t = {:.2}) gave {} distinct tokens, row {} (t = {:.2}) gave {}",
        temps[0],
        distinct[0].len(),
        batch - 1,
        temps[batch as usize - 1],
        distinct[1].len()
    );
    Ok(())
}
