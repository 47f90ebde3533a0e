"""Train the demo Qwen3 (Hugging Face Qwen3ForCausalLM) on the corpus, on the CPU, resumably.

Every `ckpt_every` steps the model, optimiser and step go to ckpt_dir/last.pt
(written to a temporary file, then renamed, so a kill never leaves half a
checkpoint); a restart picks up from there with the same batches it would have
drawn. Each step appends a row to loss.csv. At every evaluation and at the end
the model is also written as a Hugging Face folder (save_pretrained + the
tokenizer files) to hf_dir, so a usable checkpoint exists whenever training is
stopped.

Usage:
  train.py                    train (or resume) up to max_steps or time_budget_min of training time
  train.py --max-minutes 55   stop cleanly after that much wall time this run
  train.py --bench 5          time 5 steps (after 1 warm-up) and print tokens/s; writes nothing
  train.py --sample [--out DIR]  greedy answers of the saved HF model to a few chat prompts
  train.py --save-hf [--out DIR] [--dtype bfloat16]
                              write a HF folder (default hf_dir, float32) from the last checkpoint
"""

import argparse
import csv
import json
import math
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import Qwen3Config, Qwen3ForCausalLM

HERE = Path(__file__).resolve().parent
CSV_FIELDS = ["step", "tokens", "train_loss", "valid_loss", "lr", "elapsed_s", "tokens_per_s"]
SAMPLE_PROMPTS = [
    "What does love mean?",
    "Who is Linus?",
    "What does a computer do?",
    "Continue: It is a truth universally acknowledged, that a single man in possession of a good fortune,",
    "Continue: In the beginning God created the heaven and the earth.",
    "Hello! Who are you?",
]


def load_config(path: Path) -> dict:
    config = json.loads(path.read_text())
    for key in ("work_dir", "ckpt_dir", "hf_dir", "loss_csv"):
        config["training"][key] = HERE / config["training"][key]
    return config


def special_ids(tokenizer: Tokenizer) -> dict:
    ids = {name: tokenizer.token_to_id(name) for name in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    if None in ids.values():
        raise ValueError(f"tokenizer lacks a Qwen3 control token: {ids}")
    return ids


def build_model(config: dict, tokenizer: Tokenizer) -> Qwen3ForCausalLM:
    ids = special_ids(tokenizer)
    model_config = Qwen3Config(
        vocab_size=tokenizer.get_vocab_size(),
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        use_cache=True,
        **config["model"],
    )
    torch.manual_seed(config["training"]["seed"])
    return Qwen3ForCausalLM(model_config)


def corpus_tokens(config: dict, tokenizer: Tokenizer) -> tuple:
    """(train, valid) token streams: documents joined by <|endoftext|>, cached as .npy beside the corpus."""
    train_cfg = config["training"]
    docs_path = HERE / config["tokenizer"]["docs"]
    tok_path = HERE / config["tokenizer"]["out_dir"] / "tokenizer.json"
    cache = train_cfg["work_dir"] / "tokens.npz"
    stamp = f"{docs_path.stat().st_mtime_ns}:{tok_path.stat().st_mtime_ns}:{train_cfg['valid_fraction']}"
    if cache.exists():
        data = np.load(cache)
        if str(data["stamp"]) == stamp:
            return data["train"], data["valid"]
    texts = [json.loads(line)["text"] for line in docs_path.open(encoding="utf-8")]
    n_valid = max(1, int(len(texts) * train_cfg["valid_fraction"]))
    eot = special_ids(tokenizer)["<|endoftext|>"]

    def stream(chunk):
        out = []
        for encoding in tokenizer.encode_batch(chunk):
            out.extend(encoding.ids)
            out.append(eot)
        return np.array(out, dtype=np.uint16)

    train, valid = stream(texts[:-n_valid]), stream(texts[-n_valid:])
    np.savez(cache, train=train, valid=valid, stamp=np.array(stamp))
    return train, valid


def batch(tokens: np.ndarray, size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(tokens) - seq_len - 1, (size,), generator=generator).numpy()
    return torch.from_numpy(np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64))


def lm_loss(model: Qwen3ForCausalLM, window: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=window[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), window[:, 1:].reshape(-1))


def progress(step: int, elapsed_s: float, cfg: dict) -> float:
    """How far through the run, 0..1: by steps or by training time, whichever is further.

    The machine's cores are shared, so throughput varies several-fold from hour to hour;
    a time budget makes the cosine decay (and the run) end on time whatever the speed.
    """
    by_steps = (step - cfg["warmup_steps"]) / max(1, cfg["max_steps"] - cfg["warmup_steps"])
    by_time = elapsed_s / (cfg["time_budget_min"] * 60) if cfg.get("time_budget_min") else 0.0
    return min(1.0, max(0.0, by_steps, by_time))


def learning_rate(step: int, elapsed_s: float, cfg: dict) -> float:
    if step < cfg["warmup_steps"]:
        return cfg["lr"] * (step + 1) / cfg["warmup_steps"]
    done = progress(step, elapsed_s, cfg)
    return cfg["min_lr"] + 0.5 * (cfg["lr"] - cfg["min_lr"]) * (1 + math.cos(math.pi * done))


def make_optimizer(model: Qwen3ForCausalLM, cfg: dict) -> torch.optim.Optimizer:
    # Norm weights are gains around 1: decaying them towards 0 only fights the model.
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    keep = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                              {"params": keep, "weight_decay": 0.0}],
                             lr=cfg["lr"], betas=(0.9, 0.95), eps=1e-8)


@torch.no_grad()
def evaluate(model: Qwen3ForCausalLM, valid: np.ndarray, cfg: dict) -> float:
    model.eval()
    generator = torch.Generator().manual_seed(cfg["seed"] + 1)  # same windows at every evaluation
    losses = [lm_loss(model, batch(valid, cfg["batch_size"], cfg["seq_len"], generator)).item()
              for _ in range(cfg["eval_batches"])]
    model.train()
    return sum(losses) / len(losses)


def save_checkpoint(path: Path, model, optimizer, step: int, tokens: int, elapsed: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "tokens": tokens, "elapsed_s": elapsed}, tmp)
    os.replace(tmp, path)


def save_hf(model: Qwen3ForCausalLM, config: dict, hf_dir: Path = None):
    """The Hugging Face folder the exporter reads: weights, config and Qwen3-style tokenizer files."""
    hf_dir = hf_dir or config["training"]["hf_dir"]
    tmp = hf_dir.with_name(hf_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    # transformers 5 writes rope_theta only inside rope_parameters and the dtype as "dtype"; the
    # published Qwen3 configs (and readers written against them) use the top-level keys.
    hf_config = json.loads((tmp / "config.json").read_text())
    hf_config.setdefault("rope_theta", hf_config.get("rope_parameters", {}).get("rope_theta"))
    hf_config.setdefault("torch_dtype", hf_config.get("dtype", "float32"))
    (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    tok_dir = HERE / config["tokenizer"]["out_dir"]
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok_dir / name, tmp / name)
    shutil.rmtree(hf_dir, ignore_errors=True)
    os.replace(tmp, hf_dir)


def append_row(path: Path, row: dict):
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def train(config: dict, max_minutes: float, bench_steps: int):
    cfg = config["training"]
    tokenizer = Tokenizer.from_file(str(HERE / config["tokenizer"]["out_dir"] / "tokenizer.json"))
    train_tokens, valid_tokens = corpus_tokens(config, tokenizer)
    model = build_model(config, tokenizer)
    optimizer = make_optimizer(model, cfg)
    params = sum(p.numel() for p in model.parameters())
    print(f"parameters {params:,} ({params / 1e6:.2f} M); corpus {len(train_tokens):,} train / "
          f"{len(valid_tokens):,} valid tokens", flush=True)

    ckpt = cfg["ckpt_dir"] / "last.pt"
    step, tokens, elapsed_before = 0, 0, 0.0
    if ckpt.exists() and not bench_steps:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, tokens, elapsed_before = state["step"], state["tokens"], state["elapsed_s"]
        print(f"resumed from {ckpt} at step {step} ({tokens:,} tokens, {elapsed_before / 60:.1f} min)", flush=True)

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    run_start = time.time()
    tokens_per_step = cfg["batch_size"] * cfg["seq_len"]
    model.train()
    last_saved = step

    if bench_steps:
        times = []
        for i in range(bench_steps + 1):
            t0 = time.time()
            window = batch(train_tokens, cfg["batch_size"], cfg["seq_len"], torch.Generator().manual_seed(i))
            loss = lm_loss(model, window)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.time() - t0)
        per_step = sorted(times[1:])[len(times[1:]) // 2]
        print(f"bench: {per_step:.3f} s/step (median of {bench_steps}), {tokens_per_step / per_step:.0f} tokens/s, "
              f"loss {loss.item():.3f}; {cfg['max_steps']} steps would take {cfg['max_steps'] * per_step / 60:.1f} min")
        return

    while not stop["now"] and progress(step, elapsed_before + time.time() - run_start, cfg) < 1.0:
        t0 = time.time()
        lr = learning_rate(step, elapsed_before + t0 - run_start, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + step)
        loss = lm_loss(model, batch(train_tokens, cfg["batch_size"], cfg["seq_len"], generator))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += tokens_per_step
        elapsed = elapsed_before + time.time() - run_start
        valid_loss = ""
        if step % cfg["eval_every"] == 0 or progress(step, elapsed, cfg) >= 1.0:
            valid_loss = f"{evaluate(model, valid_tokens, cfg):.4f}"
            save_hf(model, config)
        append_row(cfg["loss_csv"], {
            "step": step, "tokens": tokens, "train_loss": f"{loss.item():.4f}", "valid_loss": valid_loss,
            "lr": f"{lr:.6f}", "elapsed_s": f"{elapsed:.1f}", "tokens_per_s": f"{tokens_per_step / (time.time() - t0):.0f}"})
        if step % 10 == 0 or valid_loss:
            print(f"step {step} loss {loss.item():.3f} valid {valid_loss or '-'} lr {lr:.5f} "
                  f"{elapsed / 60:.1f} min", flush=True)
        if step % cfg["ckpt_every"] == 0:
            save_checkpoint(ckpt, model, optimizer, step, tokens, elapsed)
            last_saved = step
        if max_minutes and time.time() - run_start > max_minutes * 60:
            break
    elapsed = elapsed_before + time.time() - run_start
    if step != last_saved:
        save_checkpoint(ckpt, model, optimizer, step, tokens, elapsed)
    save_hf(model, config)
    print(f"stopped at step {step}: {tokens:,} tokens, {elapsed / 60:.1f} min of training in all", flush=True)


def export_checkpoint(config: dict, out_dir: Path, dtype: str):
    """The last checkpoint as a HF folder; bf16 is how Qwen3 checkpoints are published."""
    tokenizer = Tokenizer.from_file(str(HERE / config["tokenizer"]["out_dir"] / "tokenizer.json"))
    model = build_model(config, tokenizer)
    state = torch.load(config["training"]["ckpt_dir"] / "last.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    model.to({"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype])
    save_hf(model, config, out_dir)
    print(f"wrote {out_dir or config['training']['hf_dir']} ({dtype}) from the checkpoint of step {state['step']}")


def sample(config: dict, max_new_tokens: int, hf_dir: Path = None):
    hf_dir = hf_dir or config["training"]["hf_dir"]
    tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    model = Qwen3ForCausalLM.from_pretrained(hf_dir)
    model.eval()
    im_end = special_ids(tokenizer)["<|im_end|>"]
    for prompt in SAMPLE_PROMPTS:
        text = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        ids = torch.tensor([tokenizer.encode(text).ids])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=im_end,
                                 pad_token_id=im_end)
        answer = tokenizer.decode(out[0, ids.size(1):].tolist(), skip_special_tokens=True)
        print(f"> {prompt}\n{answer.strip()}\n", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=HERE / "config.json")
    parser.add_argument("--max-minutes", type=float, default=0)
    parser.add_argument("--bench", type=int, default=0)
    parser.add_argument("--sample", action="store_true")
    parser.add_argument("--save-hf", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--max-new-tokens", type=int, default=80)
    args = parser.parse_args()
    config = load_config(args.config)
    torch.set_num_threads(config["training"]["threads"])
    torch.set_num_interop_threads(1)
    if args.sample:
        sample(config, args.max_new_tokens, args.out)
    elif args.save_hf:
        export_checkpoint(config, args.out, args.dtype)
    else:
        train(config, args.max_minutes, args.bench)


if __name__ == "__main__":
    main()
