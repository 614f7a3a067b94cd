// Host-side reductions of a forward's outputs, for the API layer: pooling of each sequence's
// rows and label scores. Plain loops over host memory (a few rows of a few hundred values);
// kept here so that bindings/ has no math.
#pragma once

#include <cstdint>

namespace elmo {

// out [B, H] = the mean of each sequence's rows of hidden [T, H] (sums in double); offsets [B+1].
void mean_pool_rows(float* out, const float* hidden, const int32_t* offsets, int B, int64_t H);
// out [B, H] = each sequence's first row ([CLS]) of hidden [T, H].
void first_rows(float* out, const float* hidden, const int32_t* offsets, int B, int64_t H);
// For each of R rows of logits [R, L]: probs (softmax over L, or an independent sigmoid per
// label) and best = the arg-max (ties: the lowest index). Computed in double.
void score_rows(float* probs, int32_t* best, const float* logits, int64_t R, int64_t L, bool sigmoid);
// A joint head's rows: softmax over the first n_softmax labels (best = their arg-max) and an
// independent sigmoid for the others (best over all of them when n_softmax is 0).
void score_rows_split(float* probs, int32_t* best, const float* logits, int64_t R, int64_t L, int64_t n_softmax);

}  // namespace elmo
