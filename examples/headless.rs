//! The library inside an application that already owns a `wgpu::Device`: the application's
//! buffers stay on the GPU, and the kernels are recorded into the application's own command
//! encoder next to its other work, with a single submit.
//!
//!     cargo run --release --example headless

use gumbel_wgpu::{
    Gpu, LogitsView, Noise, SampleJob, SoftmaxJob, SoftmaxMode, Stream, Temperature,
};

const ROWS: u64 = 4;
const K: u64 = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The application's own device, created the application's way.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("application"),
        required_limits: adapter.limits(),
        ..Default::default()
    }))?;
    println!("application device on {}", adapter.get_info().name);

    // The library wraps it (clones of wgpu handles share the device).
    let gpu = Gpu::from_wgpu(device.clone(), queue.clone());
    let softmax = gpu.gumbel_softmax_kernels()?;
    let sampler = gpu.sampler()?;

    // Application buffers: logits produced by "its model" (here: uploaded once), outputs, readback.
    let logits: Vec<f32> = (0..ROWS * K)
        .map(|i| ((i % K) as f32 * 0.7).sin() * 2.0)
        .collect();
    let storage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let make = |label: &str, bytes: u64, usage| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage,
            mapped_at_creation: false,
        })
    };
    let staging_logits = make("model output", ROWS * K * 4, storage);
    queue.write_buffer(&staging_logits, 0, bytemuck::cast_slice(&logits));
    // Sub-allocated, as engines and burn keep tensors: the logits sit at byte LOGITS_AT of an
    // input arena; y and the sampled indices share one output arena. Any 4-byte offset works,
    // whatever the device's storage offset alignment.
    const LOGITS_AT: u64 = 1028;
    let (y_bytes, idx_bytes) = (ROWS * K * 4, ROWS * 4);
    let inputs = make("input arena", LOGITS_AT + ROWS * K * 4, storage);
    let outputs = make("output arena", y_bytes + idx_bytes, storage);
    let logits_view = inputs.slice(LOGITS_AT..LOGITS_AT + ROWS * K * 4);
    let readback = make(
        "readback",
        y_bytes + idx_bytes,
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
    );

    // One encoder: the application's own copy, then the library's kernels, then its readback copy.
    let stream = Stream::new(2026);
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("frame"),
    });
    encoder.copy_buffer_to_buffer(&staging_logits, 0, &inputs, LOGITS_AT, None);
    softmax.record(
        &mut encoder,
        &SoftmaxJob {
            mode: SoftmaxMode::Soft,
            logits: LogitsView::f32(logits_view, ROWS, K),
            tau: Temperature::Scalar(0.5),
            stream,
            out: outputs.slice(..y_bytes),
            status: None,
        },
    )?;
    sampler.record(
        &mut encoder,
        &SampleJob {
            logits: LogitsView::f32(logits_view, ROWS, K),
            top: 1,
            tau: Temperature::Scalar(1.0),
            stream,
            noise: Noise::Bits32,
            out: outputs.slice(y_bytes..y_bytes + idx_bytes),
        },
    )?;
    encoder.copy_buffer_to_buffer(&outputs, 0, &readback, 0, None);
    queue.submit([encoder.finish()]);
    println!("recorded copy + Gumbel-Softmax + Gumbel-max + readback copies: one submit");

    let (tx, rx) = std::sync::mpsc::channel();
    readback.map_async(wgpu::MapMode::Read, .., move |r| tx.send(r).unwrap());
    device.poll(wgpu::PollType::wait_indefinitely())?;
    rx.recv()??;
    let view = readback.get_mapped_range(..)?;
    let y: &[f32] = bytemuck::cast_slice(&view[..(ROWS * K * 4) as usize]);
    let idx: &[u32] = bytemuck::cast_slice(&view[(ROWS * K * 4) as usize..]);
    for r in 0..ROWS as usize {
        let row = &y[r * K as usize..(r + 1) * K as usize];
        let argmax = (0..K as usize).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        println!(
            "row {r}: y = [{}]  sampled index {} (argmax of y: {argmax})",
            row.iter()
                .map(|v| format!("{v:.3}"))
                .collect::<Vec<_>>()
                .join(" "),
            idx[r]
        );
        assert_eq!(
            idx[r] as usize, argmax,
            "same stream, same noise: the draw is the soft sample's argmax"
        );
    }
    Ok(())
}
