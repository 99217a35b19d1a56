// Browser test of the demo page: headless Chromium with WebGPU on SwiftShader
// (flags documented in DEVELOPERS.md). Checks the no-WebGPU explanation, that
// every shader compiles with Chromium's WGSL compiler, the kernel checks, training (the loss falls), generation, the
// encoder-decoder's Translate tab (loss falls, held-out accuracy shown, a typed date translated, a bad one explained),
// the In-context learning tab (the loss falls, accuracy against K shown with chance and the best possible), the error paths
// (a tensor over the device limit, a lost device) and the benchmark; writes target/web-test.png,
// target/web-test-translate.png and target/web-test-icl.png (screenshots) and target/web-test.json (measured figures).
// Run through web/test/run.sh, which builds the page first.
import { chromium } from "playwright-core";
import { mkdir, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { serve } from "./server.mjs";
import { CHROMIUM_FLAGS } from "./flags.mjs";
import { compileInBrowser, loadShaders } from "./shaders-in-browser.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const webDir = join(here, "..");
const targetDir = join(here, "..", "..", "target");


// Training steps before the loss is compared with the first report, and the
// model the test trains: smaller than the page's default, because SwiftShader
// on a shared 2-core machine manages a few hundred tokens/s.
const TRAIN_STEPS = Number(process.env.WGFORMER_WEB_TRAIN_STEPS || 40);
const TEST_MODEL = { n_layer: 1, n_embd: 32, n_head: 2, context: 32, batch: 8, lr: 0.01 };
// Steps the Translate tab's encoder-decoder (the page's default model) trains.
const TRANSLATE_STEPS = Number(process.env.WGFORMER_WEB_TRANSLATE_STEPS || 40);
// Steps the In-context learning tab's GPT (the page's default model) trains.
const ICL_STEPS = Number(process.env.WGFORMER_WEB_ICL_STEPS || 40);

let failures = 0;
function check(ok, what, detail = "") {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}${detail ? ": " + detail : ""}`);
  if (!ok) failures += 1;
}

function time(label, t0) {
  console.log(`     (${label}: ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
}

async function withPage(browser, url, fn, init) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 1400 } });
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  page.on("console", (m) => {
    // First line only: the page logs the errors it shows, with wasm stack traces.
    if (m.type() === "error" || m.type() === "warning") console.log(`     [console.${m.type()}] ${m.text().split("\n")[0]}`);
  });
  page.on("pageerror", (e) => console.log(`     [pageerror] ${e.message}`));
  try {
    await page.goto(url);
    return await fn(page);
  } finally {
    await context.close();
  }
}

async function errorPanel(page, timeout = 60_000) {
  await page.waitForSelector("#error:not([hidden])", { timeout });
  return page.evaluate(() => ({
    kind: document.getElementById("error").dataset.kind,
    message: document.getElementById("error-message").textContent,
  }));
}

async function setModel(page, config) {
  for (const [k, v] of Object.entries(config)) await page.fill(`#cfg-${k}`, String(v));
}

async function trainUntil(page, steps, timeout) {
  await page.click('[data-tab="train"]');
  await page.click("#train");
  await page.waitForFunction(
    (n) => {
      const l = window.wgDemo.losses;
      return (l.length && l[l.length - 1].step >= n) || !document.getElementById("error").hidden;
    },
    steps,
    { timeout, polling: 200 },
  );
  await page.click("#train"); // pause
  await page.waitForFunction(() => !window.wgDemo.training && document.getElementById("train").textContent !== "Pause");
  return page.evaluate(() => window.wgDemo.losses.slice());
}

async function main() {
  const server = await serve(webDir);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_FLAGS,
  });
  const figures = { chromium: browser.version() };
  try {
    // 1. A browser without WebGPU gets the explanation, not a blank page.
    await withPage(
      browser,
      server.url,
      async (page) => {
        await page.waitForSelector("#no-webgpu:not([hidden])", { timeout: 20_000 });
        const text = await page.textContent("#no-webgpu");
        check(text.includes("chrome://flags/#enable-unsafe-webgpu"), "no-WebGPU message explains what to enable");
        check(await page.isHidden("#app"), "no-WebGPU: the app stays hidden");
      },
      () => {
        delete Navigator.prototype.gpu;
      },
    );

    await withPage(browser, server.url, async (page) => {
      let t0 = performance.now();
      await page.waitForSelector("body[data-ready=true]", { timeout: 60_000 });
      const status = await page.textContent("#gpu-status");
      check(status.startsWith("WebGPU adapter:"), "adapter shown", status);
      figures.adapter = status;
      time("page ready", t0);

      // 2. Every shader compiles with the browser's WGSL compiler (not only naga).
      t0 = performance.now();
      const pipelines = process.env.WGFORMER_WEB_PIPELINES === "1";
      const compiled = await compileInBrowser(page, await loadShaders(join(here, "..", "..")), pipelines);
      for (const r of compiled.filter((r) => !r.ok)) check(false, `${r.name}::${r.entry} compiles in Chromium`, r.messages.join("\n"));
      const skipped = compiled.filter((r) => r.skipped).map((r) => `${r.name} (${r.skipped})`);
      check(
        compiled.length >= 10 && compiled.every((r) => r.ok),
        `${compiled.filter((r) => !r.skipped).length} shader ${pipelines ? "entry points" : "modules"} compile in Chromium`,
        skipped.length ? `skipped: ${skipped.join(", ")}` : "",
      );
      time("shader compilation", t0);

      // 3. Kernel checks against the CPU reference, in the browser.
      t0 = performance.now();
      await page.click('[data-tab="kernels"]');
      await page.click("#run-checks");
      await page.waitForSelector("#checks-summary[data-failed]", { timeout: 180_000 });
      const checks = await page.evaluate(() => window.wgDemo.checks);
      const names = await page.evaluate(() => JSON.parse(window.wgDemo.wasm.Engine.check_names()));
      check(checks.length === names.length && names.length >= 10, `${checks.length} kernel checks ran`);
      for (const c of checks) check(c.passed, `kernel check ${c.name}`, c.passed ? `worst ${c.worst_ratio?.toFixed(3)}` : c.detail);
      figures.checks = checks;
      time("kernel checks", t0);

      // 4. Training: the loss falls.
      t0 = performance.now();
      await page.click('[data-tab="train"]');
      await setModel(page, TEST_MODEL);
      const losses = await trainUntil(page, TRAIN_STEPS, 240_000);
      const first = losses[0];
      const last = losses[losses.length - 1];
      check(await page.isHidden("#error"), "training ran without an error");
      check(
        losses.length >= 2 && last.loss < first.loss - 0.5,
        "training loss fell",
        `${first.loss.toFixed(3)} at step ${first.step} -> ${last.loss.toFixed(3)} at step ${last.step}`,
      );
      figures.train = {
        losses,
        tokens_per_s: Number((await page.textContent("#stat-speed")).replace(/[^0-9.]/g, "")),
        model: await page.textContent("#model-info"),
        info: await page.evaluate(() => JSON.parse(window.wgDemo.trainer.info())),
      };
      time(`training ${last.step} steps`, t0);
      await page.screenshot({ path: join(targetDir, "web-test.png"), fullPage: true });

      // 5. Generation streams text.
      t0 = performance.now();
      await page.click('[data-tab="generate"]');
      await page.fill("#max-tokens", "40");
      await page.click("#generate");
      await page.waitForSelector("#gen-output[data-done=true]", { timeout: 120_000 });
      const out = await page.textContent("#gen-output");
      const prompt = await page.inputValue("#prompt");
      check(out.startsWith(prompt) && out.length === prompt.length + 40, "generated 40 characters after the prompt", JSON.stringify(out));
      figures.generate = { text: out, chars_per_s: Number(await page.textContent("#gen-speed")) };
      time("generation", t0);

      // 6. Translate: the encoder-decoder trains (the loss falls), pausing
      // evaluates it on held-out dates, a typed date is translated and a bad
      // one is explained in place.
      t0 = performance.now();
      await page.click('[data-tab="translate"]');
      await page.click("#tr-train");
      await page.waitForFunction(
        (n) => {
          const l = window.wgDemo.trLosses;
          return (l.length && l[l.length - 1].step >= n) || !document.getElementById("error").hidden;
        },
        TRANSLATE_STEPS,
        { timeout: 240_000, polling: 200 },
      );
      const trainedAt = performance.now();
      await page.click("#tr-train"); // pause, which evaluates
      await page.waitForFunction(
        () => window.wgDemo.trEvals.length > 0 || !document.getElementById("error").hidden,
        null,
        { timeout: 120_000, polling: 200 },
      );
      const tr = await page.evaluate(() => ({
        losses: window.wgDemo.trLosses.slice(),
        evals: window.wgDemo.trEvals.slice(),
        examples: document.querySelectorAll("#tr-examples tbody tr").length,
        accuracy: document.getElementById("tr-accuracy").textContent,
        speed: document.getElementById("tr-speed").textContent,
        info: document.getElementById("tr-info").textContent,
      }));
      check(await page.isHidden("#error"), "translator trained without an error");
      const trFirst = tr.losses[0];
      const trLast = tr.losses[tr.losses.length - 1];
      check(
        tr.losses.length >= 2 && trLast.loss < trFirst.loss - 1.0,
        "translator loss fell",
        `${trFirst.loss.toFixed(3)} at step ${trFirst.step} -> ${trLast.loss.toFixed(3)} at step ${trLast.step}`,
      );
      check(
        tr.evals.length >= 1 && tr.evals[tr.evals.length - 1].total === 50 && tr.examples > 0,
        "held-out accuracy shown with example rows",
        tr.accuracy,
      );
      const evalDone = performance.now();
      await page.fill("#tr-input", "1987-06-05");
      await page.click("#tr-translate");
      await page.waitForSelector("#tr-output[data-state=ok]", { timeout: 60_000 });
      const translation = await page.textContent("#tr-output");
      check(translation.startsWith("1987-06-05 → ") && translation.includes("5 June 1987"), "a typed date is translated", translation);
      const translateMs = performance.now() - evalDone;
      await page.fill("#tr-input", "2024-13-45");
      await page.click("#tr-translate");
      await page.waitForSelector("#tr-output[data-state=error]", { timeout: 20_000 });
      const bad = await page.textContent("#tr-output");
      check(bad.includes("month 13") && (await page.isHidden("#error")), "an impossible date is explained in place", bad);
      await page.screenshot({ path: join(targetDir, "web-test-translate.png"), fullPage: true });
      figures.translate = {
        losses: tr.losses,
        evals: tr.evals,
        model: tr.info,
        tokens_per_s: Number(tr.speed.replace(/[^0-9.]/g, "")),
        train_seconds: (trainedAt - t0) / 1000,
        eval_seconds: (evalDone - trainedAt) / 1000,
        translate_ms: translateMs,
        translation,
        bad_input: bad,
      };
      time(`translator ${trLast.step} steps`, t0);

      // 7. In-context learning: the GPT trains on fresh mappings (the loss falls),
      // pausing evaluates it, and the chart and table show its accuracy against
      // the number of examples K with chance and the best possible.
      t0 = performance.now();
      await page.click('[data-tab="icl"]');
      await page.click("#icl-train");
      await page.waitForFunction(
        (n) => {
          const l = window.wgDemo.iclLosses;
          return (l.length && l[l.length - 1].step >= n) || !document.getElementById("error").hidden;
        },
        ICL_STEPS,
        { timeout: 240_000, polling: 200 },
      );
      const iclTrainedAt = performance.now();
      await page.click("#icl-train"); // pause, which evaluates
      await page.waitForFunction(
        () => window.wgDemo.iclEvals.length > 0 || !document.getElementById("error").hidden,
        null,
        { timeout: 120_000, polling: 200 },
      );
      const icl = await page.evaluate(() => ({
        losses: window.wgDemo.iclLosses.slice(),
        evals: window.wgDemo.iclEvals.slice(),
        rows: document.querySelectorAll("#icl-table tbody tr").length,
        plotted: document.getElementById("icl-curve").dataset.points,
        info: document.getElementById("icl-info").textContent,
        speed: document.getElementById("icl-speed").textContent,
      }));
      check(await page.isHidden("#error"), "in-context learner trained without an error");
      const iclFirst = icl.losses[0];
      const iclLast = icl.losses[icl.losses.length - 1];
      check(
        icl.losses.length >= 2 && iclLast.loss < iclFirst.loss - 0.5,
        "in-context learner's loss fell",
        `${iclFirst.loss.toFixed(3)} at step ${iclFirst.step} -> ${iclLast.loss.toFixed(3)} at step ${iclLast.step}`,
      );
      const curve = icl.evals.length ? icl.evals[icl.evals.length - 1].points : [];
      const ks = curve.map((p) => p.examples).join(",");
      const formulas = curve.every(
        (p) => p.chance === 0.25 && Math.abs(p.best - (1 - 0.75 ** (p.examples + 1))) < 1e-12 && p.accuracy >= 0 && p.accuracy <= 1,
      );
      check(
        ks === "0,1,2,4,8" && formulas && icl.rows === 5 && icl.plotted === "5",
        "accuracy against K plotted and tabled with chance and the best possible",
        curve.map((p) => `K=${p.examples} ${(100 * p.accuracy).toFixed(0)}%`).join(", "),
      );
      await page.screenshot({ path: join(targetDir, "web-test-icl.png"), fullPage: true });
      figures.icl = {
        losses: icl.losses,
        curve,
        model: icl.info,
        answers_per_s: Number(icl.speed.replace(/[^0-9.]/g, "")),
        train_seconds: (iclTrainedAt - t0) / 1000,
        eval_seconds: (performance.now() - iclTrainedAt) / 1000,
      };
      time(`in-context learner ${iclLast.step} steps`, t0);

      // 8. A model over the device's limits: a message, then the page goes on.
      await page.click('[data-tab="train"]');
      await page.fill("#cfg-batch", "1000000");
      await page.click("#build");
      const tooLarge = await errorPanel(page);
      check(
        tooLarge.kind === "TooLarge" && tooLarge.message.includes("max_storage_buffer_binding_size"),
        "oversized model refused with the device limit named",
        tooLarge.message,
      );
      await page.click("#error-dismiss");
      await page.fill("#cfg-batch", String(TEST_MODEL.batch));

      // 9. The kernel benchmark (before the device loss: its pipelines are built).
      t0 = performance.now();
      await page.click('[data-tab="kernels"]');
      await page.click("#run-bench");
      await page.waitForSelector("#bench-table[data-done=true]", { timeout: 180_000 });
      figures.bench = await page.evaluate(() => window.wgDemo.bench);
      for (const b of figures.bench) {
        const rate = b.gflops != null ? `${b.gflops.toFixed(2)} GFLOP/s` : b.gbps != null ? `${b.gbps.toFixed(2)} GB/s` : "";
        console.log(`     ${b.name.padEnd(34)} ${b.shape.padEnd(40)} ${b.ms.toFixed(3).padStart(9)} ms  ${rate} ${b.note}`);
      }
      check(figures.bench.length >= 10 && figures.bench.every((b) => b.ms > 0), "benchmark ran");
      time("benchmark", t0);

      // 10. A lost device: a message, a restart, and the engine works again. (Not
      // a full retrain: a new device rebuilds every pipeline, a minute on SwiftShader.)
      t0 = performance.now();
      await page.evaluate(() => window.wgDemo.engine.lose_device());
      await page.click('[data-tab="train"]');
      await page.click("#train");
      const lost = await errorPanel(page);
      check(lost.kind === "DeviceLost", "device loss reported", lost.message);
      check(await page.isVisible("#error-restart"), "device loss offers a restart");
      await page.click("#error-restart");
      await page.waitForFunction(() => document.getElementById("gpu-status").dataset.state === "ready" && window.wgDemo.engine);
      const copy = JSON.parse(await page.evaluate(() => window.wgDemo.engine.run_check(0)));
      check(copy.passed, "after a restart the new device runs a kernel check", copy.name);
      await page.click("#build");
      await page.waitForFunction(() => document.getElementById("model-info").textContent !== "not built");
      check(await page.isHidden("#error"), "after a restart a new model builds");
      time("device loss and recovery", t0);
    });
  } finally {
    await browser.close();
    await server.close();
  }
  await mkdir(targetDir, { recursive: true });
  await writeFile(join(targetDir, "web-test.json"), JSON.stringify(figures, null, 2));
  console.log(`wrote target/web-test.png and target/web-test.json`);
  if (failures) {
    console.log(`${failures} browser check(s) failed`);
    process.exit(1);
  }
  console.log("browser test passed");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
