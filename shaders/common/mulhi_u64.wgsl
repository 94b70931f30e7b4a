// 32x32 -> 64-bit multiply for Philox, native path: needs wgpu Features::SHADER_INT64.
// Returns (hi, lo).
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let p = u64(a) * u64(b);
    return vec2<u32>(u32(p >> 32u), u32(p & 0xfffffffflu));
}
