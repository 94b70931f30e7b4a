//! The async core on native adapters (the browser runs it in tests/web.rs): `Gpu::new_async`,
//! `submit_async` with error scopes popped by `.await`, `read_buffer_async` through `map_async`
//! and a channel, driven here by pollster.
#![cfg(not(target_arch = "wasm32"))]

use gumbel_wgpu::{Error, Gpu, RandomJob, RandomKind, Stream, cpu, wgpu};

#[test]
fn async_core_runs_kernels_and_reports_errors() {
    pollster::block_on(async {
        let gpu = Gpu::new_async().await.unwrap();
        let kernels = gpu.random_fill().unwrap();
        let stream = Stream {
            seed: 99,
            offset: 5,
        };
        let out = gpu.upload("out", &[0u32; 1001]).unwrap();
        gpu.submit_async(|enc| {
            kernels.record(
                enc,
                &RandomJob {
                    kind: RandomKind::Words,
                    stream,
                    out: out.slice(4..),
                },
            )
        })
        .await
        .unwrap();
        let got: Vec<u32> = gpu.read_buffer_async(&out, 1001).await.unwrap();
        assert_eq!(got[0], 0, "wrote before the slice");
        assert_eq!(got[1..], cpu::random_u32(stream, 1000)[..]);

        // A wgpu validation error inside the recording is an Err, popped with .await.
        let no_copy = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let r = gpu
            .submit_async(|enc| {
                enc.copy_buffer_to_buffer(&no_copy, 0, &out, 0, Some(16));
                Ok(())
            })
            .await;
        assert!(matches!(r, Err(Error::Validation(_))), "{r:?}");
        // Our own checks come first, and the device still works after both errors.
        let r = gpu.read_buffer_async::<u32>(&no_copy, 4).await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
        let again: Vec<u32> = gpu.read_buffer_async(&out, 1001).await.unwrap();
        assert_eq!(again, got);
    });
}
