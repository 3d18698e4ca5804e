"""Tests for ser_jax.splits: speaker-independent folds."""
import pytest

from ser_jax import splits


def _assert_partition(folds, actors=splits.ACTORS):
  tests = [a for f in folds for a in f.test]
  assert sorted(tests) == sorted(actors)  # every actor tested exactly once
  for f in folds:
    assert set(f.train) | set(f.test) == set(actors)
    assert not set(f.train) & set(f.test)


def test_predecessor_folds_exact():
  folds = splits.predecessor_folds()
  assert [f.test for f in folds] == [
      (4, 9, 10, 14, 15, 17), (5, 13, 16, 18, 20, 23),
      (1, 2, 6, 8, 19, 21), (3, 7, 11, 12, 22, 24)]
  assert all(len(f.train) == 18 for f in folds)
  _assert_partition(folds)


def test_kfold_reproduces_sklearn_and_predecessor():
  sklearn = pytest.importorskip("sklearn.model_selection")
  import numpy as np
  actors = np.arange(1, 25)
  for k, seed in ((4, 351), (5, 0), (7, 3)):
    want = [tuple(sorted(actors[te])) for _, te in
            sklearn.KFold(k, shuffle=True, random_state=seed).split(actors)]
    assert [f.test for f in splits.kfold(k, seed)] == want
  assert splits.kfold(4, 351) == splits.predecessor_folds()


def test_kfold_seed_changes_folds_and_sizes_balance():
  a, b = splits.kfold(5, 1), splits.kfold(5, 2)
  assert a != b
  _assert_partition(a)
  assert sorted(len(f.test) for f in a) == [4, 5, 5, 5, 5]


def test_leave_one_actor_out():
  folds = splits.leave_one_actor_out()
  assert len(folds) == 24
  assert [f.test for f in folds] == [(a,) for a in range(1, 25)]
  assert all(len(f.train) == 23 for f in folds)


@pytest.mark.parametrize("fold, msg", [
    (splits.Fold(train=(1, 2, 3), test=(3, 4)), "both train and test"),
    (splits.Fold(train=(1, 2), test=(25,)), "outside"),
    (splits.Fold(train=(0, 2), test=(3,)), "outside"),
    (splits.Fold(train=(1, 1), test=(3,)), "twice"),
    (splits.Fold(train=(), test=(3,)), "no train"),
])
def test_check_fold_rejects(fold, msg):
  with pytest.raises(ValueError, match=msg):
    splits.check_fold(fold)


def test_kfold_bad_k():
  with pytest.raises(ValueError, match="k=1"):
    splits.kfold(1, 0)
  with pytest.raises(ValueError, match="k=25"):
    splits.kfold(25, 0)


def test_validation_fold_holds_out_training_actors_only():
  for fold in splits.predecessor_folds():
    val = splits.validation_fold(fold, 3, seed=0)
    assert set(val.train) | set(val.test) == set(fold.train)
    assert not set(val.test) & set(fold.test) and not set(val.train) & set(fold.test)
    assert len(val.test) == 3 and sum(a % 2 for a in val.test) == 2  # 2 male, 1 female
    assert splits.validation_fold(fold, 3, seed=0) == val  # fixed
  assert splits.validation_fold(splits.predecessor_folds()[0], 4, seed=1) != \
      splits.validation_fold(splits.predecessor_folds()[0], 4, seed=0)


def test_validation_fold_rejects_bad_sizes():
  fold = splits.predecessor_folds()[0]
  for n in (0, 18):
    with pytest.raises(ValueError, match='num_actors'):
      splits.validation_fold(fold, n)


def test_folds_over_corpus_speaker_strings():
  savee = ["savee:DC", "savee:JE", "savee:JK", "savee:KL"]
  folds = splits.speaker_folds(savee + savee)  # repeats (one per clip) are fine
  assert [f.test for f in folds] == [(s,) for s in savee]
  assert folds[0].train == ("savee:JE", "savee:JK", "savee:KL")
  _assert_partition(folds, savee)
  crema = [f"crema_d:{a}" for a in range(1001, 1092)]
  folds = splits.speaker_folds(crema, seed=3)  # more than 10 speakers: seeded 5-fold
  assert len(folds) == 5 and sorted(len(f.test) for f in folds) == [18, 18, 18, 18, 19]
  _assert_partition(folds, crema)
  assert folds == splits.kfold(5, 3, crema) != splits.speaker_folds(crema, seed=4)
  assert len(splits.speaker_folds([f"emodb:{i:02d}" for i in range(10)])) == 10  # LOSO


def test_check_fold_rejects_unknown_and_shared_speaker_strings():
  speakers = ("tess:OAF", "tess:YAF")
  splits.check_fold(splits.Fold(train=("tess:OAF",), test=("tess:YAF",)), speakers)
  with pytest.raises(ValueError, match=r"\['tess:XAF'\] are outside the 2 speakers"):
    splits.check_fold(splits.Fold(train=("tess:OAF",), test=("tess:XAF",)), speakers)
  with pytest.raises(ValueError, match="both train and test"):
    splits.check_fold(splits.Fold(train=speakers, test=("tess:YAF",)), speakers)
  with pytest.raises(ValueError, match="at least 2 speakers"):
    splits.leave_one_speaker_out(["tess:OAF"])


def test_validation_fold_with_a_gender_map():
  gender = {"emodb:03": "male", "emodb:08": "female", "emodb:09": "female",
            "emodb:10": "male", "emodb:11": "male", "emodb:13": "female"}
  fold = splits.Fold(train=tuple(sorted(gender)[:-1]), test=("emodb:13",))
  val = splits.validation_fold(fold, 2, seed=0, gender=gender)
  assert sorted(gender[s] for s in val.test) == ["female", "male"]
  assert set(val.train) | set(val.test) == set(fold.train)
  assert splits.validation_fold(fold, 2, seed=0, gender=gender.get) == val
