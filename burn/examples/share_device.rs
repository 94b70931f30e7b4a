//! burn and gumbel-wgpu on one wgpu device, with no copy through the host.
//!
//! burn (0.22, wgpu backend) is registered on this program's own wgpu instance, adapter, device
//! and queue (`WgpuSetup`), and so is the library (`Gpu::from_wgpu`). burn computes a packed
//! tensor of two logit heads; the library's Gumbel-Softmax forward and its sampler read the second
//! head in place, at its byte offset inside burn's buffer, and write into burn tensors. burn then
//! goes on computing with those results on the device. The host only sees the final checks.
//!
//!     cd burn && cargo run --release --example share_device
//!
//! (The buffer level, by hand. The crate itself, `gumbel_wgpu_burn`, wraps the same binding as
//! burn ops: see `examples/vae.rs`.)
use burn::backend::Cube;
use burn::backend::wgpu::{AutoCompiler, CubeTensor, MemoryConfiguration, WgpuResource, WgpuSetup};
use burn::tensor::{DType, Device, Distribution, Int, Tensor};
use cubecl_wgpu::WgpuServer;
use gumbel_wgpu::{
    Gpu, LogitsView, Noise, SampleJob, SoftmaxJob, SoftmaxMode, Stream, Temperature, cpu, wgpu,
};

/// The cubecl tensor behind a burn tensor of the wgpu backend.
#[cfg(not(feature = "fusion"))]
fn cube<const D: usize, K>(t: &Tensor<D, K>) -> CubeTensor
where
    K: burn::tensor::kind::Basic + burn::tensor::BackendPrimitive<Cube, Primitive = CubeTensor>,
{
    t.clone()
        .try_into_primitive::<Cube>()
        .expect("a tensor on the wgpu runtime")
}

/// With burn's `fusion` feature (this crate's `fusion`), a primitive is a lazy fusion tensor:
/// the fusion client runs what is queued on it and hands over its cubecl tensor (the handle
/// stays shared with burn's tensor, which sees what the library writes).
#[cfg(feature = "fusion")]
fn cube<const D: usize, K>(t: &Tensor<D, K>) -> CubeTensor
where
    K: burn::tensor::kind::Basic
        + burn::tensor::BackendPrimitive<
            Cube,
            Primitive = burn_fusion::FusionTensor<burn_cubecl::fusion::FusionCubeRuntime>,
        >,
{
    let fused = t
        .clone()
        .try_into_primitive::<Cube>()
        .expect("a tensor on the wgpu runtime");
    let client = fused.client.clone();
    client.resolve_tensor_float::<burn_cubecl::CubeBackend>(fused)
}

/// The buffer, byte offset and byte size behind a burn tensor on the wgpu runtime. The guard
/// keeps burn from reusing the memory while the library's work is recorded.
fn resource(cube: CubeTensor) -> (WgpuResource, impl Sized) {
    // get_resource also submits burn's pending work on this tensor (its writes come first).
    let managed = cube
        .client
        .get_resource::<WgpuServer<AutoCompiler>>(cube.handle.clone())
        .expect("the tensor's wgpu buffer");
    (managed.resource().clone(), (managed, cube))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One wgpu device for both libraries.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    let info = adapter.get_info();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("shared"),
        required_limits: adapter.limits(),
        // burn's kernels use 64-bit integers where the adapter has them; the library uses
        // these features where present too.
        required_features: adapter.features()
            & (wgpu::Features::SHADER_INT64
                | wgpu::Features::SUBGROUP
                | wgpu::Features::SHADER_F16),
        ..Default::default()
    }))?;
    println!("adapter: {} ({:?})", info.name, info.backend);
    let gpu = Gpu::from_wgpu(device.clone(), queue.clone());
    // One buffer per tensor: WebGPU forbids binding one buffer read-only (the logits) and
    // read-write (the outputs) in one dispatch, and burn's default pool packs small tensors
    // into shared pages.
    let bdev = Device::wgpu_options()
        .memory_config(MemoryConfiguration::ExclusivePages)
        .setup(WgpuSetup {
            instance: instance.clone(),
            adapter: adapter.clone(),
            device: device.clone(),
            queue: queue.clone(),
            backend: info.backend,
        })
        .init()?;

    bdev.seed(7);
    // burn computes the logits: two heads of `rows x k`, packed row-major in one tensor.
    let (rows, k) = (37usize, 1000usize);
    let packed = Tensor::<2>::random([2 * rows, k], Distribution::Normal(0.0, 1.0), &bdev) * 3.0;
    let y = Tensor::<2>::empty([rows, k], &bdev);
    let samples = Tensor::<1, Int>::empty([rows], (&bdev, DType::I32));

    let (logits_r, _g1) = resource(cube(&packed));
    let (y_r, _g2) = resource(cube(&y));
    let (s_r, _g3) = resource(cube(&samples));
    assert_eq!(packed.dtype(), DType::F32);
    assert!(logits_r.buffer != y_r.buffer && logits_r.buffer != s_r.buffer);
    // Head 1 starts rows * k floats into the packed tensor: 148000 bytes, not a multiple of the
    // 256-byte storage binding alignment. The library binds it where it lies.
    let head = logits_r.offset + (rows * k * 4) as u64;
    let logits = LogitsView::f32(
        logits_r.buffer.slice(head..head + (rows * k * 4) as u64),
        rows as u64,
        k as u64,
    );
    println!(
        "logits: head 1 of a burn tensor, at byte {head} of a {}-byte wgpu buffer",
        logits_r.buffer.size()
    );
    let stream = Stream::new(2026);
    bdev.flush()?; // burn's queued work is submitted before ours
    let softmax = gpu.gumbel_softmax_kernels()?;
    let sampler = gpu.sampler()?;
    gpu.submit(|enc| {
        softmax.record(
            enc,
            &SoftmaxJob {
                mode: SoftmaxMode::Soft,
                logits,
                tau: Temperature::Scalar(0.7),
                stream,
                out: y_r.buffer.slice(y_r.offset..y_r.offset + y_r.size),
                status: None,
            },
        )?;
        // Gumbel-max with the same noise: argmax(l + g) is the argmax of every
        // softmax((l + g) / tau), so burn can check one against the other on the device.
        sampler.record(
            enc,
            &SampleJob {
                logits,
                top: 1,
                tau: Temperature::Scalar(1.0),
                stream,
                noise: Noise::Bits32,
                out: s_r.buffer.slice(s_r.offset..s_r.offset + s_r.size),
            },
        )
    })?;

    // burn goes on with the results, on the device.
    let row_sums = y.clone().sum_dim(1);
    let argmax = y.clone().argmax(1).reshape([rows]);
    let agree = argmax.clone().equal(samples.clone().cast(argmax.dtype()));
    let entropy = -(y.clone() * y.clone().clamp_min(1e-30).log())
        .sum_dim(1)
        .mean();

    // The host sees only the checks.
    let sums: Vec<f32> = row_sums.into_data().try_to_vec()?;
    let worst_sum = sums.iter().map(|s| (s - 1.0).abs()).fold(0.0f32, f32::max);
    let agree: i64 = agree.int().sum().into_scalar();
    let head1: Vec<f32> = packed
        .slice([rows..2 * rows, 0..k])
        .into_data()
        .try_to_vec()?;
    let want_y = cpu::gumbel_softmax(&head1, k, 0.7, stream);
    let got_y: Vec<f32> = y.into_data().try_to_vec()?;
    let worst = got_y
        .iter()
        .zip(&want_y)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max);
    let got_s: Vec<i32> = samples.into_data().try_to_vec()?;
    let want_s = cpu::sample(&head1, k, None, stream);
    let entropy: f32 = entropy.into_scalar();
    println!("row sums of y (burn): within {worst_sum:.2e} of 1");
    println!(
        "burn's argmax(y) == the sampler's indices: {} of {rows} rows",
        agree
    );
    println!("y vs the f64 CPU reference: max error {worst:.2e}");
    println!("mean entropy of y (burn): {entropy:.4}");
    if worst_sum > 1e-4 || agree != rows as i64 || worst > 2e-5 {
        return Err("the shared-device results disagree".into());
    }
    if got_s.iter().zip(&want_s).any(|(&g, &w)| g as u32 != w) {
        return Err(format!("samples {got_s:?} differ from the CPU's {want_s:?}").into());
    }
    println!("ok: burn tensors in, burn tensors out, one device, no host copy");
    Ok(())
}
