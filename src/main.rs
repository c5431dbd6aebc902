//! quantize: turn a language model into deployable quantized artifacts and prove they are good.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "quantize", version, about, long_about = None)]
struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, short = 't', global = true, env = "QUANTIZE_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Activation-aware 4-bit quantization (AWQ) to an AutoAWQ GEMM folder (transformers, vLLM).
    Awq(cmd::awq::Args),
    /// Convert a GGUF model into a Hugging Face folder (bf16 safetensors + tokenizer + config).
    Convert(cmd::convert::Args),
    /// Generate a continuation of a prompt.
    Generate(cmd::generate::Args),
    /// GPTQ (or round-to-nearest) int2/3/4/8 quantization to a GPTQ folder (transformers, vLLM).
    Gptq(cmd::gptq::Args),
    /// Show a model file's or folder's tensors, types, shapes, bits per weight and metadata.
    Inspect(cmd::inspect::Args),
}

fn main() {
    // Die quietly on a closed pipe (`quantize inspect X | head`), like other command-line tools,
    // instead of panicking on the failed write.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of a signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .expect("the thread pool is configured once, before any use");
    }
    let result = match cli.command {
        Command::Awq(a) => cmd::awq::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Gptq(a) => cmd::gptq::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
