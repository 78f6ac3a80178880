/*  kernels/kern_fatbin_test.c - kern_cuda_targets: the GPU targets read back
    from a binary. Checks hand-made ELF files (two fat binaries, duplicate
    and mixed entries, then every kind of damage: sizes past the end, a bad
    magic, a truncated file, not ELF at all), then the real `beamfleet`
    binary of this build against what CMAKE_CUDA_ARCHITECTURES asked for
    (BF_CUDA_TARGETS), and the line `beamfleet version` prints. */

#include "kern.h"

#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/bf_check.h"

#ifndef BF_CUDA_TARGETS
#define BF_CUDA_TARGETS ""
#endif

static char dir[64];

typedef struct {
    unsigned char b[4096];
    size_t n;
} blob_t;

static void put(blob_t *x, const void *p, size_t n)
{
    memcpy(x->b + x->n, p, n);
    x->n += n;
}
static void put16(blob_t *x, uint16_t v)
{
    put(x, &v, 2);
}
static void put32(blob_t *x, uint32_t v)
{
    put(x, &v, 4);
}
static void put64(blob_t *x, uint64_t v)
{
    put(x, &v, 8);
}

/* One entry: kind 1 (PTX) or 2 (ELF), a 64-byte header, payload bytes. */
static void entry(blob_t *x, uint16_t kind, uint32_t arch, uint64_t payload)
{
    put16(x, kind);
    put16(x, 0x0101);
    put32(x, 64);
    put64(x, payload);
    put32(x, 0);
    put32(x, 0);
    put16(x, 0);
    put16(x, 0);
    put32(x, arch);
    for (int i = 32; i < 64; i++)
        put(x, "", 1);
    for (uint64_t i = 0; i < payload; i++)
        put(x, "\xab", 1);
}

/* Writes an ELF64 file whose only real section is .nv_fatbin = fat. */
static void write_elf(const char *path, const blob_t *fat)
{
    static const char names[] = "\0.nv_fatbin\0.shstrtab";
    blob_t f = {.n = sizeof(Elf64_Ehdr)};
    size_t fat_off = f.n;
    put(&f, fat->b, fat->n);
    size_t names_off = f.n;
    put(&f, names, sizeof names);
    while (f.n % 8)
        put(&f, "", 1);
    size_t sh_off = f.n;
    Elf64_Shdr sh[3] = {
        {0},
        {.sh_name = 1, .sh_type = SHT_PROGBITS, .sh_offset = fat_off, .sh_size = fat->n},
        {.sh_name = 12, .sh_type = SHT_STRTAB, .sh_offset = names_off, .sh_size = sizeof names}};
    put(&f, sh, sizeof sh);
    Elf64_Ehdr eh = {.e_type = ET_EXEC,
                     .e_machine = EM_X86_64,
                     .e_version = EV_CURRENT,
                     .e_shoff = sh_off,
                     .e_ehsize = sizeof eh,
                     .e_shentsize = sizeof(Elf64_Shdr),
                     .e_shnum = 3,
                     .e_shstrndx = 2};
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    memcpy(f.b, &eh, sizeof eh);
    FILE *o = fopen(path, "wb");
    CHECK(o && fwrite(f.b, 1, f.n, o) == f.n);
    if (o)
        fclose(o);
}

/* A fat binary header for entries of size bytes. */
static void fat_header(blob_t *x, uint64_t size)
{
    put32(x, 0xBA55ED50u);
    put16(x, 1);
    put16(x, 16);
    put64(x, size);
}

static int targets_of(const blob_t *fat, char *out, size_t n)
{
    char path[128];
    snprintf(path, sizeof path, "%s/fake.elf", dir);
    write_elf(path, fat);
    return kern_cuda_targets(path, out, n);
}

static void test_made(void)
{
    char out[128];
    /* two fat binaries (8-byte aligned), a duplicate, PTX after machine code */
    blob_t fat = {0};
    fat_header(&fat, 2 * 64 + 5 + 3);
    entry(&fat, 1, 86, 5); /* PTX */
    entry(&fat, 2, 90, 3); /* ELF */
    while (fat.n % 8)
        put(&fat, "", 1);
    fat_header(&fat, 3 * 64);
    entry(&fat, 2, 80, 0);
    entry(&fat, 2, 90, 0); /* again: listed once */
    entry(&fat, 1, 90, 0);
    CHECK(targets_of(&fat, out, sizeof out) == 4);
    CHECKF(!strcmp(out, "sm_80 sm_90 compute_86 compute_90"), "'%s'", out);
    /* too small a buffer: cut at a whole target, still terminated */
    CHECK(targets_of(&fat, out, 12) == 4 && !strcmp(out, "sm_80 sm_90"));

    /* damage: the walk stops at the first header that does not check out */
    blob_t bad = {0};
    fat_header(&bad, 2 * 64);
    entry(&bad, 2, 75, 0);
    entry(&bad, 2, 80, 0);
    memcpy(bad.b + 16 + 64 + 8, &(uint64_t){UINT64_MAX - 8}, 8); /* 2nd payload past the end */
    CHECK(targets_of(&bad, out, sizeof out) == 1 && !strcmp(out, "sm_75"));
    memcpy(bad.b + 8, &(uint64_t){UINT64_MAX}, 8); /* entries past the end */
    CHECK(targets_of(&bad, out, sizeof out) == 0 && !strcmp(out, ""));
    memcpy(bad.b, "\x50\xed\x55\xbb", 4); /* bad magic */
    CHECK(targets_of(&bad, out, sizeof out) == 0);
    blob_t tiny = {0};
    fat_header(&tiny, 64);
    put32(&tiny, 2); /* a truncated entry header */
    CHECK(targets_of(&tiny, out, sizeof out) == 0);
    blob_t empty = {0};
    CHECK(targets_of(&empty, out, sizeof out) == 0);

    /* not ELF, cut short, missing */
    char path[128];
    snprintf(path, sizeof path, "%s/text", dir);
    FILE *f = fopen(path, "w");
    fputs("#!/bin/sh\necho not a binary\n", f);
    fclose(f);
    CHECK(kern_cuda_targets(path, out, sizeof out) == 0);
    snprintf(path, sizeof path, "%s/fake.elf", dir);
    write_elf(path, &fat);
    CHECK(truncate(path, 40) == 0 && kern_cuda_targets(path, out, sizeof out) == 0);
    snprintf(path, sizeof path, "%s/missing", dir);
    CHECK(kern_cuda_targets(path, out, sizeof out) == -1);
}

static void test_this_build(void)
{
    const char *build = getenv("BF_BUILD_DIR");
    if (!build) {
        fprintf(stderr, "kern_fatbin_test: BF_BUILD_DIR unset, skipping the beamfleet binary\n");
        return;
    }
    char bin[512], out[256];
    snprintf(bin, sizeof bin, "%s/beamfleet", build);
    int n = kern_cuda_targets(bin, out, sizeof out);
    const char *want = BF_CUDA_TARGETS;
    if (!strcmp(want, "?"))
        CHECKF(n > 0, "%d targets in %s", n, bin);
    else
        CHECKF(n >= 0 && !strcmp(out, want), "%s carries '%s', the build asked for '%s'", bin, out,
               want);
    /* `beamfleet version` prints the same, read from itself */
    char cmd[600], line[256], expect[300];
    snprintf(cmd, sizeof cmd, "%s version", bin);
    snprintf(expect, sizeof expect, "gpu targets: %s\n", n > 0 ? out : "none");
    FILE *p = popen(cmd, "r");
    bool seen = false;
    while (p && fgets(line, sizeof line, p))
        seen |= !strcmp(line, expect);
    CHECK(p && pclose(p) == 0);
    CHECKF(seen, "`beamfleet version` printed no line '%.*s'", (int)strlen(expect) - 1, expect);
    printf("kern_fatbin_test: %s carries %s\n", bin, n > 0 ? out : "no GPU code");
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/kern_fatbin_test.XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    test_made();
    test_this_build();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        failures++;
    if (failures) {
        fprintf(stderr, "kern_fatbin_test: %d checks failed\n", failures);
        return 1;
    }
    printf("kern_fatbin_test: all checks passed\n");
    return 0;
}
