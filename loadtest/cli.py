"""``statecast bench``: the side-by-side comparison of polling, push and the floors.

Examples::

    statecast bench                                   # poll vs push vs floor, S = 0 and 12
    statecast bench --spectators 10,100,1000,3000,10000 --modes poll,push,raw  # the collapse
    statecast bench --spectators 0,12,100,1000 --poll-hz 1,5 --entities 0,100
    statecast bench --modes push --ws ws://10.0.0.5:8765 --http http://10.0.0.5:8766
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from statecast.loadtest.export import compare_files, csv_text, summary_line
from statecast.loadtest.metadata import run_meta
from statecast.loadtest.report import compare, print_tables, summarize, write_outputs
from statecast.loadtest.runner import BenchOptions, ProgressHook, run_all
from statecast.loadtest.scenario import FLOORS, MODES, Mode, Scenario, sweep
from statecast.loadtest.thresholds import Threshold, parse_threshold


def bounded(
    kind: Callable[[str], Any], *, low: float | None = None, above: float | None = None
) -> Callable[[str], Any]:
    """An argparse type: ``kind``, at least ``low`` or strictly above ``above``; the error
    names the bound (argparse adds the flag)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"{text} must be at least {low:g}")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"{text} must be above {above:g}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _list(
    kind: Callable[[str], Any], *, low: float | None = None, above: float | None = None
) -> Callable[[str], list[Any]]:
    one = bounded(kind, low=low, above=above)

    def parse(text: str) -> list[Any]:
        values = [one(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("an empty list")
        return values

    return parse


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)}; got {text!r}")
    return modes


def shown(value: Any) -> str:
    """A default as it is typed on the command line."""
    if isinstance(value, list | tuple):
        return ",".join(shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def a(*flags: str, default: Any = None, help: str, unset: str = "", **kw: Any) -> None:
        text = f"{help} (default: {shown(default)})" if default is not None else help
        if default is None and unset:
            text = f"{help} (default: {unset})"
        parser.add_argument(*flags, default=default, help=text, **kw)

    o = BenchOptions()
    a("--modes", type=_modes, default=o.modes, help=", ".join(MODES))
    a(
        "--agents",
        type=bounded(int, low=1),
        default=o.agents,
        help="agents acting in the room; each also watches it, so observers = agents + spectators",
    )
    a(
        "--rate",
        type=_list(float, above=0),
        default=o.rates,
        help="actions per second of each agent, not of the room: the room changes "
        "agents x rate times a second (list)",
    )
    a(
        "--spectators",
        type=_list(int, low=0),
        default=o.spectators,
        help="spectators besides the agents (list)",
    )
    a(
        "--poll-hz",
        type=_list(float, above=0),
        default=o.poll_hz,
        help="polls per second per observer (list)",
    )
    a(
        "--entities",
        type=_list(int, low=0),
        default=o.entities,
        help="never-changing entries in the state (list)",
    )
    a(
        "--changed",
        type=bounded(int, low=1),
        default=o.changed,
        help="entries each action changes (the agent's own and changed - 1 more)",
    )
    a(
        "--value-bytes",
        type=bounded(int, low=0),
        default=o.value_bytes,
        help="random padding in each changed entry, in bytes (the size of an update)",
    )
    a(
        "--duration",
        type=bounded(float, above=0),
        default=o.duration,
        help="seconds measured per run",
    )
    a(
        "--repeat",
        type=bounded(int, low=1),
        default=o.repeat,
        help="rounds of the whole sweep, modes alternating; ratios are taken per round "
        "and their median reported",
    )
    a(
        "--warmup",
        type=bounded(float, low=0),
        default=o.warmup,
        help="seconds of load before the window opens",
    )
    a(
        "--drain",
        type=bounded(float, low=0),
        help="seconds observers watch after the window",
        unset="two poll periods, at least 1, for poll; 1 otherwise",
    )
    a(
        "--sample",
        type=bounded(int, low=0),
        default=o.sample,
        help="observers (agents first) that decode and time every update; the rest are drained",
    )
    a(
        "--json",
        dest="json_path",
        metavar="FILE",
        help="write every figure as JSON ('-': to stdout, the tables then go to stderr)",
        unset="none",
    )
    a("--csv", dest="csv_path", metavar="FILE", help="write one CSV row per run", unset="none")
    parser.add_argument(
        "--summary", action="store_true",
        help="print one line for the whole sweep instead of the tables",
    )  # fmt: skip
    a(
        "--report",
        dest="report_dir",
        metavar="DIR",
        help="write report.md and PNG plots",
        unset="none",
    )
    a(
        "--ws",
        dest="ws_url",
        metavar="URL",
        help="a running server's ws://HOST:PORT; in a cluster, several comma-separated: "
        "the agents connect to each in turn",
        unset="start a server per run",
    )
    a(
        "--http",
        dest="http_url",
        metavar="URL",
        help="a running server's http://HOST:PORT",
        unset="start a server per run",
    )
    a(
        "--owner-http",
        metavar="URL",
        help="in a cluster: create the room on this node (its owner), so that the clients "
        "at --ws/--http reach it through a follower",
        unset="the room is created where the clients are",
    )
    a(
        "--spectator-ws",
        metavar="URL",
        help="in a cluster: the ws://HOST:PORT of the nodes spectators connect to, "
        "comma-separated, each in turn (the agents connect to --ws)",
        unset="--ws",
    )
    parser.add_argument(
        "--server-arg", dest="server_args", action="append", default=[], metavar="ARG",
        help="a flag for every `statecast serve` the run starts, such as "
        "--server-arg=--compression (repeatable; write it with '=' when ARG starts with "
        "'-'; not with --ws/--http, whose server is already running)",
    )  # fmt: skip
    a(
        "--server-pid",
        type=bounded(int, low=1),
        help="PID of the running server, to read its CPU and memory",
        unset="the server the run started",
    )
    a(
        "--workers",
        type=bounded(int, low=0),
        default=o.workers,
        help="generator processes (0: by size, drained spectators in processes of their own)",
    )
    a(
        "--price-per-gb",
        type=bounded(float, low=0),
        default=o.price_per_gb,
        help="egress price per GB for the projection",
    )
    a("--seed", type=int, default=o.seed, help="seed of phases and positions")
    parser.add_argument(
        "--assert", dest="thresholds", type=parse_threshold, action="append", default=[],
        metavar="THRESHOLD",
        help="MODE.METRIC OP VALUE that every run of MODE must meet, such as push.p99<20ms "
        "(repeatable; metrics stale_p50 stale_p99 p50 p95 p99 max cpu bytes delivered): one "
        "that fails, or a run "
        "that is not valid, makes the command exit 1",
    )  # fmt: skip
    parser.add_argument(
        "--no-live", dest="live", action="store_false",
        help="no live progress display (default: live on a terminal)",
    )  # fmt: skip
    parser.add_argument(
        "compare", nargs="*", metavar="compare A.json B.json",
        help="instead of running: each figure of B against A's (files from --json), with "
        "the spread --repeat measured in each",
    )  # fmt: skip


def options_from(args: argparse.Namespace, command: str) -> BenchOptions:
    return BenchOptions(
        modes=cast(list[Mode], args.modes),
        agents=args.agents,
        rates=args.rate,
        spectators=args.spectators,
        poll_hz=args.poll_hz,
        entities=args.entities,
        changed=args.changed,
        value_bytes=args.value_bytes,
        duration=args.duration,
        repeat=args.repeat,
        warmup=args.warmup,
        drain=args.drain,
        ws_url=args.ws_url,
        http_url=args.http_url,
        server_pid=args.server_pid,
        server_args=args.server_args,
        owner_http=args.owner_http,
        spectator_ws=args.spectator_ws,
        workers=args.workers,
        sample=args.sample,
        price_per_gb=args.price_per_gb,
        seed=args.seed,
        json_path=args.json_path,
        csv_path=args.csv_path,
        summary=args.summary,
        report_dir=args.report_dir,
        live=args.live,
        command=command,
    )


class Display:
    """The live view: one bar for the sweep, one for the run in progress, and its counts."""

    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[phase]:<10} {task.fields[stats]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.sweep = self.progress.add_task("sweep", total=total, phase="", stats="")
        self.current: TaskID | None = None
        self.live = Live(self.progress, console=console, refresh_per_second=4, transient=False)

    def start(self, index: int, scenario: Scenario) -> ProgressHook:
        if self.current is not None:
            self.progress.remove_task(self.current)
        self.current = self.progress.add_task(scenario.label(), total=1.0, phase="", stats="")
        task = self.current

        def hook(phase: str, fraction: float, totals: dict[str, Any]) -> None:
            stats = (
                f"sent {totals['sent']:,}  seen {totals['seen']:,}  "
                f"requests {totals['requests']:,}  {totals['bytes'] / 1e6:,.1f} MB"
            )
            self.progress.update(task, completed=fraction, phase=phase, stats=stats)

        return hook

    def done(self, index: int, scenario: Scenario, raw: dict[str, Any]) -> None:
        self.progress.advance(self.sweep)
        if "failed" in raw:
            self.console.print(f"[red]failed[/] {scenario.label()}: {raw['failed']}")


def write_csv(path: str, summaries: Sequence[dict[str, Any]]) -> None:
    Path(path).write_text(csv_text(summaries))


async def bench(
    options: BenchOptions, console: Console, thresholds: Sequence[Threshold] = ()
) -> int:
    scenarios = sweep(
        options.modes,
        agents=options.agents,
        rates=options.rates,
        spectators=options.spectators,
        poll_hz=options.poll_hz,
        entities=options.entities,
        repeat=options.repeat,
        changed=options.changed,
        value_bytes=options.value_bytes,
    )
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    meta = run_meta(options.command, started, options.server_args)
    if options.live and console.is_terminal:
        display = Display(console, len(scenarios))
        with display.live:
            raws = await run_all(options, scenarios, display.start, display.done)
    else:

        def start(i: int, s: Scenario) -> None:
            console.print(f"[{i + 1}/{len(scenarios)}] {s.label()}", highlight=False)

        raws = await run_all(options, scenarios, start)
    summaries = [summarize(raw, options.price_per_gb) for raw in raws]
    comparison = compare(summaries)
    failures = [f for t in thresholds for f in t.check(summaries)]
    if options.summary:
        console.print(summary_line(summaries, failures), highlight=False, soft_wrap=True)
    else:
        print_tables(summaries, comparison, console)
    note = write_outputs(summaries, raws, comparison, meta, options.json_path, options.report_dir)
    if options.csv_path:
        write_csv(options.csv_path, summaries)
    if note and not options.summary:
        console.print(f"[yellow]note[/] {note}", highlight=False)
    if options.report_dir and not options.summary:
        console.print(f"report: {options.report_dir}/report.md", highlight=False)
    for t in thresholds if not options.summary else ():
        mine = [f for f in failures if f.startswith(f"{t.text}:")]
        console.print(f"{'FAIL' if mine else 'ok  '} {t.text}", highlight=False)
        for line in mine:
            console.print(f"     {line}", highlight=False)
    invalid = [s for s in summaries if "failed" in s or not s.get("valid", True)]
    if invalid and not options.summary:
        console.print(f"{len(invalid)} run(s) failed or are not valid (see the tables)")
    return 1 if invalid or failures else 0


#: File descriptors beyond one per observer: the generator's own, HTTP, logs.
FD_SPARE = 256


def _open_file_limit() -> int:
    """The soft open-file limit, raised to the hard one first (as the server does)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


def refusal(options: BenchOptions) -> str | None:
    """Flags that cannot go together, said before anything runs (None: they can)."""
    external = options.ws_url or options.http_url
    floors = [m for m in options.modes if m in FLOORS]
    if external and floors:
        # A floor is a process the harness starts here: beside a server elsewhere, push/floor
        # would compare two machines (and two networks), not statecast with a bare broadcast.
        return (
            f"--modes {','.join(floors)} with --ws/--http: the floors run on this machine, so "
            f"they would be compared with a server elsewhere; drop them from --modes, or run "
            f"the comparison without --ws/--http (the harness starts both servers here)"
        )
    if external and options.server_args:
        return (
            "--server-arg sets flags of a server the run starts; with --ws/--http the server "
            "is already running: start it with those flags"
        )
    return None


def _compare(files: list[str]) -> int:
    if len(files) != 3 or files[0] != "compare":
        sys.stderr.write(
            f"statecast bench: unexpected {' '.join(files)!r}: the one positional form is "
            "`statecast bench compare A.json B.json` (files written by --json)\n"
        )
        return 2
    try:
        lines = compare_files(files[1], files[2])
    except ValueError as exc:
        sys.stderr.write(f"statecast bench compare: {exc}\n")
        return 2
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def command_line(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The command as it would be typed to get these options: every flag that differs from
    its default (sys.argv is not the command when bench runs inside another program)."""
    words = parser.prog.split()
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "compare"):
            continue
        value = getattr(args, action.dest, None)
        if value == action.default:
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            words.append(flag)
        elif isinstance(action, argparse._AppendAction):
            words += [f"{flag}={getattr(v, 'text', v)}" for v in value or ()]
        else:
            words += [flag, shown(value)]
    return shlex.join(words)


def _run(args: argparse.Namespace) -> int:
    if args.compare:
        return _compare(args.compare)
    command = command_line(args.bench_parser, args)
    options = options_from(args, command)
    # --json -: stdout carries the JSON alone, everything said goes to stderr.
    to_stderr = options.json_path == "-"
    console = Console(stderr=to_stderr)
    if not console.is_terminal:  # a pipe or a file: do not squeeze the tables into 80 columns
        console = Console(width=180, stderr=to_stderr)
    refused = refusal(options)
    if refused is not None:
        console.print(f"statecast bench: {refused}", highlight=False)
        return 2
    # Each observer holds a socket here (and, for a server the run starts, one there too):
    # beyond the open-file limit connections fail one by one with resets, so say it first.
    needed = max(options.spectators) + options.agents + FD_SPARE
    allowed = _open_file_limit()
    if allowed < needed:
        console.print(
            f"statecast bench: --spectators {max(options.spectators)} needs about {needed} "
            f"open files here and in a server the run starts; the limit is {allowed}: raise "
            f"it with `ulimit -n {needed}` (the hard limit allows up to what the system "
            f"sets), or run fewer spectators"
        )
        return 2
    try:
        import uvloop
    except ImportError:
        return asyncio.run(bench(options, console, args.thresholds))
    return uvloop.run(bench(options, console, args.thresholds))


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="run the load harness: polling against push against the floor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=_run, bench_parser=parser)
