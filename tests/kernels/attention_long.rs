//! The fused attention's walks on a software adapter, which stops a shader
//! invocation's loops after 65 535 iterations, silently (lavapipe): a thread
//! of the forward and of dQ walks its rows' keys, a thread of dK/dV the query
//! rows of every query head of its group. Each kernel form (the subgroup
//! kernels, the CPU split, the GPU split) is exact against the f64 reference
//! at a walk just below its limit and refuses, naming the walk, one that
//! came out wrong before the limit existed (measured: src/kernels/attention/
//! walk.rs). GPUs have no such cap: nothing runs there.
//!
//! Tolerance: 1e-4 abs + 1e-3 rel. The outputs sum up to 240 000 terms in f32
//! (error ~1e-5 relative); a walk cut short drops a share of the terms and
//! moves results by far more (every value of dV at a group of 8 x 40 000
//! rows, by up to 9 where values are ~10).

use crate::attention_gqa::Gqa;
use crate::common::*;
use wgformer::kernels::attention::{attention_bwd, attention_fwd};
use wgformer::{Error, Gpu};

const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-3;

/// Each kernel form this adapter runs: (what, adapter, keys exact, keys
/// refused, (group, rows) exact, (group, rows) refused) at HS = 64.
type Walks = (
    &'static str,
    Gpu,
    usize,
    usize,
    (usize, usize),
    (usize, usize),
);

fn walkers() -> Vec<Walks> {
    let mut v = Vec::new();
    if gpu().policy().subgroup_size == Some(8) {
        v.push((
            "subgroup",
            gpu(),
            240_000,
            290_000,
            (1, 240_000),
            (8, 40_000),
        ));
    }
    let cpu_split = match without_subgroups() {
        Some(gpu) => gpu,
        None => gpu(),
    };
    v.push((
        "CPU split",
        cpu_split,
        43_000,
        47_008,
        (8, 5_400),
        (8, 5_900),
    ));
    v.push((
        "GPU split",
        other_attention_split(),
        15_000,
        24_976,
        (1, 15_000),
        (1, 17_776),
    ));
    v
}

/// The fused forward and backward of `c` on `gpu` against the reference: O
/// and dQ, or dK and dV.
fn check_exact(what: &str, gpu: &Gpu, c: &Gqa, keys: bool) {
    let ([q, k, v, d_o], mask) = c.tensors(gpu);
    let opts = c.opts(mask.as_ref());
    let (o, l) = attention_fwd(&q, &k, &v, &opts).unwrap();
    let (dq, dk, dv) = attention_bwd(&q, &k, &v, &o, &l, &d_o, &opts).unwrap();
    let (dq_ref, dk_ref, dv_ref) = c.reference_bwd();
    let close = |name: &str, x: wgformer::Tensor, r: &[f64]| {
        assert_close(
            &format!("{what} {name}"),
            &x.to_vec().unwrap(),
            r,
            ATOL,
            RTOL,
        )
    };
    if keys {
        close("O", o, &c.reference_fwd().0);
        close("dQ", dq, &dq_ref);
    } else {
        close("dK", dk, &dk_ref);
        close("dV", dv, &dv_ref);
    }
}

/// The forward (keys) or the backward (rows: its forward walks one tile) of
/// `c` on `gpu` is refused, the error naming the walk.
fn check_refused(what: &str, gpu: &Gpu, c: &Gqa, keys: bool, walked: &str) {
    let ([q, k, v, d_o], mask) = c.tensors(gpu);
    let opts = c.opts(mask.as_ref());
    let err = if keys {
        attention_fwd(&q, &k, &v, &opts).unwrap_err()
    } else {
        let (o, l) = attention_fwd(&q, &k, &v, &opts).unwrap();
        attention_bwd(&q, &k, &v, &o, &l, &d_o, &opts).unwrap_err()
    };
    assert!(
        matches!(err, Error::InvalidArgument { .. }),
        "{what}: {err}"
    );
    assert!(err.to_string().contains(walked), "{what}: {err}");
}

#[test]
fn long_key_walks_are_exact_below_the_limit_and_refused_past_it() {
    if !gpu().policy().cpu_adapter {
        return;
    }
    for (what, gpu, exact, refused, _, _) in walkers() {
        let rows = |tk| Gqa::new(1, (1, 1), (64, tk), 64);
        check_exact(&format!("{what}, Tk = {exact}"), &gpu, &rows(exact), true);
        let walked = format!("{refused} keys");
        check_refused(what, &gpu, &rows(refused), true, &walked);
    }
}

#[test]
fn long_row_walks_are_exact_below_the_limit_and_refused_past_it() {
    if !gpu().policy().cpu_adapter {
        return;
    }
    for (what, gpu, _, _, (group, exact), (group_past, refused)) in walkers() {
        let keys = |group, tq| Gqa::new(1, (group, 1), (tq, 32), 64);
        let name = format!("{what}, {group} heads x Tq = {exact}");
        check_exact(&name, &gpu, &keys(group, exact), false);
        let walked = format!("{group_past} query heads x {refused} rows");
        check_refused(what, &gpu, &keys(group_past, refused), false, &walked);
    }
}
