//! The Concrete / Gumbel-Softmax log-density: the GPU against the f64 reference at awkward shapes
//! on both kernel paths, and the density itself against the truth for k = 2, where
//! t = x_1 - x_2 ~ Logistic((l_1 - l_2) / tau, 1 / tau): pointwise, by integrating to 1, and by
//! the probability of an interval against Monte Carlo samples of the CPU forward.

mod common;
use common::*;
use gumbel_wgpu::logits::{f32_to_bf16, f32_to_f16, pack_u16};
use gumbel_wgpu::{
    DensityJob, Error, Gpu, LogitsFormat, LogitsSlice, LogitsView, RowPath, SIMPLEX_TOLERANCE,
    Stream, Temperature, cpu,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

const KS: &[usize] = &[1, 2, 3, 7, 31, 33, 255, 257, 1000, 4097, 65537];
const TAUS: &[f32] = &[0.1, 0.5, 1.0, 10.0];

/// Per row, the magnitude of the terms the log-density sums: lgamma(c) + (c - 1) |log tau| +
/// sum |s_i| + c |lse| (+ sum |x_i| on the simplex). f32 rounding is relative to this.
fn scale(l: &[f32], x: &[f64], k: usize, tau: f64, simplex: bool) -> Vec<f64> {
    l.chunks(k)
        .zip(x.chunks(k))
        .map(|(lr, xr)| {
            let live: Vec<(f64, f64)> = lr
                .iter()
                .zip(xr)
                .filter(|(l, _)| l.is_finite())
                .map(|(&l, &x)| (f64::from(l), x))
                .collect();
            let c = live.len() as f64;
            let s: Vec<f64> = live.iter().map(|(l, x)| l - tau * x).collect();
            let m = s.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            let lse = m + s.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            cpu::lgamma_int(live.len())
                + (c - 1.0) * tau.ln().abs()
                + s.iter().map(|v| v.abs()).sum::<f64>()
                + c * lse.abs()
                + if simplex {
                    live.iter().map(|(_, x)| x.abs()).sum::<f64>()
                } else {
                    0.0
                }
        })
        .collect()
}

/// Relative tolerance on |gpu - reference| / scale: a few f32 ulp plus the sums' rounding,
/// 2 eps sqrt(m) for a sequential part of length m (the row on one invocation; k / T plus
/// log2(T) tree levels on T invocations, plus one merge per segment of a split row).
fn rtol(k: usize, path: RowPath) -> f64 {
    let team = match path {
        RowPath::Auto if k <= gumbel_wgpu::ROW_PER_THREAD_MAX_K as usize => 0,
        RowPath::Auto if k <= gumbel_wgpu::ROW_PER_TEAM_MAX_K as usize => 32,
        RowPath::RowPerThread => 0,
        RowPath::RowPerTeam => 32,
        _ => 256,
    };
    let m = if team == 0 {
        k
    } else {
        k.div_ceil(team) + team.ilog2() as usize + k.div_ceil(4096)
    };
    f64::from(f32::EPSILON) * (8.0 + 2.0 * (m as f64).sqrt())
}

fn run_density(
    gpu: &Gpu,
    l: &[f32],
    x: &[f32],
    k: usize,
    tau: f32,
    simplex: bool,
    path: RowPath,
) -> Vec<f32> {
    let rows = l.len() / k;
    let kernels = gpu.concrete_density_kernels().unwrap();
    let lb = gpu.upload("l", l).unwrap();
    let xb = gpu.upload("x", x).unwrap();
    let out = poisoned(gpu, rows + 5);
    let job = DensityJob {
        logits: LogitsView::f32(lb.slice(..), rows as u64, k as u64),
        log_y: xb.slice(..),
        tau: Temperature::Scalar(tau),
        simplex,
        out: out.slice(..(rows as u64 * 4)),
    };
    run(gpu, |enc| kernels.record_path(enc, &job, path).unwrap());
    let mut got: Vec<f32> = gpu.read_buffer(&out, rows + 5).unwrap();
    assert!(
        got[rows..].iter().all(|v| v.to_bits() == SENTINEL),
        "wrote past the end"
    );
    got.truncate(rows);
    got
}

#[test]
fn gpu_log_density_matches_the_reference_at_awkward_shapes() {
    let mut rng = StdRng::seed_from_u64(1);
    let gpu = gpu();
    let mut worst = [0f64; 2];
    for &k in KS {
        let many = (40_000 / k).clamp(1, 300);
        for rows in if many > 1 { vec![1, many] } else { vec![1] } {
            for &tau in TAUS {
                let l = masked_logits(&mut rng, rows, k, 0.1);
                let stream = Stream::new(rng.random());
                // Real samples of the forward, in log space, as f32.
                let x32: Vec<f32> = cpu::gumbel_softmax_log(&l, k, f64::from(tau), stream)
                    .iter()
                    .map(|&v| v as f32)
                    .collect();
                let x: Vec<f64> = x32.iter().map(|&v| f64::from(v)).collect();
                for simplex in [false, true] {
                    let t = f64::from(tau);
                    let want = if simplex {
                        cpu::concrete_log_prob_simplex(&l, &x, k, t)
                    } else {
                        cpu::concrete_log_prob(&l, &x, k, t)
                    };
                    let sc = scale(&l, &x, k, t, simplex);
                    let all = [
                        RowPath::Auto,
                        RowPath::RowPerThread,
                        RowPath::RowPerTeam,
                        RowPath::RowPerWorkgroup,
                        RowPath::SplitRows,
                    ];
                    // One invocation on a 65537-entry row: slow on software GL (1 s lock).
                    let paths = if k <= 4097 { &all[..] } else { &all[2..] };
                    // The reducing paths also without subgroups (the workgroup-memory tree;
                    // gpu() reduces with subgroups where it can).
                    let runs = paths.iter().flat_map(|&path| {
                        let both = path != RowPath::Auto && path != RowPath::RowPerThread;
                        let without =
                            (both && gpu.shader_config().subgroups).then(gpu_without_subgroups);
                        [gpu].into_iter().chain(without).map(move |g| (g, path))
                    });
                    for (g, path) in runs {
                        let got = run_density(g, &l, &x32, k, tau, simplex, path);
                        let tol = rtol(k, path);
                        for r in 0..rows {
                            let err = (f64::from(got[r]) - want[r]).abs();
                            assert!(
                                err <= tol * sc[r],
                                "k {k} rows {rows} tau {tau} simplex {simplex} {path:?} row {r} \
                                 ({}): gpu {} reference {} scale {}",
                                g.describe(),
                                got[r],
                                want[r],
                                sc[r]
                            );
                            worst[usize::from(simplex)] =
                                worst[usize::from(simplex)].max(err / sc[r]);
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "worst |error| / scale: log space {:e}, simplex {:e}",
        worst[0], worst[1]
    );
}

/// The k = 2 density of t = x_1 - x_2: Logistic(mu = (l_1 - l_2) / tau, scale 1 / tau).
fn log_logistic(t: f64, dl: f64, tau: f64) -> f64 {
    let u = tau * t - dl;
    tau.ln() - u - 2.0 * (-u).exp().ln_1p()
}

/// (x_1, x_2) = (log sigmoid(t), log sigmoid(-t)), accurate for large |t|.
fn log_point(t: f64) -> (f64, f64) {
    let ls = |t: f64| {
        if t > 0.0 {
            -(-t).exp().ln_1p()
        } else {
            t - t.exp().ln_1p()
        }
    };
    (ls(t), ls(-t))
}

#[test]
fn for_two_categories_the_density_is_the_logistic_law_and_integrates_to_one() {
    let gpu = gpu();
    for &(l1, l2) in &[(0.7f32, -0.3f32), (0.0, 0.0), (-2.5, 1.25)] {
        for &tau in TAUS {
            let t64 = f64::from(tau);
            let dl = f64::from(l1) - f64::from(l2);
            // 8001 points over mu +- 40 scales; the tails beyond hold e^-40 of the mass.
            let n = 8001;
            let (lo, hi) = ((dl - 40.0) / t64, (dl + 40.0) / t64);
            let h = (hi - lo) / (n - 1) as f64;
            let ts: Vec<f64> = (0..n).map(|i| lo + h * i as f64).collect();
            let l: Vec<f32> = ts.iter().flat_map(|_| [l1, l2]).collect();
            let x: Vec<f32> = ts
                .iter()
                .flat_map(|&t| {
                    let (a, b) = log_point(t);
                    [a as f32, b as f32]
                })
                .collect();
            let lp = gpu.concrete_log_prob(&l, &x, 2, tau).unwrap();
            let lps = gpu.concrete_log_prob_simplex(&l, &x, 2, tau).unwrap();
            let mut worst: f64 = 0.0;
            let (mut int_t, mut int_y) = (0.0, 0.0);
            for (i, &t) in ts.iter().enumerate() {
                // The density at the f32 point the GPU saw (only x_1 - x_2 matters).
                let tf = f64::from(x[2 * i]) - f64::from(x[2 * i + 1]);
                let want = log_logistic(tf, dl, t64);
                let err = (f64::from(lp[i]) - want).abs();
                worst = worst.max(err / want.abs().max(1.0));
                let w = if i == 0 || i == n - 1 { 0.5 } else { 1.0 };
                int_t += w * h * f64::from(lp[i]).exp();
                // dy_1 = y_1 y_2 dt: the simplex density of y_1 integrated over (0, 1).
                let (a, b) = log_point(t);
                int_y += w * h * (f64::from(lps[i]) + a + b).exp();
            }
            eprintln!(
                "l ({l1}, {l2}) tau {tau}: worst |log p - logistic| / max(1, |log p|) {worst:e}, \
                 integrals {int_t} (t), {int_y} (y_1)"
            );
            assert!(worst < 1e-5, "pointwise {worst}");
            assert!(
                (int_t - 1.0).abs() < 1e-4,
                "log-space density integrates to {int_t}"
            );
            assert!(
                (int_y - 1.0).abs() < 1e-4,
                "simplex density integrates to {int_y}"
            );
        }
    }
}

#[test]
fn interval_probability_matches_monte_carlo_samples_of_the_forward() {
    // P(a < y_1 < b) from the simplex density (trapezoid over y_1) against the fraction of
    // 200 000 samples of the CPU forward (fixed seed) in (a, b). Binomial standard deviation
    // sqrt(p (1 - p) / n) < 0.0012; we allow 5 of them. The analytic logistic CDF checks both.
    let gpu = gpu();
    let n_samples = 200_000;
    for &(l1, l2, tau, a, b) in &[
        (0.7f32, -0.3f32, 0.5f32, 0.2f64, 0.6f64),
        (1.5, 0.0, 2.0, 0.5, 0.9),
        (-1.0, 0.0, 0.25, 0.01, 0.3),
    ] {
        let l: Vec<f32> = (0..n_samples).flat_map(|_| [l1, l2]).collect();
        let y = cpu::gumbel_softmax(&l, 2, f64::from(tau), Stream::new(20_170_101));
        let inside = y.chunks(2).filter(|r| r[0] > a && r[0] < b).count();
        let p_mc = inside as f64 / n_samples as f64;

        let n = 4001;
        let h = (b - a) / (n - 1) as f64;
        let ys: Vec<f64> = (0..n).map(|i| a + h * i as f64).collect();
        let lg: Vec<f32> = ys.iter().flat_map(|_| [l1, l2]).collect();
        let x: Vec<f32> = ys
            .iter()
            .flat_map(|&y| [y.ln() as f32, (1.0 - y).ln() as f32])
            .collect();
        let lps = gpu.concrete_log_prob_simplex(&lg, &x, 2, tau).unwrap();
        let p_int: f64 = lps
            .iter()
            .enumerate()
            .map(|(i, &v)| if i == 0 || i == n - 1 { 0.5 } else { 1.0 } * h * f64::from(v).exp())
            .sum();

        let dl = f64::from(l1) - f64::from(l2);
        let t64 = f64::from(tau);
        let cdf = |y: f64| 1.0 / (1.0 + (-(t64 * (y / (1.0 - y)).ln() - dl)).exp());
        let p_exact = cdf(b) - cdf(a);
        let sd = (p_exact * (1.0 - p_exact) / n_samples as f64).sqrt();
        eprintln!(
            "l ({l1}, {l2}) tau {tau} ({a}, {b}): Monte Carlo {p_mc}, density {p_int}, exact \
             {p_exact}, sd {sd:e}"
        );
        assert!(
            (p_int - p_exact).abs() < 1e-5,
            "quadrature {p_int} vs {p_exact}"
        );
        assert!(
            (p_mc - p_int).abs() < 5.0 * sd,
            "Monte Carlo {p_mc} vs {p_int}"
        );
    }
}

#[test]
fn masked_categories_are_left_out() {
    // A row with masked entries has the density of the smaller distribution over its live ones.
    let gpu = gpu();
    let ninf = f32::NEG_INFINITY;
    let l = [0.3f32, ninf, -1.0, ninf, 2.0];
    // A point of the live categories' simplex: log y of y = (0.2, 0.3, 0.5).
    let (a, b, c) = (0.2f32.ln(), 0.3f32.ln(), 0.5f32.ln());
    let x = [a, 5.0, b, ninf, c];
    let live_l = [0.3f32, -1.0, 2.0];
    let live_x = [a, b, c];
    for &tau in TAUS {
        let a = gpu.concrete_log_prob(&l, &x, 5, tau).unwrap();
        let b = gpu.concrete_log_prob(&live_l, &live_x, 3, tau).unwrap();
        assert!(
            (a[0] - b[0]).abs() <= 1e-5 * b[0].abs().max(1.0),
            "{a:?} {b:?}"
        );
        let a = gpu.concrete_log_prob_simplex(&l, &x, 5, tau).unwrap();
        let b = gpu
            .concrete_log_prob_simplex(&live_l, &live_x, 3, tau)
            .unwrap();
        assert!(
            (a[0] - b[0]).abs() <= 1e-5 * b[0].abs().max(1.0),
            "{a:?} {b:?}"
        );
    }
    // One live category: a point mass, log-density 0 in log space.
    assert_eq!(
        gpu.concrete_log_prob(&[ninf, 1.0], &[ninf, 0.0], 2, 0.5)
            .unwrap(),
        [0.0]
    );
}

#[test]
fn split_rows_merge_dead_segments() {
    // Rows of 20 000 entries in segments of 4096: the first row's first three segments masked.
    let (k, rows) = (20_000usize, 3usize);
    let mut rng = StdRng::seed_from_u64(5);
    let mut l = masked_logits(&mut rng, rows, k, 0.05);
    for v in &mut l[..12_500] {
        *v = f32::NEG_INFINITY;
    }
    let x32: Vec<f32> = cpu::gumbel_softmax_log(&l, k, 0.5, Stream::new(6))
        .iter()
        .map(|&v| v as f32)
        .collect();
    let x: Vec<f64> = x32.iter().map(|&v| f64::from(v)).collect();
    for simplex in [false, true] {
        let want = if simplex {
            cpu::concrete_log_prob_simplex(&l, &x, k, 0.5)
        } else {
            cpu::concrete_log_prob(&l, &x, k, 0.5)
        };
        let sc = scale(&l, &x, k, 0.5, simplex);
        for path in [RowPath::Auto, RowPath::SplitRows] {
            let got = run_density(gpu(), &l, &x32, k, 0.5, simplex, path);
            for r in 0..rows {
                let err = (f64::from(got[r]) - want[r]).abs();
                assert!(
                    err <= rtol(k, path) * sc[r],
                    "{path:?} row {r}: {} vs {}",
                    got[r],
                    want[r]
                );
            }
        }
    }
}

#[test]
fn chunked_dispatch_gives_the_same_densities_as_one_dispatch() {
    let small = chunked_gpu(1024);
    let mut rng = StdRng::seed_from_u64(3);
    for &(k, rows, path) in &[
        (7usize, 1000usize, RowPath::Auto),
        (33, 200, RowPath::Auto),
        (1000, 5, RowPath::Auto),
        (300, 10, RowPath::SplitRows),
    ] {
        let l = masked_logits(&mut rng, rows, k, 0.1);
        let x: Vec<f32> = cpu::gumbel_softmax_log(&l, k, 0.5, Stream::new(4))
            .iter()
            .map(|&v| v as f32)
            .collect();
        for simplex in [false, true] {
            let a = small
                .concrete_log_prob_with(&l, &x, k, 0.5, simplex, path)
                .unwrap();
            let b = gpu()
                .concrete_log_prob_with(&l, &x, k, 0.5, simplex, path)
                .unwrap();
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "k {k} simplex {simplex}"
            );
        }
    }
}

#[test]
fn bad_input_is_an_error_and_empty_input_is_empty() {
    let gpu = gpu();
    let ninf = f32::NEG_INFINITY;
    let l = [0.0f32, 1.0, 2.0, 3.0];
    let x = [-0.5f32, -1.0, -0.1, -2.0];
    let invalid = |r: Result<Vec<f32>, Error>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(invalid(gpu.concrete_log_prob(&l, &x[..3], 2, 1.0)));
    assert!(invalid(gpu.concrete_log_prob(&l, &x, 3, 1.0)));
    assert!(invalid(gpu.concrete_log_prob(&l, &x, 0, 1.0)));
    for tau in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(invalid(gpu.concrete_log_prob(&l, &x, 2, tau)));
        assert!(invalid(gpu.concrete_log_prob_simplex(&l, &x, 2, tau)));
    }
    assert_eq!(
        gpu.concrete_log_prob(&[0.0, 1.0, ninf, ninf], &x, 2, 1.0),
        Err(Error::AllMaskedRow { row: 1 })
    );
    assert_eq!(
        gpu.concrete_log_prob(&[0.0, 1.0, f32::NAN, 0.0], &x, 2, 1.0),
        Err(Error::NanInRow { row: 1 })
    );
    assert!(invalid(gpu.concrete_log_prob(
        &[0.0, f32::INFINITY, 0.0, 0.0],
        &x,
        2,
        1.0
    )));
    assert!(invalid(gpu.concrete_log_prob(
        &l,
        &[-0.5, ninf, -0.1, -2.0],
        2,
        1.0
    )));
    assert!(invalid(gpu.concrete_log_prob_simplex(
        &l,
        &[-0.5, f32::NAN, -0.1, -2.0],
        2,
        1.0
    )));
    // -inf (or anything) at a masked entry is fine.
    assert!(
        gpu.concrete_log_prob(&[0.0, ninf], &[0.0, ninf], 2, 1.0)
            .is_ok()
    );
    assert_eq!(gpu.concrete_log_prob(&[], &[], 3, 1.0), Ok(vec![]));
    // Buffer level: rows outside the domain get -inf; short buffers are errors.
    let out = run_density(
        gpu,
        &[0.0, 1.0, 0.0, f32::INFINITY, ninf, ninf],
        &[-0.3, ninf, -0.5, -0.5, 0.0, 0.0],
        2,
        1.0,
        false,
        RowPath::Auto,
    );
    assert_eq!(out, [f32::NEG_INFINITY; 3]);
}

// ---------------------------------------------------------------------------------------------
// Points off the simplex.

#[test]
fn points_off_the_simplex_are_refused() {
    // Row 0 is a true sample, row 1 is not: log y = [-0.2, 0.5, 0.3] (entries above 0), and
    // y = [0.4, 0.1, 0.3] (summing to 0.8).
    let gpu = gpu();
    let l = [0.1f32, -0.3, 0.2, 0.1, -0.3, 0.2];
    let good: Vec<f32> = cpu::gumbel_softmax_log(&l[..3], 3, 1.0, Stream::new(1))
        .iter()
        .map(|&v| v as f32)
        .collect();
    let above = [-0.2f32, 0.5, 0.3];
    let short = [0.4f32.ln(), 0.1f32.ln(), 0.3f32.ln()];
    for bad in [above, short] {
        let x: Vec<f32> = good.iter().chain(&bad).copied().collect();
        for simplex in [false, true] {
            match gpu.concrete_log_prob_with(&l, &x, 3, 1.0, simplex, RowPath::Auto) {
                Err(Error::InvalidArgument(m)) => {
                    assert!(m.starts_with("row 1:"), "{m}");
                    eprintln!("{m}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
            for path in [
                RowPath::RowPerThread,
                RowPath::RowPerTeam,
                RowPath::RowPerWorkgroup,
                RowPath::SplitRows,
            ] {
                let out = run_density(gpu, &l, &x, 3, 1.0, simplex, path);
                assert!(
                    out[0].is_finite() && out[1].is_nan(),
                    "{bad:?} {path:?}: {out:?}"
                );
            }
            let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            let cpu = if simplex {
                cpu::concrete_log_prob_simplex(&l, &x64, 3, 1.0)
            } else {
                cpu::concrete_log_prob(&l, &x64, 3, 1.0)
            };
            assert!(
                cpu[0].is_finite() && cpu[1].is_nan(),
                "cpu {bad:?}: {cpu:?}"
            );
        }
    }
    // Masked entries are left out of the sum; a single live entry must have log y = 0.
    let ninf = f32::NEG_INFINITY;
    assert!(
        gpu.concrete_log_prob(&[0.0, ninf], &[-0.1, ninf], 2, 1.0)
            .is_err()
    );
    assert!(
        gpu.concrete_log_prob(&[0.0, ninf], &[0.0, -0.1], 2, 1.0)
            .is_ok()
    );
}

/// The f32 forward as a GPU computes it (z = (l + g) / tau, a max, a sequential f32 sum of
/// exp(z - m), x = z - lse, all in f32) for one row: the worst case of the kernels' arithmetic.
fn f32_forward(l: &[f32], g: &[f64], tau: f32) -> Vec<f32> {
    let z: Vec<f32> = l
        .iter()
        .zip(g)
        .map(|(&l, &g)| (l + g as f32) / tau)
        .collect();
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let s: f32 = z.iter().map(|&z| (z - m).exp()).sum();
    let lse = m + s.ln();
    z.iter().map(|&z| z - lse).collect()
}

#[test]
fn true_samples_stay_far_inside_the_simplex_tolerance() {
    // |logsumexp(x)| / scale, scale = max(1, (max |l| + 23) / tau), for true samples: the f64
    // forward rounded to f32, and an f32 forward; logits in [-4, 4) and shifted by 30 (LM-like).
    let mut rng = StdRng::seed_from_u64(12);
    let mut worst = [0f64; 2];
    for &k in &[2usize, 3, 257, 4097, 65537] {
        for &tau in &[0.01f32, 0.1, 0.5, 1.0, 10.0] {
            for shift in [0.0f32, 30.0] {
                let rows = (200_000 / k).clamp(1, 50);
                let l: Vec<f32> = (0..rows * k)
                    .map(|_| rng.random_range(-4.0f32..4.0) + shift)
                    .collect();
                let stream = Stream::new(rng.random());
                let x64 = cpu::gumbel_softmax_log(&l, k, f64::from(tau), stream);
                let g = cpu::gumbel(stream, rows * k);
                for r in 0..rows {
                    let lr = &l[r * k..(r + 1) * k];
                    let max_l = lr.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
                    let scale = ((max_l + 23.0) / f64::from(tau)).max(1.0);
                    let rounded: Vec<f64> = x64[r * k..(r + 1) * k]
                        .iter()
                        .map(|&v| f64::from(v as f32))
                        .collect();
                    let f32fwd: Vec<f64> = f32_forward(lr, &g[r * k..(r + 1) * k], tau)
                        .iter()
                        .map(|&v| f64::from(v))
                        .collect();
                    for (i, x) in [rounded, f32fwd].iter().enumerate() {
                        let mx = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let lse = mx + x.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
                        worst[i] = worst[i].max(lse.abs() / scale);
                    }
                }
                // The GPU accepts the f64 forward's samples (no NaN row).
                if k <= 4097 {
                    let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
                    let d = gpu().concrete_log_prob(&l, &x32, k, tau).unwrap();
                    assert!(d.iter().all(|v| !v.is_nan()), "k {k} tau {tau}");
                }
            }
        }
    }
    eprintln!(
        "worst |logsumexp(x)| / scale: f32-rounded f64 forward {:e}, f32 forward {:e} \
         (tolerance {SIMPLEX_TOLERANCE:e})",
        worst[0], worst[1]
    );
    assert!(worst[0].max(worst[1]) < f64::from(SIMPLEX_TOLERANCE) / 100.0);
}

// ---------------------------------------------------------------------------------------------
// Buffer level: slices at any 4-byte offset, bad views.

struct Job {
    format: LogitsFormat,
    logits: Vec<u32>,
    /// The logits as the kernels see them (widened).
    widened: Vec<f32>,
    log_y: Vec<f32>,
    taus: Vec<f32>,
    rows: u64,
    k: u64,
    simplex: bool,
}

fn job(rng: &mut StdRng, format: LogitsFormat, rows: usize, k: usize, per_row: bool) -> Job {
    let l = masked_logits(rng, rows, k, 0.1);
    let (logits, widened): (Vec<u32>, Vec<f32>) = match format {
        LogitsFormat::F32 => (LogitsSlice::F32(&l).words(), l.clone()),
        LogitsFormat::F16 => {
            let h: Vec<u16> = l.iter().map(|&x| f32_to_f16(x)).collect();
            (pack_u16(&h), LogitsSlice::F16(&h).values().collect())
        }
        LogitsFormat::Bf16 => {
            let h: Vec<u16> = l.iter().map(|&x| f32_to_bf16(x)).collect();
            (pack_u16(&h), LogitsSlice::Bf16(&h).values().collect())
        }
    };
    let taus: Vec<f32> = if per_row {
        (0..rows).map(|r| TAUS[r % 4]).collect()
    } else {
        Vec::new()
    };
    let t64: Vec<f64> = (0..rows)
        .map(|r| f64::from(*taus.get(r).unwrap_or(&0.5)))
        .collect();
    let log_y = cpu::gumbel_softmax_log_per_row(&widened, k, &t64, Stream::new(rng.random()))
        .iter()
        .map(|&v| v as f32)
        .collect();
    Job {
        format,
        logits,
        widened,
        log_y,
        taus,
        rows: rows as u64,
        k: k as u64,
        simplex: rng.random(),
    }
}

fn run_placed(gpu: &Gpu, j: &Job, offset: u64) -> Vec<u32> {
    let log_y: Vec<u32> = j.log_y.iter().map(|v| v.to_bits()).collect();
    let taus: Vec<u32> = j.taus.iter().map(|v| v.to_bits()).collect();
    let mut regions = vec![&j.logits[..], &log_y[..]];
    if !taus.is_empty() {
        regions.push(&taus[..]);
    }
    let arena = arena(gpu, offset, &regions, j.rows as usize);
    let job = DensityJob {
        logits: LogitsView {
            data: arena.slice(0),
            format: j.format,
            rows: j.rows,
            k: j.k,
            stride: 0,
        },
        log_y: arena.slice(1),
        tau: if taus.is_empty() {
            Temperature::Scalar(0.5)
        } else {
            Temperature::PerRow(arena.slice(2))
        },
        simplex: j.simplex,
        out: arena.slice(regions.len()),
    };
    let kernels = gpu.concrete_density_kernels().unwrap();
    run(gpu, |enc| kernels.record(enc, &job).unwrap());
    arena.output(gpu, &format!("{:?} offset {offset}", j.format))
}

#[test]
fn slices_at_any_4_byte_offset_give_the_offset_0_result_and_touch_nothing_else() {
    // f32 / f16 / bf16 logits, scalar and per-row tau, at offsets 4, 260 and 1028 of buffers
    // shared with the job's other slices and sentinels: one dispatch, split rows, and a chunked
    // device (bindings of 1024 elements). Offset 0 is checked against the CPU reference.
    let chunked = chunked_gpu(1024);
    let mut rng = StdRng::seed_from_u64(13);
    let shapes: &[(&Gpu, usize, usize)] = &[
        (gpu(), 7, 3),
        (gpu(), 9, 33),
        (gpu(), 3, 700),
        (gpu(), 2, 20_000), // split rows
        (&chunked, 300, 7),
        (&chunked, 5, 333),
    ];
    for &(device, rows, k) in shapes {
        for format in [LogitsFormat::F32, LogitsFormat::F16, LogitsFormat::Bf16] {
            for per_row in [false, true] {
                let j = job(&mut rng, format, rows, k, per_row);
                let want = run_placed(gpu(), &j, 0);
                for offset in [4u64, 260, 1028] {
                    let got = run_placed(device, &j, offset);
                    assert_eq!(
                        got, want,
                        "rows {rows} k {k} {format:?} per-row {per_row} offset {offset}"
                    );
                }
                let x: Vec<f64> = j.log_y.iter().map(|&v| f64::from(v)).collect();
                for (r, &bits) in want.iter().enumerate() {
                    let tau = f64::from(*j.taus.get(r).unwrap_or(&0.5));
                    let row = r * k..(r + 1) * k;
                    let (l, x) = (&j.widened[row.clone()], &x[row]);
                    let reference = if j.simplex {
                        cpu::concrete_log_prob_simplex(l, x, k, tau)
                    } else {
                        cpu::concrete_log_prob(l, x, k, tau)
                    };
                    let sc = scale(l, x, k, tau, j.simplex);
                    let got = f64::from(f32::from_bits(bits));
                    assert!(
                        (got - reference[0]).abs() <= rtol(k, RowPath::Auto) * sc[0],
                        "rows {rows} k {k} {format:?} row {r}: {got} vs {}",
                        reference[0]
                    );
                }
            }
        }
    }
}

#[test]
fn bad_views_are_errors_naming_the_argument() {
    let gpu = gpu();
    let kernels = gpu.concrete_density_kernels().unwrap();
    let good = gpu.upload("good", &[-0.5f32; 64]).unwrap();
    let no_storage = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 256,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let (rows, k) = (2u64, 4u64);
    let good_out = gpu.storage_buffer("out", 64).unwrap();
    let ok = good.slice(..32);
    let job = DensityJob {
        logits: LogitsView::f32(ok, rows, k),
        log_y: ok,
        tau: Temperature::Scalar(1.0),
        simplex: false,
        // Outputs live in other buffers than inputs (a dispatch cannot bind one both ways).
        out: good_out.slice(..8),
    };
    let named = |job: &DensityJob<'_>, name: &str| {
        let mut enc = gpu.device().create_command_encoder(&Default::default());
        match kernels.record(&mut enc, job) {
            Err(Error::InvalidArgument(m)) => {
                assert!(m.starts_with(&format!("{name}:")), "{name}: {m}")
            }
            other => panic!("{name}: {other:?}"),
        }
    };
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    kernels.record(&mut enc, &job).unwrap();
    for bad in [good.slice(2..34), good.slice(..4), no_storage.slice(..32)] {
        named(
            &DensityJob {
                logits: LogitsView::f32(bad, rows, k),
                ..job
            },
            "logits",
        );
        named(&DensityJob { log_y: bad, ..job }, "log_y");
        let out = if bad.size() < 8 {
            bad
        } else {
            bad.buffer().slice(bad.offset()..bad.offset() + 8)
        };
        named(&DensityJob { out, ..job }, "out");
        named(
            &DensityJob {
                tau: Temperature::PerRow(out),
                ..job
            },
            "tau",
        );
    }
    for tau in [0.0, -1.0, f32::NAN, f32::INFINITY, 1e-40] {
        let mut enc = gpu.device().create_command_encoder(&Default::default());
        assert!(matches!(
            kernels.record(
                &mut enc,
                &DensityJob {
                    tau: Temperature::Scalar(tau),
                    ..job
                }
            ),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            gpu.concrete_log_prob(&[0.0, 0.0], &[-std::f32::consts::LN_2; 2], 2, tau),
            Err(Error::InvalidArgument(_))
        ));
    }
    // A per-row temperature that is not a positive normal f32 makes its row NaN.
    let l = gpu.upload("l", &[0.0f32, 0.0, 0.0, 0.0]).unwrap();
    let x = gpu.upload("x", &[-std::f32::consts::LN_2; 4]).unwrap();
    let t = gpu.upload("t", &[1.0f32, 0.0]).unwrap();
    let out = poisoned(gpu, 2);
    let job = DensityJob {
        logits: LogitsView::f32(l.slice(..), 2, 2),
        log_y: x.slice(..),
        tau: Temperature::PerRow(t.slice(..)),
        simplex: false,
        out: out.slice(..),
    };
    run(gpu, |enc| kernels.record(enc, &job).unwrap());
    let got: Vec<f32> = gpu.read_buffer(&out, 2).unwrap();
    assert!(got[0].is_finite() && got[1].is_nan(), "{got:?}");
}

/// The density's output bits for `words` read as `rows x k` logits with rows `stride` elements
/// apart (`None`: dense), log_y dense, out poisoned with a tail that must stay untouched.
#[allow(clippy::too_many_arguments)]
fn strided_density(
    gpu: &Gpu,
    format: LogitsFormat,
    words: &[u32],
    log_y: &[f32],
    rows: usize,
    k: usize,
    stride: Option<usize>,
    simplex: bool,
    path: RowPath,
) -> Result<Vec<u32>, Error> {
    let data = gpu.upload("logits", words).unwrap();
    let log_y = gpu.upload("log_y", log_y).unwrap();
    let out = poisoned(gpu, rows + 5);
    let view = LogitsView::new(data.slice(..), format, rows as u64, k as u64);
    let job = DensityJob {
        logits: stride.map_or(view, |s| view.with_stride(s as u64)),
        log_y: log_y.slice(..),
        tau: Temperature::Scalar(0.7),
        simplex,
        out: out.slice(..),
    };
    let kernels = gpu.concrete_density_kernels().unwrap();
    let mut result = Ok(());
    run(gpu, |enc| result = kernels.record_path(enc, &job, path));
    result?;
    let got: Vec<u32> = gpu.read_buffer(&out, rows + 5).unwrap();
    assert!(got[rows..].iter().all(|&w| w == SENTINEL), "wrote past out");
    Ok(got[..rows].to_vec())
}

#[test]
fn a_row_stride_reads_padded_logits_in_place() {
    // f32 / f16 / bf16 logits with rows k + pad elements apart, the pads poisoned (NaN / the
    // largest finite value): every path gives the bits of the same job on the dense copy, also
    // over several dispatches (chunked adapter).
    let chunked = chunked_gpu(5000);
    let mut rng = StdRng::seed_from_u64(0xde45_1716);
    let paths = [
        RowPath::Auto,
        RowPath::RowPerThread,
        RowPath::RowPerTeam,
        RowPath::RowPerWorkgroup,
        RowPath::SplitRows,
    ];
    let mut runs = 0;
    for &(k, rows) in STRIDE_SHAPES {
        let j = job(&mut rng, LogitsFormat::F32, rows, k, false);
        for format in [LogitsFormat::F32, LogitsFormat::F16, LogitsFormat::Bf16] {
            let (dense, _) = strided_words(&j.widened, k, 0, format);
            for &path in &paths {
                let run = |g: &Gpu, words: &[u32], stride| {
                    strided_density(g, format, words, &j.log_y, rows, k, stride, j.simplex, path)
                };
                let want = run(gpu(), &dense, None);
                for &pad in STRIDE_PADS {
                    let what = format!("k {k} rows {rows} pad {pad} {format:?} {path:?}");
                    let (_, words) = strided_words(&j.widened, k, pad, format);
                    match (&want, run(gpu(), &words, Some(k + pad))) {
                        (Ok(w), Ok(g)) => {
                            assert!(*w == g, "{what}: differs from the dense view");
                            runs += 1;
                        }
                        (Err(_), Err(_)) => {}
                        (w, g) => panic!("{what}: dense {w:?} strided {g:?}"),
                    }
                    if path == RowPath::Auto && (k + pad) * 3 <= 5000 {
                        let g = run(&chunked, &words, Some(k + pad)).unwrap();
                        assert!(*want.as_ref().unwrap() == g, "{what}: chunked differs");
                    }
                }
            }
        }
    }
    assert!(runs > 300, "only {runs} strided runs compared");
    // A stride below k and a slice too short are errors naming the logits.
    let gpu = gpu();
    let b = gpu.upload("b", &vec![0u32; 2010]).unwrap();
    let log_y = gpu.upload("log_y", &vec![0u32; 2000]).unwrap();
    let out = poisoned(gpu, 2);
    let kernels = gpu.concrete_density_kernels().unwrap();
    for (stride, why) in [(999u64, "below k"), (1011, "the slice holds"), (1010, "")] {
        let job = DensityJob {
            logits: LogitsView::f32(b.slice(..), 2, 1000).with_stride(stride),
            log_y: log_y.slice(..),
            tau: Temperature::Scalar(1.0),
            simplex: false,
            out: out.slice(..),
        };
        let mut enc = gpu.device().create_command_encoder(&Default::default());
        match kernels.record(&mut enc, &job) {
            Ok(()) => assert!(why.is_empty(), "stride {stride}: accepted"),
            Err(e) => {
                let e = e.to_string();
                assert!(
                    !why.is_empty() && e.contains("logits") && e.contains(why),
                    "stride {stride}: {e}"
                );
            }
        }
    }
}
