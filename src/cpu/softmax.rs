//! f64 reference of the Gumbel-Softmax forward pass (Jang, Gu & Poole 2017; Maddison et al.
//! 2017), in the kernels' shape: per row, a max pass, a sum pass, a write pass.
//!
//! Conventions every kernel follows:
//! * element `j` of row `r` uses stream word `r * k + j` for its noise `g`;
//! * `z_j = (l_j + g_j) / tau`; `y = softmax(z)`; `log y_j = z_j - logsumexp(z)`;
//! * a logit of -inf is a masked category: `y_j = 0` exactly, `log y_j = -inf`, never the argmax;
//! * logits of +inf: the row's mass is shared equally by its +inf entries (the limit of equal,
//!   growing logits), every other entry gets 0; the hard sample is the first +inf entry;
//! * hard (straight-through) rows are the one-hot of the argmax of `z`, ties to the lowest index.
//!
//! NaN logits and all -inf rows are errors in the slice API; here they give NaN rows.

use super::gumbel_from_word;
use crate::Stream;
use crate::philox::Philox4x32;
use rand::Rng;

/// `l_j + g_j` for every element, with `g` from words `0..len` of `stream` (f64).
pub fn perturbed(logits: &[f32], stream: Stream) -> Vec<f64> {
    let mut rng = Philox4x32::from_stream(stream);
    logits
        .iter()
        .map(|&l| f64::from(l) + gumbel_from_word(rng.next_u32()))
        .collect()
}

/// Per row, the log-softmax of `(l + g) / tau`, following the conventions above.
fn log_softmax_rows(
    logits: &[f32],
    k: usize,
    taus: impl Fn(usize) -> f64,
    stream: Stream,
) -> Vec<f64> {
    log_softmax_perturbed(&perturbed(logits, stream), k, taus)
}

/// Per row, the log-softmax of `z / tau(row)` for perturbed values `z = l + g` the caller made
/// (tests feed the GPU's own f32 noise to separate the kernel's arithmetic from the noise's).
pub fn log_softmax_perturbed(z: &[f64], k: usize, taus: impl Fn(usize) -> f64) -> Vec<f64> {
    assert!(k > 0 && z.len().is_multiple_of(k), "shape");
    let mut out = vec![0.0; z.len()];
    for (r, (zr, or)) in z.chunks(k).zip(out.chunks_mut(k)).enumerate() {
        let tau = taus(r);
        let n_pos_inf = zr.iter().filter(|&&x| x == f64::INFINITY).count();
        if n_pos_inf > 0 {
            for (o, &x) in or.iter_mut().zip(zr) {
                *o = if x == f64::INFINITY {
                    -(n_pos_inf as f64).ln()
                } else {
                    f64::NEG_INFINITY
                };
            }
            continue;
        }
        let m = zr.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x / tau));
        let s: f64 = zr.iter().map(|&x| (x / tau - m).exp()).sum();
        let lse = m + s.ln();
        for (o, &x) in or.iter_mut().zip(zr) {
            *o = x / tau - lse;
        }
    }
    out
}

/// log y: the log-space Gumbel-Softmax sample (TFP's ExpRelaxedOneHotCategorical), finite wherever
/// the logit is finite, even where y underflows.
pub fn gumbel_softmax_log(logits: &[f32], k: usize, tau: f64, stream: Stream) -> Vec<f64> {
    log_softmax_rows(logits, k, |_| tau, stream)
}

/// Like [`gumbel_softmax_log`] with a temperature per row.
pub fn gumbel_softmax_log_per_row(
    logits: &[f32],
    k: usize,
    taus: &[f64],
    stream: Stream,
) -> Vec<f64> {
    log_softmax_rows(logits, k, |r| taus[r], stream)
}

/// y: the relaxed one-hot sample.
pub fn gumbel_softmax(logits: &[f32], k: usize, tau: f64, stream: Stream) -> Vec<f64> {
    gumbel_softmax_log(logits, k, tau, stream)
        .into_iter()
        .map(f64::exp)
        .collect()
}

/// Like [`gumbel_softmax`] with a temperature per row.
pub fn gumbel_softmax_per_row(logits: &[f32], k: usize, taus: &[f64], stream: Stream) -> Vec<f64> {
    gumbel_softmax_log_per_row(logits, k, taus, stream)
        .into_iter()
        .map(f64::exp)
        .collect()
}

/// Index of the largest value, ties to the lowest index (NaN never wins).
pub fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (j, &x) in row.iter().enumerate() {
        if x > row[best] || row[best].is_nan() {
            best = j;
        }
    }
    best
}

/// The hard (straight-through forward) sample: one-hot of the argmax of `l + g` per row.
pub fn gumbel_softmax_hard(logits: &[f32], k: usize, stream: Stream) -> Vec<f64> {
    let z = perturbed(logits, stream);
    let mut out = vec![0.0; z.len()];
    for (zr, or) in z.chunks(k).zip(out.chunks_mut(k)) {
        or[argmax(zr)] = 1.0;
    }
    out
}
