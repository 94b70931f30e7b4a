#![allow(dead_code)]
//! One shared device per test process: burn opens it with its default memory configuration
//! (small tensors packed into shared pages), the library shares it.

use burn::tensor::{Device, Distribution, Tensor};
use std::sync::OnceLock;

pub fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
                // SAFETY: set once, before any thread of this process reads the environment
                // (the device is opened under the OnceLock, first thing in every test).
                unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
            }
            // burn picks its graphics API itself (it ignores WGPU_BACKEND): pass it on.
            let mut options = Device::wgpu_options();
            if std::env::var("WGPU_BACKEND").is_ok_and(|b| b.eq_ignore_ascii_case("gl")) {
                options = options.graphics_api(burn::tensor::wgpu::WgpuBackend::Gl);
            }
            let device =
                gumbel_wgpu_burn::init(options).expect("a wgpu device for burn and the library");
            let info = gumbel_wgpu_burn::adapter_info(&device).expect("registered");
            eprintln!("adapter: {} ({:?})", info.name, info.backend);
            device
        })
        .clone()
}

/// Normal(0, scale) logits from burn's generator at `seed`.
pub fn logits(device: &Device, rows: usize, k: usize, scale: f64, seed: u64) -> Tensor<2> {
    device.seed(seed);
    Tensor::random([rows, k], Distribution::Normal(0.0, scale), device)
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 data")
}

/// max |a - b| over max(1, max |b|): the error relative to the reference's scale.
pub fn scaled_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-30f64, |m, &x| m.max(f64::from(x).abs()));
    let worst = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
        .fold(0.0, f64::max);
    assert!(worst.is_finite(), "non-finite difference");
    worst / scale
}
