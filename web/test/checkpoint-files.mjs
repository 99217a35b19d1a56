// Checkpoint files the browser test loads into the page, written here in
// JavaScript (independently of the crate's writers): a safetensors writer, the
// JAX parity fixture's GPT in Hugging Face's GPT-2 layout (its logits are the
// independent reference), and a tiny GPT-2-layout model over GPT-2's real
// vocab.json + merges.txt (its token ids come from independent encoders).
import { readFile } from "node:fs/promises";
import { join } from "node:path";

/** The bytes of a safetensors file of F32 `tensors` ([{name, shape, data}]). */
export function safetensors(tensors, metadata = { format: "pt" }) {
  const header = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const n = t.data.length * 4;
    header[t.name] = { dtype: "F32", shape: t.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = JSON.stringify(header);
  while ((json.length + 8) % 8 !== 0) json += " ";
  const headerBytes = Buffer.from(json, "utf8");
  const out = Buffer.alloc(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let at = 8 + headerBytes.length;
  for (const t of tensors) {
    const f = Float32Array.from(t.data);
    Buffer.from(f.buffer).copy(out, at);
    at += f.byteLength;
  }
  return out;
}

/** Hugging Face's GPT2Config fields for the sizes of `c` (GPT-2's defaults otherwise). */
function gpt2Config(c) {
  return {
    model_type: "gpt2",
    architectures: ["GPT2LMHeadModel"],
    activation_function: "gelu_new",
    vocab_size: c.vocab_size,
    n_positions: c.n_positions,
    n_ctx: c.n_positions,
    n_embd: c.n_embd,
    n_layer: c.n_layer,
    n_head: c.n_head,
    n_inner: null,
    layer_norm_epsilon: c.layer_norm_epsilon ?? 1e-5,
    attn_pdrop: 0.1,
    embd_pdrop: 0.1,
    resid_pdrop: 0.1,
  };
}

/** A char tokenizer file (wgformer's format) over `chars`, after the four specials. */
function charTokenizer(chars) {
  return JSON.stringify({ kind: "char", version: 1, specials: ["<pad>", "<bos>", "<eos>", "<unk>"], chars: [...chars] });
}

/**
 * The GPT of tests/fixtures/parity_gpt_v1.json (float64 JAX) as a Hugging Face
 * GPT-2 checkpoint: tensors under `transformer.`, a tied `lm_head.weight`,
 * Hugging Face's config.json, and a char tokenizer of its 29 ids. Returns
 * {files: [{name, buffer}], ids: [[...]], logits: [[...]] (per row), vocab}.
 */
export async function jaxGptFiles(repo) {
  const fx = JSON.parse(await readFile(join(repo, "tests/fixtures/parity_gpt_v1.json"), "utf8"));
  const tensors = Object.entries(fx.params).map(([name, a]) => ({ name: `transformer.${name}`, shape: a.shape, data: a.data }));
  tensors.push({ name: "lm_head.weight", shape: fx.params["wte.weight"].shape, data: fx.params["wte.weight"].data });
  const chars = "abcdefghijklmnopqrstuvwxy"; // 25 chars + 4 specials = the fixture's 29 ids
  const [rows, t] = fx.inputs.ids.shape;
  const v = fx.logits.shape[2];
  return {
    files: [
      { name: "model.safetensors", mimeType: "application/octet-stream", buffer: safetensors(tensors) },
      { name: "config.json", mimeType: "application/json", buffer: Buffer.from(JSON.stringify(gpt2Config(fx.config))) },
      { name: "char_tokenizer.json", mimeType: "application/json", buffer: Buffer.from(charTokenizer(chars)) },
    ],
    ids: [...Array(rows).keys()].map((r) => fx.inputs.ids.data.slice(r * t, (r + 1) * t)),
    logits: [...Array(rows).keys()].map((r) => fx.logits.data.slice(r * t * v, (r + 1) * t * v)),
    vocab: v,
  };
}

/**
 * A tiny GPT-2-layout model (width 8, one layer) over GPT-2's vocabulary, with
 * deterministic small weights, plus GPT-2's vocab.json + merges.txt from
 * tests/fixtures/gpt2_tokenizer and that directory's expected ids (from two
 * independent JavaScript encoders). Returns {files, cases: [{text, ids}]}.
 */
export async function gpt2BpeFiles(repo) {
  const dir = join(repo, "tests/fixtures/gpt2_tokenizer");
  const c = { vocab_size: 50257, n_positions: 16, n_embd: 8, n_layer: 1, n_head: 2 };
  const e = c.n_embd;
  const shapes = {
    "wte.weight": [c.vocab_size, e],
    "wpe.weight": [c.n_positions, e],
    "h.0.ln_1.weight": [e],
    "h.0.ln_1.bias": [e],
    "h.0.attn.c_attn.weight": [e, 3 * e],
    "h.0.attn.c_attn.bias": [3 * e],
    "h.0.attn.c_proj.weight": [e, e],
    "h.0.attn.c_proj.bias": [e],
    "h.0.ln_2.weight": [e],
    "h.0.ln_2.bias": [e],
    "h.0.mlp.c_fc.weight": [e, 4 * e],
    "h.0.mlp.c_fc.bias": [4 * e],
    "h.0.mlp.c_proj.weight": [4 * e, e],
    "h.0.mlp.c_proj.bias": [e],
    "ln_f.weight": [e],
    "ln_f.bias": [e],
  };
  const tensors = Object.entries(shapes).map(([name, shape], k) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = name.endsWith("ln_1.weight") || name.endsWith("ln_2.weight") || name === "ln_f.weight" ? 1 : (((i * 37 + k * 11) % 61) - 30) / 256;
    return { name: `transformer.${name}`, shape, data };
  });
  const expected = JSON.parse(await readFile(join(dir, "expected_ids.json"), "utf8"));
  return {
    files: [
      { name: "model.safetensors", mimeType: "application/octet-stream", buffer: safetensors(tensors) },
      { name: "config.json", mimeType: "application/json", buffer: Buffer.from(JSON.stringify(gpt2Config(c))) },
      { name: "vocab.json", mimeType: "application/json", buffer: await readFile(join(dir, "vocab.json")) },
      { name: "merges.txt", mimeType: "text/plain", buffer: await readFile(join(dir, "merges.txt")) },
    ],
    cases: expected.cases,
  };
}
