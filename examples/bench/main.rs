//! Throughput of every kernel family against the device's own copy bandwidth, measured in the
//! same run with GPU timestamp queries (wall clock around a blocking submit where the adapter has
//! none). Prints a table, writes it as JSON and draws it as an SVG bar chart beside the JSON.
//!
//!     cargo run --release --example bench -- [--quick] [--json PATH] [--svg PATH]
//!         [--filter SUBSTRING] [--reps N]
//!
//! One line per measurement goes to stderr as it finishes; the table goes to stdout at the end.

mod chart;
mod roofline;

use clap::Parser;
use gumbel_wgpu::{
    BackwardInput, BackwardJob, Error, Gpu, GradSpace, LogitsView, Noise, RandomJob, RandomKind,
    RowSampling, SampleJob, SoftmaxJob, SoftmaxMode, Stream, Temperature, TokenFilters, TokenJob,
    TokenRowParams, TokenStrategy,
};
use roofline::{Clock, CopyKernel, median, time_gpu};
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

/// The standard shapes (rows, k) of the project's benchmarks.
const SHAPES: &[(u64, u64)] = &[
    (1_048_576, 16),
    (65_536, 256),
    (8_192, 1_024),
    (1_024, 32_768),
    (64, 131_072),
    (8, 131_072),
    (1, 131_072),
];

/// Indices drawn per row by the top-k rows of the table.
const TOP: u32 = 8;

/// Every kernel family at the standard shapes against the device-to-device copy bandwidth.
#[derive(Parser, Debug)]
#[command(name = "bench")]
struct Args {
    /// 3 repetitions after 1 warm-up, 1/16 of the rows at shapes of 16 rows or more, a 64 MiB
    /// copy and 2^24-element fills: enough for CI on a software adapter.
    #[arg(long)]
    quick: bool,
    /// Write the results as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write the bar chart (percent of copy bandwidth by kernel and shape) to PATH
    /// [default: the JSON's path with the extension .svg; none without --json].
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
    /// Measure only the kernels whose name contains SUBSTRING (the copy, the roofline every
    /// percentage is taken against, is always measured).
    #[arg(long, value_name = "SUBSTRING", visible_alias = "only")]
    filter: Option<String>,
    /// Timed repetitions per measurement, of which the median is reported
    /// [default: 3 with --quick, else 20].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    reps: Option<u32>,
}

/// What one line of the table measures. The name is what `--filter` matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Copy,
    FillWords,
    FillGumbel,
    ForwardSoft,
    ForwardHard,
    ForwardLog,
    BackwardFromY,
    BackwardRecompute,
    ForwardBackward,
    Sample,
    /// Gumbel-max with two stream words per element (`Noise::Bits64`).
    Sample64,
    SampleTop,
    /// LM token sampling, temperature 0.8 only (no filter: one pass over the logits).
    TokensTemperature,
    /// LM token sampling, temperature 0.8, top-k 50, top-p 0.9 (vLLM's common setting).
    TokensFiltered,
    /// LM token sampling, the whole chain: a grammar-style mask, a logit bias, the three
    /// penalties from a device-side state, top-nσ, then the filters of `TokensFiltered`, with
    /// processed log-probabilities and ranks.
    TokensChain,
    /// Host round trip of `Gpu::sample` on one row: wall clock, not a bandwidth.
    RoundTrip,
    /// Decode: the filtered setting of `TokensFiltered` at batch 1 (and 2, for the ratio
    /// t(2 rows) / t(1 row): about 1 while a row uses one workgroup, about the device's core
    /// count once a row is spread over the device) at vocabularies of 32000, 131072, 262144, on
    /// the split-row path (what `Auto` takes on a GPU).
    TokensDecode,
    /// `TokensDecode` forced to one workgroup per row (the path before the split one).
    TokensDecodeOneWorkgroup,
}

/// Groups of kernels measured together, sharing their buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Copy,
    Fill,
    /// Forward, backward and sampling at one standard shape.
    Shape,
    /// LM token sampling at one batch x vocabulary shape.
    Tokens,
    RoundTrip,
}

impl Kernel {
    /// Every kernel measured at each standard shape, in table order.
    const AT_SHAPES: [Kernel; 9] = [
        Kernel::ForwardSoft,
        Kernel::ForwardHard,
        Kernel::ForwardLog,
        Kernel::BackwardFromY,
        Kernel::BackwardRecompute,
        Kernel::ForwardBackward,
        Kernel::Sample,
        Kernel::Sample64,
        Kernel::SampleTop,
    ];

    fn name(self) -> &'static str {
        match self {
            Kernel::Copy => "device copy",
            Kernel::FillWords => "philox fill (words)",
            Kernel::FillGumbel => "gumbel fill",
            Kernel::ForwardSoft => "forward soft",
            Kernel::ForwardHard => "forward hard",
            Kernel::ForwardLog => "forward log",
            Kernel::BackwardFromY => "backward from y",
            Kernel::BackwardRecompute => "backward recompute",
            Kernel::ForwardBackward => "forward+backward recompute",
            Kernel::Sample => "sample (Gumbel-max)",
            Kernel::Sample64 => "sample 64-bit noise",
            Kernel::SampleTop => "sample top-8",
            Kernel::TokensTemperature => "tokens t=0.8",
            Kernel::TokensFiltered => "tokens t=0.8 top-k 50 top-p 0.9",
            Kernel::TokensChain => "tokens full chain",
            Kernel::RoundTrip => "sample round trip (host)",
            Kernel::TokensDecode => "decode t=0.8 top-k 50 top-p 0.9 (split row)",
            Kernel::TokensDecodeOneWorkgroup => {
                "decode t=0.8 top-k 50 top-p 0.9 (one workgroup per row)"
            }
        }
    }

    /// The fewest bytes per element the kernel must move (BENCHMARKS.md): the copy reads and
    /// writes 4; fills write 4; the forward reads the logits and writes y (8); the backward
    /// reads two of y / logits / dy and writes dl (12); forward + backward 20; sampling reads the
    /// logits (4, top-k counted the same).
    fn bytes_per_element(self) -> u64 {
        match self {
            Kernel::Copy => 8,
            Kernel::FillWords | Kernel::FillGumbel => 4,
            Kernel::ForwardSoft | Kernel::ForwardHard | Kernel::ForwardLog => 8,
            Kernel::BackwardFromY | Kernel::BackwardRecompute => 12,
            Kernel::ForwardBackward => 20,
            Kernel::Sample | Kernel::Sample64 | Kernel::SampleTop => 4,
            // One read of the logits, the least any sampler moves; the filters read the row
            // more times (src/tokens.rs counts the passes), served from cache on a GPU.
            Kernel::TokensTemperature | Kernel::TokensFiltered | Kernel::TokensChain => 4,
            Kernel::TokensDecode | Kernel::TokensDecodeOneWorkgroup => 4,
            Kernel::RoundTrip => 0,
        }
    }

    fn family(self) -> Family {
        match self {
            Kernel::Copy => Family::Copy,
            Kernel::FillWords | Kernel::FillGumbel => Family::Fill,
            Kernel::RoundTrip => Family::RoundTrip,
            Kernel::TokensTemperature | Kernel::TokensFiltered | Kernel::TokensChain => {
                Family::Tokens
            }
            Kernel::TokensDecode | Kernel::TokensDecodeOneWorkgroup => Family::Tokens,
            _ => Family::Shape,
        }
    }

    fn mode(self) -> SoftmaxMode {
        match self {
            Kernel::ForwardHard => SoftmaxMode::Hard,
            Kernel::ForwardLog => SoftmaxMode::Log,
            _ => SoftmaxMode::Soft,
        }
    }
}

/// One planned measurement: a kernel at a shape (`rows` x `k`; fills and the copy: 1 x n).
#[derive(Clone, Copy, Debug)]
struct Case {
    kernel: Kernel,
    rows: u64,
    k: u64,
}

impl Case {
    fn shape(&self) -> String {
        match self.kernel {
            Kernel::Copy => format!("{} MiB", (self.k * 4) >> 20),
            Kernel::FillWords | Kernel::FillGumbel => format!("{}", self.k),
            _ => format!("{}x{}", self.rows, self.k),
        }
    }

    fn elements(&self) -> u64 {
        self.rows * self.k
    }
}

/// One measured line of the table.
struct Measurement {
    kernel: &'static str,
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
    /// Measurements planned and done, for the progress lines.
    planned: usize,
    done: usize,
    copy_bytes_per_s: f64,
    results: Vec<Measurement>,
    /// Seconds of one blocking host-to-host sample of a 131072-way row.
    round_trip: Option<f64>,
}

/// The measurements of a run, in order: the copy first (every percentage is taken against it),
/// then the fills, every kernel at every standard shape, token sampling, the host round trip.
fn plan(args: &Args, max_copy_bytes: u64) -> Vec<Case> {
    let copy_bytes = (if args.quick { 64u64 << 20 } else { 1u64 << 30 }).min(max_copy_bytes);
    let fill: u64 = if args.quick { 1 << 24 } else { 1 << 28 };
    let mut cases = vec![Case {
        kernel: Kernel::Copy,
        rows: 1,
        k: copy_bytes / 4,
    }];
    for kernel in [Kernel::FillWords, Kernel::FillGumbel] {
        cases.push(Case {
            kernel,
            rows: 1,
            k: fill,
        });
    }
    for &(rows, k) in SHAPES {
        // --quick keeps k and takes 1/16 of the rows (of 16 or more), so software adapters
        // finish fast.
        let rows = if args.quick && rows >= 16 {
            rows / 16
        } else {
            rows
        };
        for kernel in Kernel::AT_SHAPES {
            cases.push(Case { kernel, rows, k });
        }
    }
    // Token sampling: batch 1, 64 and 256 over vocabularies of 32000 and 131072 (--quick: the
    // 32000 vocabulary, 1/16 of the rows).
    for k in [32_000u64, 131_072] {
        if args.quick && k > 32_000 {
            continue;
        }
        for rows in [1u64, 64, 256] {
            let rows = if args.quick { (rows / 16).max(1) } else { rows };
            for kernel in [
                Kernel::TokensTemperature,
                Kernel::TokensFiltered,
                Kernel::TokensChain,
            ] {
                cases.push(Case { kernel, rows, k });
            }
        }
    }
    // Decode (batch 1, and 2 for the ratio), in --quick runs too: one row is what a local
    // inference engine samples per step.
    for k in [32_000u64, 131_072, 262_144] {
        for rows in [1u64, 2] {
            for kernel in [Kernel::TokensDecode, Kernel::TokensDecodeOneWorkgroup] {
                cases.push(Case { kernel, rows, k });
            }
        }
    }
    cases.push(Case {
        kernel: Kernel::RoundTrip,
        rows: 1,
        k: 131_072,
    });
    let filter = args.filter.as_deref().unwrap_or("");
    cases.retain(|c| c.kernel == Kernel::Copy || c.kernel.name().contains(filter));
    cases
}

impl Bench {
    /// Times `record`, adds a line to the table and reports it on stderr.
    fn measure(
        &mut self,
        case: &Case,
        record: impl FnMut(&mut wgpu::CommandEncoder) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let (mut times, clock) = time_gpu(&self.gpu, self.warmup, self.reps, record)?;
        let m = Measurement {
            kernel: case.kernel.name(),
            shape: case.shape(),
            elements: case.elements(),
            seconds: median(&mut times),
            bytes: case.kernel.bytes_per_element() * case.elements(),
            clock,
        };
        if case.kernel == Kernel::Copy {
            self.copy_bytes_per_s = m.bytes as f64 / m.seconds;
        }
        let pct = if case.kernel == Kernel::Copy {
            format!(
                "{:.1} GB/s, the 100% every line is taken against",
                self.gbps(&m)
            )
        } else {
            format!("{:.1}% copy", self.pct_copy(&m))
        };
        self.progress(&format!(
            "{} {}: {:.1} us, {pct}",
            m.kernel,
            m.shape,
            m.seconds * 1e6
        ));
        self.results.push(m);
        Ok(())
    }

    /// One line on stderr: `[done/planned] what`.
    fn progress(&mut self, what: &str) {
        self.done += 1;
        eprintln!("[{}/{}] {what}", self.done, self.planned);
    }

    fn gbps(&self, m: &Measurement) -> f64 {
        m.bytes as f64 / m.seconds / 1e9
    }

    fn pct_copy(&self, m: &Measurement) -> f64 {
        100.0 * m.bytes as f64 / m.seconds / self.copy_bytes_per_s
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
            "{:<34} {:<14} {:>12} {:>10} {:>8} {:>14}",
            "kernel", "shape", "time (us)", "GB/s", "% copy", "G elements/s"
        );
        for m in &self.results {
            println!(
                "{:<34} {:<14} {:>12.1} {:>10.1} {:>7.1}% {:>14.2}",
                m.kernel,
                m.shape,
                m.seconds * 1e6,
                self.gbps(m),
                self.pct_copy(m),
                m.elements as f64 / m.seconds / 1e9
            );
        }
    }

    fn json(&self, date: &str) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::from("{\n");
        out += &format!("  \"adapter\": \"{}\",\n", esc(&self.gpu.describe()));
        out += &format!("  \"cpu_adapter\": {},\n", is_cpu(&self.gpu));
        out += &format!("  \"date\": \"{date}\",\n");
        out += &format!("  \"quick\": {},\n", self.args.quick);
        out += &format!("  \"warmup\": {},\n", self.warmup);
        out += &format!("  \"reps\": {},\n", self.reps);
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
                    esc(m.kernel),
                    esc(&m.shape),
                    m.elements,
                    m.seconds,
                    m.bytes,
                    self.gbps(m),
                    self.pct_copy(m),
                    m.clock
                )
            })
            .collect();
        out += &lines.join(",\n");
        out += "\n  ]\n}\n";
        out
    }

    fn chart(&self, date: &str) -> chart::Chart {
        chart::Chart {
            title: format!("gumbel-wgpu kernels on {}, {date}", adapter_name(&self.gpu)),
            cpu: is_cpu(&self.gpu),
            copy_gbps: self.copy_bytes_per_s / 1e9,
            clock: match self.results.first().map(|m| m.clock) {
                Some(Clock::WallClock) => {
                    "wall clock around blocking submits (no timestamp queries)"
                }
                _ => "GPU timestamp queries",
            },
            reps: self.reps,
            quick: self.args.quick,
            bars: self
                .results
                .iter()
                .filter(|m| m.kernel != Kernel::Copy.name())
                .map(|m| chart::Bar {
                    kernel: m.kernel.to_string(),
                    shape: if m.shape.contains('x') {
                        m.shape.clone()
                    } else {
                        format!("{} elements", m.shape)
                    },
                    pct_copy: self.pct_copy(m),
                })
                .collect(),
        }
    }
}

/// The adapter's name (no driver details), for the chart's title.
fn adapter_name(gpu: &Gpu) -> String {
    gpu.adapter_info()
        .map(|i| format!("{} ({:?})", i.name, i.backend))
        .unwrap_or_else(|| "an application-provided device".into())
}

/// Whether the adapter is a CPU emulating a GPU (lavapipe / llvmpipe, WARP, SwiftShader).
fn is_cpu(gpu: &Gpu) -> bool {
    gpu.adapter_info().is_some_and(|i| {
        let name = i.name.to_lowercase();
        i.device_type == wgpu::DeviceType::Cpu
            || ["llvmpipe", "lavapipe", "swiftshader", "warp"]
                .iter()
                .any(|s| name.contains(s))
    })
}

/// Creates the folder `path` is to be written in.
fn create_parent(path: &std::path::Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Device-to-device copy bandwidth with the WGSL vec4 copy kernel.
fn measure_copy(b: &mut Bench, case: &Case) -> Result<(), Error> {
    let bytes = case.elements() * 4;
    let src = b.gpu.storage_buffer("copy src", bytes)?;
    let dst = b.gpu.storage_buffer("copy dst", bytes)?;
    let copy = CopyKernel::new(&b.gpu);
    b.measure(case, |enc| copy.record(enc, &src, &dst, bytes))
}

/// Philox words and Gumbel noise written to memory (4 B/element).
fn measure_fills(b: &mut Bench, cases: &[Case]) -> Result<(), Error> {
    let out = b.gpu.storage_buffer("fill", cases[0].elements() * 4)?;
    let fill = b.gpu.random_fill()?;
    for case in cases {
        let job = RandomJob {
            kind: match case.kernel {
                Kernel::FillWords => RandomKind::Words,
                _ => RandomKind::Gumbel,
            },
            stream: Stream::new(1),
            out: out.slice(..),
        };
        b.measure(case, |enc| fill.record(enc, &job))?;
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

impl ShapeBuffers {
    fn new(gpu: &Gpu, rows: u64, k: u64) -> Result<ShapeBuffers, Error> {
        let n = rows * k;
        let fill = gpu.random_fill()?;
        // Logits: Gumbel noise of another stream, a realistic spread of values; dy: uniforms.
        let logits = gpu.storage_buffer("logits", n * 4)?;
        let dy = gpu.storage_buffer("dy", n * 4)?;
        gpu.submit(|enc| {
            fill.record(
                enc,
                &RandomJob {
                    kind: RandomKind::Gumbel,
                    stream: Stream::new(0xbe7c4),
                    out: logits.slice(..),
                },
            )?;
            fill.record(
                enc,
                &RandomJob {
                    kind: RandomKind::Uniform,
                    stream: Stream::new(0xd1),
                    out: dy.slice(..),
                },
            )
        })?;
        Ok(ShapeBuffers {
            rows,
            k,
            indices: gpu.storage_buffer("indices", rows * u64::from(TOP) * 4)?,
            y: gpu.storage_buffer("y", n * 4)?,
            dl: gpu.storage_buffer("dl", n * 4)?,
            logits,
            dy,
        })
    }

    fn logits(&self) -> LogitsView<'_> {
        LogitsView::f32(self.logits.slice(..), self.rows, self.k)
    }

    /// The forward pass in `mode` into `y` (8 B/element: read the logits, write y).
    fn forward(&self, mode: SoftmaxMode) -> SoftmaxJob<'_> {
        SoftmaxJob {
            mode,
            logits: self.logits(),
            tau: Temperature::Scalar(0.5),
            stream: Stream::new(3),
            out: self.y.slice(..),
            status: None,
        }
    }

    /// The backward pass from the stored y (12 B/element: read y and dy, write dl).
    fn backward_from_y(&self) -> BackwardJob<'_> {
        BackwardJob {
            input: BackwardInput::Probs(LogitsView::f32(self.y.slice(..), self.rows, self.k)),
            grad: self.dy.slice(..),
            tau: Temperature::Scalar(0.5),
            out: self.dl.slice(..),
            status: None,
        }
    }

    /// The backward pass recomputing y from the forward's logits and stream (12 B/element:
    /// read the logits and dy, write dl).
    fn backward_recompute(&self) -> BackwardJob<'_> {
        BackwardJob {
            input: BackwardInput::Logits {
                logits: self.logits(),
                stream: Stream::new(3),
                space: GradSpace::Probs,
            },
            ..self.backward_from_y()
        }
    }

    /// Gumbel-top-`top` sampling (4 B/element: read the logits).
    fn sample(&self, top: u32) -> SampleJob<'_> {
        SampleJob {
            logits: self.logits(),
            top,
            tau: Temperature::Scalar(1.0),
            stream: Stream::new(3),
            noise: Noise::Bits32,
            out: self.indices.slice(..self.rows * u64::from(top) * 4),
        }
    }
}

/// Every kernel at one standard shape (the cases of `cases` at that shape).
fn measure_shape(b: &mut Bench, cases: &[Case]) -> Result<(), Error> {
    let s = ShapeBuffers::new(&b.gpu, cases[0].rows, cases[0].k)?;
    let softmax = b.gpu.gumbel_softmax_kernels()?;
    let backward = b.gpu.gumbel_softmax_backward_kernels()?;
    let sampler = b.gpu.sampler()?;
    for case in cases {
        match case.kernel {
            Kernel::ForwardSoft | Kernel::ForwardHard | Kernel::ForwardLog => {
                let job = s.forward(case.kernel.mode());
                b.measure(case, |enc| softmax.record(enc, &job))?
            }
            Kernel::BackwardFromY => {
                let job = s.backward_from_y();
                b.measure(case, |enc| backward.record(enc, &job))?
            }
            Kernel::BackwardRecompute => {
                let job = s.backward_recompute();
                b.measure(case, |enc| backward.record(enc, &job))?
            }
            Kernel::ForwardBackward => {
                let (fwd, bwd) = (s.forward(SoftmaxMode::Soft), s.backward_recompute());
                b.measure(case, |enc| {
                    softmax.record(enc, &fwd)?;
                    backward.record(enc, &bwd)
                })?
            }
            Kernel::Sample => {
                let job = s.sample(1);
                b.measure(case, |enc| sampler.record(enc, &job))?
            }
            Kernel::Sample64 => {
                let job = SampleJob {
                    noise: Noise::Bits64,
                    ..s.sample(1)
                };
                b.measure(case, |enc| sampler.record(enc, &job))?
            }
            Kernel::SampleTop => {
                let job = s.sample(TOP);
                b.measure(case, |enc| sampler.record(enc, &job))?
            }
            other => unreachable!("{other:?} is not measured at the standard shapes"),
        }
    }
    Ok(())
}

/// Token sampling at one batch x vocabulary shape: every request with its own stream, the
/// token and its log-probability written (the top-n off), logits and parameters on the device.
fn measure_tokens(b: &mut Bench, cases: &[Case]) -> Result<(), Error> {
    let (rows, k) = (cases[0].rows, cases[0].k);
    let logits = b.gpu.storage_buffer("logits", rows * k * 4)?;
    // LM-like peaked logits: twice Gumbel noise.
    let noise = b.gpu.gumbel(Stream::new(0x70c), (rows * k) as usize)?;
    let peaked: Vec<f32> = noise.iter().map(|g| 2.0 * g).collect();
    b.gpu
        .queue()
        .write_buffer(&logits, 0, bytemuck::cast_slice(&peaked));
    let tokens = b.gpu.storage_buffer("tokens", rows * 4)?;
    let logprobs = b.gpu.storage_buffer("logprobs", rows * 4)?;
    let ranks = b.gpu.storage_buffer("ranks", rows * 4)?;
    let sampler = b.gpu.token_sampler()?;
    for case in cases {
        let setting = match case.kernel {
            Kernel::TokensFiltered | Kernel::TokensDecode | Kernel::TokensDecodeOneWorkgroup => {
                RowSampling {
                    top_k: 50,
                    top_p: 0.9,
                    ..RowSampling::new(0.8)
                }
            }
            Kernel::TokensChain => RowSampling {
                top_k: 50,
                top_p: 0.9,
                top_n_sigma: 2.0,
                repetition_penalty: 1.1,
                frequency_penalty: 0.2,
                presence_penalty: 0.3,
                ..RowSampling::new(0.8)
            },
            _ => RowSampling::new(0.8),
        };
        // The full chain's device inputs.
        let chain = (case.kernel == Kernel::TokensChain)
            .then(|| ChainInputs::new(b, rows, k))
            .transpose()?;
        let params: Vec<TokenRowParams> = (0..rows)
            .map(|r| TokenRowParams::new(setting, Stream::new(1000 + r)))
            .collect();
        // An engine names the filters its requests use (the split path then records only
        // their passes).
        let filters = TokenFilters::of(&params, k);
        let params = b.gpu.upload("token params", &params)?;
        let job = TokenJob {
            logprobs: Some(logprobs.slice(..)),
            filters,
            // Decode rows force each path (Auto splits them on a GPU, not on a CPU adapter).
            strategy: match case.kernel {
                Kernel::TokensDecodeOneWorkgroup => TokenStrategy::RowPerWorkgroup,
                Kernel::TokensDecode => TokenStrategy::SplitRow { chunks: 0 },
                _ => TokenStrategy::Auto,
            },
            ..TokenJob::new(
                LogitsView::f32(logits.slice(..), rows, k),
                params.slice(..),
                tokens.slice(..),
            )
        };
        if let Some(chain) = &chain {
            let job = TokenJob {
                chain: chain.view(),
                ranks: Some(ranks.slice(..)),
                logprobs_mode: gumbel_wgpu::LogprobsMode::Processed,
                ..job
            };
            b.measure(case, |enc| sampler.record(enc, &job))?;
        } else {
            b.measure(case, |enc| sampler.record(enc, &job))?;
        }
    }
    Ok(())
}

/// The full chain's device inputs for `rows x k` (`Kernel::TokensChain`): a mask allowing about
/// 3 tokens in 4, 16 bias entries per row, and a penalty state from a 256-token prompt and 128
/// generated tokens per row.
struct ChainInputs {
    mask: wgpu::Buffer,
    starts: wgpu::Buffer,
    entries: wgpu::Buffer,
    state: wgpu::Buffer,
}

impl ChainInputs {
    fn new(b: &Bench, rows: u64, k: u64) -> Result<Self, Error> {
        let (rows, k) = (rows as usize, k as usize);
        let n = rows * k.div_ceil(32);
        let words = gumbel_wgpu::cpu::random_u32(Stream::new(0xc4a1), 2 * n);
        let mask: Vec<u32> = (0..n).map(|i| words[2 * i] | words[2 * i + 1]).collect();
        let starts: Vec<u32> = (0..=rows as u32).map(|r| 16 * r).collect();
        let entries: Vec<u32> = (0..rows * 16)
            .flat_map(|i| [(i * 7919 % k) as u32, 1.5f32.to_bits()])
            .collect();
        let mut state = Vec::new();
        for r in 0..rows {
            let prompt: Vec<u32> = (0..256).map(|i| ((r * 31 + i * 13) % k) as u32).collect();
            let output: Vec<u32> = (0..128).map(|i| ((r * 17 + i * 101) % k) as u32).collect();
            state.extend(gumbel_wgpu::tokens::penalty_state(k, &prompt, &output)?);
        }
        Ok(ChainInputs {
            mask: b.gpu.upload("mask", &mask)?,
            starts: b.gpu.upload("bias starts", &starts)?,
            entries: b.gpu.upload("bias entries", &entries)?,
            state: b.gpu.upload("penalty state", &state)?,
        })
    }

    fn view(&self) -> gumbel_wgpu::TokenChain<'_> {
        gumbel_wgpu::TokenChain {
            allowed: Some(self.mask.slice(..)),
            bias: Some(gumbel_wgpu::TokenBias {
                starts: self.starts.slice(..),
                entries: self.entries.slice(..),
            }),
            penalty_state: Some(self.state.slice(..)),
        }
    }
}

/// Host round trip of one 131072-way draw: slice in, index out (wall clock, blocking).
fn measure_round_trip(b: &mut Bench, case: &Case) -> Result<(), Error> {
    let k = case.k as usize;
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
    b.progress(&format!(
        "{} 1x{k}: {:.1} us wall clock (slice in, index out)",
        case.kernel.name(),
        seconds * 1e6
    ));
    b.round_trip = Some(seconds);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let args = Args::parse();
    let started = Instant::now();
    let gpu = Gpu::new()?;
    let (warmup, reps) = if args.quick { (1, 3) } else { (3, 20) };
    let reps = args.reps.map_or(reps, |r| r as usize);
    let limits = gpu.limits();
    let max_copy = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size)
        / 16
        * 16;
    let cases = plan(&args, max_copy);
    eprintln!(
        "benchmarking on {}: {} measurements, {} repetitions each (median) after {} warm-up",
        gpu.describe(),
        cases.len(),
        reps,
        warmup
    );
    let mut b = Bench {
        gpu,
        args,
        warmup,
        reps,
        planned: cases.len(),
        done: 0,
        copy_bytes_per_s: f64::NAN,
        results: Vec::new(),
        round_trip: None,
    };
    // Cases of one family at one shape are consecutive in the plan and share their buffers.
    let mut rest = &cases[..];
    while let Some(first) = rest.first() {
        let group = rest
            .iter()
            .take_while(|c| {
                (c.kernel.family(), c.rows, c.k) == (first.kernel.family(), first.rows, first.k)
            })
            .count();
        let (cases, tail) = rest.split_at(group);
        rest = tail;
        match first.kernel.family() {
            Family::Copy => measure_copy(&mut b, first)?,
            Family::Fill => measure_fills(&mut b, cases)?,
            Family::Shape => measure_shape(&mut b, cases)?,
            Family::Tokens => measure_tokens(&mut b, cases)?,
            Family::RoundTrip => measure_round_trip(&mut b, first)?,
        }
    }
    b.print_table();
    let date = today();
    if let Some(path) = &b.args.json {
        create_parent(path)?;
        std::fs::write(path, b.json(&date))?;
        eprintln!("wrote {}", path.display());
    }
    let svg = b
        .args
        .svg
        .clone()
        .or_else(|| b.args.json.as_ref().map(|j| j.with_extension("svg")));
    if let Some(path) = svg {
        create_parent(&path)?;
        chart::write_svg(&path, &b.chart(&date))?;
        eprintln!("wrote {}", path.display());
    }
    eprintln!("finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
