/*  proto/proto_test.c - the codec as its users see it: every message of the
    table survives a round trip, documents keep their shape, and every kind
    of malformed frame (truncated at any byte, wrong version, wrong types,
    lying lengths, too deep, trailing bytes, random mutations) is refused
    with BF_EPROTO and never crashes. Ends with real ZeroMQ sockets. */

#include "proto.h"

#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static int failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static void fill(proto_msg_t *m, proto_type_t type)
{
    proto_msg_init(m, type);
    CHECK(proto_msg_set(&m->worker, "host:42:gpu0") == BF_OK);
    CHECK(proto_msg_set(&m->job_id, "0123456789ab") == BF_OK);
    CHECK(proto_msg_set(&m->task_id, "0123456789abcdef0123456789abcdef") == BF_OK);
    CHECK(proto_msg_set(&m->scene, "city_007") == BF_OK);
    CHECK(proto_msg_set(&m->stage, "trace") == BF_OK);
    CHECK(proto_msg_set(&m->reason, "timeout after 5 s — ünïcode") == BF_OK);
    m->credit = 7;
    m->attempt = 2;
    m->seq = UINT64_MAX;
    m->total = 1000000;
    m->code = BF_ENOENT;
    m->timeout_ms = 3600000;
    m->fraction = 0.25;
    m->obj = json_pack("{s:s, s:[i, f, b, n], s:{s:I}}", "host", "h", "list", -3, 2.5, 1, "nested",
                       "big", (json_int_t)INT64_MAX);
}

static void test_round_trip(void)
{
    for (int t = 1; t < PROTO_TYPE_MAX; t++) {
        uint32_t mask = proto_type_fields((proto_type_t)t);
        CHECK(strcmp(proto_type_name((proto_type_t)t), "?") != 0);
        proto_msg_t m, d;
        fill(&m, (proto_type_t)t);
        uint8_t *data;
        size_t size;
        CHECK(proto_encode(&m, &data, &size) == BF_OK);
        char err[BF_ERRLEN];
        CHECK(proto_decode(data, size, &d, err) == BF_OK);
        CHECK(d.type == (proto_type_t)t);
        if (mask & PF(task_id))
            CHECK(d.task_id && !strcmp(d.task_id, m.task_id));
        else
            CHECK(d.task_id == NULL);
        if (mask & PF(reason))
            CHECK(d.reason && !strcmp(d.reason, m.reason));
        if (mask & PF(seq))
            CHECK(d.seq == UINT64_MAX);
        if (mask & PF(fraction))
            CHECK(d.fraction == 0.25);
        if (mask & PF(obj))
            CHECK(json_equal(d.obj, m.obj));
        else
            CHECK(d.obj == NULL);
        /* Truncated at every byte: refused, never a crash. */
        for (size_t cut = 0; cut < size; cut++) {
            proto_msg_t x;
            CHECK(proto_decode(data, cut, &x, NULL) == BF_EPROTO);
            CHECK(x.type == PROTO_NONE && x.obj == NULL);
        }
        free(data);
        proto_msg_clear(&m);
        proto_msg_clear(&d);
    }
}

/* Decodes bytes that must be refused, with want in the message. */
static void refuse(const char *hex_or_raw, size_t len, const char *want)
{
    proto_msg_t m;
    char err[BF_ERRLEN] = "";
    bf_err_t rc = proto_decode((const uint8_t *)hex_or_raw, len, &m, err);
    CHECK(rc == BF_EPROTO);
    if (want && !strstr(err, want)) {
        fprintf(stderr, "  expected '%s' in '%s'\n", want, err);
        failures++;
    }
}

static void test_malformed(void)
{
    refuse("\x92\x07\x05", 3, "version 7, expected 1");  /* [7, 5] */
    refuse("\x92\x01\x63", 3, "unknown message type");   /* [1, 99] */
    refuse("\x91\x01", 2, "expected an array");          /* [1] */
    refuse("\x01", 1, "expected an array");              /* 1 */
    refuse("\x92\x01\x05\x00", 4, "trailing");           /* heartbeat + a byte */
    refuse("\x93\x01\x05\x01", 4, "fields, expected 0"); /* heartbeat with a field */
    refuse("\x92\x01\x0b", 3, "fields, expected 1");     /* cancel without job_id */
    refuse("\x93\x01\x0b\x05", 4, "field job_id: expected str, got uint");
    refuse("\xdd\xff\xff\xff\xff", 5, "truncated");             /* array claims 4 billion items */
    refuse("\x93\x01\x07\xdf\x7f\xff\xff\xff", 8, "truncated"); /* map claims 2^31 pairs */
    refuse("\x93\x01\x07\x93\x01\x02\x03", 7, "field obj: expected map, got array");
    refuse("\x93\x01\x07\x81\x01\x02", 6, "map key must be a string");
    refuse("\x93\x01\x0b\xa3"
           "a\0b",
           7, "NUL");
    refuse("\x92\x01\xc1", 3, "unsupported");
    refuse("\x93\x01\x0b\xc7\x01\x01\x00", 7, "unsupported"); /* ext */
    /* too deep: obj = {"a": [[[[...]]]]} */
    uint8_t deep[128];
    size_t n = 0;
    deep[n++] = 0x93, deep[n++] = 0x01, deep[n++] = 0x07, deep[n++] = 0x81, deep[n++] = 0xa1,
    deep[n++] = 'a';
    for (int i = 0; i < 60; i++)
        deep[n++] = 0x91;
    deep[n++] = 0x00;
    refuse((const char *)deep, n, "nesting");
    /* too big */
    uint8_t *big = calloc(1, PROTO_MAX_FRAME + 2);
    refuse((const char *)big, PROTO_MAX_FRAME + 1, "exceeds");
    free(big);
    /* a string field too long */
    proto_msg_t m;
    proto_msg_init(&m, PROTO_CANCEL);
    char *longs = malloc(PROTO_MAX_STR + 2);
    memset(longs, 'x', PROTO_MAX_STR + 1);
    longs[PROTO_MAX_STR + 1] = '\0';
    CHECK(proto_msg_set(&m.job_id, longs) == BF_OK);
    uint8_t *data;
    size_t size;
    CHECK(proto_encode(&m, &data, &size) == BF_EPROTO);
    proto_msg_clear(&m);
    free(longs);
}

static void test_mutations(void)
{
    proto_msg_t m;
    fill(&m, PROTO_TASK);
    uint8_t *data;
    size_t size;
    CHECK(proto_encode(&m, &data, &size) == BF_OK);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    unsigned accepted = 0;
    uint8_t *copy = malloc(size);
    for (int i = 0; i < 100000; i++) {
        memcpy(copy, data, size);
        int flips = 1 + (int)(x % 4);
        for (int k = 0; k < flips; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            copy[x % size] = (uint8_t)(x >> 32);
        }
        proto_msg_t d;
        if (proto_decode(copy, size, &d, NULL) == BF_OK)
            accepted++;
        proto_msg_clear(&d);
    }
    printf("mutations: %u of 100000 still decoded (all without a crash)\n", accepted);
    free(copy);
    free(data);
    proto_msg_clear(&m);
}

static void test_zmq(void)
{
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER), *dealer = zmq_socket(ctx, ZMQ_DEALER);
    CHECK(zmq_bind(router, "inproc://proto-test") == 0);
    CHECK(zmq_connect(dealer, "inproc://proto-test") == 0);
    zmq_send(dealer, "a", 1, ZMQ_SNDMORE);
    zmq_send(dealer, "b", 1, ZMQ_SNDMORE);
    zmq_send(dealer, "c", 1, 0); /* a 3-frame garbage message */
    proto_msg_t m, r;
    fill(&m, PROTO_READY);
    CHECK(proto_send(dealer, NULL, 0, &m, 0) == BF_OK);
    uint8_t id[256];
    size_t id_len = sizeof id;
    char err[BF_ERRLEN];
    CHECK(proto_recv(router, id, &id_len, &r, 0, err) == BF_EPROTO);
    id_len = sizeof id;
    CHECK(proto_recv(router, id, &id_len, &r, 0, err) == BF_OK); /* not desynchronized */
    CHECK(r.type == PROTO_READY && json_equal(r.obj, m.obj));
    proto_msg_clear(&r);
    proto_msg_t hb;
    proto_msg_init(&hb, PROTO_HEARTBEAT);
    CHECK(proto_send(router, id, id_len, &hb, 0) == BF_OK);
    CHECK(proto_recv(dealer, NULL, NULL, &r, 0, err) == BF_OK && r.type == PROTO_HEARTBEAT);
    CHECK(proto_recv(dealer, NULL, NULL, &r, ZMQ_DONTWAIT, err) == BF_EIO);
    proto_msg_clear(&m);
    zmq_close(dealer);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

static void test_json(void)
{
    json_t *doc =
        json_loads("{\"a\": [1, -2, 3.5, true, false, null, \"ü\"], \"b\": {\"c\": {}}}", 0, NULL);
    uint8_t *data;
    size_t size;
    CHECK(proto_json_to_msgpack(doc, &data, &size) == BF_OK);
    json_t *back = NULL;
    CHECK(proto_msgpack_to_json(data, size, &back, NULL) == BF_OK);
    CHECK(json_equal(doc, back));
    free(data);
    json_decref(back);
    json_decref(doc);
}

int main(void)
{
    test_round_trip();
    test_malformed();
    test_mutations();
    test_zmq();
    test_json();
    if (failures) {
        fprintf(stderr, "proto_test: %d checks failed\n", failures);
        return 1;
    }
    printf("proto_test: all checks passed\n");
    return 0;
}
