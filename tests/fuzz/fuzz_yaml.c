/*  tests/fuzz/fuzz_yaml.c - libFuzzer harness for the YAML loaders: the job
    file (bf_job_load), the fleet file (bf_fleet_load) and a scene's
    scene.yaml (through kern_scene_load). The first input byte picks the
    loader (0: job, 1: fleet, 2: scene.yaml, modulo 3), the rest is the file.

    The loaders take paths, so the file is written into a scratch directory
    that holds what a job file can name: job/scenes/{alpha,beta,gamma} and
    build/demo-scenes/city_000 (the relative paths of the examples/ job files), and a
    scene directory with a 1 km ground quad for scene.yaml. Besides "no crash,
    no leak, no sanitizer report", every refusal must carry a one-line reason
    and every accepted job must survive the trip over the network: its JSON
    document must validate again (bf_job_from_json) and give the same
    document back. */

#include "../../common/bf_config.h"
#include "../../kernels/kern_scene.h"
#include "../../proto/proto.h"
#include "fuzz_util.h"

#include <jansson.h>
#include <math.h>

static void one_line_reason(bf_err_t rc, const char *err)
{
    FUZZ_NOTE("refused: %s", err);
    fuzz_check_reason(rc, err);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_scratch();
    const char *dirs[] = {"job",
                          "job/scenes",
                          "job/scenes/alpha",
                          "job/scenes/beta",
                          "job/scenes/gamma",
                          "build",
                          "build/demo-scenes",
                          "build/demo-scenes/city_000",
                          "scene",
                          "scene/meshes"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        fuzz_mkdir(dirs[i]);
    fuzz_write_str("scene/scene.xml",
                   "<scene version=\"2.1.0\">\n"
                   "  <bsdf type=\"itu-radio-material\" id=\"ground-mat\">\n"
                   "    <string name=\"type\" value=\"concrete\"/>\n"
                   "  </bsdf>\n"
                   "  <shape type=\"ply\" id=\"ground\">\n"
                   "    <string name=\"filename\" value=\"meshes/ground.ply\"/>\n"
                   "    <ref id=\"ground-mat\" name=\"bsdf\"/>\n"
                   "  </shape>\n"
                   "</scene>\n");
    fuzz_write_quad_ply("scene/meshes/ground.ply", 500);
    return 0;
}

static void fuzz_job(const uint8_t *data, size_t size)
{
    char path[1024], err[BF_ERRLEN] = "";
    fuzz_write("job/job.yaml", data, size);
    fuzz_path(path, sizeof path, "job/job.yaml");
    bf_job_t job;
    bf_err_t rc = bf_job_load(path, &job, err);
    if (rc != BF_OK) {
        one_line_reason(rc, err);
        FUZZ_ASSERT(!job.name && !job.scenes && !job.output, "a refused job not cleared");
        return;
    }
    FUZZ_ASSERT(job.name && job.scenes_root && job.output, "job without name, scenes or output");
    FUZZ_ASSERT(job.scenes_root[0] == '/' && job.output[0] == '/', "paths not absolute");
    FUZZ_ASSERT(job.scene_count >= 1, "accepted with no scene");
    for (size_t i = 1; i < job.scene_count; i++)
        FUZZ_ASSERT(strcmp(job.scenes[i - 1], job.scenes[i]) < 0, "scenes not sorted");
    FUZZ_ASSERT(job.task != BF_TASK_EXEC || (job.exec_command && job.exec_argc >= 1),
                "an exec job without a command");

    json_t *doc = bf_job_to_json(&job, true);
    FUZZ_ASSERT(doc, "bf_job_to_json failed");
    bf_job_t back;
    err[0] = '\0';
    rc = bf_job_from_json(doc, &back, err);
    FUZZ_ASSERT(rc == BF_OK, "a loaded job is refused over the network: %s", err);
    json_t *again = bf_job_to_json(&back, true);
    FUZZ_ASSERT(again && json_equal(doc, again), "the job document changed over the network");
    json_decref(again);
    json_decref(doc);
    bf_job_clear(&back);
    bf_job_clear(&job);
}

static void fuzz_fleet(const uint8_t *data, size_t size)
{
    char path[1024], err[BF_ERRLEN] = "";
    fuzz_write("fleet.yaml", data, size);
    fuzz_path(path, sizeof path, "fleet.yaml");
    bf_fleet_t fleet;
    bf_fleet_defaults(&fleet);
    bf_err_t rc = bf_fleet_load(path, &fleet, err);
    if (rc != BF_OK) {
        one_line_reason(rc, err);
    } else {
        FUZZ_ASSERT(fleet.broker_endpoint && fleet.broker_bind && fleet.broker_state &&
                        fleet.collector_publish && fleet.allow_exec,
                    "an accepted fleet lost a default");
        FUZZ_ASSERT(!fleet.allow_exec[fleet.allow_exec_count], "allow_exec not NULL-terminated");
        FUZZ_ASSERT(!!fleet.security_keys == !!fleet.security_identity,
                    "security with only one of keys and identity");
    }
    bf_fleet_clear(&fleet); /* also after a failure: the defaults are the caller's */
}

static void fuzz_scene_yaml(const uint8_t *data, size_t size)
{
    char dir[1024], err[BF_ERRLEN] = "";
    fuzz_write("scene/scene.yaml", data, size);
    fuzz_path(dir, sizeof dir, "scene");
    kern_scene_t *scene = NULL;
    bf_err_t rc = kern_scene_load(dir, &scene, err);
    if (rc != BF_OK) {
        one_line_reason(rc, err);
        FUZZ_ASSERT(!scene, "a refused scene returned");
        return;
    }
    FUZZ_ASSERT(scene->frequency_hz >= 1e3 && scene->frequency_hz <= 1e13, "frequency %g",
                scene->frequency_hz);
    FUZZ_ASSERT(scene->zone_points >= 3 && scene->zone_points <= KERN_MAX_ZONE_POINTS,
                "zone of %zu points", scene->zone_points);
    for (size_t i = 0; i < 2 * scene->zone_points; i++)
        FUZZ_ASSERT(isfinite(scene->zone_xy[i]) && fabs(scene->zone_xy[i]) <= 501,
                    "zone coordinate %g outside the ground", scene->zone_xy[i]);
    FUZZ_ASSERT(scene->triangle_count == 2 && scene->material_count == 1, "geometry changed");
    kern_scene_destroy(&scene);
    FUZZ_ASSERT(!scene, "kern_scene_destroy did not null the pointer");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        fuzz_job(data + 1, size - 1);
        break;
    case 1:
        fuzz_fleet(data + 1, size - 1);
        break;
    default:
        fuzz_scene_yaml(data + 1, size - 1);
        break;
    }
    return 0;
}
