/*  worker/worker_sionna_check.c - the job option sionna_check: after the
    engine, the worker runs the job's comparison program (Sionna RT through
    examples/sionna_task.py) on the same scene, with the same solver and
    measurement settings, at the scene's orientation and at the orientation
    the engine found (--at AZ TILT), and adds to the result how the two
    agree:

      "sionna_check": {"nmse_initial_db", "nmse_optimized_db",
                       "native_gain_db", "sionna_gain_db", "gain_diff_db",
                       "cells", "elapsed_s", "backend"}   or  {"error": why}

    NMSE is sum |P_native - P_sionna|^2 / sum |P_sionna|^2 over the zone's
    cells, powers in mW, in dB (docs/radio.md compares the engine with
    Sionna RT the same way); the gains are each engine's own figure for
    moving from the scene's orientation to the engine's optimum. The program
    runs as an exec task does (worker_exec: the worker's allow list, its own
    process group, the task's deadline and cancel); a comparison that cannot
    run or does not parse says why in "error" and never fails the task. */

#include "worker.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EXTRA_ARGS = 24 };

/* argv: the job's command, then the scene and the settings sionna_task.py
   takes, then --at; NULL-terminated, strings owned. NULL out of memory. */
static char **check_argv(const bf_job_t *job, double az, double tilt, size_t *argc)
{
    size_t n = job->sionna_check_argc;
    char **v = calloc(n + EXTRA_ARGS + 1, sizeof *v);
    if (!v)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        v[k++] = bf_strdup(job->sionna_check_command[i]);
    const bf_solver_t *s = &job->solver;
    const bf_measurement_t *m = &job->measurement;
    v[k++] = bf_strdup("{scene_dir}");
    v[k++] = bf_asprintf("--rays=%llu", (unsigned long long)s->samples_per_tx);
    v[k++] = bf_asprintf("--depth=%u", s->max_depth);
    v[k++] = bf_asprintf("--seed=%llu", (unsigned long long)s->seed);
    if (!s->los)
        v[k++] = bf_strdup("--no-los");
    if (!s->specular_reflection)
        v[k++] = bf_strdup("--no-reflection");
    if (!s->refraction)
        v[k++] = bf_strdup("--no-refraction");
    v[k++] = bf_strdup("--cell-size");
    v[k++] = bf_asprintf("%.17g", m->has_cell_size ? m->cell_size[0] : 10.0);
    v[k++] = bf_asprintf("%.17g", m->has_cell_size ? m->cell_size[1] : 10.0);
    v[k++] = bf_asprintf("--height=%.17g", m->has_height ? m->height : 1.5);
    v[k++] = bf_strdup("--at");
    v[k++] = bf_asprintf("%.17g", az);
    v[k++] = bf_asprintf("%.17g", tilt);
    for (size_t i = 0; i < k; i++)
        if (!v[i]) {
            for (size_t j = 0; j < k; j++)
                free(v[j]);
            free(v);
            return NULL;
        }
    *argc = k;
    return v;
}

/* 10 log10(sum |a - b|^2 / sum |b|^2) over the cells, a and b in dBm
   (arrays of n numbers); NAN when they do not compare. */
static double nmse_db(const json_t *a, const json_t *b, size_t n)
{
    if (json_array_size(a) != n || json_array_size(b) != n || n == 0)
        return NAN;
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_array_get(a, i), *y = json_array_get(b, i);
        if (!json_is_number(x) || !json_is_number(y))
            return NAN;
        double p = pow(10.0, json_number_value(x) / 10.0);
        double q = pow(10.0, json_number_value(y) / 10.0);
        num += (p - q) * (p - q);
        den += q * q;
    }
    return den > 0 ? 10.0 * log10(num / den) : NAN;
}

static double number_at(const json_t *doc, const char *a, const char *b)
{
    const json_t *v = json_object_get(json_object_get(doc, a), b);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* What the comparison found, from the native result res and the program's
   result theirs; NULL when they do not compare (why says so). */
static json_t *compare(const json_t *res, const json_t *theirs, char *why, size_t why_len)
{
    const char *status = json_string_value(json_object_get(theirs, "status"));
    if (!status || strcmp(status, "error") == 0) {
        const char *reason = json_string_value(json_object_get(theirs, "reason"));
        snprintf(why, why_len, "the comparison program failed: %.300s",
                 reason ? reason : "no status");
        return NULL;
    }
    size_t n = json_array_size(json_object_get(res, "zone_power_initial"));
    double n0 = nmse_db(json_object_get(res, "zone_power_initial"),
                        json_object_get(theirs, "zone_power_initial"), n);
    double n1 = nmse_db(json_object_get(res, "zone_power_optimized"),
                        json_object_get(theirs, "zone_power_optimized"), n);
    double g_native = number_at(res, "stats", "improvement_mean");
    double g_sionna = number_at(theirs, "stats", "improvement_mean");
    if (!isfinite(n0) || !isfinite(n1) || !isfinite(g_native) || !isfinite(g_sionna)) {
        snprintf(why, why_len,
                 "the maps do not compare: %zu zone cells here, %zu there (the same grid and "
                 "zone are needed)",
                 n, json_array_size(json_object_get(theirs, "zone_power_initial")));
        return NULL;
    }
    const char *backend =
        json_string_value(json_object_get(json_object_get(theirs, "solver"), "backend"));
    double elapsed = json_number_value(json_object_get(theirs, "elapsed_time"));
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:I, s:f, s:s}", "nmse_initial_db", n0,
                     "nmse_optimized_db", n1, "native_gain_db", g_native, "sionna_gain_db",
                     g_sionna, "gain_diff_db", g_native - g_sionna, "cells", (json_int_t)n,
                     "elapsed_s", elapsed, "backend", backend ? backend : "");
}

void worker_sionna_check(worker_task_ctx_t *ctx, json_t *res)
{
    const bf_job_t *job = ctx->job;
    if (!job->sionna_check_command || !json_is_object(res))
        return;
    char why[BF_ERRLEN] = "";
    json_t *found = NULL;
    double az = number_at(res, "boresight_optimized", "azimuth_deg");
    double tilt = number_at(res, "boresight_optimized", "tilt_deg");
    size_t argc = 0;
    char **argv = isfinite(az) && isfinite(tilt) ? check_argv(job, az, tilt, &argc) : NULL;
    if (!argv) {
        snprintf(why, sizeof why, "%s",
                 isfinite(az) ? "out of memory" : "the result has no optimized orientation");
    } else {
        /* the same exec path as an exec task, with this job's command */
        bf_job_t as_exec = *job;
        as_exec.task = BF_TASK_EXEC;
        as_exec.exec_command = argv;
        as_exec.exec_argc = argc;
        worker_task_ctx_t sub = *ctx;
        sub.job = &as_exec;
        json_t *theirs = NULL;
        char err[BF_ERRLEN] = "";
        if (ctx->progress)
            ctx->progress(ctx->ud, "sionna_check", 0.0);
        bf_err_t rc = worker_exec(&sub, &theirs, err);
        if (rc != BF_OK)
            snprintf(why, sizeof why, "%s", err[0] ? err : bf_strerror(rc));
        else
            found = compare(res, theirs, why, sizeof why);
        json_decref(theirs);
        for (size_t i = 0; i < argc; i++)
            free(argv[i]);
        free(argv);
    }
    if (!found)
        found = json_pack("{s:s}", "error", why[0] ? why : "out of memory");
    if (found && json_object_set_new(res, "sionna_check", found) != 0)
        bf_warn("sionna_check: out of memory adding the comparison");
}
