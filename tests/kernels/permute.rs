//! Head permutes: split_heads / merge_heads and the packed-QKV split / merge, checked
//! element by element against values that name their own coordinates, as exact
//! round trips, on a grid beyond 65535 workgroups, and for their errors. (The
//! reference comparison over many shapes is in grad_check_elementwise.rs.)

use crate::common::*;
use wgformer::kernels::permute as perm;
use wgformer::{Error, Tensor};

/// x[b, t, j] = 1e6 b + 1e3 t + j: every value says where it came from (exact in f32
/// for the small shapes used here).
fn coded(b: usize, t: usize, w: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(b * t * w);
    for bi in 0..b {
        for ti in 0..t {
            for j in 0..w {
                x.push((1_000_000 * bi + 1000 * ti + j) as f32);
            }
        }
    }
    x
}

fn code(b: usize, t: usize, j: usize) -> f32 {
    (1_000_000 * b + 1000 * t + j) as f32
}

#[test]
fn split_heads_puts_head_h_of_token_t_at_b_h_t() {
    let gpu = gpu();
    for (b, t, nh, hs) in [
        (2usize, 9usize, 3usize, 4usize),
        (3, 17, 4, 3),
        (1, 1, 1, 1),
    ] {
        let c = nh * hs;
        let x = Tensor::from_slice(&gpu, &coded(b, t, c), &[b, t, c]).unwrap();
        let y = perm::split_heads(&x, nh).unwrap().to_vec().unwrap();
        for bi in 0..b {
            for h in 0..nh {
                for ti in 0..t {
                    for d in 0..hs {
                        let at = ((bi * nh + h) * t + ti) * hs + d;
                        assert_eq!(y[at], code(bi, ti, h * hs + d), "b{bi} h{h} t{ti} d{d}");
                    }
                }
            }
        }
    }
}

#[test]
fn split_qkv_follows_gpt2_c_attn_layout() {
    // c_attn's output row is [q (C) | k (C) | v (C)]; within each, head h owns
    // columns h*HS .. (h+1)*HS (as in nanoGPT's view(B, T, NH, HS).transpose(1, 2)).
    let gpu = gpu();
    for (b, t, nh, hs) in [(2usize, 5usize, 3usize, 4usize), (1, 11, 2, 7)] {
        let c = nh * hs;
        let x = Tensor::from_slice(&gpu, &coded(b, t, 3 * c), &[b, t, 3 * c]).unwrap();
        let (q, k, v) = perm::split_qkv(&x, nh).unwrap();
        let parts = [
            q.to_vec().unwrap(),
            k.to_vec().unwrap(),
            v.to_vec().unwrap(),
        ];
        for (part, got) in parts.iter().enumerate() {
            for bi in 0..b {
                for h in 0..nh {
                    for ti in 0..t {
                        for d in 0..hs {
                            let at = ((bi * nh + h) * t + ti) * hs + d;
                            let want = code(bi, ti, part * c + h * hs + d);
                            assert_eq!(got[at], want, "part {part} b{bi} h{h} t{ti} d{d}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn split_qkv_grouped_follows_the_packed_llama_layout() {
    // Llama's packed row after RoPE: [q (NH HS) | k (NKV HS) | v (NKV HS)], head h
    // of each part at columns h*HS .. (h+1)*HS; merge_qkv is the exact inverse.
    let gpu = gpu();
    for (b, t, nh, nkv, hs) in [
        (2usize, 5usize, 4usize, 2usize, 4usize),
        (1, 11, 6, 2, 7),
        (2, 9, 3, 1, 8),
    ] {
        let w = (nh + 2 * nkv) * hs;
        let x = Tensor::from_slice(&gpu, &coded(b, t, w), &[b, t, w]).unwrap();
        let (q, k, v) = perm::split_qkv_grouped(&x, nh, nkv).unwrap();
        assert_eq!(q.shape(), &[b, nh, t, hs]);
        assert_eq!(
            (k.shape(), v.shape()),
            (&[b, nkv, t, hs][..], &[b, nkv, t, hs][..])
        );
        let parts = [(0, nh, &q), (nh * hs, nkv, &k), ((nh + nkv) * hs, nkv, &v)];
        for (offset, heads, part) in parts {
            let got = part.to_vec().unwrap();
            for bi in 0..b {
                for h in 0..heads {
                    for ti in 0..t {
                        for d in 0..hs {
                            let at = ((bi * heads + h) * t + ti) * hs + d;
                            let want = code(bi, ti, offset + h * hs + d);
                            assert_eq!(got[at], want, "offset {offset} b{bi} h{h} t{ti} d{d}");
                        }
                    }
                }
            }
        }
        let back = perm::merge_qkv(&q, &k, &v).unwrap();
        assert_eq!(back.shape(), &[b, t, w]);
        assert_eq!(
            back.to_vec().unwrap(),
            coded(b, t, w),
            "merge_qkv(split_qkv_grouped(x))"
        );
    }
    // NKV = NH is split_qkv; NKV not dividing NH and a width that is not
    // (NH + 2 NKV) HS are errors.
    let x = Tensor::from_slice(&gpu, &coded(1, 3, 24), &[1, 3, 24]).unwrap();
    let (a, b) = (
        perm::split_qkv_grouped(&x, 2, 2).unwrap(),
        perm::split_qkv(&x, 2).unwrap(),
    );
    assert_eq!(a.1.to_vec().unwrap(), b.1.to_vec().unwrap());
    assert!(matches!(
        perm::split_qkv_grouped(&x, 3, 2),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        perm::split_qkv_grouped(&x, 4, 3),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        perm::split_qkv_grouped(&x, 5, 1),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn merges_invert_splits_exactly() {
    let gpu = gpu();
    for (b, t, nh, hs) in [
        (2usize, 63usize, 12usize, 8usize),
        (1, 129, 3, 5),
        (4, 7, 2, 64),
        (2, 65, 1, 6),
    ] {
        let c = nh * hs;
        let x = data(b * t * c, (t + hs) as u64);
        let tx = Tensor::from_slice(&gpu, &x, &[b, t, c]).unwrap();
        let back = perm::merge_heads(&perm::split_heads(&tx, nh).unwrap()).unwrap();
        assert_eq!(back.shape(), &[b, t, c]);
        assert_eq!(
            back.to_vec().unwrap(),
            x,
            "merge(split(x)) B={b} T={t} NH={nh} HS={hs}"
        );

        let x = data(b * t * 3 * c, (t * hs) as u64);
        let tx = Tensor::from_slice(&gpu, &x, &[b, t, 3 * c]).unwrap();
        let (q, k, v) = perm::split_qkv(&tx, nh).unwrap();
        let back = perm::merge_qkv(&q, &k, &v).unwrap();
        assert_eq!(back.shape(), &[b, t, 3 * c]);
        assert_eq!(
            back.to_vec().unwrap(),
            x,
            "merge_qkv(split_qkv(x)) T={t} HS={hs}"
        );
        // split_heads of each third of x is split_qkv's part.
        let q2 = perm::split_heads(
            &Tensor::from_slice(
                &gpu,
                &x.chunks(3 * c)
                    .flat_map(|row| row[..c].to_vec())
                    .collect::<Vec<_>>(),
                &[b, t, c],
            )
            .unwrap(),
            nh,
        )
        .unwrap();
        assert_eq!(
            q2.to_vec().unwrap(),
            q.to_vec().unwrap(),
            "q = split_heads(x[.., :C])"
        );
    }
}

#[test]
fn grid_spills_into_y_beyond_65535_workgroups() {
    // Odd HS (scalar kernels) and T = 1: one thread per element, so 3 heads of
    // 1_398_103 take 4_194_309 threads > 65535 * 64.
    let gpu = gpu();
    let (nh, hs) = (3usize, 1_398_103usize);
    let c = nh * hs;
    let groups = (nh * hs).div_ceil(64) as u32; // the kernels' 64-thread workgroups
    assert!(
        wgformer::kernels::grid_1d(groups)[1] > 1,
        "{c} threads do not spill"
    );
    let x = data(c, 5);
    let tx = Tensor::from_slice(&gpu, &x, &[1, 1, c]).unwrap();
    let y = perm::split_heads(&tx, nh).unwrap();
    assert_eq!(y.shape(), &[1, nh, 1, hs]);
    // With B = T = 1, (B, NH, T, HS) holds the same element order as (B, T, C).
    assert_eq!(y.to_vec().unwrap(), x);
    let back = perm::merge_heads(&y).unwrap().to_vec().unwrap();
    assert_eq!(back, x);
}

#[test]
fn permutes_reject_bad_shapes() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[2, 3, 12]).unwrap();
    for nh in [0usize, 5, 7, 24] {
        let err = perm::split_heads(&x, nh).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "nh={nh}: {err}"
        );
        assert!(err.to_string().contains("C = 12"), "{err}");
    }
    // The packed width must be 3C with NH dividing C.
    assert!(matches!(
        perm::split_qkv(&Tensor::zeros(&gpu, &[2, 3, 13]).unwrap(), 1),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        perm::split_qkv(&x, 3), // C = 4
        Err(Error::InvalidArgument { .. })
    ));
    let (q, k, v) = perm::split_qkv(&x, 2).unwrap();
    assert_eq!(q.shape(), &[2, 2, 3, 2]);
    assert_eq!(perm::merge_qkv(&q, &k, &v).unwrap().shape(), &[2, 3, 12]);
    // Ranks: split takes (B, T, C), merge takes (B, NH, T, HS).
    for shape in [vec![24usize], vec![4, 6], vec![1, 2, 3, 4]] {
        let t = Tensor::zeros(&gpu, &shape).unwrap();
        let err = perm::split_heads(&t, 1).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{shape:?}: {err}");
        assert!(matches!(perm::split_qkv(&t, 1), Err(Error::Shape { .. })));
    }
    for shape in [vec![2usize, 3, 12], vec![1, 2, 2, 3, 2]] {
        let t = Tensor::zeros(&gpu, &shape).unwrap();
        let err = perm::merge_heads(&t).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{shape:?}: {err}");
        assert!(matches!(
            perm::merge_qkv(&t, &t, &t),
            Err(Error::Shape { .. })
        ));
    }
    let other = Tensor::zeros(&gpu, &[2, 2, 3, 3]).unwrap();
    assert!(matches!(
        perm::merge_qkv(&q, &other, &v),
        Err(Error::Shape { .. })
    ));
    let ids = Tensor::from_u32(&gpu, &[0; 72], &[2, 3, 12]).unwrap();
    assert!(matches!(
        perm::split_heads(&ids, 2),
        Err(Error::InvalidArgument { .. })
    ));
    // Empty tensors are fine.
    let empty = Tensor::zeros(&gpu, &[0, 5, 8]).unwrap();
    assert_eq!(perm::split_heads(&empty, 2).unwrap().shape(), &[0, 2, 5, 4]);
    let empty = Tensor::zeros(&gpu, &[2, 0, 8]).unwrap();
    assert_eq!(
        perm::split_qkv(&Tensor::zeros(&gpu, &[2, 0, 24]).unwrap(), 4)
            .unwrap()
            .0
            .shape(),
        &[2, 4, 0, 2]
    );
    assert_eq!(perm::split_heads(&empty, 4).unwrap().shape(), &[2, 4, 0, 2]);
}
