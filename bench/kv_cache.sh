#!/bin/sh
# Decode tok/s with the f32, f16 and q8 KV caches at long positions (docs/numerics.md#fp16-kv-cache,
# #int8-kv-cache): bench-forward --at P times decoding at position P, the cache filled with a
# pattern instead of a prefill. The three caches' processes alternate, so machine noise hits them
# alike; take the medians.
#   deno run -A tools/zig.ts build bench-forward
#   sh bench/kv_cache.sh bench/models/q06/model.bin [REPEATS] [TG]
# Then the logit error of the q8 (or with --kv f16 the f16) cache against f32 over a few hundred
# positions:
#   zig-out/bin/bench-forward MODEL --threads 2 --logit-error 320 [--kv f16]
set -eu
model=${1:?usage: kv_cache.sh MODEL [REPEATS] [TG]}
repeats=${2:-3}
tg=${3:-16}
for at in 4096 16384; do
  for threads in 1 2; do
    r=0
    while [ "$r" -lt "$repeats" ]; do
      for kv in f32 f16 q8; do
        zig-out/bin/bench-forward "$model" --pp 0 --at "$at" --tg "$tg" --runs 1 --threads "$threads" --kv "$kv" 2>/dev/null
      done
      r=$((r + 1))
    done
  done
done
