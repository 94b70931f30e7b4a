//! A decode loop for language-model token sampling, all on the GPU between steps: per request a
//! temperature, min-p, top-k and top-p, its own stream (offset advanced by the vocabulary size
//! each step, so a request's tokens do not depend on the batch), the token's log-probability and
//! the top 5; then one speculative verification step. Nothing is read back until the end.
//!
//!     cargo run --release --example sample_tokens -- [--quick]

use gumbel_wgpu::{
    Gpu, LogitsView, Noise, RandomJob, RandomKind, RowSampling, SpeculativeJob, Stream, TokenJob,
    TokenRowParams, cpu, stream_words,
};
use std::time::Instant;

const TOP_N: u32 = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (batch, vocab, steps) = if quick {
        (4u64, 32_000u64, 4u64)
    } else {
        (64, 131_072, 8)
    };
    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.describe());
    println!("batch {batch} x vocabulary {vocab}, {steps} steps, top-{TOP_N} log-probabilities");

    // Each request's settings; its stream is seeded by its id, not its batch slot.
    let settings: Vec<RowSampling> = (0..batch)
        .map(|r| RowSampling {
            temperature: [0.0, 0.7, 1.0][r as usize % 3],
            top_k: [0, 50, 0, 40][r as usize % 4],
            top_p: [1.0, 0.9, 0.95][r as usize % 3],
            min_p: [0.0, 0.05][r as usize % 2],
        })
        .collect();
    // Every step's row parameters in one buffer, written once: step s binds its slice, whose
    // streams sit s * vocab words further on. (A real engine would update them on the GPU.)
    let all_params: Vec<TokenRowParams> = (0..steps)
        .flat_map(|s| {
            settings.iter().enumerate().map(move |(r, &p)| {
                TokenRowParams::new(p, Stream::new(1000 + r as u64).advance(s * vocab))
            })
        })
        .collect();
    let params = gpu.upload("row params", &all_params)?;
    let logits = gpu.storage_buffer("logits", batch * vocab * 4)?;
    let tokens = gpu.storage_buffer("tokens", steps * batch * 4)?;
    let logprobs = gpu.storage_buffer("logprobs", steps * batch * 4)?;
    let top = gpu.storage_buffer("top", steps * batch * u64::from(TOP_N) * 8)?;
    let fill = gpu.random_fill()?;
    let sampler = gpu.token_sampler()?;

    let start = Instant::now();
    gpu.submit(|enc| {
        for s in 0..steps {
            // Stand-in for the model's forward pass: fresh logits on the GPU.
            fill.record(
                enc,
                &RandomJob {
                    kind: RandomKind::Gumbel,
                    stream: Stream::new(7).advance(s * batch * vocab),
                    out: logits.slice(..),
                },
            )?;
            let (b, w) = (s * batch * 4, s * batch * u64::from(TOP_N) * 8);
            sampler.record(
                enc,
                &TokenJob {
                    logits: LogitsView::f32(logits.slice(..), batch, vocab),
                    row_params: params.slice(s * batch * 32..(s + 1) * batch * 32),
                    out: tokens.slice(b..b + batch * 4),
                    logprobs: Some(logprobs.slice(b..b + batch * 4)),
                    top_n: TOP_N,
                    top: Some(top.slice(w..w + batch * u64::from(TOP_N) * 8)),
                    status: None,
                    noise: Noise::Bits32,
                },
            )?;
        }
        Ok(())
    })?;
    println!("{steps} steps recorded and run in {:.2?}", start.elapsed());

    let tokens: Vec<u32> = gpu.read_buffer(&tokens, (steps * batch) as usize)?;
    let logprobs: Vec<f32> = gpu.read_buffer(&logprobs, (steps * batch) as usize)?;
    for (r, setting) in settings.iter().enumerate().take(4) {
        let seq: Vec<String> = (0..steps as usize)
            .map(|s| {
                let i = s * batch as usize + r;
                format!("{} ({:.2})", tokens[i], logprobs[i])
            })
            .collect();
        println!("request {r} {setting:?}: {}", seq.join(", "));
    }

    // One speculative step: 3 drafts per request over a small vocabulary, verified on the GPU.
    let (k, n) = (64usize, 3usize);
    let law = |seed: u64| -> Vec<f32> {
        let w: Vec<f64> = cpu::uniform(Stream::new(seed), k)
            .iter()
            .map(|&u| f64::from(u).powi(4))
            .collect();
        let s: f64 = w.iter().sum();
        w.iter().map(|x| (x / s) as f32).collect()
    };
    let rows = batch as usize;
    let q: Vec<f32> = (0..rows * n).flat_map(|i| law(i as u64)).collect();
    // The target model mostly agrees with the draft model: p_i = 0.8 q_i + 0.2 (another law).
    let p: Vec<f32> = (0..rows * (n + 1))
        .flat_map(|c| {
            let (r, i) = (c / (n + 1), c % (n + 1));
            let other = law(1 << 20 | c as u64);
            if i == n {
                return other;
            }
            let q = &q[(r * n + i) * k..][..k];
            (0..k).map(|j| 0.8 * q[j] + 0.2 * other[j]).collect()
        })
        .collect();
    let drafts: Vec<u32> = q
        .chunks(k)
        .map(|d| (0..k).max_by(|&a, &b| d[a].total_cmp(&d[b])).unwrap() as u32)
        .collect();
    let streams: Vec<u32> = (0..rows)
        .flat_map(|r| stream_words(Stream::new(1000 + r as u64).advance(steps * vocab)))
        .collect();
    let (db, qb, pb, sb) = (
        gpu.upload("drafts", &drafts)?,
        gpu.upload("q", &q)?,
        gpu.upload("p", &p)?,
        gpu.upload("streams", &streams)?,
    );
    let accepted = gpu.storage_buffer("accepted", rows as u64 * 4)?;
    let out = gpu.storage_buffer("verified", (rows * (n + 1)) as u64 * 4)?;
    let verifier = gpu.speculative_verifier()?;
    gpu.submit(|enc| {
        verifier.record(
            enc,
            &SpeculativeJob {
                rows: rows as u64,
                n: n as u64,
                k: k as u64,
                draft_tokens: db.slice(..),
                draft_probs: qb.slice(..),
                target_probs: pb.slice(..),
                streams: sb.slice(..),
                accepted: accepted.slice(..),
                tokens: out.slice(..),
                noise: Noise::Bits32,
            },
        )
    })?;
    let accepted: Vec<u32> = gpu.read_buffer(&accepted, rows)?;
    let out: Vec<u32> = gpu.read_buffer(&out, rows * (n + 1))?;
    let mean = accepted.iter().sum::<u32>() as f64 / rows as f64;
    println!("speculative step: {mean:.2} of {n} drafts accepted on average");
    println!(
        "request 0: accepted {}, tokens {:?}",
        accepted[0],
        &out[..n + 1]
    );
    Ok(())
}
