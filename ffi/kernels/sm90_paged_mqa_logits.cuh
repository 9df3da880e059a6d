// Paged lightning-indexer logits (decode) on SM90, mma.sync version (FP4, and the FP8 fallback; FP8
// normally runs sm90_paged_mqa_logits_wgmma.cuh), and the device-side schedule metadata.
//
// Work unit = (q atom, 256-token KV split) as in DeepGEMM: an atom is 2 of the next_n query tokens
// of a batch row (1 when next_n == 1), a split 4 tiles of 64 tokens. get_paged_mqa_logits_metadata
// (one warp) cuts the units of all rows into num_sms contiguous ranges; CTA s of the persistent
// paged kernel walks units [meta[s], meta[s+1]), tile by tile, gathering each tile's 64 tokens
// through the block table from the fused cache (per block: values, then scales) into the same
// shared-memory tile the ranged kernel uses, prefetching the next tile while computing the current
// one. Q (all heads of the atom's tokens) is loaded once per atom: consecutive units of an SM
// mostly share it. Context lengths and block-table entries read on the device are clamped
// (never an out-of-bounds access).
#pragma once

#include "kernels/sm90_mqa_logits.cuh"

namespace jdg {
namespace mqa {

__device__ __forceinline__ int PagedCtxLast(const Params& p, int b) {
  return min(max(__ldg(p.context_lens + int64_t(b) * p.next_n + p.next_n - 1), 0), p.ctx_cap);
}

// Moves (atom, split, sub) to the first existing tile at or after it inside [start, end) units.
__device__ __forceinline__ bool PagedSettle(const Params& p, int& atom, int& split, int& sub, int end_atom,
                                            int end_split) {
  const int total_atoms = p.batch * p.num_atoms;
  constexpr int kSubTiles = kSplitKv / kTileKv;
  while (true) {
    if (atom >= total_atoms) return false;
    if (!(atom < end_atom || (atom == end_atom && split < end_split))) return false;
    const int ctx = PagedCtxLast(p, atom / p.num_atoms);
    if (sub < kSubTiles && int64_t(split) * kSplitKv + sub * kTileKv < ctx) return true;
    if (sub == 0) {
      ++atom;  // this split starts past the context: the atom is done
      split = 0;
    } else {
      ++split;
      sub = 0;
    }
  }
}

template <int kD, bool kFp4>
__device__ __forceinline__ void LoadKvTilePaged(const Params& p, uint8_t* s_kv, float* s_ks, int b, int ctx, int t0) {
  constexpr int kLd = kD + kRowPad;
  constexpr int kChunks = kD / 16;
  constexpr int kSrcRow = kFp4 ? kD / 2 : kD;
  constexpr int kGroups = kD / 32;
  const int32_t* table = p.block_table + int64_t(b) * p.max_blocks;
  for (int c = threadIdx.x; c < kTileKv * kChunks; c += kThreads) {
    const int r = c / kChunks, ch = c % kChunks;
    const int t = t0 + r;
    const uint8_t* src = nullptr;
    if (t < ctx) {
      const int blk = min(max(__ldg(table + t / p.block_kv), 0), p.num_blocks - 1);
      src = p.kv + blk * p.block_bytes + int64_t(t % p.block_kv) * kSrcRow;
    }
    LoadRowChunk<kD, kFp4>(s_kv + r * kLd, src, ch, p.kv);
  }
  if (threadIdx.x < kTileKv) {
    const int t = t0 + threadIdx.x;
    uint32_t word = 0;
    if (t < ctx) {
      const int blk = min(max(__ldg(table + t / p.block_kv), 0), p.num_blocks - 1);
      const uint8_t* sf = p.kv + blk * p.block_bytes + int64_t(p.block_kv) * kSrcRow + int64_t(t % p.block_kv) * 4;
      word = __ldg(reinterpret_cast<const uint32_t*>(sf));
    }
    if constexpr (!kFp4) {
      s_ks[threadIdx.x] = __uint_as_float(word);
    } else {
#pragma unroll
      for (int gi = 0; gi < kGroups; ++gi)
        s_ks[threadIdx.x * kGroups + gi] = t < ctx ? Ue8m0ToFloat(word >> (8 * gi)) : 0.f;
    }
  }
}

// kNC = columns per MMA tile: min(atom tokens * H, 128); an atom of 2 tokens with H = 128 is 2 chunks.
template <int kD, int kH, int kNC, bool kFp4>
__global__ void __launch_bounds__(kThreads, 1) PagedMqaLogitsKernel(const __grid_constant__ Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int kQRows = 2 * kH;
  using L = Smem<kD, kQRows>;
  constexpr int kGroups = L::kGroups;
  constexpr int kTokPerChunk = kNC / kH;
  static_assert(kNC <= 128 && kNC % kH == 0 && kQRows >= kNC, "tile columns");
  extern __shared__ __align__(128) uint8_t smem[];
  const float* s_w = reinterpret_cast<const float*>(smem + L::kW);
  const float* s_qs = reinterpret_cast<const float*>(smem + L::kQs);
  float* s_out = reinterpret_cast<float*>(smem + L::kOut);
  float* s_ks_base = reinterpret_cast<float*>(smem + L::kKs);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int total_atoms = p.batch * p.num_atoms;

  // Schedule row `row` is shared by ctas_per_row CTAs, CTA `mine` taking its tiles mine, mine + k, ...
  // (more loads in flight per SM than one CTA's two stages).
  const int row = blockIdx.x / p.ctas_per_row, mine = blockIdx.x % p.ctas_per_row;
  int atom = min(max(__ldg(p.meta + 2 * row), 0), total_atoms);
  int split = max(__ldg(p.meta + 2 * row + 1), 0);
  const int end_atom = min(max(__ldg(p.meta + 2 * row + 2), 0), total_atoms);
  const int end_split = max(__ldg(p.meta + 2 * row + 3), 0);
  auto settle_mine = [&](int& a, int& s, int& sb, int& counter) -> bool {
    while (PagedSettle(p, a, s, sb, end_atom, end_split)) {
      if (counter % p.ctas_per_row == mine) return true;
      ++sb;
      ++counter;
    }
    return false;
  };
  int sub = 0, counter = 0;
  bool have = settle_mine(atom, split, sub, counter);
  if (have) {
    const int b = atom / p.num_atoms;
    LoadKvTilePaged<kD, kFp4>(p, smem + L::kKv, s_ks_base, b, PagedCtxLast(p, b), split * kSplitKv + sub * kTileKv);
  }
  CpAsyncCommit();
  int loaded_atom = -1, stage = 0;
  while (have) {
    const int b = atom / p.num_atoms;
    const int j0 = (atom % p.num_atoms) * p.atom_size;
    const int count = min(p.atom_size, p.next_n - j0);
    const int ctx = PagedCtxLast(p, b);
    const int t0 = split * kSplitKv + sub * kTileKv;
    int n_atom = atom, n_split = split, n_sub = sub + 1, n_counter = counter + 1;
    const bool have_next = settle_mine(n_atom, n_split, n_sub, n_counter);
    if (atom != loaded_atom) {  // the previous tile's readers of sQ/sW finished at its last barrier
      LoadQ<kD, kH, kFp4>(p, smem, L::kQ, L::kW, L::kQs, (int64_t(b) * p.next_n + j0) * kH, count * kH,
                          int64_t(p.batch) * p.next_n * kH);
      CpAsyncCommit();
      loaded_atom = atom;
    }
    if (have_next) {
      const int nb = n_atom / p.num_atoms;
      LoadKvTilePaged<kD, kFp4>(p, smem + L::kKv + (stage ^ 1) * kTileKv * L::kLd,
                                s_ks_base + (stage ^ 1) * kTileKv * kGroups, nb, PagedCtxLast(p, nb),
                                n_split * kSplitKv + n_sub * kTileKv);
      CpAsyncCommit();
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    const uint8_t* s_kv = smem + L::kKv + stage * kTileKv * L::kLd;
    const float* s_ks = s_ks_base + stage * kTileKv * kGroups;
    const int chunks = (count * kH + kNC - 1) / kNC;
    for (int c = 0; c < chunks; ++c) {
      float acc[kNC / 8][4];
      TileMma<kD, kNC, kFp4>(s_kv, smem + L::kQ + c * kNC * L::kLd, s_ks, s_qs + c * kNC * kGroups, acc, warp, lane);
      TileReduce<kH, kNC, kFp4>(acc, s_w + c * kNC, s_ks, s_out + c * kTokPerChunk * kTileKv, warp, lane);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < count * kTileKv; idx += kThreads) {
      const int tok = idx / kTileKv;
      const int t = t0 + idx % kTileKv;
      if (t >= p.out_cols) continue;
      const int out_row = b * p.next_n + j0 + tok;
      const int ctx_j = min(max(__ldg(p.context_lens + out_row), 0), ctx);
      const float v = s_out[idx];
      StoreLogit(p, int64_t(out_row) * p.out_cols + t, (p.clean && t >= ctx_j) ? -INFINITY : v);
    }
    atom = n_atom, split = n_split, sub = n_sub, counter = n_counter;
    have = have_next;
    stage ^= 1;
  }
#endif
}

// One warp: per-row split counts, their prefix sum (dynamic shared memory, batch words), then the
// start unit of each SM (contiguous ranges, the last `total % num_sms` SMs one unit more).
__global__ void __launch_bounds__(32) PagedMqaLogitsMetadataKernel(const int32_t* context_lens, int batch,
                                                                   int next_n, int num_sms, int32_t* meta) {
  extern __shared__ uint32_t prefix[];
  const int lane = threadIdx.x;
  uint32_t carry = 0;
  for (int base = 0; base < batch; base += 32) {
    const int i = base + lane;
    const int ctx = i < batch ? max(__ldg(context_lens + int64_t(i) * next_n + next_n - 1), 0) : 0;
    uint32_t x = (static_cast<uint32_t>(ctx) + kSplitKv - 1) / kSplitKv;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const uint32_t y = __shfl_up_sync(0xffffffffu, x, off);
      if (lane >= off) x += y;
    }
    x += carry;
    if (i < batch) prefix[i] = x;
    carry = __shfl_sync(0xffffffffu, x, 31);
  }
  __syncwarp();
  const uint32_t atoms = next_n >= 2 ? (next_n + 1) / 2 : 1;
  const uint32_t total = carry * atoms;
  const uint32_t q = total / num_sms, r = total % num_sms;
  const uint32_t pivot = num_sms - r;
  for (int sm = lane; sm < num_sms; sm += 32) {
    const uint32_t start = sm * q + (uint32_t(sm) > pivot ? sm - pivot : 0);
    int lo = 0, hi = batch;  // first row whose inclusive prefix * atoms exceeds start
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (prefix[mid] * atoms <= start)
        lo = mid + 1;
      else
        hi = mid;
    }
    const uint32_t prev = lo > 0 ? prefix[lo - 1] : 0;
    const uint32_t segs = lo < batch ? prefix[lo] - prev : 0;
    const uint32_t off = start - prev * atoms;
    meta[2 * sm] = int32_t(lo * atoms + (segs ? off / segs : 0));
    meta[2 * sm + 1] = int32_t(segs ? off % segs : 0);
  }
  if (lane == 0) {
    meta[2 * num_sms] = int32_t(batch * atoms);
    meta[2 * num_sms + 1] = 0;
  }
}

}  // namespace mqa
}  // namespace jdg
