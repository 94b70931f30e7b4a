//! Token sampling for language models: the whole logits-processing chain of a serving engine
//! (token mask, logit bias, repetition / frequency / presence penalties, top-nσ, temperature,
//! min-p, top-k, top-p), the draw from per-request streams, raw or processed log-probabilities
//! and ranks, the final law itself, and speculative verification.
//!
//! The module's files: [`TokenSampling`] and the semantics (here), the sampler family and its
//! buffer level (`sampler.rs`, `shaders/tokens.wgsl`), the processing pass and the device-side
//! penalty state (`chain.rs`, `shaders/token_process.wgsl`, `shaders/penalty_update.wgsl`),
//! speculative verification (`speculative.rs`, `shaders/speculative.wgsl`); the f64 reference
//! of all of it is [`crate::cpu::sample_tokens`] / [`crate::cpu::token_probabilities`]
//! (`src/cpu/tokens.rs`).
//!
//! ## Semantics (vLLM's order)
//! Row `r` has logits `l`. First the **processing** (each step off unless its argument is set):
//! 1. **mask**: a token whose bit in [`TokenSampling::allowed`] is clear gets `l_j = -inf`
//!    (xgrammar's packed layout: bit `j % 32` of word `r * ceil(k / 32) + j / 32`; the bits past
//!    `k` in a row's last word are ignored);
//! 2. **logit bias**: `l_j += b` for every `(j, b)` of the row's list (entries for one token add
//!    up; a masked token stays -inf);
//! 3. **penalties** (vLLM's rule): with `c_j` the count of `j` in the row's output tokens and
//!    `seen_j` true when `j` is in its prompt or `c_j > 0`: if `seen_j`, `l_j = l_j / rp` when
//!    `l_j > 0`, else `l_j * rp`; then `l_j -= frequency * c_j + presence * [c_j > 0]`.
//!
//! The processed logit is computed in f64 from the f32 inputs by the reference and in f32 by the
//! kernel, and held as an f32 (what both then read). Then, on the processed logits `l'` with
//! temperature `t` and `q = softmax(l' / t)`:
//! 4. **top-nσ** keeps `l'_j >= max l' - n σ`, `σ` the population standard deviation of the
//!    row's finite `l'` (independent of `t`; `n = 0` is off);
//! 5. **min-p** keeps `q_i >= min_p * max q`, i.e. `l'_i >= max l' + t ln(min_p)` (top-nσ and
//!    min-p are both thresholds, so they commute);
//! 6. **top-k** then keeps the `top_k` largest among those (ties to the lower index);
//! 7. **top-p** then keeps the shortest prefix, by decreasing `q` (ties to the lower index), whose
//!    mass renormalised over the set left by 4-6 reaches `top_p` (at least one token).
//!
//! The token is `argmax_{j kept} (l'_j / t + g_j)`, `g_j` the Gumbel noise of word `j` of
//! `streams[r]`: a draw from `q` renormalised over the kept set (the **final law**,
//! [`crate::Gpu::token_probabilities`]), which depends on the row's own stream only, never on
//! the other rows of the batch; the processing uses no noise words, so the stream contract is
//! the same with or without it. `t = 0` is greedy: the argmax of `l'`, ties to the lower index
//! (the filters never remove it; its final law is one-hot). -inf logits are never kept.
//!
//! Since `q` is increasing in `l'`, all the filters keep a *prefix* of one total order, "larger
//! logit, then lower index"; the kernel finds the last kept element of that order (its key and
//! index) and needs no sort.
//!
//! **Log-probabilities** ([`LogprobsMode`]): `Raw` (the default) are `log_softmax(l)` of the
//! input logits, whatever the processing, temperature and filters; `Processed` are the log of
//! the final law (`-inf` outside the kept set; greedy rows: 0 for the token). Either way the
//! token's, and the `n` largest (decreasing, ties to the lower index). The **rank** of the token
//! is how many tokens have a log-probability `>=` the token's in the chosen mode (1 = the top),
//! counted on the (processed) logits, whose order the log-probabilities share.
//!
//! Rows holding a NaN or a +inf logit, or left without a finite logit (all -inf, or by the mask
//! and bias), are an `Err` naming the row at the slice level; so are parameters out of their
//! domain (naming the argument and row). At the buffer level ([`TokenSampler::record`]) such rows
//! get [`crate::NO_INDEX`], NaN log-probabilities and a status code.
//!
//! ## The kernels: sort-free, a row per workgroup or spread over many
//! When a job has a mask, a bias or penalties, a **processing** kernel (`token_process.wgsl`)
//! writes the row's processed logits once, as f32, into a scratch buffer, and the sampler reads
//! them from there; otherwise it reads the input directly. The sampler (`tokens.wgsl`) then
//! finds the kept set's *last* entry `(key, index)` (key: the order-preserving u32 image of the
//! logit's bits):
//! * **top-nσ** and **min-p** are logit thresholds (key thresholds); top-nσ's `σ` takes two
//!   passes (the mean, then the variance, the count riding on the max pass);
//! * **top-k** is a radix select of the k-th entry on `(key, index)`: rounds of 8-bit key digits
//!   (the first on the max pass) then `ceil(log2(k) / 8)` rounds of index digits, each a
//!   256-bin count histogram (ties at the cut are resolved to the lower index exactly). It
//!   stops early when a round's bin holds exactly the entries still wanted, and once the
//!   entries from a round's bin up number at most 512 it **gathers** them in one pass and
//!   takes the k-th from them sorted (the usual `top_k = 50` is the max pass, about one more
//!   round, the gather);
//! * **top-p** after a top-k of at most 512 entries (the usual serving setting) walks the same
//!   gathered, sorted set (or, when the select ended without gathering, gathers the kept set in
//!   one pass) to the first prefix whose mass reaches `top_p` times its total. Otherwise it is
//!   a radix search on the key over *mass* `exp((l - max) / t)`: 8 rounds of 4-bit digits (16
//!   sums per invocation; the kept mass is round 0's total) find the key where the mass in order
//!   reaches `top_p` times the kept mass; the ties at that key share one mass, so
//!   `c = ceil(rest / mass)` of them are needed, and the index rounds of the select find the
//!   c-th in index order;
//! * then **one Gumbel-max** over the kept entries, whose pass also sums the log-sum-exp of the
//!   input (raw log-probabilities), the kept mass (processed ones, the law) and keeps
//!   per-invocation top-n lists, merged in `n` rounds.
//!
//! Every sum over a row is exact: each term is rounded once to a 96-bit fixed-point number and
//! added as integers, so the result does not depend on how the row is cut into workgroups (and
//! the maxima, counts, histograms and the arg-max are exact anyway). That is what lets a row be
//! spread over many workgroups with the same results bit for bit.
//!
//! [`crate::cpu::token_limit_radix`] is the same search on the CPU (f64 masses); a test checks it
//! keeps exactly the sorted reference's set.
//!
//! ### Two paths, and the passes of each
//! One workgroup per row runs every pass in one dispatch: it suits batches of tens of rows and
//! more. With few long rows (under 128 rows of at least 8192 logits; [`TokenSampler::strategy_for`])
//! each row is spread over many workgroups (about 1024 in all, at least 4096 logits each) and
//! each pass is a dispatch of its own, plus one that writes the outputs. The rows' parameters
//! are device data, so the split path records the passes of every filter [`TokenJob::filters`]
//! allows ([`TokenFilters::of`] names those the rows use; the slice level does so itself); a
//! pass a row does not need finds that out from the row's state and returns. Passes over the
//! logits (each reads every logit of the row once; the processing kernel's also write them
//! once):
//!
//! | setting | one workgroup per row: passes | split row: dispatches recorded (`r = ceil(log2(k) / 8)`) |
//! |---|---|---|
//! | temperature only, no log-probabilities | 1 (the draw) | the draw + the outputs step |
//! | greedy (`t = 0`) | 1 | same |
//! | mask and / or bias (processing kernel) | +1 read and write (+ the bias list, walked by one invocation) | same (its own dispatch) |
//! | penalties (processing kernel) | +1 read and write of the processed row (+ its penalty state) | same |
//! | raw log-probabilities (token's or top n) | +1 (the max; the sum rides on the draw) | +1 |
//! | processed log-probabilities | +1 (the max, shared; the kept mass and the top n ride on the draw) | +1 |
//! | ranks, the final law ([`TokenSampler::record_probabilities`]) | +1 (after the draw) | +1 |
//! | min-p | +1 (the max; shared) | +1 |
//! | top-nσ | +1 (the max, shared) + 2 (mean, variance) | +3 |
//! | top-k | +1 (the max, shared: round 0) + up to `3 + r` rounds, fewer when a round ends it or gathers (+1) | +1 + `3 + r` + 1 (the gather) |
//! | top-p after a top-k of at most 512 | +0 on the gathered set, else +1 (the gather) | the gather (shared) |
//! | any other top-p | +1 (the max, shared) + 8 (mass) + up to `r` (ties) | +1 + 8 + `r` |
//!
//! So temperature 0.8 with top-k 50 and top-p 0.9 at k = 131072 typically reads the row 4
//! times (the max with select round 0, one more round, the gather, the draw), against 10 before
//! the gather; with top-k 1000, whose top-p takes the mass rounds, up to 19. On the split path
//! the same job records 10 dispatches at k = 131072 with its filters named (9 passes and the
//! outputs step; 23 with every filter allowed), of which the select rounds after the gather
//! have nothing to do. On
//! llvmpipe (which silently stops an invocation's loops after 65535 iterations)
//! [`TokenSampler::record`] refuses rows whose estimate exceeds that.
//!
//! ## The buffer level: a decode loop that never reads back
//! [`TokenJob`] takes every input as device data: [`TokenRowParams`] per row (temperature,
//! filters, stream, penalties, top-nσ), and in [`TokenChain`] the mask words, the logit bias as
//! a per-row sparse list ([`TokenBias`]: row starts and `(token, bias)` pairs) and the
//! [`penalty state`](penalty_state_words) of each request (a prompt-presence bitmask and output
//! counts), initialised from the prompt and updated **on the device** from the sampled tokens by
//! [`TokenSampler::record_penalty_update`]. Ranks and the final law are optional outputs.
//!
//! Logits as engines hold them, `logits[:, :vocab]` of a padded output layer, are read in
//! place: give the [`crate::LogitsView`] a row stride ([`crate::LogitsView::with_stride`]).
//!
//! ## Speculative decoding under the chain
//! [`crate::Gpu::verify_speculative`] takes target laws; [`crate::Gpu::token_probabilities`] (and
//! [`TokenSampler::record_probabilities`] on the device) gives the processed law of each draft
//! position, so an engine verifies drafts against the law it would have sampled from:
//! ```
//! use gumbel_wgpu::{Gpu, Stream, TokenSampling};
//! let gpu = Gpu::new()?;
//! let k = 4;
//! // Target logits for positions 0 and 1 of one row with one draft, processed by a bias.
//! let target = [1.0, 0.5, 0.0, -1.0, 0.2, 0.1, 0.0, 0.0];
//! let bias: &[(u32, f32)] = &[(3, 2.0)];
//! let law = gpu.token_probabilities(&target, k, &TokenSampling {
//!     temperature: &[0.7, 0.7],
//!     streams: &[Stream::new(1), Stream::new(1)],
//!     logit_bias: &[bias, bias],
//!     ..Default::default()
//! })?;
//! let draft_law = [0.25f32; 4];
//! let out = gpu.verify_speculative(&[3], &draft_law, &law, k, &[Stream::new(9)])?;
//! assert!(out.accepted[0] <= 1);
//! # Ok::<(), gumbel_wgpu::Error>(())
//! ```
//!
//! ## Streams and noise
//! Row `r` uses its own stream `streams[r]`: category `j` uses word `j` ([`Noise::Bits32`](crate::Noise::Bits32)) or
//! words `2j` and `2j + 1` ([`Noise::Bits64`](crate::Noise::Bits64), a Gumbel tail to 45 instead of 22.9). A decode
//! loop advances each request's offset by `k` (or `2k`) per step; the draw never depends on the
//! batch.
//!
//! Speculative verification with `n` drafts gives position `i` (`0..=n`) the `k + 1` noise
//! elements `i (k + 1) + j`: `j < k` the Gumbel noise of category `j`, `j = k` the acceptance
//! uniform `u_i` ([`crate::cpu::speculative_word`]). Under [`Noise::Bits32`](crate::Noise::Bits32) element `e` is word
//! `e`; under [`Noise::Bits64`](crate::Noise::Bits64) words `2e` (high half) and `2e + 1` (low half), so position `i`
//! owns words `2 i (k + 1) .. 2 (i + 1) (k + 1)`: category `j` words `2 i (k + 1) + 2j` and
//! `+ 2j + 1`, `u_i` words `2 i (k + 1) + 2k` and `+ 2k + 1`. A decode loop advances each
//! request's offset by `(n + 1) (k + 1)` words per verification step under `Bits32`, twice that
//! under `Bits64`.

use crate::{Error, Stream};

mod chain;
mod sampler;
mod speculative;

pub(crate) use chain::{PenaltyUpdater, TokenProcessor};
pub use chain::{TokenBias, TokenChain, penalty_state, penalty_state_words};
pub use sampler::{TokenFilters, TokenJob, TokenRowParams, TokenSampler, TokenStrategy};
pub(crate) use sampler::{TokenFinalFamily, TokenSampleFamily, TokenSplitFamily};
pub(crate) use speculative::check_speculative;
pub use speculative::{SpeculativeJob, SpeculativeResult, SpeculativeVerifier, stream_words};

/// The most top log-probabilities per row ([`TokenSampling::logprobs`]).
pub const MAX_LOGPROBS: usize = crate::shader::TOKEN_MAX_TOP_N as usize;

/// Which log-probabilities [`crate::Gpu::sample_tokens`] returns (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogprobsMode {
    /// `log_softmax` of the input logits (before any processing, temperature or filter).
    #[default]
    Raw,
    /// The log of the final law the token is drawn from (-inf outside the kept set).
    Processed,
}

/// Per-row token-sampling parameters of [`crate::Gpu::sample_tokens`] and
/// [`crate::cpu::sample_tokens`] (see the module docs for the order the stages apply in). Every
/// stage beyond the temperature is off by default.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenSampling<'a> {
    /// One per row, 0 (greedy: the argmax, ties to the lower index) or a finite normal float > 0
    /// (a subnormal one is an `Err`).
    pub temperature: &'a [f32],
    /// Empty = off for every row; else one per row, 0 = off.
    pub top_k: &'a [u32],
    /// Empty = off; else one per row in (0, 1], 1 = off.
    pub top_p: &'a [f32],
    /// Empty = off; else one per row in [0, 1), 0 = off.
    pub min_p: &'a [f32],
    /// One per row: category `j` of row `r` uses word `j` of `streams[r]`.
    pub streams: &'a [Stream],
    /// `n`, `0..=20`: the top-`n` log-probabilities per row (in [`Self::logprobs_mode`]).
    pub logprobs: usize,
    /// Empty = off; else one per row, finite and > 0; 1 = off.
    pub repetition_penalty: &'a [f32],
    /// Empty = off; else one per row, finite; 0 = off.
    pub frequency_penalty: &'a [f32],
    /// Empty = off; else one per row, finite; 0 = off.
    pub presence_penalty: &'a [f32],
    /// Empty = off; else one per row, finite and >= 0; 0 = off.
    pub top_n_sigma: &'a [f32],
    /// Empty, or one list per row: the request's prompt (tokens < k).
    pub prompt_tokens: &'a [&'a [u32]],
    /// Empty, or one list per row: the tokens generated so far (tokens < k).
    pub output_tokens: &'a [&'a [u32]],
    /// Empty, or one list per row of `(token < k, finite bias)`.
    pub logit_bias: &'a [&'a [(u32, f32)]],
    /// Empty = all allowed; else `rows * ceil(k / 32)` words: bit `j % 32` of word
    /// `r * ceil(k / 32) + j / 32` set = token `j` allowed in row `r`.
    pub allowed: &'a [u32],
    /// Raw (the default) or processed log-probabilities.
    pub logprobs_mode: LogprobsMode,
}

/// The per-row numbers of one row, as [`TokenSampling::row`] gives them (stages off = 0, 1, 0,
/// 1, 0, 0, 0).
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
    /// Repetition penalty (1 = off).
    pub repetition_penalty: f32,
    /// Frequency penalty (0 = off).
    pub frequency_penalty: f32,
    /// Presence penalty (0 = off).
    pub presence_penalty: f32,
    /// Top-nσ (0 = off).
    pub top_n_sigma: f32,
}

impl RowSampling {
    /// Temperature `t`, every other stage off.
    pub fn new(temperature: f32) -> Self {
        RowSampling {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            top_n_sigma: 0.0,
        }
    }
}

/// Words of one row of a token mask over `k` tokens: `ceil(k / 32)`.
pub fn mask_words(k: usize) -> usize {
    k.div_ceil(32)
}

impl TokenSampling<'_> {
    /// Row `r`'s numbers, the stages a row leaves off (or an empty slice) at their off values.
    pub fn row(&self, r: usize) -> RowSampling {
        RowSampling {
            temperature: self.temperature[r],
            top_k: self.top_k.get(r).copied().unwrap_or(0),
            top_p: self.top_p.get(r).copied().unwrap_or(1.0),
            min_p: self.min_p.get(r).copied().unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.get(r).copied().unwrap_or(1.0),
            frequency_penalty: self.frequency_penalty.get(r).copied().unwrap_or(0.0),
            presence_penalty: self.presence_penalty.get(r).copied().unwrap_or(0.0),
            top_n_sigma: self.top_n_sigma.get(r).copied().unwrap_or(0.0),
        }
    }

    /// Whether any row has a mask, a bias or a penalty: the processing kernel runs.
    pub(crate) fn processes(&self) -> bool {
        !self.allowed.is_empty()
            || self.logit_bias.iter().any(|b| !b.is_empty())
            || self.penalized()
    }

    /// Whether any row has a penalty that is not off.
    pub(crate) fn penalized(&self) -> bool {
        self.repetition_penalty.iter().any(|&x| x != 1.0)
            || self.frequency_penalty.iter().any(|&x| x != 0.0)
            || self.presence_penalty.iter().any(|&x| x != 0.0)
    }

    /// Checks the parameters against `rows` rows of `k` tokens: the CPU reference and the slice
    /// level share this one check ([`TokenRowParams::rows`] runs it too; the buffer level reads
    /// parameters on the device, see [`TokenRowParams`]). Errors name the argument and the row.
    pub fn check(&self, rows: usize, k: usize) -> Result<(), Error> {
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
        count("repetition_penalty", self.repetition_penalty.len(), true)?;
        count("frequency_penalty", self.frequency_penalty.len(), true)?;
        count("presence_penalty", self.presence_penalty.len(), true)?;
        count("top_n_sigma", self.top_n_sigma.len(), true)?;
        count("prompt_tokens", self.prompt_tokens.len(), true)?;
        count("output_tokens", self.output_tokens.len(), true)?;
        count("logit_bias", self.logit_bias.len(), true)?;
        if self.logprobs > MAX_LOGPROBS {
            return Err(Error::InvalidArgument(format!(
                "logprobs = {} exceeds {MAX_LOGPROBS}",
                self.logprobs
            )));
        }
        let bad = |name: &str, r: usize, x: f32, what: &str| {
            Err(Error::InvalidArgument(format!(
                "{name}[{r}] = {x} must be {what}"
            )))
        };
        for (r, &t) in self.temperature.iter().enumerate() {
            // A subnormal temperature is out of domain as in the other families (the device may
            // flush it to 0, and l / t overflows for every |l| above ~1e-38 / t).
            if !(t.is_finite() && t >= 0.0) || t.is_subnormal() {
                return bad("temperature", r, t, "0 or a finite normal float > 0");
            }
        }
        for (r, &p) in self.top_p.iter().enumerate() {
            if !(p > 0.0 && p <= 1.0) {
                return bad("top_p", r, p, "in (0, 1]");
            }
        }
        for (r, &p) in self.min_p.iter().enumerate() {
            if !(0.0..1.0).contains(&p) {
                return bad("min_p", r, p, "in [0, 1)");
            }
        }
        for (r, &x) in self.repetition_penalty.iter().enumerate() {
            if !(x.is_finite() && x > 0.0) {
                return bad("repetition_penalty", r, x, "finite and > 0");
            }
        }
        for (name, v) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            for (r, &x) in v.iter().enumerate() {
                if !x.is_finite() {
                    return bad(name, r, x, "finite");
                }
            }
        }
        for (r, &x) in self.top_n_sigma.iter().enumerate() {
            if !(x.is_finite() && x >= 0.0) {
                return bad("top_n_sigma", r, x, "finite and >= 0");
            }
        }
        for (name, lists) in [
            ("prompt_tokens", self.prompt_tokens),
            ("output_tokens", self.output_tokens),
        ] {
            for (r, list) in lists.iter().enumerate() {
                if let Some(i) = list.iter().position(|&t| t as usize >= k) {
                    return Err(Error::InvalidArgument(format!(
                        "{name}[{r}][{i}] = {} is not below k = {k}",
                        list[i]
                    )));
                }
            }
        }
        for (r, list) in self.logit_bias.iter().enumerate() {
            for (i, &(t, b)) in list.iter().enumerate() {
                if t as usize >= k {
                    return Err(Error::InvalidArgument(format!(
                        "logit_bias[{r}][{i}]: token {t} is not below k = {k}"
                    )));
                }
                if !b.is_finite() {
                    return Err(Error::InvalidArgument(format!(
                        "logit_bias[{r}][{i}]: bias {b} for token {t} must be finite"
                    )));
                }
            }
        }
        if !self.allowed.is_empty() && self.allowed.len() != rows * mask_words(k) {
            return Err(Error::InvalidArgument(format!(
                "allowed: {} words, rows x ceil(k / 32) = {rows} x {} needed (or none)",
                self.allowed.len(),
                mask_words(k)
            )));
        }
        Ok(())
    }
}

/// Checks the logits of a `rows x k` token-sampling job: the first row holding a NaN or only
/// -inf is `Error::NanInRow` / `Error::AllMaskedRow`, a +inf logit (whose softmax is undefined)
/// is `InvalidArgument` naming the row. With `processed` (the logits after mask, bias and
/// penalties, [`crate::cpu::processed_logits`]), a row those leave without a finite logit, one
/// they push past f32, and an `l' / t` that overflows f32 are `InvalidArgument` naming the row.
pub(crate) fn check_token_logits(
    logits: impl Iterator<Item = f32>,
    k: usize,
    temperature: &[f32],
    processed: Option<&[f32]>,
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
        if processed.is_none() && x.is_finite() && t > 0.0 && !(x / t).is_finite() {
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
    let overflow = |r: usize, x: f32| {
        let t = temperature[r];
        x.is_finite() && t > 0.0 && !(x / t).is_finite()
    };
    if let Some(p) = processed {
        for (r, row) in p.chunks(k).enumerate() {
            if row.iter().any(|x| x.is_nan() || *x == f32::INFINITY) {
                return Err(Error::InvalidArgument(format!(
                    "row {r}: logit_bias or the penalties push a logit past f32"
                )));
            }
            if row.iter().all(|&x| x == f32::NEG_INFINITY) {
                return Err(Error::InvalidArgument(format!(
                    "row {r}: allowed (the mask) and logit_bias leave no finite logit"
                )));
            }
            if let Some(&x) = row.iter().find(|&&x| overflow(r, x)) {
                return Err(Error::InvalidArgument(format!(
                    "row {r}: processed logit {x} / temperature {} overflows f32",
                    temperature[r]
                )));
            }
        }
    }
    Ok(())
}

/// The result of [`crate::Gpu::sample_tokens`] / [`crate::cpu::sample_tokens`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampledTokens {
    /// One per row.
    pub tokens: Vec<u32>,
    /// One per row: the token's log-probability in the chosen [`LogprobsMode`] (raw:
    /// `log_softmax(l)[token]` of the input logits).
    pub logprobs: Vec<f32>,
    /// `rows * n`: the `n` most likely tokens in that mode, decreasing, ties to the lower index.
    pub top_tokens: Vec<u32>,
    /// `rows * n`: their log-probabilities.
    pub top_logprobs: Vec<f32>,
    /// One per row: how many tokens have a log-probability `>=` the token's, in the chosen mode
    /// (1 = the top).
    pub ranks: Vec<u32>,
}
