//! The skeleton every kernel family plugs into.
//!
//! A family is one WGSL file in `shaders/` plus a struct that owns its pipelines. It declares a
//! [`FamilySpec`] (source, uniform parameters, storage bindings, entry points) and implements
//! [`KernelFamily::new`], which receives a [`FamilyCore`] and one pipeline per entry point.
//! [`crate::Gpu::family`] builds it once per device and caches it. Everything a `record` needs
//! beyond its own arithmetic lives here, once:
//!
//! * [`FamilyCore::window`]: binds any 4-byte-aligned range of a caller's buffer, whatever the
//!   device's storage offset alignment, by binding from the aligned offset below it and handing
//!   the kernel the element index (`base`) where the range starts;
//! * [`FamilyCore::rows_per_dispatch`]: whole rows per dispatch so every window fits one binding;
//! * [`FamilyCore::scratch`]: a scratch buffer reused across calls (grown on demand);
//! * [`FamilyCore::dispatch`]: the uniform buffer, bind group and compute pass of one dispatch
//!   (or a chain of dependent ones), with 2-D grids past 65535 workgroups. The uniform buffer
//!   and bind group of the last [`BIND_CACHE`] distinct (parameters, bound ranges) are kept and
//!   reused, so a decode loop that records the same job each step (parameters on the device)
//!   creates neither after its first step.
//!
//! Uniform parameters have one source: [`uniform_params!`] defines the `#[repr(C)]` struct in
//! Rust and its WGSL text, which the composer puts where the shader says `#import params`.

use crate::shader::{ShaderConfig, ShaderSource};
use crate::{Error, LogitsFormat};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;

/// A uniform parameter struct shared by Rust and WGSL (made by [`uniform_params!`]).
pub(crate) trait Params: bytemuck::Pod {
    /// `struct Name { ... }` and its binding at group 0, binding 0 as `params`.
    const WGSL: &'static str;
}

/// Defines a uniform parameter struct once: the `#[repr(C)]` Pod struct for Rust and, as
/// [`Params::WGSL`], the same struct in WGSL bound as `params` at binding 0. Fields are 32-bit
/// scalars (`u32`, `i32`, `f32`), whose Rust and WGSL names agree, so the layouts agree.
macro_rules! uniform_params {
    ($(#[$meta:meta])* struct $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ident),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub(crate) struct $name {
            $($(#[$fmeta])* pub(crate) $field: $ty,)*
        }
        impl $crate::family::Params for $name {
            const WGSL: &'static str = concat!(
                "// Generated from the Rust struct ", stringify!($name), " (uniform_params!).\n",
                "struct ", stringify!($name), " {\n",
                $("    ", stringify!($field), ": ", stringify!($ty), ",\n",)*
                "}\n",
                "@group(0) @binding(0) var<uniform> params: ", stringify!($name), ";\n"
            );
        }
    };
}
pub(crate) use uniform_params;

/// What a kernel family declares: everything needed to build it.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct FamilySpec {
    /// Name, used for labels and errors.
    pub name: &'static str,
    /// The family's WGSL file.
    pub source: &'static str,
    /// Its uniform parameters in WGSL ([`Params::WGSL`]), inserted at `#import params`.
    pub params: &'static str,
    /// Storage bindings 1.. in order: `true` = read-only.
    pub storage_read_only: &'static [bool],
    /// Entry points, one pipeline each, in this order.
    pub entry_points: &'static [&'static str],
    /// Binding 0 takes a dynamic offset: [`FamilyCore::dispatch_steps`] records a chain of
    /// dispatches in one compute pass, each with its own parameters (one uniform buffer and one
    /// bind group for the whole chain).
    pub stepped: bool,
}

impl ShaderSource for FamilySpec {
    fn name(&self) -> &'static str {
        self.name
    }
    fn source(&self) -> &'static str {
        self.source
    }
    fn params(&self) -> &'static str {
        self.params
    }
}

/// A kernel family: built once per [`crate::Gpu`] and cached there.
pub(crate) trait KernelFamily: Send + Sync + Sized + 'static {
    const SPEC: FamilySpec;
    /// The family from its core and one pipeline per entry point of [`Self::SPEC`], in order.
    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error>;
}

/// Takes `N` pipelines out of the vector [`KernelFamily::new`] gets.
pub(crate) fn take<const N: usize>(
    pipelines: Vec<wgpu::ComputePipeline>,
) -> Result<[wgpu::ComputePipeline; N], Error> {
    pipelines
        .try_into()
        .map_err(|v: Vec<_>| Error::Internal(format!("{} pipelines, {N} expected", v.len())))
}

/// A bound range of a buffer and the element index in the binding where the range starts.
pub(crate) struct Window<'a> {
    pub binding: wgpu::BufferBinding<'a>,
    /// Element index (in the window's element size) of the range's first element.
    pub base: u32,
}

/// Bytes between the parameters of two steps of [`FamilyCore::dispatch_steps`]: WebGPU's
/// largest `minUniformBufferOffsetAlignment`, so the offsets are valid on every device.
pub(crate) const STEP_STRIDE: u64 = 256;

/// Bind groups each family keeps for reuse (the least recently used leaves first).
/// A cached group holds its buffers (wgpu keeps a bound buffer alive), so a buffer the caller
/// drops is freed once its groups leave the cache: after this many other distinct dispatches of
/// the family, or with the [`crate::Gpu`]. `wgpu::Buffer::destroy` frees memory at once.
pub(crate) const BIND_CACHE: usize = 16;

/// A bind group and what it binds: the parameters' bytes (in its own uniform buffer, never
/// written again) and each storage range. The keys hold clones of the buffers, so a buffer's
/// identity (wgpu compares ids) cannot be reused by a new buffer while its entry exists: a hit
/// binds exactly the buffers and ranges asked for.
struct CachedGroup {
    params: Vec<u8>,
    ranges: Vec<(wgpu::Buffer, u64, Option<wgpu::BufferSize>)>,
    group: wgpu::BindGroup,
}

impl CachedGroup {
    fn binds(&self, params: &[u8], bindings: &[wgpu::BufferBinding<'_>]) -> bool {
        self.params == params
            && self.ranges.len() == bindings.len()
            && self
                .ranges
                .iter()
                .zip(bindings)
                .all(|((buf, off, size), b)| *off == b.offset && *size == b.size && buf == b.buffer)
    }
}

/// What every family shares: device, layout, limits, the dummy and scratch buffers.
pub(crate) struct FamilyCore {
    pub(crate) device: wgpu::Device,
    lock: Arc<DeviceLock>,
    name: &'static str,
    layout: wgpu::BindGroupLayout,
    /// 16 bytes per storage binding, bound where a job has no buffer for it (a binding cannot
    /// stay empty, and one buffer may not be bound read-only and read-write in one dispatch).
    unused: Vec<wgpu::Buffer>,
    scratch: Mutex<Option<wgpu::Buffer>>,
    /// Recently used bind groups, least recent first (at most [`BIND_CACHE`]).
    groups: Mutex<Vec<CachedGroup>>,
    /// Elements of 4 bytes one storage binding may hold (a multiple of the alignment).
    pub(crate) max_elements: u64,
    /// The device's storage-buffer offset alignment in bytes.
    pub(crate) align: u64,
    pub(crate) max_groups: u32,
    /// The driver's cap on loop iterations per invocation (llvmpipe), see `Gpu::loop_budget`.
    pub(crate) loop_budget: Option<u64>,
    /// The adapter is a CPU ([`FamilyLimits::cpu`]).
    pub(crate) cpu: bool,
    /// The bounds sanitizer's status binding (group 1), when it is on.
    sanitizer: Option<wgpu::BindGroup>,
}

/// Builds family `F` for a device: composes and compiles its shader, makes its explicit
/// bind-group layout (binding 0 uniform, then the storage bindings) and one pipeline per entry
/// point, inside error scopes.
pub(crate) fn build<F: KernelFamily>(
    device: &wgpu::Device,
    lock: &Arc<DeviceLock>,
    config: &ShaderConfig,
    limits: FamilyLimits,
) -> Result<F, Error> {
    let spec = F::SPEC;
    // Under the bounds sanitizer every array index is checked (src/sanitize.rs).
    let source = match &limits.sanitizer {
        Some(s) => s.compose(&spec, config)?,
        None => crate::shader::compose(&spec, config)?,
    };
    let (layout, pipelines, unused) = scoped(device, lock, || {
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(spec.name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        let module = if limits.runtime_checks {
            device.create_shader_module(desc)
        } else {
            // SAFETY: every kernel's header contract (shaders/*.wgsl) states how it keeps its
            // buffer and array indices inside the bound windows, why each loop ends, why no
            // divisor is zero, and that workgroup memory is written (behind a barrier) before
            // it is read; the test suite runs every kernel with and without these checks.
            unsafe {
                device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        };
        let buffer = |read_only: Option<bool>| wgpu::BindingType::Buffer {
            ty: match read_only {
                None => wgpu::BufferBindingType::Uniform,
                Some(read_only) => wgpu::BufferBindingType::Storage { read_only },
            },
            has_dynamic_offset: read_only.is_none() && spec.stepped,
            min_binding_size: None,
        };
        let entries: Vec<_> = std::iter::once(None)
            .chain(spec.storage_read_only.iter().map(|&r| Some(r)))
            .enumerate()
            .map(|(i, access)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: buffer(access),
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(spec.name),
            entries: &entries,
        });
        let sanitizer_layout = limits.sanitizer.as_ref().map(|s| &s.layout);
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(spec.name),
            bind_group_layouts: &[Some(&layout), sanitizer_layout],
            immediate_size: 0,
        });
        let pipelines = spec
            .entry_points
            .iter()
            .map(|ep| {
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(ep),
                    layout: Some(&pipeline_layout),
                    module: &module,
                    entry_point: Some(ep),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &[],
                        // Every kernel writes its workgroup memory before reading it (contracts);
                        // the sanitizer fills it with poison instead.
                        zero_initialize_workgroup_memory: limits.runtime_checks
                            && limits.sanitizer.is_none(),
                    },
                    cache: None,
                })
            })
            .collect::<Vec<_>>();
        let unused = spec
            .storage_read_only
            .iter()
            .map(|_| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("unused binding"),
                    size: 16,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                })
            })
            .collect::<Vec<_>>();
        Ok((layout, pipelines, unused))
    })?;
    let core = FamilyCore {
        device: device.clone(),
        lock: lock.clone(),
        name: spec.name,
        layout,
        unused,
        scratch: Mutex::new(None),
        groups: Mutex::new(Vec::new()),
        max_elements: limits.max_elements,
        align: limits.align,
        max_groups: limits.max_groups,
        loop_budget: limits.loop_budget,
        cpu: limits.cpu,
        sanitizer: limits.sanitizer.as_ref().map(|s| s.bind_group.clone()),
    };
    F::new(core, pipelines)
}

/// The device limits a family works within (from [`crate::Gpu`]).
#[derive(Clone)]
pub(crate) struct FamilyLimits {
    pub max_elements: u64,
    pub align: u64,
    pub max_groups: u32,
    pub loop_budget: Option<u64>,
    /// The adapter is a CPU (lavapipe, llvmpipe, SwiftShader): a few cores, where spreading a
    /// row over many workgroups costs more than it gains.
    pub cpu: bool,
    /// Compile with wgpu's runtime checks (`GpuOptions::runtime_checks`).
    pub runtime_checks: bool,
    /// The bounds sanitizer (`GpuOptions::bounds_check`).
    pub sanitizer: Option<Arc<crate::sanitize::Sanitizer>>,
}

impl FamilyCore {
    /// Runs `f` holding the device lock (see [`DeviceLock`]) inside error scopes: a wgpu
    /// validation error becomes `Err`.
    /// On an error the bind-group cache is emptied: a group wgpu refused (or one made just
    /// before the error) is never reused.
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let result = scoped(&self.device, &self.lock, f);
        if result.is_err() {
            self.groups
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
        result
    }

    /// Binds elements `first .. first + n` (of `bytes` bytes each) of `slice`. The binding starts
    /// at the device-aligned offset at or below the first element; the kernel adds `base` to its
    /// element indices. `slice` has been checked (see [`check_view`]): its offset is a multiple of
    /// 4 and it holds the elements, so the window stays inside the buffer.
    pub(crate) fn window<'a>(
        &self,
        slice: wgpu::BufferSlice<'a>,
        first: u64,
        n: u64,
        bytes: u64,
    ) -> Window<'a> {
        let start = slice.offset() + first * bytes;
        let offset = start / self.align * self.align;
        let end = (start + n * bytes).next_multiple_of(4);
        Window {
            binding: wgpu::BufferBinding {
                buffer: slice.buffer(),
                offset,
                size: wgpu::BufferSize::new((end - offset).max(4)),
            },
            base: ((start - offset) / bytes) as u32,
        }
    }

    /// A window on a 16-byte buffer of this family's own, for storage binding `binding` (1..)
    /// when the job leaves it unused.
    pub(crate) fn unused(&self, binding: usize) -> Window<'_> {
        Window {
            binding: self.unused[binding - 1].as_entire_buffer_binding(),
            base: 0,
        }
    }

    /// Whole rows per dispatch such that a window of `rows * elems_per_row` elements (plus the
    /// lead-in below an aligned offset) fits one storage binding.
    pub(crate) fn rows_per_dispatch(&self, rows: u64, elems_per_row: u64) -> Result<u64, Error> {
        let fit = self.max_elements.saturating_sub(self.align / 4) / elems_per_row.max(1);
        if fit == 0 {
            return Err(Error::TooLarge(format!(
                "{}: a row of {elems_per_row} elements exceeds one storage binding ({} \
                 elements) on this device",
                self.name, self.max_elements
            )));
        }
        Ok(fit.min(rows.max(1)))
    }

    /// A scratch buffer of at least `bytes` bytes, reused across calls and grown on demand
    /// (wgpu keeps a replaced buffer alive while recorded work still uses it). Work recorded on
    /// the same queue runs in order, so jobs sharing it never overlap. `COPY_DST`, so a job can
    /// clear the part it uses.
    pub(crate) fn scratch(&self, bytes: u64) -> Result<wgpu::Buffer, Error> {
        let mut held = self.scratch.lock().unwrap();
        if let Some(b) = held.as_ref().filter(|b| b.size() >= bytes) {
            return Ok(b.clone());
        }
        let size = bytes.max(256).next_power_of_two();
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("scratch"),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        *held = Some(buffer.clone());
        Ok(buffer)
    }

    /// Records one compute pass: `params` at binding 0, `bindings` at 1.., and each
    /// `(pipeline, workgroups)` dispatched in order (a dispatch sees what earlier ones wrote).
    /// Workgroup counts past the per-dimension limit go on a 2-D grid (`group_index` in
    /// `shaders/common/grid.wgsl`); kernels skip the surplus groups.
    pub(crate) fn dispatch<P: Params>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        params: &P,
        bindings: &[wgpu::BufferBinding<'_>],
        passes: &[(&wgpu::ComputePipeline, u64)],
    ) -> Result<(), Error> {
        let bind = self.bind_group(bytemuck::bytes_of(params), None, bindings)?;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(self.name),
            timestamp_writes: None,
        });
        pass.set_bind_group(0, &bind, &[]);
        if let Some(status) = &self.sanitizer {
            pass.set_bind_group(1, status, &[]);
        }
        for &(pipeline, groups) in passes {
            let (gx, gy) = self.grid_of(groups)?;
            pass.set_pipeline(pipeline);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        Ok(())
    }

    /// Records a chain of dispatches of `pipeline` in one compute pass, dispatch `i` with
    /// `steps[i]` at binding 0 (a stepped family: [`FamilySpec::stepped`]) and `bindings` at
    /// 1..; each sees what the earlier ones wrote.
    pub(crate) fn dispatch_steps<P: Params>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        steps: &[P],
        bindings: &[wgpu::BufferBinding<'_>],
        pipeline: &wgpu::ComputePipeline,
        groups: u64,
    ) -> Result<(), Error> {
        let size = std::mem::size_of::<P>();
        let mut bytes = vec![0u8; steps.len() * STEP_STRIDE as usize];
        for (i, p) in steps.iter().enumerate() {
            let at = i * STEP_STRIDE as usize;
            bytes[at..at + size].copy_from_slice(bytemuck::bytes_of(p));
        }
        let bind = self.bind_group(&bytes, Some(size as u64), bindings)?;
        let (gx, gy) = self.grid_of(groups)?;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(self.name),
            timestamp_writes: None,
        });
        if let Some(status) = &self.sanitizer {
            pass.set_bind_group(1, status, &[]);
        }
        pass.set_pipeline(pipeline);
        for i in 0..steps.len() {
            pass.set_bind_group(0, &bind, &[(i as u64 * STEP_STRIDE) as u32]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        Ok(())
    }

    fn grid_of(&self, groups: u64) -> Result<(u32, u32), Error> {
        let groups = u32::try_from(groups).map_err(|_| {
            Error::TooLarge(format!(
                "{}: {groups} workgroups in one dispatch",
                self.name
            ))
        })?;
        Ok(grid(groups, self.max_groups))
    }

    /// The bind group of `params` at binding 0 and `bindings` at 1..: a cached one that binds
    /// the same (see [`CachedGroup`]), else a new uniform buffer and group, cached.
    /// `step`: the bytes of one step's parameters when binding 0 takes a dynamic offset
    /// (`bytes` then holds a step every [`STEP_STRIDE`] bytes).
    fn bind_group(
        &self,
        bytes: &[u8],
        step: Option<u64>,
        bindings: &[wgpu::BufferBinding<'_>],
    ) -> Result<wgpu::BindGroup, Error> {
        let cache = || self.groups.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut groups = cache();
            if let Some(i) = groups.iter().rposition(|g| g.binds(bytes, bindings)) {
                let hit = groups.remove(i);
                let group = hit.group.clone();
                groups.push(hit);
                return Ok(group);
            }
        }
        // A miss: made without holding the cache (other threads record meanwhile; two threads
        // missing on one key both insert, and the older copy ages out).
        let uniform = params_buffer(&self.device, bytes)?;
        let params_binding = wgpu::BufferBinding {
            buffer: &uniform,
            offset: 0,
            size: step.and_then(|s| wgpu::BufferSize::new(s.next_multiple_of(16))),
        };
        let entries: Vec<_> = std::iter::once(params_binding)
            .chain(bindings.iter().cloned())
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(b),
            })
            .collect();
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(self.name),
            layout: &self.layout,
            entries: &entries,
        });
        let entry = CachedGroup {
            params: bytes.to_vec(),
            ranges: bindings
                .iter()
                .map(|b| (b.buffer.clone(), b.offset, b.size))
                .collect(),
            group: group.clone(),
        };
        let evicted = {
            let mut groups = cache();
            groups.push(entry);
            (groups.len() > BIND_CACHE).then(|| groups.remove(0))
        };
        // Freed outside the cache's lock (wgpu destroys the group and its uniform buffer).
        drop(evicted);
        Ok(group)
    }

    /// Errors unless this driver runs `iterations` loop iterations per invocation (llvmpipe
    /// silently ends an invocation's loops after 65535 in all).
    pub(crate) fn check_loop_budget(&self, iterations: u64, what: &str) -> Result<(), Error> {
        match self.loop_budget {
            Some(budget) if iterations > budget => Err(Error::Unsupported(format!(
                "{what} takes about {iterations} loop iterations per invocation on this path; \
                 this driver (llvmpipe) silently stops loops after {budget}: use a smaller job \
                 (or a GPU)"
            ))),
            _ => Ok(()),
        }
    }
}

/// Splits `total` workgroups over a 2-D grid within the per-dimension limit; shaders linearise
/// it as `x + y * num_workgroups.x`, and skip the few surplus groups.
pub(crate) fn grid(total: u32, max_per_dim: u32) -> (u32, u32) {
    if total <= max_per_dim {
        (total.max(1), 1)
    } else {
        let y = total.div_ceil(max_per_dim);
        (total.div_ceil(y), y)
    }
}

/// A small uniform buffer holding a kernel's parameters. (Not `create_buffer_init`, which
/// panics on a lost device.)
pub(crate) fn params_buffer(device: &wgpu::Device, bytes: &[u8]) -> Result<wgpu::Buffer, Error> {
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("params"),
        size: (bytes.len() as u64).next_multiple_of(16),
        usage: wgpu::BufferUsages::UNIFORM,
        mapped_at_creation: true,
    });
    {
        let mut view = buffer
            .get_mapped_range_mut(..)
            .map_err(|e| Error::DeviceLost(format!("cannot write kernel parameters: {e}")))?;
        view.slice(..bytes.len()).copy_from_slice(bytes);
    }
    buffer.unmap();
    Ok(buffer)
}

/// Runs `f` holding `lock`, inside validation, out-of-memory and internal error scopes of
/// `device`, and returns the first error wgpu reported as an `Err` (never the
/// uncaptured-error handler's panic).
pub(crate) fn scoped<T>(
    device: &wgpu::Device,
    lock: &DeviceLock,
    f: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    let _guard = lock.lock();
    // In the browser a scope's promise resolves only after this task yields, so blocking on it
    // would hang the page: `f`'s wgpu errors reach the enclosing scope of `Gpu::submit_async`
    // (or the device's uncaptured-error handler). This crate's own checks still return `Err`.
    #[cfg(target_arch = "wasm32")]
    {
        let _ = device;
        f()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let result = f();
        let v = pollster::block_on(validation.pop());
        let i = pollster::block_on(internal.pop());
        let o = pollster::block_on(oom.pop());
        let result = match o.or(v).or(i) {
            Some(e) => Err(e.into()),
            None => result,
        };
        // On a lost (or destroyed) device every error reads the same.
        if result.is_err()
            && let Some(m) = lock.lost_device(device)
        {
            return Err(Error::DeviceLost(m));
        }
        result
    }
}

/// Checks that `slice` (the argument named `what`) can be bound as storage and holds `bytes`
/// bytes: `STORAGE` usage, an offset that is a multiple of 4, and a size of at least `bytes`.
/// The one place every family checks a device view.
pub(crate) fn check_slice(
    what: &str,
    slice: wgpu::BufferSlice<'_>,
    bytes: u64,
) -> Result<(), Error> {
    if !slice.buffer().usage().contains(wgpu::BufferUsages::STORAGE) {
        return Err(Error::InvalidArgument(format!(
            "{what}: the buffer lacks BufferUsages::STORAGE"
        )));
    }
    if !slice.offset().is_multiple_of(4) {
        return Err(Error::InvalidArgument(format!(
            "{what}: the slice starts at byte {}, not a multiple of 4",
            slice.offset()
        )));
    }
    if slice.size() < bytes {
        return Err(Error::InvalidArgument(format!(
            "{what}: the slice holds {} bytes; {bytes} are needed",
            slice.size()
        )));
    }
    Ok(())
}

/// Checks a `rows x k` view (the argument named `what`) and returns its element count.
pub(crate) fn check_view(
    what: &str,
    slice: wgpu::BufferSlice<'_>,
    format: LogitsFormat,
    rows: u64,
    k: u64,
) -> Result<u64, Error> {
    if k == 0 {
        return Err(Error::InvalidArgument(format!(
            "{what}: k (categories per row) must be at least 1"
        )));
    }
    if rows > u64::from(u32::MAX) {
        return Err(Error::TooLarge(format!("{what}: {rows} rows in one job")));
    }
    let len = rows
        .checked_mul(k)
        .filter(|n| n.checked_mul(8).is_some())
        .ok_or_else(|| Error::TooLarge(format!("{what}: {rows} rows of {k}")))?;
    check_slice(what, slice, format.buffer_bytes(len))?;
    Ok(len)
}

/// Checks that no output of a job (`writes`) shares its buffer with an input (`reads`), and that
/// no two outputs overlap. wgpu refuses a dispatch that binds one buffer both read-only and
/// read-write (and would say so only at submit, as a validation error); two overlapping outputs
/// would race. Outputs may share a buffer (an arena) where their *bound* ranges are disjoint: a
/// kernel binds from the view's offset rounded down to the device's storage-offset alignment, and
/// WebGPU rejects a dispatch whose writable bindings overlap, so two outputs in one buffer must
/// be disjoint after rounding each start down to [`MAX_BIND_ALIGN`] (256 bytes, the largest
/// alignment a device may ask for, so a job accepted here is valid on every device). The error
/// names both arguments.
/// The largest `min_storage_buffer_offset_alignment` a device may ask for (WebGPU and wgpu cap
/// it at 256 bytes).
pub(crate) const MAX_BIND_ALIGN: u64 = 256;

/// [`MAX_BIND_ALIGN`] in 4-byte words: where the slice-level calls start each output region of
/// one buffer.
pub(crate) const ALIGN_WORDS: usize = MAX_BIND_ALIGN as usize / 4;

pub(crate) fn check_no_alias<'a>(
    reads: &[(&str, Option<wgpu::BufferSlice<'a>>)],
    writes: &[(&str, Option<wgpu::BufferSlice<'a>>)],
) -> Result<(), Error> {
    // No allocation: this runs on every record (a decode loop's per-step host cost).
    fn present<'s, 'a>(
        v: &'s [(&'s str, Option<wgpu::BufferSlice<'a>>)],
    ) -> impl Iterator<Item = (&'s str, wgpu::BufferSlice<'a>)> + Clone {
        v.iter().filter_map(|&(n, s)| s.map(|s| (n, s)))
    }
    let (reads, writes) = (present(reads), present(writes));
    for (i, (w, ws)) in writes.clone().enumerate() {
        if let Some((r, _)) = reads.clone().find(|(_, rs)| rs.buffer() == ws.buffer()) {
            return Err(Error::InvalidArgument(format!(
                "{w}: shares its buffer with the input {r}; a dispatch cannot bind one buffer \
                 read-only and read-write, so keep outputs in other buffers than inputs"
            )));
        }
        let range = |s: &wgpu::BufferSlice<'_>| {
            s.offset() / MAX_BIND_ALIGN * MAX_BIND_ALIGN..s.offset() + s.size()
        };
        for (v, vs) in writes.clone().skip(i + 1) {
            let (a, b) = (range(&ws), range(&vs));
            if ws.buffer() == vs.buffer() && a.start < b.end && b.start < a.end {
                return Err(Error::InvalidArgument(format!(
                    "{w}: overlaps the output {v} (bytes {a:?} and {b:?} of one buffer, each \
                     bound from its offset rounded down to {MAX_BIND_ALIGN} bytes); start the \
                     later output at a multiple of {MAX_BIND_ALIGN} bytes past the earlier one's end"
                )));
            }
        }
    }
    Ok(())
}

/// Serialises this crate's device work where the backend needs it: wgpu's GL backend guards its
/// one context with a lock that panics a thread after waiting 6 seconds ("Could not lock adapter
/// context"), and a submit-and-wait holds that lock for the whole job. On GL, every operation of
/// this crate (recording, submitting, waiting, reading back) holds this lock instead, so other
/// threads wait here, without a time limit, and never on wgpu-hal's. Reentrant: a blocking call
/// holds it across the `record` calls it makes. A no-op on every other backend.
pub(crate) struct DeviceLock {
    enabled: bool,
    /// Set by the device-lost callback (shared with `Gpu`).
    lost: Arc<Mutex<Option<String>>>,
    owner: Mutex<(Option<ThreadId>, usize)>,
    free: Condvar,
}

/// Holds a [`DeviceLock`] until dropped.
pub(crate) struct DeviceGuard<'a>(Option<&'a DeviceLock>);

impl DeviceLock {
    pub(crate) fn new(enabled: bool, lost: Arc<Mutex<Option<String>>>) -> Self {
        DeviceLock {
            enabled,
            lost,
            owner: Mutex::new((None, 0)),
            free: Condvar::new(),
        }
    }

    /// Whether the device is lost, asked after an error: a destroyed device (`destroy`) reports
    /// its loss only on the next poll, and until then every wgpu call on it fails with a
    /// validation error about invalid objects, which this turns into one `Error::DeviceLost`.
    pub(crate) fn lost_device(&self, device: &wgpu::Device) -> Option<String> {
        let lost = || self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(m) = lost() {
            return Some(m);
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _device = self.lock();
            let _ = device.poll(wgpu::PollType::Poll);
        }
        #[cfg(target_arch = "wasm32")]
        let _ = device;
        lost()
    }

    pub(crate) fn lock(&self) -> DeviceGuard<'_> {
        if !self.enabled {
            return DeviceGuard(None);
        }
        let me = std::thread::current().id();
        let mut owner = self.owner.lock().unwrap_or_else(|e| e.into_inner());
        while owner.0.is_some_and(|t| t != me) {
            owner = self.free.wait(owner).unwrap_or_else(|e| e.into_inner());
        }
        *owner = (Some(me), owner.1 + 1);
        DeviceGuard(Some(self))
    }
}

impl Drop for DeviceGuard<'_> {
    fn drop(&mut self) {
        if let Some(lock) = self.0 {
            let mut owner = lock.owner.lock().unwrap_or_else(|e| e.into_inner());
            owner.1 -= 1;
            if owner.1 == 0 {
                owner.0 = None;
                lock.free.notify_one();
            }
        }
    }
}
