/*  proto/proto_test.c - the codec as its users see it: every message of the
    table survives a round trip with every field set, documents keep their
    shape (nesting, unicode, large and negative integers, reals, booleans,
    null), and every kind of malformed frame (truncated at any byte, wrong
    version, unknown type, wrong field types for every field of every message,
    extra and missing fields, oversize frames and strings, too deep, non-map
    obj, non-string keys, trailing bytes, lying lengths, random mutations) is
    refused with BF_EPROTO and a precise reason, never a crash. No sockets:
    this test links the codec alone (bf_proto), and proto_codec_no_zmq checks
    that it needs no libzmq; messages on real sockets are proto_link_test.c. */

#include "proto.h"

/* The codec's header must not bring the transport in. */
#if defined(ZMQ_VERSION) || defined(BF_SECURITY_H_INCLUDED)
#error "proto.h includes zmq.h or bf_security.h: the codec must build without libzmq"
#endif

#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bf_check.h"

/* The field table again, as a peer would see it: name, kind, offset. */
enum { STR, UINT, REAL, OBJ };
static const struct {
    const char *name;
    int kind;
    size_t offset;
} fields[] = {
#define ROW_(name, kind) {#name, kind, offsetof(proto_msg_t, name)},
    PROTO_FIELDS(ROW_)
#undef ROW_
};
static const char *const kind_names[] = {"str", "uint", "real", "map"};

static unsigned popcount(uint32_t m)
{
    unsigned n = 0;
    for (; m; m &= m - 1)
        n++;
    return n;
}

/* ---- building frames by hand ----------------------------------------------- */

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} frame_t;

static void frame_init(frame_t *f)
{
    msgpack_sbuffer_init(&f->sb);
    msgpack_packer_init(&f->pk, &f->sb, msgpack_sbuffer_write);
}

static void put_str(frame_t *f, const char *s, size_t n)
{
    msgpack_pack_str(&f->pk, n);
    msgpack_pack_str_body(&f->pk, s, n);
}

/* Packs a value of the given kind that the decoder must accept. */
static void put_good(frame_t *f, int kind)
{
    switch (kind) {
    case STR:
        put_str(f, "abc", 3);
        break;
    case UINT:
        msgpack_pack_uint64(&f->pk, 5);
        break;
    case REAL:
        msgpack_pack_double(&f->pk, 0.5);
        break;
    case OBJ:
        msgpack_pack_map(&f->pk, 0);
        break;
    }
}

/* Decodes f's bytes, which must be refused with want in the reason. */
static void refuse_bytes(const uint8_t *data, size_t size, const char *want, int line)
{
    proto_msg_t m;
    char err[BF_ERRLEN] = "";
    bf_err_t rc = proto_decode(data, size, &m, err);
    if (rc != BF_EPROTO || (want && !strstr(err, want))) {
        fprintf(stderr, "%s:%d: wanted BF_EPROTO with '%s', got %d '%s'\n", __FILE__, line,
                want ? want : "", rc, err);
        failures++;
    }
    /* a refused message is left cleared */
    CHECK(m.type == PROTO_NONE && !m.worker && !m.task_id && !m.obj && m.seq == 0);
    proto_msg_clear(&m);
}
#define REFUSE(data, size, want) refuse_bytes((const uint8_t *)(data), (size), (want), __LINE__)

static void refuse_frame(frame_t *f, const char *want, int line)
{
    refuse_bytes((const uint8_t *)f->sb.data, f->sb.size, want, line);
    msgpack_sbuffer_destroy(&f->sb);
}
#define REFUSE_FRAME(f, want) refuse_frame((f), (want), __LINE__)

static void accept_frame(frame_t *f, proto_msg_t *m, int line)
{
    char err[BF_ERRLEN] = "";
    bf_err_t rc = proto_decode((const uint8_t *)f->sb.data, f->sb.size, m, err);
    if (rc != BF_OK) {
        fprintf(stderr, "%s:%d: wanted BF_OK, got %d '%s'\n", __FILE__, line, rc, err);
        failures++;
    }
    msgpack_sbuffer_destroy(&f->sb);
}
#define ACCEPT_FRAME(f, m) accept_frame((f), (m), __LINE__)

/* Starts a frame [1, type, ...] of n fields. */
static void head(frame_t *f, proto_type_t type, unsigned n)
{
    frame_init(f);
    msgpack_pack_array(&f->pk, 2 + n);
    msgpack_pack_uint64(&f->pk, PROTO_VERSION);
    msgpack_pack_uint64(&f->pk, (uint64_t)type);
}

/* ---- a message with every field set --------------------------------------- */

static json_t *sample_doc(void)
{
    return json_pack("{s:s, s:[i, I, f, b, b, n, s], s:{s:I, s:{s:[]}}, s:s}", "host", "h", "list",
                     -3, (json_int_t)INT64_MIN, 2.5, 1, 0, "ü€𝄞", "nested", "big",
                     (json_int_t)INT64_MAX, "deeper", "empty", "reason",
                     "timeout after 5 s — ünïcode");
}

static void fill(proto_msg_t *m, proto_type_t type)
{
    proto_msg_init(m, type);
    /* every string field distinct, so a swapped order would show */
    for (size_t f = 0; f < PROTO_FIELD_COUNT; f++) {
        void *slot = (char *)m + fields[f].offset;
        char buf[64];
        switch (fields[f].kind) {
        case STR:
            snprintf(buf, sizeof buf, "%s-välue-%zu", fields[f].name, f);
            CHECK(proto_msg_set((char **)slot, buf) == BF_OK);
            break;
        case UINT:
            *(uint64_t *)slot = f == 0 ? 0 : (UINT64_MAX - f); /* large: uint64 on the wire */
            break;
        case REAL:
            *(double *)slot = 0.25 + (double)f;
            break;
        case OBJ:
            *(json_t **)slot = sample_doc();
            break;
        }
    }
    m->code = BF_ENOENT;
}

/* Compares the fields of mask between a and b; outside mask b must be empty. */
static void same_fields(const proto_msg_t *a, const proto_msg_t *b, uint32_t mask)
{
    for (size_t f = 0; f < PROTO_FIELD_COUNT; f++) {
        const void *sa = (const char *)a + fields[f].offset;
        const void *sb = (const char *)b + fields[f].offset;
        bool in = mask & (1u << f);
        bool ok = true;
        switch (fields[f].kind) {
        case STR: {
            const char *x = *(char *const *)sa, *y = *(char *const *)sb;
            ok = in ? (y && !strcmp(x ? x : "", y)) : y == NULL;
            break;
        }
        case UINT:
            ok = *(const uint64_t *)sb == (in ? *(const uint64_t *)sa : 0);
            break;
        case REAL:
            ok = *(const double *)sb == (in ? *(const double *)sa : 0.0);
            break;
        case OBJ: {
            json_t *x = *(json_t *const *)sa, *y = *(json_t *const *)sb;
            ok = in ? (y && (x ? json_equal(x, y) : json_object_size(y) == 0)) : y == NULL;
            break;
        }
        }
        if (!ok) {
            fprintf(stderr, "%s: field %s differs after a round trip\n", proto_type_name(a->type),
                    fields[f].name);
            failures++;
        }
    }
}

/* ---- tests -------------------------------------------------------------------- */

static void test_table(void)
{
    CHECK(!strcmp(proto_type_name(PROTO_READY), "ready"));
    CHECK(!strcmp(proto_type_name(PROTO_STATUS_REPLY), "status-reply"));
    CHECK(!strcmp(proto_type_name(PROTO_NONE), "?"));
    CHECK(!strcmp(proto_type_name(PROTO_TYPE_MAX), "?"));
    CHECK(!strcmp(proto_type_name((proto_type_t)-1), "?"));
    CHECK(proto_type_fields(PROTO_NONE) == 0 && proto_type_fields(PROTO_TYPE_MAX) == 0);
    CHECK(proto_type_fields(PROTO_READY) == (PF(worker) | PF(credit) | PF(obj)));
    CHECK(proto_type_fields(PROTO_HEARTBEAT) == 0);
    /* STATS (worker -> broker GPU figures) is code 19 and carries obj only */
    CHECK(PROTO_STATS == 19 && !strcmp(proto_type_name(PROTO_STATS), "stats"));
    CHECK(proto_type_fields(PROTO_STATS) == PF(obj));
    {
        proto_msg_t s, d;
        proto_msg_init(&s, PROTO_STATS);
        s.obj =
            json_pack("{s:f, s:I, s:I, s:f}", "gpu_util", 87.0, "mem_used", (json_int_t)1073741824,
                      "mem_total", (json_int_t)85899345920LL, "temperature_c", 64.0);
        uint8_t *data = NULL;
        size_t size = 0;
        char err[BF_ERRLEN] = "";
        CHECK(s.obj && proto_encode(&s, &data, &size) == BF_OK);
        CHECK(data && proto_decode(data, size, &d, err) == BF_OK && d.type == PROTO_STATS);
        CHECK(json_integer_value(json_object_get(d.obj, "mem_total")) == 85899345920LL);
        CHECK(json_real_value(json_object_get(d.obj, "gpu_util")) == 87.0);
        free(data);
        proto_msg_clear(&s);
        proto_msg_clear(&d);
    }
    /* LOST (supervisor -> broker: a worker died on this host) is code 20 */
    CHECK(PROTO_LOST == 20 && !strcmp(proto_type_name(PROTO_LOST), "lost"));
    CHECK(proto_type_fields(PROTO_LOST) == (PF(worker) | PF(reason)));
    /* ERROR's fields travel in PROTO_FIELDS order: reason before code
       (docs/protocol.md lists them so, and its Python peer decodes so) */
    {
        proto_msg_t e, d;
        proto_msg_init(&e, PROTO_ERROR);
        e.code = BF_EPERM;
        CHECK(proto_msg_set(&e.reason, "no") == BF_OK);
        uint8_t *data = NULL;
        size_t size = 0;
        CHECK(proto_encode(&e, &data, &size) == BF_OK);
        static const uint8_t wire[] = {0x94, 0x01, 0x11, 0xa2, 'n', 'o', 0x0a};
        CHECK(data && size == sizeof wire && !memcmp(data, wire, sizeof wire));
        CHECK(data && proto_decode(data, size, &d, NULL) == BF_OK && d.code == BF_EPERM &&
              !strcmp(d.reason, "no"));
        free(data);
        proto_msg_clear(&e);
        proto_msg_clear(&d);
        proto_msg_init(&e, PROTO_LOST);
        CHECK(proto_msg_set(&e.worker, "h:9:cpu0") == BF_OK &&
              proto_msg_set(&e.reason, "killed by signal 9") == BF_OK);
        CHECK(proto_encode(&e, &data, &size) == BF_OK);
        CHECK(data && data[0] == 0x94 && data[2] == 20 && data[3] == 0xa8 &&
              !memcmp(data + 4, "h:9:cpu0", 8) && data[12] == 0xa0 + 18);
        free(data);
        proto_msg_clear(&e);
    }
    /* every code from 1 to the last is a message, and names are unique */
    for (int t = 1; t < PROTO_TYPE_MAX; t++) {
        CHECK(strcmp(proto_type_name((proto_type_t)t), "?") != 0);
        for (int u = 1; u < t; u++)
            CHECK(strcmp(proto_type_name((proto_type_t)t), proto_type_name((proto_type_t)u)));
    }
    proto_msg_t m;
    proto_msg_init(&m, PROTO_ACK);
    CHECK(proto_msg_set(&m.task_id, "x") == BF_OK && !strcmp(m.task_id, "x"));
    CHECK(proto_msg_set(&m.task_id, NULL) == BF_OK && m.task_id == NULL);
    proto_msg_clear(&m);
    proto_msg_clear(&m); /* twice is fine */
    proto_msg_clear(NULL);
}

static void test_round_trip(void)
{
    for (int t = 1; t < PROTO_TYPE_MAX; t++) {
        uint32_t mask = proto_type_fields((proto_type_t)t);
        proto_msg_t m, d;
        fill(&m, (proto_type_t)t);
        uint8_t *data;
        size_t size;
        CHECK(proto_encode(&m, &data, &size) == BF_OK);
        /* [version, type, fields...]: a fixarray while there are < 16 */
        CHECK(data[0] == 0x90 + 2 + popcount(mask) && data[1] == PROTO_VERSION && data[2] == t);
        char err[BF_ERRLEN] = "";
        CHECK(proto_decode(data, size, &d, err) == BF_OK);
        CHECK(d.type == (proto_type_t)t);
        same_fields(&m, &d, mask);
        proto_msg_clear(&d);

        /* Truncated at every byte: refused, never a crash, msg left empty. */
        for (size_t cut = 0; cut < size; cut++) {
            uint8_t *part = malloc(cut ? cut : 1); /* exact size, so ASan sees overreads */
            memcpy(part, data, cut);
            REFUSE(part, cut, cut == 0 ? "empty" : "truncated");
            free(part);
        }
        /* One byte too many, and two messages in one frame. */
        uint8_t *more = malloc(2 * size);
        memcpy(more, data, size);
        more[size] = 0xc0;
        REFUSE(more, size + 1, "1 trailing bytes");
        memcpy(more + size, data, size);
        REFUSE(more, 2 * size, "trailing bytes");
        free(more);
        free(data);

        /* Nothing set: strings go as "", obj as {}. */
        proto_msg_t empty;
        proto_msg_init(&empty, (proto_type_t)t);
        CHECK(proto_encode(&empty, &data, &size) == BF_OK);
        CHECK(proto_decode(data, size, &d, NULL) == BF_OK);
        same_fields(&empty, &d, mask);
        free(data);
        proto_msg_clear(&d);
        proto_msg_clear(&m);
    }
}

/* The example in docs/protocol.md, byte for byte. */
static void test_worked_example(void)
{
    static const uint8_t want[] = {0x95, 0x01, 0x01, 0xa8, 0x68, 0x3a, 0x31, 0x3a, 0x63, 0x70, 0x75,
                                   0x30, 0x01, 0x81, 0xa4, 0x68, 0x6f, 0x73, 0x74, 0xa1, 0x68};
    proto_msg_t m;
    proto_msg_init(&m, PROTO_READY);
    CHECK(proto_msg_set(&m.worker, "h:1:cpu0") == BF_OK);
    m.credit = 1;
    m.obj = json_pack("{s:s}", "host", "h");
    uint8_t *data;
    size_t size;
    CHECK(proto_encode(&m, &data, &size) == BF_OK);
    CHECK(size == sizeof want && !memcmp(data, want, size));
    free(data);
    proto_msg_clear(&m);
}

static void test_encode_refuses(void)
{
    proto_msg_t m;
    uint8_t *data = (uint8_t *)"x";
    size_t size = 1;
    /* unknown types */
    proto_type_t bad_types[] = {PROTO_NONE, PROTO_TYPE_MAX, (proto_type_t)99, (proto_type_t)-1};
    for (size_t i = 0; i < sizeof bad_types / sizeof *bad_types; i++) {
        proto_msg_init(&m, bad_types[i]);
        CHECK(proto_encode(&m, &data, &size) == BF_EINVAL && data == NULL && size == 0);
    }
    /* a string field at the limit goes, one byte more does not */
    char *longs = malloc(PROTO_MAX_STR + 2);
    memset(longs, 'x', PROTO_MAX_STR + 1);
    longs[PROTO_MAX_STR] = '\0';
    proto_msg_init(&m, PROTO_CANCEL);
    CHECK(proto_msg_set(&m.job_id, longs) == BF_OK);
    CHECK(proto_encode(&m, &data, &size) == BF_OK);
    proto_msg_t d;
    CHECK(proto_decode(data, size, &d, NULL) == BF_OK && strlen(d.job_id) == PROTO_MAX_STR);
    proto_msg_clear(&d);
    free(data);
    longs[PROTO_MAX_STR] = 'x';
    longs[PROTO_MAX_STR + 1] = '\0';
    CHECK(proto_msg_set(&m.job_id, longs) == BF_OK);
    CHECK(proto_encode(&m, &data, &size) == BF_EPROTO && data == NULL);
    /* invalid UTF-8 in a field */
    CHECK(proto_msg_set(&m.job_id, "a\xff") == BF_OK);
    CHECK(proto_encode(&m, &data, &size) == BF_EPROTO);
    proto_msg_clear(&m);
    free(longs);
    /* a non-finite real */
    proto_msg_init(&m, PROTO_PROGRESS);
    m.fraction = NAN;
    CHECK(proto_encode(&m, &data, &size) == BF_EPROTO);
    m.fraction = INFINITY;
    CHECK(proto_encode(&m, &data, &size) == BF_EPROTO);
    proto_msg_clear(&m);
    /* obj must be an object; its strings may not hold NUL */
    proto_msg_init(&m, PROTO_SUBMIT);
    m.obj = json_array();
    CHECK(proto_encode(&m, &data, &size) == BF_EPROTO);
    json_decref(m.obj);
    m.obj = json_pack("{s:o}", "a", json_stringn("x\0y", 3));
    CHECK(proto_encode(&m, &data, &size) == BF_EPROTO);
    json_decref(m.obj);
    /* over PROTO_MAX_FRAME (32 MiB): 520 strings of 64 KiB */
    m.obj = json_array();
    char *chunk = malloc(16 * PROTO_MAX_STR + 2);
    memset(chunk, 'y', 16 * PROTO_MAX_STR);
    chunk[16 * PROTO_MAX_STR] = '\0';
    json_t *arr = json_array();
    for (int i = 0; i < 520; i++)
        json_array_append_new(arr, json_string(chunk));
    json_decref(m.obj);
    m.obj = json_pack("{s:o}", "big", arr);
    CHECK(proto_encode(&m, &data, &size) == BF_EPROTO);
    /* 500 of them (31.25 MiB, more than an exec result of 16 MiB) fit, and come back */
    while (json_array_size(arr) > 500)
        json_array_remove(arr, 0);
    CHECK(proto_encode(&m, &data, &size) == BF_OK && size < PROTO_MAX_FRAME);
    CHECK(proto_decode(data, size, &d, NULL) == BF_OK && json_equal(d.obj, m.obj));
    proto_msg_clear(&d);
    free(data);
    /* a document string of 64 KiB + 1 */
    chunk[16 * PROTO_MAX_STR - 1] = '\0';
    strcat(chunk, "zz");
    json_decref(m.obj);
    m.obj = json_pack("{s:s}", "a", chunk);
    CHECK(proto_encode(&m, &data, &size) == BF_EPROTO);
    free(chunk);
    proto_msg_clear(&m);
}

/* For every message and every field in it: a value of each wrong kind is
   refused with "type: field name: expected kind, got other". Then one field
   too many and one too few. */
static void test_wrong_fields(void)
{
    for (int t = 1; t < PROTO_TYPE_MAX; t++) {
        uint32_t mask = proto_type_fields((proto_type_t)t);
        unsigned n = popcount(mask);
        for (size_t bad = 0; bad < PROTO_FIELD_COUNT; bad++) {
            if (!(mask & (1u << bad)))
                continue;
            /* wrong kinds to try for this field: str, uint, int, bool, nil, array, map */
            for (int w = 0; w < 7; w++) {
                static const char *got[] = {"str", "uint", "int", "bool", "nil", "array", "map"};
                int k = fields[bad].kind;
                if ((k == STR && w == 0) || (k == UINT && w == 1) || (k == OBJ && w == 6) ||
                    (k == REAL && (w == 1 || w == 2)))
                    continue; /* that one is right */
                frame_t f;
                head(&f, (proto_type_t)t, n);
                for (size_t g = 0; g < PROTO_FIELD_COUNT; g++) {
                    if (!(mask & (1u << g)))
                        continue;
                    if (g != bad) {
                        put_good(&f, fields[g].kind);
                        continue;
                    }
                    switch (w) {
                    case 0:
                        put_str(&f, "s", 1);
                        break;
                    case 1:
                        msgpack_pack_uint64(&f.pk, 7);
                        break;
                    case 2:
                        msgpack_pack_int64(&f.pk, -7);
                        break;
                    case 3:
                        msgpack_pack_true(&f.pk);
                        break;
                    case 4:
                        msgpack_pack_nil(&f.pk);
                        break;
                    case 5:
                        msgpack_pack_array(&f.pk, 0);
                        break;
                    case 6:
                        msgpack_pack_map(&f.pk, 0);
                        break;
                    }
                }
                char want[BF_ERRLEN];
                snprintf(want, sizeof want, "%s: field %s: expected %s, got %s",
                         proto_type_name((proto_type_t)t), fields[bad].name,
                         kind_names[fields[bad].kind], got[w]);
                REFUSE_FRAME(&f, want);
            }
        }
        /* all fields right: accepted */
        frame_t f;
        head(&f, (proto_type_t)t, n);
        for (size_t g = 0; g < PROTO_FIELD_COUNT; g++)
            if (mask & (1u << g))
                put_good(&f, fields[g].kind);
        proto_msg_t m;
        ACCEPT_FRAME(&f, &m);
        CHECK(m.type == (proto_type_t)t);
        proto_msg_clear(&m);
        /* one extra, one missing */
        char want[BF_ERRLEN];
        head(&f, (proto_type_t)t, n + 1);
        for (size_t g = 0; g < PROTO_FIELD_COUNT; g++)
            if (mask & (1u << g))
                put_good(&f, fields[g].kind);
        msgpack_pack_uint64(&f.pk, 1);
        snprintf(want, sizeof want, "%s: %u fields, expected %u", proto_type_name((proto_type_t)t),
                 n + 1, n);
        REFUSE_FRAME(&f, want);
        if (n > 0) {
            head(&f, (proto_type_t)t, n - 1);
            unsigned put = 0;
            for (size_t g = 0; g < PROTO_FIELD_COUNT && put < n - 1; g++)
                if (mask & (1u << g))
                    put_good(&f, fields[g].kind), put++;
            snprintf(want, sizeof want, "%s: %u fields, expected %u",
                     proto_type_name((proto_type_t)t), n - 1, n);
            REFUSE_FRAME(&f, want);
        }
    }
    /* the exact message of the brief */
    frame_t f;
    head(&f, PROTO_TASK, 6);
    msgpack_pack_uint64(&f.pk, 1);
    msgpack_pack_uint64(&f.pk, 2);
    put_str(&f, "s", 1);
    msgpack_pack_uint64(&f.pk, 1);
    msgpack_pack_uint64(&f.pk, 1);
    msgpack_pack_map(&f.pk, 0);
    REFUSE_FRAME(&f, "task: field job_id: expected str, got uint");
}

/* What UINT and REAL fields accept besides the canonical forms. */
static void test_number_forms(void)
{
    /* PROGRESS: task_id, stage, attempt, fraction (PROTO_FIELDS order) */
    static const struct {
        uint8_t attempt[9], fraction[9];
        size_t alen, flen;
        uint64_t want_attempt;
        double want_fraction;
    } cases[] = {
        {{0x05}, {0x01}, 1, 1, 5, 1.0},                                 /* fixints */
        {{0xcc, 0xff}, {0xff}, 2, 1, 255, -1.0},                        /* uint8, -1 */
        {{0xd0, 0x05}, {0xd0, 0x80}, 2, 2, 5, -128.0},                  /* int8 >= 0 is a uint */
        {{0xcd, 0x01, 0x00}, {0xca, 0x3f, 0x00, 0, 0}, 3, 5, 256, 0.5}, /* uint16, float32 */
        {{0xce, 0, 1, 0, 0}, {0xcb, 0x3f, 0xd0, 0, 0, 0, 0, 0, 0}, 5, 9, 65536, 0.25},
        {{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
         {0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe},
         9,
         9,
         UINT64_MAX,
         -2.0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint8_t buf[64];
        size_t n = 0;
        buf[n++] = 0x96, buf[n++] = 0x01, buf[n++] = PROTO_PROGRESS;
        buf[n++] = 0xa1, buf[n++] = 't';
        buf[n++] = 0xa1, buf[n++] = 's';
        memcpy(buf + n, cases[i].attempt, cases[i].alen), n += cases[i].alen;
        memcpy(buf + n, cases[i].fraction, cases[i].flen), n += cases[i].flen;
        proto_msg_t m;
        char err[BF_ERRLEN] = "";
        CHECK(proto_decode(buf, n, &m, err) == BF_OK);
        CHECK(m.attempt == cases[i].want_attempt && m.fraction == cases[i].want_fraction);
        proto_msg_clear(&m);
    }
    /* a negative int in a uint field, and non-finite reals */
    REFUSE("\x96\x01\x03\xa1t\xa1s\xff\x00", 9, "progress: field attempt: expected uint, got int");
    REFUSE("\x96\x01\x03\xa1t\xa1s\x01\xcb\x7f\xf8\0\0\0\0\0\0", 17, "fraction: real is not");
    REFUSE("\x96\x01\x03\xa1t\xa1s\x01\xca\x7f\x80\0\0", 13, "not a finite number");
}

static void test_malformed(void)
{
    frame_t f;
    REFUSE("", 0, "empty frame");
    REFUSE("\x92\x07\x05", 3, "version 7, expected 1");
    REFUSE("\x92\x00\x05", 3, "version 0, expected 1");
    REFUSE("\x92\xff\x05", 3, "version: expected uint, got int");
    REFUSE("\x92\xa1"
           "1\x05",
           4, "version: expected uint, got str");
    REFUSE("\x92\x01\x63", 3, "unknown message type 99");
    REFUSE("\x92\x01\x00", 3, "unknown message type 0");
    REFUSE("\x92\x01\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 11, "unknown message type");
    REFUSE("\x92\x01\xa1x", 4, "type: expected uint, got str");
    REFUSE("\x91\x01", 2, "expected an array");
    REFUSE("\x90", 1, "expected an array");
    REFUSE("\x01", 1, "expected an array");
    REFUSE("\x80", 1, "expected an array");
    REFUSE("\x92\x01\x05\x00", 4, "1 trailing bytes");   /* heartbeat + a byte */
    REFUSE("\x92\x01\x05\x92\x01\x05", 6, "3 trailing"); /* two heartbeats */
    REFUSE("\x93\x01\x05\x01", 4, "heartbeat: 1 fields, expected 0");
    REFUSE("\x92\x01\x0b", 3, "cancel: 0 fields, expected 1");
    REFUSE("\x93\x01\x0b\x05", 4, "cancel: field job_id: expected str, got uint");
    /* lying lengths: refused before anything is allocated for them */
    REFUSE("\xdd\xff\xff\xff\xff", 5, "truncated");             /* array of 4 billion */
    REFUSE("\x93\x01\x07\xdf\x7f\xff\xff\xff", 8, "truncated"); /* map of 2^31 pairs */
    REFUSE("\x93\x01\x0b\xdb\xff\xff\xff\xff", 8, "exceeds");   /* str of 4 GiB */
    REFUSE("\x93\x01\x0b\xdb\x00\x00\x00\x05xy", 10, "truncated");
    REFUSE("\x93\x01\x0b\xc4\x01x", 6, "expected str, got bin");
    REFUSE("\x92\x01\xc1", 3, "unsupported MessagePack type 0xc1");
    REFUSE("\x93\x01\x0b\xc7\x01\x01\x00", 7, "unsupported"); /* ext8 */
    REFUSE("\x93\x01\x0b\xd4\x01\x00", 6, "unsupported");     /* fixext1 */

    /* strings in fields: NUL, bad UTF-8, too long */
    REFUSE("\x93\x01\x0b\xa3"
           "a\0b",
           7, "cancel: field job_id: string contains a NUL byte");
    REFUSE("\x93\x01\x0b\xa2\xc3\x28", 6, "field job_id: string is not valid UTF-8");
    REFUSE("\x93\x01\x0b\xa2\xc0\x80", 6, "not valid UTF-8");         /* overlong NUL */
    REFUSE("\x93\x01\x0b\xa3\xed\xa0\x80", 7, "not valid UTF-8");     /* a surrogate */
    REFUSE("\x93\x01\x0b\xa4\xf4\x90\x80\x80", 8, "not valid UTF-8"); /* past U+10FFFF */
    proto_msg_t m;
    head(&f, PROTO_CANCEL, 1);
    put_str(&f, "\xf0\x9d\x84\x9e\xc3\xbc", 6); /* U+1D11E, ü */
    ACCEPT_FRAME(&f, &m);
    CHECK(m.job_id && !strcmp(m.job_id, "\xf0\x9d\x84\x9e\xc3\xbc"));
    proto_msg_clear(&m);
    char *longs = malloc(16 * PROTO_MAX_STR + 2);
    memset(longs, 'x', 16 * PROTO_MAX_STR + 2);
    head(&f, PROTO_CANCEL, 1);
    put_str(&f, longs, PROTO_MAX_STR + 1);
    REFUSE_FRAME(&f, "cancel: field job_id: string of 4097 bytes exceeds 4096");
    head(&f, PROTO_CANCEL, 1);
    put_str(&f, longs, PROTO_MAX_STR);
    ACCEPT_FRAME(&f, &m);
    proto_msg_clear(&m);
    /* strings inside obj may be up to 64 KiB; map keys up to PROTO_MAX_STR */
    head(&f, PROTO_SUBMIT, 1);
    msgpack_pack_map(&f.pk, 1);
    put_str(&f, "k", 1);
    put_str(&f, longs, 16 * PROTO_MAX_STR);
    ACCEPT_FRAME(&f, &m);
    CHECK(m.obj && json_string_length(json_object_get(m.obj, "k")) == 16 * PROTO_MAX_STR);
    proto_msg_clear(&m);
    head(&f, PROTO_SUBMIT, 1);
    msgpack_pack_map(&f.pk, 1);
    put_str(&f, "k", 1);
    put_str(&f, longs, 16 * PROTO_MAX_STR + 1);
    REFUSE_FRAME(&f, "string of 65537 bytes exceeds 65536");
    head(&f, PROTO_SUBMIT, 1);
    msgpack_pack_map(&f.pk, 1);
    put_str(&f, longs, PROTO_MAX_STR + 1);
    msgpack_pack_nil(&f.pk);
    REFUSE_FRAME(&f, "submit: field obj: map key: string of 4097 bytes exceeds 4096");
    free(longs);

    /* obj: not a map, non-string keys, duplicate keys, bad values */
    REFUSE("\x93\x01\x07\x93\x01\x02\x03", 7, "submit: field obj: expected map, got array");
    REFUSE("\x93\x01\x07\xa1x", 5, "submit: field obj: expected map, got str");
    REFUSE("\x93\x01\x07\xc0", 4, "submit: field obj: expected map, got nil");
    REFUSE("\x93\x01\x07\x81\x01\x02", 6, "submit: field obj: map key must be a str, got uint");
    REFUSE("\x93\x01\x07\x81\xc0\x02", 6, "map key must be a str, got nil");
    REFUSE("\x93\x01\x07\x81\x90\x02", 6, "map key must be a str, got array");
    REFUSE("\x93\x01\x07\x81\xa1"
           "a\x81\x05\x00",
           9, "map key must be a str, got uint"); /* nested */
    REFUSE("\x93\x01\x07\x82\xa1"
           "a\x01\xa1"
           "a\x02",
           10, "duplicate map key \"a\"");
    REFUSE("\x93\x01\x07\x81\xa1"
           "a\xa2x\0",
           9, "string contains a NUL byte");
    REFUSE("\x93\x01\x07\x81\xa1"
           "a\xc4\x00",
           8, "unsupported MessagePack type bin");
    REFUSE("\x93\x01\x07\x81\xa1"
           "a\xcf\x80\0\0\0\0\0\0\0",
           15, "integer 9223372036854775808 out of range");

    /* nesting: a frame nests at most 32 containers, the message array
       included, so obj with 31 levels is fine and 32 is not */
    for (int levels = 30; levels <= 33; levels++) {
        head(&f, PROTO_SUBMIT, 1);
        msgpack_pack_map(&f.pk, 1); /* level 1 */
        put_str(&f, "a", 1);
        for (int l = 2; l <= levels; l++)
            msgpack_pack_array(&f.pk, 1);
        msgpack_pack_uint64(&f.pk, 0);
        if (levels < PROTO_MAX_DEPTH) {
            ACCEPT_FRAME(&f, &m);
            proto_msg_clear(&m);
        } else {
            REFUSE_FRAME(&f, "nesting deeper than 32");
        }
    }
    /* very deep: refused by the structure check, no deep recursion */
    size_t deep_n = 100000;
    uint8_t *deep = malloc(deep_n);
    memcpy(deep,
           "\x93\x01\x07\x81\xa1"
           "a",
           6);
    memset(deep + 6, 0x91, deep_n - 7);
    deep[deep_n - 1] = 0x00;
    REFUSE(deep, deep_n, "nesting deeper than 32");
    free(deep);

    /* too many values: a map of a million nils */
    head(&f, PROTO_SUBMIT, 1);
    msgpack_pack_map(&f.pk, 1);
    put_str(&f, "a", 1);
    msgpack_pack_array(&f.pk, 4300000);
    for (int i = 0; i < 4300000; i++)
        msgpack_pack_nil(&f.pk);
    REFUSE_FRAME(&f, "more than 4194304 values");
    /* ...while a RESULT of 16 MiB of float64 zone powers (~1.9 million
       values, the exec result size the worker takes) is accepted */
    {
        proto_msg_t big;
        head(&f, PROTO_RESULT, 3);
        put_str(&f, "t", 1);
        msgpack_pack_uint64(&f.pk, 1);
        msgpack_pack_map(&f.pk, 2);
        put_str(&f, "status", 6);
        put_str(&f, "success", 7);
        put_str(&f, "zone_power_initial", 18);
        const int n = (16 << 20) / 9;
        msgpack_pack_array(&f.pk, (size_t)n);
        for (int i = 0; i < n; i++)
            msgpack_pack_double(&f.pk, -90.0 + i % 50);
        CHECK(f.sb.size > (16u << 20) && f.sb.size < PROTO_MAX_FRAME);
        ACCEPT_FRAME(&f, &big);
        CHECK(json_array_size(json_object_get(big.obj, "zone_power_initial")) == (size_t)n);
        proto_msg_clear(&big);
    }

    /* oversize frame: refused on its size alone */
    uint8_t *big = calloc(1, PROTO_MAX_FRAME + 2);
    CHECK(PROTO_MAX_FRAME == 33554432u); /* docs/protocol.md section 6 */
    REFUSE(big, PROTO_MAX_FRAME + 1, "message of 33554433 bytes exceeds 33554432");
    free(big);

    /* err may be NULL */
    CHECK(proto_decode((const uint8_t *)"\x92\x07\x05", 3, &m, NULL) == BF_EPROTO);
}

static void expect_json_round_trip(const char *text)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, JSON_DECODE_ANY, &jerr);
    CHECK(doc != NULL);
    if (!doc) {
        fprintf(stderr, "  bad test JSON %s: %s\n", text, jerr.text);
        return;
    }
    uint8_t *data;
    size_t size;
    CHECK(proto_json_to_msgpack(doc, &data, &size) == BF_OK);
    json_t *back = NULL;
    char err[BF_ERRLEN] = "";
    CHECK(proto_msgpack_to_json(data, size, &back, err) == BF_OK);
    if (!json_equal(doc, back)) {
        fprintf(stderr, "%s:%d: JSON round trip changed %s (%s)\n", __FILE__, __LINE__, text, err);
        failures++;
    }
    /* and the same document as a message's obj, when it is an object */
    if (json_is_object(doc)) {
        proto_msg_t m, d;
        proto_msg_init(&m, PROTO_RESULT);
        m.obj = json_incref(doc);
        uint8_t *mdata;
        size_t msize;
        CHECK(proto_encode(&m, &mdata, &msize) == BF_OK);
        CHECK(proto_decode(mdata, msize, &d, NULL) == BF_OK && json_equal(d.obj, doc));
        free(mdata);
        proto_msg_clear(&d);
        proto_msg_clear(&m);
    }
    free(data);
    json_decref(back);
    json_decref(doc);
}

/* The MessagePack bytes a JSON value becomes. */
static void expect_bytes(json_t *v, const char *want, size_t want_len)
{
    uint8_t *data;
    size_t size;
    CHECK(proto_json_to_msgpack(v, &data, &size) == BF_OK);
    if (size != want_len || memcmp(data, want, size)) {
        fprintf(stderr, "%s:%d: unexpected MessagePack for a JSON value\n", __FILE__, __LINE__);
        failures++;
    }
    free(data);
    json_decref(v);
}

static void test_json(void)
{
    expect_json_round_trip("{\"a\": [1, -2, 3.5, true, false, null, \"ü\"], \"b\": {\"c\": {}}}");
    expect_json_round_trip("{\"unicode\": \"naïve — 日本語 𝄞 \\u00e9\\ud83d\\ude00\","
                           " \"ключ\": \"значение\"}");
    expect_json_round_trip("{\"ints\": [0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295,"
                           " 4294967296, 9223372036854775807]}");
    expect_json_round_trip("{\"neg\": [-1, -32, -33, -128, -129, -32768, -32769, -2147483648,"
                           " -2147483649, -9223372036854775808]}");
    expect_json_round_trip("{\"reals\": [0.0, -0.0, 0.1, -2.5e300, 1e-300, 1.0, 3.141592653589793,"
                           " -1.5]}");
    expect_json_round_trip("{\"bools\": [true, false], \"null\": null, \"empty\": [],"
                           " \"obj\": {}}");
    expect_json_round_trip("{\"nested\": {\"a\": [{\"b\": [[1, {\"c\": null}]]}]}}");
    expect_json_round_trip("[1, \"two\", [3], {\"four\": 4}]");
    expect_json_round_trip("\"just a string\"");
    expect_json_round_trip("-42");
    expect_json_round_trip("null");

    /* negative integers stay negative and signed on the wire, positives unsigned */
    expect_bytes(json_integer(-1), "\xff", 1);
    expect_bytes(json_integer(-33), "\xd0\xdf", 2);
    expect_bytes(json_integer(1), "\x01", 1);
    expect_bytes(json_integer(200), "\xcc\xc8", 2);
    expect_bytes(json_integer(INT64_MIN), "\xd3\x80\0\0\0\0\0\0\0", 9);
    expect_bytes(json_real(2.5), "\xcb\x40\x04\0\0\0\0\0\0", 9);
    expect_bytes(json_true(), "\xc3", 1);
    expect_bytes(json_null(), "\xc0", 1);
    expect_bytes(json_pack("{s:[]}", "a"),
                 "\x81\xa1"
                 "a\x90",
                 4);
    json_t *v = NULL;
    CHECK(proto_msgpack_to_json((const uint8_t *)"\xd3\xff\xff\xff\xff\xff\xff\xff\xfe", 9, &v,
                                NULL) == BF_OK &&
          json_integer_value(v) == -2);
    json_decref(v);
    /* float32 becomes a real */
    CHECK(proto_msgpack_to_json((const uint8_t *)"\xca\x3f\xc0\0\0", 5, &v, NULL) == BF_OK &&
          json_is_real(v) && json_real_value(v) == 1.5);
    json_decref(v);

    /* 32 levels of nesting convert, 33 do not, either way */
    json_t *deep = json_array(), *inner = deep;
    for (int l = 2; l <= PROTO_MAX_DEPTH; l++) {
        json_t *next = json_array();
        json_array_append_new(inner, next);
        inner = next;
    }
    uint8_t *data;
    size_t size;
    CHECK(proto_json_to_msgpack(deep, &data, &size) == BF_OK);
    CHECK(proto_msgpack_to_json(data, size, &v, NULL) == BF_OK && json_equal(v, deep));
    json_decref(v);
    free(data);
    json_array_append_new(inner, json_object());
    CHECK(proto_json_to_msgpack(deep, &data, &size) == BF_EPROTO && data == NULL);
    json_decref(deep);
    uint8_t raw[PROTO_MAX_DEPTH + 2];
    memset(raw, 0x91, PROTO_MAX_DEPTH + 1);
    raw[PROTO_MAX_DEPTH + 1] = 0xc0;
    char err[BF_ERRLEN] = "";
    CHECK(proto_msgpack_to_json(raw, sizeof raw, &v, err) == BF_EPROTO && v == NULL);
    CHECK(strstr(err, "nesting deeper than 32") != NULL);
    CHECK(proto_msgpack_to_json(raw + 1, sizeof raw - 1, &v, err) == BF_OK);
    json_decref(v);

    /* refusals */
    CHECK(proto_json_to_msgpack(NULL, &data, &size) == BF_EINVAL);
    json_t *nul = json_stringn("a\0b", 3);
    CHECK(proto_json_to_msgpack(nul, &data, &size) == BF_EPROTO);
    json_decref(nul);
    CHECK(proto_msgpack_to_json((const uint8_t *)"\x81\x01\x02", 3, &v, err) == BF_EPROTO &&
          strstr(err, "map key must be a str, got uint"));
    CHECK(proto_msgpack_to_json((const uint8_t *)"\x01\x02", 2, &v, err) == BF_EPROTO &&
          strstr(err, "1 trailing bytes"));
    CHECK(proto_msgpack_to_json((const uint8_t *)"\x92\x01", 2, &v, err) == BF_EPROTO &&
          strstr(err, "truncated"));
    CHECK(proto_msgpack_to_json((const uint8_t *)"", 0, &v, err) == BF_EPROTO);
    CHECK(proto_msgpack_to_json((const uint8_t *)"\xcb\x7f\xf0\0\0\0\0\0\0", 9, &v, err) ==
              BF_EPROTO &&
          strstr(err, "finite"));
}

/* proto_msgpack_pick: the members asked for, the last of duplicates, NULL
   for the absent; a document that is no map, or a picked member that cannot
   be converted, is refused and leaves nothing behind; a member not picked is
   passed over even when JSON could not hold it. */
static void test_pick(void)
{
    static const char *const keys[] = {"status", "stats", "absent"};
    json_t *v[3];
    /* {"zone": [300 reals], "status": "x", "stats": {"m": 1}, "status": "success"} */
    json_t *zone = json_array();
    for (int i = 0; i < 300; i++)
        json_array_append_new(zone, json_real(i * 0.5));
    json_t *doc = json_pack("{s:o, s:s, s:{s:i}}", "zone", zone, "status", "x", "stats", "m", 1);
    uint8_t *data;
    size_t size;
    CHECK(doc && proto_json_to_msgpack(doc, &data, &size) == BF_OK);
    json_decref(doc);
    CHECK(data[0] == 0x83); /* a fixmap of 3: append a fourth member, a duplicate */
    uint8_t *dup = malloc(size + 15);
    CHECK(dup != NULL);
    memcpy(dup, data, size);
    memcpy(dup + size, "\xa6status\xa7success", 15);
    dup[0] = 0x84;
    CHECK(proto_msgpack_pick(dup, size + 15, keys, 3, v, NULL) == BF_OK);
    CHECK(json_is_string(v[0]) && !strcmp(json_string_value(v[0]), "success"));
    CHECK(json_integer_value(json_object_get(v[1], "m")) == 1 && v[2] == NULL);
    for (int k = 0; k < 3; k++)
        json_decref(v[k]);
    free(dup);
    char err[BF_ERRLEN] = "";
    CHECK(proto_msgpack_pick(data, size - 1, keys, 3, v, err) == BF_EPROTO && !v[0] && !v[1]);
    free(data);
    CHECK(proto_msgpack_pick((const uint8_t *)"\x91\x01", 2, keys, 3, v, err) == BF_EPROTO &&
          strstr(err, "expected map, got array"));
    /* {"status": "ok", "stats": inf}: the picked inf is refused, status not kept */
    static const uint8_t inf[] = "\x82\xa6status\xa2ok\xa5stats\xcb\x7f\xf0\0\0\0\0\0\0";
    CHECK(proto_msgpack_pick(inf, sizeof inf - 1, keys, 3, v, err) == BF_EPROTO && !v[0] &&
          strstr(err, "finite"));
    /* {"zone": inf, "status": "ok"}: inf not picked, so no matter */
    static const uint8_t skip[] = "\x82\xa4zone\xcb\x7f\xf0\0\0\0\0\0\0\xa6status\xa2ok";
    CHECK(proto_msgpack_pick(skip, sizeof skip - 1, keys, 3, v, NULL) == BF_OK &&
          !strcmp(json_string_value(v[0]), "ok") && !v[1]);
    json_decref(v[0]);
}

/* proto_msgpack_members, one key at a time (proto_msgpack_member here):
   the span of one member's value, the last of duplicates, found by
   walking; anything but a whole well-formed map is refused. Then two keys
   in one walk. */
static bool proto_msgpack_member(const uint8_t *data, size_t size, const char *key,
                                 const uint8_t **at, size_t *len)
{
    return proto_msgpack_members(data, size, &key, 1, at, len) && *at;
}

static void test_member(void)
{
    const uint8_t *at;
    size_t len;
    /* {"job": {"id": "j"}, 7: "x", "result": [1, 2], "job": "second"} (a map16, a key
       that is no string) */
    static const uint8_t doc[] = "\xde\x00\x04\xa3job\x81\xa2id\xa1j\x07\xa1x"
                                 "\xa6result\x92\x01\x02\xa3job\xa6second";
    size_t n = sizeof doc - 1;
    CHECK(proto_msgpack_member(doc, n, "result", &at, &len) && len == 3 &&
          !memcmp(at, "\x92\x01\x02", 3));
    CHECK(proto_msgpack_member(doc, n, "job", &at, &len) && len == 7 &&
          !memcmp(at, "\xa6second", 7));
    CHECK(!proto_msgpack_member(doc, n, "absent", &at, &len) && !at && len == 0);
    CHECK(!proto_msgpack_member(doc, n, "jo", &at, &len));
    /* the same converted whole: the member's bytes read as the tree has it */
    json_t *one = NULL;
    CHECK(proto_msgpack_member(doc, n, "result", &at, &len) &&
          proto_msgpack_to_json(at, len, &one, NULL) == BF_OK);
    CHECK(one && json_array_size(one) == 2 && json_integer_value(json_array_get(one, 1)) == 2);
    json_decref(one);
    for (size_t cut = 0; cut < n; cut++) /* every truncation is refused */
        CHECK(!proto_msgpack_member(doc, cut, "result", &at, &len) && !at);
    uint8_t more[sizeof doc];
    memcpy(more, doc, n);
    more[n] = 0xc0; /* a trailing nil */
    CHECK(!proto_msgpack_member(more, n + 1, "result", &at, &len) && !at);
    CHECK(!proto_msgpack_member((const uint8_t *)"\x91\x01", 2, "result", &at, &len));
    CHECK(!proto_msgpack_member((const uint8_t *)"\x81\xa3job\xc1", 5, "job", &at, &len));
    CHECK(proto_msgpack_member((const uint8_t *)"\x81\xd9\x03job\xc0", 7, "job", &at, &len) &&
          len == 1 && at[0] == 0xc0); /* a str8 key */
    static const char *const both[] = {"job", "absent", "result"};
    const uint8_t *ats[3];
    size_t lens[3];
    CHECK(proto_msgpack_members(doc, n, both, 3, ats, lens) && lens[0] == 7 &&
          !memcmp(ats[0], "\xa6second", 7) && !ats[1] && lens[1] == 0 && lens[2] == 3 &&
          !memcmp(ats[2], "\x92\x01\x02", 3));
    CHECK(!proto_msgpack_members(doc, n - 1, both, 3, ats, lens) && !ats[0] && !ats[2]);
}

/* proto_msgpack_check: what proto_msgpack_to_json refuses, refused with
   the same reason, without a tree; what it takes, taken. */
static void check_like_tree(const uint8_t *doc, size_t n, const char *want)
{
    char e1[BF_ERRLEN] = "", e2[BF_ERRLEN] = "";
    json_t *v = NULL;
    bf_err_t r1 = proto_msgpack_to_json(doc, n, &v, e1);
    bf_err_t r2 = proto_msgpack_check(doc, n, e2);
    json_decref(v);
    CHECK(r1 == r2 && !strcmp(e1, e2));
    CHECK(want ? r2 == BF_EPROTO && strstr(e2, want) : r2 == BF_OK);
    if (r1 != r2 || strcmp(e1, e2) != 0)
        fprintf(stderr, "  tree: %d %s / check: %d %s\n", (int)r1, e1, (int)r2, e2);
}

static void test_check(void)
{
#define DOC_(lit, want) check_like_tree((const uint8_t *)(lit), sizeof(lit) - 1, want)
    DOC_("\x82\xa6status\xa7success\xa4zone\x93\x01\xcb\x3f\xf0\0\0\0\0\0\0\xc0", NULL);
    DOC_("\x81\xa1s\xa2\xc3\x28", "UTF-8");                             /* a value not UTF-8 */
    DOC_("\x81\xa2\xc3\x28\x01", "map key: string is not valid UTF-8"); /* a key */
    DOC_("\x81\x07\x01", "map key must be a str, got uint");
    DOC_("\x82\xa1"
         "a\x01\xa1"
         "a\x02",
         "duplicate map key \"a\"");
    DOC_("\x81\xa1"
         "a\xcf\x80\0\0\0\0\0\0\0",
         "out of range");
    DOC_("\x81\xa1"
         "a\xcb\x7f\xf8\0\0\0\0\0\0",
         "finite"); /* NaN */
    DOC_("\x81\xa1"
         "a\xca\x7f\x80\0\0",
         "finite"); /* float32 inf */
    DOC_("\x81\xa1"
         "a\xc4\x01x",
         "unsupported MessagePack type bin");
    DOC_("\x81\xa1"
         "a\xd4\x01\x02",
         "unsupported MessagePack type 0xd4");
    DOC_("\x81\xa1"
         "a\xa2\0x",
         "NUL");
    DOC_("\x91\x81\xa1"
         "a\x92\x01\xa1\xff",
         "UTF-8"); /* nested, the order of to_json */
    DOC_("\x82\xa1"
         "a\xc1\xa1"
         "a\x01",
         "unsupported MessagePack type 0xc1"); /* structure first */
    DOC_("\x81\xa1"
         "a",
         "truncated");
    DOC_("\x80\xc0", "trailing");
#undef DOC_
    /* a map of 40 keys (the hashed key set), the last one a duplicate */
    json_t *big = json_object();
    char k[8];
    for (int i = 0; i < 40; i++) {
        snprintf(k, sizeof k, "k%d", i);
        json_object_set_new(big, k, json_integer(i));
    }
    uint8_t *data;
    size_t size;
    CHECK(proto_json_to_msgpack(big, &data, &size) == BF_OK && data[0] == 0xde);
    check_like_tree(data, size, NULL);
    uint8_t *dup = malloc(size + 4);
    CHECK(dup != NULL);
    memcpy(dup, data, size);
    memcpy(dup + size, "\xa2k7\x01", 4);
    dup[2] = 41; /* map16 count 40 -> 41 */
    check_like_tree(dup, size + 4, "duplicate map key \"k7\"");
    free(dup);
    free(data);
    json_decref(big);
}

/* proto_msgpack_patch: the members set has replace the map's, the others
   stay byte for byte, in their order; the whole converts to what
   json_object_update makes of the tree. */
static void test_patch(void)
{
    json_t *doc = json_pack("{s:s, s:[f,f,f], s:s, s:i}", "status", "success", "zone", 0.5, 1.5,
                            2.5, "reason", "", "attempt", 7);
    uint8_t *data, *out;
    size_t size, n;
    CHECK(doc && proto_json_to_msgpack(doc, &data, &size) == BF_OK);
    json_t *set = json_pack("{s:s, s:i, s:s, s:[{s:s}]}", "status", "failed", "attempt", 2,
                            "task_id", "t1", "failures", "host", "h");
    CHECK(proto_msgpack_patch(data, size, set, &out, &n) == BF_OK);
    json_t *got = NULL, *want = json_deep_copy(doc);
    json_object_update(want, set);
    CHECK(proto_msgpack_check(out, n, NULL) == BF_OK &&
          proto_msgpack_to_json(out, n, &got, NULL) == BF_OK && json_equal(got, want));
    CHECK(out[0] == 0x86); /* 4 - 2 replaced + 4 */
    /* the members kept come first, as they were: "zone" then "reason" */
    const char *first[] = {"zone"};
    const uint8_t *at;
    size_t len;
    CHECK(proto_msgpack_members(out, n, first, 1, &at, &len) && at == out + 6 && len == 1 + 3 * 9);
    json_decref(got);
    free(out);
    /* an empty set copies the map; a set value that cannot go packed, or
       something that is no map, is refused */
    json_t *none = json_object();
    CHECK(proto_msgpack_patch(data, size, none, &out, &n) == BF_OK && n == size &&
          !memcmp(out, data, size));
    free(out);
    json_t *nul = json_pack("{s:s%}", "reason", "a\0b", (size_t)3);
    CHECK(proto_msgpack_patch(data, size, nul, &out, &n) == BF_EPROTO && !out && n == 0);
    CHECK(proto_msgpack_patch((const uint8_t *)"\x91\x01", 2, set, &out, &n) == BF_EINVAL && !out);
    CHECK(proto_msgpack_patch(data, size, NULL, &out, &n) == BF_EINVAL);
    json_decref(nul);
    json_decref(none);
    json_decref(want);
    json_decref(set);
    json_decref(doc);
    free(data);
}

/* Seeded random mutations of valid encodings: anything may be refused, nothing
   may crash, and whatever is accepted must encode again and decode the same. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

static void test_mutations(void)
{
    uint8_t *valid[PROTO_TYPE_MAX + 1];
    size_t valid_size[PROTO_TYPE_MAX + 1];
    int nvalid = 0;
    for (int t = 1; t < PROTO_TYPE_MAX; t++, nvalid++) {
        proto_msg_t m;
        fill(&m, (proto_type_t)t);
        CHECK(proto_encode(&m, &valid[nvalid], &valid_size[nvalid]) == BF_OK);
        proto_msg_clear(&m);
    }
    json_t *doc = sample_doc();
    CHECK(proto_json_to_msgpack(doc, &valid[nvalid], &valid_size[nvalid]) == BF_OK);
    json_decref(doc);
    int doc_index = nvalid++;

    unsigned accepted = 0, reencoded = 0;
    for (int i = 0; i < 100000; i++) {
        int which = (int)(next_rand() % (uint64_t)nvalid);
        size_t size = valid_size[which];
        uint8_t *buf = malloc(size + 16);
        memcpy(buf, valid[which], size);
        int edits = 1 + (int)(next_rand() % 4);
        for (int e = 0; e < edits && size > 0; e++) {
            uint64_t r = next_rand();
            size_t at = (size_t)((r >> 8) % size);
            switch (r % 6) {
            case 0: /* overwrite a byte */
            case 1:
                buf[at] = (uint8_t)(r >> 40);
                break;
            case 2: /* flip a bit */
                buf[at] ^= (uint8_t)(1u << ((r >> 40) % 8));
                break;
            case 3: /* insert a byte */
                if (size < valid_size[which] + 16) {
                    memmove(buf + at + 1, buf + at, size - at);
                    buf[at] = (uint8_t)(r >> 40);
                    size++;
                }
                break;
            case 4: /* delete a byte */
                memmove(buf + at, buf + at + 1, size - at - 1);
                size--;
                break;
            case 5: /* cut the tail */
                size = at;
                break;
            }
        }
        uint8_t *exact = malloc(size ? size : 1); /* exact size, so ASan sees overreads */
        memcpy(exact, buf, size);
        free(buf);
        if (which == doc_index) {
            json_t *v = NULL;
            if (proto_msgpack_to_json(exact, size, &v, NULL) == BF_OK) {
                accepted++;
                uint8_t *again;
                size_t again_size;
                CHECK(proto_json_to_msgpack(v, &again, &again_size) == BF_OK);
                free(again);
            }
            json_decref(v);
        } else {
            proto_msg_t d, d2;
            if (proto_decode(exact, size, &d, NULL) == BF_OK) {
                accepted++;
                uint8_t *again;
                size_t again_size;
                CHECK(proto_encode(&d, &again, &again_size) == BF_OK);
                CHECK(proto_decode(again, again_size, &d2, NULL) == BF_OK);
                if (d2.type == d.type) {
                    reencoded++;
                    same_fields(&d, &d2, proto_type_fields(d.type));
                }
                proto_msg_clear(&d2);
                free(again);
            } else {
                CHECK(d.type == PROTO_NONE && d.obj == NULL);
            }
            /* raw: never a crash; what proto_decode takes it takes, and its
               obj's bytes convert to the same document */
            proto_msg_t r;
            bf_err_t rr = proto_decode_raw(exact, size, &r, NULL);
            if (d.type != PROTO_NONE) {
                CHECK(rr == BF_OK && r.type == d.type && !r.obj);
                if (d.obj && rr == BF_OK) {
                    json_t *back = NULL;
                    CHECK(proto_msgpack_to_json(r.obj_raw, r.obj_raw_len, &back, NULL) == BF_OK &&
                          json_equal(back, d.obj));
                    json_decref(back);
                }
            } else if (rr != BF_OK) {
                CHECK(r.type == PROTO_NONE && !r.obj_raw);
            }
            proto_msg_clear(&r);
            proto_msg_clear(&d);
        }
        free(exact);
    }
    printf("mutations: %u of 100000 still decoded, %u re-encoded identically (no crash)\n",
           accepted, reencoded);
    for (int i = 0; i < nvalid; i++)
        free(valid[i]);
}

/* obj_raw: a document packed by the sender goes out byte for byte as the
   same message with obj would, and decodes to the same document; bytes
   that are not a map are refused. */
static void test_obj_raw(void)
{
    json_t *doc = json_pack("{s:o, s:o}", "job",
                            json_pack("{s:s, s:I}", "id", "0123456789ab", "total", (json_int_t)2),
                            "result", sample_doc());
    proto_msg_t a, b, d;
    proto_msg_init(&a, PROTO_DELIVER);
    proto_msg_init(&b, PROTO_DELIVER);
    CHECK(proto_msg_set(&a.job_id, "0123456789ab") == BF_OK &&
          proto_msg_set(&b.job_id, "0123456789ab") == BF_OK);
    a.seq = b.seq = 7;
    a.obj = json_incref(doc);
    CHECK(proto_json_to_msgpack(doc, &b.obj_raw, &b.obj_raw_len) == BF_OK);
    uint8_t *da = NULL, *db = NULL;
    size_t na = 0, nb = 0;
    CHECK(proto_encode(&a, &da, &na) == BF_OK && proto_encode(&b, &db, &nb) == BF_OK);
    CHECK(da && db && na == nb && !memcmp(da, db, na));
    CHECK(db && proto_decode(db, nb, &d, NULL) == BF_OK && d.type == PROTO_DELIVER &&
          json_equal(d.obj, doc) && d.seq == 7 && !d.obj_raw);
    proto_msg_clear(&d);
    free(da);
    free(db);
    db = NULL;
    static const uint8_t not_a_map[] = {0x91, 0x01};
    free(b.obj_raw);
    b.obj_raw = malloc(sizeof not_a_map);
    memcpy(b.obj_raw, not_a_map, sizeof not_a_map);
    b.obj_raw_len = sizeof not_a_map;
    CHECK(proto_encode(&b, &db, &nb) == BF_EPROTO && !db);
    proto_msg_clear(&a);
    proto_msg_clear(&b); /* frees obj_raw */
    CHECK(!b.obj_raw && b.obj_raw_len == 0);
    json_decref(doc);
}

/* proto_decode_raw: the same message as proto_decode, with obj's bytes in
   place of its tree (exactly what proto_json_to_msgpack makes of it, for
   fixarray, array16 and every message with an obj), and the same refusals
   of what is malformed. */
static void test_decode_raw(void)
{
    json_t *spec = sample_doc();
    proto_msg_t t;
    proto_msg_init(&t, PROTO_TASK);
    CHECK(proto_msg_set(&t.job_id, "0123456789ab") == BF_OK &&
          proto_msg_set(&t.task_id, "fedcba9876543210") == BF_OK &&
          proto_msg_set(&t.scene, "s0001") == BF_OK);
    t.attempt = 3;
    t.timeout_ms = 1500;
    t.obj = json_incref(spec);
    uint8_t *frame = NULL, *want = NULL;
    size_t size = 0, want_len = 0;
    CHECK(proto_encode(&t, &frame, &size) == BF_OK);
    CHECK(proto_json_to_msgpack(spec, &want, &want_len) == BF_OK);
    proto_msg_t d, r;
    CHECK(proto_decode(frame, size, &d, NULL) == BF_OK && json_equal(d.obj, spec) && !d.obj_raw);
    CHECK(proto_decode_raw(frame, size, &r, NULL) == BF_OK && r.type == PROTO_TASK && !r.obj);
    CHECK(r.obj_raw && r.obj_raw_len == want_len && !memcmp(r.obj_raw, want, want_len));
    CHECK(r.attempt == 3 && r.timeout_ms == 1500 && !strcmp(r.task_id, "fedcba9876543210") &&
          !strcmp(r.scene, "s0001") && !strcmp(r.job_id, "0123456789ab"));
    json_t *back = NULL;
    CHECK(proto_msgpack_to_json(r.obj_raw, r.obj_raw_len, &back, NULL) == BF_OK &&
          json_equal(back, spec));
    json_decref(back);
    proto_msg_clear(&d);
    proto_msg_clear(&r);
    /* proto_decode_keep: raw only for the types asked for */
    CHECK(proto_decode_keep(frame, size, &r, PROTO_BIT(PROTO_TASK), NULL) == BF_OK && !r.obj &&
          r.obj_raw_len == want_len && !memcmp(r.obj_raw, want, want_len));
    proto_msg_clear(&r);
    CHECK(proto_decode_keep(frame, size, &r, PROTO_BIT(PROTO_RESULT), NULL) == BF_OK &&
          !r.obj_raw && json_equal(r.obj, spec));
    proto_msg_clear(&r);
    /* the same frame with its array header as array16: the same obj */
    uint8_t *wide = malloc(size + 2);
    REQUIRE(wide && (frame[0] & 0xf0) == 0x90);
    wide[0] = 0xdc;
    wide[1] = 0;
    wide[2] = frame[0] & 0x0f;
    memcpy(wide + 3, frame + 1, size - 1);
    CHECK(proto_decode_raw(wide, size + 2, &r, NULL) == BF_OK && r.obj_raw_len == want_len &&
          !memcmp(r.obj_raw, want, want_len));
    proto_msg_clear(&r);
    free(wide);
    /* a message without obj: nothing raw */
    proto_msg_t ack;
    proto_msg_init(&ack, PROTO_ACK);
    CHECK(proto_msg_set(&ack.task_id, "x") == BF_OK);
    uint8_t *af = NULL;
    size_t an = 0;
    CHECK(proto_encode(&ack, &af, &an) == BF_OK);
    CHECK(proto_decode_raw(af, an, &r, NULL) == BF_OK && r.type == PROTO_ACK && !r.obj_raw &&
          !r.obj);
    proto_msg_clear(&r);
    proto_msg_clear(&ack);
    free(af);
    /* truncated or with a byte too many: refused as proto_decode refuses it */
    char err[BF_ERRLEN];
    for (size_t cut = 1; cut < size; cut += 7) {
        CHECK(proto_decode_raw(frame, size - cut, &r, err) == BF_EPROTO && !r.obj_raw);
        proto_msg_clear(&r);
    }
    uint8_t *more = malloc(size + 1);
    REQUIRE(more);
    memcpy(more, frame, size);
    more[size] = 0xc0;
    CHECK(proto_decode_raw(more, size + 1, &r, err) == BF_EPROTO && !r.obj_raw);
    free(more);
    /* obj that is not a map: the same type error as proto_decode */
    frame[size - want_len] = 0x90; /* an empty array where the map began: now too short */
    CHECK(proto_decode_raw(frame, size - want_len + 1, &r, err) == BF_EPROTO &&
          strstr(err, "field obj: expected map"));
    free(frame);
    free(want);
    proto_msg_clear(&t);
    json_decref(spec);
}

int main(void)
{
    test_table();
    test_round_trip();
    test_worked_example();
    test_encode_refuses();
    test_wrong_fields();
    test_number_forms();
    test_malformed();
    test_json();
    test_pick();
    test_member();
    test_check();
    test_patch();
    test_obj_raw();
    test_decode_raw();
    test_mutations();
    if (failures) {
        fprintf(stderr, "proto_test: %d checks failed\n", failures);
        return 1;
    }
    printf("proto_test: all checks passed\n");
    return 0;
}
