"""jax_deepgemm: DeepSeek's DeepGEMM FP8 kernels for JAX on NVIDIA Hopper (sm_90a), as XLA FFI ops.

Every op is a jittable JAX primitive: on CUDA it runs the library's kernels, elsewhere it lowers to a
pure-jnp reference, so the same program runs on CPU and GPU.
"""

from jax_deepgemm.autodiff import fp8_grouped_linear as fp8_grouped_linear
from jax_deepgemm.autodiff import fp8_linear as fp8_linear
from jax_deepgemm._ffi import export_disabled_checks as export_disabled_checks
from jax_deepgemm._ffi import has_cuda_kernels as has_cuda_kernels
from jax_deepgemm.bf16_gemm import bf16_gemm_nn as bf16_gemm_nn
from jax_deepgemm.bf16_gemm import bf16_gemm_nt as bf16_gemm_nt
from jax_deepgemm.bf16_gemm import bf16_gemm_nt_reference as bf16_gemm_nt_reference
from jax_deepgemm.bf16_gemm import bf16_gemm_tn as bf16_gemm_tn
from jax_deepgemm.bf16_gemm import bf16_gemm_tt as bf16_gemm_tt
from jax_deepgemm.bf16_gemm import m_grouped_bf16_gemm_nt_contiguous as m_grouped_bf16_gemm_nt_contiguous
from jax_deepgemm.bf16_gemm import m_grouped_bf16_gemm_nt_masked as m_grouped_bf16_gemm_nt_masked
from jax_deepgemm.bf16_gemm import m_grouped_bf16_gemm_nt_ragged as m_grouped_bf16_gemm_nt_ragged
from jax_deepgemm.fp8_gemm import fp8_gemm_nn as fp8_gemm_nn
from jax_deepgemm.fp8_gemm import fp8_gemm_nt as fp8_gemm_nt
from jax_deepgemm.fp8_gemm import fp8_gemm_tn as fp8_gemm_tn
from jax_deepgemm.fp8_gemm import fp8_gemm_tt as fp8_gemm_tt
from jax_deepgemm.k_grouped_gemm import k_grouped_bf16_gemm_nt_contiguous as k_grouped_bf16_gemm_nt_contiguous
from jax_deepgemm.k_grouped_gemm import k_grouped_bf16_gemm_tn_contiguous as k_grouped_bf16_gemm_tn_contiguous
from jax_deepgemm.k_grouped_gemm import k_grouped_fp8_gemm_nt_contiguous as k_grouped_fp8_gemm_nt_contiguous
from jax_deepgemm.k_grouped_gemm import k_grouped_fp8_gemm_tn_contiguous as k_grouped_fp8_gemm_tn_contiguous
from jax_deepgemm.m_grouped_gemm import m_grouped_fp8_gemm_nt_contiguous as m_grouped_fp8_gemm_nt_contiguous
from jax_deepgemm.m_grouped_gemm import m_grouped_fp8_gemm_nt_masked as m_grouped_fp8_gemm_nt_masked
from jax_deepgemm.m_grouped_gemm import m_grouped_fp8_gemm_nt_ragged as m_grouped_fp8_gemm_nt_ragged
from jax_deepgemm.fp4 import build_fp4_paged_kv_cache as build_fp4_paged_kv_cache
from jax_deepgemm.fp4 import build_fp8_paged_kv_cache as build_fp8_paged_kv_cache
from jax_deepgemm.fp4 import fp4_dequantize as fp4_dequantize
from jax_deepgemm.fp4 import per_token_cast_to_fp4 as per_token_cast_to_fp4
from jax_deepgemm.mqa_logits import fp4_mqa_logits as fp4_mqa_logits
from jax_deepgemm.mqa_logits import fp4_paged_mqa_logits as fp4_paged_mqa_logits
from jax_deepgemm.mqa_logits import fp8_mqa_logits as fp8_mqa_logits
from jax_deepgemm.mqa_logits import fp8_paged_mqa_logits as fp8_paged_mqa_logits
from jax_deepgemm.mqa_logits import get_paged_mqa_logits_metadata as get_paged_mqa_logits_metadata
from jax_deepgemm.quantize import ceil_to_ue8m0 as ceil_to_ue8m0
from jax_deepgemm.quantize import per_block_cast_to_fp8 as per_block_cast_to_fp8
from jax_deepgemm.quantize import per_block_dequantize as per_block_dequantize
from jax_deepgemm.quantize import per_channel_cast_to_fp8 as per_channel_cast_to_fp8
from jax_deepgemm.quantize import per_channel_dequantize as per_channel_dequantize
from jax_deepgemm.quantize import per_token_cast_to_fp8 as per_token_cast_to_fp8
from jax_deepgemm.quantize import per_token_dequantize as per_token_dequantize
from jax_deepgemm.reference import fp8_gemm_nt_reference as fp8_gemm_nt_reference

__version__ = "0.1.0"
