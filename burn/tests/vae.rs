//! A few training steps of the paper's categorical VAE (examples/vae) with the fused op lower
//! its loss, soft and straight-through. Data: 10 fixed random binary prototypes, each pixel of
//! a copy flipped with chance 0.05 (no download in tests). No timing is asserted.

mod common;
#[path = "../examples/vae/model.rs"]
mod model;

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Tensor, TensorData};
use common::device;
use gumbel_wgpu::Stream;
use model::{Sampler, Vae};

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let protos: Vec<Vec<bool>> = (0..10)
        .map(|_| (0..784).map(|_| next() < 0.3).collect())
        .collect();
    let mut out = Vec::with_capacity(n * 784);
    for i in 0..n {
        for &p in &protos[i % 10] {
            out.push(f32::from(u8::from(p ^ (next() < 0.05))));
        }
    }
    out
}

fn first_and_last_loss(hard: bool) -> (f32, f32) {
    let dev = device().autodiff();
    dev.seed(1);
    let mut model = Vae::new(&dev);
    let mut optim = AdamConfig::new().init();
    let b = 50;
    let x = data(b, 7);
    let x = Tensor::<2>::from_data(TensorData::new(x, [b, 784]), &dev);
    let mut losses = Vec::new();
    for step in 0..30u64 {
        let loss = model.loss(
            x.clone(),
            1.0,
            hard,
            Stream::new(3).advance(step * 10_000),
            Sampler::Fused,
        );
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
    }
    println!("hard={hard}: {losses:?}");
    assert!(losses.iter().all(|l| l.is_finite()));
    // The mean of the first and the last five steps, against one noisy step deciding.
    let head = losses[..5].iter().sum::<f32>() / 5.0;
    let tail = losses[25..].iter().sum::<f32>() / 5.0;
    (head, tail)
}

#[test]
fn soft_training_lowers_the_loss() {
    let (head, tail) = first_and_last_loss(false);
    assert!(tail < 0.9 * head, "soft: loss {head} -> {tail}");
}

#[test]
fn straight_through_training_lowers_the_loss() {
    let (head, tail) = first_and_last_loss(true);
    assert!(tail < 0.9 * head, "straight-through: loss {head} -> {tail}");
}
