//! The library in a browser: wasm32 + WebGPU in headless Chromium (SwiftShader where there is no
//! GPU), through the async core. Philox words, the forward and sampling against the CPU
//! reference; bad input is `Err`; the blocking API is a clear `Err`, never a hung page.
//!
//!     bash .ci/web        # installs Chromium, the wasm32 target and wasm-bindgen-cli; runs this
#![cfg(target_arch = "wasm32")]

use gumbel_wgpu::wgpu;
use gumbel_wgpu::{
    Error, Gpu, LogitsView, Noise, RandomJob, RandomKind, SampleJob, SoftmaxJob, SoftmaxMode,
    Stream, Temperature, cpu,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn gpu() -> Gpu {
    let gpu = Gpu::new_async().await.expect("a WebGPU adapter");
    console_log!("{}", gpu.describe());
    gpu
}

/// A storage buffer of `len` u32 set to a sentinel, so writes past the end show.
fn poisoned(gpu: &Gpu, len: usize) -> wgpu::Buffer {
    gpu.upload("out", &vec![0xdead_beef_u32; len]).unwrap()
}

#[wasm_bindgen_test]
async fn philox_words_equal_the_cpu_words() {
    let gpu = gpu().await;
    let kernels = gpu.random_fill().unwrap();
    for (len, stream) in [
        (1usize, Stream { seed: 7, offset: 0 }),
        (
            1000,
            Stream {
                seed: 0x0123_4567_89ab_cdef,
                offset: 3,
            },
        ),
        (
            4099,
            Stream {
                seed: u64::MAX,
                offset: u64::MAX - 2000,
            },
        ),
    ] {
        let out = poisoned(&gpu, len + 3);
        gpu.submit_async(|enc| {
            kernels.record(
                enc,
                &RandomJob {
                    kind: RandomKind::Words,
                    stream,
                    out: out.slice(..len as u64 * 4),
                },
            )
        })
        .await
        .unwrap();
        let got: Vec<u32> = gpu.read_buffer_async(&out, len + 3).await.unwrap();
        assert_eq!(
            got[..len],
            cpu::random_u32(stream, len)[..],
            "{stream:?} len {len}"
        );
        assert!(
            got[len..].iter().all(|&w| w == 0xdead_beef),
            "wrote past the end"
        );
    }
}

/// Both futures polled together until both are done (no executor crate needed).
async fn join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    use std::task::Poll;
    let (mut a, mut b) = (Box::pin(a), Box::pin(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    (ra.unwrap(), rb.unwrap())
}

/// Two calls in flight at once (two page events): each pops its own error scopes before it
/// awaits, so neither sees the other's scope (a mismatched pop panicked here before).
#[wasm_bindgen_test]
async fn two_submissions_in_flight_at_once_both_succeed() {
    let gpu = gpu().await;
    let kernels = gpu.random_fill().unwrap();
    let len = 1000;
    let streams = [Stream::new(11), Stream::new(12)];
    let outs = [poisoned(&gpu, len), poisoned(&gpu, len)];
    let run = |i: usize| {
        let (gpu, kernels, out) = (&gpu, &kernels, &outs[i]);
        async move {
            gpu.submit_async(|enc| {
                kernels.record(
                    enc,
                    &RandomJob {
                        kind: RandomKind::Words,
                        stream: streams[i],
                        out: out.slice(..),
                    },
                )
            })
            .await?;
            gpu.read_buffer_async::<u32>(out, len).await
        }
    };
    let (a, b) = join(run(0), run(1)).await;
    assert_eq!(a.unwrap(), cpu::random_u32(streams[0], len));
    assert_eq!(b.unwrap(), cpu::random_u32(streams[1], len));
}

#[wasm_bindgen_test]
async fn forward_equals_the_cpu_reference_at_an_offset() {
    let gpu = gpu().await;
    let kernels = gpu.gumbel_softmax_kernels().unwrap();
    let mut rng = StdRng::seed_from_u64(12);
    for (rows, k, tau) in [(3usize, 5usize, 0.5f32), (17, 300, 1.0), (2, 5000, 2.0)] {
        let logits: Vec<f32> = (0..rows * k)
            .map(|_| rng.random::<f32>() * 8.0 - 4.0)
            .collect();
        // The logits start at byte 260 of their buffer (not a multiple of the 256-byte binding
        // alignment): 65 words of padding.
        let mut arena = vec![0f32; 65];
        arena.extend_from_slice(&logits);
        let input = gpu.upload("logits", &arena).unwrap();
        let out = poisoned(&gpu, rows * k);
        let stream = Stream {
            seed: rng.random(),
            offset: 4 * rng.random_range(0..1000u64),
        };
        gpu.submit_async(|enc| {
            kernels.record(
                enc,
                &SoftmaxJob {
                    mode: SoftmaxMode::Soft,
                    logits: LogitsView::f32(input.slice(260..), rows as u64, k as u64),
                    tau: Temperature::Scalar(tau),
                    stream,
                    out: out.slice(..),
                    status: None,
                },
            )
        })
        .await
        .unwrap();
        let got: Vec<f32> = gpu.read_buffer_async(&out, rows * k).await.unwrap();
        let want = cpu::gumbel_softmax(&logits, k, f64::from(tau), stream);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (f64::from(g) - w).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 2e-5,
            "rows {rows} k {k} tau {tau}: max error {worst}"
        );
        for r in 0..rows {
            let s: f32 = got[r * k..(r + 1) * k].iter().sum();
            assert!((s - 1.0).abs() < 1e-4, "row {r} sums to {s}");
        }
    }
}

#[wasm_bindgen_test]
async fn sampling_equals_the_cpu_reference() {
    let gpu = gpu().await;
    let sampler = gpu.sampler().unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    for (rows, k) in [(64usize, 7usize), (9, 1000), (2, 40_000)] {
        let logits: Vec<f32> = (0..rows * k).map(|_| rng.random::<f32>() * 6.0).collect();
        let input = gpu.upload("logits", &logits).unwrap();
        let out = poisoned(&gpu, rows);
        let stream = Stream {
            seed: rng.random(),
            offset: 0,
        };
        gpu.submit_async(|enc| {
            sampler.record(
                enc,
                &SampleJob {
                    logits: LogitsView::f32(input.slice(..), rows as u64, k as u64),
                    top: 1,
                    tau: Temperature::Scalar(1.0),
                    stream,
                    noise: Noise::Bits32,
                    out: out.slice(..),
                },
            )
        })
        .await
        .unwrap();
        let got: Vec<u32> = gpu.read_buffer_async(&out, rows).await.unwrap();
        assert_eq!(
            got,
            cpu::sample(&logits, k, None, stream),
            "rows {rows} k {k}"
        );
    }
}

#[wasm_bindgen_test]
async fn bad_input_is_err() {
    let gpu = gpu().await;
    let kernels = gpu.gumbel_softmax_kernels().unwrap();
    let input = gpu.upload("logits", &[0f32; 64]).unwrap();
    let out = gpu.storage_buffer("out", 256).unwrap();
    let job = |tau: f32, offset: u64, rows: u64| SoftmaxJob {
        mode: SoftmaxMode::Soft,
        logits: LogitsView::f32(input.slice(offset..), rows, 8),
        tau: Temperature::Scalar(tau),
        stream: Stream { seed: 1, offset: 0 },
        out: out.slice(..),
        status: None,
    };
    for (what, tau, offset, rows) in [
        ("negative tau", -1.0, 0, 8),
        ("NaN tau", f32::NAN, 0, 8),
        ("misaligned logits", 1.0, 2, 4),
        ("logits too small", 1.0, 0, 9),
    ] {
        let r = gpu
            .submit_async(|enc| kernels.record(enc, &job(tau, offset, rows)))
            .await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{what}: {r:?}");
    }
    // A buffer wgpu rejects (no COPY_SRC) is an Err from the awaited error scope.
    let no_copy = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let r = gpu
        .submit_async(|enc| {
            enc.copy_buffer_to_buffer(&no_copy, 0, &out, 0, Some(16));
            Ok(())
        })
        .await;
    assert!(
        matches!(r, Err(Error::Validation(_))),
        "copy from a non-COPY_SRC buffer: {r:?}"
    );
    // The blocking API says what to use instead of hanging the page.
    assert!(matches!(Gpu::new(), Err(Error::Unsupported(_))));
    assert!(matches!(
        gpu.read_buffer::<u32>(&out, 4),
        Err(Error::Unsupported(_))
    ));
}

#[wasm_bindgen_test]
async fn the_token_chain_runs_on_the_device_and_matches_the_reference() {
    // One full-chain step at the buffer level (mask, bias, penalties from a device-side state,
    // top-nσ, filters, processed log-probabilities, ranks), then the state update on the device.
    use gumbel_wgpu::tokens::{mask_words, penalty_state};
    use gumbel_wgpu::{
        LogprobsMode, RowSampling, TokenBias, TokenChain, TokenJob, TokenRowParams, TokenSampling,
    };
    let gpu = gpu().await;
    let (rows, k) = (6usize, 1000usize);
    let mut rng = StdRng::seed_from_u64(16);
    let logits: Vec<f32> = (0..rows * k)
        .map(|_| rng.random::<f32>() * 8.0 - 4.0)
        .collect();
    let mw = mask_words(k);
    let allowed: Vec<u32> = (0..rows * mw).map(|_| rng.random::<u32>() | 1).collect();
    let row = |r: usize| RowSampling {
        top_k: 40,
        top_p: 0.9,
        top_n_sigma: 2.0,
        repetition_penalty: 1.3,
        frequency_penalty: 0.2,
        presence_penalty: 0.4,
        ..RowSampling::new(if r % 2 == 0 { 0.0 } else { 0.8 })
    };
    let prompt: Vec<u32> = (0..50).map(|i| i * 7).collect();
    let output: Vec<u32> = (0..30).map(|i| (i * 13) % 200).collect();
    let bias: Vec<(u32, f32)> = vec![(3, 2.0), (500, 1.5), (3, -0.5)];
    let streams: Vec<Stream> = (0..rows as u64).map(|r| Stream::new(40 + r)).collect();
    let settings: Vec<RowSampling> = (0..rows).map(row).collect();
    let mut state = Vec::new();
    for _ in 0..rows {
        state.extend(penalty_state(k, &prompt, &output).unwrap());
    }
    let mut starts = Vec::new();
    let mut entries = Vec::new();
    for _ in 0..rows {
        starts.push(entries.len() as u32 / 2);
        for &(t, b) in &bias {
            entries.extend([t, b.to_bits()]);
        }
    }
    starts.push(entries.len() as u32 / 2);
    let params: Vec<TokenRowParams> = (0..rows)
        .map(|r| TokenRowParams::new(settings[r], streams[r]))
        .collect();
    let lb = gpu.upload("logits", &logits).unwrap();
    let pb = gpu.upload("params", &params).unwrap();
    let mb = gpu.upload("mask", &allowed).unwrap();
    let sb = gpu.upload("starts", &starts).unwrap();
    let eb = gpu.upload("entries", &entries).unwrap();
    let stb = gpu.upload("state", &state).unwrap();
    // The three outputs in one buffer, each from its own 256-byte block (writable bindings must
    // not overlap as bound, and a binding starts at its offset rounded down to 256 bytes).
    let ra = rows.next_multiple_of(64);
    let out = poisoned(&gpu, 3 * ra);
    let sampler = gpu.token_sampler().unwrap();
    gpu.submit_async(|enc| {
        let tokens = out.slice(..rows as u64 * 4);
        sampler.record(
            enc,
            &TokenJob {
                logprobs: Some(out.slice(ra as u64 * 4..(ra + rows) as u64 * 4)),
                ranks: Some(out.slice(2 * ra as u64 * 4..(2 * ra + rows) as u64 * 4)),
                logprobs_mode: LogprobsMode::Processed,
                chain: TokenChain {
                    allowed: Some(mb.slice(..)),
                    bias: Some(TokenBias {
                        starts: sb.slice(..),
                        entries: eb.slice(..),
                    }),
                    penalty_state: Some(stb.slice(..)),
                },
                ..TokenJob::new(
                    LogitsView::f32(lb.slice(..), rows as u64, k as u64),
                    pb.slice(..),
                    tokens,
                )
            },
        )?;
        sampler.record_penalty_update(enc, tokens, stb.slice(..), rows as u64, k as u64)
    })
    .await
    .unwrap();
    let got: Vec<u32> = gpu.read_buffer_async(&out, 3 * ra).await.unwrap();
    let t: Vec<f32> = settings.iter().map(|s| s.temperature).collect();
    let col = |f: fn(&RowSampling) -> f32| settings.iter().map(f).collect::<Vec<f32>>();
    let (top_p, rp, fp, pp, ns) = (
        col(|s| s.top_p),
        col(|s| s.repetition_penalty),
        col(|s| s.frequency_penalty),
        col(|s| s.presence_penalty),
        col(|s| s.top_n_sigma),
    );
    let top_k = vec![40u32; rows];
    let prompts = vec![prompt.as_slice(); rows];
    let outputs = vec![output.as_slice(); rows];
    let biases = vec![bias.as_slice(); rows];
    let p = TokenSampling {
        temperature: &t,
        top_k: &top_k,
        top_p: &top_p,
        streams: &streams,
        repetition_penalty: &rp,
        frequency_penalty: &fp,
        presence_penalty: &pp,
        top_n_sigma: &ns,
        prompt_tokens: &prompts,
        output_tokens: &outputs,
        logit_bias: &biases,
        allowed: &allowed,
        logprobs_mode: LogprobsMode::Processed,
        ..Default::default()
    };
    let want = cpu::sample_tokens(&logits, k, &p).unwrap();
    assert_eq!(got[..rows], want.tokens[..], "tokens");
    assert_eq!(got[2 * ra..2 * ra + rows], want.ranks[..], "ranks");
    for r in 0..rows {
        let lp = f32::from_bits(got[ra + r]);
        assert!(
            (lp - want.logprobs[r]).abs() < 1e-4,
            "row {r}: {lp} vs {}",
            want.logprobs[r]
        );
    }
    let new_state: Vec<u32> = gpu.read_buffer_async(&stb, state.len()).await.unwrap();
    let mut want_state = Vec::new();
    for &token in &got[..rows] {
        let mut history = output.clone();
        history.push(token);
        want_state.extend(penalty_state(k, &prompt, &history).unwrap());
    }
    assert_eq!(
        new_state, want_state,
        "penalty state after the device update"
    );
}

#[wasm_bindgen_test]
async fn a_row_spread_over_workgroups_equals_one_workgroup_in_the_browser() {
    // The split path's stepped dispatches (a dynamic uniform offset per pass) and its kernels
    // under Chromium's WGSL rules: the same words as one workgroup per row.
    use gumbel_wgpu::{RowSampling, TokenFilters, TokenJob, TokenRowParams, TokenStrategy};
    let gpu = gpu().await;
    let k = 20000usize;
    let mut rng = StdRng::seed_from_u64(21);
    let logits: Vec<f32> = (0..k).map(|_| rng.random::<f32>() * 10.0 - 5.0).collect();
    let rows = [TokenRowParams::new(
        RowSampling {
            top_k: 50,
            top_p: 0.9,
            ..RowSampling::new(0.8)
        },
        Stream::new(5),
    )];
    let lb = gpu.upload("logits", &logits).unwrap();
    let pb = gpu.upload("params", &rows).unwrap();
    let sampler = gpu.token_sampler().unwrap();
    let mut runs = Vec::new();
    for strategy in [
        TokenStrategy::RowPerWorkgroup,
        TokenStrategy::SplitRow { chunks: 5 },
    ] {
        // Token, log-probability and 3 top pairs, each from its own 256-byte block.
        let out = poisoned(&gpu, 3 * 64);
        gpu.submit_async(|enc| {
            sampler.record(
                enc,
                &TokenJob {
                    logprobs: Some(out.slice(64 * 4..65 * 4)),
                    top_n: 3,
                    top: Some(out.slice(128 * 4..134 * 4)),
                    filters: TokenFilters::of(&rows, k as u64),
                    strategy,
                    ..TokenJob::new(
                        LogitsView::f32(lb.slice(..), 1, k as u64),
                        pb.slice(..),
                        out.slice(..4),
                    )
                },
            )
        })
        .await
        .unwrap();
        let w: Vec<u32> = gpu.read_buffer_async(&out, 3 * 64).await.unwrap();
        runs.push([w[0], w[64], w[128], w[129], w[130], w[131], w[132], w[133]]);
    }
    assert!((runs[0][0] as usize) < k, "a token: {:?}", runs[0]);
    assert_eq!(runs[0], runs[1], "one workgroup vs split");
}
