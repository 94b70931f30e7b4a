//! The fused op against burn's autodiff of the composed op `softmax((l + g) / tau)`, `g` from
//! `gumbel_noise`: forward values and gradients of a loss weighted by a random tensor (the
//! gradient of a plain sum of a softmax is zero), soft / hard / log space, stored and
//! recomputed backward, scalar and per-row tau, at awkward shapes.
//!
//! Tolerance: max |fused - composed| <= 1e-4 of the composed side's largest entry (forward
//! values and gradients). Both sides are f32: burn rounds `z = (l + g) / tau` (|z| up to ~60
//! here: logits of scale 3, tau down to 0.3), so each `exp(z - max)` carries a relative error of
//! about |z| * 6e-8 ~ 4e-6, and its row sums over 70000 entries add theirs; the kernel takes
//! `(l_j - l_a) + (g_j - g_a)` relative to the argmax first. Measured: below 1e-6 up to k = 257,
//! up to ~2.5e-5 at k = 70000. Against the f64 reference (tests/ops.rs) the fused op is held to
//! 1e-5 on y.

mod common;

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Distribution, Tensor};
use common::{device, logits, scaled_error, to_vec};
use gumbel_wgpu_burn::{Backward, Output, Stream, Tau, gumbel_noise, gumbel_softmax_with};

const TOL: f64 = 1e-4;
const SHAPES: [(usize, usize); 4] = [(1, 1), (3, 257), (64, 33), (2, 70000)];

/// The composed op on burn's autodiff: soft `y`, straight-through hard, or `log y`.
fn composed(l: Tensor<2>, g: Tensor<2>, tau: &Tau, output: Output) -> Tensor<2> {
    let z = l + g;
    let z = match tau {
        Tau::Scalar(t) => z / f64::from(*t),
        Tau::PerRow(t) => {
            let rows = t.dims()[0];
            z / t.clone().reshape([rows, 1])
        }
    };
    match output {
        Output::Soft => softmax(z, 1),
        Output::Log => log_softmax(z, 1),
        Output::Hard => {
            // The one-hot of the row's max (ties have probability ~0 with continuous noise).
            let zd = z.clone().detach();
            let hard = zd.clone().equal(zd.max_dim(1)).float();
            let y = softmax(z, 1);
            hard - y.clone().detach() + y
        }
    }
}

/// (forward, gradient) of `sum(w * f(l))` for the fused or the composed `f`.
fn run(
    dev: &Device,
    l0: &Tensor<2>,
    w: &Tensor<2>,
    tau: &Tau,
    stream: Stream,
    output: Output,
    fused: Option<Backward>,
) -> (Vec<f32>, Vec<f32>) {
    let l = Tensor::<2>::from_data(l0.to_data(), dev).require_grad();
    let y = match fused {
        Some(b) => gumbel_softmax_with(l.clone(), tau.clone(), stream, output, b).unwrap(),
        None => {
            let g = gumbel_noise(&l.clone().detach(), stream).unwrap();
            composed(l.clone(), g, tau, output)
        }
    };
    let loss = (y.clone() * w.clone()).sum();
    let grads = loss.backward();
    let grad = l.grad(&grads).expect("a gradient for the logits");
    (to_vec(y.detach()), to_vec(grad))
}

fn check(output: Output, per_row: bool) {
    let dev = device().autodiff();
    for (i, &(rows, k)) in SHAPES.iter().enumerate() {
        let seed = 100 + i as u64 + 10 * per_row as u64;
        let l0 = logits(&dev, rows, k, 3.0, seed);
        let w = Tensor::<2>::random([rows, k], Distribution::Normal(0.0, 1.0), &dev);
        let tau = if per_row {
            Tau::PerRow(Tensor::random(
                [rows],
                Distribution::Uniform(0.3, 2.0),
                &dev,
            ))
        } else {
            Tau::Scalar(0.7)
        };
        let stream = Stream::new(seed).advance(5);
        let (yc, gc) = run(&dev, &l0, &w, &tau, stream, output, None);
        for b in [Backward::Stored, Backward::Recompute] {
            let (yf, gf) = run(&dev, &l0, &w, &tau, stream, output, Some(b));
            let ey = scaled_error(&yf, &yc);
            let eg = scaled_error(&gf, &gc);
            println!(
                "{output:?} per_row={per_row} {rows}x{k} {b:?}: forward {ey:.2e}, grad {eg:.2e}"
            );
            match output {
                // The one-hots must agree exactly (same noise, same argmax).
                Output::Hard => assert_eq!(yf, yc, "{rows}x{k}: hard samples differ"),
                _ => assert!(
                    ey <= TOL,
                    "{output:?} {rows}x{k} {b:?}: forward error {ey:.2e}"
                ),
            }
            assert!(
                eg <= TOL,
                "{output:?} {rows}x{k} {b:?} per_row={per_row}: grad error {eg:.2e}"
            );
            assert!(
                gf.iter().any(|&x| x != 0.0) || rows * k == 1,
                "an all-zero gradient"
            );
        }
    }
}

#[test]
fn soft_matches_composed() {
    check(Output::Soft, false);
}

#[test]
fn soft_per_row_tau_matches_composed() {
    check(Output::Soft, true);
}

#[test]
fn hard_matches_straight_through() {
    check(Output::Hard, false);
}

#[test]
fn hard_per_row_tau_matches_straight_through() {
    check(Output::Hard, true);
}

#[test]
fn log_matches_composed() {
    check(Output::Log, false);
}

#[test]
fn log_per_row_tau_matches_composed() {
    check(Output::Log, true);
}

/// The recomputed backward equals the stored one (same kernels, same noise): to f32 rounding.
#[test]
fn recomputed_equals_stored() {
    let dev = device().autodiff();
    for output in [Output::Soft, Output::Hard, Output::Log] {
        let l0 = logits(&dev, 37, 1000, 2.0, 9);
        let w = Tensor::<2>::random([37, 1000], Distribution::Normal(0.0, 1.0), &dev);
        let tau = Tau::Scalar(0.5);
        let s = Stream::new(77);
        let (ya, ga) = run(&dev, &l0, &w, &tau, s, output, Some(Backward::Stored));
        let (yb, gb) = run(&dev, &l0, &w, &tau, s, output, Some(Backward::Recompute));
        assert_eq!(
            ya, yb,
            "{output:?}: the forward does not depend on the backward choice"
        );
        let e = scaled_error(&gb, &ga);
        assert!(e <= 1e-6, "{output:?}: recomputed vs stored {e:.2e}");
    }
}

/// Tensors of any rank: the last dimension holds the categories.
#[test]
fn rank_three_is_rows_of_the_last_dimension() {
    let dev = device().autodiff();
    let l3 = logits(&dev, 6, 40, 1.0, 3).reshape([2, 3, 40]);
    let s = Stream::new(5);
    let y3 = gumbel_softmax_with(l3.clone(), 0.9, s, Output::Soft, Backward::Stored).unwrap();
    let y2 =
        gumbel_softmax_with(l3.reshape([6, 40]), 0.9, s, Output::Soft, Backward::Stored).unwrap();
    assert_eq!(y3.dims(), [2, 3, 40]);
    assert_eq!(to_vec(y3.reshape([6, 40])), to_vec(y2));
}

/// On a device with burn's balanced gradient checkpointing the op routes through
/// `Autodiff<Cube, BalancedCheckpointing>` (the recomputed backward retrieves the logits through
/// the checkpointer): the same gradients.
#[test]
fn gradient_checkpointing_gives_the_same_gradient() {
    let plain = device().autodiff();
    let balanced = device().autodiff().gradient_checkpointing();
    let l0 = logits(&plain, 8, 300, 2.0, 31);
    let w = Tensor::<2>::random([8, 300], Distribution::Normal(0.0, 1.0), &plain);
    let s = Stream::new(12);
    for output in [Output::Soft, Output::Hard, Output::Log] {
        for b in [Backward::Stored, Backward::Recompute] {
            let (ya, ga) = run(&plain, &l0, &w, &Tau::Scalar(0.6), s, output, Some(b));
            // Upstream work the checkpointer may recompute: the logits come out of an op.
            let l = Tensor::<2>::from_data(l0.to_data(), &balanced).require_grad();
            let lb = l.clone();
            assert_eq!(
                l.gradient_checkpointing_strategy(),
                Some(burn::tensor::GradientCheckpointingStrategy::Balanced)
            );
            let y = gumbel_softmax_with(l * 2.0 / 2.0, 0.6, s, output, b).unwrap();
            let wb = Tensor::<2>::from_data(w.to_data(), &balanced);
            let grads = (y.clone() * wb).sum().backward();
            let gb = to_vec(lb.grad(&grads).expect("a gradient"));
            assert_eq!(to_vec(y.detach()), ya, "{output:?} {b:?}: forward");
            let e = scaled_error(&gb, &ga);
            assert!(e <= 1e-6, "{output:?} {b:?}: balanced vs plain {e:.2e}");
        }
    }
}
