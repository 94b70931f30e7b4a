//! The bind groups a family keeps across `record` calls (src/family.rs, `BIND_CACHE`): a job
//! recorded again binds exactly its own buffers and ranges, reuses its group (no new buffer or
//! bind group), and fresh buffers on every call do not pile up (wgpu's live-object counters).
//! Each test opens a device of its own: the counters are per device, and tests run in parallel.

use gumbel_wgpu::{Gpu, LogitsView, Noise, SampleJob, Stream, Temperature, cpu};
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// The cache's bound (`BIND_CACHE` in src/family.rs).
const BIND_CACHE: u64 = 16;

fn live(gpu: &Gpu) -> (u64, u64) {
    gpu.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    let c = gpu.device().get_internal_counters();
    (c.hal.buffers.read() as u64, c.hal.bind_groups.read() as u64)
}

fn logits(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-3.0f32..3.0)).collect()
}

fn job<'a>(
    logits: &'a wgpu::Buffer,
    rows: u64,
    k: u64,
    stream: Stream,
    out: wgpu::BufferSlice<'a>,
) -> SampleJob<'a> {
    SampleJob {
        logits: LogitsView::f32(logits.slice(..), rows, k),
        top: 1,
        tau: Temperature::Scalar(1.0),
        stream,
        noise: Noise::Bits32,
        out,
    }
}

#[test]
fn a_job_recorded_again_reuses_its_bind_group_and_binds_exactly_its_ranges() {
    let gpu = &Gpu::new().unwrap();
    let sampler = gpu.sampler().unwrap();
    let (rows, k) = (3u64, 1000u64);
    let l = logits(1, (rows * k) as usize);
    let buf = gpu.upload("logits", &l).unwrap();
    // Two output ranges of one buffer (one bind group each) and two streams: a hit that bound
    // the other range or kept the other job's parameters would leave a range unwritten or give
    // the other stream's draws.
    let out = gpu.storage_buffer("out", 512).unwrap();
    let (s0, s1) = (Stream::new(5), Stream::new(6).advance(77));
    let want = |s: Stream| -> Vec<u32> {
        let z: Vec<f64> = (0..rows * k)
            .map(|n| f64::from(l[n as usize]) + cpu::gumbel_noise(s, n, Noise::Bits32))
            .collect();
        cpu::top_k_of_values(&z, k as usize, 1)
    };
    let round = |i: u32| {
        gpu.queue().write_buffer(&out, 0, &[0xffu8; 512]);
        gpu.submit(|enc| {
            sampler.record(enc, &job(&buf, rows, k, s0, out.slice(..12)))?;
            sampler.record(enc, &job(&buf, rows, k, s1, out.slice(256..268)))
        })
        .unwrap();
        let got: Vec<u32> = gpu.read_buffer(&out, 128).unwrap();
        assert_eq!(got[..3], want(s0)[..], "round {i}");
        assert_eq!(got[64..67], want(s1)[..], "round {i}");
        assert!(got[3..64].iter().all(|&w| w == 0xffff_ffff), "round {i}");
    };
    for i in 0..3 {
        round(i);
    }
    let before = live(gpu);
    for i in 3..200 {
        round(i);
    }
    assert_eq!(live(gpu), before, "(live buffers, live bind groups) grew");
    // One encoder holds every bind group recorded into it: recording the same job 100 times
    // adds no bind group or buffer (each record reuses the cached group; without the cache the
    // encoder would hold 100 groups and 100 uniform buffers).
    let mut enc = gpu
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    for _ in 0..100 {
        sampler
            .record(&mut enc, &job(&buf, rows, k, s0, out.slice(..12)))
            .unwrap();
    }
    assert_eq!(
        live(gpu),
        before,
        "recording one job 100 times made new objects"
    );
    drop(enc);
}

#[test]
fn fresh_buffers_every_call_do_not_pile_up() {
    let gpu = &Gpu::new().unwrap();
    let sampler = gpu.sampler().unwrap();
    let k = 64u64;
    let l = logits(2, k as usize);
    // Warm up: kernels, the scratch buffer and the staging pool.
    let call = |i: u64| {
        let buf = gpu.upload("logits", &l).unwrap();
        let out = gpu.storage_buffer("out", 4).unwrap();
        gpu.submit(|enc| sampler.record(enc, &job(&buf, 1, k, Stream::new(i), out.slice(..))))
            .unwrap();
    };
    for i in 0..3 {
        call(i);
    }
    let before = live(gpu);
    for i in 0..2000 {
        call(i);
    }
    let after = live(gpu);
    // Each cached group holds its uniform buffer and the caller's two; the cache holds at most
    // BIND_CACHE groups, so at most that many more of each stay alive, however many calls.
    assert!(
        after.0 <= before.0 + 3 * BIND_CACHE,
        "live buffers {} -> {}",
        before.0,
        after.0
    );
    assert!(
        after.1 <= before.1 + BIND_CACHE,
        "live bind groups {} -> {}",
        before.1,
        after.1
    );
}
