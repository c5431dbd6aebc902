//! compressed-tensors, the format llm-compressor writes and vLLM serves: config.json's
//! `quantization_config` (written exactly as llm-compressor 0.14 / compressed-tensors 0.19 write
//! it for the schemes this project makes, and parsed for any folder), the per-module tensors of
//! each format, and 8-bit `pack-quantized` packing.
//!
//! Formats by scheme (compressed-tensors' `infer_module_format`): float weights with activation
//! quantization → `float-quantized`; int weights with activation quantization → `int-quantized`;
//! weight-only int → `pack-quantized` (int32 words along the input dimension); the rest →
//! `naive-quantized`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::hf::config::ConfigError;
use crate::safetensors_out::Dtype;

mod linear;
pub use linear::{quantize_linear, LinearQuantError, LinearTensorSpec, StaticScales};

/// The compressed-tensors release whose format this module writes (config `version`).
pub const VERSION: &str = "0.19.0";

/// The dtype scales are stored in: the module's dtype, as compressed-tensors stores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleDtype {
    F32,
    F16,
    BF16,
}

impl ScaleDtype {
    /// `v` rounded to this dtype (to nearest, ties to even), as an f32.
    #[inline]
    pub fn round(self, v: f32) -> f32 {
        match self {
            ScaleDtype::F32 => v,
            ScaleDtype::F16 => half::f16::from_f32(v).to_f32(),
            ScaleDtype::BF16 => half::bf16::from_f32(v).to_f32(),
        }
    }

    /// torch.finfo(dtype).eps: what compressed-tensors puts in place of a zero scale.
    pub fn eps(self) -> f32 {
        match self {
            ScaleDtype::F32 => f32::EPSILON,
            ScaleDtype::F16 => half::f16::EPSILON.to_f32(),
            ScaleDtype::BF16 => half::bf16::EPSILON.to_f32(),
        }
    }

    /// A symmetric scale as `calculate_qparams` computes it: amax / divisor in f32, rounded to
    /// the dtype, a zero scale replaced by the dtype's epsilon. May be infinite when the dtype
    /// cannot hold it (f16 above 65504): callers check.
    pub fn scale_from_range(self, amax: f32, divisor: f32) -> f32 {
        let s = self.round(amax / divisor);
        if s == 0.0 {
            self.eps()
        } else {
            s
        }
    }

    pub fn safetensors(self) -> Dtype {
        match self {
            ScaleDtype::F32 => Dtype::F32,
            ScaleDtype::F16 => Dtype::F16,
            ScaleDtype::BF16 => Dtype::BF16,
        }
    }

    /// Little-endian bytes of `v` in this dtype.
    pub fn encode(self, v: &[f32]) -> Vec<u8> {
        match self {
            ScaleDtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ScaleDtype::F16 => v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
            ScaleDtype::BF16 => v
                .iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                .collect(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantType {
    Int,
    Float,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Tensor,
    Channel,
    Group,
    Block,
    Token,
    TensorGroup,
    AttnHead,
}

/// `dynamic`: false (static, calibrated), true (computed at run time) or "local".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dynamic {
    Bool(bool),
    Named(DynamicName),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DynamicName {
    Local,
}

impl Dynamic {
    pub fn is_dynamic(self) -> bool {
        !matches!(self, Dynamic::Bool(false))
    }
}

/// compressed-tensors' `QuantizationArgs`, every field as it serializes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantArgs {
    #[serde(default = "eight")]
    pub num_bits: u32,
    #[serde(rename = "type", default = "int")]
    pub kind: QuantType,
    #[serde(default = "yes")]
    pub symmetric: bool,
    #[serde(default)]
    pub group_size: Option<i64>,
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub block_structure: Option<Vec<usize>>,
    #[serde(default = "not_dynamic")]
    pub dynamic: Dynamic,
    #[serde(default)]
    pub actorder: Option<String>,
    #[serde(default)]
    pub observer: Option<String>,
    #[serde(default)]
    pub observer_kwargs: Map<String, Value>,
    #[serde(default)]
    pub scale_dtype: Option<String>,
    #[serde(default)]
    pub zp_dtype: Option<String>,
}

fn eight() -> u32 {
    8
}
fn int() -> QuantType {
    QuantType::Int
}
fn yes() -> bool {
    true
}
fn not_dynamic() -> Dynamic {
    Dynamic::Bool(false)
}

impl QuantArgs {
    fn new(kind: QuantType, strategy: Strategy, dynamic: bool, observer: Option<&str>) -> Self {
        QuantArgs {
            num_bits: 8,
            kind,
            symmetric: true,
            group_size: None,
            strategy: Some(strategy),
            block_structure: None,
            dynamic: Dynamic::Bool(dynamic),
            actorder: None,
            observer: observer.map(str::to_owned),
            observer_kwargs: Map::new(),
            scale_dtype: None,
            zp_dtype: None,
        }
    }

    /// The strategy, inferred from group_size when absent (as compressed-tensors' validator does).
    pub fn effective_strategy(&self) -> Strategy {
        self.strategy.unwrap_or(match self.group_size {
            Some(-1) => Strategy::Channel,
            Some(g) if g > 0 => Strategy::Group,
            _ => Strategy::Tensor,
        })
    }
}

/// The schemes this project writes, named as llm-compressor's presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// FP8 per-channel weights, FP8 per-token dynamic activations.
    Fp8Dynamic,
    /// FP8 per-tensor weights, FP8 per-tensor static (calibrated) activations.
    Fp8Static,
    /// FP8 128×128 block weights, FP8 per-token groups of 128 dynamic activations.
    Fp8Block,
    /// int8 per-channel weights, int8 per-token dynamic activations.
    W8A8,
    /// int8 per-channel weights, activations left in the model's dtype.
    W8A16,
}

/// FP8_BLOCK's block side and activation group.
pub const FP8_BLOCK: usize = 128;

impl Scheme {
    pub fn weights(self) -> QuantArgs {
        let mem = Some("memoryless_minmax");
        match self {
            Scheme::Fp8Dynamic => QuantArgs::new(QuantType::Float, Strategy::Channel, false, mem),
            Scheme::Fp8Static => QuantArgs::new(QuantType::Float, Strategy::Tensor, false, mem),
            Scheme::Fp8Block => QuantArgs {
                block_structure: Some(vec![FP8_BLOCK, FP8_BLOCK]),
                ..QuantArgs::new(QuantType::Float, Strategy::Block, false, mem)
            },
            Scheme::W8A8 | Scheme::W8A16 => {
                QuantArgs::new(QuantType::Int, Strategy::Channel, false, mem)
            }
        }
    }

    pub fn input_activations(self) -> Option<QuantArgs> {
        match self {
            Scheme::Fp8Dynamic => Some(QuantArgs::new(
                QuantType::Float,
                Strategy::Token,
                true,
                None,
            )),
            Scheme::Fp8Static => Some(QuantArgs::new(
                QuantType::Float,
                Strategy::Tensor,
                false,
                Some("static_minmax"),
            )),
            Scheme::Fp8Block => Some(QuantArgs {
                group_size: Some(FP8_BLOCK as i64),
                ..QuantArgs::new(QuantType::Float, Strategy::Group, true, None)
            }),
            Scheme::W8A8 => Some(QuantArgs::new(QuantType::Int, Strategy::Token, true, None)),
            Scheme::W8A16 => None,
        }
    }

    pub fn format(self) -> Format {
        match self {
            Scheme::Fp8Dynamic | Scheme::Fp8Static | Scheme::Fp8Block => Format::FloatQuantized,
            Scheme::W8A8 => Format::IntQuantized,
            Scheme::W8A16 => Format::PackQuantized,
        }
    }

    /// config.json's `quantization_config` for every Linear but those in `ignore`, as
    /// llm-compressor 0.14 writes it.
    pub fn quantization_config(self, ignore: &[&str]) -> Value {
        let format = self.format().name();
        json!({
            "config_groups": {
                "group_0": {
                    "format": format,
                    "input_activations": self.input_activations(),
                    "output_activations": null,
                    "targets": ["Linear"],
                    "weights": self.weights(),
                }
            },
            "format": format,
            "global_compression_ratio": null,
            "ignore": ignore,
            "kv_cache_scheme": null,
            "quant_method": "compressed-tensors",
            "quantization_status": "compressed",
            "sparsity_config": {},
            "transform_config": {},
            "version": VERSION,
        })
    }
}

/// A module's compression format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Dense,
    IntQuantized,
    FloatQuantized,
    NaiveQuantized,
    PackQuantized,
    /// Any other format name (sparse, marlin-24, nvfp4-pack-quantized, ...).
    Other,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Dense => "dense",
            Format::IntQuantized => "int-quantized",
            Format::FloatQuantized => "float-quantized",
            Format::NaiveQuantized => "naive-quantized",
            Format::PackQuantized => "pack-quantized",
            Format::Other => "other",
        }
    }

    pub fn from_name(s: &str) -> Format {
        match s {
            "dense" => Format::Dense,
            "int-quantized" => Format::IntQuantized,
            "float-quantized" => Format::FloatQuantized,
            "naive-quantized" => Format::NaiveQuantized,
            "pack-quantized" => Format::PackQuantized,
            _ => Format::Other,
        }
    }
}

/// One config group: which modules it covers and how they are quantized.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub name: String,
    pub targets: Vec<Target>,
    pub weights: Option<QuantArgs>,
    pub input_activations: Option<QuantArgs>,
    /// The group's format, else the config's.
    pub format: Format,
    pub format_name: String,
}

/// A `targets` / `ignore` entry: a class name ("Linear"), a module name, or "re:<regex>" matched
/// at the start of the module name (Python's re.match).
#[derive(Clone, Debug)]
pub struct Target {
    pub text: String,
    regex: Option<regex::Regex>,
}

impl PartialEq for Target {
    fn eq(&self, o: &Target) -> bool {
        self.text == o.text
    }
}

impl Target {
    fn parse(s: &str, path: &Path, field: &str) -> Result<Target, ConfigError> {
        let regex =
            match s.strip_prefix("re:") {
                None => None,
                Some(re) => Some(regex::Regex::new(&format!("^(?:{re})")).map_err(|e| {
                    ConfigError::Field {
                        path: path.to_owned(),
                        field: field.to_owned(),
                        msg: format!("{s:?} is not a valid regular expression: {e}"),
                    }
                })?),
            };
        Ok(Target {
            text: s.to_owned(),
            regex,
        })
    }

    /// Whether this target names module `name` (exactly or by regex).
    pub fn matches_name(&self, name: &str) -> bool {
        match &self.regex {
            Some(r) => r.is_match(name),
            None => self.text == name,
        }
    }

    /// Whether this target is the module's class name.
    pub fn matches_class(&self, class: &str) -> bool {
        self.regex.is_none() && self.text == class
    }

    pub fn matches(&self, name: &str, class: &str) -> bool {
        self.matches_name(name) || self.matches_class(class)
    }
}

/// A parsed `quantization_config` of quant_method "compressed-tensors".
#[derive(Clone, Debug)]
pub struct CompressedTensorsConfig {
    pub path: PathBuf,
    pub format: String,
    pub quantization_status: String,
    pub groups: Vec<Group>,
    pub ignore: Vec<Target>,
    pub has_kv_cache_scheme: bool,
    /// Every target with the group it selects (a target listed by several groups belongs to the
    /// last), in compressed-tensors' priority order: names before regexes, each sorted.
    by_target: Vec<(Target, usize)>,
}

impl CompressedTensorsConfig {
    /// Parses `q` (config.json's quantization_config) from the file `path`.
    pub fn from_json(path: &Path, q: &Value) -> Result<CompressedTensorsConfig, ConfigError> {
        let field = |f: &str, msg: String| ConfigError::Field {
            path: path.to_owned(),
            field: format!("quantization_config.{f}"),
            msg,
        };
        let str_field = |f: &str| -> Result<Option<String>, ConfigError> {
            match q.get(f) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => Err(field(f, format!("is {v}, expected a string"))),
            }
        };
        let format = str_field("format")?.unwrap_or_else(|| "dense".into());
        let quantization_status = str_field("quantization_status")?.unwrap_or_default();
        let targets = |v: Option<&Value>, f: &str| -> Result<Vec<Target>, ConfigError> {
            match v {
                None | Some(Value::Null) => Ok(vec![]),
                Some(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let f = format!("{f}[{i}]");
                        let s = t
                            .as_str()
                            .ok_or_else(|| field(&f, format!("is {t}, expected a string")))?;
                        Target::parse(s, path, &format!("quantization_config.{f}"))
                    })
                    .collect(),
                Some(Value::String(s)) => Ok(vec![Target::parse(s, path, f)?]),
                Some(v) => Err(field(f, format!("is {v}, expected a list of names"))),
            }
        };
        let ignore = targets(q.get("ignore"), "ignore")?;
        let groups_v = q
            .get("config_groups")
            .and_then(Value::as_object)
            .ok_or_else(|| field("config_groups", "is missing or not an object".into()))?;
        let mut groups = Vec::new();
        for (name, g) in groups_v {
            let f = |x: &str| format!("config_groups.{name}.{x}");
            let args = |x: &str| -> Result<Option<QuantArgs>, ConfigError> {
                match g.get(x) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => serde_json::from_value(v.clone())
                        .map(Some)
                        .map_err(|e| field(&f(x), e.to_string())),
                }
            };
            let format_name = match g.get("format") {
                Some(Value::String(s)) => s.clone(),
                _ => format.clone(),
            };
            groups.push(Group {
                name: name.clone(),
                targets: targets(g.get("targets"), &f("targets"))?,
                weights: args("weights")?,
                input_activations: args("input_activations")?,
                format: Format::from_name(&format_name),
                format_name,
            });
        }
        let mut by_target: Vec<(Target, usize)> = Vec::new();
        for (i, g) in groups.iter().enumerate() {
            for t in &g.targets {
                by_target.retain(|(o, _)| o != t);
                by_target.push((t.clone(), i));
            }
        }
        by_target.sort_by(|(a, _), (b, _)| {
            (a.regex.is_some(), &a.text).cmp(&(b.regex.is_some(), &b.text))
        });
        Ok(CompressedTensorsConfig {
            by_target,
            path: path.to_owned(),
            format,
            quantization_status,
            groups,
            ignore,
            has_kv_cache_scheme: q.get("kv_cache_scheme").is_some_and(|v| !v.is_null()),
        })
    }

    /// The group that quantizes module `name` (class `class`), or None when it is ignored or no
    /// group targets it. As compressed-tensors resolves a module several targets match: the
    /// first matching name or regex, else the first matching class name.
    pub fn group_for(&self, name: &str, class: &str) -> Option<&Group> {
        if self.ignore.iter().any(|t| t.matches(name, class)) {
            return None;
        }
        let by_name = self.by_target.iter().find(|(t, _)| t.matches_name(name));
        let hit = by_name.or_else(|| self.by_target.iter().find(|(t, _)| t.matches_class(class)));
        hit.map(|(_, i)| &self.groups[*i])
    }
}

/// Bytes of the int32 words holding one row of `cols` int8 values in `pack-quantized`: 4 per word.
pub fn packed_int8_cols(cols: usize) -> usize {
    cols.div_ceil(4)
}

/// Packs int8 values along a row as compressed-tensors' `pack_to_int32(num_bits=8)`: each value
/// offset by 128 to unsigned, element k of a word at bits 8k, a partial last word padded with
/// zero bytes (the padding comes after the offset there too).
pub fn pack_int8_row(q: &[i8], out: &mut Vec<u8>) {
    for chunk in q.chunks(4) {
        let mut w = 0u32;
        for (k, &v) in chunk.iter().enumerate() {
            w |= ((v as i32 + 128) as u32) << (8 * k);
        }
        out.extend(w.to_le_bytes());
    }
}

/// The inverse of [`pack_int8_row`] for a row of `cols` values (`words` little-endian int32s).
pub fn unpack_int8_row(words: &[u8], cols: usize, out: &mut [i8]) {
    assert_eq!(words.len(), 4 * packed_int8_cols(cols));
    assert_eq!(out.len(), cols);
    for (k, o) in out.iter_mut().enumerate() {
        *o = (words[k] as i32 - 128) as i8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_dtype_rounding_and_eps() {
        assert_eq!(ScaleDtype::BF16.round(1.0 + 1.0 / 512.0), 1.0);
        assert_eq!(ScaleDtype::BF16.eps(), 0.0078125);
        assert_eq!(ScaleDtype::F16.eps(), 0.0009765625);
        assert_eq!(ScaleDtype::F16.scale_from_range(0.0, 448.0), 0.0009765625);
        assert!(ScaleDtype::F16.scale_from_range(1e9, 448.0).is_infinite());
        assert_eq!(ScaleDtype::BF16.encode(&[1.0]), vec![0x80, 0x3F]);
    }

    #[test]
    fn targets_and_ignore_resolve_like_compressed_tensors() {
        let q = json!({
            "format": "mixed-precision",
            "config_groups": {
                "a": {"targets": ["Linear", "model.layers.5.mlp.down_proj"], "weights": {"num_bits": 8, "type": "float", "strategy": "channel"}, "format": "float-quantized"},
                "b": {"targets": ["re:.*down_proj"], "weights": {"num_bits": 8, "group_size": -1}}
            },
            "ignore": ["lm_head", "re:model.layers.0.mlp"]
        });
        let c = CompressedTensorsConfig::from_json(Path::new("c.json"), &q).unwrap();
        let g = |n: &str| c.group_for(n, "Linear").map(|g| g.name.as_str());
        assert_eq!(g("model.layers.3.self_attn.q_proj"), Some("a"));
        // A regex beats a class name; an exact name beats a regex.
        assert_eq!(g("model.layers.3.mlp.down_proj"), Some("b"));
        assert_eq!(g("model.layers.5.mlp.down_proj"), Some("a"));
        assert_eq!(g("model.layers.0.mlp.up_proj"), None);
        assert_eq!(g("lm_head"), None);
        let b = c.groups.iter().find(|g| g.name == "b").unwrap();
        assert_eq!(b.format_name, "mixed-precision");
        assert_eq!(
            b.weights.as_ref().unwrap().effective_strategy(),
            Strategy::Channel
        );
        assert_eq!(b.weights.as_ref().unwrap().kind, QuantType::Int);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let bad = json!({"config_groups": {"g": {"targets": ["re:("], "weights": null}}});
        let e = CompressedTensorsConfig::from_json(Path::new("c.json"), &bad).unwrap_err();
        assert!(e.to_string().contains("config_groups.g.targets[0]"), "{e}");
        let bad = json!({"config_groups": {"g": {"targets": ["Linear"], "weights": {"strategy": "diagonal"}}}});
        let e = CompressedTensorsConfig::from_json(Path::new("c.json"), &bad).unwrap_err();
        assert!(e.to_string().contains("config_groups.g.weights"), "{e}");
        let e = CompressedTensorsConfig::from_json(Path::new("c.json"), &json!({})).unwrap_err();
        assert!(e.to_string().contains("config_groups"), "{e}");
    }

    #[test]
    fn int8_packing_round_trips() {
        let q: Vec<i8> = vec![-128, -1, 0, 1, 127, 5];
        let mut words = Vec::new();
        pack_int8_row(&q, &mut words);
        assert_eq!(words.len(), 8);
        // Word 0: 0x00, 0x7F, 0x80, 0x81 little-endian.
        assert_eq!(&words[..4], &[0x00, 0x7F, 0x80, 0x81]);
        assert_eq!(&words[6..], &[0, 0]);
        let mut back = vec![0i8; 6];
        unpack_int8_row(&words, 6, &mut back);
        assert_eq!(back, q);
    }
}
