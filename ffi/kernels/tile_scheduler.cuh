// Persistent tile order shared by producer and consumers of a GEMM kernel.
// Tiles are walked in bands of `band` N-blocks; inside a band the N-block varies fastest, so the
// CTAs resident at one time touch `band` B-panels and ~num_sms/band A-panels, all of which stay in L2.
#pragma once

namespace jdg {

struct TileScheduler {
  int num_m_blocks, num_n_blocks, num_tiles, band;

  __device__ __forceinline__ TileScheduler(int m, int n, int block_m, int block_n, int band_width)
      : num_m_blocks((m + block_m - 1) / block_m),
        num_n_blocks((n + block_n - 1) / block_n),
        num_tiles(num_m_blocks * num_n_blocks),
        band(band_width > 0 ? band_width : 1) {}

  __device__ __forceinline__ bool Get(int tile, int& m_block, int& n_block) const {
    if (tile >= num_tiles) return false;
    const int tiles_per_band = band * num_m_blocks;
    const int band_index = tile / tiles_per_band;
    const int in_band = tile - band_index * tiles_per_band;
    const int width = min(band, num_n_blocks - band_index * band);
    m_block = in_band / width;
    n_block = band_index * band + (in_band - m_block * width);
    return true;
  }
};

}  // namespace jdg
