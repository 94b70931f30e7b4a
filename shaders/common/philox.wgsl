// Philox4x32-10 (Salmon et al., SC'11), bit-identical to Random123 and to src/philox.rs.
// Needs: config (PHILOX_* constants, generated from src/philox.rs) and mulhi (either variant).
//
// Stream contract (crate docs, `Stream`): word n of stream (seed, offset) is
// philox4x32_10([lo32(b), hi32(b), 0, 0], [lo32(seed), hi32(seed)])[m % 4], m = offset + n, b = m / 4.
// Kernels receive the stream as key, block0 = offset / 4 (two u32 halves) and phase = offset % 4,
// so flat element n lives in block block0 + (phase + n) / 4, lane (phase + n) % 4.
#import config
#import mulhi

fn philox_round(c: vec4<u32>, k: vec2<u32>) -> vec4<u32> {
    let p0 = mulhilo(PHILOX_M0, c.x);
    let p1 = mulhilo(PHILOX_M1, c.z);
    return vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    let w = vec2<u32>(PHILOX_W0, PHILOX_W1);
    // Written out: 10 rounds, the key bumped between rounds, as in Random123.
    var c = philox_round(counter, key);
    c = philox_round(c, key + w);
    c = philox_round(c, key + 2u * w);
    c = philox_round(c, key + 3u * w);
    c = philox_round(c, key + 4u * w);
    c = philox_round(c, key + 5u * w);
    c = philox_round(c, key + 6u * w);
    c = philox_round(c, key + 7u * w);
    c = philox_round(c, key + 8u * w);
    c = philox_round(c, key + 9u * w);
    return c;
}

// Block index block0 + i as (lo, hi) u32 halves, modulo 2^62: the word index m is a wrapping
// u64, so the block index b = m / 4 wraps at 2^62.
fn block_add(block0: vec2<u32>, i: u32) -> vec2<u32> {
    let lo = block0.x + i;
    return vec2<u32>(lo, (block0.y + select(0u, 1u, lo < i)) & 0x3fffffffu);
}

// The four words of block block0 + i of the stream keyed by `key`.
fn philox_block(key: vec2<u32>, block0: vec2<u32>, i: u32) -> vec4<u32> {
    let b = block_add(block0, i);
    return philox4x32_10(vec4<u32>(b.x, b.y, 0u, 0u), key);
}
