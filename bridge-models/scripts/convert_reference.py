#!/usr/bin/env python3
"""Fixtures of the GGUF -> HF conversion tests (`bridge-models/tests/convert.rs`, `tests/models.rs`).

Run it in a venv OUTSIDE the repository with torch, transformers, safetensors, numpy and gguf
(`python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch transformers gguf numpy
safetensors`). Three steps, from the repository root:

    # 1. a tiny llama GGUF written by llama.cpp's own writer (gguf-py): F32, F16, Q8_0 and Q4_0
    #    tensors, llama's Q/K row permutation, a byte-level BPE tokenizer and a chat template
    /tmp/hfvenv/bin/python bridge-models/scripts/convert_reference.py tiny-gguf \
        bridge-models/fixtures/tiny_gguf/model.gguf
    # 2. our converter: GGUF -> HF directory
    cargo run --release --example convert -- --model bridge-models/fixtures/tiny_gguf/model.gguf \
        --out /tmp/tiny-hf --overwrite
    # 3. transformers loads that directory (AutoModelForCausalLM, AutoTokenizer) and writes what
    #    it computes
    /tmp/hfvenv/bin/python bridge-models/scripts/convert_reference.py reference /tmp/tiny-hf \
        bridge-models/fixtures/tiny_gguf/transformers.json

and for the real SmolLM2 (after `bridge-models/scripts/fetch_models.sh`):

    cargo run --release --example convert -- --model ~/.cache/bridge-models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --out /tmp/smol-hf --overwrite
    /tmp/hfvenv/bin/python bridge-models/scripts/convert_reference.py reference /tmp/smol-hf \
        bridge-models/fixtures/smollm2_convert_reference.json

The reference holds: the transformers/torch versions, the `config.json` transformers read, every
tensor's shape and sums as read by `safetensors`, the token ids transformers' tokenizer gives for a
few texts (no special tokens added), the chat rendering of one question, and, for that rendered
prompt, the logits transformers computes (the first N of each position, `--slice N`, default 64,
plus each position's argmax, max and logsumexp over the whole vocabulary; 6 decimals) and its
greedy continuation.
"""

import json
import sys
from pathlib import Path

import numpy as np

TEXTS = [
    "the cat sat on the mat",
    "What is 12 + 7? The answer is 19; 2024-11-27 and 3.14159.",
    "  leading spaces,\ttabs\nand newlines  ",
    "Ünïcödé — ∑ 😀",
]
QUESTION = "What is 12 + 7? Answer with a number."
GREEDY_TOKENS = 12


def permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf `LlamaModel.permute` of Q/K rows (HF -> GGUF order)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def tiny_gguf(out):
    import gguf

    rng = np.random.default_rng(20261205)
    arch, hidden, ffn, layers, heads, kv_heads = "llama", 64, 128, 2, 4, 2
    head_dim = hidden // heads
    alphabet = bytes_to_unicode()
    tokens = [alphabet[b] for b in range(256)]
    merges = ["Ġ t", "h e", "Ġt he", "i n", "e r", "Ġ a", "o n", "r e", "Ġ s", "a t", "Ġ c", "Ġc at"]
    tokens += [m.replace(" ", "") for m in merges]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    n_regular = len(tokens)
    tokens += specials
    vocab = len(tokens)
    types = [1] * n_regular + [3] * len(specials)
    template = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )

    w = gguf.GGUFWriter(str(out), arch)
    w.add_name("tiny-llama-for-convert-tests")
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(n_regular + 1)
    w.add_eos_token_id(n_regular + 2)
    w.add_pad_token_id(n_regular + 2)
    w.add_add_bos_token(False)
    w.add_chat_template(template)

    Q = gguf.GGMLQuantizationType

    def add(name, arr, qtype):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if qtype == Q.F32:
            w.add_tensor(name, arr)
        elif qtype == Q.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)

    def mat(rows, cols, scale):
        return rng.standard_normal((rows, cols)).astype(np.float32) * scale

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)

    add("token_embd.weight", mat(vocab, hidden, 0.5), Q.F16)
    add("output_norm.weight", norm(), Q.F32)
    for l in range(layers):
        p = f"blk.{l}"
        add(f"{p}.attn_norm.weight", norm(), Q.F32)
        add(f"{p}.ffn_norm.weight", norm(), Q.F32)
        add(f"{p}.attn_q.weight", permute(mat(heads * head_dim, hidden, 0.2), heads), Q.Q8_0)
        add(f"{p}.attn_k.weight", permute(mat(kv_heads * head_dim, hidden, 0.2), kv_heads), Q.Q8_0)
        add(f"{p}.attn_v.weight", mat(kv_heads * head_dim, hidden, 0.2), Q.F32)
        add(f"{p}.attn_output.weight", mat(hidden, heads * head_dim, 0.15), Q.Q8_0)
        add(f"{p}.ffn_gate.weight", mat(ffn, hidden, 0.15), Q.Q8_0)
        add(f"{p}.ffn_up.weight", mat(ffn, hidden, 0.15), Q.Q4_0)
        add(f"{p}.ffn_down.weight", mat(hidden, ffn, 0.1), Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {out} ({Path(out).stat().st_size} bytes, vocab {vocab})")


def rounded(x):
    """Floats to 6 decimals (logits: far below the tests' tolerance; keeps the fixture small)."""
    return [rounded(v) for v in x] if isinstance(x, list) else round(x, 6)


def reference(hf_dir, out, slice_):
    import safetensors.numpy
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    hf_dir = Path(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(hf_dir)
    tensors = safetensors.numpy.load_file(hf_dir / "model.safetensors")
    ref = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "model_class": type(model).__name__,
        "tokenizer_class": type(tok).__name__,
        "config": json.loads((hf_dir / "config.json").read_text()),
        "tensors": {
            k: {"shape": list(v.shape), "sum": float(v.astype(np.float64).sum()), "abs_sum": float(np.abs(v.astype(np.float64)).sum())}
            for k, v in sorted(tensors.items())
        },
        "texts": [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in TEXTS],
    }
    messages = [{"role": "user", "content": QUESTION}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
        greedy = model.generate(
            torch.tensor([ids]), max_new_tokens=GREEDY_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(ids):].tolist()
    entry = {
        "question": QUESTION,
        "prompt": prompt,
        "ids": ids,
        "argmax": logits.argmax(-1).tolist(),
        "max": logits.max(-1).values.tolist(),
        "logsumexp": torch.logsumexp(logits, -1).tolist(),
        "greedy_ids": greedy,
        "greedy_text": tok.decode(greedy, skip_special_tokens=True),
    }
    entry["slice"] = slice_
    entry["first"] = logits[:, :slice_].tolist()
    for k in ("max", "logsumexp", "first"):
        entry[k] = rounded(entry[k])
    ref["chat"] = entry
    Path(out).write_text(json.dumps(ref, indent=1) + "\n")
    print(f"wrote {out}: {len(ids)} prompt tokens, greedy {greedy} = {entry['greedy_text']!r}")


def main(argv):
    if len(argv) >= 2 and argv[0] == "tiny-gguf":
        tiny_gguf(argv[1])
    elif len(argv) >= 3 and argv[0] == "reference":
        slice_ = int(argv[argv.index("--slice") + 1]) if "--slice" in argv else 64
        reference(argv[1], argv[2], slice_)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
