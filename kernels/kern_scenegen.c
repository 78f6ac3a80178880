/*  kernels/kern_scenegen.c - procedural city scenes in the Sionna RT format
    (`beamfleet scenegen`), so Beamfleet runs anywhere without downloaded
    data: a street grid of a 500 m square city, buildings as boxes of random
    footprint and height with ITU materials, a ground slab, one binary PLY
    mesh per material, the Mitsuba XML that names them, and scene.yaml with a
    rooftop transmitter pointed away from a street-level zone (so the
    optimizer has something to find) placed the way a planner would: along
    a street, far enough from the site that the best tilt is a few degrees
    to about 15, inside the optimizer's default range. Deterministic for a seed: the
    generator is SplitMix64, never rand(). */

#include "kern_scene.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HALF   250.0 /* the city spans [-HALF, HALF]^2 */
#define GROUND 260.0

typedef struct {
    uint64_t s;
} rng_t;

static uint64_t next(rng_t *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform(rng_t *r, double lo, double hi)
{
    return lo + (hi - lo) * ((double)(next(r) >> 11) * (1.0 / 9007199254740992.0));
}

enum { M_GROUND, M_CONCRETE, M_BRICK, M_GLASS, M_MARBLE, M_COUNT };
static const char *const mat_names[M_COUNT] = {"medium_dry_ground", "concrete", "brick", "glass",
                                               "marble"};
static const double mat_thickness[M_COUNT] = {1.0, 0.3, 0.25, 0.05, 0.2};

typedef struct {
    float *v;
    uint32_t *f;
    size_t nv, nf, capv, capf;
} mesh_t;

static bool mesh_vertex(mesh_t *m, double x, double y, double z)
{
    if (!bf_grow(&m->v, &m->capv, m->nv + 1, 3 * sizeof *m->v, 64))
        return false;
    m->v[3 * m->nv] = (float)x, m->v[3 * m->nv + 1] = (float)y, m->v[3 * m->nv + 2] = (float)z;
    m->nv++;
    return true;
}

static bool mesh_tri(mesh_t *m, uint32_t a, uint32_t b, uint32_t c)
{
    if (!bf_grow(&m->f, &m->capf, m->nf + 1, 3 * sizeof *m->f, 64))
        return false;
    m->f[3 * m->nf] = a, m->f[3 * m->nf + 1] = b, m->f[3 * m->nf + 2] = c;
    m->nf++;
    return true;
}

/* A box [x0,x1] x [y0,y1] x [0,h] without its bottom: 10 triangles. */
static bool mesh_box(mesh_t *m, double x0, double y0, double x1, double y1, double h)
{
    uint32_t b = (uint32_t)m->nv;
    const double xs[4] = {x0, x1, x1, x0}, ys[4] = {y0, y0, y1, y1};
    for (int k = 0; k < 4; k++)
        if (!mesh_vertex(m, xs[k], ys[k], 0) || !mesh_vertex(m, xs[k], ys[k], h))
            return false;
    bool ok = true;
    for (int k = 0; k < 4; k++) { /* walls */
        uint32_t lo0 = b + 2 * (uint32_t)k, hi0 = lo0 + 1;
        uint32_t lo1 = b + 2 * (uint32_t)((k + 1) % 4), hi1 = lo1 + 1;
        ok = ok && mesh_tri(m, lo0, lo1, hi1) && mesh_tri(m, lo0, hi1, hi0);
    }
    return ok && mesh_tri(m, b + 1, b + 3, b + 5) && mesh_tri(m, b + 1, b + 5, b + 7); /* roof */
}

/* Appends to buf (cap bytes, *len used); once full, *len only grows. */
static void BF_PRINTF(4, 5) append(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
    if (*len >= cap) {
        *len = cap;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    *len = n < 0 ? cap : *len + (size_t)n;
}

static bf_err_t write_ply(const char *path, const mesh_t *m, char *err)
{
    char header[256];
    int hl = snprintf(header, sizeof header,
                      "ply\nformat binary_little_endian 1.0\ncomment beamfleet scenegen\n"
                      "element vertex %zu\nproperty float x\nproperty float y\nproperty float z\n"
                      "element face %zu\nproperty list uchar int vertex_indices\nend_header\n",
                      m->nv, m->nf);
    size_t len = (size_t)hl + m->nv * 12 + m->nf * 13;
    unsigned char *buf = malloc(len);
    if (!buf)
        return BF_ENOMEM;
    memcpy(buf, header, (size_t)hl);
    unsigned char *p = buf + hl;
    memcpy(p, m->v, m->nv * 12); /* little-endian hosts only, as is every target */
    p += m->nv * 12;
    for (size_t i = 0; i < m->nf; i++) {
        *p++ = 3;
        memcpy(p, &m->f[3 * i], 12);
        p += 12;
    }
    bf_err_t rc = bf_write_atomic(path, buf, len, err);
    free(buf);
    return rc;
}

static bf_err_t write_scene(const char *dir, rng_t *r, char *err)
{
    mesh_t meshes[M_COUNT];
    memset(meshes, 0, sizeof meshes);
    bf_err_t rc = BF_OK;
    /* ground slab */
    mesh_t *g = &meshes[M_GROUND];
    bool ok = mesh_vertex(g, -GROUND, -GROUND, 0) && mesh_vertex(g, GROUND, -GROUND, 0) &&
              mesh_vertex(g, GROUND, GROUND, 0) && mesh_vertex(g, -GROUND, GROUND, 0) &&
              mesh_tri(g, 0, 1, 2) && mesh_tri(g, 0, 2, 3);
    /* street grid: alternate blocks and streets along each axis */
    double xb[16][2], yb[16][2];
    int nx = 0, ny = 0;
    for (double x = -HALF + uniform(r, 5, 15); nx < 16;) {
        double w = uniform(r, 40, 70);
        if (x + w > HALF - 5)
            break;
        xb[nx][0] = x, xb[nx][1] = x + w, nx++;
        x += w + uniform(r, 15, 25);
    }
    for (double y = -HALF + uniform(r, 5, 15); ny < 16;) {
        double w = uniform(r, 40, 70);
        if (y + w > HALF - 5)
            break;
        yb[ny][0] = y, yb[ny][1] = y + w, ny++;
        y += w + uniform(r, 15, 25);
    }
    /* buildings; remember the tallest near the centre of at most 30 m for
       the transmitter (a rooftop site of a macro cell, not a tower) */
    double tx_box[5] = {0, 0, 0, 0, -1};
    int tx_block = 0;
    for (int i = 0; i < nx && ok; i++)
        for (int j = 0; j < ny && ok; j++) {
            int count = 1 + (int)(next(r) % 4);
            double bw = xb[i][1] - xb[i][0];
            for (int k = 0; k < count && ok; k++) {
                /* split the block along x into `count` lots */
                double x0 = xb[i][0] + bw * k / count + 1, x1 = xb[i][0] + bw * (k + 1) / count - 1;
                double y0 = yb[j][0] + uniform(r, 0, 8), y1 = yb[j][1] - uniform(r, 0, 8);
                double h = uniform(r, 8, 60);
                int mat = M_CONCRETE + (int)(next(r) % 4);
                ok = mesh_box(&meshes[mat], x0, y0, x1, y1, h);
                double cx = 0.5 * (x0 + x1), cy = 0.5 * (y0 + y1);
                if (fabs(cx) < 70 && fabs(cy) < 70 && h <= 30 && h > tx_box[4]) {
                    tx_box[0] = x0, tx_box[1] = y0, tx_box[2] = x1, tx_box[3] = y1;
                    tx_box[4] = h;
                    tx_block = j;
                }
            }
        }
    if (!ok) {
        rc = BF_ENOMEM;
        goto done;
    }
    if (tx_box[4] < 0) { /* no building near the centre: a mast in a street */
        tx_box[0] = tx_box[2] = xb[0][1] + 5;
        tx_box[1] = tx_box[3] = 0;
        tx_box[4] = 20;
    }
    char *meshdir = bf_asprintf("%s/meshes", dir);
    if (!meshdir || (rc = bf_mkdir_p(meshdir, err)) != BF_OK) {
        free(meshdir);
        rc = rc ? rc : BF_ENOMEM;
        goto done;
    }
    free(meshdir);
    /* XML: at most M_COUNT bsdfs and shapes of bounded size, so 8 KiB is
       plenty; append() stops at the end all the same. */
    char xml[8192];
    size_t xl = 0;
    append(xml, sizeof xml, &xl,
           "<scene version=\"2.1.0\">\n<!-- written by beamfleet scenegen "
           "-->\n\n<!-- Materials -->\n");
    for (int m = 0; m < M_COUNT; m++)
        if (meshes[m].nf)
            append(xml, sizeof xml, &xl,
                   "\t<bsdf type=\"itu-radio-material\" id=\"%s\">\n"
                   "\t\t<string name=\"type\" value=\"%s\"/>\n"
                   "\t\t<float name=\"thickness\" value=\"%g\"/>\n\t</bsdf>\n",
                   mat_names[m], mat_names[m], mat_thickness[m]);
    append(xml, sizeof xml, &xl, "\n<!-- Shapes -->\n");
    for (int m = 0; m < M_COUNT && rc == BF_OK; m++) {
        if (!meshes[m].nf)
            continue;
        append(xml, sizeof xml, &xl,
               "\t<shape type=\"ply\" id=\"mesh-%s\">\n"
               "\t\t<string name=\"filename\" value=\"meshes/%s.ply\"/>\n"
               "\t\t<boolean name=\"face_normals\" value=\"true\"/>\n"
               "\t\t<ref id=\"%s\" name=\"bsdf\"/>\n\t</shape>\n",
               mat_names[m], mat_names[m], mat_names[m]);
        char *path = bf_asprintf("%s/meshes/%s.ply", dir, mat_names[m]);
        rc = path ? write_ply(path, &meshes[m], err) : BF_ENOMEM;
        free(path);
    }
    if (rc != BF_OK)
        goto done;
    append(xml, sizeof xml, &xl, "</scene>\n");
    if (xl >= sizeof xml) {
        rc = bf_fail(err, BF_EINVAL, "%s: scene XML longer than %zu bytes", dir, sizeof xml);
        goto done;
    }
    char *xml_path = bf_asprintf("%s/scene.xml", dir);
    rc = xml_path ? bf_write_atomic(xml_path, xml, xl, err) : BF_ENOMEM;
    free(xml_path);
    if (rc != BF_OK)
        goto done;
    /* The transmitter stands 3 m above the roof edge that faces a street
       running along x. The zone is a stretch of that street, 100 to 150 m
       long, with the first 10 m of the buildings on either side (their
       indoor users), centred down the street at the distance D where the
       line from the antenna to street level drops by alpha, 4 to 10
       degrees (D = (height - 1.5) / tan alpha, 60 m at least, the stretch
       inside the city): the street mostly in line of sight, the buildings
       behind a wall, and the best tilt near alpha, not at the optimizer's
       bound as for a zone under the mast. The antenna starts turned along
       the street, away from most of it. */
    int side = (int)(next(r) % 2); /* 0: the street at +y, 1: at -y */
    if (side == 0 && tx_block + 1 >= ny)
        side = 1;
    else if (side == 1 && tx_block == 0)
        side = 0;
    double txx = 0.5 * (tx_box[0] + tx_box[2]) + uniform(r, -0.3, 0.3) * (tx_box[2] - tx_box[0]);
    double txy = side == 0 ? tx_box[3] : tx_box[1];
    double txz = tx_box[4] + 3;
    double zy0, zy1;
    if (side == 0) {
        zy0 = yb[tx_block][1] + 1;
        zy1 = tx_block + 1 < ny ? yb[tx_block + 1][0] - 1 : HALF;
    } else {
        zy0 = tx_block > 0 ? yb[tx_block - 1][1] + 1 : -HALF;
        zy1 = yb[tx_block][0] - 1;
    }
    double len = uniform(r, 100, 150), alpha = uniform(r, 4, 10) * M_PI / 180.0;
    double dist = fmax(60.0, (txz - 1.5) / tan(alpha));
    double sgn = txx < 0 ? 1.0 : -1.0; /* towards the farther end of the street */
    double room = HALF - sgn * txx - len / 2 - 2;
    if (dist > room)
        dist = room;
    double zcx = txx + sgn * dist;
    double zx0 = fmax(-HALF, zcx - len / 2), zx1 = fmin(HALF, zcx + len / 2);
    zy0 = fmax(-HALF, zy0 - 10);
    zy1 = fmin(HALF, zy1 + 10);
    double toward = side == 0 ? 90.0 : -90.0;
    double az = fmod(toward + (next(r) % 2 ? 90 : -90) + uniform(r, -30, 30) + 720, 360);
    double tilt = uniform(r, 0, 10);
    char yaml[2048];
    int yl = snprintf(yaml, sizeof yaml,
                      "# written by beamfleet scenegen\n"
                      "frequency_hz: 3.5e9\n"
                      "transmitter:\n"
                      "  position: [%.2f, %.2f, %.2f]\n"
                      "  power_dbm: 20\n"
                      "  antenna: {pattern: tr38901, polarization: V}\n"
                      "  orientation: {azimuth_deg: %.1f, tilt_deg: %.1f, roll_deg: 0}\n"
                      "zone: {rect: [%.1f, %.1f, %.1f, %.1f]}\n"
                      "measurement: {center: [0, 0], size: [%.0f, %.0f], height: 1.5, "
                      "cell_size: [5, 5]}\n",
                      txx, txy, txz, az, tilt, zx0, zy0, zx1, zy1, 2 * HALF, 2 * HALF);
    char *yaml_path = bf_asprintf("%s/scene.yaml", dir);
    rc = yaml_path ? bf_write_atomic(yaml_path, yaml, (size_t)yl, err) : BF_ENOMEM;
    free(yaml_path);
done:
    for (int m = 0; m < M_COUNT; m++) {
        free(meshes[m].v);
        free(meshes[m].f);
    }
    return rc;
}

bf_err_t kern_scenegen(const char *out_dir, unsigned count, uint64_t seed, char *err)
{
    bf_err_t rc = bf_mkdir_p(out_dir, err);
    if (rc != BF_OK)
        return rc;
    for (unsigned i = 0; i < count && rc == BF_OK; i++) {
        rng_t r = {seed * 0x100000001b3ull + i};
        char *dir = bf_asprintf("%s/city_%03u", out_dir, i);
        if (!dir)
            return BF_ENOMEM;
        rc = bf_mkdir_p(dir, err);
        if (rc == BF_OK)
            rc = write_scene(dir, &r, err);
        free(dir);
    }
    return rc;
}
