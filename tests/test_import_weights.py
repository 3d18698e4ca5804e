"""launch/import_weights.py: .pth -> Orbax directory, usable by training and evaluation.

The command line runs in a subprocess where torch cannot be imported. The imported
predecessor CNN-X is then evaluated with the library launch/evaluate.py calls
(`inference.load_variables`, `inference.Predictor`, `evaluation.run_evaluation`) and must
predict exactly what the PyTorch model predicts.
"""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from ser_jax import evaluation  # pylint: disable=g-import-not-at-top
from ser_jax import inference  # pylint: disable=g-import-not-at-top
from ser_jax import input_pipeline  # pylint: disable=g-import-not-at-top
from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
from test_pth_reader import run_without_torch  # pylint: disable=g-import-not-at-top
import torch_reference  # pylint: disable=g-import-not-at-top

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(path, name):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _import_cli(*args, expect_ok=True):
  """Runs launch/import_weights.py where torch cannot be imported: (exit code, output)."""
  proc = run_without_torch('''
      import runpy
      sys.argv = ['import_weights.py', *sys.argv[1:]]
      try:
        runpy.run_path('launch/import_weights.py', run_name='__main__')
        status = 0
      except SystemExit as e:  # absl's app.run always exits
        status = e.code
      assert 'torch' not in sys.modules
      sys.exit(status)
      ''', *args, check=False)
  text = proc.stdout + proc.stderr
  if expect_ok:
    assert proc.returncode == 0, text
  return proc.returncode, text


@pytest.fixture(scope='module')
def cnnx(tmp_path_factory):
  """A randomly weighted predecessor CNN-X saved as its .pth, and its CLI import."""
  d = tmp_path_factory.mktemp('cnnx')
  module = torch_reference.randomize(torch_reference.torch_reference('cnnx'), seed=7).eval()
  pth = d / 'cnnx_fold0.pth'
  torch.save(module.state_dict(), pth)
  out = d / 'imported'
  _import_cnnx(pth, out)
  return module, pth, out


def _import_cnnx(checkpoint, out):
  _, text = _import_cli(f'--checkpoint={checkpoint}', '--source=predecessor_cnnx',
                        '--model=cnnx', f'--output={out}')
  assert 'variables loaded, 0 freshly initialised' in text


def test_output_layout_and_info(cnnx):
  _, pth, out = cnnx
  assert sorted(p.name for p in out.iterdir()) == [pretrained.IMPORT_INFO,
                                                   pretrained.IMPORT_VARIABLES]
  info = pretrained.read_import_info(out)
  assert info['model'] == 'cnnx' and info['source'] == 'predecessor_cnnx'
  assert info['checkpoint'] == str(pth) and len(info['checkpoint_sha256']) == 64
  assert info['input_shape'] == [128, 256] and info['fresh'] == []
  # Nothing but the output was written next to it (the temporary directory is gone).
  assert sorted(p.name for p in out.parent.iterdir()) == ['cnnx_fold0.pth', 'imported']


def test_refuses_to_overwrite_and_leaves_nothing_on_error(cnnx, tmp_path):
  _, pth, out = cnnx
  before = sorted(p.name for p in out.rglob('*'))
  code, text = _import_cli(f'--checkpoint={pth}', '--source=predecessor_cnnx', '--model=cnnx',
                           f'--output={out}', expect_ok=False)
  assert code != 0 and 'exists; refusing to overwrite' in text
  assert sorted(p.name for p in out.rglob('*')) == before
  # A checkpoint of another architecture: a clear error naming keys, and no output.
  bad = tmp_path / 'as_cnn14'
  code, text = _import_cli(f'--checkpoint={pth}', '--source=predecessor_cnnx', '--model=cnn14',
                           f'--output={bad}', expect_ok=False)
  assert code != 0 and 'import_weights: error:' in text
  assert 'params/conv_block1/conv1/kernel' in text and 'params/fc_layer1/kernel' in text
  assert list(tmp_path.iterdir()) == []


def test_safetensors_imports_like_pth(cnnx, tmp_path):
  """The same weights as .safetensors (what most checkpoints are published as): same import."""
  from safetensors import torch as safetensors_torch  # pylint: disable=g-import-not-at-top
  module, _, out = cnnx
  path = tmp_path / 'cnnx_fold0.safetensors'
  safetensors_torch.save_file(module.state_dict(), path)
  out_st = tmp_path / 'imported'
  _import_cnnx(path, out_st)
  want = pretrained.flatten(pretrained.restore_imported(out, frontend='predecessor48k'))
  got = pretrained.flatten(pretrained.restore_imported(out_st, frontend='predecessor48k'))
  assert sorted(got) == sorted(want)
  for k, v in want.items():
    np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_evaluate_predicts_like_pytorch(cnnx):
  """Evaluation of the imported checkpoint == the PyTorch model, clip by clip."""
  module, _, out = cnnx
  config = _load(ROOT / 'configs' / 'cnnx.py', 'config_cnnx_import').get_config()
  config.eval_batch_size = 4
  rng = np.random.default_rng(3)
  # Six clips of different lengths, levels and contrasts (so a random CNN-X does not give
  # one class to all): evaluation resizes them to the configured (128, 256).
  images = [(rng.normal(size=(128, n)) * rng.uniform(0.5, 20) + rng.uniform(-40, 10))
            .astype(np.float32) for n in (240, 256, 300, 333, 400, 512)]
  examples = input_pipeline.Examples(images=images, labels=np.zeros(6, np.int32),
                                     actors=np.array([1, 1, 2, 2, 3, 3], np.int32),
                                     file_names=[f'clip{i}.wav' for i in range(6)])
  seen = input_pipeline.prepare_images(examples, config.data)  # what the model is fed
  with torch.no_grad():
    x = np.stack(seen.images)[:, None]  # (batch, 1, mel, time)
    logits = module(torch.from_numpy(x)).numpy()
  want = logits.argmax(axis=1)
  assert len(set(want)) > 1  # the comparison distinguishes classes

  variables = inference.load_variables(config, weights=out).variables
  got = inference.Predictor(config, variables).evaluate(seen)
  np.testing.assert_array_equal(got['predictions'], want)
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs /= probs.sum(axis=1, keepdims=True)
  np.testing.assert_allclose(got['probabilities'], probs, rtol=0, atol=1e-5)

  # The full evaluation entry point: with the torch predictions as labels, every clip
  # must be counted correct.
  labelled = input_pipeline.Examples(images=images, labels=want.astype(np.int32),
                                     actors=examples.actors, file_names=examples.file_names)
  [m] = evaluation.run_evaluation(config, weights=out, examples=labelled, actors='all',
                                  write=False)
  assert m['num_examples'] == 6 and m['accuracy'] == 1.0
  assert json.dumps(m['confusion'])  # a plain, serialisable confusion matrix
