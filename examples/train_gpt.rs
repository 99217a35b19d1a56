//! The library end to end, through its public API only: train a tiny GPT with a
//! byte-level BPE tokenizer, save it (model, tokenizer, optimiser) in one call,
//! load it back in one call, check the logits survived bit for bit, stream a
//! generation as valid UTF-8, run a raw kernel, and tell a missing checkpoint
//! from other errors.
//!
//! ```sh
//! cargo run --release --example train_gpt -- /tmp/tiny-gpt
//! ```

use std::ops::ControlFlow;
use std::path::PathBuf;
use wgformer::autograd::Tape;
use wgformer::checkpoint::SaveOptions;
use wgformer::data::{BpeTokenizer, TokenStream, Tokenizer};
use wgformer::generate::GenerateOptions;
use wgformer::kernels::cross_entropy::CrossEntropyOptions;
use wgformer::kernels::gemm::{gemm, GemmOptions};
use wgformer::nn::{Gpt, GptConfig};
use wgformer::optim::{schedule, Optimizer, OptimizerKind, OptimizerOptions, StepOptions};
use wgformer::{Error, Gpu, Tensor};

const TEXT: &str = "Grüße aus Köln! Ça va? 日本語も少し。 The quick brown fox 🦊 jumps. ";

fn main() -> wgformer::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or("runs/tiny-gpt".into()));
    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.adapter_name());

    // Train.
    let text = TEXT.repeat(8);
    let tokenizer = BpeTokenizer::train(&text, 300)?;
    let ids = tokenizer.encode(&text);
    let config = GptConfig {
        vocab_size: tokenizer.vocab_size(),
        n_positions: 32,
        n_embd: 32,
        n_layer: 2,
        n_head: 2,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    let model = Gpt::new(&gpu, config, 0)?;
    let clip = OptimizerOptions {
        max_grad_norm: Some(1.0),
    };
    let mut opt = Optimizer::with_options(&gpu, model.params(), OptimizerKind::gpt_adamw(), clip)?;
    let (b, t, steps) = (4, 32, 60);
    for step in 1..=steps {
        let start = (step as usize * 7) % (ids.len() - b * t - 1);
        let inputs = &ids[start..start + b * t];
        let targets = &ids[start + 1..start + b * t + 1];
        let tape = Tape::new(&gpu);
        let logits = model.forward(&tape, &Tensor::from_u32(&gpu, inputs, &[b, t])?)?;
        let loss = tape.cross_entropy(&logits, targets, &CrossEntropyOptions::default())?;
        tape.backward(&loss)?;
        let lr = schedule::cosine_with_warmup(1e-2, 1e-3, 5, steps, step);
        opt.step_with(&StepOptions {
            lr,
            ..Default::default()
        })?;
        if step % 20 == 0 {
            println!("step {step}: loss {:.3}", loss.value().to_vec()?[0]);
        }
    }

    // Save, load, compare.
    let options = SaveOptions {
        tokenizer: Some(&tokenizer),
        optimizer: Some(&opt),
        ..Default::default()
    };
    model.save(&dir, &options)?;
    let loaded = Gpt::load(&gpu, &dir)?;
    let tokenizer = loaded.load_tokenizer(&dir)?;
    let probe = &ids[..t];
    let same = model.logits(probe)?.to_vec()? == loaded.logits(probe)?.to_vec()?;
    println!(
        "saved to {}; logits after load identical: {same}",
        dir.display()
    );

    // Generate, printing whole characters only.
    let prompt = tokenizer.encode("Grüße");
    let mut text = TokenStream::new(tokenizer.as_ref());
    print!("Grüße");
    let options = GenerateOptions {
        max_tokens: 24,
        ..Default::default()
    };
    loaded.generate(&prompt, &options, |id| {
        print!("{}", text.push(id));
        ControlFlow::Continue(())
    })?;
    println!("{}", text.finish());

    // A raw kernel on the same GPU.
    let a = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0], &[2, 2])?;
    let c = gemm(&a, &a, &GemmOptions::default())?;
    println!("[[1, 2], [3, 4]]^2 = {:?}", c.to_vec()?);

    // Errors a program can act on.
    match Gpt::load(&gpu, dir.with_file_name("no-such-checkpoint")) {
        Err(Error::NotFound { path, .. }) => println!("nothing saved at {path} yet"),
        Err(other) => return Err(other),
        Ok(_) => println!("unexpectedly found a checkpoint"),
    }
    Ok(())
}
