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
//! Rows holding a NaN, a +inf, or only -inf logits are an `Err` at the slice level; at the buffer
//! level ([`TokenSampler::record`]) they get [`crate::NO_INDEX`], NaN log-probabilities and a
//! status code.
//!
//! ## The kernel (`shaders/tokens.wgsl`): sort-free, one workgroup per row
//! Every filter keeps a prefix of the row in the order "larger logit, then lower index", so the
//! kernel only has to find the kept set's *last* entry `(key, index)` (key: the order-preserving
//! u32 image of the logit's bits):
//! * **min-p** is a logit threshold: `l >= max + t ln(min_p)` (a key threshold);
//! * **top-k** is a radix select of the k-th entry on `(key, index)`: 4 rounds of 8-bit key
//!   digits then `ceil(log2(k) / 8)` rounds of index digits, each a 256-bin count histogram in
//!   workgroup memory (ties at the cut are resolved to the lower index exactly);
//! * **top-p** after a top-k of at most 512 entries (the usual serving setting) gathers the kept
//!   entries into workgroup memory in one pass, ranks them there (the order is total, so each
//!   entry's rank is the count of entries before it) and walks the sorted masses to the first
//!   prefix that reaches `top_p` times their total. Otherwise it is a radix search on the key
//!   over *mass* `exp((l - max) / t)`: 8 rounds of 4-bit digits (16 sums per invocation,
//!   reduced in workgroup memory) find the key where the mass in order reaches `top_p` times
//!   the kept mass; the ties at that key share one mass, so
//!   `c = ceil(rest / mass)` of them are needed, and the index rounds of the select find the
//!   c-th in index order;
//! * then **one Gumbel-max** over the kept entries; the log-probability pass (max and
//!   `sum exp(l - max)`, online) also keeps per-invocation top-n lists, merged in `n` rounds.
//!
//! [`crate::cpu::token_limit_radix`] is the same search on the CPU (f64 masses); a test checks it
//! keeps exactly the sorted reference's set.
//!
//! Passes over the logits (each reads every logit once):
//!
//! | setting | passes |
//! |---|---|
//! | temperature only, no log-probabilities | 1 (the draw) |
//! | greedy (`t = 0`) | 1 |
//! | log-probabilities (token's or top n) | +1 |
//! | min-p | +1 (the max; shared with the log-probability pass) |
//! | top-k | +4 + `ceil(log2(k) / 8)` (6 at k = 32000, 7 at 131072) |
//! | top-p | +1 (max, shared) + 1 (kept mass) + 8 + `ceil(log2(k) / 8)` |
//! | top-p after a top-k of at most 512 | +1 (max, shared) + 1 (the gather) |
//!
//! So temperature 0.8 with top-k 50 and top-p 0.9 at k = 131072 reads the row 10 times from
//! one workgroup (21 with top-k 1000, whose top-p takes the radix search); the row (512 KiB in f32) stays in cache on a GPU. One workgroup per row
//! suits batches of tens of rows and more; a single huge row uses one workgroup (a split-row
//! path is future work). On llvmpipe (which silently stops an invocation's loops after 65535
//! iterations) [`TokenSampler::record`] refuses rows whose estimate exceeds that (about k > 360k
//! with every filter and 20 top log-probabilities).
//!
//! ## Streams and noise
//! Row `r` uses its own stream `streams[r]`: category `j` uses word `j` ([`Noise::Bits32`]) or
//! words `2j` and `2j + 1` ([`Noise::Bits64`], a Gumbel tail to 45 instead of 22.9). A decode
//! loop advances each request's offset by `k` (or `2k`) per step; the draw never depends on the
//! batch.
//!
//! Speculative verification with `n` drafts gives position `i` (`0..=n`) the `k + 1` noise
//! elements `i (k + 1) + j`: `j < k` the Gumbel noise of category `j`, `j = k` the acceptance
//! uniform `u_i` ([`crate::cpu::speculative_word`]). Under [`Noise::Bits32`] element `e` is word
//! `e`; under [`Noise::Bits64`] words `2e` (high half) and `2e + 1` (low half), so position `i`
//! owns words `2 i (k + 1) .. 2 (i + 1) (k + 1)`: category `j` words `2 i (k + 1) + 2j` and
//! `+ 2j + 1`, `u_i` words `2 i (k + 1) + 2k` and `+ 2k + 1`. A decode loop advances each
//! request's offset by `(n + 1) (k + 1)` words per verification step under `Bits32`, twice that
//! under `Bits64`.

use crate::{Error, Noise, Stream};

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

    /// Checks the parameters against `rows` rows: the CPU reference and the slice level share this
    /// one check ([`TokenRowParams::rows`] runs it too; the buffer level reads parameters on the
    /// device, see [`TokenRowParams`]). Errors name the argument and the row.
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
    for (c, law) in target_probs.chunks(k).enumerate() {
        if !law.iter().any(|&x| x > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "target_probs: row {} position {} has no positive probability",
                c / (n + 1),
                c % (n + 1)
            )));
        }
    }
    Ok((rows, n))
}

// ---------------------------------------------------------------------------------------------
// The GPU family.

use crate::Gpu;
use crate::family::{
    FamilyCore, FamilySpec, KernelFamily, Params, check_no_alias, check_slice, take, uniform_params,
};
use crate::logits::{LogitsSlice, LogitsView, check_shape};
use crate::shader::WG_SIZE;
use std::sync::Arc;
/// One row's parameters on the device (8 words, the layout `shaders/tokens.wgsl` reads): a
/// decode loop keeps `rows` of them in a buffer and updates them on the device (e.g. the stream
/// offsets, advanced by `k` per step) without reading back.
///
/// The kernel never fails on device data: a temperature that is not > 0 (or NaN) samples
/// greedily, `top_k` 0 or >= k, `top_p` >= 1 or NaN, and `min_p` <= 0 or NaN are off, a `top_p`
/// <= 0 keeps one token and a `min_p` >= 1 keeps the largest logit(s).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TokenRowParams {
    /// Temperature (0 = greedy).
    pub temperature: f32,
    /// Top-k (0 = off).
    pub top_k: u32,
    /// Top-p (1 = off).
    pub top_p: f32,
    /// Min-p (0 = off).
    pub min_p: f32,
    /// Low 32 bits of the row's stream seed.
    pub seed_lo: u32,
    /// High 32 bits of the seed.
    pub seed_hi: u32,
    /// Low 32 bits of the row's stream offset (its word 0).
    pub offset_lo: u32,
    /// High 32 bits of the offset.
    pub offset_hi: u32,
}

impl TokenRowParams {
    /// The device form of a row's parameters and stream.
    pub fn new(row: RowSampling, stream: Stream) -> Self {
        TokenRowParams {
            temperature: row.temperature,
            top_k: row.top_k,
            top_p: row.top_p,
            min_p: row.min_p,
            seed_lo: stream.seed as u32,
            seed_hi: (stream.seed >> 32) as u32,
            offset_lo: stream.offset as u32,
            offset_hi: (stream.offset >> 32) as u32,
        }
    }

    /// Every row of a slice-level parameter set (checked first).
    pub fn rows(params: &TokenSampling<'_>, rows: usize) -> Result<Vec<Self>, Error> {
        params.check(rows)?;
        Ok((0..rows)
            .map(|r| TokenRowParams::new(params.row(r), params.streams[r]))
            .collect())
    }
}

/// A buffer-level token-sampling job for [`TokenSampler::record`]. Every slice's offset must be
/// a multiple of 4 and its buffer have `STORAGE` usage.
#[derive(Clone, Copy, Debug)]
pub struct TokenJob<'a> {
    /// `rows x k` logits in any [`LogitsFormat`](crate::LogitsFormat).
    pub logits: LogitsView<'a>,
    /// `rows` [`TokenRowParams`] (32 bytes each).
    pub row_params: wgpu::BufferSlice<'a>,
    /// Receives `rows` u32 tokens ([`crate::NO_INDEX`] for a row with a NaN, a +inf or only
    /// -inf logits).
    pub out: wgpu::BufferSlice<'a>,
    /// Receives `rows` f32: `log_softmax(l)[token]` of the raw logits (NaN for bad rows).
    pub logprobs: Option<wgpu::BufferSlice<'a>>,
    /// `n` of the top-n log-probabilities, `0..=20` (with `top`).
    pub top_n: u32,
    /// Receives `rows * top_n` pairs of words (index, f32 log-probability bits): the `n` largest
    /// raw logits, decreasing, ties to the lower index.
    pub top: Option<wgpu::BufferSlice<'a>>,
    /// Receives `rows` u32 statuses: 0, or one of [`TokenSampler::STATUS_NAN`],
    /// [`TokenSampler::STATUS_POS_INF`], [`TokenSampler::STATUS_ALL_MASKED`].
    pub status: Option<wgpu::BufferSlice<'a>>,
    /// Words per category of the noise.
    pub noise: Noise,
}

uniform_params! {
    struct TokenParams {
        rows: u32,
        k: u32,
        format: u32,
        logit_base: u32,
        row_base: u32,
        token_base: u32,
        logprob_base: u32,
        top_base: u32,
        status_base: u32,
        n_top: u32,
        outputs: u32,
        idx_rounds: u32,
        noise64: u32,
    }
}

const OUT_LOGPROB: u32 = 1;
const OUT_TOP: u32 = 2;
const OUT_STATUS: u32 = 4;

/// The token-sampling kernel (`shaders/tokens.wgsl`): one workgroup per row. Get it with
/// [`Gpu::token_sampler`].
pub struct TokenSampler {
    core: FamilyCore,
    row: wgpu::ComputePipeline,
}

impl KernelFamily for TokenSampler {
    const SPEC: FamilySpec = FamilySpec {
        name: "tokens",
        source: include_str!("../shaders/tokens.wgsl"),
        params: TokenParams::WGSL,
        storage_read_only: &[true, true, false, false, false, false],
        entry_points: &["tokens_row"],
    };

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        let [row] = take(pipelines)?;
        Ok(TokenSampler { core, row })
    }
}
/// Rounds of 8-bit index digits the select needs to tell `k` indices apart.
fn index_rounds(k: u64) -> u32 {
    let bits = 64 - (k.max(1) - 1).leading_zeros();
    bits.div_ceil(8)
}

/// Loop iterations one invocation runs with every filter and `n` top log-probabilities on (see
/// the pass count in `shaders/tokens.wgsl`): passes times elements per invocation, plus the
/// reductions and the select's histogram scans.
fn loop_iterations(k: u64, n: u64, noise: Noise) -> u64 {
    let per_pass = k.div_ceil(u64::from(WG_SIZE));
    let r = u64::from(index_rounds(k));
    // The draw walks 2k words with 64-bit noise.
    let draw = noise.words();
    let passes = 1 + (4 + r) + (1 + 8 + r) + draw;
    // Insertion into the top-n list: at most n moves per element. Top-p within a top-k of at
    // most KEPT_CAP (512) entries: ranks (2 x 512 comparisons) and invocation 0's two walks.
    passes * per_pass + n * per_pass + (8 + 2 * r) * 256 + 20 * 8 * 16 + 4 * 512
}

impl TokenSampler {
    /// Status of a row holding a NaN logit.
    pub const STATUS_NAN: u32 = 1;
    /// Status of a row holding a +inf logit (its softmax is undefined).
    pub const STATUS_POS_INF: u32 = 2;
    /// Status of a row whose logits are all -inf.
    pub const STATUS_ALL_MASKED: u32 = 3;

    /// Records token sampling (see the module docs) into `encoder`; never submits. Every
    /// per-row parameter comes from `job.row_params` on the device, so a decode loop records
    /// step after step without reading back. Rows with a NaN, a +inf or only -inf logits get
    /// [`crate::NO_INDEX`] and a status (no host scan). Bad views are `Err` naming the argument.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &TokenJob<'_>,
    ) -> Result<(), Error> {
        let LogitsView { rows, k, .. } = job.logits;
        job.logits.check("logits")?;
        if k > u64::from(u32::MAX) / 2 {
            return Err(Error::TooLarge(format!("logits: rows of {k}")));
        }
        let n = u64::from(job.top_n);
        if n > MAX_LOGPROBS as u64 || n > k {
            return Err(Error::InvalidArgument(format!(
                "top_n = {n} must be at most {MAX_LOGPROBS} and at most k = {k}"
            )));
        }
        if n > 0 && job.top.is_none() {
            return Err(Error::InvalidArgument(format!(
                "top: top_n = {n} needs a buffer for the top log-probabilities"
            )));
        }
        check_slice("row_params", job.row_params, rows * 32)?;
        check_slice("out", job.out, rows * 4)?;
        if let Some(s) = job.logprobs {
            check_slice("logprobs", s, rows * 4)?;
        }
        if let Some(s) = job.top {
            check_slice("top", s, rows * n * 8)?;
        }
        if let Some(s) = job.status {
            check_slice("status", s, rows * 4)?;
        }
        check_no_alias(
            &[
                ("logits", Some(job.logits.data)),
                ("row_params", Some(job.row_params)),
            ],
            &[
                ("out", Some(job.out)),
                ("logprobs", job.logprobs),
                ("top", job.top),
                ("status", job.status),
            ],
        )?;
        if rows == 0 {
            return Ok(());
        }
        self.core.check_loop_budget(
            loop_iterations(k, n, job.noise),
            &format!("token sampling of rows of {k} logits"),
        )?;
        // Whole rows per dispatch: each window must fit one binding.
        let per_row = (k * job.logits.format.bytes())
            .div_ceil(4)
            .max(2 * n)
            .max(8);
        let rows_per_dispatch = self.core.rows_per_dispatch(rows, per_row)?;
        self.core.scoped(|| {
            let mut r0 = 0;
            while r0 < rows {
                let m = (rows - r0).min(rows_per_dispatch);
                self.record_dispatch(encoder, job, r0, m)?;
                r0 += m;
            }
            Ok(())
        })
    }

    fn record_dispatch<'a>(
        &'a self,
        encoder: &mut wgpu::CommandEncoder,
        job: &TokenJob<'a>,
        r0: u64,
        m: u64,
    ) -> Result<(), Error> {
        let core = &self.core;
        let (k, n) = (job.logits.k, u64::from(job.top_n));
        let logits = core.window(job.logits.data, r0 * k, m * k, job.logits.format.bytes());
        let rowp = core.window(job.row_params, r0 * 8, m * 8, 4);
        let tokens = core.window(job.out, r0, m, 4);
        let opt = |s: Option<wgpu::BufferSlice<'a>>, per: u64, binding: usize| match s {
            Some(s) if per > 0 => (core.window(s, r0 * per, m * per, 4), true),
            _ => (core.unused(binding), false),
        };
        let (lp, has_lp) = opt(job.logprobs, 1, 4);
        let (top, has_top) = opt(job.top, 2 * n, 5);
        let (st, has_st) = opt(job.status, 1, 6);
        let outputs = if has_lp { OUT_LOGPROB } else { 0 }
            | if has_top { OUT_TOP } else { 0 }
            | if has_st { OUT_STATUS } else { 0 };
        let params = TokenParams {
            rows: m as u32,
            k: k as u32,
            format: job.logits.format.code(),
            logit_base: logits.base,
            row_base: rowp.base,
            token_base: tokens.base,
            logprob_base: lp.base,
            top_base: top.base,
            status_base: st.base,
            n_top: n as u32,
            outputs,
            idx_rounds: index_rounds(k),
            noise64: u32::from(job.noise == Noise::Bits64),
        };
        core.dispatch(
            encoder,
            &params,
            &[
                logits.binding,
                rowp.binding,
                tokens.binding,
                lp.binding,
                top.binding,
                st.binding,
            ],
            &[(&self.row, m)],
        )
    }
}

impl Gpu {
    /// The token-sampling kernel of this device (built on first use).
    pub fn token_sampler(&self) -> Result<Arc<TokenSampler>, Error> {
        self.family::<TokenSampler>()
    }
    /// Token sampling for language models (blocking): per row of `k` f32 logits, temperature,
    /// min-p, top-k and top-p, then a Gumbel-max draw over the kept set from the row's own
    /// stream, and the raw log-probabilities (see the [`TokenSampler`](crate::TokenSampler) docs for the
    /// semantics, [`crate::cpu::sample_tokens`] for the reference).
    ///
    /// `Err` naming the argument for parameters out of their domain or counts that are not one
    /// per row, `logprobs > 20` or `> k`; naming the row for a NaN, a +inf, only -inf logits, or
    /// an `l / t` that overflows f32.
    ///
    /// ```
    /// use gumbel_wgpu::{Gpu, Stream, TokenSampling};
    /// let gpu = Gpu::new()?;
    /// let logits = [0.0, 2.0, 1.0, -1.0, 3.0, 0.5];
    /// let params = TokenSampling {
    ///     temperature: &[0.8, 0.0],
    ///     top_k: &[2, 0],
    ///     streams: &[Stream::new(7), Stream::new(8)],
    ///     logprobs: 1,
    ///     ..Default::default()
    /// };
    /// let out = gpu.sample_tokens(&logits, 3, &params)?;
    /// assert!(out.tokens[0] == 1 || out.tokens[0] == 2); // top-2 of row 0
    /// assert_eq!(out.tokens[1], 1); // greedy
    /// assert_eq!(out.top_tokens, [1, 1]);
    /// # Ok::<(), gumbel_wgpu::Error>(())
    /// ```
    pub fn sample_tokens(
        &self,
        logits: &[f32],
        k: usize,
        params: &TokenSampling<'_>,
    ) -> Result<SampledTokens, Error> {
        self.sample_tokens_with(LogitsSlice::F32(logits), k, params, Noise::Bits32)
    }

    /// [`Gpu::sample_tokens`] with f32, f16 or bf16 logits and a choice of [`Noise`].
    pub fn sample_tokens_with(
        &self,
        logits: LogitsSlice<'_>,
        k: usize,
        params: &TokenSampling<'_>,
        noise: Noise,
    ) -> Result<SampledTokens, Error> {
        let rows = check_shape(logits.len(), k)?;
        let row_params = TokenRowParams::rows(params, rows)?;
        let n = params.logprobs;
        if n > k {
            return Err(Error::InvalidArgument(format!(
                "logprobs = {n} exceeds k = {k}"
            )));
        }
        check_token_logits(logits.values(), k, params.temperature)?;
        if rows == 0 {
            return Ok(SampledTokens::default());
        }
        let kernels = self.token_sampler()?;
        let buf = self.pooled_upload("logits", &logits.words())?;
        let rp = self.pooled_upload("row params", &row_params)?;
        // One output buffer, read back at once: tokens, log-probabilities, then the top pairs.
        let words = rows * (2 + 2 * n);
        let out = self.pooled_storage("tokens", words as u64 * 4)?;
        let at =
            |w0: usize, len: usize| out.slice(w0 as u64 * 4..(w0 + len).max(w0 + 1) as u64 * 4);
        let job = TokenJob {
            logits: LogitsView {
                data: buf.slice(..),
                format: logits.format(),
                rows: rows as u64,
                k: k as u64,
            },
            row_params: rp.slice(..),
            out: at(0, rows),
            logprobs: Some(at(rows, rows)),
            top_n: n as u32,
            top: (n > 0).then(|| at(2 * rows, 2 * rows * n)),
            status: None,
            noise,
        };
        let w: Vec<u32> = self.run_and_read(|enc| kernels.record(enc, &job), &out, words)?;
        let pairs = &w[2 * rows..];
        Ok(SampledTokens {
            tokens: w[..rows].to_vec(),
            logprobs: w[rows..2 * rows]
                .iter()
                .map(|&b| f32::from_bits(b))
                .collect(),
            top_tokens: pairs.iter().step_by(2).copied().collect(),
            top_logprobs: pairs
                .iter()
                .skip(1)
                .step_by(2)
                .map(|&b| f32::from_bits(b))
                .collect(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Speculative verification.
/// A stream as the 4 words a device buffer of streams holds per row: seed lo, seed hi, offset
/// lo, offset hi.
pub fn stream_words(stream: Stream) -> [u32; 4] {
    [
        stream.seed as u32,
        (stream.seed >> 32) as u32,
        stream.offset as u32,
        (stream.offset >> 32) as u32,
    ]
}

/// A buffer-level speculative verification job for [`SpeculativeVerifier::record`] (see
/// [`crate::cpu::verify_speculative`] for the rule and the stream words used).
#[derive(Clone, Copy, Debug)]
pub struct SpeculativeJob<'a> {
    /// Rows.
    pub rows: u64,
    /// Drafts per row.
    pub n: u64,
    /// Categories.
    pub k: u64,
    /// `rows * n` u32 draft tokens (a token >= k ends its row: nothing is emitted, the slot
    /// holds [`crate::NO_INDEX`]).
    pub draft_tokens: wgpu::BufferSlice<'a>,
    /// `rows x n x k` f32 draft probabilities.
    pub draft_probs: wgpu::BufferSlice<'a>,
    /// `rows x (n + 1) x k` f32 target probabilities.
    pub target_probs: wgpu::BufferSlice<'a>,
    /// `rows` streams, 4 words each ([`stream_words`]).
    pub streams: wgpu::BufferSlice<'a>,
    /// Receives `rows` u32 counts of accepted drafts.
    pub accepted: wgpu::BufferSlice<'a>,
    /// Receives `rows * (n + 1)` u32: accepted drafts, the emitted token, then `NO_INDEX`.
    pub tokens: wgpu::BufferSlice<'a>,
    /// Words per noise element: position `i` owns elements `i (k + 1) ..= i (k + 1) + k` of the
    /// row's stream (the categories' Gumbel noise, then the acceptance uniform), word `e` each
    /// under [`Noise::Bits32`], words `2e` and `2e + 1` under [`Noise::Bits64`]; a step uses
    /// `(n + 1) (k + 1)` words per row, or twice that (module docs, "Streams and noise").
    pub noise: Noise,
}

uniform_params! {
    struct SpecParams {
        rows: u32,
        k: u32,
        n: u32,
        draft_base: u32,
        q_base: u32,
        p_base: u32,
        stream_base: u32,
        accepted_base: u32,
        out_base: u32,
        noise64: u32,
    }
}

/// The speculative verification kernel (`shaders/speculative.wgsl`): one workgroup per row.
pub struct SpeculativeVerifier {
    core: FamilyCore,
    row: wgpu::ComputePipeline,
}

impl KernelFamily for SpeculativeVerifier {
    const SPEC: FamilySpec = FamilySpec {
        name: "speculative",
        source: include_str!("../shaders/speculative.wgsl"),
        params: SpecParams::WGSL,
        storage_read_only: &[true, true, true, true, false, false],
        entry_points: &["verify_row"],
    };

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        let [row] = take(pipelines)?;
        Ok(SpeculativeVerifier { core, row })
    }
}

impl SpeculativeVerifier {
    /// Records the verification of `job.rows` rows into `encoder`; never submits. Probabilities
    /// are read as they are (the slice level checks them; here a NaN or negative one is treated
    /// as 0 in the draws).
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &SpeculativeJob<'_>,
    ) -> Result<(), Error> {
        let (rows, n, k) = (job.rows, job.n, job.k);
        if k == 0 {
            return Err(Error::InvalidArgument(
                "k (categories per row) must be at least 1".into(),
            ));
        }
        // Words per noise element: the shader's word indices within a row, up to
        // per * (n + 1) * (k + 1) - 1, must fit one u32.
        let per = job.noise.words();
        if (n + 1)
            .checked_mul(k + 1)
            .and_then(|w| w.checked_mul(per))
            .is_none_or(|w| w > u64::from(u32::MAX))
        {
            return Err(Error::TooLarge(format!(
                "{per} x (n + 1) x (k + 1) = {per} x {} x {} stream words per row exceed 2^32",
                n + 1,
                k + 1
            )));
        }
        if rows > u64::from(u32::MAX) {
            return Err(Error::TooLarge(format!("{rows} rows in one job")));
        }
        check_slice("draft_tokens", job.draft_tokens, rows * n * 4)?;
        check_slice("draft_probs", job.draft_probs, rows * n * k * 4)?;
        check_slice("target_probs", job.target_probs, rows * (n + 1) * k * 4)?;
        check_slice("streams", job.streams, rows * 16)?;
        check_slice("accepted", job.accepted, rows * 4)?;
        check_slice("tokens", job.tokens, rows * (n + 1) * 4)?;
        check_no_alias(
            &[
                ("draft_tokens", Some(job.draft_tokens)),
                ("draft_probs", Some(job.draft_probs)),
                ("target_probs", Some(job.target_probs)),
                ("streams", Some(job.streams)),
            ],
            &[
                ("accepted", Some(job.accepted)),
                ("tokens", Some(job.tokens)),
            ],
        )?;
        if rows == 0 {
            return Ok(());
        }
        // Two draws at most, each over per * k words: up to (per * k + 6) / 4 blocks of 4 lanes
        // over the workgroup, plus the reduction (8 tree levels); then the acceptance walk.
        let blocks = (per * k + 6) / 4;
        self.core.check_loop_budget(
            2 * (blocks.div_ceil(u64::from(WG_SIZE)) * 4 + 8) + n,
            &format!("verification of {n} drafts over {k} categories"),
        )?;
        let rows_per_dispatch = self.core.rows_per_dispatch(rows, (n + 1) * k + 4)?;
        let core = &self.core;
        core.scoped(|| {
            let mut r0 = 0;
            while r0 < rows {
                let m = (rows - r0).min(rows_per_dispatch);
                let drafts = core.window(job.draft_tokens, r0 * n, m * n, 4);
                let q = core.window(job.draft_probs, r0 * n * k, m * n * k, 4);
                let p = core.window(job.target_probs, r0 * (n + 1) * k, m * (n + 1) * k, 4);
                let streams = core.window(job.streams, r0 * 4, m * 4, 4);
                let acc = core.window(job.accepted, r0, m, 4);
                let out = core.window(job.tokens, r0 * (n + 1), m * (n + 1), 4);
                let params = SpecParams {
                    rows: m as u32,
                    k: k as u32,
                    n: n as u32,
                    draft_base: drafts.base,
                    q_base: q.base,
                    p_base: p.base,
                    stream_base: streams.base,
                    accepted_base: acc.base,
                    out_base: out.base,
                    noise64: u32::from(job.noise == Noise::Bits64),
                };
                core.dispatch(
                    encoder,
                    &params,
                    &[
                        drafts.binding,
                        q.binding,
                        p.binding,
                        streams.binding,
                        acc.binding,
                        out.binding,
                    ],
                    &[(&self.row, m)],
                )?;
                r0 += m;
            }
            Ok(())
        })
    }
}

impl Gpu {
    /// The speculative verification kernel of this device (built on first use).
    pub fn speculative_verifier(&self) -> Result<Arc<SpeculativeVerifier>, Error> {
        self.family::<SpeculativeVerifier>()
    }
    /// Speculative verification (blocking; Leviathan et al. 2023, Chen et al. 2023): per row,
    /// accept draft `i` while `u_i < p_i(d_i) / q_i(d_i)`, then emit a draw from
    /// `normalise(max(0, p_i - q_i))` at the first rejection, or a bonus draw from `p_n` after `n`
    /// acceptances. Whatever the draft law, the first emitted token follows `p_0`.
    /// `rows = streams.len()`, `n = draft_tokens.len() / rows`; `draft_probs` is `rows x n x k`,
    /// `target_probs` `rows x (n + 1) x k` (laws; they need not sum to 1). See
    /// [`crate::cpu::verify_speculative`] for the stream words each decision uses
    /// ([`Noise::Bits32`]; [`Gpu::verify_speculative_with`] for a choice).
    ///
    /// `Err` naming the argument for lengths that do not fit, a draft token `>= k`, and negative,
    /// NaN or infinite probabilities.
    pub fn verify_speculative(
        &self,
        draft_tokens: &[u32],
        draft_probs: &[f32],
        target_probs: &[f32],
        k: usize,
        streams: &[Stream],
    ) -> Result<SpeculativeResult, Error> {
        self.verify_speculative_with(
            draft_tokens,
            draft_probs,
            target_probs,
            k,
            streams,
            Noise::Bits32,
        )
    }

    /// [`Gpu::verify_speculative`] with a choice of [`Noise`]: under [`Noise::Bits64`] every
    /// noise element takes two stream words (see the module docs, "Streams and noise", and
    /// [`crate::cpu::verify_speculative_with`], its reference).
    pub fn verify_speculative_with(
        &self,
        draft_tokens: &[u32],
        draft_probs: &[f32],
        target_probs: &[f32],
        k: usize,
        streams: &[Stream],
        noise: Noise,
    ) -> Result<SpeculativeResult, Error> {
        let (rows, n) =
            check_speculative(draft_tokens, draft_probs, target_probs, k, streams.len())?;
        let kernels = self.speculative_verifier()?;
        let words: Vec<u32> = streams.iter().flat_map(|&s| stream_words(s)).collect();
        // Buffers of at least one word: n = 0 leaves the drafts empty.
        let d = self.pooled_upload("draft tokens", draft_tokens)?;
        let q = self.pooled_upload("draft probs", draft_probs)?;
        let p = self.pooled_upload("target probs", target_probs)?;
        let s = self.pooled_upload("streams", &words)?;
        // One output buffer: the accepted counts, then the tokens.
        let len = rows + rows * (n + 1);
        let out = self.pooled_storage("speculative out", len as u64 * 4)?;
        fn nonempty(b: &wgpu::Buffer, bytes: usize) -> wgpu::BufferSlice<'_> {
            b.slice(..bytes.max(4) as u64)
        }
        let job = SpeculativeJob {
            rows: rows as u64,
            n: n as u64,
            k: k as u64,
            draft_tokens: nonempty(&d, draft_tokens.len() * 4),
            draft_probs: nonempty(&q, draft_probs.len() * 4),
            target_probs: nonempty(&p, target_probs.len() * 4),
            streams: nonempty(&s, words.len() * 4),
            accepted: out.slice(..rows as u64 * 4),
            tokens: out.slice(rows as u64 * 4..len as u64 * 4),
            noise,
        };
        let w: Vec<u32> = self.run_and_read(|enc| kernels.record(enc, &job), &out, len)?;
        Ok(SpeculativeResult {
            accepted: w[..rows].to_vec(),
            tokens: w[rows..].to_vec(),
        })
    }
}
