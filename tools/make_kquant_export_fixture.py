#!/usr/bin/env python3
"""Writes tests/fixtures/kquant_export/ with llama.cpp's own quantiser and dequantiser.

The reference for the GGUF export's block quantisers (src/formats/kquants.ts,
src/formats/block32_quants.ts) and its tensor-type mixtures (src/export/gguf_mixture.ts),
checked by tests/kquant_export_test.ts. Run by hand with the llama-cpp-python peer (it has
llama_cpp, gguf and numpy; `deno task bench:compare` builds it into .tools/):

    .tools/llama-cpp-python-0.3.36/bin/python tools/make_kquant_export_fixture.py

What it writes (about 0.65 MB):
  input.f32                 ROWS x COLS float32 rows: Gaussian rows of many scales, bf16-rounded
                            rows, and edge cases (zeros, constants, all-positive, one zero
                            sub-block, outliers, values on a grid of ties, tiny and huge values)
  <type>.bin                llama.cpp's blocks of those rows, for Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K
                            Q6_K:
                            an F32 GGUF holding the rows as token_embd.weight is quantised by
                            llama_cpp.llama_model_quantize (pure: every matrix the ftype's base
                            type, no importance matrix) and the tensor's bytes read back with gguf
  <type>.dequant.f32        gguf-py's gguf.quants.dequantize of those blocks
  manifest.json             shapes, versions, and for each mixture (q4_k_m, q5_k_m, q6_k, q5_0,
                            q5_1, q4_1) x model shape (8 layers untied and tied at width 256,
                            untied at widths 288 and 48 to hit the fallbacks, F16 included) the
                            type llama.cpp gives
                            every tensor and the general.file_type it writes
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

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "kquant_export"
COLS = 256
# The mixtures checked, by llama_ftype (llama.h).
FTYPES = {"q4_1": 3, "q5_0": 8, "q5_1": 9, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}
# The block types checked, by the ftype whose base type they are (llama-quant.cpp's
# llama_ftype_get_default_type); Q8_0 is the fallback of Q6_K.
BLOCK_FTYPES = {"Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7, "Q4_K": 15, "Q5_K": 17, "Q6_K": 18}


def bf16_round(x: np.ndarray) -> np.ndarray:
    """fp32 -> bf16 -> fp32, rounding to nearest even (as real checkpoints hold weights)."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32)


def test_rows() -> np.ndarray:
    rng = np.random.default_rng(20261203)
    rows = []
    for scale in [1e-3, 3e-3, 1e-2, 0.02, 0.05, 0.1, 0.3, 1.0]:
        for _ in range(3):
            rows.append(rng.normal(0, scale, COLS))
    for _ in range(8):
        rows.append(bf16_round(rng.normal(0, 0.02, COLS)))
    rows.append(rng.laplace(0, 0.05, COLS))
    rows.append(rng.standard_t(2, COLS) * 0.01)
    rows.append(np.zeros(COLS))
    rows.append(np.full(COLS, 0.5))
    rows.append(rng.uniform(0.1, 1.0, COLS))  # all positive: the fit's min clamps to 0
    rows.append(-rng.uniform(0.1, 1.0, COLS))
    r = rng.normal(0, 0.05, COLS)
    r[32:64] = 0  # one zero sub-block (zero scale: the fit's levels are kept)
    r[160:176] = 0
    rows.append(r)
    r = rng.normal(0, 0.01, COLS)
    r[7] = 2.0  # one outlier
    r[200] = -3.0
    rows.append(r)
    rows.append(np.round(rng.normal(0, 1, COLS) * 4) / 8)  # a grid: rounding ties
    rows.append(rng.integers(-8, 8, COLS) / 16.0)
    rows.append(rng.normal(0, 1e-6, COLS))  # fp16 scales near the subnormal range
    rows.append(rng.normal(0, 1e-9, COLS))  # fp16 scales underflow to zero
    rows.append(rng.normal(0, 1e-17, COLS))  # under ggml's GROUP_MAX_EPS
    rows.append(rng.normal(0, 300, COLS))
    r = rng.normal(0, 0.05, COLS)
    r[::2] = np.abs(r[::2])
    rows.append(r)
    r = np.linspace(-1, 1, COLS)
    rows.append(r)
    rows.append(np.sin(np.arange(COLS) * 0.37) * 0.1)
    while len(rows) < 64:
        rows.append(rng.normal(0, 0.04, COLS) * rng.uniform(0.5, 2.0, COLS))
    return np.stack(rows).astype(np.float32)


def write_model(path: Path, tensors: dict[str, np.ndarray], dim: int, hidden: int, layers: int,
                heads: int, kv_heads: int, head_dim: int) -> None:
    """An F32 GGUF with Qwen3's architecture keys (what llama_model_quantize reads)."""
    w = gguf.GGUFWriter(str(path), "qwen3")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(hidden)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(0)
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize(src: Path, dst: Path, ftype: int, pure: bool) -> None:
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.pure = pure
    p.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"llama_model_quantize({src}, ftype {ftype}) failed: {rc}")


def qwen3_tensors(dim: int, hidden: int, layers: int, heads: int, kv_heads: int, head_dim: int,
                  tied: bool, vocab: int = 32) -> dict[str, np.ndarray]:
    """Every tensor of a Qwen3 in GGUF order (numpy shapes: rows, cols), small random values."""
    rng = np.random.default_rng(7)

    def m(rows: int, cols: int) -> np.ndarray:
        return rng.normal(0, 0.02, (rows, cols)).astype(np.float32)

    out = {"token_embd.weight": m(vocab, dim), "output_norm.weight": np.ones(dim, np.float32)}
    if not tied:
        out["output.weight"] = m(vocab, dim)
    for i in range(layers):
        b = f"blk.{i}."
        out[b + "attn_norm.weight"] = np.ones(dim, np.float32)
        out[b + "attn_q.weight"] = m(heads * head_dim, dim)
        out[b + "attn_k.weight"] = m(kv_heads * head_dim, dim)
        out[b + "attn_v.weight"] = m(kv_heads * head_dim, dim)
        out[b + "attn_output.weight"] = m(dim, heads * head_dim)
        out[b + "attn_q_norm.weight"] = np.ones(head_dim, np.float32)
        out[b + "attn_k_norm.weight"] = np.ones(head_dim, np.float32)
        out[b + "ffn_norm.weight"] = np.ones(dim, np.float32)
        out[b + "ffn_gate.weight"] = m(hidden, dim)
        out[b + "ffn_up.weight"] = m(hidden, dim)
        out[b + "ffn_down.weight"] = m(dim, hidden)
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rows = test_rows()
    (OUT / "input.f32").write_bytes(rows.tobytes())
    manifest: dict = {
        "generator": "tools/make_kquant_export_fixture.py",
        "llama_cpp_python": llama_cpp.__version__,
        "rows": int(rows.shape[0]),
        "cols": COLS,
        "types": {},
        "mixtures": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        # 1. Blocks of each type: the rows as the one matrix of a minimal Qwen3 file.
        src = tmpd / "rows_f32.gguf"
        write_model(src, {"token_embd.weight": rows}, COLS, 512, 1, 2, 1, 128)
        for base, ftype in BLOCK_FTYPES.items():
            dst = tmpd / f"rows_{base}.gguf"
            quantize(src, dst, ftype, pure=True)
            t = next(t for t in gguf.GGUFReader(str(dst)).tensors if t.name == "token_embd.weight")
            if t.tensor_type.name != base:
                sys.exit(f"{dst}: token_embd.weight is {t.tensor_type.name}, expected {base}")
            raw = np.asarray(t.data).tobytes()
            (OUT / f"{base}.bin").write_bytes(raw)
            deq = gguf.quants.dequantize(np.frombuffer(raw, np.uint8), t.tensor_type)
            (OUT / f"{base}.dequant.f32").write_bytes(np.asarray(deq, np.float32).tobytes())
            manifest["types"][base] = {"type": int(t.tensor_type), "bytes": len(raw)}
        # 2. The type each tensor gets in each mixture.
        shapes = [
            ("untied_256", dict(dim=256, hidden=512, layers=8, heads=2, kv_heads=1, head_dim=128,
                                tied=False)),
            ("tied_256", dict(dim=256, hidden=512, layers=8, heads=2, kv_heads=1, head_dim=128,
                              tied=True)),
            ("untied_288", dict(dim=288, hidden=544, layers=8, heads=3, kv_heads=1, head_dim=96,
                                tied=False)),
            # Widths that are not multiples of 32 either: llama.cpp falls back to F16.
            ("untied_48", dict(dim=48, hidden=80, layers=8, heads=2, kv_heads=1, head_dim=24,
                               tied=False)),
        ]
        for shape_name, s in shapes:
            src = tmpd / f"{shape_name}_f32.gguf"
            tensors = qwen3_tensors(**s)
            write_model(src, tensors, s["dim"], s["hidden"], s["layers"], s["heads"],
                        s["kv_heads"], s["head_dim"])
            for ftype_name, ftype in FTYPES.items():
                dst = tmpd / f"{shape_name}_{ftype_name}.gguf"
                quantize(src, dst, ftype, pure=False)
                r = gguf.GGUFReader(str(dst))
                ft = r.fields["general.file_type"]
                manifest["mixtures"].append({
                    "shape": shape_name,
                    **{k: v for k, v in s.items()},
                    "mixture": ftype_name,
                    "file_type": int(ft.parts[ft.data[0]][0]),
                    "tensors": {t.name: int(t.tensor_type) for t in r.tensors},
                })
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
