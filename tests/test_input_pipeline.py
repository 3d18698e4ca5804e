"""Tests of ser_jax/input_pipeline.py on in-memory synthetic clips (no TFDS, no devices)."""
import time

import ml_collections
import numpy as np
import pytest

from ser_jax import input_pipeline as ip


def data_config(**overrides):
  c = ml_collections.ConfigDict({
      'input_shape': (8, 12), 'crop_mode': 'resize', 'mixup_alpha': 0.0,
      'specaugment': {'enabled': False, 'num_freq_masks': 1, 'max_freq_width': 3,
                      'num_time_masks': 1, 'max_time_width': 4}})
  for k, v in overrides.items():
    if k.startswith('specaugment.'):
      c.specaugment[k.split('.')[1]] = v
    else:
      c[k] = v
  return c


def make_examples(n=13, mel=8, actors=(1, 2, 3), seed=0):
  """n clips of 10..(10+n) frames; clip i is filled with the value i (traceable)."""
  items = []
  for i in range(n):
    image = np.full((mel, 10 + i), float(i), np.float32)
    image[:, 0] = -80.0  # one quiet frame, so crops and pads are visible
    items.append({'log_mel': image, 'emotion': i % 8, 'actor': actors[i % len(actors)],
                  'file_name': f'clip{i}.wav'.encode()})
  return ip.read_source(items, dataset_name='synthetic')


def test_read_source_and_select_speakers():
  ex = make_examples(n=9)
  assert len(ex) == 9 and ex.file_names[2] == 'clip2.wav'
  assert ex.labels.tolist() == [i % 8 for i in range(9)]
  sel = ip.select_speakers(ex, [2])
  assert sel.actors.tolist() == [2, 2, 2] and sel.file_names == ['clip1.wav', 'clip4.wav',
                                                                  'clip7.wav']
  with pytest.raises(ValueError, match=r'no clips of actors \[5, 7\] in synthetic .*'
                     r'holds actors \[1, 2, 3\]'):
    ip.select_speakers(ex, [7, 5], dataset_name='synthetic')
  with pytest.raises(ValueError, match='missing'):
    ip.read_source([{'log_mel': np.zeros((2, 3)), 'actor': 1}])


def test_resize_matches_pytorch_bilinear_without_antialias():
  torch = pytest.importorskip('torch')
  rng = np.random.RandomState(0)
  for shape_in, shape_out in (((128, 401), (128, 256)), ((20, 9), (16, 30)),
                              ((7, 300), (7, 256))):
    x = rng.randn(*shape_in).astype(np.float32) * 20 - 40
    want = torch.nn.functional.interpolate(
        torch.from_numpy(x)[None, None], size=shape_out, mode='bilinear',
        align_corners=False, antialias=False)[0, 0].numpy()
    got = ip.resize_bilinear(x, shape_out)
    assert got.shape == shape_out and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_jax_resize_differs_only_by_antialias():
  """Documents the choice: jax.image.resize agrees when told antialias=False."""
  jax = pytest.importorskip('jax')
  x = np.random.RandomState(1).randn(16, 401).astype(np.float32)
  ours = ip.resize_bilinear(x, (16, 256))
  no_aa = np.asarray(jax.image.resize(x, (16, 256), 'bilinear', antialias=False))
  default = np.asarray(jax.image.resize(x, (16, 256), 'bilinear'))
  np.testing.assert_allclose(ours, no_aa, atol=1e-5)
  assert np.abs(default - ours).max() > 0.5


def _epoch_rows(ex, cfg, batch_size, epoch, seed=(3, 0), **kw):
  rows = []
  for b in ip.train_batches(ex, cfg, batch_size=batch_size, num_classes=8, seed=seed,
                            epoch=epoch, **kw):
    rows.append(b)
  return rows


def test_train_epoch_covers_every_clip_once_and_is_seeded():
  ex = ip.prepare_images(make_examples(n=13), data_config())
  cfg = data_config()
  batches = _epoch_rows(ex, cfg, 4, epoch=0)
  assert len(batches) == ip.steps_per_epoch(13, 4) == 4
  for b in batches:
    assert b['image'].shape == (4, 8, 12, 1) and b['image'].dtype == np.float32
    assert b['mask'].shape == (4, 12) and b['mask'].all()
    np.testing.assert_array_equal(b['targets'].argmax(-1), b['label'])
  weights = np.concatenate([b['weight'] for b in batches])
  assert weights.tolist() == [1.0] * 13 + [0.0] * 3  # the partial batch is padded
  # Clip i's image is constant i (apart from its resized first frame): read back who is where.
  ids = np.concatenate([b['image'][:, 0, -1, 0] for b in batches]).round().astype(int)
  assert sorted(ids[:13].tolist()) == list(range(13))
  assert set(ids[13:]) <= set(ids[:13])
  # Same (seed, epoch): same order; another epoch or seed: another order.
  again = np.concatenate([b['label'] for b in _epoch_rows(ex, cfg, 4, epoch=0)])
  np.testing.assert_array_equal(again, np.concatenate([b['label'] for b in batches]))
  ids1 = np.concatenate([b['image'][:, 0, -1, 0] for b in _epoch_rows(ex, cfg, 4, epoch=1)])
  ids_seed = np.concatenate([b['image'][:, 0, -1, 0]
                             for b in _epoch_rows(ex, cfg, 4, epoch=0, seed=(4, 0))])
  assert ids1.round().tolist() != ids.tolist() and ids_seed.round().tolist() != ids.tolist()
  # Resuming inside the epoch yields exactly the remaining batches.
  tail = _epoch_rows(ex, cfg, 4, epoch=0, start_step=2)
  for a, b in zip(tail, batches[2:]):
    np.testing.assert_array_equal(a['image'], b['image'])


@pytest.mark.parametrize('n,batch', [(3, 8), (3, 7), (1, 5), (5, 5)])
def test_any_batch_size_covers_every_clip_once(n, batch):
  """A batch larger than the selection (even > 2x: issue 11, item 5) is one step in which
  every clip has weight 1 once; the filler copies repeat the order and weigh 0."""
  ex = ip.prepare_images(make_examples(n=n), data_config())
  [b] = _epoch_rows(ex, data_config(), batch, epoch=0)
  assert b['image'].shape[0] == batch and b['weight'].tolist() == [1.0] * n + [0.0] * (
      batch - n)
  ids = b['image'][:, 0, -1, 0].round().astype(int)
  assert sorted(ids[:n].tolist()) == list(range(n))
  np.testing.assert_array_equal(ids[n:], np.resize(ids[:n], batch - n))


def test_host_slices_concatenate_to_the_global_batch():
  ex = make_examples(n=10)
  cfg = data_config(**{'crop_mode': 'crop_pad', 'input_shape': (8, 14),
                       'specaugment.enabled': True, 'mixup_alpha': 0.4})
  whole = _epoch_rows(ex, cfg, 6, epoch=2)
  parts = [_epoch_rows(ex, cfg, 6, epoch=2, process_index=p, process_count=3)
           for p in range(3)]
  for step, b in enumerate(whole):
    for key in b:
      np.testing.assert_array_equal(
          np.concatenate([parts[p][step][key] for p in range(3)]), b[key])
  with pytest.raises(ValueError, match='not divisible'):
    next(ip.train_batches(ex, cfg, batch_size=6, num_classes=8, seed=0, epoch=0,
                          process_index=0, process_count=4))


@pytest.mark.parametrize('n,batch,hosts', [(13, 4, 1), (5, 8, 2), (8, 4, 2), (1, 2, 1)])
def test_eval_covers_every_clip_exactly_once(n, batch, hosts):
  ex = ip.prepare_images(make_examples(n=n), data_config())
  seen = []
  num = ip.num_eval_batches(n, batch)
  for p in range(hosts):
    batches = list(ip.eval_batches(ex, data_config(), batch_size=batch, process_index=p,
                                   process_count=hosts))
    assert len(batches) == num
    for b in batches:
      assert b['image'].shape == (batch // hosts, 8, 12, 1)
      np.testing.assert_array_equal(b['valid'], b['index'] >= 0)
      idx = b['index'][b['valid']]
      np.testing.assert_array_equal(b['label'][b['valid']], ex.labels[idx])
      # The image is clip `index`'s own (value == index).
      np.testing.assert_allclose(b['image'][b['valid'], 0, -1, 0], idx, atol=1e-5)
      seen += idx.tolist()
  assert sorted(seen) == list(range(n))


def test_crop_pad_mode_masks_padding_and_crops_inside_the_clip():
  ex = make_examples(n=9)  # 10..18 frames
  cfg = data_config(crop_mode='crop_pad', input_shape=(8, 14))
  ex = ip.prepare_images(ex, cfg)
  for b in ip.eval_batches(ex, cfg, batch_size=9):
    for row in range(9):
      frames = 10 + row
      real = min(frames, 14)
      assert b['mask'][row].tolist() == [True] * real + [False] * (14 - real)
      if frames < 14:  # padded with the clip's floor (-80), after the real frames
        assert (b['image'][row, :, frames:, 0] == -80.0).all()
        assert b['image'][row, 0, 0, 0] == -80.0
      else:  # centred crop
        start = (frames - 14) // 2
        assert (b['image'][row, 0, 0, 0] == -80.0) == (start == 0)
  starts = set()
  for epoch in range(6):
    for b in ip.train_batches(ex, cfg, batch_size=3, num_classes=8, seed=0, epoch=epoch):
      for row in range(3):
        value = b['image'][row, 0, -1, 0]
        if value >= 4.0:  # clips 4.. (14+ frames) are cropped
          assert b['mask'][row].all()
          starts.add((int(value), bool(b['image'][row, 0, 0, 0] == -80.0)))
  assert (8, True) in starts and (8, False) in starts  # random crop positions vary
  with pytest.raises(ValueError, match=r'8\] mel bins.*input_shape\[0\] is 6'):
    ip.prepare_images(make_examples(), data_config(crop_mode='crop_pad',
                                                   input_shape=(6, 14)))
  with pytest.raises(ValueError, match='crop_mode'):
    ip.prepare_images(make_examples(), data_config(crop_mode='stretch'))


def test_specaugment_and_mixup():
  ex = ip.prepare_images(make_examples(n=8), data_config())
  plain = _epoch_rows(ex, data_config(), 8, epoch=0)[0]
  aug_cfg = data_config(**{'specaugment.enabled': True, 'mixup_alpha': 0.5})
  aug = _epoch_rows(ex, aug_cfg, 8, epoch=0)[0]
  again = _epoch_rows(ex, aug_cfg, 8, epoch=0)[0]
  for k in aug:
    np.testing.assert_array_equal(aug[k], again[k])  # seeded: reproducible
  np.testing.assert_allclose(aug['targets'].sum(-1), 1.0, rtol=1e-6)
  assert (aug['targets'] > 0).sum(-1).max() == 2  # two classes mixed
  assert not np.array_equal(aug['image'], plain['image'])
  # Evaluation is never augmented.
  eval_b = next(ip.eval_batches(ex, aug_cfg, batch_size=8))
  eval_plain = next(ip.eval_batches(ex, data_config(), batch_size=8))
  np.testing.assert_array_equal(eval_b['image'], eval_plain['image'])


def test_shard_and_prefetch():
  batch = {'x': np.arange(24).reshape(8, 3), 'y': np.arange(8)}
  s = ip.shard(batch, 4)
  assert s['x'].shape == (4, 2, 3) and s['y'][1].tolist() == [2, 3]
  with pytest.raises(ValueError, match='local devices'):
    ip.shard(batch, 3)
  assert list(ip.prefetch(iter(range(7)), size=2)) == list(range(7))

  def failing():
    yield 1
    raise RuntimeError('boom')

  with pytest.raises(RuntimeError, match='boom'):
    list(ip.prefetch(failing()))

  def slow():
    for i in range(3):
      time.sleep(0.05)
      yield i

  # The producer runs ahead while the consumer is busy.
  t0 = time.time()
  for _ in ip.prefetch(slow(), size=3):
    time.sleep(0.05)
  assert time.time() - t0 < 0.3


def test_time_stretch_and_freq_warp_are_exact_linear_resamplings():
  ramp = np.tile(np.arange(10, dtype=np.float32), (4, 1))  # (mel 4, frames 10): value = frame
  slow = ip.time_stretch(ramp, 1.5)  # 15 frames; torch-style half-pixel linear taps
  assert slow.shape == (4, 15)
  np.testing.assert_allclose(slow[0], np.clip((np.arange(15) + 0.5) / 1.5 - 0.5, 0, 9),
                             atol=1e-6)
  np.testing.assert_array_equal(ip.time_stretch(ramp, 1.0), ramp)
  bins = np.tile(np.arange(8, dtype=np.float32)[:, None], (1, 3))  # value = mel bin
  np.testing.assert_array_equal(ip.freq_warp(bins, 1.0), bins)
  up = ip.freq_warp(bins, 2.0)  # bin i reads bin i / 2: peaks move up
  np.testing.assert_allclose(up[:, 0], np.arange(8) / 2.0)
  down = ip.freq_warp(bins, 0.5)  # bin i reads bin 2 i, the top bin past the end
  np.testing.assert_allclose(down[:, 0], [0, 2, 4, 6, 7, 7, 7, 7])


def test_warps_in_training_only_and_seeded():
  ex = ip.prepare_images(make_examples(n=6), data_config(crop_mode='crop_pad',
                                                          input_shape=(8, 12)))
  cfg = data_config(crop_mode='crop_pad', input_shape=(8, 12), time_stretch=0.3,
                    freq_warp=0.2)
  a = _epoch_rows(ex, cfg, 6, epoch=0)[0]
  b = _epoch_rows(ex, cfg, 6, epoch=0)[0]
  np.testing.assert_array_equal(a['image'], b['image'])
  plain_cfg = data_config(crop_mode='crop_pad', input_shape=(8, 12))
  # Each clip is constant except frame 0, so a stretch shows as a longer quiet start or a
  # different real length in the mask.
  plain = _epoch_rows(ex, plain_cfg, 6, epoch=0)[0]
  assert not np.array_equal(a['mask'], plain['mask'])
  eval_a = next(ip.eval_batches(ex, cfg, batch_size=6))
  eval_plain = next(ip.eval_batches(ex, plain_cfg, batch_size=6))
  np.testing.assert_array_equal(eval_a['image'], eval_plain['image'])
  with pytest.raises(ValueError, match=r"time_stretch needs crop_mode 'crop_pad'"):
    ip.check_data_config(data_config(time_stretch=0.1))
  with pytest.raises(ValueError, match=r'freq_warp must be in \[0, 1\)'):
    ip.check_data_config(data_config(crop_mode='crop_pad', freq_warp=1.5))


def test_freq_mixstyle_moves_each_bins_statistics_to_the_mixture():
  rng = np.random.default_rng(0)
  image = rng.normal(size=(4, 20)).astype(np.float32) * [[1.], [2.], [3.], [4.]] + 5.0
  partner = rng.normal(size=(4, 30)).astype(np.float32) * 0.5 - 1.0
  np.testing.assert_allclose(ip.freq_mixstyle(image, partner, 1.0), image, atol=1e-5)
  for lam in (0.0, 0.25):
    out = ip.freq_mixstyle(image, partner, lam)
    want_mean = lam * image.mean(1) + (1 - lam) * partner.mean(1)
    want_std = (lam * np.sqrt(image.var(1, ddof=1) + 1e-6)
                + (1 - lam) * np.sqrt(partner.var(1, ddof=1) + 1e-6))
    np.testing.assert_allclose(out.mean(1), want_mean, atol=1e-5)
    np.testing.assert_allclose(out.std(1, ddof=1), want_std, rtol=1e-4)
    # Each bin is an increasing affine map of itself: the frames' order is kept.
    np.testing.assert_array_equal(np.argsort(out, 1), np.argsort(image, 1))


def test_freq_mixstyle_in_training_only_seeded_and_checked():
  ex = ip.prepare_images(make_examples(n=6), data_config(crop_mode='crop_pad',
                                                          input_shape=(8, 12)))
  # Give every clip a different spectral shape so a partner's statistics show.
  ex.images = [im + np.arange(8, dtype=np.float32)[:, None] * (i + 1) * (np.arange(
      im.shape[1]) % 2) for i, im in enumerate(ex.images)]
  cfg = data_config(crop_mode='crop_pad', input_shape=(8, 12), freq_mixstyle=1.0)
  plain_cfg = data_config(crop_mode='crop_pad', input_shape=(8, 12))
  a = _epoch_rows(ex, cfg, 6, epoch=0)[0]
  np.testing.assert_array_equal(a['image'], _epoch_rows(ex, cfg, 6, epoch=0)[0]['image'])
  plain = _epoch_rows(ex, plain_cfg, 6, epoch=0)[0]
  assert not np.allclose(a['image'], plain['image'])
  np.testing.assert_array_equal(a['mask'], plain['mask'])  # lengths and crops untouched
  off = _epoch_rows(ex, data_config(crop_mode='crop_pad', input_shape=(8, 12),
                                    freq_mixstyle=0.0), 6, epoch=0)[0]
  np.testing.assert_array_equal(off['image'], plain['image'])
  np.testing.assert_array_equal(next(ip.eval_batches(ex, cfg, batch_size=6))['image'],
                                next(ip.eval_batches(ex, plain_cfg, batch_size=6))['image'])
  with pytest.raises(ValueError, match=r'freq_mixstyle must be in \[0, 1\]'):
    ip.check_data_config(data_config(crop_mode='crop_pad', freq_mixstyle=1.5))
  with pytest.raises(ValueError, match=r'freq_mixstyle_alpha must be > 0'):
    ip.check_data_config(data_config(crop_mode='crop_pad', freq_mixstyle=0.5,
                                     freq_mixstyle_alpha=0.0))
  with pytest.raises(ValueError, match=r"freq_mixstyle needs crop_mode 'crop_pad'"):
    ip.check_data_config(data_config(freq_mixstyle=0.5))


def test_eval_frames_pads_every_clip_to_full_length():
  ex = ip.prepare_images(make_examples(n=5), data_config(crop_mode='crop_pad'))
  cfg = data_config(crop_mode='crop_pad', input_shape=(8, 12), eval_frames=16)
  b = next(ip.eval_batches(ex, cfg, batch_size=5))
  assert b['image'].shape == (5, 8, 16, 1)
  assert b['mask'].sum(1).tolist() == [10, 11, 12, 13, 14]  # every real frame, none cut
  train_b = next(ip.train_batches(ex, cfg, batch_size=5, num_classes=8, seed=0, epoch=0))
  assert train_b['image'].shape == (5, 8, 12, 1)  # training crops stay input_shape's
  with pytest.raises(ValueError, match="eval_frames needs crop_mode 'crop_pad'"):
    ip.check_data_config(data_config(eval_frames=16))


def test_normalize_per_utterance_and_per_mel_once():
  rng = np.random.RandomState(0)
  image = (rng.randn(4, 30) * np.array([[1.0], [2.0], [3.0], [4.0]]) - 40).astype(np.float32)
  utt = ip.normalize(image, 'utterance')
  assert abs(utt.mean()) < 1e-5 and abs(utt.std() - 1) < 1e-5
  mel = ip.normalize(image, 'mel')
  np.testing.assert_allclose(mel.mean(1), 0, atol=1e-5)
  np.testing.assert_allclose(mel.std(1), 1, atol=1e-5)
  flat = np.full((2, 5), -80.0, np.float32)
  flat[1] = np.arange(5)  # a silent bin: its tiny spread is not blown up
  assert np.all(ip.normalize(flat, 'mel')[0] == 0)
  ex = make_examples(n=3)
  cfg = data_config(crop_mode='crop_pad', normalize='mel')
  once = ip.prepare_images(ex, cfg)
  assert once.normalized == 'mel' and ip.prepare_images(once, cfg) is once
  assert ex.normalized == 'none'  # the input selection is not changed
  with pytest.raises(ValueError, match="already prepared with normalize='mel'"):
    ip.prepare_images(once, data_config(crop_mode='crop_pad', normalize='utterance'))
  with pytest.raises(ValueError, match='normalize must be one of'):
    ip.check_data_config(data_config(normalize='global'))
