//! Learning-rate schedules: the paper's warm-up ("Attention Is All You Need",
//! section 5.3) and cosine decay with linear warm-up (GPT-style).

/// lrate = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), step counted from 1.
pub fn noam(d_model: usize, warmup: u32, step: u32) -> f32 {
    let s = step.max(1) as f64;
    let w = warmup.max(1) as f64;
    ((d_model as f64).powf(-0.5) * s.powf(-0.5).min(s * w.powf(-1.5))) as f32
}

/// Linear warm-up from 0 to `max_lr` over `warmup` steps, then cosine decay to
/// `min_lr` at `total` steps (and `min_lr` after). Steps count from 1.
pub fn cosine_with_warmup(max_lr: f32, min_lr: f32, warmup: u32, total: u32, step: u32) -> f32 {
    if step <= warmup {
        return max_lr * step as f32 / warmup.max(1) as f32;
    }
    if step >= total {
        return min_lr;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    (min_lr as f64 + (max_lr - min_lr) as f64 * cosine) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noam_peaks_at_warmup() {
        // Peak value d^-0.5 * warmup^-0.5 at step == warmup, from both sides.
        let peak = noam(512, 4000, 4000);
        assert!((peak as f64 - 512f64.powf(-0.5) * 4000f64.powf(-0.5)).abs() < 1e-9);
        assert!(noam(512, 4000, 3999) < peak && noam(512, 4000, 4001) < peak);
        assert!((noam(512, 4000, 1) as f64 - 512f64.powf(-0.5) * 4000f64.powf(-1.5)).abs() < 1e-12);
    }

    #[test]
    fn cosine_warms_up_then_decays_to_min() {
        assert_eq!(cosine_with_warmup(1.0, 0.1, 10, 110, 5), 0.5);
        assert_eq!(cosine_with_warmup(1.0, 0.1, 10, 110, 10), 1.0);
        assert!((cosine_with_warmup(1.0, 0.1, 10, 110, 60) - 0.55).abs() < 1e-6);
        assert_eq!(cosine_with_warmup(1.0, 0.1, 10, 110, 500), 0.1);
    }
}
