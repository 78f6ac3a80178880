/*  kernels/kern.h - the radio engine's one public header (DESIGN section 6):
    the boresight task that the worker and `beamfleet solve` run
    (kern_boresight), and below it the pieces that tests, benchmarks and the
    backends share: the prepared scene (kern_tracer_t), the backend ops table
    (kern_backend_t: trace once, evaluate many orientations exactly from the
    recorded zone crossings), the orientation search and the conversion of
    crossing sums to dBm. All per-ray physics is in kern_radio.h. */

#ifndef KERN_H_INCLUDED
#define KERN_H_INCLUDED

#include "kern_bvh.h"
#include "kern_diffract.h"
#include "kern_radio.h"
#include "kern_scene.h"

/* ---- the boresight task (called by the worker and the CLI) ------------- */
typedef void (*kern_progress_fn)(void *ud, const char *stage, double fraction);

/* Which backend runs a task. */
typedef enum {
    KERN_BACKEND_AUTO = 0, /* CUDA when a device is usable, else the CPU */
    KERN_BACKEND_CPU,
    KERN_BACKEND_CUDA /* the CUDA backend or nothing (BF_EUNSUPP) */
} kern_backend_kind_t;

/* What the task is asked to do: the job's settings (DESIGN section 3),
   copied in by the caller, and how to run. The engine reads nothing else
   of a job. */
typedef struct kern_boresight_opts {
    bf_solver_t solver;
    bf_measurement_t measurement; /* overridden field by field by scene.yaml's */
    bf_optimizer_t optimizer;
    bf_validation_t validation;
    kern_backend_kind_t backend;
    unsigned threads;          /* CPU threads, 0 = all cores */
    const char *maps_dir;      /* NULL, or a directory for initial.csv and optimized.csv */
    volatile int *cancel;      /* NULL, or set non-zero to cancel (BF_ECANCELED) */
    kern_progress_fn progress; /* NULL, or called on the calling thread */
    void *progress_ud;
} kern_boresight_opts_t;

/* An orientation of the transmitter's boresight. */
typedef struct {
    double azimuth_deg, tilt_deg;
} kern_orient_t;

/* dBm figures over the zone cells. */
typedef struct {
    double mean, median, p10, p90;
} kern_zone_stats_t;

/* Both maps (the whole measurement grid) block-averaged in linear power down
   to at most KERN_THUMB_MAX blocks per axis. Block (bx, by) covers the cells
   [bx*fx, (bx+1)*fx) x [by*fy, (by+1)*fy), fx = ceil(grid nx /
   KERN_THUMB_MAX) and likewise fy, fewer at the far edges; it starts at (x0
   + bx*dx, y0 + by*dy). */
#define KERN_THUMB_MAX 64
typedef struct {
    uint32_t nx, ny;   /* blocks per axis */
    double x0, y0;     /* the grid's corner [m] */
    double dx, dy;     /* block size [m] */
    double *initial;   /* nx*ny dBm, row-major, y increasing; NAN: no ray reached it */
    double *optimized; /* the same at the optimized orientation */
} kern_thumbnails_t;

/* What the task found. Arrays are owned; kern_boresight_result_clear frees
   them. */
typedef struct kern_boresight_result {
    bool valid;       /* the initial zone passed validation */
    char reason[256]; /* the threshold it failed, "" when valid */
    size_t zone_cells;
    double *zone_initial;   /* zone_cells dBm, in zone cell order */
    double *zone_optimized; /* the same at the optimized orientation */
    kern_zone_stats_t initial, optimized;
    kern_orient_t boresight_initial, boresight_optimized;
    double objective;     /* the optimizer's objective at boresight_optimized */
    unsigned on_bound;    /* KERN_BOUND_* of boresight_optimized: the optimum sits on
                             a bound of the optimizer's ranges (kern_on_bound) */
    uint64_t evaluations; /* orientations evaluated, the initial one included */
    struct {
        double load, trace, optimize, maps; /* seconds per stage */
    } timings;
    struct {
        uint64_t rays, seed;     /* as asked */
        unsigned max_depth;      /* as asked */
        uint64_t crossings;      /* plane crossings in the grid at the initial orientation */
        uint64_t zone_crossings; /* of which in the zone, recorded for the search */
        const char *backend;     /* the backend that ran: "cpu", "cuda" (static) */
    } solver;
    kern_thumbnails_t thumbnails;
    /* Every transmitter of the scene (one for the `transmitter:` form);
       boresight_initial/optimized above are the first one's. With several,
       zone_initial/optimized are each cell's serving power (the strongest
       transmitter's) and objective is the joint one. */
    size_t tx_count;
    struct {
        char name[32];
        bool movable, serves;
        kern_orient_t initial, optimized;
        unsigned on_bound; /* KERN_BOUND_* of optimized, 0 for one that stays */
    } txs[KERN_MAX_TX];
    /* SINR [dB] per zone cell, serving / (the others + noise), filled
       (has_sinr) with several transmitters or a SINR objective. */
    bool has_sinr;
    double noise_dbm; /* k T B NF */
    double *zone_sinr_initial, *zone_sinr_optimized;
    kern_zone_stats_t sinr_initial, sinr_optimized;
} kern_boresight_result_t;

/* Runs the boresight task on scene_dir with opts' settings: load, trace,
   optimize, maps, validate. On success *out holds what it found (owned by
   the caller: kern_boresight_result_clear), valid false when the initial
   zone failed validation (reason names the threshold). As in DESIGN 6.5
   the search and both maps are computed whether or not the initial zone
   passes validation (a failed scene still reports what optimizing it would
   give). The optimized orientation replaces the initial one only when its
   objective is higher. On error *out is cleared. Errors: BF_EINVAL (err
   says why) for a bad scene or settings, BF_ECANCELED when *cancel was
   set, BF_EUNSUPP for KERN_BACKEND_CUDA without a usable CUDA backend,
   BF_ECUDA, BF_ENOMEM, BF_EIO (maps). Progress is reported with the stages
   "load", "trace", "optimize", "maps". The wire form of the result is
   worker_boresight_json (worker/worker.h, docs/protocol.md section 13). */
bf_err_t kern_boresight(const char *scene_dir, const kern_boresight_opts_t *opts,
                        kern_boresight_result_t *out, char *err) BF_MUST_CHECK;

/* Frees what a result owns and zeroes it; NULL-safe, idempotent. */
void kern_boresight_result_clear(kern_boresight_result_t *result);

/* ---- the prepared scene --------------------------------------------------- */
typedef struct kern_tracer kern_tracer_t;

/* What a backend traces against. Pointers are host memory owned by the
   kern_tracer_t; a device backend copies them in its ctx_new. */
typedef struct {
    kern_bvh_view_t bvh;          /* node_count 0 when there are no triangles */
    const float *normals;         /* 3 per triangle (original order), unit geometric normals */
    const uint16_t *tri_material; /* per triangle, index into mats */
    const kern_mat_t *mats;
    uint32_t tri_count, mat_count;
    /* Diffraction: the edges that can diffract (host memory: the plan
       reads them between the trace's two phases); per triangle (original
       order) its vertices, and across each of its edges k (vertex k to
       k + 1) the face sharing it and that edge's index in edges
       (UINT32_MAX: none); and the wavenumber 2 pi f / c [rad/m]. */
    const kern_edge_t *edges;
    uint32_t edge_count;
    const float *tri_verts;             /* 9 per triangle */
    const uint32_t *tri_nbr, *tri_edge; /* 3 per triangle */
    float wavenumber;
} kern_geom_t;

/* Builds the BVH, the normals and the materials (at the scene's frequency)
   of scene. The scene must outlive the tracer. BF_EINVAL for a scene without
   a valid frequency, BF_ENOMEM. */
bf_err_t kern_tracer_new(const kern_scene_t *scene, unsigned threads, kern_tracer_t **out,
                         char *err) BF_MUST_CHECK;
void kern_tracer_destroy(kern_tracer_t **self);
const kern_geom_t *kern_tracer_geom(const kern_tracer_t *self);

/* ---- trace settings and outputs ----------------------------------------- */
typedef struct {
    uint64_t rays;                   /* N >= 1 */
    uint32_t max_depth;              /* interactions per ray, 0 = direct only */
    int los, reflection, refraction; /* DESIGN 6.4 switches */
    int surface_offset;              /* KERN_OFFSET_* (kern_radio.h): 0, Sionna's, by default */
    int diffuse_reflection; /* scatter at materials with S > 0 (kern_radio.h); 0 by default */
    /* first-order diffraction (kern_diffract.h, docs/radio.md): 0 by
       default; edge_diffraction adds the free edges of meshes (screens) */
    int diffraction, edge_diffraction;
    int diffraction_model; /* KERN_UTD_* (kern_diffract.h): 0, Sionna's, by default */
    uint64_t seed;
    kern_v3 tx; /* transmitter position */
    kern_antenna_t antenna;
    kern_rot_t rot; /* orientation for the map */
    kern_grid_t grid;
    const int32_t *zone_of_cell; /* nx*ny: zone cell index, or -1; NULL = no zone recording */
    uint32_t zone_cells;
    volatile int *cancel; /* may be NULL */
    /* may be NULL; called on the thread that called trace */
    void (*progress)(void *ud, double fraction);
    void *progress_ud;
} kern_trace_setup_t;

/* ---- diffraction (kern_diffract.c) ---------------------------------------- */
/* The edges of scene's meshes that can diffract (kern_edge_t): every edge
   two faces share by vertex index whose inside angle is below pi (flat
   ones, within 0.01 rad, cannot), and every free edge. Fills *edges
   (malloc'd, NULL when none) and *count, and for each triangle's edge k
   the neighbour across it (tri_nbr) and the edge's index (tri_edge), both
   3 * triangle_count, UINT32_MAX for none. BF_ENOMEM. */
bf_err_t kern_edges_find(const kern_scene_t *scene, const float *normals, kern_edge_t **edges,
                         uint32_t *count, uint32_t *tri_edge, uint32_t *tri_nbr,
                         char *err) BF_MUST_CHECK;

/* What the diffraction pass of one trace samples: the wedges lit by its
   transmitter, each drawn with probability proportional to its length. */
typedef struct {
    kern_wedge_t *wedges;
    float *cdf;      /* count: cumulative share of the total length, the last 1 */
    uint64_t *drawn; /* count: how many of the samples fall on each wedge */
    uint32_t count;
    uint64_t samples;
} kern_dplan_t;

/* The wedges of geom's edges that the trace s diffracts at: an edge a
   depth-0 ray found (found: a bit per edge, kern_wedge_discover), with the
   transmitter outside the wedge, free edges only with s->edge_diffraction;
   then which wedge each of the s->rays samples draws
   (kern_diffract_pick). BF_ENOMEM, BF_ECANCELED. */
bf_err_t kern_dplan_make(const kern_geom_t *geom, const uint32_t *found,
                         const kern_trace_setup_t *s, kern_dplan_t *plan, char *err) BF_MUST_CHECK;
void kern_dplan_clear(kern_dplan_t *plan);

/* One ray that crossed the plane inside the zone: its departure direction and
   how many of the following crossing records belong to it. */
typedef struct {
    float d[3];
    uint32_t count;
} kern_zray_t;
/* One zone crossing: the zone cell and weight * Re(J^H J) (m00, m01, m11). */
typedef struct {
    uint32_t cell;
    float m[3];
} kern_zxing_t;

/* All zone crossings of one trace, in ray order (deterministic). Immutable
   between traces, so a device backend may cache its copy. */
typedef struct {
    kern_zray_t *rays;
    size_t ray_count, ray_cap;
    kern_zxing_t *xings;
    size_t count, cap;
    uint32_t zone_cells;
} kern_zone_data_t;

void kern_zone_data_clear(kern_zone_data_t *zd); /* frees and zeroes */

typedef struct {
    double *map;            /* in: nx*ny doubles; out: sum of |E|^2 Omega/|cos| per cell */
    uint64_t crossings;     /* out: plane crossings inside the grid */
    kern_zone_data_t *zone; /* NULL, or filled (cleared first) when setup.zone_of_cell is set */
} kern_trace_out_t;

/* ---- the backend ops table (STYLE rule 6) -------------------------------- */
/* A device a backend runs on, as the worker announces it. */
typedef struct {
    int index; /* the CUDA runtime's numbering in this process */
    char name[128];
    char uuid[48]; /* GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx */
    uint64_t memory_bytes;
    int cc_major, cc_minor;
    /* "" when a probe launch of every kernel ran on it; otherwise why not,
       one line (an image built for other GPUs, a driver older than the
       toolkit, JIT disabled): the device is listed but must not be used */
    char unusable[224];
} kern_device_t;

typedef struct {
    const char *name; /* "cpu", "cuda" */
    /* A context for one scene: scratch memory, threads, device buffers. */
    bf_err_t (*ctx_new)(const kern_geom_t *geom, unsigned threads, void **ctx, char *err);
    void (*ctx_destroy)(void **ctx);
    /* Shoots setup->rays rays; map sums and zone crossings bit-identical for
       one seed whatever the thread count. BF_ECANCELED, BF_ENOMEM. */
    bf_err_t (*trace)(void *ctx, const kern_trace_setup_t *setup, kern_trace_out_t *out, char *err);
    /* For each of count orientations rots[i], sums[i * zone_cells + c] = sum
       over the zone crossings in zone cell c of f^T M f (f = the antenna's
       field at that crossing's departure direction), i.e. exactly the zone
       part of the map a trace at that orientation gives. */
    bf_err_t (*evaluate)(void *ctx, const kern_zone_data_t *zone, const kern_antenna_t *ant,
                         const kern_rot_t *rots, size_t count, double *sums, volatile int *cancel,
                         char *err);
    /* Fills up to max devices this backend can run on and returns how many;
       NULL for a backend that runs on the host alone (the CPU). */
    int (*devices)(kern_device_t *out, int max);
} kern_backend_t;

/* The CPU backend (pthreads over `threads` cores, 0 = all). Always built. */
const kern_backend_t *kern_backend_cpu(void);

/* The CUDA backend (kern_cuda.cu), or NULL when this build has no CUDA or
   the machine has no usable device. Its calls return BF_ECUDA with CUDA's
   message (file and line) on any CUDA failure, including out of memory. */
const kern_backend_t *kern_backend_cuda(void);

/* The GPUs visible to this process (CUDA's numbering, as
   CUDA_VISIBLE_DEVICES leaves it), from the CUDA backend's devices entry:
   fills up to max and returns how many, 0 in a build without CUDA or on a
   host without a usable device. Initializes CUDA in the calling process: a
   process that forks workers calls it in a short-lived child. */
int kern_devices(kern_device_t *out, int max);

/* The GPU targets embedded in the ELF binary at path (NULL: this process's
   own), read back from its .nv_fatbin section (kern_fatbin.c): for example
   "sm_80 sm_90 compute_90" in out, machine code first, then PTX, each by
   architecture. Returns how many; 0 when the binary has no GPU code, -1
   when it cannot be opened. */
int kern_cuda_targets(const char *path, char *out, size_t n);

/* ---- from sums to dBm, objectives --------------------------------------- */
typedef struct {
    double scale;     /* P_tx [W] * (lambda / 4 pi)^2 / cell area: sum -> watts */
    double floor_dbm; /* for cells without crossing */
} kern_power_t;

double kern_sum_to_dbm(const kern_power_t *pw, double sum);

/* Objective value (larger is better) of zone cell sums for an objective:
   mean_dbm, p10_dbm, mean_linear (dBm of the mean mW), coverage (fraction
   of cells >= coverage_dbm). scratch holds n doubles. */
double kern_objective(const double *sums, size_t n, const kern_power_t *pw, bf_objective_t obj,
                      double coverage_dbm, double *scratch);

/* Thermal noise power [W] of solver.noise: k T B NF, T = 290 K. */
double kern_noise_w(const bf_solver_t *solver);

/* SINR [dB] of a cell: serving / (interference + noise) [W], or
   KERN_SINR_FLOOR_DB where no ray reached it (serving 0). */
#define KERN_SINR_FLOOR_DB (-300.0)
double kern_sinr_db(double serving_w, double interference_w, double noise_w);

/* Objective value (larger is better) of zone cells given in watts: the
   serving (strongest transmitter's) power of each cell and the sum of the
   other transmitters' there. The power objectives read serving (dBm as
   kern_sum_to_dbm with scale 1, floor_dbm where 0); mean_sinr_db and
   sinr_coverage read kern_sinr_db. scratch holds n doubles. */
double kern_objective_w(const double *serving_w, const double *interference_w, size_t n,
                        double floor_dbm, double noise_w, const bf_optimizer_t *op,
                        double *scratch);

/* ---- orientation search (DESIGN 6.5) ------------------------------------- */
typedef struct {
    const kern_backend_t *backend;
    void *ctx;
    const kern_zone_data_t *zone;
    kern_antenna_t antenna;
    double roll_deg;
    kern_power_t power;
    const bf_optimizer_t *optimizer;
    double coarse_az_step, coarse_tilt_step; /* [10, 5] when 0 */
    double final_step;                       /* [0.1] when 0 */
    unsigned starts;                         /* coarse points refined [3] when 0 */
    /* Other transmitters, fixed while this one moves (the joint search):
       per zone cell the strongest one's power and the sum of the rest [W],
       or NULL for a transmitter alone. The objective is then
       kern_objective_w of the cells, power.scale taking this
       transmitter's sums to watts. Also used (with NULL others) for the
       SINR objectives of a transmitter alone. */
    const double *others_max_w, *others_rest_w;
    bool interferes_only; /* this transmitter serves no cell (scene.yaml serves: false) */
    double noise_w;       /* k T B NF [W], for the SINR objectives */
    volatile int *cancel;
    void (*progress)(void *ud, double fraction);
    void *progress_ud;
} kern_search_t;

typedef struct {
    kern_orient_t best;
    double objective;
    uint64_t evaluations;
} kern_search_result_t;

/* Evaluates count orientations with the backend: objective values in obj.
   Adds count to *evaluations when non-NULL. */
bf_err_t kern_evaluate_orients(const kern_search_t *s, const kern_orient_t *o, size_t count,
                               double *obj, uint64_t *evaluations, char *err) BF_MUST_CHECK;

/* Coarse grid over the optimizer's azimuth x tilt ranges (clipped), then a
   pattern search halving its step down to final_step from the best `starts`
   coarse points. Ties keep the earlier candidate (deterministic). */
bf_err_t kern_search(const kern_search_t *s, kern_search_result_t *out, char *err) BF_MUST_CHECK;

/* Which bounds of the optimizer's ranges an orientation sits on: a
   search that stops there has not found an optimum but a limit (the best
   tilt may lie beyond it). Azimuth ranges of a full circle have none. */
enum {
    KERN_BOUND_AZIMUTH_MIN = 1u,
    KERN_BOUND_AZIMUTH_MAX = 2u,
    KERN_BOUND_TILT_MIN = 4u,
    KERN_BOUND_TILT_MAX = 8u
};
unsigned kern_on_bound(const bf_optimizer_t *op, kern_orient_t o);
/* The name of bound bit i (0..3): azimuth_min, azimuth_max, tilt_min, tilt_max. */
const char *kern_bound_name(unsigned i);

/* ---- the joint search over several transmitters --------------------------- */
/* Every transmitter of a scene, each with the zone crossings of its own
   trace; the movable ones are searched, the others stay. */
typedef struct {
    const kern_backend_t *backend;
    void *ctx;
    size_t count;                   /* transmitters, 1 .. KERN_MAX_TX */
    const kern_zone_data_t *zones;  /* count: each one's zone crossings */
    const kern_antenna_t *antennas; /* count */
    const double *roll_deg;         /* count */
    const double *scale;            /* count: sums -> watts (P_tx (lambda/4pi)^2 / area) */
    const bool *movable;            /* count */
    const bool *serves;             /* count, or NULL: all may serve a cell */
    double floor_dbm, noise_w;
    const bf_optimizer_t *optimizer;
    unsigned rounds;                                     /* coordinate rounds at most [6] when 0 */
    double coarse_az_step, coarse_tilt_step, final_step; /* kern_search_t's, 0: its defaults */
    bool one_at_a_time; /* the baseline: each movable one searched alone, as if
                           the others were off, then all evaluated together */
    volatile int *cancel;
    void (*progress)(void *ud, double fraction);
    void *progress_ud;
} kern_joint_t;

typedef struct {
    kern_orient_t best[KERN_MAX_TX];
    double objective; /* the joint objective at best */
    uint64_t evaluations;
    unsigned rounds; /* coordinate rounds run */
} kern_joint_result_t;

/* The zone powers [W] of transmitter i at orientation o into w (zone_cells
   doubles). Adds 1 to *evaluations when non-NULL. */
bf_err_t kern_joint_zone_w(const kern_joint_t *j, size_t i, kern_orient_t o, double *w,
                           uint64_t *evaluations, char *err) BF_MUST_CHECK;

/* The joint objective of the orientations o[0..count) (kern_objective_w
   of the serving and interfering powers per zone cell). */
bf_err_t kern_joint_objective(const kern_joint_t *j, const kern_orient_t *o, double *value,
                              uint64_t *evaluations, char *err) BF_MUST_CHECK;

/* Coordinate search across the movable transmitters, starting at init:
   each round runs kern_search for each movable transmitter in turn with
   the others fixed at their current orientations (exact: the powers of
   every transmitter come from its own crossings), taking its optimum
   when it raises the joint objective; it stops after a round that raised
   nothing, or after `rounds`. The objective never falls below init's.
   Deterministic. */
bf_err_t kern_joint_search(const kern_joint_t *j, const kern_orient_t *init,
                           kern_joint_result_t *out, char *err) BF_MUST_CHECK;

/* ---- small helpers shared with tests and benches -------------------------- */
/* Maps DESIGN's enums to kern_radio.h's. */
kern_antenna_t kern_antenna_from_tx(const kern_tx_t *tx);

/* Grid of a measurement (job's, overridden field by field by the scene's)
   for a scene: center/size default to the bbox x/y. BF_EINVAL when the grid
   is empty or larger than 2^26 cells. */
bf_err_t kern_grid_make(const kern_scene_t *scene, const bf_measurement_t *job_meas, uint64_t rays,
                        kern_grid_t *grid, char *err) BF_MUST_CHECK;

#endif
