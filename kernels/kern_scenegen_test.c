/*  kernels/kern_scenegen_test.c - the procedural city generator as
    `beamfleet scenegen` uses it: the same seed writes the same bytes, another
    seed another city; every city loads with kern_scene_load, has a ground
    slab and boxes of 10 triangles with ITU materials, a transmitter 3 m
    above a roof edge, and a rect zone inside the city along a street (no
    roof over its middle line, some over its edges), 4 to 10 degrees down
    from the antenna. */

#include "kern_scene.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bf_check.h"

static char tmp[] = "/tmp/kern-scenegen-test-XXXXXX";

/* Compares the trees a and b file by file; returns the number of regular
   files compared, or -1 at the first difference. */
static int compare_trees(const char *a, const char *b)
{
    DIR *d = opendir(a);
    if (!d)
        return -1;
    int files = 0, entries_a = 0;
    struct dirent *e;
    while (files >= 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        entries_a++;
        char *pa = bf_asprintf("%s/%s", a, e->d_name), *pb = bf_asprintf("%s/%s", b, e->d_name);
        char *da = NULL, *db = NULL;
        size_t la = 0, lb = 0;
        DIR *sub = pa ? opendir(pa) : NULL;
        if (sub) {
            closedir(sub);
            int n = compare_trees(pa, pb);
            files = n < 0 ? -1 : files + n;
        } else if (pa && pb && bf_read_file(pa, 1 << 26, &da, &la, NULL) == BF_OK &&
                   bf_read_file(pb, 1 << 26, &db, &lb, NULL) == BF_OK && la == lb &&
                   !memcmp(da, db, la)) {
            files++;
        } else {
            files = -1;
        }
        free(da);
        free(db);
        free(pa);
        free(pb);
    }
    closedir(d);
    if (files < 0)
        return -1;
    /* b must not hold more entries than a */
    int entries_b = 0;
    if (!(d = opendir(b)))
        return -1;
    while ((e = readdir(d)))
        entries_b += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return entries_a == entries_b ? files : -1;
}

/* A horizontal triangle above the ground: part of a roof. */
static bool is_roof(const kern_scene_t *s, size_t t, double *z)
{
    const float *v[3];
    for (int k = 0; k < 3; k++)
        v[k] = &s->vertices[3 * (size_t)s->indices[3 * t + (size_t)k]];
    *z = v[0][2];
    return v[0][2] > 0.5f && v[0][2] == v[1][2] && v[1][2] == v[2][2];
}

/* (x, y) within slack metres of the xy bounding box of triangle t (for a
   roof, a rectangle split along its diagonal, that box is the whole roof). */
static bool over_box(const kern_scene_t *s, size_t t, double x, double y, double slack)
{
    double lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++) {
        const float *v = &s->vertices[3 * (size_t)s->indices[3 * t + (size_t)k]];
        for (int a = 0; a < 2; a++)
            lo[a] = fmin(lo[a], v[a]), hi[a] = fmax(hi[a], v[a]);
    }
    return x >= lo[0] - slack && x <= hi[0] + slack && y >= lo[1] - slack && y <= hi[1] + slack;
}

/* (x, y) inside or on the xy projection of triangle t. */
static bool over_triangle(const kern_scene_t *s, size_t t, double x, double y)
{
    const float *v[3];
    for (int k = 0; k < 3; k++)
        v[k] = &s->vertices[3 * (size_t)s->indices[3 * t + (size_t)k]];
    bool neg = false, pos = false;
    for (int k = 0; k < 3; k++) {
        const float *p = v[k], *q = v[(k + 1) % 3];
        double d = ((double)q[0] - p[0]) * (y - p[1]) - ((double)q[1] - p[1]) * (x - p[0]);
        neg = neg || d < 0;
        pos = pos || d > 0;
    }
    return !(neg && pos);
}

static void check_city(const char *dir)
{
    kern_scene_t *s = NULL;
    char err[BF_ERRLEN] = "";
    if (kern_scene_load(dir, &s, err) != BF_OK) {
        fprintf(stderr, "%s: %s\n", dir, err);
        failures++;
        return;
    }
    /* geometry: a ground slab (2 triangles) and boxes of 10 triangles */
    CHECK(s->triangle_count >= 2 + 10 * 8 && s->triangle_count <= 5000);
    CHECK((s->triangle_count - 2) % 10 == 0);
    CHECK(s->bbox_min[2] == 0 && s->bbox_max[2] >= 8 && s->bbox_max[2] <= 60);
    CHECK(s->bbox_min[0] <= -250 && s->bbox_max[0] >= 250);
    bool ground = false;
    for (size_t m = 0; m < s->material_count; m++) {
        const kern_material_t *mt = &s->materials[m];
        if (!strcmp(mt->itu, "medium_dry_ground"))
            ground = mt->thickness == 1.0;
        else
            CHECK(!strcmp(mt->itu, "concrete") || !strcmp(mt->itu, "brick") ||
                  !strcmp(mt->itu, "glass") || !strcmp(mt->itu, "marble"));
        CHECK(mt->eta_re >= 1 && mt->eta_im < 0);
    }
    CHECK(ground);
    /* scene.yaml: 3.5 GHz, tr38901 V, tilt 0..10, measurement over the city */
    CHECK(s->frequency_hz == 3.5e9);
    CHECK(s->tx.pattern == KERN_PATTERN_TR38901 && s->tx.polarization == KERN_POL_V);
    CHECK(s->tx.tilt_deg >= 0 && s->tx.tilt_deg <= 10);
    CHECK(s->tx.azimuth_deg >= 0 && s->tx.azimuth_deg < 360);
    const bf_measurement_t *m = &s->measurement;
    CHECK(m->has_height && m->height == 1.5);
    CHECK(m->has_cell_size && m->cell_size[0] == 5 && m->cell_size[1] == 5);
    CHECK(m->has_size && m->size[0] >= 500 && m->size[1] >= 500);
    CHECK(m->has_center && fabs(m->center[0]) < 1 && fabs(m->center[1]) < 1);
    /* the transmitter stands 3 m above a roof, on its edge */
    bool on_roof = false;
    for (size_t t = 0; t < s->triangle_count && !on_roof; t++) {
        double z;
        if (is_roof(s, t, &z) && fabs(s->tx.position[2] - 3 - z) < 1e-2 &&
            over_box(s, t, s->tx.position[0], s->tx.position[1], 0.01))
            on_roof = true;
    }
    CHECK(on_roof);
    /* the zone: a rect inside the city */
    CHECK(s->zone_points == 4);
    double zlo[2] = {INFINITY, INFINITY}, zhi[2] = {-INFINITY, -INFINITY};
    for (size_t p = 0; p < s->zone_points; p++)
        for (int a = 0; a < 2; a++) {
            double c = s->zone_xy[2 * p + (size_t)a];
            CHECK(c >= s->bbox_min[a] && c <= s->bbox_max[a]);
            zlo[a] = fmin(zlo[a], c), zhi[a] = fmax(zhi[a], c);
        }
    CHECK(zhi[0] - zlo[0] >= 10 && zhi[1] - zlo[1] >= 10);
    /* along a street: no roof over the zone's middle line, and roofs over
       its edges (the first 10 m of the buildings on either side) */
    size_t samples = 0, covered = 0, mid = 0;
    double ymid = 0.5 * (zlo[1] + zhi[1]);
    for (double x = zlo[0] + 1; x < zhi[0]; x += 2)
        for (double y = zlo[1] + 1; y < zhi[1]; y += 2) {
            CHECK(kern_scene_in_zone(s, x, y));
            samples++;
            bool roof = false;
            for (size_t t = 0; t < s->triangle_count && !roof; t++) {
                double z;
                roof = is_roof(s, t, &z) && over_triangle(s, t, x, y);
            }
            covered += roof;
            if (fabs(y - ymid) < 1.01)
                mid += roof;
        }
    CHECK(samples > 50 && mid == 0 && covered > 0 && covered < samples / 2);
    /* where a planner puts it: along a street, its centre 4 to 10 degrees
       down from the antenna (60 m off at least; less where the city ends),
       its near end clear of the mast */
    double cx = 0.5 * (zlo[0] + zhi[0]) - s->tx.position[0];
    double cy = 0.5 * (zlo[1] + zhi[1]) - s->tx.position[1];
    double dc = hypot(cx, cy), drop = s->tx.position[2] - 1.5;
    double alpha = atan2(drop, dc) * 180 / M_PI;
    double near = fmin(fabs(zlo[0] - s->tx.position[0]), fabs(zhi[0] - s->tx.position[0]));
    CHECKF(alpha >= 3.5 && alpha <= 16.0, "%s: zone centre %.0f m off, %.1f deg down", s->name, dc,
           alpha);
    CHECKF(near >= 5.0, "%s: the zone's near end %.0f m from the mast", s->name, near);
    printf("%s: %zu triangles, %zu materials, tx (%.0f, %.0f, %.0f) az %.0f tilt %.1f, zone "
           "%.0f x %.0f m, %.0f m off, %.1f deg down\n",
           s->name, s->triangle_count, s->material_count, s->tx.position[0], s->tx.position[1],
           s->tx.position[2], s->tx.azimuth_deg, s->tx.tilt_deg, zhi[0] - zlo[0], zhi[1] - zlo[1],
           dc, alpha);
    kern_scene_destroy(&s);
}

int main(void)
{
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    char a[256], b[256], c[256], err[BF_ERRLEN] = "";
    snprintf(a, sizeof a, "%s/a", tmp);
    snprintf(b, sizeof b, "%s/b/deeper", tmp); /* made with its parents */
    snprintf(c, sizeof c, "%s/c", tmp);
    CHECK(kern_scenegen(a, 3, 7, err) == BF_OK);
    CHECK(kern_scenegen(b, 3, 7, err) == BF_OK);
    CHECK(kern_scenegen(c, 3, 8, err) == BF_OK);
    /* same seed, same bytes: 3 cities of scene.xml, scene.yaml and meshes */
    int files = compare_trees(a, b);
    CHECK(files >= 3 * 5);
    /* another seed, another city, city by city */
    for (int i = 0; i < 3; i++) {
        char ca[300], cc[300];
        snprintf(ca, sizeof ca, "%s/city_%03d", a, i);
        snprintf(cc, sizeof cc, "%s/city_%03d", c, i);
        CHECK(compare_trees(ca, cc) < 0);
    }
    /* the cities of one seed differ from each other too */
    char c0[300], c1[300];
    snprintf(c0, sizeof c0, "%s/city_000", a);
    snprintf(c1, sizeof c1, "%s/city_001", a);
    CHECK(compare_trees(c0, c1) < 0);
    for (int i = 0; i < 3; i++) {
        char dir[300];
        snprintf(dir, sizeof dir, "%s/city_%03d", a, i);
        check_city(dir);
        snprintf(dir, sizeof dir, "%s/city_%03d", c, i);
        check_city(dir);
    }
    /* a few more seeds, for the properties that depend on chance */
    for (uint64_t seed = 100; seed < 108; seed++) {
        char dir[300];
        snprintf(dir, sizeof dir, "%s/s%llu", tmp, (unsigned long long)seed);
        CHECK(kern_scenegen(dir, 1, seed, err) == BF_OK);
        snprintf(dir, sizeof dir, "%s/s%llu/city_000", tmp, (unsigned long long)seed);
        check_city(dir);
    }
    /* nothing to write: just the directory; an unwritable place: an error */
    char d[300];
    snprintf(d, sizeof d, "%s/empty", tmp);
    CHECK(kern_scenegen(d, 0, 1, err) == BF_OK && compare_trees(d, d) == 0);
    snprintf(d, sizeof d, "%s/a/city_000/scene.yaml/sub", tmp);
    err[0] = '\0';
    CHECK(kern_scenegen(d, 1, 1, err) != BF_OK && err[0]);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    if (failures) {
        fprintf(stderr, "kern_scenegen_test: %d checks failed\n", failures);
        return 1;
    }
    printf("kern_scenegen_test: all checks passed\n");
    return 0;
}
