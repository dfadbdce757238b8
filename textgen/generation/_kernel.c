/* textgen's compiled LSTM step: one character for n streams in one call.
 *
 * Plain C with no Python API; textgen/generation/kernel.py loads it with ctypes (which releases the
 * GIL for the call) and textgen falls back to its numpy step when it was not built. Why it
 * exists: the numpy step is ~30 calls of 2-3 us each around three matrix products, which for
 * one stream cost more than the products themselves (benchmarks/README_sampling.md).
 *
 * Build (setup.py): one plain shared library per variant, `_kernel.<variant>.so`, each this
 * whole file compiled for one x86-64 level (-march=x86-64, x86-64-v3: AVX2 + FMA, x86-64-v4:
 * AVX-512), or one "generic" build elsewhere. kernel.py asks the baseline build which level the
 * CPU runs (tg_cpu_level) and loads the best variant it may; it refuses a library whose
 * TG_SOURCE_HASH (setup.py: a hash of this file) is not the hash of the _kernel.c beside it.
 * Only the tg_ functions are exported (-fvisibility=hidden).
 *
 * Layout (prepared by engine.py): units are padded to a multiple of 8 (padded weights are
 * zero, so padded h and c stay exactly 0). A *block* is 8 units; its 32 gate columns
 * (input, forget, output, candidate: 8 each) are packed as a (K, 32) panel, so the product
 * of a block reads one contiguous stream of weights, and the cell runs on the block's gates
 * while they are still in registers/L1. The output layer is packed as (K, 32) panels of
 * vocabulary columns, the last one padded with zeros.
 *
 * Determinism: every output element is one chain of multiply-adds over k in order, whatever
 * the number of rows, the tile a row falls in, or the thread that computes it, so a stream's
 * numbers do not depend on which other streams share the batch. With FMA (x86-64-v3 and -v4,
 * -ffp-contract=fast) each multiply-add is one fused, correctly rounded operation, so those two
 * variants compute the same bits; the baseline rounds the product and the sum separately.
 *
 * Threads: with a worker, both threads claim blocks from an atomic counter per phase (layer
 * 0, layer 1, ..., output) and wait for the phase's blocks to be done before the next phase.
 * The caller's thread never waits for the worker to start: a worker that is late (its core is
 * busy with another process) takes fewer blocks or none. Between steps the worker spins
 * briefly, then yields, then sleeps on a condition variable.
 */
#include <math.h>  /* exp, INFINITY */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef TG_SOURCE_HASH
#define TG_SOURCE_HASH "unstamped" /* setup.py passes a hash of this file; kernel.py refuses any other */
#endif
#ifndef TG_VARIANT
#define TG_VARIANT "generic"
#endif
#define TG_API __attribute__((visibility("default")))

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias)); /* for unaligned loads/stores */
#define BLOCK 8
#define PANEL 32
#define MAX_LAYERS 16
#define OUT_ROWS 16 /* rows per output-layer job */

static inline v8 load8(const float *p) { return *(const v8u *)p; }
static inline void store8(float *p, v8 v) { *(v8u *)p = v; }
static inline v8 splat(float x) { return (v8){x, x, x, x, x, x, x, x}; }

/* exp(x) for float32, Cephes' polynomial: about 1 ulp on [-87, 88]; inputs are clamped there
 * (so exp(-x) never overflows to inf: 1 / (1 + exp(88)) is 6e-39, as good as 0). */
typedef int32_t i8 __attribute__((vector_size(32)));
static inline v8 pick(i8 mask, v8 a, v8 b) { /* mask ? a : b, per lane (casts keep the bits) */
    return (v8)((mask & (i8)a) | (~mask & (i8)b));
}
static inline v8 exp8(v8 x) {
    const v8 hi = splat(88.0f), lo = splat(-87.0f);
    x = pick(x > hi, hi, x);
    x = pick(x < lo, lo, x);
    const v8 magic = splat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    v8 t = x * splat(1.44269504088896341f) + magic;
    v8 n = t - magic;
    v8 r = x - n * splat(0.693359375f);
    r = r - n * splat(-2.12194440e-4f);
    v8 p = splat(1.9875691500e-4f);
    p = p * r + splat(1.3981999507e-3f);
    p = p * r + splat(8.3334519073e-3f);
    p = p * r + splat(4.1665795894e-2f);
    p = p * r + splat(1.6666665459e-1f);
    p = p * r + splat(5.0000001201e-1f);
    v8 y = p * (r * r) + r + splat(1.0f);
    v8 scale = (v8)((((i8)t - (i8)magic) + 127) << 23); /* 2^n from n's bits */
    return y * scale;
}
static inline v8 sigmoid8(v8 x) { return splat(1.0f) / (splat(1.0f) + exp8(-x)); }
static inline v8 tanh8(v8 x) { return splat(2.0f) / (splat(1.0f) + exp8(x * splat(-2.0f))) - splat(1.0f); }

typedef struct {
    int layers, units, padded, vocab, out_panels;
    const float *table;            /* (vocab, blocks, 32): embedding @ kernel + bias, layer 0 */
    const float *weights[MAX_LAYERS]; /* layer 0: (blocks, padded, 32); others (blocks, 2*padded, 32) */
    const float *bias[MAX_LAYERS];    /* layers >= 1: (blocks, 32) */
    const float *out;                 /* (out_panels, padded, 32) */
    const float *out_bias;            /* (out_panels * 32) */
} Model;

typedef struct Runner Runner;
struct Runner {
    const Model *model;
    int capacity, layers; /* layers: the model's, kept here (at garbage collection the model may go first) */
    /* state buffers (numpy-owned), row stride `padded` floats; logits row stride `vocab` */
    float *h[MAX_LAYERS], *c[MAX_LAYERS], *fresh[MAX_LAYERS];
    float **h_rows[MAX_LAYERS], **fresh_rows[MAX_LAYERS]; /* row pointers into h and fresh */
    float *scratch[2];                                      /* per thread: capacity x 32 products */
    float *logits;
    int64_t *ids;
    int rows;
    /* threading */
    int threaded;
    pthread_t thread;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    int sleeping;  /* guarded by mutex */
    int64_t spin_ns; /* how long the idle worker spins before it sleeps */
    int quit;      /* guarded by mutex */
    _Atomic int64_t epoch; /* the step being run (odd/even irrelevant); worker joins each once */
    _Atomic int64_t gate;  /* epoch*4 + 0 open, 1 worker joined, 2 worker left, 3 closed */
    _Atomic int claimed[MAX_LAYERS + 1];
    _Atomic int done[MAX_LAYERS + 1];
};

/* Products. Every output element is acc = fma(x[k], w[k], acc) for k = 0, 1, ... in order,
 * whatever the path below, so the result of a row never depends on the other rows. */

/* z[r][0..32) (+)= sum_{k in [k0, k1)} x_r[k] * w[k][0..32) for R rows; w points at row k0 of a
 * (K, 32) panel; `first` starts from zero instead of z. */
#define DEFINE_TILE(R)                                                                                 \
    static inline void tile##R(const float *const *x, int k0, int k1, const float *w, float *z, int first) { \
        v8 acc[R][4];                                                                                  \
        for (int r = 0; r < R; r++)                                                                    \
            for (int g = 0; g < 4; g++) acc[r][g] = first ? splat(0.0f) : load8(z + r * PANEL + 8 * g); \
        for (int k = k0; k < k1; k++, w += PANEL) {                                                    \
            v8 w0 = load8(w), w1 = load8(w + 8), w2 = load8(w + 16), w3 = load8(w + 24);               \
            for (int r = 0; r < R; r++) {                                                              \
                v8 b = splat(x[r][k]);                                                                 \
                acc[r][0] = acc[r][0] + b * w0;                                                        \
                acc[r][1] = acc[r][1] + b * w1;                                                        \
                acc[r][2] = acc[r][2] + b * w2;                                                        \
                acc[r][3] = acc[r][3] + b * w3;                                                        \
            }                                                                                          \
        }                                                                                              \
        for (int r = 0; r < R; r++)                                                                    \
            for (int g = 0; g < 4; g++) store8(z + r * PANEL + 8 * g, acc[r][g]);                      \
    }
DEFINE_TILE(1)
DEFINE_TILE(2)

/* Six rows by half a panel (16 columns, at `half` * 16): twelve accumulators, the two weight
 * vectors loaded once per k and used six times (a 3 x 32 tile reloads its four weight vectors
 * per row: there are not enough registers, and the loads become the bound). */
static inline void tile6h(const float *const *x, int k0, int k1, const float *w, float *z, int first) {
    v8 acc[6][2];
    for (int r = 0; r < 6; r++)
        for (int g = 0; g < 2; g++) acc[r][g] = first ? splat(0.0f) : load8(z + r * PANEL + 8 * g);
    const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3], *x4 = x[4], *x5 = x[5];
    for (int k = k0; k < k1; k++, w += PANEL) {
        v8 w0 = load8(w), w1 = load8(w + 8), b;
        b = splat(x0[k]); acc[0][0] = acc[0][0] + b * w0; acc[0][1] = acc[0][1] + b * w1;
        b = splat(x1[k]); acc[1][0] = acc[1][0] + b * w0; acc[1][1] = acc[1][1] + b * w1;
        b = splat(x2[k]); acc[2][0] = acc[2][0] + b * w0; acc[2][1] = acc[2][1] + b * w1;
        b = splat(x3[k]); acc[3][0] = acc[3][0] + b * w0; acc[3][1] = acc[3][1] + b * w1;
        b = splat(x4[k]); acc[4][0] = acc[4][0] + b * w0; acc[4][1] = acc[4][1] + b * w1;
        b = splat(x5[k]); acc[5][0] = acc[5][0] + b * w0; acc[5][1] = acc[5][1] + b * w1;
    }
    for (int r = 0; r < 6; r++)
        for (int g = 0; g < 2; g++) store8(z + r * PANEL + 8 * g, acc[r][g]);
}

/* One row, two panels at once (eight independent chains hide the FMA latency). */
static inline void tile1x2(const float *x, int k0, int k1, const float *wa, const float *wb, float *za, float *zb,
                           int first) {
    v8 a[4], b[4];
    for (int g = 0; g < 4; g++) {
        a[g] = first ? splat(0.0f) : load8(za + 8 * g);
        b[g] = first ? splat(0.0f) : load8(zb + 8 * g);
    }
    for (int k = k0; k < k1; k++, wa += PANEL, wb += PANEL) {
        v8 s = splat(x[k]);
        for (int g = 0; g < 4; g++) {
            a[g] = a[g] + s * load8(wa + 8 * g);
            b[g] = b[g] + s * load8(wb + 8 * g);
        }
    }
    for (int g = 0; g < 4; g++) {
        store8(za + 8 * g, a[g]);
        store8(zb + 8 * g, b[g]);
    }
}

#define KC 128 /* k per chunk: a chunk of a panel (16 KB) stays in L1 while every row tile uses it */

/* z (rows x 32, row stride 32) = x (rows given by pointers, two segments) @ panel, for n rows. */
static void product(const float *const *x1, int k1, const float *const *x2, int k2, const float *w, int n, float *z) {
    int first = 1;
    for (int seg = 0; seg < 2; seg++) {
        const float *const *x = seg ? x2 : x1;
        int K = seg ? k2 : k1;
        for (int k0 = 0; k0 < K; k0 += KC) {
            int kend = k0 + KC < K ? k0 + KC : K;
            const float *wk = w + (size_t)k0 * PANEL;
            int r = 0;
            for (; r + 6 <= n; r += 6) {
                tile6h(x + r, k0, kend, wk, z + (size_t)r * PANEL, first);
                tile6h(x + r, k0, kend, wk + 16, z + (size_t)r * PANEL + 16, first);
            }
            for (; r + 2 <= n; r += 2) tile2(x + r, k0, kend, wk, z + (size_t)r * PANEL, first);
            if (r < n) tile1(x + r, k0, kend, wk, z + (size_t)r * PANEL, first);
            first = 0;
        }
        w += (size_t)K * PANEL;
    }
}

/* The cell on one block's pre-activations z (gates i, f, o, candidate) for one row. */
static inline void cell(const v8 z[4], const float *add, float *c, float *h) {
    v8 i = z[0] + load8(add), f = z[1] + load8(add + 8), o = z[2] + load8(add + 16), g = z[3] + load8(add + 24);
    i = sigmoid8(i);
    f = sigmoid8(f);
    o = sigmoid8(o);
    g = tanh8(g);
    v8 cn = f * load8(c) + i * g;
    store8(c, cn);
    store8(h, o * tanh8(cn));
}

/* The cell on rows [0, n) of one block, from the products z (n x 32). */
static void cells(Runner *run, int layer, int block, const float *z, int n) {
    const Model *m = run->model;
    const int P = m->padded, blocks = P / BLOCK, unit = block * BLOCK;
    for (int r = 0; r < n; r++) {
        size_t row = (size_t)r * P;
        const float *add = layer ? m->bias[layer] + (size_t)block * PANEL
                                 : m->table + ((size_t)run->ids[r] * blocks + block) * PANEL;
        v8 zz[4];
        for (int g = 0; g < 4; g++) zz[g] = load8(z + (size_t)r * PANEL + 8 * g);
        cell(zz, add, run->c[layer] + row + unit, run->fresh[layer] + row + unit);
    }
}

/* Job `job` of layer `layer`: one block for all rows, or for a single row two blocks. */
static void layer_job(Runner *run, int layer, int job, float *z) {
    const Model *m = run->model;
    const int P = m->padded, n = run->rows, K = layer ? 2 * P : P;
    const float *const *x1 = layer ? (const float *const *)run->fresh_rows[layer - 1] : (const float *const *)run->h_rows[0];
    const float *const *x2 = (const float *const *)run->h_rows[layer];
    if (n == 1) {
        int a = 2 * job, b = 2 * job + 1, blocks = P / BLOCK;
        const float *wa = m->weights[layer] + (size_t)a * K * PANEL;
        if (b < blocks) {
            const float *wb = wa + (size_t)K * PANEL;
            tile1x2(x1[0], 0, P, wa, wb, z, z + PANEL, 1);
            if (layer) tile1x2(x2[0], 0, P, wa + (size_t)P * PANEL, wb + (size_t)P * PANEL, z, z + PANEL, 0);
            cells(run, layer, a, z, 1);
            cells(run, layer, b, z + PANEL, 1);
        } else {
            product(x1, P, x2, layer ? P : 0, wa, 1, z);
            cells(run, layer, a, z, 1);
        }
        return;
    }
    product(x1, P, x2, layer ? P : 0, m->weights[layer] + (size_t)job * K * PANEL, n, z);
    cells(run, layer, job, z, n);
}

/* One job of the output layer: rows [r0, r0 + OUT_ROWS) of one panel of vocabulary columns. */
static void out_job(Runner *run, int job, float *z) {
    const Model *m = run->model;
    const int P = m->padded, V = m->vocab, last = m->layers - 1;
    int panel = job % m->out_panels, r0 = (job / m->out_panels) * OUT_ROWS;
    int r1 = r0 + OUT_ROWS < run->rows ? r0 + OUT_ROWS : run->rows;
    int cols = V - panel * PANEL < PANEL ? V - panel * PANEL : PANEL;
    product((const float *const *)run->fresh_rows[last] + r0, P, NULL, 0, m->out + (size_t)panel * P * PANEL, r1 - r0, z);
    for (int r = r0; r < r1; r++) {
        float *out = run->logits + (size_t)r * V + panel * PANEL;
        const float *zr = z + (size_t)(r - r0) * PANEL, *bias = m->out_bias + panel * PANEL;
        for (int j = 0; j < cols; j++) out[j] = zr[j] + bias[j];
    }
}

static int phase_jobs(const Runner *run, int phase) {
    const Model *m = run->model;
    if (phase < m->layers) return run->rows == 1 ? (m->padded / BLOCK + 1) / 2 : m->padded / BLOCK;
    return m->out_panels * ((run->rows + OUT_ROWS - 1) / OUT_ROWS);
}

static void wait_done(Runner *run, int phase, int jobs) {
    for (unsigned spins = 0; atomic_load_explicit(&run->done[phase], memory_order_acquire) < jobs; spins++) {
        if (spins < 4096) CPU_RELAX();
        else sched_yield();
    }
}

/* Work on every phase of the current step, claiming jobs until none are left; `z` is this
 * thread's scratch (capacity x 32 floats). */
static void work(Runner *run, float *z) {
    const int phases = run->model->layers + 1;
    for (int phase = 0; phase < phases; phase++) {
        const int jobs = phase_jobs(run, phase);
        int job;
        while ((job = atomic_fetch_add_explicit(&run->claimed[phase], 1, memory_order_acq_rel)) < jobs) {
            if (phase < run->model->layers) layer_job(run, phase, job, z);
            else out_job(run, job, z);
            atomic_fetch_add_explicit(&run->done[phase], 1, memory_order_acq_rel);
        }
        wait_done(run, phase, jobs);
    }
}

static void *worker_main(void *arg) {
    Runner *run = arg;
    int64_t seen = 0;
    for (;;) {
        /* wait for the next step: spin for run->spin_ns, then sleep until woken */
        int64_t e;
        unsigned spins = 0;
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        while ((e = atomic_load_explicit(&run->epoch, memory_order_acquire)) == seen) {
            CPU_RELAX();
            if (++spins % 64) continue;
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((now.tv_sec - start.tv_sec) * 1000000000LL + (now.tv_nsec - start.tv_nsec) < run->spin_ns) continue;
            pthread_mutex_lock(&run->mutex);
            run->sleeping = 1;
            while (!run->quit && atomic_load_explicit(&run->epoch, memory_order_acquire) == seen)
                pthread_cond_wait(&run->wake, &run->mutex);
            run->sleeping = 0;
            int quit = run->quit;
            pthread_mutex_unlock(&run->mutex);
            if (quit) return NULL;
        }
        if (e < 0) return NULL; /* quit */
        seen = e;
        int64_t open = e * 4;
        if (!atomic_compare_exchange_strong(&run->gate, &open, e * 4 + 1)) continue; /* step over */
        work(run, run->scratch[1]);
        atomic_store_explicit(&run->gate, e * 4 + 2, memory_order_release);
    }
}

static void runner_free(Runner *run) {
    for (int l = 0; l < run->layers; l++) {
        free(run->h_rows[l]);
        free(run->fresh_rows[l]);
    }
    free(run->scratch[0]);
    free(run->scratch[1]);
    free(run);
}

TG_API void *tg_runner_create(const Model *model, int capacity, int threaded) {
    if (!model || capacity < 1) return NULL;
    Runner *run = calloc(1, sizeof *run);
    if (!run) return NULL;
    run->model = model;
    run->capacity = capacity;
    run->layers = model->layers;
    /* Spinning keeps the next step's start cheap while steps come back to back; past that it
     * only takes the core from other threads (the server's event loop), so sleep. */
    const char *spin = getenv("TEXTGEN_KERNEL_SPIN_US");
    run->spin_ns = (spin ? atoll(spin) : 100) * 1000LL;
    for (int l = 0; l < model->layers; l++) {
        run->h_rows[l] = calloc(capacity, sizeof(float *));
        run->fresh_rows[l] = calloc(capacity, sizeof(float *));
    }
    run->scratch[0] = aligned_alloc(64, (size_t)capacity * PANEL * sizeof(float) * 2 + 64);
    run->scratch[1] = aligned_alloc(64, (size_t)capacity * PANEL * sizeof(float) * 2 + 64);
    int ok = run->scratch[0] && run->scratch[1];
    for (int l = 0; l < model->layers; l++) ok = ok && run->h_rows[l] && run->fresh_rows[l];
    if (!ok) { /* out of memory: nothing started yet, give everything back */
        runner_free(run);
        return NULL;
    }
    if (threaded) {
        pthread_mutex_init(&run->mutex, NULL);
        pthread_cond_init(&run->wake, NULL);
        atomic_store(&run->gate, 3);
        if (pthread_create(&run->thread, NULL, worker_main, run) == 0) run->threaded = 1;
    }
    return run;
}

/* Returns 0, or -1 (nothing set) when `layer` is not one of the model's. */
TG_API int tg_runner_set(Runner *run, int layer, float *h, float *c, float *fresh) {
    if (layer < 0 || layer >= run->layers) return -1;
    run->h[layer] = h;
    run->c[layer] = c;
    run->fresh[layer] = fresh;
    for (int r = 0; r < run->capacity; r++) {
        run->h_rows[layer][r] = h + (size_t)r * run->model->padded;
        run->fresh_rows[layer][r] = fresh + (size_t)r * run->model->padded;
    }
    return 0;
}

TG_API void tg_runner_outputs(Runner *run, float *logits, int64_t *ids) {
    run->logits = logits;
    run->ids = ids;
}

/* Advance `rows` streams by one character. Returns 0, or -1 (nothing done) when an id is
 * outside the vocabulary (the table's rows), rows exceed the capacity, or a layer's buffers or
 * the outputs were never bound. */
static int step_rows(Runner *run, int rows) {
    const Model *m = run->model;
    if (rows < 0 || rows > run->capacity || !run->logits || !run->ids) return -1;
    for (int l = 0; l < m->layers; l++)
        if (!run->h[l] || !run->c[l] || !run->fresh[l]) return -1;
    for (int r = 0; r < rows; r++)
        if (run->ids[r] < 0 || run->ids[r] >= m->vocab) return -1;
    run->rows = rows;
    for (int p = 0; p <= m->layers; p++) {
        atomic_store_explicit(&run->claimed[p], 0, memory_order_relaxed);
        atomic_store_explicit(&run->done[p], 0, memory_order_relaxed);
    }
    int64_t e = 0;
    if (run->threaded) {
        e = atomic_load_explicit(&run->epoch, memory_order_relaxed) + 1;
        atomic_store_explicit(&run->gate, e * 4, memory_order_release);
        atomic_store_explicit(&run->epoch, e, memory_order_release);
        pthread_mutex_lock(&run->mutex);
        if (run->sleeping) pthread_cond_signal(&run->wake);
        pthread_mutex_unlock(&run->mutex);
    }
    work(run, run->scratch[0]);
    if (run->threaded) {
        int64_t open = e * 4;
        if (!atomic_compare_exchange_strong(&run->gate, &open, e * 4 + 3)) {
            /* the worker joined: wait until it has left this step */
            for (unsigned spins = 0; atomic_load_explicit(&run->gate, memory_order_acquire) != e * 4 + 2; spins++) {
                if (spins < 4096) CPU_RELAX();
                else sched_yield();
            }
        }
    }
    /* the new h of every layer becomes the state */
    for (int l = 0; l < m->layers; l++)
        memcpy(run->h[l], run->fresh[l], (size_t)rows * m->padded * sizeof(float));
    return 0;
}

TG_API int tg_step(Runner *run, int rows) { return step_rows(run, rows); }

TG_API void tg_runner_destroy(Runner *run) {
    if (!run) return;
    if (run->threaded) {
        pthread_mutex_lock(&run->mutex);
        run->quit = 1;
        atomic_store(&run->epoch, -1);
        pthread_cond_signal(&run->wake);
        pthread_mutex_unlock(&run->mutex);
        pthread_join(run->thread, NULL);
        pthread_mutex_destroy(&run->mutex);
        pthread_cond_destroy(&run->wake);
    }
    runner_free(run);
}

TG_API void *tg_model_create(int layers, int units, int padded, int vocab, int out_panels, const float *table,
                      const float *const *weights, const float *const *bias, const float *out,
                      const float *out_bias) {
    if (layers < 1 || layers > MAX_LAYERS || units < 1 || padded < units || padded % BLOCK || vocab < 1 ||
        out_panels < 1 || (int64_t)out_panels * PANEL < vocab || !table || !weights || !bias || !out || !out_bias)
        return NULL;
    for (int l = 0; l < layers; l++)
        if (!weights[l] || (l && !bias[l])) return NULL;
    Model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->layers = layers;
    m->units = units;
    m->padded = padded;
    m->vocab = vocab;
    m->out_panels = out_panels;
    m->table = table;
    for (int l = 0; l < layers; l++) {
        m->weights[l] = weights[l];
        m->bias[l] = bias[l];
    }
    m->out = out;
    m->out_bias = out_bias;
    return m;
}

TG_API void tg_model_destroy(void *m) { free(m); }

/* One id from p ∝ exp(l / t) over the ids `allow` admits (all when it is NULL), as
 * textgen/generation/draw.py's `sample` does without top-k or top-p (in float64: z = l / t - max,
 * e = exp(z), cdf = cumsum(e); the id is the number of cdf entries <= u * cdf[V-1]; an id
 * `allow` refuses adds nothing to the cdf, as numpy's exp(-inf) = 0); t = 0 is argmax (the first
 * maximum). Should rounding put u * cdf[V-1] past every entry, the id is the last admitted one
 * (V - 1 when all are). `cdf` is V doubles of scratch. */
static int draw_one(const float *l, int V, double t, double u, const uint8_t *allow, double *cdf) {
    int first = 0, last = V - 1;
    if (allow) {
        while (first < V && !allow[first]) first++;
        while (last > first && !allow[last]) last--;
    }
    if (first >= V) return 0; /* nothing admitted: the caller never asks (a steered row always has an id) */
    if (t == 0.0) {
        int best = first;
        for (int j = first + 1; j <= last; j++)
            if ((!allow || allow[j]) && l[j] > l[best]) best = j;
        return best;
    }
    double top = -INFINITY;
    for (int j = 0; j < V; j++) {
        double z = (double)l[j] / t;
        cdf[j] = z;
        if ((!allow || allow[j]) && z > top) top = z;
    }
    double total = 0.0;
    for (int j = 0; j < V; j++) {
        if (!allow || allow[j]) total += exp(cdf[j] - top);
        cdf[j] = total;
    }
    double target = u * total;
    int id = 0;
    while (id < V && cdf[id] <= target) id++;
    return id <= last ? id : last;
}

/* A steered row (textgen/generation/constraints.py): its automaton over the vocabulary —
 * table[s * V + id] the next state, distance[s] the fewest characters from s to acceptance
 * (UNREACHABLE clamped to INT32_MAX), nearest[s] the least distance one move on, accepting[s] —
 * `states` its size, `end` the id that ends a line (-1: none), and where the row stands: `state`
 * and `left`, the characters its length still allows. tg_run moves state and left as the row
 * draws; `finished` is set to the step (1-based) whose character completed the row's text, and
 * from then on the row is drawn unsteered (the caller drops what follows). `table` NULL: the row
 * is not steered. The rules are constraints.Cursor's, whose cursor follows the same ids. */
typedef struct {
    const int32_t *table, *distance, *nearest;
    const uint8_t *accepting;
    int64_t states, end, state, left, finished;
} Steer;

/* The ids row `st` may draw next (constraints.Cursor.allowed); 0 when none is, or its state is
 * out of range. */
static int steer_mask(const Steer *st, int V, uint8_t *allow) {
    if (st->state < 0 || st->state >= st->states) return 0;
    const int32_t *next = st->table + (size_t)st->state * V;
    int any = 0;
    for (int j = 0; j < V; j++) {
        int32_t s = next[j];
        allow[j] = s >= 0 && s < st->states && (int64_t)st->distance[s] < st->left;
        any |= allow[j];
    }
    if (st->end >= 0 && st->end < V) {
        allow[st->end] = st->accepting[st->state] != 0;
        any |= allow[st->end];
    }
    return any;
}

/* Move row `st` past `id` (constraints.Cursor.advance): 1 when its text is complete (the end of a
 * line was drawn, its length is used up, or nothing may follow), 0 when it goes on, -1 when its
 * state leaves the automaton. */
static int steer_advance(Steer *st, int64_t id, int V) {
    st->left--;
    if (id == st->end) return 1;
    st->state = st->table[(size_t)st->state * V + id];
    if (st->state < 0 || st->state >= st->states) return -1;
    int may_go_on = (int64_t)st->nearest[st->state] < st->left || (st->end >= 0 && st->accepting[st->state]);
    return st->left <= 0 || !may_go_on;
}

/* Draw one id per row with draw_one: every id admitted, except for a steered row (`steer` not
 * NULL, its `table` set and not finished), which draws from the ids its automaton admits. Row r's
 * uniform is uniforms[r * block + used[r]], and used[r] advances; the uniform is also written to
 * u_out[r]. Returns how many rows used the last uniform of their block (the caller refills them),
 * or -1 when a row has no uniform left, a steered row has no id to draw, the sizes are
 * impossible, or the buffers cannot be had. */
static int sample_rows(const float *logits, int n, int V, const double *temps, const double *uniforms, int block,
                       int64_t *used, double *u_out, int64_t *ids, const Steer *steer) {
    int empty = 0;
    if (n < 0 || V < 1 || block < 1) return -1;
    double *cdf = malloc((size_t)V * sizeof(double));
    uint8_t *allow = steer ? malloc((size_t)V) : NULL;
    if (!cdf || (steer && !allow)) empty = -1;
    for (int r = 0; r < n && empty >= 0; r++) {
        if (used[r] < 0 || used[r] >= block) { /* the caller refills a used block before the next draw */
            empty = -1;
            break;
        }
        double u = uniforms[(size_t)r * block + used[r]];
        u_out[r] = u;
        if (++used[r] >= block) empty++;
        const uint8_t *mask = NULL;
        if (steer && steer[r].table && !steer[r].finished) {
            if (!steer_mask(&steer[r], V, allow)) {
                empty = -1;
                break;
            }
            mask = allow;
        }
        ids[r] = draw_one(logits + (size_t)r * V, V, temps[r], u, mask, cdf);
    }
    free(cdf);
    free(allow);
    return empty;
}

TG_API int tg_sample(const float *logits, int n, int V, const double *temps, const double *uniforms, int block,
                     int64_t *used, double *u_out, int64_t *ids) {
    return sample_rows(logits, n, V, temps, uniforms, block, used, u_out, ids, NULL);
}

/* Up to `steps` steps of draw-then-advance for rows [0, n), every row temperature-only: each
 * step draws an id per row from the state's logits (as tg_sample; a steered row, `steer[r].table`
 * set, from the ids its automaton admits), writes them to ids_out[s * n + r], and advances the
 * state with them. Stops after the step in which a row used the last uniform of its block (the
 * caller refills it), or a steered row finished its text, or after any step once another
 * thread has set *interrupt (a request waits to join, a client left); returns the steps
 * done. A row whose stream finished during these steps has advanced further for nothing:
 * rows do not affect each other, so the caller just drops it. `steer` may be NULL (no row is
 * steered). Returns -1 when n is not in [1, capacity], a draw or step fails, or a steered
 * row's state leaves its automaton. */
TG_API int tg_run(Runner *run, int n, int steps, const double *temps, const double *uniforms, int block, int64_t *used,
           double *u_out, int64_t *ids_out, const int32_t *interrupt, Steer *steer) {
    const int V = run->model->vocab;
    if (n < 1 || n > run->capacity || steps < 1 || !run->logits || !run->ids) return -1;
    for (int s = 0; s < steps; s++) {
        int empty = sample_rows(run->logits, n, V, temps, uniforms, block, used, u_out, run->ids, steer);
        if (empty < 0) return -1;
        int finished = 0;
        for (int r = 0; steer && r < n; r++) {
            if (!steer[r].table || steer[r].finished) continue;
            int complete = steer_advance(&steer[r], run->ids[r], V);
            if (complete < 0) return -1;
            if (complete) {
                steer[r].finished = s + 1;
                finished++;
            }
        }
        memcpy(ids_out + (size_t)s * n, run->ids, (size_t)n * sizeof(int64_t));
        if (step_rows(run, n) < 0) return -1;
        if (empty || finished || (interrupt && __atomic_load_n(interrupt, __ATOMIC_ACQUIRE))) return s + 1;
    }
    return steps;
}

/* What this library is: the hash of the _kernel.c it was built from, and the variant it was
 * built as (kernel.py checks both before it calls anything else). */
TG_API const char *tg_source_hash(void) { return TG_SOURCE_HASH; }
TG_API const char *tg_variant(void) { return TG_VARIANT; }

/* The highest x86-64 micro-architecture level (the psABI's: 1 = x86-64, 2 = -v2, 3 = -v3,
 * 4 = -v4) whose instructions this CPU has and whose registers the operating system saves
 * (XCR0), from CPUID; 0 on other architectures. kernel.py calls the baseline build's, which
 * runs on every x86-64 CPU, before it loads a variant that needs more. */
#if defined(__x86_64__)
#include <cpuid.h>
static int all(unsigned bits, unsigned mask) { return (bits & mask) == mask; }
TG_API int tg_cpu_level(void) {
    unsigned a, b, c, d, leaf1 = 0, leaf7 = 0, ext1 = 0;
    unsigned top = __get_cpuid_max(0, NULL);
    if (top >= 1 && __get_cpuid(1, &a, &b, &c, &d)) leaf1 = c;
    if (top >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        leaf7 = b;
    }
    if (__get_cpuid_max(0x80000000u, NULL) >= 0x80000001u && __get_cpuid(0x80000001u, &a, &b, &c, &d)) ext1 = c;
    uint64_t xcr0 = 0;
    if (leaf1 & (1u << 27)) { /* OSXSAVE: xgetbv may be used */
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = ((uint64_t)hi << 32) | lo;
    }
    /* v2: SSE3 0, SSSE3 9, CMPXCHG16B 13, SSE4.1 19, SSE4.2 20, POPCNT 23 (leaf 1 ecx); LAHF 0 (0x80000001 ecx) */
    if (!all(leaf1, 1u << 0 | 1u << 9 | 1u << 13 | 1u << 19 | 1u << 20 | 1u << 23) || !all(ext1, 1u << 0)) return 1;
    /* v3: FMA 12, MOVBE 22, OSXSAVE 27, AVX 28, F16C 29 (leaf 1 ecx); BMI1 3, AVX2 5, BMI2 8 (leaf 7 ebx);
     * LZCNT 5 (0x80000001 ecx); the OS saves SSE and AVX state (XCR0 bits 1, 2) */
    if (!all(leaf1, 1u << 12 | 1u << 22 | 1u << 27 | 1u << 28 | 1u << 29) || !all(leaf7, 1u << 3 | 1u << 5 | 1u << 8) ||
        !all(ext1, 1u << 5) || (xcr0 & 0x6) != 0x6)
        return 2;
    /* v4: AVX512F 16, AVX512DQ 17, AVX512CD 28, AVX512BW 30, AVX512VL 31 (leaf 7 ebx); the OS saves the
     * opmask and ZMM state (XCR0 bits 5, 6, 7) */
    if (!all(leaf7, 1u << 16 | 1u << 17 | 1u << 28 | 1u << 30 | 1u << 31) || (xcr0 & 0xe0) != 0xe0) return 3;
    return 4;
}
#else
TG_API int tg_cpu_level(void) { return 0; }
#endif
