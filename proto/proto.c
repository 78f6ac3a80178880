/*  proto/proto.c - the MessagePack codec of every Beamfleet message, driven
    by the PROTO_FIELDS and PROTO_MESSAGES tables of proto.h, plus the
    jansson <-> MessagePack conversion of documents. No sockets here: they
    are proto_link.c's, so that this file builds and fuzzes without libzmq.

    Decoding untrusted bytes happens in two passes. First a small hand-written
    walker checks the raw MessagePack structure without allocating anything:
    every container's declared count must fit in the bytes that remain, every
    string is bounded, nesting is bounded, the number of values is bounded, and
    nothing may follow the top-level value. msgpack-c's unpacker allocates a
    declared array before it reads its elements, so a 5-byte frame could
    otherwise ask it for gigabytes; that is why this check is written by hand.
    Then the envelope's fields are read in place with exact type checks, and
    only a document (obj) is unpacked by msgpack_unpack_next and converted
    to jansson, and only when it is wanted as a tree: proto_decode_raw leaves
    it as bytes, which proto_msgpack_check holds to the same rules and
    proto_msgpack_patch amends without a tree (the broker's results). The
    encoder refuses everything the decoder would refuse, so a peer never
    sends what the broker must drop. */

#include "proto.h"

#include <math.h>
#include <msgpack.h>
#include <msgpack/unpack_define.h> /* MSGPACK_EMBED_STACK_SIZE */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A string inside a document (a result's reason, an exec program's output
   fields) may be longer than a message field: up to 64 KiB, the most of an
   exec program's stdout the worker keeps. */
#define DOC_MAX_STR (16u * PROTO_MAX_STR)
/* Nesting counts every container of a frame, the message array included, so
   obj itself may nest PROTO_MAX_DEPTH - 1 deep. msgpack-c's unpacker cannot
   go deeper than its stack, MSGPACK_EMBED_STACK_SIZE. */
#if MSGPACK_EMBED_STACK_SIZE < PROTO_MAX_DEPTH
#error "msgpack-c cannot unpack PROTO_MAX_DEPTH levels"
#endif
/* Values (scalars and containers) in one frame. A 32 MiB frame of one-byte
   values would otherwise cost gigabytes of objects; 4 Mi values (~40 bytes
   each as JSON, so at most ~160 MiB) leave room for an exec result of
   16 MiB of float64 numbers (9 bytes each: ~1.9 Mi values). */
#define MAX_VALUES (1u << 22)

typedef enum { KIND_STR, KIND_UINT, KIND_REAL, KIND_OBJ } field_kind_t;

/* How a kind is named in error messages ("expected str, got uint"). */
static const char *const kind_names[] = {"str", "uint", "real", "map"};

typedef struct {
    const char *name;
    field_kind_t kind;
    size_t offset;
} field_t;

static const field_t fields[PROTO_FIELD_COUNT] = {
#define FIELD_ROW_(name, kind) {#name, KIND_##kind, offsetof(proto_msg_t, name)},
    PROTO_FIELDS(FIELD_ROW_)
#undef FIELD_ROW_
};

typedef struct {
    const char *name;
    uint32_t mask;
} message_t;

static const message_t messages[PROTO_TYPE_MAX] = {
#define MESSAGE_ROW_(NAME, code, name, dir, mask) [code] = {name, mask},
    PROTO_MESSAGES(MESSAGE_ROW_)
#undef MESSAGE_ROW_
};

static bool known(uint64_t type)
{
    return type > 0 && type < PROTO_TYPE_MAX && messages[type].name;
}

static unsigned count_bits(uint32_t mask)
{
    unsigned n = 0;
    for (; mask; mask &= mask - 1)
        n++;
    return n;
}

const char *proto_type_name(proto_type_t type)
{
    return known((uint64_t)type) ? messages[type].name : "?";
}

uint32_t proto_type_fields(proto_type_t type)
{
    return known((uint64_t)type) ? messages[type].mask : 0;
}

void proto_msg_init(proto_msg_t *msg, proto_type_t type)
{
    memset(msg, 0, sizeof *msg);
    msg->type = type;
}

void proto_msg_clear(proto_msg_t *msg)
{
    if (!msg)
        return;
    for (int f = 0; f < PROTO_FIELD_COUNT; f++) {
        void *slot = (char *)msg + fields[f].offset;
        if (fields[f].kind == KIND_STR)
            free(*(char **)slot);
        else if (fields[f].kind == KIND_OBJ)
            json_decref(*(json_t **)slot);
    }
    free(msg->obj_raw);
    memset(msg, 0, sizeof *msg);
}

bf_err_t proto_msg_set(char **field, const char *value)
{
    char *copy = NULL;
    if (value && !(copy = strdup(value)))
        return BF_ENOMEM;
    free(*field);
    *field = copy;
    return BF_OK;
}

/* ---- strings ------------------------------------------------------------ */

/* Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
static bool utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4, cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

/* Checks one string against a length limit, NUL bytes and UTF-8; on failure
   writes why (without a prefix) and returns false. */
static bool string_ok(const char *s, size_t n, size_t max, char *why)
{
    if (n == 0)
        return true;
    if (n > max)
        return bf_fail(why, BF_EPROTO, "string of %zu bytes exceeds %zu", n, max), false;
    if (memchr(s, '\0', n))
        return bf_fail(why, BF_EPROTO, "string contains a NUL byte"), false;
    if (!utf8_valid((const uint8_t *)s, n))
        return bf_fail(why, BF_EPROTO, "string is not valid UTF-8"), false;
    return true;
}

/* ---- JSON -> MessagePack -------------------------------------------------- */

/* Packs v, enclosed by depth containers. Refuses what the decoder refuses. */
static int pack_json(msgpack_packer *pk, const json_t *v, int depth, size_t *values)
{
    if (++*values > MAX_VALUES)
        return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (depth + 1 > PROTO_MAX_DEPTH || msgpack_pack_map(pk, json_object_size(v)) != 0)
            return -1;
        const char *key;
        json_t *value;
        json_object_foreach((json_t *)v, key, value)
        {
            size_t len = strlen(key);
            if (++*values > MAX_VALUES || !string_ok(key, len, PROTO_MAX_STR, NULL) ||
                msgpack_pack_str(pk, len) != 0 || msgpack_pack_str_body(pk, key, len) != 0 ||
                pack_json(pk, value, depth + 1, values) != 0)
                return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        if (depth + 1 > PROTO_MAX_DEPTH || msgpack_pack_array(pk, json_array_size(v)) != 0)
            return -1;
        size_t i;
        json_t *value;
        json_array_foreach(v, i, value)
        {
            if (pack_json(pk, value, depth + 1, values) != 0)
                return -1;
        }
        return 0;
    }
    case JSON_STRING: {
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        if (!string_ok(s, len, DOC_MAX_STR, NULL))
            return -1;
        return msgpack_pack_str(pk, len) != 0 || msgpack_pack_str_body(pk, s, len) != 0;
    }
    case JSON_INTEGER: {
        json_int_t i = json_integer_value(v);
        return i >= 0 ? msgpack_pack_uint64(pk, (uint64_t)i) : msgpack_pack_int64(pk, i);
    }
    case JSON_REAL:
        return msgpack_pack_double(pk, json_real_value(v));
    case JSON_TRUE:
        return msgpack_pack_true(pk);
    case JSON_FALSE:
        return msgpack_pack_false(pk);
    case JSON_NULL:
        return msgpack_pack_nil(pk);
    }
    return -1;
}

bf_err_t proto_json_to_msgpack(const json_t *value, uint8_t **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    if (!value)
        return BF_EINVAL;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    size_t values = 0;
    if (pack_json(&pk, value, 0, &values) != 0 || sb.size > PROTO_MAX_FRAME) {
        msgpack_sbuffer_destroy(&sb);
        return BF_EPROTO;
    }
    *data = (uint8_t *)sb.data;
    *size = sb.size;
    return BF_OK;
}

/* ---- the bounded structure check -------------------------------------------- */

typedef struct {
    const uint8_t *p, *end;
    size_t values;
    int max_depth; /* containers that may enclose a value */
    char *err;
} walk_t;

static bool need(walk_t *w, size_t n)
{
    return (size_t)(w->end - w->p) >= n;
}

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Validates one MessagePack value at w->p, enclosed by depth containers, and
   moves past it. Recursion is bounded by w->max_depth. */
static bool walk(walk_t *w, int depth)
{
    if (++w->values > MAX_VALUES) {
        bf_fail(w->err, BF_EPROTO, "more than %u values", MAX_VALUES);
        return false;
    }
    if (!need(w, 1))
        goto truncated;
    uint8_t b = *w->p++;
    uint64_t count = 0, len = 0;
    uint64_t items_per = 0; /* 1 for arrays, 2 for maps */
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return true; /* fixints, nil, false, true */
    if ((b & 0xe0) == 0xa0) {
        len = b & 0x1f;
        goto string;
    }
    if ((b & 0xf0) == 0x90 || (b & 0xf0) == 0x80) {
        count = b & 0x0f;
        items_per = (b & 0xf0) == 0x90 ? 1 : 2;
        goto container;
    }
    switch (b) {
    case 0xcc:
    case 0xd0: /* uint8, int8 */
        len = 1;
        goto scalar;
    case 0xcd:
    case 0xd1:
        len = 2;
        goto scalar;
    case 0xce:
    case 0xd2:
    case 0xca: /* uint32, int32, float32 */
        len = 4;
        goto scalar;
    case 0xcf:
    case 0xd3:
    case 0xcb:
        len = 8;
        goto scalar;
    case 0xd9:
    case 0xc4: /* str8, bin8 */
    case 0xda:
    case 0xc5:
    case 0xdb:
    case 0xc6: {
        int n = b == 0xd9 || b == 0xc4 ? 1 : b == 0xda || b == 0xc5 ? 2 : 4;
        if (!need(w, (size_t)n))
            goto truncated;
        len = be(w->p, n);
        w->p += n;
        goto string;
    }
    case 0xdc:
    case 0xde:
    case 0xdd:
    case 0xdf: {
        int n = b == 0xdc || b == 0xde ? 2 : 4;
        if (!need(w, (size_t)n))
            goto truncated;
        count = be(w->p, n);
        w->p += n;
        items_per = b == 0xdc || b == 0xdd ? 1 : 2;
        goto container;
    }
    default: /* ext types and the never-used 0xc1 */
        bf_fail(w->err, BF_EPROTO, "unsupported MessagePack type 0x%02x", b);
        return false;
    }
scalar:
    if (!need(w, (size_t)len))
        goto truncated;
    w->p += len;
    return true;
string:
    if (len > DOC_MAX_STR) {
        bf_fail(w->err, BF_EPROTO, "string of %llu bytes exceeds %u", (unsigned long long)len,
                DOC_MAX_STR);
        return false;
    }
    if (!need(w, (size_t)len))
        goto truncated;
    w->p += len;
    return true;
container:
    if (depth + 1 > w->max_depth) {
        bf_fail(w->err, BF_EPROTO, "nesting deeper than %d", PROTO_MAX_DEPTH);
        return false;
    }
    /* Every element takes at least one byte: a count larger than what is
       left is a lie, refused before anything is allocated for it. */
    if (count * items_per > (uint64_t)(w->end - w->p))
        goto truncated;
    for (uint64_t i = 0; i < count * items_per; i++)
        if (!walk(w, depth + 1))
            return false;
    return true;
truncated:
    bf_fail(w->err, BF_EPROTO, "truncated");
    return false;
}

/* ---- MessagePack -> JSON -------------------------------------------------- */

/* The bytes of a str object; msgpack-c leaves the pointer NULL when empty. */
static const char *str_bytes(const msgpack_object *o)
{
    return o->via.str.size ? o->via.str.ptr : "";
}

static const char *object_kind(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return "nil";
    case MSGPACK_OBJECT_BOOLEAN:
        return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return "uint";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return "int";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return "real";
    case MSGPACK_OBJECT_STR:
        return "str";
    case MSGPACK_OBJECT_ARRAY:
        return "array";
    case MSGPACK_OBJECT_MAP:
        return "map";
    case MSGPACK_OBJECT_BIN:
        return "bin";
    default:
        return "ext";
    }
}

/* Where a conversion says why it failed: the code and the detail. */
typedef struct {
    bf_err_t rc;
    char *err;
} conv_t;

static json_t *bad(conv_t *c, const char *fmt, ...) BF_PRINTF(2, 3);
static json_t *bad(conv_t *c, const char *fmt, ...)
{
    c->rc = BF_EPROTO;
    if (c->err) {
        char what[BF_ERRLEN];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        bf_fail(c->err, BF_EPROTO, "%s", what); /* one line: a map key is echoed */
    }
    return NULL;
}

static json_t *oom(conv_t *c)
{
    bad(c, "out of memory");
    c->rc = BF_ENOMEM;
    return NULL;
}

/* Converts o, enclosed by depth containers, into a new JSON value; NULL with
   c set when it cannot. */
static json_t *to_json(const msgpack_object *o, int depth, conv_t *c)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER: {
        if (o->via.u64 > (uint64_t)INT64_MAX) {
            bad(c, "integer %llu out of range", (unsigned long long)o->via.u64);
            return NULL;
        }
        json_t *i = json_integer((json_int_t)o->via.u64);
        return i ? i : oom(c);
    }
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: {
        json_t *i = json_integer((json_int_t)o->via.i64);
        return i ? i : oom(c);
    }
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: {
        if (!isfinite(o->via.f64)) {
            bad(c, "real is not a finite number");
            return NULL;
        }
        json_t *r = json_real(o->via.f64);
        return r ? r : oom(c);
    }
    case MSGPACK_OBJECT_STR: {
        if (!string_ok(o->via.str.ptr, o->via.str.size, DOC_MAX_STR, c->err)) {
            c->rc = BF_EPROTO;
            return NULL;
        }
        json_t *s = json_stringn_nocheck(str_bytes(o), o->via.str.size);
        return s ? s : oom(c);
    }
    case MSGPACK_OBJECT_ARRAY: {
        if (depth + 1 > PROTO_MAX_DEPTH) {
            bad(c, "nesting deeper than %d", PROTO_MAX_DEPTH);
            return NULL;
        }
        json_t *a = json_array();
        if (!a)
            return oom(c);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            json_t *item = to_json(&o->via.array.ptr[i], depth + 1, c);
            if (!item || json_array_append_new(a, item) != 0) {
                if (item)
                    oom(c);
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        if (depth + 1 > PROTO_MAX_DEPTH) {
            bad(c, "nesting deeper than %d", PROTO_MAX_DEPTH);
            return NULL;
        }
        json_t *m = json_object();
        if (!m)
            return oom(c);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            char why[BF_ERRLEN];
            if (kv->key.type != MSGPACK_OBJECT_STR) {
                bad(c, "map key must be a str, got %s", object_kind(&kv->key));
                json_decref(m);
                return NULL;
            }
            const char *key = str_bytes(&kv->key);
            size_t klen = kv->key.via.str.size;
            if (!string_ok(key, klen, PROTO_MAX_STR, why)) {
                bad(c, "map key: %s", why);
                json_decref(m);
                return NULL;
            }
            if (json_object_getn(m, key, klen)) {
                bad(c, "duplicate map key \"%.*s\"", (int)(klen > 64 ? 64 : klen), key);
                json_decref(m);
                return NULL;
            }
            json_t *value = to_json(&kv->val, depth + 1, c);
            if (!value || json_object_setn_new_nocheck(m, key, klen, value) != 0) {
                if (value)
                    oom(c);
                json_decref(m);
                return NULL;
            }
        }
        return m;
    }
    default:
        bad(c, "unsupported MessagePack type %s", object_kind(o));
        return NULL;
    }
}

/* The value at p, walked already, as msgpack-c would unpack it but without
   its elements: a scalar with its value, a str or bin with its bytes (in
   the frame), a container with its type and count only. The envelope's
   fields are read from this, so that a frame is never unpacked whole: its
   obj, a result of thousands of reals, stays bytes unless it is converted. */
static void peek(const uint8_t *p, msgpack_object *o)
{
    memset(o, 0, sizeof *o);
    uint8_t b = *p++;
    if (b <= 0x7f) {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER, o->via.u64 = b;
    } else if (b >= 0xe0) {
        o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER, o->via.i64 = (int8_t)b;
    } else if ((b & 0xe0) == 0xa0 || b == 0xd9 || b == 0xda || b == 0xdb || b == 0xc4 ||
               b == 0xc5 || b == 0xc6) {
        bool fix = (b & 0xe0) == 0xa0;
        int n = fix ? 0 : b == 0xd9 || b == 0xc4 ? 1 : b == 0xda || b == 0xc5 ? 2 : 4;
        o->type = fix || b >= 0xd9 ? MSGPACK_OBJECT_STR : MSGPACK_OBJECT_BIN;
        o->via.str.size = fix ? b & 0x1f : (uint32_t)be(p, n);
        o->via.str.ptr = (const char *)p + n;
    } else if ((b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd) {
        o->type = MSGPACK_OBJECT_ARRAY;
        o->via.array.size = b == 0xdc   ? (uint32_t)be(p, 2)
                            : b == 0xdd ? (uint32_t)be(p, 4)
                                        : b & 0x0f;
    } else if ((b & 0xf0) == 0x80 || b == 0xde || b == 0xdf) {
        o->type = MSGPACK_OBJECT_MAP;
        o->via.map.size = b == 0xde   ? (uint32_t)be(p, 2)
                          : b == 0xdf ? (uint32_t)be(p, 4)
                                      : b & 0x0f;
    } else if (b == 0xc0) {
        o->type = MSGPACK_OBJECT_NIL;
    } else if (b == 0xc2 || b == 0xc3) {
        o->type = MSGPACK_OBJECT_BOOLEAN, o->via.boolean = b == 0xc3;
    } else if (b >= 0xcc && b <= 0xcf) {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER, o->via.u64 = be(p, 1 << (b - 0xcc));
    } else if (b >= 0xd0 && b <= 0xd3) { /* as msgpack-c: a signed int >= 0 is a uint */
        int n = 1 << (b - 0xd0);
        uint64_t u = be(p, n);
        int64_t v = n == 1 ? (int8_t)u : n == 2 ? (int16_t)u : n == 4 ? (int32_t)u : (int64_t)u;
        if (v < 0)
            o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER, o->via.i64 = v;
        else
            o->type = MSGPACK_OBJECT_POSITIVE_INTEGER, o->via.u64 = (uint64_t)v;
    } else if (b == 0xca) {
        uint32_t u = (uint32_t)be(p, 4);
        float f;
        memcpy(&f, &u, sizeof f);
        o->type = MSGPACK_OBJECT_FLOAT32, o->via.f64 = f;
    } else if (b == 0xcb) {
        uint64_t u = be(p, 8);
        double d;
        memcpy(&d, &u, sizeof d);
        o->type = MSGPACK_OBJECT_FLOAT64, o->via.f64 = d;
    } else {
        o->type = MSGPACK_OBJECT_EXT; /* ext types, 0xc1: refused by the walk anyway */
    }
}

/* Converts the value at data[0, size), walked already and enclosed by depth
   containers, into JSON: msgpack-c unpacks it (the walk bounded what it may
   allocate), to_json converts it. */
static bf_err_t convert(const uint8_t *data, size_t size, int depth, json_t **value, char *err)
{
    *value = NULL;
    size_t off = 0;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    msgpack_unpack_return r = msgpack_unpack_next(&up, (const char *)data, size, &off);
    if (r != MSGPACK_UNPACK_SUCCESS || off != size) {
        msgpack_unpacked_destroy(&up);
        return r == MSGPACK_UNPACK_NOMEM_ERROR ? bf_fail(err, BF_ENOMEM, "out of memory")
                                               : bf_fail(err, BF_EPROTO, "malformed MessagePack");
    }
    conv_t c = {BF_OK, err};
    *value = to_json(&up.data, depth, &c);
    msgpack_unpacked_destroy(&up);
    return *value ? BF_OK : c.rc;
}

/* Whether data[0, size) is one value (what: "message", "document"): at most
   PROTO_MAX_FRAME bytes, bounded as walk bounds a frame, nothing after it. */
static bf_err_t one_value(const uint8_t *data, size_t size, const char *what, char *err)
{
    if (size > PROTO_MAX_FRAME)
        return bf_fail(err, BF_EPROTO, "%s of %zu bytes exceeds %u", what, size, PROTO_MAX_FRAME);
    if (size == 0)
        return bf_fail(err, BF_EPROTO, "empty frame");
    walk_t w = {data, data + size, 0, PROTO_MAX_DEPTH, err};
    if (!walk(&w, 0))
        return BF_EPROTO;
    if (w.p != w.end)
        return bf_fail(err, BF_EPROTO, "%zu trailing bytes", (size_t)(w.end - w.p));
    return BF_OK;
}

bf_err_t proto_msgpack_to_json(const uint8_t *data, size_t size, json_t **value, char *err)
{
    *value = NULL;
    bf_err_t rc = one_value(data, size, "document", err);
    return rc != BF_OK ? rc : convert(data, size, 0, value, err);
}

/* Why data, a document that proto_msgpack_members refused, is no map. */
static bf_err_t no_map(const uint8_t *data, size_t size, char *err)
{
    bf_err_t rc = one_value(data, size, "document", err);
    if (rc != BF_OK)
        return rc;
    msgpack_object top;
    peek(data, &top);
    return bf_fail(err, BF_EPROTO, "expected map, got %s", object_kind(&top));
}

/* The members keys[0..n) of the MessagePack map at data, each converted as
   proto_msgpack_to_json converts a document (values[k] NULL where absent;
   of duplicate keys the last wins, as in a tree). The rest of the map is
   walked but never unpacked: the broker shows a few members of results
   whose zone arrays hold thousands of reals. */
bf_err_t proto_msgpack_pick(const uint8_t *data, size_t size, const char *const *keys, size_t n,
                            json_t **values, char *err)
{
    const uint8_t *at[PROTO_PICK_MAX];
    size_t len[PROTO_PICK_MAX];
    for (size_t k = 0; k < n; k++)
        values[k] = NULL;
    if (n > PROTO_PICK_MAX)
        return bf_fail(err, BF_EINVAL, "%zu members picked, at most %d", n, PROTO_PICK_MAX);
    if (!proto_msgpack_members(data, size, keys, n, at, len))
        return no_map(data, size, err);
    bf_err_t rc = BF_OK;
    for (size_t k = 0; k < n && rc == BF_OK; k++)
        if (at[k])
            rc = convert(at[k], len[k], 1, &values[k], err);
    if (rc != BF_OK)
        for (size_t k = 0; k < n; k++) {
            json_decref(values[k]);
            values[k] = NULL;
        }
    return rc;
}

bool proto_msgpack_members(const uint8_t *data, size_t size, const char *const *keys, size_t n,
                           const uint8_t **at, size_t *len)
{
    for (size_t k = 0; k < n; k++) {
        at[k] = NULL;
        len[k] = 0;
    }
    if (!data || size == 0 || size > PROTO_MAX_FRAME)
        return false;
    walk_t w = {data, data + size, 0, PROTO_MAX_DEPTH, NULL};
    uint8_t b = *w.p++;
    uint64_t count;
    if ((b & 0xf0) == 0x80) {
        count = b & 0x0f;
    } else if ((b == 0xde || b == 0xdf) && need(&w, b == 0xde ? 2 : 4)) {
        count = be(w.p, b == 0xde ? 2 : 4);
        w.p += b == 0xde ? 2 : 4;
    } else {
        return false;
    }
    bool ok = true;
    for (uint64_t i = 0; ok && i < count; i++) {
        const uint8_t *key = w.p;
        if (!(ok = walk(&w, 1)))
            break;
        /* a str key: its header (fixstr, str8, str16, str32), then its bytes */
        size_t head = (*key & 0xe0) == 0xa0 ? 1
                      : *key == 0xd9        ? 2
                      : *key == 0xda        ? 3
                      : *key == 0xdb        ? 5
                                            : 0;
        size_t klen = (size_t)(w.p - key) - head;
        const uint8_t *v = w.p;
        if (!(ok = walk(&w, 1)))
            break;
        for (size_t k = 0; head && k < n; k++)
            if (strlen(keys[k]) == klen && !memcmp(key + head, keys[k], klen)) {
                at[k] = v; /* the last of duplicate keys wins, as in a tree */
                len[k] = (size_t)(w.p - v);
            }
    }
    if (ok && w.p == w.end)
        return true;
    for (size_t k = 0; k < n; k++) {
        at[k] = NULL;
        len[k] = 0;
    }
    return false;
}

/* ---- documents kept as bytes ------------------------------------------------ */

/* The bytes of a container's header at p (its type byte and count). */
static size_t head_len(const uint8_t *p)
{
    return *p == 0xdc || *p == 0xde ? 3 : *p == 0xdd || *p == 0xdf ? 5 : 1;
}

/* A map key seen: its bytes in the document. */
typedef struct {
    const char *s;
    uint32_t len;
} mapkey_t;

static uint64_t key_hash(const char *s, uint32_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (uint32_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h;
}

/* Whether a map already had the key k: a list scanned for the few keys of
   most maps, an open-addressed table of 2 * count slots past SMALL_MAP
   (a map of a million keys must not cost a million squared compares). */
#define SMALL_MAP 16
typedef struct {
    mapkey_t few[SMALL_MAP], *table;
    size_t n, slots;
} keyset_t;

static bool keyset_init(keyset_t *ks, uint32_t count)
{
    ks->n = 0;
    ks->table = NULL;
    ks->slots = count > SMALL_MAP ? 2 * (size_t)count : 0;
    return !ks->slots || (ks->table = calloc(ks->slots, sizeof *ks->table));
}

static bool keyset_add(keyset_t *ks, mapkey_t k) /* false: k was there */
{
    if (!ks->table) {
        for (size_t i = 0; i < ks->n; i++)
            if (ks->few[i].len == k.len && !memcmp(ks->few[i].s, k.s, k.len))
                return false;
        ks->few[ks->n++] = k;
        return true;
    }
    size_t i = (size_t)(key_hash(k.s, k.len) % ks->slots);
    for (; ks->table[i].s; i = (i + 1) % ks->slots)
        if (ks->table[i].len == k.len && !memcmp(ks->table[i].s, k.s, k.len))
            return false;
    ks->table[i] = k;
    return true;
}

/* What to_json would refuse in the value at w->p (walked already), in the
   order it would find it and with its words; moves w->p past the value. */
static bf_err_t strict(walk_t *w)
{
    const uint8_t *at = w->p;
    msgpack_object o;
    peek(at, &o);
    switch (o.type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o.via.u64 > (uint64_t)INT64_MAX)
            return bf_fail(w->err, BF_EPROTO, "integer %llu out of range",
                           (unsigned long long)o.via.u64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o.via.f64))
            return bf_fail(w->err, BF_EPROTO, "real is not a finite number");
        break;
    case MSGPACK_OBJECT_STR:
        if (!string_ok(o.via.str.ptr, o.via.str.size, DOC_MAX_STR, w->err))
            return BF_EPROTO;
        break;
    case MSGPACK_OBJECT_ARRAY: {
        w->p += head_len(at);
        bf_err_t rc = BF_OK;
        for (uint32_t i = 0; i < o.via.array.size && rc == BF_OK; i++)
            rc = strict(w);
        return rc;
    }
    case MSGPACK_OBJECT_MAP: {
        keyset_t ks;
        if (!keyset_init(&ks, o.via.map.size))
            return bf_fail(w->err, BF_ENOMEM, "out of memory");
        w->p += head_len(at);
        bf_err_t rc = BF_OK;
        for (uint32_t i = 0; i < o.via.map.size && rc == BF_OK; i++) {
            msgpack_object k;
            peek(w->p, &k);
            char why[BF_ERRLEN];
            if (k.type != MSGPACK_OBJECT_STR)
                rc = bf_fail(w->err, BF_EPROTO, "map key must be a str, got %s", object_kind(&k));
            else if (!string_ok(k.via.str.ptr, k.via.str.size, PROTO_MAX_STR, why))
                rc = bf_fail(w->err, BF_EPROTO, "map key: %s", why);
            else if (!keyset_add(&ks, (mapkey_t){k.via.str.ptr, k.via.str.size}))
                rc = bf_fail(w->err, BF_EPROTO, "duplicate map key \"%.*s\"",
                             (int)(k.via.str.size > 64 ? 64 : k.via.str.size), str_bytes(&k));
            else {
                (void)walk(w, 0); /* past the key */
                rc = strict(w);
            }
        }
        free(ks.table);
        return rc;
    }
    case MSGPACK_OBJECT_NIL:
    case MSGPACK_OBJECT_BOOLEAN:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        break;
    default: /* bin, ext */
        return bf_fail(w->err, BF_EPROTO, "unsupported MessagePack type %s", object_kind(&o));
    }
    (void)walk(w, 0); /* past a scalar or string */
    return BF_OK;
}

bf_err_t proto_msgpack_check(const uint8_t *data, size_t size, char *err)
{
    bf_err_t rc = one_value(data, size, "document", err);
    if (rc != BF_OK)
        return rc;
    walk_t w = {data, data + size, 0, PROTO_MAX_DEPTH, err};
    return strict(&w);
}

bf_err_t proto_msgpack_patch(const uint8_t *data, size_t size, const json_t *set, uint8_t **out,
                             size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    msgpack_object top;
    if (!data || size == 0 || !json_is_object(set) ||
        (peek(data, &top), top.type) != MSGPACK_OBJECT_MAP)
        return BF_EINVAL;
    /* Two walks over the members: how many stay, then copy them. */
    walk_t w = {data + head_len(data), data + size, 0, PROTO_MAX_DEPTH, NULL};
    uint32_t keep = 0;
    for (uint32_t i = 0; i < top.via.map.size; i++) {
        msgpack_object k;
        peek(w.p, &k);
        keep +=
            k.type != MSGPACK_OBJECT_STR || !json_object_getn(set, str_bytes(&k), k.via.str.size);
        if (!walk(&w, 1) || !walk(&w, 1))
            return BF_EINVAL; /* not what proto_msgpack_check accepted */
    }
    size_t values = w.values;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int bad = msgpack_pack_map(&pk, keep + (uint32_t)json_object_size(set));
    w.p = data + head_len(data);
    for (uint32_t i = 0; i < top.via.map.size && !bad; i++) {
        const uint8_t *member = w.p;
        msgpack_object k;
        peek(w.p, &k);
        (void)walk(&w, 1);
        (void)walk(&w, 1);
        if (k.type != MSGPACK_OBJECT_STR || !json_object_getn(set, str_bytes(&k), k.via.str.size))
            bad = msgpack_sbuffer_write(&sb, (const char *)member, (size_t)(w.p - member));
    }
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)set, key, value)
    {
        size_t len = strlen(key);
        if (bad)
            break;
        bad = ++values > MAX_VALUES || !string_ok(key, len, PROTO_MAX_STR, NULL) ||
              msgpack_pack_str(&pk, len) || msgpack_pack_str_body(&pk, key, len) ||
              pack_json(&pk, value, 1, &values);
    }
    if (bad || values > MAX_VALUES || sb.size > PROTO_MAX_FRAME) {
        msgpack_sbuffer_destroy(&sb);
        return BF_EPROTO; /* msgpack-c's sbuffer aborts on no memory rather than failing */
    }
    *out = (uint8_t *)sb.data;
    *out_len = sb.size;
    return BF_OK;
}

/* ---- messages ------------------------------------------------------------ */

bf_err_t proto_encode(const proto_msg_t *msg, uint8_t **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    if (!known((uint64_t)msg->type))
        return BF_EINVAL;
    uint32_t mask = messages[msg->type].mask;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    size_t values = 3;
    int bad = msgpack_pack_array(&pk, 2 + count_bits(mask)) ||
              msgpack_pack_uint32(&pk, PROTO_VERSION) ||
              msgpack_pack_uint32(&pk, (uint32_t)msg->type);
    for (int f = 0; f < PROTO_FIELD_COUNT && !bad; f++) {
        if (!(mask & (1u << f)))
            continue;
        const void *slot = (const char *)msg + fields[f].offset;
        switch (fields[f].kind) {
        case KIND_STR: {
            const char *s = *(char *const *)slot;
            size_t len = s ? strlen(s) : 0;
            bad = (s && !string_ok(s, len, PROTO_MAX_STR, NULL)) || msgpack_pack_str(&pk, len) ||
                  msgpack_pack_str_body(&pk, s ? s : "", len);
            values++;
            break;
        }
        case KIND_UINT:
            bad = msgpack_pack_uint64(&pk, *(const uint64_t *)slot);
            values++;
            break;
        case KIND_REAL: {
            double d = *(const double *)slot;
            bad = !isfinite(d) || msgpack_pack_double(&pk, d);
            values++;
            break;
        }
        case KIND_OBJ: {
            const json_t *obj = *(json_t *const *)slot;
            if (msg->obj_raw) { /* packed by the sender: a map, copied as it is */
                uint8_t b0 = msg->obj_raw_len ? msg->obj_raw[0] : 0;
                bool map = (b0 & 0xf0) == 0x80 || b0 == 0xde || b0 == 0xdf;
                bad = !map ||
                      msgpack_sbuffer_write(&sb, (const char *)msg->obj_raw, msg->obj_raw_len);
                values++;
            } else if (!obj)
                bad = msgpack_pack_map(&pk, 0), values++;
            else
                bad = !json_is_object(obj) || pack_json(&pk, obj, 1, &values);
            break;
        }
        }
    }
    if (bad || values > MAX_VALUES || sb.size > PROTO_MAX_FRAME) {
        msgpack_sbuffer_destroy(&sb);
        return BF_EPROTO;
    }
    *data = (uint8_t *)sb.data;
    *size = sb.size;
    return BF_OK;
}

/* Reads one field of kind from o into slot; false with err set otherwise. */
static bool read_field(const msgpack_object *o, field_kind_t kind, void *slot, const char *tname,
                       const char *fname, char *err, bf_err_t *rc)
{
    char why[BF_ERRLEN];
    why[0] = '\0'; /* not the whole buffer: this runs for every field */
    switch (kind) {
    case KIND_STR:
        if (o->type != MSGPACK_OBJECT_STR)
            break;
        if (!string_ok(o->via.str.ptr, o->via.str.size, PROTO_MAX_STR, why)) {
            *rc = bf_fail(err, BF_EPROTO, "%s: field %s: %s", tname, fname, why);
            return false;
        }
        if (!(*(char **)slot = strndup(str_bytes(o), o->via.str.size))) {
            *rc = bf_fail(err, BF_ENOMEM, "%s: field %s: out of memory", tname, fname);
            return false;
        }
        return true;
    case KIND_UINT:
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            break;
        *(uint64_t *)slot = o->via.u64;
        return true;
    case KIND_REAL: {
        double d;
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            d = (double)o->via.u64;
        else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            d = (double)o->via.i64;
        else if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
            d = o->via.f64;
        else
            break;
        if (!isfinite(d)) {
            *rc =
                bf_fail(err, BF_EPROTO, "%s: field %s: real is not a finite number", tname, fname);
            return false;
        }
        *(double *)slot = d;
        return true;
    }
    case KIND_OBJ: /* a map is taken by decode itself; anything else is refused here */
        break;
    }
    *rc = bf_fail(err, BF_EPROTO, "%s: field %s: expected %s, got %s", tname, fname,
                  kind_names[kind], object_kind(o));
    return false;
}

bf_err_t proto_decode(const uint8_t *data, size_t size, proto_msg_t *msg, char *err)
{
    return proto_decode_keep(data, size, msg, 0, err);
}

bf_err_t proto_decode_raw(const uint8_t *data, size_t size, proto_msg_t *msg, char *err)
{
    return proto_decode_keep(data, size, msg, PROTO_ALL_TYPES, err);
}

_Static_assert(PROTO_TYPE_MAX <= 32, "a message type is a bit of proto_decode_keep's mask");

_Static_assert(PROTO_FBIT_obj == PROTO_FIELD_COUNT - 1,
               "decode takes obj as the last field of a message, running to the frame's end");

/* The frame is walked once (its bounds), then read element by element in
   place; only obj is converted, and only when its type is not kept raw. */
bf_err_t proto_decode_keep(const uint8_t *data, size_t size, proto_msg_t *msg, uint32_t raw_types,
                           char *err)
{
    proto_msg_init(msg, PROTO_NONE);
    if (one_value(data, size, "message", err) != BF_OK)
        return BF_EPROTO;
    msgpack_object top;
    peek(data, &top);
    if (top.type != MSGPACK_OBJECT_ARRAY || top.via.array.size < 2)
        return bf_fail(err, BF_EPROTO, "expected an array [version, type, ...], got %s of %u",
                       object_kind(&top),
                       top.type == MSGPACK_OBJECT_ARRAY ? top.via.array.size : 1);
    uint32_t n = top.via.array.size;
    /* the elements, after the array's header (fixarray, array16, array32) */
    walk_t e = {data + (data[0] == 0xdc   ? 3
                        : data[0] == 0xdd ? 5
                                          : 1),
                data + size, 0, PROTO_MAX_DEPTH, NULL};
    msgpack_object item;
    peek(e.p, &item);
    if (item.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return bf_fail(err, BF_EPROTO, "version: expected uint, got %s", object_kind(&item));
    if (item.via.u64 != PROTO_VERSION)
        return bf_fail(err, BF_EPROTO, "version %llu, expected %d",
                       (unsigned long long)item.via.u64, PROTO_VERSION);
    (void)walk(&e, 1);
    peek(e.p, &item);
    if (item.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return bf_fail(err, BF_EPROTO, "type: expected uint, got %s", object_kind(&item));
    if (!known(item.via.u64))
        return bf_fail(err, BF_EPROTO, "unknown message type %llu",
                       (unsigned long long)item.via.u64);
    (void)walk(&e, 1);
    proto_type_t type = (proto_type_t)item.via.u64;
    const char *tname = messages[type].name;
    uint32_t mask = messages[type].mask;
    unsigned want = count_bits(mask);
    if (n - 2 != want)
        return bf_fail(err, BF_EPROTO, "%s: %u fields, expected %u", tname, n - 2, want);
    msg->type = type;
    bf_err_t rc = BF_OK;
    for (int f = 0; f < PROTO_FIELD_COUNT; f++) {
        if (!(mask & (1u << f)))
            continue;
        const uint8_t *at = e.p;
        if (fields[f].kind == KIND_OBJ)
            e.p = data + size; /* the last field: to the end of the frame, not walked again */
        else
            (void)walk(&e, 1); /* walked with the frame: cannot fail */
        peek(at, &item);
        /* the message and field are named only in an error (no snprintf
           per field of every message) */
        if (fields[f].kind == KIND_OBJ && item.type == MSGPACK_OBJECT_MAP) {
            size_t len = (size_t)(e.p - at);
            char why[BF_ERRLEN] = "";
            if (raw_types & PROTO_BIT(type)) {
                if (!(msg->obj_raw = malloc(len))) {
                    rc = bf_fail(err, BF_ENOMEM, "%s: field %s: out of memory", tname,
                                 fields[f].name);
                    break;
                }
                memcpy(msg->obj_raw, at, len);
                msg->obj_raw_len = len;
            } else if ((rc = convert(at, len, 1, &msg->obj, why)) != BF_OK) {
                bf_fail(err, rc, "%s: field %s: %s", tname, fields[f].name, why);
                break;
            }
            continue;
        }
        if (!read_field(&item, fields[f].kind, (char *)msg + fields[f].offset, tname,
                        fields[f].name, err, &rc))
            break;
    }
    if (rc != BF_OK)
        proto_msg_clear(msg);
    return rc;
}
