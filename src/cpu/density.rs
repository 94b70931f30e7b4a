//! f64 reference of the Concrete / Gumbel-Softmax log-density (see `crate::Gpu::concrete_log_prob`
//! for the formula and conventions): per row, a max pass and a sum pass over the live entries.

/// `ln((c - 1)!) = lgamma(c)` for an integer `c >= 1`, summed in f64.
pub fn lgamma_int(c: usize) -> f64 {
    (2..c).map(|i| (i as f64).ln()).sum()
}

fn log_prob_rows(logits: &[f32], log_y: &[f64], k: usize, tau: f64, simplex: bool) -> Vec<f64> {
    assert!(
        k > 0 && logits.len() == log_y.len() && logits.len().is_multiple_of(k),
        "shape"
    );
    logits
        .chunks(k)
        .zip(log_y.chunks(k))
        .map(|(lr, xr)| {
            let live: Vec<(f64, f64)> = lr
                .iter()
                .zip(xr)
                .filter(|(l, _)| **l != f32::NEG_INFINITY)
                .map(|(&l, &x)| (f64::from(l), x))
                .collect();
            if live.is_empty()
                || live
                    .iter()
                    .any(|(l, x)| !x.is_finite() || *l == f64::INFINITY || l.is_nan())
            {
                return f64::NEG_INFINITY;
            }
            let entries = lr
                .iter()
                .zip(xr)
                .enumerate()
                .filter(|(_, (l, _))| **l != f32::NEG_INFINITY)
                .map(|(j, (&l, &x))| (j, f64::from(l), x));
            if crate::density::off_simplex(entries, tau).is_some() {
                return f64::NAN;
            }
            let c = live.len() as f64;
            let s: Vec<f64> = live.iter().map(|(l, x)| l - tau * x).collect();
            let m = s.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            let lse = m + s.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            let mut lp = lgamma_int(live.len())
                + (c - 1.0) * tau.ln()
                + s.iter().map(|v| v - lse).sum::<f64>();
            if simplex {
                lp -= live.iter().map(|(_, x)| x).sum::<f64>();
            }
            lp
        })
        .collect()
}

/// Per row, `log p(x)` of the log-space sample `x` (ExpRelaxedOneHotCategorical); masked
/// logits are left out; -inf for rows outside the domain (no live entry, +inf logit,
/// non-finite `x` at a live entry); NaN for rows off the simplex, as the kernels (the live
/// entries' `|logsumexp(x)|` above the tolerance of `crate::SIMPLEX_TOLERANCE`).
pub fn concrete_log_prob(logits: &[f32], log_y: &[f64], k: usize, tau: f64) -> Vec<f64> {
    log_prob_rows(logits, log_y, k, tau, false)
}

/// Per row, the density on the simplex: `concrete_log_prob - sum_i x_i` over live entries;
/// -inf and NaN rows as [`concrete_log_prob`].
pub fn concrete_log_prob_simplex(logits: &[f32], log_y: &[f64], k: usize, tau: f64) -> Vec<f64> {
    log_prob_rows(logits, log_y, k, tau, true)
}
