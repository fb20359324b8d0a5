//! The device context: adapter choice, typed errors, limits, the buffer pool and readback.

use crate::common;

use calibseg::gpu::probe;
use calibseg::{DType, Error, Gpu, GpuOptions, Tensor};
use common::{gpu, own_gpu};

#[test]
fn impossible_backend_gives_the_no_adapter_error() {
    // No Metal/DX12 adapter exists on Linux, and the browser back end is not native.
    let backends = if cfg!(target_os = "linux") {
        wgpu::Backends::METAL | wgpu::Backends::DX12
    } else {
        wgpu::Backends::BROWSER_WEBGPU
    };
    let err = Gpu::with_options(&GpuOptions {
        backends: Some(backends),
        ..Default::default()
    })
    .unwrap_err();
    let Error::NoAdapter { tried, hint } = &err else {
        panic!("expected NoAdapter, got {err:?}")
    };
    assert!(tried.contains("back ends tried"), "{tried}");
    assert!(
        hint.contains("mesa-vulkan-drivers") && hint.contains("WGPU_BACKEND"),
        "{hint}"
    );
    assert!(hint.contains("WGPU_ADAPTER_NAME"), "{hint}");
}

#[test]
fn unmatched_adapter_name_is_an_error_not_a_panic() {
    let err = Gpu::with_options(&GpuOptions {
        adapter_name: Some("no-such-adapter-xyz".into()),
        ..Default::default()
    })
    .unwrap_err();
    match err {
        Error::NoAdapter { tried, .. } => assert!(tried.contains("no-such-adapter-xyz"), "{tried}"),
        e => panic!("expected NoAdapter, got {e:?}"),
    }
}

#[test]
fn upload_download_round_trip_all_dtypes() {
    let Some(gpu) = gpu() else { return };
    let f: Vec<f32> = (0..1001).map(|i| i as f32 * 0.5 - 3.0).collect();
    assert_eq!(
        Tensor::from_f32(&gpu, &[7, 11, 13], &f)
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        f
    );
    let h: Vec<half::f16> = (0..7)
        .map(|i| half::f16::from_f32(i as f32 / 3.0))
        .collect();
    let t = Tensor::from_slice(&gpu, &[7], &h).unwrap();
    assert_eq!(t.dtype(), DType::F16);
    assert_eq!(t.to_vec::<half::f16>().unwrap(), h);
    let i: Vec<i32> = vec![-5, 0, 7, i32::MAX];
    assert_eq!(
        Tensor::from_slice(&gpu, &[4], &i)
            .unwrap()
            .to_vec::<i32>()
            .unwrap(),
        i
    );
    assert!(matches!(
        Tensor::from_slice(&gpu, &[4], &i).unwrap().to_vec::<f32>(),
        Err(Error::WrongDType(_))
    ));
    assert!(matches!(
        Tensor::from_f32(&gpu, &[2, 2], &[1.0; 5]),
        Err(Error::ShapeMismatch(_))
    ));
    let z = Tensor::zeros(&gpu, &[3, 5], DType::F32).unwrap();
    assert_eq!(z.to_vec_f32().unwrap(), vec![0.0; 15]);
}

#[test]
fn readback_larger_than_the_staging_buffer() {
    let Some(gpu) = gpu() else { return };
    let n = (80 << 20) / 4 + 3; // 80 MiB + 12 bytes: two staging chunks, an uneven tail
    let data: Vec<u32> = (0..n as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let t = Tensor::from_slice(&gpu, &[n], &data).unwrap();
    assert!(t.to_vec::<u32>().unwrap() == data);
}

#[test]
fn buffers_over_the_device_limit_are_refused() {
    let Some(gpu) = gpu() else { return };
    let too_many = (gpu.limits().max_buffer_size / 4 + 1) as usize;
    let err = Tensor::uninit(&gpu, &[too_many], DType::F32).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BufferTooLarge {
                limit_name: "max_buffer_size",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("max_buffer_size"));
}

#[test]
fn pool_reuses_buffers() {
    // A device of its own: on the shared one a recording in a parallel test holds released buffers back.
    let Some(gpu) = own_gpu() else { return };
    let shape = [3, 333, 333];
    drop(Tensor::uninit(&gpu, &shape, DType::F32).unwrap());
    let before = gpu.pool_stats();
    drop(Tensor::uninit(&gpu, &shape, DType::F32).unwrap());
    assert!(gpu.pool_stats().reuses > before.reuses);
}

#[test]
fn the_pool_counts_the_device_bytes_of_its_buffers_and_their_peak() {
    let Some(gpu) = own_gpu() else { return };
    gpu.clear_pool();
    gpu.reset_pool_peak();
    let base = gpu.pool_stats().device_bytes;
    // Buckets: 1000 f32 = 4000 bytes -> 4096; 333 x 333 f32 = 443556 bytes -> 458752 (7 x 2^16).
    let a = Tensor::uninit(&gpu, &[1000], DType::F32).unwrap();
    let b = Tensor::uninit(&gpu, &[333, 333], DType::F32).unwrap();
    let both = 4096 + 458_752;
    assert_eq!(gpu.pool_stats().device_bytes, base + both);
    let in_use = gpu.pool_stats().in_use_bytes();
    drop(b);
    // Idle in the pool: still device memory, no longer in use, and reused rather than allocated again.
    let stats = gpu.pool_stats();
    assert_eq!(stats.device_bytes, base + both);
    assert_eq!(stats.in_use_bytes(), in_use - 458_752);
    assert_eq!(stats.peak_in_use_bytes, in_use);
    let b = Tensor::uninit(&gpu, &[333, 333], DType::F32).unwrap();
    assert_eq!(gpu.pool_stats().device_bytes, base + both);
    drop((a, b));
    gpu.clear_pool();
    let stats = gpu.pool_stats();
    assert_eq!((stats.device_bytes, stats.idle_bytes), (base, 0));
    assert_eq!(stats.peak_device_bytes, base + both);
    assert_eq!(stats.peak_in_use_bytes, in_use);
    gpu.reset_pool_peak();
    let stats = gpu.pool_stats();
    assert_eq!(stats.peak_device_bytes, base);
    assert_eq!(stats.peak_in_use_bytes, stats.in_use_bytes());
    // Two tensors alive at once, then one at a time: the in-use peak is the pair's.
    let a = Tensor::uninit(&gpu, &[1000], DType::F32).unwrap();
    let b = Tensor::uninit(&gpu, &[1000], DType::F32).unwrap();
    drop((a, b));
    drop(Tensor::uninit(&gpu, &[1000], DType::F32).unwrap());
    assert_eq!(
        gpu.pool_stats().peak_in_use_bytes,
        stats.in_use_bytes() + 2 * 4096
    );
}

#[test]
fn grid_covers_more_than_65535_groups() {
    let Some(gpu) = gpu() else { return };
    let max = gpu.limits().max_compute_workgroups_per_dimension;
    for groups in [1, 7, max, max + 1, 3 * max + 5, 1 << 24] {
        let [x, y, z] = gpu.grid(groups).unwrap();
        assert!(x <= max && y <= max && z == 1);
        let total = x as u64 * y as u64;
        assert!(
            total >= groups as u64 && total - (groups as u64) < y as u64,
            "{groups}: {x}x{y}"
        );
    }
}

#[test]
fn probes_measure_positive_rates() {
    let Some(gpu) = gpu() else { return };
    let copy = probe::copy_bandwidth(&gpu, 4 << 20, 1).unwrap();
    let fma = probe::fma_rate(&gpu, 1).unwrap();
    assert!(copy.is_finite() && copy > 0.0 && fma.is_finite() && fma > 0.0);
}

#[test]
fn a_forced_binding_limit_lowers_the_planned_limit_and_never_raises_it() {
    let Some(gpu) = gpu() else { return };
    let adapter = gpu.max_binding_bytes();
    let Some(low) = common::gpu_with_binding_limit(4097) else {
        return;
    };
    // Rounded down to whole 4-byte words; the device's other limits are its own.
    assert_eq!(low.max_binding_bytes(), 4096);
    assert_eq!(low.limits().max_buffer_size, gpu.limits().max_buffer_size);
    let high = common::gpu_with_binding_limit(adapter.saturating_mul(2)).unwrap();
    assert_eq!(high.max_binding_bytes(), adapter);
    // One image of 2 x 1024 f32 (8 KiB) is over the lowered limit: a typed error naming it.
    let x = Tensor::from_f32(&low, &[1, 2, 1024], &[0.5; 2048]).unwrap();
    match calibseg::ops::softmax(&x) {
        Err(Error::BufferTooLarge {
            limit_name, limit, ..
        }) => assert_eq!(
            (limit_name, limit),
            ("max_storage_buffer_binding_size", 4096)
        ),
        other => panic!("expected BufferTooLarge, got {other:?}"),
    }
    // CALIBSEG_MAX_STORAGE_BINDING's syntax: whole bytes, at least 1024.
    use calibseg::gpu::parse_storage_binding;
    assert_eq!(parse_storage_binding(" 1024 ").unwrap(), 1024);
    for bad in ["1023", "12", "-5", "1e6", "lots", ""] {
        match parse_storage_binding(bad) {
            Err(Error::InvalidArgument(m)) => {
                assert!(m.contains("CALIBSEG_MAX_STORAGE_BINDING"), "{m}")
            }
            other => panic!("{bad:?}: expected an error, got {other:?}"),
        }
    }
}
