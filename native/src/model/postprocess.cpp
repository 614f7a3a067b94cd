// Pooling and label scores on host memory (see postprocess.h).
#include "elmo/postprocess.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace elmo {

void mean_pool_rows(float* out, const float* hidden, const int32_t* offsets, int B, int64_t H) {
  std::vector<double> acc(static_cast<size_t>(H));
  for (int b = 0; b < B; ++b) {
    const int64_t t0 = offsets[b], t1 = offsets[b + 1];
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t j = 0; j < H; ++j) acc[static_cast<size_t>(j)] += hidden[t * H + j];
    const double inv = 1.0 / static_cast<double>(t1 - t0);
    for (int64_t j = 0; j < H; ++j) out[b * H + j] = static_cast<float>(acc[static_cast<size_t>(j)] * inv);
  }
}

void first_rows(float* out, const float* hidden, const int32_t* offsets, int B, int64_t H) {
  for (int b = 0; b < B; ++b)
    std::memcpy(out + b * H, hidden + static_cast<int64_t>(offsets[b]) * H, static_cast<size_t>(H) * sizeof(float));
}

void score_rows(float* probs, int32_t* best, const float* logits, int64_t R, int64_t L, bool sigmoid) {
  for (int64_t r = 0; r < R; ++r) {
    const float* z = logits + r * L;
    float* p = probs + r * L;
    int32_t arg = 0;
    for (int64_t l = 1; l < L; ++l)
      if (z[l] > z[arg]) arg = static_cast<int32_t>(l);
    best[r] = arg;
    if (sigmoid) {
      for (int64_t l = 0; l < L; ++l) p[l] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(z[l]))));
    } else {
      const double zmax = z[arg];
      double sum = 0;
      for (int64_t l = 0; l < L; ++l) sum += std::exp(static_cast<double>(z[l]) - zmax);
      for (int64_t l = 0; l < L; ++l) p[l] = static_cast<float>(std::exp(static_cast<double>(z[l]) - zmax) / sum);
    }
  }
}

void score_rows_split(float* probs, int32_t* best, const float* logits, int64_t R, int64_t L, int64_t n_softmax) {
  for (int64_t r = 0; r < R; ++r) {
    const float* z = logits + r * L;
    float* p = probs + r * L;
    const int64_t n = n_softmax > 0 ? n_softmax : L;
    int32_t arg = 0;
    for (int64_t l = 1; l < n; ++l)
      if (z[l] > z[arg]) arg = static_cast<int32_t>(l);
    best[r] = arg;
    if (n_softmax > 0) {
      const double zmax = z[arg];
      double sum = 0;
      for (int64_t l = 0; l < n_softmax; ++l) sum += std::exp(static_cast<double>(z[l]) - zmax);
      for (int64_t l = 0; l < n_softmax; ++l) p[l] = static_cast<float>(std::exp(static_cast<double>(z[l]) - zmax) / sum);
    }
    for (int64_t l = n_softmax; l < L; ++l) p[l] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(z[l]))));
  }
}

}  // namespace elmo
