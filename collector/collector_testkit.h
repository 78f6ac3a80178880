/*  collector/collector_testkit.h - what the collector tests read back from a
    report directory: a whole file, the number of well-formed lines of
    results.jsonl, and the number of files with a prefix; and a watchdog
    that runs a step in a child process, so that a writer that spins on
    hostile input fails the test instead of hanging it. Test code only
    (file-local functions; a test need not use them all). */

#ifndef COLLECTOR_TESTKIT_H_INCLUDED
#define COLLECTOR_TESTKIT_H_INCLUDED

#include "../common/bf.h"

#include <dirent.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* Runs fn(arg) in a child process that must exit 0 within seconds; true
   when it did. fn returns the child's exit status. The child is killed
   (SIGKILL) at the deadline: a loop that never ends is a failure, not a
   hang of the test. */
BF_TESTKIT static bool finishes_within(unsigned seconds, int (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        alarm(seconds); /* SIGALRM's default action ends the child */
        _exit(fn(arg));
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid)
        return false;
    if (WIFSIGNALED(st))
        fprintf(stderr, "  child killed by signal %d (%s)\n", WTERMSIG(st),
                WTERMSIG(st) == SIGALRM ? "did not finish in time" : "crash");
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

#endif
