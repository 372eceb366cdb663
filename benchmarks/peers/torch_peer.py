"""PyTorch as a benchmark peer: torchvision's models, or the same architectures in plain PyTorch.

The same classifier as ours: the backbones' feature maps concatenated, global
average pooling, linear, dropout 0.5, linear. Run in PyTorch's fastest
documented configuration: channels_last, torch.compile, Adam; on a GPU,
TF32 for float32 and autocast for bfloat16. Usage: see `common.parse_arguments`.
"""

import common


def feature_extractors(arguments, nn):
  """Each backbone without its head, from torchvision where it imports."""
  try:
    import torchvision  # pylint: disable=import-outside-toplevel
    builders = {'resnet50': lambda: nn.Sequential(
                    *list(torchvision.models.resnet50().children())[:-2]),
                'efficientnetb0': lambda: torchvision.models.efficientnet_b0().features}
    source = f'torchvision {torchvision.__version__}'
  except (ImportError, RuntimeError):  # RuntimeError: built for another torch.
    import torch_models  # pylint: disable=import-outside-toplevel
    builders = {'resnet50': torch_models.resnet50_features,
                'efficientnetb0': torch_models.efficientnet_b0_features}
    source = 'plain PyTorch (torchvision not importable)'
  return [builders[name]() for name in arguments.backbones], source


def main():
  arguments = common.parse_arguments()
  common.exit_unless_installed('torch')
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel

  class Classifier(nn.Module):

    def __init__(self, backbones, widths):
      super().__init__()
      self.backbones = nn.ModuleList(backbones)
      self.head = nn.Sequential(
          nn.Flatten(), nn.Linear(sum(widths), arguments.hidden_units), nn.ReLU(inplace=True),
          nn.Dropout(0.5), nn.Linear(arguments.hidden_units, 2))

    def forward(self, x):
      features = torch.cat([backbone(x) for backbone in self.backbones], dim=1)
      return self.head(features.mean(dim=(2, 3), keepdim=True))

  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.set_float32_matmul_precision('high')
  backbones, source = feature_extractors(arguments, nn)
  widths = [{'resnet50': 2048, 'efficientnetb0': 1280}[name] for name in arguments.backbones]
  model = Classifier(backbones, widths).to(device, memory_format=torch.channels_last)
  compiled = torch.compile(model)
  generator = torch.Generator().manual_seed(0)
  images = (torch.rand((arguments.batch_size, 3, arguments.image_size, arguments.image_size),
                       generator=generator) * 255).to(device, memory_format=torch.channels_last)
  labels = torch.randint(0, 2, (arguments.batch_size,), generator=generator).to(device)
  autocast = torch.autocast(device, dtype=torch.bfloat16,
                            enabled=arguments.dtype == 'bfloat16')
  synchronize = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  if arguments.mode == 'train':
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), arguments.learning_rate,
                                 fused=device == 'cuda')

    def step():
      with autocast:
        loss = nn.functional.cross_entropy(compiled(images), labels)
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
      synchronize()
  else:
    model.eval()

    def step():
      with torch.inference_mode(), autocast:
        torch.softmax(compiled(images).float(), dim=-1)
      synchronize()

  def peak_memory():
    if device == 'cuda':
      return torch.cuda.max_memory_allocated(), 'device'
    return common.process_peak_memory()

  common.measure(step, arguments, peak_memory,
                 f'PyTorch {torch.__version__} with {source}, channels_last, torch.compile'
                 + (', bfloat16 autocast' if arguments.dtype == 'bfloat16' else ''))


if __name__ == '__main__':
  main()
