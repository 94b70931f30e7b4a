//! The bounds sanitizer (`GpuOptions::bounds_check`, src/sanitize.rs): a bad index planted in a
//! copy of a kernel is caught with its family, entry point, array, line, index and length, the
//! write it would have made is skipped, and the next job on the same `Gpu` runs clean; and every
//! family gives the same bits with its workgroup memory poisoned at entry (the sanitizer) as
//! zero-initialised (`runtime_checks`): no kernel reads workgroup memory before writing it.

mod common;

use gumbel_wgpu::wgpu;
use gumbel_wgpu::{
    BackwardSlice, Error, Gpu, GpuOptions, LogitsSlice, RowPath, SampleOptions, SampleStrategy,
    SoftmaxMode, SoftmaxStrategy, Stream, Temperature, TokenSampling,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// The line (from 1) of `file` holding `needle`.
fn line_of(file: &str, needle: &str) -> usize {
    file.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the shader"))
        + 1
}

const RANDOM_WGSL: &str = include_str!("../shaders/random.wgsl");
const REDUCE_TREE_WGSL: &str = include_str!("../shaders/common/reduce_tree.wgsl");

fn plant_write(family: &str, body: &str) -> String {
    if family != "random" {
        return body.to_string();
    }
    // fill_words' store, 100000 words past where it belongs.
    body.replace(
        "out[params.out_base + n] = v;",
        "out[params.out_base + n + 100000u] = v;",
    )
}

fn plant_read(family: &str, body: &str) -> String {
    if family != "random" {
        return body.to_string();
    }
    body.replace(
        "out[j] = bitcast<u32>(uniform_from_word(out[j]));",
        "out[j] = bitcast<u32>(uniform_from_word(out[j + 7777777u]));",
    )
}

fn plant_workgroup(family: &str, body: &str) -> String {
    if family != "softmax_backward" {
        return body.to_string();
    }
    body.replace(
        "let st = shared_states[lid - t];",
        "let st = shared_states[lid - t + WG_SIZE];",
    )
}

fn planted(patch: fn(&str, &str) -> String, subgroups: bool) -> Gpu {
    Gpu::with_options(GpuOptions {
        bounds_check: true,
        shader_patch: Some(patch),
        subgroups,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("tests need a wgpu adapter: {e}"))
}

#[test]
fn a_planted_out_of_range_write_is_caught_skipped_and_named() {
    let gpu = planted(plant_write, true);
    assert!(gpu.describe().contains("bounds sanitizer: true"));
    let len = 1000usize;
    let buffer = common::poisoned(&gpu, len + 64);
    let kernels = gpu.random_fill().unwrap();
    let job = gumbel_wgpu::RandomJob {
        kind: gumbel_wgpu::RandomKind::Words,
        stream: Stream { seed: 5, offset: 0 },
        out: buffer.slice(..len as u64 * 4),
    };
    let err = gpu.submit(|enc| kernels.record(enc, &job)).unwrap_err();
    let line = line_of(RANDOM_WGSL, "out[params.out_base + n] = v;");
    match &err {
        Error::OutOfBounds(v) => {
            let gumbel_wgpu::BoundsViolation {
                family,
                entry_point,
                array,
                function,
                location,
                index,
                length,
                count,
                ..
            } = &**v;
            assert_eq!(family, "random");
            assert_eq!(entry_point, "fill_words");
            assert!(
                array.starts_with("out (") && array.contains("@binding(1)"),
                "{array}"
            );
            assert_eq!(function, "fill");
            assert_eq!(location, &format!("shaders/random.wgsl:{line}"));
            // The binding holds the 1000 words; the first bad index is one of 100000 ..
            assert_eq!(*length, len as u32);
            assert!((100_000..100_000 + len as u32).contains(index), "{index}");
            assert_eq!(*count, len as u32, "every store was out of range");
        }
        other => panic!("expected OutOfBounds, got {other}"),
    }
    assert!(err.to_string().contains("random.wgsl"), "{err}");
    // The stores were skipped: the buffer still holds its sentinels.
    let words: Vec<u32> = gpu.read_buffer(&buffer, len + 64).unwrap();
    assert!(words.iter().all(|&w| w == common::SENTINEL));
    // The status was cleared: a clean family on the same Gpu runs.
    let y = gpu
        .gumbel_softmax(&[0.5, 1.0, -1.0], 3, 1.0, Stream { seed: 1, offset: 0 })
        .unwrap();
    assert_eq!(y.len(), 3);
}

#[test]
fn a_planted_out_of_range_read_is_caught_through_the_slice_api() {
    let gpu = planted(plant_read, true);
    let err = gpu
        .transform_words(gumbel_wgpu::RandomKind::Uniform, &[1, 2, 3, 4, 5])
        .unwrap_err();
    let Error::OutOfBounds(v) = &err else {
        panic!("expected OutOfBounds, got {err}");
    };
    let gumbel_wgpu::BoundsViolation {
        family,
        entry_point,
        location,
        index,
        length,
        ..
    } = &**v;
    assert_eq!(family, "random");
    assert_eq!(entry_point, "transform_uniform");
    let line = line_of(
        RANDOM_WGSL,
        "out[j] = bitcast<u32>(uniform_from_word(out[j]));",
    );
    assert_eq!(location, &format!("shaders/random.wgsl:{line}"));
    assert!(
        *index >= 7_777_777 && *length < 7_777_777,
        "{index} {length}"
    );
}

#[test]
fn a_planted_workgroup_index_is_caught_in_a_shared_piece() {
    let gpu = planted(plant_workgroup, false);
    let k = 300; // a team per row
    let y: Vec<f32> = vec![1.0 / k as f32; 2 * k];
    let dy: Vec<f32> = (0..2 * k).map(|i| (i % 7) as f32).collect();
    let err = gpu
        .gumbel_softmax_backward_path(
            BackwardSlice::Probs(&y),
            &dy,
            k,
            Temperature::Scalar(1.0),
            RowPath::RowPerTeam,
        )
        .unwrap_err();
    let Error::OutOfBounds(v) = &err else {
        panic!("expected OutOfBounds, got {err}");
    };
    let gumbel_wgpu::BoundsViolation {
        family,
        array,
        location,
        index,
        length,
        ..
    } = &**v;
    assert_eq!(family, "softmax_backward");
    assert!(array.starts_with("shared_states (workgroup)"), "{array}");
    let line = line_of(REDUCE_TREE_WGSL, "let st = shared_states[lid - t];");
    assert_eq!(location, &format!("shaders/common/reduce_tree.wgsl:{line}"));
    assert_eq!(*length, 256);
    assert!(*index >= 256, "{index}");
}

/// The sanitizer (workgroup memory poisoned at entry, every index checked) and the zeroed,
/// runtime-checked build give the same bits on every family's paths.
#[test]
fn every_family_gives_the_same_bits_with_workgroup_memory_poisoned_or_zeroed() {
    // GL has no subgroups (one pass), and llvmpipe GL runs these kernels many times slower
    // than lavapipe (the long rows are left to Vulkan there).
    let gl = common::gpu()
        .adapter_info()
        .is_some_and(|i| i.backend == wgpu::Backend::Gl);
    let subgroup_settings: &[bool] = if gl { &[false] } else { &[true, false] };
    let shapes: &[(usize, usize)] = if gl {
        &[(3, 7), (2, 33), (5, 257), (1, 4097)]
    } else {
        &[(3, 7), (2, 33), (5, 257), (1, 4097), (1, 20001)]
    };
    for &subgroups in subgroup_settings {
        let poisoned = Gpu::with_options(GpuOptions {
            bounds_check: true,
            subgroups,
            ..Default::default()
        })
        .unwrap();
        let zeroed = Gpu::with_options(GpuOptions {
            runtime_checks: true,
            subgroups,
            ..Default::default()
        })
        .unwrap();
        let mut rng = StdRng::seed_from_u64(19);
        let compared = std::cell::Cell::new(0);
        for &(rows, k) in shapes {
            let logits = common::masked_logits(&mut rng, rows, k, 0.1);
            let taus: Vec<f32> = (0..rows).map(|_| rng.random_range(0.2f32..3.0)).collect();
            let stream = Stream {
                seed: rng.random(),
                offset: rng.random_range(0..1000),
            };
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let same = |what: &str, f: &dyn Fn(&Gpu) -> Result<Vec<u32>, Error>| {
                let a = f(&poisoned);
                let b = f(&zeroed);
                match (&a, &b) {
                    (Ok(a), Ok(b)) => {
                        assert!(a == b, "{what} rows {rows} k {k} subgroups {subgroups}");
                        compared.set(compared.get() + 1);
                    }
                    // A path that refuses the shape refuses it both ways.
                    (Err(x), Err(y)) => assert_eq!(x, y, "{what}"),
                    _ => panic!("{what} rows {rows} k {k}: {a:?} vs {b:?}"),
                }
            };
            for strategy in [
                SoftmaxStrategy::RowPerThread,
                SoftmaxStrategy::Registers,
                SoftmaxStrategy::Online,
                SoftmaxStrategy::Split,
                SoftmaxStrategy::OnChip,
            ] {
                same(&format!("forward {strategy:?}"), &|g| {
                    g.gumbel_softmax_strategy(
                        LogitsSlice::F32(&logits),
                        k,
                        Temperature::PerRow(&taus),
                        SoftmaxMode::Soft,
                        stream,
                        strategy,
                    )
                    .map(bits)
                });
            }
            let y = zeroed.gumbel_softmax(&logits, k, 1.0, stream).unwrap();
            let dy: Vec<f32> = (0..rows * k)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            for path in [
                RowPath::RowPerThread,
                RowPath::RowPerTeam,
                RowPath::RowPerWorkgroup,
                RowPath::SplitRows,
            ] {
                same(&format!("backward {path:?}"), &|g| {
                    g.gumbel_softmax_backward_path(
                        BackwardSlice::Probs(&y),
                        &dy,
                        k,
                        Temperature::PerRow(&taus),
                        path,
                    )
                    .map(bits)
                });
                let log_y: Vec<f32> = y.iter().map(|p| p.max(1e-30).ln()).collect();
                same(&format!("density {path:?}"), &|g| {
                    g.concrete_log_prob_with(&logits, &log_y, k, 0.7, false, path)
                        .map(bits)
                });
            }
            for (top, strategy) in [
                (1, SampleStrategy::RowPerThread),
                (1, SampleStrategy::RowPerWorkgroup),
                (1, SampleStrategy::RowPerSegment { threads: 32 }),
                (1, SampleStrategy::SplitRow { chunks: 0 }),
                (3.min(k), SampleStrategy::Auto),
                (7.min(k), SampleStrategy::RowPerThread),
                (7.min(k), SampleStrategy::RowPerWorkgroup),
            ] {
                same(&format!("sample top {top} {strategy:?}"), &|g| {
                    g.sample_with(
                        LogitsSlice::F32(&logits),
                        k,
                        top,
                        stream,
                        &SampleOptions {
                            temperatures: Some(&taus),
                            strategy,
                            ..Default::default()
                        },
                    )
                });
            }
            let streams: Vec<Stream> = (0..rows as u64)
                .map(|r| Stream { seed: r, offset: 0 })
                .collect();
            let top_k: Vec<u32> = (0..rows).map(|r| [0, 1, 50, 600][r % 4]).collect();
            let top_p: Vec<f32> = (0..rows).map(|r| [1.0, 0.9, 0.5][r % 3]).collect();
            let min_p: Vec<f32> = (0..rows).map(|r| [0.0, 0.05][r % 2]).collect();
            same("tokens", &|g| {
                g.sample_tokens(
                    &logits,
                    k,
                    &TokenSampling {
                        temperature: &taus,
                        top_k: &top_k,
                        top_p: &top_p,
                        min_p: &min_p,
                        streams: &streams,
                        logprobs: 3.min(k),
                        ..Default::default()
                    },
                )
                .map(|s| {
                    let mut w = s.tokens.clone();
                    w.extend(s.logprobs.iter().map(|l| l.to_bits()));
                    w.extend(s.top_tokens.iter().copied());
                    w.extend(s.top_logprobs.iter().map(|l| l.to_bits()));
                    w
                })
            });
            same("speculative", &|g| {
                let drafts: Vec<u32> = (0..rows as u32).map(|r| r % k as u32).collect();
                let q: Vec<f32> = y.clone();
                let p: Vec<f32> = y.iter().rev().copied().collect();
                let mut p_ext = p.clone();
                p_ext.extend_from_slice(&y[..k]);
                g.verify_speculative(&drafts, &q, &p_ext, k, &streams[..1])
                    .map(|r| {
                        let mut w = r.accepted.clone();
                        w.extend(r.tokens.iter().copied());
                        w
                    })
            });
            same("random", &|g| {
                g.gumbel(stream, rows * k % 5000 + 1).map(bits)
            });
        }
        // 21 jobs per shape; a few paths refuse a shape (both ways alike).
        assert!(
            compared.get() >= 16 * shapes.len(),
            "{} jobs compared",
            compared.get()
        );
    }
}
