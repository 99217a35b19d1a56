// The wgformer demo page: WebGPU detection, then the Train / Generate /
// Translate / In-context learning / Kernels tabs over the wasm API (pkg/wgformer.js, built by
// build.sh); the Train tab downloads the model's checkpoint files, the Generate
// tab also loads a checkpoint from files the user chooses. Long work runs as awaited calls between animation frames, so the
// page stays responsive; every failure lands in one error panel with a way on.

const $ = (id) => document.getElementById(id);

// Shared state; exposed as window.wgDemo for the browser test and for debugging.
const state = {
  wasm: null, // the pkg module
  engine: null,
  trainer: null,
  trainerText: null, // text + config the trainer was built from
  training: false,
  trainLoop: null, // promise of the running loop
  stepsPerCall: 2,
  losses: [], // {step, loss}
  generating: false,
  stopGeneration: false,
  loaded: null, // a model built from chosen checkpoint files (wasm Loaded)
  downloads: [], // [{name, bytes}] of the last download

  checks: [],
  bench: [],
  // Translate tab
  translator: null,
  trTraining: false,
  trLoop: null,
  trStepsPerCall: 2,
  trLosses: [], // {step, loss}
  trEvals: [], // {step, accuracy, correct, total}
  trLastEval: null, // the last evaluate() result
  // In-context learning tab
  icl: null,
  iclConfig: null, // the config the model was built from
  iclTraining: false,
  iclLoop: null,
  iclStepsPerCall: 2,
  iclLosses: [], // {step, loss}
  iclEvals: [], // {step, points}
};
window.wgDemo = state;

// ---------------------------------------------------------------- errors

const hints = {
  DeviceLost:
    "The GPU device was lost (a driver reset, or the browser reclaimed the GPU). The model lived on the GPU and is gone; restart the engine, then build and train again.",
  OutOfMemory:
    "The GPU ran out of memory. Build a smaller model (lower the batch, context or width) and try again.",
  TooLarge:
    "The model would exceed what this GPU allows in one binding, or the demo's memory budget (the message says which). Lower the batch, the context or the width and build the model again.",
  InvalidInput: "Change the input named above and try again.",
  NotFound:
    "Choose the checkpoint's files together: config.json, model.safetensors and its tokenizer (vocab.json + merges.txt, tokenizer.json or char_tokenizer.json).",
  Corrupt: "The file named above is damaged: download or save the checkpoint again.",
  Incompatible: "The files do not belong together or are not a GPT-2 or Llama checkpoint: choose one checkpoint's own files.",
  NoAdapter:
    "The browser has WebGPU but offered no adapter: the GPU may be blocklisted or hardware acceleration switched off.",
  RuntimeError:
    "The WebAssembly module stopped on an internal error (details in the console). Reload the page to start over.",
};

function showError(err) {
  const name = (err && err.name) || "Error";
  const message = (err && err.message) || String(err);
  if (name === "Busy") return; // a click during a running call: nothing lost
  console.error(err);
  const lost = name === "DeviceLost" || (state.engine && safeIsLost());
  const kind = lost ? "DeviceLost" : name;
  $("error-title").textContent = {
    DeviceLost: "GPU device lost",
    OutOfMemory: "Out of GPU memory",
    TooLarge: "Too large for this GPU",
    Unsupported: "Not supported by this GPU",
    GpuError: "GPU error",
    NoAdapter: "No GPU adapter",
    NotFound: "Not found",
    Corrupt: "Damaged file",
    Incompatible: "Incompatible file",
    IoError: "File error",
    InvalidInput: "Invalid input",
    RuntimeError: "Internal error",
  }[kind] || "Error";
  $("error-message").textContent = message;
  $("error-hint").textContent = hints[kind] || "";
  $("error-restart").hidden = kind !== "DeviceLost";
  $("error-reload").hidden = kind !== "RuntimeError";
  $("error").dataset.kind = kind;
  $("error").hidden = false;
  if (kind === "DeviceLost" || kind === "RuntimeError") {
    state.training = false;
    state.trTraining = false;
    state.iclTraining = false;
    state.stopGeneration = true;
    dropTrainer();
    dropLoaded();
    updateTrainButton();
    updateTranslateButton();
    updateIclButton();
    $("model-info").textContent = "not built";
    $("tr-info").textContent = "not built";
    $("icl-info").textContent = "not built";
  }
}

// Frees a wasm object now (its GPU buffers go back to the device) rather than
// whenever the garbage collector gets to it.
function release(obj) {
  try {
    obj?.free();
  } catch {
    // already freed, or the module is gone: nothing left to release
  }
}

function dropTrainer() {
  release(state.trainer);
  state.trainer = null;
  release(state.translator);
  state.translator = null;
  release(state.icl);
  state.icl = null;
  if ($("download")) $("download").disabled = true;
}

// The loaded checkpoint goes only with its device (a new Train-tab model
// leaves it).
function dropLoaded() {
  release(state.loaded);
  state.loaded = null;
  const option = document.querySelector('#gen-model option[value="loaded"]');
  if (option) option.disabled = true;
  if ($("gen-model")) $("gen-model").value = "trained";
  if ($("loaded-info")) $("loaded-info").textContent = "none";
}

function safeIsLost() {
  try {
    return state.engine.is_lost();
  } catch {
    return true; // the module itself is gone
  }
}

function clearError() {
  $("error").hidden = true;
}

window.addEventListener("unhandledrejection", (e) => showError(e.reason));
window.addEventListener("error", (e) => showError(e.error || e.message));

// ---------------------------------------------------------------- start-up

function setStatus(text, kind) {
  const el = $("gpu-status");
  el.textContent = text;
  el.dataset.state = kind;
}

function noWebGpu(reason) {
  setStatus("WebGPU is not available", "missing");
  $("no-webgpu-reason").textContent = reason;
  $("no-webgpu").hidden = false;
}

// What the browser says about its adapter (browsers often leave wgpu's name
// empty for privacy but fill vendor and architecture).
let browserAdapterInfo = "";

async function createEngine() {
  state.engine = await state.wasm.Engine.create();
  const a = JSON.parse(state.engine.adapter());
  const mib = (n) => `${Math.round(n / 1048576)} MiB`;
  const yes = (b) => (b ? "yes" : "no");
  const name = [a.name, a.driver].filter(Boolean).join(" ") || browserAdapterInfo || "(unnamed)";
  setStatus(
    `WebGPU adapter: ${name} · ${a.device_type} · max storage binding ${mib(a.max_storage_buffer_binding_size)} · ` +
      `shader-f16: ${yes(a.shader_f16)} · timestamp-query: ${yes(a.timestamp_query)}`,
    "ready",
  );
  $("adapter-describe").textContent = state.engine.describe();
}

async function main() {
  if (!("gpu" in navigator) || !navigator.gpu) {
    noWebGpu(
      window.isSecureContext
        ? "This browser does not expose navigator.gpu."
        : "This page is not a secure context (it must come from https:// or localhost), so the browser hides WebGPU.",
    );
    return;
  }
  let adapter = null;
  try {
    adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (e) {
    noWebGpu(`Asking for a GPU adapter failed: ${e.message}`);
    return;
  }
  if (!adapter) {
    noWebGpu("navigator.gpu exists but returned no adapter (the GPU may be blocklisted, or hardware acceleration is off).");
    return;
  }
  const info = adapter.info || {};
  browserAdapterInfo = [info.vendor, info.architecture, info.description].filter(Boolean).join(" ");
  try {
    state.wasm = await import("./pkg/wgformer.js");
    await state.wasm.default();
  } catch (e) {
    setStatus("The WebAssembly build is missing", "missing");
    showError(
      Object.assign(new Error(`Loading pkg/wgformer.js failed (${e.message}). Build it with web/build.sh, then reload.`), {
        name: "Error",
      }),
    );
    return;
  }
  try {
    await createEngine();
  } catch (e) {
    setStatus("Opening the GPU failed", "missing");
    showError(e);
    return;
  }
  $("app").hidden = false;
  setupTabs();
  setupTrain();
  setupGenerate();
  setupTranslate();
  setupIcl();
  setupKernels();
  setupErrors();
  document.body.dataset.ready = "true";
}

// ---------------------------------------------------------------- tabs

function setupTabs() {
  for (const b of document.querySelectorAll("[data-tab]")) {
    b.addEventListener("click", () => {
      for (const o of document.querySelectorAll("[data-tab]")) {
        o.setAttribute("aria-selected", String(o === b));
        $(`tab-${o.dataset.tab}`).hidden = o !== b;
      }
    });
  }
}

// Resolves at the next animation frame, or after 50 ms when frames are
// throttled (hidden tab), so training keeps going but yields to the page.
function nextFrame() {
  return new Promise((resolve) => {
    let done = false;
    const go = () => {
      if (!done) {
        done = true;
        resolve();
      }
    };
    requestAnimationFrame(go);
    setTimeout(go, 50);
  });
}

// ---------------------------------------------------------------- train

function readConfig() {
  const num = (id) => Number($(`cfg-${id}`).value);
  const arch = $("cfg-arch").value;
  return {
    arch,
    n_layer: num("n_layer"),
    n_embd: num("n_embd"),
    n_head: num("n_head"),
    n_kv_head: arch === "llama" ? num("n_kv_head") : 0,
    context: num("context"),
    batch: num("batch"),
    lr: num("lr"),
    warmup: 20,
    seed: 1,
  };
}

function wantedModel() {
  return JSON.stringify({ text: $("text").value, config: readConfig() });
}

async function buildModel() {
  await pauseTraining();
  dropTrainer(); // the old model's GPU buffers go first
  const config = readConfig();
  for (const [k, v] of Object.entries(config)) {
    if (k === "arch") continue;
    if (!Number.isFinite(v) || v < 0) {
      throw Object.assign(new Error(`${k} must be a non-negative number`), { name: "InvalidInput" });
    }
  }
  state.trainer = new state.wasm.Trainer(state.engine, $("text").value, JSON.stringify(config));
  state.trainerText = wantedModel();
  state.losses = [];
  const info = JSON.parse(state.trainer.info());
  const arch = info.model_type === "llama" ? "Llama" : "GPT-2";
  $("model-info").textContent = `${arch}, ${info.params.toLocaleString()} parameters, ${info.vocab_size} characters`;
  $("download").disabled = false;
  $("download-files").hidden = true;
  $("stat-step").textContent = "0";
  $("stat-loss").textContent = "–";
  $("stat-speed").textContent = "–";
  drawChart();
}

function updateTrainButton() {
  $("train").textContent = state.training ? "Pause" : state.losses.length ? "Resume" : "Train";
}

async function pauseTraining() {
  state.training = false;
  updateTrainButton();
  if (state.trainLoop) await state.trainLoop;
}

async function runTraining() {
  try {
    while (state.training) {
      const r = JSON.parse(await state.trainer.train_steps(state.stepsPerCall));
      state.losses.push({ step: r.step, loss: r.loss });
      $("stat-step").textContent = String(r.step);
      $("stat-loss").textContent = r.loss.toFixed(3);
      $("stat-speed").textContent = Math.round(r.tokens_per_s).toLocaleString();
      drawChart();
      // Aim at ~150 ms of work per call: enough to amortise the readback,
      // short enough to keep the page responsive.
      const perStep = r.ms / r.steps;
      state.stepsPerCall = Math.max(1, Math.min(50, Math.round(150 / perStep)));
      await nextFrame();
    }
  } catch (e) {
    state.training = false;
    showError(e);
  } finally {
    updateTrainButton();
  }
}

function setupTrain() {
  fetch("passage.txt")
    .then((r) => (r.ok ? r.text() : Promise.reject(new Error(r.statusText))))
    .then((t) => {
      if (!$("text").value) $("text").value = t;
    })
    .catch(() => {
      $("text").value ||= "Paste some text here: the model learns to continue it, one character at a time.\n".repeat(4);
    });
  $("build").addEventListener("click", () => buildModel().catch(showError));
  $("cfg-arch").addEventListener("change", () => {
    $("cfg-n_kv_head").disabled = $("cfg-arch").value !== "llama";
  });
  $("download").addEventListener("click", () => downloadModel().catch(showError));
  $("train").addEventListener("click", async () => {
    if (state.training) {
      await pauseTraining();
      return;
    }
    clearError();
    try {
      if (!state.trainer || state.trainerText !== wantedModel()) await buildModel();
    } catch (e) {
      showError(e);
      return;
    }
    if (state.generating) state.stopGeneration = true;
    await pauseTranslator(); // one model trains at a time
    await pauseIcl();
    state.training = true;
    updateTrainButton();
    state.trainLoop = runTraining();
  });
  drawChart();
}

function drawChart(canvas = $("loss-chart"), pts = state.losses) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  const pad = { l: 48, r: 12, t: 12, b: 28 };
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = getComputedStyle(canvas).getPropertyValue("--chart-bg") || "#fff";
  ctx.fillRect(0, 0, w, h);
  ctx.strokeStyle = "#999";
  ctx.strokeRect(pad.l, pad.t, w - pad.l - pad.r, h - pad.t - pad.b);
  ctx.fillStyle = "#555";
  ctx.font = "12px system-ui, sans-serif";
  if (!pts.length) {
    ctx.fillText("loss per step appears here while training", pad.l + 12, h / 2);
    return;
  }
  const maxStep = Math.max(...pts.map((p) => p.step), 1);
  const losses = pts.map((p) => p.loss);
  const hi = Math.max(...losses);
  const lo = Math.min(0, Math.min(...losses));
  const x = (s) => pad.l + ((w - pad.l - pad.r) * s) / maxStep;
  const y = (l) => pad.t + ((h - pad.t - pad.b) * (hi - l)) / (hi - lo || 1);
  ctx.fillText(hi.toFixed(2), 4, pad.t + 10);
  ctx.fillText(lo.toFixed(2), 4, h - pad.b);
  ctx.fillText("step " + maxStep, w - pad.r - 70, h - 8);
  ctx.strokeStyle = "#2a6fdb";
  ctx.lineWidth = 2;
  ctx.beginPath();
  pts.forEach((p, i) => (i ? ctx.lineTo(x(p.step), y(p.loss)) : ctx.moveTo(x(p.step), y(p.loss))));
  ctx.stroke();
}

// ---------------------------------------------------------------- download

// Offers the trained model's checkpoint files (config.json, model.safetensors,
// char_tokenizer.json, byte for byte what `wgformer train` saves) as links,
// and starts each download.
async function downloadModel() {
  if (!state.trainer) return;
  $("download-files").hidden = true; // until this model's files are ready
  await pauseTraining();
  const files = await state.trainer.download();
  state.downloads = files;
  const links = $("download-links");
  for (const a of links.querySelectorAll("a")) URL.revokeObjectURL(a.href);
  links.textContent = "";
  for (const f of files) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([f.bytes], { type: "application/octet-stream" }));
    a.download = f.name;
    a.textContent = `${f.name} (${(f.bytes.length / 1024).toFixed(1)} KiB)`;
    links.append(a, " ");
    a.click();
  }
  $("download-files").hidden = false;
}

// ---------------------------------------------------------------- load

// Builds a model from checkpoint files: [{name, bytes}] (bytes a Uint8Array).
function loadCheckpoint(files) {
  dropLoaded();
  state.loaded = new state.wasm.Loaded(state.engine, files);
  const info = JSON.parse(state.loaded.info());
  const arch = info.model_type === "llama" ? "Llama" : "GPT-2";
  $("loaded-info").textContent =
    `${arch}, ${info.params.toLocaleString()} parameters, vocabulary ${info.vocab_size}, ` +
    `context ${info.context}, ${info.tokenizer} tokenizer`;
  document.querySelector('#gen-model option[value="loaded"]').disabled = false;
  $("gen-model").value = "loaded";
  return info;
}

// Loads the files chosen in the Generate tab; #loaded-info's data-state says
// how it went (loading, ready, failed).
async function loadChosenFiles() {
  clearError();
  dropLoaded();
  const el = $("loaded-info");
  el.dataset.state = "loading";
  try {
    const chosen = [...$("load-files").files];
    if (!chosen.length) {
      throw Object.assign(new Error("No files chosen: choose the checkpoint's config.json, model.safetensors and tokenizer files"), {
        name: "NotFound",
      });
    }
    const files = await Promise.all(chosen.map(async (f) => ({ name: f.name, bytes: new Uint8Array(await f.arrayBuffer()) })));
    await pauseTraining();
    loadCheckpoint(files);
    el.dataset.state = "ready";
  } catch (e) {
    el.dataset.state = "failed";
    throw e;
  }
}

// ---------------------------------------------------------------- generate

function setupGenerate() {
  $("generate").addEventListener("click", generate);
  $("load").addEventListener("click", () => loadChosenFiles().catch(showError));
  $("stop-generate").addEventListener("click", () => (state.stopGeneration = true));
}

async function generate() {
  clearError();
  if (state.generating) return;
  const out = $("gen-output");
  // Not done from the click on: pausing training can wait for a step in flight.
  out.dataset.done = "false";
  const useLoaded = $("gen-model").value === "loaded" && state.loaded;
  try {
    await pauseTraining();
    if (!useLoaded && !state.trainer) await buildModel();
  } catch (e) {
    showError(e);
    out.dataset.done = "true";
    return;
  }
  const model = useLoaded ? state.loaded : state.trainer;
  const prompt = $("prompt").value;
  out.textContent = prompt;
  state.generating = true;
  state.stopGeneration = false;
  $("generate").disabled = true;
  $("stop-generate").disabled = false;
  const t0 = performance.now();
  let n = 0;
  try {
    model.start_generation(
      prompt,
      Number($("max-tokens").value),
      Number($("temperature").value),
      Number($("top-k").value),
      Number($("seed").value),
    );
    while (!state.stopGeneration) {
      const piece = await model.next_token();
      if (piece === null || piece === undefined) break;
      out.textContent += piece;
      n += 1;
      $("gen-speed").textContent = (n / ((performance.now() - t0) / 1000)).toFixed(1);
      if (n % 4 === 0) await nextFrame();
    }
  } catch (e) {
    showError(e);
  } finally {
    state.generating = false;
    out.dataset.done = "true";
    $("generate").disabled = false;
    $("stop-generate").disabled = true;
  }
}

// ---------------------------------------------------------------- translate

// Held-out dates decoded per evaluation, and how often (in steps) it runs
// while training; it also runs whenever training pauses.
const EVAL_DATES = 50;
const EVAL_EVERY = 50;

function updateTranslateButton() {
  $("tr-train").textContent = state.trTraining ? "Pause" : state.trLosses.length ? "Resume" : "Train";
}

async function pauseTranslator() {
  state.trTraining = false;
  updateTranslateButton();
  if (state.trLoop) await state.trLoop;
}

async function buildTranslator() {
  await pauseTranslator();
  release(state.translator);
  state.translator = null;
  state.translator = new state.wasm.Translator(state.engine, "");
  state.trLosses = [];
  state.trEvals = [];
  state.trLastEval = null;
  const info = JSON.parse(state.translator.info());
  $("tr-info").textContent = `${info.params.toLocaleString()} parameters, ${info.config.n_layers}+${info.config.n_layers} layers, d_model ${info.config.d_model}`;
  $("tr-step").textContent = "0";
  $("tr-loss").textContent = "–";
  $("tr-speed").textContent = "–";
  $("tr-accuracy").textContent = "–";
  $("tr-examples").querySelector("tbody").textContent = "";
  drawChart($("tr-chart"), state.trLosses);
  updateTranslateButton();
}

// Held-out accuracy now, with a few example rows (right ones marked ✓).
async function evaluateTranslator() {
  const r = JSON.parse(await state.translator.evaluate(EVAL_DATES));
  const step = state.trLosses.length ? state.trLosses[state.trLosses.length - 1].step : 0;
  state.trLastEval = r;
  state.trEvals.push({ step, accuracy: r.accuracy, correct: r.correct, total: r.total });
  state.trEvals[state.trEvals.length - 1].char_accuracy = r.char_accuracy;
  $("tr-accuracy").textContent =
    `${(100 * r.accuracy).toFixed(0)}% of dates (${r.correct}/${r.total}), ` +
    `${(100 * r.char_accuracy).toFixed(0)}% of characters, at step ${step}`;
  const body = $("tr-examples").querySelector("tbody");
  body.textContent = "";
  for (const e of r.examples.slice(0, 6)) {
    const tr = document.createElement("tr");
    cell(tr, e.source);
    cell(tr, shown(e.output));
    cell(tr, e.target);
    cell(tr, e.correct ? "✓" : "✗", e.correct ? "pass" : "fail");
    body.appendChild(tr);
  }
  $("tr-examples").dataset.step = String(step);
}

async function runTranslatorTraining() {
  try {
    while (state.trTraining) {
      const r = JSON.parse(await state.translator.train_steps(state.trStepsPerCall));
      const before = state.trLosses.length ? state.trLosses[state.trLosses.length - 1].step : 0;
      state.trLosses.push({ step: r.step, loss: r.loss });
      $("tr-step").textContent = String(r.step);
      $("tr-loss").textContent = r.loss.toFixed(3);
      $("tr-speed").textContent = Math.round(r.tokens_per_s).toLocaleString();
      drawChart($("tr-chart"), state.trLosses);
      const perStep = r.ms / r.steps;
      state.trStepsPerCall = Math.max(1, Math.min(50, Math.round(150 / perStep)));
      if (Math.floor(r.step / EVAL_EVERY) > Math.floor(before / EVAL_EVERY)) await evaluateTranslator();
      await nextFrame();
    }
    if (state.trLosses.length && state.translator) await evaluateTranslator();
  } catch (e) {
    state.trTraining = false;
    showError(e);
  } finally {
    updateTranslateButton();
  }
}

// A model output as text; an untrained model often emits only spaces.
function shown(output) {
  return output.trim() ? output : output ? `(${output.length} spaces)` : "(nothing)";
}

function showTranslation(text, kind) {
  const out = $("tr-output");
  out.textContent = text;
  out.className = kind === "error" ? "message-error" : "";
  out.dataset.state = kind;
}

async function translateTyped() {
  const text = $("tr-input").value.trim();
  let answer;
  try {
    answer = state.wasm.Translator.reference(text);
  } catch (e) {
    // Not a date the task has: say so here rather than asking the model.
    showTranslation(e.message, "error");
    return;
  }
  const resume = state.trTraining;
  try {
    await pauseTranslator();
    if (!state.translator) await buildTranslator();
    const out = await state.translator.translate(text);
    const right = out === answer;
    showTranslation(`${text} → ${shown(out)}  ${right ? "✓" : `✗ (the answer is ${answer})`}`, "ok");
    $("tr-output").dataset.correct = String(right);
  } catch (e) {
    if (e && e.name === "InvalidInput") showTranslation(e.message, "error");
    else showError(e);
  }
  if (resume && state.translator) {
    state.trTraining = true;
    updateTranslateButton();
    state.trLoop = runTranslatorTraining();
  }
}

function setupTranslate() {
  if (!state.wasm.Engine.translate_available()) {
    $("tr-train").disabled = true;
    $("tr-translate").disabled = true;
    showTranslation("This build has no encoder-decoder model.", "error");
    return;
  }
  $("tr-build").addEventListener("click", () => buildTranslator().catch(showError));
  $("tr-train").addEventListener("click", async () => {
    if (state.trTraining) {
      await pauseTranslator();
      return;
    }
    clearError();
    try {
      await pauseTraining(); // one model trains at a time
      await pauseIcl();
      if (!state.translator) await buildTranslator();
    } catch (e) {
      showError(e);
      return;
    }
    state.trTraining = true;
    updateTranslateButton();
    state.trLoop = runTranslatorTraining();
  });
  $("tr-translate").addEventListener("click", translateTyped);
  $("tr-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter") translateTyped();
  });
  drawChart($("tr-chart"), state.trLosses);
}

// ---------------------------------------------------------------- in-context learning

// Held-out sequences per evaluation (one query per K each), and how often (in
// steps) it runs while training; it also runs whenever training pauses.
const ICL_EVAL_SEQUENCES = 200;
const ICL_EVAL_EVERY = 50;

function iclConfig() {
  return { alphabet: Number($("icl-alphabet").value), examples: Number($("icl-examples").value) };
}

function updateIclButton() {
  $("icl-train").textContent = state.iclTraining ? "Pause" : state.iclLosses.length ? "Resume" : "Train";
}

async function pauseIcl() {
  state.iclTraining = false;
  updateIclButton();
  if (state.iclLoop) await state.iclLoop;
}

async function buildIcl() {
  await pauseIcl();
  release(state.icl);
  state.icl = null;
  const config = iclConfig();
  state.icl = new state.wasm.InContext(state.engine, JSON.stringify(config));
  state.iclConfig = JSON.stringify(config);
  state.iclLosses = [];
  state.iclEvals = [];
  const info = JSON.parse(state.icl.info());
  $("icl-info").textContent =
    `${info.params.toLocaleString()} parameters, ${info.config.n_layer} layers × ${info.config.n_head} heads, ` +
    `context ${info.context}, chance ${(100 * info.chance).toFixed(1)}%`;
  $("icl-step").textContent = "0";
  $("icl-loss").textContent = "–";
  $("icl-speed").textContent = "–";
  $("icl-table").querySelector("tbody").textContent = "";
  drawChart($("icl-chart"), state.iclLosses);
  drawCurve();
  updateIclButton();
}

const pct = (x) => `${(100 * x).toFixed(1)}%`;

// Held-out accuracy by number of examples now: the chart and the table.
async function evaluateIcl() {
  const r = JSON.parse(await state.icl.evaluate(ICL_EVAL_SEQUENCES));
  const step = state.iclLosses.length ? state.iclLosses[state.iclLosses.length - 1].step : 0;
  state.iclEvals.push({ step, points: r.points, loss: r.loss });
  const body = $("icl-table").querySelector("tbody");
  body.textContent = "";
  for (const p of r.points) {
    const tr = document.createElement("tr");
    cell(tr, String(p.examples));
    cell(tr, pct(p.accuracy));
    cell(tr, pct(p.seen_share));
    cell(tr, p.seen_accuracy === null ? "–" : pct(p.seen_accuracy));
    cell(tr, pct(p.best));
    cell(tr, pct(p.chance));
    body.appendChild(tr);
  }
  $("icl-table").dataset.step = String(step);
  drawCurve();
}

async function runIclTraining() {
  try {
    while (state.iclTraining) {
      const r = JSON.parse(await state.icl.train_steps(state.iclStepsPerCall));
      const before = state.iclLosses.length ? state.iclLosses[state.iclLosses.length - 1].step : 0;
      state.iclLosses.push({ step: r.step, loss: r.loss });
      $("icl-step").textContent = String(r.step);
      $("icl-loss").textContent = r.loss.toFixed(3);
      $("icl-speed").textContent = Math.round(r.tokens_per_s).toLocaleString();
      drawChart($("icl-chart"), state.iclLosses);
      const perStep = r.ms / r.steps;
      state.iclStepsPerCall = Math.max(1, Math.min(50, Math.round(150 / perStep)));
      if (Math.floor(r.step / ICL_EVAL_EVERY) > Math.floor(before / ICL_EVAL_EVERY)) await evaluateIcl();
      await nextFrame();
    }
    if (state.iclLosses.length && state.icl) await evaluateIcl();
  } catch (e) {
    state.iclTraining = false;
    showError(e);
  } finally {
    updateIclButton();
  }
}

// Accuracy against K: the model's latest curve (earlier ones faded), the best
// possible and chance.
function drawCurve(canvas = $("icl-curve")) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  const pad = { l: 48, r: 150, t: 12, b: 32 };
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = getComputedStyle(canvas).getPropertyValue("--chart-bg") || "#fff";
  ctx.fillRect(0, 0, w, h);
  ctx.strokeStyle = "#999";
  ctx.strokeRect(pad.l, pad.t, w - pad.l - pad.r, h - pad.t - pad.b);
  ctx.fillStyle = "#555";
  ctx.font = "12px system-ui, sans-serif";
  const evals = state.iclEvals;
  if (!evals.length) {
    ctx.fillText("accuracy against the number of examples appears here", pad.l + 12, h / 2);
    canvas.dataset.points = "0";
    return;
  }
  const last = evals[evals.length - 1].points;
  const n = last.length;
  const x = (i) => pad.l + ((w - pad.l - pad.r) * (i + 0.5)) / n;
  const y = (a) => pad.t + (h - pad.t - pad.b) * (1 - a);
  ctx.fillText("100%", 8, pad.t + 10);
  ctx.fillText("0%", 20, h - pad.b);
  last.forEach((p, i) => ctx.fillText(`K=${p.examples}`, x(i) - 12, h - 12));
  const line = (values, color, dash, width = 2) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.setLineDash(dash);
    ctx.beginPath();
    values.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    ctx.stroke();
    ctx.setLineDash([]);
  };
  line(last.map((p) => p.chance), "#c62828", [6, 4]);
  line(last.map((p) => p.best), "#1a7f37", [2, 3]);
  for (const e of evals.slice(-4, -1)) line(e.points.map((p) => p.accuracy), "rgba(42,111,219,0.25)", [], 1);
  line(last.map((p) => p.accuracy), "#2a6fdb", [], 3);
  ctx.fillStyle = "#2a6fdb";
  last.forEach((p, i) => ctx.fillRect(x(i) - 3, y(p.accuracy) - 3, 6, 6));
  const legend = [
    ["#2a6fdb", `model, step ${evals[evals.length - 1].step}`],
    ["#1a7f37", "best possible"],
    ["#c62828", "chance"],
  ];
  legend.forEach(([color, text], i) => {
    ctx.fillStyle = color;
    ctx.fillRect(w - pad.r + 12, pad.t + 8 + 20 * i, 14, 3);
    ctx.fillStyle = "#555";
    ctx.fillText(text, w - pad.r + 32, pad.t + 13 + 20 * i);
  });
  canvas.dataset.points = String(n);
}

function setupIcl() {
  $("icl-build").addEventListener("click", () => buildIcl().catch(showError));
  $("icl-train").addEventListener("click", async () => {
    if (state.iclTraining) {
      await pauseIcl();
      return;
    }
    clearError();
    try {
      await pauseTraining(); // one model trains at a time
      await pauseTranslator();
      if (!state.icl || state.iclConfig !== JSON.stringify(iclConfig())) await buildIcl();
    } catch (e) {
      showError(e);
      return;
    }
    state.iclTraining = true;
    updateIclButton();
    state.iclLoop = runIclTraining();
  });
  drawChart($("icl-chart"), state.iclLosses);
  drawCurve();
}

// ---------------------------------------------------------------- kernels

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

async function runChecks() {
  clearError();
  await pauseTraining(); // the checks catch the device's errors while they run
  await pauseTranslator();
  await pauseIcl();
  const names = JSON.parse(state.wasm.Engine.check_names());
  const body = $("checks-table").querySelector("tbody");
  body.textContent = "";
  state.checks = [];
  $("run-checks").disabled = true;
  $("checks-summary").textContent = "running…";
  try {
    for (let i = 0; i < names.length; i++) {
      const r = JSON.parse(await state.engine.run_check(i));
      state.checks.push(r);
      const tr = document.createElement("tr");
      cell(tr, r.name);
      cell(tr, r.passed ? "pass" : "FAIL", r.passed ? "pass" : "fail");
      cell(tr, r.worst_ratio === null ? "∞" : r.worst_ratio.toFixed(3));
      cell(tr, r.detail);
      body.appendChild(tr);
      await nextFrame();
    }
    const failed = state.checks.filter((r) => !r.passed).length;
    $("checks-summary").textContent = `${state.checks.length - failed} passed, ${failed} failed`;
    $("checks-summary").dataset.failed = String(failed);
  } catch (e) {
    $("checks-summary").textContent = "stopped by an error";
    showError(e);
  } finally {
    $("run-checks").disabled = false;
  }
}

async function runBench() {
  clearError();
  await pauseTraining();
  await pauseTranslator();
  await pauseIcl();
  const names = JSON.parse(state.wasm.Engine.bench_names());
  const body = $("bench-table").querySelector("tbody");
  body.textContent = "";
  state.bench = [];
  $("run-bench").disabled = true;
  try {
    for (let i = 0; i < names.length; i++) {
      const r = JSON.parse(await state.engine.run_bench(i));
      state.bench.push(r);
      const tr = document.createElement("tr");
      cell(tr, r.name);
      cell(tr, r.shape);
      cell(tr, r.ms.toFixed(3));
      cell(tr, r.gflops != null ? `${r.gflops.toFixed(2)} GFLOP/s` : r.gbps != null ? `${r.gbps.toFixed(2)} GB/s` : "");
      cell(tr, r.note);
      body.appendChild(tr);
      await nextFrame();
    }
    $("bench-table").dataset.done = "true";
  } catch (e) {
    showError(e);
  } finally {
    $("run-bench").disabled = false;
  }
}

function setupKernels() {
  $("run-checks").addEventListener("click", runChecks);
  $("run-bench").addEventListener("click", runBench);
}

// ---------------------------------------------------------------- recovery

function setupErrors() {
  $("error-dismiss").addEventListener("click", clearError);
  $("error-reload").addEventListener("click", () => location.reload());
  $("error-restart").addEventListener("click", async () => {
    clearError();
    dropTrainer();
    dropLoaded();
    release(state.engine);
    state.engine = null;
    state.losses = [];
    state.trLosses = [];
    state.iclLosses = [];
    state.iclEvals = [];
    drawChart();
    drawChart($("tr-chart"), state.trLosses);
    drawChart($("icl-chart"), state.iclLosses);
    drawCurve();
    try {
      await createEngine();
    } catch (e) {
      showError(e);
    }
  });
  if (new URLSearchParams(location.search).has("debug")) {
    $("debug-lose-device").hidden = false;
    $("debug-lose-device").addEventListener("click", () => state.engine.lose_device());
  }
}

main().catch(showError);
