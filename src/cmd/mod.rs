//! One module per subcommand: argument parsing, progress and reporting only; the work happens in
//! the library crates.

pub mod awq;
pub mod bench;
pub mod calib_args;
pub mod compressed;
pub mod convert;
pub mod eval;
pub mod fp8;
pub mod gate;
pub mod generate;
pub mod gguf;
pub mod gptq;
mod group_quant_out;
pub mod hub;
pub mod imatrix;
pub mod inspect;
pub mod int8;
pub mod kld;
pub mod ppl;

use std::path::Path;

use anyhow::Context;

/// Loads a model for a command (the loader's errors name the file); a Hub repository id resolves
/// to its snapshot in the local Hugging Face cache.
pub fn load_model(path: &Path) -> anyhow::Result<runtime::Model> {
    Ok(runtime::load(&hub::resolve_model(path)?)?)
}

/// The model's tokenizer, or an error saying the model has none.
pub fn tokenizer(model: &runtime::Model) -> anyhow::Result<&runtime::Tokenizer> {
    model
        .tokenizer()
        .with_context(|| format!("{} has no tokenizer", model.source))
}

/// A short name for a model path (its file or folder name), for titles.
pub fn model_name(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// Parses a byte size such as "5G", "500M", "64K" or "1234" (powers of 1000, as the Hub does).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&s[..i], 1_000),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&s[..i], 1_000_000),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&s[..i], 1_000_000_000),
        _ => (s, 1),
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| *n > 0.0)
        .map(|n| (n * mult as f64) as usize)
        .ok_or_else(|| format!("{s:?} is not a size like 5G, 500M or 1234"))
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: usize, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:30}} {{pos}}/{{len}} {unit} [{{elapsed}}, ETA {{eta}}]"
        ))
        .expect("the template is valid"),
    );
    bar
}
