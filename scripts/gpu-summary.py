#!/usr/bin/env python3
"""Summarises a GPU session (scripts/gpu-session.sh): reads what its phases left in WORK_DIR and
writes OUT_DIR/summary.json (the figures of docs/results/gpu/summary.json: card, the training and
generation ratios against PyTorch, launches per decode step, peak memory, the real run's
accuracies) and OUT_DIR/results.json (every phase's raw JSON output, status and memory peak).

Usage: gpu-summary.py WORK_DIR OUT_DIR [--mode gpu|cpu] [--elapsed SECONDS]

WORK_DIR/phases holds, per phase NAME: NAME.out (the command's stdout: one JSON document, or
JSON lines; NAME.partial, the results so far, stands in when the phase was cut short), NAME.status ({"rc", "seconds", "timeout"} or {"skipped"}), NAME.mem ({"peak_mib"}),
plus card.txt and torch.txt. Anything missing or malformed becomes null: the script never fails
on a phase that did not finish, since it runs after every phase. Standard library only.
"""

import glob
import json
import os
import sys

TRAIN_GOAL = 0.8  # issue 16: training >= 0.8x PyTorch tokens/s
GEN_GOAL = 3.0  # issue 16: generation >= 3x transformers `generate`


def load(path):
    """The JSON in `path` (the last JSON line when it holds several), or None."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") or line.startswith("["):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def get(d, *keys):
    for k in keys:
        if isinstance(d, dict):
            d = d.get(k)
        elif isinstance(d, list) and isinstance(k, int) and -len(d) <= k < len(d):
            d = d[k]
        else:
            return None
    return d


def ratio(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 else None


def bridge_train(doc):
    r = get(doc, "train", "result")
    if not isinstance(r, dict):
        return None, get(doc, "train", "error")
    return r, None


def torch_result(doc, key):
    return get(doc, "results", key)


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    work, out = args[0], args[1]
    mode = args[args.index("--mode") + 1] if "--mode" in args else "gpu"
    elapsed = float(args[args.index("--elapsed") + 1]) if "--elapsed" in args else None
    ph = os.path.join(work, "phases")

    def text(name):
        try:
            with open(os.path.join(ph, name)) as f:
                return f.read().strip()
        except OSError:
            return None

    def log_tail(name):
        """The last line of logs/NAME.log: the error of a phase that printed no JSON."""
        try:
            with open(os.path.join(work, "logs", name + ".log")) as f:
                lines = [l.strip() for l in f if l.strip()]
            return lines[-1][:500] if lines else None
        except OSError:
            return None

    phases, outputs, mems = {}, {}, {}
    for p in sorted(glob.glob(os.path.join(ph, "*.status"))):
        phases[os.path.basename(p)[:-7]] = load(p)
    for p in sorted(glob.glob(os.path.join(ph, "*.out"))):
        outputs[os.path.basename(p)[:-4]] = load(p)
    # A phase cut short prints nothing; what it measured before is in NAME.partial.
    for p in sorted(glob.glob(os.path.join(ph, "*.partial"))):
        name = os.path.basename(p)[:-8]
        if outputs.get(name) is None:
            outputs[name] = load(p)
    for p in sorted(glob.glob(os.path.join(ph, "*.mem"))):
        mems[os.path.basename(p)[:-4]] = get(load(p), "peak_mib")

    check = outputs.get("check")
    torch = outputs.get("torch")
    torch_mixed = outputs.get("torch-mixed")
    gen = outputs.get("gen")

    train = {}
    dims = {}
    for prec, name in (("bf16", "train-bf16"), ("mixed", "train-mixed"), ("f32", "train-f32")):
        r, err = bridge_train(outputs.get(name))
        if r is None and err is None and name in phases:
            err = log_tail(name)
        if r:
            dims = {"batch": r.get("batch"), "seq_len": r.get("seq_len")}
        train[f"bridge_{prec}"] = {
            "tokens_per_second": get(r, "tokens_per_second"),
            "seconds_per_step": get(r, "seconds_per_step"),
            "loss": [get(r, "first_loss"), get(r, "last_loss")] if r else None,
            "peak_gpu_mib_nvidia_smi": mems.get(name),
            "error": err,
        }
    shape = get(outputs.get("train-bf16"), "train", "shape")
    t_shape = shape or "qwen2.5-0.5b"
    for prec, doc in (("bf16", torch), ("mixed", torch_mixed)):
        r = torch_result(doc, f"train/{t_shape}")
        train[f"torch_{prec}"] = {
            "tokens_per_second": get(r, "tokens_per_second"),
            "seconds_per_step": get(r, "seconds_per_step"),
            "loss": [get(r, "first_loss"), get(r, "final_loss")] if r else None,
            "peak_memory_bytes": get(r, "peak_memory_bytes"),
            "error": get(r, "error"),
        }
    train_ratio = ratio(train["bridge_bf16"]["tokens_per_second"], train["torch_bf16"]["tokens_per_second"])
    mixed_ratio = ratio(train["bridge_mixed"]["tokens_per_second"], train["torch_mixed"]["tokens_per_second"])

    generation = {}
    shapes = get(gen, "generate", "shapes") or {}
    gen_ratio = None
    for key, v in shapes.items():
        g_shape, engine = key.split("/", 1) if "/" in key else (key, None)
        for r in get(v, "result") or []:
            t = torch_result(torch, f"generate/{g_shape}/{r.get('mode')}")
            entry = {
                "shape": g_shape,
                "mode": r.get("mode"),
                "engine": r.get("engine", engine),
                "batch": r.get("batch"),
                "prompt_len": get(gen, "generate", "prompt_len"),
                "new_tokens": get(gen, "generate", "new_tokens"),
                "bridge_new_tokens_per_second": r.get("new_tokens_per_second"),
                "bridge_seconds": r.get("seconds"),
                "bridge_graph_captures": get(r, "stats", "graph_captures"),
                "bridge_graph_replays": get(r, "stats", "graph_replays"),
                "bridge_graph_refusals": get(r, "stats", "graph_refusals"),
                "bridge_device_bytes_reserved": r.get("device_bytes_reserved"),
                "bridge_peak_gpu_mib_nvidia_smi": mems.get("gen"),
                "transformers_new_tokens_per_second": get(t, "new_tokens_per_second"),
                "transformers_seconds": get(t, "seconds"),
                "transformers_peak_memory_bytes": get(t, "peak_memory_bytes"),
            }
            entry["ratio"] = ratio(entry["bridge_new_tokens_per_second"], entry["transformers_new_tokens_per_second"])
            generation[f"{g_shape}/{r.get('mode')}/{entry['engine']}"] = entry
            if entry["mode"] == "greedy" and gen_ratio is None:
                gen_ratio = entry["ratio"]
        if get(v, "error"):
            generation[key] = {"error": get(v, "error")}

    launches = {}
    for s, v in (get(gen, "launches_per_decode_step") or {}).items():
        launches[s] = get(v, "result") if get(v, "result") is not None else {"error": get(v, "error")}

    compare = outputs.get("compare")
    real = {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to f32)",
        "data": "gsm_symbolic train (SFT and RL prompts) / test (evaluation)",
        "configs": "examples/configs/smollm2-gsm-{bridge,cold-start,rl-zero}.toml",
        "time_limit_s": get(phases.get("real"), "limit_s"),
        "wall_seconds": get(phases.get("real"), "seconds"),
        "peak_gpu_mib_nvidia_smi": mems.get("real"),
        "methods": compare if isinstance(compare, list) else None,
    }
    for m in ("bridge", "cold-start", "rl-zero"):
        s = outputs.get(f"real-{m}")
        if isinstance(s, dict):
            real.setdefault("run_summaries", {})[m] = s

    summary = {
        "generated_by": "scripts/gpu-session.sh (scripts/gpu-summary.py)",
        "mode": mode,
        "card": text("card.txt"),
        "torch_transformers": text("torch.txt"),
        "elapsed_seconds": elapsed,
        "check": {
            "ok": get(check, "ok"),
            "failed": [c.get("name") for c in (get(check, "comparisons") or []) if not c.get("ok")],
            "target_graph": get(check, "target_graph"),
        },
        # Data parallelism on the one card (issue 20, `gpu dp`): one rank, one rank through NCCL,
        # two host-exchange ranks; parameter differences against one rank and seconds per step.
        "data_parallel": {
            "ok": get(outputs.get("dp"), "ok"),
            "runs": get(outputs.get("dp"), "runs"),
            "reference_change": get(outputs.get("dp"), "reference_change"),
        },
        "train": dict(shape=t_shape, **dims, ratio_bf16=train_ratio, ratio_mixed=mixed_ratio, **train),
        "generation": {"ratio_greedy": gen_ratio, "runs": generation},
        "launches_per_decode_step": launches,
        "goals": {
            "train_ratio_min": TRAIN_GOAL,
            "generation_ratio_min": GEN_GOAL,
            "train_met": train_ratio >= TRAIN_GOAL if train_ratio is not None else None,
            "generation_met": gen_ratio >= GEN_GOAL if gen_ratio is not None else None,
        },
        "real_run": real,
        "phases": phases,
    }
    results = {"phases": phases, "outputs": outputs, "memory_peak_mib": mems}
    os.makedirs(out, exist_ok=True)
    for name, doc in (("summary.json", summary), ("results.json", results)):
        tmp = os.path.join(out, name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, os.path.join(out, name))
    print(f"summary: train ratio {train_ratio}, generation ratio {gen_ratio}, check ok {get(check, 'ok')}")


if __name__ == "__main__":
    main()
