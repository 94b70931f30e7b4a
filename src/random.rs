//! Random fills on the GPU: Philox words, uniforms and Gumbel noise (`shaders/random.wgsl`).

use crate::gpu::{KernelFamily, check_storage, grid, params_buffer, scoped};
use crate::shader::WG_SIZE;
use crate::{Error, Gpu, Stream};
use std::sync::Arc;

/// What a random fill writes for element `n`, from word `n` of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RandomKind {
    /// The raw 32-bit Philox word.
    Words,
    /// A uniform in the open interval (0, 1) (see the crate docs for the exact map).
    Uniform,
    /// Gumbel(0, 1) noise, always finite.
    Gumbel,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct RandomParams {
    key_lo: u32,
    key_hi: u32,
    block0_lo: u32,
    block0_hi: u32,
    phase: u32,
    len: u32,
    _pad: [u32; 2],
}

/// Size of [`RandomParams`], checked against the WGSL struct of the same name by `tests/shaders.rs`.
pub(crate) const PARAMS_SIZE: usize = std::mem::size_of::<RandomParams>();

impl RandomParams {
    fn new(stream: Stream, len: u32) -> Self {
        let [key_lo, key_hi, block0_lo, block0_hi, phase] = stream.kernel_words();
        RandomParams {
            key_lo,
            key_hi,
            block0_lo,
            block0_hi,
            phase,
            len,
            _pad: [0; 2],
        }
    }
}

/// The random-fill kernels: owns their bind-group layout and pipelines.
pub struct RandomFill {
    device: wgpu::Device,
    layout: wgpu::BindGroupLayout,
    fill: [wgpu::ComputePipeline; 3],
    transform: [wgpu::ComputePipeline; 2],
    max_chunk: u64,
    max_groups: u32,
}

impl KernelFamily for RandomFill {
    fn build(gpu: &Gpu) -> Result<Self, Error> {
        let module = gpu.shader_module("random")?;
        let layout = gpu.storage_layout("random", &[false]);
        let [
            fill_words,
            fill_uniform,
            fill_gumbel,
            transform_uniform,
            transform_gumbel,
        ] = gpu.pipelines(
            &module,
            &layout,
            [
                "fill_words",
                "fill_uniform",
                "fill_gumbel",
                "transform_uniform",
                "transform_gumbel",
            ],
        )?;
        Ok(RandomFill {
            device: gpu.device().clone(),
            layout,
            fill: [fill_words, fill_uniform, fill_gumbel],
            transform: [transform_uniform, transform_gumbel],
            max_chunk: gpu.max_binding_elements(),
            max_groups: gpu.limits().max_compute_workgroups_per_dimension,
        })
    }
}

impl RandomFill {
    /// Records a fill of elements `0..len` of `out` (4 bytes each) with `kind` numbers from
    /// `stream`. Never submits. Lengths beyond one storage binding are split into several
    /// dispatches; the stream contract makes the result independent of the split.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        kind: RandomKind,
        stream: Stream,
        out: &wgpu::Buffer,
        len: u64,
    ) -> Result<(), Error> {
        let pipeline = match kind {
            RandomKind::Words => &self.fill[0],
            RandomKind::Uniform => &self.fill[1],
            RandomKind::Gumbel => &self.fill[2],
        };
        self.record_chunks(encoder, pipeline, stream, out, len, |chunk_len, phase| {
            (chunk_len + u64::from(phase)).div_ceil(4)
        })
    }

    /// Records the in-place map of the words in `out[0..len]` to uniforms or Gumbel noise
    /// (`kind` must not be [`RandomKind::Words`]). Tests drive the word maps with this.
    #[doc(hidden)]
    pub fn record_transform(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        kind: RandomKind,
        out: &wgpu::Buffer,
        len: u64,
    ) -> Result<(), Error> {
        let pipeline = match kind {
            RandomKind::Words => {
                return Err(Error::InvalidArgument(
                    "a transform maps words to numbers".into(),
                ));
            }
            RandomKind::Uniform => &self.transform[0],
            RandomKind::Gumbel => &self.transform[1],
        };
        self.record_chunks(
            encoder,
            pipeline,
            Stream::new(0),
            out,
            len,
            |chunk_len, _| chunk_len,
        )
    }

    fn record_chunks(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        stream: Stream,
        out: &wgpu::Buffer,
        len: u64,
        invocations: impl Fn(u64, u32) -> u64,
    ) -> Result<(), Error> {
        let need = len
            .checked_mul(4)
            .ok_or_else(|| Error::TooLarge(format!("{len} elements")))?;
        check_storage("output", out, need)?;
        scoped(&self.device, || {
            self.record_dispatches(encoder, pipeline, stream, out, len, invocations)
        })
    }

    fn record_dispatches(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        stream: Stream,
        out: &wgpu::Buffer,
        len: u64,
        invocations: impl Fn(u64, u32) -> u64,
    ) -> Result<(), Error> {
        let mut start = 0u64;
        while start < len {
            let chunk = (len - start).min(self.max_chunk);
            let s = stream.advance(start);
            let params = RandomParams::new(s, chunk as u32);
            let threads = invocations(chunk, params.phase);
            let groups = u32::try_from(threads.div_ceil(u64::from(WG_SIZE)))
                .map_err(|_| Error::TooLarge(format!("{len} elements in one dispatch")))?;
            let (gx, gy) = grid(groups, self.max_groups);
            let uniform = params_buffer(&self.device, &params)?;
            let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("random"),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: uniform.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: out,
                            offset: start * 4,
                            size: wgpu::BufferSize::new((chunk * 4).next_multiple_of(4)),
                        }),
                    },
                ],
            });
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("random"),
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
            drop(pass);
            start += chunk;
        }
        Ok(())
    }
}

impl Gpu {
    /// The random-fill kernels of this device (built on first use).
    pub fn random_fill(&self) -> Result<Arc<RandomFill>, Error> {
        self.family::<RandomFill>()
    }

    fn random_vec<T: bytemuck::Pod>(
        &self,
        kind: RandomKind,
        stream: Stream,
        len: usize,
    ) -> Result<Vec<T>, Error> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let bytes = (len as u64)
            .checked_mul(4)
            .ok_or_else(|| Error::TooLarge(format!("{len} elements")))?;
        let kernels = self.random_fill()?;
        let out = self.storage_buffer("random out", bytes)?;
        self.submit(|enc| kernels.record(enc, kind, stream, &out, len as u64))?;
        self.read_buffer(&out, len)
    }

    /// Words `0..len` of `stream` (blocking).
    pub fn random_u32(&self, stream: Stream, len: usize) -> Result<Vec<u32>, Error> {
        self.random_vec(RandomKind::Words, stream, len)
    }

    /// Uniforms in (0, 1) from words `0..len` of `stream` (blocking).
    pub fn uniform(&self, stream: Stream, len: usize) -> Result<Vec<f32>, Error> {
        self.random_vec(RandomKind::Uniform, stream, len)
    }

    /// Gumbel(0, 1) noise from words `0..len` of `stream` (blocking); always finite.
    pub fn gumbel(&self, stream: Stream, len: usize) -> Result<Vec<f32>, Error> {
        self.random_vec(RandomKind::Gumbel, stream, len)
    }

    /// Applies the word -> uniform or word -> Gumbel map to the given words on the GPU.
    #[doc(hidden)]
    pub fn transform_words(&self, kind: RandomKind, words: &[u32]) -> Result<Vec<f32>, Error> {
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let kernels = self.random_fill()?;
        let buf = self.upload("words", words)?;
        self.submit(|enc| kernels.record_transform(enc, kind, &buf, words.len() as u64))?;
        self.read_buffer(&buf, words.len())
    }
}
