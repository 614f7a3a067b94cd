// GELU and softmax for AVX512 (see elementwise_vec.h).
#define ELMO_ISA_NS avx512
#include "cpu/elementwise_vec.h"
