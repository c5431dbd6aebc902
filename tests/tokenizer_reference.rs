//! The tokenizer built from SmolLM2's GGUF metadata against transformers' own GGUF tokenizer
//! conversion: tests/fixtures/smollm2_tokens.json was written by tests/oracle/hf_gguf_tokens.py
//! (wiki and Moby-Dick paragraphs, code, digits, whitespace runs, Unicode, special tokens).

mod common;

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[test]
fn gguf_tokenizer_matches_transformers() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_tokens.json");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let g = quant::gguf::GgufFile::open(common::smollm_gguf()).unwrap();
    let tok = runtime::Tokenizer::from_gguf(&g).unwrap();
    let mut mismatches = Vec::new();
    for c in &cases {
        let got = tok.encode(&c.text, false).unwrap();
        if got != c.ids {
            mismatches.push(format!(
                "{:?}: got {:?}, want {:?}",
                c.text.chars().take(60).collect::<String>(),
                &got[..got.len().min(12)],
                &c.ids[..c.ids.len().min(12)]
            ));
        }
        // Byte-level BPE decodes back to the exact text.
        assert_eq!(tok.decode(&got), c.text);
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} texts differ:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

#[test]
fn chat_template_from_gguf_renders() {
    let g = quant::gguf::GgufFile::open(common::smollm_gguf()).unwrap();
    let tok = runtime::Tokenizer::from_gguf(&g).unwrap();
    let msgs = [runtime::tokenizer::ChatMessage {
        role: "user".into(),
        content: "Hi".into(),
    }];
    let text = tok.apply_chat_template(&msgs, true).unwrap();
    assert!(text.starts_with("<|im_start|>system\n"), "{text}");
    assert!(
        text.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        "{text}"
    );
}

/// A SentencePiece ("llama") vocabulary: tests/fixtures/spm_tiny.gguf holds a BPE model trained by
/// the sentencepiece library, spm_tokens.json that library's own encodings
/// (tests/oracle/make_spm_fixture.py writes both).
#[test]
fn sentencepiece_vocabulary_matches_sentencepiece() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("spm_tokens.json")).unwrap())
            .unwrap();
    let g = quant::gguf::GgufFile::open(dir.join("spm_tiny.gguf")).unwrap();
    let tok = runtime::Tokenizer::from_gguf(&g).unwrap();
    assert!(
        tok.adds_bos(),
        "SentencePiece vocabularies add BOS by default"
    );
    let bos = tok.bos().unwrap();
    for c in &cases {
        assert_eq!(tok.encode(&c.text, false).unwrap(), c.ids, "{:?}", c.text);
        let with_bos = tok.encode(&c.text, true).unwrap();
        assert_eq!(with_bos[0], bos);
        assert_eq!(tok.decode(&c.ids), c.text, "decode of {:?}", c.text);
    }
}
