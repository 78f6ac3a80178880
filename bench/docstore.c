/*  bench/docstore.c - what the broker pays to keep a result and hand it on:
    the result of a boresight task with an N-cell zone (two arrays of N dBm
    values with all their digits) turned into what SQLite stores and back,
    as JSON text (json_dumps, json_loads: what the broker did) and as
    MessagePack (proto_json_to_msgpack, proto_msgpack_to_json: what it does),
    in the same run. Then what the broker does with a RESULT as it comes
    in: before, the document made a tree, the broker's members set on it
    and the tree packed again (proto_msgpack_to_json, json_object_set,
    proto_json_to_msgpack); now, the bytes checked as a tree would be,
    the members it reads picked and its own put in (proto_msgpack_check,
    proto_msgpack_pick, proto_msgpack_patch). Prints the time per result,
    the median of R rounds.

      bench_docstore [--cells N] [--rounds R]   (3000, 7) */

#include "../common/bf.h"
#include "../proto/proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PER_ROUND 100

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static json_t *zone(unsigned n, double base)
{
    json_t *a = json_array();
    for (unsigned i = 0; a && i < n; i++)
        json_array_append_new(a, json_real(base - 1e-3 * i - 1.0 / (3.0 + i)));
    return a;
}

int main(int argc, char **argv)
{
    unsigned cells = 3000, rounds = 7;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cells") && i + 1 < argc)
            cells = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = (unsigned)strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: bench_docstore [--cells N] [--rounds R]\n");
            return 2;
        }
    }
    if (rounds == 0 || rounds > 1000) {
        fprintf(stderr, "bench_docstore: --rounds: 1..1000\n");
        return 2;
    }
    json_t *doc = json_pack("{s:s, s:s, s:o, s:o, s:f}", "status", "success", "scene", "city_000",
                            "zone_power_initial", zone(cells, -90.0), "zone_power_optimized",
                            zone(cells, -80.0), "elapsed_time", 1.25);
    double *text = calloc(rounds, sizeof *text), *packed = calloc(rounds, sizeof *packed);
    double *tree_in = calloc(rounds, sizeof *tree_in), *bytes_in = calloc(rounds, sizeof *bytes_in);
    /* the RESULT's document as a worker sends it (with host, worker, device)
       and the members the broker puts in and reads (broker.c, broker_store.c) */
    json_t *sent = json_deep_copy(doc);
    json_object_set_new(sent, "host", json_string("node-17"));
    json_object_set_new(sent, "worker", json_string("node-17:4242:gpu0"));
    json_object_set_new(sent, "device", json_string("NVIDIA H100"));
    json_object_set_new(sent, "gpu_id", json_integer(0));
    json_t *mine = json_pack("{s:s, s:s, s:s, s:i, s:s, s:s}", "scene", "city_000", "task_id",
                             "4b1f0c2a9d8e7f6a5b4c3d2e1f0a9b8c", "job_id", "0123456789ab",
                             "attempt", 1, "status", "success", "key", "xxh3:5d41402abc4b2a76");
    static const char *const read_keys[] = {"status", "host",   "worker", "gpu_id",
                                            "reason", "device", "fault",  "elapsed_time"};
    uint8_t *wire = NULL;
    size_t wire_len = 0;
    if (!doc || !text || !packed || !tree_in || !bytes_in || !sent || !mine ||
        proto_json_to_msgpack(sent, &wire, &wire_len) != BF_OK)
        return 1;
    size_t text_bytes = 0, packed_bytes = 0;
    for (unsigned r = 0; r < rounds; r++) {
        double t0 = bf_mono_s();
        for (int i = 0; i < PER_ROUND; i++) {
            char *t = json_dumps(doc, JSON_COMPACT);
            json_t *back = t ? json_loads(t, 0, NULL) : NULL;
            if (!back)
                return 1;
            text_bytes = strlen(t);
            json_decref(back);
            free(t);
        }
        double t1 = bf_mono_s();
        for (int i = 0; i < PER_ROUND; i++) {
            uint8_t *p = NULL;
            size_t n = 0;
            json_t *back = NULL;
            char err[BF_ERRLEN];
            if (proto_json_to_msgpack(doc, &p, &n) != BF_OK ||
                proto_msgpack_to_json(p, n, &back, err) != BF_OK)
                return 1;
            packed_bytes = n;
            json_decref(back);
            free(p);
        }
        double t2 = bf_mono_s();
        for (int i = 0; i < PER_ROUND; i++) { /* a RESULT, as the broker handled it before */
            json_t *tree = NULL;
            uint8_t *out = NULL;
            size_t n = 0;
            if (proto_msgpack_to_json(wire, wire_len, &tree, NULL) != BF_OK ||
                json_object_update(tree, mine) != 0 ||
                proto_json_to_msgpack(tree, &out, &n) != BF_OK)
                return 1;
            json_decref(tree);
            free(out);
        }
        double t3 = bf_mono_s();
        for (int i = 0; i < PER_ROUND; i++) { /* and as it does now */
            json_t *v[BF_ARRAY_LEN(read_keys)];
            uint8_t *out = NULL;
            size_t n = 0;
            if (proto_msgpack_check(wire, wire_len, NULL) != BF_OK ||
                proto_msgpack_pick(wire, wire_len, read_keys, BF_ARRAY_LEN(read_keys), v, NULL) !=
                    BF_OK ||
                proto_msgpack_patch(wire, wire_len, mine, &out, &n) != BF_OK)
                return 1;
            for (size_t k = 0; k < BF_ARRAY_LEN(read_keys); k++)
                json_decref(v[k]);
            free(out);
        }
        double t4 = bf_mono_s();
        text[r] = (t1 - t0) / PER_ROUND * 1e3;
        packed[r] = (t2 - t1) / PER_ROUND * 1e3;
        tree_in[r] = (t3 - t2) / PER_ROUND * 1e3;
        bytes_in[r] = (t4 - t3) / PER_ROUND * 1e3;
    }
    qsort(text, rounds, sizeof *text, cmp_double);
    qsort(packed, rounds, sizeof *packed, cmp_double);
    printf("a result of %u zone cells, store and read back, median of %u rounds of %d:\n", cells,
           rounds, PER_ROUND);
    printf("  JSON text   %8.3f ms (%zu bytes)\n", text[rounds / 2], text_bytes);
    printf("  MessagePack %8.3f ms (%zu bytes)  %.1fx faster\n", packed[rounds / 2], packed_bytes,
           text[rounds / 2] / packed[rounds / 2]);
    qsort(tree_in, rounds, sizeof *tree_in, cmp_double);
    qsort(bytes_in, rounds, sizeof *bytes_in, cmp_double);
    printf("a RESULT of that zone (%zu bytes) through the broker:\n", wire_len);
    printf("  as a tree   %8.3f ms (unpack, set its members, pack)\n", tree_in[rounds / 2]);
    printf("  as bytes    %8.3f ms (check, pick, patch)  %.1fx faster\n", bytes_in[rounds / 2],
           tree_in[rounds / 2] / bytes_in[rounds / 2]);
    json_decref(doc);
    json_decref(sent);
    json_decref(mine);
    free(wire);
    free(text);
    free(packed);
    free(tree_in);
    free(bytes_in);
    return 0;
}
