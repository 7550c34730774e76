//! Integer arithmetic expressions, their canonical rendering and their step-by-step solutions.
//!
//! An expression is a binary tree over `+`, `-` and `*` with non-negative integer leaves, and
//! powers `x^n` (`n ≥ 2`). It is rendered with the usual precedence (`^` before `*` before
//! `+`/`-`, left to right among equals) and only the parentheses that this reading needs, so
//! [`Expr::parse`] of [`Expr::render`] gives the same tree back and a question determines its
//! worked solution. The solution evaluates the tree bottom-up, left subtree first, one reasoning
//! line per operation: `3+4*2-5` is solved as `4*2=8`, `3+8=11`, `11-5=6`, `#### 6`. A power is
//! worked out as repeated multiplication, `n - 1` lines: `3^2+4` is `3*3=9`, `9+4=13`, `#### 13`.

use bridge_core::{BridgeError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest question [`Problem::from_question`] accepts, in bytes.
pub const MAX_QUESTION_LEN: usize = 256;
/// Deepest parenthesis nesting [`Expr::parse`] accepts.
pub const MAX_PAREN_DEPTH: usize = 32;
/// Largest exponent [`Expr::parse`] accepts (a power is solved as `n - 1` multiplications).
pub const MAX_EXPONENT: u32 = 9;
/// Binding strength of `^`, above every [`Op`].
const POW_PRECEDENCE: u8 = 3;

/// An arithmetic operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Addition, `+`.
    Add,
    /// Subtraction, `-`.
    Sub,
    /// Multiplication, `*`.
    Mul,
}

impl Op {
    /// The operator's character.
    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
        }
    }

    /// The operator written `c`, if any.
    pub fn from_symbol(c: char) -> Option<Op> {
        match c {
            '+' => Some(Op::Add),
            '-' => Some(Op::Sub),
            '*' => Some(Op::Mul),
            _ => None,
        }
    }

    /// Binding strength: `*` (2) binds tighter than `+` and `-` (1).
    pub fn precedence(self) -> u8 {
        match self {
            Op::Add | Op::Sub => 1,
            Op::Mul => 2,
        }
    }

    /// `a op b`, or `None` on `i64` overflow.
    pub fn apply(self, a: i64, b: i64) -> Option<i64> {
        match self {
            Op::Add => a.checked_add(b),
            Op::Sub => a.checked_sub(b),
            Op::Mul => a.checked_mul(b),
        }
    }
}

/// An arithmetic expression tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// An integer literal.
    Num(i64),
    /// `lhs op rhs`.
    Bin {
        /// The operator.
        op: Op,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `base^exp`, `exp` in `2..=MAX_EXPONENT`.
    Pow {
        /// The base.
        base: Box<Expr>,
        /// The exponent.
        exp: u32,
    },
}

impl Expr {
    /// `lhs op rhs`.
    pub fn bin(op: Op, lhs: Expr, rhs: Expr) -> Expr {
        Expr::Bin { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }
    }

    /// `base^exp`.
    pub fn pow(base: Expr, exp: u32) -> Expr {
        Expr::Pow { base: Box::new(base), exp }
    }

    /// Number of reasoning lines the tree's solution has: one per binary operator, `exp - 1` per
    /// power.
    pub fn n_ops(&self) -> usize {
        match self {
            Expr::Num(_) => 0,
            Expr::Bin { lhs, rhs, .. } => 1 + lhs.n_ops() + rhs.n_ops(),
            Expr::Pow { base, exp } => base.n_ops() + exp.saturating_sub(1) as usize,
        }
    }

    /// Number of powers in the tree.
    pub fn n_powers(&self) -> usize {
        match self {
            Expr::Num(_) => 0,
            Expr::Bin { lhs, rhs, .. } => lhs.n_powers() + rhs.n_powers(),
            Expr::Pow { base, .. } => 1 + base.n_powers(),
        }
    }

    fn precedence(&self) -> Option<u8> {
        match self {
            Expr::Num(_) => None,
            Expr::Bin { op, .. } => Some(op.precedence()),
            Expr::Pow { .. } => Some(POW_PRECEDENCE),
        }
    }

    /// The canonical text: standard precedence, left-associative, minimal parentheses, no spaces.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) {
        match self {
            Expr::Num(n) => out.push_str(&n.to_string()),
            Expr::Bin { op, lhs, rhs } => {
                let p = op.precedence();
                let left_parens = lhs.precedence().is_some_and(|q| q < p);
                let right_parens = rhs.precedence().is_some_and(|q| q <= p);
                render_child(lhs, left_parens, out);
                out.push(op.symbol());
                render_child(rhs, right_parens, out);
            }
            Expr::Pow { base, exp } => {
                // `^` takes a literal base only: `(2^2)^2` and `(1+2)^2` keep their parentheses.
                render_child(base, base.precedence().is_some(), out);
                out.push('^');
                out.push_str(&exp.to_string());
            }
        }
    }

    /// Whether the canonical rendering contains parentheses.
    pub fn needs_parentheses(&self) -> bool {
        match self {
            Expr::Num(_) => false,
            Expr::Bin { op, lhs, rhs } => {
                let p = op.precedence();
                lhs.precedence().is_some_and(|q| q < p)
                    || rhs.precedence().is_some_and(|q| q <= p)
                    || lhs.needs_parentheses()
                    || rhs.needs_parentheses()
            }
            Expr::Pow { base, .. } => base.precedence().is_some() || base.needs_parentheses(),
        }
    }

    /// Parses digits, `+`, `-`, `*`, `^` (a literal exponent in `2..=MAX_EXPONENT`) and
    /// parentheses (no spaces, no unary minus) with the usual precedence, left to right among
    /// equals.
    pub fn parse(text: &str) -> Result<Expr> {
        if text.len() > MAX_QUESTION_LEN {
            return Err(BridgeError::InvalidInput(format!(
                "arithmetic expression of {} bytes (at most {MAX_QUESTION_LEN})",
                text.len()
            )));
        }
        let mut p = Parser { s: text.as_bytes(), pos: 0, depth: 0 };
        let e = p.expr()?;
        if p.pos != p.s.len() {
            return Err(p.error("unexpected character"));
        }
        Ok(e)
    }

    /// The value and the reasoning steps: bottom-up, left subtree first, one step per operator.
    pub fn solve(&self) -> Result<(Vec<Step>, i64)> {
        let mut steps = Vec::with_capacity(self.n_ops());
        let value = self.eval_into(&mut steps)?;
        Ok((steps, value))
    }

    fn eval_into(&self, steps: &mut Vec<Step>) -> Result<i64> {
        match self {
            Expr::Num(n) => Ok(*n),
            Expr::Bin { op, lhs, rhs } => {
                let a = lhs.eval_into(steps)?;
                let b = rhs.eval_into(steps)?;
                let result = op
                    .apply(a, b)
                    .ok_or_else(|| BridgeError::InvalidInput(format!("overflow in {a}{}{b}", op.symbol())))?;
                steps.push(Step { lhs: a, op: *op, rhs: b, result });
                Ok(result)
            }
            Expr::Pow { base, exp } => {
                let a = base.eval_into(steps)?;
                let mut acc = a;
                for _ in 1..*exp {
                    let result = Op::Mul
                        .apply(acc, a)
                        .ok_or_else(|| BridgeError::InvalidInput(format!("overflow in {acc}*{a}")))?;
                    steps.push(Step { lhs: acc, op: Op::Mul, rhs: a, result });
                    acc = result;
                }
                Ok(acc)
            }
        }
    }
}

fn render_child(e: &Expr, parens: bool, out: &mut String) {
    if parens {
        out.push('(');
        e.render_into(out);
        out.push(')');
    } else {
        e.render_into(out);
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> BridgeError {
        BridgeError::InvalidInput(format!(
            "arithmetic expression {:?}: {what} at byte {}",
            String::from_utf8_lossy(self.s),
            self.pos
        ))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn expr(&mut self) -> Result<Expr> {
        let mut e = self.term()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.pos += 1;
            let rhs = self.term()?;
            e = Expr::bin(if op == b'+' { Op::Add } else { Op::Sub }, e, rhs);
        }
        Ok(e)
    }

    fn term(&mut self) -> Result<Expr> {
        let mut e = self.power()?;
        while self.peek() == Some(b'*') {
            self.pos += 1;
            let rhs = self.power()?;
            e = Expr::bin(Op::Mul, e, rhs);
        }
        Ok(e)
    }

    /// A factor with its exponents: `2^2^2` is `(2^2)^2`, read left to right like the other
    /// operators (the renderer never writes it unparenthesised).
    fn power(&mut self) -> Result<Expr> {
        let mut e = self.factor()?;
        while self.peek() == Some(b'^') {
            self.pos += 1;
            let start = self.pos;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
            let exp = std::str::from_utf8(&self.s[start..self.pos])
                .ok()
                .and_then(|d| d.parse::<u32>().ok())
                .filter(|n| (2..=MAX_EXPONENT).contains(n))
                .ok_or_else(|| self.error(&format!("expected an exponent in 2..={MAX_EXPONENT}")))?;
            e = Expr::pow(e, exp);
        }
        Ok(e)
    }

    fn factor(&mut self) -> Result<Expr> {
        match self.peek() {
            Some(b'(') => {
                if self.depth >= MAX_PAREN_DEPTH {
                    return Err(self.error("parentheses nested too deeply"));
                }
                self.depth += 1;
                self.pos += 1;
                let e = self.expr()?;
                if self.peek() != Some(b')') {
                    return Err(self.error("expected `)`"));
                }
                self.pos += 1;
                self.depth -= 1;
                Ok(e)
            }
            Some(b'0'..=b'9') => {
                let start = self.pos;
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.pos += 1;
                }
                // The slice holds ASCII digits only.
                let digits = std::str::from_utf8(&self.s[start..self.pos]).map_err(|_| self.error("bad number"))?;
                digits.parse::<i64>().map(Expr::Num).map_err(|_| self.error("number too large"))
            }
            _ => Err(self.error("expected a number or `(`")),
        }
    }
}

/// One reasoning line, `lhs op rhs = result` (rendered `3+4=7`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Left operand.
    pub lhs: i64,
    /// The operator.
    pub op: Op,
    /// Right operand.
    pub rhs: i64,
    /// `lhs op rhs`.
    pub result: i64,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}={}", self.lhs, self.op.symbol(), self.rhs, self.result)
    }
}

/// A question with its worked solution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Difficulty level. [`Problem::from_question`] sets the number of reasoning lines; the
    /// generator sets the level of the [`TaskConfig`](super::TaskConfig) that drew it.
    pub level: u32,
    /// The question text, e.g. `3+4*2-5`.
    pub question: String,
    /// The reasoning lines, in order.
    pub steps: Vec<Step>,
    /// The final answer (the last step's result).
    pub answer: i64,
}

impl Problem {
    /// Parses `question` and solves it: one step per operator, bottom-up, left subtree first.
    pub fn from_question(question: &str) -> Result<Problem> {
        Self::from_expr(&Expr::parse(question)?, question.to_owned())
    }

    pub(crate) fn from_expr(expr: &Expr, question: String) -> Result<Problem> {
        let (steps, answer) = expr.solve()?;
        let level = u32::try_from(steps.len()).map_err(|_| BridgeError::InvalidInput("too many operations".into()))?;
        Ok(Problem { level, question, steps, answer })
    }

    /// The worked solution: one line per step, then `#### N` (no trailing newline).
    pub fn solution(&self) -> String {
        let mut out = String::new();
        for s in &self.steps {
            out.push_str(&s.to_string());
            out.push('\n');
        }
        out.push_str("#### ");
        out.push_str(&self.answer.to_string());
        out
    }

    /// The prompt: `template` with every `{question}` replaced by the question.
    pub fn prompt(&self, template: &str) -> String {
        template.replace(super::alphabet::QUESTION_PLACEHOLDER, &self.question)
    }

    /// Prompt followed by the worked solution (a pre-training document).
    pub fn document(&self, template: &str) -> String {
        let mut d = self.prompt(template);
        d.push_str(&self.solution());
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_parentheses_and_round_trip() {
        let p = Problem::from_question("3+4*2-5").unwrap();
        assert_eq!(p.solution(), "4*2=8\n3+8=11\n11-5=6\n#### 6");
        assert_eq!(p.level, 3);
        let p = Problem::from_question("(3+4)*(5-2)").unwrap();
        assert_eq!(p.solution(), "3+4=7\n5-2=3\n7*3=21\n#### 21");
        for q in ["1+2", "1-(2-1)", "2*(3*4)", "(1+2)*3-4", "9-(2+3)*1", "7"] {
            let e = Expr::parse(q).unwrap();
            assert_eq!(e.render(), q);
            assert_eq!(e.needs_parentheses(), q.contains('('));
        }
        assert_eq!(Expr::parse("(1+2)").unwrap().render(), "1+2");
    }

    #[test]
    fn powers_are_repeated_multiplication() {
        let p = Problem::from_question("3^2+4").unwrap();
        assert_eq!(p.solution(), "3*3=9\n9+4=13\n#### 13");
        let p = Problem::from_question("2*3^3").unwrap();
        assert_eq!(p.solution(), "3*3=9\n9*3=27\n2*27=54\n#### 54");
        assert_eq!(p.level, 3);
        let p = Problem::from_question("5^2-4^2").unwrap();
        assert_eq!(p.solution(), "5*5=25\n4*4=16\n25-16=9\n#### 9");
        let p = Problem::from_question("(1+2)^2").unwrap();
        assert_eq!(p.solution(), "1+2=3\n3*3=9\n#### 9");
        for q in ["3^2+4", "2*3^3", "(1+2)^2", "(2^2)^2", "7-2^2*1", "2^2^2"] {
            let e = Expr::parse(q).unwrap();
            let back = e.render();
            assert_eq!(Expr::parse(&back).unwrap(), e, "{q} -> {back}");
            assert_eq!(e.needs_parentheses(), back.contains('('), "{q}");
        }
        assert_eq!(Expr::parse("2^2^2").unwrap().render(), "(2^2)^2");
        assert_eq!(Expr::parse("3^2").unwrap().n_powers(), 1);
        for q in ["3^", "3^1", "3^10", "3^a", "^2", "3^^2"] {
            assert!(Problem::from_question(q).is_err(), "{q}");
        }
    }

    #[test]
    fn bad_questions_are_errors() {
        for q in ["", "1+", "(1+2", "1 + 2", "-1", "99999999999999999999", "1)", "a"] {
            assert!(Problem::from_question(q).is_err(), "{q}");
        }
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(Expr::parse(&deep).is_err());
        assert!(Problem::from_question(&"1+".repeat(200)).is_err());
        assert!(Problem::from_question("9223372036854775807+1").is_err());
    }
}
