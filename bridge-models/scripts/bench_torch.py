#!/usr/bin/env python3
"""PyTorch + Hugging Face `transformers` GPU benchmark: the comparison point for the Rust example
`gpu bench` (the same shapes, step and generation settings, measured with transformers).

Measures, for models built from their HF configs with random init (no hub access needed):
  train     one training step of a causal LM in --dtype: pure bfloat16 parameters (no autocast,
            no f32 master copy), float32, or `mixed` (float32 parameters and AdamW state, the
            forward and backward under torch.autocast(bfloat16): how PyTorch users train): forward with
            `labels=input_ids` (transformers' shifted cross-entropy, mean over B*(T-1) tokens),
            backward, `torch.optim.AdamW(lr=1e-5, fused=True)` step (fused=False on CPU),
            zero_grad(set_to_none=True); batch B x T of random ids, no attention mask, no
            gradient checkpointing, no KV cache. --train-warmup steps, then --train-steps timed
            steps between torch.cuda.synchronize() calls: seconds_per_step,
            tokens_per_second = B*T / seconds_per_step, peak memory
            (torch.cuda.max_memory_allocated, model + AdamW state + activations), losses.
  generate  new tokens/s of `model.generate` for each shape, greedy and sampled (do_sample=True,
            temperature 1, top_k=0, top_p=1: the whole vocabulary), EOS disabled so that every
            row gets exactly --new-tokens tokens (checked), batch --gen-batch of random prompts
            (ids 3..vocab) all --prompt-len long (no padding, attention mask of ones), default
            DynamicCache (no static cache, no torch.compile: "cache": "dynamic" in the JSON).
            One warm-up call, then the best of --gen-repeats:
            new_tokens_per_second = batch * new_tokens / seconds.

Shapes (random init, tied embeddings): qwen2.5-0.5b (Qwen2ForCausalLM, vocab 151936, hidden 896,
intermediate 4864, 24 layers, 14 heads / 2 KV heads, rope theta 1e6), smollm2-135m
(LlamaForCausalLM, vocab 49152, hidden 576, intermediate 1536, 30 layers, 9 heads / 3 KV heads,
rope theta 1e5), tiny (Qwen2, vocab 512, hidden 128, 4 layers: for testing on CPU).
--shape (repeatable or a comma list) picks the shapes of both measurements; by default train runs
qwen2.5-0.5b and generate runs qwen2.5-0.5b and smollm2-135m.

Every measurement is independent: a failure (e.g. out of memory) is recorded as {"error": ...} and
the others still run. Prints one JSON object on stdout; progress goes to stderr; --partial FILE
rewrites the report so far after each measurement (what a run cut short by a timeout leaves).

The GPU run (train qwen2.5-0.5b 8x1024, 3 warm-up + 10 timed steps; generate qwen2.5-0.5b and
smollm2-135m at batch 64, 256-token prompts + 256 new tokens, greedy and sampled):
  python3 bridge-models/scripts/bench_torch.py --device cuda --dtype bfloat16

CPU smoke test:
  python3 bridge-models/scripts/bench_torch.py --device cpu --dtype float32 --shape tiny --threads 1 \\
      --train-batch 2 --train-seq 32 --train-steps 2 --train-warmup 1 \\
      --gen-batch 2 --prompt-len 8 --new-tokens 8 --gen-repeats 1

Needs only torch and transformers (>= 5; `dtype=` rather than the old `torch_dtype=`).
"""

import argparse
import copy
import gc
import json
import math
import os
import platform
import sys
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

# name -> (model_type, HF config kwargs). Only the shape matters for speed; the token ids are the
# real checkpoints' (EOS is disabled for generation anyway).
SHAPES = {
    "qwen2.5-0.5b": (
        "qwen2",
        dict(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            hidden_act="silu",
            tie_word_embeddings=True,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            max_position_embeddings=32768,
            use_sliding_window=False,
            bos_token_id=151643,
            eos_token_id=151643,
        ),
    ),
    "smollm2-135m": (
        "llama",
        dict(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            head_dim=64,
            hidden_act="silu",
            tie_word_embeddings=True,
            rope_theta=100000.0,
            rms_norm_eps=1e-5,
            max_position_embeddings=8192,
            attention_bias=False,
            mlp_bias=False,
            bos_token_id=0,
            eos_token_id=0,
        ),
    ),
    "tiny": (
        "qwen2",
        dict(
            vocab_size=512,
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            max_position_embeddings=4096,
            use_sliding_window=False,
        ),
    ),
}
DEFAULT_TRAIN_SHAPES = ["qwen2.5-0.5b"]
DEFAULT_GEN_SHAPES = ["qwen2.5-0.5b", "smollm2-135m"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "mixed": torch.float32}
# The weights' dtype of a generation benchmark under --dtype (mixed precision infers in bfloat16).
GEN_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "mixed": "bfloat16"}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def err_text(e):
    s = f"{type(e).__name__}: {e}"
    return s if len(s) <= 600 else s[:600] + "..."


def rope_theta_of(cfg):
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict) and "rope_theta" in rp:
        return rp["rope_theta"]
    return getattr(cfg, "rope_theta", None)


def build_config(shape, attn):
    model_type, kw = SHAPES[shape]
    cfg = AutoConfig.for_model(model_type, **kw)
    # transformers 5 moved rope_theta into `rope_parameters`; the legacy keyword is converted,
    # but make sure (the rotary table is built from it when the model is created).
    theta = kw["rope_theta"]
    if rope_theta_of(cfg) != theta:
        rp = getattr(cfg, "rope_parameters", None)
        if isinstance(rp, dict):
            rp["rope_theta"] = theta
        else:
            cfg.rope_theta = theta
    cfg.use_cache = True
    return cfg


def build_model(shape, dtype, device, attn, seed):
    """Random init on the CPU (deterministic under `seed`), then moved to `device`."""
    cfg = build_config(shape, attn)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_config(cfg, dtype=DTYPES[dtype], attn_implementation=attn)
    model = model.to(device)
    init_s = time.perf_counter() - t0
    c = model.config
    inner = getattr(model, "model", None)
    emb = inner.embed_tokens.weight if inner is not None else None
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    theta = rope_theta_of(c)
    # The rotary table really uses theta: inv_freq[1] = theta^(-2/head_dim).
    rope_ok = None
    rot = getattr(inner, "rotary_emb", None)
    if rot is not None and hasattr(rot, "inv_freq"):
        got = float(rot.inv_freq[1].float())
        rope_ok = math.isclose(got, theta ** (-2.0 / head_dim), rel_tol=1e-4)
    info = dict(
        architecture=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),  # tied head counted once
        param_dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
        attn_implementation=getattr(c, "_attn_implementation", None),
        tied_embeddings=emb is not None and model.get_output_embeddings().weight is emb,
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=head_dim,
        rope_theta=theta,
        rope_check=rope_ok,
        rms_norm_eps=c.rms_norm_eps,
        init_seconds=round(init_s, 3),
    )
    return model, info


def checkpointing_on(model):
    # transformers 5.2x renamed is_gradient_checkpointing (now a deprecated alias).
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def free(device):
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def mem_stats(device, key="peak_memory_bytes"):
    if not device.startswith("cuda"):
        return {}
    peak = torch.cuda.max_memory_allocated()
    return {key: peak, key.replace("bytes", "gib"): round(peak / 2**30, 3)}


def bench_train(shape, a):
    device = a.device
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    model, info = build_model(shape, a.dtype, device, a.attn, a.seed)
    model.train()
    if checkpointing_on(model):  # off by default; make sure
        if hasattr(model, "activation_checkpointing_disable"):
            model.activation_checkpointing_disable()
        else:
            model.gradient_checkpointing_disable()
    fused = device.startswith("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=fused)
    b, t = a.train_batch, a.train_seq
    g = torch.Generator().manual_seed(a.seed + 1)
    ids = torch.randint(3, model.config.vocab_size, (b, t), generator=g).to(device)
    after_model = torch.cuda.memory_allocated() if device.startswith("cuda") else None

    autocast = a.dtype == "mixed"
    amp_device = "cuda" if device.startswith("cuda") else "cpu"

    def step():
        with torch.autocast(device_type=amp_device, dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=ids, labels=ids, use_cache=False)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.detach()

    losses = []
    log(f"train {shape}: {b}x{t}, {a.train_warmup} warm-up + {a.train_steps} steps")
    for _ in range(a.train_warmup):
        losses.append(step())
    sync(device)
    cuda = device.startswith("cuda")
    events = [torch.cuda.Event(enable_timing=True) for _ in range(a.train_steps + 1)] if cuda else None
    step_s = []
    t0 = time.perf_counter()
    if cuda:
        events[0].record()
    for i in range(a.train_steps):
        t1 = time.perf_counter()
        losses.append(step())
        if cuda:
            events[i + 1].record()
        else:
            step_s.append(time.perf_counter() - t1)
    sync(device)
    dt = time.perf_counter() - t0
    if cuda:
        step_s = [events[i].elapsed_time(events[i + 1]) / 1000.0 for i in range(a.train_steps)]
    losses = [float(x) for x in losses]
    sps = dt / a.train_steps
    res = dict(
        shape=shape,
        model=info,
        batch=b,
        seq_len=t,
        tokens_per_step=b * t,
        warmup_steps=a.train_warmup,
        steps=a.train_steps,
        optimizer=f"torch.optim.AdamW(lr=1e-5, fused={fused})",
        loss="transformers shifted cross-entropy (labels=input_ids), mean",
        dtype=a.dtype,
        autocast=autocast,
        gradient_checkpointing=checkpointing_on(model),
        seconds_total=dt,
        seconds_per_step=sps,
        step_seconds=step_s,
        tokens_per_second=b * t / sps,
        first_loss=losses[0],
        final_loss=losses[-1],
        losses=losses,
    )
    if after_model is not None:
        res["memory_after_model_bytes"] = after_model  # before AdamW's (lazily allocated) state
        res.update(mem_stats(device))
    log(f"train {shape}: {sps:.4f} s/step, {b * t / sps:.0f} tokens/s, loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    del model, opt, ids
    return res


def gen_config(mode, new_tokens):
    sample = mode == "sample"
    # top_k=0 explicitly: None would be filled with the global default top_k=50 by generate.
    return GenerationConfig(
        do_sample=sample,
        temperature=1.0 if sample else None,
        top_k=0 if sample else None,
        top_p=1.0 if sample else None,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        eos_token_id=None,
        pad_token_id=0,
        num_beams=1,
        use_cache=True,
    )


def effective_config(model, gen):
    """The generation config `generate` will really use (its own merge of ours, the model's and
    the global defaults); private API, so best effort."""
    try:
        eff = model._prepare_generation_config(gen)
        eff = eff[0] if isinstance(eff, tuple) else eff
        keys = ["do_sample", "temperature", "top_k", "top_p", "min_p", "max_new_tokens", "min_new_tokens",
                "eos_token_id", "pad_token_id", "num_beams", "use_cache", "cache_implementation",
                "repetition_penalty"]
        out = {k: getattr(eff, k, None) for k in keys}
        if not out["do_sample"]:
            out["note"] = "temperature/top_k/top_p are unused when do_sample is false"
        return out
    except Exception as e:  # noqa: BLE001
        return {"error": err_text(e)}


def bench_generate_shape(shape, a, results):
    device = a.device
    try:
        model, info = build_model(shape, GEN_DTYPES[a.dtype], device, a.attn, a.seed)
    except Exception as e:  # noqa: BLE001
        for mode in a.modes:
            results[f"generate/{shape}/{mode}"] = {"shape": shape, "mode": mode, "error": err_text(e)}
        log(f"generate {shape}: model build failed: {err_text(e)}")
        return
    model.eval()
    # `generate` fills unset fields from the model's generation config (EOS from the model config).
    model.generation_config.eos_token_id = None
    b, p, n = a.gen_batch, a.prompt_len, a.new_tokens
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(a.seed + 2)
    ids = torch.randint(3, vocab, (b, p), generator=g).to(device)
    mask = torch.ones_like(ids)
    for mode in a.modes:
        key = f"generate/{shape}/{mode}"
        log(f"{key}: batch {b}, {p}+{n} tokens, 1 warm-up + {a.gen_repeats}")
        try:
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            gen = gen_config(mode, n)
            eff = effective_config(model, gen)
            problems = []
            if mode == "sample" and eff.get("top_k") not in (None, 0):
                problems.append(f"effective top_k={eff.get('top_k')}")
            if eff.get("eos_token_id") is not None:
                problems.append(f"effective eos_token_id={eff.get('eos_token_id')}")
            if eff.get("cache_implementation") not in (None, "dynamic"):
                problems.append(f"cache_implementation={eff.get('cache_implementation')}")
            torch.manual_seed(a.seed + 3)
            with torch.no_grad():
                sync(device)
                t0 = time.perf_counter()
                # The warm-up also returns the cache, to record its class.
                gen_warm = copy.deepcopy(gen)
                gen_warm.return_dict_in_generate = True
                warm = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_warm)
                sync(device)
                warm_s = time.perf_counter() - t0
                # transformers 5.2x renamed the output's past_key_values to cache.
                cache = warm.get("cache")
                if cache is None:
                    cache = warm.get("past_key_values")
                cache_type = type(cache).__name__
                del cache
                warm_shape = tuple(warm.sequences.shape)
                del warm
                times = []
                for _ in range(a.gen_repeats):
                    sync(device)
                    t0 = time.perf_counter()
                    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
                    sync(device)
                    times.append(time.perf_counter() - t0)
                    if tuple(out.shape) != (b, p + n):
                        raise RuntimeError(f"output shape {tuple(out.shape)}, expected {(b, p + n)}")
                    if not torch.equal(out[:, :p], ids):
                        raise RuntimeError("output does not start with the prompt")
            if warm_shape != (b, p + n):
                raise RuntimeError(f"warm-up output shape {warm_shape}, expected {(b, p + n)}")
            best = min(times)
            distinct = len(set(out[:, p:].reshape(-1).tolist()))
            res = dict(
                shape=shape,
                mode=mode,
                model=info,
                batch=b,
                prompt_len=p,
                new_tokens=n,
                cache="dynamic",
                cache_class=cache_type,
                torch_compile=False,
                generation_config=eff,
                lengths_ok=True,
                distinct_new_tokens=distinct,
                warmup_seconds=warm_s,
                seconds=best,
                seconds_all=times,
                new_tokens_per_second=b * n / best,
            )
            if problems:
                res["warnings"] = problems
            res.update(mem_stats(device))
            results[key] = res
            log(f"{key}: {best:.3f} s, {b * n / best:.0f} new tokens/s")
            del out
        except Exception as e:  # noqa: BLE001
            results[key] = {"shape": shape, "mode": mode, "error": err_text(e)}
            log(f"{key}: failed: {err_text(e)}")
        free(device)
    del model, ids, mask


def str_list(s):
    return [x for x in s.replace(",", " ").split() if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    ap.add_argument("--what", type=str_list, default=["train", "generate"], help="comma list: train,generate")
    ap.add_argument("--shape", action="append", type=str_list,
                    help=f"repeatable or comma list of {', '.join(SHAPES)} (default: train "
                         f"{','.join(DEFAULT_TRAIN_SHAPES)}, generate {','.join(DEFAULT_GEN_SHAPES)})")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (default sdpa)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (CPU runs)")
    ap.add_argument("--partial", help="rewrite the report so far into this file after each measurement")
    tr = ap.add_argument_group("train")
    tr.add_argument("--train-batch", type=int, default=8)
    tr.add_argument("--train-seq", type=int, default=1024)
    tr.add_argument("--train-steps", type=int, default=10)
    tr.add_argument("--train-warmup", type=int, default=3)
    ge = ap.add_argument_group("generate")
    ge.add_argument("--gen-batch", type=int, default=64)
    ge.add_argument("--prompt-len", type=int, default=256)
    ge.add_argument("--new-tokens", type=int, default=256)
    ge.add_argument("--gen-repeats", type=int, default=2)
    ge.add_argument("--modes", type=str_list, default=["greedy", "sample"], help="comma list: greedy,sample")
    a = ap.parse_args()
    if a.gen_repeats < 1 or a.train_steps < 1:
        ap.error("--gen-repeats and --train-steps must be at least 1")

    for w in a.what:
        if w not in ("train", "generate"):
            ap.error(f"unknown --what {w!r} (expected train or generate)")
    for m in a.modes:
        if m not in ("greedy", "sample"):
            ap.error(f"unknown mode {m!r} (expected greedy or sample)")
    shapes = list(dict.fromkeys(s for group in a.shape for s in group)) if a.shape else None
    for s in shapes or []:
        if s not in SHAPES:
            ap.error(f"unknown shape {s!r} (expected one of {', '.join(SHAPES)})")
    train_shapes = shapes or DEFAULT_TRAIN_SHAPES
    gen_shapes = shapes or DEFAULT_GEN_SHAPES
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is False")

    cuda = a.device.startswith("cuda")
    report = dict(
        framework="pytorch",
        torch=torch.__version__,
        transformers=transformers.__version__,
        python=platform.python_version(),
        cuda=torch.version.cuda if cuda else None,
        cudnn=torch.backends.cudnn.version() if cuda else None,
        device=a.device,
        device_name=torch.cuda.get_device_name(torch.device(a.device)) if cuda else platform.processor() or "cpu",
        threads=torch.get_num_threads(),
        dtype=a.dtype,
        attn_implementation=a.attn,
        cache="dynamic",
        torch_compile=False,
        seed=a.seed,
        counterpart="examples/gpu.rs: gpu bench (Rust)",
        results={},
    )
    results = report["results"]
    t_start = time.perf_counter()

    def save_partial():
        if a.partial:
            with open(a.partial + ".tmp", "w") as f:
                json.dump(report, f)
            os.replace(a.partial + ".tmp", a.partial)

    if "train" in a.what:
        for shape in train_shapes:
            key = f"train/{shape}"
            try:
                results[key] = bench_train(shape, a)
            except Exception as e:  # noqa: BLE001
                results[key] = {"shape": shape, "error": err_text(e)}
                log(f"{key}: failed: {err_text(e)}")
            free(a.device)
            save_partial()
    if "generate" in a.what:
        for shape in gen_shapes:
            try:
                bench_generate_shape(shape, a, results)
            except Exception as e:  # noqa: BLE001
                results[f"generate/{shape}"] = {"shape": shape, "error": err_text(e)}
                log(f"generate/{shape}: failed: {err_text(e)}")
            free(a.device)
            save_partial()
    report["wall_seconds"] = time.perf_counter() - t_start
    print(json.dumps(report))


if __name__ == "__main__":
    main()
