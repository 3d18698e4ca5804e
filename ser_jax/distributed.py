"""Multi-process (multi-host) start-up: `jax.distributed.initialize()` when it is needed.

One JAX process runs per host (per TPU VM worker, per GPU node, or several on one machine in
tests). When more than one process takes part, every process must call
`jax.distributed.initialize()` before anything touches a JAX backend, so that the processes
find each other and collectives span all of their devices. `maybe_initialize()` decides whether
that is needed and does it once:

- Cloud TPU VMs (single host or pod slice): detected from the TPU chips on the PCI bus; JAX reads
  the worker list and this worker's id from the VM metadata, so nothing has to be passed.
- GPU or CPU clusters, and the localhost test: an explicit coordinator address, number of
  processes and process id, from the arguments, the absl flags below, or the environment
  variables `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`.
- Slurm / Open MPI jobs with more than one task: JAX's own cluster detection.
- Otherwise (one process on a workstation): nothing is done.

Importing this module defines the flags `--distributed`, `--coordinator_address`,
`--num_processes` and `--process_id`, so an absl entry point that imports it accepts them.
"""
import os

from absl import flags
from absl import logging
import jax

from ser_jax import errors

_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', ['auto', 'on', 'off'],
    "Multi-process start-up: 'auto' initialises jax.distributed on Cloud TPU VMs, Slurm/MPI "
    "jobs with several tasks, or when --num_processes > 1; 'on' always does; 'off' never.")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None,
    'host:port of process 0 for jax.distributed (default: $JAX_COORDINATOR_ADDRESS; not needed '
    'on Cloud TPU VMs).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Number of JAX processes (default: $JAX_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'Id of this process, 0..num_processes-1 (default: $JAX_PROCESS_ID).')

def _flag_value(holder):
  """Value of an absl flag, or None when flags were never parsed (library use, tests)."""
  return holder.value if flags.FLAGS.is_parsed() else None


def _env_int(name):
  value = os.environ.get(name)
  if value in (None, ''):
    return None
  try:
    return int(value)
  except ValueError:
    raise errors.UserError(f'Environment variable {name}={value!r}: expected an integer.') from None


def _on_cloud_tpu_vm():
  """True when TPU chips are attached to this machine (a Cloud TPU VM worker).

  Reads the PCI bus only (as JAX itself does), so it is cheap and never starts a backend or
  queries the metadata server on machines that are not TPU VMs.
  """
  try:
    from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top
    num_chips, _ = hardware_utils.num_available_tpu_chips_and_device_id()
  except Exception:  # pylint: disable=broad-except
    # A private helper; if it moves, fall back to the environment TPU VMs set.
    return bool(os.environ.get('TPU_WORKER_HOSTNAMES') or os.environ.get('TPU_ACCELERATOR_TYPE'))
  return num_chips > 0


def _cluster_launcher_tasks():
  """Number of tasks Slurm or Open MPI started for this job (1 when neither)."""
  for name in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    n = _env_int(name)
    if n is not None:
      return n
  return 1


def resolve_settings(coordinator_address=None, num_processes=None, process_id=None, mode=None):
  """Merges arguments, flags and environment (in that order of priority).

  Returns:
    `(mode, coordinator_address, num_processes, process_id)`; unset values are None.
  """
  mode = mode or _flag_value(_DISTRIBUTED) or os.environ.get('SER_JAX_DISTRIBUTED') or 'auto'
  if mode not in ('auto', 'on', 'off'):
    raise errors.UserError(f"distributed mode {mode!r}: expected 'auto', 'on' or 'off'.")
  coordinator_address = (coordinator_address or _flag_value(_COORDINATOR_ADDRESS)
                         or os.environ.get('JAX_COORDINATOR_ADDRESS') or None)
  if num_processes is None:
    num_processes = _flag_value(_NUM_PROCESSES)
  if num_processes is None:
    num_processes = _env_int('JAX_NUM_PROCESSES')
  if process_id is None:
    process_id = _flag_value(_PROCESS_ID)
  if process_id is None:
    process_id = _env_int('JAX_PROCESS_ID')
  return mode, coordinator_address, num_processes, process_id


def should_initialize(mode, coordinator_address, num_processes, process_id):
  """Whether `jax.distributed.initialize()` must be called for these settings."""
  del coordinator_address, process_id  # Needed by initialize, not by the decision.
  if mode == 'off':
    return False
  if mode == 'on':
    return True
  if num_processes is not None:
    return num_processes > 1
  return _on_cloud_tpu_vm() or _cluster_launcher_tasks() > 1


def maybe_initialize(coordinator_address=None, num_processes=None, process_id=None, mode=None):
  """Calls `jax.distributed.initialize()` once when more than one process runs.

  Safe to call several times and from any entry point: a second call returns at once.
  Must run before any JAX computation (or `jax.devices()`), as `jax.distributed` requires.

  Args:
    coordinator_address: 'host:port' of process 0; None: flag, then $JAX_COORDINATOR_ADDRESS,
      then JAX's cluster auto-detection (Cloud TPU, Slurm, Open MPI).
    num_processes: total number of processes; None: flag, then $JAX_NUM_PROCESSES.
    process_id: this process's id; None: flag, then $JAX_PROCESS_ID.
    mode: 'auto' | 'on' | 'off'; None: flag `--distributed`, then $SER_JAX_DISTRIBUTED, then
      'auto'.

  Returns:
    True when JAX runs distributed (initialised now or before), False for a single process.

  Raises:
    UserError: explicit settings that contradict each other.
    RuntimeError: several processes were asked for after the JAX backend had already started.
  """
  if jax.distributed.is_initialized():
    return True
  mode, coordinator_address, num_processes, process_id = resolve_settings(
      coordinator_address, num_processes, process_id, mode)
  if not should_initialize(mode, coordinator_address, num_processes, process_id):
    return False
  if num_processes is not None and num_processes > 1:
    missing = [name for name, value in (('coordinator_address', coordinator_address),
                                        ('process_id', process_id)) if value is None]
    # Without a launcher to auto-detect from, JAX's own error is a long wait and a timeout.
    if missing and not (_on_cloud_tpu_vm() or _cluster_launcher_tasks() > 1):
      raise errors.UserError(
          f'num_processes={num_processes} but {", ".join(missing)} not set: pass '
          '--coordinator_address=HOST:PORT and --process_id=N (or $JAX_COORDINATOR_ADDRESS, '
          '$JAX_PROCESS_ID) on every process.')
  if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
    raise errors.UserError(f'process_id={process_id} outside 0..{num_processes - 1} '
                           f'(num_processes={num_processes}).')
  logging.info('jax.distributed.initialize(coordinator_address=%s, num_processes=%s, '
               'process_id=%s)', coordinator_address, num_processes, process_id)
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info('JAX process %d of %d, %d local / %d global devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True

