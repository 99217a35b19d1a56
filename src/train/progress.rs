//! Shows a run's [`TrainEvent`](super::TrainEvent)s: a progress bar (step, loss, learning rate,
//! tokens/s, epsilon of a private run, loss scale and skipped steps of an f16 run, ETA) on a terminal, plain lines when stderr is a file or a pipe.
//! Everything goes to stderr, so stdout holds only results. The reporter needs
//! the `cli` feature (indicatif); [`eval_line`] is always there.

use super::EvalMetrics;
#[cfg(feature = "cli")]
pub use reporter::ProgressReporter;

#[cfg(feature = "cli")]
mod reporter {
    use super::super::TrainEvent;
    use super::eval_line;
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::io::IsTerminal;
    use std::time::Instant;

    /// Turns events into a progress bar or log lines.
    pub struct ProgressReporter {
        bar: Option<ProgressBar>,
        /// Plain mode: print a line every this many steps.
        every: u32,
        start: Instant,
        first_step: u32,
        last_step: u32,
    }

    impl ProgressReporter {
        /// A bar when stderr is a terminal, else a line every `plain_every` steps.
        pub fn new(plain_every: u32) -> Self {
            let tty = std::io::stderr().is_terminal();
            ProgressReporter {
                bar: tty.then(ProgressBar::hidden),
                every: plain_every.max(1),
                start: Instant::now(),
                first_step: 1,
                last_step: 1,
            }
        }

        /// Prints a line without breaking the bar.
        pub fn println(&self, line: &str) {
            match &self.bar {
                Some(bar) => bar.println(line),
                None => eprintln!("{line}"),
            }
        }

        /// Handles one event.
        pub fn on_event(&mut self, event: &TrainEvent) {
            match event {
                TrainEvent::Start {
                    first_step,
                    last_step,
                    params,
                    trainable,
                    flops_per_token,
                } => {
                    self.first_step = *first_step;
                    self.last_step = *last_step;
                    self.start = Instant::now();
                    let frozen = if trainable < params {
                        format!(" ({trainable} trainable)")
                    } else {
                        String::new()
                    };
                    self.println(&format!(
                    "{params} parameters{frozen}, {:.2} MFLOP per token (training), steps {first_step}..={last_step}",
                    flops_per_token / 1e6
                ));
                    if let Some(bar) = &self.bar {
                        bar.set_draw_target(ProgressDrawTarget::stderr());
                        bar.set_length((*last_step + 1).saturating_sub(*first_step) as u64);
                        bar.set_position(0);
                        let style = ProgressStyle::with_template(
                            "{bar:30.cyan/blue} step {msg} [{elapsed_precise} < {eta_precise}]",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar());
                        bar.set_style(style);
                    }
                }
                TrainEvent::Step {
                    step,
                    loss,
                    lr,
                    tokens_per_s,
                    epsilon,
                    loss_scale,
                } => {
                    // A DP-SGD step that drew no example has no loss to show.
                    let loss = match loss {
                        Some(loss) => format!("loss {loss:.4}"),
                        None => "no example drawn".to_string(),
                    };
                    let mut msg = format!(
                        "{step}/{} {loss} lr {lr:.2e} {tokens_per_s:.0} tok/s",
                        self.last_step
                    );
                    if let Some(eps) = epsilon {
                        msg += &format!(" eps {eps:.3}");
                    }
                    if let Some(s) = loss_scale {
                        msg += &format!(" scale {} skipped {}", s.scale, s.skipped);
                    }
                    match &self.bar {
                        Some(bar) => {
                            bar.set_position((step + 1 - self.first_step) as u64);
                            bar.set_message(msg);
                        }
                        None => {
                            if step % self.every == 0
                                || *step == self.last_step
                                || *step == self.first_step
                            {
                                let done = (step + 1 - self.first_step) as f64;
                                let left = (self.last_step - step) as f64;
                                let eta = self.start.elapsed().as_secs_f64() / done * left;
                                eprintln!("step {msg}, eta {eta:.0} s");
                            }
                        }
                    }
                }
                TrainEvent::Eval { step, metrics } => self.println(&eval_line(*step, metrics)),
                TrainEvent::BudgetReached { step, privacy } => self.println(&format!(
                "step {step}: stopped, one more step would exceed the privacy budget ({} spent \
                 of --dp-epsilon {})",
                privacy.describe(),
                privacy.options.epsilon.unwrap_or(f64::INFINITY)
            )),
                TrainEvent::Checkpoint { step, dir } => {
                    if self.bar.is_none() || *step == self.last_step {
                        self.println(&format!("step {step}: saved checkpoint {}", dir.display()));
                    }
                }
            }
        }

        /// Removes the bar (call when the run ends).
        pub fn finish(&self) {
            if let Some(bar) = &self.bar {
                bar.finish_and_clear();
            }
        }
    }
}

/// One line describing an evaluation.
pub fn eval_line(step: u32, m: &EvalMetrics) -> String {
    let mut line = format!(
        "step {step}: held-out loss {:.4}, perplexity {:.3} ({} tokens)",
        m.loss, m.perplexity, m.tokens
    );
    if let (Some(acc), Some(n)) = (m.exact_match, m.examples) {
        line += &format!(", exact match {:.2}% of {n}", 100.0 * acc);
    }
    if let Some(points) = m.in_context.as_deref().filter(|p| !p.is_empty()) {
        let by_k: Vec<String> = points
            .iter()
            .map(|p| format!("{} {:.0}%", p.examples, 100.0 * p.accuracy))
            .collect();
        line += &format!(
            "; accuracy with K examples: {} (chance {:.0}%)",
            by_k.join(", "),
            100.0 * points[0].chance
        );
    }
    line
}
