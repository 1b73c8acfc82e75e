// minigrad's thread pool (core/parallel.h): coverage, thread indices, loops that finish without
// the workers, nesting, exceptions, several calling threads, fork, and GEMMs split across threads.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "helpers.h"

using namespace mgtest;

namespace {

// Sets the thread count for a scope.
struct ThreadsScope {
  int saved = get_num_threads();
  explicit ThreadsScope(int n) { set_num_threads(n); }
  ~ThreadsScope() { set_num_threads(saved); }
};

}  // namespace

TEST_CASE("parallel: every chunk runs once, on a thread index below the thread count") {
  for (int nt : {1, 2, 3, 4, 7}) {
    CAPTURE(nt);
    ThreadsScope scope(nt);
    CHECK(get_num_threads() == nt);
    for (int64_t chunks : {int64_t(1), int64_t(2), int64_t(5), int64_t(1000)}) {
      CAPTURE(chunks);
      std::vector<std::atomic<int>> runs(static_cast<size_t>(chunks));
      std::atomic<int> bad_thread{0}, outside{0};
      parallel_chunks(chunks, [&](int64_t c, int t) {
        runs[size_t(c)].fetch_add(1);
        if (t < 0 || t >= nt) bad_thread.fetch_add(1);
        if (!in_parallel_region()) outside.fetch_add(1);
      });
      for (int64_t c = 0; c < chunks; ++c) CHECK_MESSAGE(runs[size_t(c)].load() == 1, "chunk ", c);
      CHECK(bad_thread.load() == 0);
      CHECK(outside.load() == 0);
      CHECK(!in_parallel_region());
    }
  }
}

TEST_CASE("parallel: parallel_for covers the range in pieces of at least the grain") {
  ThreadsScope scope(4);
  struct Case {
    int64_t begin, end, grain;
  };
  for (Case cs : {Case{0, 100000, 1000}, Case{5, 17, 1}, Case{-50, 50, 7}, Case{0, 1999, 1000}, Case{3, 3, 10},
                  Case{0, 10, 0}}) {
    CAPTURE(cs.begin);
    CAPTURE(cs.end);
    CAPTURE(cs.grain);
    std::mutex mu;
    std::vector<std::pair<int64_t, int64_t>> pieces;
    parallel_for(cs.begin, cs.end, cs.grain, [&](int64_t b, int64_t e) {
      std::lock_guard<std::mutex> lock(mu);
      pieces.emplace_back(b, e);
    });
    std::sort(pieces.begin(), pieces.end());
    if (cs.end <= cs.begin) {
      CHECK(pieces.empty());
      continue;
    }
    REQUIRE(!pieces.empty());
    CHECK(pieces.front().first == cs.begin);
    CHECK(pieces.back().second == cs.end);
    for (size_t i = 0; i + 1 < pieces.size(); ++i) CHECK(pieces[i].second == pieces[i + 1].first);
    for (auto [b, e] : pieces) CHECK(e - b >= std::min(std::max<int64_t>(cs.grain, 1), cs.end - cs.begin));
    if (cs.end - cs.begin < 2 * std::max<int64_t>(cs.grain, 1)) CHECK(pieces.size() == 1);  // inline
    CHECK(int64_t(pieces.size()) <= 4 * 4);
  }
}

TEST_CASE("parallel: a loop finishes on the calling thread when no worker ever starts") {
  // Stands for workers the OS does not schedule (a machine busy with other work): an OpenMP
  // region would wait for them at its closing barrier; minigrad's caller runs every chunk itself.
  ThreadsScope scope(4);
  detail::hold_workers(true);
  std::atomic<int> total{0}, off_caller{0};
  parallel_chunks(256, [&](int64_t c, int t) {
    total.fetch_add(int(c));
    if (t != 0) off_caller.fetch_add(1);
  });
  detail::hold_workers(false);
  CHECK(total.load() == 255 * 256 / 2);
  CHECK(off_caller.load() == 0);
  // and the workers take chunks again once released
  std::atomic<int> runs{0};
  parallel_chunks(64, [&](int64_t, int) { runs.fetch_add(1); });
  CHECK(runs.load() == 64);
}

TEST_CASE("parallel: loops inside a chunk run inline on that thread") {
  ThreadsScope scope(3);
  std::atomic<int> mismatched{0}, inner_total{0};
  parallel_chunks(12, [&](int64_t, int) {
    const auto self = std::this_thread::get_id();
    parallel_for(0, 100000, 10, [&](int64_t b, int64_t e) {
      if (std::this_thread::get_id() != self || !in_parallel_region()) mismatched.fetch_add(1);
      inner_total.fetch_add(int(e - b));
    });
  });
  CHECK(mismatched.load() == 0);
  CHECK(inner_total.load() == 12 * 100000);
}

TEST_CASE("parallel: an exception in a chunk reaches the caller and the pool keeps working") {
  ThreadsScope scope(4);
  auto failing = [](std::atomic<int>& started) {
    return [&started](int64_t c, int) {
      started.fetch_add(1);
      if (c == 3) throw std::runtime_error("chunk 3 failed");
    };
  };
  // with the workers held the caller runs the chunks in order: the ones after the failure are skipped
  detail::hold_workers(true);
  std::atomic<int> started{0};
  CHECK_THROWS_WITH_AS(parallel_chunks(1000, failing(started)), "chunk 3 failed", std::runtime_error);
  detail::hold_workers(false);
  CHECK(started.load() == 4);
  CHECK(!in_parallel_region());
  // with the workers running, whichever thread runs chunk 3
  std::atomic<int> started2{0};
  CHECK_THROWS_WITH_AS(parallel_chunks(1000, failing(started2)), "chunk 3 failed", std::runtime_error);
  CHECK(!in_parallel_region());
  std::atomic<int> runs{0};
  parallel_chunks(100, [&](int64_t, int) { runs.fetch_add(1); });
  CHECK(runs.load() == 100);
  // a minigrad error from inside an op's loop arrives whole
  CHECK_ERROR(parallel_for(0, 100000, 10, [](int64_t, int64_t) { MG_FAIL("my_op: bad piece"); }), "my_op: bad piece");
}

TEST_CASE("parallel: several user threads running loops at once each get every chunk") {
  ThreadsScope scope(2);
  constexpr int kUsers = 4, kLoops = 50;
  std::atomic<int> wrong{0};
  std::vector<std::thread> users;
  for (int u = 0; u < kUsers; ++u)
    users.emplace_back([&, u] {
      for (int l = 0; l < kLoops; ++l) {
        std::atomic<int64_t> sum{0};
        parallel_for(0, 50000, 100, [&](int64_t b, int64_t e) {
          int64_t s = 0;
          for (int64_t i = b; i < e; ++i) s += i + u;
          sum.fetch_add(s);
        });
        if (sum.load() != int64_t(50000) * 49999 / 2 + int64_t(50000) * u) wrong.fetch_add(1);
      }
    });
  for (auto& t : users) t.join();
  CHECK(wrong.load() == 0);
}

// (under ThreadSanitizer, run with TSAN_OPTIONS=die_after_fork=0: it refuses new threads after fork)
TEST_CASE("parallel: a child process after fork() runs parallel loops") {
  ThreadsScope scope(3);
  std::atomic<int> warm{0};
  parallel_chunks(16, [&](int64_t, int) { warm.fetch_add(1); });  // the parent's workers exist now
  REQUIRE(warm.load() == 16);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // the child has none of the parent's threads: the pool must start its own
    std::atomic<int> runs{0};
    parallel_chunks(64, [&](int64_t, int) { runs.fetch_add(1); });
    Tensor s = sum(ones({300, 300}));
    _exit(runs.load() == 64 && s.item<double>() == 90000.0 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("parallel: GEMMs split across threads match the naive product") {
  // OpenBLAS runs single-threaded; minigrad splits each GEMM into row or column blocks, or whole
  // matrices of a batch, on its own threads.
  struct Case {
    int64_t B, M, K, N;
    bool ta, tb;
  };
  for (int nt : {1, 2, 3, 5}) {
    ThreadsScope scope(nt);
    for (Case cs : {Case{1, 300, 70, 40, false, false}, Case{1, 33, 64, 301, false, true},
                    Case{1, 257, 130, 259, true, false}, Case{3, 64, 64, 64, true, true},
                    Case{9, 20, 50, 30, false, false}, Case{1, 40, 2000, 50, false, false},
                    Case{2, 40, 3000, 36, true, true}, Case{1, 37, 1500, 45, true, false}}) {
      CAPTURE(nt);
      CAPTURE(cs.B);
      CAPTURE(cs.M);
      CAPTURE(cs.N);
      CAPTURE(cs.ta);
      CAPTURE(cs.tb);
      Tensor a = cs.ta ? randn({cs.B, cs.K, cs.M}, kFloat64).transpose(1, 2) : randn({cs.B, cs.M, cs.K}, kFloat64);
      Tensor b = cs.tb ? randn({cs.B, cs.N, cs.K}, kFloat64).transpose(1, 2) : randn({cs.B, cs.K, cs.N}, kFloat64);
      Tensor c = matmul(a, b);
      REQUIRE(c.sizes() == Shape{cs.B, cs.M, cs.N});
      for (int64_t q = 0; q < cs.B; ++q) {
        const std::vector<double> want = ref_mm(vals(a.select(0, q).contiguous()), vals(b.select(0, q).contiguous()),
                                                  cs.M, cs.K, cs.N);
        check_close(vals(c.select(0, q)), want, 1e-12);
      }
      // the backend's GEMM with alpha and beta (beta = 1: a conv's weight gradient accumulating)
      Tensor out = randn({cs.B, cs.M, cs.N}, kFloat64), before = out.clone();
      backend_for(Device::cpu()).gemm(out, a, b, 0.5, 1.0);
      const std::vector<double> got = vals(out), prod = vals(c), old = vals(before);
      std::vector<double> want(got.size());
      for (size_t i = 0; i < want.size(); ++i) want[i] = 0.5 * prod[i] + old[i];
      check_close(got, want, 1e-12);
    }
  }
}
