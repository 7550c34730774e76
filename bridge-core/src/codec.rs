//! Small codecs that need no tokenizer file.
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
