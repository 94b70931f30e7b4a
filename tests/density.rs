//! The Concrete / Gumbel-Softmax log-density: the GPU against the f64 reference at awkward shapes
//! on both kernel paths, and the density itself against the truth for k = 2, where
//! t = x_1 - x_2 ~ Logistic((l_1 - l_2) / tau, 1 / tau): pointwise, by integrating to 1, and by
//! the probability of an interval against Monte Carlo samples of the CPU forward.

mod common;
use common::*;
use gumbel_wgpu::{DensityArgs, Error, Gpu, GpuOptions, LogitsFormat, RowPath, Stream, cpu};
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
    let args = DensityArgs {
        logits: &lb,
        format: LogitsFormat::F32,
        log_y: &xb,
        out: &out,
        rows: rows as u64,
        k: k as u32,
        tau,
        simplex,
    };
    run(gpu, |enc| kernels.record_path(enc, &args, path).unwrap());
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
                    for &path in paths {
                        let got = run_density(gpu, &l, &x32, k, tau, simplex, path);
                        let tol = rtol(k, path);
                        for r in 0..rows {
                            let err = (f64::from(got[r]) - want[r]).abs();
                            assert!(
                                err <= tol * sc[r],
                                "k {k} rows {rows} tau {tau} simplex {simplex} {path:?} row {r}: \
                                 gpu {} reference {} scale {}",
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
    let x = [-1.2f32, 5.0, -0.9, ninf, -0.4];
    let live_l = [0.3f32, -1.0, 2.0];
    let live_x = [-1.2f32, -0.9, -0.4];
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
    let small = Gpu::with_options(GpuOptions {
        max_chunk_elements: Some(1024),
        ..Default::default()
    })
    .unwrap();
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
    let kernels = gpu.concrete_density_kernels().unwrap();
    let small = gpu.upload("small", &[0.0f32; 3]).unwrap();
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    let args = DensityArgs {
        logits: &small,
        format: LogitsFormat::F32,
        log_y: &small,
        out: &small,
        rows: 2,
        k: 2,
        tau: 1.0,
        simplex: false,
    };
    assert!(matches!(
        kernels.record(&mut enc, &args),
        Err(Error::InvalidArgument(_))
    ));
}
