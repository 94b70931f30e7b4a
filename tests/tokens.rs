//! Token sampling (`Gpu::sample_tokens`, `TokenSampler`) against the f64 reference
//! (`cpu::sample_tokens`, `cpu::token_probabilities`): exact agreement up to documented f32
//! near-ties, the law of the draws (chi-square), batch invariance, log-probabilities, errors.
//! Speculative verification against its reference and its law.

mod common;

use common::{SENTINEL, chi_square_p_value, gamma_q, gpu, poisoned, run, small_high_words};
use gumbel_wgpu::{
    Error, LogitsSlice, LogitsView, NO_INDEX, Noise, RowSampling, SpeculativeJob, Stream, TokenJob,
    TokenRowParams, TokenSampler, TokenSampling, cpu, stream_words,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Random logits in [-4, 4) with about 10% masked, every row keeping one finite entry. With
/// `quantised`, values on a grid of 0.5, so equal logits (ties) are common.
fn logits(rng: &mut StdRng, rows: usize, k: usize, quantised: bool) -> Vec<f32> {
    let mut l: Vec<f32> = (0..rows * k)
        .map(|_| {
            if rng.random::<f32>() < 0.1 {
                f32::NEG_INFINITY
            } else if quantised {
                (rng.random_range(-8i32..8) as f32) * 0.5
            } else {
                rng.random_range(-4.0f32..4.0)
            }
        })
        .collect();
    for r in 0..rows {
        let j = rng.random_range(0..k);
        if l[r * k + j] == f32::NEG_INFINITY {
            l[r * k + j] = 0.25;
        }
    }
    l
}

fn stream(rng: &mut StdRng) -> Stream {
    Stream {
        seed: rng.random(),
        offset: rng.random::<u64>() >> 1,
    }
}

/// Random per-row parameters: greedy rows, each filter on about half the time; half the top-k
/// values at most 600, so a top-p after them takes both of its paths (at most 512 kept: the
/// workgroup-memory walk; more: the radix search).
fn row_params(rng: &mut StdRng, k: usize) -> RowSampling {
    let t = [0.0, 0.5, 1.0, 1.7][rng.random_range(0..4)];
    RowSampling {
        temperature: t,
        top_k: match rng.random_range(0..4) {
            0 | 1 => 0,
            2 => rng.random_range(1..=(k as u32).min(600)),
            _ => rng.random_range(1..=k as u32),
        },
        top_p: if rng.random::<bool>() {
            rng.random_range(0.05f32..1.0)
        } else {
            1.0
        },
        min_p: if rng.random::<bool>() {
            rng.random_range(0.0f32..0.6)
        } else {
            0.0
        },
        ..RowSampling::new(t)
    }
}

/// Owned parameter vectors, lent out as a `TokenSampling`.
#[derive(Default)]
struct Params {
    t: Vec<f32>,
    top_k: Vec<u32>,
    top_p: Vec<f32>,
    min_p: Vec<f32>,
    streams: Vec<Stream>,
    n: usize,
}

impl Params {
    fn of(rows: &[RowSampling], streams: Vec<Stream>, n: usize) -> Self {
        Params {
            t: rows.iter().map(|r| r.temperature).collect(),
            top_k: rows.iter().map(|r| r.top_k).collect(),
            top_p: rows.iter().map(|r| r.top_p).collect(),
            min_p: rows.iter().map(|r| r.min_p).collect(),
            streams,
            n,
        }
    }
    fn get(&self) -> TokenSampling<'_> {
        TokenSampling {
            temperature: &self.t,
            top_k: &self.top_k,
            top_p: &self.top_p,
            min_p: &self.min_p,
            streams: &self.streams,
            logprobs: self.n,
            ..Default::default()
        }
    }
}

/// The kept set of a row under `p` with min-p and top-p moved by `eps` (relative): `eps > 0`
/// loosens (keeps more), `eps < 0` tightens. f32 on the GPU and f64 here may disagree on
/// entries within that distance of a cut.
fn kept(row: &[f32], p: &RowSampling, eps: f32) -> Vec<bool> {
    let q = RowSampling {
        min_p: p.min_p * (1.0 - eps),
        top_p: if p.top_p < 1.0 {
            (p.top_p * (1.0 + eps)).min(1.0)
        } else {
            1.0
        },
        ..*p
    };
    let mut v = vec![false; row.len()];
    for (j, _) in cpu::token_kept(row, &q) {
        v[j] = true;
    }
    v
}

/// Relative distance on a filter's cut below which f32 and f64 may keep different entries.
const CUT_EPS: f32 = 1e-4;

/// Checks the GPU's result against the reference; returns how many rows differ by a
/// documented near-tie (a score tie within f32 rounding, or an entry at a filter's cut). Any
/// other difference fails.
fn compare(
    l: &[f32],
    k: usize,
    p: &TokenSampling<'_>,
    got: &gumbel_wgpu::SampledTokens,
    noise: Noise,
    what: &str,
) -> usize {
    let want = cpu::sample_tokens_with(l, k, p, noise).unwrap();
    let n = p.logprobs;
    assert_eq!(got.tokens.len(), want.tokens.len(), "{what}");
    assert_eq!(got.top_tokens, want.top_tokens, "{what}: top tokens");
    for (i, (g, w)) in got.top_logprobs.iter().zip(&want.top_logprobs).enumerate() {
        assert!(
            g == w || (g - w).abs() < 1e-4,
            "{what}: top logprob {i}: {g} vs {w}"
        );
    }
    assert_eq!(got.top_logprobs.len(), got.tokens.len() * n, "{what}");
    let mut near = 0;
    for (r, row) in l.chunks(k).enumerate() {
        let (g, w) = (got.tokens[r], want.tokens[r]);
        let rp = p.row(r);
        assert!(
            (g as usize) < k && kept(row, &rp, CUT_EPS)[g as usize],
            "{what}: row {r}: token {g} outside the kept set ({rp:?})"
        );
        let ls = cpu::log_softmax_f64(row);
        let lp = got.logprobs[r];
        assert!(
            (f64::from(lp) - ls[g as usize]).abs() < 1e-4,
            "{what}: row {r}: logprob {lp} vs {}",
            ls[g as usize]
        );
        if g == w {
            continue;
        }
        let tight = kept(row, &rp, -CUT_EPS);
        let (zg, zw) = (
            cpu::token_score(row, g as usize, rp.temperature, p.streams[r], noise),
            cpu::token_score(row, w as usize, rp.temperature, p.streams[r], noise),
        );
        let tie = (zg - zw).abs() < 1e-5 * zg.abs().max(zw.abs()).max(1.0);
        assert!(
            tie || !tight[g as usize] || !tight[w as usize],
            "{what}: row {r} ({rp:?}): GPU token {g} (z {zg}), reference {w} (z {zw})"
        );
        near += 1;
    }
    near
}

// ---------------------------------------------------------------------------------------------
// Agreement with the reference.

#[test]
fn every_filter_setting_matches_the_reference_at_awkward_sizes() {
    let mut rng = StdRng::seed_from_u64(0x7051);
    for &k in &[1usize, 2, 3, 31, 33, 255, 257, 4097] {
        for quantised in [false, true] {
            let rows = 24;
            let l = logits(&mut rng, rows, k, quantised);
            let rp: Vec<RowSampling> = (0..rows).map(|_| row_params(&mut rng, k)).collect();
            let streams = (0..rows).map(|_| stream(&mut rng)).collect();
            let n = rng.random_range(0..=k.min(20));
            let p = Params::of(&rp, streams, n);
            // Both Philox multiply paths (u64 and the portable 16-bit halves) where there are two,
            // and the workgroup-memory reductions where gpu() takes the subgroup ones.
            let without = gpu()
                .shader_config()
                .subgroups
                .then(common::gpu_without_subgroups);
            for (d, gpu) in common::gpus().into_iter().chain(without).enumerate() {
                let got = gpu.sample_tokens(&l, k, &p.get()).unwrap();
                let near = compare(
                    &l,
                    k,
                    &p.get(),
                    &got,
                    Noise::Bits32,
                    &format!("k {k} q {quantised} {d}"),
                );
                eprintln!("k {k} quantised {quantised}: {near} of {rows} rows near ties");
                assert!(near <= 1, "k {k}: {near} near ties in {rows} rows");
            }
        }
    }
}

#[test]
fn vocabularies_of_131075_and_65537_match_the_reference() {
    // LM-sized rows (one workgroup walks each row about 20 times with every filter on; within
    // llvmpipe's loop cap), every filter on, both noise modes.
    let mut rng = StdRng::seed_from_u64(0x20003);
    for &k in &[65537usize, 131075] {
        let rows = 2;
        let l = logits(&mut rng, rows, k, false);
        let rp = [
            RowSampling {
                temperature: 0.8,
                top_k: 50,
                top_p: 0.9,
                min_p: 0.0,
                ..RowSampling::new(0.0)
            },
            RowSampling {
                temperature: 1.3,
                top_k: 20_000,
                top_p: 0.95,
                min_p: 0.001,
                ..RowSampling::new(0.0)
            },
        ];
        let p = Params::of(&rp, (0..rows).map(|_| stream(&mut rng)).collect(), 20);
        for noise in [Noise::Bits32, Noise::Bits64] {
            let got = gpu()
                .sample_tokens_with(LogitsSlice::F32(&l), k, &p.get(), noise)
                .unwrap();
            let near = compare(&l, k, &p.get(), &got, noise, &format!("k {k} {noise:?}"));
            assert!(near <= 1, "k {k}: {near} near ties");
        }
    }
}

#[test]
fn greedy_rows_take_the_first_largest_logit() {
    let mut rng = StdRng::seed_from_u64(0x6eed);
    for &k in &[1usize, 2, 3, 33, 257, 4097] {
        let rows = 8;
        let l = logits(&mut rng, rows, k, true);
        let rp = vec![RowSampling::new(0.0); rows];
        let p = Params::of(&rp, (0..rows).map(|_| stream(&mut rng)).collect(), 0);
        let got = gpu().sample_tokens(&l, k, &p.get()).unwrap();
        for (r, row) in l.chunks(k).enumerate() {
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let first = row.iter().position(|&x| x == m).unwrap() as u32;
            assert_eq!(got.tokens[r], first, "k {k} row {r}");
        }
    }
}

#[test]
fn f16_and_bf16_logits_match_the_reference_on_their_widened_values() {
    use gumbel_wgpu::logits::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
    let mut rng = StdRng::seed_from_u64(0x16);
    for &k in &[3usize, 257, 4097] {
        let rows = 9;
        let l = logits(&mut rng, rows, k, false);
        let rp: Vec<RowSampling> = (0..rows).map(|_| row_params(&mut rng, k)).collect();
        let p = Params::of(&rp, (0..rows).map(|_| stream(&mut rng)).collect(), 3.min(k));
        let h: Vec<u16> = l.iter().map(|&x| f32_to_f16(x)).collect();
        let b: Vec<u16> = l.iter().map(|&x| f32_to_bf16(x)).collect();
        let wh: Vec<f32> = h.iter().map(|&x| f16_to_f32(x)).collect();
        let wb: Vec<f32> = b.iter().map(|&x| bf16_to_f32(x)).collect();
        let got = gpu()
            .sample_tokens_with(LogitsSlice::F16(&h), k, &p.get(), Noise::Bits32)
            .unwrap();
        compare(&wh, k, &p.get(), &got, Noise::Bits32, &format!("f16 k {k}"));
        let got = gpu()
            .sample_tokens_with(LogitsSlice::Bf16(&b), k, &p.get(), Noise::Bits32)
            .unwrap();
        compare(
            &wb,
            k,
            &p.get(),
            &got,
            Noise::Bits32,
            &format!("bf16 k {k}"),
        );
    }
}

#[test]
fn a_rows_draw_does_not_depend_on_its_batch_position_or_neighbours() {
    let mut rng = StdRng::seed_from_u64(0xba7c);
    let k = 1000;
    let row = logits(&mut rng, 1, k, false);
    let s = stream(&mut rng);
    let mine = RowSampling {
        temperature: 0.9,
        top_k: 300,
        top_p: 0.95,
        min_p: 0.01,
        ..RowSampling::new(0.0)
    };
    let mut seen = Vec::new();
    for (batch, pos) in [(1usize, 0usize), (3, 2), (9, 5), (17, 0)] {
        let mut l = logits(&mut rng, batch, k, false);
        l[pos * k..(pos + 1) * k].copy_from_slice(&row);
        let mut rp: Vec<RowSampling> = (0..batch).map(|_| row_params(&mut rng, k)).collect();
        let mut streams: Vec<Stream> = (0..batch).map(|_| stream(&mut rng)).collect();
        rp[pos] = mine;
        streams[pos] = s;
        let p = Params::of(&rp, streams, 5);
        let got = gpu().sample_tokens(&l, k, &p.get()).unwrap();
        seen.push((
            got.tokens[pos],
            got.logprobs[pos].to_bits(),
            got.top_tokens[pos * 5..][..5].to_vec(),
        ));
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
}

// ---------------------------------------------------------------------------------------------
// The law of the draws.

#[test]
fn chi_square_helper_knows_its_quantiles() {
    // chi-square(1) at 10.828 and chi-square(10) at 29.588 have p = 0.001.
    assert!((gamma_q(0.5, 10.828 / 2.0) - 1e-3).abs() < 2e-6);
    assert!((gamma_q(5.0, 29.588 / 2.0) - 1e-3).abs() < 2e-6);
}

/// Significance of each chi-square test: a correct sampler fails one with probability 1e-3 at
/// its fixed seed.
const ALPHA: f64 = 1e-3;

/// A shuffled Zipf-like row: `l = -a ln(rank + 1)` plus a little noise, ranks in random
/// positions (so the kept set is scattered over the row).
fn zipf_row(rng: &mut StdRng, k: usize, a: f32) -> Vec<f32> {
    let mut l: Vec<f32> = (0..k)
        .map(|i| -a * ((i + 1) as f32).ln() + rng.random_range(0.0f32..0.01))
        .collect();
    for i in (1..k).rev() {
        l.swap(i, rng.random_range(0..=i));
    }
    l
}

/// Draws `draws` tokens from `row` under `p` (each draw its own row and stream), checks each is
/// in the kept set, and returns the chi-square p-value against `cpu::token_probabilities`.
fn draw_law(row: &[f32], p: RowSampling, draws: usize, seed: u64) -> f64 {
    draw_law_with(row, p, draws, seed, Noise::Bits32)
}

fn draw_law_with(row: &[f32], p: RowSampling, draws: usize, seed: u64, noise: Noise) -> f64 {
    let k = row.len();
    let l: Vec<f32> = row.iter().copied().cycle().take(k * draws).collect();
    let params = Params::of(
        &vec![p; draws],
        (0..draws as u64)
            .map(|i| Stream::new(seed).advance(i << 40))
            .collect(),
        0,
    );
    let got = gpu()
        .sample_tokens_with(LogitsSlice::F32(&l), k, &params.get(), noise)
        .unwrap();
    let law = cpu::row_probabilities(row, &p);
    let keep = kept(row, &p, CUT_EPS);
    let mut counts = vec![0u64; k];
    for &t in &got.tokens {
        assert!(
            (t as usize) < k && keep[t as usize],
            "token {t} outside the kept set"
        );
        counts[t as usize] += 1;
    }
    chi_square_p_value(&counts, &law)
}

fn law_settings() -> Vec<(&'static str, RowSampling)> {
    let t = RowSampling::new(0.8);
    vec![
        ("temperature", t),
        ("min-p", RowSampling { min_p: 0.05, ..t }),
        ("top-k", RowSampling { top_k: 40, ..t }),
        ("top-p", RowSampling { top_p: 0.7, ..t }),
        (
            "combined",
            RowSampling {
                min_p: 0.01,
                top_k: 30,
                top_p: 0.8,
                ..t
            },
        ),
        // Top-p after a top-k past 512 entries: the radix search rather than the walk.
        (
            "top-k 600, top-p",
            RowSampling {
                top_k: 600,
                top_p: 0.8,
                ..t
            },
        ),
    ]
}

#[test]
fn draws_follow_the_filtered_law_k_1000() {
    let mut rng = StdRng::seed_from_u64(1000);
    let row = zipf_row(&mut rng, 1000, 1.5);
    for (i, (name, p)) in law_settings().into_iter().enumerate() {
        let pv = draw_law(&row, p, 2000, 77 + i as u64);
        eprintln!("k 1000 {name}: chi-square p = {pv}");
        assert!(pv > ALPHA, "k 1000 {name}: chi-square p = {pv}");
    }
}

/// k = 32768 in two halves (each well under 20 s on lavapipe with 2 cores): a draw costs a
/// workgroup of 32768 logits and the filters' passes.
fn law_k_32768(settings: std::ops::Range<usize>) {
    let mut rng = StdRng::seed_from_u64(32768);
    let row = zipf_row(&mut rng, 32768, 1.0);
    for (i, (name, p)) in law_settings().into_iter().enumerate() {
        if !settings.contains(&i) {
            continue;
        }
        let pv = draw_law(&row, p, 300, 91 + i as u64);
        eprintln!("k 32768 {name}: chi-square p = {pv}");
        assert!(pv > ALPHA, "k 32768 {name}: chi-square p = {pv}");
    }
}

#[test]
fn draws_follow_the_law_k_32768_temperature_min_p_top_k() {
    law_k_32768(0..3);
}

#[test]
fn draws_follow_the_law_k_32768_top_p_and_combined() {
    law_k_32768(3..5);
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn bad_parameters_are_errors_naming_the_argument() {
    let l = [0.0f32, 1.0, 2.0, 3.0];
    let s = [Stream::new(1), Stream::new(2)];
    let base = TokenSampling {
        temperature: &[1.0, 1.0],
        streams: &s,
        ..Default::default()
    };
    let cases: Vec<(&str, TokenSampling<'_>)> = vec![
        (
            "temperature",
            TokenSampling {
                temperature: &[1.0],
                ..base
            },
        ),
        (
            "temperature[1]",
            TokenSampling {
                temperature: &[1.0, -0.5],
                ..base
            },
        ),
        (
            "temperature[0]",
            TokenSampling {
                temperature: &[f32::NAN, 1.0],
                ..base
            },
        ),
        (
            "temperature[1]",
            TokenSampling {
                temperature: &[1.0, 1e-40],
                ..base
            },
        ),
        (
            "temperature[0]",
            TokenSampling {
                temperature: &[f32::INFINITY, 1.0],
                ..base
            },
        ),
        (
            "streams",
            TokenSampling {
                streams: &s[..1],
                ..base
            },
        ),
        (
            "top_k",
            TokenSampling {
                top_k: &[1],
                ..base
            },
        ),
        (
            "top_p[0]",
            TokenSampling {
                top_p: &[0.0, 1.0],
                ..base
            },
        ),
        (
            "top_p[1]",
            TokenSampling {
                top_p: &[0.5, 1.5],
                ..base
            },
        ),
        (
            "top_p[0]",
            TokenSampling {
                top_p: &[f32::NAN, 0.5],
                ..base
            },
        ),
        (
            "min_p[0]",
            TokenSampling {
                min_p: &[1.0, 0.0],
                ..base
            },
        ),
        (
            "min_p[1]",
            TokenSampling {
                min_p: &[0.0, -0.1],
                ..base
            },
        ),
        (
            "top_p",
            TokenSampling {
                top_p: &[0.5, 0.5, 0.5],
                ..base
            },
        ),
        (
            "logprobs",
            TokenSampling {
                logprobs: 21,
                ..base
            },
        ),
        (
            "logprobs",
            TokenSampling {
                logprobs: 3,
                ..base
            },
        ),
    ];
    for (name, p) in cases {
        for (what, r) in [
            ("gpu", gpu().sample_tokens(&l, 2, &p)),
            ("cpu", cpu::sample_tokens(&l, 2, &p)),
        ] {
            match r {
                Err(Error::InvalidArgument(m)) => {
                    assert!(m.contains(name), "{what} {name}: message {m:?}")
                }
                other => panic!("{what} {name}: {other:?}"),
            }
        }
    }
    assert!(gpu().sample_tokens(&l, 2, &base).is_ok());
    assert!(cpu::sample_tokens(&l, 2, &base).is_ok());
    // No rows: an empty result, not an error (and k = 0 is one).
    let none = TokenSampling::default();
    assert_eq!(gpu().sample_tokens(&[], 5, &none), Ok(Default::default()));
    assert_eq!(cpu::sample_tokens(&[], 5, &none), Ok(Default::default()));
    assert!(matches!(
        gpu().sample_tokens(&[], 0, &none),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn bad_logits_are_errors_naming_the_row() {
    let s = [Stream::new(1), Stream::new(2)];
    let p = TokenSampling {
        temperature: &[1.0, 1.0],
        streams: &s,
        ..Default::default()
    };
    let ninf = f32::NEG_INFINITY;
    let nan_row = [0.0, 1.0, 0.0, f32::NAN];
    assert_eq!(
        gpu().sample_tokens(&nan_row, 2, &p),
        Err(Error::NanInRow { row: 1 })
    );
    let masked = [ninf, ninf, 0.0, 1.0];
    assert_eq!(
        gpu().sample_tokens(&masked, 2, &p),
        Err(Error::AllMaskedRow { row: 0 })
    );
    let inf = [0.0, 1.0, f32::INFINITY, 1.0];
    match gpu().sample_tokens(&inf, 2, &p) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("row 1"), "{m}"),
        other => panic!("{other:?}"),
    }
    let tiny = TokenSampling {
        temperature: &[1.2e-38, 1.0], // normal (a subnormal one is an Err of its own)
        ..p
    };
    match gpu().sample_tokens(&[1e3, 1.0, 0.0, 0.0], 2, &tiny) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("row 0"), "{m}"),
        other => panic!("{other:?}"),
    }
    match gpu().sample_tokens(&[0.0; 5], 2, &p) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("k = 2"), "{m}"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The buffer level.

fn words(gpu: &gumbel_wgpu::Gpu, b: &wgpu::Buffer, n: usize) -> Vec<u32> {
    gpu.read_buffer(b, n).unwrap()
}

#[test]
fn buffer_level_reads_per_row_parameters_and_flags_bad_rows() {
    let gpu = gpu();
    let mut rng = StdRng::seed_from_u64(0xb0f);
    let (rows, k, n) = (7usize, 257usize, 4usize);
    let mut l = logits(&mut rng, rows, k, false);
    // Row 2: a NaN; row 4: all -inf; row 5: a +inf.
    l[2 * k + 9] = f32::NAN;
    l[4 * k..5 * k].fill(f32::NEG_INFINITY);
    l[5 * k + 100] = f32::INFINITY;
    let rp: Vec<RowSampling> = (0..rows).map(|_| row_params(&mut rng, k)).collect();
    let streams: Vec<Stream> = (0..rows).map(|_| stream(&mut rng)).collect();
    let dev: Vec<TokenRowParams> = (0..rows)
        .map(|r| TokenRowParams::new(rp[r], streams[r]))
        .collect();
    // Every input and output at an odd word offset (3, as `at` binds) into a larger buffer,
    // outputs poisoned.
    let lead = 3usize;
    let mut lw = vec![SENTINEL; lead];
    lw.extend(l.iter().map(|x| x.to_bits()));
    let lb = gpu.upload("logits", &lw).unwrap();
    let mut pw = vec![SENTINEL; lead];
    pw.extend(bytemuck::cast_slice::<TokenRowParams, u32>(&dev));
    let pb = gpu.upload("params", &pw).unwrap();
    let tb = poisoned(gpu, lead + rows + 1);
    let lpb = poisoned(gpu, lead + rows + 1);
    let topb = poisoned(gpu, lead + rows * n * 2 + 1);
    let sb = poisoned(gpu, lead + rows + 1);
    fn at(b: &wgpu::Buffer, len: usize) -> wgpu::BufferSlice<'_> {
        b.slice(3 * 4..(3 + len) as u64 * 4)
    }
    let sampler = gpu.token_sampler().unwrap();
    run(gpu, |enc| {
        sampler
            .record(
                enc,
                &TokenJob {
                    logits: LogitsView::f32(at(&lb, rows * k), rows as u64, k as u64),
                    row_params: at(&pb, rows * 12),
                    out: at(&tb, rows),
                    logprobs: Some(at(&lpb, rows)),
                    top_n: n as u32,
                    top: Some(at(&topb, rows * n * 2)),
                    status: Some(at(&sb, rows)),
                    noise: Noise::Bits32,
                    chain: Default::default(),
                    ranks: None,
                    logprobs_mode: Default::default(),
                    filters: Default::default(),
                    strategy: Default::default(),
                },
            )
            .unwrap()
    });
    let tokens = words(gpu, &tb, lead + rows + 1);
    let lps = words(gpu, &lpb, lead + rows + 1);
    let top = words(gpu, &topb, lead + rows * n * 2 + 1);
    let status = words(gpu, &sb, lead + rows + 1);
    for v in [&tokens, &lps, &status] {
        assert!(
            v[..lead]
                .iter()
                .chain(&v[lead + rows..])
                .all(|&w| w == SENTINEL)
        );
    }
    assert!(
        top[..lead]
            .iter()
            .chain(&top[lead + rows * n * 2..])
            .all(|&w| w == SENTINEL)
    );
    let bad = [
        (2, TokenSampler::STATUS_NAN),
        (4, TokenSampler::STATUS_ALL_MASKED),
        (5, TokenSampler::STATUS_POS_INF),
    ];
    for r in 0..rows {
        let st = status[lead + r];
        if let Some(&(_, code)) = bad.iter().find(|b| b.0 == r) {
            assert_eq!(st, code, "row {r}");
            assert_eq!(tokens[lead + r], NO_INDEX, "row {r}");
            assert!(f32::from_bits(lps[lead + r]).is_nan(), "row {r}");
            assert!(
                top[lead + r * n * 2..][..n * 2]
                    .iter()
                    .step_by(2)
                    .all(|&i| i == NO_INDEX)
            );
            continue;
        }
        assert_eq!(st, 0, "row {r}");
        // The good rows agree with the slice level's reference, one row at a time.
        let row = &l[r * k..(r + 1) * k];
        let one = Params::of(&rp[r..r + 1], streams[r..r + 1].to_vec(), n);
        let got = gumbel_wgpu::SampledTokens {
            tokens: vec![tokens[lead + r]],
            logprobs: vec![f32::from_bits(lps[lead + r])],
            top_tokens: top[lead + r * n * 2..][..n * 2]
                .iter()
                .step_by(2)
                .copied()
                .collect(),
            top_logprobs: top[lead + r * n * 2 + 1..][..n * 2 - 1]
                .iter()
                .step_by(2)
                .map(|&b| f32::from_bits(b))
                .collect(),
            ranks: Vec::new(),
        };
        compare(
            row,
            k,
            &one.get(),
            &got,
            Noise::Bits32,
            &format!("buffer row {r}"),
        );
    }
}

#[test]
fn buffer_level_misuse_is_an_error() {
    let gpu = gpu();
    let b = gpu.storage_buffer("b", 4096).unwrap();
    // Outputs live in other buffers than inputs (a dispatch cannot bind one both ways).
    let o = gpu.storage_buffer("o", 512).unwrap();
    let sampler = gpu.token_sampler().unwrap();
    let job = TokenJob {
        logits: LogitsView::f32(b.slice(..), 2, 100),
        row_params: b.slice(..96),
        out: o.slice(..8),
        logprobs: None,
        top_n: 0,
        top: None,
        status: None,
        noise: Noise::Bits32,
        chain: Default::default(),
        ranks: None,
        logprobs_mode: Default::default(),
        filters: Default::default(),
        strategy: Default::default(),
    };
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    let check = |r: Result<(), Error>, name: &str| match r {
        Err(Error::InvalidArgument(m)) => assert!(m.contains(name), "{name}: {m}"),
        other => panic!("{name}: {other:?}"),
    };
    check(
        sampler.record(
            &mut enc,
            &TokenJob {
                logits: LogitsView::f32(b.slice(..), 2, 2000),
                ..job
            },
        ),
        "logits",
    );
    check(
        sampler.record(
            &mut enc,
            &TokenJob {
                row_params: b.slice(..92),
                ..job
            },
        ),
        "row_params",
    );
    check(
        sampler.record(
            &mut enc,
            &TokenJob {
                out: b.slice(..4),
                ..job
            },
        ),
        "out",
    );
    check(
        sampler.record(
            &mut enc,
            &TokenJob {
                out: b.slice(2..10),
                ..job
            },
        ),
        "out",
    );
    check(
        sampler.record(&mut enc, &TokenJob { top_n: 2, ..job }),
        "top",
    );
    check(
        sampler.record(
            &mut enc,
            &TokenJob {
                top_n: 21,
                top: Some(b.slice(..)),
                ..job
            },
        ),
        "top_n",
    );
    check(
        sampler.record(
            &mut enc,
            &TokenJob {
                logits: LogitsView::f32(b.slice(..), 2, 0),
                ..job
            },
        ),
        "k (categories",
    );
    // An output in an input's buffer, and two outputs overlapping: both named.
    check(
        sampler.record(
            &mut enc,
            &TokenJob {
                out: b.slice(64..72),
                ..job
            },
        ),
        "out: shares its buffer with the input logits",
    );
    check(
        sampler.record(
            &mut enc,
            &TokenJob {
                logprobs: Some(o.slice(4..12)),
                ..job
            },
        ),
        "out: overlaps the output logprobs",
    );
    // Disjoint views inside one 256-byte block still overlap as bound (each binding starts at
    // its offset rounded down to the storage alignment), which WebGPU rejects.
    check(
        sampler.record(
            &mut enc,
            &TokenJob {
                logprobs: Some(o.slice(8..16)),
                ..job
            },
        ),
        "out: overlaps the output logprobs",
    );
    let disjoint = TokenJob {
        logprobs: Some(o.slice(256..264)),
        ..job
    };
    assert!(sampler.record(&mut enc, &disjoint).is_ok());
    assert!(sampler.record(&mut enc, &job).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Speculative verification.

/// A random law over k categories (some zeros), summing to 1 in f64 before rounding to f32.
fn random_law(rng: &mut StdRng, k: usize) -> Vec<f32> {
    let mut w: Vec<f64> = (0..k)
        .map(|_| {
            if rng.random::<f32>() < 0.2 {
                0.0
            } else {
                rng.random::<f64>().powi(3)
            }
        })
        .collect();
    if w.iter().all(|&x| x == 0.0) {
        w[rng.random_range(0..k)] = 1.0;
    }
    let s: f64 = w.iter().sum();
    w.iter().map(|x| (x / s) as f32).collect()
}

/// An index drawn from `law` with the test's own generator (the drafts' sampler).
fn draw_from(rng: &mut StdRng, law: &[f32]) -> u32 {
    let s: f64 = law.iter().map(|&x| f64::from(x)).sum();
    let mut u = rng.random::<f64>() * s;
    for (j, &x) in law.iter().enumerate() {
        u -= f64::from(x);
        if u < 0.0 && x > 0.0 {
            return j as u32;
        }
    }
    law.iter().rposition(|&x| x > 0.0).unwrap() as u32
}

#[test]
fn speculative_verification_matches_the_reference() {
    let mut rng = StdRng::seed_from_u64(0x5bec);
    for &k in &[1usize, 2, 3, 33, 257, 4097] {
        for &n in &[0usize, 1, 3] {
            let rows = 6;
            let q: Vec<f32> = (0..rows * n)
                .flat_map(|_| random_law(&mut rng, k))
                .collect();
            let p: Vec<f32> = (0..rows * (n + 1))
                .flat_map(|_| random_law(&mut rng, k))
                .collect();
            let drafts: Vec<u32> = q.chunks(k).map(|law| draw_from(&mut rng, law)).collect();
            let streams: Vec<Stream> = (0..rows).map(|_| stream(&mut rng)).collect();
            let got = gpu()
                .verify_speculative(&drafts, &q, &p, k, &streams)
                .unwrap();
            let want = cpu::verify_speculative(&drafts, &q, &p, k, &streams).unwrap();
            assert_eq!(got.accepted, want.accepted, "k {k} n {n}");
            for r in 0..rows {
                let (g, w) = (
                    &got.tokens[r * (n + 1)..][..n + 1],
                    &want.tokens[r * (n + 1)..][..n + 1],
                );
                let a = want.accepted[r] as usize;
                assert_eq!(g[..a], w[..a], "k {k} n {n} row {r}");
                assert!(
                    g[a + 1..].iter().all(|&t| t == NO_INDEX),
                    "k {k} n {n} row {r}"
                );
                if g[a] != w[a] {
                    // Only an f32 near tie of ln w + g may differ.
                    let law = &p[(r * (n + 1) + a) * k..][..k];
                    let res = |j: u32| {
                        let j = j as usize;
                        let x = f64::from(law[j])
                            - if a < n {
                                f64::from(q[(r * n + a) * k + j])
                            } else {
                                0.0
                            };
                        x.max(0.0).ln()
                            + cpu::gumbel_from_word(streams[r].word(cpu::speculative_word(a, j, k)))
                    };
                    let (zg, zw) = (res(g[a]), res(w[a]));
                    assert!(
                        (zg - zw).abs() < 1e-5 * zg.abs().max(1.0),
                        "k {k} n {n} row {r}: emitted {} (z {zg}) vs {} (z {zw})",
                        g[a],
                        w[a]
                    );
                }
            }
        }
    }
}

#[test]
fn speculative_first_token_follows_the_target_law_and_acceptance_is_sum_min() {
    speculative_law(Noise::Bits32);
}

#[test]
fn speculative_64_bit_first_token_follows_the_target_law_and_acceptance_is_sum_min() {
    speculative_law(Noise::Bits64);
}

/// 20000 rows of one draft law q and target law p (k = 50, n = 2), each row its own stream: the
/// first emitted token follows p (chi-square, p-value above [`ALPHA`]) and the first draft is
/// accepted at the rate sum_j min(p_j, q_j) (a z test).
fn speculative_law(noise: Noise) {
    let mut rng = StdRng::seed_from_u64(0xacc);
    let (k, n, rows) = (50usize, 2usize, 20_000usize);
    let q0 = random_law(&mut rng, k);
    let p0 = random_law(&mut rng, k);
    let q: Vec<f32> = (0..rows)
        .flat_map(|_| [q0.clone(), q0.clone()].concat())
        .collect();
    let p: Vec<f32> = (0..rows)
        .flat_map(|_| [p0.clone(), p0.clone(), p0.clone()].concat())
        .collect();
    let drafts: Vec<u32> = (0..rows * n).map(|_| draw_from(&mut rng, &q0)).collect();
    let streams: Vec<Stream> = (0..rows as u64)
        .map(|i| Stream::new(0x5eed ^ (i << 20)))
        .collect();
    let got = gpu()
        .verify_speculative_with(&drafts, &q, &p, k, &streams, noise)
        .unwrap();
    let mut counts = vec![0u64; k];
    for r in 0..rows {
        counts[got.tokens[r * (n + 1)] as usize] += 1;
    }
    let law: Vec<f64> = p0.iter().map(|&x| f64::from(x)).collect();
    let s: f64 = law.iter().sum();
    let law: Vec<f64> = law.iter().map(|x| x / s).collect();
    let pv = chi_square_p_value(&counts, &law);
    eprintln!("speculative {noise:?} first token: chi-square p = {pv}");
    assert!(
        pv > ALPHA,
        "{noise:?} first emitted token: chi-square p = {pv}"
    );
    // The first draft is accepted with probability sum_j min(p_j, q_j): a two-sided z test at
    // 3.29 sigma (p = 0.001).
    let rate: f64 = p0.iter().zip(&q0).map(|(&a, &b)| f64::from(a.min(b))).sum();
    let hits = got.accepted.iter().filter(|&&a| a >= 1).count() as f64;
    let z = (hits - rate * rows as f64) / (rate * (1.0 - rate) * rows as f64).sqrt();
    eprintln!(
        "{noise:?} acceptance {} vs sum min(p, q) = {rate}: z = {z}",
        hits / rows as f64
    );
    assert!(z.abs() < 3.29, "{noise:?} acceptance rate z = {z}");
}

#[test]
fn speculative_noise_words_lie_where_the_docs_say() {
    // Read off the stream itself, on the GPU and the CPU, for both noise modes (per = 1 or 2
    // words per noise element):
    // * draft 0 with q(d) = 1 and p(d) = 1/2 is accepted iff u_0 < 1/2, u_0 the uniform of word k
    //   (Bits32) or of words 2k (high) and 2k + 1 (low) (Bits64);
    // * after a sure acceptance (q_0 = p_0), the bonus token (position 1) equals the token of a
    //   row with no drafts whose stream starts per * (k + 1) words later, and differs in some
    //   rows from the one (3 - per) * (k + 1) words later (the other mode's stride).
    let mut rng = StdRng::seed_from_u64(0x2b17);
    let (k, rows) = (50usize, 256usize);
    let streams: Vec<Stream> = (0..rows).map(|_| stream(&mut rng)).collect();
    let verify = |on_gpu: bool, d: &[u32], q: &[f32], p: &[f32], s: &[Stream], noise: Noise| {
        if on_gpu {
            gpu().verify_speculative_with(d, q, p, k, s, noise)
        } else {
            cpu::verify_speculative_with(d, q, p, k, s, noise)
        }
        .unwrap()
    };
    for noise in [Noise::Bits32, Noise::Bits64] {
        let per = if noise == Noise::Bits64 { 2 } else { 1 };
        let k64 = k as u64;
        let u0 = |s: &Stream, noise: Noise| match noise {
            Noise::Bits32 => cpu::uniform_from_word(s.word(k64)),
            Noise::Bits64 => cpu::uniform_from_words64(s.word(2 * k64), s.word(2 * k64 + 1)),
        };
        let other_noise = if noise == Noise::Bits64 {
            Noise::Bits32
        } else {
            Noise::Bits64
        };
        let d = 7usize;
        let mut q = vec![0.0f32; k];
        q[d] = 1.0;
        let mut p = vec![0.0f32; 2 * k];
        p[d] = 0.5;
        p[k + 3] = 1.0;
        let drafts = vec![d as u32; rows];
        let (q, p) = (q.repeat(rows), p.repeat(rows));
        let verdicts = |noise| -> Vec<u32> {
            streams
                .iter()
                .map(|s| u32::from(u0(s, noise) < 0.5))
                .collect()
        };
        let want = verdicts(noise);
        // Not vacuous: both verdicts occur, and the other mode's words give other ones.
        assert!(want.contains(&0) && want.contains(&1));
        assert_ne!(want, verdicts(other_noise));

        let law = random_law(&mut rng, k);
        let sure_q = law.repeat(rows);
        let sure_p = [law.clone(), random_law(&mut rng, k)].concat();
        let bonus_law = sure_p[k..].repeat(rows);
        let sure_drafts: Vec<u32> = (0..rows).map(|_| draw_from(&mut rng, &law)).collect();
        let later = |words: usize| -> Vec<Stream> {
            streams
                .iter()
                .map(|s| s.advance((words * (k + 1)) as u64))
                .collect()
        };
        for on_gpu in [true, false] {
            let what = format!("{noise:?} on the {}", if on_gpu { "gpu" } else { "cpu" });
            let got = verify(on_gpu, &drafts, &q, &p, &streams, noise);
            assert_eq!(got.accepted, want, "{what}: acceptance words");

            let got = verify(
                on_gpu,
                &sure_drafts,
                &sure_q,
                &sure_p.repeat(rows),
                &streams,
                noise,
            );
            assert!(got.accepted.iter().all(|&a| a == 1), "{what}");
            let bonus: Vec<u32> = got.tokens.chunks(2).map(|t| t[1]).collect();
            let at = |words: usize| verify(on_gpu, &[], &[], &bonus_law, &later(words), noise);
            assert_eq!(bonus, at(per).tokens, "{what}: position 1's words");
            assert_ne!(bonus, at(3 - per).tokens, "{what}: the other stride");
        }
    }
}

#[test]
fn speculative_64_bit_draws_read_both_words_of_a_pair_across_philox_blocks() {
    // The low word of a pair moves the noise only where the high word is small: rows whose
    // category 0 has a high word below 2^12 at lane 3 of a Philox block (offset 3 mod 4, so its
    // low word is lane 0 of the next block), found by scanning one stream; category 1's weight
    // puts it `delta` below category 0 (more than the GPU's f32 error, less than the low word's
    // effect in most of these rows): a misplaced low word flips about half of them.
    let seed = 0x10b0u64;
    let delta = 5e-5;
    let g = |s: &Stream, j: u64, flip: u32| {
        cpu::gumbel_from_words64(s.word(2 * j), s.word(2 * j + 1) ^ flip)
    };
    let (mut streams, mut p) = (Vec::new(), Vec::new());
    for w in small_high_words(seed).filter(|w| w % 4 == 3).take(8) {
        let s = Stream { seed, offset: w };
        p.extend([
            (0.5 * (g(&s, 1, 0) - g(&s, 0, 0) + delta).exp()) as f32,
            0.5,
        ]);
        streams.push(s);
    }
    // Not vacuous: the low word's complement moves category 0 by more than delta in most rows.
    let moved = streams
        .iter()
        .filter(|s| (g(s, 0, 0) - g(s, 0, !0)).abs() > 2.0 * delta)
        .count();
    assert!(moved >= 6, "{moved}");
    let want = cpu::verify_speculative_with(&[], &[], &p, 2, &streams, Noise::Bits64).unwrap();
    assert!(want.tokens.iter().all(|&t| t == 0), "{:?}", want.tokens);
    for gpu in common::gpus() {
        let got = gpu
            .verify_speculative_with(&[], &[], &p, 2, &streams, Noise::Bits64)
            .unwrap();
        assert_eq!(got, want);
    }
}

/// Shapes whose sizes pass 2^64 are `TooLarge`, never a wrapped size that a small buffer passes
/// (the fuzz target found `k = u64::MAX`: `k + 1` overflowed).
#[test]
fn speculative_shapes_past_u64_are_too_large() {
    let gpu = gpu();
    let b = gpu.upload("small", &[0u32; 64]).unwrap();
    let out = poisoned(gpu, 128);
    let verifier = gpu.speculative_verifier().unwrap();
    for (rows, n, k, says) in [
        (1, 0, u64::MAX, "stream words"),
        (1, u64::MAX, 1, "stream words"),
        (u64::from(u32::MAX), 0, 1 << 31, "exceed 2^64 bytes"),
    ] {
        let mut enc = gpu.device().create_command_encoder(&Default::default());
        let r = verifier.record(
            &mut enc,
            &SpeculativeJob {
                rows,
                n,
                k,
                draft_tokens: b.slice(..),
                draft_probs: b.slice(..),
                target_probs: b.slice(..),
                streams: b.slice(..),
                accepted: out.slice(..4),
                tokens: out.slice(256..),
                noise: Noise::Bits32,
            },
        );
        match r {
            Err(Error::TooLarge(m)) => assert!(m.contains(says), "rows {rows} n {n} k {k}: {m}"),
            other => panic!("rows {rows} n {n} k {k}: {other:?}"),
        }
    }
}

#[test]
fn speculative_64_bit_noise_keeps_twice_the_words_of_a_row_below_2_pow_32() {
    // (n + 1) (k + 1) = 2^31 + 2^15 words per row fit a u32 under Bits32 (the job then fails on
    // its too-small buffers), twice that does not under Bits64.
    let gpu = gpu();
    let b = gpu.upload("small", &[0u32; 4]).unwrap();
    let out = poisoned(gpu, 4);
    let verifier = gpu.speculative_verifier().unwrap();
    for noise in [Noise::Bits32, Noise::Bits64] {
        let mut enc = gpu.device().create_command_encoder(&Default::default());
        let r = verifier.record(
            &mut enc,
            &SpeculativeJob {
                rows: 1,
                n: (1 << 15) - 1,
                k: 1 << 16,
                draft_tokens: b.slice(..),
                draft_probs: b.slice(..),
                target_probs: b.slice(..),
                streams: b.slice(..),
                accepted: out.slice(..4),
                tokens: out.slice(4..),
                noise,
            },
        );
        match (noise, r) {
            (Noise::Bits64, Err(Error::TooLarge(m))) => assert!(m.contains("stream words"), "{m}"),
            (Noise::Bits32, Err(Error::InvalidArgument(m))) => {
                assert!(m.contains("draft_tokens"), "{m}")
            }
            (_, other) => panic!("{noise:?}: {other:?}"),
        }
    }
}

#[test]
fn speculative_bad_input_is_an_error_naming_the_argument() {
    let s = [Stream::new(1)];
    let q = [0.5f32, 0.5];
    let p = [0.5f32, 0.5, 0.5, 0.5];
    type Case = (&'static str, Vec<u32>, Vec<f32>, Vec<f32>);
    let cases: Vec<Case> = vec![
        ("draft_tokens[0]", vec![2], q.to_vec(), p.to_vec()),
        ("draft_probs", vec![0], vec![0.5], p.to_vec()),
        ("target_probs", vec![0], q.to_vec(), vec![0.5; 3]),
        ("draft_probs[1]", vec![0], vec![0.5, -0.1], p.to_vec()),
        (
            "target_probs[2]",
            vec![0],
            q.to_vec(),
            vec![0.5, 0.5, f32::NAN, 0.5],
        ),
        (
            "target_probs: row 0 position 1",
            vec![0],
            q.to_vec(),
            vec![0.5, 0.5, 0.0, 0.0],
        ),
    ];
    for (name, d, q, p) in cases {
        for (what, r) in [
            ("gpu", gpu().verify_speculative(&d, &q, &p, 2, &s)),
            ("cpu", cpu::verify_speculative(&d, &q, &p, 2, &s)),
        ] {
            match r {
                Err(Error::InvalidArgument(m)) => {
                    assert!(m.contains(name), "{what} {name}: {m}")
                }
                other => panic!("{what} {name}: {other:?}"),
            }
        }
    }
    match gpu().verify_speculative(&[0, 1, 0], &[0.5; 6], &[0.5; 8], 2, &[Stream::new(1); 2]) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("draft_tokens"), "{m}"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The 64-bit noise mode.

#[test]
fn uniform_from_64_bits_spans_2_pow_minus_65_to_1_minus_2_pow_minus_24() {
    // Smallest and largest words; the tail ends near 65 ln 2 (vs 33 ln 2 from one word).
    assert_eq!(cpu::uniform_from_words64(0, 0), 2f32.powi(-65));
    assert_eq!(
        cpu::uniform_from_words64(u32::MAX, u32::MAX),
        1.0 - 2f32.powi(-24)
    );
    assert_eq!(cpu::uniform_from_words64(0, 1), 3.0 * 2f32.powi(-65));
    let top = cpu::gumbel_from_words64(0, 0);
    assert!((top - 65.0 * 2f64.ln()).abs() < 1e-6, "{top}");
    assert!(cpu::gumbel_from_word(0) < 23.0);
    // High word first: (1, 0) is 2^32 times (0, 1)'s neighbourhood, and the map is monotone.
    let mut rng = StdRng::seed_from_u64(64);
    let mut xs: Vec<u64> = (0..10_000)
        .map(|_| rng.random::<u64>() >> rng.random_range(0..64))
        .collect();
    xs.sort_unstable();
    let u: Vec<f32> = xs
        .iter()
        .map(|&x| cpu::uniform_from_words64((x >> 32) as u32, x as u32))
        .collect();
    assert!(u.windows(2).all(|w| w[0] <= w[1]));
    // The cut keeps 24 significant bits: within 2^-23 relative of (x + 1/2) / 2^64.
    for (&x, &v) in xs.iter().zip(&u) {
        let exact = (x as f64 + 0.5) / 2f64.powi(64);
        assert!(
            (f64::from(v) - exact).abs() <= exact * 2f64.powi(-23),
            "{x}: {v} vs {exact}"
        );
    }
}

#[test]
fn noise_64_matches_the_reference_at_awkward_sizes_and_phases() {
    let mut rng = StdRng::seed_from_u64(0x64);
    for &k in &[1usize, 2, 3, 33, 257, 4097] {
        let rows = 16;
        let l = logits(&mut rng, rows, k, false);
        let rp: Vec<RowSampling> = (0..rows).map(|_| row_params(&mut rng, k)).collect();
        // Every offset phase (mod 4), so the pairs straddle blocks in half the rows.
        let streams = (0..rows)
            .map(|r| Stream {
                offset: (stream(&mut rng).offset & !3) + (r % 4) as u64,
                ..stream(&mut rng)
            })
            .collect();
        let p = Params::of(&rp, streams, 2.min(k));
        for gpu in common::gpus() {
            let got = gpu
                .sample_tokens_with(LogitsSlice::F32(&l), k, &p.get(), Noise::Bits64)
                .unwrap();
            let near = compare(
                &l,
                k,
                &p.get(),
                &got,
                Noise::Bits64,
                &format!("64-bit k {k}"),
            );
            assert!(near <= 1, "k {k}: {near} near ties");
            // Not the 32-bit draws: the two modes read different words.
            let want32 = cpu::sample_tokens(&l, k, &p.get()).unwrap();
            if k >= 257 {
                assert_ne!(got.tokens, want32.tokens, "k {k}");
            }
        }
    }
}

/// The low word counts, in every lane (as in tests/sample.rs): each stream word `w` below 2^12
/// found by `small_high_words` becomes the high word of category 0 of a row of 2 (offset `w`),
/// category 1 set `2e-5` above or below it by the f64 reference (temperature 1), far less than
/// the low word moves it: every row must draw the reference's token.
#[test]
fn noise_64_low_word_decides_close_draws() {
    let seed = 0x70c3_0064;
    let hits: Vec<u64> = small_high_words(seed).take(24).collect();
    let lanes: std::collections::BTreeSet<u64> = hits.iter().map(|w| w % 4).collect();
    assert_eq!(lanes.len(), 4, "every lane: {hits:?}");
    let (mut logits, mut streams, mut want) = (Vec::new(), Vec::new(), Vec::new());
    for &w in &hits {
        let stream = Stream { seed, offset: w };
        let g = |j| cpu::gumbel_noise(stream, j, Noise::Bits64);
        for (delta, token) in [(2e-5, 1u32), (-2e-5, 0u32)] {
            logits.extend([0.0f32, (g(0) + delta - g(1)) as f32]);
            streams.push(stream);
            want.push(token);
        }
    }
    let temperature = vec![1.0f32; streams.len()];
    let params = TokenSampling {
        temperature: &temperature,
        streams: &streams,
        ..Default::default()
    };
    let reference = cpu::sample_tokens_with(&logits, 2, &params, Noise::Bits64).unwrap();
    assert_eq!(reference.tokens, want);
    for gpu in common::gpus() {
        let got = gpu
            .sample_tokens_with(LogitsSlice::F32(&logits), 2, &params, Noise::Bits64)
            .unwrap();
        assert_eq!(got.tokens, want, "{}", gpu.describe());
    }
}

#[test]
fn noise_64_draws_follow_the_filtered_law() {
    let mut rng = StdRng::seed_from_u64(6464);
    let row = zipf_row(&mut rng, 1000, 1.5);
    for (i, (name, p)) in law_settings().into_iter().enumerate().step_by(2) {
        let pv = draw_law_with(&row, p, 1500, 640 + i as u64, Noise::Bits64);
        eprintln!("64-bit k 1000 {name}: chi-square p = {pv}");
        assert!(pv > ALPHA, "64-bit k 1000 {name}: chi-square p = {pv}");
    }
}

#[test]
fn a_decode_loop_records_steps_with_device_side_parameter_updates_and_no_readback() {
    // Three steps in one encoder: between steps the row parameters (streams advanced by k, new
    // filters) are copied on the device; each step's tokens must equal the slice level's.
    let gpu = gpu();
    let mut rng = StdRng::seed_from_u64(0xdec0);
    let (rows, k, steps) = (3usize, 300usize, 3usize);
    let l = logits(&mut rng, rows, k, false);
    let lb = gpu.upload("logits", &l).unwrap();
    let mut per_step = Vec::new();
    for step in 0..steps {
        let rp: Vec<RowSampling> = (0..rows).map(|_| row_params(&mut rng, k)).collect();
        let streams: Vec<Stream> = (0..rows)
            .map(|r| Stream::new(r as u64 + 11).advance((step * k) as u64))
            .collect();
        per_step.push((rp, streams));
    }
    let staged: Vec<wgpu::Buffer> = per_step
        .iter()
        .map(|(rp, s)| {
            let dev: Vec<TokenRowParams> = (0..rows)
                .map(|r| TokenRowParams::new(rp[r], s[r]))
                .collect();
            gpu.upload("staged params", &dev).unwrap()
        })
        .collect();
    let params = poisoned(gpu, rows * 12);
    let outs: Vec<wgpu::Buffer> = (0..steps).map(|_| poisoned(gpu, rows)).collect();
    let sampler = gpu.token_sampler().unwrap();
    run(gpu, |enc| {
        for step in 0..steps {
            enc.copy_buffer_to_buffer(
                &staged[step],
                0,
                &params,
                0,
                Some(rows as u64 * TokenRowParams::BYTES),
            );
            sampler
                .record(
                    enc,
                    &TokenJob {
                        logits: LogitsView::f32(lb.slice(..), rows as u64, k as u64),
                        row_params: params.slice(..),
                        out: outs[step].slice(..),
                        logprobs: None,
                        top_n: 0,
                        top: None,
                        status: None,
                        noise: Noise::Bits32,
                        chain: Default::default(),
                        ranks: None,
                        logprobs_mode: Default::default(),
                        filters: Default::default(),
                        strategy: Default::default(),
                    },
                )
                .unwrap();
        }
    });
    for (step, (rp, streams)) in per_step.iter().enumerate() {
        let p = Params::of(rp, streams.clone(), 0);
        let want = gpu.sample_tokens(&l, k, &p.get()).unwrap();
        assert_eq!(words(gpu, &outs[step], rows), want.tokens, "step {step}");
    }
}

#[test]
fn speculative_buffer_level_writes_only_its_windows() {
    let mut rng = StdRng::seed_from_u64(0x5b0f);
    let streams: Vec<Stream> = (0..5).map(|_| stream(&mut rng)).collect();
    speculative_buffer_level(gpu(), &mut rng, 2, 33, &streams, Noise::Bits32);
}

#[test]
fn speculative_buffer_level_matches_the_reference_exactly_at_awkward_sizes() {
    // Fresh inputs per size, both noise modes, every offset phase (mod 4: under Bits64 an odd
    // phase splits pairs across Philox blocks); the shipping device (subgroup arg-max where the
    // adapter has subgroups), the portable checked one, and one without subgroups.
    let mut rng = StdRng::seed_from_u64(0x5b64);
    let gpus = [
        gpu(),
        common::gpu_without_int64(),
        common::gpu_without_subgroups(),
    ];
    for &k in &[1usize, 2, 3, 31, 33, 257, 4097] {
        for n in 0..=3 {
            for noise in [Noise::Bits32, Noise::Bits64] {
                let streams: Vec<Stream> = (0..4u64)
                    .map(|r| Stream {
                        offset: (stream(&mut rng).offset & !3) + r,
                        ..stream(&mut rng)
                    })
                    .collect();
                for &gpu in &gpus {
                    speculative_buffer_level(gpu, &mut rng, n, k, &streams, noise);
                }
            }
        }
    }
}

/// One verification at the buffer level on fresh random laws and drafts (one row per stream):
/// every input and output at a word offset of 3 into a larger buffer, outputs poisoned; the
/// windows are written in full, nothing around them, and accepted counts and tokens equal the
/// CPU reference's exactly.
fn speculative_buffer_level(
    gpu: &gumbel_wgpu::Gpu,
    rng: &mut StdRng,
    n: usize,
    k: usize,
    streams: &[Stream],
    noise: Noise,
) {
    let rows = streams.len();
    let what = format!("k {k} n {n} {noise:?}");
    let q: Vec<f32> = (0..rows * n).flat_map(|_| random_law(rng, k)).collect();
    let p: Vec<f32> = (0..rows * (n + 1))
        .flat_map(|_| random_law(rng, k))
        .collect();
    let drafts: Vec<u32> = q.chunks(k).map(|law| draw_from(rng, law)).collect();
    let lead = 3usize;
    let with_lead = |w: Vec<u32>| [vec![SENTINEL; lead], w, vec![SENTINEL]].concat();
    let db = gpu.upload("d", &with_lead(drafts.clone())).unwrap();
    let qb = gpu
        .upload("q", &with_lead(q.iter().map(|x| x.to_bits()).collect()))
        .unwrap();
    let pb = gpu
        .upload("p", &with_lead(p.iter().map(|x| x.to_bits()).collect()))
        .unwrap();
    let sb = gpu
        .upload(
            "s",
            &with_lead(streams.iter().flat_map(|&s| stream_words(s)).collect()),
        )
        .unwrap();
    let ab = poisoned(gpu, lead + rows + 1);
    let tb = poisoned(gpu, lead + rows * (n + 1) + 1);
    // A slice cannot be empty: with n = 0 the drafts' window is the one sentinel after the lead.
    fn at(b: &wgpu::Buffer, len: usize) -> wgpu::BufferSlice<'_> {
        b.slice(3 * 4..(3 + len.max(1)) as u64 * 4)
    }
    let verifier = gpu.speculative_verifier().unwrap();
    run(gpu, |enc| {
        verifier
            .record(
                enc,
                &SpeculativeJob {
                    rows: rows as u64,
                    n: n as u64,
                    k: k as u64,
                    draft_tokens: at(&db, rows * n),
                    draft_probs: at(&qb, rows * n * k),
                    target_probs: at(&pb, rows * (n + 1) * k),
                    streams: at(&sb, rows * 4),
                    accepted: at(&ab, rows),
                    tokens: at(&tb, rows * (n + 1)),
                    noise,
                },
            )
            .unwrap()
    });
    let acc = words(gpu, &ab, lead + rows + 1);
    let tok = words(gpu, &tb, lead + rows * (n + 1) + 1);
    assert!(
        acc[..lead].iter().all(|&w| w == SENTINEL) && acc[lead + rows] == SENTINEL,
        "{what}"
    );
    assert!(
        tok[..lead].iter().all(|&w| w == SENTINEL) && tok[lead + rows * (n + 1)] == SENTINEL,
        "{what}"
    );
    let want = cpu::verify_speculative_with(&drafts, &q, &p, k, streams, noise).unwrap();
    assert_eq!(acc[lead..lead + rows], want.accepted[..], "{what}");
    // Every slot written: no sentinel left inside the window.
    assert!(
        tok[lead..lead + rows * (n + 1)]
            .iter()
            .all(|&w| w != SENTINEL),
        "{what}"
    );
    assert_eq!(tok[lead..lead + rows * (n + 1)], want.tokens[..], "{what}");
}

// ---------------------------------------------------------------------------------------------
// The kernel's algorithm, on the CPU.

#[test]
fn the_kernels_sort_free_search_keeps_exactly_the_sorted_reference_set() {
    // `cpu::token_kept_radix` runs the kernel's threshold search (radix select for top-k, radix
    // search on mass for top-p, index select among ties) in f64: it must keep exactly what the
    // sort-based reference keeps, ties included, on many rows (no GPU: fast, so many cases).
    let mut rng = StdRng::seed_from_u64(0x50f7);
    let mut sizes: Vec<usize> = vec![1, 2, 3, 31, 33, 255, 256, 257, 1025, 4097, 70_001];
    sizes.extend((0..40).map(|_| rng.random_range(1..3000)));
    let mut checked = 0;
    for &k in &sizes {
        for quantised in [false, true] {
            let reps = if k > 10_000 { 4 } else { 12 };
            for _ in 0..reps {
                let row = logits(&mut rng, 1, k, quantised);
                let mut p = row_params(&mut rng, k);
                if p.temperature == 0.0 {
                    p.temperature = 0.7;
                }
                let radix = cpu::token_kept_radix(&row, &p).unwrap();
                let sorted = kept(&row, &p, 0.0);
                assert_eq!(radix, sorted, "k {k} quantised {quantised} {p:?}");
                checked += 1;
            }
        }
    }
    eprintln!("{checked} rows");
}

#[test]
fn chunked_dispatch_gives_the_same_results_as_one_dispatch() {
    // Bindings capped at 1024 elements: 41 rows of k = 257 take one dispatch per 3 rows, each
    // window starting mid-word for f16 (odd k). Every per-row result must be bit-identical.
    let chunked = gumbel_wgpu::Gpu::with_options(gumbel_wgpu::GpuOptions {
        max_chunk_elements: Some(1024),
        ..Default::default()
    })
    .unwrap();
    let mut rng = StdRng::seed_from_u64(0xc4c);
    let (rows, k) = (41usize, 257usize);
    let l = logits(&mut rng, rows, k, false);
    let rp: Vec<RowSampling> = (0..rows).map(|_| row_params(&mut rng, k)).collect();
    let p = Params::of(&rp, (0..rows).map(|_| stream(&mut rng)).collect(), 4);
    let h: Vec<u16> = l
        .iter()
        .map(|&x| gumbel_wgpu::logits::f32_to_f16(x))
        .collect();
    for input in [LogitsSlice::F32(&l), LogitsSlice::F16(&h)] {
        for noise in [Noise::Bits32, Noise::Bits64] {
            let one = gpu().sample_tokens_with(input, k, &p.get(), noise).unwrap();
            let many = chunked
                .sample_tokens_with(input, k, &p.get(), noise)
                .unwrap();
            assert_eq!(one.tokens, many.tokens, "{noise:?}");
            assert_eq!(one.top_tokens, many.top_tokens, "{noise:?}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&one.logprobs), bits(&many.logprobs), "{noise:?}");
            assert_eq!(
                bits(&one.top_logprobs),
                bits(&many.top_logprobs),
                "{noise:?}"
            );
        }
    }
}

#[test]
fn buffer_level_out_of_domain_parameters_behave_as_documented() {
    // Device-side parameters are not checked on the host; TokenRowParams documents what the
    // kernel does with each out-of-domain value: a top_k past k is off, everything else out of
    // its domain is a bad row (NO_INDEX, STATUS_BAD_PARAMS). Distinct logits, so the argmax is
    // unique.
    let gpu = gpu();
    let mut rng = StdRng::seed_from_u64(0xd0d);
    let k = 300usize;
    let base = RowSampling::new(1.0);
    let bad = |f: fn(&mut RowSampling)| {
        let mut p = base;
        f(&mut p);
        p
    };
    // (what, device parameters, the slice-level parameters they must act like, or None: bad)
    let cases: Vec<(&str, RowSampling, Option<RowSampling>)> = vec![
        ("NaN temperature", bad(|p| p.temperature = f32::NAN), None),
        ("negative temperature", bad(|p| p.temperature = -1.0), None),
        (
            "inf temperature",
            bad(|p| p.temperature = f32::INFINITY),
            None,
        ),
        (
            "-inf temperature",
            bad(|p| p.temperature = f32::NEG_INFINITY),
            None,
        ),
        (
            "subnormal temperature",
            bad(|p| p.temperature = 1e-40),
            None,
        ),
        (
            "least subnormal temperature",
            bad(|p| p.temperature = f32::from_bits(1)),
            None,
        ),
        (
            "negative subnormal temperature",
            bad(|p| p.temperature = -1e-40),
            None,
        ),
        (
            "-0 temperature (greedy)",
            bad(|p| p.temperature = -0.0),
            Some(RowSampling::new(0.0)),
        ),
        ("top_k >= k", bad(|p| p.top_k = 305), Some(base)),
        ("NaN top_p", bad(|p| p.top_p = f32::NAN), None),
        ("top_p > 1", bad(|p| p.top_p = 3.0), None),
        ("top_p <= 0", bad(|p| p.top_p = -1.0), None),
        ("NaN min_p", bad(|p| p.min_p = f32::NAN), None),
        ("negative min_p", bad(|p| p.min_p = -0.5), None),
        ("min_p >= 1", bad(|p| p.min_p = 1.5), None),
        (
            "zero repetition penalty",
            bad(|p| p.repetition_penalty = 0.0),
            None,
        ),
        (
            "NaN repetition penalty",
            bad(|p| p.repetition_penalty = f32::NAN),
            None,
        ),
        (
            "inf frequency penalty",
            bad(|p| p.frequency_penalty = f32::INFINITY),
            None,
        ),
        (
            "NaN presence penalty",
            bad(|p| p.presence_penalty = f32::NAN),
            None,
        ),
        ("negative top_n_sigma", bad(|p| p.top_n_sigma = -1.0), None),
        ("NaN top_n_sigma", bad(|p| p.top_n_sigma = f32::NAN), None),
        ("good row", base, Some(base)),
    ];
    let rows = cases.len();
    let l: Vec<f32> = (0..rows * k)
        .map(|_| rng.random_range(-4.0f32..4.0))
        .collect();
    let streams: Vec<Stream> = (0..rows).map(|_| stream(&mut rng)).collect();
    let dev: Vec<TokenRowParams> = (0..rows)
        .map(|r| TokenRowParams::new(cases[r].1, streams[r]))
        .collect();
    let lb = gpu.upload("logits", &l).unwrap();
    let pb = gpu.upload("params", &dev).unwrap();
    let tb = poisoned(gpu, rows);
    let sb = poisoned(gpu, rows);
    let sampler = gpu.token_sampler().unwrap();
    run(gpu, |enc| {
        let job = TokenJob {
            status: Some(sb.slice(..)),
            ..token_job(&lb, &pb, &tb, rows, k)
        };
        sampler.record(enc, &job).unwrap()
    });
    let got = words(gpu, &tb, rows);
    let status = words(gpu, &sb, rows);
    let like: Vec<RowSampling> = cases.iter().map(|c| c.2.unwrap_or(base)).collect();
    let want = cpu::sample_tokens(&l, k, &Params::of(&like, streams, 0).get()).unwrap();
    for (r, c) in cases.iter().enumerate() {
        match c.2 {
            Some(_) => {
                assert_eq!(got[r], want.tokens[r], "{}", c.0);
                assert_eq!(status[r], 0, "{}", c.0);
            }
            None => {
                assert_eq!(got[r], NO_INDEX, "{}", c.0);
                assert_eq!(status[r], TokenSampler::STATUS_BAD_PARAMS, "{}", c.0);
            }
        }
    }
}

/// A plain f32 job: `rows x k` logits, row parameters, tokens out, nothing else.
fn token_job<'a>(
    logits: &'a wgpu::Buffer,
    params: &'a wgpu::Buffer,
    out: &'a wgpu::Buffer,
    rows: usize,
    k: usize,
) -> TokenJob<'a> {
    TokenJob {
        logits: LogitsView::f32(logits.slice(..), rows as u64, k as u64),
        row_params: params.slice(..),
        out: out.slice(..),
        logprobs: None,
        top_n: 0,
        top: None,
        status: None,
        noise: Noise::Bits32,
        chain: Default::default(),
        ranks: None,
        logprobs_mode: Default::default(),
        filters: Default::default(),
        strategy: Default::default(),
    }
}
