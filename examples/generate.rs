//! Loads a GPT checkpoint (one written by `wgformer train --model gpt`, or a
//! GPT-2-layout directory with model.safetensors, config.json, vocab.json and
//! merges.txt) and streams a sampled continuation of a prompt.
//!
//! ```sh
//! cargo run --release -- train --model gpt --data my.txt --out runs/gpt
//! cargo run --release --example generate -- runs/gpt "Once upon a time"
//! ```

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use wgformer::data::TokenStream;
use wgformer::generate::{GenerateOptions, SamplingOptions};
use wgformer::nn::Gpt;

fn main() -> wgformer::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), prompt) = (
        args.next().map(PathBuf::from),
        args.next().unwrap_or_default(),
    ) else {
        eprintln!("usage: generate CHECKPOINT_DIR [PROMPT]");
        std::process::exit(2);
    };

    let gpu = wgformer::Gpu::new()?;
    let model = Gpt::load(&gpu, &dir)?;
    let tokenizer = model.load_tokenizer(&dir)?;

    let mut ids = tokenizer.encode(&prompt);
    if ids.is_empty() {
        ids.push(tokenizer.specials().bos);
    }
    let options = GenerateOptions {
        sampling: SamplingOptions {
            temperature: 0.8,
            top_k: Some(40),
            top_p: Some(0.95),
            seed: 1,
        },
        max_tokens: 200,
        eos: Some(tokenizer.specials().eos),
        truncate_prompt: true,
    };

    print!("{prompt}");
    let mut stdout = std::io::stdout();
    // A BPE token can end inside a multi-byte character: the stream holds its
    // bytes back until the character is whole.
    let mut text = TokenStream::new(tokenizer.as_ref());
    let generation = model.generate(&ids, &options, |token| {
        print!("{}", text.push(token));
        // Stop when stdout is gone (e.g. piped into `head`).
        match stdout.flush() {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    })?;
    println!(
        "{}\n[{} tokens, stopped: {:?}]",
        text.finish(),
        generation.tokens.len(),
        generation.stop
    );
    Ok(())
}
