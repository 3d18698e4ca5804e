"""Reading `.safetensors` files (the format most checkpoints are published in now).

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON (tensor
names, dtypes, shapes, byte offsets; it starts with '{'), then the raw tensor bytes. The
`safetensors` package reads it into numpy without PyTorch, and runs no code from the file
(there is no pickle).

Callers normally go through `ser_jax.pretrained.load_state_dict(path)`, which picks the
reader by file content (`recognizes`), so a `.safetensors` is accepted wherever a `.pth` is.
"""
import os
import struct

import numpy as np

from ser_jax import torch_file
from ser_jax.errors import CheckpointError

HEAD_BYTES = 9  # the header length and the first byte of the JSON header


def recognizes(head: bytes, file_size: int) -> bool:
  """Whether a file of `file_size` bytes starting with `head` is a safetensors file.

  The header length must fit in the file and the header must open a JSON object: a
  `torch.save` pickle (b'\\x80\\x02...') or zip (b'PK\\x03\\x04...') gives a length far
  beyond any real file.
  """
  if len(head) < HEAD_BYTES:
    return False
  (header_len,) = struct.unpack('<Q', head[:8])
  return 2 <= header_len <= file_size - 8 and head[8:9] == b'{'


def load_safetensors(path):
  """Reads a `.safetensors` file into `{key: np.ndarray}` (stored dtypes; bf16 via ml_dtypes).

  Strips DataParallel's `module.` prefix as the `.pth` reader does.

  Raises:
    CheckpointError: the file is truncated or its header is corrupt (the message names the
      file), or it holds no tensors.
  """
  import safetensors  # pylint: disable=g-import-not-at-top
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  try:
    state = safetensors.numpy.load_file(path)
  except (safetensors.SafetensorError, ValueError, KeyError) as e:
    raise CheckpointError(f'{path}: not a readable safetensors file (truncated or corrupt?): '
                          f'{e}') from None
  if not state:
    raise CheckpointError(f'{path} holds no tensors')
  # Own, writable, contiguous copies (load_file may return views of a memory map).
  return torch_file.strip_module_prefix({k: np.array(v) for k, v in state.items()})
