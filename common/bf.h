/*  common/bf.h - what every part of Beamfleet shares: the one error
    vocabulary, logging, clocks, durable file writes and small string helpers.

    Everything here is plain C11 + POSIX and has no dependency beyond libc and
    jansson (for the JSON helpers). Functions that can fail return bf_err_t and
    are marked BF_MUST_CHECK; a human-readable detail, when there is one, is
    written into a caller-supplied buffer of BF_ERRLEN bytes. */

#ifndef BF_H_INCLUDED
#define BF_H_INCLUDED

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <stdio.h>

#define BF_VERSION "0.1.0"
/* The radio engine's results: raised whenever a change can move a map, a
   gain or an optimum (conventions, physics, search). Part of every boresight
   task's content key (bf_task_key), so a resumed campaign never takes a
   result of an older engine. */
#define BF_ENGINE_VERSION "0.1.0-engine.3" /* .3: closest-hit ties by triangle index */
#define BF_ERRLEN         512
#define BF_MUST_CHECK     __attribute__((warn_unused_result))
#define BF_PRINTF(f, a)   __attribute__((format(printf, f, a)))
#define BF_ARRAY_LEN(a)   (sizeof(a) / sizeof((a)[0]))

/* The one error vocabulary, returned everywhere and never ignored. */
typedef enum {
    BF_OK = 0,
    BF_ENOMEM,    /* allocation failed */
    BF_EINVAL,    /* bad argument or bad input (config, scene, flag) */
    BF_EPROTO,    /* malformed or unexpected network message */
    BF_EIO,       /* file or socket I/O failed */
    BF_ENOSPC,    /* disk full */
    BF_ETIMEDOUT, /* deadline passed */
    BF_ECUDA,     /* CUDA runtime or launch failure */
    BF_ENOENT,    /* no such file, job, task or peer */
    BF_EEXIST,    /* already exists */
    BF_EPERM,     /* not allowed (role, exec allow-list, path escape) */
    BF_ECANCELED, /* cancelled by a user */
    BF_ESTATE,    /* operation not valid in the current state */
    BF_EDB,       /* durable store failure */
    BF_ECHILD,    /* a child process failed */
    BF_EUNSUPP,   /* not supported by this build or backend */
    BF_ERR_COUNT
} bf_err_t;

/* Returns a static, lower-case description of err; never NULL. */
const char *bf_strerror(bf_err_t err);

/* Formats into err (BF_ERRLEN bytes, may be NULL) and returns code, so a
   failure site is one line: return bf_fail(err, BF_EINVAL, "%s:%d: ...", ...) */
bf_err_t bf_fail(char *err, bf_err_t code, const char *fmt, ...) BF_PRINTF(3, 4);

/* ---- logging ------------------------------------------------------------ */
typedef enum { BF_LOG_DEBUG, BF_LOG_INFO, BF_LOG_WARN, BF_LOG_ERROR } bf_log_level_t;

/* Process-wide: the minimum level printed and a tag such as "broker". The log
   goes to stderr, one line per call, prefixed with time, tag and pid. The level
   also comes from $BEAMFLEET_LOG (debug|info|warn|error) at first use. */
void bf_log_set_level(bf_log_level_t level);
void bf_log_set_tag(const char *tag);
bool bf_log_enabled(bf_log_level_t level);
void bf_log(bf_log_level_t level, const char *fmt, ...) BF_PRINTF(2, 3);
#define bf_debug(...) bf_log(BF_LOG_DEBUG, __VA_ARGS__)
#define bf_info(...)  bf_log(BF_LOG_INFO, __VA_ARGS__)
#define bf_warn(...)  bf_log(BF_LOG_WARN, __VA_ARGS__)
#define bf_error(...) bf_log(BF_LOG_ERROR, __VA_ARGS__)

/* ---- clocks ------------------------------------------------------------- */
int64_t bf_mono_ms(void); /* monotonic milliseconds, for deadlines */
double bf_mono_s(void);   /* monotonic seconds as a double, for timings */
/* A flag that one thread raises and another polls (a task's cancel, a
   worker's stop): relaxed atomic accesses, so that an int shared by two
   threads is no data race (C11 5.1.2.4), in C and in nvcc's host C++ alike. */
static inline void bf_flag_raise(volatile int *flag)
{
    __atomic_store_n(flag, 1, __ATOMIC_RELAXED);
}
static inline bool bf_flag_up(const volatile int *flag)
{
    return flag && __atomic_load_n(flag, __ATOMIC_RELAXED) != 0;
}

/* A flag that wakes a loop asleep in poll(2): raising it also makes an
   eventfd readable, which the loop polls with its sockets (a stop asked
   of the broker or the collector, a signal to the worker supervisor). A
   flag alone is seen only when the poll returns: one raised from another
   thread, or by a signal that lands while zmq_poll is between its own
   checks of the sockets (it then sleeps on, the signal spent), leaves the
   loop asleep until its timeout (up to a quarter of a heartbeat interval:
   `beamfleet run` waited 220 ms for its broker in one exit of five).
   bf_wake_raise is async-signal-safe. */
typedef struct {
    volatile int up;
    int fd; /* the eventfd; -1 when none could be made (the flag still works) */
} bf_wake_t;
/* fd -1 and a warning when the kernel gives no eventfd (a stop is then
   seen at the loop's next wake-up, as with a flag alone). */
void bf_wake_init(bf_wake_t *s);
void bf_wake_raise(bf_wake_t *s);
static inline bool bf_wake_up(const bf_wake_t *s)
{
    return s && bf_flag_up(&s->up);
}
void bf_wake_close(bf_wake_t *s);

/* Sets the calling thread to SCHED_BATCH (sched(7): no preemption on
   wake-up, the same share of the CPU, the nice value unchanged); the
   threads and processes it starts afterwards inherit it. A refusal is a
   warning that names whose policy stays as it was (who). */
void bf_sched_batch(const char *who);

/* numpy.percentile(v, pct) with linear interpolation of n values sorted
   ascending: NAN for n == 0; pct outside [0, 100] (or NAN) gives the ends.
   The one copy the engine's objectives and the collector's reports share. */
double bf_percentile(const double *sorted, size_t n, double pct);
int64_t bf_wall_ms(void); /* wall-clock milliseconds since the epoch */
/* Writes local time as YYYYmmdd_HHMMSS (16 bytes with NUL) into out. */
void bf_timestamp(char out[16]);
/* Writes wall time as ISO 8601 UTC (e.g. 2026-11-24T14:55:09.123Z). */
void bf_iso8601(int64_t wall_ms, char out[32]);

/* ---- files -------------------------------------------------------------- */
/* Writes data to path so that a crash at any moment leaves either the old or
   the new complete file: temp file in the same directory, fsync, rename,
   fsync of the directory. BF_ENOSPC when the disk is full. */
bf_err_t bf_write_atomic(const char *path, const void *data, size_t len, char *err) BF_MUST_CHECK;
/* The same with the new file's mode (before umask), e.g. 0600 for a secret. */
bf_err_t bf_write_atomic_mode(const char *path, const void *data, size_t len, unsigned mode,
                              char *err) BF_MUST_CHECK;
/* Appends data (every byte, or an error). fd must be open with O_APPEND. */
bf_err_t bf_append(int fd, const void *data, size_t len, char *err) BF_MUST_CHECK;
/* Appends data and fdatasyncs. fd must be open with O_APPEND. */
bf_err_t bf_append_sync(int fd, const void *data, size_t len, char *err) BF_MUST_CHECK;
/* mkdir -p with mode 0755. */
bf_err_t bf_mkdir_p(const char *path, char *err) BF_MUST_CHECK;
/* Reads a whole file (at most max bytes) into a NUL-terminated heap buffer. */
bf_err_t bf_read_file(const char *path, size_t max, char **data, size_t *len,
                      char *err) BF_MUST_CHECK;
/* The same for a file that must stay inside root: path is root/RELATIVE, and
   every component of RELATIVE (symbolic links included) must resolve inside
   root. BF_EPERM, "RELATIVE: leads out of ROOT", when it does not. */
bf_err_t bf_read_file_beneath(const char *root, const char *path, size_t max, char **data,
                              size_t *len, char *err) BF_MUST_CHECK;
/* True when path is root or below it, both absolute and already resolved
   (a string test: "/a/bc" is not inside "/a/b"). */
bool bf_path_inside(const char *root, const char *path);
/* True when path exists and resolves (symbolic links followed) to root or
   to something inside it; *resolved (may be NULL) then holds the resolved
   path (free it). False with errno EXDEV when it leads out, or as realpath
   left it (ENOENT, ...) when it cannot be resolved. */
bool bf_resolves_beneath(const char *root, const char *path, char **resolved);
/* What /proc/PID/stat says of a process that the supervisor and `run`
   need to find and tell apart the processes of a tree. */
typedef struct {
    char state;               /* R, S, Z, ... */
    pid_t ppid, pgid;         /* parent, process group */
    unsigned long long start; /* start time in clock ticks: a reused pid differs */
} bf_proc_t;
/* Reads pid's entry; false when it is gone (or /proc is not there). */
bool bf_proc_stat(pid_t pid, bf_proc_t *out);
/* One process at a time: an exclusive flock(2) on the file at path
   (created 0600), held while *fd stays open, so a process killed with
   SIGKILL frees it too; the file then holds this pid. BF_EEXIST when another
   process holds it (*holder, may be NULL: its pid, 0 when unknown), BF_EIO
   when it cannot be opened or locked; *fd is -1 then. */
bf_err_t bf_lock_file(const char *path, int *fd, long *holder, char *err) BF_MUST_CHECK;
/* True if path is a directory. */
bool bf_is_dir(const char *path);

/* ---- growable arrays ------------------------------------------------------ */
/* The one way Beamfleet grows an array. The caller keeps the pointer, the
   count and the capacity (in elements) in its own struct, typed, and before
   storing element number need - 1 calls

       if (!bf_grow(&s->items, &s->cap, s->count + 1, sizeof *s->items, 16))
           return BF_ENOMEM;

   items is the address of any object pointer (T **); the capacity doubles
   from min_cap, so n appends cost O(n) copies; the byte size is checked for
   overflow; on failure *items and *cap are left as they were (the array is
   still whole). Several arrays that share one capacity take the new
   capacity from bf_grow_cap once and bf_resize each. (A macro-typed vector
   would hide the struct layout that the broker's and the engine's hot loops
   index directly; this keeps them plain arrays.) */
bool bf_grow(void *items, size_t *cap, size_t need, size_t elem, size_t min_cap) BF_MUST_CHECK;
/* The capacity bf_grow picks for need elements: cap when need <= cap, else
   min_cap (at least 1) doubled until it holds need; 0 on overflow. */
size_t bf_grow_cap(size_t cap, size_t need, size_t min_cap);
/* Reallocates *items (the address of a T *) to n >= 1 elements of size elem;
   false, with *items untouched, on overflow or allocation failure. */
bool bf_resize(void *items, size_t n, size_t elem) BF_MUST_CHECK;

/* ---- a growing text buffer ------------------------------------------------ */
typedef struct {
    char *p; /* NUL-terminated text, or NULL while empty; free() it */
    size_t len, cap;
    bool oom; /* an append failed: the text is incomplete, later appends do nothing */
} bf_buf_t;

/* Appends n bytes of s. */
void bf_buf_put(bf_buf_t *b, const char *s, size_t n);
/* Appends a C string. */
void bf_buf_puts(bf_buf_t *b, const char *s);
/* Appends printf-formatted text. */
void bf_buf_printf(bf_buf_t *b, const char *fmt, ...) BF_PRINTF(2, 3);

/* ---- strings ------------------------------------------------------------ */
/* strdup that returns NULL for NULL. */
char *bf_strdup(const char *s);
/* malloc'ed printf; NULL on allocation failure. */
char *bf_asprintf(const char *fmt, ...) BF_PRINTF(1, 2);
/* Copies src into dst of size n, always NUL-terminated; returns dst. */
char *bf_strlcpy(char *dst, const char *src, size_t n);
/* True if name is a safe single path component: non-empty, at most 255
   bytes, no '/', not "." or "..", no control characters. Scene names from the
   network must pass this before they are joined to a scene root. */
bool bf_safe_name(const char *name);
/* This host's name (cached), never NULL. */
const char *bf_hostname(void);
/* The absolute path of this process's executable (readlink of
   /proc/self/exe) into buf of n bytes, so a program can re-execute itself by
   its real name (ps and top then show it, not "exe"). BF_ENOENT when the
   link cannot be read or the file was deleted or replaced since it started
   (" (deleted)"), BF_EINVAL when it does not fit; buf is "" then. */
bf_err_t bf_self_exe(char *buf, size_t n) BF_MUST_CHECK;

/* A random 128-bit identifier as 32 lower-case hex characters + NUL, from
   getrandom(2). */
void bf_uuid(char out[33]);
/* n such identifiers, out[i * stride] each (stride >= 33), from one
   getrandom(2) call per 64 of them rather than one each (the broker names
   every task of a job of a million scenes). */
void bf_uuids(char *out, size_t stride, size_t n);

#endif
