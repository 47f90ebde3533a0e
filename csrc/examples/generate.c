/*
 * generate.c - the qwen3.c-compatible loop API from a C program that sees only the
 * public header:
 *
 *   zig build example
 *   zig-out/bin/qwen3-generate MODEL.bin ["PROMPT"] [MAX_TOKENS]
 *
 * Loads a checkpoint, prints its configuration, and continues the prompt greedily
 * (temperature 0). A missing or corrupt file prints qwen3_get_last_error() and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>

#include "qwen3_inference.h"

int main(int argc, char** argv) {
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL.bin [PROMPT] [MAX_TOKENS]\n", argv[0]);
        return 2;
    }
    const char* path = argv[1];
    const char* prompt = argc > 2 ? argv[2] : "The future of AI is";
    long max_tokens = argc > 3 ? strtol(argv[3], NULL, 10) : 64;
    if (max_tokens < 0) max_tokens = 0;

    Qwen3Model* model = qwen3_model_load(path, 0);
    if (!model) {
        fprintf(stderr, "error: %s\n", qwen3_get_last_error());
        return 1;
    }
    const Qwen3ModelConfig* c = qwen3_model_get_config(model);
    printf("model %s (qwen3_inference %s, kernel %s, %u threads)\n", path, qwen3_version(),
           qwen3_kernel_name(), qwen3_model_get_threads(model));
    printf("  vocab_size  %u\n  dim         %u\n  hidden_dim  %u\n  n_layers    %u\n"
           "  n_heads     %u\n  n_kv_heads  %u\n  max_seq_len %u\n  rope_theta  %g\n\n",
           c->vocab_size, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
           c->max_seq_len, (double)c->rope_theta);
    fflush(stdout);

    Qwen3Config config = {
        .checkpoint_path = path,
        .temperature = 0.0f,
        .topp = 0.9f,
        .mode = "generate",
        .prompt = prompt,
    };
    int rc = qwen3_inference_generate_ex(model, &config, NULL, (uint32_t)max_tokens);
    if (rc != QWEN3_OK) fprintf(stderr, "error: %s\n", qwen3_get_last_error());
    qwen3_model_free(model);
    return rc == QWEN3_OK ? 0 : 1;
}
