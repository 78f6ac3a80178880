/*  kernels/kern_bvh.h - the bounding volume hierarchy the tracer walks: built
    on the host with the surface-area heuristic (binned), stored as flat
    arrays that a device backend can copy as they are. Traversal lives in
    kern_traverse.h, shared by the CPU and CUDA backends. */

#ifndef KERN_BVH_H_INCLUDED
#define KERN_BVH_H_INCLUDED

#include "../common/bf.h"
#include "kern_hd.h"

/* 32 bytes. count > 0: a leaf over triangles [first, first + count) of the
   BVH's triangle order; count == 0: an inner node whose children are nodes
   first and first + 1. Node 0 is the root. */
typedef struct {
    float lo[3];
    uint32_t first;
    float hi[3];
    uint32_t count;
} kern_bvh_node_t;

/* 128 bytes, two cache lines: the same tree collapsed to four children per
   node for the host's SIMD walk (kern_traverse_wide.h). Wide node w stands
   for one inner binary node P; its lanes are up to four binary nodes below
   P, chosen by the SAH-optimal collapse (Ylitie, Karras and Laine 2017;
   kern_bvh.c): every inner binary node is a wide node or opened into the
   lanes of the one above, so that the wide nodes' surface areas sum to the
   least possible (an unused lane is empty: box lo +inf, hi -inf, no ray
   meets it). Every binary leaf is one lane's leaf, so both trees have the
   same leaves.
   box[k][i] is lo (k = 0..2: x, y, z) or hi (k = 3..5) of lane i, copied
   bit for bit from the binary node. count[i] > 0: lane i is a leaf,
   child[i] its kern_bvh_wide_leaf_t of count[i] triangles; count 0:
   child[i] is a wide node (or the lane is empty). Wide node 0 stands for
   the binary root, when that is not a leaf. */
typedef struct {
    float box[6][4];
    uint32_t child[4];
    uint32_t count[4];
} kern_bvh_wide_node_t;

/* 160 bytes: one leaf, triangles [first, first + count) of the BVH order
   (count is the lane's, in the wide node that points here), with (count <=
   4) their 9 coordinates across four lanes for a SIMD triangle test:
   v[j][i] is tris[9 * (first + i) + j], and id[i] the original index of
   triangle i (tri_ids[first + i]), so that a hit needs no other memory;
   lanes from count on are zero and unused. A leaf of more than 4 triangles
   (only where the depth cap forces one) keeps first in id[0], and its
   triangles are read from tris. */
typedef struct {
    float v[9][4];
    uint32_t id[4];
} kern_bvh_wide_leaf_t;

/* 256 bytes, four cache lines: the same tree collapsed to eight children
   per node for the host's AVX2 walk (kern_traverse_wide8.h), built only
   where that walk runs (kern_bvh_simd8). A wide8 node stands for an inner
   binary node P, its lanes up to eight binary nodes below P, chosen by the
   same collapse with eight lanes; box, child and count as in
   kern_bvh_wide_node_t, unused lanes empty. The
   leaves are the four-wide form's (kern_bvh_wide_leaf_t), so again the
   binary tree's. */
typedef struct {
    float box[6][8];
    uint32_t child[8];
    uint32_t count[8];
} kern_bvh_wide8_node_t;

/* Plain pointers, so the same view works over device memory. tris holds 9
   floats per triangle (v0, v1, v2) in BVH order; tri_ids maps BVH order to
   the original triangle index. wide (host memory, wide_count nodes; NULL
   with 0 when the binary root is a leaf, and in a device backend's copy)
   is the host-only four-wide form of nodes, wide_leaves its leaves; wide8
   (host memory, wide8_count nodes; NULL with 0 where the eight-wide walk
   does not run, see kern_bvh_simd8) the eight-wide form over the same
   leaves. The CUDA kernel walks nodes. */
typedef struct {
    const kern_bvh_node_t *nodes;
    const float *tris;
    const uint32_t *tri_ids;
    uint32_t node_count, tri_count;
    const kern_bvh_wide_node_t *wide;
    const kern_bvh_wide_leaf_t *wide_leaves;
    uint32_t wide_count, wide_leaf_count;
    const kern_bvh_wide8_node_t *wide8;
    uint32_t wide8_count;
} kern_bvh_view_t;

typedef struct kern_bvh kern_bvh_t;

/* Builds a BVH over tri_count triangles given as indices into vertices (3 floats per vertex; 3
   indices per triangle, which the caller has checked against its vertex count). Binned SAH over
   KERN_BVH_BINS bins on all three axes; every range of at most KERN_BVH_LEAF triangles is a leaf
   (more only in a leaf forced by the depth cap of 60, which keeps every walk within KERN_STACK).
   O(n log n), single-threaded (threads is accepted for a parallel build later); in host memory each
   sibling pair of nodes fills one 64-byte cache line. The four-wide form (kern_bvh_wide_node_t),
   and where kern_bvh_simd8() the eight-wide one, are collapsed from the binary tree in the same
   call, O(n). Zero triangles give an empty BVH (node_count 0) that every trace misses; degenerate
   (zero-area) triangles are kept and never hit. On success *out owns the BVH; on error *out is
   NULL: BF_ENOMEM, or BF_EINVAL for more than 2^31 triangles or NULL arrays with triangles. */
#define KERN_BVH_LEAF 4
#define KERN_BVH_BINS 32
bf_err_t kern_bvh_new(const float *vertices, const uint32_t *indices, size_t tri_count,
                      unsigned threads, kern_bvh_t **out, char *err) BF_MUST_CHECK;
void kern_bvh_destroy(kern_bvh_t **self);
kern_bvh_view_t kern_bvh_view(const kern_bvh_t *self);
/* Bytes held by the binary tree (nodes + triangles + ids), what a device backend uploads. */
size_t kern_bvh_bytes(const kern_bvh_t *self);
/* Bytes of the host-only four-wide nodes and leaves, and eight-wide nodes where built, on top of
   kern_bvh_bytes. */
size_t kern_bvh_wide_bytes(const kern_bvh_t *self);

/* Whether kern_bvh_new builds the eight-wide form, so that the host walks it with AVX2
   (kern_traverse_wide8.h): 1 when this build can compile the AVX2 walk (gcc or clang on x86-64,
   KERN_WIDE8), the CPU has AVX2 (asked at run time) and the environment variable BF_KERN_SIMD is
   not "sse2"; 0 otherwise, and the host walks the four-wide form with SSE2. All walks return the
   same hits bit for bit; BF_KERN_SIMD=sse2 is there to compare them. */
int kern_bvh_simd8(void);
#if !defined(__CUDACC__) && (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define KERN_WIDE8 1
#endif

#endif
