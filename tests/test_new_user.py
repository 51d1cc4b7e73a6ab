"""What new users hit (issue "GPU first contact, and the defects a new user hits", part B): each test failed before
its fix. torch.compile with changing shapes, module input validation, empty batches, nn.LSTM's positional order,
from_lstm's mode, construction-time checks, rank clamping, double backward, whole-model checkpoints."""
import io
import warnings

import pytest
import torch
from torch import nn

import lstmkern
from lstmkern.compress import iss

F64 = torch.float64


def _module(cls, *args, **kwargs):
    extra = {"groups": 2} if cls is lstmkern.GLSTM else {"rank": 5}
    return cls(*args, **{**extra, **kwargs})


# --- B.1: torch.compile over batches of changing T and B -------------------------------------------------------------

@pytest.mark.parametrize("dynamic", [None, True], ids=["automatic-dynamic", "dynamic=True"])
@pytest.mark.parametrize("cls", [lstmkern.GLSTM, lstmkern.FLSTM])
def test_compile_with_changing_shapes_matches_eager(cls, dynamic):
    torch._dynamo.reset()
    model = _module(cls, 6, 8, 2, dtype=F64)
    compiled = torch.compile(model, fullgraph=True, dynamic=dynamic)
    for T, B in ((3, 2), (5, 4), (2, 3)):
        x = torch.randn(T, B, 6, dtype=F64)
        out, (h_n, c_n) = compiled(x)
        ref_out, (ref_h, ref_c) = model(x)
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(c_n, ref_c)
        grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
        ref_grads = torch.autograd.grad(ref_out.square().sum(), list(model.parameters()))
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r)


# --- B.2: modules validate their input like nn.LSTM -----------------------------------------------------------------

@pytest.mark.parametrize("cls", [lstmkern.GLSTM, lstmkern.FLSTM])
def test_module_rejects_input_of_another_dtype(cls):
    model = _module(cls, 4, 6)
    with pytest.raises(TypeError, match="input has dtype torch.float64 but the module's parameters are torch.float32"):
        model(torch.randn(3, 2, 4, dtype=F64))


@pytest.mark.parametrize("cls", [lstmkern.GLSTM, lstmkern.FLSTM])
def test_module_rejects_hx_of_another_device_or_dtype(cls):
    model = _module(cls, 4, 6)
    x = torch.randn(3, 2, 4)
    good = torch.zeros(1, 2, 6)
    with pytest.raises(ValueError, match="h0 must be on the input's device cpu, got meta"):
        model(x, (torch.zeros(1, 2, 6, device="meta"), good))
    with pytest.raises(TypeError, match="c0 must have the input's dtype torch.float32, got torch.float64"):
        model(x, (good, torch.zeros(1, 2, 6, dtype=F64)))
    with pytest.raises(TypeError, match="h0 must be a Tensor"):
        model(x, ([0.0], good))


@pytest.mark.parametrize("cls", [lstmkern.GLSTM, lstmkern.FLSTM])
def test_module_rejects_input_on_another_device(cls):
    model = _module(cls, 4, 6)
    with pytest.raises(ValueError, match="input is on meta but the module's parameters are on cpu"):
        model(torch.randn(3, 2, 4, device="meta"))


# --- B.3: empty batch ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("cls", [lstmkern.GLSTM, lstmkern.FLSTM])
@pytest.mark.parametrize("batch_first", [False, True])
def test_empty_batch_like_nn_lstm(cls, backend, batch_first):
    model = _module(cls, 4, 6, 2, batch_first=batch_first, bidirectional=True, backend=backend)
    dense = nn.LSTM(4, 6, 2, batch_first=batch_first, bidirectional=True)
    x = torch.randn((0, 5, 4) if batch_first else (5, 0, 4), requires_grad=True)
    out, (h_n, c_n) = model(x)
    ref_out, (ref_h, ref_c) = dense(x)
    assert out.shape == ref_out.shape and h_n.shape == ref_h.shape and c_n.shape == ref_c.shape
    (out.sum() + h_n.sum() + c_n.sum()).backward()
    assert x.grad.shape == x.shape
    for p in model.parameters():
        assert p.grad is not None and p.grad.shape == p.shape and not p.grad.any()


def test_empty_batch_functional():
    x = torch.randn(3, 0, 6, dtype=F64, requires_grad=True)
    w_ih = torch.randn(3, 8, 2, dtype=F64, requires_grad=True)
    w_hh = torch.randn(3, 8, 2, dtype=F64, requires_grad=True)
    out, (h_n, c_n) = lstmkern.glstm_forward(x, None, w_ih, w_hh)
    assert out.shape == (3, 0, 6) and h_n.shape == (0, 6) and c_n.shape == (0, 6)
    out.sum().backward()
    assert not w_ih.grad.any() and not w_hh.grad.any()
    w1 = torch.randn(4, 6 + 5, dtype=F64)
    w2 = torch.randn(20, 4, dtype=F64)
    out, (h_n, _) = lstmkern.flstm_forward(torch.randn(0, 2, 6, dtype=F64).transpose(0, 1), None, w1, w2,
                                           batch_first=False)
    assert out.shape == (2, 0, 5) and h_n.shape == (0, 5)


# --- B.4: nn.LSTM's positional order, layer-type knobs keyword-only ---------------------------------------------------

@pytest.mark.parametrize("cls", [lstmkern.GLSTM, lstmkern.FLSTM])
def test_positional_arguments_follow_nn_lstm(cls):
    model = cls(8, 16, 2, False, True, 0.25, True, 0)
    assert (model.num_layers, model.bias, model.batch_first, model.dropout, model.bidirectional, model.proj_size) == \
        (2, False, True, 0.25, True, 0)
    if cls is lstmkern.FLSTM:
        assert model.ranks == [8 + 16, 32 + 16]  # FLSTM(8, 16, 2) is two full-rank layers, not rank 2
    with pytest.raises(TypeError):
        cls(8, 16, 2, False, True, 0.25, True, 0, 4)  # a 9th positional argument does not exist
    with pytest.raises(TypeError, match="keyword-only"):
        cls(8, 16, 1, 4)  # e.g. groups or rank passed where nn.LSTM has `bias`


@pytest.mark.parametrize("cls", [lstmkern.GLSTM, lstmkern.FLSTM])
def test_proj_size_is_validated_like_nn_lstm(cls):
    with pytest.raises(ValueError, match="proj_size must be smaller than hidden_size"):
        cls(8, 16, proj_size=16)
    with pytest.raises(ValueError, match="proj_size must be an int >= 0"):
        cls(8, 16, proj_size=-1)


# --- B.5: from_lstm's mode, backend names at construction, ranks above full rank --------------------------------------

@pytest.mark.parametrize("cls", [lstmkern.GLSTM, lstmkern.FLSTM])
@pytest.mark.parametrize("training", [True, False])
def test_from_lstm_keeps_train_eval_mode(cls, training):
    dense = nn.LSTM(4, 6, 2, dropout=0.5).train(training)
    assert cls.from_lstm(dense).training is training


@pytest.mark.parametrize("cls", [lstmkern.GLSTM, lstmkern.FLSTM])
def test_backend_name_checked_at_construction(cls):
    with pytest.raises(ValueError, match="backend must be one of 'auto'.*got 'tritón'"):
        cls(4, 6, backend="tritón")
    with pytest.raises(TypeError, match="backend must be a str"):
        cls(4, 6, backend=None)


def test_rank_above_full_rank_is_clamped_with_a_warning():
    with pytest.warns(UserWarning, match="rank 40 of layer 0 exceeds its full rank I_k \\+ H = 22; using 22"):
        model = lstmkern.FLSTM(6, 16, 2, rank=40)
    assert model.ranks == [22, 32]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lstmkern.FLSTM(6, 16, rank=22).ranks == [22]


def test_iss_shrink_stores_a_full_rank_layer_when_the_kept_rank_is_too_large():
    torch.manual_seed(0)
    model = lstmkern.FLSTM(3, 8, rank=10, dtype=F64)
    head = nn.Linear(8, 2, dtype=F64)
    with torch.no_grad():  # remove 6 of 8 units: the shrunk layer has full rank 3 + 2 = 5 < 10
        model.weight_2_l0.view(4, 8, 10)[:, 2:] = 0
        model.weight_1_l0[:, 3 + 2:] = 0
        model.bias_l0.view(4, 8)[:, 2:] = 0
        head.weight[:, 2:] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small, (small_head,), _ = iss.shrink(model, [head])
    layer = small.layers[0]
    assert layer.hidden_size == 2 and layer.ranks == [5]
    x = torch.randn(4, 3, 3, dtype=F64)
    torch.testing.assert_close(small_head(small(x)[0]), head(model(x)[0]))


# --- B.6: double backward ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("op", ["glstm", "flstm"])
def test_gradient_penalty_matches_the_reference_maths(op, backend):
    torch.manual_seed(1)
    T, B, I, H = 3, 2, 4, 6
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    if op == "glstm":
        weights = [torch.randn(2, 4 * H // 2, I // 2, dtype=F64), torch.randn(2, 4 * H // 2, H // 2, dtype=F64),
                   torch.randn(2, 4 * H // 2, dtype=F64)]
        run = lambda *w, **kw: lstmkern.glstm_forward(x, None, *w, **kw)  # noqa: E731
        ref = lambda *w: lstmkern.reference.glstm_reference(x, x.new_zeros(B, H), x.new_zeros(B, H), *w)  # noqa
    else:
        weights = [torch.randn(3, I + H, dtype=F64), torch.randn(4 * H, 3, dtype=F64), torch.randn(4 * H, dtype=F64)]
        run = lambda *w, **kw: lstmkern.flstm_forward(x, None, *w, **kw)  # noqa: E731
        ref = lambda *w: lstmkern.reference.flstm_reference(x, x.new_zeros(B, H), x.new_zeros(B, H), *w)  # noqa
    weights = [w.requires_grad_() for w in weights]

    def penalty(out):
        (dx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        return dx.square().sum()

    got = torch.autograd.grad(penalty(run(*weights, backend=backend)[0]), weights)
    want = torch.autograd.grad(penalty(ref(*weights)[0]), weights)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_double_backward_gradgradcheck():
    x = torch.randn(2, 2, 4, dtype=F64, requires_grad=True)
    w1 = torch.randn(3, 4 + 3, dtype=F64, requires_grad=True)
    w2 = torch.randn(12, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda *a: lstmkern.flstm_forward(*a[:1], None, *a[1:])[0], (x, w1, w2))


# --- B.10: whole-model checkpoints load under weights_only=True --------------------------------------------------------

class _WordModel(nn.Module):
    """The shape of PyTorch's word_language_model RNNModel: embedding, recurrent layer, dropout, decoder."""

    def __init__(self, rnn):
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(11, 8)
        self.rnn = rnn
        self.decoder = nn.Linear(16, 11)

    def forward(self, tokens):
        return self.decoder(self.drop(self.rnn(self.drop(self.encoder(tokens)))[0]))


@pytest.mark.parametrize("rnn", [lambda: lstmkern.GLSTM(8, 16, 2, groups=4),
                                 lambda: lstmkern.FLSTM(8, 16, 2, dropout=0.1, rank=[6, 7])], ids=["GLSTM", "FLSTM"])
def test_whole_model_checkpoint_loads_with_only_torch_classes_listed(rnn):
    model = _WordModel(rnn()).eval()
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    # The example's own list: its model class and torch's classes, nothing of lstmkern's.
    user_list = [_WordModel, nn.Dropout, nn.Embedding, nn.Linear, nn.LSTM, nn.GRU, nn.RNN]
    with torch.serialization.safe_globals(user_list):
        loaded = torch.load(buffer)
    tokens = torch.randint(0, 11, (5, 3))
    torch.testing.assert_close(loaded(tokens), model(tokens))
