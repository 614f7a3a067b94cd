// Cross-entropy rows for AVX2 (see loss_vec.h).
#define ELMO_ISA_NS avx2
#include "cpu/loss_vec.h"
