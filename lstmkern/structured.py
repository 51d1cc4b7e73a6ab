"""Structured LSTMs of Lu, Sindhwani & Sainath (2016), "Learning Compact Recurrent Neural Networks".

* :class:`ToeplitzLikeLSTM`: every gate matrix (input and recurrent) is Toeplitz-like of displacement rank r.
* :class:`CompactLSTM`: their hybrid, Toeplitz-like layers at the bottom and LSTMP (shared low-rank projection)
  layers on top.

Shape legend: T time steps, B batch, I input features, H hidden units (also the block size n = H), r displacement
rank, L layers, D directions (2 if bidirectional else 1), P projection size (CompactLSTM's top layers). Layer k reads
I_k features: I_0 = input_size, I_k = D*H after that; its input matrix is tiled into C_k = ceil(I_k / H) column blocks.

Toeplitz-like matrices (Pan's displacement structure, as Sindhwani, Sainath & Kumar 2015 use it). For a vector v of
length n, the f-circulant matrix Z_f(v) has v as its first column and each further column is the previous one shifted
down by one with the entry that falls off the bottom multiplied by f and put on top:
Z_f(v)[a, b] = v[a - b] for a >= b and f * v[n + a - b] for a < b. Z_1(g) is circulant, Z_-1(h) skew-circulant.
One n x n block is

    M = sum_{i=1..r} Z_1(g_i) Z_-1(h_i),       g_i, h_i in R^n:  2 r n parameters instead of n^2,

and its Sylvester displacement is Z_1 M - M Z_-1 = 2 sum_i g_i (J h_i)^T (J reverses a vector), of rank <= r; every
matrix whose displacement has rank <= r has this form. (Sindhwani et al. write M = 1/2 sum_i Z_1(g_i) Z_-1(J h'_i)
for the displacement G H'^T; here the factor 1/2 and the reversal are absorbed into the stored vectors h_i = J h'_i / 2.)

Products through the FFT, O(r n log n) per block and vector instead of O(n^2): Z_1(g) x is the cyclic convolution
g * x = irfft(rfft(g) rfft(x)); Z_-1(h) x is the negacyclic convolution, which becomes a cyclic one after scaling
entry k by w^k with w = exp(i pi / n) (w^n = -1): Z_-1(h) x = w^-k (ifft(fft(w^k h) fft(w^k x))). The spectra of
g and w^k h are formed once per forward call, not per step; each product then costs one FFT of x per column block,
one inverse FFT and one rfft per (block, i), and one irfft per output block (the sums over column blocks and over i
are taken in the frequency domain). Everything is differentiable by autograd (torch.fft is).

Rectangular gate matrices are tiled into square H x H blocks: the recurrent matrix (4H x H) is 4 blocks, one per gate;
the input matrix (4H x I_k) is 4 x C_k blocks, and x is zero-padded from I_k to C_k H features (the padding columns
multiply zeros; the stored vectors of a partly used block still all shape its used columns, so every stored number
is a real parameter). Parameters per layer and direction: 2 r H (4 C_k + 4) + 4H (bias), against nn.LSTM's
4H (I_k + H) + 8H.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .modules import _gather_time, _reverse_index, _StackedLSTM
from .reference import state_dtype

__all__ = ["ToeplitzLikeLSTM", "CompactLSTM", "f_circulant", "toeplitz_like_dense", "toeplitz_like_matmul"]


# ----------------------------------------------------------------------------------------------------------------
# Toeplitz-like block matrices: explicit (reference) and through the FFT
# ----------------------------------------------------------------------------------------------------------------

def f_circulant(v: Tensor, f: float) -> Tensor:
    """The f-circulant matrices Z_f(v) of the vectors in ``v`` (..., n): (..., n, n), built explicitly.

    Z_f(v)[a, b] = v[a - b] if a >= b else f * v[n + a - b]: f = 1 gives the circulant, f = -1 the skew-circulant.

    Example::
        >>> f_circulant(torch.tensor([1., 2., 3.]), -1.0)
        tensor([[ 1., -3., -2.],
                [ 2.,  1., -3.],
                [ 3.,  2.,  1.]])
    """
    n = v.shape[-1]
    a = torch.arange(n, device=v.device).unsqueeze(1)
    b = torch.arange(n, device=v.device).unsqueeze(0)
    sign = torch.where(a >= b, 1.0, float(f)).to(v.dtype)
    return v[..., (a - b) % n] * sign


def toeplitz_like_dense(g: Tensor, h: Tensor) -> Tensor:
    """The block matrix whose block (q, p) is sum_i Z_1(g[q, p, i]) Z_-1(h[q, p, i]), built explicitly.

    Args: g, h (Q, C, r, n): generators of Q x C square blocks of size n.
    Returns: (Q n, C n). The reference for :func:`toeplitz_like_matmul`; differentiable. Literal matrix products,
    O(r Q C n^3): meant for tests and inspection (seconds at n = 1024, far longer at n = 4096).

    Example::
        >>> g, h = torch.randn(4, 1, 2, 8), torch.randn(4, 1, 2, 8)
        >>> toeplitz_like_dense(g, h).shape      # torch.Size([32, 8])
    """
    _check_generators(g, h)
    Q, C, _, n = g.shape
    # One term at a time: forming all r explicit factors at once would hold 2 r Q C n^2 numbers (8 GiB at n = 4096,
    # r = 16); this holds 3 Q C n^2.
    blocks = sum(f_circulant(g[:, :, i], 1.0) @ f_circulant(h[:, :, i], -1.0) for i in range(g.shape[2]))
    return blocks.permute(0, 2, 1, 3).reshape(Q * n, C * n)


class _Spectra(NamedTuple):
    """Frequency-domain form of a Toeplitz-like block matrix, formed once per forward call."""
    g_hat: Tensor      # (Q, C, r, n // 2 + 1): rfft(g)
    h_hat: Tensor      # (Q, C, r, n): fft(w^k h)
    twiddle: Tensor    # (n,): w^k = exp(i pi k / n)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # torch.fft has no half-precision CPU kernels (and on CUDA only power-of-two sizes): float16/bfloat16 layers
    # take their products in float32, which is also the dtype their cell state and gates are kept in.
    return state_dtype(dtype)


def _spectra(g: Tensor, h: Tensor) -> _Spectra:
    n = g.shape[-1]
    dtype = _compute_dtype(g.dtype)
    g, h = g.to(dtype), h.to(dtype)
    k = torch.arange(n, device=g.device, dtype=torch.float64)
    twiddle = torch.polar(torch.ones_like(k), k * (math.pi / n)).to(torch.complex128 if dtype == torch.float64
                                                                     else torch.complex64)
    return _Spectra(torch.fft.rfft(g), torch.fft.fft(h * twiddle), twiddle)


def _apply(x: Tensor, spectra: _Spectra) -> Tensor:
    """y = W x for every row of x (N, C n) in the compute dtype; returns (N, Q n)."""
    Q, C, r, n = spectra.h_hat.shape
    N = x.shape[0]
    if N == 0:
        # MKL's FFT rejects empty batches. An empty product, still connected to x and the generators so that a
        # backward through an empty batch gives zero gradients as nn.LSTM does, not missing ones.
        connected = x.sum() + spectra.g_hat.real.sum() + spectra.h_hat.real.sum()
        return x.new_zeros(0, Q * n) + 0 * connected
    x_hat = torch.fft.fft(x.reshape(N, 1, C, 1, n) * spectra.twiddle)                    # (N, 1, C, 1, n)
    # Skew-circulant factor: u = Z_-1(h_i) x_block, real up to rounding (the twiddles cancel exactly).
    u = (torch.fft.ifft(x_hat * spectra.h_hat) * spectra.twiddle.conj()).real            # (N, Q, C, r, n)
    # Circulant factor, summed over the column blocks and i in the frequency domain: one irfft per output block.
    y_hat = (torch.fft.rfft(u) * spectra.g_hat).sum(dim=(2, 3))                          # (N, Q, n // 2 + 1)
    return torch.fft.irfft(y_hat, n=n).reshape(N, Q * n)


def toeplitz_like_matmul(x: Tensor, g: Tensor, h: Tensor) -> Tensor:
    """x @ toeplitz_like_dense(g, h).T through the FFT, in O(Q C r n log n) per row instead of O(Q C n^2).

    Args: x (N, C n); g, h (Q, C, r, n). Returns: (N, Q n) in x's dtype (float16/bfloat16 computed in float32).

    Example::
        >>> g, h = torch.randn(4, 2, 3, 16), torch.randn(4, 2, 3, 16)
        >>> y = toeplitz_like_matmul(torch.randn(5, 32), g, h)                   # (5, 64)
    """
    _check_generators(g, h)
    Q, C, _, n = g.shape
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != C * n:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must have shape (N, C*n) = (N, {C * n}) for generators of shape {tuple(g.shape)}, "
                         f"got {shape}")
    if x.dtype != g.dtype or x.device != g.device:
        raise TypeError(f"x ({x.dtype}, {x.device}) must have the generators' dtype and device "
                        f"({g.dtype}, {g.device})")
    return _apply(x.to(_compute_dtype(x.dtype)), _spectra(g, h)).to(x.dtype)


def _check_generators(g: Tensor, h: Tensor) -> None:
    for name, t in (("g", g), ("h", h)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
        if t.dim() != 4 or 0 in t.shape:
            raise ValueError(f"{name} must have shape (Q, C, r, n) with no zero size, got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
    if g.shape != h.shape or g.dtype != h.dtype or g.device != h.device:
        raise ValueError(f"g and h must match in shape, dtype and device, got {tuple(g.shape)} {g.dtype} {g.device} "
                         f"and {tuple(h.shape)} {h.dtype} {h.device}")


# ----------------------------------------------------------------------------------------------------------------
# The module
# ----------------------------------------------------------------------------------------------------------------

_PRODUCTS = ("auto", "fft", "dense")


def _lstm_cell(gates: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
    """PyTorch's LSTM cell on pre-activation gates (B, 4H) (order i, f, g, o) in state dtype -> h, c (B, H)."""
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class ToeplitzLikeLSTM(_StackedLSTM):
    """LSTM whose gate matrices are Toeplitz-like of displacement rank r (Lu, Sindhwani & Sainath 2016), drop-in for
    nn.LSTM: ``forward(input, hx=None) -> output, (h_n, c_n)``, input (T, B, I) (or (B, T, I) with batch_first, or a
    PackedSequence), h_n and c_n (L*D, B, H), dropout between layers.

    Each gate matrix is tiled into H x H blocks, block = sum_{i<=r} Z_1(g_i) Z_-1(h_i) (see the module docstring for
    the definition, the FFT products and the padding of the input matrix to C_k = ceil(I_k / H) blocks).

    Parameters per layer k and direction suffix ("" or "_reverse"), gates i, f, g, o along the first axis:
        weight_ih_g_l{k}{suffix}, weight_ih_h_l{k}{suffix}: (4, C_k, r, H): the input matrix's g_i and h_i,
        weight_hh_g_l{k}{suffix}, weight_hh_h_l{k}{suffix}: (4, 1, r, H): the recurrent matrix's,
        bias_l{k}{suffix}: (4H,) (one bias: nn.LSTM's two only ever appear as their sum).
    Initialisation: every g and h entry uniform with variance (3 r H^2)^-1/2, so every entry of a block (a sum of
    r H products g h of independent zero-mean entries) has variance 1/(3H), that of nn.LSTM's uniform +-1/sqrt(H);
    the bias uniform in +-1/sqrt(H).
    ``product``: "fft" multiplies every step through the FFT; "dense" forms the explicit matrices once per forward
    call (from the generators, by the FFT applied to the identity, differentiably) and multiplies with matmul;
    "auto" (default) takes the FFT from H >= 512 * max(1, r // 4), the CPU crossover bench/bench_structured.py
    measured (README), and the formed matrices below it. Both compute the same function.
    dtypes: float64 and float32; float16/bfloat16 run their products and cell state in float32.

    Example::
        >>> lstm = lstmkern.ToeplitzLikeLSTM(64, 128, num_layers=2, displacement_rank=4)
        >>> out, (h_n, c_n) = lstm(torch.randn(30, 8, 64))     # out: (30, 8, 128), h_n: (2, 8, 128)
        >>> dense = lstm.to_dense()                            # the same function as an nn.LSTM
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 displacement_rank: int = 1, product: str = "auto", device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0, "auto")
        _check_positive_int("displacement_rank", displacement_rank)
        if product not in _PRODUCTS:
            raise ValueError(f"product must be one of {', '.join(map(repr, _PRODUCTS))}, got {product!r}")
        self.product = product
        if displacement_rank > hidden_size:
            raise ValueError(f"displacement_rank={displacement_rank} exceeds the block size hidden_size={hidden_size} "
                             f"(an H x H block has displacement rank at most H)")
        self.displacement_rank = displacement_rank
        H, r = hidden_size, displacement_rank
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            blocks = self.input_blocks(layer)
            for suffix in self._suffixes():
                for part, columns in (("ih", blocks), ("hh", 1)):
                    for vec in ("g", "h"):
                        self.register_parameter(f"weight_{part}_{vec}_l{layer}{suffix}",
                                                nn.Parameter(torch.empty(4, columns, r, H, **factory)))
                if bias:
                    self.register_parameter(f"bias_l{layer}{suffix}", nn.Parameter(torch.empty(4 * H, **factory)))
        self.reset_parameters()

    @property
    def uses_fft(self) -> bool:
        """Whether forward multiplies through the FFT (else it forms the matrices once per call and uses matmul)."""
        if self.product != "auto":
            return self.product == "fft"
        # CPU crossover measured by bench/bench_structured.py (README): the FFT wins from H = 512 at r <= 4 and
        # later for larger r; below that the dense product of the formed matrix is faster.
        return self.hidden_size >= 512 * max(1, self.displacement_rank // 4)

    def input_blocks(self, layer: int) -> int:
        """C_k = ceil(I_k / H): the number of H-wide column blocks of layer ``layer``'s input matrix."""
        return -(-self.layer_input_size(layer) // self.hidden_size)

    def reset_parameters(self) -> None:
        H, r = self.hidden_size, self.displacement_rank
        generator_bound = math.sqrt(3.0) * (3.0 * r * H * H) ** -0.25   # uniform: variance bound^2 / 3
        with torch.no_grad():
            for name, p in self.named_parameters():
                bound = 1.0 / math.sqrt(H) if name.startswith("bias") else generator_bound
                nn.init.uniform_(p, -bound, bound)

    def layer_parameters(self, layer: int, direction: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
        """(ih_g, ih_h, hh_g, hh_h, bias or None) of one layer and direction."""
        suffix = self._suffixes()[direction]
        names = [f"weight_{part}_{vec}_l{layer}{suffix}" for part in ("ih", "hh") for vec in ("g", "h")]
        bias = getattr(self, f"bias_l{layer}{suffix}") if self.bias else None
        return (*(getattr(self, n) for n in names), bias)

    def dense_weights(self, layer: int, direction: int = 0) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """The explicit gate matrices of one layer and direction, differentiable with respect to the generators.

        Returns: weight_ih (4H, I_k), weight_hh (4H, H), bias (4H,) or None: nn.LSTM's layout (gates i, f, g, o).
        """
        ih_g, ih_h, hh_g, hh_h, bias = self.layer_parameters(layer, direction)
        weight_ih = toeplitz_like_dense(ih_g, ih_h)[:, :self.layer_input_size(layer)]
        return weight_ih, toeplitz_like_dense(hh_g, hh_h), bias

    def to_dense(self) -> nn.LSTM:
        """An nn.LSTM computing the same function, with the gate matrices written out (bias in bias_ih, zero
        bias_hh); same dtype, device and train/eval mode. For inspection, deployment and as the tests' reference."""
        ref = next(self.parameters())
        lstm = nn.LSTM(self.input_size, self.hidden_size, self.num_layers, bias=self.bias,
                       batch_first=self.batch_first, dropout=self.dropout, bidirectional=self.bidirectional,
                       device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for layer in range(self.num_layers):
                for direction, suffix in enumerate(self._suffixes()):
                    weight_ih, weight_hh, bias = self.dense_weights(layer, direction)
                    getattr(lstm, f"weight_ih_l{layer}{suffix}").copy_(weight_ih)
                    getattr(lstm, f"weight_hh_l{layer}{suffix}").copy_(weight_hh)
                    if bias is not None:
                        getattr(lstm, f"bias_ih_l{layer}{suffix}").copy_(bias)
                        getattr(lstm, f"bias_hh_l{layer}{suffix}").zero_()
        lstm.train(self.training)
        return lstm

    def _run_layer(self, layer: int, direction: int, x: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor]:
        """One layer and direction over time-major x (T, B, I_k) -> output (T, B, H) in x's dtype, cell (T, B, H)
        in state dtype (the cell of every step: packed sequences end at different steps)."""
        ih_g, ih_h, hh_g, hh_h, bias = self.layer_parameters(layer, direction)
        T, B, I = x.shape
        H = self.hidden_size
        sdt = state_dtype(x.dtype)
        ih, hh = _spectra(ih_g, ih_h), _spectra(hh_g, hh_h)
        padded = nn.functional.pad(x.to(sdt), (0, ih_g.shape[1] * H - I))
        product = _apply
        if not self.uses_fft:
            # Small H: W^T formed once per call as the FFT product of the identity (O(r C H^2 log H), differentiable
            # in the generators), then every product is one matmul.
            ih, hh = (_apply(torch.eye(s.h_hat.shape[1] * H, dtype=sdt, device=x.device), s) for s in (ih, hh))
            product = torch.matmul
        # The input products of all steps at once (time-parallel); only the recurrent product stays in the loop.
        proj = product(padded.reshape(T * B, padded.shape[-1]), ih).reshape(T, B, 4 * H)
        if bias is not None:
            proj = proj + bias.to(sdt)
        h, c = h0, c0.to(sdt)
        outputs, cells = [], []
        for t in range(T):
            gates = proj[t] + product(h.to(sdt), hh)
            h_s, c = _lstm_cell(gates, c)
            h = h_s.to(x.dtype)
            outputs.append(h)
            cells.append(c)
        return torch.stack(outputs), torch.stack(cells)

    def _extra_repr_sizes(self) -> str:
        product = f", product={self.product!r}" if self.product != "auto" else ""
        return f", displacement_rank={self.displacement_rank}{product}"


# ----------------------------------------------------------------------------------------------------------------
# The hybrid
# ----------------------------------------------------------------------------------------------------------------

class CompactLSTM(nn.Module):
    """Lu, Sindhwani & Sainath's hybrid: ``structured_layers`` Toeplitz-like layers at the bottom, then
    ``num_layers - structured_layers`` LSTMP layers (a projection r_t = W_hr h_t of size P, read both by the layer's
    own recurrence and by the next layer: the shared low-rank factor) on top.

    The LSTMP layers are torch.nn.LSTM(proj_size=P) for now (lstmkern's own LSTMP is a separate issue); the first of
    them reads the D*H outputs of the structured layers through a dense input matrix.

    forward(input, hx=None) -> output, ((h_s, c_s), (h_p, c_p)):
        input (T, B, I) (or (B, T, I) with batch_first, or a PackedSequence); output (T, B, D*P) (or batch-first, or
        packed). The state has two parts because the parts' h differ in width: h_s, c_s (Ls*D, B, H) of the structured
        layers, h_p (Lp*D, B, P) and c_p (Lp*D, B, H) of the projected layers (Ls = structured_layers,
        Lp = num_layers - Ls). ``hx`` takes the same nested pair, or None for zeros.
    Dropout (training only) between every two layers, as nn.LSTM's.

    Example::
        >>> rnn = lstmkern.CompactLSTM(64, 128, num_layers=3, structured_layers=2, displacement_rank=4, proj_size=32)
        >>> out, (structured_state, projected_state) = rnn(torch.randn(30, 8, 64))     # out: (30, 8, 32)
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 2, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 structured_layers: int = 1, displacement_rank: int = 1, proj_size: int, device=None, dtype=None):
        super().__init__()
        _check_positive_int("num_layers", num_layers)
        _check_positive_int("structured_layers", structured_layers)
        if structured_layers >= num_layers:
            raise ValueError(f"structured_layers={structured_layers} must be below num_layers={num_layers} (at least "
                             f"one projected layer on top; use ToeplitzLikeLSTM for structured layers only)")
        _check_positive_int("hidden_size", hidden_size)
        _check_positive_int("proj_size", proj_size)
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size={proj_size} must be below hidden_size={hidden_size}")
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first must be a bool, got {batch_first!r}")
        factory = {"device": device, "dtype": dtype}
        self.structured = ToeplitzLikeLSTM(input_size, hidden_size, structured_layers, bias, False, dropout,
                                           bidirectional, displacement_rank=displacement_rank, **factory)
        D = self.structured.num_directions
        self.projected = nn.LSTM(D * hidden_size, hidden_size, num_layers - structured_layers, bias=bias,
                                 dropout=dropout if num_layers - structured_layers > 1 else 0.0,
                                 bidirectional=bidirectional, proj_size=proj_size, **factory)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.structured_layers = structured_layers
        self.displacement_rank = displacement_rank
        self.proj_size = proj_size
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = self.structured.dropout
        self.bidirectional = bidirectional

    def forward(self, input, hx=None):
        if hx is None:
            structured_hx = projected_hx = None
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx must be None or ((h_s, c_s), (h_p, c_p)) (structured then projected layers' "
                                f"states), got {type(hx).__name__}")
            structured_hx, projected_hx = hx
        packed = isinstance(input, PackedSequence)
        x = input.transpose(0, 1) if self.batch_first and isinstance(input, Tensor) and input.dim() == 3 else input
        out, structured_state = self.structured(x, structured_hx)
        if self.dropout > 0 and self.training:
            if packed:
                out = out._replace(data=nn.functional.dropout(out.data, self.dropout, training=True))
            else:
                out = nn.functional.dropout(out, self.dropout, training=True)
        out, projected_state = self.projected(out, projected_hx)
        if self.batch_first and not packed:
            out = out.transpose(0, 1)
        return out, (structured_state, projected_state)

    def extra_repr(self) -> str:
        s = (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
             f"structured_layers={self.structured_layers}, proj_size={self.proj_size}")
        if self.batch_first:
            s += ", batch_first=True"
        return s


# Safe for torch.load(weights_only=True), like GLSTM and FLSTM (see lstmkern/modules.py). CompactLSTM holds an
# nn.LSTM, which a weights_only load accepts only if the caller allows torch.nn.LSTM too: lstmkern does not widen the
# allow-list for torch's own classes on the user's behalf.
torch.serialization.add_safe_globals([ToeplitzLikeLSTM, CompactLSTM])
