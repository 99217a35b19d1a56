//! `wgformer audit`: the exposure of a canary under a GPT checkpoint, or of a
//! canary target given its source under an encoder-decoder one (the
//! memorisation audit of "The Secret Sharer"; see `wgformer::privacy::audit`).

use super::flags::at_least_one;
use super::infer::load_gpt_with_tokenizer;
use super::{encode_known, load_transformer, model_type, usage};
use std::path::PathBuf;
use wgformer::checkpoint::checkpoint_tokenizer;
use wgformer::data::Tokenizer;
use wgformer::generate::sequence_nll;
use wgformer::privacy::audit::{exposure, AuditOptions, Method, SecretFormat};
use wgformer::privacy::pair_nll::target_nll;
use wgformer::{Gpu, Result};

/// Arguments of `wgformer audit`.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// A GPT or encoder-decoder checkpoint directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The canary text with its secret, e.g. "my PIN is 3816"; for an
    /// encoder-decoder, the target of the pair whose source is --source.
    #[arg(long)]
    pub canary: String,
    /// Encoder-decoder checkpoints: the source of the canary pair; each
    /// candidate target is scored by its log-perplexity given this source.
    #[arg(long)]
    pub source: Option<String>,
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

/// Log-perplexities in bits of candidate texts.
type Scorer<'a> = dyn FnMut(&[String]) -> Result<Vec<f64>> + 'a;

pub fn run(gpu: &Gpu, a: &AuditArgs) -> Result<()> {
    let format = SecretFormat::parse(&a.secret_format)?;
    let kind = model_type(&a.checkpoint)?;
    let check_known = |tok: &dyn Tokenizer| -> Result<()> {
        encode_known(tok, &a.canary, "--canary")?;
        encode_known(tok, &format.alphabet(), "--secret-format's characters")?;
        Ok(())
    };
    let bits = |nll: Vec<f64>| nll.iter().map(|x| x / std::f64::consts::LN_2).collect();
    // Log-perplexity in bits of each candidate text: a GPT's of the text, an
    // encoder-decoder's of the text as the target of --source.
    let mut score: Box<Scorer> = match (kind.as_str(), &a.source) {
        ("encoder_decoder", Some(source)) => {
            let model = load_transformer(gpu, &a.checkpoint)?;
            let tok = checkpoint_tokenizer(&a.checkpoint, model.config.vocab_size)?;
            check_known(tok.as_ref())?;
            let src = encode_known(tok.as_ref(), source, "--source")?;
            let sp = tok.specials();
            Box::new(move |texts: &[String]| {
                let ids: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t)).collect();
                Ok(bits(target_nll(
                    &model,
                    &src,
                    &ids,
                    (sp.bos, sp.eos),
                    a.batch,
                )?))
            })
        }
        ("encoder_decoder", None) => {
            return Err(usage(format!(
                "`{}` holds an encoder-decoder: give the source of the canary pair with \
                     --source (the canary is its target)",
                a.checkpoint.display()
            )))
        }
        (_, Some(_)) => {
            return Err(usage(format!(
                "--source is for encoder-decoder checkpoints; `{}` holds a `{kind}` model: \
                     leave --source out",
                a.checkpoint.display()
            )))
        }
        _ => {
            let (model, tok) = load_gpt_with_tokenizer(gpu, &a.checkpoint, true)?;
            let tok = tok.ok_or_else(|| usage("the checkpoint has no tokenizer"))?;
            check_known(tok.as_ref())?;
            Box::new(move |texts: &[String]| {
                let ids: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t)).collect();
                Ok(bits(sequence_nll(&model, &ids, a.batch)?))
            })
        }
    };
    let opts = AuditOptions {
        max_enumerate: a.max_enumerate,
        samples: a.samples,
        seed: a.seed,
        ..AuditOptions::default()
    };
    let e = exposure(&a.canary, &format, &mut *score, &opts)?;
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
