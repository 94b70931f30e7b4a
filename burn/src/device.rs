//! One wgpu device for burn and the library: the registry that maps a burn device to the
//! library's [`Gpu`] on the same wgpu device, and the glue that binds burn tensors' buffers.

use burn::backend::wgpu::{AutoCompiler, MemoryConfiguration, WgpuResource, WgpuSetup};
use burn::tensor::Device;
use burn::tensor::wgpu::WgpuOptions;
use burn_cubecl::CubeDevice;
use burn_cubecl::tensor::CubeTensor;
use cubecl_wgpu::WgpuServer;
use gumbel_wgpu::{Error, Gpu, wgpu};
use std::sync::{Arc, Mutex};

/// The library's side of one shared device: its [`Gpu`] (kernels), the raw handles (this crate
/// records into its own encoders and submits on the shared queue without waiting), and a scratch
/// buffer for outputs that would share a buffer with an input.
pub(crate) struct Shared {
    pub(crate) gpu: Gpu,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    scratch: Mutex<Option<wgpu::Buffer>>,
}

/// Registered devices: (burn's cube device, the library's side). A handful at most, so a list.
static REGISTRY: Mutex<Vec<(CubeDevice, Arc<Shared>)>> = Mutex::new(Vec::new());

/// The cube device behind a burn device (autodiff or not).
fn cube_device(device: &Device) -> Result<CubeDevice, Error> {
    use burn::backend::DispatchDevice;
    match device.as_dispatch().clone().inner() {
        DispatchDevice::Cube(d) => Ok(d),
        other => Err(Error::InvalidArgument(format!(
            "device: {other:?} is not a cubecl (wgpu) device"
        ))),
    }
}

/// Registers `gpu` as the library's side of burn's `device`: both must be on one wgpu device
/// (burn registered with [`WgpuSetup`] on the handles `gpu` was made from, or `gpu` made with
/// [`Gpu::from_wgpu`] from the handles burn's `init_with_setup` returned). Replaces an earlier
/// registration of the same device.
pub fn register(device: &Device, device_handles: (wgpu::Device, wgpu::Queue)) -> Result<(), Error> {
    let cube = cube_device(device)?;
    let (wdev, queue) = device_handles;
    let shared = Arc::new(Shared {
        gpu: Gpu::from_wgpu(wdev.clone(), queue.clone()),
        device: wdev,
        queue,
        scratch: Mutex::new(None),
    });
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    reg.retain(|(d, _)| *d != cube);
    reg.push((cube, shared));
    Ok(())
}

/// burn opens the wgpu device (`options.init_with_setup()`: pass `Device::wgpu_options()`, with
/// the memory configuration, graphics API or adapter kind you want) and the library shares it.
/// Returns burn's device (add `.autodiff()` to train).
pub fn init(options: WgpuOptions) -> Result<Device, Error> {
    let (device, setup) = options
        .init_with_setup()
        .map_err(|e| Error::RequestDevice(format!("burn's wgpu runtime: {e:?}")))?;
    register(&device, (setup.device, setup.queue))?;
    Ok(device)
}

/// The application (or the library) opened the wgpu device: burn is registered on `setup`
/// (with `memory` as its memory configuration, burn's default if `None`) and the library on the
/// same handles. Returns burn's device.
pub fn init_setup(setup: WgpuSetup, memory: Option<MemoryConfiguration>) -> Result<Device, Error> {
    let handles = (setup.device.clone(), setup.queue.clone());
    let mut options = Device::wgpu_options().setup(setup);
    if let Some(m) = memory {
        options = options.memory_config(m);
    }
    let device = options
        .init()
        .map_err(|e| Error::RequestDevice(format!("burn's wgpu runtime: {e:?}")))?;
    register(&device, handles)?;
    Ok(device)
}

/// The library's side of the device `tensor` lives on.
pub(crate) fn shared_for(tensor: &CubeTensor) -> Result<Arc<Shared>, Error> {
    let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    reg.iter()
        .find(|(d, _)| *d == tensor.device)
        .map(|(_, s)| s.clone())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "logits: the tensor's device {:?} is not registered with gumbel-wgpu-burn; open it \
                 with gumbel_wgpu_burn::init / init_setup, or call gumbel_wgpu_burn::register",
                tensor.device
            ))
        })
}

/// A burn tensor's place in its wgpu buffer, and the guard that keeps burn from reusing the
/// memory until this crate's work on it is submitted.
pub(crate) struct Bound {
    pub(crate) res: WgpuResource,
    _guard: Box<dyn std::any::Any>,
}

impl Bound {
    pub(crate) fn slice(&self) -> wgpu::BufferSlice<'_> {
        self.res
            .buffer
            .slice(self.res.offset..self.res.offset + self.res.size)
    }

    /// The slice of `bytes` bytes starting `start` bytes into the tensor.
    pub(crate) fn range(&self, start: u64, bytes: u64) -> wgpu::BufferSlice<'_> {
        let o = self.res.offset + start;
        self.res.buffer.slice(o..o + bytes)
    }
}

/// Binds `tensor` (contiguous): submits burn's pending work on it and returns its buffer range.
pub(crate) fn bind(tensor: &CubeTensor) -> Result<Bound, Error> {
    let managed = tensor
        .client
        .get_resource::<WgpuServer<AutoCompiler>>(tensor.handle.clone())
        .map_err(|e| {
            Error::InvalidArgument(format!(
                "a tensor on {:?} is not on burn's wgpu runtime ({e:?})",
                tensor.device
            ))
        })?;
    let res = managed.resource().clone();
    Ok(Bound {
        res,
        _guard: Box::new((managed, tensor.clone())),
    })
}

/// An output buffer range: burn's own tensor when it shares no buffer with an input, else this
/// crate's scratch buffer (WebGPU forbids binding one buffer read-only and read-write in one
/// dispatch; burn's default memory pools pack small tensors into shared pages), copied into
/// burn's tensor after the kernel in the same command buffer.
pub(crate) struct Out {
    pub(crate) target: Bound,
    scratch: Option<wgpu::Buffer>,
}

impl Out {
    pub(crate) fn new(shared: &Shared, target: Bound, inputs: &[&Bound]) -> Out {
        let aliased = inputs.iter().any(|b| b.res.buffer == target.res.buffer);
        let scratch = aliased.then(|| shared.scratch(target.res.size));
        Out { target, scratch }
    }

    /// Where the kernel writes.
    pub(crate) fn slice(&self) -> wgpu::BufferSlice<'_> {
        match &self.scratch {
            Some(b) => b.slice(0..self.target.res.size),
            None => self.target.slice(),
        }
    }

    /// Records the copy into burn's tensor where the kernel wrote to scratch.
    pub(crate) fn finish(&self, enc: &mut wgpu::CommandEncoder) {
        if let Some(b) = &self.scratch {
            let t = &self.target.res;
            enc.copy_buffer_to_buffer(b, 0, &t.buffer, t.offset, t.size);
        }
    }
}

impl Shared {
    /// A scratch buffer of at least `bytes` bytes (grown by doubling, reused across calls:
    /// the queue orders every use of it).
    fn scratch(&self, bytes: u64) -> wgpu::Buffer {
        let mut s = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = s.as_ref()
            && b.size() >= bytes
        {
            return b.clone();
        }
        let size = bytes.max(1024).next_power_of_two();
        let b = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gumbel-wgpu-burn scratch"),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        *s = Some(b.clone());
        b
    }

    /// Records with `record` into a fresh encoder and submits it on the shared queue after
    /// burn's pending work (`client.flush()`), without waiting for the GPU: burn's later work is
    /// queued after it. Validation errors of the recording are `Err` (error scopes on native
    /// resolve at once).
    pub(crate) fn submit(
        &self,
        tensor: &CubeTensor,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<(), Error>,
    ) -> Result<(), Error> {
        tensor
            .client
            .flush()
            .map_err(|e| Error::Internal(format!("flushing burn's queued work: {e:?}")))?;
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let recorded: Result<(), Error> = (|| {
            let mut enc = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("gumbel-wgpu-burn"),
                });
            record(&mut enc)?;
            self.queue.submit([enc.finish()]);
            Ok(())
        })();
        let err = pollster::block_on(validation.pop());
        recorded?;
        match err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// An empty contiguous f32 (or i32) tensor of `shape` beside `like`.
pub(crate) fn empty(
    like: &CubeTensor,
    shape: Vec<usize>,
    dtype: burn::tensor::DType,
) -> CubeTensor {
    let n: usize = shape.iter().product();
    let handle = like.client.empty((n * dtype.size()).max(4));
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape.into(),
        handle,
        dtype,
    )
}

/// The adapter behind a registered burn device (name, backend: Vulkan, GL, ...).
pub fn adapter_info(device: &Device) -> Result<wgpu::AdapterInfo, Error> {
    let cube = cube_device(device)?;
    let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    reg.iter()
        .find(|(d, _)| *d == cube)
        .map(|(_, s)| s.device.adapter_info())
        .ok_or_else(|| {
            Error::InvalidArgument("device: not registered with gumbel-wgpu-burn".into())
        })
}
