//! The JavaScript API of the browser demo (wasm-bindgen): `Engine` opens the
//! browser's WebGPU device and runs the kernel checks and benchmark; `Trainer`
//! trains the character GPT (or Llama), streams generated text and hands out its
//! checkpoint files; `Loaded` builds a model from checkpoint files the user
//! chose and generates from it; `Translator` trains
//! the encoder-decoder on the date task, translates and evaluates; `InContext`
//! trains a GPT on the in-context learning task and measures its accuracy by
//! number of examples. Async methods return
//! Promises; results are JSON strings; failures reject with a JS `Error` whose
//! `name` says what kind it is: `DeviceLost`, `OutOfMemory`, `GpuError`,
//! `NoAdapter`, `Unsupported` (the GPU, [`ErrorKind::Device`]), `TooLarge`
//! ([`ErrorKind::TooLarge`]: a device limit or the demo's memory budget),
//! `InvalidInput` ([`ErrorKind::InvalidArgument`]), `NotFound`, `Corrupt`,
//! `Incompatible`, `IoError` (the kinds of those names), `Busy` (another call is
//! running).
//! A `log` logger sends the crate's and wgpu's records to the console.

use super::demo::{CharGpt, DemoConfig, Generation};
use super::icl::{IclConfig, IclTrainer};
use super::loaded::LoadedLm;
use super::translate::{DateTranslator, TranslateConfig};
use crate::checkpoint::CheckpointFiles;
use crate::data::DateTask;
use crate::data::Tokenizer;
use crate::error::{Error, ErrorKind};
use crate::gpu::Gpu;
use crate::selfcheck::{self, bench};
use js_sys::Promise;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str);
    #[wasm_bindgen(js_namespace = console, js_name = warn)]
    fn console_warn(message: &str);
    #[wasm_bindgen(js_namespace = console, js_name = info)]
    fn console_info(message: &str);
    #[wasm_bindgen(js_namespace = console, js_name = debug)]
    fn console_debug(message: &str);
}

/// The `log` records of the crate and of wgpu, sent to the browser console at
/// their level (`console.error`, `warn`, `info`, `debug`). wgpu and naga log
/// much at info level, so only their warnings and errors pass by default.
struct ConsoleLogger;

impl log::Log for ConsoleLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        let noisy = ["wgpu", "naga"]
            .iter()
            .any(|t| metadata.target().starts_with(t));
        metadata.level() <= log::max_level() && (!noisy || metadata.level() <= log::Level::Warn)
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!("[{} {}] {}", record.level(), record.target(), record.args());
        match record.level() {
            log::Level::Error => console_error(&line),
            log::Level::Warn => console_warn(&line),
            log::Level::Info => console_info(&line),
            log::Level::Debug | log::Level::Trace => console_debug(&line),
        }
    }

    fn flush(&self) {}
}

static LOGGER: ConsoleLogger = ConsoleLogger;

/// Sends Rust panics to the console (a panic aborts the module; the page
/// catches the resulting trap and offers a reload) and installs the console
/// logger, once, when the module starts.
#[wasm_bindgen(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error(&format!("wgformer panicked: {info}"));
    }));
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Sets the most detailed `log` level the console shows: `"off"`, `"error"`,
/// `"warn"`, `"info"` (the default), `"debug"` or `"trace"`.
///
/// # Errors
/// Throws an `InvalidInput` error for another name.
#[wasm_bindgen]
pub fn set_log_level(level: &str) -> Result<(), JsValue> {
    let filter: log::LevelFilter = level.parse().map_err(|_| {
        js_error(
            None,
            &Error::invalid(
                "set_log_level",
                format!("{level:?} is no log level; use off, error, warn, info, debug or trace"),
            ),
        )
    })?;
    log::set_max_level(filter);
    Ok(())
}

/// A JS `Error` for `e`, named by kind so the page can offer the right way on.
fn js_error(gpu: Option<&Gpu>, e: &Error) -> JsValue {
    let message = super::user_message(e);
    let kind = if gpu.is_some_and(Gpu::is_lost) {
        "DeviceLost"
    } else {
        match e {
            Error::Gpu(m) if m.to_lowercase().contains("out of memory") => "OutOfMemory",
            Error::Gpu(m) if m.to_lowercase().contains("device lost") => "DeviceLost",
            Error::NoAdapter { .. } => "NoAdapter",
            Error::Unsupported { .. } | Error::Device { .. } => "Unsupported",
            // Every kind has a name (a new kind must be named here to compile).
            _ => match e.kind() {
                ErrorKind::Device => "GpuError",
                ErrorKind::TooLarge => "TooLarge",
                ErrorKind::InvalidArgument => "InvalidInput",
                ErrorKind::NotFound => "NotFound",
                ErrorKind::Corrupt => "Corrupt",
                ErrorKind::Incompatible => "Incompatible",
                ErrorKind::Io => "IoError",
            },
        }
    };
    let err = js_sys::Error::new(&message);
    err.set_name(kind);
    err.into()
}

fn busy() -> JsValue {
    let err = js_sys::Error::new("the model is busy with another call; wait for it to finish");
    err.set_name("Busy");
    err.into()
}

fn to_json<T: serde::Serialize>(value: &T) -> JsValue {
    JsValue::from_str(
        &serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
    )
}

/// The WebGPU device and what runs on it directly.
#[wasm_bindgen]
pub struct Engine {
    gpu: Gpu,
}

#[wasm_bindgen]
impl Engine {
    /// Opens the browser's WebGPU adapter (high-performance preference) with
    /// its own limits and the optional features it has.
    ///
    /// # Errors
    /// Rejects with a JS `Error` named `NoAdapter` (no WebGPU in this browser) or `GpuError` (the
    /// adapter refused a device).
    pub async fn create() -> Result<Engine, JsValue> {
        let gpu = Gpu::new_async().await.map_err(|e| js_error(None, &e))?;
        let info = gpu.adapter_info();
        log::info!(
            "WebGPU device on adapter `{}` ({:?} backend)",
            info.name,
            info.backend
        );
        Ok(Engine { gpu })
    }

    /// Adapter, backend, limits and features as JSON.
    pub fn adapter(&self) -> String {
        let i = self.gpu.adapter_info();
        let l = self.gpu.limits();
        let f = self.gpu.features();
        serde_json::json!({
            "name": i.name,
            "vendor": i.vendor,
            "device": i.device,
            "device_type": format!("{:?}", i.device_type),
            "driver": i.driver,
            "driver_info": i.driver_info,
            "backend": format!("{:?}", i.backend),
            "max_buffer_size": l.max_buffer_size,
            "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
            "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
            "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
            "shader_f16": f.shader_f16,
            "timestamp_query": f.timestamp_query,
            "subgroups": f.subgroups,
        })
        .to_string()
    }

    /// The native `wgformer info` text for this adapter.
    pub fn describe(&self) -> String {
        self.gpu.describe()
    }

    /// True once the device is lost; create a new Engine (and Trainer) then.
    pub fn is_lost(&self) -> bool {
        self.gpu.is_lost()
    }

    /// Destroys the device, as a driver reset would: tests and the page's
    /// debug mode use it to exercise the recovery path.
    pub fn lose_device(&self) {
        self.gpu.device().destroy();
    }

    /// Kernel check names (JSON array), numbered as `run_check` takes them.
    pub fn check_names() -> String {
        serde_json::to_string(&selfcheck::check_names()).unwrap_or_default()
    }

    /// Runs one kernel check against the CPU reference; resolves to JSON
    /// `{name, passed, worst_ratio, detail}` (worst_ratio <= 1 passes).
    pub fn run_check(&self, index: usize) -> Promise {
        let gpu = self.gpu.clone();
        future_to_promise(async move {
            if index >= selfcheck::CHECKS.len() {
                let e = Error::invalid("run_check", format!("no check number {index}"));
                return Err(js_error(Some(&gpu), &e));
            }
            let r = selfcheck::run_check(&gpu, index).await;
            if gpu.is_lost() {
                return Err(js_error(Some(&gpu), &Error::Gpu(r.detail)));
            }
            Ok(to_json(&serde_json::json!({
                "name": r.name,
                "passed": r.passed,
                "worst_ratio": if r.worst_ratio.is_finite() { Some(r.worst_ratio) } else { None },
                "detail": r.detail,
            })))
        })
    }

    /// Benchmark names (JSON array), numbered as `run_bench` takes them.
    pub fn bench_names() -> String {
        serde_json::to_string(bench::BENCHES).unwrap_or_default()
    }

    /// Runs one benchmark; resolves to JSON `{name, shape, ms, gflops, gbps, note, reps}`.
    pub fn run_bench(&self, index: usize) -> Promise {
        let gpu = self.gpu.clone();
        future_to_promise(async move {
            bench::run_bench(&gpu, index, &performance_now)
                .await
                .map(|r| to_json(&r))
                .map_err(|e| js_error(Some(&gpu), &e))
        })
    }

    /// Whether this build has the encoder-decoder "Translate" demo.
    pub fn translate_available() -> bool {
        true
    }
}

struct TrainerState {
    model: CharGpt,
    generation: Option<Generation>,
}

/// A model's state, lent to one call at a time: a call takes it out and puts
/// it back when done, and a call that finds it gone is told the model is busy
/// (JS may call again while an earlier Promise is pending).
struct Shared<T>(Rc<RefCell<Option<T>>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> Shared<T> {
    fn new(state: T) -> Self {
        Shared(Rc::new(RefCell::new(Some(state))))
    }
    fn take(&self) -> Result<T, JsValue> {
        self.0.borrow_mut().take().ok_or_else(busy)
    }
    fn put(&self, state: T) {
        *self.0.borrow_mut() = Some(state);
    }

    /// A Promise for `work` on the state: lent to `work` (which hands it
    /// back with its result), put back, and the result made a JS value by
    /// `to_js` or a JS error.
    fn lend<R, Fut>(
        &self,
        gpu: &Gpu,
        work: impl FnOnce(T) -> Fut + 'static,
        to_js: impl FnOnce(R) -> JsValue + 'static,
    ) -> Promise
    where
        T: 'static,
        Fut: std::future::Future<Output = (T, Result<R, Error>)> + 'static,
    {
        let (gpu, state) = (gpu.clone(), self.clone());
        future_to_promise(async move {
            let (t, result) = work(state.take()?).await;
            state.put(t);
            result.map(to_js).map_err(|e| js_error(Some(&gpu), &e))
        })
    }
}

/// `config_json` as `T` (blank: the defaults), or an `InvalidInput` error.
fn parse_config<T: Default + serde::de::DeserializeOwned>(
    what: &'static str,
    config_json: &str,
) -> Result<T, JsValue> {
    if config_json.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(config_json).map_err(|e| {
        js_error(
            None,
            &Error::invalid(what, format!("config is not valid JSON for the demo: {e}")),
        )
    })
}

/// A character-level GPT being trained on one text.
#[wasm_bindgen]
pub struct Trainer {
    gpu: Gpu,
    state: Shared<TrainerState>,
}

#[wasm_bindgen]
impl Trainer {
    /// A fresh model for `text`; `config_json` overrides the defaults
    /// (`{"n_layer":2,"n_embd":64,"n_head":4,"context":64,"batch":16,"lr":0.003,"warmup":20,"seed":1}`).
    ///
    /// # Errors
    /// Throws a JS `Error` named `InvalidInput` for a `config_json` that does not parse or settings
    /// `CharGpt::new` refuses, `TooLarge` over a device limit or the demo's memory budget,
    /// `DeviceLost` / `GpuError` from the GPU.
    #[wasm_bindgen(constructor)]
    pub fn new(engine: &Engine, text: &str, config_json: &str) -> Result<Trainer, JsValue> {
        let gpu = engine.gpu.clone();
        let config: DemoConfig = parse_config("Trainer", config_json)?;
        let model = CharGpt::new(&gpu, text, config).map_err(|e| js_error(Some(&gpu), &e))?;
        Ok(Trainer {
            gpu,
            state: Shared::new(TrainerState {
                model,
                generation: None,
            }),
        })
    }

    /// Model facts as JSON: config, vocabulary size, parameters.
    pub fn info(&self) -> String {
        let guard = self.state.0.borrow();
        let Some(s) = guard.as_ref() else {
            return "{}".into(); // busy in a call
        };
        let m = s.model.model();
        serde_json::json!({
            "config": s.model.config(),
            "model_type": m.model_type(),
            "model_config": m.config_json(),
            "vocab_size": s.model.vocab().vocab_size(),
            "params": m.param_count(),
            "steps": s.model.steps(),
            "train_flops_per_token": m.train_flops_per_token(s.model.config().context),
        })
        .to_string()
    }

    /// Trains `n` steps; resolves to JSON `{step, loss, steps, tokens, ms, tokens_per_s}`.
    pub fn train_steps(&self, n: u32) -> Promise {
        self.state.lend(
            &self.gpu,
            move |mut s| async move {
                let result = s.model.train_steps(n, &performance_now).await;
                (s, result)
            },
            |r| to_json(&r),
        )
    }

    /// Resolves to the model's checkpoint files, an Array of `{name, bytes}`
    /// (`bytes` a Uint8Array): `config.json`, `model.safetensors` and
    /// `char_tokenizer.json`, as `wgformer train` saves them, so `wgformer
    /// generate --checkpoint DIR` runs on them natively once they are in `DIR`.
    pub fn download(&self) -> Promise {
        self.state.lend(
            &self.gpu,
            |s| async move {
                let result = s.model.checkpoint_files().await;
                (s, result)
            },
            |files| files_to_js(&files),
        )
    }

    /// Resolves to JSON `{shape: [T, V], data}`: the logits after each
    /// character of `prompt` (at most the context).
    pub fn logits(&self, prompt: String) -> Promise {
        self.state.lend(
            &self.gpu,
            move |s| async move {
                let result = s.model.logits(&prompt).await;
                let v = s.model.vocab().vocab_size();
                (s, result.map(|data| logits_json(data, v)))
            },
            |r| to_json(&r),
        )
    }

    /// Starts a generation after `prompt`; then call `next_token` until it
    /// resolves to `null`. temperature 0 is greedy; top_k 0 keeps every token.
    ///
    /// # Errors
    /// Throws `Busy` while another call holds the model, `InvalidInput` as
    /// `CharGpt::start_generation`.
    pub fn start_generation(
        &self,
        prompt: &str,
        max_tokens: u32,
        temperature: f32,
        top_k: u32,
        seed: u32,
    ) -> Result<(), JsValue> {
        let mut guard = self.state.0.borrow_mut();
        let s = guard.as_mut().ok_or_else(busy)?;
        let g = s
            .model
            .start_generation(
                prompt,
                max_tokens as usize,
                temperature,
                top_k as usize,
                seed as u64,
            )
            .map_err(|e| js_error(Some(&self.gpu), &e))?;
        s.generation = Some(g);
        Ok(())
    }

    /// Resolves to the next generated character, or `null` when done.
    pub fn next_token(&self) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let mut s = state.take()?;
            let Some(mut g) = s.generation.take() else {
                state.put(s);
                return Ok(JsValue::NULL);
            };
            let result = s.model.next_token(&mut g).await;
            if matches!(result, Ok(Some(_))) {
                s.generation = Some(g); // more to come
            }
            state.put(s);
            match result {
                Ok(Some(text)) => Ok(JsValue::from_str(&text)),
                Ok(None) => Ok(JsValue::NULL),
                Err(e) => Err(js_error(Some(&gpu), &e)),
            }
        })
    }
}

/// `{shape: [T, V], data}` for logits `data` of a vocabulary of `v`.
fn logits_json(data: Vec<f32>, v: usize) -> serde_json::Value {
    serde_json::json!({ "shape": [data.len() / v.max(1), v], "data": data })
}

/// `files` as a JS Array of `{name, bytes}` objects (`bytes` a Uint8Array).
fn files_to_js(files: &CheckpointFiles) -> JsValue {
    let out = js_sys::Array::new();
    for (name, bytes) in files.iter() {
        let entry = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&entry, &"name".into(), &name.into());
        let _ = js_sys::Reflect::set(
            &entry,
            &"bytes".into(),
            &js_sys::Uint8Array::from(bytes).into(),
        );
        out.push(&entry);
    }
    out.into()
}

/// A JS Array of `{name, bytes}` objects (`bytes` a Uint8Array or ArrayBuffer)
/// as [`CheckpointFiles`].
fn files_from_js(files: &JsValue) -> Result<CheckpointFiles, JsValue> {
    let bad = |detail: String| js_error(None, &Error::invalid("Loaded", detail));
    if !js_sys::Array::is_array(files) {
        return Err(bad(
            "expected an Array of {name, bytes} objects (the chosen files)".into(),
        ));
    }
    let mut out = CheckpointFiles::new();
    for (i, entry) in js_sys::Array::from(files).iter().enumerate() {
        let name = js_sys::Reflect::get(&entry, &"name".into())
            .ok()
            .and_then(|n| n.as_string())
            .ok_or_else(|| bad(format!("file {i} has no `name` string")))?;
        let bytes = js_sys::Reflect::get(&entry, &"bytes".into())
            .ok()
            .filter(|b| {
                b.is_instance_of::<js_sys::Uint8Array>()
                    || b.is_instance_of::<js_sys::ArrayBuffer>()
            })
            .ok_or_else(|| bad(format!("file `{name}` has no `bytes` (a Uint8Array)")))?;
        out.insert(&name, js_sys::Uint8Array::new(&bytes).to_vec());
    }
    Ok(out)
}

struct LoadedState {
    model: LoadedLm,
    generation: Option<Generation>,
}

/// A model built from checkpoint files the user chose: a GPT-2-layout (or
/// Llama-layout) checkpoint of wgformer's or Hugging Face's, with its
/// tokenizer (vocab.json + merges.txt, tokenizer.json or char_tokenizer.json).
#[wasm_bindgen]
pub struct Loaded {
    gpu: Gpu,
    state: Shared<LoadedState>,
}

#[wasm_bindgen]
impl Loaded {
    /// Builds the model of `files`, an Array of `{name, bytes}` (`bytes` a
    /// Uint8Array), and loads its weights and tokenizer.
    ///
    /// # Errors
    /// Throws a JS `Error` named `NotFound`, `Corrupt` or `Incompatible` for a
    /// missing, damaged or mismatched file (the message names it and the fix),
    /// `InvalidInput` for a tokenizer missing one of its files, `TooLarge` over a device limit,
    /// `DeviceLost` / `GpuError` from the GPU.
    #[wasm_bindgen(constructor)]
    pub fn new(engine: &Engine, files: &JsValue) -> Result<Loaded, JsValue> {
        let gpu = engine.gpu.clone();
        let files = files_from_js(files)?;
        let model = LoadedLm::from_files(&gpu, &files).map_err(|e| js_error(Some(&gpu), &e))?;
        log::info!(
            "loaded a {} checkpoint: {} parameters, {} tokenizer",
            model.model().model_type(),
            model.model().param_count(),
            model.tokenizer().kind()
        );
        Ok(Loaded {
            gpu,
            state: Shared::new(LoadedState {
                model,
                generation: None,
            }),
        })
    }

    /// Model facts as JSON: `model_type`, config, parameters, vocabulary,
    /// context, tokenizer kind, what the load skipped.
    pub fn info(&self) -> String {
        let guard = self.state.0.borrow();
        match guard.as_ref() {
            Some(s) => s.model.info().to_string(),
            None => "{}".into(), // busy in a call
        }
    }

    /// The token ids of `text` with the model's tokenizer (JSON array).
    ///
    /// # Errors
    /// Throws `Busy` while another call holds the model.
    pub fn encode(&self, text: &str) -> Result<String, JsValue> {
        let guard = self.state.0.borrow();
        let s = guard.as_ref().ok_or_else(busy)?;
        Ok(serde_json::to_string(&s.model.tokenizer().encode(text)).unwrap_or_default())
    }

    /// Resolves to JSON `{shape: [T, V], data}`: the logits for the token ids
    /// `ids_json` (a JSON array, at most the context).
    pub fn logits(&self, ids_json: String) -> Promise {
        self.state.lend(
            &self.gpu,
            move |s| async move {
                let result = match serde_json::from_str::<Vec<u32>>(&ids_json) {
                    Ok(ids) => {
                        let v = s.model.model().lm().vocab_size();
                        s.model.logits(&ids).await.map(|d| logits_json(d, v))
                    }
                    Err(e) => Err(Error::invalid(
                        "logits",
                        format!("ids must be a JSON array of token ids ({e})"),
                    )),
                };
                (s, result)
            },
            |r| to_json(&r),
        )
    }

    /// Starts a generation after `prompt` (empty: from the beginning-of-sequence
    /// token); then call `next_token` until it resolves to `null`.
    ///
    /// # Errors
    /// As `Trainer.start_generation`.
    pub fn start_generation(
        &self,
        prompt: &str,
        max_tokens: u32,
        temperature: f32,
        top_k: u32,
        seed: u32,
    ) -> Result<(), JsValue> {
        let mut guard = self.state.0.borrow_mut();
        let s = guard.as_mut().ok_or_else(busy)?;
        let g = s
            .model
            .start_generation(
                prompt,
                max_tokens as usize,
                temperature,
                top_k as usize,
                seed as u64,
            )
            .map_err(|e| js_error(Some(&self.gpu), &e))?;
        s.generation = Some(g);
        Ok(())
    }

    /// Resolves to the next piece of generated text (empty while a character's
    /// bytes are incomplete), or `null` when done.
    pub fn next_token(&self) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let mut s = state.take()?;
            let Some(mut g) = s.generation.take() else {
                state.put(s);
                return Ok(JsValue::NULL);
            };
            let result = s.model.next_token(&mut g).await;
            if matches!(result, Ok(Some(_))) {
                s.generation = Some(g); // more to come
            }
            state.put(s);
            match result {
                Ok(Some(text)) => Ok(JsValue::from_str(&text)),
                Ok(None) => Ok(JsValue::NULL),
                Err(e) => Err(js_error(Some(&gpu), &e)),
            }
        })
    }
}

/// The encoder-decoder learning the built-in date task ("2024-03-15" ->
/// "15 March 2024").
#[wasm_bindgen]
pub struct Translator {
    gpu: Gpu,
    state: Shared<DateTranslator>,
}

#[wasm_bindgen]
impl Translator {
    /// A fresh model and fresh dates; `config_json` overrides the defaults
    /// (`{"d_model":64,"d_ff":256,"n_heads":4,"n_layers":2,"norm":"post","batch_tokens":512,
    /// "warmup":100,"lr_factor":0.3,"label_smoothing":0.1,"n_train":60000,"n_held_out":1000,"seed":1}`).
    ///
    /// # Errors
    /// Throws as `Trainer::new`, for the settings `DateTranslator::new` refuses.
    #[wasm_bindgen(constructor)]
    pub fn new(engine: &Engine, config_json: &str) -> Result<Translator, JsValue> {
        let gpu = engine.gpu.clone();
        let config: TranslateConfig = parse_config("Translator", config_json)?;
        let model = DateTranslator::new(&gpu, config).map_err(|e| js_error(Some(&gpu), &e))?;
        Ok(Translator {
            gpu,
            state: Shared::new(model),
        })
    }

    /// Model facts as JSON: config, vocabulary size, parameters, steps.
    pub fn info(&self) -> String {
        let guard = self.state.0.borrow();
        let Some(t) = guard.as_ref() else {
            return "{}".into(); // busy in a call
        };
        let c = &t.model().config;
        serde_json::json!({
            "config": t.config(),
            "vocab_size": c.vocab_size,
            "params": c.param_count(),
            "steps": t.steps(),
        })
        .to_string()
    }

    /// Trains `n` steps; resolves to JSON `{step, loss, steps, tokens, ms, tokens_per_s}`
    /// (tokens: target tokens).
    pub fn train_steps(&self, n: u32) -> Promise {
        self.state.lend(
            &self.gpu,
            move |mut t| async move {
                let result = t.train_steps(n, &performance_now).await;
                (t, result)
            },
            |r| to_json(&r),
        )
    }

    /// Resolves to the greedy translation of an ISO date; a string that is no
    /// valid date from 1900 to 2099 rejects with an `InvalidInput` error
    /// saying what to type.
    pub fn translate(&self, text: String) -> Promise {
        self.state.lend(
            &self.gpu,
            move |t| async move {
                let result = t.translate(&text).await;
                (t, result)
            },
            |s| JsValue::from_str(&s),
        )
    }

    /// Resolves to JSON `{accuracy, correct, total, examples: [{source, target,
    /// output, correct}]}`: greedy decoding of the first `n` held-out dates.
    pub fn evaluate(&self, n: u32) -> Promise {
        self.state.lend(
            &self.gpu,
            move |t| async move {
                let result = t.evaluate(n as usize).await;
                (t, result)
            },
            |r| to_json(&r),
        )
    }

    /// The right answer for an ISO date ("2024-03-15" -> "15 March 2024"),
    /// computed directly; throws `InvalidInput` saying what is wrong otherwise.
    ///
    /// # Errors
    /// Throws a JS `Error` named `InvalidInput` for anything but a `YYYY-MM-DD` date in
    /// 1900..=2099.
    pub fn reference(text: &str) -> Result<String, JsValue> {
        DateTask::english(text.trim()).map_err(|e| js_error(None, &e))
    }
}

/// A GPT learning in context: each sequence shows examples of a random mapping
/// drawn afresh for it (inputs a.., outputs A..), and the model must answer from
/// those examples.
#[wasm_bindgen]
pub struct InContext {
    gpu: Gpu,
    state: Shared<IclTrainer>,
}

#[wasm_bindgen]
impl InContext {
    /// A fresh model; `config_json` overrides the defaults
    /// (`{"alphabet":4,"examples":8,"n_layer":2,"n_embd":64,"n_head":8,"batch":32,
    /// "lr":0.003,"warmup":20,"seed":1}`).
    ///
    /// # Errors
    /// Throws as `Trainer::new`, for the settings `IclTrainer::new` refuses.
    #[wasm_bindgen(constructor)]
    pub fn new(engine: &Engine, config_json: &str) -> Result<InContext, JsValue> {
        let gpu = engine.gpu.clone();
        let config: IclConfig = parse_config("InContext", config_json)?;
        let model = IclTrainer::new(&gpu, config).map_err(|e| js_error(Some(&gpu), &e))?;
        Ok(InContext {
            gpu,
            state: Shared::new(model),
        })
    }

    /// Model facts as JSON: config, parameters, steps, chance level.
    pub fn info(&self) -> String {
        let guard = self.state.0.borrow();
        let Some(t) = guard.as_ref() else {
            return "{}".into(); // busy in a call
        };
        serde_json::json!({
            "config": t.config(),
            "params": t.gpt_config().param_count(),
            "context": t.gpt_config().n_positions,
            "steps": t.steps(),
            "chance": t.task().chance(),
        })
        .to_string()
    }

    /// Trains `n` steps; resolves to JSON `{step, loss, steps, tokens, ms, tokens_per_s}`
    /// (tokens: the answers the loss is on).
    pub fn train_steps(&self, n: u32) -> Promise {
        self.state.lend(
            &self.gpu,
            move |mut t| async move {
                let result = t.train_steps(n, &performance_now).await;
                (t, result)
            },
            |r| to_json(&r),
        )
    }

    /// Resolves to JSON `{points: [{examples, accuracy, queries, seen_share,
    /// seen_accuracy, chance, best}], loss, sequences}` on `sequences` held-out
    /// sequences (the same every call).
    pub fn evaluate(&self, sequences: u32) -> Promise {
        self.state.lend(
            &self.gpu,
            move |t| async move {
                let result = t.evaluate(sequences as usize).await;
                (t, result)
            },
            |r| to_json(&r),
        )
    }
}
