//! calibseg inside a wgpu application, without copies: the application owns the device, the queue, a WGSL
//! shader and its buffers; its shader writes logits; calibseg computes the paper's fused training loss,
//! 0.33 (mL1-ACE + Dice + CE) with soft binning, and its gradient straight from those buffers; the
//! application's next shader reads calibseg's gradient buffer as it is to take a gradient step.
//!
//! ```sh
//! cargo run --release --example embed_in_wgpu_app
//! ```
//!
//! The application side lives in `examples/shared/host_app.rs` (shared with `tests/interop.rs`).

#[path = "shared/host_app.rs"]
mod host_app;

use calibseg::loss::{AceDiceCeLoss, Binning};
use calibseg::Gpu;

/// Step size of the application's gradient step on its logits.
const LR: f32 = 5.0;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The application opens its own device and writes logits with its own shader.
    let app = host_app::HostApp::new()?;
    app.compute_logits(12.0);

    // 2. calibseg shares the application's device and queue (cheap handle clones) ...
    let gpu = Gpu::from_device(app.device.clone(), app.queue.clone());
    println!("device: {} ({:?})", gpu.info().name, gpu.info().backend);

    // 3. ... and reads the application's buffers in place: no upload, no download.
    let loss = AceDiceCeLoss::new(Binning::Soft);
    for step in 0..6 {
        let (out, grad) = host_app::loss_and_grad(&gpu, &app, &loss)?;
        let value = out.loss.to_vec_f32()?[0];
        let terms = |t: &Option<calibseg::Tensor>| match t {
            Some(t) => t.to_vec_f32().map(|v| v[0]),
            None => Ok(f32::NAN),
        };
        println!(
            "step {step}: loss {value:.6} (mL1-ACE {:.6}, Dice {:.6}, CE {:.6}), gradient {:?} in calibseg's buffer",
            terms(&out.ace)?,
            terms(&out.dice)?,
            terms(&out.ce)?,
            grad.shape()
        );
        // 4. The application binds calibseg's gradient buffer in its own shader: logits -= lr * grad.
        app.step(grad.buffer(), LR);
    }
    gpu.synchronize()?;
    Ok(())
}
