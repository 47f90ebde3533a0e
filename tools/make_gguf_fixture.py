#!/usr/bin/env python3
"""Writes tests/fixtures/gguf_writer_tiny.gguf with llama.cpp's own GGUF tooling.

The PyPI package `gguf` (llama.cpp's gguf-py: GGUFWriter, and its numpy quantisers) writes a
tiny random-weight Qwen3 so the engines are tested on a file that nothing in this repository
wrote. Run by hand; the small output is committed:

    pip install gguf==0.19.0 numpy
    python3 tools/make_gguf_fixture.py

The model: dim 64, feed-forward 128, 2 blocks, 4 query heads and 2 key/value heads of 32,
untied classifier, and weight types mixed per tensor as quantised llama.cpp files mix them:
attention Q8_0, gate/up BF16, down Q4_0, embedding F16, classifier F32, norms F32. The
tokenizer is byte-level BPE over GPT-2's byte alphabet with merges learnt here from a short
English text (rank = order learnt), plus Qwen3's control tokens.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as Q

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "gguf_writer_tiny.gguf"

DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, CONTEXT = 64, 128, 2, 4, 2, 32, 256
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
CORPUS = (
    "The quick brown fox jumps over the lazy dog. The cat sat on the mat, and the dog sat "
    "on the log. Hello world! Hello there, how are you today? I am fine, thank you. "
    "Once upon a time there was a little model that wanted to read every token in order. "
    "Numbers like 2025 and 1234 are split into single digits. "
)
N_MERGES = 60


def byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode symbols: printable Latin-1 bytes stand for themselves, the
    others take code points from 256 on, in byte order."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    out, extra = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def learn_merges(alphabet: list[str]) -> list[tuple[str, str]]:
    """Greedy BPE on the corpus's pre-tokenised words (letters with an optional leading
    space, digits one by one, other runs), most frequent pair first, ties by the pair."""
    words = Counter(re.findall(r" ?[A-Za-z]+|[0-9]| ?[^\sA-Za-z0-9]+|\s+", CORPUS))
    seqs = {w: [alphabet[b] for b in w.encode()] for w in words}
    merges = []
    for _ in range(N_MERGES):
        pairs: Counter = Counter()
        for w, n in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        for w in seqs:
            s, out, i = seqs[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def main() -> int:
    rng = np.random.default_rng(20260101)
    alphabet = byte_alphabet()
    merges = learn_merges(alphabet)
    tokens = alphabet + [a + b for a, b in merges] + SPECIALS
    types = [gguf.TokenType.NORMAL] * (len(tokens) - len(SPECIALS)) + [gguf.TokenType.CONTROL] * len(SPECIALS)
    vocab = len(tokens)

    w = gguf.GGUFWriter(str(OUT), "qwen3")
    w.add_name("gguf-writer-tiny")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(DIM)
    w.add_feed_forward_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(
        "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
        "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
        "{%- endif %}"
    )

    def matrix(rows: int, cols: int, std: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def add(name: str, data: np.ndarray, qtype: Q) -> None:
        if qtype in (Q.F32,):
            w.add_tensor(name, data)
        elif qtype == Q.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    # A large embedding and classifier make the next-token distribution peaked, so
    # comparisons of probabilities mean something.
    add("token_embd.weight", matrix(vocab, DIM, 1.0), Q.F16)
    add("output_norm.weight", norm(DIM), Q.F32)
    add("output.weight", matrix(vocab, DIM, 0.5), Q.F32)
    q_dim, kv_dim = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    for l in range(LAYERS):
        b = f"blk.{l}."
        add(b + "attn_norm.weight", norm(DIM), Q.F32)
        add(b + "attn_q.weight", matrix(q_dim, DIM, DIM**-0.5), Q.Q8_0)
        add(b + "attn_k.weight", matrix(kv_dim, DIM, DIM**-0.5), Q.Q8_0)
        add(b + "attn_v.weight", matrix(kv_dim, DIM, DIM**-0.5), Q.Q8_0)
        add(b + "attn_output.weight", matrix(DIM, q_dim, q_dim**-0.5), Q.Q8_0)
        add(b + "attn_q_norm.weight", norm(HEAD_DIM), Q.F32)
        add(b + "attn_k_norm.weight", norm(HEAD_DIM), Q.F32)
        add(b + "ffn_norm.weight", norm(DIM), Q.F32)
        add(b + "ffn_gate.weight", matrix(HIDDEN, DIM, DIM**-0.5), Q.BF16)
        add(b + "ffn_up.weight", matrix(HIDDEN, DIM, DIM**-0.5), Q.BF16)
        add(b + "ffn_down.weight", matrix(DIM, HIDDEN, HIDDEN**-0.5), Q.Q4_0)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{OUT}: {OUT.stat().st_size} bytes, {vocab} tokens, {len(merges)} merges, gguf {gguf.__name__} "
          f"{getattr(gguf, '__version__', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
