//! gumbel-wgpu's playground page: two panels whose every redraw runs the library's kernels on the
//! page's WebGPU device (`index.html` and `page.js` draw what this module returns).
//!
//! * **The simplex** (the paper's figure 1): `rows` Gumbel-Softmax samples of three classes at
//!   the chosen logits and tau ([`SoftmaxMode::Soft`]), and on the *same* noise the hard samples
//!   ([`SoftmaxMode::Hard`], Gumbel-max), whose class frequencies are tested against
//!   `softmax(logits)`.
//! * **The token sampler**: [`DRAWS`] requests over a toy vocabulary of [`VOCAB`] tokens, drawn
//!   by [`TokenSampler`] through the processing chain (a mask, a logit bias, repetition and
//!   presence penalties against a fixed history, [`HISTORY`]) and the filters (temperature,
//!   top-nσ, min-p, top-k, top-p); each request has its own stream, advanced by `VOCAB` words
//!   per call; the histogram of the draws is tested against the processed law the GPU writes
//!   ([`token_law`]), itself checked against the library's f64 reference.
//!
//! The controls of each panel are one table ([`SIMPLEX_CONTROLS`], [`TOKEN_CONTROLS`]): the page
//! builds its sliders from it, so a new control is one entry there (and its field).
mod stats;

use gumbel_wgpu::wgpu;
use gumbel_wgpu::{
    Gpu, GumbelSoftmax, LogitsView, RowSampling, SoftmaxJob, SoftmaxMode, Stream, Temperature,
    TokenBias, TokenChain, TokenJob, TokenRowParams, TokenSampler, TokenSampling, cpu,
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

/// The token panel's settings: what [`RowSampling`] holds, plus the chain's mask and bias (add
/// a field here and an entry to [`TOKEN_CONTROLS`] for a new control).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenSettings {
    /// Whether the mask bans [`MASKED`] (a grammar-style constraint).
    pub mask: bool,
    /// The logit bias added to [`BIASED`] (0 = off).
    pub bias: f32,
    pub repetition_penalty: f32,
    pub presence_penalty: f32,
    pub temperature: f32,
    pub top_n_sigma: f32,
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
            repetition_penalty: self.repetition_penalty,
            frequency_penalty: 0.0,
            presence_penalty: self.presence_penalty,
            top_n_sigma: self.top_n_sigma,
        }
    }

    /// Whether a penalty is on (the chain then needs the penalty state).
    fn penalized(&self) -> bool {
        self.repetition_penalty != 1.0 || self.presence_penalty != 0.0
    }
}

/// The token panel's controls, in the library's order of application: the mask, the bias, the
/// penalties, then temperature, top-nσ, min-p, top-k and top-p.
pub const TOKEN_CONTROLS: &[Control<TokenSettings>] = &[
    Control {
        name: "mask",
        label: "mask: no furniture",
        help: "1 bans the furniture words (sofa, bed, chair, ...), as a grammar's mask bans tokens",
        min: 0.0,
        max: 1.0,
        initial: 0.0,
        scale: Scale::Integer,
        off: Some(0.0),
        set: |s, v| s.mask = v != 0.0,
    },
    Control {
        name: "bias",
        label: "logit bias on \"pizza\"",
        help: "added to the logit of \"pizza\" before the penalties",
        min: -5.0,
        max: 10.0,
        initial: 0.0,
        scale: Scale::Linear { step: 0.25 },
        off: Some(0.0),
        set: |s, v| s.bias = v as f32,
    },
    Control {
        name: "repetition_penalty",
        label: "repetition penalty",
        help: "divides the positive (multiplies the negative) logits of the tokens already generated",
        min: 1.0,
        max: 3.0,
        initial: 1.0,
        scale: Scale::Linear { step: 0.05 },
        off: Some(1.0),
        set: |s, v| s.repetition_penalty = v as f32,
    },
    Control {
        name: "presence_penalty",
        label: "presence penalty",
        help: "subtracted from the logits of the tokens already generated (negative: favours them)",
        min: -2.0,
        max: 2.0,
        initial: 0.0,
        scale: Scale::Linear { step: 0.05 },
        off: Some(0.0),
        set: |s, v| s.presence_penalty = v as f32,
    },
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
        name: "top_n_sigma",
        label: "top-nσ",
        help: "keeps the tokens whose logit is within n standard deviations of the largest",
        min: 0.0,
        max: 3.0,
        initial: 0.0,
        scale: Scale::Linear { step: 0.05 },
        off: Some(0.0),
        set: |s, v| s.top_n_sigma = v as f32,
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
            mask: false,
            bias: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            temperature: 1.0,
            top_n_sigma: 0.0,
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

/// The tokens "already generated" in this conversation, the penalties' history (the page shows
/// it): the output tokens of every request, so a penalty visibly moves these tokens.
pub const HISTORY: [&str; 5] = ["mat", "sofa", "mat", "rug", "bed"];

/// The words the mask bans when it is on (a named subset, as a grammar bans tokens).
pub const MASKED: [&str; 9] = [
    "sofa", "bed", "chair", "table", "couch", "desk", "shelf", "bench", "bookcase",
];

/// The token the logit bias moves.
pub const BIASED: &str = "pizza";

/// Index of a vocabulary word (the constants above name words of [`WORDS`]).
fn word_index(w: &str) -> u32 {
    WORDS
        .iter()
        .position(|x| *x == w)
        .unwrap_or_else(|| panic!("{w:?} is not in the vocabulary")) as u32
}

/// [`HISTORY`] as token ids.
pub fn history_tokens() -> Vec<u32> {
    HISTORY.iter().map(|w| word_index(w)).collect()
}

/// One row of the mask: bit `j` set = token `j` allowed ([`TokenChain::allowed`]'s layout); every
/// token but [`MASKED`].
pub fn allowed_row() -> Vec<u32> {
    let mut words = vec![u32::MAX; gumbel_wgpu::tokens::mask_words(VOCAB)];
    for w in MASKED {
        let j = word_index(w);
        words[j as usize / 32] &= !(1 << (j % 32));
    }
    words
}

/// The f64 reference of the processed law ([`cpu::token_probabilities`]): the check of the law
/// the GPU writes ([`token_law`]).
pub fn reference_law(logits: &[f32], s: &TokenSettings) -> Result<Vec<f64>, String> {
    let history = history_tokens();
    let bias = if s.bias != 0.0 {
        vec![(word_index(BIASED), s.bias)]
    } else {
        Vec::new()
    };
    let allowed = if s.mask { allowed_row() } else { Vec::new() };
    let row = s.row();
    let params = TokenSampling {
        temperature: &[row.temperature],
        top_k: &[row.top_k],
        top_p: &[row.top_p],
        min_p: &[row.min_p],
        streams: &[Stream { seed: 0, offset: 0 }],
        repetition_penalty: &[row.repetition_penalty],
        presence_penalty: &[row.presence_penalty],
        top_n_sigma: &[row.top_n_sigma],
        output_tokens: &[&history],
        logit_bias: &[&bias],
        allowed: &allowed,
        ..TokenSampling::default()
    };
    cpu::token_probabilities(logits, VOCAB, &params).map_err(|e| e.to_string())
}

/// The processed law the page shows and tests the draws against, and its check.
struct Law {
    /// What the GPU wrote (`TokenSampler::record_probabilities`), as f64.
    law: Vec<f64>,
    /// max |GPU law - f64 reference law|.
    error: f64,
    /// Tokens kept by one of the two laws and not the other (must be 0).
    support_mismatches: u32,
}

/// The chain's device inputs for the first `rows` requests at settings `s` (`bias_entries`:
/// `rows` entries of the current bias).
fn chain<'a>(
    inner: &'a Inner,
    s: &TokenSettings,
    bias_entries: Option<&'a wgpu::Buffer>,
    rows: u64,
) -> TokenChain<'a> {
    let mw = gumbel_wgpu::tokens::mask_words(VOCAB) as u64;
    let sw = gumbel_wgpu::tokens::penalty_state_words(VOCAB) as u64;
    TokenChain {
        allowed: s.mask.then(|| inner.allowed.slice(..rows * mw * 4)),
        bias: bias_entries.map(|e| TokenBias {
            starts: inner.bias_starts.slice(..(rows + 1) * 4),
            entries: e.slice(..rows * 8),
        }),
        penalty_state: s
            .penalized()
            .then(|| inner.penalty_state.slice(..rows * sw * 4)),
    }
}

/// `rows` bias entries `(BIASED, bias)`, one per request (`None` when the bias is off).
fn bias_entries(gpu: &Gpu, s: &TokenSettings, rows: usize) -> Result<Option<wgpu::Buffer>, String> {
    if s.bias == 0.0 {
        return Ok(None);
    }
    let entry = [word_index(BIASED), s.bias.to_bits()];
    let words: Vec<u32> = entry.iter().copied().cycle().take(2 * rows).collect();
    gpu.upload("bias entries", &words)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The processed law of one request at settings `s`: written by the GPU
/// ([`TokenSampler::record_probabilities`] on the page's device, every request's law is the same
/// one), checked against the f64 reference ([`reference_law`]).
async fn token_law(inner: &Inner, s: &TokenSettings) -> Result<Law, String> {
    let gpu = &inner.gpu;
    let e = |e: gumbel_wgpu::Error| e.to_string();
    let params = [TokenRowParams::new(
        s.row(),
        Stream {
            seed: TOKEN_SEED,
            offset: 0,
        },
    )];
    let row_params = gpu.upload("law row params", &params).map_err(e)?;
    let bias = bias_entries(gpu, s, 1)?;
    // The token first, the law from `split`: one buffer, one read-back.
    let split = binding_aligned(4);
    let out = gpu
        .storage_buffer("law", split + 4 * VOCAB as u64)
        .map_err(e)?;
    gpu.submit_async(|enc| {
        let mut job = TokenJob::new(
            LogitsView::f32(
                inner.token_logits.slice(..4 * VOCAB as u64),
                1,
                VOCAB as u64,
            ),
            row_params.slice(..),
            out.slice(..4),
        );
        job.chain = chain(inner, s, bias.as_ref(), 1);
        inner
            .sampler
            .record_probabilities(enc, &job, out.slice(split..))
    })
    .await
    .map_err(e)?;
    let words: Vec<f32> = gpu
        .read_buffer_async(&out, split as usize / 4 + VOCAB)
        .await
        .map_err(e)?;
    let law: Vec<f64> = words[split as usize / 4..]
        .iter()
        .map(|&p| f64::from(p))
        .collect();
    let reference = reference_law(&inner.logits, s)?;
    let error = law
        .iter()
        .zip(&reference)
        .map(|(g, c)| (g - c).abs())
        .fold(
            0.0,
            |a: f64, d| if d.is_nan() { f64::INFINITY } else { a.max(d) },
        );
    let support_mismatches = law
        .iter()
        .zip(&reference)
        .filter(|(g, c)| (**g > 0.0) != (**c > 0.0))
        .count() as u32;
    Ok(Law {
        law,
        error,
        support_mismatches,
    })
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
    /// `DRAWS` rows of the mask ([`allowed_row`]).
    allowed: wgpu::Buffer,
    /// `DRAWS + 1` bias starts `0, 1, 2, ...`: one entry per request.
    bias_starts: wgpu::Buffer,
    /// `DRAWS` rows of the penalty state of [`HISTORY`] (the page never updates it: every call
    /// is the same next step after the same history).
    penalty_state: wgpu::Buffer,
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
        let allowed: Vec<u32> = allowed_row().repeat(DRAWS);
        let allowed = gpu.upload("allowed", &allowed).map_err(js_err)?;
        let starts: Vec<u32> = (0..=DRAWS as u32).collect();
        let bias_starts = gpu.upload("bias starts", &starts).map_err(js_err)?;
        let state = gumbel_wgpu::tokens::penalty_state(VOCAB, &[], &history_tokens())
            .map_err(js_err)?
            .repeat(DRAWS);
        let penalty_state = gpu.upload("penalty state", &state).map_err(js_err)?;
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
                allowed,
                bias_starts,
                penalty_state,
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

    /// The tokens already generated (the penalties' history), in order.
    pub fn history() -> Vec<String> {
        HISTORY.iter().map(|w| w.to_string()).collect()
    }

    /// The words the mask bans.
    pub fn masked() -> Vec<String> {
        MASKED.iter().map(|w| w.to_string()).collect()
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
    pub mask: bool,
    pub bias: f32,
    pub repetition_penalty: f32,
    pub presence_penalty: f32,
    pub temperature: f32,
    pub top_n_sigma: f32,
    pub min_p: f32,
    pub top_k: u32,
    pub top_p: f32,
    /// The call's index: request `r` drew from stream `(TOKEN_SEED + r, step * VOCAB)`.
    pub step: u32,
    /// The processed law the GPU wrote ([`token_law`]).
    pub law: Vec<f64>,
    /// max |GPU law - f64 reference law|.
    pub law_error: f64,
    /// Tokens one of the two laws keeps and the other does not (must be 0).
    pub support_mismatches: u32,
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
    let Law {
        law,
        error: law_error,
        support_mismatches,
    } = token_law(inner, &s).await.map_err(js_err)?;
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
    let bias = bias_entries(gpu, &s, DRAWS).map_err(js_err)?;
    gpu.submit_async(|enc| {
        let mut job = TokenJob::new(
            LogitsView::f32(inner.token_logits.slice(..), d, VOCAB as u64),
            row_params.slice(..),
            out.slice(..4 * d),
        );
        job.logprobs = Some(out.slice(split..));
        job.chain = chain(inner, &s, bias.as_ref(), d);
        inner.sampler.record(enc, &job)
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
        mask: s.mask,
        bias: s.bias,
        repetition_penalty: s.repetition_penalty,
        presence_penalty: s.presence_penalty,
        temperature: s.temperature,
        top_n_sigma: s.top_n_sigma,
        min_p: s.min_p,
        top_k: s.top_k,
        top_p: s.top_p,
        step: step as u32,
        kept: law.iter().filter(|&&p| p > 0.0).count() as u32,
        law,
        law_error,
        support_mismatches,
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
    fn reference_law_applies_the_chain_and_the_filters() {
        let l = vocabulary_logits();
        let law = |s: &TokenSettings| {
            let law = reference_law(&l, s).unwrap();
            assert!((law.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            law
        };
        let s0 = initial_tokens();
        let base = law(&s0);
        assert!(base.iter().all(|&p| p > 0.0));
        let mut s = s0;
        s.top_k = 5;
        assert_eq!(law(&s).iter().filter(|&&p| p > 0.0).count(), 5);
        // The mask: exactly the named words get 0.
        let mut s = s0;
        s.mask = true;
        let masked = law(&s);
        for (j, w) in WORDS.iter().enumerate() {
            assert_eq!(masked[j] == 0.0, MASKED.contains(w), "{w}");
        }
        // The penalties lower the odds of every history token against an unseen one ("floor"),
        // the repetition penalty only where the logit is not 0 ("mat"'s is: -1.1 ln 1), and leave
        // the odds between unseen tokens as they are.
        let history = history_tokens();
        let floor = word_index("floor") as usize;
        for (name, set) in [
            (
                "presence",
                (|s: &mut TokenSettings| s.presence_penalty = 1.0) as fn(&mut _),
            ),
            ("repetition", |s| s.repetition_penalty = 2.0),
        ] {
            let mut s = s0;
            set(&mut s);
            let p = law(&s);
            for j in 0..VOCAB {
                let moved = history.contains(&(j as u32)) && (name == "presence" || l[j] != 0.0);
                let (odds, before) = (p[j] / p[floor], base[j] / base[floor]);
                if moved {
                    assert!(odds < before * 0.99, "{name}: {}", WORDS[j]);
                } else {
                    assert!((odds / before - 1.0).abs() < 1e-9, "{name}: {}", WORDS[j]);
                }
            }
        }
        // The bias moves only the odds of its token against the rest.
        let mut s = s0;
        s.bias = 3.0;
        let p = law(&s);
        let b = word_index(BIASED) as usize;
        assert!((p[b] / p[0] / (base[b] / base[0]) - 3f64.exp()).abs() < 1e-9);
        // Top-nσ keeps a head of the vocabulary.
        let mut s = s0;
        s.top_n_sigma = 1.0;
        let kept = law(&s).iter().filter(|&&p| p > 0.0).count();
        assert!(kept > 0 && kept < VOCAB, "{kept}");
    }
}
