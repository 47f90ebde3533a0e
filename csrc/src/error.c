/* error.c - thread-local last error. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

#include "qwen3_inference.h"

#if defined(_MSC_VER)
#define QWEN3_THREAD_LOCAL __declspec(thread)
#else
#define QWEN3_THREAD_LOCAL _Thread_local
#endif

static QWEN3_THREAD_LOCAL char last_error[1024];

static void set_va(const char* fmt, va_list ap) {
    vsnprintf(last_error, sizeof last_error, fmt, ap);
}

void qwen3_error_set(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_va(fmt, ap);
    va_end(ap);
}

int32_t qwen3_fail(int32_t status, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_va(fmt, ap);
    va_end(ap);
    return status;
}

void qwen3_error_clear(void) { last_error[0] = '\0'; }

QWEN3_API const char* qwen3_get_last_error(void) { return last_error; }
