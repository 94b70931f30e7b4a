//! Random fills on the GPU: Philox words, uniforms and Gumbel noise (`shaders/random.wgsl`).

use crate::family::{
    FamilyCore, FamilySpec, KernelFamily, Params, check_slice, take, uniform_params,
};
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

uniform_params! {
    struct RandomParams {
        key_lo: u32,
        key_hi: u32,
        block0_lo: u32,
        block0_hi: u32,
        phase: u32,
        len: u32,
        /// Element index of the job's first element in the `out` binding.
        out_base: u32,
        _pad: u32,
    }
}

/// One random fill at the buffer level: `kind` numbers from `stream` into every 4-byte element
/// of `out` (element `n` from word `n`).
#[derive(Clone, Copy, Debug)]
pub struct RandomJob<'a> {
    /// Words, uniforms or Gumbel noise.
    pub kind: RandomKind,
    /// The stream: element `n` of `out` gets word `n`.
    pub stream: Stream,
    /// The output, `out.size() / 4` elements of 4 bytes (u32 words or f32 numbers), at any
    /// 4-byte offset of a buffer with `STORAGE` usage.
    pub out: wgpu::BufferSlice<'a>,
}

/// The random-fill kernels (`shaders/random.wgsl`): own their bind-group layout and pipelines.
/// Get them with [`Gpu::random_fill`].
pub struct RandomFill {
    core: FamilyCore,
    fill: [wgpu::ComputePipeline; 3],
    transform: [wgpu::ComputePipeline; 2],
}

impl KernelFamily for RandomFill {
    const SPEC: FamilySpec = FamilySpec {
        name: "random",
        source: include_str!("../shaders/random.wgsl"),
        params: RandomParams::WGSL,
        storage_read_only: &[false],
        entry_points: &[
            "fill_words",
            "fill_uniform",
            "fill_gumbel",
            "transform_uniform",
            "transform_gumbel",
        ],
        stepped: false,
    };

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        let [words, uniform, gumbel, to_uniform, to_gumbel] = take(pipelines)?;
        Ok(RandomFill {
            core,
            fill: [words, uniform, gumbel],
            transform: [to_uniform, to_gumbel],
        })
    }
}

impl RandomFill {
    /// Records the fill `job` into `encoder`; never submits. Outputs longer than one storage
    /// binding are filled by several dispatches; the stream contract makes the result
    /// independent of the split. `Err` if `out` is not 4-byte aligned or lacks `STORAGE` usage.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &RandomJob<'_>,
    ) -> Result<(), Error> {
        let pipeline = &self.fill[match job.kind {
            RandomKind::Words => 0,
            RandomKind::Uniform => 1,
            RandomKind::Gumbel => 2,
        }];
        self.record_chunks(encoder, pipeline, job.stream, job.out, |len, phase| {
            (len + u64::from(phase)).div_ceil(4)
        })
    }

    /// Records the in-place map of the words in `out` to uniforms or Gumbel noise (`kind` must
    /// not be [`RandomKind::Words`]). Tests drive the word maps with this.
    #[doc(hidden)]
    pub fn record_transform(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        kind: RandomKind,
        out: wgpu::BufferSlice<'_>,
    ) -> Result<(), Error> {
        let pipeline = match kind {
            RandomKind::Words => {
                return Err(Error::InvalidArgument(
                    "kind: a transform maps words to numbers".into(),
                ));
            }
            RandomKind::Uniform => &self.transform[0],
            RandomKind::Gumbel => &self.transform[1],
        };
        self.record_chunks(encoder, pipeline, Stream::new(0), out, |len, _| len)
    }

    fn record_chunks(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        stream: Stream,
        out: wgpu::BufferSlice<'_>,
        invocations: impl Fn(u64, u32) -> u64,
    ) -> Result<(), Error> {
        check_slice("out", out, 0)?;
        let len = out.size() / 4;
        // One "row" per element: chunks of whole elements that fit a binding.
        let chunk = self.core.rows_per_dispatch(len, 1)?;
        self.core.scoped(|| {
            let mut start = 0u64;
            while start < len {
                let n = (len - start).min(chunk);
                let [key_lo, key_hi, block0_lo, block0_hi, phase] =
                    stream.advance(start).kernel_words();
                let window = self.core.window(out, start, n, 4);
                let params = RandomParams {
                    key_lo,
                    key_hi,
                    block0_lo,
                    block0_hi,
                    phase,
                    len: n as u32,
                    out_base: window.base,
                    _pad: 0,
                };
                let groups = invocations(n, phase).div_ceil(u64::from(WG_SIZE));
                self.core
                    .dispatch(encoder, &params, &[window.binding], &[(pipeline, groups)])?;
                start += n;
            }
            Ok(())
        })
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
        let out = self.pooled_storage("random out", bytes)?;
        self.run_and_read(
            |enc| {
                kernels.record(
                    enc,
                    &RandomJob {
                        kind,
                        stream,
                        out: out.slice(..bytes),
                    },
                )
            },
            &out,
            len,
        )
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
        self.submit(|enc| kernels.record_transform(enc, kind, buf.slice(..)))?;
        self.read_buffer(&buf, words.len())
    }
}
