/*  cli/cli_reuse.c - resuming a campaign: every task of a job gets its
    content key (bf_task_key), and a task whose key matches a finished
    result in the job's output directory (its results.jsonl, and those of
    the earlier jobs the collector set aside there as previous-*) is not
    run again: the broker takes that result for it, marked "reused" with
    the job it came from. A change to a scene's files, to the solver,
    measurement or optimizer settings, to an exec command, or to the engine
    changes the key, and only those tasks run. --recompute runs them all. */

#include "cli.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#define LOG_MAX (1u << 30) /* bytes of one results.jsonl read (the collector's own bound) */

/* Adds the finished, keyed results of one results.jsonl to by_key (later
   lines win); a file that is not there is nothing to add. */
static void read_log(const char *path, json_t *by_key)
{
    char *text = NULL, err[BF_ERRLEN];
    size_t len = 0;
    if (bf_read_file(path, LOG_MAX, &text, &len, err) != BF_OK)
        return;
    for (char *line = text, *end; line < text + len; line = end + 1) {
        end = memchr(line, '\n', (size_t)(text + len - line));
        if (!end)
            break; /* a torn last line: the collector cuts it off too */
        json_t *res = json_loadb(line, (size_t)(end - line), 0, NULL);
        const char *key = json_string_value(json_object_get(res, "key"));
        const char *status = json_string_value(json_object_get(res, "status"));
        if (bf_task_key_valid(key) && status &&
            (!strcmp(status, "success") || !strcmp(status, "failed")))
            json_object_set(by_key, key, res);
        json_decref(res);
    }
    free(text);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int previous_only(const struct dirent *e)
{
    return !strncmp(e->d_name, "previous-", 9);
}

/* {key: result} of every finished result in output and its previous-*. */
static json_t *earlier_results(const char *output)
{
    json_t *by_key = json_object();
    if (!by_key || !output)
        return by_key;
    struct dirent **names = NULL;
    int n = scandir(output, &names, previous_only, by_name);
    for (int i = 0; i < n; i++) {
        char *path = bf_asprintf("%s/%s/results.jsonl", output, names[i]->d_name);
        if (path)
            read_log(path, by_key);
        free(path);
        free(names[i]);
    }
    free(names);
    char *path = bf_asprintf("%s/results.jsonl", output);
    if (path)
        read_log(path, by_key);
    free(path);
    return by_key;
}

bf_err_t cli_reuse_plan(const bf_job_t *job, bool recompute, json_t **keys_out, json_t **reuse_out,
                        char *err)
{
    *keys_out = *reuse_out = NULL;
    json_t *keys = json_array(), *reuse = json_array();
    json_t *earlier = recompute ? json_object() : earlier_results(job->output);
    char(*key)[BF_KEY_LEN + 1] = calloc(job->scene_count ? job->scene_count : 1, sizeof *key);
    bf_err_t rc =
        keys && reuse && earlier && key ? BF_OK : bf_fail(err, BF_ENOMEM, "out of memory");
    if (rc == BF_OK)
        rc = bf_task_keys(job, key, err);
    for (size_t i = 0; rc == BF_OK && i < job->scene_count; i++) {
        if (json_array_append_new(keys, json_string(key[i])) != 0) {
            rc = bf_fail(err, BF_ENOMEM, "out of memory");
            break;
        }
        json_t *res = json_object_get(earlier, key[i]);
        const char *scene = json_string_value(json_object_get(res, "scene"));
        if (res && scene && !strcmp(scene, job->scenes[i]) &&
            json_array_append_new(
                reuse, json_pack("{s:I, s:O}", "index", (json_int_t)i, "result", res)) != 0)
            rc = bf_fail(err, BF_ENOMEM, "out of memory");
    }
    json_decref(earlier);
    free(key);
    if (rc != BF_OK) {
        json_decref(keys);
        json_decref(reuse);
        return rc;
    }
    *keys_out = keys;
    *reuse_out = reuse;
    return BF_OK;
}
