// Attention softmax(q k^T * scale) v for bf16 tensors on x86 CPUs with AVX512-BF16.
//
// Why: torch's fused CPU attention takes its packed bf16 path only with AMX. On CPUs with
// AVX512-BF16 but no AMX (AMD Zen 4, Intel Cooper Lake) its bf16 attention is no faster
// than its fp32 one, and attention is a large share of SAN's bf16 frame (measured in
// docs/experiments.md, section 9.1). This kernel runs both products on the CPU's bf16 dot product
// instruction (vdpbf16ps, fp32 accumulation) in a flash-attention loop: per head, keys and
// values are packed once into pairs; per tile of 16 queries, blocks of 256 keys are scored,
// folded into a running (online) softmax in fp32, rounded to bf16 and multiplied into v.
// Numerics match torch's bf16 kernel: fp32 scores, fp32 softmax, bf16 probabilities.
//
// `attention(...)` takes raw data pointers and strides (elements) of q, k, v [B, H, N, D], an
// optional additive mask [B, H, Nq, Nk] (0 for none) and the output, runs on `threads`
// threads with the GIL released, and returns None; `supported()` says whether this CPU has
// the instructions and lacks AMX (where torch's kernels are the ones to use). The caller,
// `povss_ros.san.attention`, checks devices, dtypes, shapes and strides: nothing here
// validates memory.

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

namespace {

using bf16 = uint16_t;

constexpr int kRows = 16;      // query rows per tile (one accumulator register each)
constexpr int kKeys = 256;     // keys per softmax block (a multiple of 16)
constexpr int kMaxLanes = 64;  // head size limit: 4 registers of 16 fp32 lanes
constexpr float kLog2e = 1.4426950408889634f;

struct Layout {
  const bf16 *q, *k, *v;
  bf16* o;
  int64_t batch, heads, nq, nk, dim;
  int64_t q_sb, q_sh, q_sn, k_sb, k_sh, k_sn, v_sb, v_sh, v_sn, o_sb, o_sh, o_sn;
  const bf16* mask;  // additive [B, H, Nq, Nk] (strides may be 0; keys contiguous) or null
  int64_t m_sb, m_sh, m_sn;
  float scale;
};

// Everything up to the matching pop_options is AVX512-BF16 code, reached only where
// `supported()` says yes; the module's import and `supported()` stay plain x86-64.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,fma")

// 2^x for x <= 0, to fp32 rounding (Cephes' exp2f polynomial on [-1/2, 1/2]).
inline __m512 exp2_nonpositive(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-126.f), x);  // this operand order keeps NaN
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(1.535336188319500e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887440266574e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357674640e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471162809e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791363012e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028550421e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

inline __m512 dot_pairs(__m512 acc, uint32_t pair, __m512i vec) {
  return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_set1_epi32(static_cast<int>(pair)),
                          (__m512bh)vec);
}

// Keys as [key tile of 16][dim pair][16 keys][2] and values as [key pair][lanes][2], zero
// padded, so that one 64-byte load feeds 16 lanes of vdpbf16ps in either product.
struct PackedHead {
  std::vector<bf16> keys, values;
  int64_t pairs = 0, lanes = 0;

  void pack(const Layout& L, const bf16* k, const bf16* v) {
    const int64_t tiles = (L.nk + 15) / 16;
    pairs = L.dim / 2;
    lanes = (L.dim + 15) / 16 * 16;
    keys.assign(tiles * pairs * 32, 0);
    for (int64_t n = 0; n < L.nk; ++n) {
      const bf16* row = k + n * L.k_sn;
      bf16* dst = keys.data() + (n / 16) * pairs * 32 + (n % 16) * 2;
      for (int64_t p = 0; p < pairs; ++p) {
        dst[p * 32] = row[2 * p];
        dst[p * 32 + 1] = row[2 * p + 1];
      }
    }
    const int64_t key_pairs = (tiles * 16) / 2;
    values.assign(key_pairs * lanes * 2, 0);
    for (int64_t n = 0; n < L.nk; ++n) {
      const bf16* row = v + n * L.v_sn;
      bf16* dst = values.data() + (n / 2) * lanes * 2 + (n % 2);
      for (int64_t d = 0; d < L.dim; ++d) dst[d * 2] = row[d];
    }
  }
};

// One tile of up to 16 query rows against every key of one head.
template <int Z>  // Z = lanes / 16 registers per output row
class QueryTile {
 public:
  QueryTile(const Layout& L, const PackedHead& P) : L_(L), P_(P) {}

  void run(const bf16* q, const bf16* mask, bf16* out, int64_t rows) {
    load_queries(q, rows);
    for (int r = 0; r < kRows; ++r)
      mask_rows_[r] = mask ? mask + std::min<int64_t>(r, rows - 1) * L_.m_sn : nullptr;
    std::fill(std::begin(max_), std::end(max_), -std::numeric_limits<float>::infinity());
    std::fill(std::begin(sum_), std::end(sum_), 0.f);
    std::memset(acc_, 0, sizeof(acc_));
    for (int64_t n0 = 0; n0 < L_.nk; n0 += kKeys) {
      const int64_t count = std::min<int64_t>(kKeys, L_.nk - n0);
      score(n0, count);
      softmax_block(count);
      accumulate(n0, (count + 15) / 16 * 16);
    }
    store(out, rows);
  }

 private:
  void load_queries(const bf16* q, int64_t rows) {
    for (int r = 0; r < kRows; ++r) {
      const bf16* row = q + std::min<int64_t>(r, rows - 1) * L_.q_sn;  // repeat the last row
      std::memcpy(query_[r], row, P_.pairs * sizeof(uint32_t));
    }
  }

  // scores_[r][j] = q_r . k_{n0+j} * scale + mask; keys past `count` get -inf.
  void score(int64_t n0, int64_t count) {
    const __m512 scale = _mm512_set1_ps(L_.scale);
    for (int64_t t = 0; t < (count + 15) / 16; ++t) {
      const bf16* keys = P_.keys.data() + ((n0 / 16) + t) * P_.pairs * 32;
      __m512 acc[kRows];
      for (auto& a : acc) a = _mm512_setzero_ps();
      for (int64_t p = 0; p < P_.pairs; ++p) {
        const __m512i k = _mm512_loadu_si512(keys + p * 32);
        for (int r = 0; r < kRows; ++r) acc[r] = dot_pairs(acc[r], query_[r][p], k);
      }
      const int64_t valid = std::min<int64_t>(16, count - t * 16);
      const __mmask16 live = valid == 16 ? 0xFFFF : static_cast<__mmask16>((1u << valid) - 1);
      const __m512 dead = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
      for (int r = 0; r < kRows; ++r) {
        __m512 s = _mm512_mul_ps(acc[r], scale);
        if (mask_rows_[r]) {
          const __m256i m = _mm256_maskz_loadu_epi16(live, mask_rows_[r] + n0 + t * 16);
          const __m512 bias = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(m), 16));
          s = _mm512_add_ps(s, bias);
        }
        _mm512_storeu_ps(scores_[r] + t * 16, _mm512_mask_mov_ps(dead, live, s));
      }
    }
  }

  // Online softmax: new running max per row, rescale factor for what was summed before,
  // probabilities of this block in bf16 (pairs along keys, as the value product reads them).
  void softmax_block(int64_t count) {
    const int64_t width = (count + 15) / 16 * 16;
    for (int r = 0; r < kRows; ++r) {
      __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
      for (int64_t j = 0; j < width; j += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(scores_[r] + j));
      const float block_max = _mm512_reduce_max_ps(m);
      const float new_max = std::max(max_[r], block_max);
      // Every key so far masked to -inf: nothing summed yet, and -inf - -inf would be NaN.
      rescale_[r] = new_max == -std::numeric_limits<float>::infinity()
                        ? 1.f
                        : std::exp2((max_[r] - new_max) * kLog2e);
      max_[r] = new_max;
      const __m512 shift = _mm512_set1_ps(new_max);
      const __m512 log2e = _mm512_set1_ps(kLog2e);
      __m512 s = _mm512_setzero_ps();
      const __m512 dead = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
      for (int64_t j = 0; j < width; j += 16) {
        const __m512 x = _mm512_loadu_ps(scores_[r] + j);
        // Scores stay in their own units (a bf16 mask's finfo.min must not overflow) and
        // turn base 2 inside the exponent; -inf scores give 0, NaN ones stay NaN.
        const __m512 p = _mm512_maskz_mov_ps(
            _mm512_cmp_ps_mask(x, dead, _CMP_NEQ_UQ),
            exp2_nonpositive(_mm512_mul_ps(_mm512_sub_ps(x, shift), log2e)));
        s = _mm512_add_ps(s, p);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(probs_[r] + j),
                            (__m256i)_mm512_cvtneps_pbh(p));
      }
      sum_[r] = sum_[r] * rescale_[r] + _mm512_reduce_add_ps(s);
    }
  }

  // acc_ = acc_ * rescale + probs @ values, in groups of rows that fit the registers.
  void accumulate(int64_t n0, int64_t width) {
    constexpr int group = Z <= 3 ? 8 : 4;
    for (int r0 = 0; r0 < kRows; r0 += group) {
      __m512 acc[group][Z];
      for (int r = 0; r < group; ++r) {
        const __m512 c = _mm512_set1_ps(rescale_[r0 + r]);
        for (int z = 0; z < Z; ++z) acc[r][z] = _mm512_mul_ps(_mm512_loadu_ps(acc_[r0 + r] + z * 16), c);
      }
      const bf16* values = P_.values.data() + (n0 / 2) * P_.lanes * 2;
      for (int64_t p = 0; p < width / 2; ++p) {
        __m512i v[Z];
        for (int z = 0; z < Z; ++z) v[z] = _mm512_loadu_si512(values + (p * P_.lanes + z * 16) * 2);
        for (int r = 0; r < group; ++r) {
          uint32_t pair;
          std::memcpy(&pair, probs_[r0 + r] + 2 * p, sizeof(pair));
          for (int z = 0; z < Z; ++z) acc[r][z] = dot_pairs(acc[r][z], pair, v[z]);
        }
      }
      for (int r = 0; r < group; ++r)
        for (int z = 0; z < Z; ++z) _mm512_storeu_ps(acc_[r0 + r] + z * 16, acc[r][z]);
    }
  }

  void store(bf16* out, int64_t rows) {
    for (int64_t r = 0; r < rows; ++r) {
      // A row with no finite score (all keys masked) gives 0, as torch's kernel does.
      const __m512 inv = _mm512_set1_ps(sum_[r] > 0.f ? 1.f / sum_[r] : 0.f);
      bf16* dst = out + r * L_.o_sn;
      for (int64_t d = 0; d < L_.dim; d += 16) {
        const int64_t left = std::min<int64_t>(16, L_.dim - d);
        const __mmask16 m = left == 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
        const __m256i h = (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(acc_[r] + d), inv));
        _mm256_mask_storeu_epi16(dst + d, m, h);
      }
    }
  }

  const Layout& L_;
  const PackedHead& P_;
  uint32_t query_[kRows][kMaxLanes / 2];
  const bf16* mask_rows_[kRows];
  alignas(64) float scores_[kRows][kKeys];
  alignas(64) bf16 probs_[kRows][kKeys];
  alignas(64) float acc_[kRows][kMaxLanes];
  float max_[kRows], sum_[kRows], rescale_[kRows];
};

template <int Z>
void run_items(const Layout& L, int64_t first, int64_t last, int64_t splits) {
  PackedHead packed;  // may throw std::bad_alloc: run_all's workers catch it
  QueryTile<Z> tile(L, packed);
  const int64_t tiles = (L.nq + kRows - 1) / kRows;
  const int64_t per_split = (tiles + splits - 1) / splits;
  int64_t packed_head = -1;
  for (int64_t item = first; item < last; ++item) {
    const int64_t head_index = item / splits, split = item % splits;
    const int64_t b = head_index / L.heads, h = head_index % L.heads;
    if (head_index != packed_head) {
      packed.pack(L, L.k + b * L.k_sb + h * L.k_sh, L.v + b * L.v_sb + h * L.v_sh);
      packed_head = head_index;
    }
    for (int64_t t = split * per_split; t < std::min(tiles, (split + 1) * per_split); ++t) {
      const int64_t row = t * kRows, rows = std::min<int64_t>(kRows, L.nq - row);
      tile.run(L.q + b * L.q_sb + h * L.q_sh + row * L.q_sn,
               L.mask ? L.mask + b * L.m_sb + h * L.m_sh + row * L.m_sn : nullptr,
               L.o + b * L.o_sb + h * L.o_sh + row * L.o_sn, rows);
    }
  }
}

// Items are (batch, head, split): a head's query tiles go to `splits` items when there are
// fewer heads than threads. Returns false if a worker ran out of memory.
template <int Z>
bool run_all(const Layout& L, int threads) {
  const int64_t heads = L.batch * L.heads, tiles = (L.nq + kRows - 1) / kRows;
  const int64_t splits = std::clamp<int64_t>((threads + heads - 1) / heads, 1, tiles);
  const int64_t items = heads * splits;
  threads = static_cast<int>(std::min<int64_t>(threads, items));
  std::atomic<bool> failed{false};
  auto work = [&](int t) {
    try {
      run_items<Z>(L, items * t / threads, items * (t + 1) / threads, splits);
    } catch (...) {
      failed = true;
    }
  };
  std::vector<std::thread> pool;
  std::vector<int> unstarted;  // ranges whose thread could not start run here instead
  try {
    pool.reserve(threads);
  } catch (...) {
  }
  for (int t = 1; t < threads; ++t) {
    try {
      pool.emplace_back(work, t);
    } catch (...) {
      unstarted.push_back(t);
    }
  }
  work(0);
  for (int t : unstarted) work(t);
  for (auto& th : pool) th.join();
  return !failed;
}

#pragma GCC pop_options

PyObject* attention(PyObject*, PyObject* args) {
  unsigned long long q, k, v, o, mask;
  Layout L{};
  double scale;
  int threads;
  if (!PyArg_ParseTuple(args, "KKKKKLLLLLLLLLLLLLLLLLLLLdi", &q, &k, &v, &mask, &o, &L.batch,
                        &L.heads, &L.nq, &L.nk, &L.dim, &L.q_sb, &L.q_sh, &L.q_sn, &L.k_sb,
                        &L.k_sh, &L.k_sn, &L.v_sb, &L.v_sh, &L.v_sn, &L.m_sb, &L.m_sh, &L.m_sn,
                        &L.o_sb, &L.o_sh, &L.o_sn, &scale, &threads))
    return nullptr;
  if (L.dim <= 0 || L.dim % 2 || L.dim > kMaxLanes || L.nk <= 0 || threads <= 0 ||
      L.batch < 0 || L.heads < 0 || L.nq < 0) {
    PyErr_SetString(PyExc_ValueError,
                    "head size must be even and at most 64, keys and threads > 0");
    return nullptr;
  }
  L.q = reinterpret_cast<const bf16*>(q);
  L.k = reinterpret_cast<const bf16*>(k);
  L.v = reinterpret_cast<const bf16*>(v);
  L.o = reinterpret_cast<bf16*>(o);
  L.mask = reinterpret_cast<const bf16*>(mask);
  L.scale = static_cast<float>(scale);
  if (L.batch * L.heads * L.nq == 0) Py_RETURN_NONE;
  bool done = false;
  Py_BEGIN_ALLOW_THREADS
  switch ((L.dim + 15) / 16) {
    case 1: done = run_all<1>(L, threads); break;
    case 2: done = run_all<2>(L, threads); break;
    case 3: done = run_all<3>(L, threads); break;
    default: done = run_all<4>(L, threads); break;
  }
  Py_END_ALLOW_THREADS
  if (!done) return PyErr_NoMemory();
  Py_RETURN_NONE;
}

// AMX-BF16: CPUID leaf 7, sub-leaf 0, EDX bit 22.
bool has_amx_bf16() {
  unsigned int a, b, c, d;
  return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 22));
}

// Whether this kernel is the one to use here: the CPU (and its OS) runs the instructions
// above, and has no AMX, with which torch's own bf16 kernels take their packed path.
PyObject* supported(PyObject*, PyObject*) {
  __builtin_cpu_init();
  return PyBool_FromLong(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512bf16") && !has_amx_bf16());
}

PyMethodDef methods[] = {
    {"supported", supported, METH_NOARGS,
     "supported() -> whether the kernel runs here and torch has no AMX path"},
    {"attention", attention, METH_VARARGS,
     "attention(q, k, v, mask, out, B, H, Nq, Nk, D, 15 strides, scale, threads)"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bf16_attention", nullptr, -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__bf16_attention() { return PyModule_Create(&module); }
