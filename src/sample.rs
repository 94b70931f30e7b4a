//! Gumbel-max sampling and Gumbel-top-k (`shaders/sample.wgsl`).
//!
//! Row `r` of a `rows x k` matrix of logits `l` draws the index `argmax_j (l_j / t_r + g_j)`,
//! where `g_j` is the Gumbel noise of stream word `r * k + j` (the noise [`Gpu::gumbel`] gives on
//! the same stream) and `t_r` is the row's temperature (1 by default): a draw from
//! `softmax(l / t_r)`. [`Noise::Bits64`] ([`SampleOptions::noise`], [`SampleJob::noise`]) takes
//! words `2 (r * k + j)` and `2 (r * k + j) + 1` instead, for a Gumbel tail to 45 rather than
//! 22.9. Gumbel-top-k (Kool et al. 2019) returns the indices of the `top` largest
//! values of `l / t + g` in decreasing order: `top` draws without replacement.
//!
//! Conventions, identical on every path:
//! * ties (equal values of `l / t + g`) go to the lowest index;
//! * a -inf logit is masked: never drawn;
//! * a +inf logit beats every finite one; among several +inf entries the lowest index comes first;
//! * buffer level only (the slice API rejects such rows): a NaN logit is skipped like a masked
//!   one, and a row with fewer than `top` drawable entries gets [`NO_INDEX`] in the slots left
//!   over (an all-masked row samples [`NO_INDEX`]).
//!
//! ## Gumbel-max and Gumbel-top-k: one read of each row
//! Every path reads each logit once (2 or 4 bytes) and calls Philox once per 4 consecutive
//! elements (a block of the stream), in registers, whatever `top`; with [`Noise::Bits64`], once
//! per 2 elements (twice with an odd stream offset).
//!
//! * **`top = 1`** keeps its one-pass arg-max: per invocation a running best `(key, index)`, then
//!   one tree reduction in workgroup memory (2 KiB); no scratch except the split path's partials.
//! * **`top > 1`**: a *team* (one invocation, a segment, or a workgroup, on a row or on a chunk of
//!   a split row) keeps its best `top` so far as a sorted list `L` in scratch (device memory,
//!   `16 * top` bytes: two halves it alternates between). It reads its blocks in rounds of one
//!   block per invocation; an element enters the team's tile in workgroup memory only if it
//!   comes before `L[top - 1]` (the threshold, once `L` is full). When a tile could overflow in
//!   the next round, and after the last, the tiles are sorted (a bitonic network in workgroup
//!   memory) and merged into `L` by rank (each entry's new place is its place in its own list
//!   plus the number of entries of the other list before it, a binary search; the order is
//!   total, so places are distinct). Workgroup memory: 12 KiB of tiles (6 slots of 8 bytes per
//!   invocation) and 1 KiB of counters, within WebGPU's guaranteed 16 KiB. After the first tile
//!   few elements beat the threshold (about `top * ln(k / top)` of a random row enter in all),
//!   so merges are rare; at worst (increasing logits) a team merges every round. One invocation
//!   per row (`k <= 32`) instead inserts into its list in scratch (`top` steps at worst). The
//!   split path's second pass merges the chunks' sorted lists pairwise, a tree of
//!   `ceil(log2 chunks)` levels in one workgroup per row.
//!
//! Top-k costs, beside the read: scratch traffic for the candidates that beat the threshold and
//! `L` (`top` entries per merge), and one dispatch more on split rows (as for `top = 1`). The
//! result is exactly the `top` first entries of the row in the order below, padded with
//! [`NO_INDEX`], on every path and for every chunking.
//!
//! ## Paths, chosen from the shape ([`Sampler::strategy_for`])
//! * `k <= 32`: one invocation per row (bulk categorical latents: millions of small rows);
//! * mid `k`: a segment of 4..256 invocations per row (a power of two, about 4 Philox blocks =
//!   16 elements per invocation), 256 / segment rows per workgroup, and a tree reduction of
//!   `(value, index)` per segment in workgroup memory (no subgroup operations);
//! * `k >= 8192` with fewer than 128 rows (LM token sampling at small batch, e.g. 1 x 131072 or
//!   8 x 131072), and for `top > 1` also `k > 65536` at any row count: each row is split over up
//!   to 1024 / rows workgroups (at least 4096 elements each, for top-k at least `4 * top`, and
//!   at most 65536); each writes its partial top list per (row, chunk) to a scratch buffer, and
//!   a second tiny pass (one workgroup per row) combines them. The order is total, so the result
//!   does not depend on the split.
//!
//! **llvmpipe** (Mesa's software adapter, Vulkan and GL) ends every loop of a shader invocation
//! once their iterations add up to 65535, silently. [`Sampler::record`] estimates an
//! invocation's iterations at their worst (`loop_iterations`: for top-k a merge after every
//! round, as increasing logits cause) and on llvmpipe returns [`Error::Unsupported`] past the
//! budget instead of a wrong answer; other drivers have no cap. `top = 1` iterates about
//! `blocks it scans + 9` times (at most ~4100 for a 2^22-wide row on the automatic path). The
//! automatic top-k paths fit every `top <= 4096` on rows up to 2^21 wide, and `top <= 50` up to
//! 2^24 at least (a split team reads at most 65536 elements: about 41000 iterations at worst for
//! `top = 4096`; the combine tree grows with `chunks * top`, past the budget from about 3 * 2^20
//! at `top >= 1024`). Forced paths on wide rows (one invocation or a small segment per row, or a
//! workgroup per 262144-wide row) exceed it sooner.

use crate::family::{
    FamilyCore, FamilySpec, KernelFamily, Params, check_no_alias, check_slice, take, uniform_params,
};
use crate::logits::{
    LogitsSlice, LogitsView, check_rows, check_shape, check_taus, check_temperature,
};
use crate::shader::WG_SIZE;
use crate::{Error, Gpu, Noise, Stream, Temperature};
use std::sync::Arc;

/// The index a kernel writes where a row has no (further) entry to draw.
pub const NO_INDEX: u32 = u32::MAX;

/// The largest `top` of Gumbel-top-k. The kernels read each row once whatever `top`; their
/// scratch is `16 * top` bytes per row (per chunk of a split row), and merging costs grow with it.
pub const MAX_TOP: usize = 4096;

/// Rows with at most this many categories take one invocation per row.
const THREAD_MAX_K: u64 = 32;
/// Longer rows get a segment of invocations sized for about this many Philox blocks each (a
/// whole workgroup from k = 4096 up).
const SEGMENT_BLOCKS: u64 = 4;
/// Rows at least this long are split across workgroups when there are few of them...
pub(crate) const SPLIT_MIN_K: u64 = 8192;
/// ...namely fewer than this many rows (too few workgroups to fill a GPU).
pub(crate) const SPLIT_MAX_ROWS: u64 = 128;
/// The split path aims at about this many workgroups in all...
pub(crate) const SPLIT_TARGET_GROUPS: u64 = 1024;
/// ...with at least this many elements per chunk, and for top-k at least `SPLIT_CHUNK_PER_TOP *
/// top` (fewer, longer chunks: the combine pass merges `chunks - 1` lists of `top`).
pub(crate) const SPLIT_MIN_CHUNK: u64 = 4096;
const SPLIT_CHUNK_PER_TOP: u64 = 4;
/// Top-k splits rows longer than this (at least `SPLIT_MIN_K`) at any row count, into chunks of
/// at most this many elements: a team's worst case (a merge every round) grows with its span.
const TOPK_MAX_CHUNK: u64 = 65_536;
/// Tile slots per invocation of a top-k team in workgroup memory (`TEAM_SLOTS` in the shader).
const TEAM_SLOTS: u64 = 6;

/// How the kernels map rows to the GPU. [`SampleStrategy::Auto`] picks from the shape; the others
/// force a path (tests use them to exercise every path on every shape).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SampleStrategy {
    /// Chosen from rows and k (see [`Sampler::strategy_for`]).
    #[default]
    Auto,
    /// One invocation per row.
    RowPerThread,
    /// One workgroup per row.
    RowPerWorkgroup,
    /// `threads` invocations per row (a power of two, 1..=256), 256 / `threads` rows per
    /// workgroup.
    RowPerSegment {
        /// Invocations per row.
        threads: u32,
    },
    /// Each row split into `chunks` workgroups (0: chosen from the shape), then a combine pass.
    SplitRow {
        /// Workgroups per row; 0 picks a count from the shape.
        chunks: u32,
    },
}

/// One sampling job at the buffer level.
#[derive(Clone, Copy, Debug)]
pub struct SampleJob<'a> {
    /// The logits, `rows x k` in any [`LogitsFormat`](crate::LogitsFormat).
    pub logits: LogitsView<'a>,
    /// Indices drawn per row, `1..=min(k, MAX_TOP)`; 1 is plain Gumbel-max sampling.
    pub top: u32,
    /// The temperature: row `r` samples from `softmax(l / t_r)`. A scalar is checked here; a
    /// per-row slice of `rows` f32 is not: a row whose value is not finite, normal and > 0
    /// samples [`NO_INDEX`] in every slot.
    pub tau: Temperature<wgpu::BufferSlice<'a>>,
    /// The noise: element `j` of row `r` uses word `r * k + j` ([`Noise::Bits32`]), or words
    /// `2 (r * k + j)` and `2 (r * k + j) + 1` ([`Noise::Bits64`]).
    pub stream: Stream,
    /// Words per element: [`Noise::Bits64`] extends the Gumbel tail from 22.9 to 45.
    pub noise: Noise,
    /// Receives `rows * top` u32 indices, row `r`'s at `r * top ..`, in decreasing order of
    /// `l / t + g`; [`NO_INDEX`] where a row has fewer than `top` drawable entries.
    pub out: wgpu::BufferSlice<'a>,
}

uniform_params! {
    struct SampleParams {
        key_lo: u32,
        key_hi: u32,
        block0_lo: u32,
        block0_hi: u32,
        phase: u32,
        rows: u32,
        k: u32,
        top: u32,
        format: u32,
        per_row_tau: u32,
        tau: f32,
        chunks: u32,
        logit_base: u32,
        temp_base: u32,
        out_base: u32,
        seg: u32,
        noise64: u32,
        row_pad: u32,
    }
}

/// The sampling kernels (`shaders/sample.wgsl`): own their bind-group layout and pipelines.
/// Get them with [`Gpu::sampler`].
pub struct Sampler {
    core: FamilyCore,
    /// Gumbel-max (`top = 1`): one pass of arg-max per row.
    max: Kernels,
    /// Gumbel-top-k (`top > 1`): candidate lists merged in workgroup memory.
    top_k: Kernels,
}

/// One pipeline per path.
struct Kernels {
    thread: wgpu::ComputePipeline,
    group: wgpu::ComputePipeline,
    partial: wgpu::ComputePipeline,
    combine: wgpu::ComputePipeline,
}

/// `floor(log2 n) + 1`: the most iterations of a binary search over `n` entries.
fn search_steps(n: u64) -> u64 {
    u64::from(64 - n.leading_zeros())
}

/// Loop iterations of one top-k merge (`team_top` in the shader) per invocation of a team of
/// `seg`, at its worst: a full tile, sorted by the bitonic network, merged with a list of `top`.
fn merge_iterations(seg: u64, top: u64) -> u64 {
    let cap = TEAM_SLOTS * seg;
    let p = cap.next_power_of_two();
    let lg = u64::from(p.trailing_zeros());
    let stages = lg * (lg + 1) / 2;
    let per_stage = (p / 2).div_ceil(seg);
    let sort = lg + stages + stages * per_stage;
    let lists =
        top.div_ceil(seg) * (1 + search_steps(cap)) + cap.div_ceil(seg) * (1 + search_steps(top));
    sort + lists
}

/// Loop iterations of a top-k team of `seg` invocations reading `blocks` blocks, at its worst:
/// a merge after every round (every element beats the threshold, e.g. increasing logits).
fn team_iterations(seg: u64, top: u64, blocks: u64) -> u64 {
    let rounds = blocks.div_ceil(seg);
    3 * top.div_ceil(seg) + (rounds + 1) * (1 + merge_iterations(seg, top))
}

/// Loop iterations one invocation of `strategy` runs on rows of `words` noise words (`k`, or `2k`
/// with [`Noise::Bits64`]), at their worst (llvmpipe's budget, see the module docs). Gumbel-max: about `blocks it scans + 9`; its split path's combine pass scans
/// `chunks` candidates. Top-k: [`team_iterations`]; one invocation per row inserts each element
/// into a sorted list (`top` iterations at worst); the combine pass is a merge tree.
fn loop_iterations(strategy: SampleStrategy, words: u64, top: u64) -> u64 {
    let blocks = words / 4 + 2;
    let wg = u64::from(WG_SIZE);
    if top == 1 {
        let per_round = match strategy {
            SampleStrategy::RowPerThread | SampleStrategy::Auto => blocks,
            SampleStrategy::RowPerSegment { threads } => blocks.div_ceil(u64::from(threads.max(1))),
            SampleStrategy::RowPerWorkgroup => blocks.div_ceil(wg),
            SampleStrategy::SplitRow { chunks } => {
                let c = u64::from(chunks.max(1));
                blocks.div_ceil(c * wg).max(c.div_ceil(wg))
            }
        };
        return per_round + 9;
    }
    match strategy {
        SampleStrategy::RowPerThread | SampleStrategy::Auto => blocks * (1 + 4 * top) + top,
        SampleStrategy::RowPerSegment { threads } => {
            team_iterations(u64::from(threads.max(1)), top, blocks)
        }
        SampleStrategy::RowPerWorkgroup => team_iterations(wg, top, blocks),
        SampleStrategy::SplitRow { chunks } => {
            let c = u64::from(chunks.max(1));
            let partial = team_iterations(wg, top, blocks.div_ceil(c)) + top.div_ceil(wg);
            // The combine pass's merge tree: ceil(log2 chunks) levels of pairs of lists.
            let mut combine = top.div_ceil(wg);
            let mut stride = 1;
            while stride < c {
                let pairs = c.div_ceil(2 * stride);
                combine += 1 + (pairs * 2 * top).div_ceil(wg) * (1 + search_steps(top));
                stride *= 2;
            }
            partial.max(combine)
        }
    }
}

impl KernelFamily for Sampler {
    const SPEC: FamilySpec = FamilySpec {
        name: "sample",
        source: include_str!("../shaders/sample.wgsl"),
        params: SampleParams::WGSL,
        storage_read_only: &[true, true, false, false],
        entry_points: &[
            "sample_thread",
            "sample_group",
            "sample_partial",
            "sample_combine",
            "topk_thread",
            "topk_group",
            "topk_partial",
            "topk_combine",
        ],
    };

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        let [
            thread,
            group,
            partial,
            combine,
            k_thread,
            k_group,
            k_partial,
            k_combine,
        ] = take(pipelines)?;
        Ok(Sampler {
            core,
            max: Kernels {
                thread,
                group,
                partial,
                combine,
            },
            top_k: Kernels {
                thread: k_thread,
                group: k_group,
                partial: k_partial,
                combine: k_combine,
            },
        })
    }
}

impl Sampler {
    /// The path [`Sampler::record`] takes for Gumbel-max of `rows x k` logits (forced strategies
    /// are returned as given, `SplitRow { chunks: 0 }` with its chunk count filled in).
    #[doc(hidden)]
    pub fn strategy_for(rows: u64, k: u64, strategy: SampleStrategy) -> SampleStrategy {
        Self::strategy_for_top(rows, k, 1, strategy)
    }

    /// The path [`Sampler::record`] takes for the `top` largest of `rows x k` logits: as for
    /// Gumbel-max, but for `top > 1` split chunks hold at least `4 * top` elements, and rows
    /// longer than 65536 are split at any row count, into chunks of at most 65536.
    #[doc(hidden)]
    pub fn strategy_for_top(
        rows: u64,
        k: u64,
        top: u64,
        strategy: SampleStrategy,
    ) -> SampleStrategy {
        let (rows, k) = (rows.max(1), k.max(1));
        let min_chunk = if top > 1 {
            SPLIT_MIN_CHUNK.max(SPLIT_CHUNK_PER_TOP * top)
        } else {
            SPLIT_MIN_CHUNK
        };
        let auto_chunks = || {
            let mut c = SPLIT_TARGET_GROUPS
                .div_ceil(rows)
                .min(k.div_ceil(min_chunk))
                .max(1);
            if top > 1 {
                c = c.max(k.div_ceil(TOPK_MAX_CHUNK));
            }
            SampleStrategy::SplitRow { chunks: c as u32 }
        };
        let split = k >= SPLIT_MIN_K && (rows < SPLIT_MAX_ROWS || top > 1 && k > TOPK_MAX_CHUNK);
        match strategy {
            SampleStrategy::Auto if k <= THREAD_MAX_K => SampleStrategy::RowPerThread,
            SampleStrategy::Auto if split => auto_chunks(),
            SampleStrategy::Auto => {
                // About SEGMENT_BLOCKS Philox blocks (4 elements each) per invocation.
                let threads = (k / 4 + 1)
                    .div_ceil(SEGMENT_BLOCKS)
                    .next_power_of_two()
                    .clamp(4, u64::from(WG_SIZE));
                if threads == u64::from(WG_SIZE) {
                    SampleStrategy::RowPerWorkgroup
                } else {
                    SampleStrategy::RowPerSegment {
                        threads: threads as u32,
                    }
                }
            }
            SampleStrategy::SplitRow { chunks: 0 } => auto_chunks(),
            s => s,
        }
    }

    /// Records `job` into the caller's `encoder`; never submits.
    ///
    /// Element `j` of row `r` uses word `r * k + j` of the stream. Inputs larger than a storage
    /// binding are split by whole rows into several dispatches (the stream continues across
    /// them). The scratch buffer is kept across calls: per dispatch `rows * chunks * 8` bytes on
    /// the split-row path for `top = 1`; for `top > 1`, `rows * top * 8` (one invocation per row),
    /// `rows * top * 16`, or `rows * chunks * top * 16` on the split-row path. `Err` for bad views (naming the argument), `k = 0`, a `top` out of
    /// range, or a bad scalar temperature.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &SampleJob<'_>,
    ) -> Result<(), Error> {
        self.record_path(encoder, job, SampleStrategy::Auto)
    }

    /// [`Sampler::record`] on a chosen path (tests reach every path with it).
    #[doc(hidden)]
    pub fn record_path(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &SampleJob<'_>,
        strategy: SampleStrategy,
    ) -> Result<(), Error> {
        let LogitsView { rows, k, .. } = job.logits;
        let top = job.top;
        job.logits.check_strided("logits")?;
        if top == 0 || u64::from(top) > k || top as usize > MAX_TOP {
            return Err(Error::InvalidArgument(format!(
                "top = {top} must be in 1..=min(k, {MAX_TOP}) (k = {k})"
            )));
        }
        check_slice("out", job.out, rows * u64::from(top) * 4)?;
        check_temperature(&job.tau, rows)?;
        check_no_alias(
            &[
                ("logits", Some(job.logits.data)),
                ("tau", job.tau.per_row()),
            ],
            &[("out", Some(job.out))],
        )?;
        if rows == 0 {
            return Ok(());
        }
        let strategy = Self::strategy_for_top(rows, k, u64::from(top), strategy);
        if let SampleStrategy::RowPerSegment { threads } = strategy
            && !(threads.is_power_of_two() && threads <= WG_SIZE)
        {
            return Err(Error::InvalidArgument(format!(
                "{threads} invocations per row: must be a power of two up to {WG_SIZE}"
            )));
        }
        self.core.check_loop_budget(
            loop_iterations(strategy, k * job.noise.words(), u64::from(top)),
            &format!("top {top} of rows of {k} logits"),
        )?;
        // Rows per dispatch: each window must fit one storage binding, and so must the scratch.
        let rows_per_dispatch = self.core.rows_per_dispatch(
            rows,
            job.logits
                .row_stride()
                .max(scratch_pairs(strategy, top) * 2),
        )?;
        self.core.scoped(|| {
            let mut r0 = 0;
            while r0 < rows {
                let n = (rows - r0).min(rows_per_dispatch);
                self.record_dispatch(encoder, job, strategy, r0, n)?;
                r0 += n;
            }
            Ok(())
        })
    }

    fn record_dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &SampleJob<'_>,
        strategy: SampleStrategy,
        r0: u64,
        n: u64,
    ) -> Result<(), Error> {
        let (k, top) = (job.logits.k, u64::from(job.top));
        let core = &self.core;
        let stride = job.logits.row_stride();
        let logits = core.window(
            job.logits.data,
            r0 * stride,
            job.logits.span(n),
            job.logits.format.bytes(),
        );
        let out = core.window(job.out, r0 * top, n * top, 4);
        let (tau, temps) = match job.tau {
            Temperature::Scalar(t) => (t, core.unused(2)),
            Temperature::PerRow(s) => (1.0, core.window(s, r0, n, 4)),
        };
        let chunks = match strategy {
            SampleStrategy::SplitRow { chunks } => chunks,
            _ => 1,
        };
        let seg = match strategy {
            SampleStrategy::RowPerSegment { threads } => threads,
            _ => WG_SIZE,
        };
        let pairs = scratch_pairs(strategy, top as u32);
        let scratch = if pairs > 0 {
            Some(core.scratch(n * pairs * 8)?)
        } else {
            None
        };
        let [key_lo, key_hi, block0_lo, block0_hi, phase] = job
            .stream
            .advance(r0 * k * job.noise.words())
            .kernel_words();
        let params = SampleParams {
            key_lo,
            key_hi,
            block0_lo,
            block0_hi,
            phase,
            rows: n as u32,
            k: k as u32,
            top: top as u32,
            format: job.logits.format.code(),
            per_row_tau: u32::from(matches!(job.tau, Temperature::PerRow(_))),
            tau,
            chunks,
            logit_base: logits.base,
            temp_base: temps.base,
            out_base: out.base,
            seg,
            noise64: u32::from(job.noise == Noise::Bits64),
            row_pad: (stride - k) as u32,
        };
        let scratch = scratch
            .as_ref()
            .map_or(core.unused(4).binding, |s| s.as_entire_buffer_binding());
        let bindings = [logits.binding, temps.binding, out.binding, scratch];
        let kernels = if top == 1 { &self.max } else { &self.top_k };
        match strategy {
            SampleStrategy::RowPerThread => core.dispatch(
                encoder,
                &params,
                &bindings,
                &[(&kernels.thread, n.div_ceil(u64::from(WG_SIZE)))],
            ),
            SampleStrategy::SplitRow { .. } => core.dispatch(
                encoder,
                &params,
                &bindings,
                &[
                    (&kernels.partial, n * u64::from(chunks)),
                    (&kernels.combine, n),
                ],
            ),
            _ => core.dispatch(
                encoder,
                &params,
                &bindings,
                &[(&kernels.group, n.div_ceil(u64::from(WG_SIZE / seg)))],
            ),
        }
    }
}

/// Scratch (key, index) pairs per row of `strategy` (resolved) for `top`: Gumbel-max's split
/// path keeps one partial per chunk; top-k keeps one sorted list per row (one invocation per
/// row), two (a list and the next) per row or per chunk of a split row.
fn scratch_pairs(strategy: SampleStrategy, top: u32) -> u64 {
    let top = u64::from(top);
    match (strategy, top) {
        (SampleStrategy::SplitRow { chunks }, 1) => u64::from(chunks),
        (_, 1) => 0,
        (SampleStrategy::RowPerThread, _) => top,
        (SampleStrategy::SplitRow { chunks }, _) => u64::from(chunks) * 2 * top,
        _ => 2 * top,
    }
}

/// Options of [`Gpu::sample_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SampleOptions<'a> {
    /// One temperature per row (finite, > 0): row `r` samples from `softmax(l / t_r)`.
    pub temperatures: Option<&'a [f32]>,
    /// Words per element of the stream (see [`SampleJob::noise`]).
    pub noise: Noise,
    /// Path override for tests.
    #[doc(hidden)]
    pub strategy: SampleStrategy,
}

impl Gpu {
    /// The sampling kernels of this device (built on first use).
    pub fn sampler(&self) -> Result<Arc<Sampler>, Error> {
        self.family::<Sampler>()
    }

    /// One Gumbel-max draw per row of `k` logits (blocking): index `argmax_j (l_j + g_j)` with the
    /// noise [`Gpu::gumbel`] gives on `stream`, a draw from `softmax(l)`. Ties go to the lowest
    /// index, -inf logits are never drawn, the first +inf logit of a row wins.
    ///
    /// `Err` for `k = 0`, a length `k` does not divide, a NaN logit or an all -inf row (naming the
    /// row). Empty input gives an empty result.
    ///
    /// ```
    /// use gumbel_wgpu::{Gpu, Stream};
    /// let gpu = Gpu::new()?;
    /// // Two rows of k = 3; the second can only draw index 2.
    /// let logits = [0.0, 1.0, 2.0, f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0];
    /// let idx = gpu.sample(&logits, 3, Stream::new(1))?;
    /// assert!(idx[0] < 3 && idx[1] == 2);
    /// # Ok::<(), gumbel_wgpu::Error>(())
    /// ```
    pub fn sample(&self, logits: &[f32], k: usize, stream: Stream) -> Result<Vec<u32>, Error> {
        self.sample_with(
            LogitsSlice::F32(logits),
            k,
            1,
            stream,
            &SampleOptions::default(),
        )
    }

    /// Gumbel-top-k (blocking): per row, the indices of the `top` largest values of `l + g` in
    /// decreasing order (`top` draws without replacement; the first equals [`Gpu::sample`]'s on
    /// the same stream). Returns `rows * top` indices.
    ///
    /// `Err` as for [`Gpu::sample`], and unless `1 <= top <= min(k, MAX_TOP)` and every row has
    /// at least `top` logits other than -inf.
    pub fn sample_top_k(
        &self,
        logits: &[f32],
        k: usize,
        top: usize,
        stream: Stream,
    ) -> Result<Vec<u32>, Error> {
        self.sample_with(
            LogitsSlice::F32(logits),
            k,
            top,
            stream,
            &SampleOptions::default(),
        )
    }

    /// [`Gpu::sample_top_k`] with f16/bf16 logits and per-row temperatures (`top = 1` is plain
    /// sampling). With temperatures, every finite `l / t` must be finite in f32.
    pub fn sample_with(
        &self,
        logits: LogitsSlice<'_>,
        k: usize,
        top: usize,
        stream: Stream,
        options: &SampleOptions<'_>,
    ) -> Result<Vec<u32>, Error> {
        let rows = check_shape(logits.len(), k)?;
        if top == 0 || top > k || top > MAX_TOP {
            return Err(Error::InvalidArgument(format!(
                "top = {top} must be in 1..=min(k, {MAX_TOP}) (k = {k})"
            )));
        }
        if let Some(t) = options.temperatures {
            check_taus(t, rows)?;
            for (i, l) in logits.values().enumerate() {
                if l.is_finite() && !(l / t[i / k]).is_finite() {
                    return Err(Error::InvalidArgument(format!(
                        "row {}: logit {l} / temperature {} overflows f32",
                        i / k,
                        t[i / k]
                    )));
                }
            }
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        check_rows(logits.values(), k)?;
        if top > 1 {
            let mut drawable = 0;
            for (i, l) in logits.values().enumerate() {
                drawable += usize::from(l != f32::NEG_INFINITY);
                if (i + 1) % k == 0 {
                    if drawable < top {
                        return Err(Error::InvalidArgument(format!(
                            "row {}: {drawable} logits other than -inf, fewer than top = {top}",
                            i / k
                        )));
                    }
                    drawable = 0;
                }
            }
        }
        let kernels = self.sampler()?;
        let buf = self.pooled_upload("logits", &logits.words())?;
        let temps = options
            .temperatures
            .map(|t| self.pooled_upload("temperatures", t))
            .transpose()?;
        let len = rows * top;
        let out = self.pooled_storage("samples", (len as u64) * 4)?;
        let job = SampleJob {
            logits: LogitsView {
                data: buf.slice(..),
                format: logits.format(),
                rows: rows as u64,
                k: k as u64,
                stride: 0,
            },
            top: top as u32,
            tau: temps.as_ref().map_or(Temperature::Scalar(1.0), |t| {
                Temperature::PerRow(t.slice(..))
            }),
            stream,
            noise: options.noise,
            out: out.slice(..),
        };
        self.run_and_read(
            |enc| kernels.record_path(enc, &job, options.strategy),
            &out,
            len,
        )
    }
}
