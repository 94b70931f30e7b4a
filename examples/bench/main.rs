//! Throughput of every kernel family against the device's own copy bandwidth, measured in the
//! same run with GPU timestamp queries (wall clock around a blocking submit where the adapter has
//! none). Prints a table and writes it as JSON.
//!
//!     cargo run --release --example bench -- [--quick] [--json PATH] [--only SUBSTRING]

mod roofline;

use gumbel_wgpu::{
    BackwardArgs, BackwardInput, Error, Gpu, GradSpace, LogitsFormat, RandomKind, SampleShape,
    SoftmaxJob, SoftmaxMode, Stream, Temperature,
};
use roofline::{Clock, CopyKernel, median, time_gpu};
use std::io::Write;
use std::time::Instant;

/// The standard shapes (rows, k) of the project's benchmarks.
const SHAPES: &[(usize, usize)] = &[
    (1_048_576, 16),
    (65_536, 256),
    (8_192, 1_024),
    (1_024, 32_768),
    (64, 131_072),
    (8, 131_072),
    (1, 131_072),
];

/// Command line.
#[derive(clap::Parser)]
#[command(about = "Throughput of every kernel family against the device's copy bandwidth")]
struct Args {
    /// Fewer repetitions and smaller problems (the CI run).
    #[arg(long)]
    quick: bool,
    /// Also write the table as JSON to this path.
    #[arg(long, value_name = "PATH")]
    json: Option<String>,
    /// Only the kernels whose name contains this substring.
    #[arg(long, value_name = "SUBSTRING")]
    only: Option<String>,
}

/// One measured line of the table.
struct Measurement {
    kernel: String,
    shape: String,
    elements: u64,
    seconds: f64,
    /// The fewest bytes the kernel must move.
    bytes: u64,
    clock: Clock,
}

struct Bench {
    gpu: Gpu,
    args: Args,
    warmup: usize,
    reps: usize,
    copy_bytes_per_s: f64,
    results: Vec<Measurement>,
    /// Seconds of one blocking host-to-host sample of a 131072-way row.
    round_trip: Option<f64>,
}

impl Bench {
    fn wanted(&self, name: &str) -> bool {
        self.args.only.as_deref().is_none_or(|o| name.contains(o))
    }

    /// Times `record` and adds a line to the table.
    fn measure(
        &mut self,
        kernel: &str,
        shape: &str,
        elements: u64,
        bytes: u64,
        record: impl FnMut(&mut wgpu::CommandEncoder) -> Result<(), Error>,
    ) -> Result<(), Error> {
        eprint!("  {kernel:<28} {shape:<14} ... ");
        let _ = std::io::stderr().flush();
        let (mut times, clock) = time_gpu(&self.gpu, self.warmup, self.reps, record)?;
        let seconds = median(&mut times);
        eprintln!("{:>10.1} us", seconds * 1e6);
        self.results.push(Measurement {
            kernel: kernel.into(),
            shape: shape.into(),
            elements,
            seconds,
            bytes,
            clock,
        });
        Ok(())
    }

    fn gbps(&self, m: &Measurement) -> f64 {
        m.bytes as f64 / m.seconds / 1e9
    }

    fn print_table(&self) {
        println!();
        println!("adapter: {}", self.gpu.describe());
        println!(
            "copy bandwidth (read + write): {:.1} GB/s",
            self.copy_bytes_per_s / 1e9
        );
        if let Some(t) = self.round_trip {
            println!(
                "host round trip, Gpu::sample of one 131072-way row (slice in, index out): {:.1} us",
                t * 1e6
            );
        }
        println!(
            "{:<28} {:<14} {:>12} {:>10} {:>8} {:>14}",
            "kernel", "shape", "time (us)", "GB/s", "% copy", "G elements/s"
        );
        for m in &self.results {
            let gbps = self.gbps(m);
            println!(
                "{:<28} {:<14} {:>12.1} {:>10.1} {:>7.1}% {:>14.2}",
                m.kernel,
                m.shape,
                m.seconds * 1e6,
                gbps,
                100.0 * gbps * 1e9 / self.copy_bytes_per_s,
                m.elements as f64 / m.seconds / 1e9
            );
        }
    }

    fn json(&self) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::from("{\n");
        out += &format!("  \"adapter\": \"{}\",\n", esc(&self.gpu.describe()));
        out += &format!("  \"quick\": {},\n", self.args.quick);
        out += &format!("  \"copy_GBps\": {:.3},\n", self.copy_bytes_per_s / 1e9);
        if let Some(t) = self.round_trip {
            out += &format!("  \"sample_1x131072_round_trip_seconds\": {t:.9},\n");
        }
        out += "  \"results\": [\n";
        let lines: Vec<String> = self
            .results
            .iter()
            .map(|m| {
                format!(
                    "    {{\"kernel\": \"{}\", \"shape\": \"{}\", \"elements\": {}, \"seconds\": {:.9}, \"bytes\": {}, \"GBps\": {:.3}, \"pct_copy\": {:.2}, \"clock\": \"{:?}\"}}",
                    esc(&m.kernel),
                    esc(&m.shape),
                    m.elements,
                    m.seconds,
                    m.bytes,
                    self.gbps(m),
                    100.0 * self.gbps(m) * 1e9 / self.copy_bytes_per_s,
                    m.clock
                )
            })
            .collect();
        out += &lines.join(",\n");
        out += "\n  ]\n}\n";
        out
    }
}

/// Device-to-device copy bandwidth with the WGSL vec4 copy kernel.
fn measure_copy(b: &mut Bench) -> Result<(), Error> {
    let max = b
        .gpu
        .limits()
        .max_storage_buffer_binding_size
        .min(b.gpu.limits().max_buffer_size);
    let bytes = (if b.args.quick {
        64u64 << 20
    } else {
        1u64 << 30
    })
    .min(max / 16 * 16);
    let src = b.gpu.storage_buffer("copy src", bytes)?;
    let dst = b.gpu.storage_buffer("copy dst", bytes)?;
    let copy = b.gpu.copy_kernel()?;
    b.measure(
        "device copy",
        &format!("{} MiB", bytes >> 20),
        bytes / 4,
        2 * bytes,
        |enc| copy.record(enc, &src, &dst, bytes),
    )?;
    let m = b.results.last().unwrap();
    b.copy_bytes_per_s = m.bytes as f64 / m.seconds;
    Ok(())
}

/// Philox words, uniforms and Gumbel noise written to memory (4 B/element).
fn measure_fills(b: &mut Bench) -> Result<(), Error> {
    let n: u64 = if b.args.quick { 1 << 24 } else { 1 << 28 };
    let out = b.gpu.storage_buffer("fill", n * 4)?;
    let fill = b.gpu.random_fill()?;
    for (name, kind) in [
        ("philox fill (words)", RandomKind::Words),
        ("gumbel fill", RandomKind::Gumbel),
    ] {
        if b.wanted(name) {
            b.measure(name, &format!("{n}"), n, 4 * n, |enc| {
                fill.record(enc, kind, Stream::new(1), &out, n)
            })?;
        }
    }
    Ok(())
}

/// Buffers of one standard shape, shared by every kernel measured at that shape.
struct ShapeBuffers {
    rows: u64,
    k: u64,
    logits: wgpu::Buffer,
    indices: wgpu::Buffer,
    y: wgpu::Buffer,
    dy: wgpu::Buffer,
    dl: wgpu::Buffer,
}

const TOP: u32 = 8;

fn shape_buffers(gpu: &Gpu, rows: usize, k: usize) -> Result<ShapeBuffers, Error> {
    // Logits: Gumbel noise of another stream, a realistic spread of values.
    let n = rows * k;
    let logits = gpu.storage_buffer("logits", n as u64 * 4)?;
    let fill = gpu.random_fill()?;
    gpu.submit(|enc| {
        fill.record(
            enc,
            RandomKind::Gumbel,
            Stream::new(0xbe7c4),
            &logits,
            n as u64,
        )
    })?;
    let indices = gpu.storage_buffer("indices", rows as u64 * u64::from(TOP) * 4)?;
    let y = gpu.storage_buffer("y", n as u64 * 4)?;
    let dy = gpu.storage_buffer("dy", n as u64 * 4)?;
    gpu.submit(|enc| fill.record(enc, RandomKind::Uniform, Stream::new(0xd1), &dy, n as u64))?;
    let dl = gpu.storage_buffer("dl", n as u64 * 4)?;
    Ok(ShapeBuffers {
        rows: rows as u64,
        k: k as u64,
        logits,
        indices,
        y,
        dy,
        dl,
    })
}

/// The forward pass in `mode` into `s.y` (8 B/element: read the logits, write y).
fn forward<'a>(s: &'a ShapeBuffers, mode: SoftmaxMode) -> SoftmaxJob<'a> {
    SoftmaxJob {
        mode,
        format: LogitsFormat::F32,
        logits: &s.logits,
        k: s.k,
        rows: s.rows,
        tau: Temperature::Scalar(0.5),
        stream: Stream::new(3),
        out: &s.y,
        status: None,
    }
}

/// Every kernel family at every standard shape: the forward in three modes (8 B/element), the
/// backward from a stored y and recomputing y (12 B/element), forward + recomputing backward
/// (20 B/element), Gumbel-max sampling (4 B/element) and Gumbel-top-8 (4 B/element counted).
fn measure_shapes(b: &mut Bench) -> Result<(), Error> {
    for &(rows, k) in SHAPES {
        // --quick keeps k and takes 1/16 of the rows (of 16 or more), so software adapters finish fast.
        let rows = if b.args.quick && rows >= 16 {
            rows / 16
        } else {
            rows
        };
        let shape = format!("{rows}x{k}");
        let s = shape_buffers(&b.gpu, rows, k)?;
        let n = s.rows * s.k;
        let sampler = b.gpu.sampler()?;
        let softmax = b.gpu.gumbel_softmax_kernels()?;
        let backward = b.gpu.gumbel_softmax_backward_kernels()?;
        for (name, mode) in [
            ("forward soft", SoftmaxMode::Soft),
            ("forward hard", SoftmaxMode::Hard),
            ("forward log", SoftmaxMode::Log),
        ] {
            if b.wanted(name) {
                b.measure(name, &shape, n, 8 * n, |enc| {
                    softmax.record(enc, &forward(&s, mode))
                })?;
            }
        }
        let from_y = BackwardArgs {
            input: BackwardInput::Probs(&s.y),
            grad: &s.dy,
            out: &s.dl,
            rows: s.rows,
            k: s.k as u32,
            tau: Temperature::Scalar(0.5),
        };
        let recompute = BackwardArgs {
            input: BackwardInput::Logits {
                logits: &s.logits,
                format: LogitsFormat::F32,
                stream: Stream::new(3),
                space: GradSpace::Probs,
            },
            ..from_y
        };
        if b.wanted("backward from y") {
            b.measure("backward from y", &shape, n, 12 * n, |enc| {
                backward.record(enc, &from_y)
            })?;
        }
        if b.wanted("backward recompute") {
            b.measure("backward recompute", &shape, n, 12 * n, |enc| {
                backward.record(enc, &recompute)
            })?;
        }
        if b.wanted("forward+backward") {
            b.measure("forward+backward recompute", &shape, n, 20 * n, |enc| {
                softmax.record(enc, &forward(&s, SoftmaxMode::Soft))?;
                backward.record(enc, &recompute)
            })?;
        }
        if b.wanted("sample") {
            b.measure("sample (Gumbel-max)", &shape, n, 4 * n, |enc| {
                sampler.record(
                    enc,
                    SampleShape::new(s.rows, s.k),
                    &s.logits,
                    None,
                    Stream::new(3),
                    &s.indices,
                )
            })?;
        }
        if b.wanted("top-k") {
            let top = SampleShape {
                top: TOP,
                ..SampleShape::new(s.rows, s.k)
            };
            b.measure("sample top-8", &shape, n, 4 * n, |enc| {
                sampler.record(enc, top, &s.logits, None, Stream::new(3), &s.indices)
            })?;
        }
    }
    Ok(())
}

/// Host round trip of one 131072-way draw: slice in, index out (wall clock, blocking).
fn measure_round_trip(b: &mut Bench) -> Result<(), Error> {
    let k = 131_072;
    let logits: Vec<f32> = b.gpu.gumbel(Stream::new(11), k)?;
    let mut times = Vec::new();
    for i in 0..(b.reps + b.warmup) {
        let t = Instant::now();
        let idx = b
            .gpu
            .sample(&logits, k, Stream::new(12).advance(i as u64 * k as u64))?;
        std::hint::black_box(idx);
        if i >= b.warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let seconds = median(&mut times);
    eprintln!(
        "  host round trip, sample 1x131072 from a host slice: {:.1} us",
        seconds * 1e6
    );
    b.round_trip = Some(seconds);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let args = <Args as clap::Parser>::parse();
    let gpu = Gpu::new()?;
    let (warmup, reps) = if args.quick { (1, 3) } else { (3, 20) };
    eprintln!(
        "benchmarking on {} ({} repetitions, median)",
        gpu.describe(),
        reps
    );
    let started = Instant::now();
    let mut b = Bench {
        gpu,
        args,
        warmup,
        reps,
        copy_bytes_per_s: f64::NAN,
        results: Vec::new(),
        round_trip: None,
    };
    measure_copy(&mut b)?;
    measure_fills(&mut b)?;
    measure_shapes(&mut b)?;
    if b.wanted("round trip") {
        measure_round_trip(&mut b)?;
    }
    b.print_table();
    if let Some(path) = &b.args.json {
        std::fs::write(path, b.json())?;
        eprintln!("wrote {path}");
    }
    eprintln!("finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
