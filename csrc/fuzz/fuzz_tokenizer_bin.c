/*
 * fuzz_tokenizer_bin.c - the qwen3.c `.tokenizer` reader given arbitrary bytes, then the
 * tokenizer it builds (when it accepts the file) encoding fixed strings and a slice of
 * the input, checked by fuzz_check_encode (counts, ids in range, bytes spell the text).
 * Seeds: csrc/fuzz/corpus/fuzz_tokenizer_bin/.
 */
#include "fuzz_common.h"

static void tb_exercise(const Qwen3Tokenizer* t, const uint8_t* data, size_t size) {
    static const char* const texts[] = {"", "ab cd ef", "<|im_end|>x<|im_start|>", "héllo\n\n  wörld 123",
                                        "\xff\xfe\xc3"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        for (int special = 0; special < 2; special++)
            fuzz_check_encode(t, (const uint8_t*)texts[i], strlen(texts[i]), special, 0);
    }
    size_t tail = size > 64 ? 64 : size;
    fuzz_check_encode(t, data + size - tail, tail, 1, 0);
    uint32_t n = qwen3_tokenizer_size(t), len = 0;
    if (n == 0) FUZZ_FAIL("a loaded tokenizer has no tokens");
    if (!qwen3_tokenizer_token_bytes(t, (int32_t)(n - 1), &len)) FUZZ_FAIL("the last id has no bytes");
    if (qwen3_tokenizer_token_bytes(t, (int32_t)n, &len) || qwen3_tokenizer_token_bytes(t, -1, &len))
        FUZZ_FAIL("an id outside [0, %u) has bytes", n);
    qwen3_tokenizer_find(t, "<|im_end|>");
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    char path[600];
    fuzz_write(path, sizeof path, "fuzz.tokenizer", data, size);
    Qwen3Tokenizer* t = qwen3_tokenizer_load_bin(path);
    if (!t) {
        fuzz_check_error("qwen3_tokenizer_load_bin");
        return 0;
    }
    tb_exercise(t, data, size);
    qwen3_tokenizer_free(t);
    return 0;
}
