// The CPU kernels for any CPU: compiled with the build's default instruction set.
#define SODLIB_CPU_NAMESPACE baseline
#include "cpu/prroi_pool_kernels.h"
