"""lstmkern.structured: Toeplitz-like LSTM layers (FFT products against explicit matrices and nn.LSTM, float64,
forward and backward) and the hybrid CompactLSTM."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkern
from lstmkern.structured import CompactLSTM, ToeplitzLikeLSTM, f_circulant, toeplitz_like_dense, toeplitz_like_matmul

F64 = torch.float64


def _shift(n: int, f: float) -> torch.Tensor:
    """Z_f: ones on the subdiagonal, f in the top-right corner (the unit f-circulant)."""
    z = torch.diag(torch.ones(n - 1, dtype=F64), -1)
    z[0, n - 1] = f
    return z


@pytest.mark.parametrize("f", [1.0, -1.0, 0.5])
def test_f_circulant_is_the_krylov_matrix_of_the_shift(f):
    """Z_f(v) = [v, Z_f v, Z_f^2 v, ...]: column j is v shifted down j times with f on each wrap."""
    n = 6
    v = torch.randn(n, dtype=F64)
    columns, col = [], v
    for _ in range(n):
        columns.append(col)
        col = _shift(n, f) @ col
    torch.testing.assert_close(f_circulant(v, f), torch.stack(columns, dim=1), rtol=0, atol=0)


@pytest.mark.parametrize("n, r", [(7, 1), (8, 3), (5, 4)])
def test_block_has_the_stated_displacement(n, r):
    """Z_1 M - M Z_-1 = 2 sum_i g_i (J h_i)^T, of rank r: M is Toeplitz-like of displacement rank r."""
    g, h = torch.randn(1, 1, r, n, dtype=F64), torch.randn(1, 1, r, n, dtype=F64)
    M = toeplitz_like_dense(g, h)
    displacement = _shift(n, 1.0) @ M - M @ _shift(n, -1.0)
    expected = 2 * g[0, 0].T @ h[0, 0].flip(-1)
    torch.testing.assert_close(displacement, expected, rtol=0, atol=1e-12)
    assert torch.linalg.matrix_rank(displacement).item() == r


@pytest.mark.parametrize("Q, C, r, n", [(4, 1, 1, 1), (4, 3, 2, 5), (4, 2, 3, 8), (1, 1, 2, 9)])
def test_fft_product_matches_dense_forward_and_backward(Q, C, r, n):
    g = torch.randn(Q, C, r, n, dtype=F64, requires_grad=True)
    h = torch.randn(Q, C, r, n, dtype=F64, requires_grad=True)
    x = torch.randn(6, C * n, dtype=F64, requires_grad=True)
    weight = torch.randn(6, Q * n, dtype=F64)
    fft = toeplitz_like_matmul(x, g, h)
    dense = x @ toeplitz_like_dense(g, h).T
    torch.testing.assert_close(fft, dense, rtol=1e-12, atol=1e-12)
    grads_fft = torch.autograd.grad((fft * weight).sum(), (x, g, h))
    grads_dense = torch.autograd.grad((dense * weight).sum(), (x, g, h))
    for a, b in zip(grads_fft, grads_dense):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _random_state(module: ToeplitzLikeLSTM, B: int):
    shape = (module.num_layers * module.num_directions, B, module.hidden_size)
    return torch.randn(shape, dtype=F64), torch.randn(shape, dtype=F64)


def _generator_grads_through_dense(module: ToeplitzLikeLSTM, lstm: nn.LSTM) -> dict:
    """The dense path's gradients of the generators: nn.LSTM's weight gradients pulled back through the explicit
    matrices (a vector-Jacobian product of dense_weights)."""
    grads = {}
    for layer in range(module.num_layers):
        for direction, suffix in enumerate(module._suffixes()):
            params = module.layer_parameters(layer, direction)
            weight_ih, weight_hh, _ = module.dense_weights(layer, direction)
            pulled = torch.autograd.grad((weight_ih, weight_hh), params[:4],
                                         (getattr(lstm, f"weight_ih_l{layer}{suffix}").grad,
                                          getattr(lstm, f"weight_hh_l{layer}{suffix}").grad))
            names = [f"weight_{p}_{v}_l{layer}{suffix}" for p in ("ih", "hh") for v in ("g", "h")]
            grads.update(zip(names, pulled))
            if module.bias:
                grads[f"bias_l{layer}{suffix}"] = getattr(lstm, f"bias_ih_l{layer}{suffix}").grad
    return grads


CONFIGS = [
    # I, H, layers, r, T, B, bidirectional, bias, batch_first, with hx
    dict(I=5, H=7, L=1, r=1, T=1, B=3, bi=False, bias=True, bf=False, hx=True),       # odd H, I < H, r = 1, T = 1
    dict(I=9, H=4, L=2, r=2, T=4, B=2, bi=True, bias=True, bf=False, hx=True),        # I > H (3 blocks), 2 layers x 2
    dict(I=6, H=6, L=1, r=6, T=3, B=2, bi=False, bias=False, bf=True, hx=False),      # r = H (any matrix), batch_first
    dict(I=3, H=1, L=3, r=1, T=2, B=1, bi=False, bias=True, bf=False, hx=True),       # H = 1: blocks of one entry
]


@pytest.mark.parametrize("product", ["fft", "dense"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"I{c['I']}H{c['H']}L{c['L']}r{c['r']}T{c['T']}"
                                                        f"{'bi' if c['bi'] else ''}")
def test_module_matches_nn_lstm_with_the_explicit_matrices(cfg, product):
    """Forward and every gradient (input, initial state, each generator, bias) of the FFT path (and of the formed-
    matrix path) against the dense path: nn.LSTM's own float64 implementation running to_dense()'s explicit
    matrices."""
    torch.manual_seed(0)
    module = ToeplitzLikeLSTM(cfg["I"], cfg["H"], cfg["L"], bias=cfg["bias"], batch_first=cfg["bf"],
                              bidirectional=cfg["bi"], displacement_rank=cfg["r"], product=product, dtype=F64)
    assert module.uses_fft == (product == "fft")
    lstm = module.to_dense()
    shape = (cfg["B"], cfg["T"], cfg["I"]) if cfg["bf"] else (cfg["T"], cfg["B"], cfg["I"])
    x = torch.randn(shape, dtype=F64, requires_grad=True)
    hx = tuple(t.requires_grad_() for t in _random_state(module, cfg["B"])) if cfg["hx"] else None
    out, (h_n, c_n) = module(x, hx)
    ref_out, (ref_h, ref_c) = lstm(x, hx)
    for a, b in ((out, ref_out), (h_n, ref_h), (c_n, ref_c)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    weights = [torch.randn_like(t) for t in (out, h_n, c_n)]
    inputs = [x] + (list(hx) if hx else [])

    def loss(results):
        return sum((r * w).sum() for r, w in zip(results, weights))

    grads = torch.autograd.grad(loss((out, h_n, c_n)), inputs + list(module.parameters()))
    ref_input_grads = torch.autograd.grad(loss((ref_out, ref_h, ref_c)), inputs + list(lstm.parameters()))
    for a, b in zip(grads[:len(inputs)], ref_input_grads[:len(inputs)]):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
    for p, g in zip(lstm.parameters(), ref_input_grads[len(inputs):]):
        p.grad = g
    expected = _generator_grads_through_dense(module, lstm)
    names = [n for n, _ in module.named_parameters()]
    assert sorted(names) == sorted(expected)
    for name, g in zip(names, grads[len(inputs):]):
        torch.testing.assert_close(g, expected[name], rtol=1e-11, atol=1e-11, msg=name)


@pytest.mark.parametrize("product", ["fft", "dense"])
def test_packed_sequence_matches_nn_lstm(product):
    torch.manual_seed(1)
    module = ToeplitzLikeLSTM(4, 5, 2, bidirectional=True, displacement_rank=2, product=product, dtype=F64)
    lstm = module.to_dense()
    x = torch.randn(6, 3, 4, dtype=F64)
    lengths = torch.tensor([3, 6, 1])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    hx = _random_state(module, 3)
    out, (h_n, c_n) = module(packed, hx)
    ref_out, (ref_h, ref_c) = lstm(packed, hx)
    torch.testing.assert_close(pad_packed_sequence(out)[0], pad_packed_sequence(ref_out)[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, ref_h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_n, ref_c, rtol=1e-12, atol=1e-12)


def test_empty_batch_and_empty_sequence():
    """B = 0: empty outputs of nn.LSTM's shapes (and zero, not missing, gradients); T = 0 (which nn.LSTM refuses):
    an empty output and the initial state unchanged."""
    module = ToeplitzLikeLSTM(3, 4, 2, bidirectional=True, displacement_rank=2, product="fft")
    x = torch.randn(5, 0, 3)
    out, (h_n, c_n) = module(x)
    ref_out, (ref_h, ref_c) = module.to_dense()(x)
    assert out.shape == ref_out.shape == (5, 0, 8) and h_n.shape == ref_h.shape and c_n.shape == ref_c.shape
    (out.sum() + h_n.sum()).backward()
    assert all(p.grad is not None and not p.grad.any() for p in module.parameters())
    h0, c0 = torch.randn(4, 2, 4), torch.randn(4, 2, 4)
    out, (h_n, c_n) = module(torch.randn(0, 2, 3), (h0, c0))
    assert out.shape == (0, 2, 8) and torch.equal(h_n, h0) and torch.equal(c_n, c0)


def test_float32_and_bfloat16_follow_float64():
    torch.manual_seed(2)
    module = ToeplitzLikeLSTM(10, 12, 2, displacement_rank=3, product="fft", dtype=F64)
    x = torch.randn(5, 3, 10, dtype=F64)
    expected, _ = module(x)
    out32, _ = module.float()(x.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), expected, rtol=0, atol=1e-5)
    out16, (h_n, c_n) = module.bfloat16()(x.bfloat16())
    assert out16.dtype == h_n.dtype == c_n.dtype == torch.bfloat16
    torch.testing.assert_close(out16.double(), expected, rtol=0, atol=5e-2)


def test_parameter_count_is_what_is_stored():
    I, H, r = 70, 32, 3
    module = ToeplitzLikeLSTM(I, H, 2, bidirectional=True, displacement_rank=r)
    blocks = [math.ceil(I / H), math.ceil(2 * H / H)]               # layer 0 reads I, layer 1 reads D*H
    per_direction = [2 * r * H * (4 * c + 4) + 4 * H for c in blocks]
    assert sum(p.numel() for p in module.parameters()) == 2 * sum(per_direction)
    assert [module.input_blocks(k) for k in range(2)] == blocks
    dense = sum(p.numel() for p in module.to_dense().parameters())
    assert 2 * sum(per_direction) < dense / 3


def test_initial_entries_have_nn_lstm_variance():
    """Each explicit weight entry starts with variance 1/(3H), nn.LSTM's (uniform +-1/sqrt(H))."""
    H, variances = 64, []
    for seed in range(3):
        torch.manual_seed(seed)
        weight_ih, weight_hh, bias = ToeplitzLikeLSTM(H, H, displacement_rank=4).dense_weights(0)
        variances.append(torch.cat((weight_ih.flatten(), weight_hh.flatten())).var().item() * 3 * H)
    assert 0.85 < sum(variances) / 3 < 1.15, variances
    assert bias.abs().max().item() <= 1 / math.sqrt(H)


def test_whole_model_checkpoint_loads_with_weights_only(tmp_path):
    module = ToeplitzLikeLSTM(4, 6, 2, displacement_rank=2)
    path = tmp_path / "m.pt"
    torch.save(module, path)
    loaded = torch.load(path)                       # weights_only=True is torch's default
    x = torch.randn(3, 2, 4)
    torch.testing.assert_close(loaded(x)[0], module(x)[0], rtol=0, atol=0)


def test_validation_errors_name_the_argument():
    for bad in (0, True, 2.0, None):
        with pytest.raises(ValueError, match="displacement_rank"):
            ToeplitzLikeLSTM(4, 4, displacement_rank=bad)
    with pytest.raises(ValueError, match="displacement_rank=5 exceeds .*hidden_size=4"):
        ToeplitzLikeLSTM(4, 4, displacement_rank=5)
    with pytest.raises(TypeError):
        ToeplitzLikeLSTM(4, 4, 1, True, False, 0.0, False, 2)      # displacement_rank is keyword-only
    with pytest.raises(ValueError, match="hidden_size"):
        ToeplitzLikeLSTM(4, 0, displacement_rank=1)
    with pytest.raises(ValueError, match="product must be one of 'auto', 'fft', 'dense'"):
        ToeplitzLikeLSTM(4, 4, product="fast")
    assert not ToeplitzLikeLSTM(4, 256, displacement_rank=4).uses_fft          # "auto": the CPU crossover rule
    assert ToeplitzLikeLSTM(4, 512, displacement_rank=4).uses_fft
    assert not ToeplitzLikeLSTM(4, 1024, displacement_rank=16).uses_fft
    module = ToeplitzLikeLSTM(4, 6, displacement_rank=2)
    with pytest.raises(TypeError, match="dtype"):
        module(torch.randn(3, 2, 4, dtype=F64))
    with pytest.raises(ValueError, match="input_size=4"):
        module(torch.randn(3, 2, 5))
    with pytest.raises(TypeError, match="floating point"):
        module(torch.ones(3, 2, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="h0"):
        module(torch.randn(3, 2, 4), (torch.zeros(1, 2, 6, dtype=F64), torch.zeros(1, 2, 6)))
    with pytest.raises(ValueError, match="c0 must have shape"):
        module(torch.randn(3, 2, 4), (torch.zeros(1, 2, 6), torch.zeros(1, 3, 6)))
    g = torch.randn(4, 1, 2, 6)
    with pytest.raises(ValueError, match=r"x must have shape \(N, C\*n\)"):
        toeplitz_like_matmul(torch.randn(3, 5), g, g)
    with pytest.raises(ValueError, match="g and h must match"):
        toeplitz_like_matmul(torch.randn(3, 6), g, torch.randn(4, 1, 3, 6))


# ----------------------------------------------------------------------------------------------------------------
# The hybrid
# ----------------------------------------------------------------------------------------------------------------

def test_hybrid_is_structured_layers_then_lstmp_layers():
    torch.manual_seed(3)
    rnn = CompactLSTM(6, 8, num_layers=3, structured_layers=2, displacement_rank=2, proj_size=3, dtype=F64)
    assert isinstance(rnn.structured, ToeplitzLikeLSTM) and rnn.structured.num_layers == 2
    assert rnn.projected.proj_size == 3 and rnn.projected.num_layers == 1 and rnn.projected.input_size == 8
    x = torch.randn(5, 2, 6, dtype=F64)
    out, ((h_s, c_s), (h_p, c_p)) = rnn(x)
    assert out.shape == (5, 2, 3) and h_s.shape == c_s.shape == (2, 2, 8)
    assert h_p.shape == (1, 2, 3) and c_p.shape == (1, 2, 8)
    middle, _ = rnn.structured(x)
    expected, _ = rnn.projected(middle)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # The state carries on: two halves with the state passed between them equal one whole sequence.
    first, state = rnn(x[:2])
    second, _ = rnn(x[2:], state)
    torch.testing.assert_close(torch.cat((first, second)), out, rtol=1e-12, atol=1e-12)
    batch_first = CompactLSTM(6, 8, num_layers=3, structured_layers=2, displacement_rank=2, proj_size=3,
                              batch_first=True, dtype=F64)
    batch_first.load_state_dict(rnn.state_dict())
    torch.testing.assert_close(batch_first(x.transpose(0, 1))[0], out.transpose(0, 1), rtol=0, atol=0)


def test_hybrid_trains():
    torch.manual_seed(4)
    rnn = CompactLSTM(5, 9, num_layers=2, bidirectional=True, displacement_rank=3, proj_size=4, dropout=0.1)
    x, target = torch.randn(7, 3, 5), torch.randn(7, 3, 8)
    optimizer = torch.optim.Adam(rnn.parameters(), lr=0.02)
    losses = []
    for _ in range(8):
        loss = nn.functional.mse_loss(rnn(x)[0], target)
        optimizer.zero_grad()
        loss.backward()
        for name, p in rnn.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.9, losses


def test_hybrid_validation():
    with pytest.raises(ValueError, match="structured_layers=2 must be below num_layers=2"):
        CompactLSTM(4, 8, num_layers=2, structured_layers=2, proj_size=2)
    with pytest.raises(ValueError, match="proj_size=8 must be below hidden_size=8"):
        CompactLSTM(4, 8, proj_size=8)
    with pytest.raises(ValueError, match="proj_size"):
        CompactLSTM(4, 8, proj_size=0)
    with pytest.raises(ValueError, match="displacement_rank"):
        CompactLSTM(4, 8, proj_size=2, displacement_rank=0)
    rnn = CompactLSTM(4, 8, proj_size=2)
    with pytest.raises(TypeError, match="hx must be None or"):
        rnn(torch.randn(3, 2, 4), (torch.zeros(1, 2, 8),))


def test_exported_from_the_package():
    assert lstmkern.ToeplitzLikeLSTM is ToeplitzLikeLSTM and lstmkern.CompactLSTM is CompactLSTM


def test_speed_benchmark_runs(tmp_path):
    from bench import bench_structured
    out = tmp_path / "s.json"
    rows = bench_structured.main(["--sizes", "8,12", "--ranks", "1,2", "--batch", "2", "--reps", "1",
                                  "--min-seconds", "0.001", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [(r["H"], r["r"]) for r in saved["rows"]] == [(8, 1), (8, 2), (12, 1), (12, 2)] == \
           [(r["H"], r["r"]) for r in rows]
    for r in rows:
        assert r["fft_us"] > 0 and r["dense_us"] > 0
