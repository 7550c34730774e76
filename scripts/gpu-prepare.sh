#!/usr/bin/env bash
# Builds and packs what scripts/gpu-session.sh needs on the GPU machine, within the device tool's
# 64 MiB per call (tracked files + untracked files git does not ignore + the carried folders):
#   .gpu/        gpu.xz (the CUDA binary), gsm.tar.xz (GSM-Symbolic), smollm2.part-b and
#                smollm2.sha256 (the second part of the SmolLM2 GGUF), cache/ (cubecl's autotune
#                and kernel database and the CUDA JIT cache, from an earlier session, if any)
#   .gpu-model/  smollm2.part-a (the first part of the GGUF: 98 MB do not fit one call)
# Run it in the checkout the device tool sends (the lead's), from its root:
#   scripts/gpu-prepare.sh                    build (FEATURES, default cuda-fusion) and pack
#   scripts/gpu-prepare.sh --no-build         pack only (.gpu/gpu.xz already built)
#   scripts/gpu-prepare.sh --cache FILE       also unpack a session's cubecl-cache.tar.xz into .gpu/
# Needs ../shared/tools/cuda-build.sh, ../shared/data/gsm_symbolic and the GGUF of
# bridge-models/scripts/fetch_models.sh (GGUF=path to override). Then two device calls, the second
# within the 30 s the machine stays warm (docs/results/gpu.md, "How to run the session").
set -euo pipefail
build=1; cache=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --cache) cache="$2"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
gguf="${GGUF:-$HOME/.cache/bridge-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
data="${DATA:-../shared/data/gsm_symbolic}"
[ -f "$gguf" ] || { echo "no GGUF at $gguf: run bridge-models/scripts/fetch_models.sh" >&2; exit 1; }
[ -d "$data" ] || { echo "no GSM-Symbolic at $data" >&2; exit 1; }
if [ $build = 1 ]; then
  ../shared/tools/cuda-build.sh --example gpu --features "${FEATURES:-cuda-fusion}"
fi
[ -f .gpu/gpu.xz ] || { echo "no .gpu/gpu.xz: build first" >&2; exit 1; }
for d in /.gpu/ /.gpu-model/; do
  grep -qx "$d" "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null || echo "$d" >> "$(git rev-parse --git-common-dir)/info/exclude"
done
mkdir -p .gpu/cache .gpu-model
if [ -n "$cache" ]; then
  rm -rf .gpu/cache && tar -xJf "$cache" -C .gpu && echo "cache unpacked: $(du -sh .gpu/cache | cut -f1)"
fi
rm -f .gpu/smollm2.part-* .gpu-model/smollm2.part-* .gpu/gsm.tar.xz
tar -cJf .gpu/gsm.tar.xz -C "$(dirname "$data")" "$(basename "$data")"
# What travels besides the carried folders: tracked and untracked-not-ignored files.
tree=$(git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
limit=$(( 64 * 1024 * 1024 - 1000000 ))   # 1 MB of margin
# Call 1 (.gpu-model) takes as much of the GGUF as fits; call 2 (.gpu) the rest.
part_a=$(( limit - tree ))
size=$(stat -c %s "$gguf")
[ "$part_a" -lt "$size" ] || part_a=$(( size / 2 ))
head -c "$part_a" "$gguf" > .gpu-model/smollm2.part-a
tail -c +"$(( part_a + 1 ))" "$gguf" > .gpu/smollm2.part-b
sha256sum "$gguf" | sed 's#  .*#  SmolLM2-135M-Instruct.Q4_1.gguf#' > .gpu/smollm2.sha256
call1=$(( tree + $(du -cb .gpu-model | tail -1 | cut -f1) ))
call2=$(( tree + $(du -cb .gpu | tail -1 | cut -f1) ))
echo "working tree $tree bytes; call 1 (carry .gpu-model) $call1 bytes; call 2 (carry .gpu) $call2 bytes; limit $(( limit + 1000000 ))"
if [ "$call2" -gt "$limit" ]; then
  echo "call 2 is over the limit: the cache ($(du -sb .gpu/cache | cut -f1) bytes) or the binary is too large" >&2
  exit 1
fi
