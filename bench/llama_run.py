"""Measures llama.cpp (through llama-cpp-python, built for this CPU) on one GGUF file and
prints one JSON line in the shape of bench/engine_run.ts: load time, prefill tok/s per
prompt length, decode tok/s, peak RSS. Run by bench/compare.ts in a fresh process per
measurement.

    python bench/llama_run.py MODEL.gguf --threads N [--pp 128,512] [--tg 128]
"""

import argparse
import json
import re
import time


def proc_status_bytes(field):
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"^%s:\s+(\d+) kB" % field, f.read(), re.M)
            return int(m.group(1)) * 1024 if m else 0
    except OSError:
        return 0


def prompt_tokens(n, seed):
    # The same generator as engine_run.ts, so both engines read the same prompts.
    s = seed & 0xFFFFFFFF
    out = []
    for _ in range(n):
        s = (s * 1664525 + 1013904223) & 0xFFFFFFFF
        out.append(s % 151000)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pp", default="128,512")
    ap.add_argument("--tg", type=int, default=128)
    args = ap.parse_args()
    pps = [int(x) for x in args.pp.split(",") if x]
    ctx = max(pps + [0]) + args.tg + 8

    import llama_cpp  # imported here so --help works without it

    base_rss = proc_status_bytes("VmRSS")
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        args.model,
        n_ctx=ctx,
        n_batch=512,
        n_ubatch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    load_seconds = time.perf_counter() - t0

    prefill = {}
    if pps:
        # One untimed short prefill first, as engine_run.ts does: it touches every weight
        # page of the fresh process, which the first timed length would otherwise pay for.
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval(prompt_tokens(8, 1))
    for n in pps:
        llm.reset()
        llm._ctx.kv_cache_clear()
        tokens = prompt_tokens(n, n)
        start = time.perf_counter()
        llm.eval(tokens)
        prefill["pp%d" % n] = n / (time.perf_counter() - start)

    decode = 0.0
    if args.tg > 0:
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval([9707])
        token = 9707
        start = time.perf_counter()
        for _ in range(args.tg):
            llm.eval([token])
            token = int(llm.scores[llm.n_tokens - 1].argmax())
        decode = args.tg / (time.perf_counter() - start)

    print(json.dumps({
        "engine": "llama.cpp",
        "threads": args.threads,
        "kernel": "llama.cpp " + llama_cpp.__version__,
        "loadSeconds": load_seconds,
        "prefill": prefill,
        "decode": decode,
        "decodeTokens": args.tg,
        "peakRss": proc_status_bytes("VmHWM"),
        "baseRss": base_rss,
    }))


if __name__ == "__main__":
    main()
