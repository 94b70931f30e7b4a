//! Philox4x32-10 on the CPU against Random123's known answers, the stream contract, and the
//! `rand` generator. Needs no GPU.

use gumbel_wgpu::philox::{Philox4x32, Stream, philox4x32_10};
use rand::{Rng, RngExt, SeedableRng};

/// Random123 `kat_vectors`, philox4x32 with 10 rounds (Salmon et al., SC'11; Random123 1.14
/// `examples/kat_vectors`): (counter, key, expected).
const KNOWN_ANSWERS: &[([u32; 4], [u32; 2], [u32; 4])] = &[
    (
        [0, 0, 0, 0],
        [0, 0],
        [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
    ),
    (
        [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
        [0xffffffff, 0xffffffff],
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
    ),
    (
        [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
        [0xa4093822, 0x299f31d0],
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    ),
];

#[test]
fn philox4x32_10_matches_random123_known_answers() {
    for &(counter, key, expected) in KNOWN_ANSWERS {
        assert_eq!(
            philox4x32_10(counter, key),
            expected,
            "counter {counter:08x?} key {key:08x?}"
        );
    }
}

#[test]
fn stream_word_follows_the_contract() {
    // Word n = philox(block (offset + n) / 4, key = seed)[(offset + n) % 4].
    let cases = [
        (0u64, 0u64),
        (0x299f31d0_a4093822, 3),
        (1, (1u64 << 34) + 5),    // block index above 2^32
        (u64::MAX, u64::MAX - 2), // offset wraps
    ];
    for (seed, offset) in cases {
        let s = Stream { seed, offset };
        for n in 0..9u64 {
            let m = offset.wrapping_add(n);
            let b = m / 4;
            let want = philox4x32_10(
                [b as u32, (b >> 32) as u32, 0, 0],
                [seed as u32, (seed >> 32) as u32],
            )[(m % 4) as usize];
            assert_eq!(s.word(n), want, "seed {seed:#x} offset {offset} word {n}");
        }
    }
    // The first block of seed 0 is the first known answer.
    let first: Vec<u32> = (0..4).map(|n| Stream::new(0).word(n)).collect();
    assert_eq!(first, KNOWN_ANSWERS[0].2);
}

#[test]
fn generator_yields_the_stream_words_in_order() {
    let s = Stream {
        seed: 0xdead_beef_1234,
        offset: 7,
    };
    let mut rng = Philox4x32::from_stream(s);
    for n in 0..50 {
        assert_eq!(rng.next_u32(), s.word(n));
    }
    assert_eq!(rng.stream(), s.advance(50));
    // next_u64: two words, first one low.
    let mut rng = Philox4x32::from_stream(s);
    assert_eq!(
        rng.next_u64(),
        u64::from(s.word(0)) | (u64::from(s.word(1)) << 32)
    );
    // fill_bytes: words little-endian, in order.
    let mut rng = Philox4x32::from_stream(s);
    let mut bytes = [0u8; 10];
    rng.fill_bytes(&mut bytes);
    assert_eq!(bytes[..4], s.word(0).to_le_bytes());
    assert_eq!(bytes[4..8], s.word(1).to_le_bytes());
    assert_eq!(bytes[8..], s.word(2).to_le_bytes()[..2]);
}

#[test]
fn seedable_rng_starts_at_offset_zero() {
    let mut a = Philox4x32::seed_from_u64(99);
    let mut b = Philox4x32::from_seed(99u64.to_le_bytes());
    for n in 0..8 {
        let w = Stream::new(99).word(n);
        assert_eq!(a.next_u32(), w);
        assert_eq!(b.next_u32(), w);
    }
}

#[test]
fn works_with_rand_distributions() {
    // A uniform f64 mean over 10^5 draws lies within 5 standard errors of 1/2.
    let mut rng = Philox4x32::seed_from_u64(2024);
    let n = 100_000;
    let mean: f64 = (0..n).map(|_| rng.random::<f64>()).sum::<f64>() / n as f64;
    let se = (1.0 / 12.0 / n as f64).sqrt();
    assert!((mean - 0.5).abs() < 5.0 * se, "mean {mean}");
    let k: u32 = rng.random_range(0..10);
    assert!(k < 10);
}
