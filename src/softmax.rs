//! The fused Gumbel-Softmax forward pass (`shaders/softmax.wgsl`).
//!
//! The API is documented on [`GumbelSoftmax`] (the module is private; its items are
//! re-exported at the crate root).

use crate::gpu::{KernelFamily, check_storage, grid, params_buffer, scoped};
use crate::logits::{LogitsFormat, LogitsSlice, check_rows, check_shape, check_tau};
use crate::shader::WG_SIZE;
use crate::{Error, Gpu, Stream, Temperature};
use std::sync::Arc;

/// What the forward pass writes for each row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SoftmaxMode {
    /// `y = softmax((l + g) / tau)`: the relaxed one-hot sample.
    Soft,
    /// The one-hot row of `argmax (l + g)` (ties to the lowest index): the straight-through
    /// forward value. Independent of tau.
    Hard,
    /// `log y = z - logsumexp(z)`: finite where `y` underflows; -inf for masked entries.
    Log,
}

/// Which kernel runs (tests force each one; [`SoftmaxStrategy::Auto`] picks by shape).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SoftmaxStrategy {
    /// By shape: see the module docs.
    Auto,
    /// One row per thread, read twice (Auto prefers the register kernel, which reads once; this
    /// simplest kernel stays as a cross-check).
    RowPerThread,
    /// One workgroup per row, the row in registers (`k <= softmax_max_register_k()` only).
    Registers,
    /// One workgroup per row, online first pass then a writing pass.
    Online,
    /// Rows split into segments of workgroups: partial states, then merge and write.
    Split,
}

/// Philox blocks each thread of the register kernel holds (`REG_BLOCKS` in the shader).
const REG_BLOCKS: u32 = 4;
/// Under [`SoftmaxStrategy::Auto`], rows too long for registers are split across workgroups when the
/// job has fewer rows than this (else one workgroup per row already fills the device).
const SPLIT_MAX_ROWS: u64 = 128;
/// Bytes of one partial state of the split kernels (`State` in the shader).
const STATE_BYTES: u64 = 32;
/// Rows per dispatch are a multiple of this when a job is split, so every binding offset is a
/// multiple of 256 bytes (f16 logits: `128 * k * 2`; tau: `128 * 4`).
const CHUNK_ROW_ALIGN: u64 = 128;

/// The largest `k` the register kernel holds on chip: a row spans at most `(k + 6) / 4` Philox
/// blocks (`k` elements after up to 3 of the previous row's in its first block), and the
/// workgroup holds `WG_SIZE * REG_BLOCKS` of them.
#[doc(hidden)]
pub const fn softmax_max_register_k() -> u64 {
    4 * (WG_SIZE as u64) * (REG_BLOCKS as u64) - 3
}

/// Threads per row of the register kernel: the smallest power of two up to `WG_SIZE` that holds
/// the row's Philox blocks (`REG_BLOCKS` each), so short rows pack many to a workgroup (one per
/// thread up to k = 13) and every element is read and its noise made once.
fn register_group(k: u64) -> u32 {
    let blocks = (k + 6) / 4;
    let mut group = 1;
    while group < WG_SIZE && u64::from(group * REG_BLOCKS) < blocks {
        group *= 2;
    }
    group
}

/// One forward job at the buffer level.
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxJob<'a> {
    /// Soft, hard or log-space output.
    pub mode: SoftmaxMode,
    /// Element type of `logits`.
    pub format: LogitsFormat,
    /// `rows * k` logits, row-major, from byte 0 (f16/bf16 packed two per word).
    pub logits: &'a wgpu::Buffer,
    /// Categories per row, >= 1.
    pub k: u64,
    /// Number of rows.
    pub rows: u64,
    /// The temperature: a scalar (checked here) or a buffer of `rows` f32 (checked per row by
    /// the kernel; a bad one makes its row bad, see the module docs).
    pub tau: Temperature<&'a wgpu::Buffer>,
    /// The noise: element `j` of row `r` uses word `r * k + j`.
    pub stream: Stream,
    /// `rows * k` f32 outputs, from byte 0.
    pub out: &'a wgpu::Buffer,
    /// Optional buffer of at least [`GumbelSoftmax::STATUS_WORDS`] u32 the caller sets to [`GumbelSoftmax::STATUS_CLEAR`]
    /// first. The kernel lowers word 0 to the index of the first row holding a NaN, word 1 to
    /// the first all -inf row, word 2 to the first row whose per-row tau is not a normal, finite,
    /// positive f32 ([`GumbelSoftmax::status_result`] decodes them). Rows that are fine leave it alone.
    pub status: Option<&'a wgpu::Buffer>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftmaxParams {
    key_lo: u32,
    key_hi: u32,
    block0_lo: u32,
    block0_hi: u32,
    phase: u32,
    rows: u32,
    k: u32,
    format: u32,
    want_log: u32,
    want_hard: u32,
    tau: f32,
    per_row_tau: u32,
    use_status: u32,
    row0: u32,
    segments: u32,
    group: u32,
}

/// Size of [`SoftmaxParams`], checked against the WGSL struct of the same name by `tests/shaders.rs`.
pub(crate) const PARAMS_SIZE: usize = std::mem::size_of::<SoftmaxParams>();

/// The fused Gumbel-Softmax forward kernels (`shaders/softmax.wgsl`): owns their bind-group
/// layout and pipelines. Get them with [`Gpu::gumbel_softmax_kernels`]; the blocking slice API
/// is [`Gpu::gumbel_softmax`], [`Gpu::gumbel_softmax_hard`], [`Gpu::gumbel_softmax_log`] and
/// [`Gpu::gumbel_softmax_with`].
///
/// Over the rows of a row-major `rows x k` logits matrix, with `g` the Gumbel noise of the
/// stream (element `j` of row `r` uses word `r * k + j`):
/// `y = softmax((l + g) / tau)` ([`SoftmaxMode::Soft`]), `log y = z - logsumexp(z)`
/// ([`SoftmaxMode::Log`]) or the one-hot of `argmax (l + g)` ([`SoftmaxMode::Hard`], ties to the
/// lowest index). The conventions for masked (-inf) and +inf logits are those of
/// [`crate::cpu::gumbel_softmax`]: masked entries get `y = 0` and `log y = -inf`; a row with +inf
/// logits shares its mass equally among them (the hard sample is the first one).
///
/// Kernels, by shape: for `k` up to 4093, 1 to 256 threads per row (the smallest power of two
/// that holds it: one row per thread up to k = 13, several rows per workgroup below 2042) with
/// the row held in registers, so each logit is read and its noise made once; beyond, for fewer than 128 rows, each
/// row split across workgroups of 4096-element segments (partial states, then every segment
/// merges its row's partials and writes), else one workgroup per row with an online (argmax, sum)
/// first pass and a writing second pass. All are exact for any `k >= 1` and
/// numerically stable: every entry is taken relative to the row's argmax `a` as
/// `(l_j - l_a) + (g_j - g_a)` before `exp`, so the accuracy does not depend on the logits'
/// magnitude.
///
/// ## Bad rows at the buffer level
/// [`GumbelSoftmax::record`] does not scan the logits on the host. A row holding a NaN, a row of
/// only -inf, or (per-row temperatures) a row whose tau is not a normal, finite, positive f32
/// gets the quiet-NaN bits `0x7fc0_0000` in every output, in every mode; every other row is
/// unaffected. With a status buffer the kernel also records the first such rows (see
/// [`SoftmaxJob::status`] and [`GumbelSoftmax::status_result`]). The slice API checks on the host and returns
/// `Err` instead.
///
/// ## Limits of the f32 arithmetic
/// Temperatures must be normal f32 (>= 1.18e-38; subnormal ones are refused). Finite logits
/// beyond +-2^125 are clamped to it, and exponents to [-2^100, 0], so extreme inputs give
/// finite, normalised rows rather than inf or NaN. Measured against the f64 reference fed the
/// same f32 noise, |y - y_ref| stays below 1e-6 on random rows with |l| up to 1e4 and tau from
/// 0.1 to 10 (tests/softmax.rs); the f32 noise itself differs from f64 noise by up to ~4e-6 |g|.
pub struct GumbelSoftmax {
    device: wgpu::Device,
    layout: wgpu::BindGroupLayout,
    rows: wgpu::ComputePipeline,
    registers: wgpu::ComputePipeline,
    online: wgpu::ComputePipeline,
    split: [wgpu::ComputePipeline; 2],
    no_taus: wgpu::Buffer,
    no_status: wgpu::Buffer,
    no_partials: wgpu::Buffer,
    max_chunk: u64,
    max_groups: u32,
}

impl KernelFamily for GumbelSoftmax {
    fn build(gpu: &Gpu) -> Result<Self, Error> {
        let module = gpu.shader_module("softmax")?;
        let layout = gpu.storage_layout("softmax", &[true, true, false, false, false]);
        let [rows, registers, online, split_partial, split_write] = gpu.pipelines(
            &module,
            &layout,
            [
                "softmax_rows",
                "softmax_registers",
                "softmax_online",
                "softmax_split_partial",
                "softmax_split_write",
            ],
        )?;
        Ok(GumbelSoftmax {
            device: gpu.device().clone(),
            layout,
            rows,
            registers,
            online,
            split: [split_partial, split_write],
            no_taus: gpu.storage_buffer("softmax: no taus", 16)?,
            no_status: gpu.storage_buffer("softmax: no status", 16)?,
            no_partials: gpu.storage_buffer("softmax: no partials", STATE_BYTES)?,
            max_chunk: gpu.max_binding_elements(),
            max_groups: gpu.limits().max_compute_workgroups_per_dimension,
        })
    }
}

fn binding(buffer: &wgpu::Buffer, offset: u64, size: u64) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset,
        size: wgpu::BufferSize::new(size.max(4).next_multiple_of(4)),
    })
}

impl GumbelSoftmax {
    /// Words of the optional status buffer.
    pub const STATUS_WORDS: usize = 3;
    /// What the status words must hold before a run: "no bad row".
    pub const STATUS_CLEAR: [u32; 3] = [u32::MAX; 3];

    /// Turns the status words a run left (see [`SoftmaxJob::status`]) into the error the slice
    /// API would give: the lowest bad row among the three kinds, `Ok` if none.
    pub fn status_result(words: &[u32]) -> Result<(), Error> {
        let w = |i: usize| words.get(i).copied().unwrap_or(u32::MAX);
        let (nan, masked, tau) = (w(0), w(1), w(2));
        let first = nan.min(masked).min(tau);
        if first == u32::MAX {
            Ok(())
        } else if first == tau {
            Err(Error::InvalidArgument(format!(
                "row {tau}: its temperature must be a normal, finite f32 > 0"
            )))
        } else if first == nan {
            Err(Error::NanInRow { row: nan as usize })
        } else {
            Err(Error::AllMaskedRow {
                row: masked as usize,
            })
        }
    }

    /// Records the forward pass of `job` into `encoder`. Never submits. Jobs larger than one
    /// storage binding are split into dispatches of whole rows; the stream contract makes the
    /// result independent of the split. Errors on bad shapes, a bad scalar tau or buffers that
    /// are too small; bad rows are handled on the GPU (module docs).
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &SoftmaxJob<'_>,
    ) -> Result<(), Error> {
        self.record_with(encoder, job, SoftmaxStrategy::Auto)
    }

    /// [`GumbelSoftmax::record`] with a chosen kernel (tests use it to reach every path).
    #[doc(hidden)]
    pub fn record_with(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &SoftmaxJob<'_>,
        strategy: SoftmaxStrategy,
    ) -> Result<(), Error> {
        let k = job.k;
        if k == 0 {
            return Err(Error::InvalidArgument(
                "k (categories per row) must be at least 1".into(),
            ));
        }
        if let Temperature::Scalar(tau) = job.tau {
            check_softmax_tau(tau)?;
        }
        let len = job
            .rows
            .checked_mul(k)
            .ok_or_else(|| Error::TooLarge(format!("{} rows of {k}", job.rows)))?;
        if job.rows > u64::from(u32::MAX) {
            return Err(Error::TooLarge(format!("{} rows in one job", job.rows)));
        }
        check_storage("logits", job.logits, job.format.buffer_bytes(len))?;
        check_storage("output", job.out, len * 4)?;
        if let Temperature::PerRow(t) = job.tau {
            check_storage("tau", t, job.rows * 4)?;
        }
        if let Some(s) = job.status {
            check_storage("status", s, Self::STATUS_WORDS as u64 * 4)?;
        }
        let strategy = match strategy {
            SoftmaxStrategy::Auto if k <= softmax_max_register_k() => SoftmaxStrategy::Registers,
            SoftmaxStrategy::Auto if job.rows < SPLIT_MAX_ROWS => SoftmaxStrategy::Split,
            SoftmaxStrategy::Auto => SoftmaxStrategy::Online,
            SoftmaxStrategy::Registers if k > softmax_max_register_k() => {
                return Err(Error::InvalidArgument(format!(
                    "the register kernel holds rows of at most {} categories, not {k}",
                    softmax_max_register_k()
                )));
            }
            s => s,
        };
        if job.rows == 0 {
            return Ok(());
        }
        // Whole rows per dispatch, each binding within the device's limit.
        let fit = self.max_chunk / k;
        let chunk_rows = if fit >= job.rows {
            job.rows
        } else {
            let aligned = fit / CHUNK_ROW_ALIGN * CHUNK_ROW_ALIGN;
            if aligned == 0 {
                return Err(Error::TooLarge(format!(
                    "{} rows of k = {k}: a split job needs {CHUNK_ROW_ALIGN} rows per storage \
                     binding, which holds {} elements",
                    job.rows, self.max_chunk
                )));
            }
            aligned
        };
        scoped(&self.device, || {
            let mut row0 = 0u64;
            while row0 < job.rows {
                let n = chunk_rows.min(job.rows - row0);
                self.dispatch(encoder, job, strategy, row0, n)?;
                row0 += n;
            }
            Ok(())
        })
    }

    fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &SoftmaxJob<'_>,
        strategy: SoftmaxStrategy,
        row0: u64,
        rows: u64,
    ) -> Result<(), Error> {
        let k = job.k;
        let stream = job.stream.advance(row0 * k);
        let [key_lo, key_hi, block0_lo, block0_hi, phase] = stream.kernel_words();
        let group = register_group(k);
        // Split kernels: segments of SEG_BLOCKS Philox blocks; a row spans <= (k + 6) / 4.
        let segments = match strategy {
            SoftmaxStrategy::Split => ((k + 6) / 4).div_ceil(u64::from(WG_SIZE * REG_BLOCKS)),
            _ => 1,
        };
        let (tau, per_row) = match job.tau {
            Temperature::Scalar(t) => (t, 0),
            Temperature::PerRow(_) => (1.0, 1),
        };
        let params = SoftmaxParams {
            key_lo,
            key_hi,
            block0_lo,
            block0_hi,
            phase,
            rows: rows as u32,
            k: k as u32,
            format: job.format.code(),
            want_log: u32::from(job.mode == SoftmaxMode::Log),
            want_hard: u32::from(job.mode == SoftmaxMode::Hard),
            tau,
            per_row_tau: per_row,
            use_status: u32::from(job.status.is_some()),
            row0: row0 as u32,
            segments: segments as u32,
            group,
        };
        let uniform = params_buffer(&self.device, &params)?;
        let elems = rows * k;
        let (taus, taus_offset, taus_size) = match job.tau {
            Temperature::PerRow(t) => (t, row0 * 4, rows * 4),
            Temperature::Scalar(_) => (&self.no_taus, 0, 16),
        };
        let status = job.status.unwrap_or(&self.no_status);
        let split_partials;
        let partials = if strategy == SoftmaxStrategy::Split {
            let bytes = rows * segments * STATE_BYTES;
            split_partials = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("softmax partials"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            &split_partials
        } else {
            &self.no_partials
        };
        let partials_bytes = partials.size();
        let fmt_bytes = job.format.bytes();
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("softmax"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: uniform.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: binding(job.logits, row0 * k * fmt_bytes, elems * fmt_bytes),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: binding(taus, taus_offset, taus_size),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: binding(job.out, row0 * k * 4, elems * 4),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: binding(status, 0, Self::STATUS_WORDS as u64 * 4),
                },
                wgpu::BindGroupEntry {
                    binding: 5,
                    resource: binding(partials, 0, partials_bytes),
                },
            ],
        });
        let (pipelines, groups): (&[wgpu::ComputePipeline], u64) = match strategy {
            SoftmaxStrategy::RowPerThread => (
                std::slice::from_ref(&self.rows),
                rows.div_ceil(u64::from(WG_SIZE)),
            ),
            SoftmaxStrategy::Registers => (
                std::slice::from_ref(&self.registers),
                rows.div_ceil(u64::from(WG_SIZE / group)),
            ),
            SoftmaxStrategy::Split => (&self.split, rows * segments),
            _ => (std::slice::from_ref(&self.online), rows),
        };
        let groups = u32::try_from(groups)
            .map_err(|_| Error::TooLarge(format!("{rows} rows in one dispatch")))?;
        let (gx, gy) = grid(groups, self.max_groups);
        // The split kernels' second dispatch reads what the first wrote: separate passes.
        for pipeline in pipelines {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("softmax"),
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        Ok(())
    }
}

/// A temperature the kernels accept: finite, > 0 and normal (a subnormal tau would overflow
/// every exponent).
fn check_softmax_tau(tau: f32) -> Result<(), Error> {
    check_tau(tau)?;
    if tau < f32::MIN_POSITIVE {
        return Err(Error::InvalidArgument(format!(
            "temperature tau = {tau:e} is subnormal; it must be at least {:e}",
            f32::MIN_POSITIVE
        )));
    }
    Ok(())
}

impl Gpu {
    /// The Gumbel-Softmax forward kernels of this device (built on first use).
    pub fn gumbel_softmax_kernels(&self) -> Result<Arc<GumbelSoftmax>, Error> {
        self.family::<GumbelSoftmax>()
    }

    /// The soft Gumbel-Softmax sample `y = softmax((l + g) / tau)` of every row of `k` logits
    /// (blocking). `Err` for `k = 0`, a length that is not a multiple of `k`, a tau that is not
    /// normal, finite and > 0, and (naming the first) rows holding a NaN or only -inf.
    ///
    /// ```
    /// use gumbel_wgpu::{Gpu, Stream};
    /// let gpu = Gpu::new()?;
    /// let logits = [0.0, 1.0, 2.0, f32::NEG_INFINITY]; // one row, k = 4; the last is masked
    /// let y = gpu.gumbel_softmax(&logits, 4, 0.5, Stream::new(7))?;
    /// assert!((y.iter().sum::<f32>() - 1.0).abs() < 1e-6 && y[3] == 0.0);
    /// # Ok::<(), gumbel_wgpu::Error>(())
    /// ```
    pub fn gumbel_softmax(
        &self,
        logits: &[f32],
        k: usize,
        tau: f32,
        stream: Stream,
    ) -> Result<Vec<f32>, Error> {
        self.gumbel_softmax_with(
            LogitsSlice::F32(logits),
            k,
            Temperature::Scalar(tau),
            SoftmaxMode::Soft,
            stream,
        )
    }

    /// The hard sample: per row the one-hot of `argmax (l + g)`, ties to the lowest index (the
    /// straight-through forward value; `tau` is checked but does not change it).
    pub fn gumbel_softmax_hard(
        &self,
        logits: &[f32],
        k: usize,
        tau: f32,
        stream: Stream,
    ) -> Result<Vec<f32>, Error> {
        self.gumbel_softmax_with(
            LogitsSlice::F32(logits),
            k,
            Temperature::Scalar(tau),
            SoftmaxMode::Hard,
            stream,
        )
    }

    /// The log-space sample `log y = z - logsumexp(z)`, `z = (l + g) / tau`: finite where `y`
    /// underflows, -inf for masked entries.
    pub fn gumbel_softmax_log(
        &self,
        logits: &[f32],
        k: usize,
        tau: f32,
        stream: Stream,
    ) -> Result<Vec<f32>, Error> {
        self.gumbel_softmax_with(
            LogitsSlice::F32(logits),
            k,
            Temperature::Scalar(tau),
            SoftmaxMode::Log,
            stream,
        )
    }

    /// The general form: any logits format, a scalar or per-row temperature (each checked),
    /// any mode.
    pub fn gumbel_softmax_with(
        &self,
        logits: LogitsSlice<'_>,
        k: usize,
        tau: Temperature<&[f32]>,
        mode: SoftmaxMode,
        stream: Stream,
    ) -> Result<Vec<f32>, Error> {
        self.gumbel_softmax_strategy(logits, k, tau, mode, stream, SoftmaxStrategy::Auto)
    }

    /// [`Gpu::gumbel_softmax_with`] with a chosen kernel.
    #[doc(hidden)]
    pub fn gumbel_softmax_strategy(
        &self,
        logits: LogitsSlice<'_>,
        k: usize,
        tau: Temperature<&[f32]>,
        mode: SoftmaxMode,
        stream: Stream,
        strategy: SoftmaxStrategy,
    ) -> Result<Vec<f32>, Error> {
        let len = logits.len();
        let rows = check_shape(len, k)?;
        match tau {
            Temperature::Scalar(t) => check_softmax_tau(t)?,
            Temperature::PerRow(t) => {
                if t.len() != rows {
                    return Err(Error::InvalidArgument(format!(
                        "{} temperatures for {rows} rows",
                        t.len()
                    )));
                }
                for (r, &t) in t.iter().enumerate() {
                    if check_softmax_tau(t).is_err() {
                        return Err(Error::InvalidArgument(format!(
                            "row {r}: temperature tau = {t:e} must be finite, > 0 and normal"
                        )));
                    }
                }
            }
        }
        check_rows(logits.values(), k)?;
        let (format, words) = (logits.format(), logits.words());
        if len == 0 {
            return Ok(Vec::new());
        }
        let kernels = self.gumbel_softmax_kernels()?;
        let logits_buf = self.upload("softmax logits", &words)?;
        let out = self.storage_buffer("softmax out", (len as u64) * 4)?;
        let tau_buf = match tau {
            Temperature::PerRow(t) => Some(self.upload("softmax taus", t)?),
            Temperature::Scalar(_) => None,
        };
        let job = SoftmaxJob {
            mode,
            format,
            logits: &logits_buf,
            k: k as u64,
            rows: rows as u64,
            tau: match (&tau_buf, tau) {
                (Some(b), _) => Temperature::PerRow(b),
                (None, Temperature::Scalar(t)) => Temperature::Scalar(t),
                (None, Temperature::PerRow(_)) => unreachable!("per-row taus were uploaded"),
            },
            stream,
            out: &out,
            status: None,
        };
        self.submit(|enc| kernels.record_with(enc, &job, strategy))?;
        self.read_buffer(&out, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shader::{ShaderConfig, compose};

    #[test]
    fn register_capacity_matches_the_shader() {
        let src = compose(
            "softmax",
            &ShaderConfig {
                int64: false,
                subgroups: false,
                f16: false,
            },
        )
        .unwrap();
        assert!(src.contains(&format!("const REG_BLOCKS: u32 = {REG_BLOCKS}u;")));
        assert!(src.contains(&format!("const REG_SLOTS: u32 = {}u;", 4 * REG_BLOCKS)));
    }

    #[test]
    fn register_groups_are_the_smallest_that_hold_the_row() {
        for (k, group) in [
            (1, 1),
            (13, 1),
            (14, 2),
            (61, 4),
            (62, 8),
            (509, 32),
            (510, 64),
            (1021, 64),
            (1022, 128),
            (4093, 256),
        ] {
            assert_eq!(register_group(k), group, "k {k}");
        }
        assert_eq!(softmax_max_register_k(), 4093);
    }

    #[test]
    fn status_words_decode_to_the_first_bad_row() {
        assert_eq!(
            GumbelSoftmax::status_result(&GumbelSoftmax::STATUS_CLEAR),
            Ok(())
        );
        assert_eq!(
            GumbelSoftmax::status_result(&[7, 3, u32::MAX]),
            Err(Error::AllMaskedRow { row: 3 })
        );
        assert_eq!(
            GumbelSoftmax::status_result(&[2, 3, u32::MAX]),
            Err(Error::NanInRow { row: 2 })
        );
        assert!(matches!(
            GumbelSoftmax::status_result(&[9, 9, 1]),
            Err(Error::InvalidArgument(_))
        ));
    }
}
