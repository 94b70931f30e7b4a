//! Gumbel-max sampling and Gumbel-top-k (`shaders/sample.wgsl`).
//!
//! Row `r` of a `rows x k` matrix of logits `l` draws the index `argmax_j (l_j / t_r + g_j)`,
//! where `g_j` is the Gumbel noise of stream word `r * k + j` (the noise [`Gpu::gumbel`] gives on
//! the same stream) and `t_r` is the row's temperature (1 by default): a draw from
//! `softmax(l / t_r)`. Gumbel-top-k (Kool et al. 2019) returns the indices of the `top` largest
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
//! Top-k runs `top` rounds of arg-max, each keeping only the entries after the previous winner:
//! exact, but `O(top * k)` work (each round reads the row and regenerates its noise again), so
//! `top` is limited to [`MAX_TOP`]; it suits top-k in the tens, not full permutations of big rows.
//!
//! ## Paths, chosen from the shape ([`Sampler::strategy_for`])
//! * `k <= 32`: one invocation per row (bulk categorical latents: millions of small rows);
//! * mid `k`: a segment of 4..256 invocations per row (a power of two, about 4 Philox blocks =
//!   16 elements per invocation), 256 / segment rows per workgroup, and a tree reduction of
//!   `(value, index)` per segment in workgroup memory (no subgroup operations);
//! * `k >= 8192` with fewer than 128 rows (LM token sampling at small batch, e.g. 1 x 131072 or
//!   8 x 131072): each row is split over up to 1024 / rows workgroups (at least 4096 elements
//!   each); each writes its partial top list per (row, chunk) to a scratch buffer, and a second
//!   tiny pass (one workgroup per row) combines them. The order is total, so the result does not
//!   depend on the split.
//!
//! Every path reads each logit once per round (2 or 4 bytes) and calls Philox once per 4
//! consecutive elements (a block of the stream), in registers.
//!
//! **llvmpipe** (Mesa's software adapter, Vulkan and GL) ends every loop of a shader invocation
//! once their iterations add up to 65535, silently. An invocation here iterates about
//! `top * (blocks it scans + 9)` times: far inside the budget on the automatic paths for
//! `top = 1` (at most ~4100 for a 2^22-wide row), but large `top` on wide rows can exceed it
//! (e.g. `top = 1024` of 65536). On llvmpipe, [`Sampler::record`] estimates the count and returns
//! [`Error::Unsupported`] past the budget instead of a wrong answer; other drivers have no cap.

use crate::family::{
    FamilyCore, FamilySpec, KernelFamily, Params, check_slice, take, uniform_params,
};
use crate::logits::{
    LogitsSlice, LogitsView, check_rows, check_shape, check_taus, check_temperature,
};
use crate::shader::WG_SIZE;
use crate::{Error, Gpu, Stream, Temperature};
use std::sync::Arc;

/// The index a kernel writes where a row has no (further) entry to draw.
pub const NO_INDEX: u32 = u32::MAX;

/// The largest `top` of Gumbel-top-k (the kernels do `top` passes over each row).
pub const MAX_TOP: usize = 1024;

/// Rows with at most this many categories take one invocation per row.
const THREAD_MAX_K: u64 = 32;
/// Longer rows get a segment of invocations sized for about this many Philox blocks each (a
/// whole workgroup from k = 4096 up).
const SEGMENT_BLOCKS: u64 = 4;
/// Rows at least this long are split across workgroups when there are few of them...
const SPLIT_MIN_K: u64 = 8192;
/// ...namely fewer than this many rows (too few workgroups to fill a GPU).
const SPLIT_MAX_ROWS: u64 = 128;
/// The split path aims at about this many workgroups in all...
const SPLIT_TARGET_GROUPS: u64 = 1024;
/// ...with at least this many elements per chunk.
const SPLIT_MIN_CHUNK: u64 = 4096;

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
    /// per-row slice of `rows` f32 is not (each must be finite, normal and > 0).
    pub tau: Temperature<wgpu::BufferSlice<'a>>,
    /// The noise: element `j` of row `r` uses word `r * k + j`.
    pub stream: Stream,
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
    }
}

/// The sampling kernels (`shaders/sample.wgsl`): own their bind-group layout and pipelines.
/// Get them with [`Gpu::sampler`].
pub struct Sampler {
    core: FamilyCore,
    thread: wgpu::ComputePipeline,
    group: wgpu::ComputePipeline,
    partial: wgpu::ComputePipeline,
    combine: wgpu::ComputePipeline,
}

/// Loop iterations one invocation of `strategy` runs, about `top * (blocks it scans + 9)` per
/// pass (the module docs); the split path's combine pass scans `chunks * top` candidates a round.
fn loop_iterations(strategy: SampleStrategy, k: u64, top: u64) -> u64 {
    let blocks = k / 4 + 2;
    let per_round = match strategy {
        SampleStrategy::RowPerThread | SampleStrategy::Auto => blocks,
        SampleStrategy::RowPerSegment { threads } => blocks.div_ceil(u64::from(threads.max(1))),
        SampleStrategy::RowPerWorkgroup => blocks.div_ceil(u64::from(WG_SIZE)),
        SampleStrategy::SplitRow { chunks } => {
            let c = u64::from(chunks.max(1));
            blocks
                .div_ceil(c * u64::from(WG_SIZE))
                .max((c * top).div_ceil(u64::from(WG_SIZE)))
        }
    };
    top * (per_round + 9)
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
        ],
    };

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        let [thread, group, partial, combine] = take(pipelines)?;
        Ok(Sampler {
            core,
            thread,
            group,
            partial,
            combine,
        })
    }
}

impl Sampler {
    /// The path [`Sampler::record`] takes for `rows x k` logits (forced strategies are returned
    /// as given, `SplitRow { chunks: 0 }` with its chunk count filled in).
    #[doc(hidden)]
    pub fn strategy_for(rows: u64, k: u64, strategy: SampleStrategy) -> SampleStrategy {
        let (rows, k) = (rows.max(1), k.max(1));
        let auto_chunks = || {
            let c = SPLIT_TARGET_GROUPS
                .div_ceil(rows)
                .min(k.div_ceil(SPLIT_MIN_CHUNK))
                .max(1);
            SampleStrategy::SplitRow { chunks: c as u32 }
        };
        match strategy {
            SampleStrategy::Auto if k <= THREAD_MAX_K => SampleStrategy::RowPerThread,
            SampleStrategy::Auto if k >= SPLIT_MIN_K && rows < SPLIT_MAX_ROWS => auto_chunks(),
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
    /// them). The split-row path keeps its scratch buffer (`rows * chunks * top * 8` bytes per
    /// dispatch) across calls. `Err` for bad views (naming the argument), `k = 0`, a `top` out of
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
        job.logits.check("logits")?;
        if top == 0 || u64::from(top) > k || top as usize > MAX_TOP {
            return Err(Error::InvalidArgument(format!(
                "top = {top} must be in 1..=min(k, {MAX_TOP}) (k = {k})"
            )));
        }
        check_slice("out", job.out, rows * u64::from(top) * 4)?;
        check_temperature(&job.tau, rows)?;
        if rows == 0 {
            return Ok(());
        }
        let strategy = Self::strategy_for(rows, k, strategy);
        if let SampleStrategy::RowPerSegment { threads } = strategy
            && !(threads.is_power_of_two() && threads <= WG_SIZE)
        {
            return Err(Error::InvalidArgument(format!(
                "{threads} invocations per row: must be a power of two up to {WG_SIZE}"
            )));
        }
        let chunks = match strategy {
            SampleStrategy::SplitRow { chunks } => u64::from(chunks),
            _ => 1,
        };
        self.core.check_loop_budget(
            loop_iterations(strategy, k, u64::from(top)),
            &format!("top {top} of rows of {k} logits"),
        )?;
        // Rows per dispatch: each window must fit one storage binding, and so must the split
        // path's scratch.
        let rows_per_dispatch = self
            .core
            .rows_per_dispatch(rows, k.max(chunks * u64::from(top) * 2))?;
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
        let logits = core.window(job.logits.data, r0 * k, n * k, job.logits.format.bytes());
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
        let scratch = match strategy {
            SampleStrategy::SplitRow { .. } => Some(core.scratch(n * u64::from(chunks) * top * 8)?),
            _ => None,
        };
        let [key_lo, key_hi, block0_lo, block0_hi, phase] =
            job.stream.advance(r0 * k).kernel_words();
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
        };
        let scratch = scratch
            .as_ref()
            .map_or(core.unused(4).binding, |s| s.as_entire_buffer_binding());
        let bindings = [logits.binding, temps.binding, out.binding, scratch];
        match strategy {
            SampleStrategy::RowPerThread => core.dispatch(
                encoder,
                &params,
                &bindings,
                &[(&self.thread, n.div_ceil(u64::from(WG_SIZE)))],
            ),
            SampleStrategy::SplitRow { .. } => core.dispatch(
                encoder,
                &params,
                &bindings,
                &[(&self.partial, n * u64::from(chunks)), (&self.combine, n)],
            ),
            _ => core.dispatch(
                encoder,
                &params,
                &bindings,
                &[(&self.group, n.div_ceil(u64::from(WG_SIZE / seg)))],
            ),
        }
    }
}

/// Options of [`Gpu::sample_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SampleOptions<'a> {
    /// One temperature per row (finite, > 0): row `r` samples from `softmax(l / t_r)`.
    pub temperatures: Option<&'a [f32]>,
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
            },
            top: top as u32,
            tau: temps.as_ref().map_or(Temperature::Scalar(1.0), |t| {
                Temperature::PerRow(t.slice(..))
            }),
            stream,
            out: out.slice(..),
        };
        self.run_and_read(
            |enc| kernels.record_path(enc, &job, options.strategy),
            &out,
            len,
        )
    }
}
