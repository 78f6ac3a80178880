/*  common/bf.c - errors, logging, clocks, durable file writes and string
    helpers shared by every part of Beamfleet. See bf.h for the contracts. */

#include "bf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <libgen.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const error_names[BF_ERR_COUNT] = {
    [BF_OK] = "ok",
    [BF_ENOMEM] = "out of memory",
    [BF_EINVAL] = "invalid input",
    [BF_EPROTO] = "malformed message",
    [BF_EIO] = "input/output error",
    [BF_ENOSPC] = "no space left on device",
    [BF_ETIMEDOUT] = "timed out",
    [BF_ECUDA] = "CUDA error",
    [BF_ENOENT] = "not found",
    [BF_EEXIST] = "already exists",
    [BF_EPERM] = "not permitted",
    [BF_ECANCELED] = "cancelled",
    [BF_ESTATE] = "invalid state",
    [BF_EDB] = "durable store error",
    [BF_ECHILD] = "child process failed",
    [BF_EUNSUPP] = "not supported",
};

const char *bf_strerror(bf_err_t err)
{
    if ((unsigned)err >= BF_ERR_COUNT || !error_names[err])
        return "unknown error";
    return error_names[err];
}

/* Makes s one line of valid UTF-8 in place, whatever an echoed input value
   held (fuzzing found newlines from a quoted YAML value, UTF-8 cut in two by
   '%.64s', raw bytes of a PLY header): a control byte, or a byte that does
   not start a complete, shortest-form sequence, becomes '?'. Same rules as
   the wire codec's check, so a reason can always be sent in an ERROR. */
static void one_line_utf8(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        if (*p < 0x80) {
            if (*p < 0x20 || *p == 0x7f)
                *p = '?';
            p++;
            continue;
        }
        size_t len = 0;
        uint32_t cp = 0;
        if (*p >= 0xc2 && *p <= 0xdf)
            len = 2, cp = *p & 0x1fu;
        else if (*p >= 0xe0 && *p <= 0xef)
            len = 3, cp = *p & 0x0fu;
        else if (*p >= 0xf0 && *p <= 0xf4)
            len = 4, cp = *p & 0x07u;
        size_t k = 1;
        for (; k < len && (p[k] & 0xc0) == 0x80; k++) /* stops at the NUL */
            cp = (cp << 6) | (p[k] & 0x3f);
        if (len == 0 || k < len || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            *p++ = '?';
            continue;
        }
        p += len;
    }
}

bf_err_t bf_fail(char *err, bf_err_t code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, BF_ERRLEN, fmt, ap);
        va_end(ap);
        one_line_utf8(err);
    }
    return code;
}

/* ---- logging ------------------------------------------------------------ */

static int log_level = -1;
static char log_tag[32] = "beamfleet";

void bf_log_set_level(bf_log_level_t level)
{
    log_level = (int)level;
}

void bf_log_set_tag(const char *tag)
{
    bf_strlcpy(log_tag, tag, sizeof log_tag);
}

bool bf_log_enabled(bf_log_level_t level)
{
    if (log_level < 0) {
        const char *env = getenv("BEAMFLEET_LOG");
        log_level = BF_LOG_INFO;
        if (env) {
            if (!strcmp(env, "debug"))
                log_level = BF_LOG_DEBUG;
            else if (!strcmp(env, "warn"))
                log_level = BF_LOG_WARN;
            else if (!strcmp(env, "error"))
                log_level = BF_LOG_ERROR;
        }
    }
    return (int)level >= log_level;
}

void bf_log(bf_log_level_t level, const char *fmt, ...)
{
    if (!bf_log_enabled(level))
        return;
    static const char *const names[] = {"debug", "info", "warn", "error"};
    char stamp[32];
    bf_iso8601(bf_wall_ms(), stamp);
    /* One write per line so lines from concurrent processes do not interleave. */
    char line[2048];
    int n =
        snprintf(line, sizeof line, "%s %s[%d] %s: ", stamp, log_tag, (int)getpid(), names[level]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line - 1)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t rc = write(STDERR_FILENO, line, (size_t)n);
    (void)rc;
}

/* ---- clocks ------------------------------------------------------------- */

int64_t bf_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void bf_sched_batch(const char *who)
{
    struct sched_param param = {.sched_priority = 0};
    if (sched_setscheduler(0, SCHED_BATCH, &param) != 0)
        bf_warn("%s: SCHED_BATCH refused (%s); the scheduling policy stays as started", who,
                strerror(errno));
}

void bf_wake_init(bf_wake_t *s)
{
    s->up = 0;
    s->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->fd < 0)
        bf_warn("no eventfd (%s): a stop is seen at the next wake-up", strerror(errno));
}

void bf_wake_raise(bf_wake_t *s)
{
    bf_flag_raise(&s->up);
    if (s->fd >= 0) {
        int saved = errno; /* a signal handler's write must not change it */
        uint64_t one = 1;
        ssize_t n = write(s->fd, &one, sizeof one); /* EAGAIN: readable already */
        (void)n;
        errno = saved;
    }
}

void bf_wake_close(bf_wake_t *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

double bf_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int64_t bf_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void bf_timestamp(char out[16])
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(out, 16, "%Y%m%d_%H%M%S", &tm);
}

void bf_iso8601(int64_t wall_ms, char out[32])
{
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char base[24];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%s.%03dZ", base, (int)(wall_ms % 1000));
}

/* ---- files -------------------------------------------------------------- */

static bf_err_t errno_code(int e)
{
    switch (e) {
    case ENOSPC:
    case EDQUOT:
        return BF_ENOSPC;
    case ENOENT:
        return BF_ENOENT;
    case EACCES:
    case EPERM:
    case EROFS:
        return BF_EPERM;
    case ENOMEM:
        return BF_ENOMEM;
    default:
        return BF_EIO;
    }
}

static bf_err_t fsync_dir_of(const char *path, char *err)
{
    char *copy = bf_strdup(path);
    if (!copy)
        return BF_ENOMEM;
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    bf_err_t rc = BF_OK;
    if (fd < 0 || fsync(fd) != 0)
        rc = bf_fail(err, errno_code(errno), "%s: fsync of directory: %s", dir, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(copy);
    return rc;
}

bf_err_t bf_write_atomic(const char *path, const void *data, size_t len, char *err)
{
    return bf_write_atomic_mode(path, data, len, 0644, err);
}

bf_err_t bf_write_atomic_mode(const char *path, const void *data, size_t len, unsigned mode,
                              char *err)
{
    /* pid + random part: two threads (or processes) writing the same file
       never share a temp file */
    char rnd[33];
    bf_uuid(rnd);
    char *tmp = bf_asprintf("%s.tmp.%d.%.8s", path, (int)getpid(), rnd);
    if (!tmp)
        return BF_ENOMEM;
    bf_err_t rc = BF_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)mode);
    if (fd < 0) {
        rc = bf_fail(err, errno_code(errno), "%s: %s", tmp, strerror(errno));
        goto cleanup;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = bf_fail(err, errno_code(errno), "%s: write: %s", tmp, strerror(errno));
            goto cleanup;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) != 0) {
        rc = bf_fail(err, errno_code(errno), "%s: fsync: %s", tmp, strerror(errno));
        goto cleanup;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = bf_fail(err, errno_code(errno), "%s: close: %s", tmp, strerror(errno));
        goto cleanup;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = bf_fail(err, errno_code(errno), "%s: rename: %s", path, strerror(errno));
        goto cleanup;
    }
    rc = fsync_dir_of(path, err);
cleanup:
    if (fd >= 0)
        close(fd);
    if (rc != BF_OK)
        unlink(tmp);
    free(tmp);
    return rc;
}

bf_err_t bf_append(int fd, const void *data, size_t len, char *err)
{
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return bf_fail(err, errno_code(errno), "append: %s", strerror(errno));
        p += n;
        left -= (size_t)n;
    }
    return BF_OK;
}

bf_err_t bf_append_sync(int fd, const void *data, size_t len, char *err)
{
    bf_err_t rc = bf_append(fd, data, len, err);
    if (rc != BF_OK)
        return rc;
    if (fdatasync(fd) != 0)
        return bf_fail(err, errno_code(errno), "fdatasync: %s", strerror(errno));
    return BF_OK;
}

bf_err_t bf_mkdir_p(const char *path, char *err)
{
    if (!path || !*path)
        return bf_fail(err, BF_EINVAL, "mkdir: empty path");
    char *copy = bf_strdup(path);
    if (!copy)
        return BF_ENOMEM;
    bf_err_t rc = BF_OK;
    for (char *p = copy + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
                rc = bf_fail(err, errno_code(errno), "%s: mkdir: %s", copy, strerror(errno));
                break;
            }
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    if (rc == BF_OK && !bf_is_dir(path))
        rc = bf_fail(err, BF_EIO, "%s: not a directory", path);
    free(copy);
    return rc;
}

/* Reads the regular file open at fd (closed here) whole: the half of
   bf_read_file and bf_read_file_beneath after the open. */
static bf_err_t read_fd(int fd, const char *path, size_t max, char **data, size_t *len, char *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return bf_fail(err, BF_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return bf_fail(err, BF_EINVAL, "%s: file too large (%lld bytes, limit %zu)", path,
                       (long long)st.st_size, max);
    }
    size_t cap = (size_t)st.st_size;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return BF_ENOMEM;
    }
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return bf_fail(err, errno_code(e), "%s: read: %s", path, strerror(e));
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    *data = buf;
    if (len)
        *len = got;
    return BF_OK;
}

bf_err_t bf_read_file(const char *path, size_t max, char **data, size_t *len, char *err)
{
    *data = NULL;
    if (len)
        *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bf_fail(err, errno_code(errno), "%s: %s", path, strerror(errno));
    return read_fd(fd, path, max, data, len, err);
}

/* openat2(2) with RESOLVE_BENEATH (Linux 5.6) resolves the path in one
   step inside the directory, so a symlink swapped in between a check and
   the open cannot lead out. Older kernels get realpath and a prefix check,
   then an open that follows no further link (O_NOFOLLOW). */
#ifndef RESOLVE_BENEATH
#define RESOLVE_NO_MAGICLINKS 0x02
#define RESOLVE_BENEATH       0x08
#endif
struct bf_open_how {
    uint64_t flags, mode, resolve;
};

static int open_beneath(const char *root, const char *rel)
{
#ifdef SYS_openat2
    int dfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    struct bf_open_how how = {.flags = O_RDONLY | O_CLOEXEC,
                              .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
    int got = (int)syscall(SYS_openat2, dfd, rel, &how, sizeof how);
    int saved = errno;
    close(dfd);
    errno = saved;
    if (got >= 0 || errno != ENOSYS)
        return got;
#endif
    char *full = bf_asprintf("%s/%s", root, rel), *real = NULL;
    int fd = -1;
    if (!full)
        errno = ENOMEM;
    else if (bf_resolves_beneath(root, full, &real))
        fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    int e = errno;
    free(full);
    free(real);
    errno = e;
    return fd;
}

bool bf_path_inside(const char *root, const char *path)
{
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/')
        return path[0] == '/';
    return !strncmp(path, root, n) && (path[n] == '\0' || path[n] == '/');
}

bool bf_resolves_beneath(const char *root, const char *path, char **resolved)
{
    if (resolved)
        *resolved = NULL;
    errno = 0;
    char *real_root = realpath(root, NULL), *real = real_root ? realpath(path, NULL) : NULL;
    bool inside = false;
    if (!real_root || !real) {
        errno = errno ? errno : ENOMEM;
    } else if (!(inside = bf_path_inside(real_root, real))) {
        errno = EXDEV;
    }
    free(real_root);
    if (inside && resolved)
        *resolved = real;
    else
        free(real);
    return inside;
}

bf_err_t bf_read_file_beneath(const char *root, const char *path, size_t max, char **data,
                              size_t *len, char *err)
{
    *data = NULL;
    if (len)
        *len = 0;
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/')
        n--;
    if (strncmp(path, root, n) != 0 || path[n] != '/')
        return bf_fail(err, BF_EPERM, "%s: not inside %s", path, root);
    const char *rel = path + n;
    while (*rel == '/')
        rel++;
    char *dir = bf_strdup(root);
    if (!dir)
        return BF_ENOMEM;
    dir[n] = '\0';
    int fd = open_beneath(dir, rel);
    int e = errno;
    free(dir);
    if (fd >= 0)
        return read_fd(fd, path, max, data, len, err);
    if (e == EXDEV || e == ELOOP)
        return bf_fail(err, BF_EPERM,
                       "%s: leads out of %s (a symbolic link is followed only "
                       "inside it)",
                       rel, root);
    return bf_fail(err, errno_code(e), "%s: %s", path, strerror(e));
}

bool bf_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---- strings ------------------------------------------------------------ */

char *bf_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

char *bf_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = NULL;
    int n = vasprintf(&out, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : out;
}

char *bf_strlcpy(char *dst, const char *src, size_t n)
{
    if (n == 0)
        return dst;
    size_t len = src ? strnlen(src, n - 1) : 0;
    if (len)
        memcpy(dst, src, len);
    dst[len] = '\0';
    return dst;
}

bool bf_safe_name(const char *name)
{
    if (!name || !*name || !strcmp(name, ".") || !strcmp(name, ".."))
        return false;
    size_t len = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++, len++) {
        if (*p == '/' || *p < 0x20 || *p == 0x7f || len >= 255)
            return false;
    }
    return true;
}

const char *bf_hostname(void)
{
    static char name[256];
    if (!name[0] && gethostname(name, sizeof name - 1) != 0)
        bf_strlcpy(name, "localhost", sizeof name);
    return name;
}

bf_err_t bf_self_exe(char *buf, size_t n)
{
    if (!buf || n == 0)
        return BF_EINVAL;
    buf[0] = '\0';
    ssize_t len = readlink("/proc/self/exe", buf, n);
    if (len < 0)
        return BF_ENOENT;
    if ((size_t)len >= n) {
        buf[0] = '\0';
        return BF_EINVAL;
    }
    buf[len] = '\0';
    static const char deleted[] = " (deleted)";
    size_t dl = sizeof deleted - 1;
    if (buf[0] != '/' || ((size_t)len > dl && !strcmp(buf + len - dl, deleted))) {
        buf[0] = '\0';
        return BF_ENOENT;
    }
    return BF_OK;
}

/* n random bytes from getrandom(2). */
static void random_bytes(unsigned char *raw, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(raw + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            /* getrandom cannot fail on Linux >= 3.17 after boot; keep going
               with a weaker, still unique-enough source rather than abort. */
            uint64_t x = (uint64_t)bf_wall_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)clock();
            for (; got < n; got++, x = x * 6364136223846793005ull + 1)
                raw[got] = (unsigned char)(x >> 56);
            break;
        }
        got += (size_t)r;
    }
}

void bf_uuids(char *out, size_t stride, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[64 * 16];
    for (size_t i = 0; i < n; i++) {
        if (i % 64 == 0)
            random_bytes(raw, (n - i < 64 ? n - i : 64) * 16);
        const unsigned char *r = raw + (i % 64) * 16;
        char *o = out + i * stride;
        for (size_t k = 0; k < 16; k++) {
            o[2 * k] = hex[r[k] >> 4];
            o[2 * k + 1] = hex[r[k] & 15];
        }
        o[32] = '\0';
    }
}

void bf_uuid(char out[33])
{
    bf_uuids(out, 33, 1);
}

/* ---- growable arrays ------------------------------------------------------ */

size_t bf_grow_cap(size_t cap, size_t need, size_t min_cap)
{
    if (need <= cap)
        return cap;
    size_t c = cap ? cap : (min_cap ? min_cap : 1);
    while (c < need) {
        if (c > SIZE_MAX / 2)
            return 0;
        c *= 2;
    }
    return c;
}

bool bf_resize(void *items, size_t n, size_t elem)
{
    if (n == 0 || elem == 0 || n > SIZE_MAX / elem)
        return false;
    void *p; /* *items is a T *: read and written as bytes, not through a void ** */
    memcpy(&p, items, sizeof p);
    void *q = realloc(p, n * elem);
    if (!q)
        return false;
    memcpy(items, &q, sizeof q);
    return true;
}

bool bf_grow(void *items, size_t *cap, size_t need, size_t elem, size_t min_cap)
{
    if (need <= *cap)
        return true;
    size_t c = bf_grow_cap(*cap, need, min_cap);
    if (!c || !bf_resize(items, c, elem))
        return false;
    *cap = c;
    return true;
}

/* ---- a growing text buffer ------------------------------------------------ */

void bf_buf_put(bf_buf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (n > SIZE_MAX - b->len - 1 || !bf_grow(&b->p, &b->cap, b->len + n + 1, 1, 4096)) {
        b->oom = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void bf_buf_puts(bf_buf_t *b, const char *s)
{
    bf_buf_put(b, s, strlen(s));
}

void bf_buf_printf(bf_buf_t *b, const char *fmt, ...)
{
    /* Formats in place; when the text does not fit, grows once to its size
       and formats again (the metrics page is thousands of these). */
    for (int pass = 0; pass < 2 && !b->oom; pass++) {
        size_t room = b->p ? b->cap - b->len : 0;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        if (!bf_grow(&b->p, &b->cap, b->len + (size_t)n + 1, 1, 4096))
            b->oom = true;
    }
}

bool bf_proc_stat(pid_t pid, bf_proc_t *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    /* comm, in parentheses, may hold spaces and parentheses: read after the
       last ')'. Then: state ppid pgrp session tty_nr tpgid flags minflt
       cminflt majflt cmajflt utime stime cutime cstime priority nice
       num_threads itrealvalue starttime. */
    const char *p = strrchr(buf, ')');
    int ppid, pgid;
    if (!p ||
        sscanf(p + 1,
               " %c %d %d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
               &out->state, &ppid, &pgid, &out->start) != 4)
        return false;
    out->ppid = ppid;
    out->pgid = pgid;
    return true;
}

double bf_percentile(const double *v, size_t n, double pct)
{
    if (n == 0)
        return NAN;
    double pos = pct / 100.0 * (double)(n - 1);
    if (!(pos > 0.0)) /* also a NAN pct */
        return v[0];
    if (pos >= (double)(n - 1))
        return v[n - 1];
    size_t i = (size_t)pos;
    return v[i] + (v[i + 1] - v[i]) * (pos - (double)i);
}

bf_err_t bf_lock_file(const char *path, int *fd, long *holder, char *err)
{
    *fd = -1;
    if (holder)
        *holder = 0;
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (f < 0)
        return bf_fail(err, BF_EIO, "%s: %s", path, strerror(errno));
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char text[32] = "";
        ssize_t n = pread(f, text, sizeof text - 1, 0);
        text[n > 0 ? n : 0] = '\0';
        close(f);
        if (e != EWOULDBLOCK)
            return bf_fail(err, BF_EIO, "%s: cannot lock: %s", path, strerror(e));
        if (holder)
            *holder = strtol(text, NULL, 10);
        return bf_fail(err, BF_EEXIST, "%s: held by another process", path);
    }
    char text[32];
    int len = snprintf(text, sizeof text, "%ld\n", (long)getpid());
    if (ftruncate(f, 0) != 0 || pwrite(f, text, (size_t)len, 0) != len)
        bf_warn("%s: cannot write the pid: %s", path, strerror(errno)); /* the lock holds */
    *fd = f;
    return BF_OK;
}
