r"""Per-model size, FLOPs and CPU training speed: Flax vs the PyTorch reference.

  python bench/models.py                                # every model with a torch reference
  python bench/models.py --models=cnnx,cnn_lstm --steps=5 --repeats=7
  python bench/models.py --models=efficientat_mn04 --frames=384   # its fine-tuning input

For each model in `ser_jax.models.MODELS` that has a PyTorch reference in
tests/torch_reference*.py (a module's `REFERENCES`, `torch_reference(name, num_classes)` and
`to_torch_input(name, x)`; models without one are listed and skipped) prints:
- params: trainable parameters of the Flax model (equal to the PyTorch reference's; the
  parity tests check it);
- GFLOPs/ex: forward FLOPs per example at a (mel, time) = 128 x 256 input, from XLA's cost
  analysis of the compiled eval-mode forward at batch 1 (as compiled: AlexNet's 11x11 stride-4
  conv runs as a 3x3 conv on 4x4 space-to-depth blocks, whose zero-padded 12x12 kernel XLA
  counts, so its figure is 1.19x that conv's true FLOPs; loops such as the CNN-LSTM's
  recurrence are counted once, not once per step);
- train-step examples/s of the Flax model (jitted step: train-mode forward, softmax
  cross-entropy, backward, Adam lr 1e-4, BatchNorm statistics update) and of the same
  PyTorch reference module (eager, CPU, Adam lr 1e-4, torch's default threads), at the same
  batch (default 32): median (min-max) over `--repeats` blocks of `--steps` steps each, and
  the ratio of the medians (> 1: Flax is faster). EfficientAT (`efficientat_mn01` ..
  `mn40`) trains its whole network here (frozen_features 0, unlike
  configs/efficientat_mn04.py), against tests/torch_reference_efficientat.py.
The frameworks alternate in blocks (Flax, PyTorch, PyTorch, Flax, ...) after a warm-up
(XLA's compile and two steps each). Inputs are random: speed does not depend on values.

The machine must be quiet (bench/machine.py): before measuring, the load average and the
busy processes are printed and the script refuses (exit status 3) when other work shares the
cores; `--force` measures anyway, and any row during which other processes used CPU says
"machine busy" instead of giving a ratio. See bench/README.md for the quiet-window commands.

`import ser_jax` switches XLA:CPU's convolutions from YNNPACK to Eigen (ser_jax/xla_cpu.py)
and keeps freed memory in glibc's heap (ser_jax/glibc_malloc.py), in this process, so for
PyTorch too; the header says whether each was applied.
`SER_JAX_XLA_CPU_FLAGS=0` / `SER_JAX_GLIBC_MALLOC=0` measure without them.
"""
import argparse
import functools
import statistics
import time

# ser_jax first: its import sets XLA:CPU flags, which must precede any JAX computation.
import ser_jax  # pylint: disable=g-bad-import-order
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F

from ser_jax import models
import machine  # bench/machine.py: is the machine quiet enough to measure?
import references  # bench/references.py: the tests' PyTorch reference modules

NUM_CLASSES = 8
# Extra torch-reference arguments where the default does not fit a 128-mel input.
TORCH_KWARGS = {'cnn14_panns': {'mel_bins': 128}}


def _reference_modules():
  """Registry name -> the tests/torch_reference*.py module that defines its reference."""
  found = {}
  for module_name in references.names():
    module = references.load(module_name)
    for name in getattr(module, 'REFERENCES', {}):
      found[name] = module
  return found


def forward_flops(model, variables, shape):
  """XLA's FLOP estimate of the compiled eval-mode forward at batch 1."""
  forward = jax.jit(functools.partial(model.apply, train=False))
  cost = forward.lower(variables, jnp.zeros((1, *shape, 1))).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returned one dict per program
    cost = cost[0]
  return float(cost['flops'])


def flax_step_fn(model, learning_rate):
  """(state, x, y, key) -> state: one jitted Adam step, the work of a training step."""
  tx = optax.adam(learning_rate)

  def loss_fn(params, batch_stats, x, y, key):
    variables = {'params': params}
    if batch_stats is not None:
      variables['batch_stats'] = batch_stats
    logits, updates = model.apply(variables, x, train=True, rngs={'dropout': key},
                                  mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), y).mean()
    return loss, updates.get('batch_stats')

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, x, y, key):
    params, batch_stats, opt_state = state
    grads, batch_stats = jax.grad(loss_fn, has_aux=True)(params, batch_stats, x, y, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state

  return tx, step


def bench_model(name, refs, args, guard):
  """Returns a dict of the figures for one registry name."""
  shape = (args.mels, args.frames)
  model = models.get_model(name, num_classes=NUM_CLASSES)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(args.batch_size, *shape, 1)).astype(np.float32)
  y = rng.integers(0, NUM_CLASSES, size=args.batch_size)

  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.PRNGKey(0), jnp.zeros((1, *shape, 1)))
  params = variables['params']
  n_params = sum(int(a.size) for a in jax.tree_util.tree_leaves(params))
  flops = forward_flops(model, variables, shape)

  tx, step = flax_step_fn(model, 1e-4)
  state = (params, variables.get('batch_stats'), tx.init(params))
  xj, yj = jax.device_put(jnp.asarray(x)), jax.device_put(jnp.asarray(y))
  key = jax.random.PRNGKey(1)

  ref = refs[name].torch_reference(name, NUM_CLASSES, **TORCH_KWARGS.get(name, {}))
  ref.train()
  opt = torch.optim.Adam(ref.parameters(), lr=1e-4)
  xt = refs[name].to_torch_input(name, x)
  yt = torch.from_numpy(y)
  n_torch = sum(p.numel() for p in ref.parameters())

  def flax_step():
    nonlocal state
    state = step(state, xj, yj, key)
    jax.block_until_ready(state)

  def torch_step():
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(ref(xt), yt).backward()
    opt.step()

  for _ in range(3):  # XLA's compile, then two warm steps each (allocator, caches)
    flax_step()
    torch_step()
  steps = {'flax': flax_step, 'torch': torch_step}
  rates = {'flax': [], 'torch': []}  # examples/s of each block
  token = guard.start_row()
  for r in range(args.repeats):
    for which in (('flax', 'torch') if r % 2 == 0 else ('torch', 'flax')):
      t0 = time.perf_counter()
      for _ in range(args.steps):
        steps[which]()
      rates[which].append(args.batch_size * args.steps / (time.perf_counter() - t0))
  busy = guard.end_row(token)
  flax_eps, torch_eps = statistics.median(rates['flax']), statistics.median(rates['torch'])
  return dict(name=name, params=n_params, torch_params=n_torch, gflops=flops / 1e9,
              flax=flax_eps, torch=torch_eps, flax_range=_range(rates['flax']),
              torch_range=_range(rates['torch']), ratio=flax_eps / torch_eps, busy=busy)


def _range(values):
  return f'{min(values):.1f}-{max(values):.1f}'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--models', default='', help='comma-separated registry names (default: all)')
  parser.add_argument('--steps', type=int, default=5, help='steps per timed block')
  parser.add_argument('--repeats', type=int, default=5, help='timed blocks per framework')
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--mels', type=int, default=128)
  parser.add_argument('--frames', type=int, default=256)
  machine.add_argparse_flags(parser)
  args = parser.parse_args(argv)

  refs = _reference_modules()
  names = [n for n in args.models.split(',') if n]
  unknown = [n for n in names if n not in models.MODELS]
  if unknown:
    parser.error(f'unknown models {unknown}; registered: {sorted(models.MODELS)}')
  missing = [n for n in names if n not in refs]
  if missing:
    parser.error(f'no PyTorch reference in tests/torch_reference*.py for {missing}')
  if not names:
    names = [n for n in models.MODELS if n in refs]
    skipped = [n for n in models.MODELS if n not in refs]
    if skipped:
      print(f'no PyTorch reference in tests/torch_reference*.py (skipped): {", ".join(skipped)}')
  guard = machine.Guard(args)
  guard.check_before()

  print(f'jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} '
        f'({torch.get_num_threads()} threads); batch {args.batch_size}, input '
        f'{args.mels} x {args.frames}; examples/s: median (min-max) of {args.repeats} blocks of '
        f'{args.steps} steps; XLA:CPU conv flag: {ser_jax.XLA_CPU_FLAGS}; glibc malloc: '
        f'{ser_jax.GLIBC_MALLOC}')
  width = max(len(n) for n in names + ['model']) + 2
  header = (f'{"model":<{width}}{"params":>13}{"GFLOPs/ex":>11}{"flax ex/s":>11}{"(min-max)":>14}'
            f'{"torch ex/s":>12}{"(min-max)":>14}{"flax/torch":>12}')
  print(header)
  for name in names:
    r = bench_model(name, refs, args, guard)
    notes = [] if r['params'] == r['torch_params'] else [f'torch params {r["torch_params"]:,}']
    ratio = f'{r["ratio"]:.2f}'
    if r['busy']:  # no ratio from a busy machine
      ratio, notes = 'busy', notes + [r['busy']]
    print(f'{r["name"]:<{width}}{r["params"]:>13,}{r["gflops"]:>11.2f}{r["flax"]:>11.1f}'
          f'{r["flax_range"]:>14}{r["torch"]:>12.1f}{r["torch_range"]:>14}{ratio:>12}'
          + (f'  ({"; ".join(notes)})' if notes else ''), flush=True)


if __name__ == '__main__':
  main()
