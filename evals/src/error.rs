use std::path::PathBuf;

/// What can go wrong in an evaluation; every variant names the input at fault.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{model} has no tokenizer")]
    NoTokenizer { model: String },
    #[error(transparent)]
    Tokenizer(#[from] runtime::tokenizer::TokenizerError),
    #[error(
        "{what} tokenizes to {tokens} tokens; a context of {ctx} needs at least {needed} (two contexts)"
    )]
    TooShort {
        what: String,
        tokens: usize,
        ctx: usize,
        needed: usize,
    },
    #[error("invalid option: {0}")]
    Option(String),
    #[error("the base and the candidate have different tokenizers: {0}")]
    TokenizerMismatch(String),
    #[error("{path}: {msg}")]
    BaseLogits { path: PathBuf, msg: String },
    #[error("unknown task {name:?}; known tasks: {known}, or a path to a JSONL file")]
    UnknownTask { name: String, known: String },
    #[error("{path}: {msg}")]
    Data { path: PathBuf, msg: String },
    #[error("{path}: line {line}: {msg}")]
    DataLine {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{path}: {msg}")]
    Policy { path: PathBuf, msg: String },
}

impl EvalError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EvalError {
        let path = path.into();
        move |source| EvalError::Io { path, source }
    }
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;
