//! `wgformer plot`: the loss curves of one or several runs as an SVG, from
//! their step logs (`DIR.train.jsonl`: a line per run) and eval logs
//! (`DIR.eval.jsonl`: the held-out loss as dots of the same colour).

use super::flags::at_least_one;
use super::usage;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use wgformer::train::{eval_log_path, read_log, train_log_path};
use wgformer::{Error, Result};

/// Arguments of `wgformer plot`.
#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// Checkpoint directories of the runs (their --out); the logs beside them
    /// (DIR.train.jsonl, DIR.eval.jsonl) are read. A log's path names its run too.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// The SVG file to write.
    #[arg(long, default_value = "loss.svg")]
    pub out: PathBuf,
    /// Width in pixels.
    #[arg(long, default_value_t = 900, value_parser = at_least_one::<u32>)]
    pub width: u32,
    /// Height in pixels.
    #[arg(long, default_value_t = 540, value_parser = at_least_one::<u32>)]
    pub height: u32,
}

/// The loss curves of one run: (step, loss) of training and of evaluation.
struct Curves {
    name: String,
    train: Vec<(f64, f64)>,
    eval: Vec<(f64, f64)>,
}

/// (step, value of `key`) of every record that has both, the last record of a
/// step winning, in step order.
fn points(records: &[serde_json::Value], key: &str) -> Vec<(f64, f64)> {
    let mut by_step = BTreeMap::new();
    for r in records {
        let step = r.get("step").and_then(|s| s.as_u64());
        let value = r.get(key).and_then(|v| v.as_f64());
        if let (Some(step), Some(value)) = (step, value) {
            if value.is_finite() {
                by_step.insert(step, value);
            }
        }
    }
    by_step.into_iter().map(|(s, v)| (s as f64, v)).collect()
}

fn read_curves(dir: &Path) -> Result<Curves> {
    // A log itself names its run too: `runs/gpt.train.jsonl` is run `runs/gpt`.
    let as_text = dir.to_string_lossy();
    let dir = match [".train.jsonl", ".eval.jsonl"]
        .iter()
        .find_map(|suffix| as_text.strip_suffix(suffix))
    {
        Some(run) => Path::new(run),
        None => dir,
    };
    let train_log = train_log_path(dir);
    let eval_log = eval_log_path(dir);
    if !train_log.is_file() && !eval_log.is_file() {
        return Err(usage(format!(
            "no logs for run `{}`: neither {} nor {} exists. Pass the --out directory of a \
             `wgformer train` run",
            dir.display(),
            train_log.display(),
            eval_log.display()
        )));
    }
    let read = |p: &Path| -> Result<Vec<serde_json::Value>> {
        if p.is_file() {
            read_log(p)
        } else {
            Ok(Vec::new())
        }
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    Ok(Curves {
        name,
        train: points(&read(&train_log)?, "loss"),
        eval: points(&read(&eval_log)?, "eval_loss"),
    })
}

/// Runs `wgformer plot`.
pub fn run(a: &PlotArgs) -> Result<()> {
    let runs = a
        .runs
        .iter()
        .map(|d| read_curves(d))
        .collect::<Result<Vec<_>>>()?;
    let all: Vec<(f64, f64)> = runs
        .iter()
        .flat_map(|r| r.train.iter().chain(&r.eval).copied())
        .collect();
    if all.is_empty() {
        return Err(usage(
            "the runs' logs hold no loss yet: train for a step or more first",
        ));
    }
    let mut svg = String::new();
    draw(&runs, &all, (a.width, a.height), &mut svg)
        .map_err(|e| usage(format!("drawing the plot failed: {e}")))?;
    std::fs::write(&a.out, svg).map_err(|e| Error::Io {
        path: a.out.display().to_string(),
        source: e,
    })?;
    println!("wrote {} ({} runs)", a.out.display(), runs.len());
    Ok(())
}

/// Matplotlib's "tab10" colours: distinct, and readable on white.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Draws every run's training loss as a line and its held-out loss as dots.
fn draw(
    runs: &[Curves],
    all: &[(f64, f64)],
    size: (u32, u32),
    svg: &mut String,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let (x_max, y_min, y_max) = all.iter().fold(
        (1.0f64, f64::INFINITY, f64::NEG_INFINITY),
        |(x, lo, hi), &(s, v)| (x.max(s), lo.min(v), hi.max(v)),
    );
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let root = SVGBackend::with_string(svg, size).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("loss", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("loss (nats per token)")
        .draw()?;
    for (i, run) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let label = if run.eval.is_empty() {
            run.name.clone()
        } else {
            format!("{} (dots: held-out)", run.name)
        };
        chart
            .draw_series(LineSeries::new(
                run.train.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 3), (x + 16, y + 3)], color.filled()));
        chart.draw_series(run.eval.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}
