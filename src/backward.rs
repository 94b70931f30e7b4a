//! The Gumbel-Softmax backward pass (`shaders/softmax_backward.wgsl`): the vector-Jacobian
//! product of `y = softmax((l + g) / tau)` per row,
//!
//! * soft: `dL/dl = (1/tau) * y * (dy - sum_j dy_j y_j)`;
//! * log space (`x = log y = z - logsumexp(z)`): `dL/dl = (1/tau) * (dx - y * sum_j dx_j)`.
//!
//! `y` comes either from a stored forward output, or is **recomputed** from the logits and the
//! forward's [`Stream`] (the same noise, word `r * k + j` for element `j` of row `r`), so nothing
//! needs to be kept between the forward and the backward pass.
//!
//! **Hard (straight-through) samples:** the forward emits the one-hot of the argmax but the
//! gradient is the soft one: pass the gradient of the one-hot output as `dy` to the soft backward
//! (stored soft `y`, or recomputed with the same `tau` and stream); see
//! [`Gpu::gumbel_softmax_hard_backward`].
//!
//! **Dead entries** get a gradient of exactly 0 and are left out of the row sums: masked (-inf)
//! logits, `y_j = 0` in the stored soft form, `x_j = -inf` in the stored log form, and the finite
//! entries of a row holding +inf logits (the forward gives those exactly 0).
//!
//! Temperatures are one `tau` for the batch, or one per row ([`Temperature::PerRow`]).
//!
//! Strategies, picked from the shape (every path computes the same function; tests force each):
//! * `k <=` [`ROW_PER_THREAD_MAX_K`]: one invocation per row, two sweeps over the row (the second
//!   hits the cache);
//! * `k <=` [`ROW_PER_TEAM_MAX_K`]: a team of 32 invocations per row, 8 rows per workgroup, the
//!   row held in registers (read once);
//! * longer rows: one workgroup per row, up to 4094 entries held in registers (read once), the
//!   rest of a longer row re-read in the write sweep;
//! * `k >=` [`SPLIT_MIN_K`] with fewer than [`SPLIT_MAX_ROWS`] rows: each row split over
//!   workgroups of 4096 entries; a first dispatch writes their partial states (online
//!   log-sum-exp), a second merges a row's partials and writes the gradients (the input is read
//!   twice, the second time typically from L2).
//!
//! Every path regenerates the noise in registers, four entries per Philox call, and reduces in
//! workgroup memory (no subgroup operations).

use crate::family::{
    FamilyCore, FamilySpec, KernelFamily, Params, check_no_alias, check_slice, take, uniform_params,
};
use crate::logits::{
    LogitsFormat, LogitsSlice, LogitsView, check_rows, check_shape, check_tau, check_taus,
    check_temperature,
};
use crate::shader::WG_SIZE;
use crate::softmax::GumbelSoftmax;
use crate::{Error, Gpu, Stream, Temperature};
use std::sync::Arc;

/// Which gradient the backward pass receives and which form of the forward it differentiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GradSpace {
    /// The gradient `dy` of the sample `y` (soft, or hard through the straight-through estimator).
    Probs,
    /// The gradient `dx` of the log-space sample `x = log y`.
    LogProbs,
}

/// Where the backward pass gets the forward's `y` from. Its view gives the job's `rows` and `k`.
#[derive(Clone, Copy, Debug)]
pub enum BackwardInput<'a> {
    /// A stored soft sample `y` (format [`LogitsFormat::F32`], else an error naming `"y"`); the
    /// gradient is `dy`.
    Probs(LogitsView<'a>),
    /// A stored log-space sample `x = log y` (F32, -inf where masked; else an error naming
    /// `"y"`); the gradient is `dx`.
    LogProbs(LogitsView<'a>),
    /// Recompute `y` (or `log y`) from the forward's logits (any [`LogitsFormat`]) and stream.
    Logits {
        /// The forward's logits, `rows x k`.
        logits: LogitsView<'a>,
        /// The forward's stream.
        stream: Stream,
        /// Whether the gradient is of `y` or of `log y`.
        space: GradSpace,
    },
}

impl<'a> BackwardInput<'a> {
    /// The view, the name errors give it, the stream and the kernel mode.
    fn parts(&self) -> (LogitsView<'a>, &'static str, Stream, u32) {
        match *self {
            BackwardInput::Probs(v) => (v, "y", Stream::new(0), 0),
            BackwardInput::LogProbs(v) => (v, "y", Stream::new(0), MODE_LOG),
            BackwardInput::Logits {
                logits,
                stream,
                space,
            } => (
                logits,
                "logits",
                stream,
                MODE_RECOMPUTE
                    | match space {
                        GradSpace::Probs => 0,
                        GradSpace::LogProbs => MODE_LOG,
                    },
            ),
        }
    }
}

/// One backward job at the buffer level. Every slice may start at any multiple of 4 bytes of
/// its buffer (which needs `STORAGE` usage); a bad one is [`Error::InvalidArgument`] naming it
/// (`"y"`, `"logits"`, `"grad"`, `"tau"`, `"out"`).
#[derive(Clone, Copy, Debug)]
pub struct BackwardJob<'a> {
    /// The forward's sample or logits, with the shape `rows x k`; its view's rows may be
    /// [`LogitsView::stride`] elements apart (`grad` and `out` are dense).
    pub input: BackwardInput<'a>,
    /// `dy` or `dx` (f32, `rows x k`).
    pub grad: wgpu::BufferSlice<'a>,
    /// The forward's temperature: a scalar (checked here: finite, normal, > 0), or a slice of
    /// `rows` f32 (a row whose value is not finite, normal and > 0 gets NaN in every element,
    /// as in the forward).
    pub tau: Temperature<wgpu::BufferSlice<'a>>,
    /// Receives `dL/dl` (f32, `rows x k`).
    pub out: wgpu::BufferSlice<'a>,
    /// Optional status words, as the forward's ([`crate::SoftmaxJob::status`]): at least
    /// [`GumbelSoftmax::STATUS_WORDS`] u32 the caller sets to [`GumbelSoftmax::STATUS_CLEAR`]
    /// first; the kernel lowers word 2 to the index of the first row (of the whole job) whose
    /// per-row temperature is not a normal, finite, positive f32, and leaves words 0 and 1 (the
    /// forward's NaN and all -inf rows, which the backward does not look for) alone.
    /// [`GumbelSoftmax::status_result`] decodes them. Unused with a scalar temperature (checked
    /// on the host).
    pub status: Option<wgpu::BufferSlice<'a>>,
}

impl<'a> BackwardJob<'a> {
    /// A job without a status buffer.
    pub fn new(
        input: BackwardInput<'a>,
        grad: wgpu::BufferSlice<'a>,
        tau: Temperature<wgpu::BufferSlice<'a>>,
        out: wgpu::BufferSlice<'a>,
    ) -> Self {
        BackwardJob {
            input,
            grad,
            tau,
            out,
            status: None,
        }
    }
}

/// Kernel choice of the backward and density families; `Auto` picks from the shape
/// ([`row_path`]). The others exist so tests reach every path.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowPath {
    Auto,
    RowPerThread,
    RowPerTeam,
    RowPerWorkgroup,
    SplitRows,
}

/// Rows of at most this many entries take the one-invocation-per-row kernel.
pub const ROW_PER_THREAD_MAX_K: u64 = 32;
/// Rows of at most this many entries (and more than [`ROW_PER_THREAD_MAX_K`]) take a team of 32
/// invocations each, 8 rows per workgroup.
pub const ROW_PER_TEAM_MAX_K: u64 = 512;
/// Invocations per row in the team kernels (a power of two dividing `WG_SIZE`).
pub(crate) const TEAM_SIZE: u32 = 32;
/// Rows of at least this many entries, when there are fewer than [`SPLIT_MAX_ROWS`] of them,
/// are split over several workgroups (partial states, then a second pass).
pub const SPLIT_MIN_K: u64 = 16384;
/// See [`SPLIT_MIN_K`].
pub const SPLIT_MAX_ROWS: u64 = 1024;

/// The path of a `rows x k` job of the backward and density families: `forced` unless it is
/// [`RowPath::Auto`], else one invocation per row up to [`ROW_PER_THREAD_MAX_K`], a team up to
/// [`ROW_PER_TEAM_MAX_K`], split rows for few ([`SPLIT_MAX_ROWS`]) long ([`SPLIT_MIN_K`]) rows,
/// and a workgroup per row otherwise.
pub(crate) fn row_path(rows: u64, k: u64, forced: RowPath) -> RowPath {
    match forced {
        RowPath::Auto if k <= ROW_PER_THREAD_MAX_K => RowPath::RowPerThread,
        RowPath::Auto if k <= ROW_PER_TEAM_MAX_K => RowPath::RowPerTeam,
        RowPath::Auto if k >= SPLIT_MIN_K && rows < SPLIT_MAX_ROWS => RowPath::SplitRows,
        RowPath::Auto => RowPath::RowPerWorkgroup,
        p => p,
    }
}

/// Workgroups of one dispatch of `rows` rows on `path` (`segs` workgroups per split row).
pub(crate) fn row_groups(path: RowPath, rows: u64, segs: u64) -> u64 {
    match path {
        RowPath::RowPerThread => rows.div_ceil(u64::from(WG_SIZE)),
        RowPath::RowPerTeam => rows.div_ceil(u64::from(WG_SIZE / TEAM_SIZE)),
        RowPath::SplitRows => rows * segs,
        _ => rows,
    }
}

uniform_params! {
    /// The backward kernels' parameters (`shaders/softmax_backward.wgsl`).
    struct BackwardParams {
        /// Rows and k of this dispatch.
        rows: u32,
        k: u32,
        /// MODE_RECOMPUTE | MODE_LOG.
        mode: u32,
        /// The logits' LogitsFormat code (recompute modes).
        format: u32,
        /// The stream at this dispatch's first element (Stream::kernel_words).
        key_lo: u32,
        key_hi: u32,
        block0_lo: u32,
        block0_hi: u32,
        phase: u32,
        /// The scalar temperature, 1 / tau, and -min(60 tau, 1.7e38) (sexp's clamp).
        tau: f32,
        inv_tau: f32,
        clamp_half: f32,
        /// Element index of this dispatch's first element inside each binding (bindings start
        /// at device-aligned offsets): input (in its format's elements), grad, out, and the
        /// first row's temperature.
        input_base: u32,
        grad_base: u32,
        out_base: u32,
        tau_base: u32,
        /// Whether binding 4 holds per-row temperatures.
        per_row: u32,
        /// Split rows: segments per row, Philox blocks per segment.
        segs: u32,
        seg_blocks: u32,
        /// Invocations per row in row_per_team.
        team: u32,
        /// The input view's stride - k (elements between rows beyond k).
        row_pad: u32,
        /// Whether binding 6 holds the status words; the job's index of this dispatch's
        /// first row; the status words' element index in binding 6.
        use_status: u32,
        row0: u32,
        status_base: u32,
    }
}

/// Philox blocks (groups of 4 entries) per segment of a split row: 4 per invocation.
const SEG_BLOCKS: u64 = 4 * WG_SIZE as u64;
/// 32-bit words of the shader's `State` (m, s, t, d, inf).
const STATE_WORDS: u64 = 5;

const MODE_RECOMPUTE: u32 = 1;
const MODE_LOG: u32 = 2;

/// The Gumbel-Softmax backward kernels: own their pipelines (on the shared family skeleton).
pub struct GumbelSoftmaxBackward {
    core: FamilyCore,
    row_per_thread: wgpu::ComputePipeline,
    row_per_workgroup: wgpu::ComputePipeline,
    segment_partials: wgpu::ComputePipeline,
    segment_write: wgpu::ComputePipeline,
    row_per_team: wgpu::ComputePipeline,
}

impl KernelFamily for GumbelSoftmaxBackward {
    const SPEC: FamilySpec = FamilySpec {
        name: "softmax_backward",
        source: include_str!("../shaders/softmax_backward.wgsl"),
        params: BackwardParams::WGSL,
        // input, grad, out, taus, partials, status
        storage_read_only: &[true, true, false, true, false, false],
        entry_points: &[
            "row_per_thread",
            "row_per_workgroup",
            "segment_partials",
            "segment_write",
            "row_per_team",
        ],
        stepped: false,
    };

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        let [
            row_per_thread,
            row_per_workgroup,
            segment_partials,
            segment_write,
            row_per_team,
        ] = take(pipelines)?;
        Ok(GumbelSoftmaxBackward {
            core,
            row_per_thread,
            row_per_workgroup,
            segment_partials,
            segment_write,
            row_per_team,
        })
    }
}

impl GumbelSoftmaxBackward {
    /// Records the backward pass of `job` into `encoder`. Never submits. Inputs larger than one
    /// storage binding are split into dispatches of whole rows (the stream advances with them);
    /// the split-row path keeps its partial states in a scratch buffer reused across calls.
    /// `Err` for a bad view or slice (naming it), a stored input not in f32, or a bad scalar
    /// temperature.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &BackwardJob<'_>,
    ) -> Result<(), Error> {
        self.record_path(encoder, job, RowPath::Auto)
    }

    /// [`Self::record`] with the kernel chosen by the caller (tests reach every path with it).
    #[doc(hidden)]
    pub fn record_path(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &BackwardJob<'_>,
        path: RowPath,
    ) -> Result<(), Error> {
        let (view, name, stream, mode) = job.input.parts();
        if mode & MODE_RECOMPUTE == 0 && view.format != LogitsFormat::F32 {
            return Err(Error::InvalidArgument(format!(
                "{name}: a stored forward output must be f32, not {:?}",
                view.format
            )));
        }
        // A strided view (logits, or a stored y / log y) is read in place, row r at element
        // r * stride; grad and out stay dense `rows x k`. rows * k <= rows * stride, which the
        // check bounds.
        view.check_strided(name)?;
        let (rows, k) = (view.rows, view.k);
        let (len, stride) = (rows * k, view.row_stride());
        check_slice("grad", job.grad, len * 4)?;
        check_slice("out", job.out, len * 4)?;
        if let Some(s) = job.status {
            check_slice("status", s, GumbelSoftmax::STATUS_WORDS as u64 * 4)?;
        }
        check_temperature(&job.tau, rows)?;
        if rows > u64::from(u32::MAX) {
            return Err(Error::TooLarge(format!("{rows} rows in one job")));
        }
        check_no_alias(
            &[
                (name, Some(view.data)),
                ("grad", Some(job.grad)),
                ("tau", job.tau.per_row()),
            ],
            &[("out", Some(job.out)), ("status", job.status)],
        )?;
        if len == 0 {
            return Ok(());
        }
        let path = row_path(rows, k, path);
        // Segments per row for SplitRows: a row spans at most (k + 6) / 4 Philox blocks.
        let segs = (k + 6).div_ceil(4).div_ceil(SEG_BLOCKS);
        let per_dispatch = self.core.rows_per_dispatch(rows, stride)?;
        let core = &self.core;
        core.scoped(|| {
            let mut r0 = 0u64;
            while r0 < rows {
                let n = per_dispatch.min(rows - r0);
                let (e0, len) = (r0 * k, n * k);
                let input = core.window(view.data, r0 * stride, view.span(n), view.format.bytes());
                let grad = core.window(job.grad, e0, len, 4);
                let out = core.window(job.out, e0, len, 4);
                let (tau, taus) = match job.tau {
                    Temperature::Scalar(t) => (t, core.unused(4)),
                    Temperature::PerRow(s) => (1.0, core.window(s, r0, n, 4)),
                };
                let status = match job.status {
                    Some(s) => core.window(s, 0, GumbelSoftmax::STATUS_WORDS as u64, 4),
                    None => core.unused(6),
                };
                let groups = row_groups(path, n, segs);
                // The partial states of split rows; other paths leave the binding unused, but
                // it must hold one State.
                let partials = core.scratch(STATE_WORDS * 4 * groups.max(1))?;
                let [key_lo, key_hi, block0_lo, block0_hi, phase] =
                    stream.advance(e0).kernel_words();
                let t = f64::from(tau);
                let params = BackwardParams {
                    rows: n as u32,
                    k: k as u32,
                    mode,
                    format: view.format.code(),
                    key_lo,
                    key_hi,
                    block0_lo,
                    block0_hi,
                    phase,
                    tau,
                    inv_tau: (1.0 / t) as f32,
                    clamp_half: -(60.0 * t).min(1.7e38) as f32,
                    input_base: input.base,
                    grad_base: grad.base,
                    out_base: out.base,
                    tau_base: taus.base,
                    per_row: u32::from(matches!(job.tau, Temperature::PerRow(_))),
                    segs: segs as u32,
                    seg_blocks: SEG_BLOCKS as u32,
                    row_pad: (stride - k) as u32,
                    team: TEAM_SIZE,
                    use_status: u32::from(job.status.is_some()),
                    row0: r0 as u32,
                    status_base: status.base,
                };
                let bindings = [
                    input.binding,
                    grad.binding,
                    out.binding,
                    taus.binding,
                    partials.as_entire_buffer_binding(),
                    status.binding,
                ];
                let passes: &[(&wgpu::ComputePipeline, u64)] = match path {
                    RowPath::RowPerThread => &[(&self.row_per_thread, groups)],
                    RowPath::RowPerTeam => &[(&self.row_per_team, groups)],
                    RowPath::SplitRows => &[
                        (&self.segment_partials, groups),
                        (&self.segment_write, groups),
                    ],
                    _ => &[(&self.row_per_workgroup, groups)],
                };
                core.dispatch(encoder, &params, &bindings, passes)?;
                r0 += n;
            }
            Ok(())
        })
    }
}

/// What the forward produced, on the host: the input of [`Gpu::gumbel_softmax_backward_with`].
#[derive(Clone, Copy, Debug)]
pub enum BackwardSlice<'a> {
    /// A stored soft sample `y` (`rows x k`).
    Probs(&'a [f32]),
    /// A stored log-space sample `x = log y` (-inf where masked).
    LogProbs(&'a [f32]),
    /// Recompute from the logits and the forward's stream; nothing stored between the passes.
    Logits {
        /// The forward's logits (f32, f16 or bf16).
        logits: LogitsSlice<'a>,
        /// The forward's stream.
        stream: Stream,
        /// Whether the gradient is of `y` or of `log y`.
        space: GradSpace,
    },
}

fn check_grad(grad: &[f32], k: usize) -> Result<(), Error> {
    match grad.iter().position(|x| x.is_nan()) {
        Some(i) => Err(Error::InvalidArgument(format!(
            "the gradient holds NaN in row {}",
            i / k
        ))),
        None => Ok(()),
    }
}

impl Gpu {
    /// The Gumbel-Softmax backward kernels of this device (built on first use).
    pub fn gumbel_softmax_backward_kernels(&self) -> Result<Arc<GumbelSoftmaxBackward>, Error> {
        self.family::<GumbelSoftmaxBackward>()
    }

    /// The general slice-level backward pass (blocking): any forward form (stored `y`, stored
    /// `log y`, or recomputed from f32/f16/bf16 logits), a scalar or per-row temperature, and
    /// the gradient `grad` of the forward's output. Errors: shapes, bad temperatures (naming the
    /// row), NaN in the input or `grad`, NaN or all -inf rows of logits or of `log y`.
    pub fn gumbel_softmax_backward_with(
        &self,
        input: BackwardSlice<'_>,
        grad: &[f32],
        k: usize,
        tau: Temperature<&[f32]>,
    ) -> Result<Vec<f32>, Error> {
        self.gumbel_softmax_backward_path(input, grad, k, tau, RowPath::Auto)
    }

    /// [`Gpu::gumbel_softmax_backward_with`] with the kernel chosen by `path` (tests).
    #[doc(hidden)]
    pub fn gumbel_softmax_backward_path(
        &self,
        input: BackwardSlice<'_>,
        grad: &[f32],
        k: usize,
        tau: Temperature<&[f32]>,
        path: RowPath,
    ) -> Result<Vec<f32>, Error> {
        let len = match input {
            BackwardSlice::Probs(y) | BackwardSlice::LogProbs(y) => y.len(),
            BackwardSlice::Logits { logits, .. } => logits.len(),
        };
        let rows = check_shape(len, k)?;
        if grad.len() != len {
            return Err(Error::InvalidArgument(format!(
                "the gradient has {} entries; the forward has {len}",
                grad.len()
            )));
        }
        if u32::try_from(k).is_err() {
            return Err(Error::TooLarge(format!("k = {k}")));
        }
        match tau {
            Temperature::Scalar(t) => check_tau(t)?,
            Temperature::PerRow(taus) => check_taus(taus, rows)?,
        }
        match input {
            BackwardSlice::Probs(y) => {
                if let Some(i) = y.iter().position(|x| x.is_nan()) {
                    return Err(Error::NanInRow { row: i / k });
                }
            }
            BackwardSlice::LogProbs(x) => check_rows(x.iter().copied(), k)?,
            BackwardSlice::Logits { logits, .. } => check_rows(logits.values(), k)?,
        }
        check_grad(grad, k)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let kernels = self.gumbel_softmax_backward_kernels()?;
        let grad_buf = self.upload("backward grad", grad)?;
        let out = self.storage_buffer("backward out", len as u64 * 4)?;
        let input_buf = match input {
            BackwardSlice::Probs(y) | BackwardSlice::LogProbs(y) => self.upload("backward y", y)?,
            BackwardSlice::Logits { logits, .. } => {
                self.upload("backward logits", &logits.words())?
            }
        };
        let (rows, k) = (rows as u64, k as u64);
        let input = match input {
            BackwardSlice::Probs(_) => {
                BackwardInput::Probs(LogitsView::f32(input_buf.slice(..), rows, k))
            }
            BackwardSlice::LogProbs(_) => {
                BackwardInput::LogProbs(LogitsView::f32(input_buf.slice(..), rows, k))
            }
            BackwardSlice::Logits {
                logits,
                stream,
                space,
            } => BackwardInput::Logits {
                logits: LogitsView {
                    data: input_buf.slice(..),
                    format: logits.format(),
                    rows,
                    k,
                    stride: 0,
                },
                stream,
                space,
            },
        };
        let taus_buf = match tau {
            Temperature::PerRow(t) => Some(self.upload("backward taus", t)?),
            Temperature::Scalar(_) => None,
        };
        let job = BackwardJob {
            input,
            grad: grad_buf.slice(..),
            tau: match (&taus_buf, tau) {
                (Some(b), _) => Temperature::PerRow(b.slice(..)),
                (None, Temperature::Scalar(t)) => Temperature::Scalar(t),
                (None, Temperature::PerRow(_)) => Temperature::Scalar(f32::NAN),
            },
            out: out.slice(..),
            status: None,
        };
        self.submit(|enc| kernels.record_path(enc, &job, path))?;
        self.read_buffer(&out, len)
    }

    /// `dL/dl` from a stored soft sample `y` and its gradient `dy` (both `rows x k`, blocking):
    /// `(1/tau) * y * (dy - sum_j dy_j y_j)` per row; exactly 0 where `y` is 0.
    /// Errors: mismatched lengths or `k`, bad `tau`, NaN in `y` or `dy`.
    ///
    /// ```
    /// use gumbel_wgpu::{Gpu, Stream};
    /// let gpu = Gpu::new()?;
    /// let y = gpu.gumbel_softmax(&[0.5, -0.5, 0.0], 3, 1.0, Stream::new(3))?;
    /// // A gradient that is the same for every entry changes nothing: softmax is shift-invariant.
    /// let dl = gpu.gumbel_softmax_backward(&y, &[2.0, 2.0, 2.0], 3, 1.0)?;
    /// assert!(dl.iter().all(|g| g.abs() < 1e-6));
    /// # Ok::<(), gumbel_wgpu::Error>(())
    /// ```
    pub fn gumbel_softmax_backward(
        &self,
        y: &[f32],
        dy: &[f32],
        k: usize,
        tau: f32,
    ) -> Result<Vec<f32>, Error> {
        self.gumbel_softmax_backward_with(BackwardSlice::Probs(y), dy, k, Temperature::Scalar(tau))
    }

    /// `dL/dl` from a stored log-space sample `x = log y` (-inf where masked) and its gradient
    /// `dx` (blocking): `(1/tau) * (dx - y * sum_j dx_j)` per row, the sum over entries with
    /// `x > -inf`; exactly 0 where `x = -inf`. Errors as [`Gpu::gumbel_softmax_backward`], and
    /// rows of `x` that are all -inf.
    pub fn gumbel_softmax_log_backward(
        &self,
        log_y: &[f32],
        dx: &[f32],
        k: usize,
        tau: f32,
    ) -> Result<Vec<f32>, Error> {
        self.gumbel_softmax_backward_with(
            BackwardSlice::LogProbs(log_y),
            dx,
            k,
            Temperature::Scalar(tau),
        )
    }

    /// `dL/dl` of the soft sample, recomputing `y` from `logits` and the forward's `stream`
    /// (blocking): nothing is stored between the passes. Same result as
    /// [`Gpu::gumbel_softmax_backward`] on the forward's `y`, up to rounding.
    /// Errors: shapes, bad `tau`, NaN or all -inf rows of logits, NaN in `dy`.
    pub fn gumbel_softmax_backward_recompute(
        &self,
        logits: &[f32],
        dy: &[f32],
        k: usize,
        tau: f32,
        stream: Stream,
    ) -> Result<Vec<f32>, Error> {
        self.gumbel_softmax_backward_with(
            BackwardSlice::Logits {
                logits: LogitsSlice::F32(logits),
                stream,
                space: GradSpace::Probs,
            },
            dy,
            k,
            Temperature::Scalar(tau),
        )
    }

    /// `dL/dl` of the log-space sample, recomputing `log y` from `logits` and `stream`
    /// (blocking). Errors as [`Gpu::gumbel_softmax_backward_recompute`].
    pub fn gumbel_softmax_log_backward_recompute(
        &self,
        logits: &[f32],
        dx: &[f32],
        k: usize,
        tau: f32,
        stream: Stream,
    ) -> Result<Vec<f32>, Error> {
        self.gumbel_softmax_backward_with(
            BackwardSlice::Logits {
                logits: LogitsSlice::F32(logits),
                stream,
                space: GradSpace::LogProbs,
            },
            dx,
            k,
            Temperature::Scalar(tau),
        )
    }

    /// The straight-through gradient of a hard (one-hot) Gumbel-Softmax sample: the soft
    /// backward at the same `logits`, `tau` and `stream`, applied to the gradient `dy` of the
    /// one-hot output. Identical to [`Gpu::gumbel_softmax_backward_recompute`].
    pub fn gumbel_softmax_hard_backward(
        &self,
        logits: &[f32],
        dy: &[f32],
        k: usize,
        tau: f32,
        stream: Stream,
    ) -> Result<Vec<f32>, Error> {
        self.gumbel_softmax_backward_recompute(logits, dy, k, tau, stream)
    }
}
