/*  proto/proto_link.h - Beamfleet messages over ZeroMQ: proto_send and
    proto_recv move one message (proto.h) over a ROUTER or DEALER socket,
    and proto_link_t is a peer's connection to the broker, the one the
    worker and the collector share.

    A link owns one DEALER at a time. It opens it with a fresh routing id
    (the broker learns a reconnection from the new id), CURVE when the peer
    has keys, and a handshake monitor that turns a refused key into a log
    line instead of a broker that merely looks down. It sends a HEARTBEAT
    when nothing else went out for a heartbeat interval; when nothing came
    from the broker for heartbeat x liveness it closes the socket and opens
    a fresh one after a backoff (250 ms doubling to 5 s, the second half of
    each wait random, so that a fleet does not come back in lock step).
    What a peer says when it (re)connects (READY, COLLECT) is the owner's
    business: proto_link_tick says when.

    This is library bf_proto_link (libzmq, the codec bf_proto, common); the
    codec alone is proto.h, which builds without libzmq. */

#ifndef PROTO_LINK_H_INCLUDED
#define PROTO_LINK_H_INCLUDED

#include "../common/bf_security.h"
#include "proto.h"

/* ---- one message on a socket ------------------------------------------------ */

/* Encodes msg and sends it as one frame on socket, preceded by a routing-id
   frame when routing_id is not NULL (ROUTER side). flags as for zmq_send
   (ZMQ_DONTWAIT). BF_EIO when the send fails; errno is left as zmq set it
   (EHOSTUNREACH for a gone peer with ROUTER_MANDATORY). The encoder's
   errors (BF_EINVAL, BF_EPROTO) as proto_encode, and nothing is sent. */
bf_err_t proto_send(void *socket, const uint8_t *routing_id, size_t routing_id_len,
                    const proto_msg_t *msg, int flags) BF_MUST_CHECK;

/* Receives one message. On a ROUTER socket (routing_id != NULL) the first
   frame is the peer's routing id, copied into routing_id (at most
   *routing_id_len bytes, updated). Extra or missing frames are BF_EPROTO (the
   rest of the multipart message is drained). BF_EIO on socket failure
   (including EAGAIN with ZMQ_DONTWAIT: check errno). */
bf_err_t proto_recv(void *socket, uint8_t *routing_id, size_t *routing_id_len, proto_msg_t *msg,
                    int flags, char *err) BF_MUST_CHECK;

/* The same, and the role and key name the ZAP handler gave the sender's
   connection (bf_security.h): BF_ROLE_NONE and "" without CURVE. */
bf_err_t proto_recv_from(void *socket, uint8_t *routing_id, size_t *routing_id_len,
                         proto_msg_t *msg, int flags, bf_role_t *role, char *key_name,
                         size_t key_name_len, char *err) BF_MUST_CHECK;

/* Where a message came from, as libzmq tells it: the role and key name of
   the connection (as proto_recv_from) and its "Peer-Address" (the remote IP
   of a TCP connection, "" for ipc and inproc or when libzmq does not say). */
typedef struct {
    bf_role_t role;
    char key[256];
    char addr[64];
} proto_origin_t;

/* proto_recv_from, with the origin (may be NULL) filled in. */
bf_err_t proto_recv_origin(void *socket, uint8_t *routing_id, size_t *routing_id_len,
                           proto_msg_t *msg, int flags, proto_origin_t *origin,
                           char *err) BF_MUST_CHECK;
/* The same, decoded with proto_decode_keep: the obj of the types in
   raw_types stays the bytes it came in (msg->obj_raw). For the broker,
   which keeps a RESULT's document as bytes and wants every other one as a
   tree. */
bf_err_t proto_recv_origin_keep(void *socket, uint8_t *routing_id, size_t *routing_id_len,
                                proto_msg_t *msg, int flags, proto_origin_t *origin,
                                uint32_t raw_types, char *err) BF_MUST_CHECK;

/* ---- a connection to the broker --------------------------------------------- */

/* A DEALER to the broker as every peer connects: a fresh random routing
   id, ZMQ_LINGER 0, ZMQ_MAXMSGSIZE a little over PROTO_MAX_FRAME (a
   result of 16 MiB fits), the CURVE client settings of security (borrowed;
   NULL for plaintext), and, when monitor is not NULL, a handshake monitor
   (bf_handshake_monitor; NULL there, with a warning logged, when it cannot
   be made) set up before the connect. Returns the connected socket, or NULL
   with err (BF_ERRLEN) saying why, "broker ENDPOINT: ...". For a one-shot
   sender (the supervisor's LOST); a long-lived peer uses proto_link_t. */
void *proto_link_dealer_new(void *zctx, const char *broker, const bf_security_t *security,
                            void **monitor, char *err);

typedef struct proto_link proto_link_t;

/* What proto_link_tick did, for the owner to act on. */
typedef enum {
    PROTO_LINK_QUIET = 0, /* nothing the owner must know */
    PROTO_LINK_LOST,      /* the broker fell silent: the socket is closed; a fresh one follows */
    PROTO_LINK_CONNECTED  /* a fresh socket is connected: register on it now */
} proto_link_event_t;

/* A link to the broker at endpoint broker (copied) in the ZeroMQ context
   zctx and with the CURVE settings security (both borrowed, NULL security
   for plaintext: both must outlive the link). heartbeat_ms and liveness
   are the fleet's I and L (0: 1000 ms and 3). Not connected yet: see
   proto_link_connect. NULL with err (BF_ERRLEN) on bad arguments or
   without memory. */
proto_link_t *proto_link_new(void *zctx, const char *broker, const bf_security_t *security,
                             unsigned heartbeat_ms, unsigned liveness, char *err);
/* Closes the socket and frees the link; NULL-safe, sets *self_p to NULL. */
void proto_link_destroy(proto_link_t **self_p);

/* Opens a fresh DEALER (proto_link_dealer_new, with a handshake monitor),
   closing the one there was, and starts the silence clock. The first
   connection is the owner's to make, so that a bad endpoint or bad keys
   stop a peer at start (BF_EIO, BF_EINVAL with err saying why, no socket);
   later ones are proto_link_tick's. Register on the socket (READY, COLLECT)
   once this returns BF_OK. */
bf_err_t proto_link_connect(proto_link_t *self, char *err) BF_MUST_CHECK;
/* Closes the socket and its monitor, if any; the link stays usable.
   NULL-safe. */
void proto_link_disconnect(proto_link_t *self);

/* The DEALER to poll and to set options on, NULL while not connected.
   Borrowed: closed by the link. */
void *proto_link_socket(const proto_link_t *self);

/* Sends msg without waiting (ZMQ_DONTWAIT). BF_EIO while not connected or
   when the socket cannot take it now (errno as zmq set it); the encoder's
   errors as proto_encode. Every message sent postpones the heartbeat. */
bf_err_t proto_link_send(proto_link_t *self, const proto_msg_t *msg) BF_MUST_CHECK;

/* Sends one message already encoded by proto_encode (frame, size bytes,
   borrowed), as proto_link_send does: for a sender that keeps what it
   sent to send it again (the worker's results until the broker's ACK),
   so that it is encoded once. BF_EIO as proto_link_send. */
bf_err_t proto_link_send_frame(proto_link_t *self, const uint8_t *frame, size_t size) BF_MUST_CHECK;

/* Takes one message from the broker without waiting; now is bf_mono_ms()
   of this turn. BF_OK: msg holds it (the caller clears it). BF_EPROTO: a
   malformed message was dropped (logged); more may wait. BF_EIO: nothing
   waits, or not connected. Anything received, malformed or not, shows that
   the broker is there: the silence clock starts again and the next backoff
   from its minimum. */
bf_err_t proto_link_recv(proto_link_t *self, proto_msg_t *msg, int64_t now) BF_MUST_CHECK;

/* proto_link_recv, with a document left encoded (proto_decode_raw): obj
   NULL, obj_raw its bytes. */
bf_err_t proto_link_recv_raw(proto_link_t *self, proto_msg_t *msg, int64_t now) BF_MUST_CHECK;

/* The link's housekeeping, once per turn of the owner's loop (at least
   every heartbeat_ms / 4): logs a failed CURVE handshake (the first three,
   then one in a hundred), sends a HEARTBEAT after heartbeat_ms without
   sending, closes the socket after heartbeat_ms x liveness without hearing
   from the broker (PROTO_LINK_LOST, logged with the wait), and once the
   backoff is over connects again (PROTO_LINK_CONNECTED; a failed attempt is
   logged and retried after a doubled backoff). */
proto_link_event_t proto_link_tick(proto_link_t *self, int64_t now);

#endif
