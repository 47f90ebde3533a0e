"""Measures llama.cpp's batched decode of N sequences (through llama-cpp-python's low-level
API: one llama_batch holding one token of each of N sequence ids per llama_decode call) and
prints one JSON line in the shape of bench/batch_bench.ts's --json: the aggregate decode
tok/s of each N, the median over the runs, and its multiple of the first N's. Run by
bench/compare_batch.ts as the peer row of the batched-decode table.

    python bench/llama_batch_run.py MODEL.gguf --threads N [--ns 1,2,4,8,16] [--steps 8]
                                    [--runs 3]

Each sequence first holds a 32-token prompt (prefilled one sequence at a time); a run of
one N times --steps decode calls of N tokens (one per sequence, logits of each), then
removes those positions again. The N alternate within each run (order rotated per run),
as in bench/batch_bench.ts.
"""

import argparse
import json
import statistics
import time

# the prompts of bench/llama_run.py (the generator of bench/bench_models.ts's benchTokens)
from llama_run import prompt_tokens

PROMPT = 32


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ns", default="1,2,4,8,16")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    ns = [int(x) for x in args.ns.split(",") if x]
    most = max(ns)

    import ctypes

    import llama_cpp as L  # imported here so --help works without it

    # llama.cpp's load and context logs would bury bench:compare's progress lines
    quiet = L.llama_log_callback(lambda level, text, data: None)
    L.llama_log_set(quiet, ctypes.c_void_p(0))
    L.llama_backend_init()
    mparams = L.llama_model_default_params()
    model = L.llama_model_load_from_file(args.model.encode(), mparams)
    if not model:
        raise SystemExit("cannot load " + args.model)
    cparams = L.llama_context_default_params()
    cparams.n_ctx = most * (PROMPT + args.steps + 8)
    cparams.n_batch = max(PROMPT, most)
    cparams.n_ubatch = max(PROMPT, most)
    cparams.n_seq_max = most
    cparams.n_threads = args.threads
    cparams.n_threads_batch = args.threads
    ctx = L.llama_init_from_model(model, cparams)
    if not ctx:
        raise SystemExit("cannot create a llama.cpp context")
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(max(PROMPT, most), 0, most)

    def decode(items):
        """items: (token, position, sequence, logits wanted) per batch entry."""
        batch.n_tokens = len(items)
        for i, (tok, pos, seq, want) in enumerate(items):
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if want else 0
        rc = L.llama_decode(ctx, batch)
        if rc != 0:
            raise SystemExit("llama_decode failed with %d" % rc)

    for s in range(most):
        toks = prompt_tokens(PROMPT, s + 1)
        decode([(t, p, s, p == PROMPT - 1) for p, t in enumerate(toks)])

    def steps(n):
        for step in range(args.steps):
            decode([((step * 97 + i * 31) % 151000, PROMPT + step, i, True) for i in range(n)])
        for i in range(n):
            L.llama_memory_seq_rm(mem, i, PROMPT, -1)

    steps(most)  # warm-up: every weight page touched
    rates = {n: [] for n in ns}
    for r in range(args.runs):
        for k in range(len(ns)):
            n = ns[(k + r) % len(ns)]
            t0 = time.perf_counter()
            steps(n)
            rates[n].append(n * args.steps / (time.perf_counter() - t0))

    base = statistics.median(rates[ns[0]])
    rows = []
    for n in ns:
        rate = statistics.median(rates[n])
        rows.append({"n": n, "tokPerSecond": rate, "speedup": rate / base, "meanBatch": n})
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    print(json.dumps({
        "engine": "llama.cpp",
        "threads": args.threads,
        "kernel": "llama.cpp " + L.__version__,
        "steps": args.steps,
        "runs": args.runs,
        "rows": rows,
    }))


if __name__ == "__main__":
    main()
