/*  kernels/kern_scene.c - loads a Sionna RT scene directory into a
    kern_scene_t: the Mitsuba 3 XML (read with libexpat), its binary PLY
    meshes, the ITU radio materials evaluated at the scene's frequency (DESIGN
    6.2), and scene.yaml (transmitter, zone, measurement overrides). Every
    failure is an input error naming the file, and the line, element or field
    at fault. */

#include "kern_scene.h"
#include "../common/bf_yaml.h"

#include <dirent.h>
#include <errno.h>
#include <expat.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EPS0           8.8541878128e-12
#define MAX_XML        (64u << 20) /* bytes of scene XML */
#define MAX_PLY        (1u << 30)  /* bytes of one PLY file */
#define MAX_PLY_HEADER 65536u      /* bytes of one PLY header */
#define MAX_SHAPES     200000
#define MAX_BSDFS      4096

/* ---- materials (DESIGN 6.2) ------------------------------------------------ */

typedef struct {
    double fmin, fmax, a, b, c, d; /* GHz range; eps'r = a f^b, sigma = c f^d */
} itu_range_t;

typedef struct {
    const char *name;
    itu_range_t r[2];
    int nr;
} itu_material_t;

static const itu_material_t itu_table[] = {
    {"concrete", {{1, 100, 5.24, 0, 0.0462, 0.7822}}, 1},
    {"brick", {{1, 40, 3.91, 0, 0.0238, 0.16}}, 1},
    {"plasterboard", {{1, 100, 2.73, 0, 0.0085, 0.9395}}, 1},
    {"wood", {{0.001, 100, 1.99, 0, 0.0047, 1.0718}}, 1},
    {"glass", {{0.1, 100, 6.31, 0, 0.0036, 1.3394}, {220, 450, 5.79, 0, 0.0004, 1.658}}, 2},
    {"ceiling_board", {{1, 100, 1.48, 0, 0.0011, 1.075}, {220, 450, 1.52, 0, 0.0029, 1.029}}, 2},
    {"chipboard", {{1, 100, 2.58, 0, 0.0217, 0.78}}, 1},
    {"plywood", {{1, 40, 2.71, 0, 0.33, 0}}, 1},
    {"marble", {{1, 60, 7.074, 0, 0.0055, 0.9262}}, 1},
    {"floorboard", {{50, 100, 3.66, 0, 0.0044, 1.3515}}, 1},
    {"metal", {{1, 100, 1, 0, 1e7, 0}}, 1},
    {"very_dry_ground", {{1, 10, 3, 0, 0.00015, 2.52}}, 1},
    {"medium_dry_ground", {{1, 10, 15, -0.1, 0.035, 1.63}}, 1},
    {"wet_ground", {{1, 10, 30, -0.4, 0.15, 1.30}}, 1},
};

bf_err_t kern_material_eval(const char *itu, double frequency_hz, double thickness,
                            kern_material_t *out, char *err)
{
    for (size_t i = 0; i < BF_ARRAY_LEN(itu_table); i++) {
        const itu_material_t *m = &itu_table[i];
        if (strcmp(m->name, itu) != 0)
            continue;
        double f = frequency_hz / 1e9;
        for (int k = 0; k < m->nr; k++) {
            const itu_range_t *r = &m->r[k];
            if (f < r->fmin || f > r->fmax)
                continue;
            memset(out, 0, sizeof *out);
            bf_strlcpy(out->itu, itu, sizeof out->itu);
            out->thickness = thickness;
            out->alpha_r = out->alpha_i = 1;
            out->lambda = 1.0;
            out->eta_re = r->a * pow(f, r->b);
            out->eta_im = -(r->c * pow(f, r->d)) / (EPS0 * 2.0 * M_PI * frequency_hz);
            return BF_OK;
        }
        if (m->nr == 2)
            return bf_fail(err, BF_EINVAL,
                           "material '%s': %g GHz outside its ranges (%g-%g and %g-%g GHz)", itu, f,
                           m->r[0].fmin, m->r[0].fmax, m->r[1].fmin, m->r[1].fmax);
        return bf_fail(err, BF_EINVAL, "material '%s': %g GHz outside its range (%g-%g GHz)", itu,
                       f, m->r[0].fmin, m->r[0].fmax);
    }
    return bf_fail(err, BF_ENOENT, "unknown ITU material '%s'", itu);
}

/* ---- the scene object ---------------------------------------------------- */

void kern_scene_destroy(kern_scene_t **scene)
{
    if (!scene || !*scene)
        return;
    kern_scene_t *s = *scene;
    free(s->dir);
    free(s->name);
    free(s->vertices);
    free(s->indices);
    free(s->tri_material);
    free(s->materials);
    free(s->zone_xy);
    free(s);
    *scene = NULL;
}

bool kern_scene_in_zone(const kern_scene_t *scene, double x, double y)
{
    bool inside = false;
    size_t n = scene->zone_points;
    const double *p = scene->zone_xy;
    for (size_t i = 0, j = n - 1; i < n; j = i++) {
        double xi = p[2 * i], yi = p[2 * i + 1], xj = p[2 * j], yj = p[2 * j + 1];
        if ((yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi)
            inside = !inside;
    }
    return inside;
}

/* ---- PLY ---------------------------------------------------------------------- */

/* Byte size of a PLY scalar type, 0 when the name is not one. */
static int type_size(const char *t)
{
    static const struct {
        const char *name;
        int size;
    } types[] = {
        {"char", 1},  {"uchar", 1},   {"int8", 1},   {"uint8", 1},   {"short", 2}, {"ushort", 2},
        {"int16", 2}, {"uint16", 2},  {"int", 4},    {"uint", 4},    {"int32", 4}, {"uint32", 4},
        {"float", 4}, {"float32", 4}, {"double", 8}, {"float64", 8},
    };
    for (size_t i = 0; i < BF_ARRAY_LEN(types); i++)
        if (!strcmp(t, types[i].name))
            return types[i].size;
    return 0;
}

/* What a PLY header says about the body. */
typedef struct {
    size_t nverts, nfaces;
    size_t vstride;       /* bytes per vertex record */
    size_t face_extra;    /* bytes of scalar face properties after the index list */
    int xoff, yoff, zoff; /* byte offsets of float x, y, z in a vertex record */
    bool index_signed;    /* list ... int (true) or uint (false) */
    size_t body;          /* offset of the first body byte */
} ply_header_t;

/* A decimal element count: digits only, at most max. */
static bool parse_count(const char *s, size_t max, size_t *out)
{
    if (!*s)
        return false;
    unsigned long long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (unsigned)(*p - '0');
        if (v > max)
            return false;
    }
    *out = (size_t)v;
    return true;
}

/* Parses the header of a binary_little_endian 1.0 PLY in data[0..len): one
   vertex element (float x y z among scalar properties), then one face element
   (list uchar int|uint vertex_indices, then optional scalar properties), then
   nothing but empty elements. name is the mesh as the XML names it. A
   message quotes a header line only once the first line said "ply": the
   text of a file that is not a PLY header never reaches a reason. */
static bf_err_t ply_header(const char *data, size_t len, const char *name, ply_header_t *h,
                           char *err)
{
    memset(h, 0, sizeof *h);
    h->xoff = h->yoff = h->zoff = -1;
    size_t limit = len < MAX_PLY_HEADER ? len : MAX_PLY_HEADER;
    size_t pos = 0;
    int lineno = 0, element = 0; /* element: 0 none yet, 1 vertex, 2 face, 3 another (empty) */
    bool format = false, list = false, done = false;
    while (!done) {
        const char *nl = memchr(data + pos, '\n', limit - pos);
        if (!nl) {
            if (lineno == 0)
                return bf_fail(err, BF_EINVAL, "%s: not a PLY file", name);
            return bf_fail(err, BF_EINVAL, "%s: no end_header in the first %u bytes", name,
                           (unsigned)MAX_PLY_HEADER);
        }
        size_t l = (size_t)(nl - (data + pos));
        char line[256];
        if (l >= sizeof line && lineno > 0 &&
            (!strncmp(data + pos, "comment", 7) || !strncmp(data + pos, "obj_info", 8))) {
            pos += l + 1; /* a long comment: nothing to read in it */
            lineno++;
            continue;
        }
        if (l >= sizeof line)
            return bf_fail(err, BF_EINVAL, "%s:%d: header line longer than %zu bytes", name,
                           lineno + 1, sizeof line - 1);
        if (memchr(data + pos, '\0', l))
            return bf_fail(err, BF_EINVAL, "%s:%d: NUL byte in the header", name, lineno + 1);
        memcpy(line, data + pos, l);
        line[l] = '\0';
        if (l && line[l - 1] == '\r')
            line[l - 1] = '\0';
        pos += l + 1;
        lineno++;
        char a[64] = "", b[64] = "", c[64] = "", d[64] = "", e[64] = "", f[64] = "";
        int n = sscanf(line, "%63s %63s %63s %63s %63s %63s", a, b, c, d, e, f);
        if (lineno == 1) {
            if (n != 1 || strcmp(a, "ply") != 0)
                return bf_fail(err, BF_EINVAL, "%s: not a PLY file (first line is not 'ply')",
                               name);
            continue;
        }
        if (n <= 0 || !strcmp(a, "comment") || !strcmp(a, "obj_info"))
            continue;
        if (!strcmp(a, "end_header") && n == 1) {
            done = true;
        } else if (!strcmp(a, "format")) {
            if (strcmp(b, "binary_little_endian") != 0 || strcmp(c, "1.0") != 0 || n != 3)
                return bf_fail(err, BF_EINVAL,
                               "%s:%d: format '%s %s' not supported (only binary_little_endian "
                               "1.0)",
                               name, lineno, b, c);
            format = true;
        } else if (!strcmp(a, "element")) {
            size_t cnt = 0;
            if (n != 3 || !parse_count(c, (size_t)3 * KERN_MAX_TRIANGLES, &cnt))
                return bf_fail(err, BF_EINVAL, "%s:%d: bad element line '%s'", name, lineno, line);
            if (!strcmp(b, "vertex") && element == 0) {
                element = 1;
                h->nverts = cnt;
            } else if (!strcmp(b, "face") && element == 1) {
                if (cnt > KERN_MAX_TRIANGLES)
                    return bf_fail(err, BF_EINVAL, "%s:%d: %zu faces, more than the limit %u", name,
                                   lineno, cnt, KERN_MAX_TRIANGLES);
                element = 2;
                h->nfaces = cnt;
            } else if (element >= 2 && cnt == 0) {
                element = 3; /* an empty element after the faces carries no bytes */
            } else {
                return bf_fail(err, BF_EINVAL,
                               "%s:%d: element '%s' not supported here (expected vertex, then "
                               "face)",
                               name, lineno, b);
            }
        } else if (!strcmp(a, "property")) {
            if (element == 0)
                return bf_fail(err, BF_EINVAL, "%s:%d: property before any element", name, lineno);
            if (element == 1) {
                int sz = type_size(b);
                if (n != 3 || sz == 0)
                    return bf_fail(err, BF_EINVAL, "%s:%d: vertex property '%s' not supported",
                                   name, lineno, line);
                int *off = !strcmp(c, "x")   ? &h->xoff
                           : !strcmp(c, "y") ? &h->yoff
                           : !strcmp(c, "z") ? &h->zoff
                                             : NULL;
                if (off) {
                    if (strcmp(b, "float") != 0 && strcmp(b, "float32") != 0)
                        return bf_fail(err, BF_EINVAL,
                                       "%s:%d: vertex property %s is '%s', only float is "
                                       "supported",
                                       name, lineno, c, b);
                    if (*off >= 0)
                        return bf_fail(err, BF_EINVAL, "%s:%d: vertex property %s repeated", name,
                                       lineno, c);
                    *off = (int)h->vstride;
                }
                h->vstride += (size_t)sz;
            } else if (element == 2 && !strcmp(b, "list")) {
                bool idx_int = !strcmp(d, "int") || !strcmp(d, "int32");
                bool idx_uint = !strcmp(d, "uint") || !strcmp(d, "uint32");
                if (list || n != 5 || (strcmp(c, "uchar") != 0 && strcmp(c, "uint8") != 0) ||
                    !(idx_int || idx_uint) ||
                    (strcmp(e, "vertex_indices") != 0 && strcmp(e, "vertex_index") != 0))
                    return bf_fail(err, BF_EINVAL,
                                   "%s:%d: '%s' not supported (faces must be 'property list "
                                   "uchar int vertex_indices')",
                                   name, lineno, line);
                list = true;
                h->index_signed = idx_int;
            } else if (element == 3 &&
                       ((n == 3 && type_size(b)) ||
                        (n == 5 && !strcmp(b, "list") && type_size(c) && type_size(d)))) {
                /* a property of an empty element: no bytes to skip */
            } else if (element == 2 && list && n == 3 && type_size(b)) {
                h->face_extra += (size_t)type_size(b); /* skipped, e.g. a face colour */
            } else {
                return bf_fail(err, BF_EINVAL, "%s:%d: property '%s' not supported", name, lineno,
                               line);
            }
        } else {
            return bf_fail(err, BF_EINVAL, "%s:%d: unknown header line '%s'", name, lineno, line);
        }
    }
    if (!format)
        return bf_fail(err, BF_EINVAL, "%s: the header has no format line", name);
    if (element == 0 || h->xoff < 0 || h->yoff < 0 || h->zoff < 0)
        return bf_fail(err, BF_EINVAL, "%s: the header has no vertex element with float x, y, z",
                       name);
    if (h->nfaces > 0 && !list)
        return bf_fail(err, BF_EINVAL, "%s: the face element has no vertex_indices list", name);
    h->body = pos;
    return BF_OK;
}

/* Scene arrays being filled, with their capacities. */
typedef struct {
    kern_scene_t *s;
    size_t capv, capi, capm; /* capacity of vertices, indices, tri_material in elements */
} geom_t;

/* Appends the mesh at path (shown as name) to the scene with material mat.
   The file is read whole in one go and decoded with memcpy. */
static bf_err_t load_ply(geom_t *g, const char *path, const char *name, uint16_t mat, char *err)
{
    kern_scene_t *s = g->s;
    char *data = NULL;
    size_t len = 0;
    char why[BF_ERRLEN];
    bf_err_t rc = bf_read_file_beneath(s->dir, path, MAX_PLY, &data, &len, why);
    if (rc == BF_ENOENT)
        return bf_fail(err, BF_EINVAL, "%s: no such mesh file", name);
    if (rc != BF_OK)
        return rc == BF_ENOMEM ? BF_ENOMEM : bf_fail(err, BF_EINVAL, "%s", why);
    ply_header_t h;
    if ((rc = ply_header(data, len, name, &h, err)) != BF_OK)
        goto done;
    size_t avail = len - h.body;
    size_t vbytes = h.nverts * h.vstride; /* both bounded by the header checks: no overflow */
    if (vbytes > avail) {
        rc = bf_fail(err, BF_EINVAL,
                     "%s: truncated: expected %zu bytes of vertex data, file has %zu", name, vbytes,
                     avail);
        goto done;
    }
    size_t frec = 1 + 3 * 4 + h.face_extra;
    size_t fbytes = h.nfaces * frec;
    if (fbytes > avail - vbytes) {
        rc = bf_fail(err, BF_EINVAL, "%s: truncated: expected %zu bytes of face data, file has %zu",
                     name, fbytes, avail - vbytes);
        goto done;
    }
    if (s->triangle_count + h.nfaces > KERN_MAX_TRIANGLES ||
        s->vertex_count + h.nverts > (size_t)3 * KERN_MAX_TRIANGLES) {
        rc = bf_fail(err, BF_EINVAL, "%s: the scene exceeds %u triangles or %u vertices", name,
                     KERN_MAX_TRIANGLES, 3 * KERN_MAX_TRIANGLES);
        goto done;
    }
    if (!bf_grow(&s->vertices, &g->capv, s->vertex_count + h.nverts, 3 * sizeof(float), 1024) ||
        !bf_grow(&s->indices, &g->capi, s->triangle_count + h.nfaces, 3 * sizeof(uint32_t), 1024) ||
        !bf_grow(&s->tri_material, &g->capm, s->triangle_count + h.nfaces, sizeof(uint16_t),
                 1024)) {
        rc = bf_fail(err, BF_ENOMEM, "%s: out of memory", name);
        goto done;
    }
    const unsigned char *body = (const unsigned char *)data + h.body;
    size_t vbase = s->vertex_count;
    for (size_t i = 0; i < h.nverts; i++) {
        const unsigned char *v = body + i * h.vstride;
        float xyz[3];
        memcpy(&xyz[0], v + h.xoff, 4);
        memcpy(&xyz[1], v + h.yoff, 4);
        memcpy(&xyz[2], v + h.zoff, 4);
        if (!isfinite(xyz[0]) || !isfinite(xyz[1]) || !isfinite(xyz[2])) {
            rc = bf_fail(err, BF_EINVAL, "%s: vertex %zu is not finite", name, i);
            goto done;
        }
        memcpy(&s->vertices[3 * (vbase + i)], xyz, sizeof xyz);
    }
    const unsigned char *f = body + vbytes;
    for (size_t i = 0; i < h.nfaces; i++, f += frec) {
        if (f[0] != 3) {
            rc = bf_fail(err, BF_EINVAL,
                         "%s: face %zu has %u vertices, only triangles are supported", name, i,
                         f[0]);
            goto done;
        }
        for (int k = 0; k < 3; k++) {
            uint32_t ix;
            memcpy(&ix, f + 1 + 4 * k, 4);
            long long shown_ix = h.index_signed ? (long long)(int32_t)ix : (long long)ix;
            if (shown_ix < 0 || (size_t)shown_ix >= h.nverts) {
                rc = bf_fail(err, BF_EINVAL,
                             "%s: face %zu: vertex index %lld out of range (%zu vertices)", name, i,
                             shown_ix, h.nverts);
                goto done;
            }
            s->indices[3 * (s->triangle_count + i) + (size_t)k] = (uint32_t)(vbase + ix);
        }
        s->tri_material[s->triangle_count + i] = mat;
    }
    s->vertex_count += h.nverts;
    s->triangle_count += h.nfaces;
done:
    free(data);
    return rc;
}

/* ---- Mitsuba XML ------------------------------------------------------------ */

typedef struct {
    char id[128];
    char itu[32]; /* the ITU name, empty when the bsdf is not a radio material */
    double thickness;
    double scattering, xpd, lambda; /* diffuse reflection, kern_material_t */
    int pattern, alpha_r, alpha_i;
    int line;
    bool radio;   /* type="itu-radio-material" */
    int material; /* index into the scene's materials once a shape used it, else -1 */
} bsdf_t;

typedef struct {
    char id[128];
    char filename[512];
    char ref[128];
    int line;
} shape_t;

typedef struct {
    XML_Parser parser;
    const char *file; /* shown in messages */
    int depth;
    bsdf_t *bsdfs;
    size_t nbsdf, capbsdf;
    shape_t *shapes;
    size_t nshape, capshape;
    bool in_bsdf, in_shape; /* inside a top-level <bsdf> / <shape> */
    bsdf_t *cur;            /* the named top-level bsdf being read, NULL for an anonymous one */
    char err[BF_ERRLEN];
    bf_err_t rc;
} xml_t;

static const char *attr(const char **atts, const char *name)
{
    for (int i = 0; atts[i]; i += 2)
        if (!strcmp(atts[i], name))
            return atts[i + 1];
    return NULL;
}

/* Records the first failure as "file:line: what" and stops the parser. */
static void BF_PRINTF(3, 4) xml_fail(xml_t *x, bf_err_t rc, const char *fmt, ...)
{
    if (x->rc != BF_OK)
        return;
    x->rc = rc;
    int n = snprintf(x->err, sizeof x->err, "%s:%lu: ", x->file,
                     (unsigned long)XML_GetCurrentLineNumber(x->parser));
    if (n > 0 && (size_t)n < sizeof x->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->err + n, sizeof x->err - (size_t)n, fmt, ap);
        va_end(ap);
    }
    XML_StopParser(x->parser, XML_FALSE);
}

/* The ITU name a visual BSDF id stands for, as Sionna maps it: strip a
   leading "mat-", then a leading "itu_" names the material. */
static const char *itu_of_id(const char *id)
{
    if (!strncmp(id, "mat-", 4))
        id += 4;
    return !strncmp(id, "itu_", 4) && id[4] ? id + 4 : NULL;
}

static void start_top(xml_t *x, const char *el, const char **atts)
{
    const char *type = attr(atts, "type"), *id = attr(atts, "id");
    int line = (int)XML_GetCurrentLineNumber(x->parser);
    if (!strcmp(el, "bsdf")) {
        x->in_bsdf = true;
        x->cur = NULL;
        if (!id)
            return; /* an anonymous bsdf cannot be referenced */
        for (size_t i = 0; i < x->nbsdf; i++)
            if (!strcmp(x->bsdfs[i].id, id)) {
                xml_fail(x, BF_EINVAL, "bsdf id '%s' already defined at line %d", id,
                         x->bsdfs[i].line);
                return;
            }
        if (strlen(id) >= sizeof x->bsdfs[0].id) {
            xml_fail(x, BF_EINVAL, "bsdf id '%.40s...' too long", id);
            return;
        }
        if (x->nbsdf == MAX_BSDFS) {
            xml_fail(x, BF_EINVAL, "more than %d bsdf elements", MAX_BSDFS);
            return;
        }
        if (!bf_grow(&x->bsdfs, &x->capbsdf, x->nbsdf + 1, sizeof *x->bsdfs, 1024)) {
            xml_fail(x, BF_ENOMEM, "out of memory");
            return;
        }
        bsdf_t *b = &x->bsdfs[x->nbsdf++];
        memset(b, 0, sizeof *b);
        bf_strlcpy(b->id, id, sizeof b->id);
        b->line = line;
        b->thickness = 0.1;
        b->alpha_r = b->alpha_i = 1;
        b->lambda = 1.0;
        b->material = -1;
        b->radio = type && !strcmp(type, "itu-radio-material");
        const char *itu = itu_of_id(id);
        if (!b->radio && itu)
            bf_strlcpy(b->itu, itu, sizeof b->itu);
        x->cur = b;
    } else if (!strcmp(el, "shape")) {
        if (!type || strcmp(type, "ply") != 0) {
            xml_fail(x, BF_EINVAL, "shape '%s': type '%s' not supported (only ply)", id ? id : "?",
                     type ? type : "");
            return;
        }
        if (x->nshape == MAX_SHAPES) {
            xml_fail(x, BF_EINVAL, "more than %d shapes", MAX_SHAPES);
            return;
        }
        if (!bf_grow(&x->shapes, &x->capshape, x->nshape + 1, sizeof *x->shapes, 1024)) {
            xml_fail(x, BF_ENOMEM, "out of memory");
            return;
        }
        shape_t *s = &x->shapes[x->nshape++];
        memset(s, 0, sizeof *s);
        bf_strlcpy(s->id, id ? id : "?", sizeof s->id);
        s->line = line;
        x->in_shape = true;
    } else if (!strcmp(el, "include")) {
        xml_fail(x, BF_EINVAL, "<include> is not supported (put all shapes in one file)");
    }
    /* sensor, emitter, integrator, film, default, texture, ...: rendering only */
}

static void XMLCALL on_start(void *ud, const char *el, const char **atts)
{
    xml_t *x = ud;
    x->depth++;
    if (x->depth == 1) {
        if (strcmp(el, "scene") != 0)
            xml_fail(x, BF_EINVAL, "root element is <%s>, expected <scene>", el);
        return;
    }
    if (x->depth == 2) {
        start_top(x, el, atts);
        return;
    }
    if (x->depth != 3)
        return; /* e.g. the bsdfs nested in a twosided bsdf: only the outer id counts */
    const char *name = attr(atts, "name"), *value = attr(atts, "value");
    if (x->in_bsdf && x->cur) {
        bsdf_t *b = x->cur;
        if (!b->radio || !name || !value)
            return;
        if (!strcmp(el, "string") && !strcmp(name, "type")) {
            bf_strlcpy(b->itu, value, sizeof b->itu);
        } else if (!strcmp(el, "float") && !strcmp(name, "thickness")) {
            char *end;
            b->thickness = strtod(value, &end);
            if (end == value || *end || !(b->thickness >= 0) || !(b->thickness <= 1e3))
                xml_fail(x, BF_EINVAL, "bsdf '%s': bad thickness '%s'", b->id, value);
        } else if (!strcmp(el, "float") &&
                   (!strcmp(name, "scattering_coefficient") || !strcmp(name, "xpd_coefficient") ||
                    !strcmp(name, "lambda_"))) {
            char *end;
            double v = strtod(value, &end);
            if (end == value || *end || !(v >= 0) || !(v <= 1))
                xml_fail(x, BF_EINVAL, "bsdf '%s': bad %s '%s' (0 to 1)", b->id, name, value);
            *(!strcmp(name, "lambda_")                  ? &b->lambda
              : !strcmp(name, "scattering_coefficient") ? &b->scattering
                                                        : &b->xpd) = v;
        } else if (!strcmp(el, "integer") &&
                   (!strcmp(name, "alpha_r") || !strcmp(name, "alpha_i"))) {
            char *end;
            long v = strtol(value, &end, 10);
            if (end == value || *end || v < 1 || v > 64)
                xml_fail(x, BF_EINVAL, "bsdf '%s': bad %s '%s' (1 to 64)", b->id, name, value);
            *(!strcmp(name, "alpha_r") ? &b->alpha_r : &b->alpha_i) = (int)v;
        } else if (!strcmp(el, "string") && !strcmp(name, "scattering_pattern")) {
            if (!strcmp(value, "lambertian"))
                b->pattern = KERN_SCATTER_LAMBERTIAN;
            else if (!strcmp(value, "directive"))
                b->pattern = KERN_SCATTER_DIRECTIVE;
            else if (!strcmp(value, "backscattering"))
                b->pattern = KERN_SCATTER_BACKSCATTERING;
            else
                xml_fail(x, BF_EINVAL,
                         "bsdf '%s': scattering_pattern '%s' (lambertian, directive or "
                         "backscattering)",
                         b->id, value);
        }
    } else if (x->in_shape) {
        shape_t *s = &x->shapes[x->nshape - 1];
        if (!strcmp(el, "string") && name && !strcmp(name, "filename") && value) {
            if (strlen(value) >= sizeof s->filename) {
                xml_fail(x, BF_EINVAL, "shape '%s': filename too long", s->id);
                return;
            }
            bf_strlcpy(s->filename, value, sizeof s->filename);
        } else if (!strcmp(el, "ref") && attr(atts, "id") && (!name || !strcmp(name, "bsdf"))) {
            bf_strlcpy(s->ref, attr(atts, "id"), sizeof s->ref);
        } else if (!strcmp(el, "transform")) {
            xml_fail(x, BF_EINVAL, "shape '%s': <transform> is not supported", s->id);
        }
    }
}

static void XMLCALL on_end(void *ud, const char *el)
{
    xml_t *x = ud;
    (void)el;
    if (x->depth == 2)
        x->in_bsdf = x->in_shape = false;
    x->depth--;
}

/* A DTD could declare entities that expand without bound: scenes have none. */
static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
    (void)name, (void)sysid, (void)pubid, (void)has_internal_subset;
    xml_fail(ud, BF_EINVAL, "<!DOCTYPE> is not supported");
}

/* A relative path inside the scene: no absolute path, no '..' component. */
static bool safe_relative(const char *p)
{
    if (!*p || p[0] == '/' || p[0] == '\\')
        return false;
    const char *c = p;
    while (*c) {
        const char *slash = strchr(c, '/');
        size_t l = slash ? (size_t)(slash - c) : strlen(c);
        if (l == 2 && c[0] == '.' && c[1] == '.')
            return false;
        c += l;
        if (*c == '/')
            c++;
    }
    return true;
}

/* The radio material for bsdf b at frequency_hz, added to the scene the
   first time a shape uses it. */
static bf_err_t bsdf_material(kern_scene_t *s, bsdf_t *b, const char *shown, double frequency_hz,
                              char *err)
{
    if (b->material >= 0)
        return BF_OK;
    if (!b->itu[0])
        return bf_fail(err, BF_EINVAL,
                       b->radio ? "%s:%d: bsdf '%s': itu-radio-material without <string "
                                  "name=\"type\">"
                                : "%s:%d: bsdf '%s' is not a radio material "
                                  "(itu-radio-material or id mat-itu_<name>)",
                       shown, b->line, b->id);
    char why[BF_ERRLEN];
    kern_material_t *m = &s->materials[s->material_count];
    bf_err_t rc = kern_material_eval(b->itu, frequency_hz, b->thickness, m, why);
    if (rc != BF_OK)
        return bf_fail(err, BF_EINVAL, "%s:%d: bsdf '%s': %s", shown, b->line, b->id, why);
    m->scattering_coefficient = b->scattering;
    m->xpd_coefficient = b->xpd;
    m->scattering_pattern = (kern_scatter_pattern_t)b->pattern;
    m->alpha_r = b->alpha_r;
    m->alpha_i = b->pattern == KERN_SCATTER_DIRECTIVE ? 1 : b->alpha_i;
    m->lambda = b->pattern == KERN_SCATTER_DIRECTIVE ? 1.0 : b->lambda;
    b->material = (int)s->material_count++;
    return BF_OK;
}

static bf_err_t load_xml_into(kern_scene_t *s, const char *xml_path, double frequency_hz, char *err)
{
    char *text = NULL, *dir = NULL;
    size_t len = 0;
    const char *base = strrchr(xml_path, '/');
    const char *shown = base ? base + 1 : xml_path;
    char why[BF_ERRLEN];
    bf_err_t rc = bf_read_file_beneath(s->dir, xml_path, MAX_XML, &text, &len, why);
    if (rc != BF_OK)
        return rc == BF_ENOMEM ? rc : bf_fail(err, BF_EINVAL, "%s", why);
    xml_t x;
    memset(&x, 0, sizeof x);
    x.file = shown;
    x.parser = XML_ParserCreate(NULL);
    geom_t g = {s, 0, 0, 0};
    if (!x.parser) {
        rc = bf_fail(err, BF_ENOMEM, "%s: out of memory", shown);
        goto done;
    }
    XML_SetUserData(x.parser, &x);
    XML_SetElementHandler(x.parser, on_start, on_end);
    XML_SetStartDoctypeDeclHandler(x.parser, on_doctype);
    if (XML_Parse(x.parser, text, (int)len, XML_TRUE) == XML_STATUS_ERROR && x.rc == BF_OK) {
        rc = bf_fail(err, BF_EINVAL, "%s:%lu:%lu: %s", shown,
                     (unsigned long)XML_GetCurrentLineNumber(x.parser),
                     (unsigned long)XML_GetCurrentColumnNumber(x.parser) + 1,
                     XML_ErrorString(XML_GetErrorCode(x.parser)));
        goto done;
    }
    if (x.rc != BF_OK) {
        rc = bf_fail(err, x.rc, "%s", x.err);
        goto done;
    }
    s->materials = calloc(x.nbsdf ? x.nbsdf : 1, sizeof *s->materials);
    dir = bf_strdup(xml_path);
    if (!s->materials || !dir) {
        rc = bf_fail(err, BF_ENOMEM, "%s: out of memory", shown);
        goto done;
    }
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[slash == dir ? 1 : 0] = '\0';
    else
        strcpy(dir, ".");
    for (size_t i = 0; i < x.nshape && rc == BF_OK; i++) {
        shape_t *sh = &x.shapes[i];
        bsdf_t *b = NULL;
        for (size_t k = 0; k < x.nbsdf && !b; k++)
            if (!strcmp(x.bsdfs[k].id, sh->ref))
                b = &x.bsdfs[k];
        if (!sh->filename[0]) {
            rc = bf_fail(err, BF_EINVAL, "%s:%d: shape '%s' has no filename", shown, sh->line,
                         sh->id);
        } else if (!safe_relative(sh->filename)) {
            rc = bf_fail(err, BF_EINVAL,
                         "%s:%d: shape '%s': filename '%s' leaves the scene directory", shown,
                         sh->line, sh->id, sh->filename);
        } else if (!sh->ref[0]) {
            rc = bf_fail(err, BF_EINVAL, "%s:%d: shape '%s' has no <ref> to a bsdf", shown,
                         sh->line, sh->id);
        } else if (!b) {
            rc = bf_fail(err, BF_EINVAL, "%s:%d: shape '%s': unknown material '%s'", shown,
                         sh->line, sh->id, sh->ref);
        } else if ((rc = bsdf_material(s, b, shown, frequency_hz, err)) == BF_OK) {
            char *ply = bf_asprintf("%s/%s", dir, sh->filename);
            rc = ply ? load_ply(&g, ply, sh->filename, (uint16_t)b->material, err) : BF_ENOMEM;
            free(ply);
        }
    }
    if (rc != BF_OK)
        goto done;
    /* The bounding box of all vertices; a zero box when there are none. */
    for (int k = 0; k < 3; k++) {
        s->bbox_min[k] = s->vertex_count ? INFINITY : 0;
        s->bbox_max[k] = s->vertex_count ? -INFINITY : 0;
    }
    for (size_t i = 0; i < s->vertex_count; i++)
        for (int k = 0; k < 3; k++) {
            double v = s->vertices[3 * i + (size_t)k];
            s->bbox_min[k] = fmin(s->bbox_min[k], v);
            s->bbox_max[k] = fmax(s->bbox_max[k], v);
        }
done:
    if (x.parser)
        XML_ParserFree(x.parser);
    free(x.bsdfs);
    free(x.shapes);
    free(text);
    free(dir);
    return rc;
}

/* A fresh scene whose dir is dir and whose name is dir's last component. */
static kern_scene_t *scene_new(const char *dir)
{
    kern_scene_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->dir = bf_strdup(dir);
    char *name = bf_strdup(dir);
    if (name) {
        size_t l = strlen(name);
        while (l > 1 && name[l - 1] == '/')
            name[--l] = '\0';
        const char *slash = strrchr(name, '/');
        s->name = bf_strdup(slash && slash[1] ? slash + 1 : name);
        free(name);
    }
    s->tx.power_dbm = 44;
    s->tx.pattern = KERN_PATTERN_TR38901;
    s->tx.polarization = KERN_POL_V;
    s->tx.movable = true;
    s->tx.serves = true;
    bf_strlcpy(s->tx.name, "tx0", sizeof s->tx.name);
    s->txs[0] = s->tx; /* one transmitter until scene.yaml says otherwise */
    s->tx_count = 1;
    if (!s->dir || !s->name)
        kern_scene_destroy(&s);
    return s;
}

bf_err_t kern_scene_load_xml(const char *xml_path, double frequency_hz, kern_scene_t **scene,
                             char *err)
{
    *scene = NULL;
    if (!(frequency_hz > 0) || !isfinite(frequency_hz))
        return bf_fail(err, BF_EINVAL, "%s: frequency %g Hz is not positive", xml_path,
                       frequency_hz);
    char *dir = bf_strdup(xml_path);
    if (!dir)
        return BF_ENOMEM;
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[slash == dir ? 1 : 0] = '\0';
    else
        strcpy(dir, ".");
    kern_scene_t *s = scene_new(dir);
    free(dir);
    if (!s)
        return BF_ENOMEM;
    s->frequency_hz = frequency_hz;
    bf_err_t rc = load_xml_into(s, xml_path, frequency_hz, err);
    if (rc != BF_OK) {
        kern_scene_destroy(&s);
        return rc;
    }
    *scene = s;
    return BF_OK;
}

/* ---- scene.yaml -------------------------------------------------------------- */

static bool finite_all(const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return false;
    return true;
}

/* One transmitter: the single `transmitter:` map (what "transmitter") or
   an item of the `transmitters:` list (what "transmitters[i]", which may
   also give `name`, `movable` and `serves`). */
static bf_err_t parse_tx(const bf_yaml_node_t *tx, const char *what, kern_tx_t *out, char *err)
{
    static const char *const tx_keys[] = {"position", "power_dbm", "antenna", "orientation", NULL};
    static const char *const txl_keys[] = {"name",      "movable", "serves",      "position",
                                           "power_dbm", "antenna", "orientation", NULL};
    static const char *const ant_keys[] = {"pattern", "polarization", NULL};
    static const char *const or_keys[] = {"azimuth_deg", "tilt_deg", "roll_deg", NULL};
    bf_err_t rc;
    bool list = strcmp(what, "transmitter") != 0;
    if ((rc = bf_yaml_check_map(tx, what, list ? txl_keys : tx_keys, err)) != BF_OK)
        return rc;
    const bf_yaml_node_t *n;
    char f[64];
    out->movable = true;
    out->serves = true;
    if (list) {
        if ((n = bf_yaml_get(tx, "name"))) {
            if (n->kind != BF_YAML_SCALAR || !n->value[0] || strlen(n->value) >= sizeof out->name ||
                strspn(n->value,
                       "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
                    strlen(n->value))
                return bf_yaml_fail(n, err,
                                    "field '%s.name': expected 1 to %zu letters, digits, '_' or "
                                    "'-'",
                                    what, sizeof out->name - 1);
            bf_strlcpy(out->name, n->value, sizeof out->name);
        }
        snprintf(f, sizeof f, "%s.movable", what);
        if ((n = bf_yaml_get(tx, "movable")) &&
            (rc = bf_yaml_bool(n, f, &out->movable, err)) != BF_OK)
            return rc;
        snprintf(f, sizeof f, "%s.serves", what);
        if ((n = bf_yaml_get(tx, "serves")) &&
            (rc = bf_yaml_bool(n, f, &out->serves, err)) != BF_OK)
            return rc;
    }
    snprintf(f, sizeof f, "%s.position", what);
    if (!(n = bf_yaml_get(tx, "position")))
        return bf_yaml_fail(tx, err, "missing key '%s'", f);
    if ((rc = bf_yaml_doubles(n, f, 3, out->position, err)) != BF_OK)
        return rc;
    if (!finite_all(out->position, 3))
        return bf_yaml_fail(n, err, "field '%s': coordinates must be finite", f);
    out->power_dbm = 44;
    snprintf(f, sizeof f, "%s.power_dbm", what);
    if ((n = bf_yaml_get(tx, "power_dbm")) &&
        (rc = bf_yaml_double(n, f, -100, 100, &out->power_dbm, err)) != BF_OK)
        return rc;
    out->pattern = KERN_PATTERN_TR38901;
    out->polarization = KERN_POL_V;
    const bf_yaml_node_t *ant = bf_yaml_get(tx, "antenna");
    if (ant) {
        snprintf(f, sizeof f, "%s.antenna", what);
        if ((rc = bf_yaml_check_map(ant, f, ant_keys, err)) != BF_OK)
            return rc;
        if ((n = bf_yaml_get(ant, "pattern"))) {
            static const char *const names[] = {"iso", "dipole", "hw_dipole", "tr38901"};
            int found = -1;
            for (int i = 0; i < 4; i++)
                if (n->kind == BF_YAML_SCALAR && !strcmp(n->value, names[i]))
                    found = i;
            if (found < 0)
                return bf_yaml_fail(n, err,
                                    "field '%s.antenna.pattern': expected iso, "
                                    "dipole, hw_dipole or tr38901, got '%s'",
                                    what, bf_yaml_quote(n));
            out->pattern = (kern_pattern_t)found;
        }
        if ((n = bf_yaml_get(ant, "polarization"))) {
            static const char *const names[] = {"V", "H", "cross", "cross_independent"};
            int found = -1;
            for (int i = 0; i < 4; i++)
                if (n->kind == BF_YAML_SCALAR && !strcmp(n->value, names[i]))
                    found = i;
            if (found < 0)
                return bf_yaml_fail(n, err,
                                    "field '%s.antenna.polarization': expected "
                                    "V, H, cross or cross_independent, got '%s'",
                                    what, bf_yaml_quote(n));
            out->polarization = (kern_polarization_t)found;
        }
    }
    const bf_yaml_node_t *orient = bf_yaml_get(tx, "orientation");
    if (orient) {
        snprintf(f, sizeof f, "%s.orientation", what);
        if ((rc = bf_yaml_check_map(orient, f, or_keys, err)) != BF_OK)
            return rc;
        double *dst[3] = {&out->azimuth_deg, &out->tilt_deg, &out->roll_deg};
        for (int i = 0; i < 3; i++)
            if ((n = bf_yaml_get(orient, or_keys[i])) &&
                (rc = bf_yaml_double(n, or_keys[i], -360, 720, dst[i], err)) != BF_OK)
                return rc;
    }
    return BF_OK;
}

static bf_err_t parse_scene_yaml(kern_scene_t *s, const char *path, bf_yaml_node_t **root_out,
                                 char *err)
{
    bf_yaml_node_t *root = NULL;
    char *text = NULL;
    size_t len = 0;
    /* A tenant's file, read inside its scene directory only, and quoted in
       no message: the reason of a result reaches reports others may read. */
    bf_err_t rc = bf_read_file_beneath(s->dir, path, 1u << 20, &text, &len, err);
    if (rc == BF_OK) {
        rc = bf_yaml_parse_quiet(text, len, path, &root, err);
        free(text);
    }
    if (rc != BF_OK)
        return rc == BF_ENOMEM ? rc : BF_EINVAL;
    *root_out = root;
    static const char *const top_keys[] = {"frequency_hz", "transmitter", "transmitters",
                                           "zone",         "measurement", NULL};
    static const char *const zone_keys[] = {"polygon", "rect", NULL};
    static const char *const meas_keys[] = {"center", "size", "height", "cell_size", NULL};
    if ((rc = bf_yaml_check_map(root, "scene.yaml", top_keys, err)) != BF_OK)
        return rc;
    const bf_yaml_node_t *n = bf_yaml_get(root, "frequency_hz");
    if (!n)
        return bf_yaml_fail(root, err, "missing key 'frequency_hz'");
    if ((rc = bf_yaml_double(n, "frequency_hz", 1e3, 1e13, &s->frequency_hz, err)) != BF_OK)
        return rc;
    const bf_yaml_node_t *tx = bf_yaml_get(root, "transmitter");
    const bf_yaml_node_t *txl = bf_yaml_get(root, "transmitters");
    if (tx && txl)
        return bf_yaml_fail(txl, err, "give one of 'transmitter' or 'transmitters', not both");
    if (!tx && !txl)
        return bf_yaml_fail(root, err, "missing key 'transmitter'");
    if (tx) {
        if ((rc = parse_tx(tx, "transmitter", &s->txs[0], err)) != BF_OK)
            return rc;
        bf_strlcpy(s->txs[0].name, "tx0", sizeof s->txs[0].name);
        s->tx_count = 1;
    } else {
        if (txl->kind != BF_YAML_SEQ || txl->count == 0 || txl->count > KERN_MAX_TX)
            return bf_yaml_fail(txl, err,
                                "field 'transmitters': expected a list of 1 to %d transmitters",
                                KERN_MAX_TX);
        for (size_t i = 0; i < txl->count; i++) {
            char what[48];
            snprintf(what, sizeof what, "transmitters[%zu]", i);
            kern_tx_t *t = &s->txs[i];
            snprintf(t->name, sizeof t->name, "tx%zu", i);
            if ((rc = parse_tx(txl->items[i], what, t, err)) != BF_OK)
                return rc;
            for (size_t k = 0; k < i; k++)
                if (!strcmp(s->txs[k].name, t->name))
                    return bf_yaml_fail(txl->items[i], err,
                                        "field '%s.name': the same as transmitters[%zu]'s", what,
                                        k);
        }
        s->tx_count = txl->count;
        bool serves = false;
        for (size_t i = 0; i < s->tx_count; i++)
            serves |= s->txs[i].serves;
        if (!serves)
            return bf_yaml_fail(txl, err,
                                "field 'transmitters': at least one must serve (serves: true)");
    }
    s->tx = s->txs[0];
    const bf_yaml_node_t *zone = bf_yaml_get(root, "zone");
    if (!zone)
        return bf_yaml_fail(root, err, "missing key 'zone'");
    if ((rc = bf_yaml_check_map(zone, "zone", zone_keys, err)) != BF_OK)
        return rc;
    const bf_yaml_node_t *poly = bf_yaml_get(zone, "polygon"), *rect = bf_yaml_get(zone, "rect");
    if (!!poly == !!rect)
        return bf_yaml_fail(zone, err, "zone: give exactly one of 'polygon' or 'rect'");
    if (rect) {
        double r[4];
        if ((rc = bf_yaml_doubles(rect, "zone.rect", 4, r, err)) != BF_OK)
            return rc;
        if (!finite_all(r, 4) || !(r[0] < r[2]) || !(r[1] < r[3]))
            return bf_yaml_fail(rect, err,
                                "zone.rect: expected [xmin, ymin, xmax, ymax] with "
                                "xmin < xmax and ymin < ymax");
        s->zone_xy = malloc(8 * sizeof *s->zone_xy);
        if (!s->zone_xy)
            return BF_ENOMEM;
        double c[8] = {r[0], r[1], r[2], r[1], r[2], r[3], r[0], r[3]};
        memcpy(s->zone_xy, c, sizeof c);
        s->zone_points = 4;
    } else {
        if (poly->kind != BF_YAML_SEQ || poly->count < 3 || poly->count > KERN_MAX_ZONE_POINTS)
            return bf_yaml_fail(poly, err,
                                "zone.polygon: expected a list of 3 to %d [x, y] "
                                "points",
                                KERN_MAX_ZONE_POINTS);
        s->zone_xy = malloc(2 * poly->count * sizeof *s->zone_xy);
        if (!s->zone_xy)
            return BF_ENOMEM;
        for (size_t i = 0; i < poly->count; i++) {
            if ((rc = bf_yaml_doubles(poly->items[i], "zone.polygon point", 2, &s->zone_xy[2 * i],
                                      err)) != BF_OK)
                return rc;
            if (!finite_all(&s->zone_xy[2 * i], 2))
                return bf_yaml_fail(poly->items[i], err,
                                    "zone.polygon: coordinates must be finite");
        }
        s->zone_points = poly->count;
    }
    const bf_yaml_node_t *meas = bf_yaml_get(root, "measurement");
    if (meas) {
        bf_measurement_t *m = &s->measurement;
        if ((rc = bf_yaml_check_map(meas, "measurement", meas_keys, err)) != BF_OK)
            return rc;
        if ((n = bf_yaml_get(meas, "center"))) {
            if ((rc = bf_yaml_doubles(n, "measurement.center", 2, m->center, err)) != BF_OK)
                return rc;
            if (!finite_all(m->center, 2))
                return bf_yaml_fail(n, err, "measurement.center: coordinates must be finite");
            m->has_center = true;
        }
        if ((n = bf_yaml_get(meas, "size"))) {
            if ((rc = bf_yaml_doubles(n, "measurement.size", 2, m->size, err)) != BF_OK)
                return rc;
            if (!(m->size[0] > 0) || !(m->size[1] > 0) || !finite_all(m->size, 2))
                return bf_yaml_fail(n, err, "measurement.size: both sides must be positive");
            m->has_size = true;
        }
        if ((n = bf_yaml_get(meas, "height"))) {
            if ((rc = bf_yaml_double(n, "measurement.height", -1e4, 1e4, &m->height, err)) != BF_OK)
                return rc;
            m->has_height = true;
        }
        if ((n = bf_yaml_get(meas, "cell_size"))) {
            if ((rc = bf_yaml_doubles(n, "measurement.cell_size", 2, m->cell_size, err)) != BF_OK)
                return rc;
            if (!(m->cell_size[0] > 0) || !(m->cell_size[1] > 0) || !finite_all(m->cell_size, 2))
                return bf_yaml_fail(n, err, "measurement.cell_size: both sides must be positive");
            m->has_cell_size = true;
        }
    }
    return BF_OK;
}

/* Finds the scene's XML: scene.xml, else the one *.xml in dir. */
static bf_err_t find_xml(const char *dir, char **out, char *err)
{
    *out = NULL;
    char *preferred = bf_asprintf("%s/scene.xml", dir);
    FILE *f = preferred ? fopen(preferred, "r") : NULL;
    if (f) {
        fclose(f);
        *out = preferred;
        return BF_OK;
    }
    free(preferred);
    DIR *d = opendir(dir);
    if (!d)
        return bf_fail(err, BF_EINVAL, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    char *found = NULL;
    int count = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 4 && !strcmp(e->d_name + l - 4, ".xml") && e->d_name[0] != '.') {
            count++;
            if (!found || strcmp(e->d_name, found) < 0) {
                free(found);
                found = bf_strdup(e->d_name);
            }
        }
    }
    closedir(d);
    if (count == 0) {
        free(found);
        return bf_fail(err, BF_EINVAL, "%s: no scene XML file", dir);
    }
    if (count > 1) {
        free(found);
        return bf_fail(err, BF_EINVAL, "%s: %d XML files and no scene.xml: which is the scene?",
                       dir, count);
    }
    *out = bf_asprintf("%s/%s", dir, found);
    free(found);
    return *out ? BF_OK : BF_ENOMEM;
}

/* The yaml node that holds zone point i, for messages. */
static const bf_yaml_node_t *zone_node(const bf_yaml_node_t *root, size_t i)
{
    const bf_yaml_node_t *zone = bf_yaml_get(root, "zone");
    const bf_yaml_node_t *poly = bf_yaml_get(zone, "polygon");
    if (poly && poly->kind == BF_YAML_SEQ && i < poly->count)
        return poly->items[i];
    const bf_yaml_node_t *rect = bf_yaml_get(zone, "rect");
    return rect ? rect : zone;
}

bf_err_t kern_scene_load(const char *scene_dir, kern_scene_t **scene, char *err)
{
    *scene = NULL;
    char *xml = NULL, *yaml = NULL;
    bf_yaml_node_t *root = NULL;
    kern_scene_t *s = scene_new(scene_dir);
    if (!s)
        return BF_ENOMEM;
    bf_err_t rc = BF_OK;
    yaml = bf_asprintf("%s/scene.yaml", scene_dir);
    if (!yaml) {
        rc = BF_ENOMEM;
        goto done;
    }
    if ((rc = parse_scene_yaml(s, yaml, &root, err)) != BF_OK)
        goto done;
    if ((rc = find_xml(scene_dir, &xml, err)) != BF_OK)
        goto done;
    if ((rc = load_xml_into(s, xml, s->frequency_hz, err)) != BF_OK)
        goto done;
    /* The zone must lie within the scene's footprint (1 m slack); a scene
       without triangles has no footprint to check against. */
    for (size_t i = 0; s->triangle_count > 0 && i < s->zone_points; i++) {
        double x = s->zone_xy[2 * i], y = s->zone_xy[2 * i + 1];
        if (x < s->bbox_min[0] - 1 || x > s->bbox_max[0] + 1 || y < s->bbox_min[1] - 1 ||
            y > s->bbox_max[1] + 1) {
            rc = bf_yaml_fail(zone_node(root, i), err,
                              "zone: point (%g, %g) lies outside the scene (x %g..%g, y %g..%g)", x,
                              y, s->bbox_min[0], s->bbox_max[0], s->bbox_min[1], s->bbox_max[1]);
            goto done;
        }
    }
done:
    bf_yaml_destroy(&root);
    free(xml);
    free(yaml);
    if (rc != BF_OK) {
        kern_scene_destroy(&s);
        return rc == BF_ENOMEM ? rc : BF_EINVAL;
    }
    *scene = s;
    return BF_OK;
}
