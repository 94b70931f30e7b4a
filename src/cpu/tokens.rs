//! f64 reference of token sampling (`crate::tokens`, `shaders/tokens.wgsl`) and of speculative
//! verification. Written the direct way (a sort per row), not in the kernel's shape, so that it
//! checks the kernel's sort-free threshold search independently.

use super::uniform_from_word;
use crate::tokens::{
    LogprobsMode, RowSampling, SampledTokens, SpeculativeResult, TokenSampling, check_speculative,
    check_token_logits, mask_words,
};
use crate::{Error, NO_INDEX, Noise, Stream};

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
/// [`crate::TokenSampler`]), in the filters' order, with each entry's unnormalised mass
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
    if p.top_n_sigma > 0.0 {
        // Both thresholds (top-n-sigma and min-p) keep a prefix of the order.
        let thr = m - f64::from(p.top_n_sigma) * row_sigma(row);
        kept.retain(|&(j, _)| f64::from(row[j]) >= thr);
    }
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

/// The population standard deviation (f64) of a row's finite logits (top-nσ's `σ`).
pub fn row_sigma(row: &[f32]) -> f64 {
    let finite: Vec<f64> = row
        .iter()
        .filter(|x| x.is_finite())
        .map(|&x| f64::from(x))
        .collect();
    let n = finite.len().max(1) as f64;
    let mean = finite.iter().sum::<f64>() / n;
    (finite.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt()
}

/// The processing stages of the module docs ([`crate::tokens`]) on the host: each row masked by
/// `allowed`, biased by `logit_bias` (a row's entries for one token summed), penalised from its
/// `prompt_tokens` and `output_tokens` (vLLM's rule), each logit computed in f64 from the f32
/// inputs and rounded once to f32. NaN and +inf inputs stay as they are. Parameters must have
/// passed [`TokenSampling::check`].
pub fn processed_logits(logits: &[f32], k: usize, params: &TokenSampling<'_>) -> Vec<f32> {
    let mw = mask_words(k);
    let empty: &[u32] = &[];
    let mut out = Vec::with_capacity(logits.len());
    for (r, row) in logits.chunks(k).enumerate() {
        let p = params.row(r);
        let mut l: Vec<f64> = row.iter().map(|&x| f64::from(x)).collect();
        let bad = |x: f32| x.is_nan() || x == f32::INFINITY;
        if !params.allowed.is_empty() {
            for (j, x) in l.iter_mut().enumerate() {
                if !bad(row[j]) && (params.allowed[r * mw + j / 32] >> (j % 32)) & 1 == 0 {
                    *x = f64::NEG_INFINITY;
                }
            }
        }
        for &(t, b) in params.logit_bias.get(r).copied().unwrap_or(&[]) {
            let x = &mut l[t as usize];
            if x.is_finite() {
                *x += f64::from(b);
            }
        }
        let (rp, fp, pp) = (
            f64::from(p.repetition_penalty),
            f64::from(p.frequency_penalty),
            f64::from(p.presence_penalty),
        );
        let mut counts = vec![0u64; k];
        for &t in params.output_tokens.get(r).copied().unwrap_or(empty) {
            counts[t as usize] += 1;
        }
        let mut seen = vec![false; k];
        for &t in params.prompt_tokens.get(r).copied().unwrap_or(empty) {
            seen[t as usize] = true;
        }
        for (j, x) in l.iter_mut().enumerate() {
            if !x.is_finite() {
                continue;
            }
            let c = counts[j] as f64;
            if seen[j] || counts[j] > 0 {
                *x = if *x > 0.0 { *x / rp } else { *x * rp };
            }
            *x -= fp * c + if counts[j] > 0 { pp } else { 0.0 };
        }
        out.extend(
            l.iter()
                .zip(row)
                .map(|(&x, &raw)| if bad(raw) { raw } else { x as f32 }),
        );
    }
    out
}

/// The exact law of one row's token: `q = softmax(l / t)` renormalised over the kept set (zero
/// elsewhere); one-hot on the argmax for `t = 0`. `row` holds the processed logits.
pub fn row_probabilities(row: &[f32], p: &RowSampling) -> Vec<f64> {
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

/// The value the token maximises for entry `j` of a row: `l_j / t + g_j` (f64), `g_j` the
/// category's noise ([`gumbel_noise`](super::gumbel_noise)); the raw logit for `t = 0`.
pub fn token_score(row: &[f32], j: usize, t: f32, stream: Stream, noise: Noise) -> f64 {
    if t == 0.0 {
        return f64::from(row[j]);
    }
    f64::from(row[j]) / f64::from(t) + super::gumbel_noise(stream, j as u64, noise)
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

/// The checks of the slice level, then the processed logits (the input itself when nothing
/// processes it).
fn checked_processed(
    logits: &[f32],
    k: usize,
    params: &TokenSampling<'_>,
) -> Result<Vec<f32>, Error> {
    let rows = crate::logits::check_shape(logits.len(), k)?;
    params.check(rows, k)?;
    if params.logprobs > k {
        return Err(Error::InvalidArgument(format!(
            "logprobs = {} exceeds k = {k}",
            params.logprobs
        )));
    }
    if params.processes() {
        let p = processed_logits(logits, k, params);
        check_token_logits(logits.iter().copied(), k, params.temperature, Some(&p))?;
        Ok(p)
    } else {
        check_token_logits(logits.iter().copied(), k, params.temperature, None)?;
        Ok(logits.to_vec())
    }
}

/// The final law of every row (`rows x k`, f64), the reference of
/// [`crate::Gpu::token_probabilities`]: [`row_probabilities`] of the processed logits.
pub fn token_probabilities(
    logits: &[f32],
    k: usize,
    params: &TokenSampling<'_>,
) -> Result<Vec<f64>, Error> {
    let processed = checked_processed(logits, k, params)?;
    Ok(processed
        .chunks(k)
        .enumerate()
        .flat_map(|(r, row)| row_probabilities(row, &params.row(r)))
        .collect())
}

/// [`sample_tokens`] with a choice of [`Noise`], the reference of
/// [`crate::Gpu::sample_tokens_with`].
pub fn sample_tokens_with(
    logits: &[f32],
    k: usize,
    params: &TokenSampling<'_>,
    noise: Noise,
) -> Result<SampledTokens, Error> {
    let processed = checked_processed(logits, k, params)?;
    let n = params.logprobs;
    let mut out = SampledTokens::default();
    for (r, (row, prow)) in logits.chunks(k).zip(processed.chunks(k)).enumerate() {
        let p = params.row(r);
        let token = if p.temperature == 0.0 {
            argmax(prow).expect("checked: a row has a finite logit")
        } else {
            let mut best: Option<(f64, usize)> = None;
            for (j, _) in token_kept(prow, &p) {
                let z = token_score(prow, j, p.temperature, params.streams[r], noise);
                if best.is_none_or(|b| z > b.0 || (z == b.0 && j < b.1)) {
                    best = Some((z, j));
                }
            }
            best.expect("the kept set is never empty").1
        };
        // The log-probabilities in the chosen mode, and the order they rank tokens in.
        let lp: Vec<f64> = match params.logprobs_mode {
            LogprobsMode::Raw => log_softmax_f64(row),
            LogprobsMode::Processed => row_probabilities(prow, &p)
                .iter()
                .map(|&q| if q > 0.0 { q.ln() } else { f64::NEG_INFINITY })
                .collect(),
        };
        out.tokens.push(token as u32);
        out.logprobs.push(lp[token] as f32);
        out.ranks
            .push(lp.iter().filter(|&&x| x >= lp[token]).count() as u32);
        let mut all: Vec<usize> = (0..k).collect();
        // Stable: ties keep the lower index first.
        all.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]));
        for &j in &all[..n] {
            out.top_tokens.push(j as u32);
            out.top_logprobs.push(lp[j] as f32);
        }
    }
    Ok(out)
}

/// Noise element of category `j` at draft position `i` of speculative verification over `k`
/// categories (`j = k`: the acceptance uniform): `e = i * (k + 1) + j`, so position `i` owns
/// elements `i * (k + 1) ..= i * (k + 1) + k`. Element `e` is stream word `e` under
/// [`Noise::Bits32`], words `2e` (high half) and `2e + 1` (low half) under [`Noise::Bits64`]
/// (as in [`gumbel_noise`](super::gumbel_noise)): position `i` starts at word `i * (k + 1)`, or
/// `2 i (k + 1)`.
pub fn speculative_word(i: usize, j: usize, k: usize) -> u64 {
    (i * (k + 1) + j) as u64
}

/// The acceptance uniform `u_i` of position `i`: element `speculative_word(i, k, k)` as a
/// uniform, from one word or two ([`super::uniform_from_words64`]).
fn acceptance_uniform(stream: Stream, i: usize, k: usize, noise: Noise) -> f64 {
    let e = speculative_word(i, k, k);
    f64::from(match noise {
        Noise::Bits32 => uniform_from_word(stream.word(e)),
        Noise::Bits64 => super::uniform_from_words64(stream.word(2 * e), stream.word(2 * e + 1)),
    })
}

/// Gumbel-max draw from the (unnormalised, non-negative) weights `w` with the noise of position
/// `i`: `argmax_{w_j > 0} ln w_j + g_j`, ties to the lower index; `None` if every weight is 0.
fn draw(
    w: impl Iterator<Item = f64>,
    i: usize,
    k: usize,
    stream: Stream,
    noise: Noise,
) -> Option<usize> {
    let mut best: Option<(f64, usize)> = None;
    for (j, x) in w.enumerate() {
        if x > 0.0 {
            let z = x.ln() + super::gumbel_noise(stream, speculative_word(i, j, k), noise);
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
/// [`speculative_word`] ([`Noise::Bits32`]; [`verify_speculative_with`] for a choice).
pub fn verify_speculative(
    draft_tokens: &[u32],
    draft_probs: &[f32],
    target_probs: &[f32],
    k: usize,
    streams: &[Stream],
) -> Result<SpeculativeResult, Error> {
    verify_speculative_with(
        draft_tokens,
        draft_probs,
        target_probs,
        k,
        streams,
        Noise::Bits32,
    )
}

/// [`verify_speculative`] with a choice of [`Noise`], the reference of
/// [`crate::Gpu::verify_speculative_with`]: position `i` owns `k + 1` elements
/// ([`speculative_word`]), one stream word each under `Bits32`, two under `Bits64`.
pub fn verify_speculative_with(
    draft_tokens: &[u32],
    draft_probs: &[f32],
    target_probs: &[f32],
    k: usize,
    streams: &[Stream],
    noise: Noise,
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
                break draw(p(n).iter().map(|&x| f64::from(x)), n, k, stream, noise);
            }
            let d = draft_tokens[r * n + i] as usize;
            let u = acceptance_uniform(stream, i, k, noise);
            if u * f64::from(q(i)[d]) < f64::from(p(i)[d]) {
                tokens[i] = d as u32;
                i += 1;
                continue;
            }
            let residual = p(i)
                .iter()
                .zip(q(i))
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).max(0.0));
            break draw(residual, i, k, stream, noise)
                .or_else(|| draw(p(i).iter().map(|&x| f64::from(x)), i, k, stream, noise));
        };
        out.accepted.push(i as u32);
        tokens[i] = emitted.map_or(NO_INDEX, |j| j as u32);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The kernel's sort-free search, in its loop shape (`shaders/tokens.wgsl`), with f64 masses.

/// The order-preserving u32 image of an f32's bits (-0 as +0), as the kernel's `key_of`.
fn key_of(bits: u32) -> u32 {
    let b = if bits == 0x8000_0000 { 0 } else { bits };
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The f32 whose key is `key`.
fn value_of_key(key: u32) -> f32 {
    f32::from_bits(if key & 0x8000_0000 != 0 {
        key & 0x7fff_ffff
    } else {
        !key
    })
}

/// 0 for entries never kept (-inf, NaN).
fn logit_key(x: f32) -> u32 {
    if x.is_nan() || x == f32::NEG_INFINITY {
        0
    } else {
        key_of(x.to_bits())
    }
}

fn is_kept(key: u32, j: u32, th: (u32, u32)) -> bool {
    key != 0 && (key > th.0 || (key == th.0 && j <= th.1))
}

/// `a` before `b` in the order: larger key, then lower index.
fn before(a: (u32, u32), b: (u32, u32)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

fn tighter(a: (u32, u32), b: (u32, u32)) -> (u32, u32) {
    if before(a, b) { a } else { b }
}

/// The kernel's radix select: the `rank`-th entry (1-based) in the order among those kept by
/// `th` (with key `key0` when `index_only`): 4 rounds of 8-bit key digits scanned from the top,
/// then the index's 8-bit digits scanned from the bottom.
fn select_rank(
    row: &[f32],
    th: (u32, u32),
    rank: u32,
    index_only: Option<u32>,
) -> Option<(u32, u32)> {
    let idx_rounds = (32 - (row.len().max(1) as u32 - 1).leading_zeros()).div_ceil(8);
    let (mut key_prefix, mut key_mask) = index_only.map_or((0, 0), |k| (k, u32::MAX));
    let (mut idx_prefix, mut idx_mask) = (0u32, 0u32);
    let mut left = rank;
    let first = if index_only.is_some() { 4 } else { 0 };
    for round in first..4 + idx_rounds {
        let on_key = round < 4;
        let shift = if on_key {
            24 - 8 * round
        } else {
            8 * (idx_rounds - 1 - (round - 4))
        };
        let mut hist = [0u32; 256];
        for (j, &x) in row.iter().enumerate() {
            let (key, j) = (logit_key(x), j as u32);
            if is_kept(key, j, th) && key & key_mask == key_prefix && j & idx_mask == idx_prefix {
                hist[((if on_key { key } else { j } >> shift) & 0xff) as usize] += 1;
            }
        }
        let mut acc = 0;
        let mut found = None;
        for i in 0..256u32 {
            let d = if on_key { 255 - i } else { i };
            let c = hist[d as usize];
            if acc + c >= left {
                found = Some(d);
                break;
            }
            acc += c;
        }
        let d = found?;
        left -= acc;
        if on_key {
            key_prefix |= d << shift;
            key_mask |= 0xff << shift;
        } else {
            idx_prefix |= d << shift;
            idx_mask |= 0xff << shift;
        }
    }
    Some((key_prefix, idx_prefix))
}

/// The kept set's last entry `(key, index)` as the kernel finds it without sorting (see
/// `shaders/tokens.wgsl`): min-p as a logit threshold, top-k by radix select, top-p by a radix
/// search on the key over kept mass (4-bit digits) and the index select among the ties. Entry
/// `j` with key `key` is kept iff `key > th.0`, or `key == th.0` and `j <= th.1`; an all -inf
/// row keeps nothing. Masses are f64 here (f32 on the GPU). Greedy rows: `None`.
pub fn token_limit_radix(row: &[f32], p: &RowSampling) -> Option<(u32, u32)> {
    const NO: u32 = u32::MAX;
    // Like the kernel: anything but a positive temperature (0, or NaN on the device) is greedy.
    if p.temperature.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let t = f64::from(p.temperature);
    let m = row
        .iter()
        .filter(|x| **x != f32::NEG_INFINITY)
        .fold(f64::NEG_INFINITY, |a, &x| a.max(f64::from(x)));
    let mut th = (1u32, NO);
    if p.top_n_sigma > 0.0 {
        let thr = (m - f64::from(p.top_n_sigma) * row_sigma(row)).min(m);
        let mut f = thr as f32;
        if f64::from(f) < thr {
            f = f.next_up();
        }
        th = (key_of(f.to_bits()).max(1), NO);
    }
    if p.min_p > 0.0 {
        // l >= m + t ln(min_p), the smallest f32 at or above the threshold as the key.
        let thr = (m + t * f64::from(p.min_p).ln()).min(m);
        let mut f = thr as f32;
        if f64::from(f) < thr {
            f = f.next_up();
        }
        th = tighter(th, (key_of(f.to_bits()).max(1), NO));
    }
    if p.top_k > 0
        && (p.top_k as usize) < row.len()
        && let Some(e) = select_rank(row, th, p.top_k, None)
    {
        th = tighter(th, e);
    }
    if p.top_p < 1.0 {
        let mass = |x: f32| ((f64::from(x) - m) / t).exp();
        let kept = |j: usize| is_kept(logit_key(row[j]), j as u32, th);
        let z: f64 = (0..row.len())
            .filter(|&j| kept(j))
            .map(|j| mass(row[j]))
            .sum();
        let goal = f64::from(p.top_p) * z;
        let (mut above, mut prefix, mut mask) = (0.0, 0u32, 0u32);
        for round in 0..8 {
            let shift = 28 - 4 * round;
            let mut bins = [0.0f64; 16];
            for (j, &x) in row.iter().enumerate() {
                let key = logit_key(x);
                if kept(j) && key & mask == prefix {
                    bins[((key >> shift) & 15) as usize] += mass(x);
                }
            }
            let (mut digit, mut last, mut acc, mut acc_last) = (None, 0, above, above);
            for d in (0..16).rev() {
                if bins[d] > 0.0 {
                    (last, acc_last) = (d, acc);
                    if acc + bins[d] >= goal {
                        digit = Some(d);
                        break;
                    }
                    acc += bins[d];
                }
            }
            let d = digit.unwrap_or_else(|| {
                acc = acc_last;
                last
            });
            above = acc;
            prefix |= (d as u32) << shift;
            mask |= 15 << shift;
        }
        let mu = mass(value_of_key(prefix));
        let c = ((goal - above) / mu).ceil().clamp(1.0, 4_294_967_040.0) as u32;
        th = match select_rank(row, th, c, Some(prefix)) {
            Some(e) => tighter(th, e),
            None => tighter(th, (prefix, NO)),
        };
    }
    Some(th)
}

/// The kept set of [`token_limit_radix`] as a mask (`None` for greedy rows).
pub fn token_kept_radix(row: &[f32], p: &RowSampling) -> Option<Vec<bool>> {
    let th = token_limit_radix(row, p)?;
    Some(
        row.iter()
            .enumerate()
            .map(|(j, &x)| is_kept(logit_key(x), j as u32, th))
            .collect(),
    )
}
