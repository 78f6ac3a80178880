/*  tests/fuzz/fuzz_proto_seeds.c - writes the seed corpus of fuzz_proto with
    the real encoder: one frame per message type with every field of its mask
    set (obj a document with every JSON kind, nesting, unicode, large and
    negative integers; a real job document in SUBMIT and TASK, plus an exec
    job), each also truncated, with a wrong version, with an
    unknown type and with a trailing byte, and bare documents for
    proto_msgpack_to_json. Run once by hand when the protocol changes:
        build-fuzz/tests/fuzz/fuzz_proto_seeds tests/fuzz/corpus/proto */

#include "../../common/bf_config.h"
#include "../../proto/proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int write_seed(const char *dir, const char *name, const uint8_t *data, size_t size)
{
    char path[1024];
    char err[BF_ERRLEN];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (bf_write_atomic(path, data, size, err) != BF_OK) {
        fprintf(stderr, "fuzz_proto_seeds: %s\n", err);
        return 1;
    }
    return 0;
}

static json_t *sample_doc(int type)
{
    return json_pack("{s:s, s:i, s:I, s:f, s:b, s:n, s:[i, s, {s:[f, b]}], s:{s:{s:{s:s}}}, s:s}",
                     "name", "city_000", "attempt", type, "big", (json_int_t)INT64_MAX, "dbm",
                     -87.25, "ok", 1, "none", "list", -5, "x", "deep", 1.5e300, 0, "nest", "a", "b",
                     "c", "d", "unicode", "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa1");
}

/* A job document as the client (SUBMIT, with scenes) or the broker (TASK)
   sends it. */
static json_t *job_doc(bool exec, bool with_scenes)
{
    bf_job_t job;
    bf_job_defaults(&job);
    static const char *const scenes[] = {"city_000", "city_001", "munich"};
    static const char *const argv[] = {"python3", "/opt/run.py", "{scene_dir}", "{output}"};
    job.name = bf_strdup(exec ? "sweep" : "demo");
    job.scenes_root = bf_strdup("/data/scenes");
    job.output = bf_strdup("/data/results");
    job.scenes = calloc(3, sizeof *job.scenes);
    for (size_t i = 0; job.scenes && i < 3; i++)
        job.scenes[job.scene_count++] = bf_strdup(scenes[i]);
    job.task = exec ? BF_TASK_EXEC : BF_TASK_BORESIGHT;
    job.measurement.has_cell_size = true;
    job.measurement.cell_size[0] = job.measurement.cell_size[1] = 5;
    if (exec) {
        job.exec_command = calloc(5, sizeof *job.exec_command);
        for (size_t i = 0; job.exec_command && i < 4; i++)
            job.exec_command[job.exec_argc++] = bf_strdup(argv[i]);
    }
    json_t *doc = bf_job_to_json(&job, with_scenes);
    bf_job_clear(&job);
    return doc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_proto_seeds DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    int bad = 0;
    for (int t = 1; t < PROTO_TYPE_MAX; t++) {
        proto_msg_t m;
        proto_msg_init(&m, (proto_type_t)t);
        uint32_t mask = proto_type_fields((proto_type_t)t);
        if (proto_msg_set(&m.worker, "host-a:4242:gpu0") != BF_OK ||
            proto_msg_set(&m.job_id, "0123456789abcdef0123456789abcdef") != BF_OK ||
            proto_msg_set(&m.task_id, "fedcba9876543210fedcba9876543210") != BF_OK ||
            proto_msg_set(&m.scene, "city_007") != BF_OK ||
            proto_msg_set(&m.stage, "trace") != BF_OK ||
            proto_msg_set(&m.reason, "unknown peer: send READY again") != BF_OK)
            return 1;
        m.credit = 4;
        m.attempt = 2;
        m.seq = 1234567890123ull;
        m.total = 16;
        m.code = 3;
        m.timeout_ms = 3600000;
        m.fraction = 0.375;
        m.obj = t == PROTO_SUBMIT  ? job_doc(false, true)
                : t == PROTO_TASK  ? job_doc(false, false)
                : (mask & PF(obj)) ? sample_doc(t)
                                   : NULL;
        uint8_t *data = NULL;
        size_t size = 0;
        if (proto_encode(&m, &data, &size) != BF_OK) {
            fprintf(stderr, "fuzz_proto_seeds: cannot encode %s\n", proto_type_name(m.type));
            return 1;
        }
        char name[128];
        snprintf(name, sizeof name, "%02d-%s", t, proto_type_name(m.type));
        bad |= write_seed(dir, name, data, size);
        snprintf(name, sizeof name, "%02d-%s-truncated", t, proto_type_name(m.type));
        bad |= write_seed(dir, name, data, size / 2 + 1);
        uint8_t *copy = malloc(size + 1);
        if (!copy)
            return 1;
        memcpy(copy, data, size);
        copy[size] = 0xc0; /* nil after the frame */
        snprintf(name, sizeof name, "%02d-%s-trailing", t, proto_type_name(m.type));
        bad |= write_seed(dir, name, copy, size + 1);
        copy[1] = 2; /* version 2 (data[0] is the array header) */
        snprintf(name, sizeof name, "%02d-%s-version2", t, proto_type_name(m.type));
        bad |= write_seed(dir, name, copy, size);
        copy[1] = 1;
        copy[2] = 0x7f; /* type 127 */
        snprintf(name, sizeof name, "%02d-%s-type127", t, proto_type_name(m.type));
        bad |= write_seed(dir, name, copy, size);
        free(copy);
        if (m.obj) {
            uint8_t *doc = NULL;
            size_t doc_size = 0;
            if (proto_json_to_msgpack(m.obj, &doc, &doc_size) != BF_OK)
                return 1;
            if (t == PROTO_READY)
                bad |= write_seed(dir, "doc-sample", doc, doc_size);
            free(doc);
        }
        free(data);
        proto_msg_clear(&m);
    }
    /* An exec job, as submitted and as a task. */
    static const proto_type_t exec_types[] = {PROTO_TASK, PROTO_SUBMIT};
    for (size_t i = 0; i < sizeof exec_types / sizeof exec_types[0]; i++) {
        proto_type_t t = exec_types[i];
        proto_msg_t m;
        proto_msg_init(&m, t);
        m.attempt = 1;
        m.timeout_ms = 60000;
        m.obj = job_doc(true, t == PROTO_SUBMIT);
        uint8_t *data = NULL;
        size_t size = 0;
        if (!m.obj || proto_encode(&m, &data, &size) != BF_OK)
            return 1;
        char name[64];
        snprintf(name, sizeof name, "%02d-%s-exec", (int)t, proto_type_name(m.type));
        bad |= write_seed(dir, name, data, size);
        free(data);
        proto_msg_clear(&m);
    }
    return bad;
}
