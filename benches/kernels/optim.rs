//! The optimiser step's kernels over the parameters of the `train_step` GPT
//! (AdamW, global-norm clipping): one launch per parameter as the optimiser
//! ran before its arenas (a sum of squares and an update per tensor), against
//! the arenas' (each gradient copied to its place, then the tails, sums of
//! squares and update once per chunk). GB/s over the bytes the update and the
//! norm must move (read p, g, m, v and g again; write p, m, v), so that the
//! arenas' copies count against them.

use crate::harness::Bench;
use crate::train_step;
use wgformer::kernels::copy::copy_into;
use wgformer::kernels::optim::{adam_step, global_norm, norm_partials, zero_tails, AdamStep};
use wgformer::nn::Gpt;
use wgformer::{Result, Tensor};

/// Elements each parameter's place in an arena is rounded to (256 bytes).
const ALIGN: usize = 64;

pub fn run(b: &mut Bench) -> Result<()> {
    let dims = train_step::dims()?;
    let [l, c, nh, _, _, v] = dims;
    let shape = format!("GPT L{l} C{c} NH{nh} V{v}");
    let names = ["per-tensor", "arena"].map(|variant| format!("adamw_step/{variant}/{shape}"));
    // Before building the model: the GPT-2 size takes seconds to initialise.
    if !names.iter().any(|name| b.selects(name)) {
        return Ok(());
    }
    let model = Gpt::new(&b.gpu, train_step::gpt_config(dims), 1)?;
    let params = model.params();
    let n: usize = params.iter().map(|p| p.value().numel()).sum();
    println!("adamw_step: {} tensors, {n} floats", params.len());
    let gpu = b.gpu.clone();
    let bytes = 4.0 * 9.0 * n as f64;
    let s = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        decoupled_decay: 0.1,
        l2: 0.0,
        step: 1,
        grad_scale: 1.0,
    };
    let clip = Tensor::from_slice(&gpu, &[0.0, 1.0], &[2])?;

    // One launch per parameter.
    let values: Vec<Tensor> = params.iter().map(|p| p.value()).collect();
    // Zeros: the values do not change the time, and GPT-2's 124 M would take
    // seconds to draw on the host.
    let like = || -> Result<Vec<Tensor>> {
        values
            .iter()
            .map(|t| Tensor::zeros(&gpu, t.shape()))
            .collect()
    };
    let (grads, m, vs) = (like()?, like()?, like()?);
    let grad_refs: Vec<&Tensor> = grads.iter().collect();
    let partials = Tensor::zeros(
        &gpu,
        &[grads.iter().map(|g| norm_partials(g.numel())).sum()],
    )?;
    b.measure("adamw_step", "per-tensor", &shape, 0.0, bytes, || {
        global_norm(&grad_refs, &partials, &clip, 1.0)?;
        for (i, p) in params.iter().enumerate() {
            let decay = if p.decays() { s.decoupled_decay } else { 0.0 };
            let step = AdamStep {
                decoupled_decay: decay,
                ..s
            };
            adam_step(&values[i], &grads[i], &m[i], &vs[i], &clip, &step)?;
        }
        Ok(())
    })?;

    // The arenas: a chunk per group (decay or not), places 256-byte aligned.
    let homes = like()?;
    let mut chunks = Vec::new();
    for decays in [true, false] {
        let group: Vec<usize> = (0..params.len())
            .filter(|&i| params[i].decays() == decays)
            .collect();
        let mut tails = Vec::new();
        let mut len = 0;
        for &i in &group {
            let numel = values[i].numel();
            if !numel.is_multiple_of(4) {
                tails.extend([(len + numel) as u32, (4 - numel % 4) as u32]);
            }
            len += numel.max(1).next_multiple_of(ALIGN);
        }
        let tails = match tails.is_empty() {
            true => None,
            false => Some(Tensor::from_u32(&gpu, &tails, &[tails.len() / 2, 2])?),
        };
        let flat = || Tensor::zeros(&gpu, &[len]);
        let decay = if decays { s.decoupled_decay } else { 0.0 };
        chunks.push((flat()?, flat()?, flat()?, flat()?, tails, decay));
    }
    let flat_grads: Vec<&Tensor> = chunks.iter().map(|c| &c.1).collect();
    let n_partials = flat_grads.iter().map(|g| norm_partials(g.numel())).sum();
    let partials = Tensor::zeros(&gpu, &[n_partials])?;
    b.measure("adamw_step", "arena", &shape, 0.0, bytes, || {
        for (g, home) in grads.iter().zip(&homes) {
            copy_into(g, home)?;
        }
        for (_, g, _, _, tails, _) in &chunks {
            if let Some(tails) = tails {
                zero_tails(g, tails)?;
            }
        }
        global_norm(&flat_grads, &partials, &clip, 1.0)?;
        for (p, g, m, v, _, decay) in &chunks {
            let step = AdamStep {
                decoupled_decay: *decay,
                ..s
            };
            adam_step(p, g, m, v, &clip, &step)?;
        }
        Ok(())
    })?;
    Ok(())
}
