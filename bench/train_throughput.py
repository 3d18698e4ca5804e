r"""Training throughput: end-to-end (input pipeline included) vs the bare train step.

  python bench/train_throughput.py                       # CNN-X, batch 32, 128 x 256
  python bench/train_throughput.py --model=cnn_lstm --steps=40 --rounds=3
  python bench/train_throughput.py --crop_mode=crop_pad --specaugment --mixup=0.2

Both measurements use the same compiled step (`ser_jax.parallel.make_runner`, the
training loop's own), in one process:
- bare: one batch pre-staged on the devices, the step called back to back;
- end-to-end: what `train_fold` does per step: `input_pipeline.train_batches` (gather,
  resize/crop, augmentation) in the background prefetch thread, host->device transfer,
  the step, and the periodic loss fetch that checks for non-finite values.
The two alternate for `--rounds` rounds; medians (and min-max) are reported. Clips are
synthetic (random dB images of RAVDESS lengths, 294-528 frames at 128 mels); what is measured
does not depend on values.

Prints examples/s of both and the pipeline overhead: (t_end_to_end - t_bare) / t_bare.
The target is <= 5% of step time. The machine must be quiet (bench/machine.py): the script
refuses to measure when other processes share the cores (exit status 3; --force measures
anyway and marks the result "machine busy").
"""

import argparse
import statistics
import time

# ser_jax first: its import sets XLA:CPU flags, which must precede any JAX computation.
import ser_jax  # pylint: disable=g-bad-import-order
from ser_jax import config_lib
import jax
import numpy as np

from ser_jax import input_pipeline
from ser_jax import model_init
from ser_jax import parallel
from ser_jax import steps as steps_lib
import machine  # bench/machine.py: is the machine quiet enough to measure?


def _config(args):
  c = config_lib.default()
  c.model.name = args.model
  c.model.dtype = args.dtype
  c.batch_size = args.batch_size
  c.eval_batch_size = args.batch_size
  c.data.input_shape = tuple(args.input_shape)
  c.data.crop_mode = args.crop_mode
  c.data.specaugment.enabled = args.specaugment
  c.data.mixup_alpha = args.mixup
  c.parallel = args.parallel
  return c


def synthetic_clips(n, n_mels, seed=0):
  rng = np.random.RandomState(seed)
  items = [{'log_mel': rng.uniform(-80, 0, (n_mels, int(rng.randint(294, 529)))).astype(
      np.float32), 'emotion': i % 8, 'actor': 1 + i % 24} for i in range(n)]
  return input_pipeline.read_source(items, dataset_name='synthetic')


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--model', default='cnnx')
  p.add_argument('--dtype', default='float32')
  p.add_argument('--batch_size', type=int, default=32)
  p.add_argument('--input_shape', type=int, nargs=2, default=(128, 256))
  p.add_argument('--crop_mode', default='resize', choices=input_pipeline.CROP_MODES)
  p.add_argument('--specaugment', action='store_true')
  p.add_argument('--mixup', type=float, default=0.0)
  p.add_argument('--parallel', default='pmap', choices=config_lib.PARALLEL_MODES)
  p.add_argument('--steps', type=int, default=20, help='steps per measurement')
  p.add_argument('--rounds', type=int, default=3, help='alternating bare/e2e rounds')
  p.add_argument('--clips', type=int, default=1080, help='training clips (a fold: 1080)')
  p.add_argument('--log_every_steps', type=int, default=10)
  machine.add_argparse_flags(p)
  args = p.parse_args()
  guard = machine.Guard(args)
  guard.check_before()

  config = _config(args)
  n_mels = args.input_shape[0] if args.crop_mode == 'crop_pad' else 128
  t0 = time.time()
  examples = input_pipeline.prepare_images(synthetic_clips(args.clips, n_mels), config.data)
  prep_s = time.time() - t0
  model = model_init.build_model(config)
  steps_per_epoch = input_pipeline.steps_per_epoch(len(examples), args.batch_size)
  tx = steps_lib.create_optimizer(config, steps_lib.create_learning_rate_fn(config,
                                                                             steps_per_epoch))
  state = steps_lib.create_state(
      model.apply, model_init.initial_variables(config, model, jax.random.PRNGKey(0)), tx)
  runner = parallel.make_runner(config, model, jax.random.PRNGKey(1))
  state = runner.place_state(state)

  def batches(epoch):
    while True:  # epochs in turn, as training does
      yield from input_pipeline.train_batches(
          examples, config.data, batch_size=args.batch_size, num_classes=8, seed=(0, 0),
          epoch=epoch)
      epoch += 1

  staged = runner.place_batch(next(batches(0)))
  state, m = runner.train(state, staged)  # compile
  jax.block_until_ready(m)

  def bare(state):
    t = time.perf_counter()
    for _ in range(args.steps):
      state, m = runner.train(state, staged)
    jax.block_until_ready((state, m))
    return state, time.perf_counter() - t

  def end_to_end(state, epoch):
    it = input_pipeline.prefetch(batches(epoch))
    next(it)  # the prefetch thread starts, as it does once per epoch in training
    t = time.perf_counter()
    pending = []
    for _ in range(args.steps):
      state, m = runner.train(state, runner.place_batch(next(it)))
      pending.append(m)
      if len(pending) >= args.log_every_steps:
        jax.device_get([x['loss'] for x in pending])  # the non-finite check
        pending = []
    jax.block_until_ready((state, m))
    elapsed = time.perf_counter() - t
    it.close()
    return state, elapsed

  # Pipeline alone (no device work): how fast batches can be made.
  t = time.perf_counter()
  gen = batches(100)
  for _ in range(args.steps):
    next(gen)
  pipe_s = (time.perf_counter() - t) / args.steps

  bare_t, e2e_t = [], []
  token = guard.start_row()
  for r in range(args.rounds):
    state, dt = bare(state)
    bare_t.append(dt)
    state, dt = end_to_end(state, 10 + r)
    e2e_t.append(dt)
  busy = guard.end_row(token)
  b, e = statistics.median(bare_t), statistics.median(e2e_t)
  n = args.steps * args.batch_size
  print(f'device: {jax.devices()[0].device_kind} x {jax.device_count()}, '
        f'model {args.model}, batch {args.batch_size}, input {tuple(args.input_shape)}, '
        f'crop_mode {args.crop_mode}, specaugment {args.specaugment}, mixup {args.mixup}, '
        f'parallel {args.parallel}; XLA:CPU conv flag: {ser_jax.XLA_CPU_FLAGS}; glibc malloc: '
        f'{ser_jax.GLIBC_MALLOC}')
  print(f'one-off resize of {len(examples)} clips: {prep_s:.2f} s; pipeline alone: '
        f'{1000 * pipe_s:.2f} ms/batch ({args.batch_size / pipe_s:.0f} examples/s)')
  for label, t, med in (('bare train step:    ', bare_t, b), ('end-to-end training:', e2e_t, e)):
    print(f'{label} {n / med:8.1f} examples/s median ({n / max(t):.1f}-{n / min(t):.1f}), '
          f'{1000 * med / args.steps:.1f} ms/step; rounds: {", ".join(f"{n / x:.1f}" for x in t)}')
  if busy:
    print(f'pipeline overhead: not given ({busy})')
  else:
    print(f'pipeline overhead: {100 * (e - b) / b:+.1f}% of step time (target <= 5%)')


if __name__ == '__main__':
  main()
