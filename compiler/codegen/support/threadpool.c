/*
 * tilec support library: the part of the native ABI that is not generated code.
 *
 * Linked into every CPU artifact (see docs/ARCHITECTURE.md, "Native ABI"). Exports
 *   int32_t tilec_abi_version(void)                     -> 3
 *   void   *tilec_create(int32_t num_threads)            -> context, NULL on failure
 *   void    tilec_destroy(void *ctx)
 *   int32_t tilec_num_threads(void *ctx)
 *   void    tilec_parallel_for(ctx, fn, closure, n)      -> fn(closure, b, e) over a partition of [0, n)
 *   void    tilec_set_profile(ctx, int64_t *ns, int32_t n) -> per-kernel wall-time accumulators (NULL: off)
 *   int64_t tilec_profile_begin(ctx) / void tilec_profile_end(ctx, kernel, begin)
 *                                                         -> called around each kernel by artifacts
 *                                                            compiled with profiling (tilec profile)
 *
 * The context owns a small fork/join pool of num_threads - 1 workers; the calling
 * thread is the last member. There is no global state, so several contexts (several
 * sessions, several artifacts in one process) never interfere.
 *
 * Protocol: the caller publishes a job (fn, closure, n, chunk) split into `parts`
 * contiguous chunks (up to TILEC_CHUNKS_PER_THREAD per thread) and bumps `generation`.
 * Chunks are claimed dynamically, by the caller as much as by the workers, through one
 * atomic word holding (job number, next chunk, parts): whoever is running claims the
 * next chunk, so a worker that is asleep, slow to wake or descheduled (a busy neighbour
 * on the cores) delays nothing: the caller takes the chunks it has not started, and a
 * parallel region is never much slower than the caller running it alone. The job number
 * in the word makes a late worker's claim for a finished job fail instead of running
 * the next job's chunks with stale arguments. Each finished chunk decrements
 * `remaining`; the one that reaches 0 signals `done`, which the caller waits for only
 * while chunks that others claimed are still running.
 *
 * Waking: workers spin on `generation` for TILEC_SPIN_NS after their last chunk (a fork
 * costs a few hundred nanoseconds between back-to-back kernels), then sleep on `wake`.
 * Every spin loop (a worker's, and the caller's for others' chunks) yields the core each
 * TILEC_SPIN_CHECK_EVERY turns: a spinner must not keep a thread that has work off its core
 * (the caller, when another process's threads hold the other core: a 2-thread run was 1.3x
 * slower than 1 thread beside onnxruntime's spinning pool, and is now at the 1-thread time),
 * and on a virtual machine a bare pause loop looks like a lock spin to the hypervisor, which
 * then takes the vCPU away (a 2-thread decode step of a small LLaMA: 3.7 -> 2.1 ms).
 * Bumping `generation` reaches the spinning workers only; the sleeping ones are woken by
 * the caller after its first chunk, and only when what is left of the job (its chunks
 * still unclaimed times the caller's time per chunk) exceeds what a wake-up has cost
 * the caller so far (`wake_ns`, a running mean). A wake-up is a futex call that, on a
 * virtual machine whose other vCPU is halted, has been measured to hold the caller for
 * 130-190 us, longer than most kernels of a decoding step: waking for every small kernel
 * made a 2-thread region 10x slower than the caller alone.
 *
 * Only libc + pthreads + C11 atomics, so it builds with `zig cc` for every Linux target.
 */

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* 2: the generated code exports tilec_signature; 3: tilec_run takes the run's dims, tilec_sizes */
#define TILEC_ABI_VERSION 3
/* Upper bound on threads: protects against absurd requests, not a tuning knob. */
#define TILEC_MAX_THREADS 1024
/* How long a worker spins for the next job before sleeping, and how often it reads the clock. */
#define TILEC_SPIN_NS 300000
#define TILEC_SPIN_CHECK_EVERY 64
/* The cost of a wake-up assumed before one was measured (bare metal: a few us). */
#define TILEC_WAKE_NS_INITIAL 20000
/* Chunks per thread: enough to rebalance when a thread starts late, few enough that the
   per-chunk call stays negligible. At most 0xFFFF chunks fit the claim word. */
#define TILEC_CHUNKS_PER_THREAD 4

typedef void (*tilec_body_fn)(void *closure, int64_t begin, int64_t end);

typedef struct tilec_context tilec_context;

typedef struct {
    tilec_context *ctx;
    pthread_t thread;
} tilec_worker;

struct tilec_context {
    int32_t num_threads;
    int32_t num_workers; /* workers actually started: num_threads - 1 */
    tilec_worker *workers;

    pthread_mutex_t mutex;
    pthread_cond_t wake; /* workers sleep here waiting for a new generation */
    pthread_cond_t done; /* the caller sleeps here waiting for remaining == 0 */
    _Atomic int32_t sleepers; /* workers blocked on `wake`, changed under mutex */
    /* The caller's alone (so are the jobs): */
    int64_t wake_ns;          /* running mean of what waking the sleepers cost the caller */
    int64_t alone_ns;         /* time the caller ran jobs alone since the workers slept */
    int64_t last_job_end_ns;

    /* The current job: written by the caller before the release-store of generation. */
    tilec_body_fn fn;
    void *closure;
    int64_t n;
    int64_t chunk;

    uint32_t jobs;           /* jobs published so far; the caller's alone */
    _Atomic uint64_t generation;
    /* (job << 32) | (next chunk << 16) | parts: claimed by compare-and-swap. */
    _Atomic uint64_t claim;
    _Atomic int64_t remaining; /* chunks of the current job not finished yet */
    _Atomic int32_t busy;      /* 1 while a parallel_for is in flight: nested calls run serially */
    _Atomic int32_t stop;

    /* Profiling: ns[k] accumulates kernel k's wall time; set by the runtime, NULL when off. */
    int64_t *profile_ns;
    int32_t profile_len;
};

static inline void tilec_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause");
#elif defined(__aarch64__) || (defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 7)
    __asm__ __volatile__("yield");
#endif
}

static int64_t tilec_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Claim the next chunk of job `job`: its number, or -1 when none is left. `*unclaimed`
   receives how many chunks are left after it. */
static int64_t tilec_claim(tilec_context *ctx, uint32_t job, int64_t *unclaimed) {
    uint64_t word = atomic_load_explicit(&ctx->claim, memory_order_acquire);
    for (;;) {
        uint64_t next = (word >> 16) & 0xFFFF, parts = word & 0xFFFF;
        if ((uint32_t)(word >> 32) != job || next >= parts) return -1;
        if (atomic_compare_exchange_weak_explicit(&ctx->claim, &word, word + (1u << 16),
                                                  memory_order_acq_rel, memory_order_acquire)) {
            *unclaimed = (int64_t)(parts - next - 1);
            return (int64_t)next;
        }
        /* word now holds the current value: retry with it */
    }
}

/* Run chunk `next` of the current job and count it done. */
static void tilec_run_chunk(tilec_context *ctx, int64_t next) {
    /* The job cannot finish while this chunk is unfinished, so its fields are stable. */
    int64_t begin = next * ctx->chunk;
    int64_t end = begin + ctx->chunk;
    if (end > ctx->n) end = ctx->n;
    if (begin < end) ctx->fn(ctx->closure, begin, end);
    if (atomic_fetch_sub_explicit(&ctx->remaining, 1, memory_order_acq_rel) == 1) {
        /* Last chunk done: the mutex orders this signal after the caller's check. */
        pthread_mutex_lock(&ctx->mutex);
        pthread_cond_signal(&ctx->done);
        pthread_mutex_unlock(&ctx->mutex);
    }
}

/* A worker: claim and run chunks of job `job` until none is left. */
static void tilec_work(tilec_context *ctx, uint32_t job) {
    int64_t next, unclaimed;
    while ((next = tilec_claim(ctx, job, &unclaimed)) >= 0) tilec_run_chunk(ctx, next);
}

/* Wake the sleeping workers (for the current job, or for shutdown). */
static void tilec_wake(tilec_context *ctx) {
    pthread_mutex_lock(&ctx->mutex);
    pthread_cond_broadcast(&ctx->wake);
    pthread_mutex_unlock(&ctx->mutex);
}

/* The caller: claim and run chunks of job `job` until none is left. Sleeping workers are
   woken once, after a chunk, when the work the caller has done alone lately (this job's
   chunks so far and those left, and earlier jobs that came without a gap a worker would
   sleep through) exceeds what a wake-up costs: one wake-up then serves a stream of small
   kernels, and a lone small kernel runs on the caller. */
static void tilec_lead(tilec_context *ctx, uint32_t job) {
    int64_t start = tilec_now_ns(), now = start, ran = 0, next, unclaimed;
    int woken = 0;
    if (start - ctx->last_job_end_ns > TILEC_SPIN_NS) ctx->alone_ns = 0;
    while ((next = tilec_claim(ctx, job, &unclaimed)) >= 0) {
        tilec_run_chunk(ctx, next);
        ++ran;
        /* seq_cst: either this load sees a worker about to sleep, or that worker sees the
           new generation; missing one only costs speed, the caller runs every chunk left. */
        if (woken || unclaimed == 0 || atomic_load(&ctx->sleepers) == 0) continue;
        now = tilec_now_ns();
        if (ctx->alone_ns + (now - start) / ran * (ran + unclaimed) <= ctx->wake_ns) continue;
        tilec_wake(ctx);
        int64_t after = tilec_now_ns();
        ctx->wake_ns += (after - now - ctx->wake_ns) / 4;
        woken = 1;
    }
    ctx->last_job_end_ns = tilec_now_ns();
    ctx->alone_ns = woken || atomic_load(&ctx->sleepers) == 0 ? 0 : ctx->alone_ns + ctx->last_job_end_ns - start;
}

/* Wait until generation differs from `seen`; returns the new generation. */
static uint64_t tilec_wait_for_job(tilec_context *ctx, uint64_t seen) {
    int64_t deadline = tilec_now_ns() + TILEC_SPIN_NS;
    for (int i = 1;; ++i) {
        uint64_t gen = atomic_load_explicit(&ctx->generation, memory_order_acquire);
        if (gen != seen) return gen;
        if (i % TILEC_SPIN_CHECK_EVERY == 0) {
            if (tilec_now_ns() > deadline) break;
            sched_yield();
        }
        tilec_cpu_relax();
    }
    pthread_mutex_lock(&ctx->mutex);
    uint64_t gen;
    atomic_fetch_add(&ctx->sleepers, 1);
    /* A job published without a wake-up (too small to pay for one) is not waited for:
       the caller runs it; this worker sleeps until a wake-up names a newer generation. */
    while ((gen = atomic_load(&ctx->generation)) == seen) pthread_cond_wait(&ctx->wake, &ctx->mutex);
    atomic_fetch_sub(&ctx->sleepers, 1);
    pthread_mutex_unlock(&ctx->mutex);
    return gen;
}

static void *tilec_worker_main(void *arg) {
    tilec_worker *self = (tilec_worker *)arg;
    tilec_context *ctx = self->ctx;
    uint64_t seen = 0;
    for (;;) {
        seen = tilec_wait_for_job(ctx, seen);
        if (atomic_load_explicit(&ctx->stop, memory_order_acquire)) return NULL;
        tilec_work(ctx, (uint32_t)seen);
    }
}

/* Wait for the chunks other threads claimed and are still running. */
static void tilec_wait_for_chunks(tilec_context *ctx) {
    int64_t deadline = tilec_now_ns() + TILEC_SPIN_NS;
    for (int i = 1;; ++i) {
        if (atomic_load_explicit(&ctx->remaining, memory_order_acquire) == 0) return;
        if (i % TILEC_SPIN_CHECK_EVERY == 0) {
            if (tilec_now_ns() > deadline) break;
            sched_yield();
        }
        tilec_cpu_relax();
    }
    pthread_mutex_lock(&ctx->mutex);
    while (atomic_load_explicit(&ctx->remaining, memory_order_acquire) != 0)
        pthread_cond_wait(&ctx->done, &ctx->mutex);
    pthread_mutex_unlock(&ctx->mutex);
}

static void tilec_stop_workers(tilec_context *ctx, int32_t started) {
    atomic_store_explicit(&ctx->stop, 1, memory_order_release);
    atomic_store(&ctx->generation, ++ctx->jobs);
    tilec_wake(ctx);
    for (int32_t i = 0; i < started; ++i) pthread_join(ctx->workers[i].thread, NULL);
}

int32_t tilec_abi_version(void) { return TILEC_ABI_VERSION; }

void *tilec_create(int32_t num_threads) {
    if (num_threads <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        num_threads = online > 0 ? (int32_t)(online < TILEC_MAX_THREADS ? online : TILEC_MAX_THREADS) : 1;
    }
    if (num_threads > TILEC_MAX_THREADS) num_threads = TILEC_MAX_THREADS;

    tilec_context *ctx = (tilec_context *)calloc(1, sizeof(tilec_context));
    if (!ctx) return NULL;
    ctx->num_threads = num_threads;
    atomic_init(&ctx->generation, 0);
    atomic_init(&ctx->claim, 0);
    atomic_init(&ctx->remaining, 0);
    atomic_init(&ctx->busy, 0);
    atomic_init(&ctx->stop, 0);
    atomic_init(&ctx->sleepers, 0);
    ctx->wake_ns = TILEC_WAKE_NS_INITIAL;
    if (pthread_mutex_init(&ctx->mutex, NULL) != 0) goto fail_mutex;
    if (pthread_cond_init(&ctx->wake, NULL) != 0) goto fail_wake;
    if (pthread_cond_init(&ctx->done, NULL) != 0) goto fail_done;

    int32_t wanted = num_threads - 1;
    if (wanted > 0) {
        ctx->workers = (tilec_worker *)calloc((size_t)wanted, sizeof(tilec_worker));
        if (!ctx->workers) goto fail_workers;
    }
    for (int32_t i = 0; i < wanted; ++i) {
        ctx->workers[i].ctx = ctx;
        if (pthread_create(&ctx->workers[i].thread, NULL, tilec_worker_main, &ctx->workers[i]) != 0) {
            tilec_stop_workers(ctx, i);
            goto fail_workers;
        }
    }
    ctx->num_workers = wanted;
    return ctx;

fail_workers:
    free(ctx->workers);
    pthread_cond_destroy(&ctx->done);
fail_done:
    pthread_cond_destroy(&ctx->wake);
fail_wake:
    pthread_mutex_destroy(&ctx->mutex);
fail_mutex:
    free(ctx);
    return NULL;
}

void tilec_destroy(void *opaque) {
    tilec_context *ctx = (tilec_context *)opaque;
    if (!ctx) return;
    tilec_stop_workers(ctx, ctx->num_workers);
    free(ctx->workers);
    pthread_cond_destroy(&ctx->done);
    pthread_cond_destroy(&ctx->wake);
    pthread_mutex_destroy(&ctx->mutex);
    free(ctx);
}

int32_t tilec_num_threads(void *opaque) {
    tilec_context *ctx = (tilec_context *)opaque;
    return ctx ? ctx->num_threads : 1;
}

void tilec_parallel_for(void *opaque, tilec_body_fn fn, void *closure, int64_t n) {
    tilec_context *ctx = (tilec_context *)opaque;
    if (n <= 0) return;
    if (!ctx || ctx->num_workers == 0 || n == 1) {
        fn(closure, 0, n);
        return;
    }
    /* A nested call (from inside fn) or a second concurrent caller runs serially
       instead of deadlocking on the pool. */
    if (atomic_exchange_explicit(&ctx->busy, 1, memory_order_acquire) != 0) {
        fn(closure, 0, n);
        return;
    }
    int64_t most = (int64_t)ctx->num_threads * TILEC_CHUNKS_PER_THREAD;
    int64_t chunk = (n + (n < most ? n : most) - 1) / (n < most ? n : most);
    uint64_t parts = (uint64_t)((n + chunk - 1) / chunk);
    uint32_t job = ++ctx->jobs;
    ctx->fn = fn;
    ctx->closure = closure;
    ctx->n = n;
    ctx->chunk = chunk;
    atomic_store_explicit(&ctx->remaining, (int64_t)parts, memory_order_relaxed);
    atomic_store_explicit(&ctx->claim, ((uint64_t)job << 32) | parts, memory_order_release);
    atomic_store(&ctx->generation, job); /* the spinning workers start; tilec_lead wakes the others */
    tilec_lead(ctx, job);
    tilec_wait_for_chunks(ctx);
    atomic_store_explicit(&ctx->busy, 0, memory_order_release);
}

void tilec_set_profile(void *opaque, int64_t *ns, int32_t n) {
    tilec_context *ctx = (tilec_context *)opaque;
    if (!ctx) return;
    ctx->profile_ns = n > 0 ? ns : NULL;
    ctx->profile_len = n > 0 ? n : 0;
}

int64_t tilec_profile_begin(void *opaque) {
    tilec_context *ctx = (tilec_context *)opaque;
    return ctx && ctx->profile_ns ? tilec_now_ns() : 0;
}

void tilec_profile_end(void *opaque, int32_t kernel, int64_t begin) {
    tilec_context *ctx = (tilec_context *)opaque;
    if (!ctx || !ctx->profile_ns || kernel < 0 || kernel >= ctx->profile_len) return;
    ctx->profile_ns[kernel] += tilec_now_ns() - begin;
}
