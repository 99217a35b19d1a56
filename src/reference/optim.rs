//! CPU spec of the optimiser kernels, in f64, following PyTorch's definitions of
//! Adam (L2 added to the gradient), AdamW (decoupled decay) and SGD with momentum.

/// One Adam/AdamW step on (param, m, v) in place. `g` is already scaled.
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    param: &mut [f64],
    grad: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    lr: f64,
    (beta1, beta2): (f64, f64),
    eps: f64,
    decoupled_decay: f64,
    l2: f64,
    step: u32,
) {
    let bc1 = 1.0 - beta1.powi(step as i32);
    let bc2 = 1.0 - beta2.powi(step as i32);
    for i in 0..param.len() {
        let g = grad[i] + l2 * param[i];
        param[i] -= lr * decoupled_decay * param[i];
        m[i] = beta1 * m[i] + (1.0 - beta1) * g;
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
        param[i] -= lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
    }
}

/// One SGD step: buf = momentum * buf + g + l2 * p; p -= lr * buf.
pub fn sgd_step(param: &mut [f64], grad: &[f64], buf: &mut [f64], lr: f64, momentum: f64, l2: f64) {
    for i in 0..param.len() {
        buf[i] = momentum * buf[i] + grad[i] + l2 * param[i];
        param[i] -= lr * buf[i];
    }
}

/// sqrt of the sum of squares over all tensors, and the clip factor.
pub fn global_norm(grads: &[&[f64]], max_norm: f64) -> (f64, f64) {
    let norm = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt();
    let scale = if max_norm > 0.0 {
        (max_norm / (norm + 1e-6)).min(1.0)
    } else {
        1.0
    };
    (norm, scale)
}
