use std::io::Write;
use std::path::PathBuf;

use runtime::generate::{generate, Sampler, SamplingParams};

use super::{load_model, tokenizer};

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file or Hugging Face folder.
    #[arg(long, short = 'm')]
    model: PathBuf,
    #[arg(long, short = 'p')]
    prompt: String,
    #[arg(long, short = 'n', default_value_t = 64)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    chat: bool,
    /// Print timings (tokens/s) to stderr.
    #[arg(long)]
    stats: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let model = load_model(&a.model)?;
    let tok = tokenizer(&model)?;
    let text = if a.chat {
        let msg = runtime::tokenizer::ChatMessage {
            role: "user".into(),
            content: a.prompt.clone(),
        };
        tok.apply_chat_template(&[msg], true)?
    } else {
        a.prompt.clone()
    };
    let prompt = tok.encode(&text, true)?;
    anyhow::ensure!(!prompt.is_empty(), "the prompt tokenizes to nothing");
    let mut sampler = Sampler::new(SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        seed: a.seed,
    });
    let mut stdout = std::io::stdout().lock();
    if !a.chat {
        write!(stdout, "{}", a.prompt)?;
    }
    // Decode the running sequence so multi-byte characters split across tokens print whole.
    let mut generated: Vec<u32> = Vec::new();
    let mut printed = 0usize;
    let (_, stats) = generate(
        &model,
        &prompt,
        a.max_tokens,
        &mut sampler,
        tok.eos(),
        |t| {
            generated.push(t);
            let text = tok.decode(&generated);
            if !text.ends_with('\u{FFFD}') && text.len() > printed {
                let _ = write!(stdout, "{}", &text[printed..]);
                let _ = stdout.flush();
                printed = text.len();
            }
        },
    );
    writeln!(stdout)?;
    if let Some(report) = model.clipping_report() {
        eprint!("warning: {report}");
    }
    if a.stats {
        eprintln!(
            "prompt: {} tokens in {:.3} s ({:.1} tok/s); generation: {} tokens in {:.3} s ({:.1} tok/s)",
            stats.prompt_tokens,
            stats.prompt_seconds,
            stats.prompt_tokens as f64 / stats.prompt_seconds.max(1e-9),
            stats.generated_tokens,
            stats.generation_seconds,
            stats.generated_tokens as f64 / stats.generation_seconds.max(1e-9),
        );
    }
    Ok(())
}
