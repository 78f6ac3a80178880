/*  common/bf_config_test.c - tests for the YAML tree (bf_yaml.c) and the job
    and fleet files (bf_config.c): defaults, every key, every class of error
    with its exact file:line:column, scene listing (sorting, dotfiles,
    max_scenes), the JSON round trip, and bf_job_from_json refusing hostile
    documents. Files are written into a fresh mkdtemp directory; the program
    exits non-zero on the first failed check. */

#include "bf_config.h"
#include "bf_yaml.h"

#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/bf_check.h"

/* CHECK that msg contains want, printing both when it does not. */
#define CHECK_HAS(msg, want)                                                                       \
    do {                                                                                           \
        if (!strstr((msg), (want))) {                                                              \
            fprintf(stderr, "%s:%d: expected '%s' in message '%s'\n", __FILE__, __LINE__, (want),  \
                    (msg));                                                                        \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static char root[64];

static void write_text(const char *dir, const char *name, const char *text)
{
    char *path = bf_asprintf("%s/%s", dir, name);
    char err[BF_ERRLEN];
    if (bf_write_atomic(path, text, strlen(text), err) != BF_OK) {
        fprintf(stderr, "setup: %s\n", err);
        exit(1);
    }
    free(path);
}

static char *make_dir(const char *dir, const char *name)
{
    char *path = bf_asprintf("%s/%s", dir, name);
    char err[BF_ERRLEN];
    if (bf_mkdir_p(path, err) != BF_OK) {
        fprintf(stderr, "setup: %s\n", err);
        exit(1);
    }
    return path;
}

/* A fresh directory with scenes/{c,a,b} plus things that are not scenes. */
static char *fixture(const char *name)
{
    char *dir = make_dir(root, name);
    free(make_dir(dir, "scenes/c"));
    free(make_dir(dir, "scenes/a"));
    free(make_dir(dir, "scenes/b"));
    free(make_dir(dir, "scenes/.git"));
    write_text(dir, "scenes/README.txt", "not a scene\n");
    free(make_dir(dir, "empty"));
    return dir;
}

/* Loads text as dir/job.yaml; returns the error code and leaves the message
   in err. */
static bf_err_t load_job(const char *dir, const char *text, bf_job_t *job, char *err)
{
    write_text(dir, "job.yaml", text);
    char *path = bf_asprintf("%s/job.yaml", dir);
    err[0] = '\0';
    bf_err_t rc = bf_job_load(path, job, err);
    free(path);
    return rc;
}

/* Expects text to fail as a job file with a message containing each of the
   given fragments (NULL-terminated). */
static void expect_job_error(const char *dir, const char *text, const char *want1,
                             const char *want2)
{
    bf_job_t job;
    char err[BF_ERRLEN];
    bf_err_t rc = load_job(dir, text, &job, err);
    CHECK(rc == BF_EINVAL);
    if (rc == BF_OK)
        fprintf(stderr, "  accepted: %s\n", text);
    CHECK_HAS(err, want1);
    if (want2)
        CHECK_HAS(err, want2);
    CHECK(job.name == NULL && job.scenes == NULL && job.output == NULL); /* cleared */
    bf_job_clear(&job);
}

/* ---- bf_yaml ------------------------------------------------------------ */

static bf_yaml_node_t *parse(const char *text)
{
    bf_yaml_node_t *doc = NULL;
    char err[BF_ERRLEN] = "";
    if (bf_yaml_parse(text, strlen(text), "t.yaml", &doc, err) != BF_OK)
        fprintf(stderr, "parse failed: %s\n", err);
    return doc;
}

static void expect_parse_error(const char *text, const char *want)
{
    bf_yaml_node_t *doc = NULL;
    char err[BF_ERRLEN] = "";
    CHECK(bf_yaml_parse(text, strlen(text), "t.yaml", &doc, err) == BF_EINVAL);
    CHECK(doc == NULL);
    CHECK_HAS(err, want);
}

static void test_yaml_tree(void)
{
    bf_yaml_node_t *doc = parse("a: 1\n"
                                "b:\n"
                                "  c: [x, 'y', \"z\"]\n"
                                "  d: {e: true}\n");
    CHECK(doc && doc->kind == BF_YAML_MAP && doc->count == 2);
    CHECK(doc->line == 1 && doc->column == 1);
    CHECK(!strcmp(doc->keys[1], "b") && doc->key_lines[1] == 2 && doc->key_columns[1] == 1);
    const bf_yaml_node_t *b = bf_yaml_get(doc, "b");
    CHECK(b && b->kind == BF_YAML_MAP && b->key_lines[0] == 3 && b->key_columns[0] == 3);
    const bf_yaml_node_t *c = bf_yaml_get(b, "c");
    CHECK(c && c->kind == BF_YAML_SEQ && c->count == 3 && c->line == 3 && c->column == 6);
    CHECK(!c->items[0]->quoted && c->items[1]->quoted && c->items[2]->quoted);
    CHECK(!strcmp(c->items[2]->value, "z") && c->items[2]->line == 3 && c->items[2]->column == 15);
    CHECK(bf_yaml_get(doc, "zz") == NULL);
    CHECK(bf_yaml_get(c, "x") == NULL);
    CHECK(!strcmp(doc->file, "t.yaml") && c->file == doc->file);
    bf_yaml_destroy(&doc);
    CHECK(doc == NULL);
    bf_yaml_destroy(&doc); /* idempotent */

    /* empty documents read as empty mappings */
    const char *empties[] = {"", "# only a comment\n", "---\n", "~\n"};
    for (size_t i = 0; i < BF_ARRAY_LEN(empties); i++) {
        doc = parse(empties[i]);
        CHECK(doc && doc->kind == BF_YAML_MAP && doc->count == 0);
        bf_yaml_destroy(&doc);
    }

    expect_parse_error("a: &x 1\nb: *x\n", "t.yaml:1:4: anchors are not supported");
    expect_parse_error("a: 1\nb: *x\n", "t.yaml:2:4:");
    expect_parse_error("a: !!str 1\n", "t.yaml:1:4: tags are not supported");
    expect_parse_error("a: !custom {b: 1}\n", "t.yaml:1:4: tags are not supported");
    expect_parse_error("a: 1\n---\nb: 2\n", "t.yaml:2:1: only one YAML document");
    expect_parse_error("a: [1, 2\n", "t.yaml:2:1: did not find expected ',' or ']'");
    expect_parse_error("a: 1\n b: 2\n", "t.yaml:2:3:");
    expect_parse_error("{[1]: 2}\n", "t.yaml:1:2: mapping keys must be plain scalars");
    expect_parse_error("a: \"bad\\0nul\"\n", "t.yaml:1:4: NUL character");

    /* nesting: 64 levels are fine, 65 are not */
    char deep[300];
    memset(deep, '[', 64);
    memset(deep + 64, ']', 64);
    deep[128] = '\0';
    doc = parse(deep);
    CHECK(doc != NULL);
    bf_yaml_destroy(&doc);
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    deep[130] = '\0';
    expect_parse_error(deep, "t.yaml:1:65: nesting deeper than 64 levels");

    /* size bound */
    size_t big = (1u << 20) + 1;
    char *text = malloc(big + 1);
    memset(text, '#', big);
    text[big] = '\0';
    char err[BF_ERRLEN];
    CHECK(bf_yaml_parse(text, big, "big.yaml", &doc, err) == BF_EINVAL && doc == NULL);
    CHECK_HAS(err, "big.yaml:1:1: document too large");
    write_text(root, "big.yaml", text);
    char *path = bf_asprintf("%s/big.yaml", root);
    CHECK(bf_yaml_load(path, &doc, err) == BF_EINVAL && doc == NULL);
    CHECK_HAS(err, "too large");
    free(path);
    free(text);

    path = bf_asprintf("%s/missing.yaml", root);
    CHECK(bf_yaml_load(path, &doc, err) == BF_ENOENT && doc == NULL);
    CHECK_HAS(err, "missing.yaml");
    free(path);
}

static void test_yaml_accessors(void)
{
    bf_yaml_node_t *doc = parse("big: 3.5e9\n"
                                "mega: 1e6\n"
                                "neg: -10\n"
                                "word: abc\n"
                                "empty:\n"
                                "nan: .nan\n"
                                "inf: .inf\n"
                                "minf: -.Inf\n"
                                "hex: 0x10\n"
                                "frac: 1.5\n"
                                "plus: +7\n"
                                "dot: .5\n"
                                "huge: 18446744073709551616\n"
                                "max: 18446744073709551615\n"
                                "quoted: '12'\n"
                                "yes: yes\n"
                                "off: off\n"
                                "On: On\n"
                                "qtrue: \"true\"\n"
                                "list: [1, 2.5]\n"
                                "list3: [1, 2, 3]\n"
                                "badlist: [1, x]\n"
                                "map: {a: 1}\n");
    CHECK(doc != NULL);
    char err[BF_ERRLEN];
    double d = 0;
    uint64_t u = 0;
    bool b = false;
#define G(k) bf_yaml_get(doc, k)
    CHECK(bf_yaml_double(G("big"), "big", -INFINITY, INFINITY, &d, err) == BF_OK && d == 3.5e9);
    CHECK(bf_yaml_double(G("mega"), "mega", 0, 1e6, &d, err) == BF_OK && d == 1e6);
    CHECK(bf_yaml_double(G("neg"), "neg", -10, 0, &d, err) == BF_OK && d == -10);
    CHECK(bf_yaml_double(G("dot"), "dot", 0, 1, &d, err) == BF_OK && d == 0.5);
    CHECK(bf_yaml_double(G("plus"), "plus", 0, 10, &d, err) == BF_OK && d == 7);
    CHECK(bf_yaml_double(G("neg"), "neg", -9, 0, &d, err) == BF_EINVAL);
    CHECK_HAS(err, "t.yaml:3:6: field 'neg': expected a number in [-9, 0], got '-10'");
    CHECK(bf_yaml_double(G("word"), "word", -INFINITY, INFINITY, &d, err) == BF_EINVAL);
    CHECK_HAS(err, "t.yaml:4:7: field 'word': expected a number, got 'abc'");
    CHECK(bf_yaml_double(G("empty"), "empty", -INFINITY, INFINITY, &d, err) == BF_EINVAL);
    CHECK_HAS(err, "got ''");
    CHECK(bf_yaml_double(G("nan"), "nan", -INFINITY, INFINITY, &d, err) == BF_EINVAL);
    CHECK(bf_yaml_double(G("inf"), "inf", 0, 1e300, &d, err) == BF_EINVAL);
    CHECK_HAS(err, "expected a number in [0, 1e+300], got '.inf'");
    CHECK(bf_yaml_double(G("inf"), "inf", 0, INFINITY, &d, err) == BF_OK && isinf(d) && d > 0);
    CHECK(bf_yaml_double(G("minf"), "minf", -INFINITY, 0, &d, err) == BF_OK && isinf(d) && d < 0);
    CHECK(bf_yaml_double(G("hex"), "hex", -INFINITY, INFINITY, &d, err) == BF_EINVAL);
    CHECK(bf_yaml_double(G("quoted"), "quoted", -INFINITY, INFINITY, &d, err) == BF_EINVAL);
    CHECK(bf_yaml_double(G("map"), "map", -INFINITY, INFINITY, &d, err) == BF_EINVAL);
    CHECK_HAS(err, "t.yaml:23:6: field 'map': expected a number, got a mapping");
    CHECK(bf_yaml_double(NULL, "absent", 0, 1, &d, err) == BF_EINVAL);

    CHECK(bf_yaml_uint(G("mega"), "mega", 0, UINT64_MAX, &u, err) == BF_OK && u == 1000000);
    CHECK(bf_yaml_uint(G("big"), "big", 0, UINT64_MAX, &u, err) == BF_OK && u == 3500000000u);
    CHECK(bf_yaml_uint(G("plus"), "plus", 0, 10, &u, err) == BF_OK && u == 7);
    CHECK(bf_yaml_uint(G("max"), "max", 0, UINT64_MAX, &u, err) == BF_OK && u == UINT64_MAX);
    CHECK(bf_yaml_uint(G("huge"), "huge", 0, UINT64_MAX, &u, err) == BF_EINVAL);
    CHECK(bf_yaml_uint(G("neg"), "neg", 0, 32, &u, err) == BF_EINVAL);
    CHECK_HAS(err, "t.yaml:3:6: field 'neg': expected an integer in [0, 32], got '-10'");
    CHECK(bf_yaml_uint(G("frac"), "frac", 0, 32, &u, err) == BF_EINVAL);
    CHECK_HAS(err, "got '1.5'");
    CHECK(bf_yaml_uint(G("word"), "word", 0, 32, &u, err) == BF_EINVAL);
    CHECK(bf_yaml_uint(G("empty"), "empty", 0, 32, &u, err) == BF_EINVAL);
    CHECK(bf_yaml_uint(G("inf"), "inf", 0, UINT64_MAX, &u, err) == BF_EINVAL);
    CHECK(bf_yaml_uint(G("plus"), "plus", 8, 10, &u, err) == BF_EINVAL);

    CHECK(bf_yaml_bool(G("yes"), "yes", &b, err) == BF_OK && b);
    CHECK(bf_yaml_bool(G("off"), "off", &b, err) == BF_OK && !b);
    CHECK(bf_yaml_bool(G("On"), "On", &b, err) == BF_OK && b);
    CHECK(bf_yaml_bool(G("qtrue"), "qtrue", &b, err) == BF_EINVAL);
    CHECK_HAS(err, "t.yaml:19:8: field 'qtrue': expected true or false");
    CHECK(bf_yaml_bool(G("word"), "word", &b, err) == BF_EINVAL);
    CHECK(bf_yaml_bool(G("mega"), "mega", &b, err) == BF_EINVAL);

    char *s = NULL;
    CHECK(bf_yaml_str(G("quoted"), "quoted", &s, err) == BF_OK && !strcmp(s, "12"));
    free(s);
    CHECK(bf_yaml_str(G("big"), "big", &s, err) == BF_OK && !strcmp(s, "3.5e9"));
    free(s);
    CHECK(bf_yaml_str(G("empty"), "empty", &s, err) == BF_EINVAL);
    CHECK_HAS(err, "t.yaml:5:");
    CHECK(bf_yaml_str(G("list"), "list", &s, err) == BF_EINVAL);

    double two[2];
    CHECK(bf_yaml_doubles(G("list"), "list", 2, two, err) == BF_OK && two[0] == 1 && two[1] == 2.5);
    CHECK(bf_yaml_doubles(G("list3"), "list3", 2, two, err) == BF_EINVAL);
    CHECK_HAS(err, "field 'list3': expected a list of 2 numbers, got 3 items");
    CHECK(bf_yaml_doubles(G("badlist"), "badlist", 2, two, err) == BF_EINVAL);
    CHECK_HAS(err, "t.yaml:22:14: field 'badlist[1]': expected a number, got 'x'");
    CHECK(bf_yaml_doubles(G("big"), "big", 2, two, err) == BF_EINVAL);

    const char *const allowed[] = {"a", "b", NULL};
    CHECK(bf_yaml_check_map(G("map"), "map", allowed, err) == BF_OK);
    CHECK(bf_yaml_check_map(doc, "doc", allowed, err) == BF_EINVAL);
    CHECK_HAS(err, "t.yaml:1:1: unknown key 'big' in doc (allowed: a, b)");
    CHECK(bf_yaml_check_map(G("list"), "list", allowed, err) == BF_EINVAL);
    CHECK_HAS(err, "expected a mapping");
#undef G
    bf_yaml_destroy(&doc);

    doc = parse("a: 1\nb: 2\na: 3\n");
    CHECK(bf_yaml_check_map(doc, "doc", allowed, err) == BF_EINVAL);
    CHECK_HAS(err, "t.yaml:3:1: duplicate key 'a' in doc");
    bf_yaml_destroy(&doc);
}

/* ---- job file ----------------------------------------------------------- */

static void test_job_defaults(void)
{
    char *dir = fixture("defaults");
    bf_job_t job;
    char err[BF_ERRLEN];
    CHECK(load_job(dir, "scenes: ./scenes\n", &job, err) == BF_OK);
    if (err[0])
        fprintf(stderr, "  %s\n", err);
    char *real = realpath(dir, NULL);
    char *scenes = bf_asprintf("%s/scenes", real);
    char *output = bf_asprintf("%s/parallel_results", real);
    CHECK(job.name && !strcmp(job.name, "job"));
    CHECK(job.scenes_root && !strcmp(job.scenes_root, scenes));
    CHECK(job.output && !strcmp(job.output, output));
    CHECK(job.scene_count == 3 && job.scenes);
    if (job.scene_count == 3)
        CHECK(!strcmp(job.scenes[0], "a") && !strcmp(job.scenes[1], "b") &&
              !strcmp(job.scenes[2], "c"));
    CHECK(job.task == BF_TASK_BORESIGHT);
    CHECK(job.timeout_s == 3600 && job.max_attempts == 3);
    CHECK(job.validation.p10_min_dbm == -270 && job.validation.p10_max_dbm == -80);
    CHECK(job.validation.p90_min_dbm == -130 && job.validation.min_percentile_range_db == 15);
    CHECK(job.solver.samples_per_tx == 1000000 && job.solver.max_depth == 3);
    CHECK(job.solver.los && job.solver.specular_reflection && job.solver.refraction);
    CHECK(job.solver.seed == 42 && job.solver.floor_dbm == -300);
    CHECK(job.solver.surface_offset == BF_OFFSET_SIONNA);
    CHECK(!job.solver.diffraction && !job.solver.edge_diffraction &&
          job.solver.diffraction_model == BF_DIFFRACTION_SIONNA);
    CHECK(!job.measurement.has_center && !job.measurement.has_size);
    CHECK(!job.measurement.has_height && !job.measurement.has_cell_size);
    CHECK(job.measurement.height == 1.5 && job.measurement.cell_size[0] == 10 &&
          job.measurement.cell_size[1] == 10);
    CHECK(job.optimizer.objective == BF_OBJ_MEAN_DBM);
    CHECK(job.optimizer.azimuth_deg[0] == 0 && job.optimizer.azimuth_deg[1] == 360);
    CHECK(job.optimizer.tilt_deg[0] == -10 && job.optimizer.tilt_deg[1] == 30);
    CHECK(job.optimizer.coverage_dbm == -100);
    CHECK(job.exec_command == NULL && job.exec_argc == 0);
    bf_job_clear(&job);
    CHECK(job.name == NULL && job.scene_count == 0);
    bf_job_clear(&job); /* twice is fine */

    /* an absolute scenes path, a relative path through "..", a name from the
       file name when there is none */
    char *text = bf_asprintf("scenes: %s\noutput: ../out/./x/\n", scenes);
    CHECK(load_job(dir, text, &job, err) == BF_OK);
    char *parent = bf_asprintf("%s", real);
    *strrchr(parent, '/') = '\0';
    char *want = bf_asprintf("%s/out/x", parent);
    CHECK(job.output && !strcmp(job.output, want));
    CHECK(job.scenes_root && !strcmp(job.scenes_root, scenes));
    bf_job_clear(&job);
    free(want);
    free(parent);
    free(text);

    write_text(dir, "sweep.v2.yaml", "scenes: scenes\n");
    char *path = bf_asprintf("%s/sweep.v2.yaml", dir);
    CHECK(bf_job_load(path, &job, err) == BF_OK);
    CHECK(job.name && !strcmp(job.name, "sweep.v2"));
    bf_job_clear(&job);
    free(path);

    free(output);
    free(scenes);
    free(real);
    free(dir);
}

static const char *full_job = "name: downtown-sweep\n"
                              "scenes: ./scenes\n"
                              "max_scenes: 2\n"
                              "output: ./results\n"
                              "task: boresight\n"
                              "timeout_s: 600.5\n"
                              "max_attempts: 5\n"
                              "validation:\n"
                              "  p10_min_dbm: -200.0\n"
                              "  p10_max_dbm: -70\n"
                              "  p90_min_dbm: -120.5\n"
                              "  min_percentile_range_db: 12\n"
                              "solver: {samples_per_tx: 2e6, max_depth: 5, los: false, "
                              "specular_reflection: no, refraction: off, seed: 7, "
                              "floor_dbm: -250, surface_offset: tight, diffraction: true, "
                              "edge_diffraction: yes, diffraction_model: luebbers, "
                              "noise: {figure_db: 7, bandwidth_hz: 2e7}}\n"
                              "measurement: {center: [10, -20.5], size: [300, 200], height: 2, "
                              "cell_size: [5, 2.5]}\n"
                              "optimizer: {objective: coverage, azimuth_deg: [-180, 180], "
                              "tilt_deg: [-5, 45.5], coverage_dbm: -95, sinr_db: 3}\n";

static void test_job_every_key(void)
{
    char *dir = fixture("every");
    bf_job_t job;
    char err[BF_ERRLEN];
    CHECK(load_job(dir, full_job, &job, err) == BF_OK);
    if (err[0])
        fprintf(stderr, "  %s\n", err);
    CHECK(job.name && !strcmp(job.name, "downtown-sweep"));
    CHECK(job.scene_count == 2);
    if (job.scene_count == 2)
        CHECK(!strcmp(job.scenes[0], "a") && !strcmp(job.scenes[1], "b"));
    CHECK(job.output && strstr(job.output, "/every/results") && job.output[0] == '/');
    CHECK(job.task == BF_TASK_BORESIGHT);
    CHECK(job.timeout_s == 600.5 && job.max_attempts == 5);
    CHECK(job.validation.p10_min_dbm == -200 && job.validation.p10_max_dbm == -70);
    CHECK(job.validation.p90_min_dbm == -120.5 && job.validation.min_percentile_range_db == 12);
    CHECK(job.solver.samples_per_tx == 2000000 && job.solver.max_depth == 5);
    CHECK(!job.solver.los && !job.solver.specular_reflection && !job.solver.refraction);
    CHECK(job.solver.seed == 7 && job.solver.floor_dbm == -250);
    CHECK(job.solver.surface_offset == BF_OFFSET_TIGHT);
    CHECK(job.solver.diffraction && job.solver.edge_diffraction &&
          job.solver.diffraction_model == BF_DIFFRACTION_LUEBBERS);
    CHECK(job.measurement.has_center && job.measurement.center[0] == 10 &&
          job.measurement.center[1] == -20.5);
    CHECK(job.measurement.has_size && job.measurement.size[0] == 300 &&
          job.measurement.size[1] == 200);
    CHECK(job.measurement.has_height && job.measurement.height == 2);
    CHECK(job.measurement.has_cell_size && job.measurement.cell_size[0] == 5 &&
          job.measurement.cell_size[1] == 2.5);
    CHECK(job.optimizer.objective == BF_OBJ_COVERAGE);
    CHECK(job.optimizer.azimuth_deg[0] == -180 && job.optimizer.azimuth_deg[1] == 180);
    CHECK(job.optimizer.tilt_deg[0] == -5 && job.optimizer.tilt_deg[1] == 45.5);
    CHECK(job.optimizer.coverage_dbm == -95);
    CHECK(job.solver.has_noise_figure && job.solver.noise_figure_db == 7);
    CHECK(job.solver.has_bandwidth && job.solver.bandwidth_hz == 2e7);
    CHECK(job.optimizer.has_sinr_db && job.optimizer.sinr_db == 3);
    CHECK(job.exec_command == NULL);
    bf_job_clear(&job);

    CHECK(load_job(dir,
                   "scenes: ./scenes\ntask: exec\n"
                   "exec: {command: [python3, my_task.py, \"{scene_dir}\", --out, '{output}']}\n",
                   &job, err) == BF_OK);
    CHECK(job.task == BF_TASK_EXEC && job.exec_argc == 5 && job.exec_command);
    if (job.exec_argc == 5) {
        CHECK(!strcmp(job.exec_command[0], "python3"));
        CHECK(!strcmp(job.exec_command[2], "{scene_dir}"));
        CHECK(!strcmp(job.exec_command[4], "{output}"));
        CHECK(job.exec_command[5] == NULL);
    }
    bf_job_clear(&job);

    const char *objectives[] = {"mean_dbm", "p10_dbm",      "mean_linear",
                                "coverage", "mean_sinr_db", "sinr_coverage"};
    for (size_t i = 0; i < BF_ARRAY_LEN(objectives); i++) {
        bf_objective_t o;
        CHECK(bf_objective_parse(objectives[i], &o) && o == (bf_objective_t)i);
        CHECK(!strcmp(bf_objective_name(o), objectives[i]));
    }
    bf_objective_t o;
    CHECK(!bf_objective_parse("median", &o) && !bf_objective_parse(NULL, &o));
    free(dir);
}

static void test_job_errors(void)
{
    char *dir = fixture("errors");
    /* unknown keys, at the top and nested */
    expect_job_error(dir, "scenes: ./scenes\nscene: x\n",
                     "job.yaml:2:1: unknown key 'scene' in job (allowed: name, scenes, "
                     "max_scenes, output, task",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\nsolver: {max_depth: 3, foo: 1}\n",
                     "job.yaml:2:24: unknown key 'foo' in solver (allowed: samples_per_tx", NULL);
    expect_job_error(dir, "scenes: ./scenes\nmeasurement:\n  height: 1\n  width: 3\n",
                     "job.yaml:4:3: unknown key 'width' in measurement", NULL);
    expect_job_error(dir, "scenes: ./scenes\nname: a\nname: b\n",
                     "job.yaml:3:1: duplicate key 'name' in job", NULL);
    /* JSON-only keys are not job-file keys */
    expect_job_error(dir, "scenes: ./scenes\nscenes_root: /tmp\n",
                     "job.yaml:2:1: unknown key 'scenes_root'", NULL);

    /* wrong types */
    expect_job_error(dir, "scenes: ./scenes\nsolver:\n  los: maybe\n",
                     "job.yaml:3:8: field 'solver.los': expected true or false, got 'maybe'", NULL);
    expect_job_error(dir, "scenes: ./scenes\nsolver:\n  los: \"true\"\n",
                     "job.yaml:3:8: field 'solver.los'", NULL);
    expect_job_error(dir, "scenes: ./scenes\nsolver: 3\n",
                     "job.yaml:2:9: field 'solver': expected a mapping, got '3'", NULL);
    expect_job_error(dir, "scenes: ./scenes\ntimeout_s: soon\n",
                     "job.yaml:2:12: field 'timeout_s': expected a number in (0, 8640000], got "
                     "'soon'",
                     NULL);
    expect_job_error(dir, "scenes: [a, b]\n",
                     "job.yaml:1:9: field 'scenes': expected a non-empty "
                     "string, got a list",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\nmeasurement: {cell_size: 5}\n",
                     "job.yaml:2:26: field 'measurement.cell_size': expected a list of 2 numbers, "
                     "got '5'",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\nmeasurement: {center: [1, 2, 3]}\n",
                     "job.yaml:2:23: field 'measurement.center': expected a list of 2 numbers, "
                     "got 3 items",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\nmeasurement: {height: [1]}\n",
                     "job.yaml:2:23: field 'measurement.height': expected a number", NULL);
    expect_job_error(dir, "scenes: ./scenes\nsolver: {seed: abc}\n",
                     "job.yaml:2:16: field 'solver.seed': expected an integer", NULL);
    expect_job_error(dir, "scenes: ./scenes\ntask: exec\nexec: {command: python3 x.py}\n",
                     "job.yaml:3:17: field 'exec.command': expected a list of strings", NULL);
    expect_job_error(dir, "scenes: ./scenes\ntask: exec\nexec: {command: [python3, [x]]}\n",
                     "job.yaml:3:27: field 'exec.command[1]': expected a non-empty string", NULL);
    expect_job_error(dir, "scenes: ./scenes\ntask: exec\nexec: {command: [python3, '']}\n",
                     "job.yaml:3:27: field 'exec.command[1]'", NULL);

    /* out of range */
    expect_job_error(dir,
                     "name: sweep\nscenes: ./scenes\nmax_scenes: 2\noutput: ./out\ntask: "
                     "boresight\nsolver:\n  max_depth: -1\n",
                     "job.yaml:7:14: field 'solver.max_depth': expected an integer in [0, 32], got "
                     "'-1'",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\nsolver: {max_depth: 33}\n",
                     "job.yaml:2:21: field 'solver.max_depth': expected an integer in [0, 32], got "
                     "'33'",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\nsolver: {max_depth: 2.5}\n",
                     "job.yaml:2:21: field 'solver.max_depth'", "got '2.5'");
    expect_job_error(dir, "scenes: ./scenes\nsolver: {samples_per_tx: 0}\n",
                     "job.yaml:2:26: field 'solver.samples_per_tx': expected an integer in [1, "
                     "10000000000]",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\nsolver: {samples_per_tx: 1e11}\n",
                     "field 'solver.samples_per_tx'", "got '1e11'");
    expect_job_error(dir, "scenes: ./scenes\ntimeout_s: 0\n",
                     "job.yaml:2:12: field 'timeout_s': expected a number in (0, 8640000], got '0'",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\ntimeout_s: .inf\n", "job.yaml:2:12:", "got '.inf'");
    expect_job_error(dir, "scenes: ./scenes\nmax_attempts: 0\n",
                     "job.yaml:2:15: field 'max_attempts': expected an integer in [1, 100]", NULL);
    expect_job_error(dir, "scenes: ./scenes\nmax_scenes: 0\n", "job.yaml:2:13: field 'max_scenes'",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\nmeasurement: {cell_size: [5, 0]}\n",
                     "job.yaml:2:30: field 'measurement.cell_size[1]': expected a number in (0, "
                     "1000000], got '0'",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\nmeasurement: {size: [-1, 5]}\n",
                     "job.yaml:2:22: field 'measurement.size[0]'", NULL);
    expect_job_error(dir, "scenes: ./scenes\noptimizer:\n  tilt_deg: [-10, 95]\n",
                     "job.yaml:3:19: field 'optimizer.tilt_deg[1]': expected a number in [-90, "
                     "90], got '95'",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\noptimizer:\n  tilt_deg: [30, -10]\n",
                     "job.yaml:3:13: field 'optimizer.tilt_deg': expected [low, high] with low < "
                     "high, got [30, -10]",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\noptimizer: {azimuth_deg: [10, 10]}\n",
                     "job.yaml:2:26: field 'optimizer.azimuth_deg'", "low < high");
    expect_job_error(dir, "scenes: ./scenes\nsolver: {diffraction_model: keller}\n",
                     "job.yaml:2:29: field 'solver.diffraction_model': expected one of "
                     "sionna|luebbers, got 'keller'",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\nsolver: {surface_offset: loose}\n",
                     "field 'solver.surface_offset': expected one of sionna|tight, got 'loose'",
                     NULL);
    expect_job_error(
        dir, "scenes: ./scenes\noptimizer: {objective: median}\n",
        "job.yaml:2:24: field 'optimizer.objective': expected one of "
        "mean_dbm|p10_dbm|mean_linear|coverage|mean_sinr_db|sinr_coverage, got 'median'",
        NULL);
    expect_job_error(dir, "scenes: ./scenes\nsolver: {noise: {bandwidth_hz: 0}}\n",
                     "job.yaml:2:32: field 'solver.noise.bandwidth_hz': expected a number in (0,",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\nsolver: {noise: {figure: 7}}\n",
                     "unknown key 'figure' in solver.noise", NULL);
    expect_job_error(dir, "scenes: ./scenes\nvalidation: {p10_min_dbm: -1e4}\n",
                     "job.yaml:2:27: field 'validation.p10_min_dbm': expected a number in [-500, "
                     "500]",
                     NULL);
    expect_job_error(dir, "scenes: ./scenes\nsolver: {seed: 9223372036854775808}\n",
                     "job.yaml:2:16: field 'solver.seed'", NULL);
    expect_job_error(dir, "scenes: ./scenes\nname: ../etc\n",
                     "job.yaml:2:7: field 'name': '../etc' is not a usable name", NULL);

    /* task and exec */
    expect_job_error(dir, "scenes: ./scenes\ntask: run\n",
                     "job.yaml:2:7: field 'task': expected one of boresight|exec, got 'run'", NULL);
    expect_job_error(dir, "scenes: ./scenes\ntask: exec\n",
                     "job.yaml:2:7: field 'exec.command': missing", NULL);
    expect_job_error(dir, "scenes: ./scenes\ntask: exec\nexec: {}\n",
                     "job.yaml:3:7: field 'exec.command': missing", NULL);
    expect_job_error(dir, "scenes: ./scenes\ntask: exec\nexec: {command: []}\n",
                     "job.yaml:3:17: field 'exec.command': expected 1 to 256 strings, got 0", NULL);
    expect_job_error(dir, "scenes: ./scenes\nexec: {command: [true]}\n",
                     "job.yaml:2:7: field 'exec': only allowed with task: exec", NULL);

    /* scenes */
    expect_job_error(dir, "name: x\nscenes: ./nope\n",
                     "job.yaml:2:9: field 'scenes': no such directory './nope'", NULL);
    expect_job_error(dir, "scenes: ./scenes/README.txt\n",
                     "job.yaml:1:9: field 'scenes': not a directory './scenes/README.txt'", NULL);
    expect_job_error(dir, "scenes: empty\n",
                     "job.yaml:1:9: field 'scenes': no scene directories in '", NULL);
    expect_job_error(dir, "name: x\n", "job.yaml:1:1: missing required key 'scenes' in job", NULL);
    expect_job_error(dir, "", "job.yaml:1:1: missing required key 'scenes'", NULL);

    /* not a mapping, syntax errors */
    expect_job_error(dir, "- a\n- b\n", "job.yaml:1:1: field 'job': expected a mapping", NULL);
    expect_job_error(dir, "scenes: ./scenes\nsolver: {max_depth: 3\n", "job.yaml:3:1:", NULL);
    expect_job_error(dir, "scenes: &s ./scenes\n", "job.yaml:1:9: anchors are not supported", NULL);

    /* a file that is not there */
    bf_job_t job;
    char err[BF_ERRLEN];
    char *missing = bf_asprintf("%s/nope.yaml", dir);
    CHECK(bf_job_load(missing, &job, err) == BF_ENOENT);
    CHECK_HAS(err, "nope.yaml");
    CHECK(job.name == NULL);
    free(missing);
    free(dir);
}

static void test_job_scenes(void)
{
    char *dir = make_dir(root, "sorting");
    const char *names[] = {"b10", "b2", "A", "a", "_x", "z"};
    for (size_t i = 0; i < BF_ARRAY_LEN(names); i++) {
        char *p = bf_asprintf("scenes/%s", names[i]);
        free(make_dir(dir, p));
        free(p);
    }
    free(make_dir(dir, "scenes/.hidden"));
    write_text(dir, "scenes/zz_file", "x");
    /* a symlink to a directory is a scene, a dangling one is not */
    char *target = bf_asprintf("%s/scenes/z", dir);
    char *link = bf_asprintf("%s/scenes/y_link", dir);
    CHECK(symlink(target, link) == 0);
    free(link);
    link = bf_asprintf("%s/scenes/dangling", dir);
    CHECK(symlink("/no/such/target", link) == 0);
    free(link);
    free(target);

    bf_job_t job;
    char err[BF_ERRLEN];
    CHECK(load_job(dir, "scenes: scenes\n", &job, err) == BF_OK);
    const char *want[] = {"A", "_x", "a", "b10", "b2", "y_link", "z"};
    CHECK(job.scene_count == BF_ARRAY_LEN(want));
    for (size_t i = 0; i < job.scene_count && i < BF_ARRAY_LEN(want); i++)
        CHECK(!strcmp(job.scenes[i], want[i]));
    bf_job_clear(&job);

    CHECK(load_job(dir, "scenes: scenes\nmax_scenes: 3\n", &job, err) == BF_OK);
    CHECK(job.scene_count == 3);
    if (job.scene_count == 3)
        CHECK(!strcmp(job.scenes[0], "A") && !strcmp(job.scenes[2], "a"));
    bf_job_clear(&job);

    CHECK(load_job(dir, "scenes: scenes\nmax_scenes: 1000\n", &job, err) == BF_OK);
    CHECK(job.scene_count == BF_ARRAY_LEN(want));
    bf_job_clear(&job);
    free(dir);
}

/* ---- JSON --------------------------------------------------------------- */

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static bool same_job(const bf_job_t *a, const bf_job_t *b, bool scenes)
{
    bool ok = same_str(a->name, b->name) && same_str(a->output, b->output) && a->task == b->task;
    ok = ok && a->timeout_s == b->timeout_s && a->max_attempts == b->max_attempts;
    ok = ok && !memcmp(&a->validation, &b->validation, sizeof a->validation);
    ok = ok && a->solver.samples_per_tx == b->solver.samples_per_tx &&
         a->solver.max_depth == b->solver.max_depth && a->solver.los == b->solver.los &&
         a->solver.specular_reflection == b->solver.specular_reflection &&
         a->solver.refraction == b->solver.refraction && a->solver.seed == b->solver.seed &&
         a->solver.floor_dbm == b->solver.floor_dbm &&
         a->solver.surface_offset == b->solver.surface_offset &&
         a->solver.diffraction == b->solver.diffraction &&
         a->solver.edge_diffraction == b->solver.edge_diffraction &&
         a->solver.diffraction_model == b->solver.diffraction_model;
    const bf_measurement_t *m = &a->measurement, *n = &b->measurement;
    ok = ok && m->has_center == n->has_center && m->has_size == n->has_size &&
         m->has_height == n->has_height && m->has_cell_size == n->has_cell_size &&
         !memcmp(m->center, n->center, sizeof m->center) &&
         !memcmp(m->size, n->size, sizeof m->size) && m->height == n->height &&
         !memcmp(m->cell_size, n->cell_size, sizeof m->cell_size);
    ok = ok && a->optimizer.objective == b->optimizer.objective &&
         !memcmp(a->optimizer.azimuth_deg, b->optimizer.azimuth_deg,
                 sizeof a->optimizer.azimuth_deg) &&
         !memcmp(a->optimizer.tilt_deg, b->optimizer.tilt_deg, sizeof a->optimizer.tilt_deg) &&
         a->optimizer.coverage_dbm == b->optimizer.coverage_dbm &&
         a->optimizer.has_sinr_db == b->optimizer.has_sinr_db &&
         a->optimizer.sinr_db == b->optimizer.sinr_db &&
         a->solver.has_noise_figure == b->solver.has_noise_figure &&
         a->solver.noise_figure_db == b->solver.noise_figure_db &&
         a->solver.has_bandwidth == b->solver.has_bandwidth &&
         a->solver.bandwidth_hz == b->solver.bandwidth_hz;
    ok = ok && a->exec_argc == b->exec_argc && !a->exec_command == !b->exec_command;
    for (size_t i = 0; ok && i < a->exec_argc; i++)
        ok = same_str(a->exec_command[i], b->exec_command[i]);
    if (scenes) {
        ok = ok && same_str(a->scenes_root, b->scenes_root) && a->scene_count == b->scene_count;
        for (size_t i = 0; ok && i < a->scene_count; i++)
            ok = same_str(a->scenes[i], b->scenes[i]);
    }
    return ok;
}

static void round_trip(const bf_job_t *job)
{
    char err[BF_ERRLEN] = "";
    for (int with = 0; with < 2; with++) {
        json_t *doc = bf_job_to_json(job, with);
        CHECK(doc != NULL);
        CHECK(!with == !json_object_get(doc, "scenes"));
        CHECK(json_object_get(doc, "scenes_root") != NULL); /* a task needs the root */
        CHECK(json_object_get(doc, "max_scenes") == NULL);
        /* through text, as over the network */
        char *text = json_dumps(doc, JSON_COMPACT);
        json_t *back = json_loads(text, 0, NULL);
        CHECK(back != NULL);
        bf_job_t again;
        bf_err_t rc = bf_job_from_json(back, &again, err);
        CHECK(rc == BF_OK);
        if (rc != BF_OK)
            fprintf(stderr, "  from_json: %s\n  %s\n", err, text);
        CHECK(same_job(job, &again, with));
        if (!with)
            CHECK(again.scene_count == 0 && again.scenes == NULL && again.scenes_root != NULL);
        json_t *doc2 = bf_job_to_json(&again, with);
        CHECK(json_equal(doc, doc2));
        json_decref(doc2);
        bf_job_clear(&again);
        json_decref(back);
        free(text);
        json_decref(doc);
    }
}

static void test_json_round_trip(void)
{
    char *dir = fixture("json");
    bf_job_t job;
    char err[BF_ERRLEN];
    CHECK(load_job(dir, full_job, &job, err) == BF_OK);
    round_trip(&job);

    json_t *doc = bf_job_to_json(&job, true);
    json_t *solver = json_object_get(doc, "solver");
    CHECK(json_integer_value(json_object_get(solver, "max_depth")) == 5);
    CHECK(json_is_false(json_object_get(solver, "los")));
    CHECK(!strcmp(json_string_value(json_object_get(doc, "task")), "boresight"));
    CHECK(
        !strcmp(json_string_value(json_object_get(json_object_get(doc, "optimizer"), "objective")),
                "coverage"));
    CHECK(json_array_size(json_object_get(doc, "scenes")) == 2);
    CHECK(json_object_get(doc, "exec") == NULL);
    json_decref(doc);
    bf_job_clear(&job);

    /* defaults: measurement carries only the fields that were set */
    CHECK(load_job(dir, "scenes: ./scenes\nmeasurement: {height: 3}\n", &job, err) == BF_OK);
    doc = bf_job_to_json(&job, false);
    json_t *m = json_object_get(doc, "measurement");
    CHECK(json_object_size(m) == 1 && json_real_value(json_object_get(m, "height")) == 3);
    json_decref(doc);
    round_trip(&job);
    bf_job_clear(&job);

    CHECK(load_job(dir, "scenes: ./scenes\n", &job, err) == BF_OK);
    doc = bf_job_to_json(&job, false);
    CHECK(json_object_get(doc, "measurement") == NULL);
    json_decref(doc);
    round_trip(&job);
    bf_job_clear(&job);

    CHECK(load_job(dir, "scenes: ./scenes\ntask: exec\nexec: {command: [/bin/echo, \"{scene}\"]}\n",
                   &job, err) == BF_OK);
    round_trip(&job);
    doc = bf_job_to_json(&job, false);
    CHECK(json_array_size(json_object_get(json_object_get(doc, "exec"), "command")) == 2);
    json_decref(doc);
    bf_job_clear(&job);

    /* a hand-built job (as the bench builds one) */
    bf_job_defaults(&job);
    job.name = bf_strdup("bench");
    job.output = bf_strdup("/tmp/out");
    job.scenes_root = bf_strdup("/tmp/scenes");
    job.scenes = calloc(3, sizeof(char *));
    job.scenes[0] = bf_strdup("s0");
    job.scenes[1] = bf_strdup("s1");
    job.scene_count = 2;
    round_trip(&job);
    bf_job_clear(&job);
    free(dir);
}

/* A valid document to break one field at a time. */
static json_t *good_doc(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:[s,s], s:{s:i}}", "name", "j", "output", "/out",
                     "task", "boresight", "scenes_root", "/scenes", "scenes", "a", "b", "solver",
                     "max_depth", 3);
}

static void expect_json_error(json_t *doc, const char *want)
{
    bf_job_t job;
    char err[BF_ERRLEN] = "";
    bf_err_t rc = bf_job_from_json(doc, &job, err);
    CHECK(rc == BF_EINVAL);
    if (rc == BF_OK) {
        char *text = json_dumps(doc, JSON_COMPACT);
        fprintf(stderr, "  accepted: %s\n", text);
        free(text);
    }
    CHECK_HAS(err, want);
    CHECK(job.name == NULL && job.scenes == NULL);
    bf_job_clear(&job);
    json_decref(doc);
}

static void test_json_hostile(void)
{
    bf_job_t job;
    char err[BF_ERRLEN];
    json_t *doc = good_doc();
    CHECK(bf_job_from_json(doc, &job, err) == BF_OK);
    CHECK(job.scene_count == 2 && job.solver.max_depth == 3 && job.solver.seed == 42);
    bf_job_clear(&job);
    json_decref(doc);

    CHECK(bf_job_from_json(NULL, &job, err) == BF_EINVAL);
    expect_json_error(json_array(), "field 'job': expected an object, got a list");
    expect_json_error(json_string("x"), "expected an object");

    /* bad types */
    doc = good_doc();
    json_object_set_new(json_object_get(doc, "solver"), "max_depth", json_string("3"));
    expect_json_error(doc,
                      "field 'solver.max_depth': expected an integer in [0, 32], got a string");
    doc = good_doc();
    json_object_set_new(json_object_get(doc, "solver"), "max_depth", json_integer(-1));
    expect_json_error(doc, "field 'solver.max_depth': expected an integer in [0, 32], got '-1'");
    doc = good_doc();
    json_object_set_new(json_object_get(doc, "solver"), "max_depth", json_real(2.5));
    expect_json_error(doc, "field 'solver.max_depth'");
    doc = good_doc();
    json_object_set_new(json_object_get(doc, "solver"), "los", json_integer(1));
    expect_json_error(doc, "field 'solver.los': expected true or false, got a number");
    doc = good_doc();
    json_object_set_new(doc, "solver", json_integer(1));
    expect_json_error(doc, "field 'solver': expected an object, got a number");
    doc = good_doc();
    json_object_set_new(doc, "timeout_s", json_string("1"));
    expect_json_error(doc, "field 'timeout_s': expected a number in (0, 8640000], got a string");
    doc = good_doc();
    json_object_set_new(doc, "timeout_s", json_real(-1));
    expect_json_error(doc, "field 'timeout_s': expected a number in (0, 8640000], got '-1.0'");
    doc = good_doc();
    json_object_set_new(doc, "name", json_integer(5));
    expect_json_error(doc, "field 'name': expected a string, got a number");
    doc = good_doc();
    json_object_set_new(doc, "task", json_string("rm -rf"));
    expect_json_error(doc, "field 'task': expected one of boresight|exec");
    doc = good_doc();
    json_object_set_new(doc, "scenes", json_string("a"));
    expect_json_error(doc, "field 'scenes': expected a list of strings, got a string");
    doc = good_doc();
    json_array_append_new(json_object_get(doc, "scenes"), json_integer(3));
    expect_json_error(doc, "field 'scenes[2]': expected a string, got a number");
    doc = good_doc();
    json_object_set_new(doc, "scenes", json_array());
    expect_json_error(doc, "field 'scenes': expected 1 to 10000000 strings, got 0");
    doc = good_doc();
    json_object_set_new(doc, "optimizer", json_pack("{s:[f,f]}", "tilt_deg", 10.0, -10.0));
    expect_json_error(doc, "field 'optimizer.tilt_deg': expected [low, high] with low < high");
    doc = good_doc();
    json_object_set_new(doc, "optimizer", json_pack("{s:[f]}", "azimuth_deg", 10.0));
    expect_json_error(doc, "field 'optimizer.azimuth_deg': expected a list of 2 numbers");
    doc = good_doc();
    json_object_set_new(doc, "measurement", json_pack("{s:[f,f]}", "cell_size", 0.0, 1.0));
    expect_json_error(doc, "field 'measurement.cell_size[0]': expected a number in (0, 1000000]");
    doc = good_doc();
    json_object_set_new(doc, "measurement", json_pack("{s:[f,s]}", "center", 0.0, "x"));
    expect_json_error(doc, "field 'measurement.center[1]': expected a number");
    doc = good_doc();
    json_object_set_new(json_object_get(doc, "solver"), "seed", json_integer(-5));
    expect_json_error(doc, "field 'solver.seed'");

    /* unsafe or duplicate scene names */
    const char *unsafe[] = {"../etc", "a/b", "..", ".", "", "tab\tname"};
    for (size_t i = 0; i < BF_ARRAY_LEN(unsafe); i++) {
        doc = good_doc();
        json_array_append_new(json_object_get(doc, "scenes"), json_string(unsafe[i]));
        expect_json_error(doc, "field 'scenes[2]'");
    }
    doc = good_doc();
    json_array_append_new(json_object_get(doc, "scenes"), json_string("a"));
    expect_json_error(doc, "field 'scenes': duplicate scene name 'a'");
    doc = good_doc();
    json_array_append_new(json_object_get(doc, "scenes"), json_stringn("x\0y", 3));
    expect_json_error(doc, "field 'scenes[2]': NUL character");

    /* missing required keys, keys that go together */
    const char *required[] = {"name", "output", "task"};
    for (size_t i = 0; i < BF_ARRAY_LEN(required); i++) {
        doc = good_doc();
        json_object_del(doc, required[i]);
        char want[64];
        snprintf(want, sizeof want, "field '%s': missing", required[i]);
        expect_json_error(doc, want);
    }
    doc = good_doc();
    json_object_del(doc, "scenes_root");
    expect_json_error(doc, "field 'scenes_root': required together with 'scenes'");
    /* a task's spec: the root without the list is fine */
    doc = good_doc();
    json_object_del(doc, "scenes");
    {
        bf_job_t only_root;
        CHECK(bf_job_from_json(doc, &only_root, NULL) == BF_OK && only_root.scene_count == 0 &&
              only_root.scenes_root != NULL);
        bf_job_clear(&only_root);
        json_decref(doc);
    }

    /* paths must be absolute; names single components; strings bounded */
    doc = good_doc();
    json_object_set_new(doc, "output", json_string("relative/out"));
    expect_json_error(doc, "field 'output': expected an absolute path");
    doc = good_doc();
    json_object_set_new(doc, "scenes_root", json_string("../up"));
    expect_json_error(doc, "field 'scenes_root': expected an absolute path");
    doc = good_doc();
    json_object_set_new(doc, "name", json_string("../../etc"));
    expect_json_error(doc, "field 'name': '../../etc' is not a usable name");
    char *longs = malloc(5000);
    memset(longs, 'a', 4999);
    longs[0] = '/';
    longs[4999] = '\0';
    doc = good_doc();
    json_object_set_new(doc, "output", json_string(longs));
    expect_json_error(doc, "field 'output': string longer than 4096 bytes");
    free(longs);

    /* unknown keys, YAML-only keys */
    doc = good_doc();
    json_object_set_new(doc, "rm", json_true());
    expect_json_error(doc, "unknown key 'rm' in job (allowed: name, scenes_root, scenes, output");
    doc = good_doc();
    json_object_set_new(json_object_get(doc, "solver"), "bounces", json_integer(1));
    expect_json_error(doc, "unknown key 'bounces' in solver");
    doc = good_doc();
    json_object_set_new(doc, "max_scenes", json_integer(1));
    expect_json_error(doc, "unknown key 'max_scenes'");

    /* task and exec */
    doc = good_doc();
    json_object_set_new(doc, "task", json_string("exec"));
    expect_json_error(doc, "field 'exec.command': missing");
    doc = good_doc();
    json_object_set_new(doc, "exec", json_pack("{s:[s]}", "command", "/bin/true"));
    expect_json_error(doc, "field 'exec': only allowed with task: exec");
    doc = good_doc();
    json_object_set_new(doc, "task", json_string("exec"));
    json_object_set_new(doc, "exec", json_pack("{s:[s,i]}", "command", "/bin/true", 1));
    expect_json_error(doc, "field 'exec.command[1]': expected a string");
    doc = good_doc();
    json_object_set_new(doc, "task", json_string("exec"));
    json_t *argv = json_array();
    for (int i = 0; i < 257; i++)
        json_array_append_new(argv, json_string("x"));
    json_object_set_new(doc, "exec", json_pack("{s:o}", "command", argv));
    expect_json_error(doc, "field 'exec.command': expected 1 to 256 strings, got 257");

    /* accepted: integral reals for integers, integers for reals */
    doc = good_doc();
    json_object_set_new(json_object_get(doc, "solver"), "samples_per_tx", json_real(1e6));
    json_object_set_new(doc, "timeout_s", json_integer(60));
    CHECK(bf_job_from_json(doc, &job, err) == BF_OK);
    CHECK(job.solver.samples_per_tx == 1000000 && job.timeout_s == 60);
    bf_job_clear(&job);
    json_decref(doc);
}

/* ---- fleet file --------------------------------------------------------- */

static bf_err_t load_fleet(const char *dir, const char *text, bf_fleet_t *fleet, char *err)
{
    write_text(dir, "fleet.yaml", text);
    char *path = bf_asprintf("%s/fleet.yaml", dir);
    bf_fleet_defaults(fleet);
    err[0] = '\0';
    bf_err_t rc = bf_fleet_load(path, fleet, err);
    free(path);
    return rc;
}

static void expect_fleet_error(const char *dir, const char *text, const char *want)
{
    bf_fleet_t fleet;
    char err[BF_ERRLEN];
    CHECK(load_fleet(dir, text, &fleet, err) == BF_EINVAL);
    CHECK_HAS(err, want);
    bf_fleet_clear(&fleet);
}

static void test_fleet(void)
{
    char *dir = make_dir(root, "fleet");
    bf_fleet_t fleet;
    char err[BF_ERRLEN];

    unsetenv("BEAMFLEET_BROKER");
    bf_fleet_defaults(&fleet);
    CHECK(!strcmp(fleet.broker_endpoint, "tcp://127.0.0.1:5555"));
    CHECK(!strcmp(fleet.broker_bind, "tcp://127.0.0.1:5555"));
    CHECK(!strcmp(fleet.broker_state, "./beamfleet-state"));
    CHECK(!fleet.insecure && fleet.heartbeat_interval_ms == 1000 && fleet.heartbeat_liveness == 3 &&
          fleet.prefetch == 1);
    CHECK(!strcmp(fleet.collector_publish, "tcp://127.0.0.1:5557"));
    CHECK(fleet.allow_exec_count == 0 && fleet.allow_exec && fleet.allow_exec[0] == NULL);
    CHECK(!fleet.security_keys && !fleet.security_identity && !fleet.metrics_listen);
    bf_fleet_clear(&fleet);
    CHECK(fleet.broker_endpoint == NULL);
    bf_fleet_clear(&fleet);

    setenv("BEAMFLEET_BROKER", "tcp://head:6000", 1);
    bf_fleet_defaults(&fleet);
    CHECK(!strcmp(fleet.broker_endpoint, "tcp://head:6000"));
    bf_fleet_clear(&fleet);

    /* the file wins over the environment; an empty file changes nothing */
    CHECK(load_fleet(dir, "", &fleet, err) == BF_OK);
    CHECK(!strcmp(fleet.broker_endpoint, "tcp://head:6000"));
    bf_fleet_clear(&fleet);
    CHECK(load_fleet(dir,
                     "broker: {endpoint: tcp://head:5555, bind: tcp://0.0.0.0:5555, "
                     "state: /var/lib/beamfleet, insecure: true}\n"
                     "heartbeat: {interval_ms: 250, liveness: 5}\n"
                     "collector: {publish: tcp://127.0.0.1:6557}\n"
                     "worker: {allow_exec: [/opt/a.py, /opt/b.sh], prefetch: 4}\n"
                     "security: {keys: /etc/beamfleet/keys, identity: node3-gpu0}\n"
                     "metrics: {listen: 127.0.0.1:9464}\n",
                     &fleet, err) == BF_OK);
    if (err[0])
        fprintf(stderr, "  %s\n", err);
    CHECK(!strcmp(fleet.broker_endpoint, "tcp://head:5555"));
    CHECK(!strcmp(fleet.broker_bind, "tcp://0.0.0.0:5555"));
    CHECK(!strcmp(fleet.broker_state, "/var/lib/beamfleet"));
    CHECK(fleet.insecure);
    CHECK(fleet.heartbeat_interval_ms == 250 && fleet.heartbeat_liveness == 5);
    CHECK(!strcmp(fleet.collector_publish, "tcp://127.0.0.1:6557"));
    CHECK(fleet.allow_exec_count == 2 && !strcmp(fleet.allow_exec[1], "/opt/b.sh") &&
          fleet.allow_exec[2] == NULL);
    CHECK(fleet.prefetch == 4);
    CHECK(!strcmp(fleet.security_keys, "/etc/beamfleet/keys"));
    CHECK(!strcmp(fleet.security_identity, "node3-gpu0"));
    CHECK(!strcmp(fleet.metrics_listen, "127.0.0.1:9464"));
    bf_fleet_clear(&fleet);
    unsetenv("BEAMFLEET_BROKER");

    CHECK(load_fleet(dir, "worker: {allow_exec: []}\n", &fleet, err) == BF_OK);
    CHECK(fleet.allow_exec_count == 0 && fleet.allow_exec && !fleet.allow_exec[0]);
    bf_fleet_clear(&fleet);

    expect_fleet_error(dir, "brokers: {}\n",
                       "fleet.yaml:1:1: unknown key 'brokers' in fleet (allowed: broker, "
                       "heartbeat, collector, worker, security, metrics)");
    expect_fleet_error(dir, "broker: {endpoint: x, port: 5}\n",
                       "fleet.yaml:1:23: unknown key 'port' in broker (allowed: endpoint, bind, "
                       "state, insecure, retain_s)");
    expect_fleet_error(dir, "heartbeat: {interval_ms: 10}\n",
                       "fleet.yaml:1:26: field 'heartbeat.interval_ms': expected an integer in "
                       "[50, 60000], got '10'");
    expect_fleet_error(dir, "heartbeat:\n  liveness: 101\n",
                       "fleet.yaml:2:13: field 'heartbeat.liveness': expected an integer in [1, "
                       "100]");
    expect_fleet_error(dir, "worker: {prefetch: 0}\n",
                       "fleet.yaml:1:20: field 'worker.prefetch': expected an integer in [1, "
                       "1024]");
    expect_fleet_error(dir, "worker: {allow_exec: /bin/sh}\n",
                       "fleet.yaml:1:22: field 'worker.allow_exec': expected a list of strings");
    expect_fleet_error(dir, "broker: {insecure: 1}\n",
                       "fleet.yaml:1:20: field 'broker.insecure': expected true or false");
    expect_fleet_error(dir, "security: {keys: /k}\n",
                       "fleet.yaml:1:11: field 'security': needs both 'keys' and 'identity'");
    expect_fleet_error(dir, "metrics: {listen: ''}\n",
                       "fleet.yaml:1:19: field 'metrics.listen': expected a non-empty string");

    char *missing = bf_asprintf("%s/none.yaml", dir);
    bf_fleet_defaults(&fleet);
    CHECK(bf_fleet_load(missing, &fleet, err) == BF_ENOENT);
    bf_fleet_clear(&fleet);
    free(missing);
    free(dir);
}

static void remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char *child = bf_asprintf("%s/%s", path, e->d_name);
            remove_tree(child);
            free(child);
        }
        if (d)
            closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* Key of scene index i of the job text in dir (CHECKed to succeed). */
static void key_of(const char *dir, const char *text, size_t i, char key[BF_KEY_LEN + 1])
{
    bf_job_t job;
    char err[BF_ERRLEN];
    key[0] = '\0';
    CHECK(load_job(dir, text, &job, err) == BF_OK);
    CHECK(bf_task_key(&job, i, key, err) == BF_OK);
    CHECK(bf_task_key_valid(key));
    bf_job_clear(&job);
}

/* bf_task_key: the same content gives the same key whatever the job's
   name, output or limits; a byte of a scene file, a new file, a solver
   setting, the exec command or the task kind gives another. */
static void test_task_key(void)
{
    char *dir = make_dir(root, "keys");
    free(make_dir(dir, "scenes/a/meshes"));
    free(make_dir(dir, "scenes/b"));
    write_text(dir, "scenes/a/scene.xml", "<scene/>");
    write_text(dir, "scenes/a/meshes/m.ply", "ply 1");
    write_text(dir, "scenes/b/scene.xml", "<scene/>");
    write_text(dir, "scenes/b/meshes_m.ply", "ply 1"); /* b differs from a by a path */
    const char *exec = "scenes: scenes\ntask: exec\nexec: {command: [prog, '{scene_dir}']}\n";
    char a[BF_KEY_LEN + 1], b[BF_KEY_LEN + 1], k[BF_KEY_LEN + 1];
    key_of(dir, exec, 0, a);
    key_of(dir, exec, 1, b);
    CHECK(strcmp(a, b) != 0);
    key_of(dir,
           "name: other\nscenes: scenes\noutput: elsewhere\ntimeout_s: 5\nmax_attempts: 7\n"
           "task: exec\nexec: {command: [prog, '{scene_dir}']}\n",
           0, k);
    CHECK(!strcmp(a, k)); /* name, output and limits do not count */
    key_of(dir, exec, 0, k);
    CHECK(!strcmp(a, k)); /* the same twice */
    write_text(dir, "scenes/a/meshes/m.ply", "ply 2");
    key_of(dir, exec, 0, k);
    CHECK(strcmp(a, k) != 0); /* one byte of a file */
    write_text(dir, "scenes/a/meshes/m.ply", "ply 1");
    key_of(dir, exec, 0, k);
    CHECK(!strcmp(a, k)); /* and back */
    write_text(dir, "scenes/a/notes.txt", "");
    key_of(dir, exec, 0, k);
    CHECK(strcmp(a, k) != 0); /* a new (even empty) file */
    char *notes = bf_asprintf("%s/scenes/a/notes.txt", dir);
    CHECK(unlink(notes) == 0);
    free(notes);
    key_of(dir, "scenes: scenes\ntask: exec\nexec: {command: [prog, -v, '{scene_dir}']}\n", 0, k);
    CHECK(strcmp(a, k) != 0); /* the command */
    char bs[BF_KEY_LEN + 1];
    key_of(dir, "scenes: scenes\n", 0, bs);
    CHECK(strcmp(a, bs) != 0); /* the task kind */
    key_of(dir, "scenes: scenes\nsolver: {seed: 7}\n", 0, k);
    CHECK(strcmp(bs, k) != 0); /* a solver setting */
    key_of(dir, "scenes: scenes\noptimizer: {tilt_deg: [0, 10]}\n", 0, k);
    CHECK(strcmp(bs, k) != 0); /* the search space */
    CHECK(!bf_task_key_valid("0123") && !bf_task_key_valid(NULL) &&
          !bf_task_key_valid("0123456789ABCDEF0123456789abcdef"));
    free(dir);
}

/* bf_task_keys: every key as bf_task_key gives it, over enough scenes for
   its threads; an error names the first scene that fails in job order
   (two link loops: the later one may fail first on another thread). */
static void test_task_keys(void)
{
    char *dir = make_dir(root, "keys-many");
    enum { N = 300 };
    for (int i = 0; i < N; i++) {
        char rel[64], body[32];
        snprintf(rel, sizeof rel, "scenes/s%03d", i);
        free(make_dir(dir, rel));
        snprintf(rel, sizeof rel, "scenes/s%03d/scene.xml", i);
        snprintf(body, sizeof body, "<scene n='%d'/>", i % 7); /* some contents repeat */
        write_text(dir, rel, body);
    }
    const char *exec = "scenes: scenes\ntask: exec\nexec: {command: [prog, '{scene_dir}']}\n";
    bf_job_t job;
    char err[BF_ERRLEN];
    CHECK(load_job(dir, exec, &job, err) == BF_OK);
    CHECK(job.scene_count == N);
    char(*keys)[BF_KEY_LEN + 1] = calloc(N, sizeof *keys);
    REQUIRE(keys);
    CHECK(bf_task_keys(&job, keys, err) == BF_OK);
    int same = 0;
    for (size_t i = 0; i < job.scene_count; i++) {
        char k[BF_KEY_LEN + 1];
        CHECK(bf_task_key(&job, i, k, err) == BF_OK);
        same += !strcmp(k, keys[i]);
    }
    CHECKF(same == N, "%d of %d keys as bf_task_key gives them", same, N);
    CHECK(!strcmp(keys[0], keys[7]) && strcmp(keys[0], keys[1]) != 0); /* by content, not name */
    for (int i = 0; i < 2; i++) {
        char *link = bf_asprintf("%s/scenes/s%03d/loop", dir, i ? 150 : 250);
        CHECK(link && symlink(".", link) == 0);
        free(link);
    }
    CHECK(bf_task_keys(&job, keys, err) == BF_EINVAL);
    CHECKF(!strncmp(err, "scene s150: ", 12) && strstr(err, "a link loop"), "error: %s", err);
    free(keys);
    bf_job_clear(&job);
    free(dir);
}

/* sionna_check: a boresight job's comparison program, through the JSON
   round trip; refused on an exec job and without a command. */
static void test_sionna_check(void)
{
    char *dir = fixture("sionna_check");
    bf_job_t job, back;
    char err[BF_ERRLEN];
    CHECK(load_job(dir, "scenes: scenes\nsionna_check: {command: [python3, 'sionna_task.py']}\n",
                   &job, err) == BF_OK);
    CHECK(job.sionna_check_argc == 2 && !strcmp(job.sionna_check_command[1], "sionna_task.py"));
    json_t *doc = bf_job_to_json(&job, false);
    CHECK(doc && bf_job_from_json(doc, &back, err) == BF_OK);
    CHECK(back.sionna_check_argc == 2 && !strcmp(back.sionna_check_command[0], "python3"));
    json_decref(doc);
    bf_job_clear(&back);
    bf_job_clear(&job);
    expect_job_error(dir,
                     "scenes: scenes\ntask: exec\nexec: {command: [x]}\n"
                     "sionna_check: {command: [python3]}\n",
                     "job.yaml:4:", "only allowed with task: boresight");
    expect_job_error(dir, "scenes: scenes\nsionna_check: {}\n", "sionna_check.command", "missing");
    free(dir);
}

int main(void)
{
    bf_log_set_level(BF_LOG_ERROR);
    bf_strlcpy(root, "/tmp/bf_config_test_XXXXXX", sizeof root);
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    test_yaml_tree();
    test_yaml_accessors();
    test_job_defaults();
    test_job_every_key();
    test_job_errors();
    test_job_scenes();
    test_json_round_trip();
    test_json_hostile();
    test_fleet();
    test_task_key();
    test_task_keys();
    test_sionna_check();
    remove_tree(root);
    if (failures) {
        fprintf(stderr, "bf_config_test: %d check(s) failed\n", failures);
        return 1;
    }
    printf("bf_config_test: ok\n");
    return 0;
}
