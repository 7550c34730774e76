//! Parsing a normalised answer into an [`Answer`] tree, and evaluating its
//! expressions. Recursion is bounded by [`MAX_DEPTH`], work by the fuel counter.

use std::fmt;

pub use super::error::ParseError;
use super::fuel::{Exhausted, Fuel};
use super::lex::{ConstK, Func, Rel, Tok, lex};
use super::normalize::{MATH_WORDS, normalize};
use super::value::{Dec, Rat, Val};

/// Longest answer (in bytes, after extraction) that [`parse_answer`] parses, unless it is a plain
/// number (those are read at any length the step budget allows).
pub const MAX_ANSWER_LEN: usize = 2000;
/// Largest power of ten of a number in scientific notation (`1e999999999999999` still parses).
const MAX_EXPONENT: i64 = 1_000_000_000_000_000;
/// Maximum nesting depth of brackets, fractions, powers and unary signs.
pub const MAX_DEPTH: usize = 48;
/// Maximum number of tokens in one answer.
const MAX_TOKENS: usize = 600;
/// Maximum number of postfix operators (`!`, `%`, subscripts) on one atom.
const MAX_POSTFIX: usize = 4;
/// Fuel for [`parse_answer`] when called on its own.
pub const DEFAULT_PARSE_FUEL: u64 = 20_000;

/// An arithmetic expression (opaque; compare with [`super::answers_equivalent`]).
#[derive(Clone, PartialEq)]
pub struct Expr(pub(crate) Node);

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    /// Exact number; `decimal` is true when written with a fractional part (`0.5`) and no
    /// exponent.
    Num(Rat, bool),
    /// A decimal literal beyond [`Rat`] (compared exactly); `decimal` as for `Num`.
    Big(Dec, bool),
    Const(ConstK),
    Var(String),
    Add(Vec<Node>),
    Mul(Vec<Node>),
    Neg(Box<Node>),
    Recip(Box<Node>),
    Pow(Box<Node>, Box<Node>),
    Root(Box<Node>, u32),
    Func(Func, Box<Node>),
    Abs(Box<Node>),
    Factorial(Box<Node>),
    Binom(Box<Node>, Box<Node>),
    Percent(Box<Node>),
}

/// A parsed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// A number or an algebraic expression.
    Expr(Expr),
    /// `lhs = rhs` (`x = 5` matches a bare `5`).
    Equation(Expr, Expr),
    /// An interval; open/closed ends matter.
    Interval {
        /// Lower end.
        lo: Expr,
        /// Upper end.
        hi: Expr,
        /// `[` rather than `(`.
        lo_closed: bool,
        /// `]` rather than `)`.
        hi_closed: bool,
    },
    /// An ordered tuple `(a, b, …)` (a pair also matches the open interval).
    Tuple(Vec<Answer>),
    /// A set `\{a, b\}`: order and repetition do not matter.
    Set(Vec<Answer>),
    /// A bare comma list `a, b` (compared as a set, or in order against a tuple).
    List(Vec<Answer>),
    /// A union of intervals or sets (order does not matter).
    Union(Vec<Answer>),
    /// A multiple-choice letter, upper case.
    Choice(char),
    /// A text answer, lower-cased with single spaces.
    Text(String),
}

/// Parses one bare answer (no surrounding prose) with the default fuel.
///
/// Numbers in scientific notation are exact (`1e5` = `100000`, `2.5E-3` = `\frac{1}{400}`,
/// `1e999999998` ≠ `1e999999999`). A number glued to a lone `e` that starts no exponent (`3e`,
/// `2e^2`) makes the whole answer a [`Answer::Text`]: compared as written, never as `3·e`;
/// `e` standing on its own is Euler's constant. A plain number (digits, a point, an exponent,
/// thousands separators) is read at any length; any other answer longer than
/// [`MAX_ANSWER_LEN`] bytes is [`ParseError::TooLong`].
///
/// # Errors
/// Returns a [`ParseError`] when the answer is empty, too long, too deep,
/// malformed, unsupported, or costs more than the default step budget.
pub fn parse_answer(s: &str) -> Result<Answer, ParseError> {
    let mut fuel = Fuel::new(DEFAULT_PARSE_FUEL);
    parse_with_fuel(s, &mut fuel, MAX_ANSWER_LEN).map(|(a, _)| a)
}

/// Whether `s` could be a plain number once normalised (only digits, points, separators, signs,
/// exponent letters and spaces), so that the length limit does not apply to it.
fn numeric_chars(s: &str) -> bool {
    s.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b',' | b'+' | b'-' | b'e' | b'E' | b' ' | b'\t'))
}

/// Parses `s`, returning the answer and the normalised string. Answers longer than `max_len`
/// bytes are [`ParseError::TooLong`] unless they are plain numbers.
pub(crate) fn parse_with_fuel(s: &str, fuel: &mut Fuel, max_len: usize) -> Result<(Answer, String), ParseError> {
    let long = s.len() > max_len;
    if long && !numeric_chars(s) {
        return Err(ParseError::TooLong { max: max_len });
    }
    fuel.spend(s.len() as u64 / 16 + 1)?;
    let norm = normalize(s);
    if norm.is_empty() {
        return Err(ParseError::Empty);
    }
    if let Some(n) = plain_number(&norm)? {
        return Ok((Answer::Expr(Expr(n)), norm));
    }
    if long {
        return Err(ParseError::TooLong { max: max_len });
    }
    if let Some(c) = as_choice(&norm) {
        return Ok((Answer::Choice(c), norm));
    }
    if let Some(t) = as_text(&norm) {
        return Ok((Answer::Text(t), norm));
    }
    let Some(toks) = lex(&norm, MAX_TOKENS)? else {
        let text = norm.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase();
        return Ok((Answer::Text(text), norm));
    };
    if toks.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut p = Parser { toks, pos: 0, depth: 0, fuel };
    let ans = p.parse_top()?;
    Ok((ans, norm))
}

fn as_choice(s: &str) -> Option<char> {
    let b = s.as_bytes();
    match b {
        [c] if (b'A'..=b'J').contains(c) => Some(char::from(*c)),
        [b'(', c, b')'] if c.is_ascii_alphabetic() && (b'a'..=b'j').contains(&c.to_ascii_lowercase()) => {
            Some(char::from(c.to_ascii_uppercase()))
        }
        [c, b')'] if (b'A'..=b'J').contains(c) => Some(char::from(*c)),
        [b'(', c, b')', b' ', ..] if (b'A'..=b'J').contains(c) => Some(char::from(*c)),
        _ => None,
    }
}

fn as_text(s: &str) -> Option<String> {
    if !s.chars().all(|c| c.is_ascii_alphabetic() || matches!(c, ' ' | '-' | '\'' | '.' | '!' | '?' | ',')) {
        return None;
    }
    let has_word = s.split(|c: char| !c.is_ascii_alphabetic()).any(|w| {
        (w.len() >= 3 || w.eq_ignore_ascii_case("no")) && !MATH_WORDS.contains(&w) && !matches!(w, "infinity" | "infty")
    });
    if !has_word {
        return None;
    }
    let words: Vec<String> = s
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| matches!(c, '.' | '!' | '?' | ',')).to_ascii_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    Some(words.join(" "))
}

struct Parser<'f> {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    fuel: &'f mut Fuel,
}

type PResult<T> = Result<T, ParseError>;

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn bump(&mut self) -> PResult<Tok> {
        self.fuel.step()?;
        let t = self.toks.get(self.pos).cloned().ok_or(ParseError::UnexpectedEnd)?;
        self.pos += 1;
        Ok(t)
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn unexpected(&self) -> ParseError {
        match self.peek() {
            Some(t) => ParseError::UnexpectedToken { pos: self.pos, found: format!("{t:?}") },
            None => ParseError::UnexpectedEnd,
        }
    }

    fn expect(&mut self, t: &Tok) -> PResult<()> {
        if self.eat(t) { Ok(()) } else { Err(self.unexpected()) }
    }

    fn enter(&mut self) -> PResult<()> {
        self.fuel.step()?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::TooDeep { max: MAX_DEPTH });
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn parse_top(&mut self) -> PResult<Answer> {
        let first = self.parse_union()?;
        let ans = if self.peek() == Some(&Tok::Op(',')) {
            let mut items = vec![first];
            while self.eat(&Tok::Op(',')) {
                if self.peek().is_none() {
                    break;
                }
                items.push(self.parse_union()?);
            }
            Answer::List(items)
        } else {
            first
        };
        if self.pos != self.toks.len() {
            return Err(self.unexpected());
        }
        Ok(ans)
    }

    fn parse_union(&mut self) -> PResult<Answer> {
        let first = self.parse_element()?;
        if self.peek() != Some(&Tok::Cup) {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat(&Tok::Cup) {
            items.push(self.parse_element()?);
        }
        Ok(Answer::Union(items))
    }

    /// Does the bracket group opening at `self.pos` contain a comma at its top level?
    fn group_has_comma(&mut self) -> PResult<bool> {
        let mut depth = 0usize;
        for t in &self.toks[self.pos..] {
            self.fuel.step()?;
            match t {
                Tok::Open(_) | Tok::SetOpen => depth += 1,
                Tok::Close(_) | Tok::SetClose => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return Ok(false);
                    }
                }
                Tok::Op(',') if depth == 1 => return Ok(true),
                _ => {}
            }
        }
        Ok(false)
    }

    fn parse_element(&mut self) -> PResult<Answer> {
        self.enter()?;
        let r = self.parse_element_inner();
        self.leave();
        r
    }

    fn parse_element_inner(&mut self) -> PResult<Answer> {
        match self.peek() {
            Some(Tok::SetOpen) => {
                self.pos += 1;
                let mut items = Vec::new();
                if !self.eat(&Tok::SetClose) {
                    loop {
                        items.push(self.parse_union()?);
                        if self.eat(&Tok::SetClose) {
                            break;
                        }
                        self.expect(&Tok::Op(','))?;
                    }
                }
                return Ok(Answer::Set(items));
            }
            Some(Tok::EmptySet) => {
                self.pos += 1;
                return Ok(Answer::Set(Vec::new()));
            }
            Some(Tok::Open(open @ ('(' | '['))) => {
                let open = *open;
                if self.group_has_comma()? {
                    return self.parse_bracketed(open);
                }
            }
            _ => {}
        }
        let lhs = self.parse_expr()?;
        let mut rels = Vec::new();
        while let Some(Tok::Rel(r)) = self.peek() {
            let r = *r;
            self.pos += 1;
            rels.push((r, self.parse_expr()?));
        }
        match rels.len() {
            0 => Ok(Answer::Expr(Expr(lhs))),
            1 => {
                let (r, rhs) = rels.pop().ok_or(ParseError::UnexpectedEnd)?;
                relation(lhs, r, rhs)
            }
            2 => {
                let (r2, c) = rels.pop().ok_or(ParseError::UnexpectedEnd)?;
                let (r1, b) = rels.pop().ok_or(ParseError::UnexpectedEnd)?;
                chain(lhs, r1, b, r2, c)
            }
            _ => Err(ParseError::Unsupported("long relation chain")),
        }
    }

    fn parse_bracketed(&mut self, open: char) -> PResult<Answer> {
        self.pos += 1;
        let mut items = Vec::new();
        let close = loop {
            items.push(self.parse_union()?);
            match self.bump()? {
                Tok::Op(',') => {}
                Tok::Close(c @ (')' | ']')) => break c,
                t => {
                    return Err(ParseError::UnexpectedToken { pos: self.pos - 1, found: format!("{t:?}") });
                }
            }
        };
        if items.len() == 2 && !(open == '(' && close == ')') {
            let hi = items.pop();
            let lo = items.pop();
            if let (Some(Answer::Expr(lo)), Some(Answer::Expr(hi))) = (lo, hi) {
                return Ok(Answer::Interval { lo, hi, lo_closed: open == '[', hi_closed: close == ']' });
            }
            return Err(ParseError::Unsupported("interval with non-numeric ends"));
        }
        Ok(Answer::Tuple(items))
    }

    fn parse_expr(&mut self) -> PResult<Node> {
        self.enter()?;
        let r = self.parse_expr_inner();
        self.leave();
        r
    }

    fn parse_expr_inner(&mut self) -> PResult<Node> {
        let mut terms = vec![self.parse_term()?];
        loop {
            if self.eat(&Tok::Op('+')) {
                terms.push(self.parse_term()?);
            } else if self.eat(&Tok::Op('-')) {
                terms.push(Node::Neg(Box::new(self.parse_term()?)));
            } else {
                break;
            }
        }
        Ok(if terms.len() == 1 { terms.pop().ok_or(ParseError::UnexpectedEnd)? } else { Node::Add(terms) })
    }

    fn starts_atom(t: Option<&Tok>) -> bool {
        matches!(
            t,
            Some(
                Tok::Num(_)
                    | Tok::Ident(_)
                    | Tok::Const(_)
                    | Tok::Func(_)
                    | Tok::Frac
                    | Tok::Sqrt
                    | Tok::Binom
                    | Tok::Open('(' | '{')
            )
        )
    }

    fn parse_term(&mut self) -> PResult<Node> {
        let mut factors = vec![self.parse_unary()?];
        loop {
            self.fuel.step()?;
            if self.eat(&Tok::Op('*')) {
                factors.push(self.parse_unary()?);
            } else if self.eat(&Tok::Op('/')) {
                factors.push(Node::Recip(Box::new(self.parse_unary()?)));
            } else if Self::starts_atom(self.peek()) {
                factors.push(self.parse_power()?);
            } else {
                break;
            }
        }
        Ok(if factors.len() == 1 { factors.pop().ok_or(ParseError::UnexpectedEnd)? } else { Node::Mul(factors) })
    }

    fn parse_unary(&mut self) -> PResult<Node> {
        self.enter()?;
        let r = if self.eat(&Tok::Op('-')) {
            self.parse_unary().map(|n| Node::Neg(Box::new(n)))
        } else if self.eat(&Tok::Op('+')) {
            self.parse_unary()
        } else {
            self.parse_power()
        };
        self.leave();
        r
    }

    fn parse_power(&mut self) -> PResult<Node> {
        let base = self.parse_postfix()?;
        if self.eat(&Tok::Op('^')) {
            let e = self.parse_exponent()?;
            let p = Node::Pow(Box::new(base), Box::new(e));
            return self.postfix_ops(p);
        }
        Ok(base)
    }

    fn parse_exponent(&mut self) -> PResult<Node> {
        self.enter()?;
        let r = if self.eat(&Tok::Op('-')) {
            self.parse_exponent().map(|n| Node::Neg(Box::new(n)))
        } else if self.eat(&Tok::Op('+')) {
            self.parse_exponent()
        } else {
            self.parse_power()
        };
        self.leave();
        r
    }

    fn parse_postfix(&mut self) -> PResult<Node> {
        let a = self.parse_atom()?;
        self.postfix_ops(a)
    }

    fn postfix_ops(&mut self, mut a: Node) -> PResult<Node> {
        for _ in 0..=MAX_POSTFIX {
            self.fuel.step()?;
            if self.eat(&Tok::Op('!')) {
                a = Node::Factorial(Box::new(a));
            } else if self.eat(&Tok::Op('%')) {
                a = Node::Percent(Box::new(a));
            } else if self.peek() == Some(&Tok::Op('_')) {
                let Node::Var(name) = a else {
                    return Err(ParseError::Unsupported("subscript on a non-variable"));
                };
                self.pos += 1;
                let sub = self.parse_arg()?;
                a = Node::Var(format!("{name}_{sub:?}"));
            } else {
                return Ok(a);
            }
        }
        Err(ParseError::TooDeep { max: MAX_DEPTH })
    }

    /// A LaTeX macro argument: `{…}` or a single token (one digit of a number).
    fn parse_arg(&mut self) -> PResult<Node> {
        self.enter()?;
        let r = self.parse_arg_inner();
        self.leave();
        r
    }

    fn parse_arg_inner(&mut self) -> PResult<Node> {
        match self.peek() {
            Some(Tok::Open('{')) => {
                self.pos += 1;
                let e = self.parse_expr()?;
                self.expect(&Tok::Close('}'))?;
                Ok(e)
            }
            Some(Tok::Num(n)) if n.len() > 1 && n.bytes().all(|b| b.is_ascii_digit()) => {
                let (first, rest) = n.split_at(1);
                let node = number(first)?;
                let rest = rest.to_string();
                if let Some(slot) = self.toks.get_mut(self.pos) {
                    *slot = Tok::Num(rest);
                }
                Ok(node)
            }
            _ => self.parse_atom(),
        }
    }

    fn parse_atom(&mut self) -> PResult<Node> {
        self.enter()?;
        let r = self.parse_atom_inner();
        self.leave();
        r
    }

    fn parse_atom_inner(&mut self) -> PResult<Node> {
        let t = self.bump()?;
        match t {
            Tok::Num(s) => number(&s),
            Tok::Ident(s) => Ok(Node::Var(s)),
            Tok::Const(c) => Ok(Node::Const(c)),
            Tok::Open(o) => {
                let e = self.parse_expr()?;
                let close = match o {
                    '(' => ')',
                    '[' => ']',
                    _ => '}',
                };
                self.expect(&Tok::Close(close))?;
                Ok(e)
            }
            Tok::Op('|') => {
                let e = self.parse_expr()?;
                self.expect(&Tok::Op('|'))?;
                Ok(Node::Abs(Box::new(e)))
            }
            Tok::Frac => {
                let n = self.parse_arg()?;
                let d = self.parse_arg()?;
                Ok(Node::Mul(vec![n, Node::Recip(Box::new(d))]))
            }
            Tok::Binom => {
                let n = self.parse_arg()?;
                let k = self.parse_arg()?;
                Ok(Node::Binom(Box::new(n), Box::new(k)))
            }
            Tok::Sqrt => {
                let mut index = 2u32;
                if self.eat(&Tok::Open('[')) {
                    let Tok::Num(n) = self.bump()? else {
                        return Err(ParseError::Unsupported("non-numeric root index"));
                    };
                    index = n
                        .parse::<u32>()
                        .ok()
                        .filter(|k| (2..=64).contains(k))
                        .ok_or(ParseError::Unsupported("root index"))?;
                    self.expect(&Tok::Close(']'))?;
                }
                let arg = if matches!(self.peek(), Some(Tok::Num(_))) {
                    // `\sqrt2`, `\sqrt 12`: the whole number.
                    self.parse_atom()?
                } else {
                    self.parse_arg()?
                };
                Ok(Node::Root(Box::new(arg), index))
            }
            Tok::Func(f) => self.parse_func(f),
            other => Err(ParseError::UnexpectedToken { pos: self.pos - 1, found: format!("{other:?}") }),
        }
    }

    fn parse_func(&mut self, f: Func) -> PResult<Node> {
        let mut log_base = None;
        if f == Func::Log && self.eat(&Tok::Op('_')) {
            log_base = Some(self.parse_arg()?);
        }
        let mut power = None;
        if self.eat(&Tok::Op('^')) {
            power = Some(self.parse_exponent()?);
        }
        let arg = if self.peek() == Some(&Tok::Open('(')) { self.parse_atom()? } else { self.parse_power()? };
        let mut node = Node::Func(f, Box::new(arg));
        if let Some(b) = log_base {
            node = Node::Mul(vec![node, Node::Recip(Box::new(Node::Func(Func::Ln, Box::new(b))))]);
        }
        if let Some(p) = power {
            node = Node::Pow(Box::new(node), Box::new(p));
        }
        Ok(node)
    }
}

fn relation(lhs: Node, r: Rel, rhs: Node) -> PResult<Answer> {
    if r == Rel::Eq {
        return Ok(Answer::Equation(Expr(lhs), Expr(rhs)));
    }
    let inf = |pos: bool| {
        let i = Node::Const(ConstK::Inf);
        Expr(if pos { i } else { Node::Neg(Box::new(i)) })
    };
    // Normalise to `var OP value`.
    let (op, value) = match (&lhs, &rhs) {
        (Node::Var(_), v) if !v.has_vars() => (r, rhs),
        (v, Node::Var(_)) if !v.has_vars() => (flip(r), lhs),
        _ => return Err(ParseError::Unsupported("inequality")),
    };
    Ok(match op {
        Rel::Gt | Rel::Ge => {
            Answer::Interval { lo: Expr(value), hi: inf(true), lo_closed: op == Rel::Ge, hi_closed: false }
        }
        _ => Answer::Interval { lo: inf(false), hi: Expr(value), lo_closed: false, hi_closed: op == Rel::Le },
    })
}

fn flip(r: Rel) -> Rel {
    match r {
        Rel::Lt => Rel::Gt,
        Rel::Le => Rel::Ge,
        Rel::Gt => Rel::Lt,
        Rel::Ge => Rel::Le,
        Rel::Eq => Rel::Eq,
    }
}

fn chain(a: Node, r1: Rel, b: Node, r2: Rel, c: Node) -> PResult<Answer> {
    if !matches!(b, Node::Var(_)) || a.has_vars() || c.has_vars() {
        return Err(ParseError::Unsupported("relation chain"));
    }
    let closed = |r: Rel| r == Rel::Le || r == Rel::Ge;
    match (r1, r2) {
        (Rel::Lt | Rel::Le, Rel::Lt | Rel::Le) => {
            Ok(Answer::Interval { lo: Expr(a), hi: Expr(c), lo_closed: closed(r1), hi_closed: closed(r2) })
        }
        (Rel::Gt | Rel::Ge, Rel::Gt | Rel::Ge) => {
            Ok(Answer::Interval { lo: Expr(c), hi: Expr(a), lo_closed: closed(r2), hi_closed: closed(r1) })
        }
        _ => Err(ParseError::Unsupported("relation chain")),
    }
}

/// A whole answer that is one number, `[+-]digits[.digits][(e|E)[+-]digits]` (or `.digits…`):
/// its node, read at any length (the caller has paid fuel for the length).
fn plain_number(s: &str) -> Result<Option<Node>, ParseError> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let b = body.as_bytes();
    let int = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = int;
    let mut frac = 0;
    if b.get(i) == Some(&b'.') {
        frac = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += 1 + frac;
    }
    if int + frac == 0 || (frac == 0 && i > int) {
        return Ok(None);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
        let digits = b[i + 1 + sign..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Ok(None);
        }
        i += 1 + sign + digits;
    }
    if i != b.len() {
        return Ok(None);
    }
    let n = number(body)?;
    Ok(Some(if neg { Node::Neg(Box::new(n)) } else { n }))
}

/// A numeric literal (`12`, `0.5`, `1e5`, `2.5E-3`): exact, as a [`Rat`] when it fits and as a
/// [`Dec`] otherwise.
fn number(s: &str) -> Result<Node, ParseError> {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(k) => (&s[..k], Some(&s[k + 1..])),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let decimal = !frac.is_empty() && exponent.is_none();
    let exp = match exponent {
        None => 0,
        Some(e) => {
            let digits = e.trim_start_matches(['+', '-']).trim_start_matches('0');
            let magnitude = match digits.len() {
                0 => Some(0),
                1..=18 => digits.parse::<i64>().ok(),
                _ => None,
            };
            match magnitude.filter(|m| *m <= MAX_EXPONENT) {
                Some(m) if e.starts_with('-') => -m,
                Some(m) => m,
                None => return Err(ParseError::Unsupported("exponent out of range")),
            }
        }
    };
    let frac_len = i64::try_from(frac.len()).map_err(|_| ParseError::Unsupported("number too long"))?;
    let dec = Dec::new(&format!("{int}{frac}"), exp - frac_len);
    Ok(match dec.to_rat() {
        Some(r) => Node::Num(r, decimal),
        None => Node::Big(dec, decimal),
    })
}

impl Node {
    /// Whether any variable occurs (iterative, so no recursion limit needed).
    pub(crate) fn has_vars(&self) -> bool {
        let mut found = false;
        self.walk(&mut |n| {
            if matches!(n, Node::Var(_)) {
                found = true;
            }
        });
        found
    }

    /// Whether a decimal literal or float occurs.
    pub(crate) fn has_decimal(&self) -> bool {
        let mut found = false;
        self.walk(&mut |n| {
            if matches!(n, Node::Num(_, true) | Node::Big(_, true)) {
                found = true;
            }
        });
        found
    }

    /// Visits every node, iteratively.
    pub(crate) fn walk(&self, f: &mut dyn FnMut(&Node)) {
        let mut stack: Vec<&Node> = vec![self];
        while let Some(n) = stack.pop() {
            f(n);
            match n {
                Node::Num(..) | Node::Big(..) | Node::Const(_) | Node::Var(_) => {}
                Node::Add(v) | Node::Mul(v) => stack.extend(v.iter()),
                Node::Neg(a)
                | Node::Recip(a)
                | Node::Root(a, _)
                | Node::Func(_, a)
                | Node::Abs(a)
                | Node::Factorial(a)
                | Node::Percent(a) => stack.push(a),
                Node::Pow(a, b) | Node::Binom(a, b) => {
                    stack.push(a);
                    stack.push(b);
                }
            }
        }
    }

    /// Evaluates with variables looked up in `env`. Recursion depth is bounded by
    /// the parser's depth limit.
    pub(crate) fn eval(&self, env: &dyn Fn(&str) -> Val, fuel: &mut Fuel) -> Result<Val, Exhausted> {
        fuel.step()?;
        Ok(match self {
            Node::Num(r, _) => Val::Q(*r),
            Node::Big(d, _) => Val::float(d.to_f64()),
            Node::Const(ConstK::Pi) => Val::F(std::f64::consts::PI),
            Node::Const(ConstK::E) => Val::F(std::f64::consts::E),
            Node::Const(ConstK::Inf) => Val::Inf(true),
            Node::Var(v) => env(v),
            Node::Add(v) => {
                let mut acc = Val::Q(Rat::ZERO);
                for n in v {
                    acc = acc.add(n.eval(env, fuel)?);
                }
                acc
            }
            Node::Mul(v) => {
                let mut acc = Val::Q(Rat::ONE);
                for n in v {
                    acc = acc.mul(n.eval(env, fuel)?);
                }
                acc
            }
            Node::Neg(a) => a.eval(env, fuel)?.neg(),
            Node::Recip(a) => a.eval(env, fuel)?.recip(),
            Node::Pow(a, b) => {
                let base = a.eval(env, fuel)?;
                let e = b.eval(env, fuel)?;
                fuel.spend(8)?;
                base.pow(e)
            }
            Node::Root(a, k) => a.eval(env, fuel)?.root(*k),
            Node::Func(f, a) => eval_func(*f, a.eval(env, fuel)?),
            Node::Abs(a) => match a.eval(env, fuel)? {
                Val::Q(r) if r.numer() < 0 => Val::Q(r).neg(),
                Val::F(x) => Val::F(x.abs()),
                Val::Inf(_) => Val::Inf(true),
                v => v,
            },
            Node::Factorial(a) => a.eval(env, fuel)?.factorial(fuel)?,
            Node::Binom(n, k) => {
                let n = n.eval(env, fuel)?;
                let k = k.eval(env, fuel)?;
                binom(n, k, fuel)?
            }
            Node::Percent(a) => a.eval(env, fuel)?.mul(Val::Q(Rat::new(1, 100).unwrap_or(Rat::ZERO))),
        })
    }
}

fn eval_func(f: Func, x: Val) -> Val {
    if let Val::Q(r) = x
        && r.numer() == 0
    {
        match f {
            Func::Sin | Func::Tan | Func::Asin | Func::Atan | Func::Sinh | Func::Tanh => {
                return Val::Q(Rat::ZERO);
            }
            Func::Cos | Func::Cosh | Func::Exp | Func::Sec => return Val::Q(Rat::ONE),
            _ => {}
        }
    }
    if let Val::Q(r) = x
        && r == Rat::ONE
        && matches!(f, Func::Ln | Func::Log)
    {
        return Val::Q(Rat::ZERO);
    }
    let g: fn(f64) -> f64 = match f {
        Func::Sin => f64::sin,
        Func::Cos => f64::cos,
        Func::Tan => f64::tan,
        Func::Cot => |x| 1.0 / x.tan(),
        Func::Sec => |x| 1.0 / x.cos(),
        Func::Csc => |x| 1.0 / x.sin(),
        Func::Asin => f64::asin,
        Func::Acos => f64::acos,
        Func::Atan => f64::atan,
        Func::Sinh => f64::sinh,
        Func::Cosh => f64::cosh,
        Func::Tanh => f64::tanh,
        Func::Ln | Func::Log => f64::ln,
        Func::Exp => f64::exp,
    };
    x.apply_f64(g)
}

fn binom(n: Val, k: Val, fuel: &mut Fuel) -> Result<Val, Exhausted> {
    // Generalised binomial: integer k >= 0, any n: n (n-1) ... (n-k+1) / k!.
    let k = match k {
        Val::Q(k) if k.is_integer() && k.numer() >= 0 => k.numer(),
        _ => return Ok(Val::Undef),
    };
    let mut k = k;
    if let Val::Q(nq) = n
        && nq.is_integer()
        && nq.numer() >= 0
    {
        if k > nq.numer() {
            return Ok(Val::Q(Rat::ZERO));
        }
        k = k.min(nq.numer() - k);
    }
    if k > 1000 {
        return Ok(Val::Undef);
    }
    fuel.spend(k.unsigned_abs() as u64)?;
    let mut acc = Val::Q(Rat::ONE);
    for i in 0..k {
        let num = n.add(Val::Q(Rat::int(-i)));
        let den = Val::Q(Rat::int(i + 1)).recip();
        acc = acc.mul(num).mul(den);
    }
    Ok(acc)
}
