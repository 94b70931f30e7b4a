//! The categorical VAE of Jang, Gu & Poole (2017), section 4.2: an MLP encoder 784-512-256 to
//! 20 x 10 logits, Gumbel-Softmax samples of the 20 categorical variables, the decoder
//! mirrored (200-256-512-784) to Bernoulli pixel logits; the loss is the negative ELBO with the
//! KL of the posterior to the uniform categorical prior. (Shared by the example and the test.)
#![allow(dead_code)]

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{log_softmax, relu, softmax};
use burn::tensor::{Device, Tensor};
use gumbel_wgpu_burn::{Backward, Output, Stream, gumbel_noise, gumbel_softmax_with};

/// Latent variables and their categories.
pub const N: usize = 20;
pub const K: usize = 10;
pub const PIXELS: usize = 784;

#[derive(Module, Debug)]
pub struct Vae {
    enc1: Linear,
    enc2: Linear,
    enc3: Linear,
    dec1: Linear,
    dec2: Linear,
    dec3: Linear,
}

/// How the relaxed sample is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    /// This crate's fused op (forward and backward kernels of gumbel-wgpu).
    Fused,
    /// burn's composed op: `softmax((logits + g) / tau)` with `g` from `gumbel_noise` (the same
    /// noise), straight-through as `hard - soft.detach() + soft`.
    Composed,
}

impl Vae {
    pub fn new(device: &Device) -> Self {
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        Vae {
            enc1: lin(PIXELS, 512),
            enc2: lin(512, 256),
            enc3: lin(256, N * K),
            dec1: lin(N * K, 256),
            dec2: lin(256, 512),
            dec3: lin(512, PIXELS),
        }
    }

    /// Posterior logits, `batch x N x K`.
    pub fn encode(&self, x: Tensor<2>) -> Tensor<3> {
        let b = x.dims()[0];
        let h = relu(self.enc1.forward(x));
        let h = relu(self.enc2.forward(h));
        self.enc3.forward(h).reshape([b, N, K])
    }

    /// Bernoulli pixel logits from `batch x (N * K)` latents.
    pub fn decode(&self, z: Tensor<2>) -> Tensor<2> {
        let h = relu(self.dec1.forward(z));
        let h = relu(self.dec2.forward(h));
        self.dec3.forward(h)
    }

    /// The per-image negative ELBO (mean over the batch) with a Gumbel-Softmax sample at `tau`
    /// (`hard`: straight-through), the noise from `stream`.
    pub fn loss(
        &self,
        x: Tensor<2>,
        tau: f32,
        hard: bool,
        stream: Stream,
        sampler: Sampler,
    ) -> Tensor<1> {
        let b = x.dims()[0];
        let logits = self.encode(x.clone());
        let z = match sampler {
            Sampler::Fused => {
                let output = if hard { Output::Hard } else { Output::Soft };
                gumbel_softmax_with(logits.clone(), tau, stream, output, Backward::Stored)
                    .expect("the fused Gumbel-Softmax")
            }
            Sampler::Composed => {
                let g = gumbel_noise(&logits, stream).expect("the noise tensor");
                let z = logits.clone() + g;
                let y = softmax(z.clone() / f64::from(tau), 2);
                if hard {
                    // The one-hot of each variable's max (no host check, unlike `one_hot`).
                    let zd = z.detach();
                    let one_hot = zd.clone().equal(zd.max_dim(2)).float();
                    one_hot - y.clone().detach() + y
                } else {
                    y
                }
            }
        };
        self.neg_elbo(x, logits, z.reshape([b, N * K])).mean()
    }

    /// Per-image `-log p(x | z) + KL(q(z | x) || uniform)`, `batch` entries.
    pub fn neg_elbo(&self, x: Tensor<2>, logits: Tensor<3>, z: Tensor<2>) -> Tensor<1> {
        let b = x.dims()[0];
        let px = self.decode(z);
        // Bernoulli log-likelihood from logits, stably: softplus(l) - x l.
        let softplus = px.clone().clamp_min(0.0) + px.clone().abs().neg().exp().log1p();
        let recon = (softplus - px * x).sum_dim(1).reshape([b]);
        let q = softmax(logits.clone(), 2);
        let log_q = log_softmax(logits, 2);
        let kl = (q * (log_q + (K as f64).ln()))
            .sum_dim(2)
            .sum_dim(1)
            .reshape([b]);
        recon + kl
    }

    /// The ELBO of the discrete model on held-out images: `z` one-hot samples of the posterior
    /// (the fused op's hard output is an exact categorical sample), averaged per image.
    pub fn eval(&self, x: Tensor<2>, stream: Stream) -> f64 {
        let b = x.dims()[0];
        let logits = self.encode(x.clone());
        let z = gumbel_softmax_with(logits.clone(), 1.0, stream, Output::Hard, Backward::Stored)
            .expect("a categorical sample");
        let per_image = self.neg_elbo(x, logits, z.reshape([b, N * K]));
        f64::from(per_image.mean().into_scalar::<f32>())
    }

    /// Mean Bernoulli pixels of the reconstruction of `x` (`z` the posterior's mode).
    pub fn reconstruct(&self, x: Tensor<2>) -> Tensor<2> {
        let b = x.dims()[0];
        let logits = self.encode(x);
        let z: Tensor<2> = logits
            .argmax(2)
            .reshape([b * N])
            .one_hot::<2>(K)
            .float()
            .reshape([b, N * K]);
        burn::tensor::activation::sigmoid(self.decode(z))
    }

    /// Mean Bernoulli pixels of `count` samples from the uniform prior (each variable's
    /// category from the noise of `stream` through Gumbel-max of zero logits).
    pub fn prior_samples(&self, count: usize, stream: Stream, device: &Device) -> Tensor<2> {
        let zeros = Tensor::<2>::zeros([count * N, K], device);
        let idx = gumbel_wgpu_burn::sample(zeros, 1.0, stream).expect("prior categories");
        let z: Tensor<2> = idx.one_hot::<2>(K).float().reshape([count, N * K]);
        burn::tensor::activation::sigmoid(self.decode(z))
    }
}
