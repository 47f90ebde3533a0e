/* error.h - the thread-local last-error message behind qwen3_get_last_error(). */
#ifndef QWEN3_ERROR_H
#define QWEN3_ERROR_H

#include <stdint.h>

/* Sets the calling thread's last error (printf-style, truncated to 1 KiB). */
void qwen3_error_set(const char* fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Sets the last error and returns `status`, for `return qwen3_fail(QWEN3_ERR_X, ...)`. */
int32_t qwen3_fail(int32_t status, const char* fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Clears the calling thread's last error. */
void qwen3_error_clear(void);

#endif
