"""Building and reading the ravdess dataset never imports TensorFlow."""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_build_and_read_without_tensorflow(tmp_path):
  script = textwrap.dedent(f"""
      import json, sys
      sys.path[:0] = [{str(REPO_ROOT)!r}, {str(REPO_ROOT / 'tests')!r}]
      import synthetic
      import tensorflow_datasets as tfds
      synthetic.write_synthetic_ravdess({str(tmp_path / 'wavs')!r}, actors=[1, 2],
                                        emotions=[2, 3], seconds=0.1)
      synthetic.build_ravdess({str(tmp_path / 'wavs')!r}, {str(tmp_path / 'tfds')!r},
                              num_workers=2)
      ds = tfds.data_source('ravdess/speech_predecessor48k', split='train',
                            data_dir={str(tmp_path / 'tfds')!r})
      n = len(ds)
      shape = list(ds[0]['log_mel'].shape)
      tf = sorted(m for m in sys.modules
                  if m == 'tensorflow' or m.startswith('tensorflow.'))
      print(json.dumps({{'n': n, 'shape': shape, 'tf': tf}}))
  """)
  env = dict(os.environ, TFDS_DISABLE_PROGRESS_BAR="1")
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env=env, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["n"] == 4 and result["shape"][0] == 128
  assert result["tf"] == [], f"TensorFlow modules were imported: {result['tf'][:5]}"
