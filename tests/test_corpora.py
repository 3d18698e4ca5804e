"""The corpus builders on real samples (`corpora_mini`) and on the distributions' variants.

Counts per emotion and speaker of each real mini folder, decoding of TESS's AIFF-named
`.wav` and 96 kHz files and RAVDESS song's stereo file against librosa, the same clear
errors for impossible names in every corpus, and the layout variants of the full
distributions (flattened SAVEE copies, nested duplicate TESS folders, official zips,
CREMA-D's Git LFS pointers and old `_X` file name).
"""
import collections
import logging
import pathlib
import shutil
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

import synthetic
import tfds_corpora  # pylint: disable=unused-import
from ser_jax import splits
from ser_jax import labels
from tfds_corpora import sources
from tfds_corpora.crema_d import crema_d_dataset_builder as crema_d
from tfds_corpora.emodb import emodb_dataset_builder as emodb
from tfds_corpora.savee import savee_dataset_builder as savee
from tfds_corpora.tess import tess_dataset_builder as tess
from tfds_ravdess import sources as ravdess

# name, config, mini folder -> (count per emotion, count per speaker), from the mini
# folders' README (e.g. SAVEE: 2 speakers x 7 codes x 2 clips).
MINI = {
    ("ser_tess", "predecessor48k", "tess"): (
        {"angry": 7, "disgust": 6, "fearful": 8, "happy": 6, "neutral": 6, "surprised": 6,
         "sad": 6}, {"tess:OAF": 22, "tess:YAF": 23}),
    ("ser_savee", "predecessor48k", "savee"): (
        dict.fromkeys(("angry", "disgust", "fearful", "happy", "neutral", "sad",
                       "surprised"), 4), {"savee:DC": 14, "savee:JK": 14}),
    ("ser_emodb", "predecessor48k", "emodb"): (
        {"happy": 3, "neutral": 3, "angry": 3, "sad": 3, "fearful": 3, "boredom": 3,
         "disgust": 2}, {"emodb:03": 7, "emodb:08": 6, "emodb:09": 7}),
    ("ravdess", "song_predecessor48k", "ravdess-song"): (
        {"neutral": 3, "calm": 4, "happy": 4, "sad": 4, "angry": 4, "fearful": 4},
        {"ravdess:01": 11, "ravdess:02": 11, "ravdess:24": 1}),
}


@pytest.fixture(scope="module")
def mini_builds(corpora_data_dir):
  """Every mini folder (built once, conftest.CORPORA_DATASETS): key of MINI -> examples."""
  built = {}
  for key in MINI:
    name, config, _ = key
    ds = tfds.data_source(f"{name}/{config}", split="train", data_dir=corpora_data_dir)
    built[key] = [ds[i] for i in range(len(ds))]
  return built


@pytest.mark.parametrize("key", list(MINI), ids=[k[0] for k in MINI])
def test_mini_counts_per_emotion_and_speaker(mini_builds, key):
  examples = mini_builds[key]
  emotions = collections.Counter(labels.VOCABULARY[int(e["emotion"])] for e in examples)
  speakers = collections.Counter(e["speaker"].decode() for e in examples)
  assert (dict(emotions), dict(speakers)) == MINI[key]
  assert len({e["file_name"] for e in examples}) == len(examples)
  corpus = "ravdess" if key[0] == "ravdess" else key[0][4:]
  assert {e["corpus"].decode() for e in examples} == {corpus}
  assert set(emotions) <= set(labels.CORPUS_EMOTIONS[corpus])
  # The default folds of the corpus are speaker-independent and cover every speaker.
  folds = splits.speaker_folds(speakers)
  assert sorted(s for f in folds for s in f.test) == sorted(speakers)


def _librosa_log_mel(path):
  import librosa  # pylint: disable=g-import-not-at-top
  y, _ = librosa.load(path, sr=48000)  # decode, mono, resample: librosa's own way
  s = librosa.feature.melspectrogram(y=y, sr=48000, n_fft=2048, win_length=1920,
                                     hop_length=480, n_mels=128)
  return librosa.power_to_db(s, ref=np.max), len(y)


@pytest.mark.parametrize("key, rel, fmt, rate, channels", [
    (("ser_tess", "predecessor48k", "tess"), "YAF_angry/YAF_germ_angry.wav", "AIFF", 24414, 1),
    (("ser_tess", "predecessor48k", "tess"), "YAF_fear/YAF_neat_fear.wav", "AIFF", 24414, 1),
    (("ser_tess", "predecessor48k", "tess"), "OAF_Fear/OAF_food_fear.wav", "WAV", 96000, 1),
    (("ravdess", "song_predecessor48k", "ravdess-song"), "Actor_24/03-02-01-01-01-01-24.wav",
     "WAV", 48000, 2),
], ids=["aiff1", "aiff2", "96k", "stereo"])
def test_quirky_real_files_match_librosa(mini_builds, corpora_mini, key, rel, fmt, rate,
                                         channels):
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  path = corpora_mini / key[2] / rel
  info = sf.info(path)
  assert (info.format, info.samplerate, info.channels) == (fmt, rate, channels)
  (ex,) = [e for e in mini_builds[key] if e["file_name"].decode() == path.name]
  want, samples = _librosa_log_mel(path)
  assert ex["log_mel"].shape == want.shape == (128, int(ex["num_frames"]))
  assert np.abs(ex["log_mel"] - want).max() <= 0.01
  assert float(ex["duration"]) == pytest.approx(info.frames / rate, abs=1e-6)
  assert abs(samples - info.frames * 48000 / rate) <= 1


# --- Impossible names: every corpus refuses them with the same kind of error. ---

BAD_NAMES = [
    (tess.CORPUS, "OAF_angry/OAF_back_angri.wav", "emotion 'angri'"),
    (tess.CORPUS, "XAF_sad/XAF_back_sad.wav", "speaker 'XAF'"),
    (tess.CORPUS, "YAF_sad/OAF_back_sad.wav", "in YAF_sad/"),
    (tess.CORPUS, "OAF_Fear/OAF_back_sad.wav", "in OAF_Fear/"),
    (savee.CORPUS, "AudioData/DC/x01.wav", "emotion code 'x'"),
    (savee.CORPUS, "AudioData/DC/a16.wav", "sentence 16 is outside 01..15"),
    (savee.CORPUS, "AudioData/ZZ/a01.wav", "speaker 'ZZ'"),
    (savee.CORPUS, "AudioData/JK/DC_h01.wav", "in JK/"),
    (emodb.CORPUS, "wav/04a01Fa.wav", "speaker '04'"),
    (emodb.CORPUS, "wav/03a03Fa.wav", "text code 'a03'"),
    (emodb.CORPUS, "wav/03a01Xa.wav", "emotion letter 'X'"),
    (crema_d.CORPUS, "AudioWAV/1092_DFA_ANG_XX.wav", "actor '1092'"),
    (crema_d.CORPUS, "AudioWAV/1001_XYZ_ANG_XX.wav", "sentence 'XYZ'"),
    (crema_d.CORPUS, "AudioWAV/1001_DFA_JOY_XX.wav", "emotion 'JOY'"),
    (crema_d.CORPUS, "AudioWAV/1001_DFA_ANG_ZZ.wav", "level 'ZZ'"),
    (ravdess.CORPUS, "Actor_01/03-01-09-01-01-01-01.wav", "'emotion'"),
]


@pytest.mark.parametrize("corpus, rel, said", BAD_NAMES,
                         ids=[f"{c.name}:{r}" for c, r, _ in BAD_NAMES])
def test_impossible_names_are_refused(tmp_path, corpus, rel, said):
  synthetic.write_clip(tmp_path / rel)
  problems = sources.Problems()
  assert sources.scan(tmp_path, corpus, problems) == []
  assert problems.kinds() == {f"impossible {corpus.title} file name": 1}
  msg = str(problems.error(corpus.title, str(tmp_path)))
  assert f"{tmp_path / rel}: " in msg and said in msg


def test_builder_refuses_impossible_names_in_one_error(tmp_path):
  for rel in ("wav/03a01Fa.wav", "wav/04a01Fa.wav", "wav/03a01Xa.wav"):
    synthetic.write_clip(tmp_path / "emodb" / rel)
  with pytest.raises(sources.CorpusInputError) as e:
    synthetic.build("ser_emodb/predecessor48k", tmp_path / "emodb", tmp_path / "tfds")
  msg = str(e.value)
  assert "EmoDB: 2 problem file(s)" in msg and "nothing was built" in msg
  assert "04a01Fa.wav: speaker '04'" in msg and "03a01Xa.wav: emotion letter 'X'" in msg


def test_stray_files_are_skipped_with_a_warning(tmp_path, caplog):
  synthetic.write_clip(tmp_path / "AudioData" / "DC" / "a01.wav")
  synthetic.write_clip(tmp_path / "AudioData" / "DC" / "a01 (copy).wav")
  synthetic.write_clip(tmp_path / "AudioData" / "a01.wav")  # no speaker folder
  (tmp_path / "AudioData" / "Info.txt").write_text("speakers")
  with caplog.at_level(logging.WARNING):
    found = sources.scan(tmp_path, savee.CORPUS, sources.Problems())
  assert [s.name for s in found] == ["DC_a01.wav"]
  assert "Skipping 2 file(s) whose name is not a SAVEE file name" in caplog.text


# --- Layout variants of the full distributions. ---


def _scan(root, corpus):
  problems = sources.Problems()
  found = sources.scan(root, corpus, problems)
  assert not problems, problems.error(corpus.title, str(root))
  return found


def test_savee_official_zip_and_flattened_copy(tmp_path, caplog):
  wav = synthetic.write_clip(tmp_path / "src" / "a01.wav", sample_rate=44100)
  root = tmp_path / "savee"
  root.mkdir()
  with zipfile.ZipFile(root / "AudioData.zip", "w") as z:
    z.write(wav, "AudioData/DC/a01.wav")
    z.write(wav, "AudioData/JE/n30.wav")
  (root / "ALL").mkdir()
  shutil.copy(wav, root / "ALL" / "DC_a01.wav")  # the same clip, flattened
  with caplog.at_level(logging.WARNING):
    found = _scan(root, savee.CORPUS)
  assert [(s.name, s.labels.speaker, s.member) for s in found] == [
      ("DC_a01.wav", "DC", None), ("JE_n30.wav", "JE", "AudioData/JE/n30.wav")]
  assert "1 file names appear more than once with identical contents" in caplog.text


def test_tess_nested_duplicate_copy_is_read_once(corpora_mini, tmp_path):
  """Some TESS copies hold the whole corpus twice, one copy nested in the other."""
  outer = tmp_path / "TESS Toronto emotional speech set data"
  shutil.copytree(corpora_mini / "tess", outer)
  shutil.copytree(corpora_mini / "tess", outer / "TESS Toronto emotional speech set data")
  found = _scan(tmp_path, tess.CORPUS)
  assert len(found) == 45 and all(str(outer) in s.path for s in found)


def test_emodb_download_zip_with_label_folders(tmp_path):
  wav = synthetic.write_clip(tmp_path / "x.wav")
  with zipfile.ZipFile(tmp_path / "download.zip", "w") as z:
    z.write(wav, "wav/03a01Fa.wav")
    z.write(wav, "wav/16b10Td.wav")
    z.writestr("lablaut/03a01Fa.lab", "labels")
    z.writestr("erkennung.txt", "text")
  found = _scan(tmp_path / "download.zip", emodb.CORPUS)
  assert [(s.name, s.labels.emotion, s.labels.gender) for s in found] == [
      ("03a01Fa.wav", "happy", "male"), ("16b10Td.wav", "sad", "female")]


def test_crema_d_git_lfs_pointer_files_are_reported(tmp_path):
  audio = tmp_path / "CREMA-D" / "AudioWAV"
  audio.mkdir(parents=True)
  for stem in ("1001_DFA_ANG_XX", "1002_IEO_HAP_HI"):
    (audio / f"{stem}.wav").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 51434\n")
  with pytest.raises(sources.CorpusInputError) as e:
    synthetic.build("ser_crema_d/predecessor48k", tmp_path / "CREMA-D", tmp_path / "tfds")
  msg = str(e.value)
  assert "Git LFS pointer instead of audio (2)" in msg and "git lfs pull" in msg


def test_crema_d_old_x_name_and_demographics(tmp_path):
  synthetic.write_clip(tmp_path / "AudioWAV" / "1040_ITH_SAD_X.wav")
  synthetic.write_clip(tmp_path / "AudioWAV" / "1091_WSI_NEU_LO.wav")
  (tmp_path / "VideoDemographics.csv").write_text(
      "\ufeffActorID,Age,Sex,Race,Ethnicity\n1040,31,Female,Asian,Not Hispanic\n")
  found = _scan(tmp_path, crema_d.CORPUS)
  assert [(s.name, s.labels.gender, s.labels.extra["level"]) for s in found] == [
      ("1040_ITH_SAD_XX.wav", "female", "XX"), ("1091_WSI_NEU_LO.wav", "unknown", "LO")]


def test_mini_folders_given_as_zips(corpora_mini, tmp_path):
  """The same files read from a zip (passed as the path itself) give the same clips."""
  for folder, corpus in (("savee", savee.CORPUS), ("emodb", emodb.CORPUS)):
    z = shutil.make_archive(str(tmp_path / folder), "zip", corpora_mini / folder)
    from_zip = _scan(pathlib.Path(z), corpus)
    from_dir = _scan(corpora_mini / folder, corpus)
    assert [(s.name, s.labels.emotion, s.labels.speaker) for s in from_zip] == [
        (s.name, s.labels.emotion, s.labels.speaker) for s in from_dir]
    assert all(s.member for s in from_zip)
