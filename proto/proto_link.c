/*  proto/proto_link.c - Beamfleet messages over ZeroMQ: proto_send and
    proto_recv (one message, one frame, a routing-id frame before it on a
    ROUTER), and proto_link_t, the one connection to the broker that the
    worker and the collector keep (a fresh DEALER per connection, the
    handshake monitor, heartbeats, silence detection, reconnection with
    backoff and jitter). The bytes are the codec's business (proto.c):
    every frame received goes through proto_decode, every one sent comes
    from proto_encode. */

#include "proto_link.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <zmq.h>

#define BACKOFF_MIN_MS 250  /* the first wait after the broker fell silent */
#define BACKOFF_MAX_MS 5000 /* the wait doubles up to this */
#define MONITOR_MS     100  /* the handshake monitor is read at most this often */

/* ---- one message on a socket ----------------------------------------------- */

bf_err_t proto_send(void *socket, const uint8_t *routing_id, size_t routing_id_len,
                    const proto_msg_t *msg, int flags)
{
    uint8_t *data;
    size_t size;
    bf_err_t rc = proto_encode(msg, &data, &size);
    if (rc != BF_OK)
        return rc;
    if (routing_id && zmq_send(socket, routing_id, routing_id_len, flags | ZMQ_SNDMORE) < 0) {
        int e = errno;
        free(data);
        errno = e;
        return BF_EIO;
    }
    int n = zmq_send(socket, data, size, flags);
    int e = errno;
    free(data);
    errno = e;
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
        int r = zmq_msg_recv(&part, socket, 0);
        zmq_msg_close(&part);
        if (r < 0)
            break;
        len = sizeof more;
    }
}

bf_err_t proto_recv(void *socket, uint8_t *routing_id, size_t *routing_id_len, proto_msg_t *msg,
                    int flags, char *err)
{
    return proto_recv_from(socket, routing_id, routing_id_len, msg, flags, NULL, NULL, 0, err);
}

bf_err_t proto_recv_from(void *socket, uint8_t *routing_id, size_t *routing_id_len,
                         proto_msg_t *msg, int flags, bf_role_t *role, char *key_name,
                         size_t key_name_len, char *err)
{
    /* The origin is two metadata look-ups per message: only when asked. */
    bool want = role || (key_name && key_name_len);
    proto_origin_t o = {BF_ROLE_NONE, "", ""};
    bf_err_t rc =
        proto_recv_origin(socket, routing_id, routing_id_len, msg, flags, want ? &o : NULL, err);
    if (role)
        *role = o.role;
    if (key_name && key_name_len)
        bf_strlcpy(key_name, o.key, key_name_len);
    return rc;
}

/* One frame into part (initialized here, closed again on failure with
   errno kept as libzmq set it). */
static bool recv_part(zmq_msg_t *part, void *socket, int flags)
{
    zmq_msg_init(part);
    if (zmq_msg_recv(part, socket, flags) >= 0)
        return true;
    int e = errno;
    zmq_msg_close(part);
    errno = e;
    return false;
}

static bf_err_t recv_msg(void *socket, uint8_t *routing_id, size_t *routing_id_len,
                         proto_msg_t *msg, int flags, proto_origin_t *origin, uint32_t raw_types,
                         char *err);

bf_err_t proto_recv_origin(void *socket, uint8_t *routing_id, size_t *routing_id_len,
                           proto_msg_t *msg, int flags, proto_origin_t *origin, char *err)
{
    return recv_msg(socket, routing_id, routing_id_len, msg, flags, origin, 0, err);
}

bf_err_t proto_recv_origin_keep(void *socket, uint8_t *routing_id, size_t *routing_id_len,
                                proto_msg_t *msg, int flags, proto_origin_t *origin,
                                uint32_t raw_types, char *err)
{
    return recv_msg(socket, routing_id, routing_id_len, msg, flags, origin, raw_types, err);
}

/* proto_recv_origin, the obj of the types in raw_types left encoded. */
static bf_err_t recv_msg(void *socket, uint8_t *routing_id, size_t *routing_id_len,
                         proto_msg_t *msg, int flags, proto_origin_t *origin, uint32_t raw_types,
                         char *err)
{
    proto_msg_init(msg, PROTO_NONE);
    if (origin) {
        origin->role = BF_ROLE_NONE;
        origin->key[0] = origin->addr[0] = '\0';
    }
    zmq_msg_t part;
    if (routing_id) {
        size_t room = *routing_id_len;
        *routing_id_len = 0; /* nobody to answer until a whole id is here */
        if (!recv_part(&part, socket, flags))
            return BF_EIO;
        size_t len = zmq_msg_size(&part);
        bool more = zmq_msg_more(&part);
        if (len <= room)
            memcpy(routing_id, zmq_msg_data(&part), len);
        zmq_msg_close(&part);
        if (!more)
            return bf_fail(err, BF_EPROTO, "a routing id without a message");
        if (len > room) {
            drain(socket);
            return bf_fail(err, BF_EPROTO, "routing id of %zu bytes exceeds %zu", len, room);
        }
        *routing_id_len = len;
        flags &= ~ZMQ_DONTWAIT; /* the rest of a multipart message is already here */
    }
    if (!recv_part(&part, socket, flags))
        return BF_EIO;
    if (zmq_msg_more(&part)) {
        zmq_msg_close(&part);
        drain(socket);
        return bf_fail(err, BF_EPROTO, "a message must be one frame, got more");
    }
    if (origin) {
        origin->role = bf_security_msg_role(&part, origin->key, sizeof origin->key);
        const char *addr = zmq_msg_gets(&part, "Peer-Address");
        bf_strlcpy(origin->addr, addr ? addr : "", sizeof origin->addr);
    }
    bf_err_t rc = proto_decode_keep(zmq_msg_data(&part), zmq_msg_size(&part), msg, raw_types, err);
    zmq_msg_close(&part);
    return rc;
}

/* ---- a connection to the broker ------------------------------------------------- */

struct proto_link {
    void *zctx;                    /* borrowed */
    char *broker;                  /* the endpoint */
    const bf_security_t *security; /* borrowed, NULL for plaintext */
    unsigned heartbeat_ms, liveness;
    void *dealer;  /* NULL while not connected */
    void *monitor; /* handshake failures of dealer, for the log */
    uint64_t handshake_failures;
    int64_t last_recv, last_send, reconnect_at;
    int64_t next_monitor; /* bf_mono_ms() of the next look at monitor */
    unsigned backoff_ms;  /* 0 once the broker was heard */
};

/* Opens a DEALER as proto_link_dealer_new describes, with the error code. */
static bf_err_t open_dealer(void *zctx, const char *broker, const bf_security_t *security,
                            void **socket, void **monitor, char *err)
{
    *socket = NULL;
    if (monitor)
        *monitor = NULL;
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    if (!s)
        return bf_fail(err, BF_EIO, "broker %s: %s", broker, zmq_strerror(zmq_errno()));
    /* A fresh routing id per connection: the broker tells a reconnected
       peer from the connection it lost by this id. */
    char id[33];
    bf_uuid(id);
    int zero = 0;
    int64_t maxmsg = (int64_t)PROTO_MAX_FRAME + 1024; /* the frame plus room for framing */
    if (zmq_setsockopt(s, ZMQ_ROUTING_ID, id, 32) != 0 ||
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0) {
        bf_err_t rc = bf_fail(err, BF_EINVAL, "broker %s: %s", broker, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return rc;
    }
    char why[BF_ERRLEN];
    if (security && bf_security_client(security, s, why) != BF_OK) {
        zmq_close(s);
        return bf_fail(err, BF_EINVAL, "broker %s: %s", broker, why);
    }
    /* Before the connect, or the first handshake goes unseen. */
    if (monitor && !(*monitor = bf_handshake_monitor(zctx, s, why)))
        bf_warn("broker %s: no handshake monitor: %s", broker, why);
    if (zmq_connect(s, broker) != 0) {
        bf_err_t rc = bf_fail(err, BF_EINVAL, "broker %s: %s", broker, zmq_strerror(zmq_errno()));
        if (monitor)
            bf_handshake_monitor_close(s, monitor);
        zmq_close(s);
        return rc;
    }
    *socket = s;
    return BF_OK;
}

void *proto_link_dealer_new(void *zctx, const char *broker, const bf_security_t *security,
                            void **monitor, char *err)
{
    void *s;
    return open_dealer(zctx, broker, security, &s, monitor, err) == BF_OK ? s : NULL;
}

proto_link_t *proto_link_new(void *zctx, const char *broker, const bf_security_t *security,
                             unsigned heartbeat_ms, unsigned liveness, char *err)
{
    if (!zctx || !broker || !*broker) {
        bf_fail(err, BF_EINVAL, "no broker endpoint");
        return NULL;
    }
    proto_link_t *self = calloc(1, sizeof *self);
    if (!self || !(self->broker = strdup(broker))) {
        free(self);
        bf_fail(err, BF_ENOMEM, "out of memory");
        return NULL;
    }
    self->zctx = zctx;
    self->security = security;
    self->heartbeat_ms = heartbeat_ms ? heartbeat_ms : 1000;
    self->liveness = liveness ? liveness : 3;
    return self;
}

void proto_link_destroy(proto_link_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    proto_link_t *self = *self_p;
    proto_link_disconnect(self);
    free(self->broker);
    free(self);
    *self_p = NULL;
}

void proto_link_disconnect(proto_link_t *self)
{
    if (!self)
        return;
    /* the monitor first: it watches the dealer */
    bf_handshake_monitor_close(self->dealer, &self->monitor);
    if (self->dealer)
        zmq_close(self->dealer);
    self->dealer = NULL;
}

bf_err_t proto_link_connect(proto_link_t *self, char *err)
{
    proto_link_disconnect(self);
    bf_err_t rc =
        open_dealer(self->zctx, self->broker, self->security, &self->dealer, &self->monitor, err);
    if (rc == BF_OK)
        self->last_recv = bf_mono_ms(); /* the broker gets a full I x L to answer */
    return rc;
}

void *proto_link_socket(const proto_link_t *self)
{
    return self->dealer;
}

bf_err_t proto_link_send(proto_link_t *self, const proto_msg_t *msg)
{
    if (!self->dealer)
        return BF_EIO;
    bf_err_t rc = proto_send(self->dealer, NULL, 0, msg, ZMQ_DONTWAIT);
    if (rc == BF_OK)
        self->last_send = bf_mono_ms();
    return rc;
}

bf_err_t proto_link_send_frame(proto_link_t *self, const uint8_t *frame, size_t size)
{
    if (!self->dealer || zmq_send(self->dealer, frame, size, ZMQ_DONTWAIT) < 0)
        return BF_EIO;
    self->last_send = bf_mono_ms();
    return BF_OK;
}

static bf_err_t link_recv(proto_link_t *self, proto_msg_t *msg, int64_t now, bool raw_obj)
{
    if (!self->dealer) {
        proto_msg_init(msg, PROTO_NONE);
        return BF_EIO;
    }
    char why[BF_ERRLEN];
    bf_err_t rc = recv_msg(self->dealer, NULL, NULL, msg, ZMQ_DONTWAIT, NULL,
                           raw_obj ? PROTO_ALL_TYPES : 0, why);
    if (rc == BF_EIO)
        return rc;
    self->last_recv = now;
    self->backoff_ms = 0;
    if (rc != BF_OK)
        bf_warn("dropping a malformed message: %s", why);
    return rc;
}

bf_err_t proto_link_recv(proto_link_t *self, proto_msg_t *msg, int64_t now)
{
    return link_recv(self, msg, now, false);
}

bf_err_t proto_link_recv_raw(proto_link_t *self, proto_msg_t *msg, int64_t now)
{
    return link_recv(self, msg, now, true);
}

/* A random number in [0, span]. getrandom without blocking: a peer that
   starts before the entropy pool is ready must still reconnect; the
   fallback only needs to differ between peers now and then. */
static unsigned jitter(unsigned span)
{
    unsigned v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v)
        v = (unsigned)bf_mono_ms() * 2654435761u;
    return v % (span + 1);
}

static void back_off(proto_link_t *self)
{
    self->backoff_ms = self->backoff_ms ? self->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (self->backoff_ms > BACKOFF_MAX_MS)
        self->backoff_ms = BACKOFF_MAX_MS;
}

proto_link_event_t proto_link_tick(proto_link_t *self, int64_t now)
{
    /* A refused key or a CURVE mismatch would otherwise look like a broker
       that is down: say so (the first few, then one in a hundred). */
    char why[BF_ERRLEN];
    /* At most every MONITOR_MS: a look costs two system calls, and a
       worker waiting for a short exec task ticks several times per task. */
    if (self->monitor && now >= self->next_monitor) {
        self->next_monitor = now + MONITOR_MS;
        if (bf_handshake_failed(self->monitor, why, sizeof why) &&
            (++self->handshake_failures <= 3 || self->handshake_failures % 100 == 0))
            bf_error("broker %s: %s", self->broker, why);
    }
    if (self->dealer && now - self->last_send >= (int64_t)self->heartbeat_ms) {
        proto_msg_t beat;
        proto_msg_init(&beat, PROTO_HEARTBEAT);
        if (proto_link_send(self, &beat) != BF_OK)
            self->last_send = now; /* no connection yet: try again an interval later */
    }
    if (self->dealer && now - self->last_recv > (int64_t)self->heartbeat_ms * self->liveness) {
        /* A fresh socket (a new routing id) after half the backoff plus up
           to another half at random. */
        back_off(self);
        self->reconnect_at = now + self->backoff_ms / 2 + jitter(self->backoff_ms / 2);
        bf_warn("broker silent for %lld ms: reconnecting in %lld ms",
                (long long)(now - self->last_recv), (long long)(self->reconnect_at - now));
        proto_link_disconnect(self);
        return PROTO_LINK_LOST;
    }
    if (!self->dealer && now >= self->reconnect_at) {
        char err[BF_ERRLEN];
        if (proto_link_connect(self, err) == BF_OK)
            return PROTO_LINK_CONNECTED;
        /* the endpoint was good once: out of file descriptors, say; wait longer each time */
        bf_error("%s", err);
        back_off(self);
        self->reconnect_at = now + self->backoff_ms;
    }
    return PROTO_LINK_QUIET;
}
