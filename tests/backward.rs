//! The Gumbel-Softmax backward pass: the f64 reference against central finite differences of the
//! f64 forward, then every kernel path and form on a real adapter against the reference, with
//! poisoned outputs, masked entries, +inf logits, 16-bit logits, chunked dispatch and bad input.

mod common;
use common::*;
use gumbel_wgpu::logits::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
use gumbel_wgpu::{
    BackwardInput, BackwardJob, BackwardSlice, Error, Gpu, GradSpace, LogitsFormat, LogitsSlice,
    LogitsView, RowPath, Stream, Temperature, cpu,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

const KS: &[usize] = &[1, 2, 3, 7, 31, 33, 255, 257, 1000, 4097, 65537];
const TAUS: &[f32] = &[0.1, 0.5, 1.0, 10.0];

fn grads(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

// ---------------------------------------------------------------------------------------------
// The reference against finite differences.

/// Central differences of L(l) = sum_j w_j f_j(l) in f64, where f is the CPU forward (soft, or log
/// space over the live entries). Logits are multiples of 2^-8 and the step h a power of two near
/// tau * 2^-12, so l +- h is exact in f32 and the forward sees exactly the perturbed logits.
fn finite_difference(
    l: &[f32],
    w: &[f32],
    k: usize,
    tau: f64,
    stream: Stream,
    log: bool,
) -> Vec<f64> {
    let loss = |l: &[f32]| -> f64 {
        let f = if log {
            cpu::gumbel_softmax_log(l, k, tau, stream)
        } else {
            cpu::gumbel_softmax(l, k, tau, stream)
        };
        f.iter()
            .zip(w)
            .filter(|(f, _)| f.is_finite())
            .map(|(f, &w)| f * f64::from(w))
            .sum()
    };
    let h = 2f64.powi((tau * 2f64.powi(-12)).log2().round() as i32);
    (0..l.len())
        .map(|i| {
            if l[i] == f32::NEG_INFINITY {
                return 0.0;
            }
            let mut p = l.to_vec();
            let mut m = l.to_vec();
            p[i] = (f64::from(l[i]) + h) as f32;
            m[i] = (f64::from(l[i]) - h) as f32;
            assert_eq!(f64::from(p[i]) - f64::from(m[i]), 2.0 * h, "exact step");
            (loss(&p) - loss(&m)) / (2.0 * h)
        })
        .collect()
}

#[test]
fn reference_vjp_matches_central_finite_differences_of_the_f64_forward() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut worst: f64 = 0.0;
    for k in [1usize, 2, 3, 5, 8] {
        for &tau in TAUS {
            let tau = f64::from(tau);
            for log in [false, true] {
                let rows = 3;
                let mut l: Vec<f32> = masked_logits(&mut rng, rows, k, 0.2);
                for x in &mut l {
                    if x.is_finite() {
                        *x = (*x * 256.0).round() / 256.0;
                    }
                }
                let w = grads(&mut rng, rows * k);
                let stream = Stream::new(rng.random());
                let fd = finite_difference(&l, &w, k, tau, stream, log);
                let vjp = if log {
                    cpu::gumbel_softmax_log_backward(&l, &w, k, tau, stream)
                } else {
                    cpu::gumbel_softmax_backward(&l, &w, k, tau, stream)
                };
                for (i, (&a, &b)) in vjp.iter().zip(&fd).enumerate() {
                    // The gradient is O(1/tau); the difference quotient's error is
                    // O((h/tau)^2 / tau) + O(eps_f64 * tau / h / tau) ~ 1e-8 / tau.
                    let err = (a - b).abs() * tau;
                    worst = worst.max(err);
                    assert!(
                        err < 1e-6,
                        "k {k} tau {tau} log {log} element {i}: vjp {a}, finite difference {b}"
                    );
                    if l[i] == f32::NEG_INFINITY {
                        assert_eq!(a, 0.0);
                    }
                }
            }
        }
    }
    eprintln!("worst tau-scaled |vjp - finite difference|: {worst:e}");
}

// ---------------------------------------------------------------------------------------------
// GPU against the reference.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Form {
    StoredSoft,
    StoredLog,
    RecomputeSoft,
    RecomputeLog,
}

const FORMS: &[Form] = &[
    Form::StoredSoft,
    Form::StoredLog,
    Form::RecomputeSoft,
    Form::RecomputeLog,
];

struct Case {
    logits: Vec<f32>,
    grad: Vec<f32>,
    k: usize,
    tau: f32,
    stream: Stream,
}

/// What the GPU is given and what it must return, in f64: the stored forms get the reference
/// forward cast to f32; the recompute forms the logits.
struct Expect {
    input_f32: Vec<f32>,
    want: Vec<f64>,
    /// Per element, the size of the terms the gradient is made of: (1/tau) * y * (|dy| + sum |dy y|)
    /// (soft) or (1/tau) * (|dx| + y * sum |dx|) (log).
    scale: Vec<f64>,
}

fn expect(case: &Case, form: Form) -> Expect {
    let Case {
        logits,
        grad,
        k,
        tau,
        stream,
    } = case;
    let (k, tau) = (*k, f64::from(*tau));
    let soft = matches!(form, Form::StoredSoft | Form::RecomputeSoft);
    let fwd = if soft {
        cpu::gumbel_softmax(logits, k, tau, *stream)
    } else {
        cpu::gumbel_softmax_log(logits, k, tau, *stream)
    };
    let input_f32: Vec<f32> = fwd.iter().map(|&v| v as f32).collect();
    // The stored forms are checked against the reference VJP of exactly what they were given.
    let seen = match form {
        Form::StoredSoft | Form::StoredLog => f64s(&input_f32),
        _ => fwd,
    };
    let g = f64s(grad);
    let want = if soft {
        cpu::softmax_vjp(&seen, &g, k, tau)
    } else {
        cpu::log_softmax_vjp(&seen, &g, k, tau)
    };
    let mut scale = vec![0.0; want.len()];
    for r in 0..want.len() / k {
        let row = r * k..(r + 1) * k;
        let y: Vec<f64> = seen[row.clone()]
            .iter()
            .map(|&v| if soft { v } else { v.exp() })
            .collect();
        let gr = &g[row.clone()];
        let sum_abs: f64 = if soft {
            y.iter().zip(gr).map(|(y, g)| (y * g).abs()).sum()
        } else {
            y.iter()
                .zip(gr)
                .filter(|(y, _)| **y > 0.0)
                .map(|(_, g)| g.abs())
                .sum()
        };
        for j in 0..k {
            scale[r * k + j] = if soft {
                y[j] * (gr[j].abs() + sum_abs) / tau
            } else {
                (gr[j].abs() + y[j] * sum_abs) / tau
            };
        }
    }
    Expect {
        input_f32,
        want,
        scale,
    }
}

/// Relative tolerance on |gpu - reference| / scale. Every form: a few f32 ulp, plus the row sums'
/// rounding, which grows with the length m of the sequential part of a sum (the whole row for
/// one invocation per row; k / (4 T) groups of 4 plus log2(T) tree levels for T invocations),
/// allowed as 2 eps sqrt(m) (random-walk growth). Recompute forms also carry the f32 error of
/// z = (l + g) / tau (|l + g| < 27, and the GPU's noise is within 4e-6 * max(1, |g|) of the f64
/// noise), which scales with 1/tau.
fn rtol(form: Form, tau: f32, k: usize, path: RowPath) -> f64 {
    // Invocations sharing a row (0: one invocation walks the whole row).
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
        4 * k.div_ceil(4 * team) + team.ilog2() as usize
    };
    let base = f64::from(f32::EPSILON) * (8.0 + 2.0 * (m as f64).sqrt());
    match form {
        Form::StoredSoft | Form::StoredLog => base,
        Form::RecomputeSoft | Form::RecomputeLog => base + 2e-4 / f64::from(tau),
    }
}

/// Absolute floor: y below f32's range flushes to 0 on the GPU.
fn atol(tau: f32) -> f64 {
    1e-30 / f64::from(tau)
}

/// Runs `form` through the buffer-level API with a poisoned output (7 spare elements after it).
fn run_gpu(gpu: &Gpu, case: &Case, form: Form, e: &Expect, path: RowPath) -> Vec<f32> {
    let len = case.logits.len();
    let kernels = gpu.gumbel_softmax_backward_kernels().unwrap();
    let input = match form {
        Form::StoredSoft | Form::StoredLog => gpu.upload("in", &e.input_f32).unwrap(),
        _ => gpu.upload("in", &case.logits).unwrap(),
    };
    let grad = gpu.upload("grad", &case.grad).unwrap();
    let out = poisoned(gpu, len + 7);
    let (rows, k) = ((len / case.k) as u64, case.k as u64);
    let view = LogitsView::f32(input.slice(..), rows, k);
    let input = match form {
        Form::StoredSoft => BackwardInput::Probs(view),
        Form::StoredLog => BackwardInput::LogProbs(view),
        Form::RecomputeSoft | Form::RecomputeLog => BackwardInput::Logits {
            logits: view,
            stream: case.stream,
            space: if form == Form::RecomputeSoft {
                GradSpace::Probs
            } else {
                GradSpace::LogProbs
            },
        },
    };
    let job = BackwardJob {
        input,
        grad: grad.slice(..),
        tau: Temperature::Scalar(case.tau),
        out: out.slice(..(len as u64 * 4)),
        status: None,
    };
    run(gpu, |enc| kernels.record_path(enc, &job, path).unwrap());
    let mut got: Vec<f32> = gpu.read_buffer(&out, len + 7).unwrap();
    assert!(
        got[len..].iter().all(|v| v.to_bits() == SENTINEL),
        "wrote past the end"
    );
    got.truncate(len);
    got
}

/// Checks `got` against the expectation; returns the worst |error| / scale.
fn check(case: &Case, form: Form, e: &Expect, got: &[f32], path: RowPath, what: &str) -> f64 {
    let mut worst: f64 = 0.0;
    let tol = rtol(form, case.tau, case.k, path);
    for (i, (&g, (&w, &s))) in got.iter().zip(e.want.iter().zip(&e.scale)).enumerate() {
        if case.logits[i] == f32::NEG_INFINITY {
            assert_eq!(g.to_bits(), 0, "{what}: masked element {i} is {g}, not +0");
            continue;
        }
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= tol * s + atol(case.tau),
            "{what}: element {i} (row {}) gpu {g} reference {w} scale {s:e}",
            i / case.k
        );
        // Reported without the absolute floor (underflowed y would dominate otherwise).
        if s > 0.0 {
            worst = worst.max((err - atol(case.tau)).max(0.0) / s);
        }
    }
    worst
}

#[test]
fn every_form_and_path_matches_the_reference_at_awkward_shapes() {
    let mut rng = StdRng::seed_from_u64(2);
    let gpu = gpu();
    let mut worst = [[0f64; 4]; 4];
    for &k in KS {
        // A single row, and enough rows for several workgroups of row-per-thread invocations.
        let many = (20_000 / k).clamp(1, 300);
        for rows in if many > 1 { vec![1, many] } else { vec![1] } {
            for (ti, &tau) in TAUS.iter().enumerate() {
                let case = Case {
                    logits: masked_logits(&mut rng, rows, k, 0.1),
                    grad: grads(&mut rng, rows * k),
                    k,
                    tau,
                    stream: Stream {
                        seed: rng.random(),
                        offset: rng.random::<u64>() >> 2,
                    },
                };
                for (fi, &form) in FORMS.iter().enumerate() {
                    let e = expect(&case, form);
                    // Auto at every tau; the forced paths at the extreme taus (keeps the sweep
                    // inside CI's time on software GL). One invocation walking a 65537-entry
                    // row is correct but slow on software GL, which holds its context lock
                    // (1 s limit) for the whole dispatch.
                    let forced: &[RowPath] = match (tau == 0.1 || tau == 10.0, k <= 4097) {
                        (false, _) => &[],
                        (true, true) => &[
                            RowPath::RowPerThread,
                            RowPath::RowPerTeam,
                            RowPath::RowPerWorkgroup,
                            RowPath::SplitRows,
                        ],
                        (true, false) => &[
                            RowPath::RowPerTeam,
                            RowPath::RowPerWorkgroup,
                            RowPath::SplitRows,
                        ],
                    };
                    let paths = [RowPath::Auto].iter().chain(forced);
                    for &path in paths {
                        // The forced reducing paths also without subgroups (the
                        // workgroup-memory tree; gpu() reduces with subgroups where it can).
                        let both = path != RowPath::Auto && path != RowPath::RowPerThread;
                        let without =
                            (both && gpu.shader_config().subgroups).then(gpu_without_subgroups);
                        for g in [gpu].into_iter().chain(without) {
                            let got = run_gpu(g, &case, form, &e, path);
                            let what = format!(
                                "k {k} rows {rows} tau {tau} {form:?} {path:?} {}",
                                g.describe()
                            );
                            let w = check(&case, form, &e, &got, path, &what);
                            worst[fi][ti] = worst[fi][ti].max(w);
                        }
                    }
                }
            }
        }
    }
    for (fi, form) in FORMS.iter().enumerate() {
        eprintln!(
            "worst |error| / scale, {form:?}, tau {TAUS:?}: {:?}",
            worst[fi]
        );
    }
}

#[test]
fn portable_philox_path_recomputes_the_same_noise() {
    // Without SHADER_INT64 the recompute kernels multiply in 16-bit halves: same words, same y.
    let mut rng = StdRng::seed_from_u64(3);
    for gpu in gpus() {
        for &k in &[3usize, 33, 4097] {
            let case = Case {
                logits: masked_logits(&mut rng, 5, k, 0.1),
                grad: grads(&mut rng, 5 * k),
                k,
                tau: 0.5,
                stream: Stream {
                    seed: rng.random(),
                    offset: 3,
                },
            };
            for form in [Form::RecomputeSoft, Form::RecomputeLog] {
                let e = expect(&case, form);
                let got = run_gpu(gpu, &case, form, &e, RowPath::Auto);
                check(
                    &case,
                    form,
                    &e,
                    &got,
                    RowPath::Auto,
                    &format!("{} k {k}", gpu.describe()),
                );
            }
        }
    }
}

#[test]
fn recompute_form_equals_the_stored_form() {
    // Stored y (the f64 forward cast to f32) and recomputed y give the same gradient up to
    // rounding: |recompute - stored| <= rtol(recompute) * scale.
    let mut rng = StdRng::seed_from_u64(4);
    let gpu = gpu();
    let mut worst: f64 = 0.0;
    for &k in &[2usize, 31, 257, 4097] {
        for &tau in TAUS {
            let rows = 4;
            let l = masked_logits(&mut rng, rows, k, 0.1);
            let dy = grads(&mut rng, rows * k);
            let stream = Stream::new(rng.random());
            let t = f64::from(tau);
            for log in [false, true] {
                let fwd: Vec<f32> = if log {
                    cpu::gumbel_softmax_log(&l, k, t, stream)
                } else {
                    cpu::gumbel_softmax(&l, k, t, stream)
                }
                .iter()
                .map(|&v| v as f32)
                .collect();
                let (stored, recomputed) = if log {
                    (
                        gpu.gumbel_softmax_log_backward(&fwd, &dy, k, tau).unwrap(),
                        gpu.gumbel_softmax_log_backward_recompute(&l, &dy, k, tau, stream)
                            .unwrap(),
                    )
                } else {
                    (
                        gpu.gumbel_softmax_backward(&fwd, &dy, k, tau).unwrap(),
                        gpu.gumbel_softmax_backward_recompute(&l, &dy, k, tau, stream)
                            .unwrap(),
                    )
                };
                let case = Case {
                    logits: l.clone(),
                    grad: dy.clone(),
                    k,
                    tau,
                    stream,
                };
                let form = if log {
                    Form::RecomputeLog
                } else {
                    Form::RecomputeSoft
                };
                let e = expect(&case, form);
                for i in 0..l.len() {
                    let err = f64::from(stored[i] - recomputed[i]).abs();
                    assert!(
                        err <= rtol(form, tau, k, RowPath::Auto) * e.scale[i] + atol(tau),
                        "k {k} tau {tau} log {log} element {i}: stored {} recomputed {}",
                        stored[i],
                        recomputed[i]
                    );
                    if e.scale[i] > 0.0 {
                        worst = worst.max((err - atol(tau)).max(0.0) / e.scale[i]);
                    }
                }
            }
        }
    }
    eprintln!("worst |recompute - stored| / scale: {worst:e}");
}

#[test]
fn per_row_temperatures_match_the_per_row_reference() {
    // Each row is checked as its own one-row case: its tau, and the stream advanced to its
    // first element (row r of the batch uses words r * k + j).
    let mut rng = StdRng::seed_from_u64(9);
    let gpu = gpu();
    for &k in &[3usize, 33, 4097] {
        let rows = if k < 100 { 301 } else { 5 };
        let l = masked_logits(&mut rng, rows, k, 0.1);
        let g = grads(&mut rng, rows * k);
        let taus: Vec<f32> = (0..rows).map(|_| TAUS[rng.random_range(0..4)]).collect();
        let stream = Stream {
            seed: rng.random(),
            offset: 5,
        };
        let t64: Vec<f64> = taus.iter().map(|&t| f64::from(t)).collect();
        let y: Vec<f32> = cpu::gumbel_softmax_per_row(&l, k, &t64, stream)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let x: Vec<f32> = cpu::gumbel_softmax_log_per_row(&l, k, &t64, stream)
            .iter()
            .map(|&v| v as f32)
            .collect();
        for &form in FORMS {
            for path in [
                RowPath::RowPerThread,
                RowPath::RowPerTeam,
                RowPath::RowPerWorkgroup,
                RowPath::SplitRows,
            ] {
                let input = match form {
                    Form::StoredSoft => BackwardSlice::Probs(&y),
                    Form::StoredLog => BackwardSlice::LogProbs(&x),
                    Form::RecomputeSoft | Form::RecomputeLog => BackwardSlice::Logits {
                        logits: LogitsSlice::F32(&l),
                        stream,
                        space: if form == Form::RecomputeSoft {
                            GradSpace::Probs
                        } else {
                            GradSpace::LogProbs
                        },
                    },
                };
                let got = gpu
                    .gumbel_softmax_backward_path(input, &g, k, Temperature::PerRow(&taus), path)
                    .unwrap();
                for (r, &tau) in taus.iter().enumerate() {
                    let row = r * k..(r + 1) * k;
                    let case = Case {
                        logits: l[row.clone()].to_vec(),
                        grad: g[row.clone()].to_vec(),
                        k,
                        tau,
                        stream: stream.advance((r * k) as u64),
                    };
                    let e = expect(&case, form);
                    check(
                        &case,
                        form,
                        &e,
                        &got[row],
                        path,
                        &format!("k {k} row {r} {form:?} {path:?}"),
                    );
                }
            }
        }
        // The public entry point is the same computation.
        let input = BackwardSlice::Logits {
            logits: LogitsSlice::F32(&l),
            stream,
            space: GradSpace::Probs,
        };
        let d = gpu
            .gumbel_softmax_backward_with(input, &g, k, Temperature::PerRow(&taus))
            .unwrap();
        let want = cpu::gumbel_softmax_backward_per_row(&l, &g, k, &t64, stream);
        assert!(
            d.iter()
                .zip(&want)
                .all(|(a, b)| (f64::from(*a) - b).abs() < 1e-3 * (1.0 + b.abs()))
        );
    }
    let bad = [1.0f32, 0.0];
    assert!(matches!(
        gpu.gumbel_softmax_backward_with(
            BackwardSlice::Probs(&[0.5; 4]),
            &[0.0; 4],
            2,
            Temperature::PerRow(&bad)
        ),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        gpu.gumbel_softmax_backward_with(
            BackwardSlice::Probs(&[0.5; 4]),
            &[0.0; 4],
            2,
            Temperature::PerRow(&[1.0])
        ),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn split_rows_merge_dead_and_plus_infinite_segments() {
    // Rows long enough to be split into segments of 4096 entries (Auto splits k >= SPLIT_MIN_K
    // when there are few rows): a row whose first three segments are all masked, a row with one
    // +inf logit deep inside, and an ordinary row.
    let k = 20_000;
    let mut rng = StdRng::seed_from_u64(10);
    let mut l = masked_logits(&mut rng, 3, k, 0.05);
    for x in &mut l[..12_500] {
        *x = f32::NEG_INFINITY;
    }
    l[k + 15_000] = f32::INFINITY;
    let grad = grads(&mut rng, 3 * k);
    assert!(k as u64 >= gumbel_wgpu::SPLIT_MIN_K);
    for &tau in TAUS {
        let case = Case {
            logits: l.clone(),
            grad: grad.clone(),
            k,
            tau,
            stream: Stream {
                seed: rng.random(),
                offset: 1,
            },
        };
        for &form in FORMS {
            let e = expect(&case, form);
            for path in [RowPath::Auto, RowPath::SplitRows, RowPath::RowPerWorkgroup] {
                let got = run_gpu(gpu(), &case, form, &e, path);
                check(
                    &case,
                    form,
                    &e,
                    &got,
                    path,
                    &format!("tau {tau} {form:?} {path:?}"),
                );
            }
        }
    }
}

#[test]
fn hard_samples_take_the_soft_gradient() {
    let mut rng = StdRng::seed_from_u64(5);
    let (k, tau) = (10, 0.5);
    let l = masked_logits(&mut rng, 6, k, 0.1);
    let dy = grads(&mut rng, 6 * k);
    let stream = Stream::new(9);
    let gpu = gpu();
    assert_eq!(
        gpu.gumbel_softmax_hard_backward(&l, &dy, k, tau, stream)
            .unwrap(),
        gpu.gumbel_softmax_backward_recompute(&l, &dy, k, tau, stream)
            .unwrap()
    );
}

#[test]
fn rows_with_plus_infinite_logits_follow_the_forward_policy() {
    // The forward shares a row's mass equally among its +inf entries; the other entries are 0.
    let inf = f32::INFINITY;
    let ninf = f32::NEG_INFINITY;
    let k = 5;
    let l = vec![
        1.0, inf, 2.0, inf, ninf, // two +inf entries
        inf, 0.0, 0.0, 0.0, 0.0, // one
        0.0, 1.0, ninf, 3.0, -2.0, // none
    ];
    let mut rng = StdRng::seed_from_u64(6);
    let dy = grads(&mut rng, l.len());
    for &k_rows in &[1usize, 60] {
        let l: Vec<f32> = l.iter().copied().cycle().take(l.len() * k_rows).collect();
        let dy: Vec<f32> = dy.iter().copied().cycle().take(l.len()).collect();
        for &tau in TAUS {
            let case = Case {
                logits: l.clone(),
                grad: dy.clone(),
                k,
                tau,
                stream: Stream::new(11),
            };
            for form in FORMS {
                let e = expect(&case, *form);
                for path in [
                    RowPath::RowPerThread,
                    RowPath::RowPerTeam,
                    RowPath::RowPerWorkgroup,
                ] {
                    let got = run_gpu(gpu(), &case, *form, &e, path);
                    check(
                        &case,
                        *form,
                        &e,
                        &got,
                        path,
                        &format!("+inf {form:?} {path:?}"),
                    );
                }
            }
        }
    }
}

#[test]
fn half_precision_logits_are_widened_exactly() {
    let mut rng = StdRng::seed_from_u64(7);
    let gpu = gpu();
    for format in [LogitsFormat::F16, LogitsFormat::Bf16] {
        for &k in &[3usize, 33, 4097] {
            let rows = 3;
            let l32 = masked_logits(&mut rng, rows, k, 0.1);
            let half: Vec<u16> = l32
                .iter()
                .map(|&x| match format {
                    LogitsFormat::F16 => f32_to_f16(x),
                    _ => f32_to_bf16(x),
                })
                .collect();
            let widened: Vec<f32> = half
                .iter()
                .map(|&h| match format {
                    LogitsFormat::F16 => f16_to_f32(h),
                    _ => bf16_to_f32(h),
                })
                .collect();
            let dy = grads(&mut rng, rows * k);
            let stream = Stream {
                seed: rng.random(),
                offset: 1,
            };
            let tau = 0.5;
            let got = gpu
                .gumbel_softmax_backward_with(
                    half_input(&half, format, stream),
                    &dy,
                    k,
                    Temperature::Scalar(tau),
                )
                .unwrap();
            let case = Case {
                logits: widened,
                grad: dy,
                k,
                tau,
                stream,
            };
            let e = expect(&case, Form::RecomputeSoft);
            check(
                &case,
                Form::RecomputeSoft,
                &e,
                &got,
                RowPath::Auto,
                &format!("{format:?} k {k}"),
            );
        }
    }
}

#[test]
fn chunked_dispatch_gives_the_same_gradients_as_one_dispatch() {
    // As if storage bindings held only 1024 elements: whole rows per dispatch, unaligned starts,
    // the stream advancing by r0 * k. 16-bit logits check the lead-in of a 2-byte binding.
    let small = chunked_gpu(1024);
    let mut rng = StdRng::seed_from_u64(8);
    for &(k, rows) in &[(7usize, 1000usize), (33, 200), (1000, 5)] {
        let l = masked_logits(&mut rng, rows, k, 0.1);
        let dy = grads(&mut rng, rows * k);
        let stream = Stream {
            seed: rng.random(),
            offset: 2,
        };
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(
            bits(
                small
                    .gumbel_softmax_backward_recompute(&l, &dy, k, 0.5, stream)
                    .unwrap()
            ),
            bits(
                gpu()
                    .gumbel_softmax_backward_recompute(&l, &dy, k, 0.5, stream)
                    .unwrap()
            ),
            "k {k}"
        );
        let y: Vec<f32> = cpu::gumbel_softmax(&l, k, 0.5, stream)
            .iter()
            .map(|&v| v as f32)
            .collect();
        assert_eq!(
            bits(small.gumbel_softmax_backward(&y, &dy, k, 0.5).unwrap()),
            bits(gpu().gumbel_softmax_backward(&y, &dy, k, 0.5).unwrap()),
            "k {k}"
        );
        let half: Vec<u16> = l.iter().map(|&x| f32_to_bf16(x)).collect();
        assert_eq!(
            bits(
                small
                    .gumbel_softmax_backward_with(
                        half_input(&half, LogitsFormat::Bf16, stream),
                        &dy,
                        k,
                        Temperature::Scalar(0.5)
                    )
                    .unwrap()
            ),
            bits(
                gpu()
                    .gumbel_softmax_backward_with(
                        half_input(&half, LogitsFormat::Bf16, stream),
                        &dy,
                        k,
                        Temperature::Scalar(0.5)
                    )
                    .unwrap()
            ),
            "bf16 k {k}"
        );
    }
    // Per-row temperatures: the chunk's rows find theirs through the binding's lead-in.
    for &(k, rows) in &[(7usize, 1000usize), (33, 200)] {
        let l = masked_logits(&mut rng, rows, k, 0.1);
        let dx = grads(&mut rng, rows * k);
        let taus: Vec<f32> = (0..rows).map(|r| TAUS[r % 4]).collect();
        let s = Stream::new(rng.random());
        let input = BackwardSlice::Logits {
            logits: LogitsSlice::F32(&l),
            stream: s,
            space: GradSpace::LogProbs,
        };
        let a = small.gumbel_softmax_backward_with(input, &dx, k, Temperature::PerRow(&taus));
        let b = gpu().gumbel_softmax_backward_with(input, &dx, k, Temperature::PerRow(&taus));
        assert_eq!(a, b, "per-row k {k}");
    }
    // Split rows across dispatches: bindings of 16384 elements hold 3 rows of 5000 entries, each
    // row in 2 segments.
    let mid = chunked_gpu(16384);
    let (k, rows) = (5000usize, 10usize);
    let l = masked_logits(&mut rng, rows, k, 0.1);
    let dy = grads(&mut rng, rows * k);
    let s = Stream::new(rng.random());
    let input = BackwardSlice::Logits {
        logits: LogitsSlice::F32(&l),
        stream: s,
        space: GradSpace::Probs,
    };
    let split = mid
        .gumbel_softmax_backward_path(input, &dy, k, Temperature::Scalar(0.5), RowPath::SplitRows)
        .unwrap();
    let case = Case {
        logits: l,
        grad: dy,
        k,
        tau: 0.5,
        stream: s,
    };
    let e = expect(&case, Form::RecomputeSoft);
    check(
        &case,
        Form::RecomputeSoft,
        &e,
        &split,
        RowPath::SplitRows,
        "chunked split rows",
    );
    // A row longer than a binding cannot be split.
    let l = vec![0.0f32; 2048];
    assert!(matches!(
        small.gumbel_softmax_backward_recompute(&l, &l, 2048, 1.0, Stream::new(0)),
        Err(Error::TooLarge(_))
    ));
}

#[test]
fn bad_input_is_an_error_and_empty_input_is_empty() {
    let gpu = gpu();
    let s = Stream::new(1);
    let y = [0.25f32, 0.75, 0.5, 0.5];
    let dy = [1.0f32, 0.0, 0.0, 1.0];
    let invalid = |r: Result<Vec<f32>, Error>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(invalid(gpu.gumbel_softmax_backward(&y, &dy[..3], 2, 1.0)));
    assert!(invalid(gpu.gumbel_softmax_backward(&y, &dy, 3, 1.0)));
    assert!(invalid(gpu.gumbel_softmax_backward(&y, &dy, 0, 1.0)));
    for tau in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(invalid(gpu.gumbel_softmax_backward(&y, &dy, 2, tau)));
        assert!(invalid(
            gpu.gumbel_softmax_backward_recompute(&y, &dy, 2, tau, s)
        ));
        assert!(invalid(gpu.gumbel_softmax_log_backward(&y, &dy, 2, tau)));
    }
    assert!(invalid(gpu.gumbel_softmax_backward(
        &y,
        &[0.0, f32::NAN, 0.0, 0.0],
        2,
        1.0
    )));
    let ninf = f32::NEG_INFINITY;
    assert_eq!(
        gpu.gumbel_softmax_backward_recompute(&[0.0, 1.0, ninf, ninf], &dy, 2, 1.0, s),
        Err(Error::AllMaskedRow { row: 1 })
    );
    assert_eq!(
        gpu.gumbel_softmax_backward_recompute(&[0.0, 1.0, f32::NAN, 0.0], &dy, 2, 1.0, s),
        Err(Error::NanInRow { row: 1 })
    );
    assert_eq!(
        gpu.gumbel_softmax_log_backward(&[-1.0, -0.5, ninf, ninf], &dy, 2, 1.0),
        Err(Error::AllMaskedRow { row: 1 })
    );
    assert_eq!(gpu.gumbel_softmax_backward(&[], &[], 4, 1.0), Ok(vec![]));
    assert_eq!(
        gpu.gumbel_softmax_backward_recompute(&[], &[], 4, 1.0, s),
        Ok(vec![])
    );
}

/// Recompute input from 16-bit logits of `format` (F16 or Bf16).
fn half_input(half: &[u16], format: LogitsFormat, stream: Stream) -> BackwardSlice<'_> {
    let logits = match format {
        LogitsFormat::F16 => LogitsSlice::F16(half),
        _ => LogitsSlice::Bf16(half),
    };
    BackwardSlice::Logits {
        logits,
        stream,
        space: GradSpace::Probs,
    }
}

// ---------------------------------------------------------------------------------------------
// Buffer level: slices at any 4-byte offset, bad views.

/// The forward forms of the table: stored y, stored log y, recomputed from f32 / f16 / bf16.
#[derive(Clone, Copy, Debug)]
enum Input {
    Y,
    LogY,
    Logits(LogitsFormat, GradSpace),
}

const INPUTS: &[Input] = &[
    Input::Y,
    Input::LogY,
    Input::Logits(LogitsFormat::F32, GradSpace::Probs),
    Input::Logits(LogitsFormat::F16, GradSpace::LogProbs),
    Input::Logits(LogitsFormat::Bf16, GradSpace::Probs),
];

/// A job's data as 32-bit words: the input, grad, taus (empty for a scalar tau).
struct Words {
    input: Vec<u32>,
    grad: Vec<u32>,
    taus: Vec<u32>,
    rows: u64,
    k: u64,
}

fn words(rng: &mut StdRng, input: Input, rows: usize, k: usize, per_row: bool, s: Stream) -> Words {
    let l = masked_logits(rng, rows, k, 0.1);
    let taus: Vec<f32> = (0..rows).map(|r| TAUS[r % 4]).collect();
    let t64: Vec<f64> = taus.iter().map(|&t| f64::from(t)).collect();
    let t64 = if per_row { t64 } else { vec![0.5; rows] };
    let f32_words = |v: Vec<f64>| {
        v.iter()
            .map(|&x| (x as f32).to_bits())
            .collect::<Vec<u32>>()
    };
    let input = match input {
        Input::Y => f32_words(cpu::gumbel_softmax_per_row(&l, k, &t64, s)),
        Input::LogY => f32_words(cpu::gumbel_softmax_log_per_row(&l, k, &t64, s)),
        Input::Logits(LogitsFormat::F32, _) => LogitsSlice::F32(&l).words(),
        Input::Logits(LogitsFormat::F16, _) => {
            gumbel_wgpu::logits::pack_u16(&l.iter().map(|&x| f32_to_f16(x)).collect::<Vec<_>>())
        }
        Input::Logits(_, _) => {
            gumbel_wgpu::logits::pack_u16(&l.iter().map(|&x| f32_to_bf16(x)).collect::<Vec<_>>())
        }
    };
    Words {
        input,
        grad: grads(rng, rows * k).iter().map(|g| g.to_bits()).collect(),
        taus: if per_row {
            taus.iter().map(|t| t.to_bits()).collect()
        } else {
            Vec::new()
        },
        rows: rows as u64,
        k: k as u64,
    }
}

/// Runs the job of `w` with its slices in an arena at `offset`; returns out's words.
fn run_placed(gpu: &Gpu, input: Input, w: &Words, stream: Stream, offset: u64) -> Vec<u32> {
    let per_row = !w.taus.is_empty();
    let mut regions = vec![&w.input[..], &w.grad[..]];
    if per_row {
        regions.push(&w.taus[..]);
    }
    let len = (w.rows * w.k) as usize;
    let arena = arena(gpu, offset, &regions, len);
    let view = |format| LogitsView {
        data: arena.slice(0),
        format,
        rows: w.rows,
        k: w.k,
        stride: 0,
    };
    let input = match input {
        Input::Y => BackwardInput::Probs(view(LogitsFormat::F32)),
        Input::LogY => BackwardInput::LogProbs(view(LogitsFormat::F32)),
        Input::Logits(format, space) => BackwardInput::Logits {
            logits: view(format),
            stream,
            space,
        },
    };
    let job = BackwardJob {
        input,
        grad: arena.slice(1),
        tau: if per_row {
            Temperature::PerRow(arena.slice(2))
        } else {
            Temperature::Scalar(0.5)
        },
        out: arena.slice(regions.len()),
        status: None,
    };
    let kernels = gpu.gumbel_softmax_backward_kernels().unwrap();
    run(gpu, |enc| kernels.record(enc, &job).unwrap());
    arena.output(gpu, &format!("{input:?} offset {offset}"))
}

#[test]
fn slices_at_any_4_byte_offset_give_the_offset_0_result_and_touch_nothing_else() {
    // Each input form, scalar and per-row tau, at offsets 4, 260 and 1028 of buffers shared with
    // the job's other slices and sentinels; one dispatch per shape, a split-row shape, and a
    // chunked device (bindings of 1024 elements: several dispatches of whole rows).
    let chunked = chunked_gpu(1024);
    let mut rng = StdRng::seed_from_u64(11);
    let shapes: &[(&Gpu, usize, usize)] = &[
        (gpu(), 7, 3),
        (gpu(), 9, 33),
        (gpu(), 3, 700),
        (gpu(), 2, 20_000), // split rows
        (&chunked, 300, 7),
        (&chunked, 5, 333),
    ];
    for &(device, rows, k) in shapes {
        for &input in INPUTS {
            for per_row in [false, true] {
                let stream = Stream {
                    seed: rng.random(),
                    offset: 3,
                };
                let w = words(&mut rng, input, rows, k, per_row, stream);
                // The same job at offset 0 of buffers of its own, on the default device.
                let want = run_placed(gpu(), input, &w, stream, 0);
                for offset in [4u64, 260, 1028] {
                    let got = run_placed(device, input, &w, stream, offset);
                    assert_eq!(
                        got, want,
                        "rows {rows} k {k} {input:?} per-row {per_row} offset {offset}"
                    );
                }
                // And offset 0 is the reference's answer (the f32 stored forms, scalar tau).
                if let (Input::Y, false) = (input, per_row) {
                    let y: Vec<f32> = w.input.iter().map(|&b| f32::from_bits(b)).collect();
                    let g: Vec<f32> = w.grad.iter().map(|&b| f32::from_bits(b)).collect();
                    let got: Vec<f32> = want.iter().map(|&b| f32::from_bits(b)).collect();
                    let r = cpu::softmax_vjp(&f64s(&y), &f64s(&g), k, 0.5);
                    for (i, (&a, &b)) in got.iter().zip(&r).enumerate() {
                        assert!((f64::from(a) - b).abs() < 1e-5, "element {i}: {a} vs {b}");
                    }
                }
            }
        }
    }
}

#[test]
fn bad_views_are_errors_naming_the_argument() {
    let gpu = gpu();
    let kernels = gpu.gumbel_softmax_backward_kernels().unwrap();
    let good = gpu.upload("good", &[0.25f32; 64]).unwrap();
    let no_storage = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 256,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let (rows, k) = (2u64, 4u64);
    let good_out = gpu.storage_buffer("out", 64).unwrap();
    let ok = good.slice(..32);
    let y = LogitsView::f32(ok, rows, k);
    let job = BackwardJob {
        input: BackwardInput::Probs(y),
        grad: ok,
        tau: Temperature::Scalar(1.0),
        // Outputs live in other buffers than inputs (a dispatch cannot bind one both ways).
        out: good_out.slice(..32),
        status: None,
    };
    let named = |job: &BackwardJob<'_>, name: &str| {
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
    for bad in [good.slice(2..34), good.slice(..28), no_storage.slice(..32)] {
        let view = LogitsView::f32(bad, rows, k);
        named(
            &BackwardJob {
                input: BackwardInput::Probs(view),
                ..job
            },
            "y",
        );
        named(
            &BackwardJob {
                input: BackwardInput::LogProbs(view),
                ..job
            },
            "y",
        );
        let logits = BackwardInput::Logits {
            logits: view,
            stream: Stream::new(1),
            space: GradSpace::Probs,
        };
        named(
            &BackwardJob {
                input: logits,
                ..job
            },
            "logits",
        );
        named(&BackwardJob { grad: bad, ..job }, "grad");
        named(&BackwardJob { out: bad, ..job }, "out");
        let short = &bad.buffer().slice(bad.offset()..bad.offset() + 4);
        let taus = if bad.size() < 32 { *short } else { bad };
        named(
            &BackwardJob {
                tau: Temperature::PerRow(taus),
                ..job
            },
            "tau",
        );
    }
    // A stored forward output must be f32.
    let half = LogitsView {
        format: LogitsFormat::F16,
        ..y
    };
    named(
        &BackwardJob {
            input: BackwardInput::Probs(half),
            ..job
        },
        "y",
    );
    // Scalar temperatures: one check everywhere, subnormal refused.
    for tau in [0.0, -1.0, f32::NAN, f32::INFINITY, 1e-40] {
        let mut enc = gpu.device().create_command_encoder(&Default::default());
        assert!(matches!(
            kernels.record(
                &mut enc,
                &BackwardJob {
                    tau: Temperature::Scalar(tau),
                    ..job
                }
            ),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            gpu.gumbel_softmax_backward(&[0.5, 0.5], &[1.0, 0.0], 2, tau),
            Err(Error::InvalidArgument(_))
        ));
    }
}

/// The backward's output bits for `input_words` read as a `rows x k` view of `input`'s form
/// with rows `stride` elements apart (`None`: dense), grad dense, out poisoned with a tail that
/// must stay untouched.
#[allow(clippy::too_many_arguments)]
fn strided_backward(
    gpu: &Gpu,
    input: Input,
    input_words: &[u32],
    grad: &[f32],
    rows: usize,
    k: usize,
    stride: Option<usize>,
    path: RowPath,
    stream: Stream,
) -> Result<Vec<u32>, Error> {
    let len = rows * k;
    let data = gpu.upload("input", input_words).unwrap();
    let grad = gpu.upload("grad", grad).unwrap();
    let out = poisoned(gpu, len + 5);
    let view = |format| {
        let v = LogitsView::new(data.slice(..), format, rows as u64, k as u64);
        stride.map_or(v, |s| v.with_stride(s as u64))
    };
    let input = match input {
        Input::Y => BackwardInput::Probs(view(LogitsFormat::F32)),
        Input::LogY => BackwardInput::LogProbs(view(LogitsFormat::F32)),
        Input::Logits(format, space) => BackwardInput::Logits {
            logits: view(format),
            stream,
            space,
        },
    };
    let job = BackwardJob {
        input,
        grad: grad.slice(..),
        tau: Temperature::Scalar(0.7),
        out: out.slice(..),
        status: None,
    };
    let kernels = gpu.gumbel_softmax_backward_kernels().unwrap();
    let mut result = Ok(());
    run(gpu, |enc| result = kernels.record_path(enc, &job, path));
    result?;
    let got: Vec<u32> = gpu.read_buffer(&out, len + 5).unwrap();
    assert!(got[len..].iter().all(|&w| w == SENTINEL), "wrote past out");
    Ok(got[..len].to_vec())
}

#[test]
fn a_row_stride_reads_padded_inputs_in_place() {
    // Every input form (stored y, stored log y, logits in f32 / f16 / bf16) with rows k + pad
    // elements apart, the pads poisoned (NaN / the largest finite value): every path gives the
    // bits of the same job on the dense copy, also over several dispatches (chunked adapter).
    let gpu = gpu();
    let chunked = chunked_gpu(5000);
    let mut rng = StdRng::seed_from_u64(0xbac0_5716);
    let paths = [
        RowPath::Auto,
        RowPath::RowPerThread,
        RowPath::RowPerTeam,
        RowPath::RowPerWorkgroup,
        RowPath::SplitRows,
    ];
    let mut runs = 0;
    for &(k, rows) in STRIDE_SHAPES {
        let logits = masked_logits(&mut rng, rows, k, 0.1);
        let grad = grads(&mut rng, rows * k);
        // A stored y: the f64 forward of the logits (noise-free is enough for bit equality);
        // log y beside it.
        let y: Vec<f32> = logits
            .chunks(k)
            .flat_map(|row| {
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let e: Vec<f64> = row.iter().map(|&l| f64::from(l - m).exp()).collect();
                let s: f64 = e.iter().sum();
                e.into_iter().map(move |e| (e / s) as f32)
            })
            .collect();
        let log_y: Vec<f32> = y.iter().map(|&y| y.ln()).collect();
        let stream = Stream {
            seed: rng.random(),
            offset: rng.random::<u64>() >> 8,
        };
        for &input in INPUTS {
            let (values, format) = match input {
                Input::Y => (&y, LogitsFormat::F32),
                Input::LogY => (&log_y, LogitsFormat::F32),
                Input::Logits(format, _) => (&logits, format),
            };
            let (dense, _) = strided_words(values, k, 0, format);
            for &path in &paths {
                let want = strided_backward(gpu, input, &dense, &grad, rows, k, None, path, stream);
                for &pad in STRIDE_PADS {
                    let what = format!("k {k} rows {rows} pad {pad} {input:?} {path:?}");
                    let (_, words) = strided_words(values, k, pad, format);
                    let strided = |g: &Gpu| {
                        strided_backward(
                            g,
                            input,
                            &words,
                            &grad,
                            rows,
                            k,
                            Some(k + pad),
                            path,
                            stream,
                        )
                    };
                    match (&want, strided(gpu)) {
                        (Ok(w), Ok(g)) => {
                            assert!(*w == g, "{what}: differs from the dense view");
                            runs += 1;
                        }
                        (Err(_), Err(_)) => {}
                        (w, g) => panic!("{what}: dense {w:?} strided {g:?}"),
                    }
                    if path == RowPath::Auto && (k + pad) * 3 <= 5000 {
                        let g = strided(&chunked).unwrap();
                        assert!(*want.as_ref().unwrap() == g, "{what}: chunked differs");
                    }
                }
            }
        }
    }
    assert!(runs > 300, "only {runs} strided runs compared");
    // A stride below k and a slice too short are errors naming the input.
    let b = gpu.upload("b", &vec![0u32; 2010]).unwrap();
    let grad = gpu.upload("grad", &vec![0u32; 2000]).unwrap();
    let out = poisoned(gpu, 2000);
    let kernels = gpu.gumbel_softmax_backward_kernels().unwrap();
    for (stride, why) in [(999u64, "below k"), (1011, "the slice holds"), (1010, "")] {
        let v = LogitsView::f32(b.slice(..), 2, 1000).with_stride(stride);
        for (input, name) in [
            (BackwardInput::Probs(v), "y"),
            (
                BackwardInput::Logits {
                    logits: v,
                    stream: Stream::new(1),
                    space: GradSpace::Probs,
                },
                "logits",
            ),
        ] {
            let job = BackwardJob {
                input,
                grad: grad.slice(..),
                tau: Temperature::Scalar(1.0),
                out: out.slice(..),
                status: None,
            };
            let mut enc = gpu.device().create_command_encoder(&Default::default());
            match kernels.record(&mut enc, &job) {
                Ok(()) => assert!(why.is_empty(), "{name} stride {stride}: accepted"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        !why.is_empty() && e.contains(name) && e.contains(why),
                        "{name} stride {stride}: {e}"
                    );
                }
            }
        }
    }
}
