//! `wgformer privacy`: the privacy DP-SGD spends (epsilon at delta) for a
//! sampling rate, noise multiplier and number of steps, or the noise a budget
//! needs, from the RDP accountant alone (no GPU).

use super::usage;
use wgformer::privacy::{self, Conversion, RdpAccountant};
use wgformer::Result;

#[derive(clap::Args)]
pub struct PrivacyArgs {
    /// Poisson sampling rate: the expected batch size over the number of
    /// training examples (or give --batch and --examples).
    #[arg(long)]
    q: Option<f64>,
    /// Expected batch size (with --examples, instead of --q).
    #[arg(long, requires = "examples")]
    batch: Option<u64>,
    /// Number of training examples (with --batch, instead of --q).
    #[arg(long, requires = "batch")]
    examples: Option<u64>,
    /// Noise multiplier sigma: the noise's standard deviation over the clipping norm.
    #[arg(long)]
    noise: Option<f64>,
    /// Training steps.
    #[arg(long)]
    steps: u64,
    /// The delta of (epsilon, delta)-DP; below 1 / (number of examples) is usual.
    #[arg(long, default_value_t = 1e-5)]
    delta: f64,
    /// Instead of --noise: print the smallest noise multiplier within this epsilon.
    #[arg(long, conflicts_with = "noise")]
    epsilon: Option<f64>,
    /// Print JSON instead of a sentence.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &PrivacyArgs) -> Result<()> {
    let q = match (args.q, args.batch, args.examples) {
        (Some(q), None, None) => q,
        (None, Some(b), Some(n)) if n > 0 && b <= n => b as f64 / n as f64,
        (None, Some(b), Some(n)) => {
            return Err(usage(format!(
                "--batch {b} --examples {n}: the batch must be at most the number of examples, which must be above 0"
            )))
        }
        _ => return Err(usage("give the sampling rate with --q, or --batch and --examples")),
    };
    let noise = match (args.noise, args.epsilon) {
        (Some(sigma), None) => sigma,
        (None, Some(budget)) => privacy::noise_for_epsilon(q, args.steps, args.delta, budget)?,
        _ => {
            return Err(usage(
                "give --noise (to get epsilon) or --epsilon (to get the noise)",
            ))
        }
    };
    let mut accountant = RdpAccountant::new();
    accountant.compose(q, noise, args.steps)?;
    let (epsilon, order) = accountant.epsilon(args.delta, Conversion::Tight)?;
    if args.json {
        let record = serde_json::json!({
            "q": q, "noise_multiplier": noise, "steps": args.steps, "delta": args.delta,
            "epsilon": epsilon, "rdp_order": order,
        });
        println!("{record}");
    } else {
        println!(
            "{} steps at sampling rate {q:.6} with noise multiplier {noise:.4}: \
             ({epsilon:.4}, {})-DP (RDP order {order})",
            args.steps, args.delta
        );
    }
    Ok(())
}
