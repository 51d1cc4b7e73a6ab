"""Every bad input gets a clear ValueError/TypeError naming the argument, before any kernel runs."""
import pytest
import torch

import lstmkern

F32 = torch.float32


def _glstm_args(T=3, B=2, I=6, H=9, G=3, dtype=F32):
    return (torch.randn(T, B, I, dtype=dtype), None, torch.randn(G, 4 * H // G, I // G, dtype=dtype),
            torch.randn(G, 4 * H // G, H // G, dtype=dtype), torch.randn(G, 4 * H // G, dtype=dtype))


def _flstm_args(T=3, B=2, I=6, H=9, R=4, dtype=F32):
    return (torch.randn(T, B, I, dtype=dtype), None, torch.randn(R, I + H, dtype=dtype),
            torch.randn(4 * H, R, dtype=dtype), torch.randn(4 * H, dtype=dtype))


def _with(args, index, value):
    args = list(args)
    args[index] = value
    return args


GLSTM_CASES = [
    (0, [1, 2, 3], TypeError, "x must be a torch.Tensor"),
    (0, torch.randn(3, 6), ValueError, r"x must be 3-D .* got shape \(3, 6\)"),
    (0, torch.randint(0, 3, (3, 2, 6)), TypeError, "x must be float64, float32, float16 or bfloat16"),
    (0, torch.randn(3, 2, 7), ValueError, r"x has 7 input features but weight_ih .* expects G \* I/G = 3 \* 2 = 6"),
    (1, torch.zeros(2, 9), TypeError, r"hx must be None or a pair \(h0, c0\)"),
    (1, (torch.zeros(3, 9), torch.zeros(2, 9)), ValueError, r"h0 must have shape \(2, 9\)"),
    (1, (torch.zeros(2, 9), torch.zeros(2, 8)), ValueError, r"c0 must have shape \(2, 9\)"),
    (1, (torch.zeros(2, 9, dtype=torch.float64), torch.zeros(2, 9)), TypeError, "h0 must have x's dtype"),
    (2, torch.randn(3, 10, 2), ValueError, "4 gates per group"),
    (2, torch.randn(12, 2), ValueError, "weight_ih must be 3-D"),
    (2, torch.randn(3, 12, 2, dtype=torch.float64), TypeError, "weight_ih must have x's dtype"),
    (3, torch.randn(3, 12, 4), ValueError, r"weight_hh must have shape \(3, 12, 3\)"),
    (3, torch.randn(2, 12, 3), ValueError, r"weight_hh must have shape \(3, 12, 3\)"),
    (4, torch.randn(36), ValueError, "bias must be 2-D"),
    (4, torch.randn(3, 11), ValueError, r"bias must have shape \(3, 12\)"),
]


@pytest.mark.parametrize("index,value,exc,match", GLSTM_CASES)
def test_glstm_bad_inputs(index, value, exc, match):
    with pytest.raises(exc, match=match):
        lstmkern.glstm_forward(*_with(_glstm_args(), index, value))


FLSTM_CASES = [
    (2, torch.randn(4, 14), ValueError, r"weight_1 must have shape \(4, 15\)"),
    (2, torch.randn(5, 15), ValueError, r"weight_1 must have shape \(4, 15\)"),
    (3, torch.randn(35, 4), ValueError, "4 gates"),
    (3, torch.randn(36, 0), ValueError, "rank R must be >= 1"),
    (3, torch.randn(36), ValueError, "weight_2 must be 2-D"),
    (4, torch.randn(35), ValueError, r"bias must have shape \(36,\)"),
    (4, torch.randn(36, dtype=torch.float16), TypeError, "bias must have x's dtype"),
]


@pytest.mark.parametrize("index,value,exc,match", FLSTM_CASES)
def test_flstm_bad_inputs(index, value, exc, match):
    with pytest.raises(exc, match=match):
        lstmkern.flstm_forward(*_with(_flstm_args(), index, value))


def test_backend_names():
    args = _glstm_args()
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'reference', 'triton', 'cuda', 'cpu'; got 'cudnn'"):
        lstmkern.glstm_forward(*args, backend="cudnn")
    with pytest.raises(TypeError, match="backend must be a str"):
        lstmkern.glstm_forward(*args, backend=None)


def test_cuda_backend_on_cpu_tensors_is_a_clear_error():
    with pytest.raises(ValueError, match="backend='cuda' cannot run glstm here: .*"):
        lstmkern.glstm_forward(*_glstm_args(), backend="cuda")
    with pytest.raises(ValueError, match="backend='cuda' cannot run flstm here: .*"):
        lstmkern.flstm_forward(*_flstm_args(), backend="cuda")


def test_auto_on_cpu_is_the_cpu_backend_where_it_applies_else_the_reference():
    from lstmkern.backends import resolve_backend
    for dtype, expected in ((torch.float32, "cpu"), (torch.float64, "cpu"), (torch.bfloat16, "cpu"),
                            (torch.float16, "reference")):
        assert resolve_backend("auto", "glstm", torch.device("cpu"), dtype, (3, 2, 6, 9, 3, 0)) == expected
