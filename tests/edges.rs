//! Generated jobs at every edge, for every buffer-level family (random, forward, backward,
//! density, sample, top-k, tokens, speculative): a seeded generator of shapes (rows 0..5, many
//! rows of tiny k up to 70000, k from 1 to 300000 around workgroup, block and on-chip
//! boundaries), placements (every input and output at its own offset, any multiple of 4 bytes,
//! the last range of a buffer ending exactly at its end), per-row temperatures (good, NaN, 0,
//! negative, subnormal, infinite), formats (f32, f16, bf16) and noise modes. Each job runs on the
//! shipping build and under the bounds sanitizer (`GpuOptions::bounds_check`): the same bits both
//! ways (the sanitizer would have returned `Err` on any out-of-range index), every word outside
//! the outputs untouched, and the CPU reference matched (random, sampling exactly; forward,
//! backward and density within stated tolerances) or the documented output of a bad row (NaN, or
//! `NO_INDEX`).
//!
//! 12 jobs per family by default (96 jobs, each run twice; about 80 s of CPU on lavapipe);
//! `GUMBEL_WGPU_EDGE_JOBS=N` runs N per family (a soak), `GUMBEL_WGPU_EDGE_SEED=S` another seed.

mod common;

use common::SENTINEL;
use gumbel_wgpu::logits::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
use gumbel_wgpu::{
    BackwardInput, BackwardJob, DensityJob, Error, Gpu, GpuOptions, GradSpace, LogitsFormat,
    LogitsView, NO_INDEX, Noise, RandomJob, RandomKind, SampleJob, SoftmaxJob, SoftmaxMode,
    SpeculativeJob, Stream, Temperature, TokenJob, TokenRowParams,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use std::ops::Range;
use std::sync::OnceLock;

fn sanitized() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::with_options(GpuOptions {
            bounds_check: true,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("tests need a wgpu adapter: {e}"))
    })
}

fn jobs_per_family() -> usize {
    std::env::var("GUMBEL_WGPU_EDGE_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

fn seed() -> u64 {
    std::env::var("GUMBEL_WGPU_EDGE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(19)
}

/// Row lengths around the kernels' boundaries: workgroups (256), teams (32), Philox blocks (4),
/// the backward's register rows (4094), the forward's on-chip tiers (6069, 10173, 14269), the
/// sampler's and density's splits, and 2^16.
const KS: &[usize] = &[
    1, 2, 3, 4, 5, 7, 8, 31, 32, 33, 63, 65, 255, 256, 257, 511, 513, 1023, 1025, 4093, 4094, 4095,
    4097, 6069, 6070, 8193, 10173, 10174, 14269, 14270, 16385, 65535, 65537, 131073, 300000,
];

/// A shape: few rows of any k, many rows of small k, or up to 70000 rows of tiny k.
fn shape(rng: &mut StdRng, max_elems: usize) -> (usize, usize) {
    loop {
        let (rows, k) = match rng.random_range(0..10) {
            0..6 => (rng.random_range(0..=5), KS[rng.random_range(0..KS.len())]),
            6..9 => (rng.random_range(6..300), KS[rng.random_range(0..12)]),
            _ => (rng.random_range(1000..=70000), rng.random_range(1..=3)),
        };
        if rows * k <= max_elems {
            return (rows, k);
        }
    }
}

/// A temperature: usually good, sometimes each kind of bad.
fn temperature(rng: &mut StdRng) -> f32 {
    match rng.random_range(0..16) {
        0 => f32::NAN,
        1 => 0.0,
        2 => -0.5,
        3 => 1e-40,
        4 => f32::INFINITY,
        5 => 1.0,
        6 => 40.0,
        _ => rng.random_range(0.1f32..3.0),
    }
}

fn good_tau(t: f32) -> bool {
    t.is_finite() && t >= f32::MIN_POSITIVE
}

/// A half format's conversions: from f32, and back.
type Halves = (fn(f32) -> u16, fn(u16) -> f32);

/// Logits with a few masked entries, in `format` (words, and the values the kernels see).
fn logits(rng: &mut StdRng, n: usize, format: LogitsFormat) -> (Vec<u32>, Vec<f32>) {
    let v: Vec<f32> = (0..n)
        .map(|_| {
            if rng.random_range(0..20) == 0 {
                f32::NEG_INFINITY
            } else {
                rng.random_range(-4.0f32..4.0)
            }
        })
        .collect();
    match format {
        LogitsFormat::F32 => (v.iter().map(|x| x.to_bits()).collect(), v),
        _ => {
            let (to, from): Halves = if format == LogitsFormat::F16 {
                (f32_to_f16, f16_to_f32)
            } else {
                (f32_to_bf16, bf16_to_f32)
            };
            let h: Vec<u16> = v.iter().map(|&x| to(x)).collect();
            let words = h
                .chunks(2)
                .map(|c| u32::from(c[0]) | u32::from(*c.get(1).unwrap_or(&0)) << 16)
                .collect();
            (words, h.iter().map(|&b| from(b)).collect())
        }
    }
}

fn format(rng: &mut StdRng) -> LogitsFormat {
    [LogitsFormat::F32, LogitsFormat::F16, LogitsFormat::Bf16][rng.random_range(0..3)]
}

/// Regions placed one after another in one buffer, each after a gap of 0..40 sentinel words
/// (so every offset is some multiple of 4 bytes); with `tight`, the last ends at the buffer's
/// end. An empty region gets one word (a binding cannot be empty).
struct Placed {
    words: Vec<u32>,
    ranges: Vec<Range<usize>>,
}

///
/// With `apart` (outputs), each region after the first starts in a later 256-byte block than the
/// previous one ends in: a kernel binds from the offset rounded down to the storage alignment,
/// and writable bindings must not overlap (`check_no_alias` refuses closer outputs).
fn place(rng: &mut StdRng, regions: &[Vec<u32>], tight: bool, apart: bool) -> Placed {
    let mut words = Vec::new();
    let mut ranges = Vec::new();
    for r in regions {
        if apart && !ranges.is_empty() {
            words.resize(common::apart(words.len()), SENTINEL);
        }
        let gap = rng.random_range(0..40);
        words.extend(std::iter::repeat_n(SENTINEL, gap));
        let start = words.len();
        if r.is_empty() {
            words.push(SENTINEL);
        } else {
            words.extend_from_slice(r);
        }
        ranges.push(start..words.len());
    }
    if !tight {
        words.extend(std::iter::repeat_n(SENTINEL, rng.random_range(1..8)));
    }
    Placed { words, ranges }
}

/// One generated job: its inputs and outputs (words), and how to record it.
struct Job {
    what: String,
    inputs: Vec<Vec<u32>>,
    outputs: Vec<usize>,
    #[allow(clippy::type_complexity)]
    record: Box<
        dyn Fn(
            &Gpu,
            &mut wgpu::CommandEncoder,
            &[wgpu::BufferSlice<'_>],
            &[wgpu::BufferSlice<'_>],
        ) -> Result<(), Error>,
    >,
}

/// Runs `job` on `gpu` with the given placement seed: the output words, or the error; checks
/// the inputs and every word outside the outputs are untouched.
fn run(gpu: &Gpu, job: &Job, place_seed: u64) -> Result<Vec<Vec<u32>>, Error> {
    let mut rng = StdRng::seed_from_u64(place_seed);
    let tight = rng.random::<bool>();
    let inputs = place(&mut rng, &job.inputs, tight, false);
    let outs: Vec<Vec<u32>> = job.outputs.iter().map(|&n| vec![SENTINEL; n]).collect();
    let outputs = place(&mut rng, &outs, !tight, true);
    let ib = gpu.upload("inputs", &inputs.words).unwrap();
    let ob = gpu.upload("outputs", &outputs.words).unwrap();
    let slices = |b: &wgpu::Buffer, p: &Placed| -> Vec<(u64, u64)> {
        let _ = b;
        p.ranges
            .iter()
            .map(|r| (r.start as u64 * 4, r.end as u64 * 4))
            .collect()
    };
    let (ir, or) = (slices(&ib, &inputs), slices(&ob, &outputs));
    let result = gpu.submit(|enc| {
        let i: Vec<_> = ir.iter().map(|&(a, b)| ib.slice(a..b)).collect();
        let o: Vec<_> = or.iter().map(|&(a, b)| ob.slice(a..b)).collect();
        (job.record)(gpu, enc, &i, &o)
    });
    let now_in: Vec<u32> = gpu.read_buffer(&ib, inputs.words.len()).unwrap();
    assert!(now_in == inputs.words, "{}: an input changed", job.what);
    let now: Vec<u32> = gpu.read_buffer(&ob, outputs.words.len()).unwrap();
    for (i, (&w, &w0)) in now.iter().zip(&outputs.words).enumerate() {
        let inside = outputs
            .ranges
            .iter()
            .zip(&job.outputs)
            .any(|(r, &n)| (r.start..r.start + n).contains(&i));
        if !inside {
            assert_eq!(w, w0, "{}: word {i} outside the outputs changed", job.what);
        }
    }
    result.map(|()| {
        outputs
            .ranges
            .iter()
            .zip(&job.outputs)
            .map(|(r, &n)| now[r.start..r.start + n].to_vec())
            .collect()
    })
}

/// Runs `job` shipping and sanitized: the same outputs (or the same error) both ways.
fn both(job: &Job, place_seed: u64) -> Result<Vec<Vec<u32>>, Error> {
    let a = run(common::gpu(), job, place_seed);
    let b = run(sanitized(), job, place_seed);
    match (&a, &b) {
        (Ok(x), Ok(y)) => assert!(x == y, "{}: different bits under the sanitizer", job.what),
        (Err(x), Err(y)) => assert_eq!(x, y, "{}", job.what),
        _ => panic!("{}: {a:?} vs sanitized {b:?}", job.what),
    }
    a
}

fn f32s(w: &[u32]) -> Vec<f32> {
    w.iter().map(|&b| f32::from_bits(b)).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn view<'a>(
    s: wgpu::BufferSlice<'a>,
    format: LogitsFormat,
    rows: usize,
    k: usize,
) -> LogitsView<'a> {
    LogitsView::new(s, format, rows as u64, k as u64)
}

fn stream(rng: &mut StdRng) -> Stream {
    Stream {
        seed: rng.random(),
        offset: if rng.random::<bool>() {
            rng.random_range(0..16)
        } else {
            rng.random::<u64>() >> rng.random_range(0..64)
        },
    }
}

/// Per-row temperatures (Some) or a good scalar (None).
fn taus(rng: &mut StdRng, rows: usize) -> Option<Vec<f32>> {
    rng.random::<bool>()
        .then(|| (0..rows).map(|_| temperature(rng)).collect())
}

fn close(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol || (got.is_nan() && want.is_nan())
}

/// Every generated job of `family`, checked by `check` (given the job's outputs).
fn sweep(family: &str, mut make: impl FnMut(&mut StdRng) -> (Job, Box<dyn Fn(&[Vec<u32>])>)) {
    let mut rng = StdRng::seed_from_u64(seed() ^ (family.len() as u64 * 0x9e37));
    let mut ran = 0;
    for i in 0..jobs_per_family() {
        let (job, check) = make(&mut rng);
        let place_seed = rng.random();
        if std::env::var("EDGE_TRACE").is_ok() {
            eprintln!("{family} job {i}: {}", job.what);
        }
        match both(&job, place_seed) {
            Ok(out) => {
                check(&out);
                ran += 1;
            }
            // Shapes past a driver's limits (llvmpipe's loop budget) may be refused, alike.
            Err(Error::Unsupported(_)) | Err(Error::TooLarge(_)) => {}
            Err(e) => panic!("{family} job {i} ({}): {e}", job.what),
        }
    }
    assert!(
        ran * 4 >= jobs_per_family() * 3,
        "{family}: only {ran} jobs ran"
    );
}

#[test]
fn random_fills() {
    sweep("random", |rng| {
        let len =
            [1usize, 2, 3, 4, 5, 255, 257, 1023, 4097, 65537, 300001][rng.random_range(0..11)];
        let kind =
            [RandomKind::Words, RandomKind::Uniform, RandomKind::Gumbel][rng.random_range(0..3)];
        let s = stream(rng);
        let job = Job {
            what: format!("random {kind:?} len {len} {s:?}"),
            inputs: vec![],
            outputs: vec![len],
            record: Box::new(move |g, enc, _, o| {
                g.random_fill()?.record(
                    enc,
                    &RandomJob {
                        kind,
                        stream: s,
                        out: o[0],
                    },
                )
            }),
        };
        let check = Box::new(move |out: &[Vec<u32>]| {
            let want: Vec<u32> = match kind {
                RandomKind::Words => gumbel_wgpu::cpu::random_u32(s, len),
                RandomKind::Uniform => bits(&gumbel_wgpu::cpu::uniform(s, len)),
                _ => gumbel_wgpu::cpu::gumbel(s, len)
                    .iter()
                    .map(|&g| (g as f32).to_bits())
                    .collect(),
            };
            if kind == RandomKind::Gumbel {
                for (g, w) in f32s(&out[0]).iter().zip(f32s(&want)) {
                    assert!(close(*g as f64, w as f64, 2e-6 * (1.0 + w.abs() as f64)));
                }
            } else {
                assert!(out[0] == want, "{kind:?} len {len}");
            }
        });
        (job, check)
    });
}

#[test]
fn forward_jobs() {
    sweep("forward", |rng| {
        let (rows, k) = shape(rng, 300_000);
        let fmt = format(rng);
        let (words, values) = logits(rng, rows * k, fmt);
        let t = taus(rng, rows);
        let scalar = rng.random_range(0.2f32..5.0);
        let mode = [SoftmaxMode::Soft, SoftmaxMode::Hard, SoftmaxMode::Log][rng.random_range(0..3)];
        let s = stream(rng);
        let mut inputs = vec![words];
        if let Some(t) = &t {
            inputs.push(bits(t));
        }
        let per_row = t.is_some();
        let job = Job {
            what: format!("forward {mode:?} {fmt:?} rows {rows} k {k} per-row {per_row}"),
            inputs,
            outputs: vec![rows * k],
            record: Box::new(move |g, enc, i, o| {
                g.gumbel_softmax_kernels()?.record(
                    enc,
                    &SoftmaxJob {
                        mode,
                        logits: view(i[0], fmt, rows, k),
                        tau: if per_row {
                            Temperature::PerRow(i[1])
                        } else {
                            Temperature::Scalar(scalar)
                        },
                        stream: s,
                        out: o[0],
                        status: None,
                    },
                )
            }),
        };
        let check = Box::new(move |out: &[Vec<u32>]| {
            let taus: Vec<f64> = (0..rows)
                .map(|r| t.as_ref().map_or(scalar, |t| t[r]) as f64)
                .collect();
            let safe: Vec<f64> = taus
                .iter()
                .map(|&x| if good_tau(x as f32) { x } else { 1.0 })
                .collect();
            let want = gumbel_wgpu::cpu::gumbel_softmax_log_per_row(&values, k, &safe, s);
            let got = f32s(&out[0]);
            for r in 0..rows {
                let row = &got[r * k..(r + 1) * k];
                let all_masked = values[r * k..(r + 1) * k]
                    .iter()
                    .all(|&v| v == f32::NEG_INFINITY);
                if !good_tau(taus[r] as f32) || all_masked {
                    assert!(
                        row.iter().all(|x| x.to_bits() == 0x7fc0_0000),
                        "bad row {r}"
                    );
                    continue;
                }
                let wrow = &want[r * k..(r + 1) * k];
                match mode {
                    SoftmaxMode::Soft => {
                        for (j, (&g, &w)) in row.iter().zip(wrow).enumerate() {
                            assert!(
                                close(g as f64, w.exp(), 1e-5),
                                "row {r} j {j}: {g} vs {}",
                                w.exp()
                            );
                        }
                    }
                    SoftmaxMode::Log => {
                        for (j, (&g, &w)) in row.iter().zip(wrow).enumerate() {
                            let ok = (g == f32::NEG_INFINITY && w == f64::NEG_INFINITY)
                                || close(g as f64, w, 1e-4 * (1.0 + w.abs()));
                            assert!(ok, "row {r} j {j}: {g} vs {w}");
                        }
                    }
                    SoftmaxMode::Hard => {
                        let ones = row.iter().filter(|&&x| x == 1.0).count();
                        assert_eq!(ones, 1, "row {r}");
                        assert!(row.iter().all(|&x| x == 0.0 || x == 1.0));
                    }
                }
            }
        });
        (job, check)
    });
}

#[test]
fn backward_jobs() {
    sweep("backward", |rng| {
        let (rows, k) = shape(rng, 300_000);
        let recompute = rng.random::<bool>();
        let fmt = if recompute {
            format(rng)
        } else {
            LogitsFormat::F32
        };
        let (lw, _) = logits(rng, rows * k, fmt);
        let y: Vec<f32> = (0..rows * k)
            .map(|_| {
                if rng.random_range(0..10) == 0 {
                    0.0
                } else {
                    rng.random_range(0.0..1.0)
                }
            })
            .collect();
        let dy: Vec<f32> = (0..rows * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let t = taus(rng, rows);
        let scalar = rng.random_range(0.2f32..3.0);
        let s = stream(rng);
        let space = if rng.random::<bool>() {
            GradSpace::Probs
        } else {
            GradSpace::LogProbs
        };
        let per_row = t.is_some();
        let mut inputs = vec![if recompute { lw } else { bits(&y) }, bits(&dy)];
        if let Some(t) = &t {
            inputs.push(bits(t));
        }
        let job = Job {
            what: format!(
                "backward recompute {recompute} {fmt:?} rows {rows} k {k} per-row {per_row}"
            ),
            inputs,
            outputs: vec![rows * k],
            record: Box::new(move |g, enc, i, o| {
                let input = if recompute {
                    BackwardInput::Logits {
                        logits: view(i[0], fmt, rows, k),
                        stream: s,
                        space,
                    }
                } else {
                    BackwardInput::Probs(view(i[0], LogitsFormat::F32, rows, k))
                };
                g.gumbel_softmax_backward_kernels()?.record(
                    enc,
                    &BackwardJob {
                        input,
                        grad: i[1],
                        tau: if per_row {
                            Temperature::PerRow(i[2])
                        } else {
                            Temperature::Scalar(scalar)
                        },
                        out: o[0],
                        status: None,
                    },
                )
            }),
        };
        let check = Box::new(move |out: &[Vec<u32>]| {
            let taus: Vec<f64> = (0..rows)
                .map(|r| t.as_ref().map_or(scalar, |t| t[r]) as f64)
                .collect();
            let got = f32s(&out[0]);
            let want = (!recompute).then(|| {
                let safe: Vec<f64> = taus
                    .iter()
                    .map(|&x| if good_tau(x as f32) { x } else { 1.0 })
                    .collect();
                let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
                let dy64: Vec<f64> = dy.iter().map(|&v| v as f64).collect();
                gumbel_wgpu::cpu::softmax_vjp_per_row(&y64, &dy64, k, &safe)
            });
            for r in 0..rows {
                let row = &got[r * k..(r + 1) * k];
                if !good_tau(taus[r] as f32) {
                    assert!(
                        row.iter().all(|x| x.to_bits() == 0x7fc0_0000),
                        "bad tau row {r}"
                    );
                    continue;
                }
                assert!(row.iter().all(|x| x.is_finite()), "row {r} not finite");
                if let Some(want) = &want {
                    // A = sum dy y over up to k terms: f32 sums err by about k eps |A| terms.
                    let scale: f64 = (0..k)
                        .map(|j| (dy[r * k + j] * y[r * k + j]).abs() as f64)
                        .sum::<f64>();
                    let tol = 1e-5 * (1.0 + scale) / taus[r];
                    for j in 0..k {
                        let w = want[r * k + j];
                        assert!(
                            close(row[j] as f64, w, tol),
                            "row {r} j {j}: {} vs {w}",
                            row[j]
                        );
                    }
                }
            }
        });
        (job, check)
    });
}

#[test]
fn density_jobs() {
    sweep("density", |rng| {
        let (rows, k) = shape(rng, 200_000);
        let fmt = format(rng);
        let (lw, values) = logits(rng, rows * k, fmt);
        let s = stream(rng);
        let log_y: Vec<f32> =
            gumbel_wgpu::cpu::gumbel_softmax_log_per_row(&values, k, &vec![1.0; rows], s)
                .iter()
                .map(|&x| x as f32)
                .collect();
        let t = taus(rng, rows);
        let scalar = rng.random_range(0.2f32..3.0);
        let simplex = rng.random::<bool>();
        let per_row = t.is_some();
        let mut inputs = vec![lw, bits(&log_y)];
        if let Some(t) = &t {
            inputs.push(bits(t));
        }
        let job = Job {
            what: format!("density {fmt:?} rows {rows} k {k} per-row {per_row} simplex {simplex}"),
            inputs,
            outputs: vec![rows],
            record: Box::new(move |g, enc, i, o| {
                g.concrete_density_kernels()?.record(
                    enc,
                    &DensityJob {
                        logits: view(i[0], fmt, rows, k),
                        log_y: i[1],
                        tau: if per_row {
                            Temperature::PerRow(i[2])
                        } else {
                            Temperature::Scalar(scalar)
                        },
                        simplex,
                        out: o[0],
                    },
                )
            }),
        };
        let check = Box::new(move |out: &[Vec<u32>]| {
            let got = f32s(&out[0]);
            for r in 0..rows {
                let tau = t.as_ref().map_or(scalar, |t| t[r]);
                if !good_tau(tau) {
                    assert_eq!(got[r].to_bits(), 0x7fc0_0000, "bad tau row {r}");
                    continue;
                }
                let ly: Vec<f64> = log_y[r * k..(r + 1) * k]
                    .iter()
                    .map(|&x| x as f64)
                    .collect();
                let l = &values[r * k..(r + 1) * k];
                let want = if simplex {
                    gumbel_wgpu::cpu::concrete_log_prob_simplex(l, &ly, k, tau as f64)[0]
                } else {
                    gumbel_wgpu::cpu::concrete_log_prob(l, &ly, k, tau as f64)[0]
                };
                let g = got[r] as f64;
                let ok = (g == want)
                    || close(
                        g,
                        want,
                        1e-4 * (want.abs() + k as f64 * (1.0 + 1.0 / tau as f64)),
                    );
                assert!(ok, "row {r}: {g} vs {want}");
            }
        });
        (job, check)
    });
}

/// Sampling (`top` 1) and Gumbel-top-k: exact against the CPU on good rows (f32 logits and
/// Bits32 noise; the other formats and noise against the shipping build only), NO_INDEX in every
/// slot of a bad row.
fn sample_sweep(family: &str, top_k: bool) {
    sweep(family, |rng| {
        let (rows, k) = shape(rng, 300_000);
        let top = if top_k {
            rng.random_range(1..=k.min(64))
        } else {
            1
        };
        let fmt = format(rng);
        let noise = if rng.random::<bool>() {
            Noise::Bits32
        } else {
            Noise::Bits64
        };
        let (lw, values) = logits(rng, rows * k, fmt);
        let t = taus(rng, rows);
        let scalar = rng.random_range(0.2f32..3.0);
        let s = stream(rng);
        let per_row = t.is_some();
        let mut inputs = vec![lw];
        if let Some(t) = &t {
            inputs.push(bits(t));
        }
        let job = Job {
            what: format!("sample top {top} {fmt:?} {noise:?} rows {rows} k {k} per-row {per_row}"),
            inputs,
            outputs: vec![rows * top],
            record: Box::new(move |g, enc, i, o| {
                g.sampler()?.record(
                    enc,
                    &SampleJob {
                        logits: view(i[0], fmt, rows, k),
                        top: top as u32,
                        tau: if per_row {
                            Temperature::PerRow(i[1])
                        } else {
                            Temperature::Scalar(scalar)
                        },
                        stream: s,
                        noise,
                        out: o[0],
                    },
                )
            }),
        };
        let check = Box::new(move |out: &[Vec<u32>]| {
            let temps: Vec<f32> = (0..rows)
                .map(|r| t.as_ref().map_or(scalar, |t| t[r]))
                .collect();
            let safe: Vec<f32> = temps
                .iter()
                .map(|&x| if good_tau(x) { x } else { 1.0 })
                .collect();
            let z = gumbel_wgpu::cpu::sample_values(&values, k, Some(&safe), s, noise);
            let want = gumbel_wgpu::cpu::top_k_of_values(&z, k, top);
            for r in 0..rows {
                let row = &out[0][r * top..(r + 1) * top];
                if !good_tau(temps[r]) {
                    assert!(
                        row.iter().all(|&i| i == NO_INDEX),
                        "bad tau row {r}: {row:?}"
                    );
                } else {
                    assert_eq!(row, &want[r * top..(r + 1) * top], "row {r}");
                }
            }
        });
        (job, check)
    });
}

#[test]
fn sample_jobs() {
    sample_sweep("sample", false);
}

#[test]
fn top_k_jobs() {
    sample_sweep("top-k", true);
}

/// Token sampling: the same bits shipping and sanitized, outputs in range (a token below k, or
/// NO_INDEX for a row with nothing to draw), and no word outside the outputs touched. (The
/// token sampler's CPU reference is tests/tokens.rs's; its kernel is being rewritten.)
#[test]
fn token_jobs() {
    sweep("tokens", |rng| {
        let (rows, k) = shape(rng, 300_000);
        let fmt = format(rng);
        let noise = if rng.random::<bool>() {
            Noise::Bits32
        } else {
            Noise::Bits64
        };
        let (lw, _) = logits(rng, rows * k, fmt);
        let params: Vec<TokenRowParams> = (0..rows)
            .map(|_| {
                let st = stream(rng);
                TokenRowParams {
                    temperature: temperature(rng),
                    top_k: [0, 1, 2, 50, 600, 100000][rng.random_range(0..6)],
                    top_p: [1.0, 0.9, 0.5, 0.0, f32::NAN, -1.0][rng.random_range(0..6)],
                    min_p: [0.0, 0.05, 1.0, f32::NAN, 2.0][rng.random_range(0..5)],
                    seed_lo: st.seed as u32,
                    seed_hi: (st.seed >> 32) as u32,
                    offset_lo: st.offset as u32,
                    offset_hi: (st.offset >> 32) as u32,
                    // The chain's per-row values: in force only with a penalty state, but
                    // checked on the device either way (a bad one is NO_INDEX + a status).
                    repetition_penalty: [1.0, 1.3, 0.0, f32::NAN][rng.random_range(0..4)],
                    frequency_penalty: [0.0, 0.5, f32::INFINITY][rng.random_range(0..3)],
                    presence_penalty: [0.0, -0.5, f32::NAN][rng.random_range(0..3)],
                    top_n_sigma: [0.0, 1.0, 3.0, -1.0, f32::NAN][rng.random_range(0..5)],
                }
            })
            .collect();
        let top_n = [0u32, 1, 5][rng.random_range(0..3)].min(k as u32);
        let with_logprobs = rng.random::<bool>();
        let inputs = vec![lw, bytemuck::cast_slice(&params).to_vec()];
        let job = Job {
            what: format!("tokens {fmt:?} {noise:?} rows {rows} k {k} top_n {top_n}"),
            inputs,
            outputs: vec![rows, rows, rows * top_n as usize * 2],
            record: Box::new(move |g, enc, i, o| {
                g.token_sampler()?.record(
                    enc,
                    &TokenJob {
                        logits: view(i[0], fmt, rows, k),
                        row_params: i[1],
                        out: o[0],
                        logprobs: with_logprobs.then_some(o[1]),
                        top_n,
                        top: (top_n > 0).then_some(o[2]),
                        status: None,
                        noise,
                        chain: Default::default(),
                        ranks: None,
                        logprobs_mode: Default::default(),
                        filters: Default::default(),
                        strategy: Default::default(),
                    },
                )
            }),
        };
        let check = Box::new(move |out: &[Vec<u32>]| {
            for (r, &tok) in out[0].iter().enumerate() {
                assert!(
                    tok == NO_INDEX || (tok as usize) < k,
                    "row {r}: token {tok}"
                );
            }
        });
        (job, check)
    });
}

/// Speculative verification: same bits both ways, accepted counts and tokens in range.
#[test]
fn speculative_jobs() {
    sweep("speculative", |rng| {
        let rows = rng.random_range(1..=5);
        let n = rng.random_range(0..=4);
        let k = KS[rng.random_range(0..KS.len())].min(70000);
        let noise = if rng.random::<bool>() {
            Noise::Bits32
        } else {
            Noise::Bits64
        };
        let drafts: Vec<u32> = (0..rows * n)
            .map(|_| rng.random_range(0..k as u32))
            .collect();
        let probs = |rng: &mut StdRng, m: usize| -> Vec<f32> {
            (0..m)
                .map(|_| {
                    if rng.random_range(0..4) == 0 {
                        0.0
                    } else {
                        rng.random_range(0.0..1.0)
                    }
                })
                .collect()
        };
        let q = probs(rng, rows * n * k);
        let p = probs(rng, rows * (n + 1) * k);
        let streams: Vec<u32> = (0..rows)
            .flat_map(|_| gumbel_wgpu::stream_words(stream(rng)))
            .collect();
        let inputs = vec![drafts, bits(&q), bits(&p), streams];
        let job = Job {
            what: format!("speculative {noise:?} rows {rows} n {n} k {k}"),
            inputs,
            outputs: vec![rows, rows * (n + 1)],
            record: Box::new(move |g, enc, i, o| {
                g.speculative_verifier()?.record(
                    enc,
                    &SpeculativeJob {
                        rows: rows as u64,
                        n: n as u64,
                        k: k as u64,
                        draft_tokens: i[0],
                        draft_probs: i[1],
                        target_probs: i[2],
                        streams: i[3],
                        accepted: o[0],
                        tokens: o[1],
                        noise,
                    },
                )
            }),
        };
        let check = Box::new(move |out: &[Vec<u32>]| {
            for r in 0..rows {
                assert!(out[0][r] as usize <= n, "row {r}: accepted {}", out[0][r]);
                for &t in &out[1][r * (n + 1)..(r + 1) * (n + 1)] {
                    assert!(t == NO_INDEX || (t as usize) < k, "row {r}: token {t}");
                }
            }
        });
        (job, check)
    });
}
