"""Cross-checks the probe's local output with an independent HdrHistogram
implementation (HdrHistogram_py): every interval of every hlog file must
decode, and its count and p50 must equal the row of series.csv for the same
target, metric and window. Usage: hlog_interop.py OUT_DIR"""
import csv
import glob
import os
import sys

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

out = sys.argv[1]
rows = {}
with open(os.path.join(out, "series.csv")) as f:
    for r in csv.DictReader(f):
        rows.setdefault((r["target"], r["metric"]), []).append(r)

checked = 0
for path in sorted(glob.glob(os.path.join(out, "hlog", "*.hlog"))):
    target, metric, _ = os.path.basename(path).rsplit(".", 2)
    expected = rows[(target, metric)]
    reader = HistogramLogReader(path, HdrHistogram(1, 3_600_000_000, 3))
    got = []
    while True:
        h = reader.get_next_interval_histogram()
        if h is None:
            break
        got.append(h)
    assert len(got) == len(expected), f"{path}: {len(got)} intervals, {len(expected)} CSV rows"
    for h, r in zip(got, expected):
        assert h.get_total_count() == int(r["count"]), (path, h.get_total_count(), r["count"])
        if h.get_total_count():
            p50 = h.get_value_at_percentile(50)
            assert abs(p50 - int(r["p50_us"])) <= max(1, int(r["p50_us"]) // 1000), (path, p50, r["p50_us"])
        checked += 1
assert checked > 0, "no interval checked"
print(f"hlog interop: {checked} intervals match series.csv")
