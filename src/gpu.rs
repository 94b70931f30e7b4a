//! The GPU context: device, queue, capabilities, the pipeline cache, error capture and readback.

use crate::Error;
use crate::family::{self, DeviceLock, FamilyLimits, KernelFamily};
use crate::shader::ShaderConfig;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Optional wgpu features this crate uses when the adapter has them.
pub const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SHADER_INT64
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::SHADER_F16);

/// Which optional features [`Gpu::with_options`] may use (all by default). Turning one off makes
/// the kernels take their portable path, e.g. the 32-bit Philox multiply without `SHADER_INT64`.
#[derive(Clone, Copy, Debug)]
pub struct GpuOptions {
    /// Use `u64` multiplies in Philox where the adapter has `SHADER_INT64`.
    pub int64: bool,
    /// Use subgroup operations where the adapter has `SUBGROUP`.
    pub subgroups: bool,
    /// Accept `f16` logits natively where the adapter has `SHADER_F16`.
    pub f16: bool,
    /// Compile the kernels with wgpu's runtime checks: naga's bounds checks on every buffer and
    /// array index, a counter on every loop, guarded integer division, and zero-initialised
    /// workgroup memory. Off by default: each shader's contract states why its indices stay in
    /// range, its loops end, its divisors are non-zero and its workgroup memory is written
    /// before it is read, and the test suite runs every kernel both ways. Turn it on to rule the
    /// kernels out when something looks wrong.
    pub runtime_checks: bool,
    /// The bounds sanitizer, for testing the kernels (slow): every storage and workgroup array
    /// index of every kernel is checked, an out-of-range one is recorded instead of used, and
    /// the blocking calls and [`Gpu::submit`] return [`Error::OutOfBounds`] naming the family,
    /// entry point, array, line and index; every entry point fills its workgroup memory with
    /// poison first, so a read before a write shows in the results. Also turned on by
    /// `GUMBEL_WGPU_BOUNDS_CHECK=1` in the environment (for [`Gpu::new`] and
    /// [`Gpu::from_wgpu`] too). Native only. See `src/sanitize.rs`.
    pub bounds_check: bool,
    /// Rewrites each family's composed WGSL before the sanitizer (tests plant bad indices).
    #[doc(hidden)]
    pub shader_patch: Option<crate::sanitize::ShaderPatch>,
    /// Split work into dispatches of at most this many elements, as if the device's storage
    /// bindings were this small (a multiple of 64). Tests use it to exercise chunking.
    #[doc(hidden)]
    pub max_chunk_elements: Option<u64>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            int64: true,
            subgroups: true,
            f16: true,
            runtime_checks: false,
            bounds_check: false,
            shader_patch: None,
            max_chunk_elements: None,
        }
    }
}

/// The GPU this crate runs on: a wgpu device and queue, with the kernels built for it.
///
/// Its methods, in the order a user meets them (rustdoc lists them by module instead):
///
/// | what | blocking, host to host | buffer level: the kernels, recorded into your encoder |
/// |---|---|---|
/// | open a device | [`Gpu::new`], [`Gpu::with_options`], [`Gpu::from_wgpu`] | [`Gpu::device`], [`Gpu::queue`], [`Gpu::describe`] |
/// | Gumbel-Softmax forward | [`Gpu::gumbel_softmax`], [`Gpu::gumbel_softmax_hard`], [`Gpu::gumbel_softmax_log`], [`Gpu::gumbel_softmax_with`] | [`Gpu::gumbel_softmax_kernels`] |
/// | its backward pass | [`Gpu::gumbel_softmax_backward`], [`Gpu::gumbel_softmax_backward_recompute`], [`Gpu::gumbel_softmax_hard_backward`], [`Gpu::gumbel_softmax_backward_with`] | [`Gpu::gumbel_softmax_backward_kernels`] |
/// | sampling | [`Gpu::sample`], [`Gpu::sample_top_k`], [`Gpu::sample_with`] | [`Gpu::sampler`] |
/// | LM token sampling (temperature, min-p, top-k, top-p, logprobs) | [`Gpu::sample_tokens`], [`Gpu::sample_tokens_with`], [`Gpu::verify_speculative`] | [`Gpu::token_sampler`], [`Gpu::speculative_verifier`] |
/// | Concrete density | [`Gpu::concrete_log_prob`], [`Gpu::concrete_log_prob_simplex`] | [`Gpu::concrete_density_kernels`] |
/// | random numbers | [`Gpu::random_u32`], [`Gpu::uniform`], [`Gpu::gumbel`] | [`Gpu::random_fill`] |
/// | buffers | [`Gpu::upload`], [`Gpu::read_buffer`] | [`Gpu::storage_buffer`], [`Gpu::submit`] |
///
/// Share it by reference across threads (`&Gpu` is `Send + Sync`); every operation either
/// records into a caller's encoder or submits and waits on its own. On OpenGL, whose one context
/// wgpu-hal guards with a lock that panics after 6 seconds of waiting, this crate serialises its
/// own device work behind a lock of its own, so threads wait for each other as long as jobs
/// take, and never panic. (Work an application submits to the same GL device itself, outside
/// this crate, and wgpu objects it drops while a long job runs, which wgpu-hal destroys under
/// the same context lock, are not covered.)
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter_info: Option<wgpu::AdapterInfo>,
    config: ShaderConfig,
    families: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    lost: Arc<Mutex<Option<String>>>,
    uncaptured: Arc<Mutex<Option<String>>>,
    owns_device: bool,
    max_chunk_override: Option<u64>,
    runtime_checks: bool,
    sanitizer: Option<Arc<crate::sanitize::Sanitizer>>,
    lock: Arc<DeviceLock>,
    pool: BufferPool,
}

/// Buffers the slice API reuses across calls (uploads, outputs and readback staging), so a
/// blocking call allocates nothing in the steady state. Each call takes the buffers it needs
/// and gives them back when done, so threads never share one. Bounded: at most
/// [`BufferPool::KEEP`] buffers of each kind, each at most [`BufferPool::MAX_BYTES`].
#[derive(Default)]
struct BufferPool {
    free: Mutex<Vec<wgpu::Buffer>>,
}

impl BufferPool {
    const KEEP: usize = 8;
    const MAX_BYTES: u64 = 64 << 20;
}

/// A buffer on loan from the pool; it goes back when dropped.
pub(crate) struct Pooled<'a> {
    buffer: Option<wgpu::Buffer>,
    pool: &'a BufferPool,
    /// Held while a buffer is destroyed: on GL, destroying takes wgpu-hal's context lock.
    lock: &'a DeviceLock,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("present until dropped")
    }
}

impl Pooled<'_> {
    /// Keeps the buffer out of the pool (a failed map may leave it mapped).
    fn discard(mut self) {
        let _device = self.lock.lock();
        self.buffer = None;
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(b) = self.buffer.take() else { return };
        if b.size() > BufferPool::MAX_BYTES {
            let _device = self.lock.lock();
            drop(b);
            return;
        }
        let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
        let same_kind = free.iter().filter(|f| f.usage() == b.usage()).count();
        if same_kind < BufferPool::KEEP {
            free.push(b);
        } else {
            drop(free);
            let _device = self.lock.lock();
            drop(b);
        }
    }
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.adapter_info.as_ref().map(|i| &i.name))
            .field("config", &self.config)
            .finish()
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn device_type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

impl Gpu {
    /// Opens the best adapter: a discrete GPU first, then integrated, virtual, and software ones.
    /// Honours `WGPU_BACKEND` (e.g. `vulkan`, `gl`), `WGPU_ADAPTER_NAME` (a substring of the
    /// adapter's name) and `WGPU_POWER_PREF` (`low` / `high`) as wgpu's own utilities do, and
    /// requests the adapter's limits and the optional features this crate can use.
    pub fn new() -> Result<Gpu, Error> {
        Gpu::with_options(GpuOptions::default())
    }

    /// Like [`Gpu::new`], using only the optional features `options` allows.
    pub fn with_options(options: GpuOptions) -> Result<Gpu, Error> {
        #[cfg(not(target_arch = "wasm32"))]
        return pollster::block_on(Self::open(options));
        #[cfg(target_arch = "wasm32")]
        {
            let _ = options;
            Err(blocking_unsupported("Gpu::new", "Gpu::new_async"))
        }
    }

    /// [`Gpu::new`] without blocking: the way to open a device in the browser (WebGPU), and in
    /// async native code.
    pub async fn new_async() -> Result<Gpu, Error> {
        Self::open(GpuOptions::default()).await
    }

    /// [`Gpu::with_options`] without blocking.
    pub async fn with_options_async(options: GpuOptions) -> Result<Gpu, Error> {
        Self::open(options).await
    }

    async fn open(options: GpuOptions) -> Result<Gpu, Error> {
        let adapter = Self::pick_adapter().await?;
        let mut wanted = OPTIONAL_FEATURES;
        if !options.int64 {
            wanted.remove(wgpu::Features::SHADER_INT64);
        }
        if !options.subgroups {
            wanted.remove(wgpu::Features::SUBGROUP);
        }
        if !options.f16 {
            wanted.remove(wgpu::Features::SHADER_F16);
        }
        let features = adapter.features() & wanted;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("gumbel-wgpu"),
                required_features: features,
                required_limits: adapter.limits(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        let mut gpu = Gpu::wrap(device, queue, Some(adapter.get_info()));
        gpu.owns_device = true;
        gpu.runtime_checks = options.runtime_checks;
        if options.bounds_check || bounds_check_from_env() {
            gpu.sanitizer = Some(Arc::new(crate::sanitize::Sanitizer::new(
                &gpu.device,
                options.shader_patch,
            )));
        }
        gpu.max_chunk_override = options.max_chunk_elements.map(|c| c.max(64) / 64 * 64);
        // We own this device: errors outside our scopes are recorded, never a panic.
        let uncaptured = gpu.uncaptured.clone();
        gpu.device
            .on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                log::error!("uncaptured wgpu error: {e}");
                *uncaptured.lock().unwrap() = Some(e.to_string());
            }));
        Ok(gpu)
    }

    /// Enumerates the adapters of `backends` (a fresh instance limited to them).
    #[cfg(not(target_arch = "wasm32"))]
    async fn adapters(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends = backends;
        wgpu::Instance::new(desc).enumerate_adapters(backends).await
    }

    /// Keeps Mesa's implicit Vulkan layer `VK_LAYER_MESA_device_select` from printing
    /// "error: XDG_RUNTIME_DIR is invalid or not set" twice per device open on machines without
    /// a session (servers, CI, containers). wgpu always enables `VK_KHR_wayland_surface`, which
    /// makes that layer connect to Wayland to find the compositor's GPU, and libwayland prints
    /// the error when `XDG_RUNTIME_DIR` is unset. Without it no compositor can be reached anyway,
    /// and this crate ranks the adapters itself, so the layer has nothing to add: we set its own
    /// off switch, `NODEVICE_SELECT=1`, once, only then, and never over a value the user set.
    #[cfg(all(unix, not(target_os = "macos"), not(target_arch = "wasm32")))]
    fn quiet_device_select_layer() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("XDG_RUNTIME_DIR").is_none()
                && std::env::var_os("NODEVICE_SELECT").is_none()
            {
                // SAFETY: set once, before this crate's first Vulkan instance; the variable is
                // only read by the Vulkan loader when an instance is created. A program that
                // reads the environment from C on another thread at this very moment should set
                // XDG_RUNTIME_DIR or NODEVICE_SELECT itself, which turns this off.
                unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
            }
        });
    }

    #[cfg(target_arch = "wasm32")]
    async fn pick_adapter() -> Result<wgpu::Adapter, Error> {
        // The browser offers one adapter through navigator.gpu.requestAdapter.
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::BROWSER_WEBGPU,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        instance
            .request_adapter(&wgpu::RequestAdapterOptions::default())
            .await
            .map_err(|e| Error::NoAdapter(format!("the browser offers no WebGPU adapter: {e}")))
    }

    #[cfg(not(target_arch = "wasm32"))]
    async fn pick_adapter() -> Result<wgpu::Adapter, Error> {
        #[cfg(all(unix, not(target_os = "macos"), not(target_arch = "wasm32")))]
        Self::quiet_device_select_layer();
        // GL (EGL) only when asked for or when nothing else serves: probing EGL prints errors
        // of its own on machines without a display server.
        let asked = wgpu::Backends::from_env();
        let backends = asked.unwrap_or(wgpu::Backends::all() - wgpu::Backends::GL);
        let mut adapters = Self::adapters(backends).await;
        if adapters.is_empty() && asked.is_none() {
            adapters = Self::adapters(wgpu::Backends::GL).await;
        }
        if adapters.is_empty() {
            return Err(Error::NoAdapter(format!(
                "wgpu enumerated no adapter for backends {:?}",
                asked.unwrap_or(wgpu::Backends::all())
            )));
        }
        if let Ok(name) = std::env::var("WGPU_ADAPTER_NAME") {
            let want = name.to_lowercase();
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            return adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&want))
                .ok_or_else(|| {
                    Error::NoAdapter(format!(
                        "WGPU_ADAPTER_NAME={name:?} matches none of {names:?}"
                    ))
                });
        }
        // Discrete first (integrated first for WGPU_POWER_PREF=low); among equals prefer
        // Vulkan/Metal/DX12 over GL.
        let low_power = wgpu::PowerPreference::from_env() == Some(wgpu::PowerPreference::LowPower);
        adapters.sort_by_key(|a| {
            let info = a.get_info();
            let rank = match (low_power, info.device_type) {
                (true, wgpu::DeviceType::IntegratedGpu) => 0,
                (true, wgpu::DeviceType::DiscreteGpu) => 1,
                (_, t) => device_type_rank(t),
            };
            (rank, u32::from(info.backend == wgpu::Backend::Gl))
        });
        Ok(adapters.remove(0))
    }

    /// Wraps a device the application already has. The kernels use the features the device was
    /// created with (`SHADER_INT64`, `SUBGROUP`, `SHADER_F16`, `TIMESTAMP_QUERY`) and its limits.
    /// The application keeps its own uncaptured-error handler: this crate captures its errors in
    /// error scopes.
    pub fn from_wgpu(device: wgpu::Device, queue: wgpu::Queue) -> Gpu {
        let mut gpu = Gpu::wrap(device, queue, None);
        if bounds_check_from_env() {
            gpu.sanitizer = Some(Arc::new(crate::sanitize::Sanitizer::new(&gpu.device, None)));
        }
        gpu
    }

    fn wrap(
        device: wgpu::Device,
        queue: wgpu::Queue,
        adapter_info: Option<wgpu::AdapterInfo>,
    ) -> Gpu {
        let f = device.features();
        let config = ShaderConfig {
            int64: f.contains(wgpu::Features::SHADER_INT64),
            subgroups: f.contains(wgpu::Features::SUBGROUP),
            f16: f.contains(wgpu::Features::SHADER_F16),
        };
        let gl = device.adapter_info().backend == wgpu::Backend::Gl;
        let lost = Arc::new(Mutex::new(None));
        let lost2 = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lost2.lock().unwrap() = Some(format!("{reason:?}: {message}"));
        });
        let lock = Arc::new(DeviceLock::new(gl, lost.clone()));
        Gpu {
            device,
            queue,
            adapter_info,
            config,
            families: Mutex::new(HashMap::new()),
            lost,
            uncaptured: Arc::new(Mutex::new(None)),
            owns_device: false,
            max_chunk_override: None,
            runtime_checks: false,
            sanitizer: None,
            lock,
            pool: BufferPool::default(),
        }
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The adapter's description, when this `Gpu` opened it itself.
    pub fn adapter_info(&self) -> Option<&wgpu::AdapterInfo> {
        self.adapter_info.as_ref()
    }

    /// A one-line description of the adapter and the paths the kernels take.
    pub fn describe(&self) -> String {
        let name = match &self.adapter_info {
            Some(i) => format!(
                "{} ({:?}, {:?}, driver {} {})",
                i.name, i.backend, i.device_type, i.driver, i.driver_info
            ),
            None => "application-provided device".to_string(),
        };
        format!(
            "{name}; philox multiply: {}; subgroups: {}; f16: {}; timestamps: {}; runtime checks: {}; bounds sanitizer: {}",
            if self.config.int64 {
                "u64"
            } else {
                "32-bit emulation"
            },
            self.config.subgroups,
            self.config.f16,
            self.has_timestamps(),
            self.runtime_checks,
            self.sanitizer.is_some()
        )
    }

    /// The shader variant the kernels are built for.
    #[doc(hidden)]
    pub fn shader_config(&self) -> ShaderConfig {
        self.config
    }

    /// Whether GPU timestamp queries are available (benchmarks use them).
    pub fn has_timestamps(&self) -> bool {
        self.device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// The device limits.
    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    /// The largest number of 4-byte elements one storage binding may hold, rounded down to a
    /// multiple of 64 elements so a chunk's byte offset meets the 256-byte offset alignment.
    pub(crate) fn max_binding_elements(&self) -> u64 {
        let l = self.device.limits();
        let align = u64::from(l.min_storage_buffer_offset_alignment.max(4)) / 4;
        let e = l.max_storage_buffer_binding_size / 4;
        // Keep per-dispatch element counts far from u32 overflow in the shaders.
        let max = e.min(1 << 30) / align * align;
        self.max_chunk_override
            .map_or(max, |c| c.min(max).max(align))
    }

    /// The most loop iterations one shader invocation may run, where the driver caps it:
    /// llvmpipe (Mesa's software rasterizer, behind lavapipe and llvmpipe GL) silently ends every
    /// loop of an invocation once their iterations add up to 65535. Kernels whose loop count grows
    /// with the input check against this and return an error instead of a wrong result.
    pub(crate) fn loop_budget(&self) -> Option<u64> {
        let info = self.device.adapter_info();
        let software = |s: &str| s.to_lowercase().contains("llvmpipe");
        (software(&info.name) || software(&info.driver) || software(&info.driver_info))
            .then_some(65_535)
    }

    /// The kernel family `F`, built on first use and cached.
    pub(crate) fn family<F: KernelFamily>(&self) -> Result<Arc<F>, Error> {
        let id = TypeId::of::<F>();
        if let Some(f) = self.families.lock().unwrap().get(&id) {
            return Ok(f
                .clone()
                .downcast::<F>()
                .expect("family cache keyed by TypeId"));
        }
        // Built outside the cache lock: building compiles shaders and may take a while.
        self.check_alive()?;
        let limits = FamilyLimits {
            max_elements: self.max_binding_elements(),
            align: u64::from(
                self.device
                    .limits()
                    .min_storage_buffer_offset_alignment
                    .max(4),
            ),
            max_groups: self.device.limits().max_compute_workgroups_per_dimension,
            loop_budget: self.loop_budget(),
            cpu: self.device.adapter_info().device_type == wgpu::DeviceType::Cpu,
            runtime_checks: self.runtime_checks,
            sanitizer: self.sanitizer.clone(),
        };
        let built = Arc::new(family::build::<F>(
            &self.device,
            &self.lock,
            &self.config,
            limits,
        )?);
        self.check_alive()?;
        let mut map = self.families.lock().unwrap();
        let entry = map
            .entry(id)
            .or_insert_with(|| built as Arc<dyn Any + Send + Sync>);
        Ok(entry
            .clone()
            .downcast::<F>()
            .expect("family cache keyed by TypeId"))
    }

    /// Under the bounds sanitizer, fails if a kernel indexed out of range since the last check
    /// (waits for the work submitted so far).
    fn check_bounds(&self) -> Result<(), Error> {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(s) = &self.sanitizer {
            let _device = self.lock.lock();
            return s.check(&self.device, &self.queue);
        }
        Ok(())
    }

    /// Fails if the device was lost or (for a device we opened) an error escaped the scopes.
    pub(crate) fn check_alive(&self) -> Result<(), Error> {
        if let Some(m) = self.lost.lock().unwrap().clone() {
            return Err(Error::DeviceLost(m));
        }
        if self.owns_device
            && let Some(m) = self.uncaptured.lock().unwrap().take()
        {
            return Err(self.lost_or(Error::Validation(m)));
        }
        Ok(())
    }

    /// `e`, or `Error::DeviceLost` if the device turns out to be lost (every error on a lost
    /// device reads the same, whichever call met it).
    pub(crate) fn lost_or(&self, e: Error) -> Error {
        match self.lock.lost_device(&self.device) {
            Some(m) => Error::DeviceLost(m),
            None => e,
        }
    }

    /// Runs `f` holding the device lock inside error scopes (see [`family::scoped`]), after
    /// checking the device is alive.
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        self.check_alive()?;
        let r = family::scoped(&self.device, &self.lock, f);
        self.check_alive()?;
        r
    }

    /// A storage buffer of `bytes` bytes, checked against the device's limits first.
    pub fn storage_buffer(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer, Error> {
        let max = self.device.limits().max_buffer_size;
        if bytes > max {
            return Err(Error::TooLarge(format!(
                "{label} needs a buffer of {bytes} bytes; this device allows at most {max}"
            )));
        }
        self.scoped(|| {
            Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.max(4).next_multiple_of(4),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }))
        })
    }

    /// A storage buffer holding `data`.
    pub fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<wgpu::Buffer, Error> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buffer = self.storage_buffer(label, bytes.len() as u64)?;
        if !bytes.is_empty() {
            let _device = self.lock.lock();
            self.queue.write_buffer(&buffer, 0, bytes);
        }
        Ok(buffer)
    }

    /// Records with `record` into a fresh encoder, submits it and waits for the GPU, inside error
    /// scopes: the blocking convenience over the buffer-level `record` calls.
    pub fn submit(
        &self,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<(), Error>,
    ) -> Result<(), Error> {
        #[cfg(target_arch = "wasm32")]
        {
            let _ = record;
            Err(blocking_unsupported("Gpu::submit", "Gpu::submit_async"))
        }
        // The blocking API is the async core, waited on (each wait polls the device).
        #[cfg(not(target_arch = "wasm32"))]
        pollster::block_on(self.submit_async(record))
    }

    /// A buffer of at least `bytes` bytes (a power of two, at least 256) with `usage`, from the
    /// pool when one is free, for the duration of a slice-level call.
    pub(crate) fn pooled(
        &self,
        label: &str,
        bytes: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<Pooled<'_>, Error> {
        let size = bytes.max(256).next_power_of_two();
        let max = self.device.limits().max_buffer_size;
        if bytes > max {
            return Err(Error::TooLarge(format!(
                "{label} needs a buffer of {bytes} bytes; this device allows at most {max}"
            )));
        }
        let taken = {
            let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
            free.iter()
                .position(|b| b.usage() == usage && b.size() >= bytes && b.size() <= 2 * size)
                .map(|i| free.swap_remove(i))
        };
        let buffer = match taken {
            Some(b) => b,
            None => self.scoped(|| {
                Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: size.min(max.max(4) / 4 * 4).max(bytes.next_multiple_of(4)),
                    usage,
                    mapped_at_creation: false,
                }))
            })?,
        };
        Ok(Pooled {
            buffer: Some(buffer),
            pool: &self.pool,
            lock: &self.lock,
        })
    }

    /// A pooled storage buffer holding `data` from byte 0 (the rest of it is stale).
    pub(crate) fn pooled_upload<T: bytemuck::Pod>(
        &self,
        label: &str,
        data: &[T],
    ) -> Result<Pooled<'_>, Error> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buffer = self.pooled(label, bytes.len() as u64, Self::STORAGE_USAGE)?;
        if !bytes.is_empty() {
            let _device = self.lock.lock();
            let padded = bytes.len().next_multiple_of(4);
            if padded == bytes.len() {
                self.queue.write_buffer(&buffer, 0, bytes);
            } else {
                let mut v = bytes.to_vec();
                v.resize(padded, 0);
                self.queue.write_buffer(&buffer, 0, &v);
            }
        }
        Ok(buffer)
    }

    /// A pooled storage buffer of at least `bytes` bytes (contents stale).
    pub(crate) fn pooled_storage(&self, label: &str, bytes: u64) -> Result<Pooled<'_>, Error> {
        self.pooled(label, bytes, Self::STORAGE_USAGE)
    }

    const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
        .union(wgpu::BufferUsages::COPY_SRC)
        .union(wgpu::BufferUsages::COPY_DST);

    /// The slice API's round trip in one submission: records `record`, copies the first `len`
    /// elements of `out` into a pooled staging buffer behind it, submits once, waits once and
    /// reads them back.
    pub(crate) fn run_and_read<T: bytemuck::Pod>(
        &self,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<(), Error>,
        out: &wgpu::Buffer,
        len: usize,
    ) -> Result<Vec<T>, Error> {
        let bytes = (len * std::mem::size_of::<T>()) as u64;
        let _device = self.lock.lock();
        let staging = self.pooled(
            "readback",
            bytes.max(4),
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        self.scoped(|| {
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            record(&mut encoder)?;
            if bytes > 0 {
                encoder.copy_buffer_to_buffer(out, 0, &staging, 0, Some(bytes.next_multiple_of(4)));
            }
            self.queue.submit([encoder.finish()]);
            Ok(())
        })?;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let read = self.map_and_read(&staging, bytes);
        if read.is_err() {
            staging.discard();
            // A lost device fails the map: say so (a job whose bind group was cached creates
            // nothing on the device, so no earlier call noticed).
            self.check_alive()?;
        }
        let read = read.map_err(|e| self.lost_or(e));
        self.check_bounds()?;
        read
    }

    /// Maps the first `bytes` of a staging buffer whose copy is submitted, waits, and reads.
    fn map_and_read<T: bytemuck::Pod>(
        &self,
        staging: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<Vec<T>, Error> {
        #[cfg(target_arch = "wasm32")]
        if true {
            let _ = (staging, bytes);
            return Err(blocking_unsupported(
                "reading back (the slice API, Gpu::read_buffer)",
                "Gpu::submit_async and Gpu::read_buffer_async",
            ));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let mapped = bytes.next_multiple_of(4);
        staging.map_async(wgpu::MapMode::Read, ..mapped, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Readback(e.to_string()))?;
        rx.recv()
            .map_err(|e| Error::Readback(e.to_string()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let view = staging
            .get_mapped_range(..mapped)
            .map_err(|e| Error::Readback(e.to_string()))?;
        let out = bytemuck::cast_slice::<u8, T>(&view[..bytes as usize]).to_vec();
        drop(view);
        staging.unmap();
        self.check_alive()?;
        Ok(out)
    }

    /// Copies `len` elements of `buffer` (from element 0) back to the host.
    pub fn read_buffer<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
        len: usize,
    ) -> Result<Vec<T>, Error> {
        let bytes = (len * std::mem::size_of::<T>()) as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = buffer;
            Err(blocking_unsupported(
                "Gpu::read_buffer",
                "Gpu::read_buffer_async",
            ))
        }
        #[cfg(not(target_arch = "wasm32"))]
        pollster::block_on(self.read_buffer_async(buffer, len))
    }
}

/// `GUMBEL_WGPU_BOUNDS_CHECK=1` (or `true`) turns the bounds sanitizer on.
fn bounds_check_from_env() -> bool {
    std::env::var("GUMBEL_WGPU_BOUNDS_CHECK").is_ok_and(|v| v == "1" || v == "true")
}

/// The error of a blocking call in the browser, which cannot wait for the GPU.
#[cfg(target_arch = "wasm32")]
fn blocking_unsupported(what: &str, instead: &str) -> Error {
    Error::Unsupported(format!(
        "{what} blocks, and a browser page cannot wait for the GPU; use {instead} (or record \
         the job with `record` and submit it with Gpu::submit_async)"
    ))
}

/// The async core: what the blocking calls do, without blocking. The only way to run kernels in
/// the browser; on native they work too (each wait polls the device).
impl Gpu {
    /// Records with `record` into a fresh encoder and submits it inside validation,
    /// out-of-memory and internal error scopes popped with `.await`, then waits until the GPU
    /// has finished the submission. Errors wgpu reports for the recording or the submission
    /// are `Err`.
    pub async fn submit_async(
        &self,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.check_alive()?;
        // The three scopes are popped (in reverse order) before the first `.await`: a pop is
        // issued when `pop()` is called, and another task's `submit_async` awaiting between our
        // pops would push its own scope in between, which wgpu rejects as a mismatched pop (a
        // panic in the browser, where two page events can each run a call).
        let (submitted, v, i, o) = {
            let _device = self.lock.lock();
            let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
            let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let submitted = (|| -> Result<wgpu::SubmissionIndex, Error> {
                let mut encoder = self
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
                record(&mut encoder)?;
                Ok(self.queue.submit([encoder.finish()]))
            })();
            (submitted, validation.pop(), internal.pop(), oom.pop())
        };
        let (v, i, o) = (v.await, i.await, o.await);
        if let Some(e) = o.or(v).or(i) {
            return Err(self.lost_or(e.into()));
        }
        let index = submitted.map_err(|e| self.lost_or(e))?;
        self.finished(index).await?;
        self.check_bounds()?;
        self.check_alive()
    }

    /// Waits until the GPU has finished submission `index`: on native by polling the device, in
    /// the browser by awaiting the queue's promise.
    async fn finished(&self, index: wgpu::SubmissionIndex) -> Result<(), Error> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _device = self.lock.lock();
            self.device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(index),
                    timeout: None,
                })
                .map_err(|e| Error::DeviceLost(e.to_string()))?;
            Ok(())
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = index;
            let (tx, rx) = oneshot();
            self.queue.on_submitted_work_done(move || tx.send(()));
            rx.await
                .ok_or_else(|| Error::DeviceLost("the queue dropped its work-done callback".into()))
        }
    }

    /// Copies `len` elements of `buffer` (from element 0) back to the host without blocking:
    /// `map_async` completes a channel that this future awaits.
    pub async fn read_buffer_async<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
        len: usize,
    ) -> Result<Vec<T>, Error> {
        let bytes = (len * std::mem::size_of::<T>()) as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let mapped = bytes.next_multiple_of(4);
        if buffer.size() < mapped || !buffer.usage().contains(wgpu::BufferUsages::COPY_SRC) {
            return Err(Error::InvalidArgument(format!(
                "buffer: reading {len} elements needs {mapped} bytes and COPY_SRC usage; it has \
                 {} bytes and {:?}",
                buffer.size(),
                buffer.usage()
            )));
        }
        // Created, unmapped and destroyed under the device lock: on GL each takes wgpu-hal's
        // context lock (see `DeviceLock`). No guard is held across an `.await`.
        let staging = {
            let _device = self.lock.lock();
            DropLocked(
                Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: mapped,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })),
                &self.lock,
            )
        };
        self.submit_async(|enc| {
            enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, Some(mapped));
            Ok(())
        })
        .await?;
        let (tx, rx) = oneshot();
        staging.map_async(wgpu::MapMode::Read, .., move |r| tx.send(r));
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _device = self.lock.lock();
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Readback(e.to_string()))?;
        }
        rx.await
            .ok_or_else(|| Error::Readback("map_async dropped its callback".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let out = {
            let _device = self.lock.lock();
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::Readback(e.to_string()))?;
            let out = bytemuck::cast_slice::<u8, T>(&view[..bytes as usize]).to_vec();
            drop(view);
            staging.unmap();
            out
        };
        self.check_alive()?;
        Ok(out)
    }
}

/// A wgpu object destroyed under the device lock when dropped: on GL, wgpu-hal destroys it under
/// its context lock, which must not wait behind another thread's long job.
struct DropLocked<'a, T>(Option<T>, &'a DeviceLock);

impl<T> std::ops::Deref for DropLocked<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<T> Drop for DropLocked<'_, T> {
    fn drop(&mut self) {
        let _device = self.1.lock();
        self.0 = None;
    }
}

/// A one-value channel whose receiving end is a future: how wgpu's callbacks (`map_async`,
/// `on_submitted_work_done`) reach async code without blocking a thread.
struct OneShot<T> {
    value: Option<T>,
    waker: Option<std::task::Waker>,
    closed: bool,
}

struct OneShotSender<T>(Arc<Mutex<OneShot<T>>>);
struct OneShotReceiver<T>(Arc<Mutex<OneShot<T>>>);

fn oneshot<T>() -> (OneShotSender<T>, OneShotReceiver<T>) {
    let shared = Arc::new(Mutex::new(OneShot {
        value: None,
        waker: None,
        closed: false,
    }));
    (OneShotSender(shared.clone()), OneShotReceiver(shared))
}

impl<T> OneShotSender<T> {
    fn send(self, value: T) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).value = Some(value);
        // Drop wakes the receiver.
    }
}

impl<T> Drop for OneShotSender<T> {
    fn drop(&mut self) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.closed = true;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
}

impl<T> std::future::Future for OneShotReceiver<T> {
    /// `None` when the sender was dropped without sending.
    type Output = Option<T>;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = s.value.take() {
            return std::task::Poll::Ready(Some(v));
        }
        if s.closed {
            return std::task::Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        std::task::Poll::Pending
    }
}
