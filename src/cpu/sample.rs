//! f64 reference of Gumbel-max sampling and Gumbel-top-k (`shaders/sample.wgsl`), in the
//! kernels' shape: per row, `top` rounds of arg-max, round `i` keeping only the entries after
//! round `i - 1`'s winner in the order "larger `z`, then lower index".
//!
//! `z_j = l_j / t_r + g_j` with `g_j` from stream word `r * k + j`; -inf and NaN logits are no
//! candidates; +inf logits give `z = +inf` (ahead of every finite value, the lowest index first);
//! slots a row cannot fill hold [`NO_INDEX`](crate::NO_INDEX).

use super::gumbel;
use crate::Stream;

/// `z = l / t_r + g` per element (f64), `-inf` for entries that are no candidate (-inf or NaN
/// logits), `+inf` for +inf logits. `temperatures`: one per row, or `None` for `t = 1`.
pub fn sample_values(
    logits: &[f32],
    k: usize,
    temperatures: Option<&[f32]>,
    stream: Stream,
) -> Vec<f64> {
    assert!(k > 0 && logits.len().is_multiple_of(k), "shape");
    let g = gumbel(stream, logits.len());
    logits
        .iter()
        .zip(g)
        .enumerate()
        .map(|(i, (&l, g))| {
            if l.is_nan() || l == f32::NEG_INFINITY {
                f64::NEG_INFINITY
            } else if l == f32::INFINITY {
                f64::INFINITY
            } else {
                let t = temperatures.map_or(1.0, |t| f64::from(t[i / k]));
                f64::from(l) / t + g
            }
        })
        .collect()
}

/// `a` comes before `b` in the sampling order: larger value, then lower index.
fn before(a: (f64, usize), b: (f64, usize)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// Per row of `z` (as [`sample_values`] gives), the indices of the `top` largest values in
/// decreasing order, ties to the lowest index; `NO_INDEX` where a row runs out of candidates.
pub fn top_k_of_values(z: &[f64], k: usize, top: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(z.len() / k * top);
    for row in z.chunks(k) {
        let mut prev: Option<(f64, usize)> = None;
        for _ in 0..top {
            let mut best: Option<(f64, usize)> = None;
            for (j, &x) in row.iter().enumerate() {
                let c = (x, j);
                if x != f64::NEG_INFINITY
                    && prev.is_none_or(|p| before(p, c))
                    && best.is_none_or(|b| before(c, b))
                {
                    best = Some(c);
                }
            }
            out.push(best.map_or(crate::NO_INDEX, |b| b.1 as u32));
            // A round that finds nothing leaves nothing for the later ones either.
            prev = best.or(prev);
        }
    }
    out
}

/// Gumbel-max: per row, `argmax_j (l_j / t_r + g_j)` (see the module docs).
pub fn sample(logits: &[f32], k: usize, temperatures: Option<&[f32]>, stream: Stream) -> Vec<u32> {
    top_k(logits, k, 1, temperatures, stream)
}

/// Gumbel-top-k: per row, the `top` indices of the largest `l / t + g`, in decreasing order.
pub fn top_k(
    logits: &[f32],
    k: usize,
    top: usize,
    temperatures: Option<&[f32]>,
    stream: Stream,
) -> Vec<u32> {
    top_k_of_values(&sample_values(logits, k, temperatures, stream), k, top)
}
