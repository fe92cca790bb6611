"""The README's own-scenario example is real code that runs as shown."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text.split("## Writing your own scenario test", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_scenario_example_runs(pytester):
    pytester.makepyfile(test_my_kv=_example())
    # The example's SLOs are for a real NIC; loosen them so this box only checks it runs.
    result = pytester.runpytest("--kv-model=llama3.1-8b", "--kv-transport=tcp",
                                "--kv-slo=max_exposed_ms=100000", "--kv-slo=p99_latency_us=100000000")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_my_kv::test_long_prompt_tp8_to_tp4[[]llama3.1-8b-tcp[]]*local*passed*"])


def test_readme_commands_match_ci():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", text.split("## The two commands", 1)[1], re.S)
    main_job, tests = blocks[0], blocks[1]
    assert "pytest suites/smoke.yaml --kv-transport=tcp --kv-model=deepseek-v3" in main_job
    assert tests.strip() in ci  # .ci/run runs exactly the README's test command


def test_readme_storage_tier_example_is_a_valid_suite():
    from pytest_kvfabric.harness.suites import parse_suite

    section = README.read_text().split("## The storage tier", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    suite = parse_suite("suite: readme\n" + block, "README.md")
    assert [t.fields["store"]["mode"] for t in suite.scenarios] == ["prefix", "resume", "offload"]
