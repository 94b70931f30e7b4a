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

use crate::gpu::{KernelFamily, aligned_binding, check_storage, grid, params_buffer, scoped};
use crate::logits::{LogitsFormat, LogitsSlice, check_rows, check_shape, check_tau};
use crate::shader::WG_SIZE;
use crate::{Error, Gpu, Stream, Temperature};
use std::sync::Arc;

/// Rows of at most this many entries take the one-invocation-per-row kernel.
pub const ROW_PER_THREAD_MAX_K: u32 = 32;

/// Which gradient the backward pass receives and which form of the forward it differentiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GradSpace {
    /// The gradient `dy` of the sample `y` (soft, or hard through the straight-through estimator).
    Probs,
    /// The gradient `dx` of the log-space sample `x = log y`.
    LogProbs,
}

/// Where the backward pass gets the forward's `y` from.
#[derive(Clone, Copy, Debug)]
pub enum BackwardInput<'a> {
    /// A stored soft sample `y` (f32, `rows x k`); the gradient is `dy`.
    Probs(&'a wgpu::Buffer),
    /// A stored log-space sample `x = log y` (f32, -inf where masked); the gradient is `dx`.
    LogProbs(&'a wgpu::Buffer),
    /// Recompute `y` (or `log y`) from the forward's logits and stream.
    Logits {
        /// The logits, `rows x k` in `format`.
        logits: &'a wgpu::Buffer,
        /// Element type of `logits`.
        format: LogitsFormat,
        /// The forward's stream.
        stream: Stream,
        /// Whether the gradient is of `y` or of `log y`.
        space: GradSpace,
    },
}

/// One backward job at the buffer level.
#[derive(Clone, Copy, Debug)]
pub struct BackwardArgs<'a> {
    /// The forward's sample or logits.
    pub input: BackwardInput<'a>,
    /// `dy` or `dx` (f32, `rows x k`).
    pub grad: &'a wgpu::Buffer,
    /// Receives `dL/dl` (f32, `rows x k`).
    pub out: &'a wgpu::Buffer,
    /// Number of rows.
    pub rows: u64,
    /// Categories per row.
    pub k: u32,
    /// The forward's temperature (fixed or per row).
    pub tau: Temperature<&'a wgpu::Buffer>,
}

/// Kernel choice; `Auto` picks from the shape. The others exist so tests reach every path.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowPath {
    Auto,
    RowPerThread,
    RowPerTeam,
    RowPerWorkgroup,
    SplitRows,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct BackwardParams {
    rows: u32,
    k: u32,
    mode: u32,
    format: u32,
    key_lo: u32,
    key_hi: u32,
    block0_lo: u32,
    block0_hi: u32,
    phase: u32,
    tau: f32,
    inv_tau: f32,
    clamp_half: f32,
    base_logits: u32,
    base: u32,
    per_row: u32,
    base_row: u32,
    segs: u32,
    seg_blocks: u32,
    team: u32,
    _pad: u32,
}

/// Size of [`BackwardParams`], checked against the WGSL struct of the same name by `tests/shaders.rs`.
pub(crate) const PARAMS_SIZE: usize = std::mem::size_of::<BackwardParams>();

/// Rows of at most this many entries (and more than [`ROW_PER_THREAD_MAX_K`]) take a team of 32
/// invocations each, 8 rows per workgroup.
pub const ROW_PER_TEAM_MAX_K: u32 = 512;
/// Invocations per row in the team kernel (a power of two dividing `WG_SIZE`).
pub(crate) const TEAM_SIZE: u32 = 32;

/// Rows of at least this many entries, when there are fewer than [`SPLIT_MAX_ROWS`] of them,
/// are split over several workgroups (partial states, then a second pass).
pub const SPLIT_MIN_K: u32 = 16384;
/// See [`SPLIT_MIN_K`].
pub const SPLIT_MAX_ROWS: u64 = 1024;
/// Philox blocks (groups of 4 entries) per segment of a split row: 4 per invocation.
const SEG_BLOCKS: u64 = 4 * WG_SIZE as u64;
/// 32-bit words of the shader's `State` (m, s, t, d, inf).
const STATE_WORDS: u64 = 5;

const MODE_RECOMPUTE: u32 = 1;
const MODE_LOG: u32 = 2;

/// The Gumbel-Softmax backward kernels: owns their bind-group layout and pipelines.
pub struct GumbelSoftmaxBackward {
    device: wgpu::Device,
    layout: wgpu::BindGroupLayout,
    row_per_thread: wgpu::ComputePipeline,
    row_per_workgroup: wgpu::ComputePipeline,
    segment_partials: wgpu::ComputePipeline,
    segment_write: wgpu::ComputePipeline,
    row_per_team: wgpu::ComputePipeline,
    /// Bound as the partial states when a dispatch needs none.
    no_partials: wgpu::Buffer,
    max_chunk: u64,
    align: u64,
    max_groups: u32,
}

impl KernelFamily for GumbelSoftmaxBackward {
    fn build(gpu: &Gpu) -> Result<Self, Error> {
        let module = gpu.shader_module("softmax_backward")?;
        let layout = gpu.storage_layout("softmax_backward", &[true, true, false, true, false]);
        let [
            row_per_thread,
            row_per_workgroup,
            segment_partials,
            segment_write,
            row_per_team,
        ] = gpu.pipelines(
            &module,
            &layout,
            [
                "row_per_thread",
                "row_per_workgroup",
                "segment_partials",
                "segment_write",
                "row_per_team",
            ],
        )?;
        let limits = gpu.limits();
        Ok(GumbelSoftmaxBackward {
            device: gpu.device().clone(),
            layout,
            row_per_thread,
            row_per_workgroup,
            segment_partials,
            segment_write,
            row_per_team,
            no_partials: gpu.storage_buffer("no partials", 4 * STATE_WORDS)?,
            max_chunk: gpu.max_binding_elements(),
            align: u64::from(limits.min_storage_buffer_offset_alignment.max(4)),
            max_groups: limits.max_compute_workgroups_per_dimension,
        })
    }
}

/// Rows per dispatch: as many whole rows as fit one binding, leaving room for the lead-in
/// between an aligned binding offset and the chunk's first element (`align_elems`).
pub(crate) fn rows_per_chunk(
    rows: u64,
    k: u64,
    max_chunk: u64,
    align_elems: u64,
) -> Result<u64, Error> {
    let fit = max_chunk.saturating_sub(align_elems) / k;
    if fit == 0 {
        return Err(Error::TooLarge(format!(
            "a row of k = {k} does not fit one storage binding of {max_chunk} elements"
        )));
    }
    Ok(fit.min(rows))
}

impl GumbelSoftmaxBackward {
    /// Records the backward pass of `args` into `encoder`. Never submits. Inputs larger than one
    /// storage binding are split into dispatches of whole rows (the stream advances with them).
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        args: &BackwardArgs<'_>,
    ) -> Result<(), Error> {
        self.record_path(encoder, args, RowPath::Auto)
    }

    /// [`Self::record`] with the kernel chosen by the caller (tests reach every path with it).
    #[doc(hidden)]
    pub fn record_path(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        args: &BackwardArgs<'_>,
        path: RowPath,
    ) -> Result<(), Error> {
        let (fixed_tau, taus) = match args.tau {
            Temperature::Scalar(t) => {
                check_tau(t)?;
                (t, None)
            }
            Temperature::PerRow(b) => (1.0, Some(b)),
        };
        if args.k == 0 {
            return Err(Error::InvalidArgument(
                "k (categories per row) must be at least 1".into(),
            ));
        }
        let len = args
            .rows
            .checked_mul(u64::from(args.k))
            .and_then(|n| n.checked_mul(4).map(|_| n))
            .ok_or_else(|| Error::TooLarge(format!("{} rows of {}", args.rows, args.k)))?;
        let (input, format, stream, mode) = match args.input {
            BackwardInput::Probs(b) => (b, LogitsFormat::F32, Stream::new(0), 0),
            BackwardInput::LogProbs(b) => (b, LogitsFormat::F32, Stream::new(0), MODE_LOG),
            BackwardInput::Logits {
                logits,
                format,
                stream,
                space,
            } => (
                logits,
                format,
                stream,
                MODE_RECOMPUTE
                    | match space {
                        GradSpace::Probs => 0,
                        GradSpace::LogProbs => MODE_LOG,
                    },
            ),
        };
        check_storage("forward input", input, format.buffer_bytes(len))?;
        check_storage("gradient", args.grad, len * 4)?;
        check_storage("output", args.out, len * 4)?;
        if let Some(b) = taus {
            check_storage("temperatures", b, args.rows * 4)?;
        }
        if len == 0 {
            return Ok(());
        }
        let k = u64::from(args.k);
        let path = match path {
            RowPath::Auto if args.k <= ROW_PER_THREAD_MAX_K => RowPath::RowPerThread,
            RowPath::Auto if args.k <= ROW_PER_TEAM_MAX_K => RowPath::RowPerTeam,
            RowPath::Auto if args.k >= SPLIT_MIN_K && args.rows < SPLIT_MAX_ROWS => {
                RowPath::SplitRows
            }
            RowPath::Auto => RowPath::RowPerWorkgroup,
            p => p,
        };
        // Segments per row for SplitRows: a row spans at most (k + 6) / 4 Philox blocks.
        let segs = (k + 6).div_ceil(4).div_ceil(SEG_BLOCKS);
        let chunk_rows = rows_per_chunk(args.rows, k, self.max_chunk, self.align / 4)?;
        let align = self.align;
        let tau = f64::from(fixed_tau);
        scoped(&self.device, || {
            let mut r0 = 0u64;
            while r0 < args.rows {
                let rows = chunk_rows.min(args.rows - r0);
                let [key_lo, key_hi, block0_lo, block0_hi, phase] =
                    stream.advance(r0 * k).kernel_words();
                let mut params = BackwardParams {
                    rows: rows as u32,
                    k: args.k,
                    mode,
                    format: format.code(),
                    key_lo,
                    key_hi,
                    block0_lo,
                    block0_hi,
                    phase,
                    tau: fixed_tau,
                    inv_tau: (1.0 / tau) as f32,
                    clamp_half: -(60.0 * tau).min(1.7e38) as f32,
                    base_logits: 0,
                    base: 0,
                    per_row: u32::from(taus.is_some()),
                    base_row: 0,
                    segs: segs as u32,
                    seg_blocks: SEG_BLOCKS as u32,
                    team: TEAM_SIZE,
                    _pad: 0,
                };
                let groups = match path {
                    RowPath::RowPerThread => rows.div_ceil(u64::from(WG_SIZE)),
                    RowPath::RowPerTeam => rows.div_ceil(u64::from(WG_SIZE / TEAM_SIZE)),
                    RowPath::SplitRows => rows * segs,
                    _ => rows,
                };
                let groups = u32::try_from(groups)
                    .map_err(|_| Error::TooLarge(format!("{rows} rows in one dispatch")))?;
                let (gx, gy) = grid(groups, self.max_groups);
                let e0 = r0 * k;
                let n = rows * k;
                let (input_res, base_logits) = aligned_binding(input, e0, n, format.bytes(), align);
                let (grad_res, base) = aligned_binding(args.grad, e0, n, 4, align);
                let (out_res, _) = aligned_binding(args.out, e0, n, 4, align);
                params.base_logits = base_logits;
                params.base = base;
                // Without per-row temperatures binding 4 is unused: any 4 bytes will do.
                let (taus_res, base_row) = match taus {
                    Some(b) => aligned_binding(b, r0, rows, 4, align),
                    None => aligned_binding(args.grad, 0, 1, 4, align),
                };
                params.base_row = base_row;
                let partials = if path == RowPath::SplitRows {
                    self.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("softmax_backward partials"),
                        size: u64::from(groups) * 4 * STATE_WORDS,
                        usage: wgpu::BufferUsages::STORAGE,
                        mapped_at_creation: false,
                    })
                } else {
                    self.no_partials.clone()
                };
                let uniform = params_buffer(&self.device, &params)?;
                let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("softmax_backward"),
                    layout: &self.layout,
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: uniform.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: wgpu::BindingResource::Buffer(input_res),
                        },
                        wgpu::BindGroupEntry {
                            binding: 2,
                            resource: wgpu::BindingResource::Buffer(grad_res),
                        },
                        wgpu::BindGroupEntry {
                            binding: 3,
                            resource: wgpu::BindingResource::Buffer(out_res),
                        },
                        wgpu::BindGroupEntry {
                            binding: 4,
                            resource: wgpu::BindingResource::Buffer(taus_res),
                        },
                        wgpu::BindGroupEntry {
                            binding: 5,
                            resource: partials.as_entire_binding(),
                        },
                    ],
                });
                let pipelines: &[&wgpu::ComputePipeline] = match path {
                    RowPath::RowPerThread => &[&self.row_per_thread],
                    RowPath::RowPerTeam => &[&self.row_per_team],
                    RowPath::SplitRows => &[&self.segment_partials, &self.segment_write],
                    _ => &[&self.row_per_workgroup],
                };
                // One pass per kernel: the second reads what the first wrote.
                for pipeline in pipelines {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("softmax_backward"),
                        timestamp_writes: None,
                    });
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, &bind, &[]);
                    pass.dispatch_workgroups(gx, gy, 1);
                }
                r0 += rows;
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
        let k32 = u32::try_from(k).map_err(|_| Error::TooLarge(format!("k = {k}")))?;
        match tau {
            Temperature::Scalar(t) => check_tau(t)?,
            Temperature::PerRow(taus) => {
                if taus.len() != rows {
                    return Err(Error::InvalidArgument(format!(
                        "{} temperatures for {rows} rows",
                        taus.len()
                    )));
                }
                for (r, &t) in taus.iter().enumerate() {
                    check_tau(t).map_err(|_| {
                        Error::InvalidArgument(format!(
                            "temperature {t} of row {r} must be finite and > 0"
                        ))
                    })?;
                }
            }
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
        let input = match input {
            BackwardSlice::Probs(_) => BackwardInput::Probs(&input_buf),
            BackwardSlice::LogProbs(_) => BackwardInput::LogProbs(&input_buf),
            BackwardSlice::Logits {
                logits,
                stream,
                space,
            } => BackwardInput::Logits {
                logits: &input_buf,
                format: logits.format(),
                stream,
                space,
            },
        };
        let taus_buf = match tau {
            Temperature::PerRow(t) => Some(self.upload("backward taus", t)?),
            Temperature::Scalar(_) => None,
        };
        let args = BackwardArgs {
            input,
            grad: &grad_buf,
            out: &out,
            rows: rows as u64,
            k: k32,
            tau: match (&taus_buf, tau) {
                (Some(b), _) => Temperature::PerRow(b),
                (None, Temperature::Scalar(t)) => Temperature::Scalar(t),
                (None, Temperature::PerRow(_)) => Temperature::Scalar(f32::NAN),
            },
        };
        self.submit(|enc| kernels.record_path(enc, &args, path))?;
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
