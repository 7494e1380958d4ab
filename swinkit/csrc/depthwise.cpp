// Depthwise 3x3 convolution (stride 1, zero padding 1) on channels-last maps on the CPU (AVX2 + FMA, fp32), with
// the input added back (x + conv(x)) and the exact GELU applied on request, in one pass: Shunted's MLP
// (GELU(h + DWConv(h))) and its local enhancement of v (v + DWConv(v)). Pixel by pixel along each output row, all
// channels of a pixel in blocks of four vectors of eight (contiguous reads; a channel block walked along the row
// instead reads C floats apart and thrashes L1). Built on first use by swinkit/layers/native.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "avx2.h"

namespace {

constexpr int BLOCK = 4;  // channel vectors (of 8) per register block

// one output pixel's NV channel vectors: acc[v] = start[v] (+ the centre) + sum of the taps over the three input
// lines and the columns DW0 <= dw < DW1 (dw = 0, 1, 2 for w - 1, w, w + 1); `at` is the column w of each line
template <int NV, int DW0, int DW1>
__attribute__((always_inline)) inline void pixel(const float* const* at, const float* taps, int64_t C,
                                                 const __m256* start, bool residual, bool gelu, float* out) {
  __m256 acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = residual ? _mm256_add_ps(start[v], _mm256_loadu_ps(at[1] + 8 * v)) : start[v];
  for (int r = 0; r < 3; ++r)
    for (int dw = DW0; dw < DW1; ++dw)
      for (int v = 0; v < NV; ++v)
        acc[v] = _mm256_fmadd_ps(_mm256_loadu_ps(taps + (3 * r + dw) * C + 8 * v),
                                 _mm256_loadu_ps(at[r] + (dw - 1) * C + 8 * v), acc[v]);
  for (int v = 0; v < NV; ++v) _mm256_storeu_ps(out + 8 * v, gelu ? swinkit::gelu(acc[v]) : acc[v]);
}

// one output pixel's channels [0, C) (DW0, DW1 as for pixel): `at` the column w of each input line, out its output
template <int DW0, int DW1>
void pixel_channels(const float* const* at, const float* taps, const float* bias, int64_t C, bool residual, bool gelu,
                    float* out) {
  int64_t c = 0;
  const float* shifted[3];
  auto run = [&](auto vectors) {
    constexpr int NV = decltype(vectors)::value;
    __m256 start[NV];
    for (int v = 0; v < NV; ++v) start[v] = bias != nullptr ? _mm256_loadu_ps(bias + c + 8 * v) : _mm256_setzero_ps();
    for (int r = 0; r < 3; ++r) shifted[r] = at[r] + c;
    pixel<NV, DW0, DW1>(shifted, taps + c, C, start, residual, gelu, out + c);
  };
  for (; c + 8 * BLOCK <= C; c += 8 * BLOCK) run(std::integral_constant<int, BLOCK>{});
  for (; c < C; c += 8) run(std::integral_constant<int, 1>{});
}

}  // namespace

// x (B, H, W, C) contiguous, C % 8 == 0; weight (C, 1, 3, 3) contiguous; bias (C,) or None;
// out (B, H, W, C) contiguous, not overlapping x: out = act(bias + [x +] sum_taps w * x_shifted)
void depthwise_conv3x3_(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, bool residual, bool gelu) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4 && x.is_contiguous() &&
              x.size(3) % 8 == 0,
              "depthwise_conv3x3_: x must be a contiguous float32 CPU (batch, height, width, channels) tensor with "
              "channels a multiple of 8, got ", x.scalar_type(), " ", x.sizes());
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.is_contiguous() && weight.dim() == 4 &&
              weight.size(0) == C && weight.size(1) == 1 && weight.size(2) == 3 && weight.size(3) == 3,
              "depthwise_conv3x3_: weight must be a contiguous float32 (", C, ", 1, 3, 3) tensor, got ",
              weight.scalar_type(), " ", weight.sizes());
  TORCH_CHECK(out.device().is_cpu() && out.scalar_type() == at::kFloat && out.is_contiguous() &&
              out.sizes() == x.sizes(), "depthwise_conv3x3_: out must be a contiguous float32 CPU tensor of shape ",
              x.sizes(), ", got ", out.scalar_type(), " ", out.sizes());
  TORCH_CHECK(out.data_ptr() != x.data_ptr(), "depthwise_conv3x3_: out must not be x (the taps read x's neighbours)");
  const float* bd = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->is_contiguous() && bias->dim() == 1 && bias->size(0) == C,
                "depthwise_conv3x3_: bias must be a contiguous float32 (", C, ",) tensor, got ", bias->scalar_type(),
                " ", bias->sizes());
    bd = bias->data_ptr<float>();
  }
  if (x.numel() == 0) return;
  std::vector<float> taps(9 * C);  // taps[t * C + c] = weight[c, 0, t / 3, t % 3]: eight channels per load
  const float* wd = weight.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < 9; ++t) taps[t * C + c] = wd[c * 9 + t];
  const std::vector<float> zero_row(W * C, 0.f);  // the padding above the first row and below the last
  const float* xd = x.data_ptr<float>();
  float* od = out.data_ptr<float>();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t h = row % H;
      const float* lines[3] = {h > 0 ? xd + (row - 1) * W * C : zero_row.data(), xd + row * W * C,
                               h + 1 < H ? xd + (row + 1) * W * C : zero_row.data()};
      float* o = od + row * W * C;
      const float* at[3];
      auto column = [&](int64_t w) { for (int r = 0; r < 3; ++r) at[r] = lines[r] + w * C; };
      if (W == 1) {
        column(0);
        pixel_channels<1, 2>(at, taps.data(), bd, C, residual, gelu, o);
        continue;
      }
      column(0);
      pixel_channels<1, 3>(at, taps.data(), bd, C, residual, gelu, o);
      for (int64_t w = 1; w + 1 < W; ++w) {
        column(w);
        pixel_channels<0, 3>(at, taps.data(), bd, C, residual, gelu, o + w * C);
      }
      column(W - 1);
      pixel_channels<0, 2>(at, taps.data(), bd, C, residual, gelu, o + (W - 1) * C);
    }
  });
}

// the CPU implementation of the op swinkit/layers/native.py declares (schema and shape function there)
TORCH_LIBRARY_IMPL(swinkit, CPU, m) { m.impl("depthwise_conv3x3_", &depthwise_conv3x3_); }
