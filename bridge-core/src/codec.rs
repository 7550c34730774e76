//! Small codecs that need no tokenizer file.
//!
//! [`IdsOnlyCodec`] stands in for a missing tokenizer when a model is driven by token ids alone
//! (the `score` and `generate` examples with `--ids`).
//!
//! [`CharCodec`] maps each character of a fixed alphabet to one token (id 0 is `<eos>`, also the
//! padding). The embedded quickstart task and the test doubles use it; real models use the HF
//! tokenizer codec of `bridge-models`.

use crate::error::{BridgeError, Result};
use crate::policy::TextCodec;

/// A character-level codec: token 0 is `<eos>` (also the pad), tokens `1..=n` the alphabet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharCodec {
    alphabet: Vec<char>,
    eos: [u32; 1],
}

impl CharCodec {
    /// A codec over the distinct characters of `alphabet`, in order.
    pub fn new(alphabet: &str) -> Self {
        let mut chars: Vec<char> = Vec::new();
        for c in alphabet.chars() {
            if !chars.contains(&c) {
                chars.push(c);
            }
        }
        Self { alphabet: chars, eos: [0] }
    }
}

impl TextCodec for CharCodec {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .map(|c| {
                self.alphabet
                    .iter()
                    .position(|&a| a == c)
                    .map(|i| i as u32 + 1)
                    .ok_or_else(|| BridgeError::Tokenizer(format!("character {c:?} is not in the alphabet")))
            })
            .collect()
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut s = String::new();
        for &id in ids {
            match id {
                0 => {}
                i => s.push(
                    *self
                        .alphabet
                        .get(i as usize - 1)
                        .ok_or_else(|| BridgeError::Tokenizer(format!("token id {id} is outside the vocabulary")))?,
                ),
            }
        }
        Ok(s)
    }

    fn vocab_size(&self) -> usize {
        self.alphabet.len() + 1
    }

    fn eos_token_ids(&self) -> &[u32] {
        &self.eos
    }

    fn pad_token_id(&self) -> u32 {
        0
    }
}

impl CharCodec {
    /// The alphabet, in id order (id `i + 1` is `alphabet()[i]`).
    pub fn alphabet(&self) -> &[char] {
        &self.alphabet
    }
}

/// A codec for models driven by token ids only: encoding fails (there is no tokenizer), ids
/// decode to empty text, there is no EOS of its own (a model config's EOS ids still stop
/// generation) and sampling covers `vocab_size` ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdsOnlyCodec {
    /// The number of ids the model may produce.
    pub vocab_size: usize,
}

impl TextCodec for IdsOnlyCodec {
    fn encode(&self, _text: &str) -> Result<Vec<u32>> {
        Err(BridgeError::Tokenizer("no tokenizer loaded: pass token ids".into()))
    }

    fn decode(&self, _ids: &[u32]) -> Result<String> {
        Ok(String::new())
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn eos_token_ids(&self) -> &[u32] {
        &[]
    }

    fn pad_token_id(&self) -> u32 {
        0
    }
}

#[cfg(test)]
mod ids_only_tests {
    use super::*;

    #[test]
    fn ids_only_codec_refuses_text_and_decodes_to_nothing() {
        let c = IdsOnlyCodec { vocab_size: 7 };
        assert!(c.encode("hi").is_err());
        assert_eq!(c.decode(&[1, 2]).unwrap(), "");
        assert_eq!((c.vocab_size(), c.eos_token_ids().len()), (7, 0));
    }
}
