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

#define EPS0       8.8541878128e-12
#define MAX_XML    (64u << 20)
#define MAX_PLY    (1u << 30)
#define MAX_SHAPES 100000
#define MAX_BSDFS  4096

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

static int type_size(const char *t)
{
    if (!strcmp(t, "char") || !strcmp(t, "uchar") || !strcmp(t, "int8") || !strcmp(t, "uint8"))
        return 1;
    if (!strcmp(t, "short") || !strcmp(t, "ushort") || !strcmp(t, "int16") || !strcmp(t, "uint16"))
        return 2;
    if (!strcmp(t, "int") || !strcmp(t, "uint") || !strcmp(t, "float") || !strcmp(t, "int32") ||
        !strcmp(t, "uint32") || !strcmp(t, "float32"))
        return 4;
    if (!strcmp(t, "double") || !strcmp(t, "float64"))
        return 8;
    return 0;
}

/* Appends the mesh at path (shown as name) to the scene with material mat. */
static bf_err_t load_ply(kern_scene_t *s, const char *path, const char *name, uint16_t mat,
                         char *err)
{
    char *data = NULL;
    size_t len = 0;
    bf_err_t rc = bf_read_file(path, MAX_PLY, &data, &len, err);
    if (rc != BF_OK)
        return rc == BF_ENOENT ? bf_fail(err, BF_EINVAL, "%s: no such mesh file", name) : BF_EINVAL;
    const char *end_hdr = NULL;
    size_t hdr_max = len < 65536 ? len : 65536;
    for (size_t i = 0; i + 10 <= hdr_max; i++)
        if (!memcmp(data + i, "end_header", 10)) {
            end_hdr = data + i;
            break;
        }
    if (len < 4 || memcmp(data, "ply", 3) || !end_hdr) {
        free(data);
        return bf_fail(err, BF_EINVAL, "%s: not a PLY file (no 'ply' ... 'end_header')", name);
    }
    /* Parse the header line by line. */
    size_t nverts = 0, nfaces = 0, vstride = 0;
    int xoff = -1, yoff = -1, zoff = -1, in = 0; /* in: 1 vertex, 2 face, 3 other */
    int list_count = 0, list_index = 0, face_extra = 0;
    bool binary_le = false, after_face_list = false;
    char line[256];
    const char *p = data;
    int lineno = 0;
    while (p < end_hdr) {
        const char *nl = memchr(p, '\n', (size_t)(end_hdr - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end_hdr - p);
        lineno++;
        if (l >= sizeof line)
            l = sizeof line - 1;
        memcpy(line, p, l);
        line[l] = '\0';
        if (l && line[l - 1] == '\r')
            line[l - 1] = '\0';
        p = nl ? nl + 1 : end_hdr;
        char a[64] = "", b[64] = "", c[64] = "", d[64] = "", e[64] = "";
        int n = sscanf(line, "%63s %63s %63s %63s %63s", a, b, c, d, e);
        if (n <= 0 || !strcmp(a, "comment") || !strcmp(a, "obj_info") || !strcmp(a, "ply"))
            continue;
        if (!strcmp(a, "format")) {
            binary_le = !strcmp(b, "binary_little_endian");
            if (!binary_le) {
                free(data);
                return bf_fail(err, BF_EINVAL,
                               "%s:%d: format '%s' not supported (only "
                               "binary_little_endian 1.0)",
                               name, lineno, b);
            }
        } else if (!strcmp(a, "element")) {
            unsigned long long cnt = strtoull(c, NULL, 10);
            if (!strcmp(b, "vertex")) {
                in = 1;
                nverts = (size_t)cnt;
            } else if (!strcmp(b, "face")) {
                in = 2;
                nfaces = (size_t)cnt;
            } else {
                in = 3;
                if (cnt > 0) {
                    free(data);
                    return bf_fail(err, BF_EINVAL, "%s:%d: element '%s' not supported", name,
                                   lineno, b);
                }
            }
        } else if (!strcmp(a, "property")) {
            if (in == 1) {
                int sz = type_size(b);
                if (!strcmp(b, "list") || sz == 0) {
                    free(data);
                    return bf_fail(err, BF_EINVAL, "%s:%d: vertex property '%s' not supported",
                                   name, lineno, line);
                }
                if (!strcmp(c, "x") && sz == 4 && strstr(b, "float"))
                    xoff = (int)vstride;
                else if (!strcmp(c, "y") && sz == 4 && strstr(b, "float"))
                    yoff = (int)vstride;
                else if (!strcmp(c, "z") && sz == 4 && strstr(b, "float"))
                    zoff = (int)vstride;
                vstride += (size_t)sz;
            } else if (in == 2) {
                if (!strcmp(b, "list") && !strcmp(e, "vertex_indices")) {
                    list_count = type_size(c);
                    list_index = type_size(d);
                    after_face_list = true;
                    if (list_count != 1 || list_index != 4) {
                        free(data);
                        return bf_fail(err, BF_EINVAL,
                                       "%s:%d: faces must be 'list uchar int "
                                       "vertex_indices'",
                                       name, lineno);
                    }
                } else if (!after_face_list && type_size(b)) {
                    free(data);
                    return bf_fail(err, BF_EINVAL, "%s:%d: face property '%s' not supported", name,
                                   lineno, c);
                } else {
                    int sz = type_size(b);
                    if (!sz) {
                        free(data);
                        return bf_fail(err, BF_EINVAL, "%s:%d: face property '%s' not supported",
                                       name, lineno, line);
                    }
                    face_extra += sz;
                }
            }
        }
    }
    if (!binary_le || xoff < 0 || yoff < 0 || zoff < 0 || (nfaces && !list_count)) {
        free(data);
        return bf_fail(err, BF_EINVAL,
                       "%s: header lacks binary_little_endian format, float x y z "
                       "or the face list",
                       name);
    }
    const unsigned char *body = (const unsigned char *)end_hdr + 10;
    while ((const char *)body < data + len && *body != '\n')
        body++;
    body++;
    size_t avail = (const unsigned char *)data + len > body
                       ? (size_t)((const unsigned char *)data + len - body)
                       : 0;
    if (nverts > KERN_MAX_TRIANGLES * 3ull || nfaces > KERN_MAX_TRIANGLES ||
        nverts * vstride > avail) {
        free(data);
        return bf_fail(err, BF_EINVAL,
                       "%s: truncated: expected %zu bytes of vertex data, file has "
                       "%zu",
                       name, nverts * vstride, avail);
    }
    size_t face_bytes = nfaces * (1 + 3 * 4 + (size_t)face_extra);
    if (face_bytes > avail - nverts * vstride) {
        free(data);
        return bf_fail(err, BF_EINVAL,
                       "%s: truncated: expected %zu bytes of face data, file has "
                       "%zu",
                       name, face_bytes, avail - nverts * vstride);
    }
    if (s->triangle_count + nfaces > KERN_MAX_TRIANGLES) {
        free(data);
        return bf_fail(err, BF_EINVAL, "%s: the scene exceeds %u triangles", name,
                       KERN_MAX_TRIANGLES);
    }
    float *nv = realloc(s->vertices, (s->vertex_count + nverts) * 3 * sizeof *nv + 1);
    if (nv)
        s->vertices = nv;
    uint32_t *ni = realloc(s->indices, (s->triangle_count + nfaces) * 3 * sizeof *ni + 1);
    if (ni)
        s->indices = ni;
    uint16_t *nm = realloc(s->tri_material, (s->triangle_count + nfaces) * sizeof *nm + 1);
    if (nm)
        s->tri_material = nm;
    if (!nv || !ni || !nm) {
        free(data);
        return bf_fail(err, BF_ENOMEM, "%s: out of memory", name);
    }
    size_t vbase = s->vertex_count;
    for (size_t i = 0; i < nverts; i++) {
        const unsigned char *v = body + i * vstride;
        float xyz[3];
        memcpy(&xyz[0], v + xoff, 4);
        memcpy(&xyz[1], v + yoff, 4);
        memcpy(&xyz[2], v + zoff, 4);
        if (!isfinite(xyz[0]) || !isfinite(xyz[1]) || !isfinite(xyz[2])) {
            free(data);
            return bf_fail(err, BF_EINVAL, "%s: vertex %zu is not finite", name, i);
        }
        memcpy(&s->vertices[3 * (vbase + i)], xyz, sizeof xyz);
    }
    const unsigned char *f = body + nverts * vstride;
    for (size_t i = 0; i < nfaces; i++) {
        if (f[0] != 3) {
            free(data);
            return bf_fail(err, BF_EINVAL,
                           "%s: face %zu has %u vertices, only triangles are "
                           "supported",
                           name, i, f[0]);
        }
        for (int k = 0; k < 3; k++) {
            int32_t ix;
            memcpy(&ix, f + 1 + 4 * k, 4);
            if (ix < 0 || (size_t)ix >= nverts) {
                free(data);
                return bf_fail(err, BF_EINVAL,
                               "%s: face %zu: vertex index %d out of range (%zu "
                               "vertices)",
                               name, i, ix, nverts);
            }
            s->indices[3 * (s->triangle_count + i) + (size_t)k] = (uint32_t)(vbase + (size_t)ix);
        }
        s->tri_material[s->triangle_count + i] = mat;
        f += 1 + 12 + face_extra;
    }
    s->vertex_count += nverts;
    s->triangle_count += nfaces;
    free(data);
    return BF_OK;
}

/* ---- Mitsuba XML ------------------------------------------------------------ */

typedef struct {
    char id[128];
    char itu[32];
    double thickness;
    int line;
    bool radio; /* itu-radio-material */
} bsdf_t;

typedef struct {
    char id[128];
    char filename[512];
    char ref[128];
    int line;
} shape_t;

typedef struct {
    XML_Parser parser;
    const char *file;
    int depth;
    bsdf_t *bsdfs;
    size_t nbsdf;
    shape_t *shapes;
    size_t nshape;
    int in_bsdf, in_shape; /* depth of the open top-level element, 0 when none */
    char err[BF_ERRLEN];
    bool failed;
} xml_t;

static const char *attr(const char **atts, const char *name)
{
    for (int i = 0; atts[i]; i += 2)
        if (!strcmp(atts[i], name))
            return atts[i + 1];
    return NULL;
}

static void xml_fail(xml_t *x, const char *fmt, const char *a, const char *b)
{
    if (x->failed)
        return;
    x->failed = true;
    char what[256];
    snprintf(what, sizeof what, fmt, a ? a : "", b ? b : "");
    snprintf(x->err, sizeof x->err, "%s:%lu: %s", x->file,
             (unsigned long)XML_GetCurrentLineNumber(x->parser), what);
    XML_StopParser(x->parser, XML_FALSE);
}

static void XMLCALL on_start(void *ud, const char *el, const char **atts)
{
    xml_t *x = ud;
    x->depth++;
    int line = (int)XML_GetCurrentLineNumber(x->parser);
    if (x->depth == 1) {
        if (strcmp(el, "scene") != 0)
            xml_fail(x, "root element is <%s>, expected <scene>", el, NULL);
        return;
    }
    if (x->depth == 2) {
        const char *type = attr(atts, "type"), *id = attr(atts, "id");
        if (!strcmp(el, "bsdf")) {
            if (!id)
                return; /* an anonymous bsdf cannot be referenced */
            if (x->nbsdf == MAX_BSDFS)
                return xml_fail(x, "too many bsdf elements", NULL, NULL);
            bsdf_t *b = &x->bsdfs[x->nbsdf++];
            memset(b, 0, sizeof *b);
            bf_strlcpy(b->id, id, sizeof b->id);
            b->line = line;
            b->thickness = 0.1;
            b->radio = type && !strcmp(type, "itu-radio-material");
            if (!b->radio && !strncmp(id, "mat-itu_", 8))
                bf_strlcpy(b->itu, id + 8, sizeof b->itu);
            x->in_bsdf = 2;
        } else if (!strcmp(el, "shape")) {
            if (!type || strcmp(type, "ply") != 0)
                return xml_fail(x, "shape '%s': type '%s' not supported (only ply)", id ? id : "?",
                                type ? type : "");
            if (x->nshape == MAX_SHAPES)
                return xml_fail(x, "more than %s shapes", "100000", NULL);
            shape_t *s = &x->shapes[x->nshape++];
            memset(s, 0, sizeof *s);
            bf_strlcpy(s->id, id ? id : "?", sizeof s->id);
            s->line = line;
            x->in_shape = 2;
        }
        /* sensor, emitter, integrator, film, default and the rest: ignored */
        return;
    }
    const char *name = attr(atts, "name"), *value = attr(atts, "value");
    if (x->in_bsdf && x->depth == 3) {
        bsdf_t *b = &x->bsdfs[x->nbsdf - 1];
        if (b->radio && !strcmp(el, "string") && name && !strcmp(name, "type") && value)
            bf_strlcpy(b->itu, value, sizeof b->itu);
        else if (b->radio && !strcmp(el, "float") && name && !strcmp(name, "thickness") && value) {
            char *end;
            b->thickness = strtod(value, &end);
            if (*end || !(b->thickness >= 0) || !isfinite(b->thickness))
                xml_fail(x, "bsdf '%s': bad thickness '%s'", b->id, value);
        }
    } else if (x->in_shape && x->depth == 3) {
        shape_t *s = &x->shapes[x->nshape - 1];
        if (!strcmp(el, "string") && name && !strcmp(name, "filename") && value)
            bf_strlcpy(s->filename, value, sizeof s->filename);
        else if (!strcmp(el, "ref") && attr(atts, "id") && (!name || !strcmp(name, "bsdf")))
            bf_strlcpy(s->ref, attr(atts, "id"), sizeof s->ref);
        else if (!strcmp(el, "transform"))
            xml_fail(x, "shape '%s': <transform> is not supported", s->id, NULL);
    }
}

static void XMLCALL on_end(void *ud, const char *el)
{
    xml_t *x = ud;
    (void)el;
    if (x->depth == 2) {
        x->in_bsdf = 0;
        x->in_shape = 0;
    }
    x->depth--;
}

/* A relative path inside the scene: no absolute path, no '..' component. */
static bool safe_relative(const char *p)
{
    if (!*p || p[0] == '/')
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

static bf_err_t load_xml_into(kern_scene_t *s, const char *xml_path, double frequency_hz, char *err)
{
    char *text = NULL;
    size_t len = 0;
    const char *base = strrchr(xml_path, '/');
    const char *shown = base ? base + 1 : xml_path;
    bf_err_t rc = bf_read_file(xml_path, MAX_XML, &text, &len, err);
    if (rc != BF_OK)
        return BF_EINVAL;
    xml_t x;
    memset(&x, 0, sizeof x);
    x.file = shown;
    x.bsdfs = calloc(MAX_BSDFS, sizeof *x.bsdfs);
    x.shapes = calloc(MAX_SHAPES, sizeof *x.shapes);
    x.parser = XML_ParserCreate(NULL);
    if (!x.bsdfs || !x.shapes || !x.parser) {
        rc = bf_fail(err, BF_ENOMEM, "%s: out of memory", shown);
        goto done;
    }
    XML_SetUserData(x.parser, &x);
    XML_SetElementHandler(x.parser, on_start, on_end);
    if (XML_Parse(x.parser, text, (int)len, XML_TRUE) == XML_STATUS_ERROR && !x.failed) {
        rc = bf_fail(err, BF_EINVAL, "%s:%lu:%lu: %s", shown,
                     (unsigned long)XML_GetCurrentLineNumber(x.parser),
                     (unsigned long)XML_GetCurrentColumnNumber(x.parser) + 1,
                     XML_ErrorString(XML_GetErrorCode(x.parser)));
        goto done;
    }
    if (x.failed) {
        rc = bf_fail(err, BF_EINVAL, "%s", x.err);
        goto done;
    }
    /* Materials in the order their shapes use them. */
    s->materials = calloc(x.nbsdf ? x.nbsdf : 1, sizeof *s->materials);
    int *mat_of_bsdf = malloc((x.nbsdf ? x.nbsdf : 1) * sizeof *mat_of_bsdf);
    if (!s->materials || !mat_of_bsdf) {
        free(mat_of_bsdf);
        rc = bf_fail(err, BF_ENOMEM, "%s: out of memory", shown);
        goto done;
    }
    for (size_t i = 0; i < x.nbsdf; i++)
        mat_of_bsdf[i] = -1;
    char dir[4096];
    bf_strlcpy(dir, xml_path, sizeof dir);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        bf_strlcpy(dir, ".", sizeof dir);
    for (size_t i = 0; i < x.nshape && rc == BF_OK; i++) {
        shape_t *sh = &x.shapes[i];
        size_t b = 0;
        while (b < x.nbsdf && strcmp(x.bsdfs[b].id, sh->ref) != 0)
            b++;
        if (!sh->filename[0]) {
            rc = bf_fail(err, BF_EINVAL, "%s:%d: shape '%s' has no filename", shown, sh->line,
                         sh->id);
        } else if (!safe_relative(sh->filename)) {
            rc = bf_fail(err, BF_EINVAL,
                         "%s:%d: shape '%s': filename '%s' leaves the scene "
                         "directory",
                         shown, sh->line, sh->id, sh->filename);
        } else if (b == x.nbsdf) {
            rc = bf_fail(err, BF_EINVAL, "%s:%d: shape '%s': unknown material '%s'", shown,
                         sh->line, sh->id, sh->ref[0] ? sh->ref : "(no bsdf ref)");
        } else {
            bsdf_t *bs = &x.bsdfs[b];
            if (mat_of_bsdf[b] < 0) {
                if (!bs->itu[0]) {
                    rc = bf_fail(err, BF_EINVAL,
                                 "%s:%d: bsdf '%s' is not a radio material "
                                 "(itu-radio-material or id mat-itu_<name>)",
                                 shown, bs->line, bs->id);
                    break;
                }
                char why[BF_ERRLEN];
                if (kern_material_eval(bs->itu, frequency_hz, bs->thickness,
                                       &s->materials[s->material_count], why) != BF_OK) {
                    rc = bf_fail(err, BF_EINVAL, "%s:%d: bsdf '%s': %s", shown, bs->line, bs->id,
                                 why);
                    break;
                }
                mat_of_bsdf[b] = (int)s->material_count++;
            }
            char *ply = bf_asprintf("%s/%s", dir, sh->filename);
            if (!ply) {
                rc = BF_ENOMEM;
                break;
            }
            rc = load_ply(s, ply, sh->filename, (uint16_t)mat_of_bsdf[b], err);
            free(ply);
        }
    }
    free(mat_of_bsdf);
    if (rc == BF_OK) {
        for (int k = 0; k < 3; k++) {
            s->bbox_min[k] = s->vertex_count ? INFINITY : 0;
            s->bbox_max[k] = s->vertex_count ? -INFINITY : 0;
        }
        /* The bounding box of the vertices that triangles use. */
        for (size_t i = 0; i < 3 * s->triangle_count; i++)
            for (int k = 0; k < 3; k++) {
                double v = s->vertices[3 * (size_t)s->indices[i] + (size_t)k];
                s->bbox_min[k] = fmin(s->bbox_min[k], v);
                s->bbox_max[k] = fmax(s->bbox_max[k], v);
            }
        if (s->triangle_count == 0)
            for (int k = 0; k < 3; k++)
                s->bbox_min[k] = s->bbox_max[k] = 0;
    }
done:
    if (x.parser)
        XML_ParserFree(x.parser);
    free(x.bsdfs);
    free(x.shapes);
    free(text);
    return rc;
}

bf_err_t kern_scene_load_xml(const char *xml_path, double frequency_hz, kern_scene_t **scene,
                             char *err)
{
    *scene = NULL;
    kern_scene_t *s = calloc(1, sizeof *s);
    if (!s)
        return BF_ENOMEM;
    s->dir = bf_strdup(xml_path);
    s->name = bf_strdup(xml_path);
    s->frequency_hz = frequency_hz;
    s->tx.power_dbm = 44;
    s->tx.pattern = KERN_PATTERN_TR38901;
    bf_err_t rc = load_xml_into(s, xml_path, frequency_hz, err);
    if (rc != BF_OK) {
        kern_scene_destroy(&s);
        return rc;
    }
    *scene = s;
    return BF_OK;
}

/* ---- scene.yaml -------------------------------------------------------------- */

static bf_err_t parse_scene_yaml(kern_scene_t *s, const char *path, bf_yaml_node_t **root_out,
                                 char *err)
{
    bf_yaml_node_t *root = NULL;
    bf_err_t rc = bf_yaml_load(path, &root, err);
    if (rc != BF_OK)
        return BF_EINVAL;
    *root_out = root;
    static const char *const top_keys[] = {"frequency_hz", "transmitter", "zone", "measurement",
                                           NULL};
    static const char *const tx_keys[] = {"position", "power_dbm", "antenna", "orientation", NULL};
    static const char *const ant_keys[] = {"pattern", "polarization", NULL};
    static const char *const or_keys[] = {"azimuth_deg", "tilt_deg", "roll_deg", NULL};
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
    if (!tx)
        return bf_yaml_fail(root, err, "missing key 'transmitter'");
    if ((rc = bf_yaml_check_map(tx, "transmitter", tx_keys, err)) != BF_OK)
        return rc;
    if (!(n = bf_yaml_get(tx, "position")))
        return bf_yaml_fail(tx, err, "missing key 'transmitter.position'");
    if ((rc = bf_yaml_doubles(n, "transmitter.position", 3, s->tx.position, err)) != BF_OK)
        return rc;
    s->tx.power_dbm = 44;
    if ((n = bf_yaml_get(tx, "power_dbm")) &&
        (rc = bf_yaml_double(n, "transmitter.power_dbm", -100, 100, &s->tx.power_dbm, err)) !=
            BF_OK)
        return rc;
    s->tx.pattern = KERN_PATTERN_TR38901;
    s->tx.polarization = KERN_POL_V;
    const bf_yaml_node_t *ant = bf_yaml_get(tx, "antenna");
    if (ant) {
        if ((rc = bf_yaml_check_map(ant, "transmitter.antenna", ant_keys, err)) != BF_OK)
            return rc;
        if ((n = bf_yaml_get(ant, "pattern"))) {
            static const char *const names[] = {"iso", "dipole", "hw_dipole", "tr38901"};
            int found = -1;
            for (int i = 0; i < 4; i++)
                if (n->kind == BF_YAML_SCALAR && !strcmp(n->value, names[i]))
                    found = i;
            if (found < 0)
                return bf_yaml_fail(n, err,
                                    "field 'transmitter.antenna.pattern': expected iso, "
                                    "dipole, hw_dipole or tr38901, got '%s'",
                                    n->kind == BF_YAML_SCALAR ? n->value : "?");
            s->tx.pattern = (kern_pattern_t)found;
        }
        if ((n = bf_yaml_get(ant, "polarization"))) {
            static const char *const names[] = {"V", "H", "cross"};
            int found = -1;
            for (int i = 0; i < 3; i++)
                if (n->kind == BF_YAML_SCALAR && !strcmp(n->value, names[i]))
                    found = i;
            if (found < 0)
                return bf_yaml_fail(n, err,
                                    "field 'transmitter.antenna.polarization': expected "
                                    "V, H or cross, got '%s'",
                                    n->kind == BF_YAML_SCALAR ? n->value : "?");
            s->tx.polarization = (kern_polarization_t)found;
        }
    }
    const bf_yaml_node_t *orient = bf_yaml_get(tx, "orientation");
    if (orient) {
        if ((rc = bf_yaml_check_map(orient, "transmitter.orientation", or_keys, err)) != BF_OK)
            return rc;
        double *dst[3] = {&s->tx.azimuth_deg, &s->tx.tilt_deg, &s->tx.roll_deg};
        for (int i = 0; i < 3; i++)
            if ((n = bf_yaml_get(orient, or_keys[i])) &&
                (rc = bf_yaml_double(n, or_keys[i], -360, 720, dst[i], err)) != BF_OK)
                return rc;
    }
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
        if (!(r[0] < r[2]) || !(r[1] < r[3]))
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
        for (size_t i = 0; i < poly->count; i++)
            if ((rc = bf_yaml_doubles(poly->items[i], "zone.polygon point", 2, &s->zone_xy[2 * i],
                                      err)) != BF_OK)
                return rc;
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
            m->has_center = true;
        }
        if ((n = bf_yaml_get(meas, "size"))) {
            if ((rc = bf_yaml_doubles(n, "measurement.size", 2, m->size, err)) != BF_OK)
                return rc;
            if (!(m->size[0] > 0) || !(m->size[1] > 0))
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
            if (!(m->cell_size[0] > 0) || !(m->cell_size[1] > 0))
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

bf_err_t kern_scene_load(const char *scene_dir, kern_scene_t **scene, char *err)
{
    *scene = NULL;
    kern_scene_t *s = calloc(1, sizeof *s);
    char *xml = NULL, *yaml = NULL;
    bf_yaml_node_t *root = NULL;
    if (!s)
        return BF_ENOMEM;
    s->dir = bf_strdup(scene_dir);
    const char *slash = strrchr(scene_dir, '/');
    while (slash && slash[1] == '\0' && slash > scene_dir) { /* trailing slashes */
        const char *p = slash - 1;
        while (p > scene_dir && *p != '/')
            p--;
        slash = *p == '/' ? p : NULL;
    }
    s->name = bf_strdup(slash ? slash + 1 : scene_dir);
    bf_err_t rc = BF_OK;
    yaml = bf_asprintf("%s/scene.yaml", scene_dir);
    if (!s->dir || !s->name || !yaml) {
        rc = BF_ENOMEM;
        goto done;
    }
    if ((rc = parse_scene_yaml(s, yaml, &root, err)) != BF_OK)
        goto done;
    if ((rc = find_xml(scene_dir, &xml, err)) != BF_OK)
        goto done;
    if ((rc = load_xml_into(s, xml, s->frequency_hz, err)) != BF_OK)
        goto done;
    if (s->triangle_count > 0) {
        for (size_t i = 0; i < s->zone_points; i++) {
            double x = s->zone_xy[2 * i], y = s->zone_xy[2 * i + 1];
            if (x < s->bbox_min[0] - 1 || x > s->bbox_max[0] + 1 || y < s->bbox_min[1] - 1 ||
                y > s->bbox_max[1] + 1) {
                const bf_yaml_node_t *z = bf_yaml_get(root, "zone");
                rc = bf_yaml_fail(z, err,
                                  "zone: point (%g, %g) lies outside the scene (x %g..%g, "
                                  "y %g..%g)",
                                  x, y, s->bbox_min[0], s->bbox_max[0], s->bbox_min[1],
                                  s->bbox_max[1]);
                goto done;
            }
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
