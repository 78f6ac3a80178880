/*  bench/docstore.c - what the broker pays to keep a result and hand it on:
    the result of a boresight task with an N-cell zone (two arrays of N dBm
    values with all their digits) turned into what SQLite stores and back,
    as JSON text (json_dumps, json_loads: what the broker did) and as
    MessagePack (proto_json_to_msgpack, proto_msgpack_to_json: what it does),
    in the same run. Prints the time per result, the median of R rounds.

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
    if (!doc || !text || !packed)
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
        text[r] = (t1 - t0) / PER_ROUND * 1e3;
        packed[r] = (t2 - t1) / PER_ROUND * 1e3;
    }
    qsort(text, rounds, sizeof *text, cmp_double);
    qsort(packed, rounds, sizeof *packed, cmp_double);
    printf("a result of %u zone cells, store and read back, median of %u rounds of %d:\n", cells,
           rounds, PER_ROUND);
    printf("  JSON text   %8.3f ms (%zu bytes)\n", text[rounds / 2], text_bytes);
    printf("  MessagePack %8.3f ms (%zu bytes)  %.1fx faster\n", packed[rounds / 2], packed_bytes,
           text[rounds / 2] / packed[rounds / 2]);
    json_decref(doc);
    free(text);
    free(packed);
    return 0;
}
