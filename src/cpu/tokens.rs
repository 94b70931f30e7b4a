//! f64 reference of token sampling (`crate::tokens`, `shaders/tokens.wgsl`) and of speculative
//! verification. Written the direct way (a sort per row), not in the kernel's shape, so that it
//! checks the kernel's sort-free threshold search independently.

use super::{gumbel_from_word, uniform_from_word};
use crate::tokens::{
    Noise, RowSampling, SampledTokens, SpeculativeResult, TokenSampling, check_speculative,
    check_token_logits,
};
use crate::{Error, NO_INDEX, Stream};

/// The non-masked entries of `row` in the filters' order: larger logit, then lower index.
fn by_logit(row: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len())
        .filter(|&j| row[j] != f32::NEG_INFINITY)
        .collect();
    // Stable sort: equal logits keep increasing index order.
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    order
}

/// The greedy token: the largest logit, ties to the lower index (`None` for an all -inf row).
fn argmax(row: &[f32]) -> Option<usize> {
    by_logit(row).first().copied()
}

/// The kept set of `row` under `p` (min-p, then top-k, then top-p; module docs of
/// [`crate::tokens`]), in the filters' order, with each entry's unnormalised mass
/// `exp((l - max) / t)`. Greedy rows keep their argmax alone (mass 1).
pub fn token_kept(row: &[f32], p: &RowSampling) -> Vec<(usize, f64)> {
    let order = by_logit(row);
    let Some(&first) = order.first() else {
        return Vec::new();
    };
    if p.temperature == 0.0 {
        return vec![(first, 1.0)];
    }
    let (m, t) = (f64::from(row[first]), f64::from(p.temperature));
    let mut kept: Vec<(usize, f64)> = order
        .iter()
        .map(|&j| (j, ((f64::from(row[j]) - m) / t).exp()))
        .collect();
    if p.min_p > 0.0 {
        // max q has mass exp(0) = 1.
        let min_p = f64::from(p.min_p);
        kept.retain(|&(_, w)| w >= min_p);
    }
    if p.top_k > 0 {
        kept.truncate(p.top_k as usize);
    }
    if p.top_p < 1.0 {
        let z: f64 = kept.iter().map(|e| e.1).sum();
        let target = f64::from(p.top_p) * z;
        let mut cum = 0.0;
        let mut n = kept.len();
        for (i, e) in kept.iter().enumerate() {
            cum += e.1;
            if cum >= target {
                n = i + 1;
                break;
            }
        }
        kept.truncate(n.max(1));
    }
    kept
}

/// The exact law of one row's token: `q = softmax(l / t)` renormalised over the kept set (zero
/// elsewhere); one-hot on the argmax for `t = 0`.
pub fn token_probabilities(row: &[f32], p: &RowSampling) -> Vec<f64> {
    let kept = token_kept(row, p);
    let z: f64 = kept.iter().map(|e| e.1).sum();
    let mut law = vec![0.0; row.len()];
    for (j, w) in kept {
        law[j] = w / z;
    }
    law
}

/// `log_softmax(row)` in f64 (-inf for masked entries).
pub fn log_softmax_f64(row: &[f32]) -> Vec<f64> {
    let m = row
        .iter()
        .fold(f64::NEG_INFINITY, |a, &x| a.max(f64::from(x)));
    let s: f64 = row.iter().map(|&x| (f64::from(x) - m).exp()).sum();
    let lse = m + s.ln();
    row.iter().map(|&x| f64::from(x) - lse).collect()
}

/// The uniform in (0, 1) of the 64-bit word `x = hi * 2^32 + lo` ([`Noise::Bits64`]),
/// bit-identical to `uniform_from_words64` in `shaders/tokens.wgsl`: `(x + 1/2) / 2^64` with the
/// significand cut to 24 bits (toward zero). Smallest `2^-65`, largest `1 - 2^-24`.
pub fn uniform_from_words64(hi: u32, lo: u32) -> f32 {
    let x = (u64::from(hi) << 32) | u64::from(lo);
    if x < 0x80_0000 {
        return (2 * x + 1) as f32 * 2f32.powi(-65);
    }
    // Keep the top 24 significant bits so the conversion is exact.
    let drop = 40 - x.leading_zeros();
    (x >> drop) as f32 * 2f32.powi(drop as i32 - 64)
}

/// Gumbel(0, 1) noise of a 64-bit word in f64: `-ln(-ln(1 - u))`, `u = uniform_from_words64`;
/// from -2.8115 up to `65 ln 2 ~ 45.05`.
pub fn gumbel_from_words64(hi: u32, lo: u32) -> f64 {
    let u = f64::from(uniform_from_words64(hi, lo));
    -(-(-u).ln_1p()).ln()
}

/// The Gumbel noise of category `j` of `stream` under `noise`: word `j`, or words `2j` (high)
/// and `2j + 1` (low).
pub fn token_noise(stream: Stream, j: usize, noise: Noise) -> f64 {
    match noise {
        Noise::Bits32 => gumbel_from_word(stream.word(j as u64)),
        Noise::Bits64 => {
            gumbel_from_words64(stream.word(2 * j as u64), stream.word(2 * j as u64 + 1))
        }
    }
}

/// The value the token maximises for entry `j` of a row: `l_j / t + g_j` (f64), `g_j` the
/// category's noise ([`token_noise`]); the raw logit for `t = 0`.
pub fn token_score(row: &[f32], j: usize, t: f32, stream: Stream, noise: Noise) -> f64 {
    if t == 0.0 {
        return f64::from(row[j]);
    }
    f64::from(row[j]) / f64::from(t) + token_noise(stream, j, noise)
}

/// Token sampling, the f64 reference of [`crate::Gpu::sample_tokens`]: same arguments, same
/// checks, same result layout.
pub fn sample_tokens(
    logits: &[f32],
    k: usize,
    params: &TokenSampling<'_>,
) -> Result<SampledTokens, Error> {
    sample_tokens_with(logits, k, params, Noise::Bits32)
}

/// [`sample_tokens`] with a choice of [`Noise`], the reference of
/// [`crate::Gpu::sample_tokens_with`].
pub fn sample_tokens_with(
    logits: &[f32],
    k: usize,
    params: &TokenSampling<'_>,
    noise: Noise,
) -> Result<SampledTokens, Error> {
    let rows = crate::logits::check_shape(logits.len(), k)?;
    params.check(rows)?;
    if params.logprobs > k {
        return Err(Error::InvalidArgument(format!(
            "logprobs = {} exceeds k = {k}",
            params.logprobs
        )));
    }
    check_token_logits(logits.iter().copied(), k, params.temperature)?;
    let n = params.logprobs;
    let mut out = SampledTokens::default();
    for (r, row) in logits.chunks(k).enumerate() {
        let p = params.row(r);
        let token = if p.temperature == 0.0 {
            argmax(row).expect("checked: a row has a finite logit")
        } else {
            let mut best: Option<(f64, usize)> = None;
            for (j, _) in token_kept(row, &p) {
                let z = token_score(row, j, p.temperature, params.streams[r], noise);
                if best.is_none_or(|b| z > b.0 || (z == b.0 && j < b.1)) {
                    best = Some((z, j));
                }
            }
            best.expect("the kept set is never empty").1
        };
        let ls = log_softmax_f64(row);
        out.tokens.push(token as u32);
        out.logprobs.push(ls[token] as f32);
        let mut all: Vec<usize> = (0..k).collect();
        all.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        for &j in &all[..n] {
            out.top_tokens.push(j as u32);
            out.top_logprobs.push(ls[j] as f32);
        }
    }
    Ok(out)
}

/// Stream word of category `j` at draft position `i` of speculative verification over `k`
/// categories: position `i` owns words `i * (k + 1) ..= i * (k + 1) + k`, the last one for the
/// acceptance uniform.
pub fn speculative_word(i: usize, j: usize, k: usize) -> u64 {
    (i * (k + 1) + j) as u64
}

/// Gumbel-max draw from the (unnormalised, non-negative) weights `w` with the noise of position
/// `i`: `argmax_{w_j > 0} ln w_j + g_j`, ties to the lower index; `None` if every weight is 0.
fn draw(w: impl Iterator<Item = f64>, i: usize, k: usize, stream: Stream) -> Option<usize> {
    let mut best: Option<(f64, usize)> = None;
    for (j, x) in w.enumerate() {
        if x > 0.0 {
            let z = x.ln() + gumbel_from_word(stream.word(speculative_word(i, j, k)));
            if best.is_none_or(|b| z > b.0) {
                best = Some((z, j));
            }
        }
    }
    best.map(|b| b.1)
}

/// Speculative verification (Leviathan et al. 2023; Chen et al. 2023), the f64 reference of
/// [`crate::Gpu::verify_speculative`]. Per row with drafts `d_0 .. d_{n-1}`, draft laws `q_i`
/// and target laws `p_0 .. p_n` (each unnormalised is fine; rows of `k`):
/// draft `i` is accepted while `u_i * q_i(d_i) < p_i(d_i)` (`u_i` the uniform of the
/// position's acceptance word); at the first rejection the token is a draw from
/// `max(0, p_i - q_i)` (from `p_i` where that is all zero); after `n` acceptances, a bonus draw
/// from `p_n`. Draws are Gumbel-max over `ln w_j + g_j` with the words of
/// [`speculative_word`].
pub fn verify_speculative(
    draft_tokens: &[u32],
    draft_probs: &[f32],
    target_probs: &[f32],
    k: usize,
    streams: &[Stream],
) -> Result<SpeculativeResult, Error> {
    let (rows, n) = check_speculative(draft_tokens, draft_probs, target_probs, k, streams.len())?;
    let mut out = SpeculativeResult {
        accepted: Vec::with_capacity(rows),
        tokens: vec![NO_INDEX; rows * (n + 1)],
    };
    for (r, &stream) in streams.iter().enumerate() {
        let p = |i: usize| &target_probs[(r * (n + 1) + i) * k..][..k];
        let q = |i: usize| &draft_probs[(r * n + i) * k..][..k];
        let tokens = &mut out.tokens[r * (n + 1)..][..n + 1];
        let mut i = 0;
        let emitted = loop {
            if i == n {
                break draw(p(n).iter().map(|&x| f64::from(x)), n, k, stream);
            }
            let d = draft_tokens[r * n + i] as usize;
            let u = f64::from(uniform_from_word(stream.word(speculative_word(i, k, k))));
            if u * f64::from(q(i)[d]) < f64::from(p(i)[d]) {
                tokens[i] = d as u32;
                i += 1;
                continue;
            }
            let residual = p(i)
                .iter()
                .zip(q(i))
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).max(0.0));
            break draw(residual, i, k, stream)
                .or_else(|| draw(p(i).iter().map(|&x| f64::from(x)), i, k, stream));
        };
        out.accepted.push(i as u32);
        tokens[i] = emitted.map_or(NO_INDEX, |j| j as u32);
    }
    Ok(out)
}
