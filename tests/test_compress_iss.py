"""Tests of lstmkern.compress.iss (Intrinsic Sparse Structures): penalty, zero_small_, shrink (CPU, float64).

The components are enumerated here independently, entry by entry, from the definition (Wen et al. 2018). With a
projection (proj_size = P) there are two kinds: a cell unit's component is its gate rows and its column of W_hr
(units="cell": H shrinks, P stays); a projected unit p's is row p of W_hr, the recurrent column reading h_p and the
columns of the next layer / the heads reading output feature d*P + p (units="projected": P shrinks)."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkern
from lstmkern.compress import StackedLSTM, iss

F64 = torch.float64


def component_entries(model, heads, layer, d, k):
    """Set of (parameter name or "head{i}", index tuple) of unit k's component in (layer, direction d)."""
    H = model.hidden_size
    P = model.proj_size
    W = P or H  # width of the recurrent input and of the output
    D = 2 if model.bidirectional else 1
    sfxs = ("", "_reverse")[:D]
    sfx = sfxs[d]
    entries = set()
    params = dict(model.named_parameters())

    def add(name, index):
        assert name in params, name
        entries.add((name, index))

    I_k = model.input_size if layer == 0 else D * W
    # Readers of unit k's value: without a projection its own recurrent column, the next layer and the heads; with one
    # only its column of W_hr (the recurrence, the next layer and the heads read the P-wide h).
    reads_h = P == 0
    if P:
        for r in range(P):
            add(f"weight_hr_l{layer}{sfx}", (r, k))
    if isinstance(model, nn.LSTM):
        for g in range(4):
            row = g * H + k
            add_row = [(f"weight_ih_l{layer}{sfx}", (row, c)) for c in range(I_k)]
            add_row += [(f"weight_hh_l{layer}{sfx}", (row, c)) for c in range(W)]
            if model.bias:
                add_row += [(f"bias_ih_l{layer}{sfx}", (row,)), (f"bias_hh_l{layer}{sfx}", (row,))]
            for name, idx in add_row:
                add(name, idx)
        for r in range(4 * H if reads_h else 0):
            add(f"weight_hh_l{layer}{sfx}", (r, k))
    elif isinstance(model, lstmkern.GLSTM):
        G = model.groups
        hg = H // G
        g, j = divmod(k, hg)
        for gate in range(4):
            row = gate * hg + j
            for c in range(I_k // G if model.group_input else I_k):
                add(f"weight_ih_l{layer}{sfx}", (g, row, c))
            for c in range(W // G):
                add(f"weight_hh_l{layer}{sfx}", (g, row, c))
            if model.bias:
                add(f"bias_l{layer}{sfx}", (g, row))
        for r in range(4 * hg if reads_h else 0):
            add(f"weight_hh_l{layer}{sfx}", (g, r, j))
    else:  # FLSTM
        R = model.ranks[layer]
        for gate in range(4):
            for c in range(R):
                add(f"weight_2_l{layer}{sfx}", (gate * H + k, c))
            if model.bias:
                add(f"bias_l{layer}{sfx}", (gate * H + k,))
        for r in range(R if reads_h else 0):
            add(f"weight_1_l{layer}{sfx}", (r, I_k + k))
    if reads_h:
        entries |= reader_entries(model, heads, layer, d * H + k)
    return entries


def reader_entries(model, heads, layer, f):
    """Entries reading output feature f of ``layer``: column f of the next layer's input weights in both directions
    (the group whose window holds f, every group with group_input=False), or of every head after the last layer."""
    L, D, G = model.num_layers, (2 if model.bidirectional else 1), getattr(model, "groups", 1)
    W = model.proj_size or model.hidden_size
    entries = set()
    if layer + 1 == L:
        for i, head in enumerate(heads):
            entries |= {(f"head{i}", (r, f)) for r in range(head.out_features)}
        return entries
    for s2 in ("", "_reverse")[:D]:
        name = f"weight_ih_l{layer + 1}{s2}"
        if isinstance(model, nn.LSTM):
            entries |= {(name, (r, f)) for r in range(4 * model.hidden_size)}
        elif isinstance(model, lstmkern.GLSTM):
            rows = range(4 * model.hidden_size // G)
            if model.group_input:
                ig_next = D * W // G
                entries |= {(name, (f // ig_next, r, f % ig_next)) for r in rows}
            else:
                entries |= {(name, (g2, r, f)) for g2 in range(G) for r in rows}
        else:
            entries |= {(f"weight_1_l{layer + 1}{s2}", (r, f)) for r in range(model.ranks[layer + 1])}
    params = dict(model.named_parameters())
    assert all(name in params for name, _ in entries)
    return entries


def projected_component_entries(model, heads, layer, d, p):
    """Set of entries of projected unit p's component in (layer, direction d): row p of W_hr, the recurrent column
    reading h_p (only group p // Pg's with groups), and the columns reading output feature d*P + p next."""
    H, P, D = model.hidden_size, model.proj_size, (2 if model.bidirectional else 1)
    sfx = ("", "_reverse")[d]
    I_k = model.input_size if layer == 0 else D * P
    entries = {(f"weight_hr_l{layer}{sfx}", (p, c)) for c in range(H)}
    if isinstance(model, nn.LSTM):
        entries |= {(f"weight_hh_l{layer}{sfx}", (r, p)) for r in range(4 * H)}
    elif isinstance(model, lstmkern.GLSTM):
        G = model.groups
        g, j = divmod(p, P // G)
        entries |= {(f"weight_hh_l{layer}{sfx}", (g, r, j)) for r in range(4 * H // G)}
    else:
        entries |= {(f"weight_1_l{layer}{sfx}", (r, I_k + p)) for r in range(model.ranks[layer])}
    entries |= reader_entries(model, heads, layer, d * P + p)
    params = dict(model.named_parameters())
    assert all(name in params for name, _ in entries if not name.startswith("head"))
    return entries


def lookup(model, heads):
    table = dict(model.named_parameters())
    table.update({f"head{i}": h.weight for i, h in enumerate(heads)})
    return table


def all_components(model, heads, units):
    """Every component of the kinds ``units`` names, as sets of entries."""
    D = 2 if model.bidirectional else 1
    kinds = {"cell": [(component_entries, model.hidden_size)],
             "projected": [(projected_component_entries, model.proj_size)]}
    kinds["both"] = kinds["cell"] + kinds["projected"]
    return [entries(model, heads, layer, d, k) for entries, width in kinds[units]
            for layer in range(model.num_layers) for d in range(D) for k in range(width)]


def hand_penalty(model, heads, eps, units="cell"):
    table = lookup(model, heads)
    total = 0.0
    for component in all_components(model, heads, units):
        sq = sum(table[name][idx] ** 2 for name, idx in component)
        total = total + torch.sqrt(sq + eps)
    return total


def zero_components_(model, heads, chosen, entries=component_entries):
    table = lookup(model, heads)
    with torch.no_grad():
        for layer, d, k in chosen:
            for name, idx in entries(model, heads, layer, d, k):
                table[name][idx] = 0.0


def make(kind, I, H, L, bidirectional, seed, **kw):
    torch.manual_seed(seed)
    if kind == "lstm":
        return nn.LSTM(I, H, L, bidirectional=bidirectional, dtype=F64, **kw)
    if kw.get("proj_size") or not kw.get("group_input", True):
        kw.setdefault("backend", "reference")  # the projected / dense-input forms run on the float64 reference
    if kind == "glstm":
        return lstmkern.GLSTM(I, H, L, groups=kw.pop("groups"), bidirectional=bidirectional, dtype=F64, **kw)
    return lstmkern.FLSTM(I, H, rank=kw.pop("rank"), num_layers=L, bidirectional=bidirectional, dtype=F64, **kw)


# name -> (kind for make(), config). "p": projected (proj_size); "dense": a G-LSTM with group_input=False.
MODELS = {
    "lstm": ("lstm", dict(I=3, H=4, L=2, bidirectional=True)),
    "lstm-1layer": ("lstm", dict(I=2, H=3, L=1, bidirectional=False, bias=False)),
    "glstm": ("glstm", dict(I=6, H=6, L=2, bidirectional=True, groups=3)),
    "flstm": ("flstm", dict(I=3, H=5, L=2, bidirectional=True, rank=[4, 3])),
    "glstm-dense": ("glstm", dict(I=5, H=6, L=2, bidirectional=True, groups=3, group_input=False)),
    "lstmp": ("lstm", dict(I=3, H=5, L=2, bidirectional=True, proj_size=2)),
    "lstmp-1layer": ("lstm", dict(I=2, H=3, L=1, bidirectional=False, bias=False, proj_size=1)),
    "glstmp-G1": ("glstm", dict(I=3, H=5, L=2, bidirectional=True, groups=1, proj_size=3)),
    "glstmp-G2": ("glstm", dict(I=4, H=6, L=2, bidirectional=True, groups=2, proj_size=2)),
    "glstmp-dense-G2": ("glstm", dict(I=5, H=8, L=2, bidirectional=True, groups=2, proj_size=2, group_input=False)),
    "flstmp": ("flstm", dict(I=3, H=5, L=2, bidirectional=True, rank=[4, 3], proj_size=2)),
    # Pg = 2, so a G=2 layer can shrink P (to 2: one projected unit per group).
    "glstmp-G2-P4": ("glstm", dict(I=4, H=10, L=2, bidirectional=True, groups=2, proj_size=4)),
    "glstmp-dense-G2-P4": ("glstm", dict(I=5, H=10, L=2, bidirectional=True, groups=2, proj_size=4,
                                         group_input=False)),
    # Layer 0's rank 5 exceeds I + P_new = 4 once P shrinks to 1: that layer is stored at full rank.
    "flstmp-P3": ("flstm", dict(I=3, H=5, L=2, bidirectional=True, rank=[5, 3], proj_size=3)),
}


@pytest.mark.parametrize("name", MODELS)
def test_penalty_matches_hand_computation_and_gradients_reach_every_component(name):
    kind, cfg = MODELS[name]
    model = make(kind, seed=0, **cfg)
    D, W = (2 if model.bidirectional else 1), model.proj_size or model.hidden_size
    heads = [nn.Linear(D * W, 2, dtype=F64), nn.Linear(D * W, 1, dtype=F64)]
    eps = 1e-3
    value = iss.penalty(model, heads, eps=eps)
    expected = hand_penalty(model, heads, eps)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    value.backward()
    params = dict(model.named_parameters()) | {f"head{i}": h.weight for i, h in enumerate(heads)}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in params.items()}
    assert all(h.bias.grad is None for h in heads)
    for p in params.values():
        p.grad = None
    expected.backward()
    for n, p in params.items():
        # Weights in no component get no gradient at all: with a projection the heads (they read the P-wide h) and
        # FLSTM's W1 (it reads x and the P-wide h).
        in_none = model.proj_size > 0 and (n.startswith("head") or n.startswith("weight_1_"))
        if in_none:
            assert grads[n] is None and p.grad is None, n
            continue
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-10, atol=1e-14)
        # Every entry that belongs to a component gets a gradient (FLSTM layer 0's x columns of W1 belong to none).
        covered = grads[n] != 0
        if kind == "flstm" and n.startswith("weight_1_l0"):
            assert not covered[:, :model.input_size].any() and covered[:, model.input_size:].all()
        else:
            assert covered.all(), n


PROJECTED_MODELS = [name for name, (_, cfg) in MODELS.items() if cfg.get("proj_size")]


@pytest.mark.parametrize("units", ["projected", "both"])
@pytest.mark.parametrize("name", PROJECTED_MODELS)
def test_projected_unit_penalty_matches_enumeration_and_covers_exactly_its_entries(name, units):
    kind, cfg = MODELS[name]
    model = make(kind, seed=6, **cfg)
    D = 2 if model.bidirectional else 1
    heads = [nn.Linear(D * model.proj_size, 2, dtype=F64), nn.Linear(D * model.proj_size, 3, dtype=F64)]
    eps = 1e-3
    value = iss.penalty(model, heads, eps=eps, units=units)
    expected = hand_penalty(model, heads, eps, units)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    if units == "both":  # one term per unit of either kind
        parts = iss.penalty(model, heads, eps=eps, units="cell") + iss.penalty(model, heads, eps=eps,
                                                                                 units="projected")
        torch.testing.assert_close(value, parts, rtol=1e-14, atol=0)
    params = lookup(model, heads)
    value.backward()
    grads = {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in params.items()}
    for p in params.values():
        p.grad = None
    expected.backward()
    # The enumerated entries are exactly those with a gradient (every weight is non-zero): projected units' penalty
    # reaches no bias, no layer-0 input weight and no FLSTM W2; the heads' biases are in no component.
    covered = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
    for component in all_components(model, heads, units):
        for n, idx in component:
            covered[n][idx] = True
    for n, p in params.items():
        hand = torch.zeros_like(p) if p.grad is None else p.grad
        torch.testing.assert_close(grads[n], hand, rtol=1e-10, atol=1e-14)
        assert torch.equal(grads[n] != 0, covered[n]), n
    assert all(h.bias.grad is None for h in heads)
    if units == "projected":
        assert not any(covered[n].any() for n in params
                       if "bias" in n or n.startswith("weight_2") or n.startswith("weight_ih_l0"))


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


def test_zero_small_with_projection_leaves_consumers_and_w1_alone():
    model = make("flstm", I=3, H=4, L=1, bidirectional=False, seed=1, rank=3, proj_size=2)
    head = nn.Linear(2, 2, dtype=F64)
    with torch.no_grad():
        model.weight_hr_l0[1, 3] = 1e-5  # unit 3's W_hr column: zeroed
        model.weight_2_l0[5, 0] = -1e-5  # unit 1's gate row: zeroed
        model.weight_1_l0[0, 4] = 1e-5   # reads the P-wide h: left alone
        head.weight[0, 1] = 1e-6         # reads the P-wide h: left alone
    smallest = min(p.abs().min().item() for p in [model.weight_2_l0, model.weight_hr_l0, model.bias_l0]
                   if p.abs().min() > 1e-4)
    threshold = min(5e-5, smallest)
    assert iss.zero_small_(model, [head], threshold) == 2
    assert model.weight_hr_l0[1, 3] == 0 and model.weight_2_l0[5, 0] == 0
    assert model.weight_1_l0[0, 4] == 1e-5 and head.weight[0, 1] == 1e-6
    lstmp = make("lstm", I=3, H=4, L=1, bidirectional=False, seed=1, proj_size=3)
    with torch.no_grad():
        lstmp.weight_hr_l0[2, 0] = 2e-5
    assert iss.zero_small_(lstmp, [], 5e-5) == 1 and lstmp.weight_hr_l0[2, 0] == 0


CHOSEN = {
    "lstm": [(0, 0, 1), (0, 0, 3), (0, 1, 0), (0, 1, 1), (0, 1, 3), (1, 0, 2), (1, 1, 2), (1, 1, 0)],
    # GLSTM (H=6, G=3, Hg=2): layer 0 removes one unit per group and direction; layer 1 has a group with no zeros.
    "glstm": [(0, d, k) for d in (0, 1) for k in (1, 2, 5)] + [(0, 0, 0), (1, 0, 0), (1, 0, 3), (1, 1, 1)],
    "flstm": [(0, 0, 4), (0, 1, 0), (0, 1, 2), (1, 0, 1), (1, 1, 1), (1, 1, 3)],
    "glstm-dense": [(0, d, k) for d in (0, 1) for k in (1, 2, 5)] + [(0, 0, 0), (1, 0, 0), (1, 0, 3), (1, 1, 1)],
    # LSTMP (H=5, P=2): at least P + 1 = 3 units stay, so layer 0 removes 2 of its 3 all-zero units per direction.
    "lstmp": [(0, 0, 0), (0, 0, 2), (0, 0, 4), (0, 1, 1), (0, 1, 3), (0, 1, 4), (1, 0, 1), (1, 1, 0), (1, 1, 2)],
    # G=1, H=5, P=3: at least 4 units stay.
    "glstmp-G1": [(0, 0, 0), (0, 0, 3), (0, 1, 2), (1, 0, 4)],
    # G=2, Hg=3, Pg=1: at least 2 units per group stay, so every group removes at most one (layer 1 has two all-zero
    # units in every group and direction).
    "glstmp-G2": [(0, 0, 0), (0, 0, 1), (0, 0, 3), (0, 1, 2), (0, 1, 4), (0, 1, 5), (1, 0, 0), (1, 0, 1), (1, 0, 3),
                  (1, 0, 4), (1, 1, 0), (1, 1, 2), (1, 1, 4), (1, 1, 5)],
    # G=2, Hg=4, Pg=1: layer 0 removes 2 per group and direction; layer 1's group 0 of direction 0 has no zeros.
    "glstmp-dense-G2": [(0, 0, 0), (0, 0, 1), (0, 0, 4), (0, 0, 5), (0, 1, 1), (0, 1, 2), (0, 1, 3), (0, 1, 6),
                        (0, 1, 7), (1, 0, 7), (1, 1, 0), (1, 1, 6)],
    # H=5, P=2: layer 1 removes 2 of 3 (at least 3 stay).
    "flstmp": [(0, 0, 4), (0, 1, 0), (0, 1, 2), (1, 0, 1), (1, 0, 2), (1, 0, 3), (1, 1, 0), (1, 1, 1), (1, 1, 3)],
}
EXPECTED_H = {"lstm": [2, 3], "glstm": [3, 6], "flstm": [4, 4], "glstm-dense": [3, 6], "lstmp": [3, 4],
              "glstmp-G1": [4, 5], "glstmp-G2": [4, 4], "glstmp-dense-G2": [4, 8], "flstmp": [4, 3]}


@pytest.mark.parametrize("name", list(CHOSEN))
def test_shrink_after_zeroing_is_exact(name):
    kind, cfg = MODELS[name]
    model = make(kind, seed=2, batch_first=True, **cfg)
    D, H, P = 2, model.hidden_size, model.proj_size
    W = P or H  # output and recurrent width: unchanged by shrinking with a projection
    head = nn.Linear(D * W, 3, dtype=F64)
    zero_components_(model, [head], CHOSEN[name])
    norms = iss.component_norms(model, [head])
    for layer, d, k in CHOSEN[name]:
        assert norms[layer][d, k] == 0
    small, (small_head,), report = iss.shrink(model, [head])
    assert isinstance(small, StackedLSTM)
    assert report.hidden_before == [H, H] and report.hidden_after == EXPECTED_H[name] == small.hidden_sizes
    assert small_head.in_features == D * (P or EXPECTED_H[name][-1])
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    for index, layer in enumerate(small.layers):
        assert type(layer) is type(model) and layer.num_layers == 1 and layer.proj_size == P
        if kind == "glstm":
            assert layer.groups == model.groups and layer.group_input == model.group_input
        if kind == "flstm":
            assert layer.ranks == [model.ranks[index]]
    x = torch.randn(3, 5, model.input_size, dtype=F64)  # (B, T, I)
    out, (h_n, c_n) = model(x)
    small_out, (small_h, small_c) = small(x)
    torch.testing.assert_close(small_head(small_out), head(out), rtol=0, atol=1e-12)
    if P:  # the P-wide output itself is unchanged
        torch.testing.assert_close(small_out, out, rtol=0, atol=1e-12)
    # Final states of the surviving units are unchanged (all of the P-wide h with a projection); removed units' states
    # were zero (zero initial state).
    kept = [[[u for u in range(H) if u not in report.removed[layer][d]] for d in range(D)] for layer in range(2)]
    for layer in range(2):
        for d in range(D):
            removed, k = report.removed[layer][d], layer * D + d
            h_cols = list(range(P)) if P else kept[layer][d]
            torch.testing.assert_close(small_h[layer][d], h_n[k][:, h_cols], rtol=0, atol=1e-12)
            torch.testing.assert_close(small_c[layer][d], c_n[k][:, kept[layer][d]], rtol=0, atol=1e-12)
            assert torch.all(c_n[k][:, removed] == 0) and (P or torch.all(h_n[k][:, removed] == 0))
    # A non-zero initial state, restricted to the surviving units (c, and h without a projection), gives the same
    # outputs too.
    h0, c0 = torch.randn(2 * D, 3, W, dtype=F64), torch.randn(2 * D, 3, H, dtype=F64)
    small_h0 = [torch.stack([h0[layer * D + d][:, list(range(P)) if P else kept[layer][d]] for d in range(D)])
                for layer in range(2)]
    small_c0 = [torch.stack([c0[layer * D + d][:, kept[layer][d]] for d in range(D)]) for layer in range(2)]
    torch.testing.assert_close(small_head(small(x, (small_h0, small_c0))[0]), head(model(x, (h0, c0))[0]), rtol=0,
                               atol=1e-12)
    # PackedSequence through the stack.
    lengths = torch.tensor([5, 2, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ref = pad_packed_sequence(model(packed)[0], batch_first=True)[0]
    got = pad_packed_sequence(small(packed)[0], batch_first=True)[0]
    torch.testing.assert_close(small_head(got), head(ref), rtol=0, atol=1e-12)


# name -> (cell components to zero, projected components to zero, H after units="both" per layer, P after per layer).
# Projected units go first: P_new per layer, then at least P_new/G + 1 cell units per group stay (H_new > P_new).
# units="projected" on the same zeroing gives the same P and keeps H.
CHOSEN_PROJECTED = {
    # H=5, P=2. Layer 0: P -> 1, which lets H go down to 2 (3 of 4 all-zero units; with P kept 3 would stay);
    # layer 1: P -> 1 (the last layer's projected units go: a head reads them), H -> 4.
    "lstmp": ([(0, d, k) for d in (0, 1) for k in (0, 1, 3, 4)] + [(1, 0, 2), (1, 1, 2), (1, 1, 3)],
              [(0, 0, 1), (0, 1, 0), (1, 0, 0), (1, 0, 1), (1, 1, 1)], [2, 4], [1, 1]),
    # G=1, H=5, P=3. Layer 1: all projected units zero, one stays (P >= 1).
    "glstmp-G1": ([(0, 0, 1), (0, 0, 3), (0, 1, 0), (0, 1, 3), (0, 1, 4)]
                  + [(1, d, k) for d in (0, 1) for k in (0, 1, 4)],
                  [(0, 0, 0), (0, 0, 2), (0, 1, 2)] + [(1, d, p) for d in (0, 1) for p in range(3)], [3, 2], [2, 1]),
    # G=2, Hg=5, Pg=2. Layer 0: every (direction, group) has a zero projected unit (d1 g1 two, one stays per group)
    # -> P = 2; 3 zero cell units per group -> H = 4. Layer 1: group 1 of direction 0 has no zero projected unit, so
    # P stays 4 and at least 3 cell units per group stay: H -> 6.
    "glstmp-G2-P4": ([(0, 0, k) for k in (0, 1, 2, 3, 5, 7, 9)] + [(0, 1, k) for k in (1, 3, 4, 6, 8, 9)]
                     + [(1, 0, k) for k in (0, 2, 5, 6)] + [(1, 1, k) for k in (1, 4, 7, 8, 9)],
                     [(0, 0, 0), (0, 0, 3), (0, 1, 1), (0, 1, 2), (0, 1, 3), (1, 0, 0), (1, 0, 1), (1, 1, 2)],
                     [4, 6], [2, 4]),
    # H=5, P=3, ranks [5, 3]. Layer 0: P -> 1 (rank 5 > I + 1 = 4: stored at rank 4), H -> 3; layer 1: P -> 2,
    # H -> 4.
    "flstmp-P3": ([(0, 0, 0), (0, 0, 4), (0, 1, 1), (0, 1, 2), (0, 1, 3), (1, 0, 1), (1, 1, 1), (1, 1, 0)],
                  [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 2), (1, 0, 2), (1, 1, 2)], [3, 4], [1, 2]),
}
CHOSEN_PROJECTED["glstmp-dense-G2-P4"] = CHOSEN_PROJECTED["glstmp-G2-P4"]


@pytest.mark.parametrize("units", ["projected", "both"])
@pytest.mark.parametrize("name", list(CHOSEN_PROJECTED))
def test_shrink_of_projected_units_is_exact(name, units):
    kind, cfg = MODELS[name]
    model = make(kind, seed=5, batch_first=True, **cfg)
    L, D, H, P = model.num_layers, 2, model.hidden_size, model.proj_size
    head = nn.Linear(D * P, 3, dtype=F64)
    chosen_cells, chosen_proj, H_both, P_after = CHOSEN_PROJECTED[name]
    zero_components_(model, [head], chosen_cells)
    zero_components_(model, [head], chosen_proj, entries=projected_component_entries)
    norms = iss.component_norms(model, [head], units="projected")
    assert {(layer, d, p) for layer in range(L) for d in range(D) for p in range(P)
            if norms[layer][d, p] == 0} == set(chosen_proj)
    small, (small_head,), report = iss.shrink(model, [head], units=units)
    H_after = H_both if units == "both" else [H] * L
    assert report.hidden_before == [H] * L and report.hidden_after == H_after == small.hidden_sizes
    assert report.proj_before == [P] * L and report.proj_after == P_after
    assert [layer.proj_size for layer in small.layers] == P_after
    kept_p = [[[p for p in range(P) if p not in report.removed_projected[layer][d]] for d in range(D)]
              for layer in range(L)]
    kept_h = [[[k for k in range(H) if k not in report.removed[layer][d]] for d in range(D)] for layer in range(L)]
    for layer in range(L):
        for d in range(D):
            assert len(kept_p[layer][d]) == P_after[layer] and len(kept_h[layer][d]) == H_after[layer]
            assert {(layer, d, p) for p in report.removed_projected[layer][d]} <= set(chosen_proj)
            assert {(layer, d, k) for k in report.removed[layer][d]} <= set(chosen_cells)
    assert small_head.in_features == D * P_after[-1]
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    for index, layer in enumerate(small.layers):
        assert type(layer) is type(model) and layer.num_layers == 1
        assert layer.weight_hr_l0.shape == (P_after[index], H_after[index])
        if kind == "glstm":
            assert layer.groups == model.groups and layer.group_input == model.group_input
        if kind == "flstm":
            assert layer.ranks == [min(model.ranks[index], layer.input_size + P_after[index])]
    x = torch.randn(3, 5, model.input_size, dtype=F64)  # (B, T, I)
    out, (h_n, c_n) = model(x)
    small_out, (small_h, small_c) = small(x)
    torch.testing.assert_close(small_head(small_out), head(out), rtol=0, atol=1e-12)
    out_kept = [d * P + p for d in range(D) for p in kept_p[-1][d]]
    out_removed = [f for f in range(D * P) if f not in out_kept]
    torch.testing.assert_close(small_out, out[..., out_kept], rtol=0, atol=1e-12)
    assert torch.all(out[..., out_removed] == 0)  # a removed projected unit's W_hr row is zero
    for layer in range(L):
        for d in range(D):
            k = layer * D + d
            torch.testing.assert_close(small_h[layer][d], h_n[k][:, kept_p[layer][d]], rtol=0, atol=1e-12)
            torch.testing.assert_close(small_c[layer][d], c_n[k][:, kept_h[layer][d]], rtol=0, atol=1e-12)
            assert torch.all(h_n[k][:, report.removed_projected[layer][d]] == 0)
            assert torch.all(c_n[k][:, report.removed[layer][d]] == 0)
    # A non-zero initial state restricted to the kept units gives the same outputs (removed units' initial h and c
    # reach nothing: the weights reading them are zero).
    h0, c0 = torch.randn(L * D, 3, P, dtype=F64), torch.randn(L * D, 3, H, dtype=F64)
    small_h0 = [torch.stack([h0[layer * D + d][:, kept_p[layer][d]] for d in range(D)]) for layer in range(L)]
    small_c0 = [torch.stack([c0[layer * D + d][:, kept_h[layer][d]] for d in range(D)]) for layer in range(L)]
    torch.testing.assert_close(small(x, (small_h0, small_c0))[0], model(x, (h0, c0))[0][..., out_kept], rtol=0,
                               atol=1e-12)
    lengths = torch.tensor([5, 1, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ref = pad_packed_sequence(model(packed)[0], batch_first=True)[0]
    got = pad_packed_sequence(small(packed)[0], batch_first=True)[0]
    torch.testing.assert_close(got, ref[..., out_kept], rtol=0, atol=1e-12)


def test_projected_units_keep_at_least_one_and_the_unread_output():
    """Every projected unit of a one-layer LSTMP zero: one stays (P >= 1) when a head reads the output, all stay
    without one (the output is the model's); H keeps P_new + 1 cell units."""
    model = make("lstm", I=3, H=4, L=1, bidirectional=False, seed=7, proj_size=3)
    head = nn.Linear(3, 2, dtype=F64)
    zero_components_(model, [head], [(0, 0, p) for p in range(3)], entries=projected_component_entries)
    zero_components_(model, [head], [(0, 0, k) for k in range(4)])
    x = torch.randn(6, 2, 3, dtype=F64)
    small, (small_head,), report = iss.shrink(model, [head], units="both")
    assert report.proj_after == [1] and report.removed_projected == [[[0, 1]]]
    assert report.hidden_after == [2] and report.removed == [[[0, 1]]]
    assert "proj before -> after" in str(report)
    torch.testing.assert_close(small_head(small(x)[0]), head(model(x)[0]), rtol=0, atol=0)
    small, heads, report = iss.shrink(model, [], units="both")
    assert heads == [] and report.proj_after == [3] and report.hidden_after == [4]  # H > P = 3
    torch.testing.assert_close(small(x)[0], model(x)[0], rtol=0, atol=0)


def test_zero_small_of_projected_units():
    model = make("flstm", I=3, H=4, L=2, bidirectional=False, seed=8, rank=[3, 2], proj_size=2)
    head = nn.Linear(2, 2, dtype=F64)
    tiny = 1e-7  # far below every random weight (seeded)
    with torch.no_grad():
        model.weight_1_l0[0, 3] = tiny     # layer 0 reads h_0 (projected unit 0): zeroed
        model.weight_1_l0[1, 0] = tiny     # layer 0 reads x: no unit's, left alone
        model.weight_1_l1[0, 1] = -tiny    # layer 1 reads layer 0's h_1: zeroed
        model.weight_hr_l1[1, 2] = tiny    # row 1 of W_hr: zeroed
        model.weight_2_l1[3, 0] = tiny     # a cell unit's gate row: only with "cell" or "both"
        model.bias_l0[5] = tiny            # likewise
        head.weight[1, 0] = tiny           # reads the last layer's h_0: zeroed
        head.bias[0] = tiny                # a consumer bias: left alone
    assert iss.zero_small_(model, [head], 1e-6, units="projected") == 4
    assert model.weight_1_l0[0, 3] == 0 and model.weight_1_l1[0, 1] == 0 and model.weight_hr_l1[1, 2] == 0
    assert head.weight[1, 0] == 0
    assert model.weight_1_l0[1, 0] == tiny and model.weight_2_l1[3, 0] == tiny and model.bias_l0[5] == tiny
    assert head.bias[0] == tiny
    assert iss.zero_small_(model, [head], 1e-6, units="both") == 2
    assert model.weight_2_l1[3, 0] == 0 and model.bias_l0[5] == 0 and model.weight_1_l0[1, 0] == tiny
    lstmp = make("lstm", I=3, H=4, L=2, bidirectional=True, seed=8, proj_size=2)
    with torch.no_grad():
        lstmp.weight_ih_l1_reverse[2, 3] = tiny  # reads layer 0's reverse h_1: zeroed
        lstmp.weight_hh_l0[7, 1] = tiny          # the recurrent column of h_1: zeroed
        lstmp.weight_ih_l0[0, 0] = tiny          # reads x: left alone
        lstmp.bias_hh_l1[0] = tiny               # a cell unit's bias: left alone
    assert iss.zero_small_(lstmp, [], 1e-6, units="projected") == 2
    assert lstmp.weight_ih_l1_reverse[2, 3] == 0 and lstmp.weight_hh_l0[7, 1] == 0
    assert lstmp.weight_ih_l0[0, 0] == tiny and lstmp.bias_hh_l1[0] == tiny


def test_units_argument_is_checked():
    plain = make("lstm", I=3, H=4, L=1, bidirectional=False, seed=0)
    projected = make("lstm", I=3, H=4, L=1, bidirectional=False, seed=0, proj_size=2)
    for call in (lambda m, u: iss.penalty(m, [], units=u), lambda m, u: iss.component_norms(m, [], units=u),
                 lambda m, u: iss.zero_small_(m, [], 1e-4, units=u), lambda m, u: iss.shrink(m, [], units=u)):
        with pytest.raises(ValueError, match="units must be one of"):
            call(projected, "hidden")
        with pytest.raises(ValueError, match="units must be one of"):
            call(projected, None)
        with pytest.raises(ValueError, match="needs a projected model"):
            call(plain, "projected")
    with pytest.raises(ValueError, match="needs a projected model"):
        iss.shrink(plain, [], units="both")
    with pytest.raises(ValueError, match="one kind per call"):
        iss.component_norms(projected, [], units="both")


def test_shrink_without_consumers_keeps_last_layer_and_leaves_input_unchanged():
    model = make("lstm", I=3, H=4, L=2, bidirectional=False, seed=3)
    zero_components_(model, [], [(0, 0, 2), (1, 0, 1)])
    before = {n: p.clone() for n, p in model.named_parameters()}
    small, heads, report = iss.shrink(model, [])
    assert heads == [] and report.hidden_after == [3, 4]
    x = torch.randn(4, 2, 3, dtype=F64)
    torch.testing.assert_close(small(x)[0], model(x)[0], rtol=0, atol=1e-12)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_projected_shrink_without_consumers_shrinks_the_last_layer_too():
    """With a projection the output is the P-wide h, which shrinking keeps: the last layer's units can go as well."""
    model = make("lstm", I=3, H=6, L=2, bidirectional=False, seed=4, proj_size=2)
    zero_components_(model, [], [(0, 0, 2), (1, 0, 1), (1, 0, 5)])
    before = {n: p.clone() for n, p in model.named_parameters()}
    small, heads, report = iss.shrink(model, [])
    assert heads == [] and report.hidden_after == [5, 4] and report.removed == [[[2]], [[1, 5]]]
    assert [layer.weight_hr_l0.shape for layer in small.layers] == [(2, 5), (2, 4)]
    x = torch.randn(4, 2, 3, dtype=F64)
    out, (h_n, c_n) = model(x)
    small_out, (small_h, small_c) = small(x)
    torch.testing.assert_close(small_out, out, rtol=0, atol=1e-12)
    torch.testing.assert_close(small_h[1][0], h_n[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(small_c[1][0], c_n[1][:, [0, 2, 3, 4]], rtol=0, atol=1e-12)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_stacked_lstm_chains_projected_layers():
    stack = StackedLSTM([nn.LSTM(4, 6, proj_size=2, bidirectional=True, dtype=F64),
                         nn.LSTM(4, 3, bidirectional=True, dtype=F64)])
    out, (h_n, c_n) = stack(torch.randn(5, 2, 4, dtype=F64))
    assert out.shape == (5, 2, 6) and h_n[0].shape == (2, 2, 2) and c_n[0].shape == (2, 2, 6)
    with pytest.raises(ValueError, match=r"layers\[1\].input_size must be 4"):
        StackedLSTM([nn.LSTM(4, 6, proj_size=2, bidirectional=True), nn.LSTM(12, 3, bidirectional=True)])


def test_bad_arguments():
    model = make("lstm", I=3, H=4, L=1, bidirectional=False, seed=0)
    with pytest.raises(TypeError, match="consumers"):
        iss.penalty(model, nn.Linear(4, 2, dtype=F64))
    with pytest.raises(ValueError, match="in_features"):
        iss.penalty(model, [nn.Linear(5, 2, dtype=F64)])
    projected = make("lstm", I=3, H=4, L=1, bidirectional=True, seed=0, proj_size=2)
    with pytest.raises(ValueError, match=r"in_features must be D\*P = 4"):  # they read the P-wide output
        iss.shrink(projected, [nn.Linear(8, 2, dtype=F64)])
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
