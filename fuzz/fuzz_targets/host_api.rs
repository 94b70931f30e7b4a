//! Host-side fuzz target: bytes -> a short program of calls into every public entry point of
//! gumbel-wgpu, slice level (arbitrary lengths, shapes, temperatures, token parameters,
//! probabilities, streams) and buffer level (jobs over fuzz-made buffers: sizes, usages, offsets
//! including unaligned ones, rows and k up to u64::MAX, formats, noise). Every call must give
//! `Ok` or a clear `Err`: a panic, a wgpu validation error, an internal error or an out-of-range
//! index (the bounds sanitizer is on) is a finding.
#![no_main]

use arbitrary::{Result as AResult, Unstructured};
use gumbel_wgpu::wgpu;
use gumbel_wgpu::{
    BackwardInput, BackwardJob, BackwardSlice, DensityJob, Error, Gpu, GpuOptions, GradSpace,
    LogitsFormat, LogitsSlice, LogitsView, LogprobsMode, Noise, RandomJob, RandomKind, SampleJob,
    SampleOptions, SoftmaxJob, SoftmaxMode, SpeculativeJob, Stream, Temperature, TokenBias,
    TokenChain, TokenJob, TokenSampling,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::with_options(GpuOptions {
            bounds_check: true,
            ..Default::default()
        })
        .expect("the fuzz target needs a wgpu adapter")
    })
}

/// A finding unless `r` is `Ok` or an error a caller can act on.
fn judge<T>(what: &str, r: Result<T, Error>) {
    match r {
        Ok(_) => {}
        Err(
            e @ (Error::Validation(_)
            | Error::Internal(_)
            | Error::OutOfBounds(_)
            | Error::DeviceLost(_)
            | Error::Readback(_)),
        ) => panic!("{what}: {e}"),
        Err(_) => {}
    }
}

/// A length, mostly small, sometimes around the kernels' boundaries.
fn len(u: &mut Unstructured<'_>, max: usize) -> AResult<usize> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => u.int_in_range(0..=8)?,
        1 => *u.choose(&[31usize, 32, 33, 255, 256, 257, 511, 513, 1023, 1025, 4097])?,
        _ => u.int_in_range(0..=max)?,
    }
    .min(max))
}

/// An f32, often special.
fn float(u: &mut Unstructured<'_>) -> AResult<f32> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => *u.choose(&[
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e-40,
            f32::MAX,
            f32::MIN_POSITIVE,
            -1.0,
        ])?,
        1 => f32::from_bits(u.arbitrary()?),
        _ => u.int_in_range(-4000..=4000i32)? as f32 / 1000.0,
    })
}

fn floats(u: &mut Unstructured<'_>, n: usize) -> AResult<Vec<f32>> {
    (0..n).map(|_| float(u)).collect()
}

fn stream(u: &mut Unstructured<'_>) -> AResult<Stream> {
    Ok(Stream {
        seed: u.arbitrary()?,
        offset: u.arbitrary()?,
    })
}

fn noise(u: &mut Unstructured<'_>) -> AResult<Noise> {
    Ok(if u.arbitrary()? {
        Noise::Bits64
    } else {
        Noise::Bits32
    })
}

fn format(u: &mut Unstructured<'_>) -> AResult<LogitsFormat> {
    Ok(*u.choose(&[LogitsFormat::F32, LogitsFormat::F16, LogitsFormat::Bf16])?)
}

/// A shape parameter: small, near the data, or anything up to u64::MAX.
fn dim(u: &mut Unstructured<'_>, near: u64) -> AResult<u64> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => u.arbitrary()?,
        1 => near,
        2 => near.saturating_add(1),
        _ => u.int_in_range(0..=near.max(1).saturating_add(2))?,
    })
}

/// Buffers the buffer-level jobs slice into: sizes, usages (with or without STORAGE).
struct Buffers {
    list: Vec<wgpu::Buffer>,
}

impl Buffers {
    fn new(u: &mut Unstructured<'_>, g: &Gpu) -> AResult<Buffers> {
        let n = u.int_in_range(1..=4)?;
        let mut list = Vec::new();
        for _ in 0..n {
            let words = u.int_in_range(1..=4096usize)?;
            let data: Vec<u32> = (0..words)
                .map(|i| match u.int_in_range(0..=3u8) {
                    Ok(0) => u.arbitrary().unwrap_or(0),
                    _ => (i as f32 * 0.01).to_bits(),
                })
                .collect();
            let buffer = if u.int_in_range(0..=9u8)? == 0 {
                // No STORAGE usage: every job must refuse it.
                g.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("fuzz uniform"),
                    size: words as u64 * 4,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            } else {
                match g.upload("fuzz", &data) {
                    Ok(b) => b,
                    Err(e) => panic!("upload: {e}"),
                }
            };
            list.push(buffer);
        }
        Ok(Buffers { list })
    }

    /// A non-empty slice of one of the buffers (any offset, aligned or not).
    fn slice(&self, u: &mut Unstructured<'_>) -> AResult<(usize, u64, u64)> {
        let b = u.int_in_range(0..=self.list.len() - 1)?;
        let size = self.list[b].size();
        let aligned = u.int_in_range(0..=7u8)? != 0;
        let mut start = u.int_in_range(0..=size - 1)?;
        if aligned {
            start &= !3;
        }
        let end = if u.arbitrary()? {
            size
        } else {
            u.int_in_range(start + 1..=size)?
        };
        Ok((b, start, end))
    }
}

/// One call. `Err` from `arbitrary` means the input ran out.
fn call(u: &mut Unstructured<'_>, g: &Gpu) -> AResult<()> {
    let op = u.int_in_range(0..=17u8)?;
    match op {
        0..=2 => {
            let n = len(u, 3000)?;
            let l = floats(u, n)?;
            let k = len(u, 3001)?;
            let t = float(u)?;
            let s = stream(u)?;
            match op {
                0 => judge("gumbel_softmax", g.gumbel_softmax(&l, k, t, s)),
                1 => judge("gumbel_softmax_hard", g.gumbel_softmax_hard(&l, k, t, s)),
                _ => {
                    let rows = len(u, 40)?;
                    let taus = floats(u, rows)?;
                    let mode =
                        *u.choose(&[SoftmaxMode::Soft, SoftmaxMode::Hard, SoftmaxMode::Log])?;
                    let h: Vec<u16> = l.iter().map(|x| (x.to_bits() >> 16) as u16).collect();
                    let logits = match u.int_in_range(0..=2u8)? {
                        0 => LogitsSlice::F32(&l),
                        1 => LogitsSlice::F16(&h),
                        _ => LogitsSlice::Bf16(&h),
                    };
                    let tau = if u.arbitrary()? {
                        Temperature::PerRow(&taus[..])
                    } else {
                        Temperature::Scalar(t)
                    };
                    judge(
                        "gumbel_softmax_with",
                        g.gumbel_softmax_with(logits, k, tau, mode, s),
                    )
                }
            }
        }
        3 | 4 => {
            let n = len(u, 3000)?;
            let y = floats(u, n)?;
            let dn = if u.arbitrary()? { n } else { len(u, 3000)? };
            let dy = floats(u, dn)?;
            let k = len(u, 3001)?;
            let t = float(u)?;
            let s = stream(u)?;
            if op == 3 {
                judge(
                    "gumbel_softmax_backward",
                    g.gumbel_softmax_backward(&y, &dy, k, t),
                );
                judge(
                    "gumbel_softmax_log_backward",
                    g.gumbel_softmax_log_backward(&y, &dy, k, t),
                );
                judge(
                    "gumbel_softmax_backward_recompute",
                    g.gumbel_softmax_backward_recompute(&y, &dy, k, t, s),
                );
            } else {
                let rows = len(u, 40)?;
                let taus = floats(u, rows)?;
                let input = match u.int_in_range(0..=2u8)? {
                    0 => BackwardSlice::Probs(&y),
                    1 => BackwardSlice::LogProbs(&y),
                    _ => BackwardSlice::Logits {
                        logits: LogitsSlice::F32(&y),
                        stream: s,
                        space: if u.arbitrary()? {
                            GradSpace::Probs
                        } else {
                            GradSpace::LogProbs
                        },
                    },
                };
                judge(
                    "gumbel_softmax_backward_with",
                    g.gumbel_softmax_backward_with(input, &dy, k, Temperature::PerRow(&taus)),
                );
            }
        }
        5 => {
            let n = len(u, 3000)?;
            let l = floats(u, n)?;
            let xn = if u.arbitrary()? { n } else { len(u, 3000)? };
            let x = floats(u, xn)?;
            let k = len(u, 3001)?;
            let t = float(u)?;
            judge("concrete_log_prob", g.concrete_log_prob(&l, &x, k, t));
            judge(
                "concrete_log_prob_simplex",
                g.concrete_log_prob_simplex(&l, &x, k, t),
            );
        }
        6 | 7 => {
            let n = len(u, 3000)?;
            let l = floats(u, n)?;
            let k = len(u, 3001)?;
            let top = len(u, 300)?;
            let s = stream(u)?;
            if op == 6 {
                judge("sample", g.sample(&l, k, s));
                judge("sample_top_k", g.sample_top_k(&l, k, top, s));
            } else {
                let rows = len(u, 40)?;
                let temps = floats(u, rows)?;
                let options = SampleOptions {
                    temperatures: u.arbitrary::<bool>()?.then_some(&temps[..]),
                    noise: noise(u)?,
                    ..Default::default()
                };
                judge(
                    "sample_with",
                    g.sample_with(LogitsSlice::F32(&l), k, top, s, &options),
                );
            }
        }
        8 => {
            let n = len(u, 3000)?;
            let l = floats(u, n)?;
            let k = len(u, 3001)?;
            let rows = len(u, 20)?;
            let mut r = || len(u, 20);
            let (a, b, c, d, e) = (r()?, r()?, r()?, r()?, r()?);
            let temperature = floats(u, a)?;
            let top_k: Vec<u32> = (0..b).map(|_| u.arbitrary()).collect::<AResult<_>>()?;
            let top_p = floats(u, c)?;
            let min_p = floats(u, d)?;
            let streams: Vec<Stream> = (0..e).map(|_| stream(u)).collect::<AResult<_>>()?;
            let _ = rows;
            let logprobs = len(u, 30)?;
            // The processing chain's fields (drawn after the older ones, so the corpus keeps
            // its meaning): lengths near, at or off `rows`-like counts, values often special.
            let mut r = || len(u, 20);
            let (f, g2, h, i, j, m, o) = (r()?, r()?, r()?, r()?, r()?, r()?, r()?);
            let repetition_penalty = floats(u, f)?;
            let frequency_penalty = floats(u, g2)?;
            let presence_penalty = floats(u, h)?;
            let top_n_sigma = floats(u, i)?;
            let token = |u: &mut Unstructured<'_>| -> AResult<u32> {
                Ok(if u.arbitrary()? {
                    u.arbitrary()?
                } else {
                    u.int_in_range(0..=k as u32 + 1)?
                })
            };
            let lists = |u: &mut Unstructured<'_>, n: usize| -> AResult<Vec<Vec<u32>>> {
                (0..n)
                    .map(|_| {
                        let c = len(u, 40)?;
                        (0..c).map(|_| token(u)).collect()
                    })
                    .collect()
            };
            let prompt: Vec<Vec<u32>> = lists(u, j)?;
            let output: Vec<Vec<u32>> = lists(u, m)?;
            let bias: Vec<Vec<(u32, f32)>> = (0..o)
                .map(|_| {
                    let c = len(u, 40)?;
                    (0..c).map(|_| Ok((token(u)?, float(u)?))).collect()
                })
                .collect::<AResult<_>>()?;
            let words = len(u, 2000)?;
            let allowed: Vec<u32> = (0..words).map(|_| u.arbitrary()).collect::<AResult<_>>()?;
            let prompt_tokens: Vec<&[u32]> = prompt.iter().map(Vec::as_slice).collect();
            let output_tokens: Vec<&[u32]> = output.iter().map(Vec::as_slice).collect();
            let logit_bias: Vec<&[(u32, f32)]> = bias.iter().map(Vec::as_slice).collect();
            let logprobs_mode = if u.arbitrary()? {
                LogprobsMode::Processed
            } else {
                LogprobsMode::Raw
            };
            let params = TokenSampling {
                temperature: &temperature,
                top_k: &top_k,
                top_p: &top_p,
                min_p: &min_p,
                streams: &streams,
                logprobs,
                repetition_penalty: &repetition_penalty,
                frequency_penalty: &frequency_penalty,
                presence_penalty: &presence_penalty,
                top_n_sigma: &top_n_sigma,
                prompt_tokens: &prompt_tokens,
                output_tokens: &output_tokens,
                logit_bias: &logit_bias,
                allowed: &allowed,
                logprobs_mode,
            };
            judge(
                "sample_tokens_with",
                g.sample_tokens_with(LogitsSlice::F32(&l), k, &params, noise(u)?),
            );
        }
        9 => {
            let dn = len(u, 40)?;
            let k = len(u, 300)?;
            let drafts: Vec<u32> = (0..dn)
                .map(|_| u.int_in_range(0..=k as u32 + 1))
                .collect::<AResult<_>>()?;
            let qn = if u.arbitrary()? {
                dn * k
            } else {
                len(u, 3000)?
            };
            let q = floats(u, qn.min(20000))?;
            let rows = len(u, 5)?;
            let pn = if u.arbitrary()? {
                (dn + rows) * k
            } else {
                len(u, 3000)?
            };
            let p = floats(u, pn.min(20000))?;
            let streams: Vec<Stream> = (0..rows).map(|_| stream(u)).collect::<AResult<_>>()?;
            judge(
                "verify_speculative_with",
                g.verify_speculative_with(&drafts, &q, &p, k, &streams, noise(u)?),
            );
        }
        10 => {
            let n = len(u, 70000)?;
            let s = stream(u)?;
            judge("random_u32", g.random_u32(s, n));
            judge("uniform", g.uniform(s, n));
            judge("gumbel", g.gumbel(s, n));
        }
        11 => {
            let n = len(u, 3000)?;
            let data: Vec<u32> = (0..n).map(|_| u.arbitrary()).collect::<AResult<_>>()?;
            let want = len(u, 3100)?;
            match g.upload("fuzz", &data) {
                Ok(b) => judge(
                    "read_buffer",
                    g.read_buffer::<u32>(&b, want).map(|r| {
                        assert!(want > n.max(1) || r[..want.min(n)] == data[..want.min(n)]);
                    }),
                ),
                Err(e) => judge("upload", Err::<(), _>(e)),
            }
            judge(
                "storage_buffer",
                g.storage_buffer("fuzz", u.arbitrary::<u64>()? >> u.int_in_range(0..=63)?),
            );
        }
        _ => buffer_job(u, g, op)?,
    }
    Ok(())
}

/// A buffer-level job over fuzz-made buffers, recorded and submitted.
fn buffer_job(u: &mut Unstructured<'_>, g: &Gpu, op: u8) -> AResult<()> {
    let bufs = Buffers::new(u, g)?;
    let mut picks = Vec::new();
    for _ in 0..7 {
        picks.push(bufs.slice(u)?);
    }
    let near_rows = u.int_in_range(0..=64)?;
    let rows = dim(u, near_rows)?;
    let near_k = u.int_in_range(0..=4096)?;
    let k = dim(u, near_k)?;
    let fmt = format(u)?;
    let s = stream(u)?;
    let per_row: bool = u.arbitrary()?;
    let scalar = float(u)?;
    let top = dim(u, 8)? as u32;
    let n = dim(u, 4)?;
    let top_n = dim(u, 4)? as u32;
    let mode = *u.choose(&[SoftmaxMode::Soft, SoftmaxMode::Hard, SoftmaxMode::Log])?;
    let kind = *u.choose(&[RandomKind::Words, RandomKind::Uniform, RandomKind::Gumbel])?;
    let noise = noise(u)?;
    let optional: [bool; 3] = [u.arbitrary()?, u.arbitrary()?, u.arbitrary()?];
    // The token job's newer parts (drawn last, so the corpus keeps its meaning): a row stride,
    // the processing chain's device inputs, the ranks output, the log-probability mode.
    let stride = if u.arbitrary()? { dim(u, k)? } else { 0 };
    let chain_on: [bool; 4] = [
        u.arbitrary()?,
        u.arbitrary()?,
        u.arbitrary()?,
        u.arbitrary()?,
    ];
    for _ in 0..5 {
        picks.push(bufs.slice(u)?);
    }
    let logprobs_mode = if u.arbitrary()? {
        LogprobsMode::Processed
    } else {
        LogprobsMode::Raw
    };
    let result = g.submit(|enc| {
        let sl: Vec<wgpu::BufferSlice<'_>> = picks
            .iter()
            .map(|&(b, a, e)| bufs.list[b].slice(a..e))
            .collect();
        let view = LogitsView::new(sl[0], fmt, rows, k).with_stride(stride);
        let tau = if per_row {
            Temperature::PerRow(sl[2])
        } else {
            Temperature::Scalar(scalar)
        };
        match op {
            12 => g.random_fill()?.record(
                enc,
                &RandomJob {
                    kind,
                    stream: s,
                    out: sl[3],
                },
            ),
            13 => g.gumbel_softmax_kernels()?.record(
                enc,
                &SoftmaxJob {
                    mode,
                    logits: view,
                    tau,
                    stream: s,
                    out: sl[3],
                    status: optional[0].then_some(sl[4]),
                },
            ),
            14 => g.gumbel_softmax_backward_kernels()?.record(
                enc,
                &BackwardJob {
                    input: match fmt {
                        LogitsFormat::F32 if optional[0] => BackwardInput::Probs(view),
                        LogitsFormat::F32 => BackwardInput::LogProbs(view),
                        _ => BackwardInput::Logits {
                            logits: view,
                            stream: s,
                            space: GradSpace::Probs,
                        },
                    },
                    grad: sl[1],
                    tau,
                    out: sl[3],
                    status: None,
                },
            ),
            15 => g.concrete_density_kernels()?.record(
                enc,
                &DensityJob {
                    logits: view,
                    log_y: sl[1],
                    tau,
                    simplex: optional[0],
                    out: sl[3],
                },
            ),
            16 => g.sampler()?.record(
                enc,
                &SampleJob {
                    logits: view,
                    top,
                    tau,
                    stream: s,
                    noise,
                    out: sl[3],
                },
            ),
            _ if optional[2] => g.token_sampler()?.record(
                enc,
                &TokenJob {
                    logprobs: optional[0].then_some(sl[4]),
                    top_n,
                    top: optional[1].then_some(sl[5]),
                    status: optional[0].then_some(sl[6]),
                    noise,
                    chain: TokenChain {
                        allowed: chain_on[0].then_some(sl[7]),
                        bias: chain_on[1].then_some(TokenBias {
                            starts: sl[8],
                            entries: sl[9],
                        }),
                        penalty_state: chain_on[2].then_some(sl[10]),
                    },
                    ranks: chain_on[3].then_some(sl[11]),
                    logprobs_mode,
                    ..TokenJob::new(view, sl[1], sl[3])
                },
            ),
            _ => g.speculative_verifier()?.record(
                enc,
                &SpeculativeJob {
                    rows,
                    n,
                    k,
                    draft_tokens: sl[0],
                    draft_probs: sl[1],
                    target_probs: sl[2],
                    streams: sl[4],
                    accepted: sl[3],
                    tokens: sl[5],
                    noise,
                },
            ),
        }
    });
    judge(&format!("buffer-level job {op}"), result);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let g = gpu();
    let mut u = Unstructured::new(data);
    for _ in 0..4 {
        if call(&mut u, g).is_err() {
            break;
        }
    }
});
