"""MinkowskiEngine is the real library: a sparse convolution with hand-computed outputs and grads."""

import MinkowskiEngine as ME
import torch


def _tiny_input():
    # Four active sites on a 2D grid (batch 0) with features 1, 2, 4, 8.
    coords = torch.tensor([[0, 0, 0], [0, 1, 0], [0, 2, 0], [0, 0, 2]], dtype=torch.int32)
    feats = torch.tensor([[1.0], [2.0], [4.0], [8.0]], requires_grad=True)
    return ME.SparseTensor(feats, coordinates=coords), feats


def test_sparse_convolution_forward_and_backward_exact():
    x, feats = _tiny_input()
    conv = ME.MinkowskiConvolution(1, 2, kernel_size=3, stride=1, bias=False, dimension=2)
    kernel_volume = conv.kernel.shape[0]
    assert kernel_volume == 9
    with torch.no_grad():
        conv.kernel.zero_()
        conv.kernel[:, 0, 0] = 1.0  # channel 0: sum over the 3x3 neighbourhood
        conv.kernel[kernel_volume // 2, 0, 1] = 10.0  # channel 1: 10 x the centre only
    y = conv(x)
    assert torch.equal(y.C, x.C)  # stride 1 keeps the active sites
    out = {tuple(c[1:].tolist()): f.tolist() for c, f in zip(y.C, y.F)}
    # (0,0) sees 1,2; (1,0) sees 1,2,4; (2,0) sees 2,4; (0,2) sees only itself.
    assert out == {(0, 0): [3.0, 10.0], (1, 0): [7.0, 20.0], (2, 0): [6.0, 40.0], (0, 2): [8.0, 80.0]}

    y.F.sum().backward()
    # d/dx_i = (number of outputs in its neighbourhood) + 10 from the centre tap.
    assert feats.grad.flatten().tolist() == [12.0, 13.0, 12.0, 11.0]
    # The centre tap of channel 1 sees every input once: 1 + 2 + 4 + 8.
    assert conv.kernel.grad[kernel_volume // 2, 0, 1].item() == 15.0


def test_strided_convolution_coarsens_coordinates():
    x, _ = _tiny_input()
    conv = ME.MinkowskiConvolution(1, 1, kernel_size=2, stride=2, bias=False, dimension=2)
    with torch.no_grad():
        conv.kernel.fill_(1.0)
    y = conv(x)
    out = {tuple(c[1:].tolist()): f.item() for c, f in zip(y.C, y.F)}
    # 2x2 cells anchored at even coordinates: {(0,0),(1,0)} -> 3, {(2,0)} -> 4, {(0,2)} -> 8.
    assert out == {(0, 0): 3.0, (2, 0): 4.0, (0, 2): 8.0}
