//! Shader composition: each kernel family is one WGSL file in `shaders/`, shared pieces live in
//! `shaders/common/`, and a line `#import NAME` pulls a piece in (once, depth first). Two pieces
//! are generated, so Rust and WGSL share one source: `config` from the Rust constants, and
//! `params`, the family's uniform struct, from its Rust definition (`uniform_params!`). The
//! composer knows no family: each one hands in its own [`ShaderSource`] (its `FamilySpec`).
//!
//! Public (but hidden from the docs) so the naga validation test can compose every variant.

use crate::Error;
use crate::philox::{PHILOX_M0, PHILOX_M1, PHILOX_ROUNDS, PHILOX_W0, PHILOX_W1};

/// What the composer needs of a kernel family (`family::FamilySpec` implements it): its WGSL
/// file and the WGSL of its uniform parameters. The composer sits below the families, so it
/// knows them by this alone.
pub trait ShaderSource {
    /// The family's name: its file is `shaders/<name>.wgsl` (the sanitizer's site names).
    fn name(&self) -> &'static str;
    /// The family's WGSL file.
    fn source(&self) -> &'static str;
    /// Its uniform parameters in WGSL, inserted at `#import params`.
    fn params(&self) -> &'static str;
}

/// Threads per workgroup of the one-dimensional kernels.
pub const WG_SIZE: u32 = 256;

/// The split token sampler's state (`shaders/tokens_split.wgsl`), shared with the host that
/// sizes it: words of a row's decisions, of a pass's aggregates (then a 256-bin histogram),
/// kept entries of the gathered top-k, and top-n entries per workgroup.
pub const TOKEN_DEC_WORDS: u32 = 44;
/// See [`TOKEN_DEC_WORDS`].
pub const TOKEN_AGG_WORDS: u32 = 64;
/// See [`TOKEN_DEC_WORDS`].
pub const TOKEN_KEPT_CAP: u32 = 2 * WG_SIZE;
/// See [`TOKEN_DEC_WORDS`].
pub const TOKEN_MAX_TOP_N: u32 = 20;
/// Words of one pass's region of the split state: its aggregates, then a 256-bin histogram.
pub const TOKEN_REGION_WORDS: u32 = TOKEN_AGG_WORDS + 256;
/// Words of one workgroup's draw slot: best (key, index), its logit's bits (view, input), then
/// the top n (key, index) pairs.
pub const TOKEN_SLOT_WORDS: u32 = 4 + 2 * TOKEN_MAX_TOP_N;

/// The device-dependent choices a shader is composed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShaderConfig {
    /// Use `u64` multiplies in Philox (wgpu `Features::SHADER_INT64`); else 16-bit halves.
    pub int64: bool,
    /// The adapter has subgroup operations (`Features::SUBGROUP`).
    pub subgroups: bool,
    /// The adapter has `f16` in shaders (`Features::SHADER_F16`).
    pub f16: bool,
}

impl ShaderConfig {
    /// Every combination, for validation tests.
    pub fn all() -> Vec<ShaderConfig> {
        let mut v = Vec::new();
        for bits in 0..8u32 {
            v.push(ShaderConfig {
                int64: bits & 1 != 0,
                subgroups: bits & 2 != 0,
                f16: bits & 4 != 0,
            });
        }
        v
    }
}

/// Shared pieces, by the name `#import` uses. `config`, `mulhi`, `team_reduce`, `reduce_best`
/// and `reduce_workgroup` are resolved per config (the reductions: their subgroup versions where
/// the adapter has subgroups; `reduce_workgroup` imports `reduce_best`, and both versions of each
/// import the workgroup-memory trees they fall back on, `reduce_best_tree` and
/// `reduce_sum_tree`).
const PIECES: &[(&str, &str)] = &[
    ("philox", include_str!("../shaders/common/philox.wgsl")),
    ("gumbel", include_str!("../shaders/common/gumbel.wgsl")),
    ("grid", include_str!("../shaders/common/grid.wgsl")),
    ("logits", include_str!("../shaders/common/logits.wgsl")),
    (
        "token_core",
        include_str!("../shaders/common/token_core.wgsl"),
    ),
    (
        "token_passes",
        include_str!("../shaders/common/token_passes.wgsl"),
    ),
    (
        "token_outputs",
        include_str!("../shaders/common/token_outputs.wgsl"),
    ),
    (
        "token_merge",
        include_str!("../shaders/common/token_merge.wgsl"),
    ),
    (
        "reduce_tree",
        include_str!("../shaders/common/reduce_tree.wgsl"),
    ),
    (
        "reduce_best_tree",
        include_str!("../shaders/common/reduce_best_tree.wgsl"),
    ),
    (
        "reduce_sum_tree",
        include_str!("../shaders/common/reduce_sum_tree.wgsl"),
    ),
    (
        "softmax_reduce_wg",
        include_str!("../shaders/common/softmax_reduce_wg.wgsl"),
    ),
    (
        "softmax_reduce_sg",
        include_str!("../shaders/common/softmax_reduce_sg.wgsl"),
    ),
];

const MULHI_U64: &str = include_str!("../shaders/common/mulhi_u64.wgsl");
const MULHI_U32: &str = include_str!("../shaders/common/mulhi_u32.wgsl");
const TEAM_REDUCE: &str = include_str!("../shaders/common/team_reduce.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("../shaders/common/reduce_subgroup.wgsl");
const REDUCE_BEST: &str = include_str!("../shaders/common/reduce_best.wgsl");
const REDUCE_BEST_SUBGROUP: &str = include_str!("../shaders/common/reduce_best_subgroup.wgsl");
const REDUCE_WORKGROUP: &str = include_str!("../shaders/common/reduce_workgroup.wgsl");
const REDUCE_WORKGROUP_SUBGROUP: &str =
    include_str!("../shaders/common/reduce_workgroup_subgroup.wgsl");

/// The generated `config` piece: constants shared with Rust.
pub fn config_piece(cfg: &ShaderConfig) -> String {
    format!(
        "// Generated by src/shader.rs from the Rust constants; do not edit.\n\
         const PHILOX_M0: u32 = {PHILOX_M0:#010x}u;\n\
         const PHILOX_M1: u32 = {PHILOX_M1:#010x}u;\n\
         const PHILOX_W0: u32 = {PHILOX_W0:#010x}u;\n\
         const PHILOX_W1: u32 = {PHILOX_W1:#010x}u;\n\
         const PHILOX_ROUNDS: u32 = {PHILOX_ROUNDS}u;\n\
         const WG_SIZE: u32 = {WG_SIZE}u;\n\
         const TWO_POW_M32: f32 = 0x1p-32f;\n\
         const TWO_POW_M33: f32 = 0x1p-33f;\n\
         const HAS_SUBGROUPS: bool = {};\n\
         const TOKEN_DEC_WORDS: u32 = {TOKEN_DEC_WORDS}u;\n\
         const TOKEN_AGG_WORDS: u32 = {TOKEN_AGG_WORDS}u;\n\
         const TOKEN_KEPT_CAP: u32 = {TOKEN_KEPT_CAP}u;\n\
         const TOKEN_MAX_TOP_N: u32 = {TOKEN_MAX_TOP_N}u;\n\
         const TOKEN_REGION_WORDS: u32 = {TOKEN_REGION_WORDS}u;\n\
         const TOKEN_SLOT_WORDS: u32 = {TOKEN_SLOT_WORDS}u;\n",
        cfg.subgroups
    )
}

fn piece(name: &str, spec: &dyn ShaderSource, cfg: &ShaderConfig) -> Option<String> {
    match name {
        "params" => Some(spec.params().to_string()),
        "config" => Some(config_piece(cfg)),
        "mulhi" => Some(if cfg.int64 { MULHI_U64 } else { MULHI_U32 }.to_string()),
        "team_reduce" => Some(
            if cfg.subgroups {
                REDUCE_SUBGROUP
            } else {
                TEAM_REDUCE
            }
            .to_string(),
        ),
        "reduce_best" => Some(
            if cfg.subgroups {
                REDUCE_BEST_SUBGROUP
            } else {
                REDUCE_BEST
            }
            .to_string(),
        ),
        "reduce_workgroup" => Some(
            if cfg.subgroups {
                REDUCE_WORKGROUP_SUBGROUP
            } else {
                REDUCE_WORKGROUP
            }
            .to_string(),
        ),
        _ => PIECES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.to_string()),
    }
}

/// The full WGSL of the kernel family `spec` for `cfg`.
pub fn compose(spec: &impl ShaderSource, cfg: &ShaderConfig) -> Result<String, Error> {
    let (enables, body, _) = compose_parts(spec, cfg)?;
    Ok(enables + &body)
}

/// The `enable` directives, the body, and where each line of the body comes from
/// (`"shaders/<file>.wgsl:<line>"`, or the generated piece's name): the bounds sanitizer
/// (`crate::sanitize`) names a site by it.
pub(crate) fn compose_parts(
    spec: &dyn ShaderSource,
    cfg: &ShaderConfig,
) -> Result<(String, String, Vec<String>), Error> {
    let mut seen = Vec::new();
    let mut out = Composed::default();
    // The family file may follow a generated prefix (the forward's variants): its own lines
    // start at its header comment (every shader starts with its contract).
    let first = spec
        .source()
        .lines()
        .position(|l| l.starts_with("//"))
        .unwrap_or(0);
    let origin = Origin {
        file: format!("shaders/{}.wgsl", spec.name()),
        first_line: 1 - first as i64,
    };
    expand(spec.source(), &origin, spec, cfg, &mut seen, &mut out)?;
    Ok((out.enables, out.body, out.origins))
}

#[derive(Default)]
struct Composed {
    body: String,
    enables: String,
    origins: Vec<String>,
}

/// Where a text's lines come from: line `i` (from 0) of the text is line `first_line + i` of
/// `file`.
struct Origin {
    file: String,
    first_line: i64,
}

/// The file of a shared piece under `cfg`, for the sanitizer's site names.
fn piece_file(name: &str, cfg: &ShaderConfig) -> String {
    let file = match (name, cfg.int64, cfg.subgroups) {
        ("params" | "config", _, _) => return format!("(generated piece {name})"),
        ("mulhi", true, _) => "mulhi_u64",
        ("mulhi", false, _) => "mulhi_u32",
        ("team_reduce", _, true) => "reduce_subgroup",
        ("reduce_best", _, true) => "reduce_best_subgroup",
        ("reduce_workgroup", _, true) => "reduce_workgroup_subgroup",
        _ => name,
    };
    format!("shaders/common/{file}.wgsl")
}

fn expand(
    src: &str,
    origin: &Origin,
    spec: &dyn ShaderSource,
    cfg: &ShaderConfig,
    seen: &mut Vec<String>,
    out: &mut Composed,
) -> Result<(), Error> {
    for (i, line) in src.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("#import ") {
            let name = name.trim();
            if seen.iter().any(|s| s == name) {
                continue;
            }
            seen.push(name.to_string());
            let text = piece(name, spec, cfg)
                .ok_or_else(|| Error::Internal(format!("#import of unknown piece {name:?}")))?;
            let inner = Origin {
                file: piece_file(name, cfg),
                first_line: 1,
            };
            expand(&text, &inner, spec, cfg, seen, out)?;
        } else if trimmed.starts_with("enable ") {
            // WGSL wants `enable` directives before any declaration.
            if !out.enables.contains(trimmed) {
                out.enables.push_str(trimmed);
                out.enables.push('\n');
            }
        } else {
            out.body.push_str(line);
            out.body.push('\n');
            out.origins
                .push(format!("{}:{}", origin.file, origin.first_line + i as i64));
        }
    }
    Ok(())
}
