"""A ResNet in one screen (He et al. 2016, basic blocks): the convolutional workload of tests and benchmarks.

``resnet18()`` has ResNet-18's shape (a 7x7/2 stem, 3x3 max pool, four stages of two basic blocks of 64, 128,
256, 512 channels, 1x1/2 projection shortcuts, global average pooling, a 1000-way classifier): 11.7 M
parameters, 1.8 GMAC per 3x224x224 image. ``resnet_small()`` is the same structure at a size tests can run.
torchvision is not needed (it does not import in the pinned environment).
"""

from __future__ import annotations

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """conv3x3(stride) - BN - ReLU - conv3x3 - BN, plus the input (1x1/stride projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    """x (B, 3, H, W) -> logits (B, classes). ``widths``: channels of each stage (each after the first halves the
    resolution); ``blocks``: basic blocks per stage; ``stem``: "imagenet" (7x7/2 conv and 3x3/2 max pool) or
    "small" (one 3x3 conv)."""

    def __init__(
        self,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        classes: int = 1000,
        stem: str = "imagenet",
    ) -> None:
        super().__init__()
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
        elif stem == "small":
            conv = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
            self.stem = nn.Sequential(conv, nn.BatchNorm2d(widths[0]), nn.ReLU())
        else:
            raise ValueError(f"stem must be 'imagenet' or 'small' (got {stem!r})")
        layers, c_in = [], widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            for b in range(count):
                layers.append(BasicBlock(c_in, width, 2 if stage > 0 and b == 0 else 1))
                c_in = width
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.stages(self.stem(x))).flatten(1))


def resnet18(classes: int = 1000) -> ResNet:
    """ResNet-18's shape (11.7 M parameters)."""
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), classes, "imagenet")


def resnet_small(classes: int = 10) -> ResNet:
    """The same structure, narrow and shallow: (16, 32, 64) channels, one block per stage, a 3x3 stem."""
    return ResNet((16, 32, 64), (1, 1, 1), classes, "small")
