// Cross-entropy rows for AVX512 (see loss_vec.h).
#define ELMO_ISA_NS avx512
#include "cpu/loss_vec.h"
