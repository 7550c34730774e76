//! Why an answer could not be parsed (the lexer's and the parser's errors).

use super::fuel::Exhausted;

/// Why an answer string could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing left after normalisation.
    #[error("empty answer")]
    Empty,
    /// The answer is longer than the parser accepts.
    #[error("answer too long (limit {max})")]
    TooLong {
        /// The limit that was exceeded (bytes or tokens).
        max: usize,
    },
    /// Brackets, fractions or powers nest too deeply.
    #[error("answer nests deeper than {max} levels")]
    TooDeep {
        /// The depth limit.
        max: usize,
    },
    /// A character the tokeniser does not understand.
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    /// A LaTeX command the parser does not understand.
    #[error("unknown command \\{0}")]
    UnknownCommand(String),
    /// A token in a place where it makes no sense.
    #[error("unexpected {found} at token {pos}")]
    UnexpectedToken {
        /// Token index.
        pos: usize,
        /// Description of the token found.
        found: String,
    },
    /// The answer ended in the middle of an expression (e.g. unbalanced braces).
    #[error("unexpected end of answer")]
    UnexpectedEnd,
    /// A well-formed construct this verifier does not support.
    #[error("unsupported construct: {0}")]
    Unsupported(&'static str),
    /// The step budget ran out.
    #[error("step budget exhausted")]
    OutOfFuel,
}

impl From<Exhausted> for ParseError {
    fn from(_: Exhausted) -> Self {
        ParseError::OutOfFuel
    }
}
