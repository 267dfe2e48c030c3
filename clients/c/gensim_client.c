/* gensim C client: see gensim_client.h and docs/wire-format.md. */
#include "gensim_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <zmq.h>

/* TAG: the last frame of a message, NONCE random bytes then the GMAC (16 bytes) */
enum { PREAMBLE = 48, DESCRIPTOR = 64, NONCE = 12, GMAC = 16, TAG = NONCE + GMAC, KEY = 32, MAX_FIELDS = 1024 };

/* Where the nonce of each message comes from: OpenSSL's CSPRNG. The byte-identity test with
 * the Python client (tests/gensim/transport/c_fixed_stream.c) compiles this file with
 * -DGENSIM_TEST_NONCE_SOURCE=its_function to fix the nonces; build.sh never does. */
#ifdef GENSIM_TEST_NONCE_SOURCE
int GENSIM_TEST_NONCE_SOURCE(uint8_t nonce[NONCE]);
#define new_nonce GENSIM_TEST_NONCE_SOURCE
#else
static int new_nonce(uint8_t nonce[NONCE]) { return RAND_bytes(nonce, NONCE) == 1 ? 0 : -1; }
#endif

typedef struct {            /* 48 bytes, no padding (docs/wire-format.md, "Header layout") */
    char     magic[4];      /* "GSIM" */
    uint16_t version;       /* 3 */
    uint16_t n_fields;
    uint8_t  study[16];     /* HMAC-SHA256(key, "gensim study id")[:16] */
    int64_t  sim_id;
    uint32_t step;
    uint32_t kind;          /* 0 = DATA, 1 = END */
    double   time;
} preamble_t;

typedef struct {            /* 64 bytes, no padding */
    char     name[32];      /* NUL-padded */
    uint8_t  dtype;         /* 1 = float32, 2 = float64 */
    uint8_t  ndim;
    uint8_t  reserved0[2];
    uint32_t shape[4];
    uint8_t  reserved1[12];
} descriptor_t;

_Static_assert(sizeof(preamble_t) == PREAMBLE, "preamble layout");
_Static_assert(sizeof(descriptor_t) == DESCRIPTOR, "descriptor layout");

struct gensim_client {
    void *context, *socket;
    EVP_CIPHER_CTX *gcm;     /* AES-256-GCM keyed with the message key; a new nonce per message */
    uint8_t study[16];
    int64_t sim_id;
    int n_fields;
    size_t *sizes;           /* bytes of each field's frame */
    unsigned char *header;   /* preamble + descriptors, rewritten per step */
    size_t header_size;
    uint32_t n_sent;
    double last_t;
    int ended;
    char error[256];
};

static char last_error[256];

static void fail(char *where, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(where, 256, fmt, args);
    va_end(args);
}

static int parse_key(const char *hex, uint8_t key[KEY]) {
    if (hex == NULL || strlen(hex) != 2 * KEY) return -1;
    for (int i = 0; i < KEY; i++) {
        unsigned int byte;
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1) return -1;
        key[i] = (uint8_t)byte;
    }
    return 0;
}

static void derive(const uint8_t key[KEY], const char *label, uint8_t out[32]) {
    unsigned int len = 0;
    HMAC(EVP_sha256(), key, KEY, (const unsigned char *)label, strlen(label), out, &len);
}

/* AES-256-GCM keyed with the message key HMAC-SHA256(key, "gensim message key"). */
static EVP_CIPHER_CTX *new_gcm(const uint8_t key[KEY]) {
    uint8_t message_key[32];
    derive(key, "gensim message key", message_key);
    EVP_CIPHER_CTX *gcm = EVP_CIPHER_CTX_new();
    /* the default IV length of GCM is 12 bytes (NONCE) */
    if (gcm && EVP_EncryptInit_ex(gcm, EVP_aes_256_gcm(), NULL, message_key, NULL) != 1) {
        EVP_CIPHER_CTX_free(gcm);
        gcm = NULL;
    }
    memset(message_key, 0, sizeof message_key);
    return gcm;
}

/* GCM additional data; EVP_EncryptUpdate takes an int length, so large frames go in pieces. */
static int gcm_aad(EVP_CIPHER_CTX *gcm, const unsigned char *data, size_t size) {
    int len = 0;
    for (size_t done = 0, piece; done < size; done += piece) {
        piece = size - done < ((size_t)1 << 30) ? size - done : (size_t)1 << 30;
        if (EVP_EncryptUpdate(gcm, NULL, &len, data + done, (int)piece) != 1) return -1;
    }
    return 0;
}

/* The tag: a fresh nonce, then the GMAC (AES-256-GCM, no plaintext) of (le64 length, bytes) of
 * each frame under that nonce. */
static int tag_of(EVP_CIPHER_CTX *gcm, int n, const void *const frames[], const size_t sizes[], uint8_t tag[TAG]) {
    int len = 0;
    if (new_nonce(tag) != 0 || EVP_EncryptInit_ex(gcm, NULL, NULL, NULL, tag) != 1) return -1;
    for (int i = 0; i < n; i++) {
        uint64_t size = sizes[i]; /* little-endian host */
        if (gcm_aad(gcm, (const unsigned char *)&size, 8) != 0 || gcm_aad(gcm, frames[i], sizes[i]) != 0) return -1;
    }
    if (EVP_EncryptFinal_ex(gcm, tag + NONCE, &len) != 1) return -1; /* no plaintext: writes nothing */
    return EVP_CIPHER_CTX_ctrl(gcm, EVP_CTRL_GCM_GET_TAG, GMAC, tag + NONCE) == 1 ? 0 : -1;
}

static int send_signed(gensim_client *c, int n, const void *const frames[], const size_t sizes[], const char *what) {
    uint8_t tag[TAG];
    if (tag_of(c->gcm, n, frames, sizes, tag) != 0) {
        fail(c->error, "simulation %lld: cannot compute the tag of %s (OpenSSL)", (long long)c->sim_id, what);
        return -1;
    }
    for (int i = 0; i <= n; i++) {
        int last = i == n;
        if (zmq_send(c->socket, last ? tag : frames[i], last ? TAG : sizes[i], last ? 0 : ZMQ_SNDMORE) < 0) {
            if (errno == EAGAIN)
                fail(c->error, "simulation %lld: the trainer accepted nothing for 120 s while sending %s; is it "
                     "running and reachable, and is GENSIM_ADDRESS right?", (long long)c->sim_id, what);
            else
                fail(c->error, "simulation %lld: zmq_send failed for %s: %s", (long long)c->sim_id, what,
                     zmq_strerror(errno));
            return -1;
        }
    }
    return 0;
}

static void write_preamble(gensim_client *c, unsigned char *out, uint16_t n_fields, uint32_t step, uint32_t kind,
                           double t) {
    preamble_t p;
    memset(&p, 0, sizeof p);
    memcpy(p.magic, "GSIM", 4);
    p.version = 3;
    p.n_fields = n_fields;
    memcpy(p.study, c->study, 16);
    p.sim_id = c->sim_id;
    p.step = step;
    p.kind = kind;
    p.time = t;
    memcpy(out, &p, PREAMBLE);
}

static int check_fields(int n_fields, const gensim_field *fields, char *error) {
    if (n_fields < 1 || n_fields > MAX_FIELDS || fields == NULL) {
        fail(error, "expected 1 to %d fields, got %d", MAX_FIELDS, n_fields);
        return -1;
    }
    for (int i = 0; i < n_fields; i++) {
        const gensim_field *f = &fields[i];
        size_t len = f->name ? strlen(f->name) : 0;
        if (len < 1 || len > GENSIM_MAX_NAME) {
            fail(error, "field %d: the name must be 1 to %d bytes", i, GENSIM_MAX_NAME);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(fields[j].name, f->name) == 0) {
                fail(error, "field names must be unique: %s appears twice", f->name);
                return -1;
            }
        if (f->dtype != GENSIM_FLOAT32 && f->dtype != GENSIM_FLOAT64) {
            fail(error, "field %s: dtype must be GENSIM_FLOAT32 or GENSIM_FLOAT64, got %d", f->name, f->dtype);
            return -1;
        }
        if (f->ndim < 1 || f->ndim > GENSIM_MAX_NDIM) {
            fail(error, "field %s: expected 1 to %d dimensions, got %d", f->name, GENSIM_MAX_NDIM, f->ndim);
            return -1;
        }
        for (int d = 0; d < f->ndim; d++)
            if (f->shape[d] == 0) {
                fail(error, "field %s: dimension %d is 0; every dimension must be positive", f->name, d);
                return -1;
            }
    }
    return 0;
}

gensim_client *gensim_open(const char *address, const char *key_hex, int64_t sim_id, int n_fields,
                           const gensim_field *fields) {
    uint8_t key[KEY], digest[32];
    char password[65];
    if (parse_key(key_hex, key) != 0) {
        fail(last_error, "the study key must be 64 hexadecimal characters (GENSIM_TOKEN)");
        return NULL;
    }
    if (check_fields(n_fields, fields, last_error) != 0) return NULL;
    gensim_client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        fail(last_error, "out of memory");
        return NULL;
    }
    c->sim_id = sim_id;
    c->n_fields = n_fields;
    derive(key, "gensim study id", digest);
    memcpy(c->study, digest, 16);
    derive(key, "gensim zap password", digest);
    for (int i = 0; i < 32; i++) sprintf(password + 2 * i, "%02x", digest[i]);
    c->gcm = new_gcm(key);
    memset(key, 0, sizeof key); /* only what derives from it is kept */
    c->header_size = PREAMBLE + (size_t)DESCRIPTOR * n_fields;
    c->header = calloc(1, c->header_size);
    c->sizes = calloc((size_t)n_fields, sizeof *c->sizes);
    if (c->gcm == NULL || c->header == NULL || c->sizes == NULL) {
        fail(last_error, "cannot set up AES-256-GCM (OpenSSL) or out of memory");
        gensim_close(c);
        return NULL;
    }
    for (int i = 0; i < n_fields; i++) {
        descriptor_t d;
        memset(&d, 0, sizeof d); /* zero name padding and reserved bytes */
        memcpy(d.name, fields[i].name, strlen(fields[i].name));
        d.dtype = (uint8_t)fields[i].dtype;
        d.ndim = (uint8_t)fields[i].ndim;
        size_t size = fields[i].dtype == GENSIM_FLOAT32 ? 4 : 8;
        for (int k = 0; k < fields[i].ndim; k++) {
            d.shape[k] = fields[i].shape[k];
            size *= fields[i].shape[k];
        }
        c->sizes[i] = size;
        memcpy(c->header + PREAMBLE + (size_t)DESCRIPTOR * i, &d, DESCRIPTOR);
    }
    c->context = zmq_ctx_new();
    c->socket = c->context ? zmq_socket(c->context, ZMQ_PUSH) : NULL;
    int hwm = 32, timeout_ms = 120000, linger_ms = 5000;
    if (c->socket == NULL || zmq_setsockopt(c->socket, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0
        || zmq_setsockopt(c->socket, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms) != 0
        || zmq_setsockopt(c->socket, ZMQ_LINGER, &linger_ms, sizeof linger_ms) != 0
        || zmq_setsockopt(c->socket, ZMQ_PLAIN_USERNAME, "gensim", 6) != 0
        || zmq_setsockopt(c->socket, ZMQ_PLAIN_PASSWORD, password, 64) != 0
        || zmq_connect(c->socket, address) != 0) {
        fail(last_error, "cannot connect to the trainer at '%s': %s; expected an endpoint such as "
             "'tcp://127.0.0.1:5555' (GENSIM_ADDRESS)", address ? address : "(null)", zmq_strerror(errno));
        gensim_close(c);
        return NULL;
    }
    return c;
}

gensim_client *gensim_open_env(int n_fields, const gensim_field *fields) {
    const char *address = getenv("GENSIM_ADDRESS"), *key = getenv("GENSIM_TOKEN"), *id = getenv("GENSIM_SIM_ID");
    if (!address || !*address || !key || !*key || !id || !*id) {
        fail(last_error, "GENSIM_ADDRESS, GENSIM_TOKEN and GENSIM_SIM_ID must be set; the gensim launcher sets "
             "them for each simulation it starts");
        return NULL;
    }
    char *end = NULL;
    errno = 0;
    long long sim_id = strtoll(id, &end, 10);
    if (errno != 0 || end == id || *end != '\0') {
        fail(last_error, "GENSIM_SIM_ID must be an integer, got '%s'", id);
        return NULL;
    }
    return gensim_open(address, key, (int64_t)sim_id, n_fields, fields);
}

int gensim_send(gensim_client *c, uint32_t step, double t, const void *const data[]) {
    if (c->ended) {
        fail(c->error, "simulation %lld: END was already sent; nothing may follow", (long long)c->sim_id);
        return -1;
    }
    /* the receiver rejects a non-finite time: say so here, where the cause is */
    if (!(t - t == 0.0)) {
        fail(c->error, "simulation %lld: time must be finite, got %g at step %u", (long long)c->sim_id, t, step);
        return -1;
    }
    write_preamble(c, c->header, (uint16_t)c->n_fields, step, 0, t);
    const void *frames[1 + MAX_FIELDS];
    size_t sizes[1 + MAX_FIELDS];
    frames[0] = c->header;
    sizes[0] = c->header_size;
    for (int i = 0; i < c->n_fields; i++) {
        frames[1 + i] = data[i];
        sizes[1 + i] = c->sizes[i];
    }
    char what[32];
    snprintf(what, sizeof what, "step %u", step);
    if (send_signed(c, 1 + c->n_fields, frames, sizes, what) != 0) return -1;
    c->n_sent++;
    c->last_t = t;
    return 0;
}

int gensim_end(gensim_client *c) {
    if (c->ended) {
        fail(c->error, "simulation %lld: END was already sent", (long long)c->sim_id);
        return -1;
    }
    unsigned char header[PREAMBLE];
    write_preamble(c, header, 0, c->n_sent, 1, c->last_t);
    const void *frames[] = {header};
    size_t sizes[] = {PREAMBLE};
    if (send_signed(c, 1, frames, sizes, "END") != 0) return -1;
    c->ended = 1;
    return 0;
}

void gensim_close(gensim_client *c) {
    if (c == NULL) return;
    if (c->socket) zmq_close(c->socket); /* waits up to the linger time for queued messages */
    if (c->context) zmq_ctx_term(c->context);
    EVP_CIPHER_CTX_free(c->gcm);
    free(c->header);
    free(c->sizes);
    free(c);
}

const char *gensim_error(const gensim_client *c) { return c ? c->error : last_error; }

const char *gensim_last_error(void) { return last_error; }
