//! Every shader is parsed and validated by naga and translated to SPIR-V (Vulkan),
//! MSL (Metal) and HLSL (DX12), with default override constants. Needs no GPU:
//! this is how the Metal and DX12 paths stay honest on a Linux CI machine.

use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgformer::kernels::ALL_SHADERS;

fn check(name: &str, source: &str) -> Result<usize, String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let caps = Capabilities::SHADER_FLOAT16 | Capabilities::SUBGROUP;
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
    for shader in ALL_SHADERS {
        match check(shader.name, shader.source) {
            Ok(n) => total += n,
            Err(e) => failures.push(format!("{}:\n{e}", shader.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(total > 0, "no entry points found");
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
