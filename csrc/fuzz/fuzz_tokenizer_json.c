/*
 * fuzz_tokenizer_json.c - the JSON reader and the tokenizer.json loader given arbitrary
 * text: qwen3_json_parse on the bytes (then a walk over every value), and
 * qwen3_tokenizer_load_json on the same bytes written as a file; an accepted tokenizer
 * encodes a few strings, checked by fuzz_check_encode.
 * Seeds: csrc/fuzz/corpus/fuzz_tokenizer_json/ (small tokenizer.json files in the real
 * file's structure, and JSON edge cases).
 */
#include "fuzz_common.h"

#include "json.h"

/* Visits every value below v; returns how many (bounded by the document's size). */
static size_t tj_walk(const Qwen3JsonValue* v, int depth) {
    if (depth > QWEN3_JSON_MAX_DEPTH) FUZZ_FAIL("a document nests deeper than the reader's limit");
    size_t count = 1;
    int64_t i64;
    switch (v->type) {
        case QWEN3_JSON_NUMBER: qwen3_json_int(v, INT32_MIN, INT32_MAX, &i64); break;
        case QWEN3_JSON_STRING:
            if (v->u.str[v->len] != '\0') FUZZ_FAIL("a string of %u bytes is not NUL-terminated", v->len);
            break;
        case QWEN3_JSON_ARRAY:
            for (uint32_t k = 0; k < v->len; k++) count += tj_walk(qwen3_json_at(v, k), depth + 1);
            if (qwen3_json_at(v, v->len)) FUZZ_FAIL("an array answers past its end");
            break;
        case QWEN3_JSON_OBJECT:
            for (uint32_t k = 0; k < v->len; k++) {
                const Qwen3JsonValue* key = &v->u.items[2 * (size_t)k];
                if (key->type != QWEN3_JSON_STRING) FUZZ_FAIL("an object key is not a string");
                if (!qwen3_json_get(v, key->u.str) && strlen(key->u.str) == key->len)
                    FUZZ_FAIL("member \"%s\" cannot be found by its key", key->u.str);
                count += tj_walk(key + 1, depth + 1);
            }
            break;
        default: break;
    }
    return count;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Qwen3JsonDoc* doc = qwen3_json_parse((const char*)data, size, "fuzz.json");
    if (doc) {
        size_t values = tj_walk(qwen3_json_root(doc), 0);
        if (values > size + 1) FUZZ_FAIL("%zu bytes of JSON hold %zu values", size, values);
        qwen3_json_free(doc);
    } else {
        fuzz_check_error("qwen3_json_parse");
    }
    char path[600];
    /* not named tokenizer.json: the model harnesses share the scratch folder in
     * test_fuzz_replay.c, and a tokenizer.json there would be found next to their models */
    fuzz_write(path, sizeof path, "fuzz_tokenizer.json", data, size);
    Qwen3Tokenizer* t = qwen3_tokenizer_load_json(path);
    if (!t) {
        fuzz_check_error("qwen3_tokenizer_load_json");
        return 0;
    }
    static const char* const texts[] = {"", "hello world", "<|im_end|>ab<|im_start|>", "a\xcc\x81 \xe2\x82\xac 12",
                                        "\xc0\xaf\xed\xa0\x80"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        for (int special = 0; special < 2; special++)
            fuzz_check_encode(t, (const uint8_t*)texts[i], strlen(texts[i]), special, 0);
    }
    qwen3_tokenizer_free(t);
    return 0;
}
