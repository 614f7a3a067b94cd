// AdamW for AVX512 (see adamw_vec.h).
#define ELMO_ISA_NS avx512
#include "cpu/adamw_vec.h"
