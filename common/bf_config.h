/*  common/bf_config.h - the job file and the fleet file (DESIGN section 3):
    parsed from YAML with every unknown key and bad value rejected as
    file:line:column, and carried over the network as JSON documents that are
    validated again on arrival (they are untrusted there).

    A bf_job_t is what a worker needs to run any task of the job; the list of
    scenes travels only in SUBMIT. */

#ifndef BF_CONFIG_H_INCLUDED
#define BF_CONFIG_H_INCLUDED

#include "bf.h"
#include <jansson.h>

typedef enum { BF_TASK_BORESIGHT = 0, BF_TASK_EXEC = 1 } bf_task_kind_t;
typedef enum {
    BF_OBJ_MEAN_DBM = 0, /* mean of dBm over zone cells (default) */
    BF_OBJ_P10_DBM,      /* 10th percentile of dBm over zone cells */
    BF_OBJ_MEAN_LINEAR,  /* mean of mW over zone cells, in dBm */
    BF_OBJ_COVERAGE,     /* fraction of zone cells >= coverage_dbm */
    BF_OBJ_MEAN_SINR_DB, /* mean of SINR [dB] over zone cells (solver.noise) */
    BF_OBJ_SINR_COVERAGE /* fraction of zone cells with SINR >= sinr_db */
} bf_objective_t;

typedef struct {
    double p10_min_dbm;             /* [-270] */
    double p10_max_dbm;             /* [-80] */
    double p90_min_dbm;             /* [-130] */
    double min_percentile_range_db; /* [15] */
} bf_validation_t;

/* Where a ray restarts after an interaction (docs/radio.md). */
typedef enum {
    BF_OFFSET_SIONNA = 0, /* Mitsuba's (1 + max|p_i|) * 8.94e-5 m, as Sionna RT (default) */
    BF_OFFSET_TIGHT = 1   /* 1e-4 + 4e-7 max|p_i| m: thin double walls count twice */
} bf_surface_offset_t;

/* The diffraction coefficients (docs/radio.md, "Diffraction"). */
typedef enum {
    BF_DIFFRACTION_SIONNA = 0,  /* Sionna RT 2.x's combination, with R_n = -I on an unlit n-face */
    BF_DIFFRACTION_LUEBBERS = 1 /* Kouyoumjian-Pathak D_s, D_h with Luebbers' reflection factors */
} bf_diffraction_model_t;

typedef struct {
    uint64_t samples_per_tx;  /* [1000000], 1 .. 1e10 */
    unsigned max_depth;       /* [3], 0 .. 32 */
    bool los;                 /* [true] */
    bool specular_reflection; /* [true] */
    bool refraction;          /* [true] */
    bool diffuse_reflection;  /* [false], at materials with a scattering coefficient */
    bool diffraction;         /* [false], first order, at the meshes' wedges */
    bool edge_diffraction;    /* [false], and at their free edges (screens) */
    bf_diffraction_model_t diffraction_model; /* [sionna] */
    uint64_t seed;                            /* [42] */
    double floor_dbm;                         /* [-300] */
    bf_surface_offset_t surface_offset;       /* [sionna] */
    /* solver.noise: thermal noise N = k T B NF (T = 290 K) for SINR */
    bool has_noise_figure, has_bandwidth;
    double noise_figure_db; /* [0] */
    double bandwidth_hz;    /* [1e6] */
} bf_solver_t;

typedef struct {
    bool has_center, has_size, has_height, has_cell_size;
    double center[2];    /* [x, y], default: scene bounding box centre */
    double size[2];      /* [w, h], default: scene bounding box extent */
    double height;       /* [1.5] */
    double cell_size[2]; /* [10, 10] */
} bf_measurement_t;

typedef struct {
    bf_objective_t objective; /* [mean_dbm] */
    double azimuth_deg[2];    /* [0, 360] */
    double tilt_deg[2];       /* [-10, 30] */
    double coverage_dbm;      /* [-100], for objective coverage */
    bool has_sinr_db;
    double sinr_db; /* [0], for objective sinr_coverage */
} bf_optimizer_t;

typedef struct {
    char *name;        /* [job file name without extension] */
    char *scenes_root; /* absolute path of `scenes` */
    char **scenes;     /* sorted scene names (sub-directories), max_scenes applied */
    size_t scene_count;
    char *output; /* absolute path of `output` [./parallel_results] */
    bf_task_kind_t task;
    double timeout_s;      /* [3600] */
    unsigned max_attempts; /* [3], 1 .. 100 */
    bf_validation_t validation;
    bf_solver_t solver;
    bf_measurement_t measurement;
    bf_optimizer_t optimizer;
    char **exec_command; /* NULL-terminated argv, task exec only */
    size_t exec_argc;
    /* sionna_check.command, boresight only: a program that computes the
       same maps in Sionna RT (examples/sionna_task.py), run by the worker
       after the engine on every scene, which reports how the two agree
       (worker/worker_sionna_check.c). NULL-terminated argv, or NULL. */
    char **sionna_check_command;
    size_t sionna_check_argc;
} bf_job_t;

typedef struct {
    char *broker_endpoint;          /* [$BEAMFLEET_BROKER or tcp://127.0.0.1:5555] */
    char *broker_bind;              /* [tcp://127.0.0.1:5555] */
    char *broker_state;             /* [./beamfleet-state] */
    bool insecure;                  /* [false] */
    unsigned retain_s;              /* finished jobs kept in the broker [3600] */
    unsigned heartbeat_interval_ms; /* [1000] */
    unsigned heartbeat_liveness;    /* [3] */
    unsigned prefetch;              /* worker credit [1] */
    char *collector_publish;        /* [tcp://127.0.0.1:5557] */
    char *collector_output_root;    /* NULL: outputs anywhere (collector.h) */
    char **allow_exec;              /* NULL-terminated */
    size_t allow_exec_count;
    char **interpreters; /* worker.interpreters: more than those on PATH; NULL-terminated */
    size_t interpreter_count;
    char *security_keys, *security_identity; /* NULL when security is off */
    char *metrics_listen;                    /* NULL when off */
} bf_fleet_t;

/* Fills job with every default (no name, no scenes). */
void bf_job_defaults(bf_job_t *job);
/* Parses a job file; resolves `scenes` and `output` against the file's
   directory, lists the scene sub-directories (sorted, max_scenes applied) and
   checks that there is at least one. On error job is cleared and err holds
   "file:line:col: ...". */
bf_err_t bf_job_load(const char *path, bf_job_t *job, char *err) BF_MUST_CHECK;
/* Frees what job owns and zeroes it. */
void bf_job_clear(bf_job_t *job);
/* The job as a JSON document (keys as in the job file, plus scenes_root and
   scenes when with_scenes). NULL on allocation failure. */
json_t *bf_job_to_json(const bf_job_t *job, bool with_scenes);
/* Validates a JSON document from the network and fills job (cleared first).
   Scene names must pass bf_safe_name. err names the bad field. */
bf_err_t bf_job_from_json(const json_t *doc, bf_job_t *job, char *err) BF_MUST_CHECK;

/* The content key of task i of job (common/bf_key.c): 32 hex digits of a
   hash over what determines its result (the engine's version for boresight,
   the spec less name, output and limits, every file of the scene). Equal
   keys: the earlier result may stand for this one. */
#define BF_KEY_LEN 32
bf_err_t bf_task_key(const bf_job_t *job, size_t i, char key[BF_KEY_LEN + 1],
                     char *err) BF_MUST_CHECK;
/* The keys of every task of job, keys[i] for task i (keys holds
   job->scene_count), hashed by a few threads at once: a job's scenes are
   many small folders, and hashing them one after the other waits on the
   disk for each. On an error, the message names the first scene (in job
   order) that failed. */
bf_err_t bf_task_keys(const bf_job_t *job, char (*keys)[BF_KEY_LEN + 1], char *err) BF_MUST_CHECK;
/* Whether key is BF_KEY_LEN lowercase hex digits. */
bool bf_task_key_valid(const char *key);

void bf_fleet_defaults(bf_fleet_t *fleet);
/* Parses a fleet file over the defaults already in fleet. */
bf_err_t bf_fleet_load(const char *path, bf_fleet_t *fleet, char *err) BF_MUST_CHECK;
void bf_fleet_clear(bf_fleet_t *fleet);

/* DESIGN section 5, the one rule for every listening socket (the broker's
   ROUTER, the collector's PUB stream, the metrics listener): true when
   endpoint ("tcp://HOST:PORT", "ipc://...", "inproc://..." or a bare
   "HOST:PORT") is loopback: 127.x, localhost, [::1], ipc, inproc. */
bool bf_endpoint_loopback(const char *endpoint);
/* BF_OK when endpoint may be bound: loopback, or CURVE keys (curve), or an
   explicit insecure (--insecure, broker.insecure: true); else BF_EPERM with
   one line in err (may be NULL) naming what ("--publish", "--bind") and the
   endpoint and saying how to allow it. */
bf_err_t bf_bind_allowed(const char *what, const char *endpoint, bool curve, bool insecure,
                         char *err) BF_MUST_CHECK;

/* Name of an objective ("mean_dbm") and back. */
const char *bf_objective_name(bf_objective_t o);
bool bf_objective_parse(const char *name, bf_objective_t *out);
/* Name of a surface offset rule ("sionna", "tight") and back. */
const char *bf_surface_offset_name(bf_surface_offset_t o);
bool bf_surface_offset_parse(const char *name, bf_surface_offset_t *out);
const char *bf_diffraction_model_name(bf_diffraction_model_t m);
bool bf_diffraction_model_parse(const char *name, bf_diffraction_model_t *out);

#endif
