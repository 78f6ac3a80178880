/*  proto/proto.h - the one definition of every Beamfleet message and its
    MessagePack codec.

    Every peer (worker, collector, client) talks to the broker through a
    DEALER socket connected to the broker's ROUTER. Each message is exactly one
    ZeroMQ frame holding one MessagePack array:

        [ PROTO_VERSION, type, field, field, ... ]

    The fields a message carries, and their order, come from PROTO_MESSAGES
    below: a message carries the fields of its mask, in the order of
    PROTO_FIELDS. Documents of open shape (capabilities, job specs, results,
    status) travel in the one `obj` field as a MessagePack map and are handed
    to the program as jansson JSON values.

    Decoding is pure and bounded: it never trusts a length, a type or a depth
    from the wire, refuses anything over PROTO_MAX_FRAME, strings over
    PROTO_MAX_STR and nesting over PROTO_MAX_DEPTH, and returns BF_EPROTO with
    a one-line reason for anything malformed. It can be fuzzed.

    This header is the codec alone (library bf_proto: msgpack-c, jansson and
    common/bf.h): it names no socket, so the codec builds, tests and fuzzes
    without libzmq. Moving messages over ZeroMQ sockets, and a peer's
    connection to the broker, are proto_link.h (library bf_proto_link). */

#ifndef PROTO_H_INCLUDED
#define PROTO_H_INCLUDED

#include "../common/bf.h"
#include <jansson.h>

#define PROTO_VERSION   1
#define PROTO_MAX_FRAME (32u << 20) /* one message, bytes (an exec result may be 16 MiB) */
#define PROTO_MAX_STR   4096        /* one string field, bytes */
#define PROTO_MAX_DEPTH 32          /* nesting of obj */
#define PROTO_MAX_ACKS  4096        /* seqs in one ACKS */

/* Fields, in wire order: X(name, kind). Kinds: STR (UTF-8 string, NULL when
   absent), UINT (uint64_t), REAL (double), OBJ (json_t *, a map). */
#define PROTO_FIELDS(X)                                                                            \
    X(worker, STR)      /* a peer's self-chosen stable name, e.g. host:pid:gpu0 */                 \
    X(job_id, STR)      /* job identifier (32 hex) */                                              \
    X(task_id, STR)     /* task identifier (32 hex) */                                             \
    X(scene, STR)       /* scene name: one safe path component */                                  \
    X(stage, STR)       /* progress stage: load, trace, optimize, exec, ... */                     \
    X(reason, STR)      /* human-readable reason (errors, cancellations) */                        \
    X(credit, UINT)     /* how many tasks or deliveries the peer may hold */                       \
    X(attempt, UINT)    /* attempt number of a task, from 1 */                                     \
    X(seq, UINT)        /* delivery sequence number, or a status cursor */                         \
    X(total, UINT)      /* a count: tasks in a job, tasks cancelled */                             \
    X(code, UINT)       /* bf_err_t of an ERROR */                                                 \
    X(timeout_ms, UINT) /* hard limit for one task attempt */                                      \
    X(fraction, REAL)   /* progress 0..1 */                                                        \
    X(obj, OBJ)         /* document: caps, spec, result, status */

enum {
#define PROTO_FIELD_BIT_(name, kind) PROTO_FBIT_##name,
    PROTO_FIELDS(PROTO_FIELD_BIT_)
#undef PROTO_FIELD_BIT_
        PROTO_FIELD_COUNT
};
#define PF(name) (1u << PROTO_FBIT_##name)

/* Messages: X(NAME, code, "name", direction, fields). */
#define PROTO_MESSAGES(X)                                                                          \
    /* worker -> broker: register (again); obj = capabilities */                                   \
    X(READY, 1, "ready", "worker>broker", PF(worker) | PF(credit) | PF(obj))                       \
    /* broker -> worker: run one attempt; obj = job spec for the task */                           \
    X(TASK, 2, "task", "broker>worker",                                                            \
      PF(job_id) | PF(task_id) | PF(scene) | PF(attempt) | PF(timeout_ms) | PF(obj))               \
    /* worker -> broker: the attempt is at stage, fraction done */                                 \
    X(PROGRESS, 3, "progress", "worker>broker",                                                    \
      PF(task_id) | PF(attempt) | PF(stage) | PF(fraction))                                        \
    /* worker -> broker: the attempt finished; obj = result document */                            \
    X(RESULT, 4, "result", "worker>broker", PF(task_id) | PF(attempt) | PF(obj))                   \
    /* any -> any: liveness when nothing else was sent for an interval */                          \
    X(HEARTBEAT, 5, "heartbeat", "any", 0)                                                         \
    /* worker or collector -> broker: leaving cleanly */                                           \
    X(GOODBYE, 6, "goodbye", "worker>broker", 0)                                                   \
    /* client -> broker: a new job; obj = job document (see docs/protocol.md) */                   \
    X(SUBMIT, 7, "submit", "client>broker", PF(obj))                                               \
    /* broker -> client: the job is durable */                                                     \
    X(SUBMITTED, 8, "submitted", "broker>client", PF(job_id) | PF(total))                          \
    /* client -> broker: status; job_id "" for all jobs; seq = event cursor */                     \
    X(STATUS, 9, "status", "client>broker", PF(job_id) | PF(seq))                                  \
    /* broker -> client: obj = status document */                                                  \
    X(STATUS_REPLY, 10, "status-reply", "broker>client", PF(obj))                                  \
    /* client -> broker: cancel a job's queued and running tasks */                                \
    X(CANCEL, 11, "cancel", "client>broker", PF(job_id))                                           \
    /* broker -> client: how many tasks were cancelled */                                          \
    X(CANCELLED, 12, "cancelled", "broker>client", PF(job_id) | PF(total))                         \
    /* collector -> broker: register (again) as the collector */                                   \
    X(COLLECT, 13, "collect", "collector>broker", PF(worker) | PF(credit))                         \
    /* broker -> collector: one final result; obj = {job:{...}, result:{...}} */                   \
    X(DELIVER, 14, "deliver", "broker>collector", PF(job_id) | PF(task_id) | PF(seq) | PF(obj))    \
    /* broker -> collector: every task of a job is final; obj = job summary */                     \
    X(JOB_DONE, 15, "job-done", "broker>collector", PF(job_id) | PF(seq) | PF(obj))                \
    /* collector -> broker: delivery seq is durable (task_id "");                                  \
       broker -> worker: the RESULT of task_id is durable, forget it (seq 0) */                    \
    X(ACK, 16, "ack", "any", PF(task_id) | PF(seq))                                                \
    /* broker -> any: a request failed, or "unknown peer: send READY again" */                     \
    X(ERROR, 17, "error", "broker>any", PF(code) | PF(reason))                                     \
    /* broker -> worker: stop task_id now (job cancelled); its result is not wanted */             \
    X(ABORT, 18, "abort", "broker>worker", PF(task_id) | PF(reason))                               \
    /* worker -> broker, every 5 s while NVML works: obj = {gpu_util (%),                          \
       mem_used, mem_total (bytes), temperature_c} */                                              \
    X(STATS, 19, "stats", "worker>broker", PF(obj))                                                \
    /* supervisor -> broker: its worker `worker` died on this host; reason                         \
       says how (the broker requeues its tasks at once, as on heartbeat loss) */                   \
    X(LOST, 20, "lost", "worker>broker", PF(worker) | PF(reason))                                  \
    /* collector -> broker: the outbox rows obj.seq (an array of seqs, at                          \
       most PROTO_MAX_ACKS) are durable: one message for what one write made so */                 \
    X(ACKS, 21, "acks", "collector>broker", PF(obj))

typedef enum {
    PROTO_NONE = 0,
#define PROTO_MSG_ENUM_(NAME, code, name, dir, fields) PROTO_##NAME = code,
    PROTO_MESSAGES(PROTO_MSG_ENUM_)
#undef PROTO_MSG_ENUM_
        PROTO_TYPE_MAX
} proto_type_t;

/* One decoded or to-be-encoded message. Fields outside the type's mask are
   ignored by the encoder and left zero/NULL by the decoder. Strings and obj
   are owned by the message. */
typedef struct {
    proto_type_t type;
    char *worker, *job_id, *task_id, *scene, *stage, *reason;
    uint64_t credit, attempt, seq, total, code, timeout_ms;
    double fraction;
    json_t *obj;
    /* When set, sent in place of obj: the document already encoded (one
       MessagePack map of obj_raw_len bytes, owned by the message), copied
       into the frame as it is. For a sender passing on what it packed
       itself (the broker's stored results in DELIVER), so that it is not
       unpacked into a tree and packed again. proto_decode never sets it;
       proto_decode_raw sets it instead of obj. */
    uint8_t *obj_raw;
    size_t obj_raw_len;
} proto_msg_t;

/* Name of a message type ("ready"), or "?" for an unknown one. */
const char *proto_type_name(proto_type_t type);
/* Field mask of a type, 0 for an unknown one. */
uint32_t proto_type_fields(proto_type_t type);

/* Initializes msg as an empty message of type. */
void proto_msg_init(proto_msg_t *msg, proto_type_t type);
/* Frees what msg owns and zeroes it; safe on a zeroed message. */
void proto_msg_clear(proto_msg_t *msg);
/* Sets a string field to a copy of value (NULL allowed); BF_ENOMEM. */
bf_err_t proto_msg_set(char **field, const char *value) BF_MUST_CHECK;

/* Encodes msg into a fresh heap buffer (*data, *size); the caller frees it.
   A missing STR field is sent as "", a missing obj as an empty map.
   BF_EINVAL for an unknown type, BF_EPROTO when the result exceeds
   PROTO_MAX_FRAME or obj holds something MessagePack cannot carry. */
bf_err_t proto_encode(const proto_msg_t *msg, uint8_t **data, size_t *size) BF_MUST_CHECK;

/* Decodes one frame into msg (initialized by this call). On failure msg is
   cleared, BF_EPROTO is returned and err (BF_ERRLEN, may be NULL) says why,
   e.g. "task: field task_id: expected str, got uint". */
bf_err_t proto_decode(const uint8_t *data, size_t size, proto_msg_t *msg, char *err) BF_MUST_CHECK;

/* As proto_decode, but obj is left encoded: msg->obj stays NULL and
   msg->obj_raw (obj_raw_len bytes, owned by msg) holds a copy of the
   document's MessagePack map, bounded as proto_decode bounds it (size,
   depth, values, string lengths) but not yet converted: its keys and
   strings are checked when proto_msgpack_to_json converts it. For a
   receiver that sees the same document again and again (the job spec in
   every TASK of a job) and compares bytes before it converts. */
bf_err_t proto_decode_raw(const uint8_t *data, size_t size, proto_msg_t *msg,
                          char *err) BF_MUST_CHECK;
/* As proto_decode for the messages whose type is not in raw_types (a mask
   of PROTO_BIT(type)), as proto_decode_raw for those that are: proto_decode
   is raw_types 0, proto_decode_raw PROTO_ALL_TYPES. For a receiver that
   keeps one kind of document as bytes and wants every other one as a tree
   (the broker: a RESULT's), decoded once either way. */
#define PROTO_BIT(type) (1u << (type))
#define PROTO_ALL_TYPES 0xffffffffu
bf_err_t proto_decode_keep(const uint8_t *data, size_t size, proto_msg_t *msg, uint32_t raw_types,
                           char *err) BF_MUST_CHECK;

/* Converts between a MessagePack document and JSON (maps, arrays, strings,
   integers, reals, booleans, nil). Map keys must be strings. Bounded by
   PROTO_MAX_DEPTH and PROTO_MAX_STR. Exposed for the collector's PUB stream
   and for tests. */
bf_err_t proto_json_to_msgpack(const json_t *value, uint8_t **data, size_t *size) BF_MUST_CHECK;
bf_err_t proto_msgpack_to_json(const uint8_t *data, size_t size, json_t **value,
                               char *err) BF_MUST_CHECK;
/* Only the members keys[0..n) of a MessagePack map, as JSON (values[k]
   NULL where absent; the last of duplicate keys wins); the rest is checked
   and passed over, never unpacked. BF_EPROTO when data is no map or a
   member picked cannot be converted (values then all NULL); BF_EINVAL for
   more than PROTO_PICK_MAX keys. */
#define PROTO_PICK_MAX 16
bf_err_t proto_msgpack_pick(const uint8_t *data, size_t size, const char *const *keys, size_t n,
                            json_t **values, char *err) BF_MUST_CHECK;
/* Where the values of the members keys[0..n) of the MessagePack map at
   data (size bytes, the whole of it) start (at[k]) and how long they are
   (len[k]; NULL and 0 where absent; of duplicate keys the last), found in
   one walk that bounds the map as proto_decode bounds a frame; nothing is
   converted. False, with every at[k] NULL, when data is no well-formed
   map. For a receiver that compares a member's bytes with what it
   converted last time (the collector's JOBINFO). */
bool proto_msgpack_members(const uint8_t *data, size_t size, const char *const *keys, size_t n,
                           const uint8_t **at, size_t *len) BF_MUST_CHECK;

/* Whether proto_msgpack_to_json would accept the document data[0, size),
   found without converting it: BF_OK, or BF_EPROTO with the reason it
   would give (a string that is not UTF-8, a map key that is no string or
   comes twice, an integer past INT64_MAX, a real that is not finite, a
   bin or ext value), or BF_ENOMEM. For a receiver that keeps a document as
   the bytes it came in (the broker's results) yet must refuse what a tree
   could not hold, so that nobody downstream is handed it. */
bf_err_t proto_msgpack_check(const uint8_t *data, size_t size, char *err) BF_MUST_CHECK;
/* A copy of the map data[0, size) (one that proto_msgpack_check accepted)
   with the members of set put in: its members whose keys set has not, in
   their order and byte for byte, then set's members, packed. The map
   json_object_update(tree, set) would make, without the tree. *out is
   malloc'd (the caller frees it). BF_EINVAL when data is no map,
   BF_EPROTO when a value of set cannot go packed or the whole exceeds
   PROTO_MAX_FRAME, BF_ENOMEM. */
bf_err_t proto_msgpack_patch(const uint8_t *data, size_t size, const json_t *set, uint8_t **out,
                             size_t *out_len) BF_MUST_CHECK;

#endif
