"""Writes a Qwen3-30B-A3B-shaped GGUF (arch `qwen3moe`) with random weights for the MoE
benchmark (bench/compare_moe.ts), then quantises it with llama.cpp's own quantiser.

Shapes per block are Qwen3-30B-A3B's (its Hugging Face config.json: hidden_size 2048, 32
attention heads, 4 key/value heads, head_dim 128, 128 experts, 8 used per token,
moe_intermediate_size 768, vocab 151936, untied embeddings, rope_theta 1e6, rms eps 1e-6,
norm_topk_prob true); only the block count is smaller (`--layers`, 48 in the real model) so
the file fits a small machine. Tensors are generated one at a time (numpy, normal with
std 0.02, norms near 1) and streamed to an F16 GGUF with gguf-py, then
`llama_cpp.llama_model_quantize` turns it into `--type` (Q4_K_M by default: llama.cpp's
mix, so both engines read the same bytes). The tokenizer metadata comes from a Hugging Face
tokenizer.json (the same lists as src/formats/gguf_qwen3.ts writes).

Run with the llama-cpp-python peer's python (it has gguf, numpy and llama_cpp):

    .tools/llama-cpp-python-0.3.36/bin/python bench/make_moe_gguf.py OUT.gguf \
        --tokenizer bench/models/qwen3-0.6b-random/tokenizer.json [--layers 6] [--type q4_k_m]
"""

import argparse
import ctypes
import json
import os
import sys
import time

import numpy as np

SHAPE = {
    "dim": 2048,
    "n_heads": 32,
    "n_kv_heads": 4,
    "head_dim": 128,
    "n_experts": 128,
    "n_used": 8,
    "expert_hidden": 768,
    "vocab": 151936,
    "context": 40960,
    "rope_theta": 1000000.0,
    "rms_eps": 1e-6,
}

# llama.cpp's llama_ftype values (llama.h) for the types offered here.
FTYPES = {"q4_k_m": 15, "q4_0": 2, "q8_0": 7}

TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 1, 3, 4, 5


def tokenizer_lists(path, vocab):
    with open(path, encoding="utf-8") as f:
        tj = json.load(f)
    tokens = [None] * vocab
    types = [TOKEN_UNUSED] * vocab
    for text, i in tj["model"]["vocab"].items():
        if i < vocab:
            tokens[i], types[i] = text, TOKEN_NORMAL
    for t in tj["added_tokens"]:
        if t["id"] < vocab:
            tokens[t["id"]] = t["content"]
            types[t["id"]] = TOKEN_CONTROL if t["special"] else TOKEN_USER_DEFINED
    for i in range(vocab):
        if tokens[i] is None:
            tokens[i] = "[PAD%d]" % i
    merges = [m if isinstance(m, str) else "%s %s" % (m[0], m[1]) for m in tj["model"]["merges"]]
    ids = {t["content"]: t["id"] for t in tj["added_tokens"]}
    return tokens, types, merges, ids


def tensor_plan(n_layers):
    """(name, numpy shape outermost first, kind) in file order; kind picks dtype and values."""
    s = SHAPE
    dim, hd, ne, eh = s["dim"], s["head_dim"], s["n_experts"], s["expert_hidden"]
    q_dim, kv_dim = s["n_heads"] * hd, s["n_kv_heads"] * hd
    plan = [("token_embd.weight", (s["vocab"], dim), "matrix")]
    for l in range(n_layers):
        b = "blk.%d." % l
        plan += [
            (b + "attn_norm.weight", (dim,), "norm"),
            (b + "attn_q.weight", (q_dim, dim), "matrix"),
            (b + "attn_k.weight", (kv_dim, dim), "matrix"),
            (b + "attn_v.weight", (kv_dim, dim), "matrix"),
            (b + "attn_output.weight", (dim, q_dim), "matrix"),
            (b + "attn_q_norm.weight", (hd,), "norm"),
            (b + "attn_k_norm.weight", (hd,), "norm"),
            (b + "ffn_norm.weight", (dim,), "norm"),
            (b + "ffn_gate_inp.weight", (ne, dim), "router"),
            (b + "ffn_gate_exps.weight", (ne, eh, dim), "matrix"),
            (b + "ffn_up_exps.weight", (ne, eh, dim), "matrix"),
            (b + "ffn_down_exps.weight", (ne, dim, eh), "matrix"),
        ]
    plan += [("output_norm.weight", (dim,), "norm"), ("output.weight", (s["vocab"], dim), "matrix")]
    return plan


def values(rng, shape, kind):
    if kind == "norm":
        return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    if kind == "router":
        return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    # Matrices one outer slice at a time, so peak memory is one F16 tensor, not its F32 twin.
    out = np.empty(shape, dtype=np.float16)
    for i in range(shape[0]):
        out[i] = 0.02 * rng.standard_normal(shape[1:], dtype=np.float32)
    return out


def write_f16(path, n_layers, tokenizer, seed):
    import gguf

    s = SHAPE
    w = gguf.GGUFWriter(path, "qwen3moe")
    w.add_name("Qwen3-30B-A3B-shaped random (%d blocks)" % n_layers)
    w.add_file_type(1)  # MOSTLY_F16
    w.add_context_length(s["context"])
    w.add_embedding_length(s["dim"])
    w.add_block_count(n_layers)
    w.add_feed_forward_length(6144)  # config.json's intermediate_size (no dense block uses it)
    w.add_head_count(s["n_heads"])
    w.add_head_count_kv(s["n_kv_heads"])
    w.add_key_length(s["head_dim"])
    w.add_value_length(s["head_dim"])
    w.add_rope_freq_base(s["rope_theta"])
    w.add_layer_norm_rms_eps(s["rms_eps"])
    w.add_expert_count(s["n_experts"])
    w.add_expert_used_count(s["n_used"])
    w.add_expert_feed_forward_length(s["expert_hidden"])
    tokens, types, merges, ids = tokenizer_lists(tokenizer, s["vocab"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(ids["<|im_end|>"])
    w.add_pad_token_id(ids["<|endoftext|>"])
    w.add_bos_token_id(ids["<|endoftext|>"])
    w.add_add_bos_token(False)
    plan = tensor_plan(n_layers)
    for name, shape, kind in plan:
        dtype = np.float16 if kind == "matrix" else np.float32
        w.add_tensor_info(name, shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for name, shape, kind in plan:
        w.write_tensor_data(values(rng, shape, kind))
    w.close()


def quantize(src, dst, ftype, threads):
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit("llama_model_quantize(%s -> %s) failed with %d" % (src, dst, rc))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--type", default="q4_k_m", choices=sorted(FTYPES))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep-f16", action="store_true")
    args = ap.parse_args()
    f16 = args.out + ".f16.tmp"
    t0 = time.time()
    write_f16(f16, args.layers, args.tokenizer, args.seed)
    print("wrote %s in %.0f s" % (f16, time.time() - t0), file=sys.stderr)
    t0 = time.time()
    quantize(f16, args.out + ".tmp", FTYPES[args.type], args.threads)
    os.replace(args.out + ".tmp", args.out)
    print("quantised to %s in %.0f s" % (args.out, time.time() - t0), file=sys.stderr)
    if args.keep_f16:
        os.replace(f16, args.out[: -len(".gguf")] + "-f16.gguf" if args.out.endswith(".gguf") else args.out + ".f16")
    else:
        os.remove(f16)


if __name__ == "__main__":
    main()
