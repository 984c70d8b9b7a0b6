//! The closed vocabulary and its word-level tokenizer (saved as `tokenizer/tokenizer.json`).

use crate::data::{Color, Shape, Size};
use pixelfarm_diffusion::shapes_net::{MAX_TOKENS, VOCAB_CAPACITY};
use std::collections::HashMap;
use tokenizers::Tokenizer;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::whitespace::Whitespace;

/// Start-of-text token (what the engine puts first).
pub const BOS: &str = "<|startoftext|>";
/// End-of-text token (also the padding, as for SD 1.x).
pub const EOS: &str = "<|endoftext|>";
/// Any word outside the vocabulary.
pub const UNK: &str = "<unk>";

/// Every token, in id order. The new colours' words ([`Color::NEW`]) come last, so the base
/// model's ids are the ones it was trained with; their embedding rows are the base model's
/// untrained spare ones until a LoRA teaches them.
pub fn words() -> Vec<&'static str> {
    let mut w = vec![BOS, EOS, UNK, "a", "on", "background"];
    w.extend(Size::ALL.iter().map(|s| s.word()));
    w.extend(Color::ALL.iter().map(|c| c.word()));
    w.extend(Shape::ALL.iter().map(|s| s.word()));
    w.extend(Color::NEW.iter().map(|c| c.word()));
    assert!(w.len() <= VOCAB_CAPACITY);
    w
}

/// The word-level tokenizer over [`words`] (lowercase, whitespace split).
///
/// # Panics
/// Never for the fixed vocabulary.
pub fn tokenizer() -> Tokenizer {
    let vocab: HashMap<String, u32> = words()
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), i as u32))
        .collect();
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token(UNK.into())
        .build()
        .expect("a valid word-level vocabulary");
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(Lowercase))
        .expect("a normalizer without added tokens");
    tok.with_pre_tokenizer(Some(Whitespace {}));
    tok
}

/// The ids the engine feeds the text encoder for `text`: start, words, end, end-padding.
///
/// # Panics
/// Never for the fixed vocabulary.
pub fn token_ids(tok: &Tokenizer, text: &str) -> Vec<u32> {
    let enc = tok.encode(text, false).expect("word-level encoding");
    let bos = tok.token_to_id(BOS).expect("bos");
    let eos = tok.token_to_id(EOS).expect("eos");
    let mut ids = vec![bos];
    ids.extend(enc.get_ids().iter().take(MAX_TOKENS - 2));
    ids.push(eos);
    ids.resize(MAX_TOKENS, eos);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_tokenize_without_unknown_words_and_round_trip_through_json() {
        let tok = tokenizer();
        let ids = token_ids(&tok, "a small red circle on a blue background");
        assert_eq!(ids.len(), MAX_TOKENS);
        assert!(!ids.contains(&2), "{ids:?}");
        assert_eq!(ids[..10], [0, 3, 6, 8, 14, 4, 3, 10, 5, 1]);
        let json = tok.to_string(false).unwrap();
        let back = Tokenizer::from_bytes(json.as_bytes()).unwrap();
        assert_eq!(
            token_ids(&back, "A Large YELLOW square on a black background")[..10],
            token_ids(&tok, "a large yellow square on a black background")[..10]
        );
        assert_eq!(token_ids(&tok, "a pink circle")[2], 2);
        // New colours' words come after the base vocabulary.
        assert_eq!(token_ids(&tok, "a small purple circle")[3], 17);
    }
}
