"""HBM fit through pytester: a deployment someone chose that no GPU could hold is a one-line error
naming both figures; one nobody chose (left out, or written for another model) is raised to the
smallest TP that fits, and the report says so."""
from __future__ import annotations

from pytest_kvfabric.report import jsonreport

SUITE = """
suite: fit
defaults: {{gpu: a100, models: [{model}], pool_mib: 16}}
scenarios:
  - id: one
    workload: {{isl: 64, osl: 4, requests: 1}}
    prefill: {prefill}
    decode: {{page_size: 16}}
"""


def test_suite_tp_too_small_for_its_own_model_is_an_error_naming_both_figures(pytester):
    pytester.makefile(".yaml", kvfit=SUITE.format(model="llama3.1-405b", prefill="{tp: 1}"))
    result = pytester.runpytest("kvfit.yaml", "--kv-transport=tcp")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*kvfit.yaml: scenarios[[]0[]]: prefill.tp: llama3.1-405b needs 811.7 GB of weights"
                                 "*at tp=1 pp=1, more than a100's 80 GB of HBM*"])
    assert "Traceback" not in result.stdout.str()


def test_suite_without_tp_gets_the_smallest_tp_that_fits_and_the_report_says_so(pytester):
    pytester.makefile(".yaml", kvfit=SUITE.format(model="llama3-70b", prefill="{page_size: 16}"))
    result = pytester.runpytest("kvfit.yaml", "--kv-transport=tcp", "--kv-json=r.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["note: fit/one*prefill: tp 1 -> 2 so that llama3-70b fits a100's 80 GB of HBM*",
                                 "note: fit/one*decode: tp 1 -> 2 *"])
    [rec] = jsonreport.read(pytester.path / "r.json")["results"]
    assert len(rec["notes"]) == 2


def test_kv_scenario_defaults_fit_but_an_explicit_deployment_that_does_not_is_an_error(pytester):
    pytester.makepyfile(test_fit="""
from pytest_kvfabric.core.scenario import Deployment

def test_default_deployment_is_raised_to_fit(kv_scenario):
    assert kv_scenario.prefill.tp == kv_scenario.decode.tp == 16
    assert kv_scenario.prefill.ep == 16 and kv_scenario.prefill.dp_attention
    assert any("tp 1 -> 16" in n for n in kv_scenario.notes)

def test_explicit_tp1_is_refused(kv_run, kv_scenario):
    kv_run(kv_scenario.replace(prefill=Deployment(tp=1)))
""")
    result = pytester.runpytest("--kv-model=deepseek-v3", "--kv-transport=tcp")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*prefill.tp: deepseek-v3 needs 671.* GB of weights*at tp=1 pp=1, more than h100's 80 GB of HBM*"])


def test_fit_to_hbm_picks_the_smallest_fitting_tp_and_leaves_hopeless_sides_alone():
    from pytest_kvfabric.emulator.memory import fit_to_hbm, hbm_fit_problem
    from pytest_kvfabric.core.profiles import load_gpu, load_model
    from pytest_kvfabric.core.scenario import Deployment, Distribution, Scenario, Workload

    wl = Workload(isl=Distribution.fixed(256), osl=Distribution.fixed(16), requests=1)
    sc = Scenario(id="s", model=load_model("llama3-70b"), gpu=load_gpu("a100"), workload=wl)
    fitted, notes = fit_to_hbm(sc, ("prefill",))
    assert fitted.prefill.tp == 2 and fitted.decode.tp == 1 and len(notes) == 1  # decode not free
    assert hbm_fit_problem(fitted)[0] == "decode.tp"
    both, _ = fit_to_hbm(sc, ("prefill", "decode"))
    assert hbm_fit_problem(both) is None and both.prefill.ep == 1 and not both.prefill.dp_attention
    # a deployment that already fits is not touched
    assert fit_to_hbm(both, ("prefill", "decode")) == (both, [])
    # a GPU too small at every TP: left as it is, so check_hbm_fit names both figures
    tiny = sc.replace(gpu=load_gpu("a100").__class__(**{**load_gpu("a100").__dict__, "hbm_capacity_gb": 0.001}))
    same, notes = fit_to_hbm(tiny, ("prefill", "decode"))
    assert same is tiny and notes == []
