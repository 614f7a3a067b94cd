// LayerNorm rows for AVX2 (see layernorm_vec.h).
#define ELMO_ISA_NS avx2
#include "cpu/layernorm_vec.h"
