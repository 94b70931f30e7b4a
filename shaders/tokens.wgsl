// Token sampling for language models: per row, temperature, min-p, top-k, top-p, the Gumbel-max
// draw over the kept set, and raw log-probabilities (the token's and the top n). Sort-free.
//
// Bindings (group 0):
//   0: uniform TokenParams
//   1: storage, read       logits: array<u32>  f32 bits, or f16/bf16 packed two per word
//                          (logits.wgsl); element j of dispatch row r is
//                          logit_bits(logit_base + r * stride + j) (stride >= k: LogitsView's)
//   2: storage, read       rowp: array<u32>    12 words per row at row_base + 12 r: temperature
//                          (f32 bits), top_k, top_p (f32 bits), min_p (f32 bits), seed lo, seed hi,
//                          offset lo, offset hi, repetition, frequency and presence penalties,
//                          top_n_sigma (f32 bits) (TokenRowParams in src/tokens/sampler.rs)
//   3: storage, read_write tokens: array<u32>  tokens[token_base + r]
//   4: storage, read_write logprobs: array<u32> f32 bits at logprob_base + r (OUT_LOGPROB)
//   5: storage, read_write top: array<u32>     2 words per entry at top_base + 2 (r * n_top + i):
//                          index, log-probability bits (OUT_TOP)
//   6: storage, read_write status: array<u32>  status_base + r (OUT_STATUS): 0 ok, else STATUS_*
//   7: storage, read       proc: array<u32>    with params.processed: the row's processed logits
//                          (token_process.wgsl), k f32 bits per row at proc_base + r * k; the
//                          filters, the draw and processed log-probabilities read them, raw
//                          log-probabilities read `logits`
//   8: storage, read_write aux: array<u32>     ranks at aux_base + r (OUT_RANK), or the final law,
//                          k f32 per row at aux_base + r * k (OUT_LAW); never both
// Unused outputs are bound to a dummy buffer and never written (the `outputs` bit mask says
// which are real).
//
// Counter scheme: element j of row r uses word j of the row's own stream (seed, offset) from
// rowp: lane (phase + j) % 4 of Philox block block0 + (phase + j) / 4 with block0 = offset / 4,
// phase = offset % 4. The final pass walks the row in whole blocks (one philox call per 4
// elements). With noise64 != 0, element j uses words 2j (high half) and 2j + 1 (low half): two
// elements per block, and for an odd phase each block's last pair ends in the next block (a
// second philox call). Nothing depends on the row's position in the batch.
//
// One workgroup per row (group_index = dispatch row; surplus groups return), running the passes
// of token_passes.wgsl in one dispatch; tokens_split.wgsl runs the same passes over many
// workgroups per row, one dispatch each, with the same results bit for bit (token_core.wgsl
// says why: every aggregate over a row is exact). Every index stays
// in range because each loop runs j < k (or the block's lanes are tested against phase and k),
// rows are < params.rows, and the host binds windows holding (rows - 1) * stride + k logits
// (and rows * k processed logits), rows * 12 row words, rows tokens / logprobs / statuses /
// ranks, rows * n_top * 2 top words and rows * k law entries.
//
// Bad parameters (a temperature that is negative, subnormal or not finite, top_p outside (0, 1], min_p
// outside [0, 1), a repetition penalty that is not finite and > 0, other penalties that are not
// finite, a top_n_sigma that is negative or not finite, or a row the processing kernel marked
// with BAD_ROW_BITS) give the row NO_INDEX, NaN log-probabilities and STATUS_BAD_PARAMS: tested
// on bits, since WGSL may assume floats are finite.
//
// The order: every filter keeps a prefix of one total order of the row, "larger logit, then
// lower index" (q is increasing in l). A logit's key is the order-preserving u32 image of its
// bits (masked -inf: key 0, never kept). The kept set is described by its last element
// th = (key, index): entry (key, j) is kept iff key > th.x, or key == th.x and j <= th.y.
//   * min-p: l >= m + t ln(min_p)  ->  th = (key(m + t ln(min_p)), NO_INDEX);
//   * top-k: th = the k-th entry of the order among all non-masked entries (the thresholds keep
//     prefixes of the same order, so the tighter of the two is the k-th among the kept ones),
//     found by a radix select on (key, index) with 8-bit digits (4 key rounds, the first on the
//     max pass, then ceil(log2 k / 8) index rounds, a 256-bin count histogram per round); a
//     round whose bin holds exactly the entries still wanted ends it early;
//   * top-p: the mass goal p * Z_kept; a radix search on the key with 4-bit digits (8 rounds,
//     16 fixed-point mass sums per invocation; Z is round 0's total) finds the key T where the
//     cumulative mass in the order reaches the goal; its ties (equal logits, equal mass mu)
//     need c = ceil(rest / mu) of them, and the c-th smallest index among them (the index
//     rounds of the select) closes th. After a top-k of at most KEPT_CAP (512) entries,
//     instead: the kept entries, gathered in one pass (or top-k's gathered candidates, the
//     select having switched to gathering once they numbered at most KEPT_CAP), are put in
//     order in workgroup memory and the prefix is walked (finish_gather).
// Then one Gumbel-max over the kept entries: argmax (key of l / t + g, lower index first).
//
// top-n-sigma: a threshold like min-p, max - n sigma with sigma the population deviation of the
// row's finite (processed) logits (two passes: the mean, then the variance, each summed in
// fixed point). The draw pass also sums the input's mass (raw log-probabilities) and the kept
// mass (processed log-probabilities, the law) and fills the top-n lists; a last pass counts the
// rank and writes the law. Passes over the row: the table in src/tokens/mod.rs.
// llvmpipe ends an invocation's loops after 65535 iterations: an invocation runs about
// passes * k / 256 iterations (the host checks the estimate).
#import config
#import philox
#import gumbel
#import logits
#import grid
#import reduce_workgroup

#import params
@group(0) @binding(1) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read> rowp: array<u32>;
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(4) var<storage, read_write> logprobs: array<u32>;
@group(0) @binding(5) var<storage, read_write> top: array<u32>;
@group(0) @binding(6) var<storage, read_write> status: array<u32>;
@group(0) @binding(7) var<storage, read> proc: array<u32>;
@group(0) @binding(8) var<storage, read_write> aux: array<u32>;

#import token_core
#import token_passes
#import token_outputs

// P_GATHER's kept entries go to workgroup memory (`kept`, counted in agg).
fn gather_put(key: u32, j: u32) {
    let slot = atomicAdd(&agg[A_KEPT], 1u);
    // Always below KEPT_CAP (a top-k of at most that many); checked so no write can stray.
    if (slot < KEPT_CAP) {
        kept[slot] = vec2<u32>(key, j);
    }
}

@compute @workgroup_size(WG_SIZE)
fn tokens_row(ids: WgIds, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = workgroup_setup(ids);
    let r = group_index(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    if (lid == 0u) {
        dec_init(r);
    }
    // The decisions steer branches that hold barriers: workgroupUniformLoad makes them uniform
    // for WGSL's analysis (Tint enforces it in the browser).
    var d = workgroupUniformLoad(&dec);
    list_clear();
    // Only the passes the row needs (the loop holding the barriers runs once per pass run:
    // llvmpipe pays for every iteration of such a loop, skipped or not).
    for (var pid = next_pass(0u, &d); pid < N_PASSES; pid = next_pass(pid + 1u, &d)) {
        agg_reset(lid);
        workgroupBarrier();
        let best = pass_body(lid, r, pid, &d, 0u, 1u);
        workgroupBarrier();
        finish(lid, r, pid, &d, best);
        d = workgroupUniformLoad(&dec);
    }
    write_outputs(lid, r, &d);
}
