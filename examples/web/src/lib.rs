//! gumbel-wgpu's playground page: two panels whose every redraw runs the library's kernels on the
//! page's WebGPU device (`index.html` and `page.js` draw what this module returns).
//!
//! * **The simplex** (the paper's figure 1): `rows` Gumbel-Softmax samples of three classes at
//!   the chosen logits and tau ([`SoftmaxMode::Soft`]), and on the *same* noise the hard samples
//!   ([`SoftmaxMode::Hard`], Gumbel-max), whose class frequencies are tested against
//!   `softmax(logits)`.
//! * **The token sampler**: [`DRAWS`] requests over a toy vocabulary of [`VOCAB`] tokens, drawn
//!   by [`TokenSampler`] with temperature, min-p, top-k and top-p; each request has its own
//!   stream, advanced by `VOCAB` words per call; the histogram of the draws is tested against
//!   the processed law ([`token_law`]).
//!
//! The controls of each panel are one table ([`SIMPLEX_CONTROLS`], [`TOKEN_CONTROLS`]): the page
//! builds its sliders from it, so a new control is one entry there (and its field).
mod stats;

use gumbel_wgpu::wgpu;
use gumbel_wgpu::{
    Gpu, GumbelSoftmax, LogitsView, Noise, RowSampling, SoftmaxJob, SoftmaxMode, Stream,
    Temperature, TokenJob, TokenRowParams, TokenSampler, cpu,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use wasm_bindgen::prelude::*;

/// Tokens in the toy vocabulary.
pub const VOCAB: usize = 64;
/// Requests (rows) per token-sampler call: the histogram's draws.
pub const DRAWS: usize = 1000;
/// The seed of the simplex noise; request `r`'s stream has seed `TOKEN_SEED + r`.
const SIMPLEX_SEED: u64 = 0x5eed_0001;
const TOKEN_SEED: u64 = 0x5eed_1000;

// ---------------------------------------------------------------------------------------------
// The controls: one table per panel.

/// How a slider's position maps to a value (the page does the mapping; see `page.js`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    /// Evenly spaced values `step` apart.
    Linear { step: f64 },
    /// Whole numbers.
    Integer,
    /// The left end is 0, the rest log-spaced from `smallest` to `max` (a temperature: 0 is its
    /// limit, and its interesting values span decades).
    LogFromZero { smallest: f64 },
}

/// One slider: its range, its initial value, and the field of the panel's settings it sets.
pub struct Control<S> {
    /// The name `set` takes (and the page's element id).
    pub name: &'static str,
    /// What the page prints beside it.
    pub label: &'static str,
    /// A sentence of what it does (the slider's tooltip).
    pub help: &'static str,
    pub min: f64,
    pub max: f64,
    pub initial: f64,
    pub scale: Scale,
    /// The value that turns the control off (shown as "off").
    pub off: Option<f64>,
    /// Writes the value into the settings (checked against `min..=max` first).
    pub set: fn(&mut S, f64),
}

/// The simplex panel's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimplexSettings {
    pub logits: [f32; 3],
    /// 0 = the hard limit (one-hot samples).
    pub tau: f32,
}

/// The simplex panel's controls: three class logits and tau.
pub const SIMPLEX_CONTROLS: &[Control<SimplexSettings>] = &[
    Control {
        name: "logit0",
        label: "logit of class A",
        help: "the top corner's logit",
        min: -3.0,
        max: 3.0,
        initial: 0.7,
        scale: Scale::Linear { step: 0.05 },
        off: None,
        set: |s, v| s.logits[0] = v as f32,
    },
    Control {
        name: "logit1",
        label: "logit of class B",
        help: "the bottom-left corner's logit",
        min: -3.0,
        max: 3.0,
        initial: 0.2,
        scale: Scale::Linear { step: 0.05 },
        off: None,
        set: |s, v| s.logits[1] = v as f32,
    },
    Control {
        name: "logit2",
        label: "logit of class C",
        help: "the bottom-right corner's logit",
        min: -3.0,
        max: 3.0,
        initial: -0.2,
        scale: Scale::Linear { step: 0.05 },
        off: None,
        set: |s, v| s.logits[2] = v as f32,
    },
    Control {
        name: "tau",
        label: "temperature tau",
        help: "tau -> 0 gives one-hot samples; large tau pulls them to the centre",
        min: 0.0,
        max: 5.0,
        initial: 0.5,
        scale: Scale::LogFromZero { smallest: 0.02 },
        off: None,
        set: |s, v| s.tau = v as f32,
    },
];

/// The token panel's settings: what [`RowSampling`] holds (add a field here and an entry to
/// [`TOKEN_CONTROLS`] for a new control).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenSettings {
    pub temperature: f32,
    pub min_p: f32,
    pub top_k: u32,
    pub top_p: f32,
}

impl TokenSettings {
    /// The library's per-row parameters.
    pub fn row(&self) -> RowSampling {
        RowSampling {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
        }
    }
}

/// The token panel's controls, in vLLM's order of application (temperature, min-p, top-k,
/// top-p).
pub const TOKEN_CONTROLS: &[Control<TokenSettings>] = &[
    Control {
        name: "temperature",
        label: "temperature",
        help: "divides the logits; 0 is greedy (always the most likely token)",
        min: 0.0,
        max: 3.0,
        initial: 1.0,
        scale: Scale::LogFromZero { smallest: 0.05 },
        off: None,
        set: |s, v| s.temperature = v as f32,
    },
    Control {
        name: "min_p",
        label: "min-p",
        help: "keeps the tokens at least min-p times as likely as the most likely one",
        min: 0.0,
        max: 0.95,
        initial: 0.0,
        scale: Scale::Linear { step: 0.01 },
        off: Some(0.0),
        set: |s, v| s.min_p = v as f32,
    },
    Control {
        name: "top_k",
        label: "top-k",
        help: "then keeps the k most likely tokens",
        min: 0.0,
        max: VOCAB as f64,
        initial: 0.0,
        scale: Scale::Integer,
        off: Some(0.0),
        set: |s, v| s.top_k = v as u32,
    },
    Control {
        name: "top_p",
        label: "top-p",
        help: "then keeps the most likely tokens until their mass reaches top-p",
        min: 0.01,
        max: 1.0,
        initial: 1.0,
        scale: Scale::Linear { step: 0.01 },
        off: Some(1.0),
        set: |s, v| s.top_p = v as f32,
    },
];

/// The settings a table's initial values give.
fn initial<S>(table: &[Control<S>], mut settings: S) -> S {
    for c in table {
        (c.set)(&mut settings, c.initial);
    }
    settings
}

fn initial_simplex() -> SimplexSettings {
    initial(
        SIMPLEX_CONTROLS,
        SimplexSettings {
            logits: [0.0; 3],
            tau: 1.0,
        },
    )
}

fn initial_tokens() -> TokenSettings {
    initial(
        TOKEN_CONTROLS,
        TokenSettings {
            temperature: 1.0,
            min_p: 0.0,
            top_k: 0,
            top_p: 1.0,
        },
    )
}

/// Sets control `name` of `table` to `value`; an unknown name or a value outside the control's
/// range is an `Err` naming it.
fn set_control<S>(
    table: &[Control<S>],
    settings: &mut S,
    name: &str,
    value: f64,
) -> Result<(), String> {
    let c = table
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| format!("no control named {name:?}"))?;
    if !(c.min..=c.max).contains(&value) {
        return Err(format!(
            "{name} = {value} is outside [{}, {}]",
            c.min, c.max
        ));
    }
    if c.scale == Scale::Integer && value.fract() != 0.0 {
        return Err(format!("{name} = {value} must be a whole number"));
    }
    (c.set)(settings, value);
    Ok(())
}

/// A table as JSON, for the page to build its sliders from.
fn controls_json<S>(table: &[Control<S>]) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let entries: Vec<String> = table
        .iter()
        .map(|c| {
            let (scale, extra) = match c.scale {
                Scale::Linear { step } => ("linear", format!(",\"step\":{step}")),
                Scale::Integer => ("integer", String::new()),
                Scale::LogFromZero { smallest } => ("log0", format!(",\"smallest\":{smallest}")),
            };
            let off = c.off.map_or("null".to_string(), |v| v.to_string());
            format!(
                "{{\"name\":{},\"label\":{},\"help\":{},\"min\":{},\"max\":{},\"initial\":{},\
                 \"scale\":\"{scale}\"{extra},\"off\":{off}}}",
                q(c.name),
                q(c.label),
                q(c.help),
                c.min,
                c.max,
                c.initial
            )
        })
        .collect();
    format!("[{}]", entries.join(","))
}

// ---------------------------------------------------------------------------------------------
// The toy vocabulary: the next word after the prompt, with Zipf-like logits.

/// The context the vocabulary continues.
pub const PROMPT: &str = "The cat sat on the";

/// The tokens, most likely first.
pub const WORDS: [&str; VOCAB] = [
    "mat",
    "sofa",
    "floor",
    "bed",
    "chair",
    "rug",
    "windowsill",
    "table",
    "couch",
    "carpet",
    "roof",
    "keyboard",
    "lap",
    "pillow",
    "fence",
    "stairs",
    "porch",
    "blanket",
    "grass",
    "desk",
    "shelf",
    "wall",
    "bench",
    "step",
    "box",
    "laptop",
    "newspaper",
    "towel",
    "car",
    "doormat",
    "cushion",
    "radiator",
    "counter",
    "piano",
    "ledge",
    "tree",
    "hat",
    "dog",
    "sink",
    "bookcase",
    "printer",
    "stove",
    "branch",
    "bag",
    "basket",
    "sunbeam",
    "balcony",
    "suitcase",
    "pizza",
    "fridge",
    "moon",
    "throne",
    "cake",
    "remote",
    "homework",
    "spreadsheet",
    "equation",
    "violin",
    "iceberg",
    "volcano",
    "telescope",
    "submarine",
    "cactus",
    "quantum",
];

/// The logits: Zipf's law with exponent 1.1, `l_i = -1.1 ln(i + 1)` (probability proportional to
/// `(i + 1)^-1.1`), so a few tokens hold most of the mass and a long tail holds the rest.
pub fn vocabulary_logits() -> Vec<f32> {
    (0..VOCAB).map(|i| -1.1 * ((i + 1) as f32).ln()).collect()
}

/// The processed law the token panel shows and tests the draws against: the probability of
/// each token after temperature, min-p, top-k and top-p.
///
/// The one place the page gets it from: the library's f64 reference today; the GPU's
/// `token_probabilities` (and the penalty, bias and mask controls) when they land.
async fn token_law(logits: &[f32], settings: &TokenSettings) -> Result<Vec<f64>, String> {
    Ok(cpu::token_probabilities(logits, &settings.row()))
}

// ---------------------------------------------------------------------------------------------
// The page's device and kernels.

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(s: &str);
}

/// Runs when the module loads: a panic prints its message on the console (a wasm panic is
/// otherwise only "unreachable").
#[wasm_bindgen(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error(&format!("gumbel-wgpu page: {info}"))
    }));
}

/// `bytes` rounded up to WebGPU's storage-binding offset alignment (256). Two outputs of one job
/// share a buffer only from such an offset: the kernels bind from the aligned offset at or below
/// a slice's start, and WebGPU rejects two writable bindings of one buffer that overlap.
fn binding_aligned(bytes: u64) -> u64 {
    bytes.next_multiple_of(256)
}

fn js_err(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

struct Inner {
    gpu: Gpu,
    softmax: Arc<GumbelSoftmax>,
    sampler: Arc<TokenSampler>,
    simplex: RefCell<SimplexSettings>,
    /// Which noise the simplex uses: "new noise" advances it.
    simplex_noise: Cell<u64>,
    tokens: RefCell<TokenSettings>,
    /// Calls so far: each request's stream offset is `step * VOCAB`.
    token_step: Cell<u64>,
    /// A draw is running. Draws must not overlap: `Gpu::submit_async` pushes WebGPU error scopes
    /// and pops them across `.await`s, and two interleaved calls would pop each other's scopes
    /// (wgpu panics), so a second draw is refused and the page queues its draws.
    drawing: Cell<bool>,
    logits: Vec<f32>,
    /// `DRAWS` copies of the logits, one row per request.
    token_logits: wgpu::Buffer,
}

/// The page's handle: the device, its kernels, and the two panels' settings.
#[wasm_bindgen]
pub struct Playground {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl Playground {
    /// Opens the page's WebGPU device and builds both kernels (compiled once here).
    pub async fn open() -> Result<Playground, JsValue> {
        let gpu = Gpu::new_async().await.map_err(js_err)?;
        let softmax = gpu.gumbel_softmax_kernels().map_err(js_err)?;
        let sampler = gpu.token_sampler().map_err(js_err)?;
        let logits = vocabulary_logits();
        let rows: Vec<f32> = logits.iter().copied().cycle().take(DRAWS * VOCAB).collect();
        let token_logits = gpu.upload("token logits", &rows).map_err(js_err)?;
        Ok(Playground {
            inner: Rc::new(Inner {
                gpu,
                softmax,
                sampler,
                simplex: RefCell::new(initial_simplex()),
                simplex_noise: Cell::new(0),
                tokens: RefCell::new(initial_tokens()),
                token_step: Cell::new(0),
                drawing: Cell::new(false),
                logits,
                token_logits,
            }),
        })
    }

    /// The adapter in a few words: its name where the browser gives one, else its kind.
    pub fn device(&self) -> String {
        let Some(info) = self.inner.gpu.adapter_info() else {
            return "WebGPU".into();
        };
        if !info.name.is_empty() {
            return info.name.clone();
        }
        match info.device_type {
            wgpu::DeviceType::Cpu => "a CPU: software WebGPU, slow",
            wgpu::DeviceType::IntegratedGpu => "an integrated GPU",
            wgpu::DeviceType::DiscreteGpu => "a discrete GPU",
            wgpu::DeviceType::VirtualGpu => "a virtual GPU",
            wgpu::DeviceType::Other => "WebGPU",
        }
        .into()
    }

    /// The adapter and the kernels' configuration (`Gpu::describe`).
    pub fn device_details(&self) -> String {
        self.inner.gpu.describe()
    }

    /// The simplex panel's controls as JSON.
    pub fn simplex_controls() -> String {
        controls_json(SIMPLEX_CONTROLS)
    }

    /// The token panel's controls as JSON.
    pub fn token_controls() -> String {
        controls_json(TOKEN_CONTROLS)
    }

    /// The vocabulary's words, most likely first.
    pub fn words() -> Vec<String> {
        WORDS.iter().map(|w| w.to_string()).collect()
    }

    /// The prompt the vocabulary continues.
    pub fn prompt() -> String {
        PROMPT.into()
    }

    /// Sets a simplex control (`Err` for an unknown name or a value out of range).
    pub fn set_simplex(&self, name: &str, value: f64) -> Result<(), JsValue> {
        set_control(
            SIMPLEX_CONTROLS,
            &mut self.inner.simplex.borrow_mut(),
            name,
            value,
        )
        .map_err(js_err)
    }

    /// Sets a token-sampler control.
    pub fn set_token(&self, name: &str, value: f64) -> Result<(), JsValue> {
        set_control(
            TOKEN_CONTROLS,
            &mut self.inner.tokens.borrow_mut(),
            name,
            value,
        )
        .map_err(js_err)
    }

    /// Moves the simplex to fresh noise (its stream's next `3 * rows` words per step).
    pub fn new_simplex_noise(&self) {
        let n = &self.inner.simplex_noise;
        n.set(n.get() + 1);
    }

    /// Draws `rows` simplex samples at the current settings: a promise of a [`SimplexDraw`].
    /// Rejected while another draw runs (await it first).
    pub fn draw_simplex(&self, rows: u32) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let _drawing = Drawing::start(&inner)?;
            draw_simplex(&inner, rows as usize).await.map(JsValue::from)
        })
    }

    /// Draws one token for each of the [`DRAWS`] requests at the current settings: a promise of
    /// a [`TokenDraw`]. Rejected while another draw runs.
    pub fn draw_tokens(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let _drawing = Drawing::start(&inner)?;
            draw_tokens(&inner).await.map(JsValue::from)
        })
    }
}

/// Marks a draw as running until dropped (see `Inner::drawing`).
struct Drawing<'a>(&'a Cell<bool>);

impl<'a> Drawing<'a> {
    fn start(inner: &'a Inner) -> Result<Self, JsValue> {
        if inner.drawing.replace(true) {
            return Err(js_err(
                "another draw is running: draws must not overlap (await the previous one)",
            ));
        }
        Ok(Drawing(&inner.drawing))
    }
}

impl Drop for Drawing<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// One redraw of the simplex panel.
#[wasm_bindgen(getter_with_clone)]
pub struct SimplexDraw {
    /// The settings drawn at.
    pub logits: Vec<f32>,
    pub tau: f32,
    /// Which noise (see [`Playground::new_simplex_noise`]).
    pub noise: u32,
    /// `rows x 3` soft samples (one-hot at tau = 0).
    pub samples: Vec<f32>,
    /// How many hard samples (Gumbel-max on the same noise) fell in each class.
    pub hard_counts: Vec<u32>,
    /// `softmax(logits)`, the law the hard samples follow.
    pub softmax: Vec<f64>,
    /// Pearson's chi-square of the hard counts against `softmax`.
    pub chi_square: f64,
    pub dof: u32,
    pub p_value: f64,
    /// Rows whose soft sample's largest class is not the hard sample's class (0: the hard
    /// sample is the soft one's argmax, as the same noise makes it).
    pub argmax_mismatches: u32,
    /// The mean of each soft sample's largest coordinate: 1 when all are one-hot, 1/3 at the
    /// centre.
    pub mean_max: f64,
    /// Milliseconds from upload to read-back.
    pub ms: f64,
}

async fn draw_simplex(inner: &Inner, rows: usize) -> Result<SimplexDraw, JsValue> {
    if rows == 0 {
        return Err(js_err("rows: at least 1 sample is needed"));
    }
    let s = *inner.simplex.borrow();
    let noise = inner.simplex_noise.get();
    let gpu = &inner.gpu;
    let t0 = performance_now();
    let logits: Vec<f32> = s.logits.iter().copied().cycle().take(3 * rows).collect();
    let input = gpu.upload("simplex logits", &logits).map_err(js_err)?;
    let n = (3 * rows) as u64;
    // Soft samples first, hard ones from `split`: one buffer, one read-back.
    let split = binding_aligned(4 * n);
    let out = gpu
        .storage_buffer("simplex samples", split + 4 * n)
        .map_err(js_err)?;
    let stream = Stream {
        seed: SIMPLEX_SEED,
        offset: noise * n,
    };
    let job = |mode, out| SoftmaxJob {
        mode,
        logits: LogitsView::f32(input.slice(..), rows as u64, 3),
        // tau = 0 is the hard limit; Hard ignores tau.
        tau: Temperature::Scalar(if s.tau > 0.0 { s.tau } else { 1.0 }),
        stream,
        out,
        status: None,
    };
    let soft_mode = if s.tau > 0.0 {
        SoftmaxMode::Soft
    } else {
        SoftmaxMode::Hard
    };
    gpu.submit_async(|enc| {
        inner
            .softmax
            .record(enc, &job(soft_mode, out.slice(..4 * n)))?;
        inner
            .softmax
            .record(enc, &job(SoftmaxMode::Hard, out.slice(split..)))
    })
    .await
    .map_err(js_err)?;
    let mut y: Vec<f32> = gpu
        .read_buffer_async(&out, (split / 4 + n) as usize)
        .await
        .map_err(js_err)?;
    let ms = performance_now() - t0;
    let hard = y.split_off((split / 4) as usize);
    y.truncate(n as usize);
    let argmax =
        |row: &[f32]| (0..row.len()).fold(0, |best, j| if row[j] > row[best] { j } else { best });
    let hard_class: Vec<u32> = hard.chunks(3).map(|r| argmax(r) as u32).collect();
    let argmax_mismatches = y
        .chunks(3)
        .zip(&hard_class)
        .filter(|(r, h)| argmax(r) as u32 != **h)
        .count() as u32;
    let hard_counts = stats::histogram(hard_class.iter().copied(), 3);
    let law = stats::softmax(&s.logits.map(f64::from));
    let test = stats::chi_square(&hard_counts, &law);
    let mean_max = y
        .chunks(3)
        .map(|r| f64::from(r.iter().copied().fold(0.0, f32::max)))
        .sum::<f64>()
        / rows as f64;
    Ok(SimplexDraw {
        logits: s.logits.to_vec(),
        tau: s.tau,
        noise: noise as u32,
        samples: y,
        hard_counts,
        softmax: law,
        chi_square: test.statistic,
        dof: test.dof as u32,
        p_value: test.p_value,
        argmax_mismatches,
        mean_max,
        ms,
    })
}

/// One call of the token sampler over the [`DRAWS`] requests.
#[wasm_bindgen(getter_with_clone)]
pub struct TokenDraw {
    /// The settings drawn at.
    pub temperature: f32,
    pub min_p: f32,
    pub top_k: u32,
    pub top_p: f32,
    /// The call's index: request `r` drew from stream `(TOKEN_SEED + r, step * VOCAB)`.
    pub step: u32,
    /// The processed law ([`token_law`]).
    pub law: Vec<f64>,
    /// Tokens the law keeps (positive probability).
    pub kept: u32,
    /// Each request's token.
    pub tokens: Vec<u32>,
    /// Each request's `log_softmax(logits)[token]`, from the kernel.
    pub logprobs: Vec<f32>,
    /// The largest difference between those and the f64 `log_softmax` of the same tokens.
    pub logprob_error: f64,
    /// The histogram of `tokens`.
    pub counts: Vec<u32>,
    /// Pearson's chi-square of `counts` against `law` (bins of expected count below 5 pooled).
    pub chi_square: f64,
    pub dof: u32,
    pub p_value: f64,
    pub bins: u32,
    /// Draws of tokens the law gives probability 0 (must be 0).
    pub impossible: u32,
    /// Milliseconds of the call: upload of the row parameters, the kernel, read-back.
    pub ms: f64,
}

async fn draw_tokens(inner: &Inner) -> Result<TokenDraw, JsValue> {
    let s = *inner.tokens.borrow();
    let law = token_law(&inner.logits, &s).await.map_err(js_err)?;
    let step = inner.token_step.get();
    inner.token_step.set(step + 1);
    let params: Vec<TokenRowParams> = (0..DRAWS as u64)
        .map(|r| {
            TokenRowParams::new(
                s.row(),
                Stream {
                    seed: TOKEN_SEED + r,
                    offset: step * VOCAB as u64,
                },
            )
        })
        .collect();
    let gpu = &inner.gpu;
    let t0 = performance_now();
    let row_params = gpu.upload("row params", &params).map_err(js_err)?;
    // Tokens first, log-probabilities from `split`: one buffer, one read-back.
    let d = DRAWS as u64;
    let split = binding_aligned(4 * d);
    let out = gpu
        .storage_buffer("tokens", split + 4 * d)
        .map_err(js_err)?;
    gpu.submit_async(|enc| {
        inner.sampler.record(
            enc,
            &TokenJob {
                logits: LogitsView::f32(inner.token_logits.slice(..), d, VOCAB as u64),
                row_params: row_params.slice(..),
                out: out.slice(..4 * d),
                logprobs: Some(out.slice(split..)),
                top_n: 0,
                top: None,
                status: None,
                noise: Noise::Bits32,
            },
        )
    })
    .await
    .map_err(js_err)?;
    let words: Vec<u32> = gpu
        .read_buffer_async(&out, split as usize / 4 + DRAWS)
        .await
        .map_err(js_err)?;
    let ms = performance_now() - t0;
    let tokens = words[..DRAWS].to_vec();
    let logprobs: Vec<f32> = words[split as usize / 4..]
        .iter()
        .map(|&w| f32::from_bits(w))
        .collect();
    let reference = cpu::log_softmax_f64(&inner.logits);
    let logprob_error = tokens
        .iter()
        .zip(&logprobs)
        .map(|(&t, &lp)| match reference.get(t as usize) {
            Some(&r) => (f64::from(lp) - r).abs(),
            None => f64::INFINITY,
        })
        .fold(0.0, f64::max);
    let counts = stats::histogram(tokens.iter().copied(), VOCAB);
    let out_of_range = tokens.iter().filter(|&&t| t as usize >= VOCAB).count() as u32;
    let test = stats::chi_square(&counts, &law);
    Ok(TokenDraw {
        temperature: s.temperature,
        min_p: s.min_p,
        top_k: s.top_k,
        top_p: s.top_p,
        step: step as u32,
        kept: law.iter().filter(|&&p| p > 0.0).count() as u32,
        law,
        tokens,
        logprobs,
        logprob_error,
        counts,
        chi_square: test.statistic,
        dof: test.dof as u32,
        p_value: test.p_value,
        bins: test.bins as u32,
        impossible: test.impossible as u32 + out_of_range,
        ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_starts_in_its_range_and_sets_its_field() {
        fn check<S: Clone + PartialEq + std::fmt::Debug>(table: &[Control<S>], start: S) {
            let mut names = std::collections::HashSet::new();
            for c in table {
                assert!(names.insert(c.name), "{} twice", c.name);
                assert!(c.min <= c.initial && c.initial <= c.max, "{}", c.name);
                // Each control moves its own field: setting min then max changes the settings.
                let mut a = start.clone();
                set_control(table, &mut a, c.name, c.min).unwrap();
                let mut b = a.clone();
                set_control(table, &mut b, c.name, c.max).unwrap();
                assert_ne!(a, b, "{} sets nothing", c.name);
                assert!(set_control(table, &mut b, c.name, c.max + 1.0).is_err());
                assert!(set_control(table, &mut b, c.name, f64::NAN).is_err());
            }
            let mut s = start.clone();
            let e = set_control(table, &mut s, "nonsense", 0.0).unwrap_err();
            assert!(e.contains("nonsense"), "{e}");
        }
        check(SIMPLEX_CONTROLS, initial_simplex());
        check(TOKEN_CONTROLS, initial_tokens());
        let mut t = initial_tokens();
        assert!(set_control(TOKEN_CONTROLS, &mut t, "top_k", 2.5).is_err());
        assert_eq!(initial_tokens().row(), RowSampling::new(1.0));
    }

    #[test]
    fn controls_json_names_every_control() {
        let json = controls_json(TOKEN_CONTROLS);
        assert!(json.starts_with("[{") && json.ends_with("}]"));
        for c in TOKEN_CONTROLS {
            assert!(json.contains(&format!("\"name\":\"{}\"", c.name)));
        }
        assert!(json.contains("\"scale\":\"log0\",\"smallest\":0.05"));
        assert!(json.contains("\"off\":null") && json.contains("\"off\":1"));
    }

    #[test]
    fn vocabulary_is_distinct_and_zipf_like() {
        let set: std::collections::HashSet<_> = WORDS.iter().collect();
        assert_eq!(set.len(), VOCAB);
        let l = vocabulary_logits();
        assert!(l.windows(2).all(|w| w[0] > w[1]), "decreasing, no ties");
        let law = stats::softmax(&l.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
        // Zipf: p_0 / p_1 = 2^1.1.
        assert!((law[0] / law[1] - 2f64.powf(1.1)).abs() < 1e-5);
    }

    #[test]
    fn token_law_applies_the_filters() {
        let l = vocabulary_logits();
        let mut s = initial_tokens();
        let law = pollster_free_block_on(token_law(&l, &s)).unwrap();
        assert!(law.iter().all(|&p| p > 0.0));
        s.top_k = 5;
        let law = pollster_free_block_on(token_law(&l, &s)).unwrap();
        assert_eq!(law.iter().filter(|&&p| p > 0.0).count(), 5);
        assert!((law.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    /// Runs a future that never waits (the CPU law) to completion.
    fn pollster_free_block_on<F: std::future::Future>(f: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the CPU law does not wait"),
        }
    }
}
