import io
import logging
import os
import shutil
import sys
import threading
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from hybridcovid.training import checkpoints, train


class _Classifier(nn.Module):
  """BatchNorm statistics and parameters, as the real classifier has."""

  @nn.compact
  def __call__(self, images, train=False):
    x = nn.BatchNorm(use_running_average=not train)(images.astype(jnp.float32))
    return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))


def _state(seed):
  model = _Classifier()
  variables = model.init(jax.random.key(seed), jnp.full((1, 2, 2, 3), seed, jnp.uint8))
  variables['batch_stats'] = jax.tree.map(lambda x: x + seed, variables['batch_stats'])
  state = train.create_train_state(model, optax.adam(0.1), variables)
  grads = jax.tree.map(jnp.ones_like, state.params)
  return state.apply_gradients(grads=grads)  # Non-trivial Adam moments.


def _variables(seed_or_state):
  """What inference restores: the parameters and BatchNorm statistics."""
  state = _state(seed_or_state) if isinstance(seed_or_state, int) else seed_or_state
  return {'params': state.params, 'batch_stats': state.batch_stats}


def _assert_same(a, b):
  # Leaf by leaf: the static apply_fn differs between two model instances.
  assert len(jax.tree.leaves(a)) == len(jax.tree.leaves(b))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def _saved_tree(checkpoint):
  """The top-level names of the state saved in `checkpoint`, from its metadata."""
  return ocp.StandardCheckpointer().metadata(checkpoint / 'state').item_metadata.tree


def test_latest_are_kept_for_resume_and_the_best_apart(tmp_path):
  run = checkpoints.RunCheckpoints(str(tmp_path), keep=2)
  metrics = [0.5, 0.9, 0.7, 0.6, 0.8]
  states = [_state(epoch) for epoch in range(5)]
  # Epochs count from 1: checkpoints/N holds the state after epoch N.
  best_so_far = []
  for epoch, metric in enumerate(metrics, start=1):
    run.save(epoch, states[epoch - 1], {'seed': 7}, metric)
    best_so_far.append(run.best_metric)
  run.wait()
  assert best_so_far == [0.5, 0.9, 0.9, 0.9, 0.9]
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['4', '5']
  latest, record = run.restore_latest(_state(99))
  _assert_same(latest, states[4])
  assert record == {'seed': 7, 'epoch': 5, 'validation_metric': 0.8}
  best, record = run.restore_best(_variables(99))
  _assert_same(best, _variables(states[1]))
  assert record['epoch'] == 2
  assert os.listdir(tmp_path / 'best') == ['2']
  # The best copy holds what inference reads, not the optimiser's moments.
  assert set(_saved_tree(tmp_path / 'best' / '2')) == {'params', 'batch_stats'}
  assert 'opt_state' in _saved_tree(tmp_path / 'checkpoints' / '5')
  run.close()
  reopened = checkpoints.RunCheckpoints(str(tmp_path), keep=2)
  assert reopened.best_metric == 0.9
  reopened.save(6, states[0], {}, 0.85)
  reopened.wait()
  assert reopened.best_metric == 0.9 and os.listdir(tmp_path / 'best') == ['2']
  reopened.close()


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
  run = checkpoints.RunCheckpoints(str(tmp_path), keep=3)
  for epoch in (1, 2):
    run.save(epoch, _state(epoch), {}, None)
  run.wait()
  for root, _, files in os.walk(tmp_path / 'checkpoints' / '2'):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')
  state, record = run.restore_latest(_state(99))
  _assert_same(state, _state(1))
  assert record['epoch'] == 1
  # The damaged one is gone, so the retrained epoch can be saved again.
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1']
  run.save(2, _state(2), {}, None)
  run.wait()
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1', '2']
  run.close()


def test_nothing_to_restore(tmp_path):
  run = checkpoints.RunCheckpoints(str(tmp_path))
  assert run.restore_latest(_state(0)) is None
  with pytest.raises(checkpoints.CheckpointError, match='holds no checkpoint: train first'):
    run.restore_best(_variables(0))
  run.close()


def test_a_best_save_lost_in_a_crash_is_recovered_from_the_latest(tmp_path):
  run = checkpoints.RunCheckpoints(str(tmp_path), keep=3)
  states = [_state(epoch) for epoch in range(1, 4)]
  for epoch, metric in enumerate([0.5, 0.9, 0.7], start=1):
    run.save(epoch, states[epoch - 1], {}, metric)
  run.wait()
  run.close()
  # As if the process died after epoch 2's latest save but before its best save.
  shutil.rmtree(tmp_path / 'best' / '2')
  reopened = checkpoints.RunCheckpoints(str(tmp_path), keep=3)
  assert reopened.best_metric is None  # Epoch 1's best copy went when epoch 2's came.
  reopened.recover_best(_state(99))
  assert reopened.best_metric == 0.9
  best, record = reopened.restore_best(_variables(99))
  _assert_same(best, _variables(states[1]))
  assert record['epoch'] == 2
  reopened.close()


def test_inference_restores_the_best_weights_without_an_optimiser(tmp_path, caplog):
  run = _saved(tmp_path, [0.5, 0.9, 0.7])
  model = _Classifier()
  caplog.clear()
  with caplog.at_level(logging.INFO):
    state, record = run.restore_best_for_inference(model, 2, train.create_mesh())
  run.close()
  # Nothing for the console of a demo or a prediction.
  assert not [logged.getMessage() for logged in caplog.records
              if logged.levelno >= logging.WARNING]
  assert isinstance(state, train.InferenceState) and record['epoch'] == 2
  saved = _state(2)
  _assert_same(_variables(state), _variables(saved))
  images = jnp.arange(2 * 2 * 2 * 3, dtype=jnp.uint8).reshape(2, 2, 2, 3)
  np.testing.assert_array_equal(
      state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats}, images),
      saved.apply_fn({'params': saved.params, 'batch_stats': saved.batch_stats}, images))


def _damage(directory):
  """Flips bytes in the middle of every file of a checkpoint's state."""
  for root, _, files in os.walk(directory / 'state'):
    for name in files:
      with open(os.path.join(root, name), 'r+b') as f:
        data = bytearray(f.read())
        middle = len(data) // 2
        data[middle:middle + 16] = bytes(byte ^ 0xff for byte in data[middle:middle + 16])
        f.seek(0)
        f.write(data)


def _saved(tmp_path, metrics, keep=3):
  run = checkpoints.RunCheckpoints(str(tmp_path), keep=keep)
  for epoch, metric in enumerate(metrics, start=1):
    run.save(epoch, _state(epoch), {}, metric)
  run.wait()
  return run


def test_a_damaged_best_checkpoint_names_itself_and_the_copy_that_replaces_it(tmp_path):
  run = _saved(tmp_path, [0.5, 0.9])
  _damage(tmp_path / 'best' / '2')
  with pytest.raises(checkpoints.CheckpointError) as raised:
    run.restore_best(_variables(99))
  best, latest = tmp_path / 'best' / '2', tmp_path / 'checkpoints'
  assert str(raised.value).startswith(
      f'The selected checkpoint {best} (epoch 2) cannot be restored (Orbax says: ')
  assert str(raised.value).endswith(
      f'{latest} holds epochs 1, 2, the selected one among them: replace the damaged copy '
      f'with it (rm -r {best} && cp -r {latest}/2 {best}), or train again with a new '
      '--workdir.')
  assert '\n' not in str(raised.value) and 'tensorstore_spec' not in str(raised.value)
  run.close()
  # The advice works.
  shutil.rmtree(best)
  shutil.copytree(latest / '2', best)
  reopened = checkpoints.RunCheckpoints(str(tmp_path))
  variables, record = reopened.restore_best(_variables(99))
  _assert_same(variables, _variables(2))
  assert record['epoch'] == 2
  reopened.close()


def test_a_damaged_best_checkpoint_no_longer_among_the_latest_names_the_newest(tmp_path):
  run = _saved(tmp_path, [0.9, 0.5, 0.6], keep=2)
  _damage(tmp_path / 'best' / '1')
  with pytest.raises(checkpoints.CheckpointError) as raised:
    run.restore_best(_variables(99))
  latest = tmp_path / 'checkpoints'
  assert str(raised.value).endswith(
      f'{latest} holds epochs 2, 3, not the selected one: put one in its place, e.g. the '
      f'newest (rm -r {tmp_path}/best/1 && cp -r {latest}/3 {tmp_path}/best/3), knowing '
      'that validation did not select it and the report is not about it, or train again '
      'with a new --workdir.')
  run.close()
  shutil.rmtree(latest)
  reopened = checkpoints.RunCheckpoints(str(tmp_path))
  with pytest.raises(checkpoints.CheckpointError, match=(
      f'{latest} holds no other checkpoint: train again with a new --workdir.$')):
    reopened.restore_best(_variables(99))
  reopened.close()


def test_reads_left_pending_by_a_failed_restore_report_nothing(tmp_path, monkeypatch, caplog):
  run = _saved(tmp_path, [0.9])
  _damage(tmp_path / 'best' / '1')
  unraisables, thread_failures = [], []
  monkeypatch.setattr(sys, 'unraisablehook', unraisables.append)
  monkeypatch.setattr(threading, 'excepthook', thread_failures.append)
  asyncio_logger = logging.getLogger('asyncio')
  monkeypatch.setattr(asyncio_logger, 'filters', [])
  written = io.StringIO()
  monkeypatch.setattr(sys, 'stderr', written)
  with pytest.raises(checkpoints.CheckpointError):
    run.restore_best(_variables(99))
  run.close()
  # Other threads (TensorStore's) can no longer write to stderr; the main thread can.
  other_thread = threading.Thread(target=lambda: sys.stderr.write('Traceback from a read\n'))
  other_thread.start()
  other_thread.join()
  sys.stderr.write('error: the one line\n')
  assert written.getvalue() == 'error: the one line\n'

  def failure(error):
    return types.SimpleNamespace(exc_type=type(error), exc_value=error, exc_traceback=None,
                                 err_msg=None, object=None, thread=None)

  closed, other = RuntimeError('Event loop is closed'), RuntimeError('something else')
  for error in (closed, other):
    sys.unraisablehook(failure(error))
    threading.excepthook(failure(error))
    asyncio_logger.error('Task exception was never retrieved',
                         exc_info=(type(error), error, None))
  assert [report.exc_value for report in unraisables] == [other]
  assert [report.exc_value for report in thread_failures] == [other]
  assert [record.exc_info[1] for record in caplog.records
          if record.name == 'asyncio'] == [other]
