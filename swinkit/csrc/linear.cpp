// Linear layers on the CPU (AVX2 + FMA, fp32): out = x W^T + b, out = gelu(x W^T + b) (the MLP's fc1), or
// out += x W^T + b in place, for the token-major activations of swinkit's inference paths; x optionally
// layer-normalised on the way in (the Swin blocks' norm1 -> qkv and norm2 -> fc1). Six rows of x times sixteen output channels
// per register tile (12 accumulators), W packed sixteen channels at a time and x six rows at a time into
// cache-sized blocks, the bias, the GELU and the accumulation applied in registers. Work is split over output
// channels when rows are few (batch-1 late stages, where a general GEMM loses most) and over row blocks
// otherwise. Built on first use by swinkit/layers/native.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "avx2.h"

namespace {

using swinkit::transpose8;

constexpr int64_t MR = 6;         // rows of x per register tile
constexpr int64_t NR = 16;        // output channels per register tile (two vectors)
constexpr int64_t KC = 256;       // inputs per cache block: a packed W panel is KC x NR floats (16 KB, L1)
constexpr int64_t MC_MAX = 264;   // rows per cache block: a packed x block is at most MC_MAX x KC (264 KB, L2)

enum class Init { Out, Bias, OutAndBias };  // what a tile's accumulators start from

// W rows (channels) [0, cols) x inputs [0, kc) -> panel[k * NR + j], zero for j >= cols; prefetches `next`
// (the following panel's rows) into L2 on the way
inline void pack_weight(const float* w, int64_t ldw, int64_t cols, int64_t kc, float* panel, const float* next) {
  if (cols == NR && kc % 8 == 0) {
    for (int64_t k = 0; k < kc; k += 8) {
      if (next != nullptr && k % 16 == 0)
        for (int64_t j = 0; j < NR; ++j) _mm_prefetch(reinterpret_cast<const char*>(next + j * ldw + k), _MM_HINT_T1);
      transpose8(w + k, ldw, panel + k * NR, NR);
      transpose8(w + 8 * ldw + k, ldw, panel + k * NR + 8, NR);
    }
    return;
  }
  for (int64_t k = 0; k < kc; ++k)
    for (int64_t j = 0; j < NR; ++j) panel[k * NR + j] = j < cols ? w[j * ldw + k] : 0.f;
}

// LayerNorm of x's rows on the way into the product: per row mean and 1 / sqrt(var + eps) (row_mean, row_rstd,
// indexed by row), the affine weight and bias (indexed by input, null for none) from the current input block on
struct RowNorm {
  const float* row_mean = nullptr;
  const float* row_rstd = nullptr;
  const float* weight = nullptr;
  const float* bias = nullptr;

  float apply(float x, int64_t r, int64_t k) const {
    float y = (x - row_mean[r]) * row_rstd[r];
    if (weight != nullptr) y *= weight[k];
    return bias != nullptr ? y + bias[k] : y;
  }
  __m256 apply(__m256 x, int64_t r, int64_t k) const {
    __m256 y = _mm256_mul_ps(_mm256_sub_ps(x, _mm256_set1_ps(row_mean[r])), _mm256_set1_ps(row_rstd[r]));
    if (weight != nullptr) y = _mm256_mul_ps(y, _mm256_loadu_ps(weight + k));
    return bias != nullptr ? _mm256_add_ps(y, _mm256_loadu_ps(bias + k)) : y;
  }
};

// mean and 1 / sqrt(var + eps) of each of `rows` rows of K floats (ldx apart), two passes over each row
inline void row_statistics(const float* x, int64_t ldx, int64_t rows, int64_t K, float eps, float* mean,
                           float* rstd) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ldx;
    __m256 sum = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) sum = _mm256_add_ps(sum, _mm256_loadu_ps(row + k));
    float total = swinkit::hsum(sum);
    for (; k < K; ++k) total += row[k];
    const float mu = total / static_cast<float>(K);
    __m256 squares = _mm256_setzero_ps();
    const __m256 vmu = _mm256_set1_ps(mu);
    for (k = 0; k + 8 <= K; k += 8) {
      const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(row + k), vmu);
      squares = _mm256_fmadd_ps(d, d, squares);
    }
    float variance = swinkit::hsum(squares);
    for (; k < K; ++k) variance += (row[k] - mu) * (row[k] - mu);
    mean[r] = mu;
    rstd[r] = 1.f / std::sqrt(variance / static_cast<float>(K) + eps);
  }
}

// x rows [0, rows) x inputs [0, kc) -> block[k * MR + r], zero for r >= rows (block has 2 floats of slack),
// layer-normalised with `norm` (rows from 0, inputs from 0 here) where it is given
inline void pack_rows(const float* x, int64_t ldx, int64_t rows, int64_t kc, float* block, const RowNorm* norm) {
  int64_t k = 0;
  if (rows == MR) {
    alignas(32) float tile[8 * 8];
    for (; k + 8 <= kc; k += 8) {
      for (int64_t r = 0; r < MR; ++r) {
        const __m256 v = _mm256_loadu_ps(x + r * ldx + k);
        _mm256_store_ps(tile + r * 8, norm != nullptr ? norm->apply(v, r, k) : v);
      }
      _mm256_store_ps(tile + 48, _mm256_setzero_ps());
      _mm256_store_ps(tile + 56, _mm256_setzero_ps());
      transpose8(tile, 8, tile, 8);  // in place: every row is loaded before any is stored
      for (int64_t i = 0; i < 8; ++i) _mm256_storeu_ps(block + (k + i) * MR, _mm256_load_ps(tile + i * 8));
    }
  }
  for (; k < kc; ++k)
    for (int64_t r = 0; r < MR; ++r)
      block[k * MR + r] = r >= rows ? 0.f : norm != nullptr ? norm->apply(x[r * ldx + k], r, k) : x[r * ldx + k];
}

// R rows x NR channels: c[r * ldc + j] = init + sum_k block[k * MR + r] * panel[k * NR + j], through the GELU
// with `gelu` (on the last input block)
template <int R>
inline void tile(const float* block, const float* panel, int64_t kc, float* c, int64_t ldc, Init init,
                 const float* bias, bool gelu) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) {
    for (int h = 0; h < 2; ++h) {
      const __m256 b = bias != nullptr ? _mm256_loadu_ps(bias + 8 * h) : _mm256_setzero_ps();
      acc[r][h] = init == Init::Bias ? b : _mm256_loadu_ps(c + r * ldc + 8 * h);
      if (init == Init::OutAndBias) acc[r][h] = _mm256_add_ps(acc[r][h], b);
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(panel + k * NR), b1 = _mm256_load_ps(panel + k * NR + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(block + k * MR + r);
      acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
    }
  }
  if (gelu)
    for (int r = 0; r < R; ++r) {
      acc[r][0] = swinkit::gelu(acc[r][0]);
      acc[r][1] = swinkit::gelu(acc[r][1]);
    }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(c + r * ldc, acc[r][0]);
    _mm256_storeu_ps(c + r * ldc + 8, acc[r][1]);
  }
}

inline void tile_rows(int64_t rows, const float* block, const float* panel, int64_t kc, float* c, int64_t ldc,
                      Init init, const float* bias, bool gelu) {
  switch (rows) {
    case 6: tile<6>(block, panel, kc, c, ldc, init, bias, gelu); break;
    case 5: tile<5>(block, panel, kc, c, ldc, init, bias, gelu); break;
    case 4: tile<4>(block, panel, kc, c, ldc, init, bias, gelu); break;
    case 3: tile<3>(block, panel, kc, c, ldc, init, bias, gelu); break;
    case 2: tile<2>(block, panel, kc, c, ldc, init, bias, gelu); break;
    default: tile<1>(block, panel, kc, c, ldc, init, bias, gelu); break;
  }
}

}  // namespace

// out (M, N) = x (M, K) W^T (W: (N, K)) + bias, plus out itself with `accumulate`, through the exact GELU with
// `gelu` (not with `accumulate`); with `norm`, x's rows layer-normalised first (over K, norm_eps, the affine
// norm_weight and norm_bias (K,) where given). fp32 CPU, unit stride along the last axis of each; W contiguous;
// out must not overlap x or W.
void linear_(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
             bool accumulate, bool gelu, bool norm, const std::optional<at::Tensor>& norm_weight,
             const std::optional<at::Tensor>& norm_bias, double norm_eps) {
  TORCH_CHECK(!(accumulate && gelu), "linear_: gelu applies to the product itself, not to an accumulated sum");
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 2 && x.stride(1) == 1,
              "linear_: x must be a float32 CPU (rows, in_features) tensor with unit stride along in_features, got ",
              x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(weight.device().is_cpu() && weight.scalar_type() == at::kFloat && weight.dim() == 2 &&
              weight.is_contiguous() && weight.size(1) == x.size(1),
              "linear_: weight must be a contiguous float32 CPU (out_features, ", x.size(1), ") tensor, got ",
              weight.scalar_type(), " ", weight.sizes());
  TORCH_CHECK(out.device().is_cpu() && out.scalar_type() == at::kFloat && out.dim() == 2 &&
              out.size(0) == x.size(0) && out.size(1) == weight.size(0) && out.stride(1) == 1,
              "linear_: out must be a float32 CPU (", x.size(0), ", ", weight.size(0),
              ") tensor with unit stride along out_features, got ", out.scalar_type(), " ", out.sizes());
  const float* b = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->dim() == 1 && bias->size(0) == weight.size(0) &&
                bias->is_contiguous(), "linear_: bias must be a contiguous float32 (", weight.size(0),
                ",) tensor, got ", bias->scalar_type(), " ", bias->sizes());
    b = bias->data_ptr<float>();
  }
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  // the norm's affine parameters: null where there is no norm or no such parameter
  auto norm_parameter = [&](const std::optional<at::Tensor>& given, const char* name) -> const float* {
    if (!norm || !given.has_value()) return nullptr;
    TORCH_CHECK(given->scalar_type() == at::kFloat && given->dim() == 1 && given->size(0) == K &&
                given->is_contiguous(), "linear_: ", name, " must be a contiguous float32 (", K, ",) tensor, got ",
                given->scalar_type(), " ", given->sizes());
    return given->data_ptr<float>();
  };
  const float* norm_w = norm_parameter(norm_weight, "norm_weight");
  const float* norm_b = norm_parameter(norm_bias, "norm_bias");
  if (M == 0 || N == 0) return;
  TORCH_CHECK(K > 0, "linear_: in_features must be positive");
  const float* xd = x.data_ptr<float>();
  const float* wd = weight.data_ptr<float>();
  float* od = out.data_ptr<float>();
  const int64_t ldx = x.stride(0), ldo = out.stride(0);
  const int64_t panels = (N + NR - 1) / NR;
  const int64_t threads = at::get_num_threads();
  // row blocks of at most MC_MAX rows, their number a multiple of the threads (balanced); with fewer blocks
  // than threads, the output channels are split into one group per thread instead
  int64_t row_blocks = (M + MC_MAX - 1) / MC_MAX;
  if (row_blocks > 1) row_blocks = (row_blocks + threads - 1) / threads * threads;
  const int64_t block_rows = ((M + row_blocks - 1) / row_blocks + MR - 1) / MR * MR;
  row_blocks = (M + block_rows - 1) / block_rows;
  const int64_t groups = row_blocks >= threads ? 1 : std::min(panels, threads);
  const int64_t group_panels = (panels + groups - 1) / groups;
  at::parallel_for(0, row_blocks * groups, 1, [&](int64_t begin, int64_t end) {
    static thread_local std::vector<float> packed_rows;  // kept: a fresh 264 KB buffer would fault in every call
    packed_rows.resize(std::max<size_t>(packed_rows.size(), (block_rows + MR) * KC + 8));
    alignas(64) float panel[KC * NR];
    alignas(64) float edge[MR * NR];  // the last panel's tiles when N is not a multiple of NR
    alignas(64) float edge_bias[NR];
    static thread_local std::vector<float> statistics;  // the row block's means, then its 1 / sqrt(var + eps)
    for (int64_t task = begin; task < end; ++task) {
      const int64_t m0 = task / groups * block_rows, m1 = std::min(M, m0 + block_rows);
      const int64_t p0 = task % groups * group_panels, p1 = std::min(panels, p0 + group_panels);
      RowNorm row_norm;
      if (norm) {
        statistics.resize(std::max<size_t>(statistics.size(), 2 * block_rows));
        row_statistics(xd + m0 * ldx, ldx, m1 - m0, K, static_cast<float>(norm_eps), statistics.data(),
                       statistics.data() + block_rows);
      }
      for (int64_t k0 = 0; k0 < K; k0 += KC) {
        const int64_t kc = std::min(KC, K - k0);
        const Init init = k0 > 0 ? Init::Out : accumulate ? Init::OutAndBias : Init::Bias;
        const float* bias_k = k0 == 0 ? b : nullptr;
        const bool gelu_k = gelu && k0 + kc == K;
        for (int64_t m = m0; m < m1; m += MR) {
          if (norm)
            row_norm = {statistics.data() + (m - m0), statistics.data() + block_rows + (m - m0),
                        norm_w != nullptr ? norm_w + k0 : nullptr, norm_b != nullptr ? norm_b + k0 : nullptr};
          pack_rows(xd + m * ldx + k0, ldx, std::min(MR, m1 - m), kc, packed_rows.data() + (m - m0) * kc,
                    norm ? &row_norm : nullptr);
        }
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t n0 = p * NR, cols = std::min(NR, N - n0);
          const float* next = p + 1 < p1 && N - n0 >= 2 * NR ? wd + (n0 + NR) * K + k0 : nullptr;
          pack_weight(wd + n0 * K + k0, K, cols, kc, panel, next);
          for (int64_t m = m0; m < m1; m += MR) {
            const int64_t rows = std::min(MR, m1 - m);
            const float* block = packed_rows.data() + (m - m0) * kc;
            if (cols == NR) {
              tile_rows(rows, block, panel, kc, od + m * ldo + n0, ldo, init, bias_k ? bias_k + n0 : nullptr, gelu_k);
              continue;
            }
            for (int64_t j = 0; j < NR; ++j) edge_bias[j] = bias_k != nullptr && j < cols ? bias_k[n0 + j] : 0.f;
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t j = 0; j < NR; ++j) edge[r * NR + j] = j < cols ? od[(m + r) * ldo + n0 + j] : 0.f;
            tile_rows(rows, block, panel, kc, edge, NR, init, edge_bias, gelu_k);
            for (int64_t r = 0; r < rows; ++r) std::copy(edge + r * NR, edge + r * NR + cols, od + (m + r) * ldo + n0);
          }
        }
      }
    }
  });
}

// the CPU implementation of the op swinkit/layers/native.py declares (schema and shape function there)
TORCH_LIBRARY_IMPL(swinkit, CPU, m) { m.impl("linear_", &linear_); }
