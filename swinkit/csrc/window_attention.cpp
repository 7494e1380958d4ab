// Window attention on the CPU (AVX2 + FMA, fp32): softmax(scale * q k^T + bias) v for every (window, head),
// one task per pair (or per block of query rows, where pairs are few), all of it in cache: K^T (8 x 8
// register transposes) and V packed once per pair, logits six query rows at a time with their row maxima,
// exponentials by a polynomial (~1 ulp), the normalisation applied to the output rows. Swin and Video Swin
// windows (N = M, a bias) and Shunted attention (N queries, M aggregated keys, no bias) alike. Built on
// first use by swinkit/layers/native.py.
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

using swinkit::exp_nonpositive;
using swinkit::hsum;
using swinkit::transpose8;

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps(s, s, 1)));
}

constexpr int ROWS = 6;  // query rows per block: 6 x 16 logits tiles, two 3 x 32 output tiles

// the first `valid` (1-8) lanes set: the keys of a row's last vector
inline __m256i first_lanes(int64_t valid) {
  alignas(32) int lanes[8];
  for (int l = 0; l < 8; ++l) lanes[l] = l < valid ? -1 : 0;
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes));
}

// row[j] = exp(row[j] - max) in place for j < mp (mp % 8 == 0); returns their sum
inline float exponentiate_row(float* row, int64_t mp, float max) {
  const __m256 mb = _mm256_set1_ps(max);
  __m256 sum = _mm256_setzero_ps();
  for (int64_t j = 0; j < mp; j += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(row + j), mb));
    _mm256_storeu_ps(row + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  return hsum(sum);
}

// ROWS query rows . 8 * V columns of K^T (rows mp apart) over d < hd -> acc[2 * r + c]
template <int V>
__attribute__((always_inline)) inline void logits_tile(const float* const* q_rows, const float* kt, int64_t mp,
                                                        int64_t hd, __m256* acc) {
  __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00,
         a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
  const float *r0 = q_rows[0], *r1 = q_rows[1], *r2 = q_rows[2], *r3 = q_rows[3], *r4 = q_rows[4], *r5 = q_rows[5];
  for (int64_t d = 0; d < hd; ++d) {
    const __m256 k0 = _mm256_loadu_ps(kt + d * mp);
    const __m256 k1 = V == 2 ? _mm256_loadu_ps(kt + d * mp + 8) : k0;
    __m256 b;
#define ROW(i) b = _mm256_broadcast_ss(r##i + d); a##i##0 = _mm256_fmadd_ps(b, k0, a##i##0); \
    if (V == 2) a##i##1 = _mm256_fmadd_ps(b, k1, a##i##1);
    ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
  }
  acc[0] = a00; acc[1] = a01; acc[2] = a10; acc[3] = a11; acc[4] = a20; acc[5] = a21;
  acc[6] = a30; acc[7] = a31; acc[8] = a40; acc[9] = a41; acc[10] = a50; acc[11] = a51;
}

// 3 rows of numerators p . V (rows hd apart) for 8 * W columns -> acc[4 * r + c]
template <int W>
__attribute__((always_inline)) inline void output_tile(const float* p0, const float* p1, const float* p2,
                                                        const float* vp, int64_t hd, int64_t mp, __m256* acc) {
  __m256 a[3][4];
  for (int r = 0; r < 3; ++r) for (int c = 0; c < 4; ++c) a[r][c] = _mm256_setzero_ps();
  for (int64_t j = 0; j < mp; ++j) {
    const float* vr = vp + j * hd;
    const __m256 b0 = _mm256_broadcast_ss(p0 + j), b1 = _mm256_broadcast_ss(p1 + j), b2 = _mm256_broadcast_ss(p2 + j);
    _Pragma("GCC unroll 4") for (int c = 0; c < W; ++c) {
      const __m256 vv = _mm256_loadu_ps(vr + 8 * c);
      a[0][c] = _mm256_fmadd_ps(b0, vv, a[0][c]);
      a[1][c] = _mm256_fmadd_ps(b1, vv, a[1][c]);
      a[2][c] = _mm256_fmadd_ps(b2, vv, a[2][c]);
    }
  }
  _Pragma("GCC unroll 4") for (int c = 0; c < W; ++c) { acc[c] = a[0][c]; acc[4 + c] = a[1][c]; acc[8 + c] = a[2][c]; }
}

// scratch floats one task needs: K^T (hd x mp), V (mp x hd), one block's logits (ROWS x mp)
inline int64_t scratch_floats(int64_t m, int64_t hd) {
  const int64_t mp = (m + 7) / 8 * 8;
  return 2 * hd * mp + ROWS * mp;
}

// K^T (hd, mp) and V (mp, hd) of m keys (rows kv_stride apart), zero-padded to mp = m rounded up to 8
inline void pack_keys(const float* k, const float* v, int64_t kv_stride, int64_t m, int64_t hd, float* kt,
                      float* vp) {
  const int64_t mp = (m + 7) / 8 * 8;
  int64_t j = 0;
  for (; j + 8 <= m; j += 8)
    for (int64_t d = 0; d < hd; d += 8) transpose8(k + j * kv_stride + d, kv_stride, kt + d * mp + j, mp);
  for (; j < m; ++j)
    for (int64_t d = 0; d < hd; ++d) kt[d * mp + j] = k[j * kv_stride + d];
  for (int64_t d = 0; d < hd; ++d) std::fill(kt + d * mp + m, kt + (d + 1) * mp, 0.f);
  for (j = 0; j < m; ++j) std::copy(v + j * kv_stride, v + j * kv_stride + hd, vp + j * hd);
  std::fill(vp + m * hd, vp + mp * hd, 0.f);
}

// softmax(scale q k^T + bias) v for n query rows (q_stride apart) against m packed keys (pack_keys);
// bias: n rows of m floats (or null); out: n rows of hd floats, out_stride apart; hd % 8 == 0.
inline void attend(const float* q, int64_t q_stride, const float* kt, const float* vp, const float* bias,
                   float* out, int64_t out_stride, int64_t n, int64_t m, int64_t hd, float scale, float* s) {
  const int64_t mp = (m + 7) / 8 * 8, mvec = mp / 8;
  const __m256i tail_mask = first_lanes(m - (mvec - 1) * 8);  // valid lanes of the last key vector
  const __m256 vscale = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-INFINITY);
  __m256 acc[12];
  for (int64_t i0 = 0; i0 < n; i0 += ROWS) {
    const int64_t rows = std::min<int64_t>(ROWS, n - i0);
    const float* q_rows[ROWS];
    __m256 row_max[ROWS];
    for (int r = 0; r < ROWS; ++r) {
      q_rows[r] = q + (i0 + std::min<int64_t>(r, rows - 1)) * q_stride;
      row_max[r] = ninf;
    }
    // logits + bias into s, with each row's running maximum; lanes past m are -inf
    auto store = [&](int64_t jv, int c) {
      const bool last = jv == mvec - 1;
      _Pragma("GCC unroll 6") for (int r = 0; r < ROWS; ++r) {
        __m256 x = _mm256_mul_ps(acc[2 * r + c], vscale);
        if (bias != nullptr) {
          const float* b = bias + (i0 + std::min<int64_t>(r, rows - 1)) * m + jv * 8;
          x = _mm256_add_ps(x, last ? _mm256_maskload_ps(b, tail_mask) : _mm256_loadu_ps(b));
        }
        if (last) x = _mm256_blendv_ps(ninf, x, _mm256_castsi256_ps(tail_mask));
        row_max[r] = _mm256_max_ps(row_max[r], x);
        _mm256_storeu_ps(s + r * mp + jv * 8, x);
      }
    };
    int64_t jv = 0;
    for (; jv + 2 <= mvec; jv += 2) {
      logits_tile<2>(q_rows, kt + jv * 8, mp, hd, acc);
      store(jv, 0); store(jv + 1, 1);
    }
    if (jv < mvec) { logits_tile<1>(q_rows, kt + jv * 8, mp, hd, acc); store(jv, 0); }
    float inv_sum[ROWS];
    for (int r = 0; r < ROWS; ++r) inv_sum[r] = 1.f / exponentiate_row(s + r * mp, mp, hmax(row_max[r]));
    for (int half = 0; half < 2; ++half) {  // out rows = (numerators . V) / sum, three rows at a time
      const int r0 = 3 * half;
      if (r0 >= rows) break;
      const float* p0 = s + r0 * mp;
      for (int64_t d0 = 0; d0 < hd; d0 += 32) {
        const int width = (int)std::min<int64_t>(4, (hd - d0) / 8);
        switch (width) {
          case 4: output_tile<4>(p0, p0 + mp, p0 + 2 * mp, vp + d0, hd, mp, acc); break;
          case 3: output_tile<3>(p0, p0 + mp, p0 + 2 * mp, vp + d0, hd, mp, acc); break;
          case 2: output_tile<2>(p0, p0 + mp, p0 + 2 * mp, vp + d0, hd, mp, acc); break;
          default: output_tile<1>(p0, p0 + mp, p0 + 2 * mp, vp + d0, hd, mp, acc); break;
        }
        for (int r = 0; r < 3 && r0 + r < rows; ++r) {
          float* o = out + (i0 + r0 + r) * out_stride + d0;
          const __m256 is = _mm256_set1_ps(inv_sum[r0 + r]);
          for (int c = 0; c < width; ++c) _mm256_storeu_ps(o + 8 * c, _mm256_mul_ps(acc[4 * r + c], is));
        }
      }
    }
  }
}

// ---- backward: the gradients of softmax(scale q k^T + bias) v, the attention weights recomputed ----

// out (n x mp, rows mp apart) = a (n rows of hd, a_stride apart) . bt (hd x mp, rows mp apart); mp % 8 == 0
inline void row_products(const float* a, int64_t a_stride, int64_t n, const float* bt, int64_t mp, int64_t hd,
                         float* out) {
  __m256 acc[12];
  for (int64_t i0 = 0; i0 < n; i0 += ROWS) {
    const int64_t rows = std::min<int64_t>(ROWS, n - i0);
    const float* a_rows[ROWS];
    for (int r = 0; r < ROWS; ++r) a_rows[r] = a + (i0 + std::min<int64_t>(r, rows - 1)) * a_stride;
    for (int64_t j = 0; j < mp; j += 16) {
      const bool pair = j + 16 <= mp;
      if (pair) logits_tile<2>(a_rows, bt + j, mp, hd, acc); else logits_tile<1>(a_rows, bt + j, mp, hd, acc);
      for (int r = 0; r < rows; ++r) {
        _mm256_storeu_ps(out + (i0 + r) * mp + j, acc[2 * r]);
        if (pair) _mm256_storeu_ps(out + (i0 + r) * mp + j + 8, acc[2 * r + 1]);
      }
    }
  }
}

// out rows (n of hd, out_stride apart) = scale * p (n rows of len, p_stride apart) . b (len x hd, rows hd apart)
inline void weighted_rows(const float* p, int64_t p_stride, int64_t n, const float* b, int64_t len, int64_t hd,
                          float scale, float* out, int64_t out_stride) {
  __m256 acc[12];
  const __m256 vscale = _mm256_set1_ps(scale);
  for (int64_t i0 = 0; i0 < n; i0 += 3) {
    const int64_t rows = std::min<int64_t>(3, n - i0);
    const float* p0 = p + i0 * p_stride;
    const float* p1 = p + (i0 + std::min<int64_t>(1, rows - 1)) * p_stride;
    const float* p2 = p + (i0 + std::min<int64_t>(2, rows - 1)) * p_stride;
    for (int64_t d0 = 0; d0 < hd; d0 += 32) {
      const int width = (int)std::min<int64_t>(4, (hd - d0) / 8);
      switch (width) {
        case 4: output_tile<4>(p0, p1, p2, b + d0, hd, len, acc); break;
        case 3: output_tile<3>(p0, p1, p2, b + d0, hd, len, acc); break;
        case 2: output_tile<2>(p0, p1, p2, b + d0, hd, len, acc); break;
        default: output_tile<1>(p0, p1, p2, b + d0, hd, len, acc); break;
      }
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < width; ++c)
          _mm256_storeu_ps(out + (i0 + r) * out_stride + d0 + 8 * c, _mm256_mul_ps(acc[4 * r + c], vscale));
    }
  }
}

// src (rows x cols, rows % 8 == cols % 8 == 0, src_stride apart) -> dst (cols x rows, dst_stride apart)
inline void transpose_matrix(const float* src, int64_t src_stride, int64_t rows, int64_t cols, float* dst,
                             int64_t dst_stride) {
  for (int64_t i = 0; i < rows; i += 8)
    for (int64_t j = 0; j < cols; j += 8) transpose8(src + i * src_stride + j, src_stride, dst + j * dst_stride + i, dst_stride);
}

// n rows of hd (stride apart) -> packed (np x hd), zero rows from n to np
inline void pack_rows(const float* x, int64_t stride, int64_t n, int64_t np, int64_t hd, float* packed) {
  for (int64_t i = 0; i < n; ++i) std::copy(x + i * stride, x + i * stride + hd, packed + i * hd);
  std::fill(packed + n * hd, packed + np * hd, 0.f);
}

// floats one backward task needs: K^T, V^T (hd x np each), K, Q, dO (np x hd each), P, dS (np x np each) and
// one transposed (np x np) matrix, for n tokens rounded up to np
inline int64_t backward_scratch_floats(int64_t n, int64_t hd) {
  const int64_t np = (n + 7) / 8 * 8;
  return 5 * np * hd + 3 * np * np;
}

// one (window, head): from q, k, v and dO (n rows of hd each, their strides apart) and bias (n x n, or null),
// writes dq, dk, dv (n rows of hd, their strides apart) and adds dS = d(logits) into grad_bias (n x n, or null)
void attend_backward(const float* q, int64_t q_stride, const float* k, const float* v, int64_t kv_stride,
                     const float* grad_out, int64_t go_stride, const float* bias, float* grad_q, float* grad_k,
                     float* grad_v, int64_t grad_stride, float* grad_bias, int64_t n, int64_t hd, float scale,
                     float* scratch) {
  const int64_t np = (n + 7) / 8 * 8;
  float* kt = scratch;             // K^T (hd x np)
  float* vt = kt + hd * np;        // V^T (hd x np)
  float* kp = vt + hd * np;        // K (np x hd)
  float* qp = kp + np * hd;        // Q (np x hd)
  float* gp = qp + np * hd;        // dO (np x hd)
  float* p = gp + np * hd;         // P (np x np), the attention weights; rows >= n zero
  float* ds = p + np * np;         // dP, then dS in its place (np x np); rows >= n zero
  float* t = ds + np * np;         // P^T, then dS^T (np x np)
  pack_keys(v, k, kv_stride, n, hd, vt, kp);  // V^T, and K in the layout pack_keys gives V
  pack_keys(k, v, kv_stride, n, hd, kt, qp);  // K^T (qp is overwritten next)
  pack_rows(q, q_stride, n, np, hd, qp);
  pack_rows(grad_out, go_stride, n, np, hd, gp);
  // P = softmax(scale q k^T + bias): lanes past n are exp(-inf) = 0
  row_products(q, q_stride, n, kt, np, hd, p);
  const __m256i tail = first_lanes(n - (np - 8));  // valid lanes of the last vector
  const __m256 vscale = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; ++i) {
    float* pr = p + i * np;
    __m256 row_max = ninf;
    for (int64_t j = 0; j < np; j += 8) {
      const bool last = j + 8 == np;
      __m256 x = _mm256_mul_ps(_mm256_loadu_ps(pr + j), vscale);
      if (bias != nullptr) {
        const float* b = bias + i * n + j;
        x = _mm256_add_ps(x, last ? _mm256_maskload_ps(b, tail) : _mm256_loadu_ps(b));
      }
      if (last) x = _mm256_blendv_ps(ninf, x, _mm256_castsi256_ps(tail));
      row_max = _mm256_max_ps(row_max, x);
      _mm256_storeu_ps(pr + j, x);
    }
    const __m256 inv = _mm256_set1_ps(1.f / exponentiate_row(pr, np, hmax(row_max)));
    for (int64_t j = 0; j < np; j += 8) _mm256_storeu_ps(pr + j, _mm256_mul_ps(_mm256_loadu_ps(pr + j), inv));
  }
  std::fill(p + n * np, p + np * np, 0.f);
  // dV = P^T dO
  transpose_matrix(p, np, np, np, t, np);
  weighted_rows(t, np, n, gp, np, hd, 1.f, grad_v, grad_stride);
  // dP = dO V^T; dS = P * (dP - rowsum(P * dP)), zero where P is (lanes and rows past n)
  row_products(grad_out, go_stride, n, vt, np, hd, ds);
  for (int64_t i = 0; i < n; ++i) {
    float* dr = ds + i * np;
    const float* pr = p + i * np;
    __m256 dot = _mm256_setzero_ps();
    for (int64_t j = 0; j < np; j += 8) dot = _mm256_fmadd_ps(_mm256_loadu_ps(pr + j), _mm256_loadu_ps(dr + j), dot);
    const __m256 row = _mm256_set1_ps(hsum(dot));
    for (int64_t j = 0; j < np; j += 8)
      _mm256_storeu_ps(dr + j, _mm256_mul_ps(_mm256_loadu_ps(pr + j), _mm256_sub_ps(_mm256_loadu_ps(dr + j), row)));
    if (grad_bias != nullptr) {
      float* gb = grad_bias + i * n;
      int64_t j = 0;
      for (; j + 8 <= n; j += 8) _mm256_storeu_ps(gb + j, _mm256_add_ps(_mm256_loadu_ps(gb + j), _mm256_loadu_ps(dr + j)));
      for (; j < n; ++j) gb[j] += dr[j];
    }
  }
  std::fill(ds + n * np, ds + np * np, 0.f);
  // dQ = scale dS K; dK = scale dS^T Q
  weighted_rows(ds, np, n, kp, np, hd, scale, grad_q, grad_stride);
  transpose_matrix(ds, np, np, np, t, np);
  weighted_rows(t, np, n, qp, np, hd, scale, grad_k, grad_stride);
}

// a bias argument of the ops: contiguous float32 (Wb, heads, tokens, keys) with Wb dividing `windows`, or none;
// its window count (1 without one) and data (null without one)
struct BiasArgument {
  int64_t windows = 1;
  const float* data = nullptr;
};
inline BiasArgument bias_argument(const std::optional<at::Tensor>& bias, const char* op, int64_t windows,
                                  int64_t heads, int64_t tokens, int64_t keys) {
  if (!bias.has_value()) return {};
  const at::Tensor& b = *bias;
  TORCH_CHECK(b.scalar_type() == at::kFloat && b.is_contiguous() && b.dim() == 4 && b.size(0) > 0 &&
              windows % b.size(0) == 0 && b.size(1) == heads && b.size(2) == tokens && b.size(3) == keys,
              op, ": bias must be a contiguous float32 (Wb, ", heads, ", ", tokens, ", ", keys,
              ") tensor with Wb dividing ", windows, ", got ", b.sizes());
  return {b.size(0), b.data_ptr<float>()};
}

}  // namespace

// q (W, H, N, hd) and k, v (W, H, M, hd): fp32 views with unit stride along hd (k and v with the same
// strides); bias (Wb, H, N, M) contiguous, window w using bias[w % Wb], or None. Returns (W, N, H, hd).
at::Tensor window_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& bias, double scale) {
  TORCH_CHECK(q.device().is_cpu() && q.scalar_type() == at::kFloat && q.dim() == 4,
              "window_attention: q must be a float32 CPU tensor (windows, heads, tokens, head_dim), got ",
              q.scalar_type(), " ", q.sizes());
  TORCH_CHECK(k.dim() == 4 && k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3) &&
              v.sizes() == k.sizes() && v.strides() == k.strides() && k.scalar_type() == q.scalar_type() &&
              v.scalar_type() == q.scalar_type() && k.device().is_cpu() && v.device().is_cpu(),
              "window_attention: k and v must be float32 CPU tensors (windows, heads, keys, head_dim) with the same "
              "shape and strides, matching q ", q.sizes(), ", got ", k.sizes(), " and ", v.sizes());
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && q.size(3) % 8 == 0,
              "window_attention: head_dim must be a multiple of 8 with unit stride, got ", q.size(3));
  const int64_t windows = q.size(0), heads = q.size(1), tokens = q.size(2), keys = k.size(2), head_dim = q.size(3);
  TORCH_CHECK(keys > 0 || tokens == 0, "window_attention: no keys to attend to");
  const auto [bias_windows, bias_data] = bias_argument(bias, "window_attention", windows, heads, tokens, keys);
  auto out = at::empty({windows, tokens, heads, head_dim}, q.options());
  if (out.numel() == 0) return out;
  const float* q_data = q.data_ptr<float>();
  const float* k_data = k.data_ptr<float>();
  const float* v_data = v.data_ptr<float>();
  float* out_data = out.data_ptr<float>();
  // one task per (window, head, block of query rows): enough blocks to keep every thread busy when there
  // are few (window, head) pairs (Shunted attention: one window of thousands of queries)
  const int64_t pairs = windows * heads;
  const int64_t want = (4 * at::get_num_threads() + pairs - 1) / pairs;
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(want, tokens / (8 * ROWS)));
  const int64_t block_rows = ((tokens + blocks - 1) / blocks + ROWS - 1) / ROWS * ROWS;
  at::parallel_for(0, pairs * blocks, 1, [&](int64_t begin, int64_t end) {
    const int64_t mp = (keys + 7) / 8 * 8;
    std::vector<float> scratch(scratch_floats(keys, head_dim));
    float* kt = scratch.data();
    float* vp = kt + head_dim * mp;
    float* s = vp + mp * head_dim;
    int64_t packed = -1;  // the (window, head) whose keys are in kt / vp
    for (int64_t task = begin; task < end; ++task) {
      const int64_t pair = task / blocks, first = task % blocks * block_rows;
      if (first >= tokens) continue;
      const int64_t w = pair / heads, h = pair % heads;
      const int64_t kv_offset = w * k.stride(0) + h * k.stride(1);
      if (pair != packed) {
        pack_keys(k_data + kv_offset, v_data + kv_offset, k.stride(2), keys, head_dim, kt, vp);
        packed = pair;
      }
      const float* bias_rows =
          bias_data == nullptr ? nullptr : bias_data + (((w % bias_windows) * heads + h) * tokens + first) * keys;
      attend(q_data + w * q.stride(0) + h * q.stride(1) + first * q.stride(2), q.stride(2), kt, vp, bias_rows,
             out_data + ((w * tokens + first) * heads + h) * head_dim, heads * head_dim,
             std::min(block_rows, tokens - first), keys, head_dim, static_cast<float>(scale), s);
    }
  });
  return out;
}

// The backward of window_attention for windows of N tokens (keys = queries), the attention weights recomputed:
// grad_out, q, k, v (W, H, N, hd) fp32 views with unit stride along hd (k and v with the same strides); bias as
// for window_attention. Writes dq, dk, dv into grad_q, grad_k, grad_v (W, H, N, hd views with the same strides
// as one another); returns d(bias) summed over windows w with the same w % grad_bias_windows,
// (grad_bias_windows, H, N, N), or an empty tensor for grad_bias_windows == 0.
at::Tensor window_attention_backward_(at::Tensor& grad_q, at::Tensor& grad_k, at::Tensor& grad_v,
                                      const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const std::optional<at::Tensor>& bias, double scale,
                                      int64_t grad_bias_windows) {
  TORCH_CHECK(q.device().is_cpu() && q.scalar_type() == at::kFloat && q.dim() == 4 && q.stride(3) == 1 &&
              q.size(3) % 8 == 0,
              "window_attention_backward_: q must be a float32 CPU (windows, heads, tokens, head_dim) tensor with "
              "head_dim a multiple of 8 and unit stride, got ", q.scalar_type(), " ", q.sizes());
  const std::initializer_list<const at::Tensor*> others = {&k, &v, &grad_out, &grad_q, &grad_k, &grad_v};
  for (const at::Tensor* t : others)
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->sizes() == q.sizes() &&
                t->stride(3) == 1, "window_attention_backward_: k, v, grad_out and the gradients must be float32 CPU ",
                q.sizes(), " tensors with unit stride along head_dim, got ", t->scalar_type(), " ", t->sizes());
  TORCH_CHECK(k.strides() == v.strides() && grad_q.strides() == grad_k.strides() &&
              grad_q.strides() == grad_v.strides(),
              "window_attention_backward_: k and v, and the three gradients, must have the same strides");
  const int64_t windows = q.size(0), heads = q.size(1), tokens = q.size(2), head_dim = q.size(3);
  const auto [bias_windows, bias_data] =
      bias_argument(bias, "window_attention_backward_", windows, heads, tokens, tokens);
  TORCH_CHECK(grad_bias_windows >= 0 && (grad_bias_windows == 0 || windows % grad_bias_windows == 0),
              "window_attention_backward_: grad_bias_windows must divide ", windows, ", got ", grad_bias_windows);
  const int64_t threads = at::get_num_threads();
  const int64_t slice = heads * tokens * tokens;  // one window's bias gradient
  // one bias-gradient accumulator per thread (windows sharing a bias run on any thread), zeroed by its thread
  // (in parallel, in cache right before use) and summed at the end
  at::Tensor partial = at::empty({grad_bias_windows > 0 ? threads : 0, grad_bias_windows, heads, tokens, tokens},
                                 q.options());
  std::vector<char> used(grad_bias_windows > 0 ? threads : 0, 0);  // written by each thread for itself only
  if (windows * heads * tokens > 0) {
    const float* q_data = q.data_ptr<float>();
    const float* k_data = k.data_ptr<float>();
    const float* v_data = v.data_ptr<float>();
    const float* go_data = grad_out.data_ptr<float>();
    float* gq = grad_q.data_ptr<float>();
    float* gk = grad_k.data_ptr<float>();
    float* gv = grad_v.data_ptr<float>();
    float* partial_data = grad_bias_windows > 0 ? partial.data_ptr<float>() : nullptr;
    at::parallel_for(0, windows * heads, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(backward_scratch_floats(tokens, head_dim));
      float* own = nullptr;
      if (partial_data != nullptr) {
        const int thread = at::get_thread_num();
        own = partial_data + thread * grad_bias_windows * slice;
        if (!used[thread]) std::fill(own, own + grad_bias_windows * slice, 0.f);
        used[thread] = 1;
      }
      for (int64_t pair = begin; pair < end; ++pair) {
        const int64_t w = pair / heads, h = pair % heads;
        const int64_t kv = w * k.stride(0) + h * k.stride(1), g = w * grad_q.stride(0) + h * grad_q.stride(1);
        attend_backward(q_data + w * q.stride(0) + h * q.stride(1), q.stride(2), k_data + kv, v_data + kv,
                        k.stride(2), go_data + w * grad_out.stride(0) + h * grad_out.stride(1), grad_out.stride(2),
                        bias_data == nullptr ? nullptr : bias_data + ((w % bias_windows) * heads + h) * tokens * tokens,
                        gq + g, gk + g, gv + g, grad_q.stride(2),
                        own == nullptr ? nullptr : own + ((w % grad_bias_windows) * heads + h) * tokens * tokens,
                        tokens, head_dim, static_cast<float>(scale), scratch.data());
      }
    });
  }
  if (grad_bias_windows == 0) return partial.view({0, heads, tokens, tokens});
  at::Tensor total;  // the first used accumulator, the others added into it in thread order
  for (int64_t thread = 0; thread < threads; ++thread) {
    if (!used[thread]) continue;
    if (total.defined()) total.add_(partial.select(0, thread));
    else total = partial.select(0, thread);
  }
  return total.defined() ? total : at::zeros({grad_bias_windows, heads, tokens, tokens}, q.options());
}

// the CPU implementations of the ops swinkit/layers/native.py declares (schemas and shape functions there)
TORCH_LIBRARY_IMPL(swinkit, CPU, m) {
  m.impl("window_attention", &window_attention);
  m.impl("window_attention_backward_", &window_attention_backward_);
}
