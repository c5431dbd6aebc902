//! llama.cpp's quantization mixes (llama c392e50, `llama_tensor_get_type` and the tensor filter of
//! `llama_model_quantize_impl`): which tensors are quantized at all, and to which type, given the
//! requested file type, the tensor's role and layer, and a few model facts.
//!
//! The rules depend on running counters (the how-many-th attn_v or ffn_down this is), so tensors
//! must be planned in llama-quantize's order: `processing_order`.

use std::cmp::Ordering;
use std::path::Path;

use super::types::GgmlType;
use crate::gguf::{GgufError, GgufFile, Value};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MixError {
    #[error("tensor {name}: cannot tell its layer (expected blk.N.)")]
    NoLayer { name: String },
    #[error("tensor {name}: layer {layer} is outside the model's {n_layer} layers")]
    BadLayer {
        name: String,
        layer: i64,
        n_layer: usize,
    },
    #[error("tensor {name}: rows of {row_len} fit neither {wanted} nor a fallback type")]
    NoFittingType {
        name: String,
        row_len: u64,
        wanted: GgmlType,
    },
}

/// llama.cpp's `llama_ftype`: the file type a quantization run targets, stored as
/// `general.file_type`. Discriminants are llama.cpp's ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum LlamaFtype {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 7,
    Q5_0 = 8,
    Q5_1 = 9,
    Q2K = 10,
    Q3KS = 11,
    Q3KM = 12,
    Q3KL = 13,
    Q4KS = 14,
    Q4KM = 15,
    Q5KS = 16,
    Q5KM = 17,
    Q6K = 18,
    IQ4NL = 25,
    IQ4XS = 30,
    BF16 = 32,
}

/// Name, file type and default tensor type, as llama-quantize lists them.
const FTYPES: [(&str, LlamaFtype, GgmlType); 19] = [
    ("Q4_0", LlamaFtype::Q4_0, GgmlType::Q4_0),
    ("Q4_1", LlamaFtype::Q4_1, GgmlType::Q4_1),
    ("Q5_0", LlamaFtype::Q5_0, GgmlType::Q5_0),
    ("Q5_1", LlamaFtype::Q5_1, GgmlType::Q5_1),
    ("Q2_K", LlamaFtype::Q2K, GgmlType::Q2K),
    ("Q3_K_S", LlamaFtype::Q3KS, GgmlType::Q3K),
    ("Q3_K_M", LlamaFtype::Q3KM, GgmlType::Q3K),
    ("Q3_K_L", LlamaFtype::Q3KL, GgmlType::Q3K),
    ("IQ4_NL", LlamaFtype::IQ4NL, GgmlType::IQ4NL),
    ("IQ4_XS", LlamaFtype::IQ4XS, GgmlType::IQ4XS),
    ("Q4_K_S", LlamaFtype::Q4KS, GgmlType::Q4K),
    ("Q4_K_M", LlamaFtype::Q4KM, GgmlType::Q4K),
    ("Q5_K_S", LlamaFtype::Q5KS, GgmlType::Q5K),
    ("Q5_K_M", LlamaFtype::Q5KM, GgmlType::Q5K),
    ("Q6_K", LlamaFtype::Q6K, GgmlType::Q6K),
    ("Q8_0", LlamaFtype::Q8_0, GgmlType::Q8_0),
    ("F16", LlamaFtype::F16, GgmlType::F16),
    ("BF16", LlamaFtype::BF16, GgmlType::BF16),
    ("F32", LlamaFtype::F32, GgmlType::F32),
];

/// llama-quantize's shorthand names.
const ALIASES: [(&str, LlamaFtype); 3] = [
    ("Q3_K", LlamaFtype::Q3KM),
    ("Q4_K", LlamaFtype::Q4KM),
    ("Q5_K", LlamaFtype::Q5KM),
];

impl LlamaFtype {
    pub fn all() -> impl Iterator<Item = LlamaFtype> {
        FTYPES.iter().map(|f| f.1)
    }

    fn entry(self) -> &'static (&'static str, LlamaFtype, GgmlType) {
        FTYPES
            .iter()
            .find(|f| f.1 == self)
            .expect("every variant is listed")
    }

    /// llama-quantize's name ("Q4_K_M", "IQ4_XS", "F16").
    pub fn name(self) -> &'static str {
        self.entry().0
    }

    /// The id stored as `general.file_type`.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The type of every quantized tensor no rule singles out.
    pub fn default_type(self) -> GgmlType {
        self.entry().2
    }

    /// Parses a name or alias case-insensitively, or a numeric id, as llama-quantize does.
    pub fn parse(s: &str) -> Option<LlamaFtype> {
        let by_name = FTYPES
            .iter()
            .map(|f| (f.0, f.1))
            .chain(ALIASES)
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, f)| f);
        by_name.or_else(|| s.parse::<u32>().ok().and_then(LlamaFtype::from_id))
    }

    pub fn from_id(id: u32) -> Option<LlamaFtype> {
        LlamaFtype::all().find(|f| f.id() == id)
    }
}

impl std::fmt::Display for LlamaFtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The model facts the rules consult.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFacts {
    /// `general.architecture`.
    pub arch: String,
    pub n_layer: usize,
    /// Heads and KV heads of layer 0 (llama.cpp's `n_gqa()` looks at layer 0 only).
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_expert: u32,
    /// Whether the model has its own `output.weight` (else the embeddings are tied).
    pub has_output: bool,
    /// Tensors named like attn_v / attn_qkv / attn_kv_b: the denominator of attn_v's rules.
    pub n_attention_wv: usize,
}

impl ModelFacts {
    /// Reads the facts from a GGUF model's metadata and tensor names.
    pub fn from_gguf(g: &GgufFile) -> Result<ModelFacts, GgufError> {
        ModelFacts::from_metadata(
            &g.path,
            &g.metadata,
            g.tensors.iter().map(|t| t.name.as_str()),
        )
    }

    /// Reads the facts from GGUF metadata and tensor names; `path` names the source in errors.
    pub fn from_metadata<'a>(
        path: &Path,
        metadata: &[(String, Value)],
        names: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<ModelFacts, GgufError> {
        let meta_err = |key: &str, msg: String| GgufError::Meta {
            path: path.to_owned(),
            key: key.to_owned(),
            msg,
        };
        let get = |k: &str| metadata.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        let arch_key = "general.architecture";
        let arch = match get(arch_key) {
            None => return Err(meta_err(arch_key, "missing".into())),
            Some(v) => v
                .as_str()
                .ok_or_else(|| meta_err(arch_key, format!("expected a string, found {v}")))?
                .to_owned(),
        };
        let key = |k: &str| format!("{arch}.{k}");
        let block_count = key("block_count");
        let n_layer = match get(&block_count) {
            None => return Err(meta_err(&block_count, "missing".into())),
            Some(v) => v
                .as_i64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| meta_err(&block_count, format!("{v} is not a layer count")))?,
        };
        let first = |k: &str| -> Result<Option<u32>, GgufError> {
            let k = key(k);
            match get(&k) {
                None => Ok(None),
                // a per-layer array: llama.cpp's n_gqa() looks at layer 0
                Some(v) => v
                    .as_array()
                    .and_then(|a| a.first())
                    .unwrap_or(v)
                    .as_i64()
                    .and_then(|i| u32::try_from(i).ok())
                    .map(Some)
                    .ok_or_else(|| meta_err(&k, format!("expected a head count, found {v}"))),
            }
        };
        let n_head = first("attention.head_count")?.unwrap_or(0);
        let n_head_kv = first("attention.head_count_kv")?.unwrap_or(n_head);
        let n_expert = first("expert_count")?.unwrap_or(0);
        Ok(ModelFacts {
            arch,
            n_layer,
            n_head,
            n_head_kv,
            n_expert,
            has_output: names.clone().any(|n| n == "output.weight"),
            n_attention_wv: names.filter(|n| counts_as_attn_v(n)).count(),
        })
    }

    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }

    /// llama.cpp's LLM_TYPE_70B: 80-layer llama (with GQA, not 8-expert), deci, qwen2 and olmo.
    fn is_70b(&self) -> bool {
        self.n_layer == 80
            && match self.arch.as_str() {
                "llama" => self.n_expert != 8 && self.n_head != self.n_head_kv,
                "deci" | "qwen2" | "olmo" => true,
                _ => false,
            }
    }
}

fn counts_as_attn_v(name: &str) -> bool {
    ["attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight"]
        .iter()
        .any(|p| name.contains(p))
}

/// The user's choices for a run.
#[derive(Clone, Debug, PartialEq)]
pub struct MixOptions {
    pub ftype: LlamaFtype,
    /// `--pure`: every quantized tensor gets the default type.
    pub pure: bool,
    pub output_tensor_type: Option<GgmlType>,
    pub token_embedding_type: Option<GgmlType>,
    /// False for `--leave-output-tensor`.
    pub quantize_output_tensor: bool,
    pub has_imatrix: bool,
}

impl MixOptions {
    pub fn new(ftype: LlamaFtype) -> MixOptions {
        MixOptions {
            ftype,
            pure: false,
            output_tensor_type: None,
            token_embedding_type: None,
            quantize_output_tensor: true,
            has_imatrix: false,
        }
    }
}

/// Substrings that keep a 2-D `*weight` tensor out of quantization: norms, MoE routers, BERT's
/// position and token-type embeddings, Mamba's conv, RWKV's small mixes, T5's relative bias.
const NEVER_QUANTIZED: [&str; 10] = [
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ssm_conv1d.weight",
    "time_mix_first.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
];
const NEVER_QUANTIZED_EXACT: [&str; 2] = ["position_embd.weight", "token_types.weight"];

/// Whether llama-quantize considers the tensor for quantization at all: a `*weight` of at least
/// two (non-trivial) dimensions that is not on the exclusion lists.
pub fn is_quantizable(name: &str, dims: &[u64], opts: &MixOptions) -> bool {
    // ggml_n_dims ignores trailing dimensions of 1
    let n_dims = dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
    name.ends_with("weight")
        && n_dims >= 2
        && !NEVER_QUANTIZED.iter().any(|p| name.contains(p))
        && !NEVER_QUANTIZED_EXACT.contains(&name)
        && (opts.quantize_output_tensor || name != "output.weight")
}

/// The layer in a `blk.N.` name, as C's `sscanf(name, "blk.%d.", &il)` reads it.
fn parse_layer(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?.trim_start();
    let sign_len = rest.starts_with(['+', '-']) as usize;
    let digits = rest[sign_len..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    if digits == 0 {
        return None;
    }
    rest[..sign_len + digits].parse::<i32>().ok().map(i64::from)
}

/// llama.cpp's tensor order (`weight_name_comparer`): by layer, tensors without one first, then
/// by name.
pub fn processing_order(a: &str, b: &str) -> Ordering {
    let layer = |n: &str| parse_layer(n).unwrap_or(-1);
    layer(a).cmp(&layer(b)).then_with(|| a.cmp(b))
}

/// `use_more_bits`: the first and last eighth of the layers and every third one between.
fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// What part of the model a tensor is, in the order llama.cpp's rules test the names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Output,
    TokenEmbd,
    AttnV,
    AttnK,
    AttnQ,
    FfnDown,
    AttnOutput,
    AttnQkv,
    FfnGate,
    FfnUp,
    Other,
}

fn role(name: &str, has_output: bool) -> Role {
    if name == "output.weight" || (!has_output && name == "token_embd.weight") {
        return Role::Output;
    }
    if name == "token_embd.weight" {
        return Role::TokenEmbd;
    }
    const BY_SUBSTRING: [(&str, Role); 8] = [
        ("attn_v.weight", Role::AttnV),
        ("attn_k.weight", Role::AttnK),
        ("attn_q.weight", Role::AttnQ),
        ("ffn_down", Role::FfnDown),
        ("attn_output.weight", Role::AttnOutput),
        ("attn_qkv.weight", Role::AttnQkv),
        ("ffn_gate", Role::FfnGate),
        ("ffn_up", Role::FfnUp),
    ];
    BY_SUBSTRING
        .iter()
        .find(|(p, _)| name.contains(p))
        .map_or(Role::Other, |&(_, r)| r)
}

/// The type llama.cpp falls back to when a row is not a whole number of `ty`'s blocks.
fn fallback(ty: GgmlType) -> Option<GgmlType> {
    use GgmlType::*;
    match ty {
        Q2K | Q3K | IQ4XS => Some(IQ4NL),
        Q4K => Some(Q5_0),
        Q5K => Some(Q5_1),
        Q6K => Some(Q8_0),
        _ => None,
    }
}

/// Plans tensor types in processing order, carrying llama.cpp's counters.
#[derive(Clone, Debug)]
pub struct MixPlanner {
    facts: ModelFacts,
    opts: MixOptions,
    i_attention_wv: usize,
    i_ffn_down: usize,
    i_ffn_gate: usize,
    i_ffn_up: usize,
    /// Tensors that needed a fallback type, and those that did not (llama.cpp's warning).
    pub n_fallback: usize,
    pub n_k_quantized: usize,
}

impl MixPlanner {
    pub fn new(facts: ModelFacts, opts: MixOptions) -> MixPlanner {
        MixPlanner {
            facts,
            opts,
            i_attention_wv: 0,
            i_ffn_down: 0,
            i_ffn_gate: 0,
            i_ffn_up: 0,
            n_fallback: 0,
            n_k_quantized: 0,
        }
    }

    pub fn options(&self) -> &MixOptions {
        &self.opts
    }

    /// The type tensor `name` (GGUF dims, currently of type `current`) is written as. Call once
    /// per tensor, in `processing_order`.
    pub fn plan(
        &mut self,
        name: &str,
        dims: &[u64],
        current: GgmlType,
    ) -> Result<GgmlType, MixError> {
        if !is_quantizable(name, dims, &self.opts) {
            return Ok(current);
        }
        let default = self.opts.ftype.default_type();
        let mut ty = default;
        if !self.opts.pure && default.is_quantized() {
            ty = self.mixed_type(name, dims)?;
        }
        if name == "token_embd.weight" {
            ty = self.opts.token_embedding_type.unwrap_or(ty);
        }
        if name == "output.weight" {
            ty = self.opts.output_tensor_type.unwrap_or(ty);
        }
        if !dims[0].is_multiple_of(ty.block_size() as u64) {
            // only --pure and explicit tensor types get here: the mix already fell back
            return Err(MixError::NoFittingType {
                name: name.to_owned(),
                row_len: dims[0],
                wanted: ty,
            });
        }
        Ok(ty)
    }

    /// `llama_tensor_get_type`: the rule for the tensor's role, then the fallback for rows that
    /// are not a whole number of blocks.
    fn mixed_type(&mut self, name: &str, dims: &[u64]) -> Result<GgmlType, MixError> {
        use GgmlType::*;
        use LlamaFtype as F;
        let ftype = self.opts.ftype;
        let facts = &self.facts;
        let mut ty = ftype.default_type();
        match role(name, facts.has_output) {
            Role::Output => {
                if let Some(t) = self.opts.output_tensor_type {
                    ty = t;
                } else if facts.is_falcon() || !dims[0].is_multiple_of(ty.block_size() as u64) {
                    ty = Q8_0;
                } else if ty != Q8_0 {
                    ty = Q6K;
                }
            }
            Role::TokenEmbd => {
                if let Some(t) = self.opts.token_embedding_type {
                    ty = t;
                }
            }
            Role::AttnV => {
                let (i, n) = (self.i_attention_wv, facts.n_attention_wv);
                match ftype {
                    F::Q2K => ty = if facts.n_gqa() >= 4 { Q4K } else { Q3K },
                    F::Q3KM => ty = if i < 2 { Q5K } else { Q4K },
                    F::Q3KL => ty = Q5K,
                    F::IQ4NL | F::IQ4XS if facts.n_gqa() >= 4 => ty = Q5K,
                    F::Q4KM | F::Q5KM if use_more_bits(i, n) => ty = Q6K,
                    F::Q4KS if i < 4 => ty = Q5K,
                    _ => {}
                }
                // 70B shares attn_v among 8 heads: more bits cost little
                if facts.is_70b() && matches!(ty, Q3K | Q4K) {
                    ty = Q5K;
                }
                if facts.n_expert == 8 {
                    ty = Q8_0;
                }
                self.i_attention_wv += 1;
            }
            Role::AttnK => {
                if facts.n_expert == 8 {
                    ty = Q8_0;
                }
            }
            Role::FfnDown => {
                let (i, n) = layer_of(name, self.i_ffn_down, facts)?;
                let falcon = facts.is_falcon();
                match ftype {
                    F::Q2K => ty = Q3K,
                    F::Q3KM => {
                        ty = if i < n / 16 {
                            Q5K
                        } else if !falcon || use_more_bits(i, n) {
                            Q4K
                        } else {
                            Q3K
                        }
                    }
                    F::Q3KL => ty = if falcon { Q4K } else { Q5K },
                    F::Q4KM if falcon => {
                        ty = if i < n / 16 {
                            Q6K
                        } else if use_more_bits(i, n) {
                            Q5K
                        } else {
                            Q4K
                        }
                    }
                    F::Q4KM if use_more_bits(i, n) => ty = Q6K,
                    F::IQ4NL | F::IQ4XS if i < n / 8 && !self.opts.has_imatrix => ty = Q5K,
                    F::Q5KM if use_more_bits(i, n) => ty = Q6K,
                    F::Q4KS if !falcon && i < n / 8 => ty = Q5K,
                    // imatrix Q4_0/Q5_0 can go wild on the first ffn_down layers
                    F::Q4_0 if self.opts.has_imatrix && i < n / 8 => ty = Q4_1,
                    F::Q5_0 if self.opts.has_imatrix && i < n / 8 => ty = Q5_1,
                    _ => {}
                }
                self.i_ffn_down += 1;
            }
            Role::AttnOutput => {
                let falcon = facts.is_falcon();
                match ftype {
                    F::Q3KL if falcon => ty = Q4K,
                    _ if falcon => {}
                    F::Q2K | F::Q3KS | F::Q3KM | F::IQ4NL | F::Q4KS | F::Q4KM | F::IQ4XS
                        if facts.n_expert == 8 =>
                    {
                        ty = Q5K
                    }
                    _ if facts.n_expert == 8 => {}
                    F::Q2K => ty = Q3K,
                    F::Q3KM => ty = Q4K,
                    F::Q3KL => ty = Q5K,
                    _ => {}
                }
            }
            Role::AttnQkv => match ftype {
                F::Q3KM | F::Q3KL => ty = Q4K,
                F::Q4KM => ty = Q5K,
                F::Q5KM => ty = Q6K,
                _ => {}
            },
            Role::FfnGate => {
                layer_of(name, self.i_ffn_gate, facts)?;
                self.i_ffn_gate += 1;
            }
            Role::FfnUp => {
                layer_of(name, self.i_ffn_up, facts)?;
                self.i_ffn_up += 1;
            }
            Role::AttnQ | Role::Other => {}
        }

        if dims[0].is_multiple_of(ty.block_size() as u64) {
            self.n_k_quantized += 1;
            return Ok(ty);
        }
        self.n_fallback += 1;
        let no_fit = || MixError::NoFittingType {
            name: name.to_owned(),
            row_len: dims[0],
            wanted: ty,
        };
        let fb = fallback(ty).ok_or_else(no_fit)?;
        Ok(if dims[0].is_multiple_of(fb.block_size() as u64) {
            fb
        } else {
            GgmlType::F16
        })
    }
}

/// `(layer, n_layer)` for the FFN rules: the running counter, or for MoE models (whose expert
/// tensors are not in layer order) the layer parsed from the name.
fn layer_of(name: &str, counter: usize, facts: &ModelFacts) -> Result<(usize, usize), MixError> {
    let n_layer = facts.n_layer;
    if facts.n_expert <= 1 {
        return Ok((counter, n_layer));
    }
    let layer = parse_layer(name).ok_or_else(|| MixError::NoLayer {
        name: name.to_owned(),
    })?;
    usize::try_from(layer)
        .ok()
        .filter(|&l| l < n_layer)
        .map(|l| (l, n_layer))
        .ok_or(MixError::BadLayer {
            name: name.to_owned(),
            layer,
            n_layer,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(n_layer: usize, n_expert: u32) -> ModelFacts {
        ModelFacts {
            arch: "llama".into(),
            n_layer,
            n_head: 8,
            n_head_kv: 2,
            n_expert,
            has_output: true,
            n_attention_wv: n_layer,
        }
    }

    #[test]
    fn ftype_names_ids_and_aliases() {
        // llama.h ids and llama-quantize names
        let expect = [
            ("F32", 0),
            ("F16", 1),
            ("Q4_0", 2),
            ("Q8_0", 7),
            ("Q2_K", 10),
            ("Q3_K_S", 11),
            ("Q4_K_M", 15),
            ("Q6_K", 18),
            ("IQ4_NL", 25),
            ("IQ4_XS", 30),
            ("BF16", 32),
        ];
        for (name, id) in expect {
            let f = LlamaFtype::parse(name).unwrap();
            assert_eq!((f.name(), f.id()), (name, id));
            assert_eq!(LlamaFtype::parse(&name.to_lowercase()), Some(f));
            assert_eq!(LlamaFtype::parse(&id.to_string()), Some(f));
        }
        assert_eq!(LlamaFtype::parse("q4_k"), Some(LlamaFtype::Q4KM));
        assert_eq!(LlamaFtype::parse("Q3_K"), Some(LlamaFtype::Q3KM));
        assert_eq!(LlamaFtype::parse("IQ2_XS"), None);
        assert_eq!(LlamaFtype::parse("19"), None);
        assert_eq!(LlamaFtype::all().count(), 19);
    }

    #[test]
    fn layer_parsing_follows_sscanf() {
        assert_eq!(parse_layer("blk.12.attn_v.weight"), Some(12));
        assert_eq!(parse_layer("blk.-3.x"), Some(-3));
        assert_eq!(parse_layer("blk.7"), Some(7));
        assert_eq!(parse_layer("blk.x.attn"), None);
        assert_eq!(parse_layer("output.weight"), None);
        let mut names = [
            "blk.10.a",
            "output.weight",
            "blk.2.b",
            "blk.2.a",
            "token_embd.weight",
        ];
        names.sort_by(|a, b| processing_order(a, b));
        assert_eq!(
            names,
            [
                "output.weight",
                "token_embd.weight",
                "blk.2.a",
                "blk.2.b",
                "blk.10.a"
            ]
        );
    }

    #[test]
    fn use_more_bits_on_32_layers() {
        // anchors.md: 0-3, 6, 9, ..., 27, 28-31
        let layers: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            layers,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    #[test]
    fn which_tensors_are_quantized() {
        let o = MixOptions::new(LlamaFtype::Q4KM);
        assert!(is_quantizable("blk.0.attn_q.weight", &[256, 256], &o));
        assert!(is_quantizable(
            "blk.0.ffn_up_exps.weight",
            &[256, 64, 8],
            &o
        ));
        assert!(!is_quantizable("blk.0.attn_norm.weight", &[256], &o));
        assert!(!is_quantizable("blk.0.attn_q.bias", &[256, 2], &o));
        assert!(
            !is_quantizable("blk.0.attn_q.weight", &[256, 1, 1], &o),
            "1-D in disguise"
        );
        assert!(!is_quantizable("blk.0.ffn_gate_inp.weight", &[256, 8], &o));
        assert!(!is_quantizable("position_embd.weight", &[256, 64], &o));
        let mut keep = o.clone();
        keep.quantize_output_tensor = false;
        assert!(is_quantizable("output.weight", &[256, 64], &o));
        assert!(!is_quantizable("output.weight", &[256, 64], &keep));
    }

    #[test]
    fn rows_that_fit_no_type_are_errors() {
        let mut pure = MixOptions::new(LlamaFtype::Q4KM);
        pure.pure = true;
        let mut p = MixPlanner::new(facts(2, 0), pure);
        let e = p
            .plan("blk.0.attn_q.weight", &[576, 576], GgmlType::F16)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "tensor blk.0.attn_q.weight: rows of 576 fit neither Q4_K nor a fallback type"
        );
        // the mix falls back instead, to F16 when even the fallback does not fit
        let mut p = MixPlanner::new(facts(2, 0), MixOptions::new(LlamaFtype::Q4KM));
        let plan = |p: &mut MixPlanner, n| p.plan("blk.0.attn_q.weight", &[n, 8], GgmlType::F16);
        assert_eq!(plan(&mut p, 576), Ok(GgmlType::Q5_0));
        assert_eq!(plan(&mut p, 100), Ok(GgmlType::F16));
        assert_eq!((p.n_fallback, p.n_k_quantized), (2, 0));
        let mut legacy = MixPlanner::new(facts(2, 0), MixOptions::new(LlamaFtype::Q8_0));
        assert!(matches!(
            plan(&mut legacy, 100),
            Err(MixError::NoFittingType { row_len: 100, .. })
        ));
    }

    #[test]
    fn moe_layers_come_from_names() {
        let mut p = MixPlanner::new(facts(4, 8), MixOptions::new(LlamaFtype::Q4KM));
        let dims = [256, 256, 8];
        let e = p
            .plan("ffn_down_exps.weight", &dims, GgmlType::F16)
            .unwrap_err();
        assert!(matches!(e, MixError::NoLayer { .. }), "{e}");
        let e = p
            .plan("blk.9.ffn_down_exps.weight", &dims, GgmlType::F16)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "tensor blk.9.ffn_down_exps.weight: layer 9 is outside the model's 4 layers"
        );
        // layer 3 of 4 uses more bits whatever order the tensors come in
        let t = p.plan("blk.3.ffn_down_exps.weight", &dims, GgmlType::F16);
        assert_eq!(t, Ok(GgmlType::Q6K));
    }
}
