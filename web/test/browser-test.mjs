// Browser test of the demo page: headless Chromium with WebGPU on SwiftShader
// (flags documented in DEVELOPERS.md). Checks the no-WebGPU explanation, that
// every shader compiles with Chromium's WGSL compiler, the kernel checks, training (the loss falls), generation, the
// encoder-decoder's Translate tab (loss falls, held-out accuracy shown, a typed date translated, a bad one explained),
// the In-context learning tab (the loss falls, accuracy against K shown with chance and the best possible), the model's
// download (checkpoint files that load back into the page to the same logits and greedy text, and natively with
// `wgformer generate` when a native build is there), loading a Hugging Face GPT-2-layout checkpoint (its logits against
// the independent JAX fixture; GPT-2's vocab.json + merges.txt encoding as independent encoders do; bad files named),
// a Llama-layout model training (finite, falling loss), the console logger, the error paths
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
import { gpt2BpeFiles, jaxGptFiles } from "./checkpoint-files.mjs";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";

const here = dirname(fileURLToPath(import.meta.url));
const webDir = join(here, "..");
const repoDir = join(here, "..", "..");
const targetDir = join(here, "..", "..", "target");
// Parts to leave out while working on another (comma list of: shaders, checks,
// translate, icl, bench); the full test runs them all.
const SKIP = new Set((process.env.WGFORMER_WEB_SKIP || "").split(",").filter(Boolean));
// Steps the Llama-layout model trains.
const LLAMA_STEPS = Number(process.env.WGFORMER_WEB_LLAMA_STEPS || 10);
// Every console line of the page (the logger's check reads them).
const consoleLines = [];


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
    consoleLines.push({ type: m.type(), text: m.text() });
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
  await page.evaluate(() => window.wgDemo.trainLoop); // the step in flight ends
  return page.evaluate(() => window.wgDemo.losses.slice());
}

// Greedy text of the model the Generate tab's selector picks.
async function greedyText(page, model, n) {
  await page.click('[data-tab="generate"]');
  await page.selectOption("#gen-model", model);
  await page.fill("#temperature", "0");
  await page.fill("#max-tokens", String(n));
  await page.click("#generate");
  await page.waitForSelector("#gen-output[data-done=true]", { timeout: 120_000 });
  return page.textContent("#gen-output");
}

// Chooses `files` ([{name, mimeType, buffer}]) in the Generate tab and loads
// them; resolves to the loaded model's info, or the error panel's content.
async function loadFiles(page, files) {
  await page.click('[data-tab="generate"]');
  await page.setInputFiles("#load-files", files);
  await page.click("#load");
  await page.waitForSelector("#loaded-info[data-state=ready], #loaded-info[data-state=failed]", { timeout: 60_000 });
  if ((await page.getAttribute("#loaded-info", "data-state")) === "failed") {
    const e = await errorPanel(page);
    await page.click("#error-dismiss");
    return { error: e };
  }
  return { info: await page.evaluate(() => JSON.parse(window.wgDemo.loaded.info())) };
}

// The largest |a - b| over two logits arrays, relative to the largest |b|.
function relErr(a, b) {
  let diff = 0;
  let scale = 1e-8;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return a.length === b.length ? diff / scale : Infinity;
}

// Download, load back, Hugging Face files, bad files, the Llama.
async function checkpointFiles(page) {
  const figures = {};
  // The trained GPT's download: config.json, model.safetensors, char_tokenizer.json.
  await page.click('[data-tab="train"]');
  await page.click("#download");
  await page.waitForSelector("#download-files:not([hidden])", { timeout: 60_000 });
  const downloaded = await page.evaluate(() => window.wgDemo.downloads.map((f) => ({ name: f.name, bytes: Array.from(f.bytes) })));
  const names = downloaded.map((f) => f.name).join(",");
  const links = await page.$$eval("#download-links a", (as) => as.map((a) => a.download).join(","));
  check(names === "char_tokenizer.json,config.json,model.safetensors" && links === names, "download offers the checkpoint files", names);
  const config = JSON.parse(Buffer.from(downloaded.find((f) => f.name === "config.json").bytes).toString("utf8"));
  check(config.model_type === "gpt2" && config.wgformer_format === 1, "downloaded config.json is wgformer's GPT-2 config", JSON.stringify(config).slice(0, 120));
  const asFiles = (list) => list.map((f) => ({ name: f.name, mimeType: "application/octet-stream", buffer: Buffer.from(f.bytes) }));
  const saveDir = join(targetDir, "web-download");
  await mkdir(saveDir, { recursive: true });
  for (const f of downloaded) await writeFile(join(saveDir, f.name), Buffer.from(f.bytes));

  // Loaded back into the page: the same logits and greedy text.
  const loaded = await loadFiles(page, asFiles(downloaded));
  check(loaded.info?.model_type === "gpt2" && loaded.info?.tokenizer === "char", "downloaded files load back into the page", JSON.stringify(loaded.info ?? loaded.error));
  const prompt = await page.inputValue("#prompt");
  const same = await page.evaluate(async (p) => {
    const s = window.wgDemo;
    const a = JSON.parse(await s.trainer.logits(p));
    const b = JSON.parse(await s.loaded.logits(s.loaded.encode(p)));
    let diff = 0;
    for (let i = 0; i < a.data.length; i++) diff = Math.max(diff, Math.abs(a.data[i] - b.data[i]));
    return { diff, n: a.data.length, m: b.data.length };
  }, prompt);
  check(same.n === same.m && same.n > 0 && same.diff === 0, "loaded model's logits equal the trained model's", `max |diff| ${same.diff} over ${same.n}`);
  const trainedText = await greedyText(page, "trained", 24);
  const loadedText = await greedyText(page, "loaded", 24);
  check(trainedText === loadedText && trainedText.length === prompt.length + 24, "loaded model's greedy text equals the trained model's", JSON.stringify(loadedText));
  figures.greedy = loadedText;

  // Natively: `wgformer generate` runs on the downloaded files (when built).
  const exe = ["release", "debug"].map((p) => join(targetDir, p, "wgformer")).find((p) => existsSync(p));
  if (exe) {
    const native = await new Promise((ok) =>
      execFile(exe, ["generate", "--checkpoint", saveDir, "--prompt", prompt, "--max-tokens", "24", "--temperature", "0"], { timeout: 300_000, cwd: targetDir }, (err, stdout, stderr) =>
        ok({ err, stdout, stderr }),
      ),
    );
    check(!native.err, `\`wgformer generate\` loads the downloaded files natively (${exe})`, native.err ? native.stderr.slice(-400) : JSON.stringify(native.stdout.trim()));
    figures.native_greedy = native.stdout.trim();
    if (!native.err) console.log(`     native greedy text ${native.stdout.trim() === loadedText ? "equals" : "differs from (another adapter's rounding)"} the page's`);
  } else {
    console.log("     (no native build in target/: `wgformer generate` on the download not run)");
  }

  // A Hugging Face GPT-2-layout checkpoint: the JAX fixture's logits.
  const jax = await jaxGptFiles(repoDir);
  const hf = await loadFiles(page, jax.files);
  check(hf.info?.model_type === "gpt2" && hf.info?.tied_lm_head === true, "Hugging Face GPT-2 checkpoint loads (tied lm_head)", JSON.stringify(hf.info ?? hf.error));
  let worst = 0;
  for (let r = 0; r < jax.ids.length; r++) {
    const ours = await page.evaluate(async (ids) => JSON.parse(await window.wgDemo.loaded.logits(JSON.stringify(ids))).data, jax.ids[r]);
    worst = Math.max(worst, relErr(ours, jax.logits[r]));
  }
  check(worst < 1e-4, "its logits match the independent JAX reference", `worst relative error ${worst.toExponential(2)}`);
  figures.jax_rel_err = worst;

  // GPT-2's vocab.json + merges.txt: the same ids as independent encoders; generation streams.
  const bpe = await gpt2BpeFiles(repoDir);
  const gpt2 = await loadFiles(page, bpe.files);
  check(gpt2.info?.tokenizer === "bpe" && gpt2.info?.vocab_size === 50257, "GPT-2-layout checkpoint with vocab.json + merges.txt loads", JSON.stringify(gpt2.info ?? gpt2.error));
  // The reference encoders know no special tokens; wgformer (like Hugging Face)
  // reads "<|endoftext|>" in text as the special token, so those cases differ by design.
  const plain = bpe.cases.filter((c) => !c.text.includes("<|endoftext|>"));
  const encoded = await page.evaluate((texts) => texts.map((t) => JSON.parse(window.wgDemo.loaded.encode(t))), plain.map((c) => c.text));
  const wrong = plain.filter((c, i) => JSON.stringify(c.ids) !== JSON.stringify(encoded[i]));
  check(wrong.length === 0 && plain.length >= 20, `the page encodes ${plain.length} texts as GPT-2's reference encoders do`, wrong.map((c) => JSON.stringify(c.text)).join(", "));
  await page.fill("#prompt", "Hello");
  const bpeText = await greedyText(page, "loaded", 5);
  check(bpeText.startsWith("Hello") && bpeText.length > 5, "generation from the GPT-2 BPE checkpoint streams text", JSON.stringify(bpeText));
  await page.fill("#prompt", prompt);

  // Wrong and missing files are named in the page.
  const without = (name) => jax.files.filter((f) => f.name !== name);
  let e = (await loadFiles(page, without("config.json"))).error;
  check(e?.kind === "NotFound" && e.message.includes("config.json"), "a missing config.json is named", e?.message);
  e = (await loadFiles(page, without("model.safetensors"))).error;
  check(e?.kind === "NotFound" && e.message.includes("model.safetensors"), "a missing model.safetensors is named", e?.message);
  e = (await loadFiles(page, [...without("char_tokenizer.json"), bpe.files[2]])).error;
  check(e?.kind === "InvalidInput" && e.message.includes("merges.txt"), "vocab.json without merges.txt is named", e?.message);
  e = (await loadFiles(page, [...without("char_tokenizer.json"), bpe.files[2], bpe.files[3]])).error;
  check(e?.kind === "Incompatible" && e.message.includes("50257"), "a tokenizer larger than the model's vocabulary is refused", e?.message);
  const bert = [...without("config.json"), { name: "config.json", mimeType: "application/json", buffer: Buffer.from('{"model_type": "bert"}') }];
  e = (await loadFiles(page, bert)).error;
  check(e?.kind === "Incompatible" && e.message.includes("bert"), "a checkpoint of another model type is refused by name", e?.message);

  // A Llama-layout model (grouped-query attention) trains with a finite, falling loss, generates, downloads.
  await page.click('[data-tab="train"]');
  await page.selectOption("#cfg-arch", "llama");
  await page.fill("#cfg-n_head", "2");
  await page.fill("#cfg-n_kv_head", "1");
  const t0 = performance.now();
  await page.evaluate(() => (window.wgDemo.stepsPerCall = 1)); // a loss per step
  const llama = await trainUntil(page, LLAMA_STEPS, 240_000);
  const info = await page.evaluate(() => JSON.parse(window.wgDemo.trainer.info()));
  const lf = llama[0];
  const ll = llama[llama.length - 1];
  check(
    (await page.isHidden("#error")) && info.model_type === "llama" && info.model_config.num_key_value_heads === 1,
    "a Llama-layout model (2 query heads, 1 key/value head) builds and trains",
    (await page.textContent("#model-info")) +
      ((await page.isHidden("#error")) ? "" : ` (error shown: ${JSON.stringify(await errorPanel(page))})`),
  );
  check(
    llama.every((p) => Number.isFinite(p.loss)) && ll.loss < lf.loss,
    "Llama loss is finite and falls",
    `${lf.loss.toFixed(3)} at step ${lf.step} -> ${ll.loss.toFixed(3)} at step ${ll.step}`,
  );
  figures.llama = { losses: llama, info, seconds: (performance.now() - t0) / 1000 };
  const llamaText = await greedyText(page, "trained", 12);
  check(llamaText.length === prompt.length + 12, "the Llama generates", JSON.stringify(llamaText));
  await page.click('[data-tab="train"]');
  await page.click("#download");
  await page.waitForSelector("#download-files:not([hidden])", { timeout: 60_000 });
  const llamaFiles = await page.evaluate(() => window.wgDemo.downloads.map((f) => ({ name: f.name, bytes: Array.from(f.bytes) })));
  const back = await loadFiles(page, asFiles(llamaFiles));
  const llamaBack = await greedyText(page, "loaded", 12);
  check(back.info?.model_type === "llama" && llamaBack === llamaText, "the Llama's download loads back to the same greedy text", JSON.stringify(llamaBack));
  await page.click('[data-tab="train"]');
  await page.selectOption("#cfg-arch", "gpt");
  await setModel(page, TEST_MODEL);
  return figures;
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
      if (!SKIP.has("shaders")) {
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
      }

      // The logger: the crate's `log` records reach the console.
      const logged = consoleLines.find((l) => /\[INFO wgformer[^\]]*\] WebGPU device on adapter/.test(l.text));
      check(logged !== undefined && logged.type === "info", "the crate's log line reaches the browser console", logged?.text);

      // 3. Kernel checks against the CPU reference, in the browser.
      t0 = performance.now();
      if (!SKIP.has("checks")) {
      await page.click('[data-tab="kernels"]');
      await page.click("#run-checks");
      // Minutes on SwiftShader when the machine is loaded.
      await page.waitForSelector("#checks-summary[data-failed]", { timeout: 600_000 });
      const checks = await page.evaluate(() => window.wgDemo.checks);
      const names = await page.evaluate(() => JSON.parse(window.wgDemo.wasm.Engine.check_names()));
      check(checks.length === names.length && names.length >= 10, `${checks.length} kernel checks ran`);
      for (const c of checks) check(c.passed, `kernel check ${c.name}`, c.passed ? `worst ${c.worst_ratio?.toFixed(3)}` : c.detail);
      figures.checks = checks;
      time("kernel checks", t0);
      }

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

      // 5b. The trained model downloads as checkpoint files that load back into
      // the page to the same logits and greedy text (and natively).
      t0 = performance.now();
      figures.files = await checkpointFiles(page);
      time("download, load, checkpoints", t0);

      // 6. Translate: the encoder-decoder trains (the loss falls), pausing
      // evaluates it on held-out dates, a typed date is translated and a bad
      // one is explained in place.
      t0 = performance.now();
      if (!SKIP.has("translate")) {
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
      }

      // 7. In-context learning: the GPT trains on fresh mappings (the loss falls),
      // pausing evaluates it, and the chart and table show its accuracy against
      // the number of examples K with chance and the best possible.
      t0 = performance.now();
      if (!SKIP.has("icl")) {
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
      }

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
      if (!SKIP.has("bench")) {
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
      }

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
