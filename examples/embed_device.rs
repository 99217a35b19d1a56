//! An application that already owns a wgpu device (a game, a visualisation)
//! runs wgformer on it instead of letting wgformer open its own: the same
//! device, queue and memory, with `wgformer::wgpu` so the versions match.
//!
//! ```sh
//! cargo run --release --example embed_device
//! ```

use wgformer::nn::{Gpt, GptConfig};
use wgformer::{wgpu, Gpu};

fn main() -> wgformer::Result<()> {
    // The application's own setup.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .map_err(|e| wgformer::Error::Gpu(format!("no adapter: {e}")))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("my app's device"),
        // WebGPU's default limits are enough for wgformer; the adapter's own
        // (`adapter.limits()`) let it use bigger buffers and tiles.
        required_limits: wgpu::Limits::default(),
        ..Default::default()
    }))
    .map_err(|e| wgformer::Error::Gpu(e.to_string()))?;

    // wgformer on that device.
    let gpu = Gpu::from_device(&adapter, &device, &queue)?;
    let config = GptConfig {
        vocab_size: 64,
        n_positions: 16,
        n_embd: 32,
        n_layer: 1,
        n_head: 2,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    let model = Gpt::new(&gpu, config, 0)?;
    let logits = model.logits(&[1u32, 2, 3])?; // (1, 3, 64), on the app's device
    println!(
        "{} ran a GPT: logits {:?}, first {:?}",
        gpu.adapter_name(),
        logits.shape(),
        &logits.to_vec()?[..4]
    );
    Ok(())
}
