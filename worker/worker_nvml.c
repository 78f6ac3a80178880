/*  worker/worker_nvml.c - a GPU worker's live figures (utilization, memory,
    temperature) from NVML, for the STATS message the broker turns into
    metrics and `beamfleet status` columns. libnvidia-ml.so.1 is loaded at
    run time with dlopen: a host without the driver, or without a GPU, just
    has no figures; NVML is never a link-time dependency. The GPU is found by
    its UUID (what CUDA reported), because NVML numbers devices in PCI order
    and ignores CUDA_VISIBLE_DEVICES. */

#include "worker.h"

#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The few NVML declarations used (nvml.h, stable since the v2 entry points). */
typedef int nvml_return_t; /* NVML_SUCCESS = 0 */
typedef struct nvml_device *nvml_device_t;
typedef struct {
    unsigned int gpu, memory; /* percent of the last sample period */
} nvml_utilization_t;
typedef struct {
    unsigned long long total, free, used; /* bytes */
} nvml_memory_t;
#define NVML_TEMPERATURE_GPU 0

struct worker_nvml {
    void *lib;
    nvml_device_t dev;
    bool inited;
    nvml_return_t (*init)(void);
    nvml_return_t (*shutdown)(void);
    const char *(*error_string)(nvml_return_t);
    nvml_return_t (*by_uuid)(const char *, nvml_device_t *);
    nvml_return_t (*utilization)(nvml_device_t, nvml_utilization_t *);
    nvml_return_t (*memory)(nvml_device_t, nvml_memory_t *);
    nvml_return_t (*temperature)(nvml_device_t, int, unsigned int *);
};

static const char *nvml_why(const worker_nvml_t *n, nvml_return_t r)
{
    const char *s = n->error_string ? n->error_string(r) : NULL;
    return s ? s : "unknown NVML error";
}

worker_nvml_t *worker_nvml_new(const char *uuid, char *err)
{
    if (!uuid || strncmp(uuid, "GPU-", 4) != 0) {
        bf_fail(err, BF_EINVAL, "NVML: no GPU UUID to look up");
        return NULL;
    }
    worker_nvml_t *n = calloc(1, sizeof *n);
    if (!n) {
        bf_fail(err, BF_ENOMEM, "out of memory");
        return NULL;
    }
    const char *lib = getenv("BEAMFLEET_NVML_LIB"); /* a driver installed off the loader path */
    n->lib = dlopen(lib && *lib ? lib : "libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!n->lib) {
        const char *why = dlerror();
        bf_fail(err, BF_EUNSUPP, "NVML: %s", why ? why : "libnvidia-ml.so.1 not found");
        goto fail;
    }
    static const struct {
        const char *name;
        size_t off;
    } syms[] = {
        {"nvmlInit_v2", offsetof(worker_nvml_t, init)},
        {"nvmlShutdown", offsetof(worker_nvml_t, shutdown)},
        {"nvmlErrorString", offsetof(worker_nvml_t, error_string)},
        {"nvmlDeviceGetHandleByUUID", offsetof(worker_nvml_t, by_uuid)},
        {"nvmlDeviceGetUtilizationRates", offsetof(worker_nvml_t, utilization)},
        {"nvmlDeviceGetMemoryInfo", offsetof(worker_nvml_t, memory)},
        {"nvmlDeviceGetTemperature", offsetof(worker_nvml_t, temperature)},
    };
    for (size_t i = 0; i < BF_ARRAY_LEN(syms); i++) {
        void *f = dlsym(n->lib, syms[i].name);
        if (!f) {
            bf_fail(err, BF_EUNSUPP, "NVML: %s missing from the library", syms[i].name);
            goto fail;
        }
        /* POSIX guarantees a function pointer round-trips through void * */
        memcpy((char *)n + syms[i].off, &f, sizeof f);
    }
    nvml_return_t r = n->init();
    if (r != 0) {
        bf_fail(err, BF_EUNSUPP, "NVML: nvmlInit: %s", nvml_why(n, r));
        goto fail;
    }
    n->inited = true;
    if ((r = n->by_uuid(uuid, &n->dev)) != 0) {
        bf_fail(err, BF_ENOENT, "NVML: no device %.60s: %s", uuid, nvml_why(n, r));
        goto fail;
    }
    return n;
fail:
    worker_nvml_destroy(&n);
    return NULL;
}

bf_err_t worker_nvml_sample(worker_nvml_t *n, worker_gpu_stats_t *out, char *err)
{
    nvml_utilization_t u;
    nvml_memory_t mem;
    unsigned int temp;
    nvml_return_t r;
    if ((r = n->utilization(n->dev, &u)) != 0)
        return bf_fail(err, BF_EIO, "NVML: utilization: %s", nvml_why(n, r));
    if ((r = n->memory(n->dev, &mem)) != 0)
        return bf_fail(err, BF_EIO, "NVML: memory: %s", nvml_why(n, r));
    if ((r = n->temperature(n->dev, NVML_TEMPERATURE_GPU, &temp)) != 0)
        return bf_fail(err, BF_EIO, "NVML: temperature: %s", nvml_why(n, r));
    out->gpu_util = u.gpu > 100 ? 100.0 : (double)u.gpu;
    out->mem_total = mem.total;
    out->mem_used = mem.used > mem.total ? mem.total : mem.used;
    out->temperature_c = (double)temp;
    return BF_OK;
}

json_t *worker_gpu_stats_json(const worker_gpu_stats_t *s)
{
    return json_pack("{s:f, s:I, s:I, s:f}", "gpu_util", s->gpu_util, "mem_used",
                     (json_int_t)s->mem_used, "mem_total", (json_int_t)s->mem_total,
                     "temperature_c", s->temperature_c);
}

void worker_nvml_destroy(worker_nvml_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    worker_nvml_t *n = *self_p;
    if (n->inited && n->shutdown)
        n->shutdown();
    if (n->lib)
        dlclose(n->lib);
    free(n);
    *self_p = NULL;
}
