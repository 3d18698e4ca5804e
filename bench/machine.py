"""Is the machine quiet enough to benchmark? Load average, other processes' CPU, a verdict.

A speed ratio measured while other work shares the cores says nothing: with one busy process
on one of two cores, PyTorch's CNN-LSTM step slowed 4x and Flax's 1.7x, flipping the ratio
from 0.62 to 1.47. So every bench/ script:
1. before measuring, prints the 1- and 5-minute load average and the processes that used
   CPU over a short sample (pid, %CPU of one core, command), and refuses to measure (exit
   status 3) when the machine is not quiet: 1-minute load above `--max_load` (default 0.5)
   or other processes using more than `--max_other_cpu` cores (default 0.1, i.e. 10% of one
   core) in total. `--wait_quiet=S` polls for up to S seconds first; `--force` measures
   anyway and marks every row "machine busy";
2. around each measured row, counts the CPU time every process outside this one's process
   tree used meanwhile (all of /proc/stat's busy time minus ours, so short-lived processes
   count too) and marks the row "machine busy" when that exceeds `--max_other_cpu`.
The load average is only checked before starting: once measuring, it counts our own threads.
Linux only (/proc); elsewhere the checks say they cannot tell and count as busy.
"""
import dataclasses
import os
import sys
import time

REFUSED_EXIT_STATUS = 3
_CLK_TCK = os.sysconf('SC_CLK_TCK') if hasattr(os, 'sysconf') else 100

# name -> (type, default, help): the flags every bench script takes (argparse or absl).
FLAGS = {
    'force': (bool, False, 'measure even when the machine is busy (rows are marked)'),
    'max_load': (float, 0.5, 'highest 1-minute load average that counts as quiet'),
    'max_other_cpu': (float, 0.1, 'most cores other processes may use (0.1 = 10%% of one)'),
    'quiet_sample_s': (float, 2.0, 'seconds over which other processes are sampled first'),
    'wait_quiet': (float, 0.0, 'seconds to wait for the machine to become quiet'),
}


def add_argparse_flags(parser):
  """Adds `FLAGS` to an argparse parser."""
  for name, (kind, default, text) in FLAGS.items():
    if kind is bool:
      parser.add_argument(f'--{name}', action='store_true', help=text)
    else:
      parser.add_argument(f'--{name}', type=kind, default=default, help=text)


def define_absl_flags():
  """Defines `FLAGS` as absl flags (for the absl-based scripts)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  define = {bool: flags.DEFINE_bool, float: flags.DEFINE_float}
  for name, (kind, default, text) in FLAGS.items():
    define[kind](name, default, text.replace('%%', '%'))


@dataclasses.dataclass(frozen=True)
class Snapshot:
  """CPU counters at one moment (clock ticks)."""
  wall: float
  busy: int  # all CPUs: user + nice + system + irq + softirq
  steal: int  # time the hypervisor gave our virtual CPUs to someone else
  ours: int  # this process and its descendants, reaped ones included
  procs: dict  # pid -> (ticks, command) of every process outside our tree


def _read_proc_stat():
  with open('/proc/stat') as f:
    fields = [int(v) for v in f.readline().split()[1:]]
  user, nice, system, _, _, irq, softirq, steal = (fields + [0] * 8)[:8]
  return user + nice + system + irq + softirq, steal


def _process_table():
  """pid -> (ppid, own ticks, reaped children's ticks, command) for every readable process."""
  table = {}
  for entry in os.listdir('/proc'):
    if not entry.isdigit():
      continue
    try:
      with open(f'/proc/{entry}/stat') as f:
        stat = f.read()
      with open(f'/proc/{entry}/cmdline', 'rb') as f:
        cmd = f.read().replace(b'\0', b' ').decode(errors='replace').strip()
    except OSError:  # exited meanwhile
      continue
    name_end = stat.rindex(')')
    rest = stat[name_end + 2:].split()  # fields from the state (field 3) on
    ppid, utime, stime, cutime, cstime = int(rest[1]), *(int(v) for v in rest[11:15])
    table[int(entry)] = (ppid, utime + stime, cutime + cstime,
                         cmd or stat[stat.index('(') + 1:name_end])
  return table


def snapshot(root_pid=None):
  """Counters now; `root_pid`'s tree (default: this process) counts as ours."""
  root = os.getpid() if root_pid is None else root_pid
  table = _process_table()
  children = {}
  for pid, (ppid, *_) in table.items():
    children.setdefault(ppid, []).append(pid)
  tree, todo = set(), [root]
  while todo:
    pid = todo.pop()
    if pid not in tree:
      tree.add(pid)
      todo.extend(children.get(pid, ()))
  ours = sum(table[p][1] for p in tree if p in table)
  if root in table:
    ours += table[root][2]  # descendants already reaped
  busy, steal = _read_proc_stat()
  procs = {p: (v[1], v[3]) for p, v in table.items() if p not in tree}
  return Snapshot(time.monotonic(), busy, steal, ours, procs)


@dataclasses.dataclass
class Usage:
  """What other processes did between two snapshots."""
  seconds: float
  other_cores: float  # CPU time of everything outside our tree / wall time
  steal_cores: float
  top: list  # (pid, %CPU of one core, command), busiest first, those above 1%


def usage_between(a, b):
  """Other processes' CPU use from snapshot `a` to `b`."""
  seconds = max(b.wall - a.wall, 1e-9)
  other = max(0, (b.busy - a.busy) - (b.ours - a.ours)) / _CLK_TCK / seconds
  top = []
  for pid, (ticks, cmd) in b.procs.items():
    pct = 100 * (ticks - a.procs.get(pid, (0, ''))[0]) / _CLK_TCK / seconds
    if pct >= 1:
      top.append((pid, pct, cmd))
  top.sort(key=lambda t: -t[1])
  return Usage(seconds, other, (b.steal - a.steal) / _CLK_TCK / seconds, top)


def busy_reasons(load1, other_cores, max_load, max_other_cpu):
  """Why the machine is not quiet (empty when it is)."""
  reasons = []
  if load1 > max_load:
    reasons.append(f'1-minute load average {load1:.2f} > {max_load}')
  if other_cores > max_other_cpu:
    reasons.append(f'other processes used {other_cores:.2f} cores > {max_other_cpu}')
  return reasons


def describe(usage, min_pct=5.0, limit=20):
  """Lines naming the other processes that used at least `min_pct`% of a core."""
  lines = [f'  pid {pid:>7}  {pct:5.1f}%  {cmd[:110]}'
           for pid, pct, cmd in usage.top[:limit] if pct >= min_pct]
  named = sum(pct for _, pct, _ in usage.top) / 100
  if usage.other_cores - named > 0.05:
    lines.append(f'  (short-lived or unnamed processes: {usage.other_cores - named:.2f} cores)')
  if usage.steal_cores > 0.05:
    lines.append(f'  (hypervisor steal: {usage.steal_cores:.2f} cores)')
  return lines


class Guard:
  """The quiet check before measuring and the per-row check while measuring.

  guard = machine.Guard(args)       # argparse namespace or absl FLAGS with `FLAGS` fields
  guard.check_before()              # prints the machine state; exits (3) if busy, unless forced
  token = guard.start_row(); ...measure...; note = guard.end_row(token)  # '' when quiet
  """

  def __init__(self, settings, out=None):
    self.max_load = float(settings.max_load)
    self.max_other_cpu = float(settings.max_other_cpu)
    self.sample_s = float(settings.quiet_sample_s)
    self.wait_s = float(settings.wait_quiet)
    self.force = bool(settings.force)
    self.out = out or sys.stdout
    self.busy_before = False

  def _print(self, line):
    print(line, file=self.out, flush=True)

  def _sample(self):
    first = snapshot()
    time.sleep(self.sample_s)
    usage = usage_between(first, snapshot())
    load1, load5, _ = os.getloadavg()
    return load1, load5, usage

  def check_before(self):
    """Prints load and busy processes; returns True if quiet, exits if busy and not forced."""
    if not os.path.exists('/proc/stat'):
      self._print('machine: no /proc here, cannot tell whether it is quiet')
      return self._busy(['cannot read /proc'])
    deadline = time.monotonic() + self.wait_s
    while True:
      load1, load5, usage = self._sample()
      reasons = busy_reasons(load1, usage.other_cores, self.max_load, self.max_other_cpu)
      if not reasons or time.monotonic() + self.sample_s > deadline:
        break
      self._print(f'machine busy ({"; ".join(reasons)}); waiting up to '
                  f'{deadline - time.monotonic():.0f} s more')
      time.sleep(min(15.0, max(0.0, deadline - time.monotonic())))
    self._print(f'machine: {os.cpu_count()} CPUs, load average {load1:.2f} (1 min) '
                f'{load5:.2f} (5 min); other processes over {usage.seconds:.1f} s: '
                f'{usage.other_cores:.2f} cores')
    for line in describe(usage):
      self._print(line)
    if reasons:
      return self._busy(reasons)
    self._print('machine quiet: measuring')
    return True

  def _busy(self, reasons):
    self.busy_before = True
    if not self.force:
      self._print(f'machine busy: {"; ".join(reasons)}.')
      self._print('Refusing to measure: speed measured while other work shares the cores says '
                  'nothing (see bench/README.md). Wait for a quiet machine (--wait_quiet=SECONDS),'
                  ' or pass --force to measure anyway with every row marked "machine busy".')
      sys.exit(REFUSED_EXIT_STATUS)
    self._print(f'machine busy: {"; ".join(reasons)}; --force: measuring anyway, every row is '
                'marked "machine busy" and no ratio is given')
    return False

  def start_row(self):
    return snapshot() if os.path.exists('/proc/stat') else None

  def end_row(self, token):
    """'' if nothing else ran during the row, else a 'machine busy: ...' note."""
    if token is None:
      return 'machine busy: cannot tell (no /proc)'
    usage = usage_between(token, snapshot())
    notes = []
    if self.busy_before:
      notes.append('busy before start')
    if usage.other_cores > self.max_other_cpu:
      names = ', '.join(f'pid {pid} {pct:.0f}% {cmd.split(" ")[0].split("/")[-1]}'
                        for pid, pct, cmd in usage.top[:3])
      notes.append(f'others used {usage.other_cores:.2f} cores meanwhile'
                   + (f' ({names})' if names else ''))
    return ('machine busy: ' + '; '.join(notes)) if notes else ''
