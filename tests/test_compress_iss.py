"""Tests of lstmkern.compress.iss (Intrinsic Sparse Structures): penalty, zero_small_, shrink (CPU, float64).

The components are enumerated here independently, entry by entry, from the definition (Wen et al. 2018)."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkern
from lstmkern.compress import StackedLSTM, iss

F64 = torch.float64


def component_entries(model, heads, layer, d, k):
    """Set of (parameter name or "head{i}", index tuple) of unit k's component in (layer, direction d)."""
    L, H = model.num_layers, model.hidden_size
    D = 2 if model.bidirectional else 1
    sfxs = ("", "_reverse")[:D]
    sfx = sfxs[d]
    entries = set()
    params = dict(model.named_parameters())

    def add(name, index):
        assert name in params, name
        entries.add((name, index))

    I_k = model.input_size if layer == 0 else D * H
    if isinstance(model, nn.LSTM):
        for g in range(4):
            row = g * H + k
            add_row = [(f"weight_ih_l{layer}{sfx}", (row, c)) for c in range(I_k)]
            add_row += [(f"weight_hh_l{layer}{sfx}", (row, c)) for c in range(H)]
            if model.bias:
                add_row += [(f"bias_ih_l{layer}{sfx}", (row,)), (f"bias_hh_l{layer}{sfx}", (row,))]
            for name, idx in add_row:
                add(name, idx)
        for r in range(4 * H):
            add(f"weight_hh_l{layer}{sfx}", (r, k))
        if layer + 1 < L:
            for s2 in sfxs:
                for r in range(4 * H):
                    add(f"weight_ih_l{layer + 1}{s2}", (r, d * H + k))
    elif isinstance(model, lstmkern.GLSTM):
        G = model.groups
        hg = H // G
        g, j = divmod(k, hg)
        for gate in range(4):
            row = gate * hg + j
            for c in range(I_k // G):
                add(f"weight_ih_l{layer}{sfx}", (g, row, c))
            for c in range(hg):
                add(f"weight_hh_l{layer}{sfx}", (g, row, c))
            if model.bias:
                add(f"bias_l{layer}{sfx}", (g, row))
        for r in range(4 * hg):
            add(f"weight_hh_l{layer}{sfx}", (g, r, j))
        if layer + 1 < L:
            ig_next = D * H // G
            f = d * H + k
            for s2 in sfxs:
                for r in range(4 * hg):
                    add(f"weight_ih_l{layer + 1}{s2}", (f // ig_next, r, f % ig_next))
    else:  # FLSTM
        R = model.ranks[layer]
        for gate in range(4):
            for c in range(R):
                add(f"weight_2_l{layer}{sfx}", (gate * H + k, c))
            if model.bias:
                add(f"bias_l{layer}{sfx}", (gate * H + k,))
        for r in range(R):
            add(f"weight_1_l{layer}{sfx}", (r, I_k + k))
        if layer + 1 < L:
            for s2 in sfxs:
                for r in range(model.ranks[layer + 1]):
                    add(f"weight_1_l{layer + 1}{s2}", (r, d * H + k))
    if layer + 1 == L:
        for i, head in enumerate(heads):
            for r in range(head.out_features):
                entries.add((f"head{i}", (r, d * H + k)))
    return entries


def lookup(model, heads):
    table = dict(model.named_parameters())
    table.update({f"head{i}": h.weight for i, h in enumerate(heads)})
    return table


def hand_penalty(model, heads, eps):
    table = lookup(model, heads)
    D = 2 if model.bidirectional else 1
    total = 0.0
    for layer in range(model.num_layers):
        for d in range(D):
            for k in range(model.hidden_size):
                sq = sum(table[name][idx] ** 2 for name, idx in component_entries(model, heads, layer, d, k))
                total = total + torch.sqrt(sq + eps)
    return total


def zero_components_(model, heads, chosen):
    table = lookup(model, heads)
    with torch.no_grad():
        for layer, d, k in chosen:
            for name, idx in component_entries(model, heads, layer, d, k):
                table[name][idx] = 0.0


def make(kind, I, H, L, bidirectional, seed, **kw):
    torch.manual_seed(seed)
    if kind == "lstm":
        return nn.LSTM(I, H, L, bidirectional=bidirectional, dtype=F64, **kw)
    if kind == "glstm":
        return lstmkern.GLSTM(I, H, L, groups=kw.pop("groups"), bidirectional=bidirectional, dtype=F64, **kw)
    return lstmkern.FLSTM(I, H, rank=kw.pop("rank"), num_layers=L, bidirectional=bidirectional, dtype=F64, **kw)


MODELS = [
    ("lstm", dict(I=3, H=4, L=2, bidirectional=True)),
    ("lstm", dict(I=2, H=3, L=1, bidirectional=False, bias=False)),
    ("glstm", dict(I=6, H=6, L=2, bidirectional=True, groups=3)),
    ("flstm", dict(I=3, H=5, L=2, bidirectional=True, rank=[4, 3])),
]


@pytest.mark.parametrize("kind,cfg", MODELS)
def test_penalty_matches_hand_computation_and_gradients_reach_every_component(kind, cfg):
    model = make(kind, seed=0, **cfg)
    D = 2 if model.bidirectional else 1
    heads = [nn.Linear(D * model.hidden_size, 2, dtype=F64), nn.Linear(D * model.hidden_size, 1, dtype=F64)]
    eps = 1e-3
    value = iss.penalty(model, heads, eps=eps)
    expected = hand_penalty(model, heads, eps)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    value.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    grads.update({f"head{i}": h.weight.grad.clone() for i, h in enumerate(heads)})
    assert all(h.bias.grad is None for h in heads)
    for p in list(model.parameters()) + [h.weight for h in heads]:
        p.grad = None
    expected.backward()
    table = lookup(model, heads)
    for name in grads:
        reference = table[name].grad
        torch.testing.assert_close(grads[name], reference, rtol=1e-10, atol=1e-14)
        # Every entry that belongs to a component gets a gradient (FLSTM layer 0's x columns of W1 belong to none).
        covered = grads[name] != 0
        if kind == "flstm" and name.startswith("weight_1_l0"):
            assert not covered[:, :model.input_size].any() and covered[:, model.input_size:].all()
        else:
            assert covered.all(), name


def test_zero_small_counts_and_zeroes():
    model = make("flstm", I=3, H=4, L=2, bidirectional=False, seed=1, rank=[3, 2])
    head = nn.Linear(4, 2, dtype=F64)
    with torch.no_grad():
        model.weight_2_l1[0, 0] = 1e-5
        model.weight_2_l1[1, 1] = -2e-5
        model.weight_1_l0[0, 0] = 1e-5   # an x column of layer 0: no unit's weight, left alone
        head.weight[0, 3] = 3e-6
        head.bias[0] = 1e-6             # a consumer bias: left alone
        model.bias_l0[2] = 0.0          # already zero: not counted
    smallest = min(p.abs().min().item() for p in [model.weight_2_l0, model.weight_1_l1, model.bias_l1])
    threshold = min(5e-5, smallest)
    n = iss.zero_small_(model, [head], threshold)
    assert n == 3
    assert model.weight_2_l1[0, 0] == 0 and model.weight_2_l1[1, 1] == 0 and head.weight[0, 3] == 0
    assert model.weight_1_l0[0, 0] == 1e-5 and head.bias[0] == 1e-6
    assert iss.zero_small_(model, [head], threshold) == 0


CHOSEN = {
    "lstm": [(0, 0, 1), (0, 0, 3), (0, 1, 0), (0, 1, 1), (0, 1, 3), (1, 0, 2), (1, 1, 2), (1, 1, 0)],
    # GLSTM (H=6, G=3, Hg=2): layer 0 removes one unit per group and direction; layer 1 has a group with no zeros.
    "glstm": [(0, d, k) for d in (0, 1) for k in (1, 2, 5)] + [(0, 0, 0), (1, 0, 0), (1, 0, 3), (1, 1, 1)],
    "flstm": [(0, 0, 4), (0, 1, 0), (0, 1, 2), (1, 0, 1), (1, 1, 1), (1, 1, 3)],
}
EXPECTED_H = {"lstm": [2, 3], "glstm": [3, 6], "flstm": [4, 4]}


@pytest.mark.parametrize("kind,cfg", [m for m in MODELS if m[1]["L"] == 2])
def test_shrink_after_zeroing_is_exact(kind, cfg):
    model = make(kind, seed=2, batch_first=True, **cfg)
    D, H = 2, model.hidden_size
    head = nn.Linear(D * H, 3, dtype=F64)
    zero_components_(model, [head], CHOSEN[kind])
    norms = iss.component_norms(model, [head])
    for layer, d, k in CHOSEN[kind]:
        assert norms[layer][d, k] == 0
    small, (small_head,), report = iss.shrink(model, [head])
    assert isinstance(small, StackedLSTM)
    assert report.hidden_before == [H, H] and report.hidden_after == EXPECTED_H[kind] == small.hidden_sizes
    assert small_head.in_features == D * EXPECTED_H[kind][-1]
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    for index, layer in enumerate(small.layers):
        assert type(layer) is type(model) and layer.num_layers == 1
        if kind == "glstm":
            assert layer.groups == model.groups
        if kind == "flstm":
            assert layer.ranks == [model.ranks[index]]
    x = torch.randn(3, 5, model.input_size, dtype=F64)  # (B, T, I)
    out, (h_n, c_n) = model(x)
    small_out, (small_h, small_c) = small(x)
    torch.testing.assert_close(small_head(small_out), head(out), rtol=0, atol=1e-12)
    # Final states of the surviving units are unchanged; removed units' states were zero (zero initial state).
    for layer in range(2):
        for d in range(D):
            kept = [u for u in range(H) if u not in report.removed[layer][d]]
            torch.testing.assert_close(small_h[layer][d], h_n[layer * D + d][:, kept], rtol=0, atol=1e-12)
            torch.testing.assert_close(small_c[layer][d], c_n[layer * D + d][:, kept], rtol=0, atol=1e-12)
            assert torch.all(h_n[layer * D + d][:, report.removed[layer][d]] == 0)
    # A non-zero initial state, restricted to the surviving units, gives the same outputs too.
    h0, c0 = torch.randn(2, 2 * D, 3, H, dtype=F64)
    kept = [[[u for u in range(H) if u not in report.removed[layer][d]] for d in range(D)] for layer in range(2)]
    small_hx = tuple([torch.stack([s[layer * D + d][:, kept[layer][d]] for d in range(D)]) for layer in range(2)]
                     for s in (h0, c0))
    torch.testing.assert_close(small_head(small(x, small_hx)[0]), head(model(x, (h0, c0))[0]), rtol=0, atol=1e-12)
    # PackedSequence through the stack.
    lengths = torch.tensor([5, 2, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ref = pad_packed_sequence(model(packed)[0], batch_first=True)[0]
    got = pad_packed_sequence(small(packed)[0], batch_first=True)[0]
    torch.testing.assert_close(small_head(got), head(ref), rtol=0, atol=1e-12)


def test_shrink_without_consumers_keeps_last_layer_and_leaves_input_unchanged():
    model = make("lstm", I=3, H=4, L=2, bidirectional=False, seed=3)
    zero_components_(model, [], [(0, 0, 2), (1, 0, 1)])
    before = {n: p.clone() for n, p in model.named_parameters()}
    small, heads, report = iss.shrink(model, [])
    assert heads == [] and report.hidden_after == [3, 4]
    x = torch.randn(4, 2, 3, dtype=F64)
    torch.testing.assert_close(small(x)[0], model(x)[0], rtol=0, atol=1e-12)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_bad_arguments():
    model = make("lstm", I=3, H=4, L=1, bidirectional=False, seed=0)
    with pytest.raises(TypeError, match="consumers"):
        iss.penalty(model, nn.Linear(4, 2, dtype=F64))
    with pytest.raises(ValueError, match="in_features"):
        iss.penalty(model, [nn.Linear(5, 2, dtype=F64)])
    with pytest.raises(TypeError, match="model"):
        iss.shrink(nn.GRU(3, 4), [])
    with pytest.raises(ValueError, match="threshold"):
        iss.zero_small_(model, [], -1.0)


def test_training_with_iss_removes_units_and_keeps_the_loss():
    """Synthetic task needing few units: predict the running mean of input channel 0. Group lasso + zeroing drives
    whole components to zero; shrinking removes them and the loss is unchanged."""
    torch.manual_seed(0)
    I, H, T, B = 3, 8, 8, 32
    lstm = nn.LSTM(I, H, num_layers=2, dtype=F64)
    head = nn.Linear(H, 1, dtype=F64)
    params = list(lstm.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-2)
    x = torch.randn(T, B, I, dtype=F64)
    y = x[..., :1].cumsum(0) / torch.arange(1, T + 1, dtype=F64).view(T, 1, 1)

    def task_loss(model, heads):
        return (heads[0](model(x)[0]) - y).pow(2).mean()

    lam, threshold = 1e-2, 3e-3
    for _ in range(200):
        optimizer.zero_grad()
        loss = task_loss(lstm, [head]) + lam * iss.penalty(lstm, [head])
        loss.backward()
        optimizer.step()
        iss.zero_small_(lstm, [head], threshold)
    final = task_loss(lstm, [head]).detach()
    small, heads, report = iss.shrink(lstm, [head])
    assert sum(report.hidden_after) < sum(report.hidden_before), report
    torch.testing.assert_close(task_loss(small, heads), final, rtol=0, atol=1e-12)
    assert final < 0.25 * y.var()  # it learned the task
