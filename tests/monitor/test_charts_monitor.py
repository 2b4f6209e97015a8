"""Chart builders for the Monitor page: the threshold is a rule layer, stacked buckets add up."""
from __future__ import annotations

import pandas as pd

from ui.charts_monitor import (
    bucket_label, class_mix_chart, confidence_histogram_chart, confidence_over_time_chart, outcomes_chart,
    share_below_chart, stacked, time_x,
)


def t(minutes: int) -> pd.Timestamp:
    return pd.Timestamp("2026-01-01T00:00:00Z") + pd.Timedelta(minutes=minutes)


def test_threshold_is_a_rule_layer_on_both_confidence_charts():
    points = pd.DataFrame({"time": [t(0), t(1)], "confidence": [0.6, 0.99], "label": ["a", "b"],
                           "side": ["below threshold", "passes"]})
    hist = pd.DataFrame({"bin_start": [0.58, 0.98], "bin_end": [0.6, 1.0], "side": ["below threshold", "passes"],
                         "records": [1, 1]})
    for chart, axis in ((confidence_over_time_chart(points, 0.93), "y"), (confidence_histogram_chart(hist, 0.93), "x")):
        spec = chart.to_dict()
        rule = spec["layer"][1]
        assert rule["mark"]["type"] == "rule" and rule["encoding"][axis]["field"] == "threshold"
        assert spec["datasets"][rule["data"]["name"]] == [{"threshold": 0.93}]


def test_buckets_are_stacked_rectangles_that_add_up():
    mix = pd.DataFrame({"start": [t(0), t(0), t(5)], "end": [t(5), t(5), t(10)], "label": ["b", "a", "a"],
                        "records": [3, 1, 2], "share": [0.75, 0.25, 1.0]})
    df = stacked(mix, "share", "label")
    assert df[["label", "y0", "y1"]].values.tolist() == [["a", 0.0, 0.25], ["b", 0.25, 1.0], ["a", 0.0, 1.0]]
    outcomes = pd.DataFrame({"start": [t(0)] * 3, "end": [t(5)] * 3, "outcome": ["other error", "succeeded", "running"],
                             "executions": [1, 4, 2]})
    assert stacked(outcomes, "executions", "outcome", ["succeeded", "below threshold", "other error", "running"])[
        ["outcome", "y1"]].values.tolist() == [["succeeded", 4], ["other error", 5], ["running", 7]]
    for chart in (class_mix_chart(mix, "5 minutes"), outcomes_chart(outcomes)):
        spec = chart.to_dict()
        assert spec["mark"]["type"] == "rect" and spec["encoding"]["y2"]["field"] == "y0"
    buckets = pd.DataFrame({"start": [t(0)], "end": [t(5)], "records": [4], "below": [1], "share_below": [0.25]})
    share = share_below_chart(buckets, "5 minutes").to_dict()
    assert (share["title"]["text"], share["title"]["subtitle"]) == ("Share below threshold", "per 5 minutes")
    # 0% and 100% sit at their gridlines: the theme's flush end labels drew 100% below its line
    over_time = confidence_over_time_chart(pd.DataFrame({"time": [t(0)], "confidence": [0.998], "label": ["a"],
                                                         "side": ["passes"]}), 0.9).to_dict()["layer"][0]
    mix = class_mix_chart(pd.DataFrame({"start": [t(0)], "end": [t(5)], "label": ["a"], "records": [1],
                                        "share": [1.0]})).to_dict()["encoding"]["y"]
    for y in (share["encoding"]["y"], over_time["encoding"]["y"], mix):
        assert y["axis"] == {"format": ".0%", "labelFlush": False} and y["scale"] == {"domain": [0, 1]}
    # the two charts side by side both have their legend below: the same plot size, time axes that line up
    mix_spec = class_mix_chart(pd.DataFrame({"start": [t(0)], "end": [t(5)], "label": ["a"], "records": [1],
                                             "share": [1.0]})).to_dict()
    for spec in (share, mix_spec):
        assert spec["encoding"]["color"]["legend"] == {"orient": "bottom"}
    assert share["encoding"]["color"]["scale"] == {"domain": ["below threshold", "passes"], "range": ["#d62728", "#e6e6e6"]}
    # a bucket at 0% below still draws (its passing rest, pale): it looked like a bucket without traffic (audit)
    zero = share_below_chart(pd.DataFrame({"start": [t(0)], "end": [t(5)], "records": [1], "below": [0],
                                           "share_below": [0.0]}))
    rows = pd.DataFrame(zero.to_dict()["datasets"][zero.to_dict()["data"]["name"]])
    assert rows[["side", "y0", "y1"]].values.tolist() == [["below threshold", 0.0, 0.0], ["passes", 0.0, 1.0]]


def test_bucket_labels():
    assert [bucket_label(s) for s in (1, 30, 60, 120, 3600, 86400, 604800)] == [
        "second", "30 seconds", "minute", "2 minutes", "hour", "day", "7 days"]


def test_time_axes_are_utc_in_24_hour_form_as_fine_as_the_span():
    def axis(*minutes):
        x = time_x("time", pd.Series([t(m) for m in minutes])).to_dict()
        assert x["scale"] == {"type": "utc"}  # the page states UTC; Vega would otherwise use the browser's zone
        return x["axis"]["format"]

    assert axis(0, 1) == "%H:%M:%S" and axis(0, 900) == "%H:%M" and axis(0, 7 * 1440) == "%b %d"
    assert axis() == "%H:%M:%S"
    assert axis(1380, 1500) == "%b %d %H:%M"  # across midnight: the labels carry the date
    one_day = time_x("time", pd.Series([t(0), t(900)])).to_dict()
    assert one_day["title"] == "UTC, 2026-01-01"  # within a day: the date in the title
    shared = time_x("time", pd.Series([t(10)]), domain=(t(0), t(60))).to_dict()  # the page's common window
    # As UTC date-times: a domain of epoch-millisecond numbers drew every point at the left edge in Chromium
    assert shared["scale"] == {"type": "utc", "domain": [
        {"year": 2026, "month": 1, "date": 1, "hours": 0, "minutes": 0, "seconds": 0, "milliseconds": 0, "utc": True},
        {"year": 2026, "month": 1, "date": 1, "hours": 1, "minutes": 0, "seconds": 0, "milliseconds": 0, "utc": True}]}
    assert shared["axis"]["format"] == "%H:%M"
    points = pd.DataFrame({"time": [t(15 * 60 + 30)], "confidence": [0.7], "label": ["a"], "side": ["passes"]})
    spec = confidence_over_time_chart(points, 0.5).to_dict()
    dots = spec["layer"][0]
    assert spec["datasets"][dots["data"]["name"]][0]["when"] == "2026-01-01 15:30:00 UTC"
    assert {"field": "when", "type": "nominal", "title": "time"} in dots["encoding"]["tooltip"]
    mix = pd.DataFrame({"start": [t(0)], "end": [t(5)], "label": ["a"], "records": [1], "share": [1.0]})
    enc = class_mix_chart(mix).to_dict()["encoding"]
    assert enc["x"]["scale"] == {"type": "utc"} and enc["x"]["axis"]["format"] == "%H:%M:%S"


def test_an_empty_histogram_counts_in_whole_inferences():
    empty = pd.DataFrame({"bin_start": [0.0, 0.5], "bin_end": [0.5, 1.0], "side": ["below threshold", "passes"],
                          "records": [0, 0]})
    y = confidence_histogram_chart(empty, 0.5).to_dict()["layer"][0]["encoding"]["y"]
    assert y["axis"]["format"] == ",d" and y["axis"]["tickMinStep"] == 1  # not "0.000000"
