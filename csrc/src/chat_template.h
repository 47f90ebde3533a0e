/*
 * chat_template.h - Qwen3 chat templates in qwen3.c's printf style: the four kinds, the
 * stock Qwen3 (ChatML with <think>) text of each, the `%s` slot check, and loading the
 * `<model>.template*` side files (docs/formats.md#chat-template-side-files).
 */
#ifndef QWEN3_CHAT_TEMPLATE_H
#define QWEN3_CHAT_TEMPLATE_H

#include <stdint.h>

/* Template kinds, as qwen3_model_get_template numbers them. */
enum {
    QWEN3_TEMPLATE_PLAIN = 0,
    QWEN3_TEMPLATE_THINKING = 1,
    QWEN3_TEMPLATE_SYSTEM = 2,
    QWEN3_TEMPLATE_SYSTEM_THINKING = 3,
    QWEN3_TEMPLATE_COUNT = 4
};

/* The stock Qwen3 template of a kind (docs/formats.md#stock-chat-templates); NULL for a
 * bad kind. */
const char* qwen3_template_stock(uint32_t kind);

/* Checks that a template has exactly n_slots `%s` and no other `%` directive except
 * `%%` (a literal percent, as printf would read it). `name` is used in the error. */
int32_t qwen3_template_validate(const char* text, uint32_t n_slots, const char* name);

/*
 * Fills out[kind] for every kind with a malloc'd, validated, NUL-terminated template:
 * the side file `<model_path><suffix>` when it exists, else a copy of the stock one.
 * Returns QWEN3_OK or an error status naming the file (too large, a NUL byte, a bad
 * `%` directive, the wrong slot count, not a regular file). On failure the entries
 * filled so far stay in out for the caller to free.
 */
int32_t qwen3_templates_load(const char* model_path, char* out[QWEN3_TEMPLATE_COUNT]);

#endif
