// Shared-memory layouts of the persistent LSTM kernels: the single source of truth for how many bytes of dynamic
// shared memory each kernel needs and where each buffer lives. Pure C++ (no CUDA or torch headers) so the same
// constexpr functions size the launch on the host, carve the buffers on the device, and answer the Python-side
// query ops (extension.cpp) even in CPU-only builds. lstmkern/backends/cuda.py mirrors these formulas; a test
// checks that the two agree.
//
// Shape legend: T time steps, B batch, I input features, H hidden units, G groups, Hg = H / G, R rank (F-LSTM),
// BT the batch tile a CTA owns (rows of h it multiplies per step), C the thread-block-cluster size of the cluster
// kernels, Hs the hidden units one CTA of a cluster owns (Hg / C for G-LSTM, H / C for F-LSTM).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define LSTMKERN_HOST_DEVICE __host__ __device__
#else
#define LSTMKERN_HOST_DEVICE
#endif

namespace lstmkern {

// Element type of x, h and the weights. The cell state and every accumulation are float32 for all three.
enum class ElementKind : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

constexpr int kThreadsPerBlock = 256;
constexpr int kSmemAlignment = 128;  // every buffer starts 128-byte aligned (WMMA needs 32)
constexpr int kWmmaTile = 16;        // m16n16k16 fragments for the fp16/bf16 forward
// Padding of the WMMA operands' leading dimensions (elements): keeps ldm a legal multiple (8 halves / 4 floats) but
// shifts consecutive rows across banks.
constexpr int kWmmaHalfRowPad = 8;
constexpr int kWmmaFloatRowPad = 4;

// Batch tiles. The fp16/bf16 G-LSTM kernels (forward and backward) use WMMA, whose M dimension is 16; everything else
// uses FMA loops with one register accumulator per batch row, so a smaller tile keeps the register count low.
constexpr int kGlstmFwdBatchTileWmma = 16;
constexpr int kGlstmFwdBatchTileFma = 8;
constexpr int kGlstmBwdBatchTileWmma = 16;
constexpr int kGlstmBwdBatchTileFma = 8;
constexpr int kFlstmBatchTile = 8;

LSTMKERN_HOST_DEVICE constexpr int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}
LSTMKERN_HOST_DEVICE constexpr int64_t element_bytes(ElementKind kind) {
  return kind == ElementKind::kFloat32 ? 4 : 2;
}
LSTMKERN_HOST_DEVICE constexpr bool uses_wmma(ElementKind kind) { return kind != ElementKind::kFloat32; }
// Leading dimensions of a shared-memory tile n values wide, for the multi-CTA layouts: on the WMMA paths rows are
// padded (8 elements for fp16/bf16 operands, 4 for float32 accumulator tiles) so the rows of a 16 x 16 fragment start
// in different banks; the float32 FMA path reads rows whole and needs no padding.
LSTMKERN_HOST_DEVICE constexpr int64_t operand_tile_ld(int64_t n, ElementKind kind) {
  return uses_wmma(kind) ? n + kWmmaHalfRowPad : n;
}
LSTMKERN_HOST_DEVICE constexpr int64_t float_tile_ld(int64_t n, ElementKind kind) {
  return uses_wmma(kind) ? n + kWmmaFloatRowPad : n;
}
LSTMKERN_HOST_DEVICE constexpr int glstm_fwd_batch_tile(ElementKind kind) {
  return uses_wmma(kind) ? kGlstmFwdBatchTileWmma : kGlstmFwdBatchTileFma;
}
LSTMKERN_HOST_DEVICE constexpr int glstm_bwd_batch_tile(ElementKind kind) {
  return uses_wmma(kind) ? kGlstmBwdBatchTileWmma : kGlstmBwdBatchTileFma;
}

// Appends a buffer of `bytes` at the next aligned offset; returns its offset and advances `end`.
LSTMKERN_HOST_DEVICE constexpr int64_t carve(int64_t& end, int64_t bytes) {
  const int64_t offset = round_up(end, kSmemAlignment);
  end = offset + bytes;
  return offset;
}

// G-LSTM forward, one CTA per (group g, batch tile).
//   w:     W_hh[g]^T, (w_rows x w_ld) in the element type: w[k * w_ld + r] = W_hh[g][r][k]; for WMMA zero-padded to
//          (Kpad, Npad) with Kpad = roundup(Hg, 16), Npad = roundup(4Hg, 16), so it is the row-major B operand.
//   h:     h_{t-1} tile (BT x h_ld): element type for WMMA (A operand, zero-padded), float32 for FMA.
//   gates: recurrent product h W^T, (BT x gates_ld) float32.
//   c:     cell state (BT x Hg) float32.
struct GlstmFwdLayout {
  int64_t w_rows, w_ld, h_ld, gates_ld;
  int64_t w_offset, h_offset, gates_offset, c_offset, total_bytes;
};

LSTMKERN_HOST_DEVICE constexpr GlstmFwdLayout glstm_fwd_layout(int64_t hg, ElementKind kind) {
  GlstmFwdLayout layout{};
  const int64_t bt = glstm_fwd_batch_tile(kind);
  int64_t h_bytes_per_element = 4;
  if (uses_wmma(kind)) {
    layout.w_rows = round_up(hg, kWmmaTile);
    layout.w_ld = round_up(4 * hg, kWmmaTile) + kWmmaHalfRowPad;
    layout.h_ld = round_up(hg, kWmmaTile) + kWmmaHalfRowPad;
    layout.gates_ld = round_up(4 * hg, kWmmaTile) + kWmmaFloatRowPad;
    h_bytes_per_element = 2;
  } else {
    layout.w_rows = hg;
    layout.w_ld = 4 * hg;
    layout.h_ld = hg;
    layout.gates_ld = 4 * hg;
  }
  int64_t end = 0;
  layout.w_offset = carve(end, layout.w_rows * layout.w_ld * element_bytes(kind));
  layout.h_offset = carve(end, bt * layout.h_ld * h_bytes_per_element);
  layout.gates_offset = carve(end, bt * layout.gates_ld * 4);
  layout.c_offset = carve(end, bt * hg * 4);
  layout.total_bytes = round_up(end, kSmemAlignment);
  return layout;
}

// G-LSTM backward, one CTA per (group g, batch tile of BT = glstm_bwd_batch_tile rows). The recurrent product
// dh_{t-1} = dgates W_hh[g] takes dgates as the A operand and W_hh[g] as stored as the row-major B operand:
//   w:      W_hh[g] (w_rows x w_ld) element type, w[r * w_ld + k] = W_hh[g][r][k]; for WMMA zero-padded to
//           (Kpad, Npad + 8) with Kpad = roundup(4Hg, 16), Npad = roundup(Hg, 16).
//   dgates: (BT x dgates_ld) element type (fp16/bf16: rounded, the WMMA A operand, zero-padded to Kpad columns;
//           float32 for the FMA loop).
//   dh:     (BT x dh_ld) float32, the product (Npad columns for WMMA, of which the first Hg are read).
//   dc:     (BT x Hg) float32.
struct GlstmBwdLayout {
  int64_t batch_tile, w_rows, w_ld, dgates_ld, dh_ld;
  int64_t w_offset, dgates_offset, dh_offset, dc_offset, total_bytes;
};

LSTMKERN_HOST_DEVICE constexpr GlstmBwdLayout glstm_bwd_layout(int64_t hg, ElementKind kind) {
  GlstmBwdLayout layout{};
  const int64_t bt = glstm_bwd_batch_tile(kind);
  layout.batch_tile = bt;
  if (uses_wmma(kind)) {
    layout.w_rows = round_up(4 * hg, kWmmaTile);
    layout.w_ld = round_up(hg, kWmmaTile) + kWmmaHalfRowPad;
    layout.dgates_ld = round_up(4 * hg, kWmmaTile) + kWmmaHalfRowPad;
    layout.dh_ld = round_up(hg, kWmmaTile) + kWmmaFloatRowPad;
  } else {
    layout.w_rows = 4 * hg;
    layout.w_ld = hg;
    layout.dgates_ld = 4 * hg;
    layout.dh_ld = hg;
  }
  int64_t end = 0;
  layout.w_offset = carve(end, layout.w_rows * layout.w_ld * element_bytes(kind));
  layout.dgates_offset = carve(end, bt * layout.dgates_ld * element_bytes(kind));
  layout.dh_offset = carve(end, bt * layout.dh_ld * 4);
  layout.dc_offset = carve(end, bt * hg * 4);
  layout.total_bytes = round_up(end, kSmemAlignment);
  return layout;
}

// F-LSTM forward, one CTA per batch tile holding all of W1_h and W2 (the "fits one CTA" variant).
//   w1h_t: W1_h^T (H x R), w1h_t[k * R + q] = W1[q][I + k]; w2_t: W2^T (R x 4H), w2_t[q * 4H + r] = W2[r][q]
//   (transposed so the threads of a warp, which own consecutive output columns, read consecutive addresses).
//   h (BT x H), z (BT x R), gates (BT x 4H), c (BT x H): float32.
struct FlstmFwdLayout {
  int64_t w1h_offset, w2_offset, h_offset, z_offset, gates_offset, c_offset, total_bytes;
};

// `groups` > 1 only for a projected G-LSTM (see projected_fwd_layout below): the gate columns of group g read only
// its r / groups columns of z, so W2^T is (r / groups x 4H).
LSTMKERN_HOST_DEVICE constexpr FlstmFwdLayout flstm_fwd_layout(int64_t h, int64_t r, ElementKind kind,
                                                               int64_t groups = 1) {
  FlstmFwdLayout layout{};
  const int64_t bt = kFlstmBatchTile;
  int64_t end = 0;
  layout.w1h_offset = carve(end, h * r * element_bytes(kind));
  layout.w2_offset = carve(end, r / groups * 4 * h * element_bytes(kind));
  layout.h_offset = carve(end, bt * h * 4);
  layout.z_offset = carve(end, bt * r * 4);
  layout.gates_offset = carve(end, bt * 4 * h * 4);
  layout.c_offset = carve(end, bt * h * 4);
  layout.total_bytes = round_up(end, kSmemAlignment);
  return layout;
}

// F-LSTM backward: W2 (4H x R) and W1_h (R x H) as stored (row-major, threads own consecutive columns);
// dgates (BT x 4H), dz (BT x R), dh (BT x H), dc (BT x H) float32.
// `groups` > 1 only for a projected G-LSTM (see projected_bwd_cluster_size below): W2 := W_hh (G, 4Hg, Pg) is then
// held as (4Hg x P), w2[k * P + g Pg + q] = W_hh[g][k][q] (the block-diagonal product dz = dgates W_hh reads, for
// output column p of group g = p / Pg, that group's 4Hg dgates columns), 4H R / groups elements.
struct FlstmBwdLayout {
  int64_t w2_offset, w1h_offset, dgates_offset, dz_offset, dh_offset, dc_offset, total_bytes;
};

LSTMKERN_HOST_DEVICE constexpr FlstmBwdLayout flstm_bwd_layout(int64_t h, int64_t r, ElementKind kind,
                                                               int64_t groups = 1) {
  FlstmBwdLayout layout{};
  const int64_t bt = kFlstmBatchTile;
  int64_t end = 0;
  layout.w2_offset = carve(end, 4 * h * (r / groups) * element_bytes(kind));
  layout.w1h_offset = carve(end, r * h * element_bytes(kind));
  layout.dgates_offset = carve(end, bt * 4 * h * 4);
  layout.dz_offset = carve(end, bt * r * 4);
  layout.dh_offset = carve(end, bt * h * 4);
  layout.dc_offset = carve(end, bt * h * 4);
  layout.total_bytes = round_up(end, kSmemAlignment);
  return layout;
}

// What the persistent path needs for an op, forward and backward: the larger of the two layouts (autograd will run
// the backward on the same device, so "auto" only picks the kernels when both fit).
LSTMKERN_HOST_DEVICE constexpr int64_t glstm_persistent_smem_bytes(int64_t hg, ElementKind kind) {
  const int64_t fwd = glstm_fwd_layout(hg, kind).total_bytes;
  const int64_t bwd = glstm_bwd_layout(hg, kind).total_bytes;
  return fwd > bwd ? fwd : bwd;
}
LSTMKERN_HOST_DEVICE constexpr int64_t flstm_persistent_smem_bytes(int64_t h, int64_t r, ElementKind kind) {
  const int64_t fwd = flstm_fwd_layout(h, r, kind).total_bytes;
  const int64_t bwd = flstm_bwd_layout(h, r, kind).total_bytes;
  return fwd > bwd ? fwd : bwd;
}

// G-LSTM forward on a thread-block cluster (csrc/glstm_cluster.cu): one cluster of C CTAs per (group g, batch tile);
// CTA rank r owns hidden units [r Hs, (r+1) Hs) of the group and keeps their 4 gate row blocks of W_hh[g] resident.
// Accepted: C in {2, 4, 8} (8 is the portable cluster maximum) and Hs = Hg / C a multiple of 16 (whole WMMA tiles
// and 16-byte rows for the DSMEM copies), for every dtype; compute capability 9.x (the caller checks that).
//   w:      the CTA's gate columns of W_hh[g]^T, (Hg x w_ld) element type: w[k * w_ld + q * Hs + j] =
//           W_hh[g][q Hg + r Hs + j][k] for gate q in (i, f, g, o); the WMMA B operand (row-major).
//   h[0,1]: double-buffered h tile of the whole group (BT x h_ld): element type for WMMA (A operand), float32 for FMA.
//           Step t reads h[t % 2] (= h_{t-1}) and every CTA writes its slice of h_t into h[(t + 1) % 2] of all C CTAs.
//   gates:  the CTA's recurrent gate columns, (BT x gates_ld) float32, column q * Hs + j.
//   c:      the CTA's cell state slice (BT x Hs) float32.
constexpr int kClusterMaxSize = 8;
constexpr int kClusterUnitMultiple = 16;  // Hs must be a multiple of this

// The kernel choices below share these two searches. per_cta_bytes(size) is a layout's bytes per CTA at that cluster
// size or CTA count, -1 where the shape rule does not accept the size.
// The smallest cluster size C = 2, 4, ..., max_cluster_size whose CTAs fit smem_optin, on compute capability 9.x (the
// cluster kernels are built for sm_90a only); 0 where none does.
template <typename PerCtaBytes>
LSTMKERN_HOST_DEVICE constexpr int smallest_fitting_cluster(int max_cluster_size, PerCtaBytes per_cta_bytes,
                                                            int64_t smem_optin, int cc_major) {
  if (cc_major != 9) return 0;
  for (int cluster_size = 2; cluster_size <= max_cluster_size; cluster_size *= 2) {
    const int64_t bytes = per_cta_bytes(cluster_size);
    if (bytes >= 0 && bytes <= smem_optin) return cluster_size;
  }
  return 0;
}

// The smallest CTA count N <= sm_count (one CTA per SM, all co-resident) with 16 N <= h whose CTAs fit smem_optin; 0
// where none does.
template <typename PerCtaBytes>
LSTMKERN_HOST_DEVICE constexpr int smallest_fitting_grid(int64_t h, int64_t sm_count, PerCtaBytes per_cta_bytes,
                                                         int64_t smem_optin) {
  for (int64_t ctas = 1; ctas <= sm_count && ctas * kClusterUnitMultiple <= h; ++ctas) {
    const int64_t bytes = per_cta_bytes(ctas);
    if (bytes >= 0 && bytes <= smem_optin) return static_cast<int>(ctas);
  }
  return 0;
}

struct GlstmClusterFwdLayout {
  int64_t units_per_cta, w_rows, w_ld, h_ld, gates_ld;
  int64_t w_offset, h_offset[2], gates_offset, c_offset, total_bytes;
};

LSTMKERN_HOST_DEVICE constexpr bool glstm_cluster_shape_ok(int64_t hg, int64_t cluster_size) {
  return (cluster_size == 2 || cluster_size == 4 || cluster_size == kClusterMaxSize) &&
         hg % (cluster_size * kClusterUnitMultiple) == 0 && hg > 0;
}

// Only meaningful where glstm_cluster_shape_ok(hg, cluster_size).
LSTMKERN_HOST_DEVICE constexpr GlstmClusterFwdLayout glstm_cluster_fwd_layout(int64_t hg, int64_t cluster_size,
                                                                              ElementKind kind) {
  GlstmClusterFwdLayout layout{};
  const int64_t bt = glstm_fwd_batch_tile(kind);
  const int64_t hs = hg / cluster_size;
  layout.units_per_cta = hs;
  layout.w_rows = hg;
  // The h tile is the WMMA A operand in the element type, or float32 for the FMA loop.
  const int64_t h_bytes_per_element = uses_wmma(kind) ? 2 : 4;
  layout.w_ld = operand_tile_ld(4 * hs, kind);
  layout.h_ld = operand_tile_ld(hg, kind);
  layout.gates_ld = float_tile_ld(4 * hs, kind);
  int64_t end = 0;
  layout.w_offset = carve(end, layout.w_rows * layout.w_ld * element_bytes(kind));
  layout.h_offset[0] = carve(end, bt * layout.h_ld * h_bytes_per_element);
  layout.h_offset[1] = carve(end, bt * layout.h_ld * h_bytes_per_element);
  layout.gates_offset = carve(end, bt * layout.gates_ld * 4);
  layout.c_offset = carve(end, bt * hs * 4);
  layout.total_bytes = round_up(end, kSmemAlignment);
  return layout;
}

// Bytes per CTA of the cluster forward with `cluster_size` CTAs, or -1 where that size is not accepted for hg.
LSTMKERN_HOST_DEVICE constexpr int64_t glstm_cluster_smem_bytes(int64_t hg, int64_t cluster_size, ElementKind kind) {
  return glstm_cluster_shape_ok(hg, cluster_size) ? glstm_cluster_fwd_layout(hg, cluster_size, kind).total_bytes : -1;
}

// G-LSTM backward on a thread-block cluster (csrc/glstm_cluster.cu), same decomposition and shape rule as the forward
// (glstm_cluster_shape_ok), BT = glstm_bwd_batch_tile. Rows padded as in the other multi-CTA layouts (operand_tile_ld,
// float_tile_ld); Hs and Hg are whole WMMA tiles, so nothing else is padded.
//   w:            the CTA's gate rows of W_hh[g] as stored (4Hs x w_ld) element type: w[(q Hs + j) w_ld + k] =
//                 W_hh[g][q Hg + r Hs + j][k]; the row-major B operand of the partial product.
//   dgates:       the CTA's gate gradients of the step, (BT x dgates_ld), column q * Hs + j: element type (rounded,
//                 the WMMA A operand) for fp16/bf16, float32 for fp32.
//   partial[0,1]: double-buffered (BT x partial_ld) float32 contribution of the CTA's gate rows to dh_{t-1} (all Hg
//                 columns); every CTA sums the C partials of its own columns through DSMEM.
//   dc:           the CTA's dc slice (BT x Hs) float32.
struct GlstmClusterBwdLayout {
  int64_t units_per_cta, batch_tile, w_ld, dgates_ld, partial_ld;
  int64_t w_offset, dgates_offset, partial_offset[2], dc_offset, total_bytes;
};

// Only meaningful where glstm_cluster_shape_ok(hg, cluster_size).
LSTMKERN_HOST_DEVICE constexpr GlstmClusterBwdLayout glstm_cluster_bwd_layout(int64_t hg, int64_t cluster_size,
                                                                              ElementKind kind) {
  GlstmClusterBwdLayout layout{};
  const int64_t bt = glstm_bwd_batch_tile(kind);
  const int64_t hs = hg / cluster_size;
  layout.units_per_cta = hs;
  layout.batch_tile = bt;
  layout.w_ld = operand_tile_ld(hg, kind);
  layout.dgates_ld = operand_tile_ld(4 * hs, kind);
  layout.partial_ld = float_tile_ld(hg, kind);
  int64_t end = 0;
  layout.w_offset = carve(end, 4 * hs * layout.w_ld * element_bytes(kind));
  layout.dgates_offset = carve(end, bt * layout.dgates_ld * element_bytes(kind));
  layout.partial_offset[0] = carve(end, bt * layout.partial_ld * 4);
  layout.partial_offset[1] = carve(end, bt * layout.partial_ld * 4);
  layout.dc_offset = carve(end, bt * hs * 4);
  layout.total_bytes = round_up(end, kSmemAlignment);
  return layout;
}

LSTMKERN_HOST_DEVICE constexpr int64_t glstm_cluster_bwd_smem_bytes(int64_t hg, int64_t cluster_size,
                                                                    ElementKind kind) {
  return glstm_cluster_shape_ok(hg, cluster_size) ? glstm_cluster_bwd_layout(hg, cluster_size, kind).total_bytes : -1;
}

// How the G-LSTM forward runs a group of hg units on a device with `smem_optin` bytes of opt-in shared memory per
// block and compute capability major `cc_major`: 1 = the single-CTA kernel (forward and backward both fit, so the
// whole op stays on the persistent kernels); else the smallest cluster size C whose per-CTA layout fits (compute
// capability 9.x only; the backward then runs on the cluster backward, glstm_bwd_cluster_size); else 1 again where
// the single-CTA forward alone fits; 0 = neither. lstmkern.backends.cuda.glstm_cluster_size mirrors this.
LSTMKERN_HOST_DEVICE constexpr int glstm_fwd_cluster_size(int64_t hg, ElementKind kind, int64_t smem_optin,
                                                          int cc_major) {
  if (glstm_persistent_smem_bytes(hg, kind) <= smem_optin) return 1;
  const int cluster = smallest_fitting_cluster(
      kClusterMaxSize,
      [&](int cluster_size) { return glstm_cluster_smem_bytes(hg, cluster_size, kind); },
      smem_optin, cc_major);
  return cluster != 0 ? cluster : (glstm_fwd_layout(hg, kind).total_bytes <= smem_optin ? 1 : 0);
}

// The backward counterpart, the op's automatic choice: 1 = the single-CTA backward fits, else the smallest fitting
// cluster size (compute capability 9.x), else 0 (lstmkern.backends.cuda.glstm_bwd then runs Triton's backward).
LSTMKERN_HOST_DEVICE constexpr int glstm_bwd_cluster_size(int64_t hg, ElementKind kind, int64_t smem_optin,
                                                          int cc_major) {
  if (glstm_bwd_layout(hg, kind).total_bytes <= smem_optin) return 1;
  return smallest_fitting_cluster(
      kClusterMaxSize,
      [&](int cluster_size) { return glstm_cluster_bwd_smem_bytes(hg, cluster_size, kind); },
      smem_optin, cc_major);
}

// F-LSTM forward on a thread-block cluster (csrc/flstm_cluster.cu): one cluster of C CTAs per batch tile; CTA rank r
// owns hidden units [r Hs, (r+1) Hs), Hs = H / C, and keeps resident the columns of W1_h for its units and the rows of
// W2 for its units' four gates. Accepted: C in {2, 4, 8, 16} (16 is beyond the portable maximum 8 and needs
// cudaFuncAttributeNonPortableClusterSizeAllowed; the launcher checks residency), Hs a multiple of 16 and R a multiple
// of 16 (whole WMMA tiles; C divides 16, so R / C columns per CTA in the z reduction), for every dtype; compute
// capability 9.x (the caller checks). BT = 16 rows for WMMA (fp16/bf16), kFlstmBatchTile = 8 for the fp32 FMA path.
//   w1h:         W1_h columns of the CTA's units, transposed: (Hs x w1h_ld) element type, w1h[k * w1h_ld + q] =
//                W1[q][I + r Hs + k] (the row-major B operand of the partial product; threads own consecutive q).
//   w2:          W2 rows of the CTA's units' gates, transposed: (R x w2_ld) element type, w2[q * w2_ld + g Hs + j] =
//                W2[g H + r Hs + j][q] for gate g in (i, f, g, o) (the row-major B operand of the gate product).
//   h:           the CTA's own slice of h_{t-1}, (BT x h_ld) element type (the A operand of the partial product).
//   partial[0,1]: double-buffered float32 (BT x partial_ld) partial z of the CTA's units; step t writes partial[t % 2]
//                and the gate tile of step t (BT x gates_ld, float32) lives in partial[(t + 1) % 2], so each buffer
//                is max(partial_ld, gates_ld) wide (see the hazard argument in flstm_cluster.cu).
//   z:           the full, reduced z (BT x z_ld) in the element type (rounded as the reference rounds it; the A
//                operand of the gate product); every CTA receives every column through DSMEM.
//   c:           the CTA's cell state slice (BT x Hs) float32.
// `groups` > 1 only for a projected G-LSTM (projected_cluster_fwd_layout below): W2 then holds the CTA's gate rows of
// its group, (r / groups x w2_ld), as the gate product reads only the group's r / groups columns of z.
constexpr int kFlstmClusterMaxSize = 16;  // non-portable on sm_90 (H100 and H200 allow 16)

struct FlstmClusterFwdLayout {
  int64_t units_per_cta, batch_tile, w1h_ld, w2_ld, h_ld, partial_ld, gates_ld, z_ld;
  int64_t w1h_offset, w2_offset, h_offset, partial_offset[2], z_offset, c_offset, total_bytes;
};

LSTMKERN_HOST_DEVICE constexpr int flstm_cluster_batch_tile(ElementKind kind) {
  return uses_wmma(kind) ? kWmmaTile : kFlstmBatchTile;
}

LSTMKERN_HOST_DEVICE constexpr bool flstm_cluster_shape_ok(int64_t h, int64_t r, int64_t cluster_size) {
  return (cluster_size == 2 || cluster_size == 4 || cluster_size == 8 || cluster_size == kFlstmClusterMaxSize) &&
         h > 0 && r > 0 && h % (cluster_size * kClusterUnitMultiple) == 0 && r % kWmmaTile == 0;
}

// Only meaningful where flstm_cluster_shape_ok(h, r, cluster_size).
LSTMKERN_HOST_DEVICE constexpr FlstmClusterFwdLayout flstm_cluster_fwd_layout(int64_t h, int64_t r,
                                                                              int64_t cluster_size, ElementKind kind,
                                                                              int64_t groups = 1) {
  FlstmClusterFwdLayout layout{};
  const int64_t bt = flstm_cluster_batch_tile(kind);
  const int64_t hs = h / cluster_size;
  const int64_t elem = element_bytes(kind);
  layout.units_per_cta = hs;
  layout.batch_tile = bt;
  layout.w1h_ld = operand_tile_ld(r, kind);
  layout.w2_ld = operand_tile_ld(4 * hs, kind);
  layout.h_ld = operand_tile_ld(hs, kind);
  layout.partial_ld = float_tile_ld(r, kind);
  layout.gates_ld = float_tile_ld(4 * hs, kind);
  layout.z_ld = operand_tile_ld(r, kind);
  const int64_t partial_bytes = bt * (layout.partial_ld > layout.gates_ld ? layout.partial_ld : layout.gates_ld) * 4;
  int64_t end = 0;
  layout.w1h_offset = carve(end, hs * layout.w1h_ld * elem);
  layout.w2_offset = carve(end, r / groups * layout.w2_ld * elem);
  layout.h_offset = carve(end, bt * layout.h_ld * elem);
  layout.partial_offset[0] = carve(end, partial_bytes);
  layout.partial_offset[1] = carve(end, partial_bytes);
  layout.z_offset = carve(end, bt * layout.z_ld * elem);
  layout.c_offset = carve(end, bt * hs * 4);
  layout.total_bytes = round_up(end, kSmemAlignment);
  return layout;
}

// Bytes per CTA of the cluster F-LSTM forward with `cluster_size` CTAs, or -1 where that size is not accepted.
LSTMKERN_HOST_DEVICE constexpr int64_t flstm_cluster_smem_bytes(int64_t h, int64_t r, int64_t cluster_size,
                                                                ElementKind kind) {
  return flstm_cluster_shape_ok(h, r, cluster_size) ? flstm_cluster_fwd_layout(h, r, cluster_size, kind).total_bytes
                                                    : -1;
}

// F-LSTM backward on a thread-block cluster (csrc/flstm_cluster_bwd.cu), the forward's decomposition in reverse time
// and the same shape rule (flstm_cluster_shape_ok) and batch tile (flstm_cluster_batch_tile). CTA rank r keeps its
// units' weights as stored (the transposes of the forward's tiles), each the row-major B operand of one product:
//   w2:           W2 rows of the CTA's units' gates, (4Hs x w2_ld) element type, w2[(g Hs + j) * w2_ld + q] =
//                 W2[g H + r Hs + j][q] (partial dz = dgates_own w2).
//   w1h:          W1_h columns of the CTA's units, (R x w1h_ld) element type, w1h[q * w1h_ld + k] = W1[q][I + r Hs + k]
//                 (dh_{t-1}[own] = dz w1h).
//   dgates / dz:  one buffer, max(dgates_ld, dz_ld) wide, holding in turn the CTA's gate gradients of the step
//                 (BT x dgates_ld, column g Hs + j; the A operand of the partial product) and the full, reduced dz
//                 (BT x dz_ld; the A operand of the dh product, every CTA receiving every column through DSMEM), both
//                 in the element type (rounded for fp16/bf16). Sharing it is what lets every shape of the cluster
//                 forward have a cluster backward (the hazard argument in flstm_cluster_bwd.cu covers it).
//   partial[0,1]: double-buffered float32 (BT x partial_ld) partial dz; step t writes partial[t % 2], and the dh tile
//                 of step t (BT x dh_ld float32, the recurrent gradient reaching h_{t-1} of the CTA's units) lives in
//                 partial[(t + 1) % 2], so each buffer is max(partial_ld, dh_ld) wide (hazards: flstm_cluster_bwd.cu).
//   dc:           the CTA's dc slice (BT x Hs) float32.
struct FlstmClusterBwdLayout {
  int64_t units_per_cta, batch_tile, w2_ld, w1h_ld, dgates_ld, partial_ld, dh_ld, dz_ld;
  int64_t w2_offset, w1h_offset, dgates_offset, partial_offset[2], dz_offset, dc_offset, total_bytes;
};

// Only meaningful where flstm_cluster_shape_ok(h, r, cluster_size).
// `groups` > 1 only for a projected G-LSTM (projected_cluster_bwd_smem_bytes below): the CTA's gate rows of W_hh then
// have its group's r / groups columns, so w2 is (4Hs x operand_tile_ld(r / groups)).
LSTMKERN_HOST_DEVICE constexpr FlstmClusterBwdLayout flstm_cluster_bwd_layout(int64_t h, int64_t r,
                                                                              int64_t cluster_size, ElementKind kind,
                                                                              int64_t groups = 1) {
  FlstmClusterBwdLayout layout{};
  const int64_t bt = flstm_cluster_batch_tile(kind);
  const int64_t hs = h / cluster_size;
  const int64_t elem = element_bytes(kind);
  layout.units_per_cta = hs;
  layout.batch_tile = bt;
  layout.w2_ld = operand_tile_ld(r / groups, kind);
  layout.w1h_ld = operand_tile_ld(hs, kind);
  layout.dgates_ld = operand_tile_ld(4 * hs, kind);
  layout.partial_ld = float_tile_ld(r, kind);
  layout.dh_ld = float_tile_ld(hs, kind);
  layout.dz_ld = operand_tile_ld(r, kind);
  const int64_t partial_bytes = bt * (layout.partial_ld > layout.dh_ld ? layout.partial_ld : layout.dh_ld) * 4;
  int64_t end = 0;
  layout.w2_offset = carve(end, 4 * hs * layout.w2_ld * elem);
  layout.w1h_offset = carve(end, r * layout.w1h_ld * elem);
  layout.dgates_offset = carve(end, bt * (layout.dgates_ld > layout.dz_ld ? layout.dgates_ld : layout.dz_ld) * elem);
  layout.dz_offset = layout.dgates_offset;
  layout.partial_offset[0] = carve(end, partial_bytes);
  layout.partial_offset[1] = carve(end, partial_bytes);
  layout.dc_offset = carve(end, bt * hs * 4);
  layout.total_bytes = round_up(end, kSmemAlignment);
  return layout;
}

// Bytes per CTA of the cluster F-LSTM backward with `cluster_size` CTAs, or -1 where that size is not accepted.
LSTMKERN_HOST_DEVICE constexpr int64_t flstm_cluster_bwd_smem_bytes(int64_t h, int64_t r, int64_t cluster_size,
                                                                    ElementKind kind) {
  return flstm_cluster_shape_ok(h, r, cluster_size) ? flstm_cluster_bwd_layout(h, r, cluster_size, kind).total_bytes
                                                    : -1;
}

// How the F-LSTM backward runs (the op's automatic choice; same convention as glstm_bwd_cluster_size): 1 = the
// single-CTA backward fits; else the smallest C in (2, 4, 8, 16) accepted for (h, r) whose per-CTA backward layout
// fits, on compute capability 9.x; else 0. lstmkern.backends.cuda.flstm_bwd_cluster_size mirrors this.
LSTMKERN_HOST_DEVICE constexpr int flstm_bwd_cluster_size(int64_t h, int64_t r, ElementKind kind, int64_t smem_optin,
                                                          int cc_major) {
  if (flstm_bwd_layout(h, r, kind).total_bytes <= smem_optin) return 1;
  return smallest_fitting_cluster(
      kFlstmClusterMaxSize,
      [&](int cluster_size) { return flstm_cluster_bwd_smem_bytes(h, r, cluster_size, kind); },
      smem_optin, cc_major);
}

// How the F-LSTM forward runs (same convention as glstm_fwd_cluster_size): 1 = the single-CTA kernels (forward and
// backward have the same footprint, so both fit); else the smallest C in (2, 4, 8, 16) accepted for (h, r) whose
// per-CTA layout fits, on compute capability 9.x (the backward then runs on its own cluster choice,
// flstm_bwd_cluster_size, or on Triton's; see lstmkern/backends/cuda.py); 0 = neither.
// lstmkern.backends.cuda.flstm_cluster_size mirrors this.
LSTMKERN_HOST_DEVICE constexpr int flstm_fwd_cluster_size(int64_t h, int64_t r, ElementKind kind, int64_t smem_optin,
                                                          int cc_major) {
  if (flstm_persistent_smem_bytes(h, r, kind) <= smem_optin) return 1;
  const int cluster = smallest_fitting_cluster(
      kFlstmClusterMaxSize,
      [&](int cluster_size) { return flstm_cluster_smem_bytes(h, r, cluster_size, kind); },
      smem_optin, cc_major);
  return cluster != 0 ? cluster : (flstm_fwd_layout(h, r, kind).total_bytes <= smem_optin ? 1 : 0);
}

// Projected layers (LSTMP: weight_hr (P, H), h_t = W_hr m_t with m_t = o_t * tanh(c_t)) of a G-LSTM with G >= 1 groups
// (G = 1: a plain LSTMP) run on the F-LSTM forward kernels (csrc/flstm_persistent.cu, csrc/flstm_cluster.cu,
// csrc/flstm_grid.cu) in their projected mode. A projected step is gates_t = P_t + W_hh (W_hr m_{t-1}): the F-LSTM form
// gates_t = P_t + W2 (W1_h h_{t-1}) with W1_h := W_hr (P x H), R := P, W2 := W_hh and the cell's own output m in place
// of h; the z the F-LSTM kernels form and exchange each step is then the layer's output h_t itself. Group g's gate rows
// read only its Pg = P / G columns of z (W_hh is (G, 4Hg, Pg)), so W2 stays narrow: (Pg x 4H) on one CTA, (Pg x 4Hs)
// per cluster CTA. Layouts: flstm_fwd_layout / flstm_cluster_fwd_layout with r = P and `groups` = G.
//   Single CTA: any H, P with H and P divisible by G (float32 FMA products, no tile constraint).
//   Cluster: flstm_cluster_shape_ok(H, P, C) and, so that every CTA's Hs = H / C units lie in one group, C a
//   multiple of G, and Pg a multiple of 16 (whole WMMA k-tiles, 32-byte aligned column offset of the group in z).
//   Grid (where neither fits): projected_grid_shape_ok below, the same conditions with N CTAs.
LSTMKERN_HOST_DEVICE constexpr bool projected_shape_ok(int64_t h, int64_t p, int64_t groups) {
  return h > 0 && p > 0 && groups > 0 && h % groups == 0 && p % groups == 0;
}

LSTMKERN_HOST_DEVICE constexpr bool projected_cluster_shape_ok(int64_t h, int64_t p, int64_t groups,
                                                               int64_t cluster_size) {
  return projected_shape_ok(h, p, groups) && flstm_cluster_shape_ok(h, p, cluster_size) &&
         cluster_size % groups == 0 && (p / groups) % kWmmaTile == 0;
}

// Bytes per block of the single-CTA projected forward, or -1 where (h, p, groups) is not accepted.
LSTMKERN_HOST_DEVICE constexpr int64_t projected_smem_bytes(int64_t h, int64_t p, int64_t groups, ElementKind kind) {
  return projected_shape_ok(h, p, groups) ? flstm_fwd_layout(h, p, kind, groups).total_bytes : -1;
}

// Bytes per CTA of the cluster projected forward with `cluster_size` CTAs, or -1 where that size is not accepted.
LSTMKERN_HOST_DEVICE constexpr int64_t projected_cluster_smem_bytes(int64_t h, int64_t p, int64_t groups,
                                                                    int64_t cluster_size, ElementKind kind) {
  return projected_cluster_shape_ok(h, p, groups, cluster_size)
             ? flstm_cluster_fwd_layout(h, p, cluster_size, kind, groups).total_bytes
             : -1;
}

// How the projected forward runs: 1 = the single-CTA kernel (its layout fits), else the smallest C in (2, 4, 8, 16)
// accepted for (h, p, groups) whose per-CTA layout fits, on compute capability 9.x; 0 = neither (then the grid
// forward, projected_fwd_grid_ctas, or the backend uses Triton). The backward has its own choice
// (projected_bwd_cluster_size). lstmkern.backends.cuda.projected_cluster_size mirrors this.
LSTMKERN_HOST_DEVICE constexpr int projected_fwd_cluster_size(int64_t h, int64_t p, int64_t groups, ElementKind kind,
                                                              int64_t smem_optin, int cc_major) {
  const int64_t single = projected_smem_bytes(h, p, groups, kind);
  if (single >= 0 && single <= smem_optin) return 1;
  return smallest_fitting_cluster(
      kFlstmClusterMaxSize,
      [&](int cluster_size) { return projected_cluster_smem_bytes(h, p, groups, cluster_size, kind); },
      smem_optin, cc_major);
}

// F-LSTM forward on the whole grid (csrc/flstm_grid.cu), for layers whose weights exceed any cluster (e.g.
// flstm-train, H = 2048, R = 512 in bf16: 10 MiB of W1_h and W2). N CTAs, all co-resident (cooperative launch,
// N <= SM count), one group for the whole batch; CTA r owns hidden units [r Hs, (r+1) Hs), Hs = H / N, and keeps
// resident its W1_h columns and its units' W2 gate rows exactly as the cluster forward does; z is exchanged through
// global memory (the launcher's workspace) with two grid barriers per step. Accepted: N >= 1, Hs a multiple of 16 and
// R a multiple of 16 (whole WMMA tiles), for every dtype; compute capability >= 8.0. BT = 16 rows for WMMA
// (fp16/bf16), kFlstmBatchTile = 8 for the float32 FMA path; the CTA loops over the ceil(B / BT) batch tiles, so its
// shared memory does not depend on B: h_{t-1} and c_{t-1} of its own units are read back from the kernel's own outputs
// (output[t-1] and cell[t-1], or h0 and c0), which the same CTA wrote.
//   w1h:   W1_h columns of the CTA's units, transposed (Hs x w1h_ld) element type, as in the cluster layout.
//   w2:    W2 rows of the CTA's units' gates, transposed (R x w2_ld) element type, as in the cluster layout.
//   h:     one batch tile of the CTA's slice of h_{t-1}, (BT x h_ld) element type (A operand of the partial product).
//   z:     one batch tile of the reduced z, (BT x z_ld) element type (A operand of the gate product).
//   gates: one batch tile of the CTA's recurrent gate columns, (BT x gates_ld) float32, column g * Hs + j.
// Global workspace (allocated by the launcher, not shared memory): partials (N x Bp x R) float32 and z (Bp x R) in
// the element type, Bp = ceil(B / BT) BT.
struct FlstmGridFwdLayout {
  int64_t ctas, units_per_cta, batch_tile, w1h_ld, w2_ld, h_ld, z_ld, gates_ld;
  int64_t w1h_offset, w2_offset, h_offset, z_offset, gates_offset, total_bytes;
};

LSTMKERN_HOST_DEVICE constexpr bool flstm_grid_shape_ok(int64_t h, int64_t r, int64_t ctas) {
  return ctas >= 1 && h > 0 && r > 0 && h % (ctas * kClusterUnitMultiple) == 0 && r % kWmmaTile == 0;
}

// Only meaningful where flstm_grid_shape_ok(h, r, ctas).
// `groups` > 1 only for a projected G-LSTM (projected_grid_shape_ok below): W2 then has r / groups rows.
LSTMKERN_HOST_DEVICE constexpr FlstmGridFwdLayout flstm_grid_fwd_layout(int64_t h, int64_t r, int64_t ctas,
                                                                        ElementKind kind, int64_t groups = 1) {
  FlstmGridFwdLayout layout{};
  const int64_t bt = flstm_cluster_batch_tile(kind);
  const int64_t hs = h / ctas;
  const int64_t elem = element_bytes(kind);
  layout.ctas = ctas;
  layout.units_per_cta = hs;
  layout.batch_tile = bt;
  layout.w1h_ld = operand_tile_ld(r, kind);
  layout.w2_ld = operand_tile_ld(4 * hs, kind);
  layout.h_ld = operand_tile_ld(hs, kind);
  layout.z_ld = operand_tile_ld(r, kind);
  layout.gates_ld = float_tile_ld(4 * hs, kind);
  int64_t end = 0;
  layout.w1h_offset = carve(end, hs * layout.w1h_ld * elem);
  layout.w2_offset = carve(end, r / groups * layout.w2_ld * elem);
  layout.h_offset = carve(end, bt * layout.h_ld * elem);
  layout.z_offset = carve(end, bt * layout.z_ld * elem);
  layout.gates_offset = carve(end, bt * layout.gates_ld * 4);
  layout.total_bytes = round_up(end, kSmemAlignment);
  return layout;
}

// Bytes per CTA of the grid F-LSTM forward with `ctas` CTAs, or -1 where that CTA count is not accepted.
LSTMKERN_HOST_DEVICE constexpr int64_t flstm_grid_smem_bytes(int64_t h, int64_t r, int64_t ctas, ElementKind kind) {
  return flstm_grid_shape_ok(h, r, ctas) ? flstm_grid_fwd_layout(h, r, ctas, kind).total_bytes : -1;
}

// The CTA count of the grid F-LSTM forward on a device with `smem_optin` bytes per block and `sm_count` SMs: the
// smallest N <= sm_count accepted for (h, r) whose per-CTA layout fits (one CTA per SM is then always resident: 256
// threads and at most 255 registers per thread), or 0. Fewer CTAs mean fewer partials to reduce and cheaper grid
// barriers. lstmkern.backends.cuda.flstm_grid_ctas mirrors this.
LSTMKERN_HOST_DEVICE constexpr int flstm_fwd_grid_ctas(int64_t h, int64_t r, ElementKind kind, int64_t smem_optin,
                                                       int64_t sm_count) {
  return smallest_fitting_grid(
      h, sm_count, [&](int64_t ctas) { return flstm_grid_smem_bytes(h, r, ctas, kind); }, smem_optin);
}

// F-LSTM backward on the whole grid (csrc/flstm_grid_bwd.cu), the grid forward's decomposition in reverse time and
// the same shape rule (flstm_grid_shape_ok) and batch tile (flstm_cluster_batch_tile): CTA r owns hidden units
// [r Hs, (r+1) Hs), Hs = H / N, for the whole batch and keeps its units' weights resident as stored, exactly as the
// cluster backward does (each the row-major B operand of one product); dz is exchanged through a global workspace with
// two grid barriers per step. Shared memory holds one batch tile at a time, so it does not depend on B:
//   w2:     W2 rows of the CTA's units' gates, (4Hs x w2_ld) element type, w2[(g Hs + j) * w2_ld + q] =
//           W2[g H + r Hs + j][q] (partial dz = dgates_own w2).
//   w1h:    W1_h columns of the CTA's units, (R x w1h_ld) element type, w1h[q * w1h_ld + k] = W1[q][I + r Hs + k]
//           (dh_{t-1}[own] = dz w1h).
//   dgates: one batch tile of the CTA's gate gradients, (BT x dgates_ld), column g Hs + j: element type (rounded for
//           fp16/bf16, the WMMA A operand), float32 for fp32.
//   dz:     one batch tile of the reduced dz, (BT x dz_ld) element type (the A operand of the dh product).
//   dh:     one batch tile of the recurrent gradient reaching the CTA's units of h_{t-1}, (BT x dh_ld) float32.
// Global workspace (allocated by the launcher): partials (N x Bp x R) float32 and the rounded dz (Bp x R) element
// type, Bp = ceil(B / BT) BT; the running dc of the CTA's units lives in the dc0 output (B x H float32).
struct FlstmGridBwdLayout {
  int64_t ctas, units_per_cta, batch_tile, w2_ld, w1h_ld, dgates_ld, dz_ld, dh_ld;
  int64_t w2_offset, w1h_offset, dgates_offset, dz_offset, dh_offset, total_bytes;
};

// Only meaningful where flstm_grid_shape_ok(h, r, ctas).
// `projected` (a projected G-LSTM, projected_grid_bwd_smem_bytes below): w2 is (4Hs x operand_tile_ld(r / groups)),
// the CTA's gate rows of W_hh with its group's columns, and the dgates and dz tiles share one buffer,
// max(dgates_ld, dz_ld) wide, as in the cluster backward (a tile's dz is dead once its dm product has read it; the
// kernel then orders each tile's partial product before the next tile's staging with a barrier), so that every shape
// whose projected grid forward fits has a grid backward that fits with the same N (W_hr's columns as stored, P x Hs,
// pad P rows where the forward's transposed tile pads Hs).
LSTMKERN_HOST_DEVICE constexpr FlstmGridBwdLayout flstm_grid_bwd_layout(int64_t h, int64_t r, int64_t ctas,
                                                                        ElementKind kind, int64_t groups = 1,
                                                                        bool projected = false) {
  FlstmGridBwdLayout layout{};
  const int64_t bt = flstm_cluster_batch_tile(kind);
  const int64_t hs = h / ctas;
  const int64_t elem = element_bytes(kind);
  layout.ctas = ctas;
  layout.units_per_cta = hs;
  layout.batch_tile = bt;
  layout.w2_ld = operand_tile_ld(r / groups, kind);
  layout.w1h_ld = operand_tile_ld(hs, kind);
  layout.dgates_ld = operand_tile_ld(4 * hs, kind);
  layout.dz_ld = operand_tile_ld(r, kind);
  layout.dh_ld = float_tile_ld(hs, kind);
  int64_t end = 0;
  layout.w2_offset = carve(end, 4 * hs * layout.w2_ld * elem);
  layout.w1h_offset = carve(end, r * layout.w1h_ld * elem);
  if (projected) {
    layout.dgates_offset = carve(end, bt * (layout.dgates_ld > layout.dz_ld ? layout.dgates_ld : layout.dz_ld) * elem);
    layout.dz_offset = layout.dgates_offset;
  } else {
    layout.dgates_offset = carve(end, bt * layout.dgates_ld * elem);
    layout.dz_offset = carve(end, bt * layout.dz_ld * elem);
  }
  layout.dh_offset = carve(end, bt * layout.dh_ld * 4);
  layout.total_bytes = round_up(end, kSmemAlignment);
  return layout;
}

// Bytes per CTA of the grid F-LSTM backward with `ctas` CTAs, or -1 where that CTA count is not accepted.
LSTMKERN_HOST_DEVICE constexpr int64_t flstm_grid_bwd_smem_bytes(int64_t h, int64_t r, int64_t ctas,
                                                                 ElementKind kind) {
  return flstm_grid_shape_ok(h, r, ctas) ? flstm_grid_bwd_layout(h, r, ctas, kind).total_bytes : -1;
}

// The CTA count of the grid F-LSTM backward (the op's automatic choice where flstm_bwd_cluster_size finds no single CTA
// or cluster): the smallest N <= sm_count accepted for (h, r) whose per-CTA backward layout fits, or 0.
// lstmkern.backends.cuda.flstm_bwd_grid_ctas mirrors this.
LSTMKERN_HOST_DEVICE constexpr int flstm_bwd_grid_ctas(int64_t h, int64_t r, ElementKind kind, int64_t smem_optin,
                                                       int64_t sm_count) {
  return smallest_fitting_grid(
      h, sm_count, [&](int64_t ctas) { return flstm_grid_bwd_smem_bytes(h, r, ctas, kind); }, smem_optin);
}

// The projected mode of the grid forward (csrc/flstm_grid.cu; see projected_fwd_layout above): flstm_grid_shape_ok
// for (h, p, N), N a multiple of G (each CTA's Hs units lie in one group) and P / G a multiple of 16. It needs a
// global workspace for m (B x H, element type) besides the partials; its z is the output itself.
LSTMKERN_HOST_DEVICE constexpr bool projected_grid_shape_ok(int64_t h, int64_t p, int64_t groups, int64_t ctas) {
  return projected_shape_ok(h, p, groups) && flstm_grid_shape_ok(h, p, ctas) && ctas % groups == 0 &&
         (p / groups) % kWmmaTile == 0;
}

LSTMKERN_HOST_DEVICE constexpr int64_t projected_grid_smem_bytes(int64_t h, int64_t p, int64_t groups, int64_t ctas,
                                                                 ElementKind kind) {
  return projected_grid_shape_ok(h, p, groups, ctas) ? flstm_grid_fwd_layout(h, p, ctas, kind, groups).total_bytes
                                                     : -1;
}

// The CTA count of the projected grid forward where neither one CTA nor a cluster takes the layer
// (projected_fwd_cluster_size = 0): the smallest accepted N <= sm_count whose per-CTA layout fits, or 0.
// lstmkern.backends.cuda.projected_grid_ctas mirrors this.
LSTMKERN_HOST_DEVICE constexpr int projected_fwd_grid_ctas(int64_t h, int64_t p, int64_t groups, ElementKind kind,
                                                           int64_t smem_optin, int64_t sm_count) {
  return smallest_fitting_grid(
      h, sm_count, [&](int64_t ctas) { return projected_grid_smem_bytes(h, p, groups, ctas, kind); }, smem_optin);
}

// The projected backward (BPTT of a projected G-LSTM, lstmkern/reference.py glstm_reference_backward with weight_hr)
// runs on the F-LSTM backward kernels in their projected mode (csrc/flstm_persistent.cu, csrc/flstm_cluster_bwd.cu,
// csrc/flstm_grid_bwd.cu), with W1_h := W_hr (P x H), R := P, W2 := W_hh: per step the total gradient reaching
// h_t = W_hr m_t is dz_t = grad_output[t] + dgates_{t+1} W_hh (block-diagonal; the F-LSTM's dz, exchanged the same
// way, a CTA's partial covering only its group's Pg columns), dm_t = dz_t W_hr (the F-LSTM's dh product) feeds the
// cell backward. Same shape rules as the forward (projected_shape_ok, projected_cluster_shape_ok,
// projected_grid_shape_ok: a CTA's units lie in one group), layouts flstm_bwd_layout / flstm_cluster_bwd_layout /
// flstm_grid_bwd_layout with r = P and `groups` = G. The single-CTA backward holds the same buffer sizes as the
// single-CTA forward (in another order), so where one fits so does the other.
LSTMKERN_HOST_DEVICE constexpr int64_t projected_bwd_smem_bytes(int64_t h, int64_t p, int64_t groups,
                                                                ElementKind kind) {
  return projected_shape_ok(h, p, groups) ? flstm_bwd_layout(h, p, kind, groups).total_bytes : -1;
}

// Bytes per CTA of the cluster projected backward with `cluster_size` CTAs, or -1 where that size is not accepted.
LSTMKERN_HOST_DEVICE constexpr int64_t projected_cluster_bwd_smem_bytes(int64_t h, int64_t p, int64_t groups,
                                                                        int64_t cluster_size, ElementKind kind) {
  return projected_cluster_shape_ok(h, p, groups, cluster_size)
             ? flstm_cluster_bwd_layout(h, p, cluster_size, kind, groups).total_bytes
             : -1;
}

// Bytes per CTA of the grid projected backward with `ctas` CTAs, or -1 where that CTA count is not accepted.
LSTMKERN_HOST_DEVICE constexpr int64_t projected_grid_bwd_smem_bytes(int64_t h, int64_t p, int64_t groups,
                                                                     int64_t ctas, ElementKind kind) {
  return projected_grid_shape_ok(h, p, groups, ctas)
             ? flstm_grid_bwd_layout(h, p, ctas, kind, groups, /*projected=*/true).total_bytes
             : -1;
}

// How the projected backward runs (the op's automatic choice; the convention of projected_fwd_cluster_size): 1 = the
// single-CTA backward fits; else the smallest C in (2, 4, 8, 16) accepted for (h, p, groups) whose per-CTA backward
// layout fits, on compute capability 9.x; 0 = neither (then projected_bwd_grid_ctas).
// lstmkern.backends.cuda.projected_bwd_cluster_size mirrors this.
LSTMKERN_HOST_DEVICE constexpr int projected_bwd_cluster_size(int64_t h, int64_t p, int64_t groups, ElementKind kind,
                                                              int64_t smem_optin, int cc_major) {
  const int64_t single = projected_bwd_smem_bytes(h, p, groups, kind);
  if (single >= 0 && single <= smem_optin) return 1;
  return smallest_fitting_cluster(
      kFlstmClusterMaxSize,
      [&](int cluster_size) { return projected_cluster_bwd_smem_bytes(h, p, groups, cluster_size, kind); },
      smem_optin, cc_major);
}

// The CTA count of the grid projected backward where projected_bwd_cluster_size is 0: the smallest accepted
// N <= sm_count whose per-CTA backward layout fits, or 0. lstmkern.backends.cuda.projected_bwd_grid_ctas mirrors this.
LSTMKERN_HOST_DEVICE constexpr int projected_bwd_grid_ctas(int64_t h, int64_t p, int64_t groups, ElementKind kind,
                                                           int64_t smem_optin, int64_t sm_count) {
  return smallest_fitting_grid(
      h, sm_count, [&](int64_t ctas) { return projected_grid_bwd_smem_bytes(h, p, groups, ctas, kind); }, smem_optin);
}

// Compile-time spot checks of the layout arithmetic (Hg = 3 in fp16: Kpad 16, Npad 16).
static_assert(glstm_fwd_layout(3, ElementKind::kFloat16).w_rows == 16);
static_assert(glstm_fwd_layout(3, ElementKind::kFloat16).w_ld == 24);
static_assert(glstm_fwd_layout(3, ElementKind::kFloat16).h_offset == 768);  // 16 * 24 * 2 bytes, already aligned
static_assert(glstm_fwd_layout(64, ElementKind::kFloat32).total_bytes ==
              64 * 256 * 4 + 8 * 64 * 4 + 8 * 256 * 4 + 8 * 64 * 4);
// The headline shape, Hg = 256 in bf16 (W_hh[g] alone is 512 KiB): 4 CTAs of 135168 + 2 * 8448 + 16640 + 4096 bytes.
static_assert(glstm_cluster_fwd_layout(256, 4, ElementKind::kBFloat16).total_bytes ==
              256 * 264 * 2 + 2 * 16 * 264 * 2 + 16 * 260 * 4 + 16 * 64 * 4);
static_assert(glstm_cluster_smem_bytes(256, 32, ElementKind::kBFloat16) == -1);
static_assert(glstm_cluster_bwd_smem_bytes(256, 4, ElementKind::kBFloat16) ==
              256 * 264 * 2 + 16 * 264 * 2 + 2 * 16 * 260 * 4 + 16 * 64 * 4);
static_assert(glstm_cluster_bwd_smem_bytes(256, 8, ElementKind::kFloat32) ==
              128 * 256 * 4 + 8 * 128 * 4 + 2 * 8 * 256 * 4 + 8 * 32 * 4);
static_assert(glstm_bwd_cluster_size(256, ElementKind::kBFloat16, 232448, 9) == 4);  // C = 2: 270336 B for W
static_assert(glstm_bwd_cluster_size(144, ElementKind::kBFloat16, 232448, 9) == 1);  // the largest single-CTA forward
static_assert(glstm_bwd_layout(3, ElementKind::kFloat16).w_ld == 24);
static_assert(glstm_bwd_layout(3, ElementKind::kFloat16).dgates_offset == 16 * 24 * 2);
static_assert(glstm_cluster_smem_bytes(96, 4, ElementKind::kBFloat16) == -1);  // Hs = 24 is not whole WMMA tiles
static_assert(glstm_fwd_cluster_size(256, ElementKind::kBFloat16, 232448, 9) == 4);  // C = 2 needs 266240 B for W
static_assert(glstm_fwd_cluster_size(256, ElementKind::kBFloat16, 232448, 8) == 0);
static_assert(glstm_fwd_cluster_size(64, ElementKind::kBFloat16, 232448, 9) == 1);

// The F-LSTM headline shape, H = 1024, R = 256 in bf16 (flstm-infer): W1_h and W2 alone are 2.5 MiB. C = 16 CTAs of
// 64 units: 64 x 264 x 2 (W1_h) + 256 x 264 x 2 (W2) + 16 x 72 x 2 (h) + 2 x 16 x 260 x 4 (partial / gates)
// + 16 x 264 x 2 (z) + 16 x 64 x 4 (c) = 217088 bytes; C = 8 would need 266240 bytes for W2 alone.
static_assert(flstm_cluster_smem_bytes(1024, 256, 16, ElementKind::kBFloat16) ==
              64 * 264 * 2 + 256 * 264 * 2 + 16 * 72 * 2 + 2 * 16 * 260 * 4 + 16 * 264 * 2 + 16 * 64 * 4);
static_assert(flstm_fwd_cluster_size(1024, 256, ElementKind::kBFloat16, 232448, 9) == 16);
static_assert(flstm_fwd_cluster_size(1024, 256, ElementKind::kBFloat16, 232448, 8) == 0);
static_assert(flstm_fwd_cluster_size(1024, 256, ElementKind::kFloat32, 232448, 9) == 0);  // C = 16: 320 KiB of weights
static_assert(flstm_fwd_cluster_size(256, 64, ElementKind::kBFloat16, 232448, 9) == 1);
static_assert(flstm_cluster_smem_bytes(1024, 256, 32, ElementKind::kBFloat16) == -1);
static_assert(flstm_cluster_smem_bytes(1024, 72, 16, ElementKind::kBFloat16) == -1);  // R not whole WMMA tiles
static_assert(flstm_cluster_smem_bytes(1000, 256, 2, ElementKind::kBFloat16) == -1);  // Hs = 500 not whole tiles
// Its backward at C = 16: 256 x 264 x 2 (W2 rows) + 256 x 72 x 2 (W1_h columns) + 16 x 264 x 2 (dgates / dz)
// + 2 x 16 x 260 x 4 (partial dz / dh) + 16 x 64 x 4 (dc) = 217856 bytes; C = 8 would need 270336 bytes for W2's rows
// alone. Where the cluster forward takes C, its backward fits C too (checked for H <= 8192, R <= 2048; e.g. fp16
// H = 1024, R = 272: 230912 bytes).
static_assert(flstm_cluster_bwd_smem_bytes(1024, 256, 16, ElementKind::kBFloat16) ==
              256 * 264 * 2 + 256 * 72 * 2 + 16 * 264 * 2 + 2 * 16 * 260 * 4 + 16 * 64 * 4);
static_assert(flstm_bwd_cluster_size(1024, 272, ElementKind::kFloat16, 232448, 9) == 16);
static_assert(flstm_bwd_cluster_size(1024, 256, ElementKind::kBFloat16, 232448, 9) == 16);
static_assert(flstm_bwd_cluster_size(1024, 256, ElementKind::kBFloat16, 232448, 8) == 0);
static_assert(flstm_bwd_cluster_size(256, 64, ElementKind::kBFloat16, 232448, 9) == 1);
static_assert(flstm_cluster_bwd_smem_bytes(1024, 72, 16, ElementKind::kBFloat16) == -1);
// flstm-train (H = 2048, R = 512) in bf16 on an H100 (227 KiB, 132 SMs): N = 64 CTAs of 32 units: 32 x 520 x 2 (W1_h)
// + 512 x 136 x 2 (W2) + 16 x 40 x 2 (h) + 16 x 520 x 2 (z) + 16 x 132 x 4 (gates) = 198912 bytes; N = 32 would need
// 270336 bytes for W2 alone. flstm-infer (H = 1024, R = 256) in bf16 on an A100 (163 KiB, 108 SMs): N = 32.
static_assert(flstm_grid_smem_bytes(2048, 512, 64, ElementKind::kBFloat16) ==
              32 * 520 * 2 + 512 * 136 * 2 + 16 * 40 * 2 + 16 * 520 * 2 + 16 * 132 * 4);
static_assert(flstm_fwd_grid_ctas(2048, 512, ElementKind::kBFloat16, 232448, 132) == 64);
static_assert(flstm_fwd_grid_ctas(2048, 512, ElementKind::kFloat32, 232448, 132) == 128);
static_assert(flstm_fwd_grid_ctas(2048, 512, ElementKind::kBFloat16, 232448, 48) == 0);
static_assert(flstm_fwd_grid_ctas(1024, 256, ElementKind::kBFloat16, 166912, 108) == 32);
static_assert(flstm_grid_smem_bytes(2048, 512, 48, ElementKind::kBFloat16) == -1);  // Hs = 42.67
static_assert(flstm_grid_smem_bytes(2048, 72, 64, ElementKind::kBFloat16) == -1);   // R not whole WMMA tiles
// Its backward on the grid, N = 64 as well: 128 x 520 x 2 (W2 rows) + 512 x 40 x 2 (W1_h columns) + 16 x 136 x 2
// (dgates) + 16 x 520 x 2 (dz) + 16 x 36 x 4 (dh) = 197376 bytes; in fp32 N = 128 (182784 bytes), as the forward.
static_assert(flstm_grid_bwd_smem_bytes(2048, 512, 64, ElementKind::kBFloat16) ==
              128 * 520 * 2 + 512 * 40 * 2 + 16 * 136 * 2 + 16 * 520 * 2 + 16 * 36 * 4);
static_assert(flstm_bwd_grid_ctas(2048, 512, ElementKind::kBFloat16, 232448, 132) == 64);
static_assert(flstm_bwd_grid_ctas(2048, 512, ElementKind::kFloat32, 232448, 132) == 128);
static_assert(flstm_bwd_grid_ctas(1024, 256, ElementKind::kBFloat16, 166912, 108) == 32);
static_assert(flstm_grid_bwd_smem_bytes(2048, 512, 48, ElementKind::kBFloat16) == -1);
// The projected layouts at H = 1024, P = 256, G = 4 in bf16 (Pg = 64), C = 16 CTAs of 64 units: 64 x 264 x 2 (W_hr
// columns) + 64 x 264 x 2 (W2: Pg x 4Hs) + 16 x 72 x 2 (m) + 2 x 16 x 260 x 4 (partial / gates) + 16 x 264 x 2 (z)
// + 16 x 64 x 4 (c) = 115712 bytes; C = 8 fits too (221184 bytes) and is chosen; G = 1 (Pg = 256) needs C = 16. The
// BIGLSTM-like layer scaled to one GPU (H = 4096, P = 1024, G = 4) needs 1246208 bytes per CTA at C = 16: Triton.
static_assert(projected_cluster_smem_bytes(1024, 256, 4, 16, ElementKind::kBFloat16) ==
              64 * 264 * 2 + 64 * 264 * 2 + 16 * 72 * 2 + 2 * 16 * 260 * 4 + 16 * 264 * 2 + 16 * 64 * 4);
static_assert(projected_fwd_cluster_size(1024, 256, 4, ElementKind::kBFloat16, 232448, 9) == 8);
static_assert(projected_cluster_smem_bytes(4096, 1024, 4, 16, ElementKind::kBFloat16) == 1246208);
static_assert(projected_fwd_cluster_size(4096, 1024, 4, ElementKind::kBFloat16, 232448, 9) == 0);
// ... which the projected grid forward takes on an H100 with N = 128 CTAs of 32 units: 32 x 1032 x 2 (W_hr columns)
// + 256 x 136 x 2 (W2: Pg x 4Hs) + 16 x 40 x 2 (m) + 16 x 1032 x 2 (z) + 16 x 132 x 4 (gates) = 178432 bytes.
static_assert(projected_grid_smem_bytes(4096, 1024, 4, 128, ElementKind::kBFloat16) ==
              32 * 1032 * 2 + 256 * 136 * 2 + 16 * 40 * 2 + 16 * 1032 * 2 + 16 * 132 * 4);
static_assert(projected_fwd_grid_ctas(4096, 1024, 4, ElementKind::kBFloat16, 232448, 132) == 128);
static_assert(projected_grid_smem_bytes(4096, 1024, 4, 126, ElementKind::kBFloat16) == -1);
static_assert(projected_cluster_smem_bytes(1024, 256, 4, 2, ElementKind::kBFloat16) == -1);   // C not a multiple of G
static_assert(projected_cluster_smem_bytes(1024, 96, 4, 16, ElementKind::kBFloat16) == -1);   // Pg = 24
static_assert(projected_fwd_cluster_size(64, 32, 2, ElementKind::kFloat32, 232448, 8) == 1);
// The projected backward: the single CTA's buffers are the forward's; at H = 1024, P = 256, G = 4 in bf16 C = 16 CTAs
// of 64 units: 256 x 72 x 2 (W_hh rows, Pg = 64 columns) + 256 x 72 x 2 (W_hr columns) + 16 x 264 x 2 (dgates / dz)
// + 2 x 16 x 260 x 4 (partial dz / dm) + 16 x 64 x 4 (dc) = 119552 bytes; C = 8 fits too (201472 bytes) and is chosen,
// as for the forward.
static_assert(projected_bwd_smem_bytes(96, 48, 3, ElementKind::kBFloat16) ==
              projected_smem_bytes(96, 48, 3, ElementKind::kBFloat16));
static_assert(projected_cluster_bwd_smem_bytes(1024, 256, 4, 16, ElementKind::kBFloat16) ==
              256 * 72 * 2 + 256 * 72 * 2 + 16 * 264 * 2 + 2 * 16 * 260 * 4 + 16 * 64 * 4);
static_assert(projected_bwd_cluster_size(1024, 256, 4, ElementKind::kBFloat16, 232448, 9) == 8);
static_assert(projected_cluster_bwd_smem_bytes(1024, 256, 4, 2, ElementKind::kBFloat16) == -1);
// The BIGLSTM-like layer (H = 4096, P = 1024, G = 4) on the grid of an H100: N = 128 CTAs of 32 units, 128 x 264 x 2
// (W_hh rows) + 1024 x 40 x 2 (W_hr columns) + 16 x 1032 x 2 (dgates / dz) + 16 x 36 x 4 (dm) = 184832 bytes, the
// forward's N.
static_assert(projected_grid_bwd_smem_bytes(4096, 1024, 4, 128, ElementKind::kBFloat16) ==
              128 * 264 * 2 + 1024 * 40 * 2 + 16 * 1032 * 2 + 16 * 36 * 4);
static_assert(projected_bwd_cluster_size(4096, 1024, 4, ElementKind::kBFloat16, 232448, 9) == 0);
static_assert(projected_bwd_grid_ctas(4096, 1024, 4, ElementKind::kBFloat16, 232448, 132) == 128);
}  // namespace lstmkern
