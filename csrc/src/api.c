/* api.c - the public functions of qwen3_inference.h: argument checks, then the model,
 * tokenizer, transformer and sampler do the work. (The stdin loops are in stdin_loops.c,
 * the kernel and CPU queries in kernels.c, qwen3_get_last_error in error.c.) */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model.h"
#include "qwen3_inference.h"
#include "sampler.h"
#include "tokenizer.h"
#include "transformer.h"

#define QWEN3_VERSION_STRING "0.1.0"

/* ====================================================================================
 * Struct layouts the Deno binding copies
 *
 * ffi/symbols.ts reads and writes these structs by byte offset (CONFIG_LAYOUT,
 * MODEL_CONFIG_LAYOUT, MODEL_INFO_LAYOUT, SAMPLER_CONFIG_LAYOUT). A change to a struct in
 * qwen3_inference.h that moves a field fails the build here: change ffi/symbols.ts with
 * it. The binding ships for 64-bit targets only, where these offsets hold.
 * ================================================================================== */

#if UINTPTR_MAX == UINT64_MAX
#define QWEN3_FFI_OFFSET(type, field, at) \
    _Static_assert(offsetof(type, field) == (at), #type "." #field " moved: update ffi/symbols.ts")
#define QWEN3_FFI_SIZE(type, bytes) \
    _Static_assert(sizeof(type) == (bytes), "sizeof(" #type ") changed: update ffi/symbols.ts")

QWEN3_FFI_SIZE(Qwen3Config, 64);
QWEN3_FFI_OFFSET(Qwen3Config, checkpoint_path, 0);
QWEN3_FFI_OFFSET(Qwen3Config, temperature, 8);
QWEN3_FFI_OFFSET(Qwen3Config, topp, 12);
QWEN3_FFI_OFFSET(Qwen3Config, ctx_length, 16);
QWEN3_FFI_OFFSET(Qwen3Config, mode, 24);
QWEN3_FFI_OFFSET(Qwen3Config, prompt, 32);
QWEN3_FFI_OFFSET(Qwen3Config, system_prompt, 40);
QWEN3_FFI_OFFSET(Qwen3Config, enable_thinking, 48);
QWEN3_FFI_OFFSET(Qwen3Config, seed, 56);

QWEN3_FFI_SIZE(Qwen3ModelConfig, 32);
QWEN3_FFI_OFFSET(Qwen3ModelConfig, vocab_size, 0);
QWEN3_FFI_OFFSET(Qwen3ModelConfig, dim, 4);
QWEN3_FFI_OFFSET(Qwen3ModelConfig, hidden_dim, 8);
QWEN3_FFI_OFFSET(Qwen3ModelConfig, n_layers, 12);
QWEN3_FFI_OFFSET(Qwen3ModelConfig, n_heads, 16);
QWEN3_FFI_OFFSET(Qwen3ModelConfig, n_kv_heads, 20);
QWEN3_FFI_OFFSET(Qwen3ModelConfig, max_seq_len, 24);
QWEN3_FFI_OFFSET(Qwen3ModelConfig, rope_theta, 28);

QWEN3_FFI_SIZE(Qwen3ModelInfo, 64);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, format, 0);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, head_dim, 4);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, group_size, 8);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, file_seq_len, 12);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, shared_classifier, 16);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, n_tokens, 20);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, bos_id, 24);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, eos_id, 28);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, im_start_id, 32);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, im_end_id, 36);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, think_id, 40);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, end_think_id, 44);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, rms_eps, 48);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, exact_tokenizer, 52);
QWEN3_FFI_OFFSET(Qwen3ModelInfo, file_size, 56);

QWEN3_FFI_SIZE(Qwen3SamplerConfig, 32);
QWEN3_FFI_OFFSET(Qwen3SamplerConfig, temperature, 0);
QWEN3_FFI_OFFSET(Qwen3SamplerConfig, top_p, 4);
QWEN3_FFI_OFFSET(Qwen3SamplerConfig, top_k, 8);
QWEN3_FFI_OFFSET(Qwen3SamplerConfig, min_p, 12);
QWEN3_FFI_OFFSET(Qwen3SamplerConfig, presence_penalty, 16);
QWEN3_FFI_OFFSET(Qwen3SamplerConfig, frequency_penalty, 20);
QWEN3_FFI_OFFSET(Qwen3SamplerConfig, seed, 24);

#undef QWEN3_FFI_OFFSET
#undef QWEN3_FFI_SIZE
#endif

QWEN3_API const char* qwen3_version(void) { return QWEN3_VERSION_STRING; }

/* ====================================================================================
 * Model
 * ================================================================================== */

QWEN3_API Qwen3Model* qwen3_model_load(const char* checkpoint_path, uint32_t ctx_length) {
    if (!checkpoint_path) {
        qwen3_error_set("%s: checkpoint_path is NULL", __func__);
        return NULL;
    }
    if (!checkpoint_path[0]) {
        qwen3_error_set("%s: checkpoint_path is empty", __func__);
        return NULL;
    }
    return qwen3_model_new(checkpoint_path, ctx_length);
}

QWEN3_API const Qwen3ModelConfig* qwen3_model_get_config(const Qwen3Model* model) {
    if (!model) {
        qwen3_error_set("%s: model is NULL", __func__);
        return NULL;
    }
    return &model->config;
}

QWEN3_API int32_t qwen3_model_get_info(const Qwen3Model* model, Qwen3ModelInfo* out) {
    if (!model || !out) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: %s is NULL", __func__,
                          !model ? "model" : "out");
    }
    *out = model->info;
    return QWEN3_OK;
}

QWEN3_API int32_t qwen3_model_get_moe(const Qwen3Model* model, uint32_t out[3], uint8_t* sparse) {
    if (!model || !out) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: %s is NULL", __func__, !model ? "model" : "out");
    }
    out[0] = model->moe.n_experts;
    out[1] = model->moe.n_used;
    out[2] = model->moe.hidden_dim;
    for (uint32_t l = 0; sparse && l < model->header.n_layers; l++) sparse[l] = model->weights.layers[l].moe != NULL;
    return QWEN3_OK;
}

QWEN3_API int32_t qwen3_model_get_moe_norm(const Qwen3Model* model, uint32_t* norm_weights) {
    if (!model || !norm_weights) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: %s is NULL", __func__, !model ? "model" : "norm_weights");
    }
    *norm_weights = model->moe.n_experts == 0 || model->moe.norm_weights;
    return QWEN3_OK;
}

QWEN3_API const char* qwen3_model_get_template(const Qwen3Model* model, uint32_t kind) {
    if (!model) {
        qwen3_error_set("%s: model is NULL", __func__);
        return NULL;
    }
    if (kind >= QWEN3_TEMPLATE_COUNT) {
        qwen3_error_set("%s: kind %u is not 0..%u", __func__, kind,
                        QWEN3_TEMPLATE_COUNT - 1);
        return NULL;
    }
    return model->templates[kind];
}

QWEN3_API int32_t qwen3_model_set_threads(Qwen3Model* model, uint32_t n_threads) {
    if (!model) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: model is NULL", __func__);
    }
    return qwen3_model_resize_pool(model, n_threads);
}

QWEN3_API uint32_t qwen3_model_get_threads(const Qwen3Model* model) {
    if (!model) {
        qwen3_error_set("%s: model is NULL", __func__);
        return 0;
    }
    qwen3_mutex_lock(model->lock);
    uint32_t n = qwen3_pool_threads(model->pool);
    qwen3_mutex_unlock(model->lock);
    return n;
}

/* ====================================================================================
 * Tokenizer
 * ================================================================================== */

QWEN3_API int32_t qwen3_tokenize(const Qwen3Model* model, const char* text, uint32_t text_len,
                                 uint32_t flags, int32_t* out, uint32_t capacity) {
    if (!model) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: model is NULL", __func__);
    if (!text && text_len > 0) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                          "%s: text is NULL but text_len is %u", __func__, text_len);
    }
    if (!out && capacity > 0) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                          "%s: out is NULL but capacity is %u", __func__, capacity);
    }
    if (flags & ~QWEN3_TOKENIZE_SPECIAL) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: unknown flags 0x%x", __func__,
                          flags & ~QWEN3_TOKENIZE_SPECIAL);
    }
    return qwen3_tokenizer_encode(model->tokenizer, text ? text : "", text_len,
                                  (flags & QWEN3_TOKENIZE_SPECIAL) != 0, out, capacity);
}

QWEN3_API const char* qwen3_token_bytes(const Qwen3Model* model, int32_t token,
                                        uint32_t* out_len) {
    if (out_len) *out_len = 0;
    if (!model || !out_len) {
        qwen3_error_set("%s: %s is NULL", __func__, !model ? "model" : "out_len");
        return NULL;
    }
    const char* bytes = qwen3_tokenizer_token_bytes(model->tokenizer, token, out_len);
    if (!bytes) {
        *out_len = 0;
        qwen3_error_set("%s: token %d is outside the tokenizer's [0, %u)", __func__, token,
                        qwen3_tokenizer_size(model->tokenizer));
    }
    return bytes;
}

/* ====================================================================================
 * Contexts
 * ================================================================================== */

QWEN3_API Qwen3Context* qwen3_context_new(Qwen3Model* model, uint32_t ctx_length) {
    return qwen3_context_new_ex(model, ctx_length, NULL);
}

QWEN3_API Qwen3Context* qwen3_context_new_ex(Qwen3Model* model, uint32_t ctx_length,
                                            const Qwen3ContextOptions* options) {
    const Qwen3ContextOptions defaults = {0};
    const Qwen3ContextOptions* o = options ? options : &defaults;
    if (o->kv_type != QWEN3_KV_F32 && o->kv_type != QWEN3_KV_Q8 && o->kv_type != QWEN3_KV_F16) {
        qwen3_error_set("%s: kv_type %u is none of QWEN3_KV_F32 (0), QWEN3_KV_Q8 (1), QWEN3_KV_F16 (2)", __func__,
                        o->kv_type);
        return NULL;
    }
    for (int i = 0; i < 3; i++) {
        if (o->reserved[i] != 0) {
            qwen3_error_set("%s: options.reserved[%d] is %u, must be 0", __func__, i, o->reserved[i]);
            return NULL;
        }
    }
    if (!model) {
        qwen3_error_set("%s: model is NULL", __func__);
        return NULL;
    }
    uint32_t max = model->config.max_seq_len;
    uint32_t len = ctx_length == 0 || ctx_length > max ? max : ctx_length;
    Qwen3Context* ctx = (Qwen3Context*)malloc(sizeof *ctx);
    if (!ctx) {
        qwen3_error_set("out of memory allocating a context (%zu bytes)", sizeof *ctx);
        return NULL;
    }
    if (qwen3_context_init_kv(ctx, model, len, o->kv_type) != QWEN3_OK) {
        free(ctx);
        return NULL;
    }
    return ctx;
}

QWEN3_API void qwen3_context_free(Qwen3Context* ctx) {
    if (!ctx) return;
    qwen3_context_deinit(ctx);
    free(ctx);
}

QWEN3_API uint32_t qwen3_context_kv_type(const Qwen3Context* ctx) {
    if (!ctx) {
        qwen3_error_set("%s: ctx is NULL", __func__);
        return 0;
    }
    return ctx->kv_type;
}

QWEN3_API uint64_t qwen3_context_kv_bytes(const Qwen3Context* ctx) {
    if (!ctx) {
        qwen3_error_set("%s: ctx is NULL", __func__);
        return 0;
    }
    return ctx->kv_bytes;
}

QWEN3_API uint32_t qwen3_context_length(const Qwen3Context* ctx) {
    if (!ctx) {
        qwen3_error_set("%s: ctx is NULL", __func__);
        return 0;
    }
    return ctx->ctx_len;
}

QWEN3_API uint32_t qwen3_context_position(const Qwen3Context* ctx) {
    if (!ctx) {
        qwen3_error_set("%s: ctx is NULL", __func__);
        return 0;
    }
    return ctx->pos;
}

QWEN3_API int32_t qwen3_context_rewind(Qwen3Context* ctx, uint32_t position) {
    if (!ctx) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: ctx is NULL", __func__);
    if (position > ctx->pos) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                          "%s: position %u is past the context's position %u", __func__,
                          position, ctx->pos);
    }
    /* the cache rows past `position` are overwritten as new tokens arrive */
    if (position != ctx->pos) ctx->has_logits = 0;
    ctx->pos = position;
    return QWEN3_OK;
}

QWEN3_API int32_t qwen3_context_prefill(Qwen3Context* ctx, const int32_t* tokens, uint32_t n) {
    if (!ctx) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: ctx is NULL", __func__);
    if (!tokens && n > 0) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                          "%s: tokens is NULL but n is %u", __func__, n);
    }
    return qwen3_forward_tokens(ctx, tokens, n);
}

QWEN3_API int32_t qwen3_context_embed(Qwen3Context* ctx, const int32_t* tokens, uint32_t n,
                                      float* out, uint32_t out_len) {
    if (!ctx || !tokens || !out) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: %s is NULL", __func__,
                          !ctx ? "ctx" : !tokens ? "tokens" : "out");
    }
    const uint32_t dim = ctx->model->header.dim;
    if (out_len != dim) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                          "%s: out_len is %u but the model's hidden state has dim = %u floats",
                          __func__, out_len, dim);
    }
    if (n == 0) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: no tokens (n is 0)", __func__);
    return qwen3_forward_embed(ctx, tokens, n, out);
}

QWEN3_API int32_t qwen3_context_verify(Qwen3Context* ctx, const int32_t* tokens, uint32_t n, float* logits_out) {
    if (!ctx) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: ctx is NULL", __func__);
    if (n > 0 && (!tokens || !logits_out)) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: %s is NULL but n is %u", __func__,
                          !tokens ? "tokens" : "logits_out", n);
    }
    return qwen3_forward_tokens_logits(ctx, tokens, n, logits_out);
}

QWEN3_API const float* qwen3_context_logits(const Qwen3Context* ctx) {
    if (!ctx) {
        qwen3_error_set("%s: ctx is NULL", __func__);
        return NULL;
    }
    if (!ctx->has_logits) {
        qwen3_error_set("%s: no logits yet (prefill or decode first)", __func__);
        return NULL;
    }
    return ctx->logits;
}

QWEN3_API int32_t qwen3_context_set_sampler(Qwen3Context* ctx, const Qwen3SamplerConfig* config) {
    if (!ctx || !config) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: %s is NULL", __func__,
                          !ctx ? "ctx" : "config");
    }
    return qwen3_sampler_configure(&ctx->sampler, config);
}

QWEN3_API int32_t qwen3_context_sample(Qwen3Context* ctx) {
    if (!ctx) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: ctx is NULL", __func__);
    if (!ctx->has_logits) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                          "%s: no logits yet (prefill or decode first)", __func__);
    }
    return qwen3_sampler_sample(&ctx->sampler, ctx->logits);
}

QWEN3_API int32_t qwen3_context_pick(Qwen3Context* ctx, const float* logits) {
    if (!ctx) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: ctx is NULL", __func__);
    if (!logits) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: logits is NULL", __func__);
    return qwen3_sampler_pick(&ctx->sampler, logits);
}

QWEN3_API int32_t qwen3_context_record(Qwen3Context* ctx, int32_t token) {
    if (!ctx) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: ctx is NULL", __func__);
    if (token < 0 || (uint32_t)token >= ctx->sampler.vocab_size) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: token %d outside the vocabulary of %u", __func__, token,
                          ctx->sampler.vocab_size);
    }
    qwen3_sampler_record(&ctx->sampler, token);
    return QWEN3_OK;
}

QWEN3_API int32_t qwen3_context_decode_batch(Qwen3Context* const* contexts, const int32_t* tokens, uint32_t n) {
    return qwen3_forward_batch(contexts, tokens, n);
}

QWEN3_API int32_t qwen3_context_decode(Qwen3Context* ctx, int32_t token) {
    if (!ctx) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: ctx is NULL", __func__);
    int32_t rc = qwen3_forward_tokens(ctx, &token, 1);
    if (rc != QWEN3_OK) return rc;
    return qwen3_sampler_sample(&ctx->sampler, ctx->logits);
}
