"""Declarative automation of the cohort-level assets (cohort evaluation, cohort report, scene outputs, scene
report): they refresh themselves once new partitions of their upstream assets have landed.

- :data:`COHORT_AUTOMATION`: ``AutomationCondition.eager()`` without its ``~any_deps_missing()`` clause. For
  an unpartitioned asset downstream of dynamic partitions, ``eager()`` waits until *every* upstream partition
  exists, so one patient that was registered but failed (or is not ingested yet) would stop every cohort
  refresh until it is fixed; the cohort summaries list such partitions as failed instead.
- :func:`automation_sensor`: the ``default_automation_condition_sensor`` that Dagster would add by itself,
  declared here to run by default (Dagster's implicit one is stopped until switched on in the UI).

The per-partition chain is *not* automated: sensors, schedules and headless commands launch one run per
partition (docs/dagster.md explains why).
"""

from dagster import AssetSelection, AutomationCondition, AutomationConditionSensorDefinition, DefaultSensorStatus

COHORT_AUTOMATION = AutomationCondition.eager().without(~AutomationCondition.any_deps_missing()).with_label(
    "eager (not blocked by missing partitions)")
AUTOMATION_SENSOR = "default_automation_condition_sensor"


def automation_sensor(minimum_interval_seconds: int = 30) -> AutomationConditionSensorDefinition:
    """The code location's automation sensor (every asset with an automation condition), running by default."""
    return AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=AssetSelection.all(),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=minimum_interval_seconds,
        description="Requests the cohort-level assets (cohort evaluation and report, scene outputs and report) "
                    "after new partitions of their upstream assets have been materialised.",
    )
