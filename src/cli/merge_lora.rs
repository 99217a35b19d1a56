//! `wgformer merge-lora`: folds a LoRA run's adapters into its weights and saves
//! an ordinary checkpoint (no adapter files, no optimiser or trainer state) that
//! any tool loads as a plain model.

use super::flags::SaveDtypeFlag;
use super::{model_type, usage};
use std::path::{Path, PathBuf};
use wgformer::checkpoint::{LoadReport, SaveDtype, SaveOptions};
use wgformer::nn::{Gpt, Llama, Transformer};
use wgformer::{ErrorKind, Gpu, Result};

/// `wgformer merge-lora`'s arguments.
#[derive(clap::Args, Debug)]
pub struct MergeLoraArgs {
    /// A checkpoint of a LoRA run (`train --init-from ... --lora-rank R`): the
    /// base weights with adapter_model.safetensors and adapter_config.json.
    pub checkpoint: PathBuf,
    /// Where to write the merged checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace a checkpoint already at --out.
    #[arg(long)]
    pub overwrite: bool,
    /// How the merged weights are stored: f32, or f16 / bf16 at half the size.
    #[arg(long, value_enum, default_value_t = SaveDtypeFlag::F32)]
    pub save_dtype: SaveDtypeFlag,
}

/// Loads `a.checkpoint` (a model's `load` merges its adapter) and saves it
/// plain, with its tokenizer, to `a.out`.
pub fn run(gpu: &Gpu, a: &MergeLoraArgs) -> Result<()> {
    let from = &a.checkpoint;
    let out = &a.out;
    let dtype = SaveDtype::from(a.save_dtype);
    if same_dir(from, out) {
        return Err(usage(
            "--out is the LoRA checkpoint itself: write the merged model to another directory",
        ));
    }
    if out.exists() && !a.overwrite {
        return Err(usage(format!(
            "{} exists: pick another --out or add --overwrite",
            out.display()
        )));
    }
    let report = match model_type(from)?.as_str() {
        "gpt2" => save_merged(
            from,
            out,
            dtype,
            Gpt::load_with_report(gpu, from)?,
            |m, dir| m.load_tokenizer(dir),
        )?,
        "llama" => save_merged(
            from,
            out,
            dtype,
            Llama::load_with_report(gpu, from)?,
            |m, dir| m.load_tokenizer(dir),
        )?,
        "encoder_decoder" => save_merged(
            from,
            out,
            dtype,
            Transformer::load_with_report(gpu, from)?,
            |m, dir| m.load_tokenizer(dir),
        )?,
        other => {
            return Err(usage(format!(
                "{} is a `{other}` checkpoint; merge-lora reads gpt2, llama and encoder_decoder",
                from.display()
            )))
        }
    };
    println!(
        "merged the LoRA adapters of {} weights from {} into {}",
        report.merged_adapters,
        from.display(),
        out.display()
    );
    Ok(())
}

/// A loaded model that can save itself.
trait Saveable {
    fn save_to(&self, dir: &Path, options: &SaveOptions) -> Result<()>;
}

macro_rules! saveable {
    ($($model:ty),*) => {$(
        impl Saveable for $model {
            fn save_to(&self, dir: &Path, options: &SaveOptions) -> Result<()> {
                self.save(dir, options)
            }
        }
    )*};
}
saveable!(Gpt, Llama, Transformer);

fn save_merged<M: Saveable>(
    from: &Path,
    out: &Path,
    dtype: SaveDtype,
    (model, report): (M, LoadReport),
    tokenizer: impl Fn(&M, &Path) -> Result<Box<dyn wgformer::data::Tokenizer>>,
) -> Result<LoadReport> {
    if report.merged_adapters == 0 {
        return Err(usage(format!(
            "{} has no LoRA adapter (adapter_config.json): there is nothing to merge",
            from.display()
        )));
    }
    // A base model from Hugging Face may come without our tokenizer files.
    let tokenizer = match tokenizer(&model, from) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let options = SaveOptions {
        tokenizer: tokenizer.as_deref(),
        dtype,
        ..Default::default()
    };
    model.save_to(out, &options)?;
    Ok(report)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
