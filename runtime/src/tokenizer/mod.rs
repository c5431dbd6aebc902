//! Tokenizers for the models the runtime loads: built from GGUF metadata (byte-level BPE with the
//! pre-tokenizer `tokenizer.ggml.pre` names, or SentencePiece "llama" vocabularies) or read from a
//! Hugging Face tokenizer.json, all through the `tokenizers` crate. Chat templates render with
//! minijinja.

mod chat;
mod gguf_vocab;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use chat::{ChatMessage, ChatTemplate};
pub(crate) use gguf_vocab::bpe_pre_tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {field}: {msg}")]
    Field {
        path: PathBuf,
        field: String,
        msg: String,
    },
    #[error("{path}: {msg}")]
    Build { path: PathBuf, msg: String },
    #[error("tokenizing failed: {0}")]
    Encode(String),
    #[error("chat template: {0}")]
    Template(String),
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Vec<u32>,
    add_bos: bool,
    chat_template: Option<ChatTemplate>,
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes.
    pub fn from_gguf(g: &quant::gguf::GgufFile) -> Result<Tokenizer, TokenizerError> {
        gguf_vocab::from_gguf(g)
    }

    /// Reads tokenizer.json and, when present, tokenizer_config.json and generation_config.json
    /// from a Hugging Face model folder.
    pub fn from_hf_dir(dir: &Path) -> Result<Tokenizer, TokenizerError> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| TokenizerError::Build {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = read_json_if_exists(&cfg_path)?;
        let token_of = |key: &str| -> Option<u32> {
            let v = cfg.as_ref()?.get(key)?;
            let text = v.as_str().or_else(|| v.get("content")?.as_str())?;
            inner.token_to_id(text)
        };
        let bos = token_of("bos_token");
        let mut eos: Vec<u32> = token_of("eos_token").into_iter().collect();
        let gen_path = dir.join("generation_config.json");
        if let Some(g) = read_json_if_exists(&gen_path)? {
            for id in json_ids(g.get("eos_token_id")) {
                if !eos.contains(&id) {
                    eos.push(id);
                }
            }
        }
        // A post-processor that prepends BOS (Llama-style tokenizer.json) means the model expects it.
        let post_adds_bos = bos.is_some_and(|b| {
            inner
                .post_process(tokenizers::Encoding::default(), None, true)
                .is_ok_and(|e| e.get_ids().first() == Some(&b))
        });
        let add_bos = cfg
            .as_ref()
            .and_then(|c| c.get("add_bos_token"))
            .and_then(Value::as_bool)
            .unwrap_or(post_adds_bos);
        let chat_template = match cfg.as_ref().and_then(|c| c.get("chat_template")) {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: use the default one.
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_owned)),
            _ => None,
        };
        let mut tok = Tokenizer {
            inner,
            bos,
            eos,
            add_bos,
            chat_template: None,
        };
        // Encoding must not add BOS twice: we add it ourselves from `add_bos`.
        tok.inner
            .with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        tok.chat_template = chat_template.map(|t| tok.template(t));
        Ok(tok)
    }

    fn template(&self, source: String) -> ChatTemplate {
        let text = |id: Option<u32>| {
            id.and_then(|i| self.inner.id_to_token(i))
                .unwrap_or_default()
        };
        ChatTemplate::new(source, text(self.bos), text(self.eos.first().copied()))
    }

    pub(crate) fn assemble(
        inner: tokenizers::Tokenizer,
        bos: Option<u32>,
        eos: Vec<u32>,
        add_bos: bool,
        chat_template: Option<String>,
    ) -> Tokenizer {
        let mut t = Tokenizer {
            inner,
            bos,
            eos,
            add_bos,
            chat_template: None,
        };
        t.chat_template = chat_template.map(|s| t.template(s));
        t
    }

    /// Token ids of `text`, with BOS first when the model expects one and `with_bos` is set.
    /// Special-token text in the input (e.g. "<|im_start|>") maps to its token.
    pub fn encode(&self, text: &str, with_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if with_bos && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    /// Whether the model expects a BOS token at the start of every sequence.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// Renders `messages` with the model's chat template.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.chat_template
            .as_ref()
            .ok_or_else(|| TokenizerError::Template("the model has no chat template".into()))?
            .render(messages, add_generation_prompt)
    }

    /// The tokenizer as a Hugging Face tokenizer.json document.
    pub fn to_hf_json(&self) -> Result<String, TokenizerError> {
        let mut inner = self.inner.clone();
        if self.add_bos {
            if let Some(b) = self.bos {
                let bos = self.inner.id_to_token(b).unwrap_or_default();
                let pp = tokenizers::processors::template::TemplateProcessing::builder()
                    .try_single(format!("{bos} $A"))
                    .and_then(|b| b.try_pair(format!("{bos} $A {bos} $B")))
                    .map_err(|e| TokenizerError::Encode(e.to_string()))?
                    .special_tokens(vec![(bos, b)])
                    .build()
                    .map_err(|e| TokenizerError::Encode(e.to_string()))?;
                inner.with_post_processor(Some(pp));
            }
        }
        inner
            .to_string(true)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// tokenizer_config.json contents matching `to_hf_json`.
    pub fn hf_tokenizer_config(&self, model_max_length: usize) -> Value {
        let text = |id: Option<u32>| id.and_then(|i| self.inner.id_to_token(i));
        let mut v = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": model_max_length,
            "add_bos_token": self.add_bos,
            "add_eos_token": false,
            "clean_up_tokenization_spaces": false,
        });
        let o = v.as_object_mut().unwrap();
        if let Some(b) = text(self.bos) {
            o.insert("bos_token".into(), b.into());
        }
        if let Some(e) = text(self.eos.first().copied()) {
            o.insert("eos_token".into(), e.into());
        }
        if let Some(t) = &self.chat_template {
            o.insert("chat_template".into(), t.source().into());
        }
        v
    }
}

fn read_json_if_exists(path: &Path) -> Result<Option<Value>, TokenizerError> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TokenizerError::Build {
            path: path.to_owned(),
            msg: e.to_string(),
        }),
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| TokenizerError::Build {
                path: path.to_owned(),
                msg: format!("not valid JSON: {e}"),
            }),
    }
}

fn json_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|n| n as u32))
            .collect(),
        Some(x) => x.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        None => vec![],
    }
}
