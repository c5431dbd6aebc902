//! One module per subcommand: argument parsing, progress and reporting only; the work happens in
//! the library crates.

pub mod convert;
pub mod generate;
pub mod inspect;

use std::path::Path;

use anyhow::Context;

/// Loads a model for a command (the loader's errors name the file).
pub fn load_model(path: &Path) -> anyhow::Result<runtime::Model> {
    Ok(runtime::load(path)?)
}

/// The model's tokenizer, or an error saying the model has none.
pub fn tokenizer(model: &runtime::Model) -> anyhow::Result<&runtime::Tokenizer> {
    model
        .tokenizer()
        .with_context(|| format!("{} has no tokenizer", model.source))
}
