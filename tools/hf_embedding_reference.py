#!/usr/bin/env python3
"""A tiny random Qwen3-Embedding-shaped model and its Hugging Face transformers embeddings.

The independent reference for `Qwen3.embed` (tests/embed_test.ts): transformers builds a
small random `Qwen3Model` (the bare body, no lm_head: how the Qwen3-Embedding checkpoints
are saved), saves it with `save_pretrained`, and records the embeddings of a few texts as
the Qwen3-Embedding model card computes them: each input is the text (a query with the
instruction prefix `Instruct: {task}\\nQuery:{query}`) tokenized with the real Qwen3
tokenizer, followed by `<|endoftext|>` (151643); the embedding is the final (normed) hidden
state of that last token (last-token pooling), L2-normalised. Run it by hand (not in CI):

    python3 tools/hf_embedding_reference.py      # writes tests/fixtures/hf_tiny_embedding/

It uses the virtual environment of tools/hf_reference.py (.tools/hf-venv, the same pinned
torch, transformers and safetensors), creating it first if needed.

What it writes under tests/fixtures/hf_tiny_embedding/:
  config.json                 as save_pretrained writes it (architectures ["Qwen3Model"])
  model.safetensors.gz        the BF16 weights, gzip'd (tensor names without `model.`)
  tokenizer_config.json       the real Qwen3 one (the test copies tokenizer.json)
  reference.json              inputs, token ids, and transformers' normalised embeddings

Size: the real tokenizer's ids need 151936 embedding rows. Only the rows of tokens the texts
use get random values; every other row is zero, so gzip shrinks the table to almost nothing.
The reference is the fp32 forward (eager attention) of the BF16-rounded weights.

A random model's last-token states tend to look alike (every input ends with the same
token), which would make "cosine >= 0.999 to the reference" a weak test. The attention and
MLP output projections are therefore drawn larger than the usual 1/sqrt(fan_in), so the
context moves the last state; the script prints, and reference.json records, the largest
cosine between the embeddings of two different texts, which the test requires to stay far
below its thresholds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import hf_reference as hr  # noqa: E402  (same venv, pins, tokenizer folder and helpers)

OUT = hr.FIXTURES / "hf_tiny_embedding"
ENDOFTEXT = 151643
SEED = 7

CONFIG = {
    "vocab_size": 151936,
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "tie_word_embeddings": True,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "attention_bias": False,
}

TASK = "Given a web search query, retrieve relevant passages that answer the query"

# Queries carry the instruction; documents are embedded as they are (the model card's usage).
INPUTS = [
    {"name": "query_capital", "instruction": TASK, "text": "What is the capital of China?"},
    {"name": "query_gravity", "instruction": TASK, "text": "Explain gravity"},
    {"name": "doc_capital", "text": "The capital of China is Beijing."},
    {
        "name": "doc_gravity",
        "text": "Gravity is a force that attracts two bodies towards each other. It gives "
                "weight to physical objects and is responsible for the movement of planets "
                "around the sun.",
    },
    {"name": "unicode_digits", "text": "On 20250101 the café paid €3.14 (π)."},
    {"name": "single_word", "text": "sea"},
]


def ensure_venv() -> None:
    """Re-runs this script inside hf_reference.py's venv, creating it first if needed."""
    python = hr.VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == hr.VENV.resolve():
        return
    if not python.exists():
        print(f"creating {hr.VENV} and installing {' '.join(hr.PINS)} from PyPI", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(hr.VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *hr.PINS], check=True)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def rendered(entry: dict) -> str:
    """The model card's input text: `Instruct: {task}\\nQuery:{query}` for a query."""
    if "instruction" in entry:
        return f"Instruct: {entry['instruction']}\nQuery:{entry['text']}"
    return entry["text"]


def build_model(used_ids: list[int]):
    import torch
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(**CONFIG, attn_implementation="eager")
    torch.manual_seed(SEED)
    model = Qwen3Model(config).eval()
    gen = torch.Generator().manual_seed(SEED)
    used = torch.tensor(sorted(set(used_ids)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "embed_tokens.weight":
                values = torch.zeros(p.shape)
                values[used] = torch.randn((len(used), p.shape[1]), generator=gen)
            elif p.dim() == 1:
                values = 1 + 0.1 * torch.randn(p.shape, generator=gen)
            else:
                # o_proj and down_proj larger: the context must move the last token's state
                gain = 3.0 if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
                values = gain * torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5
            p.copy_(values.to(torch.bfloat16).to(torch.float32))
    return model


def embed(model, ids: list[int]):
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        out = model(torch.tensor([ids], dtype=torch.long), use_cache=False)
    last = out.last_hidden_state[0, -1].to(torch.float32)
    return F.normalize(last, p=2, dim=0)


def main() -> None:
    ensure_venv()
    import torch
    import transformers
    from transformers import AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(str(hr.TOKENIZER_DIR))
    inputs = []
    for entry in INPUTS:
        text = rendered(entry)
        ids = tok(text, add_special_tokens=False).input_ids + [ENDOFTEXT]
        inputs.append({**entry, "input": text, "ids": ids})
    model = build_model([i for e in inputs for i in e["ids"]])
    vectors = [embed(model, e["ids"]) for e in inputs]
    worst_cross = -1.0
    for i, a in enumerate(vectors):
        for j, b in enumerate(vectors):
            if i < j:
                worst_cross = max(worst_cross, float(torch.dot(a, b)))
    print(f"largest cosine between two different texts: {worst_cross:.4f}", file=sys.stderr)
    gs = hr.group_size(CONFIG)
    sim = hr.w8a8_model(model, gs)
    worst_q8 = min(float(torch.dot(embed(sim, e["ids"]), v)) for e, v in zip(inputs, vectors))
    print(f"simulated W8A8 (group {gs}) smallest cosine to fp32: {worst_q8:.6f}", file=sys.stderr)

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    model.to(torch.bfloat16).save_pretrained(str(OUT))
    for f in sorted(OUT.glob("*.safetensors")):
        hr.gzip_file(f)
    shutil.copy(hr.TOKENIZER_DIR / "tokenizer_config.json", OUT / "tokenizer_config.json")
    reference = {
        "generator": "tools/hf_embedding_reference.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seed": SEED,
        "group_size": gs,
        "endoftext": ENDOFTEXT,
        "largest_cross_cosine": round(worst_cross, 6),
        "simulated_w8a8_min_cosine": round(worst_q8, 6),
        "note": "fp32 forward (eager attention) of BF16-rounded weights; embedding = "
                "last_hidden_state of the last token (<|endoftext|>), L2-normalised",
        "inputs": [
            {**e, "embedding": [hr.f32(x) for x in v.tolist()]} for e, v in zip(inputs, vectors)
        ],
    }
    (OUT / "reference.json").write_text(json.dumps(reference, ensure_ascii=False, indent=1) + "\n")
    size = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"  {OUT.relative_to(ROOT)}: {size / 1e6:.2f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
