/*  kernels/kern_bvh.c - builds the BVH of kern_bvh.h: top-down, each split
    chosen by the surface-area heuristic over KERN_BVH_BINS bins of triangle
    centroids on each of the three axes, children stored as consecutive pairs,
    every range of at most KERN_BVH_LEAF triangles a leaf. Each level of the tree costs O(n), so the
    build is O(n log n). Depth is capped below the traversal stack of
    kern_traverse.h, so no walk can overflow it. The node array is placed so
    that every sibling pair shares one 64-byte cache line. The host's
    four-wide and eight-wide copies of the tree (kern_bvh_wide_node_t,
    kern_bvh_wide8_node_t) are collapsed from the finished binary one by
    the SAH-optimal collapse, with the same leaves and boxes. */

#include "kern_bvh.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 60   /* < KERN_STACK (64) of kern_traverse.h */
#define COST_TRAV 1.0f /* a box pair test, relative to ... */
#define COST_TRI  1.0f /* ... one triangle test */

struct kern_bvh {
    void *node_mem; /* what was allocated; nodes sits 32 bytes into it */
    kern_bvh_node_t *nodes;
    float *tris;
    uint32_t *tri_ids;
    uint32_t node_count, tri_count;
    kern_bvh_wide_node_t *wide; /* NULL when the root is a leaf */
    kern_bvh_wide_leaf_t *wide_leaves;
    uint32_t wide_count, wide_leaf_count;
    kern_bvh_wide8_node_t *wide8; /* NULL unless kern_bvh_simd8() */
    uint32_t wide8_count;
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

static void box_grow(box_t *b, const box_t *o)
{
    for (int k = 0; k < 3; k++) {
        b->lo[k] = o->lo[k] < b->lo[k] ? o->lo[k] : b->lo[k];
        b->hi[k] = o->hi[k] > b->hi[k] ? o->hi[k] : b->hi[k];
    }
}

static void box_grow_point(box_t *b, const float *p)
{
    for (int k = 0; k < 3; k++) {
        b->lo[k] = p[k] < b->lo[k] ? p[k] : b->lo[k];
        b->hi[k] = p[k] > b->hi[k] ? p[k] : b->hi[k];
    }
}

/* Half the surface area (the factor 2 cancels in every ratio). */
static float box_half_area(const box_t *b)
{
    float dx = b->hi[0] - b->lo[0], dy = b->hi[1] - b->lo[1], dz = b->hi[2] - b->lo[2];
    if (!(dx >= 0.0f && dy >= 0.0f && dz >= 0.0f))
        return 0.0f;
    return dx * dy + dy * dz + dz * dx;
}

/* The bin of centroid coordinate c; NaN and out-of-range values clamp. */
static int bin_of(float c, float lo, float scale)
{
    float f = (c - lo) * scale;
    if (!(f > 0.0f))
        return 0;
    if (f >= (float)(KERN_BVH_BINS - 1))
        return KERN_BVH_BINS - 1;
    return (int)f;
}

typedef struct {
    uint32_t node, first, count, depth;
} work_t;

typedef struct {
    const box_t *tbox; /* per original triangle */
    const float *cent; /* 3 per original triangle */
    uint32_t *order;   /* BVH order -> original triangle */
} build_t;

/* Chooses the best binned SAH split of order[first, first + count); returns
   its cost (in units of the parent's area, COST_TRAV included) and fills
   axis and bin (the last bin that goes left), or returns FLT_MAX when no
   split separates the centroids. */
static float find_split(const build_t *bd, uint32_t first, uint32_t count, const box_t *bounds,
                        const box_t *cb, int *axis_out, int *bin_out, float *scale_out)
{
    float best_cost = FLT_MAX;
    float parent = box_half_area(bounds);
    for (int axis = 0; axis < 3; axis++) {
        float ext = cb->hi[axis] - cb->lo[axis];
        if (!(ext > 0.0f))
            continue;
        float scale = (float)KERN_BVH_BINS / ext;
        box_t bin_box[KERN_BVH_BINS];
        uint32_t bin_count[KERN_BVH_BINS];
        for (int k = 0; k < KERN_BVH_BINS; k++) {
            box_empty(&bin_box[k]);
            bin_count[k] = 0;
        }
        for (uint32_t i = first; i < first + count; i++) {
            uint32_t t = bd->order[i];
            int k = bin_of(bd->cent[3 * (size_t)t + axis], cb->lo[axis], scale);
            bin_count[k]++;
            box_grow(&bin_box[k], &bd->tbox[t]);
        }
        float left_area[KERN_BVH_BINS];
        uint32_t left_count[KERN_BVH_BINS];
        box_t acc;
        box_empty(&acc);
        uint32_t n = 0;
        for (int k = 0; k < KERN_BVH_BINS - 1; k++) {
            box_grow(&acc, &bin_box[k]);
            n += bin_count[k];
            left_area[k] = box_half_area(&acc);
            left_count[k] = n;
        }
        box_empty(&acc);
        n = 0;
        for (int k = KERN_BVH_BINS - 1; k > 0; k--) {
            box_grow(&acc, &bin_box[k]);
            n += bin_count[k];
            if (left_count[k - 1] == 0 || n == 0)
                continue;
            float cost =
                left_area[k - 1] * (float)left_count[k - 1] + box_half_area(&acc) * (float)n;
            cost = parent > 0.0f ? COST_TRAV + COST_TRI * cost / parent
                                 : COST_TRAV + COST_TRI * (float)count;
            if (cost < best_cost) {
                best_cost = cost;
                *axis_out = axis;
                *bin_out = k - 1;
                *scale_out = scale;
            }
        }
    }
    return best_cost;
}

void kern_bvh_destroy(kern_bvh_t **self)
{
    if (!self || !*self)
        return;
    free((*self)->node_mem);
    free((*self)->tris);
    free((*self)->tri_ids);
    free((*self)->wide);
    free((*self)->wide_leaves);
    free((*self)->wide8);
    free(*self);
    *self = NULL;
}

kern_bvh_view_t kern_bvh_view(const kern_bvh_t *self)
{
    kern_bvh_view_t v;
    v.nodes = self->nodes;
    v.tris = self->tris;
    v.tri_ids = self->tri_ids;
    v.node_count = self->node_count;
    v.tri_count = self->tri_count;
    v.wide = self->wide;
    v.wide_count = self->wide_count;
    v.wide_leaves = self->wide_leaves;
    v.wide_leaf_count = self->wide_leaf_count;
    v.wide8 = self->wide8;
    v.wide8_count = self->wide8_count;
    return v;
}

size_t kern_bvh_bytes(const kern_bvh_t *self)
{
    return (size_t)self->node_count * sizeof(kern_bvh_node_t) +
           (size_t)self->tri_count * (9 * sizeof(float) + sizeof(uint32_t));
}

size_t kern_bvh_wide_bytes(const kern_bvh_t *self)
{
    return (size_t)self->wide_count * sizeof(kern_bvh_wide_node_t) +
           (size_t)self->wide_leaf_count * sizeof(kern_bvh_wide_leaf_t) +
           (size_t)self->wide8_count * sizeof(kern_bvh_wide8_node_t);
}

int kern_bvh_simd8(void)
{
#if defined(KERN_WIDE8)
    const char *e = getenv("BF_KERN_SIMD");
    if (e && strcmp(e, "sse2") == 0)
        return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}

/* Lane i of wide node w: binary node n (a leaf, or an inner node that gets
   the wide node *next), or empty for n == UINT32_MAX. */
static void wide_lane(kern_bvh_t *b, kern_bvh_wide_node_t *w, int i, uint32_t n, uint32_t *next,
                      uint32_t *queue, uint32_t *nqueued, uint32_t *leaf_of)
{
    const kern_bvh_node_t *nodes = b->nodes;
    if (n == UINT32_MAX) {
        for (int k = 0; k < 3; k++) {
            w->box[k][i] = INFINITY;
            w->box[3 + k][i] = -INFINITY;
        }
        w->child[i] = 0;
        w->count[i] = 0;
        return;
    }
    for (int k = 0; k < 3; k++) {
        w->box[k][i] = nodes[n].lo[k];
        w->box[3 + k][i] = nodes[n].hi[k];
    }
    if (nodes[n].count > 0) {
        kern_bvh_wide_leaf_t *l = &b->wide_leaves[b->wide_leaf_count];
        memset(l, 0, sizeof *l);
        uint32_t first = nodes[n].first, count = nodes[n].count;
        if (count > 4) {
            l->id[0] = first;
        } else {
            for (uint32_t t = 0; t < count; t++) {
                for (int j = 0; j < 9; j++)
                    l->v[j][t] = b->tris[9 * ((size_t)first + t) + (size_t)j];
                l->id[t] = b->tri_ids[first + t];
            }
        }
        leaf_of[n] = b->wide_leaf_count;
        w->child[i] = b->wide_leaf_count++;
        w->count[i] = nodes[n].count;
    } else {
        w->child[i] = (*next)++;
        w->count[i] = 0;
        queue[(*nqueued)++] = n;
    }
}

static float node_half_area(const kern_bvh_node_t *n)
{
    box_t bx;
    memcpy(bx.lo, n->lo, sizeof bx.lo);
    memcpy(bx.hi, n->hi, sizeof bx.hi);
    return box_half_area(&bx);
}

/* Lane i of wide8 node w: binary node n (a leaf, whose four-wide leaf is
   leaf_of[n], or an inner node that gets the wide8 node *next), or empty
   for n == UINT32_MAX. */
static void wide8_lane(const kern_bvh_t *b, kern_bvh_wide8_node_t *w, int i, uint32_t n,
                       uint32_t *next, uint32_t *queue, uint32_t *nqueued, const uint32_t *leaf_of)
{
    const kern_bvh_node_t *nodes = b->nodes;
    for (int k = 0; k < 3; k++) {
        w->box[k][i] = n == UINT32_MAX ? INFINITY : nodes[n].lo[k];
        w->box[3 + k][i] = n == UINT32_MAX ? -INFINITY : nodes[n].hi[k];
    }
    w->child[i] = 0;
    w->count[i] = 0;
    if (n == UINT32_MAX)
        return;
    if (nodes[n].count > 0) {
        w->child[i] = leaf_of[n];
        w->count[i] = nodes[n].count;
    } else {
        w->child[i] = (*next)++;
        queue[(*nqueued)++] = n;
    }
}

/* The SAH-optimal collapse of Ylitie, Karras and Laine (2017), with the
   binary tree's leaves kept as they are: every inner binary node is either
   a wide node, whose lanes are up to width (4 or 8) binary nodes below it,
   or opened, its two children lanes of the wide node above; the choice
   minimizes the sum of the wide nodes' surface areas (the expected number
   of wide nodes a ray meets; the leaves, and so their tests, are the same
   in every choice). cost[8 * n + i - 1] is the least such sum over the
   subtree of binary node n given as at most i <= width lanes,
   split[8 * n + i - 1] how: 0, n is one lane (a leaf, or a wide node);
   k > 0, k lanes from n's first child and i - k from its second. Children
   are numbered after their parent, so one pass from the last node up
   fills both. Measured on munich against the greedy fill it replaces (the
   inner lane of largest area opened while fewer than width lanes): 2,544
   eight-wide nodes with 5.96 lanes on average instead of 3,773 with 4.35,
   4.12 of them met per ray instead of 4.32, the eight-wide walk about 5 %
   faster, the four-wide one about 1.5 %. */
typedef struct {
    double *cost;
    uint8_t *split;
    int width;
} collapse_dp_t;

static int collapse_dp_new(const kern_bvh_node_t *nodes, uint32_t node_count, int width,
                           collapse_dp_t *dp)
{
    dp->width = width;
    dp->cost = malloc((size_t)node_count * 8 * sizeof *dp->cost);
    dp->split = malloc((size_t)node_count * 8);
    if (!dp->cost || !dp->split)
        return 0;
    for (uint32_t n = node_count; n-- > 0;) {
        double *c = &dp->cost[8 * (size_t)n];
        uint8_t *sp = &dp->split[8 * (size_t)n];
        if (nodes[n].count > 0) {
            for (int i = 0; i < 8; i++) {
                c[i] = 0.0;
                sp[i] = 0;
            }
            continue;
        }
        const double *cl = &dp->cost[8 * (size_t)nodes[n].first];
        const double *cr = cl + 8;
        /* d[j - 1]: the two children as at most j lanes together; it never
           grows with j, as the children's costs do not */
        double d[8];
        int dk[8];
        d[0] = INFINITY;
        dk[0] = 0;
        for (int j = 2; j <= width; j++) {
            d[j - 1] = INFINITY;
            dk[j - 1] = 1;
            for (int k = 1; k < j; k++) {
                double v = cl[k - 1] + cr[j - k - 1];
                if (v < d[j - 1]) {
                    d[j - 1] = v;
                    dk[j - 1] = k;
                }
            }
        }
        c[0] = (double)node_half_area(&nodes[n]) + d[width - 1];
        sp[0] = 0;
        for (int i = 2; i <= width; i++) { /* opened on a tie: fewer wide nodes */
            int open = d[i - 1] <= c[0];
            c[i - 1] = open ? d[i - 1] : c[0];
            sp[i - 1] = open ? (uint8_t)dk[i - 1] : 0;
        }
    }
    return 1;
}

static void collapse_dp_free(collapse_dp_t *dp)
{
    free(dp->cost);
    free(dp->split);
}

/* Appends to lane the at most i lanes that binary node n gives. */
static void collapse_dp_lanes(const kern_bvh_node_t *nodes, const collapse_dp_t *dp, uint32_t n,
                              int i, uint32_t *lane, int *nlanes)
{
    int k = dp->split[8 * (size_t)n + (size_t)i - 1];
    if (k == 0) {
        lane[(*nlanes)++] = n;
        return;
    }
    collapse_dp_lanes(nodes, dp, nodes[n].first, k, lane, nlanes);
    collapse_dp_lanes(nodes, dp, nodes[n].first + 1, i - k, lane, nlanes);
}

/* The lanes of the wide node that stands for inner binary node p: its two
   children as at most width lanes, split as collapse_dp_new found cheapest
   (the same comparisons, so the same split). Returns the number of lanes. */
static int collapse_dp_node(const kern_bvh_node_t *nodes, const collapse_dp_t *dp, uint32_t p,
                            uint32_t *lane)
{
    const double *cl = &dp->cost[8 * (size_t)nodes[p].first], *cr = cl + 8;
    double best = INFINITY;
    int bk = 1, n = 0, width = dp->width;
    for (int k = 1; k < width; k++) {
        double v = cl[k - 1] + cr[width - k - 1];
        if (v < best) {
            best = v;
            bk = k;
        }
    }
    collapse_dp_lanes(nodes, dp, nodes[p].first, bk, lane, &n);
    collapse_dp_lanes(nodes, dp, nodes[p].first + 1, width - bk, lane, &n);
    return n;
}

/* The eight-wide form over the four-wide form's leaves (leaf_of: binary
   leaf -> wide leaf), collapsed by collapse_dp; numbered breadth first as
   the four-wide one below. queue has room for every inner node. */
static int wide8_build(kern_bvh_t *b, uint32_t inner, uint32_t *queue, const uint32_t *leaf_of)
{
    const kern_bvh_node_t *nodes = b->nodes;
    collapse_dp_t dp = {NULL, NULL, 8};
    kern_bvh_wide8_node_t *w8 = aligned_alloc(64, (size_t)inner * sizeof *w8);
    if (!w8 || !collapse_dp_new(nodes, b->node_count, 8, &dp)) {
        free(w8);
        collapse_dp_free(&dp);
        return 0;
    }
    uint32_t next = 1, nqueued = 1;
    queue[0] = 0;
    for (uint32_t k = 0; k < nqueued; k++) {
        /* the wide node of binary node p: its children as at most 8 lanes */
        uint32_t lane[8];
        int n = collapse_dp_node(nodes, &dp, queue[k], lane);
        for (int i = 0; i < 8; i++)
            wide8_lane(b, &w8[k], i, i < n ? lane[i] : UINT32_MAX, &next, queue, &nqueued, leaf_of);
    }
    collapse_dp_free(&dp);
    /* fewer nodes than inner ones: keep what was made */
    b->wide8 = aligned_alloc(64, (size_t)next * sizeof *b->wide8);
    if (b->wide8)
        memcpy(b->wide8, w8, (size_t)next * sizeof *b->wide8);
    free(w8);
    b->wide8_count = b->wide8 ? next : 0;
    return b->wide8 != NULL;
}

/* Collapses the binary tree into b->wide: a wide node stands for an inner
   binary node, its lanes as collapse_dp picks them (width 4), so every
   binary leaf is
   the leaf of one lane, with its box. Wide nodes are numbered in the
   order they are made, breadth first (the children of one node are
   consecutive), which the queue of binary nodes keeps: the node made k-th
   is queue[k]. Then, where kern_bvh_simd8(), the eight-wide form. */
static int wide_build(kern_bvh_t *b)
{
    const kern_bvh_node_t *nodes = b->nodes;
    if (b->node_count == 0 || nodes[0].count > 0)
        return 1;
    uint32_t inner = 0;
    for (uint32_t i = 0; i < b->node_count; i++)
        inner += nodes[i].count == 0;
    b->wide = aligned_alloc(64, (size_t)inner * sizeof *b->wide);
    b->wide_leaves = aligned_alloc(32, (size_t)(b->node_count - inner) * sizeof *b->wide_leaves);
    uint32_t *queue = malloc((size_t)inner * sizeof *queue);
    uint32_t *leaf_of = malloc((size_t)b->node_count * sizeof *leaf_of);
    collapse_dp_t dp = {NULL, NULL, 4};
    if (!b->wide || !b->wide_leaves || !queue || !leaf_of ||
        !collapse_dp_new(nodes, b->node_count, 4, &dp)) {
        collapse_dp_free(&dp);
        free(queue);
        free(leaf_of);
        return 0;
    }
    uint32_t next = 1, nqueued = 1;
    queue[0] = 0;
    for (uint32_t k = 0; k < nqueued; k++) {
        uint32_t lane[4];
        int n = collapse_dp_node(nodes, &dp, queue[k], lane);
        for (int i = 0; i < 4; i++)
            wide_lane(b, &b->wide[k], i, i < n ? lane[i] : UINT32_MAX, &next, queue, &nqueued,
                      leaf_of);
    }
    b->wide_count = next;
    collapse_dp_free(&dp);
    int ok = !kern_bvh_simd8() || wide8_build(b, inner, queue, leaf_of);
    free(queue);
    free(leaf_of);
    return ok;
}

bf_err_t kern_bvh_new(const float *vertices, const uint32_t *indices, size_t tri_count,
                      unsigned threads, kern_bvh_t **out, char *err)
{
    (void)threads;
    *out = NULL;
    if (tri_count > (size_t)INT32_MAX)
        return bf_fail(err, BF_EINVAL, "bvh: %zu triangles is more than supported", tri_count);
    if (tri_count > 0 && (!vertices || !indices))
        return bf_fail(err, BF_EINVAL, "bvh: no vertex or index array for %zu triangles",
                       tri_count);
    size_t n1 = tri_count ? tri_count : 1;
    kern_bvh_t *b = calloc(1, sizeof *b);
    box_t *tbox = malloc(n1 * sizeof *tbox);
    float *cent = malloc(n1 * 3 * sizeof *cent);
    uint32_t *order = malloc(n1 * sizeof *order);
    work_t *stack = malloc((MAX_DEPTH + 4) * sizeof *stack);
    if (b) {
        /* 2n - 1 nodes at most, plus room to shift the array by 32 bytes */
        b->node_mem = aligned_alloc(64, (2 * n1 + 2) * sizeof(kern_bvh_node_t));
        b->tris = malloc(n1 * 9 * sizeof *b->tris);
        b->tri_ids = malloc(n1 * sizeof *b->tri_ids);
    }
    if (!b || !tbox || !cent || !order || !stack || !b->node_mem || !b->tris || !b->tri_ids) {
        free(tbox);
        free(cent);
        free(order);
        free(stack);
        kern_bvh_destroy(&b);
        return bf_fail(err, BF_ENOMEM, "bvh: out of memory for %zu triangles", tri_count);
    }
    /* root at offset 32: the pairs (1, 2), (3, 4), ... each fill one line */
    b->nodes = (kern_bvh_node_t *)b->node_mem + 1;
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
            cent[3 * i + k] = 0.5f * tbox[i].lo[k] + 0.5f * tbox[i].hi[k];
        order[i] = (uint32_t)i;
    }
    build_t bd = {tbox, cent, order};
    b->node_count = 1;
    int sp = 0;
    stack[sp++] = (work_t){0, 0, (uint32_t)tri_count, 0};
    while (sp > 0) {
        work_t w = stack[--sp];
        kern_bvh_node_t *node = &b->nodes[w.node];
        box_t bounds, cb;
        box_empty(&bounds);
        box_empty(&cb);
        for (uint32_t i = w.first; i < w.first + w.count; i++) {
            box_grow(&bounds, &tbox[order[i]]);
            box_grow_point(&cb, &cent[3 * (size_t)order[i]]);
        }
        memcpy(node->lo, bounds.lo, sizeof node->lo);
        memcpy(node->hi, bounds.hi, sizeof node->hi);
        node->first = w.first;
        node->count = w.count;
        /* up to KERN_BVH_LEAF triangles always make a leaf: the host tests
           four at once (kern_traverse_wide.h), so a split of them saves no
           triangle tests there and adds nodes; measured faster than
           letting the SAH split small ranges */
        if (w.count <= KERN_BVH_LEAF || w.depth >= MAX_DEPTH)
            continue;
        int axis = 0, bin = 0;
        float scale = 0.0f;
        float split_cost = find_split(&bd, w.first, w.count, &bounds, &cb, &axis, &bin, &scale);
        uint32_t mid = 0;
        if (split_cost < FLT_MAX) {
            uint32_t i = w.first, j = w.first + w.count;
            while (i < j) {
                if (bin_of(cent[3 * (size_t)order[i] + axis], cb.lo[axis], scale) <= bin) {
                    i++;
                } else {
                    uint32_t t = order[i];
                    order[i] = order[--j];
                    order[j] = t;
                }
            }
            mid = i - w.first;
        }
        if (mid == 0 || mid == w.count) /* all centroids coincide: halve the range */
            mid = w.count / 2;
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
    if (!wide_build(b)) {
        kern_bvh_destroy(&b);
        return bf_fail(err, BF_ENOMEM, "bvh: out of memory for %zu triangles", tri_count);
    }
    *out = b;
    return BF_OK;
}
