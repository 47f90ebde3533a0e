/* platform.c - POSIX and Windows implementations of platform.h. */
#include "platform.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "qwen3_inference.h"

#if defined(_WIN32)
#define WIN32_LEAN_AND_MEAN
#include <io.h>
#include <windows.h>
#else
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#endif

/* ====================================================================================
 * Windows
 * ================================================================================== */
#if defined(_WIN32)

/* UTF-8 -> UTF-16 for the W file functions; malloc'd, NULL on failure. */
static wchar_t* widen(const char* s) {
    int n = MultiByteToWideChar(CP_UTF8, 0, s, -1, NULL, 0);
    if (n <= 0) return NULL;
    wchar_t* w = (wchar_t*)malloc((size_t)n * sizeof(wchar_t));
    if (!w) return NULL;
    if (MultiByteToWideChar(CP_UTF8, 0, s, -1, w, n) <= 0) {
        free(w);
        return NULL;
    }
    return w;
}

int32_t qwen3_file_map_init(Qwen3FileMap* out, const char* path) {
    memset(out, 0, sizeof *out);
    wchar_t* wpath = widen(path);
    if (!wpath) return qwen3_fail(QWEN3_ERR_IO, "%s: cannot open: the path is not valid UTF-8", path);
    HANDLE file = CreateFileW(wpath, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING,
                              FILE_ATTRIBUTE_NORMAL, NULL);
    free(wpath);
    if (file == INVALID_HANDLE_VALUE) {
        return qwen3_fail(QWEN3_ERR_IO, "%s: cannot open (Windows error %lu)", path,
                          (unsigned long)GetLastError());
    }
    if (GetFileType(file) != FILE_TYPE_DISK) {
        CloseHandle(file);
        return qwen3_fail(QWEN3_ERR_IO, "%s: not a regular file (a pipe or a device)", path);
    }
    LARGE_INTEGER size;
    if (!GetFileSizeEx(file, &size)) {
        CloseHandle(file);
        return qwen3_fail(QWEN3_ERR_IO, "%s: cannot read its size (Windows error %lu)", path,
                          (unsigned long)GetLastError());
    }
    out->size = (uint64_t)size.QuadPart;
    if (out->size == 0) {
        CloseHandle(file);
        return QWEN3_OK;
    }
    HANDLE mapping = CreateFileMappingW(file, NULL, PAGE_READONLY, 0, 0, NULL);
    CloseHandle(file); /* the mapping keeps the file open */
    if (!mapping) {
        return qwen3_fail(QWEN3_ERR_IO, "%s: cannot map (Windows error %lu)", path,
                          (unsigned long)GetLastError());
    }
    void* view = MapViewOfFile(mapping, FILE_MAP_READ, 0, 0, 0);
    if (!view) {
        DWORD err = GetLastError();
        CloseHandle(mapping);
        return qwen3_fail(QWEN3_ERR_IO, "%s: cannot map %llu bytes (Windows error %lu)", path,
                          (unsigned long long)out->size, (unsigned long)err);
    }
    out->data = (const uint8_t*)view;
    out->handle = mapping;
    return QWEN3_OK;
}

int32_t qwen3_file_map_check(const Qwen3FileMap* map, const char* path) {
    (void)map;
    (void)path;
    return QWEN3_OK;
}

void qwen3_file_map_deinit(Qwen3FileMap* map) {
    if (map->data) UnmapViewOfFile((LPCVOID)map->data);
    if (map->handle) CloseHandle((HANDLE)map->handle);
    memset(map, 0, sizeof *map);
}

int qwen3_file_map_to_huge_pages(Qwen3FileMap* map) {
    (void)map;
    return 0;
}

uint64_t qwen3_memory_budget(void) { return 0; }

int32_t qwen3_file_probe(const char* path) {
    wchar_t* wpath = widen(path);
    if (!wpath) return qwen3_fail(QWEN3_ERR_IO, "%s: cannot open: the path is not valid UTF-8", path);
    DWORD attr = GetFileAttributesW(wpath);
    free(wpath);
    if (attr == INVALID_FILE_ATTRIBUTES) {
        DWORD err = GetLastError();
        if (err == ERROR_FILE_NOT_FOUND || err == ERROR_PATH_NOT_FOUND) return 0;
        return qwen3_fail(QWEN3_ERR_IO, "%s: cannot open (Windows error %lu)", path,
                          (unsigned long)err);
    }
    if (attr & FILE_ATTRIBUTE_DIRECTORY) {
        return qwen3_fail(QWEN3_ERR_IO, "%s: not a regular file (a folder)", path);
    }
    return 1;
}

static int32_t open_read(const char* path, size_t max_size, FILE** out) {
    *out = NULL;
    wchar_t* wpath = widen(path);
    if (!wpath) return qwen3_fail(QWEN3_ERR_IO, "%s: cannot open: the path is not valid UTF-8", path);
    FILE* f = _wfopen(wpath, L"rb");
    free(wpath);
    if (!f) return qwen3_fail(QWEN3_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    HANDLE h = (HANDLE)_get_osfhandle(_fileno(f));
    LARGE_INTEGER size;
    if (GetFileType(h) != FILE_TYPE_DISK || !GetFileSizeEx(h, &size)) {
        fclose(f);
        return qwen3_fail(QWEN3_ERR_IO, "%s: not a regular file (a pipe or a device)", path);
    }
    if ((uint64_t)size.QuadPart > max_size) {
        fclose(f);
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: %llu bytes, larger than the limit of %zu bytes",
                          path, (unsigned long long)size.QuadPart, max_size);
    }
    *out = f;
    return QWEN3_OK;
}

int32_t qwen3_region_init(Qwen3Region* region, size_t size) {
    memset(region, 0, sizeof *region);
    void* p = VirtualAlloc(NULL, size, MEM_RESERVE, PAGE_NOACCESS);
    if (!p) {
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "cannot reserve %zu bytes of address space",
                          size);
    }
    region->base = (uint8_t*)p;
    region->size = size;
    return QWEN3_OK;
}

int32_t qwen3_region_commit(Qwen3Region* region, size_t offset, size_t len) {
    if (len == 0) return QWEN3_OK;
    if (offset > region->size || len > region->size - offset) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                          "commit of %zu bytes at %zu is outside a region of %zu bytes", len,
                          offset, region->size);
    }
    if (!VirtualAlloc(region->base + offset, len, MEM_COMMIT, PAGE_READWRITE)) {
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "cannot commit %zu bytes (Windows error %lu)",
                          len, (unsigned long)GetLastError());
    }
    return QWEN3_OK;
}

void qwen3_region_deinit(Qwen3Region* region) {
    if (region->base) VirtualFree(region->base, 0, MEM_RELEASE);
    memset(region, 0, sizeof *region);
}

void* qwen3_aligned_alloc(size_t size) {
    if (size == 0) return NULL;
    void* p = _aligned_malloc(size, 64);
    if (p) memset(p, 0, size);
    return p;
}

void qwen3_aligned_free(void* p) {
    if (p) _aligned_free(p);
}

struct Qwen3Mutex {
    SRWLOCK lock;
};

Qwen3Mutex* qwen3_mutex_new(void) {
    Qwen3Mutex* m = (Qwen3Mutex*)malloc(sizeof *m);
    if (!m) {
        qwen3_error_set("out of memory allocating a mutex (%zu bytes)", sizeof *m);
        return NULL;
    }
    InitializeSRWLock(&m->lock);
    return m;
}

void qwen3_mutex_free(Qwen3Mutex* m) { free(m); }
void qwen3_mutex_lock(Qwen3Mutex* m) { AcquireSRWLockExclusive(&m->lock); }
void qwen3_mutex_unlock(Qwen3Mutex* m) { ReleaseSRWLockExclusive(&m->lock); }

void qwen3_library_pin(void) {
    static atomic_int pinned;
    if (atomic_exchange(&pinned, 1)) return;
    HMODULE self;
    /* a handle that is never released: the module stays until the process ends */
    (void)GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_PIN,
                             (LPCWSTR)(void*)&qwen3_library_pin, &self);
}

double qwen3_time_seconds(void) {
    static LARGE_INTEGER freq; /* benign race: every thread writes the same value */
    LARGE_INTEGER now;
    if (freq.QuadPart == 0) QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&now);
    return (double)now.QuadPart / (double)freq.QuadPart;
}

static uint64_t raw_clock_bits(void) {
    LARGE_INTEGER now;
    QueryPerformanceCounter(&now);
    return (uint64_t)now.QuadPart ^ ((uint64_t)GetCurrentProcessId() << 32);
}

#define PATH_SEPARATORS "/\\"

/* ====================================================================================
 * POSIX
 * ================================================================================== */
#else

/* st_mtim is POSIX 2008; macOS names it st_mtimespec. */
static int64_t stat_mtime_ns(const struct stat* st) {
#if defined(__APPLE__)
    return (int64_t)st->st_mtimespec.tv_sec * 1000000000 + st->st_mtimespec.tv_nsec;
#else
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
#endif
}

/* What a path that is not a regular file is, for messages. */
static const char* kind_of(mode_t mode) {
    if (S_ISDIR(mode)) return "a folder";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
#ifdef S_ISSOCK
    if (S_ISSOCK(mode)) return "a socket";
#endif
    return "neither a file nor a folder";
}

static int32_t fail_not_regular(const char* path, mode_t mode) {
    return qwen3_fail(QWEN3_ERR_IO, "%s: not a regular file (%s)", path, kind_of(mode));
}

/*
 * Opens `path` read-only when it is a regular file, refusing anything else before it can
 * block or stream: open() on a FIFO waits for a writer forever, a device such as
 * /dev/zero never ends. stat() (which follows symlinks) comes first so that nothing but
 * a regular file is ever opened; the open is O_NONBLOCK and fstat() checks again, so a
 * FIFO swapped in between cannot block either. Sets *st to the opened file's status.
 */
static int32_t open_regular(const char* path, int* out_fd, struct stat* st) {
    *out_fd = -1;
    if (stat(path, st) != 0) {
        return qwen3_fail(QWEN3_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    if (!S_ISREG(st->st_mode)) return fail_not_regular(path, st->st_mode);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return qwen3_fail(QWEN3_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, st) != 0) {
        int err = errno;
        close(fd);
        return qwen3_fail(QWEN3_ERR_IO, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return fail_not_regular(path, st->st_mode);
    }
    /* blocking reads again (a regular file never blocks, but stdio need not know that) */
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        int err = errno;
        close(fd);
        return qwen3_fail(QWEN3_ERR_IO, "%s: cannot set blocking reads: %s", path, strerror(err));
    }
    *out_fd = fd;
    return QWEN3_OK;
}

int32_t qwen3_file_map_init(Qwen3FileMap* out, const char* path) {
    memset(out, 0, sizeof *out);
    int fd;
    struct stat st;
    int32_t rc = open_regular(path, &fd, &st);
    if (rc != QWEN3_OK) return rc;
    out->size = (uint64_t)st.st_size;
    out->mtime_ns = stat_mtime_ns(&st);
    if ((uint64_t)(size_t)out->size != out->size) {
        close(fd);
        return qwen3_fail(QWEN3_ERR_IO, "%s: %llu bytes do not fit in this address space", path,
                          (unsigned long long)out->size);
    }
    if (out->size == 0) {
        close(fd);
        return QWEN3_OK;
    }
    void* p = mmap(NULL, (size_t)out->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    if (p == MAP_FAILED) {
        close(fd);
        return qwen3_fail(QWEN3_ERR_IO, "%s: cannot map %llu bytes: %s", path,
                          (unsigned long long)out->size, strerror(err));
    }
    out->data = (const uint8_t*)p;
    /* kept open so qwen3_file_map_check can see the mapped file, even after a rename */
    out->handle = (void*)(intptr_t)(fd + 1);
    return QWEN3_OK;
}

int32_t qwen3_file_map_check(const Qwen3FileMap* map, const char* path) {
    if (!map->handle) return QWEN3_OK;
    struct stat st;
    if (fstat((int)((intptr_t)map->handle - 1), &st) != 0) {
        return qwen3_fail(QWEN3_ERR_IO, "%s: cannot stat the mapped file: %s", path,
                          strerror(errno));
    }
    if ((uint64_t)st.st_size != map->size) {
        return qwen3_fail(QWEN3_ERR_IO,
                          "%s: the file changed size since it was loaded (%llu -> %llu bytes); "
                          "reading it now could crash the process, so the model refuses to "
                          "run: load it again (replace model files by renaming a new file "
                          "over them, never by truncating or rewriting them in place)",
                          path, (unsigned long long)map->size, (unsigned long long)st.st_size);
    }
    if (stat_mtime_ns(&st) != map->mtime_ns) {
        return qwen3_fail(QWEN3_ERR_IO,
                          "%s: the file was modified since it was loaded, so the weights in "
                          "memory may mix two files: load it again (replace model files by "
                          "renaming a new file over them, never by rewriting them in place)",
                          path);
    }
    return QWEN3_OK;
}

void qwen3_file_map_deinit(Qwen3FileMap* map) {
    if (map->data) munmap((void*)map->data, map->copy_size ? map->copy_size : (size_t)map->size);
    if (map->handle) close((int)((intptr_t)map->handle - 1));
    memset(map, 0, sizeof *map);
}

#if defined(__linux__)
/* The start (cap - 1 bytes at most) of a small /proc or /sys file, NUL-terminated; empty
 * on failure. */
static void read_small_file(const char* path, char* buf, size_t cap) {
    buf[0] = 0;
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    const ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
}

/* The decimal number at p (after spaces); UINT64_MAX when there is none ("max"). */
static uint64_t parse_u64(const char* p) {
    while (*p == ' ') p++;
    if (*p < '0' || *p > '9') return UINT64_MAX;
    uint64_t v = 0;
    while (*p >= '0' && *p <= '9' && v < UINT64_MAX / 10) v = v * 10 + (uint64_t)(*p++ - '0');
    return v;
}

/* MemAvailable from /proc/meminfo in bytes, 0 when unknown. */
static uint64_t mem_available(void) {
    char buf[4096];
    read_small_file("/proc/meminfo", buf, sizeof buf);
    const char* p = strstr(buf, "MemAvailable:");
    if (!p) return 0;
    const uint64_t kb = parse_u64(p + strlen("MemAvailable:"));
    return kb == UINT64_MAX ? 0 : kb * 1024;
}

/* limit - usage of the memory cgroup this process is in (a container's memory limit),
 * UINT64_MAX when it has no limit or none can be read. cgroup v2: the "0::PATH" line of
 * /proc/self/cgroup, files memory.max and memory.current; v1: the "N:memory:PATH" line,
 * memory.limit_in_bytes and memory.usage_in_bytes. PATH is tried under the mount, then the
 * mount's root (what a container with its own cgroup namespace sees). */
static uint64_t cgroup_headroom(void) {
    char cg[4096];
    read_small_file("/proc/self/cgroup", cg, sizeof cg);
    static const struct {
        const char* tag;   /* the line's controller field, with its colons */
        const char* mount; /* where that hierarchy is mounted */
        const char* limit;
        const char* usage;
    } kinds[2] = {{"0::", "/sys/fs/cgroup", "memory.max", "memory.current"},
                  {":memory:", "/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes"}};
    for (int k = 0; k < 2; k++) {
        const char* line = strstr(cg, kinds[k].tag);
        if (!line || (k == 0 && line != cg && line[-1] != '\n')) continue;
        char path[1024];
        size_t n = 0;
        for (const char* p = line + strlen(kinds[k].tag); *p && *p != '\n' && n + 1 < sizeof path; p++) path[n++] = *p;
        path[n] = 0;
        for (int root = 0; root < 2; root++) {
            char file[1400], text[64];
            snprintf(file, sizeof file, "%s%s/%s", kinds[k].mount, root ? "" : path, kinds[k].limit);
            read_small_file(file, text, sizeof text);
            if (!text[0]) continue;
            const uint64_t limit = parse_u64(text);
            if (limit >= ((uint64_t)1 << 60)) return UINT64_MAX; /* "max", or v1's huge "none" */
            snprintf(file, sizeof file, "%s%s/%s", kinds[k].mount, root ? "" : path, kinds[k].usage);
            read_small_file(file, text, sizeof text);
            const uint64_t usage = text[0] ? parse_u64(text) : UINT64_MAX;
            return usage == UINT64_MAX ? 0 : usage >= limit ? 0 : limit - usage;
        }
    }
    return UINT64_MAX;
}
#endif

uint64_t qwen3_memory_budget(void) {
#if defined(__linux__)
    const uint64_t avail = mem_available(), room = cgroup_headroom();
    return avail < room ? avail : room;
#else
    return 0;
#endif
}

#define HUGE_PAGE_BYTES ((size_t)2 << 20)

int qwen3_file_map_to_huge_pages(Qwen3FileMap* map) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (!map->data || map->copy_size || map->size < 2 * HUGE_PAGE_BYTES || getenv("QWEN3_MMAP")) return 0;
    char thp[256];
    read_small_file("/sys/kernel/mm/transparent_hugepage/enabled", thp, sizeof thp);
    if (!strstr(thp, "[always]") && !strstr(thp, "[madvise]")) return 0;
    const uint64_t avail = qwen3_memory_budget();
    if (avail == 0 || map->size > avail / 2) return 0;
    /* room to align the start to a huge page: the copy's pages are 2 MiB from its first */
    const size_t size = ((size_t)map->size + HUGE_PAGE_BYTES - 1) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    const size_t total = size + HUGE_PAGE_BYTES;
    void* raw = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return 0;
    uint8_t* aligned = (uint8_t*)(((uintptr_t)raw + HUGE_PAGE_BYTES - 1) & ~(uintptr_t)(HUGE_PAGE_BYTES - 1));
    /* the unused ends go back at once */
    const size_t head = (size_t)(aligned - (uint8_t*)raw), tail = total - head - size;
    if (head) munmap(raw, head);
    if (tail) munmap(aligned + size, tail);
    (void)madvise(aligned, size, MADV_HUGEPAGE);
    /* read(), not a copy from the file map: no page of the map becomes resident, so the
     * process never holds the model twice */
    const int fd = (int)((intptr_t)map->handle - 1);
    for (uint64_t off = 0; off < map->size;) {
        const size_t want = map->size - off < ((size_t)16 << 20) ? (size_t)(map->size - off) : ((size_t)16 << 20);
        const ssize_t got = pread(fd, aligned + off, want, (off_t)off);
        if (got <= 0) {
            if (got < 0 && errno == EINTR) continue;
            munmap(aligned, size); /* the file map is still there: keep using it */
            return 0;
        }
        off += (uint64_t)got;
    }
    (void)mprotect(aligned, size, PROT_READ);
    munmap((void*)map->data, (size_t)map->size);
    map->data = aligned;
    map->copy_size = size;
    return 1;
#else
    (void)map;
    return 0;
#endif
}

int32_t qwen3_file_probe(const char* path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        int err = errno;
        if (err != ENOENT) {
            return qwen3_fail(QWEN3_ERR_IO, "%s: cannot open: %s", path, strerror(err));
        }
        /* a symlink whose target is gone is still something someone put there */
        if (lstat(path, &st) == 0) {
            return qwen3_fail(QWEN3_ERR_IO, "%s: cannot open: a symlink to a missing file",
                              path);
        }
        return 0;
    }
    if (!S_ISREG(st.st_mode)) return fail_not_regular(path, st.st_mode);
    return 1;
}

static int32_t open_read(const char* path, size_t max_size, FILE** out) {
    *out = NULL;
    int fd;
    struct stat st;
    int32_t rc = open_regular(path, &fd, &st);
    if (rc != QWEN3_OK) return rc;
    if ((uint64_t)st.st_size > (uint64_t)max_size) {
        close(fd);
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: %llu bytes, larger than the limit of %zu bytes",
                          path, (unsigned long long)st.st_size, max_size);
    }
    FILE* f = fdopen(fd, "rb");
    if (!f) {
        int err = errno;
        close(fd);
        return qwen3_fail(QWEN3_ERR_IO, "%s: cannot open: %s", path, strerror(err));
    }
    *out = f;
    return QWEN3_OK;
}

int32_t qwen3_region_init(Qwen3Region* region, size_t size) {
    memset(region, 0, sizeof *region);
    int flags = MAP_PRIVATE | MAP_ANONYMOUS;
#ifdef MAP_NORESERVE
    flags |= MAP_NORESERVE;
#endif
    void* p = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (p == MAP_FAILED) {
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "cannot reserve %zu bytes: %s", size,
                          strerror(errno));
    }
    region->base = (uint8_t*)p;
    region->size = size;
    return QWEN3_OK;
}

int32_t qwen3_region_commit(Qwen3Region* region, size_t offset, size_t len) {
    /* Anonymous pages are committed by the kernel on first touch. */
    if (offset > region->size || len > region->size - offset) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                          "commit of %zu bytes at %zu is outside a region of %zu bytes", len,
                          offset, region->size);
    }
    return QWEN3_OK;
}

void qwen3_region_deinit(Qwen3Region* region) {
    if (region->base) munmap(region->base, region->size);
    memset(region, 0, sizeof *region);
}

void* qwen3_aligned_alloc(size_t size) {
    if (size == 0) return NULL;
    void* p = NULL;
    if (posix_memalign(&p, 64, size) != 0) return NULL;
    memset(p, 0, size);
    return p;
}

void qwen3_aligned_free(void* p) { free(p); }

struct Qwen3Mutex {
    pthread_mutex_t lock;
};

Qwen3Mutex* qwen3_mutex_new(void) {
    Qwen3Mutex* m = (Qwen3Mutex*)malloc(sizeof *m);
    if (!m) {
        qwen3_error_set("out of memory allocating a mutex (%zu bytes)", sizeof *m);
        return NULL;
    }
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        qwen3_error_set("cannot create a mutex");
        return NULL;
    }
    return m;
}

void qwen3_mutex_free(Qwen3Mutex* m) {
    if (!m) return;
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void qwen3_mutex_lock(Qwen3Mutex* m) { pthread_mutex_lock(&m->lock); }
void qwen3_mutex_unlock(Qwen3Mutex* m) { pthread_mutex_unlock(&m->lock); }

void qwen3_library_pin(void) {
    static atomic_int pinned;
    if (atomic_exchange(&pinned, 1)) return;
#if defined(RTLD_NODELETE) && defined(RTLD_NOLOAD)
    /* The file this function is in (the shared library; the program itself when linked
     * statically), opened again without loading anything and marked never to unload. */
    Dl_info self;
    if (dladdr((void*)&qwen3_library_pin, &self) && self.dli_fname) {
        (void)dlopen(self.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
    }
#endif
}

double qwen3_time_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t raw_clock_bits(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^
           ((uint64_t)getpid() << 32);
}

#define PATH_SEPARATORS "/"

#endif

/* ====================================================================================
 * Portable parts
 * ================================================================================== */

int32_t qwen3_file_read_all(const char* path, size_t max_size, char** out, size_t* out_len) {
    *out = NULL;
    *out_len = 0;
    FILE* f;
    int32_t rc = open_read(path, max_size, &f);
    if (rc != QWEN3_OK) return rc;
    /* the size was checked, but the file may grow while it is read: the loop caps too */
    size_t cap = max_size < 4096 ? max_size : 4096, len = 0;
    char* buf = (char*)malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "%s: out of memory reading %zu bytes", path,
                          cap + 1);
    }
    for (;;) {
        if (len == cap) {
            if (cap >= max_size) {
                /* Full at the limit: the file is too large only if one more byte exists. */
                if (fgetc(f) != EOF) {
                    free(buf);
                    fclose(f);
                    return qwen3_fail(QWEN3_ERR_FORMAT, "%s: larger than the limit of %zu bytes",
                                      path, max_size);
                }
                break;
            }
            size_t ncap = cap * 2 > max_size ? max_size : cap * 2;
            char* nbuf = (char*)realloc(buf, ncap + 1);
            if (!nbuf) {
                free(buf);
                fclose(f);
                return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "%s: out of memory reading %zu bytes",
                                  path, ncap + 1);
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return qwen3_fail(QWEN3_ERR_IO, "%s: read error", path);
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return QWEN3_OK;
}

uint64_t qwen3_time_seed(void) {
    static int anchor; /* its address differs between runs under ASLR */
    uint64_t x = raw_clock_bits() ^ (uint64_t)(uintptr_t)&anchor;
    /* splitmix64 finaliser: nearby clock values give unrelated seeds */
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x ? x : 0x2545F4914F6CDD1Dull;
}

char* qwen3_string_copy(const char* s) {
    size_t n = strlen(s) + 1;
    char* d = (char*)malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

char* qwen3_path_append(const char* path, const char* suffix) {
    size_t a = strlen(path), b = strlen(suffix);
    char* s = (char*)malloc(a + b + 1);
    if (!s) return NULL;
    memcpy(s, path, a);
    memcpy(s + a, suffix, b + 1);
    return s;
}

char* qwen3_path_sibling(const char* path, const char* name) {
    size_t dir_len = 0; /* length of the folder part, separator included */
    for (size_t i = 0; path[i]; i++) {
        if (strchr(PATH_SEPARATORS, path[i])) dir_len = i + 1;
    }
    size_t b = strlen(name);
    char* s = (char*)malloc(dir_len + b + 1);
    if (!s) return NULL;
    memcpy(s, path, dir_len);
    memcpy(s + dir_len, name, b + 1);
    return s;
}
