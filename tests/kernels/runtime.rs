//! The runtime itself: upload/readback, pooling, batching counters, reshape,
//! and the errors for bad input and oversize tensors.

use crate::common::*;
use wgformer::{kernels::copy::copy_into, DType, Error, Tensor};

#[test]
fn upload_then_read_back_is_exact_for_odd_sizes() {
    let gpu = gpu();
    for n in [1usize, 7, 63, 65, 127, 129, 100_003] {
        let v = data(n, n as u64);
        let t = Tensor::from_slice(&gpu, &v, &[n]).unwrap();
        assert_eq!(t.to_vec().unwrap(), v, "n = {n}");
    }
    let ids: Vec<u32> = (0..13).map(|i| i * 7919).collect();
    assert_eq!(
        Tensor::from_u32(&gpu, &ids, &[13])
            .unwrap()
            .to_vec_u32()
            .unwrap(),
        ids
    );
}

#[test]
fn copy_kernel_copies_every_element() {
    let gpu = gpu();
    for n in [1usize, 5, 129, 70_001] {
        let v = data(n, 3);
        let src = Tensor::from_slice(&gpu, &v, &[n]).unwrap();
        let dst = Tensor::zeros(&gpu, &[n]).unwrap();
        copy_into(&src, &dst).unwrap();
        assert_eq!(dst.to_vec().unwrap(), v);
    }
}

#[test]
fn zeros_ones_and_seeded_random() {
    let gpu = gpu();
    assert!(Tensor::zeros(&gpu, &[3, 5])
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .all(|&x| x == 0.0));
    assert!(Tensor::ones(&gpu, &[9])
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .all(|&x| x == 1.0));
    let a = Tensor::randn(&gpu, &[1000], 1.0, 42)
        .unwrap()
        .to_vec()
        .unwrap();
    let b = Tensor::randn(&gpu, &[1000], 1.0, 42)
        .unwrap()
        .to_vec()
        .unwrap();
    let c = Tensor::randn(&gpu, &[1000], 1.0, 43)
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let mean = a.iter().map(|&x| x as f64).sum::<f64>() / 1000.0;
    let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / 1000.0;
    assert!(
        mean.abs() < 0.1 && (var - 1.0).abs() < 0.15,
        "mean {mean} var {var}"
    );
    let u = Tensor::rand_uniform(&gpu, &[1000], -2.0, 3.0, 7)
        .unwrap()
        .to_vec()
        .unwrap();
    assert!(u.iter().all(|&x| (-2.0..3.0).contains(&x)));
}

#[test]
fn reshape_shares_the_buffer_and_checks_size() {
    let gpu = gpu();
    let t = Tensor::from_slice(&gpu, &data(24, 1), &[2, 3, 4]).unwrap();
    let r = t.reshape(&[6, 4]).unwrap();
    assert!(r.shares_buffer(&t));
    assert_eq!(r.to_vec().unwrap(), t.to_vec().unwrap());
    assert!(matches!(t.reshape(&[5, 5]), Err(Error::Shape { .. })));
    // A product that overflows usize is a shape error, not a panic.
    assert!(matches!(
        t.reshape(&[usize::MAX, 2]),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn absurd_shapes_are_refused_before_anything_is_allocated() {
    let gpu = gpu();
    let huge = [1usize << 20, 1 << 20];
    // The host values of `full` / `randn` / `rand_uniform` would need 4 TiB.
    for t in [
        Tensor::full(&gpu, &huge, 1.0),
        Tensor::randn(&gpu, &huge, 1.0, 1),
        Tensor::rand_uniform(&gpu, &huge, 0.0, 1.0, 1),
    ] {
        assert!(matches!(t, Err(Error::TooLarge { .. })), "{:?}", t.err());
    }
    let overflow = Tensor::from_slice(&gpu, &[1.0], &[usize::MAX, 2]).unwrap_err();
    assert_eq!(
        overflow.kind(),
        wgformer::ErrorKind::InvalidArgument,
        "{overflow}"
    );
}

#[test]
fn wrong_value_count_is_a_shape_error() {
    let gpu = gpu();
    let err = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
}

#[test]
fn tensor_over_the_binding_limit_is_refused_with_the_limit_named() {
    let gpu = gpu();
    let limit = gpu.max_binding_bytes();
    let n = (limit / 4 + 1) as usize;
    let err = Tensor::empty(&gpu, &[n], DType::F32).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::TooLarge { .. }), "{msg}");
    assert!(msg.contains("max_storage_buffer_binding_size"), "{msg}");
}

#[test]
fn buffers_are_pooled_and_ops_batch_into_one_submit() {
    // A Gpu of its own: the shared one's counters move with the other tests.
    let gpu = wgformer::Gpu::new().unwrap();
    let n = 4099;
    let src = Tensor::from_slice(&gpu, &data(n, 9), &[n]).unwrap();
    let expected = src.to_vec().unwrap();
    // One "step": ten ops into fresh tensors, then one readback.
    let step = || {
        let mut last = None;
        for _ in 0..10 {
            let dst = Tensor::empty(&gpu, &[n], DType::F32).unwrap();
            copy_into(&src, &dst).unwrap();
            last = Some(dst);
        }
        let d = gpu.counters().snapshot();
        (d, last.unwrap().to_vec().unwrap())
    };
    step(); // warm-up: pipelines, buffers, bind groups
    let before = gpu.counters().snapshot();
    let (encoded, out) = step();
    let d = encoded - before;
    assert_eq!(d.dispatches, 10);
    assert_eq!(d.submits, 0, "dispatches must not submit by themselves");
    let d = gpu.counters().snapshot() - before;
    assert_eq!(out, expected);
    assert_eq!(d.submits, 1, "one readback, one submit");
    assert_eq!(d.pipelines_created, 0);
    assert_eq!(
        d.buffers_created, 0,
        "steady state must reuse pooled buffers: {d:?}"
    );
    assert_eq!(
        d.bind_groups_created, 0,
        "recurring buffers must reuse bind groups: {d:?}"
    );
}

#[test]
fn no_matching_adapter_says_how_to_get_one() {
    let err = pollster::block_on(wgformer::Gpu::with_adapter_filter(Some(
        "no-such-adapter-xyz",
    )))
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NoAdapter { .. }), "{msg}");
    assert!(
        msg.contains("mesa-vulkan-drivers") && msg.contains("no-such-adapter-xyz"),
        "{msg}"
    );
}

#[test]
fn per_op_profile_times_each_dispatch() {
    let gpu = wgformer::Gpu::new().unwrap();
    if !gpu.features().timestamp_query {
        eprintln!("skipped: adapter has no timestamp queries");
        return;
    }
    let n = 1 << 20;
    let src = Tensor::from_slice(&gpu, &data(n, 1), &[n]).unwrap();
    let dst = Tensor::empty(&gpu, &[n], DType::F32).unwrap();
    gpu.profile_begin().unwrap();
    for _ in 0..3 {
        copy_into(&src, &dst).unwrap();
    }
    let times = gpu.profile_end().unwrap();
    assert_eq!(times.len(), 3);
    assert!(
        times
            .iter()
            .all(|t| t.entry == "copy_fwd_vec4" && t.ms > 0.0),
        "{times:?}"
    );
    assert_eq!(
        dst.to_vec().unwrap(),
        src.to_vec().unwrap(),
        "profiled ops still compute"
    );
    assert!(
        gpu.profile_end().is_err(),
        "profile_end without profile_begin"
    );
}

#[test]
fn write_in_place_replaces_values_after_pending_reads() {
    let gpu = crate::common::gpu();
    let a = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[3]).unwrap();
    // Encoded before the write: must see the old values.
    let before = wgformer::kernels::elementwise::scale(&a, 2.0).unwrap();
    a.write_f32(&[10.0, 20.0, 30.0]).unwrap();
    assert_eq!(before.to_vec().unwrap(), vec![2.0, 4.0, 6.0]);
    assert_eq!(a.to_vec().unwrap(), vec![10.0, 20.0, 30.0]);
    assert!(a.write_f32(&[1.0]).is_err());
    let ids = Tensor::from_u32(&gpu, &[1, 2], &[2]).unwrap();
    ids.write_u32(&[7, 9]).unwrap();
    assert_eq!(ids.to_vec_u32().unwrap(), vec![7, 9]);
    assert!(ids.write_f32(&[1.0, 2.0]).is_err());
}

/// `wgformer info` in a child process with `vars` set; (success, stdout + stderr).
fn info_with(vars: &[(&str, &str)]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgformer"))
        .arg("info")
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn a_backend_that_hides_every_adapter_is_named_with_what_it_hid() {
    // A backend this machine has no adapter for (Metal on Linux, Vulkan elsewhere).
    let missing = if cfg!(target_os = "macos") {
        "dx12"
    } else {
        "metal"
    };
    let (ok, text) = info_with(&[("WGPU_BACKEND", missing)]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("WGPU_BACKEND=\"{missing}\""))
            && text.contains("without WGPU_BACKEND: "),
        "{text}"
    );
    let (ok, text) = info_with(&[("WGPU_BACKEND", "vulcan")]);
    assert!(
        !ok && text.contains("WGPU_BACKEND=\"vulcan\"") && text.contains("vulkan, metal"),
        "{text}"
    );
}

#[test]
fn a_bad_kernel_policy_variable_is_an_error_and_info_prints_the_policy() {
    let (ok, text) = info_with(&[("WGFORMER_ATTENTION", "gpuu")]);
    assert!(
        !ok && text.contains("WGFORMER_ATTENTION=\"gpuu\"") && text.contains("auto, cpu, gpu"),
        "{text}"
    );
    let (ok, text) = info_with(&[("WGFORMER_ROW_PLAN", "gpu"), ("WGFORMER_SUBGROUPS", "off")]);
    assert!(ok, "{text}");
    assert!(
        text.contains("kernel policy:") && text.contains("row plan         gpu"),
        "{text}"
    );
    assert!(text.contains("subgroups        not used"), "{text}");
}

#[test]
fn a_policy_the_device_cannot_honour_is_refused() {
    let gpu = gpu();
    let policy = wgformer::gpu::KernelPolicy {
        subgroup_size: Some(5),
        ..gpu.policy().clone()
    };
    let err = gpu.with_policy(policy).unwrap_err();
    assert!(err.to_string().contains("subgroup_size"), "{err}");
    let mut policy = gpu.policy().clone();
    policy.limits.workgroup_storage_bytes += 1;
    assert!(gpu.with_policy(policy).is_err());
    // The same policy is always fine, and shares the device's counters.
    let other = gpu.with_policy(gpu.policy().clone()).unwrap();
    let before = gpu.counters().snapshot().dispatches;
    copy_into(
        &Tensor::zeros(&other, &[4]).unwrap(),
        &Tensor::zeros(&other, &[4]).unwrap(),
    )
    .unwrap();
    assert!(gpu.counters().snapshot().dispatches > before);
}

#[test]
fn every_kernel_check_of_wgformer_check_passes_on_this_adapter() {
    // `wgformer check` and the browser page's Kernels tab: the kernels this
    // adapter's policy picks, forward and backward, against the reference.
    let report = wgformer::selfcheck::run(&gpu(), &mut |_| {}).unwrap();
    let failed: Vec<_> = report.results.iter().filter(|r| !r.passed).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(report.results.len(), wgformer::selfcheck::CHECKS.len());
}
