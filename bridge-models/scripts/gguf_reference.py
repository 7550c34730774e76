#!/usr/bin/env python3
"""Writes the reference fixtures the GGUF and tokenizer tests of bridge-models compare against.

Run it in a venv OUTSIDE the repository that has torch, transformers, gguf and numpy, e.g.

    python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch transformers gguf numpy
    bridge-models/scripts/fetch_models.sh --qwen
    /tmp/hfvenv/bin/python bridge-models/scripts/gguf_reference.py [quants] [smollm2] [qwen]

With no argument it writes all three fixtures; name some to write only those.

Outputs (all small, committed):
  fixtures/gguf_quant_blocks.json       random blocks of every supported ggml type, dequantised by
                                        gguf-py (`gguf.quants.dequantize`); Q8_K by its numpy formula
  fixtures/smollm2_gguf_reference.json  SmolLM2-135M-Instruct Q4_1: gguf-py tensor statistics,
                                        transformers' tokenizer ids / chat renderings, transformers'
                                        HF-named weights (after its Q/K un-permutation), logits and
                                        a greedy continuation
  fixtures/qwen25_gguf_reference.json   Qwen2.5-Coder-0.5B-Instruct: gguf-py tensor statistics for
                                        its Q5_0/Q8_0/Q4_K/Q6_K/F32 tensors, tokenizer ids,
                                        transformers' logits (as SmolLM2's, plus the top 8 of every
                                        position) and a greedy continuation (written only when the
                                        file was fetched)
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"
CACHE = Path(os.environ.get("BRIDGE_MODELS", Path.home() / ".cache" / "bridge-models"))
SMOL = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN = CACHE / "qwen2.5-coder-0.5b-instruct-q4.gguf"

# Texts the tokenizer tests encode: plain prose, digits, code, unicode, whitespace runs, special tokens.
TEXTS = [
    "Hello, world! How are you today?",
    "What is 12 + 7? The answer is 19; 2024-11-27 and 3.14159.",
    "def f(x):\n    return x ** 2  # square\n\n\nprint(f(12))",
    "Ünïcödé — naïve café, 日本語のテキスト, emoji 🤖🚀 and Ελληνικά.",
    "  leading spaces, trailing tabs\t\t\nand   multiple    gaps  ",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "I'm sure they've said it's John's, we'll see; DON'T SHOUT.",
]
CHAT_MESSAGE = "What is 12 + 7? Answer with a number."
CHATS = [
    {"messages": [{"role": "user", "content": CHAT_MESSAGE}], "add_generation_prompt": True},
    {
        "messages": [
            {"role": "system", "content": "You are a terse math tutor."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "  And 3+3?  "},
        ],
        "add_generation_prompt": True,
    },
    {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}],
     "add_generation_prompt": False},
]
LOGIT_SLICE = 64
GREEDY_TOKENS = 20
# The Qwen2.5-Coder logit reference: a coding request, so that the greedy continuation is 20 tokens
# of text rather than a short answer and <|im_end|>; its logits also keep the QWEN_TOP_K largest
# entries of every position.
QWEN_CHAT_MESSAGE = "Write a Python function that checks whether a number is prime."
QWEN_TOP_K = 8

# Offsets of the f16 (or f32 for Q8_K) scale fields in each block, which are set to sane values so
# that random blocks do not decode to inf/NaN.
SCALE_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}


def rounded(xs, digits=7):
    return [float(f"{float(x):.{digits}g}") for x in xs]


def quant_blocks():
    import gguf
    from gguf.quants import dequantize

    rng = np.random.default_rng(20261127)
    out = []
    for name, offsets in SCALE_FIELDS.items():
        qt = gguf.GGMLQuantizationType[name]
        block_len, type_size = gguf.GGML_QUANT_SIZES[qt]
        n_blocks = 3
        raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
        for b in range(n_blocks):
            for off in offsets:
                scale = np.float16(rng.uniform(0.001, 0.1) * rng.choice([-1, 1]))
                raw[b, off:off + 2] = np.frombuffer(scale.tobytes(), dtype=np.uint8)
        values = dequantize(raw.reshape(-1), qt).reshape(-1)
        out.append({"type": name, "hex": raw.tobytes().hex(), "values": [float(v) for v in values.astype(np.float32)]})
    # Q8_K: gguf-py has no dequantiser; the formula is x = d (f32) * q (i8), bsums unused.
    raw = bytearray()
    vals = []
    for _ in range(2):
        d = np.float32(rng.uniform(0.001, 0.1))
        q = rng.integers(-128, 128, size=256, dtype=np.int8)
        bsums = q.reshape(16, 16).astype(np.int16).sum(axis=1).astype("<i2")
        raw += d.tobytes() + q.tobytes() + bsums.tobytes()
        vals += [float(v) for v in (d * q.astype(np.float32))]
    out.append({"type": "Q8_K", "hex": bytes(raw).hex(), "values": vals})
    # Plain types: F16 / BF16 / F32 from random floats.
    x = rng.normal(size=40).astype(np.float32)
    h = x.astype(np.float16)
    out.append({"type": "F16", "hex": h.tobytes().hex(), "values": [float(v) for v in h.astype(np.float32)]})
    bf = (x.view(np.uint32) >> 16).astype("<u2")
    bf_vals = dequantize(bf.view(np.uint8), gguf.GGMLQuantizationType.BF16).reshape(-1)
    out.append({"type": "BF16", "hex": bf.tobytes().hex(), "values": [float(v) for v in bf_vals]})
    out.append({"type": "F32", "hex": x.tobytes().hex(), "values": [float(v) for v in x]})
    return {"source": "gguf-py " + gguf.__version__ if hasattr(gguf, "__version__") else "gguf-py", "blocks": out}


def tensor_stats(path, per_type=3):
    """gguf-py statistics of up to `per_type` tensors of each ggml type, raw GGUF names, no permutation."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(path))
    seen = {}
    stats = []
    for t in reader.tensors:
        tname = t.tensor_type.name
        if seen.get(tname, 0) >= per_type and t.name not in ("blk.0.attn_q.weight", "blk.0.attn_k.weight"):
            continue
        seen[tname] = seen.get(tname, 0) + 1
        v = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1)
        n = v.size
        idx = np.linspace(0, n - 1, 16).astype(np.int64)
        stats.append({
            "name": t.name,
            "type": tname,
            "shape": [int(d) for d in reversed(t.shape.tolist())],
            "sum": float(v.sum()),
            "abs_sum": float(np.abs(v).sum()),
            "first": rounded(v[:8]),
            "strided_index": [int(i) for i in idx],
            "strided": rounded(v[idx]),
        })
    return stats


def tokenizer_reference(tok, gguf_name):
    return {
        "gguf_file": gguf_name,
        "texts": [{"text": t, "ids": tok.encode(t, add_special_tokens=False)} for t in TEXTS],
        "chats": [
            {**c, "rendered": tok.apply_chat_template(c["messages"], tokenize=False,
                                                       add_generation_prompt=c["add_generation_prompt"])}
            for c in CHATS
        ],
    }


def smollm2_reference():
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(SMOL.parent), gguf_file=SMOL.name)
    model = AutoModelForCausalLM.from_pretrained(str(SMOL.parent), gguf_file=SMOL.name, dtype=torch.float32)
    model.eval()

    ref = tokenizer_reference(tok, SMOL.name)
    ref["transformers"] = transformers.__version__
    ref["torch"] = torch.__version__
    ref["gguf_tensors"] = tensor_stats(SMOL)

    # HF-named weights as transformers loaded them (q/k un-permuted), a few rows each.
    sd = model.state_dict()
    hf = []
    for name in [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.29.mlp.down_proj.weight",
        "model.norm.weight",
    ]:
        w = sd[name].to(torch.float64)
        flat = w.reshape(-1)
        hf.append({
            "name": name,
            "shape": list(w.shape),
            "sum": float(flat.sum()),
            "rows": {str(r): rounded(w[r, :8].tolist()) for r in ([0, 1, 2, 33, 64] if w.dim() == 2 else [])},
            "first": rounded(flat[:8].tolist()),
        })
    ref["hf_tensors"] = hf
    ref["config"] = {k: v for k, v in model.config.to_dict().items()
                     if k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                              "num_attention_heads", "num_key_value_heads", "rms_norm_eps", "rope_theta",
                              "max_position_embeddings", "tie_word_embeddings", "bos_token_id", "eos_token_id",
                              "pad_token_id", "head_dim")}

    ref["logits"] = logits_reference(model, tok, CHAT_MESSAGE)
    return ref


def logits_reference(model, tok, message, top_k=0):
    """transformers' f32 logits for the chat-templated `message` (the first LOGIT_SLICE vocabulary
    entries, argmax, max and logsumexp of every position; with `top_k`, also the ids and logits of
    the top_k entries of every position) and its GREEDY_TOKENS-token greedy continuation."""
    import torch

    prompt = tok.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                     add_generation_prompt=True)
    ids = tok.encode(prompt, add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].to(torch.float64)
        gen = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=GREEDY_TOKENS, pad_token_id=tok.pad_token_id)
    new = gen[0, len(ids):].tolist()
    out = {
        "prompt": prompt,
        "ids": ids,
        "slice": LOGIT_SLICE,
        "first": [rounded(row[:LOGIT_SLICE].tolist()) for row in logits],
        "argmax": [int(i) for i in logits.argmax(-1)],
        "max": rounded(logits.max(-1).values.tolist()),
        "logsumexp": rounded(torch.logsumexp(logits, -1).tolist()),
    }
    if top_k:
        top = logits.topk(top_k, dim=-1)
        out["top_ids"] = [[int(i) for i in row] for row in top.indices]
        out["top"] = [rounded(row.tolist()) for row in top.values]
        # How far each greedy step was from a tie (top-1 minus top-2 logit, full recompute, f32):
        # a margin far above the parity tolerance makes the greedy check meaningful.
        with torch.no_grad():
            full = model(gen).logits[0, len(ids) - 1:-1].to(torch.float64)
        top2 = full.topk(2, dim=-1).values
        out["greedy_min_margin"] = float(f"{float((top2[:, 0] - top2[:, 1]).min()):.4g}")
    out["greedy_ids"] = new
    out["greedy_text"] = tok.decode(new, skip_special_tokens=True)
    return out


def qwen_reference():
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(QWEN.parent), gguf_file=QWEN.name)
    ref = tokenizer_reference(tok, QWEN.name)
    ref["gguf_tensors"] = tensor_stats(QWEN, per_type=2)

    # transformers dequantises every tensor of the same GGUF to f32 (Qwen2: q/k/v biases, rope
    # theta 1e6, a separate output.weight).
    model = AutoModelForCausalLM.from_pretrained(str(QWEN.parent), gguf_file=QWEN.name, dtype=torch.float32)
    model.eval()
    ref["transformers"] = transformers.__version__
    ref["torch"] = torch.__version__
    ref["logits"] = logits_reference(model, tok, QWEN_CHAT_MESSAGE, top_k=QWEN_TOP_K)
    return ref


def write(name, obj):
    path = FIXTURES / name
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def main():
    parts = sys.argv[1:] or ["quants", "smollm2", "qwen"]
    unknown = set(parts) - {"quants", "smollm2", "qwen"}
    if unknown:
        sys.exit(f"unknown fixture(s) {sorted(unknown)}: choose from quants, smollm2, qwen (default: all)")
    FIXTURES.mkdir(exist_ok=True)
    if "quants" in parts:
        write("gguf_quant_blocks.json", quant_blocks())
    if "smollm2" in parts:
        if not SMOL.exists():
            sys.exit(f"{SMOL} is missing: run bridge-models/scripts/fetch_models.sh first")
        write("smollm2_gguf_reference.json", smollm2_reference())
    if "qwen" in parts:
        if QWEN.exists():
            write("qwen25_gguf_reference.json", qwen_reference())
        else:
            print(f"{QWEN} absent: skipping the Qwen2.5 fixture (fetch_models.sh --qwen)")


if __name__ == "__main__":
    main()
