//! Evaluation of any model the runtime loads: perplexity (llama-perplexity's method), KL
//! divergence against a base model, log-likelihood scoring of multiple-choice and cloze tasks
//! (lm-evaluation-harness's definitions), and the quality gate that passes or fails an artifact.

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
