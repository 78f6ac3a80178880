/*  kernels/kern_fatbin.c - the GPU targets a binary carries, read back from
    its own .nv_fatbin section, so that `beamfleet version` reports what was
    built rather than what the build meant to do.

    Written by hand because nothing else reads it at run time: NVIDIA's
    cuobjdump is a separate tool that deployed machines rarely have, and
    the CUDA runtime only answers for a device that is present. The layout
    of the section is not a documented interface, so the walk is careful:
    every size is checked against what is left, and a header that does not
    check out ends it (what was read until then is kept). The section holds
    fat binaries one after another, each aligned to 8 bytes:
      header  u32 magic 0xBA55ED50, u16 version, u16 header size, u64 size
              of the entries that follow;
      entry   u16 kind (1 PTX, 2 ELF machine code), u16, u32 entry header
              size, u64 payload size, ..., u32 target at byte 28 (80 for
              sm_80), then the payload. */

#include "kern.h"

#include <elf.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FATBIN_MAGIC     0xBA55ED50u
#define FATBIN_HEADER    16
#define ENTRY_MIN_HEADER 32
#define SECTION_MAX      (256u << 20) /* refuse to read a larger section */

static uint16_t rd16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const unsigned char *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static bool read_at(int fd, void *buf, size_t n, uint64_t off)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return true;
}

/* The .nv_fatbin section of the ELF64 file fd, malloc'ed in *data; false
   when there is none or the file is not a little-endian ELF64. */
static bool fatbin_section(int fd, unsigned char **data, size_t *size)
{
    Elf64_Ehdr eh;
    if (!read_at(fd, &eh, sizeof eh, 0) || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
        eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shstrndx >= eh.e_shnum)
        return false;
    Elf64_Shdr *sh = calloc(eh.e_shnum, sizeof *sh);
    if (!sh)
        return false;
    bool found = false;
    char *names = NULL;
    if (!read_at(fd, sh, (size_t)eh.e_shnum * sizeof *sh, eh.e_shoff))
        goto out;
    const Elf64_Shdr *strtab = &sh[eh.e_shstrndx];
    if (strtab->sh_size == 0 || strtab->sh_size > SECTION_MAX ||
        !(names = malloc(strtab->sh_size + 1)) ||
        !read_at(fd, names, strtab->sh_size, strtab->sh_offset))
        goto out;
    names[strtab->sh_size] = '\0';
    for (unsigned i = 0; i < eh.e_shnum && !found; i++) {
        if (sh[i].sh_name >= strtab->sh_size || strcmp(names + sh[i].sh_name, ".nv_fatbin") != 0 ||
            sh[i].sh_type == SHT_NOBITS || sh[i].sh_size == 0 || sh[i].sh_size > SECTION_MAX)
            continue;
        unsigned char *d = malloc(sh[i].sh_size);
        if (d && read_at(fd, d, sh[i].sh_size, sh[i].sh_offset)) {
            *data = d;
            *size = sh[i].sh_size;
            found = true;
        } else
            free(d);
    }
out:
    free(names);
    free(sh);
    return found;
}

static int cmp_target(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int kern_cuda_targets(const char *path, char *out, size_t n)
{
    if (n)
        out[0] = '\0';
    int fd = open(path ? path : "/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    unsigned char *d = NULL;
    size_t size = 0;
    bool have = fatbin_section(fd, &d, &size);
    close(fd);
    if (!have)
        return 0;
    /* (0 for machine code, 1 for PTX) << 16 | arch, so that sorting puts
       machine code first; a binary carries a handful of targets */
    uint32_t targets[64];
    size_t count = 0;
    for (size_t off = 0; off + FATBIN_HEADER <= size;) {
        const unsigned char *h = d + off;
        uint64_t entries = rd64(h + 8);
        uint16_t hsize = rd16(h + 6);
        if (rd32(h) != FATBIN_MAGIC || hsize < FATBIN_HEADER || hsize > size - off ||
            entries > size - off - hsize)
            break;
        size_t e = off + hsize, end = e + (size_t)entries;
        while (e + ENTRY_MIN_HEADER <= end) {
            const unsigned char *eh = d + e;
            uint16_t kind = rd16(eh);
            uint32_t ehsize = rd32(eh + 4);
            uint64_t payload = rd64(eh + 8);
            if (ehsize < ENTRY_MIN_HEADER || ehsize > end - e || payload > end - e - ehsize)
                break;
            uint32_t arch = rd32(eh + 28);
            if ((kind == 1 || kind == 2) && arch > 0 && arch < 10000) {
                uint32_t key = (uint32_t)(kind == 2 ? 0 : 1) << 16 | arch;
                bool dup = false;
                for (size_t k = 0; k < count; k++)
                    dup |= targets[k] == key;
                if (!dup && count < sizeof targets / sizeof *targets)
                    targets[count++] = key;
            }
            e += ehsize + (size_t)payload;
        }
        off = (end + 7) & ~(size_t)7;
    }
    free(d);
    qsort(targets, count, sizeof *targets, cmp_target);
    size_t len = 0;
    for (size_t k = 0; k < count && n; k++) {
        int w = snprintf(out + len, n - len, "%s%s_%u", k ? " " : "",
                         targets[k] >> 16 ? "compute" : "sm", (unsigned)(targets[k] & 0xffff));
        if (w < 0 || (size_t)w >= n - len) {
            out[len] = '\0'; /* whole targets only */
            break;
        }
        len += (size_t)w;
    }
    return (int)count;
}
