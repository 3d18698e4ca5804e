"""EfficientAT MobileNetV3: the Flax family against a PyTorch reference and the real checkpoint.

The PyTorch reference (`torch_reference_efficientat`, written from the reference notes) must
load the shared `mn04_as_mAP_432.pt` with `strict=True`; ser-jax imports the same file
without torch (`launch/import_weights.py` in a torch-free subprocess), and the two give the
same eval-mode logits and embeddings on real RAVDESS clips through the whole waveform ->
front end -> model path. Other widths are checked with random weights. Tests that need the
shared checkpoint or the RAVDESS subset skip when they are absent.
"""
import pathlib
import runpy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from ser_jax import convert  # pylint: disable=g-import-not-at-top,wrong-import-position
from ser_jax import features  # pylint: disable=g-import-not-at-top,wrong-import-position
from ser_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from ser_jax import pretrained  # pylint: disable=g-import-not-at-top,wrong-import-position
from ser_jax.models import efficientat  # pylint: disable=g-import-not-at-top,wrong-import-position
from test_pth_reader import run_without_torch  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch_reference  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch_reference_efficientat as tre  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = pathlib.Path(__file__).resolve().parents[1]
WEIGHTS = ROOT.parent / 'shared' / 'weights' / 'efficientat'
CHECKPOINT = WEIGHTS / 'mn04_as_mAP_432.pt'
ATOL = 1e-4  # float32, logits and embeddings
FRAMES = 300  # one input length for every comparison below: one compilation per width


@pytest.fixture(scope='module')
def checkpoint():
  if not CHECKPOINT.exists():
    pytest.skip(f'{CHECKPOINT} not available')
  return CHECKPOINT


@pytest.fixture(scope='module')
def torch_mn04(checkpoint):
  module = tre.MobileNetV3(width_mult=0.4, num_classes=527)
  module.load_state_dict(torch.load(checkpoint, map_location='cpu'), strict=True)
  return module.eval()


@pytest.fixture(scope='module')
def imported(checkpoint, tmp_path_factory):
  """The checkpoint imported by launch/import_weights.py where torch cannot be imported."""
  out = tmp_path_factory.mktemp('effat') / 'mn04_as'
  proc = run_without_torch('''
      import runpy
      sys.argv = ['import_weights.py', *sys.argv[1:]]
      try:
        runpy.run_path('launch/import_weights.py', run_name='__main__')
      except SystemExit as e:  # absl's app.run always exits
        assert not e.code, e.code
      ''', f'--checkpoint={checkpoint}', '--source=efficientat_mn',
                           '--model=efficientat_mn04', '--num_classes=527',
                           '--frontend=efficientat32k', f'--output={out}')
  assert '0 freshly initialised' in proc, proc
  return pretrained.restore_imported(out, frontend='efficientat32k')


@pytest.fixture(scope='module')
def mn04_fn():
  """Jitted (logits, embedding) of mn04 with 527 classes, eval mode."""
  model = models.get_model('efficientat_mn04', num_classes=527)
  return jax.jit(lambda v, x: (model.apply(v, x), model.apply(v, x, method='embed')))


def _torch_outputs(module, x):
  """x: (batch, mel, time, 1) Flax layout -> torch (logits, embedding) as numpy."""
  with torch.no_grad():
    logits, embedding = module(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
  return logits.numpy(), embedding.numpy()


def _random_input(batch, seed=0):
  # Roughly the front end's range: (ln(S + 1e-5) + 4.5) / 5 lies in about [-1.4, 1].
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(batch, 128, FRAMES, 1)) * 0.5 - 0.4).astype(np.float32)


def test_make_divisible_matches_the_reference_rule():
  for value in np.arange(0.5, 700, 0.3):
    assert efficientat.make_divisible(value) == tre.make_divisible(value), value
  # mn04's widths, from the checkpoint's shapes.
  assert [efficientat.make_divisible(n * 0.4) for n in (16, 64, 112, 160, 1280)] == [
      8, 24, 48, 64, 512]


@pytest.mark.parametrize('width', efficientat.WIDTHS)
def test_every_width_builds_with_the_reference_parameter_count(width):
  name = f'efficientat_mn{round(10 * width):02d}'
  model = models.get_model(name, num_classes=527)
  x = jax.ShapeDtypeStruct((1, 128, 64, 1), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  embedding = jax.eval_shape(lambda v, x: model.apply(v, x, method='embed'), variables, x)
  flat = pretrained.flatten(variables)
  params = sum(v.size for k, v in flat.items() if k.startswith('params/'))
  stats = sum(v.size for k, v in flat.items() if k.startswith('batch_stats/'))
  with torch.device('meta'):  # shapes only: mn40 has 68M parameters
    reference = tre.MobileNetV3(width_mult=width, num_classes=527)
  assert params == sum(p.numel() for p in reference.parameters())
  assert stats == sum(b.numel() for k, b in reference.named_buffers() if 'running' in k)
  assert embedding.shape == (1, 6 * efficientat.make_divisible(160 * width))


def test_checkpoint_loads_strictly_and_counts(checkpoint, torch_mn04):
  """strict=True in the fixture; 983,599 params, 993,485 state_dict elements (REFERENCE)."""
  assert sum(p.numel() for p in torch_mn04.parameters()) == 983_599
  state = torch.load(checkpoint, map_location='cpu')
  assert len(state) == 312 and sum(t.numel() for t in state.values()) == 993_485
  model = models.get_model('efficientat_mn04', num_classes=527)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x),
      jax.ShapeDtypeStruct((1, 128, 64, 1), jnp.float32))
  flat = pretrained.flatten(variables)
  assert sum(v.size for k, v in flat.items() if k.startswith('params/')) == 983_599
  assert len(flat) == 312 - 46  # every tensor but the 46 BatchNorm step counters


@pytest.mark.parametrize('width', [0.1, 1.0])
def test_random_weights_match_torch(width):
  """Width 0.1 drops some expand convs (expanded == input after rounding); 1.0 is the base."""
  name = f'efficientat_mn{round(10 * width):02d}'
  module = torch_reference.randomize(tre.MobileNetV3(width_mult=width, num_classes=10),
                                     seed=3).eval()
  if width == 0.1:
    assert 'features.3.block.0.0.weight' in module.state_dict()
    assert 'features.3.block.3.0.weight' not in module.state_dict()  # no expand conv: 3 layers
  state = torch_reference.state_dict_numpy(module)
  model = models.get_model(name, num_classes=10)
  x = _random_input(2)
  init = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  variables = pretrained.merge_params(convert.convert(state, 'efficientat_mn'), init)
  logits, embedding = jax.jit(lambda v, x: (model.apply(v, x),
                                            model.apply(v, x, method='embed')))(variables, x)
  want_logits, want_embedding = _torch_outputs(module, x)
  assert np.abs(want_logits).max() > 0.1 and np.abs(want_embedding).max() > 0.1
  scale = max(1.0, float(np.abs(want_logits).max()))  # random weights: logits may be large
  np.testing.assert_allclose(logits, want_logits, rtol=0, atol=ATOL * scale)
  np.testing.assert_allclose(embedding, want_embedding, rtol=0, atol=ATOL)


def test_imported_matches_torch_on_random_inputs(imported, torch_mn04, mn04_fn):
  x = _random_input(3)  # the batch of the real clips below: the same compiled function
  logits, embedding = mn04_fn(imported, x)
  want_logits, want_embedding = _torch_outputs(torch_mn04, x)
  assert logits.shape == (3, 527) and embedding.shape == (3, 384)
  np.testing.assert_allclose(logits, want_logits, rtol=0, atol=ATOL)
  np.testing.assert_allclose(embedding, want_embedding, rtol=0, atol=ATOL)


def test_imported_matches_torch_on_real_clips(imported, torch_mn04, mn04_fn, ravdess_mini):
  """Waveform -> front end -> model, ser-jax vs the torch front end and module."""
  samples = features.FRONTENDS['efficientat32k'].hop_length * (FRAMES - 1) + 1
  files = [sorted(ravdess_mini.glob(f'Actor_0{a}/*.wav'))[i] for a, i in ((1, 5), (2, 40),
                                                                          (4, 58))]
  # The first 2.99 s of each clip (all at least 3.1 s): one input shape for the three.
  waves = np.stack([features.load_audio(f, 32000)[:samples] for f in files])
  x = np.stack([features.log_mel(w, 'efficientat32k') for w in waves])[..., None]
  assert x.shape == (3, 128, FRAMES, 1)
  logits, embedding = mn04_fn(imported, x)
  with torch.no_grad():
    logits_t, embedding_t = torch_mn04(tre.MelFrontEnd()(torch.from_numpy(waves)))
  np.testing.assert_allclose(logits, logits_t.numpy(), rtol=0, atol=ATOL)
  np.testing.assert_allclose(embedding, embedding_t.numpy(), rtol=0, atol=ATOL)
  assert (np.argmax(logits, axis=1) == 0).all()  # 'Speech'


def _torch_mn01():
  """The torch reference mn01 (3 classes) with the random weights `_random_mn01` converts."""
  return torch_reference.randomize(tre.MobileNetV3(width_mult=0.1, num_classes=3), seed=5)


def _random_mn01(x, **kwargs):
  """mn01 (3 classes) and random variables for it, converted from the torch reference.

  (Cheaper than `model.init`, which would compile, or run eagerly op by op, the network.)
  """
  module = _torch_mn01()
  model = models.get_model('efficientat_mn01', num_classes=3, **kwargs)
  init = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  state = torch_reference.state_dict_numpy(module)
  return model, pretrained.merge_params(convert.convert(state, 'efficientat_mn'), init)


def test_masked_clips_compute_as_if_alone():
  """A batch padded to 128 frames with a mask gives each clip the reference's outputs at its
  own length (77 and 100 frames: not multiples of the stride 32), and random padding values
  change nothing."""
  x = _random_input(2)[:, :, :128]
  model, variables = _random_mn01(x)
  lengths = (77, 100)
  mask = np.arange(128)[None] < np.array(lengths)[:, None]
  padded = np.where(mask[:, None, :, None], x, _random_input(2, seed=1)[:, :, :128] * 3)

  @jax.jit
  def outputs(variables, x, mask):
    return (model.apply(variables, x, mask=mask),
            model.apply(variables, x, mask=mask, method='embed'))

  logits, embedding = outputs(variables, padded, mask)
  _, plain_embedding = outputs(variables, padded, None)
  module = _torch_mn01().eval()
  for i, frames in enumerate(lengths):
    want_logits, want_embedding = _torch_outputs(module, x[i:i + 1, :, :frames])
    np.testing.assert_allclose(logits[i], want_logits[0], rtol=0, atol=ATOL)
    np.testing.assert_allclose(embedding[i], want_embedding[0], rtol=0, atol=ATOL)
  assert np.abs(plain_embedding - embedding).max() > 1e-2  # without the mask: not the same


def test_frozen_features_stop_gradients_and_keep_statistics():
  x = _random_input(2)[:, :, :64]
  model, variables = _random_mn01(x, frozen_features=17)

  @jax.jit
  def grads(params):
    def loss(params):
      logits, new = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                x, train=True, rngs={'dropout': jax.random.key(2)},
                                mutable=['batch_stats'])
      return logits.sum(), new
    return jax.grad(loss, has_aux=True)(params)

  grad, new = grads(variables['params'])
  flat = pretrained.flatten(grad)
  assert all(not np.any(g) for k, g in flat.items() if k.startswith('features_'))
  assert np.any(flat['classifier_5/kernel']) and np.any(flat['classifier_2/kernel'])
  jax.tree.map(np.testing.assert_array_equal, new['batch_stats'], variables['batch_stats'])
  with pytest.raises(ValueError, match='frozen_features must be in 0..17'):
    jax.eval_shape(models.get_model('efficientat_mn01', frozen_features=18).init,
                   jax.random.key(0), x)


def test_dont_load_gives_a_fresh_emotion_head(checkpoint):
  config = runpy.run_path(str(ROOT / 'configs' / 'efficientat_mn04.py'))['get_config']()
  model = models.get_model('efficientat_mn04', num_classes=8)
  x = jax.ShapeDtypeStruct((1, 128, 32, 1), jnp.float32)
  # A stand-in for fresh variables (a real init would compile the network): distinct
  # random values, so a kept leaf cannot be mistaken for a loaded one.
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32),
                           jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x))
  with pytest.raises(pretrained.CheckpointError, match=r'params/classifier_5/kernel: '
                     r'checkpoint \(512, 527\), model \(512, 8\)'):
    pretrained.load_pretrained(checkpoint, variables, frontend='efficientat32k',
                               source='efficientat_mn')
  merged = pretrained.load_pretrained(checkpoint, variables, frontend=config.data.frontend,
                                      source=config.init.source,
                                      dont_load=config.init.dont_load)
  fresh = {k for k in pretrained.flatten(merged) if k.split('/')[1] == 'classifier_5'}
  assert fresh == {'params/classifier_5/kernel', 'params/classifier_5/bias'}
  flat_merged, flat_init = pretrained.flatten(merged), pretrained.flatten(variables)
  for k in fresh:
    np.testing.assert_array_equal(flat_merged[k], flat_init[k])
  state = pretrained.load_state_dict(checkpoint)
  np.testing.assert_array_equal(flat_merged['params/classifier_2/kernel'],
                                state['classifier.2.weight'].T)
  np.testing.assert_array_equal(flat_merged['batch_stats/features_16/bn/var'],
                                state['features.16.1.running_var'])
