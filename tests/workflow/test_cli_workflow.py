"""`scones deploy|endpoints|invoke|asl|workflow` as real processes against the shared workspace."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from backend.local import LOCAL_ACCOUNT
from tests.workflow.test_workflow import CONSOLE_EXPORT


def scones(home, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCONES_")}
    env["SCONES_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "backend.cli", *args], capture_output=True, text=True, env=env,
                          timeout=180)


def test_endpoints_invoke_and_redeploy(wf_home, wf, shared_data):
    doc = json.loads(scones(wf_home, "endpoints", "--json").stdout)
    ep = [e for e in doc["endpoints"] if e["endpoint_name"] == "scones-endpoint"][0]
    assert ep["status"] == "InService" and set(ep) >= {"endpoint_name", "status", "model_name", "created"}
    r = scones(wf_home, "invoke", "--endpoint", "scones-endpoint", str(shared_data / "samples" / "bicycle_s_000030.png"),
               "--json")
    assert r.returncode == 0, r.stderr
    inv = json.loads(r.stdout)
    assert inv["classes"] == ["bicycle", "motorcycle"] and abs(sum(inv["probabilities"]) - 1) < 1e-4
    assert inv["label"] in inv["classes"] and inv["confidence"] == max(inv["probabilities"])
    r = scones(wf_home, "invoke", "--endpoint", "nope", str(shared_data / "samples" / "bicycle_s_000030.png"))
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr
    r = scones(wf_home, "deploy", "--model", ep["model_name"], "--endpoint", "scones-endpoint",
               "--capture-percent", "50", "--wait", "--json")
    assert r.returncode == 0, r.stderr
    dep = json.loads(r.stdout)
    assert dep["status"] == "InService" and dep["capture"] == {
        "enabled": True, "percent": 50, "prefix": "s3://scones-unlimited/data_capture", "input": True, "output": True}


def test_workflow_deploy_run_list_history_import(wf_home, wf, shared_data, tmp_path):
    d = json.loads(scones(wf_home, "workflow", "deploy", "--threshold", "0.5", "--json").stdout)
    assert d["state_machine"] == "scones-workflow" and d["endpoint_name"] == "scones-endpoint"
    assert d["threshold"] == 0.5 and set(d["functions"]) == {"serializeImageData", "classifyImage", "filterInferences"}
    # A redeploy without --threshold takes the default, and says so with the flag that keeps the old value.
    r = scones(wf_home, "workflow", "deploy", "--json")
    assert json.loads(r.stdout)["threshold"] == 0.93
    assert "the threshold is now 0.93, the default (it was 0.5); pass --threshold 0.5 to keep it." in r.stderr
    r = scones(wf_home, "workflow", "deploy", "--threshold", "0.5", "--json")
    assert r.returncode == 0 and "threshold is now" not in r.stderr and "now calls" not in r.stderr
    r = scones(wf_home, "workflow", "run", "--count", "3", "--threshold", "1.0", "--json")
    assert r.returncode == 0, r.stderr  # executions that end FAILED still exit 0
    runs = json.loads(r.stdout)["executions"]
    assert len(runs) == 3 and {e["error"] for e in runs} == {"THRESHOLD_CONFIDENCE_NOT_MET"}
    assert all(e["label"] and e["confidence"] is not None and e["s3_key"] for e in runs)
    r = scones(wf_home, "workflow", "run", "--image", str(shared_data / "samples" / "motorcycle_s_000060.png"),
               "--threshold", "0", "--json")
    one = json.loads(r.stdout)["executions"][0]
    assert one["status"] == "SUCCEEDED" and one["s3_key"].startswith("uploads/")
    listed = json.loads(scones(wf_home, "workflow", "list", "--json").stdout)["executions"]
    assert one["name"] in [e["name"] for e in listed]
    assert {e["state_machine"] for e in listed if e["name"] == one["name"]} == {"scones-workflow"}
    hist = json.loads(scones(wf_home, "workflow", "history", one["name"], "--json").stdout)
    assert hist["status"] == "SUCCEEDED" and hist["events"][0]["type"] == "ExecutionStarted"
    assert hist["events"][-1]["type"] == "ExecutionSucceeded" and hist["events"][1]["previousEventId"] == 0
    accounts = set(re.findall(r"arn:aws:[a-z]+:[a-z0-9-]*:(\d+):", json.dumps(hist)))
    assert accounts == {LOCAL_ACCOUNT}  # roles, functions and the execution name one local account
    assert list((wf_home / "run").glob("gateway-*")) == []  # each command's gateway file is gone once read

    export = tmp_path / "export.json"
    export.write_text(json.dumps(CONSOLE_EXPORT))
    r = scones(wf_home, "workflow", "import", str(export), "--name", "cli-import", "--json")
    assert r.returncode == 2 and "my-classifier" in r.stderr
    r = scones(wf_home, "workflow", "import", str(export), "--map", "my-classifier=classify_image",
               "--name", "cli-import", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"state_machine": "cli-import", "mapping": {
        "serializeImageData": "serialize_image_data", "my-classifier": "classify_image",
        "filterInferences": "filter_inferences"}}
    r = scones(wf_home, "workflow", "run", "--state-machine", "cli-import", "--threshold", "0", "--json")
    assert json.loads(r.stdout)["executions"][0]["status"] == "SUCCEEDED"


def test_asl_validate_and_run(wf_home, wf, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"StartAt": "Add", "States": {
        "Add": {"Type": "Pass", "Parameters": {"sum.$": "States.MathAdd($.a, $.b)"}, "Next": "Check"},
        "Check": {"Type": "Choice", "Choices": [{"Variable": "$.sum", "NumericGreaterThan": 10, "Next": "Big"}],
                  "Default": "Small"},
        "Big": {"Type": "Fail", "Error": "TooBig", "Cause": "sum above 10"},
        "Small": {"Type": "Succeed"}}}))
    assert json.loads(scones(wf_home, "asl", "validate", str(good), "--json").stdout) == {"valid": True, "diagnostics": []}
    r = scones(wf_home, "asl", "run", str(good), "--input", '{"a": 2, "b": 3}', "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["status"] == "SUCCEEDED" and doc["output"] == {"sum": 5}
    assert [e["type"] for e in doc["events"]][0] == "ExecutionStarted"
    r = scones(wf_home, "asl", "run", str(good), "--input", '{"a": 20, "b": 3}', "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["status"] == "FAILED" and doc["error"] == "TooBig" and doc["cause"] == "sum above 10"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Missing", "Bogus": 1}}}))
    r = scones(wf_home, "asl", "validate", str(bad), "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and doc["valid"] is False
    assert "is not a valid state machine definition: 2 problems, listed in diagnostics" in r.stderr
    assert {(d["state"], d["field"]) for d in doc["diagnostics"]} >= {("A", "Next"), ("A", "Bogus")}
    assert doc["error"]["code"] == "InvalidDefinition" and doc["error"]["message"] in r.stderr
    assert scones(wf_home, "asl", "run", str(bad)).returncode == 2
    r = scones(wf_home, "asl", "run", str(bad), "--json")  # the README's rule: an exit 2 of --json has an error
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and doc["valid"] is False and doc["error"]["code"] == "InvalidDefinition"
    assert {(d["state"], d["field"]) for d in doc["diagnostics"]} >= {("A", "Next"), ("A", "Bogus")}
    unknown = tmp_path / "unknown.json"  # Step Functions refuses a resource it does not know at creation
    unknown.write_text(json.dumps({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "arn:aws:states:::foo:bar",
                                                                     "End": True}}}))
    r = scones(wf_home, "asl", "validate", str(unknown), "--json")
    assert r.returncode == 2 and [(d["state"], d["field"]) for d in json.loads(r.stdout)["diagnostics"]] == [("T", "Resource")]
    assert "names no Step Functions service integration" in r.stdout

    seed = tmp_path / "seed.json"
    seed.write_text((__import__("pathlib").Path(__file__).resolve().parents[2] / "asl" / "scones_workflow.asl.json").read_text())
    r = scones(wf_home, "asl", "run", str(seed), "--input",
               json.dumps({"s3_bucket": "scones-unlimited", "s3_key": "test/bicycle_s_000030.png", "threshold": 0}),
               "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["status"] == "SUCCEEDED", doc
    assert doc["output"]["body"]["inferences"]
    r = scones(wf_home, "asl", "run", str(seed), "--input",
               json.dumps({"s3_bucket": "scones-unlimited", "s3_key": "test/bicycle_s_000030.png", "threshold": 0}))
    assert r.returncode == 0 and r.stdout.startswith("SUCCEEDED: ") and len(r.stdout) < 600  # short text
    assert "characters)" in r.stdout  # the base64 image is cut
    r = scones(wf_home, "asl", "run", str(seed), "--param", "ClassifyImageArn=arn:aws:lambda:us-east-1:123456789012:function:ghost",
               "--input", '{"s3_bucket": "scones-unlimited", "s3_key": "test/bicycle_s_000030.png"}', "--json")
    doc = json.loads(r.stdout)
    assert doc["status"] == "FAILED" and doc["error"] == "Lambda.ResourceNotFoundException"


def test_monitor_summary_matches_a_brute_force_count(wf_home, wf):
    wf.wait_workflow_executions(wf.start_workflow_batch(10, threshold=0.0), timeout=60)
    records = []
    for obj in wf.list_objects("data_capture/scones-endpoint/AllTraffic/"):
        for line in wf.get_object(obj.key).decode().splitlines():
            if line.strip():
                records.append(json.loads(json.loads(line)["captureData"]["endpointOutput"]["data"]))
    assert records  # capture may sample (an earlier test deploys at 50%)
    for threshold in ("0.7", "0.9"):
        r = scones(wf_home, "monitor", "--endpoint", "scones-endpoint", "--threshold", threshold, "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["records"] == len(records)
        assert doc["below_threshold"] == sum(max(p) < float(threshold) for p in records)
        assert abs(doc["share_below"] - doc["below_threshold"] / len(records)) < 1e-9
        assert sum(v["records"] for v in doc["by_label"].values()) == len(records)
        assert abs(doc["confidence"]["min"] - min(max(p) for p in records)) < 1e-6
        assert doc["broken_lines"] == 0
    r = scones(wf_home, "monitor", "--endpoint", "nope", "--json")
    assert r.returncode == 2 and "nope" in r.stderr


def test_refused_workflow_commands_change_nothing(wf_home, wf, shared_data, tmp_path):
    machines = {m.name: m.endpoint_name for m in wf.list_state_machines()}
    r = scones(wf_home, "workflow", "deploy", "--endpoint", "nope", "--json")
    assert r.returncode == 2 and "nope" in r.stderr and "nope" in json.loads(r.stdout)["error"]["message"]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(CONSOLE_EXPORT))
    mapped = ("--map", "my-classifier=classify_image")
    for name, why in (("", "1 to 80 characters"), ("../../x", "contains '/'"), ("bad name", "contains ' '"),
                      ("x" * 81, "1 to 80 characters"), ("scones-workflow", "deployed from asl/")):
        r = scones(wf_home, "workflow", "import", str(export), *mapped, "--name", name, "--json")
        assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr, (name, r.stderr)
    r = scones(wf_home, "workflow", "import", str(export), *mapped, "--map", "extraFn=classify_image", "--name", "x1")
    assert r.returncode == 2 and "names function 'extraFn', which the definition does not call" in r.stderr and "my-classifier" in r.stderr
    r = scones(wf_home, "workflow", "import", str(export), "--map", "my-classifier=", "--name", "x1")
    assert r.returncode == 2 and "no value" in r.stderr
    assert {m.name: m.endpoint_name for m in wf.list_state_machines()} == machines  # nothing made or replaced

    uploads = len(wf.list_objects("uploads/"))
    image = str(shared_data / "samples" / "motorcycle_s_000060.png")
    for extra in (("--state-machine", "nope"), ("--count", "0"), ("--threshold", "2")):
        r = scones(wf_home, "workflow", "run", "--image", image, *extra, "--json")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(wf.list_objects("uploads/")) == uploads  # a refused run stores no image


def test_deploy_keeps_capture_and_a_refused_deploy_leaves_no_model(wf_home, wf):
    model = wf.describe_endpoint("scones-endpoint").model_name
    assert scones(wf_home, "deploy", "--model", model, "--capture-percent", "30", "--wait").returncode == 0
    r = scones(wf_home, "deploy", "--model", model, "--wait", "--json")  # no flag: the endpoint keeps 30%
    assert r.returncode == 0 and json.loads(r.stdout)["capture"]["percent"] == 30, r.stderr
    # The whole setting is kept, not only the percentage: capture off, output only, another destination.
    wf.deploy(model, "scones-endpoint", 40, capture_input=False, destination="s3://scones-unlimited/elsewhere")
    assert wf.wait_endpoint("scones-endpoint", timeout=60).status == "InService"
    r = scones(wf_home, "deploy", "--model", model, "--wait", "--json")
    capture = json.loads(r.stdout)["capture"]
    assert capture == {"enabled": True, "percent": 40, "prefix": "s3://scones-unlimited/elsewhere", "input": False,
                       "output": True}, r.stderr
    r = scones(wf_home, "deploy", "--model", model, "--capture-percent", "60", "--wait", "--json")
    assert json.loads(r.stdout)["capture"] == {**capture, "percent": 60}  # only the percentage changes
    wf.deploy(model, "scones-endpoint", capture_enabled=False)
    assert wf.wait_endpoint("scones-endpoint", timeout=60).status == "InService"
    r = scones(wf_home, "deploy", "--model", model, "--wait")
    assert r.returncode == 0 and "capture off" in r.stdout and not wf.describe_endpoint("scones-endpoint").capture.enabled
    assert scones(wf_home, "deploy", "--model", model, "--capture-percent", "100", "--wait").returncode == 0
    restored = wf.describe_endpoint("scones-endpoint").capture
    assert (restored.enabled, restored.sampling_percent, restored.capture_input) == (True, 100, True)
    assert restored.destination == "s3://scones-unlimited/data_capture"

    r = scones(wf_home, "train", "--epochs", "1", "--hp", "mini_batch_size=128", "--wait", "--json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["job_name"]
    models = {m.model_name for m in wf.list_models()}
    r = scones(wf_home, "deploy", "--job", job, "--endpoint", "other-endpoint", "--capture-percent", "150")
    assert r.returncode == 2 and "150" in r.stderr
    assert {m.model_name for m in wf.list_models()} == models  # the model made for it was removed again
    assert "other-endpoint" not in {e.endpoint_name for e in wf.list_endpoints()}
