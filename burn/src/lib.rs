//! A differentiable Gumbel-Softmax for [burn](https://burn.dev) 0.22 on its wgpu backend, with
//! [gumbel-wgpu](https://docs.rs/gumbel-wgpu)'s fused kernels on the same wgpu device.
//!
//! * [`gumbel_softmax`] (soft or straight-through hard) and [`gumbel_softmax_log`]: the forward
//!   is the library's one-pass fused kernel; on an autodiff device (`device.autodiff()`) the
//!   backward is the library's fused backward kernel, registered as a burn autodiff op, from the
//!   stored sample or recomputed from the logits and the stream ([`Backward`]). `hard` gives the
//!   one-hot of `argmax(l + g)` forward and the soft sample's gradient backward. `tau` is a
//!   scalar or one per row ([`Tau`]).
//! * [`sample`], [`sample_top_k`] and [`sample_tokens`]: Gumbel-max, Gumbel-top-k and LLM
//!   token sampling on burn tensors (no gradient).
//! * [`gumbel_noise`]: the noise the fused kernels add, as a burn tensor, so
//!   `softmax((l + gumbel_noise(..)) / tau)` composed from burn ops is the same function.
//!
//! The tensors are read and written in place, at their offsets inside burn's buffers: no copy
//! through the host, outputs are burn tensors. One wgpu device serves both: [`init`] (burn opens
//! it), [`init_setup`] (you opened it), or [`register`] (you set up both).
//!
//! **Memory pages.** WebGPU cannot bind one buffer read-only and read-write in one dispatch, and
//! burn's default memory configuration packs small tensors into shared pages. Where an output
//! lands in a buffer an input lives in, the kernel writes to a scratch buffer of this crate and
//! a buffer copy (in the same command buffer) moves it into burn's tensor. With
//! `MemoryConfiguration::ExclusivePages` every tensor has its own buffer and that copy never
//! happens.
//!
//! **Fusion.** burn's `fusion` feature (in the default features of `burn`, `burn-wgpu` and
//! `burn-cubecl`) makes burn's wgpu backend `Fusion<CubeBackend>`, whose tensors are lazy
//! fusion handles. Turn on this crate's `fusion` feature with it (it turns on burn's):
//!
//! ```toml
//! gumbel-wgpu-burn = { path = "...", features = ["fusion"] }
//! ```
//!
//! Each op then resolves its inputs through burn-fusion's client (`resolve_tensor_float`, which
//! first runs the fused work queued on the tensor's stream), runs the kernels on the cubecl
//! tensors, and registers its outputs with `register_tensor_handle` and an `Init` operation (as
//! burn-fusion's own `float_from_data` does); under autodiff the backward does the same with
//! the incoming gradient and the checkpointed logits. burn does not fuse across these ops (they
//! run eagerly, between fused blocks). The tests run either way (`cargo test --features
//! fusion`). Where burn's `fusion` is on (through any crate of the build) and this crate's is
//! off, the crate stops at compile time (`expected CubeBackend, found Fusion<CubeBackend>`),
//! never at run time.
//!
//! **Order of work.** Each op submits burn's queued work (`client.flush()`), then its own
//! command buffer on the shared queue, without waiting for the GPU: burn's later work is queued
//! behind it, so no host wait is added per op.
//!
//! **Errors.** Bad input (a tau that is not a finite normal f32 > 0, a per-row tau of the wrong
//! shape, an f16 tensor, a tensor on another backend, an unregistered device) is an `Err`
//! naming the argument, checked before any kernel runs. The backward pass, which burn gives no
//! way to fail, panics with the library's message if the device reports an error.
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward as BackwardStep, Ops, OpsKind, unary};
use burn::backend::{Autodiff, Cube, DispatchKindConversion, DispatchTensor};
use burn::tensor::{Bool, Int, Tensor};
use burn_cubecl::tensor::CubeTensor;
pub use gumbel_wgpu::{Error, Noise, RowSampling, Stream, TokenSampling};
use gumbel_wgpu::{GradSpace, SoftmaxMode, TokenRowParams};

mod bridge;
mod device;
mod kernels;

use bridge::{Prim, from_cube, to_cube};

/// This crate's `fusion` feature must match burn's (see the crate docs): where burn's `fusion`
/// is on and this crate's is not, this line does not compile (`expected CubeBackend, found
/// Fusion<CubeBackend>`).
#[cfg(not(feature = "fusion"))]
const _: fn(Cube) -> burn_cubecl::CubeBackend = |backend| backend;
#[cfg(feature = "fusion")]
const _: fn(Cube) -> burn_fusion::Fusion<burn_cubecl::CubeBackend> = |backend| backend;

pub use device::{adapter_info, init, init_setup, register};

/// The temperature: one for the batch, or one per row (an f32 tensor of `rows` entries, where
/// `rows` is the product of the logits' leading dimensions). Constant: no gradient flows to it.
/// A scalar is checked on the host; a per-row tensor by one reduction read back per call (a
/// wait for the device), so that a bad one is an `Err` rather than rows of NaN.
// A tensor is large (a burn tensor handle is hundreds of bytes); a `Tau` is made once per call.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Tau {
    /// One temperature for every row.
    Scalar(f32),
    /// One temperature per row.
    PerRow(Tensor<1>),
}

impl From<f32> for Tau {
    fn from(t: f32) -> Self {
        Tau::Scalar(t)
    }
}

impl From<Tensor<1>> for Tau {
    fn from(t: Tensor<1>) -> Self {
        Tau::PerRow(t)
    }
}

/// What the forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// `y = softmax((l + g) / tau)`.
    Soft,
    /// The one-hot of `argmax(l + g)` forward, the gradient of the soft `y` backward
    /// (straight-through).
    Hard,
    /// `log y`, finite where `y` underflows.
    Log,
}

/// Where the backward pass gets the forward's sample from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backward {
    /// Keep `y` (or `log y`) from the forward: the backward reads it (for `Hard`, the forward
    /// also writes the soft `y` to keep).
    #[default]
    Stored,
    /// Keep only the logits (checkpointed as burn's own ops keep their inputs) and recompute
    /// `y` from them and the stream in the backward kernel: no `rows x k` tensor is kept beyond
    /// the logits, for one more pass of Philox and exp per element.
    Recompute,
}

/// `softmax((logits + g) / tau)` over the last dimension (`hard`: the one-hot of the argmax of
/// `logits + g`, with the soft sample's gradient), `g` the Gumbel noise of `stream` (element
/// `j` of row `r` uses word `r * k + j`, rows in row-major order of the leading dimensions).
/// Differentiable on an autodiff device; the backward keeps the sample ([`Backward::Stored`]).
pub fn gumbel_softmax<const D: usize>(
    logits: Tensor<D>,
    tau: impl Into<Tau>,
    hard: bool,
    stream: Stream,
) -> Result<Tensor<D>, Error> {
    let output = if hard { Output::Hard } else { Output::Soft };
    gumbel_softmax_with(logits, tau, stream, output, Backward::Stored)
}

/// `log softmax((logits + g) / tau)`: the log-space sample (see [`gumbel_softmax`]).
pub fn gumbel_softmax_log<const D: usize>(
    logits: Tensor<D>,
    tau: impl Into<Tau>,
    stream: Stream,
) -> Result<Tensor<D>, Error> {
    gumbel_softmax_with(logits, tau, stream, Output::Log, Backward::Stored)
}

/// [`gumbel_softmax`] with every choice: the output and where the backward gets `y` from.
pub fn gumbel_softmax_with<const D: usize>(
    logits: Tensor<D>,
    tau: impl Into<Tau>,
    stream: Stream,
    output: Output,
    backward: Backward,
) -> Result<Tensor<D>, Error> {
    let dims = logits.dims();
    let (rows, k) = rows_k("logits", &dims)?;
    let tau = device_tau(tau.into(), rows)?;
    let logits: Tensor<2> = logits.reshape([rows, k]);
    let strategy = logits.gradient_checkpointing_strategy();
    let out: Tensor<2> = match strategy {
        None => {
            let p = to_cube(primitive::<Cube>(logits)?);
            let (p, rows, k) = kernels::matrix("logits", p)?;
            let y = kernels::forward(&p, rows, k, &tau, stream, mode(output))?;
            Tensor::from_primitive::<Cube>(from_cube(y))
        }
        Some(burn::backend::GradientCheckpointingStrategy::Balanced) => {
            autodiff_forward::<BalancedCheckpointing>(logits, tau, stream, output, backward)?
        }
        Some(_) => autodiff_forward::<NoCheckpointing>(logits, tau, stream, output, backward)?,
    };
    Ok(out.reshape(dims))
}

fn mode(output: Output) -> SoftmaxMode {
    match output {
        Output::Soft => SoftmaxMode::Soft,
        Output::Hard => SoftmaxMode::Hard,
        Output::Log => SoftmaxMode::Log,
    }
}

/// Rows (the product of the leading dimensions) and `k` (the last) of a shape.
fn rows_k(what: &str, dims: &[usize]) -> Result<(usize, usize), Error> {
    let Some((&k, lead)) = dims.split_last() else {
        return Err(Error::InvalidArgument(format!(
            "{what}: rank 0; expected at least 1 dimension (the categories last)"
        )));
    };
    if k == 0 {
        return Err(Error::InvalidArgument(format!(
            "{what}: the last dimension (the categories) is 0"
        )));
    }
    Ok((lead.iter().product(), k))
}

/// The backend primitive of a tensor on backend `B`, or an error a burn user can read.
fn primitive<B: burn::backend::Backend>(
    t: Tensor<2>,
) -> Result<<burn::tensor::Float as burn::tensor::BackendPrimitive<B>>::Primitive, Error>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    t.try_into_primitive::<B>().map_err(|e| {
        Error::InvalidArgument(format!(
            "logits: not a tensor of burn's wgpu backend: {e:?}"
        ))
    })
}

/// The temperature on the device, checked: a scalar on the host, a per-row tensor by one
/// reduction read back (its shape first).
fn device_tau(tau: Tau, rows: usize) -> Result<kernels::Tau, Error> {
    match tau {
        Tau::Scalar(t) => {
            let tau = kernels::Tau::Scalar(t);
            kernels::check_tau(&tau, rows as u64)?;
            Ok(tau)
        }
        Tau::PerRow(t) => {
            if t.dims() != [rows] {
                return Err(Error::InvalidArgument(format!(
                    "tau: a per-row temperature has one entry per row ({rows}), got shape {:?}",
                    t.dims()
                )));
            }
            let t = t.inner();
            // NaN compares false: it fails the check too.
            let ok: Tensor<1, Bool> = t
                .clone()
                .greater_equal_elem(f32::MIN_POSITIVE)
                .bool_and(t.clone().lower_elem(f32::INFINITY));
            if rows > 0 && !ok.all().into_scalar::<bool>() {
                return Err(Error::InvalidArgument(
                    "tau: every per-row temperature must be a finite, normal f32 > 0".into(),
                ));
            }
            let p = t
                .reshape([1, rows])
                .try_into_primitive::<Cube>()
                .map_err(|e| Error::InvalidArgument(format!("tau: {e:?}")))?;
            let p = burn_cubecl::kernel::into_contiguous(to_cube(p));
            let shape = [rows];
            let p = CubeTensor::new_contiguous(
                p.client.clone(),
                p.device.clone(),
                shape.into(),
                p.handle.clone(),
                p.dtype,
            );
            let tau = kernels::Tau::PerRow(p);
            kernels::check_tau(&tau, rows as u64)?;
            Ok(tau)
        }
    }
}

/// What the backward step keeps.
#[derive(Clone, Debug)]
struct State {
    /// The stored soft `y` (or `log y`), or the checkpointed logits and the stream.
    input: Kept,
    space: GradSpace,
    tau: kernels::Tau,
    rows: u64,
    k: u64,
}

// One per op in the autodiff graph; boxing the tensor would not save anything.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Kept {
    Sample(CubeTensor),
    Logits(NodeId, Stream),
}

#[derive(Debug)]
struct GumbelSoftmaxStep;

impl BackwardStep<Cube, 1> for GumbelSoftmaxStep {
    type State = State;

    fn backward(self, ops: Ops<State, 1>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let State {
            input,
            space,
            tau,
            rows,
            k,
        } = ops.state;
        // The checkpointed logits (the op's 2-D input), contiguous for the kernel.
        let logits = match &input {
            Kept::Logits(id, _) => Some(burn_cubecl::kernel::into_contiguous(to_cube(
                checkpointer.retrieve_node_output::<Prim>(*id),
            ))),
            Kept::Sample(_) => None,
        };
        unary::<Cube, _>(ops.parents, ops.node, grads, |grad| {
            let y = match (&input, &logits) {
                (Kept::Sample(y), _) => kernels::YSource::Stored(y),
                (Kept::Logits(_, stream), Some(l)) => kernels::YSource::Recompute(l, *stream),
                (Kept::Logits(..), None) => unreachable!("retrieved above"),
            };
            let dl = kernels::backward(y, space, to_cube(grad), rows, k, &tau)
                .unwrap_or_else(|e| panic!("gumbel-wgpu-burn: the Gumbel-Softmax backward: {e}"));
            from_cube(dl)
        });
    }
}

fn autodiff_forward<C: CheckpointStrategy>(
    logits: Tensor<2>,
    tau: kernels::Tau,
    stream: Stream,
    output: Output,
    backward: Backward,
) -> Result<Tensor<2>, Error>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Cube, C>>,
{
    let ad = primitive::<Autodiff<Cube, C>>(logits)?;
    let (p, rows, k) = kernels::matrix("logits", to_cube(ad.primitive().clone()))?;
    let space = match output {
        Output::Log => GradSpace::LogProbs,
        _ => GradSpace::Probs,
    };
    let out = match GumbelSoftmaxStep
        .prepare::<C>([ad.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let y = kernels::forward(&p, rows, k, &tau, stream, mode(output))?;
            let input = match (backward, output) {
                (Backward::Recompute, _) => Kept::Logits(prep.checkpoint(&ad), stream),
                (Backward::Stored, Output::Hard) => Kept::Sample(kernels::forward(
                    &p,
                    rows,
                    k,
                    &tau,
                    stream,
                    SoftmaxMode::Soft,
                )?),
                (Backward::Stored, _) => Kept::Sample(y.clone()),
            };
            let state = State {
                input,
                space,
                tau,
                rows,
                k,
            };
            prep.finish(state, from_cube(y))
        }
        OpsKind::UnTracked(prep) => prep.finish(from_cube(kernels::forward(
            &p,
            rows,
            k,
            &tau,
            stream,
            mode(output),
        )?)),
    };
    Ok(Tensor::from_primitive::<Autodiff<Cube, C>>(out))
}

/// The cubecl primitive of any tensor (autodiff or not) with its rows and `k`, and a function
/// that puts an output back on the tensor's kind of device (autodiff kept, no gradient).
fn plain(
    logits: Tensor<2>,
) -> Result<
    (
        CubeTensor,
        u64,
        u64,
        Option<burn::backend::GradientCheckpointingStrategy>,
    ),
    Error,
> {
    let strategy = logits.gradient_checkpointing_strategy();
    let p = to_cube(primitive::<Cube>(logits.inner())?);
    let (p, rows, k) = kernels::matrix("logits", p)?;
    Ok((p, rows, k, strategy))
}

fn rewrap<const D: usize, K>(
    t: Tensor<D, K>,
    strategy: Option<burn::backend::GradientCheckpointingStrategy>,
) -> Tensor<D, K>
where
    K: burn::tensor::kind::Basic + burn::tensor::kind::Autodiff,
{
    match strategy {
        None => t,
        Some(s) => t.autodiff().with_gradient_checkpointing_strategy(s),
    }
}

/// Gumbel-max: one index per row of `softmax(logits / tau)` (i32, `NO_INDEX` as -1 for a row
/// with nothing to draw), from the noise of `stream` (element `j` of row `r` uses word
/// `r * k + j`: the index is `argmax(logits + g)` with `g` of [`gumbel_noise`] at tau 1). No
/// gradient.
pub fn sample(
    logits: Tensor<2>,
    tau: impl Into<Tau>,
    stream: Stream,
) -> Result<Tensor<1, Int>, Error> {
    let rows = logits.dims()[0];
    let top = sample_top_k(logits, 1, tau, stream)?;
    Ok(top.reshape([rows]))
}

/// Gumbel-top-k: `top` distinct indices per row (`rows x top`, i32), in decreasing order of
/// `logits / tau + g`. No gradient.
pub fn sample_top_k(
    logits: Tensor<2>,
    top: usize,
    tau: impl Into<Tau>,
    stream: Stream,
) -> Result<Tensor<2, Int>, Error> {
    let (rows, k) = rows_k("logits", &logits.dims())?;
    if top == 0 || top > k.min(gumbel_wgpu::MAX_TOP) {
        return Err(Error::InvalidArgument(format!(
            "top = {top}: must be in 1..={}",
            k.min(gumbel_wgpu::MAX_TOP)
        )));
    }
    let tau = device_tau(tau.into(), rows)?;
    let (p, rows, k, strategy) = plain(logits)?;
    let out = kernels::sample(&p, rows, k, top as u32, &tau, stream, Noise::Bits32)?;
    Ok(rewrap(
        Tensor::from_primitive::<Cube>(from_cube(out)),
        strategy,
    ))
}

/// LLM token sampling (temperature, top-k, top-p, min-p, top-nσ per row, a stream per row; see
/// `gumbel_wgpu::TokenSampling`): one i32 token per row, -1 for a row with a NaN, a +inf or
/// only -inf logits. No gradient. The processing chain (`allowed`, `logit_bias`, the
/// penalties) is not wired here: params that turn one on get an `Err` naming the field rather than
/// having it silently ignored; use `gumbel_wgpu::Gpu::sample_tokens` for those.
pub fn sample_tokens(
    logits: Tensor<2>,
    params: &TokenSampling<'_>,
    noise: Noise,
) -> Result<Tensor<1, Int>, Error> {
    let (rows, k) = rows_k("logits", &logits.dims())?;
    if params.logprobs != 0 {
        return Err(Error::InvalidArgument(
            "params.logprobs: this wrapper returns tokens only; use 0".into(),
        ));
    }
    let row_params = TokenRowParams::rows(params, rows, k)?;
    let unsupported = [
        ("allowed", !params.allowed.is_empty()),
        (
            "logit_bias",
            params.logit_bias.iter().any(|b| !b.is_empty()),
        ),
        (
            "repetition_penalty",
            params.repetition_penalty.iter().any(|&x| x != 1.0),
        ),
        (
            "frequency_penalty",
            params.frequency_penalty.iter().any(|&x| x != 0.0),
        ),
        (
            "presence_penalty",
            params.presence_penalty.iter().any(|&x| x != 0.0),
        ),
    ];
    if let Some((name, _)) = unsupported.iter().find(|u| u.1) {
        return Err(Error::InvalidArgument(format!(
            "params.{name}: this wrapper does not run the processing chain (mask, bias, \
             penalties); leave it off or use gumbel_wgpu::Gpu::sample_tokens"
        )));
    }
    let (p, rows, k, strategy) = plain(logits)?;
    let out = kernels::sample_tokens(&p, rows, k, &row_params, noise)?;
    Ok(rewrap(
        Tensor::from_primitive::<Cube>(from_cube(out)),
        strategy,
    ))
}

/// The Gumbel noise the fused kernels add for `stream`, shaped like `like` (element `j` of row
/// `r`, rows in row-major order of the leading dimensions, from word `r * k + j`), on its
/// device. `softmax((l + gumbel_noise(..)) / tau)` composed from burn ops is the function
/// [`gumbel_softmax`] computes (up to f32 rounding). No gradient.
pub fn gumbel_noise<const D: usize>(like: &Tensor<D>, stream: Stream) -> Result<Tensor<D>, Error> {
    let dims = like.dims();
    let (rows, k) = rows_k("like", &dims)?;
    let probe: Tensor<2> = like.clone().reshape([rows, k]);
    let strategy = probe.gradient_checkpointing_strategy();
    let p = to_cube(primitive::<Cube>(probe.inner())?);
    let out = kernels::gumbel_noise(&p, rows as u64, k as u64, stream)?;
    let t: Tensor<2> = rewrap(Tensor::from_primitive::<Cube>(from_cube(out)), strategy);
    Ok(t.reshape(dims))
}

/// Where a tensor lies: its wgpu buffer, byte offset and byte size (tests check that the
/// kernels read tensors at offsets inside burn's shared pages). Submits burn's pending work on it.
#[doc(hidden)]
pub fn placement<const D: usize>(
    t: &Tensor<D>,
) -> Result<(gumbel_wgpu::wgpu::Buffer, u64, u64), Error> {
    let n = t.dims().iter().product::<usize>();
    let p = to_cube(primitive::<Cube>(t.clone().inner().reshape([1, n]))?);
    let b = device::bind(&p)?;
    Ok((b.res.buffer.clone(), b.res.offset, b.res.size))
}
