//! Row-wise kernels at GPT-2-like sizes: softmax, layernorm, cross-entropy and
//! reductions, forward and backward (`*_bwd`, at the forward's sizes), in GB/s
//! over the bytes each must move at least once. Each one is followed by a plain
//! copy that moves the same number of bytes (the bandwidth ceiling on this
//! adapter) and the ratio of the two rates.

use crate::harness::{Bench, Record};
use wgformer::kernels::copy::copy_into;
use wgformer::kernels::cross_entropy::{cross_entropy, cross_entropy_bwd, CrossEntropyOptions};
use wgformer::kernels::layernorm::{layernorm, layernorm_bwd};
use wgformer::kernels::reduce::{reduce, reduce_bwd, Reduce};
use wgformer::kernels::softmax::{softmax, softmax_bwd, SoftmaxOptions};
use wgformer::{DType, Result, Tensor};

/// Times a copy of `bytes` bytes (half read, half written) and prints the
/// kernel's rate as a fraction of it.
fn versus_copy(b: &mut Bench, kernel: Option<Record>, bytes: f64) -> Result<()> {
    let Some(k) = kernel else {
        return Ok(());
    };
    let n = (bytes / 8.0).ceil() as usize;
    let src = Tensor::randn(&b.gpu, &[n], 1.0, 1)?;
    let dst = Tensor::empty(&b.gpu, &[n], DType::F32)?;
    let variant = format!("as {}/{}", k.kernel, k.variant);
    // The copy runs even when the filter would skip it: it is this entry's yardstick.
    let filter = b.filter.take();
    let copy = b.measure(
        "copy",
        &variant,
        &format!("n={n}"),
        0.0,
        8.0 * n as f64,
        || copy_into(&src, &dst),
    );
    b.filter = filter;
    if let Some(c) = copy? {
        // Also by CPU time where it means the kernel's cost (CPU adapters): the
        // same bytes, so the ratio of the times.
        let by_cpu = if k.cpu_ms > 0.0 && c.cpu_ms > 0.0 && cpu_adapter(b) {
            format!(", by CPU time {:.0}%", 100.0 * c.cpu_ms / k.cpu_ms)
        } else {
            String::new()
        };
        println!(
            "  -> {}/{} {}: {:.2} GB/s = {:.0}% of copy ({:.2} GB/s){by_cpu}",
            k.kernel,
            k.variant,
            k.shape,
            k.gbps,
            100.0 * k.gbps / c.gbps,
            c.gbps
        );
    }
    Ok(())
}

fn cpu_adapter(b: &Bench) -> bool {
    b.gpu.policy().cpu_adapter
}

pub fn run(b: &mut Bench) -> Result<()> {
    // softmax over attention scores (B, NH, T, T): read x, write y.
    let (bb, nh, t) = (4usize, 12usize, 256usize);
    let n = bb * nh * t * t;
    let x = Tensor::randn(&b.gpu, &[bb, nh, t, t], 1.0, 2)?;
    let shape = format!("{bb}x{nh}x{t}x{t}");
    for (variant, causal) in [("plain", false), ("causal", true)] {
        let opts = SoftmaxOptions {
            scale: 0.125,
            causal,
            key_mask: None,
        };
        let bytes = 8.0 * n as f64;
        let r = b.measure("softmax", variant, &shape, 0.0, bytes, || {
            softmax(&x, &opts).map(drop)
        })?;
        versus_copy(b, r, bytes)?;
        // Backward: read y and dy, write dx (masked entries are written, not read).
        let y = softmax(&x, &opts)?;
        let dy = Tensor::randn(&b.gpu, &[bb, nh, t, t], 1.0, 12)?;
        let bytes = 12.0 * n as f64;
        let r = b.measure("softmax_bwd", variant, &shape, 0.0, bytes, || {
            softmax_bwd(&y, &dy, &opts).map(drop)
        })?;
        versus_copy(b, r, bytes)?;
    }
    drop(x);

    // layernorm (B*T, C): read x, write y, plus weight, bias, mean, rstd.
    for (rows, c) in [(2048usize, 768usize), (8192, 64)] {
        let x = Tensor::randn(&b.gpu, &[rows, c], 1.0, 3)?;
        let w = Tensor::randn(&b.gpu, &[c], 1.0, 4)?;
        let bias = Tensor::randn(&b.gpu, &[c], 1.0, 5)?;
        let bytes = 4.0 * (2 * rows * c + 2 * c + 2 * rows) as f64;
        let r = b.measure(
            "layernorm",
            "fwd",
            &format!("{rows}x{c}"),
            0.0,
            bytes,
            || layernorm(&x, &w, &bias, 1e-5).map(drop),
        )?;
        versus_copy(b, r, bytes)?;
        // Backward: read x, dy, mean, rstd, weight; write dx, dweight, dbias.
        let (_, mean, rstd) = layernorm(&x, &w, &bias, 1e-5)?;
        let dy = Tensor::randn(&b.gpu, &[rows, c], 1.0, 13)?;
        let bytes = 4.0 * (3 * rows * c + 2 * rows + 3 * c) as f64;
        let r = b.measure(
            "layernorm_bwd",
            "bwd",
            &format!("{rows}x{c}"),
            0.0,
            bytes,
            || layernorm_bwd(&x, &w, &mean, &rstd, &dy).map(drop),
        )?;
        versus_copy(b, r, bytes)?;
    }

    // cross-entropy (N, V): read the logits once, plus targets and per-row outputs.
    // 2048 x 50257 floats is 411 MB, over many adapters' binding limit (128 MiB on
    // lavapipe): take as many rows as fit.
    let v_big = 50257usize;
    let fit = (b.gpu.max_binding_bytes() as usize / (4 * v_big)).min(2048);
    for (rows, v) in [(fit, v_big), (2048, 256)] {
        let x = Tensor::randn(&b.gpu, &[rows, v], 2.0, 6)?;
        let ids: Vec<u32> = (0..rows as u32).map(|i| i * 7919 % v as u32).collect();
        let targets = Tensor::from_u32(&b.gpu, &ids, &[rows])?;
        let opts = CrossEntropyOptions {
            label_smoothing: 0.1,
            ignore_index: None,
        };
        let bytes = 4.0 * (rows * v + 4 * rows) as f64;
        let r = b.measure(
            "cross_entropy",
            "fwd",
            &format!("{rows}x{v}"),
            0.0,
            bytes,
            || cross_entropy(&x, &targets, &opts).map(drop),
        )?;
        versus_copy(b, r, bytes)?;
        // Backward: read the logits, targets, lse and dloss; write dlogits.
        let lse = cross_entropy(&x, &targets, &opts)?.lse;
        let dloss = Tensor::full(&b.gpu, &[rows], 1.0 / rows as f32)?;
        let bytes = 4.0 * (2 * rows * v + 3 * rows) as f64;
        let r = b.measure(
            "cross_entropy_bwd",
            "bwd",
            &format!("{rows}x{v}"),
            0.0,
            bytes,
            || cross_entropy_bwd(&x, &targets, &lse, &dloss, &opts).map(drop),
        )?;
        versus_copy(b, r, bytes)?;
    }

    // reductions of (B*T, C) activations: over C (rows), over B*T (columns).
    let (rows, c) = (8192usize, 768usize);
    let x = Tensor::randn(&b.gpu, &[rows, c], 1.0, 7)?;
    for (axis, out) in [(1usize, rows), (0, c)] {
        for (name, op) in [("sum", Reduce::Sum), ("max", Reduce::Max)] {
            let bytes = 4.0 * (rows * c + out) as f64;
            let variant = format!("{name} axis {axis}");
            let r = b.measure(
                "reduce",
                &variant,
                &format!("{rows}x{c}"),
                0.0,
                bytes,
                || reduce(&x, axis, op).map(drop),
            )?;
            versus_copy(b, r, bytes)?;
        }
    }
    // Backward: read dy (and x for max), write dx.
    for (axis, out) in [(1usize, rows), (0, c)] {
        let mut out_shape = vec![rows, c];
        out_shape.remove(axis);
        let dy = Tensor::randn(&b.gpu, &out_shape, 1.0, 8)?;
        for (name, op) in [("sum", Reduce::Sum), ("max", Reduce::Max)] {
            let reads_x = if op == Reduce::Max { 1 } else { 0 };
            let bytes = 4.0 * ((1 + reads_x) * rows * c + out) as f64;
            let variant = format!("{name} axis {axis}");
            let r = b.measure(
                "reduce_bwd",
                &variant,
                &format!("{rows}x{c}"),
                0.0,
                bytes,
                || reduce_bwd(&dy, &[rows, c], axis, op, Some(&x)).map(drop),
            )?;
            versus_copy(b, r, bytes)?;
        }
    }
    Ok(())
}
