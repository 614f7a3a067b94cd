// LayerNorm rows for AVX512 (see layernorm_vec.h).
#define ELMO_ISA_NS avx512
#include "cpu/layernorm_vec.h"
