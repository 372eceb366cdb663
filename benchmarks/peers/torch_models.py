"""ResNet50 and EfficientNetB0 in plain PyTorch, layer for layer as torchvision builds them.

Used by the PyTorch peer where torchvision is not installed (or not
importable beside the installed torch).
"""

import torch
from torch import nn


def conv_bn(in_channels, out_channels, kernel_size, stride=1, groups=1, eps=1e-5):
  return [nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                    groups=groups, bias=False),
          nn.BatchNorm2d(out_channels, eps=eps)]


class Bottleneck(nn.Module):
  """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution."""

  def __init__(self, in_channels, filters, stride):
    super().__init__()
    self.body = nn.Sequential(
        *conv_bn(in_channels, filters, 1), nn.ReLU(inplace=True),
        *conv_bn(filters, filters, 3, stride), nn.ReLU(inplace=True),
        *conv_bn(filters, 4 * filters, 1))
    self.shortcut = (nn.Sequential(*conv_bn(in_channels, 4 * filters, 1, stride))
                     if stride != 1 or in_channels != 4 * filters else nn.Identity())

  def forward(self, x):
    return torch.relu(self.body(x) + self.shortcut(x))


def resnet50_features() -> nn.Sequential:
  layers = [*conv_bn(3, 64, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
  channels = 64
  for filters, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
    for block in range(blocks):
      layers.append(Bottleneck(channels, filters, stride if block == 0 else 1))
      channels = 4 * filters
  return nn.Sequential(*layers)


class StochasticDepth(nn.Module):
  """Drops the whole residual branch per example in training."""

  def __init__(self, rate):
    super().__init__()
    self.rate = rate

  def forward(self, x):
    if not self.training or self.rate == 0:
      return x
    keep = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device)
    return x * keep.bernoulli_(1 - self.rate) / (1 - self.rate)


class MBConv(nn.Module):
  """Inverted residual block with squeeze-and-excitation."""

  def __init__(self, in_channels, out_channels, kernel_size, stride, expand_ratio, drop_rate):
    super().__init__()
    hidden = in_channels * expand_ratio
    squeeze = max(1, in_channels // 4)
    layers = []
    if expand_ratio != 1:
      layers += [*conv_bn(in_channels, hidden, 1, eps=1e-3), nn.SiLU(inplace=True)]
    layers += [*conv_bn(hidden, hidden, kernel_size, stride, groups=hidden, eps=1e-3),
               nn.SiLU(inplace=True)]
    self.expand_depthwise = nn.Sequential(*layers)
    self.squeeze_excite = nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden, squeeze, 1), nn.SiLU(inplace=True),
        nn.Conv2d(squeeze, hidden, 1), nn.Sigmoid())
    self.project = nn.Sequential(*conv_bn(hidden, out_channels, 1, eps=1e-3))
    self.residual = stride == 1 and in_channels == out_channels
    self.drop = StochasticDepth(drop_rate)

  def forward(self, inputs):
    x = self.expand_depthwise(inputs)
    x = self.project(x * self.squeeze_excite(x))
    return inputs + self.drop(x) if self.residual else x


def efficientnet_b0_features() -> nn.Sequential:
  # (expand ratio, kernel, stride, in, out, repeats), as torchvision's B0.
  stages = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
            (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
            (6, 3, 1, 192, 320, 1))
  total = sum(stage[-1] for stage in stages)
  layers = [*conv_bn(3, 32, 3, 2, eps=1e-3), nn.SiLU(inplace=True)]
  index = 0
  for expand, kernel, stride, in_channels, out_channels, repeats in stages:
    for repeat in range(repeats):
      layers.append(MBConv(in_channels if repeat == 0 else out_channels, out_channels,
                           kernel, stride if repeat == 0 else 1, expand,
                           0.2 * index / total))
      index += 1
  layers += [*conv_bn(320, 1280, 1, eps=1e-3), nn.SiLU(inplace=True)]
  return nn.Sequential(*layers)
