#!/usr/bin/env bash
# Builds and packs what scripts/gpu-session.sh needs on the GPU machine (see that script):
# .gpu/ (phase 1: binary, data, first half of the SmolLM2 GGUF) and .gpu2/ (phase 2: second half).
# Needs: ../shared/tools/cuda-build.sh, ../shared/data/gsm_symbolic and the GGUF from
# bridge-models/scripts/fetch_models.sh.
# FEATURES=cuda-fusion builds with burn's kernel fusion (docs/results/gpu.md §5).
set -euo pipefail
gguf="${GGUF:-$HOME/.cache/bridge-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
../shared/tools/cuda-build.sh --example gpu --features "${FEATURES:-cuda}"
grep -qx '/.gpu2/' .git/info/exclude || echo '/.gpu2/' >> .git/info/exclude
mkdir -p .gpu .gpu2
rm -f .gpu/smollm2.part-a .gpu/quick.tar.xz .gpu2/*
tar -cJf .gpu/gsm.tar.xz -C ../shared/data gsm_symbolic
# A call carries at most 64 MiB with the working tree: fill phase 1 up to ~63 MiB in all.
tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
used=$(du -cb .gpu | tail -1 | cut -f1)
room=$(( 66000000 - tree - used ))
head -c "$room" "$gguf" > .gpu/smollm2.part-a
tail -c +"$(( room + 1 ))" "$gguf" > .gpu2/smollm2.part-b
sha256sum "$gguf" | sed 's#  .*#  models/SmolLM2-135M-Instruct.Q4_1.gguf#' > .gpu2/smollm2.sha256
du -cb .gpu .gpu2; echo "tree $tree bytes"
