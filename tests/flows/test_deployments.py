"""The two scheduled deployments (flows/deployments.py): defined in code from the config, and the
same in prefect.yaml (what `prefect deploy` reads). No server needed."""

import yaml

from tests.conftest import REPO, SMOKE


def test_deployments_in_code_follow_the_config():
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from flows.deployments import build_deployments

    overrides = {"schedule.retrain_cron": "30 1 * * *", "schedule.timezone": "Europe/Berlin",
                 "schedule.collision_strategy": "CANCEL_NEW"}
    retrain, reindex, monitor = build_deployments(str(SMOKE), overrides)
    assert (retrain.name, retrain.flow_name) == ("retrain", "tunedex-pipeline")
    assert (reindex.name, reindex.flow_name) == ("reindex", "tunedex-reindex")
    assert retrain.schedules[0].schedule.cron == "30 1 * * *"
    assert retrain.schedules[0].schedule.timezone == "Europe/Berlin"
    assert reindex.schedules[0].schedule.cron == "0 */4 * * *"  # the default
    assert (monitor.name, monitor.flow_name) == ("monitor", "tunedex-monitor")
    assert monitor.schedules[0].schedule.cron == "0 * * * *"  # hourly by default
    for d in (retrain, reindex, monitor):
        assert d.parameters == {"config_path": str(SMOKE), "overrides": overrides}
        assert d.concurrency_limit == 1
        assert d.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW


def test_prefect_yaml_matches_the_deployments_in_code(monkeypatch):
    from prefect.cli.deploy._models import PrefectYamlModel  # what `prefect deploy` validates with
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy
    from prefect.flows import load_flow_from_entrypoint

    from flows.deployments import build_deployments

    raw = yaml.safe_load((REPO / "prefect.yaml").read_text())
    PrefectYamlModel.model_validate(raw)
    monkeypatch.chdir(REPO)
    in_code = {d.name: d for d in build_deployments("configs/cpu.yaml")}
    in_yaml = {d["name"]: d for d in raw["deployments"]}
    assert set(in_yaml) == set(in_code) == {"retrain", "reindex", "monitor"}
    for name, spec in in_yaml.items():
        code = in_code[name]
        flow = load_flow_from_entrypoint(spec["entrypoint"])
        assert flow.name == code.flow_name
        flow.validate_parameters(spec["parameters"])
        assert spec["parameters"] == code.parameters
        (schedule,) = spec["schedules"]
        assert schedule["cron"] == code.schedules[0].schedule.cron
        assert schedule["timezone"] == code.schedules[0].schedule.timezone
        assert spec["concurrency_limit"]["limit"] == code.concurrency_limit == 1
        assert ConcurrencyLimitStrategy(spec["concurrency_limit"]["collision_strategy"]) == \
            code.concurrency_options.collision_strategy
        assert spec["work_pool"]["name"] == "tunedex-local"


def test_deployments_are_named_in_one_list():
    from flows.deployments import DEPLOYMENTS, build_deployments

    assert [d.name for d in build_deployments(str(SMOKE))] == list(DEPLOYMENTS) == ["retrain", "reindex",
                                                                                    "monitor"]
