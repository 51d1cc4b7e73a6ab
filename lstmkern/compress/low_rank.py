"""Low-rank factorization of a trained LSTM (Winata et al. 2019, "On the Effectiveness of Low-Rank Matrix
Factorization for LSTM Model Compression"), by truncated SVD or semi-NMF, run on lstmkern's F-LSTM op.

Shape legend: T time steps, B batch, L layers, D directions (2 if bidirectional else 1), H hidden (cell) units,
P the recurrent and output width (proj_size if > 0, else H), I_k input features of layer k (I_0 = input_size,
I_k = D*P after that), m x n a matrix being factorized, r the rank kept for one matrix, R the rank of an F-LSTM layer.

A layer's gates are W_ih x + W_hh h + b with W_ih (4H, I_k), W_hh (4H, P). Four ways to factorize (``part``):

    "joint"  [W_ih W_hh] ~ U V              -> exactly an F-LSTM layer: W2 = U (4H, R), W1 = V (R, I_k + P)
    "ih"     W_ih ~ U_x V_x, W_hh dense     -> W2 = [U_x  W_hh],  W1 = blockdiag(V_x, I_P)
    "hh"     W_hh ~ U_h V_h, W_ih dense     -> W2 = [W_ih U_h],   W1 = blockdiag(I_{I_k}, V_h)
    "both"   both, separately               -> W2 = [U_x  U_h],   W1 = blockdiag(V_x, V_h)

so every variant runs as gates = W2 (W1 [x; h]) + b through :func:`lstmkern.flstm_forward`'s op. A projection
(LSTMP, h = W_hr (o * tanh c) with W_hr (P, H)) is not factorized: it is copied unchanged into the result, which
runs it exactly as the original did.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Union

import torch
from torch import Tensor, nn

from ..modules import FLSTM, GLSTM, _StackedLSTM
from ._weights import check_lstm_like, dense_weights, projection, suffixes

__all__ = ["low_rank", "LowRankLSTM", "select_rank", "svd_factors", "semi_nmf", "SemiNMFResult"]

Rank = Union[int, float, str]
_PARTS = ("joint", "ih", "hh", "both")
_METHODS = ("svd", "semi_nmf")


def select_rank(singular_values: Tensor, rank: Rank) -> int:
    """The rank to keep for a matrix with these singular values (descending, as torch.linalg.svdvals returns them).

    ``rank``: an int r (1 <= r <= number of singular values); a float f in (0, 1]: the smallest r whose leading
    singular values hold at least the fraction f of sum(s^2) (the squared Frobenius norm, the "energy");
    or "full": every singular value. Note 1 (int) keeps one singular value and 1.0 (float) keeps all the energy.

    Example::
        >>> select_rank(torch.tensor([3.0, 2.0, 1.0]), 0.9)   # 9 + 4 = 13 >= 0.9 * 14 -> 2
        2
    """
    full = singular_values.numel()
    if isinstance(rank, str):
        if rank != "full":
            raise ValueError(f"rank must be an int, a float in (0, 1] or 'full', got {rank!r}")
        return full
    if isinstance(rank, bool) or not isinstance(rank, (int, float)):
        raise TypeError(f"rank must be an int, a float in (0, 1] or 'full', got {type(rank).__name__}")
    if isinstance(rank, int):
        if not 1 <= rank <= full:
            raise ValueError(f"rank={rank} must be between 1 and min(rows, cols)={full} of the matrix")
        return rank
    if not 0.0 < rank <= 1.0:
        raise ValueError(f"rank as a float is the fraction of energy to keep and must be in (0, 1], got {rank}")
    energy = singular_values.double().pow(2).cumsum(0)
    if energy[-1] == 0:
        return 1
    # First index whose cumulative energy reaches the target; comparing against the cumulative sum itself (not a
    # separately summed total) makes f = 1.0 land exactly on the last non-zero singular value.
    target = energy.new_tensor([rank * energy[-1].item()])
    return min(int(torch.searchsorted(energy, target).item()) + 1, full)


def svd_factors(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Best rank-``rank`` factors (Eckart-Young) of ``weight`` (m, n): U (m, r), V (r, n) with U V the truncated SVD.

    The singular values are split evenly (U = U_r S^1/2, V = S^1/2 V_r^T) so both factors have the same scale, which
    suits fine-tuning. Computed in float64, returned in weight's dtype.
    """
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(weight.dtype), (root[:, None] * vh[:rank]).to(weight.dtype)


@dataclass
class SemiNMFResult:
    """W ~ left @ right with ``right`` >= 0 elementwise.

    left: (m, r), any sign (Ding et al.'s F). right: (r, n), non-negative (Ding et al.'s G^T).
    losses: ||W - left right||_F after the initial least-squares step and after every iteration (non-increasing).
    """
    left: Tensor
    right: Tensor
    losses: list[float] = field(default_factory=list)


def semi_nmf(weight: Tensor, rank: int, *, n_iter: int = 100, seed: int = 0, init_eps: float = 1e-2) -> SemiNMFResult:
    """Semi-NMF (Ding, Li & Jordan 2010): W (m, n) ~ F G^T with F (m, r) of any sign and G (n, r) >= 0.

    Alternates the exact least-squares F-step F = W G (G^T G)^-1 and the multiplicative G-step
    G <- G * sqrt(((W^T F)^+ + G (F^T F)^-) / ((W^T F)^- + G (F^T F)^+)) (A^+ / A^- the positive / negative parts).
    Both steps never increase ||W - F G^T||_F, and the G-step keeps G non-negative.

    Initialisation from the SVD W = U S V^T: column k of G starts as the positive part of +-sqrt(s_k) v_k (the sign
    that keeps more of its mass), plus ``init_eps`` times its mean entry times a uniform(0, 1) draw from a generator
    seeded with ``seed`` (a multiplicative update never moves an entry off zero). Deterministic given the seed.
    Computed in float64; returned in weight's dtype with ``right`` = G^T.

    Example::
        >>> res = semi_nmf(torch.randn(40, 12, dtype=torch.float64), 4, n_iter=50)
        >>> res.left.shape, res.right.shape, bool((res.right >= 0).all())
        (torch.Size([40, 4]), torch.Size([4, 12]), True)
    """
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D tensor, got {getattr(weight, 'shape', type(weight).__name__)}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(weight.shape):
        raise ValueError(f"rank must be an int in [1, min(m, n)={min(weight.shape)}], got {rank!r}")
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
        raise ValueError(f"n_iter must be an int >= 0, got {n_iter!r}")
    w = weight.detach().double()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    g = vh[:rank].t() * s[:rank].sqrt()  # (n, r)
    flip = g.clamp_min(0).pow(2).sum(0) < (-g).clamp_min(0).pow(2).sum(0)
    g = torch.where(flip, -g, g).clamp_min(0)
    scale = g.abs().mean().clamp_min(torch.finfo(torch.float64).tiny)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    jitter = torch.rand(g.shape, generator=generator, dtype=torch.float64).to(w.device)
    g = g + init_eps * scale * jitter

    tiny = torch.finfo(torch.float64).tiny

    def f_step(g: Tensor) -> Tensor:
        # min_F ||W - F G^T|| is min_{F^T} ||G F^T - W^T||: an exact least-squares solve (robust to rank-deficient G).
        return torch.linalg.lstsq(g, w.t(), driver="gelsd" if w.device.type == "cpu" else None).solution.t()

    def loss(f: Tensor, g: Tensor) -> float:
        return torch.linalg.matrix_norm(w - f @ g.t()).item()

    f = f_step(g)
    losses = [loss(f, g)]
    for _ in range(n_iter):
        wtf, ftf = w.t() @ f, f.t() @ f
        numerator = wtf.clamp_min(0) + g @ (-ftf).clamp_min(0)
        denominator = (-wtf).clamp_min(0) + g @ ftf.clamp_min(0)
        g = g * (numerator / denominator.clamp_min(tiny)).sqrt()
        f = f_step(g)
        losses.append(loss(f, g))
    return SemiNMFResult(f.to(weight.dtype), g.t().contiguous().to(weight.dtype), losses)


def _factorize(weight: Tensor, rank: int, method: str, seed: int, n_iter: int) -> tuple[Tensor, Tensor]:
    if method == "svd":
        return svd_factors(weight, rank)
    result = semi_nmf(weight, rank, n_iter=n_iter, seed=seed)
    return result.left, result.right


class LowRankLSTM(_StackedLSTM):
    """An LSTM whose W_ih and/or W_hh are stored as separate low-rank factors, run on the F-LSTM op.

    Built by :func:`low_rank` with part "ih", "hh" or "both"; call convention of nn.LSTM (``forward(input, hx=None)``,
    batch_first, PackedSequence, h_n (L*D, B, P), c_n (L*D, B, H)). Parameters per layer k and direction suffix
    ("" / "_reverse"):

        factorized W_ih:  weight_ih_u_l{k}{sfx} (4H, r_x), weight_ih_v_l{k}{sfx} (r_x, I_k)   W_ih ~ U V
        dense W_ih:       weight_ih_l{k}{sfx} (4H, I_k)
        factorized W_hh:  weight_hh_u_l{k}{sfx} (4H, r_h), weight_hh_v_l{k}{sfx} (r_h, P)
        dense W_hh:       weight_hh_l{k}{sfx} (4H, P)
        bias_l{k}{sfx} (4H,)  (nn.LSTM's two biases summed)
        weight_hr_l{k}{sfx} (P, H)  only with proj_size = P > 0 (as nn.LSTM; never factorized)

    Only these are parameters, so ``sum(p.numel() for p in m.parameters())`` is the true size: r (m + n) per
    factorized matrix. Each forward assembles the F-LSTM weights W2 = [U_x U_h] (4H, R) and W1 = blockdiag(V_x, V_h)
    (R, I_k + P) (a dense part enters W2 as itself and W1 as an identity block), differentiably, so the module trains.

    Compute overhead of the block layout: the F-LSTM op multiplies all of W1, zero blocks included. Per step and
    batch row, W1 [x; h] costs R (I_k + P) multiply-adds where the factors alone need r_x I_k + r_h P, so the zero
    blocks add r_x P + r_h I_k; a dense part enters as an identity block (I_k^2 extra for "hh", P^2 for "ih") and
    its own 4H x I_k (or 4H x P) product moves into W2. The W2 stage costs 4H R, exactly what the factors need. The
    recurrent path (W1[:, I_k:], then W2) is what every step waits on: for "ih" it is (r_x + P) P + 4H (r_x + P)
    against nn.LSTM's 4H P, i.e. slower. part="joint" (a plain F-LSTM) has no zero blocks; prefer it for speed.
    """

    _op = "flstm"
    _param_names = ("weight_1", "weight_2", "bias")  # for the base class's bookkeeping; layer_parameters is overridden

    def __init__(self, input_size: int, hidden_size: int, ranks_ih: Optional[list[list[int]]],
                 ranks_hh: Optional[list[list[int]]], num_layers: int = 1, bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0, device=None, dtype=None,
                 backend: str = "auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size,
                         backend)
        D = self.num_directions
        if ranks_ih is None and ranks_hh is None:
            raise ValueError("ranks_ih and ranks_hh are both None: at least one matrix must be factorized "
                             "(use nn.LSTM or lstmkern.FLSTM.from_lstm for a dense model)")
        for name, ranks in (("ranks_ih", ranks_ih), ("ranks_hh", ranks_hh)):
            if ranks is not None and (len(ranks) != num_layers or any(len(r) != D for r in ranks)):
                raise ValueError(f"{name} must be None or {num_layers} lists of {D} ranks, got {ranks!r}")
        self.ranks_ih = None if ranks_ih is None else [list(r) for r in ranks_ih]
        self.ranks_hh = None if ranks_hh is None else [list(r) for r in ranks_hh]
        H = hidden_size
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            for direction, sfx in enumerate(self._suffixes()):
                for name, ranks, cols in (("ih", self.ranks_ih, self.layer_input_size(layer)),
                                          ("hh", self.ranks_hh, self.output_size)):
                    if ranks is None:
                        self.register_parameter(f"weight_{name}_l{layer}{sfx}",
                                                nn.Parameter(torch.empty(4 * H, cols, **factory)))
                    else:
                        r = ranks[layer][direction]
                        self.register_parameter(f"weight_{name}_u_l{layer}{sfx}",
                                                nn.Parameter(torch.empty(4 * H, r, **factory)))
                        self.register_parameter(f"weight_{name}_v_l{layer}{sfx}",
                                                nn.Parameter(torch.empty(r, cols, **factory)))
                if bias:
                    self.register_parameter(f"bias_l{layer}{sfx}", nn.Parameter(torch.empty(4 * H, **factory)))
        self._register_projections(factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.LSTM's uniform +-1/sqrt(H) for dense matrices (W_hr too) and biases; factors U (4H, r), V (r, n) uniform
        with variance 1/sqrt(3 H r) each, so every entry of U V has nn.LSTM's variance 1/(3H). (:func:`low_rank`
        overwrites all of this with the factorization.)"""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "_u_l" in name or "_v_l" in name:
                    r = p.shape[1] if "_u_l" in name else p.shape[0]
                    factor_bound = math.sqrt(3.0 / math.sqrt(3.0 * self.hidden_size * r))
                    nn.init.uniform_(p, -factor_bound, factor_bound)
                else:
                    nn.init.uniform_(p, -bound, bound)

    @property
    def part(self) -> str:
        if self.ranks_ih is not None and self.ranks_hh is not None:
            return "both"
        return "ih" if self.ranks_ih is not None else "hh"

    def _blocks(self, layer: int, direction: int):
        """Per matrix ("ih", "hh"): (U, V) if factorized, else (W, None)."""
        sfx = self._suffixes()[direction]
        out = []
        for name, ranks in (("ih", self.ranks_ih), ("hh", self.ranks_hh)):
            if ranks is None:
                out.append((getattr(self, f"weight_{name}_l{layer}{sfx}"), None))
            else:
                out.append((getattr(self, f"weight_{name}_u_l{layer}{sfx}"), getattr(self, f"weight_{name}_v_l{layer}{sfx}")))
        return out

    def layer_parameters(self, layer: int, direction: int) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """(W1 (R, I_k + P), W2 (4H, R), bias) for the F-LSTM op, assembled from the stored factors."""
        left, right = [], []
        for u_or_w, v in self._blocks(layer, direction):
            left.append(u_or_w)
            right.append(v if v is not None else torch.eye(u_or_w.shape[1], dtype=u_or_w.dtype, device=u_or_w.device))
        w1 = torch.block_diag(*right)
        w2 = torch.cat(left, dim=1)
        b = getattr(self, f"bias_l{layer}{self._suffixes()[direction]}") if self.bias else None
        return w1, w2, b

    def effective_weights(self, layer: int, direction: int) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """(W_ih (4H, I_k), W_hh (4H, P), bias) this module computes with: U V for a factorized matrix (the projection,
        if any, is :meth:`layer_projection`'s)."""
        (a, va), (h, vh) = self._blocks(layer, direction)
        b = getattr(self, f"bias_l{layer}{self._suffixes()[direction]}") if self.bias else None
        return (a if va is None else a @ va), (h if vh is None else h @ vh), b

    def _extra_repr_sizes(self) -> str:
        return f", part={self.part!r}, ranks_ih={self.ranks_ih}, ranks_hh={self.ranks_hh}"


def low_rank(model, rank: Rank, *, part: str = "joint", method: str = "svd", seed: int = 0, n_iter: int = 100,
             backend: str = "auto") -> nn.Module:
    """Factorize a trained LSTM's gate matrices into low-rank products (Winata et al. 2019).

    Args:
        model: an nn.LSTM (any num_layers, bidirectional, batch_first, bias, proj_size), an lstmkern.GLSTM with
            groups=1 or an lstmkern.FLSTM (refactorized from its product W2 W1). It is not modified. A projection
            W_hr (proj_size = P > 0) is kept as it is: W_hh (4H, P) is what gets factorized, and the result has the
            same proj_size and W_hr.
        rank: an int (the rank of every factorized matrix), a float in (0, 1] (per matrix, the smallest rank keeping
            that fraction of sum(sigma^2)), or "full" (every singular value: with method="svd" the result computes
            what ``model`` computes, to rounding). See :func:`select_rank`.
        part: "joint" factorizes [W_ih W_hh] (4H, I_k + P) and returns an :class:`lstmkern.FLSTM` with per-layer ranks
            (an F-LSTM has one rank per layer, so with a float rank and two directions the larger one is used);
            "ih", "hh" or "both" factorize W_ih, W_hh or both separately and return a :class:`LowRankLSTM`.
        method: "svd" (truncated SVD, optimal in Frobenius norm) or "semi_nmf" (:func:`semi_nmf`, W ~ F G^T with the
            right factor G^T = V >= 0, i.e. W1's factor blocks are non-negative; the rank is chosen from the SVD).
        seed, n_iter: semi-NMF's initial jitter seed and number of iterations (ignored by "svd").
        backend: the returned module's backend ("auto", "reference", "triton", "cuda").
    Returns:
        An nn.Module with nn.LSTM's ``forward(input, hx=None)`` (PackedSequence too), in model's dtype and device,
        whose parameters are only the factors (plus dense parts and biases): fine-tune it like any module.

    Example::
        >>> lstm = torch.nn.LSTM(64, 128, num_layers=2)
        >>> flstm = low_rank(lstm, 0.9)                     # F-LSTM keeping 90% of each layer's energy
        >>> sep = low_rank(lstm, 32, part="hh", method="semi_nmf")
        >>> out, (h_n, c_n) = sep(torch.randn(10, 4, 64))
        >>> lstmp = low_rank(torch.nn.LSTM(64, 128, proj_size=32), 0.9)   # an FLSTM with proj_size=32, same W_hr
    """
    check_lstm_like(model, "model", (nn.LSTM, GLSTM, FLSTM))
    if isinstance(model, GLSTM) and model.groups != 1:
        raise ValueError(f"model must be a GLSTM with groups=1 (a block-diagonal matrix is not low-rank "
                         f"factorized here), got groups={model.groups}")
    if part not in _PARTS:
        raise ValueError(f"part must be one of {_PARTS}, got {part!r}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    ref = next(model.parameters())
    L, D, H = model.num_layers, (2 if model.bidirectional else 1), model.hidden_size
    common = dict(num_layers=L, bias=model.bias, batch_first=model.batch_first, dropout=model.dropout,
                  bidirectional=model.bidirectional, proj_size=model.proj_size, device=ref.device, dtype=ref.dtype,
                  backend=backend)
    dense = [[dense_weights(model, layer, d) for d in range(D)] for layer in range(L)]

    def ranks_for(matrix: str) -> list[list[int]]:
        ranks = []
        for layer in range(L):
            row = []
            for d in range(D):
                w_ih, w_hh, _ = dense[layer][d]
                w = {"ih": w_ih, "hh": w_hh, "joint": torch.cat((w_ih, w_hh), dim=1)}[matrix]
                row.append(select_rank(torch.linalg.svdvals(w.double()), rank))
            ranks.append(row)
        return ranks

    if part == "joint":
        layer_ranks = [max(r) for r in ranks_for("joint")]
        module = FLSTM(model.input_size, H, rank=layer_ranks, **common)
        with torch.no_grad():
            for layer in range(L):
                for d in range(D):
                    w_ih, w_hh, b = dense[layer][d]
                    w2, w1 = _factorize(torch.cat((w_ih, w_hh), dim=1), layer_ranks[layer], method, seed, n_iter)
                    p1, p2, pb = module.layer_parameters(layer, d)
                    p1.copy_(w1)
                    p2.copy_(w2)
                    if pb is not None:
                        pb.copy_(b)
        _copy_projections(model, module)
        return module.train(model.training)

    ranks_ih = ranks_for("ih") if part in ("ih", "both") else None
    ranks_hh = ranks_for("hh") if part in ("hh", "both") else None
    module = LowRankLSTM(model.input_size, H, ranks_ih, ranks_hh, **common)
    with torch.no_grad():
        for layer in range(L):
            for d, sfx in enumerate(suffixes(model.bidirectional)):
                w_ih, w_hh, b = dense[layer][d]
                for name, w, ranks in (("ih", w_ih, ranks_ih), ("hh", w_hh, ranks_hh)):
                    if ranks is None:
                        getattr(module, f"weight_{name}_l{layer}{sfx}").copy_(w)
                    else:
                        u, v = _factorize(w, ranks[layer][d], method, seed, n_iter)
                        getattr(module, f"weight_{name}_u_l{layer}{sfx}").copy_(u)
                        getattr(module, f"weight_{name}_v_l{layer}{sfx}").copy_(v)
                if b is not None:
                    getattr(module, f"bias_l{layer}{sfx}").copy_(b)
    _copy_projections(model, module)
    return module.train(model.training)


def _copy_projections(model, module) -> None:
    """W_hr of every layer and direction of ``model`` into ``module`` (both have the same proj_size)."""
    with torch.no_grad():
        for layer in range(model.num_layers):
            for d in range(2 if model.bidirectional else 1):
                w_hr = projection(model, layer, d)
                if w_hr is not None:
                    module.layer_projection(layer, d).copy_(w_hr)


# Safe for torch.load(weights_only=True), like GLSTM and FLSTM (see lstmkern/modules.py).
torch.serialization.add_safe_globals([LowRankLSTM])
