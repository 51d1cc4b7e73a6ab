// Persistent F-LSTM backward on a Hopper thread-block cluster: the backward of csrc/flstm_cluster.cu's forward, for
// layers whose W1_h (R x H) and W2 (4H x R) do not fit one CTA's shared memory (e.g. flstm-infer, H = 1024, R = 256 in
// bf16). One launch walks the reversed sequence with each CTA's share of the weights resident.
//
// Shape legend: T time steps, B batch, I input features, H hidden units, R rank, BT batch tile (16 rows for WMMA,
// kFlstmBatchTile = 8 for the float32 FMA path), C cluster size (2, 4, 8 or 16), Hs = H / C hidden units owned by one
// CTA, Rs = R / C columns of dz one CTA reduces.
//
// Recurrence (lstmkern/reference.py, flstm_reference_backward): with z_t = W1 [x_t; h_{t-1}] and
// pre_t = W2 z_t (+ b), for t = T-1 down to 0
//   dh_t = grad_output[t] + dh_rec_t,   (dgates_t, dc_{t-1}) = cell backward(pre_t, c_{t-1}, c_t, dh_t, dc_t),
//   dz_t = dgates_t W2 (B x R),         dh_rec_{t-1} = dz_t W1_h (B x H),
// with dh_rec_{T-1} = 0, dc_{T-1} = grad_cell[T-1] (or 0) and dh0 = dh_rec_{-1}, dc0 = dc_{-1}. The pre-activations
// are recomputed time-parallel by the launcher (cuda_ops.cpp, as for the single-CTA backward), and so are, after the
// kernel, the weight gradients and dx from the dgates_t and dz_t this kernel writes (dW2 = sum dgates^T z,
// dW1 = sum dz^T [x, h_{t-1}], dx = dz W1_x, dbias = sum dgates).
//
// Decomposition: the forward's, in reverse time. Grid (C * ceil(B / BT)), cluster dims (C, 1, 1): one cluster per
// batch tile. CTA rank r owns hidden units [r Hs, (r+1) Hs) and keeps resident the rows of W2 of its units' four gates
// (4Hs x R) and the columns of W1_h of its units (R x Hs), both as stored in global memory (the transposes of the
// forward's tiles: each is the row-major B operand of one product here). Per step t each CTA
//   1. runs the cell backward for its Hs units: dh_t of its own units is grad_output[t] plus the recurrent gradient it
//      computed itself in step t+1 (phase 4), so dh never crosses the cluster; dc stays in float32 shared memory;
//      dgates_t go to global memory (float32) and to the CTA's dgates tile (the element type: rounded for fp16/bf16,
//      the tensor cores' A operand; the tile shares its buffer with the dz tile of phases 3-4); __syncthreads;
//   2. forms its partial dz_r = dgates_own W2[own rows] (BT x R, float32) into partial[t % 2]: WMMA m16n16k16 with
//      float32 accumulators for fp16/bf16, float32 FMA for fp32; cluster barrier 1;
//   3. reduce-scatter + all-gather of dz, exactly the forward's exchange of z (reduce_and_broadcast_z,
//      csrc/cluster_exchange.cuh): CTA r sums columns [r Rs, (r+1) Rs) of the C partials in rank order, stores the
//      float32 sums to dz_t in global memory and the rounded sums into the dz tile of every CTA; cluster barrier 2.
//      Every CTA then holds bitwise the same dz, independent of timing;
//   4. dh_rec_{t-1} of its own units = dz_t W1_h[:, own] (BT x Hs, float32; WMMA or FMA as in phase 2) into the idle
//      half partial[(t + 1) % 2] (no exchange: each CTA needs only its own units); __syncthreads.
// Per step only dz crosses the cluster (the forward's traffic for z). After step 0 the dh tile holds dh0.
//
// Projected mode (`kProjected`, the backward of a projected G-LSTM / LSTMP with G groups, csrc/flstm_cluster.cu's
// projected forward in reverse): W1_h := W_hr (P x H, I = 0), R := P, W2 := W_hh, pre_gates / dgates (T, B, G, 4Hg),
// grad_output (T, B, P). The gradient reaching the output h_t = W_hr m_t is dz_t = grad_output[t] + dgates_{t+1} W_hh
// (block-diagonal; lstmkern/reference.py, glstm_reference_backward), and the cell's dh is dm_t = dz_t W_hr. So the
// phases are the F-LSTM's with the exchange one step shifted: (0) before step T-1, every CTA loads dz_{T-1} =
// grad_output[T-1] whole into its dz tile and forms dm_{T-1}[:, own] (no exchange, as the forward loads h0);
// phase 1 of step t runs the cell with dh := dm_t; phase 2's partial is dgates_own W_hh[own rows] over its group's
// Rg = P / G columns only (a CTA's units lie in one group, C a multiple of G), stored into those columns of partial;
// phase 3 sums each column over its group's C / G ranks only (GroupRanksPlusAddend, csrc/cluster_exchange.cuh), adds
// grad_output[t-1] and stores the float32 dz_{t-1} (the launcher's dW_hr operand) and the rounded one into every CTA;
// phase 4 forms dm_{t-1}[:, own] = dz_{t-1} W_hr[:, own]. The exchange of step 0 yields dgates_0 W_hh = dh0 (P wide)
// itself, stored to dh0 with nothing added; phase 4 is skipped there. Buffers, barriers and their order are the
// F-LSTM's, so the hazard argument below holds unchanged (the prologue touches only the CTA's own shared memory,
// before its first cluster barrier; columns of partial outside the group are never read by a peer).
//
// Precision: the recurrent products take their A operands in the element type (dgates and dz rounded to fp16/bf16 for
// the tensor cores, float32 accumulation), where the reference keeps them in float32; the dgates and dz written to
// global memory, from which the weight gradients and dx are formed, are float32 (dz as summed from the rounded-dgates
// partials). The fp32 kernel computes everything in float32. tests/test_emu_flstm_bwd.py holds all three dtypes to
// the GPU tests' tolerance rule (tests/kernel_checks.py) against the float64 reference. In fp16 the rounded operands
// also take fp16's range: gradients below 2^-14 lose bits and below 2^-24 vanish from the recurrent products (loss
// scaling, e.g. torch.amp.GradScaler, is what keeps fp16 training gradients above that).
//
// Hazard argument (the forward's, with dh in the role of the gate tile). Buffers in every CTA: partial[0], partial[1]
// (float32, by step parity), one operand buffer holding the dgates tile (phases 1-2) and then the dz tile (phases
// 3-4), dc and the weights (the last two local only). Step t publishes partial[t % 2]; its dh_rec_{t-1} is written
// into partial[(t + 1) % 2], which no peer reads during step t, and read by the cell phase of step t-1, where that
// buffer is partial[(t - 1) % 2], the one step t-1 publishes after the cell phase.
//   * RAW, partials (written by CTA q in phase 2 of step t, read by CTA p in phase 3): q's stores precede q's arrive
//     on barrier 1 of step t (barrier.cluster.arrive has release semantics), p's reads follow p's wait on it (acquire).
//   * RAW, dz (pushed by CTA q in phase 3, read by CTA p's dh product in phase 4): q's stores precede q's arrive on
//     barrier 2 of step t, p's reads follow p's wait on it.
//   * WAR, partial[t % 2]: peers last read it in phase 3 of step t, before they arrive on barrier 2 of step t; its
//     owner next writes it as the dh tile in phase 4 of step t-1, after waiting on barrier 2 of step t-1, and as the
//     partial in phase 2 of step t-2, later still.
//   * WAR, dz: CTA p reads its dz tile in phase 4 of step t, before it arrives on barrier 1 of step t-1; peers push the
//     next dz into it in phase 3 of step t-1, after waiting on that barrier.
//   * The shared operand buffer: peers push dz_t into it only after barrier 1 of step t, which p reaches after its
//     phase 2 has read the dgates tile; p rewrites it as the dgates tile of step t-1 (phase 1) only after its phase 4
//     of step t has read dz_t (a __syncthreads apart) and after barrier 2 of step t, which orders every peer's dz_t
//     pushes before it. Padding rows: the products multiply all BT rows, and with the two leading dimensions a row
//     >= batch_rows of one view may hold values of the other; matrix rows are independent and rows >= batch_rows of
//     the products (partial dz, dh) are never read, so those values reach nothing.
//   * Within a CTA: phase 1 reads the dh tile (partial[t % 2]) that phase 4 of step t+1 wrote, and phase 2 overwrites
//     that buffer; phase 1 writes the dgates tile that phase 2 reads, and the next phase 1 rewrites it; phase 4 writes
//     the dh tile the next phase 1 reads. Each pair is separated by a __syncthreads or a cluster barrier, which every
//     thread of the CTA passes. The dc element (b, j) is read and written by the same thread every step.
//   * Lifetime: the first DSMEM access comes after barrier 1 of step T-1, which every CTA reaches only after its
//     prologue (buffers zeroed, weights loaded); the last comes before barrier 2 of step 0, after which every CTA
//     touches only its own shared memory and global memory. No extra barrier is needed.
//
// The body is compiled for sm_90 and newer only (clusters and DSMEM); the build also embeds compute_80 PTX, where the
// kernel traps. The torch op (cuda_ops.cpp) refuses devices other than 9.x and lstmkern.backends.cuda never picks the
// kernel there.
#include <cooperative_groups.h>
#include <mma.h>

#include <type_traits>

#include "cluster_exchange.cuh"
#include "persistent_common.cuh"
#include "persistent_kernels.h"
#include "tile_products.cuh"

namespace lstmkern {
namespace {

// What the cell backward of one (batch row, owned unit) item reads from global memory in one step: none of it depends
// on the recurrence, so the first items of a thread are loaded one step ahead (see the step loop).
struct CellBackwardInputs {
  float pre[4];  // pre-activation gates i, f, g, o
  float c_prev, c, grad_h, grad_c;
};

// kProjected: the projected mode (a template parameter, so the F-LSTM's instantiation compiles as without it; see the
// header).
template <ElementKind kKind, bool kProjected>
__global__ void __launch_bounds__(kThreadsPerBlock)
flstm_cluster_bwd_kernel(const float* __restrict__ pre_gates,
                         const typename ElementOf<kKind>::type* __restrict__ grad_output,
                         const float* __restrict__ grad_cell, const float* __restrict__ c0,
                         const float* __restrict__ cell, const typename ElementOf<kKind>::type* __restrict__ weight_1,
                         const typename ElementOf<kKind>::type* __restrict__ weight_2, float* __restrict__ dgates,
                         float* __restrict__ dz, float* __restrict__ dh0, float* __restrict__ dc0, int T, int B, int I,
                         int H, int R, int cluster_size, int groups) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  if constexpr (!kProjected) groups = 1;  // the F-LSTM: one group, so its group arithmetic folds away
  using Element = typename ElementOf<kKind>::type;
  constexpr bool kWmma = uses_wmma(kKind);
  constexpr int kBatchTile = flstm_cluster_batch_tile(kKind);
  // Cell items per thread whose inputs are loaded during the previous step's dh product, so their global-memory
  // latency is off the critical path; the rest load in the cell loop. Four cover the headline shape (BT = 16, Hs = 64:
  // 4 items per thread) in fp16/bf16; the float32 kernel (BT = 8) prefetches two, as four make it spill (ptxas). The
  // projected mode's group bookkeeping and grad_output additions hold more registers: the most items that compile
  // without spills (ptxas, sm_90a): two in bf16 and fp32, one in fp16.
  constexpr int kPrefetchItems =
      !kWmma ? 2 : !kProjected ? 4 : kKind == ElementKind::kBFloat16 ? 2 : 1;
  constexpr int kDzVector = 4;  // dz columns per exchange item, as the forward's z

  const cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const FlstmClusterBwdLayout layout = flstm_cluster_bwd_layout(H, R, cluster_size, kKind, groups);
  const int Hs = static_cast<int>(layout.units_per_cta);
  const int unit_start = rank * Hs;  // first hidden unit this CTA owns
  const int Rs = R / cluster_size;   // columns of dz this CTA reduces
  const int dz_col_start = rank * Rs;
  // The CTA's group (projected mode; the F-LSTM has one group of H units): its gate rows of W_hh read (and its partial
  // dz covers) only columns [group Rg, (group + 1) Rg), and its units' gate q sits at column group 4Hg + q Hg + j of
  // pre_gates and dgates ((T, B, G, 4Hg); (T, B, 4H) for the F-LSTM).
  const int hg = H / groups;
  const int group = unit_start / hg;
  const int rg = R / groups;
  const int64_t gate_col_start = kProjected ? static_cast<int64_t>(group) * 4 * hg + (unit_start - group * hg)
                                            : unit_start;
  const int w2_ld = static_cast<int>(layout.w2_ld);
  const int w1h_ld = static_cast<int>(layout.w1h_ld);
  const int dgates_ld = static_cast<int>(layout.dgates_ld);
  const int partial_ld = static_cast<int>(layout.partial_ld);
  const int dh_ld = static_cast<int>(layout.dh_ld);
  const int dz_ld = static_cast<int>(layout.dz_ld);

  unsigned char* const smem = dynamic_smem();
  Element* w2 = reinterpret_cast<Element*>(smem + layout.w2_offset);                // (4Hs x w2_ld)
  Element* w1h = reinterpret_cast<Element*>(smem + layout.w1h_offset);              // (R x w1h_ld)
  Element* dgates_tile = reinterpret_cast<Element*>(smem + layout.dgates_offset);    // (BT x dgates_ld), phases 1-2
  // Two named pointers rather than an array: a runtime-indexed pointer array would live in a local-memory stack frame.
  float* const partial_even = reinterpret_cast<float*>(smem + layout.partial_offset[0]);
  float* const partial_odd = reinterpret_cast<float*>(smem + layout.partial_offset[1]);
  Element* dz_tile = reinterpret_cast<Element*>(smem + layout.dz_offset);           // (BT x dz_ld), phases 3-4: the
                                                                                    // same buffer, the reduced dz
  float* dc_tile = reinterpret_cast<float*>(smem + layout.dc_offset);               // (BT x Hs)

  const int batch_start = static_cast<int>(blockIdx.x / cluster_size) * kBatchTile;
  const int batch_rows = min(kBatchTile, B - batch_start);
  const int64_t four_h = 4 * static_cast<int64_t>(H);
  const int64_t step_states = static_cast<int64_t>(B) * H;  // one time step of (T, B, H)
  const int four_hs = 4 * Hs;
  const int cell_items = batch_rows * Hs;  // (batch row, owned unit) pairs of the cell phase, round-robin over threads

  // The global-memory inputs of cell item idx = (b, j) in step t.
  const auto load_inputs = [&](int t, int idx) {
    const int b = idx / Hs;
    const int unit = unit_start + (idx - b * Hs);
    const int64_t row = static_cast<int64_t>(t) * B + batch_start + b;
    const int64_t state_idx = row * H + unit;
    const float* pre = pre_gates + row * four_h + gate_col_start + (unit - unit_start);
    CellBackwardInputs in;
#pragma unroll
    for (int gate = 0; gate < 4; ++gate) in.pre[gate] = pre[gate * hg];
    in.c = cell[state_idx];
    in.c_prev = t > 0 ? cell[state_idx - step_states] : c0[static_cast<int64_t>(batch_start + b) * H + unit];
    // Projected: grad_output (P wide) enters at dz, in the exchange; the cell's dh is dm alone.
    in.grad_h = kProjected ? 0.0f : to_float(grad_output[state_idx]);
    in.grad_c = grad_cell != nullptr ? grad_cell[state_idx] : 0.0f;
    return in;
  };
  // This thread's first kPrefetchItems items of step t (items past cell_items are never used).
  const auto prefetch = [&](int t, CellBackwardInputs (&inputs)[kPrefetchItems]) {
#pragma unroll
    for (int item = 0; item < kPrefetchItems; ++item) {
      const int idx = static_cast<int>(threadIdx.x) + item * kThreadsPerBlock;
      if (idx < cell_items) inputs[item] = load_inputs(t, idx);
    }
  };

  // Prologue: dc starts at 0; every buffer starts zeroed (racecheck / initcheck; the padding rows of the operand
  // buffer feed only product rows that are never read, see the hazard argument).
  zero_shared(smem, layout.total_bytes);
  __syncthreads();
  load_flstm_unit_weights_as_stored(weight_1, weight_2, I, H, R, unit_start, Hs, w2, w2_ld, w1h, w1h_ld, groups);
  // No barrier here (F-LSTM): the weights are first read by phase 2, after the cell phase's __syncthreads, and peers
  // touch this CTA's shared memory only after cluster barrier 1 of step T-1.
  if constexpr (kProjected) {
    // dz_{T-1} = grad_output[T-1] (no recurrent part): every CTA loads it whole into its dz tile (exact in the element
    // type) and forms its dm_{T-1} itself, as phase 4 would (the forward's h0 in reverse); the CTA's Rs columns go to
    // dz. dm_{T-1} lands where step T-1's cell reads it, partial[(T-1) % 2].
    const Element* grad_rows = grad_output + (static_cast<int64_t>(T - 1) * B + batch_start) * R;
    float* dz_rows = dz + (static_cast<int64_t>(T - 1) * B + batch_start) * R;
    for (int idx = threadIdx.x; idx < batch_rows * R; idx += blockDim.x) {
      const int b = idx / R;
      const int q = idx - b * R;
      dz_tile[b * dz_ld + q] = grad_rows[idx];
      if (q >= dz_col_start && q < dz_col_start + Rs) dz_rows[idx] = to_float(grad_rows[idx]);
    }
    __syncthreads();  // the weights and the dz tile are complete
    float* const dm_last = ((T - 1) & 1) != 0 ? partial_odd : partial_even;
    if constexpr (kWmma) {
      wmma_product(dz_tile, dz_ld, w1h, w1h_ld, dm_last, dh_ld, Hs / kWmmaTile, R / kWmmaTile);
    } else {
      fma_product<kBatchTile>(dz_tile, dz_ld, w1h, w1h_ld, dm_last, dh_ld, Hs, R);
    }
    __syncthreads();  // step T-1's cell reads dm_last; its dgates overwrite the dz tile
  }

  CellBackwardInputs next_inputs[kPrefetchItems];
  prefetch(T - 1, next_inputs);

  for (int t = T - 1; t >= 0; --t) {
    const bool odd_step = (t & 1) != 0;
    float* partial = odd_step ? partial_odd : partial_even;  // holds dh_rec_t on entry; published as partial dz_t
    float* dh_next = odd_step ? partial_even : partial_odd;  // the idle half: receives dh_rec_{t-1}
    CellBackwardInputs inputs[kPrefetchItems];
#pragma unroll
    for (int item = 0; item < kPrefetchItems; ++item) inputs[item] = next_inputs[item];

    // 1. Cell backward of the own units (the recurrent dh of step T-1 is 0; projected: dh is dm_t, which the
    // prologue formed for step T-1).
    const auto cell_step = [&](int idx, const CellBackwardInputs& in) {
      const int b = idx / Hs;
      const int j = idx - b * Hs;
      const float dh = (kProjected || t + 1 < T ? partial[b * dh_ld + j] : 0.0f) + in.grad_h;
      const float dc = dc_tile[b * Hs + j] + in.grad_c;
      const CellGrad grad = lstm_cell_backward(in.pre[0], in.pre[1], in.pre[2], in.pre[3], in.c_prev, in.c, dh, dc);
      float* dgates_out = dgates + (static_cast<int64_t>(t) * B + batch_start + b) * four_h + gate_col_start + j;
      dgates_out[0] = grad.d_i;
      dgates_out[hg] = grad.d_f;
      dgates_out[2 * static_cast<int64_t>(hg)] = grad.d_g;
      dgates_out[3 * static_cast<int64_t>(hg)] = grad.d_o;
      Element* dgates_row = dgates_tile + b * dgates_ld;
      dgates_row[j] = from_float<Element>(grad.d_i);
      dgates_row[Hs + j] = from_float<Element>(grad.d_f);
      dgates_row[2 * Hs + j] = from_float<Element>(grad.d_g);
      dgates_row[3 * Hs + j] = from_float<Element>(grad.d_o);
      dc_tile[b * Hs + j] = grad.dc_prev;
    };
#pragma unroll
    for (int item = 0; item < kPrefetchItems; ++item) {
      const int idx = static_cast<int>(threadIdx.x) + item * kThreadsPerBlock;
      if (idx < cell_items) cell_step(idx, inputs[item]);
    }
    for (int idx = static_cast<int>(threadIdx.x) + kPrefetchItems * kThreadsPerBlock; idx < cell_items;
         idx += kThreadsPerBlock) {
      cell_step(idx, load_inputs(t, idx));
    }
    __syncthreads();

    // 2. Partial dz = dgates_own W2[own rows] (BT x R; projected: BT x Rg, the group's columns of partial, the only
    // ones its peers read from this CTA); rows >= batch_rows are never reduced.
    float* const partial_out = kProjected ? partial + group * rg : partial;
    if constexpr (kWmma) {
      wmma_product(dgates_tile, dgates_ld, w2, w2_ld, partial_out, partial_ld, rg / kWmmaTile, four_hs / kWmmaTile);
    } else {
      fma_product<kBatchTile>(dgates_tile, dgates_ld, w2, w2_ld, partial_out, partial_ld, rg, four_hs);
    }
    cluster.sync();  // barrier 1: every CTA's partial of step t is visible (and every WAR of the step is ordered)

    // 3. Reduce this CTA's Rs columns of dz in rank order; the float32 sums go to dz_t (global), the rounded ones to
    // every CTA's dz tile. Four adjacent columns per item where Rs allows it, one otherwise. Projected: the sums are
    // dgates_t W_hh, the recurrent part of dz_{t-1}: a column sums its group's ranks only, grad_output[t-1] is added,
    // and the float32 totals go to dz_{t-1}; the last exchange (t = 0) gives dh0 instead.
    float* const dz_rows = !kProjected ? dz + (static_cast<int64_t>(t) * B + batch_start) * R
                           : t > 0     ? dz + (static_cast<int64_t>(t - 1) * B + batch_start) * R
                                       : dh0 + static_cast<int64_t>(batch_start) * R;
    const auto store_sums = [dz_rows, R](int b, int q, const auto& sums, const auto& /*rounded*/) {
      *reinterpret_cast<std::decay_t<decltype(sums)>*>(dz_rows + static_cast<int64_t>(b) * R + q) = sums;
    };
    const auto exchange = [&](const auto& ranks) {
      if (Rs % kDzVector == 0) {
        reduce_and_broadcast_z<kDzVector>(cluster, rank, cluster_size, partial, partial_ld, dz_tile, dz_ld,
                                          batch_rows, dz_col_start, Rs, store_sums, ranks);
      } else {
        reduce_and_broadcast_z<1>(cluster, rank, cluster_size, partial, partial_ld, dz_tile, dz_ld, batch_rows,
                                  dz_col_start, Rs, store_sums, ranks);
      }
    };
    if constexpr (kProjected) {
      const Element* grad_rows =
          t > 0 ? grad_output + (static_cast<int64_t>(t - 1) * B + batch_start) * R : nullptr;
      exchange(GroupRanksPlusAddend<Element>{rg, cluster_size / groups, grad_rows, R});
    } else {
      exchange(AllRanks{});
    }
    cluster.sync();  // barrier 2: the whole dz of step t is in every CTA
    // Projected: step 0's exchange gave dh0, nothing is left to multiply.
    if (kProjected && t == 0) break;
    // The next step's cell inputs, loaded while the dh product runs (issued only now: during the exchange, which
    // holds C partial vectors per item in registers, they would not fit the register file).
    if (t > 0) prefetch(t - 1, next_inputs);

    // 4. dh_rec_{t-1} of the own units = dz W1_h[:, own] (BT x Hs; projected: dm_{t-1} = dz_{t-1} W_hr[:, own]).
    if constexpr (kWmma) {
      wmma_product(dz_tile, dz_ld, w1h, w1h_ld, dh_next, dh_ld, Hs / kWmmaTile, R / kWmmaTile);
    } else {
      fma_product<kBatchTile>(dz_tile, dz_ld, w1h, w1h_ld, dh_next, dh_ld, Hs, R);
    }
    // The next step's cell phase reads dh_next (its `partial`, which its phase 2 then overwrites).
    __syncthreads();
  }

  // Step 0 wrote dh_rec_{-1} = dh0 into partial[1] (projected: its exchange wrote dh0).
  for (int idx = threadIdx.x; idx < cell_items; idx += blockDim.x) {
    const int b = idx / Hs;
    const int j = idx - b * Hs;
    const int64_t state_idx = static_cast<int64_t>(batch_start + b) * H + unit_start + j;
    if (!kProjected) dh0[state_idx] = partial_odd[b * dh_ld + j];
    dc0[state_idx] = dc_tile[b * Hs + j];
  }
#else
  // Compiled for an architecture without clusters (the embedded compute_80 PTX): never launched there (the launcher
  // checks the compute capability); trap rather than return garbage if it ever is.
  __trap();
#endif
}

// The shape rule of the cluster backward: the F-LSTM's (groups = 1, not projected), or the projected mode's.
inline bool cluster_bwd_shape_ok(int H, int R, int groups, bool projected, int cluster_size) {
  return projected ? projected_cluster_shape_ok(H, R, groups, cluster_size)
                   : groups == 1 && flstm_cluster_shape_ok(H, R, cluster_size);
}

// The cluster launch of the backward kernel for (H, R, groups, B, C): a grid of C * ceil(B / BT) CTAs in clusters of C.
template <ElementKind kKind, bool kProjected>
cudaError_t prepare_cluster_launch(int H, int R, int groups, int B, int cluster_size, cudaStream_t stream,
                                   ClusterLaunch& launch) {
  const int64_t smem_bytes = flstm_cluster_bwd_layout(H, R, cluster_size, kKind, groups).total_bytes;
  return launch.prepare(flstm_cluster_bwd_kernel<kKind, kProjected>, smem_bytes, flstm_cluster_batch_tile(kKind), B,
                        1, cluster_size, stream);
}

template <ElementKind kKind, bool kProjected>
cudaError_t max_active_clusters(int H, int R, int groups, int cluster_size, int* count) {
  *count = 0;
  if (!cluster_bwd_shape_ok(H, R, groups, kProjected, cluster_size)) return cudaErrorInvalidValue;
  ClusterLaunch launch;
  const cudaError_t err = prepare_cluster_launch<kKind, kProjected>(H, R, groups, 1, cluster_size, nullptr, launch);
  if (err != cudaSuccess) return err;
  return launch.max_active_clusters(flstm_cluster_bwd_kernel<kKind, kProjected>, count);
}

template <ElementKind kKind, bool kProjected>
cudaError_t launch_cluster_bwd(const FlstmBwdArgs& args, int cluster_size, float* dz, cudaStream_t stream) {
  using Element = typename ElementOf<kKind>::type;
  if (!cluster_bwd_shape_ok(args.H, args.R, args.groups, kProjected, cluster_size)) return cudaErrorInvalidValue;
  ClusterLaunch launch;
  const cudaError_t err =
      prepare_cluster_launch<kKind, kProjected>(args.H, args.R, args.groups, args.B, cluster_size, stream, launch);
  if (err != cudaSuccess) return err;
  return launch.launch(flstm_cluster_bwd_kernel<kKind, kProjected>, args.pre_gates,
                       static_cast<const Element*>(args.grad_output), args.grad_cell, args.c0, args.cell,
                       static_cast<const Element*>(args.weight_1), static_cast<const Element*>(args.weight_2),
                       args.dgates, dz, args.dh0, args.dc0, args.T, args.B, args.I, args.H, args.R, cluster_size,
                       args.groups);
}

}  // namespace

cudaError_t launch_flstm_cluster_bwd(ElementKind kind, const FlstmBwdArgs& args, int cluster_size, float* dz,
                                     cudaStream_t stream) {
  return dispatch_element_kind(kind, [&](auto element) {
    constexpr ElementKind kKind = decltype(element)::value;
    return args.projected ? launch_cluster_bwd<kKind, true>(args, cluster_size, dz, stream)
                          : launch_cluster_bwd<kKind, false>(args, cluster_size, dz, stream);
  });
}

cudaError_t flstm_cluster_bwd_max_active_clusters(ElementKind kind, int H, int R, int cluster_size, int* count) {
  return dispatch_element_kind(kind, [&](auto element) {
    return max_active_clusters<decltype(element)::value, false>(H, R, 1, cluster_size, count);
  });
}

cudaError_t projected_cluster_bwd_max_active_clusters(ElementKind kind, int H, int P, int G, int cluster_size,
                                                      int* count) {
  return dispatch_element_kind(kind, [&](auto element) {
    return max_active_clusters<decltype(element)::value, true>(H, P, G, cluster_size, count);
  });
}

}  // namespace lstmkern
