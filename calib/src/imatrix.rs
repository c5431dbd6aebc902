//! Importance matrices as llama-imatrix (c392e50) collects them: per input column, Σx² of the
//! activations entering each block weight (attn_q/k/v share the attention norm's output, ffn_gate
//! and ffn_up the MLP norm's, under llama.cpp's weight names), with the rows seen as the count.
//! Only forward calls of at least 16 tokens count, as llama-imatrix ignores smaller batches.
//! Text input is cut like llama-imatrix cuts it: one tokenization of the whole text (BOS first
//! when the model adds one), consecutive chunks of `n_ctx` tokens, each chunk's first token
//! replaced by BOS when the model adds one.

use std::collections::BTreeMap;

use quant::imatrix::{Imatrix, ImatrixEntry, ImatrixFormat};
use runtime::model::LinearKind;
use runtime::tokenizer::Tokenizer;
use runtime::Model;

use crate::stats::{ActivationStats, InputSite};
use crate::CalibError;

/// llama-imatrix's smallest batch: shorter matrix products are not collected.
pub const MIN_TOKENS: usize = 16;

/// The GGUF weights that read an input site.
fn weight_names(layer: usize, site: InputSite) -> Vec<String> {
    LinearKind::ALL
        .iter()
        .filter(|k| InputSite::of(**k) == site)
        .map(|k| format!("blk.{layer}.{}.weight", k.gguf_name()))
        .collect()
}

/// Cuts `text` into llama-imatrix's chunks of `n_ctx` tokens (at most `max_chunks`).
pub fn text_chunks(
    tok: &Tokenizer,
    text: &str,
    n_ctx: usize,
    max_chunks: Option<usize>,
) -> Result<Vec<Vec<u32>>, CalibError> {
    if n_ctx < MIN_TOKENS {
        return Err(CalibError::Invalid(format!(
            "a context of {n_ctx} tokens is below llama-imatrix's minimum batch of {MIN_TOKENS}"
        )));
    }
    let tokens = tok
        .encode(text, true)
        .map_err(|e| CalibError::Invalid(e.to_string()))?;
    if tokens.len() < 2 * n_ctx {
        return Err(CalibError::Invalid(format!(
            "the text tokenizes to {} tokens; a context of {n_ctx} needs at least {} (as llama-imatrix)",
            tokens.len(),
            2 * n_ctx
        )));
    }
    let bos = tok.adds_bos().then(|| tok.bos()).flatten();
    let n = (tokens.len() / n_ctx).min(max_chunks.unwrap_or(usize::MAX));
    Ok(tokens
        .chunks_exact(n_ctx)
        .take(n)
        .map(|c| {
            let mut c = c.to_vec();
            if let Some(b) = bos {
                c[0] = b;
            }
            c
        })
        .collect())
}

/// Runs `model` over `chunks` (each one forward call; those under 16 tokens are skipped) and
/// returns the importance matrix in the GGUF format's terms: Σx² per column and the rows seen.
/// `dataset` is recorded in the file, `progress` called after each chunk.
pub fn collect_imatrix(
    model: &Model,
    chunks: &[Vec<u32>],
    dataset: &str,
    progress: impl FnMut(usize),
) -> Imatrix {
    let used: Vec<Vec<u32>> = chunks
        .iter()
        .filter(|c| c.len() >= MIN_TOKENS)
        .cloned()
        .collect();
    let stats: ActivationStats = crate::stats::collect(model, &used, progress);
    let mut entries = BTreeMap::new();
    for (&(layer, site), s) in stats.sites() {
        let in_sum2: Vec<f32> = s.sum_sq.iter().map(|&v| v as f32).collect();
        for name in weight_names(layer, site) {
            let e = ImatrixEntry {
                in_sum2: in_sum2.clone(),
                counts: vec![s.tokens as f32],
            };
            entries.insert(name, e);
        }
    }
    Imatrix {
        format: ImatrixFormat::Gguf,
        entries,
        datasets: vec![dataset.to_owned()],
        chunk_count: used.len() as u32,
        chunk_size: used.iter().map(Vec::len).max().unwrap_or(0) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::model::synthetic::SyntheticSpec;

    #[test]
    fn entries_cover_every_block_weight_with_rows_as_counts() {
        let spec = SyntheticSpec::default();
        let model = spec.build(3);
        let chunks: Vec<Vec<u32>> = vec![
            (0..20).map(|i| i % 90).collect(),
            (0..15).collect(), // under 16 tokens: not collected
            (5..40).collect(),
        ];
        let mut calls = 0;
        let im = collect_imatrix(&model, &chunks, "t.txt", |n| calls = n);
        assert_eq!(calls, 2);
        assert_eq!(im.chunk_count, 2);
        assert_eq!(im.entries.len(), 7 * spec.layers);
        let q = &im.entries["blk.1.attn_q.weight"];
        assert_eq!(q.counts, [55.0]);
        assert_eq!(q.in_sum2.len(), spec.hidden);
        assert_eq!(q, &im.entries["blk.1.attn_v.weight"]);
        assert_eq!(
            im.entries["blk.0.ffn_down.weight"].in_sum2.len(),
            spec.intermediate
        );
        // Σx² of the first block's q input, directly: the normed embeddings
        let mut direct = 0.0f64;
        for c in [&chunks[0], &chunks[2]] {
            let x = model.embed_tokens(c);
            let mut h = vec![0f32; x.len()];
            kernels::ops::rms_norm(&x, &model.layers[0].attn_norm, 1e-5, &mut h);
            direct += h
                .chunks_exact(spec.hidden)
                .map(|r| (r[5] as f64).powi(2))
                .sum::<f64>();
        }
        let got = im.entries["blk.0.attn_k.weight"].in_sum2[5] as f64;
        assert!((got - direct).abs() <= 1e-6 * direct, "{got} vs {direct}");
    }
}
