//! `wgformer audit`: the exposure of a canary under a GPT checkpoint (the
//! memorisation audit of "The Secret Sharer"; see `wgformer::privacy::audit`).

use super::flags::at_least_one;
use super::infer::load_gpt_with_tokenizer;
use super::{encode_known, usage};
use std::path::PathBuf;
use wgformer::generate::sequence_nll;
use wgformer::privacy::audit::{exposure, AuditOptions, Method, SecretFormat};
use wgformer::{Gpu, Result};

/// Arguments of `wgformer audit`.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// A GPT checkpoint directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The canary text with its secret, e.g. "my PIN is 3816".
    #[arg(long)]
    pub canary: String,
    /// The form of the secret: D digit, L lowercase letter, U uppercase letter,
    /// X hex digit, any other character itself (e.g. DDDD).
    #[arg(long)]
    pub secret_format: String,
    /// Score every possible secret when there are at most this many; sample
    /// them otherwise.
    #[arg(long, default_value_t = 100_000)]
    pub max_enumerate: u64,
    /// Secrets sampled when there are too many to score them all.
    #[arg(long, default_value_t = 10_000, value_parser = at_least_one::<usize>)]
    pub samples: usize,
    /// Seeds the sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Candidate texts per forward pass.
    #[arg(long, default_value_t = 256, value_parser = at_least_one::<usize>)]
    pub batch: usize,
    /// Print JSON instead of sentences.
    #[arg(long)]
    pub json: bool,
}

pub fn run(gpu: &Gpu, a: &AuditArgs) -> Result<()> {
    let format = SecretFormat::parse(&a.secret_format)?;
    let (model, tok) = load_gpt_with_tokenizer(gpu, &a.checkpoint, true)?;
    let tok = tok.ok_or_else(|| usage("the checkpoint has no tokenizer"))?;
    encode_known(tok.as_ref(), &a.canary, "--canary")?;
    encode_known(
        tok.as_ref(),
        &format.alphabet(),
        "--secret-format's characters",
    )?;
    let mut score = |texts: &[String]| -> Result<Vec<f64>> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t)).collect();
        let nll = sequence_nll(&model, &ids, a.batch)?;
        Ok(nll.iter().map(|x| x / std::f64::consts::LN_2).collect())
    };
    let opts = AuditOptions {
        max_enumerate: a.max_enumerate,
        samples: a.samples,
        seed: a.seed,
        ..AuditOptions::default()
    };
    let e = exposure(&a.canary, &format, &mut score, &opts)?;
    if a.json {
        let json = serde_json::to_string(&e)
            .map_err(|err| usage(format!("cannot write the report as JSON: {err}")))?;
        println!("{json}");
        return Ok(());
    }
    let how = match e.method {
        Method::Enumeration => "every candidate scored".to_string(),
        Method::SampledShare => format!("estimated from {} sampled candidates", e.scored - 1),
        Method::SkewNormalFit => format!(
            "extrapolated by a skew-normal fit to {} sampled candidates",
            e.scored - 1
        ),
    };
    println!(
        "canary {:?}: secret {:?}, one of {} candidates ({})",
        e.canary, e.secret, e.candidates, a.secret_format
    );
    println!(
        "rank {:.0} by log-perplexity ({:.2} bits; {how}): exposure {:.2} bits of at most {:.2}",
        e.rank, e.log_perplexity, e.exposure, e.max_exposure
    );
    Ok(())
}
