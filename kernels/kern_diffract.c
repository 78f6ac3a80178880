/*  kernels/kern_diffract.c - the host side of first-order diffraction
    (kern.h, docs/radio.md "Diffraction"): the edges of a scene that can
    diffract, found once per scene, and per trace the wedges its
    transmitter lights with the samples each one draws. The per-sample
    physics is kern_diffract.h's, walked by kern_bounce.h for both backends.

    Which edges, as Sionna RT 2.x: two faces share an edge when they hold
    its two vertices in opposite orders (Mitsuba's directed-edge links,
    within one mesh: the loader offsets each mesh's indices, so no two
    meshes share a vertex); vertices duplicated at a texture seam do not
    link, and their edge is a free edge. Sionna RT keeps the edges of the
    faces its depth-0 rays hit, seen from outside the wedge; so do we, from
    the bits the first phase of the trace sets (KERN_HIT_*). */

#include "kern.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* An edge inside this close to pi is flat: nothing diffracts there. */
#define FLAT_EPS 0.01

typedef struct {
    uint32_t lo, hi; /* vertex indices, lo < hi */
    uint32_t tri;
    uint8_t fwd; /* the face runs lo -> hi */
    uint8_t k;   /* its edge k (vertex k -> k + 1) */
} dedge_t;

static int dedge_cmp(const void *pa, const void *pb)
{
    const dedge_t *a = pa, *b = pb;
    if (a->lo != b->lo)
        return a->lo < b->lo ? -1 : 1;
    if (a->hi != b->hi)
        return a->hi < b->hi ? -1 : 1;
    if (a->tri != b->tri)
        return a->tri < b->tri ? -1 : 1;
    return a->k < b->k ? -1 : a->k > b->k;
}

static double dot3(const double a[3], const double b[3])
{
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

static void vertex(const kern_scene_t *sc, uint32_t v, double out[3])
{
    for (int i = 0; i < 3; i++)
        out[i] = sc->vertices[3 * (size_t)v + i];
}

static void centroid(const kern_scene_t *sc, uint32_t tri, double out[3])
{
    double p[3];
    out[0] = out[1] = out[2] = 0.0;
    for (int k = 0; k < 3; k++) {
        vertex(sc, sc->indices[3 * (size_t)tri + k], p);
        for (int i = 0; i < 3; i++)
            out[i] += p[i] / 3.0;
    }
}

/* Fills e for the edge p -> q of face a (and face b, or a alone). Returns
   0 for an edge that cannot diffract (degenerate, flat). */
static int edge_make(const kern_scene_t *sc, const float *normals, const double p[3],
                     const double q[3], uint32_t a, uint32_t b, kern_edge_t *e)
{
    double na[3], nb[3], ca[3], cb[3], d[3], len = 0.0;
    for (int i = 0; i < 3; i++) {
        na[i] = normals[3 * (size_t)a + i];
        nb[i] = normals[3 * (size_t)b + i];
        d[i] = q[i] - p[i];
        len += d[i] * d[i];
    }
    if (!(len > 0.0) || dot3(na, na) < 0.5 || dot3(nb, nb) < 0.5)
        return 0; /* a point, or a degenerate face (zero normal) */
    memset(e, 0, sizeof *e);
    /* each face's centroid from the edge's start */
    double ua[3], ub[3];
    centroid(sc, a, ca);
    centroid(sc, b, cb);
    for (int i = 0; i < 3; i++) {
        ua[i] = ca[i] - p[i];
        ub[i] = cb[i] - p[i];
    }
    double nao[3], nbo[3];
    if (a == b) { /* a free edge: both sides are outside */
        for (int i = 0; i < 3; i++) {
            nao[i] = na[i];
            nbo[i] = -na[i];
        }
        e->free_edge = 1;
        e->inside = 0.0f;
    } else {
        /* outward: each normal points away from the other face (the side
           whose angle is at most pi is the inside), Sionna RT's rule */
        double sa = dot3(na, ub) > KERN_DIFF_EPS ? -1.0 : 1.0;
        double sb = dot3(nb, ua) > KERN_DIFF_EPS ? -1.0 : 1.0;
        for (int i = 0; i < 3; i++) {
            nao[i] = sa * na[i];
            nbo[i] = sb * nb[i];
        }
        double c = -dot3(nao, nbo);
        double inside = acos(c < -1.0 ? -1.0 : c > 1.0 ? 1.0 : c);
        if (inside > KERN_PI - FLAT_EPS)
            return 0;
        e->inside = (float)inside;
    }
    /* into each face across the edge: its centroid's offset from the
       edge line */
    double u[3], l = sqrt(len), ta[3], tb[3];
    for (int i = 0; i < 3; i++) {
        u[i] = d[i] / l;
        ta[i] = ua[i];
        tb[i] = ub[i];
    }
    double pa = dot3(ta, u), pb = dot3(tb, u), la = 0.0, lb = 0.0;
    for (int i = 0; i < 3; i++) {
        ta[i] -= pa * u[i];
        tb[i] -= pb * u[i];
        la += ta[i] * ta[i];
        lb += tb[i] * tb[i];
    }
    if (!(la > 0.0) || !(lb > 0.0))
        return 0;
    la = sqrt(la);
    lb = sqrt(lb);
    for (int i = 0; i < 3; i++) {
        e->a[i] = (float)p[i];
        e->b[i] = (float)q[i];
        e->na[i] = (float)nao[i];
        e->nb[i] = (float)nbo[i];
        e->ta[i] = (float)(ta[i] / la);
        e->tb[i] = (float)(tb[i] / lb);
    }
    e->tri_a = a;
    e->tri_b = b;
    return 1;
}

bf_err_t kern_edges_find(const kern_scene_t *sc, const float *normals, kern_edge_t **out,
                         uint32_t *count, uint32_t *tri_edge, uint32_t *tri_nbr, char *err)
{
    *out = NULL;
    *count = 0;
    size_t nt = sc->triangle_count, nd = 3 * nt;
    for (size_t i = 0; i < nd; i++)
        tri_edge[i] = tri_nbr[i] = UINT32_MAX;
    if (nt == 0)
        return BF_OK;
    dedge_t *de = malloc(nd * sizeof *de);
    kern_edge_t *edges = malloc(nd * sizeof *edges); /* at most one per directed edge */
    if (!de || !edges) {
        free(de);
        free(edges);
        return bf_fail(err, BF_ENOMEM, "diffraction edges: out of memory");
    }
    for (size_t t = 0; t < nt; t++)
        for (int k = 0; k < 3; k++) {
            uint32_t v0 = sc->indices[3 * t + k], v1 = sc->indices[3 * t + (k + 1) % 3];
            dedge_t *d = &de[3 * t + k];
            d->lo = v0 < v1 ? v0 : v1;
            d->hi = v0 < v1 ? v1 : v0;
            d->tri = (uint32_t)t;
            d->fwd = v0 < v1;
            d->k = (uint8_t)k;
        }
    qsort(de, nd, sizeof *de, dedge_cmp);
    size_t n = 0;
    for (size_t i = 0; i < nd;) {
        size_t j = i;
        while (j < nd && de[j].lo == de[i].lo && de[j].hi == de[i].hi)
            j++;
        if (de[i].lo != de[i].hi) {
            /* link each directed edge with the first unlinked one of the
               opposite direction (in triangle order); the rest are free */
            uint8_t linked[64] = {0};
            size_t m = j - i < 64 ? j - i : 64;
            for (size_t x = 0; x < m; x++) {
                if (linked[x])
                    continue;
                size_t y = x + 1;
                while (y < m && (linked[y] || de[i + y].fwd == de[i + x].fwd))
                    y++;
                const dedge_t *da = &de[i + x];
                uint32_t v0 = da->fwd ? da->lo : da->hi, v1 = da->fwd ? da->hi : da->lo;
                double p[3], q[3];
                vertex(sc, v0, p);
                vertex(sc, v1, q);
                uint32_t b = da->tri;
                const dedge_t *db = NULL;
                if (y < m) {
                    linked[y] = 1;
                    db = &de[i + y];
                    b = db->tri;
                    tri_nbr[3 * (size_t)da->tri + da->k] = db->tri;
                    tri_nbr[3 * (size_t)db->tri + db->k] = da->tri;
                }
                linked[x] = 1;
                if (edge_make(sc, normals, p, q, da->tri, b, &edges[n])) {
                    tri_edge[3 * (size_t)da->tri + da->k] = (uint32_t)n;
                    if (db)
                        tri_edge[3 * (size_t)db->tri + db->k] = (uint32_t)n;
                    n++;
                }
            }
        }
        i = j;
    }
    free(de);
    if (n == 0) {
        free(edges);
        return BF_OK;
    }
    kern_edge_t *shrunk = realloc(edges, n * sizeof *edges);
    *out = shrunk ? shrunk : edges;
    *count = (uint32_t)n;
    return BF_OK;
}

void kern_dplan_clear(kern_dplan_t *plan)
{
    if (!plan)
        return;
    free(plan->wedges);
    free(plan->cdf);
    free(plan->drawn);
    memset(plan, 0, sizeof *plan);
}

bf_err_t kern_dplan_make(const kern_geom_t *geom, const uint32_t *found,
                         const kern_trace_setup_t *s, kern_dplan_t *plan, char *err)
{
    memset(plan, 0, sizeof *plan);
    if (geom->edge_count == 0 || s->rays == 0)
        return BF_OK;
    plan->wedges = malloc(geom->edge_count * sizeof *plan->wedges);
    if (!plan->wedges)
        return bf_fail(err, BF_ENOMEM, "diffraction: out of memory");
    double tx[3] = {s->tx.x, s->tx.y, s->tx.z};
    uint32_t n = 0;
    for (uint32_t i = 0; i < geom->edge_count; i++) {
        const kern_edge_t *e = &geom->edges[i];
        if (e->free_edge && !s->edge_diffraction)
            continue;
        /* found by a depth-0 ray (kern_wedge_discover) */
        int lit = (found[i / 32] >> (i % 32)) & 1u;
        if (!lit)
            continue;
        double to[3], na[3], nb[3];
        for (int k = 0; k < 3; k++) {
            to[k] = tx[k] - e->a[k];
            na[k] = e->na[k];
            nb[k] = e->nb[k];
        }
        double da = dot3(to, na), db = dot3(to, nb);
        if (!(da > KERN_DIFF_EPS) && !(db > KERN_DIFF_EPS))
            continue; /* the transmitter is inside the wedge */
        /* face 0 is the one the transmitter sees from outside */
        int a0 = da > KERN_DIFF_EPS;
        const float *n0 = a0 ? e->na : e->nb, *nn = a0 ? e->nb : e->na;
        uint32_t tri0 = a0 || e->free_edge ? e->tri_a : e->tri_b;
        const float *tf0 = a0 || e->free_edge ? e->ta : e->tb;
        double d[3], len = 0.0;
        for (int k = 0; k < 3; k++) {
            d[k] = (double)e->b[k] - e->a[k];
            len += d[k] * d[k];
        }
        len = sqrt(len);
        double u[3] = {d[0] / len, d[1] / len, d[2] / len};
        /* orient the edge so that n0 x e points into face 0 */
        double t0[3] = {n0[1] * u[2] - n0[2] * u[1], n0[2] * u[0] - n0[0] * u[2],
                        n0[0] * u[1] - n0[1] * u[0]};
        int flip = t0[0] * tf0[0] + t0[1] * tf0[1] + t0[2] * tf0[2] < 0.0;
        kern_wedge_t *w = &plan->wedges[n++];
        memset(w, 0, sizeof *w);
        for (int k = 0; k < 3; k++) {
            w->o[k] = flip ? e->b[k] : e->a[k];
            w->e[k] = (float)(flip ? -u[k] : u[k]);
            w->n0[k] = n0[k];
            w->nn[k] = nn[k];
        }
        w->length = (float)len;
        w->ext = (float)(2.0 * KERN_PI - e->inside);
        w->tri0 = tri0;
        w->screen = e->free_edge;
    }
    plan->count = n;
    if (n == 0) {
        kern_dplan_clear(plan);
        return BF_OK;
    }
    /* each wedge with probability length / total, and the samples each
       draws (Sionna RT weighs each sample by its wedge's length over the
       number drawn on it) */
    plan->cdf = malloc(n * sizeof *plan->cdf);
    plan->drawn = calloc(n, sizeof *plan->drawn);
    if (!plan->cdf || !plan->drawn) {
        kern_dplan_clear(plan);
        return bf_fail(err, BF_ENOMEM, "diffraction: out of memory");
    }
    double total = 0.0, acc = 0.0;
    for (uint32_t i = 0; i < n; i++)
        total += plan->wedges[i].length;
    for (uint32_t i = 0; i < n; i++) {
        acc += plan->wedges[i].length;
        plan->cdf[i] = (float)(acc / total);
    }
    plan->cdf[n - 1] = 1.0f;
    plan->samples = s->rays;
    for (uint64_t m = 0; m < plan->samples; m++) {
        if ((m & 0xffff) == 0 && bf_flag_up(s->cancel)) {
            kern_dplan_clear(plan);
            return bf_fail(err, BF_ECANCELED, "trace cancelled");
        }
        plan->drawn[kern_diffract_pick(plan->cdf, n,
                                       kern_rand_k(s->seed, m, KERN_DIFF_STREAM, 0))]++;
    }
    return BF_OK;
}