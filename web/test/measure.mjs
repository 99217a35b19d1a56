// Browser figures for BENCHMARKS.md: the page's quick kernel benchmark and the
// demo's training speed, measured like `wgformer bench demo` natively (one
// warm-up call, then timed calls of 10 steps each), in headless Chromium on
// SwiftShader. `node web/test/measure.mjs` after web/build.sh; writes
// target/web-measure.json.
import { chromium } from "playwright-core";
import { mkdir, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { serve } from "./server.mjs";
import { CHROMIUM_FLAGS } from "./flags.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const CONFIGS = {
  default: {}, // the page's defaults (DemoConfig::default)
  test: { n_layer: 1, n_embd: 32, n_head: 2, context: 32, batch: 8, lr: 0.01 },
};

const server = await serve(join(here, ".."));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: CHROMIUM_FLAGS,
});
const out = { chromium: browser.version(), train: {}, bench: [] };
try {
  const page = await browser.newPage();
  await page.goto(server.url);
  await page.waitForSelector("body[data-ready=true]", { timeout: 60_000 });
  out.adapter = await page.textContent("#gpu-status");
  console.log(out.adapter);
  for (const [name, config] of Object.entries(CONFIGS)) {
    const r = await page.evaluate(async (config) => {
      const { wasm, engine } = window.wgDemo;
      const text = await (await fetch("passage.txt")).text();
      const t = new wasm.Trainer(engine, text, JSON.stringify(config));
      const calls = [];
      for (let i = 0; i <= 3; i++) calls.push(JSON.parse(await t.train_steps(i === 0 ? 1 : 10)));
      const info = JSON.parse(t.info());
      t.free();
      return { info, calls };
    }, config);
    const timed = r.calls.slice(1);
    const tokens = timed.reduce((a, c) => a + c.tokens, 0);
    const ms = timed.reduce((a, c) => a + c.ms, 0);
    out.train[name] = { ...r, tokens_per_s: tokens / (ms / 1000), ms_per_step: ms / (10 * timed.length) };
    console.log(
      `train ${name}: ${JSON.stringify(r.info.config)} ${r.info.params} params: ` +
        `${out.train[name].tokens_per_s.toFixed(0)} tokens/s, ${out.train[name].ms_per_step.toFixed(1)} ms/step ` +
        `(warm-up call ${r.calls[0].ms.toFixed(0)} ms)`,
    );
  }
  const names = await page.evaluate(() => JSON.parse(window.wgDemo.wasm.Engine.bench_names()));
  for (let i = 0; i < names.length; i++) {
    const b = JSON.parse(await page.evaluate((i) => window.wgDemo.engine.run_bench(i), i));
    out.bench.push(b);
    const rate = b.gflops != null ? `${b.gflops.toFixed(2)} GFLOP/s` : b.gbps != null ? `${b.gbps.toFixed(2)} GB/s` : "";
    console.log(`${b.name.padEnd(34)} ${b.shape.padEnd(40)} ${b.ms.toFixed(3).padStart(9)} ms  ${rate} ${b.note}`);
  }
} finally {
  await browser.close();
  await server.close();
}
const target = join(here, "..", "..", "target");
await mkdir(target, { recursive: true });
await writeFile(join(target, "web-measure.json"), JSON.stringify(out, null, 2));
