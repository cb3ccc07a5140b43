"""Wall time of one full training epoch over 50,000 images and of the whole evaluation.

    python -m benchmarks.epoch_time [--data_dir=/path/to/cifar10]

Without --data_dir (and without CIFAR10_DIR) it uses synthetic data of CIFAR-10's shape:
50,000 training and 10,000 test images. The epoch time includes compilation of the train step;
the line also gives the steady images/s of the progress records that exclude it.
"""

import json
import os
import tempfile
import time

import jax
from absl import app, flags

from ae import runtime
from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_string('data_dir', '', 'CIFAR-10 binary directory; default $CIFAR10_DIR, else synthetic')
flags.DEFINE_integer('steps_per_jit', 1, 'train steps per jitted call')
flags.DEFINE_bool('eval', True, 'also time the whole evaluation')
flags.DEFINE_integer('umap_points', 5000, 'points in the UMAP projection')
flags.DEFINE_enum('conv_impl', 'auto', ['auto', 'flax'],
                  "the model's convolution form (model.conv_impl)")


def main(argv):
  del argv
  runtime.set_runtime_defaults()  # as main.py: before JAX starts its backends
  common.emit_machine()
  from ae import train
  from ae.metrics_log import read_records
  from configs import default
  from eval import evaluate
  config = default.get_config()
  data_dir = FLAGS.data_dir or os.environ.get('CIFAR10_DIR', '')
  if data_dir:
    config.data.source, config.data.dir = 'dir', data_dir
  else:
    config.data.source = 'synthetic'
    config.data.synthetic_train, config.data.synthetic_test = 50000, 10000
  config.train.num_epochs = 1
  config.train.steps_per_jit = FLAGS.steps_per_jit
  config.train.checkpoint_every_steps = 10 ** 6
  config.eval.umap_points = FLAGS.umap_points
  config.model.conv_impl = FLAGS.conv_impl
  with tempfile.TemporaryDirectory() as workdir:
    t = time.perf_counter()
    state, mesh, ds = train.train(config, workdir)
    train_s = time.perf_counter() - t
    records = read_records(os.path.join(workdir, 'metrics.jsonl'))
    epoch = [r for r in records if 'test/mse' in r][0]
    steady = [r['imgs_per_s'] for r in records if r.get('imgs_per_s')]
    common.emit(bench='epoch', data=config.data.source, images=len(ds.train_images),
                epoch_s=round(epoch['epoch_time_s'], 2), train_call_s=round(train_s, 2),
                steady_imgs_per_s=round(sum(steady) / len(steady), 1) if steady else None,
                test_mse=epoch['test/mse'], backend=jax.default_backend(),
                devices=jax.device_count(), steps_per_jit=FLAGS.steps_per_jit,
                conv_impl=FLAGS.conv_impl)
    if FLAGS.eval:
      t = time.perf_counter()
      results = evaluate.evaluate(config, workdir, state.params, mesh, ds)
      common.emit(bench='eval', data=config.data.source, eval_s=round(time.perf_counter() - t, 2),
                  test_mse=results['test']['mse'],
                  p_at_10={m: r['P@10'] for m, r in results['retrieval'].items()})


if __name__ == '__main__':
  app.run(main)
