/*  worker/worker_device.c - what a worker runs on. GPUs are found by the
    radio engine (kern_devices, behind its CUDA backend) in a short-lived
    forked child that reports over a pipe and exits, so the calling process
    (the supervisor, which forks workers) never initializes CUDA. The CPU is
    described from /proc/cpuinfo and sysinfo(2). In a build without the CUDA
    backend (no BF_HAVE_CUDA from bf_kernels) there are simply no GPUs, and
    no child is forked. */

#include "worker.h"

#include "../kernels/kern.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROBE_MAX     64
#define PROBE_WAIT_MS 20000

void worker_device_cpu(worker_device_t *out)
{
    memset(out, 0, sizeof *out);
    out->index = -1;
    bf_strlcpy(out->name, "cpu", sizeof out->name);
    bf_strlcpy(out->backend, "cpu", sizeof out->backend);
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon || strncmp(line, "model name", 10) != 0)
            continue;
        char *v = colon + 1;
        v += strspn(v, " \t");
        v[strcspn(v, "\r\n")] = '\0';
        if (*v)
            bf_strlcpy(out->name, v, sizeof out->name);
        break;
    }
    if (f)
        fclose(f);
    struct sysinfo si;
    if (sysinfo(&si) == 0)
        out->memory_bytes = (uint64_t)si.totalram * si.mem_unit;
}

#if defined(BF_HAVE_CUDA) && BF_HAVE_CUDA
/* In the child: asks the engine. Returns how many were filled. */
static int gpu_list(worker_device_t *out, int max)
{
    kern_device_t found[PROBE_MAX];
    int n = kern_devices(found, max < PROBE_MAX ? max : PROBE_MAX);
    for (int i = 0; i < n; i++) {
        worker_device_t *d = &out[i];
        memset(d, 0, sizeof *d);
        d->index = found[i].index;
        bf_strlcpy(d->name, found[i].name, sizeof d->name);
        bf_strlcpy(d->uuid, found[i].uuid, sizeof d->uuid);
        d->memory_bytes = found[i].memory_bytes;
        d->cc_major = found[i].cc_major;
        d->cc_minor = found[i].cc_minor;
        bf_strlcpy(d->backend, "cuda", sizeof d->backend);
        bf_strlcpy(d->unusable, found[i].unusable, sizeof d->unusable);
    }
    return n;
}

static bool write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        len -= (size_t)w;
    }
    return true;
}

/* Reads exactly len bytes before deadline; false on EOF, error or time. */
static bool read_all(int fd, void *data, size_t len, int64_t deadline)
{
    char *p = data;
    while (len > 0) {
        int64_t left = deadline - bf_mono_ms();
        if (left <= 0)
            return false;
        struct pollfd pfd = {fd, POLLIN, 0};
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        len -= (size_t)r;
    }
    return true;
}

#endif

static bf_err_t probe(worker_device_t *out, size_t max, size_t *count, char *err);

/* BEAMFLEET_FAULT_GPU=REASON (fault injection, for the tests of a machine
   without a GPU): one more GPU is listed, whose probe launch failed with
   REASON. */
static void inject(worker_device_t *out, size_t max, size_t *count)
{
    const char *why = getenv("BEAMFLEET_FAULT_GPU");
    if (!why || !*why || *count >= max)
        return;
    worker_device_t *d = &out[(*count)++];
    memset(d, 0, sizeof *d);
    d->index = (int)*count - 1;
    bf_strlcpy(d->name, "injected GPU (BEAMFLEET_FAULT_GPU)", sizeof d->name);
    bf_strlcpy(d->uuid, "GPU-00000000-0000-0000-0000-000000000000", sizeof d->uuid);
    d->cc_major = 9;
    bf_strlcpy(d->backend, "cuda", sizeof d->backend);
    snprintf(d->unusable, sizeof d->unusable, "a probe launch failed: %s", why);
}

bf_err_t worker_device_probe(worker_device_t *out, size_t max, size_t *count, char *err)
{
    bf_err_t rc = probe(out, max, count, err);
    if (rc == BF_OK)
        inject(out, max, count);
    return rc;
}

static bf_err_t probe(worker_device_t *out, size_t max, size_t *count, char *err)
{
    *count = 0;
#if !(defined(BF_HAVE_CUDA) && BF_HAVE_CUDA)
    (void)out;
    (void)max;
    (void)err;
    return BF_OK; /* no CUDA in this build: no GPUs, and no child to fork */
#else
    int fd[2];
    if (pipe2(fd, O_CLOEXEC) != 0)
        return bf_fail(err, BF_ECHILD, "device probe: pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return bf_fail(err, BF_ECHILD, "device probe: fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(fd[0]);
        worker_device_t devs[PROBE_MAX];
        int32_t n = gpu_list(devs, PROBE_MAX);
        bool ok =
            write_all(fd[1], &n, sizeof n) && write_all(fd[1], devs, (size_t)n * sizeof devs[0]);
        _exit(ok ? 0 : 1);
    }
    close(fd[1]);
    int64_t deadline = bf_mono_ms() + PROBE_WAIT_MS;
    int32_t n = -1;
    bf_err_t rc = BF_OK;
    worker_device_t devs[PROBE_MAX];
    if (!read_all(fd[0], &n, sizeof n, deadline) || n < 0 || n > PROBE_MAX ||
        !read_all(fd[0], devs, (size_t)n * sizeof devs[0], deadline))
        rc = bf_fail(err, BF_ECHILD, "device probe: the CUDA probe gave no answer");
    close(fd[0]);
    if (rc != BF_OK)
        kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    if (rc != BF_OK)
        return rc;
    for (int32_t i = 0; i < n && (size_t)i < max; i++) {
        out[i] = devs[i];
        /* the bytes came from our own child, still: terminated strings */
        out[i].name[sizeof out[i].name - 1] = '\0';
        out[i].uuid[sizeof out[i].uuid - 1] = '\0';
        out[i].backend[sizeof out[i].backend - 1] = '\0';
        out[i].unusable[sizeof out[i].unusable - 1] = '\0';
        (*count)++;
    }
    return BF_OK;
#endif
}
