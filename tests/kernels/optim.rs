//! Optimiser kernels against the f64 reference, step by step.

use crate::common::*;
use wgformer::kernels::optim::{adam_step, global_norm, norm_partials, sgd_step, AdamStep};
use wgformer::{reference, Tensor};

fn upload(v: &[f64], shape: &[usize]) -> Tensor {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_slice(&gpu(), &f, shape).unwrap()
}

#[test]
fn adamw_and_adam_match_the_reference_over_ten_steps() {
    let gpu = gpu();
    for (n, decay, l2) in [
        (1usize, 0.1f32, 0.0f32),
        (129, 0.01, 0.0),
        (4099, 0.0, 0.05),
    ] {
        let mut p: Vec<f64> = to_f64(&data(n, 1));
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        let param = upload(&p, &[n]);
        let (gm, gv) = (
            Tensor::zeros(&gpu, &[n]).unwrap(),
            Tensor::zeros(&gpu, &[n]).unwrap(),
        );
        let clip = Tensor::from_slice(&gpu, &[0.0, 1.0], &[2]).unwrap();
        for step in 1..=10u32 {
            // Gradients in f32 so both sides see the same values.
            let g32 = data(n, 100 + step as u64);
            let grad = Tensor::from_slice(&gpu, &g32, &[n]).unwrap();
            let s = AdamStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.98,
                eps: 1e-9,
                decoupled_decay: decay,
                l2,
                step,
                grad_scale: 0.5,
            };
            adam_step(&param, &grad, &gm, &gv, &clip, &s).unwrap();
            let g: Vec<f64> = g32.iter().map(|&x| 0.5 * x as f64).collect();
            reference::optim::adam_step(
                &mut p,
                &g,
                &mut m,
                &mut v,
                1e-2,
                (0.9, 0.98),
                1e-9,
                decay as f64,
                l2 as f64,
                step,
            );
        }
        assert_close(
            &format!("adam param n={n}"),
            &param.to_vec().unwrap(),
            &p,
            1e-5,
            1e-4,
        );
        assert_close(
            &format!("adam m n={n}"),
            &gm.to_vec().unwrap(),
            &m,
            1e-6,
            1e-4,
        );
        assert_close(
            &format!("adam v n={n}"),
            &gv.to_vec().unwrap(),
            &v,
            1e-7,
            1e-4,
        );
    }
}

#[test]
fn sgd_with_momentum_matches_the_reference() {
    let gpu = gpu();
    let n = 1000;
    let mut p = to_f64(&data(n, 2));
    let mut b = vec![0.0; n];
    let param = upload(&p, &[n]);
    let buf = Tensor::zeros(&gpu, &[n]).unwrap();
    let clip = Tensor::from_slice(&gpu, &[0.0, 1.0], &[2]).unwrap();
    for step in 0..5 {
        let g32 = data(n, 50 + step);
        let grad = Tensor::from_slice(&gpu, &g32, &[n]).unwrap();
        sgd_step(&param, &grad, &buf, &clip, 0.1, 0.9, 1e-3, 1.0).unwrap();
        reference::optim::sgd_step(&mut p, &to_f64(&g32), &mut b, 0.1, 0.9, 1e-3);
    }
    assert_close("sgd param", &param.to_vec().unwrap(), &p, 1e-5, 1e-4);
}

#[test]
fn global_norm_and_clip_factor_match_the_reference() {
    let gpu = gpu();
    let sizes = [1usize, 7, 4096, 4097, 70_000];
    let grads32: Vec<Vec<f32>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| data(n, i as u64))
        .collect();
    let grads: Vec<Tensor> = grads32
        .iter()
        .map(|g| Tensor::from_slice(&gpu, g, &[g.len()]).unwrap())
        .collect();
    let refs: Vec<Vec<f64>> = grads32.iter().map(|g| to_f64(g)).collect();
    let ref_slices: Vec<&[f64]> = refs.iter().map(|g| g.as_slice()).collect();
    let partials = Tensor::zeros(&gpu, &[sizes.iter().map(|&n| norm_partials(n)).sum()]).unwrap();
    let clip = Tensor::zeros(&gpu, &[2]).unwrap();
    let views: Vec<&Tensor> = grads.iter().collect();
    for max_norm in [0.0f32, 1.0, 1e6] {
        global_norm(&views, &partials, &clip, max_norm).unwrap();
        let (norm, scale) = reference::optim::global_norm(&ref_slices, max_norm as f64);
        assert_close(
            &format!("norm/scale max_norm={max_norm}"),
            &clip.to_vec().unwrap(),
            &[norm, scale],
            1e-6,
            1e-5,
        );
    }
    // A partials buffer shorter than the gradients need is refused.
    let too_small = Tensor::zeros(&gpu, &[1]).unwrap();
    assert!(global_norm(&views, &too_small, &clip, 1.0).is_err());
}

#[test]
fn bad_optimizer_input_is_an_error() {
    let gpu = gpu();
    let p = Tensor::zeros(&gpu, &[4]).unwrap();
    let g = Tensor::zeros(&gpu, &[5]).unwrap();
    let clip = Tensor::from_slice(&gpu, &[0.0, 1.0], &[2]).unwrap();
    let s = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        decoupled_decay: 0.0,
        l2: 0.0,
        step: 1,
        grad_scale: 1.0,
    };
    assert!(adam_step(&p, &g, &p.clone(), &p.clone(), &clip, &s).is_err());
    let g4 = Tensor::zeros(&gpu, &[4]).unwrap();
    let (m, v) = (
        Tensor::zeros(&gpu, &[4]).unwrap(),
        Tensor::zeros(&gpu, &[4]).unwrap(),
    );
    assert!(adam_step(&p, &g4, &m, &v, &clip, &AdamStep { step: 0, ..s }).is_err());
}

/// Gives `p` the gradient `c` through a tape: loss = sum(p * c).
fn backward_with_grad(p: &wgformer::autograd::Param, c: &Tensor) {
    let tape = wgformer::autograd::Tape::new(&gpu());
    let x = tape.param(p);
    let loss = tape
        .sum_all(&tape.mul(&x, &tape.constant(c.clone())).unwrap())
        .unwrap();
    tape.backward(&loss).unwrap();
}

#[test]
fn optimizer_adamw_with_accumulation_clipping_and_no_decay_on_biases() {
    use wgformer::autograd::Param;
    use wgformer::optim::{Optimizer, OptimizerKind};
    let gpu = gpu();
    let (nw, nb) = (300usize, 7usize);
    let w0 = to_f64(&data(nw, 1));
    let b0 = to_f64(&data(nb, 2));
    let w = Param::new("w", upload(&w0, &[nw]));
    let b = Param::without_decay("b", upload(&b0, &[nb]));
    let kind = OptimizerKind::AdamW {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let max_norm = 0.5f32;
    let mut opt = Optimizer::new(&gpu, vec![w.clone(), b.clone()], kind, Some(max_norm)).unwrap();
    let (mut rw, mut rb) = (w0.clone(), b0.clone());
    let (mut mw, mut vw, mut mb, mut vb) =
        (vec![0.0; nw], vec![0.0; nw], vec![0.0; nb], vec![0.0; nb]);
    for step in 1..=4u32 {
        let cw = data(nw, 10 + step as u64);
        let cb = data(nb, 20 + step as u64);
        // Two micro-batches with the same gradient: their mean is c.
        for _ in 0..2 {
            backward_with_grad(&w, &Tensor::from_slice(&gpu, &cw, &[nw]).unwrap());
            backward_with_grad(&b, &Tensor::from_slice(&gpu, &cb, &[nb]).unwrap());
        }
        opt.step(1e-2, 2).unwrap();
        assert!(w.grad().is_none(), "step clears the gradients");
        let (gw, gb) = (to_f64(&cw), to_f64(&cb));
        let (_, factor) = reference::optim::global_norm(&[&gw, &gb], max_norm as f64);
        let gw: Vec<f64> = gw.iter().map(|g| g * factor).collect();
        let gb: Vec<f64> = gb.iter().map(|g| g * factor).collect();
        reference::optim::adam_step(
            &mut rw,
            &gw,
            &mut mw,
            &mut vw,
            1e-2,
            (0.9, 0.95),
            1e-8,
            0.1,
            0.0,
            step,
        );
        reference::optim::adam_step(
            &mut rb,
            &gb,
            &mut mb,
            &mut vb,
            1e-2,
            (0.9, 0.95),
            1e-8,
            0.0,
            0.0,
            step,
        );
    }
    assert_close("w", &w.value().to_vec().unwrap(), &rw, 1e-5, 1e-4);
    assert_close(
        "b (no decay)",
        &b.value().to_vec().unwrap(),
        &rb,
        1e-5,
        1e-4,
    );
}

/// Gives `p` the gradient `c` through a tape on `gpu`: loss = sum(p * c).
fn backward_on(gpu: &wgformer::Gpu, p: &wgformer::autograd::Param, c: &[f32]) {
    let tape = wgformer::autograd::Tape::new(gpu);
    let x = tape.param(p);
    let c = Tensor::from_slice(gpu, c, &[c.len()]).unwrap();
    let loss = tape
        .sum_all(&tape.mul(&x, &tape.constant(c)).unwrap())
        .unwrap();
    tape.backward(&loss).unwrap();
}

/// Fills the buffer pool's small buckets with huge values, so that the vec4
/// tails of the next small gradients hold them (as a long run's recycled
/// buffers would): an arena that summed those tails into its norm would clip
/// every gradient to nothing.
fn dirty_the_pool(gpu: &wgformer::Gpu) {
    let dirty: Vec<Tensor> = (1..=64)
        .flat_map(|n| (0..4).map(move |_| n))
        .map(|n| Tensor::full(gpu, &[n], 1e30).unwrap())
        .collect();
    gpu.sync().unwrap();
    drop(dirty);
}

/// The optimiser's arenas: params of ragged lengths (odd ones leave vec4
/// tails in the arena) that decay and that do not, clipped, equal the f64
/// reference step by step; a step runs a handful of kernels, not a few per
/// param; and a step where one param has no gradient and another is frozen
/// updates neither (their chunk falls back to per-param updates).
#[test]
fn optimizer_arena_matches_the_reference_for_ragged_params() {
    use wgformer::autograd::Param;
    use wgformer::optim::{Optimizer, OptimizerKind};
    // A device of its own: its dispatch counter sees only this test.
    let gpu = wgformer::Gpu::new().unwrap();
    let lens = [1usize, 3, 4, 5, 63, 64, 65, 257, 1000];
    let decays = |i: usize| i.is_multiple_of(2);
    let init: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| data(n, 40 + i as u64))
        .collect();
    let params: Vec<Param> = init
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let t = Tensor::from_slice(&gpu, v, &[v.len()]).unwrap();
            match decays(i) {
                true => Param::new(format!("p{i}"), t),
                false => Param::without_decay(format!("p{i}"), t),
            }
        })
        .collect();
    let (lr, wd, max_norm) = (1e-2, 0.1, 0.5f32);
    // betas (0.9, 0.95), eps 1e-8, weight decay 0.1: the reference's below.
    let kind = OptimizerKind::gpt_adamw();
    let mut opt = Optimizer::new(&gpu, params.clone(), kind, Some(max_norm)).unwrap();
    let mut value: Vec<Vec<f64>> = init.iter().map(|v| to_f64(v)).collect();
    let mut m: Vec<Vec<f64>> = lens.iter().map(|&n| vec![0.0; n]).collect();
    let mut v = m.clone();
    // Step 4: p2 gets no gradient and p4 is frozen (both decay: one chunk).
    let (no_grad, frozen) = (2, 4);
    for step in 1..=4u32 {
        if step == 4 {
            params[frozen].set_trainable(false);
        }
        let skipped = |i: usize| step == 4 && (i == no_grad || i == frozen);
        let grads: Vec<Vec<f32>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| data(n, 100 * step as u64 + i as u64))
            .collect();
        dirty_the_pool(&gpu);
        for (i, p) in params.iter().enumerate() {
            if !skipped(i) {
                backward_on(&gpu, p, &grads[i]);
            }
        }
        gpu.sync().unwrap();
        let before = gpu.counters().snapshot().dispatches;
        opt.step(lr as f32, 1).unwrap();
        let dispatches = gpu.counters().snapshot().dispatches - before;
        if step < 4 {
            // Two chunks: tails, sum of squares and update each, and the clip factor.
            assert_eq!(
                dispatches, 7,
                "step {step}: kernels of a step on two chunks"
            );
        }
        let present: Vec<Vec<f64>> = (0..lens.len())
            .filter(|&i| !skipped(i))
            .map(|i| to_f64(&grads[i]))
            .collect();
        let refs: Vec<&[f64]> = present.iter().map(|g| g.as_slice()).collect();
        let (_, factor) = reference::optim::global_norm(&refs, max_norm as f64);
        for i in (0..lens.len()).filter(|&i| !skipped(i)) {
            let g: Vec<f64> = to_f64(&grads[i]).iter().map(|g| g * factor).collect();
            let decay = if decays(i) { wd } else { 0.0 };
            reference::optim::adam_step(
                &mut value[i],
                &g,
                &mut m[i],
                &mut v[i],
                lr,
                (0.9, 0.95),
                1e-8,
                decay,
                0.0,
                step,
            );
        }
    }
    for (i, p) in params.iter().enumerate() {
        let name = format!("p{i} (length {})", lens[i]);
        assert_close(&name, &p.value().to_vec().unwrap(), &value[i], 1e-5, 1e-4);
        let m_got = opt.state()[i][0].to_vec().unwrap();
        assert_close(&format!("{name}'s m"), &m_got, &m[i], 1e-5, 1e-4);
    }
}

/// A linear layer's weight and bias gradients are written by backward
/// straight into their places in the optimiser's arena: AdamW
/// with clipping over three steps, the last of two micro-batches (the second
/// summed in place onto the first), equals the f64 reference.
#[test]
fn linear_layer_gradients_in_the_arena_match_the_reference() {
    use wgformer::autograd::{Param, Tape};
    use wgformer::optim::{Optimizer, OptimizerKind};
    let gpu = gpu();
    let (rows, fin, fout) = (5usize, 7usize, 6usize);
    let (w0, b0) = (data(fin * fout, 61), data(fout, 62));
    let w = Param::new("w", Tensor::from_slice(&gpu, &w0, &[fin, fout]).unwrap());
    let b = Param::without_decay("b", Tensor::from_slice(&gpu, &b0, &[fout]).unwrap());
    let (lr, wd, max_norm) = (1e-2, 0.1, 0.5f32);
    // betas (0.9, 0.95), eps 1e-8, weight decay 0.1: the reference's below.
    let kind = OptimizerKind::gpt_adamw();
    let mut opt = Optimizer::new(&gpu, vec![w.clone(), b.clone()], kind, Some(max_norm)).unwrap();
    let (mut rw, mut rb) = (to_f64(&w0), to_f64(&b0));
    let (mut mw, mut vw) = (vec![0.0; fin * fout], vec![0.0; fin * fout]);
    let (mut mb, mut vb) = (vec![0.0; fout], vec![0.0; fout]);
    for step in 1..=3u32 {
        let micro_batches = if step == 3 { 2 } else { 1 };
        let (mut gw, mut gb) = (vec![0.0; fin * fout], vec![0.0; fout]);
        for micro in 0..micro_batches {
            let seed = 100 * step as u64 + 10 * micro as u64;
            let (x, c) = (data(rows * fin, seed), data(rows * fout, seed + 1));
            // loss = sum((x W + b) * c): dW = x^T c, db = column sums of c.
            let tape = Tape::new(&gpu);
            let xv = tape.constant(Tensor::from_slice(&gpu, &x, &[rows, fin]).unwrap());
            let y = tape
                .linear(&xv, &tape.param(&w), Some(&tape.param(&b)))
                .unwrap();
            let cv = tape.constant(Tensor::from_slice(&gpu, &c, &[rows, fout]).unwrap());
            let loss = tape.sum_all(&tape.mul(&y, &cv).unwrap()).unwrap();
            tape.backward(&loss).unwrap();
            for r in 0..rows {
                for o in 0..fout {
                    let co = c[r * fout + o] as f64;
                    gb[o] += co;
                    for i in 0..fin {
                        gw[i * fout + o] += x[r * fin + i] as f64 * co;
                    }
                }
            }
        }
        opt.step(lr as f32, micro_batches).unwrap();
        let mean =
            |g: Vec<f64>| -> Vec<f64> { g.iter().map(|g| g / micro_batches as f64).collect() };
        let (gw, gb) = (mean(gw), mean(gb));
        let (_, factor) = reference::optim::global_norm(&[&gw, &gb], max_norm as f64);
        let clip = |g: &[f64]| -> Vec<f64> { g.iter().map(|g| g * factor).collect() };
        let betas = (0.9, 0.95);
        reference::optim::adam_step(
            &mut rw,
            &clip(&gw),
            &mut mw,
            &mut vw,
            lr,
            betas,
            1e-8,
            wd,
            0.0,
            step,
        );
        reference::optim::adam_step(
            &mut rb,
            &clip(&gb),
            &mut mb,
            &mut vb,
            lr,
            betas,
            1e-8,
            0.0,
            0.0,
            step,
        );
    }
    assert_close("w", &w.value().to_vec().unwrap(), &rw, 1e-5, 1e-4);
    assert_close("b", &b.value().to_vec().unwrap(), &rb, 1e-5, 1e-4);
}

/// Backward writes the gradients of a linear layer (weight and bias) and of a
/// layer norm (gain and bias) straight into their places in the optimiser's
/// arena: it runs exactly the kernels it runs for the same params outside an
/// optimiser (no copy into the arena), and the four gradients, read from the
/// arena, equal the f64 reference. C = 7 leaves each gradient a vec4 tail.
#[test]
fn linear_and_layernorm_gradients_are_written_in_the_arena() {
    use wgformer::autograd::{Param, Tape};
    use wgformer::optim::{Optimizer, OptimizerKind};
    // A device of its own: its dispatch counter sees only this test.
    let gpu = wgformer::Gpu::new().unwrap();
    let (rows, fin, c, eps) = (5usize, 6usize, 7usize, 1e-5f32);
    let (w0, b0) = (data(fin * c, 71), data(c, 72));
    let (g0, beta0) = (data(c, 73), data(c, 74));
    let (x, dy) = (data(rows * fin, 75), data(rows * c, 76));
    let params = || {
        let t = |v: &[f32], shape: &[usize]| Tensor::from_slice(&gpu, v, shape).unwrap();
        [
            Param::new("w", t(&w0, &[fin, c])),
            Param::without_decay("b", t(&b0, &[c])),
            Param::without_decay("ln.weight", t(&g0, &[c])),
            Param::without_decay("ln.bias", t(&beta0, &[c])),
        ]
    };
    // loss = sum(layernorm(x W + b) * dy); returns the dispatches of backward.
    let backward = |p: &[Param; 4]| -> u64 {
        let tape = Tape::new(&gpu);
        let xv = tape.constant(Tensor::from_slice(&gpu, &x, &[rows, fin]).unwrap());
        let h = tape
            .linear(&xv, &tape.param(&p[0]), Some(&tape.param(&p[1])))
            .unwrap();
        let y = tape
            .layernorm(&h, &tape.param(&p[2]), &tape.param(&p[3]), eps)
            .unwrap();
        let dyv = tape.constant(Tensor::from_slice(&gpu, &dy, &[rows, c]).unwrap());
        let loss = tape.sum_all(&tape.mul(&y, &dyv).unwrap()).unwrap();
        gpu.sync().unwrap();
        let before = gpu.counters().snapshot().dispatches;
        tape.backward(&loss).unwrap();
        gpu.sync().unwrap();
        gpu.counters().snapshot().dispatches - before
    };
    let outside = backward(&params());
    let in_arena = params();
    let kind = OptimizerKind::gpt_adamw();
    let _opt = Optimizer::new(&gpu, in_arena.to_vec(), kind, None).unwrap();
    assert_eq!(
        backward(&in_arena),
        outside,
        "backward's kernels with the params in an arena (a copy each where a gradient is not \
         written in place)"
    );
    // The reference: h = x W + b, then the layer norm's backward.
    let h: Vec<f32> = (0..rows * c)
        .map(|i| {
            let (r, o) = (i / c, i % c);
            let dot: f64 = (0..fin)
                .map(|k| x[r * fin + k] as f64 * w0[k * c + o] as f64)
                .sum();
            (dot + b0[o] as f64) as f32
        })
        .collect();
    let (_, mean, rstd) = reference::layernorm::layernorm(&h, c, &g0, &beta0, eps);
    let f32s = |v: Vec<f64>| -> Vec<f32> { v.into_iter().map(|x| x as f32).collect() };
    let (dh, dg, dbeta) =
        reference::layernorm::layernorm_bwd(&h, c, &g0, &f32s(mean), &f32s(rstd), &dy);
    let mut dw = vec![0.0; fin * c];
    let mut db = vec![0.0; c];
    for r in 0..rows {
        for o in 0..c {
            db[o] += dh[r * c + o];
            for k in 0..fin {
                dw[k * c + o] += x[r * fin + k] as f64 * dh[r * c + o];
            }
        }
    }
    for (p, want) in in_arena.iter().zip([dw, db, dg, dbeta]) {
        let got = p.grad().unwrap().to_vec().unwrap();
        assert_close(&format!("{}'s gradient", p.name()), &got, &want, 1e-4, 1e-3);
    }
}
