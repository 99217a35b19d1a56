//! Reading the parity fixtures that tests/fixtures/make_parity_fixtures.py writes
//! (an independent float64 JAX implementation), loading their weights into our
//! parameters by name, and comparing tensors with a per-tensor relative error.
#![allow(dead_code)]

use serde::Deserialize;
use std::collections::BTreeMap;
use wgformer::autograd::{Param, Tape, Var};
use wgformer::kernels::cross_entropy::CrossEntropyOptions;

/// The fixture format this reader understands (the script's `VERSION`).
pub const VERSION: u32 = 1;

/// A row-major tensor as the script writes it.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Array {
    pub fn f32(&self) -> Vec<f32> {
        self.data.iter().map(|&x| x as f32).collect()
    }
    /// Token ids (the script writes them as integers).
    pub fn u32(&self) -> Vec<u32> {
        self.data
            .iter()
            .map(|&x| {
                assert!(x >= 0.0 && x.fract() == 0.0, "token id {x}");
                x as u32
            })
            .collect()
    }
    fn check(&self, what: &str) {
        let n: usize = self.shape.iter().product();
        assert_eq!(
            n,
            self.data.len(),
            "{what}: shape {:?} vs {} values",
            self.shape,
            self.data.len()
        );
    }
}

/// One loss configuration with its loss and gradients.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub label_smoothing: f32,
    pub ignore_index: Option<u32>,
    /// The key in `inputs` of this case's targets.
    pub targets: String,
    pub loss: f64,
    pub grads: BTreeMap<String, Array>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub version: u32,
    pub model: String,
    pub generator: String,
    /// The model's own serde config.
    pub config: serde_json::Value,
    pub params: BTreeMap<String, Array>,
    /// Arrays, plus scalars such as `pad_id`.
    pub inputs: BTreeMap<String, serde_json::Value>,
    pub logits: Array,
    pub cases: Vec<Case>,
}

impl Fixture {
    /// Reads tests/fixtures/`name` and checks its version and internal shapes.
    pub fn load(name: &str) -> Fixture {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e} (regenerate with make_parity_fixtures.py)"));
        let f: Fixture = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: not a parity fixture: {e}"));
        assert_eq!(f.version, VERSION, "{path}: fixture version");
        for (k, a) in &f.params {
            a.check(k);
        }
        f.logits.check("logits");
        for c in &f.cases {
            for (k, a) in &c.grads {
                a.check(k);
            }
        }
        f
    }

    pub fn input(&self, name: &str) -> Array {
        let v = self
            .inputs
            .get(name)
            .unwrap_or_else(|| panic!("fixture has no input {name:?}"));
        let a: Array =
            serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("input {name}: {e}"));
        a.check(name);
        a
    }

    /// Writes the fixture's weights into `params`, matched by name; the two sets of
    /// names and every shape must agree exactly (so a renamed or missing tensor fails).
    pub fn load_into(&self, params: &[Param]) {
        let ours: Vec<&str> = params.iter().map(|p| p.name()).collect();
        let theirs: Vec<&str> = self.params.keys().map(String::as_str).collect();
        let mut sorted = ours.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted, theirs,
            "parameter names: ours (left) vs the fixture's (right)"
        );
        for p in params {
            let a = &self.params[p.name()];
            assert_eq!(p.value().shape(), &a.shape[..], "shape of {}", p.name());
            p.value().write_f32(&a.f32()).unwrap();
        }
    }
}

/// max |ours - ref| / max(max |ref|, 1e-8) over one tensor: the error relative to
/// the tensor's scale, so entries that happen to be near zero do not dominate.
pub fn rel_err(ours: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len(), "lengths differ");
    let scale = reference
        .iter()
        .fold(0.0f64, |m, x| m.max(x.abs()))
        .max(1e-8);
    let diff = ours
        .iter()
        .zip(reference)
        .map(|(&a, &b)| {
            let d = (a as f64 - b).abs();
            if d.is_nan() {
                f64::INFINITY
            } else {
                d
            }
        })
        .fold(0.0f64, f64::max);
    diff / scale
}

/// Relative errors of several tensors; asserts them all under a tolerance and
/// names the worst ones when some are over.
#[derive(Default)]
pub struct Errors(Vec<(String, f64)>);

impl Errors {
    pub fn add(&mut self, name: impl Into<String>, ours: &[f32], reference: &[f64]) {
        self.0.push((name.into(), rel_err(ours, reference)));
    }

    pub fn worst(&self) -> (String, f64) {
        self.0
            .iter()
            .cloned()
            .fold((String::new(), 0.0), |w, e| if e.1 > w.1 { e } else { w })
    }

    #[track_caller]
    pub fn assert_below(&self, what: &str, tol: f64) {
        let mut bad: Vec<&(String, f64)> = self
            .0
            .iter()
            .filter(|e| e.1.is_nan() || e.1 > tol)
            .collect();
        let (name, worst) = self.worst();
        println!(
            "{what}: {} tensors, worst relative error {worst:.2e} ({name})",
            self.0.len()
        );
        if !bad.is_empty() {
            bad.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
            let list: Vec<String> = bad
                .iter()
                .take(10)
                .map(|(n, e)| format!("  {n}: {e:.3e}"))
                .collect();
            panic!(
                "{what}: {} of {} tensors over relative error {tol:e}; worst first:\n{}",
                bad.len(),
                self.0.len(),
                list.join("\n")
            );
        }
    }
}

/// Relative tolerance per tensor (max |ours - ref| / max |ref|).
pub const PARITY_TOL: f64 = 1e-4;

impl Fixture {
    /// Compares `logits` (already computed on `tape`), the case's loss over
    /// `targets` and, after the backward pass, every gradient of `params` with
    /// the fixture; panics naming the worst tensor if one is over [`PARITY_TOL`].
    pub fn compare_case(
        &self,
        case: &Case,
        what: &str,
        tape: &Tape,
        logits: &Var,
        targets: &[u32],
        params: &[Param],
    ) {
        assert_eq!(logits.shape(), &self.logits.shape[..], "logits shape");
        let opts = CrossEntropyOptions {
            label_smoothing: case.label_smoothing,
            ignore_index: case.ignore_index,
        };
        let loss = tape.cross_entropy(logits, targets, &opts).unwrap();
        let mut errs = Errors::default();
        errs.add(
            "logits",
            &logits.value().to_vec().unwrap(),
            &self.logits.data,
        );
        errs.add("loss", &loss.value().to_vec().unwrap(), &[case.loss]);
        tape.backward(&loss).unwrap();
        for p in params {
            let g = p
                .grad()
                .unwrap_or_else(|| panic!("{what}: no gradient for {}", p.name()));
            let reference = &case.grads[p.name()];
            assert_eq!(
                g.shape(),
                &reference.shape[..],
                "gradient shape of {}",
                p.name()
            );
            errs.add(
                format!("grad {}", p.name()),
                &g.to_vec().unwrap(),
                &reference.data,
            );
        }
        errs.assert_below(what, PARITY_TOL);
    }
}
