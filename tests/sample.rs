//! Gumbel-max sampling and Gumbel-top-k on a real adapter: every path (row per thread, row per
//! workgroup, split rows) against the f64 CPU reference at awkward sizes, exactly against an f32
//! model built from `Gpu::gumbel`'s noise, exact tie-breaking, the special logits, the laws of the
//! draws (chi-square), and the errors.

mod common;
use common::*;
use gumbel_wgpu::{
    Error, Gpu, LogitsFormat, LogitsSlice, LogitsView, MAX_TOP, NO_INDEX, Noise, SampleJob,
    SampleOptions, SampleStrategy, Sampler, Stream, Temperature, cpu, logits,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

const AUTO: SampleStrategy = SampleStrategy::Auto;
const THREAD: SampleStrategy = SampleStrategy::RowPerThread;
const GROUP: SampleStrategy = SampleStrategy::RowPerWorkgroup;
const SEG_1: SampleStrategy = SampleStrategy::RowPerSegment { threads: 1 };
const SEG_8: SampleStrategy = SampleStrategy::RowPerSegment { threads: 8 };
const SEG_64: SampleStrategy = SampleStrategy::RowPerSegment { threads: 64 };
const SPLIT: SampleStrategy = SampleStrategy::SplitRow { chunks: 0 };
/// More chunks than some rows have Philox blocks: empty chunks must be harmless.
const SPLIT_7: SampleStrategy = SampleStrategy::SplitRow { chunks: 7 };

/// A test case's shape: what a [`SampleJob`] gets besides its buffers, and the path.
#[derive(Clone, Copy, Debug)]
struct SampleShape {
    rows: u64,
    k: u64,
    top: u32,
    format: LogitsFormat,
    strategy: SampleStrategy,
    noise: Noise,
}

impl SampleShape {
    fn new(rows: u64, k: u64) -> Self {
        SampleShape {
            rows,
            k,
            top: 1,
            format: LogitsFormat::F32,
            strategy: SampleStrategy::Auto,
            noise: Noise::Bits32,
        }
    }

    fn job<'a>(
        &self,
        logits: wgpu::BufferSlice<'a>,
        tau: Temperature<wgpu::BufferSlice<'a>>,
        stream: Stream,
        out: wgpu::BufferSlice<'a>,
    ) -> SampleJob<'a> {
        SampleJob {
            logits: LogitsView {
                data: logits,
                format: self.format,
                rows: self.rows,
                k: self.k,
                stride: 0,
            },
            top: self.top,
            tau,
            stream,
            noise: self.noise,
            out,
        }
    }
}

/// [`try_run_sample`], which must not be refused.
fn run_sample(
    gpu: &Gpu,
    shape: SampleShape,
    logits: &[u32],
    temperatures: Option<&[f32]>,
    stream: Stream,
) -> Vec<u32> {
    try_run_sample(gpu, shape, logits, temperatures, stream)
        .unwrap_or_else(|| panic!("{shape:?} refused"))
}

/// Runs the buffer-level API into a sentinel-poisoned output with 5 spare elements; checks that
/// exactly the `rows * top` result elements were written. `None` where the job is refused as
/// past llvmpipe's loop budget (only llvmpipe may refuse, with `Error::Unsupported`).
fn try_run_sample(
    gpu: &Gpu,
    shape: SampleShape,
    logits: &[u32],
    temperatures: Option<&[f32]>,
    stream: Stream,
) -> Option<Vec<u32>> {
    let len = (shape.rows * u64::from(shape.top)) as usize;
    let out = poisoned(gpu, len + 5);
    let buf = gpu.upload("logits", logits).unwrap();
    let temps = temperatures.map(|t| gpu.upload("temps", t).unwrap());
    let sampler = gpu.sampler().unwrap();
    let tau = temps.as_ref().map_or(Temperature::Scalar(1.0), |t| {
        Temperature::PerRow(t.slice(..))
    });
    let mut refused = false;
    run(gpu, |enc| {
        let job = shape.job(buf.slice(..), tau, stream, out.slice(..));
        match sampler.record_path(enc, &job, shape.strategy) {
            Ok(()) => {}
            Err(Error::Unsupported(e)) if gpu.describe().contains("llvmpipe") => {
                assert!(e.contains("llvmpipe"), "{e}");
                refused = true;
            }
            Err(e) => panic!("{shape:?}: {e}"),
        }
    });
    if refused {
        return None;
    }
    let got: Vec<u32> = gpu.read_buffer(&out, len + 5).unwrap();
    assert!(
        got[len..].iter().all(|&w| w == SENTINEL),
        "wrote past the end"
    );
    assert!(
        got[..len].iter().all(|&w| w != SENTINEL),
        "{shape:?}: an output element was never written"
    );
    Some(got[..len].to_vec())
}

fn bits(l: &[f32]) -> Vec<u32> {
    l.iter().map(|x| x.to_bits()).collect()
}

/// GPU noise is f32 (`l + g` rounded once more), the reference f64: two candidates whose
/// reference values differ by less than this may come out in either order.
fn near_tie(a: f64, b: f64) -> bool {
    (a == b) || (a - b).abs() < 1e-5 * a.abs().max(b.abs()).max(1.0)
}

/// Checks the GPU's lists against the f64 reference (values `z` as `cpu::sample_values` gives);
/// returns how many slots differ by a near tie. Any other difference fails.
fn compare(got: &[u32], z: &[f64], k: usize, top: usize, what: &str) -> usize {
    let want = cpu::top_k_of_values(z, k, top);
    let mut near = 0;
    for (r, (g, w)) in got.chunks(top).zip(want.chunks(top)).enumerate() {
        let zr = &z[r * k..(r + 1) * k];
        for i in 0..top {
            if g[i] == w[i] {
                continue;
            }
            assert!(
                g[i] != NO_INDEX
                    && w[i] != NO_INDEX
                    && near_tie(zr[g[i] as usize], zr[w[i] as usize]),
                "{what}: row {r} slot {i}: GPU {:?}, reference {:?}",
                &g,
                &w
            );
            near += 1;
        }
        let mut seen: Vec<u32> = g.iter().copied().filter(|&x| x != NO_INDEX).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen.len(),
            g.iter().filter(|&&x| x != NO_INDEX).count(),
            "{what}: row {r} repeats an index: {g:?}"
        );
    }
    near
}

/// Random logits in [-4, 4] with about 10% masked (-inf).
fn random_logits(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| {
            if rng.random::<f32>() < 0.1 {
                f32::NEG_INFINITY
            } else {
                rng.random_range(-4.0f32..4.0)
            }
        })
        .collect()
}

fn random_stream(rng: &mut StdRng) -> Stream {
    Stream {
        seed: rng.random(),
        offset: rng.random::<u64>() >> 1,
    }
}

#[test]
fn the_path_follows_the_shape() {
    let path = |rows, k| Sampler::strategy_for(rows, k, AUTO);
    assert!(matches!(path(1, 131_072), SampleStrategy::SplitRow { chunks } if chunks > 1));
    assert!(matches!(path(8, 131_072), SampleStrategy::SplitRow { chunks } if chunks > 1));
    assert!(matches!(path(1, 262_144), SampleStrategy::SplitRow { chunks } if chunks > 1));
    assert_eq!(path(512, 131_072), GROUP);
    assert_eq!(path(3, 4096), GROUP);
    assert_eq!(path(64, 1000), SEG_64);
    assert_eq!(path(1, 1000), SEG_64);
    assert_eq!(path(1_000_000, 100), SEG_8);
    assert_eq!(
        path(1_000_000, 33),
        SampleStrategy::RowPerSegment { threads: 4 }
    );
    assert_eq!(path(1_000_000, 8), THREAD);
    assert_eq!(path(3, 31), THREAD);
    // Top-k: split chunks hold at least 4 * top elements; rows past 65536 are split at any row
    // count, into chunks of at most 65536; Gumbel-max keeps its paths.
    let top = |rows, k, top| Sampler::strategy_for_top(rows, k, top, AUTO);
    let chunks = |s| match s {
        SampleStrategy::SplitRow { chunks } => chunks,
        s => panic!("{s:?} is no split"),
    };
    assert_eq!(chunks(top(1, 131_072, 1)), 32);
    assert_eq!(chunks(top(1, 131_072, 50)), 32);
    assert_eq!(chunks(top(1, 131_072, 4096)), 8);
    assert_eq!(chunks(top(64, 131_072, 50)), 16);
    assert_eq!(chunks(top(512, 262_144, 2)), 4);
    assert_eq!(chunks(top(100_000, 65_537, 2)), 2);
    assert_eq!(top(512, 262_144, 1), GROUP);
    assert_eq!(top(512, 65_536, 50), GROUP);
    assert_eq!(top(64, 1000, 500), SEG_64);
    assert_eq!(top(3, 31, 31), THREAD);
}

/// (k, row counts): awkward k, total work kept small enough for a software adapter.
const SWEEP: &[(usize, &[usize])] = &[
    (1, &[1, 300]),
    (2, &[1, 300]),
    (3, &[7, 300]),
    (31, &[1, 300]),
    (33, &[7, 300]),
    (255, &[1, 300]),
    (257, &[7, 65]),
    (4097, &[1, 5]),
    (65_537, &[1, 3]),
    (131_072, &[1, 8]),
    (262_144, &[1, 2]),
];

#[test]
fn every_path_matches_the_reference_at_awkward_sizes() {
    let mut rng = StdRng::seed_from_u64(10);
    let (mut slots, mut near) = (0usize, 0usize);
    // The shipping and portable configurations, and the shipping one without subgroups (the
    // workgroup-memory reductions) where gpu() takes the subgroup ones.
    let without = gpu().shader_config().subgroups.then(gpu_without_subgroups);
    for gpu in gpus().into_iter().chain(without) {
        for &(k, row_counts) in SWEEP {
            for &rows in row_counts {
                let logits = random_logits(&mut rng, rows * k);
                let stream = random_stream(&mut rng);
                let temps: Vec<f32> = (0..rows).map(|_| rng.random_range(0.25..4.0)).collect();
                // One draw at t = 1, and three without replacement at per-row temperatures, with
                // one and two words of noise per element (random offsets: odd and even phases).
                let cases = [Noise::Bits32, Noise::Bits64].map(|noise| {
                    [(1, None), (3.min(k), Some(&temps[..]))].map(|(top, t)| {
                        let z = cpu::sample_values(&logits, k, t, stream, noise);
                        (top, t, noise, z)
                    })
                });
                for strategy in [AUTO, THREAD, SEG_8, SEG_64, GROUP, SPLIT, SPLIT_7] {
                    for (top, temperatures, noise, z) in cases.iter().flatten() {
                        // Top > 1 (Gumbel-top-k) has no subgroup reduction: two runs suffice.
                        if *top > 1 && std::ptr::eq(gpu, gpu_without_subgroups()) {
                            continue;
                        }
                        if strategy == THREAD && k > 4097 && rows > 1 {
                            continue; // one invocation per huge row: slow here
                        }
                        let shape = SampleShape {
                            top: *top as u32,
                            strategy,
                            noise: *noise,
                            ..SampleShape::new(rows as u64, k as u64)
                        };
                        // Past llvmpipe's loop budget (large k on one invocation): refused there.
                        let Some(got) =
                            try_run_sample(gpu, shape, &bits(&logits), *temperatures, stream)
                        else {
                            continue;
                        };
                        let what = format!("k {k} rows {rows} top {top} {strategy:?} {noise:?}");
                        near += compare(&got, z, k, *top, &what);
                        slots += got.len();
                    }
                }
            }
        }
    }
    eprintln!("{near} near-tie mismatches in {slots} slots");
    assert!(near * 10_000 <= slots, "{near} near ties in {slots} slots");
}

/// Without temperatures the kernel's value is the f32 sum `l + g` with `g` bit-identical to
/// `Gpu::gumbel`, so an f32 model on the CPU must give exactly the GPU's lists.
#[test]
fn draws_are_exactly_the_top_of_logits_plus_the_gpu_gumbel_noise() {
    let mut rng = StdRng::seed_from_u64(11);
    for gpu in gpus() {
        // The last case's stream wraps past u64::MAX words mid-row.
        for (rows, k, offset) in [
            (300, 17, None),
            (40, 1000, None),
            (2, 70_001, Some(u64::MAX - 70_000)),
        ] {
            let logits = random_logits(&mut rng, rows * k);
            let mut stream = random_stream(&mut rng);
            if let Some(o) = offset {
                stream.offset = o;
            }
            let g = gpu.gumbel(stream, rows * k).unwrap();
            let z: Vec<f64> = logits
                .iter()
                .zip(&g)
                .map(|(&l, &g)| f64::from(l + g))
                .collect();
            for strategy in [AUTO, THREAD, SEG_1, SEG_8, GROUP, SPLIT_7] {
                let top = 4;
                let shape = SampleShape {
                    top,
                    strategy,
                    ..SampleShape::new(rows as u64, k as u64)
                };
                let Some(got) = try_run_sample(gpu, shape, &bits(&logits), None, stream) else {
                    continue; // past llvmpipe's loop budget
                };
                assert_eq!(
                    got,
                    cpu::top_k_of_values(&z, k, top as usize),
                    "rows {rows} k {k} {strategy:?}"
                );
            }
            // The slice API's draw is the arg-max of the same row.
            let first = gpu.sample(&logits, k, stream);
            let rows_ok =
                (0..rows).all(|r| logits[r * k..(r + 1) * k].iter().any(|x| x.is_finite()));
            if rows_ok {
                let first = first.unwrap();
                assert_eq!(first, cpu::top_k_of_values(&z, k, 1));
                let top = gpu.sample_top_k(&logits, k, 3, stream).unwrap();
                assert!(first.iter().zip(top.chunks(3)).all(|(&f, t)| f == t[0]));
            }
        }
    }
}

/// Two words per element (`Noise::Bits64`): element `n` takes words `2n` (high half) and `2n + 1`
/// (low half). At an odd offset (elements straddle Philox blocks) whose words wrap past
/// `u64::MAX` in row 1, every path gives the f64 reference's lists up to near ties, and not the
/// one-word lists: the kernel takes the noise it is told to.
#[test]
fn two_words_per_element_follow_the_reference_across_a_stream_wrap() {
    let mut rng = StdRng::seed_from_u64(17);
    let (rows, k, top) = (3usize, 4097usize, 4usize);
    let logits = random_logits(&mut rng, rows * k);
    let offset = u64::MAX - 12_000;
    assert_eq!(offset % 2, 1);
    let stream = Stream {
        seed: rng.random(),
        offset,
    };
    let z64 = cpu::sample_values(&logits, k, None, stream, Noise::Bits64);
    let z32 = cpu::sample_values(&logits, k, None, stream, Noise::Bits32);
    let one_word = cpu::top_k_of_values(&z32, k, top);
    for gpu in gpus() {
        for strategy in EVERY_PATH {
            let shape = SampleShape {
                top: top as u32,
                strategy,
                noise: Noise::Bits64,
                ..SampleShape::new(rows as u64, k as u64)
            };
            let Some(got) = try_run_sample(gpu, shape, &bits(&logits), None, stream) else {
                continue; // past llvmpipe's loop budget
            };
            let what = format!("{strategy:?} on {}", gpu.describe());
            compare(&got, &z64, k, top, &what);
            assert_ne!(got, one_word, "{what}: the one-word lists");
        }
    }
}

/// The low word counts, in every lane: at stream words `w` whose value (the high word of a
/// two-word element) is below 2^12, the low word `w + 1` moves the element's noise by up to
/// about 2^-12 (typically 1e-4), far more than f32 rounding (about 1e-6 at these values). Each
/// such `w` becomes element 0 of a 1 x 2 job (offset `w`: every phase, and lane 3 puts the low
/// word in the next Philox block), its rival element 1 set `2e-5` above or below it by the f64
/// reference: every path must follow the reference, so a kernel reading a wrong low word fails.
#[test]
fn the_low_word_of_two_word_noise_decides_close_draws() {
    let seed = 0x5eed_0064;
    let hits: Vec<u64> = small_high_words(seed).take(24).collect();
    let lanes: std::collections::BTreeSet<u64> = hits.iter().map(|w| w % 4).collect();
    assert_eq!(lanes.len(), 4, "every lane: {hits:?}");
    for gpu in gpus() {
        for &w in &hits {
            let stream = Stream { seed, offset: w };
            let g = |n| cpu::gumbel_noise(stream, n, Noise::Bits64);
            for (delta, want) in [(2e-5, 1u32), (-2e-5, 0u32)] {
                // z_1 = l_1 + g_1 = g_0 + delta.
                let logits = [0.0f32, (g(0) + delta - g(1)) as f32];
                for strategy in EVERY_PATH {
                    let shape = SampleShape {
                        strategy,
                        noise: Noise::Bits64,
                        ..SampleShape::new(1, 2)
                    };
                    let got = run_sample(gpu, shape, &bits(&logits), None, stream);
                    assert_eq!(got, [want], "word {w} delta {delta} {strategy:?}");
                }
            }
        }
    }
}

/// Exact ties: with `l_j = -g_j` (g from `Gpu::gumbel`) the f32 sum `l_j + g_j` is exactly 0;
/// the other entries get `l_j = -g_j - 1`, so their sums are about -1. Every path must return
/// the tied set in increasing index order.
#[test]
fn exact_ties_go_to_the_lowest_index_on_every_path() {
    let cases: &[(usize, usize, &[usize])] = &[
        (5, 31, &[30, 3, 17]),
        (3, 1000, &[999, 500, 0, 255, 256]),
        (2, 65_537, &[65_536, 40_000, 7, 12_345, 4096]),
    ];
    let without = gpu().shader_config().subgroups.then(gpu_without_subgroups);
    for gpu in gpus().into_iter().chain(without) {
        for &(rows, k, tied) in cases {
            let stream = Stream {
                seed: 99,
                offset: 5,
            };
            let g = gpu.gumbel(stream, rows * k).unwrap();
            let logits: Vec<f32> = (0..rows * k)
                .map(|i| {
                    if tied.contains(&(i % k)) {
                        -g[i]
                    } else {
                        -g[i] - 1.0
                    }
                })
                .collect();
            let mut want_row: Vec<u32> = tied.iter().map(|&j| j as u32).collect();
            want_row.sort_unstable();
            // Gumbel-max (top 1: the arg-max reductions) and the whole tied set.
            for top in [1, tied.len()] {
                let want: Vec<u32> = (0..rows).flat_map(|_| want_row[..top].to_vec()).collect();
                for strategy in [AUTO, THREAD, SEG_8, SEG_64, GROUP, SPLIT, SPLIT_7] {
                    let shape = SampleShape {
                        top: top as u32,
                        strategy,
                        ..SampleShape::new(rows as u64, k as u64)
                    };
                    let Some(got) = try_run_sample(gpu, shape, &bits(&logits), None, stream) else {
                        continue; // past llvmpipe's loop budget
                    };
                    assert_eq!(got, want, "k {k} top {top} {strategy:?}");
                }
            }
        }
    }
}

#[test]
fn infinite_and_nan_logits_follow_the_documented_policy() {
    let (ninf, inf, nan) = (f32::NEG_INFINITY, f32::INFINITY, f32::NAN);
    let k = 40;
    let mut rows: Vec<Vec<f32>> = Vec::new();
    // Two +inf among masked entries: the first +inf, then the second, then nothing.
    let mut r = vec![ninf; k];
    r[20] = inf;
    r[5] = inf;
    rows.push(r);
    // +inf entries come before every finite value, then the finite ones by value.
    let mut r = vec![0.0; k];
    r[9] = 50.0;
    r[33] = inf;
    r[12] = inf;
    rows.push(r);
    // All masked (buffer level only): NO_INDEX.
    rows.push(vec![ninf; k]);
    // NaN is skipped like a masked entry (buffer level only), even a NaN far above everything.
    let mut r = vec![nan; k];
    r[7] = -3.0;
    rows.push(r);
    let logits: Vec<f32> = rows.concat();
    let want = [
        [5, 20, NO_INDEX],
        [12, 33, 9],
        [NO_INDEX; 3],
        [7, NO_INDEX, NO_INDEX],
    ];
    let stream = Stream::new(3);
    for gpu in gpus() {
        for strategy in [AUTO, THREAD, SEG_8, GROUP, SPLIT, SPLIT_7] {
            for format in [LogitsFormat::F32, LogitsFormat::F16] {
                let words = match format {
                    LogitsFormat::F32 => bits(&logits),
                    _ => logits::pack_u16(
                        &logits
                            .iter()
                            .map(|&x| logits::f32_to_f16(x))
                            .collect::<Vec<_>>(),
                    ),
                };
                let shape = SampleShape {
                    top: 3,
                    format,
                    strategy,
                    ..SampleShape::new(rows.len() as u64, k as u64)
                };
                let got = run_sample(gpu, shape, &words, None, stream);
                assert_eq!(got, want.concat(), "{strategy:?} {format:?}");
            }
        }
    }
    assert_eq!(
        cpu::top_k(&logits, k, 3, None, stream),
        want.concat(),
        "the reference"
    );
}

#[test]
fn f16_and_bf16_logits_match_the_reference_on_their_widened_values() {
    let mut rng = StdRng::seed_from_u64(12);
    for gpu in gpus() {
        for (rows, k) in [(3, 7), (500, 7), (20, 3001), (1, 131_072)] {
            let stream = random_stream(&mut rng);
            let f = random_logits(&mut rng, rows * k);
            let temps: Vec<f32> = (0..rows).map(|_| rng.random_range(0.5..2.0)).collect();
            let h: Vec<u16> = f.iter().map(|&x| logits::f32_to_f16(x)).collect();
            let b: Vec<u16> = f.iter().map(|&x| logits::f32_to_bf16(x)).collect();
            for (input, wide) in [
                (
                    LogitsSlice::F16(&h),
                    h.iter().map(|&x| logits::f16_to_f32(x)).collect::<Vec<_>>(),
                ),
                (
                    LogitsSlice::Bf16(&b),
                    b.iter().map(|&x| logits::bf16_to_f32(x)).collect(),
                ),
            ] {
                let drawable = |r: usize| {
                    wide[r * k..(r + 1) * k]
                        .iter()
                        .filter(|x| x.is_finite())
                        .count()
                };
                if (0..rows).any(|r| drawable(r) < 2) {
                    continue; // the slice API rejects such rows
                }
                let opts = SampleOptions {
                    temperatures: Some(&temps),
                    ..Default::default()
                };
                let got = gpu.sample_with(input, k, 2, stream, &opts).unwrap();
                let z = cpu::sample_values(&wide, k, Some(&temps), stream, Noise::Bits32);
                compare(&got, &z, k, 2, &format!("{input:?}"));
            }
        }
    }
}

#[test]
fn chunked_dispatch_gives_the_same_draws_as_one_dispatch() {
    // As if a storage binding held 1024 elements: rows are split over many dispatches, and the
    // binding windows start at unaligned rows.
    let small = chunked_gpu(1024);
    let mut rng = StdRng::seed_from_u64(13);
    let (rows, k) = (203, 77);
    let logits = random_logits(&mut rng, rows * k);
    let h: Vec<u16> = logits.iter().map(|&x| logits::f32_to_f16(x)).collect();
    let temps: Vec<f32> = (0..rows).map(|_| rng.random_range(0.5..2.0)).collect();
    // An odd offset: with two words per element, elements straddle Philox blocks.
    let stream = Stream { seed: 8, offset: 3 };
    for strategy in [THREAD, SEG_8, GROUP, SPLIT_7] {
        for (format, words) in [
            (LogitsFormat::F32, bits(&logits)),
            (LogitsFormat::F16, logits::pack_u16(&h)),
        ] {
            for noise in [Noise::Bits32, Noise::Bits64] {
                let shape = SampleShape {
                    top: 3,
                    format,
                    strategy,
                    noise,
                    ..SampleShape::new(rows as u64, k as u64)
                };
                let chunked = run_sample(&small, shape, &words, Some(&temps), stream);
                let whole = run_sample(gpu(), shape, &words, Some(&temps), stream);
                assert_eq!(chunked, whole, "{strategy:?} {format:?} {noise:?}");
            }
        }
    }
    // A row that does not fit in one binding is an error, not a wrong answer.
    assert!(matches!(
        small.sample(&vec![0.0; 2000], 2000, stream),
        Err(Error::TooLarge(_))
    ));
}

#[test]
fn more_than_65535_workgroups_per_dimension() {
    // 2 rows x 35000 chunks: the first pass needs a 2-D grid of 70000 workgroups (every kernel
    // linearises it the same way), nearly all of them with an empty chunk, and the combine pass
    // merges 35000 partial lists per row.
    let (rows, k) = (2usize, 4099usize);
    let mut rng = StdRng::seed_from_u64(16);
    let logits = random_logits(&mut rng, rows * k);
    let stream = random_stream(&mut rng);
    let shape = SampleShape {
        top: 2,
        strategy: SampleStrategy::SplitRow { chunks: 35_000 },
        ..SampleShape::new(rows as u64, k as u64)
    };
    let got = run_sample(gpu(), shape, &bits(&logits), None, stream);
    let z = cpu::sample_values(&logits, k, None, stream, Noise::Bits32);
    compare(&got, &z, k, 2, "70000 workgroups");
}

// ---------------------------------------------------------------------------------------------
// The law of the draws.

fn softmax(l: &[f64]) -> Vec<f64> {
    let m = l.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
    let e: Vec<f64> = l.iter().map(|&x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// Significance of every chi-square test below: a correct sampler fails one with probability
/// 1e-3 per seed; the seeds are fixed, so the outcome is reproducible.
const ALPHA: f64 = 1e-3;

#[test]
fn chi_square_sanity_of_the_helper() {
    // Known quantiles: chi-square(1) at 10.828 and chi-square(10) at 29.588 have p = 0.001.
    assert!((gamma_q(0.5, 10.828 / 2.0) - 1e-3).abs() < 1e-5);
    assert!((gamma_q(5.0, 29.588 / 2.0) - 1e-3).abs() < 1e-5);
    // Integer a: Q(a, x) = exp(-x) sum_{i < a} x^i / i!, on both sides of the switch at a + 1.
    for (a, x) in [(50u32, 30.0f64), (50, 50.0), (50, 80.0), (3, 1.0), (1, 7.0)] {
        let mut term = (-x).exp();
        let mut sum = 0.0;
        for i in 0..a {
            sum += term;
            term *= x / f64::from(i + 1);
        }
        let q = gamma_q(f64::from(a), x);
        assert!(
            (q - sum).abs() < 1e-9 * sum.max(1e-3),
            "Q({a}, {x}) = {q}, want {sum}"
        );
    }
}

#[test]
fn draw_frequencies_match_softmax_for_many_rows_of_the_same_logits() {
    let mut rng = StdRng::seed_from_u64(14);
    // (k, rows, temperature, noise): thread path for k = 2 and 10, workgroup path for k = 1000.
    for (k, rows, t, noise) in [
        (2usize, 20_000usize, 1.0f32, Noise::Bits32),
        (10, 20_000, 1.0, Noise::Bits32),
        (10, 20_000, 2.5, Noise::Bits32),
        (1000, 20_000, 1.0, Noise::Bits32),
        (10, 20_000, 1.0, Noise::Bits64),
        (1000, 20_000, 2.5, Noise::Bits64),
    ] {
        let row: Vec<f32> = (0..k).map(|_| rng.random_range(-3.0f32..3.0)).collect();
        let logits: Vec<f32> = (0..rows).flat_map(|_| row.clone()).collect();
        let temps = vec![t; rows];
        let opts = SampleOptions {
            temperatures: Some(&temps),
            noise,
            ..Default::default()
        };
        let stream = random_stream(&mut rng);
        let draws = gpu()
            .sample_with(LogitsSlice::F32(&logits), k, 1, stream, &opts)
            .unwrap();
        let mut counts = vec![0u64; k];
        for d in draws {
            counts[d as usize] += 1;
        }
        let p = softmax(&row.iter().map(|&l| f64::from(l / t)).collect::<Vec<_>>());
        let pv = chi_square_p_value(&counts, &p);
        eprintln!("k {k} t {t} {noise:?}, {rows} draws: chi-square p = {pv}");
        assert!(pv > ALPHA, "k {k} t {t} {noise:?}: chi-square p = {pv}");
    }
}

#[test]
fn draws_from_a_peaked_131072_way_row_match_softmax() {
    // An LM-like Zipf profile p_j ~ (j + 1)^-1.1, drawn 1000 times by advancing the stream one
    // row at a time (split-row path). Submitted 100 draws at a time: llvmpipe GL holds its
    // context lock while it waits, and other tests' threads time out on a long wait.
    let k = 131_072usize;
    let draws = 1000usize;
    let row: Vec<f32> = (0..k).map(|j| -1.1 * ((j + 1) as f32).ln()).collect();
    let gpu = gpu();
    let sampler = gpu.sampler().unwrap();
    let buf = gpu.upload("logits", &row).unwrap();
    let one = gpu.storage_buffer("one draw", 4).unwrap();
    let all = poisoned(gpu, draws);
    let stream = Stream {
        seed: 2024,
        offset: 1,
    };
    for batch in 0..draws / 100 {
        run(gpu, |enc| {
            for d in batch * 100..(batch + 1) * 100 {
                let s = stream.advance((d * k) as u64);
                let job = SampleShape::new(1, k as u64).job(
                    buf.slice(..),
                    Temperature::Scalar(1.0),
                    s,
                    one.slice(..),
                );
                sampler.record(enc, &job).unwrap();
                enc.copy_buffer_to_buffer(&one, 0, &all, 4 * d as u64, Some(4));
            }
        });
    }
    let got: Vec<u32> = gpu.read_buffer(&all, draws).unwrap();
    let mut counts = vec![0u64; k];
    for d in got {
        counts[d as usize] += 1;
    }
    let p = softmax(&row.iter().map(|&l| f64::from(l)).collect::<Vec<_>>());
    let pv = chi_square_p_value(&counts, &p);
    eprintln!("131072-way Zipf row, {draws} draws: chi-square p = {pv}");
    assert!(pv > ALPHA, "chi-square p = {pv}");
}

#[test]
fn top_k_draws_follow_the_plackett_luce_law() {
    // Ordered draws without replacement: P(i1, .., im) = prod_s p_is / (1 - p_i1 - .. - p_is-1).
    let row = [1.0f32, 0.5, 0.0, -1.0];
    let p = softmax(&row.iter().map(|&l| f64::from(l)).collect::<Vec<_>>());
    let k = row.len();
    let mut rng = StdRng::seed_from_u64(15);
    for (top, rows) in [(2usize, 40_000usize), (4, 40_000)] {
        let logits: Vec<f32> = (0..rows).flat_map(|_| row).collect();
        let got = gpu()
            .sample_top_k(&logits, k, top, random_stream(&mut rng))
            .unwrap();
        // Cells: ordered tuples, indexed in base k.
        let cells = k.pow(top as u32);
        let mut counts = vec![0u64; cells];
        for t in got.chunks(top) {
            counts[t.iter().fold(0, |c, &i| c * k + i as usize)] += 1;
        }
        let law: Vec<f64> = (0..cells)
            .map(|c| {
                let idx: Vec<usize> = (0..top).rev().map(|s| c / k.pow(s as u32) % k).collect();
                let mut sorted = idx.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() < top {
                    return 0.0;
                }
                let mut left = 1.0;
                let mut prob = 1.0;
                for &i in &idx {
                    prob *= p[i] / left;
                    left -= p[i];
                }
                prob
            })
            .collect();
        let pv = chi_square_p_value(&counts, &law);
        eprintln!("Plackett-Luce k {k} top {top}, {rows} draws: chi-square p = {pv}");
        assert!(pv > ALPHA, "top {top}: chi-square p = {pv}");
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn bad_input_is_an_error_naming_the_row() {
    let gpu = gpu();
    let s = Stream::new(1);
    let (ninf, nan) = (f32::NEG_INFINITY, f32::NAN);
    assert_eq!(
        gpu.sample(&[0.0, 1.0, 2.0, nan], 2, s),
        Err(Error::NanInRow { row: 1 })
    );
    assert_eq!(
        gpu.sample(&[0.0, 1.0, ninf, ninf, 3.0, 4.0], 2, s),
        Err(Error::AllMaskedRow { row: 1 })
    );
    assert_eq!(
        gpu.sample_top_k(&[0.0, 1.0, 2.0, ninf, 3.0, ninf], 3, 2, s),
        Err(Error::InvalidArgument(
            "row 1: 1 logits other than -inf, fewer than top = 2".into()
        ))
    );
    let invalid = |r: Result<Vec<u32>, Error>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(invalid(gpu.sample(&[0.0; 4], 0, s)), "k = 0");
    assert!(invalid(gpu.sample(&[], 0, s)), "k = 0, empty");
    assert!(invalid(gpu.sample(&[0.0; 5], 2, s)), "k does not divide");
    assert!(invalid(gpu.sample_top_k(&[0.0; 4], 2, 0, s)), "top 0");
    assert!(invalid(gpu.sample_top_k(&[0.0; 4], 2, 3, s)), "top > k");
    let wide = vec![0.0; 2 * (MAX_TOP + 1)];
    assert!(
        invalid(gpu.sample_top_k(&wide, MAX_TOP + 1, MAX_TOP + 1, s)),
        "top > MAX_TOP"
    );
    for t in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let opts = SampleOptions {
            temperatures: Some(&[1.0, t]),
            ..Default::default()
        };
        assert!(
            invalid(gpu.sample_with(LogitsSlice::F32(&[0.0; 4]), 2, 1, s, &opts)),
            "temperature {t}"
        );
    }
    let opts = SampleOptions {
        temperatures: Some(&[1.0]),
        ..Default::default()
    };
    assert!(
        invalid(gpu.sample_with(LogitsSlice::F32(&[0.0; 4]), 2, 1, s, &opts)),
        "one temperature for two rows"
    );
    let opts = SampleOptions {
        temperatures: Some(&[1e-3]),
        ..Default::default()
    };
    assert!(
        invalid(gpu.sample_with(LogitsSlice::F32(&[3e38, 0.0]), 2, 1, s, &opts)),
        "l / t overflows"
    );
    // Empty input: empty output.
    assert_eq!(gpu.sample(&[], 3, s), Ok(vec![]));
    assert_eq!(gpu.sample_top_k(&[], 3, 2, s), Ok(vec![]));
}

#[test]
fn buffer_level_misuse_is_an_error_not_a_panic() {
    let gpu = gpu();
    let sampler = gpu.sampler().unwrap();
    let logits = gpu.upload("logits", &[0.0f32; 12]).unwrap();
    let out = gpu.storage_buffer("out", 8).unwrap();
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    let s = Stream::new(0);
    let no_tau = Temperature::Scalar(1.0);
    for (shape, what) in [
        (SampleShape::new(3, 4), "out"),
        (SampleShape::new(2, 8), "logits"),
        (SampleShape::new(2, 0), "k"),
        (
            SampleShape {
                strategy: SampleStrategy::RowPerSegment { threads: 12 },
                ..SampleShape::new(2, 6)
            },
            "power of two",
        ),
        (
            SampleShape {
                top: 5,
                ..SampleShape::new(2, 4)
            },
            "top",
        ),
    ] {
        let job = shape.job(logits.slice(..), no_tau, s, out.slice(..));
        let e = sampler
            .record_path(&mut enc, &job, shape.strategy)
            .unwrap_err();
        assert!(e.to_string().contains(what), "{what}: {e}");
    }
    let temps = gpu.storage_buffer("temps", 4).unwrap();
    let job = SampleShape::new(2, 6).job(
        logits.slice(..),
        Temperature::PerRow(temps.slice(..)),
        s,
        out.slice(..),
    );
    let e = sampler.record(&mut enc, &job).unwrap_err();
    assert!(e.to_string().contains("tau"), "{e}");
    // Views must start at a multiple of 4 bytes and be storage buffers.
    let job = SampleShape::new(1, 4).job(logits.slice(2..), no_tau, s, out.slice(..));
    let e = sampler.record(&mut enc, &job).unwrap_err();
    assert!(
        e.to_string().contains("logits") && e.to_string().contains("multiple of 4"),
        "{e}"
    );
    let not_storage = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let job = SampleShape::new(2, 6).job(logits.slice(..), no_tau, s, not_storage.slice(..));
    let e = sampler.record(&mut enc, &job).unwrap_err();
    assert!(
        e.to_string().contains("out") && e.to_string().contains("STORAGE"),
        "{e}"
    );
    // Scalar temperatures are checked like the slice API's: subnormal is refused.
    let job = SampleShape::new(2, 6).job(
        logits.slice(..),
        Temperature::Scalar(1e-40),
        s,
        out.slice(..),
    );
    assert!(sampler.record(&mut enc, &job).is_err(), "subnormal tau");
    // Zero rows record nothing.
    let job = SampleShape::new(0, 6).job(logits.slice(..), no_tau, s, out.slice(..));
    sampler.record(&mut enc, &job).unwrap();
}

#[test]
fn top_k_past_llvmpipe_loop_budget_is_an_error_there_and_exact_elsewhere() {
    // llvmpipe silently ends an invocation's loops after 65535 iterations in all. On increasing
    // logits every element beats the threshold, so a team merges after every round: one
    // workgroup on a 262144-wide row needs far more than the budget at top 4096. Without the
    // check such a job returned wrong indices.
    let (k, top) = (262_144usize, 4096usize);
    let l: Vec<f32> = (0..k).map(|j| 30.0 * j as f32).collect();
    let s = Stream::new(4);
    // The top 4096 of increasing values: the last 4096 indices, the last first.
    let want: Vec<u32> = (0..top).map(|i| (k - 1 - i) as u32).collect();
    assert_eq!(cpu::top_k(&l, k, top, None, s), want);
    let opts = SampleOptions {
        strategy: GROUP,
        ..Default::default()
    };
    match gpu().sample_with(LogitsSlice::F32(&l), k, top, s, &opts) {
        Ok(v) => assert_eq!(v, want),
        Err(e) => {
            assert!(matches!(e, Error::Unsupported(_)), "{e}");
            assert!(
                gpu().describe().contains("llvmpipe"),
                "only llvmpipe refuses: {e}"
            );
        }
    }
    // The automatic path (split rows) stays inside the budget and is exact.
    assert_eq!(gpu().sample_top_k(&l, k, top, s).unwrap(), want);
}

/// Byte offsets of the views in the offset tests: 4-byte aligned, not 256-byte aligned.
const OFFSETS: &[u64] = &[4, 260, 1028];

#[test]
fn views_at_any_4_byte_offset_give_the_offset_0_result_and_leave_the_neighbours_alone() {
    // Every path, each format, per-row and scalar temperatures: logits, temperatures and output
    // each placed at `offset` bytes inside a buffer with sentinels on both sides.
    let mut rng = StdRng::seed_from_u64(909);
    let chunked = chunked_gpu(4096);
    let cases = [
        (gpu(), 3u64, 33u64, 1u32, THREAD),
        (gpu(), 5, 257, 3, SEG_8),
        (gpu(), 2, 4097, 2, GROUP),
        (gpu(), 2, 9000, 2, SPLIT),
        (&chunked, 7, 1500, 1, AUTO),
    ];
    for (gpu, rows, k, top, strategy) in cases {
        for format in [LogitsFormat::F32, LogitsFormat::F16, LogitsFormat::Bf16] {
            for per_row in [false, true] {
                let l = masked_logits(&mut rng, rows as usize, k as usize, 0.1);
                let words = LogitsSlice::F32(&l);
                let h: Vec<u16>;
                let words = match format {
                    LogitsFormat::F32 => words.words(),
                    LogitsFormat::F16 => {
                        h = l.iter().map(|&x| logits::f32_to_f16(x)).collect();
                        LogitsSlice::F16(&h).words()
                    }
                    LogitsFormat::Bf16 => {
                        h = l.iter().map(|&x| logits::f32_to_bf16(x)).collect();
                        LogitsSlice::Bf16(&h).words()
                    }
                };
                let taus: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32 * 0.25).collect();
                let shape = SampleShape {
                    top,
                    format,
                    strategy,
                    ..SampleShape::new(rows, k)
                };
                let stream = Stream { seed: k, offset: 7 };
                let n_out = (rows * u64::from(top)) as usize;
                let mut results = Vec::new();
                for &offset in &[0u64, OFFSETS[0], OFFSETS[1], OFFSETS[2]] {
                    let pad = offset as usize / 4;
                    let embed = |data: &[u32]| {
                        let mut v = vec![SENTINEL; pad];
                        v.extend_from_slice(data);
                        v.extend(std::iter::repeat_n(SENTINEL, 19));
                        gpu.upload("shared", &v).unwrap()
                    };
                    let lbuf = embed(&words);
                    let tbuf = embed(&bits(&taus));
                    let obuf = embed(&vec![SENTINEL; n_out]);
                    let lbytes = format.buffer_bytes(rows * k);
                    let tau = if per_row {
                        Temperature::PerRow(tbuf.slice(offset..offset + rows * 4))
                    } else {
                        Temperature::Scalar(0.75)
                    };
                    let sampler = gpu.sampler().unwrap();
                    run(gpu, |enc| {
                        let job = shape.job(
                            lbuf.slice(offset..offset + lbytes),
                            tau,
                            stream,
                            obuf.slice(offset..offset + n_out as u64 * 4),
                        );
                        sampler.record_path(enc, &job, strategy).unwrap()
                    });
                    let got: Vec<u32> = gpu.read_buffer(&obuf, pad + n_out + 19).unwrap();
                    let what = format!(
                        "{rows}x{k} top {top} {format:?} {strategy:?} per-row {per_row} at byte {offset}"
                    );
                    assert!(
                        got[..pad]
                            .iter()
                            .chain(&got[pad + n_out..])
                            .all(|&w| w == SENTINEL),
                        "{what}: wrote outside its view"
                    );
                    let inputs_kept: Vec<u32> = gpu.read_buffer(&lbuf, pad).unwrap();
                    assert!(inputs_kept.iter().all(|&w| w == SENTINEL), "{what}");
                    results.push((what, got[pad..pad + n_out].to_vec()));
                }
                for (what, r) in &results[1..] {
                    assert_eq!(r, &results[0].1, "{what} differs from offset 0");
                }
                // And offset 0 is right: the slice API on the same data and path (its own
                // tests hold it to the CPU reference); a scalar tau is a row of equal ones.
                if format == LogitsFormat::F32 {
                    let row_taus: Vec<f32> = if per_row {
                        taus.clone()
                    } else {
                        vec![0.75; rows as usize]
                    };
                    let options = SampleOptions {
                        temperatures: Some(&row_taus),
                        strategy,
                        ..Default::default()
                    };
                    let want = gpu
                        .sample_with(
                            LogitsSlice::F32(&l),
                            k as usize,
                            top as usize,
                            stream,
                            &options,
                        )
                        .unwrap();
                    assert_eq!(results[0].1, want, "{}", results[0].0);
                }
            }
        }
    }
}

/// Every path of the buffer-level API, by name.
const EVERY_PATH: [SampleStrategy; 8] = [AUTO, THREAD, SEG_1, SEG_8, SEG_64, GROUP, SPLIT, SPLIT_7];

/// Rows of four kinds, row `r` of kind `kinds[r % kinds.len()]`: 0, random logits with 10%
/// masked; 1, nearly all masked (fewer candidates than most `top`: the rest is NO_INDEX); 2,
/// exactly tied (`l = -g`, so `l + g = 0` everywhere: the list is 0, 1, 2, ... on every path);
/// 3, increasing (`l_j = 30 j`: every element beats the threshold, the most merges, the worst
/// case of the loop-budget estimate).
fn top_k_rows(rng: &mut StdRng, kinds: &[usize], rows: usize, k: usize, g: &[f32]) -> Vec<f32> {
    (0..rows * k)
        .map(|i| match kinds[(i / k) % kinds.len()] {
            0 if rng.random::<f32>() < 0.1 => f32::NEG_INFINITY,
            0 => rng.random_range(-4.0f32..4.0),
            1 if rng.random::<f32>() < 0.99 => f32::NEG_INFINITY,
            1 => rng.random_range(-4.0f32..4.0),
            2 => -g[i],
            _ => 30.0 * (i % k) as f32,
        })
        .collect()
}

/// Awkward `top` (2 .. 4096) on awkward `k` (up to 262147) on every path, into poisoned outputs:
/// exactly the top of the f32 model (the logits plus `Gpu::gumbel`'s noise), which
/// `cpu::top_k_of_values` ranks, and `cpu::top_k` (f64) up to near ties. Only llvmpipe may
/// refuse a path (its loop budget), never the automatic one, and what it runs is exact even on
/// increasing rows, the worst case of its estimate.
#[test]
fn large_top_at_awkward_k_is_exact_on_every_path() {
    let tops = [2u32, 3, 31, 33, 255, 257, 1024, 4096];
    // (k, row kinds): the widest rows are two (random and increasing), so that no submission
    // holds llvmpipe GL's context lock for long (other tests' threads time out waiting on it).
    const ALL: &[usize] = &[0, 1, 2, 3];
    let cases: &[(usize, &[usize])] = &[
        (33, ALL),
        (300, ALL),
        (4099, ALL),
        (65_537, ALL),
        (262_147, &[0, 3]),
    ];
    let mut rng = StdRng::seed_from_u64(4096);
    let (mut ran, mut refused) = (0, Vec::new());
    for gpu in gpus() {
        for &(k, kinds) in cases {
            let rows = kinds.len().max(if k < 1000 { 8 } else { 0 });
            let stream = random_stream(&mut rng);
            let g = gpu.gumbel(stream, rows * k).unwrap();
            let logits = top_k_rows(&mut rng, kinds, rows, k, &g);
            let z: Vec<f64> = logits
                .iter()
                .zip(&g)
                .map(|(&l, &g)| f64::from(l + g))
                .collect();
            let z64 = cpu::sample_values(&logits, k, None, stream, Noise::Bits32);
            for &top in tops.iter().filter(|&&t| t as usize <= k) {
                let want = cpu::top_k_of_values(&z, k, top as usize);
                for (r, w) in want.chunks(top as usize).enumerate() {
                    if kinds[r % kinds.len()] == 2 {
                        assert!(w.iter().enumerate().all(|(i, &j)| j == i as u32));
                    }
                }
                for strategy in EVERY_PATH {
                    if (strategy == THREAD || strategy == SEG_1) && k > 4099 && top > 3 {
                        continue; // one invocation per huge row and a large list: slow here
                    }
                    let shape = SampleShape {
                        top,
                        strategy,
                        ..SampleShape::new(rows as u64, k as u64)
                    };
                    let what = format!("k {k} top {top} {strategy:?}");
                    let Some(got) = try_run_sample(gpu, shape, &bits(&logits), None, stream) else {
                        assert_ne!(strategy, AUTO, "{what}: the automatic path was refused");
                        refused.push(what);
                        continue;
                    };
                    ran += 1;
                    for (r, (a, b)) in got
                        .chunks(top as usize)
                        .zip(want.chunks(top as usize))
                        .enumerate()
                    {
                        assert!(
                            a == b,
                            "{what}: row {r}: {:?}.. want {:?}..",
                            &a[..8.min(a.len())],
                            &b[..8.min(b.len())]
                        );
                    }
                    // The f64 reference of the non-tied rows, up to near ties.
                    for r in (0..rows).filter(|r| kinds[r % kinds.len()] != 2) {
                        let (zr, t) = (&z64[r * k..(r + 1) * k], top as usize);
                        compare(&got[r * t..(r + 1) * t], zr, k, t, &what);
                    }
                }
            }
        }
    }
    eprintln!(
        "{ran} runs exact; refused on llvmpipe: {}: {refused:?}",
        refused.len()
    );
}

/// Per-row temperatures and f16 logits on every path at large `top`, against the f64 reference
/// (near ties only) and the automatic path.
#[test]
fn large_top_with_temperatures_and_f16_agrees_on_every_path() {
    let mut rng = StdRng::seed_from_u64(257);
    let (rows, k) = (3usize, 9001usize);
    let logits = random_logits(&mut rng, rows * k);
    let h: Vec<u16> = logits.iter().map(|&x| logits::f32_to_f16(x)).collect();
    let wide: Vec<f32> = h.iter().map(|&x| logits::f16_to_f32(x)).collect();
    let temps = [0.5f32, 1.0, 3.0];
    let stream = random_stream(&mut rng);
    for top in [257u32, 4096] {
        let z = cpu::sample_values(&wide, k, Some(&temps), stream, Noise::Bits32);
        let mut first: Option<Vec<u32>> = None;
        for strategy in EVERY_PATH {
            let shape = SampleShape {
                top,
                format: LogitsFormat::F16,
                strategy,
                ..SampleShape::new(rows as u64, k as u64)
            };
            let what = format!("f16 top {top} {strategy:?}");
            let Some(got) =
                try_run_sample(gpu(), shape, &logits::pack_u16(&h), Some(&temps), stream)
            else {
                assert_ne!(strategy, AUTO, "{what}: the automatic path was refused");
                continue;
            };
            compare(&got, &z, k, top as usize, &what);
            match &first {
                None => first = Some(got),
                Some(f) => assert_eq!(&got, f, "{what} differs from the automatic path"),
            }
        }
    }
}

#[test]
fn an_output_sharing_a_buffer_with_an_input_is_an_error_naming_both() {
    // wgpu cannot bind one buffer read-only and read-write in a dispatch: refused when recorded,
    // naming the arguments, rather than as a validation error at submit.
    let gpu = gpu();
    let sampler = gpu.sampler().unwrap();
    let shared = gpu.upload("shared", &[0.0f32; 64]).unwrap();
    let other = gpu.storage_buffer("other", 64).unwrap();
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    let shape = SampleShape::new(2, 8);
    let job = shape.job(
        shared.slice(..64),
        Temperature::Scalar(1.0),
        Stream::new(0),
        shared.slice(128..136),
    );
    let e = sampler.record(&mut enc, &job).unwrap_err().to_string();
    assert!(e.contains("out") && e.contains("logits"), "{e}");
    let job = shape.job(
        other.slice(..64),
        Temperature::PerRow(shared.slice(..8)),
        Stream::new(0),
        shared.slice(128..136),
    );
    let e = sampler.record(&mut enc, &job).unwrap_err().to_string();
    assert!(e.contains("out") && e.contains("tau"), "{e}");
    // Separate buffers are fine.
    let job = shape.job(
        other.slice(..64),
        Temperature::Scalar(1.0),
        Stream::new(0),
        shared.slice(128..136),
    );
    sampler.record(&mut enc, &job).unwrap();
}
