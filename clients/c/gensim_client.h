/* gensim C client: stream the time steps of one simulation to a gensim study.
 *
 * Follows docs/wire-format.md (version 3): one ZeroMQ PUSH socket with PLAIN credentials
 * derived from the study key, one multipart message per time step (header, one frame per
 * field, tag: a random nonce and the GMAC of the message), an END message when the simulation
 * finished normally.
 * Needs libzmq and OpenSSL 3 (libcrypto); build with clients/c/build.sh.
 *
 *     gensim_field fields[] = {{"u", GENSIM_FLOAT32, 2, {64, 64}}};
 *     gensim_client *c = gensim_open_env(1, fields);   // GENSIM_ADDRESS, _TOKEN, _SIM_ID
 *     if (!c) { fprintf(stderr, "%s\n", gensim_last_error()); return 1; }
 *     for (step = 0; step < n; step++) {
 *         const void *data[] = {u};                     // one pointer per field, C order
 *         if (gensim_send(c, step, t, data) != 0) ...   // gensim_error(c) says why
 *     }
 *     gensim_end(c);
 *     gensim_close(c);                                  // waits up to 5 s for delivery
 *
 * zmq_send copies each frame, so the caller may reuse its arrays right after gensim_send.
 * The key is used to derive the password, the study id and the key of the tags, and is never sent.
 * This client assumes a little-endian host (x86-64, aarch64), like the wire format.
 */
#ifndef GENSIM_CLIENT_H
#define GENSIM_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dtype codes of the wire format */
enum { GENSIM_FLOAT32 = 1, GENSIM_FLOAT64 = 2 };
/* most dimensions of a field, and longest field name in bytes */
enum { GENSIM_MAX_NDIM = 4, GENSIM_MAX_NAME = 31 };

/* One field sent at every step: its name, dtype code, number of dimensions and shape
 * (C order: the last dimension varies fastest). */
typedef struct {
    const char *name;
    int dtype;
    int ndim;
    uint32_t shape[GENSIM_MAX_NDIM];
} gensim_field;

typedef struct gensim_client gensim_client;

/* Connect to the trainer at `address` with the study key `key_hex` (64 hex characters) as
 * simulation `sim_id`, declaring `n_fields` fields. NULL on error: gensim_last_error(). */
gensim_client *gensim_open(const char *address, const char *key_hex, int64_t sim_id, int n_fields,
                           const gensim_field *fields);

/* gensim_open with GENSIM_ADDRESS, GENSIM_TOKEN and GENSIM_SIM_ID from the environment (the
 * gensim launcher sets them for every simulation process). */
gensim_client *gensim_open_env(int n_fields, const gensim_field *fields);

/* Send time step `step` at physical time `t`; data[i] points to field i's values, in C order,
 * of its declared dtype and shape. Blocks while the trainer is busy (back-pressure), at most
 * 120 s. 0 on success, -1 on error (gensim_error). */
int gensim_send(gensim_client *c, uint32_t step, double t, const void *const data[]);

/* Tell the trainer the simulation finished normally; nothing may be sent after. 0 or -1. */
int gensim_end(gensim_client *c);

/* Close the connection (waiting up to 5 s for queued messages) and free the client. */
void gensim_close(gensim_client *c);

/* The last error of `c`, or "" */
const char *gensim_error(const gensim_client *c);

/* The error of the last gensim_open or gensim_open_env that returned NULL. */
const char *gensim_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
