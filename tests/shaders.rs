//! Every kernel family, composed for every device configuration, parses and validates with naga.
//! Needs no GPU.

use gumbel_wgpu::FamilySpec;
use gumbel_wgpu::shader::{ShaderConfig, compose};
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn capabilities(cfg: &ShaderConfig) -> Capabilities {
    let mut caps = Capabilities::empty();
    if cfg.int64 {
        caps |= Capabilities::SHADER_INT64;
    }
    if cfg.subgroups {
        caps |= Capabilities::SUBGROUP;
    }
    if cfg.f16 {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    caps
}

fn family(name: &str) -> FamilySpec {
    gumbel_wgpu::kernel_specs()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
}

#[test]
fn every_kernel_family_validates_in_every_configuration() {
    for spec in gumbel_wgpu::kernel_specs() {
        let name = spec.name;
        for cfg in ShaderConfig::all() {
            let src = compose(&spec, &cfg).unwrap();
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{name} {cfg:?}: {}", e.emit_to_string(&src)));
            Validator::new(ValidationFlags::all(), capabilities(&cfg))
                .validate(&module)
                .unwrap_or_else(|e| panic!("{name} {cfg:?}: {}", e.emit_to_string(&src)));
        }
    }
}

#[test]
fn the_portable_philox_needs_no_64_bit_integers() {
    let cfg = ShaderConfig {
        int64: false,
        subgroups: false,
        f16: false,
    };
    for spec in gumbel_wgpu::kernel_specs() {
        let name = spec.name;
        let src = compose(&spec, &cfg).unwrap();
        let code = src
            .lines()
            .map(|l| l.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            !code.contains("u64"),
            "{name} uses u64 without SHADER_INT64"
        );
    }
}

#[test]
fn philox_in_wgsl_runs_as_many_rounds_as_the_rust_constant_says() {
    let src = compose(
        &family("random"),
        &ShaderConfig {
            int64: true,
            subgroups: false,
            f16: false,
        },
    )
    .unwrap();
    let calls = src.matches("= philox_round(").count();
    assert_eq!(calls as u32, gumbel_wgpu::philox::PHILOX_ROUNDS);
}

#[test]
fn shared_constants_come_from_rust() {
    let src = compose(
        &family("random"),
        &ShaderConfig {
            int64: false,
            subgroups: false,
            f16: false,
        },
    )
    .unwrap();
    for (name, value) in [
        ("PHILOX_M0", gumbel_wgpu::philox::PHILOX_M0),
        ("PHILOX_M1", gumbel_wgpu::philox::PHILOX_M1),
        ("PHILOX_W0", gumbel_wgpu::philox::PHILOX_W0),
        ("PHILOX_W1", gumbel_wgpu::philox::PHILOX_W1),
    ] {
        assert!(
            src.contains(&format!("const {name}: u32 = {value:#010x}u;")),
            "{name}"
        );
    }
}

#[test]
fn uniform_parameters_come_from_rust_and_have_no_padding() {
    for spec in gumbel_wgpu::kernel_specs() {
        let name = spec.name;
        // One source: no shader declares its uniform by hand; `#import params` inserts the
        // struct generated from the Rust definition.
        assert!(
            !spec.source.contains("var<uniform>") && spec.source.contains("#import params"),
            "{name}: declares its own uniform parameters"
        );
        let cfg = ShaderConfig {
            int64: true,
            subgroups: false,
            f16: false,
        };
        let src = compose(&spec, &cfg).unwrap();
        let module = naga::front::wgsl::parse_str(&src).unwrap();
        let uniforms: Vec<_> = module
            .global_variables
            .iter()
            .filter(|(_, g)| g.space == naga::AddressSpace::Uniform)
            .collect();
        assert_eq!(uniforms.len(), 1, "{name}: one uniform, the parameters");
        let (_, g) = uniforms[0];
        assert_eq!(
            g.binding.as_ref().map(|b| (b.group, b.binding)),
            Some((0, 0)),
            "{name}"
        );
        // Every member a 32-bit scalar and no padding: the layout of the #[repr(C)] Rust twin,
        // whose fields the macro restricts to u32 / i32 / f32.
        let naga::TypeInner::Struct { members, span } = &module.types[g.ty].inner else {
            panic!("{name}: the uniform is not a struct");
        };
        for m in members {
            assert!(
                matches!(module.types[m.ty].inner, naga::TypeInner::Scalar(s) if s.width == 4),
                "{name}: {:?} is not a 32-bit scalar",
                m.name
            );
        }
        assert_eq!(*span as usize, members.len() * 4, "{name}: padding");
    }
}

#[test]
fn tokens_and_speculative_share_one_arg_max_with_its_subgroup_path() {
    // The arg-max tree and its order are pieces of shaders/common, imported (not redefined) by
    // both kernels; the subgroup reduction is composed in exactly where the adapter has them.
    for name in ["tokens", "speculative"] {
        let spec = family(name);
        for cfg in ShaderConfig::all() {
            let src = compose(&spec, &cfg).unwrap();
            for f in ["fn before(", "fn reduce_best_tree(", "fn reduce_best("] {
                assert_eq!(src.matches(f).count(), 1, "{name} {cfg:?}: {f}");
                assert!(!spec.source.contains(f), "{name} defines {f} itself");
            }
            assert_eq!(
                src.contains("subgroupMax("),
                cfg.subgroups,
                "{name} {cfg:?}: subgroup arg-max"
            );
        }
    }
}

/// Bytes of workgroup memory of each entry point of `src`: the workgroup variables it uses
/// (naga's per-entry-point global uses; the backends write only those for a pipeline, and
/// WebGPU counts only those), by entry point name.
fn workgroup_bytes(src: &str, cfg: &ShaderConfig) -> Vec<(String, u32)> {
    let module = naga::front::wgsl::parse_str(src).unwrap();
    let info = Validator::new(ValidationFlags::all(), capabilities(cfg))
        .validate(&module)
        .unwrap();
    module
        .entry_points
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            let uses = info.get_entry_point(i);
            let bytes = module
                .global_variables
                .iter()
                .filter(|(h, v)| v.space == naga::AddressSpace::WorkGroup && !uses[*h].is_empty())
                .map(|(_, v)| module.types[v.ty].inner.size(module.to_ctx()))
                .sum();
            (ep.name.clone(), bytes)
        })
        .collect()
}

/// WebGPU guarantees 16 KiB of workgroup memory (`maxComputeWorkgroupStorageSize` 16384), and
/// browsers grant no more by default: every entry point of every family fits that in every
/// configuration. The forward's larger on-chip tiers are separate families built only where the
/// device grants more: each variant fits its tier.
#[test]
fn every_family_fits_webgpus_16_kib_of_workgroup_memory() {
    for spec in gumbel_wgpu::kernel_specs() {
        for cfg in ShaderConfig::all() {
            let src = compose(&spec, &cfg).unwrap();
            for (ep, bytes) in workgroup_bytes(&src, &cfg) {
                assert!(bytes <= 16384, "{} {ep} {cfg:?}: {bytes} bytes", spec.name);
            }
        }
    }
    let variants = gumbel_wgpu::GumbelSoftmax::variant_specs();
    for (v, (needs_subgroups, spec)) in variants.into_iter().enumerate() {
        // The tiers' budgets, in the order of the variants (src/softmax.rs, ONCHIP_TIERS).
        let budget = [16352, 32768, 49152][v % 3];
        for cfg in ShaderConfig::all()
            .into_iter()
            .filter(|c| c.subgroups || !needs_subgroups)
        {
            let src = compose(&spec, &cfg).unwrap();
            let sizes = workgroup_bytes(&src, &cfg);
            for (ep, bytes) in &sizes {
                assert!(
                    *bytes <= budget,
                    "forward variant {v} {ep} {cfg:?}: {bytes} bytes"
                );
            }
            // The on-chip kernel uses most of its tier: the cache is sized from it.
            let onchip = sizes
                .iter()
                .find(|(ep, _)| ep == "softmax_onchip")
                .unwrap()
                .1;
            assert!(
                onchip + 512 > budget,
                "forward variant {v} {cfg:?}: {onchip} bytes"
            );
        }
    }
}

/// Every family's variants (the forward's tiers included), with whether it needs subgroups.
fn all_specs() -> Vec<(bool, FamilySpec)> {
    let mut v: Vec<_> = gumbel_wgpu::kernel_specs()
        .into_iter()
        .map(|s| (false, s))
        .collect();
    v.extend(gumbel_wgpu::GumbelSoftmax::variant_specs());
    v
}

/// The bounds sanitizer's rewrite (src/sanitize.rs) of every family, in every configuration,
/// validates with naga, and every index of a storage or workgroup array goes through
/// `san_index` or `san_guard`: no array access of any kernel escapes the check. (Dynamic
/// indices into vectors are not arrays and stay unchecked.)
#[test]
fn the_bounds_sanitizer_checks_every_array_index_of_every_family() {
    use naga::{AddressSpace, Expression, TypeInner};
    for (needs_subgroups, spec) in all_specs() {
        let name = spec.name;
        for cfg in ShaderConfig::all() {
            if needs_subgroups && !cfg.subgroups {
                continue;
            }
            let san = gumbel_wgpu::sanitize::sanitize(&spec, &cfg, 0, 0, None)
                .unwrap_or_else(|e| panic!("{name} {cfg:?}: {e}"));
            let src = &san.source;
            let module = naga::front::wgsl::parse_str(src)
                .unwrap_or_else(|e| panic!("{name} {cfg:?}: {}", e.emit_to_string(src)));
            let info = Validator::new(ValidationFlags::all(), capabilities(&cfg))
                .validate(&module)
                .unwrap_or_else(|e| panic!("{name} {cfg:?}: {}", e.emit_to_string(src)));
            let checkers: Vec<_> = module
                .functions
                .iter()
                .filter(|(_, f)| matches!(f.name.as_deref(), Some("san_index") | Some("san_guard")))
                .map(|(h, _)| h)
                .collect();
            assert_eq!(checkers.len(), 2, "{name}");
            let functions = module.functions.iter().map(|(h, f)| (f, &info[h])).chain(
                module
                    .entry_points
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (&e.function, info.get_entry_point(i))),
            );
            let mut checked = 0;
            for (f, finfo) in functions {
                let fname = f.name.clone().unwrap_or_default();
                if fname.starts_with("san_") {
                    continue;
                }
                // Which call produced each call result.
                let mut calls = std::collections::HashMap::new();
                fn walk(
                    block: &naga::Block,
                    calls: &mut std::collections::HashMap<
                        naga::Handle<Expression>,
                        naga::Handle<naga::Function>,
                    >,
                ) {
                    for s in block.iter() {
                        match s {
                            naga::Statement::Call {
                                function,
                                result: Some(r),
                                ..
                            } => {
                                calls.insert(*r, *function);
                            }
                            naga::Statement::Block(b) => walk(b, calls),
                            naga::Statement::If { accept, reject, .. } => {
                                walk(accept, calls);
                                walk(reject, calls);
                            }
                            naga::Statement::Loop {
                                body, continuing, ..
                            } => {
                                walk(body, calls);
                                walk(continuing, calls);
                            }
                            naga::Statement::Switch { cases, .. } => {
                                for c in cases {
                                    walk(&c.body, calls);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                walk(&f.body, &mut calls);
                let root = |mut e: naga::Handle<Expression>| loop {
                    match f.expressions[e] {
                        Expression::Access { base, .. } | Expression::AccessIndex { base, .. } => {
                            e = base
                        }
                        Expression::GlobalVariable(g) => return Some(g),
                        _ => return None,
                    }
                };
                for (h, e) in f.expressions.iter() {
                    let (base, index) = match *e {
                        Expression::Access { base, index } => (base, Some(index)),
                        Expression::AccessIndex { base, .. } => (base, None),
                        _ => continue,
                    };
                    let Some(g) = root(base) else { continue };
                    let var = &module.global_variables[g];
                    if var.name.as_deref() == Some("san_status")
                        || !matches!(
                            var.space,
                            AddressSpace::Storage { .. } | AddressSpace::WorkGroup
                        )
                    {
                        continue;
                    }
                    let ty = finfo[base].ty.inner_with(&module.types);
                    let is_array = match ty {
                        TypeInner::Pointer { base, .. } => {
                            matches!(module.types[*base].inner, TypeInner::Array { .. })
                        }
                        TypeInner::Array { .. } => true,
                        _ => false,
                    };
                    if !is_array {
                        continue;
                    }
                    // The prologue's poison fill indexes by its own loop counters `san_p*`,
                    // which stay below the declared lengths.
                    let fill_counter = |i: naga::Handle<Expression>| match f.expressions[i] {
                        Expression::Load { pointer } => matches!(
                            f.expressions[pointer],
                            Expression::LocalVariable(l)
                                if f.local_variables[l]
                                    .name
                                    .as_deref()
                                    .is_some_and(|n| n.starts_with("san_p"))
                        ),
                        _ => false,
                    };
                    let ok = index.is_some_and(|i| {
                        calls.get(&i).is_some_and(|c| checkers.contains(c)) || fill_counter(i)
                    });
                    assert!(
                        ok,
                        "{name} {cfg:?}: fn {fname}: an unchecked index of {:?} ({h:?})",
                        var.name
                    );
                    checked += 1;
                }
            }
            assert!(checked > 0, "{name}: no array access seen");
        }
    }
}
