/* chat_template.c - the stock Qwen3 chat templates, their `%s` slot check and the
 * `<model>.template*` side files (chat_template.h). */
#include "chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "platform.h"
#include "qwen3_inference.h"

static const char* const template_suffixes[QWEN3_TEMPLATE_COUNT] = {
    ".template",
    ".template.with-thinking",
    ".template.with-system",
    ".template.with-system-and-thinking",
};

static const uint32_t template_slots[QWEN3_TEMPLATE_COUNT] = {1, 1, 2, 2};

#define STOCK_SYSTEM "<|im_start|>system\n%s<|im_end|>\n"
#define STOCK_USER "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n"
#define STOCK_NO_THINKING "<think>\n\n</think>\n\n"

const char* qwen3_template_stock(uint32_t kind) {
    static const char* const stock[QWEN3_TEMPLATE_COUNT] = {
        STOCK_USER STOCK_NO_THINKING,
        STOCK_USER,
        STOCK_SYSTEM STOCK_USER STOCK_NO_THINKING,
        STOCK_SYSTEM STOCK_USER,
    };
    return kind < QWEN3_TEMPLATE_COUNT ? stock[kind] : NULL;
}

int32_t qwen3_template_validate(const char* text, uint32_t n_slots, const char* name) {
    uint32_t found = 0;
    for (size_t i = 0; text[i]; i++) {
        if (text[i] != '%') continue;
        char next = text[i + 1];
        if (next == 's') {
            found++;
            i++;
        } else if (next == '%') {
            i++;
        } else if (next == '\0') {
            return qwen3_fail(QWEN3_ERR_FORMAT,
                              "%s: a lone '%%' at byte %zu ends the template (only %%s and %%%% "
                              "are allowed)",
                              name, i);
        } else {
            /* the byte comes from the file: quoted only when printable, so a template
             * cannot put control characters into the message */
            unsigned char b = (unsigned char)next;
            char shown[8];
            snprintf(shown, sizeof shown, b >= 0x20 && b < 0x7F ? "%%%c" : "%%\\x%02X", (unsigned)b);
            return qwen3_fail(QWEN3_ERR_FORMAT,
                              "%s: '%s' at byte %zu is not allowed in a template (only %%s and "
                              "%%%%)",
                              name, shown, i);
        }
    }
    if (found != n_slots) {
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: has %u %%s placeholders, expected %u", name,
                          found, n_slots);
    }
    return QWEN3_OK;
}

int32_t qwen3_templates_load(const char* model_path, char* out[QWEN3_TEMPLATE_COUNT]) {
    for (uint32_t k = 0; k < QWEN3_TEMPLATE_COUNT; k++) {
        char* file = qwen3_path_append(model_path, template_suffixes[k]);
        if (!file) {
            return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory building a template path");
        }
        int32_t present = qwen3_file_probe(file);
        if (present < 0) {
            free(file);
            return present;
        }
        if (!present) {
            free(file);
            out[k] = qwen3_string_copy(qwen3_template_stock(k));
            if (!out[k]) {
                return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY,
                                  "out of memory copying a stock template");
            }
            continue;
        }
        char* text = NULL;
        size_t len = 0;
        int32_t rc = qwen3_file_read_all(file, QWEN3_TEMPLATE_FILE_MAX_BYTES, &text, &len);
        if (rc == QWEN3_OK && strlen(text) != len) {
            rc = qwen3_fail(QWEN3_ERR_FORMAT, "%s: template contains a NUL byte", file);
        }
        if (rc == QWEN3_OK) rc = qwen3_template_validate(text, template_slots[k], file);
        free(file);
        if (rc != QWEN3_OK) {
            free(text);
            return rc;
        }
        out[k] = text;
    }
    return QWEN3_OK;
}
