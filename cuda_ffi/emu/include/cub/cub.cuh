// splatjax CUDA-on-CPU emulation: stand-ins for the CUB device algorithms cuda_ffi/cuda.cu
// uses, with CUB's calling convention and rules:
//   - a first call with d_temp_storage == nullptr only reports the temporary storage size;
//     the real call fails with cudaErrorInvalidValue when temp_storage_bytes is smaller
//     (sizes follow CUB's layout: SortPairs without DoubleBuffer keeps alternate key and
//     value buffers in its temporary storage);
//   - InclusiveSum accumulates in the input's value type (CUB's accumulator type), with
//     two's-complement wrap-around for integers, whatever the output type;
//   - SortPairs is a stable LSD radix sort on the key bits [begin_bit, end_bit) only: bits
//     outside the range do not order the keys (but are copied), as in CUB; with DoubleBuffer
//     arguments the result lands in the buffer the selector names after the call (one flip
//     per 8-bit pass here; CUB's pass count depends on the GPU, so code must use Current())
//     and the other buffer is left poisoned;
//   - every range (inputs, outputs, temporary storage) must lie in device memory the
//     emulator knows, and the work is queued on the stream (never on stream 0).
// Both scribble over their temporary storage when they run.
#pragma once

#include <cstdint>
#include <cstring>
#include <iterator>
#include <string>
#include <type_traits>
#include <vector>

#include "../cuda_runtime.h"

namespace cub {
namespace emu_detail {

inline size_t scan_temp_bytes(int64_t n) { return 512 + 16 * (size_t)((n + 1023) / 1024); }

template <class K, class V>
size_t sort_temp_bytes(int64_t n, int begin_bit, int end_bit) {
  const int passes = (end_bit - begin_bit + 7) / 8;
  return 1024 + (size_t)passes * 256 * sizeof(int64_t) + (size_t)n * (sizeof(K) + sizeof(V));
}

template <class T>
T wrap_add(T a, T b) {
  if constexpr (std::is_integral<T>::value) {
    using U = std::make_unsigned_t<T>;
    return (T)((U)a + (U)b);
  } else {
    return a + b;
  }
}

template <class It>
bool check_iter(It it, int64_t n, const char* what, const char* api, std::string* err) {
  if constexpr (std::is_pointer<It>::value) {
    using T = std::remove_cv_t<std::remove_pointer_t<It>>;
    return n == 0 || ::sjemu::check_range((const void*)it, (size_t)n * sizeof(T), what, api, err);
  } else {
    return true;
  }
}

inline bool overlaps(const void* a, size_t na, const void* b, size_t nb) {
  const char *pa = (const char*)a, *pb = (const char*)b;
  return na && nb && pa < pb + nb && pb < pa + na;
}

}  // namespace emu_detail

template <class T>
struct DoubleBuffer {
  T* d_buffers[2];
  int selector;
  DoubleBuffer() : d_buffers{nullptr, nullptr}, selector(0) {}
  DoubleBuffer(T* current, T* alternate) : d_buffers{current, alternate}, selector(0) {}
  T* Current() const { return d_buffers[selector]; }
  T* Alternate() const { return d_buffers[selector ^ 1]; }
};

namespace emu_detail {

// Stable LSD radix sort (8-bit digits over [begin_bit, end_bit)) of an index permutation.
template <class K>
std::vector<int64_t> radix_order(const K* keys, int64_t n, int begin_bit, int end_bit) {
  std::vector<int64_t> idx(n), tmp(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  for (int bit = begin_bit; bit < end_bit; bit += 8) {
    const int width = end_bit - bit < 8 ? end_bit - bit : 8;
    const K mask = (K)((1u << width) - 1u);
    int64_t count[257] = {0};
    for (int64_t i = 0; i < n; ++i) ++count[((keys[idx[i]] >> bit) & mask) + 1];
    for (int d = 0; d < 256; ++d) count[d + 1] += count[d];
    for (int64_t i = 0; i < n; ++i) tmp[count[(keys[idx[i]] >> bit) & mask]++] = idx[i];
    idx.swap(tmp);
  }
  return idx;
}

}  // namespace emu_detail

struct DeviceScan {
  template <class InIt, class OutIt, class NumItemsT>
  static cudaError_t InclusiveSum(void* d_temp_storage, size_t& temp_storage_bytes, InIt d_in, OutIt d_out,
                                  NumItemsT num_items, cudaStream_t stream = nullptr) {
    static const char* api = "cub::DeviceScan::InclusiveSum";
    if (cudaError_t e = ::sjemu::api_call(api); e != cudaSuccess) return e;
    const int64_t n = (int64_t)num_items;
    if (n < 0) return cudaErrorInvalidValue;
    const size_t need = emu_detail::scan_temp_bytes(n);
    if (d_temp_storage == nullptr) {
      temp_storage_bytes = need;
      return cudaSuccess;
    }
    if (temp_storage_bytes < need) return cudaErrorInvalidValue;
    std::string err;
    if (!::sjemu::check_range(d_temp_storage, need, "temporary storage", api, &err) ||
        !emu_detail::check_iter(d_in, n, "input", api, &err) || !emu_detail::check_iter(d_out, n, "output", api, &err)) {
      ::sjemu::violation(err);
      return cudaErrorInvalidValue;
    }
    using InT = std::remove_cv_t<typename std::iterator_traits<InIt>::value_type>;
    using OutT = std::remove_cv_t<typename std::iterator_traits<OutIt>::value_type>;
    const unsigned char poison = ::sjemu::poison_byte();
    ::sjemu::enqueue(stream, api, [=]() -> std::string {
      std::memset(d_temp_storage, poison, need);
      InT acc{};
      for (int64_t i = 0; i < n; ++i) {
        acc = emu_detail::wrap_add<InT>(acc, (InT)d_in[i]);
        d_out[i] = (OutT)acc;
      }
      return std::string();
    });
    return cudaSuccess;
  }
};

struct DeviceRadixSort {
  template <class K, class V, class NumItemsT>
  static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes, const K* d_keys_in, K* d_keys_out,
                               const V* d_values_in, V* d_values_out, NumItemsT num_items, int begin_bit = 0,
                               int end_bit = sizeof(K) * 8, cudaStream_t stream = nullptr) {
    static_assert(std::is_integral<K>::value && std::is_unsigned<K>::value, "emulated for unsigned integer keys");
    static const char* api = "cub::DeviceRadixSort::SortPairs";
    if (cudaError_t e = ::sjemu::api_call(api); e != cudaSuccess) return e;
    const int64_t n = (int64_t)num_items;
    if (n < 0 || begin_bit < 0 || end_bit > (int)(8 * sizeof(K)) || begin_bit > end_bit) return cudaErrorInvalidValue;
    const size_t need = emu_detail::sort_temp_bytes<K, V>(n, begin_bit, end_bit);
    if (d_temp_storage == nullptr) {
      temp_storage_bytes = need;
      return cudaSuccess;
    }
    if (temp_storage_bytes < need) return cudaErrorInvalidValue;
    std::string err;
    if (!::sjemu::check_range(d_temp_storage, need, "temporary storage", api, &err) ||
        !emu_detail::check_iter(d_keys_in, n, "keys in", api, &err) ||
        !emu_detail::check_iter(d_keys_out, n, "keys out", api, &err) ||
        !emu_detail::check_iter(d_values_in, n, "values in", api, &err) ||
        !emu_detail::check_iter(d_values_out, n, "values out", api, &err)) {
      ::sjemu::violation(err);
      return cudaErrorInvalidValue;
    }
    if (emu_detail::overlaps(d_keys_in, n * sizeof(K), d_keys_out, n * sizeof(K)) ||
        emu_detail::overlaps(d_values_in, n * sizeof(V), d_values_out, n * sizeof(V))) {
      ::sjemu::violation(std::string(api) + ": input and output ranges overlap");
      return cudaErrorInvalidValue;
    }
    const unsigned char poison = ::sjemu::poison_byte();
    ::sjemu::enqueue(stream, api, [=]() -> std::string {
      std::memset(d_temp_storage, poison, need);
      const std::vector<int64_t> idx = emu_detail::radix_order(d_keys_in, n, begin_bit, end_bit);
      for (int64_t i = 0; i < n; ++i) {
        d_keys_out[i] = d_keys_in[idx[i]];
        d_values_out[i] = d_values_in[idx[i]];
      }
      return std::string();
    });
    return cudaSuccess;
  }

  // DoubleBuffer form: sorts Current() using Alternate() as the other buffer; small
  // temporary storage. The result is in the buffer the selector names afterwards.
  template <class K, class V, class NumItemsT>
  static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes, DoubleBuffer<K>& d_keys,
                               DoubleBuffer<V>& d_values, NumItemsT num_items, int begin_bit = 0,
                               int end_bit = sizeof(K) * 8, cudaStream_t stream = nullptr) {
    static_assert(std::is_integral<K>::value && std::is_unsigned<K>::value, "emulated for unsigned integer keys");
    static const char* api = "cub::DeviceRadixSort::SortPairs";
    if (cudaError_t e = ::sjemu::api_call(api); e != cudaSuccess) return e;
    const int64_t n = (int64_t)num_items;
    if (n < 0 || begin_bit < 0 || end_bit > (int)(8 * sizeof(K)) || begin_bit > end_bit) return cudaErrorInvalidValue;
    const int passes = (end_bit - begin_bit + 7) / 8;
    const size_t need = 1024 + (size_t)passes * 256 * sizeof(int64_t);
    if (d_temp_storage == nullptr) {
      temp_storage_bytes = need;
      return cudaSuccess;
    }
    if (temp_storage_bytes < need) return cudaErrorInvalidValue;
    K *k_cur = d_keys.Current(), *k_alt = d_keys.Alternate();
    V *v_cur = d_values.Current(), *v_alt = d_values.Alternate();
    std::string err;
    if (!::sjemu::check_range(d_temp_storage, need, "temporary storage", api, &err) ||
        !emu_detail::check_iter(k_cur, n, "keys (current)", api, &err) ||
        !emu_detail::check_iter(k_alt, n, "keys (alternate)", api, &err) ||
        !emu_detail::check_iter(v_cur, n, "values (current)", api, &err) ||
        !emu_detail::check_iter(v_alt, n, "values (alternate)", api, &err)) {
      ::sjemu::violation(err);
      return cudaErrorInvalidValue;
    }
    if (emu_detail::overlaps(k_cur, n * sizeof(K), k_alt, n * sizeof(K)) ||
        emu_detail::overlaps(v_cur, n * sizeof(V), v_alt, n * sizeof(V))) {
      ::sjemu::violation(std::string(api) + ": the two buffers of a DoubleBuffer overlap");
      return cudaErrorInvalidValue;
    }
    const bool flip = passes % 2 == 1;  // decided on the host, as CUB does
    if (flip) {
      d_keys.selector ^= 1;
      d_values.selector ^= 1;
    }
    const unsigned char poison = ::sjemu::poison_byte();
    ::sjemu::enqueue(stream, api, [=]() -> std::string {
      std::memset(d_temp_storage, poison, need);
      const std::vector<int64_t> idx = emu_detail::radix_order(k_cur, n, begin_bit, end_bit);
      std::vector<K> keys(n);
      std::vector<V> vals(n);
      for (int64_t i = 0; i < n; ++i) {
        keys[i] = k_cur[idx[i]];
        vals[i] = v_cur[idx[i]];
      }
      K* k_out = flip ? k_alt : k_cur;
      V* v_out = flip ? v_alt : v_cur;
      std::memcpy(k_out, keys.data(), n * sizeof(K));
      std::memcpy(v_out, vals.data(), n * sizeof(V));
      std::memset(flip ? (void*)k_cur : (void*)k_alt, poison, n * sizeof(K));  // the other buffer: garbage
      std::memset(flip ? (void*)v_cur : (void*)v_alt, poison, n * sizeof(V));
      return std::string();
    });
    return cudaSuccess;
  }
};

}  // namespace cub
