/*  proto/proto.c - the MessagePack codec of every Beamfleet message, driven
    by the PROTO_FIELDS and PROTO_MESSAGES tables of proto.h, plus the
    jansson <-> MessagePack conversion of documents and the ZeroMQ send and
    receive helpers.

    Decoding untrusted bytes happens in two passes. First a small hand-written
    walker checks the raw MessagePack structure without allocating anything:
    every container's declared count must fit in the bytes that remain, every
    string must be at most PROTO_MAX_STR, nesting at most PROTO_MAX_DEPTH, and
    nothing may follow the top-level array. msgpack-c's unpacker allocates a
    declared array before it reads its elements, so a 10-byte frame could
    otherwise ask it for gigabytes; that is why this check is written by hand.
    Only then does msgpack_unpack_next build the object tree, which the
    table-driven reader converts field by field with exact type checks. */

#include "proto.h"

#include <errno.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

typedef enum { KIND_STR, KIND_UINT, KIND_REAL, KIND_OBJ } field_kind_t;

static const char *const kind_names[] = {"str", "uint", "real", "map"};

typedef struct {
    const char *name;
    field_kind_t kind;
    size_t offset;
} field_t;

#define KIND_STR_  KIND_STR
#define KIND_UINT_ KIND_UINT
#define KIND_REAL_ KIND_REAL
#define KIND_OBJ_  KIND_OBJ
static const field_t fields[PROTO_FIELD_COUNT] = {
#define FIELD_ROW_(name, kind) {#name, KIND_##kind##_, offsetof(proto_msg_t, name)},
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

const char *proto_type_name(proto_type_t type)
{
    if ((unsigned)type >= PROTO_TYPE_MAX || !messages[type].name)
        return "?";
    return messages[type].name;
}

uint32_t proto_type_fields(proto_type_t type)
{
    if ((unsigned)type >= PROTO_TYPE_MAX || !messages[type].name)
        return 0;
    return messages[type].mask;
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

/* ---- JSON -> MessagePack -------------------------------------------------- */

static int pack_json(msgpack_packer *pk, const json_t *v, int depth)
{
    if (depth > PROTO_MAX_DEPTH)
        return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (msgpack_pack_map(pk, json_object_size(v)) != 0)
            return -1;
        const char *key;
        json_t *value;
        json_object_foreach((json_t *)v, key, value)
        {
            size_t len = strlen(key);
            if (msgpack_pack_str(pk, len) != 0 || msgpack_pack_str_body(pk, key, len) != 0 ||
                pack_json(pk, value, depth + 1) != 0)
                return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        if (msgpack_pack_array(pk, json_array_size(v)) != 0)
            return -1;
        size_t i;
        json_t *value;
        json_array_foreach(v, i, value)
        {
            if (pack_json(pk, value, depth + 1) != 0)
                return -1;
        }
        return 0;
    }
    case JSON_STRING: {
        size_t len = json_string_length(v);
        return msgpack_pack_str(pk, len) != 0 ||
               msgpack_pack_str_body(pk, json_string_value(v), len);
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
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (!value || pack_json(&pk, value, 0) != 0) {
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

/* Validates one MessagePack value at w->p and moves past it. */
static bool walk(walk_t *w, int depth)
{
    if (depth > PROTO_MAX_DEPTH + 2) {
        bf_fail(w->err, BF_EPROTO, "nesting deeper than %d", PROTO_MAX_DEPTH);
        return false;
    }
    if (!need(w, 1))
        goto truncated;
    uint8_t b = *w->p++;
    uint64_t count = 0, len = 0;
    int items_per = 0; /* 1 for arrays, 2 for maps */
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return true;
    if ((b & 0xe0) == 0xa0) {
        len = b & 0x1f;
        goto string;
    }
    if ((b & 0xf0) == 0x90) {
        count = b & 0x0f;
        items_per = 1;
        goto container;
    }
    if ((b & 0xf0) == 0x80) {
        count = b & 0x0f;
        items_per = 2;
        goto container;
    }
    switch (b) {
    case 0xcc:
    case 0xd0: /* uint8, int8 */
        if (!need(w, 1))
            goto truncated;
        w->p += 1;
        return true;
    case 0xcd:
    case 0xd1:
        if (!need(w, 2))
            goto truncated;
        w->p += 2;
        return true;
    case 0xce:
    case 0xd2:
    case 0xca:
        if (!need(w, 4))
            goto truncated;
        w->p += 4;
        return true;
    case 0xcf:
    case 0xd3:
    case 0xcb:
        if (!need(w, 8))
            goto truncated;
        w->p += 8;
        return true;
    case 0xd9:
    case 0xc4: /* str8, bin8 */
        if (!need(w, 1))
            goto truncated;
        len = be(w->p, 1);
        w->p += 1;
        goto string;
    case 0xda:
    case 0xc5:
        if (!need(w, 2))
            goto truncated;
        len = be(w->p, 2);
        w->p += 2;
        goto string;
    case 0xdb:
    case 0xc6:
        if (!need(w, 4))
            goto truncated;
        len = be(w->p, 4);
        w->p += 4;
        goto string;
    case 0xdc:
    case 0xde:
        if (!need(w, 2))
            goto truncated;
        count = be(w->p, 2);
        w->p += 2;
        items_per = b == 0xdc ? 1 : 2;
        goto container;
    case 0xdd:
    case 0xdf:
        if (!need(w, 4))
            goto truncated;
        count = be(w->p, 4);
        w->p += 4;
        items_per = b == 0xdd ? 1 : 2;
        goto container;
    default: /* ext types and the never-used 0xc1 */
        bf_fail(w->err, BF_EPROTO, "unsupported MessagePack type 0x%02x", b);
        return false;
    }
string:
    if (len > PROTO_MAX_STR * 16u) { /* documents may carry long strings, fields not */
        bf_fail(w->err, BF_EPROTO, "string of %llu bytes is too long", (unsigned long long)len);
        return false;
    }
    if (!need(w, (size_t)len))
        goto truncated;
    w->p += len;
    return true;
container:
    /* Every element takes at least one byte: a count larger than what is
       left is a lie, refused before anything is allocated for it. */
    if (count * (uint64_t)items_per > (uint64_t)(w->end - w->p))
        goto truncated;
    for (uint64_t i = 0; i < count * (uint64_t)items_per; i++)
        if (!walk(w, depth + 1))
            return false;
    return true;
truncated:
    bf_fail(w->err, BF_EPROTO, "truncated");
    return false;
}

/* ---- MessagePack -> JSON -------------------------------------------------- */

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

static json_t *to_json(const msgpack_object *o, int depth, char *err)
{
    if (depth > PROTO_MAX_DEPTH) {
        bf_fail(err, BF_EPROTO, "nesting deeper than %d", PROTO_MAX_DEPTH);
        return NULL;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX) {
            bf_fail(err, BF_EPROTO, "integer %llu out of range", (unsigned long long)o->via.u64);
            return NULL;
        }
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR: {
        json_t *s = json_stringn_nocheck(o->via.str.ptr, o->via.str.size);
        if (!s || memchr(o->via.str.ptr, '\0', o->via.str.size)) {
            json_decref(s);
            bf_fail(err, BF_EPROTO, "string with a NUL byte");
            return NULL;
        }
        return s;
    }
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; a && i < o->via.array.size; i++) {
            json_t *item = to_json(&o->via.array.ptr[i], depth + 1, err);
            if (!item || json_array_append_new(a, item) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; m && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size > PROTO_MAX_STR ||
                memchr(kv->key.via.str.ptr, '\0', kv->key.via.str.size)) {
                bf_fail(err, BF_EPROTO, "map key must be a string, got %s", object_kind(&kv->key));
                json_decref(m);
                return NULL;
            }
            char key[PROTO_MAX_STR + 1];
            memcpy(key, kv->key.via.str.ptr, kv->key.via.str.size);
            key[kv->key.via.str.size] = '\0';
            json_t *value = to_json(&kv->val, depth + 1, err);
            if (!value || json_object_set_new_nocheck(m, key, value) != 0) {
                json_decref(m);
                return NULL;
            }
        }
        return m;
    }
    default:
        bf_fail(err, BF_EPROTO, "unsupported MessagePack type %s", object_kind(o));
        return NULL;
    }
}

/* Validates and unpacks exactly one value filling data[0, size). */
static bf_err_t unpack_one(const uint8_t *data, size_t size, msgpack_unpacked *up, char *err)
{
    walk_t w = {data, data + size, err};
    if (!walk(&w, 0))
        return BF_EPROTO;
    if (w.p != w.end)
        return bf_fail(err, BF_EPROTO, "%zu trailing bytes", (size_t)(w.end - w.p));
    size_t off = 0;
    msgpack_unpacked_init(up);
    if (msgpack_unpack_next(up, (const char *)data, size, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != size) {
        msgpack_unpacked_destroy(up);
        return bf_fail(err, BF_EPROTO, "malformed MessagePack");
    }
    return BF_OK;
}

bf_err_t proto_msgpack_to_json(const uint8_t *data, size_t size, json_t **value, char *err)
{
    *value = NULL;
    if (size > PROTO_MAX_FRAME)
        return bf_fail(err, BF_EPROTO, "document of %zu bytes exceeds %u", size, PROTO_MAX_FRAME);
    msgpack_unpacked up;
    bf_err_t rc = unpack_one(data, size, &up, err);
    if (rc != BF_OK)
        return rc;
    *value = to_json(&up.data, 0, err);
    msgpack_unpacked_destroy(&up);
    return *value ? BF_OK : BF_EPROTO;
}

/* ---- messages ------------------------------------------------------------ */

bf_err_t proto_encode(const proto_msg_t *msg, uint8_t **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    uint32_t mask = proto_type_fields(msg->type);
    if (msg->type == PROTO_NONE || !messages[msg->type].name)
        return BF_EINVAL;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int bad = msgpack_pack_array(&pk, 2 + (size_t)__builtin_popcount(mask)) ||
              msgpack_pack_uint32(&pk, PROTO_VERSION) || msgpack_pack_uint32(&pk, msg->type);
    for (int f = 0; f < PROTO_FIELD_COUNT && !bad; f++) {
        if (!(mask & (1u << f)))
            continue;
        const void *slot = (const char *)msg + fields[f].offset;
        switch (fields[f].kind) {
        case KIND_STR: {
            const char *s = *(char *const *)slot;
            size_t len = s ? strlen(s) : 0;
            bad = len > PROTO_MAX_STR || msgpack_pack_str(&pk, len) ||
                  msgpack_pack_str_body(&pk, s ? s : "", len);
            break;
        }
        case KIND_UINT:
            bad = msgpack_pack_uint64(&pk, *(const uint64_t *)slot);
            break;
        case KIND_REAL:
            bad = msgpack_pack_double(&pk, *(const double *)slot);
            break;
        case KIND_OBJ: {
            const json_t *obj = *(json_t *const *)slot;
            if (!obj)
                bad = msgpack_pack_map(&pk, 0);
            else
                bad = !json_is_object(obj) || pack_json(&pk, obj, 1);
            break;
        }
        }
    }
    if (bad || sb.size > PROTO_MAX_FRAME) {
        msgpack_sbuffer_destroy(&sb);
        return BF_EPROTO;
    }
    *data = (uint8_t *)sb.data;
    *size = sb.size;
    return BF_OK;
}

bf_err_t proto_decode(const uint8_t *data, size_t size, proto_msg_t *msg, char *err)
{
    proto_msg_init(msg, PROTO_NONE);
    if (size > PROTO_MAX_FRAME)
        return bf_fail(err, BF_EPROTO, "message of %zu bytes exceeds %u", size, PROTO_MAX_FRAME);
    msgpack_unpacked up;
    bf_err_t rc = unpack_one(data, size, &up, err);
    if (rc != BF_OK)
        return rc;
    const msgpack_object *top = &up.data;
    const msgpack_object *items = top->via.array.ptr;
    uint32_t n = top->type == MSGPACK_OBJECT_ARRAY ? top->via.array.size : 0;
    const char *tname = "?";
    if (top->type != MSGPACK_OBJECT_ARRAY || n < 2) {
        rc = bf_fail(err, BF_EPROTO, "expected an array [version, type, ...]");
        goto done;
    }
    if (items[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || items[0].via.u64 != PROTO_VERSION) {
        rc =
            items[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER
                ? bf_fail(err, BF_EPROTO, "version %llu, expected %d",
                          (unsigned long long)items[0].via.u64, PROTO_VERSION)
                : bf_fail(err, BF_EPROTO, "version: expected uint, got %s", object_kind(&items[0]));
        goto done;
    }
    if (items[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || items[1].via.u64 == 0 ||
        items[1].via.u64 >= PROTO_TYPE_MAX || !messages[items[1].via.u64].name) {
        rc = bf_fail(err, BF_EPROTO, "unknown message type");
        goto done;
    }
    msg->type = (proto_type_t)items[1].via.u64;
    tname = messages[msg->type].name;
    uint32_t mask = messages[msg->type].mask;
    if (n != 2u + (uint32_t)__builtin_popcount(mask)) {
        rc = bf_fail(err, BF_EPROTO, "%s: %u fields, expected %d", tname, n - 2,
                     __builtin_popcount(mask));
        goto done;
    }
    uint32_t at = 2;
    for (int f = 0; f < PROTO_FIELD_COUNT; f++) {
        if (!(mask & (1u << f)))
            continue;
        const msgpack_object *o = &items[at++];
        void *slot = (char *)msg + fields[f].offset;
        bool ok = false;
        switch (fields[f].kind) {
        case KIND_STR:
            ok = o->type == MSGPACK_OBJECT_STR;
            if (ok && (o->via.str.size > PROTO_MAX_STR ||
                       memchr(o->via.str.ptr, '\0', o->via.str.size))) {
                rc = bf_fail(err, BF_EPROTO, "%s: field %s: string too long or with a NUL byte",
                             tname, fields[f].name);
                goto done;
            }
            if (ok && !(*(char **)slot = strndup(o->via.str.ptr, o->via.str.size))) {
                rc = BF_ENOMEM;
                goto done;
            }
            break;
        case KIND_UINT:
            ok = o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
            if (ok)
                *(uint64_t *)slot = o->via.u64;
            break;
        case KIND_REAL:
            ok = o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64 ||
                 o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                 o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
            if (ok)
                *(double *)slot = o->type == MSGPACK_OBJECT_POSITIVE_INTEGER   ? (double)o->via.u64
                                  : o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? (double)o->via.i64
                                                                               : o->via.f64;
            break;
        case KIND_OBJ:
            ok = o->type == MSGPACK_OBJECT_MAP;
            if (ok) {
                char why[BF_ERRLEN] = "";
                json_t *doc = to_json(o, 1, why);
                if (!doc) {
                    rc = bf_fail(err, BF_EPROTO, "%s: field %s: %s", tname, fields[f].name, why);
                    goto done;
                }
                *(json_t **)slot = doc;
            }
            break;
        }
        if (!ok) {
            rc = bf_fail(err, BF_EPROTO, "%s: field %s: expected %s, got %s", tname, fields[f].name,
                         kind_names[fields[f].kind], object_kind(o));
            goto done;
        }
    }
done:
    msgpack_unpacked_destroy(&up);
    if (rc != BF_OK)
        proto_msg_clear(msg);
    return rc;
}

/* ---- ZeroMQ ------------------------------------------------------------- */

bf_err_t proto_send(void *socket, const uint8_t *routing_id, size_t routing_id_len,
                    const proto_msg_t *msg, int flags)
{
    uint8_t *data;
    size_t size;
    bf_err_t rc = proto_encode(msg, &data, &size);
    if (rc != BF_OK)
        return rc;
    if (routing_id && zmq_send(socket, routing_id, routing_id_len, flags | ZMQ_SNDMORE) < 0) {
        free(data);
        return BF_EIO;
    }
    int n = zmq_send(socket, data, size, flags);
    free(data);
    return n < 0 ? BF_EIO : BF_OK;
}

/* Receives the rest of a multipart message and throws it away. */
static void drain(void *socket)
{
    int more = 1;
    size_t len = sizeof more;
    while (zmq_getsockopt(socket, ZMQ_RCVMORE, &more, &len) == 0 && more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, socket, 0) < 0) {
            zmq_msg_close(&part);
            break;
        }
        zmq_msg_close(&part);
        len = sizeof more;
    }
}

bf_err_t proto_recv(void *socket, uint8_t *routing_id, size_t *routing_id_len, proto_msg_t *msg,
                    int flags, char *err)
{
    proto_msg_init(msg, PROTO_NONE);
    zmq_msg_t part;
    if (routing_id) {
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, socket, flags) < 0) {
            zmq_msg_close(&part);
            return BF_EIO;
        }
        size_t len = zmq_msg_size(&part);
        if (len > *routing_id_len || !zmq_msg_more(&part)) {
            bool more = zmq_msg_more(&part);
            zmq_msg_close(&part);
            if (more)
                drain(socket);
            return bf_fail(err, BF_EPROTO, "bad routing frame");
        }
        memcpy(routing_id, zmq_msg_data(&part), len);
        *routing_id_len = len;
        zmq_msg_close(&part);
        flags &= ~ZMQ_DONTWAIT; /* the body is already here */
    }
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, socket, flags) < 0) {
        int e = errno;
        zmq_msg_close(&part);
        errno = e;
        return BF_EIO;
    }
    if (zmq_msg_more(&part)) {
        zmq_msg_close(&part);
        drain(socket);
        return bf_fail(err, BF_EPROTO, "a message must be one frame");
    }
    bf_err_t rc = proto_decode(zmq_msg_data(&part), zmq_msg_size(&part), msg, err);
    zmq_msg_close(&part);
    return rc;
}
