/* Sends a fixed stream through the gensim C client, for the byte-identity test with the Python
 * client (tests/gensim/transport/test_c_client.py): 3 steps of two fields of exactly
 * representable values, then END. Stream from GENSIM_ADDRESS, GENSIM_TOKEN, GENSIM_SIM_ID.
 * Compiled with clients/c/gensim_client.c and -DGENSIM_TEST_NONCE_SOURCE=fixed_nonce: the
 * nonces count 1, 2, 3, ... (12-byte little-endian), as the test's Python client's do; never
 * do this outside a test (a nonce must never repeat under a study's key). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "gensim_client.h"

int fixed_nonce(uint8_t nonce[12]) {
    static uint64_t count = 0;
    count++;
    memset(nonce, 0, 12);
    for (int i = 0; i < 8; i++) nonce[i] = (uint8_t)(count >> (8 * i));
    return 0;
}

int main(void) {
    gensim_field fields[] = {{"u", GENSIM_FLOAT32, 2, {3, 4}}, {"velocity", GENSIM_FLOAT64, 1, {5}}};
    gensim_client *c = gensim_open_env(2, fields);
    if (c == NULL) {
        fprintf(stderr, "%s\n", gensim_last_error());
        return 1;
    }
    for (unsigned step = 0; step < 3; step++) {
        float u[12];
        double v[5];
        for (int i = 0; i < 12; i++) u[i] = 0.25f * i + (float)step;
        for (int i = 0; i < 5; i++) v[i] = i / 8.0 - step;
        const void *data[] = {u, v};
        if (gensim_send(c, step, 0.5 * (step + 1), data) != 0) {
            fprintf(stderr, "%s\n", gensim_error(c));
            return 2;
        }
    }
    if (gensim_end(c) != 0) return 3;
    gensim_close(c);
    return 0;
}
