//! Embedding kernels against the reference: gathers at the vocabulary's edges,
//! out-of-vocabulary ids (host error, GPU zero rows), token + learned positions,
//! sinusoidal positions against the formula, the scaled encoder input.

use crate::common::*;
use wgformer::kernels::embedding as emb;
use wgformer::reference::embedding as r;
use wgformer::rng::SplitMix64;
use wgformer::{Error, Gpu, Tensor};

/// `n` ids in 0..v, the first 0 and the last v - 1.
fn ids(n: usize, v: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    let mut ids: Vec<u32> = (0..n).map(|_| (rng.next_u64() % v as u64) as u32).collect();
    ids[0] = 0;
    ids[n - 1] = v as u32 - 1;
    ids
}

fn table(gpu: &Gpu, v: usize, c: usize, seed: u64) -> (Vec<f32>, Tensor) {
    let t = data(v * c, seed);
    let g = Tensor::from_slice(gpu, &t, &[v, c]).unwrap();
    (t, g)
}

#[test]
fn embedding_gathers_rows_exactly() {
    let gpu = gpu();
    let v = 50;
    for c in [1usize, 3, 4, 7, 64, 65, 768] {
        let (tab, gtab) = table(&gpu, v, c, c as u64);
        for n in [1usize, 7, 63, 65, 127, 129] {
            let id = ids(n, v, n as u64);
            let out = emb::embedding_from_ids(&gtab, &id, &[n]).unwrap();
            assert_eq!(out.shape(), &[n, c]);
            let what = format!("embedding N={n} C={c}");
            assert_close(
                &what,
                &out.to_vec().unwrap(),
                &r::embedding(&tab, v, c, &id),
                0.0,
                0.0,
            );
        }
    }
    // (B, T) ids give (B, T, C); a large gather crosses many workgroups.
    let (v, c, b, t) = (1000usize, 12usize, 7usize, 14_287usize);
    let (tab, gtab) = table(&gpu, v, c, 9);
    let id = ids(b * t, v, 10);
    let gids = Tensor::from_u32(&gpu, &id, &[b, t]).unwrap();
    let out = emb::embedding(&gtab, &gids).unwrap();
    assert_eq!(out.shape(), &[b, t, c]);
    let want = r::embedding(&tab, v, c, &id);
    assert_close(
        "embedding (7, 14287) C=12",
        &out.to_vec().unwrap(),
        &want,
        0.0,
        0.0,
    );
}

#[test]
fn out_of_vocabulary_ids_from_the_host_are_errors() {
    let gpu = gpu();
    let (_, gtab) = table(&gpu, 50, 8, 1);
    for bad in [50u32, 51, 1_000_000, u32::MAX] {
        let err = emb::embedding_from_ids(&gtab, &[0, 5, bad, 3], &[2, 2]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{msg}");
        assert!(msg.contains(&format!("token id {bad}")), "{msg}");
        assert!(msg.contains("V = 50"), "{msg}");
        assert!(msg.contains("position 2"), "{msg}");
    }
    let err = emb::embedding_from_ids(&gtab, &[0, 1, 2], &[2, 2]).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
}

/// Leaves non-zeros past the end of the buffer the pool hands a (V, C) table next
/// (same size bucket, released before the last submit), so a kernel that read row
/// V or beyond would return them instead of zeros.
fn dirty_pool(gpu: &Gpu, v: usize, c: usize) {
    let dirty = Tensor::full(gpu, &[v + 4, c], 7.0).unwrap();
    dirty.to_vec().unwrap(); // a submit, so the buffer may serve the next upload
}

#[test]
fn out_of_vocabulary_ids_on_the_gpu_give_zero_rows() {
    let gpu = gpu();
    let (v, c, tmax) = (20usize, 8usize, 6usize);
    dirty_pool(&gpu, v, c);
    let (tab, gtab) = table(&gpu, v, c, 2);
    let (pos, gpos) = table(&gpu, tmax, c, 3);
    let id = vec![3u32, 20, 19, 0, u32::MAX, 21];
    let gids = Tensor::from_u32(&gpu, &id, &[1, 6]).unwrap();
    let out = emb::embedding(&gtab, &gids).unwrap().to_vec().unwrap();
    for (row, &i) in id.iter().enumerate() {
        let got = &out[row * c..(row + 1) * c];
        if i as usize >= v {
            assert!(got.iter().all(|&x| x == 0.0), "row {row} (id {i}): {got:?}");
        } else {
            assert_eq!(got, &tab[i as usize * c..(i as usize + 1) * c], "row {row}");
        }
    }
    // The reference follows the same rule; with positions the row is wpe alone.
    let out = emb::token_position_embedding(&gtab, &gpos, &gids).unwrap();
    let want = r::token_position_embedding(&tab, v, &pos, c, &id, 6);
    assert_close(
        "token+position, bad ids",
        &out.to_vec().unwrap(),
        &want,
        0.0,
        0.0,
    );
    // Odd C takes the scalar kernel. V * C = 21 * 5 is not a multiple of 4, so the
    // binding's padding holds row V's first 3 values (dirty): only the kernel's own
    // id < V test keeps them out (past the binding, robust access reads zeros anyway).
    let v = 21;
    dirty_pool(&gpu, v, 5);
    let (tab, gtab) = table(&gpu, v, 5, 4);
    let out = emb::embedding(&gtab, &gids).unwrap().to_vec().unwrap();
    assert_close(
        "embedding C=5, bad ids",
        &out,
        &r::embedding(&tab, v, 5, &id),
        0.0,
        0.0,
    );
}

#[test]
fn token_position_embedding_matches_reference() {
    let gpu = gpu();
    let v = 37;
    for c in [4usize, 7, 64, 129] {
        let (tab, gtab) = table(&gpu, v, c, 5);
        for (b, t, tmax) in [
            (1usize, 1usize, 1usize),
            (3, 7, 9),
            (2, 65, 65),
            (4, 129, 200),
        ] {
            let (pos, gpos) = table(&gpu, tmax, c, 6);
            let id = ids(b * t, v, (b * t) as u64);
            let gids = Tensor::from_u32(&gpu, &id, &[b, t]).unwrap();
            let out = emb::token_position_embedding(&gtab, &gpos, &gids).unwrap();
            assert_eq!(out.shape(), &[b, t, c]);
            let want = r::token_position_embedding(&tab, v, &pos, c, &id, t);
            let what = format!("token+position B={b} T={t} C={c}");
            assert_close(&what, &out.to_vec().unwrap(), &want, 0.0, 1.2e-7);
        }
    }
    // 1-D ids (T) give (T, C).
    let (tab, gtab) = table(&gpu, v, 8, 7);
    let (pos, gpos) = table(&gpu, 10, 8, 8);
    let id = ids(10, v, 1);
    let out =
        emb::token_position_embedding(&gtab, &gpos, &Tensor::from_u32(&gpu, &id, &[10]).unwrap());
    let out = out.unwrap();
    assert_eq!(out.shape(), &[10, 8]);
    let want = r::token_position_embedding(&tab, v, &pos, 8, &id, 10);
    assert_close(
        "token+position (T)",
        &out.to_vec().unwrap(),
        &want,
        0.0,
        1.2e-7,
    );
}

#[test]
fn token_position_embedding_rejects_bad_shapes() {
    let gpu = gpu();
    let (_, wte) = table(&gpu, 10, 8, 1);
    let (_, wpe) = table(&gpu, 4, 8, 2);
    let long = Tensor::from_u32(&gpu, &[1; 10], &[2, 5]).unwrap();
    let err = emb::token_position_embedding(&wte, &wpe, &long).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{msg}");
    assert!(
        msg.contains("T = 5") && msg.contains("4 learned positions"),
        "{msg}"
    );
    let (_, wpe9) = table(&gpu, 8, 9, 3);
    let ok_ids = Tensor::from_u32(&gpu, &[1; 4], &[1, 4]).unwrap();
    assert!(matches!(
        emb::token_position_embedding(&wte, &wpe9, &ok_ids),
        Err(Error::Shape { .. })
    ));
    let float_ids = Tensor::zeros(&gpu, &[1, 4]).unwrap();
    assert!(matches!(
        emb::token_position_embedding(&wte, &wpe, &float_ids),
        Err(Error::InvalidArgument { .. })
    ));
    let rank3 = Tensor::from_u32(&gpu, &[1; 8], &[2, 2, 2]).unwrap();
    assert!(matches!(
        emb::token_position_embedding(&wte, &wpe, &rank3),
        Err(Error::Shape { .. })
    ));
    let flat = Tensor::zeros(&gpu, &[80]).unwrap();
    assert!(matches!(
        emb::embedding(&flat, &ok_ids),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        emb::embedding(&wte, &float_ids),
        Err(Error::InvalidArgument { .. })
    ));
}

/// PE tolerance at position `pos`: f32 angles lose about pos * 2^-23 (lavapipe
/// measures at most 1.3 times that); 4x margin.
fn pe_tolerance(pos: usize) -> f64 {
    2e-6 + pos as f64 * 2f64.powi(-21)
}

fn assert_pe_close(what: &str, got: &[f32], want: &[f64], t: usize, c: usize) {
    for pos in 0..t {
        let row = pos * c..(pos + 1) * c;
        assert_close(
            &format!("{what} pos {pos}"),
            &got[row.clone()],
            &want[row],
            pe_tolerance(pos),
            0.0,
        );
    }
}

#[test]
fn sinusoidal_positions_match_the_formula() {
    let gpu = gpu();
    for (t, c) in [
        (1usize, 1usize),
        (1, 2),
        (7, 8),
        (63, 7),
        (129, 65),
        (2048, 512),
    ] {
        let pe = emb::sinusoidal_positions(&gpu, t, c).unwrap();
        assert_eq!(pe.shape(), &[t, c]);
        let got = pe.to_vec().unwrap();
        // The formula, written out here rather than taken from the reference.
        let want: Vec<f64> = (0..t * c)
            .map(|k| {
                let (pos, j) = ((k / c) as f64, k % c);
                let angle = pos / 10000f64.powf((2 * (j / 2)) as f64 / c as f64);
                if j % 2 == 0 {
                    angle.sin()
                } else {
                    angle.cos()
                }
            })
            .collect();
        assert_pe_close(&format!("PE T={t} C={c}"), &got, &want, t, c);
        assert_eq!(
            want,
            r::sinusoidal_positions(t, c),
            "reference disagrees with the formula"
        );
    }
    // Known values: PE(0, even) = 0, PE(0, odd) = 1; PE(1, 0) = sin 1, PE(1, 1) = cos 1.
    let got = emb::sinusoidal_positions(&gpu, 2, 6)
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(&got[..6], &[0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
    assert!((got[6] as f64 - 1f64.sin()).abs() < 1e-6 && (got[7] as f64 - 1f64.cos()).abs() < 1e-6);
}

#[test]
fn embed_scaled_plus_sinusoidal_matches_reference() {
    let gpu = gpu();
    let v = 29;
    for c in [1usize, 6, 7, 64] {
        let (tab, gtab) = table(&gpu, v, c, 11);
        let scale = (c as f32).sqrt();
        for (b, t) in [(1usize, 1usize), (2, 7), (3, 65), (1, 300)] {
            let id = ids(b * t, v, 12);
            let gids = Tensor::from_u32(&gpu, &id, &[b, t]).unwrap();
            let out = emb::embed_scaled_plus_sinusoidal(&gtab, &gids, scale).unwrap();
            assert_eq!(out.shape(), &[b, t, c]);
            let got = out.to_vec().unwrap();
            let want = r::embed_scaled_plus_sinusoidal(&tab, v, c, &id, t, scale as f64);
            // PE error plus two f32 roundings of a value of size <= scale + 1.
            for row in 0..b * t {
                let pos = row % t;
                let k = row * c..(row + 1) * c;
                let tol = pe_tolerance(pos) + 2.4e-7 * (scale as f64 + 1.0);
                let what = format!("embed*sqrt(C)+PE B={b} T={t} C={c} row {row}");
                assert_close(&what, &got[k.clone()], &want[k], tol, 0.0);
            }
        }
    }
}

// ---- backward: deterministic scatter-add (the size sweep against the f64
// reference and the finite-difference checks are in grad_check_elementwise.rs) ----

/// The documented result of `embedding_bwd`, computed independently on the CPU: for
/// each row v, the f32 sum of dy rows with id v taken left to right in position order.
fn position_order_f32_sum(ids: &[u32], dy: &[f32], v: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; v * c];
    for (r, &id) in ids.iter().enumerate() {
        if (id as usize) < v {
            for j in 0..c {
                out[id as usize * c + j] += dy[r * c + j];
            }
        }
    }
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Ids with a skewed distribution: id 3 at about 60% of positions, the rest spread.
fn skewed_ids(n: usize, v: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let u = rng.next_u64();
            if u % 10 < 6 {
                3
            } else {
                ((u >> 8) % v as u64) as u32
            }
        })
        .collect()
}

#[test]
fn embedding_bwd_is_the_position_order_sum_bit_for_bit_on_every_run() {
    let gpu = gpu();
    for (n, v, c) in [
        (1000usize, 50usize, 64usize),
        (1000, 50, 5),
        (4097, 700, 12),
        (300, 2, 1),
        // Id 3 over 65 535 times (lavapipe stops a thread's loops there): its
        // run crosses the kernel's windows of sorted slots.
        (120_000, 50, 4),
        (200_000, 9, 1),
    ] {
        let id = skewed_ids(n, v, n as u64);
        // Magnitudes from 1e-3 to 1e3: f32 sums in another order give other bits.
        let dy: Vec<f32> = data(n * c, 7)
            .iter()
            .enumerate()
            .map(|(i, &x)| x * 10f32.powi((i % 7) as i32 - 3))
            .collect();
        let gids = Tensor::from_u32(&gpu, &id, &[n]).unwrap();
        let gdy = Tensor::from_slice(&gpu, &dy, &[n, c]).unwrap();
        let want = bits(&position_order_f32_sum(&id, &dy, v, c));
        for run in 0..3 {
            let got = emb::embedding_bwd(&gids, &gdy, v)
                .unwrap()
                .to_vec()
                .unwrap();
            let differ: Vec<usize> = (0..v * c)
                .filter(|&i| got[i].to_bits() != want[i])
                .collect();
            assert!(
                differ.is_empty(),
                "N={n} V={v} C={c} run {run}: {} of {} values differ from the position-order \
                 f32 sum, first at {:?}",
                differ.len(),
                v * c,
                &differ[..differ.len().min(8)]
            );
        }
    }
    // Order is visible: 1 + 1e8 - 1e8 is 0 in f32 left to right, 1 in other orders.
    let (ids, dy) = ([5u32, 5, 5, 1], [1.0f32, 1e8, -1e8, 2.0]);
    let got = emb::embedding_bwd(
        &Tensor::from_u32(&gpu, &ids, &[4]).unwrap(),
        &Tensor::from_slice(&gpu, &dy, &[4, 1]).unwrap(),
        6,
    )
    .unwrap()
    .to_vec()
    .unwrap();
    assert_eq!(got, [0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn embedding_bwd_skips_out_of_vocabulary_ids_and_zeroes_unused_rows() {
    let gpu = gpu();
    for c in [8usize, 5] {
        let v = 20usize;
        let id = vec![3u32, 20, 19, 0, u32::MAX, 21, 3, 1_000_000, 19];
        let n = id.len();
        let dy = data(n * c, 17);
        let gids = Tensor::from_u32(&gpu, &id, &[1, n]).unwrap();
        let gdy = Tensor::from_slice(&gpu, &dy, &[1, n, c]).unwrap();
        // The pool's next (V, C) buffer holds 7s: rows no id touches must be zeroed.
        dirty_pool(&gpu, v - 4, c);
        let got = emb::embedding_bwd(&gids, &gdy, v).unwrap();
        assert_eq!(got.shape(), &[v, c]);
        let got = got.to_vec().unwrap();
        assert_close(
            &format!("embedding_bwd with bad ids C={c}"),
            &got,
            &r::embedding_bwd(&id, &dy, v, c),
            0.0,
            1.2e-7,
        );
        for row in [1usize, 2, 10, 18] {
            assert!(
                got[row * c..(row + 1) * c].iter().all(|&x| x == 0.0),
                "row {row}"
            );
        }
    }
}

#[test]
fn token_position_embedding_bwd_sums_over_the_batch() {
    let gpu = gpu();
    let (v, c, tmax) = (11usize, 6usize, 9usize);
    for (b, t) in [(4usize, 7usize), (1, 9), (2, 1)] {
        let id = ids(b * t, v, (b + t) as u64);
        let dy = data(b * t * c, 21);
        let gids = Tensor::from_u32(&gpu, &id, &[b, t]).unwrap();
        let gdy = Tensor::from_slice(&gpu, &dy, &[b, t, c]).unwrap();
        dirty_pool(&gpu, tmax - 4, c);
        let (dwte, dwpe) = emb::token_position_embedding_bwd(&gids, &gdy, v, tmax).unwrap();
        assert_eq!((dwte.shape(), dwpe.shape()), (&[v, c][..], &[tmax, c][..]));
        // dwpe[t] is sum over b of dy[b, t], b increasing: written out here in f32.
        let mut want = vec![0.0f32; tmax * c];
        for bi in 0..b {
            for k in 0..t * c {
                want[k] += dy[bi * t * c + k];
            }
        }
        assert_eq!(
            bits(&dwpe.to_vec().unwrap()),
            bits(&want),
            "dwpe B={b} T={t}"
        );
        let want = position_order_f32_sum(&id, &dy, v, c);
        assert_eq!(
            bits(&dwte.to_vec().unwrap()),
            bits(&want),
            "dwte B={b} T={t}"
        );
    }
    // 1-D ids (T) with dy (T, C): one sequence.
    let id = ids(5, v, 3);
    let dy = data(5 * c, 22);
    let (dwte, dwpe) = emb::token_position_embedding_bwd(
        &Tensor::from_u32(&gpu, &id, &[5]).unwrap(),
        &Tensor::from_slice(&gpu, &dy, &[5, c]).unwrap(),
        v,
        tmax,
    )
    .unwrap();
    let (want_te, want_pe) = r::token_position_embedding_bwd(&id, &dy, v, c, 5, tmax);
    assert_close("dwte (T)", &dwte.to_vec().unwrap(), &want_te, 0.0, 1.2e-7);
    assert_close("dwpe (T)", &dwpe.to_vec().unwrap(), &want_pe, 0.0, 0.0);
}

#[test]
fn embedding_backward_rejects_bad_input_and_handles_empty() {
    let gpu = gpu();
    let ids = Tensor::from_u32(&gpu, &[1, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
    for shape in [vec![2usize, 3], vec![6, 4], vec![2, 4, 4], vec![3, 2, 4]] {
        let dy = Tensor::zeros(&gpu, &shape).unwrap();
        let err = emb::embedding_bwd(&ids, &dy, 10).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{shape:?}: {err}");
        assert!(err.to_string().contains("ids' shape plus C"), "{err}");
        let err = emb::token_position_embedding_bwd(&ids, &dy, 10, 8).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{shape:?}: {err}");
    }
    let dy = Tensor::zeros(&gpu, &[2, 3, 4]).unwrap();
    let float_ids = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    assert!(matches!(
        emb::embedding_bwd(&float_ids, &dy, 10),
        Err(Error::InvalidArgument { .. })
    ));
    let u32_dy = Tensor::from_u32(&gpu, &[0; 24], &[2, 3, 4]).unwrap();
    assert!(matches!(
        emb::embedding_bwd(&ids, &u32_dy, 10),
        Err(Error::InvalidArgument { .. })
    ));
    let err = emb::token_position_embedding_bwd(&ids, &dy, 10, 2).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("T = 3"), "{err}");
    let rank3 = Tensor::from_u32(&gpu, &[1; 8], &[2, 2, 2]).unwrap();
    let dy3 = Tensor::zeros(&gpu, &[2, 2, 2, 4]).unwrap();
    assert!(
        emb::embedding_bwd(&rank3, &dy3, 10).is_ok(),
        "any ids shape"
    );
    assert!(matches!(
        emb::token_position_embedding_bwd(&rank3, &dy3, 10, 8),
        Err(Error::Shape { .. })
    ));
    // No ids: an all-zero table (over a dirty buffer); V = 0: an empty one.
    let none = Tensor::from_u32(&gpu, &[], &[0]).unwrap();
    let dy0 = Tensor::zeros(&gpu, &[0, 4]).unwrap();
    dirty_pool(&gpu, 3, 4);
    let got = emb::embedding_bwd(&none, &dy0, 7).unwrap();
    assert_eq!(got.shape(), &[7, 4]);
    assert!(got.to_vec().unwrap().iter().all(|&x| x == 0.0));
    let got = emb::embedding_bwd(&ids, &dy, 0).unwrap();
    assert_eq!(got.shape(), &[0, 4]);
}
