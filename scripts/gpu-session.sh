#!/usr/bin/env bash
# The GPU session behind docs/results/gpu.md, as run on the device machine (no Rust toolchain, no
# network, at most 64 MiB of files per call). Prepared here with scripts/gpu-prepare.sh, which
# builds the `gpu` example with ../shared/tools/cuda-build.sh and packs:
#   .gpu/gpu.xz          the CUDA binary           .gpu/gsm.tar.xz    GSM-Symbolic train/test
#   .gpu/smollm2.part-a / .gpu2/smollm2.part-b     the SmolLM2 GGUF in two halves
# The SmolLM2 GGUF (98 MB) is over the limit, so it travels in two halves, one per call (the
# machine keeps ignored files between calls while it stays warm).
#   phase 1 (carry .gpu):  backend check, then SmolLM2-shaped generation and the Qwen2.5-0.5B
#            training step, for bridge and for PyTorch (about 8 minutes with start-up). The first
#            session's call 1 ran an earlier version (a tiny smoke run, both generation shapes and
#            shorter timeouts, which compilation outran): docs/results/gpu/call1-phase1.log.
#   phase 2 (carry .gpu2): the real run: BRIDGE and Cold-start on SmolLM2-135M, side by side
#   phase 3 (carry .gpu3 = the binary alone): the check again, and SmolLM2-shaped generation with
#            cubecl's compilation/autotune log, against transformers (phase 1's generation timed out)
# Usage: bash scripts/gpu-session.sh 1|2|3    (writes its results under $OUT)
set -u
phase="${1:?phase 1 or 2}"
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
bin=/tmp/gpu
pack=.gpu; [ "$phase" = 3 ] && pack=.gpu3
if [ ! -x "$bin" ]; then xz -dc "$pack/gpu.xz" > "$bin" && chmod +x "$bin"; fi
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu; do
  [ -e "$d/libcuda.so.1" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}" && break
done
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  ls "$d"/libnvrtc.so* >/dev/null 2>&1 && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}" && break
done
export RUST_BACKTRACE=1 PYTHONUNBUFFERED=1
log="$OUT/phase$phase.log"
step() { echo "== $(date +%T) $*" | tee -a "$log"; }
# Peak GPU memory of whatever runs meanwhile (MiB), sampled every 200 ms.
gpu_mem_start() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "/tmp/mem.$1" 2>/dev/null & echo $! > /tmp/mem.pid; }
gpu_mem_stop() { kill "$(cat /tmp/mem.pid)" 2>/dev/null; sort -n "/tmp/mem.$1" | tail -1 | sed "s/^/$1 peak MiB: /" | tee -a "$log"; }

if [ "$phase" = 1 ]; then
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'; } 2>&1 | tee -a "$log"
  step "check (flex vs cuda)"
  timeout 70 "$bin" check --device cuda > "$OUT/check.json" 2>> "$log"; echo "rc=$?" | tee -a "$log"
  step "bench: bridge generation, SmolLM2 shape, greedy (warm-up + 2)"
  gpu_mem_start gen
  timeout 160 "$bin" bench --device cuda --dtype bf16 --what generate --gen-shapes smollm2-135m --modes greedy \
    --repeats 2 > "$OUT/gen_bridge.json" 2>> "$log"; echo "rc=$?" | tee -a "$log"
  gpu_mem_stop gen
  step "bench: bridge training step, Qwen2.5-0.5B shape"
  gpu_mem_start train
  timeout 100 "$bin" bench --device cuda --dtype bf16 --what train --train-steps 8 > "$OUT/train_bridge.json" 2>> "$log"
  echo "rc=$?" | tee -a "$log"
  gpu_mem_stop train
  step "bench: PyTorch + transformers (the same two)"
  timeout 120 python3 bridge-models/scripts/bench_torch.py --device cuda --dtype bfloat16 --what train \
    --shape qwen2.5-0.5b --train-steps 8 > "$OUT/train_torch.json" 2>> "$log"; echo "rc=$?" | tee -a "$log"
  timeout 60 python3 bridge-models/scripts/bench_torch.py --device cuda --dtype bfloat16 --what generate \
    --shape smollm2-135m --modes greedy --gen-repeats 1 > "$OUT/gen_torch.json" 2>> "$log"; echo "rc=$?" | tee -a "$log"
  step "done"
elif [ "$phase" = 3 ]; then
  step "check (flex vs cuda)"
  timeout 60 "$bin" check --device cuda > "$OUT/check.json" 2>> "$log"; echo "rc=$?" | tee -a "$log"
  step "bench: bridge generation, SmolLM2 shape, greedy, with the cubecl log"
  CUBECL_DEBUG_LOG=/tmp/cubecl.log timeout 150 "$bin" bench --device cuda --dtype bf16 --what generate \
    --gen-shapes smollm2-135m --modes greedy --repeats 2 > "$OUT/gen_bridge.json" 2>> "$log"; echo "rc=$?" | tee -a "$log"
  { wc -l /tmp/cubecl.log; grep -ci "compil" /tmp/cubecl.log; grep -ci "autotun" /tmp/cubecl.log; } 2>&1 | tee -a "$log"
  head -c 12000000 /tmp/cubecl.log > "$OUT/cubecl.log"
  step "bench: transformers generation, SmolLM2 shape, greedy"
  timeout 70 python3 bridge-models/scripts/bench_torch.py --device cuda --dtype bfloat16 --what generate \
    --shape smollm2-135m --modes greedy --gen-repeats 1 > "$OUT/gen_torch.json" 2>> "$log"; echo "rc=$?" | tee -a "$log"
  step "done"
else
  mkdir -p models data
  cat .gpu/smollm2.part-a .gpu2/smollm2.part-b > models/SmolLM2-135M-Instruct.Q4_1.gguf
  sha256sum models/SmolLM2-135M-Instruct.Q4_1.gguf | tee -a "$log"; cat .gpu2/smollm2.sha256 | tee -a "$log"
  tar -xJf .gpu/gsm.tar.xz -C data
  step "real run: BRIDGE and Cold-start side by side, ${LIMIT:-120} s of training each"
  for algo in bridge cold-start; do
    timeout 270 "$bin" train --config "examples/configs/smollm2-gsm-$algo.toml" --time-limit-s "${LIMIT:-120}" \
      > "$OUT/$algo.log" 2>&1 &
  done
  wait
  for algo in bridge cold-start; do
    cp "runs/smollm2-gsm-$algo/metrics.jsonl" "$OUT/$algo.metrics.jsonl" 2>/dev/null
    cp "runs/smollm2-gsm-$algo/curves.png" "$OUT/$algo.curves.png" 2>/dev/null
  done
  step "done"
fi
