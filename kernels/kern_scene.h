/*  kernels/kern_scene.h - a radio scene in memory: triangles with their ITU
    radio materials, the transmitter and the zone, loaded from a Sionna RT
    scene directory (Mitsuba 3 XML + binary PLY meshes, DESIGN 6.1) and its
    scene.yaml (DESIGN section 3), and the procedural city generator that
    writes such directories (`beamfleet scenegen`).

    Everything here runs on the host. The tracer (kern.h) consumes the flat
    arrays directly; nothing in this struct is specific to a backend. */

#ifndef KERN_SCENE_H_INCLUDED
#define KERN_SCENE_H_INCLUDED

#include "../common/bf.h"
#include "../common/bf_config.h"

#define KERN_MAX_TRIANGLES   (1u << 26) /* refuse larger meshes as input errors */
#define KERN_MAX_ZONE_POINTS 4096
#define KERN_MAX_TX          16 /* transmitters in one scene */

typedef enum {
    KERN_PATTERN_ISO,
    KERN_PATTERN_DIPOLE,
    KERN_PATTERN_HW_DIPOLE,
    KERN_PATTERN_TR38901
} kern_pattern_t;
/* cross: +-45 deg ports fed coherently, as Sionna RT's default precoding;
   cross_independent: the same ports with independent signals, powers
   added (docs/radio.md) */
typedef enum {
    KERN_POL_V,
    KERN_POL_H,
    KERN_POL_CROSS,
    KERN_POL_CROSS_INDEPENDENT
} kern_polarization_t;

typedef enum {
    KERN_SCATTER_LAMBERTIAN = 0,
    KERN_SCATTER_DIRECTIVE,
    KERN_SCATTER_BACKSCATTERING
} kern_scatter_pattern_t;

/* One radio material at the scene's frequency (DESIGN 6.2). */
typedef struct {
    char itu[32];     /* ITU name: concrete, brick, metal, ... */
    double thickness; /* slab thickness [m] */
    double eta_re;    /* complex relative permittivity eta = eta_re + j*eta_im */
    double eta_im;    /*   (eta_im = -sigma / (eps0 * 2 pi f) <= 0) */
    /* Diffuse reflection (Sionna RT's; docs/radio.md), read from the bsdf:
       scattering_coefficient S and xpd_coefficient K_x in [0, 1] (0 by
       default: a smooth surface), scattering_pattern lambertian (default),
       directive (alpha_r; lambda = 1, alpha_i = 1) or backscattering
       (alpha_r, alpha_i >= 1, lambda in [0, 1]). */
    double scattering_coefficient, xpd_coefficient;
    kern_scatter_pattern_t scattering_pattern;
    int alpha_r, alpha_i;
    double lambda;
} kern_material_t;

typedef struct {
    char name[32]; /* scene.yaml's, or "tx<i>" */
    bool movable;  /* the search may move it [true] */
    bool serves;   /* it may serve a cell [true]; false: interference only */
    double position[3];
    double power_dbm;
    kern_pattern_t pattern;
    kern_polarization_t polarization;
    double azimuth_deg, tilt_deg, roll_deg; /* the initial orientation */
} kern_tx_t;

typedef struct {
    char *dir;  /* the scene directory as given */
    char *name; /* its last path component */
    double frequency_hz;

    /* Geometry: all shapes of the XML merged, in file order. */
    float *vertices;        /* 3 * vertex_count: x, y, z */
    uint32_t *indices;      /* 3 * triangle_count: vertex indices (checked < vertex_count) */
    uint16_t *tri_material; /* triangle_count: index into materials */
    size_t vertex_count, triangle_count;
    kern_material_t *materials;
    size_t material_count;
    double bbox_min[3], bbox_max[3]; /* of all vertices; zero box when empty */

    kern_tx_t tx; /* the first transmitter, txs[0] */
    /* Every transmitter, in scene.yaml order: one for the `transmitter:`
       form, the items of `transmitters:` otherwise. */
    kern_tx_t txs[KERN_MAX_TX];
    size_t tx_count;

    /* Zone: a polygon (zone_points pairs x, y), or a rect stored as its four
       corners. A cell belongs to the zone when its centre is inside. */
    double *zone_xy;
    size_t zone_points;

    /* measurement overrides from scene.yaml (has_* flags false when absent) */
    bf_measurement_t measurement;
} kern_scene_t;

/* Loads scene_dir: its one *.xml file (scene.xml preferred when several),
   every PLY it references, and scene_dir/scene.yaml. Material parameters are
   evaluated at the scene's frequency. On error *scene is NULL and err holds a
   one-line message naming the file (and line/element/field) at fault: bad
   XML, missing or truncated PLY, index out of range, non-triangle face,
   unknown material, frequency outside a material's range, missing or bad
   scene.yaml keys, zone outside the scene's bounding box. */
bf_err_t kern_scene_load(const char *scene_dir, kern_scene_t **scene, char *err) BF_MUST_CHECK;

/* Loads only the geometry of a Mitsuba XML file (no scene.yaml), with
   materials evaluated at frequency_hz. For benchmarks and tests on the shared
   Sionna scenes. The transmitter is left at the origin and the zone empty. */
bf_err_t kern_scene_load_xml(const char *xml_path, double frequency_hz, kern_scene_t **scene,
                             char *err) BF_MUST_CHECK;

/* Frees a scene; NULL-safe; nulls *scene. */
void kern_scene_destroy(kern_scene_t **scene);

/* True when (x, y) lies inside the zone (even-odd rule). */
bool kern_scene_in_zone(const kern_scene_t *scene, double x, double y);

/* Fills eta for an ITU material name at frequency_hz (DESIGN 6.2 table).
   BF_ENOENT for an unknown name, BF_EINVAL when the frequency is outside
   every range of that material; err says which. */
bf_err_t kern_material_eval(const char *itu, double frequency_hz, double thickness,
                            kern_material_t *out, char *err) BF_MUST_CHECK;

/* Writes count procedural city scenes into out_dir/city_000, city_001, ...
   (street grid, buildings of random footprint and height with ITU
   materials, a ground plane, scene.yaml with a rooftop transmitter and a
   zone), deterministic for a seed. */
bf_err_t kern_scenegen(const char *out_dir, unsigned count, uint64_t seed, char *err) BF_MUST_CHECK;

#endif
