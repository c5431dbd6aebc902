//! The base model's side of a KL-divergence comparison, computed once and reused.
//!
//! llama-perplexity stores every scored position's full log-probability vector as uint16 (98 KB
//! per token for a 49k vocabulary). What KLD needs is less: the NLL of the correct token, the base's
//! most likely tokens with their log-probabilities, and the mass of all the others. A record keeps
//! the smallest set of most likely tokens whose complement (the tail) holds at most `tail_mass` of
//! the probability (up to `max_top` tokens), in float32, and the tail as one number; the KLD computed
//! from it is a lower bound of the full sum, short by at most tail × (the divergence within the
//! tail) — see [`crate::kld::position_stats`]. Measured on SmolLM2 (F32 base, Q4_K_M candidate,
//! wiki text, 3 chunks of 512): a tail of 10⁻³ keeps 4,000 tokens per position on average (24 KB,
//! a quarter of llama.cpp's 98 KB) and reports a mean KLD 0.2% below the exact value; 10⁻⁴ keeps
//! 10,600 (64 KB), 0.02% below; 0 keeps every token and is exact.
//!
//! File layout (little-endian): magic `QZBASELP`, u32 version, u32 header length, the header as
//! JSON (base model, tokenizer fingerprint, chunk plan, vocabulary, record parameters), the
//! evaluated token ids (u32 × chunks × ctx), one record per scored position (f32 NLL, f32 tail mass,
//! u32 count k, k token ids as u16 — u32 for vocabularies over 65,536 — and k f32 log-probs), and a
//! sha256 of everything before it, so truncation or corruption is detected before use.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use runtime::Model;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{EvalError, Result};
use crate::perplexity::{for_each_chunk, log_sum_exp, ChunkPlan, NllSum, Perplexity};
use crate::vocab::TokenizerFingerprint;

pub const MAGIC: &[u8; 8] = b"QZBASELP";
pub const VERSION: u32 = 1;

/// How much of each base distribution a record keeps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaseOptions {
    /// Keep the most likely tokens until the rest holds at most this probability mass (0 keeps
    /// every token: exact KLD).
    pub tail_mass: f64,
    /// But never more than this many tokens per position.
    pub max_top: usize,
}

impl Default for BaseOptions {
    fn default() -> Self {
        BaseOptions {
            tail_mass: 1e-3,
            max_top: 16384,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaseHeader {
    /// The base model, as the runtime describes it.
    pub model: String,
    pub tokenizer: TokenizerFingerprint,
    pub plan: ChunkPlan,
    /// Width of the base's logits.
    pub vocab: usize,
    pub options: BaseOptions,
}

impl BaseHeader {
    fn id_bytes(&self) -> usize {
        if self.vocab <= 1 << 16 {
            2
        } else {
            4
        }
    }
}

/// One scored position of the base: the correct token's NLL, the kept tokens (most likely first)
/// with their log-probabilities, and the probability of all the others.
#[derive(Clone, Copy, Debug)]
pub struct BaseRecord<'a> {
    pub nll: f32,
    pub tail: f32,
    pub ids: &'a [u32],
    pub logprobs: &'a [f32],
}

#[derive(Clone, Debug, PartialEq)]
pub struct OwnedRecord {
    pub nll: f32,
    pub tail: f32,
    pub ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    /// The correct token's NLL before rounding to f32.
    pub nll64: f64,
}

impl OwnedRecord {
    pub fn as_record(&self) -> BaseRecord<'_> {
        BaseRecord {
            nll: self.nll,
            tail: self.tail,
            ids: &self.ids,
            logprobs: &self.logprobs,
        }
    }
}

/// The record of one row of base logits predicting `target`.
pub fn compress_row(row: &[f32], target: u32, tail_mass: f64, max_top: usize) -> OwnedRecord {
    let lse = log_sum_exp(row);
    // Tokens below tail_mass/vocab can all be left out together (their sum stays under
    // tail_mass), so only the others need sorting.
    let floor = if tail_mass > 0.0 {
        (tail_mass / row.len() as f64).ln()
    } else {
        f64::NEG_INFINITY
    };
    let mut cand: Vec<(u32, f64)> = Vec::new();
    let mut tail = 0.0f64;
    for (i, &x) in row.iter().enumerate() {
        let lp = x as f64 - lse;
        if lp >= floor {
            cand.push((i as u32, lp));
        } else {
            tail += lp.exp();
        }
    }
    // Most likely first; equal values by id, so the first entry is the argmax llama.cpp reports.
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let suffix: Vec<f64> = {
        let mut s = vec![0.0; cand.len() + 1];
        for i in (0..cand.len()).rev() {
            s[i] = s[i + 1] + cand[i].1.exp();
        }
        s
    };
    let limit = max_top.clamp(1, cand.len().max(1));
    let k = (1..=limit)
        .find(|&k| tail + suffix[k] <= tail_mass)
        .unwrap_or(limit)
        .min(cand.len());
    let nll64 = lse - row[target as usize] as f64;
    OwnedRecord {
        nll: nll64 as f32,
        tail: (tail + suffix[k]) as f32,
        ids: cand[..k].iter().map(|c| c.0).collect(),
        logprobs: cand[..k].iter().map(|c| c.1 as f32).collect(),
        nll64,
    }
}

/// The base's records for every scored position of a chunk plan.
#[derive(Clone, Debug)]
pub struct BaseLogProbs {
    pub header: BaseHeader,
    /// The evaluated tokens (chunks × ctx).
    pub tokens: Vec<u32>,
    offsets: Vec<usize>,
    ids: Vec<u32>,
    logprobs: Vec<f32>,
    nlls: Vec<f32>,
    pub tails: Vec<f32>,
}

impl BaseLogProbs {
    pub(crate) fn empty(header: BaseHeader) -> BaseLogProbs {
        BaseLogProbs {
            header,
            tokens: Vec::new(),
            offsets: vec![0],
            ids: Vec::new(),
            logprobs: Vec::new(),
            nlls: Vec::new(),
            tails: Vec::new(),
        }
    }

    fn push(&mut self, r: &OwnedRecord) {
        self.ids.extend_from_slice(&r.ids);
        self.logprobs.extend_from_slice(&r.logprobs);
        self.offsets.push(self.ids.len());
        self.nlls.push(r.nll);
        self.tails.push(r.tail);
    }

    /// Scored positions held.
    pub fn len(&self) -> usize {
        self.nlls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nlls.is_empty()
    }

    pub fn record(&self, i: usize) -> BaseRecord<'_> {
        let (a, b) = (self.offsets[i], self.offsets[i + 1]);
        BaseRecord {
            nll: self.nlls[i],
            tail: self.tails[i],
            ids: &self.ids[a..b],
            logprobs: &self.logprobs[a..b],
        }
    }

    /// Mean number of tokens kept per position.
    pub fn mean_kept(&self) -> f64 {
        self.ids.len() as f64 / self.len().max(1) as f64
    }

    /// Evaluates the base `model` on `tokens` cut by `plan`; returns its records and its
    /// perplexity. `on_chunk` sees (chunk index, running PPL).
    pub fn compute(
        model: &Model,
        tokens: &[u32],
        plan: &ChunkPlan,
        options: BaseOptions,
        mut on_chunk: impl FnMut(usize, f64),
    ) -> Result<(BaseLogProbs, Perplexity)> {
        let tok = model.tokenizer().ok_or_else(|| EvalError::NoTokenizer {
            model: model.source.clone(),
        })?;
        if !(0.0..1.0).contains(&options.tail_mass) || options.max_top == 0 {
            return Err(EvalError::Option(format!(
                "base records need 0 ≤ tail mass < 1 and at least one token, got {} and {}",
                options.tail_mass, options.max_top
            )));
        }
        let t0 = Instant::now();
        let vocab = model.output.rows();
        let mut out = BaseLogProbs::empty(BaseHeader {
            model: model.source.clone(),
            tokenizer: TokenizerFingerprint::of(tok),
            plan: plan.clone(),
            vocab,
            options,
        });
        out.tokens = tokens[..plan.n_tokens()].to_vec();
        let mut ppl = NllSum::default();
        for_each_chunk(model, tokens, plan, |i, logits, targets| {
            let recs: Vec<OwnedRecord> = logits
                .par_chunks_exact(vocab)
                .zip(targets.par_iter())
                .map(|(row, &t)| compress_row(row, t, options.tail_mass, options.max_top))
                .collect();
            let nlls: Vec<f64> = recs.iter().map(|r| r.nll64).collect();
            recs.iter().for_each(|r| out.push(r));
            ppl.add_chunk(&nlls);
            on_chunk(i, *ppl.running.last().expect("a chunk was added"));
            Ok(())
        })?;
        Ok((out, ppl.finish(plan, t0.elapsed().as_secs_f64())))
    }

    /// Writes the records to `path` (atomically: a temporary sibling renamed when complete).
    pub fn save(&self, path: &Path) -> Result<()> {
        let out = quant::atomic::AtomicOutput::file(path).map_err(EvalError::io(path))?;
        let file = std::fs::File::create(out.path()).map_err(EvalError::io(path))?;
        let mut w = HashingWriter {
            inner: BufWriter::new(file),
            hash: Sha256::new(),
        };
        self.write_body(&mut w).map_err(EvalError::io(path))?;
        let digest = w.hash.finalize();
        let mut inner = w.inner;
        inner.write_all(&digest).map_err(EvalError::io(path))?;
        inner
            .into_inner()
            .map_err(|e| EvalError::io(path)(e.into_error()))?
            .sync_all()
            .map_err(EvalError::io(path))?;
        out.commit().map_err(EvalError::io(path))?;
        Ok(())
    }

    fn write_body(&self, w: &mut impl Write) -> std::io::Result<()> {
        let header = serde_json::to_vec(&self.header).expect("the header serializes");
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&(header.len() as u32).to_le_bytes())?;
        w.write_all(&header)?;
        for t in &self.tokens {
            w.write_all(&t.to_le_bytes())?;
        }
        let wide = self.header.id_bytes() == 4;
        for i in 0..self.len() {
            let r = self.record(i);
            w.write_all(&r.nll.to_le_bytes())?;
            w.write_all(&r.tail.to_le_bytes())?;
            w.write_all(&(r.ids.len() as u32).to_le_bytes())?;
            for &id in r.ids {
                if wide {
                    w.write_all(&id.to_le_bytes())?;
                } else {
                    w.write_all(&(id as u16).to_le_bytes())?;
                }
            }
            for lp in r.logprobs {
                w.write_all(&lp.to_le_bytes())?;
            }
        }
        Ok(())
    }

    /// Reads a file written by `save`, refusing anything truncated, corrupt or inconsistent.
    pub fn load(path: &Path) -> Result<BaseLogProbs> {
        let bytes = std::fs::read(path).map_err(EvalError::io(path))?;
        Self::parse(&bytes).map_err(|msg| EvalError::BaseLogits {
            path: path.to_owned(),
            msg,
        })
    }

    fn parse(bytes: &[u8]) -> std::result::Result<BaseLogProbs, String> {
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(format!(
                "not a base log-probability file (expected magic {:?}, written by `quantize kld --save-base`)",
                std::str::from_utf8(MAGIC).unwrap()
            ));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if version != VERSION {
            return Err(format!(
                "format version {version}; this build reads version {VERSION}"
            ));
        }
        if bytes.len() < 16 + 32 {
            return Err("truncated (no checksum)".into());
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err("corrupt or truncated: the sha256 checksum does not match".into());
        }
        let mut r = Reader { b: body, at: 12 };
        let hlen = r.u32("header length")? as usize;
        let header: BaseHeader =
            serde_json::from_slice(r.take(hlen, "header")?).map_err(|e| format!("header: {e}"))?;
        let plan = &header.plan;
        if plan.ctx < 4 || plan.n_chunk == 0 {
            return Err(format!(
                "header: chunk plan {} × {} is empty",
                plan.n_chunk, plan.ctx
            ));
        }
        let vocab = header.vocab;
        let mut out = BaseLogProbs::empty(header.clone());
        out.tokens = (0..plan.n_tokens())
            .map(|_| r.u32("token ids"))
            .collect::<std::result::Result<_, _>>()?;
        if let Some(t) = out.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(format!("token id {t} outside the vocabulary of {vocab}"));
        }
        let wide = header.id_bytes() == 4;
        for i in 0..plan.n_scored() {
            let what = |f: &str| format!("record {i}: {f}");
            let nll = r.f32(&what("nll"))?;
            let tail = r.f32(&what("tail"))?;
            let k = r.u32(&what("count"))? as usize;
            if !(nll.is_finite() && nll >= 0.0 && (0.0..=1.0).contains(&tail)) || k > vocab {
                return Err(what("values out of range"));
            }
            let ids: Vec<u32> = (0..k)
                .map(|_| {
                    if wide {
                        r.u32(&what("ids"))
                    } else {
                        r.u16(&what("ids")).map(u32::from)
                    }
                })
                .collect::<std::result::Result<_, _>>()?;
            let logprobs: Vec<f32> = (0..k)
                .map(|_| r.f32(&what("log-probs")))
                .collect::<std::result::Result<_, _>>()?;
            if ids.iter().any(|&id| id as usize >= vocab)
                || logprobs.iter().any(|lp| lp.is_nan() || *lp > 0.0)
            {
                return Err(what("token id or log-prob out of range"));
            }
            out.push(&OwnedRecord {
                nll,
                tail,
                ids,
                logprobs,
                nll64: nll as f64,
            });
        }
        if r.at != body.len() {
            return Err(format!(
                "{} unexpected bytes after the last record",
                body.len() - r.at
            ));
        }
        Ok(out)
    }
}

struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        let s = self
            .b
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| format!("{what}: file ends early"))?;
        self.at += n;
        Ok(s)
    }

    fn u16(&mut self, what: &str) -> std::result::Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn f32(&mut self, what: &str) -> std::result::Result<f32, String> {
        Ok(f32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn header(vocab: usize, n_chunk: usize, ctx: usize) -> BaseHeader {
        BaseHeader {
            model: "test".into(),
            tokenizer: TokenizerFingerprint {
                vocab_size: vocab,
                bos: None,
                adds_bos: false,
                vocab_sha256: "0".repeat(64),
            },
            plan: ChunkPlan {
                ctx,
                n_chunk,
                bos: None,
            },
            vocab,
            options: BaseOptions::default(),
        }
    }

    fn sample(vocab: usize) -> BaseLogProbs {
        let h = header(vocab, 2, 8);
        let mut b = BaseLogProbs::empty(h.clone());
        b.tokens = (0..16).map(|i| (i * 5 % vocab) as u32).collect();
        for i in 0..h.plan.n_scored() {
            let row: Vec<f32> = (0..vocab)
                .map(|j| ((i * 31 + j * 17) % 23) as f32 * 0.4)
                .collect();
            b.push(&compress_row(&row, (i % vocab) as u32, 1e-2, 64));
        }
        b
    }

    #[test]
    fn compress_keeps_the_smallest_top_set_within_the_tail_budget() {
        let row: Vec<f32> = vec![5.0, 1.0, 4.0, 0.0, 4.0, -9.0];
        let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
        let p: Vec<f64> = row.iter().map(|&x| (x as f64).exp() / z).collect();
        let r = compress_row(&row, 1, 0.05, 10);
        // Order: 0, 2, 4 (tie broken by id), then 1 (p≈0.009), 3, 5.
        assert_eq!(r.ids, vec![0, 2, 4]);
        assert!((r.tail as f64 - (p[1] + p[3] + p[5])).abs() < 1e-7);
        assert!((r.nll64 + p[1].ln()).abs() < 1e-12);
        assert!((r.logprobs[1] as f64 - p[2].ln()).abs() < 1e-6);
        // The cap wins over the budget; zero budget keeps everything.
        assert_eq!(compress_row(&row, 1, 0.05, 2).ids, vec![0, 2]);
        assert_eq!(compress_row(&row, 1, 0.0, 10).ids.len(), 6);
        assert_eq!(compress_row(&row, 1, 0.0, 10).tail, 0.0);
    }

    #[test]
    fn file_round_trips_and_refuses_corruption() {
        for vocab in [50, 70_000] {
            let b = sample(vocab);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("base.qzlp");
            b.save(&path).unwrap();
            let back = BaseLogProbs::load(&path).unwrap();
            assert_eq!(back.header, b.header);
            assert_eq!(back.tokens, b.tokens);
            assert_eq!(back.len(), b.len());
            for i in 0..b.len() {
                let (x, y) = (b.record(i), back.record(i));
                assert_eq!(
                    (x.nll, x.tail, x.ids, x.logprobs),
                    (y.nll, y.tail, y.ids, y.logprobs)
                );
            }
            let bytes = std::fs::read(&path).unwrap();
            let refuse = |data: &[u8], needle: &str| {
                std::fs::write(&path, data).unwrap();
                let e = BaseLogProbs::load(&path).unwrap_err().to_string();
                assert!(e.contains(needle) && e.contains("base.qzlp"), "{e}");
            };
            let mut flipped = bytes.clone();
            flipped[bytes.len() / 2] ^= 1;
            refuse(&flipped, "checksum");
            refuse(&bytes[..bytes.len() - 100], "checksum");
            refuse(&bytes[..20], "checksum");
            refuse(
                b"GGUF\x03\0\0\0 and so on",
                "not a base log-probability file",
            );
            let mut v2 = bytes.clone();
            v2[8] = 2;
            refuse(&v2, "version 2");
        }
    }

    #[test]
    fn consistent_checksum_does_not_excuse_bad_content() {
        // A well-formed checksum over inconsistent records (a token id past the vocabulary).
        let mut b = sample(50);
        b.tokens[3] = 999;
        let mut body = Vec::new();
        b.write_body(&mut body).unwrap();
        let digest = Sha256::digest(&body);
        body.extend_from_slice(&digest);
        let e = BaseLogProbs::parse(&body).unwrap_err();
        assert!(e.contains("token id 999"), "{e}");
    }
}
