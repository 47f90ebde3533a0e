"""Measures llama.cpp's own prompt-lookup speculative decoding (llama-cpp-python's
`LlamaPromptLookupDecoding`, passed as `Llama(draft_model=...)`) against its plain decoding on
one GGUF file, greedy, and prints one JSON line for bench/compare_speculate.ts. The workloads
come as JSON on stdin: [{"name": ..., "prompt": ...}, ...]. Each round runs every workload
without and with speculation (two Llama instances of the same file; the order flips each round,
after a warm-up round), so a change of load hits both arms alike.

    python bench/llama_speculate_run.py MODEL.gguf --threads N --max-tokens 64 --rounds 3 \
        < workloads.json

Decode tok/s counts the tokens after the first one over the time from the first token to the
last (the prompt's pass excluded). llama-cpp-python reports no acceptance, so the draft model is
wrapped to count the drafted tokens and the verify passes; accepted = generated - 1 - passes
(each pass yields one sampled token plus the drafts it took; the first token comes from the
prompt's pass). A pass cut short by the token cap makes that count a lower bound.
"""

import argparse
import json
import statistics
import sys
import time

from llama_cpp import Llama
from llama_cpp.llama_speculative import LlamaPromptLookupDecoding


class CountingLookup(LlamaPromptLookupDecoding):
    """Prompt lookup that counts what it drafts."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = 0
        self.drafted = 0

    def __call__(self, input_ids, *args, **kwargs):
        out = super().__call__(input_ids, *args, **kwargs)
        self.calls += 1
        self.drafted += len(out)
        return out


def run(llm, tokens, max_tokens):
    """Greedy generation; returns (generated tokens, decode seconds after the first)."""
    eos = llm.token_eos()
    n = 0
    first = last = None
    for tok in llm.generate(tokens, temp=0.0, repeat_penalty=1.0, reset=True):
        now = time.perf_counter()
        if tok == eos:
            break
        n += 1
        if first is None:
            first = now
        last = now
        if n >= max_tokens:
            break
    return n, (last - first) if n > 1 else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--num-pred-tokens", type=int, default=8)
    args = ap.parse_args()
    workloads = json.load(sys.stdin)
    common = dict(n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    plain = Llama(model_path=args.model, **common)
    lookup = CountingLookup(num_pred_tokens=args.num_pred_tokens)
    spec = Llama(model_path=args.model, draft_model=lookup, **common)
    rows = []
    for w in workloads:
        tokens = plain.tokenize(w["prompt"].encode("utf-8"), add_bos=False, special=False)
        tps = {"on": [], "off": []}
        generated = drafted = accepted = 0
        # Round -1 warms up and is not recorded; the arms' order flips each round.
        for r in range(-1, args.rounds):
            arms = (("off", plain), ("on", spec))
            for arm, llm in arms[::-1] if r % 2 else arms:
                lookup.calls = lookup.drafted = 0
                n, secs = run(llm, list(tokens), args.max_tokens)
                if r < 0:
                    continue
                tps[arm].append((n - 1) / secs if secs > 0 else 0.0)
                if arm == "on":
                    generated += n
                    drafted += lookup.drafted
                    accepted += max(0, n - 1 - lookup.calls)
        rows.append(
            {
                "name": w["name"],
                "tokens": generated,
                "drafted": drafted,
                "accepted": accepted,
                "on": statistics.median(tps["on"]),
                "off": statistics.median(tps["off"]),
            }
        )
    print(json.dumps({"engine": "llama.cpp", "threads": args.threads, "rows": rows}))


if __name__ == "__main__":
    main()
