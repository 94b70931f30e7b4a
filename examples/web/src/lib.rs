//! The simplex picture in the browser: 3-category Gumbel-Softmax samples at tau = 0 (hard), 1/2,
//! 1 and 2, made by the library's forward kernel on WebGPU and drawn into four panels. `index.html`
//! calls [`simplex`] and puts the pixels on a canvas.
use gumbel_wgpu::{Gpu, LogitsView, SoftmaxJob, SoftmaxMode, Stream, Temperature};
use wasm_bindgen::prelude::*;

/// Side of one square panel in pixels.
pub const PANEL: usize = 320;
const MARGIN: f64 = 24.0;
/// Temperatures of the panels; 0 stands for the tau -> 0 limit, the hard (one-hot) sample.
const TAUS: [f32; 4] = [0.0, 0.5, 1.0, 2.0];

/// Draws `samples` samples per panel; resolves to RGBA pixels, `4 * PANEL` wide and `PANEL`
/// high, and logs the adapter.
#[wasm_bindgen]
pub async fn simplex(samples: u32) -> Result<Vec<u8>, JsError> {
    let gpu = Gpu::new_async().await?;
    web_log(&format!("gumbel-wgpu on {}", gpu.describe()));
    let kernels = gpu.gumbel_softmax_kernels()?;
    let rows = samples as usize;
    // Class probabilities (0.5, 0.3, 0.2) as logits, one row per sample.
    let logits: Vec<f32> = [0.5f32, 0.3, 0.2]
        .iter()
        .map(|p| p.ln())
        .cycle()
        .take(3 * rows)
        .collect();
    let input = gpu.upload("logits", &logits)?;
    let out = gpu.storage_buffer("samples", 4 * 3 * rows as u64)?;
    let width = TAUS.len() * PANEL;
    let mut image = vec![255u8; 4 * width * PANEL];
    for (p, &tau) in TAUS.iter().enumerate() {
        gpu.submit_async(|enc| {
            kernels.record(
                enc,
                &SoftmaxJob {
                    mode: if tau == 0.0 {
                        SoftmaxMode::Hard
                    } else {
                        SoftmaxMode::Soft
                    },
                    logits: LogitsView::f32(input.slice(..), rows as u64, 3),
                    tau: Temperature::Scalar(if tau == 0.0 { 1.0 } else { tau }),
                    stream: Stream::new(1000 + p as u64),
                    out: out.slice(..),
                    status: None,
                },
            )
        })
        .await?;
        let y: Vec<f32> = gpu.read_buffer_async(&out, 3 * rows).await?;
        draw_panel(&mut image, width, p * PANEL, &y);
    }
    Ok(image)
}

fn web_log(s: &str) {
    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = console)]
        fn log(s: &str);
    }
    log(s);
}

/// Corner positions of categories 0, 1, 2 inside a panel.
fn corners() -> [(f64, f64); 3] {
    let side = PANEL as f64 - 2.0 * MARGIN;
    let h = side * 3f64.sqrt() / 2.0;
    let top = (PANEL as f64 - h) / 2.0;
    [
        (PANEL as f64 / 2.0, top),
        (MARGIN, top + h),
        (MARGIN + side, top + h),
    ]
}

/// A log-scaled density of the samples (blue), the triangle's edges (black).
fn draw_panel(image: &mut [u8], width: usize, x0: usize, y: &[f32]) {
    let c = corners();
    let mut counts = vec![0u32; PANEL * PANEL];
    for row in y.chunks(3) {
        let (a, b, d) = (f64::from(row[0]), f64::from(row[1]), f64::from(row[2]));
        let s = a + b + d;
        let x = (a * c[0].0 + b * c[1].0 + d * c[2].0) / s;
        let v = (a * c[0].1 + b * c[1].1 + d * c[2].1) / s;
        // One-hot samples land exactly on a corner: a small disc keeps them visible.
        for dy in -2i64..=2 {
            for dx in -2i64..=2 {
                let (px, py) = (x.round() as i64 + dx, v.round() as i64 + dy);
                if dx * dx + dy * dy <= 4
                    && (0..PANEL as i64).contains(&px)
                    && (0..PANEL as i64).contains(&py)
                {
                    counts[py as usize * PANEL + px as usize] += 1;
                }
            }
        }
    }
    let max = f64::from(counts.iter().copied().max().unwrap_or(1).max(1));
    let mut put = |px: usize, py: usize, rgb: [u8; 3]| {
        let i = 4 * (py * width + x0 + px);
        image[i..i + 3].copy_from_slice(&rgb);
    };
    for py in 0..PANEL {
        for px in 0..PANEL {
            let n = counts[py * PANEL + px];
            if n > 0 {
                let t = (1.0 + f64::from(n)).ln() / (1.0 + max).ln();
                let shade = |lo: f64, hi: f64| (hi + (lo - hi) * t) as u8;
                put(
                    px,
                    py,
                    [shade(8.0, 200.0), shade(48.0, 220.0), shade(130.0, 250.0)],
                );
            }
        }
    }
    for i in 0..3 {
        let (a, b) = (c[i], c[(i + 1) % 3]);
        for s in 0..=1000 {
            let t = f64::from(s) / 1000.0;
            put(
                (a.0 + (b.0 - a.0) * t).round() as usize,
                (a.1 + (b.1 - a.1) * t).round() as usize,
                [0, 0, 0],
            );
        }
    }
    // The mass at each one-hot corner (within 0.05): a red disc whose area grows with it.
    let rows = (y.len() / 3).max(1) as f64;
    for (k, &(cx, cy)) in c.iter().enumerate() {
        let r = 20.0 * (y.chunks(3).filter(|row| row[k] > 0.95).count() as f64 / rows).sqrt();
        let ri = r.ceil() as i64;
        for dy in -ri..=ri {
            for dx in -ri..=ri {
                let (px, py) = (cx.round() as i64 + dx, cy.round() as i64 + dy);
                if ((dx * dx + dy * dy) as f64) <= r * r
                    && (0..PANEL as i64).contains(&px)
                    && (0..PANEL as i64).contains(&py)
                {
                    put(px as usize, py as usize, [200, 30, 30]);
                }
            }
        }
    }
}
