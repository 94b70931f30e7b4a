// The processing stages of token sampling, before the sampler (tokens.wgsl) reads the row: the
// token mask, the logit bias and the repetition / frequency / presence penalties (vLLM's rule,
// in that order; src/tokens/mod.rs states the semantics, cpu::processed_logits is the twin).
// Writes the row's processed logits once, as f32 bits, into a scratch row the sampler reads.
//
// Bindings (group 0):
//   0: uniform ProcessParams
//   1: storage, read       logits: array<u32>   the input (logits.wgsl formats); element j of
//                          dispatch row r is logit_bits(logit_base + r * stride + j)
//   2: storage, read       rowp: array<u32>     TokenRowParams, 12 words per row at
//                          row_base + 12 r; words 8, 9, 10: repetition, frequency, presence
//                          penalties (f32 bits)
//   3: storage, read       allowed: array<u32>  mask_words words per row at
//                          allowed_base + r * mask_words (HAS_MASK)
//   4: storage, read       bias_starts: array<u32>  rows + 1 entry indices at
//                          bias_start_base + r (HAS_BIAS): row r's entries are
//                          [starts[r], starts[r + 1])
//   5: storage, read       bias_entries: array<u32> 2 words per entry at bias_entry_base + 2 e:
//                          token, bias (f32 bits); bias_entries entries in all
//   6: storage, read       state: array<u32>    the penalty state (HAS_STATE), state_words per
//                          row at state_base + r * state_words: mask_words words of the prompt's
//                          presence bits, then k u32 output counts
//   7: storage, read_write proc: array<u32>     k processed f32 bits per row at proc_base + r * k
//
// One workgroup per row (group_index = dispatch row; surplus groups return). Indices stay in
// range: j < k, words j / 32 < mask_words, bias entries are used only when start <= end <=
// bias_entries and their token < k; the host binds windows of the sizes above.
//
// Bad input gives no garbage: a NaN or +inf input logit is written as it is (canonical NaN bits
// for a NaN) for the sampler to flag, whatever the mask; a bias list whose bounds or tokens are
// out of range or whose bias is not finite marks the row with BAD_ROW_BITS (a NaN payload no
// input produces, since NaNs are canonicalised) in its element 0, which the sampler reports as
// STATUS_BAD_PARAMS. The penalties' own values are checked by the sampler (it reads rowp too).
//
// Passes: 1 read of the input and write (mask); the bias entries, walked by invocation 0 in
// order (so entries for one token add up in list order, f32 sums), behind a storage barrier; 1
// read and write of the processed row for the penalties (only when a penalty is on), with the
// state. Loops: k / WG_SIZE per pass, and the row's bias entries (at most bias_entries) for
// invocation 0 (the host checks both against llvmpipe's budget).
#import config
#import logits
#import grid

#import params
@group(0) @binding(1) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read> rowp: array<u32>;
@group(0) @binding(3) var<storage, read> allowed: array<u32>;
@group(0) @binding(4) var<storage, read> bias_starts: array<u32>;
@group(0) @binding(5) var<storage, read> bias_entries: array<u32>;
@group(0) @binding(6) var<storage, read> state: array<u32>;
@group(0) @binding(7) var<storage, read_write> proc: array<u32>;

const HAS_MASK: u32 = 1u;
const HAS_BIAS: u32 = 2u;
const HAS_STATE: u32 = 4u;
const NAN_BITS: u32 = 0x7fc00000u;
// Twin of BAD_ROW_BITS in tokens.wgsl.
const BAD_ROW_BITS: u32 = 0x7fc0bad0u;

// Finite f32 bits (neither inf nor NaN).
fn is_finite_bits(b: u32) -> bool {
    return (b & 0x7f800000u) != 0x7f800000u;
}

var<workgroup> bad_shared: u32;

@compute @workgroup_size(WG_SIZE)
fn process_row(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    let k = params.k;
    let out = params.proc_base + r * k;
    // Pass 1: the input, masked.
    for (var j = lid; j < k; j += WG_SIZE) {
        var bits = logit_bits(params.logit_base + r * params.stride + j, params.format);
        if (is_nan_bits(bits)) {
            bits = NAN_BITS;
        } else if (!is_pos_inf_bits(bits) && (params.flags & HAS_MASK) != 0u) {
            let word = allowed[params.allowed_base + r * params.mask_words + j / 32u];
            if (((word >> (j % 32u)) & 1u) == 0u) {
                bits = F32_NEG_INF_BITS;
            }
        }
        proc[out + j] = bits;
    }
    storageBarrier();
    // The bias, by invocation 0 in list order.
    if (lid == 0u) {
        var bad = 0u;
        if ((params.flags & HAS_BIAS) != 0u) {
            let start = bias_starts[params.bias_start_base + r];
            let end = bias_starts[params.bias_start_base + r + 1u];
            if (start > end || end > params.bias_entries) {
                bad = 1u;
            } else {
                for (var e = start; e < end; e++) {
                    let t = bias_entries[params.bias_entry_base + 2u * e];
                    let b = bias_entries[params.bias_entry_base + 2u * e + 1u];
                    if (t >= k || !is_finite_bits(b)) {
                        bad = 1u;
                        break;
                    }
                    let x = proc[out + t];
                    // -inf (masked) stays; NaN and +inf stay for the sampler to flag.
                    if (is_finite_bits(x)) {
                        proc[out + t] = bitcast<u32>(bitcast<f32>(x) + bitcast<f32>(b));
                    }
                }
            }
        }
        bad_shared = bad;
    }
    let bad = workgroupUniformLoad(&bad_shared);
    // workgroupUniformLoad is a workgroup barrier; the penalties read what invocation 0 wrote.
    storageBarrier();
    let rb = params.row_base + 12u * r;
    let rp = bitcast<f32>(rowp[rb + 8u]);
    let fp = bitcast<f32>(rowp[rb + 9u]);
    let pp = bitcast<f32>(rowp[rb + 10u]);
    if ((params.flags & HAS_STATE) != 0u && (rp != 1.0 || fp != 0.0 || pp != 0.0)) {
        let s = params.state_base + r * params.state_words;
        for (var j = lid; j < k; j += WG_SIZE) {
            let x = proc[out + j];
            if (!is_finite_bits(x)) {
                continue;
            }
            let c = state[s + params.mask_words + j];
            let in_prompt = ((state[s + j / 32u] >> (j % 32u)) & 1u) != 0u;
            var v = bitcast<f32>(x);
            if (in_prompt || c > 0u) {
                v = select(v * rp, v / rp, v > 0.0);
            }
            v -= fp * f32(c) + select(0.0, pp, c > 0u);
            proc[out + j] = bitcast<u32>(v);
        }
    }
    if (lid == 0u && bad != 0u) {
        proc[out] = BAD_ROW_BITS;
    }
}
