"""Tests for the `ravdess` TFDS builder: contents, sources, and bad input handling."""
import logging
import pathlib
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

import synthetic
import tfds_ravdess  # pylint: disable=unused-import
from ser_jax import features
from ser_jax import labels
from tfds_corpora import extract
from tfds_ravdess import sources

CONFIG = "speech_predecessor48k"


def _read_all(data_dir, config=CONFIG):
  ds = tfds.data_source(f"ravdess/{config}", split="train", data_dir=data_dir)
  return [ds[i] for i in range(len(ds))]


def _dataset_dirs(data_dir, config=CONFIG):
  """Version dirs of a config, e.g. ['2.0.0'] or ['incomplete.XYZ_2.0.0']."""
  d = pathlib.Path(data_dir) / "ravdess" / config
  return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.fixture(autouse=True)
def _no_env_dir(monkeypatch):
  monkeypatch.delenv("RAVDESS_DIR", raising=False)


def test_registered_configs():
  builder_cls = tfds.builder_cls("ravdess")
  names = [c.name for c in builder_cls.BUILDER_CONFIGS]
  assert names == [f"{s}_{f}" for s in ("speech", "song", "all")
                   for f in ("predecessor48k", "panns32k", "panns16k", "efficientat32k")]
  assert builder_cls.DEFAULT_CONFIG_NAME == CONFIG
  b = tfds.builder("ravdess/song_panns16k", data_dir="/nonexistent-unused")
  assert b.info.features["log_mel"].shape == (64, None)
  assert b.info.features["emotion"].names == list(labels.VOCABULARY)
  assert labels.VOCABULARY[:8] == sources.EMOTIONS  # RAVDESS's ids are unchanged
  e = tfds.builder("ravdess/speech_efficientat32k", data_dir="/nonexistent-unused")
  assert e.info.features["log_mel"].shape == (128, None)
  assert "kaldi mels, (ln(S + 1e-05) + 4.5) / 5" in e.builder_config.description
  assert "Livingstone" in b.info.citation
  assert b.info.file_format.value == "array_record"


def test_synthetic_build_contents(synthetic_data_dir, tmp_path):
  examples = _read_all(synthetic_data_dir)
  assert len(examples) == 64
  by_name = {ex["file_name"].decode(): ex for ex in examples}
  assert len(by_name) == 64
  assert sorted({int(ex["actor"]) for ex in examples}) == list(range(1, 9))
  assert np.bincount([int(ex["emotion"]) for ex in examples]).tolist() == [8] * 8
  ex = by_name["03-01-05-01-01-01-04.wav"]
  assert (int(ex["emotion"]), int(ex["intensity"]), int(ex["statement"]),
          int(ex["repetition"]), int(ex["actor"]), int(ex["gender"]),
          int(ex["vocal_channel"])) == (4, 0, 0, 1, 4, 1, 0)
  assert int(by_name["03-01-05-01-01-01-07.wav"]["gender"]) == 0  # odd actor: male
  # The stored log-mel is the front end applied to the clip: mel-major, float32.
  wav = tmp_path / "clip.wav"
  sf.write(wav, synthetic.synthetic_clip(5, 4, 0.5, 48000), 48000, subtype="PCM_16")
  want = features.log_mel(features.load_audio(wav, 48000), "predecessor48k")
  assert ex["log_mel"].dtype == np.float32
  assert ex["log_mel"].shape == (128, int(ex["num_frames"])) == want.shape
  np.testing.assert_allclose(ex["log_mel"], want, atol=1e-3)
  assert ex["duration"] == pytest.approx(0.5, abs=1e-6)


def test_parse_file_name():
  info = sources.parse_file_name("03-02-06-02-02-01-24.wav")
  assert (info.vocal_channel, info.emotion, info.intensity, info.statement,
          info.repetition, info.actor, info.gender) == (1, 5, 1, 1, 1, 24, 1)
  assert sources.parse_file_name("notes.wav") is None
  assert sources.parse_file_name("03-01-01-01-01-01-01 (1).wav") is None
  assert sources.parse_file_name("03-01-01-01-01-01.wav") is None  # 6 fields


@pytest.mark.parametrize("name, field", [
    ("03-01-09-01-01-01-01.wav", "emotion"),
    ("03-02-07-01-01-01-01.wav", "emotion"),  # song has no disgust
    ("01-01-01-01-01-01-01.wav", "modality"),
    ("03-03-01-01-01-01-01.wav", "vocal channel"),
    ("03-01-01-02-01-01-01.wav", "intensity"),  # neutral has no strong
    ("03-01-02-03-01-01-01.wav", "intensity"),
    ("03-01-02-01-03-01-01.wav", "statement"),
    ("03-01-02-01-01-00-01.wav", "repetition"),
    ("03-01-02-01-01-01-25.wav", "actor"),
])
def test_parse_file_name_rejects_impossible_fields(name, field):
  with pytest.raises(sources.RavdessInputError, match=f"{name}.*'{field}'"):
    sources.parse_file_name(name)


def test_bad_name_skipped_with_warning(tmp_path, caplog):
  synthetic.write_synthetic_ravdess(tmp_path, actors=[1], emotions=[2, 3], seconds=0.1)
  (tmp_path / "Actor_01" / "take 2.wav").write_bytes(b"whatever")
  (tmp_path / "Actor_01" / "README.txt").write_text("not audio")
  with caplog.at_level(logging.WARNING, logger="tfds_ravdess.sources"):
    found = sources.find_sources(tmp_path, "speech")
  assert [s.name for s in found] == [
      "03-01-02-01-01-01-01.wav", "03-01-03-01-01-01-01.wav"]
  assert "take 2.wav" in caplog.text and "not a RAVDESS file name" in caplog.text


def test_actor_folder_mismatch_is_an_error(tmp_path):
  synthetic.write_synthetic_ravdess(tmp_path, actors=[1], emotions=[2], seconds=0.1)
  src = tmp_path / "Actor_01" / "03-01-02-01-01-01-01.wav"
  src.rename(tmp_path / "Actor_01" / "03-01-02-01-01-01-03.wav")
  with pytest.raises(sources.RavdessInputError, match="actor 03.*Actor_01"):
    sources.find_sources(tmp_path, "speech")


def test_subset_filter(tmp_path):
  synthetic.write_synthetic_ravdess(tmp_path, actors=[1], emotions=[2], seconds=0.1)
  synthetic.write_synthetic_ravdess(tmp_path, actors=[1], emotions=[3], seconds=0.1,
                                    vocal_channel=2)
  names = lambda subset: [s.name for s in sources.find_sources(tmp_path, subset)]
  assert names("speech") == ["03-01-02-01-01-01-01.wav"]
  assert names("song") == ["03-02-03-01-01-01-01.wav"]
  assert len(names("all")) == 2


@pytest.mark.parametrize("make", ["missing", "empty", "only_song"])
def test_missing_or_empty_dir(tmp_path, make):
  root = tmp_path / "data"
  if make != "missing":
    root.mkdir()
  if make == "only_song":
    synthetic.write_synthetic_ravdess(root, actors=[1], emotions=[2], seconds=0.1,
                                      vocal_channel=2)
  with pytest.raises(sources.RavdessInputError,
                     match=r"Audio_Speech_Actors_01-24\.zip.*Actor_01/"):
    sources.find_sources(root, "speech")


def _zip_dir(src_dir, zip_path, prefix=""):
  with zipfile.ZipFile(zip_path, "w") as z:
    for p in sorted(pathlib.Path(src_dir).rglob("*.wav")):
      z.write(p, prefix + str(p.relative_to(src_dir)))


def test_reads_official_zip(tmp_path):
  synthetic.write_synthetic_ravdess(tmp_path / "x", actors=[1, 2], emotions=[2],
                                    seconds=0.1)
  root = tmp_path / "manual"
  root.mkdir()
  _zip_dir(tmp_path / "x", root / "Audio_Speech_Actors_01-24.zip")
  found = sources.find_sources(root, "speech")
  assert [s.member for s in found] == ["Actor_01/03-01-02-01-01-01-01.wav",
                                       "Actor_02/03-01-02-01-01-01-02.wav"]
  values = extract.extract(1, found[1], "predecessor48k").values
  want = features.log_mel(features.load_audio(
      tmp_path / "x" / found[1].member, 48000), "predecessor48k")
  np.testing.assert_array_equal(values["log_mel"], want)


def test_zip_that_is_not_the_archive(tmp_path):
  (tmp_path / "notes.txt").write_text("hello")
  with zipfile.ZipFile(tmp_path / "Audio_Speech_Actors_01-24.zip", "w") as z:
    z.write(tmp_path / "notes.txt", "notes.txt")
  with pytest.raises(sources.RavdessInputError,
                     match=r"Audio_Speech_Actors_01-24\.zip: not a RAVDESS audio archive"):
    sources.find_sources(tmp_path, "speech")


def test_corrupt_zip(tmp_path):
  (tmp_path / "Audio_Speech_Actors_01-24.zip").write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(sources.RavdessInputError, match="not a readable zip"):
    sources.find_sources(tmp_path, "speech")


def test_duplicates_identical_kept_once(tmp_path, caplog):
  synthetic.write_synthetic_ravdess(tmp_path, actors=[1], emotions=[2, 3], seconds=0.1)
  _zip_dir(tmp_path, tmp_path / "Audio_Speech_Actors_01-24.zip")  # same files again
  with caplog.at_level(logging.WARNING, logger="tfds_ravdess.sources"):
    found = sources.find_sources(tmp_path, "speech")
  assert len(found) == 2
  assert all(s.member is None for s in found)  # the plain files are preferred
  assert "2 file names appear more than once" in caplog.text


def test_duplicates_that_differ_are_an_error(tmp_path):
  synthetic.write_synthetic_ravdess(tmp_path / "a", actors=[1], emotions=[2], seconds=0.1)
  synthetic.write_synthetic_ravdess(tmp_path / "b", actors=[1], emotions=[2], seconds=0.1,
                                    seed=7)
  with pytest.raises(sources.RavdessInputError,
                     match=r"03-01-02-01-01-01-01\.wav is present twice with different"):
    sources.find_sources(tmp_path, "speech")


def test_undecodable_wav_fails_and_leaves_no_dataset(tmp_path):
  wavs = tmp_path / "wavs"
  synthetic.write_synthetic_ravdess(wavs, actors=[1, 2], emotions=[2, 3], seconds=0.1)
  bad = wavs / "Actor_02" / "03-01-03-01-01-01-02.wav"
  good_bytes = bad.read_bytes()
  bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
  data_dir = tmp_path / "tfds"
  with pytest.raises(sources.RavdessInputError,
                     match=r"Actor_02/03-01-03-01-01-01-02\.wav: cannot decode"):
    synthetic.build_ravdess(wavs, data_dir, num_workers=2)  # error crosses the pool
  # Only an `incomplete.*` dir may remain: TFDS renames it to `2.0.0` when done.
  assert all(d.startswith("incomplete") for d in _dataset_dirs(data_dir))
  assert not tfds.builder(f"ravdess/{CONFIG}", data_dir=data_dir).is_prepared()
  with pytest.raises(Exception):
    tfds.data_source(f"ravdess/{CONFIG}", split="train", data_dir=data_dir,
                     download=False)
  bad.write_bytes(good_bytes)  # fixed: the next build succeeds from scratch
  synthetic.build_ravdess(wavs, data_dir)
  assert len(_read_all(data_dir)) == 4
  assert "2.0.0" in _dataset_dirs(data_dir)


def test_resample_and_downmix_logged(tmp_path, caplog):
  wavs = tmp_path / "wavs"
  synthetic.write_synthetic_ravdess(wavs, actors=[3], emotions=[4], seconds=0.3,
                                    sample_rate=44100, channels=2)
  with caplog.at_level(logging.INFO):
    synthetic.build_ravdess(wavs, tmp_path / "tfds")
  assert "downmixed 2 channels to mono" in caplog.text
  assert "resampled 44100 Hz to 48000 Hz" in caplog.text
  (ex,) = _read_all(tmp_path / "tfds")
  path = wavs / "Actor_03" / "03-01-04-01-01-01-03.wav"
  want = features.log_mel(features.load_audio(path, 48000), "predecessor48k")
  np.testing.assert_allclose(ex["log_mel"], want, atol=1e-4)
  assert ex["duration"] == pytest.approx(0.3, abs=1e-4)


def test_offline_without_data_says_where_to_put_files(tmp_path, monkeypatch):
  from tfds_ravdess import ravdess_dataset_builder as rdb
  def no_network(self, url_or_urls):
    raise ConnectionError("network is unreachable")
  monkeypatch.setattr(tfds.download.DownloadManager, "download", no_network)
  monkeypatch.setattr(rdb, "_check_reachable", lambda url: None)
  builder = tfds.builder(f"ravdess/{CONFIG}", data_dir=tmp_path)
  with pytest.raises(sources.RavdessInputError) as e:
    builder.download_and_prepare()
  msg = str(e.value)
  assert "Audio_Speech_Actors_01-24.zip" in msg and "RAVDESS_DIR" in msg
  assert "zenodo.org/records/1188976" in msg and "Actor_01/" in msg
  assert not builder.is_prepared()


def test_unreachable_host_fails_fast(monkeypatch):
  import socket
  from tfds_ravdess import ravdess_dataset_builder as rdb
  for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy",
              "ALL_PROXY"):
    monkeypatch.delenv(var, raising=False)
  with socket.socket() as s:  # a port nobody listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  with pytest.raises(OSError):
    rdb._check_reachable(f"http://127.0.0.1:{port}/x.zip", timeout=5)  # pylint: disable=protected-access


def test_ravdess_dir_env(tmp_path, monkeypatch):
  wavs = tmp_path / "wavs"
  synthetic.write_synthetic_ravdess(wavs, actors=[5], emotions=[6], seconds=0.1)
  monkeypatch.setenv("RAVDESS_DIR", str(wavs))
  builder = tfds.builder(f"ravdess/{CONFIG}", data_dir=tmp_path / "tfds",
                         num_workers=0)
  builder.download_and_prepare()
  (ex,) = _read_all(tmp_path / "tfds")
  assert ex["file_name"].decode() == "03-01-06-01-01-01-05.wav"


@pytest.mark.parametrize("frontend", ["panns32k", "efficientat32k"])
def test_reflect_padded_config_short_clip(tmp_path, frontend):
  wavs = tmp_path / "wavs"
  # 0.01 s: shorter than half a 32 kHz window, so reflect padding needs zero-padding
  # (to 514 samples for efficientat32k, whose pre-emphasis takes one).
  synthetic.write_synthetic_ravdess(wavs, actors=[2], emotions=[2], seconds=0.01)
  synthetic.build_ravdess(wavs, tmp_path / "tfds", f"speech_{frontend}")
  (ex,) = _read_all(tmp_path / "tfds", f"speech_{frontend}")
  fe = features.FRONTENDS[frontend]
  assert ex["log_mel"].shape == (fe.n_mels, int(ex["num_frames"]))
  assert int(ex["num_frames"]) == fe.num_frames(fe.min_samples) == 2
  assert np.isfinite(ex["log_mel"]).all()


@pytest.mark.slow
def test_ravdess_mini_integration(mini_data_dir, ravdess_mini):
  """The real subset: counts, labels, and log-mels equal to an independent librosa run."""
  import librosa
  examples = _read_all(mini_data_dir)
  assert len(examples) == 240
  assert sorted({int(ex["actor"]) for ex in examples}) == [1, 2, 3, 4]
  counts = np.bincount([int(ex["emotion"]) for ex in examples], minlength=8)
  assert counts.tolist() == [16, 32, 32, 32, 32, 32, 32, 32]
  by_name = {ex["file_name"].decode(): ex for ex in examples}
  for name in ("03-01-01-01-01-01-01.wav", "03-01-08-02-02-02-04.wav",
               "03-01-05-02-01-01-03.wav"):
    ex = by_name[name]
    y, _ = librosa.load(pathlib.Path(ravdess_mini) / f"Actor_{name[-6:-4]}" / name,
                        sr=48000)
    s = librosa.feature.melspectrogram(y=y, sr=48000, n_fft=2048, win_length=1920,
                                       hop_length=480, n_mels=128)
    want = librosa.power_to_db(s, ref=np.max)  # top_db 80
    assert ex["log_mel"].shape == want.shape == (128, int(ex["num_frames"]))
    assert np.abs(ex["log_mel"] - want).max() <= 0.01
    assert float(ex["duration"]) == pytest.approx(len(y) / 48000, abs=1e-6)
    info = sources.parse_file_name(name)
    assert (int(ex["emotion"]), int(ex["actor"]), int(ex["intensity"])) == (
        info.emotion, info.actor, info.intensity)


def test_download_path_with_local_server(tmp_path, monkeypatch):
  """The no-manual-dir path: the archive is fetched by TFDS's download manager."""
  import functools
  import http.server
  import threading
  served = tmp_path / "served"
  served.mkdir()
  synthetic.write_synthetic_ravdess(tmp_path / "x", actors=[7, 8], emotions=[4],
                                    seconds=0.1)
  _zip_dir(tmp_path / "x", served / "Audio_Speech_Actors_01-24.zip")
  handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                              directory=str(served))
  handler.log_message = lambda *a: None
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    url = f"http://127.0.0.1:{server.server_port}/Audio_Speech_Actors_01-24.zip"
    monkeypatch.setitem(sources.URLS, "speech", url)
    builder = tfds.builder(f"ravdess/{CONFIG}", data_dir=tmp_path / "tfds",
                           num_workers=0)
    builder.download_and_prepare()
  finally:
    server.shutdown()
  names = sorted(ex["file_name"].decode() for ex in _read_all(tmp_path / "tfds"))
  assert names == ["03-01-04-01-01-01-07.wav", "03-01-04-01-01-01-08.wav"]


def test_pool_uses_spawn_once_jax_is_loaded(tmp_path, monkeypatch):
  monkeypatch.delitem(sys.modules, "jax", raising=False)
  assert extract._start_method() == "fork"  # pylint: disable=protected-access
  monkeypatch.setitem(sys.modules, "jax", sys)  # any module object will do
  assert extract._start_method() == "spawn"  # pylint: disable=protected-access
  wavs = tmp_path / "wavs"
  synthetic.write_synthetic_ravdess(wavs, actors=[1, 2], emotions=[2], seconds=0.1)
  synthetic.build_ravdess(wavs, tmp_path / "tfds", num_workers=2)  # spawned workers
  assert len(_read_all(tmp_path / "tfds")) == 2
