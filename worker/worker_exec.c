/*  worker/worker_exec.c - the exec task (DESIGN section 3): runs an allowed
    program on a scene in its own process group, with CUDA_VISIBLE_DEVICES,
    BEAMFLEET_SCENE and BEAMFLEET_GPU_ID set; the last non-empty line of its
    stdout by the time its main process exits is the result (at most
    WORKER_RESULT_MAX bytes). The pipes and the main process (a pidfd, which
    turns readable when it exits) are watched with one poll(), so nothing
    waits on a timer between a task's exit and its result; once it has
    exited, what is readable is drained
    and the rest of its group killed, so a background child that keeps
    stdout open cannot hold the result back. A deadline or a cancel kills
    the whole process group (SIGTERM, then SIGKILL after 2 s). The allow
    list is checked against the program, or against the script when the
    program is, by its resolved path, one of the host's interpreters (on
    its PATH, or given with --interpreter), never
    against any argv[1]; what was checked is what is executed. */

#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1u << 2) /* linux/close_range.h, Linux 5.11 */
#endif

#define ERR_KEEP       4096  /* bytes of stderr kept for the reason */
#define KILL_WAIT_MS   2000  /* SIGTERM -> SIGKILL */
#define CHUNK          65536 /* one read from a pipe */
#define READS_PER_WAKE 64    /* reads per pipe per wake-up: the deadline is checked between */
#define DRAIN_READS    1024  /* after the main process exits: at most 64 MiB more */
#define EXCERPT        60    /* bytes of a refused result line quoted in the reason */
#define PY_MINOR_MAX   40    /* python3.0 .. python3.40 */

extern char **environ;

/* Interpreters whose first argument is the program that matters; they
   count only as found on the worker's PATH, or as listed in the worker's
   own `interpreters` (is_interpreter). */
static const char *const interpreters[] = {"python", "python2", "python3", "sh",
                                           "bash",   "dash",    "perl",    "ruby",
                                           "node",   "Rscript", "julia",   "pypy3"};

static const char *search_path(void)
{
    const char *path = getenv("PATH");
    return path && *path ? path : "/usr/local/bin:/usr/bin:/bin";
}

/* dir (n bytes of it) + "/" + prog into buf; false when it does not fit. */
static bool join(char *buf, size_t size, const char *dir, size_t n, const char *prog)
{
    size_t len = strlen(prog);
    if (n == 0 || n + len + 2 > size)
        return false;
    memcpy(buf, dir, n);
    buf[n] = '/';
    memcpy(buf + n + 1, prog, len + 1);
    return true;
}

/* The path execvp would run for prog (prog itself when it has a '/', else
   the first executable PATH entry), malloc'ed, or NULL. */
static char *find_program(const char *prog)
{
    if (!prog || !*prog)
        return NULL;
    if (strchr(prog, '/'))
        return access(prog, X_OK) == 0 ? bf_strdup(prog) : NULL;
    char buf[PATH_MAX];
    for (const char *p = search_path(); *p;) {
        size_t n = strcspn(p, ":");
        if (join(buf, sizeof buf, p, n, prog) && access(buf, X_OK) == 0)
            return bf_strdup(buf);
        p += n;
        if (*p == ':')
            p++;
    }
    return NULL;
}

/* The absolute real path of a program as execvp would find it, or NULL. */
static char *resolve(const char *prog)
{
    char *found = find_program(prog);
    char *real = found ? realpath(found, NULL) : NULL;
    free(found);
    return real;
}

static char *resolve(const char *prog);

/* True when real (a resolved path) is the real path of an interpreter the
   worker was given (--interpreter, worker.interpreters), or of one found in
   any directory of the worker's PATH. */
static bool is_interpreter(const worker_task_ctx_t *ctx, const char *real)
{
    if (!real)
        return false;
    for (size_t i = 0; i < ctx->interpreter_count; i++) {
        char *listed = ctx->interpreters[i] ? resolve(ctx->interpreters[i]) : NULL;
        bool same = listed && !strcmp(listed, real);
        free(listed);
        if (same)
            return true;
    }
    char buf[PATH_MAX], name[32], got[PATH_MAX];
    size_t count = BF_ARRAY_LEN(interpreters) + PY_MINOR_MAX + 1;
    for (const char *p = search_path(); *p;) {
        size_t n = strcspn(p, ":");
        for (size_t k = 0; k < count; k++) {
            if (k < BF_ARRAY_LEN(interpreters))
                bf_strlcpy(name, interpreters[k], sizeof name);
            else
                snprintf(name, sizeof name, "python3.%zu", k - BF_ARRAY_LEN(interpreters));
            if (join(buf, sizeof buf, p, n, name) && access(buf, X_OK) == 0 && realpath(buf, got) &&
                !strcmp(got, real))
                return true;
        }
        p += n;
        if (*p == ':')
            p++;
    }
    return false;
}

/* arg matches an allow-list entry: the same string, or the same real path.
   A program is found as execvp finds it; a script (an interpreter's
   argument) as the interpreter opens it, relative to the working directory. */
static bool in_list(const worker_task_ctx_t *ctx, const char *arg, bool script)
{
    for (size_t i = 0; i < ctx->allow_exec_count; i++)
        if (ctx->allow_exec[i] && !strcmp(ctx->allow_exec[i], arg))
            return true; /* the same string: no path to resolve */
    char *real = script ? realpath(arg, NULL) : resolve(arg);
    bool match = false;
    for (size_t i = 0; i < ctx->allow_exec_count && !match; i++) {
        const char *ok = ctx->allow_exec[i];
        if (!ok)
            continue;
        char *ok_real = resolve(ok);
        match = real && ok_real && !strcmp(real, ok_real);
        free(ok_real);
    }
    free(real);
    return match;
}

/* The program itself is allowed, or it is one of the host's interpreters
   (prog: the path execvp finds, or NULL) and its script is. */
static bool allowed(const worker_task_ctx_t *ctx, char *const argv[], const char *prog)
{
    if (in_list(ctx, argv[0], false))
        return true;
    char *real0 = prog ? realpath(prog, NULL) : NULL;
    bool ok = argv[1] && is_interpreter(ctx, real0) && in_list(ctx, argv[1], true);
    free(real0);
    return ok;
}

/* Replaces {scene_dir}, {scene} and {output} in s; NULL on ENOMEM. */
static char *substitute(const char *s, const worker_task_ctx_t *ctx)
{
    const char *keys[3] = {"{scene_dir}", "{scene}", "{output}"};
    const char *vals[3] = {ctx->scene_dir, ctx->scene, ctx->job->output ? ctx->job->output : ""};
    size_t cap = strlen(s) + 1;
    for (int k = 0; k < 3; k++)
        for (const char *p = strstr(s, keys[k]); p; p = strstr(p + strlen(keys[k]), keys[k]))
            cap += strlen(vals[k]);
    char *out = malloc(cap), *o = out;
    if (!out)
        return NULL;
    while (*s) {
        int k = 0;
        for (; k < 3; k++)
            if (!strncmp(s, keys[k], strlen(keys[k])))
                break;
        if (k < 3) {
            o = stpcpy(o, vals[k]);
            s += strlen(keys[k]);
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return out;
}

/* Appends n bytes to a buffer that keeps only its last keep bytes. */
static void keep_tail(char *buf, size_t *len, size_t keep, const char *data, size_t n)
{
    if (n >= keep) {
        memcpy(buf, data + n - keep, keep);
        *len = keep;
        return;
    }
    if (*len + n > keep) {
        size_t drop = *len + n - keep;
        memmove(buf, buf + drop, *len - drop);
        *len -= drop;
    }
    memcpy(buf + *len, data, n);
    *len += n;
}

/* NUL-terminates text and strips trailing blanks; returns the new length. */
static size_t trim(char *text, size_t len)
{
    text[len] = '\0';
    while (len > 0 && strchr(" \t\r\n", text[len - 1]))
        text[--len] = '\0';
    return len;
}

/* A pidfd for the child pid (readable once it exits), or -1 where the
   kernel has none (before 5.3, or a seccomp filter): the callers then look
   at the child every 10 ms instead. */
static int pidfd_of(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    return -1;
#endif
}

/* poll(2), or the worker's own wait when it gives one (ctx->wait). */
static int wait_fds(const worker_task_ctx_t *ctx, struct pollfd *fds, int nfds, int timeout_ms)
{
    if (ctx->wait)
        return ctx->wait(ctx->wait_ud, fds, nfds, timeout_ms);
    return poll(fds, (nfds_t)nfds, timeout_ms);
}

/* Kills the process group of pid (SIGTERM, SIGKILL after 2 s) and reaps
   pid; pidfd is pid's (or -1). */
static void kill_group(const worker_task_ctx_t *ctx, pid_t pid, int pidfd)
{
    kill(-pid, SIGTERM);
    int64_t until = bf_mono_ms() + KILL_WAIT_MS;
    for (int64_t left; (left = until - bf_mono_ms()) > 0;) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD))
            break;
        struct pollfd exited = {pidfd, POLLIN, 0};
        if (pidfd < 0 || wait_fds(ctx, &exited, 1, (int)left) < 0)
            usleep(10000);
    }
    kill(-pid, SIGKILL); /* the leader's stragglers too */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* environ without the three variables we set, plus ours; NULL on ENOMEM. */
static char **child_env(const worker_task_ctx_t *ctx)
{
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **env = calloc(n + 4, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "CUDA_VISIBLE_DEVICES=", 21) &&
            strncmp(environ[i], "BEAMFLEET_SCENE=", 16) &&
            strncmp(environ[i], "BEAMFLEET_GPU_ID=", 17))
            env[k++] = environ[i];
    int gpu = ctx->dev ? ctx->dev->index : -1;
    /* A supervised GPU worker already has its device (by the host's
       numbering) in CUDA_VISIBLE_DEVICES; otherwise the index is it. */
    const char *own = getenv("CUDA_VISIBLE_DEVICES");
    char *cvd = gpu < 0       ? bf_strdup("CUDA_VISIBLE_DEVICES=")
                : own && *own ? bf_asprintf("CUDA_VISIBLE_DEVICES=%s", own)
                              : bf_asprintf("CUDA_VISIBLE_DEVICES=%d", gpu);
    char *scene = bf_asprintf("BEAMFLEET_SCENE=%s", ctx->scene);
    char *gid = bf_asprintf("BEAMFLEET_GPU_ID=%d", gpu);
    if (!cvd || !scene || !gid) {
        free(cvd);
        free(scene);
        free(gid);
        free(env);
        return NULL;
    }
    env[k++] = cvd;
    env[k++] = scene;
    env[k++] = gid;
    env[k] = NULL;
    return env;
}

static void free_env(char **env)
{
    if (!env)
        return;
    size_t n = 0;
    while (env[n])
        n++;
    for (size_t i = n - 3; i < n; i++) /* ours are the last three */
        free(env[i]);
    free(env);
}

/* ---- the result line ------------------------------------------------------------ */

/* One line of stdout: its bytes while it fits in WORKER_RESULT_MAX, its
   size either way. */
typedef struct {
    char *buf;
    size_t len, cap;
    uint64_t size;
    bool content; /* something other than blanks */
    bool over;    /* longer than WORKER_RESULT_MAX: not kept */
} line_t;

/* The line being written and the last finished one with content: at the
   end, the result is the first of them that has content. */
typedef struct {
    line_t cur, last;
} lines_t;

static bf_err_t line_put(line_t *l, const char *p, size_t n)
{
    for (size_t i = 0; !l->content && i < n; i++)
        l->content = p[i] != ' ' && p[i] != '\t' && p[i] != '\r';
    l->size += n;
    if (l->over)
        return BF_OK;
    if (l->len + n > WORKER_RESULT_MAX) {
        l->over = true;
        return BF_OK;
    }
    if (l->len + n + 1 > l->cap) { /* doubling, but never past the result's limit */
        size_t cap = bf_grow_cap(l->cap, l->len + n + 1, 4096);
        if (cap > (size_t)WORKER_RESULT_MAX + 1)
            cap = (size_t)WORKER_RESULT_MAX + 1;
        if (!cap || !bf_resize(&l->buf, cap, 1))
            return BF_ENOMEM;
        l->cap = cap;
    }
    memcpy(l->buf + l->len, p, n);
    l->len += n;
    return BF_OK;
}

static void line_reset(line_t *l)
{
    l->len = 0;
    l->size = 0;
    l->content = l->over = false;
}

static bf_err_t lines_feed(lines_t *ls, const char *data, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        size_t seg = nl ? (size_t)(nl - data) : n;
        bf_err_t rc = line_put(&ls->cur, data, seg);
        if (rc != BF_OK)
            return rc;
        if (nl) {
            if (ls->cur.content) { /* it becomes the last line; its buffer is reused */
                line_t t = ls->last;
                ls->last = ls->cur;
                ls->cur = t;
            }
            line_reset(&ls->cur);
            seg++;
        }
        data += seg;
        n -= seg;
    }
    return BF_OK;
}

static void lines_free(lines_t *ls)
{
    free(ls->cur.buf);
    free(ls->last.buf);
}

/* At most max bytes of s (n long) with anything but printable ASCII as '?'. */
static void excerpt(char *out, size_t max, const char *s, size_t n)
{
    size_t k = 0;
    for (; k < n && k < max; k++)
        out[k] = s[k] >= 0x20 && s[k] < 0x7f ? s[k] : '?';
    out[k] = '\0';
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    default:
        return "object";
    }
}

/* The result document from the last line, or BF_EINVAL saying exactly why
   not (the task's fault), quoting at most EXCERPT sanitized bytes of it. */
static bf_err_t parse_result(lines_t *ls, json_t **doc, char *err)
{
    line_t *l = ls->cur.content ? &ls->cur : &ls->last;
    if (!l->content)
        return bf_fail(err, BF_EINVAL, "the task wrote no result line on stdout");
    if (l->over)
        return bf_fail(err, BF_EINVAL, "result line of %llu bytes exceeds the %u MiB limit",
                       (unsigned long long)l->size, WORKER_RESULT_MAX >> 20);
    size_t len = l->len;
    while (len > 0 && strchr(" \t\r", l->buf[len - 1]))
        len--;
    json_error_t jerr;
    json_t *v = json_loadb(l->buf, len, JSON_DECODE_ANY, &jerr);
    char quote[EXCERPT + 1], text[96];
    if (!v) {
        excerpt(quote, EXCERPT, l->buf, len);
        excerpt(text, sizeof text - 1, jerr.text, strlen(jerr.text));
        return bf_fail(err, BF_EINVAL,
                       "last line of stdout is not JSON: %s at column %d (\"%s%s\")", text,
                       jerr.column, quote, len > EXCERPT ? "..." : "");
    }
    if (!json_is_object(v)) {
        const char *kind = json_kind(v);
        json_decref(v);
        return bf_fail(err, BF_EINVAL, "result is a JSON %s, not an object", kind);
    }
    if (!json_is_string(json_object_get(v, "status"))) {
        json_decref(v);
        return bf_fail(err, BF_EINVAL, "result has no string `status`");
    }
    *doc = v;
    return BF_OK;
}

/* ---- running the program ------------------------------------------------------- */

/* Reads what fd has (at most reads chunks, never blocking: fd is
   O_NONBLOCK). Returns false at end of file or on an error (the caller
   closes it). */
static bool read_some(int fd, int reads, lines_t *out, char *errtxt, size_t *err_len, bool is_out,
                      char *chunk, bf_err_t *rc)
{
    for (int i = 0; i < reads; i++) {
        ssize_t got = read(fd, chunk, CHUNK);
        if (got > 0) {
            if (!is_out)
                keep_tail(errtxt, err_len, ERR_KEEP, chunk, (size_t)got);
            else if (*rc == BF_OK)
                *rc = lines_feed(out, chunk, (size_t)got);
            continue;
        }
        if (got < 0 && errno == EINTR)
            continue;
        return got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    return true;
}

/* Under ASan or TSan, which cannot follow a child that shares their
   memory, the task's process is forked (spawn_child). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SPAWN_BY_FORK 1 /* sanitizers cannot follow a CLONE_VM child */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SPAWN_BY_FORK 1
#endif
#endif

#ifdef SPAWN_BY_FORK
/* The error pipe's message from the child: the errno of a failed exec, or
   0 when the program runs. */
static int exec_errno(int fd)
{
    int e = 0;
    for (;;) {
        ssize_t got = read(fd, &e, sizeof e);
        if (got < 0 && errno == EINTR)
            continue;
        return got == (ssize_t)sizeof e ? e : 0;
    }
}
#endif

/* The result of an exec that failed in the child (errno e): the task's
   fault unless the host was short of something. */
static bf_err_t exec_failed(int e, const char *prog, char *err)
{
    bf_err_t code = e == ENOENT || e == ENOTDIR              ? BF_ENOENT
                    : e == EACCES || e == EPERM              ? BF_EPERM
                    : e == ENOMEM || e == EAGAIN || e == EIO ? BF_ECHILD
                                                             : BF_EINVAL;
    return bf_fail(err, code, "cannot run %.300s: %s", prog, strerror(e));
}

typedef struct {
    pid_t parent;
    const char *prog;
    char **argv, **env;
    int out, err; /* the write ends for stdout and stderr */
    int ex;       /* the write end for exec's errno (fork only; -1 under CLONE_VM) */
    /* Set by spawn_child: the errno of a failed exec (0 when the program
       runs) and a pidfd of the child (-1 where the kernel has none). Under
       CLONE_VM the child writes failed_errno itself, in the worker's memory,
       before it exits: no pipe is needed to learn it (glibc's posix_spawn
       does the same). */
    volatile int failed_errno;
    int pidfd;
} spawn_t;

/* What every child needs from this process, found once (spawn_setup): the
   signals it has handlers for, and /dev/null. Asking the kernel about all
   64 signals in each child took 15 us a task, a twentieth of a short exec
   task's own overhead; the daemons install their handlers before they run
   a task (cli/cli_daemons.c, worker_supervise.c). A handler installed
   later is left to execve, which resets it: only a signal that reached the
   child in the few instructions between unblocking and execve could run it. */
static sigset_t spawn_handled;
static int spawn_devnull = -1;
static pthread_once_t spawn_once = PTHREAD_ONCE_INIT;

static void spawn_setup(void)
{
    sigemptyset(&spawn_handled);
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sig != SIGKILL && sig != SIGSTOP && sigaction(sig, NULL, &sa) == 0 &&
            sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN)
            sigaddset(&spawn_handled, sig);
    }
    spawn_devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* The child, on its own small stack in the worker's memory (CLONE_VM):
   system calls only, nothing written but its own stack, until exec. It
   dies with the thread that started it (the worker's socket thread, or
   the task thread for an exec run by another handler). */
static int child_main(void *arg)
{
    spawn_t *sp = arg;
    /* Handlers were copied from the worker: one that ran here would run
       in the worker's memory. Back to the defaults before unblocking. */
    for (int sig = 1; sig < NSIG; sig++) {
        if (sigismember(&spawn_handled, sig) == 1) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = SIG_DFL;
            sigaction(sig, &sa, NULL);
        }
    }
    signal(SIGPIPE, SIG_DFL);
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != sp->parent)
        _exit(127); /* the worker is gone already */
    dup2(sp->out, STDOUT_FILENO);
    dup2(sp->err, STDERR_FILENO);
    if (spawn_devnull >= 0)
        dup2(spawn_devnull, STDIN_FILENO); /* the copy is not close-on-exec */
#ifdef SYS_close_range
    /* Nothing of the worker's but stdin, stdout and stderr reaches the
       task: every other descriptor (a library's, one the worker inherited)
       closes at exec. Marked, not closed: the errno pipe of the fork path
       stays open until then. Linux 5.11; before, they stay as they are. */
    syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
#endif
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(sp->prog, sp->argv, sp->env); /* the program that was checked */
    int e = errno;
    if (sp->ex >= 0) {
        ssize_t w = write(sp->ex, &e, sizeof e);
        (void)w;
    } else {
        sp->failed_errno = e; /* the parent's memory (CLONE_VM) */
    }
    _exit(127);
}

/* Starts the task's main process as posix_spawn does: clone(CLONE_VM |
   CLONE_VFORK) on a stack of its own, every signal blocked meanwhile, so
   that the worker's page tables are not copied for each task (a fork of
   this multi-threaded process costs more than a short task). The caller's
   thread waits until the child has exec'd or exited; the child is then in
   its own process group already (it calls setpgid before exec), and
   sp->failed_errno says whether the exec failed. The same clone gives the
   child's pidfd (CLONE_PIDFD): no pidfd_open, no setpgid from this side,
   no pipe for the errno, six system calls fewer per task. Returns the pid,
   or -1 (errno). Under ASan or TSan, which cannot follow a child that
   shares their memory, it forks as before, with a pipe for the errno. */
#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000 /* Linux 5.2 */
#endif

static pid_t spawn_child(spawn_t *sp)
{
    pthread_once(&spawn_once, spawn_setup);
    sp->failed_errno = 0;
    sp->pidfd = -1;
#ifdef SPAWN_BY_FORK
    int ex[2];
    if (pipe2(ex, O_CLOEXEC) != 0)
        return -1;
    sp->ex = ex[1];
    pid_t child = fork();
    if (child == 0)
        child_main(sp); /* does not return */
    int e = errno;
    close(ex[1]);
    sp->ex = -1;
    if (child > 0) {
        setpgid(child, child); /* also here: the group exists before we may kill it */
        sp->failed_errno = exec_errno(ex[0]);
        sp->pidfd = pidfd_of(child);
    }
    close(ex[0]);
    errno = e;
    return child;
#else
    /* The child's stack is a part of this thread's: this thread waits
       (CLONE_VFORK) until the child has exec'd or exited, so nothing else
       uses it meanwhile (musl's posix_spawn does the same). A 64 KiB block
       malloc'ed and freed for every task made glibc consolidate its free
       lists each time. Aligned as the ABI wants a stack top. */
    enum { STACK = 32 * 1024 };
    _Alignas(64) char stack[STACK];
    sp->ex = -1;
    int pidfd = -1;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = clone(child_main, stack + STACK, CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, sp,
                      &pidfd);
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    /* A kernel before 5.2 ignores the flag (it was the long-gone
       CLONE_PID) and leaves pidfd as it was. */
    if (pid > 0)
        sp->pidfd = pidfd >= 0 ? pidfd : pidfd_of(pid);
    errno = e;
    return pid; /* the child has exec'd or exited: its stack is free */
#endif
}

bf_err_t worker_exec(worker_task_ctx_t *ctx, json_t **result, char *err)
{
    *result = NULL;
    const bf_job_t *job = ctx->job;
    if (!job->exec_command || job->exec_argc == 0 || !job->exec_command[0])
        return bf_fail(err, BF_EINVAL, "exec task without a command");
    char **argv = calloc(job->exec_argc + 1, sizeof *argv);
    if (!argv)
        return BF_ENOMEM;
    bf_err_t rc = BF_OK;
    int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1}, pidfd = -1;
    char *errtxt = NULL, **env = NULL, *prog = NULL, *real0 = NULL;
    /* On the stack: a 64 KiB block malloc'ed and freed for every task made
       glibc consolidate its free lists each time (a free of 64 KiB or more
       does), a visible share of a short task's cost in the worker. */
    char chunk[CHUNK];
    lines_t out;
    memset(&out, 0, sizeof out);
    size_t err_len = 0;
    pid_t pid = -1;
    for (size_t i = 0; i < job->exec_argc; i++)
        if (!(argv[i] = substitute(job->exec_command[i], ctx))) {
            rc = BF_ENOMEM;
            goto done;
        }
    prog = find_program(argv[0]);
    if (!allowed(ctx, argv, prog)) {
        real0 = prog ? realpath(prog, NULL) : NULL;
        bool interp = argv[1] && is_interpreter(ctx, real0);
        rc = bf_fail(err, BF_EPERM, "exec not allowed: %.300s", interp ? argv[1] : argv[0]);
        goto done;
    }
    if (!prog) {
        rc = bf_fail(err, BF_ENOENT, "cannot run %.300s: no such program", argv[0]);
        goto done;
    }
    errtxt = malloc(ERR_KEEP + 1);
    env = child_env(ctx);
    if (!errtxt || !env) {
        rc = BF_ENOMEM;
        goto done;
    }
    if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
        rc = bf_fail(err, BF_EIO, "pipe: %s", strerror(errno));
        goto done;
    }
    spawn_t sp = {.parent = getpid(),
                  .prog = prog,
                  .argv = argv,
                  .env = env,
                  .out = out_pipe[1],
                  .err = err_pipe[1]};
    pid = spawn_child(&sp);
    if (pid < 0) {
        rc = bf_fail(err, BF_ECHILD, "clone: %s", strerror(errno));
        goto done;
    }
    pidfd = sp.pidfd;
    close(out_pipe[1]);
    close(err_pipe[1]);
    out_pipe[1] = err_pipe[1] = -1;
    int e = sp.failed_errno;
    if (e) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        pid = -1;
        rc = exec_failed(e, argv[0], err);
        goto done;
    }
    /* fresh read ends: no status flag of theirs to keep */
    fcntl(out_pipe[0], F_SETFL, O_NONBLOCK);
    fcntl(err_pipe[0], F_SETFL, O_NONBLOCK);
    if (ctx->progress)
        ctx->progress(ctx->ud, "exec", 0.0);
    struct pollfd fds[3] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}, {pidfd, POLLIN, 0}};
    int *ends[2] = {&out_pipe[0], &err_pipe[0]};
    bool timed_out = false, cancelled = false;
    int status = 0;
    /* With a pidfd, waitpid is asked only once the pidfd says the child
       has exited (it may have already: the first poll then returns at
       once); without one, on every turn. */
    bool may_have_exited = pidfd < 0;
    for (;;) {
        int64_t left = ctx->deadline_ms - bf_mono_ms();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        if (bf_flag_up(ctx->cancel)) {
            cancelled = true;
            break;
        }
        pid_t r = may_have_exited ? waitpid(pid, &status, WNOHANG) : 0;
        if (r == pid)
            break; /* the main process exited: its result is written */
        if (r < 0 && errno != EINTR) {
            rc = bf_fail(err, BF_ECHILD, "waitpid: %s", strerror(errno));
            goto done;
        }
        /* the exit wakes the poll through the pidfd; wake at least every
           50 ms to see a cancel (every 10 ms without a pidfd once both
           pipes are closed and only the exit is awaited) */
        bool open_any = fds[0].fd >= 0 || fds[1].fd >= 0;
        int wait_ms = open_any || pidfd >= 0 ? 50 : 10;
        int n = wait_fds(ctx, fds, 3, (int)(left < wait_ms ? left : wait_ms));
        if (n < 0 && errno != EINTR) {
            rc = bf_fail(err, BF_EIO, "poll: %s", strerror(errno));
            goto done;
        }
        may_have_exited = pidfd < 0 || (n > 0 && fds[2].revents != 0);
        for (int i = 0; n > 0 && i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (!read_some(fds[i].fd, READS_PER_WAKE, &out, errtxt, &err_len, i == 0, chunk, &rc)) {
                close(fds[i].fd);
                *ends[i] = fds[i].fd = -1;
            }
        }
    }
    if (timed_out || cancelled) {
        kill_group(ctx, pid, pidfd);
        pid = -1;
        if (timed_out)
            rc = bf_fail(err, BF_ETIMEDOUT, "timeout after %g s", job->timeout_s);
        else
            rc = bf_fail(err, BF_ECANCELED, "cancelled");
        goto done;
    }
    /* The main process has exited: what it wrote is in the pipes. Take
       what is readable now, then the rest of its group goes; a background
       child that still holds the pipes open holds nothing back. */
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0)
            read_some(fds[i].fd, DRAIN_READS, &out, errtxt, &err_len, i == 0, chunk, &rc);
    pid_t leader = pid;
    pid = -1;
    kill(-leader, SIGKILL); /* background leftovers of the group */
    if (rc != BF_OK) {      /* out of memory keeping the output */
        rc = bf_fail(err, rc, "keeping the task's output: %s", bf_strerror(rc));
        goto done;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        trim(errtxt, err_len);
        char head[64];
        if (WIFSIGNALED(status))
            snprintf(head, sizeof head, "killed by signal %d", WTERMSIG(status));
        else
            snprintf(head, sizeof head, "exit status %d", WEXITSTATUS(status));
        json_t *doc = json_object();
        json_t *reason = *errtxt ? json_sprintf("%s: %s", head, errtxt) : json_string(head);
        if (!reason) /* stderr that is not UTF-8 */
            reason = json_sprintf("%s: (stderr is not UTF-8)", head);
        if (!doc || !reason || json_object_set_new(doc, "status", json_string("error")) ||
            json_object_set_new(doc, "reason", reason)) {
            json_decref(doc);
            rc = BF_ENOMEM;
            goto done;
        }
        *result = doc;
        goto done;
    }
    json_t *doc = NULL;
    if ((rc = parse_result(&out, &doc, err)) != BF_OK)
        goto done;
    /* the program may blame itself, never the device */
    const char *fault = json_string_value(json_object_get(doc, "fault"));
    if (!fault || strcmp(fault, "task") != 0)
        json_object_del(doc, "fault");
    *result = doc;
done:
    if (pid > 0)
        kill_group(ctx, pid, pidfd);
    if (pidfd >= 0)
        close(pidfd);
    for (int i = 0; i < 2; i++) {
        if (out_pipe[i] >= 0)
            close(out_pipe[i]);
        if (err_pipe[i] >= 0)
            close(err_pipe[i]);
    }
    for (size_t i = 0; i < job->exec_argc; i++)
        free(argv[i]);
    free(argv);
    free(prog);
    free(real0);
    free(errtxt);
    lines_free(&out);
    free_env(env);
    return rc;
}
