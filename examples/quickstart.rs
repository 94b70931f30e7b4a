//! Opens the GPU (or a software adapter), draws random numbers and Gumbel noise from one stream,
//! checks them against the CPU reference, and prints what it did.
//!
//!     cargo run --release --example quickstart

use gumbel_wgpu::{Gpu, Stream, cpu};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.describe());

    let stream = Stream::new(2017);
    let n = 1 << 20;
    let t = Instant::now();
    let words = gpu.random_u32(stream, n)?;
    println!(
        "{n} Philox4x32-10 words in {:.1} ms (host to host)",
        t.elapsed().as_secs_f64() * 1e3
    );
    let same = words == cpu::random_u32(stream, n);
    println!(
        "  first words {:08x?}; identical to the CPU reference: {same}",
        &words[..4]
    );

    let t = Instant::now();
    let g = gpu.gumbel(stream, n)?;
    let mean = g.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
    let (lo, hi) = g
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
    println!(
        "{n} Gumbel(0, 1) samples in {:.1} ms: mean {mean:.4} (Euler's gamma is 0.5772), range [{lo:.3}, {hi:.3}]",
        t.elapsed().as_secs_f64() * 1e3
    );
    if !same {
        return Err("GPU and CPU streams differ".into());
    }
    Ok(())
}
