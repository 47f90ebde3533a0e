/*
 * model.h - a loaded Qwen3 model: the memory-mapped file (a qwen3.c v1 or qwen3-rs
 * checkpoint, docs/formats.md#checkpoint-format, or a GGUF, docs/formats.md#gguf), its
 * validated header, weight views into the map, tokenizer, chat templates, thread pool
 * and the lock that serialises forward passes.
 */
#ifndef QWEN3_MODEL_H
#define QWEN3_MODEL_H

#include <stdint.h>

#include "chat_template.h"
#include "kernels.h"
#include "kernels_float.h"
#include "moe.h"
#include "platform.h"
#include "qwen3_inference.h"
#include "threadpool.h"
#include "tokenizer.h"

/* Both layouts put the weights after a 256-byte header. */
#define QWEN3_HEADER_BYTES 256u
#define QWEN3_MAGIC 0x616A6331u
#define QWEN3_VERSION 1
/* A Qwen3-MoE checkpoint (docs/formats.md#qwen3-moe-checkpoint): version 1's fields, the
 * mixture's at bytes 48..63, bytes 64..127 reserved (zero), a bitmap of the sparse blocks
 * at 128..255, and an experts section after the version 1 body. */
#define QWEN3_VERSION_MOE 2
#define QWEN3_MOE_HEADER_RESERVED 64u
#define QWEN3_MOE_HEADER_SPARSE 128u
#define QWEN3_MOE_MAX_LAYERS ((QWEN3_HEADER_BYTES - QWEN3_MOE_HEADER_SPARSE) * 8u)

/* Upper limits on header fields: far above any Qwen3, low enough that no size derived
 * from them can overflow 64 bits or ask for absurd scratch memory. */
#define QWEN3_MAX_DIM (1u << 18)       /* dim, hidden_dim, n_heads * head_dim */
#define QWEN3_MAX_LAYERS 4096u
#define QWEN3_MAX_HEADS 4096u
#define QWEN3_MAX_HEAD_DIM 16384u
#define QWEN3_MAX_VOCAB (1u << 24)
#define QWEN3_MAX_SEQ_LEN (1u << 24)

#define QWEN3_ROPE_THETA 1000000.0f
#define QWEN3_RMS_EPS 1e-6f

/* The header fields, as validated (all positive, shared_classifier 0 or 1). */
typedef struct {
    uint32_t format; /* Qwen3FileFormat */
    uint32_t dim;
    uint32_t hidden_dim;
    uint32_t n_layers;
    uint32_t n_heads;
    uint32_t n_kv_heads;
    uint32_t vocab_size;
    uint32_t seq_len;
    uint32_t head_dim;
    uint32_t shared_classifier;
    uint32_t group_size;
    uint64_t file_size; /* the exact size this header implies */
    uint32_t version;   /* checkpoints: 1 (dense) or QWEN3_VERSION_MOE */
    Qwen3MoeShape moe;  /* version 2: the mixture's shape; n_experts 0 otherwise */
    uint8_t sparse[(QWEN3_HEADER_BYTES - QWEN3_MOE_HEADER_SPARSE)]; /* version 2: bit l % 8 of
                                                                    * byte l / 8 = block l sparse */
} Qwen3Header;

typedef struct {
    const float* attn_norm; /* (dim) */
    const float* ffn_norm;  /* (dim) */
    const float* q_norm;    /* (head_dim), shared by every query head */
    const float* k_norm;    /* (head_dim), shared by every key head */
    Qwen3Matrix wq;         /* (n_heads * head_dim, dim) */
    Qwen3Matrix wk;         /* (n_kv_heads * head_dim, dim) */
    Qwen3Matrix wv;         /* (n_kv_heads * head_dim, dim) */
    Qwen3Matrix wo;         /* (dim, n_heads * head_dim) */
    Qwen3Matrix w1;         /* gate (hidden_dim, dim) */
    Qwen3Matrix w2;         /* down (dim, hidden_dim) */
    Qwen3Matrix w3;         /* up (hidden_dim, dim) */
    const Qwen3MoeLayer* moe; /* a sparse block's experts (w1..w3 unused); NULL when dense */
} Qwen3LayerWeights;

typedef struct {
    Qwen3Matrix embed;         /* (vocab_size, dim): one row widened to fp32 per token */
    Qwen3LayerWeights* layers; /* (n_layers) */
    const float* final_norm;   /* (dim) */
    Qwen3Matrix classifier;    /* (vocab_size, dim); the embedding when tied */
} Qwen3Weights;

/* What a GGUF model owns beyond the file map: converted weights and copies (model_gguf.c). */
typedef struct Qwen3GgufModel Qwen3GgufModel;

/* The scratch of batched decode steps (qwen3_forward_batch, transformer.c). */
typedef struct Qwen3BatchScratch Qwen3BatchScratch;

struct Qwen3Model {
    char* path;
    Qwen3FileMap map;
    Qwen3Header header;
    Qwen3ModelConfig config; /* what qwen3_model_get_config returns */
    Qwen3ModelInfo info;     /* what qwen3_model_get_info returns */
    Qwen3Weights weights;    /* views into map */
    float rms_eps;
    float rope_theta;
    Qwen3Tokenizer* tokenizer;
    char* templates[QWEN3_TEMPLATE_COUNT]; /* validated, NUL-terminated */
    Qwen3ThreadPool* pool;
    Qwen3Mutex* lock; /* held for a whole forward pass, and while the pool is replaced */
    Qwen3GgufModel* gguf;     /* GGUF files only: converted weights and copies */
    Qwen3MoeLayer* checkpoint_moe;      /* a Qwen3-MoE checkpoint's sparse blocks, in block
                                         * order (weights: views into map); NULL otherwise */
    Qwen3Matrix* checkpoint_experts;    /* their expert matrices, 3 * n_experts per block */
    Qwen3MoeShape moe;        /* arch qwen3moe only; n_experts 0 when dense */
    Qwen3BatchScratch* batch; /* made by the first batched decode step, grown, never
                               * shrunk; used under lock (transformer.c) */
    uint32_t batch_rows;      /* contexts per batched pass, at most; 0 = QWEN3_FORWARD_BLOCK
                               * (tests lower it to exercise the split) */
};

/* ---- The readers of a mapped file, one per format (model.c picks one by the magic) ---- */

/* Reads and validates a 256-byte checkpoint header (either layout; the file's size
 * settles which), naming `path` in errors. Returns QWEN3_OK, QWEN3_ERR_FORMAT or
 * QWEN3_ERR_UNSUPPORTED. (model_checkpoint.c) */
int32_t qwen3_header_parse(const uint8_t* data, uint64_t size, const char* path, Qwen3Header* out);

/* Fills m->header and m->weights (views into m->map) from the qwen3.c / qwen3-rs
 * checkpoint in m->map, named m->path in errors. Returns QWEN3_OK or an error status
 * with the message set. (model_checkpoint.c) */
int32_t qwen3_model_read_checkpoint(Qwen3Model* m);

/* Fills m->header, m->weights, m->tokenizer, m->rms_eps and m->rope_theta from the GGUF
 * file in m->map (named m->path in errors) and sets m->gguf. Requires
 * general.architecture "qwen3" and the tokenizer lists (tokenizer.ggml.model "gpt2").
 * Returns QWEN3_OK or an error status with the message set; m->gguf is set even on
 * failure, for qwen3_gguf_model_free. (model_gguf.c) */
int32_t qwen3_model_read_gguf(Qwen3Model* m);

/* Frees what qwen3_model_read_gguf allocated; NULL is ignored. (model_gguf.c) */
void qwen3_gguf_model_free(Qwen3GgufModel* g);

/* ---- The model ---- */

/* Loads everything (see qwen3_model_load, which checks the arguments and calls this).
 * NULL on error, error set. Free with qwen3_model_free (qwen3_inference.h), which
 * model.c defines. */
Qwen3Model* qwen3_model_new(const char* path, uint32_t ctx_length);

/* Replaces the thread pool (0 = default count). Takes the model lock. */
int32_t qwen3_model_resize_pool(Qwen3Model* model, uint32_t n_threads);

/* Threads a model uses by default: online CPUs, at most 64. */
uint32_t qwen3_default_threads(void);

#endif
