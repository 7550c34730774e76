//! Equivalence of two parsed answers.

use super::fuel::{Exhausted, Fuel};
use super::parse::{Answer, Expr, Node};
use super::value::{Rat, Val};

/// Options for [`answers_equivalent`].
#[derive(Clone, Debug, PartialEq)]
pub struct CompareOptions {
    /// Relative tolerance for values that are not both exact rationals.
    pub rel_tol: f64,
    /// When either side contains a decimal literal (`0.333333`), values also
    /// match if they agree after rounding to this many decimal places.
    pub decimal_places: i32,
    /// Random points used to compare expressions with variables.
    pub n_points: usize,
    /// Seed of the deterministic point generator.
    pub seed: u64,
    /// Accept `50%` against both `50` and `0.5`.
    pub percent_flexible: bool,
    /// Step budget for one comparison (parsing is budgeted separately by [`super::VerifyOptions`]).
    pub fuel: u64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            rel_tol: 1e-9,
            decimal_places: 6,
            n_points: 5,
            seed: 0x5eed_b71d_6e00_0001,
            percent_flexible: true,
            fuel: 100_000,
        }
    }
}

/// The comparison could not be completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    /// The step budget ran out before a decision.
    #[error("step budget exhausted while comparing")]
    OutOfFuel,
}

/// Whether two parsed answers are equivalent (`false` when the budget runs out).
pub fn answers_equivalent(a: &Answer, b: &Answer, opts: &CompareOptions) -> bool {
    try_answers_equivalent(a, b, opts).unwrap_or(false)
}

/// Like [`answers_equivalent`], but reports budget exhaustion.
///
/// # Errors
/// [`CompareError::OutOfFuel`] when the comparison needs more than `opts.fuel` steps.
pub fn try_answers_equivalent(a: &Answer, b: &Answer, opts: &CompareOptions) -> Result<bool, CompareError> {
    let mut fuel = Fuel::new(opts.fuel);
    equiv(a, b, opts, &mut fuel).map_err(|_| CompareError::OutOfFuel)
}

type R = Result<bool, Exhausted>;

fn lone_var(n: &Node) -> Option<&str> {
    match n {
        Node::Var(v) => Some(v),
        _ => None,
    }
}

pub(crate) fn equiv(a: &Answer, b: &Answer, o: &CompareOptions, fuel: &mut Fuel) -> R {
    fuel.step()?;
    use Answer as A;
    match (a, b) {
        (A::Expr(x), A::Expr(y)) => expr_equiv(&x.0, &y.0, o, fuel),
        (A::Equation(l, r), A::Expr(y)) | (A::Expr(y), A::Equation(l, r)) => {
            if lone_var(&l.0).is_some() {
                expr_equiv(&r.0, &y.0, o, fuel)
            } else if lone_var(&r.0).is_some() {
                expr_equiv(&l.0, &y.0, o, fuel)
            } else {
                Ok(false)
            }
        }
        (A::Equation(l1, r1), A::Equation(l2, r2)) => {
            if expr_equiv(&l1.0, &l2.0, o, fuel)? && expr_equiv(&r1.0, &r2.0, o, fuel)? {
                return Ok(true);
            }
            if expr_equiv(&l1.0, &r2.0, o, fuel)? && expr_equiv(&r1.0, &l2.0, o, fuel)? {
                return Ok(true);
            }
            equations_proportional(l1, r1, l2, r2, o, fuel)
        }
        (
            A::Interval { lo: a1, hi: b1, lo_closed: c1, hi_closed: d1 },
            A::Interval { lo: a2, hi: b2, lo_closed: c2, hi_closed: d2 },
        ) => Ok(c1 == c2 && d1 == d2 && expr_equiv(&a1.0, &a2.0, o, fuel)? && expr_equiv(&b1.0, &b2.0, o, fuel)?),
        (A::Interval { lo, hi, lo_closed: false, hi_closed: false }, A::Tuple(t))
        | (A::Tuple(t), A::Interval { lo, hi, lo_closed: false, hi_closed: false }) => match t.as_slice() {
            [A::Expr(x), A::Expr(y)] => Ok(expr_equiv(&lo.0, &x.0, o, fuel)? && expr_equiv(&hi.0, &y.0, o, fuel)?),
            _ => Ok(false),
        },
        (A::Tuple(x), A::Tuple(y)) | (A::List(x), A::Tuple(y)) | (A::Tuple(x), A::List(y)) => ordered(x, y, o, fuel),
        (A::List(x) | A::Set(x), A::List(y) | A::Set(y)) | (A::Union(x), A::Union(y)) => unordered(x, y, o, fuel),
        (A::Set(s), other) | (other, A::Set(s)) if s.len() == 1 && is_scalar(other) => {
            s.first().map_or(Ok(false), |x| equiv(x, other, o, fuel))
        }
        (A::Choice(c), A::Choice(d)) => Ok(c == d),
        (A::Choice(c), A::Expr(e)) | (A::Expr(e), A::Choice(c)) => {
            Ok(lone_var(&e.0).is_some_and(|v| v.len() == 1 && v.eq_ignore_ascii_case(&c.to_string())))
        }
        (A::Text(s), A::Text(t)) => Ok(s == t),
        _ => Ok(false),
    }
}

fn is_scalar(a: &Answer) -> bool {
    matches!(a, Answer::Expr(_) | Answer::Equation(..))
}

fn ordered(x: &[Answer], y: &[Answer], o: &CompareOptions, fuel: &mut Fuel) -> R {
    if x.len() != y.len() {
        return Ok(false);
    }
    for (a, b) in x.iter().zip(y) {
        if !equiv(a, b, o, fuel)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Set semantics: every element of each side has an equivalent on the other.
fn unordered(x: &[Answer], y: &[Answer], o: &CompareOptions, fuel: &mut Fuel) -> R {
    for (p, q) in [(x, y), (y, x)] {
        for a in p {
            let mut found = false;
            for b in q {
                if equiv(a, b, o, fuel)? {
                    found = true;
                    break;
                }
            }
            if !found {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn expr_equiv(x: &Node, y: &Node, o: &CompareOptions, fuel: &mut Fuel) -> R {
    if o.percent_flexible {
        match (x, y) {
            (Node::Percent(inner), other) | (other, Node::Percent(inner)) if !matches!(other, Node::Percent(_)) => {
                return Ok(num_equiv(x, y, o, fuel)? || num_equiv(inner, other, o, fuel)?);
            }
            _ => {}
        }
    }
    num_equiv(x, y, o, fuel)
}

fn collect_vars(n: &Node, out: &mut Vec<String>, fuel: &mut Fuel) -> Result<(), Exhausted> {
    let mut res = Ok(());
    n.walk(&mut |m| {
        if res.is_err() {
            return;
        }
        res = fuel.step();
        if let Node::Var(v) = m
            && !out.iter().any(|u| u == v)
        {
            out.push(v.clone());
        }
    });
    res
}

/// SplitMix64: a tiny deterministic generator for the sample points.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A positive rational point `p/q`, `p` in 1..=37, `q` in 2..=9 (never an integer
    /// that would hide differences such as `x` against `x^2` at 1).
    fn point(&mut self) -> Val {
        let p = i128::from((self.next() % 37) as u8) + 1;
        let q = i128::from((self.next() % 8) as u8) + 2;
        let p = if p % q == 0 { p + 1 } else { p };
        Rat::new(p, q).map_or(Val::Undef, Val::Q)
    }
}

fn sample_points(vars: &[String], o: &CompareOptions) -> Vec<Vec<(String, Val)>> {
    let mut rng = SplitMix(o.seed);
    (0..o.n_points.max(1)).map(|_| vars.iter().map(|v| (v.clone(), rng.point())).collect()).collect()
}

fn lookup(point: &[(String, Val)]) -> impl Fn(&str) -> Val + '_ {
    move |name: &str| point.iter().find(|(n, _)| n == name).map_or(Val::Undef, |(_, v)| *v)
}

/// A number literal, possibly negated: `(negative, node)` with `node` a `Num` or a `Big`.
fn literal(n: &Node) -> Option<(bool, &Node)> {
    match n {
        Node::Num(..) | Node::Big(..) => Some((false, n)),
        Node::Neg(inner) => literal(inner).map(|(neg, m)| (!neg, m)),
        _ => None,
    }
}

/// Two literals of which at least one is beyond `Rat` (a [`Node::Big`]): `Some(equal)`, decided
/// exactly (a `Big` never equals a `Num`: both are canonical). When they differ and either was
/// written with decimals, the rounding rule of [`vals_close`] still applies while both values are
/// finite `f64`s; otherwise different literals are different (`1e999999998` ≠ `1e999999999`, and
/// two 5000-digit integers that differ in their last digit). `None` when the rule does not apply.
fn big_literals_equal(x: &Node, y: &Node, o: &CompareOptions, fuel: &mut Fuel) -> Result<Option<bool>, Exhausted> {
    let (Some((nx, lx)), Some((ny, ly))) = (literal(x), literal(y)) else {
        return Ok(None);
    };
    if !matches!((lx, ly), (Node::Big(..), _) | (_, Node::Big(..))) {
        return Ok(None);
    }
    if let (Node::Big(a, _), Node::Big(b, _)) = (lx, ly) {
        fuel.spend(1 + (a.len() as u64) / 64)?;
        if nx == ny && a == b {
            return Ok(Some(true));
        }
    }
    if !(x.has_decimal() || y.has_decimal()) {
        return Ok(Some(false));
    }
    let none = |_: &str| Val::Undef;
    let (vx, vy) = (x.eval(&none, fuel)?, y.eval(&none, fuel)?);
    Ok(Some(matches!((vx, vy), (Val::Q(_) | Val::F(_), Val::Q(_) | Val::F(_))) && vals_close(vx, vy, true, o)))
}

fn num_equiv(x: &Node, y: &Node, o: &CompareOptions, fuel: &mut Fuel) -> R {
    if let Some(equal) = big_literals_equal(x, y, o, fuel)? {
        return Ok(equal);
    }
    let mut vars = Vec::new();
    collect_vars(x, &mut vars, fuel)?;
    collect_vars(y, &mut vars, fuel)?;
    let decimalish = x.has_decimal() || y.has_decimal();
    if vars.is_empty() {
        let none = |_: &str| Val::Undef;
        let vx = x.eval(&none, fuel)?;
        let vy = y.eval(&none, fuel)?;
        return Ok(vals_close(vx, vy, decimalish, o));
    }
    let mut defined = 0;
    for point in sample_points(&vars, o) {
        let env = lookup(&point);
        let vx = x.eval(&env, fuel)?;
        let vy = y.eval(&env, fuel)?;
        match (vx, vy) {
            (Val::Undef, Val::Undef) => continue,
            (Val::Undef, _) | (_, Val::Undef) => return Ok(false),
            _ => {}
        }
        if !vals_close(vx, vy, false, o) {
            return Ok(false);
        }
        defined += 1;
    }
    Ok(defined > 0)
}

/// `l1 - r1` is a constant non-zero multiple of `l2 - r2` at every sample point.
fn equations_proportional(l1: &Expr, r1: &Expr, l2: &Expr, r2: &Expr, o: &CompareOptions, fuel: &mut Fuel) -> R {
    let d1 = Node::Add(vec![l1.0.clone(), Node::Neg(Box::new(r1.0.clone()))]);
    let d2 = Node::Add(vec![l2.0.clone(), Node::Neg(Box::new(r2.0.clone()))]);
    let mut vars = Vec::new();
    collect_vars(&d1, &mut vars, fuel)?;
    collect_vars(&d2, &mut vars, fuel)?;
    if vars.is_empty() {
        return Ok(false);
    }
    let mut ratio: Option<Val> = None;
    for point in sample_points(&vars, o) {
        let env = lookup(&point);
        let a = d1.eval(&env, fuel)?;
        let b = d2.eval(&env, fuel)?;
        if matches!(a, Val::Undef | Val::Inf(_)) || matches!(b, Val::Undef | Val::Inf(_)) {
            return Ok(false);
        }
        let zero = |v: Val| v.to_f64().is_some_and(|f| f == 0.0);
        if zero(a) && zero(b) {
            continue;
        }
        if zero(b) || zero(a) {
            return Ok(false);
        }
        let r = a.mul(b.recip());
        match ratio {
            None => ratio = Some(r),
            Some(prev) => {
                if !vals_close(prev, r, false, o) {
                    return Ok(false);
                }
            }
        }
    }
    Ok(ratio.is_some())
}

/// Value equality: exact for two rationals (unless a decimal literal is involved),
/// relative tolerance otherwise, plus rounding to `decimal_places` when `decimalish`.
pub(crate) fn vals_close(a: Val, b: Val, decimalish: bool, o: &CompareOptions) -> bool {
    match (a, b) {
        (Val::Q(x), Val::Q(y)) if x == y => true,
        (Val::Q(_), Val::Q(_)) if !decimalish => false,
        (Val::Inf(p), Val::Inf(q)) => p == q,
        (Val::Undef, _) | (_, Val::Undef) | (Val::Inf(_), _) | (_, Val::Inf(_)) => false,
        _ => {
            let (Some(x), Some(y)) = (a.to_f64(), b.to_f64()) else {
                return false;
            };
            if x == y {
                return true;
            }
            let scale = x.abs().max(y.abs());
            if (x - y).abs() <= o.rel_tol * scale {
                return true;
            }
            if (x - y).abs() <= 1e-12 && scale < 1e-6 && !decimalish {
                return true;
            }
            if decimalish {
                let m = 10f64.powi(o.decimal_places);
                if scale * m < 4.5e15 {
                    return (x * m).round() == (y * m).round();
                }
            }
            false
        }
    }
}
