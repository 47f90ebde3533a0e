/*
 * stdin_loops.c - the qwen3.c-compatible interactive loops, qwen3_inference_chat and
 * _generate, which read stdin and own stdout and stderr.
 *
 * Behaviour of qwen3.c, with its gaps closed:
 *   - generate: echoes the prompt and streams the continuation. The prompt is tokenized
 *     WITHOUT special tokens, as the TypeScript API does by default: text never becomes
 *     control tokens unless the caller asks, and this API cannot ask
 *     (docs/tokenizer.md#added-tokens-and-user-text).
 *   - chat: the first turn uses the system template when a system prompt is given;
 *     config->prompt, when set, is the first user turn; then lines from stdin until an
 *     empty line or EOF. The KV cache is kept across turns: after each reply
 *     "<|im_end|>\n" is fed, then the next turn's template. Template text is tokenized
 *     WITH special tokens, the user's and system's text WITHOUT them (each piece on its
 *     own, split at the template's %s), so typing "<|im_end|>" stays text.
 *   - both stop at <|im_end|> or <|endoftext|>, at max_tokens, or when the context is
 *     full (a message on stderr), and print prefill and decode tok/s to stderr. A context
 *     that fills while answering is a stop reason like the others, not an error: the
 *     text printed is all there is. Only input that cannot be prefilled into an empty
 *     context fails (QWEN3_ERR_CONTEXT_FULL), since then nothing could be generated.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model.h"
#include "platform.h"
#include "qwen3_inference.h"
#include "transformer.h"

/* ====================================================================================
 * Output: token bytes, holding back an incomplete UTF-8 character
 * ================================================================================== */

typedef struct {
    FILE* f;
    unsigned char pending[4];
    uint32_t n_pending;
} Utf8Writer;

/* Length of the UTF-8 sequence a lead byte starts; 1 for anything invalid (written raw). */
static uint32_t utf8_length(unsigned char b) {
    if (b >= 0xF0 && b <= 0xF4) return 4;
    if (b >= 0xE0) return b <= 0xEF ? 3 : 1;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    return 1;
}

static void writer_put(Utf8Writer* w, const char* bytes, uint32_t len) {
    for (uint32_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)bytes[i];
        if (w->n_pending > 0 && (b & 0xC0) != 0x80) {
            /* a truncated sequence: write it as it is and start again */
            fwrite(w->pending, 1, w->n_pending, w->f);
            w->n_pending = 0;
        }
        w->pending[w->n_pending++] = b;
        if (w->n_pending >= utf8_length(w->pending[0])) {
            fwrite(w->pending, 1, w->n_pending, w->f);
            w->n_pending = 0;
        }
    }
    fflush(w->f);
}

static void writer_finish(Utf8Writer* w) {
    if (w->n_pending) fwrite(w->pending, 1, w->n_pending, w->f);
    w->n_pending = 0;
    fflush(w->f);
}

/* ====================================================================================
 * Tokens
 * ================================================================================== */

typedef struct {
    int32_t* ids;
    uint32_t n;
    uint32_t cap;
} TokenList;

static int32_t list_append_text(TokenList* list, const Qwen3Model* m, const char* text,
                                size_t len, int special) {
    if (len > UINT32_MAX) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "text of %zu bytes is too long", len);
    }
    for (;;) {
        uint32_t room = list->cap - list->n;
        int32_t count = qwen3_tokenizer_encode(m->tokenizer, text, len, special,
                                               list->ids ? list->ids + list->n : NULL, room);
        if (count < 0) return count;
        if ((uint32_t)count <= room) {
            list->n += (uint32_t)count;
            return QWEN3_OK;
        }
        uint64_t want = (uint64_t)list->n + (uint32_t)count;
        uint64_t cap = list->cap ? list->cap : 64;
        while (cap < want) cap *= 2;
        if (cap > UINT32_MAX / sizeof(int32_t)) {
            return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "text of %zu bytes has too many tokens",
                              len);
        }
        int32_t* ids = (int32_t*)realloc(list->ids, (size_t)cap * sizeof(int32_t));
        if (!ids) {
            return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory for %llu token ids",
                              (unsigned long long)cap);
        }
        list->ids = ids;
        list->cap = (uint32_t)cap;
    }
}

/* Appends a template filled with `slots` (n_slots texts): the template's own text with
 * special tokens, each slot's text without. "%%" in the template is a literal '%'. */
static int32_t list_append_template(TokenList* list, const Qwen3Model* m, const char* tmpl,
                                    const char* const* slots, uint32_t n_slots) {
    size_t len = strlen(tmpl);
    char* piece = (char*)malloc(len + 1);
    if (!piece) return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory rendering a template");
    size_t n = 0;
    uint32_t slot = 0;
    int32_t rc = QWEN3_OK;
    for (size_t i = 0; i <= len && rc == QWEN3_OK; i++) {
        if (i == len || (tmpl[i] == '%' && tmpl[i + 1] == 's')) {
            rc = list_append_text(list, m, piece, n, 1);
            n = 0;
            if (rc == QWEN3_OK && i < len) {
                const char* text = slot < n_slots && slots[slot] ? slots[slot] : "";
                slot++;
                rc = list_append_text(list, m, text, strlen(text), 0);
                i++;
            }
        } else if (tmpl[i] == '%' && tmpl[i + 1] == '%') {
            piece[n++] = '%';
            i++;
        } else {
            piece[n++] = tmpl[i];
        }
    }
    free(piece);
    return rc;
}

/* ====================================================================================
 * Shared pieces
 * ================================================================================== */

typedef struct {
    uint32_t prompt_tokens;
    double prefill_seconds;
    uint32_t generated;
    double decode_seconds;
    int context_full; /* the answer stopped because the context filled up */
} TurnStats;

static void print_stats(const TurnStats* s) {
    double pre = s->prefill_seconds > 0 ? s->prompt_tokens / s->prefill_seconds : 0.0;
    double dec = s->decode_seconds > 0 ? s->generated / s->decode_seconds : 0.0;
    fprintf(stderr, "prefill: %u tokens, %.1f tok/s | decode: %u tokens, %.1f tok/s\n",
            s->prompt_tokens, pre, s->generated, dec);
    fflush(stderr);
}

static void print_context_full(const Qwen3Context* ctx) {
    fprintf(stderr,
            "\n[context full: all %u positions are used; start again with a larger context "
            "length]\n",
            ctx->ctx_len);
    fflush(stderr);
}

static int is_stop(const Qwen3Model* m, int32_t token) {
    return token == m->info.im_end_id || token == m->info.eos_id;
}

/* Prefills `prompt`, then samples, prints and runs tokens until a stop token, max_tokens
 * or a full context (stats->context_full set, message printed: still QWEN3_OK). Returns
 * QWEN3_ERR_CONTEXT_FULL, nothing printed, when the prompt does not fit in what is left
 * of the context, or another error. */
static int32_t answer(Qwen3Context* ctx, const TokenList* prompt, uint32_t max_tokens,
                      Utf8Writer* out, TurnStats* stats) {
    const Qwen3Model* m = ctx->model;
    memset(stats, 0, sizeof *stats);
    double t0 = qwen3_time_seconds();
    int32_t rc = qwen3_forward_tokens(ctx, prompt->ids, prompt->n);
    if (rc != QWEN3_OK) return rc;
    double t1 = qwen3_time_seconds();
    stats->prompt_tokens = prompt->n;
    stats->prefill_seconds = t1 - t0;
    for (;;) {
        int32_t next = qwen3_sampler_sample(&ctx->sampler, ctx->logits);
        if (next < 0) {
            rc = next;
            break;
        }
        if (is_stop(m, next)) break;
        uint32_t len = 0;
        const char* bytes = qwen3_tokenizer_token_bytes(m->tokenizer, next, &len);
        if (bytes) writer_put(out, bytes, len);
        stats->generated++;
        if (max_tokens && stats->generated >= max_tokens) break;
        if (ctx->pos >= ctx->ctx_len) {
            /* the token is printed but has no position to run in: the answer ends here */
            print_context_full(ctx);
            stats->context_full = 1;
            break;
        }
        rc = qwen3_forward_tokens(ctx, &next, 1);
        if (rc != QWEN3_OK) break;
    }
    writer_finish(out);
    stats->decode_seconds = qwen3_time_seconds() - t1;
    return rc;
}

static int32_t begin(Qwen3Model* model, const Qwen3Config* config,
                     const Qwen3SamplerConfig* sampler, const char* who, Qwen3Context** out) {
    *out = NULL;
    if (!model || !config) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: %s is NULL", who,
                          !model ? "model" : "config");
    }
    Qwen3SamplerConfig sc = {0};
    if (sampler) {
        sc = *sampler;
    } else {
        sc.temperature = config->temperature;
        sc.top_p = config->topp;
        sc.seed = config->seed;
    }
    Qwen3Context* ctx = qwen3_context_new(model, config->ctx_length);
    if (!ctx) return QWEN3_ERR_OUT_OF_MEMORY;
    int32_t rc = qwen3_context_set_sampler(ctx, &sc);
    if (rc != QWEN3_OK) {
        qwen3_context_free(ctx);
        return rc;
    }
    *out = ctx;
    return QWEN3_OK;
}

/* ====================================================================================
 * generate
 * ================================================================================== */

/* The generate loop; `who` is the public function the caller called, for messages. */
static int32_t run_generate(Qwen3Model* model, const Qwen3Config* config,
                            const Qwen3SamplerConfig* sampler, uint32_t max_tokens,
                            const char* who) {
    Qwen3Context* ctx = NULL;
    int32_t rc = begin(model, config, sampler, who, &ctx);
    if (rc != QWEN3_OK) return rc;
    const char* prompt = config->prompt ? config->prompt : "";
    TokenList tokens = {0};
    rc = list_append_text(&tokens, model, prompt, strlen(prompt), 0);
    if (rc == QWEN3_OK && tokens.n == 0) {
        rc = qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                        "%s: the prompt is empty (nothing to continue)", who);
    }
    if (rc == QWEN3_OK && tokens.n > ctx->ctx_len) {
        /* checked before the echo: a prompt that cannot run prints nothing */
        rc = qwen3_fail(QWEN3_ERR_CONTEXT_FULL,
                        "%s: the prompt's %u tokens do not fit in a context of %u positions",
                        who, tokens.n, ctx->ctx_len);
    }
    if (rc == QWEN3_OK) {
        Utf8Writer out = {.f = stdout};
        writer_put(&out, prompt, (uint32_t)strlen(prompt));
        writer_finish(&out);
        TurnStats stats;
        rc = answer(ctx, &tokens, max_tokens, &out, &stats);
        fputc('\n', stdout);
        fflush(stdout);
        if (rc == QWEN3_OK) print_stats(&stats);
    }
    free(tokens.ids);
    qwen3_context_free(ctx);
    return rc;
}

QWEN3_API int qwen3_inference_generate_ex(Qwen3Model* model, const Qwen3Config* config,
                                          const Qwen3SamplerConfig* sampler,
                                          uint32_t max_tokens) {
    return run_generate(model, config, sampler, max_tokens, __func__);
}

QWEN3_API int qwen3_inference_generate(Qwen3Model* model, const Qwen3Config* config) {
    return run_generate(model, config, NULL, 0, __func__);
}

/* ====================================================================================
 * chat
 * ================================================================================== */

/* Reads one line of any length from stdin, without its line ending. NULL at EOF before
 * any byte, or when out of memory (*oom set). */
static char* read_line(int* oom) {
    size_t cap = 256, n = 0;
    char* line = (char*)malloc(cap);
    *oom = 0;
    if (!line) {
        *oom = 1;
        return NULL;
    }
    int ch;
    while ((ch = fgetc(stdin)) != EOF && ch != '\n') {
        if (n + 1 >= cap) {
            char* bigger = (char*)realloc(line, cap * 2);
            if (!bigger) {
                free(line);
                *oom = 1;
                return NULL;
            }
            line = bigger;
            cap *= 2;
        }
        line[n++] = (char)ch;
    }
    if (ch == EOF && n == 0) {
        free(line);
        return NULL;
    }
    if (n > 0 && line[n - 1] == '\r') n--;
    line[n] = '\0';
    return line;
}

/* The chat loop; `who` is the public function the caller called, for messages. */
static int32_t run_chat(Qwen3Model* model, const Qwen3Config* config,
                        const Qwen3SamplerConfig* sampler, uint32_t max_tokens, const char* who) {
    Qwen3Context* ctx = NULL;
    int32_t rc = begin(model, config, sampler, who, &ctx);
    if (rc != QWEN3_OK) return rc;
    const int thinking = config->enable_thinking ? 1 : 0;
    const char* system = config->system_prompt && config->system_prompt[0] ? config->system_prompt
                                                                           : NULL;
    const char* first = config->prompt && config->prompt[0] ? config->prompt : NULL;
    TokenList tokens = {0};
    Utf8Writer out = {.f = stdout};
    for (uint32_t turn = 0; rc == QWEN3_OK; turn++) {
        char* line = NULL;
        const char* user = NULL;
        if (turn == 0 && first) {
            user = first;
        } else {
            fputs("\n> ", stdout);
            fflush(stdout);
            int oom = 0;
            line = read_line(&oom);
            if (oom) rc = qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory reading a line");
            if (!line || !line[0]) {
                free(line);
                break;
            }
            user = line;
        }
        tokens.n = 0;
        if (turn > 0) {
            /* close the previous reply, whose <|im_end|> was sampled but never run */
            rc = list_append_text(&tokens, model, "<|im_end|>\n", 11, 1);
        }
        if (rc == QWEN3_OK) {
            if (turn == 0 && system) {
                const char* slots[2] = {system, user};
                uint32_t kind = thinking ? QWEN3_TEMPLATE_SYSTEM_THINKING : QWEN3_TEMPLATE_SYSTEM;
                rc = list_append_template(&tokens, model, model->templates[kind], slots, 2);
            } else {
                const char* slots[1] = {user};
                uint32_t kind = thinking ? QWEN3_TEMPLATE_THINKING : QWEN3_TEMPLATE_PLAIN;
                rc = list_append_template(&tokens, model, model->templates[kind], slots, 1);
            }
        }
        free(line);
        if (rc != QWEN3_OK) break;
        TurnStats stats;
        const uint32_t start = ctx->pos;
        rc = answer(ctx, &tokens, max_tokens, &out, &stats);
        if (rc == QWEN3_ERR_CONTEXT_FULL) {
            if (start == 0) {
                /* not even an empty context holds this turn: nothing can ever be answered */
                rc = qwen3_fail(QWEN3_ERR_CONTEXT_FULL,
                                "%s: the first turn's %u tokens do not fit in a context of %u "
                                "positions",
                                who, tokens.n, ctx->ctx_len);
                break;
            }
            /* the conversation so far has filled the context: it ends, as an empty line
             * ends it */
            fprintf(stderr,
                    "\n[context full: this turn's %u tokens do not fit in the %u positions "
                    "left of %u; start again with a larger context length]\n",
                    tokens.n, ctx->ctx_len - start, ctx->ctx_len);
            fflush(stderr);
            rc = QWEN3_OK;
            break;
        }
        fputc('\n', stdout);
        fflush(stdout);
        if (rc == QWEN3_OK) print_stats(&stats);
        if (rc == QWEN3_OK && stats.context_full) break; /* no room left for another turn */
    }
    free(tokens.ids);
    qwen3_context_free(ctx);
    return rc;
}

QWEN3_API int qwen3_inference_chat_ex(Qwen3Model* model, const Qwen3Config* config,
                                      const Qwen3SamplerConfig* sampler, uint32_t max_tokens) {
    return run_chat(model, config, sampler, max_tokens, __func__);
}

QWEN3_API int qwen3_inference_chat(Qwen3Model* model, const Qwen3Config* config) {
    return run_chat(model, config, NULL, 0, __func__);
}
