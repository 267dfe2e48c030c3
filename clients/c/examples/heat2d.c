/* heat2d: the heat equation on the unit square, an explicit solver streaming to a gensim study.
 *
 *     du/dt = D (d2u/dx2 + d2u/dy2) on (0, 1)^2,   u = wall on the boundary,
 *     u(x, y, 0) = wall + amplitude sin(pi x) sin(pi y),
 *
 * on n x n interior nodes (h = 1 / (n + 1)), forward Euler in time with the 5-point Laplacian,
 * m sub-steps per output step so that r = D dt / h^2 <= 0.2 (stable). The discrete solution is
 * exact: u = wall + amplitude * lambda^s * sin(pi x) sin(pi y) after s sub-steps, with
 * lambda = 1 - 8 r sin^2(pi h / 2) (tests/gensim/transport/test_c_client.py checks it).
 *
 * Parameters come from the environment the gensim launcher sets (simulation=external):
 * GENSIM_PARAM_wall, GENSIM_PARAM_amplitude, GENSIM_PARAM_log10_diffusivity; the stream
 * from GENSIM_ADDRESS, GENSIM_TOKEN and GENSIM_SIM_ID. Options: heat2d [grid n_steps t_final].
 * Sends one float32 field "u" of shape (n, n) per output step, u[i][j] at x = (j + 1) h,
 * y = (i + 1) h, at t = (k + 1) t_final / n_steps.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gensim_client.h"

static double param(const char *name) {
    const char *value = getenv(name);
    if (value == NULL) {
        fprintf(stderr, "heat2d: %s is not set (run it with gensim-train simulation=external)\n", name);
        exit(2);
    }
    return strtod(value, NULL);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 16, n_steps = argc > 2 ? atoi(argv[2]) : 10;
    double t_final = argc > 3 ? strtod(argv[3], NULL) : 0.1;
    if (n < 1 || n_steps < 1 || !(t_final > 0)) {
        fprintf(stderr, "usage: heat2d [grid >= 1] [n_steps >= 1] [t_final > 0]\n");
        return 2;
    }
    double wall = param("GENSIM_PARAM_wall"), amplitude = param("GENSIM_PARAM_amplitude");
    double diffusivity = pow(10.0, param("GENSIM_PARAM_log10_diffusivity"));
    double h = 1.0 / (n + 1), dt_out = t_final / n_steps;
    int m = (int)ceil(diffusivity * dt_out / (0.2 * h * h)); /* sub-steps per output step */
    double r = diffusivity * (dt_out / m) / (h * h);

    double *u = malloc(sizeof(double) * n * n), *next = malloc(sizeof(double) * n * n);
    float *out = malloc(sizeof(float) * n * n);
    if (!u || !next || !out) return 3;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            u[i * n + j] = wall + amplitude * sin(M_PI * (j + 1) * h) * sin(M_PI * (i + 1) * h);

    gensim_field fields[] = {{"u", GENSIM_FLOAT32, 2, {(uint32_t)n, (uint32_t)n}}};
    gensim_client *client = gensim_open_env(1, fields);
    if (client == NULL) {
        fprintf(stderr, "heat2d: %s\n", gensim_last_error());
        return 4;
    }
    for (int k = 0; k < n_steps; k++) {
        for (int s = 0; s < m; s++) {
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) {
                    double c = u[i * n + j];
                    double west = j > 0 ? u[i * n + j - 1] : wall, east = j < n - 1 ? u[i * n + j + 1] : wall;
                    double south = i > 0 ? u[(i - 1) * n + j] : wall, north = i < n - 1 ? u[(i + 1) * n + j] : wall;
                    next[i * n + j] = c + r * (west + east + south + north - 4 * c);
                }
            double *swap = u;
            u = next;
            next = swap;
        }
        for (int i = 0; i < n * n; i++) out[i] = (float)u[i];
        const void *data[] = {out};
        if (gensim_send(client, (uint32_t)k, (k + 1) * dt_out, data) != 0) {
            fprintf(stderr, "heat2d: %s\n", gensim_error(client));
            gensim_close(client);
            return 5;
        }
    }
    int status = gensim_end(client) == 0 ? 0 : 5;
    if (status) fprintf(stderr, "heat2d: %s\n", gensim_error(client));
    gensim_close(client);
    free(u);
    free(next);
    free(out);
    return status;
}
