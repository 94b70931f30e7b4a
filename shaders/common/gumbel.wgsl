// Uniform and Gumbel transforms of one Philox word (Noise::Bits32) or two (Noise::Bits64), twins
// of src/cpu/mod.rs (`uniform_from_word`, `gumbel_from_word`, `uniform_from_words64`,
// `gumbel_from_words64`).
#import config
//
// u = (w + 1/2) / 2^32 with its significand cut to 24 bits (toward zero), built from integers so
// every implementation gives the same f32: u is in [2^-33, 1 - 2^-24], never 0 or 1, and keeps
// the word's full 32 bits of resolution near 0, where the upper Gumbel tail comes from.
fn uniform_from_word(w: u32) -> f32 {
    if (w < 0x800000u) {
        return f32(2u * w + 1u) * TWO_POW_M33;
    }
    // Keep the top 24 significant bits so the conversion is exact.
    let drop = 8u - countLeadingZeros(w);
    return f32(w & (0xffffffffu << drop)) * TWO_POW_M32;
}

// E = -log1p(-u), a standard exponential variate. For u < 1/8 the series sum_n u^n / n (all terms
// positive, no cancellation; truncation error below 2^-26 relative) avoids log's absolute error
// near 1; above, 1 - u is exact or within half an ulp.
fn exponential_from_uniform(u: f32) -> f32 {
    if (u < 0.125) {
        let s = 1.0 / 9.0;
        var p = u * s + 1.0 / 8.0;
        p = u * p + 1.0 / 7.0;
        p = u * p + 1.0 / 6.0;
        p = u * p + 1.0 / 5.0;
        p = u * p + 1.0 / 4.0;
        p = u * p + 1.0 / 3.0;
        p = u * p + 1.0 / 2.0;
        p = u * p + 1.0;
        return u * p;
    }
    return -log(1.0 - u);
}

// Gumbel(0, 1) noise g = -log(E): finite for every word, from -2.8115 (w = 0xffffffff) to
// 22.87 (w = 0).
fn gumbel_from_word(w: u32) -> f32 {
    return -log(exponential_from_uniform(uniform_from_word(w)));
}

// 2^e for -126 <= e <= 127, exact (so the scaling below rounds nothing).
fn pow2(e: i32) -> f32 {
    return bitcast<f32>(u32(127 + e) << 23u);
}

// The uniform of the 64-bit word x = hi * 2^32 + lo: (x + 1/2) / 2^64 with the significand cut
// to 24 bits (toward zero), in [2^-65, 1 - 2^-24]; twin of cpu::uniform_from_words64
// (Noise::Bits64: hi is word 2n, lo word 2n + 1 of element n).
fn uniform_from_words64(hi: u32, lo: u32) -> f32 {
    if (hi == 0u) {
        if (lo < 0x800000u) {
            return f32(2u * lo + 1u) * pow2(-65);
        }
        let drop = 8u - countLeadingZeros(lo);
        return f32(lo >> drop) * pow2(i32(drop) - 64);
    }
    // The top 24 significant bits of x: `drop` bits (9..40) lie below them.
    let drop = 40u - countLeadingZeros(hi);
    var top = 0u;
    if (drop >= 32u) {
        top = hi >> (drop - 32u);
    } else {
        top = (hi << (32u - drop)) | (lo >> drop);
    }
    return f32(top) * pow2(i32(drop) - 64);
}

// Gumbel(0, 1) noise of a 64-bit word: from -2.8115 to 45.05 (x = 0).
fn gumbel_from_words64(hi: u32, lo: u32) -> f32 {
    return -log(exponential_from_uniform(uniform_from_words64(hi, lo)));
}
