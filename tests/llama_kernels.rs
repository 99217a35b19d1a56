//! The Llama-layout kernels on the GPU against the f64 CPU reference: RMSNorm
//! (forward, dx, deterministic dweight) under both row plans, the residual add
//! fused with RMSNorm (both outputs, both gradients), SwiGLU, RoPE
//! packed into [q | k | v] with and without grouped-query expansion, their
//! backward passes (and the reference's backward against finite differences),
//! grouped-query attention against a KV cache, and bad input.

mod common;
use common::*;
use wgformer::kernels::add_rmsnorm::{add_rmsnorm, add_rmsnorm_bwd};
use wgformer::kernels::kv_cache::{kv_attention, kv_attention_grouped};
use wgformer::kernels::rmsnorm::{rmsnorm, rmsnorm_bwd};
use wgformer::kernels::rope::{rope_qkv, rope_qkv_bwd, rope_table, QkvHeads};
use wgformer::kernels::swiglu::{swiglu, swiglu_bwd};
use wgformer::reference::kv_cache::{kv_attention as kv_attention_ref, CacheDims};
use wgformer::reference::llama as r;
use wgformer::{Error, Tensor};

fn t(x: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(&gpu(), x, shape).unwrap()
}

fn f32s(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

fn rmsnorm_case(rows: usize, c: usize) {
    let x: Vec<f32> = data(rows * c, c as u64)
        .iter()
        .map(|v| 2.0 * v + 0.3)
        .collect();
    let w: Vec<f32> = data(c, 7 + c as u64).iter().map(|v| 1.0 + v).collect();
    let dy = data(rows * c, 99 + c as u64);
    let eps = 1e-5;
    let (y, rstd) = rmsnorm(&t(&x, &[rows, c]), &t(&w, &[c]), eps).unwrap();
    let (ry, rrstd) = r::rmsnorm(&x, c, &w, eps);
    let what = format!("rmsnorm ({rows}, {c})");
    assert_close(&format!("{what} y"), &y.to_vec().unwrap(), &ry, 1e-5, 1e-4);
    assert_close(
        &format!("{what} rstd"),
        &rstd.to_vec().unwrap(),
        &rrstd,
        1e-5,
        1e-4,
    );
    let rstd32 = rstd.to_vec().unwrap();
    let (dx, dw) =
        rmsnorm_bwd(&t(&x, &[rows, c]), &t(&w, &[c]), &rstd, &t(&dy, &[rows, c])).unwrap();
    let (rdx, rdw) = r::rmsnorm_bwd(&x, c, &w, &rstd32, &dy);
    assert_close(
        &format!("{what} dx"),
        &dx.to_vec().unwrap(),
        &rdx,
        1e-5,
        1e-4,
    );
    assert_close(
        &format!("{what} dweight"),
        &dw.to_vec().unwrap(),
        &rdw,
        1e-4,
        1e-4,
    );
    // dweight sums in a fixed order: the same bits every run.
    let (_, dw2) =
        rmsnorm_bwd(&t(&x, &[rows, c]), &t(&w, &[c]), &rstd, &t(&dy, &[rows, c])).unwrap();
    assert_eq!(
        dw.to_vec().unwrap(),
        dw2.to_vec().unwrap(),
        "{what}: dweight not deterministic"
    );
}

fn rmsnorm_shapes() {
    for c in [1usize, 4, 7, 63, 64, 65, 129, 576] {
        for rows in [1usize, 3, 1100] {
            rmsnorm_case(rows, c);
        }
    }
    rmsnorm_case(2, 4099);
}

#[test]
fn rmsnorm_matches_the_reference_on_ragged_rows() {
    rmsnorm_shapes();
}

#[test]
fn rmsnorm_matches_the_reference_under_the_other_row_plan() {
    on(&other_row_plan(), rmsnorm_shapes);
}

fn add_rmsnorm_case(rows: usize, c: usize) {
    let x: Vec<f32> = data(rows * c, 3 * c as u64)
        .iter()
        .map(|v| 2.0 * v + 0.3)
        .collect();
    let branch = data(rows * c, 5 + c as u64);
    let w: Vec<f32> = data(c, 11 + c as u64).iter().map(|v| 1.0 + v).collect();
    let (dy, dsum) = (data(rows * c, 13 + c as u64), data(rows * c, 17 + c as u64));
    let eps = 1e-5;
    let shape = [rows, c];
    let out = add_rmsnorm(&t(&x, &shape), &t(&branch, &shape), &t(&w, &[c]), eps).unwrap();
    let (rh, ry, rrstd) = r::add_rmsnorm(&x, &branch, c, &w, eps);
    let what = format!("add_rmsnorm ({rows}, {c})");
    let got = |t: &Tensor| t.to_vec().unwrap();
    assert_close(&format!("{what} sum"), &got(&out.sum), &rh, 1e-6, 1e-6);
    assert_close(&format!("{what} y"), &got(&out.y), &ry, 1e-5, 1e-4);
    assert_close(&format!("{what} rstd"), &got(&out.rstd), &rrstd, 1e-5, 1e-4);
    let (dh, dw) = add_rmsnorm_bwd(
        &out.sum,
        &t(&w, &[c]),
        &out.rstd,
        &t(&dy, &shape),
        &t(&dsum, &shape),
    )
    .unwrap();
    let (sum32, rstd32) = (got(&out.sum), got(&out.rstd));
    let (rdh, rdw) = r::add_rmsnorm_bwd(&sum32, c, &w, &rstd32, (&dy, &dsum));
    assert_close(&format!("{what} dh"), &got(&dh), &rdh, 1e-5, 1e-4);
    assert_close(&format!("{what} dweight"), &got(&dw), &rdw, 1e-4, 1e-4);
}

fn add_rmsnorm_shapes() {
    // Rows around the row plans' workgroups; widths below, at and past a
    // vec4, and not multiples of 4 (the scalar kernels).
    for c in [1usize, 3, 4, 7, 63, 64, 65, 129, 576] {
        for rows in [1usize, 7, 63, 65, 129] {
            add_rmsnorm_case(rows, c);
        }
    }
    add_rmsnorm_case(1100, 65);
    add_rmsnorm_case(2, 4099);
}

#[test]
fn add_rmsnorm_matches_the_reference_on_ragged_shapes() {
    add_rmsnorm_shapes();
}

#[test]
fn add_rmsnorm_matches_the_reference_under_the_other_row_plan() {
    on(&other_row_plan(), add_rmsnorm_shapes);
}

#[test]
fn swiglu_matches_the_reference_including_large_gates() {
    // 12 and 5000 take the vec4 kernels.
    for n in [1usize, 7, 12, 65, 129, 5000] {
        let mut gate: Vec<f32> = data(n, n as u64).iter().map(|v| 4.0 * v).collect();
        gate[0] = if n > 1 { -120.0 } else { 3.0 };
        if n > 2 {
            gate[1] = 95.0;
        }
        let up = data(n, 3 + n as u64);
        let dy = data(n, 5 + n as u64);
        let y = swiglu(&t(&gate, &[n]), &t(&up, &[n])).unwrap();
        assert_close(
            &format!("swiglu {n}"),
            &y.to_vec().unwrap(),
            &r::swiglu(&gate, &up),
            1e-6,
            1e-5,
        );
        let (dg, du) = swiglu_bwd(&t(&gate, &[n]), &t(&up, &[n]), &t(&dy, &[n])).unwrap();
        let (rdg, rdu) = r::swiglu_bwd(&gate, &up, &dy);
        assert_close(
            &format!("swiglu {n} dgate"),
            &dg.to_vec().unwrap(),
            &rdg,
            1e-6,
            1e-5,
        );
        assert_close(
            &format!("swiglu {n} dup"),
            &du.to_vec().unwrap(),
            &rdu,
            1e-6,
            1e-5,
        );
    }
}

/// (B, T, NH, NKV, HS, pos0, theta): HS 8 and 64 take the vec4 kernels, 6 and
/// 2 the scalar ones.
const ROPE_SHAPES: &[(usize, usize, usize, usize, usize, usize, f64)] = &[
    (2, 7, 4, 2, 8, 0, 10_000.0),
    (1, 5, 3, 1, 6, 3, 10_000.0),
    (2, 3, 2, 2, 2, 0, 500_000.0),
    (1, 65, 6, 3, 64, 1, 10_000.0),
    (3, 1, 9, 3, 64, 40, 100_000.0),
];

#[test]
fn rope_packs_rotated_q_k_and_grouped_v_like_the_reference() {
    for &(b, tt, nh, nkv, hs, pos0, theta) in ROPE_SHAPES {
        let table = rope_table(&gpu(), pos0 + tt + 2, hs, theta).unwrap();
        let q = data(b * tt * nh * hs, 1);
        let k = data(b * tt * nkv * hs, 2);
        let v = data(b * tt * nkv * hs, 3);
        let rq = r::rope(&q, (tt, nh, hs), pos0, theta);
        let rk = r::rope(&k, (tt, nkv, hs), pos0, theta);
        let rv: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        for expand in [true, false] {
            let heads = QkvHeads {
                nh,
                nkv,
                hs,
                expand,
            };
            let group = if expand { nh / nkv } else { 1 };
            let (ek, ev) = (
                r::repeat_kv(&rk, nkv, hs, group),
                r::repeat_kv(&rv, nkv, hs, group),
            );
            let packed = rope_qkv(
                &t(&q, &[b, tt, nh * hs]),
                &t(&k, &[b, tt, nkv * hs]),
                &t(&v, &[b, tt, nkv * hs]),
                &table,
                heads,
                pos0,
            )
            .unwrap();
            assert_eq!(packed.shape(), &[b, tt, heads.width()]);
            let out = packed.to_vec().unwrap();
            // The reference rows, packed the same way.
            let (cq, ck) = (nh * hs, ek.len() / (b * tt));
            let mut want = Vec::new();
            for row in 0..b * tt {
                want.extend_from_slice(&rq[row * cq..][..cq]);
                want.extend_from_slice(&ek[row * ck..][..ck]);
                want.extend_from_slice(&ev[row * ck..][..ck]);
            }
            let what = format!("rope_qkv {:?} expand {expand}", (b, tt, nh, nkv, hs, pos0));
            assert_close(&what, &out, &want, 2e-6, 1e-5);

            // Backward: the inverse rotation, grouped heads summed.
            let dout = data(out.len(), 11);
            let (dq, dk, dv) =
                rope_qkv_bwd(&t(&dout, packed.shape()), &table, heads, pos0).unwrap();
            let (mut dqp, mut dkp, mut dvp) = (Vec::new(), Vec::new(), Vec::new());
            for row in dout.chunks(heads.width()) {
                dqp.extend_from_slice(&row[..cq]);
                dkp.extend(row[cq..cq + ck].iter().map(|&x| x as f64));
                dvp.extend(row[cq + ck..].iter().map(|&x| x as f64));
            }
            let rdk = f32s(&r::repeat_kv_bwd(&dkp, nkv, hs, group));
            assert_close(
                &format!("{what} dq"),
                &dq.to_vec().unwrap(),
                &r::rope_bwd(&dqp, (tt, nh, hs), pos0, theta),
                2e-6,
                1e-5,
            );
            assert_close(
                &format!("{what} dk"),
                &dk.to_vec().unwrap(),
                &r::rope_bwd(&rdk, (tt, nkv, hs), pos0, theta),
                1e-5,
                1e-5,
            );
            assert_close(
                &format!("{what} dv"),
                &dv.to_vec().unwrap(),
                &r::repeat_kv_bwd(&dvp, nkv, hs, group),
                1e-6,
                1e-5,
            );
        }
    }
}

/// The reference backward passes against central finite differences of the
/// reference forwards (the references are the spec, so they are checked too).
#[test]
fn reference_backward_passes_match_finite_differences() {
    let fd = |f: &dyn Fn(&[f32]) -> f64, x: &[f32], i: usize| {
        let h = 1e-3f32;
        let (mut a, mut b) = (x.to_vec(), x.to_vec());
        a[i] += h;
        b[i] -= h;
        (f(&a) - f(&b)) / (a[i] as f64 - b[i] as f64)
    };
    let dot = |y: &[f64], dy: &[f32]| y.iter().zip(dy).map(|(a, &b)| a * b as f64).sum::<f64>();
    let (rows, c) = (3, 5);
    let x: Vec<f32> = data(rows * c, 1).iter().map(|v| v + 0.2).collect();
    let w: Vec<f32> = data(c, 2).iter().map(|v| 1.0 + v).collect();
    let dy = data(rows * c, 3);
    let (_, rstd) = r::rmsnorm(&x, c, &w, 1e-5);
    let (dx, dw) = r::rmsnorm_bwd(&x, c, &w, &f32s(&rstd), &dy);
    for (i, want) in dx.iter().enumerate() {
        let g = fd(
            &|xs: &[f32]| dot(&r::rmsnorm(xs, c, &w, 1e-5).0, &dy),
            &x,
            i,
        );
        assert!(
            (g - want).abs() < 1e-3 * (1.0 + g.abs()),
            "rmsnorm dx[{i}]: fd {g} vs {want}"
        );
    }
    for (j, want) in dw.iter().enumerate() {
        let g = fd(
            &|ws: &[f32]| dot(&r::rmsnorm(&x, c, ws, 1e-5).0, &dy),
            &w,
            j,
        );
        assert!(
            (g - want).abs() < 1e-3 * (1.0 + g.abs()),
            "rmsnorm dw[{j}]: fd {g} vs {want}"
        );
    }
    // The fused residual add + RMSNorm: L = <y, dy> + <sum, dsum> as a
    // function of x, of branch and of the gain.
    let branch: Vec<f32> = data(rows * c, 7).iter().map(|v| 0.5 * v).collect();
    let dsum = data(rows * c, 8);
    let (h, _, rstd) = r::add_rmsnorm(&x, &branch, c, &w, 1e-5);
    let (dh, dw) = r::add_rmsnorm_bwd(&f32s(&h), c, &w, &f32s(&rstd), (&dy, &dsum));
    let loss = |xs: &[f32], bs: &[f32], ws: &[f32]| {
        let (h, y, _) = r::add_rmsnorm(xs, bs, c, ws, 1e-5);
        dot(&y, &dy) + dot(&h, &dsum)
    };
    for (i, want) in dh.iter().enumerate() {
        for (input, g) in [
            ("x", fd(&|xs: &[f32]| loss(xs, &branch, &w), &x, i)),
            ("branch", fd(&|bs: &[f32]| loss(&x, bs, &w), &branch, i)),
        ] {
            assert!(
                (g - want).abs() < 1e-3 * (1.0 + g.abs()),
                "add_rmsnorm d{input}[{i}]: fd {g} vs {want}"
            );
        }
    }
    for (j, want) in dw.iter().enumerate() {
        let g = fd(&|ws: &[f32]| loss(&x, &branch, ws), &w, j);
        assert!(
            (g - want).abs() < 1e-3 * (1.0 + g.abs()),
            "add_rmsnorm dw[{j}]: fd {g} vs {want}"
        );
    }
    let gate: Vec<f32> = data(8, 4).iter().map(|v| 3.0 * v).collect();
    let up = data(8, 5);
    let dy8 = data(8, 6);
    let (dg, du) = r::swiglu_bwd(&gate, &up, &dy8);
    for i in 0..8 {
        let g = fd(&|gs: &[f32]| dot(&r::swiglu(gs, &up), &dy8), &gate, i);
        assert!(
            (g - dg[i]).abs() < 1e-3 * (1.0 + g.abs()),
            "swiglu dgate[{i}]"
        );
        let g = fd(&|us: &[f32]| dot(&r::swiglu(&gate, us), &dy8), &up, i);
        assert!(
            (g - du[i]).abs() < 1e-3 * (1.0 + g.abs()),
            "swiglu dup[{i}]"
        );
    }
    let (tt, nh, hs) = (3, 2, 4);
    let q = data(tt * nh * hs, 7);
    let dq = data(tt * nh * hs, 8);
    let back = r::rope_bwd(&dq, (tt, nh, hs), 2, 10_000.0);
    for (i, want) in back.iter().enumerate() {
        let g = fd(
            &|qs: &[f32]| dot(&r::rope(qs, (tt, nh, hs), 2, 10_000.0), &dq),
            &q,
            i,
        );
        assert!((g - want).abs() < 1e-3 * (1.0 + g.abs()), "rope dx[{i}]");
    }
}

#[test]
fn grouped_query_attention_against_a_cache_matches_expanded_heads() {
    // B 2, NKV 2 cached heads of 8, group 3 (6 query heads), 5 new rows, 9 cached.
    let (b, nkv, hs, group, tq, len, tcap) = (2, 2, 8, 3, 5, 9, 12);
    let nh = nkv * group;
    let q = data(b * tq * nh * hs, 1);
    let k = data(b * nkv * tcap * hs, 2);
    let v = data(b * nkv * tcap * hs, 3);
    let out = kv_attention_grouped(
        &t(&q, &[b, tq, nh * hs]),
        &t(&k, &[b, nkv, tcap, hs]),
        &t(&v, &[b, nkv, tcap, hs]),
        len,
        group,
        true,
        None,
    )
    .unwrap();
    // The reference on caches with every key/value head repeated for its group.
    let expand = |x: &[f32]| -> Vec<f32> {
        let mut e = Vec::new();
        for bi in 0..b {
            for h in 0..nh {
                e.extend_from_slice(&x[(bi * nkv + h / group) * tcap * hs..][..tcap * hs]);
            }
        }
        e
    };
    let dims = CacheDims { b, nh, tcap, hs };
    let want = kv_attention_ref(
        &q,
        (tq, nh * hs),
        &expand(&k),
        &expand(&v),
        dims,
        len,
        true,
        None,
    );
    assert_close(
        "kv_attention_grouped",
        &out.to_vec().unwrap(),
        &want,
        1e-5,
        1e-4,
    );
    // Group 1 is plain kv_attention.
    let q1 = &q[..b * tq * nkv * hs];
    let plain = kv_attention(
        &t(q1, &[b, tq, nkv * hs]),
        &t(&k, &[b, nkv, tcap, hs]),
        &t(&v, &[b, nkv, tcap, hs]),
        len,
        true,
        None,
    )
    .unwrap();
    let dims1 = CacheDims {
        b,
        nh: nkv,
        tcap,
        hs,
    };
    assert_close(
        "kv_attention",
        &plain.to_vec().unwrap(),
        &kv_attention_ref(q1, (tq, nkv * hs), &k, &v, dims1, len, true, None),
        1e-5,
        1e-4,
    );
}

#[test]
fn bad_input_is_an_error_that_names_it() {
    let g = gpu();
    let x = t(&[1.0; 12], &[3, 4]);
    let msg = |e: Error| e.to_string();
    assert!(msg(rmsnorm(&x, &t(&[1.0; 3], &[3]), 1e-5).unwrap_err()).contains("weight"));
    assert!(msg(rmsnorm(&x, &t(&[1.0; 4], &[4]), f32::NAN).unwrap_err()).contains("eps"));
    assert!(msg(swiglu(&x, &t(&[1.0; 4], &[4])).unwrap_err()).contains("up"));
    let e = match add_rmsnorm(&x, &t(&[1.0; 8], &[2, 4]), &t(&[1.0; 4], &[4]), 1e-5) {
        Err(e) => msg(e),
        Ok(_) => panic!("add_rmsnorm accepted a branch of another shape"),
    };
    assert!(e.contains("branch"), "{e}");
    assert!(msg(rope_table(&g, 4, 7, 10_000.0).unwrap_err()).contains("even"));
    assert!(msg(rope_table(&g, 4, 8, f64::NAN).unwrap_err()).contains("rope_theta"));
    let table = rope_table(&g, 4, 4, 10_000.0).unwrap();
    let q = t(&[0.0; 2 * 3 * 8], &[2, 3, 8]);
    let k = t(&[0.0; 2 * 3 * 4], &[2, 3, 4]);
    let heads = QkvHeads {
        nh: 2,
        nkv: 1,
        hs: 4,
        expand: true,
    };
    assert!(rope_qkv(&q, &k, &k, &table, heads, 0).is_ok());
    let e = msg(rope_qkv(&q, &k, &k, &table, heads, 2).unwrap_err());
    assert!(e.contains("max_position_embeddings"), "{e}");
    let e = msg(rope_qkv(&q, &k, &k, &table, QkvHeads { nkv: 3, ..heads }, 0).unwrap_err());
    assert!(e.contains("multiple"), "{e}");
    let e = msg(rope_qkv(&q, &q, &k, &table, heads, 0).unwrap_err());
    assert!(e.contains("k has shape"), "{e}");
}
