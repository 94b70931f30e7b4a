//! The bounds sanitizer (`GpuOptions::bounds_check`, or `GUMBEL_WGPU_BOUNDS_CHECK=1` in the
//! environment): the kernels run as trusted shader modules, without wgpu's runtime checks, which
//! is sound only if no invocation indexes outside its bindings or reads workgroup memory before
//! writing it. Each shader's header argues that in prose; under the sanitizer, the composer
//! rewrites every index of a storage or workgroup array so the argument is checked on every run.
//!
//! * Every `name[i]` of a storage or workgroup array global (each dimension of nested arrays,
//!   `&name[i]` of atomics included) becomes `name[san_index(u32(i), LEN, SITE)]`, LEN being
//!   `arrayLength(&name)` for a runtime-sized array and the declared size otherwise. An index out
//!   of range is recorded in a status buffer (group 1, binding 0: the first one, with its site
//!   and entry point) and replaced by 0, so the read stays inside the binding.
//! * A statement that writes through such an index (`name[i] ... = v;`, `atomicStore(&name[i],
//!   v);`, ...) is guarded instead: out of range, it is skipped (recorded, never written).
//! * Every entry point starts by filling the workgroup memory it uses with [`POISON`] (a NaN as
//!   `f32`, an index past any binding as `u32`), then a barrier: a kernel that reads workgroup
//!   memory before writing it sees poison, and the tests comparing results with the CPU (or with
//!   the zero-initialised run of `GpuOptions::runtime_checks`) fail.
//!
//! A host-side table maps each site to its family, function, array and line; [`crate::Gpu`]
//! reads the status after every submission and returns [`Error::OutOfBounds`]. The rewrite is
//! textual over the composed WGSL (a small tokenizer, no naga at run time); `tests/shaders.rs`
//! checks with naga that every array access of every family's sanitized module goes through a
//! checked index and that the module validates, in every configuration.

use crate::Error;
use crate::shader::ShaderSource;
use crate::shader::{ShaderConfig, compose_parts};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// The 32-bit pattern workgroup memory holds at an entry point's start under the sanitizer.
pub const POISON: u32 = 0xffba_dbad;

/// Rewrites composed WGSL before the sanitizer checks it (tests plant a bad index this way):
/// `(family name, composed body) -> body`.
pub type ShaderPatch = fn(&str, &str) -> String;

/// One checked index in a sanitized shader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// The kernel family.
    pub family: &'static str,
    /// The WGSL function holding the index.
    pub function: String,
    /// The array and its binding, e.g. `out (@group(0) @binding(3), storage)`.
    pub array: String,
    /// `shaders/<file>.wgsl:<line>`.
    pub location: String,
}

/// A family's sanitized WGSL and its tables; site `i` has id `site_base + i` in the shader, entry
/// point `j` id `entry_base + j`.
#[derive(Clone, Debug)]
pub struct Sanitized {
    pub source: String,
    pub sites: Vec<Site>,
    pub entries: Vec<String>,
}

const PRELUDE: &str = "
// ---- bounds sanitizer (src/sanitize.rs): status words 0 count, 1 site, 2 index, 3 length,
// 4 entry point of the first out-of-range index.
@group(1) @binding(0) var<storage, read_write> san_status: array<atomic<u32>, 8>;
var<private> san_entry: u32;
const SAN_POISON: u32 = POISON_VALUEu;
fn san_report(i: u32, n: u32, site: u32) {
    if (atomicAdd(&san_status[0], 1u) == 0u) {
        atomicStore(&san_status[1], site);
        atomicStore(&san_status[2], i);
        atomicStore(&san_status[3], n);
        atomicStore(&san_status[4], san_entry);
    }
}
// A read's index: in range, or recorded and 0 (the read stays inside the binding).
fn san_index(i: u32, n: u32, site: u32) -> u32 {
    if (i < n) {
        return i;
    }
    san_report(i, n, site);
    return 0u;
}
// A write's index: in range, or recorded and 0xffffffff (the write is skipped).
fn san_guard(i: u32, n: u32, site: u32) -> u32 {
    if (i < n) {
        return i;
    }
    san_report(i, n, site);
    return 0xffffffffu;
}
// ---- end of the sanitizer's prelude
";

/// The family `spec`'s WGSL for `cfg` with every storage and workgroup array index checked.
pub fn sanitize(
    spec: &dyn ShaderSource,
    cfg: &ShaderConfig,
    site_base: u32,
    entry_base: u32,
    patch: Option<ShaderPatch>,
) -> Result<Sanitized, Error> {
    let (enables, mut body, origins) = compose_parts(spec, cfg)?;
    if let Some(p) = patch {
        body = p(spec.name(), &body);
    }
    let mut r = Rewriter::new(spec.name(), &body, &origins, site_base, entry_base)?;
    let rewritten = r.rewrite_all()?;
    let prelude = PRELUDE.replace("POISON_VALUE", &format!("{POISON:#010x}"));
    Ok(Sanitized {
        source: enables + &prelude + &rewritten,
        sites: r.sites,
        entries: r.entries,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ident,
    Number,
    Punct,
}

#[derive(Clone, Copy, Debug)]
struct Tok {
    kind: Kind,
    start: usize,
    end: usize,
}

/// WGSL tokens (identifiers, numbers, single punctuation characters), comments skipped.
fn tokenize(src: &str) -> Result<Vec<Tok>, Error> {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            toks.push(Tok {
                kind: Kind::Ident,
                start: s,
                end: i,
            });
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let s = i;
            while i < b.len() {
                let d = b[i];
                let exp =
                    matches!(b[i - 1], b'e' | b'E' | b'p' | b'P') && !src[s..i].starts_with("0x");
                if d.is_ascii_alphanumeric()
                    || d == b'.'
                    || d == b'_'
                    || ((d == b'-' || d == b'+') && exp)
                {
                    i += 1;
                } else {
                    break;
                }
            }
            toks.push(Tok {
                kind: Kind::Number,
                start: s,
                end: i,
            });
        } else if c.is_ascii() {
            toks.push(Tok {
                kind: Kind::Punct,
                start: i,
                end: i + 1,
            });
            i += 1;
        } else {
            return Err(Error::Internal(format!(
                "sanitizer: non-ASCII character in WGSL at byte {i}"
            )));
        }
    }
    Ok(toks)
}

/// A WGSL type as written: a name and its template arguments (types or size expressions).
#[derive(Clone, Debug)]
struct Ty {
    name: String,
    args: Vec<TyArg>,
}

#[derive(Clone, Debug)]
enum TyArg {
    Ty(Ty),
    Expr(String),
}

struct Global {
    space: String,
    ty: Ty,
    binding: Option<String>,
}

struct Member {
    name: String,
    ty: Ty,
    builtin: Option<String>,
}

struct Func {
    name: String,
    /// Token indices of the parameter list's `(` and `)`.
    params: (usize, usize),
    /// Token indices of the body's `{` and `}`.
    body: (usize, usize),
    /// `@workgroup_size` text of an entry point.
    entry: Option<String>,
}

struct Rewriter<'a> {
    family: &'static str,
    src: &'a str,
    toks: Vec<Tok>,
    /// Line start offsets of `src`, and each line's origin.
    line_starts: Vec<usize>,
    origins: &'a [String],
    globals: HashMap<String, Global>,
    structs: HashMap<String, Vec<Member>>,
    aliases: HashMap<String, Ty>,
    funcs: Vec<Func>,
    site_base: u32,
    entry_base: u32,
    sites: Vec<Site>,
    entries: Vec<String>,
    /// The function being rewritten, and the names it declares itself.
    current: String,
    shadowed: BTreeSet<String>,
}

fn matching(toks: &[Tok], src: &str, open: usize) -> Result<usize, Error> {
    let (o, c) = match &src[toks[open].start..toks[open].end] {
        "(" => ("(", ")"),
        "[" => ("[", "]"),
        "{" => ("{", "}"),
        "<" => ("<", ">"),
        t => return Err(Error::Internal(format!("sanitizer: no bracket {t:?}"))),
    };
    let mut depth = 0i32;
    for (i, t) in toks.iter().enumerate().skip(open) {
        let s = &src[t.start..t.end];
        if s == o {
            depth += 1;
        } else if s == c {
            depth -= 1;
            if depth == 0 {
                return Ok(i);
            }
        }
    }
    Err(Error::Internal(format!(
        "sanitizer: unbalanced {o} at byte {}",
        toks[open].start
    )))
}

impl<'a> Rewriter<'a> {
    fn new(
        family: &'static str,
        src: &'a str,
        origins: &'a [String],
        site_base: u32,
        entry_base: u32,
    ) -> Result<Self, Error> {
        let toks = tokenize(src)?;
        let mut line_starts = vec![0];
        line_starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        let mut r = Rewriter {
            family,
            src,
            toks,
            line_starts,
            origins,
            globals: HashMap::new(),
            structs: HashMap::new(),
            aliases: HashMap::new(),
            funcs: Vec::new(),
            site_base,
            entry_base,
            sites: Vec::new(),
            entries: Vec::new(),
            current: String::new(),
            shadowed: BTreeSet::new(),
        };
        r.scan()?;
        Ok(r)
    }

    fn t(&self, i: usize) -> &'a str {
        self.toks.get(i).map_or("", |t| &self.src[t.start..t.end])
    }

    fn text(&self, lo: usize, hi: usize) -> &'a str {
        if lo >= hi {
            return "";
        }
        &self.src[self.toks[lo].start..self.toks[hi - 1].end]
    }

    /// The source between token `i - 1` and token `i`, then token `i`.
    fn emit(&self, i: usize) -> &'a str {
        let from = if i == 0 { 0 } else { self.toks[i - 1].end };
        &self.src[from..self.toks[i].end]
    }

    fn origin(&self, tok: usize) -> String {
        let line = self
            .line_starts
            .partition_point(|&s| s <= self.toks[tok].start)
            .saturating_sub(1);
        self.origins
            .get(line)
            .cloned()
            .unwrap_or_else(|| format!("composed line {}", line + 1))
    }

    /// Parses a type at token `i`; returns it and the token after it.
    fn parse_ty(&self, i: usize) -> Result<(Ty, usize), Error> {
        if self.toks.get(i).map(|t| t.kind) != Some(Kind::Ident) {
            return Err(Error::Internal(format!(
                "sanitizer: expected a type at {:?}",
                self.t(i)
            )));
        }
        let name = self.t(i).to_string();
        if self.t(i + 1) != "<" {
            return Ok((Ty { name, args: vec![] }, i + 1));
        }
        let close = matching(&self.toks, self.src, i + 1)?;
        let mut args = Vec::new();
        let mut j = i + 2;
        while j < close {
            // One argument: up to the next `,` at depth 0.
            let mut k = j;
            let mut depth = 0i32;
            while k < close {
                match self.t(k) {
                    "<" | "(" => depth += 1,
                    ">" | ")" => depth -= 1,
                    "," if depth == 0 => break,
                    _ => {}
                }
                k += 1;
            }
            let is_type = name != "array" || args.is_empty();
            if is_type {
                let (ty, end) = self.parse_ty(j)?;
                if end != k {
                    return Err(Error::Internal(format!(
                        "sanitizer: cannot read type {:?}",
                        self.text(j, k)
                    )));
                }
                args.push(TyArg::Ty(ty));
            } else {
                args.push(TyArg::Expr(self.text(j, k).to_string()));
            }
            j = k + 1;
        }
        Ok((Ty { name, args }, close + 1))
    }

    /// Finds the module-scope variables, structs and functions.
    fn scan(&mut self) -> Result<(), Error> {
        let mut i = 0;
        let mut attrs_start = 0;
        while i < self.toks.len() {
            match self.t(i) {
                "var" => {
                    let mut space = String::new();
                    let mut j = i + 1;
                    if self.t(j) == "<" {
                        let close = matching(&self.toks, self.src, j)?;
                        space = self.t(j + 1).to_string();
                        j = close + 1;
                    }
                    let name = self.t(j).to_string();
                    let (ty, end) = if self.t(j + 1) == ":" {
                        self.parse_ty(j + 2)?
                    } else {
                        return Err(Error::Internal(format!(
                            "sanitizer: module-scope var {name} without a type"
                        )));
                    };
                    let attrs = self.text(attrs_start, i);
                    let binding = attrs.contains("@binding").then(|| attrs.to_string());
                    self.globals.insert(name, Global { space, ty, binding });
                    i = end;
                    attrs_start = i + 1;
                }
                "struct" => {
                    let name = self.t(i + 1).to_string();
                    let close = matching(&self.toks, self.src, i + 2)?;
                    let mut members = Vec::new();
                    let mut j = i + 3;
                    while j < close {
                        let mut builtin = None;
                        while self.t(j) == "@" {
                            let attr = self.t(j + 1);
                            j += 2;
                            if self.t(j) == "(" {
                                let c = matching(&self.toks, self.src, j)?;
                                if attr == "builtin" {
                                    builtin = Some(self.text(j + 1, c).to_string());
                                }
                                j = c + 1;
                            }
                        }
                        let mname = self.t(j).to_string();
                        let (ty, end) = self.parse_ty(j + 2)?;
                        members.push(Member {
                            name: mname,
                            ty,
                            builtin,
                        });
                        j = if self.t(end) == "," { end + 1 } else { end };
                    }
                    self.structs.insert(name, members);
                    i = close + 1;
                    attrs_start = i;
                }
                "fn" => {
                    let name = self.t(i + 1).to_string();
                    let open = i + 2;
                    let close = matching(&self.toks, self.src, open)?;
                    let mut b = close + 1;
                    while self.t(b) != "{" {
                        b += 1;
                    }
                    let end = matching(&self.toks, self.src, b)?;
                    let attrs = self.text(attrs_start, i);
                    let entry = if attrs.contains("@compute") {
                        let k = (attrs_start..i)
                            .find(|&k| self.t(k) == "workgroup_size")
                            .ok_or_else(|| {
                                Error::Internal(format!("sanitizer: {name} has no workgroup_size"))
                            })?;
                        let c = matching(&self.toks, self.src, k + 1)?;
                        let size = self.text(k + 2, c).to_string();
                        if size.contains(',') {
                            return Err(Error::Internal(format!(
                                "sanitizer: {name}: only one-dimensional workgroups"
                            )));
                        }
                        Some(size)
                    } else {
                        None
                    };
                    self.funcs.push(Func {
                        name,
                        params: (open, close),
                        body: (b, end),
                        entry,
                    });
                    i = end + 1;
                    attrs_start = i;
                }
                ";" => {
                    i += 1;
                    attrs_start = i;
                }
                "alias" => {
                    let name = self.t(i + 1).to_string();
                    let (ty, end) = self.parse_ty(i + 3)?;
                    self.aliases.insert(name, ty);
                    i = end;
                }
                "const" | "override" | "const_assert" => {
                    while i < self.toks.len() && self.t(i) != ";" {
                        i += 1;
                    }
                }
                _ => i += 1,
            }
        }
        Ok(())
    }

    /// The names function `f` declares (parameters, `let`, `var`, `const`): there they are not
    /// the globals. (A function indexing a global it also shadows would keep that index
    /// unchecked; the naga test in tests/shaders.rs would catch it.)
    fn locals(&self, f: &Func) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for k in f.params.0..f.body.1 {
            let param = k < f.body.0 && matches!(self.t(k), "(" | ",") && self.t(k + 2) == ":";
            let local = k > f.body.0 && matches!(self.t(k), "let" | "var" | "const");
            if param || local {
                names.insert(self.t(k + 1).to_string());
            }
        }
        names
    }

    /// The dimensions (length expressions) of a storage or workgroup array global.
    fn checked(&self, name: &str) -> Option<Vec<String>> {
        if self.shadowed.contains(name) {
            return None;
        }
        let g = self.globals.get(name)?;
        if g.space != "storage" && g.space != "workgroup" {
            return None;
        }
        let mut dims = Vec::new();
        let mut ty = self.resolve(&g.ty);
        while ty.name == "array" {
            dims.push(match ty.args.get(1) {
                Some(TyArg::Expr(e)) => format!("u32({e})"),
                _ if dims.is_empty() => format!("arrayLength(&{name})"),
                _ => return None,
            });
            match ty.args.first() {
                Some(TyArg::Ty(t)) => ty = self.resolve(t),
                _ => return None,
            }
        }
        (!dims.is_empty()).then_some(dims)
    }

    /// `ty` with aliases replaced.
    fn resolve<'t>(&'t self, mut ty: &'t Ty) -> &'t Ty {
        while let Some(t) = self.aliases.get(&ty.name) {
            ty = t;
        }
        ty
    }

    fn site(&mut self, name: &str, tok: usize) -> u32 {
        let g = &self.globals[name];
        let array = match &g.binding {
            Some(b) => format!("{name} ({}, {})", b.trim(), g.space),
            None => format!("{name} ({})", g.space),
        };
        self.sites.push(Site {
            family: self.family,
            function: self.current.clone(),
            array,
            location: self.origin(tok),
        });
        self.site_base + self.sites.len() as u32 - 1
    }

    fn rewrite_all(&mut self) -> Result<String, Error> {
        let mut out = String::new();
        let mut i = 0;
        let funcs = std::mem::take(&mut self.funcs);
        for f in &funcs {
            // Module scope up to the function's body, copied (an entry point may get a
            // parameter).
            self.current = f.name.clone();
            self.shadowed = self.locals(f);
            let mut added_param = None;
            let lid = if let Some(_size) = &f.entry {
                match self.find_lid(f)? {
                    Some(l) => l,
                    None => {
                        added_param = Some(f.params.0);
                        "san_lid".to_string()
                    }
                }
            } else {
                String::new()
            };
            while i <= f.body.0 {
                out.push_str(self.emit(i));
                if Some(i) == added_param {
                    out.push_str("@builtin(local_invocation_index) san_lid: u32, ");
                }
                i += 1;
            }
            if let Some(size) = &f.entry {
                out.push_str(&self.prologue(&funcs, f, &lid, size)?);
            }
            out.push_str(&self.rewrite(f.body.0 + 1, f.body.1, true)?);
            i = f.body.1;
        }
        while i < self.toks.len() {
            out.push_str(self.emit(i));
            i += 1;
        }
        out.push_str(&self.src[self.toks.last().map_or(0, |t| t.end)..]);
        self.funcs = funcs;
        Ok(out)
    }

    /// The entry point's local invocation index, from its parameters (directly or in a struct
    /// of builtins), or `None` (the rewrite adds one).
    fn find_lid(&self, f: &Func) -> Result<Option<String>, Error> {
        let (lo, hi) = f.params;
        for k in lo..hi {
            if self.t(k) == "builtin" && self.t(k + 2) == "local_invocation_index" {
                return Ok(Some(self.t(k + 4).to_string()));
            }
        }
        for k in lo..hi {
            if self.t(k + 1) == ":"
                && let Some(members) = self.structs.get(self.t(k + 2))
            {
                for m in members {
                    match m.builtin.as_deref() {
                        Some("local_invocation_index") => {
                            return Ok(Some(format!("{}.{}", self.t(k), m.name)));
                        }
                        Some("local_invocation_id") => {
                            return Ok(Some(format!("{}.{}.x", self.t(k), m.name)));
                        }
                        _ => {}
                    }
                }
            }
            if self.t(k) == "builtin" && self.t(k + 2) == "local_invocation_id" {
                return Ok(Some(format!("{}.x", self.t(k + 4))));
            }
        }
        Ok(None)
    }

    /// The workgroup variables an entry point uses (through the functions it calls).
    fn workgroup_vars(&self, funcs: &[Func], entry: &Func) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![entry.name.clone()];
        let mut vars = BTreeSet::new();
        while let Some(name) = stack.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let Some(f) = funcs.iter().find(|f| f.name == name) else {
                continue;
            };
            for k in f.body.0..f.body.1 {
                let id = self.t(k);
                if self.globals.get(id).is_some_and(|g| g.space == "workgroup") {
                    vars.insert(id.to_string());
                } else if funcs.iter().any(|g| g.name == id) {
                    stack.push(id.to_string());
                }
            }
        }
        vars
    }

    /// `san_entry = ID;`, then every workgroup variable the entry point uses filled with poison,
    /// then a barrier.
    fn prologue(
        &mut self,
        funcs: &[Func],
        f: &Func,
        lid: &str,
        size: &str,
    ) -> Result<String, Error> {
        let id = self.entry_base + self.entries.len() as u32;
        self.entries.push(f.name.clone());
        let mut s = format!("\n    san_entry = {id}u;\n");
        let vars = self.workgroup_vars(funcs, f);
        for v in &vars {
            let ty = self.globals[v].ty.clone();
            s.push_str(&self.fill(v, &ty, lid, size, 0)?);
        }
        if !vars.is_empty() {
            s.push_str("    workgroupBarrier();\n");
        }
        Ok(s)
    }

    /// Statements filling the place `place` of type `ty` with poison, spread over the
    /// workgroup's invocations.
    fn fill(
        &self,
        place: &str,
        ty: &Ty,
        lid: &str,
        size: &str,
        depth: usize,
    ) -> Result<String, Error> {
        let ty = self.resolve(ty);
        match ty.name.as_str() {
            "array" => {
                let (Some(TyArg::Ty(elem)), Some(TyArg::Expr(n))) =
                    (ty.args.first(), ty.args.get(1))
                else {
                    return Err(Error::Internal(format!(
                        "sanitizer: cannot poison {place}: not a fixed-size array"
                    )));
                };
                let v = format!("san_p{depth}");
                let inner = self.fill(&format!("{place}[{v}]"), elem, lid, size, depth + 1)?;
                if depth == 0 {
                    Ok(format!(
                        "    for (var {v} = {lid}; {v} < u32({n}); {v} += u32({size})) {{\n    {inner}    }}\n"
                    ))
                } else {
                    Ok(format!(
                        "for (var {v} = 0u; {v} < u32({n}); {v}++) {{ {inner} }}\n"
                    ))
                }
            }
            "atomic" => {
                let stmt = format!("atomicStore(&{place}, SAN_POISON);\n");
                Ok(if depth == 0 {
                    format!("    if ({lid} == 0u) {{ {stmt} }}\n")
                } else {
                    stmt
                })
            }
            _ => {
                let value = self.poison_value(ty)?;
                let stmt = format!("{place} = {value};\n");
                Ok(if depth == 0 {
                    format!("    if ({lid} == 0u) {{ {stmt} }}\n")
                } else {
                    stmt
                })
            }
        }
    }

    /// A value of type `ty` made of poison words.
    fn poison_value(&self, ty: &Ty) -> Result<String, Error> {
        let scalar = |s: &str| -> Result<String, Error> {
            Ok(match s {
                "u32" => "SAN_POISON".into(),
                "i32" => "bitcast<i32>(SAN_POISON)".into(),
                "f32" => "bitcast<f32>(SAN_POISON)".into(),
                "f16" => "f16(bitcast<f32>(SAN_POISON))".into(),
                "bool" => "true".into(),
                other => {
                    return Err(Error::Internal(format!(
                        "sanitizer: cannot poison a value of type {other}"
                    )));
                }
            })
        };
        let ty = self.resolve(ty);
        let n = ty.name.as_str();
        if let Some(rest) = n.strip_prefix("vec").filter(|r| !r.is_empty()) {
            let (dim, suffix) = rest.split_at(1);
            let elem = match (suffix, ty.args.first()) {
                ("", Some(TyArg::Ty(t))) => t.name.clone(),
                ("u", _) => "u32".into(),
                ("i", _) => "i32".into(),
                ("f", _) => "f32".into(),
                ("h", _) => "f16".into(),
                _ => {
                    return Err(Error::Internal(format!("sanitizer: cannot poison {n}")));
                }
            };
            return Ok(format!("vec{dim}<{elem}>({})", scalar(&elem)?));
        }
        if let Some(members) = self.structs.get(n) {
            let fields = members
                .iter()
                .map(|m| self.poison_value(&m.ty))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(format!("{n}({})", fields.join(", ")));
        }
        scalar(n)
    }

    /// Rewrites tokens `lo .. hi` (with the source before each), checking every array index;
    /// `statements`: the range is a function body, whose writing statements get guards.
    fn rewrite(&mut self, lo: usize, hi: usize, statements: bool) -> Result<String, Error> {
        let mut out = String::new();
        let mut i = lo;
        let mut parens = 0i32;
        while i < hi {
            let at_statement =
                statements && parens == 0 && (i == lo || matches!(self.t(i - 1), ";" | "{" | "}"));
            if at_statement && let Some((name_tok, end)) = self.written_statement(i, hi)? {
                out.push_str(&self.guarded(i, name_tok, end)?);
                i = end + 1;
                continue;
            }
            match self.t(i) {
                "(" => parens += 1,
                ")" => parens -= 1,
                _ => {}
            }
            if self.t(i + 1) == "["
                && self.toks[i].kind == Kind::Ident
                && (i == 0 || self.t(i - 1) != ".")
                && let Some(dims) = self.checked(self.t(i))
            {
                let name = self.t(i).to_string();
                out.push_str(self.emit(i));
                i += 1;
                for len in dims {
                    if self.t(i) != "[" {
                        break;
                    }
                    let close = matching(&self.toks, self.src, i)?;
                    let site = self.site(&name, i);
                    let inner = self.rewrite(i + 1, close, false)?;
                    out.push_str(self.emit(i));
                    out.push_str(&format!("san_index(u32({inner}), {len}, {site}u)"));
                    out.push_str(self.emit(close));
                    i = close + 1;
                }
                continue;
            }
            out.push_str(self.emit(i));
            i += 1;
        }
        Ok(out)
    }

    /// A statement at token `i` that writes through an index of a checked array: `name[..] ...
    /// = ..;`, or a call `atomicXxx(&name[..], ..);` (`_ =` in front or not). Returns the
    /// array's token and the statement's `;`.
    fn written_statement(&self, i: usize, hi: usize) -> Result<Option<(usize, usize)>, Error> {
        let mut k = i;
        if self.t(k) == "_" && self.t(k + 1) == "=" {
            k += 2;
        }
        let name_tok =
            if self.t(k).starts_with("atomic") && self.t(k + 1) == "(" && self.t(k + 2) == "&" {
                k + 3
            } else if k == i {
                k
            } else {
                return Ok(None);
            };
        if self.t(name_tok + 1) != "[" || self.checked(self.t(name_tok)).is_none() {
            return Ok(None);
        }
        let mut depth = 0i32;
        for j in i..hi {
            match self.t(j) {
                "(" | "[" | "{" => depth += 1,
                ")" | "]" | "}" => depth -= 1,
                ";" if depth == 0 => return Ok(Some((name_tok, j))),
                _ => {}
            }
        }
        Ok(None)
    }

    /// `{ let san_gS = san_guard(..); ..; if (san_gS != 0xffffffffu && ..) { statement } }`.
    fn guarded(&mut self, start: usize, name_tok: usize, end: usize) -> Result<String, Error> {
        let name = self.t(name_tok).to_string();
        let dims = self.checked(&name).unwrap_or_default();
        let mut lets = String::new();
        let mut conds = Vec::new();
        let mut target = String::new();
        let mut i = name_tok + 1;
        for len in dims {
            if self.t(i) != "[" {
                break;
            }
            let close = matching(&self.toks, self.src, i)?;
            let site = self.site(&name, i);
            let inner = self.rewrite(i + 1, close, false)?;
            let var = format!("san_g{site}");
            lets.push_str(&format!(
                "let {var} = san_guard(u32({}), {len}, {site}u); ",
                inner.trim()
            ));
            conds.push(format!("{var} != 0xffffffffu"));
            target.push_str(&format!("[{var}]"));
            i = close + 1;
        }
        let head = self.rewrite(start, name_tok, false)?;
        let rest = self.rewrite(i, end + 1, false)?;
        let lead = &self.src[if start == 0 {
            0
        } else {
            self.toks[start - 1].end
        }..self.toks[start].start];
        Ok(format!(
            "{lead}{{ {lets}if ({}) {{ {}{name}{target}{rest} }} }}",
            conds.join(" && "),
            head.trim_start(),
        ))
    }
}

/// The sanitizer of one [`crate::Gpu`]: its status buffer, bound at group 1 of every pipeline,
/// and the table of sites and entry points of every family built so far.
pub(crate) struct Sanitizer {
    // Read back by the blocking check, native only: in the browser the sanitizer's status is
    // bound but not read (a page cannot wait on a map).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    status: wgpu::Buffer,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) bind_group: wgpu::BindGroup,
    table: Mutex<Table>,
    patch: Option<ShaderPatch>,
}

#[derive(Default)]
struct Table {
    sites: Vec<Site>,
    /// (family, entry point) by entry id.
    entries: Vec<(&'static str, String)>,
}

const STATUS_BYTES: u64 = 32;

impl Sanitizer {
    pub(crate) fn new(device: &wgpu::Device, patch: Option<ShaderPatch>) -> Sanitizer {
        let status = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bounds sanitizer status"),
            size: STATUS_BYTES,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("bounds sanitizer"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: false },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }],
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("bounds sanitizer"),
            layout: &layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: status.as_entire_binding(),
            }],
        });
        Sanitizer {
            status,
            layout,
            bind_group,
            table: Mutex::new(Table::default()),
            patch,
        }
    }

    /// The family's sanitized WGSL; its sites and entry points join the table.
    pub(crate) fn compose(
        &self,
        spec: &dyn ShaderSource,
        cfg: &ShaderConfig,
    ) -> Result<String, Error> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let s = sanitize(
            spec,
            cfg,
            table.sites.len() as u32,
            table.entries.len() as u32,
            self.patch,
        )?;
        table.sites.extend(s.sites);
        table
            .entries
            .extend(s.entries.into_iter().map(|e| (spec.name(), e)));
        Ok(s.source)
    }

    /// Reads (and clears) the status after the work submitted so far: `Err` naming the first
    /// out-of-range index recorded since the last check. Blocks (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn check(&self, device: &wgpu::Device, queue: &wgpu::Queue) -> Result<(), Error> {
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bounds sanitizer readback"),
            size: STATUS_BYTES,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder =
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(&self.status, 0, &staging, 0, Some(STATUS_BYTES));
        encoder.clear_buffer(&self.status, 0, None);
        queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        rx.recv()
            .map_err(|e| Error::Readback(e.to_string()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let words: Vec<u32> = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::Readback(e.to_string()))?;
            bytemuck::cast_slice(&view[..]).to_vec()
        };
        staging.unmap();
        if words[0] == 0 {
            return Ok(());
        }
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let site = table.sites.get(words[1] as usize);
        let entry = table.entries.get(words[4] as usize);
        Err(Error::OutOfBounds(Box::new(
            crate::error::BoundsViolation {
                family: site.map_or_else(|| "?".into(), |s| s.family.to_string()),
                entry_point: entry.map_or_else(|| format!("entry #{}", words[4]), |e| e.1.clone()),
                array: site.map_or_else(|| format!("site #{}", words[1]), |s| s.array.clone()),
                function: site.map_or_else(String::new, |s| s.function.clone()),
                location: site.map_or_else(String::new, |s| s.location.clone()),
                index: words[2],
                length: words[3],
                count: words[0],
            },
        )))
    }
}
