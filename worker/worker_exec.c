/*  worker/worker_exec.c - the exec task (DESIGN section 3): runs an allowed
    program on a scene in its own process group, with CUDA_VISIBLE_DEVICES,
    BEAMFLEET_SCENE and BEAMFLEET_GPU_ID set; the last non-empty line of its
    stdout is the result. The pipes are watched with poll(); a deadline or a
    cancel kills the whole process group (SIGTERM, then SIGKILL after 2 s).
    The allow list is checked against the program, or against the script
    when the program is a known interpreter, never against any argv[1]. */

#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define OUT_KEEP     65536 /* bytes of stdout kept (the result is its last line) */
#define ERR_KEEP     4096  /* bytes of stderr kept for the reason */
#define KILL_WAIT_MS 2000  /* SIGTERM -> SIGKILL */

extern char **environ;

/* Interpreters whose first argument is the program that matters. */
static bool is_interpreter(const char *prog)
{
    static const char *const names[] = {"python", "python2", "python3", "sh",
                                        "bash",   "dash",    "perl",    "ruby",
                                        "node",   "Rscript", "julia",   "pypy3"};
    const char *base = strrchr(prog, '/');
    base = base ? base + 1 : prog;
    for (size_t i = 0; i < BF_ARRAY_LEN(names); i++)
        if (!strcmp(base, names[i]))
            return true;
    /* python3.11 and the like */
    if (!strncmp(base, "python3.", 8) && base[8] &&
        strspn(base + 8, "0123456789") == strlen(base + 8))
        return true;
    return false;
}

/* The absolute real path of a program as execvp would find it, or NULL. */
static char *resolve(const char *prog)
{
    if (!prog || !*prog)
        return NULL;
    if (strchr(prog, '/'))
        return realpath(prog, NULL);
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    char buf[PATH_MAX];
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, ":");
        if (n > 0 && n + strlen(prog) + 2 < sizeof buf) {
            memcpy(buf, p, n);
            buf[n] = '/';
            strcpy(buf + n + 1, prog);
            if (access(buf, X_OK) == 0)
                return realpath(buf, NULL);
        }
        p += n;
        if (*p == ':')
            p++;
    }
    return NULL;
}

static bool in_list(const worker_task_ctx_t *ctx, const char *arg)
{
    char *real = resolve(arg);
    bool match = false;
    for (size_t i = 0; i < ctx->allow_exec_count && !match; i++) {
        const char *ok = ctx->allow_exec[i];
        if (!ok)
            continue;
        if (!strcmp(ok, arg)) {
            match = true;
            break;
        }
        char *ok_real = resolve(ok);
        match = real && ok_real && !strcmp(real, ok_real);
        free(ok_real);
    }
    free(real);
    return match;
}

/* The program itself is allowed, or it is an interpreter and its script
   is. */
static bool allowed(const worker_task_ctx_t *ctx, char *const argv[])
{
    if (in_list(ctx, argv[0]))
        return true;
    return is_interpreter(argv[0]) && argv[1] && in_list(ctx, argv[1]);
}

/* What the refusal names: the script of an interpreter, or the program. */
static const char *judged(char *const argv[])
{
    return is_interpreter(argv[0]) && argv[1] ? argv[1] : argv[0];
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

/* The last non-empty line of text (modified in place). */
static char *last_line(char *text, size_t len)
{
    trim(text, len);
    char *nl = strrchr(text, '\n');
    return nl ? nl + 1 : text;
}

/* Kills the process group of pid (SIGTERM, SIGKILL after 2 s) and reaps pid. */
static void kill_group(pid_t pid)
{
    kill(-pid, SIGTERM);
    int64_t until = bf_mono_ms() + KILL_WAIT_MS;
    while (bf_mono_ms() < until) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD))
            break;
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
    int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    char *out = NULL, *errtxt = NULL, **env = NULL;
    size_t out_len = 0, err_len = 0;
    pid_t pid = -1;
    for (size_t i = 0; i < job->exec_argc; i++)
        if (!(argv[i] = substitute(job->exec_command[i], ctx))) {
            rc = BF_ENOMEM;
            goto done;
        }
    if (!allowed(ctx, argv)) {
        rc = bf_fail(err, BF_EPERM, "exec not allowed: %.300s", judged(argv));
        goto done;
    }
    out = malloc(OUT_KEEP + 1);
    errtxt = malloc(ERR_KEEP + 1);
    env = child_env(ctx);
    if (!out || !errtxt || !env) {
        rc = BF_ENOMEM;
        goto done;
    }
    if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
        rc = bf_fail(err, BF_EIO, "pipe: %s", strerror(errno));
        goto done;
    }
    pid = fork();
    if (pid < 0) {
        rc = bf_fail(err, BF_ECHILD, "fork: %s", strerror(errno));
        goto done;
    }
    if (pid == 0) {
        /* the child: async-signal-safe calls only until exec */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(out_pipe[1], STDOUT_FILENO);
        dup2(err_pipe[1], STDERR_FILENO);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvpe(argv[0], argv, env);
        static const char msg[] = "exec: cannot run the program\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        _exit(127);
    }
    setpgid(pid, pid); /* also here: the group exists before we may kill it */
    close(out_pipe[1]);
    close(err_pipe[1]);
    out_pipe[1] = err_pipe[1] = -1;
    if (ctx->progress)
        ctx->progress(ctx->ud, "exec", 0.0);
    struct pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    int open_fds = 2;
    bool timed_out = false, cancelled = false;
    while (open_fds > 0) {
        int64_t left = ctx->deadline_ms - bf_mono_ms();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        if (ctx->cancel && *ctx->cancel) {
            cancelled = true;
            break;
        }
        /* wake at least every 50 ms to see a cancel */
        int n = poll(fds, 2, (int)(left < 50 ? left : 50));
        if (n < 0 && errno != EINTR) {
            rc = bf_fail(err, BF_EIO, "poll: %s", strerror(errno));
            goto done;
        }
        for (int i = 0; n > 0 && i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char chunk[4096];
            ssize_t got = read(fds[i].fd, chunk, sizeof chunk);
            if (got > 0) {
                if (i == 0)
                    keep_tail(out, &out_len, OUT_KEEP, chunk, (size_t)got);
                else
                    keep_tail(errtxt, &err_len, ERR_KEEP, chunk, (size_t)got);
            } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
                close(fds[i].fd);
                if (i == 0)
                    out_pipe[0] = -1;
                else
                    err_pipe[0] = -1;
                fds[i].fd = -1;
                open_fds--;
            }
        }
    }
    if (timed_out || cancelled) {
        kill_group(pid);
        pid = -1;
        if (timed_out)
            rc = bf_fail(err, BF_ETIMEDOUT, "timeout after %g s", job->timeout_s);
        else
            rc = bf_fail(err, BF_ECANCELED, "cancelled");
        goto done;
    }
    /* both pipes closed: wait for the exit, still within the deadline */
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            rc = bf_fail(err, BF_ECHILD, "waitpid: %s", strerror(errno));
            goto done;
        }
        if (bf_mono_ms() >= ctx->deadline_ms || (ctx->cancel && *ctx->cancel)) {
            bool late = bf_mono_ms() >= ctx->deadline_ms;
            kill_group(pid);
            pid = -1;
            rc = late ? bf_fail(err, BF_ETIMEDOUT, "timeout after %g s", job->timeout_s)
                      : bf_fail(err, BF_ECANCELED, "cancelled");
            goto done;
        }
        usleep(5000);
    }
    pid_t leader = pid;
    pid = -1;
    kill(-leader, SIGKILL); /* background leftovers of the group */
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
    char *line = last_line(out, out_len);
    json_t *doc = json_loads(line, 0, NULL);
    if (!json_is_object(doc) || !json_is_string(json_object_get(doc, "status"))) {
        json_decref(doc);
        rc = bf_fail(err, BF_EINVAL,
                     "the last line of stdout is not a JSON object with a status: %.200s", line);
        goto done;
    }
    *result = doc;
done:
    if (pid > 0)
        kill_group(pid);
    for (int i = 0; i < 2; i++) {
        if (out_pipe[i] >= 0)
            close(out_pipe[i]);
        if (err_pipe[i] >= 0)
            close(err_pipe[i]);
    }
    for (size_t i = 0; i < job->exec_argc; i++)
        free(argv[i]);
    free(argv);
    free(out);
    free(errtxt);
    free_env(env);
    return rc;
}
