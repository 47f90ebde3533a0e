/*
 * fuzz_template.c - chat template side files given arbitrary bytes. The first input byte
 * picks the template kind (0 plain, 1 thinking, 2 system, 3 system and thinking); the
 * rest is written as that side file (chat.bin.template, ...) next to a tiny valid
 * checkpoint, which is then loaded. An accepted template drives the qwen3.c-compatible
 * chat loop for one turn (stdin empty, stdout discarded), which splits it at its %s and
 * tokenizes the pieces; qwen3_template_validate also sees the bytes directly.
 *
 * Invariants: a rejected template's error names its file and quotes no raw control byte
 * (no file contents leak into messages unescaped); an accepted one has exactly the %s
 * count its kind needs and comes back unchanged from qwen3_model_get_template.
 * Seeds: csrc/fuzz/corpus/fuzz_template/.
 */
#include "fuzz_common.h"

#include "model.h"

static const char* const tp_suffixes[4] = {".template", ".template.with-thinking", ".template.with-system",
                                            ".template.with-system-and-thinking"};
static char tp_model[600];

int LLVMFuzzerInitialize(int* argc, char*** argv) {
    (void)argc;
    (void)argv;
    uint8_t tok[4096];
    size_t n = fuzz_byte_tokenizer(tok, 13);
    char path[600];
    fuzz_write(path, sizeof path, "chat.bin.tokenizer", tok, n);
    /* room for a whole chat turn: the byte tokenizer spends a token per byte */
    uint32_t fields[10];
    memcpy(fields, fuzz_tiny_fields(), sizeof fields);
    fields[6] = 512;
    size_t len = 0;
    uint8_t* model = fuzz_tiny_checkpoint(fields, 0, &len);
    if (!model) FUZZ_FAIL("out of memory");
    fuzz_write(tp_model, sizeof tp_model, "chat.bin", model, len);
    free(model);
    /* The chat loop reads further turns from stdin and prints the answer on stdout. */
    if (!freopen(FUZZ_NULL_DEVICE, "r", stdin) || !freopen(FUZZ_NULL_DEVICE, "w", stdout)) FUZZ_FAIL("cannot redirect stdio");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const uint32_t kind = data[0] & 3;
    const uint32_t slots = kind >= 2 ? 2 : 1;
    for (uint32_t k = 0; k < 4; k++) {
        char name[128];
        snprintf(name, sizeof name, "chat.bin%s", tp_suffixes[k]);
        fuzz_unlink(name);
    }
    char name[128], path[600];
    snprintf(name, sizeof name, "chat.bin%s", tp_suffixes[kind]);
    fuzz_write(path, sizeof path, name, data + 1, size - 1);

    char* text = (char*)malloc(size);
    if (!text) FUZZ_FAIL("out of memory");
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    int valid = qwen3_template_validate(text, slots, path) == QWEN3_OK;
    if (!valid) fuzz_check_error("qwen3_template_validate");

    Qwen3Model* m = qwen3_model_load(tp_model, 0);
    if (!m) {
        fuzz_check_error("qwen3_model_load");
        if (!strstr(qwen3_get_last_error(), path) && strncmp(qwen3_get_last_error(), "out of memory", 13) != 0)
            FUZZ_FAIL("the template error does not name %s: \"%s\"", path, qwen3_get_last_error());
        free(text);
        return 0;
    }
    const char* loaded = qwen3_model_get_template(m, kind);
    if (!valid || !loaded || strlen(text) != size - 1 || strcmp(loaded, text) != 0)
        FUZZ_FAIL("an accepted template (validate: %d) does not come back as written", valid);
    qwen3_model_set_threads(m, 1);
    Qwen3Config cfg = {.temperature = 0.0f, .prompt = "hi %s %% there", .system_prompt = kind >= 2 ? "be %s brief" : NULL,
                       .enable_thinking = kind & 1, .seed = 1, .ctx_length = 0, .mode = "chat"};
    int rc = qwen3_inference_chat_ex(m, &cfg, NULL, 2);
    if (rc != QWEN3_OK) fuzz_check_error("qwen3_inference_chat_ex");
    qwen3_model_free(m);
    free(text);
    return 0;
}
