//! The task's characters and the prompt template's placeholder.

/// Every character any generated text (question, prompt, solution, pre-training document) uses,
/// in byte order: newline, space, `#()*+-`, the digits, `:=`, `A`, `Q` and `^` (squares,
/// [`crate::TaskConfig::squares_per_level`]).
pub const ALPHABET: &str = "\n #()*+-0123456789:=AQ^";

/// The placeholder of [`crate::TaskConfig::prompt_template`].
pub const QUESTION_PLACEHOLDER: &str = "{question}";
