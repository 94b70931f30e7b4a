//! f64 reference of Gumbel-max sampling and Gumbel-top-k (`shaders/sample.wgsl`): per row, the
//! `top` entries first in the order "larger `z`, then lower index", in that order.
//!
//! `z_j = l_j / t_r + g_j` with `g_j` from stream word `r * k + j` (words `2 (r * k + j)` and
//! `2 (r * k + j) + 1` under [`Noise::Bits64`]); -inf and NaN logits are no
//! candidates; +inf logits give `z = +inf` (ahead of every finite value, the lowest index first);
//! slots a row cannot fill hold [`NO_INDEX`](crate::NO_INDEX).

use super::{gumbel, gumbel_from_words64, random_u32};
use crate::{Noise, Stream};

/// `z = l / t_r + g` per element (f64), `-inf` for entries that are no candidate (-inf or NaN
/// logits), `+inf` for +inf logits. `temperatures`: one per row, or `None` for `t = 1`; `noise`:
/// the stream words per element.
pub fn sample_values(
    logits: &[f32],
    k: usize,
    temperatures: Option<&[f32]>,
    stream: Stream,
    noise: Noise,
) -> Vec<f64> {
    assert!(k > 0 && logits.len().is_multiple_of(k), "shape");
    let g = match noise {
        Noise::Bits32 => gumbel(stream, logits.len()),
        Noise::Bits64 => random_u32(stream, 2 * logits.len())
            .chunks(2)
            .map(|w| gumbel_from_words64(w[0], w[1]))
            .collect(),
    };
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

/// Per row of `z` (as [`sample_values`] gives), the indices of the `top` largest values in
/// decreasing order, ties to the lowest index; `NO_INDEX` where a row runs out of candidates
/// (entries other than -inf). The order "larger value, then lower index" is total on a row's
/// candidates, so this is the same list as `top` rounds of arg-max, each keeping only the
/// entries after the previous winner; it is computed by a partial selection and a sort.
pub fn top_k_of_values(z: &[f64], k: usize, top: usize) -> Vec<u32> {
    // Larger value first, then lower index (no NaN: sample_values maps NaN logits to -inf).
    let order = |a: &(f64, usize), b: &(f64, usize)| {
        b.0.partial_cmp(&a.0)
            .expect("no NaN values")
            .then(a.1.cmp(&b.1))
    };
    let mut out = Vec::with_capacity(z.len() / k * top);
    for row in z.chunks(k) {
        let mut c: Vec<(f64, usize)> = row
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, x)| x != f64::NEG_INFINITY)
            .map(|(j, x)| (x, j))
            .collect();
        if c.len() > top {
            c.select_nth_unstable_by(top, order);
            c.truncate(top);
        }
        c.sort_unstable_by(order);
        out.extend(c.iter().map(|&(_, j)| j as u32));
        out.extend(std::iter::repeat_n(crate::NO_INDEX, top - c.len()));
    }
    out
}

/// Gumbel-max: per row, `argmax_j (l_j / t_r + g_j)` (see the module docs).
pub fn sample(logits: &[f32], k: usize, temperatures: Option<&[f32]>, stream: Stream) -> Vec<u32> {
    top_k(logits, k, 1, temperatures, stream)
}

/// Gumbel-top-k: per row, the `top` indices of the largest `l / t + g`, in decreasing order
/// ([`Noise::Bits32`]; [`top_k_of_values`] of [`sample_values`] for the other noise).
pub fn top_k(
    logits: &[f32],
    k: usize,
    top: usize,
    temperatures: Option<&[f32]>,
    stream: Stream,
) -> Vec<u32> {
    top_k_of_values(
        &sample_values(logits, k, temperatures, stream, Noise::Bits32),
        k,
        top,
    )
}
