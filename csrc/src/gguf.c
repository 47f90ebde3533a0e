/* gguf.c - reading llama.cpp's GGUF files (gguf.h): a bounds-checked parser of the
 * metadata and tensor table, and the loader that maps or converts a qwen3 model's
 * tensors into Qwen3Model's weights and builds its tokenizer from the metadata lists.
 *
 * Every number read from the file is checked before it sizes anything: counts against
 * the bytes that remain (each item needs at least a few), lengths against the file end,
 * products and sums in checked 64-bit arithmetic, tensor data against the file length.
 * Names and keys from the file appear in messages only as printable ASCII. */
#include "gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kernels_float.h"
#include "tokenizer.h"

#if !defined(_WIN32)
#include <sys/mman.h>
#include <unistd.h>
#endif

/* ====================================================================================
 * ggml types
 * ================================================================================== */

typedef struct {
    const char* name;
    uint32_t block;  /* values per block */
    uint32_t bytes;  /* bytes per block */
} GgmlType;

/* Block geometry of every ggml type (ggml.c's type traits), so a table with types this
 * engine cannot run is still checked exactly and the error can name the type. */
static const GgmlType ggml_types[] = {
    [0] = {"F32", 1, 4},         [1] = {"F16", 1, 2},        [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},      [6] = {"Q5_0", 32, 22},     [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},      [9] = {"Q8_1", 32, 40},     [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},   [12] = {"Q4_K", 256, 144},  [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},   [15] = {"Q8_K", 256, 292},  [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74},  [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},   [21] = {"IQ3_S", 256, 110}, [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},        [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},        [27] = {"I64", 1, 8},       [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},   [30] = {"BF16", 1, 2},      [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},   [39] = {"MXFP4", 32, 17},   [40] = {"NVFP4", 64, 36},
    [41] = {"Q1_0", 128, 18},
};
#define N_GGML_TYPES (sizeof ggml_types / sizeof ggml_types[0])

static const GgmlType* ggml_type(uint32_t type) {
    if (type >= N_GGML_TYPES || ggml_types[type].name == NULL) return NULL;
    return &ggml_types[type];
}

const char* qwen3_ggml_type_name(uint32_t type) {
    const GgmlType* t = ggml_type(type);
    return t ? t->name : "unknown";
}

#define RUNNABLE_TYPES "F32, F16, BF16, Q8_0, Q4_0"

/* ====================================================================================
 * Small helpers
 * ================================================================================== */

static uint16_t rd16(const uint8_t* p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t* p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t* p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static int mul_ok(uint64_t a, uint64_t b, uint64_t* out) {
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* Bytes from the file shown safely: printable ASCII as is, anything else as \xNN,
 * at most about 80 characters. */
typedef struct {
    char s[340];
} Quoted;

static Quoted quote(const uint8_t* p, uint64_t len) {
    Quoted q;
    size_t o = 0;
    for (uint64_t i = 0; i < len && o + 8 < sizeof q.s; i++) {
        if (i == 80) {
            memcpy(q.s + o, "...", 3);
            o += 3;
            break;
        }
        const uint8_t b = p[i];
        if (b >= 0x20 && b < 0x7F && b != '\\') {
            q.s[o++] = (char)b;
        } else {
            o += (size_t)snprintf(q.s + o, sizeof q.s - o, "\\x%02X", b);
        }
    }
    q.s[o] = '\0';
    return q;
}

static int name_is(const uint8_t* p, uint32_t len, const char* s) {
    const size_t n = strlen(s);
    return n == len && memcmp(p, s, n) == 0;
}

/* ====================================================================================
 * Parser
 * ================================================================================== */

typedef struct {
    const uint8_t* d;
    uint64_t size;
    uint64_t pos;
    const char* path;
} Cursor;

static uint64_t left(const Cursor* c) { return c->size - c->pos; }

static int32_t need(Cursor* c, uint64_t n, const char* what) {
    if (n > left(c)) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: GGUF truncated: %s needs %llu bytes at byte %llu, but the file "
                          "ends at %llu",
                          c->path, what, (unsigned long long)n, (unsigned long long)c->pos,
                          (unsigned long long)c->size);
    }
    return QWEN3_OK;
}

static int32_t get_u32(Cursor* c, const char* what, uint32_t* out) {
    int32_t rc = need(c, 4, what);
    if (rc) return rc;
    *out = rd32(c->d + c->pos);
    c->pos += 4;
    return QWEN3_OK;
}

static int32_t get_u64(Cursor* c, const char* what, uint64_t limit, uint64_t* out) {
    int32_t rc = need(c, 8, what);
    if (rc) return rc;
    const uint64_t v = rd64(c->d + c->pos);
    if (v > limit) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF %s %llu at byte %llu exceeds the limit %llu",
                          c->path, what, (unsigned long long)v, (unsigned long long)c->pos,
                          (unsigned long long)limit);
    }
    c->pos += 8;
    *out = v;
    return QWEN3_OK;
}

static int32_t get_string(Cursor* c, const char* what, const uint8_t** s, uint32_t* len) {
    uint64_t n;
    int32_t rc = get_u64(c, what, QWEN3_GGUF_MAX_STRING, &n);
    if (rc) return rc;
    rc = need(c, n, what);
    if (rc) return rc;
    *s = c->d + c->pos;
    *len = (uint32_t)n;
    c->pos += n;
    return QWEN3_OK;
}

/* Bytes of a fixed-size value type; 0 for strings, arrays and unknown types. */
static uint32_t value_size(uint32_t type) {
    static const uint8_t sizes[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return type < 13 ? sizes[type] : 0;
}

static int32_t skip_value(Cursor* c, uint32_t type, const char* key, Qwen3GgufKv* kv) {
    kv->type = type;
    kv->count = 1;
    if (type == QWEN3_GGUF_STRING) {
        kv->offset = c->pos;
        const uint8_t* s;
        uint32_t n;
        return get_string(c, key, &s, &n);
    }
    if (type != QWEN3_GGUF_ARRAY) {
        const uint32_t size = value_size(type);
        if (size == 0) {
            return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata '%s' has unknown value type %u (byte %llu)",
                              c->path, key, type, (unsigned long long)c->pos);
        }
        kv->offset = c->pos;
        int32_t rc = need(c, size, key);
        c->pos += size;
        return rc;
    }
    uint32_t elem;
    uint64_t count;
    int32_t rc = get_u32(c, key, &elem);
    if (rc == QWEN3_OK) rc = get_u64(c, key, QWEN3_GGUF_MAX_ARRAY, &count);
    if (rc) return rc;
    kv->elem_type = elem;
    kv->count = count;
    kv->offset = c->pos;
    if (elem == QWEN3_GGUF_ARRAY) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata '%s' is a nested array (not supported)", c->path,
                          key);
    }
    if (elem == QWEN3_GGUF_STRING) {
        /* each element needs at least its 8-byte length: a larger count is a lie */
        if (count > left(c) / 8) {
            return qwen3_fail(QWEN3_ERR_FORMAT,
                              "%s: GGUF metadata '%s' claims %llu strings but only %llu bytes remain",
                              c->path, key, (unsigned long long)count, (unsigned long long)left(c));
        }
        for (uint64_t i = 0; i < count; i++) {
            const uint8_t* s;
            uint32_t n;
            rc = get_string(c, key, &s, &n);
            if (rc) return rc;
        }
        return QWEN3_OK;
    }
    const uint32_t size = value_size(elem);
    if (size == 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata '%s' has arrays of unknown type %u", c->path, key,
                          elem);
    }
    rc = need(c, count * size, key); /* count <= 2^26, so no overflow */
    c->pos += count * size;
    return rc;
}

/* Sorting views for the duplicate checks (a hostile file may list a million names). */
typedef struct {
    const uint8_t* s;
    uint32_t len;
} NameRef;

static int name_cmp(const void* a, const void* b) {
    const NameRef* x = (const NameRef*)a;
    const NameRef* y = (const NameRef*)b;
    const uint32_t n = x->len < y->len ? x->len : y->len;
    const int c = n ? memcmp(x->s, y->s, n) : 0;
    if (c) return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

static int32_t check_unique(NameRef* names, uint64_t n, const char* path, const char* what) {
    if (n < 2) return QWEN3_OK;
    qsort(names, (size_t)n, sizeof *names, name_cmp);
    for (uint64_t i = 1; i < n; i++) {
        if (name_cmp(&names[i - 1], &names[i]) == 0) {
            return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF %s '%s' appears twice", path, what,
                              quote(names[i].s, names[i].len).s);
        }
    }
    return QWEN3_OK;
}

static int32_t kv_integer(const Qwen3Gguf* g, const Qwen3GgufKv* kv, int64_t* out);

int qwen3_gguf_is_gguf(const uint8_t* data, uint64_t size) {
    return data != NULL && size >= 4 && rd32(data) == QWEN3_GGUF_MAGIC;
}

void qwen3_gguf_release(Qwen3Gguf* g) {
    free(g->kv);
    free(g->tensors);
    memset(g, 0, sizeof *g);
}

int32_t qwen3_gguf_parse(const uint8_t* data, uint64_t size, const char* path, Qwen3Gguf* out) {
    memset(out, 0, sizeof *out);
    Cursor c = {data, data ? size : 0, 0, path};
    uint32_t magic, version;
    int32_t rc = get_u32(&c, "magic", &magic);
    if (rc) return rc;
    if (magic != QWEN3_GGUF_MAGIC) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: magic is 0x%08X, not \"GGUF\"", path, magic);
    }
    rc = get_u32(&c, "version", &version);
    if (rc) return rc;
    if (version == 1) {
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED, "%s: GGUF version 1 (32-bit counts) is not supported; convert "
                          "it to version 3 with llama.cpp's tools", path);
    }
    if (version != 2 && version != 3) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF version %u is not supported (2 or 3)%s", path, version,
                          (version & 0xFFFF) == 0 ? "; a big-endian file?" : "");
    }
    out->data = data;
    out->size = size;
    out->version = version;
    uint64_t n_tensors, n_kv;
    rc = get_u64(&c, "tensor count", QWEN3_GGUF_MAX_ITEMS, &n_tensors);
    if (rc == QWEN3_OK) rc = get_u64(&c, "metadata count", QWEN3_GGUF_MAX_ITEMS, &n_kv);
    if (rc) return rc;
    /* a key needs >= 8 + 4 + 1 bytes and a tensor info >= 8 + 4 + 8 + 4 + 8 */
    if (n_kv > left(&c) / 13 || n_tensors > left(&c) / 32) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: GGUF claims %llu metadata entries and %llu tensors, more than its %llu "
                          "bytes can hold",
                          path, (unsigned long long)n_kv, (unsigned long long)n_tensors,
                          (unsigned long long)size);
    }
    out->kv = (Qwen3GgufKv*)calloc(n_kv ? n_kv : 1, sizeof *out->kv);
    out->tensors = (Qwen3GgufTensor*)calloc(n_tensors ? n_tensors : 1, sizeof *out->tensors);
    NameRef* names = (NameRef*)calloc((n_kv > n_tensors ? n_kv : n_tensors) + 1, sizeof *names);
    if (!out->kv || !out->tensors || !names) {
        free(names);
        qwen3_gguf_release(out);
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory for a GGUF table of %llu entries",
                          (unsigned long long)(n_kv + n_tensors));
    }
    out->n_kv = n_kv;
    out->n_tensors = n_tensors;

    for (uint64_t i = 0; i < n_kv && rc == QWEN3_OK; i++) {
        Qwen3GgufKv* kv = &out->kv[i];
        char what[64];
        snprintf(what, sizeof what, "metadata key #%llu", (unsigned long long)i);
        rc = get_string(&c, what, &kv->key, &kv->key_len);
        uint32_t type = 0;
        if (rc == QWEN3_OK) rc = get_u32(&c, what, &type);
        if (rc == QWEN3_OK) rc = skip_value(&c, type, quote(kv->key, kv->key_len).s, kv);
        names[i] = (NameRef){kv->key, kv->key_len};
    }
    if (rc == QWEN3_OK) rc = check_unique(names, n_kv, path, "metadata key");

    out->alignment = 32;
    const Qwen3GgufKv* align = rc == QWEN3_OK ? qwen3_gguf_find_kv(out, "general.alignment") : NULL;
    if (align) {
        int64_t a = 0;
        if (kv_integer(out, align, &a) != QWEN3_OK || a <= 0 || a > (int64_t)QWEN3_GGUF_MAX_ALIGNMENT ||
            (a & (a - 1)) != 0) {
            rc = qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF general.alignment is not a power of two up to %u", path,
                            QWEN3_GGUF_MAX_ALIGNMENT);
        } else {
            out->alignment = (uint32_t)a;
        }
    }

    for (uint64_t i = 0; i < n_tensors && rc == QWEN3_OK; i++) {
        Qwen3GgufTensor* t = &out->tensors[i];
        char what[64];
        snprintf(what, sizeof what, "tensor #%llu", (unsigned long long)i);
        rc = get_string(&c, what, &t->name, &t->name_len);
        if (rc == QWEN3_OK) rc = get_u32(&c, what, &t->n_dims);
        if (rc) break;
        const char* tn = quote(t->name, t->name_len).s;
        if (t->n_dims < 1 || t->n_dims > QWEN3_GGUF_MAX_DIMS) {
            rc = qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF tensor '%s' has %u dims (1..%u)", path, tn, t->n_dims,
                            QWEN3_GGUF_MAX_DIMS);
            break;
        }
        for (uint32_t d = 0; d < QWEN3_GGUF_MAX_DIMS; d++) t->dims[d] = 1;
        for (uint32_t d = 0; d < t->n_dims && rc == QWEN3_OK; d++) {
            rc = get_u64(&c, "tensor dimension", QWEN3_GGUF_MAX_DIM, &t->dims[d]);
            if (rc == QWEN3_OK && t->dims[d] == 0) {
                rc = qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF tensor '%s' dim %u is 0", path, tn, d);
            }
        }
        if (rc == QWEN3_OK) rc = get_u32(&c, what, &t->type);
        if (rc == QWEN3_OK) rc = get_u64(&c, "tensor offset", UINT64_MAX / 2, &t->offset);
        names[i] = (NameRef){t->name, t->name_len};
    }
    if (rc == QWEN3_OK) rc = check_unique(names, n_tensors, path, "tensor");
    free(names);

    if (rc == QWEN3_OK) {
        const uint64_t a = out->alignment;
        out->data_offset = (c.pos + a - 1) / a * a;
    }
    for (uint64_t i = 0; i < n_tensors && rc == QWEN3_OK; i++) {
        Qwen3GgufTensor* t = &out->tensors[i];
        const char* tn = quote(t->name, t->name_len).s;
        const GgmlType* gt = ggml_type(t->type);
        if (!gt) {
            rc = qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                            "%s: GGUF tensor '%s' has ggml type %u, unknown to this engine (it runs " RUNNABLE_TYPES
                            ")",
                            path, tn, t->type);
            break;
        }
        if (t->dims[0] % gt->block != 0) {
            rc = qwen3_fail(QWEN3_ERR_FORMAT,
                            "%s: GGUF tensor '%s' has rows of %llu values, not a multiple of the %s block of %u",
                            path, tn, (unsigned long long)t->dims[0], gt->name, gt->block);
            break;
        }
        uint64_t n = 1, bytes;
        int ok = 1;
        for (uint32_t d = 0; d < QWEN3_GGUF_MAX_DIMS; d++) ok = ok && mul_ok(n, t->dims[d], &n);
        ok = ok && mul_ok(n / gt->block, gt->bytes, &bytes);
        if (!ok || bytes > size) {
            rc = qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF tensor '%s' is larger than the whole file (%llu bytes)",
                            path, tn, (unsigned long long)size);
            break;
        }
        if (t->offset % out->alignment != 0) {
            rc = qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF tensor '%s' offset %llu is not a multiple of the alignment %u",
                            path, tn, (unsigned long long)t->offset, out->alignment);
            break;
        }
        if (t->offset > size || out->data_offset > size - t->offset || bytes > size - out->data_offset - t->offset) {
            rc = qwen3_fail(QWEN3_ERR_FORMAT,
                            "%s: GGUF tensor '%s' (%llu bytes at data offset %llu) ends past the end of the file "
                            "(%llu bytes, data section from byte %llu)",
                            path, tn, (unsigned long long)bytes, (unsigned long long)t->offset,
                            (unsigned long long)size, (unsigned long long)out->data_offset);
            break;
        }
        t->offset += out->data_offset;
        t->bytes = bytes;
    }
    if (rc != QWEN3_OK) qwen3_gguf_release(out);
    return rc;
}

const Qwen3GgufKv* qwen3_gguf_find_kv(const Qwen3Gguf* g, const char* key) {
    for (uint64_t i = 0; i < g->n_kv; i++) {
        if (name_is(g->kv[i].key, g->kv[i].key_len, key)) return &g->kv[i];
    }
    return NULL;
}

const Qwen3GgufTensor* qwen3_gguf_find_tensor(const Qwen3Gguf* g, const char* name) {
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        if (name_is(g->tensors[i].name, g->tensors[i].name_len, name)) return &g->tensors[i];
    }
    return NULL;
}

/* Any integer value type, sign-extended or zero-extended; u64 above INT64_MAX fails. */
static int32_t kv_integer(const Qwen3Gguf* g, const Qwen3GgufKv* kv, int64_t* out) {
    const uint8_t* p = g->data + kv->offset;
    switch (kv->type) {
        case QWEN3_GGUF_UINT8: *out = p[0]; break;
        case QWEN3_GGUF_INT8: *out = (int8_t)p[0]; break;
        case QWEN3_GGUF_UINT16: *out = rd16(p); break;
        case QWEN3_GGUF_INT16: *out = (int16_t)rd16(p); break;
        case QWEN3_GGUF_UINT32: *out = rd32(p); break;
        case QWEN3_GGUF_INT32: *out = (int32_t)rd32(p); break;
        case QWEN3_GGUF_UINT64:
            if (rd64(p) > (uint64_t)INT64_MAX) return QWEN3_ERR_FORMAT;
            *out = (int64_t)rd64(p);
            break;
        case QWEN3_GGUF_INT64: *out = (int64_t)rd64(p); break;
        default: return QWEN3_ERR_FORMAT;
    }
    return QWEN3_OK;
}

/* ====================================================================================
 * Model loader
 * ================================================================================== */

struct Qwen3GgufModel {
    void** allocs; /* (n_allocs) converted weights and copies, qwen3_aligned_alloc'd */
    size_t n_allocs;
    size_t cap_allocs;
};

void qwen3_gguf_model_free(Qwen3GgufModel* g) {
    if (!g) return;
    for (size_t i = 0; i < g->n_allocs; i++) qwen3_aligned_free(g->allocs[i]);
    free(g->allocs);
    free(g);
}

typedef struct {
    Qwen3Model* m;
    Qwen3Gguf g;
    const char* path;
    int any_q8; /* some matrix runs on the int8 path */
} Loader;

static void* owned_alloc(Loader* L, uint64_t bytes, const char* what) {
    Qwen3GgufModel* gm = L->m->gguf;
    if (gm->n_allocs == gm->cap_allocs) {
        const size_t cap = gm->cap_allocs ? gm->cap_allocs * 2 : 64;
        void** grown = (void**)realloc(gm->allocs, cap * sizeof *grown);
        if (!grown) return NULL;
        gm->allocs = grown;
        gm->cap_allocs = cap;
    }
    void* p = bytes <= (uint64_t)SIZE_MAX ? qwen3_aligned_alloc((size_t)bytes) : NULL;
    if (!p) {
        qwen3_error_set("out of memory allocating %llu bytes for %s of %s", (unsigned long long)bytes, what,
                        L->path);
        return NULL;
    }
    gm->allocs[gm->n_allocs++] = p;
    return p;
}

static const char* kv_type_name(uint32_t type) {
    static const char* const names[13] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                          "bool", "string", "array", "u64", "i64", "f64"};
    return type < 13 ? names[type] : "?";
}

/* An integer key in [min, max]; `def` when absent and not required. */
static int32_t key_uint(Loader* L, const char* key, int required, uint32_t def, uint32_t min, uint32_t max,
                        uint32_t* out) {
    const Qwen3GgufKv* kv = qwen3_gguf_find_kv(&L->g, key);
    if (!kv) {
        if (required) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata lacks '%s'", L->path, key);
        *out = def;
        return QWEN3_OK;
    }
    int64_t v;
    if (kv_integer(&L->g, kv, &v) != QWEN3_OK) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata '%s' is a%s %s, expected an integer", L->path,
                          key, kv->type == QWEN3_GGUF_ARRAY || kv->type == QWEN3_GGUF_INT8 ? "n" : "",
                          kv_type_name(kv->type));
    }
    if (v < (int64_t)min || v > (int64_t)max) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata '%s' = %lld is outside [%u, %u]", L->path, key,
                          (long long)v, min, max);
    }
    *out = (uint32_t)v;
    return QWEN3_OK;
}

/* A positive finite float key; `def` when absent. */
static int32_t key_float(Loader* L, const char* key, float def, float* out) {
    const Qwen3GgufKv* kv = qwen3_gguf_find_kv(&L->g, key);
    if (!kv) {
        *out = def;
        return QWEN3_OK;
    }
    const uint8_t* p = L->g.data + kv->offset;
    double v;
    if (kv->type == QWEN3_GGUF_FLOAT32) {
        const uint32_t bits = rd32(p);
        float f;
        memcpy(&f, &bits, 4);
        v = f;
    } else if (kv->type == QWEN3_GGUF_FLOAT64) {
        const uint64_t bits = rd64(p);
        memcpy(&v, &bits, 8);
    } else {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata '%s' is a %s, expected a float", L->path, key,
                          kv_type_name(kv->type));
    }
    if (!(v > 0.0) || !isfinite(v) || v > 3.0e38) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata '%s' = %g must be positive and finite", L->path,
                          key, v);
    }
    *out = (float)v;
    return QWEN3_OK;
}

/* A string key (bytes in the map). */
static int32_t key_string(Loader* L, const char* key, const uint8_t** s, uint32_t* len) {
    const Qwen3GgufKv* kv = qwen3_gguf_find_kv(&L->g, key);
    if (!kv) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata lacks '%s'", L->path, key);
    if (kv->type != QWEN3_GGUF_STRING) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF metadata '%s' is a %s, expected a string", L->path, key,
                          kv_type_name(kv->type));
    }
    *len = (uint32_t)rd64(L->g.data + kv->offset);
    *s = L->g.data + kv->offset + 8;
    return QWEN3_OK;
}

/* The tensor `name` with exactly the dims (innermost first; trailing dims must be 1). */
static int32_t find_shaped(Loader* L, const char* name, uint32_t n_dims, uint64_t d0, uint64_t d1,
                           const Qwen3GgufTensor** out) {
    const Qwen3GgufTensor* t = qwen3_gguf_find_tensor(&L->g, name);
    if (!t) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF has no tensor '%s'", L->path, name);
    const uint64_t want[QWEN3_GGUF_MAX_DIMS] = {d0, n_dims > 1 ? d1 : 1, 1, 1};
    for (uint32_t d = 0; d < QWEN3_GGUF_MAX_DIMS; d++) {
        if (t->dims[d] != want[d]) {
            return qwen3_fail(QWEN3_ERR_FORMAT,
                              "%s: GGUF tensor '%s' has shape [%llu, %llu, %llu, %llu] (innermost first), "
                              "expected [%llu, %llu]",
                              L->path, name, (unsigned long long)t->dims[0], (unsigned long long)t->dims[1],
                              (unsigned long long)t->dims[2], (unsigned long long)t->dims[3],
                              (unsigned long long)d0, (unsigned long long)want[1]);
        }
    }
    *out = t;
    return QWEN3_OK;
}

static int32_t cannot_run(Loader* L, const Qwen3GgufTensor* t, const char* name) {
    return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                      "%s: GGUF tensor '%s' has ggml type %u (%s), which this engine cannot run (it runs "
                      RUNNABLE_TYPES ")",
                      L->path, name, t->type, qwen3_ggml_type_name(t->type));
}

/* A norm weight of n values as fp32: a view when F32 and aligned, else a converted copy. */
static int32_t load_vector(Loader* L, const char* name, uint32_t n, const float** out) {
    const Qwen3GgufTensor* t;
    int32_t rc = find_shaped(L, name, 1, n, 1, &t);
    if (rc) return rc;
    const uint8_t* src = L->g.data + t->offset;
    if (t->type == QWEN3_GGML_F32 && ((uintptr_t)src & 3u) == 0) {
        *out = (const float*)(const void*)src;
        return QWEN3_OK;
    }
    if (t->type != QWEN3_GGML_F32 && t->type != QWEN3_GGML_F16 && t->type != QWEN3_GGML_BF16) {
        return cannot_run(L, t, name);
    }
    float* dst = (float*)owned_alloc(L, (uint64_t)n * 4, name);
    if (!dst) return QWEN3_ERR_OUT_OF_MEMORY;
    for (uint32_t i = 0; i < n; i++) {
        if (t->type == QWEN3_GGML_F32) {
            const uint32_t bits = rd32(src + 4 * (size_t)i);
            memcpy(&dst[i], &bits, 4);
        } else if (t->type == QWEN3_GGML_F16) {
            dst[i] = qwen3_f16_to_f32(rd16(src + 2 * (size_t)i));
        } else {
            dst[i] = qwen3_bf16_to_f32(rd16(src + 2 * (size_t)i));
        }
    }
    *out = dst;
    return QWEN3_OK;
}

/* The map's pages of a tensor that was converted are never read again: hand them back, so
 * the process holds the converted copy and not both (0.6B Q8_0: 1.33 GB resident -> about
 * 0.7 GB). A read-only private file map re-reads a page if it is touched after all. */
static void release_pages(const uint8_t* p, uint64_t n) {
#if !defined(_WIN32)
    const long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0 || (ps & (ps - 1)) != 0) return;
    const uintptr_t page = (uintptr_t)ps;
    const uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + n) & ~(page - 1);
    if (b > a) (void)madvise((void*)a, b - a, MADV_DONTNEED);
#else
    (void)p;
    (void)n;
#endif
}

/* A (rows, cols) matrix: float types in place (copied only when misaligned for their
 * element), Q8_0 and Q4_0 converted to the Q8 layout with group 32. */
static int32_t load_matrix(Loader* L, const char* name, uint32_t rows, uint32_t cols, Qwen3Matrix* out) {
    const Qwen3GgufTensor* t = qwen3_gguf_find_tensor(&L->g, name);
    uint32_t wtype = QWEN3_WEIGHT_Q8;
    switch (t ? t->type : QWEN3_GGML_F32) { /* the type first: its error says more than a shape's */
        case QWEN3_GGML_F32: wtype = QWEN3_WEIGHT_F32; break;
        case QWEN3_GGML_F16: wtype = QWEN3_WEIGHT_F16; break;
        case QWEN3_GGML_BF16: wtype = QWEN3_WEIGHT_BF16; break;
        case QWEN3_GGML_Q8_0:
        case QWEN3_GGML_Q4_0: break;
        default: return cannot_run(L, t, name);
    }
    int32_t rc = find_shaped(L, name, 2, cols, rows, &t);
    if (rc) return rc;
    const uint8_t* src = L->g.data + t->offset;
    const uint64_t n = (uint64_t)rows * cols;
    if (wtype != QWEN3_WEIGHT_Q8) {
        const uint32_t es = qwen3_weight_type_bytes(wtype);
        const void* data = src;
        if (((uintptr_t)src & (es - 1)) != 0) {
            void* copy = owned_alloc(L, t->bytes, name);
            if (!copy) return QWEN3_ERR_OUT_OF_MEMORY;
            memcpy(copy, src, (size_t)t->bytes);
            data = copy;
        }
        *out = qwen3_matrix_float(wtype, data, rows, cols);
        return QWEN3_OK;
    }
    /* cols is a multiple of 32 (the block check in the parser) */
    const uint64_t blocks = n / 32;
    int8_t* q = (int8_t*)owned_alloc(L, n, name);
    float* s = q ? (float*)owned_alloc(L, blocks * 4, name) : NULL;
    if (!s) return QWEN3_ERR_OUT_OF_MEMORY;
    if (t->type == QWEN3_GGML_Q8_0) {
        for (uint64_t b = 0; b < blocks; b++) {
            const uint8_t* blk = src + b * 34;
            s[b] = qwen3_f16_to_f32(rd16(blk));
            memcpy(q + b * 32, blk + 2, 32);
        }
    } else {
        /* Q4_0: byte i holds value i in its low nibble and value i + 16 in its high one */
        for (uint64_t b = 0; b < blocks; b++) {
            const uint8_t* blk = src + b * 18;
            s[b] = qwen3_f16_to_f32(rd16(blk));
            int8_t* dst = q + b * 32;
            for (int i = 0; i < 16; i++) {
                dst[i] = (int8_t)((blk[2 + i] & 0x0F) - 8);
                dst[i + 16] = (int8_t)((blk[2 + i] >> 4) - 8);
            }
        }
    }
    release_pages(src, t->bytes);
    const Qwen3Q8Matrix q8 = {.q = q, .s = s, .rows = rows, .cols = cols, .group_size = 32};
    *out = qwen3_matrix_q8(q8);
    L->any_q8 = 1;
    return QWEN3_OK;
}

static int32_t load_hparams(Loader* L) {
    const uint8_t* arch;
    uint32_t arch_len;
    int32_t rc = key_string(L, "general.architecture", &arch, &arch_len);
    if (rc) return rc;
    if (!name_is(arch, arch_len, "qwen3")) {
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                          "%s: GGUF general.architecture is '%s'; this engine runs only 'qwen3' (dense Qwen3)",
                          L->path, quote(arch, arch_len).s);
    }
    Qwen3Header* h = &L->m->header;
    memset(h, 0, sizeof *h);
    h->format = QWEN3_FORMAT_GGUF;
    if (!rc) rc = key_uint(L, "qwen3.embedding_length", 1, 0, 1, QWEN3_MAX_DIM, &h->dim);
    if (!rc) rc = key_uint(L, "qwen3.feed_forward_length", 1, 0, 1, QWEN3_MAX_DIM, &h->hidden_dim);
    if (!rc) rc = key_uint(L, "qwen3.block_count", 1, 0, 1, QWEN3_MAX_LAYERS, &h->n_layers);
    if (!rc) rc = key_uint(L, "qwen3.attention.head_count", 1, 0, 1, QWEN3_MAX_HEADS, &h->n_heads);
    if (!rc) {
        rc = key_uint(L, "qwen3.attention.head_count_kv", 0, h->n_heads, 1, QWEN3_MAX_HEADS, &h->n_kv_heads);
    }
    if (!rc) {
        rc = key_uint(L, "qwen3.attention.key_length", 0, h->dim / h->n_heads, 1, QWEN3_MAX_HEAD_DIM,
                      &h->head_dim);
    }
    uint32_t v_len = 0, rope_dim = 0;
    if (!rc) rc = key_uint(L, "qwen3.attention.value_length", 0, h->head_dim, 1, QWEN3_MAX_HEAD_DIM, &v_len);
    if (!rc) rc = key_uint(L, "qwen3.rope.dimension_count", 0, h->head_dim, 1, QWEN3_MAX_HEAD_DIM, &rope_dim);
    if (!rc) rc = key_uint(L, "qwen3.context_length", 1, 0, 1, QWEN3_MAX_SEQ_LEN, &h->seq_len);
    if (!rc) rc = key_float(L, "qwen3.rope.freq_base", QWEN3_ROPE_THETA, &L->m->rope_theta);
    if (!rc) rc = key_float(L, "qwen3.attention.layer_norm_rms_epsilon", QWEN3_RMS_EPS, &L->m->rms_eps);
    if (rc) return rc;
    if (v_len != h->head_dim) {
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED, "%s: GGUF value_length %u differs from key_length %u", L->path,
                          v_len, h->head_dim);
    }
    if (rope_dim != h->head_dim) {
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                          "%s: GGUF rope.dimension_count %u differs from key_length %u (Qwen3 rotates whole "
                          "heads; partial rotary is not supported)",
                          L->path, rope_dim, h->head_dim);
    }
    if (h->n_heads % h->n_kv_heads != 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF head_count %u is not a multiple of head_count_kv %u",
                          L->path, h->n_heads, h->n_kv_heads);
    }
    if (h->head_dim % 2 != 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF key_length %u must be even for rotate-half RoPE", L->path,
                          h->head_dim);
    }
    if ((uint64_t)h->n_heads * h->head_dim > QWEN3_MAX_DIM) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF head_count * key_length = %llu exceeds the limit of %u",
                          L->path, (unsigned long long)h->n_heads * h->head_dim, QWEN3_MAX_DIM);
    }
    const Qwen3GgufTensor* embd = qwen3_gguf_find_tensor(&L->g, "token_embd.weight");
    if (!embd) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF has no tensor 'token_embd.weight'", L->path);
    if (embd->dims[1] < 1 || embd->dims[1] > QWEN3_MAX_VOCAB) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF token_embd.weight has %llu rows (vocabulary limit %u)",
                          L->path, (unsigned long long)embd->dims[1], QWEN3_MAX_VOCAB);
    }
    h->vocab_size = (uint32_t)embd->dims[1];
    h->shared_classifier = qwen3_gguf_find_tensor(&L->g, "output.weight") == NULL;
    h->file_size = L->m->map.size;
    return QWEN3_OK;
}

static int32_t load_weights(Loader* L) {
    Qwen3Model* m = L->m;
    Qwen3Header* h = &m->header;
    Qwen3Weights* w = &m->weights;
    const uint32_t dim = h->dim, hd = h->head_dim, q_dim = h->n_heads * hd, kv_dim = h->n_kv_heads * hd;
    w->layers = (Qwen3LayerWeights*)calloc(h->n_layers, sizeof *w->layers);
    if (!w->layers) return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory for %u layer tables", h->n_layers);
    int32_t rc = load_matrix(L, "token_embd.weight", h->vocab_size, dim, &w->embed);
    if (!rc) rc = load_vector(L, "output_norm.weight", dim, &w->final_norm);
    if (!rc && !h->shared_classifier) {
        rc = load_matrix(L, "output.weight", h->vocab_size, dim, &w->classifier);
    } else if (!rc) {
        w->classifier = w->embed;
    }
    for (uint32_t l = 0; l < h->n_layers && !rc; l++) {
        Qwen3LayerWeights* lw = &w->layers[l];
        char name[96];
#define NAME(suffix) (snprintf(name, sizeof name, "blk.%u." suffix ".weight", l), name)
        rc = load_vector(L, NAME("attn_norm"), dim, &lw->attn_norm);
        if (!rc) rc = load_vector(L, NAME("ffn_norm"), dim, &lw->ffn_norm);
        if (!rc) rc = load_vector(L, NAME("attn_q_norm"), hd, &lw->q_norm);
        if (!rc) rc = load_vector(L, NAME("attn_k_norm"), hd, &lw->k_norm);
        const struct {
            const char* suffix;
            uint32_t rows, cols;
            Qwen3Matrix* dst;
        } mats[7] = {
            {"attn_q", q_dim, dim, &lw->wq},       {"attn_k", kv_dim, dim, &lw->wk},
            {"attn_v", kv_dim, dim, &lw->wv},      {"attn_output", dim, q_dim, &lw->wo},
            {"ffn_gate", h->hidden_dim, dim, &lw->w1}, {"ffn_down", dim, h->hidden_dim, &lw->w2},
            {"ffn_up", h->hidden_dim, dim, &lw->w3},
        };
        for (int i = 0; i < 7 && !rc; i++) {
            snprintf(name, sizeof name, "blk.%u.%s.weight", l, mats[i].suffix);
            rc = load_matrix(L, name, mats[i].rows, mats[i].cols, mats[i].dst);
        }
#undef NAME
    }
    if (rc) return rc;
    if (L->any_q8) {
        /* every activation is quantised per 32 values when any matrix takes int8 input */
        const uint32_t widths[3] = {dim, h->hidden_dim, q_dim};
        for (int i = 0; i < 3; i++) {
            if (widths[i] % 32 != 0) {
                return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                                  "%s: GGUF has Q8_0/Q4_0 weights but a width of %u, not a multiple of 32",
                                  L->path, widths[i]);
            }
        }
        h->group_size = 32;
    }
    return QWEN3_OK;
}

/* The tokenizer from tokenizer.ggml.{tokens, token_type, merges} (exact merges). */
static int32_t load_gguf_tokenizer(Loader* L) {
    const uint8_t* model;
    uint32_t model_len;
    int32_t rc = key_string(L, "tokenizer.ggml.model", &model, &model_len);
    if (rc) return rc;
    if (!name_is(model, model_len, "gpt2")) {
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                          "%s: GGUF tokenizer.ggml.model is '%s'; only 'gpt2' (byte-level BPE, as Qwen3 uses) is "
                          "supported",
                          L->path, quote(model, model_len).s);
    }
    const Qwen3GgufKv* tok = qwen3_gguf_find_kv(&L->g, "tokenizer.ggml.tokens");
    const Qwen3GgufKv* mer = qwen3_gguf_find_kv(&L->g, "tokenizer.ggml.merges");
    const Qwen3GgufKv* typ = qwen3_gguf_find_kv(&L->g, "tokenizer.ggml.token_type");
    const char* bad = NULL;
    if (!tok || tok->type != QWEN3_GGUF_ARRAY || tok->elem_type != QWEN3_GGUF_STRING) {
        bad = "tokenizer.ggml.tokens (an array of strings)";
    } else if (!mer || mer->type != QWEN3_GGUF_ARRAY || mer->elem_type != QWEN3_GGUF_STRING) {
        bad = "tokenizer.ggml.merges (an array of strings)";
    } else if (typ && (typ->type != QWEN3_GGUF_ARRAY ||
                       (typ->elem_type != QWEN3_GGUF_INT32 && typ->elem_type != QWEN3_GGUF_UINT32) ||
                       typ->count != tok->count)) {
        bad = "tokenizer.ggml.token_type (an array of one i32 per token)";
    }
    if (bad) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF lacks a valid %s", L->path, bad);
    if (tok->count == 0 || tok->count > L->m->header.vocab_size) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF has %llu tokens; the model has %u embedding rows", L->path,
                          (unsigned long long)tok->count, L->m->header.vocab_size);
    }
    if (mer->count > UINT32_MAX) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF has too many merges", L->path);
    const uint32_t n_tok = (uint32_t)tok->count, n_mer = (uint32_t)mer->count;
    /* both counts were checked against the bytes of the file while parsing */
    const char** toks = (const char**)malloc((size_t)n_tok * sizeof *toks);
    uint32_t* tok_lens = (uint32_t*)malloc((size_t)n_tok * sizeof *tok_lens);
    const char** mers = (const char**)malloc(((size_t)n_mer + 1) * sizeof *mers);
    uint32_t* mer_lens = (uint32_t*)malloc(((size_t)n_mer + 1) * sizeof *mer_lens);
    int32_t* types = typ ? (int32_t*)malloc((size_t)n_tok * sizeof *types) : NULL;
    if (!toks || !tok_lens || !mers || !mer_lens || (typ && !types)) {
        rc = qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory for %u tokens and %u merges", n_tok, n_mer);
    } else {
        uint64_t off = tok->offset;
        for (uint32_t i = 0; i < n_tok; i++) {
            tok_lens[i] = (uint32_t)rd64(L->g.data + off);
            toks[i] = (const char*)(L->g.data + off + 8);
            off += 8 + tok_lens[i];
        }
        off = mer->offset;
        for (uint32_t i = 0; i < n_mer; i++) {
            mer_lens[i] = (uint32_t)rd64(L->g.data + off);
            mers[i] = (const char*)(L->g.data + off + 8);
            off += 8 + mer_lens[i];
        }
        for (uint32_t i = 0; typ && i < n_tok; i++) types[i] = (int32_t)rd32(L->g.data + typ->offset + 4 * (uint64_t)i);
        L->m->tokenizer = qwen3_tokenizer_from_lists(toks, tok_lens, n_tok, types, mers, mer_lens, n_mer);
        if (!L->m->tokenizer) {
            char why[1024];
            snprintf(why, sizeof why, "%s", qwen3_get_last_error());
            rc = qwen3_fail(QWEN3_ERR_FORMAT, "%s: %s", L->path, why);
        }
    }
    free(toks);
    free(tok_lens);
    free(mers);
    free(mer_lens);
    free(types);
    return rc;
}

int32_t qwen3_gguf_load_model(Qwen3Model* m) {
    m->gguf = (Qwen3GgufModel*)calloc(1, sizeof *m->gguf);
    if (!m->gguf) return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory loading %s", m->path);
    Loader L;
    memset(&L, 0, sizeof L);
    L.m = m;
    L.path = m->path;
    int32_t rc = qwen3_gguf_parse(m->map.data, m->map.size, m->path, &L.g);
    if (rc == QWEN3_OK) rc = load_hparams(&L);
    if (rc == QWEN3_OK) rc = load_weights(&L);
    if (rc == QWEN3_OK) rc = load_gguf_tokenizer(&L);
    qwen3_gguf_release(&L.g);
    return rc;
}
