// Compiles every WGSL module of the crate (the files of shaders/ assembled as
// src/kernels/mod.rs assembles them) with the browser's own WGSL compiler
// (Chromium: Tint): each module, and optionally each compute entry point as a
// pipeline with default override constants. naga (tests/kernels/shaders.rs) and Tint differ: Tint applies WGSL's
// uniformity analysis to barriers and rejects constant NaNs and mixed
// bitwise/relational operators without parentheses, for example.
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";

/**
 * The crate's shader modules under `root`, assembled exactly as
 * src/kernels/mod.rs does: each `shader!("a.wgsl", ...)` is one file, each
 * `shader!("name" = "a.wgsl" "b.wgsl", ...)` the files concatenated in order
 * (WGSL lets a file use what a later one declares). [{name, source, entries}]
 */
export async function loadShaders(root) {
  const dir = join(root, "shaders");
  const registry = await readFile(join(root, "src", "kernels", "mod.rs"), "utf8");
  const modules = [];
  for (const m of registry.matchAll(/shader!\(\s*"([^"]+)"\s*(?:=\s*((?:"[^"]+"\s*)+))?,\s*f16/g)) {
    const parts = m[2] ? [...m[2].matchAll(/"([^"]+)"/g)].map((f) => f[1]) : [m[1]];
    modules.push({ name: m[1], parts });
  }
  if (modules.length === 0) throw new Error("no shader! modules found in src/kernels/mod.rs");
  // Every file must belong to some module, or it would go untested.
  const used = new Set([...modules.flatMap((m) => m.parts), EMULATED_OPS]);
  const files = (await readdir(dir)).filter((n) => n.endsWith(".wgsl"));
  const orphans = files.filter((f) => !used.has(f));
  if (orphans.length) throw new Error(`shaders/ files in no module of src/kernels/mod.rs: ${orphans.join(", ")}`);
  const entriesOf = (source) => [...source.matchAll(/@compute[^{]*?fn\s+(\w+)/gs)].map((m) => m[1]);
  const matrixOps = await readFile(join(dir, "coop_matrix.wgsl"), "utf8");
  const emulatedOps = await readFile(join(dir, EMULATED_OPS), "utf8");
  const out = [];
  for (const { name, parts } of modules.sort((a, b) => a.name.localeCompare(b.name))) {
    let source = "";
    for (const part of parts) source += await readFile(join(dir, part), "utf8");
    out.push({ name, source, entries: entriesOf(source) });
    if (parts.includes("coop_matrix.wgsl")) {
      const emulated = emulate(source, matrixOps, emulatedOps);
      out.push({ name: `${name}, matrix operations emulated`, source: emulated, entries: entriesOf(emulated) });
    }
  }
  return out;
}

/** coop_emulated.wgsl: the matrix operations in plain WGSL, in no module of its own. */
const EMULATED_OPS = "coop_emulated.wgsl";

/**
 * A cooperative-matrix module's emulated form, built as
 * src/kernels/gemm/coop.rs's `emulate` builds it: coop_matrix.wgsl replaced by
 * coop_emulated.wgsl, the `enable wgpu_cooperative_matrix;` line and the
 * matrix types (lines naming `coop_mat`) left out. Plain WGSL, so Tint checks
 * it like any other module.
 */
function emulate(source, matrixOps, emulatedOps) {
  if (!source.includes(matrixOps)) throw new Error("a cooperative module without coop_matrix.wgsl");
  return source
    .replace(matrixOps, () => emulatedOps)
    .split("\n")
    .filter((line) => !line.startsWith("enable wgpu_cooperative_matrix") && !line.includes("coop_mat"))
    .join("\n");
}

/**
 * In `page` (any page of a secure origin): [{name, entry, ok, skipped, messages}].
 * Modules only by default: parsing, validation and the uniformity analysis are
 * where Tint and naga differ, and they are fast. With `pipelines`, every entry
 * point is also compiled to a pipeline (default overrides): thorough, but on
 * SwiftShader each pipeline costs seconds of JIT compilation.
 */
export async function compileInBrowser(page, shaders, pipelines = false) {
  return page.evaluate(async ([shaders, pipelines]) => {
    const adapter = await navigator.gpu.requestAdapter();
    const f16 = adapter.features.has("shader-f16");
    const subgroups = adapter.features.has("subgroups");
    const device = await adapter.requestDevice({
      requiredFeatures: [...(f16 ? ["shader-f16"] : []), ...(subgroups ? ["subgroups"] : [])],
      requiredLimits: {
        maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
        maxComputeWorkgroupSizeX: adapter.limits.maxComputeWorkgroupSizeX,
        maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
      },
    });
    const results = [];
    for (let s of shaders) {
      // wgpu's own WGSL extension (tensor cores, native only): not part of WebGPU.
      if (/^\s*enable\s+wgpu_cooperative_matrix\s*;/m.test(s.source)) {
        results.push({ name: s.name, entry: "*", ok: true, skipped: "native-only cooperative matrices", messages: [] });
        continue;
      }
      if (/^\s*enable\s+f16\s*;/m.test(s.source) && !f16) {
        results.push({ name: s.name, entry: "*", ok: true, skipped: "adapter lacks shader-f16", messages: [] });
        continue;
      }
      // Subgroup builtins need the adapter's feature (and `enable subgroups;` in WGSL).
      if (/\bsubgroup[A-Z]\w*\s*\(|@builtin\(subgroup_/.test(s.source)) {
        if (!subgroups) {
          results.push({ name: s.name, entry: "*", ok: true, skipped: "adapter lacks subgroups", messages: [] });
          continue;
        }
        s = { ...s, source: "enable subgroups;\n" + s.source };
      }
      device.pushErrorScope("validation");
      const module = device.createShaderModule({ code: s.source, label: s.name });
      const info = await module.getCompilationInfo();
      const moduleError = await device.popErrorScope();
      const errors = info.messages.filter((m) => m.type === "error").length;
      const messages = info.messages.map((m) => `${m.type} ${m.lineNum}:${m.linePos} ${m.message}`);
      if (errors || moduleError) {
        results.push({ name: s.name, entry: "*", ok: false, messages: messages.length ? messages : [moduleError.message] });
        continue;
      }
      if (!pipelines) {
        results.push({ name: s.name, entry: "*", ok: true, messages: [] });
        continue;
      }
      for (const entry of s.entries) {
        console.log(`compiling ${s.name}::${entry}`);
        device.pushErrorScope("validation");
        let thrown = null;
        try {
          await device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: entry } });
        } catch (e) {
          thrown = e.message;
        }
        const err = await device.popErrorScope();
        const msg = thrown || (err && err.message);
        results.push({ name: s.name, entry, ok: !msg, messages: msg ? [msg] : [] });
      }
    }
    device.destroy();
    return results;
  }, [shaders, pipelines]);
}
