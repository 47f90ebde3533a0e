#!/usr/bin/env python3
"""A tiny random Qwen3MoeForCausalLM and its Hugging Face transformers logits.

The independent reference for the mixture-of-experts path (GGUF arch `qwen3moe`) of
`qwen3 export` and both engines (tests/moe_test.ts). Same method and output layout as
tools/hf_reference.py (whose helpers it imports; read its docstring): a small random model
built by transformers itself, saved with `save_pretrained` (BF16 safetensors, gzip'd), and
transformers' fp32 logits for the same prompts (each position's top 16 and 64 probe ids).
Run it by hand (not in CI), with the venv that script creates:

    .tools/hf-venv/bin/python tools/hf_moe_reference.py   # writes tests/fixtures/hf_tiny_moe_bf16/
    .tools/hf-venv/bin/python tools/hf_moe_reference.py --no-norm   # hf_tiny_moe_nonorm/

`--no-norm` records the same model (the seed the first run chose, read from its
reference.json) with norm_topk_prob false: each chosen expert weighs its softmax probability
over all experts, not renormalised over the k. Routing does not depend on that flag, so the
seed's router gaps still hold; the W8A8 argmax and error checks are run again. Only its
config.json and reference.json are written (the weights are hf_tiny_moe_bf16's), so the
fixture stays ~100 KB.

The model: hidden 64, 2 layers, 8 experts of width 32, top-2, norm_topk_prob true; layer 0
is sparse and layer 1 a dense SwiGLU of width 96 (mlp_only_layers [1]), so the export and
engines see both kinds of block. One sparse block, not more: every routing decision near a
tie is a chance for the Q8 path to pick another expert (and move the logits by far more
than the dense path's bound), and with two sparse blocks no seed below 300 was clean. Tied embeddings keep the 151936-row table to one copy.

Seed choice: as in hf_reference.py, the first seed at which a W8A8 simulation (weights and
every matmul input through Q8 groups; the router stays fp32, as in the engines) picks
transformers' argmax at every position with a gap of at least MIN_GAP deviations and stays
within MAX_SIM_ERROR deviations of its logits where the test compares them (each position's
top 16 and the probe ids; the test allows 0.1), and at which, in both
the fp32 model and the simulation, the k-th and (k+1)-th router logits of every token of
every sparse block are at least MIN_ROUTER_GAP apart. The simulation may route a token
differently from fp32 (its router input carries the Q8 errors, as the engines' does); the
engines then route as the simulation does. The simulation already has the
engines' Q8 errors in the router input; what is left between it and an engine is fp32
rounding order (~1e-6 relative), so a gap of 0.0005 is far beyond it.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hf_reference as base  # noqa: E402

MIN_ROUTER_GAP = 0.0005
MAX_SIM_ERROR = 0.08
DIR = "hf_tiny_moe_bf16"
NO_NORM_DIR = "hf_tiny_moe_nonorm"
CONFIG = {
    **base.COMMON_CONFIG,
    "hidden_size": 64,
    "intermediate_size": 96,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "norm_topk_prob": True,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [1],
    "tie_word_embeddings": True,
}
GROUP = 32  # the exporter's group: widths 64, 96, 32 and 128 all divide by 32


def build_model(seed: int):
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(**CONFIG, attn_implementation="eager")
    torch.manual_seed(seed)
    model = Qwen3MoeForCausalLM(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("embed_tokens.weight") or name == "lm_head.weight":
                values = torch.round(torch.randn(p.shape, generator=gen) * 2).clamp(-4, 4) * 0.5
            elif p.dim() == 1:
                values = 1 + 0.1 * torch.randn(p.shape, generator=gen)
            else:
                values = torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5
            p.copy_(values.to(torch.bfloat16).to(torch.float32))
    model.tie_weights()
    return model


def expert_forward_q8(self, hidden_states, top_k_index, top_k_weights):
    """Qwen3MoeExperts.forward with every matmul input through Q8 groups."""
    import torch

    out = torch.zeros_like(hidden_states)
    for t in range(hidden_states.shape[0]):
        for j in range(top_k_index.shape[1]):
            e = int(top_k_index[t, j])
            x = base.q8_roundtrip(hidden_states[t : t + 1], GROUP)
            gate, up = torch.nn.functional.linear(x, self.gate_up_proj[e]).chunk(2, dim=-1)
            h = base.q8_roundtrip(self.act_fn(gate) * up, GROUP)
            out[t] += torch.nn.functional.linear(h, self.down_proj[e])[0] * top_k_weights[t, j]
    return out


def w8a8_model(model):
    import copy

    import torch

    sim = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in sim.named_parameters():
            if p.dim() >= 2 and not name.endswith("mlp.gate.weight"):
                p.copy_(base.q8_roundtrip(p, GROUP))
    for module in sim.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(lambda _m, args: (base.q8_roundtrip(args[0], GROUP),))
        if type(module).__name__ == "Qwen3MoeExperts":
            module.forward = types.MethodType(expert_forward_q8, module)
    return sim


def routing(model, ids):
    """Per sparse layer: (router logits, chosen expert ids) for every token."""
    seen = []
    hooks = []
    for module in model.modules():
        if type(module).__name__ == "Qwen3MoeTopKRouter":
            hooks.append(module.register_forward_hook(lambda _m, _a, out: seen.append(out)))
    base.logits_for(model, ids)
    for h in hooks:
        h.remove()
    return [(o[0].detach(), o[2].detach()) for o in seen]


def router_gap(logits, k: int) -> float:
    top = logits.topk(k + 1, dim=-1).values
    return (top[:, k - 1] - top[:, k]).min().item()


def check(model, prompts, probe_ids) -> tuple[bool, float, float, float]:
    import torch

    k = CONFIG["num_experts_per_tok"]
    refs = [base.logits_for(model, p["ids"]) for p in prompts]
    if min(min(base.margins(r)) for r in refs) < base.MIN_GAP:
        return False, 0, 0, 0
    sim = w8a8_model(model)
    ok, smallest, worst, rgap = True, float("inf"), 0.0, float("inf")
    for p, ref in zip(prompts, refs):
        r_ref, r_sim = routing(model, p["ids"]), routing(sim, p["ids"])
        for (l0, _), (l1, _) in zip(r_ref, r_sim):
            rgap = min(rgap, router_gap(l0, k), router_gap(l1, k))
        q8 = base.logits_for(sim, p["ids"])
        std = ref.std(dim=-1)
        smallest = min(smallest, min(base.margins(ref)))
        # The error where the test looks: each position's top ids and the probe ids.
        ids = torch.cat([ref.topk(base.TOP_K, dim=-1).indices, torch.tensor(probe_ids).expand(len(ref), -1)], 1)
        err = ((q8 - ref).gather(1, ids).abs().amax(dim=-1) / std).max().item()
        worst = max(worst, err)
        same = (ref.argmax(dim=-1) == q8.argmax(dim=-1)).all().item()
        if not same or min(base.margins(q8)) < base.MIN_GAP:
            ok = False
    if rgap < MIN_ROUTER_GAP or worst > MAX_SIM_ERROR:
        ok = False
    return ok, smallest, worst, rgap


def main_no_norm() -> None:
    """The second fixture: hf_tiny_moe_bf16's weights, norm_topk_prob false."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    first = json.loads((base.FIXTURES / DIR / "reference.json").read_text())
    seed = first["seed"]
    CONFIG["norm_topk_prob"] = False
    tok = AutoTokenizer.from_pretrained(str(base.TOKENIZER_DIR))
    prompts = base.tokenize_prompts(tok)
    probe_ids = first["probe_ids"]
    model = build_model(seed)
    ok, smallest, q8_err, rgap = check(model, prompts, probe_ids)
    print(f"seed {seed}, norm_topk_prob false: {ok} gap {smallest:.4f} router gap {rgap:.4f} "
          f"sim error {q8_err:.4f}", file=sys.stderr)
    if not ok:
        raise SystemExit("the first fixture's seed fails the W8A8 checks with norm_topk_prob false")
    meta = {
        "generator": "tools/hf_moe_reference.py --no-norm",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "model": "moe, norm_topk_prob false; weights: " + DIR,
        "seed": seed,
        "group_size": GROUP,
        "min_gap": base.MIN_GAP,
        "min_router_gap": round(rgap, 4),
        "simulated_w8a8_max_error_std": round(q8_err, 4),
        "note": "fp32 forward (eager attention) of weights rounded to BF16; logits of every "
                "prompt position: top_k ids/values and probe_ids values",
    }
    ref = base.reference(model, prompts, probe_ids, meta)
    out = base.FIXTURES / NO_NORM_DIR
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # the first fixture's config.json (as save_pretrained wrote it) with the one flag changed
    config = json.loads((base.FIXTURES / DIR / "config.json").read_text())
    config["norm_topk_prob"] = False
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / "reference.json").write_text(json.dumps(ref, ensure_ascii=False, indent=1) + "\n")
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{out.relative_to(base.ROOT)}: {size / 1e6:.2f} MB", file=sys.stderr)


def main() -> None:
    base.ensure_venv()
    if "--no-norm" in sys.argv[1:]:
        main_no_norm()
        return
    import torch
    import transformers
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(str(base.TOKENIZER_DIR))
    prompts = base.tokenize_prompts(tok)
    gen = torch.Generator().manual_seed(4242)
    probe_ids = sorted(torch.randperm(151936, generator=gen)[: base.N_PROBES].tolist())
    for seed in range(1, 1000):
        model = build_model(seed)
        ok, smallest, q8_err, rgap = check(model, prompts, probe_ids)
        print(
            f"seed {seed}: {ok} gap {smallest:.4f} router gap {rgap:.4f} sim error {q8_err:.4f}",
            file=sys.stderr,
        )
        if ok:
            break
    else:
        raise SystemExit("no seed below 1000 passes the W8A8 argmax and routing checks")
    meta = {
        "generator": "tools/hf_moe_reference.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "model": "moe",
        "seed": seed,
        "group_size": GROUP,
        "min_gap": base.MIN_GAP,
        "min_router_gap": round(rgap, 4),
        "simulated_w8a8_max_error_std": round(q8_err, 4),
        "note": "fp32 forward (eager attention) of weights rounded to BF16; logits of every "
                "prompt position: top_k ids/values and probe_ids values",
    }
    ref = base.reference(model, prompts, probe_ids, meta)
    out = base.FIXTURES / DIR
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.to(torch.bfloat16).save_pretrained(str(out))
    for f in sorted(out.glob("*.safetensors")):
        base.gzip_file(f)
    shutil.copy(base.TOKENIZER_DIR / "tokenizer_config.json", out / "tokenizer_config.json")
    (out / "reference.json").write_text(json.dumps(ref, ensure_ascii=False, indent=1) + "\n")
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{out.relative_to(base.ROOT)}: {size / 1e6:.2f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
