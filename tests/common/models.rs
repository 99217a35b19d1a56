//! Small models and checkpoints for tests: random weights by name, a tiny
//! encoder-decoder, a checkpoint's complete file list, weights damaged in place.

use wgformer::autograd::Param;
use wgformer::nn::TransformerConfig;
use wgformer::reference::transformer::Weights;

/// Overwrites every parameter with `scale` x values in [-1, 1) (norm gains
/// around 1, so that each term shows) and returns them by name in f64.
pub fn randomise(params: &[Param], seed: u64, scale: f32) -> Weights {
    let mut weights = Weights::new();
    for (i, p) in params.iter().enumerate() {
        let mut v = super::data(p.value().numel(), seed * 1000 + i as u64);
        let name = p.name();
        for x in &mut v {
            *x *= scale;
            if name.contains("ln") && name.ends_with(".weight") {
                *x += 1.0;
            }
        }
        p.value().write_f32(&v).unwrap();
        weights.insert(name.to_string(), super::to_f64(&v));
    }
    weights
}

/// An encoder-decoder of one layer each (d_model 8, 2 heads, 11 tokens, 8
/// positions): the smallest the checkpoint tests save and load.
pub fn tiny_encdec() -> TransformerConfig {
    TransformerConfig {
        vocab_size: 11,
        d_model: 8,
        d_ff: 16,
        n_heads: 2,
        n_encoder_layers: 1,
        n_decoder_layers: 1,
        max_len: 8,
        ..TransformerConfig::small()
    }
}

/// Asserts that checkpoint `dir` (of a run with a character tokenizer) holds
/// everything a resumed run needs.
#[track_caller]
pub fn assert_complete_checkpoint(dir: &std::path::Path) {
    use wgformer::checkpoint::{CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, TRAINER_STATE_FILE};
    for f in [
        MODEL_FILE,
        OPTIMIZER_FILE,
        CONFIG_FILE,
        TRAINER_STATE_FILE,
        wgformer::data::CharTokenizer::FILE,
    ] {
        assert!(dir.join(f).is_file(), "{f} missing from {}", dir.display());
    }
}

/// Rewrites safetensors file `file` (as a valid file, checksum and all) with
/// `value` at element `index` of tensor `tensor`: a checkpoint whose weights are
/// damaged in a way no byte check catches.
pub fn set_tensor_value(file: &std::path::Path, tensor: &str, index: usize, value: f32) {
    use wgformer::safetensors::{serialize, SafeTensors, TensorRef};
    let st = SafeTensors::read(file).unwrap();
    let names: Vec<String> = st.names().map(String::from).collect();
    let mut values: Vec<Vec<f32>> = names.iter().map(|n| st.to_f32(n).unwrap()).collect();
    let i = names.iter().position(|n| n == tensor).unwrap();
    values[i][index] = value;
    let tensors: Vec<TensorRef> = names
        .iter()
        .zip(&values)
        .map(|(name, data)| TensorRef {
            name,
            shape: &st.info(name).unwrap().shape,
            data,
        })
        .collect();
    std::fs::write(file, serialize(&tensors, st.metadata(), true).unwrap()).unwrap();
}
