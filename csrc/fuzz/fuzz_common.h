/*
 * fuzz_common.h - what the fuzz harnesses in csrc/fuzz/ share: a private scratch folder
 * (in /dev/shm where it exists, so writing one input per execution costs a memcpy, not a
 * disk write), files written into it, and generators of the small valid inputs the
 * harnesses build on (a byte-level .tokenizer, a tiny checkpoint).
 *
 * The loaders under test take paths, not buffers, and the harnesses deliberately do not
 * refactor them: each input is written to a file and loaded exactly as a user's file is.
 *
 * Every harness is one .c file defining LLVMFuzzerTestOneInput (and LLVMFuzzerInitialize
 * where it needs set-up). tools/fuzz.ts links each with libFuzzer; csrc/tests/
 * test_fuzz_replay.c includes them all into one program (renaming the two entry points)
 * and replays the committed corpus, so everything here is static and every harness
 * prefixes its own helpers.
 *
 * A harness that finds a broken invariant (not just a crash) prints what it saw and calls
 * FUZZ_FAIL, which aborts: libFuzzer then saves the input as a reproducer.
 */
#ifndef QWEN3_FUZZ_COMMON_H
#define QWEN3_FUZZ_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qwen3_inference.h"
#include "tokenizer.h"
#include "unicode.h"

#if defined(_WIN32)
#include <direct.h>
#include <process.h>
#define FUZZ_NULL_DEVICE "NUL"
#else
#define FUZZ_NULL_DEVICE "/dev/null"
#include <sys/stat.h>
#include <unistd.h>
#endif

/* Prints an invariant failure and aborts (libFuzzer keeps the input that did it). */
#define FUZZ_FAIL(...)                                                         \
    do {                                                                       \
        fprintf(stderr, "%s:%d: fuzz invariant broken: ", __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        abort();                                                               \
    } while (0)

/* ------------------------------------------------------------------------------------
 * The scratch folder
 * ---------------------------------------------------------------------------------- */

#define FUZZ_MAX_FILES 16

static char fuzz_dir_path[512];
static char fuzz_files[FUZZ_MAX_FILES][600]; /* every file written, removed at exit */
static int fuzz_n_files;

static inline void fuzz_cleanup(void) {
    for (int i = 0; i < fuzz_n_files; i++) remove(fuzz_files[i]);
    fuzz_n_files = 0;
    if (fuzz_dir_path[0]) {
#if defined(_WIN32)
        _rmdir(fuzz_dir_path);
#else
        rmdir(fuzz_dir_path);
#endif
    }
    fuzz_dir_path[0] = '\0';
}

/* The process's scratch folder, created on first use. */
static inline const char* fuzz_dir(void) {
    if (fuzz_dir_path[0]) return fuzz_dir_path;
#if defined(_WIN32)
    const char* base = getenv("TEMP");
    static unsigned counter;
    for (int tries = 0; tries < 100; tries++) {
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s\\qwen3_fuzz_%u_%u", base ? base : ".",
                 (unsigned)_getpid(), counter++);
        if (_mkdir(fuzz_dir_path) == 0) break;
        fuzz_dir_path[0] = '\0';
    }
#else
    struct stat st;
    const char* base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : NULL;
    if (!base) base = getenv("TMPDIR");
    if (!base || !base[0]) base = "/tmp";
    snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/qwen3_fuzz_XXXXXX", base);
    if (!mkdtemp(fuzz_dir_path)) fuzz_dir_path[0] = '\0';
#endif
    if (!fuzz_dir_path[0]) {
        fprintf(stderr, "fuzz: cannot create a scratch folder\n");
        abort();
    }
    atexit(fuzz_cleanup);
    return fuzz_dir_path;
}

/* The path of `name` inside the scratch folder (a static buffer per call site is not
 * enough when harnesses keep several paths, so the caller passes its own). */
static inline void fuzz_path(char* out, size_t cap, const char* name) {
    snprintf(out, cap, "%s/%s", fuzz_dir(), name);
}

static inline void fuzz_remember(const char* path) {
    for (int i = 0; i < fuzz_n_files; i++) {
        if (strcmp(fuzz_files[i], path) == 0) return;
    }
    if (fuzz_n_files < FUZZ_MAX_FILES) {
        snprintf(fuzz_files[fuzz_n_files], sizeof fuzz_files[0], "%s", path);
        fuzz_n_files++;
    }
}

/* Writes data to the scratch file `name` (replacing it); its path goes to out. */
static inline void fuzz_write(char* out, size_t cap, const char* name, const void* data, size_t len) {
    fuzz_path(out, cap, name);
    FILE* f = fopen(out, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s\n", out);
        abort();
    }
    fuzz_remember(out);
}

/* Removes a scratch file if it exists. */
static inline void fuzz_unlink(const char* name) {
    char path[600];
    fuzz_path(path, sizeof path, name);
    remove(path);
}

/* ------------------------------------------------------------------------------------
 * Small valid inputs
 * ---------------------------------------------------------------------------------- */

static inline void fuzz_put_u32(uint8_t* p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* A qwen3.c .tokenizer: the 256 single bytes (ids 0..255), "<|endoftext|>" 256,
 * "<|im_start|>" 257, "<|im_end|>" 258, then `n_merged` two-byte tokens "ab", "cd", ...
 * with merge ranks 0, 1, ... (score -ln(rank + 1)). Returns the size written to buf
 * (at most 4096 bytes). */
static inline size_t fuzz_byte_tokenizer(uint8_t* buf, uint32_t n_merged) {
    size_t n = 0;
    fuzz_put_u32(buf, 16);
    fuzz_put_u32(buf + 4, 256);
    fuzz_put_u32(buf + 8, 258);
    n = 12;
    const float added = -1e6f;
    uint32_t bits;
    memcpy(&bits, &added, 4);
    for (uint32_t i = 0; i < 256; i++) {
        fuzz_put_u32(buf + n, bits);
        fuzz_put_u32(buf + n + 4, 1);
        buf[n + 8] = (uint8_t)i;
        n += 9;
    }
    static const char* const specials[3] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 3; i++) {
        uint32_t len = (uint32_t)strlen(specials[i]);
        fuzz_put_u32(buf + n, bits);
        fuzz_put_u32(buf + n + 4, len);
        memcpy(buf + n + 8, specials[i], len);
        n += 8 + len;
    }
    if (n_merged > 13) n_merged = 13;
    for (uint32_t r = 0; r < n_merged; r++) {
        float score = -logf((float)r + 1.0f);
        memcpy(&bits, &score, 4);
        fuzz_put_u32(buf + n, bits);
        fuzz_put_u32(buf + n + 4, 2);
        buf[n + 8] = (uint8_t)('a' + 2 * r);
        buf[n + 9] = (uint8_t)('a' + 2 * r + 1);
        n += 10;
    }
    return n;
}

/* The tiny checkpoint shape of the seeds: every tensor a few hundred bytes, vocab 272 so
 * the byte tokenizer's 259 + 13 tokens fit. Fields in header order. */
static inline const uint32_t* fuzz_tiny_fields(void) {
    static const uint32_t fields[10] = {
    8,   /* dim */
    16,  /* hidden_dim */
    2,   /* n_layers */
    2,   /* n_heads */
    1,   /* n_kv_heads */
    272, /* vocab_size */
    32,  /* seq_len */
    4,   /* head_dim */
    1,   /* shared_classifier */
    4,   /* group_size */
    };
    return fields;
}

/* Bytes of a Q8 tensor: values, then one fp32 scale per group. */
static inline uint64_t fuzz_q8_bytes(uint64_t rows, uint64_t cols, uint64_t gs) {
    return rows * cols + rows * cols / gs * 4;
}

/* The file size of a qwen3.c checkpoint with these header fields (no overflow checks:
 * only for the small shapes this file writes). */
static inline uint64_t fuzz_checkpoint_size(const uint32_t f[10]) {
    uint64_t dim = f[0], hidden = f[1], L = f[2], qd = (uint64_t)f[3] * f[7];
    uint64_t kvd = (uint64_t)f[4] * f[7], vocab = f[5], hd = f[7], gs = f[9];
    uint64_t total = 256 + 4 * (2 * L * dim + dim + 2 * L * hd);
    total += L * (fuzz_q8_bytes(qd, dim, gs) + 2 * fuzz_q8_bytes(kvd, dim, gs) +
                  fuzz_q8_bytes(dim, qd, gs) + 2 * fuzz_q8_bytes(hidden, dim, gs) +
                  fuzz_q8_bytes(dim, hidden, gs));
    total += fuzz_q8_bytes(vocab, dim, gs) * (f[8] ? 1 : 2);
    return total;
}

/* A malloc'd qwen3.c checkpoint (qwen3rs = 1: the qwen3-rs layout) with header fields f
 * and deterministic weights: norms near 1, int8 values from a counter, scales 0.01.
 * *out_len receives its size. NULL when out of memory. */
static inline uint8_t* fuzz_tiny_checkpoint(const uint32_t f[10], int qwen3rs, size_t* out_len) {
    uint64_t size = fuzz_checkpoint_size(f); /* both layouts: a 256-byte header */
    uint8_t* buf = (uint8_t*)calloc(1, (size_t)size);
    if (!buf) return NULL;
    fuzz_put_u32(buf, 0x616A6331u);
    fuzz_put_u32(buf + 4, 1);
    uint32_t base = 8;
    if (qwen3rs) {
        fuzz_put_u32(buf + 8, 1);
        base = 12;
    }
    for (int i = 0; i < 10; i++) fuzz_put_u32(buf + base + 4 * i, f[i]);
    const uint64_t dim = f[0], L = f[2], hd = f[7], gs = f[9];
    uint64_t n_floats = 2 * L * dim + dim + 2 * L * hd;
    uint64_t pos = 256;
    for (uint64_t i = 0; i < n_floats; i++, pos += 4) {
        float v = 1.0f + 0.01f * (float)(i % 7);
        memcpy(buf + pos, &v, 4);
    }
    /* The Q8 tensors follow back to back; each is values then scales. Walk them with the
     * same formula as the size so the pattern lands where the loader reads it. */
    uint64_t qd = (uint64_t)f[3] * hd, kvd = (uint64_t)f[4] * hd, hidden = f[1];
    struct {
        uint64_t rows, cols, count;
    } tensors[9] = {
        {f[5], dim, 1},   {qd, dim, L},     {kvd, dim, L},      {kvd, dim, L},
        {dim, qd, L},     {hidden, dim, L}, {dim, hidden, L},   {hidden, dim, L},
        {f[5], dim, f[8] ? 0u : 1u},
    };
    uint32_t counter = 1;
    for (int t = 0; t < 9; t++) {
        for (uint64_t c = 0; c < tensors[t].count; c++) {
            uint64_t n = tensors[t].rows * tensors[t].cols;
            for (uint64_t i = 0; i < n; i++) {
                counter = counter * 1103515245u + 12345u;
                buf[pos++] = (uint8_t)(int8_t)((int32_t)(counter >> 16) % 127);
            }
            const float scale = 0.01f;
            for (uint64_t g = 0; g < n / gs; g++, pos += 4) memcpy(buf + pos, &scale, 4);
        }
    }
    *out_len = (size_t)size;
    return buf;
}

/* ------------------------------------------------------------------------------------
 * Checks shared by the tokenizer harnesses
 * ---------------------------------------------------------------------------------- */

/* The last error is set and holds no raw control character: messages may quote a few
 * bytes of a file, but escaped, so a hostile file cannot write terminal escape
 * sequences or fake lines into a user's log. */
static inline void fuzz_check_error(const char* what) {
    const char* err = qwen3_get_last_error();
    if (!err[0]) FUZZ_FAIL("%s failed without an error message", what);
    for (const unsigned char* p = (const unsigned char*)err; *p; p++) {
        if (*p < 0x20 || *p == 0x7F) {
            FUZZ_FAIL("%s: error message holds the raw control byte 0x%02X: \"%s\"", what, *p, err);
        }
    }
}

/* The NFC form of UTF-8 bytes (invalid bytes kept as they are), malloc'd. */
static inline uint8_t* fuzz_nfc_bytes(const uint8_t* text, size_t len, size_t* out_len) {
    uint32_t* cps = (uint32_t*)malloc((len ? len : 1) * sizeof *cps);
    if (!cps) FUZZ_FAIL("out of memory");
    size_t n = 0;
    for (size_t i = 0; i < len;) i += qwen3_utf8_decode(text + i, len - i, &cps[n++]);
    uint32_t* norm = NULL;
    size_t m = 0;
    if (qwen3_nfc(cps, n, &norm, &m) != 0) FUZZ_FAIL("out of memory in NFC");
    uint8_t* out = (uint8_t*)malloc(4 * m + 1);
    if (!out) FUZZ_FAIL("out of memory");
    size_t w = 0;
    for (size_t i = 0; i < m; i++) w += qwen3_utf8_encode(norm[i], out + w);
    free(norm);
    free(cps);
    *out_len = w;
    return out;
}

static inline int fuzz_same(const uint8_t* a, size_t an, const uint8_t* b, size_t bn) {
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/*
 * Encodes text with t and checks what any correct tokenizer gives: the same count
 * whatever the output capacity (and the same leading ids in a short buffer), ids inside
 * the tokenizer, no added token (id >= first_added, when not 0) from text tokenized
 * without special tokens, and ids whose bytes spell the text again: exactly, or its NFC
 * form; with special tokens on, NFC is applied between them, so only the NFC of the
 * decoded bytes must equal the text's. Returns the count or the (negative) status.
 */
static inline int32_t fuzz_check_encode(const Qwen3Tokenizer* t, const uint8_t* text, size_t len,
                                 int special, uint32_t first_added) {
    int32_t n = qwen3_tokenizer_encode(t, (const char*)text, len, special, NULL, 0);
    if (n < 0) {
        fuzz_check_error("encode");
        return n;
    }
    int32_t* ids = (int32_t*)malloc((size_t)(n ? n : 1) * sizeof *ids);
    if (!ids) FUZZ_FAIL("out of memory");
    int32_t again = qwen3_tokenizer_encode(t, (const char*)text, len, special, ids, (uint32_t)n);
    if (again != n) FUZZ_FAIL("encode counted %d tokens, then returned %d", n, again);
    if (n > 1) {
        uint32_t half = (uint32_t)n / 2;
        int32_t* part = (int32_t*)malloc(half * sizeof *part);
        if (!part) FUZZ_FAIL("out of memory");
        int32_t count = qwen3_tokenizer_encode(t, (const char*)text, len, special, part, half);
        if (count != n || memcmp(part, ids, half * sizeof *part) != 0)
            FUZZ_FAIL("a buffer of %u ids gave count %d (full: %d) or other leading ids", half, count, n);
        free(part);
    }
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        uint32_t bl = 0;
        if (!qwen3_tokenizer_token_bytes(t, ids[i], &bl))
            FUZZ_FAIL("id %d at %d is outside the tokenizer (%u ids)", ids[i], i, qwen3_tokenizer_size(t));
        if (!special && first_added && (uint32_t)ids[i] >= first_added)
            FUZZ_FAIL("text tokenized without special tokens gave the added token %d", ids[i]);
        total += bl;
    }
    uint8_t* dec = (uint8_t*)malloc(total + 1);
    if (!dec) FUZZ_FAIL("out of memory");
    size_t w = 0;
    for (int32_t i = 0; i < n; i++) {
        uint32_t bl = 0;
        const char* b = qwen3_tokenizer_token_bytes(t, ids[i], &bl);
        if (bl) memcpy(dec + w, b, bl);
        w += bl;
    }
    if (!fuzz_same(dec, w, text, len)) {
        size_t nl = 0;
        uint8_t* norm = fuzz_nfc_bytes(text, len, &nl);
        if (!special) {
            if (!fuzz_same(dec, w, norm, nl))
                FUZZ_FAIL("%zu bytes of text decode to %zu bytes, neither the text nor its NFC (%zu)", len, w, nl);
        } else {
            size_t dl = 0;
            uint8_t* dnorm = fuzz_nfc_bytes(dec, w, &dl);
            if (!fuzz_same(dnorm, dl, norm, nl))
                FUZZ_FAIL("%zu bytes of text decode to %zu bytes that are not canonically equivalent", len, w);
            free(dnorm);
        }
        free(norm);
    }
    free(dec);
    free(ids);
    return n;
}

#endif
