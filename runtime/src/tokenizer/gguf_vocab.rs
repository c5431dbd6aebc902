//! Builds a `tokenizers` tokenizer from GGUF tokenizer metadata.

use quant::gguf::{GgufFile, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

use super::{Tokenizer, TokenizerError};

/// GGUF token_type values.
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer of a byte-level BPE vocabulary, as its original tokenizer.json defines it,
/// keyed by llama.cpp's `tokenizer.ggml.pre` names.
pub(crate) fn bpe_pre_tokenizer(pre: &str) -> Option<(PreTokenizerWrapper, bool)> {
    let split = |re: &str| -> PreTokenizerWrapper {
        Split::new(
            SplitPattern::Regex(re.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .expect("built-in regex compiles")
        .into()
    };
    let byte_level =
        |use_regex| -> PreTokenizerWrapper { ByteLevel::new(false, true, use_regex).into() };
    // (pre-tokenizer, whether BOS is added by default)
    Some(match pre {
        "default" | "gpt-2" | "gpt2" | "phi-2" | "roberta-bpe" | "olmo" | "mpt" | "jais" => {
            (byte_level(true), false)
        }
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            (
                PreSequence::new(vec![Digits::new(true).into(), byte_level(true)]).into(),
                false,
            )
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "dbrx" | "smaug-bpe" => (
            PreSequence::new(vec![split(LLAMA3_REGEX), byte_level(false)]).into(),
            true,
        ),
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" => (
            PreSequence::new(vec![split(QWEN2_REGEX), byte_level(false)]).into(),
            false,
        ),
        _ => return None,
    })
}

fn field_err(g: &GgufFile, field: &str, msg: impl Into<String>) -> TokenizerError {
    TokenizerError::Field {
        path: g.path.clone(),
        field: field.into(),
        msg: msg.into(),
    }
}

fn meta_err(g: &GgufFile, e: quant::gguf::GgufError) -> TokenizerError {
    TokenizerError::Build {
        path: g.path.clone(),
        msg: e.to_string(),
    }
}

pub(super) fn from_gguf(g: &GgufFile) -> Result<Tokenizer, TokenizerError> {
    let me = |e| meta_err(g, e);
    let model = g
        .opt_str("tokenizer.ggml.model")
        .map_err(me)?
        .ok_or_else(|| {
            field_err(
                g,
                "tokenizer.ggml.model",
                "missing: the file carries no tokenizer",
            )
        })?;
    let tokens = g
        .opt_array("tokenizer.ggml.tokens", |v| v.as_str().map(str::to_owned))
        .map_err(me)?
        .ok_or_else(|| field_err(g, "tokenizer.ggml.tokens", "missing"))?;
    let types = g
        .opt_array("tokenizer.ggml.token_type", Value::as_i64)
        .map_err(me)?
        .unwrap_or_else(|| vec![1; tokens.len()]);
    if types.len() != tokens.len() {
        return Err(field_err(
            g,
            "tokenizer.ggml.token_type",
            format!("{} entries for {} tokens", types.len(), tokens.len()),
        ));
    }
    let id_key = |k: &str| -> Result<Option<u32>, TokenizerError> {
        match g.opt_int(k).map_err(me)? {
            Some(i) if i >= 0 && (i as usize) < tokens.len() => Ok(Some(i as u32)),
            Some(i) => Err(field_err(
                g,
                k,
                format!("token id {i} is outside the vocabulary"),
            )),
            None => Ok(None),
        }
    };
    let bos = id_key("tokenizer.ggml.bos_token_id")?;
    let eos: Vec<u32> = [
        id_key("tokenizer.ggml.eos_token_id")?,
        id_key("tokenizer.ggml.eot_token_id")?,
    ]
    .into_iter()
    .flatten()
    .fold(Vec::new(), |mut v, id| {
        if !v.contains(&id) {
            v.push(id);
        }
        v
    });
    let unk = id_key("tokenizer.ggml.unknown_token_id")?;

    let mut vocab = Vocab::default();
    for (i, t) in tokens.iter().enumerate() {
        vocab.entry(t.clone()).or_insert(i as u32);
    }

    let (mut tok, default_bos) = match model {
        "gpt2" => {
            let pre = g
                .opt_str("tokenizer.ggml.pre")
                .map_err(me)?
                .unwrap_or("default");
            let (pre_tok, default_bos) = bpe_pre_tokenizer(pre).ok_or_else(|| {
                field_err(
                    g,
                    "tokenizer.ggml.pre",
                    format!("unknown BPE pre-tokenizer {pre:?}"),
                )
            })?;
            let merges = g
                .opt_array("tokenizer.ggml.merges", |v| v.as_str().map(str::to_owned))
                .map_err(me)?
                .ok_or_else(|| {
                    field_err(g, "tokenizer.ggml.merges", "missing (required for BPE)")
                })?;
            let merges = merges
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    m.split_once(' ')
                        .map(|(a, b)| (a.to_owned(), b.to_owned()))
                        .ok_or_else(|| {
                            field_err(
                                g,
                                "tokenizer.ggml.merges",
                                format!("entry {i} {m:?} is not two tokens"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let ignore_merges = matches!(pre, "llama3" | "llama-v3" | "llama-bpe" | "falcon3");
            let bpe = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .ignore_merges(ignore_merges)
                .build()
                .map_err(|e| field_err(g, "tokenizer.ggml.merges", e.to_string()))?;
            let mut t = tokenizers::Tokenizer::new(bpe);
            t.with_pre_tokenizer(Some(pre_tok));
            t.with_decoder(Some(DecoderWrapper::from(ByteLevelDecoder::default())));
            (t, default_bos)
        }
        "llama" => (sentencepiece_bpe(g, &tokens, vocab, unk)?, true),
        other => {
            return Err(field_err(
                g,
                "tokenizer.ggml.model",
                format!("unsupported tokenizer model {other:?} (supported: gpt2, llama)"),
            ))
        }
    };

    let added: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| matches!(**t, TOKEN_CONTROL | TOKEN_USER_DEFINED))
        .map(|(s, t)| AddedToken::from(s.clone(), *t == TOKEN_CONTROL).normalized(false))
        .collect();
    tok.add_special_tokens(&added);

    let add_bos = g
        .opt_bool("tokenizer.ggml.add_bos_token")
        .map_err(me)?
        .unwrap_or(default_bos);
    let template = g
        .opt_str("tokenizer.chat_template")
        .map_err(me)?
        .map(str::to_owned);
    Ok(Tokenizer::assemble(tok, bos, eos, add_bos, template))
}

/// SentencePiece vocabularies ("llama"): BPE whose merge order follows the token scores, with
/// byte fallback, "▁" for spaces and a space prefix, as Hugging Face's converter builds them.
fn sentencepiece_bpe(
    g: &GgufFile,
    tokens: &[String],
    vocab: Vocab,
    unk: Option<u32>,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let scores = g
        .opt_array("tokenizer.ggml.scores", Value::as_f64)
        .map_err(|e| meta_err(g, e))?
        .ok_or_else(|| {
            field_err(
                g,
                "tokenizer.ggml.scores",
                "missing (required for SentencePiece)",
            )
        })?;
    if scores.len() != tokens.len() {
        return Err(field_err(
            g,
            "tokenizer.ggml.scores",
            format!("{} scores for {} tokens", scores.len(), tokens.len()),
        ));
    }
    // A merge (a, b) exists for every token that splits into two vocabulary pieces; higher-scored
    // results merge first.
    let mut merges: Vec<(f64, u32, String, String)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        for (cut, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(cut);
            if let (Some(&ia), Some(&ib)) = (vocab.get(a), vocab.get(b)) {
                merges.push((scores[id], ia.max(ib), a.to_owned(), b.to_owned()));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges = merges.into_iter().map(|(_, _, a, b)| (a, b)).collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(u) = unk {
        builder = builder.unk_token(tokens[u as usize].clone());
    }
    let bpe = builder
        .build()
        .map_err(|e| field_err(g, "tokenizer.ggml.tokens", e.to_string()))?;
    let mut t = tokenizers::Tokenizer::new(bpe);
    let add_prefix = g
        .opt_bool("tokenizer.ggml.add_space_prefix")
        .map_err(|e| meta_err(g, e))?
        .unwrap_or(true);
    let mut norm: Vec<NormalizerWrapper> = Vec::new();
    if add_prefix {
        norm.push(Prepend::new("▁".into()).into());
    }
    norm.push(Replace::new(" ", "▁").expect("literal pattern").into());
    t.with_normalizer(Some(NormalizerSequence::new(norm)));
    let mut dec: Vec<DecoderWrapper> = vec![
        tokenizers::decoders::DecoderWrapper::Replace(
            Replace::new("▁", " ").expect("literal pattern"),
        ),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_prefix {
        dec.push(Strip::new(' ', 1, 0).into());
    }
    t.with_decoder(Some(DecoderSequence::new(dec)));
    Ok(t)
}
