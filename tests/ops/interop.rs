//! Zero-copy interop: tensors over buffers a wgpu application created ([`Tensor::from_buffer`] on a
//! [`Gpu::from_device`]), the embedding example's scenario, and the typed errors for unusable buffers.

use crate::common;

#[path = "../../examples/shared/host_app.rs"]
mod host_app;

use calibseg::loss::{AceDiceCeLoss, Binning, Labels};
use calibseg::{DType, Error, Gpu, Tensor};
use common::{bits, Tol};

fn first(t: &Option<Tensor>) -> f32 {
    t.as_ref().expect("term present").to_vec_f32().unwrap()[0]
}

/// The embedding example's application: its loss and gradient on its own buffers equal, bit for bit, the
/// same loss on tensors uploaded from copies of those buffers' contents; its logits are what its shader
/// computes; and its gradient step, which binds calibseg's gradient buffer, moves the logits by -lr * grad.
#[test]
fn embedded_loss_equals_the_loss_on_uploaded_tensors_bit_for_bit() {
    // Fails in CI, skips elsewhere, when there is no adapter at all.
    let Some(_) = common::gpu() else { return };
    let app = host_app::HostApp::new().expect("the application's device");
    let sharpness = 12.0f32;
    app.compute_logits(sharpness);
    let gpu = Gpu::from_device(app.device.clone(), app.queue.clone());
    let (logits, labels) = app.tensors(&gpu).unwrap();
    // No copy: the tensors are the application's buffers.
    assert!(logits.buffer() == &app.logits && labels.tensor().buffer() == &app.labels);

    // The application's shader really ran: f64 reference of its formula.
    let shape = app.shape.clone();
    let (n, c) = (shape[0], shape[1]);
    let v: usize = shape[2..].iter().product();
    let z = logits.to_vec_f32().unwrap();
    let want: Vec<f64> = (0..n * c * v)
        .map(|i| {
            let (x, k, b) = (i % v, (i / v) % c, i / (v * c));
            let d = app.image_host[b * v + x] as f64 - (k as f64 + 0.5) / c as f64;
            -(sharpness as f64) * d * d
        })
        .collect();
    common::assert_close(&z, &want, Tol::abs(1e-5), "application logits");

    let mut lshape = shape.clone();
    lshape[1] = 1;
    let uploaded = Tensor::from_f32(&gpu, &shape, &z).unwrap();
    let uploaded_labels =
        Labels::from_indices(&gpu, &lshape, &app.labels_host, c).expect("labels in range");
    for binning in [Binning::Hard, Binning::Soft] {
        let loss = AceDiceCeLoss::new(binning);
        let (out, grad) = host_app::loss_and_grad(&gpu, &app, &loss).unwrap();
        let ref_out = loss.forward(&uploaded, &uploaded_labels).unwrap();
        let ref_grad = ref_out.backward().unwrap();
        let what = format!("{binning:?}");
        let (l, rl) = (
            out.loss.to_vec_f32().unwrap(),
            ref_out.loss.to_vec_f32().unwrap(),
        );
        assert_eq!(bits(&l), bits(&rl), "{what} loss {l:?} vs {rl:?}");
        for (name, a, b) in [
            ("ace", &out.ace, &ref_out.ace),
            ("dice", &out.dice, &ref_out.dice),
            ("ce", &out.ce, &ref_out.ce),
        ] {
            assert_eq!(first(a).to_bits(), first(b).to_bits(), "{what} {name}");
        }
        let (g, rg) = (grad.to_vec_f32().unwrap(), ref_grad.to_vec_f32().unwrap());
        assert_eq!(g.len(), n * c * v);
        assert_eq!(bits(&g), bits(&rg), "{what} gradient");
        // A real loss with a real gradient, not zeros.
        assert!(l[0] > 0.05 && l[0].is_finite(), "{what} loss {}", l[0]);
        assert!(g.iter().any(|&x| x.abs() > 1e-6), "{what} gradient is zero");
    }

    // The application's step binds calibseg's gradient buffer directly.
    let (_, grad) =
        host_app::loss_and_grad(&gpu, &app, &AceDiceCeLoss::new(Binning::Hard)).unwrap();
    let g = grad.to_vec_f32().unwrap();
    let lr = 20.0f32;
    app.step(grad.buffer(), lr);
    let after = logits.to_vec_f32().unwrap();
    let want: Vec<f64> = z
        .iter()
        .zip(&g)
        .map(|(&z, &g)| z as f64 - lr as f64 * g as f64)
        .collect();
    common::assert_close(
        &after,
        &want,
        Tol::abs(1e-5),
        "logits after the application's step",
    );
    gpu.synchronize().unwrap();
}

fn buffer(gpu: &Gpu, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("application buffer"),
        size,
        usage,
        mapped_at_creation: false,
    })
}

#[test]
fn unusable_application_buffers_are_typed_errors() {
    let Some(gpu) = common::gpu() else { return };
    use wgpu::BufferUsages as U;
    let full = calibseg::gpu::STORAGE_USAGE;
    assert_eq!(full, U::STORAGE | U::COPY_SRC | U::COPY_DST);

    // Missing usage flags: named in the error.
    for (usage, missing) in [
        (U::STORAGE | U::COPY_DST, "COPY_SRC"),
        (U::STORAGE | U::COPY_SRC, "COPY_DST"),
        (U::COPY_SRC | U::COPY_DST | U::VERTEX, "STORAGE"),
    ] {
        let err =
            Tensor::from_buffer(&gpu, buffer(&gpu, 64, usage), &[4, 4], DType::F32).unwrap_err();
        match &err {
            Error::ForeignBuffer(m) => assert!(m.contains(missing), "{m}"),
            e => panic!("expected ForeignBuffer, got {e:?}"),
        }
    }
    // Too small for the shape.
    let err = Tensor::from_buffer(&gpu, buffer(&gpu, 60, full), &[4, 4], DType::F32).unwrap_err();
    assert!(
        matches!(&err, Error::ForeignBuffer(m) if m.contains("60") && m.contains("64")),
        "{err:?}"
    );
    // Alignment: 3 f16 elements are 6 bytes, but kernels and copies move whole 4-byte words.
    let err = Tensor::from_buffer(&gpu, buffer(&gpu, 6, full), &[1, 3], DType::F16).unwrap_err();
    assert!(
        matches!(&err, Error::ForeignBuffer(m) if m.contains("needs 8")),
        "{err:?}"
    );
    Tensor::from_buffer(&gpu, buffer(&gpu, 8, full), &[1, 3], DType::F16).unwrap();
    // No elements.
    let err = Tensor::from_buffer(&gpu, buffer(&gpu, 16, full), &[0, 4], DType::F32).unwrap_err();
    assert!(matches!(err, Error::InvalidShape(_)), "{err:?}");

    // A larger buffer is fine; the tensor reads its first elements.
    let b = buffer(&gpu, 256, full);
    let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
    gpu.queue().write_buffer(&b, 0, bytemuck::cast_slice(&data));
    let t = Tensor::from_buffer(&gpu, b, &[3, 4], DType::F32).unwrap();
    assert_eq!(t.to_vec_f32().unwrap(), data);
    let relu: Vec<f32> = calibseg::ops::relu(&t).unwrap().to_vec_f32().unwrap();
    assert_eq!(relu, data.iter().map(|x| x.max(0.0)).collect::<Vec<_>>());
}
