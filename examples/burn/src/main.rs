//! burn and gumbel-wgpu on one wgpu device: exploration of the in-place plumbing.
use burn::backend::Cube;
use burn::backend::wgpu::{AutoCompiler, WgpuResource, WgpuSetup};
use burn::tensor::{Device, Tensor, TensorData};
use cubecl_wgpu::WgpuServer;

type Server = WgpuServer<AutoCompiler>;

/// The wgpu buffer, byte offset and byte size behind a float tensor (kept alive by `keep`).
fn resource(t: &Tensor<2>) -> (WgpuResource, impl Sized + use<>) {
    let prim = t
        .clone()
        .try_into_primitive::<Cube>()
        .expect("a cubecl tensor");
    let managed = prim
        .client
        .get_resource::<Server>(prim.handle.clone())
        .expect("resource");
    let r = managed.resource().clone();
    (r, (managed, prim))
}

fn main() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: adapter.limits(),
        required_features: adapter.features()
            & (wgpu::Features::SHADER_INT64 | wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16),
        ..Default::default()
    }))
    .unwrap();
    println!("adapter: {:?}", adapter.get_info().name);
    let backend = adapter.get_info().backend;
    let bdev = Device::wgpu_options()
        .setup(WgpuSetup {
            instance: instance.clone(),
            adapter: adapter.clone(),
            device: device.clone(),
            queue: queue.clone(),
            backend,
        })
        .init()
        .unwrap();
    let big = Tensor::<2>::from_data(TensorData::new((0..35).map(|i| i as f32).collect::<Vec<_>>(), [5, 7]), &bdev);
    let view = big.clone().slice([1..4, 0..7]);
    let l1 = Tensor::<2>::zeros([64, 1000], &bdev);
    let l2 = Tensor::<2>::empty([64, 1000], &bdev);
    let l3 = Tensor::<2>::empty([512, 1000], &bdev);
    let l4 = Tensor::<2>::empty([512, 1000], &bdev);
    let s1 = Tensor::<2>::empty([512, 1], &bdev);
    for (name, t) in [("big", &big), ("view", &view), ("l1", &l1), ("l2", &l2), ("l3", &l3), ("l4", &l4), ("s1", &s1)] {
        let (r, _keep) = resource(t);
        println!("{name}: buffer {:?} of {} bytes at {} size {}", r.buffer.as_entire_buffer_binding().buffer as *const _, r.buffer.size(), r.offset, r.size);
    }
    let x = Tensor::<2>::from_data(
        TensorData::new((0..12).map(|i| i as f32).collect::<Vec<_>>(), [3, 4]),
        &bdev,
    );
    let y = x.clone() * 2.0;
    let a = Tensor::<2>::from_data(TensorData::new(vec![1.0f32; 6], [2, 3]), &bdev);
    for (name, t) in [("x", &x), ("y", &y), ("a", &a)] {
        let (r, _keep) = resource(t);
        println!(
            "{name}: buffer of {} bytes, tensor at {} size {} usage {:?}",
            r.buffer.size(),
            r.offset,
            r.size,
            r.buffer.usage()
        );
    }
    // Write into y's buffer in place with our own queue submission, then read through burn.
    let out = Tensor::<2>::empty([3, 4], &bdev);
    let (r, _keep) = resource(&out);
    bdev.flush().unwrap();
    println!("out: at {} of a {}-byte buffer", r.offset, r.buffer.size());
    queue.write_buffer(&r.buffer, r.offset, bytemuck::cast_slice(&[5.0f32; 12]));
    let z = out + 1.0;
    println!("z = {:?}", z.into_data().try_to_vec::<f32>().unwrap());
}
