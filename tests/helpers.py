"""Independent float64 ground truth for the tests: the LSTM equations written out per group, with no code shared
with lstmkern (so a bug in the library's reference cannot hide in both)."""
import torch


def lstm_cell_equations(x_t, h, c, w_x, w_h, b):
    """One dense LSTM step, gates i, f, g, o: the textbook equations."""
    gates = x_t @ w_x.T + h @ w_h.T + (0 if b is None else b)
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def glstm_equations(x, h0, c0, weight_ih, weight_hh, bias, weight_hr=None):
    """G-LSTM as G separate dense LSTMs, time-major x (T, B, I). Group g reads its slice of x (grouped input) or all of
    x (dense input: weight_ih (G, 4Hg, I)), and its slice of h; with weight_hr (P, H) h = W_hr [m_1 .. m_G]."""
    G = weight_ih.shape[0]
    dense_input = G > 1 and weight_ih.shape[2] == x.shape[2]
    xs = [x] * G if dense_input else x.chunk(G, dim=2)
    ms, cs = [None] * G, list(c0.chunk(G, dim=1))
    h = h0
    outs = []
    for t in range(x.shape[0]):
        hs = h.chunk(G, dim=1)
        for g in range(G):
            ms[g], cs[g] = lstm_cell_equations(xs[g][t], hs[g], cs[g], weight_ih[g], weight_hh[g],
                                               None if bias is None else bias[g])
        m = torch.cat(ms, dim=1)
        h = m if weight_hr is None else m @ weight_hr.T
        outs.append(h)
    return torch.stack(outs), h, torch.cat(cs, dim=1)


def flstm_equations(x, h0, c0, weight_1, weight_2, bias, weight_hr=None):
    """F-LSTM: the full gate matrix W = W2 W1 formed explicitly, then a dense LSTM (projected by W_hr if given)."""
    I = x.shape[2]
    W = weight_2 @ weight_1
    h, c, outs = h0, c0, []
    for t in range(x.shape[0]):
        m, c = lstm_cell_equations(x[t], h, c, W[:, :I], W[:, I:], bias)
        h = m if weight_hr is None else m @ weight_hr.T
        outs.append(h)
    return torch.stack(outs), h, c


def rel_err(actual, expected):
    """max |a - e| / max(max |e|, tiny): one number per comparison, robust to tiny entries."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()
