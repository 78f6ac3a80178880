/*  worker/worker_exec.c - the exec task (DESIGN section 3): runs an allowed
    program on a scene in its own process group, with CUDA_VISIBLE_DEVICES,
    BEAMFLEET_SCENE and BEAMFLEET_GPU_ID set; its last line of stdout is the
    result. A timeout or a cancel kills the whole process group (SIGTERM,
    then SIGKILL after 2 s). */

#include "worker_task.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define OUT_KEEP 65536 /* bytes of stdout kept (the result is its last line) */
#define ERR_KEEP 4096  /* bytes of stderr kept for the reason */

/* A program is allowed when it, or the script an interpreter is given, is
   named in the allow list (as written or by real path). */
static bool allowed(const worker_task_ctx_t *ctx, char *const argv[])
{
    for (int a = 0; a < 2 && argv[a]; a++) {
        char *real = realpath(argv[a], NULL);
        for (size_t i = 0; i < ctx->allow_exec_count; i++) {
            const char *ok = ctx->allow_exec[i];
            char *ok_real = realpath(ok, NULL);
            bool match = !strcmp(ok, argv[a]) || (real && ok_real && !strcmp(real, ok_real));
            free(ok_real);
            if (match) {
                free(real);
                return true;
            }
        }
        free(real);
    }
    return false;
}

/* Replaces {scene_dir}, {scene} and {output} in s. */
static char *substitute(const char *s, const worker_task_ctx_t *ctx)
{
    const char *keys[3] = {"{scene_dir}", "{scene}", "{output}"};
    const char *vals[3] = {ctx->scene_dir, ctx->scene, ctx->job->output};
    size_t cap = strlen(s) + 1;
    for (int k = 0; k < 3; k++)
        for (const char *p = strstr(s, keys[k]); p; p = strstr(p + 1, keys[k]))
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

/* The last non-empty line of text (modified in place). */
static char *last_line(char *text, size_t len)
{
    text[len] = '\0';
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
        text[--len] = '\0';
    char *nl = strrchr(text, '\n');
    return nl ? nl + 1 : text;
}

static void kill_group(pid_t pid)
{
    kill(-pid, SIGTERM);
    for (int i = 0; i < 200; i++) { /* 2 s */
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            kill(-pid, SIGKILL); /* stragglers of the group */
            return;
        }
        usleep(10000);
    }
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

bf_err_t worker_exec(worker_task_ctx_t *ctx, json_t **result, char *err)
{
    *result = NULL;
    const bf_job_t *job = ctx->job;
    if (!job->exec_command || job->exec_argc == 0)
        return bf_fail(err, BF_EINVAL, "exec task without a command");
    char **argv = calloc(job->exec_argc + 1, sizeof *argv);
    if (!argv)
        return BF_ENOMEM;
    for (size_t i = 0; i < job->exec_argc; i++)
        if (!(argv[i] = substitute(job->exec_command[i], ctx))) {
            for (size_t k = 0; k < i; k++)
                free(argv[k]);
            free(argv);
            return BF_ENOMEM;
        }
    bf_err_t rc = BF_OK;
    int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    char *out = malloc(OUT_KEEP + 1), *errtxt = malloc(ERR_KEEP + 1);
    size_t out_len = 0, err_len = 0;
    pid_t pid = -1;
    if (!out || !errtxt) {
        rc = BF_ENOMEM;
        goto done;
    }
    if (!allowed(ctx, argv)) {
        rc = bf_fail(err, BF_EPERM, "exec not allowed: %s (start the worker with --allow-exec)",
                     argv[job->exec_argc > 1 ? 1 : 0]);
        goto done;
    }
    if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
        rc = bf_fail(err, BF_EIO, "pipe: %s", strerror(errno));
        goto done;
    }
    char gpu[16];
    snprintf(gpu, sizeof gpu, "%d", ctx->gpu_id);
    pid = fork();
    if (pid < 0) {
        rc = bf_fail(err, BF_ECHILD, "fork: %s", strerror(errno));
        goto done;
    }
    if (pid == 0) {
        setpgid(0, 0);
        dup2(out_pipe[1], STDOUT_FILENO);
        dup2(err_pipe[1], STDERR_FILENO);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        setenv("BEAMFLEET_SCENE", ctx->scene, 1);
        setenv("BEAMFLEET_GPU_ID", gpu, 1);
        if (ctx->gpu_id < 0)
            setenv("CUDA_VISIBLE_DEVICES", "", 1);
        signal(SIGPIPE, SIG_DFL);
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); /* also here: no race with the child's own call */
    close(out_pipe[1]);
    close(err_pipe[1]);
    out_pipe[1] = err_pipe[1] = -1;
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
        if (*ctx->cancel) {
            cancelled = true;
            break;
        }
        int n = poll(fds, 2, (int)(left < 100 ? left : 100));
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2; i++) {
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
                fds[i].fd = -1;
                if (i == 0)
                    out_pipe[0] = -1;
                else
                    err_pipe[0] = -1;
                open_fds--;
            }
        }
    }
    if (timed_out || cancelled) {
        kill_group(pid);
        pid = -1;
        if (cancelled)
            rc = bf_fail(err, BF_ECANCELED, "cancelled");
        else
            rc = bf_fail(err, BF_ETIMEDOUT, "timeout after %.0f s", job->timeout_s);
        goto done;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    pid = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        /* the end of stderr (a traceback ends with its message) */
        last_line(errtxt, err_len); /* trims trailing newlines */
        char *start = errtxt;
        size_t tl = strlen(errtxt);
        if (tl > 600)
            start = errtxt + tl - 600;
        if (WIFSIGNALED(status))
            rc = bf_fail(err, BF_ECHILD, "killed by signal %d: %s", WTERMSIG(status), start);
        else
            rc = bf_fail(err, BF_ECHILD, "exit %d: %s", WEXITSTATUS(status), start);
        goto done;
    }
    char *line = last_line(out, out_len);
    json_t *doc = json_loads(line, 0, NULL);
    if (!json_is_object(doc) || !json_is_string(json_object_get(doc, "status"))) {
        json_decref(doc);
        rc = bf_fail(err, BF_EINVAL,
                     "the last line of stdout is not a JSON object with a status: "
                     "%.200s",
                     line);
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
    return rc;
}
