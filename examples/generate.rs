//! Loads a GPT checkpoint (one written by `wgformer train --model gpt`, or a
//! GPT-2-layout directory with model.safetensors, config.json, vocab.json and
//! merges.txt) and streams a sampled continuation of a prompt.
//!
//! ```sh
//! cargo run --release -- train --model gpt --data my.txt --out runs/gpt
//! cargo run --release --example generate -- runs/gpt "Once upon a time"
//! ```

use std::io::Write;
use std::path::PathBuf;
use wgformer::generate::{generate, GenerateOptions, SamplingOptions};

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
    let (model, _report) = wgformer::checkpoint::load_gpt(&gpu, &dir)?;
    let tokenizer = wgformer::data::load_tokenizer(&dir)?;

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
    let generation = generate(&model, &ids, &options, &mut |token| {
        // Char and byte-level tokens: print each as it comes.
        print!("{}", tokenizer.decode(&[token]));
        let _ = stdout.flush();
        Ok(())
    })?;
    println!(
        "\n[{} tokens, stopped: {:?}]",
        generation.tokens.len(),
        generation.stop
    );
    Ok(())
}
