//! Every shader is parsed and validated by naga and translated to SPIR-V (Vulkan),
//! MSL (Metal) and HLSL (DX12), with default override constants. Needs no GPU:
//! this is how the Metal and DX12 paths stay honest on a Linux CI machine. And
//! every Rust constant that repeats a shader's number (kernels::wgsl_mirrors)
//! equals it. The cooperative-matrix shaders (kernels::COOP_SHADERS) validate
//! with naga's cooperative-matrix capability and translate to SPIR-V and MSL
//! only: naga 30's HLSL backend has no cooperative matrices (it panics on
//! them) and wgpu 30 offers them on Vulkan and Metal only. Their emulated
//! forms (gemm::coop::emulated_shaders) are plain WGSL and go with the rest.

use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgformer::gpu::ParamsBinding;
use wgformer::kernels::gemm::coop::emulated_shaders;
use wgformer::kernels::wgsl_mirrors::{wgsl_mirrors, WgslName};
use wgformer::kernels::{ALL_SHADERS, COOP_SHADERS};

fn check(name: &str, source: &str) -> Result<usize, String> {
    check_with(name, source, Capabilities::empty(), true)
}

/// [`check`] with `extra` capabilities, and HLSL only where `hlsl`.
fn check_with(name: &str, source: &str, extra: Capabilities, hlsl: bool) -> Result<usize, String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let caps = Capabilities::SHADER_FLOAT16 | Capabilities::SUBGROUP | extra;
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| e.emit_to_string(source))?;
    let entry_points: Vec<String> = module.entry_points.iter().map(|e| e.name.clone()).collect();
    for ep in &entry_points {
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((naga::ShaderStage::Compute, ep)),
            &Default::default(),
        )
        .map_err(|e| format!("{name}::{ep}: overrides: {e}"))?;
        let spv_pipeline = spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: ep.clone(),
        };
        spv::write_vec(
            &module,
            &info,
            &spv::Options::default(),
            Some(&spv_pipeline),
        )
        .map_err(|e| format!("{name}::{ep}: SPIR-V: {e}"))?;
        let msl_pipeline = msl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, ep.clone())),
            ..Default::default()
        };
        let msl_options = msl::Options {
            lang_version: (2, 4),
            ..Default::default()
        };
        msl::write_string(&module, &info, &msl_options, &msl_pipeline)
            .map_err(|e| format!("{name}::{ep}: MSL: {e}"))?;
        if !hlsl {
            continue;
        }
        let hlsl_options = hlsl::Options {
            shader_model: hlsl::ShaderModel::V6_2,
            ..Default::default()
        };
        let hlsl_pipeline = hlsl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, ep.clone())),
        };
        let mut out = String::new();
        hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline)
            .write(&module, &info, None)
            .map_err(|e| format!("{name}::{ep}: HLSL: {e}"))?;
    }
    Ok(entry_points.len())
}

#[test]
fn every_shader_validates_and_translates_to_spirv_msl_hlsl() {
    let mut failures = Vec::new();
    let mut total = 0;
    for shader in ALL_SHADERS.iter().copied().chain(emulated_shaders()) {
        // The text the device compiles (binding 0 moved to storage where asked).
        match check(shader.name, &shader.wgsl()) {
            Ok(n) => total += n,
            Err(e) => failures.push(format!("{}:\n{e}", shader.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(total > 0, "no entry points found");
}

#[test]
fn each_module_declares_its_params_in_the_address_space_its_layout_binds() {
    let mut storage_modules = 0;
    let emulated = emulated_shaders().iter();
    for shader in ALL_SHADERS
        .iter()
        .copied()
        .chain(COOP_SHADERS.iter().copied())
        .chain(emulated)
    {
        let module = naga::front::wgsl::parse_str(&shader.wgsl()).unwrap();
        let params = module
            .global_variables
            .iter()
            .map(|(_, var)| var)
            .filter(|var| {
                var.binding
                    .as_ref()
                    .is_some_and(|b| b.group == 0 && b.binding == 0)
            })
            .collect::<Vec<_>>();
        let expected = match shader.params {
            ParamsBinding::Uniform => naga::AddressSpace::Uniform,
            ParamsBinding::ReadOnlyStorage => {
                storage_modules += 1;
                naga::AddressSpace::Storage {
                    access: naga::StorageAccess::LOAD,
                }
            }
        };
        assert!(!params.is_empty(), "{}: no binding 0", shader.name);
        for var in params {
            assert_eq!(var.space, expected, "{}: binding 0", shader.name);
        }
    }
    // The subgroup attention kernels (lavapipe only) keep theirs in storage.
    assert_eq!(storage_modules, 1);
}

#[test]
fn every_cooperative_matrix_shader_validates_and_translates_to_spirv_and_msl() {
    let mut failures = Vec::new();
    let mut total = 0;
    for shader in COOP_SHADERS {
        // Without the capability naga must refuse them (the test is not vacuous).
        if check(shader.name, shader.source).is_ok() {
            failures.push(format!("{}: validated without the capability", shader.name));
        }
        match check_with(
            shader.name,
            shader.source,
            Capabilities::COOPERATIVE_MATRIX,
            false,
        ) {
            Ok(n) => total += n,
            Err(e) => failures.push(format!("{}:\n{e}", shader.name)),
        }
        assert!(
            !ALL_SHADERS.iter().any(|s| s.name == shader.name),
            "{} is in both lists",
            shader.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(COOP_SHADERS.len(), 8);
    assert!(total >= 8, "no entry points found");
}

/// Every transpose and epilogue the tape uses builds its own pipeline from
/// pipeline constants: each combination must translate too.
#[test]
fn the_cooperative_gemm_translates_with_every_transpose_and_epilogue() {
    let shader = &wgformer::kernels::GEMM_COOP_F16X16_WGSL;
    let module = naga::front::wgsl::parse_str(shader.source).unwrap();
    let caps = Capabilities::all();
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap();
    for (ta, tb, act, bias, vec_a) in [
        (0.0, 0.0, 0.0, 0.0, 1.0),
        (1.0, 0.0, 1.0, 1.0, 0.0),
        (0.0, 1.0, 2.0, 1.0, 1.0),
        (1.0, 1.0, 3.0, 0.0, 0.0),
    ] {
        let constants: naga::back::PipelineConstants = [
            ("TRANS_A", ta),
            ("TRANS_B", tb),
            ("ACT", act),
            ("HAS_BIAS", bias),
            ("VEC_A", vec_a),
            ("VEC_B", 1.0 - vec_a),
            ("VEC_C", vec_a),
            ("COOP_WG", 64.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let (m, i) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((naga::ShaderStage::Compute, "gemm_fwd_coop")),
            &constants,
        )
        .unwrap();
        let pipeline = spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: "gemm_fwd_coop".into(),
        };
        spv::write_vec(&m, &i, &spv::Options::default(), Some(&pipeline)).unwrap();
        let msl_pipeline = msl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, "gemm_fwd_coop".into())),
            ..Default::default()
        };
        let msl_options = msl::Options {
            lang_version: (2, 3),
            ..Default::default()
        };
        let (src, _) = msl::write_string(&m, &i, &msl_options, &msl_pipeline).unwrap();
        assert!(src.contains("simdgroup_multiply_accumulate"), "{src}");
    }
}

#[test]
fn a_broken_shader_is_caught() {
    // The checker must fail on invalid WGSL, or the test above proves nothing.
    assert!(check(
        "broken",
        "@compute @workgroup_size(1) fn f() { let x: f32 = 1u; }"
    )
    .is_err());
}

/// The number `name` stands for in `module` (a literal, after naga's constant
/// evaluation), if it is one.
fn literal(module: &naga::Module, e: naga::Handle<naga::Expression>) -> Option<f64> {
    use naga::Literal::*;
    match module.global_expressions[e] {
        naga::Expression::Literal(l) => Some(match l {
            U32(v) => v as f64,
            I32(v) => v as f64,
            F32(v) => v as f64,
            AbstractInt(v) => v as f64,
            AbstractFloat(v) => v,
            _ => return None,
        }),
        _ => None,
    }
}

/// The value a mirror's WGSL name has in its module.
fn wgsl_value(source: &str, name: WgslName) -> Result<f64, String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    match name {
        WgslName::Const(n) => {
            let (_, c) = module
                .constants
                .iter()
                .find(|(_, c)| c.name.as_deref() == Some(n))
                .ok_or(format!("no `const {n}`"))?;
            literal(&module, c.init).ok_or(format!("`const {n}` is not a number"))
        }
        WgslName::Override(n) => {
            let (_, o) = module
                .overrides
                .iter()
                .find(|(_, o)| o.name.as_deref() == Some(n))
                .ok_or(format!("no `override {n}`"))?;
            o.init
                .and_then(|init| literal(&module, init))
                .ok_or(format!("`override {n}` has no numeric default"))
        }
        WgslName::WorkgroupSize(entry, dim) => {
            // Override-sized workgroups take their defaults.
            let info = Validator::new(ValidationFlags::all(), Capabilities::all())
                .validate(&module)
                .map_err(|e| e.emit_to_string(source))?;
            let (module, _) = naga::back::pipeline_constants::process_overrides(
                &module,
                &info,
                None,
                &Default::default(),
            )
            .map_err(|e| e.to_string())?;
            let ep = module
                .entry_points
                .iter()
                .find(|ep| ep.name == entry)
                .ok_or(format!("no entry point {entry}"))?;
            Ok(ep.workgroup_size[dim] as f64)
        }
    }
}

#[test]
fn rust_constants_that_mirror_wgsl_ones_agree_with_the_shaders() {
    let mirrors = wgsl_mirrors();
    let mut failures = Vec::new();
    for m in &mirrors {
        match wgsl_value(m.shader.source, m.wgsl) {
            Ok(v) if v == m.value => {}
            Ok(v) => failures.push(format!(
                "{} {:?} is {v} but {} is {}",
                m.shader.name, m.wgsl, m.rust, m.value
            )),
            Err(e) => failures.push(format!("{} {:?} ({}): {e}", m.shader.name, m.wgsl, m.rust)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(mirrors.len() > 30, "the table lost its entries");
}

#[test]
fn a_drifted_mirror_is_caught() {
    // The check must see a changed number, or the test above proves nothing.
    let src =
        "const WG: u32 = 128u;\noverride T: u32 = 4u;\n@compute @workgroup_size(WG, T) fn f() {}";
    assert_eq!(wgsl_value(src, WgslName::Const("WG")), Ok(128.0));
    assert_eq!(wgsl_value(src, WgslName::Override("T")), Ok(4.0));
    assert_eq!(wgsl_value(src, WgslName::WorkgroupSize("f", 1)), Ok(4.0));
    assert!(wgsl_value(src, WgslName::Const("NOPE")).is_err());
}
