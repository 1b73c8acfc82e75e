// minigrad's thread pool: parallel_run, set_num_threads / get_num_threads.
//
// One loop runs at a time (a second user thread calling in meanwhile runs its loop inline). The
// caller publishes a Job, bumps `seq` (the futex word sleeping workers wait on) and claims chunks
// itself; workers claim chunks with fetch_add on job->next. The caller waits only for chunks that
// were claimed (done == chunks), then retracts the job and waits for `active`, the workers between
// picking the job up and letting it go (a few instructions with no chunk running, unless they
// are about to find the job empty). A worker the OS has not run yet picks up nothing.
#include "parallel.h"

#include <sched.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "error.h"

namespace minigrad {

namespace {

thread_local bool tls_in_region = false;
thread_local bool tls_inline = false;

// Marks this thread as running chunks for a scope (restoring the outer state, also on a throw).
struct RegionScope {
  const bool outer = tls_in_region;
  RegionScope() { tls_in_region = true; }
  ~RegionScope() { tls_in_region = outer; }
};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Sleeping until a 32-bit word changes, and waking its sleepers: the futex itself on Linux.
void wait_while_equal(std::atomic<uint32_t>& word, uint32_t value) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) && std::atomic<uint32_t>::is_always_lock_free);
#if defined(__linux__)
  while (word.load(std::memory_order_seq_cst) == value)
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, value, nullptr, nullptr, 0);
#else
  while (word.load(std::memory_order_seq_cst) == value) word.wait(value, std::memory_order_seq_cst);
#endif
}

void wake_all(std::atomic<uint32_t>& word) {
#if defined(__linux__)
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
#else
  word.notify_all();
#endif
}

// How long a worker spins for the next loop before it sleeps, and a caller for the last running
// chunks before it sleeps: long enough to cover the gap between the many small loops of a training
// step, short enough not to take a busy machine's cores from other work (a sleeping thread is
// also the one the OS scheduler favours when it wakes).
std::chrono::nanoseconds spin_time() {
  static const std::chrono::nanoseconds t = [] {
    const char* s = std::getenv("MINIGRAD_SPIN_US");
    long us = 50;
    if (s && *s) {
      char* end = nullptr;
      long v = std::strtol(s, &end, 10);
      if (end && *end == '\0' && v >= 0 && v <= 1000000) us = v;
    }
    return std::chrono::nanoseconds(us * 1000);
  }();
  return t;
}

// Spins until done() holds or the spin time runs out; says which.
template <class F>
bool spin_until(F&& done) {
  const auto limit = spin_time();
  if (limit.count() == 0) return done();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0;; ++i) {
    if (done()) return true;
    cpu_relax();
    if ((i & 127) == 127 && std::chrono::steady_clock::now() - t0 > limit) return done();
  }
}

struct Job {
  detail::ChunkFn fn;
  void* ctx;
  int64_t chunks;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<uint32_t> finished{0};  // futex word: 1 once done == chunks
  std::atomic<bool> caller_sleeping{false};
  std::atomic<bool> failed{false};
  std::mutex error_mu;
  std::exception_ptr error;
};

// Claims and runs chunks of j until none is left.
void run_chunks(Job& j, int thread) {
  for (;;) {
    const int64_t c = j.next.fetch_add(1, std::memory_order_relaxed);
    if (c >= j.chunks) return;
    if (!j.failed.load(std::memory_order_relaxed)) {
      try {
        j.fn(j.ctx, c, thread);
      } catch (...) {
        std::lock_guard<std::mutex> lock(j.error_mu);
        if (!j.error) j.error = std::current_exception();
        j.failed.store(true, std::memory_order_relaxed);
      }
    }
    if (j.done.fetch_add(1, std::memory_order_acq_rel) + 1 == j.chunks) {
      j.finished.store(1, std::memory_order_seq_cst);
      if (j.caller_sleeping.load(std::memory_order_seq_cst)) wake_all(j.finished);
    }
  }
}

int default_threads() {
  if (const char* s = std::getenv("OMP_NUM_THREADS"); s && *s) {
    char* end = nullptr;
    long v = std::strtol(s, &end, 10);  // "4" or the first level of "4,2"
    if (v >= 1 && v <= 4096 && end && (*end == '\0' || *end == ',')) return int(v);
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
  unsigned h = std::thread::hardware_concurrency();
  return h ? int(h) : 1;
}

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads), pid_(getpid()) {}
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool() { stop_workers(); }

  int threads() const { return threads_; }
  pid_t pid() const { return pid_; }
  std::mutex& loop_mutex() { return loop_mu_; }

  // Runs one loop; the caller holds loop_mutex().
  void run(int64_t chunks, detail::ChunkFn fn, void* ctx) {
    if (workers_.empty()) start_workers();
    Job job;
    job.fn = fn;
    job.ctx = ctx;
    job.chunks = chunks;
    current_.store(&job, std::memory_order_seq_cst);
    seq_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) wake_all(seq_);
    {
      RegionScope region;
      run_chunks(job, 0);
    }
    // wait for the chunks other threads claimed
    if (!spin_until([&] { return job.finished.load(std::memory_order_acquire) != 0; })) {
      job.caller_sleeping.store(true, std::memory_order_seq_cst);
      wait_while_equal(job.finished, 0);
    }
    current_.store(nullptr, std::memory_order_seq_cst);
    while (active_.load(std::memory_order_seq_cst) != 0) {
      cpu_relax();
      sched_yield();
    }
    if (job.error) std::rethrow_exception(job.error);
  }

  void hold(bool held) { held_.store(held, std::memory_order_seq_cst); }

 private:
  void start_workers() {
    stop_.store(false);
    for (int t = 1; t < threads_; ++t) workers_.emplace_back([this, t] { worker(t); });
  }

  void stop_workers() {
    if (workers_.empty()) return;
    stop_.store(true, std::memory_order_seq_cst);
    seq_.fetch_add(1, std::memory_order_seq_cst);
    wake_all(seq_);
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  void worker(int t) {
    uint32_t seen = seq_.load(std::memory_order_seq_cst);
    for (;;) {
      // read after `seen`: a worker starting after stop_workers() bumped seq sees stop_ here
      if (stop_.load(std::memory_order_seq_cst)) return;
      if (!spin_until([&] { return seq_.load(std::memory_order_acquire) != seen; })) {
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wait_while_equal(seq_, seen);
        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      }
      seen = seq_.load(std::memory_order_acquire);
      if (stop_.load(std::memory_order_seq_cst)) return;
      if (held_.load(std::memory_order_seq_cst)) continue;
      active_.fetch_add(1, std::memory_order_seq_cst);
      if (Job* j = current_.load(std::memory_order_seq_cst)) {
        RegionScope region;
        run_chunks(*j, t);
      }
      active_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

  const int threads_;
  const pid_t pid_;
  std::mutex loop_mu_;
  std::vector<std::thread> workers_;
  std::atomic<Job*> current_{nullptr};
  std::atomic<uint32_t> seq_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<int> active_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> held_{false};
};

// The pool, replaced by set_num_threads and, in a child process after fork() (which copies no
// threads), by a fresh one; the old one is leaked there, as its threads do not exist to join.
std::mutex g_pool_mu;
Pool* g_pool = nullptr;
std::atomic<int> g_threads{0};

// The thread count, set to the default on first use; g_pool_mu held.
int threads_locked() {
  if (g_threads.load() == 0) g_threads.store(default_threads());
  return g_threads.load();
}

Pool& pool_locked() {
  if (!g_pool || g_pool->pid() != getpid()) g_pool = new Pool(threads_locked());
  return *g_pool;
}


}  // namespace

bool in_parallel_region() { return tls_in_region; }

void set_num_threads(int n) {
  MG_CHECK(n >= 1, "set_num_threads: expected a positive thread count, got ", n);
  MG_CHECK(!tls_in_region, "set_num_threads: called inside a parallel loop");
  std::lock_guard<std::mutex> lock(g_pool_mu);
  if (g_pool && g_pool->pid() == getpid()) {
    if (g_pool->threads() == n) return;
    g_pool->loop_mutex().lock();  // waits for a running loop; no new one starts while g_pool_mu is held
    g_pool->loop_mutex().unlock();
    delete g_pool;
  }
  g_pool = nullptr;
  g_threads.store(n);
}

namespace {
std::atomic<bool> g_deterministic{false};
}
void use_deterministic_algorithms(bool on) { g_deterministic = on; }
bool are_deterministic_algorithms_enabled() { return g_deterministic.load(std::memory_order_relaxed); }
long sum_pieces(int threads, long cap) {
  const long want = are_deterministic_algorithms_enabled() ? kDeterministicPieces : threads > 1 ? 2L * threads : 1;
  return std::max(1L, std::min(cap, want));
}

int get_num_threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  if (n != 0) return n;
  std::lock_guard<std::mutex> lock(g_pool_mu);
  return threads_locked();
}

namespace detail {

void parallel_run(int64_t chunks, ChunkFn fn, void* ctx) {
  if (chunks <= 0) return;
  auto inline_run = [&] {
    RegionScope region;
    for (int64_t c = 0; c < chunks; ++c) fn(ctx, c, 0);
  };
  if (chunks == 1 || tls_in_region || tls_inline || get_num_threads() <= 1) return inline_run();
  std::unique_lock<std::mutex> lock(g_pool_mu);
  Pool& p = pool_locked();
  std::unique_lock<std::mutex> loop(p.loop_mutex(), std::try_to_lock);
  lock.unlock();
  if (!loop.owns_lock()) return inline_run();  // another thread's loop has the pool
  p.run(chunks, fn, ctx);
}

void set_loops_inline(bool on) { tls_inline = on; }

void hold_workers(bool held) {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  pool_locked().hold(held);
}

}  // namespace detail

}  // namespace minigrad
