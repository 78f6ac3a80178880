/*  common/bf_key.c - the content key of one task of a job: what determines
    its result, hashed, so that a campaign run again after a change to a
    few scenes (or after a cancel) takes the results it already has instead
    of computing them again (docs/operations.md, "Resuming a campaign").

    The key is XXH3-128 (libxxhash: a content hash, not a signature; the
    inputs are the user's own) over, in order:
      - a tag with the key's format version;
      - for a boresight task, the engine's version (BF_ENGINE_VERSION);
      - the job's spec as a worker receives it, less what cannot change a
        result (name, output, scenes_root, timeout_s, max_attempts), as
        JSON with sorted keys: task kind, validation, solver, measurement,
        optimizer, and the exec command;
      - every regular file under the scene's directory, in byte order of
        their relative paths: the path, its size and its bytes.
    Symbolic links are followed (the engine reads through them); anything
    else (sockets, devices) is left out. The walk is bounded in depth, so a
    link loop ends in an error, not a hang. */

#include "bf_config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define KEY_TAG       "beamfleet-task-key-1"
#define KEY_MAX_DEPTH 32
#define KEY_CHUNK     (1u << 16)
/* bf_task_keys: up to KEY_THREADS threads, one per KEY_PER_THREAD scenes;
   four keep a disk busy while the cores hash (most of a small scene's
   time is waiting for its directory and files to be read). */
#define KEY_THREADS    4
#define KEY_PER_THREAD 64

typedef struct {
    XXH3_state_t *state;
    char *chunk;
    char *err;
} keyer_t;

static bf_err_t feed(keyer_t *k, const void *p, size_t n)
{
    return XXH3_128bits_update(k->state, p, n) == XXH_OK ? BF_OK
                                                         : bf_fail(k->err, BF_EIO, "hash failed");
}

static bf_err_t feed_file(keyer_t *k, const char *path, const char *rel)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bf_fail(k->err, BF_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    bf_err_t rc =
        fstat(fd, &st) == 0 ? BF_OK : bf_fail(k->err, BF_EIO, "%s: %s", path, strerror(errno));
    uint64_t size = (uint64_t)st.st_size;
    if (rc == BF_OK && (rc = feed(k, rel, strlen(rel) + 1)) == BF_OK)
        rc = feed(k, &size, sizeof size);
    while (rc == BF_OK) {
        ssize_t n = read(fd, k->chunk, KEY_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = bf_fail(k->err, BF_EIO, "%s: %s", path, strerror(errno));
        if (n <= 0)
            break;
        rc = feed(k, k->chunk, (size_t)n);
    }
    close(fd);
    return rc;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* Feeds every regular file under dir (rel is its path from the scene's
   directory, "" at the top). */
static bf_err_t feed_dir(keyer_t *k, const char *dir, const char *rel, int depth)
{
    if (depth > KEY_MAX_DEPTH)
        return bf_fail(k->err, BF_EINVAL, "%s: more than %d directories deep (a link loop?)", dir,
                       KEY_MAX_DEPTH);
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, by_name);
    if (n < 0)
        return bf_fail(k->err, BF_EIO, "%s: %s", dir, strerror(errno));
    bf_err_t rc = BF_OK;
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (rc != BF_OK || !strcmp(name, ".") || !strcmp(name, "..")) {
            free(names[i]);
            continue;
        }
        char *path = bf_asprintf("%s/%s", dir, name);
        char *sub = *rel ? bf_asprintf("%s/%s", rel, name) : bf_strdup(name);
        struct stat st;
        if (!path || !sub)
            rc = bf_fail(k->err, BF_ENOMEM, "out of memory");
        else if (stat(path, &st) != 0)
            rc = bf_fail(k->err, BF_EIO, "%s: %s", path, strerror(errno));
        else if (S_ISDIR(st.st_mode))
            rc = feed_dir(k, path, sub, depth + 1);
        else if (S_ISREG(st.st_mode))
            rc = feed_file(k, path, sub);
        free(path);
        free(sub);
        free(names[i]);
    }
    free(names);
    return rc;
}

/* The spec less what cannot change a result, as canonical JSON. */
static char *spec_text(const bf_job_t *job)
{
    json_t *spec = bf_job_to_json(job, false);
    if (!spec)
        return NULL;
    static const char *const ignored[] = {"name",      "output",       "scenes_root",
                                          "timeout_s", "max_attempts", "max_scenes"};
    for (size_t i = 0; i < BF_ARRAY_LEN(ignored); i++)
        json_object_del(spec, ignored[i]);
    char *text = json_dumps(spec, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(spec);
    return text;
}

/* The key of task i from spec (spec_text's, the same for every task). */
static bf_err_t key_from(const bf_job_t *job, const char *spec, size_t i, char key[BF_KEY_LEN + 1],
                         char *err)
{
    key[0] = '\0';
    if (!job->scenes_root || i >= job->scene_count)
        return bf_fail(err, BF_EINVAL, "task key: no scene %zu in the job", i);
    keyer_t k = {.state = XXH3_createState(), .chunk = malloc(KEY_CHUNK), .err = err};
    char *dir = bf_asprintf("%s/%s", job->scenes_root, job->scenes[i]);
    bf_err_t rc =
        k.state && k.chunk && spec && dir ? BF_OK : bf_fail(err, BF_ENOMEM, "out of memory");
    if (rc == BF_OK && XXH3_128bits_reset(k.state) != XXH_OK)
        rc = bf_fail(err, BF_EIO, "hash failed");
    if (rc == BF_OK)
        rc = feed(&k, KEY_TAG, sizeof KEY_TAG);
    if (rc == BF_OK && job->task == BF_TASK_BORESIGHT)
        rc = feed(&k, BF_ENGINE_VERSION, sizeof BF_ENGINE_VERSION);
    if (rc == BF_OK)
        rc = feed(&k, spec, strlen(spec) + 1);
    if (rc == BF_OK)
        rc = feed_dir(&k, dir, "", 0);
    if (rc == BF_OK) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(k.state));
        for (size_t b = 0; b < sizeof c.digest; b++)
            snprintf(key + 2 * b, 3, "%02x", c.digest[b]);
    }
    XXH3_freeState(k.state);
    free(k.chunk);
    free(dir);
    return rc;
}

bf_err_t bf_task_key(const bf_job_t *job, size_t i, char key[BF_KEY_LEN + 1], char *err)
{
    key[0] = '\0';
    char *spec = spec_text(job);
    bf_err_t rc =
        spec ? key_from(job, spec, i, key, err) : bf_fail(err, BF_ENOMEM, "out of memory");
    free(spec);
    return rc;
}

/* One bf_task_keys: the next task to key, and the first failure. */
typedef struct {
    const bf_job_t *job;
    char *spec; /* spec_text's, the same for every task */
    char (*keys)[BF_KEY_LEN + 1];
    atomic_size_t next;
    pthread_mutex_t lock;
    size_t failed; /* the first task that failed, scene_count while none */
    bf_err_t rc;
    char err[BF_ERRLEN];
} keying_t;

static void *key_some(void *arg)
{
    keying_t *kg = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&kg->next, 1);
        pthread_mutex_lock(&kg->lock);
        bool done = i >= kg->failed; /* past the end, or past a failure */
        pthread_mutex_unlock(&kg->lock);
        if (done)
            return NULL;
        char why[BF_ERRLEN];
        bf_err_t rc = key_from(kg->job, kg->spec, i, kg->keys[i], why);
        if (rc == BF_OK)
            continue;
        pthread_mutex_lock(&kg->lock);
        if (i < kg->failed) {
            kg->failed = i;
            kg->rc = rc;
            snprintf(kg->err, sizeof kg->err, "scene %.200s: %.280s", kg->job->scenes[i], why);
        }
        pthread_mutex_unlock(&kg->lock);
    }
}

bf_err_t bf_task_keys(const bf_job_t *job, char (*keys)[BF_KEY_LEN + 1], char *err)
{
    keying_t kg = {.job = job, .keys = keys, .failed = job->scene_count, .rc = BF_OK};
    atomic_init(&kg.next, 0);
    if (!(kg.spec = spec_text(job)))
        return bf_fail(err, BF_ENOMEM, "out of memory");
    pthread_mutex_init(&kg.lock, NULL);
    pthread_t threads[KEY_THREADS - 1];
    size_t want = job->scene_count / KEY_PER_THREAD, started = 0;
    while (started + 1 < want && started < KEY_THREADS - 1 &&
           pthread_create(&threads[started], NULL, key_some, &kg) == 0)
        started++;
    key_some(&kg); /* this thread is one of them (the only one for a small job) */
    for (size_t t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
    pthread_mutex_destroy(&kg.lock);
    free(kg.spec);
    if (kg.rc != BF_OK)
        return bf_fail(err, kg.rc, "%s", kg.err);
    return BF_OK;
}

bool bf_task_key_valid(const char *key)
{
    return key && strlen(key) == BF_KEY_LEN && strspn(key, "0123456789abcdef") == BF_KEY_LEN;
}
