/*  kernels/kern_bvh.c - builds the BVH of kern_bvh.h: top-down, each split
    chosen by the surface-area heuristic over 16 bins of triangle centroids
    on the longest centroid axis, children stored as consecutive pairs, leaves
    of at most KERN_BVH_LEAF triangles (fewer when the heuristic says a leaf
    is cheaper). Depth is capped below the traversal stack of
    kern_traverse.h, so no walk can overflow it. */

#include "kern_bvh.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

#define BINS      16
#define MAX_DEPTH 56 /* < KERN_STACK (64) of kern_traverse.h */

struct kern_bvh {
    kern_bvh_node_t *nodes;
    float *tris;
    uint32_t *tri_ids;
    uint32_t node_count, tri_count;
};

typedef struct {
    float lo[3], hi[3];
} box_t;

static void box_empty(box_t *b)
{
    for (int k = 0; k < 3; k++) {
        b->lo[k] = FLT_MAX;
        b->hi[k] = -FLT_MAX;
    }
}

static void box_grow_point(box_t *b, const float *p)
{
    for (int k = 0; k < 3; k++) {
        b->lo[k] = fminf(b->lo[k], p[k]);
        b->hi[k] = fmaxf(b->hi[k], p[k]);
    }
}

static void box_grow(box_t *b, const box_t *o)
{
    for (int k = 0; k < 3; k++) {
        b->lo[k] = fminf(b->lo[k], o->lo[k]);
        b->hi[k] = fmaxf(b->hi[k], o->hi[k]);
    }
}

static float box_area(const box_t *b)
{
    float dx = b->hi[0] - b->lo[0], dy = b->hi[1] - b->lo[1], dz = b->hi[2] - b->lo[2];
    if (dx < 0 || dy < 0 || dz < 0)
        return 0.0f;
    return 2.0f * (dx * dy + dy * dz + dz * dx);
}

typedef struct {
    uint32_t node, first, count, depth;
} work_t;

void kern_bvh_destroy(kern_bvh_t **self)
{
    if (!self || !*self)
        return;
    free((*self)->nodes);
    free((*self)->tris);
    free((*self)->tri_ids);
    free(*self);
    *self = NULL;
}

kern_bvh_view_t kern_bvh_view(const kern_bvh_t *self)
{
    kern_bvh_view_t v = {self->nodes, self->tris, self->tri_ids, self->node_count, self->tri_count};
    return v;
}

size_t kern_bvh_bytes(const kern_bvh_t *self)
{
    return (size_t)self->node_count * sizeof(kern_bvh_node_t) +
           (size_t)self->tri_count * (9 * sizeof(float) + sizeof(uint32_t));
}

bf_err_t kern_bvh_new(const float *vertices, const uint32_t *indices, size_t tri_count,
                      unsigned threads, kern_bvh_t **out, char *err)
{
    (void)threads;
    *out = NULL;
    if (tri_count > (size_t)INT32_MAX)
        return bf_fail(err, BF_EINVAL, "bvh: %zu triangles is more than supported", tri_count);
    kern_bvh_t *b = calloc(1, sizeof *b);
    box_t *tbox = malloc((tri_count ? tri_count : 1) * sizeof *tbox);
    float *cent = malloc((tri_count ? tri_count : 1) * 3 * sizeof *cent);
    uint32_t *order = malloc((tri_count ? tri_count : 1) * sizeof *order);
    work_t *stack = malloc(2 * (MAX_DEPTH + 2) * sizeof *stack);
    if (b) {
        b->nodes = malloc((2 * (tri_count ? tri_count : 1)) * sizeof *b->nodes);
        b->tris = malloc((tri_count ? tri_count : 1) * 9 * sizeof *b->tris);
        b->tri_ids = malloc((tri_count ? tri_count : 1) * sizeof *b->tri_ids);
    }
    if (!b || !tbox || !cent || !order || !stack || !b->nodes || !b->tris || !b->tri_ids) {
        free(tbox);
        free(cent);
        free(order);
        free(stack);
        kern_bvh_destroy(&b);
        return bf_fail(err, BF_ENOMEM, "bvh: out of memory for %zu triangles", tri_count);
    }
    if (tri_count == 0) {
        free(tbox);
        free(cent);
        free(order);
        free(stack);
        *out = b;
        return BF_OK;
    }
    for (size_t i = 0; i < tri_count; i++) {
        box_empty(&tbox[i]);
        for (int k = 0; k < 3; k++)
            box_grow_point(&tbox[i], &vertices[3 * (size_t)indices[3 * i + k]]);
        for (int k = 0; k < 3; k++)
            cent[3 * i + k] = 0.5f * (tbox[i].lo[k] + tbox[i].hi[k]);
        order[i] = (uint32_t)i;
    }
    b->node_count = 1;
    int sp = 0;
    stack[sp++] = (work_t){0, 0, (uint32_t)tri_count, 0};
    while (sp > 0) {
        work_t w = stack[--sp];
        kern_bvh_node_t *node = &b->nodes[w.node];
        box_t bounds, cbounds;
        box_empty(&bounds);
        box_empty(&cbounds);
        for (uint32_t i = w.first; i < w.first + w.count; i++) {
            box_grow(&bounds, &tbox[order[i]]);
            box_grow_point(&cbounds, &cent[3 * (size_t)order[i]]);
        }
        memcpy(node->lo, bounds.lo, sizeof node->lo);
        memcpy(node->hi, bounds.hi, sizeof node->hi);
        node->first = w.first;
        node->count = w.count;
        if (w.count <= 1 || w.depth >= MAX_DEPTH)
            continue;
        /* the longest axis of the centroids */
        int axis = 0;
        float ext = cbounds.hi[0] - cbounds.lo[0];
        for (int k = 1; k < 3; k++)
            if (cbounds.hi[k] - cbounds.lo[k] > ext) {
                ext = cbounds.hi[k] - cbounds.lo[k];
                axis = k;
            }
        uint32_t mid = 0;
        if (ext > 0.0f) {
            box_t bin_box[BINS];
            uint32_t bin_count[BINS] = {0};
            for (int k = 0; k < BINS; k++)
                box_empty(&bin_box[k]);
            float scale = (float)BINS / ext;
            for (uint32_t i = w.first; i < w.first + w.count; i++) {
                int k = (int)((cent[3 * (size_t)order[i] + axis] - cbounds.lo[axis]) * scale);
                k = k < 0 ? 0 : (k >= BINS ? BINS - 1 : k);
                bin_count[k]++;
                box_grow(&bin_box[k], &tbox[order[i]]);
            }
            /* sweep: cost of splitting after bin k */
            float left_area[BINS];
            uint32_t left_count[BINS];
            box_t acc;
            box_empty(&acc);
            uint32_t n = 0;
            for (int k = 0; k < BINS - 1; k++) {
                box_grow(&acc, &bin_box[k]);
                n += bin_count[k];
                left_area[k] = box_area(&acc);
                left_count[k] = n;
            }
            box_empty(&acc);
            n = 0;
            float best_cost = FLT_MAX;
            int best = -1;
            for (int k = BINS - 1; k > 0; k--) {
                box_grow(&acc, &bin_box[k]);
                n += bin_count[k];
                if (left_count[k - 1] == 0 || n == 0)
                    continue;
                float cost =
                    left_area[k - 1] * (float)left_count[k - 1] + box_area(&acc) * (float)n;
                if (cost < best_cost) {
                    best_cost = cost;
                    best = k - 1;
                }
            }
            /* leaf when splitting does not pay: traversal cost ~ 1 box test
               against count triangle tests */
            float leaf_cost = box_area(&bounds) * (float)w.count;
            if (best >= 0 &&
                (w.count > KERN_BVH_LEAF || best_cost + box_area(&bounds) < leaf_cost)) {
                /* partition order[] by bin */
                uint32_t i = w.first, j = w.first + w.count;
                while (i < j) {
                    int k = (int)((cent[3 * (size_t)order[i] + axis] - cbounds.lo[axis]) * scale);
                    k = k < 0 ? 0 : (k >= BINS ? BINS - 1 : k);
                    if (k <= best) {
                        i++;
                    } else {
                        uint32_t t = order[i];
                        order[i] = order[--j];
                        order[j] = t;
                    }
                }
                mid = i - w.first;
            }
        }
        if (mid == 0 || mid == w.count) {
            if (w.count <= KERN_BVH_LEAF)
                continue;
            mid = w.count / 2; /* all centroids equal: split by position */
        }
        uint32_t left = b->node_count;
        b->node_count += 2;
        node->first = left;
        node->count = 0;
        stack[sp++] = (work_t){left + 1, w.first + mid, w.count - mid, w.depth + 1};
        stack[sp++] = (work_t){left, w.first, mid, w.depth + 1};
    }
    b->tri_count = (uint32_t)tri_count;
    for (size_t i = 0; i < tri_count; i++) {
        uint32_t t = order[i];
        b->tri_ids[i] = t;
        for (int k = 0; k < 3; k++)
            memcpy(&b->tris[9 * i + 3 * k], &vertices[3 * (size_t)indices[3 * (size_t)t + k]],
                   3 * sizeof(float));
    }
    free(tbox);
    free(cent);
    free(order);
    free(stack);
    *out = b;
    return BF_OK;
}
