//! Training through the tape and the GPU optimiser: a small MLP fits a fixed
//! batch, runs are bit-for-bit reproducible, and a steady-state step creates no
//! GPU buffer and submits once (its loss readback).

use crate::common::*;
use wgformer::autograd::{Param, Tape};
use wgformer::optim::{Optimizer, OptimizerKind};
use wgformer::{Gpu, Tensor};

struct Mlp {
    w1: Param,
    b1: Param,
    w2: Param,
    b2: Param,
}

impl Mlp {
    fn new(gpu: &Gpu, fin: usize, hidden: usize, fout: usize, seed: u64) -> Mlp {
        let init = |shape: &[usize], fan_in: usize, s: u64| {
            Tensor::randn(gpu, shape, (1.0 / fan_in as f32).sqrt(), seed * 10 + s).unwrap()
        };
        Mlp {
            w1: Param::new("w1", init(&[fin, hidden], fin, 1)),
            b1: Param::without_decay("b1", Tensor::zeros(gpu, &[hidden]).unwrap()),
            w2: Param::new("w2", init(&[hidden, fout], hidden, 2)),
            b2: Param::without_decay("b2", Tensor::zeros(gpu, &[fout]).unwrap()),
        }
    }
    fn params(&self) -> Vec<Param> {
        vec![
            self.w1.clone(),
            self.b1.clone(),
            self.w2.clone(),
            self.b2.clone(),
        ]
    }
    /// Mean squared error of gelu(x W1 + b1) W2 + b2 against `target`.
    fn loss(&self, tape: &Tape, x: &Tensor, target: &Tensor) -> wgformer::autograd::Var {
        let x = tape.constant(x.clone());
        let h = tape
            .gelu(
                &tape
                    .linear(&x, &tape.param(&self.w1), Some(&tape.param(&self.b1)))
                    .unwrap(),
                true,
            )
            .unwrap();
        let y = tape
            .linear(&h, &tape.param(&self.w2), Some(&tape.param(&self.b2)))
            .unwrap();
        let neg_t = tape.constant(wgformer::kernels::elementwise::scale(target, -1.0).unwrap());
        let d = tape.add(&y, &neg_t).unwrap();
        let n = target.numel() as f32;
        tape.scale(&tape.sum_all(&tape.mul(&d, &d).unwrap()).unwrap(), 1.0 / n)
            .unwrap()
    }
}

fn train(gpu: &Gpu, steps: usize, seed: u64) -> (Vec<f32>, Mlp) {
    let (batch, fin, hidden, fout) = (16, 7, 32, 3);
    let x = Tensor::from_slice(gpu, &data(batch * fin, 100), &[batch, fin]).unwrap();
    let t = Tensor::from_slice(gpu, &data(batch * fout, 101), &[batch, fout]).unwrap();
    let mlp = Mlp::new(gpu, fin, hidden, fout, seed);
    let kind = OptimizerKind::AdamW {
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut opt = Optimizer::new(gpu, mlp.params(), kind, Some(1.0)).unwrap();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let tape = Tape::new(gpu);
        let loss = mlp.loss(&tape, &x, &t);
        tape.backward(&loss).unwrap();
        opt.step(1e-2, 1).unwrap();
        losses.push(loss.value().to_vec().unwrap()[0]);
    }
    (losses, mlp)
}

#[test]
fn mlp_fits_a_fixed_batch() {
    let gpu = gpu();
    let (losses, _) = train(&gpu, 300, 1);
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.01 * first && last < 2e-3, "loss {first} -> {last}");
}

#[test]
fn two_runs_with_the_same_seed_are_bit_identical() {
    let gpu = gpu();
    let (la, a) = train(&gpu, 10, 7);
    let (lb, b) = train(&gpu, 10, 7);
    assert_eq!(la, lb);
    for (pa, pb) in a.params().iter().zip(b.params()) {
        let (va, vb) = (pa.value().to_vec().unwrap(), pb.value().to_vec().unwrap());
        assert!(
            va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{} differs",
            pa.name()
        );
    }
    let (_, c) = train(&gpu, 10, 8);
    assert_ne!(
        a.w1.value().to_vec().unwrap(),
        c.w1.value().to_vec().unwrap(),
        "the seed must matter"
    );
}

#[test]
fn steady_state_step_allocates_nothing_and_submits_once() {
    // A Gpu of its own, so other tests' traffic does not move its counters.
    let gpu = Gpu::new().unwrap();
    let (batch, fin) = (16, 7);
    let x = Tensor::from_slice(&gpu, &data(batch * fin, 1), &[batch, fin]).unwrap();
    let t = Tensor::from_slice(&gpu, &data(batch * 3, 2), &[batch, 3]).unwrap();
    let mlp = Mlp::new(&gpu, fin, 32, 3, 3);
    let mut opt =
        Optimizer::new(&gpu, mlp.params(), OptimizerKind::gpt_adamw(), Some(1.0)).unwrap();
    let mut step = || {
        let tape = Tape::new(&gpu);
        let loss = mlp.loss(&tape, &x, &t);
        tape.backward(&loss).unwrap();
        opt.step(1e-3, 1).unwrap();
        loss.value().to_vec().unwrap()[0]
    };
    for _ in 0..3 {
        step(); // warm-up: pipelines, pool, bind groups
    }
    let before = gpu.counters().snapshot();
    step();
    let d = gpu.counters().snapshot() - before;
    assert_eq!(
        d.buffers_created, 0,
        "a steady-state step created GPU buffers: {d:?}"
    );
    assert_eq!(
        d.submits, 1,
        "one submit per step (the loss readback): {d:?}"
    );
    assert_eq!(d.pipelines_created, 0, "{d:?}");
    assert!(d.dispatches > 10, "{d:?}");
}
