//! Token sampling for language models (`shaders/tokens.wgsl`): temperature, min-p, top-k,
//! top-p, log-probabilities, per-request streams and speculative verification.
//!
//! ## Semantics (vLLM's order)
//! Row `r` has logits `l`, temperature `t`, and `q = softmax(l / t)`.
//! 1. **min-p** keeps `q_i >= min_p * max q`, i.e. `l_i >= max l + t ln(min_p)`;
//! 2. **top-k** then keeps the `top_k` largest logits among those (ties to the lower index);
//! 3. **top-p** then keeps the shortest prefix, by decreasing `q` (ties to the lower index), whose
//!    mass renormalised over the set left by 1 and 2 reaches `top_p` (at least one token).
//!
//! The token is `argmax_{j kept} (l_j / t + g_j)`, `g_j` the Gumbel noise of word `j` of
//! `streams[r]`: a draw from `q` renormalised over the kept set, which depends on the row's own
//! stream only, never on the other rows of the batch. `t = 0` is greedy: the argmax of `l`, ties
//! to the lower index (the filters never remove it). -inf logits are never kept.
//!
//! Since `q` is increasing in `l`, all three filters keep a *prefix* of one total order, "larger
//! logit, then lower index"; the kernel finds the last kept element of that order (its key and
//! index) and needs no sort.
//!
//! **Log-probabilities** are those of the raw logits, `log_softmax(l)`, whatever the temperature
//! and filters: the token's, and the `n` largest (decreasing, ties to the lower index).
//!
//! Rows holding a NaN, a +inf, or only -inf logits are an `Err` at the slice level.

use crate::{Error, Stream};

/// The most top log-probabilities per row ([`TokenSampling::logprobs`]).
pub const MAX_LOGPROBS: usize = 20;

/// Per-row token-sampling parameters of [`crate::Gpu::sample_tokens`] and
/// [`crate::cpu::sample_tokens`] (see the module docs for the order the filters apply in).
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenSampling<'a> {
    /// One per row, finite, >= 0; 0 = greedy: the argmax, ties to the lower index.
    pub temperature: &'a [f32],
    /// Empty = off for every row; else one per row, 0 = off.
    pub top_k: &'a [u32],
    /// Empty = off; else one per row in (0, 1], 1 = off.
    pub top_p: &'a [f32],
    /// Empty = off; else one per row in [0, 1), 0 = off.
    pub min_p: &'a [f32],
    /// One per row: category `j` of row `r` uses word `j` of `streams[r]`.
    pub streams: &'a [Stream],
    /// `n`, `0..=20`: the top-`n` raw log-probabilities per row.
    pub logprobs: usize,
}

/// The parameters of one row, as [`TokenSampling::row`] gives them (filters off = 0, 1, 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowSampling {
    /// Temperature (0 = greedy).
    pub temperature: f32,
    /// Top-k (0 = off).
    pub top_k: u32,
    /// Top-p (1 = off).
    pub top_p: f32,
    /// Min-p (0 = off).
    pub min_p: f32,
}

impl RowSampling {
    /// Temperature `t`, every filter off.
    pub fn new(temperature: f32) -> Self {
        RowSampling {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
        }
    }
}

impl TokenSampling<'_> {
    /// Row `r`'s parameters, the filters a row leaves off (or an empty slice) as 0, 1, 0.
    pub fn row(&self, r: usize) -> RowSampling {
        RowSampling {
            temperature: self.temperature[r],
            top_k: self.top_k.get(r).copied().unwrap_or(0),
            top_p: self.top_p.get(r).copied().unwrap_or(1.0),
            min_p: self.min_p.get(r).copied().unwrap_or(0.0),
        }
    }

    /// Checks the parameters against `rows` rows and returns `rows`; every path (CPU reference,
    /// slice and buffer level) uses this one check. Errors name the argument and the row.
    pub fn check(&self, rows: usize) -> Result<(), Error> {
        let count = |name: &str, len: usize, optional: bool| {
            if len == rows || (optional && len == 0) {
                Ok(())
            } else {
                Err(Error::InvalidArgument(format!(
                    "{name}: {len} values for {rows} rows (one per row{})",
                    if optional { ", or none" } else { "" }
                )))
            }
        };
        count("temperature", self.temperature.len(), false)?;
        count("streams", self.streams.len(), false)?;
        count("top_k", self.top_k.len(), true)?;
        count("top_p", self.top_p.len(), true)?;
        count("min_p", self.min_p.len(), true)?;
        if self.logprobs > MAX_LOGPROBS {
            return Err(Error::InvalidArgument(format!(
                "logprobs = {} exceeds {MAX_LOGPROBS}",
                self.logprobs
            )));
        }
        for (r, &t) in self.temperature.iter().enumerate() {
            if !(t.is_finite() && t >= 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "temperature[{r}] = {t} must be finite and >= 0"
                )));
            }
        }
        for (r, &p) in self.top_p.iter().enumerate() {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::InvalidArgument(format!(
                    "top_p[{r}] = {p} must be in (0, 1]"
                )));
            }
        }
        for (r, &p) in self.min_p.iter().enumerate() {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::InvalidArgument(format!(
                    "min_p[{r}] = {p} must be in [0, 1)"
                )));
            }
        }
        Ok(())
    }
}

/// Checks the logits of a `rows x k` token-sampling job: the first row holding a NaN or only
/// -inf is `Error::NanInRow` / `Error::AllMaskedRow`, a +inf logit (whose softmax is undefined)
/// and an `l / t` that overflows f32 are `InvalidArgument` naming the row.
pub(crate) fn check_token_logits(
    logits: impl Iterator<Item = f32>,
    k: usize,
    temperature: &[f32],
) -> Result<(), Error> {
    let mut all_masked = true;
    for (i, x) in logits.enumerate() {
        let r = i / k;
        if x.is_nan() {
            return Err(Error::NanInRow { row: r });
        }
        if x == f32::INFINITY {
            return Err(Error::InvalidArgument(format!(
                "row {r} holds a +inf logit: its softmax is undefined"
            )));
        }
        let t = temperature[r];
        if x.is_finite() && t > 0.0 && !(x / t).is_finite() {
            return Err(Error::InvalidArgument(format!(
                "row {r}: logit {x} / temperature {t} overflows f32"
            )));
        }
        all_masked &= x == f32::NEG_INFINITY;
        if (i + 1) % k == 0 {
            if all_masked {
                return Err(Error::AllMaskedRow { row: r });
            }
            all_masked = true;
        }
    }
    Ok(())
}

/// The result of [`crate::Gpu::sample_tokens`] / [`crate::cpu::sample_tokens`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampledTokens {
    /// One per row.
    pub tokens: Vec<u32>,
    /// One per row: `log_softmax(l)[token]`, of the raw (unscaled) logits.
    pub logprobs: Vec<f32>,
    /// `rows * n`: the `n` largest raw logits' indices, decreasing, ties to the lower index.
    pub top_tokens: Vec<u32>,
    /// `rows * n`: their `log_softmax` values.
    pub top_logprobs: Vec<f32>,
}

/// The result of [`crate::Gpu::verify_speculative`] / [`crate::cpu::verify_speculative`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpeculativeResult {
    /// Per row, how many drafts were accepted (`0..=n`).
    pub accepted: Vec<u32>,
    /// `rows * (n + 1)`: row `r`'s accepted drafts, then the emitted token, then
    /// [`crate::NO_INDEX`].
    pub tokens: Vec<u32>,
}

/// Checks the arguments of speculative verification; returns `(rows, n)`.
pub(crate) fn check_speculative(
    draft_tokens: &[u32],
    draft_probs: &[f32],
    target_probs: &[f32],
    k: usize,
    rows: usize,
) -> Result<(usize, usize), Error> {
    if k == 0 {
        return Err(Error::InvalidArgument(
            "k (categories per row) must be at least 1".into(),
        ));
    }
    if rows == 0 {
        return Err(Error::InvalidArgument(
            "streams: one per row is needed (no rows given)".into(),
        ));
    }
    if !draft_tokens.len().is_multiple_of(rows) {
        return Err(Error::InvalidArgument(format!(
            "draft_tokens: {} tokens do not split into {rows} rows",
            draft_tokens.len()
        )));
    }
    let n = draft_tokens.len() / rows;
    if draft_probs.len() != rows * n * k {
        return Err(Error::InvalidArgument(format!(
            "draft_probs: {} values, rows x n x k = {rows} x {n} x {k} needed",
            draft_probs.len()
        )));
    }
    if target_probs.len() != rows * (n + 1) * k {
        return Err(Error::InvalidArgument(format!(
            "target_probs: {} values, rows x (n + 1) x k = {rows} x {} x {k} needed",
            target_probs.len(),
            n + 1
        )));
    }
    if let Some(i) = draft_tokens.iter().position(|&d| d as usize >= k) {
        return Err(Error::InvalidArgument(format!(
            "draft_tokens[{i}] = {} is not below k = {k}",
            draft_tokens[i]
        )));
    }
    for (name, p) in [("draft_probs", draft_probs), ("target_probs", target_probs)] {
        if let Some(i) = p.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
            return Err(Error::InvalidArgument(format!(
                "{name}[{i}] = {} must be finite and >= 0",
                p[i]
            )));
        }
    }
    Ok((rows, n))
}
