"""Tests of lstmkern.compress.low_rank, semi_nmf, select_rank and norm_report (CPU, float64)."""
import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkern
from lstmkern.compress import LowRankLSTM, low_rank, norm_report, select_rank, semi_nmf

F64 = torch.float64
PARTS = ("joint", "ih", "hh", "both")


def make_lstm(I=5, H=7, L=2, bidirectional=True, batch_first=False, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.LSTM(I, H, L, bias=bias, batch_first=batch_first, bidirectional=bidirectional, dtype=F64)


def weights(model, layer, sfx):
    return getattr(model, f"weight_ih_l{layer}{sfx}").detach(), getattr(model, f"weight_hh_l{layer}{sfx}").detach()


def approximated(module, layer, direction, I_k):
    """(W_ih, W_hh) that a low_rank result computes with, read from its raw parameters."""
    if isinstance(module, lstmkern.FLSTM):
        w1, w2, _ = module.layer_parameters(layer, direction)
        w = (w2 @ w1).detach()
        return w[:, :I_k], w[:, I_k:]
    sfx = ("", "_reverse")[direction]
    out = []
    for name in ("ih", "hh"):
        if hasattr(module, f"weight_{name}_u_l{layer}{sfx}"):
            out.append((getattr(module, f"weight_{name}_u_l{layer}{sfx}") @
                        getattr(module, f"weight_{name}_v_l{layer}{sfx}")).detach())
        else:
            out.append(getattr(module, f"weight_{name}_l{layer}{sfx}").detach())
    return tuple(out)


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("rank", ["full", 1.0])
def test_svd_full_rank_reproduces_model(part, rank):
    lstm = make_lstm(batch_first=True)
    module = low_rank(lstm, rank, part=part)
    assert isinstance(module, lstmkern.FLSTM if part == "joint" else LowRankLSTM)
    B, T = 3, 6
    x = torch.randn(B, T, 5, dtype=F64)
    hx = (torch.randn(4, B, 7, dtype=F64), torch.randn(4, B, 7, dtype=F64))
    out_ref, (h_ref, c_ref) = lstm(x, hx)
    out, (h, c) = module(x, hx)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-10)


def test_full_rank_packed_sequence_and_single_step():
    lstm = make_lstm(I=4, H=5, L=2, seed=1)
    module = low_rank(lstm, "full", part="both")
    lengths = torch.tensor([5, 1, 3])
    x = torch.randn(5, 3, 4, dtype=F64)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_ref, (h_ref, c_ref) = lstm(packed)
    out, (h, c) = module(packed)
    torch.testing.assert_close(pad_packed_sequence(out)[0], pad_packed_sequence(out_ref)[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-10)
    x1 = torch.randn(1, 1, 4, dtype=F64)  # T = 1, B = 1
    torch.testing.assert_close(module(x1)[0], lstm(x1)[0], rtol=0, atol=1e-10)


def test_glstm_with_one_group_and_no_bias():
    torch.manual_seed(2)
    glstm = lstmkern.GLSTM(3, 5, num_layers=2, groups=1, bias=False, dtype=F64)
    x = torch.randn(4, 2, 3, dtype=F64)
    for part in PARTS:
        module = low_rank(glstm, "full", part=part)
        assert not any("bias" in name for name, _ in module.named_parameters())
        torch.testing.assert_close(module(x)[0], glstm(x)[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("part", PARTS)
def test_eckart_young_weight_error(part):
    lstm = make_lstm(I=6, H=5, L=2, bidirectional=True, seed=3)
    r = 3
    module = low_rank(lstm, r, part=part)
    for layer in range(2):
        I_k = 6 if layer == 0 else 10
        for d, sfx in enumerate(("", "_reverse")):
            w_ih, w_hh = weights(lstm, layer, sfx)
            a_ih, a_hh = approximated(module, layer, d, I_k)
            pairs = {"joint": [(torch.cat((w_ih, w_hh), 1), torch.cat((a_ih, a_hh), 1))],
                     "ih": [(w_ih, a_ih)], "hh": [(w_hh, a_hh)], "both": [(w_ih, a_ih), (w_hh, a_hh)]}[part]
            for w, a in pairs:
                s = torch.linalg.svdvals(w)
                expected = s[r:].pow(2).sum().sqrt()
                torch.testing.assert_close(torch.linalg.matrix_norm(w - a), expected, rtol=1e-10, atol=1e-12)
            if part == "ih":
                assert torch.equal(a_hh, w_hh)  # the dense part is copied, not approximated
            if part == "hh":
                assert torch.equal(a_ih, w_ih)


def test_output_error_shrinks_as_rank_grows():
    lstm = make_lstm(I=6, H=8, L=1, bidirectional=False, seed=4)
    with torch.no_grad():  # larger weights so truncation visibly matters
        for p in lstm.parameters():
            p.mul_(4.0)
    x = torch.randn(10, 16, 6, dtype=F64)
    ref = lstm(x)[0]
    errors = [torch.linalg.norm(low_rank(lstm, r)(x)[0] - ref).item() for r in (2, 6, 10, 14)]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 1e-10  # 14 = I + H: full rank


def test_parameter_counts_are_true():
    lstm = make_lstm(I=5, H=7, L=2, bidirectional=True)
    r = 2
    counts = {part: sum(p.numel() for p in low_rank(lstm, r, part=part).parameters()) for part in PARTS}
    H, D = 7, 2
    per_dir_bias = 4 * H
    total = {"joint": 0, "ih": 0, "hh": 0, "both": 0}
    for I_k in (5, D * H):
        total["joint"] += D * (r * (4 * H + I_k + H) + per_dir_bias)
        total["ih"] += D * (r * (4 * H + I_k) + 4 * H * H + per_dir_bias)
        total["hh"] += D * (4 * H * I_k + r * (4 * H + H) + per_dir_bias)
        total["both"] += D * (r * (4 * H + I_k) + r * (4 * H + H) + per_dir_bias)
    assert counts == total


def test_select_rank_by_energy():
    s = torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=F64)  # energies 16, 9, 4, 1 of 30
    assert select_rank(s, 0.5) == 1      # 16/30 = 0.53
    assert select_rank(s, 16 / 30) == 1  # exactly reached
    assert select_rank(s, 0.6) == 2      # 25/30 = 0.83
    assert select_rank(s, 0.9) == 3      # 29/30 = 0.97
    assert select_rank(s, 1.0) == 4
    assert select_rank(s, "full") == 4
    assert select_rank(s, 2) == 2
    for bad in (0, 5, 0.0, 1.5, -0.1, "half"):
        with pytest.raises(ValueError, match="rank"):
            select_rank(s, bad)
    with pytest.raises(TypeError, match="rank"):
        select_rank(s, True)


def test_low_rank_energy_fraction_picks_right_rank():
    torch.manual_seed(5)
    H, I = 6, 4
    lstm = nn.LSTM(I, H, dtype=F64)
    sigma = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5], dtype=F64)  # energy 25, 16, 9, 4, 1, 0.25 of 55.25
    q1, _ = torch.linalg.qr(torch.randn(4 * H, H, dtype=F64))
    q2, _ = torch.linalg.qr(torch.randn(H, H, dtype=F64))
    with torch.no_grad():
        lstm.weight_hh_l0.copy_(q1 @ torch.diag(sigma) @ q2.t())
    boundary = 41 / 55.25  # exactly the first two singular values' share
    for fraction, expected in ((0.45, 1), (boundary - 1e-9, 2), (boundary + 1e-9, 3), (0.75, 3), (0.99, 5), (1.0, 6)):
        module = low_rank(lstm, fraction, part="hh")
        assert module.ranks_hh == [[expected]]
        assert module.weight_hh_u_l0.shape == (4 * H, expected)


def test_joint_float_rank_bidirectional_uses_larger_direction():
    lstm = make_lstm(I=4, H=5, L=2, bidirectional=True, seed=6)
    module = low_rank(lstm, 0.8)
    for layer in range(2):
        per_dir = [select_rank(torch.linalg.svdvals(torch.cat(weights(lstm, layer, sfx), 1)), 0.8)
                   for sfx in ("", "_reverse")]
        assert module.ranks[layer] == max(per_dir)


def test_semi_nmf_nonnegative_and_monotone():
    torch.manual_seed(7)
    w = torch.randn(28, 11, dtype=F64)
    result = semi_nmf(w, 4, n_iter=60, seed=3)
    assert result.left.shape == (28, 4) and result.right.shape == (4, 11)
    assert bool((result.right >= 0).all())
    losses = torch.tensor(result.losses)
    assert len(losses) == 61
    assert bool((losses[1:] <= losses[:-1] * (1 + 1e-12)).all())
    assert losses[-1] < losses[0]
    torch.testing.assert_close(torch.linalg.matrix_norm(w - result.left @ result.right).item(), result.losses[-1],
                               rtol=1e-12, atol=0)
    # Never better than the SVD optimum (Eckart-Young).
    assert result.losses[-1] >= torch.linalg.svdvals(w)[4:].pow(2).sum().sqrt().item() * (1 - 1e-12)
    again = semi_nmf(w, 4, n_iter=60, seed=3)
    assert torch.equal(again.left, result.left) and torch.equal(again.right, result.right)
    other = semi_nmf(w, 4, n_iter=60, seed=4)
    assert not torch.equal(other.right, result.right)


@pytest.mark.parametrize("part", ["joint", "both"])
def test_semi_nmf_low_rank_module(part):
    lstm = make_lstm(I=4, H=5, L=1, bidirectional=False, seed=8)
    module = low_rank(lstm, 3, part=part, method="semi_nmf", n_iter=30)
    if part == "joint":
        assert bool((module.weight_1_l0 >= 0).all())
    else:
        assert bool((module.weight_ih_v_l0 >= 0).all()) and bool((module.weight_hh_v_l0 >= 0).all())
    x = torch.randn(5, 2, 4, dtype=F64)
    svd_err = torch.linalg.norm(low_rank(lstm, 3, part=part)(x)[0] - lstm(x)[0])
    nmf_err = torch.linalg.norm(module(x)[0] - lstm(x)[0])
    assert torch.isfinite(nmf_err) and nmf_err < 10 * svd_err + 1e-3


@pytest.mark.parametrize("part", PARTS)
def test_low_rank_module_fine_tunes(part):
    lstm = make_lstm(I=3, H=4, L=2, bidirectional=True, seed=9)
    module = low_rank(lstm, 2, part=part)
    x = torch.randn(5, 2, 3, dtype=F64)
    target = torch.randn(5, 2, 8, dtype=F64)
    loss = (module(x)[0] - target).pow(2).mean()
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(5):
        optimizer.zero_grad()
        step_loss = (module(x)[0] - target).pow(2).mean()
        step_loss.backward()
        optimizer.step()
    assert (module(x)[0] - target).pow(2).mean() < loss


def test_bad_arguments():
    lstm = make_lstm(I=3, H=4, L=1, bidirectional=False)
    with pytest.raises(ValueError, match="part"):
        low_rank(lstm, 2, part="gates")
    with pytest.raises(ValueError, match="method"):
        low_rank(lstm, 2, method="pca")
    with pytest.raises(ValueError, match="rank"):
        low_rank(lstm, 100)
    with pytest.raises(TypeError, match="model"):
        low_rank(nn.GRU(3, 4), 2)
    with pytest.raises(ValueError, match="groups"):
        low_rank(lstmkern.GLSTM(4, 4, groups=2), 2)
    with pytest.raises(ValueError, match="rank"):
        semi_nmf(torch.randn(5, 3), 4)


def test_norm_report_values():
    lstm = make_lstm(I=4, H=5, L=2, bidirectional=True, seed=10)
    report = norm_report(lstm)
    assert len(report) == 2 * 2 * 3
    (index, row), = [(i, r) for i, r in enumerate(report)
                     if r.layer == 1 and r.direction == "reverse" and r.matrix == "[W_ih W_hh]"]
    w = torch.cat(weights(lstm, 1, "_reverse"), 1)
    assert row.shape == (20, 15)
    assert math.isclose(row.frobenius, torch.linalg.matrix_norm(w).item(), rel_tol=1e-12)
    assert math.isclose(row.nuclear, torch.linalg.matrix_norm(w, "nuc").item(), rel_tol=1e-12)
    assert math.isclose(row.spectral, torch.linalg.matrix_norm(w, 2).item(), rel_tol=1e-12)
    torch.testing.assert_close(row.singular_values, torch.linalg.svdvals(w), rtol=1e-12, atol=1e-14)
    assert row.rank_90 == select_rank(row.singular_values, 0.9)
    text = str(report)
    assert "frobenius" in text and "[W_ih W_hh]" in text and len(text.splitlines()) == 2 + 12
    # The same numbers for the equivalent FLSTM (W2 W1) and for a full-rank LowRankLSTM.
    for other in (lstmkern.FLSTM.from_lstm(lstm), low_rank(lstm, "full", part="both")):
        other_row = norm_report(other)[index]
        assert math.isclose(other_row.frobenius, row.frobenius, rel_tol=1e-10)
        assert math.isclose(other_row.spectral, row.spectral, rel_tol=1e-10)


def test_norm_report_glstm_is_block_diagonal():
    torch.manual_seed(11)
    glstm = lstmkern.GLSTM(6, 6, groups=3, dtype=F64)
    rows = {r.matrix: r for r in norm_report(glstm)}
    blocks = glstm.weight_hh_l0.detach()
    expected = torch.sort(torch.cat([torch.linalg.svdvals(b) for b in blocks]), descending=True).values
    torch.testing.assert_close(rows["W_hh"].singular_values, expected, rtol=1e-12, atol=1e-14)
    assert math.isclose(rows["W_ih"].frobenius, torch.linalg.norm(glstm.weight_ih_l0).item(), rel_tol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# Projected models (LSTMP, proj_size = P): W_hh is (4H, P) and is what gets factorized; W_hr (P, H) is copied as is.

def make_lstmp(I=5, H=7, P=3, L=2, bidirectional=True, batch_first=False, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.LSTM(I, H, L, bias=bias, batch_first=batch_first, bidirectional=bidirectional, proj_size=P, dtype=F64)


def assert_same_run(module, reference_model, x, hx):
    out_ref, (h_ref, c_ref) = reference_model(x, hx)
    out, (h, c) = module(x, hx)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("part", PARTS)
def test_projected_lstm_full_rank_reproduces_model(part):
    I, H, P, L, D, B, T = 5, 7, 3, 2, 2, 3, 6
    lstm = make_lstmp(I, H, P, L, batch_first=True, seed=20)
    module = low_rank(lstm, "full", part=part, backend="reference")
    assert isinstance(module, lstmkern.FLSTM if part == "joint" else LowRankLSTM)
    assert module.proj_size == P
    for layer in range(L):
        I_k = I if layer == 0 else D * P
        for d, sfx in enumerate(("", "_reverse")):
            assert torch.equal(module.layer_projection(layer, d), getattr(lstm, f"weight_hr_l{layer}{sfx}"))
            w1, w2, _ = module.layer_parameters(layer, d)
            assert w1.shape[1] == I_k + P and w2.shape[0] == 4 * H
    x = torch.randn(B, T, I, dtype=F64)
    hx = (torch.randn(L * D, B, P, dtype=F64), torch.randn(L * D, B, H, dtype=F64))
    assert_same_run(module, lstm, x, hx)
    x1 = torch.randn(1, 1, I, dtype=F64)  # T = 1, B = 1, zero initial state
    assert_same_run(module, lstm, x1, None)


def test_projected_full_rank_packed_sequence():
    lstm = make_lstmp(I=4, H=6, P=5, L=2, seed=21)
    module = low_rank(lstm, 1.0, part="both", backend="reference")
    lengths = torch.tensor([5, 1, 3])
    packed = pack_padded_sequence(torch.randn(5, 3, 4, dtype=F64), lengths, enforce_sorted=False)
    out_ref, (h_ref, c_ref) = lstm(packed)
    out, (h, c) = module(packed)
    torch.testing.assert_close(pad_packed_sequence(out)[0], pad_packed_sequence(out_ref)[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("group_input", [True, False])
def test_projected_glstm_with_one_group_and_no_bias(group_input):
    torch.manual_seed(22)
    glstm = lstmkern.GLSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, groups=1, group_input=group_input,
                           bias=False, backend="reference", dtype=F64)
    x = torch.randn(4, 2, 3, dtype=F64)
    hx = (torch.randn(4, 2, 2, dtype=F64), torch.randn(4, 2, 5, dtype=F64))
    for part in PARTS:
        module = low_rank(glstm, "full", part=part, backend="reference")
        assert not any("bias" in name for name, _ in module.named_parameters())
        assert_same_run(module, glstm, x, hx)


def test_flstm_is_refactorized_projected_or_not():
    torch.manual_seed(23)
    for P in (0, 3):
        flstm = lstmkern.FLSTM(4, 6, num_layers=2, bidirectional=True, proj_size=P, rank=[5, 4], backend="reference",
                               dtype=F64)
        x = torch.randn(3, 2, 4, dtype=F64)
        hx = (torch.randn(4, 2, P or 6, dtype=F64), torch.randn(4, 2, 6, dtype=F64))
        for part in PARTS:  # "full" keeps every singular value of the rank-5 / rank-4 products: the same model
            assert_same_run(low_rank(flstm, "full", part=part, backend="reference"), flstm, x, hx)
        # A lower rank is the truncated SVD of the product W2 W1 (Eckart-Young).
        joint = low_rank(flstm, 2, backend="reference")
        assert joint.ranks == [2, 2] and joint.proj_size == P
        for layer in range(2):
            for d in range(2):
                w1, w2, _ = flstm.layer_parameters(layer, d)
                a1, a2, _ = joint.layer_parameters(layer, d)
                w = (w2 @ w1).detach()
                expected = torch.linalg.svdvals(w)[2:].pow(2).sum().sqrt()
                torch.testing.assert_close(torch.linalg.matrix_norm(w - (a2 @ a1).detach()), expected, rtol=1e-10,
                                           atol=1e-12)


@pytest.mark.parametrize("part", PARTS)
def test_projected_eckart_young_weight_error_and_projection_kept(part):
    I, H, P = 6, 5, 4
    lstm = make_lstmp(I, H, P, L=2, seed=24)
    r = 2
    module = low_rank(lstm, r, part=part, backend="reference")
    for layer in range(2):
        I_k = I if layer == 0 else 2 * P
        for d, sfx in enumerate(("", "_reverse")):
            w_ih, w_hh = weights(lstm, layer, sfx)
            assert w_hh.shape == (4 * H, P)
            a_ih, a_hh = approximated(module, layer, d, I_k)
            pairs = {"joint": [(torch.cat((w_ih, w_hh), 1), torch.cat((a_ih, a_hh), 1))],
                     "ih": [(w_ih, a_ih)], "hh": [(w_hh, a_hh)], "both": [(w_ih, a_ih), (w_hh, a_hh)]}[part]
            for w, a in pairs:
                expected = torch.linalg.svdvals(w)[r:].pow(2).sum().sqrt()
                torch.testing.assert_close(torch.linalg.matrix_norm(w - a), expected, rtol=1e-10, atol=1e-12)
            assert torch.equal(module.layer_projection(layer, d), getattr(lstm, f"weight_hr_l{layer}{sfx}"))


def test_projected_parameter_counts_are_true():
    I, H, P, D, r = 5, 7, 3, 2, 2
    lstm = make_lstmp(I, H, P, L=2)
    counts = {part: sum(p.numel() for p in low_rank(lstm, r, part=part).parameters()) for part in PARTS}
    per_dir_fixed = 4 * H + P * H  # bias and W_hr
    total = {"joint": 0, "ih": 0, "hh": 0, "both": 0}
    for I_k in (I, D * P):
        total["joint"] += D * (r * (4 * H + I_k + P) + per_dir_fixed)
        total["ih"] += D * (r * (4 * H + I_k) + 4 * H * P + per_dir_fixed)
        total["hh"] += D * (4 * H * I_k + r * (4 * H + P) + per_dir_fixed)
        total["both"] += D * (r * (4 * H + I_k) + r * (4 * H + P) + per_dir_fixed)
    assert counts == total


@pytest.mark.parametrize("part", PARTS)
def test_projected_low_rank_module_fine_tunes(part):
    lstm = make_lstmp(I=3, H=5, P=2, L=2, seed=25)
    module = low_rank(lstm, 2, part=part, backend="reference")
    x = torch.randn(4, 2, 3, dtype=F64)
    target = torch.randn(4, 2, 4, dtype=F64)  # (T, B, D*P)
    loss = (module(x)[0] - target).pow(2).mean()
    loss.backward()
    names = [name for name, _ in module.named_parameters()]
    assert sum(name.startswith("weight_hr_") for name in names) == 4
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_projected_semi_nmf():
    lstm = make_lstmp(I=4, H=6, P=3, L=1, bidirectional=False, seed=26)
    module = low_rank(lstm, 2, part="both", method="semi_nmf", n_iter=30, backend="reference")
    assert module.weight_hh_v_l0.shape == (2, 3) and bool((module.weight_hh_v_l0 >= 0).all())
    x = torch.randn(5, 2, 4, dtype=F64)
    svd_err = torch.linalg.norm(low_rank(lstm, 2, part="both")(x)[0] - lstm(x)[0])
    nmf_err = torch.linalg.norm(module(x)[0] - lstm(x)[0])
    assert torch.isfinite(nmf_err) and nmf_err < 10 * svd_err + 1e-3


def test_projected_glstm_with_groups_is_still_refused():
    for group_input in (True, False):
        glstm = lstmkern.GLSTM(4, 6, proj_size=2, groups=2, group_input=group_input)
        with pytest.raises(ValueError, match="groups=1"):
            low_rank(glstm, 2)


def test_norm_report_projected_shapes():
    I, H, P = 4, 6, 3
    lstm = make_lstmp(I, H, P, L=2, seed=27)
    report = norm_report(lstm)
    shapes = {(r.layer, r.matrix): r.shape for r in report}
    assert shapes[(0, "W_ih")] == (4 * H, I) and shapes[(0, "W_hh")] == (4 * H, P)
    assert shapes[(1, "W_ih")] == (4 * H, 2 * P) and shapes[(1, "[W_ih W_hh]")] == (4 * H, 3 * P)
    row = [r for r in report if r.layer == 1 and r.direction == "reverse" and r.matrix == "W_hh"][0]
    torch.testing.assert_close(row.singular_values, torch.linalg.svdvals(lstm.weight_hh_l1_reverse.detach()),
                               rtol=1e-12, atol=1e-14)


def test_norm_report_dense_input_glstm():
    torch.manual_seed(28)
    glstm = lstmkern.GLSTM(5, 6, groups=3, group_input=False, proj_size=3, dtype=F64)
    rows = {r.matrix: r for r in norm_report(glstm)}
    w_ih = glstm.weight_ih_l0.detach()  # (G, 4Hg, I): every group reads all 5 features
    assert rows["W_ih"].shape == (24, 5) and rows["W_hh"].shape == (24, 3)
    torch.testing.assert_close(rows["W_ih"].singular_values, torch.linalg.svdvals(w_ih.reshape(24, 5)), rtol=1e-12,
                               atol=1e-14)


@pytest.mark.parametrize("groups,group_input,P", [(2, True, 4), (3, False, 3)])
def test_dense_view_of_projected_glstm_runs_as_nn_lstm(groups, group_input, P):
    """The dense (W_ih, W_hh, bias) the compression tools read from a G-LSTM, put into an nn.LSTM with the same W_hr,
    computes what the G-LSTM computes: rows, columns and gate order are all in nn.LSTM's layout."""
    from lstmkern.compress._weights import dense_weights
    torch.manual_seed(29)
    I, H = 6, 6
    glstm = lstmkern.GLSTM(I, H, 2, bidirectional=True, proj_size=P, groups=groups, group_input=group_input,
                           backend="reference", dtype=F64)
    lstm = nn.LSTM(I, H, 2, bidirectional=True, proj_size=P, dtype=F64)
    with torch.no_grad():
        for layer in range(2):
            for d, sfx in enumerate(("", "_reverse")):
                w_ih, w_hh, b = dense_weights(glstm, layer, d)
                getattr(lstm, f"weight_ih_l{layer}{sfx}").copy_(w_ih)
                getattr(lstm, f"weight_hh_l{layer}{sfx}").copy_(w_hh)
                getattr(lstm, f"bias_ih_l{layer}{sfx}").copy_(b)
                getattr(lstm, f"bias_hh_l{layer}{sfx}").zero_()
                getattr(lstm, f"weight_hr_l{layer}{sfx}").copy_(glstm.layer_projection(layer, d))
    x = torch.randn(4, 3, I, dtype=F64)
    hx = (torch.randn(4, 3, P, dtype=F64), torch.randn(4, 3, H, dtype=F64))
    assert_same_run(glstm, lstm, x, hx)
