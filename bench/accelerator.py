r"""Training throughput and model FLOPs utilisation (MFU), JAX vs the PyTorch reference.

For each model, compute dtype (float32, bfloat16) and batch size, times one training step
(`ser_jax.steps.train_step` with the default config's optimiser: forward in train mode,
softmax cross-entropy, backward, Adam with L2 weight decay, BatchNorm statistics update; jit
on one device) and prints:

  examples/s      batch / median step time (after compile and warm-up)
  GFLOP/step      XLA's cost analysis of the compiled step (forward + backward + optimiser)
  TFLOP/s         achieved: GFLOP/step / step time
  MFU             achieved FLOP/s over the device's peak for that dtype; the peak used is named
                  in the output (known accelerators from a table; on CPU a matmul peak is
                  measured in the same run and labelled "measured")
  torch ex/s      the same step on the PyTorch reference module (tests/torch_reference*.py),
                  same batch, same device type; bfloat16 via torch.autocast
  jax/torch       the throughput ratio

Examples:
  # CPU smoke (minutes on 2 cores)
  python bench/accelerator.py --models=cnnx,cnn14 --batch_sizes=2,4 --input_shape=64,128 \
      --steps=3
  # GPU / TPU: the targets are CNN14 and VGG19 in bfloat16 at >= 35% MFU and >= 2x PyTorch
  python bench/accelerator.py --models=cnn14,vgg19_attn --batch_sizes=32,64,128

FLOPs count what XLA reports for the compiled step, so the MFU of a model includes only work
XLA does (not padding the hardware adds); on TPU and GPU that is the usual "model FLOPs"
convention within a few percent. Everything runs on `jax.devices()[0]`. Step times are the
median (and min-max, in --json_out) over --steps timed steps.

The host must be quiet (bench/machine.py: PyTorch's eager steps and XLA's CPU work both
slow down when other processes share the cores): the script prints the load average and the
busy processes first, refuses (exit status 3) when the machine is busy, and with --force
measures anyway and says "busy" instead of the jax/torch ratio of any row during which other
processes used CPU.
"""
import functools
import json
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from ser_jax import config_lib
from ser_jax import model_init
from ser_jax import steps as steps_lib
import machine  # bench/machine.py: is the machine quiet enough to measure?
import references  # bench/references.py: the tests' PyTorch reference modules

_MODELS = flags.DEFINE_list('models', ['cnnx', 'cnn14'], 'Registry names of the models.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['32', '64', '128'], 'Batch sizes.')
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes.')
_INPUT_SHAPE = flags.DEFINE_list('input_shape', ['128', '256'], 'mel,time of the input.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per setting (after warm-up).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
_TORCH = flags.DEFINE_bool('torch', True, 'Also time the PyTorch reference step.')
_JSON_OUT = flags.DEFINE_string('json_out', None, 'Also write the rows to this JSON file.')
machine.define_absl_flags()

# Dense peak FLOP/s per chip, by (device kind prefix, dtype). Sources: NVIDIA H100/H200 SXM
# datasheets (dense, no sparsity); Google Cloud TPU system architecture pages.
# float32 on NVIDIA GPUs: XLA runs f32 matmuls and convolutions as TF32 by default
# (jax_default_matmul_precision unset), so TF32 is the peak those steps can reach.
KNOWN_PEAKS = {
    ('NVIDIA H100', 'bfloat16'): (989e12, 'H100 SXM bf16 dense 989 TFLOP/s'),
    ('NVIDIA H100', 'float32'): (494e12, 'H100 SXM TF32 dense 494 TFLOP/s (strict fp32: 67)'),
    ('NVIDIA H200', 'bfloat16'): (989e12, 'H200 (H100 chip) bf16 dense 989 TFLOP/s'),
    ('NVIDIA H200', 'float32'): (494e12, 'H200 TF32 dense 494 TFLOP/s (strict fp32: 67)'),
    ('TPU v4', 'bfloat16'): (275e12, 'TPU v4 chip bf16 275 TFLOP/s'),
    ('TPU v5 lite', 'bfloat16'): (197e12, 'TPU v5e chip bf16 197 TFLOP/s'),
    ('TPU v5e', 'bfloat16'): (197e12, 'TPU v5e chip bf16 197 TFLOP/s'),
}


def device_peak(device, dtype_name, measured=None):
  """(peak FLOP/s or None, description) for a device and compute dtype."""
  for (prefix, dt), (peak, label) in KNOWN_PEAKS.items():
    if device.device_kind.startswith(prefix) and dt == dtype_name:
      return peak, label
  if device.platform == 'cpu' and measured is not None:
    return measured, f'CPU measured {dtype_name} matmul peak {measured / 1e9:.1f} GFLOP/s'
  return None, f'peak unknown for {device.device_kind} {dtype_name}'


def measure_matmul_peak(dtype, n=1024, reps=5):
  """Best FLOP/s of an n x n matmul on the default device (a measured, not a datasheet, peak)."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  best = float('inf')
  for _ in range(reps):
    t = time.perf_counter()
    f(a, a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def time_calls(fn, steps, warmup):
  """Seconds of each of `steps` calls of `fn()` (which must block until its result is ready)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return times


def bench_config(name, dtype_name, batch, input_shape, num_classes=8):
  """The default config with this model, dtype, batch and input shape."""
  config = config_lib.default()
  config.model.name = name
  config.model.dtype = dtype_name
  config.model.num_classes = num_classes
  config.data.input_shape = tuple(input_shape)
  config.batch_size = batch
  return config


def bench_jax(name, dtype_name, batch, input_shape, steps, warmup, num_classes=8):
  """Returns (seconds of each step, FLOPs per step) of `ser_jax.steps.train_step` on one device."""
  config = bench_config(name, dtype_name, batch, input_shape, num_classes)
  model = model_init.build_model(config)
  tx = steps_lib.create_optimizer(config, steps_lib.create_learning_rate_fn(config, 100))
  state = steps_lib.create_state(
      model.apply, model_init.initial_variables(config, model, jax.random.PRNGKey(0)), tx)
  rng = np.random.default_rng(0)
  labels = rng.integers(0, num_classes, batch)
  batch_arrays = {
      'image': jnp.asarray(rng.standard_normal((batch, *input_shape, 1)), jnp.float32),
      'mask': jnp.ones((batch, input_shape[1]), bool),  # (B, time)
      'label': jnp.asarray(labels, jnp.int32),
      'targets': jax.nn.one_hot(labels, num_classes),
      'weight': jnp.ones((batch,), jnp.float32)}
  step = jax.jit(functools.partial(
      steps_lib.train_step, model=model, base_rng=jax.random.PRNGKey(1),
      label_smoothing=0.0, use_mask=config.data.crop_mode == 'crop_pad', axis_name=None),
                 donate_argnums=(0,))
  compiled = step.lower(state, batch_arrays).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', float('nan')))
  holder = [state]

  def run_once():
    holder[0], metrics = compiled(holder[0], batch_arrays)
    metrics['loss'].block_until_ready()

  return time_calls(run_once, steps, warmup), flops


def torch_module(name, input_shape, num_classes=8):
  """The PyTorch reference module of the tests, sized for `input_shape` where it matters."""
  torch_reference = references.load('torch_reference')
  if name == 'cnnx':
    size = [s for s in input_shape]
    for _ in range(3):  # conv 3x3 VALID then 2x2 average pool, three times
      size = [(s - 2) // 2 for s in size]
    return torch_reference.PredecessorCnnX(num_classes, flat_features=32 * size[0] * size[1])
  if name == 'cnn_lstm':
    return torch_reference.PredecessorCnnLstm(num_classes, n_mels=input_shape[0])
  if name in torch_reference.REFERENCES:
    return torch_reference.torch_reference(name, num_classes)
  return references.load('torch_reference_vision').torch_reference(name, num_classes)


def bench_torch(name, dtype_name, batch, input_shape, steps, warmup, num_classes=8):
  """Seconds of each step of the PyTorch reference: same batch, Adam + L2, CE loss."""
  import torch  # pylint: disable=g-import-not-at-top
  torch_reference = references.load('torch_reference')
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  # Same float32 rule as XLA on GPUs: TF32 allowed in matmuls (cuDNN convs allow it already).
  torch.set_float32_matmul_precision('high')
  module = torch_module(name, input_shape, num_classes).to(device).train()
  opt = torch.optim.Adam(module.parameters(), lr=1e-4, weight_decay=1e-5)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, *input_shape, 1)).astype(np.float32)
  x = torch_reference.to_torch_input(name, x).to(device)
  labels = torch.as_tensor(rng.integers(0, num_classes, batch), device=device)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype_name == 'bfloat16')

  def run_once():
    opt.zero_grad(set_to_none=True)
    with autocast:
      loss = torch.nn.functional.cross_entropy(module(x).float(), labels)
    loss.backward()
    opt.step()
    if device == 'cuda':
      torch.cuda.synchronize()

  return time_calls(run_once, steps, warmup)


def main(argv):
  del argv
  guard = machine.Guard(flags.FLAGS)
  guard.check_before()
  device = jax.devices()[0]
  input_shape = tuple(int(s) for s in _INPUT_SHAPE.value)
  batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  import ser_jax  # pylint: disable=g-import-not-at-top  (already imported by config_lib)
  print(f'device: {device.device_kind} ({device.platform}), jax {jax.__version__}, '
        f'input {input_shape}; XLA:CPU conv flag: {ser_jax.XLA_CPU_FLAGS}; glibc malloc: '
        f'{ser_jax.GLIBC_MALLOC}')
  # CPU: no datasheet peak; a matmul peak is measured, and re-measured before every model
  # keeping the best, because on a shared machine one measurement can land in a busy moment.
  measured = {}
  rows = []
  header = (f'{"model":<12} {"dtype":<9} {"batch":>5} {"ex/s":>9} {"ms/step":>9} '
            f'{"GFLOP/step":>11} {"TFLOP/s":>8} {"MFU":>7} {"torch ex/s":>10} {"jax/torch":>9}')
  print(header)
  for name in _MODELS.value:
    for dt in _DTYPES.value:
      if device.platform == 'cpu':
        measured[dt] = max(measured.get(dt, 0.0), measure_matmul_peak(jnp.dtype(dt)))
      peak, peak_label = device_peak(device, dt, measured.get(dt))
      for batch in batch_sizes:
        token = guard.start_row()
        times, flops = bench_jax(name, dt, batch, input_shape, _STEPS.value, _WARMUP.value)
        sec = statistics.median(times)
        achieved = flops / sec
        torch_times = (bench_torch(name, dt, batch, input_shape, _STEPS.value, _WARMUP.value)
                       if _TORCH.value else None)
        torch_sec = statistics.median(torch_times) if torch_times else None
        busy = guard.end_row(token)
        row = dict(model=name, dtype=dt, batch=batch, examples_per_s=batch / sec,
                   step_ms_min_max=(1e3 * min(times), 1e3 * max(times)),
                   torch_step_ms_min_max=((1e3 * min(torch_times), 1e3 * max(torch_times))
                                          if torch_times else None),
                   machine_busy=busy,
                   step_ms=1e3 * sec, gflop_per_step=flops / 1e9,
                   achieved_tflops=achieved / 1e12,
                   mfu=achieved / peak if peak else None, peak=peak_label,
                   torch_examples_per_s=batch / torch_sec if torch_sec else None,
                   device=device.device_kind, input_shape=input_shape)
        row['jax_over_torch'] = (row['examples_per_s'] / row['torch_examples_per_s']
                                 if torch_sec else None)
        rows.append(row)
        mfu = f'{100 * row["mfu"]:.1f}%' if row['mfu'] is not None else 'n/a'
        t_ex = f'{row["torch_examples_per_s"]:.1f}' if torch_sec else 'n/a'
        ratio = f'{row["jax_over_torch"]:.2f}x' if torch_sec else 'n/a'
        if busy:  # no ratio from a busy machine
          ratio = 'busy'
        print(f'{name:<12} {dt:<9} {batch:>5} {row["examples_per_s"]:>9.1f} '
              f'{row["step_ms"]:>9.1f} {row["gflop_per_step"]:>11.2f} '
              f'{row["achieved_tflops"]:>8.3f} {mfu:>7} {t_ex:>10} {ratio:>9}'
              + (f'  ({busy})' if busy else ''), flush=True)
      print(f'  MFU peak for {name} {dt}: {peak_label}')
      if peak and any(r['mfu'] > 1 for r in rows if r['model'] == name and r['dtype'] == dt):
        print('  MFU above 100%: the measured matmul peak is below what XLA reaches here '
              '(a busy machine while measuring, or convolutions faster than a 1024^2 matmul)')
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, 'w') as f:
      json.dump(rows, f, indent=1)


if __name__ == '__main__':
  app.run(main)
