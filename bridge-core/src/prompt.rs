//! How a question (or a conversation) becomes the prompt text a model continues: one type for
//! training data (`bridge-sft`: SFT and RL prompts) and evaluation (`bridge-eval`), so that a run
//! trains on exactly the prompts it is evaluated on.

use crate::error::{BridgeError, Result};
use crate::policy::{ChatMessage, TextCodec};
use serde::{Deserialize, Serialize};

/// The placeholder a [`PromptTemplate::Plain`] template must contain.
pub const QUESTION_PLACEHOLDER: &str = "{question}";

/// A prompt template. In a config: `{kind = "chat"}`, optionally with `system_prompt` and/or
/// `instruction`, or `{kind = "plain", template = "Q: {question}\nA: "}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PromptTemplate {
    /// The codec's chat template with the generation prompt appended. A single question becomes
    /// one user message, `"{question}\n{instruction}"` when an instruction is given, rendered by
    /// [`TextCodec::render_prompt`] — or, with a `system_prompt`, by [`TextCodec::render_chat`]
    /// after that system message. A conversation gets `system_prompt` prepended unless it already
    /// starts with a system message.
    Chat {
        /// Optional system message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system_prompt: Option<String>,
        /// Optional instruction after the question (e.g. "Put your final answer after ####.");
        /// a blank one is none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instruction: Option<String>,
    },
    /// Plain text: `template` with every `{question}` replaced by the question (no chat
    /// template). For a conversation, the question is the contents of the prompt messages joined
    /// by blank lines.
    Plain {
        /// The text around `{question}`.
        template: String,
    },
}

impl Default for PromptTemplate {
    fn default() -> Self {
        Self::Chat { system_prompt: None, instruction: None }
    }
}

impl PromptTemplate {
    /// A plain template (e.g. `"Question: {question}\nAnswer: "`).
    pub fn plain(template: &str) -> Self {
        Self::Plain { template: template.to_owned() }
    }

    /// The chat template with `instruction` after the question.
    pub fn chat_with(instruction: impl Into<String>) -> Self {
        Self::Chat { system_prompt: None, instruction: Some(instruction.into()) }
    }

    /// Checks that a plain template contains `{question}`; the error names `{field}.template`.
    pub fn validate(&self, field: &str) -> Result<()> {
        match self {
            Self::Plain { template } if !template.contains(QUESTION_PLACEHOLDER) => Err(BridgeError::config(
                format!("{field}.template"),
                format!("must contain the {QUESTION_PLACEHOLDER} placeholder, got {template:?}"),
            )),
            _ => Ok(()),
        }
    }

    /// Renders a single question as a prompt.
    pub fn render_question(&self, question: &str, codec: &dyn TextCodec) -> Result<String> {
        match self {
            Self::Chat { system_prompt, instruction } => {
                let text = match instruction.as_deref().filter(|i| !i.trim().is_empty()) {
                    Some(i) => format!("{question}\n{i}"),
                    None => question.to_owned(),
                };
                match system_prompt {
                    Some(s) => {
                        codec.render_chat(&[ChatMessage::new("system", s), ChatMessage::new("user", &text)], true)
                    }
                    None => codec.render_prompt(&text),
                }
            }
            Self::Plain { template } => Ok(template.replace(QUESTION_PLACEHOLDER, question)),
        }
    }

    /// Renders the messages before the completion as a prompt.
    pub fn render_conversation(&self, messages: &[ChatMessage], codec: &dyn TextCodec) -> Result<String> {
        match self {
            Self::Chat { system_prompt: Some(s), .. } if messages.first().is_none_or(|m| m.role != "system") => {
                let mut all = Vec::with_capacity(messages.len() + 1);
                all.push(ChatMessage::new("system", s));
                all.extend_from_slice(messages);
                codec.render_chat(&all, true)
            }
            Self::Chat { .. } => codec.render_chat(messages, true),
            Self::Plain { template } => {
                let question = messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n\n");
                Ok(template.replace(QUESTION_PLACEHOLDER, &question))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::render_chatml;
    use crate::testing::CharCodec;

    #[test]
    fn templates_render_questions_and_conversations() {
        // CharCodec keeps the trait's defaults: render_prompt is the bare message, render_chat
        // plain ChatML.
        let codec = CharCodec::new("ab");
        assert_eq!(PromptTemplate::plain("Q: {question}\nA:").render_question("1+1", &codec).unwrap(), "Q: 1+1\nA:");
        assert_eq!(PromptTemplate::chat_with("Be brief.").render_question("1+1", &codec).unwrap(), "1+1\nBe brief.");
        assert_eq!(PromptTemplate::default().render_question("x", &codec).unwrap(), "x");
        let blank = PromptTemplate::chat_with(" ");
        assert_eq!(blank.render_question("x", &codec).unwrap(), "x", "a blank instruction is none");
        let both = PromptTemplate::Chat { system_prompt: Some("S".into()), instruction: Some("End with ####.".into()) };
        let want =
            render_chatml(&[ChatMessage::new("system", "S"), ChatMessage::new("user", "Q?\nEnd with ####.")], true);
        assert_eq!(both.render_question("Q?", &codec).unwrap(), want);

        let turns =
            [ChatMessage::new("user", "hi"), ChatMessage::new("assistant", "yo"), ChatMessage::new("user", "q")];
        assert_eq!(PromptTemplate::default().render_conversation(&turns, &codec).unwrap(), render_chatml(&turns, true));
        let with_system = both.render_conversation(&turns, &codec).unwrap();
        assert!(with_system.starts_with("<|im_start|>system\nS<|im_end|>"), "{with_system}");
        let plain = PromptTemplate::plain("[{question}]").render_conversation(&turns[..1], &codec).unwrap();
        assert_eq!(plain, "[hi]");
    }

    #[test]
    fn config_form_and_validation() {
        let t: PromptTemplate = serde_json::from_str(r#"{"kind":"plain","template":"{question}"}"#).unwrap();
        assert_eq!(t, PromptTemplate::plain("{question}"));
        let t: PromptTemplate = serde_json::from_str(r#"{"kind":"chat"}"#).unwrap();
        assert_eq!(t, PromptTemplate::default());
        let t: PromptTemplate = serde_json::from_str(r#"{"kind":"chat","instruction":"x"}"#).unwrap();
        assert_eq!(t, PromptTemplate::chat_with("x"));
        let err = serde_json::from_str::<PromptTemplate>(r#"{"kind":"chat","instrction":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("instrction"), "{err}");
        let json = serde_json::to_string(&PromptTemplate::chat_with("x")).unwrap();
        assert_eq!(json, r#"{"kind":"chat","instruction":"x"}"#);
        let bad = PromptTemplate::plain("no placeholder").validate("eval.prompt").unwrap_err();
        assert!(bad.to_string().contains("eval.prompt.template"), "{bad}");
        assert!(PromptTemplate::default().validate("x").is_ok());
    }
}
