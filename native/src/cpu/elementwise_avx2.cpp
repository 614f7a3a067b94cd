// GELU and softmax for AVX2 (see elementwise_vec.h).
#define ELMO_ISA_NS avx2
#include "cpu/elementwise_vec.h"
