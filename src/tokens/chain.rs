//! The processing stages on the device (`shaders/token_process.wgsl`: mask, logit bias,
//! penalties) and the per-request penalty state, updated on the device from the sampled tokens
//! (`shaders/penalty_update.wgsl`). The reference is [`crate::cpu::processed_logits`].

use super::mask_words;
use super::sampler::TokenJob;
use crate::Error;
use crate::family::uniform_params;
use crate::family::{FamilyCore, FamilySpec, KernelFamily, check_no_alias, check_slice, take};
use crate::shader::WG_SIZE;

/// A per-row sparse logit bias on the device: row `r`'s entries are
/// `entries[starts[r] .. starts[r + 1]]`, each two words `(token, bias as f32 bits)`; entries
/// for one token add up, in list order.
#[derive(Clone, Copy, Debug)]
pub struct TokenBias<'a> {
    /// `rows + 1` u32 entry indices, non-decreasing, the last at most the number of entries
    /// (else the row is a bad row: [`crate::TokenSampler::STATUS_BAD_PARAMS`]).
    pub starts: wgpu::BufferSlice<'a>,
    /// The `(token, bias)` pairs (8 bytes each; a token `>= k` or a bias that is not finite
    /// makes its row a bad row).
    pub entries: wgpu::BufferSlice<'a>,
}

/// The processing stages' device inputs of a [`TokenJob`] (module docs: mask, bias, penalties,
/// in that order); any of them `None` is off. With any of them on, the processing kernel writes
/// each row's processed logits into a scratch buffer of the pipeline before the sampler reads
/// them.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenChain<'a> {
    /// `rows * ceil(k / 32)` u32: bit `j % 32` of word `r * ceil(k / 32) + j / 32` set = token
    /// `j` allowed in row `r` (xgrammar's packed layout; bits past `k` ignored).
    pub allowed: Option<wgpu::BufferSlice<'a>>,
    /// The logit bias.
    pub bias: Option<TokenBias<'a>>,
    /// `rows * penalty_state_words(k)` u32: each row's penalty state (see
    /// [`penalty_state`]); the penalties of [`crate::TokenRowParams`] apply only with it.
    pub penalty_state: Option<wgpu::BufferSlice<'a>>,
}

impl TokenChain<'_> {
    /// Whether the processing kernel runs.
    pub(crate) fn is_on(&self) -> bool {
        self.allowed.is_some() || self.bias.is_some() || self.penalty_state.is_some()
    }

    /// Checks the views for `rows x k`; returns the number of bias entries.
    pub(crate) fn check(&self, rows: u64, k: u64) -> Result<u64, Error> {
        if let Some(a) = self.allowed {
            check_slice("allowed", a, rows * mask_words(k as usize) as u64 * 4)?;
        }
        if let Some(s) = self.penalty_state {
            check_slice(
                "penalty_state",
                s,
                rows * penalty_state_words(k as usize) as u64 * 4,
            )?;
        }
        let mut entries = 0;
        if let Some(b) = self.bias {
            check_slice("bias.starts", b.starts, (rows + 1) * 4)?;
            check_slice("bias.entries", b.entries, 4)?;
            entries = b.entries.size() / 8;
            if entries > u64::from(u32::MAX) {
                return Err(Error::TooLarge(format!("bias.entries: {entries} entries")));
            }
        }
        Ok(entries)
    }
}

/// Words of one row's penalty state over `k` tokens: `ceil(k / 32)` words of prompt-presence
/// bits (bit `j % 32` of word `j / 32`), then `k` u32 output counts.
pub fn penalty_state_words(k: usize) -> usize {
    mask_words(k) + k
}

/// One row's penalty state ([`penalty_state_words`] words) from a request's prompt and the
/// tokens it has generated so far: the initial state a decode loop uploads when a request
/// joins; [`crate::TokenSampler::record_penalty_update`] then counts each step's token on the
/// device. `Err` naming the argument for a token `>= k`.
pub fn penalty_state(k: usize, prompt: &[u32], output: &[u32]) -> Result<Vec<u32>, Error> {
    for (name, list) in [("prompt", prompt), ("output", output)] {
        if let Some(i) = list.iter().position(|&t| t as usize >= k) {
            return Err(Error::InvalidArgument(format!(
                "{name}[{i}] = {} is not below k = {k}",
                list[i]
            )));
        }
    }
    Ok(penalty_state_row(k, prompt, output))
}

/// [`penalty_state`] of checked tokens.
pub(crate) fn penalty_state_row(k: usize, prompt: &[u32], output: &[u32]) -> Vec<u32> {
    let mw = mask_words(k);
    let mut w = vec![0u32; mw + k];
    for &t in prompt {
        w[t as usize / 32] |= 1 << (t % 32);
    }
    for &t in output {
        w[mw + t as usize] = w[mw + t as usize].saturating_add(1);
    }
    w
}

uniform_params! {
    struct ProcessParams {
        rows: u32,
        k: u32,
        format: u32,
        logit_base: u32,
        row_base: u32,
        allowed_base: u32,
        mask_words: u32,
        bias_start_base: u32,
        bias_entry_base: u32,
        bias_entries: u32,
        state_base: u32,
        state_words: u32,
        proc_base: u32,
        flags: u32,
        stride: u32,
    }
}

const HAS_MASK: u32 = 1;
const HAS_BIAS: u32 = 2;
const HAS_STATE: u32 = 4;

/// The processing kernel (`shaders/token_process.wgsl`): one workgroup per row.
pub(crate) struct TokenProcessor {
    core: FamilyCore,
    row: wgpu::ComputePipeline,
}

impl KernelFamily for TokenProcessor {
    const SPEC: FamilySpec = FamilySpec {
        name: "token_process",
        source: include_str!("../../shaders/token_process.wgsl"),
        params: <ProcessParams as crate::family::Params>::WGSL,
        storage_read_only: &[true, true, true, true, true, true, false],
        entry_points: &["process_row"],
        stepped: false,
    };

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        let [row] = take(pipelines)?;
        Ok(TokenProcessor { core, row })
    }
}

impl TokenProcessor {
    /// Loop iterations per invocation: two passes over the row, invocation 0's bias entries.
    pub(crate) fn loop_iterations(&self, k: u64, entries: u64) -> u64 {
        2 * k.div_ceil(u64::from(WG_SIZE)) + entries
    }

    /// The scratch rows the sampler reads (`bytes` at least).
    pub(crate) fn scratch(&self, bytes: u64) -> Result<wgpu::Buffer, Error> {
        self.core.scratch(bytes)
    }

    /// Processes rows `r0 .. r0 + m` of `job` into rows `0 .. m` of `scratch`.
    pub(crate) fn record_dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &TokenJob<'_>,
        scratch: &wgpu::Buffer,
        r0: u64,
        m: u64,
    ) -> Result<(), Error> {
        let core = &self.core;
        let k = job.logits.k;
        let mw = mask_words(k as usize) as u64;
        let sw = penalty_state_words(k as usize) as u64;
        let stride = job.logits.row_stride();
        let logits = core.window(
            job.logits.data,
            r0 * stride,
            job.logits.span(m),
            job.logits.format.bytes(),
        );
        let rowp = core.window(job.row_params, r0 * 12, m * 12, 4);
        let c = &job.chain;
        let allowed = c
            .allowed
            .map_or_else(|| core.unused(3), |s| core.window(s, r0 * mw, m * mw, 4));
        let (starts, entries, n_entries) = match c.bias {
            Some(b) => {
                let n = b.entries.size() / 8;
                (
                    core.window(b.starts, r0, m + 1, 4),
                    core.window(b.entries, 0, (b.entries.size() / 4).max(1), 4),
                    n,
                )
            }
            None => (core.unused(4), core.unused(5), 0),
        };
        let state = c
            .penalty_state
            .map_or_else(|| core.unused(6), |s| core.window(s, r0 * sw, m * sw, 4));
        let proc = core.window(scratch.slice(..), 0, m * k, 4);
        let flags = if c.allowed.is_some() { HAS_MASK } else { 0 }
            | if c.bias.is_some() { HAS_BIAS } else { 0 }
            | if c.penalty_state.is_some() {
                HAS_STATE
            } else {
                0
            };
        let params = ProcessParams {
            rows: m as u32,
            k: k as u32,
            format: job.logits.format.code(),
            logit_base: logits.base,
            row_base: rowp.base,
            allowed_base: allowed.base,
            mask_words: mw as u32,
            bias_start_base: starts.base,
            bias_entry_base: entries.base,
            bias_entries: n_entries as u32,
            state_base: state.base,
            state_words: sw as u32,
            proc_base: proc.base,
            flags,
            stride: stride as u32,
        };
        core.dispatch(
            encoder,
            &params,
            &[
                logits.binding,
                rowp.binding,
                allowed.binding,
                starts.binding,
                entries.binding,
                state.binding,
                proc.binding,
            ],
            &[(&self.row, m)],
        )
    }
}

uniform_params! {
    struct UpdateParams {
        rows: u32,
        k: u32,
        token_base: u32,
        state_base: u32,
        state_words: u32,
        mask_words: u32,
    }
}

/// The penalty-state update (`shaders/penalty_update.wgsl`): one invocation per row.
pub(crate) struct PenaltyUpdater {
    core: FamilyCore,
    update: wgpu::ComputePipeline,
}

impl KernelFamily for PenaltyUpdater {
    const SPEC: FamilySpec = FamilySpec {
        name: "penalty_update",
        source: include_str!("../../shaders/penalty_update.wgsl"),
        params: <UpdateParams as crate::family::Params>::WGSL,
        storage_read_only: &[true, false],
        entry_points: &["update_counts"],
        stepped: false,
    };

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        let [update] = take(pipelines)?;
        Ok(PenaltyUpdater { core, update })
    }
}

impl PenaltyUpdater {
    pub(crate) fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        tokens: wgpu::BufferSlice<'_>,
        state: wgpu::BufferSlice<'_>,
        rows: u64,
        k: u64,
    ) -> Result<(), Error> {
        if k == 0 || k > u64::from(u32::MAX) / 2 {
            return Err(Error::InvalidArgument(format!(
                "k = {k}: categories per row must be in 1..2^31"
            )));
        }
        if rows > u64::from(u32::MAX) {
            return Err(Error::TooLarge(format!("{rows} rows in one job")));
        }
        let sw = penalty_state_words(k as usize) as u64;
        check_slice("tokens", tokens, rows * 4)?;
        check_slice("penalty_state", state, rows * sw * 4)?;
        check_no_alias(
            &[("tokens", Some(tokens))],
            &[("penalty_state", Some(state))],
        )?;
        if rows == 0 {
            return Ok(());
        }
        let core = &self.core;
        let per_dispatch = core.rows_per_dispatch(rows, sw)?;
        core.scoped(|| {
            let mut r0 = 0;
            while r0 < rows {
                let m = (rows - r0).min(per_dispatch);
                let t = core.window(tokens, r0, m, 4);
                let s = core.window(state, r0 * sw, m * sw, 4);
                let params = UpdateParams {
                    rows: m as u32,
                    k: k as u32,
                    token_base: t.base,
                    state_base: s.base,
                    state_words: sw as u32,
                    mask_words: mask_words(k as usize) as u32,
                };
                core.dispatch(
                    encoder,
                    &params,
                    &[t.binding, s.binding],
                    &[(&self.update, m.div_ceil(u64::from(WG_SIZE)))],
                )?;
                r0 += m;
            }
            Ok(())
        })
    }
}
