"""Multi-corpus training: folds over any corpus's speakers, the fold split with extra
datasets, per-dataset sampling weights, configs/multicorpus.py end to end, and reading an
older dataset version (`config.data.version`).

The end-to-end runs train tests/test_train.py's TinyNet on `corpora_data_dir` (synthetic
RAVDESS speech + the real TESS and SAVEE mini folders).
"""
import collections
import json
import pathlib
import re
import shutil

import numpy as np
import pytest

import test_evaluate  # pylint: disable=g-bad-import-order  # tests/ is on sys.path
import test_train
from ser_jax import config_lib
from ser_jax import errors
from ser_jax import input_pipeline as ip
from ser_jax import models
from ser_jax import splits
from ser_jax import train


def _examples(speakers, label=0):
  """One 4 x 6 clip per speaker string (RAVDESS ones also get their actor)."""
  items = []
  for i, s in enumerate(speakers):
    item = {'log_mel': np.full((4, 6), float(i), np.float32), 'emotion': label,
            'speaker': s, 'file_name': f'{s}-{i}.wav'}
    if s.startswith('ravdess:'):
      item['actor'] = int(s.split(':')[1])
    items.append(item)
  return ip.read_source(items, dataset_name='test')


def test_read_source_keeps_speaker_strings_and_actor_only_builds():
  ex = _examples(['savee:DC', 'savee:JK', 'savee:DC'])
  assert ex.speakers.tolist() == ['savee:DC', 'savee:JK', 'savee:DC']
  assert ex.actors.tolist() == [0, 0, 0] and ex.groups.tolist() == [0, 0, 0]
  # A RAVDESS 1.0.0 build has `actor` but no `speaker`.
  old = ip.read_source([{'log_mel': np.zeros((4, 6)), 'emotion': 1, 'actor': 7}])
  assert old.speakers.tolist() == ['ravdess:07'] and old.actors.tolist() == [7]
  assert ip.select_speakers(old, [7]).file_names == ['']


def test_select_speakers_by_string_and_by_actor():
  ex = ip.concatenate([_examples(['ravdess:01', 'ravdess:02', 'ravdess:02']),
                       _examples(['tess:OAF', 'tess:YAF'])])
  assert ex.groups.tolist() == [0, 0, 0, 1, 1]
  assert ip.select_speakers(ex, [2]).speakers.tolist() == ['ravdess:02'] * 2
  assert ip.select_speakers(ex, ['tess:YAF']).groups.tolist() == [1]
  with pytest.raises(errors.UserError, match=r"no clips of speakers \['savee:DC'\] in test "
                     r"\(it holds speakers \['ravdess:01', 'ravdess:02', 'tess:OAF', "
                     r"'tess:YAF'\]\)"):
    ip.select_speakers(ex, ['savee:DC'], dataset_name='test')
  with pytest.raises(errors.UserError, match=r'no clips of actors \[5\] .* holds actors '
                     r'\[1, 2\]'):
    ip.select_speakers(ex, [5], dataset_name='test')


def test_fold_split_tests_on_dataset_0_and_keeps_test_speakers_out_of_training():
  speech = _examples(['ravdess:01', 'ravdess:02', 'ravdess:03'])
  song = _examples(['ravdess:01', 'ravdess:02', 'ravdess:03'])  # the same three actors
  tess = _examples(['tess:OAF', 'tess:YAF'])
  ex = ip.concatenate([speech, song, tess])
  fold = splits.Fold(train=(1, 3), test=(2,))
  train, test = ip.fold_split(ex, fold)
  assert test.speakers.tolist() == ['ravdess:02'] and test.groups.tolist() == [0]
  # Speech actors 1 and 3, song actors 1 and 3 (not the held-out 2), all of TESS.
  assert list(zip(train.groups.tolist(), train.speakers.tolist())) == [
      (0, 'ravdess:01'), (0, 'ravdess:03'), (1, 'ravdess:01'), (1, 'ravdess:03'),
      (2, 'tess:OAF'), (2, 'tess:YAF')]
  assert not set(train.speakers.tolist()) & set(test.speakers.tolist())


def test_group_quotas_and_weighted_epochs():
  assert ip.group_quotas([56, 45, 28], (2, 1, 1), 129).tolist() == [65, 32, 32]
  assert ip.group_quotas([10, 10], (1, 0), 20).tolist() == [20, 0]
  with pytest.raises(errors.UserError, match='expected 3 non-negative weights'):
    ip.group_quotas([1, 2, 3], (1, 1), 6)
  with pytest.raises(errors.UserError, match=r'give datasets \[1\] a weight'):
    ip.group_quotas([4, 0], (1, 1), 4)
  groups = np.repeat([0, 1, 2], [56, 45, 28])
  order = ip.epoch_order(129, (41, 0), 3, groups, (2, 1, 1))
  counts = collections.Counter(groups[order].tolist())
  assert len(order) == 129 and counts == {0: 65, 1: 32, 2: 32}
  assert len(set(order[groups[order] == 1].tolist())) == 32  # TESS: 32 distinct of 45
  assert set(order[groups[order] == 2].tolist()) == set(range(101, 129))  # SAVEE: all, +4
  assert np.array_equal(order, ip.epoch_order(129, (41, 0), 3, groups, (2, 1, 1)))
  assert not np.array_equal(order, ip.epoch_order(129, (41, 0), 4, groups, (2, 1, 1)))
  # Without weights: the unweighted permutation, whatever the groups.
  assert np.array_equal(ip.epoch_order(129, (41, 0), 3, groups),
                        ip.epoch_order(129, (41, 0), 3))


def test_folds_over_a_corpus_speakers():
  c = config_lib.default()
  c.data.name = 'ser_savee'
  c.folds.scheme = 'loso'
  speakers = ('savee:DC', 'savee:JK', 'savee:KL')
  assert config_lib.validate(c) == []  # the folds need the data's speakers
  folds = config_lib.get_folds(c, speakers)
  assert [f.test for _, f in folds] == [('savee:DC',), ('savee:JK',), ('savee:KL',)]
  assert folds[0][1].train == ('savee:JK', 'savee:KL')
  c.folds.scheme, c.folds.k, c.folds.seed = 'kfold', 2, 0
  tests = [set(f.test) for _, f in config_lib.get_folds(c, speakers)]
  assert len(tests) == 2 and set().union(*tests) == set(speakers)
  c.folds.test_actors = ('savee:KL',)
  [(_, fold)] = config_lib.get_folds(c, speakers)
  assert fold.test == ('savee:KL',) and fold.train == ('savee:DC', 'savee:JK')
  c.folds.test_actors = ('savee:XX',)
  with pytest.raises(errors.UserError, match=r"speakers \['savee:XX'\] outside the data's"):
    config_lib.get_folds(c, speakers)
  c.folds.test_actors, c.folds.scheme = (), 'predecessor'
  with pytest.raises(errors.UserError, match="RAVDESS's 4 folds; for ser_savee choose 'loso'"):
    config_lib.validate(c)
  # RAVDESS keeps its actor folds, whatever the data holds.
  assert [f.test for _, f in config_lib.get_folds(config_lib.default())][0] == (
      4, 9, 10, 14, 15, 17)


@pytest.mark.parametrize('field,value,message', [
    ('data.extra_train', ('tess',), "config.data.extra_train has 'tess': unknown dataset "
     "(did you mean 'ser_tess'?); known:"),
    ('data.extra_train', ('ravdess/speech',), 'repeats a dataset'),
    ('data.sampling_weights', (1.0, 1.0), 'expected 1 non-negative weights'),
])
def test_validate_multicorpus_settings(field, value, message):
  c = config_lib.default()
  c.update_from_flattened_dict({field: value})
  with pytest.raises(errors.UserError, match=re.escape(message)):
    config_lib.validate(c)


def test_labels_outside_the_model_are_refused():
  ex = ip.concatenate([_examples(['ravdess:01']), _examples(['emodb:03'], label=8)])
  with pytest.raises(errors.UserError, match=r"ser_emodb/x holds 1 clips of \['boredom'\] "
                     r'.*set config.model.num_classes=9'):
    ip.check_labels(ex, 8, ['ravdess/speech_x', 'ser_emodb/x'])
  ip.check_labels(ex, 9, ['ravdess/speech_x', 'ser_emodb/x'])


# ----------------------------------------------------------------------------- end to end


def _tiny_multicorpus(corpora_data_dir, **overrides):
  c = test_evaluate._load_config_module('multicorpus').get_config('tiny')  # pylint: disable=protected-access
  c.model.name = 'tiny'
  c.data.input_shape = (16, 16)
  c.data.data_dir = corpora_data_dir
  c.data.download = False
  c.num_epochs = 1
  c.batch_size = c.eval_batch_size = 8
  c.update_from_flattened_dict(overrides)
  return c


@pytest.mark.slow
def test_multicorpus_config_trains_and_tests_on_ravdess(corpora_data_dir, tmp_path,
                                                        monkeypatch):
  monkeypatch.setitem(models.MODELS, 'tiny', test_train.TinyNet)
  c = _tiny_multicorpus(corpora_data_dir)
  assert (c.data.name, tuple(c.data.extra_train)) == ('ravdess/speech',
                                                       ('ser_tess', 'ser_savee'))
  summary = train.train_and_evaluate(c, tmp_path)
  [fold] = summary['folds']
  # Predecessor fold 0 on the synthetic actors 1..8: test actor 4 (8 clips; the fold's
  # other test actors 9, 10, 14, 15, 17 have no clips); training on the other 7 actors'
  # 56 clips + TESS's 45 + SAVEE's 28.
  assert fold['test_actors'] == [4] and fold['num_examples'] == 8
  assert fold['train_actors'] == [1, 2, 3, 5, 6, 7, 8, *sorted(
      set(ip.load_all(c.data).speakers.tolist()) - {f'ravdess:{a:02d}' for a in range(1, 9)})]
  assert fold['num_train_examples'] == 56 + 45 + 28
  train_ex, _ = ip.fold_split(ip.load_all(c.data), config_lib.get_folds(c)[0][1])
  order = ip.epoch_order(len(train_ex), (c.seed, 0), 0, train_ex.groups,
                         tuple(c.data.sampling_weights))
  assert collections.Counter(train_ex.groups[order].tolist()) == {0: 65, 1: 32, 2: 32}
  results = (tmp_path / 'results.md').read_text()
  assert 'trained with `ser_tess`, `ser_savee` (sampling weights 2, 1, 1)' in results


@pytest.mark.slow
def test_multicorpus_tested_on_savee_speakers(corpora_data_dir, tmp_path, monkeypatch):
  monkeypatch.setitem(models.MODELS, 'tiny', test_train.TinyNet)
  c = _tiny_multicorpus(corpora_data_dir, **{
      'data.name': 'ser_savee', 'data.extra_train': ('ravdess/speech',),
      'data.sampling_weights': (), 'folds.scheme': 'loso'})
  summary = train.train_and_evaluate(c, tmp_path)
  [fold] = summary['folds']
  # Trained on SAVEE's JK and RAVDESS's actors (ints, as RAVDESS folds name them).
  assert fold['test_actors'] == ['savee:DC']
  assert fold['train_actors'] == [*range(1, 9), 'savee:JK']
  assert fold['num_examples'] == 14 and fold['num_train_examples'] == 14 + 64


def test_older_dataset_versions_are_read_never_built_over(synthetic_data_dir, tmp_path):
  # A data_dir with only an older build (here: the synthetic 2.0.0 build relabelled 1.0.0).
  old = tmp_path / 'ravdess' / 'speech_predecessor48k' / '1.0.0'
  shutil.copytree(pathlib.Path(synthetic_data_dir) / 'ravdess' / 'speech_predecessor48k' /
                  '2.0.0', old)
  info = json.loads((old / 'dataset_info.json').read_text())
  (old / 'dataset_info.json').write_text(json.dumps(dict(info, version='1.0.0')))
  c = config_lib.default()
  c.data.data_dir = str(tmp_path)
  with pytest.raises(errors.UserError, match=r"holds ravdess/speech_predecessor48k 1.0.0, not "
                     r"2.0.0 .*config.data.version='1.0.0'"):
    ip.prepare_dataset(c.data)
  assert sorted(p.name for p in old.parent.iterdir()) == ['1.0.0']  # nothing was built
  c.data.version = '1.0.0'
  assert config_lib.tfds_name(c.data) == 'ravdess/speech_predecessor48k:1.0.0'
  assert config_lib.tfds_name(c.data, 'ser_tess') == 'ser_tess/predecessor48k'
  ex = ip.read_source(ip.prepare_dataset(c.data).as_data_source(split='train'))
  assert len(ex) == 64 and ex.speakers[0].startswith('ravdess:')
  c.data.version = '0.9.0'
  with pytest.raises(errors.UserError, match=r"config.data.version='0.9.0': .* not prepared"):
    ip.prepare_dataset(c.data)
