//! How a benchmark question becomes the prompt a model continues.

use bridge_core::{BridgeError, Result, TextCodec};
use serde::{Deserialize, Serialize};

/// The placeholder a [`PromptTemplate::Plain`] template must contain.
pub const QUESTION_PLACEHOLDER: &str = "{question}";

/// A prompt template (serde: `{"kind": "chat", "instruction": "…"}` or
/// `{"kind": "plain", "template": "Q: {question}\nA:"}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PromptTemplate {
    /// The model's chat template ([`TextCodec::render_prompt`]) around the question, followed by
    /// `instruction` on a new line when one is given.
    Chat {
        /// Appended to the question, e.g. "Put your final answer after ####.".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instruction: Option<String>,
    },
    /// `template` with every `{question}` replaced by the question; no chat template.
    Plain {
        /// The text around `{question}`.
        template: String,
    },
}

impl Default for PromptTemplate {
    fn default() -> Self {
        Self::Chat { instruction: None }
    }
}

impl PromptTemplate {
    /// The chat template with `instruction` after the question.
    pub fn chat_with(instruction: impl Into<String>) -> Self {
        Self::Chat { instruction: Some(instruction.into()) }
    }

    /// Checks that a plain template contains `{question}`.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Plain { template } if !template.contains(QUESTION_PLACEHOLDER) => Err(BridgeError::config(
                "prompt.template",
                format!("must contain {QUESTION_PLACEHOLDER}, got {template:?}"),
            )),
            _ => Ok(()),
        }
    }

    /// The prompt text for `question`.
    pub fn render(&self, codec: &dyn TextCodec, question: &str) -> Result<String> {
        self.validate()?;
        match self {
            Self::Chat { instruction: None } => codec.render_prompt(question),
            Self::Chat { instruction: Some(i) } if i.trim().is_empty() => codec.render_prompt(question),
            Self::Chat { instruction: Some(i) } => codec.render_prompt(&format!("{question}\n{i}")),
            Self::Plain { template } => Ok(template.replace(QUESTION_PLACEHOLDER, question)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::testing::CharCodec;

    #[test]
    fn templates_render_and_reject_bad_configs() {
        let codec = CharCodec::new("ab");
        let plain = PromptTemplate::Plain { template: "Q: {question}\nA:".into() };
        assert_eq!(plain.render(&codec, "1+1").unwrap(), "Q: 1+1\nA:");
        assert_eq!(PromptTemplate::chat_with("Be brief.").render(&codec, "1+1").unwrap(), "1+1\nBe brief.");
        assert_eq!(PromptTemplate::default().render(&codec, "x").unwrap(), "x");
        let bad = PromptTemplate::Plain { template: "no placeholder".into() };
        assert!(bad.render(&codec, "q").unwrap_err().to_string().contains("prompt.template"));

        let t: PromptTemplate = serde_json::from_str(r#"{"kind":"plain","template":"{question}"}"#).unwrap();
        assert_eq!(t, PromptTemplate::Plain { template: "{question}".into() });
        let t: PromptTemplate = serde_json::from_str(r#"{"kind":"chat"}"#).unwrap();
        assert_eq!(t, PromptTemplate::default());
        let err = serde_json::from_str::<PromptTemplate>(r#"{"kind":"chat","instrction":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("instrction"), "{err}");
        let json = serde_json::to_string(&PromptTemplate::chat_with("x")).unwrap();
        assert_eq!(serde_json::from_str::<PromptTemplate>(&json).unwrap(), PromptTemplate::chat_with("x"));
    }
}
