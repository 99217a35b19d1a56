//! Reference embeddings: row gather, token + learned position, sinusoidal
//! positions (in f64), scaled token + sinusoidal, and the gathers' backward
//! passes (scatter-adds into the tables). Ids >= V give zero token rows and
//! receive no gradient, the rule the GPU kernels follow.

/// table (V, C), ids (N) -> (N, C).
pub fn embedding(table: &[f32], v: usize, c: usize, ids: &[u32]) -> Vec<f64> {
    assert_eq!(table.len(), v * c);
    let mut out = vec![0.0; ids.len() * c];
    for (r, &id) in ids.iter().enumerate() {
        if (id as usize) < v {
            for j in 0..c {
                out[r * c + j] = table[id as usize * c + j] as f64;
            }
        }
    }
    out
}

/// wte (V, C), wpe (Tmax, C), ids (B, T) flattened with row length t -> (B, T, C):
/// out\[b, t\] = wte\[ids[b, t\]] + wpe\[t\].
pub fn token_position_embedding(
    wte: &[f32],
    v: usize,
    wpe: &[f32],
    c: usize,
    ids: &[u32],
    t: usize,
) -> Vec<f64> {
    assert!(wpe.len() >= t * c, "T exceeds wpe's positions");
    let mut out = embedding(wte, v, c, ids);
    for r in 0..ids.len() {
        let pos = r % t;
        for j in 0..c {
            out[r * c + j] += wpe[pos * c + j] as f64;
        }
    }
    out
}

/// PE(pos, j): sin(pos / 10000^(2i/C)) for j = 2i, cos(same) for j = 2i + 1.
pub fn sinusoid(pos: usize, j: usize, c: usize) -> f64 {
    let two_i = (j - j % 2) as f64;
    let angle = pos as f64 / 10000f64.powf(two_i / c as f64);
    if j.is_multiple_of(2) {
        angle.sin()
    } else {
        angle.cos()
    }
}

/// (T, C) table of sinusoidal positions.
pub fn sinusoidal_positions(t: usize, c: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(t * c);
    for pos in 0..t {
        for j in 0..c {
            out.push(sinusoid(pos, j, c));
        }
    }
    out
}

/// table (V, C), ids (B, T) flattened with row length t -> (B, T, C):
/// out[b, t] = table[ids[b, t]] * scale + PE(t).
pub fn embed_scaled_plus_sinusoidal(
    table: &[f32],
    v: usize,
    c: usize,
    ids: &[u32],
    t: usize,
    scale: f64,
) -> Vec<f64> {
    let mut out = embedding(table, v, c, ids);
    for r in 0..ids.len() {
        for j in 0..c {
            out[r * c + j] = out[r * c + j] * scale + sinusoid(r % t, j, c);
        }
    }
    out
}

/// Backward of [`embedding`]: ids (N), dy (N, C) -> dtable (V, C), where
/// dtable\[v\] = sum of dy\[r\] over the positions r with ids\[r\] == v (f64). Ids >= V
/// contribute nothing.
pub fn embedding_bwd(ids: &[u32], dy: &[f32], v: usize, c: usize) -> Vec<f64> {
    assert_eq!(dy.len(), ids.len() * c, "dy must be (N, C)");
    let mut dtable = vec![0.0; v * c];
    for (r, &id) in ids.iter().enumerate() {
        let id = id as usize;
        if id < v {
            for j in 0..c {
                dtable[id * c + j] += dy[r * c + j] as f64;
            }
        }
    }
    dtable
}

/// Backward of [`token_position_embedding`]: ids (B, T) flattened with row length
/// t, dy (B, T, C) -> (dwte (V, C), dwpe (Tmax, C)), with dwte = [`embedding_bwd`]
/// and dwpe[t'] = sum over b of dy[b, t'] for t' < T, zero for t' >= T.
pub fn token_position_embedding_bwd(
    ids: &[u32],
    dy: &[f32],
    v: usize,
    c: usize,
    t: usize,
    tmax: usize,
) -> (Vec<f64>, Vec<f64>) {
    assert!(t <= tmax, "T exceeds wpe's positions");
    let dwte = embedding_bwd(ids, dy, v, c);
    let mut dwpe = vec![0.0; tmax * c];
    for r in 0..ids.len() {
        let pos = r % t;
        for j in 0..c {
            dwpe[pos * c + j] += dy[r * c + j] as f64;
        }
    }
    (dwte, dwpe)
}
