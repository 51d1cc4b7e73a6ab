"""Reference G-LSTM and F-LSTM layers in plain PyTorch: the ground truth for every kernel.

Shape legend (used throughout lstmkern):
    T  time steps            B  batch size
    I  input features        H  hidden units
    G  groups (G-LSTM)       R  rank of the factorization (F-LSTM)
    P  projection size (LSTMP; P = H without one)
    Ig = I / G, Hg = H / G, Pg = P / G   per-group input, cell and recurrent-input sizes

Projection (LSTMP, ``weight_hr`` (P, H), as nn.LSTM's ``proj_size``): the cell computes m_t = o_t * tanh(c_t) (B, H)
and outputs h_t = m_t W_hr^T (B, P), which is also the next step's recurrent input; so h0 and output have P columns,
c0 and cell have H. G-LSTM group g then reads h[:, g*Pg:(g+1)*Pg] (the projection mixes all groups). Without a
projection P = H and h_t = m_t.
G-LSTM input forms: grouped (weight_ih (G, 4Hg, Ig): group g reads x[..., g*Ig:(g+1)*Ig]) or dense (weight_ih
(G, 4Hg, I): every group reads all of x; only the recurrence is block-diagonal). The form is read from weight_ih's
last dimension; with G = 1 both are the same.

Everything here is time-major: x is (T, B, I). Gates are in PyTorch's order i, f, g, o, within each group for G-LSTM.
The cell state is carried in ``state_dtype(x.dtype)`` (float64 for float64 inputs, float32 otherwise) and returned for
every step as ``cell`` (T, B, H); ``output`` (T, B, H) is in x's dtype and is what the next step multiplies by.

The forward functions are differentiable by autograd (the tests check the explicit BPTT below against it); the
``*_backward`` functions are the explicit reverse-time recurrence that the kernels mirror: recompute the gates for all
steps in one time-parallel GEMM from the saved h, walk back through time with one recurrent GEMM per step, then form
the weight gradients and dx as time-parallel GEMMs.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "state_dtype",
    "glstm_reference",
    "glstm_reference_backward",
    "flstm_reference",
    "flstm_reference_backward",
]


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the cell state and of all accumulation for inputs of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _cell(gates: Tensor, c_prev: Tensor, G: int) -> tuple[Tensor, Tensor, Tensor]:
    """LSTM pointwise step on pre-activation gates (B, G, 4, Hg) in state dtype. Returns (h, c, activated gates)."""
    i = torch.sigmoid(gates[:, :, 0])
    f = torch.sigmoid(gates[:, :, 1])
    g = torch.tanh(gates[:, :, 2])
    o = torch.sigmoid(gates[:, :, 3])
    B = gates.shape[0]
    c = f * c_prev.view(B, G, -1) + i * g
    h = o * torch.tanh(c)
    return h.reshape(B, -1), c.reshape(B, -1), torch.stack((i, f, g, o), dim=2)


def _glstm_input_projection(x: Tensor, weight_ih: Tensor, bias: Tensor | None) -> Tensor:
    """P = x[g-slice] W_ih[g]^T + bias[g] (grouped input) or x W_ih[g]^T + bias[g] (dense input) for all T and groups
    at once: (T, B, G, 4Hg) in state dtype."""
    T, B, I = x.shape
    G, four_hg, ig = weight_ih.shape
    if ig == I:  # dense input (also G = 1): every group reads the whole x
        p = torch.matmul(x.reshape(1, T * B, I), weight_ih.transpose(1, 2))  # (G, T*B, 4Hg)
    else:
        p = torch.bmm(x.reshape(T * B, G, ig).transpose(0, 1), weight_ih.transpose(1, 2))
    p = p.transpose(0, 1).reshape(T, B, G, four_hg).to(state_dtype(x.dtype))
    if bias is not None:
        p = p + bias.to(p.dtype)
    return p


def _glstm_recurrent(h: Tensor, weight_hh: Tensor) -> Tensor:
    """Block-diagonal product h[g-slice] W_hh[g]^T for every group: (B, P) -> (B, G, 4Hg)."""
    B = h.shape[0]
    G, _, pg = weight_hh.shape
    return torch.bmm(h.reshape(B, G, pg).transpose(0, 1), weight_hh.transpose(1, 2)).transpose(0, 1)


def _project(m: Tensor, weight_hr: Tensor | None) -> Tensor:
    """h = m W_hr^T (the LSTMP projection), or m itself without one. m (..., H) -> (..., P)."""
    return m if weight_hr is None else m @ weight_hr.t()


def glstm_reference(x: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                    bias: Tensor | None, weight_hr: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One G-LSTM layer over the sequence.

    Args: x (T, B, I); h0 (B, P); c0 (B, H); weight_ih (G, 4Hg, Ig) or (G, 4Hg, I) (dense input);
    weight_hh (G, 4Hg, Pg); bias (G, 4Hg) or None; weight_hr (P, H) or None (then P = H).
    Returns: output (T, B, P) in x.dtype, cell (T, B, H) in state dtype.

    Example::
        >>> x = torch.randn(5, 2, 6); h0 = c0 = torch.zeros(2, 9)
        >>> w_ih, w_hh = torch.randn(3, 12, 2), torch.randn(3, 12, 3)
        >>> out, cell = glstm_reference(x, h0, c0, w_ih, w_hh, None)   # out: (5, 2, 9)
    """
    T, B, _ = x.shape
    G = weight_ih.shape[0]
    sdt = state_dtype(x.dtype)
    proj = _glstm_input_projection(x, weight_ih, bias)
    h, c = h0, c0.to(sdt)
    outputs, cells = [], []
    for t in range(T):
        gates = proj[t] + _glstm_recurrent(h, weight_hh).to(sdt)
        m, c, _ = _cell(gates.view(B, G, 4, -1), c, G)
        h = _project(m.to(x.dtype), weight_hr)
        outputs.append(h)
        cells.append(c)
    return torch.stack(outputs), torch.stack(cells)


def _cell_backward(acts: Tensor, c_prev: Tensor, c: Tensor, dh: Tensor, dc: Tensor, G: int) -> tuple[Tensor, Tensor]:
    """Pointwise backward of one step. acts (B, G, 4, Hg) activated gates; returns (dgates_pre (B, G, 4, Hg), dc_prev)."""
    B = acts.shape[0]
    i, f, g, o = acts.unbind(2)
    c = c.view(B, G, -1)
    c_prev = c_prev.view(B, G, -1)
    dh = dh.view(B, G, -1)
    tanh_c = torch.tanh(c)
    do = dh * tanh_c
    dc = dc.view(B, G, -1) + dh * o * (1 - tanh_c * tanh_c)
    di = dc * g
    df = dc * c_prev
    dg = dc * i
    dpre = torch.stack((di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)), dim=2)
    return dpre, (dc * f).reshape(B, -1)


def _shift_prev(seq: Tensor, first: Tensor) -> Tensor:
    """[first, seq[0], ..., seq[T-2]]: the state each step started from."""
    return torch.cat((first.unsqueeze(0), seq[:-1]), dim=0)


def _cell_outputs(acts: Tensor, cell: Tensor, dtype: torch.dtype) -> Tensor:
    """m_t = o_t * tanh(c_t) for all steps, recomputed from the activated gates (T, B, G, 4, Hg) and cell (T, B, H)."""
    T, B, G = acts.shape[:3]
    return (acts[:, :, :, 3] * torch.tanh(cell.view(T, B, G, -1))).reshape(T, B, -1).to(dtype)


def glstm_reference_backward(grad_output: Tensor, grad_cell: Tensor | None, x: Tensor, h0: Tensor, c0: Tensor,
                             weight_ih: Tensor, weight_hh: Tensor, bias: Tensor | None, output: Tensor, cell: Tensor,
                             weight_hr: Tensor | None = None) -> tuple[Tensor, ...]:
    """Explicit BPTT for :func:`glstm_reference`.

    Args: grad_output (T, B, P); grad_cell (T, B, H) or None; the forward's inputs; its outputs ``output`` and ``cell``.
    Returns: dx (T, B, I), dh0 (B, P), dc0 (B, H), dweight_ih, dweight_hh, dbias (G, 4Hg; returned even without
    bias), and dweight_hr (P, H) when weight_hr is given.
    """
    T, B, I = x.shape
    G, four_hg, pg = weight_hh.shape
    hg = four_hg // 4
    sdt = state_dtype(x.dtype)
    h_prev = _shift_prev(output, h0)  # (T, B, P)
    c_prev = _shift_prev(cell, c0.to(sdt))
    # Time-parallel recompute of every step's gates from the saved h.
    pre = _glstm_input_projection(x, weight_ih, bias)
    pre = pre + _glstm_recurrent(h_prev.reshape(T * B, -1), weight_hh).reshape(T, B, G, four_hg).to(sdt)
    pre = pre.view(T, B, G, 4, hg)
    acts = torch.cat((torch.sigmoid(pre[:, :, :, :2]), torch.tanh(pre[:, :, :, 2:3]), torch.sigmoid(pre[:, :, :, 3:])),
                     dim=3)
    w_hh_s = weight_hh.to(sdt)
    w_hr_s = None if weight_hr is None else weight_hr.to(sdt)
    dgates = torch.empty(T, B, G, 4, hg, dtype=sdt, device=x.device)
    dprojected = torch.empty(T, B, G * pg, dtype=sdt, device=x.device) if weight_hr is not None else None
    dh = torch.zeros(B, G * pg, dtype=sdt, device=x.device)
    dc = torch.zeros(B, G * hg, dtype=sdt, device=x.device)
    for t in range(T - 1, -1, -1):
        dh = dh + grad_output[t].to(sdt)
        if grad_cell is not None:
            dc = dc + grad_cell[t].to(sdt)
        if weight_hr is not None:
            dprojected[t] = dh
            dm = dh @ w_hr_s  # (B, H): through h_t = m_t W_hr^T
        else:
            dm = dh
        dpre, dc = _cell_backward(acts[t], c_prev[t], cell[t], dm, dc, G)
        dgates[t] = dpre
        # dh_{t-1} = dgates_t W_hh (block-diagonal)
        dh = torch.bmm(dpre.reshape(B, G, four_hg).transpose(0, 1), w_hh_s).transpose(0, 1).reshape(B, -1)
    dg = dgates.reshape(T * B, G, four_hg).transpose(0, 1)  # (G, T*B, 4Hg)
    ig = weight_ih.shape[2]
    hpg = h_prev.reshape(T * B, G, pg).transpose(0, 1).to(sdt)
    if ig == I:  # dense input: every group read all of x
        xs = x.reshape(1, T * B, I).to(sdt)
        dweight_ih = torch.matmul(dg.transpose(1, 2), xs)
        dx = torch.bmm(dg, weight_ih.to(sdt)).sum(dim=0).reshape(T, B, I)
    else:
        xg = x.reshape(T * B, G, ig).transpose(0, 1).to(sdt)
        dweight_ih = torch.bmm(dg.transpose(1, 2), xg)
        dx = torch.bmm(dg, weight_ih.to(sdt)).transpose(0, 1).reshape(T, B, I)
    dweight_hh = torch.bmm(dg.transpose(1, 2), hpg)
    dbias = dg.sum(dim=1)
    dt = x.dtype
    # contiguous: with one column per group (Pg = 1) the reshape above is a strided view
    grads = (dx.to(dt).contiguous(), dh.to(dt).contiguous(), dc.to(dt), dweight_ih.to(dt), dweight_hh.to(dt),
             dbias.to(dt))
    if weight_hr is None:
        return grads
    m = _cell_outputs(acts, cell, dt).to(sdt)
    dweight_hr = dprojected.reshape(T * B, -1).t() @ m.reshape(T * B, -1)
    return grads + (dweight_hr.to(dt),)


def _flstm_input_projection(x: Tensor, weight_1: Tensor, weight_2: Tensor, bias: Tensor | None) -> Tensor:
    """P = W2 (W1_x x_t) + b for all T: (T, B, 4H) in state dtype."""
    T, B, I = x.shape
    z = x.reshape(T * B, I) @ weight_1[:, :I].t()
    p = (z @ weight_2.t()).reshape(T, B, -1).to(state_dtype(x.dtype))
    if bias is not None:
        p = p + bias.to(p.dtype)
    return p


def flstm_reference(x: Tensor, h0: Tensor, c0: Tensor, weight_1: Tensor, weight_2: Tensor,
                    bias: Tensor | None, weight_hr: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One F-LSTM layer: gates = W2 (W1 [x_t; h_{t-1}]) + b.

    Args: x (T, B, I); h0 (B, P); c0 (B, H); weight_1 (R, I+P); weight_2 (4H, R); bias (4H,) or None;
    weight_hr (P, H) or None (then P = H).
    Returns: output (T, B, P) in x.dtype, cell (T, B, H) in state dtype.

    Example::
        >>> x = torch.randn(5, 2, 6); h0 = c0 = torch.zeros(2, 9)
        >>> out, cell = flstm_reference(x, h0, c0, torch.randn(4, 15), torch.randn(36, 4), None)
    """
    T, B, I = x.shape
    sdt = state_dtype(x.dtype)
    proj = _flstm_input_projection(x, weight_1, weight_2, bias)
    w1_h = weight_1[:, I:]
    h, c = h0, c0.to(sdt)
    outputs, cells = [], []
    for t in range(T):
        gates = proj[t] + ((h @ w1_h.t()) @ weight_2.t()).to(sdt)
        m, c, _ = _cell(gates.view(B, 1, 4, -1), c, 1)
        h = _project(m.to(x.dtype), weight_hr)
        outputs.append(h)
        cells.append(c)
    return torch.stack(outputs), torch.stack(cells)


def flstm_reference_backward(grad_output: Tensor, grad_cell: Tensor | None, x: Tensor, h0: Tensor, c0: Tensor,
                             weight_1: Tensor, weight_2: Tensor, bias: Tensor | None, output: Tensor, cell: Tensor,
                             weight_hr: Tensor | None = None) -> tuple[Tensor, ...]:
    """Explicit BPTT for :func:`flstm_reference`.

    Returns: dx (T, B, I), dh0 (B, P), dc0 (B, H), dweight_1 (R, I+P), dweight_2 (4H, R), dbias (4H,), and
    dweight_hr (P, H) when weight_hr is given.
    """
    T, B, I = x.shape
    P = h0.shape[1]
    H = cell.shape[2]
    sdt = state_dtype(x.dtype)
    h_prev = _shift_prev(output, h0)
    c_prev = _shift_prev(cell, c0.to(sdt))
    xh = torch.cat((x, h_prev), dim=2).reshape(T * B, I + P)  # [x_t; h_{t-1}] for all steps
    z = xh @ weight_1.t()  # (T*B, R), for dweight_2
    # The pre-activations as the forward forms them (input part + recurrent part, each product rounded on its own in
    # 16-bit dtypes), so the backward differentiates the gates the forward ran on.
    recurrent = (h_prev.reshape(T * B, P) @ weight_1[:, I:].t()) @ weight_2.t()
    pre = _flstm_input_projection(x, weight_1, weight_2, bias) + recurrent.reshape(T, B, 4 * H).to(sdt)
    pre = pre.reshape(T, B, 1, 4, H)
    acts = torch.cat((torch.sigmoid(pre[:, :, :, :2]), torch.tanh(pre[:, :, :, 2:3]), torch.sigmoid(pre[:, :, :, 3:])),
                     dim=3)
    w2_s = weight_2.to(sdt)
    w1_h_s = weight_1[:, I:].to(sdt)
    w_hr_s = None if weight_hr is None else weight_hr.to(sdt)
    dgates = torch.empty(T, B, 4 * H, dtype=sdt, device=x.device)
    dprojected = torch.empty(T, B, P, dtype=sdt, device=x.device) if weight_hr is not None else None
    dh = torch.zeros(B, P, dtype=sdt, device=x.device)
    dc = torch.zeros(B, H, dtype=sdt, device=x.device)
    for t in range(T - 1, -1, -1):
        dh = dh + grad_output[t].to(sdt)
        if grad_cell is not None:
            dc = dc + grad_cell[t].to(sdt)
        if weight_hr is not None:
            dprojected[t] = dh
            dm = dh @ w_hr_s
        else:
            dm = dh
        dpre, dc = _cell_backward(acts[t], c_prev[t], cell[t], dm, dc, 1)
        dgates[t] = dpre.reshape(B, 4 * H)
        dh = (dgates[t] @ w2_s) @ w1_h_s
    dg = dgates.reshape(T * B, 4 * H)
    dz = dg @ w2_s  # (T*B, R)
    dweight_2 = dg.t() @ z.to(sdt)
    dweight_1 = dz.t() @ xh.to(sdt)
    dx = (dz @ weight_1[:, :I].to(sdt)).reshape(T, B, I)
    dbias = dg.sum(dim=0)
    dt = x.dtype
    grads = (dx.to(dt), dh.to(dt), dc.to(dt), dweight_1.to(dt), dweight_2.to(dt), dbias.to(dt))
    if weight_hr is None:
        return grads
    m = _cell_outputs(acts, cell, dt).to(sdt)
    dweight_hr = dprojected.reshape(T * B, P).t() @ m.reshape(T * B, H)
    return grads + (dweight_hr.to(dt),)
