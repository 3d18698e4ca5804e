"""Speaker-independent cross-validation folds.

Every fold is a `Fold(train, test)` of sorted speaker ids: RAVDESS actor numbers (1..24,
the default of every function here), or any other sortable ids, e.g. the `speaker`
strings the corpus builders store (`'savee:DC'`, `'emodb:03'`). The dataset keeps all
clips in one `train` split; the input pipeline keeps the clips whose speaker is in
`fold.train` or `fold.test`. No speaker is ever on both sides (`check_fold`).

- `predecessor_folds()`: the 4 RAVDESS folds the predecessor reported on (scikit-learn
  `KFold(n_splits=4, shuffle=True, random_state=351)` over actors 1..24).
- `kfold(k, seed, speakers)`: seeded k-fold over speakers. It follows scikit-learn's KFold
  recipe (a `RandomState(seed)` permutation cut into k consecutive chunks, the first
  `n % k` chunks one larger), so `kfold(4, 351)` gives the predecessor's folds.
- `leave_one_speaker_out(speakers)`: one fold per speaker; `leave_one_actor_out()` is it
  over the RAVDESS actors.
- `speaker_folds(speakers, seed)`: the default for any corpus: leave-one-speaker-out when
  there are few speakers (TESS 2, SAVEE 4, EmoDB 10), else seeded k-fold (CREMA-D's 91).
- `validation_fold(fold, n, seed)`: for choosing recipes without the test speakers: `n` of
  the fold's training speakers become the held-out set, the rest train, and the fold's test
  speakers are left out entirely.
"""

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

NUM_ACTORS = 24
ACTORS = tuple(range(1, NUM_ACTORS + 1))

# Test actors of the predecessor's 4 folds, in its fold order.
PREDECESSOR_TEST_FOLDS = (
    (4, 9, 10, 14, 15, 17),
    (5, 13, 16, 18, 20, 23),
    (1, 2, 6, 8, 19, 21),
    (3, 7, 11, 12, 22, 24),
)
PREDECESSOR_SEED = 351
# Up to this many speakers, `speaker_folds` leaves one speaker out per fold.
MAX_LOSO_SPEAKERS = 10

Speaker = Hashable  # an int actor id or a corpus speaker string; sortable


@dataclasses.dataclass(frozen=True)
class Fold:
  """One speaker-independent split: speaker (RAVDESS: actor) ids to train and test on."""
  train: tuple[Speaker, ...]
  test: tuple[Speaker, ...]


def _allowed_text(allowed: set) -> str:
  if all(isinstance(a, int) for a in allowed):
    return f"outside {min(allowed)}..{max(allowed)}"
  return f"outside the {len(allowed)} speakers {sorted(allowed)[:10]}" + (
      " ..." if len(allowed) > 10 else "")


def check_fold(fold: Fold, actors: Sequence[Speaker] = ACTORS) -> Fold:
  """Raises ValueError unless `fold` is a valid speaker-independent split.

  Args:
    fold: the fold to check.
    actors: the allowed speaker ids (default: RAVDESS actors 1..24).

  Returns:
    `fold`, unchanged, so calls can be chained.
  """
  allowed = set(actors)
  train, test = list(fold.train), list(fold.test)
  for side, ids in (("train", train), ("test", test)):
    if not ids:
      raise ValueError(f"Fold has no {side} speakers: {fold}")
    if len(set(ids)) != len(ids):
      raise ValueError(f"Fold lists a speaker twice in {side}: {sorted(ids)}")
    bad = sorted(a for a in ids if a not in allowed)
    if bad:
      raise ValueError(f"Fold {side} speakers {bad} are {_allowed_text(allowed)}")
  both = sorted(set(train) & set(test))
  if both:
    raise ValueError(
        f"Speakers {both} are in both train and test; folds must be speaker-independent")
  return fold


def _speakers(speakers: Iterable[Speaker]) -> tuple[Speaker, ...]:
  """Sorted distinct ids; NumPy integers become ints (so folds compare and print simply)."""
  ids = {int(s) if isinstance(s, (int, np.integer)) else s for s in speakers}
  return tuple(sorted(ids))


def _make_fold(test: Iterable[Speaker], speakers: Sequence[Speaker]) -> Fold:
  test = _speakers(test)
  train = tuple(a for a in sorted(speakers) if a not in test)
  return check_fold(Fold(train=train, test=test), speakers)


def predecessor_folds() -> list[Fold]:
  """The predecessor's 4 folds, each training on 18 actors and testing on 6."""
  return [_make_fold(t, ACTORS) for t in PREDECESSOR_TEST_FOLDS]


def kfold(k: int, seed: int, actors: Sequence[Speaker] = ACTORS) -> list[Fold]:
  """Seeded k-fold cross-validation over speakers (scikit-learn KFold with shuffle).

  Args:
    k: number of folds, 2 <= k <= number of speakers.
    seed: seed of the speaker permutation.
    actors: speaker ids to split (default: RAVDESS actors 1..24); the permutation is
      applied to them in sorted order.

  Returns:
    k folds whose test sets partition the speakers.
  """
  actors = _speakers(actors)
  if not 2 <= k <= len(actors):
    raise ValueError(f"kfold: k={k} must be between 2 and the number of speakers "
                     f"({len(actors)})")
  order = np.arange(len(actors))
  np.random.RandomState(seed).shuffle(order)
  sizes = np.full(k, len(actors) // k)
  sizes[:len(actors) % k] += 1
  folds, start = [], 0
  for size in sizes:
    folds.append(_make_fold((actors[i] for i in order[start:start + size]), actors))
    start += size
  return folds


def leave_one_speaker_out(speakers: Sequence[Speaker]) -> list[Fold]:
  """One fold per speaker, testing on that speaker alone."""
  speakers = _speakers(speakers)
  if len(speakers) < 2:
    raise ValueError(f"leave_one_speaker_out: needs at least 2 speakers, got {speakers}")
  return [_make_fold((a,), speakers) for a in speakers]


def leave_one_actor_out(actors: Sequence[int] = ACTORS) -> list[Fold]:
  """One fold per RAVDESS actor, testing on that actor alone."""
  return leave_one_speaker_out(actors)


def speaker_folds(speakers: Iterable[Speaker], seed: int = 0, k: int = 5,
                  max_loso: int = MAX_LOSO_SPEAKERS) -> list[Fold]:
  """The default speaker-independent folds of a corpus.

  Args:
    speakers: the corpus's speaker ids (e.g. its examples' `speaker` values; repeats
      are fine).
    seed: seed of the k-fold permutation (unused for leave-one-speaker-out).
    k: number of folds when there are more than `max_loso` speakers.
    max_loso: up to this many speakers, one fold per speaker.

  Returns:
    Leave-one-speaker-out folds for up to `max_loso` speakers, else `kfold(k, seed)`.
  """
  speakers = _speakers(speakers)
  if len(speakers) <= max_loso:
    return leave_one_speaker_out(speakers)
  return kfold(k, seed, speakers)


def _ravdess_gender(actor: int) -> str:
  return "male" if actor % 2 else "female"  # odd RAVDESS actors are male


def validation_fold(fold: Fold, num_actors: int, seed: int = 0,
                    gender: Mapping[Speaker, str] | Callable[[Speaker], str] | None = None
                    ) -> Fold:
  """Holds out `num_actors` of `fold`'s training speakers as validation.

  The returned fold trains on the remaining training speakers and "tests" on the held-out
  ones; `fold.test` is in neither side, so a choice made on it never sees the reported
  test speakers. The choice is fixed and gender-balanced: walking the training speakers in
  the order of `np.random.RandomState(seed).permutation` (of their sorted list), it takes
  the first ceil(n/2) male and floor(n/2) female speakers.

  Args:
    fold: a speaker-independent fold.
    num_actors: how many training speakers to hold out, 1 <= n < len(fold.train).
    seed: seed of the permutation.
    gender: each speaker's 'male' or 'female' (a mapping or a function); default the
      RAVDESS rule (odd actors are male).

  Returns:
    Fold(train=fold.train minus the held-out speakers, test=the held-out speakers).
  """
  train = tuple(sorted(fold.train))
  if not 1 <= num_actors < len(train):
    raise ValueError(f"validation_fold: num_actors={num_actors} must be between 1 and "
                     f"{len(train) - 1} (the fold trains on {len(train)} speakers)")
  gender_of = (_ravdess_gender if gender is None else
               gender.__getitem__ if isinstance(gender, Mapping) else gender)
  want = {"male": (num_actors + 1) // 2, "female": num_actors // 2}
  held = []
  for i in np.random.RandomState(seed).permutation(len(train)):
    g = gender_of(train[i])
    if want.get(g, 0) > 0:
      want[g] -= 1
      held.append(train[i])
  if len(held) != num_actors:
    raise ValueError(f"validation_fold: the fold's training speakers {list(train)} do not "
                     f"have {num_actors} speakers in a gender-balanced split")
  return _make_fold(held, train)
