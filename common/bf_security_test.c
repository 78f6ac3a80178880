/*  common/bf_security_test.c - key files, identities and the ZAP handler over
    real CURVE sockets in one process. */

#include "bf_check.h"
#include "bf_security.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

static char dir[256];

static void write_text(const char *name, const char *text, mode_t mode)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static void test_keygen_and_load(void)
{
    char err[BF_ERRLEN];
    CHECK(bf_keygen(dir, "broker", BF_ROLE_BROKER, false, err) == BF_OK);
    CHECK(bf_keygen(dir, "w1", BF_ROLE_WORKER, false, err) == BF_OK);
    CHECK(bf_keygen(dir, "alice", BF_ROLE_CLIENT, false, err) == BF_OK);
    CHECK(bf_keygen(dir, "w1", BF_ROLE_WORKER, false, err) == BF_EEXIST);
    CHECKF(strstr(err, "w1.public") && strstr(err, "--force"), "%s", err);
    CHECK(bf_keygen(dir, "../x", BF_ROLE_WORKER, false, err) == BF_EINVAL);
    CHECK(bf_keygen(dir, "x", BF_ROLE_NONE, false, err) == BF_EINVAL);

    struct stat st;
    char path[512];
    snprintf(path, sizeof path, "%s/w1.secret", dir);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);

    bf_key_t pub, sec;
    CHECK(bf_key_load(dir, "w1", false, &pub, err) == BF_OK);
    CHECK(bf_key_load(dir, "w1", true, &sec, err) == BF_OK);
    CHECK(pub.role == BF_ROLE_WORKER && !strcmp(pub.name, "w1") && !pub.secret_z85[0]);
    CHECK(!strcmp(pub.public_z85, sec.public_z85) && strlen(sec.secret_z85) == 40);

    /* --force makes a new pair */
    CHECK(bf_keygen(dir, "w1", BF_ROLE_WORKER, true, err) == BF_OK);
    bf_key_t again;
    CHECK(bf_key_load(dir, "w1", false, &again, err) == BF_OK);
    CHECK(strcmp(again.public_z85, pub.public_z85) != 0);

    bf_role_t r;
    CHECK(bf_role_parse("admin", &r) && r == BF_ROLE_ADMIN);
    CHECK(!bf_role_parse("none", &r) && !bf_role_parse("root", &r));
    CHECK(!strcmp(bf_role_name(BF_ROLE_COLLECTOR), "collector"));
}

static void test_bad_key_files(void)
{
    char err[BF_ERRLEN];
    bf_key_t k;
    write_text("bad1.public", "name: bad1\nrole: worker\npublic: \"tooshort\"\n", 0644);
    CHECK(bf_key_load(dir, "bad1", false, &k, err) == BF_EINVAL);
    CHECKF(strstr(err, "bad1.public:3:9:") && strstr(err, "40-character Z85"), "%s", err);

    write_text("bad2.public",
               "name: other\nrole: worker\npublic: \"0000000000000000000000000000000000000000\"\n",
               0644);
    CHECK(bf_key_load(dir, "bad2", false, &k, err) == BF_EINVAL);
    CHECKF(strstr(err, "bad2.public:1:7:") && strstr(err, "expected 'bad2'"), "%s", err);

    write_text("bad3.public",
               "name: bad3\nrole: king\npublic: \"0000000000000000000000000000000000000000\"\n",
               0644);
    CHECK(bf_key_load(dir, "bad3", false, &k, err) == BF_EINVAL);
    CHECKF(strstr(err, "bad3.public:2:7:") && strstr(err, "'role'"), "%s", err);

    write_text("bad4.public",
               "name: bad4\nrole: worker\npublic: "
               "\"0000000000000000000000000000000000000000\"\nextra: 1\n",
               0644);
    CHECK(bf_key_load(dir, "bad4", false, &k, err) == BF_EINVAL);
    CHECKF(strstr(err, "bad4.public:4:1:") && strstr(err, "unknown key 'extra'"), "%s", err);

    /* a secret readable by others */
    char pub[41], sec[41], text[256];
    REQUIRE(zmq_curve_keypair(pub, sec) == 0);
    snprintf(text, sizeof text, "name: open\nrole: worker\npublic: \"%s\"\nsecret: \"%s\"\n", pub,
             sec);
    write_text("open.secret", text, 0644);
    CHECK(bf_key_load(dir, "open", true, &k, err) == BF_EPERM);
    CHECKF(strstr(err, "open.secret") && strstr(err, "chmod 600"), "%s", err);

    /* a public key that does not belong to the secret */
    char pub2[41], sec2[41];
    REQUIRE(zmq_curve_keypair(pub2, sec2) == 0);
    snprintf(text, sizeof text, "name: mixed\nrole: worker\npublic: \"%s\"\nsecret: \"%s\"\n", pub2,
             sec);
    write_text("mixed.secret", text, 0600);
    CHECK(bf_key_load(dir, "mixed", true, &k, err) == BF_EINVAL);
    CHECKF(strstr(err, "is not the public key"), "%s", err);

    CHECK(bf_key_load(dir, "missing", false, &k, err) == BF_ENOENT);

    /* identities: the broker must be the key named broker, nobody else */
    bf_security_t *s = bf_security_new(dir, "w1", err);
    CHECK(s && bf_security_role(s) == BF_ROLE_WORKER && !strcmp(bf_security_identity(s), "w1"));
    bf_security_destroy(&s);
    bf_security_destroy(&s); /* idempotent */
    CHECK(bf_security_new(dir, "nobody", err) == NULL && strstr(err, "nobody.secret"));
}

/* A CURVE ROUTER with the ZAP handler; clients with listed, unlisted and no
   keys; the role each message arrives with. */
static void test_zap(void)
{
    char err[BF_ERRLEN];
    void *ctx = zmq_ctx_new();
    bf_security_t *broker = bf_security_new(dir, "broker", err);
    REQUIRE(broker != NULL);
    bf_zap_t *zap = bf_zap_new(ctx, dir, err);
    REQUIRE(zap != NULL);
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero);
    REQUIRE(bf_security_server(broker, router, err) == BF_OK);
    REQUIRE(zmq_bind(router, "tcp://127.0.0.1:*") == 0);
    char ep[128];
    size_t eplen = sizeof ep;
    zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, ep, &eplen);

    /* a new key added after the handler started is admitted too */
    REQUIRE(bf_keygen(dir, "late", BF_ROLE_ADMIN, false, err) == BF_OK);
    const char *who[] = {"w1", "alice", "late"};
    const bf_role_t expect[] = {BF_ROLE_WORKER, BF_ROLE_CLIENT, BF_ROLE_ADMIN};
    for (int i = 0; i < 3; i++) {
        bf_security_t *me = bf_security_new(dir, who[i], err);
        REQUIRE(me != NULL);
        void *d = zmq_socket(ctx, ZMQ_DEALER);
        zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
        REQUIRE(bf_security_client(me, d, err) == BF_OK);
        REQUIRE(zmq_connect(d, ep) == 0);
        zmq_send(d, "hello", 5, 0);
        bool got = false;
        for (int t = 0; t < 200 && !got; t++) {
            bf_zap_handle(zap);
            zmq_msg_t id, body;
            zmq_msg_init(&id);
            zmq_msg_init(&body);
            if (zmq_msg_recv(&id, router, ZMQ_DONTWAIT) >= 0) {
                REQUIRE(zmq_msg_recv(&body, router, 0) == 5);
                char name[64];
                bf_role_t r = bf_security_msg_role(&body, name, sizeof name);
                CHECKF(r == expect[i] && !strcmp(name, who[i]), "%s: role %s, name %s", who[i],
                       bf_role_name(r), name);
                got = true;
            } else {
                usleep(10 * 1000);
            }
            zmq_msg_close(&id);
            zmq_msg_close(&body);
        }
        CHECKF(got, "%s: no message", who[i]);
        zmq_close(d);
        bf_security_destroy(&me);
    }

    /* An unlisted key: refused at the handshake, seen by its monitor. */
    char rogue_dir[300];
    snprintf(rogue_dir, sizeof rogue_dir, "%s/rogue", dir);
    REQUIRE(bf_keygen(rogue_dir, "mallory", BF_ROLE_ADMIN, false, err) == BF_OK);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "cp %s/broker.public %s/", dir, rogue_dir);
    REQUIRE(system(cmd) == 0);
    bf_security_t *rogue = bf_security_new(rogue_dir, "mallory", err);
    REQUIRE(rogue != NULL);
    void *d = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    REQUIRE(bf_security_client(rogue, d, err) == BF_OK);
    void *mon = bf_handshake_monitor(ctx, d, err);
    REQUIRE(mon != NULL);
    REQUIRE(zmq_connect(d, ep) == 0);
    zmq_send(d, "hello", 5, 0);
    char why[BF_ERRLEN] = "";
    bool failed = false;
    for (int t = 0; t < 200 && !failed; t++) {
        bf_zap_handle(zap);
        failed = bf_handshake_failed(mon, why, sizeof why);
        zmq_msg_t id;
        zmq_msg_init(&id);
        CHECK(zmq_msg_recv(&id, router, ZMQ_DONTWAIT) < 0); /* nothing gets through */
        zmq_msg_close(&id);
        usleep(10 * 1000);
    }
    CHECKF(failed && strstr(why, "refused this CURVE key"), "%s", why);
    uint64_t admitted, refused;
    bf_zap_counts(zap, &admitted, &refused);
    CHECKF(admitted == 3 && refused >= 1, "admitted %llu refused %llu",
           (unsigned long long)admitted, (unsigned long long)refused);
    zmq_close(mon);
    zmq_close(d);
    bf_security_destroy(&rogue);

    /* A plaintext peer: the mechanism does not match. */
    d = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    mon = bf_handshake_monitor(ctx, d, err);
    REQUIRE(mon != NULL && zmq_connect(d, ep) == 0);
    zmq_send(d, "hello", 5, 0);
    failed = false;
    for (int t = 0; t < 200 && !failed; t++) {
        bf_zap_handle(zap);
        failed = bf_handshake_failed(mon, why, sizeof why);
        usleep(10 * 1000);
    }
    CHECKF(failed && strstr(why, "mechanism mismatch"), "%s", why);
    zmq_close(mon);
    zmq_close(d);

    zmq_close(router);
    bf_zap_destroy(&zap);
    bf_zap_destroy(&zap);
    bf_security_destroy(&broker);
    zmq_ctx_term(ctx);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/bf-security-test-%d", (int)getpid());
    test_keygen_and_load();
    test_bad_key_files();
    test_zap();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (failures == 0 && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    if (failures)
        fprintf(stderr, "%d check(s) failed\n", failures);
    else
        printf("all security tests passed\n");
    return failures ? 1 : 0;
}
