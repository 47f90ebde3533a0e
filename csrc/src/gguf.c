/* gguf.c - llama.cpp's GGUF container (gguf.h): a bounds-checked parser of the header,
 * the typed metadata and the tensor table, and typed reads of metadata values. It knows
 * nothing of Qwen3: model_gguf.c maps a qwen3 file's keys and tensors onto the model.
 *
 * Every number read from the file is checked before it sizes anything: counts against
 * the bytes that remain (each item needs at least a few), lengths against the file end,
 * products and sums in checked 64-bit arithmetic, tensor data against the file length.
 * Names and keys from the file appear in messages only as printable ASCII. */
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "error.h"
#include "qwen3_inference.h"

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

/* ====================================================================================
 * Small helpers
 * ================================================================================== */

Qwen3GgufQuoted qwen3_gguf_quote(const uint8_t* p, uint64_t len) {
    Qwen3GgufQuoted q;
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

int qwen3_gguf_bytes_equal(const uint8_t* p, uint32_t len, const char* s) {
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
    *out = qwen3_read_u32le(c->d + c->pos);
    c->pos += 4;
    return QWEN3_OK;
}

static int32_t get_u64(Cursor* c, const char* what, uint64_t limit, uint64_t* out) {
    int32_t rc = need(c, 8, what);
    if (rc) return rc;
    const uint64_t v = qwen3_read_u64le(c->d + c->pos);
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
                              qwen3_gguf_quote(names[i].s, names[i].len).s);
        }
    }
    return QWEN3_OK;
}

int qwen3_gguf_is_gguf(const uint8_t* data, uint64_t size) {
    return data != NULL && size >= 4 && qwen3_read_u32le(data) == QWEN3_GGUF_MAGIC;
}

void qwen3_gguf_deinit(Qwen3Gguf* g) {
    free(g->kv);
    free(g->tensors);
    memset(g, 0, sizeof *g);
}

/* Reads the magic, version and the two counts, and checks the counts fit in the file. */
static int32_t read_header(Cursor* c, Qwen3Gguf* out, uint64_t* n_tensors, uint64_t* n_kv) {
    uint32_t magic, version;
    int32_t rc = get_u32(c, "magic", &magic);
    if (rc) return rc;
    if (magic != QWEN3_GGUF_MAGIC) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: magic is 0x%08X, not \"GGUF\"", c->path, magic);
    }
    rc = get_u32(c, "version", &version);
    if (rc) return rc;
    if (version == 1) {
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED, "%s: GGUF version 1 (32-bit counts) is not supported; convert "
                          "it to version 3 with llama.cpp's tools", c->path);
    }
    if (version != 2 && version != 3) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF version %u is not supported (2 or 3)%s", c->path, version,
                          (version & 0xFFFF) == 0 ? "; a big-endian file?" : "");
    }
    out->data = c->d;
    out->size = c->size;
    out->version = version;
    rc = get_u64(c, "tensor count", QWEN3_GGUF_MAX_ITEMS, n_tensors);
    if (rc == QWEN3_OK) rc = get_u64(c, "metadata count", QWEN3_GGUF_MAX_ITEMS, n_kv);
    if (rc) return rc;
    /* a key needs >= 8 + 4 + 1 bytes and a tensor info >= 8 + 4 + 8 + 4 + 8 */
    if (*n_kv > left(c) / 13 || *n_tensors > left(c) / 32) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: GGUF claims %llu metadata entries and %llu tensors, more than its %llu "
                          "bytes can hold",
                          c->path, (unsigned long long)*n_kv, (unsigned long long)*n_tensors,
                          (unsigned long long)c->size);
    }
    return QWEN3_OK;
}

/* Reads the metadata entries (key, type, value left in place) and rejects a repeated key. */
static int32_t read_kvs(Cursor* c, Qwen3Gguf* g, NameRef* names) {
    int32_t rc = QWEN3_OK;
    for (uint64_t i = 0; i < g->n_kv && rc == QWEN3_OK; i++) {
        Qwen3GgufKv* kv = &g->kv[i];
        char what[64];
        snprintf(what, sizeof what, "metadata key #%llu", (unsigned long long)i);
        rc = get_string(c, what, &kv->key, &kv->key_len);
        uint32_t type = 0;
        if (rc == QWEN3_OK) rc = get_u32(c, what, &type);
        if (rc == QWEN3_OK) rc = skip_value(c, type, qwen3_gguf_quote(kv->key, kv->key_len).s, kv);
        names[i] = (NameRef){kv->key, kv->key_len};
    }
    if (rc == QWEN3_OK) rc = check_unique(names, g->n_kv, c->path, "metadata key");
    return rc;
}

/* Sets g->alignment from general.alignment (32 when absent), which must be a power of two. */
static int32_t read_alignment(Qwen3Gguf* g, const char* path) {
    g->alignment = 32;
    const Qwen3GgufKv* align = qwen3_gguf_find_kv(g, "general.alignment");
    if (!align) return QWEN3_OK;
    int64_t a = 0;
    if (qwen3_gguf_kv_int(g, align, &a) != QWEN3_OK || a <= 0 || a > (int64_t)QWEN3_GGUF_MAX_ALIGNMENT ||
        (a & (a - 1)) != 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF general.alignment is not a power of two up to %u", path,
                          QWEN3_GGUF_MAX_ALIGNMENT);
    }
    g->alignment = (uint32_t)a;
    return QWEN3_OK;
}

/* Reads tensor info #i: name, dims (unused ones set to 1), ggml type and data-relative offset. */
static int32_t read_tensor_info(Cursor* c, Qwen3GgufTensor* t, uint64_t i) {
    char what[64];
    snprintf(what, sizeof what, "tensor #%llu", (unsigned long long)i);
    int32_t rc = get_string(c, what, &t->name, &t->name_len);
    if (rc == QWEN3_OK) rc = get_u32(c, what, &t->n_dims);
    if (rc) return rc;
    const Qwen3GgufQuoted tn = qwen3_gguf_quote(t->name, t->name_len);
    if (t->n_dims < 1 || t->n_dims > QWEN3_GGUF_MAX_DIMS) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF tensor '%s' has %u dims (1..%u)", c->path, tn.s, t->n_dims,
                          QWEN3_GGUF_MAX_DIMS);
    }
    for (uint32_t d = 0; d < QWEN3_GGUF_MAX_DIMS; d++) t->dims[d] = 1;
    for (uint32_t d = 0; d < t->n_dims && rc == QWEN3_OK; d++) {
        rc = get_u64(c, "tensor dimension", QWEN3_GGUF_MAX_DIM, &t->dims[d]);
        if (rc == QWEN3_OK && t->dims[d] == 0) {
            rc = qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF tensor '%s' dim %u is 0", c->path, tn.s, d);
        }
    }
    if (rc == QWEN3_OK) rc = get_u32(c, what, &t->type);
    if (rc == QWEN3_OK) rc = get_u64(c, "tensor offset", UINT64_MAX / 2, &t->offset);
    return rc;
}

/* Reads the tensor infos and rejects a repeated tensor name. */
static int32_t read_tensor_infos(Cursor* c, Qwen3Gguf* g, NameRef* names) {
    int32_t rc = QWEN3_OK;
    for (uint64_t i = 0; i < g->n_tensors && rc == QWEN3_OK; i++) {
        Qwen3GgufTensor* t = &g->tensors[i];
        rc = read_tensor_info(c, t, i);
        names[i] = (NameRef){t->name, t->name_len};
    }
    if (rc == QWEN3_OK) rc = check_unique(names, g->n_tensors, c->path, "tensor");
    return rc;
}

/* Checks a tensor's type, size and alignment against the file and makes its offset absolute. */
static int32_t place_tensor(const Qwen3Gguf* g, Qwen3GgufTensor* t, const char* path) {
    const uint64_t size = g->size;
    const Qwen3GgufQuoted tn = qwen3_gguf_quote(t->name, t->name_len);
    const GgmlType* gt = ggml_type(t->type);
    if (!gt) {
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                          "%s: GGUF tensor '%s' has ggml type %u, unknown to this engine (it runs " QWEN3_GGML_RUNNABLE_TYPES
                          ")",
                          path, tn.s, t->type);
    }
    if (t->dims[0] % gt->block != 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: GGUF tensor '%s' has rows of %llu values, not a multiple of the %s block of %u",
                          path, tn.s, (unsigned long long)t->dims[0], gt->name, gt->block);
    }
    uint64_t n = 1, bytes;
    int ok = 1;
    for (uint32_t d = 0; d < QWEN3_GGUF_MAX_DIMS; d++) ok = ok && qwen3_mul_u64_ok(n, t->dims[d], &n);
    ok = ok && qwen3_mul_u64_ok(n / gt->block, gt->bytes, &bytes);
    if (!ok || bytes > size) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF tensor '%s' is larger than the whole file (%llu bytes)",
                          path, tn.s, (unsigned long long)size);
    }
    if (t->offset % g->alignment != 0) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: GGUF tensor '%s' offset %llu is not a multiple of the alignment %u",
                          path, tn.s, (unsigned long long)t->offset, g->alignment);
    }
    if (t->offset > size || g->data_offset > size - t->offset || bytes > size - g->data_offset - t->offset) {
        return qwen3_fail(QWEN3_ERR_FORMAT,
                          "%s: GGUF tensor '%s' (%llu bytes at data offset %llu) ends past the end of the file "
                          "(%llu bytes, data section from byte %llu)",
                          path, tn.s, (unsigned long long)bytes, (unsigned long long)t->offset,
                          (unsigned long long)size, (unsigned long long)g->data_offset);
    }
    t->offset += g->data_offset;
    t->bytes = bytes;
    return QWEN3_OK;
}

int32_t qwen3_gguf_init(Qwen3Gguf* out, const uint8_t* data, uint64_t size, const char* path) {
    memset(out, 0, sizeof *out);
    Cursor c = {data, data ? size : 0, 0, path};
    uint64_t n_tensors, n_kv;
    int32_t rc = read_header(&c, out, &n_tensors, &n_kv);
    if (rc) return rc;
    out->kv = (Qwen3GgufKv*)calloc(n_kv ? n_kv : 1, sizeof *out->kv);
    out->tensors = (Qwen3GgufTensor*)calloc(n_tensors ? n_tensors : 1, sizeof *out->tensors);
    NameRef* names = (NameRef*)calloc((n_kv > n_tensors ? n_kv : n_tensors) + 1, sizeof *names);
    if (!out->kv || !out->tensors || !names) {
        free(names);
        qwen3_gguf_deinit(out);
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory for a GGUF table of %llu entries",
                          (unsigned long long)(n_kv + n_tensors));
    }
    out->n_kv = n_kv;
    out->n_tensors = n_tensors;

    rc = read_kvs(&c, out, names);
    if (rc == QWEN3_OK) rc = read_alignment(out, path);
    if (rc == QWEN3_OK) rc = read_tensor_infos(&c, out, names);
    free(names);

    if (rc == QWEN3_OK) {
        /* the data section starts at the first aligned byte after the tensor infos */
        const uint64_t a = out->alignment;
        out->data_offset = (c.pos + a - 1) / a * a;
    }
    for (uint64_t i = 0; i < n_tensors && rc == QWEN3_OK; i++) rc = place_tensor(out, &out->tensors[i], path);
    if (rc != QWEN3_OK) qwen3_gguf_deinit(out);
    return rc;
}

/* ====================================================================================
 * Lookups and typed values
 * ================================================================================== */

const Qwen3GgufKv* qwen3_gguf_find_kv(const Qwen3Gguf* g, const char* key) {
    for (uint64_t i = 0; i < g->n_kv; i++) {
        if (qwen3_gguf_bytes_equal(g->kv[i].key, g->kv[i].key_len, key)) return &g->kv[i];
    }
    return NULL;
}

const Qwen3GgufTensor* qwen3_gguf_find_tensor(const Qwen3Gguf* g, const char* name) {
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        if (qwen3_gguf_bytes_equal(g->tensors[i].name, g->tensors[i].name_len, name)) return &g->tensors[i];
    }
    return NULL;
}

int32_t qwen3_gguf_kv_int(const Qwen3Gguf* g, const Qwen3GgufKv* kv, int64_t* out) {
    const uint8_t* p = g->data + kv->offset;
    switch (kv->type) {
        case QWEN3_GGUF_UINT8: *out = p[0]; break;
        case QWEN3_GGUF_INT8: *out = (int8_t)p[0]; break;
        case QWEN3_GGUF_UINT16: *out = qwen3_read_u16le(p); break;
        case QWEN3_GGUF_INT16: *out = (int16_t)qwen3_read_u16le(p); break;
        case QWEN3_GGUF_UINT32: *out = qwen3_read_u32le(p); break;
        case QWEN3_GGUF_INT32: *out = (int32_t)qwen3_read_u32le(p); break;
        case QWEN3_GGUF_UINT64:
            if (qwen3_read_u64le(p) > (uint64_t)INT64_MAX) return QWEN3_ERR_FORMAT;
            *out = (int64_t)qwen3_read_u64le(p);
            break;
        case QWEN3_GGUF_INT64: *out = (int64_t)qwen3_read_u64le(p); break;
        default: return QWEN3_ERR_FORMAT;
    }
    return QWEN3_OK;
}

int32_t qwen3_gguf_kv_float(const Qwen3Gguf* g, const Qwen3GgufKv* kv, double* out) {
    const uint8_t* p = g->data + kv->offset;
    if (kv->type == QWEN3_GGUF_FLOAT32) {
        *out = qwen3_read_f32le(p);
    } else if (kv->type == QWEN3_GGUF_FLOAT64) {
        *out = qwen3_read_f64le(p);
    } else {
        return QWEN3_ERR_FORMAT;
    }
    return QWEN3_OK;
}

int32_t qwen3_gguf_kv_string(const Qwen3Gguf* g, const Qwen3GgufKv* kv, const uint8_t** s, uint32_t* len) {
    if (kv->type != QWEN3_GGUF_STRING) return QWEN3_ERR_FORMAT;
    (void)qwen3_gguf_string_at(g, kv->offset, s, len);
    return QWEN3_OK;
}

uint64_t qwen3_gguf_string_at(const Qwen3Gguf* g, uint64_t offset, const uint8_t** s, uint32_t* len) {
    *len = (uint32_t)qwen3_read_u64le(g->data + offset);
    *s = g->data + offset + 8;
    return offset + 8 + *len;
}

uint32_t qwen3_gguf_array_u32(const Qwen3Gguf* g, const Qwen3GgufKv* kv, uint64_t i) {
    return qwen3_read_u32le(g->data + kv->offset + 4 * i);
}

const char* qwen3_gguf_value_type_name(uint32_t type) {
    static const char* const names[13] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                          "bool", "string", "array", "u64", "i64", "f64"};
    return type < 13 ? names[type] : "?";
}
