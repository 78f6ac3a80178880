/*  common/bf_config.c - the job file and the fleet file (DESIGN section 3).

    Every field lives in ONE table per document (job_fields, fleet_fields):
    its dotted path, type, bounds and where it is stored. The same table
    drives the YAML reader (with file:line:column in every message), the JSON
    reader for documents that arrive over the network (untrusted: every type,
    bound, string size and scene name is checked) and the JSON writer, so the
    three can never disagree about a key or a limit. What the table cannot
    say (resolving paths against the job file, listing the scene directory,
    task/exec consistency) is done once afterwards, for both sources. */

#include "bf_config.h"
#include "bf_yaml.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define STR_MAX    4096     /* bytes in any string value, paths included */
#define SCENES_MAX 10000000 /* scenes in one job */
#define ARGV_MAX   256      /* words in exec.command */
#define ALLOW_MAX  1024     /* entries in worker.allow_exec */
#define MAX_FIELDS 48

/* ---- the field table ---------------------------------------------------- */

typedef enum {
    F_SECTION,   /* a nested mapping / object; children are "<path>.<key>" */
    F_STR,       /* char *, non-empty, at most STR_MAX bytes */
    F_NAME,      /* F_STR that must pass bf_safe_name */
    F_PATH,      /* char *; YAML: relative to the job file's directory; JSON: absolute */
    F_SCENEDIR,  /* YAML `scenes`: directory listed into the scene list */
    F_UINT,      /* unsigned in [umin, umax] */
    F_U64,       /* uint64_t in [umin, umax] */
    F_DOUBLE,    /* double in [min, max] (or (min, max] with GT_MIN) */
    F_BOOL,      /* bool */
    F_TASK,      /* bf_task_kind_t by name */
    F_OBJECTIVE, /* bf_objective_t by name */
    F_OFFSET,    /* bf_surface_offset_t by name */
    F_DMODEL,    /* bf_diffraction_model_t by name */
    F_PAIR,      /* double[2], each in [min, max] (or (min, max]) */
    F_STRV,      /* char ** NULL-terminated, count at aux, [umin, umax] items */
    F_SCENES,    /* F_STRV of safe, distinct scene names */
} ftype_t;

enum {
    IN_YAML = 1u << 0, /* read from YAML */
    IN_JSON = 1u << 1, /* read from and written to JSON */
    IN_BOTH = IN_YAML | IN_JSON,
    GT_MIN = 1u << 2,     /* minimum is exclusive */
    ORDERED = 1u << 3,    /* F_PAIR: first < second */
    REQ_YAML = 1u << 4,   /* required in YAML */
    REQ_JSON = 1u << 5,   /* required in JSON */
    WITH_SCENES = 1u << 6 /* written only by bf_job_to_json(job, true) */
};

#define NO_AUX ((ptrdiff_t)-1)

typedef struct {
    const char *path;
    ftype_t type;
    unsigned flags;
    double min, max;     /* F_DOUBLE, F_PAIR items */
    uint64_t umin, umax; /* F_UINT, F_U64; item counts of F_STRV, F_SCENES */
    size_t off;          /* where the value lives in the target struct */
    ptrdiff_t aux;       /* F_STRV/F_SCENES: size_t count; others: bool "has", or NO_AUX */
} field_t;

/* The job as read: bf_job_t plus what only the YAML file has. */
typedef struct {
    bf_job_t job;
    char *scenes_path; /* `scenes` as written in the file */
    uint64_t max_scenes;
    bool has_max_scenes;
} jobdoc_t;

/* Table rows: a section; a value with no bounds; an integer (F_UINT/F_U64,
   or the item count of F_STRV/F_SCENES) in [lo, hi]; a real (F_DOUBLE,
   F_PAIR) in [lo, hi]. `aux` as in field_t. */
/* clang-format off */
#define SEC(path, in)                          {path, F_SECTION, in, 0, 0, 0, 0, 0, NO_AUX}
#define VAL(path, type, in, off)               {path, type, in, 0, 0, 0, 0, off, NO_AUX}
#define INT(path, type, in, lo, hi, off, aux)  {path, type, in, 0, 0, lo, hi, off, aux}
#define REAL(path, type, in, lo, hi, off, aux) {path, type, in, lo, hi, 0, 0, off, aux}
#define J(m)                                   offsetof(jobdoc_t, m)
#define JM(m)                                  J(job.measurement.m)
#define JV(m)                                  J(job.validation.m)

static const field_t job_fields[] = {
    VAL("name", F_NAME, IN_BOTH | REQ_JSON, J(job.name)),
    VAL("scenes", F_SCENEDIR, IN_YAML | REQ_YAML, J(scenes_path)),
    VAL("scenes_root", F_PATH, IN_JSON, J(job.scenes_root)),
    INT("scenes", F_SCENES, IN_JSON | WITH_SCENES, 1, SCENES_MAX, J(job.scenes),
        J(job.scene_count)),
    INT("max_scenes", F_U64, IN_YAML, 1, SCENES_MAX, J(max_scenes), J(has_max_scenes)),
    VAL("output", F_PATH, IN_BOTH | REQ_JSON, J(job.output)),
    VAL("task", F_TASK, IN_BOTH | REQ_JSON, J(job.task)),
    REAL("timeout_s", F_DOUBLE, IN_BOTH | GT_MIN, 0, 8640000, J(job.timeout_s), NO_AUX),
    INT("max_attempts", F_UINT, IN_BOTH, 1, 100, J(job.max_attempts), NO_AUX),
    SEC("validation", IN_BOTH),
    REAL("validation.p10_min_dbm", F_DOUBLE, IN_BOTH, -500, 500, JV(p10_min_dbm), NO_AUX),
    REAL("validation.p10_max_dbm", F_DOUBLE, IN_BOTH, -500, 500, JV(p10_max_dbm), NO_AUX),
    REAL("validation.p90_min_dbm", F_DOUBLE, IN_BOTH, -500, 500, JV(p90_min_dbm), NO_AUX),
    REAL("validation.min_percentile_range_db", F_DOUBLE, IN_BOTH, 0, 1000,
         J(job.validation.min_percentile_range_db), NO_AUX),
    SEC("solver", IN_BOTH),
    INT("solver.samples_per_tx", F_U64, IN_BOTH, 1, 10000000000ull, J(job.solver.samples_per_tx),
        NO_AUX),
    INT("solver.max_depth", F_UINT, IN_BOTH, 0, 32, J(job.solver.max_depth), NO_AUX),
    VAL("solver.los", F_BOOL, IN_BOTH, J(job.solver.los)),
    VAL("solver.specular_reflection", F_BOOL, IN_BOTH, J(job.solver.specular_reflection)),
    VAL("solver.refraction", F_BOOL, IN_BOTH, J(job.solver.refraction)),
    VAL("solver.diffuse_reflection", F_BOOL, IN_BOTH, J(job.solver.diffuse_reflection)),
    VAL("solver.diffraction", F_BOOL, IN_BOTH, J(job.solver.diffraction)),
    VAL("solver.edge_diffraction", F_BOOL, IN_BOTH, J(job.solver.edge_diffraction)),
    VAL("solver.diffraction_model", F_DMODEL, IN_BOTH, J(job.solver.diffraction_model)),
    INT("solver.seed", F_U64, IN_BOTH, 0, INT64_MAX, J(job.solver.seed), NO_AUX),
    REAL("solver.floor_dbm", F_DOUBLE, IN_BOTH, -1000, 100, J(job.solver.floor_dbm), NO_AUX),
    VAL("solver.surface_offset", F_OFFSET, IN_BOTH, J(job.solver.surface_offset)),
    SEC("solver.noise", IN_BOTH),
    REAL("solver.noise.figure_db", F_DOUBLE, IN_BOTH, 0, 100, J(job.solver.noise_figure_db),
         J(job.solver.has_noise_figure)),
    REAL("solver.noise.bandwidth_hz", F_DOUBLE, IN_BOTH | GT_MIN, 0, 1e12,
         J(job.solver.bandwidth_hz), J(job.solver.has_bandwidth)),
    SEC("measurement", IN_BOTH),
    REAL("measurement.center", F_PAIR, IN_BOTH, -1e9, 1e9, JM(center), JM(has_center)),
    REAL("measurement.size", F_PAIR, IN_BOTH | GT_MIN, 0, 1e9, JM(size), JM(has_size)),
    REAL("measurement.height", F_DOUBLE, IN_BOTH, -1e6, 1e6, JM(height), JM(has_height)),
    REAL("measurement.cell_size", F_PAIR, IN_BOTH | GT_MIN, 0, 1e6, JM(cell_size),
         JM(has_cell_size)),
    SEC("optimizer", IN_BOTH),
    VAL("optimizer.objective", F_OBJECTIVE, IN_BOTH, J(job.optimizer.objective)),
    REAL("optimizer.azimuth_deg", F_PAIR, IN_BOTH | ORDERED, -360, 720,
         J(job.optimizer.azimuth_deg), NO_AUX),
    REAL("optimizer.tilt_deg", F_PAIR, IN_BOTH | ORDERED, -90, 90, J(job.optimizer.tilt_deg),
         NO_AUX),
    REAL("optimizer.coverage_dbm", F_DOUBLE, IN_BOTH, -500, 500, J(job.optimizer.coverage_dbm),
         NO_AUX),
    REAL("optimizer.sinr_db", F_DOUBLE, IN_BOTH, -300, 300, J(job.optimizer.sinr_db),
         J(job.optimizer.has_sinr_db)),
    SEC("exec", IN_BOTH),
    INT("exec.command", F_STRV, IN_BOTH, 1, ARGV_MAX, J(job.exec_command), J(job.exec_argc)),
    SEC("sionna_check", IN_BOTH),
    INT("sionna_check.command", F_STRV, IN_BOTH, 1, ARGV_MAX, J(job.sionna_check_command),
        J(job.sionna_check_argc)),
};

#define FL(m) offsetof(bf_fleet_t, m)
static const field_t fleet_fields[] = {
    SEC("broker", IN_YAML),
    VAL("broker.endpoint", F_STR, IN_YAML, FL(broker_endpoint)),
    VAL("broker.bind", F_STR, IN_YAML, FL(broker_bind)),
    VAL("broker.state", F_STR, IN_YAML, FL(broker_state)),
    VAL("broker.insecure", F_BOOL, IN_YAML, FL(insecure)),
    INT("broker.retain_s", F_UINT, IN_YAML, 1, 365u * 86400, FL(retain_s), NO_AUX),
    SEC("heartbeat", IN_YAML),
    INT("heartbeat.interval_ms", F_UINT, IN_YAML, 50, 60000, FL(heartbeat_interval_ms), NO_AUX),
    INT("heartbeat.liveness", F_UINT, IN_YAML, 1, 100, FL(heartbeat_liveness), NO_AUX),
    SEC("collector", IN_YAML),
    VAL("collector.publish", F_STR, IN_YAML, FL(collector_publish)),
    VAL("collector.output_root", F_STR, IN_YAML, FL(collector_output_root)),
    SEC("worker", IN_YAML),
    INT("worker.allow_exec", F_STRV, IN_YAML, 0, ALLOW_MAX, FL(allow_exec), FL(allow_exec_count)),
    INT("worker.interpreters", F_STRV, IN_YAML, 0, ALLOW_MAX, FL(interpreters), FL(interpreter_count)),
    INT("worker.prefetch", F_UINT, IN_YAML, 1, 1024, FL(prefetch), NO_AUX),
    SEC("security", IN_YAML),
    VAL("security.keys", F_STR, IN_YAML, FL(security_keys)),
    VAL("security.identity", F_STR, IN_YAML, FL(security_identity)),
    SEC("metrics", IN_YAML),
    VAL("metrics.listen", F_STR, IN_YAML, FL(metrics_listen)),
};
/* clang-format on */

_Static_assert(BF_ARRAY_LEN(job_fields) <= MAX_FIELDS, "raise MAX_FIELDS");
_Static_assert(BF_ARRAY_LEN(fleet_fields) <= MAX_FIELDS, "raise MAX_FIELDS");

/* ---- reading state shared by the YAML and JSON readers ------------------ */

typedef struct {
    const field_t *fields;
    size_t nfields;
    void *base;       /* jobdoc_t or bf_fleet_t */
    const char *what; /* "job" / "fleet" for messages */
    unsigned mode;    /* IN_YAML or IN_JSON */
    const bf_yaml_node_t *root;
    bool seen[MAX_FIELDS];
    const bf_yaml_node_t *where[MAX_FIELDS]; /* YAML: the value node of each seen field */
    char *err;
} reader_t;

#define AT(r, f, T) ((T *)((char *)(r)->base + (f)->off))

static const char *leaf(const char *path)
{
    const char *dot = strrchr(path, '.');
    return dot ? dot + 1 : path;
}

/* True if field f is a direct child of section prefix ("" for the top). */
static bool child_of(const field_t *f, const char *prefix)
{
    size_t n = strlen(prefix);
    if (n == 0)
        return !strchr(f->path, '.');
    return !strncmp(f->path, prefix, n) && f->path[n] == '.' && !strchr(f->path + n + 1, '.');
}

static int find_field(const reader_t *r, const char *prefix, const char *key)
{
    for (size_t i = 0; i < r->nfields; i++) {
        const field_t *f = &r->fields[i];
        if ((f->flags & r->mode) && child_of(f, prefix) && !strcmp(leaf(f->path), key))
            return (int)i;
    }
    return -1;
}

/* "a, b, c": the keys allowed in section prefix, for messages. */
static void allowed_list(const reader_t *r, const char *prefix, const char **out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nfields && n + 1 < cap; i++) {
        const field_t *f = &r->fields[i];
        if ((f->flags & r->mode) && child_of(f, prefix))
            out[n++] = leaf(f->path);
    }
    out[n] = NULL;
}

/* "file:line:col: field 'path': ..." in YAML, "field 'path': ..." in JSON;
   node may be NULL (then the document's root stands for the position). */
static bf_err_t field_fail(reader_t *r, const bf_yaml_node_t *node, const char *path,
                           const char *fmt, ...) BF_PRINTF(4, 5);
static bf_err_t field_fail(reader_t *r, const bf_yaml_node_t *node, const char *path,
                           const char *fmt, ...)
{
    char what[BF_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (r->mode == IN_YAML)
        return bf_yaml_fail(node ? node : r->root, r->err, "field '%s': %s", path, what);
    return bf_fail(r->err, BF_EINVAL, "field '%s': %s", path, what);
}

static void free_strv(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void set_has(reader_t *r, const field_t *f)
{
    if (f->aux != NO_AUX && f->type != F_STRV && f->type != F_SCENES)
        *(bool *)((char *)r->base + f->aux) = true;
}

static void store_str(reader_t *r, const field_t *f, char *s)
{
    char **slot = AT(r, f, char *);
    free(*slot);
    *slot = s;
}

static void store_strv(reader_t *r, const field_t *f, char **v, size_t n)
{
    char ***slot = AT(r, f, char **);
    size_t *count = (size_t *)((char *)r->base + f->aux);
    free_strv(*slot, *count);
    *slot = v;
    *count = n;
}

static void range_words(char *out, size_t n, const char *noun, double min, double max, bool gt)
{
    snprintf(out, n, "%s in %c%.15g, %.15g]", noun, gt ? '(' : '[', min, max);
}

static bool task_parse(const char *s, bf_task_kind_t *out)
{
    if (!strcmp(s, "boresight"))
        *out = BF_TASK_BORESIGHT;
    else if (!strcmp(s, "exec"))
        *out = BF_TASK_EXEC;
    else
        return false;
    return true;
}

static const char *task_name(bf_task_kind_t t)
{
    return t == BF_TASK_EXEC ? "exec" : "boresight";
}

/* The index of name in names[0 .. n), or -1: the enums read by name. */
static int name_index(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; name && i < n; i++)
        if (!strcmp(name, names[i]))
            return (int)i;
    return -1;
}

static const char *const objective_names[] = {"mean_dbm", "p10_dbm",      "mean_linear",
                                              "coverage", "mean_sinr_db", "sinr_coverage"};

const char *bf_objective_name(bf_objective_t o)
{
    return (unsigned)o < BF_ARRAY_LEN(objective_names) ? objective_names[o] : "mean_dbm";
}

bool bf_objective_parse(const char *name, bf_objective_t *out)
{
    int i = name_index(objective_names, BF_ARRAY_LEN(objective_names), name);
    if (i >= 0)
        *out = (bf_objective_t)i;
    return i >= 0;
}

static const char *const offset_names[] = {"sionna", "tight"};

const char *bf_surface_offset_name(bf_surface_offset_t o)
{
    return (unsigned)o < BF_ARRAY_LEN(offset_names) ? offset_names[o] : "sionna";
}

bool bf_surface_offset_parse(const char *name, bf_surface_offset_t *out)
{
    int i = name_index(offset_names, BF_ARRAY_LEN(offset_names), name);
    if (i >= 0)
        *out = (bf_surface_offset_t)i;
    return i >= 0;
}

static const char *const dmodel_names[] = {"sionna", "luebbers"};

const char *bf_diffraction_model_name(bf_diffraction_model_t m)
{
    return (unsigned)m < BF_ARRAY_LEN(dmodel_names) ? dmodel_names[m] : "sionna";
}

bool bf_diffraction_model_parse(const char *name, bf_diffraction_model_t *out)
{
    int i = name_index(dmodel_names, BF_ARRAY_LEN(dmodel_names), name);
    if (i >= 0)
        *out = (bf_diffraction_model_t)i;
    return i >= 0;
}

/* Checks a string read from either source against the field's rules. */
static bf_err_t check_str(reader_t *r, const field_t *f, const bf_yaml_node_t *node,
                          const char *path, const char *s)
{
    size_t len = strlen(s);
    if (len == 0)
        return field_fail(r, node, path, "expected a non-empty string");
    if (len > STR_MAX)
        return field_fail(r, node, path, "string longer than %d bytes", STR_MAX);
    if (f->type == F_NAME && !bf_safe_name(s))
        return field_fail(r, node, path,
                          "'%.64s' is not a usable name (one path component, no '/', "
                          "control characters, '.' or '..')",
                          s);
    if (f->type == F_SCENES && !bf_safe_name(s))
        return field_fail(r, node, path, "unsafe scene name '%.64s'", s);
    if (f->type == F_PATH && r->mode == IN_JSON && s[0] != '/')
        return field_fail(r, node, path, "expected an absolute path, got '%.64s'", s);
    if (f->type == F_TASK) {
        bf_task_kind_t t;
        if (!task_parse(s, &t))
            return field_fail(r, node, path, "expected one of boresight|exec, got '%.64s'", s);
        *AT(r, f, bf_task_kind_t) = t;
    }
    if (f->type == F_OBJECTIVE) {
        bf_objective_t o;
        if (!bf_objective_parse(s, &o))
            return field_fail(r, node, path,
                              "expected one of mean_dbm|p10_dbm|mean_linear|coverage|mean_sinr_db|"
                              "sinr_coverage, got '%.64s'",
                              s);
        *AT(r, f, bf_objective_t) = o;
    }
    if (f->type == F_OFFSET) {
        bf_surface_offset_t o;
        if (!bf_surface_offset_parse(s, &o))
            return field_fail(r, node, path, "expected one of sionna|tight, got '%.64s'", s);
        *AT(r, f, bf_surface_offset_t) = o;
    }
    if (f->type == F_DMODEL) {
        bf_diffraction_model_t m;
        if (!bf_diffraction_model_parse(s, &m))
            return field_fail(r, node, path, "expected one of sionna|luebbers, got '%.64s'", s);
        *AT(r, f, bf_diffraction_model_t) = m;
    }
    return BF_OK;
}

static bool is_string_type(ftype_t t)
{
    return t == F_STR || t == F_NAME || t == F_PATH || t == F_SCENEDIR;
}

/* ---- YAML reader -------------------------------------------------------- */

/* A number within the field's bounds; bf_yaml_double knows only inclusive
   bounds, so an exclusive minimum is checked (and worded) here. */
static bf_err_t yaml_number(reader_t *r, const field_t *f, const bf_yaml_node_t *n,
                            const char *path, double *out)
{
    double v = 0;
    bf_err_t rc = bf_yaml_double(n, path, f->min, f->max, &v, r->err);
    if (!(f->flags & GT_MIN) || rc == BF_ENOMEM || (rc == BF_OK && v > f->min)) {
        if (rc == BF_OK)
            *out = v;
        return rc;
    }
    char words[128];
    range_words(words, sizeof words, "a number", f->min, f->max, true);
    if (n && n->kind == BF_YAML_SCALAR)
        return bf_yaml_fail(n, r->err, "field '%s': expected %s, got '%.64s'", path, words,
                            n->value);
    return field_fail(r, n, path, "expected %s, got %s", words,
                      !n                       ? "nothing"
                      : n->kind == BF_YAML_MAP ? "a mapping"
                                               : "a list");
}

static bf_err_t yaml_pair(reader_t *r, const field_t *f, const bf_yaml_node_t *n)
{
    double v[2];
    bf_err_t rc = bf_yaml_doubles(n, f->path, 2, v, r->err);
    if (rc != BF_OK)
        return rc;
    for (size_t i = 0; i < 2; i++) {
        char item[128];
        snprintf(item, sizeof item, "%s[%zu]", f->path, i);
        if ((rc = yaml_number(r, f, n->items[i], item, &v[i])) != BF_OK)
            return rc;
    }
    if ((f->flags & ORDERED) && !(v[0] < v[1]))
        return bf_yaml_fail(n, r->err,
                            "field '%s': expected [low, high] with low < high, got [%s, %s]",
                            f->path, n->items[0]->value, n->items[1]->value);
    memcpy(AT(r, f, double), v, sizeof v);
    return BF_OK;
}

static bf_err_t yaml_strv(reader_t *r, const field_t *f, const bf_yaml_node_t *n)
{
    if (n->kind != BF_YAML_SEQ)
        return bf_yaml_fail(n, r->err, "field '%s': expected a list of strings, got %s", f->path,
                            n->kind == BF_YAML_MAP ? "a mapping" : "a scalar");
    if (n->count < f->umin || n->count > f->umax)
        return bf_yaml_fail(n, r->err, "field '%s': expected %llu to %llu strings, got %zu",
                            f->path, (unsigned long long)f->umin, (unsigned long long)f->umax,
                            n->count);
    char **v = calloc(n->count + 1, sizeof *v);
    if (!v)
        return BF_ENOMEM;
    for (size_t i = 0; i < n->count; i++) {
        char item[128];
        snprintf(item, sizeof item, "%s[%zu]", f->path, i);
        bf_err_t rc = bf_yaml_str(n->items[i], item, &v[i], r->err);
        if (rc == BF_OK)
            rc = check_str(r, f, n->items[i], item, v[i]);
        if (rc != BF_OK) {
            free_strv(v, n->count);
            return rc;
        }
    }
    store_strv(r, f, v, n->count);
    return BF_OK;
}

static bf_err_t yaml_value(reader_t *r, const field_t *f, const bf_yaml_node_t *n)
{
    bf_err_t rc = BF_OK;
    switch (f->type) {
    case F_STR:
    case F_NAME:
    case F_PATH:
    case F_SCENEDIR:
    case F_TASK:
    case F_OBJECTIVE:
    case F_OFFSET:
    case F_DMODEL: {
        char *s = NULL;
        if ((rc = bf_yaml_str(n, f->path, &s, r->err)) != BF_OK)
            return rc;
        if ((rc = check_str(r, f, n, f->path, s)) != BF_OK || !is_string_type(f->type)) {
            free(s);
            return rc;
        }
        store_str(r, f, s);
        return BF_OK;
    }
    case F_UINT:
    case F_U64: {
        uint64_t v = 0;
        if ((rc = bf_yaml_uint(n, f->path, f->umin, f->umax, &v, r->err)) != BF_OK)
            return rc;
        if (f->type == F_UINT)
            *AT(r, f, unsigned) = (unsigned)v;
        else
            *AT(r, f, uint64_t) = v;
        return BF_OK;
    }
    case F_DOUBLE:
        return yaml_number(r, f, n, f->path, AT(r, f, double));
    case F_BOOL:
        return bf_yaml_bool(n, f->path, AT(r, f, bool), r->err);
    case F_PAIR:
        return yaml_pair(r, f, n);
    case F_STRV:
    case F_SCENES:
        return yaml_strv(r, f, n);
    case F_SECTION:
        break;
    }
    return BF_OK;
}

static bf_err_t yaml_section(reader_t *r, const bf_yaml_node_t *map, const char *prefix)
{
    const char *allowed[MAX_FIELDS + 1];
    allowed_list(r, prefix, allowed, BF_ARRAY_LEN(allowed));
    bf_err_t rc = bf_yaml_check_map(map, *prefix ? prefix : r->what, allowed, r->err);
    if (rc != BF_OK)
        return rc;
    for (size_t i = 0; i < map->count; i++) {
        int idx = find_field(r, prefix, map->keys[i]);
        if (idx < 0) /* bf_yaml_check_map has vouched for the key */
            return bf_yaml_fail(map, r->err, "internal: no field for key '%s'", map->keys[i]);
        const field_t *f = &r->fields[idx];
        r->seen[idx] = true;
        r->where[idx] = map->items[i];
        rc = f->type == F_SECTION ? yaml_section(r, map->items[i], f->path)
                                  : yaml_value(r, f, map->items[i]);
        if (rc != BF_OK)
            return rc;
        set_has(r, f);
    }
    return BF_OK;
}

/* ---- JSON reader -------------------------------------------------------- */

/* The value as compact JSON for messages, cut to fit. */
static void json_text(const json_t *v, char *out, size_t n)
{
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    bf_strlcpy(out, s ? s : "?", n);
    free(s);
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "a list";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static bf_err_t json_string_of(reader_t *r, const field_t *f, const json_t *v, const char *path,
                               char **out)
{
    if (!json_is_string(v))
        return field_fail(r, NULL, path, "expected a string, got %s", json_kind(v));
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len > STR_MAX)
        return field_fail(r, NULL, path, "string longer than %d bytes", STR_MAX);
    if (strlen(s) != len)
        return field_fail(r, NULL, path, "NUL character in a string");
    bf_err_t rc = check_str(r, f, NULL, path, s);
    if (rc != BF_OK)
        return rc;
    if (out && !(*out = strdup(s)))
        return BF_ENOMEM;
    return BF_OK;
}

static bf_err_t json_double_of(reader_t *r, const field_t *f, const json_t *v, const char *path,
                               double *out)
{
    char words[128], text[80];
    bool gt = f->flags & GT_MIN;
    range_words(words, sizeof words, "a number", f->min, f->max, gt);
    if (!json_is_number(v))
        return field_fail(r, NULL, path, "expected %s, got %s", words, json_kind(v));
    double d = json_number_value(v);
    if (!isfinite(d) || d < f->min || d > f->max || (gt && d <= f->min)) {
        json_text(v, text, sizeof text);
        return field_fail(r, NULL, path, "expected %s, got '%s'", words, text);
    }
    *out = d;
    return BF_OK;
}

static bf_err_t json_strv(reader_t *r, const field_t *f, const json_t *v)
{
    if (!json_is_array(v))
        return field_fail(r, NULL, f->path, "expected a list of strings, got %s", json_kind(v));
    size_t n = json_array_size(v);
    if (n < f->umin || n > f->umax)
        return field_fail(r, NULL, f->path, "expected %llu to %llu strings, got %zu",
                          (unsigned long long)f->umin, (unsigned long long)f->umax, n);
    char **out = calloc(n + 1, sizeof *out);
    if (!out)
        return BF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        char item[128];
        snprintf(item, sizeof item, "%s[%zu]", f->path, i);
        bf_err_t rc = json_string_of(r, f, json_array_get(v, i), item, &out[i]);
        if (rc != BF_OK) {
            free_strv(out, n);
            return rc;
        }
    }
    store_strv(r, f, out, n);
    return BF_OK;
}

static bf_err_t json_value(reader_t *r, const field_t *f, const json_t *v)
{
    char words[128], text[80];
    switch (f->type) {
    case F_STR:
    case F_NAME:
    case F_PATH:
    case F_SCENEDIR: {
        char *s = NULL;
        bf_err_t rc = json_string_of(r, f, v, f->path, &s);
        if (rc == BF_OK)
            store_str(r, f, s);
        return rc;
    }
    case F_TASK:
    case F_OBJECTIVE:
    case F_OFFSET:
    case F_DMODEL:
        return json_string_of(r, f, v, f->path, NULL);
    case F_UINT:
    case F_U64: {
        snprintf(words, sizeof words, "an integer in [%llu, %llu]", (unsigned long long)f->umin,
                 (unsigned long long)f->umax);
        bool ok = false;
        uint64_t u = 0;
        if (json_is_integer(v)) {
            json_int_t i = json_integer_value(v);
            ok = i >= 0;
            u = (uint64_t)i;
        } else if (json_is_real(v)) {
            double d = json_real_value(v);
            ok = isfinite(d) && d >= 0 && d == floor(d) && d < 18446744073709551616.0;
            u = ok ? (uint64_t)d : 0;
        }
        if (!json_is_number(v))
            return field_fail(r, NULL, f->path, "expected %s, got %s", words, json_kind(v));
        if (!ok || u < f->umin || u > f->umax) {
            json_text(v, text, sizeof text);
            return field_fail(r, NULL, f->path, "expected %s, got '%s'", words, text);
        }
        if (f->type == F_UINT)
            *AT(r, f, unsigned) = (unsigned)u;
        else
            *AT(r, f, uint64_t) = u;
        return BF_OK;
    }
    case F_DOUBLE:
        return json_double_of(r, f, v, f->path, AT(r, f, double));
    case F_BOOL:
        if (!json_is_boolean(v))
            return field_fail(r, NULL, f->path, "expected true or false, got %s", json_kind(v));
        *AT(r, f, bool) = json_is_true(v);
        return BF_OK;
    case F_PAIR: {
        if (!json_is_array(v) || json_array_size(v) != 2)
            return field_fail(r, NULL, f->path, "expected a list of 2 numbers, got %s",
                              json_is_array(v) ? "another length" : json_kind(v));
        double d[2];
        for (size_t i = 0; i < 2; i++) {
            char item[128];
            snprintf(item, sizeof item, "%s[%zu]", f->path, i);
            bf_err_t rc = json_double_of(r, f, json_array_get(v, i), item, &d[i]);
            if (rc != BF_OK)
                return rc;
        }
        if ((f->flags & ORDERED) && !(d[0] < d[1]))
            return field_fail(r, NULL, f->path,
                              "expected [low, high] with low < high, got [%.15g, %.15g]", d[0],
                              d[1]);
        memcpy(AT(r, f, double), d, sizeof d);
        return BF_OK;
    }
    case F_STRV:
    case F_SCENES:
        return json_strv(r, f, v);
    case F_SECTION:
        break;
    }
    return BF_OK;
}

static bf_err_t json_section(reader_t *r, const json_t *obj, const char *prefix)
{
    if (!json_is_object(obj))
        return field_fail(r, NULL, *prefix ? prefix : r->what, "expected an object, got %s",
                          json_kind(obj));
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        int idx = find_field(r, prefix, key);
        if (idx < 0) {
            const char *allowed[MAX_FIELDS + 1];
            allowed_list(r, prefix, allowed, BF_ARRAY_LEN(allowed));
            char list[BF_ERRLEN] = "";
            size_t used = 0;
            for (size_t a = 0; allowed[a] && used < sizeof list; a++) {
                int n =
                    snprintf(list + used, sizeof list - used, "%s%s", a ? ", " : "", allowed[a]);
                if (n < 0)
                    break;
                used += (size_t)n;
            }
            return bf_fail(r->err, BF_EINVAL, "unknown key '%.64s' in %s (allowed: %s)", key,
                           *prefix ? prefix : r->what, list);
        }
        const field_t *f = &r->fields[idx];
        r->seen[idx] = true;
        bf_err_t rc = f->type == F_SECTION ? json_section(r, v, f->path) : json_value(r, f, v);
        if (rc != BF_OK)
            return rc;
        set_has(r, f);
    }
    return BF_OK;
}

/* ---- checks shared by both sources -------------------------------------- */

static int field_index(const reader_t *r, const char *path)
{
    for (size_t i = 0; i < r->nfields; i++) {
        if ((r->fields[i].flags & r->mode) && !strcmp(r->fields[i].path, path))
            return (int)i;
    }
    return -1;
}

static const bf_yaml_node_t *where(const reader_t *r, const char *path)
{
    int i = field_index(r, path);
    return i >= 0 ? r->where[i] : NULL;
}

static bool seen(const reader_t *r, const char *path)
{
    int i = field_index(r, path);
    return i >= 0 && r->seen[i];
}

static bf_err_t check_required(reader_t *r)
{
    unsigned req = r->mode == IN_YAML ? REQ_YAML : REQ_JSON;
    for (size_t i = 0; i < r->nfields; i++) {
        const field_t *f = &r->fields[i];
        if ((f->flags & r->mode) && (f->flags & req) && !r->seen[i]) {
            if (r->mode == IN_YAML)
                return bf_yaml_fail(r->root, r->err, "missing required key '%s' in %s", f->path,
                                    r->what);
            return bf_fail(r->err, BF_EINVAL, "field '%s': missing (required)", f->path);
        }
    }
    return BF_OK;
}

static bf_err_t check_task(reader_t *r, const bf_job_t *job)
{
    if (job->task == BF_TASK_EXEC && !job->exec_command)
        return field_fail(r, where(r, "exec") ? where(r, "exec") : where(r, "task"), "exec.command",
                          "missing: task exec needs a command to run");
    if (job->task == BF_TASK_BORESIGHT && seen(r, "exec"))
        return field_fail(r, where(r, "exec"), "exec", "only allowed with task: exec");
    if (job->task == BF_TASK_EXEC && seen(r, "sionna_check"))
        return field_fail(r, where(r, "sionna_check"), "sionna_check",
                          "only allowed with task: boresight");
    if (seen(r, "sionna_check") && !job->sionna_check_command)
        return field_fail(r, where(r, "sionna_check"), "sionna_check.command",
                          "missing: the program to run (e.g. [python3, sionna_task.py])");
    return BF_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- job: defaults, clear ----------------------------------------------- */

void bf_job_defaults(bf_job_t *job)
{
    *job = (bf_job_t){
        .task = BF_TASK_BORESIGHT,
        .timeout_s = 3600,
        .max_attempts = 3,
        .validation = {.p10_min_dbm = -270,
                       .p10_max_dbm = -80,
                       .p90_min_dbm = -130,
                       .min_percentile_range_db = 15},
        .solver = {.samples_per_tx = 1000000,
                   .max_depth = 3,
                   .los = true,
                   .specular_reflection = true,
                   .refraction = true,
                   .seed = 42,
                   .floor_dbm = -300,
                   .surface_offset = BF_OFFSET_SIONNA,
                   .noise_figure_db = 0,
                   .bandwidth_hz = 1e6},
        .measurement = {.height = 1.5, .cell_size = {10, 10}},
        .optimizer = {.objective = BF_OBJ_MEAN_DBM,
                      .azimuth_deg = {0, 360},
                      .tilt_deg = {-10, 30},
                      .coverage_dbm = -100},
    };
}

void bf_job_clear(bf_job_t *job)
{
    if (!job)
        return;
    free(job->name);
    free(job->scenes_root);
    free_strv(job->scenes, job->scene_count);
    free(job->output);
    if (job->exec_command) {
        /* exec_argc may undercount a hand-built argv; the NULL ends it */
        for (size_t i = 0; job->exec_command[i]; i++)
            free(job->exec_command[i]);
        free(job->exec_command);
    }
    free_strv(job->sionna_check_command, job->sionna_check_argc);
    memset(job, 0, sizeof *job);
}

/* ---- job from YAML ------------------------------------------------------ */

/* Lexically normalizes an absolute path ("/a/./b/../c" -> "/a/c"). */
static char *normalize(const char *abs)
{
    size_t len = strlen(abs);
    char *out = malloc(len + 2);
    if (!out)
        return NULL;
    size_t o = 0;
    const char *p = abs;
    while (*p) {
        while (*p == '/')
            p++;
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0)
            break;
        if (n == 1 && p[0] == '.') {
            /* skip */
        } else if (n == 2 && p[0] == '.' && p[1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
        } else {
            out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    return out;
}

static char *resolve(const char *dir, const char *path)
{
    char *joined = path[0] == '/' ? bf_strdup(path) : bf_asprintf("%s/%s", dir, path);
    if (!joined)
        return NULL;
    char *norm = normalize(joined);
    free(joined);
    return norm;
}

/* The job file name without directory and extension, if usable as a name. */
static char *name_from_path(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char *name = bf_strdup(base);
    if (!name)
        return NULL;
    char *dot = strrchr(name, '.');
    if (dot && dot != name)
        *dot = '\0';
    if (!bf_safe_name(name) || strlen(name) > STR_MAX) {
        free(name);
        name = bf_strdup("job");
    }
    return name;
}

/* Lists the sub-directories of root (no dotfiles), sorted. */
static bf_err_t list_scenes(reader_t *r, const bf_yaml_node_t *at, const char *root, char ***out,
                            size_t *count)
{
    *out = NULL;
    *count = 0;
    DIR *d = opendir(root);
    if (!d)
        return field_fail(r, at, "scenes", "cannot list '%s': %s", root, strerror(errno));
    size_t n = 0, cap = 0;
    char **v = NULL;
    bf_err_t rc = BF_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN && e->d_type != DT_LNK)
            continue;
        char *full = bf_asprintf("%s/%s", root, e->d_name);
        if (!full) {
            rc = BF_ENOMEM;
            break;
        }
        bool dir = bf_is_dir(full);
        free(full);
        if (!dir)
            continue;
        if (!bf_safe_name(e->d_name)) {
            bf_warn("%s: skipping scene directory with an unusable name", root);
            continue;
        }
        if (n >= SCENES_MAX) {
            rc = field_fail(r, at, "scenes", "more than %d scenes in '%s'", SCENES_MAX, root);
            break;
        }
        if (!bf_grow(&v, &cap, n + 2, sizeof *v, 64)) { /* room for the NULL end too */
            rc = BF_ENOMEM;
            break;
        }
        if (!(v[n] = strdup(e->d_name))) {
            rc = BF_ENOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (rc != BF_OK) {
        free_strv(v, n);
        return rc;
    }
    if (n > 1)
        qsort(v, n, sizeof *v, cmp_str);
    *out = v;
    *count = n;
    return BF_OK;
}

static bf_err_t job_finish_yaml(reader_t *r, jobdoc_t *doc, const char *path)
{
    bf_job_t *job = &doc->job;
    bf_err_t rc = check_required(r);
    if (rc != BF_OK)
        return rc;
    if (!job->name && !(job->name = name_from_path(path)))
        return BF_ENOMEM;

    char *copy = bf_strdup(path);
    if (!copy)
        return BF_ENOMEM;
    char *slash = strrchr(copy, '/');
    if (slash)
        *(slash == copy ? slash + 1 : slash) = '\0';
    char *dir = realpath(slash ? copy : ".", NULL);
    free(copy);
    if (!dir)
        return bf_fail(r->err, BF_EIO, "%s: cannot resolve its directory: %s", path,
                       strerror(errno));

    const bf_yaml_node_t *at = where(r, "scenes");
    char *joined = resolve(dir, doc->scenes_path);
    char *root = joined ? realpath(joined, NULL) : NULL;
    int e = errno;
    free(joined);
    if (!root) {
        free(dir);
        if (e == ENOENT || e == ENOTDIR)
            return field_fail(r, at, "scenes", "no such directory '%.256s'", doc->scenes_path);
        return e == ENOMEM
                   ? BF_ENOMEM
                   : field_fail(r, at, "scenes", "'%.256s': %s", doc->scenes_path, strerror(e));
    }
    free(job->scenes_root);
    job->scenes_root = root;
    if (!bf_is_dir(root)) {
        free(dir);
        return field_fail(r, at, "scenes", "not a directory '%.256s'", doc->scenes_path);
    }
    if (strlen(root) > STR_MAX) {
        free(dir);
        return field_fail(r, at, "scenes", "path longer than %d bytes", STR_MAX);
    }
    rc = list_scenes(r, at, root, &job->scenes, &job->scene_count);
    if (rc != BF_OK) {
        free(dir);
        return rc;
    }
    if (job->scene_count == 0) {
        free(dir);
        return field_fail(r, at, "scenes", "no scene directories in '%.256s'", root);
    }
    if (doc->has_max_scenes && job->scene_count > doc->max_scenes) {
        for (size_t i = doc->max_scenes; i < job->scene_count; i++)
            free(job->scenes[i]);
        job->scene_count = doc->max_scenes;
    }

    char *out = resolve(dir, job->output ? job->output : "parallel_results");
    free(dir);
    if (!out)
        return BF_ENOMEM;
    free(job->output);
    job->output = out;
    if (strlen(out) > STR_MAX)
        return field_fail(r, where(r, "output"), "output", "path longer than %d bytes", STR_MAX);
    return check_task(r, job);
}

bf_err_t bf_job_load(const char *path, bf_job_t *job, char *err)
{
    jobdoc_t doc = {0};
    bf_job_defaults(&doc.job);
    bf_yaml_node_t *root = NULL;
    bf_err_t rc = bf_yaml_load(path, &root, err);
    if (rc == BF_OK) {
        reader_t r = {.fields = job_fields,
                      .nfields = BF_ARRAY_LEN(job_fields),
                      .base = &doc,
                      .what = "job",
                      .mode = IN_YAML,
                      .root = root,
                      .err = err};
        rc = yaml_section(&r, root, "");
        if (rc == BF_OK)
            rc = job_finish_yaml(&r, &doc, path);
    }
    bf_yaml_destroy(&root);
    free(doc.scenes_path);
    if (rc != BF_OK) {
        if (rc == BF_ENOMEM)
            bf_fail(err, rc, "%s: out of memory", path);
        bf_job_clear(&doc.job);
        memset(job, 0, sizeof *job);
        return rc;
    }
    *job = doc.job;
    return BF_OK;
}

/* ---- job to and from JSON ----------------------------------------------- */

/* Sets obj[path] (dotted), creating the sections on the way. Steals v. */
static bool json_put(json_t *obj, const char *path, json_t *v)
{
    if (!v)
        return false;
    const char *dot = strchr(path, '.');
    if (!dot)
        return json_object_set_new(obj, path, v) == 0;
    char section[64];
    bf_strlcpy(section, path,
               (size_t)(dot - path) + 1 < sizeof section ? (size_t)(dot - path) + 1
                                                         : sizeof section);
    json_t *sub = json_object_get(obj, section);
    if (!sub) {
        sub = json_object();
        if (!sub || json_object_set_new(obj, section, sub) != 0) {
            json_decref(v);
            return false;
        }
    }
    return json_put(sub, dot + 1, v);
}

static json_t *strv_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        if (json_array_append_new(a, json_string(v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

json_t *bf_job_to_json(const bf_job_t *job, bool with_scenes)
{
    json_t *obj = json_object();
    if (!obj)
        return NULL;
    jobdoc_t doc = {.job = *job}; /* shallow: only read through the table */
    reader_t r = {.base = &doc};
    for (size_t i = 0; i < BF_ARRAY_LEN(job_fields); i++) {
        const field_t *f = &job_fields[i];
        if (!(f->flags & IN_JSON) || f->type == F_SECTION)
            continue;
        if ((f->flags & WITH_SCENES) && !with_scenes)
            continue;
        if (f->aux != NO_AUX && f->type != F_STRV && f->type != F_SCENES &&
            !*(bool *)((char *)&doc + f->aux))
            continue;
        json_t *v = NULL;
        switch (f->type) {
        case F_STR:
        case F_NAME:
        case F_PATH:
        case F_SCENEDIR:
            if (!*AT(&r, f, char *))
                continue;
            v = json_string(*AT(&r, f, char *));
            break;
        case F_TASK:
            v = json_string(task_name(*AT(&r, f, bf_task_kind_t)));
            break;
        case F_OBJECTIVE:
            v = json_string(bf_objective_name(*AT(&r, f, bf_objective_t)));
            break;
        case F_OFFSET:
            v = json_string(bf_surface_offset_name(*AT(&r, f, bf_surface_offset_t)));
            break;
        case F_DMODEL:
            v = json_string(bf_diffraction_model_name(*AT(&r, f, bf_diffraction_model_t)));
            break;
        case F_UINT:
            v = json_integer((json_int_t)*AT(&r, f, unsigned));
            break;
        case F_U64:
            v = json_integer((json_int_t)*AT(&r, f, uint64_t));
            break;
        case F_DOUBLE:
            v = json_real(*AT(&r, f, double));
            break;
        case F_BOOL:
            v = json_boolean(*AT(&r, f, bool));
            break;
        case F_PAIR: {
            const double *d = AT(&r, f, double);
            v = json_pack("[ff]", d[0], d[1]);
            break;
        }
        case F_STRV:
        case F_SCENES: {
            char **sv = *AT(&r, f, char **);
            if (!sv)
                continue;
            v = strv_json(sv, *(size_t *)((char *)&doc + f->aux));
            break;
        }
        case F_SECTION:
            continue;
        }
        if (!json_put(obj, f->path, v)) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

bf_err_t bf_job_from_json(const json_t *doc_json, bf_job_t *job, char *err)
{
    jobdoc_t doc = {0};
    bf_job_defaults(&doc.job);
    reader_t r = {.fields = job_fields,
                  .nfields = BF_ARRAY_LEN(job_fields),
                  .base = &doc,
                  .what = "job",
                  .mode = IN_JSON,
                  .err = err};
    bf_err_t rc = doc_json ? json_section(&r, doc_json, "")
                           : bf_fail(err, BF_EINVAL, "job: missing document");
    if (rc == BF_OK)
        rc = check_required(&r);
    /* A task's spec carries the root without the list; a submission both. */
    if (rc == BF_OK && seen(&r, "scenes") && !seen(&r, "scenes_root"))
        rc = bf_fail(err, BF_EINVAL, "field 'scenes_root': required together with 'scenes'");
    if (rc == BF_OK && doc.job.scene_count > 1) {
        char **sorted = malloc(doc.job.scene_count * sizeof *sorted);
        if (!sorted) {
            rc = BF_ENOMEM;
        } else {
            memcpy(sorted, doc.job.scenes, doc.job.scene_count * sizeof *sorted);
            qsort(sorted, doc.job.scene_count, sizeof *sorted, cmp_str);
            for (size_t i = 1; i < doc.job.scene_count && rc == BF_OK; i++) {
                if (!strcmp(sorted[i - 1], sorted[i]))
                    rc = bf_fail(err, BF_EINVAL, "field 'scenes': duplicate scene name '%.64s'",
                                 sorted[i]);
            }
            free(sorted);
        }
    }
    if (rc == BF_OK)
        rc = check_task(&r, &doc.job);
    if (rc != BF_OK) {
        if (rc == BF_ENOMEM)
            bf_fail(err, rc, "job: out of memory");
        bf_job_clear(&doc.job);
        memset(job, 0, sizeof *job);
        return rc;
    }
    *job = doc.job;
    return BF_OK;
}

/* ---- fleet -------------------------------------------------------------- */

void bf_fleet_defaults(bf_fleet_t *fleet)
{
    const char *env = getenv("BEAMFLEET_BROKER");
    *fleet = (bf_fleet_t){
        .broker_endpoint = bf_strdup(env && *env ? env : "tcp://127.0.0.1:5555"),
        .broker_bind = bf_strdup("tcp://127.0.0.1:5555"),
        .broker_state = bf_strdup("./beamfleet-state"),
        .retain_s = 3600,
        .heartbeat_interval_ms = 1000,
        .heartbeat_liveness = 3,
        .prefetch = 1,
        .collector_publish = bf_strdup("tcp://127.0.0.1:5557"),
        .allow_exec = calloc(1, sizeof(char *)),
        .interpreters = calloc(1, sizeof(char *)),
    };
}

void bf_fleet_clear(bf_fleet_t *fleet)
{
    if (!fleet)
        return;
    free(fleet->broker_endpoint);
    free(fleet->broker_bind);
    free(fleet->broker_state);
    free(fleet->collector_publish);
    free(fleet->collector_output_root);
    free_strv(fleet->allow_exec, fleet->allow_exec_count);
    free_strv(fleet->interpreters, fleet->interpreter_count);
    free(fleet->security_keys);
    free(fleet->security_identity);
    free(fleet->metrics_listen);
    memset(fleet, 0, sizeof *fleet);
}

bf_err_t bf_fleet_load(const char *path, bf_fleet_t *fleet, char *err)
{
    bf_yaml_node_t *root = NULL;
    bf_err_t rc = bf_yaml_load(path, &root, err);
    if (rc != BF_OK)
        return rc;
    reader_t r = {.fields = fleet_fields,
                  .nfields = BF_ARRAY_LEN(fleet_fields),
                  .base = fleet,
                  .what = "fleet",
                  .mode = IN_YAML,
                  .root = root,
                  .err = err};
    rc = yaml_section(&r, root, "");
    if (rc == BF_OK && seen(&r, "security") && !!fleet->security_keys != !!fleet->security_identity)
        rc = field_fail(&r, where(&r, "security"), "security", "needs both 'keys' and 'identity'");
    bf_yaml_destroy(&root);
    if (rc == BF_ENOMEM)
        bf_fail(err, rc, "%s: out of memory", path);
    return rc;
}

/* ---- the bind rule (DESIGN section 5) ------------------------------------ */

bool bf_endpoint_loopback(const char *ep)
{
    if (!ep)
        return false;
    if (!strncmp(ep, "ipc://", 6) || !strncmp(ep, "inproc://", 9))
        return true;
    const char *h = strncmp(ep, "tcp://", 6) ? ep : ep + 6;
    if (strstr(h, "://"))
        return false; /* another transport (udp, pgm...): not ours to trust */
    return !strncmp(h, "127.", 4) || !strncmp(h, "localhost:", 10) || !strncmp(h, "[::1]:", 6);
}

bf_err_t bf_bind_allowed(const char *what, const char *endpoint, bool curve, bool insecure,
                         char *err)
{
    if (bf_endpoint_loopback(endpoint) || curve || insecure)
        return BF_OK;
    return bf_fail(err, BF_EPERM,
                   "%s %s: not a loopback address; without CURVE keys (security: in the fleet "
                   "file) this needs --insecure (broker.insecure: true)",
                   what ? what : "bind", endpoint ? endpoint : "(none)");
}
