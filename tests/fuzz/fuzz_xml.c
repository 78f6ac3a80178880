/*  tests/fuzz/fuzz_xml.c - libFuzzer harness for the Mitsuba 3 scene XML
    loader (kern_scene_load_xml, kernels/kern_scene.h): the input is written
    as scene.xml into a scratch scene directory whose meshes/ holds a valid
    PLY quad under every mesh name the Sionna example scenes use (box,
    screen, building_1..6, floor, wall, reflector, wedge, car_1..8, ...), so
    mutated XML reaches the shape, material and PLY stages. Besides "no crash,
    no leak, no sanitizer report", every refusal must carry a one-line reason
    and every accepted scene must satisfy what the tracer relies on
    (fuzz_check_scene). */

#include "../../kernels/kern_scene.h"
#include "../../proto/proto.h"
#include "fuzz_util.h"

static const char *const mesh_names[] = {
    "box",        "screen",     "screen_1",   "screen_2",        "building_1",
    "building_2", "building_3", "building_4", "building_5",      "building_6",
    "floor",      "wall",       "reflector",  "large_reflector", "small_reflector",
    "wedge",      "car_1",      "car_2",      "car_3",           "car_4",
    "car_5",      "car_6",      "car_7",      "car_8",           "ground",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_mkdir("meshes");
    for (size_t i = 0; i < sizeof mesh_names / sizeof mesh_names[0]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "meshes/%s.ply", mesh_names[i]);
        fuzz_write_quad_ply(rel, (float)(10 + i));
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_write("scene.xml", data, size);
    kern_scene_t *scene = fuzz_load_scene();
    if (!scene)
        return 0;
    FUZZ_ASSERT(scene->triangle_count % 2 == 0 && scene->vertex_count % 4 == 0,
                "%zu triangles, %zu vertices from quads", scene->triangle_count,
                scene->vertex_count);
    kern_scene_destroy(&scene);
    return 0;
}
