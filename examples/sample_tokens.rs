//! A decode loop for language-model token sampling with the whole logits-processing chain on
//! the GPU: per request a temperature, min-p, top-k, top-p and top-nσ, a logit bias, repetition /
//! frequency / presence penalties from a penalty state kept on the device (initialised from the
//! prompt, updated on the device from each step's tokens), a grammar-style token mask that
//! changes every step (written by the host into mapped buffers, xgrammar's packed layout), its
//! own stream (offset advanced by the vocabulary size each step, so a request's tokens do not
//! depend on the batch), processed log-probabilities, the top 5 and the token's rank; then one
//! speculative verification step. Nothing is read back until the end, where the tokens are
//! checked against the masks and the device's penalty state against the host's count.
//!
//!     cargo run --release --example sample_tokens -- [--quick]

use gumbel_wgpu::tokens::{mask_words, penalty_state, penalty_state_words};
use gumbel_wgpu::{
    Gpu, LogitsView, LogprobsMode, Noise, RandomJob, RandomKind, RowSampling, SpeculativeJob,
    Stream, TokenBias, TokenChain, TokenJob, TokenRowParams, cpu, stream_words,
};
use std::time::Instant;

const TOP_N: u32 = 5;

/// The "grammar" of step `s`: request `r` may use the tokens `j` with `(j + r + s) % 4 != 0`
/// and, every third step, only the first half of the vocabulary. (A real grammar follows the
/// sampled tokens; this one follows a schedule, so the loop needs no readback.)
fn allowed(r: u64, s: u64, j: u64, vocab: u64) -> bool {
    !(j + r + s).is_multiple_of(4) && (s % 3 != 2 || j < vocab / 2)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (batch, vocab, steps) = if quick {
        (4u64, 32_000u64, 4u64)
    } else {
        (64, 131_072, 8)
    };
    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.describe());
    println!(
        "batch {batch} x vocabulary {vocab}, {steps} steps: mask, bias, penalties, top-nσ, \
         filters, processed top-{TOP_N} log-probabilities and ranks"
    );
    let (rows, k) = (batch as usize, vocab as usize);

    // Each request's settings; its stream is seeded by its id, not its batch slot.
    let settings: Vec<RowSampling> = (0..rows)
        .map(|r| RowSampling {
            temperature: [0.0, 0.7, 1.0][r % 3],
            top_k: [0, 50, 0, 40][r % 4],
            top_p: [1.0, 0.9, 0.95][r % 3],
            min_p: [0.0, 0.05][r % 2],
            repetition_penalty: [1.0, 1.2][r % 2],
            frequency_penalty: [0.0, 0.5, 0.2][r % 3],
            presence_penalty: [0.3, 0.0][r % 2],
            top_n_sigma: [0.0, 1.5, 0.0, 2.0][r % 4],
        })
        .collect();
    // Every step's row parameters in one buffer, written once: step s binds its slice, whose
    // streams sit s * vocab words further on. (An engine would advance them on the GPU.)
    let all_params: Vec<TokenRowParams> = (0..steps)
        .flat_map(|s| {
            settings.iter().enumerate().map(move |(r, &p)| {
                TokenRowParams::new(p, Stream::new(1000 + r as u64).advance(s * vocab))
            })
        })
        .collect();
    let row_bytes = TokenRowParams::BYTES;
    let params = gpu.upload("row params", &all_params)?;
    // The logit bias: request r pushes tokens 10 r .. 10 r + 3 up and token 0 down.
    let mut starts = Vec::new();
    let mut entries = Vec::new();
    for r in 0..rows as u32 {
        starts.push(entries.len() as u32 / 2);
        for t in 0..3 {
            entries.extend([(10 * r + t) % vocab as u32, 2.5f32.to_bits()]);
        }
        entries.extend([0, (-5.0f32).to_bits()]);
    }
    starts.push(entries.len() as u32 / 2);
    let (starts, entries) = (
        gpu.upload("starts", &starts)?,
        gpu.upload("entries", &entries)?,
    );
    // The penalty state from each request's prompt (kept on the device from here on).
    let prompts: Vec<Vec<u32>> = (0..rows)
        .map(|r| (0..64).map(|i| ((r * 97 + i * 31) % k) as u32).collect())
        .collect();
    let mut state_words = Vec::new();
    for prompt in &prompts {
        state_words.extend(penalty_state(k, prompt, &[])?);
    }
    let state = gpu.upload("penalty state", &state_words)?;
    // One mapped staging buffer per step: the host writes each step's mask straight into it.
    let mw = mask_words(k);
    let mask_bytes = (rows * mw * 4) as u64;
    let mut staging = Vec::new();
    for s in 0..steps {
        let b = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("mask staging"),
            size: mask_bytes,
            usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
        let mut words = vec![0u32; rows * mw];
        for r in 0..batch {
            for j in 0..vocab {
                if allowed(r, s, j, vocab) {
                    words[r as usize * mw + j as usize / 32] |= 1 << (j % 32);
                }
            }
        }
        // Mapped memory is write-only: the words go in with one copy.
        b.get_mapped_range_mut(..)?
            .copy_from_slice(bytemuck::cast_slice(&words));
        b.unmap();
        staging.push(b);
    }
    let mask = gpu.storage_buffer("mask", mask_bytes)?;
    let logits = gpu.storage_buffer("logits", batch * vocab * 4)?;
    let tokens = gpu.storage_buffer("tokens", steps * batch * 4)?;
    let logprobs = gpu.storage_buffer("logprobs", steps * batch * 4)?;
    let ranks = gpu.storage_buffer("ranks", steps * batch * 4)?;
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
            enc.copy_buffer_to_buffer(&staging[s as usize], 0, &mask, 0, Some(mask_bytes));
            let (b, w) = (s * batch * 4, s * batch * u64::from(TOP_N) * 8);
            let out = tokens.slice(b..b + batch * 4);
            sampler.record(
                enc,
                &TokenJob {
                    logprobs: Some(logprobs.slice(b..b + batch * 4)),
                    top_n: TOP_N,
                    top: Some(top.slice(w..w + batch * u64::from(TOP_N) * 8)),
                    ranks: Some(ranks.slice(b..b + batch * 4)),
                    logprobs_mode: LogprobsMode::Processed,
                    chain: TokenChain {
                        allowed: Some(mask.slice(..)),
                        bias: Some(TokenBias {
                            starts: starts.slice(..),
                            entries: entries.slice(..),
                        }),
                        penalty_state: Some(state.slice(..)),
                    },
                    noise: Noise::Bits32,
                    ..TokenJob::new(
                        LogitsView::f32(logits.slice(..), batch, vocab),
                        params.slice(s * batch * row_bytes..(s + 1) * batch * row_bytes),
                        out,
                    )
                },
            )?;
            // This step's tokens count toward the next step's penalties, on the device.
            sampler.record_penalty_update(enc, out, state.slice(..), batch, vocab)?;
        }
        Ok(())
    })?;
    println!("{steps} steps recorded and run in {:.2?}", start.elapsed());

    let n = (steps * batch) as usize;
    let tokens: Vec<u32> = gpu.read_buffer(&tokens, n)?;
    let logprobs: Vec<f32> = gpu.read_buffer(&logprobs, n)?;
    let ranks: Vec<u32> = gpu.read_buffer(&ranks, n)?;
    for (r, setting) in settings.iter().enumerate().take(4) {
        let seq: Vec<String> = (0..steps as usize)
            .map(|s| {
                let i = s * rows + r;
                format!("{} ({:.2}, rank {})", tokens[i], logprobs[i], ranks[i])
            })
            .collect();
        println!("request {r} {setting:?}:\n  {}", seq.join(", "));
    }
    // The checks: every token allowed by its step's mask, and the device's penalty state equal
    // to the host's count of the prompt and the tokens.
    for (i, &t) in tokens.iter().enumerate() {
        let (s, r) = ((i / rows) as u64, (i % rows) as u64);
        assert!(
            allowed(r, s, u64::from(t), vocab),
            "step {s} request {r}: token {t} masked"
        );
    }
    let device_state: Vec<u32> = gpu.read_buffer(&state, rows * penalty_state_words(k))?;
    let mut host_state = Vec::new();
    for (r, prompt) in prompts.iter().enumerate() {
        let output: Vec<u32> = (0..steps as usize).map(|s| tokens[s * rows + r]).collect();
        host_state.extend(penalty_state(k, prompt, &output)?);
    }
    assert_eq!(device_state, host_state, "penalty state");
    println!("every token allowed by its step's mask; the device's penalty counts match");

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
