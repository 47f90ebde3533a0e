/*
 * gguf.h - llama.cpp's GGUF container (v2 and v3, little-endian; docs/formats.md#gguf):
 * a reader of the header, the typed metadata and the tensor table that checks every
 * count, length, offset and size against the file before using it. It knows nothing of
 * Qwen3; model_gguf.c maps a `qwen3` file's keys and tensors onto a Qwen3Model.
 *
 * File layout: "GGUF", u32 version, u64 tensor count, u64 metadata count, metadata
 * (key string, u32 value type, value), tensor infos (name string, u32 n_dims, n_dims x u64
 * dims innermost first, u32 ggml type, u64 offset from the data section), padding to
 * general.alignment (default 32), tensor data. A string is a u64 length then its bytes.
 */
#ifndef QWEN3_GGUF_H
#define QWEN3_GGUF_H

#include <stdint.h>

/* "GGUF" read as a little-endian u32. */
#define QWEN3_GGUF_MAGIC 0x46554747u

/* Limits shared with src/formats/gguf.ts, so both engines refuse the same hostile files. */
#define QWEN3_GGUF_MAX_ITEMS (1u << 20)  /* tensors, metadata entries */
#define QWEN3_GGUF_MAX_STRING (1u << 24) /* bytes of one string */
#define QWEN3_GGUF_MAX_ARRAY (1u << 26)  /* elements of one array */
#define QWEN3_GGUF_MAX_DIMS 4u
#define QWEN3_GGUF_MAX_DIM (1u << 30) /* one tensor dimension */
#define QWEN3_GGUF_MAX_ALIGNMENT (1u << 16)

/* Metadata value types. */
enum {
    QWEN3_GGUF_UINT8 = 0,
    QWEN3_GGUF_INT8 = 1,
    QWEN3_GGUF_UINT16 = 2,
    QWEN3_GGUF_INT16 = 3,
    QWEN3_GGUF_UINT32 = 4,
    QWEN3_GGUF_INT32 = 5,
    QWEN3_GGUF_FLOAT32 = 6,
    QWEN3_GGUF_BOOL = 7,
    QWEN3_GGUF_STRING = 8,
    QWEN3_GGUF_ARRAY = 9,
    QWEN3_GGUF_UINT64 = 10,
    QWEN3_GGUF_INT64 = 11,
    QWEN3_GGUF_FLOAT64 = 12
};

/* ggml tensor types the engine can run (the parser knows the block geometry of every
 * ggml type, to check a table exactly and name a type it cannot run). */
enum {
    QWEN3_GGML_F32 = 0,
    QWEN3_GGML_F16 = 1,
    QWEN3_GGML_Q4_0 = 2,
    QWEN3_GGML_Q4_1 = 3,
    QWEN3_GGML_Q5_0 = 6,
    QWEN3_GGML_Q5_1 = 7,
    QWEN3_GGML_Q8_0 = 8,
    QWEN3_GGML_Q4_K = 12,
    QWEN3_GGML_Q5_K = 13,
    QWEN3_GGML_Q6_K = 14,
    QWEN3_GGML_BF16 = 30
};
#define QWEN3_GGML_RUNNABLE_TYPES "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K"

/* One metadata entry; the key and value stay in the file map. */
typedef struct {
    const uint8_t* key; /* (key_len) bytes, not NUL-terminated */
    uint32_t key_len;
    uint32_t type;      /* QWEN3_GGUF_* */
    uint32_t elem_type; /* arrays: the element type */
    uint64_t count;     /* arrays: the element count; 1 otherwise */
    uint64_t offset;    /* file offset of the value (arrays: of the first element) */
} Qwen3GgufKv;

/* One tensor of the table, validated: its data lies inside the file. */
typedef struct {
    const uint8_t* name; /* (name_len) bytes, not NUL-terminated */
    uint32_t name_len;
    uint32_t n_dims;
    uint64_t dims[QWEN3_GGUF_MAX_DIMS]; /* innermost first; unused ones are 1 */
    uint32_t type;                      /* ggml type */
    uint64_t offset;                    /* absolute file offset of the data */
    uint64_t bytes;
} Qwen3GgufTensor;

typedef struct {
    const uint8_t* data; /* (size) the whole file */
    uint64_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    uint64_t n_kv;
    Qwen3GgufKv* kv; /* (n_kv) */
    uint64_t n_tensors;
    Qwen3GgufTensor* tensors; /* (n_tensors) */
} Qwen3Gguf;

/* 1 when the bytes start with the GGUF magic. */
int qwen3_gguf_is_gguf(const uint8_t* data, uint64_t size);

/* Parses and validates the header and tensor table of a file held in memory into *out.
 * Returns QWEN3_OK, QWEN3_ERR_FORMAT (naming `path`, the field and the byte offset),
 * QWEN3_ERR_UNSUPPORTED or QWEN3_ERR_OUT_OF_MEMORY. On failure *out is left zeroed. */
int32_t qwen3_gguf_init(Qwen3Gguf* out, const uint8_t* data, uint64_t size, const char* path);

/* Frees the tables and zeroes *g; a zeroed Qwen3Gguf is ignored. */
void qwen3_gguf_deinit(Qwen3Gguf* g);

/* Lookups by exact name; NULL when absent. */
const Qwen3GgufKv* qwen3_gguf_find_kv(const Qwen3Gguf* g, const char* key);
const Qwen3GgufTensor* qwen3_gguf_find_tensor(const Qwen3Gguf* g, const char* name);

/* "Q8_0", "Q4_K", ... or "unknown". */
const char* qwen3_ggml_type_name(uint32_t type);

/* Typed reads of a metadata value. Each returns QWEN3_OK, or QWEN3_ERR_FORMAT when the
 * value is of another type, WITHOUT setting the error: the caller names the key.
 * _int takes any integer type (a u64 above INT64_MAX fails); _float f32 or f64. */
int32_t qwen3_gguf_kv_int(const Qwen3Gguf* g, const Qwen3GgufKv* kv, int64_t* out);
int32_t qwen3_gguf_kv_float(const Qwen3Gguf* g, const Qwen3GgufKv* kv, double* out);
int32_t qwen3_gguf_kv_string(const Qwen3Gguf* g, const Qwen3GgufKv* kv, const uint8_t** s, uint32_t* len);

/* The string at `offset` (a string value, or an element of an array of strings, starting
 * at kv->offset); returns the offset of the next element. The parser checked it. */
uint64_t qwen3_gguf_string_at(const Qwen3Gguf* g, uint64_t offset, const uint8_t** s, uint32_t* len);

/* Element i of an array of 32-bit integers (i32 or u32). */
uint32_t qwen3_gguf_array_u32(const Qwen3Gguf* g, const Qwen3GgufKv* kv, uint64_t i);

/* "u32", "string", ... for messages; "?" for an unknown type. */
const char* qwen3_gguf_value_type_name(uint32_t type);

/* 1 when the (len) bytes from the file equal the NUL-terminated s. */
int qwen3_gguf_bytes_equal(const uint8_t* p, uint32_t len, const char* s);

/* Bytes from the file shown safely in a message: printable ASCII as is, anything else as
 * \xNN, at most about 80 characters. */
typedef struct {
    char s[340];
} Qwen3GgufQuoted;
Qwen3GgufQuoted qwen3_gguf_quote(const uint8_t* p, uint64_t len);

#endif
