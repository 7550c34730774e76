#!/usr/bin/env python3
"""Reference fixtures for bridge-models, produced with Hugging Face `transformers` (independent
of our Rust code).

Modes:
  make_fixtures.py [--out DIR]   create tiny random checkpoints of every supported family
                                 under DIR (default: bridge-models/fixtures), each an HF directory
                                 (config.json + model.safetensors) plus reference.json holding
                                 logits of a fixed, right-padded batch.
  make_fixtures.py --check DIR   load DIR (an HF directory written by our Rust saver) with
                                 transformers, compute logits for the ids in DIR/rust_logits.json,
                                 compare them with the Rust logits, and write DIR/reference.json.
  make_fixtures.py --generate    write DIR/generate_reference.json for every fixture DIR:
                                 transformers' greedy `generate` (do_sample=False, EOS disabled)
                                 of 3 prompts × 16 new tokens, each prompt alone.
  make_fixtures.py --bf16        write DIR/reference_bf16.json for every fixture DIR: the logits
                                 of reference.json's batch with the checkpoint loaded in bfloat16
                                 (eager attention; logits cast to f32 at the end), and the greedy
                                 continuations of --generate computed in bfloat16.
  make_fixtures.py --bench-generate
                                 new tokens/s of transformers `generate` (greedy and sampled,
                                 KV cache, EOS disabled) for the tiny Qwen2 config of
                                 `cargo run --release --example bench_generate` (random init,
                                 sdpa and eager attention), batch 1/16/64, 16-token prompts,
                                 48 new tokens, on 2 threads (--threads N). The options of the
                                 Rust benchmark: --model PATH.gguf (a real model, sdpa only,
                                 random prompts of ids 3..vocab), --dtype float32|bfloat16,
                                 --device cpu|cuda, --batches 1,16,64, --prompt-len N,
                                 --new-tokens N, --modes greedy,sample, --repeats N. The GPU run
                                 of the generation issue: --model SmolLM2-135M-Instruct.Q4_1.gguf
                                 --dtype bfloat16 --device cuda --batches 64 --prompt-len 256
                                 --new-tokens 256.
  make_fixtures.py --bench       time forward+backward (and forward only) of the tiny Qwen2
                                 config used by `cargo run --release --example bench_forward`,
                                 on 2 threads (--threads N), with sdpa and eager attention;
                                 --model PATH.gguf --batch B --seq-len T: a real model (f32, sdpa),
                                 as `bench_forward --model` takes it.

The committed fixtures/roundtrip_qwen2 was made by the Rust test
`cargo test -p bridge-models --test lora -- --ignored regenerate_roundtrip_fixture`
(one SGD step on θ and a LoRA adapter from qwen2_tied, merged, saved by our HF saver)
followed by `make_fixtures.py --check fixtures/roundtrip_qwen2`, which loaded it with
transformers and wrote reference.json (max |Δlogit| vs Rust: 4.8e-6).

Setup (outside the repository):
  python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch transformers safetensors
"""

import argparse
import json
import os
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(os.path.dirname(HERE), "fixtures")

VOCAB = 160
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    initializer_range=0.02,
)

# name -> (config class, extra config kwargs); each exercises one feature of the loader/decoder.
FIXTURES = {
    # Llama 3 style: GQA (4 query / 2 kv heads), untied head, llama3 rope scaling whose
    # thresholds put the 6 frequencies in all three regimes (kept, smoothed, divided).
    "llama3_gqa": (
        LlamaConfig,
        dict(
            num_key_value_heads=2,
            tie_word_embeddings=False,
            rope_theta=10000.0,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=8.0,
                original_max_position_embeddings=256,
            ),
            rms_norm_eps=1e-5,
        ),
    ),
    # Llama with every bias on, tied embeddings, linear rope scaling, full multi-head attention.
    "llama_bias_tied": (
        LlamaConfig,
        dict(
            num_key_value_heads=4,
            tie_word_embeddings=True,
            attention_bias=True,
            mlp_bias=True,
            rope_theta=500.0,
            rope_scaling=dict(rope_type="linear", factor=2.0),
            rms_norm_eps=1e-6,
        ),
    ),
    # Qwen2: q/k/v biases, GQA, tied embeddings, large rope theta.
    "qwen2_tied": (
        Qwen2Config,
        dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
             use_sliding_window=False),
    ),
    # Qwen3: per-head q/k RMSNorm, explicit head_dim != hidden/heads, GQA, untied.
    "qwen3_qknorm": (
        Qwen3Config,
        dict(num_key_value_heads=2, head_dim=16, tie_word_embeddings=False, rope_theta=1000000.0,
             rms_norm_eps=1e-6, attention_bias=False, use_sliding_window=False),
    ),
}

# A right-padded batch: row 0 uses the full length, row 1 is padded after 4 tokens.
INPUT_IDS = [[1, 17, 159, 42, 0, 99, 7, 133], [1, 5, 64, 120, 0, 0, 0, 0]]
ATTENTION_MASK = [[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0, 0]]


def perturb(model, seed):
    """HF's init gives near-uniform logits (std 0.02, unit norms, zero biases); spread every
    parameter so that a wrong norm weight, bias or rotary detail shows up in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name:
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif "embed_tokens" in name:
                p.copy_(noise)
            else:
                p.copy_(0.15 * noise)


def logits_of(model, input_ids, attention_mask):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(input_ids),
            attention_mask=torch.tensor(attention_mask) if attention_mask is not None else None,
        )
    return out.logits.float()


def make(out_dir):
    torch.manual_seed(0)
    for i, (name, (cls, extra)) in enumerate(FIXTURES.items()):
        cfg = cls(**COMMON, **extra)
        cfg._attn_implementation = "eager"
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
        perturb(model, seed=1000 + i)
        path = os.path.join(out_dir, name)
        os.makedirs(path, exist_ok=True)
        model.save_pretrained(path, safe_serialization=True)
        gen = os.path.join(path, "generation_config.json")
        if os.path.exists(gen):
            os.remove(gen)
        logits = logits_of(model, INPUT_IDS, ATTENTION_MASK)
        ref = dict(
            transformers_version=transformers.__version__,
            torch_version=torch.__version__,
            input_ids=INPUT_IDS,
            attention_mask=ATTENTION_MASK,
            logits=[[[round(float(x), 6) for x in pos] for pos in row] for row in logits],
        )
        with open(os.path.join(path, "reference.json"), "w") as f:
            json.dump(ref, f, separators=(",", ":"))
        size = sum(os.path.getsize(os.path.join(path, p)) for p in os.listdir(path))
        print(f"{name}: {size / 1024:.0f} KiB, logits {tuple(logits.shape)}")


def check(path):
    """Loads a directory written by the Rust saver and compares logits with the Rust ones."""
    with open(os.path.join(path, "rust_logits.json")) as f:
        rust = json.load(f)
    model, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v}
    if problems:
        print(f"loading problems: {problems}")
        sys.exit(1)
    model.eval()
    ids, mask = rust["input_ids"], rust.get("attention_mask")
    logits = logits_of(model, ids, mask)
    ours = torch.tensor(rust["logits"])
    valid = torch.tensor(mask, dtype=torch.bool) if mask is not None else torch.ones(logits.shape[:2], dtype=torch.bool)
    diff = (logits - ours).abs()[valid].max().item()
    print(f"{path}: {type(model).__name__} loaded, max |logit(transformers) - logit(rust)| = {diff:.3e}")
    ref = dict(
        transformers_version=transformers.__version__,
        torch_version=torch.__version__,
        input_ids=ids,
        attention_mask=mask,
        max_abs_diff_vs_rust=diff,
        logits=[[[round(float(x), 6) for x in pos] for pos in row] for row in logits],
    )
    with open(os.path.join(path, "reference.json"), "w") as f:
        json.dump(ref, f, separators=(",", ":"))
    if diff > 1e-4:
        sys.exit(1)


def tiny_bench_config():
    """The CPU benchmarks' tiny Qwen2 (vocab 512, hidden 128, 4 layers, 4 heads, 2 KV heads, tied)."""
    return Qwen2Config(
        vocab_size=512, hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, use_sliding_window=False,
    )


def load_real_model(model_path, torch_dtype, attn):
    """A .gguf file (dequantised into a dense model in `torch_dtype`, as our loader does: recent
    transformers would otherwise keep GGUF blocks when the `kernels` package provides a matmul
    kernel) or an HF model directory."""
    path = os.path.abspath(os.path.expanduser(model_path))
    where = {}
    if os.path.isfile(path):
        where = dict(gguf_file=os.path.basename(path))
        if hasattr(transformers, "GgufConfig"):
            where["quantization_config"] = transformers.GgufConfig(dequantize=True)
    return AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path) if where else path, **where, dtype=torch_dtype, attn_implementation=attn)


def bench(steps, warmup, threads, model_path=None, batch=16, seq_len=64):
    """Forward+backward (summed log-likelihood of every target) and forward-only tokens/s: the
    tiny Qwen2 config (random init; sdpa and eager attention) or, with `model_path`, a real
    model in f32 (sdpa); random ids."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if model_path is None:
        cfg = tiny_bench_config()

        def load(attn):
            cfg._attn_implementation = attn
            return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)

        models = [("sdpa", lambda: load("sdpa")), ("eager", lambda: load("eager"))]
    else:
        models = [("sdpa", lambda: load_real_model(model_path, torch.float32, "sdpa"))]
    results = {}
    for attn, load_model in models:
        model = load_model().train()
        ids = torch.randint(0, model.config.vocab_size, (batch, seq_len))
        mask = torch.ones_like(ids)

        def step():
            out = model(input_ids=ids, attention_mask=mask)
            logp = torch.log_softmax(out.logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])
            loss = -logp.sum()
            loss.backward()
            model.zero_grad(set_to_none=True)

        for _ in range(warmup):
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        dt = time.perf_counter() - t0
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
            t1 = time.perf_counter()
            for _ in range(steps):
                out = model(input_ids=ids, attention_mask=mask)
                torch.log_softmax(out.logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).sum()
            dt_fwd = time.perf_counter() - t1
        results[attn] = dict(
            forward_backward=dict(seconds_per_step=dt / steps, tokens_per_second=batch * seq_len * steps / dt),
            forward_only=dict(seconds_per_step=dt_fwd / steps, tokens_per_second=batch * seq_len * steps / dt_fwd),
        )
    print(json.dumps(dict(framework="pytorch", torch=torch.__version__, transformers=transformers.__version__,
                          model=model_path or "tiny random Qwen2", threads=threads, batch=batch, seq_len=seq_len,
                          steps=steps, results=results)))


GENERATE_PROMPTS = [[1, 17, 159, 42, 99, 7], [1, 5, 64], [3, 120, 8, 77, 15, 31, 9, 140, 66, 12]]
GENERATE_NEW_TOKENS = 16


def greedy_continuations(model, name):
    """transformers' greedy `generate` of each of GENERATE_PROMPTS alone (no padding on this side),
    GENERATE_NEW_TOKENS tokens each: EOS is disabled in the generation config and in the model's
    own configs (which `generate` falls back on)."""
    from transformers import GenerationConfig

    model.config.eos_token_id = None
    model.generation_config.eos_token_id = None
    gen = GenerationConfig(do_sample=False, max_new_tokens=GENERATE_NEW_TOKENS,
                           min_new_tokens=0, eos_token_id=None, pad_token_id=0, bos_token_id=None)
    outs = []
    for prompt in GENERATE_PROMPTS:
        ids = torch.tensor([prompt])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen)
        new = out[0, len(prompt):].tolist()
        assert len(new) == GENERATE_NEW_TOKENS, (name, new)
        outs.append(new)
    return outs


def generate_references(out_dir):
    """Greedy continuations of GENERATE_PROMPTS by transformers (see greedy_continuations)."""
    for name in FIXTURES:
        path = os.path.join(out_dir, name)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
        outs = greedy_continuations(model, name)
        ref = dict(transformers_version=transformers.__version__, torch_version=torch.__version__,
                   do_sample=False, eos_token_id=None, prompts=GENERATE_PROMPTS, completions=outs)
        with open(os.path.join(path, "generate_reference.json"), "w") as f:
            json.dump(ref, f, separators=(",", ":"))
        print(f"{name}: {outs}")


def bf16_references(out_dir):
    """transformers' bfloat16 inference on every fixture: the reference for `DecoderWeights::cast`."""
    for name in FIXTURES:
        path = os.path.join(out_dir, name)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="eager").eval()
        logits = logits_of(model, INPUT_IDS, ATTENTION_MASK)
        outs = greedy_continuations(model, name)
        ref = dict(transformers_version=transformers.__version__, torch_version=torch.__version__,
                   dtype="bfloat16", attn_implementation="eager",
                   input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK,
                   logits=[[[round(float(x), 6) for x in pos] for pos in row] for row in logits],
                   prompts=GENERATE_PROMPTS, completions=outs)
        with open(os.path.join(path, "reference_bf16.json"), "w") as f:
            json.dump(ref, f, separators=(",", ":"))
        print(f"{name}: bf16 logits {tuple(logits.shape)}, greedy {outs}")


def bench_generate(threads, repeats, batches=(1, 16, 64), prompt_len=16, new_tokens=48, modes=("greedy", "sample"),
                   model_path=None, dtype="float32", device="cpu"):
    """New tokens/s of `generate` with EOS disabled: the tiny Qwen2 config (random init, sdpa and
    eager attention) or, with `model_path`, a GGUF model (sdpa)."""
    from transformers import GenerationConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    if model_path is None:
        cfg = tiny_bench_config()

        def load(attn):
            cfg._attn_implementation = attn
            return AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype)

        models = [("sdpa", lambda: load("sdpa")), ("eager", lambda: load("eager"))]
        model_name = "tiny random Qwen2 (vocab 512, hidden 128, 4 layers)"
    else:
        models = [("sdpa", lambda: load_real_model(model_path, torch_dtype, "sdpa"))]
        model_name = model_path
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    results = {}
    for attn, load_model in models:
        model = load_model().to(device).eval()
        vocab = model.config.vocab_size
        # EOS disabled: `generate` fills unset (None) fields from the model's generation config,
        # so clear its EOS there too. Sampling draws from the whole vocabulary: top_k=0, as None
        # would mean the global default top_k=50 (and a model's own top_k/top_p would apply).
        model.generation_config.eos_token_id = None
        for mode in modes:
            sample = mode == "sample"
            gen = GenerationConfig(do_sample=sample, temperature=1.0, top_k=0 if sample else None,
                                   top_p=1.0 if sample else None, max_new_tokens=new_tokens, min_new_tokens=0,
                                   eos_token_id=None, pad_token_id=0)
            for b in batches:
                ids = torch.randint(3, vocab, (b, prompt_len)).to(device)
                mask = torch.ones_like(ids)
                with torch.no_grad():
                    model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)  # warm-up
                    times = []
                    for _ in range(repeats):
                        sync()
                        t0 = time.perf_counter()
                        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
                        sync()
                        times.append(time.perf_counter() - t0)
                        assert out.shape == (b, prompt_len + new_tokens)
                best = min(times)
                results[f"{attn}/{mode}/batch{b}"] = dict(
                    batch=b, seconds=best, seconds_all=times, new_tokens_per_second=b * new_tokens / best)
        del model
    print(json.dumps(dict(framework="pytorch", torch=torch.__version__, transformers=transformers.__version__,
                          threads=threads, model=model_name, dtype=dtype, device=device, prompt_len=prompt_len,
                          new_tokens=new_tokens, repeats=repeats, results=results)))


def int_list(s):
    return [int(x) for x in s.replace(",", " ").split()]


def mode_list(s):
    modes = [m for m in s.replace(",", " ").split()]
    for m in modes:
        if m not in ("greedy", "sample"):
            raise argparse.ArgumentTypeError(f"unknown mode {m!r} (expected greedy or sample)")
    return modes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check", metavar="DIR")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--generate", action="store_true")
    ap.add_argument("--bench-generate", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", metavar="PATH.gguf",
                    help="--bench, --bench-generate: a real model (.gguf file or HF directory) instead of the "
                         "tiny random Qwen2")
    ap.add_argument("--batch", type=int, default=16, help="--bench: sequences per step")
    ap.add_argument("--seq-len", type=int, default=64, help="--bench: tokens per sequence")
    bg = ap.add_argument_group("--bench-generate options")
    bg.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    bg.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    bg.add_argument("--batches", type=int_list, default=[1, 16, 64], help="comma list (default 1,16,64)")
    bg.add_argument("--prompt-len", type=int, default=16)
    bg.add_argument("--new-tokens", type=int, default=48)
    bg.add_argument("--modes", type=mode_list, default=["greedy", "sample"], help="comma list (default greedy,sample)")
    a = ap.parse_args()
    if a.check:
        check(a.check)
    elif a.generate:
        generate_references(a.out)
    elif a.bf16:
        bf16_references(a.out)
    elif a.bench_generate:
        bench_generate(a.threads, a.repeats, batches=a.batches, prompt_len=a.prompt_len, new_tokens=a.new_tokens,
                       modes=a.modes, model_path=a.model, dtype=a.dtype, device=a.device)
    elif a.bench:
        bench(a.steps, a.warmup, a.threads, model_path=a.model, batch=a.batch, seq_len=a.seq_len)
    else:
        make(a.out)


if __name__ == "__main__":
    main()
