"""``statecast bench-catchup`` runs as a user runs it and measures what it says."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.helpers import TIMEOUT
from tests.serve_process import run_to_end

STATECAST = Path(sys.executable).with_name("statecast")


async def test_bench_catchup_sweeps_and_the_net_change_wins_where_few_items_change(
    tmp_path: Path,
) -> None:
    rows_file, plot = tmp_path / "rows.json", tmp_path / "catchup.png"
    code, out, err = await run_to_end(
        str(STATECAST), "bench-catchup", "--items", "300", "--diffs", "10,400",
        "--touched", "1,300", "--json", str(rows_file), "--plot", str(plot),
        cwd=tmp_path, timeout=TIMEOUT * 12,
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(rows_file.read_text())
    assert [(r["diffs"], r["touched"]) for r in rows] == [(10, 1), (400, 1), (10, 300), (400, 300)]
    one_item_far = rows[1]
    assert one_item_far["patch bytes"] * 20 < one_item_far["without bytes"]
    assert all(r["patch bytes"] <= r["without bytes"] for r in rows)
    assert plot.stat().st_size > 10_000 and "catch-up from the start" in out
    code, _, err = await run_to_end(
        str(STATECAST), "bench-catchup", "--diffs", "0", cwd=tmp_path, timeout=TIMEOUT * 2
    )
    assert code == 2 and "--diffs" in err and ">= 1" in err
