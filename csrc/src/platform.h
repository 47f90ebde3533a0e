/*
 * platform.h - the few operating-system services the engine needs, behind one interface
 * so every other file stays portable C11: read-only file maps, lazily committed memory
 * regions, aligned allocation, a mutex, a monotonic clock, string and path helpers.
 *
 * POSIX (Linux, macOS) and Windows implementations live in platform.c. Paths are UTF-8
 * everywhere (converted to UTF-16 for the Windows file API).
 */
#ifndef QWEN3_PLATFORM_H
#define QWEN3_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------------------
 * Files
 * ---------------------------------------------------------------------------------- */

/* A read-only view of a whole file. */
typedef struct {
    const uint8_t* data; /* (size) bytes; NULL for an empty file */
    uint64_t size;
    void* handle;        /* Windows: the mapping handle; POSIX: the open descriptor + 1 */
    int64_t mtime_ns;    /* POSIX: modification time when mapped (qwen3_file_map_check) */
    size_t copy_size;    /* Linux: nonzero when data is an anonymous copy of this many bytes
                          * (qwen3_file_map_to_huge_pages), 0 while it is the file map */
} Qwen3FileMap;

/* Maps `path` read-only into *out. Returns QWEN3_OK or QWEN3_ERR_IO (error set, naming the path);
 * anything but a regular file (a FIFO, a device, a folder) is refused without blocking
 * or reading it. */
int32_t qwen3_file_map_init(Qwen3FileMap* out, const char* path);

/* Unmaps; a zeroed map is ignored. Leaves *map zeroed. */
void qwen3_file_map_deinit(Qwen3FileMap* map);

/* Linux: bytes this process can still take without swapping or meeting its container's
 * limit: the smaller of MemAvailable and the memory cgroup's limit minus its usage (page
 * cache included, so the figure errs low). 0 when unknown, and on other systems. */
uint64_t qwen3_memory_budget(void);

/* Linux: moves the map's bytes into anonymous memory backed by transparent huge pages
 * (2 MiB) and unmaps the file, so a decode step, which streams every weight, takes a TLB
 * entry per 2 MiB instead of per 4 KiB page of page cache (docs/architecture.md). Does
 * nothing (returns 0) where that cannot pay or cannot be afforded: another OS, huge pages
 * off in /sys/kernel/mm/transparent_hugepage/enabled, a file under 4 MiB, a file over half
 * of qwen3_memory_budget(), or QWEN3_MMAP set in the environment; also when the allocation
 * fails. Returns 1 when the map now holds a copy. The file stays open for qwen3_file_map_check.
 * Pages handed back with madvise(MADV_DONTNEED) then read as zeros, not the file's bytes. */
int qwen3_file_map_to_huge_pages(Qwen3FileMap* map);

/*
 * Checks that the file behind a map is still the one that was mapped: same size and
 * modification time (POSIX keeps the mapped descriptor open for this). Reading a mapped
 * page past the end of a file truncated after mapping raises SIGBUS, which would kill the
 * whole process (a Deno program included); a file rewritten in place would feed a forward
 * pass a mix of two models. Callers check before reading weights, to fail with
 * QWEN3_ERR_IO (error set, naming the path) instead. A file replaced by rename leaves the
 * mapped one intact and passes. Windows refuses to truncate a mapped file: always OK.
 */
int32_t qwen3_file_map_check(const Qwen3FileMap* map, const char* path);

/*
 * Whether an optional file is there: 1 when `path` names a regular file (symlinks
 * followed), 0 when nothing is there (ENOENT), else QWEN3_ERR_IO with the error naming
 * the path and the real reason. A symlink loop, a symlink to a missing file, an
 * unsearchable folder or a FIFO is a file someone put there that cannot be used: the
 * caller reports it instead of quietly trying its next candidate.
 */
int32_t qwen3_file_probe(const char* path);

/* Reads a whole file into a NUL-terminated malloc'd buffer (free with free()). Files
 * larger than max_size are refused with QWEN3_ERR_FORMAT (by their size, before any
 * read), anything but a regular file with QWEN3_ERR_IO, without blocking or reading it.
 * Returns QWEN3_OK, QWEN3_ERR_IO, QWEN3_ERR_FORMAT or QWEN3_ERR_OUT_OF_MEMORY, with the
 * error set naming the path. */
int32_t qwen3_file_read_all(const char* path, size_t max_size, char** out, size_t* out_len);

/* ------------------------------------------------------------------------------------
 * Memory
 * ---------------------------------------------------------------------------------- */

/*
 * A large zero-filled region whose pages cost nothing until committed and touched
 * (a KV cache for 40960 positions must not cost its full size up front). POSIX maps
 * it MAP_NORESERVE, so commit is a no-op; Windows reserves the address range and
 * commits ranges on request.
 */
typedef struct {
    uint8_t* base; /* (size) bytes */
    size_t size;
} Qwen3Region;

/* Reserves `size` bytes (> 0) for *region. Returns QWEN3_OK or QWEN3_ERR_OUT_OF_MEMORY (error set). */
int32_t qwen3_region_init(Qwen3Region* region, size_t size);

/* Makes bytes [offset, offset+len) usable; committing committed pages again is
 * harmless. Returns QWEN3_OK or QWEN3_ERR_OUT_OF_MEMORY (error set). */
int32_t qwen3_region_commit(Qwen3Region* region, size_t offset, size_t len);

/* Gives the region back; a zeroed region is ignored. Leaves *region zeroed. */
void qwen3_region_deinit(Qwen3Region* region);

/* 64-byte aligned allocation (zero-filled), NULL on failure or size 0. Free with
 * qwen3_aligned_free. */
void* qwen3_aligned_alloc(size_t size);
void qwen3_aligned_free(void* p);

/* ------------------------------------------------------------------------------------
 * Threads and time
 * ---------------------------------------------------------------------------------- */

typedef struct Qwen3Mutex Qwen3Mutex;

/* NULL on failure (error set). */
Qwen3Mutex* qwen3_mutex_new(void);
void qwen3_mutex_free(Qwen3Mutex* m);
void qwen3_mutex_lock(Qwen3Mutex* m);
void qwen3_mutex_unlock(Qwen3Mutex* m);

/* Keeps this library loaded until the process ends, even when its host unloads it
 * (dlclose, FreeLibrary). The thread pool's threads (threadpool.c) run its code between
 * calls - they spin for a few milliseconds after a pass before they sleep - and a host that
 * exits without freeing its models unmaps the library under them: Deno does at exit, and
 * 3 in 10 scripts that ended right after a call died of SIGSEGV. Call it before starting a
 * thread; it does nothing after the first time or where the system has no way to do it. */
void qwen3_library_pin(void);

/* Seconds from an arbitrary fixed point, monotonic. */
double qwen3_time_seconds(void);

/* A value that differs between calls and runs (clock and address based), never 0:
 * the RNG seed when the caller asks for seed 0. */
uint64_t qwen3_time_seed(void);

/* ------------------------------------------------------------------------------------
 * Strings and paths
 * ---------------------------------------------------------------------------------- */

/* A malloc'd copy of a NUL-terminated string. NULL when out of memory. */
char* qwen3_string_copy(const char* s);

/* path + suffix, malloc'd ("model.bin" + ".tokenizer"). NULL when out of memory. */
char* qwen3_path_append(const char* path, const char* suffix);

/* The file `name` in the folder holding `path` ("a/b/model.bin", "tokenizer.json" ->
 * "a/b/tokenizer.json"; "model.bin" -> "tokenizer.json"), malloc'd. NULL when out of
 * memory. */
char* qwen3_path_sibling(const char* path, const char* name);

#endif
