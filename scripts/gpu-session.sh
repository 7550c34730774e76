#!/usr/bin/env bash
# The one GPU session of issue 16, run in ONE device call on the GPU machine (no Rust toolchain,
# no network, ≤ 64 MiB carried, ≤ 10 min per command). Prepared here by scripts/gpu-prepare.sh;
# how to run it (carry, timeout): docs/results/gpu.md, "How to run the session".
#
#   bash scripts/gpu-session.sh              on the GPU machine, results under $OUT
#   bash scripts/gpu-session.sh --cpu-smoke  here, on flex with tiny shapes: every phase of the
#                                            script runs (the PyTorch ones only where torch is
#                                            installed), so the script is not first run on a GPU
#
# Phases (each with its own timeout, cut to what is left of BUDGET seconds; a failed or timed-out
# phase is recorded and the next one still runs; $OUT is rewritten after every phase, so a kill
# at the call's limit still returns what was done):
#   setup    unpack the binary, GSM-Symbolic and the SmolLM2 GGUF (two parts: .gpu-model/ was
#            carried by the previous call, .gpu/ by this one); point cubecl's cache (autotune
#            results, compiled kernels) and the CUDA driver's JIT cache into .gpu/cache/
#   check    gpu check: flex against cuda, the graph engine included
#   dp       gpu dp: data parallelism on the card (one rank, one NCCL rank, two host ranks)
#   train    bridge's training step, Qwen2.5-0.5B shape, 8 × 1024, bf16 (then f32/mixed as extras)
#   gen      bridge's generation, batch 64 × (256 prompt + 256 new), Qwen2.5-0.5B shape, greedy,
#            graph engine, and the kernel launches per decode step (tensor engine, graph step,
#            replayed step)
#   torch    PyTorch + transformers on the same card: the same training step and `generate`
#   real     SmolLM2-135M-Instruct on GSM-Symbolic: BRIDGE, Cold-start and RL-zero side by side on
#            one wall-clock budget (test accuracy before and after, curves), then `gpu compare`
#   extras   what time allows: bridge train in f32 and mixed precision, PyTorch mixed precision,
#            bridge and transformers sampled generation
# Results in $OUT (at most 8 files come back): summary.json (for docs/results/gpu/summary.json),
# results.json (every raw result), session.log, real-run.png, real-run.jsonl, logs.tar.xz,
# cubecl-cache.tar.xz (carry it back: scripts/gpu-prepare.sh --cache FILE).
set -u
mode=gpu
[ "${1:-}" = "--cpu-smoke" ] && mode=cpu
T0=$(date +%s)
BUDGET="${BUDGET:-$([ $mode = gpu ] && echo 540 || echo 900)}"
OUT="${OUT:-/tmp/gpu-session-out}"
W=/tmp/gpu-session; rm -rf "$W"; mkdir -p "$W/phases" "$W/logs" "$W/runs" "$OUT"
ROOT="$(pwd)"
log="$OUT/session.log"; : > "$log"
say() { echo "== $(( $(date +%s) - T0 ))s $*" | tee -a "$log" >&2; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
export RUST_BACKTRACE=1 PYTHONUNBUFFERED=1

# flush: rebuilds the files of $OUT from what the phases have written so far.
flush() {
  python3 scripts/gpu-summary.py "$W" "$OUT" --mode "$mode" --elapsed "$(( $(date +%s) - T0 ))" >> "$log" 2>&1 \
    || echo "summary failed (see above)" >> "$log"
  (cd "$W" && tar -cJf "$OUT/logs.tar.xz" logs phases runs/*/config.resolved.toml runs/*/curves.png 2>/dev/null)
}

# phase NAME SECONDS CMD...: runs CMD with stdout to phases/NAME.out (the JSON) and stderr to
# logs/NAME.log, under a timeout of SECONDS cut to what is left (minus RESERVE for later phases).
RESERVE=0
phase() {
  local name="$1" want="$2"; shift 2
  local t=$(( $(left) - RESERVE )); [ "$t" -gt "$want" ] && t="$want"
  if [ "$t" -lt 10 ]; then
    say "$name: skipped, $(left) s left"
    echo "{\"phase\": \"$name\", \"skipped\": \"no time left\"}" > "$W/phases/$name.status"
    return 0
  fi
  say "$name: start (timeout ${t}s): $*"
  local s=$(date +%s)
  timeout -k 5 "$t" "$@" > "$W/phases/$name.out" 2> "$W/logs/$name.log"
  local rc=$?
  local dt=$(( $(date +%s) - s ))
  say "$name: rc=$rc after ${dt}s$([ $rc = 124 ] && echo ' (timed out)')"
  tail -n 3 "$W/logs/$name.log" | sed 's/^/   | /' | cut -c1-300 | tee -a "$log" >&2
  echo "{\"phase\": \"$name\", \"rc\": $rc, \"seconds\": $dt, \"timeout\": $t}" > "$W/phases/$name.status"
  flush
  return 0
}

# Peak GPU memory (MiB, nvidia-smi, every 200 ms) while a phase runs: mem_start NAME / mem_stop NAME.
mem_start() {
  command -v nvidia-smi > /dev/null || return 0
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$W/logs/mem.$1" 2>/dev/null &
  echo $! > "$W/mem.pid"
}
mem_stop() {
  [ -f "$W/mem.pid" ] || return 0
  kill "$(cat "$W/mem.pid")" 2>/dev/null; rm -f "$W/mem.pid"
  local peak; peak=$(sort -n "$W/logs/mem.$1" 2>/dev/null | tail -1)
  echo "{\"peak_mib\": ${peak:-null}}" > "$W/phases/$1.mem"
  say "$1: peak GPU memory ${peak:-?} MiB (nvidia-smi)"
}

# ---------------------------------------------------------------------------------------- setup
say "mode $mode, budget ${BUDGET}s, out $OUT"
mkdir -p .gpu/cache/nv models data
if [ $mode = gpu ]; then
  bin=/tmp/gpu
  xz -dc .gpu/gpu.xz > "$bin" 2>> "$log" || python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' .gpu/gpu.xz "$bin"
  chmod +x "$bin"
  "$bin" 2> /dev/null; [ $? = 2 ] || { say "the binary does not run (.gpu/gpu.xz missing or broken)"; }
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu; do
    [ -e "$d/libcuda.so.1" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}" && break
  done
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    ls "$d"/libnvrtc.so* > /dev/null 2>&1 && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}" && break
  done
  dev=cuda; dtype=bf16
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; } > "$W/phases/card.txt" 2>&1
  python3 -c 'import torch, transformers; print(torch.__version__, transformers.__version__)' > "$W/phases/torch.txt" 2>&1
else
  bin="${BIN:-target/release/examples/gpu}"
  [ -x "$bin" ] || { say "no $bin: build it with cargo build --release --example gpu"; exit 2; }
  dev=flex; dtype=f32
  { echo "cpu-smoke (flex), $(nproc) cores"; } > "$W/phases/card.txt"
  python3 -c 'import torch, transformers; print(torch.__version__, transformers.__version__)' > "$W/phases/torch.txt" 2>&1
fi
cat "$W/phases/card.txt" "$W/phases/torch.txt" | tee -a "$log" >&2
# cubecl keeps autotune results and compiled kernels in <root>/<environment>.db; the CUDA driver
# keeps the SASS it JIT-compiles from PTX in CUDA_CACHE_PATH. Both live in the carried .gpu/cache.
printf '[environment]\npath = { directory = "%s/.gpu/cache" }\n' "$ROOT" > cubecl.toml
export CUDA_CACHE_PATH="$ROOT/.gpu/cache/nv" CUDA_CACHE_MAXSIZE=4294967296
du -sh .gpu/cache 2>/dev/null | sed 's/^/cache carried in: /' | tee -a "$log" >&2
# GSM-Symbolic and the model
tar -xJf .gpu/gsm.tar.xz -C data 2>> "$log" || say "no .gpu/gsm.tar.xz"
gguf=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f .gpu-model/smollm2.part-a ] && [ -f .gpu/smollm2.part-b ]; then
  cat .gpu-model/smollm2.part-a .gpu/smollm2.part-b > "$gguf"
  if (cd models && sha256sum -c --status ../.gpu/smollm2.sha256); then
    say "SmolLM2 GGUF assembled and verified"
  else
    say "SmolLM2 GGUF checksum MISMATCH"; rm -f "$gguf"
  fi
elif [ $mode = cpu ] && [ -f "${GGUF:-$HOME/.cache/bridge-models/SmolLM2-135M-Instruct.Q4_1.gguf}" ]; then
  cp "${GGUF:-$HOME/.cache/bridge-models/SmolLM2-135M-Instruct.Q4_1.gguf}" "$gguf"
else
  say "SmolLM2 GGUF parts missing (.gpu-model/smollm2.part-a comes with the call before this one): the real run is skipped"
fi
flush

# Reserve time for the real run while the benchmarks run (they come first: they are the figures
# the acceptance asks for, and each is short).
RESERVE=$([ $mode = gpu ] && echo 220 || echo 300)

# ---------------------------------------------------------------------------------------- check
phase check 75 "$bin" check --device $dev

# ---------------------------------------------------------------------------------------- dp
# Data parallelism on the one card (issue 20, docs/data-parallel.md): BRIDGE steps on one rank, on
# one rank through NCCL (burn's collectives; flex has none, so --cpu-smoke skips that run) and on
# two host-exchange ranks sharing the device; parameters compared, seconds per step.
phase dp 40 "$bin" dp --device $dev

# The real run decodes with the graph engine (the GPU default) unless the check found a graph or
# greedy (default engine) comparison out of tolerance: then with the tensor engine.
engine_args=()
if ! python3 - "$W/phases/check.out" << 'EOF'
import json, sys
try:
    report = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(1)
bad = [c["name"] for c in report.get("comparisons", []) if not c["ok"] and ("graph" in c["name"] or "greedy" in c["name"])]
sys.exit(1 if bad else 0)
EOF
then
  engine_args=(--decode-engine tensor)
  say "check: a graph-engine comparison failed or the check did not finish: the real run decodes with the tensor engine"
fi

# ---------------------------------------------------------------------------------------- bridge
if [ $mode = gpu ]; then
  train_args=(--train-shape qwen2.5-0.5b --train-batch 8 --train-seq 1024 --train-steps 5 --train-warmup 2)
  gen_args=(--gen-shapes qwen2.5-0.5b --gen-batch 64 --prompt-len 256 --new-tokens 256 --modes greedy --repeats 1)
  launch_args=(--launches 4,12 --launch-batch 4)
else
  train_args=(--train-shape tiny --train-batch 2 --train-seq 32 --train-steps 2 --train-warmup 1)
  gen_args=(--gen-shapes tiny --gen-batch 4 --prompt-len 8 --new-tokens 8 --modes greedy --repeats 1)
  launch_args=(--launches 2,4 --launch-batch 2)
fi
mem_start train-bf16
phase train-bf16 90 "$bin" bench --device $dev --dtype $dtype --what train "${train_args[@]}" \
  --partial "$W/phases/train-bf16.partial"
mem_stop train-bf16
mem_start gen
phase gen 110 "$bin" bench --device $dev --dtype $dtype --what generate,launches --engines graph "${gen_args[@]}" \
  "${launch_args[@]}" --partial "$W/phases/gen.partial"
mem_stop gen

# ---------------------------------------------------------------------------------------- torch
have_torch=0
python3 -c 'import torch, transformers' 2> /dev/null && have_torch=1
if [ $mode = gpu ]; then
  torch_args=(--device cuda --dtype bfloat16 --shape qwen2.5-0.5b --train-steps 5 --train-warmup 2 --modes greedy --gen-repeats 1)
else
  torch_args=(--device cpu --dtype float32 --shape tiny --threads 2 --train-batch 2 --train-seq 32 --train-steps 2 --train-warmup 1
    --gen-batch 4 --prompt-len 8 --new-tokens 8 --modes greedy --gen-repeats 1)
fi
if [ $have_torch = 1 ]; then
  phase torch 80 python3 bridge-models/scripts/bench_torch.py "${torch_args[@]}" --partial "$W/phases/torch.partial"
else
  say "torch: SKIPPED, python3 cannot import torch and transformers here (the GPU machine has them)"
  echo '{"phase": "torch", "skipped": "torch/transformers not installed"}' > "$W/phases/torch.status"
fi

# ---------------------------------------------------------------------------------------- real run
RESERVE=$([ $mode = gpu ] && echo 25 || echo 0)
methods=(bridge cold-start rl-zero)
if [ -f "$gguf" ] && [ -d data/gsm_symbolic ]; then
  avail=$(( $(left) - RESERVE ))
  if [ $mode = gpu ]; then
    # The budget of each run: what is left, less model loading, compilation and two evaluations.
    limit=$(( avail - 110 )); [ "$limit" -gt 150 ] && limit=150
    sets=()
  else
    limit=$(( avail / 4 )); [ "$limit" -gt 60 ] && limit=60
    # tiny settings: a few steps of each method on 2 CPU cores
    sets=(--set run.device=flex --set rl.prompts_per_step=1 --set rl.sampling.n=2 --set rl.sampling.max_new_tokens=8
      --set sft.batch_size=1 --set sft.tokenize.max_len=160 --set eval.limit=3 --set eval.max_new_tokens=8
      --set eval.batch_size=3)
  fi
  if [ "$limit" -ge 20 ]; then
    say "real: ${methods[*]} side by side, ${limit}s of training each ($(left)s left)"
    s=$(date +%s)
    mem_start real
    for m in "${methods[@]}"; do
      # One cubecl environment per process (its database is not shared between processes),
      # started from what the earlier phases compiled and tuned.
      for f in .gpu/cache/default.db*; do
        [ -e "$f" ] && [ ! -e "${f/default/real-$m}" ] && cp "$f" "${f/default/real-$m}"
      done
      msets=("${sets[@]}")
      [ $mode = cpu ] && [ "$m" = cold-start ] && msets+=(--set algorithm.sft_steps=1)
      CUBECL_ENVIRONMENT="real-$m" timeout -k 5 $(( avail - 5 )) "$bin" train --config "examples/configs/smollm2-gsm-$m.toml" \
        --time-limit-s "$limit" --run-dir "$W/runs/$m" "${msets[@]}" "${engine_args[@]}" \
        > "$W/phases/real-$m.out" 2> "$W/logs/real-$m.log" &
    done
    wait
    mem_stop real
    say "real: done after $(( $(date +%s) - s ))s"
    for m in "${methods[@]}"; do tail -n 2 "$W/logs/real-$m.log" | sed "s/^/   | $m: /" | cut -c1-300 | tee -a "$log" >&2; done
    echo "{\"phase\": \"real\", \"limit_s\": $limit, \"seconds\": $(( $(date +%s) - s ))}" > "$W/phases/real.status"
    runs=(); for m in "${methods[@]}"; do runs+=(--run "$m=$W/runs/$m"); done
    RESERVE=0
    phase compare 20 "$bin" compare "${runs[@]}" --png "$OUT/real-run.png"
    for m in "${methods[@]}"; do
      [ -f "$W/runs/$m/metrics.jsonl" ] && sed "s/^{/{\"run\":\"$m\",/" "$W/runs/$m/metrics.jsonl"
    done > "$OUT/real-run.jsonl"
  else
    say "real: SKIPPED, only ${avail}s left"
  fi
else
  say "real: SKIPPED (no model or no data)"
fi
flush

# ---------------------------------------------------------------------------------------- extras
RESERVE=$([ $mode = gpu ] && echo 15 || echo 0)
mem_start train-mixed
# Mixed precision (the training side of issue 16): f32 master weights and AdamW state, bf16
# compute (`bridge::bench::train_bench` with `Precision::MixedBf16`).
phase train-mixed 60 "$bin" bench --device $dev --precision mixed_bf16 --what train "${train_args[@]}" \
  --partial "$W/phases/train-mixed.partial"
mem_stop train-mixed
if [ $have_torch = 1 ]; then
  phase torch-mixed 45 python3 bridge-models/scripts/bench_torch.py "${torch_args[@]}" --dtype mixed --what train \
    --partial "$W/phases/torch-mixed.partial"
fi
mem_start train-f32
phase train-f32 60 "$bin" bench --device $dev --dtype f32 --what train "${train_args[@]}" \
  --partial "$W/phases/train-f32.partial"
mem_stop train-f32

# ---------------------------------------------------------------------------------------- cache
rm -f cubecl.toml
(tar -cJf "$W/cubecl-cache.tar.xz" -C .gpu cache 2>> "$log" && \
  if [ "$(stat -c %s "$W/cubecl-cache.tar.xz")" -le 16000000 ]; then mv "$W/cubecl-cache.tar.xz" "$OUT/"; \
  else say "cubecl cache over 16 MB compressed: not returned"; fi)
du -sh .gpu/cache 2>/dev/null | sed 's/^/cache after the session: /' | tee -a "$log" >&2
flush
say "done"
