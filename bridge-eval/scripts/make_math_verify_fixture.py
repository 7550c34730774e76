#!/usr/bin/env python3
"""Judge held-out (prediction, gold) bare-answer pairs with Python `math_verify`
and write bridge-eval/fixtures/math_verify_cases.jsonl for the Rust agreement test.

The pairs are generated here from a fixed seed, independently of the Rust unit
table (fixtures/verify_cases.txt): other values, and forms mixed at random.

Usage (from the repository root, with math-verify installed outside the repo):
    python3 -m venv /tmp/mvenv && /tmp/mvenv/bin/pip install math-verify
    /tmp/mvenv/bin/python bridge-eval/scripts/make_math_verify_fixture.py

The committed fixture was produced with math-verify 0.9.0 (latex2sympy2_extended
1.11.0, sympy 1.14.0). Known, intended disagreements: math_verify does not accept
an inequality prediction (`x \\ge 6`) against an interval gold (`[6,\\infty)`);
this verifier does.

Each output line: {"gold": G, "prediction": P, "category": C, "math_verify": bool}.
The gold is parsed as `$G$`, the prediction as `\\boxed{P}` (the Rust test boxes
the prediction the same way).
"""

import json
import math
import os
import random
import sys
from fractions import Fraction

from math_verify import parse, verify

SEED = 20250607
rng = random.Random(SEED)
pairs = []  # (category, gold, prediction)


def add(cat, gold, pred):
    pairs.append((cat, gold, pred))


def frac_tex(f: Fraction) -> str:
    if f.denominator == 1:
        return str(f.numerator)
    sign = "-" if f < 0 else ""
    return f"{sign}\\frac{{{abs(f.numerator)}}}{{{f.denominator}}}"


def with_commas(n: int) -> str:
    return f"{n:,}"


# Integers: equal in other spellings, and near misses.
for _ in range(45):
    n = rng.randint(-5000, 250000)
    form = rng.choice(["same", "commas", "dollar", "units", "dotzero", "off", "swap", "scale", "neg"])
    if form == "same":
        add("int", str(n), str(n))
    elif form == "commas":
        add("int", str(n), with_commas(n))
    elif form == "dollar":
        add("int", str(abs(n)), f"\\${abs(n)}")
    elif form == "units":
        add("int", str(n), f"{n}\\text{{ {rng.choice(['meters', 'kg', 'people', 'km'])}}}")
    elif form == "dotzero":
        add("int", str(n), f"{n}.0")
    elif form == "off":
        add("int", str(n), str(n + rng.choice([-1, 1, 10, -100])))
    elif form == "swap":
        s = str(abs(n))
        t = s[::-1].lstrip("0") or "0"
        add("int", str(abs(n)), t)
    elif form == "scale":
        add("int", str(n), str(n * 10))
    else:
        add("int", str(n), str(-n))

# Terminating decimals against fractions, and truncations.
for _ in range(40):
    d = rng.choice([2, 4, 5, 8, 10, 20, 25, 40])
    a = rng.randint(1, 99)
    f = Fraction(a, d)
    dec = f"{float(f):.6f}".rstrip("0").rstrip(".")
    form = rng.choice(["dec_vs_frac", "frac_vs_dec", "shift", "trunc"])
    if form == "dec_vs_frac":
        add("decimal", dec, frac_tex(f))
    elif form == "frac_vs_dec":
        add("decimal", frac_tex(f), dec)
    elif form == "shift":
        add("decimal", dec, f"{float(f) * 10:g}")
    else:
        add("decimal", frac_tex(Fraction(a, 3 * d + 1)), f"{float(Fraction(a, 3 * d + 1)):.2f}")

# Fractions: unreduced, reciprocal, sign placement, slash form.
for _ in range(45):
    p, q = rng.randint(1, 40), rng.randint(2, 41)
    if p == q:
        q += 1
    f = Fraction(p, q)
    k = rng.randint(2, 6)
    form = rng.choice(["unreduced", "recip", "slash", "neg", "dfrac", "plusone"])
    if form == "unreduced":
        add("fraction", frac_tex(f), f"\\frac{{{f.numerator * k}}}{{{f.denominator * k}}}")
    elif form == "recip":
        if f.numerator == 1 and f.denominator == 1:
            continue
        add("fraction", frac_tex(f), frac_tex(1 / f))
    elif form == "slash":
        add("fraction", frac_tex(f), f"{f.numerator}/{f.denominator}")
    elif form == "neg":
        add("fraction", frac_tex(-f), f"\\frac{{-{f.numerator}}}{{{f.denominator}}}")
    elif form == "dfrac":
        add("fraction", frac_tex(f), f"\\dfrac{{{f.numerator}}}{{{f.denominator}}}")
    else:
        add("fraction", frac_tex(f), frac_tex(f + 1))

# Mixed numbers.
for _ in range(10):
    w, p, q = rng.randint(1, 9), rng.randint(1, 6), rng.randint(7, 11)
    f = w + Fraction(p, q)
    if rng.random() < 0.7:
        add("mixed", frac_tex(f), f"{w}\\frac{{{p}}}{{{q}}}")
    else:
        add("mixed", frac_tex(f), f"{w}\\frac{{{q}}}{{{p}}}")

# Radicals.
squarefree = [2, 3, 5, 6, 7, 10, 11, 13, 14, 15]
for _ in range(35):
    k, m = rng.randint(2, 9), rng.choice(squarefree)
    form = rng.choice(["pull", "push", "wrong", "over", "approx"])
    if form == "pull":
        add("radical", f"{k}\\sqrt{{{m}}}", f"\\sqrt{{{k * k * m}}}")
    elif form == "push":
        add("radical", f"\\sqrt{{{k * k * m}}}", f"{k}\\sqrt{{{m}}}")
    elif form == "wrong":
        m2 = rng.choice([x for x in squarefree if x != m])
        add("radical", f"{k}\\sqrt{{{m}}}", f"{k}\\sqrt{{{m2}}}")
    elif form == "over":
        add("radical", f"\\frac{{{k}\\sqrt{{{m}}}}}{{{k + 1}}}", f"\\frac{{{k}}}{{{k + 1}}}\\sqrt{{{m}}}")
    else:
        add("radical", f"\\sqrt{{{m}}}", f"{math.sqrt(m):.{rng.choice([2, 3, 8])}f}")

# Multiples of pi.
for _ in range(25):
    a, b = rng.randint(1, 12), rng.randint(2, 7)
    form = rng.choice(["frac_pi", "pi_over", "wrong", "nopi"])
    if form == "frac_pi":
        add("pi", f"\\frac{{{a}\\pi}}{{{b}}}", f"\\frac{{{a}}}{{{b}}}\\pi")
    elif form == "pi_over":
        add("pi", f"\\frac{{{a}\\pi}}{{{b}}}", f"{a}\\pi/{b}")
    elif form == "wrong":
        add("pi", f"\\frac{{{a}\\pi}}{{{b}}}", f"\\frac{{{b}\\pi}}{{{a}}}" if a != b else f"{a + 1}\\pi")
    else:
        add("pi", f"{a}\\pi", str(a))

# Powers.
for _ in range(25):
    base, e = rng.randint(2, 9), rng.randint(2, 8)
    form = rng.choice(["value", "wrong", "neg_exp", "swap"])
    if form == "value":
        add("power", f"{base}^{{{e}}}", str(base ** e))
    elif form == "wrong":
        add("power", f"{base}^{{{e}}}", str(base ** e + 1))
    elif form == "neg_exp":
        add("power", f"{base}^{{-{e}}}", frac_tex(Fraction(1, base ** e)))
    else:
        if base == e:
            continue
        add("power", f"{base}^{{{e}}}", f"{e}^{{{base}}}")

# Percentages.
for _ in range(20):
    p = rng.randint(1, 99)
    form = rng.choice(["bare", "frac", "wrong"])
    if form == "bare":
        add("percent", str(p), f"{p}\\%")
    elif form == "frac":
        add("percent", f"{p}\\%", f"{p / 100:g}")
    else:
        add("percent", f"{p}\\%", f"{p + 1}")

# Intervals.
for _ in range(30):
    lo = rng.randint(-20, 10)
    hi = lo + rng.randint(1, 15)
    lb, rb = rng.choice(["[", "("]), rng.choice(["]", ")"])
    if lb == "(" and rb == ")":
        lb = "["  # keep it unambiguous (no pair/interval overlap)
    g = f"{lb}{lo},{hi}{rb}"
    form = rng.choice(["same", "flip_left", "flip_right", "shift", "inf"])
    if form == "same":
        add("interval", g, f"{lb}{lo}, {hi}{rb}")
    elif form == "flip_left":
        add("interval", g, f"{'(' if lb == '[' else '['}{lo},{hi}{rb}")
    elif form == "flip_right":
        add("interval", g, f"{lb}{lo},{hi}{']' if rb == ')' else ')'}")
    elif form == "shift":
        add("interval", g, f"{lb}{lo},{hi + 1}{rb}")
    else:
        add("interval", f"[{lo},\\infty)", f"[{lo}, \\infty)")

# Tuples (ordered).
for _ in range(25):
    n = rng.choice([2, 3])
    xs = [rng.randint(-9, 9) for _ in range(n)]
    g = "(" + ",".join(map(str, xs)) + ")"
    form = rng.choice(["same", "reversed", "changed"])
    if form == "same":
        add("tuple", g, "(" + ", ".join(map(str, xs)) + ")")
    elif form == "reversed":
        if xs == xs[::-1]:
            continue
        add("tuple", g, "(" + ",".join(map(str, xs[::-1])) + ")")
    else:
        ys = list(xs)
        ys[-1] += 1
        add("tuple", g, "(" + ",".join(map(str, ys)) + ")")

# Sets (unordered).
for _ in range(25):
    xs = rng.sample(range(-12, 13), rng.choice([2, 3, 4]))
    g = "\\{" + ",".join(map(str, xs)) + "\\}"
    form = rng.choice(["shuffled", "missing", "changed"])
    if form == "shuffled":
        ys = list(xs)
        rng.shuffle(ys)
        add("set", g, "\\{" + ", ".join(map(str, ys)) + "\\}")
    elif form == "missing":
        add("set", g, "\\{" + ",".join(map(str, xs[:-1])) + "\\}")
    else:
        add("set", g, "\\{" + ",".join(map(str, xs[:-1] + [xs[-1] + 100])) + "\\}")

# Polynomials: factored against expanded.
for _ in range(35):
    a, b, c, d = (rng.choice([1, 2, 3, 4, 5]), rng.randint(-9, 9), rng.choice([1, 2, 3]), rng.randint(-9, 9))
    var = rng.choice(["x", "t", "n"])

    def lin(p, q):
        pp = "" if p == 1 else str(p)
        if q == 0:
            return f"{pp}{var}"
        return f"{pp}{var}{'+' if q > 0 else '-'}{abs(q)}"

    A, B, C = a * c, a * d + b * c, b * d
    expanded = f"{A}{var}^2" + (f"{'+' if B >= 0 else '-'}{abs(B)}{var}" if B else "") + (
        f"{'+' if C >= 0 else '-'}{abs(C)}" if C else "")
    form = rng.choice(["factored", "wrong_sign", "reorder"])
    if form == "factored":
        add("polynomial", expanded, f"({lin(a, b)})({lin(c, d)})")
    elif form == "wrong_sign":
        if b == 0:
            continue
        add("polynomial", expanded, f"({lin(a, -b)})({lin(c, d)})")
    else:
        add("polynomial", f"({lin(a, b)})({lin(c, d)})", f"({lin(c, d)})({lin(a, b)})")

# Equations with a variable on the left.
for _ in range(15):
    v = rng.choice(["x", "y", "k", "m"])
    val = rng.randint(-30, 30)
    form = rng.choice(["eq_vs_bare", "bare_vs_eq", "wrong"])
    if form == "eq_vs_bare":
        add("equation", f"{v}={val}", str(val))
    elif form == "bare_vs_eq":
        add("equation", str(val), f"{v} = {val}")
    else:
        add("equation", f"{v}={val}", f"{v}={val + 2}")

# Multiple choice.
for _ in range(15):
    L = rng.choice("ABCDE")
    form = rng.choice(["paren", "text", "other"])
    if form == "paren":
        add("choice", L, f"({L})")
    elif form == "text":
        add("choice", f"({L})", f"\\text{{({L})}}")
    else:
        add("choice", L, rng.choice([x for x in "ABCDE" if x != L]))

# Yes / no.
for _ in range(10):
    w = rng.choice(["yes", "no"])
    form = rng.choice(["case", "text", "opposite"])
    if form == "case":
        add("text", w, w.capitalize())
    elif form == "text":
        add("text", f"\\text{{{w}}}", w.upper())
    else:
        add("text", w, "no" if w == "yes" else "yes")

# Inequalities against intervals.
for _ in range(15):
    a = rng.randint(-15, 15)
    op, iv = rng.choice([(">", f"({a},\\infty)"), ("\\ge", f"[{a},\\infty)"),
                         ("<", f"(-\\infty,{a})"), ("\\le", f"(-\\infty,{a}]")])
    if rng.random() < 0.7:
        add("inequality", iv, f"x {op} {a}")
    else:
        add("inequality", iv, f"x {op} {a + 1}")

# Unions of intervals.
for _ in range(12):
    a = rng.randint(-10, 0)
    b = a + rng.randint(1, 8)
    g = f"(-\\infty,{a})\\cup({b},\\infty)"
    form = rng.choice(["swapped", "closed", "same"])
    if form == "swapped":
        add("union", g, f"({b},\\infty)\\cup(-\\infty,{a})")
    elif form == "closed":
        add("union", g, f"(-\\infty,{a}]\\cup({b},\\infty)")
    else:
        add("union", g, f"(-\\infty, {a}) \\cup ({b}, \\infty)")

# Scientific notation.
for _ in range(12):
    m, e = rng.randint(11, 99), rng.randint(2, 9)
    val = m * 10 ** (e - 1)
    if rng.random() < 0.7:
        add("scientific", str(val), f"{m / 10:g} \\times 10^{{{e}}}")
    else:
        add("scientific", str(val), f"{m / 10:g} \\times 10^{{{e + 1}}}")

# Repeating decimals against fractions (6 places, fewer places).
for _ in range(15):
    q = rng.choice([3, 6, 7, 9, 11, 12, 13])
    p_ = rng.randint(1, q - 1)
    f = Fraction(p_, q)
    if f.denominator in (1, 2, 4, 5, 8, 10):
        continue
    places = rng.choice([6, 6, 3, 8])
    add("repeating", frac_tex(f), f"{float(f):.{places}f}")

# Nested fractions and sums of fractions.
for _ in range(15):
    a, b, c, d = (rng.randint(1, 9) for _ in range(4))
    total = Fraction(a, b + 1) + Fraction(c, d + 1)
    if rng.random() < 0.7:
        add("fraction_sum", frac_tex(total), f"\\frac{{{a}}}{{{b + 1}}}+\\frac{{{c}}}{{{d + 1}}}")
    else:
        add("fraction_sum", frac_tex(total), f"\\frac{{{a + c}}}{{{b + d + 2}}}")


def judge(gold: str, pred: str):
    try:
        g = parse(f"${gold}$")
        p = parse(f"\\boxed{{{pred}}}")
        return bool(verify(g, p)), None
    except Exception as e:  # noqa: BLE001 - record and go on
        return False, repr(e)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "..", "fixtures", "math_verify_cases.jsonl")
    seen = set()
    n = n_true = 0
    with open(out, "w", encoding="utf-8") as fh:
        for cat, gold, pred in pairs:
            if (gold, pred) in seen:
                continue
            seen.add((gold, pred))
            ok, err = judge(gold, pred)
            rec = {"gold": gold, "prediction": pred, "category": cat, "math_verify": ok}
            if err:
                rec["error"] = err
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
            n_true += ok
    print(f"wrote {n} pairs ({n_true} judged equivalent) to {os.path.normpath(out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
