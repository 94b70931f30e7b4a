use std::fmt;

/// Everything that can go wrong in this crate. Messages say what was wrong and what to do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// No wgpu adapter could be found (or none matched `WGPU_ADAPTER_NAME` / `WGPU_BACKEND`).
    NoAdapter(String),
    /// The adapter refused to create a device.
    RequestDevice(String),
    /// An argument is out of its domain (shape, temperature, length, ...).
    InvalidArgument(String),
    /// A row of logits holds a NaN.
    NanInRow {
        /// Index of the first such row.
        row: usize,
    },
    /// Every logit of a row is -inf, so no category can be drawn.
    AllMaskedRow {
        /// Index of the first such row.
        row: usize,
    },
    /// The job exceeds a limit of the device (buffer size, dispatch size).
    TooLarge(String),
    /// The device lacks a feature the call needs.
    Unsupported(String),
    /// wgpu reported a validation error.
    Validation(String),
    /// The device ran out of memory.
    OutOfMemory(String),
    /// The device was lost (driver reset, removal, or destroyed).
    DeviceLost(String),
    /// Reading results back from the device failed.
    Readback(String),
    /// A bug in this crate; please report it.
    Internal(String),
    /// The bounds sanitizer (`GpuOptions::bounds_check`, `GUMBEL_WGPU_BOUNDS_CHECK=1`) caught a
    /// kernel indexing an array out of range: a bug in this crate (the index was not used).
    OutOfBounds(Box<BoundsViolation>),
}

/// Where the bounds sanitizer caught a kernel indexing out of range ([`Error::OutOfBounds`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BoundsViolation {
    /// The kernel family.
    pub family: String,
    /// The entry point that was running.
    pub entry_point: String,
    /// The array and its binding, e.g. `out (@group(0) @binding(3), storage)`.
    pub array: String,
    /// The WGSL function holding the index.
    pub function: String,
    /// `shaders/<file>.wgsl:<line>` of the index.
    pub location: String,
    /// The index (the first one out of range since the last check).
    pub index: u32,
    /// The array's length in elements.
    pub length: u32,
    /// How many out-of-range indices were recorded.
    pub count: u32,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter(m) => write!(
                f,
                "no GPU adapter found ({m}); install a Vulkan driver (on a machine without a GPU: \
                 `apt-get install mesa-vulkan-drivers` for lavapipe) or set WGPU_BACKEND=gl"
            ),
            Error::RequestDevice(m) => write!(f, "the adapter refused to create a device: {m}"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::NanInRow { row } => write!(f, "row {row} of the logits contains NaN"),
            Error::AllMaskedRow { row } => {
                write!(
                    f,
                    "row {row} of the logits is all -inf: no category can be drawn"
                )
            }
            Error::TooLarge(m) => write!(f, "too large for this device: {m}"),
            Error::Unsupported(m) => write!(f, "not supported by this device: {m}"),
            Error::Validation(m) => write!(f, "wgpu validation error: {m}"),
            Error::OutOfMemory(m) => write!(f, "the GPU is out of memory: {m}"),
            Error::DeviceLost(m) => write!(f, "the GPU device was lost: {m}; create a new Gpu"),
            Error::Readback(m) => write!(f, "reading results back from the GPU failed: {m}"),
            Error::Internal(m) => write!(f, "internal error in gumbel-wgpu (please report): {m}"),
            Error::OutOfBounds(v) => write!(
                f,
                "bounds sanitizer: kernel family {}, entry point {}, indexed {} at {}, past its \
                 length {} (fn {}, {}; {} out-of-range indices in all); a bug in gumbel-wgpu \
                 (please report)",
                v.family,
                v.entry_point,
                v.array,
                v.index,
                v.length,
                v.function,
                v.location,
                v.count
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<wgpu::Error> for Error {
    fn from(e: wgpu::Error) -> Self {
        match e {
            wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(e.to_string()),
            wgpu::Error::Validation { description, .. } => Error::Validation(description),
            other => Error::Internal(other.to_string()),
        }
    }
}
