// AVX2 + FMA helpers shared by swinkit's CPU kernels (window_attention.cpp, linear.cpp, gelu.cpp, depthwise.cpp).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace swinkit {

// the sum of a vector's eight lanes
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}

// exp(x) for x <= 0; exactly 0 below -87.3 (and for -inf), ~1 ulp elsewhere (Cephes polynomial)
inline __m256 exp_nonpositive(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3365447f);
  const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
  x = _mm256_max_ps(x, lo);
  __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(e)), keep);
}
// erf(z): z P(z^2) / Q(z^2) on z clamped to [-4, 4] (beyond it erf rounds to +-1 in fp32), clamped to [-1, 1].
// P (degree 6) and Q (degree 5, Q(0) = 1) are a weighted least-squares rational fit of erf on [0, 4] made for
// swinkit: 2.5e-9 from erf in exact arithmetic, within 4e-7 of it in fp32 arithmetic (a few ulp near +-1).
inline __m256 erf_approx(__m256 z) {
  z = _mm256_min_ps(_mm256_max_ps(z, _mm256_set1_ps(-4.f)), _mm256_set1_ps(4.f));
  const __m256 u = _mm256_mul_ps(z, z);
  __m256 p = _mm256_set1_ps(-1.3360401840412095e-08f);
  p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(4.7151434496364719e-06f));
  p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(3.8086010692896266e-04f));
  p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(3.8564762336189941e-03f));
  p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(5.4354014738865211e-02f));
  p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(1.8527986566977969e-01f));
  p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(1.1283791680807629e+00f));
  __m256 q = _mm256_set1_ps(6.3403803703851805e-05f);
  q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(1.3106922007702589e-03f));
  q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(1.5479843637197123e-02f));
  q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(1.1401398417017999e-01f));
  q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(4.9753340338185370e-01f));
  q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(1.f));
  const __m256 r = _mm256_div_ps(_mm256_mul_ps(z, p), q);
  return _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-1.f)), _mm256_set1_ps(1.f));
}

// Phi(x) = (1 + erf(x / sqrt 2)) / 2, the standard normal CDF
inline __m256 normal_cdf(__m256 x) {
  return _mm256_fmadd_ps(erf_approx(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f))), _mm256_set1_ps(0.5f),
                         _mm256_set1_ps(0.5f));
}

// the exact (erf) GELU: x Phi(x)
inline __m256 gelu(__m256 x) { return _mm256_mul_ps(x, normal_cdf(x)); }

// gelu(x) (the same bits as gelu) and its derivative Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
inline __m256 gelu_with_derivative(__m256 x, __m256* derivative) {
  const __m256 cdf = normal_cdf(x);
  const __m256 pdf = _mm256_mul_ps(exp_nonpositive(_mm256_mul_ps(_mm256_mul_ps(x, x), _mm256_set1_ps(-0.5f))),
                                   _mm256_set1_ps(0.39894228040143268f));
  *derivative = _mm256_fmadd_ps(x, pdf, cdf);
  return _mm256_mul_ps(x, cdf);
}

// 8 x 8 transpose: rows src[r * src_stride .. + 8] -> dst[c * dst_stride + r]
inline void transpose8(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + src_stride),
         r2 = _mm256_loadu_ps(src + 2 * src_stride), r3 = _mm256_loadu_ps(src + 3 * src_stride),
         r4 = _mm256_loadu_ps(src + 4 * src_stride), r5 = _mm256_loadu_ps(src + 5 * src_stride),
         r6 = _mm256_loadu_ps(src + 6 * src_stride), r7 = _mm256_loadu_ps(src + 7 * src_stride);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
         t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
         t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
         u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
         u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
         u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + dst_stride, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * dst_stride, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * dst_stride, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * dst_stride, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * dst_stride, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * dst_stride, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * dst_stride, _mm256_permute2f128_ps(u3, u7, 0x31));
}

}  // namespace swinkit
