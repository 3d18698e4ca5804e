"""Imported PyTorch weights reproduce the PyTorch models (`ser_jax.pretrained` + `convert`).

Every converter source is tested the way users meet it: the torch reference module with
random weights and BatchNorm statistics is `torch.save`d in the real layout (PANNs'
`{'model': ...}` dict with its front-end buffers, torchvision's keys, the predecessor's
keys), imported in a subprocess where torch cannot be imported, and the Flax model's
outputs are compared with the torch forward (max abs difference 1e-4, float32).
PANNs is also tested from the waveform: `features.log_mel` + imported `cnn14_panns` vs the
torch front end + Cnn14 of `torch_reference_panns`.
"""
import collections
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip('torch')

import jax  # pylint: disable=g-import-not-at-top,g-bad-import-order
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

from ser_jax import config_lib  # pylint: disable=g-import-not-at-top
from ser_jax import features  # pylint: disable=g-import-not-at-top
from ser_jax import model_init  # pylint: disable=g-import-not-at-top
from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
from test_pth_reader import run_without_torch  # pylint: disable=g-import-not-at-top
import torch_reference  # pylint: disable=g-import-not-at-top
import torch_reference_panns  # pylint: disable=g-import-not-at-top
import torch_reference_vision  # pylint: disable=g-import-not-at-top

ATOL = 1e-4
NUM_CLASSES = 8
PANNS_SR = 32000

# One case per converter source: registry model, source, the checkpoint's layout ('bare'
# state_dict, 'panns' wrapper with front-end buffers, 'torchvision' backbone), the Flax
# input (mel, time) and dont_load (the configs' own, for torchvision backbones). Inputs are
# as small as each architecture allows.
Case = collections.namedtuple('Case', 'model source layout input_shape dont_load')
CASES = {
    'predecessor_cnn14': Case('cnn14', 'predecessor_cnn14', 'bare', (64, 64), ()),
    'predecessor_cnn14_attn': Case('cnn14_attn', 'predecessor_cnn14_attn', 'bare', (64, 128), ()),
    'predecessor_cnnx': Case('cnnx', 'predecessor_cnnx', 'bare', (128, 256), ()),
    'predecessor_cnn_lstm': Case('cnn_lstm', 'predecessor_cnn_lstm', 'bare', (128, 40), ()),
    'panns_cnn14': Case('cnn14_panns', 'panns_cnn14', 'panns', (64, 65), ()),
    'predecessor_vgg19_attn': Case('vgg19_attn', 'predecessor_vgg19_attn', 'bare', (64, 64), ()),
    'predecessor_alexnet_attn': Case('alexnet_attn', 'predecessor_alexnet_attn', 'bare', (96, 96),
                                     ()),
    'predecessor_resnet18': Case('resnet18', 'predecessor_resnet18', 'bare', (64, 64), ()),
}
for _source, _model in (('torchvision_vgg19_bn', 'vgg19_attn'),
                        ('torchvision_alexnet', 'alexnet_attn'),
                        ('torchvision_resnet18', 'resnet18')):
  CASES[_source] = Case(_model, _source, 'torchvision', CASES['predecessor_' + _model].input_shape,
                        None)  # dont_load: read from configs/<model>.py below


def _config_dont_load(model):
  """The dont_load of configs/<model>.py: the test uses exactly what training uses."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(__file__).resolve().parents[1] / 'configs' / f'{model}.py'
  spec = importlib.util.spec_from_file_location(f'config_{model}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return tuple(module.get_config().init.dont_load)


def _dont_load(case):
  return _config_dont_load(case.model) if case.dont_load is None else case.dont_load


def _is_vision(case):
  return case.model in torch_reference_vision.REFERENCES


def _reference_module(case):
  """The torch module whose forward the imported Flax model must reproduce."""
  if case.layout == 'panns':
    return torch_reference_panns.PannsCnn14Full(PANNS_SR, classes_num=NUM_CLASSES)
  if _is_vision(case):
    return torch_reference_vision.torch_reference(case.model, NUM_CLASSES)
  return torch_reference.torch_reference(case.model, NUM_CLASSES)


def _panns_waves():
  """Two 0.64 s clips at 32 kHz: a decaying tone and a chirp, each with some noise."""
  t = np.arange(int(0.64 * PANNS_SR)) / PANNS_SR
  rng = np.random.default_rng(2)
  tone = 0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-2 * t)
  chirp = 0.2 * np.sin(2 * np.pi * (200 + 3000 * t) * t)
  return np.stack([tone, chirp]) + 0.02 * rng.standard_normal((2, t.size))


def _to_torch_layout(flax_path, value):
  """A Flax leaf in the layout of the torch parameter it came from (inverse of convert)."""
  if flax_path.endswith('kernel'):
    return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
  return value


# Flax path prefix of the fresh (dont_load) parts -> the torch predecessor-layout prefix.
_FRESH_TO_TORCH = {'stem': 'network.features.0', 'attention/dense': 'attention.dense',
                   'attention': 'attention', 'classifier': 'classifier',
                   'conv1': 'network.conv1', 'fc': 'network.fc'}


def _load_fresh_parts(module, kept):
  """Copies the imported model's freshly initialised parts into the torch reference."""
  state = {}
  for path, value in kept.items():
    collection, *module_path, leaf = path.split('/')
    assert collection == 'params', path  # fresh parts here have no BatchNorm
    prefix = _FRESH_TO_TORCH['/'.join(module_path)]
    torch_leaf = {'kernel': 'weight', 'bias': 'bias', 'u': 'u'}[leaf]
    state[f'{prefix}.{torch_leaf}'] = torch.from_numpy(_to_torch_layout(path, value).copy())
  missing, unexpected = module.load_state_dict(state, strict=False)
  assert not unexpected, unexpected
  return state


def _build(case, d):
  """Writes the checkpoint of `case` the way users have it; returns the reference module."""
  ref = _reference_module(case)
  torch_reference.randomize(ref, seed=len(case.source))
  path = d / f'{case.source}.pth'
  if case.layout == 'panns':
    ref.load_state_dict(torch_reference_panns.frontend_buffers(PANNS_SR), strict=False)
    # bn0 holds AudioSet log-mel statistics in the real checkpoint: use those of the test
    # clips so the normalised input has unit scale, as in the real model.
    log_mels = np.stack([features.log_mel(w.astype(np.float32), 'panns32k')
                         for w in _panns_waves()])  # (batch, mel, frames)
    with torch.no_grad():
      ref.bn0.running_mean.copy_(torch.from_numpy(log_mels.mean(axis=(0, 2))))
      ref.bn0.running_var.copy_(torch.from_numpy(log_mels.var(axis=(0, 2))))
    torch.save(torch_reference_panns.panns_checkpoint(ref), path)
  elif case.layout == 'torchvision':
    backbone = torch_reference_vision.TORCHVISION[case.source]()
    torch_reference_vision.randomize(backbone, seed=len(case.source))
    torch.save(backbone.state_dict(), path)
    # The predecessor-layout reference carries the same backbone; its fresh parts are
    # copied from the imported model after the import.
    tv = {k: v for k, v in backbone.state_dict().items()}
    if case.model == 'resnet18':
      mapped = {f'network.{k}': v for k, v in tv.items()
                if not k.startswith(('conv1.', 'fc.'))}
    else:
      # network.features.{N + 1} is torchvision's features.N (index 0 is the stem).
      mapped = {f'network.features.{int(k.split(".")[1]) + 1}.{k.split(".", 2)[2]}': v
                for k, v in tv.items() if k.startswith('features.')}
    missing, unexpected = ref.load_state_dict(mapped, strict=False)
    assert not unexpected, unexpected
    assert all(k.split('.')[0] in ('attention', 'classifier') or
               k.startswith(('network.features.0.', 'network.conv1.', 'network.fc.'))
               for k in missing), missing
  else:
    torch.save(ref.state_dict(), path)
  return ref.eval(), path


def _import_and_run_without_torch(jobs):
  """Imports each checkpoint and runs the Flax model, in one torch-free subprocess.

  Each job's npz gets `logits` for `x`, the freshly initialised (dont_load) leaves under
  'kept:<path>', and for PANNs `clipwise`/`embedding` computed from `waves` through
  `features.log_mel` (so the whole path from audio is torch-free too).
  """
  run_without_torch(f"""
      import re
      import jax
      import numpy as np
      from ser_jax import config_lib, features, models, pretrained
      applies = {{}}
      for job in {[dict(j) for j in jobs]!r}:
        config = config_lib.default()
        config.model.name, config.model.num_classes = job['model'], job['num_classes']
        config.data.frontend, config.data.input_shape = job['frontend'], job['input_shape']
        config.init.source, config.init.dont_load = job['source'], job['dont_load']
        variables = pretrained.import_checkpoint(config, job['path'])
        if job['model'] not in applies:  # one compilation per model and input shape
          model = models.get_model(job['model'], num_classes=job['num_classes'])
          applies[job['model']] = jax.jit(lambda v, x, m=model: m.apply(
              v, x, train=False, capture_intermediates=lambda mdl, _: mdl.name == 'fc1'))
        apply = applies[job['model']]
        out = {{'logits': apply(variables, np.load(job['x']))[0]}}
        if job['waves']:
          waves = np.load(job['waves']).astype(np.float32)
          x = np.stack([features.log_mel(w, features.FRONTENDS['panns32k']) for w in waves])
          logits, state = apply(variables, x[..., None])  # (batch, mel, time, 1)
          out['clipwise'] = jax.nn.sigmoid(logits)
          out['embedding'] = jax.nn.relu(state['intermediates']['fc1']['__call__'][0])
        for path, value in pretrained.flatten(variables).items():
          if any(re.search(p, path) for p in job['dont_load']):
            out['kept:' + path] = value
        np.savez(job['out'], **{{k: np.asarray(v) for k, v in out.items()}})
      """, timeout=1200)
  return {j['name']: dict(np.load(j['out'])) for j in jobs}


@pytest.fixture(scope='module')
def imported(tmp_path_factory):
  """{case name: (torch reference, input x, outputs of the imported Flax model)}."""
  d = tmp_path_factory.mktemp('import')
  refs, jobs = {}, []
  np.save(d / 'waves.npy', _panns_waves())
  for name, case in CASES.items():
    ref, path = _build(case, d)
    x = np.random.default_rng(1).normal(size=(2, *case.input_shape, 1)).astype(np.float32)
    np.save(d / f'{name}_x.npy', x)
    refs[name] = (ref, x)
    jobs.append(dict(name=name, path=str(path), source=case.source, model=case.model,
                     num_classes=NUM_CLASSES, dont_load=_dont_load(case),
                     frontend='panns32k' if case.layout == 'panns' else 'predecessor48k',
                     input_shape=case.input_shape, x=str(d / f'{name}_x.npy'),
                     waves=str(d / 'waves.npy') if case.layout == 'panns' else '',
                     out=str(d / f'{name}.npz')))
  outputs = _import_and_run_without_torch(jobs)
  return {name: (*refs[name], outputs[name]) for name in CASES}


def _torch_logits(case, ref, x):
  with torch.no_grad():
    if case.layout == 'panns':  # the Cnn14 part only: x is already a log-mel
      return torch_reference.PannsCnn14.forward(
          ref, torch_reference.to_torch_input(case.model, x)).numpy()
    tr = torch_reference_vision if _is_vision(case) else torch_reference
    return ref(tr.to_torch_input(case.model, x)).numpy()


@pytest.mark.slow  # the shared fixture saves, imports and runs 11 models (~2.5 CPU-minutes)
@pytest.mark.parametrize('name', sorted(CASES))
def test_logits_match_torch(imported, name):
  case = CASES[name]
  ref, x, out = imported[name]
  kept = {k[len('kept:'):]: v for k, v in out.items() if k.startswith('kept:')}
  if case.layout == 'torchvision':
    # The stem/attention/classifier are new: give the torch reference the same fresh values.
    assert kept, 'the torchvision import kept no fresh parameters'
    _load_fresh_parts(ref, kept)
  else:
    assert not kept
  want = _torch_logits(case, ref, x)
  got = out['logits']
  assert got.shape == want.shape == (2, NUM_CLASSES)
  assert np.abs(want).max() > 0.1  # a meaningful comparison, not two near-zero vectors
  np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


@pytest.mark.slow
def test_panns_from_waveform(imported):
  """Our panns32k front end + imported cnn14_panns == torch front end + Cnn14."""
  ref, _, out = imported['panns_cnn14']
  with torch.no_grad():
    want = {k: v.numpy() for k, v in ref(torch.from_numpy(_panns_waves()).float()).items()}
  assert out['embedding'].shape == want['embedding'].shape == (2, 2048)
  assert out['clipwise'].shape == want['clipwise_output'].shape == (2, NUM_CLASSES)
  assert 0.01 < np.median(want['clipwise_output']) < 0.99  # not saturated
  assert np.abs(want['embedding']).max() > 0.1
  np.testing.assert_allclose(out['clipwise'], want['clipwise_output'], rtol=0, atol=ATOL)
  np.testing.assert_allclose(out['embedding'], want['embedding'], rtol=0, atol=ATOL)


# ---------------------------------------------------------------------------------------
# merge_params and the errors users meet.
# ---------------------------------------------------------------------------------------


def _tree(**shapes):
  """{'params/a/kernel': (2, 3)} style shapes -> nested dict of arrays."""
  return pretrained.unflatten({k.replace('__', '/'): np.full(s, 1.0, np.float32)
                               for k, s in shapes.items()})


def test_merge_params_loads_everything_and_keeps_dont_load():
  init = _tree(params__body__kernel=(3, 4), params__head__kernel=(4, 8),
               params__head__bias=(8,), batch_stats__bn__mean=(4,))
  init = jax.tree.map(lambda x: jnp.zeros_like(x), init)
  loaded = _tree(params__body__kernel=(3, 4), params__head__kernel=(4, 527),
                 params__head__bias=(527,), batch_stats__bn__mean=(4,))
  merged = pretrained.merge_params(loaded, init, dont_load=('head',))
  flat = pretrained.flatten(merged)
  assert sorted(flat) == sorted(pretrained.flatten(init))
  np.testing.assert_array_equal(flat['params/body/kernel'], 1.0)  # loaded
  np.testing.assert_array_equal(flat['batch_stats/bn/mean'], 1.0)
  np.testing.assert_array_equal(flat['params/head/kernel'], 0.0)  # kept from init
  assert flat['params/head/kernel'].shape == (4, 8)
  assert flat['params/body/kernel'].dtype == np.float32
  # float16 checkpoints are cast to the model's float32.
  half = jax.tree.map(lambda x: x.astype(np.float16), loaded)
  merged = pretrained.merge_params(half, init, dont_load=('head',))
  assert pretrained.flatten(merged)['params/body/kernel'].dtype == np.float32


def test_merge_params_one_error_lists_everything():
  init = _tree(params__a__kernel=(3, 4), params__b__kernel=(4, 8), params__c__bias=(8,))
  loaded = _tree(params__a__kernel=(3, 4), params__b__kernel=(4, 527),
                 params__z__bias=(5,))
  with pytest.raises(pretrained.CheckpointError) as e:
    pretrained.merge_params(loaded, init)
  msg = str(e.value)
  assert '1 shape mismatches' in msg
  assert 'params/b/kernel: checkpoint (4, 527), model (4, 8)' in msg
  assert 'in the model, not in the checkpoint (first 1 of 1):\n    params/c/bias: (8,)' in msg
  assert 'in the checkpoint, not in the model (first 1 of 1):\n    params/z/bias: (5,)' in msg
  assert 'params/a/kernel' not in msg
  # Long lists are cut to the first MAX_LISTED, in model order.
  many = {f'params__l{i:02d}__kernel': (2,) for i in range(25)}
  with pytest.raises(pretrained.CheckpointError, match=r'first 10 of 25\):\n    params/l00'):
    pretrained.merge_params({}, _tree(**many))


def test_checkpoint_of_another_architecture(tmp_path):
  """A CNN-X checkpoint for a CNN14: the error names the first mismatched keys."""
  module = torch_reference.randomize(torch_reference.torch_reference('cnnx'))
  path = tmp_path / 'cnnx.pth'
  torch.save(module.state_dict(), path)
  # Right source, wrong model: the merge lists what does not fit.
  init = {'params': {'conv_block1': {'conv1': {'kernel': np.zeros((3, 3, 1, 64))}},
                     'classifier': {'kernel': np.zeros((512, 8)), 'bias': np.zeros(8)}}}
  with pytest.raises(pretrained.CheckpointError) as e:
    pretrained.load_pretrained(path, init, source='predecessor_cnnx', frontend='predecessor48k')
  msg = str(e.value)
  assert 'params/conv_block1/conv1/kernel: (3, 3, 1, 64)' in msg
  assert 'in the checkpoint, not in the model' in msg and 'params/conv1/kernel' in msg
  # Wrong source: the converter's error, plus the sources the keys do fit.
  with pytest.raises(pretrained.CheckpointError,
                     match=r"cannot be converted as 'predecessor_cnn14'.*conv1\.0\.weight.*"
                     r"fit source\(s\) \['predecessor_cnnx'\]"):
    pretrained.load_pretrained(path, init, source='predecessor_cnn14', frontend='predecessor48k')


def test_panns_16k_checkpoint_with_32k_front_end(tmp_path):
  state = {k: v.numpy() for k, v in torch_reference_panns.frontend_buffers(16000).items()}
  with pytest.raises(pretrained.CheckpointError,
                     match=r"n_fft 512, 64 mels \(front end 'panns16k'.*features are "
                     r"'panns32k' \(32000 Hz, n_fft 1024"):
    pretrained.check_panns_frontend(state, 'panns32k', 'Cnn14_16k.pth')
  pretrained.check_panns_frontend(state, 'panns16k')  # the matching front end passes
  state32 = {k: v.numpy() for k, v in torch_reference_panns.frontend_buffers(32000).items()}
  pretrained.check_panns_frontend(state32, 'panns32k')
  with pytest.raises(pretrained.CheckpointError, match="features are 'predecessor48k'"):
    pretrained.check_panns_frontend(state32, 'predecessor48k')
  # A 32 kHz-shaped mel matrix with other band edges is caught by its values.
  state32['logmel_extractor.melW'] = state32['logmel_extractor.melW'][:, ::-1].copy()
  with pytest.raises(pretrained.CheckpointError, match='a front end ser_jax does not have'):
    pretrained.check_panns_frontend(state32, 'panns32k')
  # Through the loading path, with the front end as training passes it.
  path = tmp_path / 'Cnn14_16k_mAP=0.438.pth'
  torch.save({'model': torch_reference_panns.frontend_buffers(16000)}, path)
  with pytest.raises(pretrained.CheckpointError, match=r"Cnn14_16k_mAP=0\.438\.pth is a PANNs"):
    pretrained.load_pretrained(path, {}, source='panns_cnn14', frontend='panns32k')


def test_init_from_pretrained_pth_and_imported_dir(tmp_path):
  """Both forms of config.init.pretrained give the same variables; dont_load keeps init."""
  # The 1D CNN-LSTM: the smallest model with a predecessor checkpoint layout.
  module = torch_reference.randomize(torch_reference.torch_reference('cnn_lstm'), seed=3)
  path = tmp_path / 'cnn_lstm.pth'
  torch.save(module.state_dict(), path)
  cfg = config_lib.default()
  cfg.model.name, cfg.data.input_shape = 'cnn_lstm', (128, 16)
  cfg.init.update(pretrained=str(path), source='predecessor_cnn_lstm',
                  dont_load=('classifier',))
  init = model_init.init_variables(cfg, rng=jax.random.PRNGKey(5))
  from_pth = pretrained.init_from_pretrained(init, cfg)
  flat = pretrained.flatten(from_pth)
  assert all(isinstance(v, jax.Array) for v in flat.values())
  np.testing.assert_array_equal(flat['params/classifier/kernel'],
                                pretrained.flatten(init)['params/classifier/kernel'])
  np.testing.assert_array_equal(
      flat['params/conv_layer1/kernel'],
      module.conv_layer1[0].weight.detach().numpy().transpose(2, 1, 0))
  # An import_weights-style directory restores to the same values.
  out = pretrained.save_imported(tmp_path / 'imported', from_pth,
                                 {'source': 'predecessor_cnn_lstm'})
  with pytest.raises(FileExistsError):
    pretrained.save_imported(out, from_pth, {})
  cfg_dir = cfg.copy_and_resolve_references()
  cfg_dir.init.update(pretrained=out, source='', dont_load=())
  from_dir = pretrained.init_from_pretrained(init, cfg_dir)
  for k, v in pretrained.flatten(from_dir).items():
    np.testing.assert_array_equal(v, flat[k], err_msg=k)
  assert sorted(p.name for p in pathlib.Path(tmp_path).iterdir()) == ['cnn_lstm.pth',
                                                                       'imported']


def test_cnn14_panns_config_fits_a_panns_checkpoint():
  """configs/cnn14_panns.py: PANNs features, and a 527-class PANNs state_dict merges into
  its 8-class model with only fc_audioset left fresh."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'cnn14_panns.py'
  spec = importlib.util.spec_from_file_location('config_cnn14_panns', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  assert c.model.name == 'cnn14_panns' and c.model.num_classes == 8
  assert config_lib.tfds_name(c.data) == 'ravdess/speech_panns32k'
  frontend = features.FRONTENDS[c.data.frontend]
  assert frontend.name == 'panns32k' and c.data.input_shape[0] == frontend.n_mels
  assert c.data.crop_mode == 'crop_pad' and c.data.input_shape[1] % 32 == 0
  assert c.init.source == 'panns_cnn14' and c.init.expect_pretrained
  assert tuple(module.get_config('tiny').data.input_shape) == (64, 64)

  # A PANNs state_dict with AudioSet's 527 classes and the real 32 kHz front-end buffers
  # (weights are zeros: only names and shapes matter here; meta tensors allocate nothing).
  with torch.device('meta'):
    shapes = {k: tuple(v.shape) for k, v in
              torch_reference_panns.PannsCnn14Full(32000, classes_num=527).state_dict().items()}
  state = {k: np.zeros(s, np.int64 if k.endswith('num_batches_tracked') else np.float32)
           for k, s in shapes.items()}
  state.update({k: v.numpy() for k, v in
                torch_reference_panns.frontend_buffers(32000).items()})
  loaded = pretrained.convert_state_dict(state, c.init.source, frontend=c.data.frontend)
  init = model_init.init_variables(c, abstract=True)
  merged = pretrained.flatten(pretrained.merge_params(loaded, init, c.init.dont_load))
  fresh = sorted(k for k, v in merged.items() if isinstance(v, jax.ShapeDtypeStruct))
  assert fresh == ['params/fc_audioset/bias', 'params/fc_audioset/kernel']
  assert merged['params/fc_audioset/kernel'].shape == (2048, 8)
  with pytest.raises(pretrained.CheckpointError,
                     match=r'params/fc_audioset/kernel: checkpoint \(2048, 527\), model '
                     r'\(2048, 8\)'):
    pretrained.merge_params(loaded, init)


def _panns_config(**fields):
  """configs/cnn14_panns.py:tiny (32 kHz PANNs features) with `fields` set."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'cnn14_panns.py'
  spec = importlib.util.spec_from_file_location('config_cnn14_panns_tiny', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config('tiny')
  c.update_from_flattened_dict(fields)
  return c


def test_16k_panns_weights_on_32k_features_are_refused_everywhere(tmp_path):
  """Train, evaluate and predict all refuse 16 kHz PANNs weights for panns32k features,
  both as the .pth and as an import directory (which records its front end)."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  from ser_jax import evaluation  # pylint: disable=g-import-not-at-top
  from ser_jax import inference  # pylint: disable=g-import-not-at-top
  from ser_jax import train  # pylint: disable=g-import-not-at-top
  pth = tmp_path / 'Cnn14_16k_mAP=0.438.pth'
  torch.save({'model': torch_reference_panns.frontend_buffers(16000)}, pth)
  imported = pretrained.save_imported(
      tmp_path / 'imported_16k', {'params': {'x': np.zeros(2, np.float32)}},
      {'model': 'cnn14_panns', 'frontend': 'panns16k'})
  wav = tmp_path / 'clip.wav'
  sf.write(wav, np.zeros(16000, np.float32), 32000)
  pth_error = (r"Cnn14_16k_mAP=0\.438\.pth is a PANNs checkpoint trained on log-mels with "
               r"n_fft 512")
  dir_error = (r"imported_16k was imported for front end 'panns16k' but the features are "
               r"'panns32k'")
  for weights, error in ((pth, pth_error), (imported, dir_error)):
    config = _panns_config(**{'init.pretrained': str(weights)})
    assert config.data.frontend == 'panns32k' and config.init.source == 'panns_cnn14'
    with pytest.raises(pretrained.CheckpointError, match=error):
      train.train_and_evaluate(config, tmp_path / 'train', examples=None)
    assert not (tmp_path / 'train').exists()  # refused before anything was written
    with pytest.raises(pretrained.CheckpointError, match=error):
      evaluation.run_evaluation(_panns_config(), weights=weights, actors='all', write=False)
    with pytest.raises(pretrained.CheckpointError, match=error):
      inference.run_prediction([str(wav)], config=_panns_config(), weights=weights)
  # The matching front end is not refused by the check (it gets as far as the merge).
  config = _panns_config(**{'init.pretrained': str(pth), 'data.frontend': 'panns16k'})
  model_init.check_pretrained_setting(config)
