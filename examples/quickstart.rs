//! The main job in a few lines: open the GPU (or a software adapter), draw a relaxed one-hot
//! sample with Gumbel-Softmax, back-propagate through it, and draw categorical samples with
//! Gumbel-max, each checked against the f64 CPU reference.
//!
//!     cargo run --release --example quickstart

use gumbel_wgpu::{Gpu, Stream, cpu};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.describe());

    // Two rows of k = 4 logits; the stream makes the noise reproducible on any device.
    let (k, tau) = (4, 0.5);
    let logits = [1.0, 2.0, 0.5, -1.0, 0.0, 0.0, 0.0, f32::NEG_INFINITY];
    let stream = Stream::new(2017);

    // Forward: y = softmax((l + g) / tau), a point on the simplex per row.
    let y = gpu.gumbel_softmax(&logits, k, tau, stream)?;
    println!("y      = {y:.3?}");

    // Backward: dL/dl for a loss whose gradient with respect to y is dy.
    let dy = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
    let dl = gpu.gumbel_softmax_backward(&y, &dy, k, tau)?;
    println!("dL/dl  = {dl:.3?}");

    // Gumbel-max: with the same stream, the index of each row's largest y (the hard sample).
    let tokens = gpu.sample(&logits, k, stream)?;
    println!("tokens = {tokens:?} (the -inf category is never drawn)");

    // Everything above equals the f64 CPU reference fed the same stream.
    let y_ref = cpu::gumbel_softmax(&logits, k, f64::from(tau), stream);
    let worst = y
        .iter()
        .zip(&y_ref)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 1e-5,
        "forward differs from the CPU reference by {worst}"
    );
    assert_eq!(tokens, cpu::sample(&logits, k, None, stream));
    println!("matches the CPU reference (max |y - y_ref| = {worst:.1e})");

    // Next draw: advance the stream past the words this one used.
    let _next = stream.advance(logits.len() as u64);
    Ok(())
}
