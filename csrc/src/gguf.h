/*
 * gguf.h - llama.cpp's GGUF format (v2 and v3, little-endian; SPEC section 7): a reader
 * of the metadata and tensor table that checks every count, length, offset and size
 * against the file before using it, and the loader that turns a `qwen3` GGUF into a
 * Qwen3Model (weights, tokenizer, hyper-parameters).
 *
 * File layout: "GGUF", u32 version, u64 tensor count, u64 metadata count, metadata
 * (key string, u32 value type, value), tensor infos (name string, u32 n_dims, n_dims x u64
 * dims innermost first, u32 ggml type, u64 offset from the data section), padding to
 * general.alignment (default 32), tensor data. A string is a u64 length then its bytes.
 *
 * Weights: F32, F16 and BF16 matrices are used in place from the file map and run by the
 * unquantised kernels (kernels_float.h). Q8_0 (per 32 values: fp16 scale, 32 int8) and
 * Q4_0 (fp16 scale, 16 bytes of 4-bit values biased by 8) are converted at load, without
 * loss, to the qwen3.c Q8 layout with group size 32 and fp32 scales, so every int8 kernel
 * tier and the batched prefill run them unchanged; the price is a copy of those weights
 * in memory (1.125 bytes per weight). Other ggml types are refused, naming the tensor and
 * the type.
 */
#ifndef QWEN3_GGUF_H
#define QWEN3_GGUF_H

#include <stdint.h>

#include "model.h"

/* "GGUF" read as a little-endian u32. */
#define QWEN3_GGUF_MAGIC 0x46554747u

/* Limits shared with src/gguf.ts, so both engines refuse the same hostile files. */
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

/* ggml tensor types the loader can run. */
enum {
    QWEN3_GGML_F32 = 0,
    QWEN3_GGML_F16 = 1,
    QWEN3_GGML_Q4_0 = 2,
    QWEN3_GGML_Q8_0 = 8,
    QWEN3_GGML_BF16 = 30
};

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

/* Parses and validates the header and tensor table of a file held in memory. Returns
 * QWEN3_OK, QWEN3_ERR_FORMAT (naming `path`, the field and the byte offset),
 * QWEN3_ERR_UNSUPPORTED or QWEN3_ERR_OUT_OF_MEMORY. On failure *out is released. */
int32_t qwen3_gguf_parse(const uint8_t* data, uint64_t size, const char* path, Qwen3Gguf* out);

/* Frees the tables; a zeroed Qwen3Gguf is ignored. */
void qwen3_gguf_release(Qwen3Gguf* g);

/* Lookups by exact name; NULL when absent. */
const Qwen3GgufKv* qwen3_gguf_find_kv(const Qwen3Gguf* g, const char* key);
const Qwen3GgufTensor* qwen3_gguf_find_tensor(const Qwen3Gguf* g, const char* name);

/* "Q8_0", "Q4_K", ... or "unknown". */
const char* qwen3_ggml_type_name(uint32_t type);

/* What a GGUF model owns beyond the file map (converted weights, copies, the table). */
typedef struct Qwen3GgufModel Qwen3GgufModel;

/*
 * Fills m->header, m->weights, m->tokenizer, m->rms_eps and m->rope_theta from the GGUF
 * file in m->map (named m->path in errors) and sets m->gguf. Requires
 * general.architecture "qwen3" and the tokenizer lists (tokenizer.ggml.model "gpt2").
 * Returns QWEN3_OK or an error status with the message set; m->gguf is set even on
 * failure, for qwen3_gguf_model_free.
 */
int32_t qwen3_gguf_load_model(Qwen3Model* m);

/* Frees what qwen3_gguf_load_model allocated; NULL is ignored. */
void qwen3_gguf_model_free(Qwen3GgufModel* g);

#endif
