/*  proto/proto_link_test.c - Beamfleet messages on real ZeroMQ sockets, and
    the link to the broker as the worker and the collector use it. First
    proto_send / proto_recv between a ROUTER and a DEALER: every message both
    ways, multipart garbage that must not desynchronize the next message, a
    routing id too long for the caller's buffer, EAGAIN and EHOSTUNREACH.
    Then proto_link_t against a ROUTER that plays the broker: a fresh
    routing id per connection, heartbeats while idle, malformed messages
    dropped, silence noticed after I x L, the wait before the next
    connection in [backoff / 2, backoff] with the backoff doubling and
    starting over once the broker is heard, a bad endpoint, and CURVE (a
    listed key arrives with its role, a refused one is logged). The log
    lines are read back from stderr. */

#include "proto_link.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "../common/bf_check.h"

#define HB_MS   100 /* the link's heartbeat in these tests */
#define LIVE    3   /* silence after HB_MS * LIVE */
#define TICK_MS 5   /* a turn of the owner's loop */

/* ---- messages ------------------------------------------------------------------ */

static void fill_STR(const char *name, char **slot)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s-välue", name);
    CHECK(proto_msg_set(slot, buf) == BF_OK);
}
static void fill_UINT(const char *name, uint64_t *slot)
{
    *slot = UINT64_MAX - strlen(name); /* large: uint64 on the wire */
}
static void fill_REAL(const char *name, double *slot)
{
    *slot = 0.25 + (double)strlen(name);
}
static void fill_OBJ(const char *name, json_t **slot)
{
    *slot = json_pack("{s:s, s:[i, I, f, b, n], s:{s:s}}", "field", name, "list", -3,
                      (json_int_t)INT64_MAX, 2.5, 1, "nested", "unicode", "ü€𝄞");
}

/* A message of type with every field set (the encoder sends those of its mask). */
static void fill(proto_msg_t *m, proto_type_t type)
{
    proto_msg_init(m, type);
#define FILL_(name, kind) fill_##kind(#name, &m->name);
    PROTO_FIELDS(FILL_)
#undef FILL_
}

/* Whether a and b say the same on the wire (the encoder is deterministic,
   and the decoder keeps the order of obj's keys). */
static bool same(const proto_msg_t *a, const proto_msg_t *b)
{
    uint8_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    bool ok = proto_encode(a, &x, &nx) == BF_OK && proto_encode(b, &y, &ny) == BF_OK && nx == ny &&
              !memcmp(x, y, nx);
    free(x);
    free(y);
    return ok;
}

/* ---- proto_send / proto_recv ------------------------------------------------- */

static void test_sockets(void)
{
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER), *dealer = zmq_socket(ctx, ZMQ_DEALER);
    int one = 1;
    CHECK(zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) == 0);
    CHECK(zmq_setsockopt(dealer, ZMQ_ROUTING_ID, "peer-1", 6) == 0);
    CHECK(zmq_bind(router, "inproc://proto-test") == 0);
    CHECK(zmq_connect(dealer, "inproc://proto-test") == 0);
    uint8_t id[256];
    size_t id_len;
    char err[BF_ERRLEN];
    proto_msg_t m, r;

    /* every message both ways */
    for (int t = 1; t < PROTO_TYPE_MAX; t++) {
        fill(&m, (proto_type_t)t);
        CHECK(proto_send(dealer, NULL, 0, &m, 0) == BF_OK);
        id_len = sizeof id;
        CHECK(proto_recv(router, id, &id_len, &r, 0, err) == BF_OK);
        CHECK(id_len == 6 && !memcmp(id, "peer-1", 6));
        CHECKF(r.type == (proto_type_t)t && same(&m, &r), "%s", proto_type_name((proto_type_t)t));
        proto_msg_clear(&r);
        CHECK(proto_send(router, id, id_len, &m, 0) == BF_OK);
        CHECK(proto_recv(dealer, NULL, NULL, &r, 0, err) == BF_OK);
        CHECKF(r.type == (proto_type_t)t && same(&m, &r), "%s", proto_type_name((proto_type_t)t));
        proto_msg_clear(&r);
        proto_msg_clear(&m);
    }

    /* a 3-frame garbage message, then a good one: not desynchronized */
    CHECK(zmq_send(dealer, "a", 1, ZMQ_SNDMORE) == 1);
    CHECK(zmq_send(dealer, "b", 1, ZMQ_SNDMORE) == 1);
    CHECK(zmq_send(dealer, "c", 1, 0) == 1);
    fill(&m, PROTO_READY);
    CHECK(proto_send(dealer, NULL, 0, &m, 0) == BF_OK);
    id_len = sizeof id;
    CHECK(proto_recv(router, id, &id_len, &r, 0, err) == BF_EPROTO);
    CHECK(strstr(err, "one frame") != NULL);
    CHECK(id_len == 6 && !memcmp(id, "peer-1", 6)); /* who sent it is known */
    CHECK(r.type == PROTO_NONE);
    id_len = sizeof id;
    CHECK(proto_recv(router, id, &id_len, &r, 0, err) == BF_OK);
    CHECK(r.type == PROTO_READY && json_equal(r.obj, m.obj));
    proto_msg_clear(&r);

    /* one frame of garbage: refused, the next one is fine */
    CHECK(zmq_send(dealer, "\x92\x07\x05", 3, 0) == 3);
    CHECK(proto_send(dealer, NULL, 0, &m, 0) == BF_OK);
    id_len = sizeof id;
    CHECK(proto_recv(router, id, &id_len, &r, 0, err) == BF_EPROTO &&
          strstr(err, "version 7, expected 1"));
    id_len = sizeof id;
    CHECK(proto_recv(router, id, &id_len, &r, 0, err) == BF_OK && r.type == PROTO_READY);
    proto_msg_clear(&r);

    /* a routing id that does not fit the caller's buffer */
    CHECK(proto_send(dealer, NULL, 0, &m, 0) == BF_OK);
    CHECK(proto_send(dealer, NULL, 0, &m, 0) == BF_OK);
    id_len = 3;
    CHECK(proto_recv(router, id, &id_len, &r, 0, err) == BF_EPROTO && id_len == 0);
    id_len = sizeof id;
    CHECK(proto_recv(router, id, &id_len, &r, 0, err) == BF_OK && r.type == PROTO_READY);
    proto_msg_clear(&r);

    /* garbage the other way: two body frames to the dealer */
    CHECK(zmq_send(router, "peer-1", 6, ZMQ_SNDMORE) == 6);
    CHECK(zmq_send(router, "x", 1, ZMQ_SNDMORE) == 1);
    CHECK(zmq_send(router, "y", 1, 0) == 1);
    proto_msg_t hb;
    proto_msg_init(&hb, PROTO_HEARTBEAT);
    CHECK(proto_send(router, (const uint8_t *)"peer-1", 6, &hb, 0) == BF_OK);
    CHECK(proto_recv(dealer, NULL, NULL, &r, 0, err) == BF_EPROTO);
    CHECK(proto_recv(dealer, NULL, NULL, &r, 0, err) == BF_OK && r.type == PROTO_HEARTBEAT);

    /* the origin of a plaintext message: no role, no key, no address over inproc */
    proto_origin_t origin;
    CHECK(proto_send(dealer, NULL, 0, &hb, 0) == BF_OK);
    id_len = sizeof id;
    CHECK(proto_recv_origin(router, id, &id_len, &r, 0, &origin, err) == BF_OK);
    CHECK(origin.role == BF_ROLE_NONE && !origin.key[0] && !origin.addr[0]);

    /* nothing waiting: BF_EIO with EAGAIN */
    errno = 0;
    CHECK(proto_recv(dealer, NULL, NULL, &r, ZMQ_DONTWAIT, err) == BF_EIO && errno == EAGAIN);
    id_len = sizeof id;
    errno = 0;
    CHECK(proto_recv(router, id, &id_len, &r, ZMQ_DONTWAIT, err) == BF_EIO && errno == EAGAIN);
    /* a gone peer with ROUTER_MANDATORY: BF_EIO with EHOSTUNREACH */
    errno = 0;
    CHECK(proto_send(router, (const uint8_t *)"nobody", 6, &hb, ZMQ_DONTWAIT) == BF_EIO &&
          errno == EHOSTUNREACH);
    /* an unencodable message is not sent at all */
    proto_msg_init(&hb, PROTO_NONE);
    CHECK(proto_send(dealer, NULL, 0, &hb, 0) == BF_EINVAL);
    id_len = sizeof id;
    CHECK(proto_recv(router, id, &id_len, &r, ZMQ_DONTWAIT, err) == BF_EIO);

    proto_msg_clear(&m);
    int zero = 0;
    zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(dealer);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

/* ---- the log, read back ----------------------------------------------------------- */

static char log_path[256];
static int saved_stderr = -1;

/* From now on bf_log's lines go to log_path. */
static void log_capture(void)
{
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(saved_stderr >= 0 && fd >= 0 && dup2(fd, STDERR_FILENO) >= 0);
    close(fd);
}

/* Ends log_capture and returns what was logged meanwhile (free it), also
   echoed to the real stderr for whoever reads the test's output. */
static char *log_release(void)
{
    fflush(stderr);
    REQUIRE(dup2(saved_stderr, STDERR_FILENO) >= 0);
    close(saved_stderr);
    char *text = NULL;
    size_t len = 0;
    char err[BF_ERRLEN];
    REQUIRE(bf_read_file(log_path, 1 << 20, &text, &len, err) == BF_OK);
    fputs(text, stderr);
    return text;
}

static int count_lines(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* ---- the link ---------------------------------------------------------------------- */

/* The broker's side: a ROUTER, and the routing id of the last message. */
typedef struct {
    void *router;
    uint8_t id[256];
    size_t id_len;
} broker_t;

/* The next message the broker gets, within ms; PROTO_NONE when none. */
static proto_type_t broker_recv(broker_t *b, int ms)
{
    zmq_pollitem_t it = {b->router, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) <= 0)
        return PROTO_NONE;
    proto_msg_t m;
    char err[BF_ERRLEN];
    b->id_len = sizeof b->id;
    if (proto_recv(b->router, b->id, &b->id_len, &m, 0, err) != BF_OK)
        return PROTO_NONE;
    proto_type_t type = m.type;
    proto_msg_clear(&m);
    return type;
}

static void broker_send(broker_t *b, proto_type_t type)
{
    proto_msg_t m;
    proto_msg_init(&m, type);
    CHECK(proto_send(b->router, b->id, b->id_len, &m, 0) == BF_OK);
}

/* What a stretch of the owner's loop saw. */
typedef struct {
    int beats;                           /* HEARTBEATs that reached the broker */
    int heard;                           /* messages the link took (BF_OK) */
    int64_t heard_at;                    /* when the link last took one */
    int64_t lost_at, connected_at;       /* the tick's now at each event, 0 for none */
    uint8_t first_id[256], last_id[256]; /* routing ids the broker saw */
    size_t first_id_len, last_id_len;
} seen_t;

/* Turns the owner's loop for at most ms: ticks the link, takes what the
   broker sent (answering each message with a HEARTBEAT when answer), stops
   after the event until (PROTO_LINK_QUIET: none) and registers on a fresh
   connection with READY, as a worker would. */
static seen_t run(proto_link_t *link, broker_t *b, int ms, bool answer, proto_link_event_t until)
{
    seen_t s = {0};
    int64_t end = bf_mono_ms() + ms;
    while (bf_mono_ms() < end) {
        proto_type_t t;
        while ((t = broker_recv(b, 0)) != PROTO_NONE) {
            s.beats += t == PROTO_HEARTBEAT;
            if (!s.first_id_len) {
                memcpy(s.first_id, b->id, b->id_len);
                s.first_id_len = b->id_len;
            }
            memcpy(s.last_id, b->id, b->id_len);
            s.last_id_len = b->id_len;
            if (answer)
                broker_send(b, PROTO_HEARTBEAT);
        }
        usleep(TICK_MS * 1000);
        int64_t now = bf_mono_ms();
        proto_msg_t m;
        bf_err_t rc;
        while ((rc = proto_link_recv(link, &m, now)) != BF_EIO) {
            if (rc == BF_OK) {
                s.heard++;
                s.heard_at = now;
            }
            proto_msg_clear(&m);
        }
        proto_link_event_t ev = proto_link_tick(link, now);
        if (ev == PROTO_LINK_LOST && !s.lost_at)
            s.lost_at = now;
        if (ev == PROTO_LINK_CONNECTED) {
            if (!s.connected_at)
                s.connected_at = now;
            proto_msg_t ready;
            proto_msg_init(&ready, PROTO_READY);
            CHECK(proto_link_send(link, &ready) == BF_OK);
        }
        if (until != PROTO_LINK_QUIET && ev == until)
            break;
    }
    return s;
}

/* The wait the last "reconnecting in N ms" line of text announced, or -1. */
static long announced_wait(const char *text)
{
    const char *p = NULL;
    for (const char *q = text; (q = strstr(q, "reconnecting in ")); q++)
        p = q;
    return p ? strtol(p + strlen("reconnecting in "), NULL, 10) : -1;
}

/* The broker, last heard at last_heard (by the link's clock, or earlier),
   falls silent: the link gives up after I x L and connects again after the
   wait it announced, which is returned; *connected_at is when. */
static long silence(proto_link_t *link, broker_t *b, int64_t last_heard, int64_t *connected_at)
{
    log_capture();
    seen_t s = run(link, b, 3000, false, PROTO_LINK_LOST);
    char *log = log_release();
    CHECKF(s.lost_at && s.lost_at - last_heard >= HB_MS * LIVE, "lost after %lld ms",
           (long long)(s.lost_at - last_heard));
    CHECK(count_lines(log, "broker silent for ") == 1);
    long wait = announced_wait(log);
    free(log);
    CHECK(proto_link_socket(link) == NULL);
    proto_msg_t m;
    proto_msg_init(&m, PROTO_HEARTBEAT);
    CHECK(proto_link_send(link, &m) == BF_EIO);
    /* not a moment before the wait is over */
    seen_t c = run(link, b, 6000, false, PROTO_LINK_CONNECTED);
    CHECKF(c.connected_at && c.connected_at - s.lost_at >= wait, "reconnected after %lld ms of %ld",
           (long long)(c.connected_at - s.lost_at), wait);
    CHECK(proto_link_socket(link) != NULL);
    *connected_at = c.connected_at;
    return wait;
}

static void test_link(void)
{
    char err[BF_ERRLEN];
    void *ctx = zmq_ctx_new();
    broker_t b = {zmq_socket(ctx, ZMQ_ROUTER), {0}, 0};
    int zero = 0;
    zmq_setsockopt(b.router, ZMQ_LINGER, &zero, sizeof zero);
    REQUIRE(zmq_bind(b.router, "inproc://link-test") == 0);

    CHECK(proto_link_new(NULL, "inproc://link-test", NULL, HB_MS, LIVE, err) == NULL &&
          strstr(err, "no broker endpoint"));
    CHECK(proto_link_new(ctx, "", NULL, HB_MS, LIVE, err) == NULL);
    proto_link_t *link = proto_link_new(ctx, "inproc://link-test", NULL, HB_MS, LIVE, err);
    REQUIRE(link != NULL);

    /* not connected yet: nothing goes, nothing comes */
    proto_msg_t m;
    proto_msg_init(&m, PROTO_HEARTBEAT);
    CHECK(proto_link_socket(link) == NULL);
    CHECK(proto_link_send(link, &m) == BF_EIO);
    CHECK(proto_link_recv(link, &m, bf_mono_ms()) == BF_EIO && m.type == PROTO_NONE);

    /* connected: registration goes out on a fresh 32-character routing id */
    CHECK(proto_link_connect(link, err) == BF_OK && proto_link_socket(link) != NULL);
    fill(&m, PROTO_READY);
    CHECK(proto_link_send(link, &m) == BF_OK);
    proto_msg_clear(&m);
    CHECK(broker_recv(&b, 1000) == PROTO_READY && b.id_len == 32);
    uint8_t first[32];
    memcpy(first, b.id, sizeof first);

    /* an answering broker: heartbeats both ways, and never a reconnection */
    seen_t s = run(link, &b, 10 * HB_MS, true, PROTO_LINK_QUIET);
    CHECKF(s.beats >= 6 && s.heard >= 6, "%d heartbeats, %d heard", s.beats, s.heard);
    CHECK(!s.lost_at && !s.connected_at);
    CHECK(s.last_id_len == 32 && !memcmp(s.last_id, first, 32));

    /* a malformed message is dropped and logged; it still shows the broker is there */
    log_capture();
    CHECK(zmq_send(b.router, b.id, b.id_len, ZMQ_SNDMORE) == (int)b.id_len);
    CHECK(zmq_send(b.router, "\x92\x07\x05", 3, 0) == 3);
    broker_send(&b, PROTO_HEARTBEAT);
    zmq_pollitem_t it = {proto_link_socket(link), 0, ZMQ_POLLIN, 0};
    CHECK(zmq_poll(&it, 1, 1000) == 1);
    CHECK(proto_link_recv(link, &m, bf_mono_ms()) == BF_EPROTO && m.type == PROTO_NONE);
    CHECK(zmq_poll(&it, 1, 1000) == 1);
    int64_t heard = bf_mono_ms();
    CHECK(proto_link_recv(link, &m, heard) == BF_OK && m.type == PROTO_HEARTBEAT);
    proto_msg_clear(&m);
    CHECK(proto_link_recv(link, &m, bf_mono_ms()) == BF_EIO);
    char *log = log_release();
    CHECK(count_lines(log, "dropping a malformed message: version 7, expected 1") == 1);
    free(log);

    /* silence: the first wait is 250 ms, half of it random */
    int64_t connected_at;
    long wait = silence(link, &b, heard, &connected_at);
    CHECKF(wait >= 125 && wait <= 250, "first wait %ld ms", wait);
    /* a fresh connection is a fresh routing id */
    CHECK(broker_recv(&b, 1000) == PROTO_READY && b.id_len == 32 && memcmp(b.id, first, 32));
    /* silent still: the backoff doubles */
    wait = silence(link, &b, connected_at, &connected_at);
    CHECKF(wait >= 250 && wait <= 500, "second wait %ld ms", wait);
    /* heard again: it starts over */
    CHECK(broker_recv(&b, 1000) == PROTO_READY);
    broker_send(&b, PROTO_HEARTBEAT);
    s = run(link, &b, 2 * TICK_MS + 50, false, PROTO_LINK_QUIET);
    CHECK(s.heard == 1);
    wait = silence(link, &b, s.heard_at, &connected_at);
    CHECKF(wait >= 125 && wait <= 250, "wait after hearing the broker %ld ms", wait);

    proto_link_disconnect(link);
    CHECK(proto_link_socket(link) == NULL);
    proto_link_destroy(&link);
    CHECK(link == NULL);
    proto_link_destroy(&link); /* idempotent */
    proto_link_destroy(NULL);
    zmq_close(b.router);
    zmq_ctx_term(ctx);
}

/* An endpoint zmq_connect refuses: the first connection fails with the
   reason, later ones are the tick's, logged and spaced by the backoff. */
static void test_bad_endpoint(void)
{
    char err[BF_ERRLEN];
    void *ctx = zmq_ctx_new();
    proto_link_t *link = proto_link_new(ctx, "nonsense://x", NULL, HB_MS, LIVE, err);
    REQUIRE(link != NULL);
    CHECKF(proto_link_connect(link, err) == BF_EINVAL && !strncmp(err, "broker nonsense://x: ", 21),
           "%s", err);
    CHECK(proto_link_socket(link) == NULL);
    log_capture();
    int64_t now = bf_mono_ms();
    CHECK(proto_link_tick(link, now) == PROTO_LINK_QUIET);       /* tried at once, failed */
    CHECK(proto_link_tick(link, now + 100) == PROTO_LINK_QUIET); /* within the 250 ms: not tried */
    CHECK(proto_link_tick(link, now + 250) == PROTO_LINK_QUIET); /* tried, then 500 ms */
    CHECK(proto_link_tick(link, now + 700) == PROTO_LINK_QUIET);
    CHECK(proto_link_tick(link, now + 750) == PROTO_LINK_QUIET);
    char *log = log_release();
    CHECKF(count_lines(log, "broker nonsense://x: ") == 3, "%s", log);
    free(log);
    proto_link_destroy(&link);

    /* the one-shot DEALER: its options, and the same refusal */
    void *monitor = NULL;
    CHECK(proto_link_dealer_new(ctx, "nonsense://x", NULL, &monitor, err) == NULL &&
          monitor == NULL && !strncmp(err, "broker nonsense://x: ", 21));
    void *s = proto_link_dealer_new(ctx, "inproc://nobody-yet", NULL, &monitor, err);
    REQUIRE(s != NULL);
    CHECK(monitor != NULL);
    char id[256];
    size_t len = sizeof id;
    int linger = -1;
    size_t ilen = sizeof linger;
    int64_t maxmsg = 0;
    size_t mlen = sizeof maxmsg;
    CHECK(zmq_getsockopt(s, ZMQ_ROUTING_ID, id, &len) == 0 && len == 32);
    CHECK(zmq_getsockopt(s, ZMQ_LINGER, &linger, &ilen) == 0 && linger == 0);
    CHECK(zmq_getsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, &mlen) == 0 &&
          maxmsg > (int64_t)PROTO_MAX_FRAME);
    zmq_close(monitor);
    zmq_close(s);
    s = proto_link_dealer_new(ctx, "inproc://nobody-yet", NULL, NULL, err);
    CHECK(s != NULL);
    zmq_close(s);
    zmq_ctx_term(ctx);
}

/* ---- CURVE ----------------------------------------------------------------------------- */

static void test_curve(void)
{
    char dir[256], rogue_dir[300], err[BF_ERRLEN];
    snprintf(dir, sizeof dir, "/tmp/bf-proto-link-test-%d", (int)getpid());
    snprintf(rogue_dir, sizeof rogue_dir, "%s/rogue", dir);
    REQUIRE(bf_keygen(dir, "broker", BF_ROLE_BROKER, false, err) == BF_OK);
    REQUIRE(bf_keygen(dir, "w1", BF_ROLE_WORKER, false, err) == BF_OK);
    /* mallory trusts the broker's key; the broker does not list hers */
    REQUIRE(bf_keygen(rogue_dir, "mallory", BF_ROLE_WORKER, false, err) == BF_OK);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "cp %s/broker.public %s/", dir, rogue_dir);
    REQUIRE(system(cmd) == 0);

    void *ctx = zmq_ctx_new();
    bf_security_t *broker = bf_security_new(dir, "broker", err);
    bf_security_t *w1 = bf_security_new(dir, "w1", err);
    bf_security_t *mallory = bf_security_new(rogue_dir, "mallory", err);
    REQUIRE(broker && w1 && mallory);
    bf_zap_t *zap = bf_zap_new(ctx, dir, err);
    REQUIRE(zap != NULL);
    broker_t b = {zmq_socket(ctx, ZMQ_ROUTER), {0}, 0};
    int zero = 0;
    zmq_setsockopt(b.router, ZMQ_LINGER, &zero, sizeof zero);
    REQUIRE(bf_security_server(broker, b.router, err) == BF_OK);
    REQUIRE(zmq_bind(b.router, "tcp://127.0.0.1:*") == 0);
    char ep[128];
    size_t eplen = sizeof ep;
    REQUIRE(zmq_getsockopt(b.router, ZMQ_LAST_ENDPOINT, ep, &eplen) == 0);

    /* a listed key: its messages arrive with its name and role */
    proto_link_t *link = proto_link_new(ctx, ep, w1, HB_MS, LIVE, err);
    REQUIRE(link != NULL);
    CHECK(proto_link_connect(link, err) == BF_OK);
    proto_msg_t m;
    proto_msg_init(&m, PROTO_READY);
    CHECK(proto_link_send(link, &m) == BF_OK);
    proto_origin_t origin = {0};
    bool got = false;
    for (int t = 0; t < 300 && !got; t++) {
        bf_zap_handle(zap);
        b.id_len = sizeof b.id;
        got = proto_recv_origin(b.router, b.id, &b.id_len, &m, ZMQ_DONTWAIT, &origin, err) == BF_OK;
        if (!got)
            usleep(10 * 1000);
    }
    CHECKF(got && m.type == PROTO_READY && origin.role == BF_ROLE_WORKER &&
               !strcmp(origin.key, "w1") && !strcmp(origin.addr, "127.0.0.1"),
           "role %s, key '%s', address '%s'", bf_role_name(origin.role), origin.key, origin.addr);
    proto_msg_clear(&m);
    proto_link_destroy(&link);

    /* a refused key: the tick says why, instead of a broker that looks down */
    link = proto_link_new(ctx, ep, mallory, HB_MS, LIVE, err);
    REQUIRE(link != NULL);
    CHECK(proto_link_connect(link, err) == BF_OK);
    log_capture();
    bool said = false;
    for (int t = 0; t < 300 && !said; t++) {
        bf_zap_handle(zap);
        usleep(10 * 1000);
        proto_link_tick(link, bf_mono_ms());
        fflush(stderr);
        char *text = NULL;
        size_t len = 0;
        said = bf_read_file(log_path, 1 << 20, &text, &len, NULL) == BF_OK &&
               strstr(text, "refused this CURVE key");
        free(text);
    }
    char *log = log_release();
    CHECKF(said && strstr(log, ep), "no handshake failure logged for %s", ep);
    free(log);
    proto_link_destroy(&link);

    zmq_close(b.router);
    bf_zap_destroy(&zap);
    bf_security_destroy(&broker);
    bf_security_destroy(&w1);
    bf_security_destroy(&mallory);
    zmq_ctx_term(ctx);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

int main(void)
{
    snprintf(log_path, sizeof log_path, "/tmp/bf-proto-link-test-%d.log", (int)getpid());
    test_sockets();
    test_link();
    test_bad_endpoint();
    test_curve();
    unlink(log_path);
    if (failures) {
        fprintf(stderr, "proto_link_test: %d checks failed\n", failures);
        return 1;
    }
    printf("proto_link_test: all checks passed\n");
    return 0;
}
