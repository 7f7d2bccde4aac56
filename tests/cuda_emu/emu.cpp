// The CUDA emulator's runtime (tests only; the contract is in include/cuda_runtime.h):
// allocations, the work queue with its capture into graphs, launch checks, and the block
// scheduler that runs each CUDA thread as a fiber (its own stack; switched by the x86-64
// routine below, a few instructions where ucontext's would make system calls and make
// AddressSanitizer clear the stack's shadow at every switch) with the rendezvous (barriers,
// warp exchanges) and the PTX operations of the tensor-core conv.
//
// Scheduling: a block's fibers run round-robin, each until it finishes or waits at a
// rendezvous; a pass over the block in which every live fiber only re-checked an unmet wait
// is a deadlock (e.g. __syncthreads in divergent code) and aborts with the kernel's name.
// AddressSanitizer is not told of the switches (its fiber annotations cost a third of the
// run time): its shadow checks do not need it, only its stack descriptions in reports.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#if !defined(__x86_64__)
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif

// vt_emu_switch(save, next): saves the callee-saved registers and the SSE/x87 control words
// on the current stack and the stack pointer in *save, then resumes the stack at next.
extern "C" void vt_emu_switch(void** save, void* next);
asm(R"(
  .text
  .globl vt_emu_switch
  .type vt_emu_switch, @function
vt_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size vt_emu_switch, .-vt_emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");

struct CUgraph_st {
  std::vector<std::function<void()>> work;
  bool thread_local_mode = false;
  bool invalidated = false;
};
struct CUgraphExec_st {
  std::shared_ptr<const std::vector<std::function<void()>>> work;
};
struct CUstream_st {
  CUgraph_st* capture = nullptr;  // the graph this stream's work goes to, while capturing
};
struct CUevent_st {
  CUgraph_st* captured_in = nullptr;  // recorded inside a capture: waiting on it joins it
  double ms = 0;                      // host clock when it ran
};

namespace vt_emu {

ThreadView* g_view = nullptr;

namespace {

using Work = std::function<void()>;

constexpr size_t kDefaultSmem = 48 << 10, kMaxSmem = 227 << 10;
constexpr size_t kStackBytes = 128 << 10;
constexpr size_t kTotalMemory = size_t(80) << 30;

std::recursive_mutex g_mu;                                         // the queue, the allocations, the streams
std::deque<Work> g_queue;                                          // issued work, not yet run, in issue order
using Allocations = std::map<uintptr_t, std::pair<size_t, bool>>;  // start -> (bytes, device?)
Allocations g_allocs;
size_t g_device_bytes = 0;
std::set<CUstream_st*> g_streams;
std::map<const void*, int> g_smem_limit;  // kernel -> cudaFuncAttributeMaxDynamicSharedMemorySize
thread_local cudaError_t t_last = cudaSuccess;
thread_local std::vector<CUgraph_st*> t_captures;  // this thread's captures in global/thread-local mode

cudaError_t ret(cudaError_t e) {
  if (e != cudaSuccess) t_last = e;
  return e;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void flush() {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  while (!g_queue.empty()) {
    Work w = std::move(g_queue.front());
    g_queue.pop_front();
    w();
  }
}

// A call CUDA refuses while this thread captures (a sync, a synchronous copy, the legacy
// stream): it invalidates the captures, as CUDA does.
bool refused_in_capture() {
  if (t_captures.empty()) return false;
  for (CUgraph_st* g : t_captures) g->invalidated = true;
  t_last = cudaErrorStreamCaptureImplicit;
  return true;
}

cudaError_t enqueue(cudaStream_t s, Work w) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  if (s && !g_streams.count(s)) return ret(cudaErrorInvalidResourceHandle);
  if (s && s->capture) {
    s->capture->work.push_back(std::move(w));
    return cudaSuccess;
  }
  if (!s && refused_in_capture()) return cudaErrorStreamCaptureImplicit;
  g_queue.push_back(std::move(w));
  return cudaSuccess;
}

// The allocation (device or pinned host) holding p, as (start, bytes); null for pageable
// host memory.
const Allocations::value_type* allocation_of(const void* p) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return nullptr;
  --it;
  return a < it->first + it->second.first ? &*it : nullptr;
}

// False when [p, p + n) starts in an allocation and runs past its end.
bool range_fits(const void* p, size_t n) {
  const auto* in = allocation_of(p);
  return !in || reinterpret_cast<uintptr_t>(p) + n <= in->first + in->second.first;
}

// ---- fibers ---------------------------------------------------------------------------

struct Copy {  // a pending cp.async
  unsigned char* dst;
  const unsigned char* src;  // null: zero fill
};

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while switched out
  char* stack = nullptr;
  ThreadView view;
  int lane = 0, warp = 0;
  bool done = false, spin = false;
  unsigned long rendezvous = 0;  // warp exchanges begun
  unsigned char slot[2][kSlotBytes];
  std::vector<Copy> open_group;
  std::deque<std::vector<Copy>> groups;  // committed, oldest first
};

struct WarpBarrier {
  int arrived = 0;
  unsigned long generation = 0;
};

struct Block {
  const char* kernel = "";
  std::vector<Fiber>* fibers = nullptr;
  int threads = 0, exited = 0, arrived = 0, sum = 0;
  unsigned long generation = 0;
  int result[2] = {0, 0};
  unsigned char* smem = nullptr;
  size_t smem_bytes = 0;
  std::vector<WarpBarrier> warps;
};

void* g_sched_sp = nullptr;
Fiber* g_cur = nullptr;
Block g_block;
unsigned long long g_block_serial = 0;  // blocks run so far: fresh_shared's clock
const Work* g_body = nullptr;

void to_scheduler() {
  vt_emu_switch(&g_cur->sp, g_sched_sp);
}

template <class Cond>
void wait_until(Cond cond) {
  bool first = true;
  while (!cond()) {
    g_cur->spin = !first;
    first = false;
    to_scheduler();
  }
}

void release(Block& b) {
  b.result[b.generation & 1] = b.sum;
  b.sum = 0;
  b.arrived = 0;
  ++b.generation;
}

void complete_copies(const std::vector<Copy>& group) {
  for (const Copy& c : group) {
    if (c.src)
      std::memcpy(c.dst, c.src, 16);
    else
      std::memset(c.dst, 0, 16);
  }
}

// The thread's whole life but its last switch, in a frame that returns: AddressSanitizer
// clears a frame's redzones when it returns, so the stack is clean for the slot's next thread.
__attribute__((noinline)) void run_thread() {
  (*g_body)();
  Fiber& f = *g_cur;
  for (const auto& g : f.groups) complete_copies(g);
  complete_copies(f.open_group);
  f.done = true;
  Block& b = g_block;
  ++b.exited;
  if (b.arrived > 0 && b.arrived + b.exited == b.threads) release(b);
}

void trampoline() {
  run_thread();
  to_scheduler();
}

// Makes f a fresh thread at the kernel's start.
void start(Fiber& f) {
  f.done = f.spin = false;
  f.rendezvous = 0;
  f.open_group.clear();
  f.groups.clear();
  // The frame vt_emu_switch pops (control words, six callee-saved registers) and
  // trampoline as its return address; trampoline is entered as if called (rsp = 8 mod 16).
  auto* top = reinterpret_cast<uint64_t*>(f.stack + kStackBytes);
  uint64_t* sp = top - 9;
  sp[0] = 0x1f80 | uint64_t(0x037f) << 32;  // MXCSR and x87 control word: the defaults
  for (int r = 1; r <= 6; ++r) sp[r] = 0;
  sp[7] = reinterpret_cast<uint64_t>(&trampoline);
  f.sp = sp;
}

// Runs f until it finishes or waits.
void resume(Fiber& f) {
  g_cur = &f;
  g_view = &f.view;
  f.spin = false;
  vt_emu_switch(&g_sched_sp, f.sp);
}

void run_block(std::vector<Fiber>& fibers, int threads) {
  for (int t = 0; t < threads; ++t) start(fibers[t]);
  for (;;) {
    bool progress = false, live = false;
    for (int t = 0; t < threads; ++t) {
      Fiber& f = fibers[t];
      if (f.done) continue;
      resume(f);
      if (f.done || !f.spin) progress = true;
      live = live || !f.done;
    }
    if (!live) break;
    if (!progress) {
      const uint3 bi = fibers[0].view.block_idx;
      std::fprintf(stderr,
                   "cuda_emu: deadlock in kernel %s, block (%u, %u, %u): threads wait at a barrier or warp "
                   "rendezvous that others never reach\n",
                   g_block.kernel, bi.x, bi.y, bi.z);
      std::abort();
    }
  }
  g_cur = nullptr;
  g_view = nullptr;
}

std::vector<Fiber>& fiber_pool(int threads) {
  static std::vector<Fiber> pool(1024);
  for (int t = 0; t < threads; ++t) {
    if (pool[t].stack) continue;
    void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) fail("cannot map a fiber stack");
    pool[t].stack = static_cast<char*>(p);
  }
  return pool;
}

void run_grid(const char* name, const Config& c, const Work& body) {
  const int threads = static_cast<int>(c.block.x * c.block.y * c.block.z);
  std::vector<Fiber>& fibers = fiber_pool(threads);
  // Dynamic shared memory of exactly the launch's size: AddressSanitizer sees an overrun.
  void* raw = nullptr;
  if (posix_memalign(&raw, 128, std::max<size_t>(c.smem, 1)) != 0) fail("cannot allocate shared memory");
  std::unique_ptr<unsigned char, decltype(&std::free)> smem(static_cast<unsigned char*>(raw), &std::free);
  g_body = &body;
  for (unsigned bz = 0; bz < c.grid.z; ++bz)
    for (unsigned by = 0; by < c.grid.y; ++by)
      for (unsigned bx = 0; bx < c.grid.x; ++bx) {
        g_block = Block{};
        ++g_block_serial;
        g_block.kernel = name;
        g_block.fibers = &fibers;
        g_block.threads = threads;
        g_block.smem = smem.get();
        g_block.smem_bytes = c.smem;
        g_block.warps.resize((threads + 31) / 32);
        std::memset(smem.get(), 0xff, c.smem);  // uninitialised shared memory reads as NaN
        for (int t = 0; t < threads; ++t) {
          Fiber& f = fibers[t];
          f.view.thread_idx = {t % c.block.x, t / c.block.x % c.block.y, t / (c.block.x * c.block.y)};
          f.view.block_idx = {bx, by, bz};
          f.view.block_dim = c.block;
          f.view.grid_dim = c.grid;
          f.lane = t % 32;
          f.warp = t / 32;
        }
        run_block(fibers, threads);
      }
  g_body = nullptr;
}

Fiber& self() {
  if (!g_cur) fail("a device function was called outside a kernel");
  return *g_cur;
}

unsigned char* shared_at(uint32_t addr, size_t bytes, const char* op) {
  if (addr % 16 != 0 || addr + bytes > g_block.smem_bytes) {
    char m[160];
    std::snprintf(m, sizeof m,
                  "%s: shared address %u (+%zu) misaligned or past the %zu bytes of dynamic shared memory",
                  op, addr, bytes, g_block.smem_bytes);
    fail(m);
  }
  return g_block.smem + addr;
}

}  // namespace

// ---- the kernel-side interface --------------------------------------------------------

void fail(const char* what) {
  if (g_cur) {
    const ThreadView& v = g_cur->view;
    std::fprintf(stderr, "cuda_emu: %s (kernel %s, block (%u, %u, %u), thread (%u, %u, %u))\n", what,
                 g_block.kernel, v.block_idx.x, v.block_idx.y, v.block_idx.z, v.thread_idx.x, v.thread_idx.y,
                 v.thread_idx.z);
  } else {
    std::fprintf(stderr, "cuda_emu: %s\n", what);
  }
  std::abort();
}

int sync_block(int pred) {
  self();
  Block& b = g_block;
  const unsigned long mine = b.generation;
  ++b.arrived;
  b.sum += pred != 0;
  if (b.arrived + b.exited == b.threads) release(b);
  wait_until([&] { return b.generation != mine; });
  return b.result[mine & 1];
}

void warp_exchange(unsigned mask, const void* in, int bytes, const unsigned char* (&lanes)[32]) {
  Fiber& me = self();
  if (!(mask >> me.lane & 1u)) fail("warp rendezvous: the calling lane is not in the mask");
  const unsigned long n = ++me.rendezvous;
  std::memcpy(me.slot[n & 1], in, bytes);
  Fiber* warp = g_block.fibers->data() + me.warp * 32;
  const int width = std::min(32, g_block.threads - me.warp * 32);  // lanes the warp has
  if (mask == 0xffffffffu && width == 32) {  // the whole warp: a generation count, as the block's
    WarpBarrier& w = g_block.warps[me.warp];
    const unsigned long mine = w.generation;
    if (++w.arrived == 32) w.arrived = 0, ++w.generation;
    wait_until([&] { return w.generation != mine; });
  } else {
    wait_until([&] {
      for (int j = 0; j < 32; ++j) {
        if (!(mask >> j & 1u)) continue;
        if (j >= width) fail("warp rendezvous: the mask names a lane the block does not have");
        if (warp[j].rendezvous >= n) continue;
        if (warp[j].done) fail("warp rendezvous: a lane of the mask exited first");
        return false;
      }
      return true;
    });
  }
  for (int j = 0; j < 32; ++j) lanes[j] = warp[j].slot[n & 1];  // lane j overwrites it at n + 2, after us
}

int lane_id() {
  return self().lane;
}

void* dynamic_shared() {
  self();
  return g_block.smem;
}

void fresh_shared(unsigned long long* seen, void* p, size_t n) {
  self();
  if (*seen == g_block_serial) return;
  std::memset(p, 0xff, n);  // as the dynamic shared memory: NaN for floats
  *seen = g_block_serial;
}

namespace ptx {

uint32_t shared_address(const void* p) {
  self();
  const auto a = reinterpret_cast<uintptr_t>(p), base = reinterpret_cast<uintptr_t>(g_block.smem);
  if (a < base || a > base + g_block.smem_bytes) fail("shared_address: not a dynamic shared memory address");
  return static_cast<uint32_t>(a - base);
}

void cp_async16(uint32_t dst, const void* src, bool zero_fill) {
  Fiber& me = self();
  if (!zero_fill && reinterpret_cast<uintptr_t>(src) % 16 != 0)
    fail("cp.async: global source not 16-byte aligned");
  me.open_group.push_back(
      {shared_at(dst, 16, "cp.async"), zero_fill ? nullptr : static_cast<const unsigned char*>(src)});
}

void cp_async_commit() {
  Fiber& me = self();
  me.groups.push_back(std::move(me.open_group));
  me.open_group.clear();
}

void cp_async_wait(int groups_left) {
  Fiber& me = self();
  while (static_cast<int>(me.groups.size()) > groups_left) {
    complete_copies(me.groups.front());
    me.groups.pop_front();
  }
}

void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr, bool trans) {
  shared_at(addr, 16, "ldmatrix");
  const unsigned char* lanes[32];
  warp_exchange(0xffffffffu, &addr, sizeof addr, lanes);
  const int lane = lane_id();
  for (int i = 0; i < 4; ++i) {  // matrix i: rows addressed by lanes 8 i .. 8 i + 7
    auto row = [&](int j) {
      uint32_t a;
      std::memcpy(&a, lanes[8 * i + j], sizeof a);
      return reinterpret_cast<const uint16_t*>(shared_at(a, 16, "ldmatrix"));
    };
    uint16_t lo, hi;
    if (!trans) {  // lane holds row lane / 4, columns 2 (lane % 4) and + 1
      lo = row(lane / 4)[2 * (lane % 4)];
      hi = row(lane / 4)[2 * (lane % 4) + 1];
    } else {  // the transpose: rows 2 (lane % 4) and + 1 of column lane / 4
      lo = row(2 * (lane % 4))[lane / 4];
      hi = row(2 * (lane % 4) + 1)[lane / 4];
    }
    r[i] = uint32_t(lo) | uint32_t(hi) << 16;
  }
}

void mma_16816_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
  const unsigned char* lanes[32];
  warp_exchange(0xffffffffu, mine, sizeof mine, lanes);
  auto reg = [&](int lane, int r) {
    uint32_t v;
    std::memcpy(&v, lanes[lane] + 4 * r, 4);
    return v;
  };
  auto lo = [](uint32_t v) { return __uint_as_float(v << 16); };  // the bf16 pair's floats
  auto hi = [](uint32_t v) { return __uint_as_float(v & 0xffff0000u); };
  // A (16 x 16, row-major): (row, k) in lane 4 (row % 8) + (k % 8) / 2, register (row >= 8) + 2 (k >= 8);
  // B (16 x 8, col-major): (k, n) in lane 4 n + (k % 8) / 2, register 4 + (k >= 8); even k in the low half.
  // This lane's d: rows group and group + 8, columns 2 quad and + 1.
  const int lane = lane_id(), group = lane / 4, quad = lane % 4;
  float a_rows[2][16], b_cols[2][16];
  for (int q = 0; q < 4; ++q)
    for (int h = 0; h < 2; ++h) {  // h: k < 8 or k >= 8
      for (int r = 0; r < 2; ++r) {
        const uint32_t v = reg(4 * group + q, r + 2 * h);
        a_rows[r][8 * h + 2 * q] = lo(v), a_rows[r][8 * h + 2 * q + 1] = hi(v);
      }
      for (int c = 0; c < 2; ++c) {
        const uint32_t v = reg(4 * (2 * quad + c) + q, 4 + h);
        b_cols[c][8 * h + 2 * q] = lo(v), b_cols[c][8 * h + 2 * q + 1] = hi(v);
      }
    }
  for (int i = 0; i < 4; ++i) {  // d[i]: row group + 8 (i / 2), column 2 quad + i % 2; k in order
    float acc = d[i];
    for (int k = 0; k < 16; ++k) acc += a_rows[i / 2][k] * b_cols[i % 2][k];
    d[i] = acc;
  }
}

}  // namespace ptx

void enqueue_kernel(const char* name, const void* key, const Config& c, std::function<void()> body) {
  const dim3 g = c.grid, b = c.block;
  const unsigned long long threads = 1ull * b.x * b.y * b.z;
  size_t limit = kDefaultSmem;
  {
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    auto it = key ? g_smem_limit.find(key) : g_smem_limit.end();
    if (it != g_smem_limit.end()) limit = std::max<size_t>(limit, it->second);
  }
  if (threads == 0 || threads > 1024 || b.z > 64 || g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu ||
      g.y > 65535 || g.z > 65535 || c.smem > limit) {
    std::fprintf(stderr,
                 "cuda_emu: launch of %s refused: grid (%u, %u, %u), block (%u, %u, %u), %zu bytes of "
                 "dynamic shared memory (limit %zu)\n",
                 name, g.x, g.y, g.z, b.x, b.y, b.z, c.smem, limit);
    ret(cudaErrorInvalidConfiguration);
    return;
  }
  enqueue(c.stream, [name, c, body = std::move(body)] { run_grid(name, c, body); });
}

}  // namespace vt_emu

// The sanitizers' settings for every program linked with the emulator, so that a test runs
// the same from CTest, its discovery, or a shell: no leak report at exit (tests keep static
// tensors and streams), stacks for UBSan's reports.
extern "C" const char* __asan_default_options() {
  return "detect_leaks=0:detect_stack_use_after_return=0";
}
extern "C" const char* __ubsan_default_options() {
  return "print_stacktrace=1";
}

// ---- the runtime API ------------------------------------------------------------------

using namespace vt_emu;

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error (cuda_emu)";
    case cudaErrorInvalidValue:
      return "invalid argument (cuda_emu)";
    case cudaErrorMemoryAllocation:
      return "out of memory (cuda_emu)";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument (cuda_emu)";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal (cuda_emu)";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle (cuda_emu)";
    case cudaErrorNotReady:
      return "device not ready (cuda_emu)";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing (cuda_emu)";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture (cuda_emu)";
    case cudaErrorStreamCaptureImplicit:
      return "operation would make the legacy stream depend on a capturing "
             "blocking stream (cuda_emu)";
  }
  return "unknown error (cuda_emu)";
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = t_last;
  t_last = cudaSuccess;
  return e;
}

cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  return ret(d == 0 ? cudaSuccess : cudaErrorInvalidDevice);
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (d != 0) return ret(cudaErrorInvalidDevice);
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "CUDA emulator (tests/cuda_emu, on the CPU)");
  p->totalGlobalMem = kTotalMemory;
  p->sharedMemPerBlock = kDefaultSmem;
  p->sharedMemPerBlockOptin = kMaxSmem;
  p->sharedMemPerMultiprocessor = 228 << 10;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 132;
  p->maxThreadsPerBlock = 1024;
  p->warpSize = 32;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d) {
  if (d != 0) return ret(cudaErrorInvalidDevice);
  *v = a == cudaDevAttrComputeCapabilityMajor ? 9 : 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  if (refused_in_capture()) return cudaErrorStreamCaptureImplicit;
  flush();
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  *total_b = kTotalMemory;
  *free_b = kTotalMemory - g_device_bytes;
  return cudaSuccess;
}

static cudaError_t allocate(void** p, size_t n, bool device) {
  if (device && refused_in_capture()) return cudaErrorStreamCaptureImplicit;
  *p = std::malloc(n == 0 ? 1 : n);
  if (!*p) return ret(cudaErrorMemoryAllocation);
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  g_allocs[reinterpret_cast<uintptr_t>(*p)] = {n, device};
  if (device) g_device_bytes += n;
  return cudaSuccess;
}
static cudaError_t release_allocation(void* p, bool device) {
  if (!p) return cudaSuccess;
  flush();  // cudaFree waits for the device
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  auto it = g_allocs.find(reinterpret_cast<uintptr_t>(p));
  if (it == g_allocs.end() || it->second.second != device) return ret(cudaErrorInvalidValue);
  if (device) g_device_bytes -= it->second.first;
  g_allocs.erase(it);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t n) {
  return allocate(p, n, true);
}
cudaError_t cudaFree(void* p) {
  return release_allocation(p, true);
}
cudaError_t cudaMallocHost(void** p, size_t n) {
  return allocate(p, n, false);
}
cudaError_t cudaFreeHost(void* p) {
  return release_allocation(p, false);
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind) {
  if (refused_in_capture()) return cudaErrorStreamCaptureImplicit;
  if (!range_fits(dst, n) || !range_fits(src, n)) return ret(cudaErrorInvalidValue);
  flush();
  std::memcpy(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind, cudaStream_t s) {
  if (!range_fits(dst, n) || !range_fits(src, n)) return ret(cudaErrorInvalidValue);
  const bool pageable_src = !allocation_of(src), pageable_dst = !allocation_of(dst);
  if ((pageable_src || pageable_dst) && s && s->capture) {
    s->capture->invalidated = true;
    return ret(cudaErrorStreamCaptureUnsupported);
  }
  if (pageable_dst) {  // to pageable memory: synchronous, as CUDA's
    flush();
    std::memcpy(dst, src, n);
    return cudaSuccess;
  }
  if (pageable_src) {  // from pageable memory: staged at the call, as CUDA's
    auto staged = std::make_shared<std::vector<unsigned char>>(static_cast<const unsigned char*>(src),
                                                               static_cast<const unsigned char*>(src) + n);
    return enqueue(s, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
  }
  return enqueue(s, [dst, src, n] { std::memcpy(dst, src, n); });
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
  return cudaMemsetAsync(p, v, n, nullptr);
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s) {
  if (!range_fits(p, n)) return ret(cudaErrorInvalidValue);
  return enqueue(s, [p, v, n] { std::memset(p, v, n); });
}
cudaError_t cudaMemset2DAsync(void* p, size_t pitch, int v, size_t width, size_t rows, cudaStream_t s) {
  if (width > pitch || (rows > 0 && !range_fits(p, pitch * (rows - 1) + width)))
    return ret(cudaErrorInvalidValue);
  return enqueue(s, [=] {
    for (size_t r = 0; r < rows; ++r) std::memset(static_cast<unsigned char*>(p) + r * pitch, v, width);
  });
}

cudaError_t cudaStreamCreate(cudaStream_t* s) {
  return cudaStreamCreateWithFlags(s, cudaStreamDefault);
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  *s = new CUstream_st;
  g_streams.insert(*s);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  if (!g_streams.erase(s)) return ret(cudaErrorInvalidResourceHandle);
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if ((s && s->capture) || refused_in_capture()) {
    if (s && s->capture) s->capture->invalidated = true;
    return ret(cudaErrorStreamCaptureUnsupported);
  }
  flush();
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  if (s && !g_streams.count(s)) return ret(cudaErrorInvalidResourceHandle);
  if (e->captured_in && !(s && s->capture)) {
    if (!s) return ret(cudaErrorStreamCaptureImplicit);
    s->capture = e->captured_in;  // joins the capture (fork)
  }
  return cudaSuccess;  // otherwise ordered already: all work runs in issue order
}
cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void* user) {
  return enqueue(s, [fn, user] { fn(user); });
}

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  return cudaEventCreate(e);
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  flush();
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  e->captured_in = s && s->capture ? s->capture : nullptr;
  return enqueue(s, [e] { e->ms = now_ms(); });
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (e->captured_in || refused_in_capture()) return ret(cudaErrorStreamCaptureUnsupported);
  flush();
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  return cudaEventSynchronize(e);
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  flush();
  *ms = static_cast<float>(end->ms - start->ms);
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  if (!s) return ret(cudaErrorStreamCaptureUnsupported);  // the legacy stream cannot be captured
  if (!g_streams.count(s)) return ret(cudaErrorInvalidResourceHandle);
  if (s->capture) return ret(cudaErrorInvalidValue);
  s->capture = new CUgraph_st;
  if (mode != cudaStreamCaptureModeRelaxed) {
    s->capture->thread_local_mode = true;
    t_captures.push_back(s->capture);
  }
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  *g = nullptr;
  if (!s || !s->capture) return ret(cudaErrorInvalidValue);
  CUgraph_st* graph = s->capture;
  for (CUstream_st* other : g_streams)
    if (other->capture == graph) other->capture = nullptr;
  t_captures.erase(std::remove(t_captures.begin(), t_captures.end(), graph), t_captures.end());
  if (graph->invalidated) {
    delete graph;
    return ret(cudaErrorStreamCaptureInvalidated);
  }
  *g = graph;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* e, cudaGraph_t g, unsigned long long) {
  *e = new CUgraphExec_st{std::make_shared<const std::vector<Work>>(g->work)};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s) {
  auto work = e->work;
  return enqueue(s, [work] {
    for (const Work& w : *work) w();
  });
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete g;
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute a, int value) {
  if (a != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || static_cast<size_t>(value) > kMaxSmem)
    return ret(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  g_smem_limit[kernel] = value;
  return cudaSuccess;
}
