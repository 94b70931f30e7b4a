// 32x32 -> 64-bit multiply for Philox from 16-bit halves, for adapters without 64-bit integers
// (llvmpipe GL, WebGPU). Returns (hi, lo); bit-identical to mulhi_u64.wgsl.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xffffu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xffffu;
    let b_hi = b >> 16u;
    let ll = a_lo * b_lo;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    // Carry out of the low word: at most 3 * (2^16 - 1), no overflow.
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let hi = a_hi * b_hi + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}
