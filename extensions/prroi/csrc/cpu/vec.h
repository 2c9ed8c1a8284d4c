#pragma once
// The vector of kBlock channels that the plain PrRoI kernels compute with (Channels), and the moves of data
// between the tensors' order, channels outermost, and the channel blocks', kBlock channels innermost:
// to_blocks and blocked_map (the feature map into blocks), add_from_blocks (a blocked gradient back into
// the feature gradient), store_bins (one block of a RoI's pooled values into the output). In the AVX2 build
// (kWideVectors) they transpose kBlock x kBlock tiles in registers (transpose); in the baseline build they
// copy value by value.
//
// Part of cpu/prroi_pool_kernels.h, which includes it inside its namespaces, after cpu/taps.h (grain).

#ifndef SODLIB_CPU_KERNEL_PARTS
#error "cpu/vec.h is part of cpu/prroi_pool_kernels.h: include that file instead"
#endif

constexpr int64_t kBlock = 8;

int64_t channel_blocks(int64_t channels) { return (channels + kBlock - 1) / kBlock; }

// The kBlock channels of one pixel as a GCC / Clang vector: updates written with it compile to vector
// instructions for any instruction set, where the same loops over an array are left to the vectoriser,
// which handles them differently from one build to the next.
template <typename T>
struct Channels {
  typedef T type __attribute__((vector_size(kBlock * sizeof(T))));
  // integers of T's size, for the lane indices of __builtin_shuffle
  typedef std::conditional_t<sizeof(T) == 8, int64_t, int32_t> lane_type;
  typedef lane_type lanes __attribute__((vector_size(kBlock * sizeof(T))));
};

// Whether this build has 256-bit vectors (the AVX2 build, which defines SODLIB_CPU_AVX2: GCC's target pragma
// does not define __AVX2__ in C++), where kBlock floats fill one register. Data then changes between the
// channel blocks' order and the tensors' by kBlock x kBlock transposes in registers (transpose() below: the
// map's copies in to_blocks and add_from_blocks, the pooled values in store_bins); with 128-bit vectors (SSE2,
// the baseline build) GCC splits their shuffles into many, and copying value by value is faster (measured).
#ifdef SODLIB_CPU_AVX2
constexpr bool kWideVectors = true;
#else
constexpr bool kWideVectors = false;
#endif

// The kBlock x kBlock matrix in v[0 .. kBlock) transposed in registers: v[r][c] becomes v[c][r].
// Three rounds of two-vector shuffles (interleave, pair up, swap halves), each an instruction or two on
// x86-64.
template <typename T>
__attribute__((always_inline)) inline void transpose(typename Channels<T>::type* v) {
  static_assert(kBlock == 8, "transpose is written for 8 lanes");
  using V = typename Channels<T>::type;
  using L = typename Channels<T>::lanes;
  V a[kBlock], b[kBlock];
  for (int r = 0; r < kBlock; r += 2) {  // interleave rows r and r + 1
    a[r] = __builtin_shuffle(v[r], v[r + 1], L{0, 8, 1, 9, 4, 12, 5, 13});
    a[r + 1] = __builtin_shuffle(v[r], v[r + 1], L{2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int r = 0; r < kBlock; r += 4)  // pair up the interleaved rows r, r + 2 and r + 1, r + 3
    for (int h = 0; h < 2; ++h) {
      b[r + 2 * h] = __builtin_shuffle(a[r + h], a[r + h + 2], L{0, 1, 8, 9, 4, 5, 12, 13});
      b[r + 2 * h + 1] = __builtin_shuffle(a[r + h], a[r + h + 2], L{2, 3, 10, 11, 6, 7, 14, 15});
    }
  for (int r = 0; r < 4; ++r) {  // low halves of rows r and r + 4, then their high halves
    v[r] = __builtin_shuffle(b[r], b[r + 4], L{0, 1, 2, 3, 8, 9, 10, 11});
    v[r + 4] = __builtin_shuffle(b[r], b[r + 4], L{4, 5, 6, 7, 12, 13, 14, 15});
  }
}

// the kBlock lanes of v to dst (converted to scalar_t)
template <typename T, typename scalar_t>
void store_lanes(const typename Channels<T>::type& v, scalar_t* dst) {
  if constexpr (std::is_same_v<T, scalar_t>) {
    std::memcpy(dst, &v, sizeof v);
  } else {
    for (int64_t l = 0; l < kBlock; ++l) dst[l] = static_cast<scalar_t>(v[l]);
  }
}

// blocks[n][b][y][x][c] = input[n][b * kBlock + c][y][x], 0 past the last channel. In the AVX2 build, kBlock
// pixels of the kBlock channels at a time are transposed in registers.
template <typename scalar_t, typename acc_t>
void to_blocks(const scalar_t* input, int64_t batch, int64_t channels, int64_t plane, acc_t* blocks) {
  const int64_t per_image = channel_blocks(channels);
  at::parallel_for(0, batch * per_image, grain(plane * kBlock), [&](int64_t begin, int64_t end) {
    for (int64_t nb = begin; nb < end; ++nb) {
      const int64_t n = nb / per_image, first_channel = (nb % per_image) * kBlock;
      const int64_t count = std::min(kBlock, channels - first_channel);
      const scalar_t* src = input + (n * channels + first_channel) * plane;  // channel c at src + c * plane
      acc_t* dst = blocks + nb * plane * kBlock;
      int64_t p = 0;
      if constexpr (kWideVectors) {
        typename Channels<acc_t>::type tile[kBlock];
        for (; p + kBlock <= plane; p += kBlock) {
          for (int64_t c = 0; c < kBlock; ++c) {
            tile[c] = typename Channels<acc_t>::type{};
            if (c >= count) continue;
            if constexpr (std::is_same_v<scalar_t, acc_t>) {
              std::memcpy(&tile[c], src + c * plane + p, sizeof tile[c]);
            } else {
              for (int64_t l = 0; l < kBlock; ++l) tile[c][l] = static_cast<acc_t>(src[c * plane + p + l]);
            }
          }
          transpose<acc_t>(tile);
          std::memcpy(dst + p * kBlock, tile, sizeof tile);
        }
      }
      for (; p < plane; ++p)
        for (int64_t c = 0; c < kBlock; ++c) dst[p * kBlock + c] = c < count ? static_cast<acc_t>(src[c * plane + p]) : acc_t(0);
    }
  });
}

// output[n][b * kBlock + c][y][x] += blocks[n][b][y][x][c]: to_blocks backwards, adding
template <typename acc_t>
void add_from_blocks(const acc_t* blocks, int64_t batch, int64_t channels, int64_t plane, acc_t* output) {
  const int64_t per_image = channel_blocks(channels);
  at::parallel_for(0, batch * per_image, grain(plane * kBlock), [&](int64_t begin, int64_t end) {
    for (int64_t nb = begin; nb < end; ++nb) {
      const int64_t n = nb / per_image, first_channel = (nb % per_image) * kBlock;
      const int64_t count = std::min(kBlock, channels - first_channel);
      const acc_t* src = blocks + nb * plane * kBlock;
      acc_t* dst = output + (n * channels + first_channel) * plane;  // channel c at dst + c * plane
      int64_t p = 0;
      if constexpr (kWideVectors) {
        typename Channels<acc_t>::type tile[kBlock], sum;
        for (; p + kBlock <= plane; p += kBlock) {
          std::memcpy(tile, src + p * kBlock, sizeof tile);
          transpose<acc_t>(tile);  // tile[c]: pixels p .. p + kBlock - 1 of channel c
          for (int64_t c = 0; c < count; ++c) {
            std::memcpy(&sum, dst + c * plane + p, sizeof sum);
            sum += tile[c];
            std::memcpy(dst + c * plane + p, &sum, sizeof sum);
          }
        }
      }
      for (; p < plane; ++p)
        for (int64_t c = 0; c < count; ++c) dst[c * plane + p] += src[p * kBlock + c];
    }
  });
}

// out[c][bin] = values[bin][c] for c < channels: one block of a RoI's pooled values, from the blocks'
// [bin][c] order to the tensor's. In the AVX2 build, kBlock bins at a time are transposed in registers.
template <typename scalar_t, typename T>
void store_bins(const T* values, int64_t bins, int64_t channels, scalar_t* out) {
  int64_t first = 0;
  if constexpr (kWideVectors) {
    typename Channels<T>::type tile[kBlock];
    for (; first + kBlock <= bins; first += kBlock) {
      std::memcpy(tile, values + first * kBlock, sizeof tile);
      transpose<T>(tile);
      for (int64_t c = 0; c < channels; ++c) store_lanes<T>(tile[c], out + c * bins + first);
    }
  }
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t bin = first; bin < bins; ++bin) out[c * bins + bin] = static_cast<scalar_t>(values[bin * kBlock + c]);
}

// The feature map in channel blocks (see to_blocks), in the accumulation type.
template <typename scalar_t, typename acc_t>
at::Tensor blocked_map(const at::Tensor& input) {
  const int64_t batch = input.size(0), channels = input.size(1), height = input.size(2), width = input.size(3);
  auto blocks = at::empty({batch, channel_blocks(channels), height, width, kBlock},
                          input.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  to_blocks(input.template data_ptr<scalar_t>(), batch, channels, height * width, blocks.template data_ptr<acc_t>());
  return blocks;
}
