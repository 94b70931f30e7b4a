//! The Concrete / Gumbel-Softmax log-density (`shaders/concrete_density.wgsl`), one value per row.
//!
//! For logits `l`, temperature `tau` and a log-space sample `x = log y` of a row with `c` live
//! (unmasked) categories, with `s_i = l_i - tau * x_i`:
//!
//! `log p(x) = lgamma(c) + (c - 1) * log(tau) + sum_i s_i - c * logsumexp_i(s_i)`
//!
//! which is TensorFlow Probability's `ExpRelaxedOneHotCategorical.log_prob` and PyTorch's
//! `ExpRelaxedCategorical.log_prob` (`lgamma(K) - log(tau) * -(K - 1)` plus
//! `sum(score - logsumexp(score))`, `score = logits - value * tau`). On the simplex,
//! the density of `y` (with respect to Lebesgue measure on its first `c - 1` coordinates;
//! Maddison et al. 2017, eq. 3) is `log p(y) = log p(x) - sum_i x_i`.
//!
//! Masked (-inf) logits are left out: the row is a Concrete distribution over its live
//! categories, and `x` at masked entries is ignored. The density needs finite `x` at live
//! entries (a sample on the simplex's boundary has density 0 or unbounded) and no +inf logit.
//!
//! Strategies (each reads every entry once; tests force each): rows of up to
//! [`crate::ROW_PER_THREAD_MAX_K`] entries take one invocation per row, up to
//! [`crate::ROW_PER_TEAM_MAX_K`] a team of 32 invocations, longer rows a workgroup; rows of at
//! least [`crate::SPLIT_MIN_K`] entries, fewer than [`crate::SPLIT_MAX_ROWS`] of them, are split
//! over workgroups of 4096 entries whose partial states a second, tiny pass merges.

use crate::backward::{
    ROW_PER_TEAM_MAX_K, RowPath, SPLIT_MAX_ROWS, SPLIT_MIN_K, TEAM_SIZE, rows_per_chunk,
};
use crate::gpu::{KernelFamily, aligned_binding, check_storage, grid, params_buffer, scoped};
use crate::logits::{LogitsFormat, check_rows, check_shape, check_tau};
use crate::shader::WG_SIZE;
use crate::{Error, Gpu, ROW_PER_THREAD_MAX_K};
use std::sync::Arc;

/// One density job at the buffer level.
#[derive(Clone, Copy, Debug)]
pub struct DensityArgs<'a> {
    /// Logits, `rows x k` in `format`; -inf marks a masked category.
    pub logits: &'a wgpu::Buffer,
    /// Element type of `logits`.
    pub format: LogitsFormat,
    /// The log-space samples `x = log y`, f32, `rows x k`.
    pub log_y: &'a wgpu::Buffer,
    /// Receives one f32 per row.
    pub out: &'a wgpu::Buffer,
    /// Number of rows.
    pub rows: u64,
    /// Categories per row.
    pub k: u32,
    /// The distribution's temperature.
    pub tau: f32,
    /// `false`: the log-space density `log p(x)`; `true`: the simplex density `log p(y)`.
    pub simplex: bool,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct DensityParams {
    rows: u32,
    k: u32,
    format: u32,
    simplex: u32,
    tau: f32,
    log_tau: f32,
    base_logits: u32,
    base: u32,
    base_out: u32,
    team: u32,
    segs: u32,
    seg_len: u32,
}

/// Size of [`DensityParams`], checked against the WGSL struct of the same name by `tests/shaders.rs`.
pub(crate) const PARAMS_SIZE: usize = std::mem::size_of::<DensityParams>();

/// Entries per segment of a split row (16 per invocation).
const SEG_LEN: u64 = 16 * WG_SIZE as u64;
/// 32-bit words of the shader's `State` (m, e, sum_s, sum_x, c, bad).
const STATE_WORDS: u64 = 6;

/// The Concrete log-density kernels: own their bind-group layout and pipelines.
pub struct ConcreteDensity {
    device: wgpu::Device,
    layout: wgpu::BindGroupLayout,
    row_per_thread: wgpu::ComputePipeline,
    row_per_workgroup: wgpu::ComputePipeline,
    row_per_team: wgpu::ComputePipeline,
    segment_partials: wgpu::ComputePipeline,
    segment_finish: wgpu::ComputePipeline,
    /// Bound as the partial states when a dispatch needs none.
    no_partials: wgpu::Buffer,
    max_chunk: u64,
    align: u64,
    max_groups: u32,
}

impl KernelFamily for ConcreteDensity {
    fn build(gpu: &Gpu) -> Result<Self, Error> {
        let module = gpu.shader_module("concrete_density")?;
        let layout = gpu.storage_layout("concrete_density", &[true, true, false, false]);
        let [
            row_per_thread,
            row_per_workgroup,
            row_per_team,
            segment_partials,
            segment_finish,
        ] = gpu.pipelines(
            &module,
            &layout,
            [
                "row_per_thread",
                "row_per_workgroup",
                "row_per_team",
                "segment_partials",
                "segment_finish",
            ],
        )?;
        let limits = gpu.limits();
        Ok(ConcreteDensity {
            device: gpu.device().clone(),
            layout,
            row_per_thread,
            row_per_workgroup,
            row_per_team,
            segment_partials,
            segment_finish,
            no_partials: gpu.storage_buffer("no partials", 4 * STATE_WORDS)?,
            max_chunk: gpu.max_binding_elements(),
            align: u64::from(limits.min_storage_buffer_offset_alignment.max(4)),
            max_groups: limits.max_compute_workgroups_per_dimension,
        })
    }
}

impl ConcreteDensity {
    /// Records the log-density of every row of `args` into `encoder`. Never submits. Inputs
    /// larger than one storage binding are split into dispatches of whole rows. Rows outside
    /// the domain (see the module docs) get -inf.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        args: &DensityArgs<'_>,
    ) -> Result<(), Error> {
        self.record_path(encoder, args, RowPath::Auto)
    }

    /// [`Self::record`] with the kernel chosen by the caller (tests reach every path with it).
    #[doc(hidden)]
    pub fn record_path(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        args: &DensityArgs<'_>,
        path: RowPath,
    ) -> Result<(), Error> {
        check_tau(args.tau)?;
        if args.k == 0 {
            return Err(Error::InvalidArgument(
                "k (categories per row) must be at least 1".into(),
            ));
        }
        let k = u64::from(args.k);
        let len = args
            .rows
            .checked_mul(k)
            .filter(|n| n.checked_mul(4).is_some())
            .ok_or_else(|| Error::TooLarge(format!("{} rows of {k}", args.rows)))?;
        check_storage("logits", args.logits, args.format.buffer_bytes(len))?;
        check_storage("log_y", args.log_y, len * 4)?;
        check_storage("output", args.out, args.rows * 4)?;
        if len == 0 {
            return Ok(());
        }
        let path = match path {
            RowPath::Auto if args.k <= ROW_PER_THREAD_MAX_K => RowPath::RowPerThread,
            RowPath::Auto if args.k <= ROW_PER_TEAM_MAX_K => RowPath::RowPerTeam,
            RowPath::Auto if args.k >= SPLIT_MIN_K && args.rows < SPLIT_MAX_ROWS => {
                RowPath::SplitRows
            }
            RowPath::Auto => RowPath::RowPerWorkgroup,
            p => p,
        };
        let segs = k.div_ceil(SEG_LEN);
        let chunk_rows = rows_per_chunk(args.rows, k, self.max_chunk, self.align / 4)?;
        let align = self.align;
        scoped(&self.device, || {
            let mut r0 = 0u64;
            while r0 < args.rows {
                let rows = chunk_rows.min(args.rows - r0);
                let (e0, n) = (r0 * k, rows * k);
                let (logits_res, base_logits) =
                    aligned_binding(args.logits, e0, n, args.format.bytes(), align);
                let (log_y_res, base) = aligned_binding(args.log_y, e0, n, 4, align);
                let (out_res, base_out) = aligned_binding(args.out, r0, rows, 4, align);
                let params = DensityParams {
                    rows: rows as u32,
                    k: args.k,
                    format: args.format.code(),
                    simplex: u32::from(args.simplex),
                    tau: args.tau,
                    log_tau: f64::from(args.tau).ln() as f32,
                    base_logits,
                    base,
                    base_out,
                    team: TEAM_SIZE,
                    segs: segs as u32,
                    seg_len: SEG_LEN as u32,
                };
                let per_thread_groups = rows.div_ceil(u64::from(WG_SIZE));
                let groups = |g: u64| {
                    u32::try_from(g)
                        .map(|g| grid(g, self.max_groups))
                        .map_err(|_| Error::TooLarge(format!("{rows} rows in one dispatch")))
                };
                // (pipeline, workgroups) per dispatch, in order.
                let dispatches = match path {
                    RowPath::RowPerThread => {
                        vec![(&self.row_per_thread, groups(per_thread_groups)?)]
                    }
                    RowPath::RowPerTeam => vec![(
                        &self.row_per_team,
                        groups(rows.div_ceil(u64::from(WG_SIZE / TEAM_SIZE)))?,
                    )],
                    RowPath::SplitRows => vec![
                        (&self.segment_partials, groups(rows * segs)?),
                        (&self.segment_finish, groups(per_thread_groups)?),
                    ],
                    _ => vec![(&self.row_per_workgroup, groups(rows)?)],
                };
                let partials = if path == RowPath::SplitRows {
                    self.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("concrete_density partials"),
                        size: rows * segs * 4 * STATE_WORDS,
                        usage: wgpu::BufferUsages::STORAGE,
                        mapped_at_creation: false,
                    })
                } else {
                    self.no_partials.clone()
                };
                let uniform = params_buffer(&self.device, &params)?;
                let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("concrete_density"),
                    layout: &self.layout,
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: uniform.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: wgpu::BindingResource::Buffer(logits_res),
                        },
                        wgpu::BindGroupEntry {
                            binding: 2,
                            resource: wgpu::BindingResource::Buffer(log_y_res),
                        },
                        wgpu::BindGroupEntry {
                            binding: 3,
                            resource: wgpu::BindingResource::Buffer(out_res),
                        },
                        wgpu::BindGroupEntry {
                            binding: 4,
                            resource: partials.as_entire_binding(),
                        },
                    ],
                });
                // One pass per kernel: the second reads what the first wrote.
                for (pipeline, (gx, gy)) in dispatches {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("concrete_density"),
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

impl Gpu {
    /// The Concrete log-density kernels of this device (built on first use).
    pub fn concrete_density_kernels(&self) -> Result<Arc<ConcreteDensity>, Error> {
        self.family::<ConcreteDensity>()
    }

    /// The general slice-level density, with the kernel chosen by `path`.
    #[doc(hidden)]
    pub fn concrete_log_prob_with(
        &self,
        logits: &[f32],
        log_y: &[f32],
        k: usize,
        tau: f32,
        simplex: bool,
        path: RowPath,
    ) -> Result<Vec<f32>, Error> {
        check_tau(tau)?;
        let rows = check_shape(logits.len(), k)?;
        if log_y.len() != logits.len() {
            return Err(Error::InvalidArgument(format!(
                "{} samples for {} logits",
                log_y.len(),
                logits.len()
            )));
        }
        check_rows(logits.iter().copied(), k)?;
        for (i, (&l, &x)) in logits.iter().zip(log_y).enumerate() {
            if l == f32::INFINITY {
                return Err(Error::InvalidArgument(format!(
                    "logit {} of row {} is +inf: the Concrete density needs finite logits \
                     (or -inf to mask a category)",
                    i % k,
                    i / k
                )));
            }
            if l != f32::NEG_INFINITY && !x.is_finite() {
                return Err(Error::InvalidArgument(format!(
                    "log y = {x} at live category {} of row {}: the density needs finite log y \
                     (use the log-space sample, which does not underflow)",
                    i % k,
                    i / k
                )));
            }
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        let k32 = u32::try_from(k).map_err(|_| Error::TooLarge(format!("k = {k}")))?;
        let kernels = self.concrete_density_kernels()?;
        let l = self.upload("density logits", logits)?;
        let x = self.upload("density log_y", log_y)?;
        let out = self.storage_buffer("density out", rows as u64 * 4)?;
        let args = DensityArgs {
            logits: &l,
            format: LogitsFormat::F32,
            log_y: &x,
            out: &out,
            rows: rows as u64,
            k: k32,
            tau,
            simplex,
        };
        self.submit(|enc| kernels.record_path(enc, &args, path))?;
        self.read_buffer(&out, rows)
    }

    /// Per row, the log-density of the log-space sample `log_y` under the Concrete distribution
    /// with `logits` and temperature `tau` (TFP's ExpRelaxedOneHotCategorical, PyTorch's
    /// ExpRelaxedCategorical; see the module docs), blocking. Masked (-inf) logits are left out.
    /// Errors: shapes, bad `tau`, NaN or all -inf rows of logits, +inf logits, non-finite
    /// `log_y` at a live category.
    pub fn concrete_log_prob(
        &self,
        logits: &[f32],
        log_y: &[f32],
        k: usize,
        tau: f32,
    ) -> Result<Vec<f32>, Error> {
        self.concrete_log_prob_with(logits, log_y, k, tau, false, RowPath::Auto)
    }

    /// Per row, the log-density on the simplex of `y = exp(log_y)` (the Concrete density of
    /// Maddison et al.): [`Gpu::concrete_log_prob`] minus `sum_i log_y_i` over live entries.
    /// Takes the log-space sample for accuracy. Errors as [`Gpu::concrete_log_prob`].
    pub fn concrete_log_prob_simplex(
        &self,
        logits: &[f32],
        log_y: &[f32],
        k: usize,
        tau: f32,
    ) -> Result<Vec<f32>, Error> {
        self.concrete_log_prob_with(logits, log_y, k, tau, true, RowPath::Auto)
    }
}
