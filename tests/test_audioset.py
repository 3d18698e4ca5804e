"""ser_jax.audioset: AudioSet's class list and top-k sigmoid tags."""
import pathlib

import numpy as np
import pytest

from ser_jax import audioset

LABELS = (pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'weights' / 'efficientat'
          / audioset.LABELS_FILE)


def _write(path, text):
  path.write_text(text, encoding='utf-8')
  return path


def test_read_labels_and_top_k(tmp_path):
  path = _write(tmp_path / 'labels.csv', 'index,mid,display_name\n0,/m/a,"Speech"\n'
                '1,/m/b,"Male speech, man speaking"\n2,/m/c,Music\n')
  labels = audioset.read_labels(path)
  assert labels == ['Speech', 'Male speech, man speaking', 'Music']
  logits = np.array([[2.0, 0.0, -1.0], [-3.0, 1.0, 4.0]])
  tags = audioset.top_k(logits, labels, k=2)
  assert [[(i, name) for i, name, _ in row] for row in tags] == [
      [(0, 'Speech'), (1, 'Male speech, man speaking')],
      [(2, 'Music'), (1, 'Male speech, man speaking')]]
  assert tags[0][0][2] == pytest.approx(1 / (1 + np.exp(-2.0)))
  assert tags[1][1][2] == pytest.approx(1 / (1 + np.exp(-1.0)))
  with pytest.raises(ValueError, match=r'logits of shape \(1, 2\) for 3 labels'):
    audioset.top_k(np.zeros((1, 2)), labels)


@pytest.mark.parametrize('text, message', [
    ('', 'not an AudioSet class list'),
    ('id,name\n0,Speech\n', 'not an AudioSet class list'),
    ('index,mid,display_name\n0,/m/a,Speech\n2,/m/c,Music\n', r'line 3: expected "1,<mid>'),
    ('index,mid,display_name\n', 'holds no classes'),
])
def test_read_labels_rejects_other_files(tmp_path, text, message):
  path = _write(tmp_path / 'bad.csv', text)
  with pytest.raises(ValueError, match=message):
    audioset.read_labels(path)


def test_real_class_list():
  if not LABELS.exists():
    pytest.skip(f'{LABELS} not available')
  labels = audioset.read_labels(LABELS)
  assert len(labels) == audioset.NUM_CLASSES
  assert labels[:4] == ['Speech', 'Male speech, man speaking', 'Female speech, woman speaking',
                        'Child speech, kid speaking']
