//! Whether two models tokenize alike: comparing a candidate with a base token by token only means
//! something when both read the same token ids.

use runtime::Tokenizer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What identifies a tokenizer for evaluation purposes: its vocabulary, in id order, and how
/// sequences start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerFingerprint {
    pub vocab_size: usize,
    pub bos: Option<u32>,
    pub adds_bos: bool,
    /// sha256 of the token strings in id order (each length-prefixed).
    pub vocab_sha256: String,
}

impl TokenizerFingerprint {
    pub fn of(tok: &Tokenizer) -> TokenizerFingerprint {
        let mut h = Sha256::new();
        for id in 0..tok.vocab_size() as u32 {
            let s = tok.id_to_token(id).unwrap_or_default();
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        TokenizerFingerprint {
            vocab_size: tok.vocab_size(),
            bos: tok.bos(),
            adds_bos: tok.adds_bos(),
            vocab_sha256: format!("{:x}", h.finalize()),
        }
    }

    /// What differs between `self` (the base) and `other` (the candidate), if anything.
    pub fn difference(&self, other: &TokenizerFingerprint) -> Option<String> {
        let mut d = Vec::new();
        if self.vocab_size != other.vocab_size {
            d.push(format!(
                "vocabulary size {} vs {}",
                self.vocab_size, other.vocab_size
            ));
        } else if self.vocab_sha256 != other.vocab_sha256 {
            d.push(format!(
                "same size, different tokens (vocabulary sha256 {} vs {})",
                &self.vocab_sha256[..12],
                &other.vocab_sha256[..12.min(other.vocab_sha256.len())]
            ));
        }
        if self.bos != other.bos {
            d.push(format!("BOS id {:?} vs {:?}", self.bos, other.bos));
        }
        if self.adds_bos != other.adds_bos {
            d.push(format!("adds BOS: {} vs {}", self.adds_bos, other.adds_bos));
        }
        (!d.is_empty()).then(|| d.join("; "))
    }
}

/// The first token id whose string differs between two tokenizers, for a precise message.
pub fn first_vocab_difference(base: &Tokenizer, cand: &Tokenizer) -> Option<String> {
    let n = base.vocab_size().min(cand.vocab_size()) as u32;
    (0..n).find_map(|id| {
        let (a, b) = (base.id_to_token(id), cand.id_to_token(id));
        let show = |t: Option<String>| t.map_or("(no token)".into(), |t| format!("{t:?}"));
        (a != b).then(|| {
            format!(
                "token {id} is {} in the base, {} in the candidate",
                show(a),
                show(b)
            )
        })
    })
}

/// Where two tokenizations of the same text first differ.
pub fn first_token_difference(base: &[u32], cand: &[u32]) -> Option<String> {
    let i = base.iter().zip(cand).position(|(a, b)| a != b);
    match i {
        Some(i) => Some(format!(
            "the text tokenizes differently from token {i} on (base id {}, candidate id {})",
            base[i], cand[i]
        )),
        None if cand.len() < base.len() => Some(format!(
            "the text tokenizes to {} tokens for the candidate, {} for the base",
            cand.len(),
            base.len()
        )),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_named() {
        let a = TokenizerFingerprint {
            vocab_size: 10,
            bos: Some(1),
            adds_bos: false,
            vocab_sha256: "a".repeat(64),
        };
        assert_eq!(a.difference(&a.clone()), None);
        let mut b = a.clone();
        b.vocab_sha256 = "b".repeat(64);
        assert!(a.difference(&b).unwrap().contains("different tokens"));
        b.vocab_size = 12;
        b.adds_bos = true;
        let d = a.difference(&b).unwrap();
        assert!(d.contains("vocabulary size 10 vs 12") && d.contains("adds BOS: false vs true"));
        assert!(first_token_difference(&[1, 2, 3], &[1, 2, 4])
            .unwrap()
            .contains("from token 2"));
        assert!(first_token_difference(&[1, 2, 3], &[1, 2, 3, 5]).is_none());
        assert!(first_token_difference(&[1, 2, 3], &[1, 2]).is_some());
    }
}
