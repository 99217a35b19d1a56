// Compiles every WGSL file of shaders/ with the browser's own WGSL compiler
// (Chromium: Tint): each module, and optionally each compute entry point as a
// pipeline with default override constants. naga (tests/shaders.rs) and Tint differ: Tint applies WGSL's
// uniformity analysis to barriers and rejects constant NaNs and mixed
// bitwise/relational operators without parentheses, for example.
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";

/** Reads shaders/*.wgsl under `root`: [{name, source, entries}]. */
export async function loadShaders(root) {
  const dir = join(root, "shaders");
  const names = (await readdir(dir)).filter((n) => n.endsWith(".wgsl")).sort();
  const out = [];
  for (const name of names) {
    const source = await readFile(join(dir, name), "utf8");
    const entries = [...source.matchAll(/@compute[^{]*?fn\s+(\w+)/gs)].map((m) => m[1]);
    out.push({ name, source, entries });
  }
  return out;
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
    const device = await adapter.requestDevice({
      requiredFeatures: f16 ? ["shader-f16"] : [],
      requiredLimits: {
        maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
        maxComputeWorkgroupSizeX: adapter.limits.maxComputeWorkgroupSizeX,
        maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
      },
    });
    const results = [];
    for (const s of shaders) {
      if (/^\s*enable\s+f16\s*;/m.test(s.source) && !f16) {
        results.push({ name: s.name, entry: "*", ok: true, skipped: "adapter lacks shader-f16", messages: [] });
        continue;
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
