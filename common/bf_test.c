/*  common/bf_test.c - tests for common/bf.c: the error vocabulary, durable
    file writes (atomic replace, append + sync, mkdir -p, bounded reads),
    scene-name safety, identifiers, clocks and string helpers. Each check
    reads as a usage example; the program exits non-zero on the first
    failure. */

#include "bf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/bf_check.h"

static char tmpdir[64];

static char *in_tmp(const char *name)
{
    return bf_asprintf("%s/%s", tmpdir, name);
}

static void test_strerror(void)
{
    for (int e = 0; e < BF_ERR_COUNT; e++) {
        const char *s = bf_strerror((bf_err_t)e);
        CHECK(s && *s);
        CHECK(strcmp(s, "unknown error") != 0);
        for (int o = 0; o < e; o++)
            CHECK(strcmp(s, bf_strerror((bf_err_t)o)) != 0);
    }
    CHECK(!strcmp(bf_strerror(BF_OK), "ok"));
    CHECK(!strcmp(bf_strerror(BF_ENOSPC), "no space left on device"));
    CHECK(!strcmp(bf_strerror(BF_ERR_COUNT), "unknown error"));
    CHECK(!strcmp(bf_strerror((bf_err_t)-1), "unknown error"));

    char err[BF_ERRLEN];
    CHECK(bf_fail(err, BF_EPROTO, "%s:%d: bad", "x", 3) == BF_EPROTO);
    CHECK(!strcmp(err, "x:3: bad"));
    CHECK(bf_fail(NULL, BF_EIO, "ignored") == BF_EIO);

    /* An echoed value cannot break the one line of valid UTF-8 (found by
       tests/fuzz): control bytes, a sequence cut by %.Ns, stray and
       overlong bytes, surrogates become '?'; valid UTF-8 stays. */
    bf_fail(err, BF_EINVAL, "'%s'", "a\nb\r\tc\x7f");
    CHECKF(!strcmp(err, "'a?b??c?'"), "%s", err);
    bf_fail(err, BF_EINVAL, "'%.2s'", "a\xc3\xa9");
    CHECKF(!strcmp(err, "'a?'"), "%s", err);
    bf_fail(err, BF_EINVAL, "%s", "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa1");
    CHECKF(!strcmp(err, "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa1"), "%s", err);
    bf_fail(err, BF_EINVAL, "%s", "\x80\xc0\xaf\xed\xa0\x80\xf5\x80\xe2\x82");
    CHECKF(!strcmp(err, "??????????"), "%s", err);
}

/* Number of entries in dir whose name starts with prefix. */
static int count_prefix(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += !strncmp(e->d_name, prefix, strlen(prefix));
    if (d)
        closedir(d);
    return n;
}

static void test_write_atomic(void)
{
    char err[BF_ERRLEN] = "";
    char *path = in_tmp("report.json");
    CHECK(bf_write_atomic(path, "first", 5, err) == BF_OK);
    char *data = NULL;
    size_t len = 0;
    CHECK(bf_read_file(path, 100, &data, &len, err) == BF_OK);
    CHECK(len == 5 && !strcmp(data, "first"));
    free(data);

    /* replacing keeps exactly one file and no temp files */
    CHECK(bf_write_atomic(path, "second version", 14, err) == BF_OK);
    CHECK(bf_read_file(path, 100, &data, &len, err) == BF_OK);
    CHECK(len == 14 && !strcmp(data, "second version"));
    free(data);
    CHECK(count_prefix(tmpdir, "report.json") == 1);

    /* empty content is a valid file */
    CHECK(bf_write_atomic(path, "", 0, err) == BF_OK);
    CHECK(bf_read_file(path, 100, &data, &len, err) == BF_OK);
    CHECK(len == 0 && data && data[0] == '\0');
    free(data);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
    free(path);

    /* into a directory that does not exist: ENOENT, message names the path,
       nothing left behind */
    char *missing = in_tmp("no/such/dir/file.json");
    err[0] = '\0';
    CHECK(bf_write_atomic(missing, "x", 1, err) == BF_ENOENT);
    CHECK(strstr(err, "no/such/dir/file.json") != NULL);
    CHECK(access(missing, F_OK) != 0);
    free(missing);

    /* a path whose parent is a regular file */
    char *file = in_tmp("plain");
    CHECK(bf_write_atomic(file, "x", 1, err) == BF_OK);
    char *under = in_tmp("plain/child");
    CHECK(bf_write_atomic(under, "x", 1, err) != BF_OK);
    free(under);
    free(file);

    /* a read-only directory (meaningless for root, who may write anyway) */
    if (geteuid() != 0) {
        char *ro = in_tmp("ro");
        CHECK(mkdir(ro, 0555) == 0);
        char *target = in_tmp("ro/f");
        CHECK(bf_write_atomic(target, "x", 1, err) == BF_EPERM);
        free(target);
        CHECK(rmdir(ro) == 0);
        free(ro);
    }
}

static void test_append_sync(void)
{
    char err[BF_ERRLEN] = "";
    char *path = in_tmp("results.jsonl");
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    CHECK(bf_append_sync(fd, "{\"a\":1}\n", 8, err) == BF_OK);
    CHECK(bf_append_sync(fd, "{\"b\":2}\n", 8, err) == BF_OK);
    CHECK(bf_append_sync(fd, "", 0, err) == BF_OK);
    close(fd);
    char *data = NULL;
    size_t len = 0;
    CHECK(bf_read_file(path, 1000, &data, &len, err) == BF_OK);
    CHECK(len == 16 && !strcmp(data, "{\"a\":1}\n{\"b\":2}\n"));
    free(data);
    free(path);

    /* a disk that is full: /dev/full fails every write with ENOSPC */
    int full = open("/dev/full", O_WRONLY | O_APPEND | O_CLOEXEC);
    if (full >= 0) {
        err[0] = '\0';
        CHECK(bf_append_sync(full, "x", 1, err) == BF_ENOSPC);
        CHECK(strstr(err, "append") != NULL);
        close(full);
    } else {
        fprintf(stderr, "note: /dev/full not available, ENOSPC mapping not exercised\n");
    }

    /* a closed descriptor */
    CHECK(bf_append_sync(-1, "x", 1, err) == BF_EIO);
}

static void test_mkdir_p(void)
{
    char err[BF_ERRLEN] = "";
    char *deep = in_tmp("a/b/c/d");
    CHECK(bf_mkdir_p(deep, err) == BF_OK);
    CHECK(bf_is_dir(deep));
    CHECK(bf_mkdir_p(deep, err) == BF_OK); /* already there */
    free(deep);

    char *slash = in_tmp("e/f/");
    CHECK(bf_mkdir_p(slash, err) == BF_OK);
    free(slash);
    char *ef = in_tmp("e/f");
    CHECK(bf_is_dir(ef));
    free(ef);

    /* a file in the way */
    char *file = in_tmp("a/file");
    CHECK(bf_write_atomic(file, "x", 1, err) == BF_OK);
    CHECK(bf_mkdir_p(file, err) == BF_EIO);
    char *below = in_tmp("a/file/sub");
    CHECK(bf_mkdir_p(below, err) != BF_OK);
    free(below);
    free(file);

    CHECK(bf_mkdir_p("", err) == BF_EINVAL);
    CHECK(bf_mkdir_p("/", err) == BF_OK);
    CHECK(!bf_is_dir("/no/such/dir/anywhere"));
}

static void test_read_file(void)
{
    char err[BF_ERRLEN] = "";
    char *path = in_tmp("hundred");
    char buf[100];
    memset(buf, 'x', sizeof buf);
    CHECK(bf_write_atomic(path, buf, sizeof buf, err) == BF_OK);

    char *data = (char *)1;
    size_t len = 7;
    CHECK(bf_read_file(path, 99, &data, &len, err) == BF_EINVAL);
    CHECK(data == NULL && len == 0);
    CHECK(strstr(err, "too large") != NULL);

    CHECK(bf_read_file(path, 100, &data, &len, err) == BF_OK);
    CHECK(len == 100 && data[100] == '\0' && data[99] == 'x');
    free(data);
    CHECK(bf_read_file(path, 100, &data, NULL, err) == BF_OK); /* len is optional */
    free(data);
    free(path);

    char *missing = in_tmp("missing");
    CHECK(bf_read_file(missing, 100, &data, &len, err) == BF_ENOENT);
    CHECK(data == NULL);
    free(missing);

    CHECK(bf_read_file(tmpdir, 100, &data, &len, err) == BF_EIO); /* a directory */
    CHECK(data == NULL);
    CHECK(strstr(err, "not a regular file") != NULL);
}

/* bf_read_file_beneath: a file inside root, or a link that stays inside, is
   read; "..", an absolute link or a relative link that climbs out is
   BF_EPERM, and the message names the file, not what it points at. */
static void test_read_file_beneath(void)
{
    char err[BF_ERRLEN] = "";
    char *root = in_tmp("room"), *sub = in_tmp("room/sub"), *outside = in_tmp("outside.txt");
    CHECK(bf_mkdir_p(sub, err) == BF_OK);
    CHECK(bf_write_atomic(outside, "secret", 6, err) == BF_OK);
    char path[1024], target[1024];
    snprintf(path, sizeof path, "%s/sub/in.txt", root);
    CHECK(bf_write_atomic(path, "inside", 6, err) == BF_OK);
    char *data = NULL;
    size_t len = 0;
    CHECK(bf_read_file_beneath(root, path, 100, &data, &len, err) == BF_OK);
    CHECK(len == 6 && !strcmp(data, "inside"));
    free(data);

    snprintf(path, sizeof path, "%s/inner-link", root); /* relative, stays inside */
    CHECK(symlink("sub/in.txt", path) == 0);
    CHECK(bf_read_file_beneath(root, path, 100, &data, &len, err) == BF_OK);
    free(data);

    const char *bad[] = {"abs-link", "climb-link", "sub/../../outside.txt"};
    snprintf(path, sizeof path, "%s/abs-link", root);
    CHECK(symlink(outside, path) == 0);
    snprintf(path, sizeof path, "%s/climb-link", root);
    snprintf(target, sizeof target, "sub/../../outside.txt");
    CHECK(symlink(target, path) == 0);
    for (size_t i = 0; i < BF_ARRAY_LEN(bad); i++) {
        snprintf(path, sizeof path, "%s/%s", root, bad[i]);
        data = (char *)1;
        CHECKF(bf_read_file_beneath(root, path, 100, &data, &len, err) == BF_EPERM, "%s: %s",
               bad[i], err);
        CHECK(data == NULL && strstr(err, "leads out of") && !strstr(err, "secret"));
    }
    /* a path that is not under root at all */
    CHECK(bf_read_file_beneath(sub, outside, 100, &data, &len, err) == BF_EPERM);
    free(root);
    free(sub);
    free(outside);
}

static void test_safe_name(void)
{
    CHECK(bf_safe_name("munich"));
    CHECK(bf_safe_name("scene_0001"));
    CHECK(bf_safe_name("a b.c-d"));
    CHECK(bf_safe_name("..."));
    CHECK(bf_safe_name(".hidden"));
    CHECK(bf_safe_name("\xc3\xa9toile")); /* UTF-8 is fine */

    CHECK(!bf_safe_name(NULL));
    CHECK(!bf_safe_name(""));
    CHECK(!bf_safe_name("."));
    CHECK(!bf_safe_name(".."));
    CHECK(!bf_safe_name("../x"));
    CHECK(!bf_safe_name("../etc"));
    CHECK(!bf_safe_name("a/b"));
    CHECK(!bf_safe_name("/abs"));
    CHECK(!bf_safe_name("trailing/"));
    CHECK(!bf_safe_name("tab\there"));
    CHECK(!bf_safe_name("new\nline"));
    CHECK(!bf_safe_name("esc\x1b"));
    CHECK(!bf_safe_name("del\x7f"));

    char name[300];
    memset(name, 'n', sizeof name);
    name[255] = '\0';
    CHECK(bf_safe_name(name)); /* 255 bytes: the file-system limit */
    memset(name, 'n', sizeof name);
    name[256] = '\0';
    CHECK(!bf_safe_name(name)); /* 256 bytes */
    name[299] = '\0';
    CHECK(!bf_safe_name(name));
}

static void test_uuid(void)
{
    char a[33], b[33];
    memset(a, '?', sizeof a);
    bf_uuid(a);
    bf_uuid(b);
    CHECK(strlen(a) == 32 && a[32] == '\0');
    CHECK(strspn(a, "0123456789abcdef") == 32);
    CHECK(strspn(b, "0123456789abcdef") == 32);
    CHECK(strcmp(a, b) != 0);
    /* a batch: 130 (three draws of up to 64), every one well-formed and
       distinct, nothing written between the strides */
    enum { N = 130, STRIDE = 40 };
    static char many[N * STRIDE];
    memset(many, '#', sizeof many);
    bf_uuids(many, STRIDE, N);
    for (int i = 0; i < N; i++) {
        const char *u = many + i * STRIDE;
        CHECK(strlen(u) == 32 && strspn(u, "0123456789abcdef") == 32);
        CHECK(u[33] == '#' && u[STRIDE - 1] == '#');
        for (int k = 0; k < i; k++)
            CHECK(strcmp(u, many + k * STRIDE) != 0);
    }
}

static void test_strings_and_clocks(void)
{
    char small[4];
    CHECK(!strcmp(bf_strlcpy(small, "abcdef", sizeof small), "abc"));
    CHECK(!strcmp(bf_strlcpy(small, NULL, sizeof small), ""));
    CHECK(!strcmp(bf_strlcpy(small, "ab", sizeof small), "ab"));
    CHECK(bf_strdup(NULL) == NULL);
    char *s = bf_asprintf("%s-%03d", "scene", 7);
    CHECK(s && !strcmp(s, "scene-007"));
    free(s);
    CHECK(bf_hostname()[0] != '\0');

    char iso[32];
    bf_iso8601(0, iso);
    CHECK(!strcmp(iso, "1970-01-01T00:00:00.000Z"));
    bf_iso8601(1700000000123, iso);
    CHECK(!strcmp(iso, "2023-11-14T22:13:20.123Z"));
    char stamp[16];
    bf_timestamp(stamp);
    CHECK(strlen(stamp) == 15 && stamp[8] == '_');

    int64_t m0 = bf_mono_ms();
    double s0 = bf_mono_s();
    usleep(2000);
    CHECK(bf_mono_ms() >= m0 + 1);
    CHECK(bf_mono_s() > s0);
    CHECK(bf_wall_ms() > 1600000000000);
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char *child = bf_asprintf("%s/%s", path, e->d_name);
            remove_tree(child);
            free(child);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void test_grow(void)
{
    /* doubling from min_cap; need <= cap leaves it; overflow is refused */
    CHECK(bf_grow_cap(0, 1, 16) == 16 && bf_grow_cap(16, 17, 16) == 32);
    CHECK(bf_grow_cap(16, 100, 16) == 128 && bf_grow_cap(64, 10, 16) == 64);
    CHECK(bf_grow_cap(0, 3, 0) == 4);
    CHECK(bf_grow_cap(0, SIZE_MAX, 16) == 0);
    uint64_t *v = NULL;
    size_t n = 0, cap = 0;
    for (uint64_t i = 0; i < 1000; i++) {
        if (!bf_grow(&v, &cap, n + 1, sizeof *v, 8))
            break;
        v[n++] = i * i;
    }
    CHECK(n == 1000 && cap == 1024);
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i] == (uint64_t)i * i;
    CHECK(sum == 1000); /* every element survived the moves */
    /* an impossible size fails and leaves the array whole */
    uint64_t *before = v;
    size_t cap_before = cap;
    CHECK(!bf_grow(&v, &cap, SIZE_MAX / 4, sizeof *v, 8));
    CHECK(v == before && cap == cap_before && v[999] == 999u * 999u);
    CHECK(!bf_resize(&v, 0, sizeof *v) && v == before);
    free(v);
    /* bf_buf_t grows through it */
    bf_buf_t b = {0};
    for (int i = 0; i < 2000; i++)
        bf_buf_puts(&b, "abc");
    CHECK(!b.oom && b.len == 6000 && b.cap == 8192 && strlen(b.p) == 6000);
    free(b.p);
}

int main(void)
{
    bf_strlcpy(tmpdir, "/tmp/bf_test_XXXXXX", sizeof tmpdir);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_strerror();
    test_write_atomic();
    test_append_sync();
    test_mkdir_p();
    test_read_file();
    test_read_file_beneath();
    test_safe_name();
    test_uuid();
    test_strings_and_clocks();
    test_grow();
    remove_tree(tmpdir);
    if (failures) {
        fprintf(stderr, "bf_test: %d check(s) failed\n", failures);
        return 1;
    }
    printf("bf_test: ok\n");
    return 0;
}
