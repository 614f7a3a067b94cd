// AdamW for AVX2 (see adamw_vec.h).
#define ELMO_ISA_NS avx2
#include "cpu/adamw_vec.h"
