"""The PyTorch -> Flax conversion engine: layouts, names, and its errors."""
import re

import numpy as np
import pytest

from ser_jax import convert as convert_lib
from ser_jax.convert import convert

RNG = np.random.default_rng(0)


def _r(*shape):
  return RNG.normal(size=shape).astype(np.float32)


def test_layouts_and_names():
  sd = {
      'conv_layer1.conv1.weight': _r(4, 1, 3, 2),  # OIHW
      'conv_layer1.bn1.weight': _r(4),
      'conv_layer1.bn1.bias': _r(4),
      'conv_layer1.bn1.running_mean': _r(4),
      'conv_layer1.bn1.running_var': _r(4),
      'conv_layer1.bn1.num_batches_tracked': np.array(7),
      'fc_layer.0.weight': _r(5, 4),  # (out, in)
      'fc_layer.0.bias': _r(5),
  }
  v = convert(sd, 'predecessor_cnn14')
  p, s = v['params'], v['batch_stats']
  np.testing.assert_array_equal(p['conv_block1']['conv1']['kernel'],
                                sd['conv_layer1.conv1.weight'].transpose(2, 3, 1, 0))
  assert p['conv_block1']['conv1']['kernel'].shape == (3, 2, 1, 4)  # HWIO
  np.testing.assert_array_equal(p['conv_block1']['bn1']['scale'], sd['conv_layer1.bn1.weight'])
  np.testing.assert_array_equal(p['conv_block1']['bn1']['bias'], sd['conv_layer1.bn1.bias'])
  np.testing.assert_array_equal(s['conv_block1']['bn1']['mean'],
                                sd['conv_layer1.bn1.running_mean'])
  np.testing.assert_array_equal(s['conv_block1']['bn1']['var'], sd['conv_layer1.bn1.running_var'])
  assert set(s['conv_block1']['bn1']) == {'mean', 'var'}  # num_batches_tracked dropped
  np.testing.assert_array_equal(p['fc_layer']['kernel'], sd['fc_layer.0.weight'].T)
  np.testing.assert_array_equal(p['fc_layer']['bias'], sd['fc_layer.0.bias'])


def test_conv1d_and_lstm_gate_split():
  h = 3
  sd = {
      'conv_layer2.0.weight': _r(6, 4, 3),  # (O, I, W)
      'LSTM.weight_ih_l0': _r(4 * h, 5),
      'LSTM.weight_hh_l0': _r(4 * h, h),
      'LSTM.bias_ih_l0': _r(4 * h),
      'LSTM.bias_hh_l0': _r(4 * h),
  }
  p = convert(sd, 'predecessor_cnn_lstm')['params']
  np.testing.assert_array_equal(p['conv_layer2']['kernel'],
                                sd['conv_layer2.0.weight'].transpose(2, 1, 0))
  for k, gate in enumerate('ifgo'):  # PyTorch row blocks: input, forget, cell, output
    rows = slice(k * h, (k + 1) * h)
    np.testing.assert_array_equal(p['lstm'][f'i{gate}']['kernel'],
                                  sd['LSTM.weight_ih_l0'][rows].T)
    np.testing.assert_array_equal(p['lstm'][f'i{gate}']['bias'], sd['LSTM.bias_ih_l0'][rows])
    np.testing.assert_array_equal(p['lstm'][f'h{gate}']['kernel'],
                                  sd['LSTM.weight_hh_l0'][rows].T)
    np.testing.assert_array_equal(p['lstm'][f'h{gate}']['bias'], sd['LSTM.bias_hh_l0'][rows])
  assert 'batch_stats' not in convert(sd, 'predecessor_cnn_lstm')


def test_attention_u_is_copied_raw():
  sd = {'attention.u': _r(1, 8), 'attention.dense.weight': _r(8, 8),
        'attention.dense.bias': _r(8)}
  p = convert(sd, 'predecessor_cnn14_attn')['params']['attention']
  np.testing.assert_array_equal(p['u'], sd['attention.u'])
  np.testing.assert_array_equal(p['dense']['kernel'], sd['attention.dense.weight'].T)


def test_panns_front_end_buffers_are_dropped():
  sd = {'bn0.weight': _r(64), 'fc_audioset.weight': _r(527, 2048),
        'spectrogram_extractor.stft.conv_real.weight': _r(4, 1, 8),
        'logmel_extractor.melW': _r(5, 64)}
  p = convert(sd, 'panns_cnn14')['params']
  assert set(p) == {'bn0', 'fc_audioset'}
  assert p['fc_audioset']['kernel'].shape == (2048, 527)


def test_unknown_keys_raise_listing_them():
  sd = {'conv1.0.weight': _r(8, 1, 3, 3), 'conv9.0.weight': _r(1), 'extra.thing': _r(2)}
  with pytest.raises(ValueError, match=re.escape("['conv9.0.weight', 'extra.thing']")):
    convert(sd, 'predecessor_cnnx')


def test_attention_keys_rejected_by_plain_cnn14():
  with pytest.raises(ValueError, match='attention.u'):
    convert({'attention.u': _r(1, 8)}, 'predecessor_cnn14')


def test_unconvertible_leaves_raise():
  with pytest.raises(ValueError, match='cannot convert.*weird'):
    convert({'classifier.weird': _r(3)}, 'predecessor_cnn14')
  with pytest.raises(ValueError, match='one layer, one direction'):
    convert({'LSTM.weight_ih_l1': _r(4, 2)}, 'predecessor_cnn_lstm')


def test_unknown_source_lists_known():
  with pytest.raises(ValueError, match='panns_cnn14.*predecessor_cnnx'):
    convert({}, 'nope')


def test_two_keys_on_one_path_raise(monkeypatch):
  table = [convert_lib.Rule(r'a|b', 'same')]
  monkeypatch.setitem(convert_lib.SOURCES, 'clash', table)
  with pytest.raises(ValueError, match='two keys map to same/bias'):
    convert({'a.bias': _r(2), 'b.bias': _r(2)}, 'clash')
  # Across rules: two patterns sending different torch modules to one Flax path.
  table[:] = [convert_lib.Rule(r'a', 'same'), convert_lib.Rule(r'b', 'same')]
  with pytest.raises(ValueError, match='two keys map to params/same/bias'):
    convert({'a.bias': _r(2), 'b.bias': _r(2)}, 'clash')


@pytest.mark.parametrize('source', sorted(convert_lib.SOURCES))
def test_every_table_is_valid(source):
  for rule in convert_lib.SOURCES[source]:
    re.compile(rule.pattern)
    assert rule.kind in ('auto', 'raw', 'lstm')


def test_result_does_not_alias_input():
  sd = {'conv_layer1.bn1.running_mean': _r(4), 'conv_layer1.bn1.bias': _r(4)}
  v = convert(sd, 'predecessor_cnn14')
  before = v['batch_stats']['conv_block1']['bn1']['mean'].copy()
  sd['conv_layer1.bn1.running_mean'] += 1.0  # e.g. torch updating its buffers in place
  np.testing.assert_array_equal(v['batch_stats']['conv_block1']['bn1']['mean'], before)
