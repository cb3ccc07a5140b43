import glob
import importlib
import os

import pytest

from ae.config_check import validate_config
from conftest import ROOT

VARIANTS = ('denoise', 'test', 'conv', 'improved', 'improved_denoise')


@pytest.mark.parametrize('name', ('default',) + VARIANTS)
def test_every_config_is_valid_and_documents_its_command(name):
  module = importlib.import_module(f'configs.{name}')
  config = module.get_config()
  validate_config(config, num_devices=1)
  assert f'configs/{name}.py' in module.__doc__


def test_variants_only_override_declared_fields():
  from configs import default
  declared = default.get_config()
  for name in VARIANTS:
    config = importlib.import_module(f'configs.{name}').get_config()
    assert set(config.keys()) == set(declared.keys())
    for group in ('data', 'model', 'train', 'eval'):
      assert set(config[group].keys()) == set(declared[group].keys()), (name, group)


def test_every_config_file_is_tested():
  names = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))}
  assert names - {'__init__'} == {'default', *VARIANTS}
