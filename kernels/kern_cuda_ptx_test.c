/*  kernels/kern_cuda_ptx_test.c - reads the PTX that nvcc makes of
    kern_cuda.cu (for compute_80 and compute_90, with the build's flags; see
    kernels/CMakeLists.txt) and checks that the trace and evaluate kernels
    compute what the CPU computes, instruction by instruction, without
    running them: no fused multiply-add (fma, mad on floats), no product
    that ptxas may still fuse (a mul on floats without an explicit rounding
    mode: PTX lets the code generator contract "mul/add sequences with no
    rounding modifiers"), no approximate instruction (.approx: CUDA's fast
    sin, exp, rsqrt, which the libdevice math functions use; div.full) and no
    flush-to-zero (.ftz). What remains is add, sub, mul.rn, div.rn, sqrt.rn,
    conversions and comparisons: IEEE 754 operations, rounded the same way
    on the host. Built only where nvcc is (it needs no GPU). Paths given
    as arguments replace the build's PTX (to check another build, or an
    older kern_cuda.cu). */

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bf_check.h"

/* The kernels whose arithmetic must match the CPU's. */
static const char *const checked[] = {"trace_kernel", "evaluate_kernel"};
enum { NCHECKED = sizeof checked / sizeof checked[0] };

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[65536];
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            char *p = realloc(buf, cap);
            if (!p) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = p;
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* Whether the dotted opcode (e.g. "fma.rn.f32") has the component c. */
static bool has_part(const char *op, const char *c)
{
    size_t n = strlen(c);
    for (const char *p = op; (p = strstr(p, c)) != NULL; p += n)
        if ((p == op || p[-1] == '.') && (p[n] == '.' || p[n] == '\0'))
            return true;
    return false;
}

static bool is_float_op(const char *op)
{
    return has_part(op, "f16") || has_part(op, "f16x2") || has_part(op, "bf16") ||
           has_part(op, "f32") || has_part(op, "f64");
}

/* Why this instruction breaks parity with the host, or NULL. */
static const char *offence(const char *op)
{
    size_t root = strcspn(op, ".");
    if (has_part(op, "approx") || has_part(op, "full"))
        return "approximate instruction";
    if (has_part(op, "ftz"))
        return "flushes subnormals to zero";
    if (!is_float_op(op))
        return NULL;
    if ((root == 3 && !strncmp(op, "fma", 3)) || (root == 3 && !strncmp(op, "mad", 3)))
        return "fused multiply-add";
    if (root == 3 && !strncmp(op, "mul", 3) && !has_part(op, "rn") && !has_part(op, "rz") &&
        !has_part(op, "rm") && !has_part(op, "rp"))
        return "product without a rounding mode (ptxas may fuse it)";
    return NULL;
}

typedef struct {
    unsigned found, instructions, mul_rn, bad;
} stats_t;

/* Checks one PTX file; returns 0 when it could not be read. */
static int check_ptx(const char *path)
{
    char *text = read_file(path);
    CHECKF(text != NULL, "cannot read %s", path);
    if (!text)
        return 0;
    stats_t st[NCHECKED];
    memset(st, 0, sizeof st);
    int cur = -1; /* index into checked[] of the entry being read, or -1 */
    unsigned lineno = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (strstr(p, ".entry ") && (!strncmp(p, ".entry", 6) || !strncmp(p, ".visible", 8))) {
            cur = -1;
            for (int k = 0; k < NCHECKED; k++)
                if (strstr(p, checked[k])) {
                    cur = k;
                    st[k].found++;
                }
            continue;
        }
        if (cur < 0)
            continue;
        if (line[0] == '}') { /* the entry's closing brace, in column 0 */
            cur = -1;
            continue;
        }
        if (*p == '@') { /* a guard predicate: @%p1 bra ..., @!%p2 mul... */
            p += strcspn(p, " \t");
            while (isspace((unsigned char)*p))
                p++;
        }
        if (!islower((unsigned char)*p))
            continue; /* directives, labels, braces, comments */
        char op[64];
        size_t n = strcspn(p, " \t;");
        if (n >= sizeof op)
            n = sizeof op - 1;
        memcpy(op, p, n);
        op[n] = '\0';
        st[cur].instructions++;
        st[cur].mul_rn += !strncmp(op, "mul.rn.f", 8);
        const char *why = offence(op);
        if (why && st[cur].bad++ < 8)
            fprintf(stderr, "  %s:%u: %s: %s: %s\n", path, lineno, checked[cur], why, p);
    }
    free(text);
    for (int k = 0; k < NCHECKED; k++) {
        printf("%s: %s: %u instructions, %u mul.rn, %u that the host would not compute "
               "alike\n",
               path, checked[k], st[k].instructions, st[k].mul_rn, st[k].bad);
        CHECKF(st[k].found == 1, "%s: %s found %u times, not once", path, checked[k], st[k].found);
        CHECKF(st[k].mul_rn > 0, "%s: %s has no mul.rn: not the kernel this test knows", path,
               checked[k]);
        CHECKF(st[k].bad == 0, "%s: %s: %u instructions fused, approximate or flushing", path,
               checked[k], st[k].bad);
    }
    return 1;
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            check_ptx(argv[i]);
    } else {
#ifdef KERN_PTX_FILES
        char files[] = KERN_PTX_FILES; /* ':'-separated */
        for (char *save = NULL, *f = strtok_r(files, ":", &save); f; f = strtok_r(NULL, ":", &save))
            check_ptx(f);
#else
        fprintf(stderr, "usage: kern_cuda_ptx_test FILE.ptx... (this build made no PTX)\n");
        return 2;
#endif
    }
    if (failures) {
        fprintf(stderr, "kern_cuda_ptx_test: %d checks failed\n", failures);
        return 1;
    }
    printf("kern_cuda_ptx_test: the kernels' arithmetic is the host's\n");
    return 0;
}
