"""Checks a config before any data is loaded or any device work starts."""

import jax

from ae.errors import ConfigError

DECODERS = ('dense', 'conv')
METRICS = ('euclidean', 'manhattan', 'cosine')


def _positive_ints(name, values, allow_empty=False):
  values = tuple(values)
  if (not values and not allow_empty) or any(not isinstance(v, int) or v < 1 for v in values):
    kind = 'a tuple' if allow_empty else 'a non-empty tuple'
    return [f'{name} must be {kind} of positive integers, got {values!r}']
  return []


def validate_config(config, num_devices=None):
  """Raises ConfigError naming every invalid field."""
  errors = (_model_errors(config.model)
            + _train_errors(config.train, num_devices or jax.device_count())
            + _data_errors(config.data) + _eval_errors(config.eval))
  if errors:
    raise ConfigError('invalid config:\n  ' + '\n  '.join(errors))


def _model_errors(m):
  errors = []
  if m.latent_dim < 1:
    errors.append(f'model.latent_dim must be at least 1, got {m.latent_dim}')
  if m.decoder not in DECODERS:
    errors.append(f'model.decoder must be one of {DECODERS}, got {m.decoder!r}')
  if m.conv_impl not in ('auto', 'flax'):
    errors.append(f"model.conv_impl must be 'auto' or 'flax', got {m.conv_impl!r}")
  if m.encoder_padding not in ('VALID', 'SAME'):
    errors.append(f"model.encoder_padding must be 'VALID' or 'SAME', got {m.encoder_padding!r}")
  if m.norm not in ('none', 'group'):
    errors.append(f"model.norm must be 'none' or 'group', got {m.norm!r}")
  errors += _positive_ints('model.encoder_features', m.encoder_features)
  errors += _positive_ints('model.decoder_features', m.decoder_features)
  errors += _positive_ints('model.encoder_dense', m.encoder_dense, allow_empty=True)
  if not 0 <= m.encoder_dropout < 1:
    errors.append(f'model.encoder_dropout must be in [0, 1) (0 = off), got {m.encoder_dropout}')
  if m.encoder_padding == 'VALID' and len(m.encoder_features) > 3:
    errors.append('model.encoder_features: with VALID padding at most 3 conv layers fit a 32x32 '
                  f'image, got {len(m.encoder_features)}; use SAME padding or fewer layers')
  if m.decoder == 'conv' and 32 % 2 ** len(m.decoder_features):
    errors.append('model.decoder_features: the conv decoder doubles the size per entry and '
                  f'must reach 32 exactly; {len(m.decoder_features)} entries do not')
  return errors


def _train_errors(t, num_devices):
  errors = []
  if t.batch_size < 1:
    errors.append(f'train.batch_size must be at least 1, got {t.batch_size}')
  elif t.batch_size % num_devices:
    errors.append(f'train.batch_size={t.batch_size} is not divisible by the {num_devices} devices; '
                  f'use a multiple of {num_devices}')
  if t.num_epochs < 1:
    errors.append(f'train.num_epochs must be at least 1, got {t.num_epochs}')
  if not t.learning_rate > 0:
    errors.append(f'train.learning_rate must be positive, got {t.learning_rate}')
  if t.noise_std < 0:
    errors.append(f'train.noise_std must be >= 0 (0 = clean), got {t.noise_std}')
  if not 0 <= t.random_shift <= 8:
    errors.append(f'train.random_shift must be in [0, 8] pixels (0 = off), got {t.random_shift}')
  if t.optimizer not in ('adam', 'adamw'):
    errors.append(f"train.optimizer must be 'adam' or 'adamw', got {t.optimizer!r}")
  if t.schedule not in ('constant', 'cosine'):
    errors.append(f"train.schedule must be 'constant' or 'cosine', got {t.schedule!r}")
  for name in ('warmup_steps',):
    if t[name] < 0:
      errors.append(f'train.{name} must be >= 0, got {t[name]}')
  for name in ('steps_per_jit', 'log_every_steps', 'checkpoint_every_steps', 'eval_batch_size'):
    if t[name] < 1:
      errors.append(f'train.{name} must be at least 1, got {t[name]}')
  return errors


def _data_errors(d):
  errors = []
  for name in ('num_train', 'num_test', 'synthetic_train', 'synthetic_test'):
    if d[name] < 0:
      errors.append(f'data.{name} must be >= 0, got {d[name]}')
  if d.source not in ('auto', 'dir', 'tfds', 'synthetic'):
    errors.append(f"data.source must be 'auto', 'dir', 'tfds' or 'synthetic', got {d.source!r}")
  return errors


def _eval_errors(e):
  errors = []
  if e.k < 1:
    errors.append(f'eval.k must be at least 1, got {e.k}')
  bad = [x for x in e.metrics if x not in METRICS]
  if bad or not e.metrics:
    errors.append(f'eval.metrics must be a non-empty subset of {METRICS}, got {tuple(e.metrics)!r}')
  if e.noise_std < 0:
    errors.append(f'eval.noise_std must be >= 0, got {e.noise_std}')
  for name in ('umap_points', 'retrieval_queries', 'reference_queries', 'map_queries',
               'refine_steps'):
    if e[name] < 0:
      errors.append(f'eval.{name} must be >= 0, got {e[name]}')
  if e.refine_lr <= 0:
    errors.append(f'eval.refine_lr must be > 0, got {e.refine_lr}')
  for name in ('query_chunk', 'gallery_chunk', 'max_image_pixels'):
    if e[name] < 1:
      errors.append(f'eval.{name} must be at least 1, got {e[name]}')
  return errors
