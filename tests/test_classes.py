import ml_collections
import pytest

from configs import default
from hybridcovid import classes, errors


@pytest.mark.parametrize('value, expected', [
    ('normal,covid', ('normal', 'covid')),
    ('covid, normal', ('normal', 'covid')),
    ('COVID,Pneumonia,normal', ('normal', 'covid', 'pneumonia')),
])
def test_either_task_in_any_order_keeps_covid_at_label_1(value, expected):
  names = classes.parse(value)
  assert names == expected
  assert names[classes.COVID] == 'covid'


@pytest.mark.parametrize('value', ['covid', 'normal,pneumonia', 'normal,covid,opacity', ''])
def test_other_values_are_refused_in_one_line_naming_the_choices(value):
  with pytest.raises(errors.UserError) as raised:
    classes.parse(value)
  message = str(raised.value)
  assert message.startswith(f'--config.data.classes={value}: choose normal,covid or '
                            'normal,covid,pneumonia') and '\n' not in message


def test_the_default_is_the_papers_task_and_older_configs_have_it_too():
  assert classes.of_config(default.get_config().data) == classes.BINARY
  assert classes.of_config(ml_collections.ConfigDict({'image_size': 224})) == classes.BINARY


def test_the_rest_is_normal_for_two_classes_and_not_covid_for_three():
  assert classes.negative_name(classes.BINARY) == 'normal'
  assert classes.negative_name(classes.NAMES) == 'not COVID'
