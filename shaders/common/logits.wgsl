// Reading logits: f32, or f16 / bf16 packed two per u32 (element 2i in the low half), widened to
// f32 *bits* with integer operations only (exact; no SHADER_F16 needed; no inf/NaN arithmetic,
// which WGSL lets implementations assume away). Twin of src/logits.rs.
// Contract: the including kernel declares `logits: array<u32>` (storage, read) and passes the
// format code (LOGITS_F32 / LOGITS_F16 / LOGITS_BF16, from LogitsFormat::code) at run time.

const LOGITS_F32: u32 = 0u;
const LOGITS_F16: u32 = 1u;
const LOGITS_BF16: u32 = 2u;

const F32_NEG_INF_BITS: u32 = 0xff800000u;
const F32_POS_INF_BITS: u32 = 0x7f800000u;

fn f16_to_f32_bits(h: u32) -> u32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0x1fu) {
        return sign | 0x7f800000u | (m << 13u);
    }
    if (e != 0u) {
        return sign | ((e + 112u) << 23u) | (m << 13u);
    }
    // Zero or subnormal: m * 2^-24, exact in f32.
    return sign | bitcast<u32>(f32(m) * 0x1p-24f);
}

// The f32 bit pattern of logit `i` (flat index into the whole buffer).
fn logit_bits(i: u32, format: u32) -> u32 {
    if (format == LOGITS_F32) {
        return logits[i];
    }
    let half = (logits[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu;
    if (format == LOGITS_BF16) {
        return half << 16u;
    }
    return f16_to_f32_bits(half);
}

fn is_nan_bits(b: u32) -> bool {
    return (b & 0x7fffffffu) > F32_POS_INF_BITS;
}

// A masked category: logit -inf, probability exactly 0, never drawn.
fn is_masked_bits(b: u32) -> bool {
    return b == F32_NEG_INF_BITS;
}

fn is_pos_inf_bits(b: u32) -> bool {
    return b == F32_POS_INF_BITS;
}
