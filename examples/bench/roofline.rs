//! Measuring tools of the bench (not part of the library): the device-copy roofline kernel, built
//! with plain wgpu, and a GPU timer built on timestamp queries with a wall-clock fallback.

use gumbel_wgpu::{Error, Gpu};
use std::time::Instant;

/// A vec4 device-to-device copy: the roofline for memory-bound kernels.
pub struct CopyKernel {
    device: wgpu::Device,
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    max_groups: u32,
}

impl CopyKernel {
    pub fn new(gpu: &Gpu) -> Self {
        let device = gpu.device();
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("copy"),
            source: wgpu::ShaderSource::Wgsl(include_str!("copy.wgsl").into()),
        });
        let entry = |binding, read_only| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("copy"),
            entries: &[entry(0, true), entry(1, false)],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("copy"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("copy"),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("copy"),
            compilation_options: Default::default(),
            cache: None,
        });
        CopyKernel {
            device: device.clone(),
            layout,
            pipeline,
            max_groups: gpu.limits().max_compute_workgroups_per_dimension,
        }
    }

    /// Records a copy of the first `bytes` (a multiple of 16) of `src` into `dst`.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<(), Error> {
        if !bytes.is_multiple_of(16) || bytes == 0 {
            return Err(Error::InvalidArgument(format!(
                "copy of {bytes} bytes: not a positive multiple of 16"
            )));
        }
        let len4 = u32::try_from(bytes / 16)
            .map_err(|_| Error::TooLarge(format!("copy of {bytes} bytes")))?;
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("copy"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: src.slice(..bytes).try_into().expect("non-empty"),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: dst.slice(..bytes).try_into().expect("non-empty"),
                },
            ],
        });
        // Enough workgroups to fill any device; each thread loops over the rest.
        let groups = len4.div_ceil(256 * 4).clamp(1, 65_536);
        let (gx, gy) = if groups <= self.max_groups {
            (groups, 1)
        } else {
            let y = groups.div_ceil(self.max_groups);
            (groups.div_ceil(y), y)
        };
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("copy"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
        Ok(())
    }
}

/// How a measurement was timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// GPU timestamp queries around the recorded work, all repetitions in one submission.
    GpuTimestamps,
    /// Wall time around a blocking submit of each repetition (no timestamp queries).
    WallClock,
}

/// Times `reps` repetitions of the work `record` records, after `warmup` untimed ones; returns
/// the seconds each repetition took and the clock used.
pub fn time_gpu(
    gpu: &Gpu,
    warmup: usize,
    reps: usize,
    mut record: impl FnMut(&mut wgpu::CommandEncoder) -> Result<(), Error>,
) -> Result<(Vec<f64>, Clock), Error> {
    let device = gpu.device();
    if warmup > 0 {
        gpu.submit(|enc| {
            for _ in 0..warmup {
                record(enc)?;
            }
            Ok(())
        })?;
    }
    if !gpu.has_timestamps() {
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t = Instant::now();
            gpu.submit(&mut record)?;
            times.push(t.elapsed().as_secs_f64());
        }
        return Ok((times, Clock::WallClock));
    }
    let count = (2 * reps) as u32;
    let (query_set, resolve) = {
        let q = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("timer"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timer resolve"),
            size: u64::from(count) * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        (q, resolve)
    };
    gpu.submit(|enc| {
        for i in 0..reps as u32 {
            // Empty passes carry the timestamps, so multi-pass work is timed as a whole.
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("t0"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &query_set,
                    beginning_of_pass_write_index: Some(2 * i),
                    end_of_pass_write_index: None,
                }),
            });
            record(enc)?;
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("t1"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &query_set,
                    beginning_of_pass_write_index: None,
                    end_of_pass_write_index: Some(2 * i + 1),
                }),
            });
        }
        enc.resolve_query_set(&query_set, 0..count, &resolve, 0);
        Ok(())
    })?;
    let ticks: Vec<u64> = gpu.read_buffer(&resolve, count as usize)?;
    let period_ns = f64::from(gpu.queue().get_timestamp_period());
    let times = ticks
        .chunks(2)
        .map(|p| p[1].saturating_sub(p[0]) as f64 * period_ns * 1e-9)
        .collect();
    Ok((times, Clock::GpuTimestamps))
}

/// The median of `v` (which it sorts).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}
