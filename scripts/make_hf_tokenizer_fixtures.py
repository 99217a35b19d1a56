#!/usr/bin/env python3
"""Hugging Face tokenizer fixtures for tests/hf_tokenizer.rs, and the check that
Hugging Face loads the tokenizer.json files wgformer writes.

  pip install tokenizers transformers

Make the fixtures (run from the repository root; writes tests/fixtures/hf_tokenizer/):
  python3 scripts/make_hf_tokenizer_fixtures.py

  - bpe_pairs/: a small byte-level BPE trained by `tokenizers`, saved by
    `transformers` (tokenizer.json with merges as ["a", "b"] pairs,
    tokenizer_config.json naming <|im_end|> as eos), with a non-special added token;
  - bpe_strings/: the same tokenizer.json with merges as "a b" strings, alone;
  - wordpiece/, unigram/: tokenizer.json files of other model types (to be refused);
  - expected_ids.json: the ids `tokenizers` gives (add_special_tokens=False) and
    its decode (skip_special_tokens=True) for tricky texts, for both BPE files.
  It also checks that `tokenizers`, built from GPT-2's vocab.json + merges.txt, gives
  the ids of tests/fixtures/gpt2_tokenizer/expected_ids.json (two JavaScript encoders).

Check wgformer's output (after `cargo test --test hf_tokenizer`, which writes
target/tmp/hf_export/*/ with tokenizer.json, tokenizer_config.json and
wgformer_ids.json, the ids wgformer gives):
  python3 scripts/make_hf_tokenizer_fixtures.py --check target/tmp/hf_export/*
Each directory is loaded by `tokenizers.Tokenizer.from_file` and by
`transformers.AutoTokenizer.from_pretrained`; both must give wgformer's ids and
wgformer's special token ids.
"""

import json
import os
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "hf_tokenizer")
GPT2 = os.path.join(ROOT, "tests", "fixtures", "gpt2_tokenizer")

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's a dog's life, isn't it?",
    "Hello world! Hello, wgformer. We'll see what they've done; I'd say it's fine.",
    "Numbers: 12345 678 90, 3.14159 and 2,718; dates like 2024-01-31 and 1999.",
    "Le cœur a ses raisons que la raison ne connaît point. Ça va très bien, merci.",
    "Das Wetter ist schön. Übermäßig große Straßen führen nach München.",
    "東京は日本の首都です。 中文文本也在这里。 한국어 텍스트도 있습니다.",
    "Emoji: 😀 👍🏽 👨‍👩‍👧 🇫🇷 and symbols ∑ ∫ → ≠ © ™.",
    "Tabs\tand  double  spaces\n\nnew lines\r\nand trailing   ",
    "def main():\n    print('hello')\n    return 0\n",
    "Mixed CASE words, camelCase, snake_case, kebab-case and URLs: https://example.com/a?b=c",
] * 4

# Texts whose ids are compared: pre-tokenization edge cases, specials and the added
# token inside text, and the GPT-2 fixture's tricky texts.
EXTRA_TEXTS = [
    "",
    "<|endoftext|>",
    "hello<|im_end|>world",
    "a<|endoftext|><|pad|> b <|im_end|>",
    "wgformer",
    "a wgformerwgformer b, wgformer's",
    "<|im_end",
    "<|endoftext|>wgformer<|im_end|>",
    "The quick brown fox",
    "  leading and trailing spaces  ",
    "naïve café — déjà vu",
]


def gpt2_cases():
    with open(os.path.join(GPT2, "expected_ids.json"), encoding="utf-8") as f:
        return json.load(f)["cases"]


def byte_level(tok):
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe():
    tok = byte_level(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_tokens(["wgformer"])
    tok.add_special_tokens(["<|im_end|>"])
    return tok


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=1)
        f.write("\n")


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def check_gpt2():
    """HF's BPE over GPT-2's files must agree with the JavaScript reference ids."""
    tok = byte_level(
        Tokenizer(
            models.BPE.from_file(
                os.path.join(GPT2, "vocab.json"), os.path.join(GPT2, "merges.txt")
            )
        )
    )
    bad = [c["text"] for c in gpt2_cases() if encode(tok, c["text"]) != c["ids"]]
    if bad:
        sys.exit(f"tokenizers disagrees with the GPT-2 reference ids on {bad!r}")
    print(f"tokenizers agrees with the GPT-2 reference ids on {len(gpt2_cases())} texts")


def make_fixtures():
    from transformers import PreTrainedTokenizerFast

    check_gpt2()
    tok = train_bpe()
    pairs_dir = os.path.join(OUT, "bpe_pairs")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
    )
    fast.save_pretrained(pairs_dir)
    for extra in ["special_tokens_map.json", "chat_template.jinja"]:
        path = os.path.join(pairs_dir, extra)
        if os.path.exists(path):
            os.remove(path)
    with open(os.path.join(pairs_dir, "tokenizer.json"), encoding="utf-8") as f:
        doc = json.load(f)
    merges = doc["model"]["merges"]
    if not all(isinstance(m, list) for m in merges):
        sys.exit("expected tokenizers to write merges as pairs")
    doc["model"]["merges"] = [" ".join(m) for m in merges]
    strings_path = os.path.join(OUT, "bpe_strings", "tokenizer.json")
    write_json(strings_path, doc)

    pairs = Tokenizer.from_file(os.path.join(pairs_dir, "tokenizer.json"))
    strings = Tokenizer.from_file(strings_path)
    texts = [c["text"] for c in gpt2_cases()] + EXTRA_TEXTS + CORPUS[:10]
    cases = []
    for text in texts:
        ids = encode(pairs, text)
        if encode(strings, text) != ids:
            sys.exit(f"the two merge forms encode {text!r} differently")
        cases.append(
            {"text": text, "ids": ids, "decoded": pairs.decode(ids, skip_special_tokens=True)}
        )
    specials = {
        name: pairs.token_to_id(tok_str)
        for name, tok_str in [("bos", "<|endoftext|>"), ("eos", "<|im_end|>"), ("pad", "<|pad|>")]
    }
    import tokenizers
    import transformers

    write_json(
        os.path.join(OUT, "expected_ids.json"),
        {
            "generator": "scripts/make_hf_tokenizer_fixtures.py",
            "tokenizers": tokenizers.__version__,
            "transformers": transformers.__version__,
            "vocab_size": pairs.get_vocab_size(with_added_tokens=True),
            "bpe_pairs_specials": specials,
            "cases": cases,
        },
    )

    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece.train_from_iterator(
        CORPUS[:10],
        trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[UNK]"], show_progress=False),
    )
    os.makedirs(os.path.join(OUT, "wordpiece"), exist_ok=True)
    wordpiece.save(os.path.join(OUT, "wordpiece", "tokenizer.json"))
    unigram = Tokenizer(models.Unigram())
    unigram.train_from_iterator(
        CORPUS[:10],
        trainers.UnigramTrainer(vocab_size=300, show_progress=False),
    )
    os.makedirs(os.path.join(OUT, "unigram"), exist_ok=True)
    unigram.save(os.path.join(OUT, "unigram", "tokenizer.json"))
    print(f"wrote {OUT}: {len(cases)} cases")


def check_exports(dirs):
    from transformers import AutoTokenizer

    for d in dirs:
        with open(os.path.join(d, "wgformer_ids.json"), encoding="utf-8") as f:
            ours = json.load(f)
        raw = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        auto = AutoTokenizer.from_pretrained(d)
        for case in ours["cases"]:
            want = case["ids"]
            got_raw = encode(raw, case["text"])
            got_auto = auto(case["text"], add_special_tokens=False)["input_ids"]
            if got_raw != want or got_auto != want:
                sys.exit(
                    f"{d}: {case['text']!r}\n  wgformer:    {want}\n  tokenizers:  {got_raw}\n"
                    f"  AutoTokenizer: {got_auto}"
                )
            decoded = auto.decode(want, skip_special_tokens=True)
            if decoded != case["decoded"]:
                sys.exit(f"{d}: decode of {want} is {decoded!r}, wgformer {case['decoded']!r}")
        sp = ours["specials"]
        got = {
            "bos": auto.bos_token_id,
            "eos": auto.eos_token_id,
            "pad": auto.pad_token_id,
            "unk": auto.unk_token_id,
        }
        if got != sp:
            sys.exit(f"{d}: AutoTokenizer's special ids {got} differ from wgformer's {sp}")
        if len(auto) != ours["vocab_size"]:
            sys.exit(f"{d}: AutoTokenizer has {len(auto)} tokens, wgformer {ours['vocab_size']}")
        print(
            f"{d}: tokenizers and AutoTokenizer ({type(auto).__name__}) agree with wgformer on "
            f"{len(ours['cases'])} texts, specials {sp}, {len(auto)} tokens"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        check_exports(sys.argv[2:])
    else:
        make_fixtures()
