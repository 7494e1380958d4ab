// The exact (erf) GELU of the MLP hidden layer on the CPU (AVX2 + FMA, fp32): forward, and the backward pass
// fused into one sweep over the fc1 output (the GELU output for fc2's weight gradient, the hidden gradient in
// place and, on request, its column sums for fc1's bias gradient). Built on first use by
// swinkit/layers/native.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "avx2.h"

namespace {

constexpr int64_t GRAIN = 16384;     // elements per parallel task at least (a task below that costs more than it saves)
constexpr int64_t SUM_ROWS = 128;    // rows per partial column sum: fixed, so the sums do not depend on the threads

inline void check_float_cpu_contiguous(const at::Tensor& t, const char* what, const at::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() && t.sizes() == like.sizes(),
              "gelu: ", what, " must be a contiguous float32 CPU tensor of shape ", like.sizes(), ", got ",
              t.scalar_type(), " ", t.sizes(), t.is_contiguous() ? "" : " (not contiguous)");
}

// the last n < 8 elements through the same vector code (the same bits as a full vector)
inline __m256 load_tail(const float* p, int64_t n) {
  alignas(32) float buffer[8] = {};
  std::copy(p, p + n, buffer);
  return _mm256_load_ps(buffer);
}

inline void store_tail(float* p, __m256 v, int64_t n) {
  alignas(32) float buffer[8];
  _mm256_store_ps(buffer, v);
  std::copy(buffer, buffer + n, p);
}

}  // namespace

// out = gelu(x) elementwise; out may be x (in place)
void gelu_(at::Tensor& out, const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "gelu: x must be a contiguous float32 CPU tensor, got ", x.scalar_type(), " ", x.sizes());
  check_float_cpu_contiguous(out, "out", x);
  const float* xd = x.data_ptr<float>();
  float* od = out.data_ptr<float>();
  at::parallel_for(0, (x.numel() + 7) / 8, GRAIN / 8, [&](int64_t begin, int64_t end) {
    const int64_t stop = std::min(end * 8, x.numel());
    int64_t i = begin * 8;
    for (; i + 8 <= stop; i += 8) _mm256_storeu_ps(od + i, swinkit::gelu(_mm256_loadu_ps(xd + i)));
    if (i < stop) store_tail(od + i, swinkit::gelu(load_tail(xd + i, stop - i)), stop - i);
  });
}

// pre (n, C): the fc1 output; grad (n, C): the gradient of the GELU output, overwritten with the gradient of pre
// (grad * gelu'(pre)); hidden (n, C) receives gelu(pre) (the same bits as gelu_; hidden may be pre: each vector
// is read before it is written). Returns the column sums of the
// new grad, (C,), with sum_rows, else an empty tensor.
at::Tensor gelu_backward_(at::Tensor& grad, at::Tensor& hidden, const at::Tensor& pre, bool sum_rows) {
  TORCH_CHECK(pre.device().is_cpu() && pre.scalar_type() == at::kFloat && pre.dim() == 2 && pre.is_contiguous(),
              "gelu: pre must be a contiguous float32 CPU (rows, features) tensor, got ", pre.scalar_type(), " ",
              pre.sizes());
  check_float_cpu_contiguous(grad, "grad", pre);
  check_float_cpu_contiguous(hidden, "hidden", pre);
  const int64_t rows = pre.size(0), features = pre.size(1);
  const int64_t blocks = (rows + SUM_ROWS - 1) / SUM_ROWS;
  std::vector<float> partial(sum_rows ? blocks * features : 0, 0.f);  // one row of column sums per block
  const float* pd = pre.data_ptr<float>();
  float* gd = grad.data_ptr<float>();
  float* hd = hidden.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, GRAIN / std::max<int64_t>(1, SUM_ROWS * features));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      float* sums = sum_rows ? partial.data() + block * features : nullptr;
      for (int64_t r = block * SUM_ROWS; r < std::min(rows, (block + 1) * SUM_ROWS); ++r) {
        const float* p = pd + r * features;
        float* g = gd + r * features;
        float* h = hd + r * features;
        for (int64_t c = 0; c < features; c += 8) {
          const int64_t n = std::min<int64_t>(8, features - c);
          __m256 derivative;
          const __m256 x = n == 8 ? _mm256_loadu_ps(p + c) : load_tail(p + c, n);
          const __m256 value = swinkit::gelu_with_derivative(x, &derivative);
          const __m256 dx = _mm256_mul_ps(n == 8 ? _mm256_loadu_ps(g + c) : load_tail(g + c, n), derivative);
          if (n == 8) {
            _mm256_storeu_ps(h + c, value);
            _mm256_storeu_ps(g + c, dx);
            if (sums != nullptr) _mm256_storeu_ps(sums + c, _mm256_add_ps(_mm256_loadu_ps(sums + c), dx));
          } else {
            store_tail(h + c, value, n);
            store_tail(g + c, dx, n);
            if (sums != nullptr) store_tail(sums + c, _mm256_add_ps(load_tail(sums + c, n), dx), n);
          }
        }
      }
    }
  });
  if (!sum_rows) return at::empty({0}, pre.options());
  at::Tensor column_sums = at::zeros({features}, pre.options());
  float* sd = column_sums.data_ptr<float>();
  for (int64_t block = 0; block < blocks; ++block)
    for (int64_t c = 0; c < features; ++c) sd[c] += partial[block * features + c];
  return column_sums;
}

// the CPU implementations of the ops swinkit/layers/native.py declares (schemas and shape functions there)
TORCH_LIBRARY_IMPL(swinkit, CPU, m) {
  m.impl("gelu_", &gelu_);
  m.impl("gelu_backward_", &gelu_backward_);
}
