//! tokenizer.* keys of a converted folder, as convert_hf_to_gguf.py (c392e50) and gguf-py's
//! SpecialVocab write them: a byte-level BPE vocabulary ("gpt2": tokens, token types, merges and
//! the pre-tokenizer name) from tokenizer.json, or a SentencePiece one ("llama": tokens, scores,
//! types) from tokenizer.model; then the special token ids, add_bos/add_eos and the chat template
//! from tokenizer_config.json and config.json.
//!
//! llama.cpp's converter names the BPE pre-tokenizer by hashing the tokenization of a probe text
//! and refuses unknown hashes. Here the name comes from what decides llama.cpp's behaviour: the
//! pre-tokenizer that tokenizer.json declares (compared with the one the runtime builds for each
//! name) and whether decoding cleans up spaces.

use std::path::Path;

use quant::gguf::{Value, ValueType};
use quant::hf::LlamaConfig;
use serde_json::Value as Json;

use super::gguf_arch;
use crate::loader::LoadError;
use crate::tokenizer::TokenizerError;

/// GGUF token types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// The llama.cpp pre-tokenizer names this converter writes, with the `clean_spaces` behaviour
/// llama.cpp gives each; several share one pre-tokenizer and differ only there.
const WRITTEN_PRE: [(&str, bool); 5] = [
    ("smollm", false),
    ("starcoder", true),
    ("gpt-2", true),
    ("llama-bpe", true),
    ("qwen2", false),
];

/// The special token kinds gguf-py's SpecialVocab looks for, with their GGUF key.
const SPECIAL: [(&str, &str); 7] = [
    ("bos", "tokenizer.ggml.bos_token_id"),
    ("eos", "tokenizer.ggml.eos_token_id"),
    ("unk", "tokenizer.ggml.unknown_token_id"),
    ("sep", "tokenizer.ggml.seperator_token_id"),
    ("pad", "tokenizer.ggml.padding_token_id"),
    ("cls", "tokenizer.ggml.cls_token_id"),
    ("mask", "tokenizer.ggml.mask_token_id"),
];

fn field_err(path: &Path, field: &str, msg: impl Into<String>) -> LoadError {
    LoadError::Tokenizer(TokenizerError::Field {
        path: path.to_owned(),
        field: field.to_owned(),
        msg: msg.into(),
    })
}

fn read_json(path: &Path) -> Result<Option<Json>, LoadError> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LoadError::Io {
            path: path.to_owned(),
            source,
        }),
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| field_err(path, "(file)", format!("not valid JSON: {e}"))),
    }
}

fn strings(v: Vec<String>) -> Value {
    Value::Array(
        ValueType::String,
        v.into_iter().map(Value::String).collect(),
    )
}

pub(super) fn tokenizer_metadata(
    dir: &Path,
    raw_config: &Json,
    config: &LlamaConfig,
) -> Result<Vec<(String, Value)>, LoadError> {
    let tj_path = dir.join("tokenizer.json");
    let tokenizer_json = read_json(&tj_path)?;
    let tc_path = dir.join("tokenizer_config.json");
    let tokenizer_config = read_json(&tc_path)?;
    let spm_path = dir.join("tokenizer.model");
    let mut m = Vec::new();
    let n_vocab;
    if spm_path.exists() {
        let v = sentencepiece_vocab(&spm_path, dir, config.vocab_size, tokenizer_config.as_ref())?;
        n_vocab = Some(v.tokens.len());
        m.push(("tokenizer.ggml.model".into(), Value::String("llama".into())));
        m.push(("tokenizer.ggml.pre".into(), Value::String("default".into())));
        m.push(("tokenizer.ggml.tokens".into(), strings(v.tokens)));
        m.push((
            "tokenizer.ggml.scores".into(),
            Value::Array(
                ValueType::F32,
                v.scores.into_iter().map(Value::F32).collect(),
            ),
        ));
        m.push(("tokenizer.ggml.token_type".into(), types(v.types)));
    } else if let Some(tj) = &tokenizer_json {
        let clean = tokenizer_config
            .as_ref()
            .and_then(|c| c.get("clean_up_tokenization_spaces"))
            .and_then(Json::as_bool);
        let v = bpe_vocab(&tj_path, tj, config.vocab_size, clean)?;
        n_vocab = None;
        m.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
        m.push(("tokenizer.ggml.pre".into(), Value::String(v.pre.into())));
        m.push(("tokenizer.ggml.tokens".into(), strings(v.tokens)));
        m.push(("tokenizer.ggml.token_type".into(), types(v.types)));
        m.push(("tokenizer.ggml.merges".into(), strings(v.merges)));
    } else {
        return Err(field_err(
            dir,
            "tokenizer.json",
            "missing (and no tokenizer.model): llama.cpp needs the vocabulary inside the GGUF",
        ));
    }
    special_vocab(
        &mut m,
        tokenizer_json.as_ref(),
        tokenizer_config.as_ref(),
        raw_config,
        n_vocab,
        dir,
    )?;
    if gguf_arch(config.family) == "llama" {
        if let Some(b) = tokenizer_config
            .as_ref()
            .and_then(|c| c.get("add_prefix_space"))
            .and_then(Json::as_bool)
        {
            m.push(("tokenizer.ggml.add_space_prefix".into(), Value::Bool(b)));
        }
    }
    Ok(m)
}

fn types(t: Vec<i32>) -> Value {
    Value::Array(ValueType::I32, t.into_iter().map(Value::I32).collect())
}

/// convert_hf_to_gguf's `does_token_look_special`: added tokens some models forget to mark.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

struct BpeVocab {
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
    pre: &'static str,
}

fn bpe_vocab(
    path: &Path,
    tj: &Json,
    vocab_size: usize,
    clean_spaces: Option<bool>,
) -> Result<BpeVocab, LoadError> {
    let model = tj
        .get("model")
        .ok_or_else(|| field_err(path, "model", "missing"))?;
    let kind = model.get("type").and_then(Json::as_str).unwrap_or("(none)");
    if kind != "BPE" {
        return Err(field_err(
            path,
            "model.type",
            format!("{kind:?}: only BPE vocabularies (or a SentencePiece tokenizer.model) convert"),
        ));
    }
    if model.get("byte_fallback").and_then(Json::as_bool) == Some(true) {
        return Err(field_err(
            path,
            "model.byte_fallback",
            "a SentencePiece-style vocabulary: put its tokenizer.model beside it (llama.cpp reads its scores)",
        ));
    }
    let vocab = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| field_err(path, "model.vocab", "missing or not an object"))?;
    let mut by_id: Vec<Option<String>> = vec![None; vocab_size];
    let mut put = |field: &str, token: &str, id: Option<u64>| -> Result<(), LoadError> {
        let id = id
            .ok_or_else(|| field_err(path, field, format!("token {token:?} has no integer id")))?
            as usize;
        let slot = by_id.get_mut(id).ok_or_else(|| {
            field_err(
                path,
                field,
                format!(
                    "token {token:?} has id {id}, outside config.json's vocab_size {vocab_size}"
                ),
            )
        })?;
        *slot = Some(token.to_owned());
        Ok(())
    };
    for (token, id) in vocab {
        put("model.vocab", token, id.as_u64())?;
    }
    let added = tj
        .get("added_tokens")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let mut added_kind = std::collections::HashMap::new();
    for a in &added {
        let content = a.get("content").and_then(Json::as_str).unwrap_or_default();
        put("added_tokens", content, a.get("id").and_then(Json::as_u64))?;
        let special = a.get("special").and_then(Json::as_bool).unwrap_or(false);
        added_kind.insert(content.to_owned(), special || looks_special(content));
    }
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for (i, t) in by_id.into_iter().enumerate() {
        match t {
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(UNUSED);
            }
            Some(t) => match added_kind.get(&t) {
                Some(true) => {
                    tokens.push(t);
                    types.push(CONTROL);
                }
                // llama.cpp expects user-defined tokens pre-normalized
                Some(false) => {
                    tokens.push(t.replace('\u{2581}', " "));
                    types.push(USER_DEFINED);
                }
                None => {
                    tokens.push(t);
                    types.push(NORMAL);
                }
            },
        }
    }
    let merges = bpe_merges(path, model)?;
    let pre = pre_tokenizer_name(tj.get("pre_tokenizer").unwrap_or(&Json::Null), clean_spaces)
        .map_err(|msg| field_err(path, "pre_tokenizer", msg))?;
    Ok(BpeVocab {
        tokens,
        types,
        merges,
        pre,
    })
}

/// Merges as "a b" strings; pairs (tokenizers ≥ 0.20) have their spaces encoded as 'Ġ', as
/// gguf-py does.
fn bpe_merges(path: &Path, model: &Json) -> Result<Vec<String>, LoadError> {
    let list = model
        .get("merges")
        .and_then(Json::as_array)
        .ok_or_else(|| field_err(path, "model.merges", "missing (required for BPE)"))?;
    let encode = |s: &str| s.replace(' ', "\u{120}");
    list.iter()
        .enumerate()
        .map(|(i, m)| match m {
            Json::String(s) => Ok(s.clone()),
            Json::Array(p) if p.len() == 2 && p.iter().all(Json::is_string) => Ok(format!(
                "{} {}",
                encode(p[0].as_str().unwrap()),
                encode(p[1].as_str().unwrap())
            )),
            other => Err(field_err(
                path,
                "model.merges",
                format!("entry {i} is {other}, not \"a b\" or [\"a\", \"b\"]"),
            )),
        })
        .collect()
}

/// The llama.cpp pre-tokenizer name for a tokenizer.json `pre_tokenizer` (and its
/// `clean_up_tokenization_spaces`), or why there is none.
pub fn pre_tokenizer_name(pre: &Json, clean_spaces: Option<bool>) -> Result<&'static str, String> {
    let canonical = |v: Json| -> Option<Json> {
        // parse and print through the tokenizers crate so spelling and defaults agree, and drop
        // trim_offsets, which moves offsets but not tokens
        let w: tokenizers::PreTokenizerWrapper = serde_json::from_value(v).ok()?;
        let mut v = serde_json::to_value(w).ok()?;
        strip_key(&mut v, "trim_offsets");
        Some(v)
    };
    let declared = canonical(pre.clone())
        .ok_or_else(|| format!("{pre} is not a pre-tokenizer the tokenizers library reads"))?;
    let matches: Vec<(&'static str, bool)> = WRITTEN_PRE
        .iter()
        .copied()
        .filter(|(name, _)| {
            crate::tokenizer::bpe_pre_tokenizer(name)
                .and_then(|(p, _)| canonical(serde_json::to_value(p).ok()?))
                .is_some_and(|c| c == declared)
        })
        .collect();
    let first = matches.first().ok_or_else(|| {
        format!(
            "{pre}: no llama.cpp pre-tokenizer known to split text this way (known: {})",
            WRITTEN_PRE.map(|w| w.0).join(", ")
        )
    })?;
    Ok(matches
        .iter()
        .find(|(_, clean)| Some(*clean) == clean_spaces)
        .unwrap_or(first)
        .0)
}

fn strip_key(v: &mut Json, key: &str) {
    match v {
        Json::Object(o) => {
            o.remove(key);
            o.values_mut().for_each(|x| strip_key(x, key));
        }
        Json::Array(a) => a.iter_mut().for_each(|x| strip_key(x, key)),
        _ => {}
    }
}

struct SpmVocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
}

/// convert_hf_to_gguf's `_create_vocab_sentencepiece`: the pieces of tokenizer.model, padded to
/// config.json's vocab_size, then added_tokens.json and tokenizer_config.json's
/// added_tokens_decoder on top.
fn sentencepiece_vocab(
    path: &Path,
    dir: &Path,
    vocab_size: usize,
    tokenizer_config: Option<&Json>,
) -> Result<SpmVocab, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        source,
    })?;
    let pieces = spm_pieces(&bytes).map_err(|msg| field_err(path, "pieces", msg))?;
    if pieces.len() > vocab_size {
        return Err(field_err(
            path,
            "pieces",
            format!(
                "{} pieces, more than config.json's vocab_size {vocab_size}",
                pieces.len()
            ),
        ));
    }
    let mut v = SpmVocab {
        tokens: (0..vocab_size).map(|i| format!("[PAD{i}]")).collect(),
        scores: vec![-10000.0; vocab_size],
        types: vec![UNUSED; vocab_size],
    };
    for (i, p) in pieces.into_iter().enumerate() {
        v.tokens[i] = p.piece;
        v.scores[i] = p.score;
        // sentencepiece's USER_DEFINED pieces count as normal, as in the converter
        v.types[i] = match p.kind {
            2 => UNKNOWN,
            3 => CONTROL,
            5 => UNUSED,
            6 => BYTE,
            _ => NORMAL,
        };
    }
    let added_path = dir.join("added_tokens.json");
    if let Some(added) = read_json(&added_path)? {
        let obj = added
            .as_object()
            .ok_or_else(|| field_err(&added_path, "(top level)", "expected an object"))?;
        for (token, id) in obj {
            match id.as_u64().map(|i| i as usize) {
                Some(i) if i < vocab_size => {
                    v.tokens[i] = token.clone();
                    v.scores[i] = -1000.0;
                    v.types[i] = USER_DEFINED;
                }
                _ => tracing::warn!(
                    "{}: ignoring {token:?} (id {id} out of range)",
                    added_path.display()
                ),
            }
        }
    }
    let decoder = tokenizer_config
        .and_then(|c| c.get("added_tokens_decoder"))
        .and_then(Json::as_object);
    for (id, data) in decoder.into_iter().flatten() {
        let Some(i) = id.parse::<usize>().ok().filter(|&i| i < vocab_size) else {
            continue;
        };
        let content = data
            .get("content")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let special = data.get("special").and_then(Json::as_bool).unwrap_or(false);
        if special || looks_special(content) {
            v.types[i] = CONTROL;
            v.tokens[i] = content.to_owned();
        } else {
            v.types[i] = USER_DEFINED;
            v.tokens[i] = content.replace('\u{2581}', " ");
        }
        v.scores[i] = -1000.0;
    }
    Ok(v)
}

struct Piece {
    piece: String,
    score: f32,
    kind: u64,
}

/// The pieces of a serialized sentencepiece ModelProto (field 1: repeated SentencePiece with
/// piece = 1, score = 2, type = 3), read straight from the protobuf wire format.
fn spm_pieces(buf: &[u8]) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut r = Wire { buf, pos: 0 };
    while !r.done() {
        let (field, wt) = r.key()?;
        if field == 1 && wt == 2 {
            let body = r.bytes()?;
            let mut p = Wire { buf: body, pos: 0 };
            let mut piece = Piece {
                piece: String::new(),
                score: 0.0,
                kind: 1,
            };
            while !p.done() {
                match p.key()? {
                    (1, 2) => {
                        piece.piece = String::from_utf8(p.bytes()?.to_vec())
                            .map_err(|_| format!("piece #{} is not UTF-8", out.len()))?
                    }
                    (2, 5) => piece.score = f32::from_le_bytes(p.fixed::<4>()?),
                    (3, 0) => piece.kind = p.varint()?,
                    (_, wt) => p.skip(wt)?,
                }
            }
            out.push(piece);
        } else {
            r.skip(wt)?;
        }
    }
    if out.is_empty() {
        return Err("no pieces: not a sentencepiece model".into());
    }
    Ok(out)
}

struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Wire<'a> {
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn key(&mut self) -> Result<(u64, u64), String> {
        let k = self.varint()?;
        Ok((k >> 3, k & 7))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| format!("field of {n} bytes runs past the end"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()? as usize;
        self.take(n)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn skip(&mut self, wire_type: u64) -> Result<(), String> {
        match wire_type {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.bytes().map(drop),
            5 => self.take(4).map(drop),
            t => Err(format!("unsupported wire type {t}")),
        }
    }
}

/// gguf-py's SpecialVocab: special ids from tokenizer_config.json's `<kind>_token` (looked up
/// among tokenizer.json's added tokens), else config.json's `<kind>_token_id`; add_bos/add_eos;
/// the chat template (tokenizer_config.json, else chat_template.jinja).
fn special_vocab(
    m: &mut Vec<(String, Value)>,
    tokenizer_json: Option<&Json>,
    tokenizer_config: Option<&Json>,
    config: &Json,
    n_vocab: Option<usize>,
    dir: &Path,
) -> Result<(), LoadError> {
    let added: &[Json] = tokenizer_json
        .and_then(|t| t.get("added_tokens"))
        .and_then(Json::as_array)
        .map_or(&[], Vec::as_slice);
    let mut ids: Vec<(&str, u64)> = Vec::new();
    let mut set = |kind: &'static str, id: Option<u64>| {
        let Some(id) = id else { return };
        let key = SPECIAL.iter().find(|s| s.0 == kind).expect("listed kind").1;
        if n_vocab.is_some_and(|n| id as usize >= n) {
            tracing::warn!("special token {kind} id {id} is outside the vocabulary: skipped");
        } else if !ids.iter().any(|(k, _)| *k == key) {
            ids.push((key, id));
        }
    };
    if let Some(tc) = tokenizer_config {
        for (kind, _) in SPECIAL {
            let entry = tc.get(format!("{kind}_token"));
            let content = entry.and_then(|e| e.as_str().or_else(|| e.get("content")?.as_str()));
            let id = content.and_then(|c| {
                added
                    .iter()
                    .find(|a| a.get("content").and_then(Json::as_str) == Some(c))
                    .and_then(|a| a.get("id")?.as_u64())
            });
            set(kind, id);
        }
    }
    for (kind, _) in SPECIAL {
        set(
            kind,
            config
                .get(format!("{kind}_token_id"))
                .and_then(Json::as_u64),
        );
    }
    for (key, id) in ids {
        m.push((key.into(), Value::U32(id as u32)));
    }
    if let Some(tc) = tokenizer_config {
        for kind in ["bos", "eos"] {
            if let Some(b) = tc.get(format!("add_{kind}_token")).and_then(Json::as_bool) {
                m.push((format!("tokenizer.ggml.add_{kind}_token"), Value::Bool(b)));
            }
        }
    }
    match tokenizer_config.and_then(|c| c.get("chat_template")) {
        Some(Json::String(t)) => {
            m.push(("tokenizer.chat_template".into(), Value::String(t.clone())))
        }
        // named templates: the default one plain, the others under their names
        Some(Json::Array(list)) => {
            for t in list {
                let (Some(name), Some(text)) = (
                    t.get("name").and_then(Json::as_str),
                    t.get("template").and_then(Json::as_str),
                ) else {
                    continue;
                };
                let key = if name == "default" {
                    "tokenizer.chat_template".to_owned()
                } else {
                    format!("tokenizer.chat_template.{name}")
                };
                m.push((key, Value::String(text.to_owned())));
            }
        }
        _ => {
            let jinja = dir.join("chat_template.jinja");
            if let Ok(t) = std::fs::read_to_string(&jinja) {
                m.push(("tokenizer.chat_template".into(), Value::String(t)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pre_tokenizers_are_named_by_structure_and_space_cleanup() {
        let smollm = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]});
        assert_eq!(pre_tokenizer_name(&smollm, Some(false)), Ok("smollm"));
        assert_eq!(pre_tokenizer_name(&smollm, Some(true)), Ok("starcoder"));
        let gpt2 = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true});
        assert_eq!(pre_tokenizer_name(&gpt2, None), Ok("gpt-2"));
        let llama3 = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
             "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]});
        assert_eq!(pre_tokenizer_name(&llama3, Some(true)), Ok("llama-bpe"));
        let unknown = json!({"type": "Whitespace"});
        let e = pre_tokenizer_name(&unknown, None).unwrap_err();
        assert!(
            e.contains("no llama.cpp pre-tokenizer") && e.contains("smollm"),
            "{e}"
        );
        assert!(pre_tokenizer_name(&json!({"type": "Nonsense"}), None).is_err());
    }

    #[test]
    fn merges_in_both_spellings() {
        let m = json!({"merges": ["a b", ["c d", "e"]]});
        assert_eq!(
            bpe_merges(Path::new("t"), &m).unwrap(),
            ["a b", "c\u{120}d e"]
        );
    }

    #[test]
    fn sentencepiece_wire_format() {
        // two pieces: ("<unk>", 0.0, UNKNOWN) and ("▁a", -1.5, NORMAL by default)
        let piece = |p: &str, score: f32, kind: Option<u8>| {
            let mut b = vec![0x0a, p.len() as u8];
            b.extend(p.as_bytes());
            b.push(0x15);
            b.extend(score.to_le_bytes());
            if let Some(k) = kind {
                b.extend([0x18, k]);
            }
            let mut outer = vec![0x0a, b.len() as u8];
            outer.extend(b);
            outer
        };
        let mut model = piece("<unk>", 0.0, Some(2));
        model.extend(piece("\u{2581}a", -1.5, None));
        model.extend([0x12, 0x02, 0x08, 0x01]); // a trainer_spec to skip
        let p = spm_pieces(&model).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].piece.as_str(), p[0].kind), ("<unk>", 2));
        assert_eq!(
            (p[1].piece.as_str(), p[1].score, p[1].kind),
            ("\u{2581}a", -1.5, 1)
        );
        assert!(spm_pieces(&model[..model.len() - 7]).is_err());
        assert!(spm_pieces(b"not a model").is_err());
    }
}
