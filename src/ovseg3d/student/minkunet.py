"""MinkUNet18A on MinkowskiEngine: the sparse U-Net OpenScene distils into.

A ResNet-18-style encoder (two BasicBlocks per stage, four stride-2 stages) and a decoder of
transposed convolutions with skip connections, the "A" channel plan: encoder 32-64-128-256,
decoder 128-128-96-96, stem 32 (5^3 kernel), and a 1x1 head to the feature dimension. The stem's
kernel is a parameter: at 10 cm voxels on the CPU a 3^3 stem trains as well a fifth faster a step.
"""

from __future__ import annotations

import torch.nn as nn

from ovseg3d.student.minkowski import ME

PLANES_18A = (32, 64, 128, 256, 128, 128, 96, 96)
LAYERS_18 = (2, 2, 2, 2, 2, 2, 2, 2)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, transpose: bool = False, D: int = 3):
    conv = ME.MinkowskiConvolutionTranspose if transpose else ME.MinkowskiConvolution
    return nn.Sequential(conv(cin, cout, kernel_size=kernel, stride=stride, dimension=D),
                         ME.MinkowskiBatchNorm(cout), ME.MinkowskiReLU(inplace=True))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, D: int = 3):
        super().__init__()
        self.conv1 = ME.MinkowskiConvolution(cin, cout, kernel_size=3, dimension=D)
        self.bn1 = ME.MinkowskiBatchNorm(cout)
        self.conv2 = ME.MinkowskiConvolution(cout, cout, kernel_size=3, dimension=D)
        self.bn2 = ME.MinkowskiBatchNorm(cout)
        self.relu = ME.MinkowskiReLU(inplace=True)
        self.down = None
        if cin != cout:
            self.down = nn.Sequential(ME.MinkowskiConvolution(cin, cout, kernel_size=1, dimension=D),
                                      ME.MinkowskiBatchNorm(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.down is None else self.down(x)))


def _stage(cin: int, cout: int, blocks: int, D: int = 3) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, D), *[BasicBlock(cout, cout, D) for _ in range(blocks - 1)])


class MinkUNet18A(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, D: int = 3, planes=PLANES_18A, layers=LAYERS_18,
                 init_dim: int = 32, stem_kernel: int = 5):
        super().__init__()
        p = planes
        self.stem = _conv_bn_relu(in_channels, init_dim, kernel=stem_kernel, D=D)
        self.down1 = _conv_bn_relu(init_dim, init_dim, kernel=2, stride=2, D=D)
        self.enc1 = _stage(init_dim, p[0], layers[0], D)
        self.down2 = _conv_bn_relu(p[0], p[0], kernel=2, stride=2, D=D)
        self.enc2 = _stage(p[0], p[1], layers[1], D)
        self.down3 = _conv_bn_relu(p[1], p[1], kernel=2, stride=2, D=D)
        self.enc3 = _stage(p[1], p[2], layers[2], D)
        self.down4 = _conv_bn_relu(p[2], p[2], kernel=2, stride=2, D=D)
        self.enc4 = _stage(p[2], p[3], layers[3], D)
        self.up4 = _conv_bn_relu(p[3], p[4], kernel=2, stride=2, transpose=True, D=D)
        self.dec4 = _stage(p[4] + p[2], p[4], layers[4], D)
        self.up3 = _conv_bn_relu(p[4], p[5], kernel=2, stride=2, transpose=True, D=D)
        self.dec3 = _stage(p[5] + p[1], p[5], layers[5], D)
        self.up2 = _conv_bn_relu(p[5], p[6], kernel=2, stride=2, transpose=True, D=D)
        self.dec2 = _stage(p[6] + p[0], p[6], layers[6], D)
        self.up1 = _conv_bn_relu(p[6], p[7], kernel=2, stride=2, transpose=True, D=D)
        self.dec1 = _stage(p[7] + init_dim, p[7], layers[7], D)
        self.head = ME.MinkowskiConvolution(p[7], out_channels, kernel_size=1, bias=True, dimension=D)
        self.backbone_dim = p[7]
        for m in self.modules():
            if isinstance(m, ME.MinkowskiConvolution | ME.MinkowskiConvolutionTranspose):
                ME.utils.kaiming_normal_(m.kernel, mode="fan_out", nonlinearity="relu")

    def backbone(self, x):
        s1 = self.stem(x)
        e1 = self.enc1(self.down1(s1))
        e2 = self.enc2(self.down2(e1))
        e3 = self.enc3(self.down3(e2))
        e4 = self.enc4(self.down4(e3))
        d4 = self.dec4(ME.cat(self.up4(e4), e3))
        d3 = self.dec3(ME.cat(self.up3(d4), e2))
        d2 = self.dec2(ME.cat(self.up2(d3), e1))
        return self.dec1(ME.cat(self.up1(d2), s1))

    def forward(self, x):
        return self.head(self.backbone(x))
