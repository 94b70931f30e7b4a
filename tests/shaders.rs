//! Every kernel family, composed for every device configuration, parses and validates with naga.
//! Needs no GPU.

use gumbel_wgpu::shader::{KERNELS, ShaderConfig, compose, uniform_params};
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

#[test]
fn every_kernel_family_validates_in_every_configuration() {
    for (name, _) in KERNELS {
        for cfg in ShaderConfig::all() {
            let src = compose(name, &cfg).unwrap();
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
    for (name, _) in KERNELS {
        let src = compose(name, &cfg).unwrap();
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
        "random",
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
        "random",
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
fn every_uniform_struct_matches_its_rust_twin() {
    let params = uniform_params();
    for (name, _) in KERNELS {
        assert!(
            params.iter().any(|(f, _, _)| f == name),
            "{name}: no uniform struct registered"
        );
    }
    for (family, struct_name, rust_size) in params {
        let src = compose(
            family,
            &ShaderConfig {
                int64: true,
                subgroups: false,
                f16: false,
            },
        )
        .unwrap();
        let module = naga::front::wgsl::parse_str(&src).unwrap();
        let (_, ty) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some(struct_name))
            .unwrap_or_else(|| panic!("{family}: no struct {struct_name}"));
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("{family}: {struct_name} is not a struct");
        };
        assert_eq!(
            *span as usize, rust_size,
            "{family}: {struct_name} size differs from Rust"
        );
        for m in members {
            let inner = &module.types[m.ty].inner;
            assert!(
                matches!(inner, naga::TypeInner::Scalar(s) if s.width == 4),
                "{family}: {struct_name}.{:?} is not a 32-bit scalar",
                m.name
            );
        }
        assert_eq!(
            members.len() * 4,
            rust_size,
            "{family}: {struct_name} has padding or arrays"
        );
        // And it is what binding 0 holds.
        assert!(
            module
                .global_variables
                .iter()
                .any(|(_, g)| g.space == naga::AddressSpace::Uniform
                    && module.types[g.ty].name.as_deref() == Some(struct_name))
        );
    }
}
