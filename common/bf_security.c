/*  common/bf_security.c - CURVE key files, a process's identity and the ZAP
    handler (RFC 27). libzmq does the cryptography and the handshake; what
    it leaves to the application is the key files and the decision who may
    connect, which is this file. czmq's zauth/zcert would do the same but
    bring a second object model and a thread; the handler here is ~150
    lines polled from the owner's own loop. */

#include "bf_security.h"
#include "bf_yaml.h"

#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#define KEY_FILE_MAX (16u << 10)
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_FRAMES   8

static const char *const role_names[BF_ROLE_COUNT] = {"none",   "worker", "collector",
                                                      "client", "admin",  "broker"};

const char *bf_role_name(bf_role_t role)
{
    return role >= 0 && role < BF_ROLE_COUNT ? role_names[role] : "?";
}

bool bf_role_parse(const char *name, bf_role_t *out)
{
    for (int r = BF_ROLE_WORKER; name && r < BF_ROLE_COUNT; r++)
        if (!strcmp(name, role_names[r])) {
            *out = (bf_role_t)r;
            return true;
        }
    return false;
}

/* ---- key files ------------------------------------------------------------------ */

static char *key_path(const char *dir, const char *name, bool secret)
{
    return bf_asprintf("%s/%s.%s", dir, name, secret ? "secret" : "public");
}

bf_err_t bf_keygen(const char *dir, const char *name, bf_role_t role, bool force, char *err)
{
    if (!bf_safe_name(name) || strchr(name, ' ') || name[0] == '.')
        return bf_fail(err, BF_EINVAL, "key name '%s': not a safe file name", name ? name : "");
    if (role <= BF_ROLE_NONE || role >= BF_ROLE_COUNT)
        return bf_fail(err, BF_EINVAL, "key '%s': no role", name);
    bool fresh = !bf_is_dir(dir);
    bf_err_t rc = bf_mkdir_p(dir, err);
    if (rc != BF_OK)
        return rc;
    if (fresh)
        (void)chmod(dir, 0700);
    char *pub = key_path(dir, name, false), *sec = key_path(dir, name, true);
    char *text_pub = NULL, *text_sec = NULL;
    char public_z85[41], secret_z85[41];
    struct stat st;
    if (!pub || !sec) {
        rc = bf_fail(err, BF_ENOMEM, "out of memory");
        goto done;
    }
    if (!force && (stat(pub, &st) == 0 || stat(sec, &st) == 0)) {
        rc = bf_fail(err, BF_EEXIST, "%s: a key named '%s' exists (--force replaces it)",
                     stat(pub, &st) == 0 ? pub : sec, name);
        goto done;
    }
    if (zmq_curve_keypair(public_z85, secret_z85) != 0) {
        rc = bf_fail(err, BF_EUNSUPP, "this libzmq cannot make CURVE keys: %s",
                     zmq_strerror(zmq_errno()));
        goto done;
    }
    /* Z85 has neither '"' nor '\\', so a double-quoted YAML scalar holds it. */
    text_pub = bf_asprintf("# Beamfleet CURVE public key (beamfleet keygen)\n"
                           "name: %s\nrole: %s\npublic: \"%s\"\n",
                           name, bf_role_name(role), public_z85);
    text_sec = bf_asprintf("# Beamfleet CURVE SECRET key (beamfleet keygen): keep it mode 0600\n"
                           "name: %s\nrole: %s\npublic: \"%s\"\nsecret: \"%s\"\n",
                           name, bf_role_name(role), public_z85, secret_z85);
    if (!text_pub || !text_sec) {
        rc = bf_fail(err, BF_ENOMEM, "out of memory");
        goto done;
    }
    /* The secret first: a public file is never there without its secret. */
    rc = bf_write_atomic_mode(sec, text_sec, strlen(text_sec), 0600, err);
    if (rc == BF_OK)
        rc = bf_write_atomic_mode(pub, text_pub, strlen(text_pub), 0644, err);
done:
    if (text_sec)
        memset(text_sec, 0, strlen(text_sec));
    memset(secret_z85, 0, sizeof secret_z85);
    free(text_pub);
    free(text_sec);
    free(pub);
    free(sec);
    return rc;
}

static bf_err_t z85_field(const bf_yaml_node_t *doc, const char *field, char out[41], char *err)
{
    const bf_yaml_node_t *n = bf_yaml_get(doc, field);
    if (!n)
        return bf_yaml_fail(doc, err, "missing field '%s'", field);
    uint8_t raw[32];
    if (n->kind != BF_YAML_SCALAR || strlen(n->value) != 40 || !zmq_z85_decode(raw, n->value))
        return bf_yaml_fail(n, err, "field '%s': expected a 40-character Z85 CURVE key", field);
    memcpy(out, n->value, 41);
    return BF_OK;
}

bf_err_t bf_key_load(const char *dir, const char *name, bool secret, bf_key_t *key, char *err)
{
    memset(key, 0, sizeof *key);
    char *path = key_path(dir, name, secret), *text = NULL;
    bf_yaml_node_t *doc = NULL;
    bf_err_t rc = BF_OK;
    if (!path)
        return bf_fail(err, BF_ENOMEM, "out of memory");
    struct stat st;
    if (stat(path, &st) != 0) {
        rc = bf_fail(err, errno == ENOENT ? BF_ENOENT : BF_EIO, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (secret && (st.st_mode & 077)) {
        rc = bf_fail(err, BF_EPERM, "%s: a secret key readable by others (mode %04o); chmod 600 it",
                     path, (unsigned)(st.st_mode & 07777));
        goto done;
    }
    size_t len = 0;
    rc = bf_read_file(path, KEY_FILE_MAX, &text, &len, err);
    if (rc == BF_OK)
        rc = bf_yaml_parse(text, len, path, &doc, err);
    if (rc != BF_OK)
        goto done;
    static const char *const fields_pub[] = {"name", "role", "public", NULL};
    static const char *const fields_sec[] = {"name", "role", "public", "secret", NULL};
    rc = bf_yaml_check_map(doc, "key", secret ? fields_sec : fields_pub, err);
    if (rc != BF_OK)
        goto done;
    const bf_yaml_node_t *n = bf_yaml_get(doc, "name");
    if (!n || n->kind != BF_YAML_SCALAR || strcmp(n->value, name) != 0) {
        rc = bf_yaml_fail(n ? n : doc, err, "field 'name': expected '%s' (the file's name)", name);
        goto done;
    }
    bf_strlcpy(key->name, name, sizeof key->name);
    n = bf_yaml_get(doc, "role");
    if (!n || n->kind != BF_YAML_SCALAR || !bf_role_parse(n->value, &key->role)) {
        rc = bf_yaml_fail(n ? n : doc, err,
                          "field 'role': expected worker, collector, client, admin or broker");
        goto done;
    }
    rc = z85_field(doc, "public", key->public_z85, err);
    if (rc == BF_OK && secret)
        rc = z85_field(doc, "secret", key->secret_z85, err);
    if (rc == BF_OK && secret) {
        char derived[41];
        if (zmq_curve_public(derived, key->secret_z85) != 0 ||
            strcmp(derived, key->public_z85) != 0)
            rc = bf_fail(err, BF_EINVAL, "%s: 'public' is not the public key of 'secret'", path);
    }
done:
    if (rc != BF_OK)
        memset(key, 0, sizeof *key);
    if (text)
        memset(text, 0, strlen(text));
    free(text);
    free(path);
    bf_yaml_destroy(&doc);
    return rc;
}

/* ---- identity --------------------------------------------------------------------- */

struct bf_security {
    char *dir;
    bf_key_t self;
    bf_key_t broker;
};

bf_security_t *bf_security_new(const char *keys_dir, const char *identity, char *err)
{
    bf_security_t *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = bf_strdup(keys_dir))) {
        bf_fail(err, BF_ENOMEM, "out of memory");
        goto fail;
    }
    if (bf_key_load(keys_dir, identity, true, &s->self, err) != BF_OK ||
        bf_key_load(keys_dir, "broker", false, &s->broker, err) != BF_OK)
        goto fail;
    if (s->broker.role != BF_ROLE_BROKER) {
        bf_fail(err, BF_EINVAL, "%s/broker.public: role is %s, expected broker", keys_dir,
                bf_role_name(s->broker.role));
        goto fail;
    }
    if ((s->self.role == BF_ROLE_BROKER) != !strcmp(identity, "broker")) {
        bf_fail(err, BF_EINVAL, "%s/%s.secret: role %s: only the key named broker has role broker",
                keys_dir, identity, bf_role_name(s->self.role));
        goto fail;
    }
    return s;
fail:
    bf_security_destroy(&s);
    return NULL;
}

void bf_security_destroy(bf_security_t **self)
{
    if (!self || !*self)
        return;
    memset(&(*self)->self, 0, sizeof(*self)->self);
    free((*self)->dir);
    free(*self);
    *self = NULL;
}

const char *bf_security_identity(const bf_security_t *self)
{
    return self->self.name;
}

bf_role_t bf_security_role(const bf_security_t *self)
{
    return self->self.role;
}

const char *bf_security_dir(const bf_security_t *self)
{
    return self->dir;
}

static bf_err_t sockopt_fail(char *err)
{
    return bf_fail(err, BF_EIO, "CURVE socket options: %s", zmq_strerror(zmq_errno()));
}

static bf_err_t client_with(const bf_security_t *self, const char *server_z85, void *socket,
                            char *err)
{
    if (zmq_setsockopt(socket, ZMQ_CURVE_SERVERKEY, server_z85, 40) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_PUBLICKEY, self->self.public_z85, 40) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, self->self.secret_z85, 40) != 0)
        return sockopt_fail(err);
    return BF_OK;
}

bf_err_t bf_security_client(const bf_security_t *self, void *socket, char *err)
{
    return client_with(self, self->broker.public_z85, socket, err);
}

bf_err_t bf_security_client_of(const bf_security_t *self, const char *server_name, void *socket,
                               char *err)
{
    bf_key_t server;
    bf_err_t rc = bf_key_load(self->dir, server_name, false, &server, err);
    return rc == BF_OK ? client_with(self, server.public_z85, socket, err) : rc;
}

bf_err_t bf_security_server(const bf_security_t *self, void *socket, char *err)
{
    int one = 1;
    if (zmq_setsockopt(socket, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, self->self.secret_z85, 40) != 0 ||
        zmq_setsockopt(socket, ZMQ_ZAP_DOMAIN, "beamfleet", 9) != 0)
        return sockopt_fail(err);
    return BF_OK;
}

bf_role_t bf_security_msg_role(void *zmq_msg, char *name, size_t name_len)
{
    if (name_len)
        name[0] = '\0';
    const char *role = zmq_msg_gets(zmq_msg, "Role");
    bf_role_t r = BF_ROLE_NONE;
    if (!role || !bf_role_parse(role, &r))
        return BF_ROLE_NONE;
    const char *user = zmq_msg_gets(zmq_msg, "User-Id");
    if (name_len && user)
        bf_strlcpy(name, user, name_len);
    return r;
}

/* ---- ZAP ---------------------------------------------------------------------------- */

typedef struct {
    uint8_t key[32];
    char name[256];
    bf_role_t role;
} allowed_t;

struct bf_zap {
    void *rep;
    char *dir;
    struct timespec mtime; /* of dir when the list was read */
    allowed_t *list;
    size_t count;
    uint64_t admitted, refused;
};

/* Reads every DIR/ *.public into the allow list. A bad file is logged and
   left out: one broken key must not lock every other peer out. */
static bf_err_t load_allowed(bf_zap_t *z, char *err)
{
    struct stat st;
    if (stat(z->dir, &st) != 0)
        return bf_fail(err, BF_ENOENT, "security.keys %s: %s", z->dir, strerror(errno));
    DIR *d = opendir(z->dir);
    if (!d)
        return bf_fail(err, BF_EIO, "security.keys %s: %s", z->dir, strerror(errno));
    allowed_t *list = NULL;
    size_t count = 0, cap = 0;
    bf_err_t rc = BF_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n <= 7 || strcmp(e->d_name + n - 7, ".public") != 0 || e->d_name[0] == '.')
            continue;
        char name[256];
        bf_strlcpy(name, e->d_name, n - 7 + 1);
        bf_key_t key;
        char why[BF_ERRLEN];
        if (bf_key_load(z->dir, name, false, &key, why) != BF_OK) {
            bf_warn("security: ignoring a key file: %s", why);
            continue;
        }
        if (key.role == BF_ROLE_BROKER)
            continue; /* the broker's own key is not a peer */
        if (!bf_grow(&list, &cap, count + 1, sizeof *list, 16)) {
            rc = bf_fail(err, BF_ENOMEM, "out of memory");
            break;
        }
        allowed_t *a = &list[count++];
        zmq_z85_decode(a->key, key.public_z85);
        bf_strlcpy(a->name, key.name, sizeof a->name);
        a->role = key.role;
    }
    closedir(d);
    if (rc != BF_OK) {
        free(list);
        return rc;
    }
    free(z->list);
    z->list = list;
    z->count = count;
    z->mtime = st.st_mtim;
    bf_info("security: %zu keys admitted from %s", count, z->dir);
    return BF_OK;
}

bf_zap_t *bf_zap_new(void *zmq_ctx, const char *keys_dir, char *err)
{
    bf_zap_t *z = calloc(1, sizeof *z);
    if (!z || !(z->dir = bf_strdup(keys_dir))) {
        bf_fail(err, BF_ENOMEM, "out of memory");
        goto fail;
    }
    if (load_allowed(z, err) != BF_OK)
        goto fail;
    int zero = 0;
    z->rep = zmq_socket(zmq_ctx, ZMQ_REP);
    if (!z->rep || zmq_setsockopt(z->rep, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_bind(z->rep, ZAP_ENDPOINT) != 0) {
        bf_fail(err, BF_EIO, "ZAP handler: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    return z;
fail:
    bf_zap_destroy(&z);
    return NULL;
}

void bf_zap_destroy(bf_zap_t **self)
{
    if (!self || !*self)
        return;
    bf_zap_t *z = *self;
    if (z->rep)
        zmq_close(z->rep);
    free(z->list);
    free(z->dir);
    free(z);
    *self = NULL;
}

void *bf_zap_socket(bf_zap_t *self)
{
    return self->rep;
}

void bf_zap_counts(const bf_zap_t *self, uint64_t *admitted, uint64_t *refused)
{
    *admitted = self->admitted;
    *refused = self->refused;
}

static void reload_if_changed(bf_zap_t *z)
{
    struct stat st;
    if (stat(z->dir, &st) != 0 ||
        (st.st_mtim.tv_sec == z->mtime.tv_sec && st.st_mtim.tv_nsec == z->mtime.tv_nsec))
        return;
    char why[BF_ERRLEN];
    if (load_allowed(z, why) != BF_OK)
        bf_warn("security: keeping the previous key list: %s", why);
}

/* One request (its frames already read) answered: RFC 27 reply frames. */
static void zap_reply(bf_zap_t *z, zmq_msg_t *req, size_t nframes)
{
    const allowed_t *who = NULL;
    const char *status = "400", *text = "unknown key";
    char peer[64] = "?";
    if (nframes >= 7 && zmq_msg_size(&req[0]) == 3 && !memcmp(zmq_msg_data(&req[0]), "1.0", 3) &&
        zmq_msg_size(&req[5]) == 5 && !memcmp(zmq_msg_data(&req[5]), "CURVE", 5) &&
        zmq_msg_size(&req[6]) == 32) {
        size_t alen =
            zmq_msg_size(&req[3]) < sizeof peer - 1 ? zmq_msg_size(&req[3]) : sizeof peer - 1;
        memcpy(peer, zmq_msg_data(&req[3]), alen);
        peer[alen] = '\0';
        reload_if_changed(z);
        for (size_t i = 0; i < z->count && !who; i++)
            if (!memcmp(z->list[i].key, zmq_msg_data(&req[6]), 32))
                who = &z->list[i];
    } else {
        text = "malformed ZAP request or not CURVE";
    }
    if (who) {
        status = "200";
        text = "OK";
        z->admitted++;
        bf_debug("security: admitted %s (%s) from %s", who->name, bf_role_name(who->role), peer);
    } else {
        z->refused++;
        char key[41] = "";
        if (nframes >= 7 && zmq_msg_size(&req[6]) == 32)
            zmq_z85_encode(key, zmq_msg_data(&req[6]), 32);
        if (z->refused <= 10 || z->refused % 1000 == 0)
            bf_warn("security: refused a connection from %s (%s, key %s; %llu refused so far)",
                    peer, text, key[0] ? key : "-", (unsigned long long)z->refused);
    }
    /* Metadata: one ZMTP property, Role = the key's role (1-byte name
       length, name, 4-byte big-endian value length, value). */
    uint8_t meta[64];
    size_t mlen = 0;
    if (who) {
        const char *role = bf_role_name(who->role);
        uint32_t vlen = (uint32_t)strlen(role);
        meta[mlen++] = 4;
        memcpy(meta + mlen, "Role", 4);
        mlen += 4;
        meta[mlen++] = (uint8_t)(vlen >> 24);
        meta[mlen++] = (uint8_t)(vlen >> 16);
        meta[mlen++] = (uint8_t)(vlen >> 8);
        meta[mlen++] = (uint8_t)vlen;
        memcpy(meta + mlen, role, vlen);
        mlen += vlen;
    }
    const char *user = who ? who->name : "";
    zmq_send(z->rep, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(z->rep, nframes >= 2 ? zmq_msg_data(&req[1]) : "",
             nframes >= 2 ? zmq_msg_size(&req[1]) : 0, ZMQ_SNDMORE);
    zmq_send(z->rep, status, 3, ZMQ_SNDMORE);
    zmq_send(z->rep, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(z->rep, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(z->rep, meta, mlen, 0);
}

void bf_zap_handle(bf_zap_t *self)
{
    for (;;) {
        zmq_msg_t req[ZAP_FRAMES];
        size_t n = 0;
        zmq_msg_init(&req[0]);
        if (zmq_msg_recv(&req[0], self->rep, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&req[0]);
            return;
        }
        n = 1;
        bool more = zmq_msg_more(&req[0]);
        /* The rest of the request is already here; frames beyond ZAP_FRAMES
           are read and dropped so the REP socket stays in step. */
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, self->rep, 0) < 0) {
                zmq_msg_close(&part);
                break;
            }
            more = zmq_msg_more(&part);
            if (n < ZAP_FRAMES) {
                zmq_msg_init(&req[n]);
                zmq_msg_move(&req[n++], &part);
            }
            zmq_msg_close(&part);
        }
        zap_reply(self, req, n);
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&req[i]);
    }
}

/* ---- handshake failures ------------------------------------------------------------ */

void *bf_handshake_monitor(void *zmq_ctx, void *socket, char *err)
{
    char ep[64];
    static unsigned counter;
    snprintf(ep, sizeof ep, "inproc://bf-handshake-%p-%u", socket,
             __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    int zero = 0;
    if (zmq_socket_monitor(socket, ep,
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
        bf_fail(err, BF_EIO, "zmq_socket_monitor: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    void *pair = zmq_socket(zmq_ctx, ZMQ_PAIR);
    if (!pair || zmq_setsockopt(pair, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_connect(pair, ep) != 0) {
        bf_fail(err, BF_EIO, "monitor: %s", zmq_strerror(zmq_errno()));
        if (pair)
            zmq_close(pair);
        return NULL;
    }
    return pair;
}

void bf_handshake_monitor_close(void *socket, void **monitor)
{
    if (!monitor || !*monitor)
        return;
    if (socket)
        zmq_socket_monitor(socket, NULL, 0); /* no more events are queued for it */
    zmq_close(*monitor);
    *monitor = NULL;
}

bool bf_handshake_failed(void *monitor, char *why, size_t why_len)
{
    bool failed = false;
    for (;;) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            return failed;
        }
        uint16_t event = 0;
        uint32_t value = 0;
        if (zmq_msg_size(&part) == 6) {
            memcpy(&event, zmq_msg_data(&part), 2);
            memcpy(&value, (uint8_t *)zmq_msg_data(&part) + 2, 4);
        }
        bool more = zmq_msg_more(&part);
        while (more && zmq_msg_recv(&part, monitor, 0) >= 0) /* the endpoint frame */
            more = zmq_msg_more(&part);
        zmq_msg_close(&part);
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
            snprintf(why, why_len,
                     "the server refused this CURVE key (ZAP status %u): is its "
                     ".public file in the server's keys directory?",
                     (unsigned)value);
            failed = true;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
                   value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
            snprintf(why, why_len,
                     "handshake failed (mechanism mismatch): one side uses CURVE and the other "
                     "does not (security: in the fleet file)");
            failed = true;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
                   (value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC ||
                    value == ZMQ_PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE)) {
            snprintf(why, why_len,
                     "handshake failed (CURVE): the server's key is not the one in the keys "
                     "directory (broker.public?)");
            failed = true;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
            /* value is the errno: the other side hung up mid-handshake, as
               a CURVE server does with a plaintext client */
            snprintf(why, why_len,
                     "handshake failed (%s): one side uses CURVE and the other does not "
                     "(security: in the fleet file), or nothing there is a Beamfleet peer",
                     strerror((int)value));
            failed = true;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
            /* Anything else is a peer that does not speak ZMTP 3 (an HTTP or
               SSH server, a port of some other program): say so, instead of
               blaming the keys. */
            snprintf(why, why_len,
                     "handshake failed (ZMTP protocol error 0x%x): nothing there answered as a "
                     "Beamfleet peer; is this the right host and port?",
                     (unsigned)value);
            failed = true;
        }
    }
}

/* ---- what answers at an endpoint ------------------------------------------ */

/* Hand-written because libzmq reports a peer that hangs up mid-handshake
   only as an errno, the same for a CURVE server meeting a plaintext client
   as for an SSH server: reading the 64-byte ZMTP 3 greeting ourselves
   (RFC 23: signature 0xFF, 8 bytes, 0x7F; version; a 20-byte mechanism
   name) tells them apart in one round trip. */
#define GREETING_LEN 64

static int probe_connect(const char *endpoint, char *why, size_t why_len)
{
    int fd = -1;
    if (!strncmp(endpoint, "ipc://", 6)) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(endpoint + 6) >= sizeof sa.sun_path)
            return -1;
        strcpy(sa.sun_path, endpoint + 6);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            snprintf(why, why_len, "nothing listens at %s (%s)", endpoint, strerror(errno));
            close(fd);
            return -2;
        }
        return fd;
    }
    if (strncmp(endpoint, "tcp://", 6) != 0)
        return -1;
    char host[256];
    bf_strlcpy(host, endpoint + 6, sizeof host);
    char *colon = strrchr(host, ':');
    if (!colon)
        return -1;
    *colon = '\0';
    const char *port = colon + 1, *h = host;
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') { /* [::1] */
        host[hl - 1] = '\0';
        h = host + 1;
    }
    if (!strcmp(h, "*"))
        h = "127.0.0.1";
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(h, port, &hints, &res) != 0 || !res)
        return -1;
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 2};
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        snprintf(why, why_len, "nothing listens at %s (%s)", endpoint, strerror(errno));
        close(fd);
        fd = -2;
    }
    freeaddrinfo(res);
    return fd;
}

bool bf_endpoint_probe(const char *endpoint, bool curve, int timeout_ms, char *why, size_t why_len)
{
    int fd = probe_connect(endpoint, why, why_len);
    if (fd == -2)
        return true;
    if (fd < 0)
        return false;
    /* Our signature and major version only: a ZMTP 3 peer waits for them
       before it sends its mechanism, and hangs up at once on a mechanism
       that differs from its own, before we could read it. */
    const uint8_t mine[11] = {0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3};
    uint8_t got[GREETING_LEN];
    size_t n = 0;
    bool said = false;
    if (send(fd, mine, sizeof mine, MSG_NOSIGNAL) == (ssize_t)sizeof mine) {
        int64_t deadline = bf_mono_ms() + timeout_ms;
        while (n < sizeof got) {
            int64_t left = deadline - bf_mono_ms();
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (left <= 0 || poll(&p, 1, (int)left) <= 0)
                break;
            ssize_t r = recv(fd, got + n, sizeof got - n, 0);
            if (r <= 0)
                break;
            n += (size_t)r;
            if (n >= 1 && got[0] != 0xff)
                break; /* not ZMTP: the first bytes say enough */
        }
    }
    close(fd);
    if (n == 0) {
        snprintf(why, why_len,
                 "nothing at %s answered as a Beamfleet peer (it sent no ZeroMQ greeting); is "
                 "this the right host and port?",
                 endpoint);
        said = true;
    } else if (got[0] != 0xff || (n >= 10 && got[9] != 0x7f)) {
        char shown[32];
        size_t k = 0;
        for (size_t i = 0; i < n && k < 24; i++) /* printable ASCII only: untrusted */
            shown[k++] = got[i] >= 0x20 && got[i] < 0x7f && got[i] != '"' ? (char)got[i] : '.';
        shown[k] = '\0';
        snprintf(why, why_len,
                 "nothing at %s answered as a Beamfleet peer: it does not speak ZeroMQ (it "
                 "greeted with \"%s\"); is this the right host and port?",
                 endpoint, shown);
        said = true;
    } else if (n >= 32) {
        char mech[21];
        memcpy(mech, got + 12, 20);
        mech[20] = '\0';
        bool peer_curve = !strcmp(mech, "CURVE");
        if (peer_curve && !curve) {
            snprintf(why, why_len,
                     "handshake failed: the server at %s uses CURVE and this process has no keys "
                     "(security: in the fleet file)",
                     endpoint);
            said = true;
        } else if (!peer_curve && curve) {
            snprintf(why, why_len,
                     "handshake failed: the server at %s is plaintext and this process uses CURVE "
                     "(security: in the fleet file)",
                     endpoint);
            said = true;
        }
    }
    return said;
}
