//! Logits as the kernels read them: f32, f16 or bf16, and the host-side checks of the slice API.

use crate::Error;

/// The element type of a logits buffer. f16 and bf16 are packed two per 32-bit word, element
/// `2i` in the low half; the kernels widen them to f32 with integer operations (exact, and
/// available on every adapter, with or without `SHADER_F16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum LogitsFormat {
    /// IEEE binary32.
    #[default]
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (the top half of a binary32).
    Bf16,
}

impl LogitsFormat {
    /// Bytes per element.
    pub const fn bytes(self) -> u64 {
        match self {
            LogitsFormat::F32 => 4,
            LogitsFormat::F16 | LogitsFormat::Bf16 => 2,
        }
    }

    /// The value `LOGITS_F32` / `LOGITS_F16` / `LOGITS_BF16` the shaders compare against.
    pub const fn code(self) -> u32 {
        match self {
            LogitsFormat::F32 => 0,
            LogitsFormat::F16 => 1,
            LogitsFormat::Bf16 => 2,
        }
    }

    /// Bytes a buffer of `len` elements needs (f16/bf16 rounded up to whole words).
    pub fn buffer_bytes(self, len: u64) -> u64 {
        (len * self.bytes()).next_multiple_of(4)
    }
}

/// A row-major `rows x k` matrix on the device, as every buffer-level job takes it: any range of
/// a buffer (`buffer.slice(a..b)`, `a` a multiple of 4 bytes, whatever the device's storage
/// offset alignment), its element format and its shape. Logits, or a forward pass's stored
/// `y` / `log y` (f32).
///
/// A view is checked when a job is recorded: the buffer must have `STORAGE` usage, the stride
/// (if set) must be at least `k`, and the slice must hold `(rows - 1) * stride + k` elements
/// (`rows * k` for a dense view; 16-bit formats rounded up to whole 4-byte words), else
/// [`Error::InvalidArgument`] names the argument.
#[derive(Clone, Copy, Debug)]
pub struct LogitsView<'a> {
    /// The elements, row-major (f16/bf16 packed two per word, element `2i` in the low half).
    pub data: wgpu::BufferSlice<'a>,
    /// Their element type.
    pub format: LogitsFormat,
    /// Number of rows.
    pub rows: u64,
    /// Elements per row (>= 1).
    pub k: u64,
    /// Elements from the start of one row to the start of the next: 0 (the default) means `k`,
    /// a dense matrix; else at least `k`, as an engine's `logits[:, :vocab]` of a padded output
    /// layer (128256 tokens in rows of 128512). Set it with [`LogitsView::with_stride`]. Every
    /// family that reads a view honours it, reading row `r`'s element `j` at `r * stride + j`:
    /// token sampling ([`crate::TokenSampler`]), Gumbel-max / top-k ([`crate::Sampler`]), the
    /// forward ([`crate::GumbelSoftmax`]), the backward ([`crate::GumbelSoftmaxBackward`]: the
    /// logits it recomputes from, or a stored `y` / `log y`) and the density
    /// ([`crate::ConcreteDensity`]). Their other inputs and outputs (`out`, `grad`, `log_y`)
    /// are plain slices and stay dense `rows x k` (or one value per row). Any stride `>= k` is
    /// allowed in every format: the kernels address f16/bf16 elements one by one, so an odd
    /// stride (rows starting in the middle of a 32-bit word) reads the same as an even one.
    pub stride: u64,
}

impl<'a> LogitsView<'a> {
    /// `rows x k` f32 elements.
    pub fn f32(data: wgpu::BufferSlice<'a>, rows: u64, k: u64) -> Self {
        LogitsView {
            data,
            format: LogitsFormat::F32,
            rows,
            k,
            stride: 0,
        }
    }

    /// `rows x k` dense elements of `format`.
    pub fn new(data: wgpu::BufferSlice<'a>, format: LogitsFormat, rows: u64, k: u64) -> Self {
        LogitsView {
            data,
            format,
            rows,
            k,
            stride: 0,
        }
    }

    /// The same view with rows `stride` elements apart (`>= k`; checked when a job is
    /// recorded): the slice must hold `(rows - 1) * stride + k` elements.
    pub fn with_stride(self, stride: u64) -> Self {
        LogitsView { stride, ..self }
    }

    /// Elements from one row's start to the next's (`k` for a dense view).
    pub fn row_stride(&self) -> u64 {
        if self.stride == 0 {
            self.k
        } else {
            self.stride
        }
    }

    /// Checks a view that may have a row stride (the argument named `what`): `stride` 0 or
    /// `>= k`, and the slice holding `(rows - 1) * stride + k` elements.
    pub(crate) fn check_strided(&self, what: &str) -> Result<(), Error> {
        let stride = self.row_stride();
        if stride == self.k {
            return crate::family::check_view(what, self.data, self.format, self.rows, self.k)
                .map(|_| ());
        }
        if stride < self.k {
            return Err(Error::InvalidArgument(format!(
                "{what}: row stride {stride} is below k = {}",
                self.k
            )));
        }
        // The dense checks on the shape (k >= 1, rows and rows x stride in range) first.
        crate::family::check_view(what, self.data, self.format, 0, self.k)?;
        let len = self
            .rows
            .checked_mul(stride)
            .filter(|n| n.checked_mul(8).is_some() && self.rows <= u64::from(u32::MAX))
            .ok_or_else(|| {
                Error::TooLarge(format!("{what}: {} rows of stride {stride}", self.rows))
            })?;
        let needed = if self.rows == 0 {
            0
        } else {
            len - stride + self.k
        };
        crate::family::check_slice(what, self.data, self.format.buffer_bytes(needed))
    }

    /// Elements a window over rows `r0 .. r0 + m` spans, from element `r0 * stride`.
    pub(crate) fn span(&self, m: u64) -> u64 {
        if m == 0 {
            0
        } else {
            (m - 1) * self.row_stride() + self.k
        }
    }
}

/// Logits on the host, in one of the formats the kernels read (f16/bf16 as raw bits): the input
/// of the slice-level `*_with` calls.
#[derive(Clone, Copy, Debug)]
pub enum LogitsSlice<'a> {
    /// f32 logits.
    F32(&'a [f32]),
    /// binary16 bit patterns.
    F16(&'a [u16]),
    /// bfloat16 bit patterns.
    Bf16(&'a [u16]),
}

impl LogitsSlice<'_> {
    /// Number of logits.
    pub fn len(&self) -> usize {
        match self {
            LogitsSlice::F32(x) => x.len(),
            LogitsSlice::F16(x) | LogitsSlice::Bf16(x) => x.len(),
        }
    }

    /// Whether there are no logits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn format(&self) -> LogitsFormat {
        match self {
            LogitsSlice::F32(_) => LogitsFormat::F32,
            LogitsSlice::F16(_) => LogitsFormat::F16,
            LogitsSlice::Bf16(_) => LogitsFormat::Bf16,
        }
    }

    /// The logits widened to f32 (exactly).
    pub fn values(&self) -> Box<dyn Iterator<Item = f32> + '_> {
        match self {
            LogitsSlice::F32(l) => Box::new(l.iter().copied()),
            LogitsSlice::F16(l) => Box::new(l.iter().map(|&h| f16_to_f32(h))),
            LogitsSlice::Bf16(l) => Box::new(l.iter().map(|&h| bf16_to_f32(h))),
        }
    }

    /// The 32-bit words of a logits buffer in this format (16-bit formats packed two per word).
    pub fn words(&self) -> Vec<u32> {
        match self {
            LogitsSlice::F32(l) => bytemuck::cast_slice(l).to_vec(),
            LogitsSlice::F16(l) | LogitsSlice::Bf16(l) => pack_u16(l),
        }
    }
}

/// Widens binary16 bits to f32 exactly (the CPU twin of `f16_to_f32_bits` in
/// `shaders/common/logits.wgsl`).
pub fn f16_to_f32(h: u16) -> f32 {
    f32::from_bits(f16_bits_to_f32_bits(h))
}

fn f16_bits_to_f32_bits(h: u16) -> u32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let exp = (h >> 10) & 0x1f;
    let man = h & 0x3ff;
    if exp == 0x1f {
        return sign | 0x7f80_0000 | (man << 13); // inf / NaN
    }
    if exp != 0 {
        return sign | ((exp + 112) << 23) | (man << 13);
    }
    if man == 0 {
        return sign;
    }
    // Subnormal: value man * 2^-24, exact in f32.
    sign | (man as f32 * 2f32.powi(-24)).to_bits()
}

/// Rounds an f32 to the nearest binary16 (ties to even), saturating to +-inf; NaN stays NaN.
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let a = x.abs();
    if a.is_nan() {
        return sign | 0x7e00;
    }
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    if a < 2f32.powi(-14) {
        // Subnormal range: multiples of 2^-24, rounded to nearest even by the FPU.
        return sign | (a * 2f32.powi(24)).round_ties_even() as u16;
    }
    let ab = a.to_bits();
    let exp = (ab >> 23) as i32 - 127 + 15;
    let man = ab & 0x7f_ffff;
    let mut h = ((exp as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}

/// Widens bfloat16 bits to f32 (exact).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Rounds an f32 to the nearest bfloat16 (ties to even); NaN stays NaN.
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// Packs 16-bit elements two per word, element `2i` in the low half (the layout the kernels read).
pub fn pack_u16(h: &[u16]) -> Vec<u32> {
    h.chunks(2)
        .map(|c| u32::from(c[0]) | (u32::from(*c.get(1).unwrap_or(&0)) << 16))
        .collect()
}

/// Checks the shape of a `rows x k` matrix held in `len` elements; returns the row count.
pub fn check_shape(len: usize, k: usize) -> Result<usize, Error> {
    if k == 0 {
        return Err(Error::InvalidArgument(
            "k (categories per row) must be at least 1".into(),
        ));
    }
    if !len.is_multiple_of(k) {
        return Err(Error::InvalidArgument(format!(
            "{len} logits do not split into rows of k = {k} (remainder {})",
            len % k
        )));
    }
    Ok(len / k)
}

/// The slice API's scan of the logits: `Err` naming the first row that holds a NaN or whose
/// entries are all -inf.
pub fn check_rows(logits: impl Iterator<Item = f32>, k: usize) -> Result<(), Error> {
    let mut all_masked = true;
    for (i, x) in logits.enumerate() {
        if x.is_nan() {
            return Err(Error::NanInRow { row: i / k });
        }
        all_masked &= x == f32::NEG_INFINITY;
        if (i + 1) % k == 0 {
            if all_masked {
                return Err(Error::AllMaskedRow { row: i / k });
            }
            all_masked = true;
        }
    }
    Ok(())
}

/// Checks a temperature, the same way in every family: finite, > 0 and normal (a subnormal tau
/// overflows `1 / tau` and every exponent).
pub fn check_tau(tau: f32) -> Result<(), Error> {
    if !(tau.is_finite() && tau > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "temperature tau = {tau} must be finite and > 0"
        )));
    }
    if tau < f32::MIN_POSITIVE {
        return Err(Error::InvalidArgument(format!(
            "temperature tau = {tau:e} is subnormal; it must be at least {:e}",
            f32::MIN_POSITIVE
        )));
    }
    Ok(())
}

/// Checks the per-row temperatures of the slice API: one per row, each as [`check_tau`] wants
/// (the error names the row).
pub fn check_taus(taus: &[f32], rows: usize) -> Result<(), Error> {
    if taus.len() != rows {
        return Err(Error::InvalidArgument(format!(
            "{} temperatures for {rows} rows",
            taus.len()
        )));
    }
    for (r, &tau) in taus.iter().enumerate() {
        check_tau(tau).map_err(|e| Error::InvalidArgument(format!("row {r}: {e}")))?;
    }
    Ok(())
}

/// Checks a buffer-level temperature for `rows` rows: a scalar as [`check_tau`] wants, or a
/// per-row slice of `rows` f32 (argument `tau`; the values are checked by the kernels, which
/// treat a row with a bad one as a bad row).
pub(crate) fn check_temperature(
    tau: &crate::Temperature<wgpu::BufferSlice<'_>>,
    rows: u64,
) -> Result<(), Error> {
    match *tau {
        crate::Temperature::Scalar(t) => check_tau(t),
        crate::Temperature::PerRow(s) => crate::family::check_slice("tau", s, rows * 4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trips_every_finite_half() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f32_to_f16(x) & 0x7c00 == 0x7c00 && f32_to_f16(x) & 0x3ff != 0);
            } else {
                assert_eq!(f32_to_f16(x), h, "{h:#06x} -> {x}");
            }
        }
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00, "tie to even");
    }

    #[test]
    fn bf16_round_trips_every_finite_bfloat() {
        for h in 0..=u16::MAX {
            let x = bf16_to_f32(h);
            if !x.is_nan() {
                assert_eq!(f32_to_bf16(x), h);
            }
        }
    }

    #[test]
    fn row_checks_name_the_first_bad_row() {
        let ninf = f32::NEG_INFINITY;
        assert_eq!(check_rows([0.0, 1.0, ninf, 2.0].into_iter(), 2), Ok(()));
        assert_eq!(
            check_rows([0.0, 1.0, ninf, ninf].into_iter(), 2),
            Err(Error::AllMaskedRow { row: 1 })
        );
        assert_eq!(
            check_rows([0.0, 1.0, 3.0, f32::NAN].into_iter(), 2),
            Err(Error::NanInRow { row: 1 })
        );
        assert!(check_shape(6, 4).is_err() && check_shape(6, 0).is_err());
        assert_eq!(check_shape(6, 3), Ok(2));
        assert!(
            check_tau(0.0).is_err()
                && check_tau(f32::NAN).is_err()
                && check_tau(f32::INFINITY).is_err()
        );
    }
}
