// The emulator's cublasGemmEx (include/cublas_v2.h): a plain triple loop in fp32 over bf16
// inputs, queued on the handle's stream through cudaLaunchHostFunc so that it runs in issue
// order with the emulated kernels (and is recorded by a stream capture).
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

namespace {

struct GemmCall {
  bool ta, tb;
  int m, n, k, lda, ldb, ldc;
  float alpha, beta;
  const __nv_bfloat16 *a, *b;
  void* c;
  bool c_f32;
};

void run_gemm(void* p) {
  const GemmCall* g = static_cast<const GemmCall*>(p);
  for (int j = 0; j < g->n; ++j)
    for (int i = 0; i < g->m; ++i) {
      float acc = 0;
      for (int l = 0; l < g->k; ++l) {
        const float x =
            __bfloat162float(g->ta ? g->a[l + int64_t(i) * g->lda] : g->a[i + int64_t(l) * g->lda]);
        const float y =
            __bfloat162float(g->tb ? g->b[j + int64_t(l) * g->ldb] : g->b[l + int64_t(j) * g->ldb]);
        acc += x * y;
      }
      const int64_t at = i + int64_t(j) * g->ldc;
      if (g->c_f32) {
        float* c = static_cast<float*>(g->c);
        c[at] = g->alpha * acc + (g->beta != 0 ? g->beta * c[at] : 0.f);
      } else {
        __nv_bfloat16* c = static_cast<__nv_bfloat16*>(g->c);
        c[at] =
            __float2bfloat16_rn(g->alpha * acc + (g->beta != 0 ? g->beta * __bfloat162float(c[at]) : 0.f));
      }
    }
}

}  // namespace

// The handle keeps each call's arguments until it is destroyed: a captured call runs at
// every replay of its graph.
struct cublasContext {
  cudaStream_t stream = nullptr;
  std::vector<std::unique_ptr<GemmCall>> calls;
};

cublasStatus_t cublasCreate(cublasHandle_t* h) {
  if (!h) return CUBLAS_STATUS_INVALID_VALUE;
  *h = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusString(cublasStatus_t st) {
  switch (st) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

// cuBLAS's checks: sizes >= 0, leading dimensions at least the stored rows, the types this
// emulation (and the benchmark) uses.
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* a, cudaDataType at, int lda, const void* b,
                            cudaDataType bt, int ldb, const void* beta, void* c, cudaDataType ct, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  const bool tra = ta == CUBLAS_OP_T, trb = tb == CUBLAS_OP_T;
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, tra ? k : m) || ldb < std::max(1, trb ? n : k) ||
      ldc < std::max(1, m) || !alpha || !beta)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (at != CUDA_R_16BF || bt != CUDA_R_16BF || (ct != CUDA_R_16BF && ct != CUDA_R_32F) ||
      compute != CUBLAS_COMPUTE_32F)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  h->calls.push_back(std::make_unique<GemmCall>(GemmCall{
      tra, trb, m, n, k, lda, ldb, ldc, *static_cast<const float*>(alpha), *static_cast<const float*>(beta),
      static_cast<const __nv_bfloat16*>(a), static_cast<const __nv_bfloat16*>(b), c, ct == CUDA_R_32F}));
  return cudaLaunchHostFunc(h->stream, run_gemm, h->calls.back().get()) == cudaSuccess
             ? CUBLAS_STATUS_SUCCESS
             : CUBLAS_STATUS_EXECUTION_FAILED;
}
