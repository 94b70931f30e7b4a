//! Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3",
//! SC'11), bit-identical to Random123's `philox4x32` with the default 10 rounds, and the
//! [`Stream`] contract every kernel of this crate follows.
//!
//! The WGSL twin lives in `shaders/common/philox.wgsl`; its constants are generated from the
//! ones below (see [`crate::shader`]), so there is a single source for both.

use rand::{SeedableRng, TryRng};
use std::convert::Infallible;

/// Philox round multipliers and Weyl key increments (Random123 `PHILOX_M4x32_0/1`, `PHILOX_W32_0/1`).
pub const PHILOX_M0: u32 = 0xD251_1F53;
/// Second round multiplier.
pub const PHILOX_M1: u32 = 0xCD9E_8D57;
/// First key increment (golden ratio).
pub const PHILOX_W0: u32 = 0x9E37_79B9;
/// Second key increment (sqrt(3) - 1).
pub const PHILOX_W1: u32 = 0xBB67_AE85;
/// Number of rounds (Random123's default and recommended value for 4x32).
pub const PHILOX_ROUNDS: u32 = 10;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// One Philox4x32-10 block: 4 words from a 128-bit counter and a 64-bit key.
///
/// The loop has the same shape as the WGSL `philox4x32_10`.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..PHILOX_ROUNDS {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let (hi0, lo0) = mulhilo(PHILOX_M0, c[0]);
        let (hi1, lo1) = mulhilo(PHILOX_M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// A position in the random stream: which numbers a call consumes.
///
/// **The stream contract.** Word `n` of a stream is
/// `philox4x32_10([lo32(b), hi32(b), 0, 0], [lo32(seed), hi32(seed)])[m % 4]`
/// with `m = offset + n` (wrapping `u64`) and `b = m / 4`. Every kernel that consumes randomness
/// uses word `n` for flat element `n` of its input (element `j` of row `r` of a `rows x k`
/// matrix is flat element `r * k + j`), so results never depend on the workgroup size, on how a
/// dispatch is chunked, on the device or on the backend, and a job split by offset gives the
/// same numbers as one call. To draw fresh numbers for the next step, [`Stream::advance`] the
/// offset past the elements the last call consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stream {
    /// The Philox key.
    pub seed: u64,
    /// Index of the first word this stream hands out.
    pub offset: u64,
}

impl Stream {
    /// The stream of `seed`, starting at word 0.
    pub const fn new(seed: u64) -> Self {
        Stream { seed, offset: 0 }
    }

    /// The same seed, starting at word `offset`.
    pub const fn at(self, offset: u64) -> Self {
        Stream {
            seed: self.seed,
            offset,
        }
    }

    /// The stream that starts `n` words later (wrapping).
    pub const fn advance(self, n: u64) -> Self {
        Stream {
            seed: self.seed,
            offset: self.offset.wrapping_add(n),
        }
    }

    /// The Philox key of this stream.
    pub const fn key(self) -> [u32; 2] {
        [self.seed as u32, (self.seed >> 32) as u32]
    }

    /// The stream as the kernels receive it (`shaders/common/philox.wgsl`): the key halves, the
    /// first block `offset / 4` as (lo, hi), and the phase `offset % 4`.
    pub(crate) const fn kernel_words(self) -> [u32; 5] {
        let block0 = self.offset / 4;
        let [key_lo, key_hi] = self.key();
        [
            key_lo,
            key_hi,
            block0 as u32,
            (block0 >> 32) as u32,
            (self.offset % 4) as u32,
        ]
    }

    /// Word `n` of the stream (see the contract above).
    pub fn word(self, n: u64) -> u32 {
        let m = self.offset.wrapping_add(n);
        block(self.key(), m / 4)[(m % 4) as usize]
    }
}

#[inline]
fn block(key: [u32; 2], b: u64) -> [u32; 4] {
    philox4x32_10([b as u32, (b >> 32) as u32, 0, 0], key)
}

/// A `rand` generator that yields the words of a [`Stream`] in order: `next_u32` returns word 0,
/// then word 1, and so on; `next_u64` joins two words little-endian (first word low).
#[derive(Clone, Debug)]
pub struct Philox4x32 {
    key: [u32; 2],
    /// Index of the next word (`offset + n`).
    m: u64,
    /// The block that holds word `m`, if already computed.
    cached: Option<(u64, [u32; 4])>,
}

impl Philox4x32 {
    /// A generator positioned at the first word of `stream`.
    pub fn from_stream(stream: Stream) -> Self {
        Philox4x32 {
            key: stream.key(),
            m: stream.offset,
            cached: None,
        }
    }

    /// The stream whose first word is the next one this generator yields.
    pub fn stream(&self) -> Stream {
        Stream {
            seed: u64::from(self.key[0]) | (u64::from(self.key[1]) << 32),
            offset: self.m,
        }
    }

    fn next_word(&mut self) -> u32 {
        let b = self.m / 4;
        let words = match self.cached {
            Some((cb, w)) if cb == b => w,
            _ => {
                let w = block(self.key, b);
                self.cached = Some((b, w));
                w
            }
        };
        let out = words[(self.m % 4) as usize];
        self.m = self.m.wrapping_add(1);
        out
    }
}

impl From<Stream> for Philox4x32 {
    fn from(stream: Stream) -> Self {
        Philox4x32::from_stream(stream)
    }
}

impl TryRng for Philox4x32 {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.next_word())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let lo = u64::from(self.next_word());
        let hi = u64::from(self.next_word());
        Ok((hi << 32) | lo)
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        rand::rand_core::utils::fill_bytes_via_next_word(dst, || Ok(self.next_word()))
    }
}

impl SeedableRng for Philox4x32 {
    /// The seed, little-endian: the stream's `seed` (offset 0).
    type Seed = [u8; 8];

    fn from_seed(seed: [u8; 8]) -> Self {
        Philox4x32::from_stream(Stream::new(u64::from_le_bytes(seed)))
    }

    fn seed_from_u64(seed: u64) -> Self {
        Philox4x32::from_stream(Stream::new(seed))
    }
}

/// How many stream words make the Gumbel noise of one element in the samplers
/// ([`crate::Gpu::sample_with`], [`crate::Gpu::sample_tokens_with`] and their buffer-level
/// jobs): part of the stream contract. Element `n` is the flat index the sampler gives an
/// element (`r * k + j` for Gumbel-max and top-k, `j` of the row's own stream for tokens).
///
/// * `Bits32` (the default): element `n` uses word `n`; the uniform has 32 bits of resolution
///   near 0, so the Gumbel upper tail ends at `33 ln 2 ~ 22.87`: a category whose scaled logit
///   trails the best by more than about 25.7 can never be drawn (its true chance is below
///   `e^-25.7 ~ 7e-12` per competitor).
/// * `Bits64`: element `n` uses words `2n` (high half) and `2n + 1` (low half): the uniform
///   `(x + 1/2) / 2^64` of the 64-bit `x`, its significand cut to 24 bits, so the tail reaches
///   `65 ln 2 ~ 45.05` (rare-category frequencies unbiased far deeper), at twice the Philox
///   work. A stream offset that is odd costs one more Philox block per block on the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Noise {
    /// One word per category.
    #[default]
    Bits32,
    /// Two words per category.
    Bits64,
}

impl Noise {
    /// Stream words per element: 1 or 2.
    pub const fn words(self) -> u64 {
        match self {
            Noise::Bits32 => 1,
            Noise::Bits64 => 2,
        }
    }
}
