"""The package's import graph, read from the source: TensorFlow stays in `data/`, imports
point down the pipeline (data -> models -> training -> evaluation -> report, the modes
on top), and no module imports itself in a circle."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'hybridcovid')
TENSORFLOW = ('tensorflow', 'tensorflow_datasets')
# The pipeline's stages, lowest first; a module imports only from its own stage or lower.
# Every other module directly in hybridcovid/ is a mode or the main job, on top.
STAGES = ('hybridcovid.errors', 'hybridcovid.hashing', 'hybridcovid.classes', 'hybridcovid.data',
          'hybridcovid.models', 'hybridcovid.convert', 'hybridcovid.training',
          'hybridcovid.evaluation', 'hybridcovid.report', 'hybridcovid.benchmark')


def _modules() -> dict[str, str]:
  """{dotted name: path} of every module of the package."""
  found = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        parts = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].split(os.sep)
        if parts[-1] == '__init__':
          parts.pop()
        found['.'.join(parts)] = os.path.join(folder, name)
  return found


MODULES = _modules()


def _imports(path: str) -> set[str]:
  """Every module `path` imports, at the top or inside a function."""
  names = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      for alias in node.names:
        full = f'{node.module}.{alias.name}'
        names.add(full if full in MODULES else node.module)
  return names


GRAPH = {module: {name for name in _imports(path) if name in MODULES} - {module}
         for module, path in MODULES.items()}


def _stage(module: str) -> int:
  for rank, stage in enumerate(STAGES):
    if module == stage or module.startswith(stage + '.'):
      return rank
  return len(STAGES)


@pytest.mark.parametrize('module', sorted(MODULES))
def test_tensorflow_is_imported_under_data_only(module):
  tensorflow = {name for name in _imports(MODULES[module])
                if name.split('.')[0] in TENSORFLOW}
  assert not tensorflow or module.startswith('hybridcovid.data.'), tensorflow


@pytest.mark.parametrize('module', sorted(MODULES))
def test_imports_point_down_the_pipeline(module):
  upward = {name for name in GRAPH[module] if _stage(name) > _stage(module)}
  assert not upward, f'{module} imports {sorted(upward)} from a later stage'


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """A cycle of `graph` as a path that ends where it starts, or None."""
  done, path = set(), []

  def visit(node):
    if node in path:
      return path[path.index(node):] + [node]
    if node in done:
      return None
    path.append(node)
    for name in sorted(graph[node]):
      cycle = visit(name)
      if cycle:
        return cycle
    path.pop()
    done.add(node)
    return None

  for node in sorted(graph):
    cycle = visit(node)
    if cycle:
      return cycle
  return None


def _package(module: str) -> str:
  """The subpackage (hybridcovid.data, ...) a module is in; modules directly in
  hybridcovid/ stand for themselves."""
  return '.'.join(module.split('.')[:2])


def test_no_import_cycle_between_modules():
  assert _find_cycle(GRAPH) is None, ' -> '.join(_find_cycle(GRAPH))


def test_no_import_cycle_between_packages():
  packages = {}
  for module, imported in GRAPH.items():
    packages.setdefault(_package(module), set()).update(
        _package(name) for name in imported if _package(name) != _package(module))
  assert _find_cycle(packages) is None, ' -> '.join(_find_cycle(packages))


def test_the_graph_is_read():
  assert 'hybridcovid.training.train' in GRAPH['hybridcovid.experiment']
  assert 'hybridcovid.data.loading' in GRAPH['hybridcovid.runs']
