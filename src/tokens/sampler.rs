//! The sampler (`shaders/tokens.wgsl`) and the token-sampling pipeline around it: the buffer
//! level ([`TokenSampler::record`]: processing, then sampling; the penalty-state update; the
//! final law) and the slice level ([`Gpu::sample_tokens`], [`Gpu::token_probabilities`]).

use super::chain::{PenaltyUpdater, TokenChain, TokenProcessor, penalty_state_words};
use super::{
    LogprobsMode, MAX_LOGPROBS, RowSampling, SampledTokens, TokenSampling, check_token_logits,
};
use crate::family::{
    ALIGN_WORDS, FamilyCore, FamilySpec, KernelFamily, check_no_alias, check_slice, take,
    uniform_params,
};
use crate::logits::{LogitsSlice, LogitsView, check_shape};
use crate::shader::WG_SIZE;
use crate::{Error, Gpu, Noise, Stream};
use std::sync::Arc;

/// One row's parameters on the device (12 words, the layout `shaders/tokens.wgsl` reads): a
/// decode loop keeps `rows` of them in a buffer and updates them on the device (e.g. the stream
/// offsets, advanced by `k` per step) without reading back.
///
/// The kernel never produces garbage from device data: `top_k` 0 or >= k is off, and a row whose
/// temperature is negative, subnormal or not finite, whose `top_p` is outside (0, 1], `min_p` outside
/// [0, 1), repetition penalty not finite and > 0, frequency or presence penalty not finite, or
/// `top_n_sigma` negative or not finite gets [`crate::NO_INDEX`], NaN log-probabilities and
/// [`TokenSampler::STATUS_BAD_PARAMS`].
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
    /// Repetition penalty (1 = off; applied only with a [`TokenChain::penalty_state`]).
    pub repetition_penalty: f32,
    /// Frequency penalty (0 = off; idem).
    pub frequency_penalty: f32,
    /// Presence penalty (0 = off; idem).
    pub presence_penalty: f32,
    /// Top-nσ (0 = off).
    pub top_n_sigma: f32,
}

impl TokenRowParams {
    /// Bytes per row on the device.
    pub const BYTES: u64 = 48;

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
            repetition_penalty: row.repetition_penalty,
            frequency_penalty: row.frequency_penalty,
            presence_penalty: row.presence_penalty,
            top_n_sigma: row.top_n_sigma,
        }
    }

    /// Every row of a slice-level parameter set over `k` tokens (checked first).
    pub fn rows(params: &TokenSampling<'_>, rows: usize, k: usize) -> Result<Vec<Self>, Error> {
        params.check(rows, k)?;
        Ok((0..rows)
            .map(|r| TokenRowParams::new(params.row(r), params.streams[r]))
            .collect())
    }
}

/// A buffer-level token-sampling job for [`TokenSampler::record`]. Every slice's offset must be
/// a multiple of 4 and its buffer have `STORAGE` usage. [`TokenJob::new`] makes one with every
/// optional part off.
#[derive(Clone, Copy, Debug)]
pub struct TokenJob<'a> {
    /// `rows x k` logits in any [`LogitsFormat`](crate::LogitsFormat).
    pub logits: LogitsView<'a>,
    /// `rows` [`TokenRowParams`] (48 bytes each).
    pub row_params: wgpu::BufferSlice<'a>,
    /// Receives `rows` u32 tokens ([`crate::NO_INDEX`] for a bad row: see the statuses).
    pub out: wgpu::BufferSlice<'a>,
    /// Receives `rows` f32: the token's log-probability in [`Self::logprobs_mode`] (NaN for bad
    /// rows).
    pub logprobs: Option<wgpu::BufferSlice<'a>>,
    /// `n` of the top-n log-probabilities, `0..=20` (with `top`).
    pub top_n: u32,
    /// Receives `rows * top_n` pairs of words (index, f32 log-probability bits): the `n` most
    /// likely tokens in [`Self::logprobs_mode`], decreasing, ties to the lower index.
    pub top: Option<wgpu::BufferSlice<'a>>,
    /// Receives `rows` u32 statuses: 0, or one of [`TokenSampler::STATUS_NAN`],
    /// [`TokenSampler::STATUS_POS_INF`], [`TokenSampler::STATUS_ALL_MASKED`],
    /// [`TokenSampler::STATUS_BAD_PARAMS`].
    pub status: Option<wgpu::BufferSlice<'a>>,
    /// Words per category of the noise.
    pub noise: Noise,
    /// The processing stages' device inputs (mask, bias, penalty state): all `None` = off.
    pub chain: TokenChain<'a>,
    /// Receives `rows` u32 ranks of the tokens in [`Self::logprobs_mode`] (0 for bad rows).
    pub ranks: Option<wgpu::BufferSlice<'a>>,
    /// Raw or processed log-probabilities.
    pub logprobs_mode: LogprobsMode,
    /// The filters the rows may use ([`TokenFilters::ALL`] by default): with few long rows,
    /// naming only those used saves the split path's dispatches of the others.
    pub filters: TokenFilters,
    /// How rows map to workgroups (hidden: [`TokenStrategy::Auto`] unless a test forces a path).
    #[doc(hidden)]
    pub strategy: TokenStrategy,
}

/// The filters the rows of a [`TokenJob`] may use. With few long rows the sampler spreads each
/// row over many workgroups and runs one dispatch per pass: it records only the passes of the
/// filters allowed here (the rows' parameters are device data it never reads). A row whose
/// parameters use a filter the job leaves out gets [`crate::NO_INDEX`] and
/// [`TokenSampler::STATUS_BAD_PARAMS`], on either path. [`TokenFilters::ALL`] (the default)
/// allows every filter; [`TokenFilters::of`] exactly those given rows use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenFilters {
    /// Top-k (`0 < top_k < k`).
    pub top_k: bool,
    /// Top-p after a top-k of at most 512 (sorted in workgroup memory: one pass).
    pub top_p_in_top_k: bool,
    /// Any other top-p (rounds of mass sums: 8 passes and up to `ceil(log2(k) / 8)` more).
    pub top_p: bool,
    /// Min-p.
    pub min_p: bool,
    /// Top-nσ.
    pub top_n_sigma: bool,
}

impl Default for TokenFilters {
    fn default() -> Self {
        TokenFilters::ALL
    }
}

impl TokenFilters {
    /// Every filter allowed.
    pub const ALL: TokenFilters = TokenFilters {
        top_k: true,
        top_p_in_top_k: true,
        top_p: true,
        min_p: true,
        top_n_sigma: true,
    };
    /// No filter (temperature and greedy rows only).
    pub const NONE: TokenFilters = TokenFilters {
        top_k: false,
        top_p_in_top_k: false,
        top_p: false,
        min_p: false,
        top_n_sigma: false,
    };

    /// The filters `rows` use over `k` logits (greedy rows use none).
    pub fn of(rows: &[TokenRowParams], k: u64) -> Self {
        let mut f = TokenFilters::NONE;
        for r in rows.iter().filter(|r| r.temperature > 0.0) {
            let top_k = r.top_k > 0 && u64::from(r.top_k) < k;
            let top_p = r.top_p < 1.0;
            f.top_k |= top_k;
            f.top_p_in_top_k |= top_p && top_k && r.top_k <= crate::shader::TOKEN_KEPT_CAP;
            f.top_p |= top_p && !(top_k && r.top_k <= crate::shader::TOKEN_KEPT_CAP);
            f.min_p |= r.min_p > 0.0;
            f.top_n_sigma |= r.top_n_sigma > 0.0;
        }
        f
    }

    fn bits(self) -> u32 {
        u32::from(self.top_k)
            | u32::from(self.top_p_in_top_k) << 1
            | u32::from(self.top_p) << 2
            | u32::from(self.min_p) << 3
            | u32::from(self.top_n_sigma) << 4
    }
}

/// How the token sampler maps rows to the GPU. [`TokenStrategy::Auto`] picks from the shape
/// ([`TokenSampler::strategy_for`]); the others force a path, so tests can compare them: both
/// give the same results bit for bit.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TokenStrategy {
    /// Chosen from rows and k.
    #[default]
    Auto,
    /// One workgroup per row, every pass in one dispatch.
    RowPerWorkgroup,
    /// Each row spread over `chunks` workgroups (0: chosen from the shape), one dispatch per
    /// pass, then one to write the outputs.
    SplitRow {
        /// Workgroups per row; 0 picks a count from the shape.
        chunks: u32,
    },
}

impl<'a> TokenJob<'a> {
    /// A job with every optional input and output off ([`Noise::Bits32`], raw log-probabilities).
    pub fn new(
        logits: LogitsView<'a>,
        row_params: wgpu::BufferSlice<'a>,
        out: wgpu::BufferSlice<'a>,
    ) -> Self {
        TokenJob {
            logits,
            row_params,
            out,
            logprobs: None,
            top_n: 0,
            top: None,
            status: None,
            noise: Noise::Bits32,
            chain: TokenChain::default(),
            ranks: None,
            logprobs_mode: LogprobsMode::Raw,
            filters: TokenFilters::ALL,
            strategy: TokenStrategy::Auto,
        }
    }
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
        processed: u32,
        proc_base: u32,
        aux_base: u32,
        mode: u32,
        stride: u32,
        filters: u32,
        split: u32,
        step: u32,
        prev: u32,
        seq: u32,
        nseq: u32,
        state_base: u32,
        state_stride: u32,
    }
}

const OUT_LOGPROB: u32 = 1;
const OUT_TOP: u32 = 2;
const OUT_STATUS: u32 = 4;
const OUT_RANK: u32 = 8;
const OUT_LAW: u32 = 16;

/// The sampler kernel (`shaders/tokens.wgsl`): one workgroup per row.
pub(crate) struct TokenSampleFamily {
    core: FamilyCore,
    row: wgpu::ComputePipeline,
}

impl KernelFamily for TokenSampleFamily {
    const SPEC: FamilySpec = FamilySpec {
        name: "tokens",
        source: include_str!("../../shaders/tokens.wgsl"),
        params: <TokenParams as crate::family::Params>::WGSL,
        storage_read_only: &[true, true, false, false, false, false, true, false],
        entry_points: &["tokens_row"],
        stepped: false,
    };

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        let [row] = take(pipelines)?;
        Ok(TokenSampleFamily { core, row })
    }
}

/// The split path's passes (`shaders/tokens_split.wgsl`): each row over many workgroups, one
/// dispatch per pass. The rows' state is its core's scratch buffer.
pub(crate) struct TokenSplitFamily {
    core: FamilyCore,
    pass: wgpu::ComputePipeline,
}

impl KernelFamily for TokenSplitFamily {
    const SPEC: FamilySpec = FamilySpec {
        name: "tokens_split",
        source: include_str!("../../shaders/tokens_split.wgsl"),
        params: <TokenParams as crate::family::Params>::WGSL,
        storage_read_only: &[true, true, true, false, false],
        entry_points: &["tokens_split"],
        stepped: true,
    };

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        let [pass] = take(pipelines)?;
        Ok(TokenSplitFamily { core, pass })
    }
}

/// The split path's last step (`shaders/tokens_final.wgsl`): the outputs.
pub(crate) struct TokenFinalFamily {
    core: FamilyCore,
    row: wgpu::ComputePipeline,
}

impl KernelFamily for TokenFinalFamily {
    const SPEC: FamilySpec = FamilySpec {
        name: "tokens_final",
        source: include_str!("../../shaders/tokens_final.wgsl"),
        params: <TokenParams as crate::family::Params>::WGSL,
        storage_read_only: &[true, false, false, false, false, false],
        entry_points: &["tokens_final"],
        stepped: false,
    };

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        let [row] = take(pipelines)?;
        Ok(TokenFinalFamily { core, row })
    }
}

// Pass ids (twins of P_* in shaders/common/token_core.wgsl) and the split state's layout.
const P_STATS: u32 = 0;
const P_MEAN: u32 = 1;
const P_VAR: u32 = 2;
const P_TOPK: u32 = 3;
const P_GATHER: u32 = 10;
const P_TOPP: u32 = 11;
const P_TIES: u32 = 19;
const P_DRAW: u32 = 23;
const P_POST: u32 = 24;
const N_PASSES: u32 = 25;

/// The passes the split path records for a job over rows of `k`: those of the filters the job
/// allows (the per-row settings live on the device), the max pass when they or the outputs need
/// it, only the select rounds `k` has indices for, and the post pass for ranks or the law.
fn split_passes(k: u64, f: TokenFilters, logprobs: bool, post: bool) -> Vec<u32> {
    let ir = index_rounds(k);
    let stats = f != TokenFilters::NONE || logprobs || post;
    (P_STATS..N_PASSES)
        .filter(|&p| match p {
            P_STATS => stats,
            P_MEAN | P_VAR => f.top_n_sigma,
            P_GATHER => f.top_k || f.top_p_in_top_k,
            P_DRAW => true,
            P_POST => post,
            p if (P_TOPK..P_GATHER).contains(&p) => f.top_k && p - P_TOPK < 3 + ir,
            p if (P_TOPP..P_TIES).contains(&p) => f.top_p,
            p => f.top_p && p - P_TIES < ir,
        })
        .collect()
}

/// Words of one row's split state for `passes` dispatches and `chunks` workgroups per row.
fn split_state_words(passes: u64, chunks: u64) -> u64 {
    use crate::shader::{TOKEN_DEC_WORDS, TOKEN_KEPT_CAP, TOKEN_REGION_WORDS, TOKEN_SLOT_WORDS};
    2 * u64::from(TOKEN_DEC_WORDS)
        + passes * u64::from(TOKEN_REGION_WORDS)
        + 2 * u64::from(TOKEN_KEPT_CAP)
        + chunks * u64::from(TOKEN_SLOT_WORDS)
}

/// The token-sampling pipeline of a device: the processing kernel, the sampler and the
/// penalty-state update (`shaders/token_process.wgsl`, `tokens.wgsl`, `penalty_update.wgsl`).
/// Get it with [`Gpu::token_sampler`].
pub struct TokenSampler {
    sample: Arc<TokenSampleFamily>,
    split: Arc<TokenSplitFamily>,
    last: Arc<TokenFinalFamily>,
    process: Arc<TokenProcessor>,
    update: Arc<PenaltyUpdater>,
}

/// Rounds of 8-bit index digits the select needs to tell `k` indices apart.
fn index_rounds(k: u64) -> u32 {
    let bits = 64 - (k.max(1) - 1).leading_zeros();
    bits.div_ceil(8)
}

/// Loop iterations one invocation runs with every stage and `n` top log-probabilities on (see
/// the passes in `shaders/common/token_core.wgsl`), its row (or, with `chunks` above 0, its part
/// of a split row) in one workgroup: passes times elements per invocation, the top-n insertions, the
/// decisions (the select's histogram scans, the gathered set's ranks and walks) and, on the split
/// path, the merges of the workgroups' slots.
fn loop_iterations(k: u64, n: u64, noise: Noise, chunks: u64) -> u64 {
    let part = k.div_ceil(chunks.max(1));
    let per_pass = part.div_ceil(u64::from(WG_SIZE));
    let r = u64::from(index_rounds(k));
    // The max, sigma's two, top-k's select (the first round rides on the max), the gather,
    // top-p's 8 mass rounds and tie rounds, the draw (2k words with 64-bit noise), the post.
    let passes = 1 + 2 + (3 + r) + 1 + 8 + r + noise.words() + 1;
    // Insertion into the top-n list: at most n moves per element.
    let lists = n * per_pass;
    let decisions = (4 + 2 * r) * 256 + 8 * 2 * 16 + 5 * u64::from(crate::shader::TOKEN_KEPT_CAP);
    let merges = if chunks > 0 {
        chunks.div_ceil(u64::from(WG_SIZE)) * (2 + n * n)
    } else {
        0
    };
    passes * per_pass + lists + decisions + merges
}

impl TokenSampler {
    /// Status of a row holding a NaN logit.
    pub const STATUS_NAN: u32 = 1;
    /// Status of a row holding a +inf logit (its softmax is undefined).
    pub const STATUS_POS_INF: u32 = 2;
    /// Status of a row left without a finite logit (all -inf, or by the mask and bias).
    pub const STATUS_ALL_MASKED: u32 = 3;
    /// Status of a row whose device parameters are out of their domain ([`TokenRowParams`]), or
    /// whose bias list is (row starts out of order or past the entries, a token `>= k`, a bias
    /// that is not finite).
    pub const STATUS_BAD_PARAMS: u32 = 4;

    /// Records token sampling (see the module docs) into `encoder`; never submits. Every
    /// per-row parameter comes from device buffers, so a decode loop records step after step
    /// without reading back; with a [`TokenChain`] the processing kernel runs first. Rows with
    /// a NaN, a +inf or no finite logit, or with bad parameters, get [`crate::NO_INDEX`] and a
    /// status (no host scan). Bad views are `Err` naming the argument.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &TokenJob<'_>,
    ) -> Result<(), Error> {
        self.record_inner(encoder, job, None)
    }

    /// [`TokenSampler::record`] that also writes the final law each row is drawn from into
    /// `probabilities` (`rows x k` f32: 0 outside the kept set, one-hot for greedy rows, NaN for
    /// bad rows). `job.ranks` must be `None` (the law takes its place in the kernel).
    pub fn record_probabilities(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &TokenJob<'_>,
        probabilities: wgpu::BufferSlice<'_>,
    ) -> Result<(), Error> {
        if job.ranks.is_some() {
            return Err(Error::InvalidArgument(
                "ranks: record_probabilities writes the law instead of ranks; pass None".into(),
            ));
        }
        self.record_inner(encoder, job, Some(probabilities))
    }

    /// Records the device-side penalty-state update after a step: for each of `rows` rows, the
    /// output count of `tokens[r]` in row `r` of `state` ([`penalty_state_words`] per row) goes
    /// up by one; a token `>= k` (a bad row's [`crate::NO_INDEX`]) changes nothing. Record it
    /// after the step's [`TokenSampler::record`] with `tokens` = that job's `out`.
    pub fn record_penalty_update(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        tokens: wgpu::BufferSlice<'_>,
        state: wgpu::BufferSlice<'_>,
        rows: u64,
        k: u64,
    ) -> Result<(), Error> {
        self.update.record(encoder, tokens, state, rows, k)
    }

    fn record_inner(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &TokenJob<'_>,
        law: Option<wgpu::BufferSlice<'_>>,
    ) -> Result<(), Error> {
        let LogitsView { rows, k, .. } = job.logits;
        job.logits.check_strided("logits")?;
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
        check_slice("row_params", job.row_params, rows * TokenRowParams::BYTES)?;
        check_slice("out", job.out, rows * 4)?;
        for (name, s, per) in [
            ("logprobs", job.logprobs, 1),
            ("top", job.top, 2 * n),
            ("status", job.status, 1),
            ("ranks", job.ranks, 1),
            ("probabilities", law, k),
        ] {
            if let Some(s) = s {
                check_slice(name, s, rows * per * 4)?;
            }
        }
        let entries = job.chain.check(rows, k)?;
        check_no_alias(
            &[
                ("logits", Some(job.logits.data)),
                ("row_params", Some(job.row_params)),
                ("allowed", job.chain.allowed),
                ("bias.starts", job.chain.bias.map(|b| b.starts)),
                ("bias.entries", job.chain.bias.map(|b| b.entries)),
                ("penalty_state", job.chain.penalty_state),
            ],
            &[
                ("out", Some(job.out)),
                ("logprobs", job.logprobs),
                ("top", job.top),
                ("status", job.status),
                ("ranks", job.ranks),
                ("probabilities", law),
            ],
        )?;
        if rows == 0 {
            return Ok(());
        }
        let core = &self.sample.core;
        // Whole rows per dispatch: each window must fit one binding.
        let processed = job.chain.is_on();
        let per_row = (job.logits.row_stride() * job.logits.format.bytes())
            .div_ceil(4)
            .max(2 * n)
            .max(12)
            .max(if processed || law.is_some() { k } else { 0 })
            .max(if job.chain.penalty_state.is_some() {
                penalty_state_words(k as usize) as u64
            } else {
                0
            });
        // On a CPU adapter a row per workgroup already keeps its few cores busy; the split
        // path's extra dispatches and workgroups cost more there (BENCHMARKS.md: 5x on lavapipe).
        let strategy = match job.strategy {
            TokenStrategy::Auto if core.cpu => TokenStrategy::RowPerWorkgroup,
            s => Self::strategy_for(rows, k, s),
        };
        let chunks = match strategy {
            TokenStrategy::SplitRow { chunks } => u64::from(chunks),
            _ => 0,
        };
        let passes = split_passes(
            k,
            job.filters,
            job.logprobs.is_some() || n > 0,
            law.is_some() || job.ranks.is_some(),
        );
        let state_words = split_state_words(passes.len() as u64, chunks);
        core.check_loop_budget(
            loop_iterations(k, n, job.noise, chunks).max(self.process.loop_iterations(k, entries)),
            &format!("token sampling of rows of {k} logits"),
        )?;
        let mut rows_per_dispatch = core.rows_per_dispatch(rows, per_row)?;
        if chunks > 0 {
            rows_per_dispatch = rows_per_dispatch
                .min(self.split.core.rows_per_dispatch(rows, state_words)?)
                .min(u64::from(self.split.core.max_groups) / chunks.max(1))
                .max(1);
        }
        core.scoped(|| {
            // Inside the device lock: a scratch buffer that grows drops the old one, and on GL
            // that takes the context another thread may hold for a long poll.
            let scratch = if processed {
                Some(self.process.scratch(rows_per_dispatch * k * 4)?)
            } else {
                None
            };
            let mut r0 = 0;
            while r0 < rows {
                let m = (rows - r0).min(rows_per_dispatch);
                if let Some(s) = &scratch {
                    self.process.record_dispatch(encoder, job, s, r0, m)?;
                }
                if chunks > 0 {
                    let split = SplitShape {
                        chunks,
                        passes: &passes,
                        state_words,
                    };
                    self.record_split(encoder, job, scratch.as_ref(), law, r0, m, &split)?;
                } else {
                    self.record_dispatch(encoder, job, scratch.as_ref(), law, r0, m)?;
                }
                r0 += m;
            }
            Ok(())
        })
    }

    /// The path `strategy` takes for `rows` rows of `k` logits on a GPU (on a CPU adapter
    /// [`TokenStrategy::Auto`] keeps a row per workgroup): under [`TokenStrategy::Auto`], rows
    /// of at least 8192 logits are split when there are fewer than 128 of them (too few workgroups to fill a GPU), into about 1024 workgroups in all
    /// with at least 4096 logits each (the Gumbel-max sampler's rule); `SplitRow { chunks: 0 }`
    /// gets the same count. Never more chunks than logits.
    #[doc(hidden)]
    pub fn strategy_for(rows: u64, k: u64, strategy: TokenStrategy) -> TokenStrategy {
        use crate::sample::{SPLIT_MAX_ROWS, SPLIT_MIN_CHUNK, SPLIT_MIN_K, SPLIT_TARGET_GROUPS};
        let auto_chunks = || TokenStrategy::SplitRow {
            chunks: SPLIT_TARGET_GROUPS
                .div_ceil(rows.max(1))
                .min(k.div_ceil(SPLIT_MIN_CHUNK))
                .max(1) as u32,
        };
        match strategy {
            TokenStrategy::Auto if k >= SPLIT_MIN_K && rows < SPLIT_MAX_ROWS => auto_chunks(),
            TokenStrategy::Auto => TokenStrategy::RowPerWorkgroup,
            TokenStrategy::SplitRow { chunks: 0 } => auto_chunks(),
            TokenStrategy::SplitRow { chunks } => TokenStrategy::SplitRow {
                chunks: (u64::from(chunks).min(k.max(1))) as u32,
            },
            s => s,
        }
    }

    fn record_dispatch<'a>(
        &'a self,
        encoder: &mut wgpu::CommandEncoder,
        job: &TokenJob<'a>,
        scratch: Option<&'a wgpu::Buffer>,
        law: Option<wgpu::BufferSlice<'a>>,
        r0: u64,
        m: u64,
    ) -> Result<(), Error> {
        let core = &self.sample.core;
        let (k, n) = (job.logits.k, u64::from(job.top_n));
        let logits = core.window(
            job.logits.data,
            r0 * job.logits.row_stride(),
            job.logits.span(m),
            job.logits.format.bytes(),
        );
        let rowp = core.window(job.row_params, r0 * 12, m * 12, 4);
        let tokens = core.window(job.out, r0, m, 4);
        let opt = |s: Option<wgpu::BufferSlice<'a>>, per: u64, binding: usize| match s {
            Some(s) if per > 0 => (core.window(s, r0 * per, m * per, 4), true),
            _ => (core.unused(binding), false),
        };
        let (lp, has_lp) = opt(job.logprobs, 1, 4);
        let (top, has_top) = opt(job.top, 2 * n, 5);
        let (st, has_st) = opt(job.status, 1, 6);
        let proc = match scratch {
            Some(s) => core.window(s.slice(..), 0, m * k, 4),
            None => core.unused(7),
        };
        let (aux, has_rank, has_law) = match (job.ranks, law) {
            (_, Some(l)) => (opt(Some(l), k, 8).0, false, true),
            (Some(s), None) => (opt(Some(s), 1, 8).0, true, false),
            (None, None) => (core.unused(8), false, false),
        };
        let params = job_params(
            job,
            m,
            scratch.is_some(),
            [
                logits.base,
                rowp.base,
                tokens.base,
                lp.base,
                top.base,
                st.base,
                proc.base,
                aux.base,
            ],
            [has_lp, has_top, has_st, has_rank, has_law],
        );
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
                proc.binding,
                aux.binding,
            ],
            &[(&self.sample.row, m)],
        )
    }
}

/// A job's parameters for `m` rows (the split path's fields 0): `bases` are the windows' element
/// offsets (logits, row parameters, tokens, log-probabilities, top, status, processed logits,
/// aux), `outputs` which outputs are bound (log-probabilities, top, status, ranks, the law).
fn job_params(
    job: &TokenJob<'_>,
    m: u64,
    processed: bool,
    bases: [u32; 8],
    outputs: [bool; 5],
) -> TokenParams {
    let [
        logit_base,
        row_base,
        token_base,
        logprob_base,
        top_base,
        status_base,
        proc_base,
        aux_base,
    ] = bases;
    let outputs = [OUT_LOGPROB, OUT_TOP, OUT_STATUS, OUT_RANK, OUT_LAW]
        .into_iter()
        .zip(outputs)
        .filter_map(|(bit, on)| on.then_some(bit))
        .fold(0, |a, b| a | b);
    TokenParams {
        rows: m as u32,
        k: job.logits.k as u32,
        format: job.logits.format.code(),
        logit_base,
        row_base,
        token_base,
        logprob_base,
        top_base,
        status_base,
        n_top: job.top_n,
        outputs,
        idx_rounds: index_rounds(job.logits.k),
        noise64: u32::from(job.noise == Noise::Bits64),
        processed: u32::from(processed),
        proc_base,
        aux_base,
        mode: u32::from(job.logprobs_mode == LogprobsMode::Processed),
        stride: job.logits.row_stride() as u32,
        filters: job.filters.bits(),
        ..TokenParams::default()
    }
}

/// The split path's shape for one job: workgroups per row, the passes, state words per row.
struct SplitShape<'p> {
    chunks: u64,
    passes: &'p [u32],
    state_words: u64,
}

impl TokenSampler {
    /// Records rows `r0 .. r0 + m` of `job` on the split path: the state cleared, one dispatch
    /// per pass over `m * chunks` workgroups, then the outputs (one workgroup per row).
    #[allow(clippy::too_many_arguments)]
    fn record_split<'a>(
        &'a self,
        encoder: &mut wgpu::CommandEncoder,
        job: &TokenJob<'a>,
        scratch: Option<&'a wgpu::Buffer>,
        law: Option<wgpu::BufferSlice<'a>>,
        r0: u64,
        m: u64,
        split: &SplitShape<'_>,
    ) -> Result<(), Error> {
        let (k, n) = (job.logits.k, u64::from(job.top_n));
        let core = &self.split.core;
        let words = m * split.state_words;
        let state = core.scratch(words * 4)?;
        encoder.clear_buffer(&state, 0, Some(words * 4));
        let logits = core.window(
            job.logits.data,
            r0 * job.logits.row_stride(),
            job.logits.span(m),
            job.logits.format.bytes(),
        );
        let rowp = core.window(job.row_params, r0 * 12, m * 12, 4);
        let proc = match scratch {
            Some(s) => core.window(s.slice(..), 0, m * k, 4),
            None => core.unused(3),
        };
        let st = core.window(state.slice(..), 0, words, 4);
        let aux_law = law.map(|l| core.window(l, r0 * k, m * k, 4));
        let opt = |s: Option<wgpu::BufferSlice<'a>>, per: u64, binding: usize| match s {
            Some(s) if per > 0 => (self.last.core.window(s, r0 * per, m * per, 4), true),
            _ => (self.last.core.unused(binding), false),
        };
        let tokens = self.last.core.window(job.out, r0, m, 4);
        let (lp, has_lp) = opt(job.logprobs, 1, 3);
        let (top, has_top) = opt(job.top, 2 * n, 4);
        let (status, has_st) = opt(job.status, 1, 5);
        let (ranks, has_rank) = match law {
            Some(_) => (self.last.core.unused(6), false),
            None => opt(job.ranks, 1, 6),
        };
        let base = TokenParams {
            split: split.chunks as u32,
            prev: N_PASSES,
            nseq: split.passes.len() as u32,
            state_base: st.base,
            state_stride: split.state_words as u32,
            ..job_params(
                job,
                m,
                scratch.is_some(),
                [
                    logits.base,
                    rowp.base,
                    tokens.base,
                    lp.base,
                    top.base,
                    status.base,
                    proc.base,
                    aux_law.as_ref().map_or(0, |w| w.base),
                ],
                [has_lp, has_top, has_st, has_rank, law.is_some()],
            )
        };
        let steps: Vec<TokenParams> = split
            .passes
            .iter()
            .enumerate()
            .map(|(i, &p)| TokenParams {
                step: p,
                prev: if i == 0 {
                    N_PASSES
                } else {
                    split.passes[i - 1]
                },
                seq: i as u32,
                ..base
            })
            .collect();
        let aux = aux_law.unwrap_or_else(|| core.unused(5));
        core.dispatch_steps(
            encoder,
            &steps,
            &[
                logits.binding,
                rowp.binding,
                proc.binding,
                st.binding.clone(),
                aux.binding,
            ],
            &self.split.pass,
            m * split.chunks,
        )?;
        let last = TokenParams {
            step: N_PASSES,
            prev: *split.passes.last().unwrap_or(&P_DRAW),
            seq: split.passes.len() as u32,
            aux_base: ranks.base,
            ..base
        };
        let last_state = self.last.core.window(state.slice(..), 0, words, 4);
        self.last.core.dispatch(
            encoder,
            &last,
            &[
                last_state.binding,
                tokens.binding,
                lp.binding,
                top.binding,
                status.binding,
                ranks.binding,
            ],
            &[(&self.last.row, m)],
        )
    }
}

impl Gpu {
    /// The token-sampling pipeline of this device (its kernels built on first use).
    pub fn token_sampler(&self) -> Result<Arc<TokenSampler>, Error> {
        Ok(Arc::new(TokenSampler {
            sample: self.family::<TokenSampleFamily>()?,
            split: self.family::<TokenSplitFamily>()?,
            last: self.family::<TokenFinalFamily>()?,
            process: self.family::<TokenProcessor>()?,
            update: self.family::<PenaltyUpdater>()?,
        }))
    }

    /// Token sampling for language models (blocking): per row of `k` f32 logits, the whole
    /// chain of the module docs (mask, logit bias, penalties, top-nσ, temperature, min-p, top-k,
    /// top-p), then a Gumbel-max draw over the kept set from the row's own stream, the
    /// log-probabilities (raw or processed) and the token's rank ([`crate::cpu::sample_tokens`]
    /// is the reference).
    ///
    /// `Err` naming the argument (and row) for parameters out of their domain, counts that are
    /// not one per row, tokens `>= k`, a mask of the wrong length, `logprobs > 20` or `> k`;
    /// naming the row for a NaN, a +inf, only -inf logits, a row the mask and bias leave with
    /// nothing, or an `l / t` that overflows f32.
    ///
    /// ```
    /// use gumbel_wgpu::{Gpu, LogprobsMode, Stream, TokenSampling};
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
    ///
    /// // The chain: token 1 banned by the mask in row 0 (bit 1 clear), a bias on its token 0;
    /// // a frequency penalty on the three 1s row 1 has generated; processed log-probabilities.
    /// let (history, none): (&[u32], &[u32]) = (&[1, 1, 1], &[]);
    /// let (bias, no_bias): (&[(u32, f32)], &[(u32, f32)]) = (&[(0, 1.5)], &[]);
    /// let chained = TokenSampling {
    ///     allowed: &[0b101, 0b111],
    ///     logit_bias: &[bias, no_bias],
    ///     frequency_penalty: &[0.0, 1.0],
    ///     output_tokens: &[none, history],
    ///     logprobs_mode: LogprobsMode::Processed,
    ///     ..params
    /// };
    /// let out = gpu.sample_tokens(&logits, 3, &chained)?;
    /// assert_ne!(out.tokens[0], 1); // masked
    /// assert_eq!(out.tokens[1], 2); // row 1 processed: [-1, 3 - 3, 0.5]
    /// assert_eq!(out.logprobs[1], 0.0); // greedy: the final law is one-hot
    /// assert_eq!(out.ranks[1], 1);
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
        Ok(self.run_tokens(logits, k, params, noise, false)?.0)
    }

    /// The final law each row is drawn from (blocking): `rows x k` f32, 0 outside the kept set,
    /// one-hot on the argmax for greedy rows; the reference is
    /// [`crate::cpu::token_probabilities`]. Same arguments and errors as [`Gpu::sample_tokens`]
    /// (the streams are not used for the law, but one per row is still required).
    pub fn token_probabilities(
        &self,
        logits: &[f32],
        k: usize,
        params: &TokenSampling<'_>,
    ) -> Result<Vec<f32>, Error> {
        Ok(self
            .run_tokens(LogitsSlice::F32(logits), k, params, Noise::Bits32, true)?
            .1)
    }

    fn run_tokens(
        &self,
        logits: LogitsSlice<'_>,
        k: usize,
        params: &TokenSampling<'_>,
        noise: Noise,
        law: bool,
    ) -> Result<(SampledTokens, Vec<f32>), Error> {
        let rows = check_shape(logits.len(), k)?;
        let row_params = TokenRowParams::rows(params, rows, k)?;
        let n = params.logprobs;
        if n > k {
            return Err(Error::InvalidArgument(format!(
                "logprobs = {n} exceeds k = {k}"
            )));
        }
        let processed = params.processes().then(|| {
            let v: Vec<f32> = logits.values().collect();
            crate::cpu::processed_logits(&v, k, params)
        });
        check_token_logits(logits.values(), k, params.temperature, processed.as_deref())?;
        if rows == 0 {
            return Ok((SampledTokens::default(), Vec::new()));
        }
        let sampler = self.token_sampler()?;
        let buf = self.pooled_upload("logits", &logits.words())?;
        let rp = self.pooled_upload("row params", &row_params)?;
        // The chain's inputs, each uploaded only when some row uses it.
        let allowed = if params.allowed.is_empty() {
            None
        } else {
            Some(self.pooled_upload("allowed", params.allowed)?)
        };
        let bias = if params.logit_bias.iter().any(|b| !b.is_empty()) {
            let mut starts = Vec::with_capacity(rows + 1);
            let mut entries = Vec::new();
            for r in 0..rows {
                starts.push((entries.len() / 2) as u32);
                for &(t, b) in params.logit_bias.get(r).copied().unwrap_or(&[]) {
                    entries.extend([t, b.to_bits()]);
                }
            }
            starts.push((entries.len() / 2) as u32);
            Some((
                self.pooled_upload("bias starts", &starts)?,
                self.pooled_upload("bias entries", &entries)?,
                entries.len() as u64 * 4,
            ))
        } else {
            None
        };
        let state = if params.penalized() {
            let empty: &[u32] = &[];
            let mut words = Vec::new();
            for r in 0..rows {
                words.extend(super::chain::penalty_state_row(
                    k,
                    params.prompt_tokens.get(r).copied().unwrap_or(empty),
                    params.output_tokens.get(r).copied().unwrap_or(empty),
                ));
            }
            Some(self.pooled_upload("penalty state", &words)?)
        } else {
            None
        };
        // One output buffer, read back at once: tokens, log-probabilities, ranks, the top
        // pairs, then the law, each region from a multiple of 256 bytes (a kernel binds from its
        // view's offset rounded down to the storage alignment, and writable bindings must not
        // overlap: `family::check_no_alias`).
        let law_words = if law { rows * k } else { 0 };
        let mut words = 0;
        let mut region = |len: usize| {
            let w0 = words;
            words = (w0 + len.max(1)).next_multiple_of(ALIGN_WORDS);
            w0
        };
        let (o_tok, o_lp, o_rank) = (region(rows), region(rows), region(rows));
        let (o_top, o_law) = (region(2 * rows * n), region(law_words));
        let out = self.pooled_storage("tokens", words as u64 * 4)?;
        let at =
            |w0: usize, len: usize| out.slice(w0 as u64 * 4..(w0 + len).max(w0 + 1) as u64 * 4);
        let chain = TokenChain {
            allowed: allowed.as_ref().map(|b| b.slice(..)),
            bias: bias.as_ref().map(|(s, e, bytes)| super::TokenBias {
                starts: s.slice(..),
                entries: e.slice(..(*bytes).max(4)),
            }),
            penalty_state: state.as_ref().map(|b| b.slice(..)),
        };
        let job = TokenJob {
            logits: LogitsView {
                data: buf.slice(..),
                format: logits.format(),
                rows: rows as u64,
                k: k as u64,
                stride: 0,
            },
            row_params: rp.slice(..),
            out: at(o_tok, rows),
            logprobs: Some(at(o_lp, rows)),
            top_n: n as u32,
            top: (n > 0).then(|| at(o_top, 2 * rows * n)),
            status: None,
            noise,
            chain,
            ranks: (!law).then(|| at(o_rank, rows)),
            logprobs_mode: params.logprobs_mode,
            filters: TokenFilters::of(&row_params, k as u64),
            strategy: TokenStrategy::Auto,
        };
        let law_at = at(o_law, law_words);
        let w: Vec<u32> = self.run_and_read(
            |enc| {
                if law {
                    sampler.record_probabilities(enc, &job, law_at)
                } else {
                    sampler.record(enc, &job)
                }
            },
            &out,
            words,
        )?;
        let pairs = &w[o_top..o_top + 2 * rows * n];
        let f = |b: &u32| f32::from_bits(*b);
        Ok((
            SampledTokens {
                tokens: w[o_tok..o_tok + rows].to_vec(),
                logprobs: w[o_lp..o_lp + rows].iter().map(f).collect(),
                top_tokens: pairs.iter().step_by(2).copied().collect(),
                top_logprobs: pairs.iter().skip(1).step_by(2).map(f).collect(),
                ranks: if law {
                    Vec::new()
                } else {
                    w[o_rank..o_rank + rows].to_vec()
                },
            },
            w[o_law..o_law + law_words].iter().map(f).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_path_records_the_passes_the_docs_count() {
        let k = 131_072;
        let row = |top_k, top_p| {
            TokenRowParams::new(
                RowSampling {
                    top_k,
                    top_p,
                    ..RowSampling::new(0.8)
                },
                Stream::new(1),
            )
        };
        // src/tokens/mod.rs: top-k 50 + top-p 0.9 with raw log-probabilities, filters named.
        let named = TokenFilters::of(&[row(50, 0.9)], k);
        assert_eq!(split_passes(k, named, true, false).len(), 9);
        assert_eq!(split_passes(k, TokenFilters::ALL, true, false).len(), 22);
        // Temperature only, nothing but the token: the draw alone.
        let none = TokenFilters::of(&[row(0, 1.0)], k);
        assert_eq!(none, TokenFilters::NONE);
        assert_eq!(split_passes(k, none, false, false), [P_DRAW]);
        // Top-p without a top-k takes the mass rounds, not the gather.
        let p = TokenFilters::of(&[row(0, 0.9)], k);
        assert!(p.top_p && !p.top_p_in_top_k && !p.top_k);
    }
}
