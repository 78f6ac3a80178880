/*  cli/cli.h - the `beamfleet` command line (DESIGN section 2): one table of
    subcommands, each a function taking its own argc/argv, and the client side
    of the protocol (submit, status, cancel, follow) shared by `run` and
    `submit --wait`.

    Exit codes: 0 success, 1 a failure at run time (the fleet did not answer,
    a task job ended with errors is still 0), 2 a usage or input error with a
    one-line message naming the flag, or the file, line and column. */

#ifndef CLI_H_INCLUDED
#define CLI_H_INCLUDED

#include "../common/bf.h"
#include "../common/bf_config.h"
#include "../common/bf_security.h"
#include "../proto/proto.h"
#include <jansson.h>

#define CLI_EXIT_OK      0
#define CLI_EXIT_FAILURE 1
#define CLI_EXIT_USAGE   2

#include <signal.h>

/* Set by `run` on SIGINT/SIGTERM; the follower stops when it is set. */
extern volatile sig_atomic_t cli_interrupted;

/* Entry point: dispatches argv[1] to its subcommand. */
int cli_main(int argc, char **argv);

/* Subcommands (argv[0] is the subcommand's name). */
int cli_run(int argc, char **argv);
int cli_broker(int argc, char **argv);
int cli_worker(int argc, char **argv);
int cli_collector(int argc, char **argv);
int cli_submit(int argc, char **argv);
int cli_status(int argc, char **argv);
int cli_cancel(int argc, char **argv);
int cli_watch(int argc, char **argv);
int cli_keygen(int argc, char **argv);
int cli_solve(int argc, char **argv);
int cli_scenegen(int argc, char **argv);
int cli_version(int argc, char **argv);

/* The getopt_long cases every subcommand shares, for its `default:` arm:
   'h' prints help and returns CLI_EXIT_OK; ':' (a missing value) and an
   unknown option print one line naming the flag and return CLI_EXIT_USAGE.
   The option string must start with ':' and map --help to 'h'. */
int cli_option_other(const char *cmd, int c, const char *help, char *const argv[]);
/* --sched VALUE of cmd: *inherit set for "inherit", cleared for "batch";
   anything else is a one-line error and CLI_EXIT_USAGE (else -1). */
int cli_option_sched(const char *cmd, const char *value, bool *inherit);

/* Loads the fleet file named by -c (path may be NULL for defaults) and applies
   the documented precedence for the broker endpoint. Prints the error and
   returns CLI_EXIT_USAGE on failure, 0 on success. */
int cli_load_fleet(const char *path, bf_fleet_t *fleet);

/* The CURVE identity of the fleet file's `security:` section, loaded by
   cli_load_fleet (once per process), or NULL: every socket this process
   opens to the broker (or to the collector's stream) uses it. */
const bf_security_t *cli_security(void);
/* Forgets that identity: this process's sockets are plaintext from now on. */
void cli_security_drop(void);

/* A client's line to the broker: one ZeroMQ context and one DEALER, kept
   for every request of a command (a follower asks for status hundreds of
   times a job: a fresh context, I/O thread and handshake for each cost
   more than the answer). After a failed request the DEALER is closed and
   the next request opens a fresh one, so a late reply to a request given
   up on is never taken for the answer to the next. */
typedef struct cli_session cli_session_t;

cli_session_t *cli_session_new(const char *endpoint);
void cli_session_destroy(cli_session_t **self_p);

/* One request, one reply (Lazy Pirate without resend: a request is sent
   once, so SUBMIT never creates a job twice). Waits at most timeout_ms.
   BF_ETIMEDOUT when the broker does not answer; an ERROR reply is returned
   as its code (BF_EPROTO if none) with its reason in err. */
bf_err_t cli_session_request(cli_session_t *self, const proto_msg_t *request, proto_msg_t *reply,
                             int timeout_ms, char *err) BF_MUST_CHECK;

/* The same over a session of its own, for a command's one request. */
bf_err_t cli_request(const char *endpoint, const proto_msg_t *request, proto_msg_t *reply,
                     int timeout_ms, char *err) BF_MUST_CHECK;

/* Replaces why with what the endpoint really is (nothing listening, not a
   ZeroMQ peer, CURVE on one side only) when a look at its greeting tells
   more; leaves it as it is otherwise. */
void cli_explain_endpoint(const char *endpoint, char *why, size_t why_len);

/* Follows job_id until every task is final and the collector has taken every
   result, printing one line per result and the progress line of the notebook
   it replaces, then the summary. Returns CLI_EXIT_OK, or CLI_EXIT_FAILURE if
   the broker went away for longer than give_up_ms. wake (lent, may be
   NULL) is a SUB socket on the collector's stream: whatever arrives on it
   (a result or a job written) makes the follower ask the broker at once
   instead of at its next 250 ms tick. job_over (may be NULL) is called
   once, with ud, as soon as every task is final, while the collector may
   still be writing the last results and the job's final reports: `run`
   stops its workers then, not after the reports. */
int cli_follow(const char *endpoint, void *wake, const char *job_id, unsigned total,
               const char *output, int give_up_ms, void (*job_over)(void *ud), void *ud);

/* Submits job and returns its id in job_id (13 bytes). Every task goes
   with its content key; unless recompute, the tasks whose key matches a
   finished result in the job's output directory take that result instead
   of running (cli_reuse_plan), and a line on stderr says how many. */
bf_err_t cli_submit_job(const char *endpoint, const bf_job_t *job, bool recompute, char job_id[64],
                        unsigned *total, char *err) BF_MUST_CHECK;

/* cli_submit_job in two steps, so that `run` hashes the scenes while its
   broker starts: the SUBMIT for job (req, to clear with proto_msg_clear),
   with its keys and reuse plan, checked to fit in one message; then its
   sending. */
bf_err_t cli_submit_prepare(const bf_job_t *job, bool recompute, proto_msg_t *req,
                            char *err) BF_MUST_CHECK;
bf_err_t cli_submit_send(const char *endpoint, proto_msg_t *req, char job_id[64], unsigned *total,
                         char *err) BF_MUST_CHECK;

/* The content keys of job's tasks (an array, one per scene) and, unless
   recompute, the earlier results that stand for some of them (an array of
   {index, result}) found in the job's output directory (cli_reuse.c). */
bf_err_t cli_reuse_plan(const bf_job_t *job, bool recompute, json_t **keys, json_t **reuse,
                        char *err) BF_MUST_CHECK;

#endif
