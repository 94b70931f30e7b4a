#![warn(missing_docs)]
//! # gumbel-wgpu
//!
//! Gumbel-Softmax and Gumbel-max sampling on the GPU: hand-written WGSL compute kernels run
//! through [wgpu](https://wgpu.rs), with a Philox4x32-10 random stream that gives the same
//! numbers on every GPU, every backend and the CPU.
//!
//! ## Quick start
//! ```
//! use gumbel_wgpu::{Gpu, Stream};
//! let gpu = Gpu::new()?;                                   // or Gpu::from_wgpu(device, queue)
//! let logits = [1.0, 2.0, 0.5, -1.0, 0.0, 0.0, 0.0, f32::NEG_INFINITY]; // 2 rows of k = 4
//! let stream = Stream::new(2017);                          // reproducible noise
//!
//! let y = gpu.gumbel_softmax(&logits, 4, 0.5, stream)?;    // relaxed one-hot rows
//! let dl = gpu.gumbel_softmax_backward(&y, &[1.0; 8], 4, 0.5)?; // dL/dl for dL/dy = 1
//! let tokens = gpu.sample(&logits, 4, stream)?;            // Gumbel-max: one index per row
//! assert!(tokens[1] < 3);                                  // -inf is never drawn
//! # let _ = dl;
//! # Ok::<(), gumbel_wgpu::Error>(())
//! ```
//! Each call above is blocking, host to host. The buffer-level families ([`GumbelSoftmax`],
//! [`GumbelSoftmaxBackward`], [`ConcreteDensity`], [`Sampler`], [`RandomFill`]) record into
//! your own `wgpu::CommandEncoder` from [`wgpu::BufferSlice`]s at any 4-byte offset (a
//! [`LogitsView`] for a `rows x k` matrix), and never submit.
//!
//! ## Token sampling for language models
//! [`Gpu::sample_tokens`] samples one token per row through the whole logits-processing chain of
//! a serving engine, in vLLM's order: a token mask (xgrammar's packed bitmask), a logit bias,
//! repetition / frequency / presence penalties from each request's prompt and output, top-nσ,
//! then the temperature and the min-p, top-k and top-p filters; one [`Stream`] per request so a
//! draw never depends on the batch; raw or processed log-probabilities ([`LogprobsMode`]) of the
//! token and of the top `n`, and the token's rank. [`Gpu::token_probabilities`] returns the final
//! law itself (to verify speculative drafts against, [`Gpu::verify_speculative`]); f16 / bf16
//! logits and a 64-bit noise mode go through [`Gpu::sample_tokens_with`]. The kernels are
//! sort-free (radix select and mass search on the order-preserving image of the logits, then
//! one Gumbel-max); the [`tokens`] module states the semantics and how many passes each stage
//! costs. [`TokenSampler`] records the same into your encoder with every input in device buffers
//! (per-row parameters, the mask, the bias lists, a penalty state it updates on the device from
//! the sampled tokens), so a decode loop never reads back between steps.
//!
//! ## The stream contract
//! Randomness comes from a [`Stream`] `{ seed, offset }`. Word `n` of a stream is
//! `philox4x32_10([lo32(b), hi32(b), 0, 0], [lo32(seed), hi32(seed)])[m % 4]` with
//! `m = offset + n` (wrapping `u64`) and `b = m / 4`. Every kernel uses word `n` for flat
//! element `n` of its input, so results do not depend on workgroup size, dispatch chunking,
//! device or backend; [`cpu`] reproduces them.
//!
//! ## Numbers from a word
//! * **Uniform** (`Gpu::uniform`, [`cpu::uniform_from_word`]): `u = (w + 1/2) / 2^32` with its
//!   significand cut to 24 bits, built from integer operations so it is bit-identical
//!   everywhere. `u` lies in `[2^-33, 1 - 2^-24]`: never 0 or 1, with the word's full 32 bits of
//!   resolution near 0.
//! * **Gumbel** (`Gpu::gumbel`): `g = -log(E)`, `E = -log1p(-u)` (a standard exponential; a
//!   series for `u < 1/8`, so there is no cancellation). **Tail policy:** `g` is always finite and
//!   lies in `[-2.8116, 22.8739]`: the upper tail (large `g`, what makes rare categories win a
//!   Gumbel-max draw) reaches `33 ln 2 ≈ 22.87` (word 0); the lower tail is clamped at
//!   `-ln(24 ln 2) ≈ -2.8115` (word `0xffffffff`), where `P(g < -2.81) ≈ 6e-8`. Other libraries
//!   stop the upper tail at 6.9 (candle) or 15.9 (FlashInfer).
//! * **Two words per element** ([`Noise::Bits64`], an option of every sampler: Gumbel-max,
//!   top-k, tokens): element `n` uses words `2n` (high) and `2n + 1` (low), the uniform of the
//!   64-bit value ([`cpu::uniform_from_words64`]) reaches `2^-65`, and `g` reaches
//!   `65 ln 2 ≈ 45.05`, at twice the Philox work.
//!
//! ## Rows, masking and ties
//! Logits are row-major `rows x k` matrices (f32, or f16 / bf16 packed two per word, see
//! [`LogitsFormat`]). A -inf logit is a masked category: probability exactly 0, never sampled,
//! detected by its bit pattern on the GPU (WGSL may assume no infinities). Among equal values the
//! lowest index wins (the hard sample, `sample`, `sample_top_k`). +inf logits share the row's mass
//! equally; the first of them is the hard / sampled index. The slice API returns `Err` naming the
//! first row that holds a NaN or only -inf; the buffer API, which cannot scan on the host, writes
//! NaN bits into such rows (forward, with an optional status buffer) or [`NO_INDEX`] (sampling).
//!
//! ## Kernels by shape
//! Each family chooses its strategy from the shape: one row per thread for small `k`, a team of
//! threads or a workgroup per row with the row in registers for mid `k`, and rows split across
//! workgroups (partial states, then a small combine pass) for few rows of huge `k`. None needs
//! subgroups or 64-bit integers; inputs larger than one storage binding are dispatched in chunks
//! of whole rows, and grids past 65535 workgroups use a second dimension.

// Declared in the order a reader meets them (rustdoc lists `Gpu`'s methods in this order):
// opening the device, random numbers, the forward pass, the backward pass, densities,
// sampling; then the buffer-level skeleton and helpers.
mod backward;
pub mod cpu;
mod density;
mod error;
mod family;
mod gpu;
pub mod logits;
pub mod philox;
mod random;
mod sample;
#[doc(hidden)]
pub mod sanitize;
mod schedule;
#[doc(hidden)]
pub mod shader;
mod softmax;
pub mod tokens;

/// The wgpu this crate is built on: use it to name wgpu types, so the versions always match.
pub use wgpu;

pub use backward::{BackwardInput, BackwardJob, BackwardSlice, GradSpace, GumbelSoftmaxBackward};
// Path thresholds and knobs the tests use to reach every kernel.
#[doc(hidden)]
pub use backward::{
    ROW_PER_TEAM_MAX_K, ROW_PER_THREAD_MAX_K, RowPath, SPLIT_MAX_ROWS, SPLIT_MIN_K,
};
pub use density::{ConcreteDensity, DensityJob, SIMPLEX_TOLERANCE};
// The README's code compiles (as a doctest), so its API tour cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use error::{BoundsViolation, Error};
pub use gpu::{Gpu, GpuOptions};
pub use logits::{LogitsFormat, LogitsSlice, LogitsView};
pub use philox::{Noise, Philox4x32, Stream};
pub use random::{RandomFill, RandomJob, RandomKind};
pub use sample::{MAX_TOP, NO_INDEX, SampleJob, SampleOptions, SampleStrategy, Sampler};
pub use schedule::{Temperature, TemperatureSchedule};
pub use softmax::{
    GumbelSoftmax, SoftmaxJob, SoftmaxMode, SoftmaxStrategy, softmax_max_register_k,
};
pub use tokens::{
    LogprobsMode, MAX_LOGPROBS, RowSampling, SampledTokens, SpeculativeJob, SpeculativeResult,
    SpeculativeVerifier, TokenBias, TokenChain, TokenFilters, TokenJob, TokenRowParams,
    TokenSampler, TokenSampling, TokenStrategy, stream_words,
};

/// Every kernel family's spec, for the naga validation test (`tests/shaders.rs`): the composer
/// knows no family, so the list lives here, at the root that declares them.
#[doc(hidden)]
pub fn kernel_specs() -> Vec<family::FamilySpec> {
    use family::KernelFamily;
    vec![
        random::RandomFill::SPEC,
        softmax::GumbelSoftmax::SPEC,
        backward::GumbelSoftmaxBackward::SPEC,
        density::ConcreteDensity::SPEC,
        sample::Sampler::SPEC,
        tokens::TokenSampleFamily::SPEC,
        tokens::TokenSplitFamily::SPEC,
        tokens::TokenFinalFamily::SPEC,
        tokens::TokenProcessor::SPEC,
        tokens::PenaltyUpdater::SPEC,
        tokens::SpeculativeVerifier::SPEC,
    ]
}
#[doc(hidden)]
pub use family::FamilySpec;
