/*
 * tokenizer.h - Qwen3's byte-level BPE, exactly as Hugging Face tokenizes
 * (docs/tokenizer.md#encoding-pipeline): NFC, added tokens split out literally (only when
 * allowed), the pre-tokenizer regex, then merges by rank inside each piece. Token ids map to raw bytes (GPT-2 byte-to-unicode
 * mapping undone). Lookups use hash maps.
 */
#ifndef QWEN3_TOKENIZER_H
#define QWEN3_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct Qwen3Tokenizer Qwen3Tokenizer;

/* From a qwen3.c `.tokenizer` file: merge rank of a token = exp(-score) - 1 (rounded),
 * score -1e6 = byte or added token. NULL on error (error set, naming the file). */
Qwen3Tokenizer* qwen3_tokenizer_load_bin(const char* path);

/* From a Hugging Face `tokenizer.json` (model.vocab, model.merges, added_tokens): the
 * exact merge list. NULL on error. */
Qwen3Tokenizer* qwen3_tokenizer_load_json(const char* path);

/* From in-memory lists, as GGUF metadata gives them: n_tokens token strings in the
 * GPT-2 byte-to-unicode alphabet (tokens[i], lens[i] bytes), token types (GGUF
 * tokenizer.ggml.token_type: 1 normal, 3 control, 4 user-defined, 6 byte; NULL = all
 * normal except names like <|...|>), and n_merges merge rules "left right". */
Qwen3Tokenizer* qwen3_tokenizer_from_lists(const char* const* tokens, const uint32_t* lens,
                                           uint32_t n_tokens, const int32_t* token_types,
                                           const char* const* merges, const uint32_t* merge_lens,
                                           uint32_t n_merges);

void qwen3_tokenizer_free(Qwen3Tokenizer* t);

/* Number of token ids (151669 for Qwen3). */
uint32_t qwen3_tokenizer_size(const Qwen3Tokenizer* t);

/* 1 when merges are exact (tokenizer.json / GGUF lists), 0 when ranks come from scores. */
int qwen3_tokenizer_is_exact(const Qwen3Tokenizer* t);

/* See qwen3_tokenize in qwen3_inference.h: allow_special = turn added-token text into
 * control tokens. Returns the full count (may exceed capacity) or a negative status. */
int32_t qwen3_tokenizer_encode(const Qwen3Tokenizer* t, const char* text, size_t len,
                               int allow_special, int32_t* out, uint32_t capacity);

/* Raw bytes of a token; NULL when id is out of range. */
const char* qwen3_tokenizer_token_bytes(const Qwen3Tokenizer* t, int32_t id, uint32_t* len);

/* The id of a token whose raw bytes are exactly `text` (e.g. "<|im_end|>"), or -1. */
int32_t qwen3_tokenizer_find(const Qwen3Tokenizer* t, const char* text);

#endif
