//! One way to report a lost device: after `device.destroy()` every call of the public API
//! returns `Error::DeviceLost` (whose message says to create a new `Gpu`), never a panic or a
//! validation error about invalid buffers; a new `Gpu` then works.

use gumbel_wgpu::{Error, Gpu, RandomJob, RandomKind, Stream, TokenSampling};

type Call = (&'static str, Box<dyn Fn(&Gpu) -> Result<(), Error>>);

fn calls() -> Vec<Call> {
    let logits: Vec<f32> = (0..64).map(|i| (i % 9) as f32 * 0.3).collect();
    let k = 16;
    let l1 = logits.clone();
    let l2 = logits.clone();
    let l3 = logits.clone();
    let l4 = logits.clone();
    let l5 = logits.clone();
    vec![
        (
            "gumbel_softmax",
            Box::new(move |g: &Gpu| g.gumbel_softmax(&l1, k, 1.0, Stream::new(1)).map(drop)),
        ),
        (
            "gumbel_softmax_backward",
            Box::new(move |g: &Gpu| {
                let y = vec![1.0 / k as f32; 64];
                g.gumbel_softmax_backward(&y, &l2, k, 1.0).map(drop)
            }),
        ),
        (
            "concrete_log_prob",
            Box::new(move |g: &Gpu| {
                let x = vec![-(k as f32).ln(); 64];
                g.concrete_log_prob(&l3, &x, k, 1.0).map(drop)
            }),
        ),
        (
            "sample",
            Box::new(move |g: &Gpu| g.sample(&l4, k, Stream::new(2)).map(drop)),
        ),
        (
            "sample_tokens",
            Box::new(move |g: &Gpu| {
                let rows = 4;
                let streams: Vec<Stream> = (0..rows).map(|r| Stream::new(r as u64)).collect();
                g.sample_tokens(
                    &l5,
                    k,
                    &TokenSampling {
                        temperature: &[1.0; 4],
                        top_k: &[0; 4],
                        top_p: &[1.0; 4],
                        min_p: &[0.0; 4],
                        streams: &streams,
                        logprobs: 0,
                        ..Default::default()
                    },
                )
                .map(drop)
            }),
        ),
        (
            "verify_speculative",
            Box::new(move |g: &Gpu| {
                let q = vec![0.25f32; 4];
                let p = vec![0.25f32; 8];
                g.verify_speculative(&[1], &q, &p, 4, &[Stream::new(3)])
                    .map(drop)
            }),
        ),
        (
            "random_u32",
            Box::new(|g: &Gpu| g.random_u32(Stream::new(4), 100).map(drop)),
        ),
        (
            "upload",
            Box::new(|g: &Gpu| g.upload("x", &[1u32, 2, 3]).map(drop)),
        ),
        (
            "storage_buffer",
            Box::new(|g: &Gpu| g.storage_buffer("x", 64).map(drop)),
        ),
        ("submit", Box::new(|g: &Gpu| g.submit(|_| Ok(())))),
        (
            "random_fill record + submit",
            Box::new(|g: &Gpu| {
                let kernels = g.random_fill()?;
                let buffer = g.storage_buffer("out", 64)?;
                let job = RandomJob {
                    kind: RandomKind::Words,
                    stream: Stream::new(5),
                    out: buffer.slice(..),
                };
                g.submit(|enc| kernels.record(enc, &job))
            }),
        ),
        (
            "kernel families",
            Box::new(|g: &Gpu| {
                g.sampler()?;
                g.token_sampler()?;
                g.gumbel_softmax_kernels().map(drop)
            }),
        ),
    ]
}

#[test]
fn every_call_after_destroy_says_device_lost_and_a_new_gpu_works() {
    let gpu = Gpu::new().unwrap_or_else(|e| panic!("tests need a wgpu adapter: {e}"));
    // Some families built before the loss, some not.
    gpu.gumbel_softmax(&[0.0, 1.0], 2, 1.0, Stream::new(0))
        .unwrap();
    let buffer = gpu.upload("kept", &[7u32; 16]).unwrap();
    gpu.device().destroy();
    let mut lost_calls = calls();
    lost_calls.push((
        "read_buffer",
        Box::new(move |g: &Gpu| g.read_buffer::<u32>(&buffer, 16).map(drop)),
    ));
    for (name, call) in &lost_calls {
        match call(&gpu) {
            Err(Error::DeviceLost(m)) => {
                let text = Error::DeviceLost(m).to_string();
                assert!(text.contains("create a new Gpu"), "{name}: {text}");
            }
            other => panic!("{name} after destroy: {other:?}"),
        }
    }
    // A new Gpu works, every call included.
    let fresh = Gpu::new().unwrap();
    for (name, call) in &calls()[..] {
        call(&fresh).unwrap_or_else(|e| panic!("{name} on a new Gpu: {e}"));
    }
}
