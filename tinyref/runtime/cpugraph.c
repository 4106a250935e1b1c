/* tinyref's CPU graph runner: replay a captured TinyJit step's kernels from one C loop.
 *
 * The table holds one entry of STRIDE uint64 words per kernel launch:
 *   [0] the kernel's address, [1] the size of its launch group, [2..] its 63 argument words.
 * A kernel that tinygrad split over n CPU threads (a `core_id` argument) is n consecutive entries
 * whose first says n; those run at the same time, one share per thread, and the loop moves on
 * when all are done (the next kernel may read what they wrote). Every other entry says 1.
 * Kernels are called with all 63 words, as tinygrad's own CPU queue worker does: the x86-64 and
 * AArch64 C calling conventions let a callee ignore arguments it does not take.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#define STRIDE 65
#define NARGS 63
#define MAX_WORKERS 63
#define SPIN 4000          /* polls before a waiting thread sleeps (worker) or yields (caller) */

typedef void (*kernel_fn)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                          uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                          uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                          uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                          uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                          uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                          uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);

static void launch(const uint64_t *e) {
  const uint64_t *a = e + 2;
  ((kernel_fn)e[0])(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14],
                    a[15], a[16], a[17], a[18], a[19], a[20], a[21], a[22], a[23], a[24], a[25], a[26], a[27], a[28],
                    a[29], a[30], a[31], a[32], a[33], a[34], a[35], a[36], a[37], a[38], a[39], a[40], a[41], a[42],
                    a[43], a[44], a[45], a[46], a[47], a[48], a[49], a[50], a[51], a[52], a[53], a[54], a[55], a[56],
                    a[57], a[58], a[59], a[60], a[61], a[62]);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

/* --8<-- [start:pool] */
/* The caller posts a group by bumping `seq`; worker w runs shares w, w + n_threads, ... of it. */
static struct {
  _Atomic uint64_t seq;
  _Atomic int pending, sleepers;
  const uint64_t *group;
  int size, n_threads;
  pthread_mutex_t lock;
  pthread_cond_t wake;
} pool = {.n_threads = 1, .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void run_shares(int first) {
  for (int t = first; t < pool.size; t += pool.n_threads) launch(pool.group + (uint64_t)t * STRIDE);
}

static void *worker(void *arg) {
  int w = (int)(intptr_t)arg;
  uint64_t seen = 0;
  for (;;) {
    for (int spins = 0; atomic_load_explicit(&pool.seq, memory_order_acquire) == seen; spins++) {
      if (spins < SPIN) { cpu_relax(); continue; }
      pthread_mutex_lock(&pool.lock);
      atomic_fetch_add(&pool.sleepers, 1);
      while (atomic_load(&pool.seq) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
      atomic_fetch_sub(&pool.sleepers, 1);
      pthread_mutex_unlock(&pool.lock);
    }
    seen = atomic_load_explicit(&pool.seq, memory_order_acquire);
    run_shares(w);
    atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_release);
  }
  return 0;
}

/* A forked child has no workers (only the thread that forked survives): it runs every share itself. */
static void forget_workers(void) { pool.n_threads = 1; }

/* Start n_threads - 1 workers (once per process); returns the number of threads kernels run on. */
int tinyref_start(int n_threads) {
  if (pool.n_threads > 1 || n_threads <= 1) return pool.n_threads;
  pthread_atfork(0, 0, forget_workers);
  if (n_threads > MAX_WORKERS + 1) n_threads = MAX_WORKERS + 1;
  int started = 1;
  for (; started < n_threads; started++) {
    pthread_t t;
    if (pthread_create(&t, 0, worker, (void *)(intptr_t)started)) break;
    pthread_detach(t);
  }
  pool.n_threads = started;
  return started;
}

static void run_group(const uint64_t *group, int size) {
  if (pool.n_threads == 1 || size == 1) {
    for (int t = 0; t < size; t++) launch(group + (uint64_t)t * STRIDE);
    return;
  }
  pool.group = group;
  pool.size = size;
  atomic_store(&pool.pending, pool.n_threads - 1);
  atomic_fetch_add(&pool.seq, 1);
  if (atomic_load(&pool.sleepers)) {
    pthread_mutex_lock(&pool.lock);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
  }
  run_shares(0);
  for (int spins = 0; atomic_load_explicit(&pool.pending, memory_order_acquire); spins++) {
    if (spins < SPIN) cpu_relax(); else sched_yield();
  }
}

/* Run `count` table entries in order. One replay at a time: ctypes lets Python threads call in together. */
void tinyref_run(const uint64_t *table, int count) {
  static pthread_mutex_t one_at_a_time = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&one_at_a_time);
  for (int i = 0; i < count;) {
    int size = (int)table[(uint64_t)i * STRIDE + 1];
    run_group(table + (uint64_t)i * STRIDE, size);
    i += size;
  }
  pthread_mutex_unlock(&one_at_a_time);
}
/* --8<-- [end:pool] */
