//! The fused Gumbel-Softmax forward pass (`shaders/softmax.wgsl`).
//!
//! The API is documented on [`GumbelSoftmax`] (the module is private; its items are
//! re-exported at the crate root).

use crate::family::{
    FamilyCore, FamilySpec, KernelFamily, Params, check_no_alias, check_slice, take, uniform_params,
};
use crate::logits::{
    LogitsSlice, LogitsView, check_rows, check_shape, check_tau, check_taus, check_temperature,
};
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
    /// One workgroup per row, the row in registers and workgroup memory, read once
    /// (`k <= GumbelSoftmax::onchip_max_k()` only).
    OnChip,
}

/// Philox blocks each thread of the register kernel holds (`REG_BLOCKS` in the shader).
const REG_BLOCKS: u32 = 4;
/// Under [`SoftmaxStrategy::Auto`], rows too long for registers are split across workgroups when the
/// job has fewer rows than this (else one workgroup per row already fills the device).
const SPLIT_MAX_ROWS: u64 = 128;
/// Bytes of one partial state of the split kernels (`State` in the shader).
const STATE_BYTES: u64 = 32;

/// Workgroup-memory tiers of the on-chip kernel: (the device's
/// `max_compute_workgroup_storage_size` at least this, words of logit bits the kernel keeps in
/// workgroup memory). The kernel also uses `red_wg` (`RED_SLOTS` states of 32 bytes = 2 KiB;
/// the 8 KiB `red` of the register kernel's smaller teams is not in the on-chip kernel's
/// module); the cache gets the rest less 256 bytes, in whole Philox blocks:
/// `(bytes - 2304) / 16 * 4`.
/// 16352 is wgpu's downlevel (and about WebGPU's 16 KiB) minimum; lavapipe and llvmpipe GL
/// grant 32 KiB; NVIDIA's Vulkan driver 48 KiB.
const ONCHIP_TIERS: [(u32, u32); 3] = [(16352, 3512), (32768, 7616), (49152, 11712)];
/// States in the forward's whole-workgroup reduction array (`RED_SLOTS` in the shader; the
/// tiers above are computed from it, checked by a test).
#[cfg(test)]
const RED_SLOTS: u32 = 64;

/// The forward shader of variant `v`: `v % 3` the workgroup-memory tier, `v / 3` whether it
/// reduces with subgroups. A prefix picks the reduction piece and sizes the on-chip cache.
macro_rules! forward_source {
    ($reduce:literal, $words:literal) => {
        concat!(
            "#import ",
            $reduce,
            "\nconst SOFTMAX_CACHE_WORDS: u32 = ",
            $words,
            "u;\n",
            include_str!("../shaders/softmax.wgsl")
        )
    };
}
const VARIANT_SOURCES: [&str; 6] = [
    forward_source!("softmax_reduce_wg", 3512),
    forward_source!("softmax_reduce_wg", 7616),
    forward_source!("softmax_reduce_wg", 11712),
    forward_source!("softmax_reduce_sg", 3512),
    forward_source!("softmax_reduce_sg", 7616),
    forward_source!("softmax_reduce_sg", 11712),
];

const fn forward_spec(source: &'static str) -> FamilySpec {
    FamilySpec {
        name: "softmax",
        source,
        params: SoftmaxParams::WGSL,
        // logits, taus, out, status, partials
        storage_read_only: &[true, true, false, false, false],
        entry_points: &[
            "softmax_rows",
            "softmax_registers",
            "softmax_online",
            "softmax_split_partial",
            "softmax_split_write",
            "softmax_onchip",
        ],
        stepped: false,
    }
}

/// Forward variant `V` as a family of its own (built, and cached by the `Gpu`, only on the
/// devices that pick it, so no pipeline asks for more workgroup memory than the device has).
struct Variant<const V: usize>(Arc<GumbelSoftmax>);

impl<const V: usize> KernelFamily for Variant<V> {
    const SPEC: FamilySpec = forward_spec(VARIANT_SOURCES[V]);

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        Ok(Variant(Arc::new(GumbelSoftmax::assemble(
            core, pipelines, V,
        )?)))
    }
}

/// The largest `k` the register kernel holds on chip: a row spans at most `(k + 6) / 4` Philox
/// blocks (`k` elements after up to 3 of the previous row's in its first block), and the
/// workgroup holds `WG_SIZE * REG_BLOCKS` of them.
#[doc(hidden)]
pub const fn softmax_max_register_k() -> u64 {
    4 * (WG_SIZE as u64) * (REG_BLOCKS as u64) - 3
}

/// The largest `k` the on-chip kernel holds with `words` words of workgroup cache: a row spans
/// at most `(k + 6) / 4` Philox blocks, and the workgroup holds `WG_SIZE * REG_BLOCKS` of them
/// in registers and `words / 4` in workgroup memory.
const fn onchip_capacity(words: u32) -> u64 {
    4 * ((WG_SIZE as u64) * (REG_BLOCKS as u64) + (words as u64) / 4) - 3
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
    /// The logits, `rows x k` in any [`crate::LogitsFormat`], at any 4-byte offset, rows
    /// [`LogitsView::stride`] elements apart if it is set (`out` is dense).
    pub logits: LogitsView<'a>,
    /// The temperature: a scalar (checked here) or a slice of `rows` f32 (checked per row by
    /// the kernel; a bad one makes its row bad, see [`GumbelSoftmax`]).
    pub tau: Temperature<wgpu::BufferSlice<'a>>,
    /// The noise: element `j` of row `r` uses word `r * k + j`.
    pub stream: Stream,
    /// Receives the `rows * k` f32 outputs, row-major.
    pub out: wgpu::BufferSlice<'a>,
    /// Optional slice of at least [`GumbelSoftmax::STATUS_WORDS`] u32 the caller sets to
    /// [`GumbelSoftmax::STATUS_CLEAR`] first. The kernel lowers word 0 to the index of the first
    /// row holding a NaN, word 1 to the first all -inf row, word 2 to the first row whose per-row
    /// tau is not a normal, finite, positive f32 ([`GumbelSoftmax::status_result`] decodes them).
    /// Rows that are fine leave it alone.
    pub status: Option<wgpu::BufferSlice<'a>>,
}

uniform_params! {
    /// The forward kernels' parameters (`params` in `shaders/softmax.wgsl`).
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
        logit_base: u32,
        tau_base: u32,
        out_base: u32,
        status_base: u32,
        partial_base: u32,
        row_pad: u32,
    }
}

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
/// the row held in registers, so each logit is read and its noise made once (8 bytes per
/// element: 4 read, 4 written). Beyond, up to [`GumbelSoftmax::onchip_max_k`], one workgroup
/// per row holds the first 4096 elements in registers and the rest as logit bits in workgroup
/// memory, sized from the device's `max_compute_workgroup_storage_size` (tiers: 16352 bytes
/// give k up to 7605, 32 KiB (lavapipe, llvmpipe GL) 11709, 48 KiB (NVIDIA) 15805): still one
/// read, 8 bytes per element; the noise of the part in workgroup memory is made twice (Philox
/// is compute, not traffic). Longer rows, for fewer than 128 rows, are split across workgroups
/// of 4096-element segments (partial states, then every segment merges its row's partials and
/// writes), else one workgroup per row with an online (argmax, sum) first pass and a writing
/// second pass. These two read the logits twice: 12 bytes per element. The second read comes
/// soon after the first from the same workgroup (a 4096-element segment, or one row of up to
/// k * 4 bytes per resident workgroup), so on a GPU it is served from L2 where the rows in
/// flight fit there, else from memory. All are exact for any `k >= 1` and
/// numerically stable: every entry is taken relative to the row's argmax `a` as
/// `(l_j - l_a) + (g_j - g_a)` before `exp`, so the accuracy does not depend on the logits'
/// magnitude. Where the device has subgroups (and [`crate::GpuOptions::subgroups`] is on), the
/// workgroup-wide merges go through subgroup shuffles first and one state per subgroup through
/// workgroup memory; otherwise (GL) through workgroup memory alone.
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
    core: FamilyCore,
    rows: wgpu::ComputePipeline,
    registers: wgpu::ComputePipeline,
    online: wgpu::ComputePipeline,
    split_partial: wgpu::ComputePipeline,
    split_write: wgpu::ComputePipeline,
    onchip: wgpu::ComputePipeline,
    /// The largest `k` the on-chip kernel holds (0: not used on this device).
    onchip_max_k: u64,
}

/// The variant-0 spec (no subgroups, the smallest tier): what the validation test composes in
/// every configuration; [`GumbelSoftmax::variant_specs`] lists all six.
impl KernelFamily for GumbelSoftmax {
    const SPEC: FamilySpec = forward_spec(VARIANT_SOURCES[0]);

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        Self::assemble(core, pipelines, 0)
    }
}

impl GumbelSoftmax {
    fn assemble(
        core: FamilyCore,
        pipelines: Vec<wgpu::ComputePipeline>,
        variant: usize,
    ) -> Result<Self, Error> {
        let [rows, registers, online, split_partial, split_write, onchip] = take(pipelines)?;
        let (bytes, words) = ONCHIP_TIERS[variant % ONCHIP_TIERS.len()];
        let fits = core.device.limits().max_compute_workgroup_storage_size >= bytes;
        Ok(GumbelSoftmax {
            core,
            rows,
            registers,
            online,
            split_partial,
            split_write,
            onchip,
            onchip_max_k: if fits { onchip_capacity(words) } else { 0 },
        })
    }

    /// Every variant's spec, with whether it needs `Features::SUBGROUP` (for validation).
    #[doc(hidden)]
    pub fn variant_specs() -> Vec<(bool, FamilySpec)> {
        vec![
            (false, Variant::<0>::SPEC),
            (false, Variant::<1>::SPEC),
            (false, Variant::<2>::SPEC),
            (true, Variant::<3>::SPEC),
            (true, Variant::<4>::SPEC),
            (true, Variant::<5>::SPEC),
        ]
    }

    /// The largest `k` the on-chip (one-read) kernel holds on this device; 0 where the device
    /// grants less workgroup memory than the smallest tier.
    #[doc(hidden)]
    pub fn onchip_max_k(&self) -> u64 {
        self.onchip_max_k
    }

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
    /// result independent of the split. The split-row kernels keep their partial states in a
    /// scratch buffer reused across calls. `Err` for bad views (naming the argument: `"logits"`,
    /// `"tau"`, `"out"`, `"status"`), `k = 0` or a bad scalar tau; bad rows are handled on the
    /// GPU (see [`GumbelSoftmax`]).
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
        let LogitsView { rows, k, .. } = job.logits;
        // A strided view is read in place (row r at element r * stride); `out` stays a dense
        // `rows x k` matrix. rows * k <= rows * stride, which the check bounds.
        job.logits.check_strided("logits")?;
        let len = rows * k;
        check_temperature(&job.tau, rows)?;
        check_slice("out", job.out, len * 4)?;
        if let Some(s) = job.status {
            check_slice("status", s, Self::STATUS_WORDS as u64 * 4)?;
        }
        check_no_alias(
            &[
                ("logits", Some(job.logits.data)),
                ("tau", job.tau.per_row()),
            ],
            &[("out", Some(job.out)), ("status", job.status)],
        )?;
        let strategy = match strategy {
            SoftmaxStrategy::Auto if k <= softmax_max_register_k() => SoftmaxStrategy::Registers,
            SoftmaxStrategy::Auto if k <= self.onchip_max_k => SoftmaxStrategy::OnChip,
            SoftmaxStrategy::Auto if rows < SPLIT_MAX_ROWS => SoftmaxStrategy::Split,
            SoftmaxStrategy::Auto => SoftmaxStrategy::Online,
            SoftmaxStrategy::Registers if k > softmax_max_register_k() => {
                return Err(Error::InvalidArgument(format!(
                    "the register kernel holds rows of at most {} categories, not {k}",
                    softmax_max_register_k()
                )));
            }
            SoftmaxStrategy::OnChip if k > self.onchip_max_k => {
                return Err(Error::InvalidArgument(format!(
                    "the on-chip kernel holds rows of at most {} categories on this device, \
                     not {k}",
                    self.onchip_max_k
                )));
            }
            s => s,
        };
        if rows == 0 {
            return Ok(());
        }
        // Split kernels: segments of WG_SIZE * REG_BLOCKS Philox blocks; a row spans
        // <= (k + 6) / 4 blocks.
        let segments = match strategy {
            SoftmaxStrategy::Split => ((k + 6) / 4).div_ceil(u64::from(WG_SIZE * REG_BLOCKS)),
            _ => 1,
        };
        // Whole rows per dispatch: every window (logits, stride elements a row; out, k; partials,
        // `segments` states of 8 words a row) fits one storage binding.
        let per_dispatch = self
            .core
            .rows_per_dispatch(rows, job.logits.row_stride().max(segments * 8))?;
        self.core.scoped(|| {
            let mut row0 = 0;
            while row0 < rows {
                let n = per_dispatch.min(rows - row0);
                self.record_dispatch(encoder, job, strategy, segments, row0, n)?;
                row0 += n;
            }
            Ok(())
        })
    }

    /// Records rows `row0 .. row0 + n` of `job`, every binding a window from the aligned offset
    /// below its first element (the kernel adds the `*_base` parameters).
    fn record_dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &SoftmaxJob<'_>,
        strategy: SoftmaxStrategy,
        segments: u64,
        row0: u64,
        n: u64,
    ) -> Result<(), Error> {
        let core = &self.core;
        let k = job.logits.k;
        let group = register_group(k);
        let stride = job.logits.row_stride();
        let logits = core.window(
            job.logits.data,
            row0 * stride,
            job.logits.span(n),
            job.logits.format.bytes(),
        );
        let out = core.window(job.out, row0 * k, n * k, 4);
        let (tau, taus) = match job.tau {
            Temperature::Scalar(t) => (t, core.unused(2)),
            Temperature::PerRow(s) => (1.0, core.window(s, row0, n, 4)),
        };
        let status = match job.status {
            Some(s) => core.window(s, 0, Self::STATUS_WORDS as u64, 4),
            None => core.unused(4),
        };
        // Partial states of the split kernels; the other paths bind one state's worth of the
        // same reused buffer (a binding of `array<State>` must hold one 32-byte State, more
        // than the 16-byte unused-binding buffers).
        let states = if strategy == SoftmaxStrategy::Split {
            n * segments
        } else {
            1
        };
        let scratch = core.scratch(states * STATE_BYTES)?;
        let partials = core.window(scratch.slice(..), 0, states, STATE_BYTES);
        let [key_lo, key_hi, block0_lo, block0_hi, phase] =
            job.stream.advance(row0 * k).kernel_words();
        let params = SoftmaxParams {
            key_lo,
            key_hi,
            block0_lo,
            block0_hi,
            phase,
            rows: n as u32,
            k: k as u32,
            format: job.logits.format.code(),
            want_log: u32::from(job.mode == SoftmaxMode::Log),
            want_hard: u32::from(job.mode == SoftmaxMode::Hard),
            tau,
            per_row_tau: u32::from(matches!(job.tau, Temperature::PerRow(_))),
            use_status: u32::from(job.status.is_some()),
            row0: row0 as u32,
            segments: segments as u32,
            group,
            logit_base: logits.base,
            tau_base: taus.base,
            out_base: out.base,
            status_base: status.base,
            partial_base: partials.base,
            row_pad: (stride - k) as u32,
        };
        let bindings = [
            logits.binding,
            taus.binding,
            out.binding,
            status.binding,
            partials.binding,
        ];
        let wg = u64::from(WG_SIZE);
        match strategy {
            SoftmaxStrategy::RowPerThread => {
                core.dispatch(encoder, &params, &bindings, &[(&self.rows, n.div_ceil(wg))])
            }
            SoftmaxStrategy::Registers => core.dispatch(
                encoder,
                &params,
                &bindings,
                &[(&self.registers, n.div_ceil(wg / u64::from(group)))],
            ),
            // The write dispatch reads what the partial one wrote (ordered within the pass).
            SoftmaxStrategy::Split => core.dispatch(
                encoder,
                &params,
                &bindings,
                &[
                    (&self.split_partial, n * segments),
                    (&self.split_write, n * segments),
                ],
            ),
            SoftmaxStrategy::OnChip => {
                core.dispatch(encoder, &params, &bindings, &[(&self.onchip, n)])
            }
            _ => core.dispatch(encoder, &params, &bindings, &[(&self.online, n)]),
        }
    }
}

impl Gpu {
    /// The Gumbel-Softmax forward kernels of this device (built on first use).
    pub fn gumbel_softmax_kernels(&self) -> Result<Arc<GumbelSoftmax>, Error> {
        // The variant: subgroup reductions where the device has them, and the largest
        // workgroup-memory tier the device grants (read from its limits).
        let bytes = self.limits().max_compute_workgroup_storage_size;
        let tier = ONCHIP_TIERS
            .iter()
            .rposition(|&(b, _)| b <= bytes)
            .unwrap_or(0);
        match usize::from(self.shader_config().subgroups) * ONCHIP_TIERS.len() + tier {
            0 => Ok(self.family::<Variant<0>>()?.0.clone()),
            1 => Ok(self.family::<Variant<1>>()?.0.clone()),
            2 => Ok(self.family::<Variant<2>>()?.0.clone()),
            3 => Ok(self.family::<Variant<3>>()?.0.clone()),
            4 => Ok(self.family::<Variant<4>>()?.0.clone()),
            _ => Ok(self.family::<Variant<5>>()?.0.clone()),
        }
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
            Temperature::Scalar(t) => check_tau(t)?,
            Temperature::PerRow(t) => check_taus(t, rows)?,
        }
        check_rows(logits.values(), k)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let kernels = self.gumbel_softmax_kernels()?;
        let logits_buf = self.upload("softmax logits", &logits.words())?;
        let out = self.storage_buffer("softmax out", (len as u64) * 4)?;
        let tau_buf = match tau {
            Temperature::PerRow(t) => Some(self.upload("softmax taus", t)?),
            Temperature::Scalar(_) => None,
        };
        let job = SoftmaxJob {
            mode,
            logits: LogitsView {
                data: logits_buf.slice(..),
                format: logits.format(),
                rows: rows as u64,
                k: k as u64,
                stride: 0,
            },
            tau: match (&tau_buf, tau) {
                (Some(b), _) => Temperature::PerRow(b.slice(..)),
                (None, Temperature::Scalar(t)) => Temperature::Scalar(t),
                (None, Temperature::PerRow(_)) => unreachable!("per-row taus were uploaded"),
            },
            stream,
            out: out.slice(..),
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
            &GumbelSoftmax::SPEC,
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
    fn onchip_tiers_fit_their_budget_and_match_the_variant_sources() {
        for (v, &(bytes, words)) in ONCHIP_TIERS.iter().enumerate() {
            // The cache plus `red_wg` (RED_SLOTS states of STATE_BYTES) plus 256 bytes of slack.
            assert_eq!(
                words,
                (bytes - RED_SLOTS * STATE_BYTES as u32 - 256) / 16 * 4
            );
            assert!(words * 4 + RED_SLOTS * STATE_BYTES as u32 <= bytes);
            for source in [VARIANT_SOURCES[v], VARIANT_SOURCES[v + ONCHIP_TIERS.len()]] {
                assert!(source.contains(&format!("const SOFTMAX_CACHE_WORDS: u32 = {words}u;")));
            }
        }
        assert!(
            VARIANT_SOURCES[..3]
                .iter()
                .all(|s| s.starts_with("#import softmax_reduce_wg"))
        );
        assert!(
            VARIANT_SOURCES[3..]
                .iter()
                .all(|s| s.starts_with("#import softmax_reduce_sg"))
        );
        assert!(
            VARIANT_SOURCES
                .iter()
                .all(|s| s.contains(&format!("const RED_SLOTS: u32 = {RED_SLOTS}u;")))
        );
        assert_eq!(onchip_capacity(7616), 11709);
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
