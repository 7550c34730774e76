#!/usr/bin/env python3
"""Judge scientific-notation pairs with Python `math_verify` and write
bridge-eval/fixtures/math_verify_scientific.jsonl for the Rust test
`scientific_notation_against_math_verify` (tests/verify.rs).

Usage (from the repository root, with math-verify installed outside the repo):
    python3 -m venv /tmp/mvenv && /tmp/mvenv/bin/pip install math-verify
    /tmp/mvenv/bin/python bridge-eval/scripts/make_scientific_fixture.py

The committed fixture was produced with math-verify 0.9.0 (latex2sympy2_extended 1.11.0,
sympy 1.14.0), with the protocol of make_math_verify_fixture.py: the gold parsed as `$G$`, the
prediction as `\\boxed{P}`. Each pair runs in its own process with a 20 s limit; `math_verify`
is `null` when it did not finish (it does not finish on `1E999999998`).

Each line: {"gold", "prediction", "math_verify": bool|null, "ours": bool}. `ours` is this
verifier's intended verdict. They differ on purpose where `math_verify` reads a lower-case `e`
glued to digits as Euler's constant (`$1e5$` = 1·e·5, `3e` = 3·e): a model writing `1e5` means
10^5, and a number glued to a lone `e` is kept as text.
"""

import json
import subprocess
import sys

# (gold, prediction, ours)
CASES = [
    ("100000", "1E5", True),
    ("100000", "1e5", True),
    ("100000", "1e+5", True),
    ("0.0025", "2.5E-3", True),
    ("0.0025", "2.5e-3", True),
    ("1500", "1.5E3", True),
    ("1500", "1.5E+3", True),
    ("1500", "15E2", True),
    ("0.002", "2E-3", True),
    ("-100000", "-1E5", True),
    ("100000", "-1E5", False),
    ("100000", "1.0E5", True),
    ("5", "5E0", True),
    ("\\frac{1}{400}", "2.5E-3", True),
    ("10^{100}", "1E100", True),
    ("1E101", "1E100", False),
    ("1E401", "1E400", False),
    ("1E400", "1E400", True),
    ("100000000000000000000", "1E20", True),
    ("100000000000000000001", "1E20", False),
    ("0", "1E-7", False),
    ("0", "1E-40", False),
    ("100000x", "1E5x", True),
    ("13.591409142295225", "1e5", False),
    ("1E999999999", "1E999999998", False),
    ("1E999999998", "1E999999998", True),
    ("3e", "3e", True),
    ("3", "3e", False),
    ("8.154845485377136", "3e", False),
    ("2.718281828", "e", True),
    ("e^{2}", "e^2", True),
]

CHILD = r"""
import json, sys
from math_verify import parse, verify
g, p = sys.argv[1], sys.argv[2]
print(json.dumps(verify(parse(f"${g}$"), parse(f"\\boxed{{{p}}}"))))
"""


def judge(gold, pred):
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, gold, pred], capture_output=True, text=True, timeout=20
        )
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, IndexError, ValueError):
        return None


def main():
    path = "bridge-eval/fixtures/math_verify_scientific.jsonl"
    with open(path, "w") as f:
        for gold, pred, ours in CASES:
            rec = {"gold": gold, "prediction": pred, "math_verify": judge(gold, pred), "ours": ours}
            f.write(json.dumps(rec) + "\n")
            print(rec)


if __name__ == "__main__":
    main()
