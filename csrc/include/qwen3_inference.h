/*
 * qwen3_inference.h - the public C API of the @q3/qwen3 inference engine.
 *
 * A pure C11 engine (libc only) for Qwen3 dense models on the CPU. Two layers:
 *
 *   1. The qwen3.c-compatible loop API: load a checkpoint, run the interactive chat or
 *      one-shot generate loop that reads stdin and prints to stdout.
 *        Qwen3Model* m = qwen3_model_load("Qwen3-0.6B.bin", 0);
 *        if (!m) { fprintf(stderr, "%s\n", qwen3_get_last_error()); return 1; }
 *        Qwen3Config cfg = { .temperature = 0, .prompt = "Hello", .mode = "generate" };
 *        qwen3_inference_generate(m, &cfg);
 *        qwen3_model_free(m);
 *
 *   2. The binding API: a context (session) owns a KV cache and a position, several
 *      contexts share one loaded model; the caller tokenizes, prefills, and steps.
 *
 * Conventions:
 *   - Functions returning int32_t return QWEN3_OK (0) or a value >= 0 on success and a
 *     negative Qwen3Status on failure; pointer-returning functions return NULL on failure.
 *   - On every failure qwen3_get_last_error() names the problem (file, field, value,
 *     limit). The message is thread-local and valid until the next failing call on the
 *     same thread.
 *   - The library never calls exit() or abort() and never prints except in the
 *     qwen3.c-compatible loops (qwen3_inference_chat / _generate), which own
 *     stdin/stdout/stderr.
 *   - Lifetimes: an object the library allocates comes from qwen3_<noun>_new (or a verb
 *     naming its source, as qwen3_model_load) and goes back through qwen3_<noun>_free,
 *     which ignores NULL; inside the library, a struct embedded in another is set up by
 *     qwen3_<noun>_init and torn down by qwen3_<noun>_deinit, which ignores a zeroed
 *     struct and leaves it zeroed.
 *   - Struct layouts: the Deno binding (ffi/symbols.ts) reads and writes Qwen3Config,
 *     Qwen3ModelConfig, Qwen3ModelInfo and Qwen3SamplerConfig by byte offset; api.c
 *     asserts those offsets at compile time, so moving a field means changing both.
 *   - Thread safety: a model may be shared by contexts used from different threads;
 *     forward passes on one model are serialised internally (one thread pool per model,
 *     whose own thread runs every pass of 2 ms or more while the calling thread waits;
 *     shorter ones, and every pass in a child of fork(), run on the calling thread). A
 *     single context must not be used from two threads at once.
 *   - Unloading: once a model is loaded the library stays in the process until it exits
 *     (dlclose and FreeLibrary leave it mapped), as the pool's threads may still run its
 *     code; free every model to stop those threads.
 */
#ifndef QWEN3_INFERENCE_H
#define QWEN3_INFERENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  if defined(QWEN3_BUILDING_LIBRARY)
#    define QWEN3_API __declspec(dllexport)
#  else
#    define QWEN3_API
#  endif
#else
#  define QWEN3_API __attribute__((visibility("default")))
#endif

/* ------------------------------------------------------------------------------------
 * Status codes
 * ---------------------------------------------------------------------------------- */

typedef enum Qwen3Status {
    QWEN3_OK = 0,
    QWEN3_ERR_INVALID_ARGUMENT = -1, /* NULL pointer, out-of-range value, bad token id */
    QWEN3_ERR_IO = -2,               /* a file could not be opened, read or mapped */
    QWEN3_ERR_FORMAT = -3,           /* a file is corrupt, truncated or not a Qwen3 model */
    QWEN3_ERR_OUT_OF_MEMORY = -4,    /* an allocation failed */
    QWEN3_ERR_CONTEXT_FULL = -5,     /* the tokens do not fit in the context's length */
    QWEN3_ERR_UNSUPPORTED = -6       /* valid input this build cannot run (tensor type, CPU) */
} Qwen3Status;

/* ------------------------------------------------------------------------------------
 * The qwen3.c-compatible loop API
 * ---------------------------------------------------------------------------------- */

/* Settings of the qwen3.c-compatible chat / generate loops. */
typedef struct {
    const char* checkpoint_path; /* informational; the model is already loaded */
    float temperature;           /* 0 = greedy (argmax) */
    float topp;                  /* nucleus sampling in (0, 1); >= 1 or <= 0 disables it */
    uint32_t ctx_length;         /* 0 = the model's context length */
    const char* mode;            /* "chat" or "generate" (informational for the loops) */
    const char* prompt;          /* generate: the prompt; chat: the first user turn (or NULL) */
    const char* system_prompt;   /* chat: system prompt for the first turn (or NULL) */
    bool enable_thinking;        /* chat: use the thinking template */
    uint64_t seed;               /* RNG seed; 0 = seed from the clock */
} Qwen3Config;

/* The model's hyper-parameters, as the qwen3.c-compatible API returns them. */
typedef struct {
    uint32_t vocab_size;  /* embedding rows (151936 for real Qwen3) */
    uint32_t dim;         /* residual stream width */
    uint32_t hidden_dim;  /* feed-forward width */
    uint32_t n_layers;
    uint32_t n_heads;     /* query heads */
    uint32_t n_kv_heads;  /* key/value heads (GQA) */
    uint32_t max_seq_len; /* context length in effect for this load */
    float rope_theta;
} Qwen3ModelConfig;

typedef struct Qwen3Model Qwen3Model;

/*
 * Size limits on the side files qwen3_model_load reads beside a model (the TypeScript
 * loader applies the same ones). A larger file is refused by its size, before it is
 * read, with QWEN3_ERR_FORMAT naming the file and the limit. Real Qwen3 files are far
 * below them: tokenizer.json 11.4 MB, model.bin.tokenizer 2.2 MB, a template < 200 bytes.
 */
#define QWEN3_TEMPLATE_FILE_MAX_BYTES (64u * 1024u)          /* each `<model>.template*` */
#define QWEN3_TOKENIZER_JSON_MAX_BYTES (64u * 1024u * 1024u) /* a Hugging Face tokenizer.json */
#define QWEN3_TOKENIZER_BIN_MAX_BYTES (64u * 1024u * 1024u)  /* a qwen3.c `<model>.tokenizer` */

/*
 * Loads a model: a qwen3.c `model.bin` (v1) or qwen3-rs checkpoint, auto-detected,
 * with side files beside it. The tokenizer is the first of these that exists:
 * `<model>.tokenizer.json` (e.g. model.bin.tokenizer.json: exact merges, and two models
 * can share a folder), `tokenizer.json` in the model's folder (exact merges), the qwen3.c
 * `<model>.tokenizer` (merge ranks recovered from scores). The chat templates are the
 * `<model>.template*` files, the stock Qwen3 ones where those are absent.
 * Weights are memory-mapped, not copied.
 * The model and every side file must be regular files (symlinks to them are followed):
 * a FIFO, a device or a folder is refused with QWEN3_ERR_IO ("PATH: not a regular file
 * (a FIFO)") without being opened for a blocking read. Only a side file that is absent
 * (ENOENT) lets the search go on; one that is there but unusable (a symlink loop, a
 * symlink to a missing file, an unsearchable folder, not a regular file, too large) fails
 * the load, naming it and why.
 * Or a llama.cpp GGUF (v2/v3, general.architecture "qwen3"), by its magic: hyper-parameters
 * and the exact tokenizer from its metadata; F32/F16/BF16 weights mapped and run without
 * quantising activations, Q8_0 converted at load (losslessly) to int8 with group size 32,
 * Q4_K/Q5_K/Q6_K/Q4_0/Q4_1/Q5_0/Q5_1 mapped and run in
 * their blocks with activations quantised per 32 values (docs/formats.md#gguf-tensor-types). The C side cannot run the file's Jinja tokenizer.chat_template: it uses
 * `.template*` side files when present, else the stock Qwen3 templates, which equal what
 * Qwen3's own (ChatML with <think>) template renders; a GGUF with another turn format needs
 * side files here (the TypeScript API renders the file's template itself).
 * ctx_length: 0 = the header's seq_len; larger values are clamped to it.
 * Returns NULL on error (see qwen3_get_last_error).
 */
QWEN3_API Qwen3Model* qwen3_model_load(const char* checkpoint_path, uint32_t ctx_length);

/* Frees the model. Contexts created from it must be freed first. NULL is ignored. */
QWEN3_API void qwen3_model_free(Qwen3Model* model);

/*
 * Interactive chat on stdin/stdout, the qwen3.c behaviour with multi-turn memory: the
 * KV cache is kept across turns, an empty line or EOF ends the chat, tok/s for prefill
 * and decode go to stderr after each answer. A full context also ends it, with a note on
 * stderr and QWEN3_OK: when an answer fills the context (the answer stops there), and
 * when a later turn does not fit in the positions the conversation left.
 * Returns QWEN3_OK, QWEN3_ERR_CONTEXT_FULL when the first turn (templates, system prompt
 * and user text) does not fit even in the empty context, or another negative status.
 */
QWEN3_API int qwen3_inference_chat(Qwen3Model* model, const Qwen3Config* config);

/* Prints config->prompt followed by its continuation until a stop token or the context
 * is full; a continuation that fills the context is a normal end (a note on stderr).
 * Returns QWEN3_OK, QWEN3_ERR_CONTEXT_FULL (nothing printed) when the prompt alone has
 * more tokens than the context has positions, or another negative status. */
QWEN3_API int qwen3_inference_generate(Qwen3Model* model, const Qwen3Config* config);

/* The model's configuration; NULL when model is NULL. Owned by the model. */
QWEN3_API const Qwen3ModelConfig* qwen3_model_get_config(const Qwen3Model* model);

/* The last error of the calling thread ("" when none). Never NULL. */
QWEN3_API const char* qwen3_get_last_error(void);

/* ------------------------------------------------------------------------------------
 * Model details
 * ---------------------------------------------------------------------------------- */

typedef enum Qwen3FileFormat {
    QWEN3_FORMAT_QWEN3C = 1,  /* qwen3.c model.bin v1 */
    QWEN3_FORMAT_QWEN3RS = 2, /* qwen3-rs: same body, architecture_id in the header */
    QWEN3_FORMAT_GGUF = 3
} Qwen3FileFormat;

/* Everything beyond Qwen3ModelConfig that a binding needs. */
typedef struct {
    uint32_t format;            /* Qwen3FileFormat */
    uint32_t head_dim;
    uint32_t group_size;        /* quantisation group (0 when unquantised) */
    uint32_t file_seq_len;      /* context length stored in the file */
    uint32_t shared_classifier; /* 1 when the classifier is the embedding table */
    uint32_t n_tokens;          /* tokenizer entries (151669 for real Qwen3) */
    int32_t bos_id;             /* -1 when none */
    int32_t eos_id;             /* <|endoftext|> */
    int32_t im_start_id;        /* <|im_start|>, -1 when absent */
    int32_t im_end_id;          /* <|im_end|>, -1 when absent */
    int32_t think_id;           /* <think>, -1 when absent */
    int32_t end_think_id;       /* </think>, -1 when absent */
    float rms_eps;
    uint32_t exact_tokenizer;   /* 1 when merges came from tokenizer.json / GGUF */
    uint64_t file_size;         /* bytes */
} Qwen3ModelInfo;

/* Fills *out. Returns QWEN3_OK or QWEN3_ERR_INVALID_ARGUMENT. */
QWEN3_API int32_t qwen3_model_get_info(const Qwen3Model* model, Qwen3ModelInfo* out);

/* The mixture of experts of a Qwen3-MoE model (GGUF arch qwen3moe, or a model.bin of
 * version 2): out[0] experts per
 * sparse block, out[1] experts used per token, out[2] one expert's feed-forward width (all
 * 0 for a dense model); sparse[l] = 1 when block l is sparse, for each of the n_layers
 * blocks (sparse may be NULL). Returns QWEN3_OK or QWEN3_ERR_INVALID_ARGUMENT. */
QWEN3_API int32_t qwen3_model_get_moe(const Qwen3Model* model, uint32_t out[3], uint8_t* sparse);

/* How a Qwen3-MoE model weighs its chosen experts: *norm_weights = 1 when the k weights are
 * renormalised to sum 1 (Hugging Face norm_topk_prob true, the default), 0 when each is its
 * softmax probability over all the experts (and 1 for a dense model). Returns QWEN3_OK or
 * QWEN3_ERR_INVALID_ARGUMENT. */
QWEN3_API int32_t qwen3_model_get_moe_norm(const Qwen3Model* model, uint32_t* norm_weights);

/*
 * Chat templates, as loaded from the `.template*` files (or the stock Qwen3 ones):
 * a printf-style text with one `%s` (user) or two (system, then user).
 * kind: 0 plain, 1 with thinking, 2 with system, 3 with system and thinking.
 * Returns NULL for a bad kind.
 */
QWEN3_API const char* qwen3_model_get_template(const Qwen3Model* model, uint32_t kind);

/* Number of threads used by forward passes on this model (default: the number of
 * online CPUs, at most 64). 0 = that default. Returns QWEN3_OK or a negative status. */
QWEN3_API int32_t qwen3_model_set_threads(Qwen3Model* model, uint32_t n_threads);
QWEN3_API uint32_t qwen3_model_get_threads(const Qwen3Model* model);

/* ------------------------------------------------------------------------------------
 * Tokenizer
 * ---------------------------------------------------------------------------------- */

/* Flag for qwen3_tokenize: turn literal added-token text such as "<|im_end|>" into its
 * control token. Without it such text is tokenized as ordinary text. */
#define QWEN3_TOKENIZE_SPECIAL 1u

/*
 * Tokenizes `text_len` bytes of UTF-8 text exactly as Hugging Face's Qwen3 tokenizer
 * does (NFC, pre-tokenizer regex, byte-level BPE by merge rank). Invalid UTF-8 is
 * tokenized byte by byte. Writes at most `capacity` ids to out and returns the full
 * count (call again with a larger buffer when it exceeds capacity), or a negative
 * status.
 */
QWEN3_API int32_t qwen3_tokenize(const Qwen3Model* model, const char* text, uint32_t text_len,
                                 uint32_t flags, int32_t* out, uint32_t capacity);

/* The raw bytes of a token (not NUL-terminated; *out_len receives the length).
 * Returns NULL for an id outside the tokenizer. Owned by the model. */
QWEN3_API const char* qwen3_token_bytes(const Qwen3Model* model, int32_t token, uint32_t* out_len);

/* ------------------------------------------------------------------------------------
 * Sampling
 * ---------------------------------------------------------------------------------- */

typedef struct {
    float temperature;      /* 0 = greedy argmax (all other fields ignored) */
    float top_p;            /* nucleus in (0,1); 0 or >= 1 disables */
    uint32_t top_k;         /* keep the k most likely; 0 disables */
    float min_p;            /* drop tokens with prob < min_p * max prob; 0 disables */
    float presence_penalty; /* subtracted from the logit of every token already generated */
    float frequency_penalty; /* times the token's count so far, subtracted from its logit
                              * (in what was padding before it existed: a zeroed struct
                              * from an older caller leaves it off) */
    uint64_t seed;          /* xorshift64* state seed; 0 = from the clock */
} Qwen3SamplerConfig;

/* ------------------------------------------------------------------------------------
 * Contexts: a KV cache and a position over a shared model
 * ---------------------------------------------------------------------------------- */

typedef struct Qwen3Context Qwen3Context;

/*
 * Creates a context of `ctx_length` positions (0 = the model's max_seq_len, larger is
 * clamped). KV cache memory is reserved, and committed only as positions are used.
 * The sampler starts greedy. Returns NULL on error.
 */
QWEN3_API Qwen3Context* qwen3_context_new(Qwen3Model* model, uint32_t ctx_length);

/* How a context stores its keys and values (docs/numerics.md#int8-kv-cache,
 * docs/numerics.md#fp16-kv-cache). */
typedef enum {
    QWEN3_KV_F32 = 0, /* fp32: the bits every other contract is stated for; this API's
                       * default (the Deno module, CLI and server default to f16) */
    QWEN3_KV_Q8 = 1,  /* int8 per group of 32 values (head_dim when 32 does not divide it)
                       * with an fp32 scale: about 3.6x less memory and bandwidth than fp32 */
    QWEN3_KV_F16 = 2  /* IEEE binary16 (llama.cpp's default cache type, and the Deno
                       * module's): half of fp32's memory and bandwidth; attention as
                       * fp32's on the rounded values */
} Qwen3KvType;

/* Options of qwen3_context_new_ex; a zeroed struct is qwen3_context_new's defaults. */
typedef struct {
    uint32_t kv_type;     /* a Qwen3KvType */
    uint32_t reserved[3]; /* zero */
} Qwen3ContextOptions;

/*
 * As qwen3_context_new, with options (NULL = the defaults). Returns NULL with the error
 * set for an unknown kv_type or nonzero reserved fields, or a q8 or f16 cache on a model
 * whose head_dim exceeds 512 (the largest their attention's scratch takes).
 */
QWEN3_API Qwen3Context* qwen3_context_new_ex(Qwen3Model* model, uint32_t ctx_length,
                                            const Qwen3ContextOptions* options);

/* The context's Qwen3KvType, and the bytes its KV cache takes at full length (reserved;
 * committed only as positions fill). 0 for a NULL context (error set). */
QWEN3_API uint32_t qwen3_context_kv_type(const Qwen3Context* ctx);
QWEN3_API uint64_t qwen3_context_kv_bytes(const Qwen3Context* ctx);
QWEN3_API void qwen3_context_free(Qwen3Context* ctx);

QWEN3_API uint32_t qwen3_context_length(const Qwen3Context* ctx);
/* Number of tokens in the KV cache (the position of the next token). */
QWEN3_API uint32_t qwen3_context_position(const Qwen3Context* ctx);

/* Forgets tokens from `position` on (0 = empty context). Returns QWEN3_OK or
 * QWEN3_ERR_INVALID_ARGUMENT when position > qwen3_context_position(ctx). */
QWEN3_API int32_t qwen3_context_rewind(Qwen3Context* ctx, uint32_t position);

/*
 * Runs the model over n tokens at positions position .. position+n-1 and keeps the
 * logits of the last one. Fails with QWEN3_ERR_CONTEXT_FULL (nothing done) when they
 * do not fit, QWEN3_ERR_INVALID_ARGUMENT for an id outside the vocabulary, and
 * QWEN3_ERR_IO when the model file was truncated or modified since it was loaded (the
 * weights are memory-mapped: replace a model file by renaming a new one over it, never
 * by rewriting it in place; truncating it DURING a forward pass cannot be caught and
 * ends the process with SIGBUS on POSIX systems).
 */
QWEN3_API int32_t qwen3_context_prefill(Qwen3Context* ctx, const int32_t* tokens, uint32_t n);

/*
 * Embeddings (Qwen3-Embedding: last-token pooling). Runs n >= 1 tokens at positions
 * position .. position+n-1 as qwen3_context_prefill does (same blocks, same checks and
 * errors, the KV cache filled the same way), but instead of logits writes the last token's
 * final hidden state - rmsnorm(x) * final_norm, the vector the classifier would read - to
 * out, and never runs the classifier. out_len must equal the model's dim. The vector is
 * not L2-normalised (normalise it, after any truncation, for an embedding). Afterwards
 * the context has no logits (qwen3_context_logits returns NULL until the next prefill).
 * For independent texts, qwen3_context_rewind(ctx, 0) before each; a shared prefix (an
 * instruction) can stay in the cache. Bit-identical across kernel tiers and thread
 * counts, as the logits are. QWEN3_ERR_INVALID_ARGUMENT also for n == 0, a NULL out or a
 * wrong out_len (both lengths named).
 */
QWEN3_API int32_t qwen3_context_embed(Qwen3Context* ctx, const int32_t* tokens, uint32_t n,
                                      float* out, uint32_t out_len);

/*
 * As qwen3_context_prefill, and writes the logits of EVERY token: row i (vocab_size
 * floats at logits_out + i * vocab_size; the caller provides n * vocab_size floats) is,
 * bit for bit, what qwen3_context_logits gives after running tokens[0..i] one
 * qwen3_context_decode at a time. It verifies drafted tokens in one batched pass
 * (speculative decoding): qwen3_context_rewind then drops the rejected ones. Same errors
 * as qwen3_context_prefill (nothing done, logits_out untouched); afterwards
 * qwen3_context_logits gives the last row. n = 0 does nothing.
 */
QWEN3_API int32_t qwen3_context_verify(Qwen3Context* ctx, const int32_t* tokens, uint32_t n, float* logits_out);

/* The logits (vocab_size floats) of the last token run; NULL before the first run.
 * Valid until the next prefill / decode / rewind on this context. */
QWEN3_API const float* qwen3_context_logits(const Qwen3Context* ctx);

/* Sets the sampler (and reseeds its RNG; clears the token counts of the penalties). */
QWEN3_API int32_t qwen3_context_set_sampler(Qwen3Context* ctx, const Qwen3SamplerConfig* config);

/* Samples the next token from the current logits (>= 0), and records it for the
 * presence penalty. Negative status when there are no logits yet. */
QWEN3_API int32_t qwen3_context_sample(Qwen3Context* ctx);

/* The context's sampler on logits of the caller's (vocab_size floats: a row of
 * qwen3_context_verify, a masked copy): picks a token (>= 0), drawing from the sampler's
 * RNG as qwen3_context_sample does, but does not count it; qwen3_context_record counts a
 * kept token for the penalties (QWEN3_OK). A pick then a record is a sample. Negative
 * status for a NULL argument or a token outside the vocabulary. */
QWEN3_API int32_t qwen3_context_pick(Qwen3Context* ctx, const float* logits);
QWEN3_API int32_t qwen3_context_record(Qwen3Context* ctx, int32_t token);

/* One decode step: runs `token`, then samples and returns the next token (>= 0), or a
 * negative status. Equivalent to prefill(&token, 1) followed by sample(). */
QWEN3_API int32_t qwen3_context_decode(Qwen3Context* ctx, int32_t token);

/*
 * One decode step for each of n contexts at once (concurrent chats, server slots):
 * contexts[i] runs tokens[i] at its own position, keeps its logits (qwen3_context_logits)
 * and advances one position - bit for bit what n separate qwen3_context_prefill(
 * contexts[i], &tokens[i], 1) calls leave, on every kernel tier and thread count. Nothing
 * is sampled: call qwen3_context_sample per context. The contexts must be distinct and of
 * one model; each weight matrix is read once for up to 64 of them (more are split into
 * equal passes), so n chats cost little more than one while the step is bound by memory
 * bandwidth. Checks every context and token first and changes nothing on error:
 * QWEN3_ERR_INVALID_ARGUMENT for a NULL array or context, a context given twice, contexts
 * of different models or an id outside the vocabulary (the index named);
 * QWEN3_ERR_CONTEXT_FULL when a context has no position left; QWEN3_ERR_IO as
 * qwen3_context_prefill; QWEN3_ERR_OUT_OF_MEMORY when the model's batch scratch (made on
 * first use: per row about a prefill block row, plus vocab_size floats of logits) cannot
 * be allocated. n = 0 does nothing. Other calls on the same model wait for each pass, as
 * for a prefill; a context must not be used by another thread during the call.
 */
QWEN3_API int32_t qwen3_context_decode_batch(Qwen3Context* const* contexts, const int32_t* tokens, uint32_t n);

/* ------------------------------------------------------------------------------------
 * The qwen3.c-compatible loops with the extended settings
 * ---------------------------------------------------------------------------------- */

/* As qwen3_inference_chat / _generate, with a full sampler (NULL = from config's
 * temperature / topp / seed) and a cap on new tokens per answer (0 = no cap). */
QWEN3_API int qwen3_inference_chat_ex(Qwen3Model* model, const Qwen3Config* config,
                                      const Qwen3SamplerConfig* sampler, uint32_t max_tokens);
QWEN3_API int qwen3_inference_generate_ex(Qwen3Model* model, const Qwen3Config* config,
                                          const Qwen3SamplerConfig* sampler, uint32_t max_tokens);

/* ------------------------------------------------------------------------------------
 * CPU and kernels
 * ---------------------------------------------------------------------------------- */

/* Space-separated CPU features found at run time, e.g. "sse4.2 avx2 fma avx512f
 * avx512bw avx512vl avx512vnni" or "neon dotprod sve". Never NULL. */
QWEN3_API const char* qwen3_cpu_features(void);

/* Name of the kernel tier in use: "scalar", "avx2", "avx512vnni", "amx", "neon", "sve", ...
 * The best supported tier is chosen at first use; the environment variable QWEN3_KERNEL
 * (a tier name) forces a lower one. */
QWEN3_API const char* qwen3_kernel_name(void);

/* Selects a kernel tier by name for the whole process (tests, benchmarks). Returns
 * QWEN3_OK, or QWEN3_ERR_UNSUPPORTED when this CPU or build lacks it. */
QWEN3_API int32_t qwen3_kernel_select(const char* name);

/* The library version, e.g. "0.1.0". */
QWEN3_API const char* qwen3_version(void);

#ifdef __cplusplus
}
#endif

#endif /* QWEN3_INFERENCE_H */
