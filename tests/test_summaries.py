import math

from tensorboard.backend.event_processing import event_accumulator

from hybridcovid.training import summaries


def test_scalars_read_back_with_their_steps(tmp_path):
  writer = summaries.Summaries(str(tmp_path))
  writer.scalars(1, {'train/loss': 0.75, 'train/accuracy': 0.5})
  writer.scalars(2, {'train/loss': 0.25})
  writer.scalars(2, {'validation/auc': float('nan')})
  writer.close()
  accumulator = event_accumulator.EventAccumulator(str(tmp_path))
  accumulator.Reload()
  assert sorted(accumulator.Tags()['scalars']) == ['train/accuracy', 'train/loss',
                                                   'validation/auc']
  loss = accumulator.Scalars('train/loss')
  assert [(event.step, event.value) for event in loss] == [(1, 0.75), (2, 0.25)]
  assert [(event.step, event.value) for event in accumulator.Scalars('train/accuracy')] == [
      (1, 0.5)]
  assert math.isnan(accumulator.Scalars('validation/auc')[0].value)

