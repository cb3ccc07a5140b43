"""The whole evaluation of a trained model: numbers into results.json, figures, report.md.

Each evaluator takes the codes computed once (eval/codes.py) and returns (numbers for
results.json, arrays for the figures and embeddings.npz); the figures are drawn after all of them.
"""

import json
import os
import time

import jax
import numpy as np
from absl import logging

from ae import checkpoint as ckpt
from ae import parallel, runtime, workdir as workdir_lib
from ae.workdir import write_whole, writing
from ae.config_check import validate_config
from ae.data import load_dataset
from ae.metrics_log import read_records
from ae.model import create_model
from eval import (codes, figures, latent_views, latents, projection, projector, query_variants,
                  reconstruction, refine, report, retrieval)

EVALUATORS = (reconstruction.evaluate, latents.evaluate, refine.evaluate, retrieval.evaluate,
              query_variants.evaluate, projection.evaluate, latent_views.evaluate)


def evaluate(config, workdir, params, mesh, ds):
  """Computes every number and figure of a run; process 0 writes them. Returns the results dict."""
  t0 = time.time()
  model = create_model(config.model, parallel.platform(mesh))
  inputs = codes.encode(config, model, params, mesh, ds)
  results = {'num_train': len(ds.train_images), 'num_test': len(ds.test_images),
             'data_source': ds.source}
  arrays = {}
  for evaluator in EVALUATORS:
    numbers, more = evaluator(inputs)
    results.update(numbers)
    arrays.update(more)
  results['train'] = training_summary(workdir)
  parent = parent_results(config.train.init_from)
  if parent:
    results['parent'] = parent
  results['eval_time_s'] = time.time() - t0
  if jax.process_index() != 0:
    return results
  results['figures'] = figures.draw(workdir, inputs, results, arrays)
  results['projector_points'] = projector.export(os.path.join(workdir, 'tensorboard'),
                                                 inputs.test['z'], ds.test_labels, ds.class_names,
                                                 ds.test_images)
  refined = {'test_z_refined': arrays['test_z_refined']} if 'test_z_refined' in arrays else {}
  embeddings = os.path.join(workdir, 'embeddings.npz')
  with writing(embeddings):
    np.savez_compressed(embeddings, train_z=inputs.train_z, train_labels=ds.train_labels,
                        test_z=inputs.test['z'], test_labels=ds.test_labels, **refined)
  _write_json(os.path.join(workdir, 'results.json'), results)
  report.write_report(workdir, config, results)
  refined_note = f", refined codes {results['refined']['test_mse']:.5f}" if refined else ''
  logging.info('eval: test MSE %.5f (PSNR %.2f dB)%s; P@10 %s; numbers in %.1f s, figures and '
               'files in %.1f s, written to %s', results['test']['mse'], results['test']['psnr'],
               refined_note,
               ', '.join(f"{m} {r['P@10']:.3f}" for m, r in results['retrieval'].items()),
               results['eval_time_s'], time.time() - t0 - results['eval_time_s'], workdir)
  return results


def training_summary(workdir):
  """The last epoch's step and test MSE and the epochs' total time, from metrics.jsonl."""
  epochs = [r for r in read_records(os.path.join(workdir, 'metrics.jsonl')) if 'test/mse' in r]
  if not epochs:
    return {}
  return {'epochs': epochs[-1]['epoch'], 'steps': epochs[-1]['step'],
          'train_time_s': float(sum(r['epoch_time_s'] for r in epochs)),
          'final_test_mse': epochs[-1]['test/mse']}


def parent_results(init_from):
  """The numbers of the run that train.init_from points at, if it has a results.json."""
  if not init_from:
    return None
  d = os.path.abspath(init_from)
  for cand in (d, os.path.dirname(d)):
    path = os.path.join(cand, 'results.json')
    if os.path.isfile(path):
      with open(path) as f:
        r = json.load(f)
      return {'workdir': cand, 'test': r.get('test'), 'denoising': r.get('denoising'),
              'retrieval': r.get('retrieval'), 'noisy_queries': r.get('noisy_queries')}
  return None


def _write_json(path, obj):
  write_whole(path, json.dumps(obj, indent=2))


def evaluate_workdir(config, workdir):
  """--mode=eval: evaluates the latest checkpoint in workdir."""
  validate_config(config)
  with workdir_lib.hold(workdir), runtime.stop_at_once():
    mesh = parallel.make_mesh()
    params, step = ckpt.load_params(config.model, workdir, mesh)
    logging.info('eval: checkpoint step %d from %s', step, workdir)
    return evaluate(config, workdir, params, mesh, load_dataset(config.data, config.seed))
