//! Numeric values used while evaluating parsed answers: exact rationals over
//! checked `i128`, with a fallback to `f64` whenever an operation overflows or
//! leaves the rationals (roots, `\pi`, transcendental functions).

use super::fuel::{Exhausted, Fuel};

/// Largest integer exponent applied exactly; larger exponents go through `f64`.
const MAX_EXACT_EXPONENT: u32 = 4096;
/// Largest index of a root taken exactly (`\sqrt[n]{…}`, `x^{p/q}`).
const MAX_EXACT_ROOT: u32 = 64;
/// Largest argument of an exact factorial (`33!` still fits in `i128`).
const MAX_FACTORIAL: i128 = 170;

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// An exact rational `n / d` with `d > 0` and `gcd(n, d) = 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rat {
    n: i128,
    d: i128,
}

impl Rat {
    pub(crate) const ZERO: Rat = Rat { n: 0, d: 1 };
    pub(crate) const ONE: Rat = Rat { n: 1, d: 1 };

    /// Builds a reduced rational; `None` when `d == 0` or normalisation overflows.
    pub(crate) fn new(n: i128, d: i128) -> Option<Rat> {
        if d == 0 {
            return None;
        }
        let (mut n, mut d) = (n, d);
        if d < 0 {
            n = n.checked_neg()?;
            d = d.checked_neg()?;
        }
        let g = gcd(n.unsigned_abs(), d.unsigned_abs());
        if g > 1 {
            let g = i128::try_from(g).ok()?;
            n /= g;
            d /= g;
        }
        Some(Rat { n, d })
    }

    pub(crate) fn int(n: i128) -> Rat {
        Rat { n, d: 1 }
    }

    pub(crate) fn is_integer(self) -> bool {
        self.d == 1
    }

    pub(crate) fn numer(self) -> i128 {
        self.n
    }

    pub(crate) fn to_f64(self) -> f64 {
        self.n as f64 / self.d as f64
    }

    fn add(self, o: Rat) -> Option<Rat> {
        let g = i128::try_from(gcd(self.d.unsigned_abs(), o.d.unsigned_abs())).ok()?;
        let l = (self.d / g).checked_mul(o.d)?;
        let a = self.n.checked_mul(l / self.d)?;
        let b = o.n.checked_mul(l / o.d)?;
        Rat::new(a.checked_add(b)?, l)
    }

    fn mul(self, o: Rat) -> Option<Rat> {
        // Cross-reduce first to keep magnitudes small.
        let g1 = i128::try_from(gcd(self.n.unsigned_abs(), o.d.unsigned_abs())).ok()?;
        let g2 = i128::try_from(gcd(o.n.unsigned_abs(), self.d.unsigned_abs())).ok()?;
        let (g1, g2) = (g1.max(1), g2.max(1));
        let n = (self.n / g1).checked_mul(o.n / g2)?;
        let d = (self.d / g2).checked_mul(o.d / g1)?;
        Rat::new(n, d)
    }

    fn neg(self) -> Option<Rat> {
        Some(Rat { n: self.n.checked_neg()?, d: self.d })
    }

    fn recip(self) -> Option<Rat> {
        Rat::new(self.d, self.n)
    }

    fn pow_u(self, mut e: u32) -> Option<Rat> {
        let mut base = self;
        let mut acc = Rat::ONE;
        while e > 0 {
            if e & 1 == 1 {
                acc = acc.mul(base)?;
            }
            e >>= 1;
            if e > 0 {
                base = base.mul(base)?;
            }
        }
        Some(acc)
    }

    /// Exact `k`-th root when both numerator and denominator are perfect powers.
    fn root(self, k: u32) -> Option<Rat> {
        if k == 0 {
            return None;
        }
        if self.n < 0 && k.is_multiple_of(2) {
            return None;
        }
        let neg = self.n < 0;
        let n = int_root(self.n.unsigned_abs(), k)?;
        let d = int_root(self.d.unsigned_abs(), k)?;
        let n = i128::try_from(n).ok()?;
        let d = i128::try_from(d).ok()?;
        Rat::new(if neg { -n } else { n }, d)
    }
}

/// Exact integer `k`-th root of `x`, if `x` is a perfect `k`-th power.
fn int_root(x: u128, k: u32) -> Option<u128> {
    if x < 2 || k == 1 {
        return Some(x);
    }
    let guess = (x as f64).powf(1.0 / f64::from(k)).round();
    if !guess.is_finite() || guess < 0.0 {
        return None;
    }
    let g = guess as u128;
    for c in [g.saturating_sub(1), g, g.saturating_add(1)] {
        if let Some(p) = checked_upow(c, k)
            && p == x
        {
            return Some(c);
        }
    }
    None
}

fn checked_upow(b: u128, k: u32) -> Option<u128> {
    let mut acc: u128 = 1;
    for _ in 0..k {
        acc = acc.checked_mul(b)?;
    }
    Some(acc)
}

/// A non-negative decimal literal too large or too precise for [`Rat`]: `digits × 10^exp`, with
/// neither leading nor trailing zeros in `digits` (so two equal values have equal fields). Long
/// numbers (`1e999999998`, a 5000-digit integer) are compared through it exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dec {
    digits: String,
    exp: i64,
}

impl Dec {
    /// `digits × 10^exp` in canonical form (`digits`: ASCII digits, possibly with leading or
    /// trailing zeros).
    pub(crate) fn new(digits: &str, exp: i64) -> Dec {
        let digits = digits.trim_start_matches('0');
        let kept = digits.trim_end_matches('0');
        if kept.is_empty() {
            return Dec { digits: String::new(), exp: 0 };
        }
        let shift = i64::try_from(digits.len() - kept.len()).unwrap_or(i64::MAX);
        Dec { digits: kept.to_string(), exp: exp.saturating_add(shift) }
    }

    /// Number of significant digits.
    pub(crate) fn len(&self) -> usize {
        self.digits.len()
    }

    /// The exact rational, when numerator and denominator fit in `i128`.
    pub(crate) fn to_rat(&self) -> Option<Rat> {
        let n: i128 = if self.digits.is_empty() { 0 } else { self.digits.parse().ok()? };
        let scale = 10i128.checked_pow(u32::try_from(self.exp.unsigned_abs()).ok()?)?;
        if self.exp >= 0 { Rat::new(n.checked_mul(scale)?, 1) } else { Rat::new(n, scale) }
    }

    /// The nearest `f64` (infinite when the value is beyond `f64`'s range, 0 below it).
    pub(crate) fn to_f64(&self) -> f64 {
        if self.digits.is_empty() {
            return 0.0;
        }
        format!("{}e{}", self.digits, self.exp).parse().unwrap_or(f64::NAN)
    }
}

/// A value: exact rational, finite float, signed infinity, or undefined.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Val {
    Q(Rat),
    F(f64),
    /// `true` for `+\infty`.
    Inf(bool),
    Undef,
}

impl Val {
    pub(crate) fn float(x: f64) -> Val {
        if x.is_finite() { Val::F(x) } else { Val::Undef }
    }

    pub(crate) fn to_f64(self) -> Option<f64> {
        match self {
            Val::Q(r) => Some(r.to_f64()),
            Val::F(x) => Some(x),
            _ => None,
        }
    }

    fn is_zero(self) -> bool {
        match self {
            Val::Q(r) => r.n == 0,
            Val::F(x) => x == 0.0,
            _ => false,
        }
    }

    fn sign_positive(self) -> Option<bool> {
        match self {
            Val::Q(r) => Some(r.n > 0),
            Val::F(x) => Some(x > 0.0),
            Val::Inf(p) => Some(p),
            Val::Undef => None,
        }
    }

    pub(crate) fn add(self, o: Val) -> Val {
        match (self, o) {
            (Val::Undef, _) | (_, Val::Undef) => Val::Undef,
            (Val::Inf(a), Val::Inf(b)) => {
                if a == b {
                    Val::Inf(a)
                } else {
                    Val::Undef
                }
            }
            (Val::Inf(a), _) | (_, Val::Inf(a)) => Val::Inf(a),
            (Val::Q(a), Val::Q(b)) => match a.add(b) {
                Some(r) => Val::Q(r),
                None => Val::float(a.to_f64() + b.to_f64()),
            },
            (a, b) => match (a.to_f64(), b.to_f64()) {
                (Some(x), Some(y)) => Val::float(x + y),
                _ => Val::Undef,
            },
        }
    }

    pub(crate) fn neg(self) -> Val {
        match self {
            Val::Q(r) => match r.neg() {
                Some(r) => Val::Q(r),
                None => Val::float(-r.to_f64()),
            },
            Val::F(x) => Val::F(-x),
            Val::Inf(p) => Val::Inf(!p),
            Val::Undef => Val::Undef,
        }
    }

    pub(crate) fn mul(self, o: Val) -> Val {
        match (self, o) {
            (Val::Undef, _) | (_, Val::Undef) => Val::Undef,
            (Val::Inf(_), x) | (x, Val::Inf(_)) if x.is_zero() => Val::Undef,
            (Val::Inf(_), _) | (_, Val::Inf(_)) => match (self.sign_positive(), o.sign_positive()) {
                (Some(a), Some(b)) => Val::Inf(a == b),
                _ => Val::Undef,
            },
            (Val::Q(a), Val::Q(b)) => match a.mul(b) {
                Some(r) => Val::Q(r),
                None => Val::float(a.to_f64() * b.to_f64()),
            },
            (a, b) => match (a.to_f64(), b.to_f64()) {
                (Some(x), Some(y)) => Val::float(x * y),
                _ => Val::Undef,
            },
        }
    }

    pub(crate) fn recip(self) -> Val {
        match self {
            Val::Q(r) => match r.recip() {
                Some(r) => Val::Q(r),
                None => Val::Undef,
            },
            Val::F(x) => {
                if x == 0.0 {
                    Val::Undef
                } else {
                    Val::float(1.0 / x)
                }
            }
            Val::Inf(_) => Val::Q(Rat::ZERO),
            Val::Undef => Val::Undef,
        }
    }

    /// `self ^ e`, exact when the base is rational and the exponent is a small
    /// rational whose root is exact; capped exponents otherwise go through `f64`.
    pub(crate) fn pow(self, e: Val) -> Val {
        match (self, e) {
            (Val::Q(b), Val::Q(e)) => {
                if let Some(v) = exact_pow(b, e) {
                    return Val::Q(v);
                }
                float_pow(b.to_f64(), e.to_f64())
            }
            (Val::Inf(p), Val::Q(e)) if e.is_integer() => {
                if e.n == 0 {
                    Val::Q(Rat::ONE)
                } else if e.n < 0 {
                    Val::Q(Rat::ZERO)
                } else {
                    Val::Inf(p || e.n.unsigned_abs().is_multiple_of(2))
                }
            }
            (a, b) => match (a.to_f64(), b.to_f64()) {
                (Some(x), Some(y)) => float_pow(x, y),
                _ => Val::Undef,
            },
        }
    }

    /// Square root (exact for perfect squares).
    #[cfg(test)]
    pub(crate) fn sqrt(self) -> Val {
        self.root(2)
    }

    /// `k`-th root for small integer `k`.
    pub(crate) fn root(self, k: u32) -> Val {
        match self {
            Val::Q(r) => {
                if let Some(v) = r.root(k) {
                    return Val::Q(v);
                }
                let x = r.to_f64();
                root_f64(x, k)
            }
            Val::F(x) => root_f64(x, k),
            Val::Inf(true) => Val::Inf(true),
            _ => Val::Undef,
        }
    }

    /// `n!` for non-negative integers up to 170.
    pub(crate) fn factorial(self, fuel: &mut Fuel) -> Result<Val, Exhausted> {
        let n = match self {
            Val::Q(r) if r.is_integer() && r.n >= 0 && r.n <= MAX_FACTORIAL => r.n,
            Val::F(x) if x >= 0.0 && x.fract() == 0.0 && x <= MAX_FACTORIAL as f64 => x as i128,
            _ => return Ok(Val::Undef),
        };
        fuel.spend(n.unsigned_abs() as u64)?;
        let mut acc = Val::Q(Rat::ONE);
        for k in 2..=n {
            acc = acc.mul(Val::Q(Rat::int(k)));
        }
        Ok(acc)
    }

    /// Applies a real function in floating point (exact where trivially known).
    pub(crate) fn apply_f64(self, f: fn(f64) -> f64) -> Val {
        match self.to_f64() {
            Some(x) => Val::float(f(x)),
            None => Val::Undef,
        }
    }
}

fn root_f64(x: f64, k: u32) -> Val {
    if k == 0 {
        return Val::Undef;
    }
    if x < 0.0 {
        if !k.is_multiple_of(2) {
            return Val::float(-(-x).powf(1.0 / f64::from(k)));
        }
        return Val::Undef;
    }
    Val::float(x.powf(1.0 / f64::from(k)))
}

fn exact_pow(b: Rat, e: Rat) -> Option<Rat> {
    let num = u32::try_from(e.n.unsigned_abs()).ok()?;
    let den = u32::try_from(e.d).ok()?;
    if den > MAX_EXACT_ROOT {
        return None;
    }
    if b.n == 0 {
        return if e.n > 0 { Some(Rat::ZERO) } else { None };
    }
    if b.n.abs() == 1 && b.d == 1 && den == 1 {
        let r = if b.n < 0 && !num.is_multiple_of(2) { -1 } else { 1 };
        return Some(Rat::int(r));
    }
    if num > MAX_EXACT_EXPONENT {
        return None;
    }
    let rooted = if den == 1 { b } else { b.root(den)? };
    let p = rooted.pow_u(num)?;
    if e.n < 0 { p.recip() } else { Some(p) }
}

fn float_pow(x: f64, y: f64) -> Val {
    if x < 0.0 && y.fract() != 0.0 {
        // Odd roots of negative numbers: (-8)^(1/3) = -2.
        let inv = 1.0 / y;
        if inv.fract() == 0.0 && (inv as i64) % 2 != 0 {
            return Val::float(-(-x).powf(y));
        }
        return Val::Undef;
    }
    if x == 0.0 && y < 0.0 {
        return Val::Undef;
    }
    Val::float(x.powf(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rational_arithmetic_is_exact_and_reduced() {
        let a = Rat::new(2, 4).unwrap();
        assert_eq!(a, Rat::new(1, 2).unwrap());
        let s = Val::Q(a).add(Val::Q(Rat::new(1, 3).unwrap()));
        assert_eq!(s, Val::Q(Rat::new(5, 6).unwrap()));
        assert_eq!(Val::Q(Rat::int(4)).sqrt(), Val::Q(Rat::int(2)));
        assert_eq!(Val::Q(Rat::int(8)).pow(Val::Q(Rat::new(-1, 3).unwrap())), Val::Q(Rat::new(1, 2).unwrap()));
    }

    #[test]
    fn decimals_are_canonical() {
        assert_eq!(Dec::new("00120", 3), Dec::new("12", 4));
        assert_eq!(Dec::new("000", 7), Dec::new("", 0));
        assert_ne!(Dec::new("1", 999_999_998), Dec::new("1", 999_999_999));
        assert_eq!(Dec::new("25", -4).to_rat(), Rat::new(1, 400));
        assert_eq!(Dec::new("1", 40).to_rat(), None);
        assert_eq!(Dec::new("1", 999_999_998).to_f64(), f64::INFINITY);
        assert_eq!(Dec::new("15", 2).to_f64(), 1500.0);
    }

    #[test]
    fn overflow_falls_back_to_float() {
        let big = Val::Q(Rat::int(i128::MAX));
        assert!(matches!(big.add(big), Val::F(_)));
        let huge = Val::Q(Rat::int(10)).pow(Val::Q(Rat::int(10_000_000_000)));
        assert_eq!(huge, Val::Undef);
    }
}
