"""Damaged and misplaced input: a generated corpus of every kind of bad file (issue 11).

`bad_corpus` writes, from synthetic RAVDESS-named WAVs, one folder holding each bad input
next to good files; `BAD_INPUTS` says what must happen to each. One build must report
every fatal file at once and leave nothing a later run could trust; the per-item tests
below check one behaviour each (damaged audio, zips, the data path, stale builds).
"""
import fcntl
import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

import synthetic
import tfds_ravdess  # pylint: disable=unused-import
from ser_jax import features
from ser_jax import inference
from tfds_ravdess import sources

CONFIG = "speech_predecessor48k"
LOCK_FILE = ".build_lock.json"  # what tfds_corpora.builder writes into incomplete.*/


def _name(emotion, actor, **kw):
  return synthetic.file_name(kw.get("vocal_channel", 1), emotion, kw.get("intensity", 1),
                             kw.get("statement", 1), kw.get("repetition", 1), actor)


def _wav(path, seconds=0.2, sample_rate=48000, **kw):
  return synthetic.write_clip(path, seconds, sample_rate, **kw)


def _zip(zip_path, members: dict[str, bytes], stored=False):
  with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED if stored else
                       zipfile.ZIP_DEFLATED) as z:
    for name, data in members.items():
      z.writestr(name, data)
  return zip_path


def _corrupt_member(zip_path, member):
  """Flips a byte inside a stored member's data, so reading it fails the CRC-32 check."""
  with zipfile.ZipFile(zip_path) as z:
    info = z.getinfo(member)
  data = bytearray(pathlib.Path(zip_path).read_bytes())
  # Local header: 30 bytes + name + extra field, then the (stored) data.
  name_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
  extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
  data[info.header_offset + 30 + name_len + extra_len + 100] ^= 0xFF
  pathlib.Path(zip_path).write_bytes(bytes(data))


def _truncate(path, keep):
  data = pathlib.Path(path).read_bytes()
  pathlib.Path(path).write_bytes(data[:keep if keep > 0 else len(data) + keep])


def _dataset_dirs(data_dir, config=CONFIG):
  d = pathlib.Path(data_dir) / "ravdess" / config
  return sorted(p.name for p in d.iterdir()) if d.exists() else []


# file -> (fatal?, what must be said about it). Paths are relative to the corpus folder.
BAD_INPUTS = {
    "Actor_01/" + _name(2, 1): (True, "cannot decode"),  # cut inside the header
    "Actor_01/" + _name(3, 1): (True, "truncated"),  # cut inside the data chunk
    "Actor_01/" + _name(4, 1): (True, "cannot decode"),  # not audio at all
    "Actor_01/" + _name(5, 1): (True, "NaN or infinite"),  # float WAV with NaN and Inf
    "Actor_01/" + _name(6, 1): (True, "cannot decode"),  # zero-length file
    "Actor_01/" + _name(7, 1).replace("03-", "01-", 1): (True, "'modality'"),  # video
    "Actor_01/" + _name(8, 1)[:6] + "09" + _name(8, 1)[8:]: (True, "'emotion'"),
    "Actor_01/" + _name(2, 3): (True, "Actor_01/"),  # actor 03 in Actor_01/
    "Actor_02/" + _name(2, 2): (True, "present twice with different contents"),
    "copy/Actor_02/" + _name(2, 2): (True, "present twice with different contents"),
    "Audio_Speech_Actors_01-24.zip": (True, "re-download"),  # one member's CRC is bad
    "Audio_Song_Actors_01-24.zip": (True, "re-download"),  # not a zip at all
    "Actor_02/" + _name(3, 2): (False, "digitally silent"),
    "Actor_02/" + _name(4, 2): (False, "Unsigned 8 bit PCM"),
    "Actor_02/" + _name(5, 2): (False, "downmixed 2 channels"),  # 44.1 kHz stereo
    "Actor_02/" + _name(6, 2): (False, "identical contents"),  # also in copy/, same bytes
    "copy/Actor_02/" + _name(6, 2): (False, "identical contents"),
    "Actor_02/take 2.wav": (False, "not a RAVDESS file name"),
    "notes.zip": (False, "holds no RAVDESS audio"),  # an unrelated zip
    "Video_Speech_Actor_01.zip": (False, "video archive"),
}
GOOD = [_name(3, 2), _name(4, 2), _name(5, 2), _name(6, 2), _name(7, 2)]


@pytest.fixture(autouse=True)
def _no_env_dir(monkeypatch):
  monkeypatch.delenv("RAVDESS_DIR", raising=False)


@pytest.fixture
def bad_corpus(tmp_path):
  """A RAVDESS folder holding every entry of BAD_INPUTS (plus one plain good clip)."""
  root = tmp_path / "ravdess"
  p = {k: root / k for k in BAD_INPUTS}
  names = list(BAD_INPUTS)
  for k in names[:4] + names[7:10]:
    _wav(p[k], seed=len(str(k)))
  _truncate(p[names[0]], 30)
  _truncate(p[names[1]], -(48000 * 2 // 10))  # keep the header, lose 0.1 s
  p[names[2]].write_bytes(b"this is a text file, not a WAV" * 10)
  y = np.full(4800, 0.1, np.float32)
  y[10], y[20] = np.nan, np.inf
  sf.write(p[names[3]], y, 48000, subtype="FLOAT")
  p[names[4]].write_bytes(b"")
  _wav(p[names[5]])
  _wav(p[names[6]])
  sf.write(_wav(p[names[12]]), np.zeros(4800, np.float32), 48000)  # silent
  _wav(p[names[13]], subtype="PCM_U8")
  _wav(p[names[14]], sample_rate=44100, channels=2)
  _wav(p[names[15]])
  p[names[16]].parent.mkdir(parents=True, exist_ok=True)
  p[names[16]].write_bytes(p[names[15]].read_bytes())
  p[names[17]].write_bytes(b"stray")
  good = _wav(root / "Actor_02" / _name(7, 2))
  _zip(p[names[10]], {f"Actor_09/{_name(2, 9)}": _wav(tmp_path / "m.wav").read_bytes(),
                      f"Actor_02/{_name(7, 2)}": good.read_bytes()}, stored=True)
  _corrupt_member(p[names[10]], f"Actor_09/{_name(2, 9)}")
  p[names[11]].write_bytes(b"PK\x03\x04 cut short")
  _zip(p[names[18]], {"readme.txt": b"hello"})
  _zip(p[names[19]], {"Actor_01/01-01-01-01-01-01-01.mp4": b"\x00" * 64})
  return root


def test_one_build_reports_every_fatal_file_and_leaves_nothing(bad_corpus, tmp_path,
                                                               caplog):
  data_dir = tmp_path / "tfds"
  with caplog.at_level(logging.INFO), pytest.raises(sources.RavdessInputError) as e:
    synthetic.build_ravdess(bad_corpus, data_dir, num_workers=2)
  msg = str(e.value)
  fatal = {k: v for k, v in BAD_INPUTS.items() if v[0]}
  assert f"{len(fatal) - 1} problem file(s)" in msg  # the two differing copies: one line
  for rel, (_, said) in fatal.items():
    line = next(l for l in msg.splitlines() if str(bad_corpus / rel) in l)
    assert said in line, (rel, line)
  assert "Actor_09/" in msg  # the damaged member is named with its archive
  for rel, (_, said) in BAD_INPUTS.items():
    if not BAD_INPUTS[rel][0]:
      assert said in caplog.text, rel
  # Nothing a later run could trust: no dataset, no incomplete build.
  assert _dataset_dirs(data_dir) == []
  assert not tfds.builder(f"ravdess/{CONFIG}", data_dir=data_dir).is_prepared()
  # Remove the fatal files: the next build succeeds with exactly the good clips.
  for rel in fatal:
    (bad_corpus / rel).unlink()
  synthetic.build_ravdess(bad_corpus, data_dir, num_workers=2)
  ds = tfds.data_source(f"ravdess/{CONFIG}", split="train", data_dir=data_dir)
  assert sorted(ds[i]["file_name"].decode() for i in range(len(ds))) == sorted(GOOD)


# --- Item 2: audio that is damaged but decodes; silent clips. ---


def test_truncated_wav_is_a_decode_error(tmp_path):
  path = _wav(tmp_path / "clip.wav", seconds=1.0)
  _truncate(path, -48000)  # the header still says 1 s; half of it is left
  with pytest.raises(features.AudioDecodeError,
                     match=r"clip\.wav: truncated.*48000 frames.*24000"):
    features.load_audio(path, 48000)


def test_truncated_aiff_is_a_decode_error(tmp_path):
  path = _wav(tmp_path / "clip.wav", seconds=0.5, fmt="AIFF")
  _truncate(path, -4000)
  with pytest.raises(features.AudioDecodeError, match="truncated"):
    features.load_audio(path, 48000)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_rejected(tmp_path, bad):
  y = np.full(1600, 0.1, np.float32)
  y[100] = bad
  path = tmp_path / "float.wav"
  sf.write(path, y, 16000, subtype="FLOAT")
  with pytest.raises(features.AudioDecodeError, match=r"float\.wav: 1 of 1600 samples"):
    features.load_audio(path, 16000)


def test_silent_clip_warns_in_builder_and_prediction(tmp_path, caplog):
  wavs = tmp_path / "wavs"
  synthetic.write_synthetic_ravdess(wavs, actors=[1], emotions=[2, 3], seconds=0.1)
  silent = wavs / "Actor_01" / _name(3, 1)
  sf.write(silent, np.zeros(4800, np.float32), 48000)
  with caplog.at_level(logging.WARNING):
    synthetic.build_ravdess(wavs, tmp_path / "tfds")
  assert f"{silent}: digitally silent" in caplog.text
  assert caplog.text.count("digitally silent") == 1
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="ser_jax.inference"):
    inference.load_clip(silent, features.get_frontend("predecessor48k"))  # prediction's
  assert f"{silent}: digitally silent" in caplog.text


def test_prediction_refuses_damaged_audio(tmp_path):
  good = _wav(tmp_path / "good.wav")
  truncated = _wav(tmp_path / "truncated.wav")
  _truncate(truncated, -2000)
  nan = tmp_path / "nan.wav"
  sf.write(nan, np.full(800, np.nan, np.float32), 16000, subtype="FLOAT")
  fe = features.get_frontend("predecessor48k")
  mel, _ = inference.load_clip(good, fe)  # what prediction decodes with
  assert np.isfinite(mel).all()
  with pytest.raises(features.AudioDecodeError, match="truncated.wav: truncated"):
    inference.load_clip(truncated, fe)
  with pytest.raises(features.AudioDecodeError, match="nan.wav: 800 of 800"):
    inference.load_clip(nan, fe)


# --- Item 17: other sample formats are logged like resampling. ---


@pytest.mark.parametrize("subtype, said", [
    ("PCM_U8", "Unsigned 8 bit PCM (PCM_U8)"), ("PCM_24", "Signed 24 bit PCM (PCM_24)"),
    ("DOUBLE", "64 bit float (DOUBLE)")])
def test_non_16_bit_conversion_is_logged(tmp_path, caplog, subtype, said):
  path = _wav(tmp_path / "x.wav", subtype=subtype)
  with caplog.at_level(logging.INFO, logger="ser_jax.features"):
    y = features.load_audio(path, 48000)
  assert f"x.wav: converted {said} samples to float32" in caplog.text
  np.testing.assert_allclose(y, sf.read(path, dtype="float32")[0], atol=1e-7)


def test_16_bit_needs_no_note(tmp_path, caplog):
  path = _wav(tmp_path / "x.wav")
  with caplog.at_level(logging.INFO, logger="ser_jax.features"):
    features.load_audio(path, 48000)
  assert "converted" not in caplog.text


# --- Items 7, 9, 10: zips. ---


def _speech_zip(tmp_path, zip_path, actors=(1, 2)):
  wavs = tmp_path / "src"
  synthetic.write_synthetic_ravdess(wavs, actors=actors, emotions=[2], seconds=0.1)
  return _zip(zip_path, {str(p.relative_to(wavs)): p.read_bytes()
                         for p in sorted(wavs.rglob("*.wav"))}, stored=True)


def test_corrupt_zip_member_names_archive_and_member(tmp_path):
  root = tmp_path / "manual"
  root.mkdir()
  z = _speech_zip(tmp_path, root / "Audio_Speech_Actors_01-24.zip")
  member = f"Actor_02/{_name(2, 2)}"
  _corrupt_member(z, member)
  with pytest.raises(sources.RavdessInputError) as e:
    synthetic.build_ravdess(root, tmp_path / "tfds")
  assert f"{z}!{member}" in str(e.value) and "re-download" in str(e.value)
  assert _dataset_dirs(tmp_path / "tfds") == []


def test_corrupt_official_zip_says_re_download(tmp_path):
  (tmp_path / "Audio_Speech_Actors_01-24.zip").write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(sources.RavdessInputError, match="not a readable zip.*re-download"):
    sources.find_sources(tmp_path, "speech")


@pytest.mark.parametrize("how", ["env", "manual_dir"])
def test_data_path_may_be_the_zip_itself(tmp_path, monkeypatch, how):
  z = _speech_zip(tmp_path, tmp_path / "Audio_Speech_Actors_01-24.zip")
  data_dir = tmp_path / "tfds"
  if how == "env":
    monkeypatch.setenv("RAVDESS_DIR", str(z))
    tfds.builder(f"ravdess/{CONFIG}", data_dir=data_dir,
                 num_workers=0).download_and_prepare()
  else:
    synthetic.build_ravdess(z, data_dir)
  ds = tfds.data_source(f"ravdess/{CONFIG}", split="train", data_dir=data_dir)
  assert sorted(ds[i]["file_name"].decode() for i in range(len(ds))) == [
      _name(2, 1), _name(2, 2)]


def test_video_and_unrelated_zips_are_skipped_with_a_warning(tmp_path, caplog):
  root = tmp_path / "zenodo"
  root.mkdir()
  _speech_zip(tmp_path, root / "Audio_Speech_Actors_01-24.zip")
  _zip(root / "Video_Speech_Actor_01.zip",
       {"Actor_01/01-01-01-01-01-01-01.mp4": b"\x00" * 64,
        "Actor_01/02-01-01-01-01-01-01.mp4": b"\x00" * 64})
  _zip(root / "Video_Song_Actor_24.zip", {"Actor_24/01-02-01-01-01-01-24.mp4": b"x"})
  _zip(root / "holiday photos.zip", {"beach.jpg": b"\xff\xd8"})
  (root / "broken download.zip").write_bytes(b"not a zip")
  with caplog.at_level(logging.WARNING):
    found = sources.find_sources(root, "speech")
  assert [s.name for s in found] == [_name(2, 1), _name(2, 2)]
  for z in ("Video_Speech_Actor_01.zip", "Video_Song_Actor_24.zip"):
    assert f"Skipping {root / z}: a RAVDESS video archive" in caplog.text
  assert f"Skipping {root / 'holiday photos.zip'}: it holds no RAVDESS audio" in caplog.text
  assert f"Skipping {root / 'broken download.zip'}: not a readable zip" in caplog.text


def test_zip_with_another_name_holding_ravdess_audio_is_read(tmp_path, caplog):
  root = tmp_path / "manual"
  root.mkdir()
  _speech_zip(tmp_path, root / "my ravdess copy.zip", actors=(5,))
  with caplog.at_level(logging.INFO):
    found = sources.find_sources(root, "speech")
  assert [s.member for s in found] == [f"Actor_05/{_name(2, 5)}"]
  assert "Reading 1 RAVDESS clips from" in caplog.text


# --- Item 11: the help names a file of the subset asked for. ---


def test_song_config_on_speech_data_suggests_a_song_file(tmp_path):
  wavs = tmp_path / "wavs"
  synthetic.write_synthetic_ravdess(wavs, actors=[1], emotions=[2], seconds=0.1)
  with pytest.raises(sources.RavdessInputError) as e:
    synthetic.build_ravdess(wavs, tmp_path / "tfds", "song_predecessor48k")
  msg = str(e.value)
  assert "Audio_Song_Actors_01-24.zip" in msg and "Actor_01/03-02-01-01-01-01-01.wav" in msg
  assert "03-01-" not in msg


# --- Item 12: builds killed before the end. ---


def _fake_incomplete(data_dir, suffix, host=None):
  d = pathlib.Path(data_dir) / "ravdess" / CONFIG / f"incomplete.{suffix}_2.0.0"
  d.mkdir(parents=True)
  (d / "ravdess-train.array_record-00000-of-00001").write_bytes(b"half written")
  dead = subprocess.Popen(["true"])
  dead.wait()
  (d / LOCK_FILE).write_text(json.dumps(
      {"pid": dead.pid, "host": host or socket.gethostname(), "started": "earlier"}))
  return d


def test_stale_incomplete_builds_are_deleted_running_ones_kept(tmp_path, caplog):
  wavs = tmp_path / "wavs"
  synthetic.write_synthetic_ravdess(wavs, actors=[1], emotions=[2], seconds=0.1)
  data_dir = tmp_path / "tfds"
  stale = _fake_incomplete(data_dir, "KILLED")
  running = _fake_incomplete(data_dir, "RUNNIN")
  elsewhere = _fake_incomplete(data_dir, "OTHERH", host="another-host")
  unknown = stale.with_name("incomplete.NOLOCK_2.0.0")
  unknown.mkdir()
  with open(running / LOCK_FILE, "r+b") as held:
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live build holds it
    with caplog.at_level(logging.INFO):
      synthetic.build_ravdess(wavs, data_dir)
  assert not stale.exists()
  assert f"Deleting {stale}: left by a killed build" in caplog.text
  assert running.exists() and elsewhere.exists() and unknown.exists()
  assert f"rm -r '{unknown}'" in caplog.text and f"rm -r '{elsewhere}'" in caplog.text
  assert "2.0.0" in _dataset_dirs(data_dir)
  assert not (data_dir / "ravdess" / CONFIG / "2.0.0" / LOCK_FILE).exists()


@pytest.mark.slow
def test_build_killed_with_sigkill_is_cleaned_by_the_next(tmp_path):
  """A real build process killed mid-way leaves an incomplete.* that the next build removes."""
  wavs = tmp_path / "wavs"
  synthetic.write_synthetic_ravdess(wavs, actors=range(1, 9), emotions=range(1, 9),
                                    seconds=1.0)
  data_dir = tmp_path / "tfds"
  repo = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ, TFDS_DISABLE_PROGRESS_BAR="1", PYTHONPATH=os.pathsep.join(
      [str(repo), str(repo / "tests"), os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.Popen(
      [sys.executable, "-c", "import synthetic, sys; "
       "synthetic.build_ravdess(sys.argv[1], sys.argv[2])", str(wavs), str(data_dir)],
      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  config_dir = data_dir / "ravdess" / CONFIG
  deadline = time.time() + 240
  while not list(config_dir.glob(f"incomplete.*/{LOCK_FILE}")) and time.time() < deadline:
    assert proc.poll() is None, "the build ended before it could be killed"
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  (left,) = config_dir.glob("incomplete.*")
  synthetic.build_ravdess(wavs, data_dir)
  assert not left.exists() and _dataset_dirs(data_dir) == ["2.0.0"]
