//! The picture from the paper: many 3-category Gumbel-Softmax samples per temperature, drawn on
//! the 2-simplex. Small tau piles the samples into the one-hot corners; large tau spreads them
//! towards the centre. Writes a PNG, one panel per temperature.
//!
//!     cargo run --release --example simplex -- [OUT.png] [--samples N]

use gumbel_wgpu::{Gpu, Stream};

const PANEL: usize = 320;
const MARGIN: usize = 24;

/// Temperatures of the panels; 0 stands for the tau -> 0 limit, the hard (one-hot) sample.
const TAUS: [f32; 4] = [0.0, 0.5, 1.0, 2.0];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut path = "simplex.png".to_string();
    let mut samples = 200_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--samples" => samples = args.next().ok_or("--samples needs a number")?.parse()?,
            _ => path = a,
        }
    }
    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.describe());
    // Class probabilities (0.5, 0.3, 0.2), as logits, repeated for every sample row.
    let logits: Vec<f32> = [0.5f32, 0.3, 0.2]
        .iter()
        .map(|p| p.ln())
        .cycle()
        .take(3 * samples)
        .collect();
    let width = TAUS.len() * PANEL;
    let height = PANEL;
    let mut image = vec![[255u8; 3]; width * height];
    for (p, &tau) in TAUS.iter().enumerate() {
        let stream = Stream::new(1000 + p as u64);
        let y = if tau == 0.0 {
            gpu.gumbel_softmax_hard(&logits, 3, 1.0, stream)?
        } else {
            gpu.gumbel_softmax(&logits, 3, tau, stream)?
        };
        let counts = histogram(&y);
        draw_panel(&mut image, width, p * PANEL, &counts);
        // Mass at each one-hot corner (within 0.05): a dot whose area grows with it.
        for (c, &(cx, cy)) in corners().iter().enumerate() {
            let frac = y.chunks(3).filter(|r| r[c] > 0.95).count() as f64 / samples as f64;
            disc(
                &mut image,
                width,
                p * PANEL + cx.round() as usize,
                cy.round() as usize,
                20.0 * frac.sqrt(),
            );
        }
        let near_corner =
            y.chunks(3).filter(|r| r.iter().any(|&v| v > 0.95)).count() as f64 / samples as f64;
        let centroid: Vec<f64> = (0..3)
            .map(|j| y.chunks(3).map(|r| f64::from(r[j])).sum::<f64>() / samples as f64)
            .collect();
        println!(
            "tau = {}: {:5.1}% of samples within 0.05 of a corner; mean sample ({:.3}, {:.3}, {:.3})",
            if tau == 0.0 {
                "0 (hard)".to_string()
            } else {
                tau.to_string()
            },
            100.0 * near_corner,
            centroid[0],
            centroid[1],
            centroid[2]
        );
        let label = if tau == 0.0 {
            "T=0".to_string()
        } else {
            format!("T={tau}")
        };
        draw_text(&mut image, width, p * PANEL + 8, 8, &label);
    }
    write_png(&path, width, height, &image)?;
    println!("wrote {path} ({width}x{height}, {samples} samples per panel)");
    Ok(())
}

/// Corner positions of categories 0, 1, 2 inside a panel.
fn corners() -> [(f64, f64); 3] {
    let side = (PANEL - 2 * MARGIN) as f64;
    let h = side * 3f64.sqrt() / 2.0;
    let top = (PANEL as f64 - h) / 2.0;
    [
        (PANEL as f64 / 2.0, top),
        (MARGIN as f64, top + h),
        (MARGIN as f64 + side, top + h),
    ]
}

fn to_xy(y: &[f32]) -> (f64, f64) {
    let c = corners();
    let (a, b, d) = (f64::from(y[0]), f64::from(y[1]), f64::from(y[2]));
    let s = a + b + d;
    (
        (a * c[0].0 + b * c[1].0 + d * c[2].0) / s,
        (a * c[0].1 + b * c[1].1 + d * c[2].1) / s,
    )
}

fn histogram(y: &[f32]) -> Vec<u32> {
    let mut counts = vec![0u32; PANEL * PANEL];
    for row in y.chunks(3) {
        let (x, v) = to_xy(row);
        let (xi, yi) = (x.round() as usize, v.round() as usize);
        // One-hot samples land exactly on a corner: spread them over a small disc to stay visible.
        for dy in -2i64..=2 {
            for dx in -2i64..=2 {
                let (px, py) = (xi as i64 + dx, yi as i64 + dy);
                if (0..PANEL as i64).contains(&px)
                    && (0..PANEL as i64).contains(&py)
                    && dx * dx + dy * dy <= 4
                {
                    counts[py as usize * PANEL + px as usize] += 1;
                }
            }
        }
    }
    counts
}

fn draw_panel(image: &mut [[u8; 3]], width: usize, x0: usize, counts: &[u32]) {
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    for py in 0..PANEL {
        for px in 0..PANEL {
            let c = counts[py * PANEL + px];
            if c > 0 {
                // Log scale: dark blue for dense, light blue for sparse.
                let t = (1.0 + f64::from(c)).ln() / (1.0 + max).ln();
                let shade = |lo: f64, hi: f64| (hi + (lo - hi) * t) as u8;
                image[py * width + x0 + px] =
                    [shade(8.0, 200.0), shade(48.0, 220.0), shade(130.0, 250.0)];
            }
        }
    }
    let c = corners();
    for i in 0..3 {
        let (a, b) = (c[i], c[(i + 1) % 3]);
        for s in 0..=1000 {
            let t = f64::from(s) / 1000.0;
            let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
            image[y.round() as usize * width + x0 + x.round() as usize] = [0, 0, 0];
        }
    }
}

fn disc(image: &mut [[u8; 3]], width: usize, x: usize, y: usize, r: f64) {
    let ri = r.ceil() as i64;
    for dy in -ri..=ri {
        for dx in -ri..=ri {
            if ((dx * dx + dy * dy) as f64) <= r * r {
                let (px, py) = (x as i64 + dx, y as i64 + dy);
                if px >= 0 && py >= 0 && (py as usize) < PANEL && (px as usize) < width {
                    image[py as usize * width + px as usize] = [200, 30, 30];
                }
            }
        }
    }
}

/// A 3x5 bitmap font for the panel labels.
fn glyph(ch: char) -> [u8; 5] {
    match ch {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '5' => [7, 4, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '=' => [0, 7, 0, 7, 0],
        'T' => [7, 2, 2, 2, 2],
        _ => [0; 5],
    }
}

fn draw_text(image: &mut [[u8; 3]], width: usize, x0: usize, y0: usize, text: &str) {
    const SCALE: usize = 3;
    for (i, ch) in text.chars().enumerate() {
        for (row, bits) in glyph(ch).iter().enumerate() {
            for col in 0..3 {
                if bits >> (2 - col) & 1 == 1 {
                    for sy in 0..SCALE {
                        for sx in 0..SCALE {
                            let x = x0 + (i * 4 + col) * SCALE + sx;
                            let y = y0 + row * SCALE + sy;
                            image[y * width + x] = [0, 0, 0];
                        }
                    }
                }
            }
        }
    }
}

/// A minimal PNG writer: 8-bit RGB, zlib with stored (uncompressed) blocks.
fn write_png(path: &str, width: usize, height: usize, pixels: &[[u8; 3]]) -> std::io::Result<()> {
    let mut raw = Vec::with_capacity(height * (1 + 3 * width));
    for row in pixels.chunks(width) {
        raw.push(0); // filter: none
        for p in row {
            raw.extend_from_slice(p);
        }
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &z), (b"IEND", &Vec::new())] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    std::fs::write(path, png)
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
