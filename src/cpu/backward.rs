//! f64 reference of the Gumbel-Softmax backward pass (vector-Jacobian products), in the kernel's
//! shape: per row, one reduction sweep, then one write sweep.
//!
//! Dead entries (gradient exactly 0, left out of the row sums): `y_j = 0` in the soft form
//! (masked logits, and the finite entries of a row with +inf logits), `x_j = -inf` in the log form.

use super::{
    gumbel_softmax, gumbel_softmax_log, gumbel_softmax_log_per_row, gumbel_softmax_per_row,
};
use crate::Stream;

/// Soft VJP per row: `(1/tau) * y_j * (dy_j - sum_i dy_i y_i)`, 0 where `y_j = 0`.
pub fn softmax_vjp(y: &[f64], dy: &[f64], k: usize, tau: f64) -> Vec<f64> {
    softmax_vjp_rows(y, dy, k, |_| tau)
}

/// [`softmax_vjp`] with a temperature per row.
pub fn softmax_vjp_per_row(y: &[f64], dy: &[f64], k: usize, taus: &[f64]) -> Vec<f64> {
    softmax_vjp_rows(y, dy, k, |r| taus[r])
}

fn softmax_vjp_rows(y: &[f64], dy: &[f64], k: usize, taus: impl Fn(usize) -> f64) -> Vec<f64> {
    assert!(
        k > 0 && y.len() == dy.len() && y.len().is_multiple_of(k),
        "shape"
    );
    let mut out = vec![0.0; y.len()];
    let rows = y.chunks(k).zip(dy.chunks(k)).zip(out.chunks_mut(k));
    for (r, ((yr, gr), or)) in rows.enumerate() {
        let tau = taus(r);
        let a: f64 = yr
            .iter()
            .zip(gr)
            .filter(|(y, _)| **y != 0.0)
            .map(|(y, g)| y * g)
            .sum();
        for ((o, &y), &g) in or.iter_mut().zip(yr).zip(gr) {
            *o = if y == 0.0 { 0.0 } else { y * (g - a) / tau };
        }
    }
    out
}

/// Log-space VJP per row: `(1/tau) * (dx_j - exp(x_j) * sum_i dx_i)`, the sum over `x_i > -inf`;
/// 0 where `x_j = -inf`.
pub fn log_softmax_vjp(x: &[f64], dx: &[f64], k: usize, tau: f64) -> Vec<f64> {
    log_softmax_vjp_rows(x, dx, k, |_| tau)
}

/// [`log_softmax_vjp`] with a temperature per row.
pub fn log_softmax_vjp_per_row(x: &[f64], dx: &[f64], k: usize, taus: &[f64]) -> Vec<f64> {
    log_softmax_vjp_rows(x, dx, k, |r| taus[r])
}

fn log_softmax_vjp_rows(x: &[f64], dx: &[f64], k: usize, taus: impl Fn(usize) -> f64) -> Vec<f64> {
    assert!(
        k > 0 && x.len() == dx.len() && x.len().is_multiple_of(k),
        "shape"
    );
    let mut out = vec![0.0; x.len()];
    let rows = x.chunks(k).zip(dx.chunks(k)).zip(out.chunks_mut(k));
    for (r, ((xr, gr), or)) in rows.enumerate() {
        let tau = taus(r);
        let d: f64 = xr
            .iter()
            .zip(gr)
            .filter(|(x, _)| **x != f64::NEG_INFINITY)
            .map(|(_, g)| g)
            .sum();
        for ((o, &x), &g) in or.iter_mut().zip(xr).zip(gr) {
            *o = if x == f64::NEG_INFINITY {
                0.0
            } else {
                (g - x.exp() * d) / tau
            };
        }
    }
    out
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&g| f64::from(g)).collect()
}

/// The soft backward with `y` recomputed from the logits and the forward's stream.
pub fn gumbel_softmax_backward(
    logits: &[f32],
    dy: &[f32],
    k: usize,
    tau: f64,
    stream: Stream,
) -> Vec<f64> {
    let y = gumbel_softmax(logits, k, tau, stream);
    softmax_vjp(&y, &f64s(dy), k, tau)
}

/// The log-space backward with `log y` recomputed from the logits and the forward's stream.
pub fn gumbel_softmax_log_backward(
    logits: &[f32],
    dx: &[f32],
    k: usize,
    tau: f64,
    stream: Stream,
) -> Vec<f64> {
    let x = gumbel_softmax_log(logits, k, tau, stream);
    log_softmax_vjp(&x, &f64s(dx), k, tau)
}

/// [`gumbel_softmax_backward`] with a temperature per row.
pub fn gumbel_softmax_backward_per_row(
    logits: &[f32],
    dy: &[f32],
    k: usize,
    taus: &[f64],
    stream: Stream,
) -> Vec<f64> {
    let y = gumbel_softmax_per_row(logits, k, taus, stream);
    softmax_vjp_per_row(&y, &f64s(dy), k, taus)
}

/// [`gumbel_softmax_log_backward`] with a temperature per row.
pub fn gumbel_softmax_log_backward_per_row(
    logits: &[f32],
    dx: &[f32],
    k: usize,
    taus: &[f64],
    stream: Stream,
) -> Vec<f64> {
    let x = gumbel_softmax_log_per_row(logits, k, taus, stream);
    log_softmax_vjp_per_row(&x, &f64s(dx), k, taus)
}
