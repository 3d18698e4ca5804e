"""Speaker-independent cross-validation folds over RAVDESS actors.

Every fold is a `Fold(train, test)` of sorted actor ids (1..24). The dataset keeps
all clips in one `train` split; the input pipeline keeps the clips whose `actor` is in
`fold.train` or `fold.test`. No actor is ever on both sides (`check_fold`).

- `predecessor_folds()`: the 4 folds the predecessor reported on (scikit-learn
  `KFold(n_splits=4, shuffle=True, random_state=351)` over actors 1..24).
- `kfold(k, seed)`: seeded k-fold over actors. It follows scikit-learn's KFold recipe
  (a `RandomState(seed)` permutation cut into k consecutive chunks, the first
  `n % k` chunks one larger), so `kfold(4, 351)` gives the predecessor's folds.
- `leave_one_actor_out()`: 24 folds, each testing on one actor.
- `validation_fold(fold, n, seed)`: for choosing recipes without the test actors: `n` of
  the fold's training actors become the held-out set, the rest train, and the fold's test
  actors are left out entirely.
"""

import dataclasses
from collections.abc import Iterable, Sequence

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


@dataclasses.dataclass(frozen=True)
class Fold:
  """One speaker-independent split: actor ids used for training and for testing."""
  train: tuple[int, ...]
  test: tuple[int, ...]


def check_fold(fold: Fold, actors: Sequence[int] = ACTORS) -> Fold:
  """Raises ValueError unless `fold` is a valid speaker-independent split.

  Args:
    fold: the fold to check.
    actors: the allowed actor ids (default 1..24).

  Returns:
    `fold`, unchanged, so calls can be chained.
  """
  allowed = set(actors)
  train, test = list(fold.train), list(fold.test)
  for side, ids in (("train", train), ("test", test)):
    if not ids:
      raise ValueError(f"Fold has no {side} actors: {fold}")
    if len(set(ids)) != len(ids):
      raise ValueError(f"Fold lists an actor twice in {side}: {sorted(ids)}")
    bad = sorted(a for a in ids if a not in allowed)
    if bad:
      raise ValueError(
          f"Fold {side} actors {bad} are outside {min(allowed)}..{max(allowed)}")
  both = sorted(set(train) & set(test))
  if both:
    raise ValueError(
        f"Actors {both} are in both train and test; folds must be speaker-independent")
  return fold


def _make_fold(test: Iterable[int], actors: Sequence[int]) -> Fold:
  test = tuple(sorted(int(a) for a in test))
  train = tuple(a for a in sorted(actors) if a not in test)
  return check_fold(Fold(train=train, test=test), actors)


def predecessor_folds() -> list[Fold]:
  """The predecessor's 4 folds, each training on 18 actors and testing on 6."""
  return [_make_fold(t, ACTORS) for t in PREDECESSOR_TEST_FOLDS]


def kfold(k: int, seed: int, actors: Sequence[int] = ACTORS) -> list[Fold]:
  """Seeded k-fold cross-validation over actors (scikit-learn KFold with shuffle).

  Args:
    k: number of folds, 2 <= k <= len(actors).
    seed: seed of the actor permutation.
    actors: actor ids to split (default 1..24).

  Returns:
    k folds whose test sets partition `actors`.
  """
  actors = tuple(int(a) for a in actors)
  if not 2 <= k <= len(actors):
    raise ValueError(f"kfold: k={k} must be between 2 and the number of actors "
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


def leave_one_actor_out(actors: Sequence[int] = ACTORS) -> list[Fold]:
  """One fold per actor, testing on that actor alone."""
  return [_make_fold((a,), actors) for a in sorted(actors)]


def validation_fold(fold: Fold, num_actors: int, seed: int = 0) -> Fold:
  """Holds out `num_actors` of `fold`'s training actors as validation.

  The returned fold trains on the remaining training actors and "tests" on the held-out
  ones; `fold.test` is in neither side, so a choice made on it never sees the reported
  test actors. The choice is fixed and gender-balanced: walking the training actors in the
  order of `np.random.RandomState(seed).permutation`, it takes the first ceil(n/2) male
  (odd) and floor(n/2) female (even) actors.

  Args:
    fold: a speaker-independent fold.
    num_actors: how many training actors to hold out, 1 <= n < len(fold.train).
    seed: seed of the permutation.

  Returns:
    Fold(train=fold.train minus the held-out actors, test=the held-out actors).
  """
  train = tuple(sorted(fold.train))
  if not 1 <= num_actors < len(train):
    raise ValueError(f"validation_fold: num_actors={num_actors} must be between 1 and "
                     f"{len(train) - 1} (the fold trains on {len(train)} actors)")
  want = {1: (num_actors + 1) // 2, 0: num_actors // 2}  # actor % 2 -> count (1 = male)
  held = []
  for a in np.random.RandomState(seed).permutation(train):
    if want[a % 2] > 0:
      want[a % 2] -= 1
      held.append(int(a))
  if len(held) != num_actors:
    raise ValueError(f"validation_fold: the fold's training actors {list(train)} do not "
                     f"have {num_actors} actors in a gender-balanced split")
  return _make_fold(held, train)
