//! The tape: gradients of recorded ops against gradients written out by hand in
//! f64 loops, fan-out accumulation, accumulation across backward passes, no-grad.

use crate::common::*;
use wgformer::autograd::{Param, Tape};
use wgformer::Tensor;

fn tensor(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(&gpu(), v, shape).unwrap()
}

/// loss = sum(W * alpha op(A) op(B)), so dC = W; checks dA and dB in storage layout.
fn check_matmul(
    batch_a: Option<usize>,
    b_batched: bool,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
) {
    let gpu = gpu();
    let batch = batch_a.unwrap_or(1);
    let alpha = 0.75f32;
    let a_shape: Vec<usize> = batch_a
        .into_iter()
        .chain(if ta { [k, m] } else { [m, k] })
        .collect();
    let b_shape: Vec<usize> = batch_a
        .filter(|_| b_batched)
        .into_iter()
        .chain(if tb { [n, k] } else { [k, n] })
        .collect();
    let av = data(a_shape.iter().product(), 1);
    let bv = data(b_shape.iter().product(), 2);
    let wv = data(batch * m * n, 3);
    let c_shape: Vec<usize> = batch_a.into_iter().chain([m, n]).collect();

    let tape = Tape::new(&gpu);
    let pa = Param::new("a", tensor(&av, &a_shape));
    let pb = Param::new("b", tensor(&bv, &b_shape));
    let (a, b) = (tape.param(&pa), tape.param(&pb));
    let w = tape.constant(tensor(&wv, &c_shape));
    let c = tape.matmul(&a, &b, ta, tb, alpha).unwrap();
    let loss = tape.sum_all(&tape.mul(&c, &w).unwrap()).unwrap();
    tape.backward(&loss).unwrap();

    let sa = m * k;
    let sb = if b_batched { k * n } else { 0 };
    let ia = |bt: usize, i: usize, kk: usize| bt * sa + if ta { kk * m + i } else { i * k + kk };
    let ib = |bt: usize, kk: usize, j: usize| bt * sb + if tb { j * k + kk } else { kk * n + j };
    let mut da = vec![0.0f64; av.len()];
    let mut db = vec![0.0f64; bv.len()];
    for bt in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let wij = wv[bt * m * n + i * n + j] as f64 * alpha as f64;
                for kk in 0..k {
                    da[ia(bt, i, kk)] += wij * bv[ib(bt, kk, j)] as f64;
                    db[ib(bt, kk, j)] += wij * av[ia(bt, i, kk)] as f64;
                }
            }
        }
    }
    let what =
        format!("matmul batch {batch_a:?} b_batched {b_batched} m{m} n{n} k{k} ta {ta} tb {tb}");
    let tol = 1e-5 * (batch * m.max(n).max(k)) as f64;
    assert_close(
        &format!("{what} dA"),
        &pa.grad().unwrap().to_vec().unwrap(),
        &da,
        tol,
        1e-4,
    );
    assert_close(
        &format!("{what} dB"),
        &pb.grad().unwrap().to_vec().unwrap(),
        &db,
        tol,
        1e-4,
    );
}

#[test]
fn matmul_gradients_for_every_transpose_and_batching() {
    for ta in [false, true] {
        for tb in [false, true] {
            check_matmul(None, false, 7, 5, 9, ta, tb);
            check_matmul(Some(3), true, 6, 4, 5, ta, tb);
            check_matmul(Some(3), false, 5, 7, 4, ta, tb);
        }
    }
}

#[test]
fn linear_add_mul_scale_reshape_gradients() {
    let gpu = gpu();
    let (rows, fin, fout) = (6, 5, 3);
    let xv = data(rows * fin, 10);
    let wv = data(fin * fout, 11);
    let bv = data(fout, 12);
    let gv = data(fout, 13); // multiplied in with broadcasting
    let tape = Tape::new(&gpu);
    let (px, pw, pb, pg) = (
        Param::new("x", tensor(&xv, &[2, 3, fin])),
        Param::new("w", tensor(&wv, &[fin, fout])),
        Param::without_decay("b", tensor(&bv, &[fout])),
        Param::new("g", tensor(&gv, &[fout])),
    );
    let (x, w, b, g) = (
        tape.param(&px),
        tape.param(&pw),
        tape.param(&pb),
        tape.param(&pg),
    );
    // y = (x W + b) * g, then loss = sum(2 * reshape(y) + y_flat_same)
    let y = tape
        .mul(&tape.linear(&x, &w, Some(&b)).unwrap(), &g)
        .unwrap();
    let z = tape
        .scale(&tape.reshape(&y, &[rows * fout]).unwrap(), 2.0)
        .unwrap();
    let loss = tape.sum_all(&z).unwrap();
    tape.backward(&loss).unwrap();

    // By hand: dL/dy = 2; dL/dh = 2 g (h = xW + b); dx = dh W^T; dW = x^T dh; db = sum dh; dg = sum_rows 2 h.
    let mut h = vec![0.0f64; rows * fout];
    for r in 0..rows {
        for o in 0..fout {
            h[r * fout + o] = bv[o] as f64
                + (0..fin)
                    .map(|i| xv[r * fin + i] as f64 * wv[i * fout + o] as f64)
                    .sum::<f64>();
        }
    }
    let dh = |o: usize| 2.0 * gv[o] as f64;
    let dx: Vec<f64> = (0..rows * fin)
        .map(|idx| {
            (0..fout)
                .map(|o| dh(o) * wv[(idx % fin) * fout + o] as f64)
                .sum()
        })
        .collect();
    let dw: Vec<f64> = (0..fin * fout)
        .map(|idx| {
            (0..rows)
                .map(|r| xv[r * fin + idx / fout] as f64 * dh(idx % fout))
                .sum()
        })
        .collect();
    let db: Vec<f64> = (0..fout).map(|o| rows as f64 * dh(o)).collect();
    let dg: Vec<f64> = (0..fout)
        .map(|o| (0..rows).map(|r| 2.0 * h[r * fout + o]).sum())
        .collect();
    assert_close("dx", &px.grad().unwrap().to_vec().unwrap(), &dx, 1e-5, 1e-4);
    assert_close("dW", &pw.grad().unwrap().to_vec().unwrap(), &dw, 1e-5, 1e-4);
    assert_close("db", &pb.grad().unwrap().to_vec().unwrap(), &db, 1e-5, 1e-4);
    assert_close("dg", &pg.grad().unwrap().to_vec().unwrap(), &dg, 1e-5, 1e-4);
    assert_eq!(px.grad().unwrap().shape(), &[2, 3, fin]);
}

#[test]
fn fan_out_sums_gradients_and_passes_accumulate_until_zero_grad() {
    let gpu = gpu();
    let v = data(10, 20);
    let p = Param::new("p", tensor(&v, &[10]));
    let run = || {
        let tape = Tape::new(&gpu);
        let x = tape.param(&p);
        // loss = sum(x + x * x + 3x): dL/dx = 1 + 2x + 3 (x reaches the loss four times).
        let xx = tape.mul(&x, &x).unwrap();
        let s = tape
            .add(&tape.add(&x, &xx).unwrap(), &tape.scale(&x, 3.0).unwrap())
            .unwrap();
        let loss = tape.sum_all(&s).unwrap();
        tape.backward(&loss).unwrap();
        assert!(tape.is_empty(), "backward consumes the record");
    };
    let expected: Vec<f64> = v.iter().map(|&x| 4.0 + 2.0 * x as f64).collect();
    run();
    assert_close(
        "one pass",
        &p.grad().unwrap().to_vec().unwrap(),
        &expected,
        1e-6,
        1e-6,
    );
    run();
    let twice: Vec<f64> = expected.iter().map(|g| 2.0 * g).collect();
    assert_close(
        "two passes accumulate",
        &p.grad().unwrap().to_vec().unwrap(),
        &twice,
        1e-6,
        1e-6,
    );
    p.zero_grad();
    assert!(p.grad().is_none());
}

#[test]
fn pass_through_gradients_do_not_alias() {
    // a + b hands the same dy to both; accumulating more into a's gradient must
    // not change b's.
    let gpu = gpu();
    let pa = Param::new("a", tensor(&[1.0, 2.0], &[2]));
    let pb = Param::new("b", tensor(&[3.0, 4.0], &[2]));
    let tape = Tape::new(&gpu);
    let (a, b) = (tape.param(&pa), tape.param(&pb));
    let s = tape
        .add(&tape.add(&a, &b).unwrap(), &tape.scale(&a, 5.0).unwrap())
        .unwrap();
    tape.backward(&tape.sum_all(&s).unwrap()).unwrap();
    assert_eq!(pa.grad().unwrap().to_vec().unwrap(), vec![6.0, 6.0]);
    assert_eq!(pb.grad().unwrap().to_vec().unwrap(), vec![1.0, 1.0]);
}

#[test]
fn dropout_backward_uses_the_forward_mask() {
    let gpu = gpu();
    let n = 1000;
    let p = Param::new("x", Tensor::ones(&gpu, &[n]).unwrap());
    let tape = Tape::new(&gpu);
    let x = tape.param(&p);
    let y = tape.dropout(&x, 0.25, 99).unwrap();
    let forward = y.value().to_vec().unwrap();
    tape.backward(&tape.sum_all(&y).unwrap()).unwrap();
    // y = x * mask / 0.75 with x = 1, so dy/dx equals y elementwise.
    assert_close(
        "dropout grad",
        &p.grad().unwrap().to_vec().unwrap(),
        &to_f64(&forward),
        0.0,
        0.0,
    );
    let kept = forward.iter().filter(|&&v| v != 0.0).count();
    assert!((650..850).contains(&kept), "kept {kept} of {n}");
}

#[test]
fn no_grad_records_nothing_and_backward_says_why() {
    let gpu = gpu();
    let p = Param::new("w", tensor(&data(12, 1), &[3, 4]));
    let tape = Tape::no_grad(&gpu);
    let x = tape.constant(tensor(&data(6, 2), &[2, 3]));
    let w = tape.param(&p);
    let y = tape.matmul(&x, &w, false, false, 1.0).unwrap();
    let loss = tape.sum_all(&y).unwrap();
    assert!(tape.is_empty());
    let err = tape.backward(&loss).unwrap_err();
    assert!(err.to_string().contains("no_grad"), "{err}");
    // Frozen parameters get no gradient either.
    let tape = Tape::new(&gpu);
    p.set_trainable(false);
    let loss = tape
        .sum_all(&tape.matmul(&x, &tape.param(&p), false, false, 1.0).unwrap())
        .unwrap();
    assert!(tape.backward(&loss).is_err());
    assert!(p.grad().is_none());
}
