/*  kernels/kern_scene_test.c - scene loading as users meet it: every Sionna
    scene in ../shared/scenes loads with the triangle counts and bounding
    boxes of SOURCES.md and the ITU materials its XML names, a scene
    directory with scene.yaml loads whole, the zone test follows the even-odd
    rule, and every kind of broken input (XML, PLY, materials, scene.yaml) is
    refused with BF_EINVAL and a message naming the file and the fault. */

#include "kern_scene.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/bf_check.h"

#define EPS0 8.8541878128e-12

static const char *shared;
static char tmp[] = "/tmp/kern-scene-test-XXXXXX";

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        CHECK(fwrite(data, 1, len, f) == len);
        CHECK(fclose(f) == 0);
    }
}

static void write_file(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text));
}

/* A PLY file: header text, then len body bytes. */
static void write_ply(const char *path, const char *header, const void *body, size_t len)
{
    size_t hl = strlen(header);
    unsigned char *buf = malloc(hl + len + 1);
    CHECK(buf != NULL);
    if (!buf)
        return;
    memcpy(buf, header, hl);
    memcpy(buf + hl, body, len);
    write_bytes(path, buf, hl + len);
    free(buf);
}

/* ---- materials ------------------------------------------------------------- */

static void test_materials(void)
{
    kern_material_t m;
    char err[BF_ERRLEN] = "";
    CHECK(kern_material_eval("concrete", 3.5e9, 0.2, &m, err) == BF_OK);
    CHECK(!strcmp(m.itu, "concrete") && m.thickness == 0.2);
    CHECK(fabs(m.eta_re - 5.24) < 1e-12);
    double want = -0.0462 * pow(3.5, 0.7822) / (EPS0 * 2 * M_PI * 3.5e9);
    CHECK(fabs(m.eta_im - want) < 1e-12 * fabs(want));
    CHECK(m.eta_im < -0.6 && m.eta_im > -0.7); /* about -0.63 */
    CHECK(kern_material_eval("medium_dry_ground", 2e9, 1, &m, err) == BF_OK);
    CHECK(fabs(m.eta_re - 15 * pow(2, -0.1)) < 1e-12);
    want = -0.035 * pow(2, 1.63) / (EPS0 * 2 * M_PI * 2e9);
    CHECK(fabs(m.eta_im - want) < 1e-12 * fabs(want));
    CHECK(kern_material_eval("metal", 3.5e9, 0.1, &m, err) == BF_OK);
    CHECK(m.eta_re == 1 && m.eta_im < -1e7);
    /* glass has two ranges, both usable; between them is a gap */
    CHECK(kern_material_eval("glass", 300e9, 0.1, &m, err) == BF_OK &&
          fabs(m.eta_re - 5.79) < 1e-12);
    CHECK(kern_material_eval("glass", 150e9, 0.1, &m, err) == BF_EINVAL &&
          strstr(err, "material 'glass': 150 GHz outside its ranges (0.1-100 and 220-450 GHz)"));
    CHECK(kern_material_eval("brick", 50e9, 0.1, &m, err) == BF_EINVAL &&
          !strcmp(err, "material 'brick': 50 GHz outside its range (1-40 GHz)"));
    CHECK(kern_material_eval("wet_ground", 50e9, 0.1, &m, err) == BF_EINVAL &&
          strstr(err, "material 'wet_ground': 50 GHz outside its range (1-10 GHz)"));
    CHECK(kern_material_eval("floorboard", 3.5e9, 0.1, &m, err) == BF_EINVAL);
    CHECK(kern_material_eval("cheese", 3.5e9, 0.1, &m, err) == BF_ENOENT && strstr(err, "cheese"));
}

/* ---- the shared Sionna scenes ---------------------------------------------------- */

static bool has_material(const kern_scene_t *s, const char *itu, double thickness)
{
    for (size_t i = 0; i < s->material_count; i++)
        if (!strcmp(s->materials[i].itu, itu) &&
            fabs(s->materials[i].thickness - thickness) < 1e-12)
            return true;
    return false;
}

static void test_shared(void)
{
    static const struct {
        const char *name;
        size_t triangles;
        double lo[3], hi[3];
        const char *materials; /* space separated, all with thickness 0.1 unless box */
    } cases[] = {
        {"munich",
         38938,
         {-805.6, -688.6, 0},
         {669.9, 517.0, 98.6},
         "marble metal brick wood concrete"},
        {"florence", 35373, {-478.7, -550.0, 0}, {521.3, 550.0, 114.5}, "marble metal concrete"},
        {"etoile", 13058, {-426.8, -338.1, 0}, {426.8, 338.1, 50.0}, "marble metal concrete wood"},
        {"simple_street_canyon_with_cars",
         234,
         {-94.0, -60.3, 0},
         {92.4, 60.8, 50.9},
         "glass wood marble brick concrete metal"},
        {"simple_street_canyon",
         74,
         {-94.0, -60.3, 0},
         {92.4, 60.8, 50.9},
         "glass wood marble brick concrete"},
        {"floor_wall", 4, {-2, -2, 0}, {2, 2, 2.9}, "concrete brick"},
        {"box_two_screens", 16, {-5, -5, 0}, {5, 5, 5}, ""},
        {"triple_reflector", 6, {-20, -10, 0}, {20.5, 10, 10}, "metal"},
        {"box_one_screen", 14, {-5, -5, 0}, {5, 5, 5}, ""},
        {"double_reflector", 4, {-20, -10, 0}, {0.5, 10, 10}, "metal"},
        {"box", 12, {-5, -5, 0}, {5, 5, 5}, ""},
        {"simple_wedge", 4, {0, -30, -15}, {30, 0, 15}, "concrete"},
        {"simple_reflector", 2, {-0.5, -0.5, 0}, {0.5, 0.5, 0}, ""},
    };
    for (size_t i = 0; i < BF_ARRAY_LEN(cases); i++) {
        char path[1024], err[BF_ERRLEN] = "";
        snprintf(path, sizeof path, "%s/scenes/%s/%s.xml", shared, cases[i].name, cases[i].name);
        kern_scene_t *s = NULL;
        bf_err_t rc = kern_scene_load_xml(path, 3.5e9, &s, err);
        if (rc != BF_OK) {
            fprintf(stderr, "%s: %s\n", cases[i].name, err);
            failures++;
            continue;
        }
        CHECK(!strcmp(s->name, cases[i].name));
        CHECK(s->frequency_hz == 3.5e9 && s->zone_points == 0);
        CHECK(s->triangle_count == cases[i].triangles);
        for (int k = 0; k < 3; k++) {
            CHECK(fabs(s->bbox_min[k] - cases[i].lo[k]) < 0.06);
            CHECK(fabs(s->bbox_max[k] - cases[i].hi[k]) < 0.06);
        }
        for (size_t t = 0; t < s->triangle_count; t++) {
            CHECK(s->tri_material[t] < s->material_count);
            for (int k = 0; k < 3; k++)
                CHECK(s->indices[3 * t + (size_t)k] < s->vertex_count);
        }
        /* the ITU materials named in SOURCES.md, evaluated at 3.5 GHz */
        char names[128];
        bf_strlcpy(names, cases[i].materials, sizeof names);
        size_t named = 0;
        for (char *save = NULL, *w = strtok_r(names, " ", &save); w;
             w = strtok_r(NULL, " ", &save)) {
            named++;
            if (!has_material(s, w, 0.1)) {
                fprintf(stderr, "%s: no material %s with thickness 0.1\n", cases[i].name, w);
                failures++;
            }
        }
        if (named)
            CHECK(s->material_count == named);
        for (size_t m = 0; m < s->material_count; m++) {
            kern_material_t ref;
            CHECK(kern_material_eval(s->materials[m].itu, 3.5e9, s->materials[m].thickness, &ref,
                                     err) == BF_OK);
            CHECK(ref.eta_re == s->materials[m].eta_re && ref.eta_im == s->materials[m].eta_im);
        }
        printf("%-32s %6zu triangles, %zu materials\n", cases[i].name, s->triangle_count,
               s->material_count);
        kern_scene_destroy(&s);
        CHECK(s == NULL);
        kern_scene_destroy(&s); /* idempotent */
    }
    char path[1024], err[BF_ERRLEN] = "";
    kern_scene_t *s = NULL;
    snprintf(path, sizeof path, "%s/scenes/box/box.xml", shared);
    CHECK(kern_scene_load_xml(path, 3.5e9, &s, err) == BF_OK && s && has_material(s, "metal", 1.0));
    kern_scene_destroy(&s);
    snprintf(path, sizeof path, "%s/scenes/box_two_screens/box_two_screens.xml", shared);
    CHECK(kern_scene_load_xml(path, 3.5e9, &s, err) == BF_OK && s && s->material_count == 2 &&
          has_material(s, "metal", 1.0) && has_material(s, "glass", 0.01));
    kern_scene_destroy(&s);
    snprintf(path, sizeof path, "%s/scenes/simple_reflector/simple_reflector.xml", shared);
    CHECK(kern_scene_load_xml(path, 3.5e9, &s, err) == BF_OK && s &&
          has_material(s, "metal", 0.01));
    kern_scene_destroy(&s);
    /* a material outside its frequency range: munich's brick above 40 GHz */
    snprintf(path, sizeof path, "%s/scenes/munich/munich.xml", shared);
    CHECK(kern_scene_load_xml(path, 50e9, &s, err) == BF_EINVAL && s == NULL);
    CHECK(strstr(err, "munich.xml:") && strstr(err, "bsdf 'brick'") &&
          strstr(err, "material 'brick': 50 GHz outside its range (1-40 GHz)"));
    snprintf(path, sizeof path, "%s/scenes/nothere/nothere.xml", shared);
    CHECK(kern_scene_load_xml(path, 3.5e9, &s, err) == BF_EINVAL && strstr(err, "nothere.xml"));
}

/* ---- the zone ---------------------------------------------------------------- */

static void test_zone(void)
{
    /* an L: the square [0,10]^2 without its upper right quarter */
    double l_shape[] = {0, 0, 10, 0, 10, 5, 5, 5, 5, 10, 0, 10};
    kern_scene_t z;
    memset(&z, 0, sizeof z);
    CHECK(!kern_scene_in_zone(&z, 0, 0)); /* no zone: nothing is inside */
    z.zone_xy = l_shape;
    z.zone_points = 6;
    CHECK(kern_scene_in_zone(&z, 2, 2) && kern_scene_in_zone(&z, 8, 2) &&
          kern_scene_in_zone(&z, 2, 8));
    CHECK(!kern_scene_in_zone(&z, 8, 8) && !kern_scene_in_zone(&z, -1, 2) &&
          !kern_scene_in_zone(&z, 2, 11) && !kern_scene_in_zone(&z, 11, 2));
    /* a self-intersecting bow tie: even-odd gives both lobes, not the crossing's outside */
    double bow[] = {0, 0, 10, 10, 10, 0, 0, 10};
    z.zone_xy = bow;
    z.zone_points = 4;
    CHECK(kern_scene_in_zone(&z, 1, 5) && kern_scene_in_zone(&z, 9, 5));
    CHECK(!kern_scene_in_zone(&z, 5, 1) && !kern_scene_in_zone(&z, 5, 9));
}

/* ---- scene directories --------------------------------------------------------- */

/* A scene directory: a copy of a shared scene plus our scene.yaml (a link
   to the shared files would lead out of the directory: refused). */
static void make_scene_dir(const char *dir, const char *from, const char *yaml)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "rm -rf %s && mkdir -p %s && cp %s/scenes/%s/%s.xml %s/ && "
             "cp -r %s/scenes/%s/meshes %s/meshes",
             dir, dir, shared, from, from, dir, shared, from, dir);
    CHECK(system(cmd) == 0);
    if (yaml) {
        char path[1024];
        snprintf(path, sizeof path, "%s/scene.yaml", dir);
        write_file(path, yaml);
    }
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
                               "  orientation: {azimuth_deg: 90, tilt_deg: 5, roll_deg: 2}\n"
                               "zone: {polygon: [[-50, 0], [50, 0], [50, 60], [-50, 60]]}\n"
                               "measurement: {height: 2.5, cell_size: [4, 4]}\n";

static void test_scene_dir(void)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/canyon/", tmp); /* a trailing slash is fine */
    make_scene_dir(dir, "simple_street_canyon", good_yaml);
    kern_scene_t *s = NULL;
    char err[BF_ERRLEN] = "";
    CHECK(kern_scene_load(dir, &s, err) == BF_OK);
    if (s) {
        CHECK(s->triangle_count == 74 && !strcmp(s->name, "canyon") && !strcmp(s->dir, dir));
        CHECK(s->frequency_hz == 3.5e9);
        CHECK(s->tx.position[0] == 8.5 && s->tx.position[1] == 21 && s->tx.position[2] == 27);
        CHECK(s->tx.pattern == KERN_PATTERN_DIPOLE && s->tx.polarization == KERN_POL_H);
        CHECK(s->tx.power_dbm == 40 && s->tx.azimuth_deg == 90 && s->tx.tilt_deg == 5 &&
              s->tx.roll_deg == 2);
        CHECK(s->zone_points == 4 && kern_scene_in_zone(s, 0, 30) && !kern_scene_in_zone(s, 0, -1));
        CHECK(s->measurement.has_height && s->measurement.height == 2.5);
        CHECK(s->measurement.has_cell_size && s->measurement.cell_size[0] == 4);
        CHECK(!s->measurement.has_size && !s->measurement.has_center);
        kern_scene_destroy(&s);
    }
    /* both cross-polarized feeds by name */
    const char *pols[2] = {"cross", "cross_independent"};
    for (int i = 0; i < 2; i++) {
        char yaml[256];
        snprintf(yaml, sizeof yaml,
                 "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 9], antenna: "
                 "{polarization: %s}}\nzone: {rect: [0, 0, 1, 1]}\n",
                 pols[i]);
        make_scene_dir(dir, "simple_street_canyon", yaml);
        CHECK(kern_scene_load(dir, &s, err) == BF_OK);
        if (s) {
            CHECK(s->tx.polarization == (i ? KERN_POL_CROSS_INDEPENDENT : KERN_POL_CROSS));
            kern_scene_destroy(&s);
        }
    }
    /* defaults: power 44 dBm, tr38901, V, orientation 0; a rect zone is stored as 4 corners */
    make_scene_dir(dir, "simple_street_canyon",
                   "frequency_hz: 2.6e9\ntransmitter: {position: [0, 0, 30]}\n"
                   "zone: {rect: [-10, -20, 30, 40]}\n"
                   "measurement: {center: [1, 2], size: [100, 80]}\n");
    CHECK(kern_scene_load(dir, &s, err) == BF_OK);
    if (s) {
        CHECK(s->frequency_hz == 2.6e9 && s->tx.power_dbm == 44);
        CHECK(s->tx.pattern == KERN_PATTERN_TR38901 && s->tx.polarization == KERN_POL_V);
        CHECK(s->tx.azimuth_deg == 0 && s->tx.tilt_deg == 0 && s->tx.roll_deg == 0);
        CHECK(s->zone_points == 4 && kern_scene_in_zone(s, 29, 39) &&
              !kern_scene_in_zone(s, 31, 0) && !kern_scene_in_zone(s, 0, -21));
        CHECK(s->measurement.has_center && s->measurement.center[1] == 2);
        CHECK(s->measurement.has_size && s->measurement.size[0] == 100);
        CHECK(!s->measurement.has_height && !s->measurement.has_cell_size);
        kern_scene_destroy(&s);
    }

    /* every kind of bad scene.yaml */
    make_scene_dir(dir, "simple_street_canyon", NULL);
    expect_error(dir, "scene.yaml");
    make_scene_dir(dir, "simple_street_canyon",
                   "transmitter: {position: [0, 0, 10]}\nzone: {rect: [0, 0, 1, 1]}\n");
    expect_error(dir, "missing key 'frequency_hz'");
    make_scene_dir(
        dir, "simple_street_canyon",
        "frequency_hz: -3\ntransmitter: {position: [0, 0, 10]}\nzone: {rect: [0, 0, 1, 1]}\n");
    expect_error(dir, "scene.yaml:1:15: field 'frequency_hz'");
    make_scene_dir(dir, "simple_street_canyon", "frequency_hz: 3.5e9\nfrequncy: 1\n");
    expect_error(dir, "scene.yaml:2:1: unknown key 'frequncy'");
    make_scene_dir(dir, "simple_street_canyon",
                   "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 9], gain: 3}\n"
                   "zone: {rect: [0, 0, 1, 1]}\n");
    expect_error(dir, "unknown key 'gain'");
    make_scene_dir(
        dir, "simple_street_canyon",
        "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0]}\nzone: {rect: [0, 0, 1, 1]}\n");
    expect_error(dir, "transmitter.position");
    make_scene_dir(
        dir, "simple_street_canyon",
        "frequency_hz: 3.5e9\ntransmitter: {power_dbm: 3}\nzone: {rect: [0, 0, 1, 1]}\n");
    expect_error(dir, "missing key 'transmitter.position'");
    make_scene_dir(
        dir, "simple_street_canyon",
        "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 9], antenna: {pattern: yagi}}\n"
        "zone: {rect: [0, 0, 1, 1]}\n");
    expect_error(dir, "expected iso, dipole, hw_dipole or tr38901, got 'yagi'");
    make_scene_dir(
        dir, "simple_street_canyon",
        "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 9], antenna: {polarization: X}}\n"
        "zone: {rect: [0, 0, 1, 1]}\n");
    expect_error(dir, "expected V, H, cross or cross_independent, got 'X'");
    make_scene_dir(dir, "simple_street_canyon",
                   "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 9]}\n");
    expect_error(dir, "missing key 'zone'");
    make_scene_dir(dir, "simple_street_canyon",
                   "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 9]}\n"
                   "zone: {rect: [0, 0, 1, 1], polygon: [[0, 0], [1, 0], [0, 1]]}\n");
    expect_error(dir, "exactly one of 'polygon' or 'rect'");
    make_scene_dir(
        dir, "simple_street_canyon",
        "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 9]}\nzone: {rect: [5, 0, 1, 1]}\n");
    expect_error(dir, "xmin < xmax");
    make_scene_dir(dir, "simple_street_canyon",
                   "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 9]}\n"
                   "zone: {polygon: [[0, 0], [1, 1]]}\n");
    expect_error(dir, "zone.polygon");
    make_scene_dir(
        dir, "simple_street_canyon",
        "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 9]}\nzone: {rect: [0, 0, 900, 1]}\n");
    expect_error(dir, "scene.yaml:3:14: zone: point (900, 0) lies outside the scene (x -93.9");
    make_scene_dir(dir, "simple_street_canyon",
                   "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 9]}\n"
                   "zone: {polygon: [[0, 0], [10, -90], [0, 5]]}\n");
    expect_error(dir, "scene.yaml:3:26: zone: point (10, -90) lies outside the scene");
    make_scene_dir(
        dir, "simple_street_canyon",
        "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 9]}\nzone: {rect: [0, 0, 1, 1]}\n"
        "measurement: {cell_size: [0, 5]}\n");
    expect_error(dir, "measurement.cell_size");
    make_scene_dir(
        dir, "simple_street_canyon",
        "frequency_hz: 50e9\ntransmitter: {position: [0, 0, 9]}\nzone: {rect: [0, 0, 1, 1]}\n");
    expect_error(dir, "50 GHz outside its range");
    make_scene_dir(dir, "simple_street_canyon", "frequency_hz: [1\n");
    expect_error(dir, "scene.yaml:");
}

/* ---- broken XML and meshes, in a scene directory of our own ----------------------------- */

static char own[512];

static void own_file(const char *rel, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", own, rel);
    write_file(path, text);
}

static void own_ply(const char *rel, const char *header, const void *body, size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", own, rel);
    write_ply(path, header, body, len);
}

/* scene.xml with one itu-radio-material bsdf of the given ITU type and one
   shape: filename and ref as given. */
static void own_xml(const char *itu, const char *filename, const char *ref)
{
    char xml[2048];
    snprintf(xml, sizeof xml,
             "<scene version=\"2.1.0\">\n"
             "<bsdf type=\"itu-radio-material\" id=\"m\">\n"
             "  <string name=\"type\" value=\"%s\"/>\n"
             "</bsdf>\n"
             "<shape type=\"ply\" id=\"mesh-a\">\n"
             "  <string name=\"filename\" value=\"%s\"/>\n"
             "  <ref id=\"%s\" name=\"bsdf\"/>\n"
             "</shape>\n"
             "</scene>\n",
             itu, filename, ref);
    own_file("scene.xml", xml);
}

static const char *tri_header = "ply\nformat binary_little_endian 1.0\nelement vertex 3\n"
                                "property float x\nproperty float y\nproperty float z\n"
                                "element face 1\nproperty list uchar int vertex_indices\n"
                                "end_header\n";

/* The body of tri_header: 3 vertices, 1 face with count byte n and indices. */
static size_t tri_body(unsigned char *body, unsigned n, int32_t a, int32_t b, int32_t c)
{
    float v[9] = {0, 0, 0, 1, 0, 0, 0, 1, 0};
    memcpy(body, v, 36);
    body[36] = (unsigned char)n;
    int32_t ix[3] = {a, b, c};
    memcpy(body + 37, ix, 12);
    return 49;
}

static void test_broken(void)
{
    snprintf(own, sizeof own, "%s/own", tmp);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s/meshes", own, own);
    CHECK(system(cmd) == 0);
    own_file(
        "scene.yaml",
        "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 2]}\nzone: {rect: [0, 0, 1, 1]}\n");
    unsigned char body[64];
    size_t n = tri_body(body, 3, 0, 1, 2);
    own_ply("meshes/x.ply", tri_header, body, n);
    own_xml("concrete", "meshes/x.ply", "m");
    kern_scene_t *s = NULL;
    char err[BF_ERRLEN] = "";
    CHECK(kern_scene_load(own, &s, err) == BF_OK && s && s->triangle_count == 1);
    if (s) {
        CHECK(s->vertex_count == 3 && s->indices[2] == 2 && s->vertices[3] == 1);
        CHECK(s->bbox_max[0] == 1 && s->bbox_max[1] == 1 && s->bbox_max[2] == 0);
        CHECK(s->material_count == 1 && !strcmp(s->materials[0].itu, "concrete") &&
              s->materials[0].thickness == 0.1);
        kern_scene_destroy(&s);
    }
    /* XML faults */
    own_file("scene.xml",
             "<scene version=\"2.1.0\">\n<bsdf type=\"itu-radio-material\" id=\"m\">\n");
    expect_error(own, "scene.xml:3:");
    own_file("scene.xml", "<scene>\n<shape type=\"obj\" id=\"mesh-o\"/>\n</scene>\n");
    expect_error(own, "scene.xml:2: shape 'mesh-o': type 'obj' not supported (only ply)");
    own_file("scene.xml", "<mitsuba/>\n");
    expect_error(own, "root element is <mitsuba>");
    own_file("scene.xml", "<!DOCTYPE scene [<!ENTITY a \"aaaaaaaa\">]>\n<scene>&a;</scene>\n");
    expect_error(own, "DOCTYPE");
    own_file("scene.xml", "<scene>\n<bsdf type=\"itu-radio-material\" id=\"m\"/>\n"
                          "<bsdf type=\"itu-radio-material\" id=\"m\"/>\n</scene>\n");
    expect_error(own, "scene.xml:3: bsdf id 'm' already defined at line 2");
    own_file("scene.xml", "<scene>\n<bsdf type=\"itu-radio-material\" id=\"m\">\n"
                          "<string name=\"type\" value=\"metal\"/>\n"
                          "<float name=\"thickness\" value=\"thick\"/>\n</bsdf>\n</scene>\n");
    expect_error(own, "scene.xml:4: bsdf 'm': bad thickness 'thick'");
    /* the diffuse reflection's properties (docs/radio.md) */
    own_file("scene.xml",
             "<scene>\n<bsdf type=\"itu-radio-material\" id=\"m\">\n"
             "<string name=\"type\" value=\"brick\"/>\n"
             "<float name=\"scattering_coefficient\" value=\"0.4\"/>\n"
             "<float name=\"xpd_coefficient\" value=\"0.2\"/>\n"
             "<string name=\"scattering_pattern\" value=\"backscattering\"/>\n"
             "<integer name=\"alpha_r\" value=\"5\"/>\n<integer name=\"alpha_i\" value=\"3\"/>\n"
             "<float name=\"lambda_\" value=\"0.75\"/>\n</bsdf>\n"
             "<bsdf type=\"itu-radio-material\" id=\"d\">\n"
             "<string name=\"type\" value=\"metal\"/>\n"
             "<float name=\"scattering_coefficient\" value=\"1\"/>\n"
             "<string name=\"scattering_pattern\" value=\"directive\"/>\n"
             "<integer name=\"alpha_r\" value=\"7\"/>\n<integer name=\"alpha_i\" value=\"3\"/>\n"
             "<float name=\"lambda_\" value=\"0.5\"/>\n</bsdf>\n"
             "<shape type=\"ply\" id=\"mesh-a\"><string name=\"filename\" value=\"meshes/x.ply\"/>"
             "<ref id=\"m\"/></shape>\n"
             "<shape type=\"ply\" id=\"mesh-b\"><string name=\"filename\" value=\"meshes/x.ply\"/>"
             "<ref id=\"d\"/></shape>\n</scene>\n");
    CHECK(kern_scene_load(own, &s, err) == BF_OK && s && s->material_count == 2);
    if (s && s->material_count == 2) {
        const kern_material_t *m = &s->materials[0], *d = &s->materials[1];
        CHECK(m->scattering_coefficient == 0.4 && m->xpd_coefficient == 0.2 &&
              m->scattering_pattern == KERN_SCATTER_BACKSCATTERING && m->alpha_r == 5 &&
              m->alpha_i == 3 && m->lambda == 0.75);
        /* directive: lambda 1 and alpha_i 1, whatever the bsdf says */
        CHECK(d->scattering_coefficient == 1 && d->xpd_coefficient == 0 &&
              d->scattering_pattern == KERN_SCATTER_DIRECTIVE && d->alpha_r == 7 &&
              d->alpha_i == 1 && d->lambda == 1);
    }
    kern_scene_destroy(&s);
    own_xml("concrete", "meshes/x.ply", "m");
    CHECK(kern_scene_load(own, &s, err) == BF_OK && s && s->material_count == 1);
    if (s)
        CHECK(s->materials[0].scattering_coefficient == 0 &&
              s->materials[0].scattering_pattern == KERN_SCATTER_LAMBERTIAN &&
              s->materials[0].alpha_r == 1 && s->materials[0].lambda == 1);
    kern_scene_destroy(&s);
    own_file("scene.xml",
             "<scene>\n<bsdf type=\"itu-radio-material\" id=\"m\">\n"
             "<string name=\"type\" value=\"metal\"/>\n"
             "<float name=\"scattering_coefficient\" value=\"1.5\"/>\n</bsdf>\n</scene>\n");
    expect_error(own, "scene.xml:4: bsdf 'm': bad scattering_coefficient '1.5' (0 to 1)");
    own_file("scene.xml",
             "<scene>\n<bsdf type=\"itu-radio-material\" id=\"m\">\n"
             "<string name=\"scattering_pattern\" value=\"glossy\"/>\n</bsdf>\n</scene>\n");
    expect_error(own, "scene.xml:3: bsdf 'm': scattering_pattern 'glossy'");
    own_file("scene.xml", "<scene>\n<bsdf type=\"itu-radio-material\" id=\"m\">\n"
                          "<integer name=\"alpha_r\" value=\"0\"/>\n</bsdf>\n</scene>\n");
    expect_error(own, "scene.xml:3: bsdf 'm': bad alpha_r '0' (1 to 64)");
    own_xml("metal", "meshes/nope.ply", "m");
    expect_error(own, "meshes/nope.ply: no such mesh file");
    own_xml("metal", "meshes/x.ply", "zz");
    expect_error(own, "scene.xml:5: shape 'mesh-a': unknown material 'zz'");
    own_xml("unobtainium", "meshes/x.ply", "m");
    expect_error(own, "scene.xml:2: bsdf 'm': unknown ITU material 'unobtainium'");
    own_xml("wet_ground", "meshes/x.ply", "m");
    own_file(
        "scene.yaml",
        "frequency_hz: 50e9\ntransmitter: {position: [0, 0, 2]}\nzone: {rect: [0, 0, 1, 1]}\n");
    expect_error(own, "bsdf 'm': material 'wet_ground': 50 GHz outside its range (1-10 GHz)");
    own_file(
        "scene.yaml",
        "frequency_hz: 3.5e9\ntransmitter: {position: [0, 0, 2]}\nzone: {rect: [0, 0, 1, 1]}\n");
    own_xml("metal", "../../etc/passwd", "m");
    expect_error(own, "filename '../../etc/passwd' leaves the scene directory");
    own_xml("metal", "/etc/passwd", "m");
    expect_error(own, "filename '/etc/passwd' leaves the scene directory");
    own_xml("metal", "meshes/../../x.ply", "m");
    expect_error(own, "leaves the scene directory");
    /* a visual bsdf maps to an ITU material only through its id */
    own_file("scene.xml",
             "<scene>\n<bsdf type=\"twosided\" id=\"mat-itu_brick\">\n"
             "  <bsdf type=\"diffuse\" id=\"inner\"/>\n</bsdf>\n"
             "<bsdf type=\"twosided\" id=\"painted\"/>\n"
             "<shape type=\"ply\" id=\"w\"><string name=\"filename\" "
             "value=\"meshes/x.ply\"/><ref id=\"mat-itu_brick\"/></shape>\n</scene>\n");
    CHECK(kern_scene_load(own, &s, err) == BF_OK && s && s->material_count == 1 &&
          !strcmp(s->materials[0].itu, "brick") && s->materials[0].thickness == 0.1);
    kern_scene_destroy(&s);
    own_file("scene.xml", "<scene>\n<bsdf type=\"twosided\" id=\"painted\"/>\n"
                          "<shape type=\"ply\" id=\"w\"><string name=\"filename\" "
                          "value=\"meshes/x.ply\"/><ref id=\"painted\"/></shape>\n</scene>\n");
    expect_error(own, "scene.xml:2: bsdf 'painted' is not a radio material");
    own_file("scene.xml", "<scene>\n<bsdf type=\"twosided\" id=\"mat-itu_brick\">\n"
                          "  <bsdf type=\"diffuse\" id=\"inner\"/>\n</bsdf>\n"
                          "<shape type=\"ply\" id=\"w\"><string name=\"filename\" "
                          "value=\"meshes/x.ply\"/><ref id=\"inner\"/></shape>\n</scene>\n");
    expect_error(own, "shape 'w': unknown material 'inner'");
    own_file("scene.xml", "<scene>\n<bsdf type=\"twosided\" id=\"mat-itu_brick\"/>\n"
                          "<shape type=\"ply\" id=\"w\"><string name=\"filename\" "
                          "value=\"meshes/x.ply\"/></shape>\n</scene>\n");
    expect_error(own, "shape 'w' has no <ref> to a bsdf");

    /* PLY faults */
    own_xml("metal", "meshes/x.ply", "m");
    own_ply("meshes/x.ply", tri_header, body, n - 5);
    expect_error(own, "meshes/x.ply: truncated: expected 13 bytes of face data, file has 8");
    own_ply("meshes/x.ply", tri_header, body, 20);
    expect_error(own, "meshes/x.ply: truncated: expected 36 bytes of vertex data, file has 20");
    n = tri_body(body, 4, 0, 1, 2);
    own_ply("meshes/x.ply", tri_header, body, n);
    expect_error(own, "meshes/x.ply: face 0 has 4 vertices, only triangles are supported");
    n = tri_body(body, 3, 0, 1, 7);
    own_ply("meshes/x.ply", tri_header, body, n);
    expect_error(own, "meshes/x.ply: face 0: vertex index 7 out of range (3 vertices)");
    n = tri_body(body, 3, 0, -1, 2);
    own_ply("meshes/x.ply", tri_header, body, n);
    expect_error(own, "vertex index -1 out of range");
    own_file("meshes/x.ply", "ply\nformat ascii 1.0\nelement vertex 0\nend_header\n");
    expect_error(own, "meshes/x.ply:2: format 'ascii 1.0' not supported");
    own_file("meshes/x.ply", "ply\nformat binary_big_endian 1.0\nelement vertex 0\nend_header\n");
    expect_error(own, "format 'binary_big_endian 1.0' not supported");
    own_file("meshes/x.ply", "PK\x03\x04 not a mesh\n");
    expect_error(own, "meshes/x.ply: not a PLY file");
    own_file("meshes/x.ply", "ply\nformat binary_little_endian 1.0\nelement vertex 3\n");
    expect_error(own, "no end_header");
    own_ply("meshes/x.ply",
            "ply\nformat binary_little_endian 1.0\nelement face 1\n"
            "property list uchar int vertex_indices\nelement vertex 3\nproperty float x\n"
            "property float y\nproperty float z\nend_header\n",
            body, n);
    expect_error(own, "meshes/x.ply:3: element 'face' not supported here");
    own_ply("meshes/x.ply",
            "ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty double x\n"
            "property double y\nproperty double z\nend_header\n",
            body, n);
    expect_error(own, "meshes/x.ply:4: vertex property x is 'double', only float is supported");
    own_ply("meshes/x.ply",
            "ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n"
            "property float y\nproperty float z\nelement face 1\n"
            "property list uchar float vertex_indices\nend_header\n",
            body, n);
    expect_error(own, "meshes/x.ply:8: 'property list uchar float vertex_indices' not supported");
    own_ply("meshes/x.ply",
            "ply\nformat binary_little_endian 1.0\nelement vertex 99999999999\nproperty float x\n"
            "end_header\n",
            body, n);
    expect_error(own, "meshes/x.ply:3: bad element line");
}

/* A PLY as exporters write it: CRLF lines, a long comment, normals, uv and
   colours around x y z, uint indices, a face property after the list, and
   empty elements after the faces; all skipped by size. */
static void test_ply_layout(void)
{
    char header[2048], longc[400];
    memset(longc, 'c', sizeof longc - 1);
    longc[sizeof longc - 1] = '\0';
    snprintf(header, sizeof header,
             "ply\r\nformat binary_little_endian 1.0\r\ncomment Blender %s\r\n"
             "element vertex 4\r\nproperty float nx\r\nproperty float x\r\n"
             "property float y\r\nproperty float z\r\nproperty float s\r\n"
             "property float t\r\nproperty uchar red\r\nproperty uchar green\r\n"
             "property uchar blue\r\nelement face 2\r\n"
             "property list uchar uint vertex_indices\r\nproperty int flags\r\n"
             "element edge 0\r\nproperty int vertex1\r\nelement tristrips 0\r\n"
             "property list int int vertex_indices\r\nend_header\r\n",
             longc);
    unsigned char body[4 * 27 + 2 * 17], *p = body; /* vertex: 6 floats, 3 uchars */
    for (int i = 0; i < 4; i++) {
        float rec[6] = {9.0f, (float)(i & 1) * 4, (float)(i >> 1) * 3, 2.5f, 0.5f, 0.25f};
        memcpy(p, rec, sizeof rec);
        p += sizeof rec;
        *p++ = 200, *p++ = 100, *p++ = 50;
    }
    const uint32_t faces[2][3] = {{0, 1, 3}, {0, 3, 2}};
    for (int f = 0; f < 2; f++) {
        *p++ = 3;
        memcpy(p, faces[f], 12);
        p += 12;
        int32_t flags = -1;
        memcpy(p, &flags, 4);
        p += 4;
    }
    CHECK(p == body + sizeof body);
    own_ply("meshes/x.ply", header, body, sizeof body);
    own_xml("glass", "meshes/x.ply", "m");
    kern_scene_t *s = NULL;
    char err[BF_ERRLEN] = "";
    CHECK(kern_scene_load(own, &s, err) == BF_OK);
    if (!s) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK(s->vertex_count == 4 && s->triangle_count == 2);
    CHECK(s->vertices[3 * 3 + 0] == 4 && s->vertices[3 * 3 + 1] == 3 &&
          s->vertices[3 * 3 + 2] == 2.5f);
    CHECK(s->indices[3] == 0 && s->indices[4] == 3 && s->indices[5] == 2);
    CHECK(s->bbox_min[0] == 0 && s->bbox_max[0] == 4 && s->bbox_max[1] == 3);
    CHECK(s->bbox_min[2] == 2.5 && s->bbox_max[2] == 2.5);
    kern_scene_destroy(&s);
    /* two shapes share one material; indices of the second are offset */
    own_file("scene.xml", "<scene>\n<bsdf type=\"itu-radio-material\" id=\"m\">"
                          "<string name=\"type\" value=\"glass\"/>"
                          "<float name=\"thickness\" value=\"0.02\"/></bsdf>\n"
                          "<bsdf type=\"itu-radio-material\" id=\"unused\">"
                          "<string name=\"type\" value=\"floorboard\"/></bsdf>\n"
                          "<sensor type=\"perspective\"><film type=\"hdrfilm\"/></sensor>\n"
                          "<shape type=\"ply\" id=\"a\"><string name=\"filename\" "
                          "value=\"meshes/x.ply\"/><ref id=\"m\" name=\"bsdf\"/></shape>\n"
                          "<shape type=\"ply\" id=\"b\"><string name=\"filename\" "
                          "value=\"./meshes/x.ply\"/><ref id=\"m\"/></shape>\n</scene>\n");
    CHECK(kern_scene_load(own, &s, err) == BF_OK); /* floorboard is unused: no range check */
    if (s) {
        CHECK(s->vertex_count == 8 && s->triangle_count == 4 && s->indices[9] == 4);
        CHECK(s->material_count == 1 && s->materials[0].thickness == 0.02);
        CHECK(s->tri_material[3] == 0);
        kern_scene_destroy(&s);
    }
}

/* Scene files stay inside their directory, and their text stays out of
   messages: a scene.yaml or a mesh folder that is a link to outside is
   refused (naming the file, quoting nothing of the target), a link inside
   is fine, and a value that is not a plain word is not quoted. */
static void test_links(void)
{
    char dir[512], path[1024], secret[512], cmd[4096];
    snprintf(dir, sizeof dir, "%s/links", tmp);
    snprintf(secret, sizeof secret, "%s/secret.txt", tmp);
    write_file(secret, "root:$6$s3cr3t-hash:19000:0:99999:7:::\n");

    make_scene_dir(dir, "simple_street_canyon", NULL);
    snprintf(path, sizeof path, "%s/scene.yaml", dir);
    CHECK(symlink(secret, path) == 0);
    char err[BF_ERRLEN] = "";
    kern_scene_t *s = NULL;
    CHECK(kern_scene_load(dir, &s, err) == BF_EINVAL && s == NULL);
    CHECKF(strstr(err, "scene.yaml: leads out of") && !strstr(err, "s3cr3t") &&
               !strstr(err, "root"),
           "%s", err);

    /* the mesh folder a link to the shared scene's: out */
    make_scene_dir(dir, "simple_street_canyon", good_yaml);
    snprintf(cmd, sizeof cmd,
             "rm -rf %s/meshes && ln -s %s/scenes/simple_street_canyon/meshes %s/meshes", dir,
             shared, dir);
    CHECK(system(cmd) == 0);
    expect_error(dir, "leads out of");

    /* a link that stays inside: fine */
    make_scene_dir(dir, "simple_street_canyon", good_yaml);
    snprintf(cmd, sizeof cmd, "mv %s/meshes %s/real-meshes && ln -s real-meshes %s/meshes", dir,
             dir, dir);
    CHECK(system(cmd) == 0);
    CHECKF(kern_scene_load(dir, &s, err) == BF_OK, "%s", err);
    kern_scene_destroy(&s);

    /* values: a plain word is quoted, anything else is not */
    make_scene_dir(dir, "simple_street_canyon",
                   "frequency_hz: 3.5e9\ntransmitter:\n  position: [0, 0, 30]\n"
                   "  antenna: {pattern: tr38091}\nzone: {rect: [-10, -10, 10, 10]}\n");
    expect_error(dir, "got 'tr38091'");
    make_scene_dir(dir, "simple_street_canyon",
                   "frequency_hz: 3.5e9\ntransmitter:\n  position: [0, 0, 30]\n"
                   "  power_dbm: root:$6$s3cr3t-hash:19000\nzone: {rect: [-10, -10, 10, 10]}\n");
    CHECK(kern_scene_load(dir, &s, err) == BF_EINVAL);
    CHECKF(strstr(err, "power_dbm") && strstr(err, "(not shown)") && !strstr(err, "s3cr3t"), "%s",
           err);
}

/* ---- several transmitters ------------------------------------------------ */
static void test_transmitters(void)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/sectors", tmp);
    make_scene_dir(dir, "simple_street_canyon",
                   "frequency_hz: 3.5e9\n"
                   "transmitters:\n"
                   "  - name: alpha\n"
                   "    position: [0, 0, 25]\n"
                   "    orientation: {azimuth_deg: 0, tilt_deg: 5}\n"
                   "  - position: [1, 2, 26]\n"
                   "    power_dbm: 40\n"
                   "    antenna: {pattern: iso}\n"
                   "    orientation: {azimuth_deg: 120}\n"
                   "  - {name: gamma-3, movable: false, serves: false, position: [3, 4, 5]}\n"
                   "zone: {rect: [-10, -20, 30, 40]}\n");
    kern_scene_t *s = NULL;
    char err[BF_ERRLEN] = "";
    CHECKF(kern_scene_load(dir, &s, err) == BF_OK, "%s", err);
    if (s) {
        CHECK(s->tx_count == 3);
        CHECK(!strcmp(s->txs[0].name, "alpha") && s->txs[0].movable && s->txs[0].tilt_deg == 5 &&
              s->txs[0].power_dbm == 44 && s->txs[0].pattern == KERN_PATTERN_TR38901);
        CHECK(!strcmp(s->txs[1].name, "tx1") && s->txs[1].movable && s->txs[1].power_dbm == 40 &&
              s->txs[1].pattern == KERN_PATTERN_ISO && s->txs[1].azimuth_deg == 120 &&
              s->txs[1].position[2] == 26);
        CHECK(s->txs[0].serves && s->txs[1].serves && !s->txs[2].serves);
        CHECK(!strcmp(s->txs[2].name, "gamma-3") && !s->txs[2].movable &&
              s->txs[2].position[0] == 3);
        CHECK(s->tx.position[2] == 25 && !strcmp(s->tx.name, "alpha")); /* tx is txs[0] */
        kern_scene_destroy(&s);
    }
    /* the single form is one movable transmitter named tx0 */
    make_scene_dir(dir, "simple_street_canyon", good_yaml);
    CHECK(kern_scene_load(dir, &s, err) == BF_OK);
    if (s) {
        CHECK(s->tx_count == 1 && s->txs[0].movable && !strcmp(s->txs[0].name, "tx0") &&
              s->txs[0].azimuth_deg == 90 && s->txs[0].power_dbm == 40);
        kern_scene_destroy(&s);
    }
    static const struct {
        const char *yaml, *want;
    } bad[] = {
        {"transmitters: {position: [0, 0, 1]}\n",
         "scene.yaml:2:15: field 'transmitters': expected a list of 1 to 16"},
        {"transmitters: []\n", "scene.yaml:2:15: field 'transmitters': expected a list"},
        {"transmitters:\n  - position: [0, 0, 1]\n  - power_dbm: 30\n",
         "scene.yaml:4:5: missing key 'transmitters[1].position'"},
        {"transmitters:\n  - position: [0, 0]\n",
         "scene.yaml:3:15: field 'transmitters[0].position'"},
        {"transmitters:\n  - {position: [0, 0, 1], movable: maybe}\n",
         "scene.yaml:3:36: field 'transmitters[0].movable'"},
        {"transmitters:\n  - {position: [0, 0, 1], name: a}\n  - {position: [0, 0, 2], name: a}\n",
         "scene.yaml:4:5: field 'transmitters[1].name': the same as transmitters[0]'s"},
        {"transmitters:\n  - {position: [0, 0, 1], name: 'a b'}\n",
         "scene.yaml:3:33: field 'transmitters[0].name': expected 1 to 31 letters"},
        {"transmitters:\n  - {position: [0, 0, 1], height: 3}\n",
         "scene.yaml:3:27: unknown key 'height' in transmitters[0]"},
        {"transmitters:\n  - {position: [0, 0, 1], antenna: {pattern: horn}}\n",
         "field 'transmitters[0].antenna.pattern': expected iso"},
        {"transmitter: {position: [0, 0, 1]}\ntransmitters:\n  - {position: [0, 0, 1]}\n",
         "scene.yaml:4:3: give one of 'transmitter' or 'transmitters', not both"},
        {"transmitters:\n  - 7\n", "scene.yaml:3:5: "},
        {"transmitters:\n  - {position: [0, 0, 1], serves: false}\n",
         "scene.yaml:3:3: field 'transmitters': at least one must serve"},
        {"transmitters:\n  - {position: [0, 0, 1], serves: 2}\n", "field 'transmitters[0].serves'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char yaml[512];
        snprintf(yaml, sizeof yaml, "frequency_hz: 3.5e9\n%szone: {rect: [0, 0, 1, 1]}\n",
                 bad[i].yaml);
        make_scene_dir(dir, "simple_street_canyon", yaml);
        expect_error(dir, bad[i].want);
    }
    /* seventeen are too many */
    char yaml[4096] = "frequency_hz: 3.5e9\ntransmitters:\n";
    for (int i = 0; i < 17; i++)
        strcat(yaml, "  - {position: [0, 0, 1]}\n");
    strcat(yaml, "zone: {rect: [0, 0, 1, 1]}\n");
    make_scene_dir(dir, "simple_street_canyon", yaml);
    expect_error(dir, "expected a list of 1 to 16 transmitters");
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
    test_zone();
    test_scene_dir();
    test_transmitters();
    test_broken();
    test_ply_layout();
    test_links();
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
