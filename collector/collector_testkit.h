/*  collector/collector_testkit.h - what the collector tests read back from a
    report directory: a whole file, the number of well-formed lines of
    results.jsonl, and the number of files with a prefix. Test code only
    (file-local functions; a test need not use them all). */

#ifndef COLLECTOR_TESTKIT_H_INCLUDED
#define COLLECTOR_TESTKIT_H_INCLUDED

#include "../common/bf.h"

#include <dirent.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define BF_TESTKIT __attribute__((unused))

/* dir/name as a NUL-terminated string (free it), or NULL. */
BF_TESTKIT static char *slurp(const char *dir, const char *name)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = NULL;
    size_t len;
    return bf_read_file(path, 1 << 26, &text, &len, NULL) == BF_OK ? text : NULL;
}

/* Every line of results.jsonl is a JSON object ending in '\n'; returns the
   number of lines, -1 when one is not. */
BF_TESTKIT static int jsonl_lines(const char *dir)
{
    char *text = slurp(dir, "results.jsonl");
    if (!text)
        return -1;
    int n = 0;
    size_t len = strlen(text);
    if (len && text[len - 1] != '\n')
        n = -1;
    for (char *line = text; n >= 0 && *line;) {
        char *nl = strchr(line, '\n');
        json_t *o = json_loadb(line, (size_t)(nl - line), 0, NULL);
        n = json_is_object(o) ? n + 1 : -1;
        json_decref(o);
        line = nl + 1;
    }
    free(text);
    return n;
}

/* Files in dir whose name starts with prefix, or -1. */
BF_TESTKIT static int count_files(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += !strncmp(e->d_name, prefix, strlen(prefix));
    closedir(d);
    return n;
}

#endif
