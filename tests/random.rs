//! Random fills on a real adapter against the CPU reference: Philox words bit for bit, uniforms
//! bit for bit, Gumbel noise within a stated tolerance, and the statistics of both.

mod common;
use common::*;
use gumbel_wgpu::{Error, Gpu, RandomJob, RandomKind, Stream, cpu};
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// Fills a sentinel-poisoned buffer of `len + 7` elements through the buffer-level API and checks
/// that elements `0..len` equal the CPU words and the 7 after them were left alone.
fn check_words(gpu: &Gpu, stream: Stream, len: usize) {
    let out = poisoned(gpu, len + 7);
    let kernels = gpu.random_fill().unwrap();
    run(gpu, |enc| {
        let job = RandomJob {
            kind: RandomKind::Words,
            stream,
            out: out.slice(..len as u64 * 4),
        };
        kernels.record(enc, &job).unwrap()
    });
    let got: Vec<u32> = gpu.read_buffer(&out, len + 7).unwrap();
    let want = cpu::random_u32(stream, len);
    if let Some(i) = (0..len).find(|&i| got[i] != want[i]) {
        panic!(
            "{stream:?} len {len}: word {i} is {:#010x}, CPU says {:#010x}",
            got[i], want[i]
        );
    }
    assert!(
        got[len..].iter().all(|&w| w == SENTINEL),
        "{stream:?} len {len}: wrote past the end"
    );
}

#[test]
fn gpu_words_equal_cpu_words_at_awkward_sizes_and_offsets() {
    let mut rng = StdRng::seed_from_u64(1);
    for gpu in gpus() {
        for &len in AWKWARD_SIZES {
            for phase in 0..4u64 {
                let stream = Stream {
                    seed: rng.random(),
                    offset: rng.random::<u64>() / 8 * 4 + phase,
                };
                check_words(gpu, stream, len);
            }
        }
        // Block indices above 2^32, and an offset that wraps past u64::MAX.
        check_words(
            gpu,
            Stream {
                seed: rng.random(),
                offset: (5u64 << 34) + 3,
            },
            4099,
        );
        check_words(
            gpu,
            Stream {
                seed: rng.random(),
                offset: u64::MAX - 6,
            },
            4099,
        );
        check_words(
            gpu,
            Stream {
                seed: u64::MAX,
                offset: (u64::from(u32::MAX) << 2) + 1,
            },
            4099,
        );
    }
}

#[test]
fn ten_million_gpu_words_equal_cpu_words() {
    let mut rng = StdRng::seed_from_u64(2);
    for gpu in gpus() {
        for len in [4_000_001usize, 6_000_003] {
            let stream = Stream {
                seed: rng.random(),
                offset: rng.random::<u64>() | 1,
            };
            assert_eq!(
                gpu.random_u32(stream, len).unwrap(),
                cpu::random_u32(stream, len),
                "{stream:?}"
            );
        }
    }
}

#[test]
fn more_than_65535_workgroups_per_dimension() {
    // 256 threads x 4 words per workgroup: this needs a 2-D grid of workgroups.
    let len = 65_535 * 1024 + 4099;
    let stream = Stream {
        seed: 77,
        offset: 2,
    };
    let got = gpu().random_u32(stream, len).unwrap();
    assert_eq!(got, cpu::random_u32(stream, len));
}

#[test]
fn chunked_dispatch_gives_the_same_numbers_as_one_dispatch() {
    // As if storage bindings held only 1024 elements: 11 chunks, the stream continues across.
    let small = chunked_gpu(1024);
    for (kind, stream, len) in [
        (
            RandomKind::Words,
            Stream { seed: 5, offset: 3 },
            10_001usize,
        ),
        (
            RandomKind::Gumbel,
            Stream {
                seed: 6,
                offset: (1 << 40) + 1,
            },
            10_003,
        ),
    ] {
        let out = poisoned(&small, len);
        let kernels = small.random_fill().unwrap();
        run(&small, |enc| {
            let job = RandomJob {
                kind,
                stream,
                out: out.slice(..),
            };
            kernels.record(enc, &job).unwrap()
        });
        let chunked: Vec<u32> = small.read_buffer(&out, len).unwrap();
        let whole: Vec<u32> = match kind {
            RandomKind::Words => gpu().random_u32(stream, len).unwrap(),
            _ => gpu()
                .gumbel(stream, len)
                .unwrap()
                .into_iter()
                .map(f32::to_bits)
                .collect(),
        };
        assert_eq!(chunked, whole, "{kind:?}");
    }
}

/// Words around every boundary of the uniform map: 0, the 2^23 switch, powers of two, the top.
fn edge_words() -> Vec<u32> {
    let mut w = vec![
        0, 1, 2, 3, 0x7f_ffff, 0x80_0000, 0x80_0001, 0xff_ffff, 0x100_0000, 0x100_0001,
    ];
    for bit in 0..32 {
        let p = 1u32 << bit;
        w.extend([p, p - 1, p | (p >> 1), p.wrapping_add(p - 1)]);
    }
    w.extend([
        0x8000_0000,
        0xffff_fe00,
        0xffff_feff,
        0xffff_ff00,
        0xffff_fffe,
        0xffff_ffff,
    ]);
    let mut rng = StdRng::seed_from_u64(3);
    w.extend((0..100_000).map(|_| rng.random::<u32>()));
    w
}

#[test]
fn uniform_map_is_bit_identical_to_the_cpu_and_stays_inside_0_1() {
    let words = edge_words();
    for gpu in gpus() {
        let got = gpu.transform_words(RandomKind::Uniform, &words).unwrap();
        for (&w, &u) in words.iter().zip(&got) {
            assert_eq!(
                u.to_bits(),
                cpu::uniform_from_word(w).to_bits(),
                "word {w:#010x}"
            );
            assert!(u > 0.0 && u < 1.0, "word {w:#010x} gives {u}");
        }
        let ends = gpu
            .transform_words(RandomKind::Uniform, &[0, u32::MAX])
            .unwrap();
        assert_eq!(ends, [2f32.powi(-33), 1.0 - 2f32.powi(-24)]);
    }
    let mut rng = StdRng::seed_from_u64(4);
    let stream = Stream {
        seed: rng.random(),
        offset: 1,
    };
    assert_eq!(
        gpu().uniform(stream, 65537).unwrap(),
        cpu::uniform(stream, 65537)
    );
}

/// GPU Gumbel noise is computed in f32 with WGSL's `log` (absolute error 2^-21 in [0.5, 2],
/// 3 ulp elsewhere, by the WGSL spec). The tolerance against the f64 reference:
/// |g_gpu - g_ref| <= 4e-6 * max(1, |g_ref|), about 16 f32 ulp at |g| = 2 and 2^-18 near 0.
fn gumbel_tolerance(g_ref: f64) -> f64 {
    4e-6 * g_ref.abs().max(1.0)
}

#[test]
fn gumbel_map_matches_the_f64_reference_including_both_tails() {
    let words = edge_words();
    for gpu in gpus() {
        let got = gpu.transform_words(RandomKind::Gumbel, &words).unwrap();
        let mut worst: f64 = 0.0;
        for (&w, &g) in words.iter().zip(&got) {
            let r = cpu::gumbel_from_word(w);
            let err = (f64::from(g) - r).abs();
            assert!(
                err <= gumbel_tolerance(r),
                "word {w:#010x}: gpu {g}, reference {r}, error {err:e}"
            );
            worst = worst.max(err / r.abs().max(1.0));
        }
        eprintln!("{}: worst scaled Gumbel error {worst:e}", gpu.describe());
        let ends = gpu
            .transform_words(RandomKind::Gumbel, &[0, u32::MAX])
            .unwrap();
        // Word 0: u = 2^-33, g = 33 ln 2 + O(2^-33). Word 0xffffffff: u = 1 - 2^-24, g = -ln(24 ln 2).
        assert!(
            (f64::from(ends[0]) - 33.0 * 2f64.ln()).abs() < 1e-4,
            "upper tail {}",
            ends[0]
        );
        assert!(
            (f64::from(ends[1]) + (24.0 * 2f64.ln()).ln()).abs() < 1e-5,
            "lower tail {}",
            ends[1]
        );
    }
}

#[test]
fn gumbel_fill_matches_the_reference_at_awkward_sizes() {
    let mut rng = StdRng::seed_from_u64(5);
    for gpu in gpus() {
        for &len in AWKWARD_SIZES {
            let stream = Stream {
                seed: rng.random(),
                offset: rng.random::<u64>() >> 3,
            };
            let out = poisoned(gpu, len);
            let kernels = gpu.random_fill().unwrap();
            run(gpu, |enc| {
                let job = RandomJob {
                    kind: RandomKind::Gumbel,
                    stream,
                    out: out.slice(..),
                };
                kernels.record(enc, &job).unwrap()
            });
            let got: Vec<f32> = gpu.read_buffer(&out, len).unwrap();
            for (i, (g, r)) in got.iter().zip(cpu::gumbel(stream, len)).enumerate() {
                let err = (f64::from(*g) - r).abs();
                assert!(
                    err <= gumbel_tolerance(r),
                    "len {len} element {i}: gpu {g}, reference {r}"
                );
            }
        }
    }
}

#[test]
fn gumbel_noise_passes_kolmogorov_smirnov_on_a_million_samples() {
    // H0: g ~ Gumbel(0, 1), CDF exp(-exp(-x)). Fixed seed; reject at significance 0.001.
    let mut g: Vec<f64> = gpu()
        .gumbel(Stream::new(20_171_108), 1_000_000)
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    let ks = ks_statistic(&mut g, |x| (-(-x).exp()).exp());
    assert!(ks < KS_CRITICAL_0_001, "sqrt(n) D = {ks}");
    // And the uniforms against U(0, 1).
    let mut u: Vec<f64> = gpu()
        .uniform(Stream::new(31_337), 1_000_000)
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    let ks = ks_statistic(&mut u, |x| x);
    assert!(ks < KS_CRITICAL_0_001, "uniform: sqrt(n) D = {ks}");
}

#[test]
fn no_inf_or_nan_in_a_hundred_million_gumbel_samples() {
    let chunk = 1usize << 24;
    let mut total = 0usize;
    let mut stream = Stream::new(0x6a09_e667_f3bc_c908);
    let (mut lo, mut hi) = (f32::MAX, f32::MIN);
    while total < 100_000_000 {
        for g in gpu().gumbel(stream, chunk).unwrap() {
            assert!(g.is_finite(), "non-finite noise {g} near element {total}");
            lo = lo.min(g);
            hi = hi.max(g);
        }
        stream = stream.advance(chunk as u64);
        total += chunk;
    }
    eprintln!("{total} samples in [{lo}, {hi}]");
    assert!(lo >= -2.8116 && hi <= 22.8739);
}

#[test]
fn zero_length_requests_return_empty_without_touching_the_gpu() {
    assert!(gpu().random_u32(Stream::new(1), 0).unwrap().is_empty());
    assert!(gpu().gumbel(Stream::new(1), 0).unwrap().is_empty());
}

#[test]
fn impossible_lengths_are_errors_not_panics() {
    let e = gpu().gumbel(Stream::new(1), usize::MAX).unwrap_err();
    assert!(matches!(e, Error::TooLarge(_)), "{e}");
    let max = gpu().limits().max_buffer_size;
    let e = gpu()
        .random_u32(Stream::new(1), (max / 4 + 1) as usize)
        .unwrap_err();
    assert!(matches!(e, Error::TooLarge(_)), "{e}");
    assert!(e.to_string().contains("bytes"), "{e}");
}

#[test]
fn buffer_level_misuse_is_an_error_not_a_panic() {
    let gpu = gpu();
    let kernels = gpu.random_fill().unwrap();
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    let words = |out| RandomJob {
        kind: RandomKind::Words,
        stream: Stream::new(0),
        out,
    };
    let small = poisoned(gpu, 8);
    let e = kernels
        .record(&mut enc, &words(small.slice(2..)))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(
        e.to_string().contains("out") && e.to_string().contains("multiple of 4"),
        "{e}"
    );
    let not_storage = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let e = kernels
        .record(&mut enc, &words(not_storage.slice(..16)))
        .unwrap_err();
    assert!(
        e.to_string().contains("STORAGE") && e.to_string().contains("out"),
        "{e}"
    );
}

#[test]
fn a_lost_device_is_an_error() {
    let gpu = Gpu::new().unwrap();
    assert_eq!(
        gpu.random_u32(Stream::new(3), 4).unwrap(),
        cpu::random_u32(Stream::new(3), 4)
    );
    gpu.device().destroy();
    let e = gpu.random_u32(Stream::new(3), 4).unwrap_err();
    assert!(
        matches!(e, Error::DeviceLost(_) | Error::Validation(_)),
        "{e:?}"
    );
}

#[test]
fn repeated_calls_do_not_leak() {
    // Every call's buffers are dropped; the device's live buffer count returns to where it was.
    // A device of its own: the counters are per device and other tests run in parallel.
    let gpu = &Gpu::new().unwrap();
    // wgpu frees a submission's resources lazily, a few submissions later: warm up first.
    for i in 0..20 {
        let _ = gpu.gumbel(Stream::new(9).advance(i * 1000), 1000).unwrap();
    }
    gpu.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    let before = gpu.device().get_internal_counters();
    for i in 0..200 {
        let _ = gpu.gumbel(Stream::new(8).advance(i * 1000), 1000).unwrap();
    }
    gpu.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    let after = gpu.device().get_internal_counters();
    assert_eq!(
        before.hal.buffers.read(),
        after.hal.buffers.read(),
        "live buffers grew"
    );
    assert_eq!(
        before.hal.bind_groups.read(),
        after.hal.bind_groups.read(),
        "live bind groups grew"
    );
}

#[test]
fn a_device_the_application_already_has_works_through_from_wgpu() {
    // The application opens its own device, without any optional feature: the kernels take the
    // portable path (no SHADER_INT64) and still give the CPU's words.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default())).unwrap();
    let gpu = Gpu::from_wgpu(device, queue);
    assert!(!gpu.shader_config().int64);
    let stream = Stream {
        seed: 123,
        offset: 5,
    };
    assert_eq!(
        gpu.random_u32(stream, 1001).unwrap(),
        cpu::random_u32(stream, 1001)
    );
}

#[test]
fn kernels_are_built_once_per_device() {
    let a = gpu().random_fill().unwrap();
    let b = gpu().random_fill().unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
}

#[test]
fn a_wgpu_validation_error_comes_back_as_an_err() {
    // A destroyed buffer cannot be bound: wgpu's validation error is captured.
    let destroyed = gpu().storage_buffer("destroyed", 64).unwrap();
    destroyed.destroy();
    let kernels = gpu().random_fill().unwrap();
    let mut enc = gpu().device().create_command_encoder(&Default::default());
    let job = RandomJob {
        kind: RandomKind::Words,
        stream: Stream::new(0),
        out: destroyed.slice(..),
    };
    let e = kernels.record(&mut enc, &job).unwrap_err();
    assert!(matches!(e, Error::Validation(_)), "{e:?}");
}

/// Byte offsets of the views in the offset tests: 4-byte aligned, none aligned to the usual
/// 256-byte storage offset alignment except by the binding's own rounding.
const OFFSETS: &[u64] = &[4, 260, 1028];

#[test]
fn fills_at_any_4_byte_offset_leave_the_neighbours_alone() {
    for gpu in [gpu(), &chunked_gpu(1024)] {
        for &offset in OFFSETS {
            for (kind, len) in [
                (RandomKind::Words, 257usize),
                (RandomKind::Gumbel, 4097),
                (RandomKind::Uniform, 31),
            ] {
                let stream = Stream {
                    seed: offset,
                    offset: 3,
                };
                // The view sits inside a buffer with other data on both sides.
                let total = offset as usize / 4 + len + 64;
                let buf = poisoned(gpu, total);
                let kernels = gpu.random_fill().unwrap();
                let end = offset + len as u64 * 4;
                run(gpu, |enc| {
                    let job = RandomJob {
                        kind,
                        stream,
                        out: buf.slice(offset..end),
                    };
                    kernels.record(enc, &job).unwrap()
                });
                let got: Vec<u32> = gpu.read_buffer(&buf, total).unwrap();
                let first = offset as usize / 4;
                let want: Vec<u32> = match kind {
                    RandomKind::Words => cpu::random_u32(stream, len),
                    RandomKind::Uniform => gpu
                        .uniform(stream, len)
                        .unwrap()
                        .into_iter()
                        .map(f32::to_bits)
                        .collect(),
                    RandomKind::Gumbel => gpu
                        .gumbel(stream, len)
                        .unwrap()
                        .into_iter()
                        .map(f32::to_bits)
                        .collect(),
                };
                assert_eq!(
                    &got[first..first + len],
                    &want[..],
                    "{kind:?} at byte {offset}"
                );
                assert!(
                    got[..first]
                        .iter()
                        .chain(&got[first + len..])
                        .all(|&w| w == SENTINEL),
                    "{kind:?} at byte {offset}: wrote outside its view"
                );
            }
        }
    }
}
