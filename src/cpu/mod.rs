//! The CPU reference: every GPU kernel has a twin here, written in the shader's loop shape and
//! computed in f64 where it matters. Tests compare the GPU against it.

use crate::philox::Philox4x32;
use crate::{Noise, Stream};
use rand::Rng;

/// Words `0..len` of `stream`.
pub fn random_u32(stream: Stream, len: usize) -> Vec<u32> {
    let mut rng = Philox4x32::from_stream(stream);
    (0..len).map(|_| rng.next_u32()).collect()
}

/// The uniform in (0, 1) of one word, bit-identical to `uniform_from_word` in
/// `shaders/common/gumbel.wgsl`: `(w + 1/2) / 2^32` with the significand cut to 24 bits
/// (toward zero). Smallest value `2^-33` (w = 0), largest `1 - 2^-24` (w = 0xffffffff).
pub fn uniform_from_word(w: u32) -> f32 {
    if w < 0x80_0000 {
        return (2 * w + 1) as f32 * 2f32.powi(-33);
    }
    let drop = 8 - w.leading_zeros();
    (w & (u32::MAX << drop)) as f32 * 2f32.powi(-32)
}

/// Gumbel(0, 1) noise of one word in f64: `-ln(-ln(1 - u))` with `u = uniform_from_word(w)`.
/// The GPU computes the same in f32 (see the crate docs for its accuracy).
pub fn gumbel_from_word(w: u32) -> f64 {
    let u = f64::from(uniform_from_word(w));
    -(-(-u).ln_1p()).ln()
}

/// The uniform in (0, 1) of the 64-bit word `x = hi * 2^32 + lo` ([`Noise::Bits64`]),
/// bit-identical to `uniform_from_words64` in `shaders/common/gumbel.wgsl`: `(x + 1/2) / 2^64`
/// with the significand cut to 24 bits (toward zero). Smallest `2^-65`, largest `1 - 2^-24`.
pub fn uniform_from_words64(hi: u32, lo: u32) -> f32 {
    let x = (u64::from(hi) << 32) | u64::from(lo);
    if x < 0x80_0000 {
        return (2 * x + 1) as f32 * 2f32.powi(-65);
    }
    // Keep the top 24 significant bits so the conversion is exact.
    let drop = 40 - x.leading_zeros();
    (x >> drop) as f32 * 2f32.powi(drop as i32 - 64)
}

/// Gumbel(0, 1) noise of a 64-bit word in f64: `-ln(-ln(1 - u))`, `u = uniform_from_words64`;
/// from -2.8115 up to `65 ln 2 ~ 45.05`.
pub fn gumbel_from_words64(hi: u32, lo: u32) -> f64 {
    let u = f64::from(uniform_from_words64(hi, lo));
    -(-(-u).ln_1p()).ln()
}

/// The Gumbel noise (f64) of element `n` of `stream` under `noise`: from word `n`, or from words
/// `2n` (high) and `2n + 1` (low).
pub fn gumbel_noise(stream: Stream, n: u64, noise: Noise) -> f64 {
    match noise {
        Noise::Bits32 => gumbel_from_word(stream.word(n)),
        Noise::Bits64 => gumbel_from_words64(stream.word(2 * n), stream.word(2 * n + 1)),
    }
}

/// Uniforms in (0, 1) from words `0..len` of `stream`; bit-identical to [`crate::Gpu::uniform`].
pub fn uniform(stream: Stream, len: usize) -> Vec<f32> {
    random_u32(stream, len)
        .into_iter()
        .map(uniform_from_word)
        .collect()
}

/// Gumbel(0, 1) noise in f64 from words `0..len` of `stream`.
pub fn gumbel(stream: Stream, len: usize) -> Vec<f64> {
    random_u32(stream, len)
        .into_iter()
        .map(gumbel_from_word)
        .collect()
}

mod sample;
mod softmax;
pub use sample::*;
pub use softmax::*;

mod backward;
pub use backward::*;

mod density;
pub use density::*;

mod tokens;
pub use tokens::*;
