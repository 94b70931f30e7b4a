//! The library's kernels on burn's cubecl tensors: each binds the tensors' own buffer ranges
//! (no copy), records the job and submits it on the shared queue.

use crate::device::{Bound, Out, bind, empty, shared_for};
use burn::tensor::DType;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use gumbel_wgpu::{
    BackwardInput, BackwardJob, Error, GradSpace, LogitsView, Noise, RandomJob, RandomKind,
    SampleJob, SoftmaxJob, SoftmaxMode, Stream, Temperature, TokenJob,
};

/// A temperature on the device: one for the batch, or a contiguous f32 tensor of one per row.
// Made once per op; a cubecl tensor handle is large.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub(crate) enum Tau {
    Scalar(f32),
    PerRow(CubeTensor),
}

/// `rows` and `k` of a 2-D f32 tensor, made contiguous (a copy only where burn's layout is
/// strided: sliced rows keep their offset inside burn's buffer and are read in place).
pub(crate) fn matrix(what: &str, t: CubeTensor) -> Result<(CubeTensor, u64, u64), Error> {
    if t.dtype != DType::F32 {
        return Err(Error::InvalidArgument(format!(
            "{what}: dtype {:?}; the kernels take f32 tensors",
            t.dtype
        )));
    }
    let shape = burn::backend::TensorMetadata::shape(&t);
    if shape.num_dims() != 2 {
        return Err(Error::InvalidArgument(format!(
            "{what}: rank {}, expected 2 (rows x k)",
            shape.num_dims()
        )));
    }
    let (rows, k) = (shape[0] as u64, shape[1] as u64);
    Ok((into_contiguous(t), rows, k))
}

pub(crate) fn check_tau(tau: &Tau, rows: u64) -> Result<(), Error> {
    match tau {
        Tau::Scalar(t) => {
            if !(t.is_finite() && *t >= f32::MIN_POSITIVE) {
                return Err(Error::InvalidArgument(format!(
                    "tau = {t}: the temperature must be a finite, normal f32 > 0"
                )));
            }
        }
        Tau::PerRow(t) => {
            let shape = burn::backend::TensorMetadata::shape(t);
            if shape.num_dims() != 1 || shape[0] as u64 != rows || t.dtype != DType::F32 {
                return Err(Error::InvalidArgument(format!(
                    "tau: a per-row temperature is an f32 tensor of shape [{rows}] (one per row), \
                     got shape {:?} of {:?}",
                    shape, t.dtype
                )));
            }
        }
    }
    Ok(())
}

fn tau_binding<'a>(tau: &Tau, bound: &'a Option<Bound>) -> Temperature<wgpu::BufferSlice<'a>> {
    match (tau, bound) {
        (Tau::PerRow(_), Some(b)) => Temperature::PerRow(b.slice()),
        (Tau::Scalar(t), _) => Temperature::Scalar(*t),
        (Tau::PerRow(_), None) => unreachable!("a per-row tau is bound"),
    }
}

fn bind_tau(tau: &Tau) -> Result<Option<Bound>, Error> {
    match tau {
        Tau::PerRow(t) => Ok(Some(bind(t)?)),
        Tau::Scalar(_) => Ok(None),
    }
}

/// The fused forward: `mode` of `softmax((l + g) / tau)` over the rows of `logits` (checked,
/// contiguous, `rows x k`). Returns a new `rows x k` f32 tensor.
pub(crate) fn forward(
    logits: &CubeTensor,
    rows: u64,
    k: u64,
    tau: &Tau,
    stream: Stream,
    mode: SoftmaxMode,
) -> Result<CubeTensor, Error> {
    let out = empty(logits, vec![rows as usize, k as usize], DType::F32);
    if rows == 0 {
        return Ok(out);
    }
    let shared = shared_for(logits)?;
    let kernels = shared.gpu.gumbel_softmax_kernels()?;
    let l = bind(logits)?;
    let t = bind_tau(tau)?;
    let mut inputs = vec![&l];
    inputs.extend(t.as_ref());
    let o = Out::new(&shared, bind(&out)?, &inputs);
    shared.submit(logits, |enc| {
        kernels.record(
            enc,
            &SoftmaxJob {
                mode,
                logits: LogitsView::f32(l.slice(), rows, k),
                tau: tau_binding(tau, &t),
                stream,
                out: o.slice(),
                status: None,
            },
        )?;
        o.finish(enc);
        Ok(())
    })?;
    Ok(out)
}

/// Where the backward gets `y` from.
pub(crate) enum YSource<'a> {
    /// The stored soft sample (or log sample, with `GradSpace::LogProbs`).
    Stored(&'a CubeTensor),
    /// Recomputed from the logits and the stream.
    Recompute(&'a CubeTensor, Stream),
}

/// The fused backward: `dL/dl` from `grad` (`dy`, or `dx` in log space) of `rows x k`.
pub(crate) fn backward(
    y: YSource<'_>,
    space: GradSpace,
    grad: CubeTensor,
    rows: u64,
    k: u64,
    tau: &Tau,
) -> Result<CubeTensor, Error> {
    let grad = into_contiguous(grad);
    let out = empty(&grad, vec![rows as usize, k as usize], DType::F32);
    if rows == 0 {
        return Ok(out);
    }
    let shared = shared_for(&grad)?;
    let kernels = shared.gpu.gumbel_softmax_backward_kernels()?;
    let (input_tensor, stream) = match y {
        YSource::Stored(t) => (t, None),
        YSource::Recompute(t, s) => (t, Some(s)),
    };
    let i = bind(input_tensor)?;
    let g = bind(&grad)?;
    let t = bind_tau(tau)?;
    let mut inputs = vec![&i, &g];
    inputs.extend(t.as_ref());
    let o = Out::new(&shared, bind(&out)?, &inputs);
    shared.submit(&grad, |enc| {
        let view = LogitsView::f32(i.slice(), rows, k);
        let input = match (stream, space) {
            (Some(stream), space) => BackwardInput::Logits {
                logits: view,
                stream,
                space,
            },
            (None, GradSpace::Probs) => BackwardInput::Probs(view),
            (None, GradSpace::LogProbs) => BackwardInput::LogProbs(view),
        };
        kernels.record(
            enc,
            &BackwardJob {
                input,
                grad: g.slice(),
                tau: tau_binding(tau, &t),
                out: o.slice(),
                status: None,
            },
        )?;
        o.finish(enc);
        Ok(())
    })?;
    Ok(out)
}

/// Gumbel-max (`top` 1) or Gumbel-top-k indices per row, as an i32 `rows x top` tensor.
pub(crate) fn sample(
    logits: &CubeTensor,
    rows: u64,
    k: u64,
    top: u32,
    tau: &Tau,
    stream: Stream,
    noise: Noise,
) -> Result<CubeTensor, Error> {
    let out = empty(logits, vec![rows as usize, top as usize], DType::I32);
    if rows == 0 {
        return Ok(out);
    }
    let shared = shared_for(logits)?;
    let sampler = shared.gpu.sampler()?;
    let l = bind(logits)?;
    let t = bind_tau(tau)?;
    let mut inputs = vec![&l];
    inputs.extend(t.as_ref());
    let o = Out::new(&shared, bind(&out)?, &inputs);
    shared.submit(logits, |enc| {
        sampler.record(
            enc,
            &SampleJob {
                logits: LogitsView::f32(l.slice(), rows, k),
                top,
                tau: tau_binding(tau, &t),
                stream,
                noise,
                out: o.slice(),
            },
        )?;
        o.finish(enc);
        Ok(())
    })?;
    Ok(out)
}

/// LLM token sampling: one i32 token per row (`-1` = `NO_INDEX` for a bad row), under the
/// per-row parameters `params` (already checked; `TokenRowParams`, 48 bytes a row). No
/// processing chain (mask, bias, penalty state): `crate::sample_tokens` refuses those fields.
pub(crate) fn sample_tokens(
    logits: &CubeTensor,
    rows: u64,
    k: u64,
    params: &[gumbel_wgpu::TokenRowParams],
    noise: Noise,
) -> Result<CubeTensor, Error> {
    let out = empty(logits, vec![rows as usize], DType::I32);
    if rows == 0 {
        return Ok(out);
    }
    let shared = shared_for(logits)?;
    let sampler = shared.gpu.token_sampler()?;
    let l = bind(logits)?;
    // The per-row parameters: a small upload into a buffer of this call's own.
    let bytes: &[u8] = bytemuck::cast_slice(params);
    let row_params = shared.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("gumbel-wgpu-burn token params"),
        size: bytes.len() as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    shared.queue.write_buffer(&row_params, 0, bytes);
    let o = Out::new(&shared, bind(&out)?, &[&l]);
    shared.submit(logits, |enc| {
        sampler.record(
            enc,
            &TokenJob {
                noise,
                ..TokenJob::new(
                    LogitsView::f32(l.slice(), rows, k),
                    row_params.slice(..),
                    o.slice(),
                )
            },
        )?;
        o.finish(enc);
        Ok(())
    })?;
    Ok(out)
}

/// The Gumbel noise of `stream` the fused kernels use, as a `rows x k` f32 tensor beside `like`
/// (element `j` of row `r` from word `r * k + j`).
pub(crate) fn gumbel_noise(
    like: &CubeTensor,
    rows: u64,
    k: u64,
    stream: Stream,
) -> Result<CubeTensor, Error> {
    let out = empty(like, vec![rows as usize, k as usize], DType::F32);
    if rows * k == 0 {
        return Ok(out);
    }
    let shared = shared_for(like)?;
    let fill = shared.gpu.random_fill()?;
    let o = bind(&out)?;
    shared.submit(like, |enc| {
        fill.record(
            enc,
            &RandomJob {
                kind: RandomKind::Gumbel,
                stream,
                out: o.range(0, rows * k * 4),
            },
        )
    })?;
    Ok(out)
}
