/*  common/bf_yaml.h - YAML documents as a small tree that remembers where
    every node came from, so that any bad value can be reported as
    file:line:column. Parsing is libyaml's (events API); this file only builds
    the tree and offers typed, checked accessors.

    Anchors, aliases, tags and multi-document streams are refused: our files
    (job, fleet, scene.yaml) do not need them and they make errors harder to
    place. */

#ifndef BF_YAML_H_INCLUDED
#define BF_YAML_H_INCLUDED

#include "bf.h"

typedef enum { BF_YAML_SCALAR, BF_YAML_SEQ, BF_YAML_MAP } bf_yaml_kind_t;

typedef struct bf_yaml_node bf_yaml_node_t;
struct bf_yaml_node {
    bf_yaml_kind_t kind;
    const char *file;             /* the document's name, for messages; owned by the root */
    int line, column;             /* 1-based position of the node's start */
    char *value;                  /* SCALAR: the text (never NULL) */
    bool quoted;                  /* SCALAR: written with quotes (so "true" is a string) */
    bool quiet;                   /* from bf_yaml_parse_quiet: messages do not quote its text */
    size_t count;                 /* SEQ, MAP: number of items */
    char **keys;                  /* MAP: keys[i] names items[i] */
    int *key_lines, *key_columns; /* MAP: where each key stands */
    bf_yaml_node_t **items;
};

/* Parses the file at path (at most 1 MiB). On error *root is NULL and err
   holds "path:line:column: what". An empty file gives an empty MAP. */
bf_err_t bf_yaml_load(const char *path, bf_yaml_node_t **root, char *err) BF_MUST_CHECK;
/* The same from memory; name is used in messages. */
bf_err_t bf_yaml_parse(const char *text, size_t len, const char *name, bf_yaml_node_t **root,
                       char *err) BF_MUST_CHECK;
/* The same for a document whose text must not reach a message (a scene file
   of a tenant, read by a worker that may run as another user): messages
   quote a value only when it is one short plain word, else "(not shown)". */
bf_err_t bf_yaml_parse_quiet(const char *text, size_t len, const char *name, bf_yaml_node_t **root,
                             char *err) BF_MUST_CHECK;
/* Frees a tree from bf_yaml_load/parse; NULL-safe; nulls *root. */
void bf_yaml_destroy(bf_yaml_node_t **root);

/* Value of key in a MAP, or NULL when absent (or node not a MAP). */
const bf_yaml_node_t *bf_yaml_get(const bf_yaml_node_t *map, const char *key);

/* Checks that node is a MAP whose keys are all in allowed (NULL-terminated)
   and not repeated: "file:line:col: unknown key 'x' in job (allowed: a, b)".
   what names the map in messages ("job", "solver", ...). */
bf_err_t bf_yaml_check_map(const bf_yaml_node_t *node, const char *what, const char *const *allowed,
                           char *err) BF_MUST_CHECK;

/* Typed reads. Each fails with "file:line:col: field 'what': expected ..., got
   'text'" (BF_EINVAL). Bounds are inclusive; pass -INFINITY/INFINITY or
   0/UINT64_MAX for none. */
bf_err_t bf_yaml_double(const bf_yaml_node_t *n, const char *what, double min, double max,
                        double *out, char *err) BF_MUST_CHECK;
bf_err_t bf_yaml_uint(const bf_yaml_node_t *n, const char *what, uint64_t min, uint64_t max,
                      uint64_t *out, char *err) BF_MUST_CHECK;
bf_err_t bf_yaml_bool(const bf_yaml_node_t *n, const char *what, bool *out,
                      char *err) BF_MUST_CHECK;
/* *out is a fresh copy (free it); non-empty required. */
bf_err_t bf_yaml_str(const bf_yaml_node_t *n, const char *what, char **out,
                     char *err) BF_MUST_CHECK;
/* A SEQ of exactly count numbers into out[0..count). */
bf_err_t bf_yaml_doubles(const bf_yaml_node_t *n, const char *what, size_t count, double *out,
                         char *err) BF_MUST_CHECK;
/* A scalar's text as a message may quote it (see bf_yaml_parse_quiet); "?"
   for a node that is not a scalar. */
const char *bf_yaml_quote(const bf_yaml_node_t *n);
/* Formats "file:line:col: " + fmt for node into err and returns BF_EINVAL. */
bf_err_t bf_yaml_fail(const bf_yaml_node_t *n, char *err, const char *fmt, ...) BF_PRINTF(3, 4);

#endif
