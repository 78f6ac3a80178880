/*  tests/fuzz/fuzz_util.h - what the file-based harnesses share: one private
    scratch directory per fuzzing process (under $BF_FUZZ_TMP, else /dev/shm,
    else $TMPDIR or /tmp), removed at exit, and plain-file writes into it. The
    loaders under test take paths, so each input is written to a file there
    first; on tmpfs this costs microseconds. A harness aborts on a failure of
    its own set-up (that is a broken fuzzing machine, not a finding). */

#ifndef FUZZ_UTIL_H_INCLUDED
#define FUZZ_UTIL_H_INCLUDED

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char fuzz_dir[512];

static inline int fuzz_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    (void)remove(path); /* best effort: keep removing the rest */
    return 0;
}

static inline void fuzz_cleanup(void)
{
    if (fuzz_dir[0])
        nftw(fuzz_dir, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void fuzz_die(const char *what, const char *path)
{
    fprintf(stderr, "fuzz harness set-up: %s %s: %s\n", what, path, strerror(errno));
    abort();
}

/* Creates the scratch directory once; returns its path. */
static inline const char *fuzz_scratch(void)
{
    if (fuzz_dir[0])
        return fuzz_dir;
    const char *base = getenv("BF_FUZZ_TMP");
    if (!base || !*base)
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/bf-fuzz-XXXXXX", base);
    if (!mkdtemp(fuzz_dir))
        fuzz_die("mkdtemp", fuzz_dir);
    atexit(fuzz_cleanup);
    return fuzz_dir;
}

/* Writes the path scratch/rel into the caller's buffer out; returns out. */
static inline const char *fuzz_path(char *out, size_t n, const char *rel)
{
    int w = snprintf(out, n, "%s/%s", fuzz_scratch(), rel);
    if (w < 0 || (size_t)w >= n)
        fuzz_die("path too long", rel);
    return out;
}

static inline void fuzz_mkdir(const char *rel)
{
    char p[1024];
    if (mkdir(fuzz_path(p, sizeof p, rel), 0700) != 0 && errno != EEXIST)
        fuzz_die("mkdir", p);
}

/* Writes data[0..len) to scratch/rel, replacing it (not atomic: one process). */
static inline void fuzz_write(const char *rel, const void *data, size_t len)
{
    char p[1024];
    fuzz_path(p, sizeof p, rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        fuzz_die("open", p);
    const uint8_t *b = data;
    while (len > 0) {
        ssize_t w = write(fd, b, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            fuzz_die("write", p);
        b += w;
        len -= (size_t)w;
    }
    if (close(fd) != 0)
        fuzz_die("close", p);
}

static inline void fuzz_write_str(const char *rel, const char *text)
{
    fuzz_write(rel, text, strlen(text));
}

/* Writes scene/rel as a binary PLY quad on z = 0 spanning [-half, half]^2:
   four vertices, two triangles, the layout Sionna's meshes use. */
static inline void fuzz_write_quad_ply(const char *rel, float half)
{
    static const char head[] = "ply\nformat binary_little_endian 1.0\nelement vertex 4\n"
                               "property float x\nproperty float y\nproperty float z\n"
                               "element face 2\nproperty list uchar int vertex_indices\n"
                               "end_header\n";
    uint8_t buf[sizeof head - 1 + 4 * 12 + 2 * 13];
    size_t at = sizeof head - 1;
    memcpy(buf, head, at);
    const float v[4][3] = {{-half, -half, 0}, {half, -half, 0}, {half, half, 0}, {-half, half, 0}};
    memcpy(buf + at, v, sizeof v);
    at += sizeof v;
    const int32_t f[2][3] = {{0, 1, 2}, {0, 2, 3}};
    for (int i = 0; i < 2; i++) {
        buf[at++] = 3;
        memcpy(buf + at, f[i], sizeof f[i]);
        at += sizeof f[i];
    }
    fuzz_write(rel, buf, at);
}

/* With BF_FUZZ_VERBOSE=1 in the environment, says why an input was refused
   (to see which seeds reach the success path). */
#define FUZZ_NOTE(...)                                                                             \
    do {                                                                                           \
        static int verbose_ = -1;                                                                  \
        if (verbose_ < 0)                                                                          \
            verbose_ = getenv("BF_FUZZ_VERBOSE") && *getenv("BF_FUZZ_VERBOSE") == '1';             \
        if (verbose_) {                                                                            \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* Aborts with a message: an invariant of a successful load does not hold. */
#define FUZZ_ASSERT(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #cond);           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#ifdef KERN_SCENE_H_INCLUDED
/* What every successfully loaded scene guarantees its consumers (the tracer
   reads these arrays without checks). */
static inline void fuzz_check_scene(const kern_scene_t *s)
{
    FUZZ_ASSERT(s->triangle_count <= KERN_MAX_TRIANGLES, "%zu triangles", s->triangle_count);
    FUZZ_ASSERT(s->material_count >= 1 || s->triangle_count == 0, "triangles without material");
    for (size_t i = 0; i < 3 * s->vertex_count; i++)
        FUZZ_ASSERT(isfinite(s->vertices[i]), "vertex coordinate %zu not finite", i);
    for (size_t i = 0; i < 3 * s->triangle_count; i++)
        FUZZ_ASSERT(s->indices[i] < s->vertex_count, "index %u >= %zu vertices", s->indices[i],
                    s->vertex_count);
    for (size_t i = 0; i < s->triangle_count; i++)
        FUZZ_ASSERT(s->tri_material[i] < s->material_count, "triangle %zu: material %u of %zu", i,
                    s->tri_material[i], s->material_count);
    for (size_t i = 0; i < s->material_count; i++) {
        const kern_material_t *m = &s->materials[i];
        FUZZ_ASSERT(memchr(m->itu, '\0', sizeof m->itu), "material name not terminated");
        FUZZ_ASSERT(isfinite(m->eta_re) && isfinite(m->eta_im) && m->eta_im <= 0,
                    "material %s: eta %g%+gj", m->itu, m->eta_re, m->eta_im);
        FUZZ_ASSERT(m->thickness >= 0 && m->thickness <= 1e3, "thickness %g", m->thickness);
    }
    for (size_t i = 0; i < s->vertex_count; i++)
        for (int k = 0; k < 3; k++)
            FUZZ_ASSERT(s->vertices[3 * i + (size_t)k] >= s->bbox_min[k] &&
                            s->vertices[3 * i + (size_t)k] <= s->bbox_max[k],
                        "vertex %zu outside the bounding box", i);
}
#endif

#ifdef PROTO_H_INCLUDED
/* A refusal's reason travels back to the peer as the reason of an ERROR
   (the broker answers a bad SUBMIT so) or goes into a result document: it
   must be one line and something the encoder can send (valid UTF-8). */
static inline void fuzz_check_reason(bf_err_t rc, const char *err)
{
    FUZZ_ASSERT(err[0] != '\0', "refused (%d) without a reason", (int)rc);
    FUZZ_ASSERT(!strpbrk(err, "\r\n"), "reason is not one line: %s", err);
    proto_msg_t m;
    proto_msg_init(&m, PROTO_ERROR);
    m.code = (uint64_t)rc;
    FUZZ_ASSERT(proto_msg_set(&m.reason, err) == BF_OK, "out of memory");
    uint8_t *data = NULL;
    size_t size = 0;
    bf_err_t erc = proto_encode(&m, &data, &size);
    FUZZ_ASSERT(erc == BF_OK, "the reason cannot be sent in an ERROR (%d): %s", (int)erc, err);
    free(data);
    proto_msg_clear(&m);
}

#ifdef KERN_SCENE_H_INCLUDED
/* Loads scratch/scene.xml (after the harness wrote its input): NULL when
   the loader refused it, which must then be with a reason fit for an ERROR
   and no scene; otherwise a scene that passed fuzz_check_scene (the
   caller destroys it). */
static inline kern_scene_t *fuzz_load_scene(void)
{
    char path[1024], err[BF_ERRLEN] = "";
    fuzz_path(path, sizeof path, "scene.xml");
    kern_scene_t *scene = NULL;
    bf_err_t rc = kern_scene_load_xml(path, 3.5e9, &scene, err);
    if (rc != BF_OK) {
        FUZZ_NOTE("refused: %s", err);
        fuzz_check_reason(rc, err);
        FUZZ_ASSERT(!scene, "a refused scene returned");
        return NULL;
    }
    fuzz_check_scene(scene);
    return scene;
}
#endif
#endif

#endif
