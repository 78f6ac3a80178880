/*  kernels/kern_scene_test.c - scene loading as users meet it: every Sionna
    scene in ../shared/scenes loads with the triangle counts and bounding
    boxes of SOURCES.md, a scene directory with scene.yaml loads whole,
    procedural scenes are deterministic and load, and every kind of broken
    input is refused with a message naming the file and the fault. */

#include "kern_scene.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static const char *shared;
static char tmp[] = "/tmp/kern-scene-test-XXXXXX";

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_shared(void)
{
    static const struct {
        const char *name;
        size_t triangles;
        double lo[3], hi[3];
    } cases[] = {
        {"munich", 38938, {-805.6, -688.6, 0}, {669.9, 517.0, 98.6}},
        {"florence", 35373, {-478.7, -550.0, 0}, {521.3, 550.0, 114.5}},
        {"etoile", 13058, {-426.8, -338.1, 0}, {426.8, 338.1, 50.0}},
        {"simple_street_canyon_with_cars", 234, {-94.0, -60.3, 0}, {92.4, 60.8, 50.9}},
        {"simple_street_canyon", 74, {-94.0, -60.3, 0}, {92.4, 60.8, 50.9}},
        {"floor_wall", 4, {-2, -2, 0}, {2, 2, 2.9}},
        {"box_two_screens", 16, {-5, -5, 0}, {5, 5, 5}},
        {"triple_reflector", 6, {-20, -10, 0}, {20.5, 10, 10}},
        {"box_one_screen", 14, {-5, -5, 0}, {5, 5, 5}},
        {"double_reflector", 4, {-20, -10, 0}, {0.5, 10, 10}},
        {"box", 12, {-5, -5, 0}, {5, 5, 5}},
        {"simple_wedge", 4, {0, -30, -15}, {30, 0, 15}},
        {"simple_reflector", 2, {-0.5, -0.5, 0}, {0.5, 0.5, 0}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[1024], err[BF_ERRLEN] = "";
        snprintf(path, sizeof path, "%s/scenes/%s/%s.xml", shared, cases[i].name, cases[i].name);
        kern_scene_t *s = NULL;
        bf_err_t rc = kern_scene_load_xml(path, 3.5e9, &s, err);
        if (rc != BF_OK) {
            fprintf(stderr, "%s: %s\n", cases[i].name, err);
            failures++;
            continue;
        }
        CHECK(s->triangle_count == cases[i].triangles);
        for (int k = 0; k < 3; k++) {
            CHECK(fabs(s->bbox_min[k] - cases[i].lo[k]) < 0.06);
            CHECK(fabs(s->bbox_max[k] - cases[i].hi[k]) < 0.06);
        }
        for (size_t t = 0; t < s->triangle_count; t++)
            CHECK(s->tri_material[t] < s->material_count);
        printf("%-32s %6zu triangles, %zu materials\n", cases[i].name, s->triangle_count,
               s->material_count);
        kern_scene_destroy(&s);
        CHECK(s == NULL);
    }
    /* A material outside its frequency range: brick above 40 GHz. */
    char path[1024], err[BF_ERRLEN] = "";
    snprintf(path, sizeof path, "%s/scenes/munich/munich.xml", shared);
    kern_scene_t *s = NULL;
    CHECK(kern_scene_load_xml(path, 50e9, &s, err) == BF_EINVAL && strstr(err, "brick") &&
          strstr(err, "outside its range"));
}

static void test_materials(void)
{
    kern_material_t m;
    char err[BF_ERRLEN];
    CHECK(kern_material_eval("concrete", 3.5e9, 0.2, &m, err) == BF_OK);
    double sigma = 0.0462 * pow(3.5, 0.7822);
    CHECK(fabs(m.eta_re - 5.24) < 1e-12);
    CHECK(fabs(m.eta_im + sigma / (8.8541878128e-12 * 2 * M_PI * 3.5e9)) < 1e-9);
    CHECK(kern_material_eval("glass", 300e9, 0.1, &m, err) == BF_OK &&
          fabs(m.eta_re - 5.79) < 1e-12);
    CHECK(kern_material_eval("glass", 150e9, 0.1, &m, err) == BF_EINVAL && strstr(err, "ranges"));
    CHECK(kern_material_eval("wet_ground", 50e9, 0.1, &m, err) == BF_EINVAL);
    CHECK(kern_material_eval("cheese", 3.5e9, 0.1, &m, err) == BF_ENOENT && strstr(err, "cheese"));
    CHECK(kern_material_eval("medium_dry_ground", 2e9, 1, &m, err) == BF_OK &&
          fabs(m.eta_re - 15 * pow(2, -0.1)) < 1e-12);
}

/* A scene directory: symlinks to a shared scene plus our scene.yaml. */
static void make_scene_dir(const char *dir, const char *from, const char *yaml)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "rm -rf %s && mkdir -p %s && ln -s %s/scenes/%s/%s.xml %s/ && "
             "ln -s %s/scenes/%s/meshes %s/meshes",
             dir, dir, shared, from, from, dir, shared, from, dir);
    CHECK(system(cmd) == 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/scene.yaml", dir);
    write_file(path, yaml);
}

static void expect_error(const char *dir, const char *want)
{
    kern_scene_t *s = NULL;
    char err[BF_ERRLEN] = "";
    bf_err_t rc = kern_scene_load(dir, &s, err);
    CHECK(rc == BF_EINVAL && s == NULL);
    if (!strstr(err, want)) {
        fprintf(stderr, "  expected '%s' in: %s\n", want, err);
        failures++;
    }
}

static const char *good_yaml = "frequency_hz: 3.5e9\n"
                               "transmitter:\n"
                               "  position: [8.5, 21.0, 27.0]\n"
                               "  power_dbm: 40\n"
                               "  antenna: {pattern: dipole, polarization: H}\n"
                               "  orientation: {azimuth_deg: 90, tilt_deg: 5, roll_deg: 0}\n"
                               "zone: {polygon: [[-50, 0], [50, 0], [50, 60], [-50, 60]]}\n"
                               "measurement: {height: 2.5, cell_size: [4, 4]}\n";

static void test_scene_dir(void)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/canyon", tmp);
    make_scene_dir(dir, "simple_street_canyon", good_yaml);
    kern_scene_t *s = NULL;
    char err[BF_ERRLEN] = "";
    CHECK(kern_scene_load(dir, &s, err) == BF_OK);
    if (s) {
        CHECK(s->triangle_count == 74 && !strcmp(s->name, "canyon"));
        CHECK(s->tx.pattern == KERN_PATTERN_DIPOLE && s->tx.polarization == KERN_POL_H);
        CHECK(s->tx.power_dbm == 40 && s->tx.azimuth_deg == 90 && s->tx.tilt_deg == 5);
        CHECK(s->zone_points == 4 && kern_scene_in_zone(s, 0, 30) && !kern_scene_in_zone(s, 0, -1));
        CHECK(s->measurement.has_height && s->measurement.height == 2.5);
        CHECK(s->measurement.has_cell_size && !s->measurement.has_size);
        kern_scene_destroy(&s);
    }
    /* every kind of bad scene.yaml */
    make_scene_dir(dir, "simple_street_canyon",
                   "transmitter: {position: [0, 0, 10]}\nzone: {rect: [0, 0, 1, 1]}\n");
    expect_error(dir, "missing key 'frequency_hz'");
    make_scene_dir(dir, "simple_street_canyon", "frequency_hz: 3.5e9\nfrequncy: 1\n");
    expect_error(dir, "scene.yaml:2:1: unknown key 'frequncy'");
    make_scene_dir(
        dir, "simple_street_canyon",
        "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0]}\nzone: {rect: [0, 0, 1, 1]}\n");
    expect_error(dir, "transmitter.position");
    make_scene_dir(
        dir, "simple_street_canyon",
        "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 9], antenna: {pattern: yagi}}\n"
        "zone: {rect: [0, 0, 1, 1]}\n");
    expect_error(dir, "expected iso, dipole, hw_dipole or tr38901, got 'yagi'");
    make_scene_dir(
        dir, "simple_street_canyon",
        "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 9]}\nzone: {rect: [0, 0, 900, 1]}\n");
    expect_error(dir, "lies outside the scene");
    make_scene_dir(dir, "simple_street_canyon",
                   "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 9]}\nzone: {polygon: [[0, "
                   "0], [1, 1]]}\n");
    expect_error(dir, "zone.polygon");
    make_scene_dir(
        dir, "simple_street_canyon",
        "frequency_hz: 50e9\ntransmitter: {position: [0, 0, 9]}\nzone: {rect: [0, 0, 1, 1]}\n");
    expect_error(dir, "outside its range");

    /* broken XML and meshes, in a scene of our own */
    snprintf(dir, sizeof dir, "%s/own", tmp);
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "rm -rf %s && mkdir -p %s/meshes && cp %s/scenes/box/meshes/*.ply %s/meshes/", dir,
             dir, shared, dir);
    CHECK(system(cmd) == 0);
    char yaml[1200], xml[1200];
    snprintf(yaml, sizeof yaml, "%s/scene.yaml", dir);
    snprintf(xml, sizeof xml, "%s/scene.xml", dir);
    write_file(
        yaml,
        "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 2]}\nzone: {rect: [-4, -4, 4, 4]}\n");
    char *box_xml = NULL;
    char box_path[1024];
    snprintf(box_path, sizeof box_path, "%s/scenes/box/box.xml", shared);
    size_t len;
    CHECK(bf_read_file(box_path, 1 << 20, &box_xml, &len, NULL) == BF_OK);
    write_file(xml, box_xml);
    kern_scene_t *own = NULL;
    CHECK(kern_scene_load(dir, &own, err) == BF_OK && own && own->triangle_count == 12);
    kern_scene_destroy(&own);
    write_file(xml, "<scene version=\"2.1.0\">\n<bsdf type=\"itu-radio-material\" id=\"m\">\n");
    expect_error(dir, "scene.xml:3:");
    write_file(xml, "<scene><bsdf type=\"itu-radio-material\" id=\"m\"><string name=\"type\" "
                    "value=\"metal\"/></bsdf>\n"
                    "<shape type=\"ply\" id=\"a\"><string name=\"filename\" "
                    "value=\"meshes/nope.ply\"/><ref id=\"m\"/></shape></scene>\n");
    expect_error(dir, "meshes/nope.ply: no such mesh file");
    write_file(xml, "<scene><bsdf type=\"itu-radio-material\" id=\"m\"><string name=\"type\" "
                    "value=\"metal\"/></bsdf>\n"
                    "<shape type=\"ply\" id=\"a\"><string name=\"filename\" "
                    "value=\"meshes/x.ply\"/><ref id=\"zz\"/></shape></scene>\n");
    expect_error(dir, "scene.xml:2: shape 'a': unknown material 'zz'");
    write_file(xml, "<scene><bsdf type=\"itu-radio-material\" id=\"m\"><string name=\"type\" "
                    "value=\"unobtainium\"/></bsdf>\n"
                    "<shape type=\"ply\" id=\"a\"><string name=\"filename\" "
                    "value=\"meshes/x.ply\"/><ref id=\"m\"/></shape></scene>\n");
    expect_error(dir, "unknown ITU material 'unobtainium'");
    write_file(xml, "<scene><bsdf type=\"itu-radio-material\" id=\"m\"><string name=\"type\" "
                    "value=\"metal\"/></bsdf>\n"
                    "<shape type=\"ply\" id=\"a\"><string name=\"filename\" "
                    "value=\"../../etc/passwd\"/><ref id=\"m\"/></shape></scene>\n");
    expect_error(dir, "leaves the scene directory");
    /* PLY faults: truncated, quads, index out of range, ascii */
    char ply[1200];
    snprintf(ply, sizeof ply, "%s/meshes/x.ply", dir);
    write_file(xml, "<scene><bsdf type=\"itu-radio-material\" id=\"m\"><string name=\"type\" "
                    "value=\"metal\"/></bsdf>\n"
                    "<shape type=\"ply\" id=\"a\"><string name=\"filename\" "
                    "value=\"meshes/x.ply\"/><ref id=\"m\"/></shape></scene>\n");
    const char *hdr = "ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n"
                      "property float y\nproperty float z\nelement face 1\n"
                      "property list uchar int vertex_indices\nend_header\n";
    unsigned char body[36 + 13];
    float v[9] = {0, 0, 0, 1, 0, 0, 0, 1, 0};
    memcpy(body, v, 36);
    body[36] = 3;
    int32_t ix[3] = {0, 1, 2};
    memcpy(body + 37, ix, 12);
    FILE *f = fopen(ply, "wb");
    fputs(hdr, f);
    fwrite(body, 1, sizeof body - 5, f); /* truncated */
    fclose(f);
    expect_error(dir, "truncated");
    body[36] = 4;
    f = fopen(ply, "wb");
    fputs(hdr, f);
    fwrite(body, 1, sizeof body, f);
    fclose(f);
    expect_error(dir, "face 0 has 4 vertices");
    body[36] = 3;
    ix[2] = 7;
    memcpy(body + 37, ix, 12);
    f = fopen(ply, "wb");
    fputs(hdr, f);
    fwrite(body, 1, sizeof body, f);
    fclose(f);
    expect_error(dir, "vertex index 7 out of range");
    write_file(ply, "ply\nformat ascii 1.0\nelement vertex 0\nend_header\n");
    expect_error(dir, "format 'ascii' not supported");
}

static void test_scenegen(void)
{
    char a[1024], b[1024], c[1024], err[BF_ERRLEN] = "";
    snprintf(a, sizeof a, "%s/gen_a", tmp);
    snprintf(b, sizeof b, "%s/gen_b", tmp);
    snprintf(c, sizeof c, "%s/gen_c", tmp);
    CHECK(kern_scenegen(a, 3, 7, err) == BF_OK);
    CHECK(kern_scenegen(b, 3, 7, err) == BF_OK);
    CHECK(kern_scenegen(c, 3, 8, err) == BF_OK);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "diff -r %s %s >/dev/null", a, b);
    CHECK(system(cmd) == 0); /* same seed, same bytes */
    snprintf(cmd, sizeof cmd, "diff -r %s %s >/dev/null", a, c);
    CHECK(system(cmd) != 0); /* another seed, another city */
    for (int i = 0; i < 3; i++) {
        char dir[1100];
        snprintf(dir, sizeof dir, "%s/city_%03d", a, i);
        kern_scene_t *s = NULL;
        CHECK(kern_scene_load(dir, &s, err) == BF_OK);
        if (!s) {
            fprintf(stderr, "%s: %s\n", dir, err);
            continue;
        }
        CHECK(s->triangle_count >= 100 && s->triangle_count <= 5000);
        CHECK(s->tx.position[2] > 8);
        CHECK(s->zone_points == 4);
        for (size_t p = 0; p < s->zone_points; p++)
            CHECK(s->zone_xy[2 * p] >= s->bbox_min[0] && s->zone_xy[2 * p] <= s->bbox_max[0]);
        printf("scenegen city_%03d: %zu triangles, %zu materials, tx at %.0f m\n", i,
               s->triangle_count, s->material_count, s->tx.position[2]);
        kern_scene_destroy(&s);
    }
}

int main(void)
{
    shared = getenv("BF_SHARED_DIR");
    if (!shared)
        shared = "/work/shared";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_materials();
    test_shared();
    test_scene_dir();
    test_scenegen();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    if (failures) {
        fprintf(stderr, "kern_scene_test: %d checks failed\n", failures);
        return 1;
    }
    printf("kern_scene_test: all checks passed\n");
    return 0;
}
