/*
 * json.h - a small, strict, bounded JSON (RFC 8259) reader for tokenizer.json and test
 * fixtures. The whole document becomes a tree of JsonValue in a few large blocks; strings
 * are decoded (\u escapes with surrogate pairs) and NUL-terminated in the document's own
 * copy of the text, so reading an 11 MB tokenizer.json allocates little and fast.
 *
 * Strict: no comments, trailing commas, leading zeros, control characters in strings,
 * lone surrogates, invalid UTF-8 or trailing garbage. Bounded: nesting deeper than
 * QWEN3_JSON_MAX_DEPTH is an error, not a stack overflow. Errors go to the thread's last
 * error (qwen3_get_last_error) naming the source and the byte offset.
 */
#ifndef QWEN3_JSON_H
#define QWEN3_JSON_H

#include <stddef.h>
#include <stdint.h>

#define QWEN3_JSON_MAX_DEPTH 256

typedef enum {
    QWEN3_JSON_NULL = 0,
    QWEN3_JSON_FALSE,
    QWEN3_JSON_TRUE,
    QWEN3_JSON_NUMBER,
    QWEN3_JSON_STRING,
    QWEN3_JSON_ARRAY,
    QWEN3_JSON_OBJECT
} Qwen3JsonType;

typedef struct Qwen3JsonValue Qwen3JsonValue;
struct Qwen3JsonValue {
    uint32_t type; /* Qwen3JsonType */
    uint32_t len;  /* string: bytes (NUL not counted; may contain \u0000); array: items;
                    * object: members */
    union {
        double num;                   /* number */
        const char* str;              /* string, NUL-terminated */
        const Qwen3JsonValue* items;  /* array: (len); object: (len, 2) key, value pairs */
    } u;
};

typedef struct Qwen3JsonDoc Qwen3JsonDoc;

/* Parses len bytes of text (copied; the caller keeps its buffer). `source` names the text
 * in error messages (a file name). NULL on error, with the offset in the message. */
Qwen3JsonDoc* qwen3_json_parse(const char* text, size_t len, const char* source);

/* Reads and parses a regular file of at most max_bytes. NULL on error (missing file,
 * not a regular file, too large, I/O, syntax), with the message naming the file. */
Qwen3JsonDoc* qwen3_json_load_file(const char* path, size_t max_bytes);

void qwen3_json_free(Qwen3JsonDoc* doc);

/* The top-level value. Valid until qwen3_json_free. */
const Qwen3JsonValue* qwen3_json_root(const Qwen3JsonDoc* doc);

/* The first member named key of an object, or NULL (also when v is not an object). */
const Qwen3JsonValue* qwen3_json_get(const Qwen3JsonValue* v, const char* key);

/* Item i of an array, or NULL when out of range or not an array. */
const Qwen3JsonValue* qwen3_json_at(const Qwen3JsonValue* v, size_t i);

/* Typed member access helpers: NULL when absent or of another type. */
const Qwen3JsonValue* qwen3_json_get_type(const Qwen3JsonValue* v, const char* key, Qwen3JsonType type);

/* 1 when v is a number holding an integer in [lo, hi] (stored in *out), else 0. */
int qwen3_json_int(const Qwen3JsonValue* v, int64_t lo, int64_t hi, int64_t* out);

#endif
