"""The zoo's network: a small nnU-Net-style 3D U-Net (MONAI's DynUNet), one output channel per region.

``SmallUNet(in_channels=1, out_channels=3, filters=[4, 8, 16])`` has 21,275 parameters: two 3x3x3
conv + instance norm + leaky ReLU blocks per level, stride-2 downsampling, transposed-conv
upsampling, and a 1x1x1 output conv whose row r is the head of region r. Input [B, C, X, Y, Z]
with sides divisible by ``2 ** (len(filters) - 1)``; output logits [B, R, X, Y, Z].
"""

from __future__ import annotations

from monai.networks.nets import DynUNet


def SmallUNet(in_channels: int, out_channels: int, filters: list[int] = (4, 8, 16)) -> DynUNet:  # noqa: N802
    levels = len(filters)
    net = DynUNet(3, in_channels, out_channels, kernel_size=[3] * levels, strides=[1] + [2] * (levels - 1),
                  upsample_kernel_size=[2] * (levels - 1), filters=list(filters), norm_name="instance")
    net.divisor = 2 ** (levels - 1)
    return net
