// XLA FFI handler symbols of the lightning-indexer (DeepSeek-V3.2) MQA-logits family
// (ffi/mqa_logits.cu: ranged; ffi/paged_mqa_logits.cu: paged + schedule metadata).
#pragma once

#include "xla/ffi/api/api.h"

// logits[S, S_kv or max_seqlen_k] = sum_h relu(q[i,h].kv[j]) w[i,h] kv_scale[j], j in [ks_i, ke_i).
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmFp8MqaLogits);
// The same with packed E2M1 q / kv and packed UE8M0 per-32 scales.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmFp4MqaLogits);
// [num_sms + 1, 2] schedule of the paged kernels from context_lens [B, next_n].
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmPagedMqaLogitsMetadata);
// logits[B*next_n, max_context_len] over the fused paged FP8 cache.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmFp8PagedMqaLogits);
// logits[B*next_n, max_context_len] over the fused paged FP4 cache.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmFp4PagedMqaLogits);
