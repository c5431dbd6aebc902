//! Log-likelihood scoring as lm-evaluation-harness does it for causal models, and the task
//! metrics built on it: acc (the choice with the highest log-likelihood), acc_norm (the highest
//! log-likelihood per character of the choice), greedy accuracy and perplexity for cloze tasks,
//! each with its standard error.
//!
//! Speed comes from the KV cache: consecutive requests share their longest common token prefix
//! (every choice of an item shares its context, MMLU items of a subject share the few-shot
//! prompt), so only what differs is evaluated; items are spread over worker threads in
//! contiguous runs, each with its own cache.

use std::time::Instant;

use rayon::prelude::*;
use runtime::{KvCache, Model, Tokenizer};
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::perplexity::log_sum_exp;
use crate::stats::{Estimate, Moments};
use crate::tasks::{Doc, Kind, Metric, Task};

/// The score of one request.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RequestScore {
    /// Σ log p(continuation token | everything before), in nats.
    pub loglik: f64,
    /// Whether greedy decoding would have produced the continuation.
    pub greedy: bool,
    pub tokens: usize,
}

/// Tokenizes a (context, continuation) pair as lm-eval's `_encode_pair`: trailing whitespace of
/// the context moves to the continuation, the continuation's tokens are those of the whole text
/// after the context's tokens, and the tokenizer adds BOS when the model expects it. An empty
/// context becomes the BOS token (or EOS), as lm-eval's prefix token.
pub fn encode_pair(
    tok: &Tokenizer,
    context: &str,
    continuation: &str,
) -> Result<(Vec<u32>, Vec<u32>)> {
    if context.is_empty() {
        let prefix = tok.bos().or(tok.eos().first().copied()).ok_or_else(|| {
            EvalError::Option("an empty context needs a BOS or EOS token to condition on".into())
        })?;
        return Ok((vec![prefix], tok.encode(continuation, true)?));
    }
    let trimmed = context.trim_end();
    let whole = tok.encode(&format!("{context}{continuation}"), true)?;
    let ctx = tok.encode(trimmed, true)?;
    let cont = whole.get(ctx.len()..).unwrap_or_default().to_vec();
    Ok((ctx, cont))
}

/// Scores requests one after another, reusing the cache for the common prefix of consecutive
/// requests.
struct Scorer<'m> {
    model: &'m Model,
    cache: KvCache,
    cached: Vec<u32>,
    max_len: usize,
}

impl<'m> Scorer<'m> {
    fn new(model: &'m Model) -> Scorer<'m> {
        Scorer {
            model,
            cache: model.new_cache(),
            cached: Vec::new(),
            max_len: model.config.max_position_embeddings.max(1),
        }
    }

    fn score(&mut self, ctx: &[u32], cont: &[u32]) -> Result<RequestScore> {
        if cont.is_empty() {
            return Err(EvalError::Option(
                "a continuation tokenizes to nothing".into(),
            ));
        }
        if cont.len() > self.max_len {
            return Err(EvalError::Option(format!(
                "a continuation of {} tokens exceeds the model's {} positions",
                cont.len(),
                self.max_len
            )));
        }
        // The model sees everything but the last token, left-truncated to its positions.
        let mut seq: Vec<u32> = ctx.iter().chain(cont).copied().collect();
        seq.pop();
        let drop = seq.len().saturating_sub(self.max_len);
        let input = &seq[drop..];
        let first_scored = ctx.len() - 1 - drop.min(ctx.len() - 1);
        let common = self
            .cached
            .iter()
            .zip(input)
            .take_while(|(a, b)| a == b)
            .count();
        // Recompute at least the position whose logits predict the first continuation token.
        let start = common.min(first_scored);
        self.cache.truncate(start);
        self.cached.truncate(start);
        let logits = self
            .model
            .forward(&input[start..], &mut self.cache, first_scored - start);
        self.cached.extend_from_slice(&input[start..]);
        let vocab = self.model.output.rows();
        let mut score = RequestScore {
            loglik: 0.0,
            greedy: true,
            tokens: cont.len(),
        };
        for (row, &t) in logits.chunks_exact(vocab).zip(cont) {
            score.loglik += row[t as usize] as f64 - log_sum_exp(row);
            score.greedy &= runtime::generate::argmax(row) == t;
        }
        Ok(score)
    }
}

/// Scores every request of `docs` (`concurrency` items at a time, 1 = one after another);
/// `on_doc` is called once per item scored.
pub fn score_docs(
    model: &Model,
    docs: &[Doc],
    concurrency: usize,
    on_doc: impl Fn() + Sync,
) -> Result<Vec<Vec<RequestScore>>> {
    let tok = model.tokenizer().ok_or_else(|| EvalError::NoTokenizer {
        model: model.source.clone(),
    })?;
    let vocab = model.output.rows();
    let run = |docs: &[Doc]| -> Result<Vec<Vec<RequestScore>>> {
        let mut s = Scorer::new(model);
        docs.iter()
            .map(|d| {
                let r = d
                    .requests
                    .iter()
                    .map(|r| {
                        let (ctx, cont) = encode_pair(tok, &r.context, &r.continuation)?;
                        if let Some(&bad) = ctx.iter().chain(&cont).find(|&&t| t as usize >= vocab)
                        {
                            return Err(EvalError::Option(format!(
                                "token id {bad} is outside {}'s vocabulary of {vocab}",
                                model.source
                            )));
                        }
                        s.score(&ctx, &cont)
                    })
                    .collect::<Result<Vec<_>>>();
                on_doc();
                r
            })
            .collect()
    };
    if concurrency <= 1 || docs.len() < 2 {
        return run(docs);
    }
    // Contiguous runs keep neighbouring items (which share prompts) on one cache; several runs
    // per worker balance uneven item lengths.
    let chunk = docs.len().div_ceil(concurrency * 4).max(1);
    let parts: Vec<Result<Vec<Vec<RequestScore>>>> = docs.par_chunks(chunk).map(run).collect();
    let mut out = Vec::with_capacity(docs.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// A task's metrics.
#[derive(Clone, Debug, Serialize)]
pub struct TaskResult {
    pub task: String,
    pub items: usize,
    pub shots: usize,
    pub acc: Estimate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc_norm: Option<Estimate>,
    /// Cloze tasks: exp(−mean log-likelihood of the continuation), error by the delta method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppl: Option<Estimate>,
    pub primary: Metric,
    /// Per sub-task (MMLU subject).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupResult>,
    pub seconds: f64,
    pub items_per_second: f64,
    /// Per item, whether the primary metric counted it right (for paired comparisons).
    #[serde(skip)]
    pub correct: Vec<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupResult {
    pub name: String,
    pub items: usize,
    pub acc: Estimate,
}

impl TaskResult {
    pub fn primary_value(&self) -> Estimate {
        match self.primary {
            Metric::AccNorm => self.acc_norm.unwrap_or(self.acc),
            Metric::Acc => self.acc,
        }
    }

    pub fn primary_name(&self) -> &'static str {
        match self.primary {
            Metric::AccNorm if self.acc_norm.is_some() => "acc_norm",
            _ => "acc",
        }
    }
}

/// The index of the first maximum (numpy's argmax).
fn argmax(v: impl Iterator<Item = f64>) -> usize {
    v.enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

/// Whether each doc is answered right by acc and by acc_norm.
pub fn judge(doc: &Doc, kind: Kind, scores: &[RequestScore]) -> (bool, bool) {
    match kind {
        Kind::Cloze => (scores[0].greedy, scores[0].greedy),
        Kind::MultipleChoice => {
            let acc = argmax(scores.iter().map(|s| s.loglik)) == doc.gold;
            let norm = argmax(
                scores
                    .iter()
                    .zip(&doc.choice_chars)
                    .map(|(s, &n)| s.loglik / n.max(1) as f64),
            ) == doc.gold;
            (acc, norm)
        }
    }
}

/// The metrics of `task` from its scores.
pub fn summarize(task: &Task, scores: &[Vec<RequestScore>], seconds: f64) -> TaskResult {
    let (mut acc, mut norm, mut nll) = (Moments::default(), Moments::default(), Moments::default());
    let mut groups: Vec<(String, Moments)> = Vec::new();
    let mut correct = Vec::with_capacity(scores.len());
    for (doc, s) in task.docs.iter().zip(scores) {
        let (a, n) = judge(doc, task.kind, s);
        acc.push(a as u8 as f64);
        norm.push(n as u8 as f64);
        if task.kind == Kind::Cloze {
            nll.push(-s[0].loglik);
        }
        if let Some(g) = &doc.group {
            match groups.last_mut() {
                Some((name, m)) if name == g => m.push(a as u8 as f64),
                _ => {
                    let mut m = Moments::default();
                    m.push(a as u8 as f64);
                    groups.push((g.clone(), m));
                }
            }
        }
        correct.push(match task.primary {
            Metric::AccNorm if task.acc_norm => n,
            _ => a,
        });
    }
    TaskResult {
        task: task.name.clone(),
        items: scores.len(),
        shots: task.shots,
        acc: acc.estimate(),
        acc_norm: task.acc_norm.then(|| norm.estimate()),
        ppl: (task.kind == Kind::Cloze).then(|| nll.estimate().exp()),
        primary: task.primary,
        groups: groups
            .into_iter()
            .map(|(name, m)| GroupResult {
                name,
                items: m.count,
                acc: m.estimate(),
            })
            .collect(),
        seconds,
        items_per_second: scores.len() as f64 / seconds.max(1e-9),
        correct,
    }
}

/// Scores and summarizes a task.
pub fn evaluate(
    model: &Model,
    task: &Task,
    concurrency: usize,
    on_doc: impl Fn() + Sync,
) -> Result<(TaskResult, Vec<Vec<RequestScore>>)> {
    let t0 = Instant::now();
    let scores = score_docs(model, &task.docs, concurrency, on_doc)?;
    let r = summarize(task, &scores, t0.elapsed().as_secs_f64());
    Ok((r, scores))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::Request;
    use runtime::model::synthetic::SyntheticSpec;

    /// The log-likelihood of `cont` after `ctx` from one fresh forward pass, in float64.
    fn direct(model: &Model, ctx: &[u32], cont: &[u32]) -> (f64, bool) {
        let seq: Vec<u32> = ctx.iter().chain(cont).copied().collect();
        let mut c = model.new_cache();
        let logits = model.forward(&seq[..seq.len() - 1], &mut c, 0);
        let v = model.output.rows();
        let (mut ll, mut greedy) = (0.0, true);
        for (i, &t) in cont.iter().enumerate() {
            let row = &logits[(ctx.len() - 1 + i) * v..][..v];
            let m = row.iter().copied().fold(f32::MIN, f32::max) as f64;
            let z: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
            ll += row[t as usize] as f64 - m - z.ln();
            greedy &= row.iter().all(|&x| x <= row[t as usize]);
        }
        (ll, greedy)
    }

    #[test]
    fn cached_prefixes_give_the_scores_of_fresh_passes() {
        let model = SyntheticSpec::default().build(11);
        let mut s = Scorer::new(&model);
        let ctx_a: Vec<u32> = vec![3, 9, 27, 81, 50];
        let ctx_b: Vec<u32> = vec![3, 9, 27, 11];
        // Same context twice (choices), a context sharing a prefix, a repeat, a one-token context.
        for (ctx, cont) in [
            (&ctx_a[..], &[7u32, 8, 9][..]),
            (&ctx_a[..], &[7, 60][..]),
            (&ctx_b[..], &[7, 8, 9][..]),
            (&ctx_b[..], &[7, 8, 9][..]),
            (&ctx_a[..1], &[42][..]),
        ] {
            let got = s.score(ctx, cont).unwrap();
            let (ll, greedy) = direct(&model, ctx, cont);
            assert!((got.loglik - ll).abs() < 1e-4, "{} vs {ll}", got.loglik);
            assert_eq!(got.greedy, greedy);
        }
    }

    #[test]
    fn long_inputs_are_left_truncated_to_the_model_positions() {
        let mut model = SyntheticSpec::default().build(2);
        model.config.max_position_embeddings = 6;
        let mut s = Scorer::new(&model);
        let ctx: Vec<u32> = (1..10).collect();
        let got = s.score(&ctx, &[20, 21]).unwrap();
        // lm-eval keeps the last max_length + 1 tokens and drops the final one as input.
        let (ll, _) = direct(&model, &ctx[4..], &[20, 21]);
        assert!((got.loglik - ll).abs() < 1e-4);
    }

    #[test]
    fn acc_and_acc_norm_follow_lm_eval() {
        let doc = Doc {
            requests: vec![
                Request {
                    context: "q".into(),
                    continuation: " a".into()
                };
                3
            ],
            choice_chars: vec![1, 10, 4],
            gold: 1,
            group: None,
        };
        let s = |ll: f64| RequestScore {
            loglik: ll,
            greedy: false,
            tokens: 1,
        };
        // acc picks −2 (index 0); per character −2/1, −5/10, −3/4 → index 1.
        let scores = [s(-2.0), s(-5.0), s(-3.0)];
        assert_eq!(judge(&doc, Kind::MultipleChoice, &scores), (false, true));
        // Ties go to the first choice, as numpy's argmax.
        assert_eq!(argmax([1.0, 3.0, 3.0].into_iter()), 1);
    }
}
