/*  common/bf_security.h - CURVE keys with roles, and the ZAP handler that
    admits exactly the listed keys (DESIGN sections 2 and 5).

    A key pair is two small YAML files written by `beamfleet keygen`:
        DIR/NAME.public   name, role, public       (mode 0644)
        DIR/NAME.secret   name, role, public, secret (mode 0600)
    with the keys in Z85 (40 characters). The key directory is the fleet's
    trust list: every process loads its own DIR/IDENTITY.secret and trusts
    DIR/broker.public as the server key; the broker admits a connecting
    peer only when its public key is one of DIR/ *.public, and tags each
    connection with that file's name and role (ZAP User-Id and the "Role"
    metadata property), which the broker checks on every message: a worker
    key cannot submit or cancel.

    Role `broker` belongs to the broker's own key and is never admitted as a
    peer. Adding or removing a *.public file takes effect for the next
    connection (the directory is re-read when its modification time
    changes); a connection already admitted keeps its role until it drops. */

#ifndef BF_SECURITY_H_INCLUDED
#define BF_SECURITY_H_INCLUDED

#include "bf.h"

typedef enum {
    BF_ROLE_NONE = 0, /* security off: the connection may do anything */
    BF_ROLE_WORKER,
    BF_ROLE_COLLECTOR,
    BF_ROLE_CLIENT,
    BF_ROLE_ADMIN,
    BF_ROLE_BROKER,
    BF_ROLE_COUNT
} bf_role_t;

/* "worker", ... ("none" for BF_ROLE_NONE). */
const char *bf_role_name(bf_role_t role);
/* Parses a role name; false when it is not one (none is not accepted). */
bool bf_role_parse(const char *name, bf_role_t *out);

/* Writes DIR/NAME.public and DIR/NAME.secret (mode 0600) for a fresh CURVE
   key pair with role; creates DIR (mode 0700 when it is new). NAME must be a
   safe file name. BF_EEXIST when either file exists and !force. */
bf_err_t bf_keygen(const char *dir, const char *name, bf_role_t role, bool force,
                   char *err) BF_MUST_CHECK;

/* One key file read back. Keys are Z85, 40 characters + NUL. */
typedef struct {
    char name[256];
    bf_role_t role;
    char public_z85[41];
    char secret_z85[41]; /* "" for a .public file */
} bf_key_t;

/* Reads DIR/NAME.public (secret false) or DIR/NAME.secret (secret true).
   A secret file readable by group or others is refused. Errors name the
   file, and the line and column of a bad field. */
bf_err_t bf_key_load(const char *dir, const char *name, bool secret, bf_key_t *key,
                     char *err) BF_MUST_CHECK;

/* ---- a process's own identity ------------------------------------------ */
typedef struct bf_security bf_security_t;

/* Loads DIR/IDENTITY.secret and DIR/broker.public. NULL with err set on
   failure (a missing or bad file, a role that does not fit: the broker
   must be role broker, no one else may be). */
bf_security_t *bf_security_new(const char *keys_dir, const char *identity, char *err);
/* NULL-safe, idempotent, nulls *self. */
void bf_security_destroy(bf_security_t **self);
const char *bf_security_identity(const bf_security_t *self);
bf_role_t bf_security_role(const bf_security_t *self);
const char *bf_security_dir(const bf_security_t *self);

/* Makes socket a CURVE client of the broker (before zmq_connect). */
bf_err_t bf_security_client(const bf_security_t *self, void *socket, char *err) BF_MUST_CHECK;
/* Makes socket a CURVE server with this identity's key (before zmq_bind),
   authenticated by the ZAP handler of its context. */
bf_err_t bf_security_server(const bf_security_t *self, void *socket, char *err) BF_MUST_CHECK;
/* Makes socket a CURVE client of the server whose public key file is
   DIR/server_name.public (e.g. the collector's PUB stream). */
bf_err_t bf_security_client_of(const bf_security_t *self, const char *server_name, void *socket,
                               char *err) BF_MUST_CHECK;

/* ---- the ZAP handler ---------------------------------------------------- */
typedef struct bf_zap bf_zap_t;

/* Binds the ZAP endpoint (inproc://zeromq.zap.01) in zmq_ctx and loads the
   allow list from keys_dir. Call before binding the CURVE server socket.
   The owner polls bf_zap_socket() for ZMQ_POLLIN and calls bf_zap_handle(). */
bf_zap_t *bf_zap_new(void *zmq_ctx, const char *keys_dir, char *err);
void bf_zap_destroy(bf_zap_t **self);
void *bf_zap_socket(bf_zap_t *self);
/* Answers every pending ZAP request without blocking: 200 with User-Id =
   the key's name and metadata Role = its role for a listed key, 400 for
   anything else (logged with the peer's address). */
void bf_zap_handle(bf_zap_t *self);
/* Requests answered so far: admitted, refused. */
void bf_zap_counts(const bf_zap_t *self, uint64_t *admitted, uint64_t *refused);

/* ---- handshake failures --------------------------------------------------- */
/* A monitor of socket's handshake failures (a refused key, a plaintext peer
   at a CURVE server or the reverse), so that a client can say why instead
   of waiting for a timeout. Returns a PAIR socket to poll, or NULL with err
   set. Call before zmq_connect; close the monitor before the socket. */
void *bf_handshake_monitor(void *zmq_ctx, void *socket, char *err);
/* Reads the pending events of a monitor without blocking; true when a
   handshake failed, with why ("the broker refused this key", ...). */
bool bf_handshake_failed(void *monitor, char *why, size_t why_len);
/* Stops monitoring socket and closes *monitor (NULL-safe; *monitor becomes
   NULL). Call it before closing socket: a monitor closed while libzmq still
   has events for it can leave zmq_ctx_term blocked (libzmq issues 1279,
   2330), which a CLI client that gave up on a refused handshake met. */
void bf_handshake_monitor_close(void *socket, void **monitor);
/* Looks at what listens at endpoint (tcp:// or ipc://) by reading its ZMTP
   greeting, within timeout_ms: true with why set when that explains a failed
   handshake or a silent peer ("nothing listens at ...", "it does not speak
   ZeroMQ", "the server uses CURVE and this process has no keys", ...);
   false when it tells nothing new. curve: whether this process uses CURVE. */
bool bf_endpoint_probe(const char *endpoint, bool curve, int timeout_ms, char *why, size_t why_len);

/* The name and role the ZAP handler gave the connection a received message
   came from (zmq_msg_t *); BF_ROLE_NONE and "" without CURVE. */
bf_role_t bf_security_msg_role(void *zmq_msg, char *name, size_t name_len);

#endif
