#!/usr/bin/env python3
"""Writes tests/fixtures/kquants/: blocks of every ggml block type the engines run, as
llama.cpp itself quantises them, with gguf-py's dequantised values.

Needs llama.cpp's Python binding and gguf-py (the peer the llama.cpp tests use):

    .tools/llama-cpp-python-0.3.36/bin/python tools/make_kquant_fixture.py

It writes two tiny random-weight F32 Qwen3 GGUFs into a temporary folder (the tokenizer of
tools/make_gguf_fixture.py): one whose widths are all multiples of 256 (dim 256, feed-forward
512) and one whose feed-forward width, 320, is not, so llama.cpp falls back from K-quants to
its 32-value types for ffn_down. Both are quantised with `llama_model_quantize` to Q4_K_M,
Q5_K_M, Q6_K, Q5_0, Q4_1, Q5_1, Q8_0 and Q4_0. From the results it keeps, per ggml type, the
first BLOCKS_PER_TENSOR blocks of up to TENSORS_PER_TYPE tensors:

    <TYPE>.blocks   the raw blocks, back to back
    <TYPE>.f32      gguf.quants.dequantize of those bytes: little-endian fp32 values
    manifest.json   where each type's blocks came from, and the type llama.cpp chose for
                    every matrix of every quantised file (the fallbacks are visible there)
"""

from __future__ import annotations

import ctypes
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import gguf
import llama_cpp
from gguf import GGMLQuantizationType as Q

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_gguf_fixture import SPECIALS, byte_alphabet, learn_merges  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "kquants"
TYPES = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K]
BLOCKS_PER_TENSOR = 4
TENSORS_PER_TYPE = 6
# llama.cpp's llama_ftype numbers (llama.h)
FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}
SHAPES = {"w256": dict(dim=256, hidden=512), "w320": dict(dim=256, hidden=320)}
LAYERS, HEADS, KV_HEADS, HEAD_DIM, CONTEXT = 2, 4, 2, 64, 256


def write_f32_model(path: Path, dim: int, hidden: int, seed: int) -> None:
    """A tiny F32 Qwen3 GGUF (the layout tools/make_gguf_fixture.py writes)."""
    rng = np.random.default_rng(seed)
    alphabet = byte_alphabet()
    merges = learn_merges(alphabet)
    tokens = alphabet + [a + b for a, b in merges] + SPECIALS
    types = [gguf.TokenType.NORMAL] * (len(tokens) - len(SPECIALS)) + [gguf.TokenType.CONTROL] * len(SPECIALS)
    w = gguf.GGUFWriter(str(path), "qwen3")
    w.add_name("kquant-tiny")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(hidden)
    w.add_block_count(LAYERS)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)

    def matrix(rows: int, cols: int, std: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    vocab = len(tokens)
    w.add_tensor("token_embd.weight", matrix(vocab, dim, 1.0))
    w.add_tensor("output_norm.weight", norm(dim))
    w.add_tensor("output.weight", matrix(vocab, dim, 0.5))
    q_dim, kv_dim = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    for l in range(LAYERS):
        b = f"blk.{l}."
        w.add_tensor(b + "attn_norm.weight", norm(dim))
        w.add_tensor(b + "attn_q.weight", matrix(q_dim, dim, dim**-0.5))
        w.add_tensor(b + "attn_k.weight", matrix(kv_dim, dim, dim**-0.5))
        w.add_tensor(b + "attn_v.weight", matrix(kv_dim, dim, dim**-0.5))
        w.add_tensor(b + "attn_output.weight", matrix(dim, q_dim, q_dim**-0.5))
        w.add_tensor(b + "attn_q_norm.weight", norm(HEAD_DIM))
        w.add_tensor(b + "attn_k_norm.weight", norm(HEAD_DIM))
        w.add_tensor(b + "ffn_norm.weight", norm(dim))
        w.add_tensor(b + "ffn_gate.weight", matrix(hidden, dim, dim**-0.5))
        w.add_tensor(b + "ffn_up.weight", matrix(hidden, dim, dim**-0.5))
        w.add_tensor(b + "ffn_down.weight", matrix(dim, hidden, hidden**-0.5))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize(src: Path, dst: Path, ftype: int) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src.name} -> ftype {ftype}) returned {rc}")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    picked: dict[int, list[tuple[bytes, str]]] = {int(t): [] for t in TYPES}
    chosen: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for shape_name, shape in SHAPES.items():
            f32 = Path(tmp) / f"{shape_name}-f32.gguf"
            write_f32_model(f32, shape["dim"], shape["hidden"], seed=len(chosen) + 7)
            for ftype_name, ftype in FTYPES.items():
                out = Path(tmp) / f"{shape_name}-{ftype_name}.gguf"
                quantize(f32, out, ftype)
                reader = gguf.GGUFReader(str(out))
                key = f"{shape_name} {ftype_name}"
                chosen[key] = {}
                for t in reader.tensors:
                    if len(t.shape) < 2 or t.shape[1] == 1:
                        continue
                    chosen[key][t.name] = t.tensor_type.name
                    tt = int(t.tensor_type)
                    if tt not in picked or len(picked[tt]) >= TENSORS_PER_TYPE:
                        continue
                    block_bytes = gguf.GGML_QUANT_SIZES[t.tensor_type][1]
                    raw = np.asarray(t.data).reshape(-1).view(np.uint8)
                    picked[tt].append((raw[: BLOCKS_PER_TENSOR * block_bytes].tobytes(), f"{key}: {t.name}"))
    manifest = {"llama_cpp_python": llama_cpp.__version__, "types": {}, "chosen": chosen}
    for t in TYPES:
        entries = picked[int(t)]
        if not entries:
            raise RuntimeError(f"no quantised file held a {t.name} tensor")
        blocks = b"".join(e[0] for e in entries)
        values = gguf.quants.dequantize(np.frombuffer(blocks, dtype=np.uint8), t).astype("<f4")
        (OUT / f"{t.name}.blocks").write_bytes(blocks)
        (OUT / f"{t.name}.f32").write_bytes(values.tobytes())
        manifest["types"][t.name] = [e[1] for e in entries]
        print(f"{t.name}: {len(blocks)} bytes of blocks from {len(entries)} tensors")
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
