/* test_batch.c - batched decode steps (qwen3_context_decode_batch): one token for each of
 * n contexts of one model, bit for bit what n separate decode steps leave - logits, KV
 * cache (f32 or q8) and positions - on every kernel tier, thread count and split into passes; and
 * the errors, which change nothing. (The MoE path is checked in tests/moe_test.ts.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "qwen3_inference.h"
#include "test_util.h"
#include "transformer.h"

#define N_CTX 17u

/* Set from QWEN3_TEST_EMULATED (tools/test_aarch64.ts, runs under qemu-user where a pass
 * costs 20-100x its native time): the first model only, with one pass and split passes. */
static int emulated;

/* The KV caches of two contexts of one model agree at positions < n (where into where). */
static int kv_equal(const Qwen3Context* a, const Qwen3Context* b, uint32_t n, char* where, size_t cap) {
    const Qwen3Header* h = &a->model->header;
    if (a->kv_type == QWEN3_KV_Q8 || b->kv_type == QWEN3_KV_Q8) {
        /* the int8 cache (transformer.h): a slab per layer and kv head of keys, values
         * and their scales, a row per position */
        if (a->kv_type != b->kv_type) {
            snprintf(where, cap, "kv type");
            return 0;
        }
        for (uint32_t l = 0; l < h->n_layers; l++) {
            for (uint32_t p = 0; p < n; p++) {
                const uint32_t hd = h->head_dim, hg = hd / a->kv_group;
                int same = 1;
                for (uint32_t kh = 0; kh < h->n_kv_heads && same; kh++) {
                    /* a's and b's lengths may differ: each indexes its own slabs */
                    const size_t at = ((size_t)l * h->n_kv_heads + kh) * a->ctx_len + p;
                    const size_t bt = ((size_t)l * h->n_kv_heads + kh) * b->ctx_len + p;
                    same = memcmp(a->value_q8 + at * hd, b->value_q8 + bt * hd, hd) == 0 &&
                           memcmp(a->value_scale + at * hg, b->value_scale + bt * hg, hg * sizeof(float)) == 0 &&
                           memcmp(a->key_q8 + at * hd, b->key_q8 + bt * hd, hd) == 0 &&
                           memcmp(a->key_scale + at * hg, b->key_scale + bt * hg, hg * sizeof(float)) == 0;
                }
                if (!same) {
                    snprintf(where, cap, "q8 cache layer %u position %u", l, p);
                    return 0;
                }
            }
        }
        return 1;
    }
    if (a->kv_type != b->kv_type) {
        snprintf(where, cap, "kv type");
        return 0;
    }
    /* the f32 and f16 caches: the same slabs per layer and kv head, fp32 or binary16 */
    const size_t es = a->kv_type == QWEN3_KV_F16 ? sizeof(uint16_t) : sizeof(float);
    const char* const av = a->kv_type == QWEN3_KV_F16 ? (const char*)a->value_f16 : (const char*)a->value_cache;
    const char* const bv = b->kv_type == QWEN3_KV_F16 ? (const char*)b->value_f16 : (const char*)b->value_cache;
    const char* const ak = a->kv_type == QWEN3_KV_F16 ? (const char*)a->key_f16 : (const char*)a->key_cache;
    const char* const bk = b->kv_type == QWEN3_KV_F16 ? (const char*)b->key_f16 : (const char*)b->key_cache;
    for (uint32_t l = 0; l < h->n_layers; l++) {
        for (uint32_t p = 0; p < n; p++) {
            const size_t lane = p % QWEN3_KV_BLOCK;
            const uint32_t hd = h->head_dim;
            for (uint32_t kh = 0; kh < h->n_kv_heads; kh++) {
                const size_t at = ((size_t)l * h->n_kv_heads + kh) * a->ctx_len + p;
                const size_t bt = ((size_t)l * h->n_kv_heads + kh) * b->ctx_len + p;
                if (memcmp(av + at * hd * es, bv + bt * hd * es, hd * es) != 0) {
                    snprintf(where, cap, "value cache layer %u position %u kv head %u", l, p, kh);
                    return 0;
                }
                const size_t ab = ((size_t)l * h->n_kv_heads + kh) * a->ctx_blocks + p / QWEN3_KV_BLOCK;
                const size_t bb = ((size_t)l * h->n_kv_heads + kh) * b->ctx_blocks + p / QWEN3_KV_BLOCK;
                for (uint32_t i = 0; i < hd; i++) {
                    if (memcmp(ak + ((ab * hd + i) * QWEN3_KV_BLOCK + lane) * es,
                               bk + ((bb * hd + i) * QWEN3_KV_BLOCK + lane) * es, es) != 0) {
                        snprintf(where, cap, "key cache layer %u position %u kv head %u dim %u", l, p, kh, i);
                        return 0;
                    }
                }
            }
        }
    }
    return 1;
}

/* Context i's length: a few short ones (full before the end), the rest roomy. */
static uint32_t ctx_length(uint32_t i) { return i % 5 == 2 ? 40 + i : 120; }

/* One model, tier, thread count and pass size (batch_rows, 0 = default): N_CTX pairs of
 * contexts prefilled to different positions (0 .. 33); then for n = 1 .. N_CTX a batched
 * step of n of the batch set (a rotating choice, in shuffled order) against a decode step
 * of each twin. Logits, caches and positions must agree bit for bit. */
static void check_batch_bits(Qwen3Model* m, const char* name, const char* tier, uint32_t threads, uint32_t rows) {
    const uint32_t vocab = m->header.vocab_size;
    Qwen3Context batch[N_CTX], step[N_CTX];
    uint64_t rng = 1234 + rows;
    int ok = 1;
    m->batch_rows = rows;
    for (uint32_t i = 0; i < N_CTX; i++) {
        /* every fourth pair keeps an int8 cache, every fourth an fp16 one: batches mix the
         * three kinds */
        const uint32_t kv = i % 4 == 3 ? QWEN3_KV_Q8 : i % 4 == 1 ? QWEN3_KV_F16 : QWEN3_KV_F32;
        ok &= qwen3_context_init_kv(&batch[i], m, ctx_length(i), kv) == QWEN3_OK;
        ok &= qwen3_context_init_kv(&step[i], m, ctx_length(i), kv) == QWEN3_OK;
        /* some batch contexts tile their attention finely: the bits must not change */
        if (i % 3 == 1) batch[i].att_chunk = QWEN3_KV_BLOCK;
        const uint32_t n_pre = (i * 13) % 34; /* 0 for context 0: an empty one too */
        int32_t pre[40];
        for (uint32_t t = 0; t < n_pre; t++) pre[t] = (int32_t)(tu_next(&rng) % vocab);
        ok &= qwen3_forward_tokens(&batch[i], pre, n_pre) == QWEN3_OK;
        ok &= qwen3_forward_tokens(&step[i], pre, n_pre) == QWEN3_OK;
    }
    CHECK(ok, "%s: contexts: %s", name, qwen3_get_last_error());
    if (!ok) return;
    char where[128];
    uint32_t bad = 0, steps = 0;
    for (uint32_t n = 1; n <= N_CTX && bad == 0; n++) {
        Qwen3Context* pick[N_CTX];
        uint32_t idx[N_CTX];
        int32_t tokens[N_CTX];
        uint32_t k = 0;
        /* n contexts with room left, starting at a rotating offset, odd ones reversed */
        for (uint32_t j = 0; j < N_CTX && k < n; j++) {
            const uint32_t i = (j * 7 + n * 3) % N_CTX;
            if (batch[i].pos < batch[i].ctx_len) idx[k++] = i;
        }
        if (k < n) break; /* the short contexts filled up: enough steps were taken */
        for (uint32_t j = 0; j < n; j++) {
            pick[j] = &batch[idx[(n % 2) ? n - 1 - j : j]];
            tokens[j] = (int32_t)(tu_next(&rng) % vocab);
        }
        int32_t rc = qwen3_context_decode_batch(pick, tokens, n);
        CHECK(rc == QWEN3_OK, "%s/%s/%u threads/rows %u: batch of %u: %s", name, tier, threads, rows, n,
              qwen3_get_last_error());
        if (rc != QWEN3_OK) return;
        for (uint32_t j = 0; j < n; j++) {
            Qwen3Context* b = pick[j];
            Qwen3Context* s = &step[b - batch];
            CHECK(qwen3_forward_tokens(s, &tokens[j], 1) == QWEN3_OK, "decode: %s", qwen3_get_last_error());
            steps++;
            const float* logits = qwen3_context_logits(b);
            if (b->pos != s->pos || logits == NULL) {
                CHECK(0, "%s/%s: batch of %u: context %u at %u (logits %p), its twin at %u", name, tier, n,
                      (unsigned)(b - batch), b->pos, (const void*)logits, s->pos);
                bad++;
            } else if (memcmp(logits, s->logits, vocab * sizeof(float)) != 0) {
                CHECK(0, "%s/%s/%u threads/rows %u: batch of %u: context %u (position %u): logits differ from its own "
                         "decode step", name, tier, threads, rows, n, (unsigned)(b - batch), s->pos - 1);
                bad++;
            } else if (!kv_equal(b, s, s->pos, where, sizeof where)) {
                CHECK(0, "%s/%s/%u threads/rows %u: batch of %u: context %u: %s differs", name, tier, threads, rows, n,
                      (unsigned)(b - batch), where);
                bad++;
            }
            if (bad) break;
        }
    }
    CHECK(steps >= 100, "%s: only %u steps compared", name, steps);
    for (uint32_t i = 0; i < N_CTX; i++) {
        qwen3_context_deinit(&batch[i]);
        qwen3_context_deinit(&step[i]);
    }
    m->batch_rows = 0;
}

static void test_batch_bit_identical(void) {
    char dir[1024];
    if (!tu_make_temp_dir(dir, sizeof dir)) {
        CHECK(0, "cannot create a temp folder");
        return;
    }
    TuSpec specs[2];
    const char* names[2] = {"gqa2_gs32", "odd_rows_gs16"};
    specs[0] = tu_small_spec();
    specs[0].vocab_size = 512;
    specs[0].seq_len = 512;
    /* rows that are not multiples of any SIMD tile, 3 heads on 1 kv head, an untied classifier */
    specs[1] = specs[0];
    specs[1].dim = 96;
    specs[1].hidden_dim = 160;
    specs[1].n_heads = 3;
    specs[1].n_kv_heads = 1;
    specs[1].head_dim = 16;
    specs[1].group_size = 16;
    specs[1].vocab_size = 300;
    specs[1].shared_classifier = 0;
    specs[1].seed = 5;
    const char* const* tiers = qwen3_kernels_all_names();
    const char* active = qwen3_kernel_name();
    for (int i = 0; i < (emulated ? 1 : 2); i++) {
        char path[1100], tok[1200];
        snprintf(path, sizeof path, "%s/%s.bin", dir, names[i]);
        snprintf(tok, sizeof tok, "%s.tokenizer", path);
        CHECK(tu_write_checkpoint(path, &specs[i]) && tu_write_byte_tokenizer(tok), "%s: write", names[i]);
        Qwen3Model* m = qwen3_model_new(path, 0);
        CHECK(m != NULL, "%s: %s", names[i], qwen3_get_last_error());
        if (!m) continue;
        for (uint32_t t = 0; tiers[t]; t++) {
            if (qwen3_kernels_find(tiers[t]) == NULL) {
                fprintf(stderr, "%s: tier %s SKIPPED (not supported by this CPU)\n", names[i], tiers[t]);
                continue;
            }
            CHECK(qwen3_kernel_select(tiers[t]) == QWEN3_OK, "select %s", tiers[t]);
            /* one pass per step (up to 64 rows) and passes of at most 5 rows (17 = 6 + 6 + 5),
             * each on 1 and 3 threads on the first model */
            static const uint32_t runs[][2] = {{1, 0}, {3, 5}, {1, 5}, {3, 0}};
            for (uint32_t r = 0; r < (i == 0 && !emulated ? 4u : 2u); r++) {
                CHECK(qwen3_model_resize_pool(m, runs[r][0]) == QWEN3_OK, "threads %u", runs[r][0]);
                check_batch_bits(m, names[i], tiers[t], runs[r][0], runs[r][1]);
            }
        }
        qwen3_model_free(m);
    }
    CHECK(qwen3_kernel_select(active) == QWEN3_OK, "restore %s", active);
    tu_remove_dir(dir);
}

/* Every error is found before anything changes: positions and logits stay. */
static void test_batch_errors(void) {
    char dir[1024], path[1100], tok[1200];
    TuSpec s = tu_small_spec();
    s.vocab_size = 512;
    CHECK(tu_make_temp_dir(dir, sizeof dir), "temp folder");
    snprintf(path, sizeof path, "%s/model.bin", dir);
    snprintf(tok, sizeof tok, "%s.tokenizer", path);
    CHECK(tu_write_checkpoint(path, &s) && tu_write_byte_tokenizer(tok), "model");
    Qwen3Model* m = qwen3_model_load(path, 0);
    Qwen3Model* other = qwen3_model_load(path, 0);
    CHECK(m && other, "load: %s", qwen3_get_last_error());
    if (!m || !other) return;
    Qwen3Context* a = qwen3_context_new(m, 8);
    Qwen3Context* b = qwen3_context_new(m, 8);
    Qwen3Context* full = qwen3_context_new(m, 2);
    Qwen3Context* foreign = qwen3_context_new(other, 8);
    const int32_t two[2] = {5, 6};
    CHECK(qwen3_context_prefill(a, two, 1) == QWEN3_OK && qwen3_context_prefill(full, two, 2) == QWEN3_OK,
          "prefill: %s", qwen3_get_last_error());
    float before[512];
    memcpy(before, qwen3_context_logits(a), sizeof before);

    Qwen3Context* ab[2] = {a, b};
    CHECK(qwen3_context_decode_batch(NULL, two, 2) == QWEN3_ERR_INVALID_ARGUMENT, "NULL contexts");
    CHECK_ERROR_HAS("contexts is NULL");
    CHECK(qwen3_context_decode_batch(ab, NULL, 2) == QWEN3_ERR_INVALID_ARGUMENT, "NULL tokens");
    CHECK_ERROR_HAS("tokens is NULL");
    CHECK(qwen3_context_decode_batch(NULL, NULL, 0) == QWEN3_OK, "n = 0 does nothing");
    Qwen3Context* with_null[3] = {a, b, NULL};
    const int32_t three[3] = {1, 2, 3};
    CHECK(qwen3_context_decode_batch(with_null, three, 3) == QWEN3_ERR_INVALID_ARGUMENT, "a NULL context");
    CHECK_ERROR_HAS("contexts[2] is NULL");
    Qwen3Context* twice[3] = {a, b, a};
    CHECK(qwen3_context_decode_batch(twice, three, 3) == QWEN3_ERR_INVALID_ARGUMENT, "a context twice");
    CHECK_ERROR_HAS("contexts[2] is contexts[0] again");
    Qwen3Context* mixed[3] = {a, foreign, b};
    CHECK(qwen3_context_decode_batch(mixed, three, 3) == QWEN3_ERR_INVALID_ARGUMENT, "two models");
    CHECK_ERROR_HAS("contexts[1] belongs to another model");
    Qwen3Context* with_full[3] = {a, b, full};
    CHECK(qwen3_context_decode_batch(with_full, three, 3) == QWEN3_ERR_CONTEXT_FULL, "a full context");
    CHECK_ERROR_HAS("contexts[2] holds 2 of 2 positions");
    const int32_t bad_low[2] = {1, -1}, bad_high[2] = {512, 1};
    CHECK(qwen3_context_decode_batch(ab, bad_low, 2) == QWEN3_ERR_INVALID_ARGUMENT, "a negative id");
    CHECK_ERROR_HAS("token id -1 of contexts[1]");
    CHECK(qwen3_context_decode_batch(ab, bad_high, 2) == QWEN3_ERR_INVALID_ARGUMENT, "an id past the vocabulary");
    CHECK_ERROR_HAS("token id 512 of contexts[0] is outside the vocabulary [0, 512)");
    CHECK(qwen3_context_position(a) == 1 && qwen3_context_position(b) == 0 && qwen3_context_position(full) == 2,
          "errors moved positions: %u %u %u", qwen3_context_position(a), qwen3_context_position(b),
          qwen3_context_position(full));
    CHECK(qwen3_context_logits(a) && memcmp(qwen3_context_logits(a), before, sizeof before) == 0 &&
              qwen3_context_logits(b) == NULL,
          "errors changed logits");
    /* and the same call without the bad context then runs */
    CHECK(qwen3_context_decode_batch(ab, two, 2) == QWEN3_OK, "valid batch: %s", qwen3_get_last_error());
    CHECK(qwen3_context_position(a) == 2 && qwen3_context_position(b) == 1 && qwen3_context_logits(b) != NULL,
          "valid batch: positions %u %u", qwen3_context_position(a), qwen3_context_position(b));
    qwen3_context_free(a);
    qwen3_context_free(b);
    qwen3_context_free(full);
    qwen3_context_free(foreign);
    qwen3_model_free(m);
    qwen3_model_free(other);
    tu_remove_dir(dir);
}

int main(void) {
    const char* emu = getenv("QWEN3_TEST_EMULATED");
    emulated = emu != NULL && emu[0] != '\0' && strcmp(emu, "0") != 0;
    test_batch_errors();
    const double t0 = qwen3_time_seconds();
    test_batch_bit_identical();
    fprintf(stderr, "test_batch: bit_identical took %.2f s\n", qwen3_time_seconds() - t0);
    return tu_finish("test_batch");
}
