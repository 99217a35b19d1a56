//! Elementwise kernels, the embedding gather and its backward, and the attention
//! head permutes at GPT-2-ish sizes (2048 x 768; B=8, T=256, C=768, NH=12):
//! GB/s over the bytes each kernel must move once (compare with `copy`).

use crate::harness::Bench;
use wgformer::kernels::{elementwise as ew, embedding as emb, permute as perm};
use wgformer::{DType, Result, Tensor};

pub fn run(b: &mut Bench) -> Result<()> {
    let (rows, c) = (2048usize, 768usize);
    // Skip the host-side setup when the filter selects none of these.
    let names = [
        format!("add/same-shape/{rows}x{c}"),
        format!("add/bias[C]/{rows}x{c}"),
        format!("add/bias[C]-scalar/{rows}x{}", c - 1),
        format!("add_assign/bias[C]/{rows}x{c}"),
        format!("gelu_tanh/vec4/{rows}x{c}"),
        format!("gelu_erf/vec4/{rows}x{c}"),
        format!("dropout/p=0.1/{rows}x{c}"),
        format!("gelu_tanh_bwd/vec4/{rows}x{c}"),
    ];
    if names.iter().any(|name| b.selects(name)) {
        elementwise(b, rows, c)?;
    }
    embedding(b, rows, c)?;
    if selected(b, "embedding_bwd/") {
        embedding_bwd(b, rows, c)?;
    }
    if ["split_heads/", "merge_heads/", "split_qkv/"]
        .iter()
        .any(|k| selected(b, k))
    {
        permute(b, 8, 256, 768, 12)?;
    }
    Ok(())
}

/// Whether the CLI filter can select a benchmark whose name starts with `kernel`
/// (a filter naming a shape or variant selects every kernel).
fn selected(b: &Bench, kernel: &str) -> bool {
    b.filter.as_deref().is_none_or(|filter| {
        filter
            .split(',')
            .any(|f| kernel.contains(f) || f.contains(kernel) || !f.contains('/'))
    })
}

/// add (same shape, row broadcast vec4 and scalar), add_assign, GELUs, dropout.
fn elementwise(b: &mut Bench, rows: usize, c: usize) -> Result<()> {
    let n = rows * c;
    let shape = format!("{rows}x{c}");
    let gpu = b.gpu.clone();
    let x = Tensor::randn(&gpu, &[rows, c], 1.0, 1)?;
    let y = Tensor::randn(&gpu, &[rows, c], 1.0, 2)?;
    let bias = Tensor::randn(&gpu, &[c], 1.0, 3)?;
    let out = Tensor::empty(&gpu, &[rows, c], DType::F32)?;
    let f = 4.0; // bytes per f32
    let nn = n as f64;

    b.measure("add", "same-shape", &shape, nn, 3.0 * f * nn, || {
        ew::add_into(&x, &y, &out)
    })?;
    b.measure(
        "add",
        "bias[C]",
        &shape,
        nn,
        (2.0 * nn + c as f64) * f,
        || ew::add_into(&x, &bias, &out),
    )?;
    let odd = Tensor::randn(&gpu, &[rows, c - 1], 1.0, 4)?;
    let odd_out = Tensor::empty(&gpu, &[rows, c - 1], DType::F32)?;
    let odd_bias = Tensor::randn(&gpu, &[c - 1], 1.0, 5)?;
    b.measure(
        "add",
        "bias[C]-scalar",
        &format!("{rows}x{}", c - 1),
        (rows * (c - 1)) as f64,
        (2.0 * (rows * (c - 1)) as f64 + (c - 1) as f64) * f,
        || ew::add_into(&odd, &odd_bias, &odd_out),
    )?;
    b.measure(
        "add_assign",
        "bias[C]",
        &shape,
        nn,
        (2.0 * nn + c as f64) * f,
        || ew::add_assign(&out, &bias),
    )?;
    b.measure("gelu_tanh", "vec4", &shape, 0.0, 2.0 * f * nn, || {
        ew::gelu_tanh(&x).map(drop)
    })?;
    b.measure("gelu_erf", "vec4", &shape, 0.0, 2.0 * f * nn, || {
        ew::gelu_erf(&x).map(drop)
    })?;
    b.measure("dropout", "p=0.1", &shape, 0.0, 2.0 * f * nn, || {
        ew::dropout(&x, 0.1, 7).map(drop)
    })?;
    // Backward: reads x and dy, writes dx.
    b.measure("gelu_tanh_bwd", "vec4", &shape, 0.0, 3.0 * f * nn, || {
        ew::gelu_tanh_bwd(&x, &y).map(drop)
    })?;
    Ok(())
}

/// Embedding gather, `rows` tokens of width `c`.
fn embedding(b: &mut Bench, rows: usize, c: usize) -> Result<()> {
    let gpu = b.gpu.clone();
    let (f, nn) = (4.0, (rows * c) as f64);

    // Embedding gather, 2048 tokens: GPT-2's vocabulary where the binding limit
    // allows (lavapipe's 128 MiB does not hold 50257 x 768 f32). The table is only
    // built when the filter selects this benchmark (38M random values).
    let v = 50257usize.min((gpu.max_binding_bytes() / (4 * c as u64)) as usize);
    let shape = format!("{rows}x{c} V={v}");
    let name = format!("embedding/gather/{shape}");
    if !b.selects(&name) {
        return Ok(());
    }
    let table = Tensor::randn(&gpu, &[v, c], 0.02, 6)?;
    let ids: Vec<u32> = (0..rows as u32).map(|i| (i * 7919) % v as u32).collect();
    let ids = Tensor::from_u32(&gpu, &ids, &[rows])?;
    let gathered = 2.0 * f * nn + 4.0 * rows as f64; // rows read + written, ids
    b.measure("embedding", "gather", &shape, 0.0, gathered, || {
        emb::embedding(&table, &ids).map(drop)
    })?;
    Ok(())
}

/// The largest vocabulary up to GPT-2's 50257 whose (V, C) f32 table fits one
/// storage binding (lavapipe's 128 MiB holds 43690 rows of 768).
fn large_vocab(b: &Bench, c: usize) -> usize {
    50257usize.min((b.gpu.max_binding_bytes() / (4 * c as u64)) as usize)
}

/// Embedding backward (deterministic sort + segmented sum), `rows` tokens of width
/// `c`, a small and a large vocabulary. Bytes: dy and ids read once, the (V, C)
/// table written once; the sort's traffic is not counted (it is overhead).
fn embedding_bwd(b: &mut Bench, rows: usize, c: usize) -> Result<()> {
    let gpu = b.gpu.clone();
    let f = 4.0;
    let dy = Tensor::randn(&gpu, &[rows, c], 1.0, 8)?;
    for v in [256, large_vocab(b, c)] {
        // Token ids as text would give them: a few frequent ids, many rare.
        let ids: Vec<u32> = (0..rows as u64)
            .map(|i| {
                let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                (if h % 4 == 0 { h % 16 } else { h % v as u64 }) as u32
            })
            .collect();
        let ids = Tensor::from_u32(&gpu, &ids, &[rows])?;
        let shape = format!("{rows}x{c} V={v}");
        let bytes = f * (rows * c + rows + v * c) as f64;
        b.measure("embedding_bwd", "sort+sum", &shape, 0.0, bytes, || {
            emb::embedding_bwd(&ids, &dy, v).map(drop)
        })?;
    }
    Ok(())
}

/// split_heads / merge_heads and the packed-QKV split / merge: copies, 2 x 4 bytes
/// per element moved.
fn permute(b: &mut Bench, batch: usize, t: usize, c: usize, nh: usize) -> Result<()> {
    let gpu = b.gpu.clone();
    let hs = c / nh;
    let shape = format!("B={batch} T={t} C={c} NH={nh}");
    let n = (batch * t * c) as f64;
    let x = Tensor::randn(&gpu, &[batch, t, c], 1.0, 9)?;
    let y = Tensor::randn(&gpu, &[batch, nh, t, hs], 1.0, 10)?;
    b.measure("split_heads", "vec4", &shape, 0.0, 8.0 * n, || {
        perm::split_heads(&x, nh).map(drop)
    })?;
    b.measure("merge_heads", "vec4", &shape, 0.0, 8.0 * n, || {
        perm::merge_heads(&y).map(drop)
    })?;
    let qkv = Tensor::randn(&gpu, &[batch, t, 3 * c], 1.0, 11)?;
    b.measure("split_qkv", "vec4", &shape, 0.0, 3.0 * 8.0 * n, || {
        perm::split_qkv(&qkv, nh).map(drop)
    })?;
    Ok(())
}
