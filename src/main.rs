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
    /// Prompt-processing and generation throughput, measured as llama-bench measures them.
    Bench(cmd::bench::Args),
    /// Activation-aware 4-bit quantization (AWQ) to an AutoAWQ GEMM folder (transformers, vLLM).
    Awq(cmd::awq::Args),
    /// Convert a GGUF model into a Hugging Face folder (bf16 safetensors + tokenizer + config).
    Convert(cmd::convert::Args),
    /// FP8 E4M3 weights (dynamic, static or block scales) in compressed-tensors format.
    Fp8(cmd::fp8::Args),
    /// int8 weights with SmoothQuant W8A8 or weight-only W8A16, in compressed-tensors format.
    Int8(cmd::int8::Args),
    /// Generate a continuation of a prompt.
    Generate(cmd::generate::Args),
    /// Quantize a Hugging Face folder or GGUF file to a llama.cpp GGUF type (byte-identical to llama-quantize).
    Gguf(cmd::gguf::Args),
    /// Collect an importance matrix (llama-imatrix's method and file formats).
    Imatrix(cmd::imatrix::Args),
    /// GPTQ (or round-to-nearest) int2/3/4/8 quantization to a GPTQ folder (transformers, vLLM).
    Gptq(cmd::gptq::Args),
    /// Show a model file's or folder's tensors, types, shapes, bits per weight and metadata.
    Inspect(cmd::inspect::Args),
    /// Perplexity on a text file (llama-perplexity's method).
    Ppl(cmd::ppl::Args),
    /// KL divergence, top-1 agreement and PPL ratio of a model against a base model.
    Kld(cmd::kld::Args),
    /// Log-likelihood scoring of evaluation tasks (ARC, HellaSwag, PIQA, WinoGrande, LAMBADA, MMLU, JSONL).
    Eval(cmd::eval::Args),
    /// Quality gate: PPL, KLD, top-1 and task accuracy of candidates against a base; exits 2 on failure.
    Gate(cmd::gate::Args),
}

fn main() {
    // Die quietly on a closed pipe (`quantize inspect X | head`), like other command-line tools,
    // instead of panicking on the failed write.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of a signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Calibration and batched forwards allocate and free activations of a few MB per product.
    // glibc would map each one fresh and unmap it on free (a page fault and a kernel zeroing
    // per 4 KB: a fifth of `quantize int8`'s time); kept in the heap, they are reused.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: plain allocator settings, made before any thread starts or allocates much.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
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
        Command::Bench(a) => cmd::bench::run(a),
        Command::Awq(a) => cmd::awq::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Fp8(a) => cmd::fp8::run(a),
        Command::Int8(a) => cmd::int8::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Gguf(a) => cmd::gguf::run(a),
        Command::Imatrix(a) => cmd::imatrix::run(a),
        Command::Gptq(a) => cmd::gptq::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Ppl(a) => cmd::ppl::run(a),
        Command::Kld(a) => cmd::kld::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Gate(a) => cmd::gate::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
