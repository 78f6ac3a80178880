/*  tests/fuzz/fuzz_proto.c - libFuzzer harness for the wire decoder: every
    frame a peer can send goes through proto_decode (proto/proto.h). Besides
    "no crash, no leak, no sanitizer report", it checks the codec's contract
    on every frame the decoder accepts: the decoded message encodes again,
    and the encoding decodes to the same message (type, every field of its
    mask, obj by json_equal), and fields outside the mask stay zero. Failures
    must come with a reason. The same bytes also go through
    proto_decode_raw (the worker's decoder: what proto_decode accepts it
    accepts, with obj's bytes converting to the same document),
    proto_msgpack_to_json, the decoder of bare documents, and
    proto_msgpack_members (a member's bytes convert to that member),
    proto_msgpack_check (it takes what proto_msgpack_to_json takes, and
    refuses the rest with the same reason) and proto_msgpack_patch (on a
    map, the bytes it makes convert to what json_object_update makes of the
    tree, and check again). */

#include "../../common/bf_config.h"
#include "../../proto/proto.h"
#include "fuzz_util.h"

#include <math.h>

static bool str_same(const char *a, const char *b)
{
    /* The encoder sends a missing string as "". */
    return !strcmp(a ? a : "", b ? b : "");
}

static bool real_same(double a, double b)
{
    return a == b || (isnan(a) && isnan(b));
}

static void check_same(const proto_msg_t *a, const proto_msg_t *b)
{
    uint32_t m = proto_type_fields(a->type);
    FUZZ_ASSERT(a->type == b->type, "type %d then %d", (int)a->type, (int)b->type);
#define CHECK_FIELD_(name, kind) check_##kind(m &PF(name), #name, &a->name, &b->name);
#define check_STR(in, n, x, y)                                                                     \
    FUZZ_ASSERT(in ? str_same(*(x), *(y)) : (!*(x) && !*(y)), "%s: '%s' then '%s'", n,             \
                *(x) ? *(x) : "(null)", *(y) ? *(y) : "(null)")
#define check_UINT(in, n, x, y)                                                                    \
    FUZZ_ASSERT(in ? *(x) == *(y) : (!*(x) && !*(y)), "%s: %llu then %llu", n,                     \
                (unsigned long long)*(x), (unsigned long long)*(y))
#define check_REAL(in, n, x, y)                                                                    \
    FUZZ_ASSERT(in ? real_same(*(x), *(y)) : (*(x) == 0 && *(y) == 0), "%s: %g then %g", n, *(x),  \
                *(y))
#define check_OBJ(in, n, x, y)                                                                     \
    FUZZ_ASSERT(in ? (*(x) && *(y) && json_equal(*(x), *(y))) : (!*(x) && !*(y)),                  \
                "%s differs after a round trip", n)
    PROTO_FIELDS(CHECK_FIELD_)
#undef CHECK_FIELD_
}

/* The job document of a SUBMIT (broker) or TASK (worker), as they check it. */
static void check_job_doc(const json_t *obj)
{
    char err[BF_ERRLEN] = "";
    bf_job_t job;
    bf_err_t rc = bf_job_from_json(obj, &job, err);
    if (rc != BF_OK) {
        FUZZ_NOTE("job refused: %s", err);
        fuzz_check_reason(rc, err);
        FUZZ_ASSERT(!job.name && !job.scenes && !job.exec_command, "a refused job not cleared");
        return;
    }
    FUZZ_ASSERT(job.name && job.output && job.output[0] == '/', "accepted without name or output");
    for (size_t i = 0; i < job.scene_count; i++)
        FUZZ_ASSERT(bf_safe_name(job.scenes[i]), "unsafe scene name accepted");
    json_t *doc = bf_job_to_json(&job, true);
    FUZZ_ASSERT(doc, "bf_job_to_json failed");
    bf_job_t back;
    rc = bf_job_from_json(doc, &back, err);
    FUZZ_ASSERT(rc == BF_OK, "an accepted job does not validate again: %s", err);
    json_t *again = bf_job_to_json(&back, true);
    FUZZ_ASSERT(again && json_equal(doc, again), "the job document changed on a second trip");
    json_decref(again);
    json_decref(doc);
    bf_job_clear(&back);
    bf_job_clear(&job);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[BF_ERRLEN] = "";
    proto_msg_t msg;
    bf_err_t rc = proto_decode(data, size, &msg, err);
    if (rc != BF_OK) {
        FUZZ_NOTE("frame refused: %s", err);
        FUZZ_ASSERT(rc == BF_EPROTO || rc == BF_ENOMEM, "proto_decode returned %d", (int)rc);
        fuzz_check_reason(rc, err);
        FUZZ_ASSERT(msg.type == PROTO_NONE && !msg.obj && !msg.worker, "a refused msg not cleared");
    } else {
        FUZZ_ASSERT(msg.type > PROTO_NONE && msg.type < PROTO_TYPE_MAX, "type %d", (int)msg.type);
        uint8_t *again = NULL;
        size_t again_size = 0;
        rc = proto_encode(&msg, &again, &again_size);
        FUZZ_ASSERT(rc == BF_OK, "an accepted %s does not encode again (%d)",
                    proto_type_name(msg.type), (int)rc);
        proto_msg_t back;
        char err2[BF_ERRLEN] = "";
        rc = proto_decode(again, again_size, &back, err2);
        FUZZ_ASSERT(rc == BF_OK, "the re-encoded %s is refused: %s", proto_type_name(msg.type),
                    err2);
        check_same(&msg, &back);
        if (msg.type == PROTO_SUBMIT || msg.type == PROTO_TASK)
            check_job_doc(msg.obj);
        proto_msg_clear(&back);
        free(again);
    }
    proto_msg_t raw;
    err[0] = '\0';
    bf_err_t rrc = proto_decode_raw(data, size, &raw, err);
    if (rrc != BF_OK) {
        FUZZ_ASSERT(rc != BF_OK, "proto_decode_raw refuses what proto_decode takes: %s", err);
        FUZZ_ASSERT(raw.type == PROTO_NONE && !raw.obj_raw, "a refused raw msg not cleared");
        fuzz_check_reason(rrc, err);
    } else {
        FUZZ_ASSERT(!raw.obj, "proto_decode_raw built a tree");
        if (rc == BF_OK && msg.obj) {
            json_t *conv = NULL;
            FUZZ_ASSERT(raw.obj_raw &&
                            proto_msgpack_to_json(raw.obj_raw, raw.obj_raw_len, &conv, err) ==
                                BF_OK &&
                            json_equal(conv, msg.obj),
                        "obj's raw bytes differ from the decoded obj");
            json_decref(conv);
        }
    }
    proto_msg_clear(&raw);
    proto_msg_clear(&msg);

    json_t *doc = NULL;
    err[0] = '\0';
    rc = proto_msgpack_to_json(data, size, &doc, err);
    if (rc == BF_OK) {
        FUZZ_ASSERT(doc != NULL, "accepted without a value");
        uint8_t *packed = NULL;
        size_t packed_size = 0;
        rc = proto_json_to_msgpack(doc, &packed, &packed_size);
        FUZZ_ASSERT(rc == BF_OK, "an accepted document does not encode again (%d)", (int)rc);
        json_t *back = NULL;
        char err2[BF_ERRLEN] = "";
        rc = proto_msgpack_to_json(packed, packed_size, &back, err2);
        FUZZ_ASSERT(rc == BF_OK, "the re-encoded document is refused: %s", err2);
        FUZZ_ASSERT(json_equal(doc, back), "the document differs after a round trip");
        json_decref(back);
        free(packed);
    } else {
        FUZZ_ASSERT(!doc, "refused but returned a value");
        fuzz_check_reason(rc, err);
    }
    /* the broker's results: checked and amended as bytes, as a tree would be */
    char cerr[BF_ERRLEN] = "";
    bf_err_t crc = proto_msgpack_check(data, size, cerr);
    FUZZ_ASSERT(crc == rc && (rc == BF_ENOMEM || !strcmp(cerr, err)),
                "proto_msgpack_check says %d (%s), the tree %d (%s)", (int)crc, cerr, (int)rc, err);
    if (json_is_object(doc)) {
        json_t *set = json_pack("{s:s, s:I, s:[{s:s}]}", "status", "error", "attempt",
                                (json_int_t)3, "failures", "reason", "r");
        uint8_t *patched = NULL;
        size_t plen = 0;
        FUZZ_ASSERT(set && proto_msgpack_patch(data, size, set, &patched, &plen) == BF_OK,
                    "an accepted map does not take three members");
        json_t *want = json_deep_copy(doc), *got = NULL;
        json_object_update(want, set);
        FUZZ_ASSERT(proto_msgpack_check(patched, plen, NULL) == BF_OK &&
                        proto_msgpack_to_json(patched, plen, &got, NULL) == BF_OK &&
                        json_equal(got, want),
                    "the patched map differs from the updated tree");
        json_decref(got);
        json_decref(want);
        json_decref(set);
        free(patched);
    }
    /* proto_msgpack_members (the collector's JOBINFO and result): spans
       inside the bytes, and on a map that converts, the members the tree
       has, their bytes converting to the same values */
    static const char *const members[] = {"job", "result"};
    const uint8_t *at[2];
    size_t len[2];
    bool map = proto_msgpack_members(data, size, members, 2, at, len);
    for (int k = 0; k < 2; k++) {
        bool found = map && at[k];
        FUZZ_ASSERT(!found || (at[k] > data && len[k] > 0 && at[k] + len[k] <= data + size),
                    "member %s outside the document", members[k]);
        if (!json_is_object(doc))
            continue;
        json_t *want = json_object_get(doc, members[k]), *got = NULL;
        FUZZ_ASSERT(found == (want != NULL), "member %s: found %d, in the tree %d", members[k],
                    (int)found, want != NULL);
        if (found)
            FUZZ_ASSERT(proto_msgpack_to_json(at[k], len[k], &got, NULL) == BF_OK &&
                            json_equal(got, want),
                        "member %s converts to another value", members[k]);
        json_decref(got);
    }
    json_decref(doc);
    return 0;
}
