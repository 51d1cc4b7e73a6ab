"""GLSTM and FLSTM against torch.nn.LSTM (float64, copied weights) and their own contracts."""
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import lstmkern

from helpers import glstm_equations

F64 = torch.float64


def _compare_grads(a_params, b_params, atol):
    for (name_a, pa), pb in zip(a_params, b_params):
        torch.testing.assert_close(pa.grad, pb, rtol=0, atol=atol, msg=lambda m: f"{name_a}: {m}")


def _lstm_grads_as(module, lstm):
    """nn.LSTM's gradients laid out like ``module``'s parameters (which from_lstm copied from it)."""
    out = []
    for name, _ in module.named_parameters():
        kind, rest = name.split("_l", 1)
        layer_suffix = rest
        w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer_suffix}").grad, getattr(lstm, f"weight_hh_l{layer_suffix}").grad
        if kind == "bias":
            b = getattr(lstm, f"bias_ih_l{layer_suffix}").grad
            out.append(b[None] if isinstance(module, lstmkern.GLSTM) else b)
        elif kind == "weight_ih":
            out.append(w_ih[None])
        elif kind == "weight_hh":
            out.append(w_hh[None])
        elif kind == "weight_2":
            out.append(torch.cat((w_ih, w_hh), dim=1))
        else:
            out.append(None)  # weight_1: identity in from_lstm, no nn.LSTM counterpart
    return out


@pytest.mark.parametrize("cls", [lstmkern.GLSTM, lstmkern.FLSTM])
@pytest.mark.parametrize("num_layers,bidirectional,batch_first", [(1, False, False), (2, False, True),
                                                                  (2, True, False), (1, True, True)])
@pytest.mark.parametrize("with_hx", [False, True])
def test_matches_nn_lstm(cls, num_layers, bidirectional, batch_first, with_hx):
    I, H, B, T = 5, 7, 3, 4
    lstm = torch.nn.LSTM(I, H, num_layers, batch_first=batch_first, bidirectional=bidirectional, dtype=F64)
    module = cls.from_lstm(lstm)
    D = 2 if bidirectional else 1
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=F64)
    hx = (torch.randn(num_layers * D, B, H, dtype=F64), torch.randn(num_layers * D, B, H, dtype=F64)) if with_hx \
        else None
    want, (h_w, c_w) = lstm(x, hx)
    got, (h, c) = module(x, hx)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(h, h_w, rtol=0, atol=1e-10)
    torch.testing.assert_close(c, c_w, rtol=0, atol=1e-10)
    upstream = [torch.randn_like(t) for t in (want, h_w, c_w)]
    sum((a * u).sum() for a, u in zip((want, h_w, c_w), upstream)).backward()
    sum((a * u).sum() for a, u in zip((got, h, c), upstream)).backward()
    for (name, p), g in zip(module.named_parameters(), _lstm_grads_as(module, lstm)):
        if g is not None:
            torch.testing.assert_close(p.grad, g, rtol=0, atol=1e-8, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("cls", [lstmkern.GLSTM, lstmkern.FLSTM])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_sequence_matches_nn_lstm(cls, bidirectional, enforce_sorted):
    I, H = 4, 6
    lengths = [5, 3, 3, 1] if enforce_sorted else [3, 5, 1, 4]
    lstm = torch.nn.LSTM(I, H, 2, bidirectional=bidirectional, dtype=F64)
    module = cls.from_lstm(lstm)
    seqs = [torch.randn(n, I, dtype=F64) for n in lengths]
    packed = pack_sequence(seqs, enforce_sorted=enforce_sorted)
    D = 2 if bidirectional else 1
    hx = (torch.randn(2 * D, 4, H, dtype=F64), torch.randn(2 * D, 4, H, dtype=F64))
    want, (h_w, c_w) = lstm(packed, hx)
    got, (h, c) = module(packed, hx)
    assert torch.equal(got.batch_sizes, want.batch_sizes)
    torch.testing.assert_close(got.data, want.data, rtol=0, atol=1e-10)
    torch.testing.assert_close(h, h_w, rtol=0, atol=1e-10)
    torch.testing.assert_close(c, c_w, rtol=0, atol=1e-10)


def test_glstm_groups_are_independent_lstms():
    """A 3-group, 2-layer GLSTM equals per-layer block-diagonal equations, layer 2 grouped on layer 1's output."""
    I, H, G, T, B = 6, 9, 3, 4, 2
    module = lstmkern.GLSTM(I, H, num_layers=2, groups=G, dtype=F64)
    x = torch.randn(T, B, I, dtype=F64)
    got, (h, c) = module(x)
    zeros = torch.zeros(B, H, dtype=F64)
    out1, h1, c1 = glstm_equations(x, zeros, zeros, module.weight_ih_l0, module.weight_hh_l0, module.bias_l0)
    out2, h2, c2 = glstm_equations(out1, zeros, zeros, module.weight_ih_l1, module.weight_hh_l1, module.bias_l1)
    torch.testing.assert_close(got, out2, rtol=0, atol=1e-10)
    torch.testing.assert_close(c, torch.stack((c1, c2)), rtol=0, atol=1e-10)


def test_parameter_shapes_and_counts():
    g = lstmkern.GLSTM(8, 12, num_layers=2, groups=4, bidirectional=True)
    assert g.weight_ih_l0.shape == (4, 12, 2) and g.weight_hh_l0_reverse.shape == (4, 12, 3)
    assert g.weight_ih_l1.shape == (4, 12, 6) and g.bias_l1_reverse.shape == (4, 12)
    dense = torch.nn.LSTM(8, 12, num_layers=2, bidirectional=True)
    per_dir = [4 * 12 * (8 + 12) // 4 + 4 * 12, 4 * 12 * (24 + 12) // 4 + 4 * 12]
    assert sum(p.numel() for p in g.parameters()) == 2 * sum(per_dir)
    assert sum(p.numel() for p in g.parameters()) < sum(p.numel() for p in dense.parameters())
    f = lstmkern.FLSTM(8, 12, rank=[5, 6], num_layers=2)
    assert f.weight_1_l0.shape == (5, 20) and f.weight_2_l1.shape == (48, 6) and f.bias_l0.shape == (48,)
    assert lstmkern.FLSTM(8, 12, num_layers=2, bidirectional=True).ranks == [20, 36]
    assert "groups=4" in repr(g) and "rank=[5, 6]" in repr(f)


def test_initialisation_scale():
    torch.manual_seed(0)
    g = lstmkern.GLSTM(64, 64, groups=4)
    assert g.weight_hh_l0.abs().max().item() <= 1 / 4 + 1e-7  # ±1/sqrt(Hg), Hg = 16
    f = lstmkern.FLSTM(256, 256, rank=128)
    product = f.weight_2_l0 @ f.weight_1_l0
    target_var = 1.0 / (3 * 256)  # nn.LSTM's U(±1/sqrt(H))
    assert abs(product.var().item() / target_var - 1) < 0.1


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    m = lstmkern.GLSTM(4, 6, num_layers=2, groups=2, dropout=0.5, dtype=F64)
    x = torch.randn(3, 2, 4, dtype=F64)
    m.eval()
    a, _ = m(x)
    b, _ = m(x)
    assert torch.equal(a, b)
    m.train()
    c, _ = m(x)
    assert not torch.allclose(a, c)
    single = lstmkern.GLSTM(4, 6, num_layers=1, groups=2, dropout=0.5, dtype=F64).train()
    y1, _ = single(x)
    y2, _ = single(x)
    assert torch.equal(y1, y2)  # no dropout after the last layer


@pytest.mark.parametrize("kwargs,match", [
    (dict(input_size=6, hidden_size=8, groups=4), "groups=4 must divide"),
    (dict(input_size=6, hidden_size=8, groups=0), "groups must be a positive int"),
    (dict(input_size=0, hidden_size=8), "input_size must be a positive int"),
    (dict(input_size=4, hidden_size=8, dropout=1.5), "dropout must be"),
])
def test_glstm_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lstmkern.GLSTM(**kwargs)


def test_flstm_constructor_errors():
    with pytest.raises(ValueError, match="rank must be None"):
        lstmkern.FLSTM(4, 8, rank=[3], num_layers=2)
    with pytest.raises(ValueError, match="every rank must be an int >= 1"):
        lstmkern.FLSTM(4, 8, rank=0)


def test_module_input_errors():
    m = lstmkern.GLSTM(4, 6, groups=2)
    with pytest.raises(ValueError, match="input has 5 features, expected input_size=4"):
        m(torch.randn(3, 2, 5))
    with pytest.raises(ValueError, match=r"h0 must have shape .* \(1, 2, 6\)"):
        m(torch.randn(3, 2, 4), (torch.zeros(1, 3, 6), torch.zeros(1, 2, 6)))
    with pytest.raises(TypeError, match="from_lstm|torch.nn.LSTM"):
        lstmkern.GLSTM.from_lstm(torch.nn.GRU(4, 6))
