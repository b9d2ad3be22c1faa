// runtime.cu — device selection, the library's stream and cuBLAS handle, memory
// and copies, the shared scratch buffer.
#include "common.cuh"

#include <stdio.h>
#include <stdlib.h>

static int g_dev = -1;
static cudaStream_t g_stream;
static cublasHandle_t g_blas;
static char g_name[512];
static void *g_scratch;
static size_t g_scratch_bytes;

void gn_cuda_die(const char *file, int line, const char *call, const char *msg) {
    fprintf(stderr, "guanaco: CUDA error at %s:%d: %s: %s\n", file, line, call, msg);
    fprintf(stderr, "---> HINT: a kernel fault shows up at the next synchronizing call; rerun with "
                    "CUDA_LAUNCH_BLOCKING=1 to see which launch failed\n");
    abort();
}

extern "C" int gn_cuda_device_count(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); // clear the sticky "no driver" error
        gn_err(GN_ERR_UNSUPPORTED, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        return 0;
    }
    if (n == 0) gn_err(GN_ERR_UNSUPPORTED, "cudaGetDeviceCount: 0 devices");
    return n;
}

extern "C" gn_status gn_cuda_init(int dev) {
    if (g_dev >= 0) {
        if (dev == g_dev) return GN_OK;
        return gn_err(GN_ERR_UNSUPPORTED, "CUDA: device %d requested, but the library already runs on device %d", dev,
                      g_dev);
    }
    int n = gn_cuda_device_count();
    if (n == 0) return gn_err_prefix(GN_ERR_UNSUPPORTED, "CUDA: no CUDA device found");
    if (dev < 0 || dev >= n) return gn_err(GN_ERR_ARG, "CUDA: device %d does not exist (%d found)", dev, n);
    cudaError_t e = cudaSetDevice(dev);
    if (e != cudaSuccess) return gn_err(GN_ERR_UNSUPPORTED, "CUDA: cannot use device %d: %s", dev, cudaGetErrorString(e));
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
    if (p.major < 8)
        return gn_err(GN_ERR_UNSUPPORTED, "CUDA: device %d (%s) is sm_%d%d; the kernels are built for sm_80 and sm_90 "
                      "(bf16 tensor cores)", dev, p.name, p.major, p.minor);
    snprintf(g_name, sizeof g_name, "%.200s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    CUDA_CHECK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&g_blas));
    CUBLAS_CHECK(cublasSetStream(g_blas, g_stream));
    // default math: SGEMM stays IEEE float32 (TF32 only under CUBLAS_TF32_TENSOR_OP_MATH, which we
    // never set); bf16 GemmEx uses the tensor cores with float32 accumulation
    CUBLAS_CHECK(cublasSetMathMode(g_blas, CUBLAS_DEFAULT_MATH));
    g_dev = dev;
    return GN_OK;
}

extern "C" const char *gn_cuda_device_name(void) { return g_dev >= 0 ? g_name : "(no CUDA device initialized)"; }

cudaStream_t gn_cuda_stream(void) { return g_stream; }
cublasHandle_t gn_cuda_blas(void) { return g_blas; }

extern "C" void *gn_cuda_malloc(size_t bytes, const char *what) {
    void *p = NULL;
    if (bytes == 0) bytes = 1;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        gn_err(GN_ERR_OOM, "CUDA: cannot allocate %.1f MiB of device memory for %s (%.1f MiB free): %s",
               (double)bytes / 1048576.0, what ? what : "?", (double)gn_cuda_mem_free() / 1048576.0,
               cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

extern "C" void gn_cuda_free(void *d) {
    if (d) CUDA_CHECK(cudaFree(d));
}

extern "C" size_t gn_cuda_mem_free(void) {
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) { (void)cudaGetLastError(); return 0; }
    return fr;
}

extern "C" void *gn_cuda_host_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMallocHost(&p, bytes ? bytes : 1) != cudaSuccess) { (void)cudaGetLastError(); return NULL; }
    return p;
}

extern "C" void gn_cuda_host_free(void *h) {
    if (h) CUDA_CHECK(cudaFreeHost(h));
}

extern "C" void gn_cuda_upload(void *d_dst, const void *h_src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(d_dst, h_src, bytes, cudaMemcpyHostToDevice, g_stream));
    // pageable sources are staged before the call returns; a pinned one may still be read: wait
    CUDA_CHECK(cudaStreamSynchronize(g_stream));
}

extern "C" void gn_cuda_download(void *h_dst, const void *d_src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(h_dst, d_src, bytes, cudaMemcpyDeviceToHost, g_stream));
    CUDA_CHECK(cudaStreamSynchronize(g_stream));
}

extern "C" void gn_cuda_copy(void *d_dst, const void *d_src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(d_dst, d_src, bytes, cudaMemcpyDeviceToDevice, g_stream));
}

extern "C" void gn_cuda_memset0(void *d, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemsetAsync(d, 0, bytes, g_stream));
}

extern "C" void gn_cuda_sync(void) { CUDA_CHECK(cudaStreamSynchronize(g_stream)); }

extern "C" void *gn_cuda_scratch(size_t bytes) {
    if (bytes <= g_scratch_bytes) return g_scratch;
    size_t want = bytes + bytes / 4; // some headroom: fewer regrowths
    if (g_scratch) {
        CUDA_CHECK(cudaStreamSynchronize(g_stream)); // earlier kernels may still read it
        CUDA_CHECK(cudaFree(g_scratch));
    }
    CUDA_CHECK(cudaMalloc(&g_scratch, want));
    g_scratch_bytes = want;
    return g_scratch;
}

extern "C" double gn_cuda_graph_time(void (*fn)(void *arg, int i), void *arg, int calls, int reps) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_CHECK(cudaStreamSynchronize(g_stream));
    CUDA_CHECK(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < calls; i++) fn(arg, i);
    CUDA_CHECK(cudaStreamEndCapture(g_stream, &graph));
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_CHECK(cudaGraphLaunch(exec, g_stream)); // warm-up
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    CUDA_CHECK(cudaEventRecord(a, g_stream));
    for (int r = 0; r < reps; r++) CUDA_CHECK(cudaGraphLaunch(exec, g_stream));
    CUDA_CHECK(cudaEventRecord(b, g_stream));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    CUDA_CHECK(cudaEventDestroy(a));
    CUDA_CHECK(cudaEventDestroy(b));
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
    return (double)ms / ((double)reps * (calls > 0 ? calls : 1));
}
