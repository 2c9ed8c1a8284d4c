// The CPU kernels compiled for AVX2 and FMA (x86-64 CPUs since about 2013), with GCC's target pragma.
//
// Every header is included first, under the default instruction set, so that the inline functions and
// templates of the standard library and ATen are compiled as in the rest of the program; only the kernels
// below the pragma are compiled for AVX2. prroi_pool_cpu.cpp calls them only on CPUs that have AVX2 and FMA.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "prroi_math.h"
#include "prroi_pool.h"
#include "cpu/prroi_pool_cpu.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define SODLIB_CPU_NAMESPACE avx2
#define SODLIB_CPU_AVX2
#include "cpu/prroi_pool_kernels.h"
#pragma GCC pop_options

bool sodlib::prroi::avx2::compiled() { return true; }

#else  // other compilers and CPUs: the baseline kernels only

bool sodlib::prroi::avx2::compiled() { return false; }

#endif
