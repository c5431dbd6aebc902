//! Token sampling and the generation loop.

use rand::{Rng, SeedableRng};

use crate::model::{KvCache, Model};

#[derive(Clone, Debug)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches top_p (1 = off).
    pub top_p: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        }
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: rand::rngs::StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = rand::rngs::StdRng::seed_from_u64(params.seed);
        Sampler { params, rng }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.params.temperature;
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u32, l * inv_t))
            .collect();
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if self.params.top_k > 0 {
            cand.truncate(self.params.top_k);
        }
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand.iter().map(|(_, l)| (l - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if self.params.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    acc += p;
                    acc >= self.params.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, p) in probs.iter().enumerate() {
            r -= p;
            if r <= 0.0 {
                return cand[i].0;
            }
        }
        cand[probs.len() - 1].0
    }
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Timings of one generation.
#[derive(Clone, Debug, Default)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub prompt_seconds: f64,
    pub generated_tokens: usize,
    pub generation_seconds: f64,
}

/// Generates up to `max_tokens` after `prompt`, stopping at an end-of-sequence token; `on_token`
/// sees each new token as it is sampled.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    max_tokens: usize,
    sampler: &mut Sampler,
    stop: &[u32],
    mut on_token: impl FnMut(u32),
) -> (Vec<u32>, GenerationStats) {
    model.prepare();
    let mut cache: KvCache = model.new_cache();
    let mut stats = GenerationStats {
        prompt_tokens: prompt.len(),
        ..Default::default()
    };
    let mut out = Vec::new();
    if prompt.is_empty() || max_tokens == 0 {
        return (out, stats);
    }
    let t0 = std::time::Instant::now();
    let mut logits = model.forward(prompt, &mut cache, prompt.len() - 1);
    stats.prompt_seconds = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    for _ in 0..max_tokens {
        let tok = sampler.sample(&logits);
        out.push(tok);
        on_token(tok);
        if stop.contains(&tok) || out.len() == max_tokens {
            break;
        }
        logits = model.forward(&[tok], &mut cache, 0);
    }
    stats.generated_tokens = out.len();
    stats.generation_seconds = t1.elapsed().as_secs_f64();
    (out, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_maximum_and_sampling_is_seeded() {
        let logits = [0.1f32, 2.0, -1.0, 1.9];
        assert_eq!(Sampler::new(SamplingParams::default()).sample(&logits), 1);
        let p = SamplingParams {
            temperature: 1.0,
            seed: 42,
            ..Default::default()
        };
        let a: Vec<u32> = (0..20)
            .map({
                let mut s = Sampler::new(p.clone());
                move |_| s.sample(&logits)
            })
            .collect();
        let b: Vec<u32> = (0..20)
            .map({
                let mut s = Sampler::new(p.clone());
                move |_| s.sample(&logits)
            })
            .collect();
        assert_eq!(a, b);
        let k1 = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        };
        assert!((0..10).all({
            let mut s = Sampler::new(k1);
            move |_| s.sample(&logits) == 1
        }));
    }
}
