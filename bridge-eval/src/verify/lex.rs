//! Tokeniser for normalised answers (LaTeX and plain text maths).

use super::error::ParseError;

/// Real functions understood by the evaluator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    Sin,
    Cos,
    Tan,
    Cot,
    Sec,
    Csc,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Ln,
    Log,
    Exp,
}

/// Named constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConstK {
    Pi,
    E,
    Inf,
}

/// Relation symbols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rel {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Num(String),
    Ident(String),
    Func(Func),
    Const(ConstK),
    Frac,
    Sqrt,
    Binom,
    /// One of `+ - * / ^ _ ! % , |`.
    Op(char),
    Rel(Rel),
    /// `(`, `[` or `{`.
    Open(char),
    /// `)`, `]` or `}`.
    Close(char),
    SetOpen,
    SetClose,
    Cup,
    EmptySet,
}

const WORDS: &[(&str, Tok)] = &[
    ("arcsin", Tok::Func(Func::Asin)),
    ("arccos", Tok::Func(Func::Acos)),
    ("arctan", Tok::Func(Func::Atan)),
    ("infinity", Tok::Const(ConstK::Inf)),
    ("infty", Tok::Const(ConstK::Inf)),
    ("sqrt", Tok::Sqrt),
    ("sinh", Tok::Func(Func::Sinh)),
    ("cosh", Tok::Func(Func::Cosh)),
    ("tanh", Tok::Func(Func::Tanh)),
    ("sin", Tok::Func(Func::Sin)),
    ("cos", Tok::Func(Func::Cos)),
    ("tan", Tok::Func(Func::Tan)),
    ("cot", Tok::Func(Func::Cot)),
    ("sec", Tok::Func(Func::Sec)),
    ("csc", Tok::Func(Func::Csc)),
    ("exp", Tok::Func(Func::Exp)),
    ("log", Tok::Func(Func::Log)),
    ("inf", Tok::Const(ConstK::Inf)),
    ("ln", Tok::Func(Func::Ln)),
    ("pi", Tok::Const(ConstK::Pi)),
];

const GREEK: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
];

/// Commands that only affect layout.
const IGNORED: &[&str] = &[
    "left",
    "right",
    "big",
    "Big",
    "bigg",
    "Bigg",
    "bigl",
    "bigr",
    "Bigl",
    "Bigr",
    "biggl",
    "biggr",
    "displaystyle",
    "textstyle",
    "quad",
    "qquad",
    "limits",
    "nolimits",
];

/// Tokenises `s`; at most `max_tokens` tokens. `Ok(None)`: `s` is not maths but text, because a
/// number is glued to a lone `e`/`E` that starts no exponent (`3e`, `2E+x`; see
/// [`super::parse_answer`]).
///
/// A number is `12`, `1.5`, `.5`, optionally followed, with nothing in between, by an exponent
/// `e`/`E`, an optional sign and digits (`1e5`, `2.5E-3`): scientific notation is one number
/// token. Elsewhere `e` is Euler's constant (`e`, `e^2`, `2 e`, `2\cdot e`).
pub(crate) fn lex(s: &str, max_tokens: usize) -> Result<Option<Vec<Tok>>, ParseError> {
    let b = s.as_bytes();
    let mut out: Vec<Tok> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if out.len() > max_tokens {
            return Err(ParseError::TooLong { max: max_tokens });
        }
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'~' | b'&' => i += 1,
            b'0'..=b'9' | b'.' => {
                let start = i;
                let mut seen_dot = false;
                while i < b.len() {
                    if b[i].is_ascii_digit() {
                        i += 1;
                    } else if b[i] == b'.' && !seen_dot && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                        seen_dot = true;
                        i += 1;
                    } else {
                        break;
                    }
                }
                if i == start {
                    // A lone '.' (e.g. after `\left.`): ignore it.
                    i += 1;
                    continue;
                }
                if matches!(b.get(i), Some(b'e' | b'E')) {
                    let sign = usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
                    let digits = b[i + 1 + sign..].iter().take_while(|c| c.is_ascii_digit()).count();
                    if digits > 0 {
                        i += 1 + sign + digits;
                    } else if !b.get(i + 1).is_some_and(u8::is_ascii_alphabetic) {
                        return Ok(None);
                    }
                }
                out.push(Tok::Num(s[start..i].to_string()));
            }
            b'a'..=b'z' | b'A'..=b'Z' => {
                let start = i;
                while i < b.len() && b[i].is_ascii_alphabetic() {
                    i += 1;
                }
                lex_word(&s[start..i], &mut out);
            }
            b'\\' => {
                i += 1;
                let start = i;
                while i < b.len() && b[i].is_ascii_alphabetic() {
                    i += 1;
                }
                if i == start {
                    // Escaped symbol.
                    let Some(&e) = b.get(i) else { break };
                    i += 1;
                    match e {
                        b'{' => out.push(Tok::SetOpen),
                        b'}' => out.push(Tok::SetClose),
                        b'%' => out.push(Tok::Op('%')),
                        b'|' => out.push(Tok::Op('|')),
                        b',' | b';' | b':' | b'!' | b' ' | b'$' => {}
                        b'\\' => out.push(Tok::Op(',')),
                        _ => return Err(ParseError::UnexpectedChar(char::from(e))),
                    }
                    continue;
                }
                let name = &s[start..i];
                lex_command(name, &mut out)?;
            }
            b'*' => {
                if b.get(i + 1) == Some(&b'*') {
                    out.push(Tok::Op('^'));
                    i += 2;
                } else {
                    out.push(Tok::Op('*'));
                    i += 1;
                }
            }
            b'<' | b'>' => {
                let eq = b.get(i + 1) == Some(&b'=');
                out.push(Tok::Rel(match (c, eq) {
                    (b'<', false) => Rel::Lt,
                    (b'<', true) => Rel::Le,
                    (_, false) => Rel::Gt,
                    (_, true) => Rel::Ge,
                }));
                i += if eq { 2 } else { 1 };
            }
            b'=' => {
                out.push(Tok::Rel(Rel::Eq));
                i += 1;
            }
            b'+' | b'-' | b'/' | b'^' | b'_' | b'!' | b'%' | b',' | b'|' => {
                out.push(Tok::Op(char::from(c)));
                i += 1;
            }
            b';' => {
                out.push(Tok::Op(','));
                i += 1;
            }
            b'(' | b'[' | b'{' => {
                out.push(Tok::Open(char::from(c)));
                i += 1;
            }
            b')' | b']' | b'}' => {
                out.push(Tok::Close(char::from(c)));
                i += 1;
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or('?');
                return Err(ParseError::UnexpectedChar(ch));
            }
        }
    }
    Ok(Some(out))
}

fn lex_word(word: &str, out: &mut Vec<Tok>) {
    let mut rest = word;
    'outer: while !rest.is_empty() {
        for (w, tok) in WORDS {
            if rest.starts_with(w) {
                out.push(tok.clone());
                rest = &rest[w.len()..];
                continue 'outer;
            }
        }
        let (first, tail) = rest.split_at(1);
        if first == "e" {
            out.push(Tok::Const(ConstK::E));
        } else {
            out.push(Tok::Ident(first.to_string()));
        }
        rest = tail;
    }
}

fn lex_command(name: &str, out: &mut Vec<Tok>) -> Result<(), ParseError> {
    if IGNORED.contains(&name) {
        return Ok(());
    }
    if GREEK.contains(&name) {
        out.push(Tok::Ident(name.to_string()));
        return Ok(());
    }
    let tok = match name {
        "frac" | "dfrac" | "tfrac" | "cfrac" => Tok::Frac,
        "sqrt" => Tok::Sqrt,
        "binom" | "dbinom" | "tbinom" | "choose" => Tok::Binom,
        "pi" => Tok::Const(ConstK::Pi),
        "infty" | "infinity" => Tok::Const(ConstK::Inf),
        "cdot" | "times" | "ast" => Tok::Op('*'),
        "div" => Tok::Op('/'),
        "le" | "leq" | "leqslant" => Tok::Rel(Rel::Le),
        "ge" | "geq" | "geqslant" => Tok::Rel(Rel::Ge),
        "lt" => Tok::Rel(Rel::Lt),
        "gt" => Tok::Rel(Rel::Gt),
        "cup" => Tok::Cup,
        "emptyset" | "varnothing" => Tok::EmptySet,
        "vert" | "lvert" | "rvert" | "mid" => Tok::Op('|'),
        "lbrace" => Tok::SetOpen,
        "rbrace" => Tok::SetClose,
        "sin" => Tok::Func(Func::Sin),
        "cos" => Tok::Func(Func::Cos),
        "tan" => Tok::Func(Func::Tan),
        "cot" => Tok::Func(Func::Cot),
        "sec" => Tok::Func(Func::Sec),
        "csc" => Tok::Func(Func::Csc),
        "arcsin" => Tok::Func(Func::Asin),
        "arccos" => Tok::Func(Func::Acos),
        "arctan" => Tok::Func(Func::Atan),
        "sinh" => Tok::Func(Func::Sinh),
        "cosh" => Tok::Func(Func::Cosh),
        "tanh" => Tok::Func(Func::Tanh),
        "ln" => Tok::Func(Func::Ln),
        "log" => Tok::Func(Func::Log),
        "exp" => Tok::Func(Func::Exp),
        _ => return Err(ParseError::UnknownCommand(name.chars().take(32).collect())),
    };
    out.push(tok);
    Ok(())
}
