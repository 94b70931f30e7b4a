//! Defined outputs for every bad per-row device value: a per-row temperature that is NaN, zero,
//! negative, subnormal or infinite gives the documented output for its row (NaN in every
//! element for the backward and the density, `NO_INDEX` in every slot for the sampler, `NO_INDEX`,
//! a NaN log-probability and `STATUS_BAD_PARAMS` for the token sampler; the backward's optional
//! status records the first bad row as the forward's does), a bad probability that speculative
//! verification reads ends its row with `NO_INDEX`, and the other rows get exactly the bits
//! they get when the bad values are replaced by good ones (rows are independent), on every path.

mod common;

use common::{gpu, poisoned, run};
use gumbel_wgpu::{
    BackwardInput, BackwardJob, DensityJob, GradSpace, GumbelSoftmax, LogitsFormat, LogitsView,
    NO_INDEX, Noise, RowPath, RowSampling, SampleJob, SampleStrategy, SpeculativeJob, Stream,
    Temperature, TokenJob, TokenRowParams, TokenSampler,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

const NAN_BITS: u32 = 0x7fc0_0000;

/// Per-row temperatures: bad ones at the even rows, good ones at the odd rows.
fn taus(rows: usize) -> (Vec<f32>, Vec<bool>) {
    let bad = [
        f32::NAN,
        0.0,
        -0.0,
        -1.0,
        1e-40,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -f32::NAN,
        f32::from_bits(1),
    ];
    let mut t = Vec::new();
    let mut is_bad = Vec::new();
    for r in 0..rows {
        if r % 2 == 0 {
            t.push(bad[(r / 2) % bad.len()]);
            is_bad.push(true);
        } else {
            t.push(0.3 + r as f32 * 0.1);
            is_bad.push(false);
        }
    }
    (t, is_bad)
}

/// The same temperatures with every bad one replaced by 1.
fn repaired(t: &[f32], bad: &[bool]) -> Vec<f32> {
    t.iter()
        .zip(bad)
        .map(|(&t, &b)| if b { 1.0 } else { t })
        .collect()
}

#[test]
fn the_backward_gives_nan_rows_for_bad_per_row_temperatures_on_every_path() {
    let gpu = gpu();
    let kernels = gpu.gumbel_softmax_backward_kernels().unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    for &(rows, k, path) in &[
        (18usize, 5usize, RowPath::RowPerThread),
        (18, 33, RowPath::RowPerTeam),
        (18, 300, RowPath::RowPerWorkgroup),
        (4, 9000, RowPath::SplitRows),
        (9, 1, RowPath::Auto),
    ] {
        let (t, bad) = taus(rows);
        let logits: Vec<f32> = (0..rows * k).map(|_| rng.random_range(-3.0..3.0)).collect();
        let y: Vec<f32> = (0..rows * k).map(|_| rng.random_range(0.0..1.0)).collect();
        let dy: Vec<f32> = (0..rows * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let y_buf = gpu.upload("y", &y).unwrap();
        let l_buf = gpu.upload("l", &logits).unwrap();
        let dy_buf = gpu.upload("dy", &dy).unwrap();
        for recompute in [false, true] {
            // With a status buffer (cleared first) when `with_status`; returns the output and
            // the status words.
            let run_status = |taus: &[f32], with_status: bool| -> (Vec<u32>, Vec<u32>) {
                let t_buf = gpu.upload("t", taus).unwrap();
                let out = poisoned(gpu, rows * k);
                let status = gpu.upload("status", &GumbelSoftmax::STATUS_CLEAR).unwrap();
                let input = if recompute {
                    BackwardInput::Logits {
                        logits: LogitsView::f32(l_buf.slice(..), rows as u64, k as u64),
                        stream: Stream { seed: 9, offset: 3 },
                        space: GradSpace::Probs,
                    }
                } else {
                    BackwardInput::Probs(LogitsView::f32(y_buf.slice(..), rows as u64, k as u64))
                };
                let job = BackwardJob {
                    input,
                    grad: dy_buf.slice(..),
                    tau: Temperature::PerRow(t_buf.slice(..)),
                    out: out.slice(..),
                    status: with_status.then(|| status.slice(..)),
                };
                run(gpu, |enc| kernels.record_path(enc, &job, path).unwrap());
                (
                    gpu.read_buffer(&out, rows * k).unwrap(),
                    gpu.read_buffer(&status, GumbelSoftmax::STATUS_WORDS)
                        .unwrap(),
                )
            };
            let run_with = |taus: &[f32]| run_status(taus, false).0;
            let got = run_with(&t);
            let good = run_with(&repaired(&t, &bad));
            // The status: word 2 is the first bad row (as in the forward), words 0 and 1 stay
            // clear; no bad row leaves it clear; the output is the same with or without it.
            let (got_s, status) = run_status(&t, true);
            assert_eq!(got_s, got, "{path:?} recompute {recompute}: with a status");
            let first = bad.iter().position(|&b| b).unwrap() as u32;
            assert_eq!(status, [u32::MAX, u32::MAX, first], "{path:?} {recompute}");
            assert!(GumbelSoftmax::status_result(&status).is_err());
            let mut late = repaired(&t, &bad);
            late[rows - 1] = f32::NAN;
            let (_, status) = run_status(&late, true);
            let last = rows as u32 - 1;
            assert_eq!(status, [u32::MAX, u32::MAX, last], "{path:?} {recompute}");
            let (_, status) = run_status(&repaired(&t, &bad), true);
            assert_eq!(status, GumbelSoftmax::STATUS_CLEAR, "{path:?} {recompute}");
            for r in 0..rows {
                let row = &got[r * k..(r + 1) * k];
                if bad[r] {
                    assert!(
                        row.iter().all(|&w| w == NAN_BITS),
                        "{path:?} recompute {recompute} row {r} tau {}: {:x?}",
                        t[r],
                        &row[..row.len().min(4)]
                    );
                } else {
                    assert_eq!(row, &good[r * k..(r + 1) * k], "{path:?} row {r}");
                    assert!(row.iter().all(|&w| f32::from_bits(w).is_finite()));
                }
            }
        }
    }
}

#[test]
fn the_density_gives_nan_for_bad_per_row_temperatures_on_every_path() {
    let gpu = gpu();
    let kernels = gpu.concrete_density_kernels().unwrap();
    let mut rng = StdRng::seed_from_u64(4);
    for &(rows, k, path) in &[
        (18usize, 5usize, RowPath::RowPerThread),
        (18, 33, RowPath::RowPerTeam),
        (18, 300, RowPath::RowPerWorkgroup),
        (4, 9000, RowPath::SplitRows),
    ] {
        let (t, bad) = taus(rows);
        let logits: Vec<f32> = (0..rows * k).map(|_| rng.random_range(-3.0..3.0)).collect();
        let y = gpu
            .gumbel_softmax_log(&logits, k, 1.0, Stream::new(5))
            .unwrap();
        let l_buf = gpu.upload("l", &logits).unwrap();
        let y_buf = gpu.upload("y", &y).unwrap();
        let run_with = |taus: &[f32]| -> Vec<u32> {
            let t_buf = gpu.upload("t", taus).unwrap();
            let out = poisoned(gpu, rows);
            let job = DensityJob {
                logits: LogitsView::f32(l_buf.slice(..), rows as u64, k as u64),
                log_y: y_buf.slice(..),
                tau: Temperature::PerRow(t_buf.slice(..)),
                simplex: false,
                out: out.slice(..),
            };
            run(gpu, |enc| kernels.record_path(enc, &job, path).unwrap());
            gpu.read_buffer(&out, rows).unwrap()
        };
        let got = run_with(&t);
        let good = run_with(&repaired(&t, &bad));
        for r in 0..rows {
            if bad[r] {
                assert_eq!(got[r], NAN_BITS, "{path:?} row {r} tau {}", t[r]);
            } else {
                assert_eq!(got[r], good[r], "{path:?} row {r}");
                assert!(f32::from_bits(got[r]).is_finite(), "{path:?} row {r}");
            }
        }
    }
}

#[test]
fn the_sampler_gives_no_index_for_bad_per_row_temperatures_on_every_path() {
    let gpu = gpu();
    let kernels = gpu.sampler().unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    for &(rows, k, top, strategy) in &[
        (18usize, 5usize, 1u32, SampleStrategy::RowPerThread),
        (18, 300, 1, SampleStrategy::RowPerWorkgroup),
        (18, 100, 1, SampleStrategy::RowPerSegment { threads: 32 }),
        (4, 20000, 1, SampleStrategy::SplitRow { chunks: 0 }),
        (18, 40, 3, SampleStrategy::RowPerThread),
        (18, 600, 5, SampleStrategy::RowPerWorkgroup),
        (4, 20000, 4, SampleStrategy::Auto),
    ] {
        let (t, bad) = taus(rows);
        let logits: Vec<f32> = (0..rows * k).map(|_| rng.random_range(-3.0..3.0)).collect();
        for format in [LogitsFormat::F32, LogitsFormat::Bf16] {
            let words: Vec<u32> = if format == LogitsFormat::F32 {
                logits.iter().map(|x| x.to_bits()).collect()
            } else {
                // bf16: the high halves of the f32 bits, two per word (element 2i low).
                logits
                    .chunks(2)
                    .map(|c| {
                        let lo = c[0].to_bits() >> 16;
                        let hi = c.get(1).map_or(0, |x| x.to_bits() >> 16);
                        lo | hi << 16
                    })
                    .collect()
            };
            let l_buf = gpu.upload("l", &words).unwrap();
            let run_with = |taus: &[f32]| -> Vec<u32> {
                let t_buf = gpu.upload("t", taus).unwrap();
                let out = poisoned(gpu, rows * top as usize);
                let job = SampleJob {
                    logits: LogitsView::new(l_buf.slice(..), format, rows as u64, k as u64),
                    top,
                    tau: Temperature::PerRow(t_buf.slice(..)),
                    stream: Stream::new(7),
                    noise: Noise::Bits32,
                    out: out.slice(..),
                };
                run(gpu, |enc| kernels.record_path(enc, &job, strategy).unwrap());
                gpu.read_buffer(&out, rows * top as usize).unwrap()
            };
            let got = run_with(&t);
            let good = run_with(&repaired(&t, &bad));
            let top = top as usize;
            for r in 0..rows {
                let row = &got[r * top..(r + 1) * top];
                if bad[r] {
                    assert!(
                        row.iter().all(|&i| i == NO_INDEX),
                        "{strategy:?} top {top} row {r} tau {}: {row:?}",
                        t[r]
                    );
                } else {
                    assert_eq!(row, &good[r * top..(r + 1) * top], "{strategy:?} row {r}");
                    assert!(row.iter().all(|&i| (i as usize) < k));
                }
            }
        }
    }
}

/// Speculative verification: a bad probability (NaN, infinite, negative) that a row reads, in
/// its acceptance walk or in the law drawn where the walk stops, ends the row there: `accepted`
/// is that position and every slot from it holds `NO_INDEX`. Each bad row plants one bad value
/// at a place the walk is made to reach: the first draft's `p` or `q` entry, an entry of the
/// residual after a forced rejection at position 0 (`p_0(d_0) = 0`), or the bonus law after
/// forced acceptances (`q_i(d_i) = 0`). The good rows give the bits they get with the bad
/// values repaired, and those match the CPU reference.
#[test]
fn speculative_verification_ends_a_row_at_a_bad_probability() {
    let gpu = gpu();
    let verifier = gpu.speculative_verifier().unwrap();
    let bad_values = [
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -1.0,
        -1e-40,
    ];
    let mut rng = StdRng::seed_from_u64(6);
    for &(rows, n, k) in &[(16usize, 3usize, 5usize), (12, 2, 300), (8, 3, 4097)] {
        for noise in [Noise::Bits32, Noise::Bits64] {
            let drafts: Vec<u32> = (0..rows * n)
                .map(|_| rng.random_range(0..k as u32))
                .collect();
            let mut q: Vec<f32> = (0..rows * n * k)
                .map(|_| rng.random_range(0.0..1.0))
                .collect();
            let mut p: Vec<f32> = (0..rows * (n + 1) * k)
                .map(|_| rng.random_range(0.01..1.0))
                .collect();
            let streams: Vec<Stream> = (0..rows).map(|r| Stream::new(100 + r as u64)).collect();
            // (row, which law, index, expected stop) of each planted bad value.
            let mut planted = Vec::new();
            let mut stop = vec![None; rows];
            for r in (0..rows).step_by(2) {
                let v = bad_values[(r / 2) % bad_values.len()];
                let d0 = drafts[r * n] as usize;
                let other = (d0 + 1 + rng.random_range(0..k - 1)) % k;
                let case = (r / 2) % 4;
                let (is_q, at, s) = match case {
                    // The first draft's target or draft probability.
                    0 => (false, r * (n + 1) * k + d0, 0),
                    1 => (true, r * n * k + d0, 0),
                    // The residual at position 0 (k = 1 cannot reject into another category).
                    2 if k > 1 => {
                        p[r * (n + 1) * k + d0] = 0.0;
                        (true, r * n * k + other, 0)
                    }
                    // The bonus law after n forced acceptances.
                    _ => {
                        for i in 0..n {
                            q[(r * n + i) * k + drafts[r * n + i] as usize] = 0.0;
                        }
                        (false, (r * (n + 1) + n) * k + other % k, n)
                    }
                };
                planted.push((is_q, at));
                if is_q {
                    q[at] = v;
                } else {
                    p[at] = v;
                }
                stop[r] = Some(s);
            }
            let d_buf = gpu.upload("d", &drafts).unwrap();
            let s_words: Vec<u32> = streams
                .iter()
                .flat_map(|&s| gumbel_wgpu::stream_words(s))
                .collect();
            let s_buf = gpu.upload("s", &s_words).unwrap();
            let run_with = |q: &[f32], p: &[f32]| -> (Vec<u32>, Vec<u32>) {
                let q_buf = gpu.upload("q", q).unwrap();
                let p_buf = gpu.upload("p", p).unwrap();
                let acc = poisoned(gpu, rows);
                let out = poisoned(gpu, rows * (n + 1));
                let job = SpeculativeJob {
                    rows: rows as u64,
                    n: n as u64,
                    k: k as u64,
                    draft_tokens: d_buf.slice(..),
                    draft_probs: q_buf.slice(..),
                    target_probs: p_buf.slice(..),
                    streams: s_buf.slice(..),
                    accepted: acc.slice(..),
                    tokens: out.slice(..),
                    noise,
                };
                run(gpu, |enc| verifier.record(enc, &job).unwrap());
                (
                    gpu.read_buffer(&acc, rows).unwrap(),
                    gpu.read_buffer(&out, rows * (n + 1)).unwrap(),
                )
            };
            let (acc, out) = run_with(&q, &p);
            let (mut q_ok, mut p_ok) = (q.clone(), p.clone());
            for &(is_q, at) in &planted {
                if is_q {
                    q_ok[at] = 0.5;
                } else {
                    p_ok[at] = 0.5;
                }
            }
            let (acc_ok, out_ok) = run_with(&q_ok, &p_ok);
            let cpu = gumbel_wgpu::cpu::verify_speculative_with(
                &drafts, &q_ok, &p_ok, k, &streams, noise,
            )
            .unwrap();
            let what = format!("rows {rows} n {n} k {k} {noise:?}");
            for r in 0..rows {
                let row = &out[r * (n + 1)..(r + 1) * (n + 1)];
                if let Some(s) = stop[r] {
                    assert_eq!(acc[r] as usize, s, "{what} row {r}: accepted");
                    assert_eq!(&row[..s], &drafts[r * n..r * n + s], "{what} row {r}");
                    assert!(
                        row[s..].iter().all(|&t| t == NO_INDEX),
                        "{what} row {r}: {row:?}"
                    );
                } else {
                    assert_eq!(acc[r], acc_ok[r], "{what} row {r}");
                    assert_eq!(
                        row,
                        &out_ok[r * (n + 1)..(r + 1) * (n + 1)],
                        "{what} row {r}"
                    );
                    assert_eq!(acc[r], cpu.accepted[r], "{what} row {r}: CPU");
                    assert_eq!(
                        row,
                        &cpu.tokens[r * (n + 1)..(r + 1) * (n + 1)],
                        "{what} row {r}"
                    );
                }
            }
        }
    }
}

/// The token sampler: a per-row temperature that is NaN, infinite, negative or subnormal (either
/// sign) gives its row `NO_INDEX`, a NaN log-probability and `STATUS_BAD_PARAMS`; 0 and -0 are
/// greedy (good). The other rows get the bits they get with the bad temperatures repaired, with
/// status 0, across formats, sizes around the workgroup and a filtered and an unfiltered row law.
#[test]
fn the_token_sampler_gives_no_index_and_a_status_for_bad_temperatures() {
    let gpu = gpu();
    let sampler = gpu.token_sampler().unwrap();
    let bad_values = [
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -1.0,
        1e-40,
        -1e-40,
        f32::from_bits(1),
    ];
    let good_values = [0.0, -0.0, 0.7, 1.3];
    let mut rng = StdRng::seed_from_u64(7);
    for &(rows, k) in &[(16usize, 3usize), (16, 257), (8, 4097)] {
        for format in [LogitsFormat::F32, LogitsFormat::Bf16] {
            for (top_k, top_p) in [(0u32, 1.0f32), (50, 0.9)] {
                let logits: Vec<f32> = (0..rows * k).map(|_| rng.random_range(-3.0..3.0)).collect();
                let words: Vec<u32> = if format == LogitsFormat::F32 {
                    logits.iter().map(|x| x.to_bits()).collect()
                } else {
                    logits
                        .chunks(2)
                        .map(|c| {
                            let lo = c[0].to_bits() >> 16;
                            let hi = c.get(1).map_or(0, |x| x.to_bits() >> 16);
                            lo | hi << 16
                        })
                        .collect()
                };
                let l_buf = gpu.upload("l", &words).unwrap();
                let t: Vec<f32> = (0..rows)
                    .map(|r| {
                        if r % 2 == 0 {
                            bad_values[(r / 2) % bad_values.len()]
                        } else {
                            good_values[(r / 2) % good_values.len()]
                        }
                    })
                    .collect();
                let run_with = |t: &[f32]| -> [Vec<u32>; 3] {
                    let params: Vec<TokenRowParams> = (0..rows)
                        .map(|r| {
                            let mut s = RowSampling::new(t[r]);
                            s.top_k = top_k;
                            s.top_p = top_p;
                            TokenRowParams::new(s, Stream::new(50 + r as u64))
                        })
                        .collect();
                    let p_buf = gpu.upload("p", &params).unwrap();
                    let (out, lp, st) = (
                        poisoned(gpu, rows),
                        poisoned(gpu, rows),
                        poisoned(gpu, rows),
                    );
                    let job = TokenJob {
                        logprobs: Some(lp.slice(..)),
                        status: Some(st.slice(..)),
                        ..TokenJob::new(
                            LogitsView::new(l_buf.slice(..), format, rows as u64, k as u64),
                            p_buf.slice(..),
                            out.slice(..),
                        )
                    };
                    run(gpu, |enc| sampler.record(enc, &job).unwrap());
                    [out, lp, st].map(|b| gpu.read_buffer(&b, rows).unwrap())
                };
                let [tok, lp, st] = run_with(&t);
                let fixed: Vec<f32> = t
                    .iter()
                    .enumerate()
                    .map(|(r, &x)| if r % 2 == 0 { 1.0 } else { x })
                    .collect();
                let [tok_ok, lp_ok, _] = run_with(&fixed);
                let what = format!("rows {rows} k {k} {format:?} top_k {top_k} top_p {top_p}");
                for r in 0..rows {
                    if r % 2 == 0 {
                        assert_eq!(tok[r], NO_INDEX, "{what} row {r} t {}", t[r]);
                        assert!(f32::from_bits(lp[r]).is_nan(), "{what} row {r}");
                        assert_ne!(lp[r], common::SENTINEL, "{what} row {r}");
                        assert_eq!(st[r], TokenSampler::STATUS_BAD_PARAMS, "{what} row {r}");
                    } else {
                        assert_eq!(tok[r], tok_ok[r], "{what} row {r}");
                        assert_eq!(lp[r], lp_ok[r], "{what} row {r}");
                        assert!((tok[r] as usize) < k, "{what} row {r}");
                        assert_eq!(st[r], 0, "{what} row {r}");
                    }
                }
            }
        }
    }
}
