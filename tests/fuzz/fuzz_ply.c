/*  tests/fuzz/fuzz_ply.c - libFuzzer harness for the binary PLY loader
    (kernels/kern_scene.c, reached through kern_scene_load_xml): the input is
    written as meshes/m.ply into a scratch scene directory whose fixed
    scene.xml references that one file from two shapes with two materials,
    so the mesh is decoded twice and appended to itself. Besides "no crash, no
    leak, no sanitizer report", every refusal must carry a one-line reason and
    every accepted mesh must satisfy what the tracer relies on
    (fuzz_check_scene), with the second copy equal to the first but for its
    vertex offset and material. */

#include "../../kernels/kern_scene.h"
#include "../../proto/proto.h"
#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_mkdir("meshes");
    fuzz_write_str("scene.xml", "<scene version=\"2.1.0\">\n"
                                "  <bsdf type=\"itu-radio-material\" id=\"a\">\n"
                                "    <string name=\"type\" value=\"concrete\"/>\n"
                                "  </bsdf>\n"
                                "  <bsdf type=\"twosided\" id=\"mat-itu_metal\"/>\n"
                                "  <shape type=\"ply\" id=\"one\">\n"
                                "    <string name=\"filename\" value=\"meshes/m.ply\"/>\n"
                                "    <ref id=\"a\" name=\"bsdf\"/>\n"
                                "  </shape>\n"
                                "  <shape type=\"ply\" id=\"two\">\n"
                                "    <string name=\"filename\" value=\"meshes/m.ply\"/>\n"
                                "    <ref id=\"mat-itu_metal\" name=\"bsdf\"/>\n"
                                "  </shape>\n"
                                "</scene>\n");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_write("meshes/m.ply", data, size);
    kern_scene_t *scene = fuzz_load_scene();
    if (!scene)
        return 0;
    size_t nv = scene->vertex_count / 2, nt = scene->triangle_count / 2;
    FUZZ_ASSERT(scene->vertex_count % 2 == 0 && scene->triangle_count % 2 == 0,
                "two copies of one mesh: %zu vertices, %zu triangles", scene->vertex_count,
                scene->triangle_count);
    FUZZ_ASSERT(scene->material_count == 2, "%zu materials", scene->material_count);
    FUZZ_ASSERT(nv == 0 ||
                    !memcmp(scene->vertices, scene->vertices + 3 * nv, 3 * nv * sizeof(float)),
                "the second copy's vertices differ");
    for (size_t i = 0; i < 3 * nt; i++)
        FUZZ_ASSERT(scene->indices[3 * nt + i] == scene->indices[i] + nv,
                    "index %zu of the second copy not offset by %zu", i, nv);
    for (size_t i = 0; i < nt; i++)
        FUZZ_ASSERT(scene->tri_material[i] == 0 && scene->tri_material[nt + i] == 1,
                    "triangle %zu: materials %u and %u", i, scene->tri_material[i],
                    scene->tri_material[nt + i]);
    kern_scene_destroy(&scene);
    return 0;
}
