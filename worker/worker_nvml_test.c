/*  worker/worker_nvml_test.c - NVML as the worker uses it: without a UUID,
    or on a host without libnvidia-ml.so.1, worker_nvml_new says why and
    returns NULL (the worker then sends no STATS); a library that is not
    NVML is refused by name. On a host with NVML and a CUDA GPU it samples
    that GPU (found by the UUID CUDA reports) and checks the figures are in
    range and the STATS document carries them; otherwise that part exits 77. */

#include "worker.h"

#include <stdlib.h>
#include <string.h>

#include "../common/bf_check.h"

int main(void)
{
    char err[BF_ERRLEN] = "";
    worker_nvml_t *n = worker_nvml_new(NULL, err);
    CHECKF(!n && strstr(err, "no GPU UUID"), "%s", err);
    n = worker_nvml_new("", err);
    CHECK(!n);
    worker_nvml_destroy(&n);
    worker_nvml_destroy(NULL);

    /* a real shared library that is not NVML: refused, naming the symbol */
    setenv("BEAMFLEET_NVML_LIB", "libm.so.6", 1);
    n = worker_nvml_new("GPU-00000000-0000-0000-0000-000000000000", err);
    CHECKF(!n && strstr(err, "nvmlInit_v2 missing"), "%s", err);
    setenv("BEAMFLEET_NVML_LIB", "/nonexistent/libnvidia-ml.so.1", 1);
    n = worker_nvml_new("GPU-00000000-0000-0000-0000-000000000000", err);
    CHECKF(!n && strstr(err, "NVML: ") && strstr(err, "/nonexistent/"), "%s", err);
    unsetenv("BEAMFLEET_NVML_LIB");

    /* the STATS document */
    worker_gpu_stats_t s = {
        .gpu_util = 42, .mem_used = 1u << 30, .mem_total = 80ull << 30, .temperature_c = 55};
    json_t *doc = worker_gpu_stats_json(&s);
    CHECK(doc && json_integer_value(json_object_get(doc, "mem_total")) == (json_int_t)(80ll << 30));
    CHECK(json_real_value(json_object_get(doc, "gpu_util")) == 42.0);
    json_decref(doc);

    /* the real thing, where there is one */
    worker_device_t devs[16];
    size_t count = 0;
    err[0] = '\0';
    if (worker_device_probe(devs, BF_ARRAY_LEN(devs), &count, err) != BF_OK || count == 0) {
        printf("worker_nvml_test: no CUDA GPU here (%s); the NVML sample is skipped\n",
               err[0] ? err : "none found");
        return failures ? 1 : 77;
    }
    n = worker_nvml_new(devs[0].uuid, err);
    if (!n) {
        printf("worker_nvml_test: GPU %s but no NVML (%s): skipped\n", devs[0].uuid, err);
        return failures ? 1 : 77;
    }
    for (int i = 0; i < 3; i++) {
        worker_gpu_stats_t g;
        CHECKF(worker_nvml_sample(n, &g, err) == BF_OK, "%s", err);
        CHECK(g.gpu_util >= 0 && g.gpu_util <= 100);
        CHECKF(g.mem_total > 0 && g.mem_used <= g.mem_total, "%llu of %llu",
               (unsigned long long)g.mem_used, (unsigned long long)g.mem_total);
        CHECKF(g.temperature_c > 0 && g.temperature_c < 130, "%.0f C", g.temperature_c);
        printf("%s: util %.0f%%, memory %llu / %llu MiB, %.0f C\n", devs[0].name, g.gpu_util,
               (unsigned long long)(g.mem_used >> 20), (unsigned long long)(g.mem_total >> 20),
               g.temperature_c);
    }
    worker_nvml_destroy(&n);
    CHECK(!n);
    return failures ? 1 : 0;
}
