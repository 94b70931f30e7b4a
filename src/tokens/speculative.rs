//! Speculative verification (`shaders/speculative.wgsl`): the buffer-level family and the slice
//! level; the stream words it uses are in the module docs ("Streams and noise").

use crate::family::{
    ALIGN_WORDS, FamilyCore, FamilySpec, KernelFamily, check_no_alias, check_slice, take,
    uniform_params,
};
use crate::sample::{SPLIT_MAX_ROWS, SPLIT_MIN_CHUNK, SPLIT_MIN_K, SPLIT_TARGET_GROUPS};
use crate::shader::WG_SIZE;
use crate::{Error, Gpu, Noise, SampleStrategy, Stream};
use std::sync::Arc;

/// The result of [`crate::Gpu::verify_speculative`] / [`crate::cpu::verify_speculative`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpeculativeResult {
    /// Per row, how many drafts were accepted (`0..=n`).
    pub accepted: Vec<u32>,
    /// `rows * (n + 1)`: row `r`'s accepted drafts, then the emitted token, then
    /// [`crate::NO_INDEX`].
    pub tokens: Vec<u32>,
}

/// Checks the arguments of speculative verification; returns `(rows, n)`.
pub(crate) fn check_speculative(
    draft_tokens: &[u32],
    draft_probs: &[f32],
    target_probs: &[f32],
    k: usize,
    rows: usize,
) -> Result<(usize, usize), Error> {
    if k == 0 {
        return Err(Error::InvalidArgument(
            "k (categories per row) must be at least 1".into(),
        ));
    }
    if rows == 0 {
        return Err(Error::InvalidArgument(
            "streams: one per row is needed (no rows given)".into(),
        ));
    }
    if !draft_tokens.len().is_multiple_of(rows) {
        return Err(Error::InvalidArgument(format!(
            "draft_tokens: {} tokens do not split into {rows} rows",
            draft_tokens.len()
        )));
    }
    let n = draft_tokens.len() / rows;
    if draft_probs.len() != rows * n * k {
        return Err(Error::InvalidArgument(format!(
            "draft_probs: {} values, rows x n x k = {rows} x {n} x {k} needed",
            draft_probs.len()
        )));
    }
    if target_probs.len() != rows * (n + 1) * k {
        return Err(Error::InvalidArgument(format!(
            "target_probs: {} values, rows x (n + 1) x k = {rows} x {} x {k} needed",
            target_probs.len(),
            n + 1
        )));
    }
    if let Some(i) = draft_tokens.iter().position(|&d| d as usize >= k) {
        return Err(Error::InvalidArgument(format!(
            "draft_tokens[{i}] = {} is not below k = {k}",
            draft_tokens[i]
        )));
    }
    for (name, p) in [("draft_probs", draft_probs), ("target_probs", target_probs)] {
        if let Some(i) = p.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
            return Err(Error::InvalidArgument(format!(
                "{name}[{i}] = {} must be finite and >= 0",
                p[i]
            )));
        }
    }
    for (c, law) in target_probs.chunks(k).enumerate() {
        if !law.iter().any(|&x| x > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "target_probs: row {} position {} has no positive probability",
                c / (n + 1),
                c % (n + 1)
            )));
        }
    }
    Ok((rows, n))
}

// Speculative verification.
/// A stream as the 4 words a device buffer of streams holds per row: seed lo, seed hi, offset
/// lo, offset hi.
pub fn stream_words(stream: Stream) -> [u32; 4] {
    [
        stream.seed as u32,
        (stream.seed >> 32) as u32,
        stream.offset as u32,
        (stream.offset >> 32) as u32,
    ]
}

/// A buffer-level speculative verification job for [`SpeculativeVerifier::record`] (see
/// [`crate::cpu::verify_speculative`] for the rule and the stream words used).
#[derive(Clone, Copy, Debug)]
pub struct SpeculativeJob<'a> {
    /// Rows.
    pub rows: u64,
    /// Drafts per row.
    pub n: u64,
    /// Categories.
    pub k: u64,
    /// `rows * n` u32 draft tokens (a token >= k ends its row: nothing is emitted, the slot
    /// holds [`crate::NO_INDEX`]).
    pub draft_tokens: wgpu::BufferSlice<'a>,
    /// `rows x n x k` f32 draft probabilities (a bad one the row reads ends it: see
    /// [`SpeculativeVerifier::record`]).
    pub draft_probs: wgpu::BufferSlice<'a>,
    /// `rows x (n + 1) x k` f32 target probabilities (a bad one the row reads ends it).
    pub target_probs: wgpu::BufferSlice<'a>,
    /// `rows` streams, 4 words each ([`stream_words`]).
    pub streams: wgpu::BufferSlice<'a>,
    /// Receives `rows` u32 counts of accepted drafts.
    pub accepted: wgpu::BufferSlice<'a>,
    /// Receives `rows * (n + 1)` u32: accepted drafts, the emitted token, then `NO_INDEX`.
    pub tokens: wgpu::BufferSlice<'a>,
    /// Words per noise element: position `i` owns elements `i (k + 1) ..= i (k + 1) + k` of the
    /// row's stream (the categories' Gumbel noise, then the acceptance uniform), word `e` each
    /// under [`Noise::Bits32`], words `2e` and `2e + 1` under [`Noise::Bits64`]; a step uses
    /// `(n + 1) (k + 1)` words per row, or twice that (module docs, "Streams and noise").
    pub noise: Noise,
}

uniform_params! {
    struct SpecParams {
        rows: u32,
        k: u32,
        n: u32,
        draft_base: u32,
        q_base: u32,
        p_base: u32,
        stream_base: u32,
        accepted_base: u32,
        out_base: u32,
        noise64: u32,
        chunks: u32,
    }
}

/// The speculative verification kernels (`shaders/speculative.wgsl`): one workgroup per row, or
/// when rows are too few to fill the device and long enough (as for Gumbel-max sampling,
/// [`crate::Sampler::strategy_for`]), each row's draw split over several workgroups and a
/// combine pass; both give the same bits.
pub struct SpeculativeVerifier {
    core: FamilyCore,
    row: wgpu::ComputePipeline,
    partial: wgpu::ComputePipeline,
    combine: wgpu::ComputePipeline,
}

impl KernelFamily for SpeculativeVerifier {
    const SPEC: FamilySpec = FamilySpec {
        name: "speculative",
        source: include_str!("../../shaders/speculative.wgsl"),
        params: <SpecParams as crate::family::Params>::WGSL,
        storage_read_only: &[true, true, true, true, false, false, false],
        entry_points: &["verify_row", "verify_partial", "verify_combine"],
        stepped: false,
    };

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        let [row, partial, combine] = take(pipelines)?;
        Ok(SpeculativeVerifier {
            core,
            row,
            partial,
            combine,
        })
    }
}

impl SpeculativeVerifier {
    /// Records the verification of `job.rows` rows into `encoder`; never submits. Probabilities
    /// are not checked on the host here (the slice level checks them); on the device a bad one
    /// (NaN, infinite, or negative other than `-0`) gives a defined output: if the acceptance
    /// walk of a row reads one (`p_i(d_i)` or `q_i(d_i)` of its draft at position `i`), or the
    /// law drawn at the position `i` where the walk stops holds one (`p_i`, and `q_i` when the
    /// draw is from the residual), the row gets `accepted = i` and [`crate::NO_INDEX`] in slots
    /// `i..=n`, as for an out-of-range draft token. Values the row never reads do not matter.
    ///
    /// Rows too few to fill a GPU (fewer than 128) with `k >= 8192` take the split path: each
    /// row's draw spread over up to `1024 / rows` workgroups (at least 4096 categories each),
    /// with a scratch buffer the verifier keeps across calls (`rows * (1 + 2 * chunks) * 8`
    /// bytes per dispatch). The result does not depend on the path.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &SpeculativeJob<'_>,
    ) -> Result<(), Error> {
        self.record_with(encoder, job, SampleStrategy::Auto)
    }

    /// The path [`SpeculativeVerifier::record`] takes for `rows` rows of `k` categories:
    /// [`SampleStrategy::RowPerWorkgroup`] or [`SampleStrategy::SplitRow`] (the rule of
    /// [`crate::Sampler::strategy_for`] for Gumbel-max: `k >= 8192` and fewer than 128 rows,
    /// about 1024 workgroups in all, at least 4096 categories per chunk). Forced strategies
    /// are returned as given, `SplitRow { chunks: 0 }` with its chunk count filled in.
    #[doc(hidden)]
    pub fn strategy_for(rows: u64, k: u64, strategy: SampleStrategy) -> SampleStrategy {
        let (rows, k) = (rows.max(1), k.max(1));
        let auto_chunks = || SampleStrategy::SplitRow {
            chunks: SPLIT_TARGET_GROUPS
                .div_ceil(rows)
                .min(k.div_ceil(SPLIT_MIN_CHUNK))
                .max(1) as u32,
        };
        match strategy {
            SampleStrategy::Auto if k >= SPLIT_MIN_K && rows < SPLIT_MAX_ROWS => auto_chunks(),
            SampleStrategy::Auto => SampleStrategy::RowPerWorkgroup,
            SampleStrategy::SplitRow { chunks: 0 } => auto_chunks(),
            s => s,
        }
    }

    /// [`SpeculativeVerifier::record`] on a chosen path: [`SampleStrategy::Auto`],
    /// [`SampleStrategy::RowPerWorkgroup`] or [`SampleStrategy::SplitRow`] (tests reach both
    /// paths on every shape with it); the other strategies are an `Err`.
    #[doc(hidden)]
    pub fn record_with(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &SpeculativeJob<'_>,
        strategy: SampleStrategy,
    ) -> Result<(), Error> {
        let (rows, n, k) = (job.rows, job.n, job.k);
        if k == 0 {
            return Err(Error::InvalidArgument(
                "k (categories per row) must be at least 1".into(),
            ));
        }
        // Words per noise element: the shader's word indices within a row, up to
        // per * (n + 1) * (k + 1) - 1, must fit one u32.
        let per = job.noise.words();
        // Checked throughout: n and k come from the caller, and u64::MAX must be an Err, not
        // an overflow (found by the fuzz target).
        if n.checked_add(1)
            .zip(k.checked_add(1))
            .and_then(|(a, b)| a.checked_mul(b))
            .and_then(|w| w.checked_mul(per))
            .is_none_or(|w| w > u64::from(u32::MAX))
        {
            return Err(Error::TooLarge(format!(
                "{per} x (n + 1) x (k + 1) stream words per row (n = {n}, k = {k}) exceed 2^32"
            )));
        }
        if rows > u64::from(u32::MAX) {
            return Err(Error::TooLarge(format!("{rows} rows in one job")));
        }
        // (n + 1) (k + 1) < 2^32 and rows < 2^32, but rows x (n + 1) x k x 4 bytes can still
        // pass 2^64.
        let bytes = |what: &str, factors: [u64; 3]| {
            factors
                .iter()
                .try_fold(4u64, |a, &f| a.checked_mul(f))
                .ok_or_else(|| {
                    Error::TooLarge(format!(
                        "{what}: {rows} rows with n = {n}, k = {k} exceed 2^64 bytes"
                    ))
                })
        };
        check_slice(
            "draft_tokens",
            job.draft_tokens,
            bytes("draft_tokens", [rows, n, 1])?,
        )?;
        check_slice(
            "draft_probs",
            job.draft_probs,
            bytes("draft_probs", [rows, n, k])?,
        )?;
        check_slice(
            "target_probs",
            job.target_probs,
            bytes("target_probs", [rows, n + 1, k])?,
        )?;
        check_slice("streams", job.streams, rows * 16)?;
        check_slice("accepted", job.accepted, rows * 4)?;
        check_slice("tokens", job.tokens, bytes("tokens", [rows, n + 1, 1])?)?;
        check_no_alias(
            &[
                ("draft_tokens", Some(job.draft_tokens)),
                ("draft_probs", Some(job.draft_probs)),
                ("target_probs", Some(job.target_probs)),
                ("streams", Some(job.streams)),
            ],
            &[
                ("accepted", Some(job.accepted)),
                ("tokens", Some(job.tokens)),
            ],
        )?;
        // On a CPU adapter a row per workgroup already keeps its few cores busy (the split
        // path measured up to 2x slower on lavapipe).
        let strategy = match strategy {
            SampleStrategy::Auto if self.core.cpu => SampleStrategy::RowPerWorkgroup,
            s => Self::strategy_for(rows, k, s),
        };
        let chunks = match strategy {
            SampleStrategy::RowPerWorkgroup => 0,
            SampleStrategy::SplitRow { chunks } => u64::from(chunks),
            s => {
                return Err(Error::InvalidArgument(format!(
                    "strategy {s:?}: speculative verification runs one workgroup per row or \
                     split rows"
                )));
            }
        };
        if rows == 0 {
            return Ok(());
        }
        // A draw walks (per * k + 6) / 4 blocks at most (the phase's lanes and a straddling
        // pair included), 5 loop iterations each (the block, its 4 lanes), over the workgroup;
        // a reduction runs 8 tree levels (WG_SIZE = 256).
        let blocks = (per * k + 6) / 4;
        let wg = u64::from(WG_SIZE);
        let iterations = if chunks == 0 {
            // Two draws at most, then the sequential acceptance walk.
            2 * (blocks.div_ceil(wg) * 5 + 8) + n
        } else {
            // The partial pass: the acceptance walk spread over the workgroup, then one scan of
            // a chunk; the combine pass: the chunks' partials and the row's n + 1 slots.
            let partial = n.div_ceil(wg) + blocks.div_ceil(chunks).div_ceil(wg) * 5 + 3 * 8;
            let combine = chunks.div_ceil(wg) + 2 * 8 + (n + 1).div_ceil(wg);
            partial.max(combine)
        };
        self.core.check_loop_budget(
            iterations,
            &format!("verification of {n} drafts over {k} categories"),
        )?;
        // Scratch pairs per row on the split path: the verdict, then 2 per chunk.
        let pairs = if chunks == 0 { 0 } else { 1 + 2 * chunks };
        let rows_per_dispatch = self
            .core
            .rows_per_dispatch(rows, ((n + 1) * k + 4).max(2 * pairs))?;
        let core = &self.core;
        core.scoped(|| {
            let scratch = if pairs > 0 {
                Some(core.scratch(rows.min(rows_per_dispatch) * pairs * 8)?)
            } else {
                None
            };
            let mut r0 = 0;
            while r0 < rows {
                let m = (rows - r0).min(rows_per_dispatch);
                let drafts = core.window(job.draft_tokens, r0 * n, m * n, 4);
                let q = core.window(job.draft_probs, r0 * n * k, m * n * k, 4);
                let p = core.window(job.target_probs, r0 * (n + 1) * k, m * (n + 1) * k, 4);
                let streams = core.window(job.streams, r0 * 4, m * 4, 4);
                let acc = core.window(job.accepted, r0, m, 4);
                let out = core.window(job.tokens, r0 * (n + 1), m * (n + 1), 4);
                let params = SpecParams {
                    rows: m as u32,
                    k: k as u32,
                    n: n as u32,
                    draft_base: drafts.base,
                    q_base: q.base,
                    p_base: p.base,
                    stream_base: streams.base,
                    accepted_base: acc.base,
                    out_base: out.base,
                    noise64: u32::from(job.noise == Noise::Bits64),
                    chunks: chunks as u32,
                };
                // This dispatch's rows only: a grown scratch buffer may pass a binding's limit.
                let scratch =
                    scratch
                        .as_ref()
                        .map_or(core.unused(7).binding, |s| wgpu::BufferBinding {
                            buffer: s,
                            offset: 0,
                            size: wgpu::BufferSize::new(m * pairs * 8),
                        });
                let bindings = [
                    drafts.binding,
                    q.binding,
                    p.binding,
                    streams.binding,
                    acc.binding,
                    out.binding,
                    scratch,
                ];
                if chunks == 0 {
                    core.dispatch(encoder, &params, &bindings, &[(&self.row, m)])?;
                } else {
                    core.dispatch(
                        encoder,
                        &params,
                        &bindings,
                        &[(&self.partial, m * chunks), (&self.combine, m)],
                    )?;
                }
                r0 += m;
            }
            Ok(())
        })
    }
}

impl Gpu {
    /// The speculative verification kernel of this device (built on first use).
    pub fn speculative_verifier(&self) -> Result<Arc<SpeculativeVerifier>, Error> {
        self.family::<SpeculativeVerifier>()
    }
    /// Speculative verification (blocking; Leviathan et al. 2023, Chen et al. 2023): per row,
    /// accept draft `i` while `u_i < p_i(d_i) / q_i(d_i)`, then emit a draw from
    /// `normalise(max(0, p_i - q_i))` at the first rejection, or a bonus draw from `p_n` after `n`
    /// acceptances. Whatever the draft law, the first emitted token follows `p_0`.
    /// `rows = streams.len()`, `n = draft_tokens.len() / rows`; `draft_probs` is `rows x n x k`,
    /// `target_probs` `rows x (n + 1) x k` (laws; they need not sum to 1). See
    /// [`crate::cpu::verify_speculative`] for the stream words each decision uses
    /// ([`Noise::Bits32`]; [`Gpu::verify_speculative_with`] for a choice).
    ///
    /// `Err` naming the argument for lengths that do not fit, a draft token `>= k`, and negative,
    /// NaN or infinite probabilities.
    pub fn verify_speculative(
        &self,
        draft_tokens: &[u32],
        draft_probs: &[f32],
        target_probs: &[f32],
        k: usize,
        streams: &[Stream],
    ) -> Result<SpeculativeResult, Error> {
        self.verify_speculative_with(
            draft_tokens,
            draft_probs,
            target_probs,
            k,
            streams,
            Noise::Bits32,
        )
    }

    /// [`Gpu::verify_speculative`] with a choice of [`Noise`]: under [`Noise::Bits64`] every
    /// noise element takes two stream words (see the module docs, "Streams and noise", and
    /// [`crate::cpu::verify_speculative_with`], its reference).
    pub fn verify_speculative_with(
        &self,
        draft_tokens: &[u32],
        draft_probs: &[f32],
        target_probs: &[f32],
        k: usize,
        streams: &[Stream],
        noise: Noise,
    ) -> Result<SpeculativeResult, Error> {
        let (rows, n) =
            check_speculative(draft_tokens, draft_probs, target_probs, k, streams.len())?;
        let kernels = self.speculative_verifier()?;
        let words: Vec<u32> = streams.iter().flat_map(|&s| stream_words(s)).collect();
        // Buffers of at least one word: n = 0 leaves the drafts empty.
        let d = self.pooled_upload("draft tokens", draft_tokens)?;
        let q = self.pooled_upload("draft probs", draft_probs)?;
        let p = self.pooled_upload("target probs", target_probs)?;
        let s = self.pooled_upload("streams", &words)?;
        // One output buffer: the accepted counts, then (from a multiple of 256 bytes, so the two
        // writable bindings never overlap: `family::check_no_alias`) the tokens.
        let t0 = rows.next_multiple_of(ALIGN_WORDS);
        let len = t0 + rows * (n + 1);
        let out = self.pooled_storage("speculative out", len as u64 * 4)?;
        fn nonempty(b: &wgpu::Buffer, bytes: usize) -> wgpu::BufferSlice<'_> {
            b.slice(..bytes.max(4) as u64)
        }
        let job = SpeculativeJob {
            rows: rows as u64,
            n: n as u64,
            k: k as u64,
            draft_tokens: nonempty(&d, draft_tokens.len() * 4),
            draft_probs: nonempty(&q, draft_probs.len() * 4),
            target_probs: nonempty(&p, target_probs.len() * 4),
            streams: nonempty(&s, words.len() * 4),
            accepted: out.slice(..rows as u64 * 4),
            tokens: out.slice(t0 as u64 * 4..len as u64 * 4),
            noise,
        };
        let w: Vec<u32> = self.run_and_read(|enc| kernels.record(enc, &job), &out, len)?;
        Ok(SpeculativeResult {
            accepted: w[..rows].to_vec(),
            tokens: w[t0..].to_vec(),
        })
    }
}
